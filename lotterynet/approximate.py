"""Approximate a trained network by pruning a random one, with every construction of the five
papers (:mod:`lotterynet.constructions`), and measure the size at which it works.

Targets are trained through the training stack with each paper's own recipe
(:mod:`lotterynet.targets`): Pensia et al.'s FC2 (SGD, 10 epochs; paper: 97.19 %) and da Cunha
et al.'s LeNet5 (biases, 7 × 7 × 16 conv output, Adam, 50 epochs; paper: 98.99 % MNIST /
89.12 % Fashion-MNIST). Every curve is run over several seeds (the random network / coefficient
draws; each data set gets its own draws) and summarised by its median and min–max band.

* ``fc2``: on FC2 / MNIST, every layer replaced — Pensia (subset sum, U[min, max] of the
  layer's weights and biases, Fig. 1b network), da Cunha's rule (subset sum, U[−1, 1]), the
  symmetric range, Natale (fixed size k, vs k at fixed n and vs n at k = n/4), Malach and
  Orseau (vs hidden width).
* ``lenet5``: on da Cunha's LeNet5 (MNIST and Fashion-MNIST), the conv part replaced, the
  target's own FC part on top — da Cunha's Figs. 3–4 (max weight error, max relative error of
  the 7 × 7 × 16 conv output) and test accuracy, plus Pensia's range and Natale's fixed size.
  Malach's and Orseau's constructions are for fully connected layers and are not built here.
* ``table``: the widths each theorem asks for at ε = 0.01 (:mod:`lotterynet.theory`) beside the
  smallest size whose median test accuracy is within 0.5 points of the target's; one figure of
  error and accuracy against hidden width for all constructions.

    python -m lotterynet.approximate fc2 --data-dir ../shared/data [--only pensia malach]
    python -m lotterynet.approximate lenet5 --data-dir ../shared/data
    python -m lotterynet.approximate table
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from . import theory
from .checkpointing import savefig_atomic, write_text_atomic
from .constructions import construct_model, effective_errors, product_network, subset_sum
from .datamodule import load_or_download
from .errors import (
    REPORTED,
    ConfigError,
    OneLineErrorParser,
    exit_code,
    message,
    plural,
    unread_option,
)
from .machine import cpu_name
from .params import count_params
from .run_dir import RESULTS
from .targets import (
    RECIPES,
    add_targets_dir,
    checked_targets_dir,
    target_config,
    trained_target,
)
from .validate import check_output_dir

EPSILON, DELTA = 0.01, 0.01
ACCURACY_SLACK = 0.005  # "within 0.5 points of the target's test accuracy"
NATALE_DENSITY = 0.25
NATALE_K_N = 16  # Natale vs k: k of this many coefficients per weight
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


def _natale_vs_k(coefficients, n, size):
    return _subset_sum(coefficients, n, k=size)


def _product(rule, size):
    return partial(product_network, m=size, rule=rule, epsilon=EPSILON)


def subset_sum_sweeps(default_range: str, n_sizes, natale_n: int, k_sizes,
                      natale_sizes) -> list[Sweep]:
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
        Sweep("natale_k", f"Natale et al., fixed n = {natale_n}, k of n, {default_range} range",
              "k", k_sizes, partial(_natale_vs_k, default_range, natale_n)),
    ]


FC2_SWEEPS = subset_sum_sweeps("layer", (3, 5, 7, 9, 11, 13, 15, 17, 19, 21), NATALE_K_N,
                               (1, 2, 3, 4, 5, 6, 8), (4, 8, 12, 16, 20)) + [
    Sweep("malach", "Malach et al. 2020, Lemmas 2.4-2.5, U[-1, 1]", "m", (4, 8, 16, 32, 64),
          partial(_product, "malach")),
    Sweep("orseau", "Orseau et al. 2020, Cor. 10 / Thm. 3, hyperbolic", "m",
          (4, 8, 16, 32, 64), partial(_product, "orseau")),
]
LENET5_SWEEPS = subset_sum_sweeps("unit", (5, 8, 10, 12, 14, 16, 18, 20, 22, 25, 30), NATALE_K_N,
                                  (1, 2, 3, 4, 5, 6, 8), (4, 8, 12, 16, 20, 24))
SWEEPS = {"fc2": FC2_SWEEPS, "lenet5": LENET5_SWEEPS}


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Outputs of ``model`` in its own dtype, batch by batch."""
    dtype = next(model.parameters()).dtype
    return torch.cat([model(x.to(dtype)) for x in images.split(batch_size)])


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).double().mean().item()


