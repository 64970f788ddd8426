"""What replaces one target layer. A structure owns the masked random tensors and computes the
layer's output through ``op(x, weight)``, the target layer's own linear map (``F.linear`` or
``F.conv*d`` with the layer's stride, padding, dilation, groups and bias).

Shapes follow PyTorch: a target weight is ``(out, in_per_group, *kernel)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .masking import MaskedWeight
from .plain import split_signs
from .registry import Registry

STRUCTURES: Registry = Registry("structure")
ACTIVATIONS = ("relu", "identity")


@dataclass(frozen=True)
class TargetShape:
    """The layer a structure stands in for. ``channel_dim`` is where features live in the
    input (-1 for Linear, 1 for convolutions)."""

    out_features: int
    in_per_group: int
    kernel_size: tuple[int, ...] = ()
    groups: int = 1
    channel_dim: int = -1

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_features, self.in_per_group, *self.kernel_size)

    @property
    def fan_in(self) -> int:
        return self.in_per_group * math.prod(self.kernel_size)


@STRUCTURES.register("dense")
class Dense(nn.Module):
    """The target layer itself, with frozen random weights under an edge-popup mask."""

    def __init__(self, target: TargetShape, *, sparsity, init, init_kwargs=None, generator=None,
                 **unused):
        super().__init__()
        self.target = target
        self.weight = MaskedWeight(target.weight_shape, fan_in=target.fan_in, sparsity=sparsity,
                                   init=init, init_kwargs=init_kwargs, generator=generator)

    def effective_weight(self) -> tuple[torch.Tensor, bool]:
        """``(weight, doubles_input)``: the single weight of an equivalent plain layer."""
        return self.weight(), False

    def forward(self, x: torch.Tensor, op) -> torch.Tensor:
        return op(x, self.weight())


@STRUCTURES.register("subsetsum")
class SubsetSum(nn.Module):
    """Pensia et al. (2020), Figure 1c: each target weight w_ij is replaced by ``pairs`` = n
    two-layer paths, ``y_i = Σ_{j,t} ṽ_ijt φ(ũ_jt x_j)`` with both coefficient layers masked.

    * ``u`` — first layer; ``shared=True``: shape ``(in_channels, n)``, one hidden unit (j, t)
      per input channel and pair, shared by all outputs (and kernel positions), as in the
      paper's layer construction; ``shared=False``: ``u`` has ``v``'s shape (literal Fig. 1c).
    * ``v`` — second layer, shape ``(out, in_per_group, n, *kernel)``.

    Computed through the collapse identity ``relu(a x) = relu(a) relu(x) + relu(-a) relu(-x)``
    (DESIGN.md): with φ = ReLU, ``y = P relu(x) + N relu(-x)`` where
    ``P_ij = Σ_t ṽ_ijt relu(ũ_jt)``, ``N_ij = Σ_t ṽ_ijt relu(-ũ_jt)``, i.e. one op on
    ``[relu(x), relu(-x)]`` with weight ``[P, N]``; with φ = identity, ``W_ij = Σ_t ṽ_ijt ũ_jt``.
    Exact in value and gradient; costs one O(out·in·n·kernel) reduction per step, independent
    of the batch, instead of a batch × out × in × n intermediate.
    """

    def __init__(self, target: TargetShape, *, sparsity, init, init_kwargs=None, generator=None,
                 pairs: int = 5, activation: str = "relu", shared: bool = True, **unused):
        super().__init__()
        if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
            raise ValueError(f"pairs must be a positive integer, got {pairs!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; valid choices: {', '.join(ACTIVATIONS)}"
            )
        self.target, self.pairs, self.activation, self.shared = target, pairs, activation, shared
        out, in_g, kernel = target.out_features, target.in_per_group, target.kernel_size
        v_shape = (out, in_g, pairs, *kernel)
        u_shape = (target.groups * in_g, pairs) if shared else v_shape
        common = dict(sparsity=sparsity, init=init, init_kwargs=init_kwargs, generator=generator)
        # Each hidden unit sees one input; each output sums in_g * n * kernel hidden units.
        self.u = MaskedWeight(u_shape, fan_in=1, **common)
        self.v = MaskedWeight(v_shape, fan_in=in_g * pairs * math.prod(kernel), **common)

    def effective_weight(self) -> tuple[torch.Tensor, bool]:
        """``([P, N], True)`` for ReLU (per group, P then N along the input channels),
        ``(W, False)`` for identity; shaped like the target weight (input channels doubled)."""
        t, n = self.target, self.pairs
        g, out_g, in_g = t.groups, t.out_features // t.groups, t.in_per_group
        v = self.v().reshape(g, out_g, in_g, n, -1)  # (groups, out_g, in_g, n, kernel)
        u = self.u()
        signs = [F.relu(u), F.relu(-u)] if self.activation == "relu" else [u]
        if self.shared:
            u = torch.stack(signs).reshape(len(signs), g, in_g, n)
            w = torch.einsum("goink,sgin->gosik", v, u)
        else:
            u = torch.stack(signs).reshape(len(signs), g, out_g, in_g, n, -1)
            w = torch.einsum("goink,sgoink->gosik", v, u)
        w = w.reshape(t.out_features, len(signs) * in_g, *t.kernel_size)
        return w, self.activation == "relu"

    def forward(self, x: torch.Tensor, op) -> torch.Tensor:
        weight, doubles_input = self.effective_weight()
        if doubles_input:
            x = split_signs(x, self.target.groups, self.target.channel_dim)
        return op(x, weight)
