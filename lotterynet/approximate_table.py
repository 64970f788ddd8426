"""The summary of :mod:`lotterynet.approximate`'s results (``python -m lotterynet.approximate
table``): each construction's curves over the seeds (:func:`curve`), the smallest size that
works beside the size its theorem asks for (:func:`theory_sizes`), written as
``approximation_table.md``, and the figures of error and accuracy against the hidden width."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from . import theory
from .approximate_files import WRONG_SIGN, read_result
from .approximate_sweeps import (
    ACCURACY_SLACK,
    DELTA,
    EPSILON,
    LAYERS,
    NATALE_DENSITY,
    NATALE_K_N,
    NETS,
)
from .checkpointing import savefig_atomic, write_text_atomic
from .errors import plural
from .registry import Registry


def curve(rows: list[dict], key: str) -> list[dict]:
    """Per size: median, min and max of ``key`` over the seeds, and the seed count."""
    sizes = sorted({r["size"] for r in rows})
    out = []
    for size in sizes:
        values = [r[key] for r in rows if r["size"] == size]
        out.append({"size": size, "median": statistics.median(values), "min": min(values),
                    "max": max(values), "seeds": len(values),
                    "hidden_layer1": next(r["hidden_layer1"] for r in rows if r["size"] == size),
                    "kept": statistics.median(r["params"]["kept"] for r in rows
                                              if r["size"] == size)})
    return out


def smallest_working(result: dict) -> dict | None:
    """The smallest size whose median test accuracy is within 0.5 points of the target's."""
    goal = result["target"]["test_accuracy"] - ACCURACY_SLACK
    for point in curve(result["rows"], "test_accuracy"):
        if point["median"] >= goal:
            return point
    return None


#: Each construction's theorem, by construction name: ``(net, result) -> (n per weight, layer-1
#: hidden width)`` that it asks for at ε = δ = 0.01, as the table writes them
#: (:func:`theory_count`). n is the largest over the layers, the hidden width is layer 1's from
#: layer 1's own n; conv layers (LeNet5) enter the FC bounds with fan-in ``c_in d²``.
THEOREMS: Registry = Registry("construction")


def theory_sizes(net: str, construction: str, result: dict) -> tuple[str, str]:
    """(n per weight, layer-1 hidden width) that the construction's theorem asks for
    (:data:`THEOREMS`), for ``result``, its results on ``net``."""
    return THEOREMS.get(construction)(net, result)


def _first_layer(bound: str, net: str) -> tuple[theory.LayerBound, tuple[int, ...]]:
    """The first layer's bound of :mod:`lotterynet.theory`'s ``bound`` for ``net``, and the
    widths of ``net``'s layers it was computed for."""
    pairs = LAYERS[net]
    widths = (pairs[0][0], *(b for _, b in pairs))
    return theory.BOUNDS.get(bound)(widths, EPSILON, DELTA)[0], widths


@THEOREMS.register("malach")
def _malach(net: str, result: dict) -> tuple[str, str]:
    """Malach et al. Thm. 2.1 (:func:`theory.malach`): m per weight = the hidden width over
    the layer's fan-in times fan-out."""
    first, _ = _first_layer("malach", net)
    return (theory_count(first.hidden / (first.fan_in * first.fan_out)),
            theory_count(first.hidden))


@THEOREMS.register("orseau")
def _orseau(net: str, result: dict) -> tuple[str, str]:
    """Orseau et al. Thm. 3 (:func:`theory.orseau`): the per-weight m of Step 2,
    ``8⌈k′ ln(k′/δ_w)⌉``, with the union bound ``δ_w = δ/(2N*)`` over the target's N* weights
    of Thm. 30's Step 3, App. D (Thm. 3's own Step 3 has ``δ_i = δ/ℓ`` per layer)."""
    first, widths = _first_layer("orseau", net)
    k = theory.orseau_k(widths, EPSILON)
    delta_w = DELTA / (2 * theory.target_weights(widths))
    return theory_count(8 * math.ceil(k * math.log(k / delta_w))), theory_count(first.hidden)


def _natale_at(net: str, gamma_: float) -> tuple[str, str]:
    """Natale et al. Thm. 3 (Eq. 28, :func:`theory.natale_terms`) at γ′ = k/n, the fraction of
    each subset-sum block the construction keeps (the theorem's ticket density is
    ``γ = ρ γ′``), hidden ``2 a n*``."""
    pairs = LAYERS[net]
    ns = [theory.natale_terms(a, b, len(pairs), min(EPSILON, DELTA), gamma_) for a, b in pairs]
    return f"{theory_count(max(ns))} (γ′ = {gamma_:.3g})", theory_count(2 * pairs[0][0] * ns[0])


@THEOREMS.register("natale")
def _natale(net: str, result: dict) -> tuple[str, str]:
    """Natale's theorem at the fixed fraction k = :data:`NATALE_DENSITY` n the sweep keeps."""
    return _natale_at(net, NATALE_DENSITY)


