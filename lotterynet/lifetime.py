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
