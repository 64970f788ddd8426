"""How wide must the random network be? The widths and parameter counts each strong-lottery-
ticket theorem requires for a target fully connected ReLU network, and an empirical random-
subset-sum study.

    python -m lotterynet.theory --arch fc2 --epsilon 0.01 [--delta 0.01] [--density 0.1]
    python -m lotterynet.theory --widths 784,500,10 --epsilon 0.01
    python -m lotterynet.theory study --epsilon 0.05 --n-max 20 --out results/rss_study.png

Notation: target widths ``n_0, …, n_ℓ`` (``n_0`` = input), ``ℓ`` layers, ``N* = Σ n_{i-1} n_i``
target weights, ``n_max = max_i n_i``. Every bound returns, per target layer i, the number of
hidden units the random network puts between ``n_{i-1}`` and ``n_i`` (the layer is replaced by
``n_{i-1} → M_i → n_i``) and that pair of layers' weight count ``M_i (n_{i-1} + n_i)`` as a
dense random network (Orseau et al., Corollary 7's way of counting). The constants the papers
leave open (``C``, ``c_amp``, the log base) are arguments; defaults are documented per bound.
"""

from __future__ import annotations

if __name__ == "__main__":  # (Ctrl-C and SIGTERM in the imports: one line, as later)
    from lotterynet.process_lifetime import hold_stops

    hold_stops()

import argparse
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpointing import savefig_atomic
from .distributions import check_positive
from .errors import (
    ConfigError,
    Interrupted,
    OneLineErrorParser,
    encodable_output,
    flag_name,
    message,
    plural,
    stopped,
    unread_option,
)
from .path_checks import check_output_dir
from .process_lifetime import stopping_on_sigterm
from .registry import Registry

ARCHITECTURES: Registry = Registry("target architecture")
for _name, _widths in {"fc2": (784, 500, 10), "fc4": (784, 500, 500, 500, 10),
                       "lenet5": (400, 120, 84, 10)}.items():  # lenet5: its FC part
    ARCHITECTURES.register(_name)(_widths)

BOUNDS: Registry = Registry("width bound")

#: ε, δ and the density are at least this, the constants (C, c_amp, the spectral norm) below
#: ``LARGEST``: beyond, the widths overflow a float (``density=1e-306``, ``C=1e308``) or are
#: absurd (``density=1e-300``: 10³⁰⁷ hidden units).
SMALLEST, LARGEST = 1e-12, 1e6


@dataclass(frozen=True)
class LayerBound:
    """One target layer ``n_{i-1} → n_i`` replaced by ``n_{i-1} → hidden → n_i``; for a
    convolution (``kernel`` = d > 1, widths are channels) the first of the two is d × d and the
    second 1 × 1 (da Cunha et al. 2022, Theorem 1)."""

    fan_in: int
    fan_out: int
    hidden: int
    kernel: int = 1

    @property
    def params(self) -> int:
        return self.hidden * (self.kernel**2 * self.fan_in + self.fan_out)


def check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    if len(widths) < 2 or any(isinstance(w, bool) or not isinstance(w, int) or w < 1
                              for w in widths):
        raise ValueError(f"widths must be at least two positive integers, got {widths!r}")
    return tuple(widths)


def check_probability(name: str, value: float) -> float:
    if not SMALLEST <= value < 1.0:
        raise ValueError(f"{name} must be in [{SMALLEST:g}, 1), got {value!r}")
    return float(value)


def check_constant(name: str, value: float) -> float:
    if not 0.0 < value < LARGEST:
        raise ValueError(f"{name} must be a positive number below {LARGEST:g}, got {value!r}")
    return float(value)


def resolve_widths(arch: str | None = None, widths: Sequence[int] | None = None,
                   name: Callable[[str], str] = str):
    """Widths from an architecture name (``ARCHITECTURES``) or given explicitly. ``name``
    names an argument in the error: as Python's (``arch``), or as a flag on a command's line
    (:func:`~lotterynet.errors.flag_name`: ``--arch``)."""
    if (arch is None) == (widths is None):
        raise ValueError(f"give exactly one of {name('arch')} or {name('widths')}, got "
                         f"{name('arch')}={arch!r}, {name('widths')}={widths!r}; valid archs: "
                         f"{', '.join(ARCHITECTURES.names())}")
    return ARCHITECTURES.get(arch) if widths is None else check_widths(widths)


