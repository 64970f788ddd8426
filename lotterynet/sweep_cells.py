"""A sweep's cells and their folders: each cell's config as the sweep runs it, and whether it
is finished, resumes from its checkpoint or trains anew (:func:`prepare_cell`); the bookkeeping
that keeps a sweep folder's runs across runs of the sweep: a folder it cannot continue set aside
(:func:`set_aside`), the paths a cell's results hold stored relative to the sweep's folder
(:func:`relocate`, :func:`repoint`), and folders under the names older sweeps gave them renamed
(:func:`rename_old_folders`)."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import os
import re
from collections import Counter
from pathlib import Path

from .checkpointing import (
    CHECKPOINTS,
    LAST,
    atomic_torch_save,
    atomic_write,
    epochs_done,
    load_checkpoint,
    stored_config,
)
from .config import NOT_COMPUTED, changed_fields, make_config
from .config_schema import RunConfig
from .errors import CheckpointError
from .loggers import METRICS_FILE
from .run_dir import RESULTS, locked, read_json, read_results, results_differ, write_json_atomic
from .stack_files import STACK_FILE, changes, posix_form, stack_record, write_stack_file
from .sweep_grid import (
    BASELINE,
    OLD_LABELS,
    Sweep,
    cell_name,
    config_value,
    folder_label,
    old_labels,
    variant_label,
)


def cell_config(values: dict, cell_dir: Path) -> RunConfig:
    """A cell's config as the sweep runs it: in its folder, without a progress bar."""
    return make_config({**values, "out": str(cell_dir), "progress_bar": False})


def cell_configs(sweep: Sweep, sweep_dir: Path) -> dict[str, RunConfig]:
    """Every cell's :func:`cell_config` by its name, in the order of ``sweep.cells()``."""
    return {name: cell_config(values, sweep_dir / "cells" / name)
            for name, values in ((cell_name(label, v), v) for label, v in sweep.cells())}


def cells_use(sweep: Sweep, key: str) -> list:
    """The values of ``key`` the sweep's cells run with (a variant may set its own), each once,
    in the cells' order."""
    return list(dict.fromkeys(config_value(values, key) for _, values in sweep.cells()))


def stack_name(label: str, values: dict) -> str:
    """The folder in ``stacks/`` of the stack of a variant's cells of one seed (of its parts,
    with ``-part<i>of<n>``: :func:`~lotterynet.sweep_plan.plan_stacks`)."""
    return f"{folder_label(label)}-seed{values['seed']}"


def prepare_cell(config: RunConfig) -> RunConfig | None:
    """The config to run a cell with (its :func:`cell_config` is ``config``), or ``None`` when
    it is finished: an interrupted cell resumes from its last checkpoint; a cell that never
    checkpointed starts over; a cell run with another config than the sweep's now starts over
    in a fresh folder, its old one kept beside it (:func:`set_aside`). Its results are first
    read as the sweep stores them (relative to its folder: :func:`relocate`)."""
    cell_dir = Path(config.out)
    prepared, why, _ = plan_cell(config, relocate(cell_dir, read_results(cell_dir)))
    if why:
        set_aside(cell_dir, why)
    return prepared


def plan_cell(config: RunConfig, results: dict | None
              ) -> tuple[RunConfig | None, str | None, int]:
    """What :func:`prepare_cell` does with a cell whose results are ``results`` (as read;
    None: none), doing nothing yet: the config to run it with (None: it is finished), why its
    folder is set aside first (None: it is not), and the epochs that its checkpoint has
    trained where it resumes from it (else 0; what :func:`~lotterynet.sweep_cost.cpu_estimate`
    counts off)."""
    differs = results_differ(config, results)
    if differs == []:
        return None, None, 0
    checkpoint = Path(config.out) / CHECKPOINTS / LAST
    try:
        loaded = load_checkpoint(checkpoint)
    except CheckpointError:
        loaded = {}  # never checkpointed (or not readable): nothing to keep
    # (a stack member's checkpoint holds its final weights only: not a run to resume)
    stored = loaded["hyper_parameters"].get("config") or {} \
        if "optimizer_states" in loaded else None
    if differs is None and stored is not None:
        differs = changed_fields(stored, config.to_dict(), NOT_COMPUTED)
    elif differs:
        stored = results.get("config", {})
    if differs:
        why = "has damaged results (no test accuracy in [0, 1])" if differs == ["test_acc"] \
            else f"was run with another config ({changes(stored, config, differs)})"
        return dataclasses.replace(config, overwrite=True), (
            f"cell {Path(config.out).name} {why}; it trains anew (the sweep never reads a "
            f"set-aside cell back, even run with its old config again)"), 0
    if stored is not None:
        return dataclasses.replace(config, resume=str(checkpoint)), None, epochs_done(loaded)
    return dataclasses.replace(config, overwrite=True), None, 0


