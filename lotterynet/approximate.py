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

# What is swept: approximate_sweeps.py; the result files: approximate_files.py; the table and
# the figures: approximate_table.py.

from __future__ import annotations

if __name__ == "__main__":  # (Ctrl-C and SIGTERM in the imports: one line, as later)
    from lotterynet.process_lifetime import hold_stops

    hold_stops()

import argparse
import itertools
import json
import os
from pathlib import Path

import torch
from torch import nn

from .approximate_files import (
    WRONG_SIGN,
    check_digests_recorded,
    check_stored_targets,
    check_stored_weights,
    read_result,
    result_path,
    stored_targets,
    write_json,
)
from .approximate_sweeps import DATASET_SEED_OFFSET, FC2_SWEEPS, LENET5_CONV_PART, SWEEPS, Sweep
from .approximate_table import run_table
from .config_checks import check_path
from .constructions import construct_model, effective_errors
from .datamodule import load_or_download
from .errors import (
    REPORTED,
    ConfigError,
    OneLineErrorParser,
    encodable_output,
    exit_code,
    message,
    stopped,
    unread_option,
)
from .machine import cpu_name
from .params import count_params
from .path_checks import check_output_dir
from .process_lifetime import stopping_on_sigterm
from .run_dir import RESULTS
from .targets import (
    add_data_and_targets_dirs,
    checked_targets_dir,
    target_config,
    trained_target,
)


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
    """Where the numbers were measured (the load average tells whether the cores were shared;
    None on Windows, which has none)."""
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "load_average_1min": load}


def run_targets(net: str, sweeps: list[Sweep], targets: list[tuple[str, str, int | None]],
                args, *, conv_part: int | None) -> None:
    """:func:`run_sweeps` on each target ``(dataset, recipe, target_epochs)`` (``target_epochs``:
    the target run with fewer epochs than its paper's recipe, None: the paper's), the sweeps
    with cells left to measure (:func:`cells_left`) only: a target with none is not trained.
    Before any work, every stored result file is checked
    (:func:`~lotterynet.approximate_files.check_stored_targets`), those that get rows
    (:func:`~lotterynet.approximate_files.check_digests_recorded`) against the targets trained
    already too; a target still to train is checked once it is trained."""
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
    ``sweeps`` checked against its weights
    (:func:`~lotterynet.approximate_files.check_stored_weights`)."""
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
    for flag, path in (("--out", args.out), ("--data-dir", args.data_dir)):
        if path is not None:  # (a '~' first: ./~/x was made)
            check_path(flag, str(path))
    check_output_dir(args.out, "--out")
    if args.experiment != "table":
        args.targets_dir = checked_targets_dir(args.targets_dir)


def main(argv: list[str] | None = None) -> None:
    parser = OneLineErrorParser(
        prog="python -m lotterynet.approximate", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=["fc2", "lenet5", "table"],
                        help="the experiment (above); table reads only --out")
    add_data_and_targets_dirs(parser)
    parser.add_argument("--out", type=Path, default=Path("results"),
                        help="where the JSON, Markdown and PNG results go (default: results)")
    parser.add_argument("--seeds", type=int, help="seeds per point (default: 5)")
    parser.add_argument("--only", nargs="+", metavar="CONSTRUCTION", help="run only these "
                        f"constructions: fc2 {', '.join(s.name for s in SWEEPS['fc2'])}; lenet5 "
                        f"{', '.join(s.name for s in SWEEPS['lenet5'])} (default: all)")
    parser.add_argument("--sizes", nargs="+", type=int, help="run only these sizes of each "
                        "sweep (default: all)")
    parser.add_argument("--target-epochs", nargs="+", type=int, help="use the target trained "
                        "for this many epochs instead of the paper's (one per data set; "
                        "reported beside the paper's)")
    parser.add_argument("--datasets", nargs="+", choices=["mnist", "fashion-mnist"],
                        help="lenet5: data sets (default: mnist fashion-mnist)")
    args = parser.parse_args(argv)
    try:  # (Ctrl-C and SIGTERM one line wherever they land, as train.py's: process_lifetime.py; a
        # target's training says its own)
        with stopped(lambda: going_on(args)), stopping_on_sigterm(ends_the_process=True):
            check_options(args)
            args.seeds = args.seeds or 5
            args.datasets = args.datasets or ["mnist", "fashion-mnist"]
            {"fc2": run_fc2, "lenet5": run_lenet5, "table": run_table}[args.experiment](args)
    except (*REPORTED, ValueError) as err:
        parser.exit(exit_code(err) if isinstance(err, REPORTED) else 2,
                    f"{parser.prog}: error: {message(err)}\n")


def going_on(args) -> str:
    """How a command stopped outside its target's training goes on: the table is written
    anew; a sweep's result file is rewritten (atomically) as each size's last seed is
    measured, and the same command measures only the cells it does not hold
    (:func:`cells_left`)."""
    if args.experiment == "table":
        return "run the same command again to write the table"
    return (f"the rows of every size measured to its last seed are kept in the result files "
            f"in {str(args.out)!r}, not those of the size being measured: run the same command "
            f"again to measure the rest")


if __name__ == "__main__":
    encodable_output()
    main()
