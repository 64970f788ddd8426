"""Drop-in subnet layers: ``SubnetLinear`` / ``SubnetConv1d`` / ``SubnetConv2d`` take the
positional signature of ``nn.Linear`` / ``nn.Conv*d`` and map inputs to outputs of the same
shapes; the weights are frozen and random, and what trains is the scores of a
:class:`~lotterynet.structures` structure chosen by name.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .distributions import cast_drawn, float32_draws, seeded_generator
from .loaded_k import watch_loaded_k
from .masking import BIAS_NAMES, MaskedSparsity, named_masked_weights, trainable_where_made
from .plain import pad_same, standardized
from .registry import Registry
from .structures import (
    STRUCTURE_OPTIONS,
    STRUCTURES,
    LayerOp,
    TargetShape,
    check_positive_int,
    check_structure_options,
)


def check_float_dtype(dtype) -> None:
    """``dtype`` of a layer: None (torch's default) or a floating-point ``torch.dtype``."""
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point torch.dtype (torch.float16, "
                         f"torch.bfloat16, torch.float32, torch.float64), got {dtype!r}")


def record_frozen(layer: nn.Module) -> None:
    """Note on ``layer`` which of its parameters are frozen as it is made (``frozen_as_built``,
    names relative to the layer): the ones a ticket regenerates from the seed
    (:mod:`lotterynet.ticket_frozen`), whatever ``requires_grad`` says when it is saved. Called
    where its biases' ``requires_grad`` is set (:func:`set_bias_mode`), which every subnet
    layer's build calls once its tensors are drawn (:func:`drawn`), in the mode ``convert``
    asks for too: each layer once, an attention's projections as each is made (a set of names,
    one pass over the layer's parameters; no tensor is read)."""
    layer.frozen_as_built = frozenset(name for name, p in layer.named_parameters()
                                      if not p.requires_grad)


@dataclass(frozen=True)
class BiasMode:
    """A subnet layer's bias (:data:`BIAS_MODES` names them): whether it has one (``keep``: a
    random draw) and whether that bias trains with the scores (``trainable``)."""

    keep: bool
    trainable: bool


#: What becomes of a subnet layer's bias, as ``convert(bias=)`` and a layer's own ``bias=``
#: name it: a random bias frozen (a ticket regenerates it from the seed), the same draw trained
#: (the ticket stores it), or none.
BIAS_MODES: Registry = Registry("bias mode")
BIAS_MODES.register("frozen")(BiasMode(keep=True, trainable=False))
BIAS_MODES.register("trainable")(BiasMode(keep=True, trainable=True))
BIAS_MODES.register("none")(BiasMode(keep=False, trainable=False))


def bias_mode(bias: bool | str | BiasMode) -> BiasMode:
    """A subnet layer's ``bias``: as ``nn.Linear``'s, True (``"frozen"``) or False
    (``"none"``), or a name of :data:`BIAS_MODES`; or the mode itself, as ``convert`` passes
    it (an attention without biases keeps its ``bias_k`` / ``bias_v`` trainable in ``convert``'s
    ``"trainable"`` mode: no bias, trainable)."""
    if isinstance(bias, BiasMode):
        return bias
    return BIAS_MODES.get(bias if isinstance(bias, str) else "frozen" if bias else "none")


def set_bias_mode(layer: nn.Module, mode: BiasMode) -> None:
    """Make the biases (:data:`BIAS_NAMES`) of ``layer`` and of the subnet layers inside it
    trainable or frozen as ``mode`` says, and record them so (:func:`record_frozen`): where a
    layer is made, by its ``bias=`` or by ``convert(bias=)``."""
    for name, p in layer.named_parameters():
        if name.rpartition(".")[2] in BIAS_NAMES:
            p.requires_grad_(mode.trainable)
    record_frozen(layer)


def refuse_thawed(module: nn.Module) -> None:
    """Refuse a training forward (``module.training``, grad enabled) of subnet ``module`` in
    which a random tensor it froze as it was made (``frozen_as_built``) requires grad along
    with its scores: what ``model.requires_grad_(True)``, ``p.requires_grad = True`` over
    ``model.parameters()`` or Lightning's ``BaseFinetuning.unfreeze_and_add_param_group``
    leave, after which an optimizer over the model's parameters trains the random weights (no
    longer a strong lottery ticket, which only ``save_ticket`` told, much later). A bias too
    (``layer.bias.requires_grad_()``): a ticket regenerates it from the seed, so only one made
    trainable where the model is made (:func:`~lotterynet.masking.trainable_where_made`, not
    frozen as built) trains. One pass over the layer's few parameters. Allowed: the weights
    trained under a fixed mask (scores frozen), and ``torch.func``'s transforms, under which
    every tensor differentiated requires grad."""
    if not (module.training and torch.is_grad_enabled()):
        return
    frozen = getattr(module, "frozen_as_built", ())  # (none: a layer pickled before it was)
    thawed, bias, scored = None, None, False  # (a thawed weight is named before a bias)
    for name, p in module.named_parameters():
        if p.requires_grad:
            if name not in frozen:
                scored = scored or name.endswith("scores")
            elif name.rpartition(".")[2] in BIAS_NAMES:
                bias = bias or (name, p)
            else:
                thawed = thawed or (name, p)
    # (named, not told by `thawed is bias`: dynamo cannot trace `is` between tuples)
    what = "weight" if thawed else "bias"
    thawed = thawed or bias
    if thawed and scored and (torch.compiler.is_compiling()  # (a check dynamo cannot trace)
                              or not torch._C._functorch.is_functorch_wrapped_tensor(thawed[1])):
        name = thawed[0]
        if what == "bias":
            why = (
                ", but a ticket regenerates a bias built frozen from the seed (save_ticket "
                f"would refuse the trained model): {trainable_where_made()}, or freeze it "
                f"again (requires_grad_(False))")
        else:
            why = (
                " (model.requires_grad_(True), or every parameter unfrozen?), so an optimizer "
                "would train it and the model would no longer be a strong lottery ticket: "
                "unfreeze only the scores (and what convert(bias=, batchnorm=, others=) made "
                "trainable), or freeze them to train the weights under a fixed mask")
        raise RuntimeError(f"{type(module).__name__}({module.extra_repr()}): its frozen random "
                           f"{what} {name!r} requires grad, as do its scores{why}")


def recorded_draw(module: nn.Module) -> dict:
    """What subnet ``module`` was built from (``drawn_with``, which its ``redrawn`` draws
    again), or the one-line error saying what to do with a module pickled whole before it was
    recorded (the bare ``TypeError`` of ``**None`` said nothing)."""
    if module.drawn_with is None:
        raise RuntimeError(f"{type(module).__name__} was pickled by an older lotterynet, which did "
                           f"not record what its frozen weights were drawn from, so they cannot "
                           f"be drawn again: build the model anew and load this one's state "
                           f"into it (new.load_state_dict(old.state_dict()))")
    return module.drawn_with


def copy_redrawn(module: nn.Module) -> None:
    """Copy into ``module``'s parameters, in place (its device, dtype and layout), those of
    ``module.redrawn()``: the values it was built with, drawn again from its seed."""
    with torch.no_grad():
        for name, value in module.redrawn().named_parameters():
            module.get_parameter(name).copy_(value)


def traced_call(module: nn.Module, args: tuple, kwargs: dict):
    """A call of subnet ``module`` being traced: under ``torch.fx`` symbolic tracing (an
    argument is an ``fx.Proxy``) recorded as one ``call_module`` node, as FX records a leaf
    module's (``nn.Linear``'s), since the mask selection inside branches on values, which FX
    cannot trace; under ``torch.jit.trace`` refused, which would record those branches, and a
    cached mask, as constants (its check failed: "Graphs differed across invocations"). None
    otherwise, and for the module FX traces itself (the root: no node can call it)."""
    if torch.jit.is_tracing():
        raise TypeError(f"torch.jit.trace: {type(module).__name__} is a subnet layer, whose mask "
                        f"selection a trace would record as constants; trace the exported model, "
                        f"masks baked in: torch.jit.trace(lotterynet.export(model), ...) (or "
                        f"torch.export / torch.compile the model itself)")
    proxy = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.fx.Proxy)), None)
    name = None if proxy is None else proxy.tracer.path_of_module(module)
    return proxy.tracer.create_proxy("call_module", name, args, kwargs) if name else None


