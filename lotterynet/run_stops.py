"""What a run (a stack, a sweep's cell) that stops or fails says of how it goes on: stopped by
Ctrl-C or SIGTERM in its fit or before it (:func:`reporting_interrupts`,
:func:`reporting_interrupts_before_fit`), out of memory (:func:`reporting_out_of_memory`, with
what needs less: :func:`needs_less`), its W&B logging failed (:func:`after_wandb_failed`), a
file it could not write (:func:`reporting_write_failure`); from its checkpoint, with the epoch
that wrote it, or from the checkpoint it resumed (:func:`how_to_go_on`, :func:`resume_hint`),
else by the same command run again (:func:`run_again`, :data:`START_OVER`); and what a resume
says where the history of its checkpoint's epochs is not beside it
(:func:`history_left_behind`)."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from .checkpointing import CHECKPOINTS, LAST, Resumed, checkpoint_run_dir, epochs_done
from .config_checks import wandb_mode
from .config_schema import RunConfig
from .errors import (
    OutOfMemory,
    Terminated,
    WriteFailed,
    interrupted,
    memory_refused,
    resume_flag,
)
from .loggers import METRICS_FILE, wandb_sync
from .run_callbacks import CheckedCheckpointIO
from .run_dir import RESULTS, holds_files

#: How a run stopped before its first checkpoint goes on.
NOTHING_TO_RESUME = "no checkpoint had been written yet, so there is none to resume from"


def run_again(what: str = "sweep") -> tuple[str, str]:
    """How a stopped run, stack or sweep cell goes on, by running the same ``what`` again (a
    run's command; the sweep, which sees which of its members are done; a cell's ``--cell``
    command): from its checkpoint, and, stopped before its first checkpoint, starting over in
    its folder (:func:`~lotterynet.run_dir.left_before_a_checkpoint`,
    :func:`~lotterynet.stack.train_stack`, :func:`~lotterynet.sweep_cells.prepare_cell`)."""
    return (f"run the same {what} again to continue from its checkpoint",
            f"{NOTHING_TO_RESUME}; run the same {what} again to start it over in its folder")


#: What a run stopped before its first checkpoint says: the same command starts it over in its
#: folder (:func:`~lotterynet.run_dir.left_before_a_checkpoint`).
START_OVER = run_again("command")[1]

#: What a sweep given another --batch-size (or model) does: every cell's config changed, it
#: runs them anew, each old one renamed CELL.stale-N (:func:`~lotterynet.sweep_cells.prepare_cell`).
CELLS_ANEW = "its cells then start over as new ones, the old set aside as stale"


def needs_less(config: RunConfig, in_a_sweep: bool = False) -> str:
    """What needs less memory where ``config``'s run ran out: a new run with a smaller batch
    or a narrower model; for a sweep's cell, a sweep with them, whose cells start over
    (:data:`CELLS_ANEW`): a new run of that one cell would not be the sweep's."""
    smaller = (f"a smaller --batch-size (now {config.batch_size}) or a narrower model "
               f"(--pairs, --hidden)")
    return f"a sweep with {smaller} needs less ({CELLS_ANEW})" if in_a_sweep else \
        f"a new run with {smaller} needs less"


@contextlib.contextmanager
def reporting_out_of_memory(trainer: pl.Trainer, what: str, less: str, checkpoint: Path,
                            resume: str | None = None, resumed: str | None = None,
                            nothing: str = NOTHING_TO_RESUME, testing: bool = False):
    """Memory that runs out inside (a tensor the GPU or the CPU allocator refuses) as
    :class:`OutOfMemory`, one line: ``what`` (the run or the stack), the training epoch it ran
    out in (its test where ``testing``: Lightning forgets the stage it failed in), the size
    refused, what needs ``less`` memory, and how to go on where more memory is free
    (:func:`how_to_go_on` of ``checkpoint``, ``resume``, ``resumed``), or ``nothing``."""
    try:
        yield
    except (RuntimeError, MemoryError) as err:
        size = memory_refused(err)
        if size is None:
            raise
        when = "testing its trained model" if testing else \
            f"in training epoch {trainer.current_epoch + 1}"
        then = how_to_go_on(checkpoint, resume, resumed)
        raise OutOfMemory(f"{what}: memory ran out {when}{size}", less, then, nothing) from None


