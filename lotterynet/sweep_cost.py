"""What a sweep will cost on a machine without CUDA, said before it starts, and one of many
hours refused without ``--yes`` (:func:`check_cpu_cost`): the stated epoch times per
architecture (:data:`CPU_EPOCH_SECONDS`, ...) and the estimate made from them
(:func:`cpu_estimate`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import make_config
from .config_schema import RunConfig, device_count, training_examples
from .data import DATASETS
from .datamodule import EVAL_BATCH
from .errors import ConfigError, plural
from .models import build_model
from .run import data_module, model_spec
from .run_dir import read_results
from .sweep_cells import cell_configs, cells_use, plan_cell
from .sweep_grid import Sweep
from .sweep_plan import balanced_parts, plan_stacks
from .trainer_options import limited_batches

#: Seconds per training epoch over 55,000 MNIST images on this project's 2-core CPU machine
#: (single runs, subset-sum / wide; ``results/``, ``BENCHMARKS.md``): what a CPU sweep is
#: estimated with before it starts. LeNet5: 4.6 s on one idle thread since its frozen convs
#: run once per example (``BENCHMARKS.md``; a stack member 3.7 s), with the margin of the
#: stacked figure below.
CPU_EPOCH_SECONDS = {"fc2": 35.0, "fc4": 60.0, "lenet5": 5.0}
#: The same for one member of a stack (full-MNIST epoch of a 14-member stack / 14). LeNet5's
#: members share the frozen convolutions and the loop: 2.6 s on the idle machine with the
#: member step of 2d54fd8 (``benchmarks/bench_stack.py``, one thread), 3.7 s on the machine of
#: session 2026-12-03, 5.2-5.5 s with the 2 cores shared with two other jobs; 4 s allows for
#: a shared machine. FC2 / FC4 members share nothing costly (``BENCHMARKS.md``: 1.0x), so they
#: cost what a single run costs.
CPU_STACKED_EPOCH_SECONDS = {"lenet5": 4.0}
#: The training examples of the epochs timed above (60,000 less 5,000 held out): a cell's
#: epoch is estimated in proportion to its own (all 60,000 with ``val_size: 0``, as the
#: paper's sweeps; ``--limit-train``).
FULL_EPOCH = 55000
#: What a stack or single cell costs besides its epochs: its start (its data read, its model
#: built, its Trainer made: ~0.7 s, and where it runs in a train.py of its own, with
#: ``--jobs-per-device`` N > 1 or beside a DDP cell, python, torch and Lightning imported
#: first: ~7 s), and what an image of a validation or test pass costs (forward only, in
#: batches of 1,000), as a share of one of the cell's training images. Measured (CPU seconds
#: of one thread, this 2-core machine shared with other jobs, load 8-9): ``import torch,
#: pytorch_lightning, lotterynet.run`` 7.05 s; fc2 subset-sum 0.57 ms a training image and
#: 0.072 a validated one (0.13), fc2 dense 0.17 and 0.011 (0.07), LeNet5 0.18 and 0.033 (0.18),
#: from runs of 1 and 4 epochs of 2,000 images with and without 5,000 validation images, in
#: one process after one run; their starts 0.6-0.7 s (malach 1.3 s). (The epoch times above
#: hold their validation pass, a few per cent of them.)
CPU_START_SECONDS = 1.0
CPU_IMPORT_SECONDS = 7.0
CPU_EVAL_SHARE = 0.15
#: The epoch times above are of each architecture's default structure (subset-sum, 5 pairs);
#: a cell's image costs this share of them, and the rest in proportion to the parameters it
#: trains (its scores; the trained baseline's weights) against that default's. Measured as
#: above, a training image against the default's (trained parameters'): fc2 dense 0.29
#: (0.20), malach 3.6 (3.17); LeNet5 dense 0.43 (0.20): this share fits 0.12 (fc2) and 0.29
#: (LeNet5).
CPU_FIXED_SHARE = 0.2
#: A CPU sweep estimated to take longer than this needs ``--yes`` to start.
CPU_HOURS_WITHOUT_ASKING = 4.0


def cpu_estimate(sweep: Sweep, sweep_dir: Path, stack: bool = True, jobs: int = 1
                 ) -> tuple[float, str] | None:
    """``(hours, description)`` for the cells of ``sweep`` not finished yet on the CPU, stacked as
    :func:`~lotterynet.sweep.run_cells` will stack them (a stack that resumes: every member it
    holds, for the epochs each has left, as :func:`plan_stacks` read them; a cell that resumes
    singly, its epochs left) and, with ``jobs`` at once, spread over them longest first (over at
    most as many as the CPU has cores), each cell at its own architecture's epoch time for its
    model's size (:func:`model_sizes`); None where an architecture of the cells has no stated epoch
    time. A cell's epoch also validates its ``val_size`` images, and the cell ends with a pass over
    its data set's test images (not a diverged member's), both at :data:`CPU_EVAL_SHARE` of a
    training image; each stack and single cell starts (:data:`CPU_START_SECONDS`, and
    :data:`CPU_IMPORT_SECONDS` where it is a subprocess, as :func:`~lotterynet.sweep.run_cells` runs
    it). Each split counts the images its Trainer runs (:func:`split_images`: after
    ``limit_train_batches``, ``limit_val_batches``, ``limit_test_batches``), and a cell validates in
    the epochs left that ``check_val_every_n_epoch`` validates, as often as ``val_check_interval``
    says (:func:`validations`)."""
    if not set(cells_use(sweep, "arch")) <= set(CPU_EPOCH_SECONDS):
        return None
    configs = cell_configs(sweep, sweep_dir)
    planned, todo = cells_to_run(configs)
    # (each in its own train.py with job slots; with a DDP cell, every single cell, one at a
    # time, as run_cells runs them, whatever the slots)
    ddp = any(device_count(config) > 1 for _, config in todo)
    jobs = 1 if ddp else jobs
    stacks, single, _, resumed = plan_stacks(sweep, sweep_dir, configs, todo, jobs) if \
        stack else ({}, todo, {}, {})
    left, diverged = epochs_left(configs, planned, todo, stacks, resumed)
    costs = CellCosts(configs, model_sizes(sweep, configs),
                      {name: split_images(config) for name, config in configs.items()},
                      left, diverged)
    start = start_seconds(jobs, ddp)
    seconds = job_seconds(costs, stacks, single, start)
    kinds = {"stacked": [m for members in stacks.values() for m in members],
             "single": [name for name, _ in single]}
    starts = [start["stacked"]] * len(stacks) + [start["single"]] * len(single)
    return wall_seconds(seconds, jobs) / 3600, estimate_said(sweep, costs, kinds, starts,
                                                             len(todo), jobs)


def cells_to_run(configs: dict[str, RunConfig]) -> tuple[dict[str, tuple], list]:
    """Each cell planned (:func:`plan_cell`) as run_cells will prepare it, nothing set aside
    yet (a cell that resumes its own checkpoint runs singly, for the epochs it has left), and
    the ``(name, prepared config)`` of those left to run."""
    planned = {name: plan_cell(config, read_results(Path(config.out)))
               for name, config in configs.items()}
    todo = [(name, prepared) for name, (prepared, _, _) in planned.items()
            if prepared is not None]
    return planned, todo


def epochs_left(configs: dict[str, RunConfig], planned: dict[str, tuple], todo: list,
                stacks: dict[str, list[str]], resumed: dict) -> tuple[dict[str, int], set[str]]:
    """The epochs each cell to run has left, and the members diverged in the stacks that
    resume: a stack that resumes trains every member its checkpoint holds (one finished
    meanwhile outside it too) for the epochs it has left of that member's budget, a diverged
    one none."""
    left = {name: max(0, config.epochs - planned[name][2]) for name, config in todo}
    diverged = set()
    for stack_dir, record in resumed.items():
        left |= {m: 0 if m in record.diverged else max(0, configs[m].epochs - record.epochs_done)
                 for m in stacks[stack_dir]}
        diverged |= set(record.diverged)
    return left, diverged


@dataclass(frozen=True)
class CellCosts:
    """The seconds of each cell's work left, run ``kind`` "stacked" or "single": its model's
    ``size`` (:func:`model_sizes`), the ``images`` of its splits (:func:`split_images`), the
    epochs it has ``left``, and whether it ``diverged`` (then it is not tested)."""

    configs: dict[str, RunConfig]
    size: dict[str, float]
    images: dict[str, dict[str, int]]
    left: dict[str, int]
    diverged: set[str]

    def image_seconds(self, name: str, kind: str) -> float:
        """The seconds of one training image of cell ``name``, ``kind`` "stacked" or
        "single"."""
        arch = self.configs[name].arch
        return (CPU_STACKED_EPOCH_SECONDS.get(arch, CPU_EPOCH_SECONDS[arch])
                if kind == "stacked" else CPU_EPOCH_SECONDS[arch]) / FULL_EPOCH * self.size[name]

    def epoch_cost(self, name: str, kind: str) -> float:
        """The seconds of cell ``name``'s epochs left: its training images (all of them: DDP
        ranks on the CPU share its cores) and its validation passes."""
        images, left = self.images[name], self.left[name]
        return self.image_seconds(name, kind) * (
            left * images["train"] +
            CPU_EVAL_SHARE * validations(self.configs[name], left) * images["val"])

    def test_cost(self, name: str, kind: str) -> float:
        """The seconds of cell ``name``'s test pass (none for a diverged member)."""
        return (name not in self.diverged) * CPU_EVAL_SHARE * self.image_seconds(name, kind) * \
            self.images[name]["test"]

    def cost(self, name: str, kind: str) -> float:
        """The seconds of all cell ``name`` has left to do, but its start."""
        return self.epoch_cost(name, kind) + self.test_cost(name, kind)


