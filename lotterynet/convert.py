"""``convert(model, ...)``: edge-popup inside a model you already have (timm, torchvision, your
own). Every selected ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.MultiheadAttention``
is replaced, in place, by its subnet counterpart (frozen random weights, trainable scores); the
model's ``forward`` is not touched. Attention (and so ``nn.TransformerEncoderLayer`` or
torchvision's ViT) becomes :class:`~lotterynet.attention.SubnetMultiheadAttention`: q, k, v
and output projections each maskable, with its own top-k.

What happens to the rest of the selected modules:

* **bias** of a replaced layer (attention: also ``bias_k``/``bias_v``) — ``"frozen"``
  (random, frozen; the subnet layer's own draw), ``"trainable"`` (the same draw, trained),
  ``"none"`` (removed; ``bias_k``/``bias_v`` are kept, frozen).
* **batch norm** — ``"non-affine"`` (affine weight and bias removed, running statistics kept,
  as in the edge-popup paper), ``"trainable"`` (left as it is).
* **any other parameter** (LayerNorm, embeddings, cls/position tokens, layer-scale gammas,
  layers of other types such as ``Conv3d``, and the gain of timm's ``ScaledStdConv2d``, which
  its subnet layer takes as it is, not drawn anew) — ``others="frozen"`` (the default: frozen
  at its initial value, so it is part of the random network and ``count_params`` reports it as
  ``frozen``) or ``"trainable"`` (left as it is; reported as ``trainable``). A layer of a type
  not replaced (:data:`LEFT_DENSE`: ``ConvTranspose2d``, ``Conv3d``, timm's ``CondConv2d``,
  ...) is so left dense, never pruned, and frozen is never trained either: convert warns of
  such layers.

Frozen random values must be reproducible for a ticket to be rebuilt from its seed: each
replaced layer draws from its own generator, seeded from ``seed`` and the module's name inside
the module converted (so parts of one model converted in separate calls, block by block, need
a ``seed`` each: with the same one, same-named layers get the same weights; or convert the
model once with ``include``); the values of non-converted modules are whatever the model's
constructor drew (build the model under a fixed torch seed, as the ``"timm"`` builder does).
A layer scale frozen near 0 (timm's and torchvision's ConvNeXt: 1e-6) silences its residual
branch: convert warns of it.

Hooks on a replaced module's calls (``register_forward_pre_hook``, ``register_forward_hook``,
``register_full_backward_hook``, ...) are the new layer's: its inputs and outputs are the
replaced module's, so activation recorders, feature extractors and Grad-CAM go on working, and
the handles they returned still remove them. A module whose hooks depend on its own parameters
(``weight_norm``, ``spectral_norm``, state-dict hooks) is refused: remove them first. So is a
layer that shares a parameter with another module (tied weights, such as a language model's
head and its embedding): its replacement would draw weights of its own and untie them.

convert's parts, a module each: which layer types it replaces and how it rebuilds each
(:mod:`lotterynet.convert_rules`), the module-name patterns it reads and names
(:mod:`lotterynet.convert_patterns`), the checks of a call and of the model before anything
changes (:mod:`lotterynet.convert_checks`), the warnings it gives then
(:mod:`lotterynet.convert_warnings`) and the record of its calls that a ticket replays
(:mod:`lotterynet.convert_record`); the warning of a loaded ``k`` it registers is
:mod:`lotterynet.loaded_k`'s. This module holds the building of the new layers, the refusals
that need builds (layers that would keep no weight, attentions of no single map), the guards
of a converted patch embedding (functions that a model pickled whole refers to by their name
here), and ``convert`` itself, as its steps in their order: the call checked
(:func:`_checked_call`), its plan (:func:`_plan`: what it selects and how each is replaced),
the refusals (:func:`_refuse_nothing_to_convert`, the patterns', :func:`_probe_builds`) and
warnings that come before anything changes, the new layers built (:func:`_new_layers`) and
put in place (:func:`_apply_modes`, :func:`_put_in_place`), and the call recorded
(:func:`_record`).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .attention import SUBNET_MODULES, NotSingleMaps
from .convert_checks import (
    LayersRefused,
    UnconvertibleLayers,
    check_layer_options,
    check_patterns_name_modules,
    check_tied,
    checked_patterns,
    conversion_rule,
    plain_numbers,
)
from .convert_patterns import covering_patterns, matches
from .convert_record import CONVERT_RECORD, CONVERTED_BY, NOTHING_LEFT, next_order
from .convert_rules import (
    BATCHNORM_MODES,
    CONVERTIBLE,
    FAMILIES,
    LEFT_DENSE,
    OTHERS_MODES,
    Convertible,
    type_name,
)
from .convert_warnings import (
    _warn_loaded_layer_scales,
    no_single_weight,
    warn_frozen_layer_scales,
    warn_layers_left_dense,
    warn_weight_readers,
    watch_loaded_layer_scales,
)
from .distributions import check_seed, layer_seed
from .errors import plural
from .layers import (
    BIAS_MODES,
    BiasMode,
    SubnetLinear,
)
from .loaded_k import _warn_loaded_k, watch_loaded_k  # (an older pickle names convert's)
from .masking import KeepsNoWeight, MaskedWeight, check_module, uncompiled


def _check_arguments(**options) -> None:
    """Refuse, as convert's own, a value of the layer options (``sparsity``, ``structure``,
    ``init``, :data:`~lotterynet.convert_checks.LAYER_OPTIONS`) that no layer takes, before any
    layer is looked at: one subnet layer built with them on the meta device, of a size that keeps
    weights at any sparsity below 1. (Each layer's build refused it, naming the first layer, "cannot
    convert module '0': ... got 1.0", for a bad argument of the call.) What depends on the layer (a
    sparsity that keeps none of its weights) is left to the layers' builds."""
    with torch.device("meta"):
        try:
            SubnetLinear(64, 64, seed=0, **options)
        except KeepsNoWeight:
            pass
        except (ValueError, TypeError) as error:
            raise ValueError(f"convert: {error}") from None


