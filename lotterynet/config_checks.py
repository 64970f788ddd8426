"""The checks of a run's config, each refusal a :class:`~lotterynet.errors.ConfigError` of one
line before anything runs: :func:`validate`, which :func:`~lotterynet.config.make_config` calls,
and the checks it makes (the architecture, the names a registry holds, the numbers, the paths,
a timm model's arguments; W&B's mode and names, where W&B itself would refuse them only once the
run's files were written: :func:`require_wandb`, :func:`check_wandb_names`); and the options a
run does not read (:func:`unread_options`), refused where given (:func:`refuse_unread_flags`,
:func:`refuse_unread_file_options`) and left out of what its W&B run shows
(:func:`read_options`).

What a check reads is imported inside it, not here: the registries (structures, data sets,
optimizers, ...) import torch and wandb is slow to import, which ``lotterynet.cli`` (importing
this module) does without until a check needs them (``train.py --help`` and an unknown flag
answer at once); :mod:`lotterynet.hardware_checks` and :mod:`lotterynet.timm_models`, whose
checks :func:`validate` makes, import this module."""

from __future__ import annotations

import configparser
import functools
import inspect
import math
import netrc
import os
import shlex
import unicodedata
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from .config_flags import MAPPING_FIELDS
from .config_schema import FIELDS, WIDE, RunConfig, device_count, examples_per_device, field_type
from .errors import ConfigError, flag_name
from .registry import check_choice


def as_config_error(check: Callable, *args) -> None:
    """``check(*args)``, a check of lotterynet's own (a registry's ``get``,
    :func:`check_choice`, a layer's, the optimizer's), its ``ValueError`` as a
    :class:`ConfigError`."""
    try:
        check(*args)
    except ValueError as err:
        raise ConfigError(str(err)) from None


@functools.cache  # (inspect.signature, for every sweep cell, costs more than the cell's checks)
def names_a_model(builder: Callable) -> bool:
    """Whether an architecture's builder is a family that ``--arch FAMILY:NAME`` names a model
    of (its ``model_name``), as ``timm`` is."""
    return "model_name" in inspect.signature(builder).parameters


#: The W&B run's options, read only with ``--wandb``.
WANDB_OPTIONS = ("wandb_project", "wandb_group", "wandb_entity", "wandb_tags", "wandb_notes",
                 "log_model")


#: What ``$WANDB_MODE`` may say (wandb's own settings refuse anything else, at ``wandb.init``,
#: after the run's first files are written).
WANDB_MODES = ("online", "offline", "disabled", "shared", "dryrun", "run")
#: Those of them whose runs live on the W&B server (a resumed run's history is there).
WANDB_SERVER_MODES = ("online", "shared", "run")


#: The W&B server whose API key wandb also finds under another server's netrc entry: its CoreWeave
#: Forge address (wandb 0.31's default; ``wandb login`` stores its key under that name) takes
#: the key of W&B's cloud it serves, the one older wandb stores.
WANDB_NETRC_UPSTREAM = {"api.forge.coreweave.com": "api.wandb.ai"}