@THEOREMS.register("natale_k")
def _natale_k(net: str, result: dict) -> tuple[str, str]:
    """Natale's theorem at the k of n = :data:`NATALE_K_N` of the smallest size that works
    (none: "—")."""
    point = smallest_working(result)
    if point is None:
        return "—", "—"
    return _natale_at(net, point["size"] / NATALE_K_N)


def _subset_sum_layers(net: str) -> tuple[list[theory.LayerBound], list[int]]:
    """da Cunha et al.'s layers for ``net`` (:func:`theory.dacunha`) and each one's n (per
    output channel; Pensia's n* at d = 1)."""
    widths, kernel = NETS[net]
    layers = theory.dacunha(widths, EPSILON, DELTA, kernel=kernel)
    return layers, [layer.hidden // layer.fan_out for layer in layers]


@THEOREMS.register("dacunha")
def _dacunha(net: str, result: dict) -> tuple[str, str]:
    """da Cunha et al. Thm. 1 (Lemma 2, :func:`theory.dacunha`):
    ``n′ = C⌈log2(c_in c_out d² ℓ / min{ε, δ})⌉`` per *output* channel, hidden ``b n′``."""
    layers, ns = _subset_sum_layers(net)
    return theory_count(max(ns)), theory_count(layers[0].hidden)


@THEOREMS.register("pensia")
@THEOREMS.register("symmetric")  # (Pensia's construction over a symmetric range)
def _pensia(net: str, result: dict) -> tuple[str, str]:
    """Pensia et al. Thm. 1 (Lemma 3, Eq. 11, :func:`theory.pensia`): da Cunha's n* (at d = 1;
    a conv layer enters with fan-in ``a = c_in d²``) per input, hidden ``a n*``."""
    _, ns = _subset_sum_layers(net)
    return theory_count(max(ns)), theory_count(ns[0] * LAYERS[net][0][0])


def theory_count(x: float) -> str:
    """A size as the table writes it: exact with thousands separators (Orseau's m = 7,536),
    to 3 digits in e-notation only where it is astronomically large (Malach's 2.24e+16)."""
    return f"{x:,.0f}" if x < 1e12 else f"{x:.3g}"


def load_results(directory: Path) -> list[dict]:
    return [read_result(p, for_table=True)
            for p in sorted(directory.glob("approximation_*_*.json"))]


def table_markdown(results: list[dict]) -> str:
    lines = ["| net | data | construction | size | theorem asks (per weight) | theorem's network: "
             "hidden, layer 1 | smallest working size (median of seeds) | built network: hidden, "
             "layer 1 | accuracy there (min–max) | target |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        point = smallest_working(r)
        per_weight, hidden = theory_sizes(r["net"], r["construction"], r)
        largest = max(x["size"] for x in r["rows"])
        if point is None:
            found, width, acc = f"> {largest} (not reached)", "—", "—"
        else:
            acc_curve = {c["size"]: c for c in curve(r["rows"], "test_accuracy")}[point["size"]]
            found, width = str(point["size"]), f"{point['hidden_layer1']:,}"
            acc = (f"{100 * acc_curve['median']:.2f} % ({100 * acc_curve['min']:.2f}–"
                   f"{100 * acc_curve['max']:.2f})")
        lines.append(f"| {r['net']} | {r['dataset']} | {r['construction']} | {r['size']} | "
                     f"{per_weight} | {hidden} | {found} | {width} | {acc} | "
                     f"{100 * r['target']['test_accuracy']:.2f} % |")
    return "\n".join(lines)


NATALE_KEPT = ("Kept params count the kept weights of the masked layers: Natale's `fixedsize` "
               "masks only the coefficient layer v (its first layer u is frozen at 1, each kept "
               "v implying its u), so k per weight, where the other subset-sum constructions "
               "mask u and v and count 2 per kept coefficient: double Natale's to compare.")


def curve_markdown(r: dict) -> str:
    acc = curve(r["rows"], "test_accuracy")
    err = curve(r["rows"], "weight_error_max")
    med = curve(r["rows"], "weight_error_median")
    rel = curve(r["rows"], "output_relative_error_max")
    sign = curve(r["rows"], WRONG_SIGN) if WRONG_SIGN in r["rows"][0] else None
    t = r["target"]
    text = (f"\n### {r['net']} / {r['dataset']}: {r['construction']} — {r['paper']}\n\n"
            f"Target {100 * t['test_accuracy']:.2f} % (paper {100 * t['paper_test_accuracy']:.2f}"
            f" %, {t['epochs']} of the paper's {t['paper_epochs']} epochs). Median over "
            f"{plural(acc[0]['seeds'], 'seed')}, [min–max]."
            + (f" {NATALE_KEPT}" if r["construction"].startswith("natale") else "") + "\n\n"
            f"| {r['size']} | hidden, layer 1 | kept params | test accuracy | max weight error | "
            f"median weight error | max rel. output error |"
            + (" wrong-sign weights |" if sign else "") + "\n|---|---|---|---|---|---|---|"
            + ("---|" if sign else "") + "\n")
    for i, a in enumerate(acc):
        text += (f"| {a['size']} | {a['hidden_layer1']:,} | {a['kept']:,.0f} | "
                 f"{100 * a['median']:.2f} [{100 * a['min']:.2f}–{100 * a['max']:.2f}] | "
                 f"{err[i]['median']:.2e} [{err[i]['min']:.1e}–{err[i]['max']:.1e}] | "
                 f"{med[i]['median']:.1e} | {rel[i]['median']:.2e} |"
                 + (f" {sign[i]['median']:.0f} [{sign[i]['min']}–{sign[i]['max']}] |"
                    if sign else "") + "\n")
    return text


def plot(results: list[dict], path: Path, title: str) -> None:
    """Max weight error and test accuracy (median, min–max band over seeds) of every
    construction, against the hidden width of layer 1 (top) and the kept parameters (bottom)."""
    from matplotlib.figure import Figure  # (not pyplot: the caller's backend stays as it is)

    fig = Figure(figsize=(11, 8))
    axes = fig.subplots(2, 2)
    for r in results:
        label = (f"{r['construction']} ({r['dataset']})" if r["net"] == "lenet5"
                 else r["construction"])
        for row, x_key in enumerate(("hidden_layer1", "kept")):
            for ax, key in zip(axes[row], ("weight_error_max", "test_accuracy")):
                c = curve(r["rows"], key)
                x = [p[x_key] for p in c]
                scale = 100 if key == "test_accuracy" else 1
                line, = ax.plot(x, [scale * p["median"] for p in c], marker="o", markersize=3,
                                label=label)
                ax.fill_between(x, [scale * p["min"] for p in c],
                                [scale * p["max"] for p in c], color=line.get_color(), alpha=0.2)
    for row, xlabel in enumerate(("hidden units of layer 1",
                                  "kept parameters (Natale's: v only, see the table)")):
        ax_err, ax_acc = axes[row]
        ax_err.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="max |w − ŵ|")
        ax_acc.set(xscale="log", xlabel=xlabel, ylabel="test accuracy %")
        for acc in {r["target"]["test_accuracy"] for r in results}:
            ax_acc.axhline(100 * acc, color="gray", ls=":", lw=1)
            ax_acc.axhline(100 * (acc - ACCURACY_SLACK), color="gray", ls="--", lw=0.8)
        for ax in (ax_err, ax_acc):
            ax.grid(True, which="both", alpha=0.3)
    axes[0][1].legend(fontsize=7)
    fig.suptitle(f"{title} — median over seeds, band min–max; dotted: target, dashed: −0.5 pt")
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=130)


