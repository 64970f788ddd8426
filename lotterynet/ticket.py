"""Tickets: a found subnetwork in one small file, rebuilt bit for bit.

A ticket stores what cannot be regenerated and nothing else: every mask bit-packed (1 bit per
maskable weight) with its ``k``, the tensors training changed that are not masks (trainable
biases / norms, batch-norm running statistics, any buffer), and how to regenerate the frozen
random weights:

* a model made by :func:`~lotterynet.models.build_model` is rebuilt from its spec
  (``model.spec``, which holds the seed): ``load_ticket(path)``; every frozen tensor is
  regenerated;
* any other model (your own, converted with :func:`~lotterynet.convert.convert`, or holding
  subnet layers you built): ``load_ticket(path, model=MyNet())`` takes the architecture from
  you, as ``load_state_dict`` does, replays the recorded ``convert()`` calls (arguments and
  seeds) on it, then applies masks and tensors. The frozen tensors inside subnet layers are
  regenerated (from the convert seeds, or your layers' own seeds); frozen tensors outside them
  (norms, tokens, embeddings frozen by ``convert``) are stored.

A sha256 of the regenerated tensors is stored and checked, so a rebuild that draws different
random values (another torch or timm version, an unseeded layer) is an error, not a silently
different network; a model of another shape is refused naming the first tensor that differs.

File layout (no pickle anywhere; loading only parses JSON and raw little-endian bytes)::

    b"LNTICKET" | u32 format version | u64 header length | header (JSON, UTF-8)
    | zlib(payload) | sha256 of everything before it (32 bytes)

The header lists the spec (or null), the ``convert`` calls, each mask (``shape``, ``k``) and
each tensor (``dtype``, ``shape``) with its ``offset`` and ``nbytes`` in the payload, and the
payload's size (``payload_nbytes``). zlib gains nothing on masks of density 1/2 (random bits)
and about 1.8× at 1/10, 7.8× at 1/100.

**Hostile files.** Every way a ticket can be wrong raises :class:`TicketError`, with bounded
memory: the header is validated (types, shapes, sizes consistent with each other) and the
sizes it announces are checked against ``max_bytes`` and against the file (zlib cannot expand
more than 1032×) before anything is allocated; a spec-built model is first built on the
``meta`` device, and its size checked against ``max_bytes`` and its tensors against the
header; the payload is inflated only then, never past the size the model needs. The model is
built with network access refused (a Python audit hook, active only while a ticket loads), so
a spec cannot make the load download anything.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import math
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .attention import SubnetMultiheadAttention
from .convert import CONVERT_RECORD, convert
from .layers import _SubnetLayer
from .masking import MaskedWeight
from .models import build_model

MAGIC = b"LNTICKET"
FORMAT_VERSION = 1
MAX_BYTES = 8 * 2**30  # default limit on the payload and on a spec-built model, in bytes
_PREFIX = struct.Struct("<8sIQ")  # magic, format version, header length
_DIGEST_BYTES = 32
_ZLIB_LEVEL = 6
_ZLIB_MAX_RATIO = 1032  # deflate never expands by more than this
_MAX_NDIM = 16
_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool)}
_SUBNETS = (_SubnetLayer, SubnetMultiheadAttention)


class TicketError(ValueError):
    """A ticket file that cannot be loaded faithfully (corrupt, truncated, hostile, wrong
    version, or a model that does not rebuild to what was saved)."""


# --- no network while a ticket loads ---------------------------------------------------------

_OFFLINE = contextvars.ContextVar("lotterynet_ticket_offline", default=False)
_NETWORK_EVENTS = frozenset({"socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
                             "socket.gethostbyname_ex", "socket.gethostbyaddr", "socket.sendto",
                             "socket.sendmsg", "urllib.Request"})
_HOOK = []  # installed once, on the first load (audit hooks cannot be removed)


def _refuse_network(event: str, args) -> None:
    if event in _NETWORK_EVENTS and _OFFLINE.get():
        raise TicketError(f"loading a ticket may not use the network (refused {event})")


@contextlib.contextmanager
def _offline():
    if not _HOOK:
        sys.addaudithook(_refuse_network)
        _HOOK.append(_refuse_network)
    token = _OFFLINE.set(True)
    try:
        yield
    finally:
        _OFFLINE.reset(token)


# --- what a ticket stores --------------------------------------------------------------------

def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _masked_modules(model: nn.Module) -> dict[str, MaskedWeight]:
    return {n: m for n, m in model.named_modules() if isinstance(m, MaskedWeight)}


def _split_state(model: nn.Module, from_spec: bool) -> tuple[dict, dict]:
    """``(regenerated, stored)``: the frozen parameters the load regenerates (all of them for
    a spec-built model, else those inside subnet layers) and the parameters and buffers a
    ticket stores (everything else, except the scores)."""
    scores = {f"{n}.scores" for n in _masked_modules(model)}
    inside = {f"{n}." for n, m in model.named_modules() if isinstance(m, _SUBNETS)}
    regenerated, stored = {}, {}
    for name, value in model.state_dict(keep_vars=True).items():
        if name in scores:
            continue
        frozen = isinstance(value, nn.Parameter) and not value.requires_grad
        if frozen and (from_spec or any(name.startswith(prefix) for prefix in inside)):
            regenerated[name] = value
        else:
            stored[name] = value
    return regenerated, stored


def _digest(tensors: dict) -> str:
    h = hashlib.sha256()
    for name, value in tensors.items():
        h.update(name.encode())
        h.update(_tensor_bytes(value))
    return h.hexdigest()


def frozen_digest(model: nn.Module) -> str:
    """sha256 over the names and bytes of the frozen parameters a load of ``model``'s ticket
    regenerates."""
    return _digest(_split_state(model, getattr(model, "spec", None) is not None)[0])


def _convert_calls(model: nn.Module) -> list[dict]:
    """The ``convert()`` calls recorded on ``model`` and its submodules, in call order."""
    calls = [{"path": name, **record} for name, module in model.named_modules()
             for record in module.__dict__.get(CONVERT_RECORD, ())]
    return sorted(calls, key=lambda call: call["order"])


class _Payload:
    def __init__(self):
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> dict:
        entry = {"offset": self.size, "nbytes": len(data)}
        self.chunks.append(data)
        self.size += len(data)
        return entry


def save_ticket(model: nn.Module, path) -> int:
    """Write ``model``'s ticket to ``path``; returns the file size in bytes. Any model holding
    subnet layers can be saved (module docstring for what is stored)."""
    masked = _masked_modules(model)
    if not masked:
        raise ValueError("the model has no subnet (maskable) layers: nothing to save as a ticket")
    spec = getattr(model, "spec", None)
    regenerated, stored = _split_state(model, spec is not None)
    payload = _Payload()
    masks = {}
    for name, m in masked.items():
        bits = np.packbits(m.mask().cpu().numpy().reshape(-1), bitorder="little")
        masks[name] = {"shape": list(m.weight.shape), "k": m.kept, **payload.add(bits.tobytes())}
    tensors = {}
    for name, t in stored.items():
        dtype = str(t.dtype).removeprefix("torch.")
        if dtype not in _DTYPES:
            raise ValueError(f"tensor {name!r} has dtype {t.dtype}, which tickets do not store")
        tensors[name] = {"dtype": dtype, "shape": list(t.shape), **payload.add(_tensor_bytes(t))}
    header = {"spec": spec, "converts": _convert_calls(model), "masks": masks,
              "tensors": tensors, "frozen_sha256": _digest(regenerated),
              "payload_nbytes": payload.size}
    try:
        header_bytes = json.dumps(header, allow_nan=False).encode()
    except (TypeError, ValueError) as error:
        raise ValueError(f"model.spec or a convert() argument is not JSON-able ({error})") \
            from error
    body = b"".join([_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes)), header_bytes,
                     zlib.compress(b"".join(payload.chunks), _ZLIB_LEVEL)])
    data = body + hashlib.sha256(body).digest()
    Path(path).write_bytes(data)
    return len(data)


# --- reading: every check before any allocation ----------------------------------------------

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
        _require(entry.get("dtype") in _DTYPES, f"tensor {name!r} has dtype {entry.get('dtype')!r}")
        expected = numel * _DTYPES[entry["dtype"]].itemsize
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
    total = 0
    for kind, key in (("mask", "masks"), ("tensor", "tensors")):
        entries = header.get(key)
        _require(isinstance(entries, dict), f"{key} must be an object")
        for name, entry in entries.items():
            _check_entry(name, entry, kind, size)
            total += entry["nbytes"]
    _require(total == size, f"the entries hold {total} bytes, payload_nbytes says {size}")


def _read_header(path, max_bytes: int) -> tuple[dict, memoryview]:
    """Header and compressed payload of a ticket file, after the magic, version, checksum and
    header checks; nothing is inflated yet."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise TicketError(f"{path}: cannot read ({error})") from error
    if len(data) < _PREFIX.size + _DIGEST_BYTES:
        raise TicketError(f"{path}: truncated ({len(data)} bytes), not a complete ticket")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise TicketError(f"{path}: not a lotterynet ticket (bad magic {magic!r})")
    if version != FORMAT_VERSION:
        raise TicketError(f"{path}: ticket format version {version}; this lotterynet reads "
                          f"version {FORMAT_VERSION}")
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


