"""Sparsity sweeps: Pensia et al.'s Figure 2 as one command.

A sweep is a grid ``variant × sparsity × epoch budget × seed`` (a *variant* is a set of config
overrides such as ``{structure: subsetsum, activation: identity}`` or ``{structure: wide}``),
plus the trained dense baseline for every epoch budget and seed. Every cell is an ordinary run
(:func:`lotterynet.run.run`) in its own directory ``SWEEP/cells/<cell>/`` with its own
``results.json``, so a sweep is resumable: finished cells are skipped, a cell that was
interrupted continues from its last checkpoint.

By default the cells of one variant and seed train together as one *stack*
(:mod:`lotterynet.stack`): one model, one forward and backward per batch for every sparsity and
epoch budget, each member still the same computation as its single run and writing its own
cell directory; the stack checkpoints into ``SWEEP/stacks/<variant>-seed<seed>/``. The trained
baseline, DDP cells and cells with Trainer options run singly, and ``--no-stack`` runs every
cell on its own. With ``--jobs-per-device N`` every stack and single cell is its own
``train.py`` subprocess (a stack as ``--stack-file STACK/stack.yaml``), N at once per GPU, or
on the CPU N at once sharing its threads; with more slots than stacks, the stacks are cut into
parts (:func:`plan_stacks`).

Aggregation: for every variant, sparsity and seed the test accuracy of the best epoch budget,
chosen by validation accuracy where the cells hold out a validation split, else by test accuracy
as the paper does (its protocol: ``val_size`` 0); then mean and standard deviation over seeds.
Outputs: ``sweep.csv``,
``sweep.md`` (with Pensia et al.'s accuracy and our gap to it where the paper has the point, and
under the table the values of the variants' ``KEY=<hash>``, if any) and ``figure.png`` /
``figure.pdf`` (test accuracy vs. kept parameters, log x, one line per variant, the paper's
points as hollow markers, the trained baseline and chance as lines).

The grid itself and the sweep file's format: :mod:`lotterynet.sweep_grid`.

The sweep's parts, a module each: its cells' configs and folders (:mod:`lotterynet.sweep_cells`),
how it stacks them (:mod:`lotterynet.sweep_plan`), its jobs (:mod:`lotterynet.sweep_jobs`), its
table and figure (:mod:`lotterynet.sweep_table`), its cost on the CPU
(:mod:`lotterynet.sweep_cost`), its checks before it writes anything
(:mod:`lotterynet.sweep_checks`) and its W&B group and runs (:mod:`lotterynet.sweep_wandb`);
this module runs them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch

from .checkpointing import CHECKPOINTS, LAST
from .config_schema import RunConfig, device_count
from .errors import (
    ERROR,
    ConfigError,
    Interrupted,
    OutOfMemory,
    TrainingDiverged,
    WandbFailed,
    exit_code,
    plural,
)
from .loggers import CELL_JOB
from .path_checks import check_not_folders
from .run import run
from .run_dir import END_FILES, RESULTS, flocked, read_results, run_dir_of, write_json_atomic
from .run_stops import needs_less, reporting_write_failure, run_again
from .stack import run_stack
from .sweep_cells import (
    SET_ASIDE,
    cell_config,
    cell_configs,
    prepare_cell,
    relocate,
    rename_old_folders,
    renamed_folders,
    set_aside,
)
from .sweep_checks import (
    check_buildable,
    check_data,
    check_finished_kept,
    check_sweep_dir,
    finished_with_another_config,
)
from .sweep_cost import check_cpu_cost
from .sweep_grid import (
    BASELINE,
    SWEEP_FILE,
    SWEEP_LOCK,
    Sweep,
    cell_name,
    in_a_folder_name,
    resolved_base,
    spelled_labels,
    sweep_dir_of,
)
from .sweep_jobs import (
    CELL_LOG,
    GO_ON,
    NOT_FINISHED,
    SWEEP_JOB,
    Failure,
    Job,
    cell_job,
    goes_on_by,
    how_it_ended,
    run_again_to_go_on,
    run_jobs,
    stack_job,
    stack_line,
    stopped_sweep,
)
from .sweep_plan import plan_stacks
from .sweep_table import (
    TABLE_CSV,
    TABLE_FILES,
    TABLE_MD,
    aggregate,
    baseline_name,
    chance_accuracy,
    figure_title,
    log_to_wandb,
    paper_trained_accuracy,
    plot,
    spelled_rows,
    write_table,
)
from .sweep_wandb import cells_without_wandb, keep_wandb_group, log_unlogged_members, wandb_group


@contextlib.contextmanager
def sweep_lock(sweep_dir: Path):
    """An exclusive lock on the sweep directory while the block runs (the system drops it when
    the process dies); refuses when another sweep holds it."""
    with open(sweep_dir / SWEEP_LOCK, "a+") as lock:
        if not flocked(lock):
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise ConfigError(f"sweep directory {str(sweep_dir)!r} is in use by another sweep "
                              f"({holder}) or a --stack-file or --cell run of one of its "
                              f"stacks or cells; wait for it, or choose another --sweep-out")
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}\n")
        lock.flush()
        yield


@contextlib.contextmanager
def outside_a_running_sweep(sweep_dir: Path, what: str, is_a_sweep: bool = False):
    """A run by hand of one of a sweep's stacks or cells (``what``: ``--stack-file PATH``,
    ``--cell NAME``) holds the sweep's lock shared while the block runs: refused while the
    sweep runs (it runs that stack or cell itself, or will: by hand it trained a queued one,
    and the sweep's own job then failed on it or trained it again), and the sweep refused
    meanwhile; runs by hand side by side (W&B agents' cells) share it. The sweep's own jobs
    run under its lock. ``is_a_sweep``: ``sweep_dir`` is one (a ``--cell``'s, where no sweep
    may have run yet: its lock file is made); else a folder without a lock file is not
    (a stack file outside a sweep's folders)."""
    lock_file = sweep_dir / SWEEP_LOCK
    if os.environ.get(SWEEP_JOB) or not (is_a_sweep or lock_file.is_file()):
        yield
        return
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as lock:
        if not flocked(lock, shared=True):
            raise ConfigError(f"{what}: its sweep {str(sweep_dir)!r} is running and runs it; "
                              f"wait for it, or stop it first")
        yield


def planning_stopped(sweep_dir: Path, planned: threading.Event) -> str:
    """How a sweep stopped where none of its stacks, cells and jobs says so goes on
    (:func:`run_sweep`): while it checked and planned its cells, before :func:`run_cells` set
    ``planned``, it had started none, and what it had written (its lock, ``sweep.json``, a
    cell's results repointed or its folder set aside, as every run of it does) loses nothing:
    the same command starts it (or continues one that ran before: it has ``cells/``). Later
    (between its stacks, its table being written), as a sweep whose jobs it stopped."""
    if planned.is_set():
        return GO_ON
    return "it had started no cell (it was checking and planning them): " + (
        GO_ON if (sweep_dir / "cells").is_dir() else "run the same command again to start it")


def run_stacks(stacks: dict[Path, list[str]], configs: dict[str, RunConfig], report
               ) -> list[Failure]:
    """The stacks in this process, one after another; returns the :class:`Failure` of each
    that diverged, ran out of memory or that W&B failed to log (:func:`failure_of`; the others
    go on, as they do beside a job that failed)."""
    failed = []
    for stack_dir, members in stacks.items():
        members_configs = [configs[m] for m in members]
        print(stack_line(stack_dir, members_configs), flush=True)
        failure = failure_of(partial(run_stack, members_configs, stack_dir,
                                     [Path(c.out) for c in members_configs], in_a_sweep=True),
                             members)
        if failure:  # (raised once the others finished)
            failed.append(failure)
        for m in members:
            report(m, failure)
    return failed


def failure_of(train, cells: list[str], what: str = "") -> Failure | None:
    """Call ``train``, which trains a stack or a cell (``cells``) in the sweep's process: None,
    or the :class:`Failure` (its line: ``what`` and the error's) where it diverged, ran out of
    memory or W&B failed to log it (its server out of reach: its results are kept), which
    leaves the sweep's other cells to go on."""
    try:
        train()
    except (TrainingDiverged, OutOfMemory, WandbFailed) as err:
        return Failure(f"{what}{err}", exit_code(err), tuple(cells))
    return None


def run_cells(sweep: Sweep, sweep_dir: Path, jobs_per_device: int, stack: bool = True,
              planned: threading.Event | None = None) -> list[Failure]:
    """Run every unfinished cell: in this process, or with several job slots (GPUs ×
    ``jobs_per_device``) every stack and every single cell in its own subprocess, as many at
    once as there are slots. Returns a :class:`Failure` per subprocess that failed and per run
    or stack that diverged, ran out of memory or that W&B failed to log (:func:`failure_of`;
    the others go on). ``planned`` is set once the cells are planned, before the first starts
    (:func:`planning_stopped`)."""
    configs = cell_configs(sweep, sweep_dir)
    todo = [(name, cfg) for name, config in configs.items()
            if (cfg := prepare_cell(config)) is not None]
    to_report = {name for name, _ in todo}  # (a resumed stack's finished members are done)
    gpus = torch.cuda.device_count()
    workers = max(1, gpus) * jobs_per_device
    ddp = any(device_count(config) > 1 for _, config in todo)
    slots = 1 if ddp else workers
    stacks, todo, said, _ = plan_stacks(sweep, sweep_dir, configs, todo, slots, True) if \
        stack else ({}, todo, {}, {})
    set_aside_or_say(said, sweep_dir, slots)
    say_what_runs(sweep_dir, len(configs), len(to_report), stacks)
    if planned is not None:
        planned.set()
    report = Progress(sweep_dir, len(configs), to_report).report
    if slots > 1:  # every stack and cell in its own subprocess, jobs_per_device at once per device
        devices = [gpu for gpu in range(gpus) for _ in range(jobs_per_device)] or [None] * workers
        return run_as_jobs(stacks, todo, configs, devices, sweep_dir, report)
    failed = run_stacks(stacks, configs, report)
    if not ddp:
        return failed + run_singly(todo, report)
    # DDP cells: Lightning relaunches the running script per rank, so every such cell runs
    # in its own train.py that sees all devices, one at a time.
    return failed + run_as_jobs({}, todo, configs, [None], sweep_dir, report)


def set_aside_or_say(said: dict[Path, tuple[str | None, str]], sweep_dir: Path,
                     slots: int) -> None:
    """Act on what the plan says of each stack's folder (:func:`plan_stacks`): set aside one
    whose stack does not resume (its tag), and say which members a resumed stack trains again
    where a job runs it (a stack in this process says it as it resumes: train_stack)."""
    for stack_dir, (tag, why) in said.items():
        if tag:
            set_aside(stack_dir, f"stack {stack_dir.name} {why}", sweep_dir / "cells", tag=tag)
        elif slots > 1:
            print(f"stack {stack_dir.name} {why}", flush=True)


def say_what_runs(sweep_dir: Path, total: int, to_run: int, stacks: dict[Path, list[str]]
                  ) -> None:
    """The sweep's first line: how many cells it has, how many are done, and how many it runs
    (in how many stacks)."""
    stacked = f" ({plural(len(stacks), 'stack')})" if stacks else ""
    print(f"sweep {sweep_dir}: {plural(total, 'cell')}, {total - to_run:,} already done, "
          f"{to_run:,} to run{stacked}", flush=True)


class Progress:
    """A sweep's progress lines (:meth:`report`), one per cell it ran, its time counted from
    when it was made: ``total`` cells, of which ``to_report`` (the names of those to run) are
    not done yet."""

    def __init__(self, sweep_dir: Path, total: int, to_report: set[str]):
        self.sweep_dir, self.total, self.to_report = sweep_dir, total, to_report
        self.to_run = len(to_report)
        self.done = total - self.to_run
        self.start = time.perf_counter()

    def report(self, name: str, failure: Failure | None = None) -> None:
        """The progress line of a cell that ran: its test accuracy, else how it ended (its
        stack's or its own ``failure``'s word, :attr:`Failure.ended`)."""
        if name not in self.to_report:
            return
        self.to_report.discard(name)
        self.done += 1
        elapsed = time.perf_counter() - self.start
        ran = self.done - (self.total - self.to_run)
        eta = elapsed / ran * (self.total - self.done)
        cell_dir = self.sweep_dir / "cells" / name  # (stored as the sweep stores its paths)
        acc = (relocate(cell_dir, read_results(cell_dir)) or {}).get("test_acc")
        tested = f"test {100 * acc:.2f}%" if acc is not None else \
            failure.ended if failure else NOT_FINISHED
        print(f"[{self.done}/{self.total}] {name}: {tested} | elapsed {elapsed:.0f} s | "
              f"ETA {eta:.0f} s", flush=True)


def run_singly(todo: list[tuple[str, RunConfig]], report) -> list[Failure]:
    """The single cells in this process, one after another; returns the :class:`Failure` of
    each that diverged, ran out of memory or that W&B failed to log (:func:`failure_of`; the
    others go on)."""
    failed = []
    for name, config in todo:
        failure = failure_of(partial(run_in_the_sweep, name, config), [name], f"cell {name}: ")
        if failure:
            failed.append(failure)
        report(name, failure)
    return failed


def run_as_jobs(stacks: dict[Path, list[str]], todo: list[tuple[str, RunConfig]],
                configs: dict[str, RunConfig], devices: list, sweep_dir: Path, report
                ) -> list[Failure]:
    """Every stack and single cell in a train.py of its own, as many at once as there are
    ``devices`` (job slots); returns the :class:`Failure` of each job that failed (the others
    go on)."""
    failed = []

    def finished(job: Job, code: int | None) -> None:
        """Note the job's failure (its exit ``code`` not 0), and report each of its cells."""
        failure = None if code == 0 else \
            Failure(f"{job.what} {how_it_ended(code, job)}; its output: {job.log}", code,
                    tuple(job.cells))
        if failure:
            failed.append(failure)
        for name in job.cells:  # (a failed stack's finished members too)
            report(name, failure)

    run_jobs(jobs_of(stacks, todo, configs, sweep_dir), devices, sweep_dir, finished)
    return failed


def jobs_of(stacks: dict[Path, list[str]], todo: list[tuple[str, RunConfig]],
            configs: dict[str, RunConfig], sweep_dir: Path) -> Iterator[Job]:
    """Each job as it is written (:func:`run_jobs` starts it, saying so, and stops on Ctrl-C
    meanwhile): the stacks, then the single cells."""
    for stack_dir, members in stacks.items():
        yield stack_job(stack_dir, [configs[m] for m in members], members, sweep_dir)
    for name, config in todo:
        yield cell_job(name, config)


@contextlib.contextmanager
def continued_by_the_sweep(name: str, config: RunConfig, what: str = "sweep"):
    """A cell that the sweep runs (in its own process, or as its job), stopped by Ctrl-C or
    SIGTERM, out of memory or unable to write a file (:class:`~lotterynet.errors.WriteFailed`),
    says to run the same sweep again, as a stack does: to continue
    from its checkpoint, or, without one, to start it over (:func:`prepare_cell`); the run's
    own line gave the ``--resume`` of that one cell, which left the rest of the sweep unrun.
    ``what``: what runs it again (:func:`run_again`; a W&B agent's ``--cell``,
    :func:`run_one_cell`, the same ``--cell command``). What needs less memory is then the
    sweep's (:func:`~lotterynet.run_stops.needs_less`): a smaller batch given to it. It
    gives the job type of the cell's W&B run (:data:`~lotterynet.loggers.CELL_JOB`)."""
    checkpoint = run_dir_of(config) / CHECKPOINTS / LAST
    again, over = run_again(what)
    try:
        with reporting_write_failure(partial(goes_on_by, f"cell {name}", checkpoint, what),
                                     instead=True):
            yield CELL_JOB
    except Interrupted as err:
        raise run_again_to_go_on(err, f"cell {name}", checkpoint, what) from None
    except OutOfMemory as err:
        ran_out = err.args[0]
        raise OutOfMemory(ran_out, needs_less(config, in_a_sweep=True),
                          again if checkpoint.is_file() else None, over) from None


def run_in_the_sweep(name: str, config: RunConfig) -> None:
    """Cell ``name`` run in the sweep's process, as the sweep continues it
    (:func:`continued_by_the_sweep`)."""
    with continued_by_the_sweep(name, config) as job_type:
        run(config, job_type)


def as_a_sweeps_job(config: RunConfig) -> contextlib.AbstractContextManager:
    """Where this process is a sweep's job for one cell (``train.py --config CELL/cell.yaml``,
    :data:`SWEEP_JOB` in its environment), the run of ``config`` goes on as the sweep's cells
    do (:func:`continued_by_the_sweep`): the sweep quotes its line
    (:func:`~lotterynet.sweep_jobs.reported`); it gives the run's W&B job type (None for a run
    that is no sweep's job)."""
    if not os.environ.get(SWEEP_JOB):
        return contextlib.nullcontext()
    return continued_by_the_sweep(run_dir_of(config).name, config)


#: The most cells a refused ``--cell`` lists (of more: the first and the last).
CELLS_LISTED = 8


def run_one_cell(sweep: Sweep, sweep_dir: Path, name: str, go_on: bool = False,
                 begun: threading.Event | None = None) -> int:
    """Cell ``name`` of the sweep alone, in its cell directory (what a W&B agent runs; the
    sweep's lock held shared, :func:`outside_a_running_sweep`, so agents may run cells side
    by side). ``name`` may be given as on any system (a W&B sweep's file names cells as all
    but Windows do: :func:`~lotterynet.sweep_grid.cell_name`'s portable form): it is the
    cell whose folder it names here (:func:`in_a_folder_name`, ``timm:resnet18`` as
    ``timm-resnet18`` on Windows). Stopped or out of memory, it says to run the same
    ``--cell`` command again (:func:`continued_by_the_sweep`), which continues from the
    cell's checkpoint. Finished with another config, the cell is set aside and trained anew
    only with ``go_on`` (``--yes``), as the sweep's are
    (:func:`~lotterynet.sweep_checks.check_finished_kept`).
    ``begun`` is set once its name is checked, before it writes anything (the sweep's folder
    and lock): a stop before then had written nothing (``cli.run_sweep_cells``)."""
    cells = {cell_name(label, values): values for label, values in sweep.cells()}
    given, name = name, in_a_folder_name(name)  # (as a W&B sweep's file names it: portable)
    if name not in cells:
        if renamed := renamed_folders(sweep).get(f"cells/{name}"):  # (a W&B sweep's, before)
            new, why = renamed
            raise ConfigError(f"--cell {given!r} is this sweep's cell "
                              f"{new.removeprefix('cells/')!r} by its old name ({why}); run "
                              f"that one, or write the W&B sweep anew (--wandb-sweep)")
        names = list(cells)
        valid = ", ".join(names) if len(names) <= CELLS_LISTED else \
            f"{names[0]}, …, {names[-1]}"
        raise ConfigError(f"--cell {given!r} is not a cell of this sweep; valid: {valid} "
                          f"({len(names)} cells; see --wandb-sweep's file)")
    if begun is not None:
        begun.set()
    with outside_a_running_sweep(sweep_dir, f"--cell {name!r}", is_a_sweep=True):
        rename_old_folders(sweep, sweep_dir, name)
        check_finished_kept(sweep, sweep_dir, go_on, name)
        keep_wandb_group(sweep, sweep_dir)
        config = prepare_cell(cell_config(cells[name], sweep_dir / "cells" / name))
        if config is None:
            print(f"cell {name} is done: {sweep_dir / 'cells' / name / RESULTS}")
            return 0
        with continued_by_the_sweep(name, config, "--cell command") as job_type:
            results = run(config, job_type)
        relocate(sweep_dir / "cells" / name, read_results(sweep_dir / "cells" / name))
    print(f"cell {name}: test {100 * results['test_acc']:.2f}% | {results['run_dir']}")
    return 0


def run_sweep(args: argparse.Namespace, sweep: Sweep, begun: threading.Event | None = None
              ) -> int:
    """The sweep's cells (or with ``--cell`` one of them, ``begun`` set as it begins:
    :func:`run_one_cell`), then its table and figure."""
    if args.jobs_per_device < 1:
        raise ConfigError(f"--jobs-per-device must be positive, got {args.jobs_per_device}")
    gpus = torch.cuda.device_count()
    if sys.platform == "win32" and not args.cell and max(1, gpus) * args.jobs_per_device > 1:
        # (its jobs hold Ctrl-C and SIGTERM back as they start, die with it and are stopped by
        # the signals it sends them: none of which Windows has; a DDP cell's job runs there
        # alone, started without them: sweep_jobs.start_job)
        on = f" on {gpus} GPUs" if gpus > 1 else ""
        raise ConfigError(f"--jobs-per-device {args.jobs_per_device}{on}: a sweep runs its "
                          f"cells as jobs side by side on Linux and macOS only; on Windows "
                          f"run it with --jobs-per-device 1 on one device "
                          f"(CUDA_VISIBLE_DEVICES=0)")
    sweep_dir = sweep_dir_of(sweep, args.sweep, args.sweep_out)
    check_sweep_dir(sweep_dir)
    if sweep.base.get("wandb"):
        sweep.base["wandb_group"] = wandb_group(sweep, sweep_dir, args.sweep,
                                                 bool(args.sweep_out))
    if args.cell:
        return run_one_cell(sweep, sweep_dir, args.cell, args.yes, begun)
    planned = threading.Event()  # (run_cells sets it: a stop is then no longer the planning's)
    with stopped_sweep(sweep_dir, partial(planning_stopped, sweep_dir, planned)):
        if (sweep_dir / "cells").is_dir():  # (before the cells left are counted)
            with sweep_lock(sweep_dir):
                rename_old_folders(sweep, sweep_dir)
        check_finished_kept(sweep, sweep_dir, args.yes)
        jobs, capped = job_slots(args.jobs_per_device)
        cost = check_cpu_cost(sweep, sweep_dir, args.yes, args.stack, jobs)
        check_data(sweep)
        check_buildable(sweep)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with sweep_lock(sweep_dir):
            check_not_folders(sweep_dir / "cells" / name / file
                              for name in unfinished_cells(sweep, sweep_dir) for file in END_FILES)
            for line in (capped, cost):  # (said once every check has passed: a refusal stays
                if line:  # one line)
                    print(line, flush=True)
            return run_locked(sweep, sweep_dir, args, jobs, planned)


def job_slots(jobs_per_device: int) -> tuple[int, str | None]:
    """The jobs a sweep runs at once per device for ``--jobs-per-device``: on a machine
    without CUDA at most one per core (jobs beyond the cores share them: they add no speed,
    only memory, and cut stacks into more parts), with the line that says so where that is
    fewer; else as given."""
    cores = os.cpu_count() or 1
    if torch.cuda.is_available() or jobs_per_device <= cores:
        return jobs_per_device, None
    return cores, (f"--jobs-per-device {jobs_per_device}: this machine has no GPU and "
                   f"{plural(cores, 'CPU core')}, so the sweep runs {cores} jobs at once, one "
                   f"per core")


def yes_sets_aside(finished: int, of: str = "") -> str:
    """What the sweep's advice to change its cells' config (another --lr or --batch-size, a
    variant's lr: ``of`` names it) says of their ``finished`` ones, which the sweep so changed
    sets aside only with --yes (:func:`~lotterynet.sweep_checks.check_finished_kept`): ``''``
    where there are none."""
    return f": pass --yes to set aside the {plural(finished, 'finished cell')}{of}" \
        if finished else ""


def diverged_variants_aside(sweep: Sweep, failed: list[Failure], missing: list[str]
                            ) -> str | None:
    """:func:`yes_sets_aside` of the finished cells of the variants whose cells diverged
    (``failed``; ``missing``: the cells without results), which another lr in their mappings
    sets aside; None where no variant's cell diverged, only the trained baseline's (it has no
    mapping: --lr alone sets its lr)."""
    variant_of = {cell_name(label, v): label for label, v in sweep.cells() if label != BASELINE}
    diverged = sorted({variant_of[c] for failure in failed if failure.diverged
                       for c in failure.cells if c in variant_of})
    if not diverged:
        return None
    left = set(missing)
    return yes_sets_aside(sum(label in diverged for c, label in variant_of.items()
                              if c not in left), f" of {', '.join(diverged)}")


def unfinished_cells(sweep: Sweep, sweep_dir: Path) -> list[str]:
    return [name for name in (cell_name(label, v) for label, v in sweep.cells())
            if not (sweep_dir / "cells" / name / RESULTS).is_file()]


def cells_outside(sweep: Sweep, sweep_dir: Path) -> list[str]:
    """The finished cells in the sweep's folder that its grid does not hold (run by a sweep
    of a wider grid there), which its table leaves out; not those set aside (``CELL.stale-N``,
    :func:`set_aside`)."""
    grid = {cell_name(label, v) for label, v in sweep.cells()}
    return sorted(name for name in (p.parent.name for p in (sweep_dir / "cells").glob(
        f"*/{RESULTS}")) if name not in grid and not re.search(f"{SET_ASIDE}$", name))


def write_results(sweep: Sweep, sweep_dir: Path, wandb: bool) -> tuple[list[dict], Path | None]:
    """The sweep's table and figure from the cells of its grid finished in ``sweep_dir``
    (:func:`~lotterynet.sweep_table.aggregate`: a point missing cells names them, and is
    crossed in the figure), the table printed, and ``wandb``: logged to its W&B summary run;
    its rows and figure (none: no cell has results, and an earlier run's table and figure,
    which would stand for cells since set aside or failed, are removed). What the sweep
    writes at its end, and ``--table-only`` (:func:`write_finished_table`)."""
    rows = aggregate(sweep, sweep_dir)
    if not rows:
        for name in TABLE_FILES:
            (sweep_dir / name).unlink(missing_ok=True)
        return rows, None
    spelled = spelled_labels(sweep.variants)
    markdown = write_table(rows, sweep_dir, sweep.variants, spelled)
    figure = plot(rows, sweep_dir, figure_title(sweep, rows), paper_trained_accuracy(sweep),
                  chance_accuracy(sweep), spelled=spelled, baseline=baseline_name(sweep))
    if wandb:
        log_to_wandb(spelled_rows(rows, spelled), figure, sweep)
    print(markdown, end="")
    if wandb and (unlogged := cells_without_wandb(sweep, sweep_dir)):
        one = len(unlogged) == 1
        print(f"{plural(len(unlogged), 'finished cell')} {'has' if one else 'have'} no W&B "
              f"run (trained without --wandb): {', '.join(unlogged)}; "
              f"{'its row is' if one else 'their rows are'} in the summary table",
              flush=True)
    if outside := cells_outside(sweep, sweep_dir):
        print(f"not in the table: {plural(len(outside), 'finished cell')} of "
              f"{sweep_dir / 'cells'} "
              f"outside this sweep's grid ({', '.join(outside[:3])}"
              f"{', …' if len(outside) > 3 else ''}); a sweep of their grid and config "
              f"tabulates them", flush=True)
    return rows, figure


def write_finished_table(sweep: Sweep, sweep_dir: Path, given: bool = False) -> int:
    """``--table-only``: the sweep's table and figure (:func:`write_results`) from the cells
    finished in its folder, nothing trained, set aside or renamed, and no W&B summary run
    logged (the sweep run again logs the table, where it changed: ``log_to_wandb``). Its
    lock is not taken: every file a sweep writes is written whole (renamed into place), so
    the table of a sweep running there now holds the cells finished so far (that sweep
    writes its own at its end). A folder that is not a sweep's, or where no cell of the
    grid has finished, is refused before anything is written (an earlier table is kept);
    so is, for a sweep ``given`` by its file and flags (not its folder's ``sweep.json``, the
    grid it ran), a folder of cells finished with another config, which the table would
    give as this sweep's (the sweep itself refuses them too: ``check_finished_kept``)."""
    check_sweep_dir(sweep_dir)
    if given and (changed := finished_with_another_config(sweep, sweep_dir)):
        raise ConfigError(f"--table-only: {changed}; give the sweep's flags as it ran them, or "
                          f"--sweep-out alone (its {SWEEP_FILE} holds the grid it ran)")
    total = len(sweep.cells())
    missing = unfinished_cells(sweep, sweep_dir)
    if len(missing) == total:
        where = "no cell has finished" if (sweep_dir / "cells").is_dir() else \
            "it has no cells/"
        raise ConfigError(f"--table-only: sweep folder {str(sweep_dir)!r} holds no finished "
                          f"cell of this sweep's {plural(total, 'cell')} ({where}); give the "
                          f"folder it ran in (--sweep-out), or run the sweep")
    _, figure = write_results(sweep, sweep_dir, wandb=False)
    done = f"all {plural(total, 'cell')}" if not missing else \
        f"{total - len(missing):,} of {total:,} cells ({len(missing):,} without results: " \
        f"sweep.md's missing column names them, the figure crosses their points)"
    print(f"table of {done}, nothing trained: {sweep_dir / TABLE_CSV}, "
          f"{sweep_dir / TABLE_MD}, {figure}", flush=True)
    return 0


def run_locked(sweep: Sweep, sweep_dir: Path, args: argparse.Namespace, jobs: int,
               planned: threading.Event) -> int:
    """Run the cells that are not done, ``jobs`` at once per device (:func:`job_slots`), and
    aggregate them, holding the sweep's lock; ``planned``: :func:`run_cells`'."""
    keep_wandb_group(sweep, sweep_dir)
    write_json_atomic({**dataclasses.asdict(sweep), "base": resolved_base(sweep)},
                      sweep_dir / SWEEP_FILE)
    failed = run_cells(sweep, sweep_dir, jobs, stack=args.stack, planned=planned)
    if sweep.base.get("wandb"):
        failed += log_unlogged_members(sweep, sweep_dir)
    missing = unfinished_cells(sweep, sweep_dir)
    if not failed:  # never "sweep done" with a cell left out, whatever left it
        failed = [Failure(f"cell {name} has no results after the sweep ran it; see its "
                          f"stack's or its own {CELL_LOG}") for name in missing]
    rows, figure = write_results(sweep, sweep_dir, bool(sweep.base.get("wandb")))
    if failed:
        print("\n".join(f"{ERROR}{failure.line}" for failure in failed), file=sys.stderr)
        table = f"the table holds the others: {sweep_dir / TABLE_CSV}" if rows else \
            "no cell finished, so there is no table"
        # (a divergence is deterministic: a re-run diverges again)
        diverged = sum(failure.diverged for failure in failed)
        # another lr or batch size changes every cell's config, a variant's lr its cells': the
        # sweep so changed sets their finished cells aside only with --yes (check_finished_kept)
        aside = yes_sets_aside(len(sweep.cells()) - len(missing))
        theirs = diverged_variants_aside(sweep, failed, missing)
        lower = f"a lower lr: --lr runs every cell anew (another config{aside})"
        if theirs is not None:  # (a variant's cell diverged, not only the trained baseline's)
            lower += ", lr in a variant's mapping that variant's" + (
                f" (another config{theirs})" if theirs else "")
        again = f"a cell that diverged diverges again when re-run: it needs {lower}" \
            if diverged == len(failed) else "re-run the same command to retry" + (
                f" the others; a cell that diverged needs {lower}" if diverged else "")
        if aside and any(failure.code == OutOfMemory.exit_code for failure in failed):
            again += f"; a smaller --batch-size or a narrower model runs every cell anew{aside}"
        print(f"sweep incomplete: {len(missing)} of {len(sweep.cells())} cells without "
              f"results ({plural(len(failed), 'failure')}); {table} ({again})")
        return 1
    print(f"sweep done: {sweep_dir / TABLE_CSV}, {sweep_dir / TABLE_MD}, {figure}")
    return 0