def wandb_settings_files() -> dict[str, tuple[str, Path]]:
    """The settings in W&B's settings files, each with the file that sets it, read as wandb
    reads them as it starts (``wandb.sdk.lib.settings_file``): the global file
    (``$WANDB_CONFIG_DIR/settings``, else ``~/.config/wandb/settings``; ``wandb login --host``
    writes its ``base_url``), then the workspace's, which wins (``./wandb/settings`` in the
    working folder, or ``./.wandb/settings`` where ``./.wandb`` exists, whatever
    ``$WANDB_DIR`` says; ``wandb offline`` / ``wandb disabled`` write its ``mode``). wandb reads
    a file it cannot parse as empty, and where the merged settings hold a value its
    :class:`wandb.Settings` rejects (``console = bogus``, ``mode = bogus``, an unknown key) it
    prints the error and drops them all, every file's (``Settings.update_from_system_settings``,
    ``_parse_system_settings``): so does this, none found."""
    import wandb

    config_dir = os.environ.get("WANDB_CONFIG_DIR") or "~/.config/wandb"
    found: dict[str, tuple[str, Path]] = {}
    for path in (Path(config_dir, "settings").expanduser(),
                 Path(wandb.Settings().settings_workspace)):
        settings = configparser.ConfigParser()
        try:
            settings.read(path)
            found.update({key: (value, path) for key, value in settings.items("default")})
        except (OSError, configparser.Error):
            pass
    try:  # (wandb's reading of the files: a list, a deprecated key unset, a file's own keys left)
        wandb.Settings(**{key: value.split(",") if key == "ignore_globs" else value
                          for key, (value, _) in found.items()
                          if key not in ("anonymous", "settings_system", "root_dir")})
    except Exception:  # noqa: BLE001 - as wandb's: any error drops them all
        return {}
    return found


def wandb_server() -> str:
    """The host (``host[:port]``) of the W&B server a run logs to, as wandb finds it:
    ``$WANDB_BASE_URL``, else the ``base_url`` of W&B's settings files
    (:func:`wandb_settings_files`), else wandb's default server."""
    import wandb

    url = os.environ.get("WANDB_BASE_URL")
    if not url:
        url, _ = wandb_settings_files().get("base_url", (wandb.Settings().base_url, None))
    return urlsplit(url).netloc


def wandb_has_api_key() -> bool:
    """Whether wandb finds credentials for its server (:func:`wandb_server`), where wandb 0.31
    looks for them without asking (``wandb.sdk.lib.wbauth.authenticate``): ``$WANDB_API_KEY``
    or ``$WANDB_IDENTITY_TOKEN_FILE``, else the server's entry in the netrc file that
    ``wandb login`` writes (``$NETRC``, else ``~/.netrc``; read as wandb reads it, whatever its
    permissions), else the ``api_key`` of W&B's settings files (:func:`wandb_settings_files`)."""
    key, _ = wandb_settings_files().get("api_key", ("", None))
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE") or key:
        return True
    server = wandb_server()
    path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        entries = netrc.netrc(path)
    except (OSError, netrc.NetrcParseError):
        return False
    entry = (entries.authenticators(server)
             or entries.authenticators(WANDB_NETRC_UPSTREAM.get(server, server)))
    return entry is not None and bool(entry[2])


def wandb_mode_and_source() -> tuple[str, str | None]:
    """The mode a W&B run logs in and what set it, in wandb's own order: ``$WANDB_MODE``,
    else the ``mode`` of W&B's settings files (:func:`wandb_settings_files`: what ``wandb
    offline`` / ``wandb disabled`` set), named by their path; else lotterynet's own rule
    (``None``): online where wandb finds an API key (:func:`wandb_has_api_key`), else offline
    (wandb itself would go online and ask for a key)."""
    if "WANDB_MODE" in os.environ:
        return os.environ["WANDB_MODE"], "$WANDB_MODE"
    if "mode" in (files := wandb_settings_files()):
        mode, path = files["mode"]
        return mode, f"the mode in W&B's settings file {str(path)!r}"
    return ("online" if wandb_has_api_key() else "offline"), None


def wandb_mode() -> str:
    """The mode a W&B run logs in (:func:`wandb_mode_and_source`)."""
    return wandb_mode_and_source()[0]


#: The environment variables that each give wandb credentials; wandb 0.31 refuses to log in
#: where both are set (``wandb.sdk.lib.wbauth.authenticate._try_env_auth``).
WANDB_CREDENTIAL_VARIABLES = ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE")


