"""What replaces one target layer. A structure owns the random tensors and computes the layer's
output from the layer's own map, handed to ``forward(x, op)`` as a :class:`LayerOp`:
``op(x, weight)`` is the target layer's ``F.linear`` / ``F.conv*d`` (stride, padding, dilation,
groups) *with* the layer's bias, ``op.map(x, weight)`` the same map without bias, ``op.bias``
the bias. One-stage structures (dense, subsetsum, fixedsize) call ``op`` once; two-stage ones
(malach, orseau, dacunha) call ``op.map`` and then :func:`pointwise` with ``op.bias``.

Every structure declares its tensors once, in the classmethod ``specs(target, **options)``;
the constructor builds them from it and :func:`layer_counts` counts them without building
anything, so width matching can be done analytically. Each structure also declares its
``default_init`` (used when the layer's ``init`` is None).

Shapes follow PyTorch: a target weight is ``(out, in_per_group, *kernel)``.
"""

from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .distributions import sample_weights
from .masking import FrozenWeight, MaskedWeight, check_sparsity, kept_count
from .plain import autocast_on, split_signs
from .registry import Registry, check_choice

STRUCTURES: Registry = Registry("structure")
ACTIVATIONS = ("relu", "identity")
#: What scales the Kaiming init of a subset-sum second layer ``v`` (and its scores): the
#: ``n·in`` hidden units an output sums (Kaiming's fan-in), or the target layer's ``in`` —
#: what Pensia et al.'s code draws (``RedLayer``: std √(2/in)), √n larger. The scores keep
#: edge-popup's bound 1/√fan_in either way (``RedLayer`` draws them U(±std), √2 wider:
#: ``score_init="kaiming"``, :data:`lotterynet.masking.SCORE_BOUNDS`).
FAN_INS = ("hidden", "target")


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class TargetShape:
    """The layer a structure stands in for. ``channel_dim`` is where features live in the
    input (-1 for Linear, 1 for convolutions)."""

    out_features: int
    in_per_group: int
    kernel_size: tuple[int, ...] = ()
    groups: int = 1
    channel_dim: int = -1

    def __post_init__(self):
        for name in ("out_features", "in_per_group", "groups"):
            check_positive_int(name, getattr(self, name))
        for size in self.kernel_size:
            check_positive_int("kernel_size", size)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_features, self.in_per_group, *self.kernel_size)

    @property
    def fan_in(self) -> int:
        return self.in_per_group * math.prod(self.kernel_size)


