"""Lightning data over whole tensors.

MNIST-sized data sets fit on any device, so each split lives there as one tensor and a batch is
a slice of it: no worker processes, no per-batch host work. The training order is a permutation
drawn from a generator seeded with ``(seed, epoch)``, so it is the same on every run, survives
``--resume`` without saving it, and is split between DDP ranks without overlap; the training
loader's one state is how many batches of its epoch it has handed out (a checkpoint saved part
way through an epoch resumes with the next one).

Validation is held out from the *training* split with a fixed seed (never from the test split);
the test split is evaluated once, at the end.

Training batches may be augmented (``augment``, a name in :data:`~lotterynet.augment.AUGMENTATIONS`:
``crop-flip`` is edge-popup's CIFAR-10 random crop and flip) on the device, each batch from a
generator seeded with ``(seed, epoch, rank, batch)``; validation and test batches never are.

A model whose leading modules are a fixed function of the input (LeNet5's frozen random
convolutions) has them applied to each split once (:meth:`TensorDataModule.encode_with`, which
:class:`~lotterynet.module.EdgePopupModule` calls), not once per batch and epoch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn

from .augment import AUGMENTATIONS, batch_seed, unchanged
from .config_checks import SEED_MAX
from .data import DATASETS, load_split, resolve_data_dir
from .distributions import check_seed
from .errors import DatasetCorrupt, DatasetNotFound
from .structures import check_positive_int

SPLIT_SEED = 20200601  # the train/validation split; fixed so that every run sees the same one
EVAL_BATCH = 1000  # evaluation batches: results vary in their last bits only, overhead more


def load_or_download(name: str, root, *, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Local files first; torchvision's download when they are missing (and we are online). A
    download that fails leaves no empty folders behind, the data folder's parents included."""
    try:
        return load_split(name, root, train=train)
    except DatasetCorrupt:
        raise
    except DatasetNotFound:
        folder = resolve_data_dir(root).absolute()
        own = folder / DATASETS.get(name).torchvision_name
        # (the folder's missing parents too: --data-dir ../shared/data run from elsewhere)
        made = [p for p in (*reversed(folder.parents), folder, own, own / "raw")
                if not p.exists()]
        try:
            return load_split(name, root, train=train, download=True)
        except DatasetNotFound:
            remove_empty(made)
            raise
        except OSError as err:  # network errors that torchvision lets through
            remove_empty(made)
            raise DatasetNotFound(f"{name}: no data under {folder.resolve()} and the download "
                                  f"failed ({err})") from None


def remove_empty(folders: list[Path]) -> None:
    """The folders (deepest last in the list) that are still empty, deepest first."""
    for folder in reversed(folders):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


class EpochPermutation:
    """Indices ``0..n-1`` in a fresh seeded order every epoch (or in order when not shuffling),
    this rank's share only. ``set_epoch`` is called by Lightning's fit loop, and by
    :class:`TensorLoader` at the end of each whole pass."""

    def __init__(self, n: int, *, shuffle: bool, seed: int, rank: int = 0, world: int = 1):
        self.n, self.shuffle, self.seed, self.rank, self.world = n, shuffle, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        if not self.shuffle:  # evaluation: interleaved shards, every example exactly once
            return torch.arange(self.rank, self.n, self.world)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=generator)
        per_rank = self.n // self.world  # equal shares, so DDP steps stay in lock-step
        return order[self.rank * per_rank:(self.rank + 1) * per_rank]

    def __len__(self) -> int:
        return self.n // self.world if self.shuffle else len(range(self.rank, self.n, self.world))


