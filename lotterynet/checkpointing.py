"""Checkpoints that are written atomically and durably, carry an integrity digest, and load with
``torch.load(weights_only=True)``.

Lightning's own ``_atomic_save`` goes through an fsspec transaction, which on a local disk
writes a temporary file under ``/tmp`` and then *moves* it — a copy across file systems, so an
interrupted save can leave a truncated checkpoint. :func:`atomic_write` writes the temporary
file next to the target, fsyncs it, renames it with ``os.replace`` (atomic on POSIX) and fsyncs
the folder. A checkpoint is a zip archive (torch's format); :func:`seal` puts a SHA-256 of the
archive into the zip's own comment field, so ``torch.load`` still reads the file unchanged and
:func:`load_checkpoint` refuses a file whose bytes no longer match, before unpickling anything.
Every checkpoint save and load goes through :func:`atomic_torch_save` and
:func:`load_checkpoint` (Lightning's through :class:`lotterynet.run_callbacks.CheckedCheckpointIO`).
Only torch is imported here, so the command line reads a checkpoint to check a resume before
it imports Lightning.
"""

from __future__ import annotations

import csv
import errno
import glob
import hashlib
import io
import os
import pickle
import re
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import torch

from .errors import (
    IN_THE_WAY,
    CheckpointError,
    DiskFullError,
    WriteFailed,
    first_line,
    in_binary_units,
)
from .machine import available_memory, refuse_larger_than_memory

CHECKPOINTS = "checkpoints"  # RUN/checkpoints/last.ckpt
LAST = "last.ckpt"
TEMP_INFIX = ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.tmp(\d+)$")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMP_INFIX}{os.getpid()}")


def _fsync(path: Path, flags: int = os.O_RDWR) -> None:
    """fsync ``path``, opened with ``flags``: a file for writing (Windows' fsync,
    FlushFileBuffers, fails on one opened read-only: EBADF), a folder read-only (all that a
    folder opens as)."""
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """fsync ``folder``, so that a rename in it survives a power cut; not where the folder
    cannot be opened: Windows opens none (PermissionError), nor fsyncs one."""
    try:
        _fsync(folder, os.O_RDONLY)
    except PermissionError:
        pass


def atomic_write(path: str | os.PathLike, write) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, fsync it, rename it over ``path``
    (``os.replace``, atomic on POSIX) and fsync the folder: readers see the old file or the new
    one, never a part, and the new one survives a power cut. A file that cannot be written
    raises :class:`WriteFailed` (a full disk :class:`DiskFullError`), one line naming it, and
    leaves the old file in place; a folder or file in the way (:data:`IN_THE_WAY`) is raised
    as it is. The temporary files of ``path`` that killed writers left (SIGKILL, a power cut:
    no cleanup ran) go once it is written."""
    path = Path(path)
    tmp = _temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write(tmp)
            _fsync(tmp)
            os.replace(tmp, path)
            _fsync_folder(path.parent)
        except BaseException:  # interrupted or failed: the previous file stays intact
            tmp.unlink(missing_ok=True)
            raise
    except OSError as err:
        raise write_failed(err, path, f"; the previous {path.name} (if any) is kept "
                                      f"unchanged") from None
    remove_stale_temp_files(path.parent, path.name)


def write_failed(err: OSError, path: Path, kept: str = "") -> OSError:
    """What a command reports for ``err``, raised as ``path`` was written: ``err`` itself where
    it is one line already (a folder or file in the way, :data:`IN_THE_WAY`; a
    :class:`WriteFailed` of a file written on the way), else one line naming ``path`` and the
    system's reason, :class:`DiskFullError` for a full disk or quota, else
    :class:`WriteFailed`, then ``kept`` (what is left of the file)."""
    if isinstance(err, (*IN_THE_WAY, WriteFailed)):
        return err
    if err.errno in _NO_SPACE:
        return DiskFullError(err.errno, f"disk full while writing {str(path)!r}{kept}")
    return WriteFailed(err.errno, f"could not write {str(path)!r} "
                                  f"({err.strerror or first_line(err)}){kept}")


def remove_stale_temp_files(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete the temporary files that interrupted :func:`atomic_write` calls left in
    ``folder`` (those whose writing process is gone), of every file or of the file ``name``
    only; returns what was deleted."""
    removed = []
    of = glob.escape(name) if name else "*"
    for path in Path(folder).glob(f".{of}{TEMP_INFIX}*"):
        match = _TEMP_NAME.match(path.name)
        if match and path.is_file() and not _process_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (``os.kill(pid, 0)``); taken for running on Windows, whose
    ``os.kill`` is no probe: its signal 0 is CTRL_C_EVENT, sent to a console's processes."""
    if pid == os.getpid():
        return False  # a leftover of an earlier process that had our id
    if sys.platform == "win32":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- integrity digest in the zip comment ------------------------------------------------------

