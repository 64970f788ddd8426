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
  (:func:`~lotterynet.convert.left_out_of`; a call left with no layer still freezes what it
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
twice in memory), an attention's frozen ``bias_k`` / ``bias_v`` too; the frozen tensors
outside subnet layers (LeNet5's random convs, a timm model's excluded layers) are not compared.

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
"""

from __future__ import annotations

import copy
import json
import numbers
import sys
import warnings

import numpy as np
import torch
from torch import nn

from . import ticket_file
from .attention import outermost_subnet_modules
from .convert import LAYOUTS, laid_out, on_meta, refuse_torch_pruned
from .errors import plural
from .masking import named_masked_weights, trainable_where_made, uncompiled
from .models import recorded_spec, spec_difference
from .ticket_file import DTYPES, FORMAT_VERSION, MAX_BYTES, TicketError, inflate, read_header
from .ticket_frozen import (
    EXTRA_STATE,
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
from .ticket_rebuild import convert_calls, offline, rebuild, replay_converts, replayed
from .timm_models import sourced

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
    return tensors_digest(split_state(model, frozen_as_built(model, _ticket_spec(model)))[0])


def _sourced(spec: dict | None) -> str | None:
    """The timm model name of ``spec`` when timm builds it from a config it fetches or reads
    (``hf-hub:``, ``local-dir:``), which loading a ticket never does; else None."""
    name = spec.get("model_name") if spec is not None and spec["name"] == "timm" else None
    return name if isinstance(name, str) and sourced(name) else None


def _ticket_spec(model: nn.Module) -> dict | None:
    """The spec a ticket of ``model`` rebuilds it from: :func:`recorded_spec`, but None for a
    timm model built from a fetched or read config (:func:`_sourced`), whose ticket is then one
    of your own model's (``load_ticket(path, model=...)``)."""
    spec = recorded_spec(model)
    return None if _sourced(spec) else spec


class _Payload:
    def __init__(self):
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> dict:
        entry = {"offset": self.size, "nbytes": len(data)}
        self.chunks.append(data)
        self.size += len(data)
        return entry


def _meta_tensor(state: dict) -> str | None:
    """The name of the first tensor of a model's ``state`` (dict) on the ``meta`` device
    (which holds no values), else None."""
    return next((n for n, t in state.items() if isinstance(t, torch.Tensor) and t.is_meta),
                None)


def save_ticket(model: nn.Module, path) -> int:
    """Write ``model``'s ticket to ``path``; returns the file size in bytes. Any model holding
    subnet layers can be saved (module docstring for what is stored); for an
    :class:`~lotterynet.module.EdgePopupModule`, the model it trains (``module.model``). Warns
    (``UserWarning``) when subnet layers made without a seed make it store their frozen weights.
    Refuses (``ValueError``) a model whose frozen weights are not what a load regenerates."""
    model = _trained(uncompiled(model, "save_ticket"))
    refuse_torch_pruned(model, "save_ticket", "a ticket does not store")
    masked = named_masked_weights(model)
    if not masked:
        raise ValueError("the model has no subnet (maskable) layers: nothing to save as a ticket")
    state = model.state_dict()
    other = next(((n, t) for n, t in state.items() if not isinstance(t, torch.Tensor)), None)
    if other is not None:
        raise ValueError(f"state {other[0]!r} is a {type(other[1]).__name__}, not a tensor: a "
                         f"ticket stores tensors only (return a tensor from get_extra_state)")
    meta = _meta_tensor(state)
    if meta is not None:
        raise ValueError(f"tensor {meta!r} is on the meta device, which holds no values: "
                         f"nothing to save as a ticket (build or load the model's values first)")
    spec = _ticket_spec(model)
    probe = _rebuilt_as_saved(model, spec)
    frozen = frozen_as_built(model, spec, probe)
    regenerated, stored = split_state(model, frozen)
    changed = first_changed(regenerated, redrawn(model, regenerated))
    if changed is not None:
        raise ValueError(f"save_ticket: frozen parameter {changed!r} is no longer what its seed "
                         f"draws (trained, or changed in place, since the model was made), and "
                         f"a ticket regenerates frozen weights from their seeds, so this model "
                         f"cannot be saved as a ticket: save a checkpoint (model.state_dict()) "
                         f"instead, or {trainable_where_made(any_tensor=True)}")
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


def _entries(model: nn.Module, frozen: set[str]) -> dict[str, dict]:
    """What the model's ticket would list: ``{"masks": {name: shape}, "tensors": {name:
    [dtype, shape]}}``."""
    stored = split_state(model, frozen)[1]
    return {"masks": {n: list(m.weight.shape) for n, m in named_masked_weights(model).items()},
            "tensors": {n: [ticket_file.dtype_name(t.dtype), list(t.shape)]
                        for n, t in stored.items()}}