def _inflate(compressed: memoryview, size: int, path) -> memoryview:
    try:
        inflate = zlib.decompressobj()
        payload = bytearray(inflate.decompress(compressed, size + 1))  # never past the size
    except (zlib.error, MemoryError) as error:
        raise TicketError(f"{path}: payload does not inflate ({error!r})") from error
    if len(payload) != size or not inflate.eof:
        raise TicketError(f"{path}: payload is not the {size} bytes its header announces")
    return memoryview(payload)


def _entries(model: nn.Module, from_spec: bool) -> dict[str, dict]:
    """What the model's ticket would list: ``{"masks": {name: shape}, "tensors": {name:
    [dtype, shape]}}``."""
    stored = _split_state(model, from_spec)[1]
    return {"masks": {n: list(m.weight.shape) for n, m in _masked_modules(model).items()},
            "tensors": {n: [str(t.dtype).removeprefix("torch."), list(t.shape)]
                        for n, t in stored.items()}}


def _check_fits(model: nn.Module, header: dict, path) -> None:
    """Refuse a model whose masks or stored tensors differ from the ticket's, naming the
    first that differs."""
    model_side = _entries(model, header["spec"] is not None)
    for key, describe in (("masks", lambda e: e["shape"]),
                          ("tensors", lambda e: [e["dtype"], e["shape"]])):
        ours = model_side[key]
        for name, entry in header[key].items():
            if name not in ours:
                raise TicketError(f"{path}: the model has no {key[:-1]} {name!r} (the ticket "
                                  "was saved from another architecture)")
            if ours[name] != describe(entry):
                raise TicketError(f"{path}: {key[:-1]} {name!r} differs: the ticket has "
                                  f"{describe(entry)}, the model {ours[name]}")
        extra = [name for name in ours if name not in header[key]]
        if extra:
            raise TicketError(f"{path}: the model's {key[:-1]} {extra[0]!r} is not in the "
                              "ticket (the ticket was saved from another architecture)")


