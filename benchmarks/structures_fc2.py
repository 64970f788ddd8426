"""MNIST fc2 (784-500-10) at a matched kept-parameter budget: dense, wide, subsetsum, malach,
orseau and fixedsize, each a short ``train.py`` run; writes results/structures_fc2.{md,json}.

    python benchmarks/structures_fc2.py --data-dir ../shared/data [--epochs 1 --limit-train 10000]

The sparsity of every structure is solved analytically from ``layer_counts`` so that the kept
count equals the budget (dense at 50 %: 198,500). fixedsize keeps at least one term per target
weight (k ≥ 1), so it cannot go below N* = 397,000 kept (identity; 2 N* with ReLU): it runs at
that floor, beside subsetsum-identity at the same budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import flags

from lotterynet.checkpointing import write_text_atomic
from lotterynet.datamodule import load_or_download
from lotterynet.path_checks import check_output_dir
from lotterynet.structures import STRUCTURES, TargetShape, layer_counts
from lotterynet.widen import wide_width

FC2 = (784, 500, 10)
REPO = Path(__file__).resolve().parent.parent


def maskable(structure: str, widths=FC2, **options) -> int:
    return sum(layer_counts(structure, TargetShape(b, a), **options)["maskable"]
               for a, b in zip(widths[:-1], widths[1:]))


def wide_maskable(pairs: int) -> int:
    h = wide_width("fc2", maskable("subsetsum", pairs=pairs), pairs=pairs)
    return maskable("dense", (784, h, 10))


def runs(budget: int, floor: int) -> list[tuple[str, int, int, list[str]]]:
    """(label, maskable, budget, train.py flags but the sparsity) per row."""
    def row(label, count, budget_, *flags):
        return label, count, budget_, list(flags)
    return [
        row("dense", maskable("dense"), budget, "--structure", "dense"),
        row("wide (h matched to subsetsum n=5)", wide_maskable(5), budget,
            "--structure", "wide", "--match", "subsetsum"),
        row("subsetsum relu n=5", maskable("subsetsum"), budget, "--structure", "subsetsum"),
        row("malach H=5·d_in, U[-1,1]", maskable("malach"), budget,
            "--structure", "malach", "--init", "uniform"),
        row("orseau H=5·d_in, hyperbolic", maskable("orseau"), budget,
            "--structure", "orseau", "--init", "hyperbolic"),
        row("subsetsum identity n=5", maskable("subsetsum", activation="identity"), floor,
            "--structure", "subsetsum", "--activation", "identity"),
        row("fixedsize identity n=5, k=1", maskable("fixedsize", activation="identity"),
            floor, "--structure", "fixedsize", "--activation", "identity"),
    ]


def init_used(spec: dict) -> str:
    """The distribution a run drew its weights from: its ``init``, else its structure's default
    (what ``Structure`` does with ``init=None``; ``wide`` is in the spec as ``dense``)."""
    return spec["init"] or STRUCTURES.get(spec["structure"]).default_init


def main(argv=None) -> None:
    parser = flags.parser(__file__, __doc__)
    # Every path made absolute as it is parsed, against the caller's directory: the runs'
    # train.py and this script then read and write the same places.
    parser.add_argument("--data-dir", required=True, type=os.path.abspath,
                        help="folder holding MNIST/ in torchvision's layout (downloaded if "
                        "missing and online)")
    parser.add_argument("--epochs", type=flags.integer(1), default=1,
                        help="epochs of every run (default: 1)")
    parser.add_argument("--limit-train", type=flags.integer(1), default=10000, metavar="N",
                        help="training examples of every run (default: 10000)")
    parser.add_argument("--budget", type=flags.integer(1), default=198_500,
                        help="weights every structure keeps (fixedsize: at least 397,000) "
                        "(default: 198,500, dense fc2 at sparsity 0.5)")
    parser.add_argument("--runs-dir", default="runs/structures_fc2", type=os.path.abspath,
                        help="where the runs are written (default: runs/structures_fc2)")
    parser.add_argument("--out", default=str(REPO / "results" / "structures_fc2"),
                        type=os.path.abspath, help="the results' path without a suffix: OUT.md "
                        "and OUT.json are written (default: results/structures_fc2)")
    args = parser.parse_args(argv)
    if Path(args.out).suffix in (".md", ".json"):  # (it wrote OUT.md.md and OUT.md.json)
        parser.error(f"argument --out: {args.out!r} ends in {Path(args.out).suffix}; give the "
                     f"path without a suffix, e.g. {str(Path(args.out).with_suffix(''))!r}, "
                     f"for its .md and .json")
    plan = runs(args.budget, floor=397_000)
    largest = min(count for _, count, budget, _ in plan if budget == args.budget)
    if args.budget > largest:
        parser.error(f"argument --budget: {args.budget:,} is more than a structure keeps "
                     f"unpruned; valid: 1 to {largest:,}")
    with flags.reported(parser):
        check_output_dir(args.runs_dir, "--runs-dir")
        check_output_dir(Path(args.out).parent, "--out")
        # missing data: downloaded (or said) here, as the runs' train.py would, not per run
        load_or_download("mnist", args.data_dir, train=False)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # written after all the training
    rows = []
    for i, (label, count, budget, structure_flags) in enumerate(plan):
        run_dir = Path(args.runs_dir) / str(i)
        cmd = [sys.executable, str(REPO / "train.py"), "--arch", "fc2", *structure_flags,
               "--sparsity", f"{1 - budget / count:.8f}",
               "--epochs", str(args.epochs), "--limit-train", str(args.limit_train),
               "--data-dir", args.data_dir, "--no-progress-bar", "--out", str(run_dir),
               "--overwrite"]
        code = subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode
        if code:  # train.py said why on stderr, in one line
            sys.exit(code)
        result = json.loads((run_dir / "results.json").read_text())
        rows.append({"structure": label, "budget": budget, "command": " ".join(cmd[1:]),
                     "sparsity": result["config"]["sparsity"], "init": init_used(result["spec"]),
                     **{k: result[k] for k in ("params", "test_acc", "val_acc",
                                               "train_seconds")}})
        print(f"{label}: {result['test_acc']:.4f}", flush=True)
    lines = [f"# MNIST fc2 at matched kept-parameter budgets ({args.epochs} epoch(s), first "
             f"{args.limit_train} training examples, seed 0, CPU)", "",
             "| structure | init | maskable | kept | sparsity | test acc | train s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['structure']} | {r['init']} | {r['params']['maskable']:,} | "
              f"{r['params']['kept']:,} | {r['sparsity']:.4f} | {100 * r['test_acc']:.2f} | "
              f"{r['train_seconds']:.0f} |" for r in rows]
    with flags.reported(parser):  # (a full disk: one line, and the previous files kept)
        write_text_atomic(args.out + ".json", json.dumps(rows, indent=1))
        write_text_atomic(args.out + ".md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