def require_wandb() -> None:
    """``--wandb`` needs the wandb package, which lotterynet does not import otherwise, and a
    mode wandb takes: ``wandb.init`` refuses any other (an empty one too), and a server mode
    without an API key or with both credential variables (:data:`WANDB_CREDENTIAL_VARIABLES`;
    an offline run does not log in), only after the run's first files were written."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ConfigError("--wandb needs the wandb package, which is not installed "
                          "(pip install wandb, or run without W&B: --no-wandb)") from None
    mode, source = wandb_mode_and_source()
    if mode not in WANDB_MODES:
        raise ConfigError(f"{source} is {mode!r}; valid choices: {', '.join(WANDB_MODES)} "
                          f"(or unset: online with an API key, else offline)")
    if mode in WANDB_SERVER_MODES and not wandb_has_api_key():
        unset = "unset" if source == "$WANDB_MODE" else "`wandb offline` in this folder"
        raise ConfigError(f"{source} is {mode!r} but no W&B API key is configured: run "
                          f"`wandb login` (or set $WANDB_API_KEY), or log offline "
                          f"(WANDB_MODE=offline, or {unset}) and `wandb sync` later")
    if mode in WANDB_SERVER_MODES and all(map(os.environ.get, WANDB_CREDENTIAL_VARIABLES)):
        raise ConfigError("$WANDB_API_KEY and $WANDB_IDENTITY_TOKEN_FILE are both set, which "
                          "W&B refuses as it logs in: unset one of them")


#: Characters W&B refuses in a project name; it says so only once the run has started.
WANDB_PROJECT_FORBIDDEN = "/\\#?%:"


#: The longest project and group name W&B takes (a longer group is refused by its server).
WANDB_NAME_MAX = 128


#: The W&B names and texts a run gives W&B (its ``wandb.init``), with the control characters
#: each may hold: notes are a run's description, of lines (W&B shows them as Markdown).
WANDB_TEXTS = {"wandb_project": "", "wandb_entity": "", "wandb_group": "", "wandb_tags": "",
               "wandb_notes": "\n\t"}


def control_character(text: str, allowed: str = "") -> str | None:
    """The first control character (Unicode's Cc: C0, DEL, C1) in ``text`` but ``allowed``;
    None where there is none."""
    return next((c for c in text if unicodedata.category(c) == "Cc" and c not in allowed), None)


def check_wandb_names(config: RunConfig) -> None:
    """The project name, group and tags W&B would refuse at ``wandb.init``, after the run's
    files were written: a project of 1 to 128 characters without ``/ \\ # ? % :``, a group of
    at most 128, tags of 1 to 64. And no control character (ESC, ``\\r``, NUL, ...; notes may
    hold line breaks and tabs) in any of them nor the entity: W&B took them as given, into
    the run's records and so its pages (and the project and entity into the lines it prints
    online)."""
    for key, allowed in WANDB_TEXTS.items():
        control = control_character(getattr(config, key) or "", allowed)
        if control is not None:
            text = getattr(config, key)
            may = " (notes may hold line breaks and tabs)" if allowed else ""
            raise ConfigError(f"{flag_name(key)} {text!r} holds the control character "
                              f"{control!r}; remove it{may}")
    project = config.wandb_project
    if not 1 <= len(project) <= WANDB_NAME_MAX or set(project) & set(WANDB_PROJECT_FORBIDDEN):
        raise ConfigError(f"--wandb-project {project!r}: a W&B project name has 1 to "
                          f"{WANDB_NAME_MAX} characters, none of "
                          f"{' '.join(WANDB_PROJECT_FORBIDDEN)}")
    if config.wandb_group is not None and len(config.wandb_group) > WANDB_NAME_MAX:
        raise ConfigError(f"--wandb-group {config.wandb_group!r}: {len(config.wandb_group)} "
                          f"characters; W&B takes a group name of at most {WANDB_NAME_MAX}")
    tags = [] if config.wandb_tags is None else config.wandb_tags.split(",")
    for tag in tags:
        if not 1 <= len(tag.strip()) <= 64:
            raise ConfigError(f"--wandb-tags {config.wandb_tags!r}: W&B tags have 1 to 64 "
                              f"characters each (comma-separated), not {tag.strip()!r}")


def validate(config: RunConfig, given_precision=None,
             spell: Callable[[str], str] = flag_name) -> None:
    """Raise :class:`ConfigError` on the first bad value (a precision refused named as given,
    ``given_precision``: Lightning's ``16`` as 16, not as the ``16-mixed`` it reads; the
    hardware's options by ``spell``, as the command gave them)."""
    from .hardware_checks import check_hardware
    from .masking import check_score_init
    from .models import split_arch
    from .structures import check_fan_in
    from .timm_models import check_timm_model

    check_arch(config)
    check_registered_names(config)
    check_lenet5_convs(config)
    as_config_error(check_fan_in, config.fan_in)
    as_config_error(check_score_init, config.score_init)
    if config.structure == WIDE and config.train_weights:
        raise ConfigError("--train-weights trains the dense net itself: it cannot be combined "
                          "with --structure wide (valid: --train-weights alone, or --structure "
                          "wide without it)")
    check_hardware(config, given_precision, spell)  # (the devices that check_numbers shares)
    check_numbers(config)
    check_stop_and_resume(config)
    check_precision_optimizer(config)
    if config.trainer:
        from .trainer_options import check_trainer_options

        check_trainer_options(config)
    family_kwargs = split_arch(config.arch)[1]
    if family_kwargs:
        check_timm_model(family_kwargs["model_name"])
    check_model_kwargs(config.model_kwargs)
    check_exclude(config.exclude)
    if config.wandb:
        check_wandb(config)
    check_paths(config)


def check_arch(config: RunConfig) -> None:
    """``--arch``: a registered architecture (``FAMILY:NAME`` for a family that names a model,
    as timm), with the options it can run with."""
    from .archs import recipe
    from .models import MODELS, split_arch

    family, family_kwargs = split_arch(config.arch)
    if family not in MODELS or bool(family_kwargs) != names_a_model(MODELS.get(family)):
        # (fc2:x was checked as a timm model name; a bare timm failed to build, unnamed)
        choices = [f"{n}:<model name>" if names_a_model(MODELS.get(n)) else n
                   for n in MODELS.names()]
        as_config_error(check_choice, "architecture", config.arch, choices)  # (refused: not one)
    if family_kwargs and (config.structure == WIDE or config.train_weights
                          or config.subnet_convs or config.fan_in != "hidden"):
        raise ConfigError(f"--arch {config.arch!r} is converted layer by layer; --structure wide, "
                          f"--train-weights, --subnet-convs and --fan-in need a built-in "
                          f"architecture "
                          f"({', '.join(n for n in MODELS.names() if n != family)})"
                          + "; a sweep of it needs --no-baseline (baseline: false), its "
                            "trained baseline being a --train-weights run" * config.train_weights)
    if recipe(family).target_only and not config.train_weights:
        raise ConfigError(f"--arch {config.arch} is a target architecture (trained weights with "
                          f"biases): it runs only with --train-weights")


def check_registered_names(config: RunConfig) -> None:
    """The names of a structure, init, data set, augmentation, optimizer, scheduler and
    activation, each one its registry holds (the refusal lists them)."""
    from .augment import AUGMENTATIONS
    from .data import DATASETS
    from .distributions import DISTRIBUTIONS
    from .optim import OPTIMIZERS, SCHEDULERS
    from .structures import STRUCTURES, check_activation

    as_config_error(check_choice, "structure", config.structure, [*STRUCTURES.names(), WIDE])
    as_config_error(check_choice, "match", config.match, STRUCTURES.names())  # (not wide itself)
    if config.init is not None:
        as_config_error(DISTRIBUTIONS.get, config.init)
    as_config_error(DATASETS.get, config.dataset)
    as_config_error(AUGMENTATIONS.get, config.augment)
    as_config_error(OPTIMIZERS.get, config.optimizer)
    as_config_error(SCHEDULERS.get, config.scheduler)
    as_config_error(check_activation, config.activation)


def check_precision_optimizer(config: RunConfig) -> None:
    """An optimizer that cannot train the precision's tensors (Adam in ``16-true``'s float16:
    :func:`~lotterynet.optim.float16_failure`), which diverged in the first epoch."""
    from .optim import float16_failure

    why = float16_failure(config.optimizer) if config.precision == "16-true" else None
    if why:
        raise ConfigError(f"--optimizer {config.optimizer} with --precision 16-true: {why}; use "
                          f"--optimizer sgd, or --precision bf16-true, bf16-mixed or 32-true")


def check_lenet5_convs(config: RunConfig) -> None:
    """``--subnet-convs`` and ``--conv-init``, which only LeNet5's random frozen convs read."""
    from .distributions import DISTRIBUTIONS
    from .models import split_arch

    family = split_arch(config.arch)[0]
    if config.subnet_convs and family != "lenet5":
        raise ConfigError(f"--subnet-convs makes LeNet5's random frozen convs subnet layers; "
                          f"--arch {config.arch} has none (every layer of it already is one)")
    if config.conv_init is not None:
        as_config_error(DISTRIBUTIONS.get, config.conv_init)
        if family != "lenet5" or config.subnet_convs:
            raise ConfigError(f"conv_init {config.conv_init!r} draws LeNet5's random frozen conv "
                              f"filters; it needs --arch lenet5 without --subnet-convs (got "
                              f"--arch {config.arch!r}{' --subnet-convs' * config.subnet_convs})")


def check_wandb(config: RunConfig) -> None:
    """What ``--wandb`` needs, which W&B itself would refuse only once the run's files are
    written: the package, a mode, the names, a ``$WANDB_DIR`` to write in."""
    from .path_checks import check_output_dir

    require_wandb()
    check_wandb_names(config)
    if os.environ.get("WANDB_DIR"):  # (W&B would write into the temporary folder instead)
        check_output_dir(os.environ["WANDB_DIR"], "$WANDB_DIR")


NAME_MAX, PATH_MAX = 255, 4096  # Linux's limits (os.pathconf's PC_NAME_MAX, PC_PATH_MAX)
#: The fields that name files or folders.
PATH_FIELDS = ("data_dir", "out", "resume")


def check_path(flag: str, path: str) -> None:
    """A path the file system can hold: no name over NAME_MAX bytes, at most PATH_MAX in all
    (otherwise every look at it would fail with 'File name too long'), and no NUL byte. Nor a
    ``~`` first, which only a shell expands (unquoted): the run read ``--out '~/x'`` (or
    ``./~/x``, the same path) as the folder ``./~/x``, Lightning (fsspec) as ``$HOME/x``, and
    wrote its history there, then failed with a traceback."""
    if "\x00" in str(path):
        raise ConfigError(f"{flag} {str(path)!r}: a path cannot hold a NUL byte")
    if str(Path(path)).startswith("~"):
        home = os.path.expanduser(Path(path))
        mean = f"{home!r} (in the home folder), or " if home != str(Path(path)) else ""
        raise ConfigError(f"{flag} {str(path)!r} starts with '~', which only a shell expands "
                          f"(unquoted); give {mean}{os.path.abspath(path)!r} (the name "
                          f"{Path(path).parts[0]!r} here)")
    names = [len(os.fsencode(part)) for part in Path(path).parts]
    size = len(os.fsencode(str(path)))
    if max(names, default=0) > NAME_MAX or size >= PATH_MAX:
        raise ConfigError(f"{flag} {str(path)[:40]!r}…: a path holds at most {PATH_MAX - 1} "
                          f"bytes and names of at most {NAME_MAX} (this one: {size} bytes, its "
                          f"longest name {max(names)})")


def check_paths(config: RunConfig) -> None:
    """Paths the file system can hold; a data folder that is not a file; a checkpoint to
    resume that is there."""
    from .data import DATA_ENV

    for name in PATH_FIELDS:
        if getattr(config, name) is not None:
            check_path(name, getattr(config, name))
    data_dir = config.data_dir or os.environ.get(DATA_ENV)
    where = "--data-dir" if config.data_dir else f"${DATA_ENV}"
    if data_dir and not config.data_dir:
        check_path(where, data_dir)
    if data_dir and Path(data_dir).exists() and not Path(data_dir).is_dir():
        raise ConfigError(f"{where} {data_dir!r} is a file, not a folder")
    if config.resume is not None and not Path(config.resume).is_file():
        what = "is a folder; give the checkpoint file in it" if Path(config.resume).is_dir() \
            else "not found"
        raise ConfigError(f"--resume: checkpoint {config.resume!r} {what}")


#: What ``build_model("timm", ...)`` sets itself from the data set's shape, and the
#: ``timm.create_model`` arguments that load weights (a random network's never are).
TIMM_SET = ("in_chans", "num_classes", "img_size")
TIMM_WEIGHTS = ("pretrained", "checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay")


def check_model_kwargs(model_kwargs: dict) -> None:
    """``model_kwargs`` go into the run's spec (results.json, the ticket): string keys, values
    a ticket gives back (:func:`~lotterynet.convert_checks.plain_numbers`, with no NaN or infinity,
    which its JSON cannot hold, nor a number beyond a float's range), none of the arguments
    the data set decides (:data:`TIMM_SET`) or that load weights (:data:`TIMM_WEIGHTS`)."""
    for key, value in model_kwargs.items():
        if not isinstance(key, str):
            raise ConfigError(f"model_kwargs key {key!r} is not a string (an argument name of "
                              f"timm.create_model)")
        if key in TIMM_SET:
            raise ConfigError(f"model_kwargs {key!r}: {', '.join(TIMM_SET)} are set from the "
                              f"data set (build_model's own arguments); drop it")
        if key in TIMM_WEIGHTS:
            raise ConfigError(f"model_kwargs {key!r}: the frozen weights are random, never "
                              f"loaded ({', '.join(TIMM_WEIGHTS)} are refused); drop it")
        from .convert_checks import plain_numbers  # (torch: only for a model's arguments)

        try:
            plain_numbers(value, key)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"model_kwargs: {error}") from None


