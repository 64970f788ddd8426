"""A sweep's cells on Weights & Biases: the group they log to, kept in the sweep's folder
(:func:`wandb_group`, :func:`keep_wandb_group`), and its finished cells that have no W&B run of
their own: those a stack trained and did not log, logged now (:func:`log_unlogged_members`),
and those trained without ``--wandb`` (:func:`cells_without_wandb`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from .checkpointing import write_text_atomic
from .config_checks import WANDB_NAME_MAX, control_character
from .errors import ConfigError, WandbFailed, plural
from .loggers import read_wandb_id, reporting_wandb_failure
from .machine import read_text_within_memory
from .run_dir import read_results
from .stack import log_member_run
from .sweep_cells import SWEEP_PARTS, cell_configs, relocate
from .sweep_grid import SWEEP_FILE, Sweep, cell_name, digest
from .sweep_jobs import Failure

#: The file in a sweep's folder that keeps the W&B group of its cells, written at its first
#: run (:func:`keep_wandb_group`), read by its later ones (:func:`folder_wandb_group`).
WANDB_GROUP_FILE = "wandb-group"


def folder_wandb_group(sweep_dir: Path) -> tuple[str, str]:
    """The default W&B group of the cells of the sweep in ``sweep_dir``, and what was added to
    the folder's name: for a folder that a sweep ran in before groups were kept, its name, the
    group its cells were logged in then; else the one it keeps (:data:`WANDB_GROUP_FILE`); else,
    a new sweep's, the folder's name (:func:`~lotterynet.sweep_grid.sweep_dir_of`; also where
    ``--sweep-out`` is "." or ends in "..") and ``-`` 8 hex digits of its resolved path, so that
    sweeps in folders of one name (``--sweep-out a/run1`` and ``b/run1``) do not share a group
    and mix their dashboards, while the W&B agents of its ``--wandb-sweep`` (given the path)
    agree on it. Whether a sweep ran there is read first: an agent that finds a new folder and
    then another agent's file reads the same group in it."""
    name = Path(os.path.abspath(sweep_dir)).name
    started = any((sweep_dir / part).exists() for part in (SWEEP_FILE, *SWEEP_PARTS))
    kept = sweep_dir / WANDB_GROUP_FILE
    if kept.is_file() and (group := read_text_within_memory(kept, str(kept)).strip()):
        return group, group.removeprefix(name)
    if started:
        return name, ""
    suffix = f"-{digest(str(sweep_dir.resolve()))}"
    return f"{name}{suffix}", suffix


def wandb_group(sweep: Sweep, sweep_dir: Path, sweep_file: str | None, out_given: bool
                ) -> str:
    """The W&B group of the sweep's cells: ``--wandb-group``, else the folder's
    (:func:`folder_wandb_group`). Refused (:class:`ConfigError`) where it is longer than W&B
    takes, naming what the user gave: ``--sweep-out`` (``out_given``), or the sweep file
    ``sweep_file`` (the default folder's name is made from it; ``--arch`` for a sweep given by
    flags); so is one that holds a control character (a folder's name may: the cells' configs
    refused it as a ``--wandb-group`` that was not given)."""
    if sweep.base.get("wandb_group") is not None:  # (checked with the cells' configs)
        return sweep.base["wandb_group"]
    group, suffix = folder_wandb_group(sweep_dir)
    control = control_character(group)
    if len(group) > WANDB_NAME_MAX or control:
        folder = f"--sweep-out {str(sweep_dir)!r}: its folder's name" if out_given else (
            f"the sweep's folder {str(sweep_dir)!r} (its name from "
            f"{f'the sweep file {sweep_file!r}' if sweep_file else '--arch'}): its name")
        fault = f"holds the control character {control!r}" if control else (
            f"has {len(group)} characters; W&B takes a group name of at most {WANDB_NAME_MAX}")
        choose = f"{'another' if control else 'a shorter'} folder" if out_given else \
            "--sweep-out"
        raise ConfigError(f"{folder}, the sweep's W&B group"
                          f"{f' with {suffix!r} after it' if suffix else ''}, {fault} "
                          f"(choose {choose}, or --wandb-group)")
    return group


