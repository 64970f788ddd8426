"""The checks of a ``convert`` call and of its model, before anything changes, each refusal one
line: its arguments as a ticket records them (:func:`plain_numbers`, :data:`LAYER_OPTIONS`,
glob patterns, each naming a module: :func:`check_patterns_name_modules`), each selected
layer's rule or why it has none (:func:`conversion_rule`: a lazy module, a reparametrisation,
hooks, a subclass without a rule: :class:`UnconvertibleLayers`), tensors
``torch.nn.utils.prune`` masks (:func:`refuse_torch_pruned`) and tied weights
(:func:`check_tied`)."""

from __future__ import annotations

import fnmatch
import inspect
import math
import numbers
import os
import sys
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.utils import parametrize, prune
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

from .attention import outermost_subnet_modules
from .convert_rules import CONVERTIBLE, FAMILIES, Convertible, base_rule, type_name
from .layers import SubnetLinear

#: What :func:`plain_numbers` advises passing instead of a value of these types (the first
#: that matches; another object: a plain value).
PLAIN_INSTEAD = (((set, frozenset), "a list"),
                 ((torch.Tensor, np.ndarray), "its .item() or .tolist()"),
                 (os.PathLike, "it as a string, str(path)"),
                 (torch.dtype, "its name, a string such as 'float32'"),
                 (Callable, "a name the model looks it up by"))  # (a class, a function)


