"""The warnings :func:`~lotterynet.convert.convert` gives before it changes anything (a
warnings filter that makes them errors refuses the call): frozen layer scales near 0, which silence
their residual branches (:func:`warn_frozen_layer_scales`; converted on the meta device, at the
first load of their values: :func:`watch_loaded_layer_scales`); selected layers of types it leaves
dense, never pruned (:func:`warn_layers_left_dense`); and new layers whose weight a module's forward
reads itself where they have no single weight (:func:`warn_weight_readers`, by the source text
:func:`reads_weight` reads). The warning of a loaded ``k`` and the guards of a converted patch
embedding stay in :mod:`lotterynet.convert`: models pickled whole hold references to their functions
there."""

from __future__ import annotations

import functools
import inspect
import re
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from .convert_patterns import covering_patterns
from .errors import plural
from .layers import DOUBLED_WEIGHT, lacks_single_weight
from .loaded_k import _outside_stacklevel
from .structures import ignored_options

#: A frozen layer scale no larger than this scales its residual branch away.
NEAR_ZERO = 1e-4
#: How layer scales are named: timm's ``gamma`` (ConvNeXt, ``LayerScale``), CaiT's
#: ``gamma_1``, torchvision's ``layer_scale``.
LAYER_SCALE = re.compile(r"gamma|layer_scale")


def warn_frozen_layer_scales(frozen: list[tuple[str, torch.Tensor]], by: str = "convert",
                             stacklevel: int = 3) -> list[str]:
    """Warn (``by``: the call that warns) of frozen layer scales within :data:`NEAR_ZERO` of 0
    (timm's ConvNeXt: 1e-6 at init): each makes its residual branch add almost nothing whatever
    the masks, so the network is little more than its stem, downsampling and head. Returns the
    names of the layer scales on the meta device, whose values it could not see
    (:func:`watch_loaded_layer_scales` checks them when a state dict gives them values)."""
    scales = [(name, p) for name, p in frozen if LAYER_SCALE.search(name.rpartition(".")[2])]
    tiny = [name for name, p in scales if not p.is_meta and p.numel()
            and float(p.detach().abs().max()) <= NEAR_ZERO]
    if tiny:
        warnings.warn(f"{by}: {plural(len(tiny), 'frozen layer scale')} "
                      f"{'is' if len(tiny) == 1 else 'are'} within {NEAR_ZERO:g} of "
                      f"0, such as {tiny[0]!r}: the residual branches they scale add almost "
                      f"nothing to the network; others='trainable' trains them, or build the "
                      f"model with a larger init (timm: ls_init_value=1.0)", stacklevel=stacklevel)
    return [name for name, p in scales if p.is_meta]


def watch_loaded_layer_scales(model: nn.Module, names: list[str]) -> None:
    """``model`` converted on the meta device (``with torch.device("meta"): convert(...)``), where
    :func:`warn_frozen_layer_scales` saw no values of its frozen layer scales ``names``: its
    first ``load_state_dict`` that gives them values warns of them instead
    (:func:`_warn_loaded_layer_scales`), once."""
    if names:
        model.register_load_state_dict_pre_hook(
            functools.partial(_warn_loaded_layer_scales, list(names)))


def _warn_loaded_layer_scales(unchecked: list[str], model: nn.Module, state_dict: dict,
                              prefix: str, *args) -> None:
    """A ``load_state_dict`` pre-hook (:func:`watch_loaded_layer_scales`): warn of the
    ``unchecked`` layer scales of ``model`` that the state dict gives near-zero values while
    they are frozen, then drop from ``unchecked`` those it gave values (a warning once)."""
    loaded = [(name, state_dict[prefix + name]) for name in unchecked
              if prefix + name in state_dict]
    frozen = [(name, t) for name, t in loaded if not model.get_parameter(name).requires_grad]
    still_meta = warn_frozen_layer_scales(frozen, "load_state_dict", _outside_stacklevel() + 1)
    unchecked[:] = [name for name in unchecked if prefix + name not in state_dict
                    or name in still_meta]


def warn_layers_left_dense(left: list[tuple[str, nn.Module]], trainable: bool) -> None:
    """Warn of the selected layers (name, module) of
    :data:`~lotterynet.convert_rules.LEFT_DENSE` types: never pruned, and frozen at their
    initial random weights (``others="frozen"``): never trained either."""
    if left:
        types = ", ".join(dict.fromkeys(type(module).__name__ for _, module in left))
        shown = ", ".join(repr(name) for name, _ in left[:3]) + ", ..." * (len(left) > 3)
        fate = ("trained but never pruned (others='trainable')" if trainable else
                "frozen at their initial random weights (others='frozen'), so neither pruned "
                "nor trained; others='trainable' trains them (dense)")
        warnings.warn(f"convert: {plural(len(left), 'layer')} of types it does not replace "
                      f"({types}: {shown}) {'is' if len(left) == 1 else 'are'} left dense, "
                      f"{fate}; exclude them to leave them as the "
                      f"model made them", stacklevel=3)


