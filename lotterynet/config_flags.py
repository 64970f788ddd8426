"""A run's options as the command line and a config file's sections spell them: one flag per
:class:`~lotterynet.config_schema.RunConfig` field (:func:`add_config_arguments`, its help
listing a registered name's choices: :data:`NAMED_CHOICES`), read back as the options given
(:func:`given_flags`); LightningCLI's spellings, the dotted flags (``--trainer.KEY``,
``--model.KEY``: :func:`dotted_flags`) and the ``model:``, ``data:`` and ``trainer:`` sections of
a file (:data:`SECTIONS`, :func:`flatten_sections`, written back by :func:`nested_config`); and
how values given over others merge (:func:`overlay`, :func:`without_devices_named_in`)."""

from __future__ import annotations

import argparse
import collections
import dataclasses

import yaml

from .config_schema import FIELDS, WIDE, RunConfig, field_type
from .config_yaml import ConfigLoader, string_keys
from .errors import ConfigError, flag_name


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`RunConfig` field, defaulting to ``None`` so that only the flags the
    user gave override the YAML file; the help shows the dataclass default. The flags are
    listed in the groups of :data:`FLAG_GROUPS` (--help was one wall of 50 flags)."""
    group = parser
    for name, f in FIELDS.items():
        if name in FLAG_GROUPS:
            group = parser.add_argument_group(FLAG_GROUPS[name])
        own = {k: v for k, v in f.metadata.items() if k != "help"}  # (option's add_argument ones)
        group.add_argument(flag_name(name), default=None, help=flag_help(name, f),
                           **{**FLAG_ARGUMENTS[field_type(f)], **own})


#: The groups of the run's flags in --help, by the first field of each (the fields are in
#: this order in :class:`RunConfig`).
FLAG_GROUPS = {"arch": "model (what is trained)", "dataset": "data",
               "epochs": "training", "accelerator": "hardware",
               "progress_bar": "output", "wandb": "Weights & Biases"}


def flag_help(name: str, f: dataclasses.Field) -> str:
    """The help of field ``name``'s flag: its text, with its default (unless the text states
    it) and the choices of a name that a registry holds (:data:`NAMED_CHOICES`)."""
    help_text = f.metadata["help"]  # states its default itself, or gets it appended
    help_text += "" if "(default:" in help_text else f" (default: {f.default})"
    if name in NAMED_CHOICES:
        help_text = help_text.replace(
            " (default:", f"; choices: {', '.join(NAMED_CHOICES[name])} (default:", 1)
    return help_text


_STRUCTURES = ("dacunha", "dense", "fixedsize", "malach", "orseau", "subsetsum")
_INITS = ("hyperbolic", "kaiming_normal", "kaiming_uniform", "scaled_uniform", "signed_constant",
          "uniform")
#: The names that --help lists (:func:`add_config_arguments`, before the default) for the flags
#: that name a registered choice. They are written out because --help imports no torch, which
#: the registries need; a test keeps them equal to what each flag is checked against: the
#: registries' names (STRUCTURES and wide, ACTIVATIONS, DISTRIBUTIONS, DATASETS, OPTIMIZERS,
#: SCHEDULERS), ``structures.FAN_INS``, ``masking.SCORE_BOUNDS`` and the precisions a run takes
#: (``config.PRECISIONS``).
NAMED_CHOICES = {
    "structure": (*_STRUCTURES, WIDE),
    "match": _STRUCTURES,
    "activation": ("identity", "relu"),
    "init": _INITS,
    "fan_in": ("hidden", "target"),
    "score_init": ("edgepopup", "kaiming", "unit"),
    "conv_init": _INITS,
    "dataset": ("cifar10", "fashion-mnist", "mnist"),
    "optimizer": ("adam", "adamw", "sgd"),
    "scheduler": ("constant", "cosine"),
    "precision": ("16-mixed", "16-true", "32-true", "64-true", "bf16-mixed", "bf16-true"),
}


def given_flags(args: argparse.Namespace) -> dict:
    """The run options given on the command line (flags left out are None)."""
    return {k: v for k, v in vars(args).items() if k in FIELDS and v is not None}


def key_value(text: str) -> tuple[str, object]:
    """``"KEY=VALUE"`` -> ``(KEY, VALUE read as YAML)``: ``0.5`` a number, ``auto`` a string,
    ``[0, 1]`` a list, ``{class_path: ...}`` a mapping."""
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    if not value.strip():  # (YAML would read it as null: the option silently unset)
        raise argparse.ArgumentTypeError(f"{text!r} gives {key} no value; leave it out for its "
                                         f"default, or write {key}=null")
    try:
        return key.replace("-", "_"), yaml.load(value, Loader=ConfigLoader)
    except (yaml.YAMLError, RecursionError):  # (PyYAML recurses once per level of nesting)
        raise argparse.ArgumentTypeError(f"{text[:60]!r}: the value is not valid YAML, or "
                                         f"nests too deep") from None


#: How a field's flag reads its value, by the field's type (:func:`add_config_arguments`); a
#: field's own ``add_argument`` arguments (:func:`~lotterynet.config_schema.option`'s: a
#: ``type``, a ``metavar``) go on top.
FLAG_ARGUMENTS = {
    bool: {"action": argparse.BooleanOptionalAction},  # --shared, or --no-shared
    # --trainer.KEY VALUE arrives as --trainer KEY=VALUE (dotted_flags)
    dict: {"type": key_value, "action": "append", "metavar": "KEY=VALUE"},
    list: {"nargs": "+", "action": "extend"},  # --exclude A B, or --exclude A --exclude B
    str: {"type": str},
    int: {"type": int},
    float: {"type": float},
}


#: The config file's LightningCLI-style sections: ``model:`` and ``data:`` hold flat keys;
#: ``trainer:`` holds Lightning's Trainer options, the ones the flat keys already cover read
#: as them (``max_epochs`` is ``epochs``, an integer ``devices`` is ``devices``).
SECTIONS = {
    "model": ("arch", "structure", "sparsity", "pairs", "activation", "init", "hidden", "shared",
              "fan_in", "score_init", "match", "subnet_convs", "conv_init", "train_weights",
              "model_kwargs", "exclude", "lr", "optimizer", "momentum", "weight_decay",
              "scheduler", "seed"),
    "data": ("dataset", "data_dir", "download", "val_size", "limit_train", "augment", "batch_size"),
}
#: Trainer options that a run's own key stands for: the Trainer's name → the run's key
#: (``trainer.max_epochs`` is ``epochs``).
TRAINER_KEYS = {"max_epochs": "epochs", "accelerator": "accelerator", "devices": "devices",
                "precision": "precision", "enable_progress_bar": "progress_bar"}


def dotted_flags(argv: list[str]) -> list[str]:
    """LightningCLI's spelling on the command line: ``--trainer.KEY VALUE`` and
    ``--trainer.KEY=VALUE`` become ``--trainer KEY=VALUE``; ``--model.KEY`` and ``--data.KEY``
    become ``--KEY`` (``_`` in KEY read as ``-``), a true-or-false KEY given a value
    (``--model.shared false``, ``--model.shared=false``) ``--KEY`` or ``--no-KEY``."""
    out, args = [], collections.deque(argv)
    while args:
        arg = args.popleft()
        section, dot, rest = arg.partition(".")
        name = section[2:] if section.startswith("--") else None  # (---trainer.x is no flag)
        if not dot or name not in ("trainer", *SECTIONS):
            out.append(arg)
        elif name == "trainer":
            out += trainer_flag(arg, rest, args)
        else:
            out.append(section_flag(arg, name, rest, args))
    return out


def trainer_flag(arg: str, rest: str, args: collections.deque) -> list[str]:
    """``--trainer.KEY=VALUE`` (``arg``; ``rest``: what follows ``--trainer.``), or
    ``--trainer.KEY`` and the VALUE it takes from the arguments still to read (``args``), as
    ``--trainer KEY=VALUE``."""
    key, equals, value = rest.partition("=")
    if ":" in key and not equals:  # (KEY:VALUE, as a YAML file writes it)
        raise ConfigError(f"{arg}: a Trainer option is --trainer.KEY=VALUE or --trainer.KEY "
                          f"VALUE; write --trainer.{key.replace(':', '=', 1)}")
    if not equals:
        value = args.popleft() if args else None
        if value is None or value.startswith("--"):
            raise ConfigError(f"{arg} needs a value ({arg} VALUE or {arg}=VALUE)")
    return ["--trainer", f"{key}={value}"]


def section_flag(arg: str, section: str, rest: str, args: collections.deque) -> str:
    """``--model.KEY`` or ``--data.KEY`` (``arg``; ``rest``: what follows the dot) as the flat
    flag: ``--KEY`` (with ``=VALUE`` if ``arg`` has it); for a true-or-false KEY given a value,
    after ``=`` or taken from the arguments still to read (``args``), ``--KEY`` or
    ``--no-KEY``."""
    key, equals, value = rest.partition("=")  # the key as a flat flag: batch_size or batch-size
    if key.replace("-", "_") not in SECTIONS[section]:
        raise ConfigError(f"unknown {section} key {key!r} in {arg!r}; valid keys: "
                          f"{', '.join(SECTIONS[section])}")
    flag = flag_name(key)
    if field_type(FIELDS[key.replace("-", "_")]) is not bool:
        return flag + equals + value
    if equals or (args and not args[0].startswith("--")):  # a value: true or false
        return bool_flag(arg.partition("=")[0], flag, value if equals else args.popleft())
    return flag


def bool_flag(dotted: str, flag: str, value: str) -> str:
    """``--model.KEY VALUE`` (``dotted``: ``--model.KEY``) of a true-or-false KEY as its flag
    (``flag``: ``--KEY``): ``--KEY`` or ``--no-KEY``."""
    try:
        read = yaml.load(value, Loader=ConfigLoader)
    except yaml.YAMLError:
        read = None
    if type(read) is not bool:
        raise ConfigError(f"{dotted} {value!r}: {flag[2:]} is true or false ({dotted} true "
                          f"or false, {flag} or --no-{flag[2:]})")
    return flag if read else f"--no-{flag[2:]}"


def flatten_sections(data: dict, where: str) -> dict:
    """A config mapping with ``model:``/``data:``/``trainer:`` sections as flat keys (plus
    ``trainer``, the Trainer options no flat key covers); flat keys stay as they are."""
    flat = {k: v for k, v in data.items() if k not in ("trainer", *SECTIONS)}
    for section, keys in SECTIONS.items():
        values = string_keys(section_mapping(data, section, where), f"{where}, {section}")
        unknown = [k for k in values if k not in keys]
        if unknown:
            raise ConfigError(f"{where}: unknown {section} key {unknown[0]!r}; valid keys: "
                              f"{', '.join(keys)}")
        twice = next((k for k in values if k in flat), None)
        if twice:
            raise ConfigError(f"{where}: {twice} is given twice ({twice}: {flat[twice]!r} and "
                              f"{section}.{twice}: {values[twice]!r}); give it once")
        flat.update(values)
    trainer = string_keys(section_mapping(data, "trainer", where), f"{where}, trainer")
    covered, options = split_trainer_options(trainer)
    check_agree(flat, covered, trainer, lambda name: f"{where}: trainer.{name}", str)
    flat.update(covered)
    if options or isinstance(data.get("trainer"), dict):
        flat["trainer"] = options
    return lightning_devices(flat)


#: The fields that are mappings: given over a file's (or a sweep base's) value, they add keys.
MAPPING_FIELDS = ("model_kwargs", "trainer")


def overlay(values: dict, over: dict) -> dict:
    """``values`` with ``over``'s on top, the :data:`MAPPING_FIELDS` merged key by key (the
    flag ``--model-kwargs depth=2`` adds to a file's ``model_kwargs: {patch_size: 7}``)."""
    merged = {**values, **over}
    for name in MAPPING_FIELDS:
        if isinstance(values.get(name), dict) and isinstance(over.get(name), dict):
            merged[name] = {**values[name], **over[name]}
    return merged