CALL_HOOKS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
              "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
              "_backward_pre_hooks", "_backward_hooks", "_is_full_backward_hook")


def move_hooks(old: nn.Module, new: nn.Module, *, share: bool = True) -> nn.Module:
    """Give the freshly built ``new`` the hooks on ``old``'s calls: the same dictionaries, so
    that the ``RemovableHandle`` a hook's registration returned removes it from ``new``
    (``share``), or copies of them, so that ``old`` keeps its own."""
    for attr in CALL_HOOKS:
        hooks = getattr(old, attr)
        setattr(new, attr, hooks if share else copy.copy(hooks))
    return new


#: The memory formats other than contiguous a tensor can be laid out in (channels last), by its
#: number of dimensions; what ``convert`` keeps and a ticket records.
LAYOUTS = {4: torch.channels_last, 5: torch.channels_last_3d}


def _strides(shape: torch.Size, memory_format: torch.memory_format) -> tuple:
    return torch.empty(shape, device="meta", memory_format=memory_format).stride()


def laid_out(t: torch.Tensor) -> bool:
    """Whether ``t`` is laid out in its dimension's :data:`LAYOUTS` format, as
    ``model.to(memory_format=torch.channels_last)`` lays it out: its strides are that format's,
    and not the contiguous ones. Not ``is_contiguous(memory_format=...)``, which ignores the
    stride of a size-1 dimension: a 1x1 kernel's weight, or one of 1 input channel, is
    "contiguous" in both formats whichever it has."""
    return t.dim() in LAYOUTS and tuple(t.stride()) == _strides(t.shape, LAYOUTS[t.dim()]) \
        != _strides(t.shape, torch.contiguous_format)


def _has_bias(m: nn.Module) -> bool:
    return (m.in_proj_bias if isinstance(m, nn.MultiheadAttention) else m.bias) is not None


def _built(module: nn.Module, name: str, rule: Convertible, bias: BiasMode, *, seed: int,
           **options) -> nn.Module:
    """``module``'s subnet layer as ``rule`` builds it (on the default device: the meta one
    under ``torch.device("meta")``), or its refusal naming the module."""
    try:
        return rule.build(module, replace(bias, keep=bias.keep and _has_bias(module)),
                          seed=layer_seed(seed, name), **options)
    except (ValueError, TypeError) as error:
        raise ValueError(f"cannot convert module {name!r}: {error}") from error


