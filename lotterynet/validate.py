"""Checks that run before any work starts, each raising a one-line
:class:`~lotterynet.errors.ConfigError` that names the bad value and the valid choices: the
hardware request, ``timm:`` model names, output folders and sweep files.

What Lightning or torch would reject later (after data loading, or after training had started)
is refused here instead, so a bad invocation leaves nothing behind.
"""

from __future__ import annotations

import difflib
import errno
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from .config import PRECISIONS, precision_name
from .config_checks import SEED_MAX, as_config_error
from .config_schema import RunConfig, device_count, on_gpu
from .config_yaml import MAX_FILE_BYTES, read_yaml_mapping
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


def check_timm_model(name: str) -> None:
    """``timm:<name>`` must name a timm model (closest names suggested)."""
    if not name:
        raise ConfigError("--arch 'timm:' needs a timm model name, e.g. timm:resnet18")
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"closest: {', '.join(close)}" if close else "see timm.list_models()"
        raise ConfigError(f"unknown timm model {name!r}; {hint}")


def check_output_dir(path: str | os.PathLike, flag: str,
                     instead: str = "choose another folder") -> None:
    """``path`` is, or can be created as, a folder we may write in: probed by creating (and
    removing) a temporary folder in its nearest existing ancestor. ``instead``: what to do
    where it is not writable."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents)
                    if os.path.lexists(p) or p == Path(p.anchor))
    if existing.is_symlink() and not existing.exists():  # (mkdir under it: a traceback)
        raise ConfigError(f"{flag} {str(path)!r}: {str(existing)!r} is a symbolic link that "
                          f"leads nowhere (broken, or a loop); point it at a folder, or choose "
                          f"another")
    if not existing.is_dir():
        raise ConfigError(f"{flag} {str(path)!r}: {str(existing)!r} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=existing))
    except OSError as err:
        raise ConfigError(f"{flag} {str(path)!r} is not writable ({err.strerror or err} in "
                          f"{str(existing)!r}); {instead}") from None


def check_not_folders(paths) -> None:
    """:class:`IsADirectoryError` (one line, exit 2: :data:`~lotterynet.errors.IN_THE_WAY`) for
    the first of ``paths`` — files a run will write at its end — that is a folder, so that a
    damaged run or sweep folder is refused before the training, not after it."""
    for path in paths:
        if Path(path).is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))


# --- sweep files ---------------------------------------------------------------------------

def read_sweep_file(path: str | os.PathLike, keys: tuple[str, ...]) -> dict:
    """The mapping in a sweep file, with only ``keys``."""
    data = read_yaml_mapping(path, f"sweep file {str(Path(path))!r}",
                             f"a mapping with keys {', '.join(keys)}", MAX_FILE_BYTES)
    unknown = [k for k in data if k not in keys]
    if unknown:
        raise ConfigError(f"sweep file {str(Path(path))!r}: unknown key {unknown[0]!r}; valid "
                          f"keys: {', '.join(keys)}")
    return data


def parse_list(text: str | None, kind: type, flag: str) -> list | None:
    """A comma list given on the command line, each item read as ``kind``."""
    if text is None:
        return None
    items = text.split(",")
    if not all(v.strip() for v in items):
        raise ConfigError(f"{flag} {text!r} has an empty item; give a comma list without "
                          f"blanks")
    try:
        return [kind(v) for v in items]
    except ValueError:
        raise ConfigError(f"{flag} {text!r} must be a comma list of "
                          f"{'integers' if kind is int else 'numbers'}") from None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


SWEEP_LISTS = {  # key: (test of one item, what an item must be, what an item is)
    "variants": (lambda v: (isinstance(v, str) and v) or isinstance(v, dict),
                 "structure[:activation] strings or mappings of run options", "variant"),
    "sparsities": (lambda v: _is_number(v) and 0 <= v < 1, "numbers in [0, 1)", "sparsity"),
    "epochs": (lambda v: _is_int(v) and v > 0, "positive integers", "epoch budget"),
    "seeds": (lambda v: _is_int(v) and 0 <= v <= SEED_MAX,  # (as check_seed words it)
              f"integers in [0, 2**{SEED_MAX.bit_length()})", "seed"),
}


def check_sweep_values(data: dict, given_in, written=lambda key: None) -> None:
    """Types of a merged sweep (file overlaid with flags): lists of the right items, each
    once, a boolean ``baseline``, a mapping ``base``; ``given_in(key)`` names where the sweep
    got a key (its flag, or the sweep file and the key), ``written(key)`` the items of its list
    as the command wrote them (a flag's comma list; None: a file's, named by their values), so
    that two equal items written differently are named as written (``-0.0`` and ``0``: it
    said "0.0 is listed twice"). Values are checked again as run configs."""
    for key, (valid, what, item) in SWEEP_LISTS.items():
        if key not in data:  # (a key left empty, "seeds:", is refused: it ran seed 0 alone)
            continue
        values = data[key]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{given_in(key)} must be a non-empty list of {what}, got "
                              f"{values!r}")
        bad = [v for v in values if not valid(v)]
        if bad:
            raise ConfigError(f"{given_in(key)}: {bad[0]!r} is not valid; {key} must be {what}")
        twice = next((i for i, v in enumerate(values) if v in values[:i]), None)
        if twice is not None:  # the same cell twice would train twice into one folder
            spelled = written(key) or [repr(v) for v in values]
            first = spelled[values.index(values[twice])]
            if first == spelled[twice]:
                raise ConfigError(f"{given_in(key)}: {values[twice]!r} is listed twice")
            raise ConfigError(f"{given_in(key)}: {first} and {spelled[twice]} are the same "
                              f"{item}, listed twice")
    if not isinstance(data.get("baseline", True), bool):
        raise ConfigError(f"{given_in('baseline')} must be true or false, got "
                          f"{data['baseline']!r}")
    if not isinstance(data.get("base", {}), dict):  # (null and [] too: they ran as {})
        raise ConfigError(f"{given_in('base')} must be a mapping of run options (leave it out "
                          f"for none), got {data['base']!r}")