def plain_numbers(value, name: str = ""):
    """``value`` with numbers of other types (numpy scalars, ``Fraction``) as Python ints and
    floats, and numpy's other scalars (``np.bool_``, ``np.str_``) as Python's, inside lists,
    tuples and dicts too: what a model or its layers are built with is what a ticket records
    (JSON) and replays, and what a ``weights_only`` checkpoint holds. Taken: numbers, strings,
    True/False, None, and lists, tuples (``torch.Size`` too) and string-keyed dicts of them; a
    list or tuple keeps its type here, though a ticket gives a tuple back as a list. Refused,
    as neither gives it back (``TypeError`` naming the argument: ``name`` for ``value``, or
    the keys of a dict of arguments, and what to pass, :data:`PLAIN_INSTEAD`): a namedtuple
    (a list in the ticket, refused by the checkpoint), a dict with a key that is not a string
    (JSON's keys are), and any other object (a set, a tensor, a path, a class, ...); NaN or
    infinity, which a ticket's JSON cannot hold, and a number beyond a float's range (a huge
    ``Fraction`` or ``np.longdouble``; ``ValueError`` naming the argument)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # (a Fraction; a long double gives infinity)
            number = None
        if number is None or math.isinf(number) and value != number:
            # written from its log10, not its repr (a Fraction's may be past Python's limit
            # of 4300 digits, and is no easier to read)
            digits, sign = math.log10(abs(int(value))), "-" if value < 0 else ""
            raise ValueError(f"argument {name}={sign}{10 ** (digits % 1):.4g}e+"
                             f"{math.floor(digits)} (a {type(value).__name__}) is beyond a "
                             f"float's range (±{sys.float_info.max:.4g}), which a ticket "
                             f"(JSON) records numbers in: pass a number within it")
        if not math.isfinite(number):
            raise ValueError(f"argument {name}={number!r} is NaN or infinity, which a "
                             f"ticket (JSON) cannot hold: pass a finite number")
        return number
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, str)):
        return value
    named = isinstance(value, tuple) and hasattr(value, "_fields")
    if isinstance(value, (list, tuple)) and not named:
        return type(value)(plain_numbers(v, f"{name}[{i}]") for i, v in enumerate(value))
    keys = [k for k in value if not isinstance(k, str)] if isinstance(value, dict) else []
    if isinstance(value, dict) and not keys:
        return {k: plain_numbers(v, f"{name}[{k!r}]" if name else k) for k, v in value.items()}
    if named:
        what, instead = f"a namedtuple ({type(value).__name__})", "a tuple or a dict of its fields"
    elif keys:
        what, instead = f"a dict with the key {keys[0]!r}", "a dict with string keys"
    else:
        what = f"of type {type(value).__name__}"
        instead = next((advice for types, advice in PLAIN_INSTEAD if isinstance(value, types)),
                       "a plain value")
    shown = " ".join(repr(value).split())  # (one line: a tensor's repr has several)
    raise TypeError(f"argument {name}={shown[:80]}{'...' * (len(shown) > 80)} is {what}, which "
                    f"a ticket (JSON) or a weights_only checkpoint cannot give back as it is: "
                    f"pass {instead} (numbers, strings, True/False, None, and lists, tuples "
                    f"and dicts of them)")


#: What ``convert`` passes on to every subnet layer: the layers' keyword options but those it
#: sets itself (a layer takes the dtype and device of the layer it replaces).
LAYER_OPTIONS = tuple(name for name, p in inspect.signature(SubnetLinear).parameters.items()
                      if p.kind is p.KEYWORD_ONLY
                      and name not in ("sparsity", "init", "structure", "seed"))


def check_layer_options(options: dict) -> None:
    unknown = next((key for key in options if key not in LAYER_OPTIONS), None)
    if unknown in ("dtype", "device"):
        raise ValueError(f"convert takes no {unknown}: each subnet layer takes the {unknown} of "
                         f"the layer it replaces; move the model (model.to(...)) before or "
                         f"after converting it")
    if unknown is not None:
        raise ValueError(f"convert: unknown option {unknown!r}; the layer options are "
                         f"{', '.join(LAYER_OPTIONS)}")


def checked_patterns(patterns, what: str) -> tuple[str, ...]:
    if isinstance(patterns, str):
        return (patterns,)
    if not isinstance(patterns, Iterable) or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"{what} must be glob patterns (strings), got {patterns!r}")
    return tuple(patterns)


def check_patterns_name_modules(include: Sequence[str] | None, exclude: Sequence[str],
                                names: dict[int, list[str]]) -> None:
    """Refuse an ``include`` or ``exclude`` pattern that names no module of the model (a typo),
    given every name of its modules (``names``: each module's, the model's ``""`` first)."""
    every_name = [n for ns in names.values() for n in ns]
    for what, patterns in (("include", include or ()), ("exclude", exclude)):
        unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in every_name)]
        if unmatched:
            raise ValueError(f"convert: {what} pattern {unmatched[0]!r} names no module of the "
                             f"model (a typo?); its modules: {', '.join(every_name[1:9])}"
                             f"{', ...' if len(every_name) > 9 else ''}")


STATE_HOOKS = ("_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
               "_load_state_dict_post_hooks")


def torch_pruned(module: nn.Module) -> str | None:
    """The name of the first tensor of ``module``'s own that ``torch.nn.utils.prune`` masks
    (``<name>_orig``, ``<name>_mask`` and a hook that computes ``<name>`` stand for it), or
    None."""
    return next((hook._tensor_name for hook in module._forward_pre_hooks.values()
                 if isinstance(hook, prune.BasePruningMethod)), None)


def refuse_torch_pruned(model: nn.Module, who: str, which: str) -> None:
    """Refuse (``ValueError``, one line) a ``model`` with a tensor ``torch.nn.utils.prune``
    masks (:func:`torch_pruned`: a subnet layer's trainable bias, the one tensor of its own it
    lets prune, or any other module's), naming the module and the tensor, ``which`` ``who``
    (the caller) does not take, and the ``prune.remove`` that makes the pruning permanent, as
    ``convert`` refuses one (:func:`_check_hooks`). ``save_ticket``, ``export`` and
    ``load_ticket`` into such a model failed deep in ``copy.deepcopy`` ("Only Tensors created
    explicitly by the user (graph leaves) support the deepcopy protocol"): the pruned tensor
    is computed, with grad."""
    for name, module in model.named_modules():
        pruned = torch_pruned(module)
        if pruned is not None:
            where = f"model.get_submodule({name!r})" if name else "model"
            raise ValueError(
                f"{who}: {f'module {name!r}' if name else 'the model'} "
                f"({type(module).__name__}) has {pruned!r} pruned by torch.nn.utils.prune "
                f"({pruned}_orig, {pruned}_mask and a hook), which {which}; make the pruning "
                f"permanent first: torch.nn.utils.prune.remove({where}, {pruned!r})")


def refuse_parametrized(model: nn.Module) -> None:
    """Refuse (``ValueError``, one line) to save as a ticket a ``model`` with a parametrization
    (``torch.nn.utils.parametrize``) inside a subnet layer: on its trainable bias or its scores
    (a computed ``weight`` has none to take, and ``convert`` refuses a layer that has one,
    :func:`conversion_rule`), naming the module, its tensors and the
    ``remove_parametrizations`` that bakes them in. Such a layer trains and exports (its values
    baked in), but ``save_ticket`` wrote a ticket that no load took ("the model has no tensor
    '1.parametrizations.bias.original' (the ticket was saved from another architecture)": a
    load replays ``convert``, which makes none). Parametrizations outside subnet layers (a head
    left dense) are the model's own, made by its constructor again at a load: kept."""
    for outer, layer in outermost_subnet_modules(model):
        for name, module in layer.named_modules(prefix=outer):
            if parametrize.is_parametrized(module):
                raise ValueError(
                    f"save_ticket: module {name!r} of a subnet layer has parametrizations of "
                    f"{', '.join(module.parametrizations)} (torch.nn.utils.parametrize), which "
                    f"a ticket does not store; remove them first, keeping their values: "
                    f"torch.nn.utils.parametrize.remove_parametrizations(model.get_submodule("
                    f"{name!r}), {next(iter(module.parametrizations))!r})")


def _check_hooks(module: nn.Module, name: str) -> None:
    """Refuse hooks that would not survive the replacement of the module's parameters."""
    reparametrisations = [type(hook).__name__ for hook in module._forward_pre_hooks.values()
                          if isinstance(hook, (WeightNorm, SpectralNorm))]
    if reparametrisations:
        function = "remove_" + reparametrisations[0].replace("Norm", "_norm").lower()
        raise ValueError(f"module {name!r} has a {reparametrisations[0]} reparametrisation of the "
                         "weight that the frozen random weights replace; remove it first "
                         f"(torch.nn.utils.{function})")
    pruned = torch_pruned(module)
    if pruned is not None:
        raise ValueError(f"module {name!r} has a torch.nn.utils.prune mask ({pruned}_mask), "
                         "which the subnet layer's masks replace; remove it first "
                         f"(torch.nn.utils.prune.remove(module, {pruned!r}))")
    state_hooks = [attr for attr in STATE_HOOKS if getattr(module, attr)]
    if state_hooks:
        raise ValueError(f"module {name!r} has {state_hooks[0].strip('_').replace('_', ' ')}, "
                         "written for its own parameters, which conversion replaces; remove "
                         "them first")


class LayersRefused(ValueError):
    """A refusal of selected layers whose line names the ``exclude=`` that leaves them out:
    ``exclude``, the call's patterns and those that cover exactly these layers
    (:func:`~lotterynet.convert_patterns.covering_patterns`), which ``train.py --arch timm:…``
    names as ``--exclude``."""

    def __init__(self, message: str, exclude: list[str] | None):
        super().__init__(message)
        self.exclude = exclude


class UnconvertibleLayers(LayersRefused):
    """Selected layers whose types subclass a convertible one but are not :data:`CONVERTIBLE`
    themselves (timm's ``Conv2dSameExport``: ``layers``, ``{name: type}``), all named at once
    (``exclude``: None while one layer's refusal waits to be named with the others)."""

    def __init__(self, layers: dict[str, type], exclude: list[str] | None = None):
        self.layers = layers
        (first, cls), many = next(iter(layers.items())), len(layers) > 1
        types = tuple(dict.fromkeys(t.__name__ for t in layers.values()))
        shown = list(layers) if len(layers) <= 3 else \
            f"[name for name, m in model.named_modules() if type(m).__name__ in {types!r}]"
        base, call = base_rule(cls)
        advice = (f"for each type that computes what its base does, register that rule for it "
                  f"before converting (the first: {call})" if len(types) > 1 else
                  f"if {cls.__name__} computes what its base {base} does, register that rule "
                  f"for it before converting: {call}")
        what = (f"{len(layers)} modules, such as {first!r} (a {type_name(cls)}), are of "
                f"type{'s' * (len(types) > 1)} {', '.join(types)}, each" if many else
                f"module {first!r} is a {type_name(cls)},")
        super().__init__(
            f"{what} a subclass of a convertible layer (known: {', '.join(CONVERTIBLE.names())}) "
            f"that may compute something else; exclude {'them' if many else 'it'} "
            f"(exclude={shown}) or, {advice}", exclude)


def conversion_rule(module: nn.Module, name: str) -> Convertible | None:
    """The conversion rule for ``module``, ``None`` if it is not a Linear/Conv1d/Conv2d."""
    if not isinstance(module, FAMILIES):
        return None
    if isinstance(module, LazyModuleMixin):
        raise ValueError(f"module {name!r} is an uninitialised lazy module "
                         f"({type(module).__name__}), whose shapes are not known yet: run one "
                         "forward pass through the model first")
    if parametrize.is_parametrized(module):
        raise ValueError(f"module {name!r} has parametrizations of "
                         f"{', '.join(module.parametrizations)}, which the frozen random weights "
                         "replace; remove them first "
                         "(torch.nn.utils.parametrize.remove_parametrizations)")
    if type_name(type(module)) not in CONVERTIBLE:
        raise UnconvertibleLayers({name: type(module)})
    _check_hooks(module, name)
    return CONVERTIBLE.get(type_name(type(module)))


def check_tied(modules: dict[int, nn.Module], names: dict[int, list[str]],
                to_replace: list[nn.Module]) -> None:
    """Refuse a layer to replace that shares a parameter with a module outside it (weight tying:
    a language model's head and its embedding, two layers of one weight): its replacement draws
    its own frozen weights and scores, which would silently untie them."""
    holders: dict[int, list[tuple[int, str]]] = {}  # parameter -> (module, its name there)
    for key, module in modules.items():
        for param_name, p in module.named_parameters(recurse=False):
            holders.setdefault(id(p), []).append((key, param_name))
    for module in to_replace:
        inside = {id(m) for m in module.modules()}
        for param_name, p in module.named_parameters():
            other = next(((key, n) for key, n in holders[id(p)] if key not in inside), None)
            if other is not None:
                name = names[id(module)][0]
                tied_to = ".".join(filter(None, (names[other[0]][0], other[1])))
                raise ValueError(
                    f"module {name!r} shares its {param_name} with {tied_to!r} (tied weights); "
                    f"converting it would give it frozen random weights and scores of its own "
                    f"and untie them: exclude it (exclude=[{name!r}]), or untie them first")