def _subnet_layer(module: nn.Module, name: str, rule: Convertible, bias: BiasMode, *,
                  seed: int, others_trainable: bool, **options) -> nn.Module:
    """``module``'s subnet layer, on its device, in its dtype and layout, with the parameters
    the rule takes from it (timm's ``ScaledStdConv2d``'s gain) under ``others``."""
    layer = _built(module, name, rule, bias, seed=seed, **options)
    layer.train(module.training)
    weight = next(module.parameters())  # the replaced layer's device, float dtype, layout
    layer = layer.to(
        weight.device, weight.dtype if weight.is_floating_point() else None,
        memory_format=LAYOUTS[weight.dim()] if laid_out(weight) else torch.preserve_format)
    rule.take(module, layer, others_trainable)
    return move_hooks(module, layer)


def _builds(module: nn.Module, rule: Convertible, **options) -> bool:
    """Whether ``module``'s subnet layer builds with ``options`` (on the meta device: nothing
    allocated)."""
    try:
        with torch.device("meta"):
            rule.build(module, False, seed=0, **options)
    except (ValueError, TypeError):
        return False
    return True


def _keeps_nothing(model: nn.Module, refused: list[str],
                   layers: dict[str, tuple[nn.Module, Convertible]], exclude: Sequence[str],
                   options: dict) -> ValueError:
    """The refusal of the layers named ``refused`` (the sparsity keeps no weight of one of their
    tensors), for the tensor or group of fewest entries among theirs, whose "use at most" is
    the lowest: the sparsity at which every layer keeps a weight (a layer's own refusal names
    the first of its tensors that keeps none, which need not be its smallest: an attention's
    k of kdim before its v of a smaller vdim). With the other ways round it than a lower
    sparsity for the whole model: leaving those layers out, when others are left to convert
    (deit's patch embedding, of 3 input channels: subset sum's shared ``u`` of 3·pairs
    entries), and ``shared=False`` where every one of them then keeps weights (``u`` as large
    as ``v``)."""
    ways = []
    if len(refused) < len(layers):
        what = "the layer" if len(refused) == 1 else f"the {len(refused)} layers that keep none"
        ways.append(f"leave {what} out "
                    f"(exclude={[*exclude, *covering_patterns(model, refused)]})")
    if options.get("shared", True) is True and all(
            _builds(*layers[name], **{**options, "shared": False}) for name in refused):
        ways.append("unshare the first-stage weights u (shared=False)")
    with torch.device("meta"):  # (the tensors, of every size, that a sparsity of 0 keeps)
        tensors = [(tensor, name) for name in refused for tensor in
                   _built(layers[name][0], name, layers[name][1], BIAS_MODES.get("none"),
                          seed=0, **{**options, "sparsity": 0.0}).modules()
                   if isinstance(tensor, MaskedWeight)]
    tensor, name = min(tensors, key=lambda t: t[0].group_size)  # (the first of the smallest)
    try:
        tensor.checked_sparsity(options["sparsity"])
    except KeepsNoWeight as error:  # (it does: its layer refused one at least as large)
        first = f"cannot convert module {name!r}: {error}"
    return ValueError(f"{first}{', ' * bool(ways)}{' or '.join(ways)}")


def _not_single_maps(model: nn.Module, refused: list[str], exclude: Sequence[str],
                     options: dict) -> ValueError:
    """The refusal of the attentions named ``refused``, whose projections ``options`` make no
    single linear map (:func:`no_single_weight`: ReLU subset-sum, a two-stage structure), all
    named at once, with the calls that convert them apart, as such maps, and the rest as asked
    (:func:`covering_patterns`)."""
    with torch.device("meta"):
        reason, remedy = no_single_weight(SubnetLinear(1, 1, **{**options, "sparsity": 0.0}),
                                          options)
    patterns, more = covering_patterns(model, refused), len(refused) - 1
    them, their = ("them", "their") if more else ("it", "its")
    others = f" (and {plural(more, 'other attention')})" if more else ""
    return ValueError(
        f"cannot convert module {refused[0]!r}{others}: attention projections must be single "
        f"linear maps, and a {options['structure']!r} projection's weight {reason}: convert "
        f"{them} with {remedy}, in a call of {their} own (include={patterns}), and leave {them} "
        f"out of this one (exclude={[*exclude, *patterns]})")


