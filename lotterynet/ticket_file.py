"""The ticket file format, and the checks that make reading it safe.

Layout (no pickle anywhere; reading only parses JSON and raw little-endian bytes)::

    b"LNTICKET" | u32 format version | u64 header length | header (JSON, UTF-8)
    | zlib(payload) | sha256 of everything before it (32 bytes)

The header's ``masks`` and ``tensors`` give each entry's ``shape`` (masks: ``k``; tensors:
``dtype``) and its ``offset`` and ``nbytes`` in the payload, whose size is ``payload_nbytes``;
``channels_last`` names the tensors laid out channels last (absent in older tickets: none),
``frozen_dtypes`` the floating dtypes of the regenerated weights (absent in older tickets).
:func:`read_header` validates all of it — types, shapes, sizes consistent with each other, the
announced payload within ``max_bytes`` and within what the file's compressed bytes can inflate
to (deflate expands at most 1032×) — before anything is allocated; :func:`inflate` then never
inflates past the announced size. Every failure is a :class:`TicketError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import zlib
from pathlib import Path
from stat import S_ISREG

import torch

from .checkpointing import TICKET_MAGIC, atomic_write
from .path_checks import check_output_dir

MAGIC = TICKET_MAGIC
ZIP_MAGIC = b"PK\x03\x04"  # what a file torch.save writes (a zip archive) begins with
FORMAT_VERSION = 1
MAX_BYTES = 8 * 2**30  # default limit on the payload and on a spec-built model, in bytes
TICKET = "model.ticket"  # a run's ticket, in its folder
_PREFIX = struct.Struct("<8sIQ")  # magic, format version, header length
_DIGEST_BYTES = 32
_ZLIB_LEVEL = 6
_ZLIB_MAX_RATIO = 1032  # deflate never expands by more than this
_MAX_NDIM = 16


def dtype_name(dtype: torch.dtype) -> str:
    """A ticket's name of ``dtype`` (``"float32"``), the key of :data:`DTYPES`."""
    return str(dtype).removeprefix("torch.")


DTYPES = {dtype_name(d): d for d in (
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool)}


class TicketError(ValueError):
    """A ticket file that cannot be loaded faithfully (corrupt, truncated, hostile, wrong
    version, or a model that does not rebuild to what was saved)."""