def run_table(args) -> None:
    results = load_results(args.out)
    if not results:
        raise ValueError(f"no approximation results in {args.out}; run fc2 / lenet5 first")
    text = ("# Width the theorems ask for vs. width that works\n\n"
            f"ε = δ = {EPSILON}; 'works': median test accuracy over the seeds within "
            f"{100 * ACCURACY_SLACK:g} points of the target's. Sizes: n coefficients per weight "
            "(subset sum), k of n = 16 (natale_k), m neurons per input (malach, orseau). "
            "Natale's γ′ = k/n is the fraction of each subset-sum block kept (Natale et al., "
            "Thm. 3, whose ticket density is γ = ργ′). The theorem's n per weight is the "
            "largest over the layers, its layer-1 hidden width is from layer 1's own n. "
            "The two hidden widths count different networks: the theorem's is its own "
            "construction's (Pensia's Fig. 1c and Natale's share layer 1 among a layer's "
            "outputs: n·d_in), the built one is the network measured here (the subset-sum family "
            "as Pensia's Fig. 1b, every weight its own n paths: n·d_in·d_out); compare the sizes "
            "per weight. Orseau's m is Theorem 3's at the whole-network ε, whose per-weight "
            "ε_w = ε / (e ℓ n_max^{3/2}) (theory.orseau_k, k′ = log_{3/2}(3/ε_w)) is "
            f"{3 / 1.5 ** theory.orseau_k(NETS['fc2'][0], EPSILON):.2g} for FC2; the network "
            f"built here uses ε_w = {EPSILON} per weight (its hyperbolic range and ⌊k′⌋ cap). "
            "Kept params (curves, figures): Natale's count v's kept weights only, the others' "
            "both layers' (below).\n\n"
            + table_markdown(results) + "\n\n## Curves\n" + "".join(map(curve_markdown, results)))
    write_text_atomic(args.out / "approximation_table.md", text)
    for net, title in (("fc2", "FC2 / MNIST, every layer replaced"),
                       ("lenet5", "da Cunha's LeNet5, conv part replaced")):
        chosen = [r for r in results if r["net"] == net]
        if chosen:
            plot(chosen, args.out / f"approximation_{net}.png", title)
    print(text)