def _is_a(module: nn.Module, types: frozenset[str]) -> bool:
    """Whether ``module`` is of one of ``types`` (fully qualified names) or a subclass of one."""
    return any(type_name(cls) in types for cls in type(module).__mro__)


#: timm's patch embeddings, whose ``set_input_size(patch_size=...)`` (a ViT's, through its
#: own) puts in place of their ``proj`` a dense ``nn.Conv2d`` of the new patch size holding its
#: weight resampled (:func:`_refuse_dense_patch_resize`).
PATCH_EMBEDS = frozenset(["timm.layers.patch_embed.PatchEmbed",
                          "timm.layers.hybrid_embed.HybridEmbed"])
#: Those whose ``set_input_size`` first asserts that their ``proj`` is an ``nn.Conv2d``, which
#: a subnet layer is not (timm's bare AssertionError, "must have a projection layer"; under
#: ``python -O`` it swaps): :func:`_refused_patch_resize` speaks before it.
ASSERTS_CONV_PROJ = frozenset(["timm.layers.hybrid_embed.HybridEmbed"])
_PATCH_GUARD = []  # the registration hook's handle, once convert has converted a patch embedding


def _dense_patch_refusal(parent: nn.Module, name: str, dense: str) -> str:
    """The line refusing ``dense`` (a type name) in place of patch embedding ``parent``'s
    subnet ``name``."""
    return (f"{type(parent).__name__}.{name} is a subnet layer (convert()), which a change of "
            f"patch size (timm's set_input_size(patch_size=...)) would replace by a dense "
            f"{dense} holding its masked weights resampled, frozen and never pruned: change "
            f"the patch size before convert() (timm.create_model(..., patch_size=...), or "
            f"set_input_size on the model not yet converted)")


def _refuse_dense_patch_resize(parent: nn.Module, name: str, module) -> None:
    """torch's hook on every module's registration of a submodule (installed when ``convert``
    first converts a timm patch embedding's ``proj``: timm is not patched): refuse a dense layer
    of another kernel size in place of a patch embedding's subnet ``proj``, which is what
    ``set_input_size(patch_size=...)`` makes, before anything changes: it silently swapped the
    subnet layer for an ``nn.Conv2d`` holding its masked weights resampled, frozen and never
    pruned (export's plain layer, of the same kernel or no ``nn.Conv2d``, is let in)."""
    old = parent._modules.get(name)
    if isinstance(old, SUBNET_MODULES) and not isinstance(module, SUBNET_MODULES) and \
            _is_a(parent, PATCH_EMBEDS) and isinstance(module, nn.Conv2d) and \
            module.kernel_size != old.kernel_size:
        raise ValueError(_dense_patch_refusal(parent, name, type(module).__name__))


def _refused_patch_resize(embed: nn.Module, img_size=None, patch_size=None, *args, **kwargs):
    """``set_input_size`` of a converted patch embedding of :data:`ASSERTS_CONV_PROJ` (this
    instance's, bound by ``convert``; the class's is timm's, untouched): a new patch size is
    refused while its ``proj`` is a subnet layer, in the registration hook's line, before
    timm's assert; the rest is timm's own (an export drops it: :func:`drop_subnet_guards`)."""
    if patch_size is not None and isinstance(embed.proj, SUBNET_MODULES) and \
            nn.modules.utils._pair(patch_size) != tuple(embed.patch_size):
        raise ValueError(_dense_patch_refusal(embed, "proj", "Conv2d"))
    return type(embed).set_input_size(embed, img_size, patch_size, *args, **kwargs)


def drop_subnet_guards(module: nn.Module) -> None:
    """Remove from ``module`` what ``convert`` and ``build_model`` attach to a model for its subnet
    layers: :func:`_warn_loaded_k`, the check of frozen layer scales converted on the meta device
    (:func:`~lotterynet.convert_warnings.watch_loaded_layer_scales`) and a converted patch
    embedding's :func:`_refused_patch_resize`, for an export, which has none of those layers left (a
    pickle of it would name them, and so need lotterynet to load)."""
    for key, hook in list(module._load_state_dict_pre_hooks.items()):
        hook = getattr(hook, "hook", None)
        if hook is _warn_loaded_k or getattr(hook, "func", None) is _warn_loaded_layer_scales:
            del module._load_state_dict_pre_hooks[key]
    resize = module.__dict__.get("set_input_size")
    if isinstance(resize, functools.partial) and resize.func is _refused_patch_resize:
        del module.set_input_size