def _state_nbytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def _build_from_spec(header: dict, path, max_bytes: int) -> nn.Module:
    """``build_model(**spec)``, first on the meta device: its size and tensors are checked
    before the real build allocates anything."""
    if header["spec"] is None:
        raise TicketError(f"{path}: the ticket was saved from a model without a spec (your own "
                          "model, converted with convert()); pass the architecture: "
                          "load_ticket(path, model=MyNet())")
    spec = dict(header["spec"])
    name = spec.pop("name")
    with torch.device("meta"):
        probe = build_model(name, **spec)
    nbytes = _state_nbytes(probe)
    if nbytes > max_bytes:
        raise TicketError(f"{path}: the ticket's spec builds a model of {nbytes} bytes, over the "
                          f"limit max_bytes={max_bytes}")
    _check_fits(probe, header, path)
    return build_model(name, **spec)


def _replay_converts(model: nn.Module, converts: list[dict]) -> nn.Module:
    """Apply the ticket's recorded ``convert()`` calls to ``model``, in order."""
    for call in converts:
        path = call["path"]
        target = model.get_submodule(path)
        result = convert(target, **call["kwargs"])
        if result is not target:  # the call converted a layer itself
            if not path:
                model = result
            else:
                parent, _, child = path.rpartition(".")
                setattr(model.get_submodule(parent), child, result)
    return model