def split_trainer_options(options: dict) -> tuple[dict, dict]:
    """Trainer options as ``(flat keys, the rest)``: the ones a flat key covers read as it
    (``max_epochs`` is ``epochs``, an integer ``devices`` is ``devices``)."""
    rest = dict(options)
    covered = {key: rest.pop(name) for name, key in TRAINER_KEYS.items()
               if name in rest and (name != "devices" or type(rest[name]) is int)}
    return covered, rest


def check_agree(flat: dict, covered: dict, options: dict, trainer_name, flat_name) -> None:
    """A Trainer option given beside the flat key it stands for (``trainer.max_epochs`` and
    ``epochs``, ``trainer.devices`` and ``devices``) in one place must say the same, or one of
    them would be dropped unsaid. ``trainer_name`` / ``flat_name`` spell the two in the
    error."""
    for name, key in TRAINER_KEYS.items():
        if name in options and key in flat and (key not in covered or covered[key] != flat[key]):
            raise ConfigError(f"{trainer_name(name)} {options[name]!r} and {flat_name(key)} "
                              f"{flat[key]!r} disagree; give one of them")


def without_devices_named_in(values: dict, over: dict) -> dict:
    """``values`` without its devices (flat, or ``trainer.devices``) when ``over``, which
    comes on top of it, names them in either form: the later wins (a file's
    ``trainer.devices: auto`` outlived ``--devices 2``, and Lightning read it)."""
    if "devices" not in over and "devices" not in (over.get("trainer") or {}):
        return values
    values = {k: v for k, v in values.items() if k != "devices"}
    if isinstance(values.get("trainer"), dict):
        values["trainer"] = {k: v for k, v in values["trainer"].items() if k != "devices"}
    return values