def _refuse_torchscript(model: nn.Module) -> None:
    if isinstance(model, torch.jit.ScriptModule):  # (its modules are TorchScript's: none to take)
        raise TypeError("convert: the model is TorchScript (torch.jit.script / trace), whose "
                        "layers cannot be replaced; convert the model itself, and script its "
                        "export: torch.jit.script(lotterynet.export(model))")


@dataclass(frozen=True)
class _Call:
    """A ``convert`` call's arguments as :func:`_checked_call` checked them: ``options``, what
    every new layer is built with (``sparsity``, ``init``, ``structure`` and the layer
    options), the patterns (``include`` None: every module), the modes as their registries
    give them, and ``record``, the call as a ticket replays it (:data:`CONVERT_RECORD`)."""

    options: dict
    include: tuple[str, ...] | None
    exclude: tuple[str, ...]
    seed: int
    bias: BiasMode
    batchnorm: Callable[[_BatchNorm], None]
    others_trainable: bool
    record: dict


def _checked_call(model: nn.Module, *, sparsity, init, structure, include, exclude, seed, bias,
                  batchnorm, others, layer_options: dict) -> _Call:
    """``convert``'s arguments checked, each refusal one line, before the model is looked at;
    the call's order (:func:`next_order`) taken for its record."""
    check_layer_options(layer_options)
    seed = check_seed(seed)
    sparsity, layer_options = plain_numbers(sparsity, "sparsity"), plain_numbers(layer_options)
    _check_arguments(sparsity=sparsity, init=init, structure=structure, **layer_options)
    bias_mode, bn_mode = BIAS_MODES.get(bias), BATCHNORM_MODES.get(batchnorm)
    others_trainable = OTHERS_MODES.get(others)
    include = None if include is None else checked_patterns(include, "include")
    exclude = () if exclude is None else checked_patterns(exclude, "exclude")
    record = {"order": next_order(model), "kwargs": dict(
        sparsity=sparsity, init=init, structure=structure,
        include=None if include is None else list(include), exclude=list(exclude), seed=seed,
        bias=bias, batchnorm=batchnorm, others=others, **layer_options)}
    return _Call(dict(sparsity=sparsity, init=init, structure=structure, **layer_options),
                 include, exclude, seed, bias_mode, bn_mode, others_trainable, record)


class _Step(NamedTuple):
    """A selected module as ``convert`` plans it: its id, its first name, the module, and the
    rule that replaces it (None: not replaced, its parameters under ``others`` and, a batch
    norm, under ``batchnorm``)."""

    key: int
    name: str
    module: nn.Module
    rule: Convertible | None


@dataclass
class _Plan:
    """What a ``convert`` call does to its model, known before anything changes: the model's
    modules by id (``modules``) with every name each is registered under (``names``: one module
    may be registered under several), the ids of those converted with a layer around them,
    never on their own (``inside``: a subnet layer's, an attention's), and the selected
    modules outside those (``steps``)."""

    names: dict[int, list[str]]
    modules: dict[int, nn.Module]
    inside: set[int]
    steps: list[_Step]

    @property
    def to_replace(self) -> list[_Step]:
        return [step for step in self.steps if step.rule is not None]

    @property
    def kept(self) -> list[_Step]:
        return [step for step in self.steps if step.rule is None]

    @functools.cached_property
    def other_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The own parameters (by name) of the selected modules not replaced, but batch
        norms': what ``others`` freezes or leaves trainable."""
        return [(f"{name}.{p_name}".lstrip("."), p) for _, name, module, _ in self.kept
                if not isinstance(module, _BatchNorm)
                for p_name, p in module.named_parameters(recurse=False)]

    @property
    def left_dense(self) -> list[tuple[str, nn.Module]]:
        """The selected layers of :data:`LEFT_DENSE` types (by name), which nothing replaces."""
        return [(name, module) for _, name, module, _ in self.kept if _is_a(module, LEFT_DENSE)]


def _is_selected(names: list[str], call: _Call) -> bool:
    """Whether a module of these ``names`` is selected: one of them covered by an ``include``
    pattern (every one, where ``include`` is None), none by an ``exclude`` one."""
    return (call.include is None or any(matches(n, call.include) for n in names)) and \
        not any(matches(n, call.exclude) for n in names)


