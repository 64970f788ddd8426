"""The GPU suite (issue 11): CUDA tests, host-device syncs, speed targets and training end to end
in one command, written to one Markdown report.

Checks, in order, each a step with a time budget (on CUDA; a step over budget is noted):
* ``pytest -m cuda``: the tests skipped on the CPU;
* no host-device synchronisation in a training step (mask, forward, backward, optimizer) of a
  dense, a subsetsum and a fixedsize layer, of a whole Lightning training step of LeNet5, of
  an eager batched stack step and of the CIFAR-10 crop-flip augmentation of a training batch:
  ``torch.cuda.set_sync_debug_mode("warn")`` around the steps, every sync recorded with the line
  that made it (so one run finds them all, where ``"error"`` stops at the first);
* the layer target: subsetsum (784 -> 500, 5 pairs) against the wide dense layer of the same
  maskable count, relu and identity, batch 64 and 256, <= 1.25x (``bench_layers``); the top-k
  mask of 10M scores against a full sort;
* a LeNet5 edge-popup epoch (subsetsum, identity) on full MNIST, < 2 s, beside the same epoch as
  a bare PyTorch loop (the Lightning overhead) and eagerly; an FC2 wide epoch; the host time
  Lightning adds to a step of a tiny model (``bench_lightning_overhead``);
* a 14-member LeNet5 stack epoch against the single LeNet5 run's above (``bench_stack``), and
  from them the stack against 14 runs one after another, extrapolated (14 × the single run's
  epoch ÷ the stack's: the 14 runs are not run); a stack step with the members batched (one
  vmapped forward) against one by one;
* the subset-sum solver: 397,000 instances at n = 21, < 5 s; 2,572 at n = 30 (``bench_subsetsum``);
* ``train.py --devices 1`` end to end with ``--precision 32-true`` and ``bf16-mixed``: test
  accuracies within one percentage point.

Epoch times are of the last epoch of two, under ``--quick`` too (the first pays for CUDA and
cuDNN warm-up). Exit status: 0 when every check ran (a missed target is a FAIL row), 1 when a
check crashed (an ERROR row; the others still run), 2 on bad flags.

On a GPU machine (no wandb, no package index; the data travels gzipped). Here, once:

    benchmarks/gpu_data.sh   # gzips ../shared/data's MNIST IDX files into .gpu_data (git-ignored)

then the device call, from the repository root, with ``carry: [".gpu_data"]``:

    PYTHONPATH=. python benchmarks/gpu_suite.py --device cuda --data-dir .gpu_data \\
        --report $OUT/gpu_report.md

``--quick`` is the 2-minute smoke version; ``--device cpu --quick`` runs everything that does
not need CUDA, scaled down (tests/test_gpu_suite.py runs it, so the suite cannot rot).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import bench_layers  # the benchmarks beside this file (sys.path[0] when run as a script)
import bench_lightning_overhead
import bench_member_batching
import bench_stack
import bench_subsetsum
import flags
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

import lotterynet as ln
from lotterynet.augment import AUGMENTATIONS, batch_seed
from lotterynet.checkpointing import write_text_atomic
from lotterynet.cli import main as cli_main
from lotterynet.config import make_config
from lotterynet.cuda_graphs import StepGraphs
from lotterynet.datamodule import EpochPermutation, TensorLoader, check_data_set
from lotterynet.machine import cpu_name
from lotterynet.optim import OPTIMIZERS
from lotterynet.path_checks import check_output_dir
from lotterynet.run import build_module, data_module, make_trainer, run
from lotterynet.run_callbacks import EpochTimer
from lotterynet.stack_model import frozen_prefix

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 600  # seconds: a hung subprocess, not a slow one
SKIPPED = "skipped (no CUDA)"
NOT_JUDGED = "not judged (CPU)"  # the targets are for one H100


@dataclass
class Scale:
    """What ``--quick`` scales down."""
    repeats: int = 20
    limit_train: int | None = None  # full MNIST (55,000 after the validation split)
    val_size: int = 5000
    epochs: int = 2
    members: int = 14
    mask_numel: int = 10**7
    n21: int = 397_000
    n30: int = 2572
    budget: float = 1.0  # multiplies the step budgets


QUICK = Scale(repeats=1, limit_train=256, val_size=256, epochs=2, members=2, mask_numel=10**5,
              n21=1000, n30=10, budget=0.25)  # epochs: one to warm up, one to time


@dataclass
class Row:
    check: str
    measured: str
    target: str
    result: str  # PASS, FAIL, REPORT, SKIPPED, NOT_JUDGED or ERROR


@dataclass
class Suite:
    device: torch.device
    scale: Scale
    data_dir: str
    tmp: Path
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lenet5_epoch: float | None = None  # the single run the stack is compared with

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def add(self, check: str, measured: str, target: str, met: bool | None) -> None:
        """A row; ``met`` None: a figure to report, without a target."""
        result = ("REPORT" if met is None else NOT_JUDGED if not self.cuda
                  else "PASS" if met else "FAIL")
        self.rows.append(Row(check, measured, target, result))

    def skip(self, check: str, target: str) -> None:
        self.rows.append(Row(check, "-", target, SKIPPED))

    def config(self, **fields):
        base = dict(epochs=self.scale.epochs, limit_train=self.scale.limit_train,
                    val_size=self.scale.val_size, data_dir=self.data_dir,
                    accelerator="gpu" if self.cuda else "cpu", progress_bar=False)
        return make_config({**base, **fields})

    def out(self, name: str) -> str:
        return str(self.tmp / name)


# ---------------------------------------------------------------------------------- checks


def cuda_tests(suite: Suite) -> None:
    target = "all pass"
    if not suite.cuda:
        return suite.skip("CUDA tests (pytest -m cuda)", target)
    # Only the files that hold CUDA tests: the others may import what the GPU machine lacks.
    files = [str(p) for p in sorted((REPO / "tests").glob("test_*.py"))
             if "requires_cuda" in p.read_text()]
    data = {"LOTTERYNET_DATA": str(Path(suite.data_dir).resolve())} if suite.data_dir else {}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p",
                           "no:cacheprovider", *files], cwd=REPO, capture_output=True, text=True,
                          timeout=TIMEOUT, env={**os.environ, "PYTHONPATH": str(REPO), **data})
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    counts = dict((k, int(n)) for n, k in re.findall(r"(\d+) (passed|failed|error|skipped)",
                                                     summary))
    suite.add("CUDA tests (pytest -m cuda)", f"{counts.get('passed', 0)} passed, "
              f"{counts.get('failed', 0) + counts.get('error', 0)} failed", target,
              proc.returncode == 0 and counts.get("passed", 0) > 0)
    if proc.returncode:
        suite.notes.append(f"pytest -m cuda: {summary}\n\n```\n{proc.stdout[-3000:]}\n```")


def syncs_in(step: Callable[[], None], warmup: int = 2, steps: int = 3) -> list[str]:
    """``file:line`` of every host-device synchronisation in ``steps`` calls of ``step`` (after
    ``warmup`` calls outside the watch: first calls allocate and pick kernels)."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sync_sites(caught)


