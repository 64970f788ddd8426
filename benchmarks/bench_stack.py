"""Stacked sweep against its cells run one after another (the stacked-sweeps issue).

One epoch of Pensia et al.'s 14 sparsities, measured in one invocation:
* ``cells``: the 14 runs one after another, each an ordinary ``lotterynet.run.run`` (what
  ``train.py --sweep --no-stack`` does per cell);
* ``stack``: the same 14 configs as one stacked model (``lotterynet.stack.run_stack``).
Prints wall times (data loading, Lightning setup, training, test), CPU times (user + system
of the process: robust when other jobs share the machine), the training epoch times, their
ratios, and the peak memory of the stack against one single run, each measured in a fresh
process (CPU: that process's own peak RSS, VmHWM; CUDA: ``max_memory_allocated``). ``--jobs N``
trains the stack as N parts side by side, each its own ``train.py --stack-file`` on its share of
the threads (what a sweep's ``--jobs-per-device N`` runs); the cells still run one after another
on all threads.

    python benchmarks/bench_stack.py --arch lenet5 --structure subsetsum --activation identity
    python benchmarks/bench_stack.py --arch fc2 ... [--device cuda] [--limit-train N]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bench_layers  # the benchmarks beside this file (sys.path[0] when run as a script)
import flags
import torch

from lotterynet.config import make_config
from lotterynet.config_schema import training_examples
from lotterynet.machine import cpu_name, keep_freed_memory
from lotterynet.run import run
from lotterynet.stack import run_stack
from lotterynet.stack_files import write_stack_file
from lotterynet.sweep_jobs import Job, JobRunner
from lotterynet.sweep_plan import balanced_parts

PAPER_SPARSITIES = [0, 0.01, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975, 0.98,
                    0.99]


def configs(args, out: Path) -> list:
    base = dict(arch=args.arch, structure=args.structure, activation=args.activation,
                epochs=args.epochs, data_dir=args.data_dir, limit_train=args.limit_train,
                accelerator="gpu" if args.device == "cuda" else "cpu", progress_bar=False)
    return [make_config({**base, "sparsity": s, "out": str(out / f"s{s:g}")})
            for s in PAPER_SPARSITIES[:args.members]]


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished subprocesses, all threads:
    unlike wall time, it does not grow when other processes share the cores."""
    return sum(u.ru_utime + u.ru_stime for u in map(
        resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))