def _plan(model: nn.Module, call: _Call) -> _Plan:
    """The selected modules of ``model`` and the rule of each (:func:`conversion_rule`),
    refusing those of types without one, all named at once (:class:`UnconvertibleLayers`),
    and layers to replace that share a parameter with another module (:func:`check_tied`)."""
    names: dict[int, list[str]] = {}
    modules: dict[int, nn.Module] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
        modules[id(module)] = module
    inside = {id(m) for layer in modules.values() if isinstance(layer, SUBNET_MODULES)
              for m in layer.modules()}
    inside |= {id(m) for layer in modules.values() if isinstance(layer, nn.MultiheadAttention)
               for m in layer.children()}
    steps, unconvertible = [], {}
    for key, module in modules.items():
        if _is_selected(names[key], call) and key not in inside:
            try:
                steps.append(_Step(key, names[key][0], module,
                                   conversion_rule(module, names[key][0])))
            except UnconvertibleLayers as error:  # (named all together)
                unconvertible.update(error.layers)
    if unconvertible:
        raise UnconvertibleLayers(unconvertible,
                                  [*call.exclude, *covering_patterns(model, unconvertible)])
    plan = _Plan(names, modules, inside, steps)
    check_tied(modules, names, [step.module for step in plan.to_replace])
    return plan


def _refuse_nothing_to_convert(plan: _Plan, call: _Call) -> None:
    """Refuse a call that selects no layer to replace, naming the layers it could have (but
    in a load's replay of a call none of whose layers is left: :data:`NOTHING_LEFT`)."""
    if plan.to_replace or NOTHING_LEFT.get():
        return
    sparsity = call.options["sparsity"]
    if any(isinstance(m, SUBNET_MODULES) and _is_selected(plan.names[k], call)
           for k, m in plan.modules.items()):
        raise ValueError(
            "convert: the selected layers are already converted (subnet layers) and no "
            f"other layer is selected, so sparsity={sparsity!r} would change nothing; to "
            f"change their sparsity set layer.sparsity = {sparsity!r} on each, or rank "
            f"the whole model's scores with lotterynet.global_topk(model, {sparsity!r})")
    convertible = [plan.names[key][0] or "(the model)" for key, module in plan.modules.items()
                   if key not in plan.inside and type_name(type(module)) in CONVERTIBLE]
    include = call.include
    raise ValueError(
        f"convert: no layer to convert is selected (include={include and list(include)!r}, "
        f"exclude={list(call.exclude)!r}); the model's convertible layers: "
        f"{', '.join(convertible[:8]) + (', ...' if len(convertible) > 8 else '') or 'none'} "
        f"(of the types {', '.join(f.__name__ for f in FAMILIES)})")


def _layers_refused(model: nn.Module, refused: dict[str, ValueError],
                    exclude: Sequence[str]) -> LayersRefused:
    """The refusal of the layers whose builds refused them (``refused``: name -> the build's
    refusal; ``hidden=``, groups), the first's line with the ``exclude=`` that leaves them
    out."""
    error, more = next(iter(refused.values())), len(refused) - 1
    others = f" (and {plural(more, 'other layer')} refused)" if more else ""
    patterns = [*exclude, *covering_patterns(model, refused)]
    return LayersRefused(f"{error}{others}; leave {'them' if more else 'it'} out "
                         f"(exclude={patterns})", patterns)