class LayerOp:
    """The target layer's own map with its geometry: ``op(x, w)`` adds the layer's bias,
    ``op.map(x, w)`` does not. ``fn(x, weight, bias)`` is the layer's functional op."""

    __slots__ = ("fn", "bias")

    def __init__(self, fn, bias: torch.Tensor | None):
        self.fn, self.bias = fn, bias

    def __call__(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self.fn(x, weight, self.bias)

    def map(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self.fn(x, weight, None)


@dataclass(frozen=True)
class TensorSpec:
    """One random tensor of a structure: its shape, the fan-in its init scales with, whether it
    carries scores (maskable), and the groups of its top-k (see ``topk.topk_mask``)."""

    shape: tuple[int, ...]
    fan_in: int
    maskable: bool = True
    group_dim: int | None = None
    group_size: int | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def check_activation(activation: str) -> str:
    return check_choice("activation", activation, ACTIVATIONS)


def check_fan_in(fan_in: str) -> str:
    return check_choice("fan_in", fan_in, FAN_INS)


def pointwise(h: torch.Tensor, weight: torch.Tensor, groups: int, dim: int,
              bias: torch.Tensor | None) -> torch.Tensor:
    """A 1×1 grouped map along channel dimension ``dim``: output o of group g is
    ``Σ_a weight[o, a] h[g·A + a] + bias[o]`` (A = channels per group). For a Linear target this
    is a (block-diagonal) linear layer, for a conv target a ``1×1`` conv with ``groups``. The
    bias is added in the product's dtype (under autocast the autocast dtype), as ``nn.Linear``
    adds its own."""
    hg = h.movedim(dim, -1).unflatten(-1, (groups, -1))
    y = torch.einsum("...ga,gba->...gb", hg, weight.view(groups, -1, weight.shape[1]))
    y = y.flatten(-2)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y.movedim(-1, dim)


class Structure(nn.Module):
    """Base class: builds the tensors declared by :meth:`specs` (``MaskedWeight`` if maskable,
    ``FrozenWeight`` otherwise), each drawn from ``init`` (``default_init`` when None)."""

    default_init = "kaiming_normal"

    def __init__(self, target: TargetShape, *, sparsity, init: str | None = None,
                 init_kwargs: dict | None = None, generator=None, kept: str = "round",
                 ties: str = "low", score_init: str = "edgepopup", **options):
        super().__init__()
        self.target = target
        init = self.default_init if init is None else init
        for name, spec in self.specs(target, **options).items():
            weight = sample_weights(init, spec.shape, spec.fan_in, generator,
                                    **(init_kwargs or {}))
            tensor = (MaskedWeight(spec.shape, fan_in=spec.fan_in, sparsity=sparsity,
                                   generator=generator, group_dim=spec.group_dim,
                                   group_size=spec.group_size, weight=weight, kept=kept,
                                   ties=ties, score_init=score_init)
                      if spec.maskable else FrozenWeight(weight))
            setattr(self, name, tensor)

    def _apply(self, fn, recurse=True):
        """Module conversions (``.to``, ``.cuda``, ``.half``, ...) as torch applies them, except
        that a 5-D tensor (subset sum's ``v`` of a conv layer, ``(out, in, n, kh, kw)``) keeps
        its memory format: ``model.to(memory_format=torch.channels_last)`` gives every 4- and
        5-D tensor the format of a conv weight, and the 4-D format fails on 5 dimensions."""
        def keep_rank5_format(t: torch.Tensor) -> torch.Tensor:
            return fn(t.unsqueeze(0)).squeeze(0) if t.dim() == 5 else fn(t)

        return super()._apply(keep_rank5_format, recurse)

    @classmethod
    def specs(cls, target: TargetShape, **options) -> dict[str, TensorSpec]:
        raise NotImplementedError

    @classmethod
    def counts(cls, target: TargetShape, *, sparsity: float = 0.0, kept: str = "round",
               **options) -> dict[str, int]:
        """``{"maskable", "kept", "frozen"}`` of one layer, exactly as ``count_params`` of the
        built layer reports them (biases excluded), without building it."""
        maskable = kept_total = frozen = 0
        for spec in cls.specs(target, **options).values():
            if not spec.maskable:
                frozen += spec.numel
                continue
            size, unit = ((spec.numel, "a tensor") if spec.group_dim is None
                          else (spec.group_size, "a group (fixed-size top-k)"))
            maskable += spec.numel
            k = kept_count(size, check_sparsity(sparsity, size, unit, kept), kept)
            kept_total += k * (spec.numel // size)
        return {"maskable": maskable, "kept": kept_total, "frozen": frozen}


#: The subnet layers' options that a layer hands every structure, with their defaults (the
#: subnet layers'); each reads those its ``specs`` names (:func:`structure_options`).
STRUCTURE_OPTIONS = {"pairs": 5, "activation": "relu", "shared": True, "fan_in": "hidden",
                     "hidden": None}


def layer_counts(structure: str, target: TargetShape, *, sparsity: float = 0.0,
                 **options) -> dict[str, int]:
    """Maskable / kept / frozen counts of one layer built with ``structure`` (by name) for
    ``target`` — the analytic form of ``count_params`` (minus biases), for width matching.
    ``sparsity``: the fraction pruned, 0 by default (all kept; a layer's default is 0.5, so
    give a layer's). ``options``: ``kept`` and the subnet layers' structure options
    (``pairs``, ``hidden``, ...); as in a layer, one that ``structure`` does not read is
    refused unless it is at its default (:func:`check_structure_options`)."""
    counts = STRUCTURES.get(structure).counts
    if not isinstance(target, TargetShape):
        raise TypeError(f"target must be a TargetShape(out_features, in_per_group, ...), "
                        f"got {target!r}")
    valid = sorted({"kept", *STRUCTURE_OPTIONS})
    unknown = [name for name in options if name not in valid]
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for {structure}; valid: sparsity, "
                         f"{', '.join(valid)}")
    check_structure_options(structure, options)
    return counts(target, sparsity=sparsity, **options)


def structure_options(structure: str) -> frozenset[str]:
    """The layer options (of :data:`STRUCTURE_OPTIONS`) that ``structure`` (by name) reads:
    the keyword parameters of its ``specs``."""
    parameters = inspect.signature(STRUCTURES.get(structure).specs).parameters.values()
    return frozenset(p.name for p in parameters if p.kind is p.KEYWORD_ONLY)


def ignored_options(structure: str, options: dict) -> dict:
    """The structure options in ``options`` that ``structure`` (by name) does not read and that
    are not at their default (:data:`STRUCTURE_OPTIONS`): a layer would be built without them."""
    reads = structure_options(structure)
    return {name: options[name] for name, default in STRUCTURE_OPTIONS.items()
            if name in options and name not in reads and options[name] != default}


def check_structure_options(structure: str, options: dict) -> None:
    """Refuse, in one line, a structure option that ``structure`` does not read given a value
    other than its default (``pairs=3`` on a dense layer), naming the structures that read it.
    Every subnet layer's build checks its options so, and :func:`layer_counts`."""
    ignored = ignored_options(structure, options)
    if ignored:
        name, value = next(iter(ignored.items()))
        readers = [s for s in STRUCTURES.names() if name in structure_options(s)]
        raise ValueError(f"{name}={value!r} is not an option of structure {structure!r} (it "
                         f"configures {', '.join(readers)}); drop it or choose one of those "
                         f"structures")


def without_ignored_options(options: dict) -> dict:
    """``options`` (``build_model``'s or ``convert``'s arguments, with their ``structure``)
    without :func:`ignored_options`: what a spec or ``convert()`` call recorded before such
    options were refused (a ``--structure wide`` run's dense spec holds ``--activation``)
    builds what it built then. An unknown structure is left for the build to refuse."""
    structure = options.get("structure", "dense")
    if structure not in STRUCTURES.names():  # (a list: an unhashable one is not a name)
        return options
    ignored = ignored_options(structure, options)
    return {name: value for name, value in options.items() if name not in ignored}


#: Two values of each layer option, to probe whether it changes a structure's size.
OPTION_PROBES = {"pairs": (2, 3), "activation": ACTIVATIONS, "shared": (True, False),
                 "fan_in": FAN_INS}


def sizing_options(structure: str) -> frozenset[str]:
    """The layer options of ``structure`` that change how many maskable weights it has (what
    ``--structure wide`` is sized to), probed on a small layer: ``activation`` sizes the
    ``fixedsize`` structure (2n terms for ReLU) but not ``subsetsum``; ``fan_in`` none. An
    option without probe values (``hidden``) counts as sizing."""
    specs, target = STRUCTURES.get(structure).specs, TargetShape(3, 4)

    def maskable(**option) -> int:
        return sum(t.numel for t in specs(target, **option).values() if t.maskable)

    return frozenset(name for name in structure_options(structure)
                     if name not in OPTION_PROBES
                     or len({maskable(**{name: v}) for v in OPTION_PROBES[name]}) > 1)


@STRUCTURES.register("dense")
class Dense(Structure):
    """The target layer itself, with frozen random weights under an edge-popup mask."""

    @classmethod
    def specs(cls, target, **unused):
        return {"weight": TensorSpec(target.weight_shape, target.fan_in)}

    def effective_weight(self) -> tuple[torch.Tensor, bool]:
        """``(weight, doubles_input)``: the single weight of an equivalent plain layer."""
        return self.weight(), False

    def forward(self, x: torch.Tensor, op: LayerOp) -> torch.Tensor:
        return op(x, self.weight())


def sum_terms(products: torch.Tensor) -> torch.Tensor:
    """``products.sum(3)`` for ``(groups, out_g, in_g, n, kernel)`` products, computed as one
    matrix-vector product ``(rows, n) @ 1``. The n terms of a weight are adjacent in memory; a
    plain sum over so short an inner run is not vectorised (784 → 120, n = 5 on one CPU thread:
    344 µs forward, 894 µs with its backward, against 93 / 500 µs here), and an einsum becomes
    one tiny matrix product per input channel (1.3–1.6× slower still). Under autocast the
    product runs in the autocast dtype, like the layer's own GEMM that consumes its result."""
    n = products.shape[3]
    rows = products.transpose(3, 4).reshape(-1, n)  # a view for Linear layers (kernel 1)
    return (rows @ products.new_ones(n)).view(*products.shape[:3], -1)


@STRUCTURES.register("subsetsum")
class SubsetSum(Structure):
    """Pensia et al. (2020), Figure 1c: each target weight w_ij is replaced by ``pairs`` = n
    two-layer paths, ``y_i = Σ_{j,t} ṽ_ijt φ(ũ_jt x_j)`` with both coefficient layers masked.
    (The figure, like Lemma 1, draws 2n: n pairs (a_t, b_t) for σ(wx) and n (c_t, d_t) for
    −σ(−wx); here the signs of the n random ũ_jt split one set of n, as the authors' code
    does, whose ``redundancy=5`` is Figure 2's "5 (a_i, b_i) coefficient pairs per weight".)

    * ``u`` — first layer; ``shared=True``: shape ``(in_channels, n)``, one hidden unit (j, t)
      per input channel and pair, shared by all outputs (and kernel positions), as in the
      paper's layer construction; ``shared=False``: ``u`` has ``v``'s shape (literal Fig. 1c).
    * ``v`` — second layer, shape ``(out, in_per_group, n, *kernel)``; its Kaiming init (and
      score init) scales with the ``n·in·kernel`` hidden units an output sums, or with the
      target's ``in·kernel`` when ``fan_in="target"`` (:data:`FAN_INS`, the authors' code).

    Computed through the collapse identity ``relu(a x) = relu(a) relu(x) + relu(-a) relu(-x)``
    (``a x`` is positive exactly where ``a`` and ``x`` share their sign): with φ = ReLU,
    ``y = P relu(x) + N relu(-x)`` where ``P_ij = Σ_t ṽ_ijt relu(ũ_jt)``,
    ``N_ij = Σ_t ṽ_ijt relu(-ũ_jt)``, i.e. one op on ``[relu(x), relu(-x)]`` with weight
    ``[P, N]``; with φ = identity, ``W_ij = Σ_t ṽ_ijt ũ_jt``.
    Exact in value and gradient; costs one O(out·in·n·kernel) reduction per step, independent
    of the batch, instead of a batch × out × in × n intermediate.
    """

    def __init__(self, target: TargetShape, *, pairs: int = 5, activation: str = "relu",
                 shared: bool = True, fan_in: str = "hidden", **common):
        super().__init__(target, pairs=pairs, activation=activation, shared=shared,
                         fan_in=fan_in, **common)
        self.pairs, self.activation, self.shared = pairs, activation, shared
        self.terms = self.v.weight.shape[2]

    @classmethod
    def terms_per_weight(cls, pairs: int, activation: str) -> int:
        return pairs

    @classmethod
    def specs(cls, target, *, pairs=5, activation="relu", shared=True, fan_in="hidden",
              **unused):
        check_positive_int("pairs", pairs)
        check_activation(activation)
        if not isinstance(shared, bool):
            raise ValueError(f"shared must be True or False, got {shared!r}")
        check_fan_in(fan_in)
        terms = cls.terms_per_weight(pairs, activation)
        out, in_g, kernel = target.out_features, target.in_per_group, target.kernel_size
        v_shape = (out, in_g, terms, *kernel)
        u_shape = (target.groups * in_g, terms) if shared else v_shape
        # Each hidden unit sees one input; each output sums in_g * terms * kernel hidden units
        # (fan_in="target": the target weight's in_g * kernel, FAN_INS).
        v_fan_in = in_g * math.prod(kernel) * (terms if fan_in == "hidden" else 1)
        return {"u": TensorSpec(u_shape, 1), "v": TensorSpec(v_shape, v_fan_in)}

    def effective_weight(self) -> tuple[torch.Tensor, bool]:
        """``([P, N], True)`` for ReLU (per group, P then N along the input channels),
        ``(W, False)`` for identity; shaped like the target weight (input channels doubled)."""
        t, n = self.target, self.terms
        g, out_g, in_g = t.groups, t.out_features // t.groups, t.in_per_group
        v = self.v().reshape(g, out_g, in_g, n, -1)  # (groups, out_g, in_g, n, kernel)
        # shared: one coefficient per (input, term), broadcast over outputs and kernel taps
        u = self.u().reshape((g, 1, in_g, n, 1) if self.shared else v.shape)
        signs = [F.relu(u), F.relu(-u)] if self.activation == "relu" else [u]
        w = torch.stack([sum_terms(v * s) for s in signs], dim=2)  # (groups, out_g, signs, in_g, k)
        return w.reshape(t.out_features, len(signs) * in_g, *t.kernel_size), \
            self.activation == "relu"

    #: Input rows (batch, for a Linear layer) up to which a shared Linear layer computes its
    #: hidden units literally rather than through the collapse, by :meth:`literal_kind`; both
    #: are exact. The literal GEMM (rows × out × in·n) grows with the rows, the collapse's
    #: reduction over ṽ (out × in × n, twice for ReLU) does not: below the crossover the
    #: literal layer costs what the wide dense layer with the same maskable count costs.
    #: Crossovers measured with the target step of ``benchmarks/bench_layers.py`` (784 → 500,
    #: n = 5, one CPU thread, literal vs collapse): identity literal/collapse 0.96 / 0.99 / 1.25
    #: at 16 / 32 / 64 rows, ReLU 0.92 / 1.26 at 64 / 128; ReLU with an input that needs no
    #: gradient (:class:`_InputReluLiteral`, a backward without ∂L/∂h) 0.74 / 1.15 at 256 / 512.
    literal_rows = {"identity": 32, "relu": 64, "relu, input without gradient": 256}

    def literal_kind(self, x: torch.Tensor) -> str:
        """The key of :attr:`literal_rows` for input ``x``. Inside ``torch.func.vmap`` a batched
        input says ``requires_grad=False`` whether or not a gradient flows to it, so only an
        input that is not torch.func's wrapper counts as one without gradient (under
        ``torch.compile``, which cannot trace that check, the input's own flag decides)."""
        if self.activation == "relu" and not x.requires_grad and (
                torch.compiler.is_compiling()
                or not torch._C._functorch.is_functorch_wrapped_tensor(x)):
            return "relu, input without gradient"
        return self.activation

    def forward(self, x: torch.Tensor, op: LayerOp) -> torch.Tensor:
        t = self.target
        # (an input of another dtype than the layer's, integer or floating, goes to the op,
        # which refuses it as nn.Linear does, unless autocast casts both, as it does all but
        # float64: the literal product with ũ would promote it and return what an input of the
        # layer's dtype gives)
        dtypes = (x.dtype, self.v.weight.dtype)
        if self.shared and not t.kernel_size and x.is_floating_point() and (
                dtypes[0] == dtypes[1] or autocast_on(x)
                and torch.float64 not in dtypes):
            kind = self.literal_kind(x)
            if x.numel() <= self.literal_rows[kind] * t.in_per_group:
                return self.literal_forward(x, op, kind)
        weight, doubles_input = self.effective_weight()
        if doubles_input:
            x = split_signs(x, t.groups, t.channel_dim)
        return op(x, weight)

    def literal_forward(self, x: torch.Tensor, op: LayerOp, kind: str) -> torch.Tensor:
        """Figure 1c as drawn, for a shared Linear layer: the hidden units ``φ(ũ_jt x_j)``
        (rows × in × n of them), then one linear map with ṽ flattened to (out, in·n)."""
        if kind == "relu, input without gradient":
            return _InputReluLiteral.apply(x, self.u(), self.v().flatten(1), op.bias)[0]
        return op(hidden_units(x, self.u(), self.activation), self.v().flatten(1))


def hidden_units(x: torch.Tensor, u: torch.Tensor, activation: str) -> torch.Tensor:
    """A shared Linear subset-sum layer's hidden units ``φ(ũ_jt x_j)``, flattened to in·n."""
    hidden = x.unsqueeze(-1) * u
    if activation == "relu":
        hidden = F.relu(hidden)
    return hidden.flatten(-2)


class _InputReluLiteral(torch.autograd.Function):
    """The literal shared ReLU layer, ``y = h ṽᵀ + b`` with ``h_bc = relu(ũ_c x_bj)`` for hidden
    unit c = (j, t), when the input needs no gradient (the first trainable layer). Autograd
    would get ``∂L/∂ũ`` through ``∂L/∂h = G ṽ`` (G = ∂L/∂y): a rows × out × in·n GEMM that
    the wide dense layer does not have (a fifth of a ReLU step at 64 rows). Since
    ``relu(a x) = a · x · 1[a x > 0]``, for ũ_c ≠ 0 ``x_bj 1[ũ_c x_bj > 0] = h_bc / ũ_c``, so

        ∂L/∂ũ_c = Σ_b (G ṽ)_bc x_bj 1[ũ_c x_bj > 0] = (1/ũ_c) Σ_i ṽ_ic (Gᵀ h)_ic,

    and ``Gᵀ h`` is ``∂L/∂ṽ``, computed anyway: one pass over ṽ and ∂L/∂ṽ replaces the GEMM.
    A masked ũ_c = 0 makes its unit 0 for every input, where ReLU's derivative is 0 (PyTorch's
    convention, what autograd gives): its gradient is 0. (With φ = identity a masked ũ_c still
    receives ``Σ_b x_bj (G ṽ)_bc``, so this shortcut is ReLU's alone.) Under autocast the
    backward's GEMM runs in the dtype of the output's gradient, as the forward's did."""

    generate_vmap_rule = True  # torch.func.vmap / grad / jacrev run it too

    @staticmethod
    def forward(x, u, v, bias):
        """``(y, h)``: the hidden units are an output so that the backward may keep them."""
        hidden = hidden_units(x, u, "relu")
        y = F.linear(hidden, v, bias)
        # (of rows of tokens with a bias, F.linear's output is a view, which a Function may not
        # return to an in-place op that follows it, such as nn.ReLU(inplace=True))
        return (y if y._base is None else y.clone()), hidden

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, u, v, bias = inputs
        ctx.save_for_backward(u, v, output[1])
        ctx.mark_non_differentiable(output[1])
        ctx.bias_dtype = None if bias is None else bias.dtype

    @staticmethod
    def backward(ctx, grad, _):
        u, v, hidden = ctx.saved_tensors
        grad = grad.reshape(-1, grad.shape[-1])
        grad_v = (grad.T @ hidden.reshape(-1, hidden.shape[-1]).to(grad.dtype)).to(v.dtype)
        grad_u = None
        if ctx.needs_input_grad[1]:
            # Σ_i ṽ_ic (∂L/∂ṽ)_ic over row blocks of ~1 MiB, whose product stays in cache
            # (one product of the whole (out, in·n) pair: ~2 ms more of a 22 ms step, 784 → 500)
            rows = max(1, 2**18 // v.shape[1])
            dots = sum((a * b).sum(0) for a, b in zip(v.split(rows), grad_v.split(rows)))
            grad_u = torch.where(u != 0, dots.view_as(u) / u, 0)
        grad_bias = grad.sum(0).to(ctx.bias_dtype) if ctx.needs_input_grad[3] else None
        return None, grad_u, grad_v if ctx.needs_input_grad[2] else None, grad_bias


@STRUCTURES.register("fixedsize")
class FixedSize(SubsetSum):
    """Natale et al., *On the Sparsity of the SLTH*: the subset-sum structure where every target
    weight keeps **exactly k** of its terms (Random Fixed-Size Subset Sum, Theorem 2 /
    Corollary 1), so every weight of the ticket has the same size. Density per group
    γ′ = k / n (Natale et al.'s γ′; their ticket density is γ = ργ′, Theorem 3); the layer's
    ``sparsity`` sets ``k = round((1 − sparsity) · n)`` (≥ 1, validated),
    so ``sparsity = 1 − k/n`` asks for a given k.

    * ``v`` (second layer) carries the group-wise top-k over the n scores of each group
      (a ``MaskedWeight`` with ``group_dim``; still straight-through, no sort).
    * ReLU: as in the proof of Natale et al.'s Theorem 3 (App. F, ``M_{2i-1} ∈ R^{2 d n* × d}``)
      each target weight has ``2 · pairs`` terms: ``pairs`` = n* for the positive part of the
      input and ``pairs`` for the negative part, and *each sign half keeps exactly k*. The
      first ``pairs`` hidden units of every input get ``u > 0`` (they see relu(x)) and the last
      ``pairs`` get ``u < 0`` (relu(−x)): ``u`` is drawn from ``init`` and its signs fixed.
      Identity: ``pairs`` terms per weight, one group of n.
    * ``u`` (first layer) is frozen and **not maskable**: in Natale et al.'s construction the
      input-layer edges kept are exactly those reaching a hidden unit with a kept outgoing edge
      (App. F, "Lemma 3" step), i.e. u's mask is implied by v's; it counts as ``frozen``.
    """

    def __init__(self, target: TargetShape, **options):
        super().__init__(target, **options)
        if self.activation == "relu":
            sign_dim = 1 if self.shared else 2
            signs = torch.ones(self.terms)
            signs[self.pairs:] = -1
            shape = [1] * self.u.weight.ndim
            shape[sign_dim] = self.terms
            with torch.no_grad():
                self.u.weight.copy_(self.u.weight.abs() * signs.view(shape))

    @classmethod
    def terms_per_weight(cls, pairs: int, activation: str) -> int:
        return 2 * pairs if activation == "relu" else pairs

    @classmethod
    def specs(cls, target, *, pairs=5, activation="relu", shared=True, fan_in="hidden",
              **unused):
        specs = super().specs(target, pairs=pairs, activation=activation, shared=shared,
                              fan_in=fan_in)
        return {"u": replace(specs["u"], maskable=False),
                "v": replace(specs["v"], group_dim=2, group_size=pairs)}


class TwoLayer(Structure):
    """``map(c_in → H) → ReLU → 1×1 map(H → c_out)``: the target layer's own linear/conv map
    (its geometry, no bias) into H hidden units or channels, ReLU, then a pointwise map with
    ``stage2_groups`` groups and the layer's bias, applied once at the end. Depth doubles.
    Tensors: ``u`` of shape ``(H, in_per_group, *kernel)``, ``v`` of shape
    ``(out, H / stage2_groups)``, both masked layer-wise.

    There is no single equivalent weight (ReLU between the stages), so these structures have
    no ``effective_weight``: exporting a ticket to plain layers needs it and must refuse them.
    """

    default_init = "uniform"

    def __init__(self, target: TargetShape, *, pairs: int = 5, hidden: int | None = None,
                 **common):
        super().__init__(target, pairs=pairs, hidden=hidden, **common)
        self.hidden, self.stage2_groups = self.hidden_and_groups(target, pairs, hidden)

    @classmethod
    def hidden_and_groups(cls, target, pairs, hidden) -> tuple[int, int]:
        raise NotImplementedError

    @classmethod
    def specs(cls, target, *, pairs=5, hidden=None, **unused):
        check_positive_int("pairs", pairs)
        width, groups = cls.hidden_and_groups(target, pairs, hidden)
        return {"u": TensorSpec((width, *target.weight_shape[1:]), target.fan_in),
                "v": TensorSpec((target.out_features, width // groups), width // groups)}

    def forward(self, x: torch.Tensor, op: LayerOp) -> torch.Tensor:
        h = F.relu(op.map(x, self.u()))
        return pointwise(h, self.v(), self.stage2_groups, self.target.channel_dim, op.bias)


@STRUCTURES.register("malach")
class Malach(TwoLayer):
    """Malach et al. (2020), Theorem 2.1: a target layer becomes ``Linear(d_in → H) → ReLU →
    Linear(H → d_out)`` with U[−1, 1] weights and no block structure (each target weight is
    found as two hidden neurons, one per sign, Lemmas 2.4–2.5). For a conv target the first
    map is the layer's own conv into H channels and the second a 1×1 conv (grouped like the
    layer). ``hidden`` = H; by default ``pairs · in_channels`` (``pairs · d_in`` for Linear),
    the hidden width of Pensia et al.'s Theorem 1 network with n = ``pairs``.
    """

    @classmethod
    def hidden_and_groups(cls, target, pairs, hidden):
        width = pairs * target.groups * target.in_per_group if hidden is None else hidden
        check_positive_int("hidden", width)
        if width % target.groups:
            raise ValueError(f"hidden={width} must be a multiple of groups={target.groups}")
        return width, target.groups


@STRUCTURES.register("orseau")
class Orseau(Malach):
    """Orseau et al. (2020), Theorem 3: Malach's two-layer form with weights drawn from the
    hyperbolic distribution (density ∝ 1/|w| on ±[α, β]); α, β default to Theorem 3's range
    (``distributions.orseau_range``), set them through ``init_kwargs``. Each target weight is
    a golden-ratio sum of at most k′ hidden neurons (Corollary 10)."""

    default_init = "hyperbolic"


@STRUCTURES.register("dacunha")
class DaCunha(TwoLayer):
    """da Cunha et al. (2022), Lemma 2 / Theorem 1: a target kernel ``K ∈ R^{c1×c0×d×d}``
    becomes ``Conv2d(c0 → c1·n′, d) → ReLU → Conv2d(c1·n′ → c1, 1, groups=c1)`` with U[−1, 1]
    weights: output channel ℓ owns its own n′ = ``pairs`` intermediate channels (the
    block-diagonal mask T of Sec. 4.3). For Linear the analogous form: ``Linear(d_in → d_out·n′)``,
    then output i sums its own n′ hidden units. The theorem assumes **non-negative inputs**
    (X ∈ [0, 1]); on signed inputs the structure still runs but carries no guarantee.
    """

    @classmethod
    def specs(cls, target, *, pairs=5, **unused):  # (no hidden: its width is out · pairs)
        return super().specs(target, pairs=pairs)

    @classmethod
    def hidden_and_groups(cls, target, pairs, hidden):
        return target.out_features * pairs, target.out_features