class TensorLoader:
    """Batches ``(augment(x[idx], seed), y[idx])`` sliced from tensors that already live on
    the device; ``augment`` (default: none) gets each batch's own seed,
    :func:`~lotterynet.augment.batch_seed` of the sampler's seed, epoch and rank and the batch's
    index in the epoch.

    Like a ``DataLoader`` it exposes ``sampler`` (Lightning calls its ``set_epoch``) and
    ``batch_sampler`` (None: batching is done here). It is stateful as Lightning reads it
    (``state_dict``/``load_state_dict``: the epoch and the batches of it handed out, which
    Lightning's fit loop stores in a checkpoint), so that a checkpoint saved part way through
    an epoch (``ModelCheckpoint(every_n_train_steps=...)``) resumes with the epoch's next batch,
    not its first."""

    batch_sampler = None
    STATE_KEYS = ("epoch", "batches")

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                 sampler: EpochPermutation,
                 augment: Callable[[torch.Tensor, int], torch.Tensor] = unchanged):
        self.x, self.y, self.batch_size, self.sampler = x, y, batch_size, sampler
        self.augment = augment
        self.position = (sampler.epoch, 0)  # (epoch, its batches handed out)
        self._resume: tuple[int, int] | None = None  # the position to continue from

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self):
        sampler = self.sampler
        resume, self._resume = self._resume, None
        skip = resume[1] if resume is not None and resume[0] == sampler.epoch else 0
        order = sampler.indices().to(self.x.device)
        for batch in range(skip, len(self)):
            idx = order[batch * self.batch_size:(batch + 1) * self.batch_size]
            self.position = (sampler.epoch, batch + 1)
            x = self.x[idx]
            if self.augment is not unchanged:  # (no seed hashed per step for nothing)
                x = self.augment(x, batch_seed(sampler.seed, sampler.epoch, sampler.rank, batch))
            yield x, self.y[idx]
        # a whole pass ends its epoch: a loop of your own that iterates the loader again gets
        # the next epoch's order, as a shuffling DataLoader's would be new (Lightning sets
        # each epoch's itself); it got the same order every epoch
        sampler.set_epoch(sampler.epoch + 1)

    def state_dict(self) -> dict[str, int]:
        return dict(zip(self.STATE_KEYS, self.position))

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state`` (a :meth:`state_dict`): the next iteration over the same
        epoch starts after the batches it handed out; another epoch starts at its first."""
        self._resume = (state["epoch"], state["batches"])


def check_data_set(name: str, root, *, download: bool = True) -> None:
    """Read both splits of data set ``name`` (downloading a missing set, unless ``download`` is
    False) and let them go: a missing or corrupt set refused (:class:`DatasetNotFound`,
    :class:`DatasetCorrupt`) before anything else starts, without a data module's splits made
    of them."""
    load = load_or_download if download else load_split
    for train in (True, False):
        load(name, root, train=train)


class TensorDataModule(pl.LightningDataModule):
    """Train / validation / test splits of a registered data set (``mnist``, ``fashion-mnist``,
    ``cifar10``) as whole tensors. Lightning's hooks do the work: ``setup`` reads the splits,
    downloading a missing set (once; later calls reuse them), and ``prepare_data``, which
    Lightning calls first in one process per machine, is that process's ``setup``.
    ``in_channels``, ``image_size`` and ``num_classes`` are known before either, from the data
    set's registry entry. ``data_dir``: where the set's files are (None: ``$LOTTERYNET_DATA``,
    else ``./data``). ``val_size`` examples of the training split are held out for validation,
    the same ones in every run, whatever ``seed`` (0: no validation); ``limit_train`` keeps that
    many of the rest (None: all). ``seed`` draws the training batches' order, a fresh one every
    epoch, and their augmentation. ``augment`` names the training batches' augmentation
    (:data:`~lotterynet.augment.AUGMENTATIONS`; default ``none``). ``eval_batch_size`` is the
    batch of validation, test and prediction (and of the encoding ahead, :meth:`encode_with`):
    the logits and losses depend on it only in their last bits (a batch of another size sums
    in another order: on the CPU, fc2's logits by up to 1e-6 at 64 against 1000, the test
    loss by 2e-7, the accuracy not), the memory a large model needs does. ``download=False``
    reads only what is on disk, as torchvision's ``download=False``: a missing set is refused
    (:class:`DatasetNotFound`, saying where to put the files) without a try of the network
    (torchvision's download sets no timeout: where a firewall drops it, it waits out the
    system's connect timeouts)."""

    def __init__(self, dataset: str = "mnist", data_dir=None, *, batch_size: int = 64,
                 val_size: int = 5000, limit_train: int | None = None, seed: int = 0,
                 augment: str = "none", eval_batch_size: int = EVAL_BATCH,
                 download: bool = True):
        super().__init__()
        AUGMENTATIONS.get(augment)  # an unknown name: ValueError naming the choices
        check_positive_int("batch_size", batch_size)
        check_positive_int("eval_batch_size", eval_batch_size)
        if limit_train is not None:
            check_positive_int("limit_train", limit_train)
        if isinstance(val_size, bool) or not isinstance(val_size, int):
            raise ValueError(f"val_size must be an integer, got {val_size!r}")
        if not isinstance(download, bool):
            raise ValueError(f"download must be True or False, got {download!r}")
        # the run config's seeds, [0, SEED_MAX]: what the epochs' and batches' seeds are made of
        seed = check_seed(seed, below=SEED_MAX + 1)
        self.dataset, self.data_dir = dataset, data_dir
        self.batch_size, self.val_size, self.limit_train, self.seed = (
            batch_size, val_size, limit_train, seed)
        self.augment, self.eval_batch_size, self.download = augment, eval_batch_size, download
        spec = DATASETS.get(dataset)
        spec.check_split_sizes(val_size, limit_train)
        self.in_channels, self.image_size = spec.in_channels, spec.image_size
        self.num_classes = spec.num_classes
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._on_device: dict = {}
        self.encoder: nn.Module | None = None

    def encode_with(self, encoder: nn.Module | None) -> bool:
        """Serve every split's inputs as ``encoder(x)`` (None: as they are), computed once per
        split and device, without gradient, in chunks of ``eval_batch_size``, inside the
        Trainer's precision context (so under mixed precision they are what the same modules
        give in a step). ``encoder`` must be a fixed function of each example alone: frozen
        tensors, no batch statistics, no randomness. On the CPU the result is bit for bit the
        per-batch one (each example's output does not depend on its batch).

        Returns whether the inputs are served encoded: not when the training batches are
        augmented (each batch's images are new, so their encoding cannot be computed ahead;
        the model then runs whole on every batch)."""
        if self.augment != "none":
            encoder = None
        if encoder is not self.encoder:  # keep the plain copies, drop the other encoder's
            self._on_device = {k: v for k, v in self._on_device.items() if k[2] is None}
        self.encoder = encoder
        return encoder is not None

    def prepare_data(self) -> None:
        """Downloads a missing set in one process per machine, before the others read it (a
        DDP run's): it is :meth:`setup`, whose splits this process then reuses."""
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        load = load_or_download if self.download else load_split
        x, y = load(self.dataset, self.data_dir, train=True)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
        train_idx, val_idx = order[:len(x) - self.val_size], order[len(x) - self.val_size:]
        train_idx = train_idx[:self.limit_train] if self.limit_train else train_idx
        self.splits = {"train": (x[train_idx], y[train_idx]), "val": (x[val_idx], y[val_idx]),
                       "test": load(self.dataset, self.data_dir, train=False)}

    def _loader(self, split: str, shuffle: bool, batch_size: int,
                augment: str = "none") -> TensorLoader:
        device, rank, world = torch.device("cpu"), 0, 1
        if self.trainer is not None:
            device = self.trainer.strategy.root_device
            rank, world = self.trainer.global_rank, self.trainer.world_size
        key = (split, str(device), self.encoder)
        if key not in self._on_device:  # one host-to-device copy (and encoding) per split
            x, y = (t.to(device) for t in self.splits[split])
            self._on_device[key] = (self._encoded(x), y)
        x, y = self._on_device[key]
        sampler = EpochPermutation(len(x), shuffle=shuffle, seed=self.seed, rank=rank,
                                   world=world)
        augmentation = AUGMENTATIONS.get(augment)
        if augmentation is not unchanged:  # (validation, test and --augment none: as they are)
            spec = DATASETS.get(self.dataset)
            black = -torch.tensor(spec.mean) / torch.tensor(spec.std)  # a zero pixel, normalised
            augmentation = partial(augmentation, fill=black.view(-1, 1, 1).to(device))
        return TensorLoader(x, y, batch_size, sampler, augmentation)

    @torch.no_grad()
    def _encoded(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` through the encoder as a step would take it: converted to the Trainer's
        precision (``64-true``, ``bf16-true``), inside its precision context (autocast)."""
        if self.encoder is None:
            return x
        plugin = self.trainer.precision_plugin if self.trainer is not None else None
        with plugin.forward_context() if plugin else contextlib.nullcontext():
            return torch.cat([self.encoder(plugin.convert_input(chunk) if plugin else chunk)
                              for chunk in x.split(self.eval_batch_size)])

    def train_dataloader(self) -> TensorLoader:
        """The training batches, in a fresh order every epoch; in the split's own order under
        a Trainer's ``overfit_batches`` (Lightning's fixed batches, every epoch the same: its
        own unshuffling replaces a ``DataLoader``'s sampler, which this loader has not, and
        the batches changed every epoch)."""
        overfit = self.trainer is not None and self.trainer.overfit_batches > 0
        return self._loader("train", shuffle=not overfit, batch_size=self.batch_size,
                            augment=self.augment)

    def val_dataloader(self) -> TensorLoader | list:
        if not len(self.splits["val"][0]):
            return []
        return self._loader("val", shuffle=False, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> TensorLoader:
        return self._loader("test", shuffle=False, batch_size=self.eval_batch_size)

    def predict_dataloader(self) -> TensorLoader:
        """The test split (``trainer.predict`` returns its logits, in order)."""
        return self.test_dataloader()

