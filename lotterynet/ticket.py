"""Tickets: a found subnetwork in one small file, rebuilt bit for bit.

A ticket stores what cannot be regenerated and nothing else: every mask bit-packed (1 bit per
maskable weight) with its ``k``, the tensors training changed that are not masks (trainable
biases / norms, batch-norm running statistics, any buffer), and how to regenerate the frozen
random weights:

* a model made by :func:`~lotterynet.models.build_model` is rebuilt from its spec
  (``model.spec``, which holds the seed): ``load_ticket(path)``; every frozen tensor is
  regenerated. A module replaced after the build (timm's ``reset_classifier``, a layer
  assigned), converted or not, is not something a spec rebuilds: ``save_ticket`` refuses it,
  naming it;
* any other model (your own, converted with :func:`~lotterynet.convert.convert`, or holding
  subnet layers you built): ``load_ticket(path, model=MyNet())`` takes the architecture from
  you, as ``load_state_dict`` does, replays the recorded ``convert()`` calls (arguments and
  seeds) on it, then applies masks and tensors. The frozen tensors inside subnet layers are
  regenerated (from the convert seeds, or your layers' own seeds); frozen tensors outside them
  (norms, tokens, embeddings frozen by ``convert``) are stored. A subset-sum construction's
  layer (:func:`~lotterynet.constructions.subset_sum`) draws its coefficients over its seed's
  weights from another generator, whose CPU state it records with their range, count and
  layout (``drawn_over``, which its redraw, ``save_ticket``'s check, draws again); its bias,
  the sums found, is stored (a product network's, Malach's or Orseau's, the target's bias,
  too): its ticket loads into the model the same construction builds
  (``load_ticket(path, model=construct_model(...)[0])``). A convertible layer added or
  replaced after ``convert`` (timm's ``reset_classifier``) where the recorded calls reach, which
  a load would convert too, is refused by ``save_ticket``, naming it: no model would load it;
  converted by a call of its own, it is left out of the earlier calls the ticket records
  (:func:`~lotterynet.convert_record.left_out_of`; a call left with no layer still freezes what it
  froze), and loads into a model with the same change.

Either way the frozen weights of a subnet layer made without a seed (``SubnetLinear(...,
seed=None)``, drawn from torch's global generator, which no load replays) are stored, 32 bits a
float32 weight (give the layer a seed for a 1-bit ticket; ``save_ticket`` warns, naming such
layers and the bytes their weights take), and load only into a model whose
layer is made without one too: a ticket never replaces what a seeded layer regenerates.

Tensors laid out channels last (``model.to(memory_format=torch.channels_last)``) are listed by
name and come back so: a convolution's result depends on the layout, by float rounding.

A sha256 of the regenerated tensors (not of the stored ones, which the file holds) is checked,
so a rebuild that draws different random values (another torch or timm version, or, for a
ticket of an older lotterynet, which stored none, an unseeded layer) is an error, not a silently
different network; a model of another shape is refused naming the first tensor that differs.
A model whose frozen weights are no longer what a load regenerates (trained, or changed in
place, since it was made) cannot be a ticket: ``save_ticket`` refuses it, naming the first,
before writing anything. It compares them with each seeded subnet layer drawn again, one layer
at a time (float32 on the CPU; about 0.2 s for a ResNet-18 on one core; never the whole model
twice in memory), an attention's frozen ``bias_k`` / ``bias_v`` and LeNet5's random convs
(:class:`~lotterynet.archs.FrozenConv2d`) too; the other frozen tensors outside subnet layers
(a timm model's excluded layers, its norms and tokens) are not compared, but in a model
``build_model`` built on the ``meta`` device, where ``to_empty`` leaves them uninitialised and
no reset draws them as the build does: compared with a real build (the model built twice).

The file (:mod:`lotterynet.ticket_file`: no pickle, JSON header, zlib payload, sha256) holds
the spec (or null), the ``convert`` calls, the bit-packed masks and the stored tensors. zlib
gains nothing on masks of density 1/2 (random bits) and about 1.8× at 1/10, 7.8× at 1/100.

**Hostile files.** Every way a ticket can be wrong raises :class:`TicketError`, with bounded
memory: the header is validated and the sizes it announces checked against ``max_bytes`` and
the file before anything is allocated (:mod:`lotterynet.ticket_file`); a spec-built model, or
the ``convert`` calls replayed on a model you pass, is first built on the ``meta`` device, and
its size checked against ``max_bytes`` and its tensors against the header; the payload is
inflated only then, never past the size the model needs.
The model is built with network access refused (a Python audit hook, active only while a
ticket loads), so a spec cannot make the load download anything.

A ticket's parts, a module each: its model rebuilt, with the network refused
(:mod:`lotterynet.ticket_rebuild`), the frozen tensors it regenerates and their digest
(:mod:`lotterynet.ticket_frozen`), a model checked against it before anything is written or
restored (:mod:`lotterynet.ticket_checks`), and the file (:mod:`lotterynet.ticket_file`); this
module saves a ticket (:func:`save_ticket`: its masks bit-packed, its stored tensors and their
layouts) and loads one (:func:`load_ticket`: masks, tensors and layouts restored), and gives
the digest of a model's frozen tensors (:func:`frozen_digest`).
"""