def subnet_call(module: nn.Module, forward, *args, **kwargs):
    """``forward(*args, **kwargs)``, the computation of subnet ``module``'s forward, as every
    subnet module runs it: one node under ``torch.fx`` tracing, refused by ``torch.jit.trace``
    (:func:`traced_call`), and refused in training where its frozen tensors were unfrozen with
    its scores (:func:`refuse_thawed`)."""
    traced = traced_call(module, args, kwargs)
    if traced is not None:
        return traced
    refuse_thawed(module)
    return forward(*args, **kwargs)


@contextlib.contextmanager
def drawn(layer: nn.Module, seed: int | None, device=None, dtype=None):
    """Build ``layer``'s tensors in the block, from the generator it yields (``seed``'s; None:
    torch's global generator): drawn in float32 on the CPU (the same numbers on every device
    and under any default dtype), then moved to ``device`` / ``dtype`` (:func:`cast_drawn`).
    The caller then sets its biases' mode, which records its frozen parameters
    (:func:`set_bias_mode`: once, not here too)."""
    generator = seeded_generator(seed)
    layer.seeded = seed is not None  # (else a ticket stores the frozen weights: ticket.py)
    with float32_draws() as default:
        yield generator
    cast_drawn(layer, default, device, dtype)


#: What the ``weight`` of a subset-sum / fixedsize layer is under ReLU (``convert``'s warning of
#: a parent that reads it says so too).
DOUBLED_WEIGHT = "with activation='relu' is [P, 2N] over [relu(x), relu(-x)], not [out, in]"