def keep_wandb_group(sweep: Sweep, sweep_dir: Path) -> None:
    """A sweep keeps its cells' W&B group in ``sweep_dir`` (:data:`WANDB_GROUP_FILE`) at its
    first run, with ``--wandb`` or not: the group its cells log to (``--wandb-group``, a W&B
    sweep's cells file's), else the folder's (:func:`folder_wandb_group`). Its later runs, of
    this or another path to the folder (a copy, a move), log to it by default."""
    if not (sweep_dir / WANDB_GROUP_FILE).is_file():
        group = sweep.base.get("wandb_group") or folder_wandb_group(sweep_dir)[0]
        write_text_atomic(sweep_dir / WANDB_GROUP_FILE, f"{group}\n")


def finished_cells(sweep: Sweep, sweep_dir: Path) -> Iterator[tuple[str, Path, dict, Path]]:
    """Each finished cell of the sweep's grid: its name, its folder, its results (as the
    sweep stores them: :func:`relocate`) and the folder that trained it, the stack's that
    trained it (its results' ``stack.dir``) or its own."""
    for name in (cell_name(label, v) for label, v in sweep.cells()):
        cell_dir = sweep_dir / "cells" / name
        results = relocate(cell_dir, read_results(cell_dir))
        if results is None:
            continue
        stack = results.get("stack") if isinstance(results.get("stack"), dict) else {}
        # (a stack's folder as the sweep stores it, relative to it:
        # :func:`~lotterynet.sweep_cells.stored_in_sweep`)
        yield name, cell_dir, results, sweep_dir / stack["dir"] if isinstance(
            stack.get("dir"), str) else cell_dir


def cells_without_wandb(sweep: Sweep, sweep_dir: Path) -> list[str]:
    """The finished cells of the sweep's grid that have no W&B run (trained without
    ``--wandb``): neither their own folder nor the stack's that trained them holds a W&B id
    file (:func:`~lotterynet.loggers.read_wandb_id`)."""
    return [name for name, _, _, trained_in in finished_cells(sweep, sweep_dir)
            if read_wandb_id(trained_in) is None]


def log_unlogged_members(sweep: Sweep, sweep_dir: Path) -> list[Failure]:
    """Log as W&B runs of their own the finished cells of the sweep's grid that a stack
    trained with ``--wandb`` (its folder holds its W&B id) and did not log (their results hold
    no ``wandb_dir``): the stack logs each member it finished as it ends
    (:func:`~lotterynet.stack.log_member_run`), and where that failed (``wandb.init`` refused)
    or was stopped, the sweep run again skipped the finished cells and never logged them.
    Each is logged once, under the id its cell keeps, as the stack would have. One that W&B
    refuses to log (``wandb.init`` online, its server down) is a :class:`Failure`: the sweep
    still writes its table and says so in one line; run again, it logs it."""
    unlogged = [(name, cell_dir, results) for name, cell_dir, results, trained_in
                in finished_cells(sweep, sweep_dir) if trained_in != cell_dir
                and "wandb_dir" not in results and read_wandb_id(trained_in) is not None]
    if not unlogged:  # (every cell's config is made only then: seconds for a big grid)
        return []
    as_runs = "a run of its own (its stack's logging of it" if len(unlogged) == 1 else \
        "runs of their own (their stacks' logging of them"
    print(f"sweep: logging {plural(len(unlogged), 'stacked cell')} to W&B as {as_runs} did not "
          f"end): {', '.join(name for name, *_ in unlogged)}", flush=True)
    configs = cell_configs(sweep, sweep_dir)
    refused = []
    for name, cell_dir, results in unlogged:
        try:
            with reporting_wandb_failure(f"cell {name}: W&B refused to log it as a run of its "
                                         f"own", lambda: "its results are kept, and the sweep "
                                                         "run again logs it"):
                log_member_run(configs[name], cell_dir, results)
        except WandbFailed as err:
            refused.append(Failure(str(err)))
            continue
        relocate(cell_dir, results)  # (its wandb_dir as the sweep stores it)
    return refused
