"""The hardware a run asks for, checked before any work starts, each refusal a one-line
:class:`~lotterynet.errors.ConfigError` that names the bad value and the valid choices: the
accelerator, the precision and a device count this machine has (:func:`check_hardware`,
:func:`check_devices`), and a place a run on several devices (DDP) can start its further ranks
from (:func:`check_relaunchable`). What Lightning or torch would reject later (after data
loading, or after training had started) is refused here instead, so a bad invocation leaves
nothing behind."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable

from .config import PRECISIONS, precision_name
from .config_checks import as_config_error
from .config_schema import RunConfig, device_count, on_gpu
from .errors import ConfigError, flag_name
from .registry import check_choice

ACCELERATORS = ("auto", "cpu", "gpu", "cuda")


def check_hardware(config: RunConfig, given_precision=None,
                   spell: Callable[[str], str] = flag_name) -> None:
    """Accelerator and precision names, and a device count this machine has; a precision
    refused is named as given (``given_precision``, where it was), not as Lightning reads it,
    and each option by ``spell``: as the command gave it (``--trainer.precision``, a config
    file's ``precision``), not as a flag it did not type."""
    import torch

    as_config_error(check_choice, "accelerator", config.accelerator, ACCELERATORS)
    precision = precision_name(config.precision)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if config.accelerator in ("gpu", "cuda") and not gpus:
        raise ConfigError(f"{spell('accelerator')} {config.accelerator}: this machine has no "
                          f"CUDA GPU; valid choices here: auto, cpu")
    gpu = on_gpu(config.accelerator)
    if precision == "16-mixed" and not gpu:  # Lightning would run bf16-mixed, unsaid
        raise ConfigError(f"{spell('precision')} {given_precision or precision} needs a CUDA GPU "
                          f"(float16 autocast); on the CPU: "
                          f"{', '.join(p for p in PRECISIONS if p != '16-mixed')}")
    available, kind = (gpus, "CUDA GPUs") if gpu else (os.cpu_count() or 1, "CPU cores")
    check_devices(config.trainer.get("devices", config.devices), gpu, available, kind,
                  spell("devices"))


def check_devices(devices, gpu: bool, available: int, kind: str, flag: str) -> None:
    """``devices`` (given as ``flag``): a count of the machine's ``available`` devices,
    ``auto``, and on GPUs Lightning's GPU indices (``0,1``, ``[0, 1]``; ``-1``, every GPU,
    as text from ``--devices`` or a number from ``--trainer.devices``: the number was refused),
    which Lightning checks. Anything else was refused in other words than the valid choices:
    0 "devices must be positive, got 0"; 99 by the examples it left some of the 99 devices,
    before the machine's 2 cores; ``abc`` only once the Trainer was built, in Lightning's
    words, naming no flag: "trainer options {'devices': 'abc'} refused by Lightning: ...
    should be an int > 0"."""
    if devices == "auto" or not isinstance(devices, int | str | list):
        return  # (a float: the Trainer's types refuse it, checked later)
    if type(devices) is int and 1 <= devices <= available:
        return
    gpu_indices = isinstance(devices, list) or devices in (-1, "-1") or \
        isinstance(devices, str) and re.fullmatch(r"[\d\s,]*\d[\d\s,]*", devices)
    if gpu and gpu_indices:
        return
    choices = (f"valid choices: 1 to {available}, auto, or GPU indices such as 0,1" if gpu
               else f"valid choices on the CPU: 1 to {available}, or auto")
    if type(devices) is int and devices > available:
        raise ConfigError(f"{flag} {devices}: this machine has {available} {kind}; {choices}")
    forms = f"a count of {kind}, auto, nor GPU indices" if gpu else f"a count of {kind} nor auto"
    raise ConfigError(f"{flag} {devices!r} is not {forms}; {choices}")


def check_relaunchable(config: RunConfig) -> None:
    """A run on several devices (DDP) started where its ranks can start: Lightning starts each
    rank over 0 by running the program again (the script's path, or ``-m`` its module), which
    a notebook or the Python prompt cannot be (Lightning refused, after the run's first line,
    advising ``ddp_notebook``, a strategy that a run refuses), nor ``python -c`` or stdin (the
    rank failed, "can't open file '-c'", and Lightning SIGKILLed the caller's process)."""
    import __main__

    devices = device_count(config)
    if devices < 2:
        return
    if hasattr(sys, "ps1") or sys.flags.interactive:  # (Lightning's test of a notebook)
        where = "an interactive session (a notebook, the Python prompt)"
    elif getattr(__main__, "__spec__", None) is None and not os.path.isfile(sys.argv[0]):
        where = f"python {sys.argv[0] or '-'}"
    else:
        return
    raise ConfigError(f"devices {devices}: DDP starts each further rank by running the program "
                      f"again, which {where} cannot be; run it from a script file (python "
                      f"my_run.py) or a module (python -m my_run), or on 1 device")
