"""Stacked runs: runs that differ only in sparsity (and optionally epoch budget) trained
together as one model, one forward and one backward pass per batch for all of them.

A stack of S *members* is S ordinary models (``build_model`` of each member's own config)
trained on the same batches in one Lightning loop. What the members share is stored and
computed once: equal frozen tensors are one tensor, and the leading frozen modules of an
``nn.Sequential`` (LeNet5's random convolutions, a ``Flatten``) run once per batch and feed
every member. Each member keeps its own scores, its own exact top-k masks (its own k), its own
optimizer (momentum buffers, weight decay) and its own cosine schedule over its own epoch
budget. The loss is the sum of the members' losses, so the one backward pass gives every
member exactly the gradient of its own loss: a member performs the same operations on the same
tensors as its single run, and on the CPU ends with the same masks and scores bit for bit
(``tests/test_stack.py``).

* **Budgets.** A member whose epoch budget is over stops updating (no forward, no optimizer
  step, no weight decay) and is tested at once; so one stack over budgets 10/20/30 gives the
  paper's best-over-budgets points.
* **Seeds.** Members share one seed: it draws their batch order as well as their frozen
  weights and scores (a member of another seed would have recorded a seed whose single run
  trains on another order). Sweeps stack per seed; :class:`~lotterynet.stack_model.StackedModel`
  in a loop of one's own takes members of any seeds.
* **Outputs.** Each member writes its own cell directory as a single run does:
  ``results.json`` (with ``stack`` naming the stack), ``metrics.csv`` (its whole history) and
  ``checkpoints/last.ckpt`` (its model, loadable with ``weights_only=True``). The stack's own
  directory holds the stack checkpoint (every member's scores, optimizer and schedule state,
  rewritten every epoch), the stack's ``metrics.csv`` with every member's metrics under its
  name, and — with ``wandb`` — one W&B run for the whole stack, metrics keyed ``<member>/…``,
  and for each member, once finished, the W&B run its single run would be, its id in its cell
  (:func:`log_member_run`). A killed stack resumes from its checkpoint.

Python use: :class:`~lotterynet.stack_model.StackedModel` (plain torch) for your own loop,
:func:`run_stack` for Lightning.

The stack's parts, a module each: which runs may stack and how many members fit in memory
(:mod:`lotterynet.stack_checks`), its LightningModule and the callback that writes each
member's cell (:mod:`lotterynet.stack_module`), and what its checkpoint records and its stack
file (:mod:`lotterynet.stack_files`); this module runs them (:func:`run_stack`) and logs its
members to W&B as runs of their own (:func:`log_member_run`, :func:`log_diverged_member`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import Logger

from .checkpointing import (
    CHECKPOINTS,
    LAST,
    Resumed,
    remove_stale_temp_files,
    write_text_atomic,
)
from .config import make_config
from .config_schema import RunConfig
from .datamodule import TensorDataModule
from .errors import ConfigError, OutOfMemory, TrainingDiverged, plural
from .loggers import (
    CELL_JOB,
    METRICS_FILE,
    WANDB_ENDED_FILE,
    WANDB_ID_FILE,
    end_open_wandb,
    ending_wandb_on_failure,
    ending_wandb_runs,
    finish_wandb,
    logged_number,
    make_loggers,
    replay_history,
    reporting_wandb_failure,
    resumed_history,
)
from .memory import DoesNotFit, check_fits, memory_needed
from .optim import optim_settings
from .path_checks import check_not_folders
from .process_lifetime import SigtermStop, stopping_on_sigterm
from .quiet import quiet_lightning
from .resumable import check_resumable
from .run import (
    check_last_batch,
    data_module,
    keeping_global_rngs,
    make_trainer,
    model_spec,
    refusing_unbuildable,
    training_as_its_own_process,
    wandb_config,
)
from .run_callbacks import EpochTimer, RNGState, check_callback_states
from .run_dir import END_FILES, RESULTS, locked, write_json_atomic
from .run_stops import (
    CELLS_ANEW,
    NOTHING_TO_RESUME,
    how_to_go_on,
    reporting_interrupts,
    reporting_interrupts_before_fit,
    reporting_out_of_memory,
    reporting_write_failure,
    run_again,
)
from .stack_checks import check_stackable
from .stack_files import (
    StackRecord,
    cannot_continue,
    check_finished_cells,
    holds_a_stack,
    members_in,
    named_twice,
    stack_record,
    train_again,
    trains_again,
)
from .stack_module import MemberResults, StackModule, member_history
from .ticket_file import TICKET

# ---------------------------------------------------------------------------- the runner


#: Why a stack whose checkpoint is gone does not continue (its history is kept).
NO_CHECKPOINT = "it has no checkpoint (none was written, or it was deleted)"


@keeping_global_rngs()
@training_as_its_own_process()
@quiet_lightning()
def run_stack(configs: Sequence[RunConfig | dict], stack_dir: str | Path,
              cell_dirs: Sequence[str | Path] | None = None, *, in_a_sweep: bool = False
              ) -> list[dict]:
    """Train ``configs`` as one stack in ``stack_dir`` and return every member's results (as
    ``results.json`` holds them). ``cell_dirs`` (default ``stack_dir/cells/<i>``) are the
    members' own directories (a member's ``out``, where set, must be its cell). A stack whose
    checkpoint is in ``stack_dir`` with the same members and configs resumes from it (members
    already finished are not trained again); the checkpoint of another stack there is refused
    (:class:`ConfigError`), never overwritten. A member that diverges stops there, the others
    train to their end; then :class:`TrainingDiverged` names it. Memory that runs out stops it with
    :class:`~lotterynet.errors.OutOfMemory`, as it refuses a stopped stack that resumes, before
    it is built, whose members do not fit in the memory available now. SIGTERM stops it with
    :class:`Interrupted` from its start to its end, as a single run (:func:`~lotterynet.run.run`;
    its handler, :class:`~lotterynet.process_lifetime.SigtermStop`), also outside Lightning's fit.
    W&B's own errors are one line (:class:`~lotterynet.errors.WandbFailed`), as a run's; a
    file it could not write (:class:`~lotterynet.errors.WriteFailed`) says how it goes on as
    its stop does.
    ``in_a_sweep``: a sweep runs it (in its process, or as its ``--stack-file`` job), and its
    lines say how to go on by the sweep (:func:`run_again_by`), not by the same call."""
    stack_dir = Path(stack_dir)
    if stack_dir.name in ("", ".."):  # "." (train.py --stack-file stack.yaml): named in its lines
        stack_dir = stack_dir.resolve()
    cell_dirs = [Path(d) for d in cell_dirs] if cell_dirs else [
        stack_dir / "cells" / str(i) for i in range(len(configs))]
    what, checkpoint = f"stack {stack_dir.name}", stack_dir / CHECKPOINTS / LAST
    again, over = run_again_by(in_a_sweep)
    finished = partial(with_members_finished, stack_dir, cell_dirs, in_a_sweep, f"{what}: ")
    with stopping_on_sigterm() as sigterm, reporting_interrupts_before_fit(
            checkpoint, f"{what}: {again}", nothing=f"{what}: {over}", finished=finished), \
            reporting_write_failure(lambda: how_to_go_on(
                checkpoint, f"{what}: {again}", finished=finished) or f"{what}: {over}"), \
            reporting_wandb_failure(  # (a sweep run again logs the members its stack did not)
                f"{what}: W&B failed to log it", lambda: every_member_finished(
                    cell_dirs, in_a_sweep) or f"{members_kept(cell_dirs)}; "
                f"{how_to_go_on(checkpoint, again) or over}"):
        return set_up_and_run_stack(configs, stack_dir, cell_dirs, sigterm, in_a_sweep)


def members_kept(cell_dirs: list[Path]) -> str:
    """What a stack stopped part way keeps of its members: the results of those finished."""
    finished = sum((cell / RESULTS).is_file() for cell in cell_dirs)
    if finished == 0:
        return "no member had finished"
    return "its finished member's results are kept in its cell" if finished == 1 else \
        f"its {finished} finished members' results are kept in their cells"


def run_again_by(in_a_sweep: bool) -> tuple[str, str]:
    """How a stopped stack goes on, and one stopped before its first epoch ended
    (:func:`run_again`): by the same sweep run again where a sweep runs it, else by the same
    :func:`run_stack` call."""
    return run_again(again_by(in_a_sweep))


def again_by(in_a_sweep: bool) -> str:
    """What runs a stack again: the sweep where a sweep runs it, else the :func:`run_stack`
    call."""
    return "sweep" if in_a_sweep else "run_stack call"


def with_members_finished(stack_dir: Path, cell_dirs: Sequence[Path], in_a_sweep: bool,
                          what: str = "") -> str | None:
    """How a stack stopped (or failed) with members finished goes on, ``what`` before it,
    where that is neither from its checkpoint nor by starting over in its folder: every member
    finished (:func:`every_member_finished`); or, in a sweep, before its first checkpoint was
    written, some (a 1-epoch member, finished at the first epoch's end). The sweep run again
    keeps their results and trains the members left anew: not in this folder as it is, whose
    history logged that epoch (:func:`~lotterynet.stack_files.holds_a_stack`): a stack of them
    finds it set aside first (``STACK.stale-N``, :func:`~lotterynet.sweep_plan.why_set_aside`;
    run_again's line said to start it over in its folder), a lone one trains singly. None
    otherwise."""
    done = every_member_finished(cell_dirs, in_a_sweep, what)
    if done or not in_a_sweep or (stack_dir / CHECKPOINTS / LAST).is_file() or \
            not any((cell / RESULTS).is_file() for cell in cell_dirs):
        return done
    return (f"{what}{NOTHING_TO_RESUME}; run the same sweep again to train the members left "
            f"anew ({members_kept(cell_dirs)}; where they train as a stack again, the sweep "
            f"first sets this stack's folder aside as {stack_dir.name}.stale-N)")


def every_member_finished(cell_dirs: Sequence[Path], in_a_sweep: bool, what: str = ""
                          ) -> str | None:
    """How a stack stopped (or failed) once every member's results were written goes on,
    ``what`` before it: run again (:func:`again_by`) it trains nothing
    (:func:`finished_stack`), with its checkpoint or without (stopped as it saved its last,
    or as it logged to W&B); None while a member's results are missing (a diverged
    member's: it goes on from its checkpoint or starts over, :func:`run_again`)."""
    if not all((cell / RESULTS).is_file() for cell in cell_dirs):
        return None
    return (f"{what}every member has finished (its results are in its cell); run the same "
            f"{again_by(in_a_sweep)} again to end it, training nothing")


def set_up_and_run_stack(configs: Sequence[RunConfig | dict], stack_dir: Path,
                         cell_dirs: list[Path], sigterm: SigtermStop, in_a_sweep: bool
                         ) -> list[dict]:
    """:func:`run_stack` once its SIGTERM handler is installed."""
    configs = [c if isinstance(c, RunConfig) else make_config(c) for c in configs]
    check_stackable(configs)
    if len(cell_dirs) != len(configs):
        raise ValueError(f"{len(configs)} members but {len(cell_dirs)} cell directories")
    elsewhere = next((s for s, (c, d) in enumerate(zip(configs, cell_dirs))
                      if c.out and os.path.abspath(c.out) != os.path.abspath(d)), None)
    if elsewhere is not None:  # (its results.json would name a folder nothing was written to)
        raise ValueError(f"member {elsewhere}'s out {configs[elsewhere].out!r} is not its cell "
                         f"directory {str(cell_dirs[elsewhere])!r}: a member's files go to its "
                         f"cell; leave out unset, or pass the folders as cell_dirs")
    twice = named_twice(cell_dirs)
    if twice is not None:
        raise ValueError(f"cell directory {str(cell_dirs[twice])!r}: another member's cell has "
                         f"the name {cell_dirs[twice].name!r}; give each member a cell of its "
                         f"own name (its metrics are logged under it)")
    check_not_folders(d / file for d in cell_dirs for file in END_FILES)
    check_finished_cells(configs, cell_dirs, [f"cell directory {str(d)!r}" for d in cell_dirs])
    if all((d / RESULTS).is_file() for d in cell_dirs):  # (before any memory check)
        return finished_stack(configs, stack_dir, cell_dirs)
    names = [d.name for d in cell_dirs]
    first = configs[0]
    pl.seed_everything(first.seed, verbose=False)
    data = data_module(first)
    data.setup()
    with refusing_unbuildable(first.arch):
        members = [dict(name=name, spec=model_spec(c, data), optim=optim_settings(c),
                        config=c.to_dict()) for name, c in zip(names, configs)]
        need = memory_needed([(m["spec"], m["optim"]) for m in members], first, stack=True)
    try:
        check_fits(f"stack {stack_dir.name} ({plural(len(members), 'member')})", need, first)
    except DoesNotFit as err:
        if cannot_continue(stack_record(stack_dir), names, configs, cell_dirs) is not None:
            raise
        # a stopped stack resumes with the members its checkpoint holds, whatever the memory
        # now: not bad input (it fitted where it trained), as memory that ran out
        unfinished = plural(sum(not (cell / RESULTS).is_file() for cell in cell_dirs),
                            "unfinished member")
        anew = f"it lets the sweep train its {unfinished} anew in parts that fit" \
            if in_a_sweep else f"its {unfinished} train anew in run_stack calls of fewer " \
                               f"members that fit"
        raise OutOfMemory(err.args[0], f"it resumes only with the members its checkpoint "
                          f"holds: moved away (out of {stack_dir.parent}), {anew}",
                          *run_again_by(in_a_sweep)) from None
    with refusing_unbuildable(first.arch):
        module = StackModule(members, cuda_graphs=first.cuda_graphs)
    check_last_batch(first, module.model)
    with contextlib.ExitStack() as held:  # the stack's folder and its members' cells
        for folder, what in ((stack_dir, "stack folder"), *((d, "cell") for d in cell_dirs)):
            folder.mkdir(parents=True, exist_ok=True)
            held.enter_context(locked(folder, f"{what} {str(folder)!r} is in use by another "
                                              f"process (a sweep's job, --stack-file or "
                                              f"--cell); wait for it"))
        for folder in (stack_dir, *cell_dirs):  # what a killed stack's writes left, as a run
            for written in (folder, folder / CHECKPOINTS):  # removes its own
                remove_stale_temp_files(written)
        return train_stack(configs, stack_dir, cell_dirs, data, module, sigterm, in_a_sweep)


def finished_stack(configs: list[RunConfig], stack_dir: Path, cell_dirs: list[Path]
                   ) -> list[dict]:
    """A stack whose every member has finished (its results in its cell: one run again once
    done, or stopped as it saved its last epoch's checkpoint, after its members' results):
    nothing trains, nor is built, whatever the memory now. It logs to W&B the members its end
    did not (:func:`log_member_run`) and returns their results. Resumed from its checkpoint,
    it trained an epoch again for nothing (saying its members had finished "outside it"), and
    the memory check refused it, "its 0 unfinished members train anew"."""
    print(f"stack {stack_dir.name}: every member has finished (its results are in its cell); "
          f"nothing to train", flush=True)
    results = [json.loads((d / RESULTS).read_text(encoding="utf-8")) for d in cell_dirs]
    for member in unlogged_members(zip(configs, cell_dirs, results)):
        log_member_run(*member)
    return results


def unlogged_members(finished: Iterable[tuple[RunConfig, Path, dict]]
                     ) -> list[tuple[RunConfig, Path, dict]]:
    """Of ``finished`` members (each its config, cell and results), those to log to W&B as
    runs of their own (:func:`log_member_run`): asked for with ``wandb``, and not logged yet
    (their results hold no ``wandb_dir``, which a logged member's and a single run's hold)."""
    return [(config, cell, r) for config, cell, r in finished
            if config.wandb and "wandb_dir" not in r]


def member_summary(results: dict, history: list[dict]) -> dict:
    """What a member's W&B summary holds (under its name), as a single run's: test accuracy,
    best validation accuracy, parameter counts and the kept fraction of each layer."""
    vals = [row["val/acc"] for row in history if "val/acc" in row]
    return {"test/acc": results["test_acc"], **({"val/acc_best": max(vals)} if vals else {}),
            **{f"params/{k}": v for k, v in results["params"].items()},
            **{f"density/{k}": v for k, v in results["layer_density"].items()}}


def log_member_run(config: RunConfig, cell: Path, results: dict) -> None:
    """Log a finished member (``results``, its results.json) into W&B as the run of its cell, as
    the cell's single run logs itself (its name, config, summary and ticket; with
    ``--log-model`` its checkpoint, as ``model-<run id>``), so that a sweep's group shows every
    cell as a run however it trained: its whole ``metrics.csv`` is replayed into it, as a resume
    replays a history into a W&B run that lacks it, and its id is kept in its cell, where a
    single run of the cell resuming from its checkpoint continues it (and where a logging that
    failed or was stopped left it: logged again, the member's run keeps that id). Its
    ``wandb_dir`` goes into its ``results.json``, as a single run's: a member whose results hold
    one is not logged again. Called by the stack as it ends, and by a sweep for the members
    whose stack's logging of them did not end
    (:func:`~lotterynet.sweep_wandb.log_unlogged_members`)."""
    # (what a checkpoint of its test would hold: the rows of every epoch, its test's, and of
    # every step that logs no epoch)
    resumed = (cell / CHECKPOINTS / LAST,
               {"epoch": results["epochs_done"], "global_step": math.inf})
    history = [{k: logged_number(v) for k, v in row.items() if v not in ("", None)}
               for row in resumed_history(resumed)]
    summary = {k: v for k, v in member_summary(results, history).items()  # (a single run's
               if k in ("test/acc", "val/acc_best", "params/kept")}  # other keys: its history)
    ticket = cell / TICKET
    # (its W&B run last: from its start to its end only make_loggers' replay and
    # finish_wandb, which end it where they fail or are stopped)
    loggers = make_loggers(cell, wandb_config(config, results["spec"], results["lr"]),
                           resumed, CELL_JOB, replay=True)
    results["wandb_dir"] = finish_wandb(loggers, summary,
                                        {"": ticket} if ticket.is_file() else None,
                                        checkpoint=cell / CHECKPOINTS / LAST
                                        if config.log_model else None)
    write_json_atomic(results, cell / RESULTS)


def log_diverged_member(config: RunConfig, cell: Path, settings: dict, rows: list[dict]
                        ) -> None:
    """Log a member that diverged (``settings``: its :class:`StackModule` member's; ``rows``:
    its history to the divergence, :func:`member_history`) into W&B as the run of its cell,
    as its single run leaves it: its config and that history, no test, ended with the
    divergence's exit code (3: W&B marks it failed; ``run.train_and_test``'s). Once its run
    has ended its cell's :data:`~lotterynet.loggers.WANDB_ENDED_FILE` says so: the stack run
    again (the member still diverged) does not log it again; one whose logging was stopped or
    failed it logs again under the id its cell keeps, as :func:`log_member_run` does (its
    stopped run's offline folder and the new one are one W&B run)."""
    loggers = make_loggers(cell, wandb_config(config, settings["spec"], settings["optim"]["lr"]),
                           job_type=CELL_JOB, replay=True)
    with ending_wandb_on_failure(partial(end_open_wandb, loggers)):
        replay_history(loggers[-1], rows)
    ended = finish_wandb(loggers, {}, exit_code=TrainingDiverged.exit_code)  # (ends it on failure)
    write_text_atomic(cell / WANDB_ENDED_FILE, f"{ended}\n")


def train_stack(configs: list[RunConfig], stack_dir: Path, cell_dirs: list[Path],
                data: TensorDataModule, module: StackModule, sigterm: SigtermStop,
                in_a_sweep: bool) -> list[dict]:
    """:func:`run_stack`'s training, its folder locked. ``sigterm``: the stack's handler,
    asked after the fit for a SIGTERM that Lightning noted too late to act on."""
    record = stack_record(stack_dir)
    resume = resume_point(stack_dir, record, module.names, configs, cell_dirs)
    budget = max(c.epochs for c in configs)
    resumed = (resume, record.checkpoint) if resume else None
    if resumed:
        say_what_trains_again(stack_dir, record, module.names, configs, cell_dirs)
        check_resumable(record.checkpoint, module, budget, resume, finite=False)
        check_callback_states(record.checkpoint, (RNGState(), EpochTimer(), MemberResults(
            cell_dirs, stack_dir, EpochTimer())))
    else:
        forget_earlier_wandb_runs(cell_dirs)
    loggers = stack_loggers(configs, module, stack_dir, resume, resumed, budget)
    with ending_wandb_runs(loggers) as logged_to:
        trainer, results_writer = stack_trainer(configs[0], budget, stack_dir, cell_dirs,
                                                loggers, resumed)
        logged_to[:] = trainer.loggers
        log_stack_hparams(loggers, module, stack_dir, configs, cell_dirs)
        with reporting_stack_stops(trainer, stack_dir, configs[0], cell_dirs, in_a_sweep):
            trainer.fit(module, datamodule=data, ckpt_path=resume)
            sigterm.stop_if_received()
            results = [json.loads((d / RESULTS).read_text(encoding="utf-8"))
                       if (d / RESULTS).is_file() else {"finished": False, "run_dir": str(d)}
                       for d in cell_dirs]
            log_stack_end(loggers, stack_dir, configs, cell_dirs, module,
                          results_writer.history, results)
    raise_if_diverged(stack_dir, configs, module)
    return results


def resume_point(stack_dir: Path, record: StackRecord | None, names: list[str],
                 configs: list[RunConfig], cell_dirs: list[Path]) -> Path | None:
    """The stack checkpoint this stack resumes from; None where its folder holds none it can
    continue: refused where the folder holds an earlier stack's checkpoint or history, said
    where a stack stopped before its first checkpoint was written left only its metrics there
    (:func:`~lotterynet.stack_files.holds_a_stack`), with the members it had finished (they
    train again with it, their results kept)."""
    checkpoint = stack_dir / CHECKPOINTS / LAST
    why = cannot_continue(record, names, configs, cell_dirs)
    resume = checkpoint if why is None else None
    if resume is None and holds_a_stack(stack_dir, lambda stopped: cannot_continue(
            stopped, names, configs, cell_dirs) is None):
        raise ConfigError(f"stack folder {str(stack_dir)!r} holds an earlier stack's "
                          f"checkpoint or history that this stack cannot continue "
                          f"({why if checkpoint.exists() else NO_CHECKPOINT}); give this stack "
                          f"a folder of its own, or move that one away")
    if resume is None and (stack_dir / METRICS_FILE).exists():
        finished = [name for name, cell in zip(names, cell_dirs) if (cell / RESULTS).is_file()]
        print(f"stack {stack_dir.name}: its folder holds no checkpoint (stopped before its "
              f"first was written): it starts over there"
              f"{'; ' + train_again(finished, 'finished') if finished else ''}", flush=True)
    return resume


def say_what_trains_again(stack_dir: Path, record: StackRecord, names: list[str],
                          configs: list[RunConfig], cell_dirs: list[Path]) -> None:
    """Say which members a resumed stack trains again (:func:`trains_again`: a member its
    checkpoint holds that finished meanwhile outside it), where any does."""
    again = trains_again(record, configs, {name for name, cell in zip(names, cell_dirs)
                                           if (cell / RESULTS).is_file()})
    if again:
        print(f"stack {stack_dir.name} {again}", flush=True)


def forget_earlier_wandb_runs(cell_dirs: list[Path]) -> None:
    """A new stack's unfinished members are new runs: none continues the W&B run of one that
    was in its cell before, a diverged member's or a stopped single run's, as a run's
    --overwrite clears its id."""
    for cell in cell_dirs:
        if not (cell / RESULTS).is_file():
            for name in (WANDB_ID_FILE, WANDB_ENDED_FILE):
                (cell / name).unlink(missing_ok=True)


def stack_loggers(configs: list[RunConfig], module: StackModule, stack_dir: Path,
                  resume: Path | None, resumed: Resumed | None, budget: int) -> list[Logger]:
    """The stack's loggers. Its W&B run's config: what its members' runs' configs share
    (their learning rate as they train with it, not the config's null for the architecture's
    default), its members, their sparsities and the longest budget."""
    options = [wandb_config(c, m["spec"], m["optim"]["lr"])
               for c, m in zip(configs, module.hparams.members)]
    shared = {k: v for k, v in options[0].items() if all(o.get(k) == v for o in options)}
    return make_loggers(stack_dir, {**shared, "members": module.names,
                                    "resume": str(resume) if resume else None,
                                    "sparsities": [c.sparsity for c in configs],
                                    "epochs": budget}, resumed, job_type="stack")


def stack_trainer(first: RunConfig, budget: int, stack_dir: Path, cell_dirs: list[Path],
                  loggers: list[Logger], resumed: Resumed | None
                  ) -> tuple[pl.Trainer, MemberResults]:
    """The stack's Trainer, run for the longest member's ``budget``, and its callback that
    writes each member's cell as it finishes (:class:`MemberResults`)."""
    timer = EpochTimer()
    results_writer = MemberResults(cell_dirs, stack_dir, timer)
    longest = make_config({**first.to_dict(), "epochs": budget,
                           "resume": None})
    trainer = make_trainer(longest, stack_dir, loggers, timer, callbacks=(results_writer,),
                           resumed=resumed)
    return trainer, results_writer


def log_stack_hparams(loggers: list[Logger], module: StackModule, stack_dir: Path,
                      configs: list[RunConfig], cell_dirs: list[Path]) -> None:
    """Log the stack's hyperparameters (hparams.yaml), its members' cells named as stack.yaml
    names them."""
    for logger in loggers:
        logger.log_hyperparams({**module.hparams, "members": [
            {**member, "config": config} for member, config in
            zip(module.hparams.members, members_in(stack_dir, configs, cell_dirs))]})


@contextlib.contextmanager
def reporting_stack_stops(trainer: pl.Trainer, stack_dir: Path, first: RunConfig,
                          cell_dirs: list[Path], in_a_sweep: bool):
    """A stack's fit stopped (Ctrl-C, SIGTERM) or out of memory ends in one line saying how it
    goes on: run again (by the sweep, or run_stack), or with less memory needed."""
    checkpoint = stack_dir / CHECKPOINTS / LAST
    what, (again, over) = f"stack {stack_dir.name}", run_again_by(in_a_sweep)
    less = (f"a sweep with --no-stack (one run per cell) or a smaller --batch-size (now "
            f"{first.batch_size}; {CELLS_ANEW}) needs less") if in_a_sweep else (
        f"a stack of fewer members or a smaller batch_size (now {first.batch_size}) needs less")
    with reporting_interrupts(trainer, checkpoint, f"{what}: {again}",
                              nothing=f"{what}: {over}", finished=partial(
                                  with_members_finished, stack_dir, cell_dirs, in_a_sweep,
                                  f"{what}: ")), \
            reporting_out_of_memory(trainer, what, less, checkpoint, again, nothing=over):
        yield


def log_stack_end(loggers: list[Logger], stack_dir: Path, configs: list[RunConfig],
                  cell_dirs: list[Path], module: StackModule, histories: list[list[dict]],
                  results: list[dict]) -> None:
    """End the stack's W&B run with its finished members' summaries and tickets (each ticket
    in its cell as it is now: a cell finished before the stack's folders were copied or moved
    names the old one in its run_dir), then log its members as runs of their own."""
    finished = [(name, r, history, cell, config) for name, r, history, cell, config in
                zip(module.names, results, histories, cell_dirs, configs)
                if r["finished"]]
    finish_wandb(loggers, {f"{name}/{key}": value for name, r, history, *_ in finished
                           for key, value in member_summary(r, history).items()},
                 {name: cell / TICKET for name, _, _, cell, _ in finished
                  if (cell / TICKET).is_file()})
    unlogged = unlogged_members((config, cell, r) for _, r, _, cell, config in finished)
    log_members_as_runs(stack_dir, configs, cell_dirs, module, histories, unlogged)


def log_members_as_runs(stack_dir: Path, configs: list[RunConfig], cell_dirs: list[Path],
                        module: StackModule, histories: list[list[dict]],
                        unlogged: list[tuple[RunConfig, Path, dict]]) -> None:
    """Log to W&B, each as the run of its cell, the ``unlogged`` finished members
    (:func:`log_member_run`) and the diverged ones whose run has not ended
    (:func:`log_diverged_member`), saying so first (a second or more each)."""
    diverged = [s for s in module.diverged
                if configs[s].wandb and not (cell_dirs[s] / WANDB_ENDED_FILE).is_file()]
    logged = len(unlogged) + len(diverged)
    if logged:  # (a second or more each, in silence before: review)
        print(f"stack {stack_dir.name}: logging {plural(logged, 'member')} to W&B as "
              f"{'a run of its' if logged == 1 else 'runs of their'} own", flush=True)
    for member in unlogged:
        log_member_run(*member)
    for s in diverged:
        log_diverged_member(configs[s], cell_dirs[s], module.hparams.members[s],
                            member_history(module.model.members[s], histories[s]))


def raise_if_diverged(stack_dir: Path, configs: list[RunConfig], module: StackModule) -> None:
    """A stack one of whose members diverged fails, naming each (the others finished)."""
    if module.diverged:
        others = len(configs) - len(module.diverged)
        raise TrainingDiverged(f"stack {stack_dir}: {'; '.join(module.diverged.values())}; "
                               f"lower --lr" + f" (the other {others} finished)" * (others > 0))