class DoubledInputWeight(torch.Tensor):
    """The ``weight`` of a subset-sum / fixedsize layer under ReLU, ``[P, 2N]`` over
    ``[relu(x), relu(-x)]`` (:data:`DOUBLED_WEIGHT`). A parent that applies it to ``x`` itself
    (torchvision's Swin attention: ``F.linear(x, self.qkv.weight, ...)``) failed deep in torch,
    "mat1 and mat2 shapes cannot be multiplied", naming no layer: a computation with it that
    fails raises instead the line of ``read``, ``(head, tail)``, naming the layer (its path
    where ``convert`` warned of the read, as its warning does) and what to do. Computations
    that work (over ``split_signs(x)``, a norm) and reads of shape, dtype or device are
    torch's, their results plain tensors. Only a read of ``layer.weight`` makes one: the
    layer's own forward takes its structure's weight."""

    read: tuple[str, str]

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        with torch._C.DisableTorchFunctionSubclass():
            try:
                return func(*args, **(kwargs or {}))
            except RuntimeError as error:
                tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs))
                           if isinstance(t, torch.Tensor)]
                weight = next(t for t in tensors if isinstance(t, cls))
                # only a plain RuntimeError of the weight applied to x itself: another tensor
                # of x's N features (last dim) or channels (dim 1 of an image) where the weight
                # takes 2N (its dim 1); a dtype's fault over [relu(x), relu(-x)], an
                # out-of-memory error, stay torch's
                doubled = {2 * t.shape[i] for t in tensors if t is not weight and t.dim()
                           for i in ((-1, 1) if t.dim() > 2 else (-1,))}
                if type(error) is not RuntimeError or weight.shape[1] not in doubled:
                    raise
                head, tail = weight.read
                name = getattr(func, "__name__", str(func))
                raise RuntimeError(f"{head}, so {name} failed ({error}): {tail}") from error


#: What every subnet layer takes besides its torch layer's arguments, and its ``weight``: the
#: end of each public layer's docstring (``help()`` shows a class's own docstring, not its
#: base's, so each has it whole).
LAYER_DOC = """
``sparsity`` is the fraction of the maskable weights pruned (0.5 by default; 0.9 keeps a
tenth): each maskable tensor keeps exactly its count (:func:`~lotterynet.masking.kept_count`)
of the weights of largest ``|score|``; ``layer.sparsity = s`` sets it again. ``structure``:
how frozen random weights stand in for the layer's weight (``lotterynet.STRUCTURES``:
``dense``, the weight itself masked; ``subsetsum``, ``fixedsize``, ``malach``, ``orseau``,
``dacunha``). ``seed``: the frozen weights, the bias and the initial scores are drawn from it,
the same numbers on every device and thread count (None: from torch's global generator,
as ``nn.Linear``'s are; a ticket then stores the frozen weights).

``init=None`` draws the frozen weights from the structure's own default (``kaiming_normal``
for dense / subsetsum / fixedsize, ``uniform`` for malach / dacunha, ``hyperbolic`` for
orseau); an explicit ``init`` always wins. ``pairs`` configures every structure but dense
(n terms per weight; n′ channels per output for dacunha; malach's / orseau's default hidden
width ``pairs · in``), ``activation``, ``shared`` and ``fan_in`` subsetsum / fixedsize,
``hidden`` the hidden width H of malach / orseau (dacunha refuses it: its width is
``out · pairs``); an option that the structure does not read is refused unless it is at
its default (:func:`~lotterynet.structures.check_structure_options`): ``pairs=3`` on a
dense layer is not silently a dense layer.
``kept`` / ``ties`` choose the kept-count and tie rules of every mask
(:mod:`lotterynet.masking`; ``kept="floor", ties="high"`` is the edge-popup reference's),
``score_init`` the bound of the initial scores (``masking.SCORE_BOUNDS``).
``bias`` takes ``nn.Linear``'s True / False or a mode of ``convert(bias=)``
(:data:`BIAS_MODES`): True or ``"frozen"`` draws a random bias and freezes it (part of the
random network: a ticket regenerates it from the seed), ``"trainable"`` draws the same bias
and trains it with the scores (a ticket stores it), False or ``"none"`` makes none.

Like the layer it replaces, a subnet layer has a ``weight``: the effective weight its
forward uses, read-only (computed from the masks on each access, gradients reach the
scores). For ``dense`` it is the masked weight; for ``subsetsum`` / ``fixedsize`` the
collapsed weight — with ``activation="relu"`` that is ``[P, N]`` over twice the input
channels, applied to ``[relu(x), relu(-x)]`` (:func:`lotterynet.plain.split_signs`).
Two-stage structures (malach, orseau, dacunha) have no single weight: reading it raises
``AttributeError`` saying so.
"""