@functools.cache
def _sources(cls: type) -> str:
    """The source of ``forward`` and of every method it calls on ``self`` (``self.NAME(``),
    and so on, each as every class of ``cls``'s MRO below ``nn.Module`` defines it (a
    subclass's forward may hand over to its base's: ``super().forward``); "" where there is
    none to read. Not the methods the forward does not call (``__init__``, timm's
    ``init_weights`` and ``set_input_size``): the forward works whatever they read."""
    bases = [base for base in cls.__mro__ if base not in (nn.Module, object)]
    sources, todo, seen = [], ["forward"], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for base in bases:
            try:
                source = inspect.getsource(vars(base)[name])
            except (KeyError, OSError, TypeError):
                continue
            sources.append(source)
            todo += re.findall(r"\bself\.(\w+)\(", source)
    return "\n".join(sources)


def reads_weight(owner: nn.Module, path: str) -> bool:
    """Whether ``owner``'s forward, or a method it calls, reads the weight of its layer at
    ``path`` (its child ``qkv``, or further down: ``attn.qkv``) itself, as
    ``self.PATH.weight`` or ``getattr(self.PATH, "weight")``, for more than its device or dtype
    (``self.qkv.weight``: torchvision's Swin attention passes it to ``F.linear`` in its forward,
    timm's MobileViT cross attention ``self.qkv_proj.weight`` to ``F.conv2d`` in a method of its
    own; ConViT's ``get_rel_indices`` reads only ``self.qk.weight.device``). Not a read through
    another name (``qkv = self.qkv``, ``getattr(self, name)``) or an index
    (``self.blocks[0].weight``): only what names the layer by its path is read."""
    layer = re.escape(f"self.{path}")
    return re.search(rf"(\b{layer}\.weight\b|\bgetattr\(\s*{layer}\s*,\s*[\"']weight[\"']\s*\))"
                     rf"(?!\.(device|dtype)\b)", _sources(type(owner))) is not None


def no_single_weight(layer: nn.Module, options: dict) -> tuple[str, str] | None:
    """Why a new layer (built with ``options``, convert's) has no single ``[out, in]`` weight
    that a module reading it could use, and the options that give it one, as a call with the
    rest of ``options`` takes them (``structure='dense'`` without the structure options it
    refuses: ``hidden``, ``pairs``); None where it has one (dense, subset-sum / fixedsize with
    identity) or is no subnet layer (an attention, whose projections are checked by it)."""
    structure = getattr(layer, "structure", None)
    lacking = None if structure is None else lacks_single_weight(structure)
    if lacking == "two stages":  # (malach, orseau, dacunha)
        dropped = ", ".join(f"{name}={value!r}"
                            for name, value in ignored_options("dense", options).items())
        return (f"with structure={layer.structure_name!r} does not exist: its two stages (map, "
                f"ReLU, map) are not one linear map",
                "structure='dense'" + f" and without {dropped}" * bool(dropped))
    if lacking == "relu":
        return DOUBLED_WEIGHT, "activation='identity'"
    return None


def warn_weight_readers(model: nn.Module, replaced: dict[str, nn.Module],
                         exclude: Sequence[str], options: dict) -> dict[str, tuple[str, str]]:
    """Warn of new layers (``replaced``, by name) whose weight their parent's forward, or a
    method it calls, reads itself (:func:`reads_weight`), or a module's above it, when they have
    no single ``[out, in]`` weight (:func:`no_single_weight`): with ReLU a subset-sum /
    fixedsize weight is ``[P, 2N]`` over ``[relu(x), relu(-x)]``, and a two-stage structure has
    none, so the forward fails where it runs that read (torchvision's Swin attention:
    ``F.linear(x, self.qkv.weight, ...)``): with a shape error deep in torch, which the ReLU
    weight raises in the layer's line (returned), or an ``AttributeError``. A warning, not a
    refusal: the match is of source text, which may never run (timm's MobileViT reads
    ``self.qkv_proj.weight`` only in a cross attention it does not use) or read only what works
    (``.shape``). All are named at once, with the patterns that cover them
    (:func:`covering_patterns`). Returns each such layer's line as ``(head, tail)``: its
    ``weight_read`` (:class:`~lotterynet.layers.DoubledInputWeight`)."""
    read = {}  # layer name -> (the reader's type name, the layer's path from it, why)
    for name, layer in replaced.items():
        why = no_single_weight(layer, options)
        if not name or why is None:
            continue
        parts = name.split(".")
        for above in reversed(range(len(parts))):  # its parent first, then up to the model
            owner, path = model.get_submodule(".".join(parts[:above])), ".".join(parts[above:])
            if reads_weight(owner, path):
                read[name] = (type(owner).__name__, path, why)
                break
    if not read:
        return {}
    more = len(read) - 1
    them, their = ("them", "their") if more else ("it", "its")
    others = f"; {plural(more, 'other layer')} read so too" if more else ""
    patterns = covering_patterns(model, read)
    lines = {name: (f"{owner} reads self.{path}.weight itself (layer {name!r}{others}), which "
                    f"{reason}", f"convert {them} with {remedy}, in a call of {their} own "
                    f"(include={patterns}), and leave {them} out of this one "
                    f"(exclude={[*exclude, *patterns]})")
             for name, (owner, path, (reason, remedy)) in read.items()}
    head, tail = next(iter(lines.values()))
    warnings.warn(f"convert: {head}, so its forward will fail if it runs that read: {tail}",
                  stacklevel=3)
    return lines