def _impose_masks(model: nn.Module, masks: dict, payload: memoryview) -> None:
    modules = _masked_modules(model)
    for name, entry in masks.items():
        m = modules[name]
        raw = payload[entry["offset"]:entry["offset"] + entry["nbytes"]]
        flat = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=m.weight.numel(),
                             bitorder="little").astype(bool)
        if int(flat.sum()) != entry["k"]:
            raise TicketError(f"mask {name!r} does not hold k={entry['k']} kept entries")
        try:
            m.set_mask(torch.from_numpy(flat).reshape(m.weight.shape).to(m.weight.device))
        except ValueError as error:
            raise TicketError(f"mask {name!r}: {error}") from error


def _restore_tensors(model: nn.Module, tensors: dict, stored: dict, payload: memoryview) -> None:
    for name, entry in tensors.items():
        target = stored[name]
        if not target.numel():  # nothing to copy (frombuffer rejects empty buffers)
            continue
        raw = payload[entry["offset"]:entry["offset"] + entry["nbytes"]]
        value = torch.frombuffer(raw, dtype=torch.uint8).view(target.dtype).reshape(target.shape)
        with torch.no_grad():
            target.copy_(value)


def load_ticket(path, model: nn.Module | None = None, *, max_bytes: int = MAX_BYTES
                ) -> nn.Module:
    """The model of a ticket, with its masks and stored tensors imposed.

    ``model=None``: rebuilt from the ticket's spec (models made by ``build_model``). Otherwise
    ``model`` is the architecture (a fresh instance, as for ``load_state_dict``): the ticket's
    recorded ``convert()`` calls are replayed on it, in place, and the result returned.
    ``max_bytes`` bounds the payload and a spec-built model. Raises :class:`TicketError` for
    any file or model that does not match, before allocating what a hostile header asks for.
    """
    header, compressed = _read_header(path, max_bytes)
    from_spec = header["spec"] is not None
    try:
        with _offline():
            if model is None:
                model = _build_from_spec(header, path, max_bytes)
            else:
                model = _replay_converts(model, header.get("converts", []))
    except TicketError:
        raise
    except Exception as error:  # the spec and convert arguments are untrusted input
        raise TicketError(f"{path}: the ticket's model does not build ({error!r})") from error
    _check_fits(model, header, path)
    regenerated, stored = _split_state(model, from_spec)
    if _digest(regenerated) != header["frozen_sha256"]:
        raise TicketError(f"{path}: rebuilding the model gave different frozen random weights "
                          "than when the ticket was saved (different torch, timm or lotterynet "
                          "version, another model seed, or subnet layers built without a seed?)")
    payload = _inflate(compressed, header["payload_nbytes"], path)
    _impose_masks(model, header["masks"], payload)
    _restore_tensors(model, header["tensors"], stored, payload)
    return model
