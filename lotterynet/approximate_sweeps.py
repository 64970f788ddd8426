"""What :mod:`lotterynet.approximate` sweeps: each construction of the five papers over its
sizes (:class:`Sweep`, :data:`SWEEPS` by target network), the accuracy goal and the theorems'
ε and δ, and the layers of the two target networks (:data:`NETS`, :data:`LAYERS`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from . import theory
from .constructions import product_network, subset_sum

EPSILON, DELTA = 0.01, 0.01
ACCURACY_SLACK = 0.005  # "within 0.5 points of the target's test accuracy"
NATALE_DENSITY = 0.25
NATALE_K_N = 16  # Natale vs k: k of this many coefficients per weight
NATALE_K_SIZES = (1, 2, 3, 4, 5, 6, 8)  # Natale vs k: the k it sweeps, for either net
LENET5_CONV_PART = 6  # lenet5_dacunha modules 0-5: conv, ReLU, pool, conv, ReLU, pool
DATASET_SEED_OFFSET = {"mnist": 0, "fashion-mnist": 1000}  # independent draws per data set


@dataclass(frozen=True)
class Sweep:
    """One construction swept over its size: ``build(size)`` gives the per-layer builder
    ``(layer, generator) -> (subnet, stats)``. ``size`` is n (coefficients per weight) for the
    subset-sum family, k for Natale at fixed n, m (neurons per input) for Malach / Orseau."""

    name: str
    paper: str
    size: str
    sizes: tuple[int, ...]
    build: object


def _subset_sum(coefficients, size, k=None):
    return partial(subset_sum, n=size, k=k, coefficients=coefficients)


def _natale_vs_n(coefficients, size):
    return _subset_sum(coefficients, size, k=max(1, round(NATALE_DENSITY * size)))


def _natale_vs_k(coefficients, size):
    return _subset_sum(coefficients, NATALE_K_N, k=size)


def _product(rule, size):
    return partial(product_network, m=size, rule=rule, epsilon=EPSILON)


def subset_sum_sweeps(default_range: str, n_sizes, natale_sizes) -> list[Sweep]:
    """The subset-sum family with ``default_range`` as the paper's own coefficient range."""
    return [
        Sweep("pensia", "Pensia et al. 2020, Exp. 1 (Fig. 1b network), U[min, max] of the "
              "layer's weights and biases", "n", n_sizes, partial(_subset_sum, "layer")),
        Sweep("dacunha", "da Cunha et al. 2022, Sec. 3, U[-1, 1]", "n", n_sizes,
              partial(_subset_sum, "unit")),
        Sweep("symmetric", "subset sum, U[-a, a], a the layer's largest |weight or bias|", "n",
              n_sizes, partial(_subset_sum, "symmetric")),
        Sweep("natale", f"Natale et al., fixed size k = {NATALE_DENSITY:g} n, "
              f"{default_range} range", "n", natale_sizes,
              partial(_natale_vs_n, default_range)),
        Sweep("natale_k", f"Natale et al., fixed n = {NATALE_K_N}, k of n, {default_range} "
              "range", "k", NATALE_K_SIZES, partial(_natale_vs_k, default_range)),
    ]


FC2_SWEEPS = subset_sum_sweeps("layer", (3, 5, 7, 9, 11, 13, 15, 17, 19, 21),
                               (4, 8, 12, 16, 20)) + [
    Sweep("malach", "Malach et al. 2020, Lemmas 2.4-2.5, U[-1, 1]", "m", (4, 8, 16, 32, 64),
          partial(_product, "malach")),
    Sweep("orseau", "Orseau et al. 2020, Cor. 10 / Thm. 3, hyperbolic", "m",
          (4, 8, 16, 32, 64), partial(_product, "orseau")),
]
LENET5_SWEEPS = subset_sum_sweeps("unit", (5, 8, 10, 12, 14, 16, 18, 20, 22, 25, 30),
                                  (4, 8, 12, 16, 20, 24))
SWEEPS = {"fc2": FC2_SWEEPS, "lenet5": LENET5_SWEEPS}


NETS = {"fc2": (theory.ARCHITECTURES.get("fc2"), 1), "lenet5": ((1, 6, 16), 5)}
"""(widths, kernel d) of the approximated layers: units (FC2's: :mod:`lotterynet.theory`'s), or
channels of d × d convolutions (LeNet5's conv part, :func:`~lotterynet.archs.lenet5_dacunha`)."""
LAYERS = {net: [(a * d**2, b) for a, b in zip(widths[:-1], widths[1:])]
          for net, (widths, d) in NETS.items()}
"""(fan-in, fan-out) of the approximated layers; a conv layer's fan-in is c_in · d²."""
