"""The frozen random tensors of a ticket's model, which the ticket regenerates instead of
storing them: which they are (:func:`frozen_as_built`; :func:`split_state` parts a model's state
into them and what the ticket stores), the sha256 that identifies them (:func:`tensors_digest`),
what casts since the model was built a load sees through (:func:`saved_casts`: rounded through a
narrower dtype and back, another floating dtype), and the check at a save that each is still
what its seed draws (:func:`first_changed`, of the layers drawn again: :func:`redrawn`)."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from .attention import SUBNET_MODULES
from .masking import named_masked_weights
from .ticket_file import DTYPES
from .ticket_rebuild import convert_calls, offline, rebuild


def tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


EXTRA_STATE = "_extra_state"  # a state dict's name for what get_extra_state returns


def frozen_as_built(model: nn.Module, spec: dict | None, probe: nn.Module | None = None,
                    stored: set[str] | None = None) -> set[str]:
    """The parameters a ticket of ``model`` regenerates: those a fresh build of it freezes.
    For a spec-built model (``spec``: its ticket's,
    :func:`~lotterynet.ticket_checks.ticket_spec`), all that its spec
    (and the recorded ``convert`` calls) freeze, read off a build on the ``meta`` device
    (``probe``, when it is made already); for any other, those its subnet layers froze when
    they were made (:func:`~lotterynet.layers.record_frozen`). Either way not those of a
    subnet layer of ``model`` made without a seed (``seed=None``: drawn from torch's global
    generator, which no load replays), which the ticket stores; at a load, only those of them
    that the ticket stores (``stored``: an older lotterynet stored none, and drew them again).
    A ticket never replaces what a seeded layer regenerates. Never the live ``requires_grad``:
    a model frozen for inference (``requires_grad_(False)``) still stores its trained biases."""
    seeded = subnet_frozen(model)
    if spec is not None:
        if probe is None:
            header = {"spec": spec, "converts": convert_calls(model)}
            with offline(), torch.device("meta"):
                probe = rebuild(header, None)
        frozen = {name for name, p in probe.named_parameters() if not p.requires_grad}
    else:
        frozen = set(seeded)
    unseeded = {name for name, is_seeded in seeded.items() if not is_seeded}
    return frozen - (unseeded if stored is None else unseeded & stored)


def subnet_frozen(model: nn.Module) -> dict[str, bool]:
    """``{name: seeded}`` for each parameter that a subnet layer of ``model`` froze when it
    was made: whether the layer was made with a seed (else a ticket stores it)."""
    return {f"{prefix}.{name}".lstrip("."): m.seeded for prefix, m in model.named_modules()
            if isinstance(m, SUBNET_MODULES) for name in m.frozen_as_built}


def split_state(model: nn.Module, frozen: set[str]) -> tuple[dict, dict]:
    """``(regenerated, stored)``: the parameters in ``frozen`` (:func:`frozen_as_built`),
    which the load regenerates, and the parameters and buffers a ticket stores (everything
    else, except the scores and their ``k``: the masks hold both). A module registered under
    several names, or a tensor tied to another, is listed once, under its first name."""
    in_masks = {f"{n}.{what}" for n in named_masked_weights(model, remove_duplicate=False)
                for what in ("scores", EXTRA_STATE)}
    regenerated, stored = {}, {}
    for name, value in first_names(model, skip=in_masks):
        (regenerated if name in frozen else stored)[name] = value
    return regenerated, stored


def first_names(model: nn.Module, skip: set[str] = frozenset()):
    """``(name, value)`` of ``model``'s state (``keep_vars``) but the names in ``skip``, each
    tensor once, under its first name (a module used twice, a tensor tied to another); every
    extra state (made by each call, maybe one tensor)."""
    seen = set()
    for name, value in model.state_dict(keep_vars=True).items():
        if name in skip or id(value) in seen:
            continue
        if name.rpartition(".")[2] != EXTRA_STATE:
            seen.add(id(value))
        yield name, value


def tensors_digest(tensors: dict) -> str:
    """sha256 over the names and bytes of ``tensors`` (a state dict, or part of one)."""
    return _digest(tensors)


def _digest(tensors: dict, via: torch.dtype | None = None, dtype: torch.dtype | None = None
            ) -> str:
    """:func:`tensors_digest` of ``tensors`` rounded through ``via`` (:func:`round_through`)
    and cast to the floating dtype ``dtype``, one tensor at a time (no copy of the whole)."""
    h = hashlib.sha256()
    for name, value in tensors.items():
        value = round_through(value, via)
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        h.update(name.encode())
        h.update(tensor_bytes(value))
    return h.hexdigest()


#: Narrower floating dtypes a model's frozen weights may have been rounded through and cast
#: back from (``model.half()`` for a quick evaluation, then ``model.float()``).
ROUNDED_THROUGH = (torch.float16, torch.bfloat16)


def round_through(t: torch.Tensor, via: torch.dtype | None) -> torch.Tensor:
    """``t`` rounded through the floating dtype ``via`` and cast back (``t`` itself where
    ``via`` is None, ``t`` is not floating or no wider than ``via``)."""
    if via is None or not t.is_floating_point() or t.dtype.itemsize <= via.itemsize:
        return t
    return t.to(via).to(t.dtype)


def float_dtypes(tensors) -> set[torch.dtype]:
    return {t.dtype for t in tensors if t.is_floating_point()}


def saved_casts(regenerated: dict, digest: str, saved_dtypes: list[str] | None = None
              ) -> tuple[torch.dtype | None, torch.dtype | None] | None:
    """``(rounded_through, saved_in)`` when ``regenerated`` (whose digest is not ``digest``)
    are the saved model's frozen weights but for what casts did to them since the model was
    built: rounded through a narrower dtype and cast back (:data:`ROUNDED_THROUGH`), and/or
    in another floating dtype (``saved_in``: a model saved after ``.double()``); else None.
    Each candidate that changes something is hashed once, the first match returned; only
    those whose floating dtypes are the saved weights' (``saved_dtypes``, the ticket's
    ``frozen_dtypes``; None for an older ticket, which does not record them: all), so a
    ticket that rebuilds other weights costs at most two hashes more, not nine."""
    tensors = list(regenerated.values())
    floats = float_dtypes(tensors)
    # None: no rounding, no cast; else only a rounding or a cast that changes something
    vias = [None, *(via for via in ROUNDED_THROUGH
                    if any(round_through(t, via) is not t for t in tensors))]
    casts = [None, *(dtype for dtype in (torch.float64, torch.float32, torch.float16,
                                         torch.bfloat16) if not floats <= {dtype})]
    if saved_dtypes is not None:  # only into the dtypes the weights were saved in
        saved = {DTYPES[name] for name in saved_dtypes}
        casts = [dtype for dtype in casts if ({dtype} if dtype else floats) == saved]
    # (never via == dtype: (None, None) is the digest that did not match, and a cast to the
    # dtype rounded through gives what the cast alone does)
    return next(((via, dtype) for via in vias for dtype in casts
                 if dtype != via and _digest(regenerated, via, dtype) == digest), None)


def redrawn(model: nn.Module, regenerated: dict):
    """``(name, tensor)`` of each of ``regenerated`` (:func:`split_state`) that a subnet layer
    of ``model`` draws again from its seed (:meth:`~lotterynet.layers._SubnetLayer.redrawn`;
    an attention's ``bias_k`` / ``bias_v``,
    :meth:`~lotterynet.attention.SubnetMultiheadAttention.redrawn`), one layer at a time: what
    a load into a fresh instance regenerates. Not those of a layer made without a seed (drawn
    from torch's global generator, which a draw would advance), or pickled before layers
    recorded what they were built from."""
    for prefix, layer in model.named_modules():
        if (getattr(layer, "drawn_with", None) or {}).get("seed") is not None:
            for name, value in layer.redrawn().named_parameters():
                if (full := f"{prefix}.{name}".lstrip(".")) in regenerated:
                    yield full, value


def built_again(model: nn.Module, spec: dict, regenerated: dict):
    """``(name, tensor)`` of each of ``regenerated`` as a real build of ``spec`` makes it (on
    the CPU, the ``convert()`` calls recorded on ``model`` replayed): what a load regenerates.
    For a model :func:`~lotterynet.models.build_model` built on the ``meta`` device only
    (:data:`~lotterynet.models.BUILT_ON_META`), whose frozen tensors outside the seeded layers
    (:func:`redrawn`) no reset after ``to_empty`` draws as the build did: the whole model is
    built a second time for it."""
    with offline(), torch.device("cpu"):
        real = rebuild({"spec": spec, "converts": convert_calls(model)}, None)
    return ((name, value) for name, value in first_names(real) if name in regenerated)


def first_changed(regenerated: dict, drawn) -> str | None:
    """The name of the first of ``regenerated`` (the model's, :func:`split_state`) that is not
    what its seed draws (``drawn``: ``(name, tensor)`` pairs, as a load rebuilds them), compared
    as a load does (:func:`saved_casts`): cast to the model's dtype, all rounded through the same
    narrower dtype (:data:`ROUNDED_THROUGH`) or none; None when all are."""
    vias = [None, *ROUNDED_THROUGH]
    for name, value in drawn:
        ours = regenerated[name].detach()
        value = value.detach().to(ours.device, ours.dtype)
        vias = [via for via in vias if torch.equal(ours, round_through(value, via))]
        if not vias:
            return name
    return None
