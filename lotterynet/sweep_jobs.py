"""A sweep's jobs: each stack or single cell as its own ``train.py`` subprocess (:class:`Job`:
:func:`cell_job`, :func:`stack_job`), run N at once per device (:func:`run_jobs`,
:class:`JobRunner`) and stopped together by Ctrl-C or SIGTERM (:func:`stopping_jobs`); what the
sweep says of a job that failed (:func:`how_it_ended`, :class:`Failure`) or that it stopped
(:func:`resumes`)."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from .checkpointing import CHECKPOINTS, LAST, write_text_atomic
from .config_schema import RunConfig
from .config_yaml import dump_yaml
from .errors import ERROR, Interrupted, OutOfMemory, Terminated, TrainingDiverged, interrupted
from .process_lifetime import die_with_parent, hold_stops
from .run_dir import RESULTS
from .run_stops import epochs_in, reporting_write_failure, run_again, with_its_epoch
from .stack_files import write_stack_file

#: Set in the environment of a sweep's jobs (:func:`job_env`): they run under its lock.
SWEEP_JOB = "LOTTERYNET_SWEEP_JOB"


CELL_LOG = "train.log"


@dataclass
class Job:
    """One subprocess of a sweep: ``python train.py ARGV``, its output appended to ``log``;
    ``cells`` are the cells it finishes (one, or a stack's members); ``log_start``: the log's
    size as it started (what its earlier runs, stopped or failed, left there); ``said``: what
    the sweep says of it as it starts (empty: its ``what``), before where its output goes;
    ``cell_dirs``: the folders its cells' results are written to."""

    what: str
    argv: list[str]
    log: Path
    cells: list[str]
    log_start: int = 0
    said: str = ""
    cell_dirs: list[Path] = field(default_factory=list)

    @property
    def checkpoint(self) -> Path:
        """Its checkpoint, where it writes one: in its folder, its log's (a stack's, a cell's)."""
        return self.log.parent / CHECKPOINTS / LAST


#: How a cell that ran without results ended, in its progress line
#: (:func:`~lotterynet.sweep.run_cells`), by the
#: exit code of what ran it (:attr:`Failure.code`); any other: :data:`NOT_FINISHED`.
ENDED = {TrainingDiverged.exit_code: "diverged", OutOfMemory.exit_code: "out of memory"}
NOT_FINISHED = "not finished"


@dataclass(frozen=True)
class Failure:
    """A stack, cell or job that ended without its results: its line, and its exit code
    (``code``: a job's, or the one its error gives ``train.py``, :func:`~lotterynet.errors.
    exit_code`, where it ran in the sweep's process; None: none), by which how it ended is
    known, not by what its line says; ``cells``: the cells it ran (a stack's members), whose
    variant the sweep's advice names (:func:`~lotterynet.sweep.diverged_variants_aside`)."""

    line: str
    code: int | None = None
    cells: tuple[str, ...] = ()

    @property
    def ended(self) -> str:
        """Its cells' word in their progress lines (:data:`ENDED`)."""
        return ENDED.get(self.code, NOT_FINISHED)

    @property
    def diverged(self) -> bool:
        return self.code == TrainingDiverged.exit_code


def cell_job(name: str, config: RunConfig) -> Job:
    """A cell as its own ``train.py --config CELL/cell.yaml``, with ``--overwrite`` where the
    sweep clears the cell (a config file may not set it:
    :func:`~lotterynet.config.load_yaml`)."""
    cell_dir = Path(config.out)
    cell_dir.mkdir(parents=True, exist_ok=True)
    config_file = cell_dir / "cell.yaml"
    write_text_atomic(config_file, dump_yaml({**config.to_dict(), "overwrite": False}))
    return Job(f"cell {name}", ["--config", str(config_file),
                                *["--overwrite"] * config.overwrite], cell_dir / CELL_LOG,
               [name], cell_dirs=[cell_dir])


def stack_job(stack_dir: Path, configs: list[RunConfig], cells: list[str], sweep_dir: Path
              ) -> Job:
    """A stack as its own ``train.py --stack-file STACK/stack.yaml``."""
    cell_dirs = [sweep_dir / "cells" / c for c in cells]
    stack_file = write_stack_file(configs, stack_dir, cell_dirs)
    return Job(f"stack {stack_dir.name}", ["--stack-file", str(stack_file)],
               stack_dir / CELL_LOG, cells, said=stack_line(stack_dir, configs),
               cell_dirs=cell_dirs)


def stack_line(stack_dir: Path, configs: list[RunConfig]) -> str:
    return (f"stack {stack_dir.name}: {len(configs)} members, budgets "
            f"{sorted({c.epochs for c in configs})}")


def job_env(device: int | None, workers: int) -> dict[str, str]:
    """The environment of a job: on GPU ``device`` when one is given, otherwise on the CPU
    with its threads shared among the ``workers`` jobs running at once (``OMP_NUM_THREADS``,
    unless the environment sets it). On the project's 2-core machine a LeNet5 stack runs no
    faster on two threads than on one (``BENCHMARKS.md``): two jobs of one thread each use
    the machine, two of two threads each would contend."""
    env = {**os.environ, SWEEP_JOB: str(os.getpid())}
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(device)
    else:
        env.setdefault("OMP_NUM_THREADS", str(max(1, torch.get_num_threads() // workers)))
    return env


def start_job(job: Job, device: int | None, workers: int, log) -> subprocess.Popen:
    """``job``'s ``train.py`` (environment: :func:`job_env`), its output into ``log``; held
    as it starts (:func:`starting_a_job`) but on Windows, whose Popen takes no ``preexec_fn``
    (ValueError: 'preexec_fn is not supported on Windows platforms', for every job, a DDP
    cell's too) and which has nothing it holds: no ``PR_SET_PDEATHSIG``, no signal masks."""
    train_py = Path(__file__).resolve().parent.parent / "train.py"
    held = {} if sys.platform == "win32" else {"preexec_fn": partial(starting_a_job, os.getpid())}
    return subprocess.Popen([sys.executable, str(train_py), *job.argv],
                            env=job_env(device, workers), stdout=log, stderr=subprocess.STDOUT,
                            **held)


def starting_a_job(sweep: int) -> None:
    """A job's process between its fork and its ``train.py`` (``preexec_fn``): it dies with the
    ``sweep`` (:func:`die_with_parent`: SIGKILL, which no mask holds back), and holds SIGINT
    and SIGTERM back until ``train.py``'s handlers take them
    (:func:`~lotterynet.process_lifetime.stopping_on_sigterm`), which stop it in one line,
    exit 130 / 143: Python's own SIGINT handler raised a Ctrl-C in Python's start (its site
    packages, exit 1) or ``train.py``'s imports as a traceback, and SIGTERM's default action
    killed the job without a word (exit -15; the sweep stopping its jobs sends it to one as it
    starts)."""
    die_with_parent(sweep)
    hold_stops()


class JobRunner:
    """The jobs a sweep runs at once, each in its own ``train.py``, until :meth:`stop`: then
    the running ones get the signal it is given (:func:`forwarded`; each stops at its next
    step, keeping its last checkpoint) and the queued ones never start. ``stopped``: the jobs
    that ended after the stop without finishing, with their exit codes. Each job is said as it
    starts, where its output goes: one queued for a free slot has no log yet."""

    def __init__(self):
        self._lock = threading.Condition()
        self._running: set[subprocess.Popen] = set()
        self._stopped = False
        self.stopped: list[tuple[Job, int]] = []

    def run(self, job: Job, device: int | None, workers: int) -> int | None:
        """``job``'s exit code; None when the sweep stopped before it started."""
        with self._lock:
            if self._stopped:
                return None
            job.log.parent.mkdir(parents=True, exist_ok=True)
            with open(job.log, "a") as log:
                job.log_start = log.tell()
                proc = start_job(job, device, workers, log)
            self._running.add(proc)
            print(f"{job.said or job.what} (subprocess, output in {job.log})", flush=True)
        code = None
        try:
            code = proc.wait()
            return code
        finally:
            with self._lock:
                self._running.discard(proc)
                if self._stopped and code:
                    self.stopped.append((job, code))
                self._lock.notify_all()

    def stop(self, signum: int | None) -> None:
        with self._lock:
            self._stopped = True
            if signum is None:  # (a Ctrl-C on Windows: the console's reached every job)
                return
            for proc in self._running:
                proc.send_signal(signum)

    def wait(self) -> None:
        """Until the jobs running at :meth:`stop` have ended. (The pool's close does not
        always wait for them: a Ctrl-C in its start of a thread, as the thread started a job,
        left that thread out of those it joins, and the sweep said how its jobs stopped while
        that one still ran.)"""
        with self._lock:
            self._lock.wait_for(lambda: not self._running)


def forwarded(err: BaseException) -> signal.Signals | None:
    """The signal that a sweep stopped by ``err`` sends its running jobs: SIGINT for a Ctrl-C,
    which a terminal sends them too (with SIGTERM besides, the two raced: one job's line said
    SIGINT, another's SIGTERM), unless the sweep ignores SIGINT (started in the background),
    which its jobs then ignore too; else SIGTERM. On Windows none for a Ctrl-C (None): the
    console sends it to every process attached to it, the jobs too, and Popen sends no SIGINT
    there (ValueError: 'Unsupported signal: 2', a traceback for the sweep's line)."""
    ctrl_c = isinstance(err, KeyboardInterrupt) and \
        signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, None)
    if ctrl_c and sys.platform == "win32":
        return None
    return signal.SIGINT if ctrl_c else signal.SIGTERM


def ignored(signum, frame) -> None:
    """A signal ignored while a sweep's jobs stop: a handler that does nothing, not SIG_IGN,
    which a job started meanwhile would inherit through its exec (it then ran to its end, a
    SIGTERM sent as it started lost, the sweep waiting for it)."""


#: How a sweep stopped goes on, in its line (:func:`stopped_sweep`).
CONTINUE = "run the same command again to continue"
KEPT = "finished cells are kept"
GO_ON = f"{CONTINUE} ({KEPT}, stopped ones resume from their checkpoints)"


@contextlib.contextmanager
def stopped_sweep(sweep_dir: Path, then: Callable[[], str]):
    """Ctrl-C or SIGTERM in the block that no stack, cell or job of the sweep said
    (KeyboardInterrupt, :class:`~lotterynet.errors.Terminated`) raises :class:`Interrupted`
    with the shell's exit code, in one line: 'sweep DIR stopped by SIGNAL; THEN', ``then()``
    (how the sweep goes on) asked as it stops; a file that could not be written, which no stack
    or cell said how it goes on, says ``then()`` after it
    (:func:`~lotterynet.run_stops.reporting_write_failure`)."""
    try:
        with reporting_write_failure(then):
            yield
    except (KeyboardInterrupt, Terminated) as err:
        stopped = interrupted(isinstance(err, Terminated), then())
        raise Interrupted(f"sweep {sweep_dir} {stopped}", stopped.exit_code) from None


@contextlib.contextmanager
def stopping_jobs(sweep_dir: Path, runner: JobRunner):
    """Ctrl-C or SIGTERM while a sweep's jobs run raises :class:`Interrupted` with the shell's
    exit code (:func:`stopped_sweep`), once :func:`run_jobs` has stopped the jobs
    (:meth:`JobRunner.stop`) and the running ones have ended, inside this block; its line says
    how each job that ``runner`` stopped goes on (:func:`resumes`), as a stack or cell run in
    the sweep's process does."""
    def terminated(signum, frame):
        signal.signal(signal.SIGTERM, ignored)  # (a second one while the jobs stop)
        raise Terminated

    def then() -> str:
        how = [resumes(job) for job, _ in sorted(runner.stopped, key=lambda s: s[0].what)]
        return f"{CONTINUE} ({KEPT}): {', '.join(how)}" if how else GO_ON

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        with stopped_sweep(sweep_dir, then):
            yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_jobs(jobs: Iterable[Job], devices: list[int | None], sweep_dir: Path, finished
             ) -> None:
    """Run ``jobs``, each in its own ``train.py``, one per entry of ``devices`` at once (a
    GPU's number, or None: the CPU), calling ``finished(job, exit code)`` as each ends. Ctrl-C
    or SIGTERM stops them all (:func:`stopping_jobs`) and waits for them to end, a SIGTERM
    ignored meanwhile (after the first, or after a Ctrl-C), so that the sweep's line says how
    it stopped; also while ``jobs`` are made (a generator: their files written, each started
    as it comes)."""
    free: queue.Queue = queue.Queue()
    for device in devices:
        free.put(device)
    runner = JobRunner()

    def work(job: Job) -> tuple[Job, int | None]:
        device = free.get()  # a device with a free job slot
        try:
            return job, runner.run(job, device, len(devices))
        finally:
            free.put(device)

    # (the pool, which waits for the running jobs as it closes, inside stopping_jobs)
    with stopping_jobs(sweep_dir, runner), ThreadPoolExecutor(max_workers=len(devices)) as pool:
        try:
            for future in as_completed([pool.submit(work, job) for job in jobs]):
                finished(*future.result())
        except BaseException as err:
            signal.signal(signal.SIGTERM, ignored)  # (after a Ctrl-C too; stopping_jobs puts
            # the handler back)
            runner.stop(forwarded(err))
            runner.wait()
            raise


def resumes(job: Job, who: str | None = None) -> str:
    """How a job that the sweep stopped goes on when it runs again: from its checkpoint, with
    the epoch at whose end that was written, as a stack or cell stopped in the sweep's process
    says it (:func:`going_on`), read off the file once the job ended (its pickle alone,
    :func:`~lotterynet.run_stops.epochs_in`), or over; not at all once every cell's results were
    written (stopped as it saved its last checkpoint or logged to W&B: the sweep run again
    trains nothing there). ``who``: how the line names it (its ``what``)."""
    who = who or job.what
    if job.cell_dirs and all((cell / RESULTS).is_file() for cell in job.cell_dirs):
        return f"{who} has finished (its results are written): it trains nothing"
    return going_on(job.checkpoint, f"{who} resumes from its checkpoint", None) or \
        f"{who} starts over (it wrote no checkpoint)"


def going_on(checkpoint: Path, again: str, done: int | None) -> str | None:
    """``again`` (how a stopped cell goes on from its ``checkpoint``) with the epoch at whose
    end the checkpoint was written (``done``), as a single run's resume line names it
    (:func:`~lotterynet.run_stops.how_to_go_on`), where the stopped run's ``Interrupted`` carries it
    (``checkpoint_epochs``: the file is not read again while the process stops, seconds of a
    scheduler's SIGTERM grace for a big model), else off the file's pickle alone (a cell
    resumed and stopped before its fit loaded it: :func:`~lotterynet.run_stops.epochs_in`); None
    where there is no checkpoint."""
    if not checkpoint.is_file():
        return None
    return with_its_epoch(again, epochs_in(checkpoint) if done is None else done)


def run_again_to_go_on(stop: Interrupted, who: str, checkpoint: Path, what: str
                       ) -> Interrupted:
    """``stop``, a run's :class:`Interrupted`, as a run that the rerun of ``what`` continues
    says it (a sweep's cell; a target that ``approximate`` or ``targets`` trains):
    :func:`goes_on_by`. The run's own line gave the ``--resume`` of that one run, which the
    command has not, or which left the rest of its work undone."""
    return interrupted(stop.exit_code == 128 + signal.SIGTERM,
                       goes_on_by(who, checkpoint, what, stop.checkpoint_epochs))


def goes_on_by(who: str, checkpoint: Path, what: str, done: int | None = None) -> str:
    """How ``who``, a run stopped or failed, goes on by the rerun of ``what``: to run the same
    ``what`` again (:func:`~lotterynet.run_stops.run_again`), to continue from its
    ``checkpoint``, written at the end of epoch ``done`` where known (:func:`going_on`) or,
    without one, to start it over. A run whose results are written (stopped, or failing a
    write, as its W&B run ends, after them) is finished, which the rerun counts done: a cell's
    line said to continue it from its checkpoint, where the run's own said it was finished."""
    results = checkpoint.parent.parent / RESULTS
    if results.is_file():
        return (f"{who} is finished: its results are in {str(results)!r}, and the same {what} "
                f"run again counts it done")
    again, over = run_again(what)
    return f"{who}: {going_on(checkpoint, again, done) or over}"


def how_it_ended(code: int | None, job: Job | None = None) -> str:
    """A failed job's end, from its exit code: a negative one is the signal that killed it
    (``Popen``'s convention; the kernel's out-of-memory killer sends SIGKILL), 130 and 143 a
    ``train.py`` that stopped on Ctrl-C or SIGTERM (128 + the signal), which a stack does
    wherever the signal finds it (it was killed by it outside its fit); any other, with the
    line that ``job``'s ``train.py`` reported its error in, if it did (:func:`reported`). A
    job stopped as it started is one of those (it holds SIGINT and SIGTERM back until
    ``train.py``'s handlers: :func:`starting_a_job`). A stopped job's line says how it goes on
    (:func:`resumes`), as the sweep's does of the jobs it stopped: its log's may not (one
    stopped as it imported torch says only 'stopped by SIGTERM')."""
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        stopped = f"was stopped by {signal.Signals(code - 128).name} (exit {code})"
    elif code is None or code >= 0:
        return f"failed (exit {code})" + (reported(job) if job else "")
    else:
        name = signal.Signals(-code).name
        return f"was killed by {name}{' (out of memory?)' if name == 'SIGKILL' else ''}"
    return stopped + (f"; when the sweep runs again, {resumes(job, 'it')}" if job else "")


def reported(job: Job) -> str:
    """``": LINE"`` where ``job``'s log ends in its ``train.py``'s one-line error (memory that
    ran out, bad input: ``train.py: error: LINE``, LINE less the job's name), else ``""`` (a
    traceback, a kill). Only what this run of the job wrote counts (from ``job.log_start``):
    a resumed job's log ends in its earlier run's line until it writes."""
    try:
        with open(job.log, "rb") as log:
            log.seek(max(job.log_start, log.seek(0, os.SEEK_END) - 16384))
            last = log.read().decode(errors="replace").rstrip().rpartition("\n")[2]
    except OSError:
        return ""
    if not last.startswith(ERROR):
        return ""
    return f": {last.removeprefix(ERROR).removeprefix(f'{job.what}: ')}"