def lightning_devices(values: dict) -> dict:
    """``values`` with a ``devices`` that is not a count (``auto``, ``"0,1"``, ``[0, 1]``)
    moved into the Trainer options, where Lightning reads it."""
    if "devices" not in values or type(values["devices"]) is int:
        return values
    values = dict(values)
    values["trainer"] = {**(values.get("trainer") or {}), "devices": values.pop("devices")}
    return values


def section_mapping(data: dict, section: str, where: str) -> dict:
    """The mapping under ``section`` (none, or a bare ``section:``, is empty); an empty list,
    ``false``, ``0`` or ``''`` there is refused like any other non-mapping, not read as empty."""
    value = {} if data.get(section) is None else data[section]
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {section} must be a mapping of options, got {value!r}")
    return value


def nested_config(config: RunConfig) -> dict:
    """``config`` as a LightningCLI-style mapping (``model:``, ``data:``, ``trainer:`` and the
    run's own keys), which :func:`~lotterynet.config.load_yaml` reads back as the same config."""
    flat = config.to_dict()
    nested = {section: {k: flat.pop(k) for k in keys} for section, keys in SECTIONS.items()}
    trainer = {name: flat.pop(key) for name, key in TRAINER_KEYS.items()}
    trainer.update(flat.pop("trainer"))
    return {**nested, "trainer": trainer, **flat}