def set_aside(folder: Path, why: str, cells: Path | None = None, tag: str = "stale") -> Path:
    """Rename a cell (or stack) folder that this sweep cannot continue to ``NAME.<tag>-N``
    (the first free N; ``stale``, or ``done`` for a stack whose members all finished), so
    that re-running a changed sweep loses no earlier result, saying ``why``; returns the new
    name. A folder another process is training in is refused (:class:`ConfigError`), never
    renamed under it. The results that name the folder — its own, and those of the finished
    cells in ``cells`` a stack trained — name the new one: the old name is about to hold
    another run."""
    with locked(folder, f"{str(folder)!r} is in use by another process (a --stack-file or "
                        f"--cell run); wait for it to end, then run the sweep again"):
        kept = next(folder.with_name(f"{folder.name}.{tag}-{n}") for n in itertools.count(1)
                    if not folder.with_name(f"{folder.name}.{tag}-{n}").exists())
        folder.rename(kept)
    for results in (kept / RESULTS, *(cells.glob(f"*/{RESULTS}") if cells else ())):
        repoint(results, folder, kept)
    print(f"{why}; its files are now in {kept}", flush=True)
    return kept


#: The folders of a sweep that its cells' results name (their own, the stacks that trained
#: them), the first part of every path it stores inside itself (:func:`relocate`).
SWEEP_PARTS = ("cells", "stacks")

#: How the folder of a stack's part ends (``<stack>-part<i>of<n>``:
#: :func:`~lotterynet.sweep_plan.plan_stacks`).
PART = r"-part\d+of\d+"


def relocate(cell_dir: Path, results: dict | None) -> dict | None:
    """A cell's ``results.json`` names where its files are (``run_dir``, the config's ``out``
    and ``resume``, ``wandb_dir``) and the stack that trained it (``stack.dir``). A sweep
    stores those inside its folder relative to it (``cells/CELL``, ``stacks/STACK``:
    :func:`stored_in_sweep`), so that the folder may be copied or moved (``cp -r A B``) or
    the repository cloned elsewhere and its results still name its own cells, unchanged.
    Results written otherwise (by the run itself, or by an older sweep) are brought to that
    form: a path absolute, or relative to the folder the sweep ran in (the committed sweeps'
    ``results/SWEEP/cells/CELL``, wherever the sweep is run from: :func:`within`), into this
    sweep folder, or into the one a copied sweep was written in (where ``run_dir`` names the
    cell of this name in another folder: :func:`names`). Other paths (``wandb_dir`` in
    another folder) stay as written. They are stored with ``/`` on every system, which
    Windows reads too (``str(Path)`` there wrote ``cells\\CELL``: on Linux or macOS a name
    of no folder), and such a path a sweep wrote on Windows is read and rewritten so
    (:func:`sweep_form`). ``results``: the cell's, as read (None: it has none); returns them
    as they are now, written back where any path changed."""
    if results is None:
        return None
    written, folders = results.get("run_dir"), [cell_dir.parent.parent]
    if isinstance(written, str) and not stored_in_sweep(written) and \
            Path(written).parts[-2:] == cell_dir.parts[-2:] and not names(Path(written), cell_dir):
        folders.append(Path(written).parent.parent)  # the sweep folder it was copied from
    changed = False
    for holder, key in path_fields(results):
        if (form := sweep_form(holder[key])) != holder[key]:
            holder[key], changed = form, True
        inside = None if stored_in_sweep(holder[key]) else next(
            (path for folder in folders if (path := within(holder[key], folder)) is not None),
            None)
        if inside is not None and stored_in_sweep(str(inside)):
            holder[key], changed = inside.as_posix(), True
    if changed:
        write_json_atomic(results, cell_dir / RESULTS)
    return results


