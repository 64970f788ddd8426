"""Checkpoints that are written atomically and load with ``torch.load(weights_only=True)``.

Lightning's own ``_atomic_save`` goes through an fsspec transaction, which on a local disk
writes a temporary file under ``/tmp`` and then *moves* it — a copy across file systems, so an
interrupted save can leave a truncated checkpoint. :class:`AtomicCheckpointIO` writes the
temporary file next to the target and renames it with ``os.replace`` (atomic on POSIX).
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated or not a lotterynet checkpoint."""


def atomic_write(path: str | os.PathLike, write) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it over ``path``
    (``os.replace``, atomic on POSIX): readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:  # interrupted or failed: the previous file stays intact
        tmp.unlink(missing_ok=True)
        raise


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return load_checkpoint(path, map_location=map_location)


def load_checkpoint(path: str | os.PathLike, map_location=None) -> dict:
    """``torch.load(weights_only=True)`` with one-line errors for missing or corrupt files."""
    try:
        checkpoint = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {str(path)!r} not found") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or unreadable: "
                              f"{reason}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a Lightning checkpoint")
    return checkpoint


class RNGState(pl.Callback):
    """Saves and restores the host RNGs (torch, CUDA, numpy, random) with the checkpoint, as
    plain tensors and lists (weights_only-safe)."""

    def state_dict(self) -> dict:
        np_state = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
            "random": [random.getstate()[0], list(random.getstate()[1]),
                       random.getstate()[2]],
        }

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        kind, keys, *rest = state["numpy"]
        np.random.set_state((kind, keys.numpy(), *rest))
        version, internal, gauss = state["random"]
        random.setstate((version, tuple(internal), gauss))