def start_seconds(jobs: int, ddp: bool) -> dict[str, float]:
    """The seconds a stack and a single cell take to start: a subprocess (with job slots, or a
    single cell beside a DDP one) imports torch and Lightning first."""
    return {kind: CPU_START_SECONDS + CPU_IMPORT_SECONDS * (jobs > 1 or ddp and kind == "single")
            for kind in ("stacked", "single")}


def job_seconds(costs: CellCosts, stacks: dict[str, list[str]], single: list,
                start: dict[str, float]) -> dict[str, float]:
    """The seconds of each job, a stack (by its folder: its members one after another) or a
    single cell (by its name), its start included."""
    seconds = {stack_dir: start["stacked"] + sum(costs.cost(m, "stacked") for m in members)
               for stack_dir, members in stacks.items()}
    seconds |= {name: start["single"] + costs.cost(name, "single") for name, _ in single}
    return seconds


def wall_seconds(seconds: dict[str, float], jobs: int) -> float:
    """The seconds until the last job ends, the jobs spread over ``jobs`` slots longest first;
    jobs beyond the CPU's cores share them: they add no throughput."""
    workers = balanced_parts(list(seconds), seconds, max(1, min(jobs, os.cpu_count() or 1)))
    return max(sum(seconds[job] for job in worker) for worker in workers)