def sweep_form(written: str) -> str:
    """``written`` (a path a cell's results hold) with ``/`` for the ``\\`` of a path that a
    sweep stored on Windows inside its folder (``stacks\\STACK``); any other as written (on
    Linux a ``\\`` may be part of a name)."""
    return posix_form(written, stored_in_sweep)


def stored_in_sweep(written: str) -> bool:
    """``written`` (a path a cell's results hold) is as a sweep stores a path inside itself:
    relative to the sweep folder, in its ``cells`` or ``stacks``."""
    parts = Path(os.path.normpath(written)).parts
    return not Path(written).is_absolute() and bool(parts) and parts[0] in SWEEP_PARTS


def path_fields(data: dict) -> list[tuple[dict, str]]:
    """The paths a results.json holds, as ``(mapping, key)``: ``run_dir``, ``wandb_dir``,
    the stack's ``dir``, the config's ``out`` and ``resume``; those that are set."""
    stack, config = (data.get(key) if isinstance(data.get(key), dict) else {}
                     for key in ("stack", "config"))
    return [(holder, key) for holder, key in ((data, "run_dir"), (data, "wandb_dir"),
                                              (stack, "dir"), (config, "out"),
                                              (config, "resume"))
            if isinstance(holder.get(key), str)]


def names(written: Path, folder: Path) -> bool:
    """``written`` (a path a results.json holds) is ``folder``: the same folder from here, or,
    where it leads to no folder from here, relative and leading to it from a folder above it
    (:func:`within`). One that leads from here to another folder (the sweep this one was
    copied from) is not ``folder``."""
    if written.resolve() == folder.resolve():
        return True
    return not written.exists() and within(str(written), folder) == Path(".")


def within(written: str, folder: Path) -> Path | None:
    """Where ``written`` (a path a results.json holds) is inside ``folder`` (``.``: the folder
    itself), or None where it is not: resolved from here, or, relative, read from a folder
    above ``folder`` (``results/SWEEP/stacks/X`` is in ``/repo/results/SWEEP``, wherever the
    sweep, written from the repository's root, is run from)."""
    here, path = folder.resolve(), Path(written).resolve()
    if path == here or here in path.parents:
        return path.relative_to(here)
    if Path(written).is_absolute():
        return None
    parts = Path(os.path.normpath(written)).parts
    parts = parts[next((i for i, p in enumerate(parts) if p != os.pardir), len(parts)):]
    return next((Path(*parts[j:]) for j in range(min(len(parts), len(here.parts)), 0, -1)
                 if parts[:j] == here.parts[-j:]), None)


def repoint(results: Path, old: Path, new: Path) -> None:
    """The paths in a cell's ``results.json`` (:func:`path_fields`) that are ``old`` (a cell's
    or stack's folder in the sweep) or inside it (:func:`within`) are where those files now
    are, in ``new`` (its new name beside it), stored as the sweep stores them
    (``cells/CELL.stale-1``: :func:`relocate`)."""
    data = read_json(results)
    changed = False
    for holder, key in path_fields(data):
        inside = within(holder[key], old)
        if inside is not None:
            holder[key], changed = Path(new.parent.name, new.name, inside).as_posix(), True
    if changed:
        write_json_atomic(data, results)


