"""Sizing of the *wide* baseline (Pensia et al., Experiment 2): the same architecture with its
hidden widths enlarged until its maskable count matches the structured network's.

The architectures' ``width`` family makes every hidden width an integer multiple of ``width``,
so the maskable count of the wide (dense-masked) net is a quadratic ``a·h² + b·h + c``. Three
tiny builds (h = 1, 2, 3) determine it exactly; solving ``a·h² + b·h + c = N`` and taking the
root's neighbour with the nearer count gives the authors' numbers (n = 5: FC2 h = 2508,
FC4 h = 1314, LeNet5 h = 378) without hard-coding any architecture.
"""

from __future__ import annotations

import math

import torch

from .masking import masked_weights
from .models import build_model
from .structures import without_ignored_options


def maskable_count(arch: str, **kwargs) -> int:
    """The maskable weights of ``arch`` built with ``kwargs``, counted on a build on the
    ``meta`` device: nothing is allocated (the structured net a wide run matches may be larger
    than the machine's memory, which the run's own check then says)."""
    with torch.device("meta"):
        return sum(m.weight.numel() for m in masked_weights(build_model(arch, **kwargs)))


def wide_width(arch: str, target: int, **model_kwargs) -> int:
    """The integer ``width`` whose dense-masked ``arch`` has the maskable count nearest to
    ``target`` (the smaller width on a tie). ``model_kwargs`` may be those the matched
    structure was counted with: its own options (``pairs``, ``hidden``...) are left out of the
    dense builds."""
    kwargs = without_ignored_options({**model_kwargs, "structure": "dense", "sparsity": 0.0})
    c1, c2, c3 = (maskable_count(arch, width=h, **kwargs) for h in (1, 2, 3))
    a = (c3 - 2 * c2 + c1) / 2  # finite differences of the quadratic
    b = c2 - c1 - 3 * a
    c = c1 - a - b
    if a == 0:
        h = (target - c) / b
    else:
        h = (-b + math.sqrt(b * b - 4 * a * (c - target))) / (2 * a)
    # the root's neighbours, not round(h): the count is convex in h, so near h = m + 1/2 the
    # rounded width can be the farther one (conv2: up to 300 weights more than needed)
    below = max(1, math.floor(h))
    return min((below, below + 1), key=lambda w: abs(a * w * w + b * w + c - target))
