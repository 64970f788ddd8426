"""IDX files (the format of MNIST and Fashion-MNIST), plain or gzipped.

torchvision reads only the uncompressed ``*-ubyte`` files, all four of a set; where some are
gzipped (``*-ubyte.gz``, as published, and five times smaller to carry to a GPU machine) a split
is read here, each file in the form it is in. An IDX file is a
4-byte magic number ``0, 0, dtype code, ndim``, ``ndim`` big-endian uint32 sizes, then the data.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np

DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IDXError(ValueError):
    """A file that is not a well-formed IDX file; the message names the file and the fault."""


def read_bytes(path: Path) -> bytearray:
    """The file's contents, through ``gzip`` when its name ends in ``.gz`` (a writable buffer,
    so that tensors can share it)."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            return bytearray(f.read())
    except (gzip.BadGzipFile, EOFError) as err:
        raise IDXError(f"{path}: not a readable gzip file ({err})") from None


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


def read_split(raw: Path, train: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """``(images, labels)`` of an MNIST-layout split from ``RAW/{train,t10k}-*-ubyte``, each
    file plain or gzipped (``.gz``: the plain one when both are there), or ``None`` when a file
    is missing in both forms."""
    prefix = "train" if train else "t10k"
    paths = [raw / f"{prefix}-{kind}-ubyte" for kind in ("images-idx3", "labels-idx1")]
    paths = [p if p.is_file() else p.with_name(p.name + ".gz") for p in paths]
    if not all(p.is_file() for p in paths):
        return None
    images, labels = map(read_idx, paths)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise IDXError(f"{raw}: {prefix} images {images.shape} and labels {labels.shape} do not "
                       f"match (want N x H x W images and N labels)")
    return images, labels