def renamed_folders(sweep: Sweep) -> dict[str, tuple[str, str]]:
    """The folders of the grid's cells and stacks (``cells/NAME``, ``stacks/NAME``) under the
    names that sweeps gave them before, in a form of :data:`~lotterynet.sweep_grid.OLD_LABELS`
    (:func:`~lotterynet.sweep_grid.old_labels`: ``cells/subsetsum-identity-3-s0.5-e10-seed0``
    before a variant's label named its values' keys, ``cells/subsetsum-pairs=3-identity-…``
    or ``cells/pairs=3-identity-subsetsum-…`` before it wrote them in one order) ->
    ``(their name now, what changed)`` (``cells/subsetsum-identity-pairs=3-s0.5-e10-seed0``);
    without an old name that two folders would now share (a grid whose old names were
    refused) or that is a folder's name now."""
    pairs: dict[tuple[str, str], str] = {}
    for variant in sweep.variants:
        new = variant_label(variant)
        labels = [(old, why) for form, why in OLD_LABELS.items()
                  for old in old_labels(variant, form)]
        for values in sweep.variant_values(variant):
            for kind, name in (("cells", cell_name), ("stacks", stack_name)):
                for old, why in labels:
                    pairs.setdefault((f"{kind}/{name(old, values)}",
                                      f"{kind}/{name(new, values)}"), why)
    olds, now = Counter(old for old, _ in pairs), {new for _, new in pairs}
    return {old: (new, why) for (old, new), why in pairs.items()
            if olds[old] == 1 and old not in now}


#: Why :func:`same_runs` renames a folder (said as :func:`rename_old_folders` says it).
SAME_RUN = "its stored config is this sweep's: the sweep file writes its variant another way"

#: How the name of a folder that :func:`set_aside` kept ends: never taken back into the grid.
SET_ASIDE = r"\.(?:stale|done)-\d+"


def same_runs(sweep: Sweep, sweep_dir: Path) -> dict[str, tuple[str, str]]:
    """The folders of the sweep outside its grid that hold runs of its grid under other names
    -> ``(their name now, why)``, as :func:`renamed_folders` gives them: a sweep file that
    writes a variant another way (``subsetsum``, then ``subsetsum:relu``, the default
    activation written out; ``pairs: 5``, the default) resolves to the same runs but labels
    them otherwise. A cell folder (``cells/NAME``, not set aside), or a member of a stack
    checkpoint in ``stacks/``, whose stored config (its results', else its checkpoint's, else
    its stack checkpoint's; :func:`~lotterynet.config.changed_fields`, as :func:`plan_cell`
    compares them) is that of exactly one grid cell whose folder does not exist, and of no
    other such folder's; a stack folder (its parts too) whose checkpoint's members all take the
    names of one stack of the grid so. A folder of another config (seed, sparsity...) is never
    renamed, nor two onto one. A stack folder without its checkpoint (a committed sweep's)
    stays as it is: its cells' results still name it."""
    configs = cell_configs(sweep, sweep_dir)
    missing = {name: config.to_dict() for name, config in configs.items()
               if not (sweep_dir / "cells" / name).exists()}
    if not missing:
        return {}
    stacks = {cell_name(label, values): stack_name(label, values)
              for label, values in sweep.cells() if label != BASELINE}

    def kept(kind: str, outside: set[str]) -> list[Path]:
        """The folders of ``kind`` not set aside whose names (a stack's less its part) are
        not in ``outside``."""
        return [folder for folder in sorted((sweep_dir / kind).glob("*"))
                if not re.search(f"{SET_ASIDE}$", folder.name)
                and re.sub(f"{PART}$", "", folder.name) not in outside]

    records = {folder: record for folder in kept("stacks", set(stacks.values()))
               if (record := stack_record(folder)) is not None}
    stored = {name: config for record in records.values()
              for name, config in record.members.items() if name not in configs}
    for folder in kept("cells", set(configs)):
        config = (read_results(folder) or {}).get("config")
        if not isinstance(config, dict):
            try:
                checkpoint = folder / CHECKPOINTS / LAST
                config = stored_config(load_checkpoint(checkpoint), checkpoint)
            except CheckpointError:
                config = stored.get(folder.name)
        if isinstance(config, dict):
            stored[folder.name] = config
    matches = {old: [new for new, wanted in missing.items()
                     if not changed_fields(config, wanted, NOT_COMPUTED)]
               for old, config in stored.items()}
    onto = Counter(new for news in matches.values() for new in news)
    cells = {old: news[0] for old, news in matches.items() if len(news) == 1 and onto[news[0]] == 1}
    new_stacks: dict[str, set] = {}
    for folder, record in records.items():
        members = [cells.get(name, name) for name in record.members]
        new_stacks.setdefault(re.sub(f"{PART}$", "", folder.name), set()).add(
            stacks[members[0]] if members and all(m in stacks for m in members) and
            len({stacks[m] for m in members}) == 1 else None)
    return {**{f"cells/{old}": (f"cells/{new}", SAME_RUN) for old, new in cells.items()},
            **{f"stacks/{old}": (f"stacks/{new}", SAME_RUN) for old, (new, *others)
               in new_stacks.items() if new is not None and not others}}


