"""IDX files (the format of MNIST and Fashion-MNIST), plain or gzipped.

The IDX sets are read here, not by torchvision: each file in the form it is in (``*-ubyte``, or
``*-ubyte.gz`` as published, five times smaller to carry to a GPU machine), and every fault
names its file (torchvision's errors name none, and it prefers a stale ``processed/`` folder to
the raw files). An IDX file is a 4-byte magic number ``0, 0, dtype code, ndim``, ``ndim``
big-endian uint32 sizes, then the data.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from .machine import refuse_larger_than_memory

DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IDXError(ValueError):
    """A file that is not a well-formed IDX file; the message names the file and the fault."""


def read_bytes(path: Path) -> bytearray:
    """The file's contents, through ``gzip`` when its name ends in ``.gz`` (a writable buffer,
    so that tensors can share it). A file larger than the memory is refused unread (read, a
    file of a terabyte was a MemoryError's traceback)."""
    try:
        refuse_larger_than_memory(path, str(path), IDXError)
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            return bytearray(f.read())
    except (OSError, EOFError, zlib.error) as err:  # (gzip.BadGzipFile is an OSError)
        what = "not a readable gzip file" if path.suffix == ".gz" else "unreadable"
        raise IDXError(f"{path}: {what} ({err})") from None


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file, in native byte order."""
    path = Path(path)
    data = read_bytes(path)
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in DTYPES:
        raise IDXError(f"{path}: not an IDX file (magic bytes {bytes(data[:4]).hex() or 'none'})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{path}: truncated header ({len(data)} bytes, {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(DTYPES[data[2]])
    size = header + math.prod(dims) * dtype.itemsize
    if len(data) != size:
        raise IDXError(f"{path}: {len(data):,} bytes, but its header ({'x'.join(map(str, dims))} "
                       f"of {dtype}) needs {size:,}")
    array = np.frombuffer(data, dtype, offset=header).reshape(dims)
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def split_files(raw: Path, train: bool) -> list[Path]:
    """The images and labels files of an MNIST-layout split, ``RAW/{train,t10k}-*-ubyte``: each
    the plain file where it is there, else the gzipped one (``.gz``, which may be missing too)."""
    prefix = "train" if train else "t10k"
    paths = [raw / f"{prefix}-{kind}-ubyte" for kind in ("images-idx3", "labels-idx1")]
    return [p if p.is_file() else p.with_name(p.name + ".gz") for p in paths]


def read_split(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` from a split's :func:`split_files`: uint8 ``N x H x W`` images and
    uint8 labels, as MNIST's files hold them (whether their counts agree is the caller's
    check)."""
    arrays = tuple(map(read_idx, paths))
    for path, array, ndim in zip(paths, arrays, (3, 1)):
        if array.ndim != ndim or array.dtype != np.uint8:
            raise IDXError(f"{path}: {array.ndim}-dimensional {array.dtype} data, not "
                           f"{ndim}-dimensional uint8")
    return arrays