#: Why save_ticket refuses a spec-built model that its spec does not rebuild, and what to do.
NOT_AS_BUILT = ("a module replaced after build_model made the model (timm's reset_classifier, "
                "a layer assigned), converted or not, is not recorded, so the ticket would "
                "rebuild another model: make the change where the model is built, by "
                "build_model's arguments (num_classes=...) or an architecture of your own "
                "registered in lotterynet.models.MODELS")
#: Why save_ticket refuses a model of your own that a load's replay of its convert() calls
#: does not make, and what to do.
NOT_AS_REPLAYED = ("a convertible layer added or replaced after convert() (timm's "
                   "reset_classifier, a layer assigned) is converted when a load replays the "
                   "model's convert() calls on a fresh instance, so the ticket would load into "
                   "no model: make the change before convert() (timm.create_model(..., "
                   "num_classes=...)), convert the layer in a call of its own after the change "
                   "(convert(model, include=[...]); load into a model with the same change), "
                   "or leave the layer out of the call (exclude=[...])")


def _refuse_differing(what: str, ours: dict, theirs: dict, show, spec: bool) -> None:
    """Refuse (``ValueError``: :data:`NOT_AS_BUILT` for a model with a ``spec``, else
    :data:`NOT_AS_REPLAYED`) the first name whose value (a module's type, a tensor's shape)
    differs between ``ours`` (the model's) and ``theirs`` (the model its ticket rebuilds), or
    that only one of them holds; ``show`` writes a value."""
    rebuilds, rebuild, why = (("the model's spec rebuilds", "the spec", NOT_AS_BUILT) if spec else
                              ("a load of the ticket makes, replaying the convert() calls",
                               "the load", NOT_AS_REPLAYED))
    for name in dict.fromkeys([*ours, *theirs]):
        if ours.get(name) != theirs.get(name):
            mine, made = (show(m[name]) if name in m else "none" for m in (ours, theirs))
            raise ValueError(f"save_ticket: {what} {name!r} is not the one {rebuilds} (the "
                             f"model has {mine}, {rebuild} {made}): {why}")


def _rebuilt_as_saved(model: nn.Module, spec: dict | None) -> nn.Module:
    """The model a ticket of ``model`` rebuilds, on the ``meta`` device (nothing allocated: a
    save at a run's end must not need the model's memory twice): its ``spec``'s, the
    ``convert()`` calls recorded on ``model`` replayed. A ``model`` that is not that model
    (:data:`NOT_AS_BUILT`) is refused (``ValueError``): a call that does not replay there (it
    converted a layer put in place of one that the spec converts), or the first module or
    tensor that differs (a replacement left plain, another shape).
    A model without a spec (your own, converted) is loaded by replaying the calls on a fresh
    instance, which a save does not have: they are replayed on a copy of ``model`` instead,
    where they must convert nothing (a call that has nothing left to convert is refused,
    leaving the copy as it was); a layer they would convert there (:data:`NOT_AS_REPLAYED`)
    is refused, as no model a load is given would make the ticket's."""
    with offline(), on_meta():
        probe = rebuild({"spec": spec}, None) if spec is not None else _meta_copy(
            model, "save_ticket does to check that a load's replay of the model's convert() "
                   "calls on a fresh instance makes this model")
        for call in replayed(probe, convert_calls(model)):
            try:
                probe = replay_converts(probe, [call])
            except ValueError as error:
                if spec is None:  # (refused: the copy as it was, nothing converted)
                    continue
                where = f"module {call['path']!r}" if call["path"] else "the model"
                include = call["kwargs"].get("include")
                raise ValueError(
                    f"save_ticket: the convert() call on {where}"
                    f"{f' (include={include!r})' if include is not None else ''} does not "
                    f"replay on the model the spec builds (convert refuses it there): "
                    f"{NOT_AS_BUILT}") from error
    _refuse_differing("module", *({n: type(m) for n, m in net.named_modules()}
                                  for net in (model, probe)), lambda t: f"a {t.__name__}",
                      spec is not None)
    _refuse_differing("tensor", *({n: list(getattr(t, "shape", ())) for n, t in
                                   net.state_dict().items()} for net in (model, probe)), str,
                      spec is not None)
    return probe


def _second_names(model: nn.Module) -> set[str]:
    """The state-dict names under which ``model`` holds a module or tensor it holds under an
    earlier name too (a layer applied twice, tied weights): a ticket stores it under the first."""
    firsts = {}
    for name, module in model.named_modules(remove_duplicate=False):
        firsts.setdefault(id(module), name)
    state = model.state_dict(keep_vars=True)
    for name, value in state.items():
        firsts.setdefault(id(value), name)
    return {name for name, value in state.items() if firsts[id(value)] != name or
            firsts[id(model.get_submodule(owner := name.rpartition(".")[0]))] != owner}