def _layers(widths, hidden_of: Callable[[int, int], int], kernel: int = 1) -> list[LayerBound]:
    return [LayerBound(a, b, hidden_of(a, b), kernel) for a, b in zip(widths[:-1], widths[1:])]


def target_weights(widths, kernel: int = 1) -> int:
    """``N* = d² Σ n_{i-1} n_i``: d × d kernels between channels (d = 1: dense layers)."""
    return kernel**2 * sum(a * b for a, b in zip(widths[:-1], widths[1:]))


# --- Pensia et al. 2020 ---------------------------------------------------------------------

def pensia_terms(epsilon: float, C: float = 3.0) -> int:
    """Coefficients per weight of Pensia et al.'s Experiment 1, ``n = C log2(1/ε)`` with the
    log rounded up: ``C ⌈log2(1/ε)⌉`` — this is how the paper's ``n ≈ 21`` arises for
    ε = 0.01, C = 3 (3 · 7; the unrounded 3 · log2(100) would be 19.9)."""
    return math.ceil(check_constant("C", C) *
                     math.ceil(math.log2(1 / check_probability("epsilon", epsilon))))


@BOUNDS.register("pensia")
def pensia(widths, epsilon, delta, *, C: float = 3.0, **unused) -> list[LayerBound]:
    """Pensia et al. (2020), Theorem 1: ``M_{2i-1}`` has ``C n_{i-1} log(n_{i-1} n_i ℓ /
    min{ε, δ})`` rows, i.e. ``n_i^* = C ⌈log2(n_{i-1} n_i ℓ / min{ε, δ})⌉`` hidden units per
    input neuron (Lemma 3, Eq. 11). C is a universal constant the theorem leaves open; the
    default 3 and the base-2 log are the paper's Experiment 1 choice (see ``pensia_terms``)."""
    check_constant("C", C)
    ell, m = len(widths) - 1, min(epsilon, delta)
    return _layers(widths, lambda a, b: a * math.ceil(C * math.ceil(math.log2(a * b * ell / m))))


# --- Malach et al. 2020 ---------------------------------------------------------------------

@BOUNDS.register("malach")
def malach(widths, epsilon, delta, **unused) -> list[LayerBound]:
    """Malach et al. (2020), Theorem 2.1 / A.6, in the explicit form Orseau et al. (2020,
    Remark 4) give it: ``⌈64 ℓ² n_max³ log(2N/δ) / ε²⌉`` sampled neurons per target weight,
    under Malach's assumptions (``‖W_i‖_2 ≤ 1``, ``w_max ≤ 1/√n_max``, U[−1, 1] weights).
    The transcription leaves N and the log open; we take N = N* (target weights) and the
    natural log, which gives 1.08·10¹⁵ for Orseau's Example 5 ("≤ 2·10¹⁵")."""
    ell, n_max, n_star = len(widths) - 1, max(widths), target_weights(widths)
    per_weight = math.ceil(64 * ell**2 * n_max**3 * math.log(2 * n_star / delta) / epsilon**2)
    return _layers(widths, lambda a, b: a * b * per_weight)


# --- Orseau et al. 2020 ---------------------------------------------------------------------

