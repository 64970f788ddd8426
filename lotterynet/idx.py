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

from .errors import in_binary_units
from .machine import available_memory, refuse_larger_than_memory

DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IDXError(ValueError):
    """A file that is not a well-formed IDX file; the message names the file and the fault."""


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file, plain or gzipped, in native byte order. No more is
    read than its header promises (and a byte to tell a longer file): a gzip bomb, a small
    ``.gz`` of gigabytes of data, was decompressed whole until it filled the memory. A file
    larger than the memory is refused unread (read, a file of a terabyte was a MemoryError's
    traceback), and so is a header that promises more."""
    path = Path(path)
    try:
        refuse_larger_than_memory(path, str(path), IDXError)
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            dims, dtype = read_header(path, f)
            data = bytearray(promised_bytes(path, dims, dtype) + 1)  # (writable: tensors
            read = f.readinto(data)                                   # share it)
    except (OSError, EOFError, zlib.error) as err:  # (gzip.BadGzipFile is an OSError)
        what = "not a readable gzip file" if path.suffix == ".gz" else "unreadable"
        raise IDXError(f"{path}: {what} ({err})") from None
    header, needed = 4 + 4 * len(dims), len(data) - 1
    if read != needed:
        size = f"{header + read:,}" if read < needed else f"more than {header + needed:,}"
        raise IDXError(f"{path}: {size} bytes, but its header ({'x'.join(map(str, dims))} "
                       f"of {dtype}) needs {header + needed:,}")
    array = np.frombuffer(data, dtype, math.prod(dims)).reshape(dims)
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def read_header(path: Path, f) -> tuple[tuple[int, ...], np.dtype]:
    """The sizes and the dtype of the IDX file ``path``, read from its start (``f``)."""
    magic = f.read(4)
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in DTYPES:
        raise IDXError(f"{path}: not an IDX file (magic bytes {magic.hex() or 'none'})")
    ndim = magic[3]
    sizes = f.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise IDXError(f"{path}: truncated header ({4 + len(sizes)} bytes, {ndim} dimensions)")
    return struct.unpack(f">{ndim}I", sizes), np.dtype(DTYPES[magic[2]])


def promised_bytes(path: Path, dims: tuple[int, ...], dtype: np.dtype) -> int:
    """The bytes of data that the header of ``path`` promises (``dims`` of ``dtype``), refused
    where they are more than the memory available to read them."""
    size, have = math.prod(dims) * dtype.itemsize, available_memory()
    if have is not None and size > have:
        raise IDXError(f"{path}: its header ({'x'.join(map(str, dims))} of {dtype}) promises "
                       f"{in_binary_units(size)} of data, more than the {in_binary_units(have)} "
                       f"of memory this machine has available to read it")
    return size


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