def check_exclude(patterns: list) -> None:
    """``exclude`` (convert's, in the run's spec): module-name glob patterns, each a string
    that names something."""
    bad = next((p for p in patterns if not isinstance(p, str) or not p), None)
    if bad is not None:
        raise ConfigError(f"exclude {bad!r} is not a module-name pattern (a non-empty string "
                          f"such as stem.conv or 'stages.*.conv1')")


SEED_MAX = 2**32 - 1  # what seed_everything and numpy accept


def check_numbers(config: RunConfig) -> None:
    """Finite numbers inside the ranges that torch and Lightning accept."""
    for name, f in FIELDS.items():
        value = getattr(config, name)
        if field_type(f) is float and value is not None and not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
    from .masking import check_sparsity_range

    as_config_error(check_sparsity_range, config.sparsity)  # (the layers' check, and its message)
    positive = ["epochs", "batch_size", "pairs"]  # (devices: check_hardware's choices)
    optional = ("limit_train", "stop_after", "hidden")
    positive += [name for name in optional if getattr(config, name) is not None]
    for name in positive:
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be positive, got {getattr(config, name)!r}")
    from .data import DATASETS
    from .distributions import check_seed
    from .optim import check_optim

    optim = {"momentum": config.momentum, "weight_decay": config.weight_decay}
    # (the module's and the data module's checks, and their messages)
    as_config_error(check_optim, optim if config.lr is None else {"lr": config.lr, **optim})
    as_config_error(check_seed, config.seed, SEED_MAX + 1)
    as_config_error(DATASETS.get(config.dataset).check_split_sizes, config.val_size,
                    config.limit_train)
    check_examples_per_device(config)


