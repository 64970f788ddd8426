"""The machine a run is on: the CPU's model name (for results and benchmarks), the memory it
has available, the one allocator setting that CPU training needs, whether this process is
a DDP worker or a SLURM job's task, and a clock for work queued on a GPU."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError, in_binary_units

#: glibc ``mallopt`` parameters (malloc.h) and the largest mmap threshold it accepts on 64-bit.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024


def cpu_name() -> str:
    """The ``model name`` from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            names = (line.split(":", 1)[1] for line in f if line.startswith("model name"))
            return next(names).strip()
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "unknown CPU"


def meminfo(*keys: str, path: str = "/proc/meminfo") -> int | None:
    """Bytes that /proc/meminfo's ``keys`` (``MemAvailable``, ``SwapFree``, ...) add up to
    (Linux); None where that is unknown."""
    try:
        with open(path) as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return sum(int(fields[key].split()[0]) * 1024 for key in keys)
    except (OSError, KeyError, ValueError, IndexError):
        return None


def available_memory() -> int | None:
    """Bytes of memory this machine can still give a process: /proc/meminfo's MemAvailable
    plus SwapFree (the kernel pages a process out to swap before it kills it: a run that
    needs swap is slow, not ended); None where that is unknown."""
    return meminfo("MemAvailable", "SwapFree")


def refuse_larger_than_memory(path: Path, what: str, error: type[Exception] = ConfigError
                              ) -> None:
    """Refuse (``error``, one line) the file ``path``, named as ``what``, where it is larger
    than the memory available (:func:`available_memory`), before it is read whole: read, a
    colleague's file of a terabyte (or a sparse one) was a MemoryError's traceback, and one
    a little smaller filled the memory."""
    size, have = path.stat().st_size, available_memory()
    if have is not None and size > have:
        raise error(f"{what} is {in_binary_units(size)}, more than the {in_binary_units(have)} "
                    f"of memory this machine has available to read it")


def read_text_within_memory(path: Path, what: str, error: type[Exception] = ConfigError) -> str:
    """The text of ``path`` (UTF-8, as lotterynet writes its files), refused unread where it is
    larger than the memory available (:func:`refuse_larger_than_memory`: ``error`` naming it
    as ``what``)."""
    refuse_larger_than_memory(path, what, error)
    return path.read_text(encoding="utf-8")


def read_json_within_memory(path: Path, fault_of: Callable[[object], str | None]
                            ) -> tuple[object, str | None]:
    """The JSON value in ``path`` and what keeps it from being what its reader needs: a read
    or parse fault (not UTF-8, not JSON, cut short) or ``fault_of`` the value (None: nothing).
    Refused unread (:class:`ConfigError`, outside the faults: it names the file's size, not its
    contents) where it is larger than the memory available (:func:`refuse_larger_than_memory`)."""
    refuse_larger_than_memory(path, str(path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return None, str(err)
    return data, fault_of(data)


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks of up to 32 MiB for reuse instead of returning
    each one to the system. An edge-popup step on the CPU creates a dozen score-sized temporary
    tensors (masks, products, gradients); by default every one above 128 KiB is a fresh ``mmap``
    whose pages fault in again on first touch, which cost about a third of a LeNet5 subset-sum
    step (20 → 13.5 ms on one thread of the project's CPU machine, measured in isolation;
    PyTorch's CPU tuning guide recommends a caching allocator for the same reason).
    Process-wide, so ``train.py`` and the benchmarks call it, not the library. Returns False
    where there is no glibc (nothing changes)."""
    libc_name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(libc_name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
                and mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_MAX))


def is_launched_worker() -> bool:
    """True in the processes Lightning's DDP launcher starts (rank > 0)."""
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0


def check_rank_variables() -> None:
    """``$LOCAL_RANK`` and ``$NODE_RANK`` (set by Lightning's launcher and torchrun for the
    ranks they start, with ``$WORLD_SIZE``) must be ranks; a rank over 0 without
    ``$WORLD_SIZE`` is left over in the shell, not from a launcher. A value not a number was a
    traceback (in torchmetrics' import, or here); a leftover ``LOCAL_RANK=1`` made the run a
    launched rank, which leaves its ``--out`` unchecked to rank 0: it wrote over another
    run's checkpoint and results."""
    for name in ("LOCAL_RANK", "NODE_RANK"):
        value = os.environ.get(name)
        if value is not None and not value.strip().isdigit():
            raise ConfigError(f"${name} is {value!r}, not a process rank (a whole number, 0 or "
                              f"more); unset it (Lightning and torchrun set it for the ranks "
                              f"they start)")
    if is_launched_worker() and "WORLD_SIZE" not in os.environ:
        ranks = ", ".join(f"${name} {os.environ[name]}" for name in ("LOCAL_RANK", "NODE_RANK")
                          if name in os.environ)
        raise ConfigError(f"{ranks}: this process would be a rank over 0 of a DDP run, but "
                          f"no launcher started it ($WORLD_SIZE is unset), and it would leave "
                          f"its output folder unchecked, to rank 0; unset LOCAL_RANK and "
                          f"NODE_RANK")


def in_slurm_task() -> bool:
    """Whether Lightning takes this process for a task that SLURM's ``srun`` started
    (``SLURMEnvironment.detect``): ``$SLURM_NTASKS`` set, in a job not named ``bash`` nor
    ``interactive`` (an ``salloc`` shell's, which Lightning leaves alone). So is every command
    of an ``sbatch`` script, ``srun`` or not."""
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in (
        "bash", "interactive")


def check_slurm_tasks() -> None:
    """A SLURM job of more than one task (``--ntasks`` or ``--ntasks-per-node`` N: ``srun``
    starts the command N times) is refused: a run is one process on one machine that launches
    its own DDP ranks (``--devices``; README: a run is one machine). Lightning's
    SLURMEnvironment raised its own traceback for ``--ntasks=2`` once the model was built,
    ``RuntimeError: You set `--ntasks=2` in your SLURM bash script, but this variable is not
    supported``; N copies of the run would each train into the same ``--out``."""
    tasks = os.environ.get("SLURM_NTASKS", "1")
    if in_slurm_task() and tasks.strip() != "1":
        raise ConfigError(f"$SLURM_NTASKS is {tasks!r}: SLURM starts this command as that many "
                          f"tasks, but a lotterynet run is one task on one machine, which "
                          f"launches its own DDP ranks (--devices N); give the job one task "
                          f"(sbatch --ntasks=1) and the CPUs or GPUs its --devices need")


def device_clock(device) -> float:
    """Seconds (``time.perf_counter``), once the work queued on ``device`` (a
    ``torch.device``) has run: a GPU's kernels return before they have, so an unsynchronized
    clock times only their queueing."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)
    return time.perf_counter()
