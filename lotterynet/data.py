"""Data sets as whole tensors. MNIST-sized sets fit in memory (and on a GPU), so they are read
once, normalised, and sliced into batches by the caller. The IDX sets (MNIST, Fashion-MNIST) are
read by :mod:`lotterynet.idx`, which names the file at fault, and checked to be the set asked
for; torchvision downloads them, and reads and downloads CIFAR-10.

Where the files are: ``--data-dir``, else ``$LOTTERYNET_DATA``, else ``./data`` — in
torchvision's layout (``ROOT/MNIST/raw/*-ubyte``, ``ROOT/FashionMNIST/raw/*-ubyte``,
``ROOT/cifar-10-batches-py``). A missing set raises :class:`DatasetNotFound` with one
sentence saying where to put which files; files that are there but unreadable, or do not hold
the set, raise :class:`DatasetCorrupt`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch

from .errors import DatasetCorrupt, DatasetNotFound, first_line
from .idx import IDXError, read_split, split_files
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
    # an IDX set's SHA-256 of each split's (images, labels) as read, (train, test): they tell
    # it from another set and from a damaged copy
    sha256: tuple[tuple[str, str], tuple[str, str]] | None = None

    @property
    def in_channels(self) -> int:
        return len(self.mean)

    @property
    def idx(self) -> bool:
        """Whether the set is IDX files, read by :mod:`lotterynet.idx`."""
        return self.sha256 is not None

    def check_split_sizes(self, val_size: int, limit_train: int | None) -> None:
        """A ``ValueError`` naming ``val_size`` or ``limit_train`` unless the validation split
        (``val_size`` training examples held out) leaves a training example, and the
        ``limit_train`` trained on fit in what is left."""
        if not 0 <= val_size < self.train_size:
            raise ValueError(f"val_size must be in [0, {self.train_size}) for {self.name}, got "
                             f"{val_size!r}")
        if limit_train is not None and limit_train > self.train_size - val_size:
            raise ValueError(f"limit_train {limit_train} is more than the "
                             f"{self.train_size - val_size:,} training examples of {self.name} "
                             f"(val_size {val_size} held out); leave it out to train on all")


def _register(spec: DatasetSpec) -> None:
    DATASETS.register(spec.name)(spec)


_IDX = "{train,t10k}-{images-idx3,labels-idx1}-ubyte"
_register(DatasetSpec("mnist", "MNIST", f"MNIST/raw/{_IDX}", (0.1307,), (0.3081,), 60000,
                      28, sha256=(
                          ("741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
                           "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13"),
                          ("6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
                           "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5"))))
_register(DatasetSpec("fashion-mnist", "FashionMNIST", f"FashionMNIST/raw/{_IDX}",
                      (0.2860,), (0.3530,), 60000, 28, sha256=(
                          ("2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
                           "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7"),
                          ("c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
                           "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9"))))
_register(DatasetSpec("cifar10", "CIFAR10", "cifar-10-batches-py/{data_batch_1..5,"
                      "test_batch}", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 50000,
                      32))


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    root = Path(data_dir or os.environ.get(DATA_ENV) or "data")
    try:
        root.resolve()
    except (OSError, RuntimeError):  # a symbolic link loop (RuntimeError before Python 3.13)
        raise DatasetNotFound.naming_data_dir(
            lambda setting: f"the data folder {str(root)!r} cannot be reached: a symbolic link "
                            f"on its way leads in a loop; point {setting} or ${DATA_ENV} at the "
                            f"folder that holds the data") from None
    return root


def absolute_data_dir(data_dir: str | os.PathLike | None = None) -> str:
    """The data folder ``data_dir`` means here (:func:`resolve_data_dir`: the default too,
    ``$LOTTERYNET_DATA`` as set here, else ``./data`` here), absolute: what a file run later
    by another process records (a sweep's stack file, a ``--wandb-sweep`` cells file), so that
    it reads the data the sweep would have read wherever it is started, not what
    ``$LOTTERYNET_DATA`` or ``./data`` means there. Where the data is elsewhere (another
    machine), ``--data-dir`` beside ``--stack-file`` names it (for W&B agents, ``--data-dir``
    where the ``--wandb-sweep`` file is written)."""
    return str(resolve_data_dir(data_dir).resolve())


def _corrupt(name: str, root: Path, spec: DatasetSpec, err: Exception | str) -> DatasetCorrupt:
    """``err`` in full when it is our own fault (a string) or an :class:`IDXError` (it names
    the file), else cut short. Files this user may not read (``PermissionError``: another
    user's folder) are to be made readable, not replaced."""
    fault = err if isinstance(err, (str, IDXError)) else first_line(err)[:200]
    fix = (f"make {spec.files} and their folders readable for this user" if
           isinstance(err, PermissionError) else f"replace {spec.files} with intact copies")
    return DatasetCorrupt(f"{name}: the files under {root.resolve()} are corrupt or unreadable "
                           f"({fault}); {fix}")


#: What a load without downloading (``download=False``) says to do besides putting the files
#: there: in Python, and on a command's line (``train.py --no-download``, the sweep's).
NOT_DOWNLOADED = ("or allow downloading (download=True)",
                  "or allow downloading (leave out --no-download)")


def _missing(name: str, root: Path, spec: DatasetSpec, how: str | tuple[str, str],
             missing: list[Path] | None = None) -> DatasetNotFound:
    """``missing``: the files of an IDX split that are not there, named when others are.
    ``how``: what else to do, or that in Python and on a command's line
    (:data:`NOT_DOWNLOADED`)."""
    gzipped = " (or .gz)" if spec.idx else ""  # IDX files may come gzipped
    in_python, on_command_line = (how, how) if isinstance(how, str) else how
    if missing and any(missing[0].parent.glob("*-ubyte*")):
        lacks = (f"{name}: {missing[0].parent.resolve()} lacks "
                 f"{' and '.join(p.name.removesuffix('.gz') for p in missing)}{gzipped}; put "
                 f"{'them' if len(missing) > 1 else 'it'} there, ")
        return DatasetNotFound(lacks + in_python, lacks + on_command_line)
    how_there = {"data_dir=": in_python, "--data-dir": on_command_line}
    return DatasetNotFound.naming_data_dir(
        lambda setting: f"{name}: no data under {root.resolve()}; put {spec.files}{gzipped} "
                        f"there, point {setting} or ${DATA_ENV} at the folder that holds them, "
                        f"{how_there[setting]}")


def load_split(name: str, root: str | os.PathLike | None = None, *, train: bool,
               download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)``: float32 ``(N, C, H, W)`` normalised with the set's mean and std,
    and int64 labels, for the train (60k/50k) or test split of data set ``name``."""
    spec: DatasetSpec = DATASETS.get(name)
    root = resolve_data_dir(root)
    if spec.idx:
        try:
            files = _idx_files(name, root, spec, train, download)
        except DatasetNotFound:  # (an OSError: its own line)
            raise
        except OSError as err:  # a folder on the way this user may not open: the look for the
            # files (Path.is_file) raised "Permission denied" as a traceback
            raise _corrupt(name, root, spec, err) from None
        try:
            data, targets = read_split(files)
        except IDXError as err:
            raise _corrupt(name, root, spec, err) from None
    else:
        data, targets = _torchvision_split(name, root, spec, train, download)
    images = torch.as_tensor(np.asarray(data)).float().div_(255)
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(targets).long()
    check_split(name, root, spec, train, images, labels, files if spec.idx else None)
    if spec.idx:
        for kind, array, path in zip(("images", "labels"), (data, targets), files):
            check_fingerprint(name, spec, train, kind, array, path)
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return images.sub_(mean).div_(std).contiguous(), labels


def _idx_files(name: str, root: Path, spec: DatasetSpec, train: bool,
               download: bool) -> list[Path]:
    """The split's images and labels files (:func:`~lotterynet.idx.split_files`), downloaded
    by torchvision when some are missing and ``download``; the ones missing are named. A
    ``root`` that is the set's own folder (``MNIST`` or ``MNIST/raw`` of a data folder) is
    refused naming the folder above it (a download put a second copy under it)."""
    raw = root / spec.torchvision_name / "raw"
    files = split_files(raw, train)
    folder = next((q for p in files if not p.is_file()
                   for q in (p.with_name(p.name.removesuffix(".gz")), p) if q.is_dir()), None)
    if folder is not None:  # (an archive unpacked into a folder of the file's name: it 'lacked'
        # the file, and a download would not replace it)
        raise DatasetCorrupt(f"{name}: {folder.resolve()} is a folder, not the IDX file of that "
                             f"name; put the file itself there (plain or .gz)")
    missing = [p for p in files if not p.is_file()]
    above = next((q for q in root.resolve().parents[:2] if missing and all(
        p.is_file() for p in split_files(q / spec.torchvision_name / "raw", train))), None)
    if above is not None:  # (the set's own folder, or its raw/: a download filled a second
        # copy under it, MNIST/MNIST/raw)
        raise DatasetNotFound.naming_data_dir(
            lambda setting: f"{name}: {root.resolve()} is the data set's own folder, inside the "
                            f"data folder; point {setting} or ${DATA_ENV} at {above}, which "
                            f"holds {spec.torchvision_name}/raw")
    if missing and not download:
        raise _missing(name, root, spec, NOT_DOWNLOADED, missing)
    if missing:
        from torchvision import datasets  # here, not at import: config checks stay light

        # its download alone: its constructor would first read a legacy processed/ folder
        dataset = object.__new__(getattr(datasets, spec.torchvision_name))
        dataset.root = str(root)
        try:
            dataset.download()
        except (RuntimeError, OSError) as err:  # every mirror failed; a folder not writable
            last = str(err).strip().splitlines()[-1]  # torchvision: the last mirror's error
            raise _missing(name, root, spec, f"and the download failed ({last})",
                           missing) from None
        files = split_files(raw, train)
    return files


def _torchvision_split(name: str, root: Path, spec: DatasetSpec, train: bool,
                       download: bool) -> tuple:
    """``(data, targets)`` of a set that torchvision reads (CIFAR-10), downloaded when asked.
    Files there that fail torchvision's MD5 check are corrupt, not missing (torchvision says
    "not found or corrupted" for both)."""
    from torchvision import datasets  # here, not at import: config checks stay light

    dataset = getattr(datasets, spec.torchvision_name)
    folder = root / dataset.base_folder
    present = folder.is_dir() and any(folder.iterdir())
    try:
        ds = dataset(str(root), train=train, download=download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        if present or "not found" not in str(err).lower():
            raise _corrupt(name, root, spec, RuntimeError(
                f"{folder} holds files that fail torchvision's MD5 check" if present
                else err)) from None
        how = NOT_DOWNLOADED if not download else "(the download failed too)"
        raise _missing(name, root, spec, how) from err
    except URLError as err:  # offline, and the set is downloaded in one piece
        if present:
            raise _corrupt(name, root, spec, RuntimeError(
                f"{folder} holds files that fail torchvision's MD5 check, and downloading "
                f"intact ones failed: {err.reason}")) from None
        raise _missing(name, root, spec, f"and the download failed ({err.reason})") from None
    except (ValueError, TypeError, AssertionError, IndexError, EOFError, OSError,
            pickle.UnpicklingError, UnicodeDecodeError) as err:
        # files present but truncated, garbled or unreadable
        raise _corrupt(name, root, spec, err) from None
    return ds.data, ds.targets


def check_split(name: str, root: Path, spec: DatasetSpec, train: bool, images: torch.Tensor,
                labels: torch.Tensor, files: list[Path] | None = None) -> None:
    """Files that read cleanly but do not hold the data set (other image sizes, a label per
    image missing, labels outside the classes, a split of another size) are refused
    as corrupt before anything trains on them, naming the split's ``files`` (an IDX set's
    images and labels) where given."""
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
        held = f", {files[0]} and {files[1].name}," if files else ""
        raise _corrupt(name, root, spec, f"the {split} split{held} has {fault}")


def check_fingerprint(name: str, spec: DatasetSpec, train: bool, kind: str, array: np.ndarray,
                      path: Path) -> None:
    """An IDX set's ``kind`` ("images" or "labels"), read from ``path``, are the set's own (by
    their SHA-256): the files of another set (Fashion-MNIST's in MNIST's folder, one split of
    each) are refused, as are images or labels altered in place."""
    split, part = (0 if train else 1), ("images", "labels").index(kind)
    digest = hashlib.sha256(array.tobytes()).hexdigest()
    if digest == spec.sha256[split][part]:
        return
    owner = next((other for other in map(DATASETS.get, DATASETS.names())
                  if other.idx and digest == other.sha256[split][part]), None)
    what = f"{'training' if train else 'test'} {kind}"
    if owner:
        raise DatasetCorrupt(f"{name}: {path} holds {owner.name}'s {what}, not {name}'s; put "
                             f"{name}'s files there ({owner.name}'s belong under "
                             f"{owner.torchvision_name}/raw)")
    raise DatasetCorrupt(f"{name}: {path} does not hold {name}'s {what} (a damaged copy, or "
                         f"another data set's); replace it with an intact copy")
