"""How a sweep stacks its cells (:func:`plan_stacks`): one stack per variant and seed
(:func:`stack_groups`), cut into parts for its job slots or where its members would not fit in
memory together (:func:`fitting_parts`); a stack stopped before resumes as it is
(:func:`resuming_stacks`), and the folders of those that cannot are set aside
(:func:`why_set_aside`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from .checkpointing import CHECKPOINTS, LAST
from .config_schema import RunConfig
from .errors import in_binary_units, plural
from .memory import memory_available
from .run_dir import RESULTS
from .stack_checks import members_that_fit, stack_need, unstackable
from .stack_files import StackRecord, cannot_continue, holds_a_stack, stack_record, trains_again
from .sweep_cells import PART, stack_name
from .sweep_grid import Sweep, cell_name


def plan_stacks(sweep: Sweep, sweep_dir: Path, configs: dict[str, RunConfig],
                todo: list[tuple[str, RunConfig]], slots: int = 1, say: bool = False
                ) -> tuple[dict[Path, list[str]], list[tuple[str, RunConfig]],
                           dict[Path, tuple[str | None, str]], dict[Path, StackRecord]]:
    """Split the cells to run (``todo``; ``configs``: every cell's,
    :func:`~lotterynet.sweep_cells.cell_configs`) into stacks (``{stack_dir: member cell names}``,
    one per variant and seed) and cells that run singly (the trained baseline, DDP and 16-mixed
    cells, lone cells, cells that resume a single run's checkpoint). With more job ``slots`` than
    stacks, each stack is cut into ``slots // stacks`` parts of about equal epochs
    (``<stack>-part<i>of<n>``) so that every slot trains, and into more where its members would not
    fit in memory together (:func:`fitting_parts`; with ``say``, a line says so as the cut is made,
    no part's folder there yet: :func:`split_line`, with the memory available that the plan read
    once and cut by). A stack killed earlier, in any folder of its group (``<stack>`` or a part's,
    as a run with these slots or others cut it), keeps its recorded members while some are
    unfinished and its checkpoint continues them (:func:`~lotterynet.stack_files.cannot_continue`),
    so it resumes as it is instead of starting over: the same command, or one with other slots,
    resumes a stopped sweep's stacks (of two that hold a cell, the one that trained more
    member-epochs), and only a group with none is cut by the slots alone. The group's cells that no
    resumed stack holds train as the planned parts hold them, several as a stack, a lone one singly:
    the cells of a resumed stack's part it lacks (a sweep extended meanwhile) run singly, each
    resumable from its own checkpoint, rather than start it over; its members finished meanwhile
    outside it (``--cell``) train again with it. Third: what to say of a stack before it runs,
    ``(tag, why)``: the folders of stacks that start over though an earlier stack's checkpoint or
    history is in them, and the group's other folders whose stack holds cells to train but does not
    resume (they train elsewhere), to be set aside (as :func:`~lotterynet.sweep_cells.set_aside`'s
    ``tag``: ``done`` where that stack's checkpoint shows every member of it finished, a sweep
    extended with new cells, nothing of it lost; else ``stale``) with why
    (:func:`~lotterynet.stack_files.cannot_continue`, or the stack that resumes its cells); and, tag
    None, the resumed stacks whose members finished outside them train again, their results kept.
    Fourth: the record of each stack that resumes (:class:`~lotterynet.stack_files.StackRecord`, its
    checkpoint as read here: what it has trained, for
    :func:`~lotterynet.sweep_cost.cpu_estimate`)."""
    groups, budgets = stack_groups(sweep, configs)
    parts = max(1, slots // max(1, sum(len(cells) > 1 for cells in groups.values())))
    found = sorted((sweep_dir / "stacks").glob("*"))  # (the stacks earlier runs left)
    # a cell interrupted in a single run resumes singly, from its checkpoint
    unfinished = {name for name, config in todo if not config.resume}
    plan = StackPlan(sweep_dir, configs, {name for name, _ in todo})
    have = memory_available()
    for group, cells in groups.items():
        left = [c for c in cells if c in unfinished]
        if not left:
            continue
        wanted = min(parts, len(cells))
        split = fitting_parts(cells, budgets, wanted, configs, have, slots)
        planned = part_folders(sweep_dir / "stacks", group, split)
        records = group_records(group, planned, found)
        recorded = {folder: list(record.members) if record else []
                    for folder, record in records.items()}
        taken = resuming_stacks(records, recorded, left, cells, plan.cannot_go_on)
        if say and len(split) > wanted and not taken and \
                not any(f.exists() for f in planned):  # (the cut is made now, not resumed)
            print(split_line(group, cells, split, configs, have, slots), flush=True)
        for folder, record in records.items():
            plan.place(folder, record, recorded[folder], planned, left, cells, taken)
    return plan.result(todo)


def part_folders(stacks_dir: Path, group: str, split: list[list[str]]
                 ) -> dict[Path, list[str]]:
    """The folder of each part of a group's stack (``split``) -> its cells: the group's name
    for a stack not cut, else ``<group>-part<i>of<n>``."""
    n = len(split)
    return {stacks_dir / (f"{group}-part{i + 1}of{n}" if n > 1 else group): part
            for i, part in enumerate(split)}


def group_records(group: str, planned: dict[Path, list[str]], found: list[Path]
                  ) -> dict[Path, StackRecord | None]:
    """The checkpoint record of every folder of a group's stacks (None: none readable): the
    ``planned`` parts first, then those that earlier runs left (``found``: ``<group>`` or a
    part's, as a run with other slots cut it)."""
    return {folder: stack_record(folder) for folder in [*planned, *(
        f for f in found if f not in planned
        and re.fullmatch(f"{re.escape(group)}(?:{PART})?", f.name))]}


@dataclass
class StackPlan:
    """What :func:`plan_stacks` plans, a group at a time (:meth:`place`): the ``stacks`` to
    run, what to ``said`` of a stack's folder before it runs, and the records of the stacks
    ``resumed``. ``to_train``: the cells to run."""

    sweep_dir: Path
    configs: dict[str, RunConfig]
    to_train: set[str]
    stacks: dict[Path, list[str]] = field(default_factory=dict)
    said: dict[Path, tuple[str | None, str]] = field(default_factory=dict)
    resumed: dict[Path, StackRecord] = field(default_factory=dict)

    def cannot_go_on(self, record: StackRecord | None, members: list[str]) -> str | None:
        """Why ``record``'s checkpoint does not continue a stack of the cells ``members``
        (:func:`~lotterynet.stack_files.cannot_continue`), None where it does."""
        return cannot_continue(record, members, [self.configs[c] for c in members],
                               [self.sweep_dir / "cells" / c for c in members])

    def place(self, folder: Path, record: StackRecord | None, members: list[str],
              planned: dict[Path, list[str]], left: list[str], cells: list[str],
              taken: dict[str, Path]) -> None:
        """Plan a folder of a group (``members``: its checkpoint's): the stack that resumes
        there (``taken``), or the group's ``left`` cells planned there that no resumed stack
        holds, and what to say of a stack in it that does not resume (:func:`why_set_aside`)."""
        if folder in taken.values():
            self.resume(folder, record, members)
            return
        rest = [c for c in planned.get(folder, []) if c in left and c not in taken]
        if len(rest) > 1:
            self.stacks[folder] = rest
        compared = compared_members(folder, members, rest, planned, left, cells, taken)
        if compared is not None:
            self.said[folder] = why_set_aside(folder, members, taken, self.to_train,
                                              self.sweep_dir / "cells",
                                              partial(self.cannot_go_on, record, compared))

    def resume(self, folder: Path, record: StackRecord, members: list[str]) -> None:
        """Plan the stack in ``folder`` to resume with every member its checkpoint holds,
        saying which of them finished outside it and train again (:func:`trains_again`)."""
        self.stacks[folder], self.resumed[folder] = members, record
        again = trains_again(record, [self.configs[c] for c in members],
                             set(members) - self.to_train)
        if again:
            self.said[folder] = (None, again)

    def result(self, todo: list[tuple[str, RunConfig]]
               ) -> tuple[dict[Path, list[str]], list[tuple[str, RunConfig]],
                          dict[Path, tuple[str | None, str]], dict[Path, StackRecord]]:
        """:func:`plan_stacks`'s four: the stacks, the cells of ``todo`` that no stack holds
        (they run singly), what to say of each stack's folder, and the resumed ones' records."""
        stacked = {c for members in self.stacks.values() for c in members}
        return self.stacks, [(name, config) for name, config in todo if name not in stacked], \
            self.said, self.resumed


def compared_members(folder: Path, members: list[str], rest: list[str],
                     planned: dict[Path, list[str]], left: list[str], cells: list[str],
                     taken: dict[str, Path]) -> list[str] | None:
    """The cells whose stack a folder that does not resume was asked to continue, for why it
    cannot (``members``: its checkpoint's; ``rest``: the cells planned there now): its
    recorded members where they are those of its part, else the planned ones; for a folder
    planned for no stack, the group's cells among its members (they train elsewhere). None:
    nothing to say of it (a new stack's folder that holds none before it, or a folder whose
    stack holds no cell this plan trains elsewhere)."""
    if len(rest) > 1:
        if not holds_a_stack(folder):
            return None
        return members if set(rest) & set(members) and \
            set(members) <= set(planned[folder]) else rest
    if set(left) & set(members) and (folder not in planned or set(members) & set(taken)):
        return [c for c in members if c in cells]  # (its cells train elsewhere)
    return None


def stack_groups(sweep: Sweep, configs: dict[str, RunConfig]
                 ) -> tuple[dict[str, list[str]], dict[str, int]]:
    """The cells that may stack (not the trained baseline, DDP, 16-mixed, ...:
    :func:`~lotterynet.stack_checks.unstackable`) by the stack of their variant and seed
    (:func:`stack_name`), in the grid's order, and each one's epoch budget."""
    groups: dict[str, list[str]] = {}
    budgets: dict[str, int] = {}
    for label, values in sweep.cells():
        name = cell_name(label, values)
        if unstackable(configs[name]):
            continue
        groups.setdefault(stack_name(label, values), []).append(name)
        budgets[name] = values["epochs"]
    return groups, budgets


def resuming_stacks(records: dict[Path, StackRecord | None], recorded: dict[Path, list[str]],
                    left: list[str], cells: list[str], cannot_go_on) -> dict[str, Path]:
    """Which of a group's stack folders (``records``, the planned first; ``recorded``: their
    checkpoints' members) resume: cell -> the folder whose stack resumes it. A folder resumes
    where its members are cells of the group (``cells``), some unfinished (``left``), none
    taken by another, and its checkpoint continues them (``cannot_go_on(record, members)``
    None); of two that hold a cell, the one that trained more member-epochs."""
    taken: dict[str, Path] = {}
    for folder in sorted(records, key=lambda f: -len(recorded[f]) * (
            records[f].epochs_done if records[f] else 0)):  # (stable: planned first)
        members = recorded[folder]
        if set(left) & set(members) and set(members) <= set(cells) and not \
                set(members) & set(taken) and cannot_go_on(records[folder], members) is None:
            taken |= dict.fromkeys(members, folder)
    return taken


def why_set_aside(folder: Path, members: list[str], taken: dict[str, Path], to_train: set[str],
                  cells_dir: Path, why_not_continued) -> tuple[str, str]:
    """``(tag, why)`` for a stack folder of a group that does not resume though it holds cells
    to train (``members``: its checkpoint's), for :func:`~lotterynet.sweep_cells.set_aside`:
    ``done`` where every
    member finished before (nothing of it lost: a sweep extended with new cells); else
    ``stale``: the stack that resumes its members instead (``taken``), or why its checkpoint
    cannot continue them (``why_not_continued()``), or that it has none."""
    shared = [c for c in members if c in taken]
    if members and not set(members) & to_train and all(
            (cells_dir / c / RESULTS).is_file() for c in members):
        return "done", ("finished all its members before (their results stay in their "
                        "cells); this sweep's new cells train as a new stack")
    if (folder / CHECKPOINTS / LAST).is_file():
        why = f"stack {taken[shared[0]].name} resumes {', '.join(shared)} (of the stacks that " \
              f"hold them, the one that trained most)" if shared else why_not_continued()
        return "stale", f"cannot be continued: {why}"
    return "stale", ("has no checkpoint to continue from (none was written, or it was "
                     "deleted; its history is kept): it starts over")


def balanced_parts(items: list, weights: dict, n: int) -> list[list]:
    """``items`` in ``n`` parts of about equal total weight (heaviest first onto the part with
    the least; deterministic), each part in the items' own order: a stack's cells by epoch
    budget, or a sweep's jobs by seconds onto its workers."""
    load, part_of = [0] * n, {}
    for item in sorted(items, key=lambda i: -weights[i]):  # stable: ties keep the given order
        part_of[item] = load.index(min(load))
        load[part_of[item]] += weights[item]
    return [[i for i in items if part_of[i] == p] for p in range(n)]


def fitting_parts(cells: list[str], budgets: dict[str, int], n: int,
                  configs: dict[str, RunConfig], have: int | None, slots: int = 1
                  ) -> list[list[str]]:
    """A group's ``cells`` in ``n`` parts of about equal epochs (:func:`balanced_parts`), or in
    more where a part would hold more members than fit in memory together
    (:func:`~lotterynet.stack_checks.members_that_fit`, at the group's highest sparsity, in
    ``have``,
    the memory available, or a share of it where ``slots`` jobs run at once): the fewest that
    fit. A part of one cell runs singly."""
    most = members_that_fit(configs[max(cells, key=lambda c: configs[c].sparsity)], have,
                            slots) if len(cells) > n else None
    n = max(n, -(-len(cells) // most)) if most else n
    while max(map(len, parts := balanced_parts(cells, budgets, n))) > (most or len(cells)):
        n += 1  # (parts of unequal budgets hold unequal counts)
    return parts


def split_line(group: str, cells: list[str], split: list[list[str]],
               configs: dict[str, RunConfig], have: int, slots: int) -> str:
    """What the planner says of a group's stack that it cut into parts (``split``) because its
    members would not fit in memory together (:func:`fitting_parts`): what they need (at the
    group's highest sparsity, :func:`~lotterynet.stack_checks.stack_need`), what is available
    (``have``, what the cut was made by: read again, it may have changed meanwhile), and the
    parts."""
    need = stack_need(configs[max(cells, key=lambda c: configs[c].sparsity)], len(cells))
    share = f" ({in_binary_units(have // slots)} for each of {slots} jobs at once)" * (slots > 1)
    largest = max(map(len, split))
    parts = f"run as {len(split)} parts of up to {plural(largest, 'member')}" if largest > 1 \
        else "its cells run singly"
    return (f"stack {group}: {plural(len(cells), 'member')} need at least "
            f"{in_binary_units(need)} of memory together, {in_binary_units(have)} available"
            f"{share}: {parts}")
