"""Processes that never outlive the process that started them: sweep cells run as subprocesses
and DDP ranks launched by Lightning die with their parent, also when it is SIGKILLed (Linux
``PR_SET_PDEATHSIG``), so a re-run never finds a stray copy training in the same folder. And
how SIGTERM stops a run, wherever it arrives and on whichever rank."""

from __future__ import annotations

import _thread
import contextlib
import ctypes
import functools
import os
import signal
import sys
import threading

from .errors import Terminated

PR_SET_PDEATHSIG = 1
#: Set by a run for the DDP ranks Lightning launches from it: the pid they must not outlive.
LAUNCHER_ENV = "LOTTERYNET_LAUNCHER_PID"
#: Signals that stop a run as SIGTERM does: SIGUSR1, SLURM's notice that a job's time is
#: nearly up (``sbatch --signal=USR1@90``), whose default action killed the run without a word
#: (none on Windows). lotterynet does not requeue the job (Lightning's SLURM auto-requeue):
#: the stopped run is resumed as any, by ``--resume`` of its last checkpoint.
AS_SIGTERM = (signal.SIGUSR1,) if hasattr(signal, "SIGUSR1") else ()


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies; exit at once if the parent,
    pid ``parent``, is already gone. Does nothing off Linux."""
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


@contextlib.contextmanager
def tying_launched_ranks():
    """While a run lasts: record its process as the one the DDP ranks it launches must die
    with (:data:`LAUNCHER_ENV`, which they inherit), and put back what the variable was after
    it (a notebook's later torchrun workers must not be handed this process's pid). In a
    launched rank: die with that process (also if it died before this rank got here)."""
    launcher = launching_run()
    if launcher:
        die_with_parent(launcher)
        yield
        return
    previous = {LAUNCHER_ENV: os.environ.get(LAUNCHER_ENV)}
    os.environ[LAUNCHER_ENV] = str(os.getpid())
    try:
        yield
    finally:
        put_back_environment(previous)


def put_back_environment(values: dict[str, str | None]) -> None:
    """The environment variables ``values`` names as it gives them (None: unset)."""
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def launching_run() -> int | None:
    """In a DDP rank that a run launched: the pid of that run's process (rank 0); else None.
    Not this process's own pid: a rank that another launcher started (torchrun sets
    ``LOCAL_RANK``) records itself as its ranks' run, and signalled itself for ever."""
    launcher = os.environ.get(LAUNCHER_ENV)
    if int(os.environ.get("LOCAL_RANK", "0")) > 0 and launcher and int(launcher) != os.getpid():
        return int(launcher)
    return None