def total(stats: list[dict], key: str):
    return sum(s[key] for s in stats)


def measure(sweep: Sweep, size: int, seed: int, part: nn.Sequential, head: nn.Sequential,
            test_x, test_y, reference: torch.Tensor) -> dict:
    """Build ``sweep`` at ``size`` on the layers of ``part`` (the approximated part of the
    target), evaluate ``head(model(x))`` on the test set, and report the errors.
    ``reference``: the target part's float64 output on the test set."""
    model, stats = construct_model(part, sweep.build(size), seed=seed)
    subset_family = all("coefficient_range" in s for s in stats)
    errors = (effective_errors(model, part) if subset_family
              else torch.cat([s.pop("weight_errors") for s in stats]))
    if not subset_family:  # the product networks are wide: evaluate them in float32
        model = model.float()
    features = predict(model, test_x).double()
    relative = ((features - reference).flatten(1).abs().amax(1)
                / reference.flatten(1).abs().amax(1))
    logits = predict(head, features) if len(head) else features
    row = {
        "construction": sweep.name, "size": size, "seed": seed,
        "test_accuracy": accuracy(logits, test_y),
        "weight_error_max": errors.max().item(),
        "weight_error_median": errors.median().item(),  # over every weight of the model
        "output_relative_error_max": relative.max().item(),
        "hidden_layer1": stats[0]["hidden"],
        "coefficients_kept": total(stats, "coefficients_kept"),
        "solve_seconds": total(stats, "solve_seconds"),
        "params": count_params(model),
    }
    if subset_family:
        row[WRONG_SIGN] = total(stats, WRONG_SIGN)
        row["coefficient_ranges"] = [s["coefficient_range"] for s in stats]
    return row


def machine() -> dict:
    """Where the numbers were measured (the load average tells whether the cores were shared)."""
    return {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "load_average_1min": round(os.getloadavg()[0], 2)}


def run_targets(net: str, sweeps: list[Sweep], targets: list[tuple[str, str, int | None]],
                args, *, conv_part: int | None) -> None:
    """:func:`run_sweeps` on each target ``(dataset, recipe, target_epochs)`` (``target_epochs``:
    the target run with fewer epochs than its paper's recipe, None: the paper's), the sweeps
    with cells left to measure (:func:`cells_left`) only: a target with none is not trained.
    Before any work, every stored result file is checked (:func:`check_stored_targets`), those
    that get rows (:func:`check_digests_recorded`) against the targets trained already too; a
    target still to train is checked once it is trained."""
    for dataset, recipe, epochs in targets:
        check_stored_targets(args.out, net, dataset, sweeps, recipe, epochs)
    todo = {dataset: [s for s in sweeps if cells_left(s, net, dataset, args)]
            for dataset, _, _ in targets}
    if not any(todo.values()):
        files = [str(path) for dataset, _, _ in targets
                 for path, _ in stored_targets(args.out, net, dataset, sweeps)]
        print(f"nothing to do: every size and seed asked for is in {', '.join(files)}")
        return
    targets = [target for target in targets if todo[target[0]]]
    for dataset, _, _ in targets:
        check_digests_recorded(args.out, net, dataset, todo[dataset])
    ready = {dataset: checked_target(net, dataset, todo[dataset], recipe, epochs, args)
             for dataset, recipe, epochs in targets if target_trained(recipe, epochs, args)}
    for dataset, recipe, epochs in targets:
        target, info = ready.get(dataset) or checked_target(net, dataset, todo[dataset], recipe,
                                                            epochs, args)
        run_sweeps(todo[dataset], net, dataset, target, info, args, conv_part=conv_part)


def cells_left(sweep: Sweep, net: str, dataset: str, args) -> list[tuple[int, int]]:
    """The ``(size, seed)`` cells of ``sweep`` asked for (``--sizes``, ``--seeds``) that its
    result file in ``args.out`` does not hold yet, in order."""
    path = result_path(args.out, net, dataset, sweep.name)
    done = {(r["size"], r["seed"]) for r in read_result(path)["rows"]} if path.exists() else ()
    offset = DATASET_SEED_OFFSET[dataset]
    return [(size, seed) for size in sweep.sizes if not args.sizes or size in args.sizes
            for seed in range(offset, offset + args.seeds) if (size, seed) not in done]


def target_trained(recipe: str, epochs: int | None, args) -> bool:
    """Whether the run of the target lies finished in ``--targets-dir`` (loaded, not trained)."""
    config = target_config(recipe, targets_dir=args.targets_dir,
                           **({} if epochs is None else {"epochs": epochs}))
    return (Path(config.out) / RESULTS).is_file()


