"""A model checked against a ticket before anything is written or restored. At a save
(:func:`rebuilt_as_saved`): that what the ticket rebuilds it from, its spec (:func:`ticket_spec`)
or a load's replay of its ``convert()`` calls, makes this model, module for module and tensor for
tensor (:data:`NOT_AS_BUILT`, :data:`NOT_AS_REPLAYED`). At a load (:func:`build_checked`): the
ticket's model built first on the ``meta`` device (yours copied there: :func:`_meta_copy`), its
size checked against ``max_bytes`` and its masks and stored tensors against the ticket's header
(:func:`check_fits`), before the real build allocates anything. Each refusal names the first
thing that differs."""

from __future__ import annotations

import copy
import json

import torch
from torch import nn

from . import ticket_file
from .masking import named_masked_weights
from .models import recorded_spec, spec_difference
from .ticket_file import DTYPES, TicketError
from .ticket_frozen import frozen_as_built, split_state
from .ticket_rebuild import convert_calls, offline, rebuild, replay_converts, replayed
from .timm_models import sourced


def _sourced(spec: dict | None) -> str | None:
    """The timm model name of ``spec`` when timm builds it from a config it fetches or reads
    (``hf-hub:``, ``local-dir:``), which loading a ticket never does; else None."""
    name = spec.get("model_name") if spec is not None and spec["name"] == "timm" else None
    return name if isinstance(name, str) and sourced(name) else None


def ticket_spec(model: nn.Module) -> dict | None:
    """The spec a ticket of ``model`` rebuilds it from: :func:`recorded_spec`, but None for a
    timm model built from a fetched or read config (:func:`_sourced`), whose ticket is then one
    of your own model's (``load_ticket(path, model=...)``)."""
    spec = recorded_spec(model)
    return None if _sourced(spec) else spec


def meta_tensor(state: dict) -> str | None:
    """The name of the first tensor of a model's ``state`` (dict) on the ``meta`` device
    (which holds no values), else None."""
    return next((n for n, t in state.items() if isinstance(t, torch.Tensor) and t.is_meta),
                None)


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


def _batch_norm_as_built(module: nn.Module, built: type | None) -> type:
    """``module``'s type; a ``SyncBatchNorm``'s, the batch norm built in its place where that
    is one: DDP's ``sync_batchnorm`` (Lightning's, ``SyncBatchNorm.convert_sync_batchnorm``)
    swaps each batch norm for one holding the same tensors, which a ticket stores and rebuilds
    as built (a multi-GPU run's ticket was refused at its end, its training done)."""
    if (isinstance(module, nn.SyncBatchNorm) and built is not None
            and issubclass(built, nn.modules.batchnorm._BatchNorm)):
        return built
    return type(module)


def rebuilt_as_saved(model: nn.Module, spec: dict | None) -> nn.Module:
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
    with offline(), torch.device("meta"):
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
    built = {n: type(m) for n, m in probe.named_modules()}
    _refuse_differing("module", {n: _batch_norm_as_built(m, built.get(n))
                                 for n, m in model.named_modules()}, built,
                      lambda t: f"a {t.__name__}", spec is not None)
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


def check_fits(model: nn.Module, header: dict, path, frozen: set[str],
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


#: Why :func:`~lotterynet.ticket.load_ticket` copies your model (:func:`_meta_copy`).
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


def build_checked(header: dict, model: nn.Module | None, path, max_bytes: int
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
    meta = None if model is None else meta_tensor(model.state_dict(keep_vars=True))
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
    with torch.device("meta"):
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
    check_fits(probe, header, path, frozen, any_float=True)
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