TICKET_MAGIC = b"LNTICKET"  # how a ticket file starts (lotterynet.ticket_file)
_EOCD = b"PK\x05\x06"  # zip "end of central directory" record: 22 bytes + the comment
_EOCD_SIZE = 22
_TAG = b"lotterynet-sha256:"
_SEAL_SIZE = len(_TAG) + 64
#: What torch.load(weights_only=True) says of an object it refuses: the global it names (one
#: of a module it blocks, ``os.system`` as ``posix.system``, in other words).
_REFUSED_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)")


def seal(archive: bytes) -> bytes:
    """``archive`` (a zip without a comment, as ``torch.save`` writes it) with the SHA-256 of
    everything before the comment-length field stored as the zip comment."""
    if archive[-_EOCD_SIZE:-_EOCD_SIZE + 4] != _EOCD or archive[-2:] != b"\0\0":
        raise ValueError("not a zip archive without a comment")
    digest = hashlib.sha256(archive[:-2]).hexdigest().encode()
    return archive[:-2] + struct.pack("<H", _SEAL_SIZE) + _TAG + digest


def unseal(data: bytes, path, *, unsealed: bool = False) -> bytes:
    """``data`` if its digest matches, else :class:`CheckpointError` naming ``path``.
    ``unsealed``: a file without a digest (what a Trainer of your own writes, through
    Lightning's checkpoint IO) is taken too when every member of its zip matches its CRC-32,
    which ``torch.load`` does not check (a changed byte loaded as a changed weight)."""
    end = len(data) - _SEAL_SIZE
    if data.startswith(TICKET_MAGIC):
        raise CheckpointError(f"{str(path)!r} is a ticket (the trained subnetwork, for "
                              f"load_ticket), not a training checkpoint: a run resumes from its "
                              f"RUN/checkpoints/last.ckpt")
    if end < _EOCD_SIZE or data[end:end + len(_TAG)] != _TAG:
        if unsealed:
            return _crc_checked(data, path)
        raise CheckpointError(f"checkpoint {str(path)!r} has no lotterynet integrity digest: it "
                              f"is truncated, or was not written by lotterynet")
    body, stored = data[:end - 2], data[end + len(_TAG):]
    if (data[end - _EOCD_SIZE:end - _EOCD_SIZE + 4] != _EOCD
            or hashlib.sha256(body).hexdigest().encode() != stored):
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: its bytes do not match its "
                              f"integrity digest")
    return data


def _crc_checked(data: bytes, path) -> bytes:
    """``data`` if it is a zip archive whose members all match their CRC-32s."""
    try:
        bad = zipfile.ZipFile(io.BytesIO(data)).testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or unreadable: "
                              f"{first_line(err)}") from None
    if bad is not None:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: its {bad!r} does not match "
                              f"its CRC-32")
    return data