def _check_fits(model: nn.Module, header: dict, path, frozen: set[str],
                any_float: bool = False) -> None:
    """Refuse a model whose masks or stored tensors differ from the ticket's, naming the
    first that differs; with ``any_float`` (a spec's model before it takes the dtype it was
    saved in) a floating tensor may be in another floating dtype."""
    def dtype(name: str) -> str:
        return "floating" if any_float and DTYPES[name].is_floating_point else name

    model_side = _entries(model, frozen)
    if header["masks"] and not model_side["masks"] and not header.get("converts"):
        raise TicketError(f"{path}: the model has no subnet layers and the ticket records no "
                          "convert() call to replay (saved from a part of a converted model?): "
                          "convert the model as it was before it was saved, then load")
    model_side["tensors"] = {n: [dtype(d), shape] for n, (d, shape) in
                             model_side["tensors"].items()}
    for key, describe in (("masks", lambda e: e["shape"]),
                          ("tensors", lambda e: [dtype(e["dtype"]), e["shape"]])):
        ours = model_side[key]
        for name, entry in header[key].items():
            if name not in ours and name in _second_names(model):
                raise TicketError(f"{path}: the ticket stores {name!r}, a second name of a layer "
                                  "or tensor the model uses twice, as an older lotterynet did "
                                  "(it loaded such a layer wrongly): re-save the ticket with "
                                  "this one, from the trained model or its run's checkpoint")
            if name not in ours and name in frozen:
                raise TicketError(f"{path}: the ticket stores {name!r}, which the model "
                                  "regenerates (from its spec, a convert() seed or its layer's "
                                  "own seed): a ticket may supply the frozen weight only of a "
                                  "subnet layer made without a seed, into a model whose layer "
                                  "is made without one too")
            if name not in ours:
                inside = _holder(ours, header[key])
                raise TicketError(
                    f"{path}: the model has no {key[:-1]} {name!r} " + (
                        "(the ticket was saved from another architecture)" if inside is None else
                        f"but its submodule {inside!r} holds the ticket's {key}: the ticket was "
                        f"saved from that model alone (save_ticket(wrapper.{inside}, path)); "
                        f"load it into a fresh, unconverted instance of that model "
                        f"(load_ticket(path, model=...)) and put it in the wrapper"))
            if ours[name] != describe(entry):
                raise TicketError(f"{path}: {key[:-1]} {name!r} differs: the ticket has "
                                  f"{describe(entry)}, the model {ours[name]}")
        extra = [name for name in ours if name not in header[key]]
        if extra:
            raise TicketError(f"{path}: the model's {key[:-1]} {extra[0]!r} is not in the "
                              "ticket (the ticket was saved from another architecture)")


def _holder(ours: dict, names) -> str | None:
    """The submodule of the model under which it holds every one of the ticket's ``names`` (a
    wrapper, a LightningModule, given the ticket of its converted ``.model``), or None."""
    first = next(iter(names))
    return next((prefix for prefix in (n[:-len(first) - 1] for n in ours
                                       if n.endswith(f".{first}"))
                 if all(f"{prefix}.{name}" in ours for name in names)), None)


def _state_nbytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


#: Why :func:`load_ticket` copies your model (:func:`_meta_copy`).
LOAD_COPIES = ("load_ticket does to check the ticket's convert() calls on a meta-device copy "
               "before they allocate")


def _meta_copy(model: nn.Module, does: str = LOAD_COPIES) -> nn.Module:
    """A copy of ``model`` with every tensor on the ``meta`` device (nothing allocated). A
    model that cannot be copied is refused as such (the fault is not the ticket's), saying
    what copies it (``does``: ``"<who> does to <check what>"``)."""
    memo = {id(t): nn.Parameter(t.detach().to("meta"), t.requires_grad)
            if isinstance(t, nn.Parameter) else t.to("meta")
            for t in (*model.parameters(), *model.buffers())}
    try:
        return copy.deepcopy(model, memo)
    except Exception as error:  # noqa: BLE001 - whatever the user's module holds
        raise TicketError(f"model= {type(model).__name__} cannot be copied (copy.deepcopy: "
                          f"{error!r}), which {does}; give a model "
                          f"without what cannot be copied (locks, open files, generators)"
                          ) from error