#: What torch warns at a synchronising op in ``set_sync_debug_mode("warn")`` (c10's own text).
SYNC_WARNING = "called a synchronizing CUDA operation"


def sync_sites(caught: list[warnings.WarningMessage]) -> list[str]:
    """``folder/file:line`` of each sync warning (the Python line that called the op); not
    the warning that the debug mode itself "does not yet detect all synchronizing operations",
    given once per process by the first ``set_sync_debug_mode`` (on the H200 it was counted
    as a sync of whichever check ran first)."""
    return [f"{'/'.join(Path(w.filename).parts[-2:])}:{w.lineno}" for w in caught
            if SYNC_WARNING in str(w.message)]


def layer_step(structure: str, device: torch.device) -> Callable[[], None]:
    """One edge-popup step of a 784 -> 500 layer: mask, forward, backward, SGD with momentum."""
    layer = ln.SubnetLinear(784, 500, structure=structure, sparsity=0.5, seed=0).to(device)
    scores = [p for p in layer.parameters() if p.requires_grad]
    optimizer = OPTIMIZERS.get("sgd")(scores, lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(64, 784, device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        layer(x).square().mean().backward()
        optimizer.step()

    return step


def augment_step(device: torch.device) -> Callable[[], None]:
    """The crop-flip augmentation of a batch of 128 CIFAR-10-sized images, each call with the
    next batch's seed, as the training loader draws them."""
    x = torch.randn(128, 3, 32, 32, device=device)
    fill = torch.full((3, 1, 1), -1.9, device=device)
    batches = iter(range(10**6))
    return lambda: AUGMENTATIONS.get("crop-flip")(x, batch_seed(0, 0, 0, next(batches)), fill)


class SyncWatch(pl.Callback):
    """Records the syncs of Lightning training steps (batches after the first two)."""

    def __init__(self):
        self.syncs: list[str] = []
        self._caught = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx >= 2:
            self._watch = warnings.catch_warnings(record=True)
            self._caught = self._watch.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx >= 2:
            torch.cuda.set_sync_debug_mode("default")
            self._watch.__exit__(None, None, None)
            self.syncs += sync_sites(self._caught)


def lightning_step_syncs(suite: Suite) -> list[str]:
    config = suite.config(arch="lenet5", structure="subsetsum", activation="identity", epochs=1,
                          limit_train=64 * 6, val_size=0, out=suite.out("sync"))
    data = data_module(config)
    watch = SyncWatch()
    trainer = make_trainer(config, Path(config.out), [], EpochTimer(), callbacks=(watch,))
    trainer.fit(build_module(config, data), datamodule=data)
    return watch.syncs


def no_syncs(suite: Suite) -> None:
    cases = {f"{s} layer step": lambda s=s: syncs_in(layer_step(s, suite.device))
             for s in ("dense", "subsetsum", "fixedsize")}
    cases["Lightning training step (LeNet5)"] = lambda: lightning_step_syncs(suite)
    cases["batched stack step (eager)"] = lambda: syncs_in(
        bench_member_batching.stack_step(suite.scale.members, True, suite.device, graphed=False))
    cases["crop-flip augmentation (CIFAR-10 batch)"] = lambda: syncs_in(
        augment_step(suite.device))
    for name, find in cases.items():
        check = f"no host-device sync: {name}"
        if not suite.cuda:
            suite.skip(check, "0 syncs")
            continue
        syncs = find()
        suite.add(check, f"{len(syncs)} syncs", "0 syncs", not syncs)
        if syncs:
            suite.notes.append(f"{check}: at {', '.join(sorted(set(syncs)))}")


def layer_target(suite: Suite) -> None:
    """Judged on the step as training runs it (forward and backward from a CUDA graph); the
    eager step, launch-bound, beside it."""
    for graphed in (True, False):
        for r in bench_layers.target_ratios(suite.device, suite.scale.repeats,
                                            members=(False,), updates=(True,), graphed=graphed):
            suite.add(f"layer step subsetsum / wide, {r['activation']}, batch {r['batch']}"
                      f"{'' if graphed else ', eager (no CUDA graph)'}",
                      f"{r['ratio']:.2f}x ({r['subsetsum'] * 1e3:.3f} / "
                      f"{r['wide'] * 1e3:.3f} ms)", "<= 1.25x" if graphed else "report",
                      r["ratio"] <= 1.25 if graphed else None)


def mask_selection(suite: Suite) -> None:
    numel = suite.scale.mask_numel
    fast, slow = bench_layers.mask_times(numel, suite.device, suite.scale.repeats)
    suite.add(f"mask of {numel:,} scores: top-k / full sort",
              f"{fast * 1e3:.2f} / {slow * 1e3:.2f} ms ({slow / fast:.1f}x faster)", "report",
              None)


def bare_epoch_seconds(config, device: torch.device) -> float:
    """The last of ``config.epochs`` epochs as a bare PyTorch loop over the same model,
    optimizer and batches, the frozen prefix run once per example and the rest through the same
    CUDA graphs as the run's, then the validation split's forward in evaluation batches, as the
    run's epoch ends (its timer counts the validation): what an epoch costs without
    Lightning."""
    data = data_module(config)
    data.setup()
    module = build_module(config, data).to(device)
    optimizer = module.configure_optimizers()["optimizer"]
    (x, y), (x_val, y_val) = ((t.to(device) for t in data.splits[s]) for s in ("train", "val"))
    prefix = frozen_prefix(module.model)
    rest = module.model[len(prefix):] if prefix is not None else module.model
    data.encode_with(prefix)
    x, x_val = data._encoded(x), data._encoded(x_val)  # once per example, as the run's loaders
    graphs = StepGraphs(config.cuda_graphs)
    sampler = EpochPermutation(len(x), shuffle=True, seed=config.seed)
    seconds = 0.0
    for epoch in range(config.epochs):
        sampler.set_epoch(epoch)
        graphs.clear()  # as the run does at each epoch's start
        bench_layers.sync(device)
        start = time.perf_counter()
        for xb, yb in TensorLoader(x, y, config.batch_size, sampler):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(graphs(rest, (rest,), xb), yb).backward()
            optimizer.step()
        module.eval()
        with torch.no_grad():
            for xb, yb in zip(x_val.split(data.eval_batch_size), y_val.split(data.eval_batch_size)):
                F.cross_entropy(rest(xb), yb)
        module.train()
        bench_layers.sync(device)
        seconds = time.perf_counter() - start
    return seconds


def epochs(suite: Suite) -> None:
    lenet = suite.config(arch="lenet5", structure="subsetsum", activation="identity",
                         out=suite.out("lenet5"))
    result = run(lenet)
    epoch = suite.lenet5_epoch = result["seconds_per_epoch"][-1]
    examples = f"{suite.scale.limit_train or 'all'} examples"
    suite.add(f"LeNet5 edge-popup epoch (subsetsum identity, {examples})",
              f"{epoch:.2f} s (test acc {100 * result['test_acc']:.1f}%)", "< 2 s", epoch < 2)
    eager = run(suite.config(arch="lenet5", structure="subsetsum", activation="identity",
                             cuda_graphs=False, out=suite.out("lenet5-eager")))
    eager_epoch = eager["seconds_per_epoch"][-1]
    suite.add("LeNet5 epoch without CUDA graphs (--no-cuda-graphs)",
              f"{eager_epoch:.2f} s ({eager_epoch / epoch:.2f}x the graphed epoch; test acc "
              f"{100 * eager['test_acc']:.1f}%)", "report", None)
    bare = bare_epoch_seconds(lenet, suite.device)
    suite.add("LeNet5 epoch: Lightning / bare PyTorch loop",
              f"{epoch / bare:.2f}x ({epoch:.2f} / {bare:.2f} s)", "report", None)
    wide = run(suite.config(arch="fc2", structure="wide", out=suite.out("fc2-wide")))
    suite.add(f"FC2 wide epoch ({examples})", f"{wide['seconds_per_epoch'][-1]:.2f} s "
              f"(test acc {100 * wide['test_acc']:.1f}%)", "report", None)


def lightning_overhead(suite: Suite) -> None:
    """What Lightning and our module add to a step's host time (``bench_lightning_overhead``:
    a tiny model, so the loops' own time shows)."""
    steps = 20 if suite.scale.limit_train else 500
    ms = bench_lightning_overhead.step_times(
        bench_lightning_overhead.tiny_data(suite.data_dir, steps), suite.device.type,
        repeats=1 if suite.scale.limit_train else 3, steps=steps)
    bare = ms.pop("bare")
    for name, value in ms.items():
        suite.add(f"host time a step, over a bare loop: {name}",
                  f"{value:.3f} ms a step, {value - bare:+.3f} ms over the bare loop's "
                  f"{bare:.3f}", "report", None)


def stack(suite: Suite) -> None:
    args = SimpleNamespace(arch="lenet5", structure="subsetsum", activation="identity",
                           epochs=suite.scale.epochs, data_dir=suite.data_dir,
                           limit_train=suite.scale.limit_train, members=suite.scale.members,
                           device=suite.device.type)
    cells = [make_config({**c.to_dict(), "val_size": suite.scale.val_size})
             for c in bench_stack.configs(args, suite.tmp / "cells")]
    stacked = bench_stack.stack_epoch_seconds(cells, suite.tmp)[-1]
    single, n = suite.lenet5_epoch, len(cells)
    suite.add(f"{n}-member LeNet5 stack epoch / single run's", f"{stacked / single:.2f}x "
              f"({stacked:.2f} / {single:.2f} s)", "report", None)
    # The stacked-sweeps issue's row: the stack against its cells one after another, by
    # training epochs, extrapolated from the one single run (every cell's epoch costs about
    # the single run's: only k differs); the cells are not run.
    speedup = n * single / stacked
    suite.add(f"{n}-member LeNet5 stack vs {n} single runs one after another, extrapolated: "
              f"{n} x one run's epoch / the stack's epoch", f"{speedup:.2f}x ({n} x "
              f"{single:.2f} / {stacked:.2f} s)", ">= 6x", speedup >= 6)


def stack_batching(suite: Suite) -> None:
    members = suite.scale.members
    steps = {batch: bench_member_batching.stack_step(members, batch, suite.device)
             for batch in (True, False)}
    times = bench_layers.median_times(steps, suite.device, suite.scale.repeats)
    suite.add(f"{members}-member stack step: members batched / one by one",
              f"{times[True] / times[False]:.2f}x ({times[True] * 1e3:.2f} / "
              f"{times[False] * 1e3:.2f} ms)", "report", None)
    batched = steps[True]
    ran = "one vmapped forward" if batched.stack.unbatchable is None else \
        f"members one by one ({batched.stack.unbatchable})"
    graphed = f"{batched.graphs.captures} graph(s)" if batched.graphs.failed is None else \
        f"eager ({batched.graphs.failed})"
    suite.notes.append(f"batched stack step: {ran}, {graphed}")


def solver(suite: Suite) -> None:
    for n, count, target in ((21, suite.scale.n21, 5.0), (30, suite.scale.n30, None)):
        targets, coeffs = (t.to(suite.device) for t in bench_subsetsum.instances(count, n, n))
        bench_subsetsum.run(targets[:2], coeffs[:2])  # warm-up
        (_, _, err), seconds = bench_subsetsum.timed(bench_subsetsum.run, targets, coeffs)
        suite.add(f"subset-sum solver, n = {n}, {count:,} instances",
                  f"{seconds:.2f} s (error median {err.median():.1e})",
                  f"< {target:g} s" if target else "report",
                  None if target is None else seconds < target)


def train_accuracy(argv: list[str]) -> float:
    """Test accuracy (%) of ``train.py ARGV``, run through its ``main`` in this process (the
    same code path, without another interpreter start)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = cli_main(argv)
    found = re.search(r"test accuracy ([\d.]+)%", printed.getvalue())
    if status or not found:
        raise RuntimeError(f"train.py {' '.join(argv)}: exit {status}, no test accuracy")
    return float(found.group(1))


def train_cli(suite: Suite) -> None:
    accuracies = {}
    for precision in ("32-true", "bf16-mixed"):
        argv = ["--devices", "1", "--accelerator", "gpu" if suite.cuda else "cpu",
                "--precision", precision, "--arch", "lenet5", "--epochs", "1",
                "--val-size", str(suite.scale.val_size), "--no-progress-bar",
                "--data-dir", suite.data_dir, "--out", suite.out(f"train-{precision}")]
        if suite.scale.limit_train:
            argv += ["--limit-train", str(suite.scale.limit_train)]
        accuracies[precision] = train_accuracy(argv)
    gap = abs(accuracies["bf16-mixed"] - accuracies["32-true"])
    suite.add("train.py LeNet5 1 epoch: test acc bf16-mixed vs 32-true",
              f"{accuracies['bf16-mixed']:.2f}% vs {accuracies['32-true']:.2f}% ({gap:.2f} pt)",
              "within 1 pt", gap <= 1.0)


# Each check with its budget in seconds on one H100 (full run; --quick scales it): 445 s in
# all, of the 480 s one device call allows.
CHECKS: list[tuple[Callable[[Suite], None], float]] = [
    (cuda_tests, 45), (no_syncs, 30), (layer_target, 40), (mask_selection, 15), (epochs, 80),
    (lightning_overhead, 30), (stack, 75), (stack_batching, 20), (solver, 30), (train_cli, 80)]


# ---------------------------------------------------------------------------------- report


def environment(device: torch.device) -> list[str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        versions = f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    else:
        name = f"CPU: {cpu_name()} ({torch.get_num_threads()} threads)"
        versions = "CUDA not used"
    return [f"- device: {name}",
            f"- torch {torch.__version__}, {versions}, Lightning {pl.__version__}, "
            f"Python {platform.python_version()}"]


def write_report(path: Path, suite: Suite, timings: list[tuple[str, float, float]],
                 total: float, quick: bool) -> None:
    limit = 120 if quick else 480
    lines = ["# lotterynet GPU suite", "", *environment(suite.device),
             f"- mode: {'quick' if quick else 'full'}; {total:.0f} s in all (limit on CUDA: "
             f"{limit} s)", "", "| check | measured | target | result |", "|---|---|---|---|",
             *(f"| {r.check} | {r.measured} | {r.target} | {r.result} |" for r in suite.rows),
             "", "## steps", "", "| step | seconds | budget (CUDA) |", "|---|---|---|",
             *(f"| {name} | {s:.1f} | {b:.0f}{' (over)' if suite.cuda and s > b else ''} |"
               for name, s, b in timings)]
    if suite.notes:
        lines += ["", "## notes", "", *(f"- {note}" for note in suite.notes)]
    write_text_atomic(path, "\n".join(lines) + "\n")


def run_suite(suite: Suite) -> list[tuple[str, float, float]]:
    """Every check in turn; a crash becomes an ERROR row (and a note with the traceback)."""
    timings = []
    for check, budget in CHECKS:
        budget *= suite.scale.budget
        start = time.perf_counter()
        try:
            check(suite)
        except Exception as err:  # reported, and the exit status says so
            suite.rows.append(Row(check.__name__, f"{type(err).__name__}: {err}"[:200], "-",
                                  "ERROR"))
            suite.notes.append(f"{check.__name__} crashed:\n\n```\n{traceback.format_exc()}```")
        timings.append((check.__name__, time.perf_counter() - start, budget))
        print(f"{check.__name__}: {timings[-1][1]:.1f} s", flush=True)
    return timings


def parse_args(argv=None) -> argparse.Namespace:
    """The flags, each checked before the suite starts: an unknown flag is named before the
    default device is checked (argparse would check it first), the report's folder is one we
    may write in, and MNIST is under ``--data-dir``."""
    parser = flags.parser(__file__, __doc__)
    parser.add_argument("--device", type=flags.device,
                        help="cuda (the default), or cpu with --quick (the CI smoke run)")
    parser.add_argument("--quick", action="store_true", help="the 2-minute smoke version")
    parser.add_argument("--data-dir", default=".gpu_data",
                        help="MNIST in torchvision's layout, plain or gzipped IDX files "
                        "(default: .gpu_data)")
    parser.add_argument("--report", type=Path, default=Path("gpu_report.md"),
                        help="the Markdown report's file (default: gpu_report.md)")
    args = parser.parse_args(argv)
    if args.device is None:
        try:
            args.device = flags.device("cuda")
        except argparse.ArgumentTypeError as err:
            parser.error(f"argument --device: the default {err}")
    if torch.device(args.device).type == "cpu" and not args.quick:  # (its full sizes are a GPU's)
        parser.error("--device cpu runs the suite only scaled down: add --quick (the full "
                     "suite is sized for a GPU: --device cuda)")
    if args.report.is_dir():
        parser.error(f"--report {str(args.report)!r} is a folder; give the report's file, "
                     f"e.g. {str(args.report / 'gpu_report.md')!r}")
    with flags.reported(parser):
        check_output_dir(args.report.parent, "--report")
        check_data_set("mnist", args.data_dir)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        suite = Suite(torch.device(args.device), QUICK if args.quick else Scale(),
                      args.data_dir, Path(tmp))
        timings = run_suite(suite)
    write_report(args.report, suite, timings, time.perf_counter() - start, args.quick)
    print(f"report: {args.report}")
    return 1 if any(r.result == "ERROR" for r in suite.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