def estimate_said(sweep: Sweep, costs: CellCosts, kinds: dict[str, list[str]],
                  starts: list[float], cells: int, jobs: int) -> str:
    """The estimate's description: the ``cells`` left, the images of their epochs, what their
    epochs (by ``kinds``: the names run stacked and single), tests and ``starts`` cost, and
    what the times are of."""
    parts = [*epochs_said(costs, kinds), *tests_said(costs, kinds), *starts_said(starts)]
    trained = [name for names in kinds.values() for name in names if costs.left[name]]
    epochs = (f"epochs of {sizes_said(costs, 'train', trained)} training and "
              f"{sizes_said(costs, 'val', trained)} validation images: "
              ) if trained else ""  # (none: cells left only to test)
    at_once = f", {jobs} jobs at once" if jobs > 1 else ""
    return (f"{plural(cells, 'cell')}, {epochs}{', '.join(parts)} "
            f"({', '.join(cells_use(sweep, 'arch'))}, the epoch times of a 2-core "
            f"CPU{at_once})")


def epochs_said(costs: CellCosts, kinds: dict[str, list[str]]) -> list[str]:
    """How many epochs are left of each kind, as the cells train them (each at its own
    training examples), and what one costs on average."""
    counts = {k: sum(costs.left[name] for name in names) for k, names in kinds.items()}
    return [f"{counts[k]:,} {k} at "
            f"~{seconds_said(sum(costs.epoch_cost(n, k) for n in names) / counts[k])} s"
            for k, names in kinds.items() if counts[k]]


def tests_said(costs: CellCosts, kinds: dict[str, list[str]]) -> list[str]:
    """How many cells are tested (none diverged), of how many images, and what a test costs
    on average; nothing where none is."""
    tested = [(n, k) for k, names in kinds.items() for n in names if n not in costs.diverged]
    if not tested:
        return []
    mean = sum(costs.test_cost(n, k) for n, k in tested) / len(tested)
    return [f"{plural(len(tested), 'test')} of "
            f"{sizes_said(costs, 'test', [n for n, _ in tested])} images at "
            f"~{seconds_said(mean)} s"]


def starts_said(starts: list[float]) -> list[str]:
    """How many stacks and single cells start, and what a start costs on average; nothing
    where none does."""
    if not starts:
        return []
    return [f"{plural(len(starts), 'start')} at ~{seconds_said(sum(starts) / len(starts))} s"]