def _probe_builds(model: nn.Module, plan: _Plan, call: _Call) -> dict[str, nn.Module]:
    """Build every new layer on the meta device (nothing allocated), so that a refusal comes
    before any layer is built for real, and changes nothing: the layers' own refusals
    (:func:`_layers_refused`; the call's own arguments were checked first), then attentions
    of no single maps (:func:`_not_single_maps`), then layers that would keep no weight
    (:func:`_keeps_nothing`). Returns each name of a layer to replace -> its meta build."""
    refused: dict[str, ValueError] = {}
    keep_nothing: list[str] = []  # the layers of a tensor the sparsity keeps no weight of
    not_single: list[str] = []  # the attentions whose projections would not be linear maps
    probes: dict[str, nn.Module] = {}
    with torch.device("meta"):
        for key, name, module, rule in plan.to_replace:
            try:
                probes.update(dict.fromkeys(plan.names[key], _built(
                    module, name, rule, call.bias, seed=call.seed, **call.options)))
            except ValueError as error:
                if isinstance(error.__cause__, KeepsNoWeight):
                    keep_nothing.append(name)
                elif isinstance(error.__cause__, NotSingleMaps):
                    not_single.append(name)
                else:
                    refused[name] = error
    if refused:
        raise _layers_refused(model, refused, call.exclude) from \
            next(iter(refused.values())).__cause__
    if not_single:
        raise _not_single_maps(model, not_single, call.exclude, call.options)
    if keep_nothing:
        layers = {name: (module, rule) for _, name, module, rule in plan.to_replace}
        raise _keeps_nothing(model, keep_nothing, layers, call.exclude, call.options)
    return probes


def _new_layers(plan: _Plan, call: _Call,
                reads: dict[str, tuple[str, str]]) -> dict[str, nn.Module]:
    """Each name of a layer to replace -> its subnet layer, built for real, marked with the
    call's order (:data:`CONVERTED_BY`), and given the line of its weight's read where a
    forward reads it (``reads``: :func:`~lotterynet.convert_warnings.warn_weight_readers`)."""
    replaced: dict[str, nn.Module] = {}
    for key, name, module, rule in plan.to_replace:
        layer = _subnet_layer(module, name, rule, call.bias, seed=call.seed,
                              others_trainable=call.others_trainable, **call.options)
        setattr(layer, CONVERTED_BY, call.record["order"])
        replaced.update(dict.fromkeys(plan.names[key], layer))
    for name, line in reads.items():
        replaced[name].weight_read = line
    return replaced


def _apply_modes(plan: _Plan, call: _Call) -> None:
    """The call's ``batchnorm`` mode on the selected batch norms, its ``others`` on the other
    parameters of the selected modules not replaced."""
    for _, _, module, _ in plan.kept:
        if isinstance(module, _BatchNorm):
            call.batchnorm(module)
    for _, p in plan.other_parameters:
        p.requires_grad_(call.others_trainable)


def _guard_patch_embedding(parent: nn.Module, child: str) -> None:
    """Guard a timm patch embedding ``parent`` whose ``child`` is to be a subnet layer against a
    change of patch size: torch's registration hook, once (:func:`_refuse_dense_patch_resize`),
    and its own ``set_input_size`` where timm's asserts first (:func:`_refused_patch_resize`)."""
    if not _PATCH_GUARD and _is_a(parent, PATCH_EMBEDS):
        _PATCH_GUARD.append(torch.nn.modules.module.register_module_module_registration_hook(
            _refuse_dense_patch_resize))
    if child == "proj" and _is_a(parent, ASSERTS_CONV_PROJ):
        parent.set_input_size = functools.partial(_refused_patch_resize, parent)


def _put_in_place(model: nn.Module, replaced: dict[str, nn.Module]) -> nn.Module:
    """Set each new layer (``replaced``, by name) in ``model`` in place of its module; returns
    the result: ``model``, or the subnet layer if ``model`` itself is a layer."""
    for name, layer in replaced.items():
        if name:
            parent, _, child = name.rpartition(".")
            parent = model.get_submodule(parent)
            _guard_patch_embedding(parent, child)
            setattr(parent, child, layer)
    result = replaced.get("", model)
    for module in result.modules():
        if isinstance(module, nn.TransformerEncoder):
            # its nested-tensor fast path (eval, with a padding mask) reads the packed
            # in_proj_weight, which a SubnetMultiheadAttention does not have
            module.use_nested_tensor = False
    return result


def _record(result: nn.Module, call: _Call, unchecked_scales: list[str]) -> None:
    """Record the call on ``result`` (:data:`CONVERT_RECORD`), and watch its loads: of a ``k``
    (:func:`watch_loaded_k`), of the frozen layer scales converted on the meta device
    (:func:`watch_loaded_layer_scales`)."""
    result.__dict__.setdefault(CONVERT_RECORD, []).append(call.record)
    watch_loaded_k(result)
    watch_loaded_layer_scales(result, unchecked_scales)


