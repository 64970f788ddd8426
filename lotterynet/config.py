"""One run's configuration, made: :func:`make_config` turns a mapping of (some of) the run's
options into a validated :class:`~lotterynet.config_schema.RunConfig`, each value read as its
field's type (:func:`typed_value`; a precision as Lightning reads it, :func:`precision_name`) and
checked (:func:`~lotterynet.config_checks.validate`); :func:`load_yaml` reads a config file into
such a mapping (``lotterynet.cli`` merges checkpoint, file and flags, flags winning); and what a
resumed run may change (:data:`RESUMABLE`, :func:`changed_fields`). Names (architecture,
structure, init, data set, optimizer, scheduler) are checked against their registries at
validation time, so a structure registered by another module is accepted without touching these
files.

The configuration's parts, a module each: the dataclass that is at once the YAML schema, the
command line and the record written to ``results.json``, with what a config implies about its
devices and examples (:mod:`lotterynet.config_schema`); the flags, one per field, and a config
file's LightningCLI-style sections (:mod:`lotterynet.config_flags`); YAML as the options are
written in it (:mod:`lotterynet.config_yaml`); and the checks of a config, W&B's among them, and
of the options a run does not read (:mod:`lotterynet.config_checks`); this module makes a config
of them.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

from .config_checks import WANDB_OPTIONS, validate
from .config_flags import flatten_sections
from .config_schema import FIELDS, WIDE, RunConfig, field_type
from .config_yaml import MAX_FILE_BYTES, read_yaml_mapping, string_keys
from .errors import ConfigError, flag_name, python_value
from .registry import check_choice


def load_yaml(path: str | Path) -> dict:
    """The flat mapping of a config file (flat keys, or LightningCLI-style ``model:``,
    ``data:`` and ``trainer:`` sections), keys with ``-`` read as ``_``. A file may not set
    ``overwrite``: a colleague's config holding ``out: runs/<your run>`` and ``overwrite:
    true`` replaced that run's results, ticket, checkpoint and history unasked; replacing a
    run is the command's decision (``--overwrite``)."""
    where = f"config file {str(Path(path))!r}"
    flat = flatten_sections(string_keys(read_yaml_mapping(path, where, "a mapping of options",
                                                          MAX_FILE_BYTES), where), where)
    if flat.get("overwrite", False) is not False:
        raise ConfigError(f"{where} sets overwrite: a file may not replace the run in its "
                          f"folder; drop the key and give --overwrite on the command line")
    return flat


TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
              dict: "a mapping", list: "a list"}


def typed_value(name: str, value):
    """``value`` as field ``name``'s type: an int is a number, but a bool is not an int, a
    float is not an int (epochs: 1.7 is refused, not truncated), a string is not a bool and
    ``null`` is a value only where the field can be unset (``str | None``). A numpy scalar
    (``np.int64(3)``, the Python API's) is the Python value it holds."""
    kind, value = field_type(FIELDS[name]), python_value(value)
    if "None" in str(FIELDS[name].type):  # null is unset; "" would be unset unsaid
        if value is None:
            return value
        if value == "":
            raise ConfigError(f"{name} is empty; leave it out for its default")
    if kind is float and isinstance(value, float | int) and type(value) is not bool:
        if isinstance(value, int) and abs(value) > sys.float_info.max:  # (float() overflows)
            raise ConfigError(f"{name} must be a number within a float's range "
                              f"(±{sys.float_info.max:.4g}), got an integer of about "
                              f"10^{int(value.bit_length() * math.log10(2))}")  # (no str():
            # Python refuses to write an int of over 4,300 digits)
        return float(value) + 0.0  # (-0.0 is 0: one run, one folder name)
    if isinstance(value, kind) and not (kind is int and type(value) is bool):
        return value
    raise ConfigError(f"{name} must be {TYPE_NAMES[kind]}, got {value!r}")