def write_csv_atomic(path: str | os.PathLike, rows: list[dict], columns: list[str]) -> None:
    """``rows`` as a CSV file (UTF-8, as it is read) with a header of ``columns``, written with
    :func:`atomic_write`."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``text`` as the file ``path`` (UTF-8), written with :func:`atomic_write`."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


#: The metadata matplotlib writes by format that changes from one save to the next (a PDF's
#: creation time), left out: a figure redrawn from the same results is the same file, so a
#: committed one (a sweep's figure.pdf) does not show as changed. (A PNG has none.)
UNDATED = {"pdf": {"CreationDate": None}}


def savefig_atomic(fig, path: str | os.PathLike, **savefig_kwargs) -> None:
    """A matplotlib figure saved as ``path`` (its format from the suffix), with
    :func:`atomic_write`, the same figure as the same bytes (:data:`UNDATED`)."""
    path = Path(path)
    kind = path.suffix[1:]
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=kind, metadata=UNDATED.get(kind),
                                               **savefig_kwargs))


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` sealed with its digest, written atomically and durably."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    sealed = seal(buffer.getvalue())
    atomic_write(path, lambda tmp: tmp.write_bytes(sealed))


#: The checkpoint a run resumes from: its path and its contents, as read (once) and checked.
Resumed = tuple[str | os.PathLike, dict]


def load_checkpoint(path: str | os.PathLike, map_location=None, *,
                    unsealed: bool = False, weights_only: bool = True) -> dict:
    """The digest checked (``unsealed``: or, without one, the zip's CRC-32s, :func:`unseal`),
    then ``torch.load`` of the verified bytes (:func:`parse_checkpoint`), with one-line errors
    for missing, corrupt or foreign files."""
    return parse_checkpoint(read_checkpoint(path, unsealed=unsealed), source_name(path),
                            map_location, weights_only=weights_only)


def read_checkpoint(path, *, unsealed: bool = False, loading: bool = True) -> bytes:
    """The bytes of the checkpoint ``path`` (a file; a URL, ``s3://``, ``https://``,
    ``file://``, read as Lightning reads one, through fsspec; or a binary file object,
    ``io.BytesIO``), checked by :func:`unseal`. ``loading`` (the bytes are to be loaded, not
    the check of a file a Trainer loaded already): refused first where its zip's members
    declare more than the memory available (:func:`refuse_inflating_past_memory`), before
    the CRC-32s of a file without a digest are checked by inflating every member (a member
    declaring gigabytes was read out, then refused)."""
    name = source_name(path)
    try:
        if hasattr(path, "read"):
            data = path.read()
        elif isinstance(path, str) and "://" in path:
            import fsspec  # (Lightning's own dependency)

            with fsspec.open(path, "rb") as f:
                data = f.read()
        elif Path(path).exists() and not Path(path).is_file() and not Path(path).is_dir():
            # (/dev/zero was read until the memory ran out, a FIFO waited for a writer)
            raise CheckpointError(f"checkpoint {name!r} is not a regular file (a pipe, a device "
                                  f"or a socket); give the run's checkpoints/{LAST}")
        else:
            refuse_larger_than_memory(Path(path), f"checkpoint {name!r}", CheckpointError)
            data = Path(path).read_bytes()
        if loading:
            refuse_inflating_past_memory(data, name)
        return unseal(data, name, unsealed=unsealed)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {name!r} not found") from None
    except IsADirectoryError:
        inside = next((file for file in (Path(path) / CHECKPOINTS / LAST, Path(path) / LAST)
                       if file.is_file()), None)  # (a run's folder, or its checkpoints/)
        hint = (f"give its checkpoint, {str(inside)!r}" if inside is not None
                else f"it holds no {CHECKPOINTS}/{LAST}")
        raise CheckpointError(f"checkpoint {name!r} is a folder; {hint}") from None
    except OSError as err:
        raise CheckpointError(f"checkpoint {name!r} cannot be read: "
                              f"{err.strerror or err}") from None


def source_name(path) -> str:
    """How a message names the checkpoint ``path``: itself, or a file object's ``name``."""
    return str(getattr(path, "name", "<file object>")) if hasattr(path, "read") else str(path)


def parse_checkpoint(data: bytes, path: str | os.PathLike, map_location=None, *,
                     weights_only: bool = True) -> dict:
    """``torch.load(weights_only=True)`` of the checkpoint bytes ``data`` (read from ``path``),
    which must be a Lightning checkpoint as lotterynet writes it. ``weights_only=False`` only
    where the user asked for it, for a file of their own that holds Python objects (a
    callback's state): it unpickles whatever the file holds. ``data``: as
    :func:`read_checkpoint` reads it to load it (its declared size checked)."""
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location=map_location or "cpu",
                                weights_only=weights_only)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        refused = _REFUSED_GLOBAL.search(str(err))
        if refused:  # (the bytes were checked: the file holds it as it was written)
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds Python objects that a weights-only load refuses "
                f"({refused[1]}): save it again without them (numbers, strings, lists, dicts "
                f"and tensors); a file you trust loads in Python with weights_only=False, which "
                f"torch.load, EdgePopupModule.load_from_checkpoint and a Trainer's fit, "
                f"validate, test and predict take") from None
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or unreadable: "
                              f"{first_line(err)}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a Lightning checkpoint")
    fault = next((f"its {key!r} is not {what}" for key, (valid, what) in LIGHTNING_KEYS.items()
                  if key in checkpoint and not valid(checkpoint[key])), None)
    if fault:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a Lightning checkpoint as "
                              f"lotterynet writes it: {fault}")
    return checkpoint


def refuse_inflating_past_memory(data: bytes, path: str) -> None:
    """Refuse (:class:`CheckpointError`, one line) the checkpoint bytes ``data`` (read from
    ``path``) where its zip's members declare more bytes than the memory available:
    ``torch.load`` allocates each member's declared size."""
    inflated, have = _inflated_size(data), available_memory()
    if have is not None and inflated > have:
        raise CheckpointError(f"checkpoint {path!r} inflates to {in_binary_units(inflated)}, "
                              f"more than the {in_binary_units(have)} of memory this machine "
                              f"has available to load it")


def _inflated_size(data: bytes) -> int:
    """The bytes the members of the zip archive ``data`` declare, which ``torch.load`` reads
    whole: deflated, a file of megabytes can declare gigabytes (0 for what is no zip archive,
    which ``torch.load`` then names)."""
    try:
        return sum(member.file_size for member in zipfile.ZipFile(io.BytesIO(data)).infolist())
    except (zipfile.BadZipFile, EOFError, ValueError):
        return 0