def _public_doc(head: str, *more: str) -> str:
    # a public layer's docstring: ``head``, :data:`LAYER_DOC`, then ``more``
    return "\n\n".join(inspect.cleandoc(part) for part in (head, LAYER_DOC, *more))


class _SubnetLayer(MaskedSparsity, nn.Module):
    """Shared machinery: build the structure, hold the bias (``bias``), hand the structure the
    layer's map ``_op(x, weight, bias)`` as a :class:`~lotterynet.structures.LayerOp`; what
    the layers take and do: :data:`LAYER_DOC`."""

    #: Whether the layer was made with a seed (else a ticket stores its frozen weights). A class
    #: default: a layer pickled before it existed loads as seeded, as its tickets were then.
    seeded: bool = True

    def _build(self, target: TargetShape, bias: bool | str | BiasMode, *, sparsity, init,
               init_kwargs, structure, seed, kept="round", ties="low", score_init="edgepopup",
               device=None, dtype=None, **options) -> None:
        """The structure and bias (:func:`bias_mode`), drawn in float32 on the CPU (the same
        numbers on every device and under any default dtype), then moved to ``device`` /
        ``dtype`` (default: torch's default dtype) as ``nn.Linear(..., device=, dtype=)`` makes
        them. ``options``: the structure options
        (:data:`~lotterynet.structures.STRUCTURE_OPTIONS`); one not given takes its default
        there (``fan_in``, which a layer pickled before it existed did not record)."""
        check_float_dtype(dtype)
        mode = bias_mode(bias)
        options = STRUCTURE_OPTIONS | options
        check_structure_options(structure, options)
        self.structure_name = structure
        with drawn(self, seed, device, dtype) as generator:
            self.structure = STRUCTURES.get(structure)(
                target, sparsity=sparsity, init=init, init_kwargs=init_kwargs,
                generator=generator, kept=kept, ties=ties, score_init=score_init, **options)
            if mode.keep:  # random, as nn.Linear / nn.Conv*d would initialise it
                bound = 1.0 / math.sqrt(target.fan_in)
                values = torch.empty(target.out_features).uniform_(-bound, bound,
                                                                   generator=generator)
                self.bias = nn.Parameter(values, requires_grad=False)
            else:
                self.register_parameter("bias", None)
        set_bias_mode(self, mode)
        watch_loaded_k(self)  # (a state dict of another sparsity warns: loaded_k)
        self.drawn_with = dict(target=target, bias=mode.keep, sparsity=sparsity, init=init,
                               init_kwargs=dict(init_kwargs or {}),  # (not the caller's dict)
                               structure=structure, seed=seed, kept=kept, ties=ties,
                               score_init=score_init, **options)

    #: What the layer was built from (:meth:`redrawn`); None for a layer pickled before then.
    drawn_with: dict | None = None

    #: What drew the layer's frozen weights over its seed's, called on its :meth:`redrawn`
    #: layer to draw them so again: a construction's (:func:`lotterynet.constructions.subset_sum`:
    #: its coefficients, from the target's range, float64); None for a layer its seed draws.
    drawn_over = None

    def redrawn(self) -> nn.Module:
        """The layer's structure and bias drawn again from what it was built from (its seed
        and options, and ``drawn_over``), float32 on the CPU (what ``drawn_over`` draws, in its
        own dtype): the frozen weights a ticket regenerates, which
        :func:`~lotterynet.ticket.save_ticket` checks the layer's against."""
        fresh = _SubnetLayer()
        fresh._build(**recorded_draw(self), dtype=torch.float32)
        if self.drawn_over is not None:
            self.drawn_over(fresh)
        return fresh

    #: What a construction (:mod:`lotterynet.constructions`) solved from a trained layer, which
    #: no seed draws again: the layer's masks, by tensor name (:meth:`mask`), and its bias, on
    #: the CPU (:meth:`record_solved`); None for a layer drawn (and trained).
    solved: dict | None = None

    def record_solved(self) -> None:
        """Record the layer's masks and the tensors it took (:meth:`_taken`: its bias) as what a
        construction solved (:attr:`solved`), which :meth:`reset_parameters` puts back."""
        self.solved = {"masks": {name: m.cpu() for name, m in self.mask().items()},
                       **{name: None if t is None else t.detach().cpu().clone()
                          for name, t in self._taken().items()}}

    def _taken(self) -> dict[str, torch.Tensor | None]:
        """The layer's tensors a construction takes or solves, which no seed draws, by name:
        its bias (a convolution adds its ``gain``)."""
        return {"bias": self.bias}

    def reset_parameters(self) -> None:
        """Draw the frozen weights, the bias and the initial scores again, in place, as the
        layer was built (:meth:`redrawn`: from its seed, or, made without one, from torch's
        global generator, as ``nn.Linear``'s draws); ``k`` is kept. What a model made on the
        meta device and given storage by ``to_empty`` needs: ``model.apply(lambda m:
        hasattr(m, "reset_parameters") and m.reset_parameters())``. A construction's layer
        (:attr:`solved`) gets back the masks (and their ``k``) and the bias (and gain) it was
        solved with over its redrawn frozen weights: the network the construction built, which a
        redraw alone replaced with a random one (it was refused, after ``model.apply`` had
        reset the modules before it)."""
        copy_redrawn(self)
        if self.solved is None:
            return
        for name, weight in named_masked_weights(self.structure).items():
            weight.set_mask(self.solved["masks"][name].to(weight.scores.device))
        with torch.no_grad():
            for name, tensor in self._taken().items():
                if tensor is not None and self.solved.get(name) is not None:  # (not a gain
                    tensor.copy_(self.solved[name])  # pickled before one was recorded)

    #: What a parent reading the layer's ``weight`` does, as ``convert`` warned of it:
    #: :class:`DoubledInputWeight`'s ``read``; None where it did not.
    weight_read: tuple[str, str] | None = None

    @property
    def weight(self) -> torch.Tensor:
        """The effective weight the forward uses (class docstring); read-only. Under ReLU a
        :class:`DoubledInputWeight`, whose use as an ``[out, in]`` weight names the layer."""
        effective = getattr(self.structure, "effective_weight", None)
        if effective is None:
            raise AttributeError("weight")  # __getattr__ explains
        weight, doubles_input = effective()
        if not doubles_input:
            return weight
        weight = weight.as_subclass(DoubledInputWeight)
        weight.read = self.weight_read or (
            f"{type(self).__name__}({self.extra_repr()}).weight {DOUBLED_WEIGHT}",
            "convert this layer with activation='identity', in a call of its own")
        return weight

    def __setattr__(self, name: str, value) -> None:
        if name == "weight":  # (nn.Module would say "attribute 'weight' already exists")
            raise AttributeError(
                f"{type(self).__name__}.weight is read-only: it is computed from the frozen "
                "random weights (in layer.structure) and the masks; what trains is the scores")
        super().__setattr__(name, value)

    def __getattr__(self, name: str):
        if name == "weight":  # reached only when the property above raised
            raise AttributeError(
                f"{type(self).__name__} with structure {self.structure_name!r} has no single "
                "weight: its two stages (map, ReLU, map) are not one linear map; read "
                "layer.structure.u() / layer.structure.v() instead")
        return super().__getattr__(name)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        """As ``nn.Module``'s; but a dense layer's weight (``PREFIXweight``: the state dict of a
        model not converted, a pretrained one, or of an export) is refused in one line saying
        why, ``strict`` or not (torch tells a module no more): a strict load listed every key
        missing and unexpected, and ``strict=False`` loaded the rest silently (norm statistics,
        biases: a frozen bias so changed then refused by ``save_ticket``)."""
        if f"{prefix}weight" in state_dict:
            where = f" {prefix[:-1]!r}" if prefix else ""
            raise RuntimeError(
                f"{type(self).__name__}{where} takes no dense weight ({prefix}weight, from a "
                f"model not converted, such as a pretrained one, or an export): its frozen "
                f"weights are random, drawn from its seed (convert does not keep a model's "
                f"weights); load the state dict of the converted model or its ticket "
                f"(lotterynet.load_ticket), or load this one before converting")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _structure_repr(self) -> str:
        # the bias as ``bias=`` takes it, not nn.Linear's bias=True, which a frozen bias and a
        # trained one both printed: 'trainable' where made so and still so (a frozen one thawed
        # since is refused in training: frozen_as_built), else 'frozen'; False: none
        bias = self.bias is not None and (
            "trainable" if self.bias.requires_grad and "bias" not in getattr(
                self, "frozen_as_built", ()) else "frozen")
        return (f"bias={bias!r}, structure={self.structure_name!r}, "
                f"density={self.density:.4g}")

    def mask(self) -> dict[str, torch.Tensor]:
        """The current boolean masks, by tensor name (``weight`` for dense, ``u``/``v`` ...):
        copies, which the caller may change without changing the layer's cached mask."""
        return {name: m.mask().clone()
                for name, m in named_masked_weights(self.structure).items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return subnet_call(self, self._forward, x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.structure(x, LayerOp(self._op, self.bias))

    def baked(self, weight: torch.Tensor) -> torch.Tensor:
        """The weight the layer's map runs with, given the structure's effective one (what an
        export bakes in): that weight itself (a standardising convolution's is standardised)."""
        return weight


class SubnetLinear(_SubnetLayer):
    __doc__ = _public_doc("""``nn.Linear(in_features, out_features, bias, device, dtype)`` over
        frozen random weights (edge-popup, Ramanujan et al. 2020): inputs and outputs of
        ``nn.Linear``'s shapes; what trains is the scores that choose the weights the masks
        keep. ``bias`` is False by default, unlike ``nn.Linear``'s.""")

    def __init__(self, in_features: int, out_features: int, bias: bool | str | BiasMode = False,
                 device=None, dtype=None, *,
                 sparsity: float = 0.5, init: str | None = None,
                 init_kwargs: dict | None = None, structure: str = "dense", pairs: int = 5,
                 activation: str = "relu", shared: bool = True, hidden: int | None = None,
                 seed: int | None = None, kept: str = "round", ties: str = "low",
                 fan_in: str = "hidden", score_init: str = "edgepopup"):
        super().__init__()
        for name, size in (("in_features", in_features), ("out_features", out_features)):
            check_positive_int(name, size)
        self.in_features, self.out_features = in_features, out_features
        self._build(TargetShape(out_features, in_features), bias, sparsity=sparsity, init=init,
                    init_kwargs=init_kwargs, structure=structure, pairs=pairs,
                    activation=activation, shared=shared, hidden=hidden, seed=seed, kept=kept,
                    ties=ties, fan_in=fan_in, score_init=score_init, device=device, dtype=dtype)

    @staticmethod
    def _op(x, weight, bias):
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"{self._structure_repr()}")


def _check_sizes(name: str, sizes, dims: int, least: int) -> None:
    """``kernel_size`` / ``stride`` / ``dilation`` / ``padding`` as ``nn.Conv{dims}d`` takes
    them: an integer, or one per spatial dimension, each at least ``least``."""
    if isinstance(sizes, tuple | list) and len(sizes) == dims:
        each = sizes
    else:
        each = (sizes,)
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= least
               for v in each):
        whole = "positive" if least else "non-negative"
        raise ValueError(f"{name} must be a {whole} integer or a tuple of {dims}, got "
                         f"{sizes!r}")