@contextlib.contextmanager
def reporting_interrupts(trainer: pl.Trainer, checkpoint: Path, resume: str | None = None,
                         resumed: str | None = None, nothing: str = NOTHING_TO_RESUME,
                         finished: Callable[[], str | None] | None = None):
    """Turn Lightning's end of a run stopped by a signal — ``sys.exit(1)`` after Ctrl-C, a
    ``SystemExit`` without a code after SIGTERM — into :class:`Interrupted`, which names the
    signal and how to go on (:func:`how_to_go_on`, or ``nothing``: that there is nothing to
    resume); and so a Ctrl-C or SIGTERM (:class:`Terminated`) outside Lightning's fit and test
    (writing the ticket or the results)."""
    try:
        yield
    except (SystemExit, KeyboardInterrupt, Terminated) as stop:
        if isinstance(stop, SystemExit) and not trainer.interrupted:
            raise
        then = how_to_go_on(checkpoint, resume, resumed, trainer, finished) or nothing
        stopped = interrupted(isinstance(stop, (SIGTERMException, Terminated)), then,
                              epochs_written(checkpoint, trainer))
        raise stopped from None


@contextlib.contextmanager
def reporting_interrupts_before_fit(checkpoint: Path | None, resume: str | None = None,
                                    resumed: str | None = None, nothing: str | None = None,
                                    finished: Callable[[], str | None] | None = None):
    """A Ctrl-C or SIGTERM (:class:`Terminated`) before a run's or a stack's fit (its
    checkpoint or data being read, its model built) as :class:`Interrupted`, saying how to
    go on as in its fit (:func:`how_to_go_on`), or ``nothing`` (default: no more) where there
    is nothing to resume. ``checkpoint`` None: a fresh run, whose folder may still hold the
    checkpoint of the run that ``--overwrite`` is about to clear, not its own."""
    try:
        yield
    except (KeyboardInterrupt, Terminated) as stop:
        then = checkpoint and how_to_go_on(checkpoint, resume, resumed, finished=finished)
        raise interrupted(isinstance(stop, Terminated), then or nothing) from None


def how_to_go_on(checkpoint: Path, resume: str | None = None, resumed: str | None = None,
                 trainer: pl.Trainer | None = None,
                 finished: Callable[[], str | None] | None = None) -> str | None:
    """How a run or stack stopped now goes on: from its own ``checkpoint``
    (``RUN/checkpoints/last.ckpt``) while there is one, as ``resume`` says (default: its
    ``--resume``), with the epoch it ends at where its ``trainer`` saved or loaded it (the last
    epoch whose line was printed, :class:`~lotterynet.run_callbacks.EpochLines`), else from
    the checkpoint the run ``resumed`` (:func:`resume_hint`: a run resumed into a new ``--out``
    before its first epoch there ended); None with neither. A run whose results are written
    (stopped while its W&B run ends, after them) is finished: it names them; ``finished``,
    where given, says instead what one that has finished says (None while it has not: a
    stack's, whose members' results are in their cells,
    :func:`~lotterynet.stack.every_member_finished`)."""
    results = checkpoint.parent.parent / RESULTS
    if finished:
        done = finished()
    elif results.is_file():
        done = f"the run is finished: its results are in {str(results)!r}"
    else:
        done = None
    if done:
        return done
    if checkpoint.is_file():
        then = resume or resume_hint(checkpoint)
        return with_its_epoch(then, epochs_written(checkpoint, trainer))
    return resume_hint(resumed, checkpoint.parent.parent)


def with_its_epoch(then: str, done: int | None) -> str:
    """``then`` (how a stopped run goes on from its checkpoint) with the epoch at whose end that
    checkpoint was written, where ``done`` (its epochs) is known."""
    return f"{then} (written at the end of epoch {done})" if done else then


def epochs_written(checkpoint: Path, trainer: pl.Trainer | None) -> int | None:
    """The epochs that a run's own ``checkpoint`` holds: where its ``trainer`` wrote or loaded
    it, as its checkpoint IO noted them, else as the file says (:func:`epochs_in`: a run or
    stack resumed and stopped before its fit loaded it); None where the file is gone."""
    if not checkpoint.is_file():
        return None
    io = trainer and trainer.strategy.checkpoint_io
    noted = io.epochs_of(checkpoint) if isinstance(io, CheckedCheckpointIO) else None
    return epochs_in(checkpoint) if noted is None else noted


def epochs_in(checkpoint: Path) -> int | None:
    """The epochs that the ``checkpoint`` file holds, off its pickle alone: its tensors are
    memory-mapped, not read (some 40 ms for a 14 MB stack's, whatever the model's size), so
    that a run stopping may say it within a scheduler's grace; None where the file cannot be
    read (its digest is not checked: the number only goes into a line)."""
    try:
        return epochs_done(torch.load(checkpoint, map_location="cpu", mmap=True,
                                      weights_only=True))
    except Exception:  # (a file gone meanwhile, torn, foreign: the line names no epoch)
        return None