def sizes_said(costs: CellCosts, split: str, names: list[str]) -> str:
    """The sizes of a split of the cells ``names``, each size once (``2,000 or 55,000``)."""
    return " or ".join(f"{n:,}" for n in sorted({costs.images[name][split] for name in names}))


def split_images(config: RunConfig) -> dict[str, int]:
    """Images of each split that a cell's Trainer runs (an epoch's training, a validation
    pass, the test), all devices together: the split's, or fewer where a Trainer limit
    (:func:`~lotterynet.trainer_options.limited_batches`) ends it after as many whole batches
    (training ones of ``batch_size``, evaluation ones of
    :data:`~lotterynet.datamodule.EVAL_BATCH`)."""
    whole = {"train": training_examples(config), "val": config.val_size,
             "test": DATASETS.get(config.dataset).test_size}
    batch = {"train": config.batch_size, "val": EVAL_BATCH, "test": EVAL_BATCH}
    batches = limited_batches(config)
    return {split: min(whole[split], batches[split] * batch[split] * device_count(config))
            for split in whole}


def validations(config: RunConfig, left: int) -> int:
    """The validation passes of a cell's last ``left`` epochs, as Lightning schedules them: in
    every ``check_val_every_n_epoch``-th epoch (1 unless set), one every ``val_check_interval``
    training batches (an int) or fraction of the epoch's (a float; 1.0 unless set: one, at its
    end); with ``check_val_every_n_epoch`` null, every ``val_check_interval`` training batches
    of the run, across epochs."""
    every = config.trainer.get("check_val_every_n_epoch", 1)
    interval = config.trainer.get("val_check_interval", 1.0)
    batches = limited_batches(config)["train"]
    step = int(batches * interval) if type(interval) is float else interval
    if not batches or not step:  # (a run that trains no batch validates none)
        return 0
    if every is None:
        return (config.epochs * batches) // step - ((config.epochs - left) * batches) // step
    return (config.epochs // every - (config.epochs - left) // every) * (batches // step)


def model_sizes(sweep: Sweep, configs: dict[str, RunConfig]) -> dict[str, float]:
    """What an image of each cell's model (``configs``, as :func:`cell_configs` gives them)
    costs against one of its architecture's default model: :data:`CPU_FIXED_SHARE`, and the
    rest in proportion to the parameters each trains, counted on builds on the ``meta`` device,
    one per variant (its cells differ only in sparsity, epochs and seed) and architecture."""
    def count(config: RunConfig) -> int:
        with torch.device("meta"):
            model = build_model(**model_spec(config, data_module(config)))
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    trained, sizes = {}, {}  # (by variant label and by (arch, dataset))
    for (label, _), (name, config) in zip(sweep.cells(), configs.items()):
        default = (config.arch, config.dataset)
        if default not in trained:
            trained[default] = count(make_config({"arch": default[0], "dataset": default[1]}))
        if label not in trained:
            trained[label] = count(config)
        sizes[name] = CPU_FIXED_SHARE + (1 - CPU_FIXED_SHARE) * trained[label] / trained[default]
    return sizes


def seconds_said(seconds: float) -> str:
    """Seconds as the CPU estimate says them: whole from 1 on, else to 2 significant digits
    (an epoch of a few hundred images: ``0.022``, not ``0``)."""
    return f"{seconds:.0f}" if seconds >= 1 else f"{seconds:.2g}"


def check_cpu_cost(sweep: Sweep, sweep_dir: Path, go_on: bool, stack: bool = True,
                   jobs: int = 1) -> str | None:
    """On a machine without CUDA, what the sweep will cost (a line to print, None: nothing to
    say); refuse one of many hours unless ``go_on`` (``--yes``)."""
    if torch.cuda.is_available():
        return None
    estimate = cpu_estimate(sweep, sweep_dir, stack, jobs)
    if estimate is None:
        unknown = [arch for arch in cells_use(sweep, "arch") if arch not in CPU_EPOCH_SECONDS]
        return f"sweep on the CPU: no epoch-time figure for {', '.join(unknown)}; no estimate"
    hours, what = estimate
    if hours == 0:  # nothing left to run
        return None
    if hours > CPU_HOURS_WITHOUT_ASKING and not go_on:
        raise ConfigError(f"this sweep would take about {hours:,.0f} hours on this CPU ({what}); "
                          f"run it on a GPU, shrink it (--sweep-epochs, --sweep-sparsities, "
                          f"--limit-train), or pass --yes to start it anyway")
    minutes = max(1, round(60 * hours))
    took = f"{hours:.1f} hours" if hours >= 1 else plural(minutes, "minute")
    return f"sweep on the CPU: about {took} ({what})"