def check_examples_per_device(config: RunConfig) -> None:
    """Every device gets a training example and, unless there is no validation
    (``val_size`` 0), a validation example: each device trains and validates its share."""
    count = device_count(config)
    if examples_per_device(config) == 0:
        given = (f"val_size {config.val_size}" if config.limit_train is None
                 else f"limit_train {config.limit_train}")
        raise ConfigError(f"{given} leaves some of the {count} devices no training example; "
                          f"give at least {count} training examples, one for each device")
    if 0 < config.val_size < count:
        raise ConfigError(f"val_size {config.val_size} leaves some of the {count} devices no "
                          f"validation example; give at least {count} (one for each device), "
                          f"or 0 for no validation")


def check_stop_and_resume(config: RunConfig) -> None:
    """``--overwrite`` with ``--resume``, or a ``--stop-after`` past ``--epochs``: a run
    cannot do what these ask."""
    if config.resume and config.overwrite:
        raise ConfigError("--overwrite with --resume: a resume continues its run and never "
                          "clears it; drop --overwrite, or start the run anew without --resume")
    if config.stop_after is not None and config.stop_after > config.epochs:
        raise ConfigError(f"stop_after {config.stop_after} is more than the run's "
                          f"{config.epochs} epochs; it stops a run before its end")


def unread_options(config: RunConfig) -> dict[str, str]:
    """The fields that the run of ``config`` does not read, each with the reason."""
    return dict(unread_by(wandb=config.wandb, arch=config.arch,
                          train_weights=config.train_weights, subnet_convs=config.subnet_convs,
                          conv_init=config.conv_init, structure=config.structure,
                          match=config.match, hidden=config.hidden))