def resume_hint(checkpoint: str | Path | None, run_dir: Path | None = None) -> str | None:
    """How to go on from ``checkpoint``, the one a run resumed from, None without one; a run
    resumed into ``run_dir``, another ``--out`` than the checkpoint's run, goes on there while
    that holds no file of its own (else into an empty one: a resume into an ``--out`` that
    holds files is refused, and without ``--out`` it would continue the checkpoint's run)."""
    if not (checkpoint and Path(checkpoint).is_file()):
        return None
    hint = f"resume with {resume_flag(checkpoint)}"
    if run_dir is None or run_dir.resolve() == checkpoint_run_dir(checkpoint):
        return hint
    return f"{hint} --out {shlex.quote(str(run_dir))}" if not holds_files(run_dir) else \
        f"{hint} and an empty --out ({str(run_dir)!r} holds this attempt's files)"


def history_left_behind(resumed: Resumed, run_dir: Path, wandb: bool = False) -> str | None:
    """What a resume says at its start when the history of the epochs its checkpoint trained
    is not beside it, so that ``run_dir``'s ``metrics.csv`` begins after them
    (:func:`~lotterynet.loggers.resumed_history`): a checkpoint copied out of its run folder
    (its run's ``metrics.csv`` holds them), or one in its run's ``checkpoints/`` whose
    ``metrics.csv`` is gone (deleted, moved away: nothing the run has holds them, the
    checkpoint only its last epoch's numbers; put back before the resume writes a new one, it
    is carried on). With ``wandb`` (its W&B run gets that history from the file,
    :func:`~lotterynet.loggers.replay_history`: offline, a new W&B run) the W&B history begins
    anew too: the resume's offline folder, synced last, replaced the run's. None where that
    history is there, carried on."""
    checkpoint, stored = resumed
    source = checkpoint_run_dir(checkpoint)
    if (source / METRICS_FILE).is_file():
        return None
    done = epochs_done(stored)
    epochs = f"epoch{'s 1 to' * (done > 1)} {done}"
    if Path(checkpoint).resolve().parent.name != CHECKPOINTS:
        return (f"--resume {str(checkpoint)!r}: no {METRICS_FILE} of its run beside it, so "
                f"{str(run_dir / METRICS_FILE)!r} begins at epoch {done + 1}; the metrics of "
                f"{epochs} are in the original run's {METRICS_FILE} only")
    history = "it" if run_dir.resolve() == source else repr(str(run_dir / METRICS_FILE))
    return (f"--resume {str(checkpoint)!r}: its run's history, {str(source / METRICS_FILE)!r}, "
            f"is gone, so {history}{' and the W&B history begin' if wandb else ' begins'} "
            f"anew at epoch {done + 1}, without the metrics of "
            f"{epochs}; to keep them, stop now (Ctrl-C) and put that file back")


@contextlib.contextmanager
def reporting_write_failure(then: str | Callable[[], str], instead: bool = False):
    """A file that could not be written in the block (:class:`~lotterynet.errors.WriteFailed`:
    the disk full, a file size limit, its folder taken away) ends it saying, after the file,
    how it goes on once it can write, as its stop says it: ``then``, a callable asked as it
    fails (a run's, :func:`run_goes_on`; a stack's; a sweep's,
    :func:`~lotterynet.sweep_jobs.stopped_sweep`), where no run or stack inside said it; or
    ``instead`` of what that said (a sweep's cell, whose run named its own ``--resume``:
    :func:`~lotterynet.sweep.continued_by_the_sweep`). The line named the file alone."""
    try:
        yield
    except WriteFailed as err:
        if err.then is None or instead:
            err.then = then() if callable(then) else then
        raise


def run_goes_on(run_dir: Path, resumed: str | None) -> str:
    """How the run in ``run_dir`` (resumed from ``resumed``) goes on once it failed or was
    stopped outside its fit: as :func:`how_to_go_on` says, else over (:data:`START_OVER`)."""
    return how_to_go_on(run_dir / CHECKPOINTS / LAST, resumed=resumed) or START_OVER


def after_wandb_failed(run_dir: Path, resumed: str | None) -> str:
    """What a run whose W&B logging failed says of how it goes on: finished (its results are
    written before its W&B run ends), with the command that uploads what its W&B run holds;
    else as a stopped run (:func:`how_to_go_on`), W&B offline if its server still refuses, or
    without W&B where it was offline already (its folder not writable, its disk full)."""
    then = run_goes_on(run_dir, resumed)
    if (run_dir / RESULTS).is_file():
        return f"{then}; {wandb_sync(run_dir)} uploads what its W&B run holds"
    if wandb_mode() == "offline":
        return f"{then}; --no-wandb runs it without W&B"
    return f"{then}; with $WANDB_MODE=offline W&B logs it offline, for `wandb sync` later"
