"""A stack's files and what they record: what its checkpoint holds of it
(:class:`StackRecord`, :func:`stack_record`), whether a stack may continue it
(:func:`cannot_continue`) and what the members it trains again are (:func:`trains_again`),
whether a folder holds an earlier stack (:func:`holds_a_stack`), and the stack file
(``STACK/stack.yaml``) by which a stack runs in a process of its own, ``train.py --stack-file``
(:func:`write_stack_file`, :func:`read_stack_file`)."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

from .archs import recipe_lr
from .checkpointing import CHECKPOINTS, LAST, epochs_done, load_checkpoint, write_text_atomic
from .config import NOT_COMPUTED, changed_fields, make_config
from .config_checks import check_path
from .config_schema import RunConfig
from .config_yaml import dump_yaml, read_yaml_mapping
from .data import absolute_data_dir
from .errors import CheckpointError, ConfigError
from .loggers import METRICS_FILE
from .path_checks import check_output_dir
from .run_dir import HPARAMS, RESULTS, changed_results
from .stack_checks import check_stackable
from .sweep_grid import SWEEP_FILE


def holds_a_stack(stack_dir: Path, is_this: Callable[[StackRecord], bool] | None = None
                  ) -> bool:
    """``stack_dir`` holds an earlier stack's checkpoint or the history (``metrics.csv``) of
    an epoch it finished: a stack that does not continue it would overwrite what it holds (a
    committed sweep keeps the history without the checkpoint). One stopped before its first
    checkpoint holds neither: nothing to keep, a stack starts over in its folder (``is_this``:
    whether a record is of the stack run there, :func:`finished_a_member_first`)."""
    return (stack_dir / CHECKPOINTS / LAST).exists() or logged_an_epoch(
        stack_dir / METRICS_FILE, is_this)


def logged_an_epoch(history: Path, is_this: Callable[[StackRecord], bool] | None = None
                    ) -> bool:
    """A stack's ``history`` logged an epoch it finished: one past its first (which begins once
    the first checkpoint is written), or the end of its first where that finished a member
    (:func:`finished_a_member_first`, ``is_this`` passed on). Without its checkpoint, the end
    of a first epoch that finished no member is what a stack stopped before that checkpoint
    leaves (its rows are logged first, as a run's:
    :func:`~lotterynet.run_dir.left_before_a_checkpoint`): that epoch trains again, in its
    folder (it was set aside as stale, and refused by a ``--stack-file`` run or ``run_stack``,
    though the stop had said to start it over there). An older stack's log without an
    ``epoch`` column counts where its header names a member's train accuracy, which only an
    epoch's end logs. A file that cannot be read as CSV (a folder, bytes that are not UTF-8)
    counts: kept, not overwritten unseen."""
    if not history.exists():
        return False
    first_ended = False
    try:
        with open(history, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            ends = [c for c in reader.fieldnames or [] if c.endswith("/train/acc")]
            if "epoch" not in (reader.fieldnames or []):
                return bool(ends)
            for row in reader:
                if row["epoch"] not in ("", "0"):
                    return True
                first_ended = first_ended or any(row.get(c) for c in ends)
    except (OSError, UnicodeDecodeError, csv.Error):
        return True
    return first_ended and finished_a_member_first(history.parent, is_this)


def finished_a_member_first(stack_dir: Path, is_this: Callable[[StackRecord], bool] | None = None
                            ) -> bool:
    """A member of the stack in ``stack_dir`` (its ``hparams.yaml``) finished with its first
    epoch: its budget that one, its cell holding its results (written before the stack's
    checkpoint); a file that cannot be read counts too (what the folder holds is kept). Not
    where that stack is the one run there again (``is_this`` its record, of no epoch done): it
    starts over, as its stop said, keeping all it had: the finished member trains again with
    it, its cell (checkpoint, history, results) kept as it is, its rows logged again in the
    stack's history (it was refused, "holds an earlier stack's ... history"). For another
    stack (a sweep's, of the cells left) it still counts: the sweep sets the folder aside, the
    finished member's results naming it there."""
    try:
        members = read_yaml_mapping(stack_dir / HPARAMS, HPARAMS, "a stack's members")["members"]
        if is_this is not None and is_this(StackRecord(
                {member["name"]: member["config"] for member in members}, 0)):
            return False
        return any(member["config"]["epochs"] <= 1 and
                   (stack_dir / member["config"]["out"] / RESULTS).is_file() for member in members)
    except (ConfigError, KeyError, TypeError):
        return True


@dataclass(frozen=True)
class StackRecord:
    """What a stack checkpoint holds of its stack: the members in order, each name with the
    run config it was stored with, the epochs trained and the members that diverged; and the
    checkpoint itself as read (a resume checks and restores it without reading it again)."""

    members: dict[str, dict]
    epochs_done: int
    diverged: frozenset[str] = frozenset()
    checkpoint: dict = field(default_factory=dict, compare=False, repr=False)


def stack_record(stack_dir: str | Path) -> StackRecord | None:
    """The :class:`StackRecord` of the checkpoint in ``stack_dir`` (None: none readable, or a
    single run's, such as a finished member's in its cell)."""
    try:
        stored = load_checkpoint(Path(stack_dir) / CHECKPOINTS / LAST)
    except CheckpointError:
        return None
    members = stored.get("hyper_parameters", {}).get("members")
    diverged = stored.get("diverged", {})
    if not (isinstance(members, list) and all(isinstance(m, dict) for m in members)
            and isinstance(diverged, dict) and all(
                type(s) is int and 0 <= s < len(members) and isinstance(why, str)
                for s, why in diverged.items())):
        return None  # (not a stack checkpoint as run_stack writes it: set aside, not resumed)
    names = [m.get("name") for m in members]
    return StackRecord(dict(zip(names, (m.get("config") or {} for m in members))),
                       epochs_done(stored), frozenset(names[s] for s in diverged), stored)


def cannot_continue(record: StackRecord | None, names: Sequence[str],
                    configs: Sequence[RunConfig], cell_dirs: Sequence[Path]) -> str | None:
    """Why a stack checkpoint (its :class:`StackRecord`; None: none readable) does not
    continue the stack of ``configs`` (``names``: its members), None where it does: it must
    hold the same members in the same order, each stored with the config it has now
    (:func:`changed_fields`: what it trains; the differences as :func:`changes` says them) —
    and, once it has trained every member's budget, no member's results missing but a
    diverged one's (Lightning would stop at once, writing none)."""
    if record is None:
        return "its checkpoint cannot be read as a stack's"
    if list(record.members) != list(names):
        without = [n for n in record.members if n not in names]
        new = [n for n in names if n not in record.members]
        def named(members: list[str]) -> str:  # ("now with 2": a member, not a count)
            return f"{'member' if len(members) == 1 else 'members'} {', '.join(members)}"
        return "it was run with other members (" + ("; ".join(
            [*([f"now without {named(without)}"] if without else []),
             *([f"now with {named(new)}"] if new else [])]) or "in another order") + ")"
    changed = dict.fromkeys(changes(record.members[name], config, differs)
                            for name, config in zip(names, configs)
                            if (differs := changed_fields(record.members[name],
                                                          config.to_dict(), NOT_COMPUTED)))
    if changed:
        return f"it was run with another config ({'; '.join(changed)})"
    lost = [name for name, cell in zip(names, cell_dirs)
            if not (cell / RESULTS).is_file() and name not in record.diverged]
    if record.epochs_done >= max(c.epochs for c in configs) and lost:
        return f"it trained to its end, and the results of {', '.join(lost)} are missing"
    return None


def trains_again(record: StackRecord, configs: Sequence[RunConfig], finished: set[str]
                 ) -> str | None:
    """What a stack that resumes from ``record`` (``configs``: its members', in its order)
    says of its members in ``finished`` (their cells hold results: run meanwhile outside it,
    ``--cell``) that it has neither trained to their budgets nor seen diverge: they train
    again with it, which resumes with every member its checkpoint holds (restored by
    position), and their results are kept
    (:meth:`~lotterynet.stack_module.MemberResults.finish` writes no finished cell); None where
    there are none. Said by the sweep before it runs the stack and, by hand (``--stack-file``)
    or in the sweep's process, by :func:`~lotterynet.stack.train_stack` as it resumes."""
    again = [name for name, config in zip(record.members, configs) if name in finished
             and name not in record.diverged and record.epochs_done < config.epochs]
    if not again:
        return None
    return (f"resumes with every member its checkpoint holds: "
            f"{train_again(again, 'finished meanwhile outside it')}")


def train_again(again: Sequence[str], finished: str) -> str:
    """``A, B, finished ..., train again with it (...)``: members whose cells hold results
    (``finished``: how they came to) that a stack trains again, keeping those results."""
    one = len(again) == 1
    return (f"{', '.join(again)}, {finished}, {'trains' if one else 'train'} again with it "
            f"({'its' if one else 'their'} own results are kept, not overwritten)")


def changes(stored: dict, config: RunConfig, names: list[str]) -> str:
    """``NAME OLD -> NEW, ...`` for the fields ``names`` (:func:`changed_fields`) of a run's
    ``stored`` config that ``config`` changes; an unset ``lr`` is its recipe's."""
    old, new = {**RunConfig().to_dict(), **stored}, config.to_dict()

    def shown(values: dict, name: str):
        return recipe_lr(str(values["arch"]), values["lr"]) if name == "lr" else values[name]

    return ", ".join(f"{name} {shown(old, name)!r} -> {shown(new, name)!r}" for name in names)


STACK_FILE = "stack.yaml"


def write_stack_file(configs: Sequence[RunConfig], stack_dir: Path,
                     cell_dirs: Sequence[Path]) -> Path:
    """``STACK/stack.yaml``: the members' configs and cell directories, for
    :func:`read_stack_file` (``train.py --stack-file``) to run the stack in another process.
    The cells (and the members' ``out`` and ``resume``) are written relative to the file's
    folder (:func:`members_in`): read from there, not from where a later run happens to be,
    they go with the folder when it is copied or moved (``cp -r A B``), also to another system
    (written with ``/``, which Windows reads too). The data folder, given
    relative to where the sweep runs or not given (``./data`` there), and going with no copy
    of it, is written absolute (:func:`absolute_data_dir`): the stack run by hand from another
    folder reads the same data."""
    stack_dir.mkdir(parents=True, exist_ok=True)
    path = stack_dir / STACK_FILE
    members = [{**m, "data_dir": absolute_data_dir(m["data_dir"])}
               for m in members_in(stack_dir, configs, cell_dirs)]
    write_text_atomic(path, dump_yaml({"members": members,
                                       "cells": [m["out"] for m in members]}, sort_keys=False))
    return path


def members_in(stack_dir: Path, configs: Sequence[RunConfig], cell_dirs: Sequence[Path]
               ) -> list[dict]:
    """The members' configs as the stack's own files name them (``stack.yaml``,
    ``hparams.yaml``): ``out`` the member's cell and ``resume``, relative to ``stack_dir``
    (a sweep's ``../../cells/CELL``), so that they name no folder of the machine they ran on
    and go with the folders when they are copied or moved; with ``/`` on every system, as a
    sweep stores the paths in its cells' results
    (:func:`~lotterynet.sweep_cells.relocate`): ``os.path.relpath`` wrote ``..\\..\\cells\\CELL``
    on Windows, on Linux or macOS a name of no folder (a sweep folder copied there)."""
    def from_here(where: str | Path) -> str:
        return os.path.relpath(Path(where).absolute(), stack_dir.absolute()).replace(os.sep, "/")

    return [{**c.to_dict(), "out": from_here(cell), "resume": c.resume and from_here(c.resume)}
            for c, cell in zip(configs, cell_dirs)]


def named_twice(cells: Sequence[Path]) -> int | None:
    """The index of the first cell whose folder name (resolved) another member's cell has
    before it: the members' metrics are logged under their cells' names, one each."""
    names = [cell.resolve().name for cell in cells]
    return next((i for i, name in enumerate(names) if name in names[:i]), None)


def read_stack_file(path: str | Path, data_dir: str | None = None
                    ) -> tuple[list[RunConfig], list[Path]]:
    """The members' configs and cell directories :func:`write_stack_file` wrote to ``path``
    (the stack then runs in ``path``'s directory): a relative path in it is read from that
    folder, an absolute one as it is, but a sweep's stack file naming another sweep's cells
    names its own (:func:`in_its_sweep`); ``data_dir``, where given, replaces the members'
    (as a resume's ``--data-dir``: where the data is changes nothing the stack trains);
    :class:`ConfigError` for a file that is not such a stack or holds an invalid config."""
    stack = read_yaml_mapping(path, f"--stack-file {str(path)!r}", "a stack file")
    members, cells = stack.get("members"), stack.get("cells")
    if set(stack) - {"members", "cells"} or not (
            isinstance(members, list) and isinstance(cells, list) and members
            and len(members) == len(cells) and all(isinstance(m, dict) for m in members)
            and all(isinstance(c, str) and c for c in cells)):
        raise ConfigError(f"--stack-file {str(path)!r} is not a stack file: it holds 'members' "
                          f"(a list of run configs) and 'cells' (one directory per member, "
                          f"non-empty paths), nothing else")
    where = f"--stack-file {str(path)!r}"
    for cell in cells:
        check_path(f"{where}: cell", cell)
    folder = Path(path).absolute().parent

    def read(written: str) -> Path:
        written = posix_form(written, into_sweep_cells)  # (a file written on Windows)
        return Path(written) if Path(written).is_absolute() else \
            Path(os.path.normpath(folder / written))

    written_dirs = [read(c) for c in cells]
    for member, cell, written in zip(members, written_dirs, cells):  # a sweep writes them so
        elsewhere = {"out": member.get("out") and read(member["out"]) != cell,
                     "resume": member.get("resume") and cell not in read(member["resume"]).parents}
        key = next((k for k, outside in elsewhere.items() if outside), None)
        if key:
            raise ConfigError(f"{where}: a member's {key} {member[key]!r} is outside its cell "
                              f"{written!r}; a member's files go to its cell")
    cell_dirs = in_its_sweep(path, written_dirs)
    shown = cells if cell_dirs == written_dirs else [str(c) for c in cell_dirs]
    for cell, name in zip(cell_dirs, shown):
        check_output_dir(cell, f"{where}: cell")
        if (cell / STACK_FILE).exists() or stack_record(cell) is not None:
            raise ConfigError(f"{where}: cell {name!r} is a stack's folder; give the member a "
                              f"cell of its own")
    twice = named_twice(cell_dirs)
    if twice is not None:
        raise ConfigError(f"{where}: cell {shown[twice]!r} has the name of another member's "
                          f"cell ({cell_dirs[twice].resolve().name!r}); give each member a "
                          f"cell of its own name")
    configs = []
    for s, (member, cell, written) in enumerate(zip(members, cell_dirs, written_dirs)):
        try:  # (which of the file's members holds the bad value: a sweep's stack has 14)
            configs.append(make_config({
                **member, **({"data_dir": data_dir} if data_dir else {}), "out": str(cell),
                "resume": member.get("resume") and str(
                    cell / read(member["resume"]).relative_to(written))}))
        except ConfigError as err:
            raise ConfigError(f"{where}: member {s} (cell {cells[s]!r}): {err}") from None
    check_stackable(configs)
    above = {Path.cwd().resolve(), *Path(path).resolve().parents}
    for cell, name in zip(cell_dirs, shown):
        if cell.resolve() in above:
            raise ConfigError(f"{where}: cell {name!r} is not a folder of its own (it holds "
                              f"the stack file or is the current folder)")
    check_finished_cells(configs, cell_dirs, [f"{where}: cell {name!r}" for name in shown])
    return configs, cell_dirs


def posix_form(written: str, ours: Callable[[str], bool]) -> str:
    """``written`` (a path in a file that a sweep wrote) with ``/`` for the ``\\`` of one that
    ``str(Path)`` wrote on Windows, where that is a path as the sweep writes it (``ours``): so
    it names the same folder on every system (on Linux or macOS ``cells\\CELL`` is a name);
    any other as written (a ``\\`` may be part of a name there)."""
    posix = PureWindowsPath(written).as_posix()
    return posix if posix != written and ours(posix) else written


def into_sweep_cells(written: str) -> bool:
    """``written`` (a path in a stack file) is as a sweep writes it there: from the stack's
    folder into the sweep's cells (``../../cells/CELL``: :func:`members_in`)."""
    return Path(written).parts[:3] == ("..", "..", "cells")


def check_finished_cells(configs: Sequence[RunConfig], cell_dirs: Sequence[Path],
                         named: Sequence[str]) -> None:
    """Refuse (:class:`ConfigError`) a member whose cell (``named``: as the caller says it)
    holds the results of a run of another config (:func:`~lotterynet.run_dir.changed_results`):
    the stack would return them as the member's, or take the cell for finished."""
    for config, cell, name in zip(configs, cell_dirs, named):
        differs = changed_results(config, cell)
        if differs:
            raise ConfigError(f"{name} holds a finished run of another config "
                              f"({differs[0]} differs); give the member a cell of its own")


def sweep_folder_of(stack_file: str | Path) -> Path:
    """The sweep folder a stack file is in where a sweep wrote it
    (``SWEEP/stacks/STACK/stack.yaml``: ``SWEEP``, absolute), whether or not it is a sweep's:
    where its sweep's cells and lock would be."""
    return Path(stack_file).absolute().parent.parent.parent


def in_its_sweep(path: str | Path, cells: list[Path]) -> list[Path]:
    """The cells a stack file at ``path`` runs. A sweep writes its stacks' files in
    ``SWEEP/stacks/STACK`` and their cells in ``SWEEP/cells``; one there whose cells are all in
    another folder's ``cells`` was written before the cells were relative to its folder:
    absolute, naming the sweep it was since copied or moved from (``cp -r A B``: A's cells),
    or relative to the folder the sweep ran in (the committed sweeps' ``results/SWEEP/cells/
    CELL``, now read from the file's folder). It runs its own sweep's cells of those names, as
    the sweep run again would rewrite it to say. Other cells (a file not in a sweep's
    ``stacks``, or naming cells of no one sweep) are as written."""
    sweep = sweep_folder_of(path)
    folders = {cell.parent for cell in cells}
    if Path(path).absolute().parent.parent.name != "stacks" or len(folders) != 1 or \
            not (sweep / SWEEP_FILE).is_file():
        return cells
    (written,) = folders
    if written.name != "cells" or written.resolve() == (sweep / "cells").resolve():
        return cells
    print(f"--stack-file {str(path)!r}: its cells name {str(written)!r}, not its own sweep's "
          f"{str(sweep / 'cells')!r} (an older stack file, its sweep since copied or moved, or "
          f"written from another folder); it runs the cells of the same names there", flush=True)
    return [sweep / "cells" / cell.name for cell in cells]