def hold_stops(hold: bool = True) -> None:
    """Hold Ctrl-C and SIGTERM (and :data:`AS_SIGTERM`) back in this process until a command's
    handlers take them (:func:`stopping_on_sigterm` with ``ends_the_process`` unblocks them),
    called by ``python -m lotterynet.approximate``, ``lotterynet.targets`` and
    ``lotterynet.theory`` before they import torch (~0.5 s), and by a sweep's job as it starts
    (:func:`~lotterynet.sweep_jobs.starting_a_job`):
    Python's own SIGINT handler raised a Ctrl-C there as a traceback, and SIGTERM's default
    action killed the process without a word. ``train.py`` blocks the same signals itself,
    before importing anything of lotterynet's (whose import a stop could otherwise still land
    in). ``hold`` False lets them through again. Windows has no signal masks: nothing is held
    there, and a stop that lands in the imports is Python's own traceback."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK if hold else signal.SIG_UNBLOCK,
                               [signal.SIGINT, signal.SIGTERM, *AS_SIGTERM])


class SigtermStop:
    """A run's SIGTERM handler from its start to its end (:func:`stopping_on_sigterm`): the run
    stops with its one line and exit 143 wherever the signal finds it, as on Ctrl-C.

    Inside Lightning's fit and test, Lightning's handler calls this one after its own (it keeps
    the handler it found, and puts it back at its teardown): the run stops at its next batch
    (:func:`stop_all_ranks_on_sigterm`), and this one only notes the signal. Elsewhere (the data
    being read, the ticket or the results being written) it raises :class:`Terminated`; a rank
    the run launched passes the signal on to rank 0 instead. A run that has had SIGTERM
    ignores more of it: the copy that a launched rank forwards to rank 0, which got the
    scheduler's SIGTERM too, could land after Lightning's teardown had put back the default
    handler, and killed rank 0 by the signal on its way out, before its line."""

    def __init__(self):
        self.received = False
        self.interrupted = False  # (Ctrl-C, where train.py's block handles it: ctrl_c)
        self.raised: tuple[int, BaseException] | None = None  # (the signal, its stop)
        self.again: threading.Timer | None = None  # (a stop a finalizer dropped, sent again)

    def ctrl_c(self, signum, frame) -> None:
        """``train.py``'s SIGINT handler: the first Ctrl-C raises KeyboardInterrupt, as
        Python's own handler does; the run stops on it. Later ones, while it stops, are
        ignored: Lightning ignores them only until its teardown, which puts back the handler
        it found, so a second Ctrl-C (a key held down, pressed again) raised a traceback in
        whatever the stop was doing (W&B's finish, the interpreter's exit) or killed the
        process by the signal."""
        first, self.interrupted = not self.interrupted, True
        if first:
            self.stop(signum, KeyboardInterrupt())

    def __call__(self, signum, frame) -> None:
        in_lightning = signal.getsignal(signal.SIGTERM) is not self  # (its handler calls this)
        launcher = launching_run()
        if launcher:
            if not in_lightning:  # (Lightning's: stop_all_ranks_on_sigterm's forwards it)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(launcher, signum)
            return
        first, self.received = not self.received, True
        if first and not in_lightning:
            self.stop(signum, Terminated())

    def stop(self, signum: int, stop: BaseException) -> None:
        """Raise ``stop``, the one that ``signum`` makes, noted for :meth:`dropped`."""
        self.raised = signum, stop
        raise stop

    def dropped(self, unraisable, hook) -> None:
        """``sys.unraisablehook`` while the block runs (``hook``: the one it found, given every
        other exception). A stop raised while the garbage collector ran a finalizer (a
        ``__del__``, as a regex's parse tree has) is one Python drops, printed as "Exception
        ignored in": the run went on to its end, and as it had raised its stop, it ignored every
        Ctrl-C or SIGTERM after. The signal is sent again to the main thread once the finalizer
        is over (from a thread: sent from here, its stop would be raised in this hook, and
        dropped again); a finalizer that drops it too sends it once more."""
        if self.raised is None or unraisable.exc_value is not self.raised[1]:
            hook(unraisable)
            return
        signum, self.raised = self.raised[0], None
        if signum == signal.SIGINT:
            self.interrupted = False
        else:
            self.received = False
        self.again = threading.Timer(0.01, send_to_main_thread, (signum,))
        self.again.daemon = True
        self.again.start()

    def stop_if_received(self) -> None:
        """Raise :class:`Terminated` if the run has had SIGTERM: one that Lightning's handler
        noted after the loop's last look at it would else go unheeded."""
        if self.received:
            raise Terminated


def as_sigterm(signum, frame) -> None:
    """The handler of :data:`AS_SIGTERM`'s signals while a run's SIGTERM handler is installed:
    SIGTERM raised in this process, whichever handler takes it (the run's, or Lightning's
    in its fit, which stops at the end of the batch)."""
    signal.raise_signal(signal.SIGTERM)


def send_to_main_thread(signum: int) -> None:
    """``signum`` to the main thread, which it wakes from a wait (``_thread.interrupt_main``
    where there are no POSIX thread signals, Windows: its handler runs once the wait ends)."""
    if hasattr(signal, "pthread_kill"):
        signal.pthread_kill(threading.main_thread().ident, signum)
    else:
        _thread.interrupt_main(signum)


@contextlib.contextmanager
def stopping_on_sigterm(ends_the_process: bool = False):
    """:class:`SigtermStop` installed while the block runs (Python installs handlers only in the
    main thread: elsewhere one that is not installed), and :func:`as_sigterm` for
    :data:`AS_SIGTERM`, then the handlers it found put back.
    ``ends_the_process`` (``train.py``'s, whose process ends with the block): a block that has
    had SIGTERM keeps it after, ignoring more: its process is on its way out; and so for
    Ctrl-C (:meth:`SigtermStop.ctrl_c` in the block, installed in place of Python's own
    handler, not where SIGINT is ignored: a job started in the background; ignored after).
    Elsewhere (a notebook, a library caller's own process) the handler the run found is put
    back, and Ctrl-C left as it is. Inside a block of its own (a run in ``train.py``'s, which
    covers reading the flags' files too), the one handler installed. ``train.py``'s takes a
    Ctrl-C or SIGTERM that was held back until its handlers (``train.py`` blocks both as it
    imports, a sweep's job as it starts: :func:`~lotterynet.sweep_jobs.starting_a_job`,
    ``approximate``, ``targets`` and ``theory`` as they import torch: :func:`hold_stops`) as
    the block begins."""
    installed = signal.getsignal(signal.SIGTERM)
    if isinstance(installed, SigtermStop):
        yield installed
        return
    stop = SigtermStop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGTERM, stop)
    previous_as = {signum: signal.signal(signum, as_sigterm) for signum in AS_SIGTERM}
    ctrl_c = ends_the_process and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if ctrl_c:
        signal.signal(signal.SIGINT, stop.ctrl_c)
    hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(stop.dropped, hook=hook)
    try:
        if ends_the_process:
            hold_stops(False)
        yield stop
    finally:
        sys.unraisablehook = hook
        if stop.again:  # (the block is over: a stop sent again now would land outside it)
            stop.again.cancel()
        if not (stop.received and ends_the_process):
            for signum, handler in {signal.SIGTERM: previous, **previous_as}.items():
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if ctrl_c:  # (ignored, not handled: Python resets a handler to the default action
            # at its exit, after the atexit hooks, where Ctrl-C then killed the process)
            signal.signal(signal.SIGINT, signal.SIG_IGN if stop.interrupted
                          else signal.default_int_handler)


def stop_all_ranks_on_sigterm(trainer) -> None:
    """SIGTERM stops every rank of a run at the same batch, however it arrives.

    Lightning's handler broadcasts rank 0's flag from inside the handler, on every rank that
    gets the signal: a scheduler's SIGTERM to the whole process group, which rank 0 also
    forwards to the ranks it launched, made those broadcast once more than rank 0, and the run
    hung. Here the handler only notes the signal: rank 0 sets the flag that Lightning's
    training loop looks at after every batch (rank 0 stops at the end of its batch, and kills
    the ranks it launched: :class:`~lotterynet.run_callbacks.StopLaunchedRanks`) and
    broadcasts before every batch (where every rank stops, on a flag set since that look),
    and a rank it launched passes the signal on to rank 0 instead of acting on it."""
    connector = trainer._signal_connector  # (it installs the handler at fit, from here)
    launcher = os.environ.get(LAUNCHER_ENV)

    def note(signum, frame) -> None:
        if trainer.global_rank > 0 and launcher and int(launcher) != os.getpid():
            os.kill(int(launcher), signum)
        else:
            connector.received_sigterm = True

    connector._sigterm_notifier_fn = note
