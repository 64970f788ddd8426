"""Processes that never outlive the process that started them: sweep cells run as subprocesses
and DDP ranks launched by Lightning die with their parent, also when it is SIGKILLed (Linux
``PR_SET_PDEATHSIG``), so a re-run never finds a stray copy training in the same folder."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
#: Set by a run for the DDP ranks Lightning launches from it: the pid they must not outlive.
LAUNCHER_ENV = "LOTTERYNET_LAUNCHER_PID"


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies; exit at once if the parent,
    pid ``parent``, is already gone. Does nothing off Linux."""
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def tie_launched_ranks() -> None:
    """In a run: record this process as the one the DDP ranks it launches must die with. In a
    launched rank: die with that process (also if it died before this rank got here)."""
    launcher = os.environ.get(LAUNCHER_ENV)
    if int(os.environ.get("LOCAL_RANK", "0")) > 0 and launcher:
        die_with_parent(int(launcher))
    else:
        os.environ[LAUNCHER_ENV] = str(os.getpid())


def stop_all_ranks_on_sigterm(trainer) -> None:
    """SIGTERM stops every rank of a run at the same batch, however it arrives.

    Lightning's handler broadcasts rank 0's flag from inside the handler, on every rank that
    gets the signal: a scheduler's SIGTERM to the whole process group, which rank 0 also
    forwards to the ranks it launched, made those broadcast once more than rank 0, and the run
    hung. Here the handler only notes the signal: rank 0 sets the flag that Lightning's
    training loop broadcasts before every batch (every rank stops at that batch; rank 0 exits
    143, and the ranks it launched die with it), and a rank it launched passes the signal on
    to rank 0 instead of acting on it."""
    connector = trainer._signal_connector  # (it installs the handler at fit, from here)
    launcher = os.environ.get(LAUNCHER_ENV)

    def note(signum, frame) -> None:
        if trainer.global_rank > 0 and launcher and int(launcher) != os.getpid():
            os.kill(int(launcher), signum)
        else:
            connector.received_sigterm = True

    connector._sigterm_notifier_fn = note
