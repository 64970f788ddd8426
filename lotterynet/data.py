"""Data sets as whole tensors. MNIST-sized sets fit in memory (and on a GPU), so they are read
once through torchvision, normalised, and sliced into batches by the caller.

Where the files are: ``--data-dir``, else ``$LOTTERYNET_DATA``, else ``./data`` — in
torchvision's layout (``ROOT/MNIST/raw/*-ubyte``, ``ROOT/FashionMNIST/raw/*-ubyte``,
``ROOT/cifar-10-batches-py``). A missing set raises :class:`DatasetNotFound` with one
sentence saying where to put which files.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch

from .errors import DatasetCorrupt, DatasetNotFound, first_line
from .idx import IDXError, read_split
from .registry import Registry

DATA_ENV = "LOTTERYNET_DATA"
DATASETS: Registry = Registry("dataset")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    torchvision_name: str  # the class in torchvision.datasets (its folder under the root)
    files: str  # what has to be where, for the error message
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int  # examples in the training split
    image_size: int  # height = width of the images
    num_classes: int = 10
    test_size: int = 10000  # examples in the test split

    @property
    def in_channels(self) -> int:
        return len(self.mean)


def _register(spec: DatasetSpec) -> None:
    DATASETS.register(spec.name)(spec)


_IDX = "{train,t10k}-{images-idx3,labels-idx1}-ubyte"
_register(DatasetSpec("mnist", "MNIST", f"MNIST/raw/{_IDX}", (0.1307,), (0.3081,), 60000,
                      28))
_register(DatasetSpec("fashion-mnist", "FashionMNIST", f"FashionMNIST/raw/{_IDX}",
                      (0.2860,), (0.3530,), 60000, 28))
_register(DatasetSpec("cifar10", "CIFAR10", "cifar-10-batches-py/{data_batch_1..5,"
                      "test_batch}", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 50000,
                      32))


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    return Path(data_dir or os.environ.get(DATA_ENV) or "data")


def _corrupt(name: str, root: Path, spec: DatasetSpec, err: Exception) -> DatasetCorrupt:
    return DatasetCorrupt(f"{name}: the files under {root.resolve()} are corrupt or unreadable "
                           f"({first_line(err)[:200]}); replace {spec.files} with intact copies")


def _missing(name: str, root: Path, spec: DatasetSpec, how: str) -> DatasetNotFound:
    gzipped = " (or .gz)" if "ubyte" in spec.files else ""  # IDX files may come gzipped
    return DatasetNotFound(f"{name}: no data under {root.resolve()}; put {spec.files}{gzipped} "
                           f"there, point --data-dir or ${DATA_ENV} at the folder that holds "
                           f"them, {how}")


def load_split(name: str, root: str | os.PathLike | None = None, *, train: bool,
               download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)``: float32 ``(N, C, H, W)`` normalised with the set's mean and std,
    and int64 labels, for the train (60k/50k) or test split of data set ``name``."""
    spec: DatasetSpec = DATASETS.get(name)
    root = resolve_data_dir(root)
    try:
        from torchvision import datasets  # here, not at import: config checks stay light

        ds = getattr(datasets, spec.torchvision_name)(str(root), train=train, download=download)
        data, targets = ds.data, ds.targets
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        if download and "error downloading" in str(err).lower():  # offline
            last = str(err).strip().splitlines()[-1]  # torchvision: the last mirror's error
            raise _missing(name, root, spec, f"and the download failed ({last})") from None
        if "not found" not in str(err).lower():
            raise _corrupt(name, root, spec, err) from None
        try:
            split = read_split(root / spec.torchvision_name / "raw", train)
        except IDXError as idx_err:
            raise _corrupt(name, root, spec, idx_err) from None
        if split is None:
            how = "or allow downloading" if not download else "(the download failed too)"
            raise _missing(name, root, spec, how) from err
        data, targets = split
    except URLError as err:  # offline, and the set (CIFAR-10) is downloaded in one piece
        raise _missing(name, root, spec, f"and the download failed ({err.reason})") from None
    except (ValueError, TypeError, AssertionError, IndexError, EOFError, OSError,
            pickle.UnpicklingError, UnicodeDecodeError) as err:
        # files present but truncated, garbled, of other types (int32 labels) or unreadable
        raise _corrupt(name, root, spec, err) from None
    images = torch.as_tensor(np.asarray(data)).float().div_(255)
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(targets).long()
    check_split(name, root, spec, train, images, labels)
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return images.sub_(mean).div_(std).contiguous(), labels


def check_split(name: str, root: Path, spec: DatasetSpec, train: bool, images: torch.Tensor,
                labels: torch.Tensor) -> None:
    """Files that read cleanly but do not hold the data set (other image sizes, a label per
    image missing, labels outside the classes, a split of another size) are refused
    as corrupt before anything trains on them."""
    shape = (spec.in_channels, spec.image_size, spec.image_size)
    faults = {
        f"images of {tuple(images.shape[1:])}, not {shape}": tuple(images.shape[1:]) != shape,
        f"{len(images):,} images but {labels.numel():,} labels":
            labels.shape != (len(images),),
        f"{len(images):,} training images, not {spec.train_size:,}":
            train and len(images) != spec.train_size,
        f"{len(images):,} test images, not {spec.test_size:,}":
            not train and len(images) != spec.test_size,
        "no images": len(images) == 0,
        f"labels outside 0..{spec.num_classes - 1}": labels.numel() > 0 and not (
            0 <= int(labels.min()) and int(labels.max()) < spec.num_classes),
    }
    fault = next((what for what, bad in faults.items() if bad), None)
    if fault:
        split = "train" if train else "test"
        raise _corrupt(name, root, spec, ValueError(f"the {split} split has {fault}"))