def _build_checked(header: dict, model: nn.Module | None, path, max_bytes: int
                   ) -> tuple[nn.Module, set[str]]:
    """:func:`rebuild`, first on the ``meta`` device (from a meta copy of your ``model``): its
    size and tensors are checked against ``max_bytes`` and the header before the real build
    allocates anything (a hostile spec or ``pairs`` would otherwise allocate without bound).
    Returns the model and what it regenerates (:func:`frozen_as_built`, read off the probe:
    the same build)."""
    sourced_name = _sourced(header["spec"])
    if sourced_name is not None:
        raise TicketError(f"{path}: the ticket's spec is timm's {sourced_name!r}, which timm "
                          f"builds from a config it fetches or reads, as loading a ticket never "
                          f"does: save the ticket again with this lotterynet (without the spec) "
                          f"and load it with load_ticket(path, model=...)")
    if model is None and header["spec"] is None:
        raise TicketError(f"{path}: the ticket was saved from a model without a spec (your own "
                          "model, converted with convert(), or timm's hf-hub: or local-dir: "
                          "model, built from a config a load does not fetch or read); pass the "
                          "architecture: load_ticket(path, model=MyNet())")
    if model is not None and header["spec"] is not None and recorded_spec(model) is None:
        name = header["spec"]["name"]
        raise TicketError(f"{path}: the ticket was saved from build_model({name!r}, ...), which "
                          f"rebuilds it: load_ticket(path) without model=, or pass a model "
                          f"build_model made")
    differs = None if model is None or header["spec"] is None else spec_difference(
        header["spec"], json.loads(json.dumps(recorded_spec(model))))  # (as a ticket has it)
    if differs is not None:  # (masks of one sparsity in a model of another, spec and all)
        key, theirs, mine = differs
        raise TicketError(f"{path}: the ticket was saved from build_model(..., {key}="
                          f"{theirs!r}), but model= was built with {key}={mine!r}: "
                          f"load_ticket(path) without model= rebuilds the model it was saved "
                          f"from, or pass one built as it was")
    meta = None if model is None else _meta_tensor(model.state_dict(keep_vars=True))
    if meta is not None:
        raise TicketError(f"{path}: model= {type(model).__name__}'s tensor {meta!r} is on the "
                          f"meta device, which holds no values, and a ticket restores what it "
                          f"stores into the model's tensors: build the model on a real device "
                          f"(cpu, cuda)")
    if model is not None and any(not call.get("by_builder") for call in convert_calls(model)):
        raise TicketError(f"{path}: model= {type(model).__name__} is converted already, and "
                          f"load_ticket replays the ticket's convert() calls on it: pass a "
                          f"fresh, unconverted instance (load_ticket(path, model=MyNet()))"
                          f"{_submodule_advice(header)}")
    absent = None if model is None else next(
        (call["path"] for call in header.get("converts", [])
         if call["path"] not in dict(model.named_modules())), None)
    if absent is not None:
        raise TicketError(f"{path}: model= {type(model).__name__} has no submodule "
                          f"{absent!r}, on which the ticket's convert() calls were made in the "
                          f"model it was saved from{_submodule_advice(header)}")
    with on_meta():
        probe = rebuild(header, None if model is None else _meta_copy(model))
    nbytes = _state_nbytes(probe)
    if nbytes > max_bytes:
        what = "spec builds" if model is None else "convert() calls build"
        raise TicketError(f"{path}: the ticket's {what} a model of {nbytes} bytes, over the "
                          f"limit max_bytes={max_bytes}")
    # (a spec's build: the probe, not again; a model's own copy keeps its live requires_grad,
    # which a model frozen for inference has turned off everywhere: a fresh build)
    frozen = frozen_as_built(probe, header["spec"], probe if model is None else None,
                             set(header["tensors"]))
    _check_fits(probe, header, path, frozen, any_float=True)
    return rebuild(header, model), frozen


def _submodule_advice(header: dict) -> str:
    """Where the ticket's ``convert()`` calls were all made on one submodule of the model saved
    (a wrapper: a LightningModule whose ``.model`` was converted), what the ticket holds and
    the advice to save that submodule's ticket; else nothing (a model whose blocks were
    converted in calls of their own is no wrapper)."""
    paths = list(dict.fromkeys(call["path"] for call in header.get("converts", [])))
    if len(paths) != 1 or not paths[0]:
        return ""
    return (f"; the ticket's model wraps the converted one, its submodule {paths[0]!r} (a "
            f"LightningModule's?): load it into a fresh, unconverted instance of the wrapper, "
            f"or save the submodule's own ticket (save_ticket(wrapper.{paths[0]}, path)), which "
            f"loads into a fresh instance of its model (a wrapper that converts it when made "
            f"takes no ticket)")


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
            model, frozen = _build_checked(header, model, path, max_bytes)
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
    _check_fits(model, header, path, frozen)
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