@functools.cache
def unread_by(*, wandb: bool, arch: str, train_weights: bool, subnet_convs: bool,
              conv_init: str | None, structure: str, match: str, hidden: int | None
              ) -> dict[str, str]:
    """:func:`unread_options` of a config of these fields, the only ones it depends on: made
    once for a sweep's thousands of cells (a structure's options are read from its signature
    and probed on a layer). Not to be changed: the same dict answers every such config."""
    from .models import split_arch
    from .structures import STRUCTURE_OPTIONS, sizing_options, structure_options

    unread = {name: "it configures W&B logging, which needs --wandb"
              for name in WANDB_OPTIONS if not wandb}
    if not split_arch(arch)[1]:
        unread["model_kwargs"] = (f"it goes to timm.create_model, and --arch {arch} is "
                                  f"not a timm:<name>")
        unread["exclude"] = (f"it names layers that the conversion of a timm:<name> model "
                             f"leaves as they are, and --arch {arch} is not one")
    family = split_arch(arch)[0]
    if family != "lenet5":
        unread["subnet_convs"] = (f"it makes LeNet5's random frozen convs subnet layers; "
                                  f"--arch {arch} has none")
    if family != "lenet5" or subnet_convs:
        unread["conv_init"] = (f"it draws LeNet5's random frozen conv filters; --arch {arch}"
                               f"{' --subnet-convs' * subnet_convs} has none")
    if train_weights:
        why = "the trained dense baseline (--train-weights) has no masks and no structure"
        unread.update({name: why for name in ("structure", "sparsity", "match", "score_init",
                                              *STRUCTURE_OPTIONS)})
        frozen_convs = family == "lenet5" and not subnet_convs
        if not frozen_convs or conv_init is not None:
            unread["init"] = (f"it draws frozen random weights, and the trained baseline of "
                              f"--arch {arch} has none"
                              + " but the convs, drawn from --conv-init" * frozen_convs)
        return unread
    if structure == WIDE:  # a dense net sized to the maskable count of --match's
        reads = sizing_options(match)
        where = (f"--structure wide is sized to --match {match}'s maskable count, which "
                 f"it does not change")
        unread["fan_in"] = ("it scales the init of a structure's second layer; the wide net "
                            "is dense")
    else:
        reads = structure_options(structure)
        where = f"--structure {structure} does not read it"
        unread["match"] = "it sizes --structure wide only"
    layers = match if structure == WIDE else structure
    if "hidden" in reads and hidden is not None and hidden_replaces_pairs(layers, hidden):
        unread["pairs"] = (f"--hidden {hidden} sets the hidden width of {layers}, which "
                           f"pairs sets only by default (pairs x in_features)")
    unread.update({name: where for name in STRUCTURE_OPTIONS if name not in reads | set(unread)})
    return unread