from __future__ import annotations

import numbers
import sys
import warnings

import numpy as np
import torch
from torch import nn

from . import ticket_file
from .attention import outermost_subnet_modules
from .convert import LAYOUTS, laid_out
from .convert_checks import refuse_parametrized, refuse_torch_pruned
from .errors import plural
from .masking import named_masked_weights, trainable_where_made, uncompiled
from .models import BUILT_ON_META
from .ticket_checks import build_checked, check_fits, meta_tensor, rebuilt_as_saved, ticket_spec
from .ticket_file import DTYPES, FORMAT_VERSION, MAX_BYTES, TicketError, inflate, read_header
from .ticket_frozen import (
    EXTRA_STATE,
    built_again,
    first_changed,
    first_names,
    float_dtypes,
    frozen_as_built,
    redrawn,
    round_through,
    saved_casts,
    split_state,
    subnet_frozen,
    tensor_bytes,
    tensors_digest,
)
from .ticket_rebuild import convert_calls, offline

__all__ = ["FORMAT_VERSION", "MAX_BYTES", "TicketError", "frozen_digest", "load_ticket",
           "save_ticket"]

# --- what a ticket stores --------------------------------------------------------------------

def _warn_unseeded(model: nn.Module, stored: dict, size: int) -> None:
    """Warn, once for the ticket, that subnet layers of ``model`` made without a seed made it
    ``size`` bytes: it stores their frozen weights (``stored``: what it stores), which a seed
    would regenerate. An attention's projections are counted in it."""
    frozen = [name for name, seeded in subnet_frozen(model).items()
              if not seeded and name in stored]
    if not frozen:
        return
    layers = [name for name, _ in outermost_subnet_modules(model, where=lambda m: not m.seeded)]
    nbytes = sum(stored[name].numel() * stored[name].element_size() for name in frozen)
    shown = ", ".join(repr(name) if name else "the model" for name in layers[:3])
    warnings.warn(f"save_ticket: {plural(len(layers), 'subnet layer')} made without a seed ({shown}"
                  f"{', ...' if len(layers) > 3 else ''}): the ticket stores their frozen "
                  f"weights, drawn from torch's global generator, which no load replays: "
                  f"{nbytes:,} of its {size:,} bytes; made with a seed (SubnetLinear(..., "
                  f"seed=0)) a layer's weights are regenerated and its ticket holds its 1-bit "
                  f"mask only", stacklevel=3)


def _channels_last(model: nn.Module) -> list[str]:
    """The names of ``model``'s tensors laid out channels last (``model.to(memory_format=
    torch.channels_last)``), each tensor once (under its first name)."""
    return [name for name, value in first_names(model)
            if name.rpartition(".")[2] != EXTRA_STATE and laid_out(value)]


def _restore_layouts(model: nn.Module, names: list[str], path) -> None:
    """Lay the ticket's channels-last tensors out so again, values unchanged (a rebuild makes
    them contiguous, and a convolution's result depends on the layout, by float rounding)."""
    state = model.state_dict(keep_vars=True)
    for name in names:
        value = state.get(name)
        if value is None or value.dim() not in LAYOUTS:
            raise TicketError(f"{path}: the ticket lays out {name!r} channels last, but the "
                              f"model has no 4- or 5-dimensional tensor of that name")
        value.data = torch.empty_like(value, memory_format=LAYOUTS[value.dim()]).copy_(value)


