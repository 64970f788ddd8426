"""Where a number was measured: the CPU's model name, for results and benchmarks."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    """The ``model name`` from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            names = (line.split(":", 1)[1] for line in f if line.startswith("model name"))
            return next(names).strip()
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "unknown CPU"