PRECISIONS = ("32-true", "64-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true")
#: Lightning's historical spellings of a precision, read as it reads them.
PRECISION_ALIASES = {16: "16-mixed", "16": "16-mixed", 32: "32-true", "32": "32-true",
                     64: "64-true", "64": "64-true", "bf16": "bf16-mixed"}


def precision_name(value) -> str:
    """``value`` as one of :data:`PRECISIONS` (an alias read as Lightning reads it)."""
    if type(value) in (int, str) and value in PRECISION_ALIASES:
        return PRECISION_ALIASES[value]
    try:
        return check_choice("precision", value, PRECISIONS)
    except ValueError as err:
        aliases = ", ".join(alias for alias in PRECISION_ALIASES if isinstance(alias, str))
        raise ConfigError(f"{err} (or Lightning's {aliases})") from None


def make_config(values: dict, spell: Callable[[str], str] = flag_name) -> RunConfig:
    """A validated :class:`RunConfig` from a mapping of (some of) its fields; ``spell`` names
    a field as the command gave it (``--trainer.precision``), where a refusal names its flag."""
    unknown = sorted((k for k in values if k not in FIELDS), key=str)
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}; valid keys: {', '.join(FIELDS)}")
    given_precision = values.get("precision")  # (as the user spelled it: 16, not 16-mixed)
    if "precision" in values:
        values = {**values, "precision": precision_name(given_precision)}
    config = RunConfig(**{name: typed_value(name, value) for name, value in values.items()})
    if config.train_weights and config.structure != WIDE:  # (wide: refused below)
        config.structure = "dense"  # what it trains, whatever a shared config file says
    elif config.structure is None:
        from .archs import recipe  # (here: archs imports torch; --help needs none)

        config.structure = recipe(config.arch).structure
    # (a trained baseline's sparsity too: a bad value in its file is refused)
    validate(config, given_precision, spell)
    if config.train_weights:
        config.sparsity = 0.0  # what it prunes (nothing), not the default it never reads
    return config


#: Fields that say where and how a run is written and logged, not what it computes.
OUTPUT_ONLY = ("out", "resume", "overwrite", "stop_after", "progress_bar", "wandb",
               *WANDB_OPTIONS)
#: Fields a run's results do not depend on: where it ran and where it wrote. A sweep's cell
#: (or stack) trained with another value of any other field is not the sweep's cell.
NOT_COMPUTED = (*OUTPUT_ONLY, "data_dir", "download", "accelerator", "devices", "cuda_graphs")
#: What a resumed run may take from the flags; every other value comes from the checkpoint and
#: a flag that differs from it is refused (it would change the meaning of the trained scores).
#: A run resumed by hand may change its precision too (continued on a CPU after a GPU).
RESUMABLE = (*NOT_COMPUTED, "precision")


def changed_fields(stored: dict, wanted: dict, ignored: tuple[str, ...] = RESUMABLE
                   ) -> list[str]:
    """The fields, outside ``ignored``, whose ``wanted`` value differs from ``stored``; an
    unset ``lr`` is its architecture's recipe lr (``--lr 0.01`` is a LeNet5 run's lr)."""
    from .archs import recipe_lr  # (here: archs imports torch; --help needs none)

    stored = {**RunConfig().to_dict(), **stored}
    arch = str(wanted.get("arch", stored["arch"]))  # (str: a hand-edited file's may be a list)
    trained = stored["train_weights"] and wanted.get("train_weights", True)
    changed = []
    for name, value in wanted.items():
        if name not in FIELDS or name in ignored or stored[name] == value:
            continue  # not a run option, one that may differ, or the same value
        if name in ("structure", "sparsity") and trained:
            # a trained baseline is dense and prunes nothing whatever its structure and sparsity
            # say (older runs stored the arch's structure and the default sparsity)
            continue
        if name == "lr" and recipe_lr(arch, value) == recipe_lr(str(stored["arch"]), stored["lr"]):
            continue  # the same lr, given or left to the architecture's recipe
        changed.append(name)
    return changed

