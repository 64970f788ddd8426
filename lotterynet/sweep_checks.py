"""What a sweep checks before it writes anything (:func:`~lotterynet.sweep.run_sweep`), each
refusal one line: its folder (:func:`check_sweep_dir`), its data sets (:func:`check_data`), each
variant's model (:func:`check_buildable`), and finished cells it would set aside for a changed
config (:func:`check_finished_kept`, unless ``--yes``)."""

from __future__ import annotations

from pathlib import Path

from .checkpointing import CHECKPOINTS
from .config import make_config
from .datamodule import TensorDataModule, check_data_set
from .errors import ConfigError, plural
from .path_checks import check_output_dir
from .run import build_module
from .run_dir import RESULTS, read_results, results_differ
from .stack_files import changes
from .sweep_cells import cell_config
from .sweep_grid import BASELINE, SWEEP_FILE, SWEEP_LOCK, Sweep, cell_name, config_value


def check_sweep_dir(sweep_dir: Path) -> None:
    """``--sweep-out``: a folder a sweep may write (new, empty, or a sweep's own), not a run's
    nor one holding other files, which its table and figure could overwrite."""
    check_output_dir(sweep_dir, "--sweep-out")
    if (sweep_dir / RESULTS).is_file() or (sweep_dir / CHECKPOINTS).is_dir():
        raise ConfigError(f"--sweep-out {str(sweep_dir)!r} holds a run ({RESULTS} or "
                          f"{CHECKPOINTS}/), not a sweep; choose another folder")
    if sweep_dir.is_dir() and any(sweep_dir.iterdir()) and not any(
            (sweep_dir / name).exists() for name in (SWEEP_FILE, SWEEP_LOCK, "cells", "stacks")):
        raise ConfigError(f"--sweep-out {str(sweep_dir)!r} holds files but not a sweep (no "
                          f"{SWEEP_FILE}, no cells/), which its table and figure could "
                          f"overwrite; choose a new or empty folder")


def check_data(sweep: Sweep) -> None:
    """Read every data set the sweep's cells use (both splits) before anything is written: a
    missing or corrupt one is refused up front (:class:`DatasetNotFound`), not when its first
    cell or stack starts."""
    for dataset, data_dir, download in {
            (config_value(v, "dataset"), v.get("data_dir"), config_value(v, "download"))
            for _, v in sweep.cells()}:
        check_data_set(dataset, data_dir, download=download)


def check_buildable(sweep: Sweep) -> None:
    """Build each variant's model once, at its first seed and highest sparsity (where a group of
    a fixed-size top-k may keep nothing), so that a cell whose model cannot be built is refused
    before the sweep writes anything, as a single run is."""
    built = set()
    for label, values in sweep.cells():
        if label not in built:
            built.add(label)
            sparsest = {} if label == BASELINE else {"sparsity": max(sweep.sparsities)}
            config = make_config({**values, **sparsest})
            build_module(config, TensorDataModule(config.dataset, config.data_dir))


#: The most of their differences a sweep refused for changed finished cells names.
CHANGES_LISTED = 3


def check_finished_kept(sweep: Sweep, sweep_dir: Path, go_on: bool, cell: str | None = None
                        ) -> None:
    """Refuse, unless ``go_on`` (``--yes``), a sweep that would set aside finished cells of its
    folder (results with a test accuracy) because they were run with another config than its
    own (:func:`~lotterynet.sweep_cells.plan_cell`), before it writes anything: a mistyped
    ``--sweep-out`` or flag set
    aside hours of finished cells at once, before a Ctrl-C could stop it; ``cell``: of that
    cell alone (a ``--cell`` run's, a W&B agent's, sets aside no other). Its line says how
    many and their first differences as the set-aside line says them. A cell without a test
    accuracy (stopped, diverged, out of memory, damaged) is set aside without asking, as a
    stack is:
    the sweep's own advice after a failure is to run it again with another lr or batch size,
    which sets them aside, and none holds a finished result."""
    if go_on:
        return
    changed = finished_with_another_config(sweep, sweep_dir, cell)
    if changed:
        raise ConfigError(f"{changed}; pass --yes to set them aside and train them anew, or "
                          f"give another --sweep-out")


def finished_with_another_config(sweep: Sweep, sweep_dir: Path, cell: str | None = None
                                 ) -> str | None:
    """What says that the sweep's folder holds finished cells (of ``cell`` alone, where given)
    run with another config than the sweep's (how many, and their first differences as the
    set-aside line says them), or None where it holds none: what
    :func:`check_finished_kept` refuses, and ``--table-only`` (whose table would give their
    results as this sweep's)."""
    changed = {}
    for label, values in sweep.cells():
        name = cell_name(label, values)
        if cell not in (None, name):
            continue
        cell_dir = sweep_dir / "cells" / name
        results = read_results(cell_dir)  # (not relocated: nothing is written)
        if results is None:  # (a config made only then: a grid of thousands takes seconds)
            continue
        config = cell_config(values, cell_dir)
        differs = results_differ(config, results)
        if differs and differs != ["test_acc"]:
            changed[name] = changes(results.get("config", {}), config, differs)
    if not changed:
        return None
    said = list(dict.fromkeys(changed.values()))
    more = "; …" if len(said) > CHANGES_LISTED else ""
    return (f"sweep folder {str(sweep_dir)!r} holds {plural(len(changed), 'finished cell')} "
            f"run with another config than this sweep's "
            f"({'; '.join(said[:CHANGES_LISTED])}{more})")