def check_restorable(checkpoint: dict, path: str | os.PathLike) -> None:
    """:class:`CheckpointError` for a parsed checkpoint without the ``pytorch-lightning_version``
    that Lightning reads first as it loads or restores one (to migrate an older file's): its
    own failure was a bare ``KeyError`` deep in that migration. (Only where Lightning loads it:
    what lotterynet reads of a checkpoint itself, a run's config and epochs, does not need it.)"""
    if "pytorch-lightning_version" not in checkpoint:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a Lightning checkpoint: it holds "
                              f"no 'pytorch-lightning_version', which Lightning's load reads "
                              f"first (a file of your own: store pytorch_lightning.__version__ "
                              f"there)")


def stored_run(checkpoint: str | os.PathLike) -> tuple[dict, int]:
    """The run config a training checkpoint was written with, and the epochs it has done."""
    loaded = load_checkpoint(checkpoint)
    return stored_config(loaded, checkpoint), epochs_done(loaded)


def stored_config(loaded: dict, path: str | os.PathLike) -> dict:
    """The run config of the training checkpoint ``loaded`` (read from ``path``)."""
    hyper_parameters = loaded.get("hyper_parameters")
    stored = hyper_parameters.get("config") if isinstance(hyper_parameters, dict) else None
    if not isinstance(stored, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} is not a lotterynet training "
                              f"checkpoint (it stores no run config)")
    return stored


def _is_state(value) -> bool:
    return isinstance(value, dict) and isinstance(value.get("state"), dict) and \
        isinstance(value.get("param_groups"), list)


#: The parts of a Lightning checkpoint that resuming reads, and what each must be.
LIGHTNING_KEYS = {
    "state_dict": (lambda v: isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items()),
        "a mapping of names to tensors"),
    "hyper_parameters": (lambda v: isinstance(v, dict), "a mapping"),
    "epoch": (lambda v: type(v) is int and v >= 0, "an epoch count"),
    "global_step": (lambda v: type(v) is int and v >= 0, "a step count"),
    "optimizer_states": (lambda v: isinstance(v, list) and all(map(_is_state, v)),
                         "a list of optimizer states"),
    "lr_schedulers": (lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v),
                      "a list of schedule states"),
    "pytorch-lightning_version": (lambda v: isinstance(v, str), "a version string"),
    "loops": (lambda v: isinstance(v, dict) and all(isinstance(x, dict) for x in v.values()),
              "a mapping of loop states"),
    "callbacks": (lambda v: isinstance(v, dict) and all(isinstance(x, dict) for x in v.values()),
                  "a mapping of callback states"),
}


def epochs_done(checkpoint: dict) -> int:
    """Epochs a loaded training checkpoint has trained, whenever it was saved. Its ``epoch``
    (Lightning's ``current_epoch``, the epochs counted completed) is one short in a checkpoint
    saved at an epoch's end (in ``on_train_epoch_end``: ``ModelCheckpoint``'s, a run's
    ``last.ckpt``), as Lightning counts the epoch completed after that hook, but not in one
    saved after ``fit`` or within an epoch: the fit loop's ``processed`` epochs count every
    kind alike (its ``max_epochs`` reads them; an epoch that a Trainer option, ``max_time`` or
    ``max_steps``, stopped part way among them). An epoch under way whose last batch has
    trained (saved at that batch, ``every_n_train_steps``, or at a validation of its end)
    counts too. A checkpoint without loop states (not a Trainer's): its ``epoch`` + 1, as at an
    epoch's end (0 for one saved before any epoch ended)."""
    loop = nested(checkpoint, "loops", "fit_loop", default={})
    epochs = nested(loop, "epoch_progress", "current", default={})
    processed = nested(epochs, "processed", default=None)
    if type(processed) is not int:
        return checkpoint.get("epoch", -1) + 1
    last_batch = nested(loop, "epoch_loop.batch_progress", "is_last_batch", default=False)
    return processed + (epochs.get("started") == processed + 1 and last_batch is True)


def nested(mapping: dict, *keys, default):
    """``mapping[k1][k2]…``, or ``default`` where a level is missing."""
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return default
        mapping = mapping[key]
    return mapping


def checkpoint_run_dir(checkpoint: str | os.PathLike) -> Path:
    """The run a checkpoint belongs to: ``RUN/checkpoints/last.ckpt`` -> ``RUN`` (a checkpoint
    outside a ``checkpoints`` folder: the folder that holds it)."""
    folder = Path(checkpoint).resolve().parent
    return folder.parent if folder.name == CHECKPOINTS else folder