def orseau_k(widths, epsilon, *, w_max: float = 1.0, f_max: float = 1.0,
             spectral_norm: float = 1.0) -> float:
    """``k′ = log_{3/2}(3 w_max / ε_w)`` with ``ε_w = ε / (e ℓ n_max^{3/2} F_max
    Π_i max{1, ‖Ŵ_i‖_2})`` (Orseau et al. 2020, Theorem 3 and Lemma 1, λ = 1 for ReLU).
    ``spectral_norm`` bounds every ``‖Ŵ_i‖_2``: 1 as in Remark 4 / Example 5, ``w_max n_max``
    for the worst case of Example 2 / Example 6."""
    for name, value in (("w_max", w_max), ("f_max", f_max), ("spectral_norm", spectral_norm)):
        check_positive(name, value)  # (k′ takes their logs: no overflow to guard against)
    ell, n_max = len(widths) - 1, max(widths)
    # log(1 / ε_w), summed term by term: Π_i max{1, ‖Ŵ_i‖_2} overflows a float for deep targets
    log_inv_eps_w = (1 + math.log(ell) + 1.5 * math.log(n_max) + math.log(f_max)
                     + ell * math.log(max(1.0, spectral_norm)) - math.log(epsilon))
    return (math.log(3 * w_max) + log_inv_eps_w) / math.log(1.5)


@BOUNDS.register("orseau")
def orseau(widths, epsilon, delta, *, w_max=1.0, f_max=1.0, spectral_norm=1.0,
           **unused) -> list[LayerBound]:
    """Orseau et al. (2020), Theorem 3 (batch sampling):
    ``M_i = ⌈16 k′ (n_i n_{i-1} + ln(2 ℓ k′ / δ))⌉``, hyperbolic weights on [α, β]."""
    ell = len(widths) - 1
    k = orseau_k(widths, epsilon, w_max=w_max, f_max=f_max, spectral_norm=spectral_norm)
    return _layers(widths, lambda a, b: math.ceil(16 * k * (a * b + math.log(2 * ell * k / delta))))


@BOUNDS.register("orseau-recycling")
def orseau_recycling(widths, epsilon, delta, *, w_max=1.0, f_max=1.0, spectral_norm=1.0,
                     **unused) -> list[LayerBound]:
    """Orseau et al. (2020), Theorem 30 (sample recycling, App. D):
    ``M_i = ⌈2 k′ (n_i n_{i-1} + 4 max{n_i, n_{i-1}} ln(2 k′ N* / δ))⌉``. Theorems 3 and 30
    hold simultaneously, so the smaller of the two is a valid width."""
    k = orseau_k(widths, epsilon, w_max=w_max, f_max=f_max, spectral_norm=spectral_norm)
    log_term = math.log(2 * k * target_weights(widths) / delta)
    return _layers(widths, lambda a, b: math.ceil(2 * k * (a * b + 4 * max(a, b) * log_term)))


# --- da Cunha et al. 2022 -------------------------------------------------------------------

@BOUNDS.register("dacunha")
def dacunha(widths, epsilon, delta, *, C: float = 3.0, kernel: int = 1,
            **unused) -> list[LayerBound]:
    """da Cunha et al. (2022), Theorem 1: ``L_{2i-1}`` has ``n = C c_i log(c_{i-1} c_i d_i² ℓ /
    min{ε, δ})`` output channels (n′ = n / c_i per output channel, Lemma 2), ``L_{2i}`` is
    ``1×1×n×c_i``. Widths are channels; ``kernel`` = d_i (1 for dense layers). C and the log
    base are left open: C = 3 and log2, as for Pensia et al. ``params`` counts the random
    ``L_{2i-1}`` and ``L_{2i}`` whole, ``d²·c_{i-1}·n + n·c_i`` (the block-diagonal mask on
    ``L_{2i}`` is fixed by the proof of Lemma 2, Sec. 4.3, not part of the network)."""
    check_constant("C", C)
    if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1:
        raise ValueError(f"kernel must be a positive integer, got {kernel!r}")
    ell, m = len(widths) - 1, min(epsilon, delta)
    return _layers(widths, lambda a, b: b * math.ceil(
        C * math.ceil(math.log2(a * b * kernel**2 * ell / m))), kernel)


# --- Natale et al. --------------------------------------------------------------------------