def hidden_replaces_pairs(structure: str, hidden: int) -> bool:
    """Whether ``structure``'s layers are the same whatever ``pairs`` once ``hidden`` is given
    (malach and orseau: pairs only sizes their default hidden width), probed on a small
    layer."""
    from .structures import OPTION_PROBES, STRUCTURES, TargetShape

    specs = STRUCTURES.get(structure).specs
    try:
        return len({frozenset(specs(TargetShape(3, 4), pairs=pairs, hidden=hidden).items())
                    for pairs in OPTION_PROBES["pairs"]}) == 1
    except ValueError:  # (a hidden value the structure refuses: its build says so)
        return False


def flag_spelling(name: str, value) -> str:
    """A run option as given on the command line (a list: a mapping flag's
    ``[(KEY, VALUE), ...]``, or ``--exclude``'s patterns)."""
    flag = flag_name(name)
    if name in MAPPING_FIELDS:
        return " ".join(f"{flag} {k}={v}" for k, v in value)
    if value is True:
        return flag
    if value is False:
        return f"--no-{flag[2:]}"
    if isinstance(value, list):
        return f"{flag} {shlex.join(value)}"
    return f"{flag} {value!r}"


def read_options(config: RunConfig) -> dict:
    """``config`` as its run reads it (what a W&B run's config shows): without the fields of
    :func:`unread_options`, but for a trained baseline's ``sparsity``, 0 (it prunes nothing),
    as its sweep row and results.json have it."""
    values = {k: v for k, v in config.to_dict().items() if k not in unread_options(config)}
    return {**values, "sparsity": 0.0} if config.train_weights else values