def _trained(model: nn.Module) -> nn.Module:
    """The model an :class:`~lotterynet.module.EdgePopupModule` trains (``module.model``, which
    ``build_model`` made: its ticket has the spec), or ``model`` itself."""
    lightning = sys.modules.get(f"{__package__}.module")  # (not imported: no such module)
    return uncompiled(model.model) if lightning and isinstance(
        model, lightning.EdgePopupModule) else model


def frozen_digest(model: nn.Module) -> str:
    """sha256 over the names and bytes of the frozen parameters a load of ``model``'s ticket
    regenerates."""
    model = _trained(uncompiled(model, "frozen_digest"))
    return tensors_digest(split_state(model, frozen_as_built(model, ticket_spec(model)))[0])


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
    subnet layers can be saved (module docstring for what is stored); for an
    :class:`~lotterynet.module.EdgePopupModule`, the model it trains (``module.model``). Warns
    (``UserWarning``) when subnet layers made without a seed make it store their frozen weights.
    Refuses (``ValueError``) a model whose frozen weights are not what a load regenerates."""
    model = _trained(uncompiled(model, "save_ticket"))
    refuse_torch_pruned(model, "save_ticket", "a ticket does not store")
    refuse_parametrized(model)
    masked = named_masked_weights(model)
    if not masked:
        raise ValueError("the model has no subnet (maskable) layers: nothing to save as a ticket")
    state = model.state_dict()
    other = next(((n, t) for n, t in state.items() if not isinstance(t, torch.Tensor)), None)
    if other is not None:
        raise ValueError(f"state {other[0]!r} is a {type(other[1]).__name__}, not a tensor: a "
                         f"ticket stores tensors only (return a tensor from get_extra_state)")
    meta = meta_tensor(state)
    if meta is not None:
        raise ValueError(f"tensor {meta!r} is on the meta device, which holds no values: "
                         f"nothing to save as a ticket (build or load the model's values first)")
    spec = ticket_spec(model)
    probe = rebuilt_as_saved(model, spec)
    frozen = frozen_as_built(model, spec, probe)
    regenerated, stored = split_state(model, frozen)
    changed = first_changed(regenerated, redrawn(model, regenerated))
    if changed is not None:
        raise ValueError(f"save_ticket: frozen parameter {changed!r} is no longer what its seed "
                         f"draws (trained, or changed in place, since the model was made; "
                         f"to_empty leaves it uninitialised until reset_parameters draws it), "
                         f"and a ticket regenerates frozen weights from their seeds, so this model "
                         f"cannot be saved as a ticket: save a checkpoint (model.state_dict()) "
                         f"instead, or {trainable_where_made(any_tensor=True)}")
    built_on_meta = spec is not None and model.__dict__.get(BUILT_ON_META)
    unset = built_on_meta and first_changed(regenerated, built_again(model, spec, regenerated))
    if unset:
        raise ValueError(f"save_ticket: frozen parameter {unset!r} is not what the model's spec "
                         f"builds: the model was built on the meta device and to_empty left it "
                         f"uninitialised, which no reset_parameters draws as the build does (a "
                         f"timm model's tokens, position embeddings and layer scales, a layer "
                         f"left dense), and a ticket regenerates it from the spec: build the "
                         f"model on a real device (or give it a real build's values: "
                         f"model.load_state_dict(state, assign=True))")
    thawed = next((name for name, p in regenerated.items() if p.requires_grad), None)
    if thawed is not None:
        raise ValueError(f"parameter {thawed!r} requires grad, but the model is built with it "
                         f"frozen, so a ticket regenerates it from the seed: freeze it again "
                         f"(model.get_parameter({thawed!r}).requires_grad_(False)) before "
                         f"save_ticket, or {trainable_where_made(any_tensor=True)}")
    payload = _Payload()
    masks = {}
    for name, m in masked.items():
        bits = np.packbits(m.mask().cpu().numpy().reshape(-1), bitorder="little")
        masks[name] = {"shape": list(m.weight.shape), "k": m.kept, **payload.add(bits.tobytes())}
    tensors = {}
    for name, t in stored.items():
        dtype = ticket_file.dtype_name(t.dtype)
        if dtype not in DTYPES:
            raise ValueError(f"tensor {name!r} has dtype {t.dtype}, which tickets do not store")
        tensors[name] = {"dtype": dtype, "shape": list(t.shape), **payload.add(tensor_bytes(t))}
    header = {"spec": spec, "converts": convert_calls(model), "masks": masks,
              "tensors": tensors, "frozen_sha256": tensors_digest(regenerated),
              "frozen_dtypes": sorted(ticket_file.dtype_name(d)
                                      for d in float_dtypes(regenerated.values())),
              "channels_last": _channels_last(model), "payload_nbytes": payload.size}
    size = ticket_file.write(path, header, b"".join(payload.chunks))
    _warn_unseeded(model, stored, size)
    return size


def _impose_masks(model: nn.Module, masks: dict, payload: memoryview) -> None:
    modules = named_masked_weights(model)
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
        owner, _, what = name.rpartition(".")
        if what == EXTRA_STATE:  # (a state dict holds a copy: set it as load_state_dict does)
            model.get_submodule(owner).set_extra_state(value.clone())
            continue
        with torch.no_grad():
            target.copy_(value)


def load_ticket(path, model: nn.Module | None = None, *, max_bytes: int = MAX_BYTES
                ) -> nn.Module:
    """The model of a ticket, with its masks and stored tensors imposed.

    ``model=None``: rebuilt from the ticket's spec (models made by ``build_model``, converted
    further or not). Otherwise ``model`` is the architecture (a fresh instance, as for
    ``load_state_dict``): the ticket's recorded ``convert()`` calls are replayed on it, in
    place, and the result returned (an :class:`~lotterynet.module.EdgePopupModule` given for a
    ticket with a spec: its model loaded, the module returned). For a ticket with a spec it is
    a model ``build_model`` built with the same arguments: one of another sparsity, seed,
    structure, ... is refused, naming the first that differs
    (:func:`~lotterynet.models.spec_difference`).
    ``max_bytes`` bounds the payload and the model (spec-built, or yours once converted).
    Raises :class:`TicketError` for any file or model that does not match, before allocating
    what a hostile header asks for.
    """
    compiled = model
    if model is not None:
        model = uncompiled(model, "load_ticket")
        refuse_torch_pruned(model, "load_ticket", "a ticket does not load into")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, numbers.Integral) \
            or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive integer (bytes), got {max_bytes!r}")
    header, compressed = read_header(path, max_bytes)
    if model is not None and header["spec"] is not None:
        model = _trained(model)  # (a ticket without one: an older one of the whole module)
    into, built = model, model is None
    try:
        with offline():
            model, frozen = build_checked(header, model, path, max_bytes)
    except TicketError:
        raise
    except Exception as error:  # the spec and convert arguments are untrusted input
        raise TicketError(f"{path}: the ticket's model does not build ({error!r})") from error
    regenerated = split_state(model, frozen)[0]
    same = tensors_digest(regenerated) == header["frozen_sha256"]
    as_saved = None if same else saved_casts(regenerated, header["frozen_sha256"],
                                           header.get("frozen_dtypes"))
    rounded_through, saved_in = as_saved or (None, None)
    if saved_in is not None and not built:
        raise TicketError(f"{path}: the ticket was saved from a {saved_in} model; load it into "
                          f"model.to({saved_in})")
    if rounded_through is not None:  # as saved: rounded as the casts since its build rounded
        with torch.no_grad():
            for p in regenerated.values():
                if (rounded := round_through(p, rounded_through)) is not p:
                    p.copy_(rounded)
    if saved_in is not None:  # as saved: the spec's model after .to(dtype), digest and all
        model = model.to(saved_in)
    check_fits(model, header, path, frozen)
    stored = split_state(model, frozen)[1]
    if not same and as_saved is None:
        raise TicketError(f"{path}: rebuilding the model gave different frozen random weights "
                          "than when the ticket was saved (different torch, timm or lotterynet "
                          "version, another model seed, or subnet layers built without a seed?)")
    payload = inflate(compressed, header["payload_nbytes"], path)
    _impose_masks(model, header["masks"], payload)
    _restore_tensors(model, header["tensors"], stored, payload)
    _restore_layouts(model, header.get("channels_last", []), path)  # (older tickets: none)
    return compiled if model is into else model