def binary_entropy(p: float) -> float:
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def natale_terms(a: int, b: int, ell: int, epsilon: float, gamma_: float,
                 c_amp: float = 1.0) -> int:
    """Smallest n from which on ``n ≥ c_amp log2²(2 ℓ a b γ′ n / ε) / H2(γ′)`` — Natale et
    al., Theorem 3, Eq. (28): its largest fixed point, by fixed-point iteration from above
    (the right side grows like log² n, so the iterates fall to that point, each one meeting the
    inequality). From below the iteration stopped at a spurious small root where the log's
    argument is under 2 (ℓ = 3, a = b = 1, ε = 0.99, γ′ = 1/4: n = 2, whose right side is
    3.2; the inequality holds from n = 47 on). ``0 < γ′ ≤ 1/2``: the proof prunes by
    Corollary 1, which needs ``k = γ′n ≤ n/2``."""
    if not 0.0 < gamma_ <= 0.5:
        raise ValueError(f"γ′ must be in (0, 1/2] (Natale et al.'s Corollary 1: k ≤ n/2), "
                         f"got {gamma_!r}")
    base = math.log2(2 * ell * a * b * gamma_ / epsilon)  # + log2 n: no overflow at n = 1e300
    n = 1e300
    for _ in range(200):
        nxt = c_amp * max(1.0, base + math.log2(n)) ** 2 / binary_entropy(gamma_)
        if abs(nxt - n) < 1e-9:
            break
        n = nxt
    return math.ceil(n)


@BOUNDS.register("natale")
def natale(widths, epsilon, delta, *, density: float = 0.1, c_amp: float = 1.0,
           **unused) -> list[LayerBound]:
    """Natale et al., Theorem 3 (fixed-size subset sum): for a ticket of density γ, with
    ``ρ = max_i max{n_i/n_{i-1}, n_{i-1}/n_i}`` and ``γ′ = γ/ρ``, layer i gets
    ``2 n_{i-1} n_i^*`` hidden units (``M_{2i-1} ∈ R^{2 n_{i-1} n_i^* × n_{i-1}}``), n_i^* from
    Eq. (28) with ``min{ε, δ}`` in place of ε (the paper's App. F sets them equal), and each
    target weight keeps ``k_i = γ′ n_i^*`` terms per sign half (``γ′ ≤ 1/2``:
    :func:`natale_terms`). c_amp is a constant the paper does not quantify (default 1)."""
    check_probability("density", density)
    check_constant("c_amp", c_amp)
    ell, m = len(widths) - 1, min(epsilon, delta)
    rho = max(max(a / b, b / a) for a, b in zip(widths[:-1], widths[1:]))
    gamma_ = density / rho
    if gamma_ > 0.5:
        raise ValueError(f"density {density!r} keeps γ′ = density/ρ = {gamma_:.4g} of each "
                         f"subset-sum block (ρ = {rho:.4g}); Natale et al.'s Theorem 3 needs "
                         f"γ′ ≤ 1/2 (Corollary 1's k ≤ n/2): give a density of at most "
                         f"{rho / 2:.4g}")
    return _layers(widths, lambda a, b: 2 * a * natale_terms(a, b, ell, m, gamma_, c_amp))


#: The bounds for convolutional layers (``kernel`` = d > 1); the others are for dense layers.
CONV_BOUNDS = ("dacunha",)


def width_table(widths, epsilon: float, delta: float = 0.01, *,
                bounds: Sequence[str] | None = None, kernel: int = 1,
                **constants) -> list[dict]:
    """One row per bound: hidden units per layer, random-network weights, ratio to the target's
    ``N* = d² Σ n_{i-1} n_i`` weights. ``kernel`` = d > 1 makes the widths channels of d × d
    convolutions, which only ``CONV_BOUNDS`` count (the default bounds then); each row names
    the ``kernel`` it was counted with (:func:`format_table` reads its target from it)."""
    widths = check_widths(tuple(widths))
    check_probability("epsilon", epsilon)
    check_probability("delta", delta)
    known = sorted({p.name for name in BOUNDS.names()
                    for p in inspect.signature(BOUNDS.get(name)).parameters.values()
                    if p.kind is p.KEYWORD_ONLY} - {"kernel"})
    unknown = [name for name in constants if name not in known]
    if unknown:  # (a bound ignores the constants of the others: a misspelt one was ignored)
        raise ValueError(f"unknown constant {unknown[0]!r}; valid: {', '.join(known)}")
    rows = []
    for name in bounds or (BOUNDS.names() if kernel == 1 else CONV_BOUNDS):
        bound = BOUNDS.get(name)
        if kernel != 1 and name not in CONV_BOUNDS:
            raise ValueError(f"the {name} bound is for dense layers; kernel={kernel!r} is "
                             f"counted by {', '.join(CONV_BOUNDS)} only")
        layers = bound(widths, epsilon, delta, kernel=kernel, **constants)
        params = sum(layer.params for layer in layers)
        rows.append({"bound": name, "hidden": [layer.hidden for layer in layers],
                     "params": params, "ratio": params / target_weights(widths, kernel),
                     "kernel": kernel})
    return rows