def lacks_single_weight(structure: nn.Module) -> str | None:
    """Why a layer of ``structure`` has no single ``[out, in, *kernel]`` weight: ``"two
    stages"`` (malach, orseau, dacunha: map, ReLU, map; no effective weight) or ``"relu"``
    (subset-sum / fixedsize with ReLU: :data:`DOUBLED_WEIGHT`); None where it has one (dense;
    subset-sum / fixedsize with identity)."""
    if not hasattr(structure, "effective_weight"):
        return "two stages"
    if getattr(structure, "activation", None) == "relu":
        return "relu"
    return None


class _SubnetConvNd(_SubnetLayer):
    """``same_pad``: pad each input TensorFlow's "SAME" way (:func:`~lotterynet.plain.pad_same`,
    per input size: timm's ``Conv2dSame``), then convolve unpadded (``padding`` must be 0);
    ``std_eps``: standardise the weight per output channel with this eps before the
    convolution (:func:`standardized`: timm's ``StdConv2d``), which takes a structure of one
    ``[out, in, *kernel]`` weight (dense; subsetsum / fixedsize with activation='identity');
    ``std_scale`` (with ``std_eps``): then multiply each output channel of the standardised
    weight by ``gain * std_scale`` (timm's ``ScaledStdConv2d``: its ``gamma / sqrt(fan_in)``),
    ``gain`` an ``[out, 1, 1, 1]`` parameter of the layer, made 1 and frozen (a parameter that
    is not a masked weight, not drawn from the seed: a ticket stores it; ``convert`` gives it
    the timm layer's values, trainable or frozen as its ``others`` says).
    All apply to the weight the structure computes (its masked one), at every forward."""

    dims: int  # 1 or 2: ``plain`` is nn.Conv1d or nn.Conv2d
    #: As ``nn.Conv*d`` has them, for code that reads a convolution's geometry: not transposed;
    #: ``padding_mode`` is the layer's own (this default: a layer pickled before it was kept).
    padding_mode, transposed = "zeros", False
    #: The defaults of a layer pickled before they were kept: none.
    same_pad, std_eps, std_scale = False, None, None

    @property
    def output_padding(self) -> tuple[int, ...]:
        return (0,) * self.dims

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool | str | BiasMode = False,
                 padding_mode: str = "zeros", device=None, dtype=None, *, sparsity: float = 0.5,
                 init: str | None = None, init_kwargs: dict | None = None,
                 structure: str = "dense", pairs: int = 5, activation: str = "relu",
                 shared: bool = True, hidden: int | None = None, seed: int | None = None,
                 kept: str = "round", ties: str = "low", fan_in: str = "hidden",
                 score_init: str = "edgepopup", same_pad: bool = False,
                 std_eps: float | None = None, std_scale: float | None = None):
        super().__init__()
        for name, size in (("in_channels", in_channels), ("out_channels", out_channels),
                           ("groups", groups)):
            check_positive_int(name, size)
        for name, sizes in (("kernel_size", kernel_size), ("stride", stride),
                            ("dilation", dilation)):
            _check_sizes(name, sizes, self.dims, least=1)
        if not isinstance(padding, str):  # 'same' / 'valid': nn.Conv*d checks them below
            _check_sizes("padding", padding, self.dims, least=0)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        # torch's own argument checks and normal forms (padding strings, 'same' with a
        # stride, the padding modes), on a weightless meta-device copy of the layer this one
        # replaces
        plain = type(self).plain(in_channels, out_channels, kernel_size, stride, padding,
                                 dilation, groups, padding_mode=padding_mode, device="meta")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.padding, self.dilation = (
            plain.kernel_size, plain.stride, plain.padding, plain.dilation)
        self.padding_mode = plain.padding_mode
        self._reversed_padding_repeated_twice = plain._reversed_padding_repeated_twice
        self._geometry = plain.extra_repr()  # as nn.Conv*d prints it (bias=True prints none)
        if not isinstance(same_pad, bool):
            raise ValueError(f"same_pad must be True or False, got {same_pad!r}")
        if same_pad and (plain.padding not in ("valid", (0,) * self.dims)
                         or plain.padding_mode != "zeros"):
            raise ValueError(f"same_pad=True pads each input itself (with zeros), so padding must "
                             f"be 0 and padding_mode 'zeros', got padding={padding!r}, "
                             f"padding_mode={padding_mode!r}")
        if std_eps is not None and not (isinstance(std_eps, numbers.Real) and not isinstance(
                std_eps, bool) and 0 <= std_eps < math.inf):
            raise ValueError(f"std_eps must be None or a non-negative number, got {std_eps!r}")
        if std_scale is not None and (std_eps is None or not (isinstance(
                std_scale, numbers.Real) and not isinstance(std_scale, bool)
                and math.isfinite(std_scale))):
            raise ValueError(f"std_scale (scaled weight standardisation: timm's "
                             f"ScaledStdConv2d) must be None or a finite number, with std_eps, "
                             f"got std_scale={std_scale!r}, std_eps={std_eps!r}")
        self.same_pad, self.std_eps = same_pad, None if std_eps is None else float(std_eps)
        self.std_scale = None if std_scale is None else float(std_scale)
        self._geometry += ", same_pad=True" * same_pad + (
            "" if std_eps is None else f", std_eps={std_eps:g}") + (
            "" if std_scale is None else f", std_scale={std_scale:g}")
        target = TargetShape(out_channels, in_channels // groups, self.kernel_size, groups,
                             channel_dim=1)
        self._build(target, bias, sparsity=sparsity, init=init, init_kwargs=init_kwargs,
                    structure=structure, pairs=pairs, activation=activation, shared=shared,
                    hidden=hidden, seed=seed, kept=kept, ties=ties, fan_in=fan_in,
                    score_init=score_init, device=device, dtype=dtype)
        if std_scale is not None:  # (made after the build: not frozen as built, not drawn)
            like = next(self.structure.parameters())  # (its device and dtype, as built)
            self.gain = nn.Parameter(torch.ones(out_channels, 1, 1, 1, device=like.device,
                                                dtype=like.dtype), requires_grad=False)
        lacking = lacks_single_weight(self.structure)
        if std_eps is not None and lacking:
            relu = " with activation='relu'" * (lacking == "relu")
            raise ValueError(f"std_eps (weight standardisation: timm's StdConv2d, "
                             f"ScaledStdConv2d) standardises one [out, in, *kernel] weight, "
                             f"which structure={structure!r}{relu} does not have: use "
                             f"structure='dense', or subsetsum / fixedsize with "
                             f"activation='identity'")

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == self.dims + 1:  # unbatched (C, *spatial), as nn.Conv*d takes
            return super()._forward(x.unsqueeze(0)).squeeze(0)
        return super()._forward(x)

    def _op(self, x, weight, bias):
        """The convolution as ``nn.Conv*d`` computes it (its own ``_conv_forward``): padded
        other than with zeros by ``F.pad`` first, then convolved unpadded. Every structure
        calls it once, on its input (doubled or not: ``[relu(x), relu(-x)]`` of the padded
        ``x`` is the padding of ``[relu(x), relu(-x)]``); a two-stage structure's second stage
        is a 1×1 map, which pads nothing. ``same_pad`` pads ``x`` first, and ``std_eps``
        standardises ``weight`` (class docstring), as timm's layers do."""
        if self.same_pad:
            x = pad_same(x, self.kernel_size, self.stride, self.dilation)
        return type(self).plain._conv_forward(self, x, self.baked(weight), bias)

    def baked(self, weight: torch.Tensor) -> torch.Tensor:
        return weight if self.std_eps is None else standardized(weight, self.std_eps,
                                                                self.std_gain())

    def reset_parameters(self) -> None:
        """As every subnet layer's (:meth:`_SubnetLayer.reset_parameters`), and ``gain`` made 1
        again, as built (a converted layer's copy of timm's gain is lost, as a BatchNorm's
        trained weight is to its reset; a construction's layer gets back the target's gain it
        took, :attr:`solved`)."""
        if self.std_scale is not None:
            with torch.no_grad():
                self.gain.fill_(1)
        super().reset_parameters()

    def _taken(self) -> dict[str, torch.Tensor | None]:
        return {**super()._taken(), "gain": None if self.std_scale is None else self.gain}

    def std_gain(self) -> torch.Tensor | None:
        """The factor of each output channel of the standardised weight, ``gain * std_scale``
        (as timm's ``ScaledStdConv2d`` computes it); None without ``std_scale``."""
        return None if self.std_scale is None else self.gain * self.std_scale

    def extra_repr(self) -> str:
        return f"{self._geometry}, {self._structure_repr()}"


class SubnetConv1d(_SubnetConvNd):
    __doc__ = _public_doc("""``nn.Conv1d(in_channels, out_channels, kernel_size, stride, padding,
        dilation, groups, bias, padding_mode, device, dtype)`` over frozen random weights, as
        :class:`SubnetLinear` is ``nn.Linear``'s: inputs and outputs of ``nn.Conv1d``'s shapes
        (an unbatched ``(C, L)`` too); ``bias`` is False by default.""", _SubnetConvNd.__doc__)
    dims, plain = 1, nn.Conv1d


class SubnetConv2d(_SubnetConvNd):
    __doc__ = _public_doc("""``nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
        dilation, groups, bias, padding_mode, device, dtype)`` over frozen random weights, as
        :class:`SubnetLinear` is ``nn.Linear``'s: inputs and outputs of ``nn.Conv2d``'s shapes
        (an unbatched ``(C, H, W)`` too); ``bias`` is False by default.""",
                          _SubnetConvNd.__doc__)
    dims, plain = 2, nn.Conv2d
