"""The warning of a loaded ``k``: ``load_state_dict`` of a state dict whose kept counts change
the sparsity a model's subnet layers were made with (another sparsity's model) warns, in one
line per load, naming the first such layer.

Every subnet layer, and every model ``convert`` or ``build_model`` returns, holds the
load-state-dict pre-hook :func:`_warn_loaded_k` (:func:`watch_loaded_k`); the outermost hook
above a layer checks it, once per load. A model's hook (convert, build_model) sees all its
layers and counts them in its line; a model of subnet layers built otherwise (by hand) has
the layers' own hooks only, each of which sees its layer alone: its load still warns once,
naming the first layer whose sparsity it changes.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings

from torch import nn
from torch.nn.modules.module import _EXTRA_STATE_KEY_SUFFIX

from .errors import plural
from .masking import MaskedSparsity, named_masked_weights

#: Per thread (two threads may load at once), the load (``missing_keys``: its list, one per
#: ``load_state_dict`` call, kept here so that its id is not reused) and the ids of the layers
#: (``layers``) :func:`_warn_loaded_k` checked in it, and whether it warned (``warned``): a model
#: and each of its layers hold the hook (``convert`` on a submodule and then on its parent
#: registers it on both), and the outermost's, which runs first, checks the layers below it.
_checked_in_load = threading.local()


def _warn_loaded_k(model: nn.Module, state_dict: dict, prefix: str, local_metadata: dict,
                   strict: bool, missing_keys: list, *args) -> None:
    """A ``load_state_dict`` pre-hook (:func:`watch_loaded_k`): warn, in one line per load,
    when the state dict's ``k`` (kept count, in a tensor's extra state) changes the sparsity
    that was set on a layer. Restoring ``k`` is what a resume needs, so it is never refused;
    but loading another model's state dict (built at another sparsity) silently changed the
    sparsity the model was made with. The rule: warn where a tensor's ``k`` is still the one
    a sparsity gave it (at build, or ``layer.sparsity = ...``) and the loaded ``k`` differs.
    A ``k`` set otherwise (``global_topk``, ``set_mask``, an earlier load or ticket) is the
    run's own state and is replaced silently. lotterynet's own resumes (``--resume``, an
    ``EdgePopupModule`` checkpoint, a sweep's cells) build the model at the run's sparsity and
    never change ``k`` while training, so they load the ``k`` they have: no warning. A model
    of yours whose ``k`` a schedule or ``global_topk`` changed while training warns when it is
    resumed into a freshly built model: a fresh layer cannot tell that resume from another
    model's state dict. A layer is checked once per load, by the outermost hook above it, and
    a load warns once (module docstring)."""
    if getattr(_checked_in_load, "missing_keys", None) is not missing_keys:
        _checked_in_load.missing_keys, _checked_in_load.layers = missing_keys, set()
        _checked_in_load.warned = False
    checked = _checked_in_load.layers
    changed = []  # (layer name, its sparsity, the loaded one)
    for name, layer in model.named_modules():
        if not isinstance(layer, MaskedSparsity) or id(layer) in checked:
            continue
        checked.update(map(id, layer.modules()))  # (an attention's projections are its own)
        kept = total = 0
        differs = False
        for sub, m in named_masked_weights(layer).items():
            stem = prefix + ".".join(part for part in (name, sub) if part) + "."
            state = state_dict.get(stem + _EXTRA_STATE_KEY_SUFFIX)
            # (a tensor whose weight or scores have another shape there is not loaded: torch
            # reports the size mismatch, an error even with strict=False)
            loads = state is not None and all(
                getattr(state_dict.get(stem + n), "shape", p.shape) == p.shape
                for n, p in m.named_parameters(recurse=False))
            k = int(state.reshape(-1)[0]) if loads else m.k
            differs |= k != m.k and getattr(m, "_nominal_sparsity", None) is not None
            kept += k * (m.weight.numel() // m.group_size)
            total += m.weight.numel()
        if differs:
            changed.append((name, layer.sparsity, 1.0 - kept / total))
    if changed and not _checked_in_load.warned:
        _checked_in_load.warned = True
        name, ours, theirs = changed[0]
        name = (prefix + name).removesuffix(".")  # (a layer's own hook: its prefix alone)
        layer = f"layer {name!r}" if name else "the layer"  # (loaded on its own)
        others = f" and of {plural(len(changed) - 1, 'other layer')}" if len(changed) > 1 else ""
        warnings.warn(f"load_state_dict: the state dict's kept counts (k) change the sparsity of "
                      f"{layer} from {ours:.4g} to {theirs:.4g}{others}: "
                      f"restored, as a resume needs; to keep the model's sparsity, load the state "
                      f"dict of a model built with it", stacklevel=_outside_stacklevel())


def _outside_stacklevel() -> int:
    """The ``stacklevel`` that points a warning of the caller at the first frame out of torch,
    Lightning and lotterynet: the user's ``load_state_dict`` (``load_from_checkpoint``) call,
    which torch's load reaches through a number of frames that grows with the submodule's depth.
    (``warnings.warn(skip_file_prefixes=...)`` does this from Python 3.12; we support 3.10.)"""
    skipped = tuple(os.path.dirname(module.__file__) + os.sep for module in map(
        sys.modules.get, ("torch", "pytorch_lightning", "lightning_fabric", "lotterynet"))
        if module is not None)
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(skipped):
        frame, level = frame.f_back, level + 1
    return level


def watch_loaded_k(model: nn.Module) -> None:
    """Register :func:`_warn_loaded_k` on ``model`` (once): a subnet layer, or a model of them."""
    hooks = model._load_state_dict_pre_hooks.values()
    if not any(getattr(h, "hook", None) is _warn_loaded_k for h in hooks):
        model.register_load_state_dict_pre_hook(_warn_loaded_k)