def format_table(widths, rows) -> str:
    """``width_table``'s rows as text. The header's target is read with the kernel the rows
    were counted with (their ``kernel``, 1 where a row has none: d × d convolutions between
    channels then have ``d² Σ n_{i-1} n_i`` weights)."""
    kernels = {r.get("kernel", 1) for r in rows}
    if len(kernels) > 1:
        raise ValueError(f"the rows were counted with different kernels {sorted(kernels)}: one "
                         f"table has one target")
    kernel = kernels.pop() if kernels else 1
    shape = f" ({kernel} × {kernel} kernels)" if kernel != 1 else ""
    lines = [f"target {'-'.join(map(str, widths))}{shape}: "
             f"{plural(target_weights(widths, kernel), 'weight')}",
             f"{'bound':<18}{'hidden units per layer':<44}{'params':>12}{'params/N*':>12}"]
    for r in rows:
        hidden = ", ".join(f"{h:.3g}" for h in r["hidden"])
        lines.append(f"{r['bound']:<18}{hidden:<44}{r['params']:>12.3g}{r['ratio']:>12.3g}")
    return "\n".join(lines)


# --- Random subset sum, empirically ---------------------------------------------------------

def subset_sums(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All 2^n subset sums of each row of ``samples`` (trials, n) and their sizes, by doubling.
    Exhaustive, so only for small n (≤ 22); ``lotterynet.subsetsum.solve`` (meet in the
    middle) is the scalable route."""
    sums = torch.zeros(samples.shape[0], 1, dtype=samples.dtype)
    sizes = torch.zeros(1, dtype=torch.long)
    for i in range(samples.shape[1]):
        sums = torch.cat([sums, sums + samples[:, i:i + 1]], dim=1)
        sizes = torch.cat([sizes, sizes + 1])
    return sums, sizes


def covers_grid(sums: torch.Tensor, targets: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Per row of ``sums``: is every target within ε of some sum? (sorted + searchsorted)"""
    s = sums.sort(dim=1).values
    idx = torch.searchsorted(s, targets.expand(s.shape[0], -1).contiguous())
    lo = s.gather(1, (idx - 1).clamp(min=0))
    hi = s.gather(1, idx.clamp(max=s.shape[1] - 1))
    err = torch.minimum((targets - lo).abs(), (hi - targets).abs())
    return (err <= epsilon).all(dim=1)


def rss_study(epsilon: float = 0.05, n_values=range(1, 21), trials: int = 100,
              density: float = 0.5, seed: int = 0, C: float = 3.0) -> dict:
    """P(n i.i.d. U[−1, 1] samples ε-approximate every point of the grid
    ``{−1, −1+ε, …, 1}`` by a subset sum), and the same with subsets of exactly
    ``k = max(1, round(density · n))`` elements (Natale et al.'s fixed-size variant); ``marker_n``
    is Pensia et al.'s ``n = C ⌈log2(1/ε)⌉``."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.linspace(-1, 1, round(2 / epsilon) + 1, dtype=torch.float64)
    result = {"epsilon": epsilon, "density": density, "trials": trials, "n": [], "any": [],
              "fixed": [], "C": C, "marker_n": pensia_terms(epsilon, C)}
    for n in n_values:
        samples = torch.rand(trials, n, generator=generator, dtype=torch.float64) * 2 - 1
        sums, sizes = subset_sums(samples)
        k = max(1, round(density * n))
        result["n"].append(n)
        result["any"].append(covers_grid(sums, targets, epsilon).double().mean().item())
        result["fixed"].append(covers_grid(sums[:, sizes == k], targets, epsilon)
                               .double().mean().item())
    return result


def plot_study(study: dict, path: str) -> None:
    from matplotlib.figure import Figure  # (not pyplot: the caller's backend stays as it is)

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(study["n"], study["any"], "o-", label="any subset")
    ax.plot(study["n"], study["fixed"], "s--",
            label=f"fixed size k = round({study['density']}·n)")
    ax.axvline(study["marker_n"], color="gray", ls=":",
               label=f"n = {study['C']:g}⌈log2(1/ε)⌉ = {study['marker_n']}")
    ax.set_xlabel("n (samples from U[−1, 1])")
    ax.set_ylabel(f"P(every target in [−1, 1] within ε = {study['epsilon']})")
    ax.set_title(f"Random subset sum, {study['trials']} trials per n")
    ax.legend(loc="lower right")
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=120)


def widths_list(text: str) -> list[int]:
    """``784,500,10`` as a list of integers (argparse names the flag when this fails)."""
    try:
        return [int(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated integers, "
                                         f"e.g. 784,500,10") from None


def check_png_path(parser: argparse.ArgumentParser, out: str) -> None:
    """``--out`` names a PNG file in a folder that is, or can be made, writable: refused before
    the computation, not at the write after it."""
    if Path(out).is_dir():  # (x.png a folder: "must name a .png file" named one)
        parser.error(f"--out {out!r} is a folder; it must name a .png file, e.g. "
                     f"{str(Path(out) / 'rss_study.png')!r}")
    if Path(out).suffix.lower() != ".png":
        parser.error(f"--out {out!r} must name a .png file")
    try:
        check_output_dir(Path(out).parent, "--out")
    except ConfigError as err:
        parser.error(str(err))


#: Each command's defaults, and the options it reads: any other given is refused, not ignored.
DEFAULTS = {"table": {"epsilon": 0.01, "delta": 0.01, "density": 0.1, "C": 3.0, "c_amp": 1.0,
                      "spectral_norm": 1.0},
            "study": {"epsilon": 0.05, "density": 0.5, "C": 3.0, "n_max": 20, "trials": 100,
                      "out": "rss_study.png"}}
READS = {"table": {"arch", "widths", *DEFAULTS["table"]}, "study": set(DEFAULTS["study"])}


def build_parser() -> OneLineErrorParser:
    parser = OneLineErrorParser(prog="python -m lotterynet.theory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="table", choices=["table", "study"],
                        help="table: the widths each theorem asks for (the default); study: "
                        "random subset-sum coverage against n, printed and plotted")
    parser.add_argument("--arch", choices=ARCHITECTURES.names(),
                        help="table: the target network (lenet5: its FC part) (default: fc2, "
                        "unless --widths)")
    parser.add_argument("--widths", type=widths_list, help="table: the target's layer widths "
                        "instead of --arch, e.g. 784,500,10")
    parser.add_argument("--epsilon", type=float, help="approximation error ε: table, of the "
                        "target's outputs (0.01); study, of each point of the grid −1, −1+ε, "
                        "…, 1 (0.05)")
    parser.add_argument("--delta", type=float, help="table: failure probability (0.01)")
    parser.add_argument("--density", type=float,
                        help="table: Natale et al.'s ticket density γ = ργ′ (Theorem 3; each "
                        "subset-sum block keeps γ′ = γ/ρ of its n terms; 0.1); study: the "
                        "fixed-size k/n (0.5)")
    parser.add_argument("--C", type=float, help="Pensia / da Cunha constant (3)")
    parser.add_argument("--c-amp", type=float, help="table: Natale et al.'s c_amp (1)")
    parser.add_argument("--spectral-norm", type=float,
                        help="table: bound on every ‖W_i‖_2 (Orseau et al.; 1)")
    parser.add_argument("--n-max", type=int, help="study: largest n (≤ 22; 20)")
    parser.add_argument("--trials", type=int, help="study: trials per n (100)")
    parser.add_argument("--out", help="study: the figure (rss_study.png)")
    return parser


def check_options(parser: OneLineErrorParser, args: argparse.Namespace) -> None:
    """Fill in the command's defaults (:data:`DEFAULTS`) and refuse in one line
    (``parser.error``, exit code 2) an option it does not read, a value out of range, a study
    too large to hold in memory and an ``--out`` that is no writable .png file
    (:func:`check_png_path`), all before any computation."""
    unread = unread_option(args, READS, args.command)
    if unread:
        parser.error(unread)
    for name, default in DEFAULTS[args.command].items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    unit, constant = f"a number in [{SMALLEST:g}, 1)", f"a positive number below {LARGEST:g}"
    fraction, positive = (lambda v: SMALLEST <= v < 1), (lambda v: 0 < v < LARGEST)
    checks = {"epsilon": (fraction, unit), "delta": (fraction, unit),
              "density": (fraction, unit), "C": (positive, constant),
              "c_amp": (positive, constant), "spectral_norm": (positive, constant),
              "n_max": (lambda v: 1 <= v <= 22, "in [1, 22] (2^n sums are enumerated)"),
              "trials": (lambda v: 1 <= v <= 10_000, "in [1, 10000]"),
              "widths": (lambda v: len(v) >= 2 and all(0 < w <= 10**7 for w in v),
                         "at least two positive layer widths of at most 10,000,000, e.g. "
                         "784,500,10")}
    for name, (valid, what) in checks.items():
        value = getattr(args, name)  # (None: an option this command does not read)
        if value is not None and not valid(value):
            parser.error(f"{flag_name(name)} must be {what}, got {value!r}")
    if args.command == "study":
        entries = args.trials * (2**args.n_max + round(2 / args.epsilon))
        if entries > 2**27:  # sums and grid points per trial, in a few float64 copies
            parser.error(f"--n-max {args.n_max}, --epsilon {args.epsilon} and --trials "
                         f"{args.trials} hold {entries:,} sums and grid points at once (at "
                         f"most {2**27:,}); give fewer --trials, a smaller --n-max or a larger "
                         f"--epsilon")
        check_png_path(parser, args.out)


def run_study(args: argparse.Namespace) -> None:
    """``study``: :func:`rss_study`'s probabilities for n = 1 … ``--n-max``, printed and
    plotted to ``--out``."""
    study = rss_study(args.epsilon, range(1, args.n_max + 1), args.trials,
                      args.density, C=args.C)
    for n, p_any, p_fixed in zip(study["n"], study["any"], study["fixed"]):
        print(f"n={n:>3}  any={p_any:.3f}  fixed-size={p_fixed:.3f}")
    plot_study(study, args.out)
    print(f"wrote {args.out}")


def run_table(parser: OneLineErrorParser, args: argparse.Namespace) -> None:
    """``table``: every bound's widths for ``--arch`` or ``--widths`` (:func:`width_table`);
    widths it cannot take (both flags) or a bound's refusal of its inputs is one line, as bad
    input."""
    try:
        widths = resolve_widths(args.arch or (None if args.widths else "fc2"),
                                args.widths, flag_name)
        rows = width_table(widths, args.epsilon, args.delta, C=args.C,
                           c_amp=args.c_amp, density=args.density,
                           spectral_norm=args.spectral_norm)
    except ValueError as err:
        parser.error(str(err))
    print(format_table(widths, rows))


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_options(parser, args)
    studying = args.command == "study"
    # (Ctrl-C and SIGTERM one line wherever they land, as approximate's: process_lifetime.py; the
    # figure is written atomically, so a stop in its write leaves no part of it)
    then = "run the same command again"
    if studying:
        then = f"--out {args.out!r} is written whole or not at all: {then}"
    try:
        with stopped(then), stopping_on_sigterm(ends_the_process=True):
            if studying:
                run_study(args)
            else:
                run_table(parser, args)
    except Interrupted as stop:
        parser.exit(stop.exit_code, f"{parser.prog}: error: {message(stop)}\n")


if __name__ == "__main__":
    encodable_output()
    main()