def checked_target(net: str, dataset: str, sweeps: list[Sweep], recipe: str,
                   epochs: int | None, args) -> tuple[nn.Module, dict]:
    """The target of ``recipe`` (trained now unless it is already), the stored rows of
    ``sweeps`` checked against its weights (:func:`check_stored_weights`)."""
    target, info = trained_target(recipe, data_dir=args.data_dir, targets_dir=args.targets_dir,
                                  **({} if epochs is None else {"epochs": epochs}))
    check_stored_weights(args.out, net, dataset, sweeps, info)
    return target, info


def run_sweeps(sweeps: list[Sweep], net: str, dataset: str, target: nn.Module, info: dict,
               args, *, conv_part: int | None) -> None:
    """All ``sweeps`` × sizes × seeds on ``target`` (``info``: its record), one JSON per
    sweep in ``args.out``, each row with the :func:`machine` that measured it (a resume may
    add rows measured elsewhere); ``conv_part``: approximate only the first ``conv_part``
    modules (da Cunha's conv part, the target's own head on top), else the whole network."""
    test_x, test_y = load_or_download(dataset, args.data_dir, train=False)  # as the target's
    target64 = target.double().eval()
    part = target64[:conv_part] if conv_part else target64
    head = target64[conv_part:] if conv_part else nn.Sequential()
    reference = predict(part, test_x)
    for sweep in sweeps:
        cells = cells_left(sweep, net, dataset, args)  # (the rest: measured by an earlier run)
        path = result_path(args.out, net, dataset, sweep.name)
        stored = read_result(path) if path.exists() else {"rows": [], "target": info}
        rows = stored["rows"]
        for row in rows:  # a file written before rows had their own: its one record is theirs
            row.setdefault("machine", stored.get("machine"))
        for size, at_size in itertools.groupby(cells, key=lambda cell: cell[0]):  # (in order)
            for _, seed in at_size:
                row = measure(sweep, size, seed, part, head, test_x, test_y, reference)
                row["machine"] = machine()
                rows.append(row)
                print(json.dumps({k: row[k] for k in ("construction", "size", "seed",
                                                      "test_accuracy", "weight_error_max")}),
                      flush=True)
            rows.sort(key=lambda r: (r["size"], r["seed"]))  # written after every size
            # (the target the file's first rows were measured on: check_stored_weights made
            # sure every later row's has the same weights)
            write_json(path, {"net": net, "construction": sweep.name, "paper": sweep.paper,
                              "size": sweep.size, "target": stored["target"],
                              "dataset": dataset, "rows": rows})


def result_path(out: Path, net: str, dataset: str, construction: str) -> Path:
    name = f"{net}_{construction}" if net == "fc2" else f"{net}_{dataset}_{construction}"
    return out / f"approximation_{name}.json"


def stored_targets(out: Path, net: str, dataset: str, sweeps: list[Sweep]):
    """``(path, target)`` of every result file of ``sweeps`` already in ``out``."""
    for sweep in sweeps:
        path = result_path(out, net, dataset, sweep.name)
        if path.exists():
            yield path, read_result(path)["target"]


def check_stored_targets(out: Path, net: str, dataset: str, sweeps: list[Sweep], recipe: str,
                         epochs: int | None) -> None:
    """Refuse, before any work, to add rows to a result file measured on another target
    (another recipe, or the same trained for another number of epochs): a resume would take
    its rows as done."""
    epochs = epochs or RECIPES[recipe]["epochs"]
    for path, stored in stored_targets(out, net, dataset, sweeps):
        if (stored["recipe"], stored["epochs"]) != (recipe, epochs):
            raise ValueError(f"{path} holds rows measured on the target {stored['recipe']} "
                             f"trained {plural(stored['epochs'], 'epoch')}, not {epochs}: "
                             f"move it away or give --out another folder")


def check_digests_recorded(out: Path, net: str, dataset: str, sweeps: list[Sweep]) -> None:
    """Refuse, before any work, to add rows to a result file that does not record the digest
    of its target's weights (files written before 5665077): :func:`check_stored_weights`
    could not tell whether its rows were measured on this target."""
    for path, stored in stored_targets(out, net, dataset, sweeps):
        if "weights_sha256" not in stored:
            raise ValueError(f"{path} was measured before targets were recorded by digest (its "
                             f"target has no weights_sha256), so its rows cannot be resumed: "
                             f"move it away or give --out another folder to measure them again")