def rename_old_folders(sweep: Sweep, sweep_dir: Path, cell: str | None = None) -> None:
    """Rename each folder of the sweep that is under an old name and not its new one
    (:func:`renamed_folders`; a stack's parts, ``-part<i>of<n>``, too), or that holds a cell's
    run under another label (:func:`same_runs`), to the new (``cell``: that cell's folder
    alone, a ``--cell``'s), saying so, the cells' results that name it repointed
    (:func:`repoint`): a sweep run before is reused and resumed as before, not trained
    anew."""
    renamed = {**same_runs(sweep, sweep_dir), **renamed_folders(sweep)}
    cells = {old.removeprefix("cells/"): new.removeprefix("cells/")
             for old, (new, _) in renamed.items() if old.startswith("cells/")}
    for kind in SWEEP_PARTS:
        for old in sorted((sweep_dir / kind).glob("*")):
            stem, part = re.fullmatch(rf"(.+?)((?:{PART})?)", old.name).groups()
            name, why = renamed.get(f"{kind}/{stem}", (None, None))
            new = sweep_dir / f"{name}{part}" if name else old
            if new == old or new.exists() or (cell and new != sweep_dir / "cells" / cell):
                continue
            relocate(old, read_results(old))  # (a cell's results, in the form repoint reads)
            if kind == "stacks":  # (before: a stack renamed is never renamed again)
                rename_members(old, cells, cell_configs(sweep, sweep_dir))
            old.rename(new)
            for results in (sweep_dir / "cells").glob(f"*/{RESULTS}"):
                repoint(results, old, new)
            print(f"{kind[:-1]} {old.name} is now {new.name} ({why})", flush=True)


def rename_members(stack_dir: Path, cells: dict[str, str], configs: dict[str, RunConfig]
                   ) -> None:
    """A stack folder that :func:`rename_old_folders` renames: what in it names its members
    by their cells' old names (``cells``: old -> new) names them by the new, so that a stack
    stopped before continues from its checkpoint
    (:func:`~lotterynet.stack_files.cannot_continue` matches
    members by name) instead of being set aside and trained anew: its stack file (written anew
    from the members' ``configs``, the sweep's cells', as the sweep writes it), the columns of
    its history (``NAME/train/acc``) and, last, the checkpoint's members (by which a stack
    whose renaming was cut short is renamed again)."""
    record = stack_record(stack_dir)
    if record is None or not set(record.members) & set(cells):
        return
    members = [cells.get(name, name) for name in record.members]
    if (stack_dir / STACK_FILE).is_file() and set(members) <= set(configs):
        write_stack_file([configs[m] for m in members], stack_dir,
                         [Path(configs[m].out) for m in members])
    try:
        with open(stack_dir / METRICS_FILE, newline="", encoding="utf-8") as f:
            header, *rows = csv.reader(f)
    except (OSError, UnicodeDecodeError, csv.Error, ValueError):  # (none, empty or not a
        header = None  # history: left as it is, for the resume to read as before)

    def renamed(column: str) -> str:  # NAME/KEY
        name, slash, key = column.partition("/")
        return f"{cells.get(name, name)}{slash}{key}"

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([[renamed(c) for c in header], *rows])

    if header is not None:
        atomic_write(stack_dir / METRICS_FILE, write)
    for member in record.checkpoint["hyper_parameters"]["members"]:
        member["name"] = cells.get(member["name"], member["name"])
    atomic_torch_save(record.checkpoint, stack_dir / CHECKPOINTS / LAST)