def check_path(path) -> Path:
    """``path`` as a :class:`Path`, or a TypeError naming it (pathlib's does not)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike (the ticket file), got {path!r}")
    return Path(path)


def write(path, header: dict, payload: bytes) -> int:
    """Write a ticket file (atomically: a kill leaves the old file or the new one); returns
    its size in bytes."""
    path = check_path(path)
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a folder; give the ticket a file name, e.g. "
                         f"{str(path / 'model.ticket')!r}")
    check_output_dir(path.parent, "the ticket's folder")
    try:
        header_bytes = json.dumps(header, allow_nan=False).encode()
    except (TypeError, ValueError) as error:
        raise ValueError(f"model.spec or a convert() argument is not JSON-able ({error})") \
            from error
    body = b"".join([_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes)), header_bytes,
                     zlib.compress(payload, _ZLIB_LEVEL)])
    data = body + hashlib.sha256(body).digest()
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return len(data)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise TicketError(f"malformed ticket header: {message}")


def _check_entry(name: str, entry, kind: str, payload_nbytes: int) -> None:
    """Types and sizes of one mask or tensor entry, consistent with each other."""
    _require(isinstance(entry, dict), f"{kind} {name!r} is not an object")
    shape = entry.get("shape")
    _require(isinstance(shape, list) and len(shape) <= _MAX_NDIM
             and all(_is_count(d) for d in shape), f"{kind} {name!r} has shape {shape!r}")
    numel = math.prod(shape)
    if kind == "mask":
        _require(_is_count(entry.get("k")) and entry["k"] <= numel,
                 f"mask {name!r} keeps k={entry.get('k')!r} of {numel}")
        expected = (numel + 7) // 8
    else:
        _require(isinstance(entry.get("dtype"), str) and entry["dtype"] in DTYPES,
                 f"tensor {name!r} has dtype {entry.get('dtype')!r}")
        expected = numel * DTYPES[entry["dtype"]].itemsize
    offset, nbytes = entry.get("offset"), entry.get("nbytes")
    _require(_is_count(offset) and nbytes == expected and offset + nbytes <= payload_nbytes,
             f"{kind} {name!r} occupies bytes {offset!r}+{nbytes!r}; its shape needs "
             f"{expected} within a payload of {payload_nbytes}")


def _check_header(header, compressed_nbytes: int, max_bytes: int) -> None:
    _require(isinstance(header, dict), "not a JSON object")
    size = header.get("payload_nbytes")
    _require(_is_count(size), f"payload_nbytes={size!r}")
    if size > max_bytes or size > _ZLIB_MAX_RATIO * compressed_nbytes + 64:
        raise TicketError(f"the header announces a payload of {size} bytes: over the limit "
                          f"max_bytes={max_bytes}, or more than {compressed_nbytes} compressed "
                          "bytes can hold")
    _require(header.get("spec") is None or (isinstance(header["spec"], dict)
                                            and isinstance(header["spec"].get("name"), str)),
             "spec must be null or an object with a name")
    converts = header.get("converts", [])
    _require(isinstance(converts, list) and all(
        isinstance(c, dict) and isinstance(c.get("path"), str)
        and isinstance(c.get("kwargs"), dict) for c in converts), "converts")
    _require(isinstance(header.get("frozen_sha256"), str), "frozen_sha256")
    laid_out = header.get("channels_last", [])
    _require(isinstance(laid_out, list) and all(isinstance(n, str) for n in laid_out),
             "channels_last must be a list of tensor names")
    frozen = header.get("frozen_dtypes", [])
    _require(isinstance(frozen, list) and all(
        isinstance(n, str) and n in DTYPES and DTYPES[n].is_floating_point for n in frozen),
        "frozen_dtypes must be a list of floating dtype names")
    total = 0
    for kind, key in (("mask", "masks"), ("tensor", "tensors")):
        entries = header.get(key)
        _require(isinstance(entries, dict), f"{key} must be an object")
        for name, entry in entries.items():
            _check_entry(name, entry, kind, size)
            total += entry["nbytes"]
    _require(total == size, f"the entries hold {total} bytes, payload_nbytes says {size}")


def _deflate_bound(nbytes: int) -> int:
    """The most bytes zlib's deflate makes of ``nbytes`` (zlib's ``compressBound``, rounded
    up)."""
    return nbytes + (nbytes >> 12) + (nbytes >> 14) + (nbytes >> 25) + 64


def _read_bounded(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path`` once it is a regular file that starts as a ticket of this format
    and is no larger than a ticket whose header and payload are each within ``max_bytes`` can
    be: nothing larger is read (a device, a pipe or a huge file is refused from its size and
    first bytes)."""
    try:
        stat = path.stat()  # (before open: opening a named pipe waits for a writer)
        if not S_ISREG(stat.st_mode):  # (a run's folder holds its ticket: named)
            inside = path / TICKET
            raise TicketError(f"{path}: not a regular file, so not a ticket" + (
                f"; give its ticket, {str(inside)!r}" if inside.is_file() else ""))
        with open(path, "rb") as f:
            prefix = f.read(_PREFIX.size)
            if len(prefix) < _PREFIX.size or stat.st_size < _PREFIX.size + _DIGEST_BYTES:
                raise TicketError(f"{path}: truncated ({stat.st_size} bytes), not a complete "
                                  f"ticket")
            magic, version, _ = _PREFIX.unpack(prefix)
            if magic.startswith(ZIP_MAGIC):
                raise TicketError(f"{path}: not a lotterynet ticket but a zip archive, as "
                                  f"torch.save writes: a checkpoint? load it with torch.load, or "
                                  f"a Lightning one with EdgePopupModule.load_from_checkpoint; "
                                  f"a ticket is what lotterynet.save_ticket writes")
            if magic != MAGIC:
                raise TicketError(f"{path}: not a lotterynet ticket (bad magic {magic!r})")
            if version != FORMAT_VERSION:
                raise TicketError(f"{path}: ticket format version {version}; this lotterynet "
                                  f"reads version {FORMAT_VERSION}")
            largest = _PREFIX.size + max_bytes + _deflate_bound(max_bytes) + _DIGEST_BYTES
            if stat.st_size > largest:
                raise TicketError(f"{path}: {stat.st_size} bytes, more than a ticket within "
                                  f"the limit max_bytes={max_bytes} can hold")
            return prefix + f.read(stat.st_size - _PREFIX.size)
    except OSError as error:
        raise TicketError(f"{path}: cannot read ({error})") from error


def read_header(path, max_bytes: int) -> tuple[dict, memoryview]:
    """Header and compressed payload of a ticket file, after the magic, version, checksum and
    header checks; nothing is inflated yet."""
    data = _read_bounded(check_path(path), max_bytes)
    magic, version, header_len = _PREFIX.unpack_from(data)
    body, digest = memoryview(data)[:-_DIGEST_BYTES], data[-_DIGEST_BYTES:]
    if hashlib.sha256(body).digest() != digest:
        raise TicketError(f"{path}: checksum mismatch, the ticket is corrupted or truncated")
    header_end = _PREFIX.size + header_len
    if header_end > len(body):
        raise TicketError(f"{path}: header length {header_len} exceeds the file")
    try:
        header = json.loads(bytes(body[_PREFIX.size:header_end]))
    except (ValueError, RecursionError) as error:
        raise TicketError(f"{path}: malformed ticket header ({error!r})") from error
    compressed = body[header_end:]
    try:
        _check_header(header, len(compressed), max_bytes)
    except TicketError as error:
        raise TicketError(f"{path}: {error}") from None
    return header, compressed


def inflate(compressed: memoryview, size: int, path) -> memoryview:
    try:
        inflate = zlib.decompressobj()
        payload = bytearray(inflate.decompress(compressed, size + 1))  # never past the size
    except (zlib.error, MemoryError) as error:
        raise TicketError(f"{path}: payload does not inflate ({error!r})") from error
    if len(payload) != size or not inflate.eof:
        raise TicketError(f"{path}: payload is not the {size} bytes its header announces")
    return memoryview(payload)