def check_stored_weights(out: Path, net: str, dataset: str, sweeps: list[Sweep],
                         info: dict) -> None:
    """Refuse to add rows to a result file measured on other target weights than ``info``'s
    (the same recipe trained again elsewhere, or by a lotterynet that drew other initial
    weights), before measuring anything."""
    for path, stored in stored_targets(out, net, dataset, sweeps):
        if stored["weights_sha256"] != info["weights_sha256"]:  # (none: refused already)
            raise ValueError(f"{path} holds rows measured on other {info['recipe']} target "
                             f"weights than {info['run_dir']!r} holds (sha256 "
                             f"{stored['weights_sha256'][:12]}, not "
                             f"{info['weights_sha256'][:12]}): move it away or give --out "
                             f"another folder")


ROW_KEYS = {"construction": str, "size": int, "seed": int, "test_accuracy": float}
#: What a resume reads of a file's target, and its weights_sha256: str where it records one
#: (files of before 5665077 do not).
RESUME_KEYS = {"recipe": str, "epochs": int}
#: What the table and the curves read besides: each key of a result file, of its target and of
#: its rows, with its JSON type (floats finite).
TABLE_KEYS = {"net": str, "dataset": str, "size": str, "paper": str}
TARGET_KEYS = {"test_accuracy": float, "paper_test_accuracy": float, "epochs": int,
               "paper_epochs": int}
CURVE_KEYS = {**ROW_KEYS, "hidden_layer1": int, "weight_error_max": float,
              "weight_error_median": float, "output_relative_error_max": float}
#: The rows of the subset-sum family carry it (every row of a file, or none).
WRONG_SIGN = "all_coefficients_wrong_sign"


def fields_fault(mapping, kinds: dict, where: str) -> str | None:
    """The first key of ``kinds`` that ``mapping`` lacks or holds with another type."""
    for key, kind in kinds.items():
        value = mapping.get(key) if isinstance(mapping, dict) else None
        if type(value) is not kind or (kind is float and not math.isfinite(value)):
            return f"{where} without {key}: {kind.__name__}"
    return None


def result_fault(data) -> str | None:
    """What keeps ``data`` from being an approximation result file, or None."""
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        return "not a mapping with rows"
    if not rows:
        return "no rows"
    if data.get("construction") not in {sweep.name for sweep in FC2_SWEEPS}:
        return f"no known construction {data.get('construction')!r}"
    if not isinstance(data.get("target"), dict):
        return "no target"
    seen = set()
    for row in rows:
        fault = fields_fault(row, ROW_KEYS, "a row")
        if not fault and (row["construction"] != data["construction"] or row["size"] < 1
                          or not 0 <= row["test_accuracy"] <= 1):
            fault = (f"a row of construction {row['construction']!r}, size {row['size']}, "
                     f"test accuracy {row['test_accuracy']}")
        if not fault and (row["size"], row["seed"]) in seen:
            fault = f"two rows of size {row['size']}, seed {row['seed']}"
        if fault:
            return fault
        seen.add((row["size"], row["seed"]))
    digest = {"weights_sha256": str} if "weights_sha256" in data["target"] else {}
    return fields_fault(data["target"], {**RESUME_KEYS, **digest}, "a target")


def table_fault(data: dict) -> str | None:
    """What keeps a result file (:func:`result_fault` passed) out of the table, or None."""
    if data.get("net") not in LAYERS:
        return f"net {data.get('net')!r} is none of {', '.join(LAYERS)}"
    fault = fields_fault(data, TABLE_KEYS, "a file") or fields_fault(
        data["target"], TARGET_KEYS, "a target")
    signs = {WRONG_SIGN: int} if any(WRONG_SIGN in row for row in data["rows"]) else {}
    for row in data["rows"]:
        fault = fault or fields_fault(row, {**CURVE_KEYS, **signs}, "a row") or fields_fault(
            row.get("params"), {"kept": int}, "a row's params")
        if not fault and row["hidden_layer1"] < 1:
            fault = f"a row of {row['hidden_layer1']} hidden units in layer 1"
    return fault