def convert(model: nn.Module, *, sparsity: float, init: str | None = None,
            structure: str = "dense", include=None, exclude=None, seed: int = 0,
            bias: str = "frozen", batchnorm: str = "non-affine", others: str = "frozen",
            **layer_options) -> nn.Module:
    """Replace the selected ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` /
    ``nn.MultiheadAttention`` layers of ``model`` by subnet layers, in place, at ``sparsity``
    (the fraction of each one's maskable weights pruned).

    ``include`` / ``exclude``: module-name glob patterns (``fnmatch``; ``"layer4.*"``,
    ``"*.fc2"``, ``"head"``), each covering the modules it names and everything inside them
    (``"stem"``: the stem's layers); a module is selected when a name of it is covered by some
    ``include`` pattern (all modules if ``include`` is None; the model itself is named ``""``)
    and none by an ``exclude`` pattern. A pattern that names no module is refused (a typo).
    Subnet layers (converted before) are left alone; a call that selects no other layer to
    convert is refused. Only selected modules are touched: replaced, batch-norm mode applied,
    other parameters frozen (``others``).
    ``bias``: the bias of a replaced layer that has one is ``"frozen"`` (drawn anew, frozen),
    ``"trainable"`` (the same draw, trained) or ``"none"`` (removed; an attention's
    ``bias_k`` / ``bias_v`` stay, frozen); ``batchnorm``: a selected batch norm is
    ``"non-affine"`` (its affine weight and bias removed, its running statistics kept, as in
    edge-popup) or ``"trainable"`` (left as it is); ``others``: any other parameter of the
    selected modules (norms, embeddings, tokens, layers of a type not replaced) is ``"frozen"``
    at its value (part of the random network) or ``"trainable"`` (left as it is). ``seed``:
    each replaced layer draws from a generator seeded by ``seed`` and its module name, so
    parts of one model converted in separate calls need a seed each.
    ``layer_options`` go to every subnet layer
    (:data:`~lotterynet.convert_checks.LAYER_OPTIONS`: ``init_kwargs``, ``pairs``, ``activation``,
    ``shared``, ``hidden``, ``kept``, ``ties``, ``fan_in``, ``score_init``); any other is
    refused, and so is a structure option that ``structure``
    does not read given a value other than its default (``pairs=3`` with the default dense
    structure: :func:`~lotterynet.structures.check_structure_options`). Returns ``model`` (or
    the subnet layer, if ``model`` itself is a layer).

    The frozen random weights of a replaced layer are drawn anew (from ``init``, by default the
    structure's own as for a subnet layer, and the layer's seed), not taken from the layer it
    replaces (what is no random weight is: timm's ``ScaledStdConv2d``'s gain, under
    ``others``). A refusal (``ValueError``; ``TypeError`` for a ``seed`` or ``model`` of a wrong
    type) leaves the model as it was. The call is recorded on the
    result (:data:`CONVERT_RECORD`) so that a ticket can replay it. A ``torch.compile``d model
    is converted as the module it runs (names, seeds and record without ``_orig_mod.``) and
    returned compiled (a compiled layer: its subnet layer, which the wrapper cannot run).
    """
    compiled = check_module(model, "convert")
    _refuse_torchscript(model)
    model = uncompiled(compiled)
    call = _checked_call(model, sparsity=sparsity, init=init, structure=structure,
                         include=include, exclude=exclude, seed=seed, bias=bias,
                         batchnorm=batchnorm, others=others, layer_options=layer_options)
    plan = _plan(model, call)
    _refuse_nothing_to_convert(plan, call)
    check_patterns_name_modules(call.include, call.exclude, plan.names)
    probes = _probe_builds(model, plan, call)
    # the warnings too, before anything changes: one that a warnings filter makes an error
    # (pytest -W error) refuses the call as the refusals above do (given here, in convert's own
    # frame: their stacklevel points at its caller)
    unchecked_scales = [] if call.others_trainable else \
        warn_frozen_layer_scales(plan.other_parameters)
    warn_layers_left_dense(plan.left_dense, call.others_trainable)
    reads = warn_weight_readers(model, probes, call.exclude, call.options)
    replaced = _new_layers(plan, call, reads)
    _apply_modes(plan, call)
    result = _put_in_place(model, replaced)
    _record(result, call, unchecked_scales)
    return compiled if result is model else result