def timed(fn) -> tuple[float, float, float]:
    """``(wall seconds, CPU seconds, training-epoch seconds)`` of ``fn()``, which returns the
    epoch seconds."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    epochs = fn()
    return time.perf_counter() - wall, cpu_seconds() - cpu, epochs


def cells_one_after_another(cells) -> float:
    return sum(sum(run(c)["seconds_per_epoch"]) for c in cells)


def stack_epoch_seconds(cells, out: Path) -> list[float]:
    """Seconds of each training epoch of the cells trained as one stack."""
    return run_stack(cells, out / "stack", [Path(c.out) for c in cells])[0]["seconds_per_epoch"]


def parallel_stack_epoch_seconds(cells, out: Path, jobs: int) -> float:
    """The cells as ``jobs`` stacks of about equal epochs run side by side, each in its own
    ``train.py --stack-file`` (as a sweep runs them); the training-epoch seconds of the part
    that took longest."""
    budgets = {c.out: c.epochs for c in cells}
    parts = balanced_parts(list(budgets), budgets, jobs)
    by_out = {c.out: c for c in cells}
    runs = []
    for i, part in enumerate(parts):
        stack_file = write_stack_file([by_out[o] for o in part], out / f"stack{i}",
                                      [Path(o) for o in part])
        runs.append(Job(f"stack {i}", ["--stack-file", str(stack_file)],
                        out / f"stack{i}" / "train.log", part))
    runner = JobRunner()
    with ThreadPoolExecutor(jobs) as pool:
        codes = list(pool.map(lambda job: runner.run(job, None, jobs), runs))
    if any(codes):
        raise RuntimeError(f"a stack failed (exit codes {codes}); see {out}/stack*/train.log")
    return max(sum(json.loads((Path(part[0]) / "results.json").read_text())
                   ["seconds_per_epoch"]) for part in parts)


def peak_memory_mib(args, mode: str) -> float:
    """Peak memory of one single run (``single``) or of the stack, in a fresh process."""
    command = [sys.executable, __file__, *args.argv, "--memory-child", mode]
    return float(subprocess.run(command, capture_output=True, text=True, check=True)
                 .stdout.strip().splitlines()[-1])


def memory_child(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cells = configs(args, Path(tmp))
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        if args.memory_child == "single":
            run(cells[0])
        else:
            run_stack(cells, Path(tmp) / "stack", [Path(c.out) for c in cells])
    if args.device == "cuda":
        print(torch.cuda.max_memory_allocated() / 2**20)
    else:
        print(bench_layers.peak_rss_kib() / 1024)


def main(argv=None) -> None:
    parser = flags.parser(__file__, __doc__)
    parser.add_argument("--arch", default="lenet5", help="train.py's --arch (default: lenet5)")
    parser.add_argument("--structure", default="subsetsum",
                        help="train.py's --structure (default: subsetsum)")
    parser.add_argument("--activation", default="identity",
                        help="train.py's --activation (default: identity)")
    parser.add_argument("--members", type=flags.integer(1, len(PAPER_SPARSITIES)),
                        default=len(PAPER_SPARSITIES), metavar="N",
                        help=f"cells in the stack: the paper's first N sparsities, 1 to "
                        f"{len(PAPER_SPARSITIES)} (default: {len(PAPER_SPARSITIES)})")
    parser.add_argument("--epochs", type=flags.integer(1), default=1,
                        help="epochs of every cell (default: 1)")
    parser.add_argument("--limit-train", type=flags.integer(1), default=None, metavar="N",
                        help="train.py's --limit-train (default: the whole split)")
    parser.add_argument("--data-dir", default="../shared/data",
                        help="folder holding MNIST/ in torchvision's layout (default: "
                        "../shared/data)")
    parser.add_argument("--device", type=flags.device, default="cpu", choices=["cpu", "cuda"],
                        help="torch device (default: cpu)")
    parser.add_argument("--jobs", type=flags.integer(1), default=1,
                        help="train the stack as this many parts side by side (CPU)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # for the memory children
    keep_freed_memory()  # as train.py does
    if args.memory_child:
        return memory_child(args)
    with flags.reported(parser):  # a bad --arch/--structure/--device, missing data: one line
        measure(args)


def measure(args) -> None:
    tmp = Path(tempfile.mkdtemp())
    try:
        cells = configs(args, tmp / "cells")
        cells_wall, cells_cpu, cells_epochs = timed(lambda: cells_one_after_another(cells))
        shutil.rmtree(tmp / "cells")
        if args.jobs > 1:
            stack_wall, stack_cpu, stack_epochs = timed(lambda: parallel_stack_epoch_seconds(
                configs(args, tmp / "cells"), tmp, args.jobs))
        else:
            stack_wall, stack_cpu, stack_epochs = timed(
                lambda: sum(stack_epoch_seconds(configs(args, tmp / "cells"), tmp)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    single_mib, stack_mib = peak_memory_mib(args, "single"), peak_memory_mib(args, "stack")
    device = torch.cuda.get_device_name() if args.device == "cuda" else (
        f"{cpu_name()} ({torch.get_num_threads()} threads"
        f"{f'; stack: {args.jobs} parts side by side' if args.jobs > 1 else ''})")
    row = {"arch": args.arch, "structure": f"{args.structure}/{args.activation}",
           "members": len(cells), "epochs": args.epochs,
           "train_examples": training_examples(cells[0]), "limit_train": args.limit_train,
           "held_out": cells[0].val_size, "device": device,
           "cells_wall_s": round(cells_wall, 1), "stack_wall_s": round(stack_wall, 1),
           "wall_speedup": round(cells_wall / stack_wall, 2),
           "cells_cpu_s": round(cells_cpu, 1), "stack_cpu_s": round(stack_cpu, 1),
           "cpu_speedup": round(cells_cpu / stack_cpu, 2),
           "cells_epoch_s": round(cells_epochs, 1), "stack_epoch_s": round(stack_epochs, 1),
           "epoch_speedup": round(cells_epochs / stack_epochs, 2),
           "single_peak_mib": round(single_mib), "stack_peak_mib": round(stack_mib),
           "memory_ratio": round(stack_mib / single_mib, 2)}
    print(json.dumps(row))
    print(markdown_row(row))


def markdown_row(row: dict) -> str:
    """``row`` as a row of BENCHMARKS.md's "Stacked sweeps" table, in its columns."""
    examples = f"{row['train_examples']:,}" + (
        f" (full split, {row['held_out']:,} held out)" if row["limit_train"] is None else "")
    return (f"| {row['arch']} | {row['structure']} | {row['members']} | {examples} "
            f"| {row['cells_wall_s']} s | {row['stack_wall_s']} s | **{row['wall_speedup']}×** "
            f"| {row['cpu_speedup']}× | {row['cells_epoch_s']} s | {row['stack_epoch_s']} s "
            f"| {row['epoch_speedup']}× | {row['single_peak_mib']} MiB "
            f"| {row['stack_peak_mib']} MiB ({row['memory_ratio']}×) | {row['device']} |")


if __name__ == "__main__":
    main()