def read_result(path: Path, for_table: bool = False) -> dict:
    """An approximation result file (``net``, ``construction``, ``target``, ``rows``), checked:
    anything else (not JSON, rows without their keys, a folder) is a :class:`ValueError`
    naming the file, never a half-read table."""
    try:
        data = json.loads(path.read_text())
        fault = result_fault(data) or (table_fault(data) if for_table else None)
        if not fault and for_table and not path.name.startswith(f"approximation_{data['net']}_"):
            fault = f"net {data['net']!r} in a file named {path.name!r}"
    except (OSError, ValueError) as err:
        fault = str(err)
    if fault:
        raise ValueError(f"{path} is not an approximation result file ({fault}); move it away "
                         f"or restore it")
    return data


def write_json(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def selected(net: str, only) -> list[Sweep]:
    """The sweeps of ``net`` that ``--only`` names (all without it)."""
    sweeps = SWEEPS[net]
    names = [s.name for s in sweeps]
    unknown = sorted(set(only or ()) - set(names))
    if unknown and unknown[0] in {s.name for s in FC2_SWEEPS}:  # (malach, orseau)
        raise ValueError(f"construction {unknown[0]!r} builds fully connected layers only, not "
                         f"{net}'s conv layers; valid choices for {net}: {', '.join(names)}")
    if unknown:
        raise ValueError(f"unknown construction {unknown[0]!r}; valid choices: {', '.join(names)}")
    return [s for s in sweeps if not only or s.name in only]


def run_fc2(args) -> None:
    epochs = args.target_epochs[0] if args.target_epochs else None
    run_targets("fc2", selected("fc2", args.only), [("mnist", "pensia_fc2", epochs)], args,
                conv_part=None)


def run_lenet5(args) -> None:
    epochs = args.target_epochs or [None] * len(args.datasets)
    if len(epochs) != len(args.datasets):
        raise ConfigError(f"give one --target-epochs per data set {args.datasets}, got {epochs}")
    run_targets("lenet5", selected("lenet5", args.only),
                [(dataset, f"dacunha_lenet5_{dataset}", target_epochs)
                 for dataset, target_epochs in zip(args.datasets, epochs)], args,
                conv_part=LENET5_CONV_PART)


# --- summary: curves, the width table, the figure -------------------------------------------

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


NETS = {"fc2": ((784, 500, 10), 1), "lenet5": ((1, 6, 16), 5)}
"""(widths, kernel d) of the approximated layers: units, or channels of d × d convolutions."""
LAYERS = {net: [(a * d**2, b) for a, b in zip(widths[:-1], widths[1:])]
          for net, (widths, d) in NETS.items()}
"""(fan-in, fan-out) of the approximated layers; a conv layer's fan-in is c_in · d²."""


def theory_sizes(net: str, construction: str, result: dict) -> tuple[str, str]:
    """(n per weight, layer-1 hidden width) that the construction's theorem asks for at
    ε = δ = 0.01: n is the largest over the layers, the hidden width is layer 1's from layer 1's
    own n. da Cunha et al. Thm. 1 (Lemma 2, :func:`theory.dacunha`):
    ``n′ = C⌈log2(c_in c_out d² ℓ / min{ε, δ})⌉`` per *output* channel, hidden ``b n′``;
    Pensia et al. Thm. 1 (Lemma 3, Eq. 11, :func:`theory.pensia`): the same n* (at d = 1; a
    conv layer enters with fan-in ``a = c_in d²``) per input, hidden ``a n*``; Natale et al.
    Thm. 3 (Eq. 28) at γ′ = k/n, the fraction of each subset-sum block the construction keeps
    (the theorem's ticket density is ``γ = ρ γ′``), hidden ``2 a n*``; Malach et al. Thm. 2.1
    and Orseau et al. Thm. 3 from :mod:`lotterynet.theory` (Orseau's per-weight m of Thm. 3,
    Step 2: ``8⌈k′ ln(k′/δ_w)⌉`` with Step 3's union bound ``δ_w = δ/(2N*)`` over the target's
    N* weights). Conv layers (LeNet5) enter the FC bounds with fan-in ``c_in d²``."""
    pairs, ell = LAYERS[net], len(LAYERS[net])
    if construction in ("malach", "orseau"):
        widths = (pairs[0][0], *(b for _, b in pairs))
        first = theory.BOUNDS.get(construction)(widths, EPSILON, DELTA)[0]
        k = theory.orseau_k(widths, EPSILON)
        delta_w = DELTA / (2 * theory.target_weights(widths))
        per_weight = (first.hidden / (first.fan_in * first.fan_out) if construction == "malach"
                      else 8 * math.ceil(k * math.log(k / delta_w)))
        return theory_count(per_weight), theory_count(first.hidden)
    gamma_ = NATALE_DENSITY
    if construction == "natale_k":
        point = smallest_working(result)
        if point is None:
            return "—", "—"
        gamma_ = point["size"] / NATALE_K_N
    fan_in, fan_out = pairs[0]
    if construction.startswith("natale"):
        ns = [theory.natale_terms(a, b, ell, min(EPSILON, DELTA), gamma_) for a, b in pairs]
        return f"{theory_count(max(ns))} (γ′ = {gamma_:.3g})", theory_count(2 * fan_in * ns[0])
    widths, kernel = NETS[net]
    layers = theory.dacunha(widths, EPSILON, DELTA, kernel=kernel)  # (Pensia's n* at d = 1)
    ns = [layer.hidden // layer.fan_out for layer in layers]
    hidden = layers[0].hidden if construction == "dacunha" else ns[0] * fan_in
    return theory_count(max(ns)), theory_count(hidden)


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
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
    plt.close(fig)


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


FLAGS_READ = {"fc2": {"out", "data_dir", "targets_dir", "seeds", "only", "sizes",
                      "target_epochs"},
              "lenet5": {"out", "data_dir", "targets_dir", "seeds", "only", "sizes",
                         "target_epochs", "datasets"},
              "table": {"out"}}
"""The options each experiment reads: any other given is refused, not ignored."""


def check_options(args) -> None:
    """Refuse, before any work, options the experiment would not read or could not use."""
    unread = unread_option(args, FLAGS_READ, args.experiment)
    if unread:
        raise ConfigError(unread)
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    if args.experiment == "fc2" and args.target_epochs and len(args.target_epochs) != 1:
        raise ConfigError(f"fc2 has one target: give one --target-epochs, got "
                          f"{args.target_epochs}")
    if any(e < 1 for e in args.target_epochs or ()):
        raise ConfigError(f"--target-epochs must be >= 1, got {args.target_epochs}")
    twice = next((d for i, d in enumerate(args.datasets or ()) if d in args.datasets[:i]), None)
    if twice:
        raise ConfigError(f"--datasets names {twice!r} twice; give each data set once")
    if args.sizes:
        sweeps = selected(args.experiment, args.only)
        sizes = sorted({size for sweep in sweeps for size in sweep.sizes})
        outside = [size for size in args.sizes if size not in sizes]
        if outside:
            raise ConfigError(f"--sizes {outside[0]} is in no sweep of "
                              f"{', '.join(s.name for s in sweeps)}; valid sizes: "
                              f"{', '.join(map(str, sizes))}")
    check_output_dir(args.out, "--out")
    if args.experiment != "table":
        args.targets_dir = checked_targets_dir(args.targets_dir)


def main(argv: list[str] | None = None) -> None:
    parser = OneLineErrorParser(
        prog="python -m lotterynet.approximate", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=["fc2", "lenet5", "table"])
    parser.add_argument("--data-dir", help="folder holding MNIST/ and FashionMNIST/ in "
                        "torchvision's layout (default: $LOTTERYNET_DATA, else ./data; "
                        "downloaded if missing and online)")
    parser.add_argument("--out", type=Path, default=Path("results"),
                        help="where the JSON, Markdown and PNG results go (default: results)")
    add_targets_dir(parser)
    parser.add_argument("--seeds", type=int, help="seeds per point (default: 5)")
    parser.add_argument("--only", nargs="+", help="run only these constructions")
    parser.add_argument("--sizes", nargs="+", type=int, help="run only these sizes of each "
                        "sweep (default: all)")
    parser.add_argument("--target-epochs", nargs="+", type=int, help="use the target trained "
                        "for this many epochs instead of the paper's (one per data set; "
                        "reported beside the paper's)")
    parser.add_argument("--datasets", nargs="+", choices=["mnist", "fashion-mnist"],
                        help="lenet5: data sets (default: mnist fashion-mnist)")
    args = parser.parse_args(argv)
    try:
        check_options(args)
        args.seeds = args.seeds or 5
        args.datasets = args.datasets or ["mnist", "fashion-mnist"]
        {"fc2": run_fc2, "lenet5": run_lenet5, "table": run_table}[args.experiment](args)
    except (*REPORTED, ValueError) as err:
        parser.exit(exit_code(err) if isinstance(err, REPORTED) else 2,
                    f"{parser.prog}: error: {message(err)}\n")
    except KeyboardInterrupt:  # the rows of every finished size are in their result files
        parser.exit(130, f"{parser.prog}: error: stopped by Ctrl-C; the same command "
                         f"continues from the sizes measured so far in {args.out}\n")

if __name__ == "__main__":
    main()