def refuse_unread_flags(flags: dict, configs: list[RunConfig], where: str = "this run",
                        spell: Callable[[str, object], str] = flag_spelling) -> None:
    """Refuse an option given on the command line (``flags``: field → value; or by a sweep
    variant, which ``spell`` names) that no run of ``configs`` (one run, or a sweep's cells)
    reads: it would be ignored unsaid. A config file's values are not checked (one file serves
    several structures), but for :data:`ARCH_OPTIONS` (:func:`refuse_unread_file_options`)."""
    unread = [unread_options(config) for config in configs]
    for name, value in flags.items():
        reasons = [options.get(name) for options in unread]
        if all(reasons):
            raise ConfigError(f"{spell(name, value)} does nothing in {where}: {reasons[0]}; "
                              f"drop it")


#: The options of a ``timm:<name>`` architecture alone (timm.create_model's, the conversion's):
#: given by a config file to a run of a built-in one they are refused as their flags are, not
#: stored with a run they do nothing in.
ARCH_OPTIONS = ("model_kwargs", "exclude")


def refuse_unread_file_options(path: str, values: dict, configs: list[RunConfig],
                               where: str = "this run") -> None:
    """Refuse an :data:`ARCH_OPTIONS` value that the config file ``path`` gives (``values``:
    the file's values that no flag replaced) and no run of ``configs`` reads, named as the
    file's; an empty one is its default (``--print-config`` writes them so)."""
    given = {name: values[name] for name in ARCH_OPTIONS if values.get(name)}
    refuse_unread_flags(given, configs, where, spell=lambda name, value: (
        f"config file {str(path)!r}: {name} {value!r}"))
