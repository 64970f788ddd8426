"""Lightning's own Trainer options (``trainer:`` in a config file, ``--trainer.KEY VALUE``) for
a run: checked up front, then handed to ``pl.Trainer`` over lotterynet's defaults.

Callbacks and loggers are given as LightningCLI writes them, ``{class_path: ..., init_args:
{...}}`` (``lightning.pytorch.X`` is read as ``pytorch_lightning.X``; a bare class name is
looked up in ``pytorch_lightning.callbacks`` / ``pytorch_lightning.loggers``). They come on
top of the run's own: the epoch checkpoint, the CSV log and W&B keep working.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import os
import types
import typing
from datetime import timedelta
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import (
    BatchSizeFinder,
    Callback,
    LearningRateFinder,
    ModelCheckpoint,
    StochasticWeightAveraging,
)
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.strategies import StrategyRegistry

from .checkpointing import CHECKPOINTS, LAST
from .config import TYPE_NAMES
from .config_schema import RunConfig, device_count, lightning_accelerator, steps_per_epoch
from .errors import ConfigError
from .machine import in_slurm_task
from .path_checks import check_output_dir
from .process_lifetime import put_back_environment
from .quiet import lightning_info_off

#: Options the run itself decides, and why.
OWNED = {
    "default_root_dir": "files go to --out",
    "overfit_batches": "a debugging option that cuts validation to as many batches too; "
                       "train on a fixed subset with --limit-train N",
    "plugins": "checkpoints are written atomically by lotterynet's own plugin",
    "enable_checkpointing": "every run checkpoints every epoch (RUN/checkpoints/last.ckpt)",
    "barebones": "a run always logs its metrics (RUN/metrics.csv) and checkpoints",
    "fast_dev_run": "a debugging run writes no checkpoint and no result; use --epochs 1 "
                    "--limit-train N instead",
}
#: Options given as class paths: the base class each object must have, and where a bare name
#: is looked up.
CLASS_OPTIONS = {"callbacks": (Callback, "pytorch_lightning.callbacks"),
                 "logger": (Logger, "pytorch_lightning.loggers")}
#: Callbacks that change what the run's config says (and its resume restores) behind it.
REFUSED_CALLBACKS = {
    BatchSizeFinder: "it trains at a batch size it finds, not --batch-size",
    LearningRateFinder: "it sets the lr it finds, not --lr; run it on your own Trainer",
    StochasticWeightAveraging: "it swaps the run's schedule for its own, and the ticket's masks "
                               "are not the averaged model's",
}
EXAMPLES = {"pytorch_lightning.callbacks": "EarlyStopping",
            "pytorch_lightning.loggers": "TensorBoardLogger"}


def _count(value) -> bool:
    return type(value) is int and value > 0


def _non_negative(value) -> bool:
    return type(value) in (int, float) and value >= 0


def _or_none(test):
    """``test``, or null, which ``pl.Trainer``'s signature takes: Lightning's default where
    that is None (``--trainer.gradient_clip_val null`` unsets a config file's value), no
    validation by epoch for ``check_val_every_n_epoch``."""
    return lambda value: value is None or test(value)


def _positive(value) -> bool:
    return type(value) in (int, float) and value > 0


def _positive_duration(value) -> bool:
    """``max_time`` as Lightning reads it ("DD:HH:MM:SS", a mapping of timedelta's keywords or
    a timedelta) and longer than zero: a zero limit ends the run before its first step."""
    if value is None:
        return True
    try:
        if isinstance(value, str):
            days, hours, minutes, seconds = map(int, value.split(":"))
            value = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        elif isinstance(value, dict):
            value = timedelta(**value)
    except (ValueError, TypeError):
        return False
    return isinstance(value, timedelta) and value > timedelta(0)


def _launches_fresh_processes(strategy) -> bool:
    """Not a spawn / fork strategy (``ddp_spawn``, ``ddp_fork``, ``ddp_notebook``, ...): those
    hand rank 0's results back as a bare state dict, which the run's checkpointing (a
    lotterynet checkpoint or nothing) refuses after the training."""
    # (dict.get: the registry's own get builds the strategy)
    entry = dict.get(StrategyRegistry, strategy, {}) if isinstance(strategy, str) else {}
    return entry.get("init_params", {}).get("start_method", "popen") == "popen"


#: Values that Lightning takes at construction and would only refuse during training (or that
#: would leave a run without its result), beyond the types of Trainer's signature.
VALUE_CHECKS = {"accumulate_grad_batches": (_count, "a positive integer"),
                "gradient_clip_val": (_or_none(_non_negative), "a number >= 0, or null"),
                # (not null: Lightning's 50 over the run's own at-least-once-an-epoch default)
                "log_every_n_steps": (_count, "a positive integer"),
                "check_val_every_n_epoch": (_or_none(_count), "a positive integer or null"),
                "limit_train_batches": (_or_none(_positive), "a number > 0 (a run trains), or "
                                                             "null"),
                "limit_test_batches": (_or_none(_positive), "a number > 0 (a run ends with its "
                                                            "test accuracy), or null"),
                "num_nodes": (lambda v: v == 1 and type(v) is int,
                              "1 (lotterynet runs on one machine)"),
                "val_check_interval": (lambda v: type(v) not in (int, float) or v > 0,
                                       "> 0 (batches, or a fraction of the epoch)"),
                "max_steps": (lambda v: v == -1 or _count(v), "-1 (no limit) or positive"),
                "min_steps": (lambda v: v is None or v == 0 or _count(v), "a count >= 0"),
                "num_sanity_val_steps": (lambda v: v is None or v == -1 or v == 0 or _count(v),
                                         "-1 (all) or a count >= 0"),
                "strategy": (_launches_fresh_processes,
                             "one whose ranks start as processes of their own (auto, ddp, "
                             "ddp_find_unused_parameters_true, ...), not a spawn, fork or "
                             "notebook one"),
                "max_time": (_positive_duration, 'a duration over zero, "DD:HH:MM:SS" or '
                                                 "{days: D, hours: H, minutes: M, seconds: S}")}


def matches(value, hint) -> bool:
    """Whether a YAML value fits a type hint of ``pl.Trainer.__init__``: plain types (a bool
    is not an int), ``Literal``, ``Optional``/``Union``, ``list[...]``, ``dict[...]``; a class
    (``Accelerator``, ``timedelta``) only by ``isinstance``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if origin is list:
        return isinstance(value, list) and all(matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(matches(k, args[0]) and matches(v, args[1])
                                               for k, v in value.items())
    if hint in (int, bool):
        return type(value) is hint
    if hint is float:
        return type(value) in (int, float)
    if hint is type(None):
        return value is None
    return isinstance(value, origin or hint)


def describe(hint) -> str:
    """A type hint in words: ``Optional[bool]`` -> ``true or false, or null``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # (a number covers an integer)
        args = [a for a in args if not (a is int and float in args)]
        return ", or ".join(dict.fromkeys(describe(arg) for arg in args))
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of {describe(args[0]).removeprefix('an ').removeprefix('a ')}s"
    words = {**TYPE_NAMES, type(None): "null"}
    return words.get(origin or hint, getattr(origin or hint, "__name__", str(hint)))


try:  # the types of Trainer's signature, which every value is checked against
    TRAINER_HINTS = typing.get_type_hints(pl.Trainer.__init__)
except (NameError, TypeError):  # a Lightning whose annotations do not resolve: building the
    TRAINER_HINTS = {}  # Trainer (check_trainer_options) still checks the values


def trainer_parameters() -> list[str]:
    return [p for p in inspect.signature(pl.Trainer.__init__).parameters if p != "self"]


def import_class(path: str, package: str) -> type:
    module, _, name = path.rpartition(".")
    module = module.replace("lightning.pytorch", "pytorch_lightning", 1) if \
        module.startswith("lightning.pytorch") else module
    try:
        return getattr(importlib.import_module(module or package), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"trainer: class_path {path!r} cannot be imported; give a module path "
                          f"or a class of {package}, e.g. {EXAMPLES[package]}") from None


def instantiate(option: str, spec, run_dir: Path) -> list:
    """The objects of a ``callbacks`` or ``logger`` option (one class-path mapping or a list
    of them); a logger without ``save_dir`` writes into ``run_dir``."""
    base, package = CLASS_OPTIONS[option]
    objects = []
    for item in spec if isinstance(spec, list) else [spec]:
        if not isinstance(item, dict) or not isinstance(item.get("class_path"), str) or \
                set(item) - {"class_path", "init_args"} or \
                not isinstance(item.get("init_args") or {}, dict):
            glued = next((key for key, value in item.items() if isinstance(key, str) and
                          ":" in key and value is None), None) if isinstance(item, dict) else None
            raise ConfigError(f"trainer: {option} entry {item!r} must be a mapping "
                              f"{{class_path: NAME, init_args: {{...}}}}" + (
                                  f" (YAML read {glued!r} as one key: put a space after its "
                                  f"':')" if glued else ""))
        cls = import_class(item["class_path"], package)
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise ConfigError(f"trainer: {option} class_path {item['class_path']!r} is not a "
                              f"{base.__module__}.{base.__name__}")
        refused = next((why for kind, why in REFUSED_CALLBACKS.items() if issubclass(cls, kind)),
                       None)
        if refused:
            raise ConfigError(f"trainer: {option} {item['class_path']!r} is not for a run: "
                              f"{refused}")
        init_args = dict(item.get("init_args") or {})
        hints = init_hints(cls)
        for name, value in init_args.items():
            if name in hints and not matches(value, hints[name]):
                raise ConfigError(f"trainer: {option} {item['class_path']!r} {name} must be "
                                  f"{describe(hints[name])}; got {value!r}")
        if init_args.get("save_dir") == "":
            raise ConfigError(f"trainer: {option} {item['class_path']!r} save_dir is empty; "
                              f"give a folder, or leave it out to log into the run's folder")
        if "save_dir" in inspect.signature(cls).parameters:
            init_args.setdefault("save_dir", str(run_dir))
        if isinstance(init_args.get("save_dir"), str) and init_args["save_dir"] != str(run_dir):
            # (otherwise the logger fails at its first write, after the run's first files)
            check_output_dir(init_args["save_dir"], f"trainer: {option} "
                                                    f"{item['class_path']!r} save_dir")
        try:
            objects.append(cls(**init_args))
        except Exception as err:  # noqa: BLE001 - any constructor error is the user's value
            raise ConfigError(f"trainer: {option} {item['class_path']!r} with init_args "
                              f"{init_args!r}: {one_line(err)}") from None
        if isinstance(objects[-1], ModelCheckpoint) and objects[-1].save_last and (
                objects[-1].dirpath is None
                or Path(objects[-1].dirpath).resolve() == (run_dir / CHECKPOINTS).resolve()):
            raise ConfigError(f"trainer: {option} {item['class_path']!r} save_last: the run "
                              f"keeps its own {CHECKPOINTS}/{LAST} there (this one would be "
                              f"last-v1.ckpt); drop save_last, or give it a dirpath of its own")
        if isinstance(objects[-1], CSVLogger) and \
                Path(objects[-1].log_dir).resolve() == run_dir.resolve():
            raise ConfigError(f"trainer: {option} {item['class_path']!r} would write its "
                              f"metrics.csv over the run's own, in {str(run_dir)!r}; give it a "
                              f"name or version (a folder of its own)")
    return objects


def init_hints(cls: type) -> dict:
    """The type hints of a callback's or logger's constructor (none where they do not
    resolve: the constructor still checks its arguments)."""
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - annotations of third-party classes
        return {}


def one_line(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def trainer_options(options: dict, run_dir: Path) -> dict:
    """``pl.Trainer`` keyword arguments from the run's ``trainer`` options: callbacks and
    loggers instantiated, every name checked."""
    valid = [p for p in trainer_parameters() if p not in OWNED]
    kwargs = {}
    for key, value in options.items():
        if key in OWNED:
            raise ConfigError(f"trainer: {key} cannot be set: {OWNED[key]}")
        if key not in valid:
            raise ConfigError(f"trainer: unknown option {key!r}; valid options: "
                              f"{', '.join(valid)}")
        hint = TRAINER_HINTS.get(key)
        if key not in CLASS_OPTIONS and hint is not None and not matches(value, hint):
            raise ConfigError(f"trainer: {key} must be {describe(hint)}; got {value!r}")
        test, what = VALUE_CHECKS.get(key, (None, ""))
        if test and not test(value):
            raise ConfigError(f"trainer: {key} must be {what}, got {value!r}")
        kwargs[key] = instantiate(key, value, run_dir) if key in CLASS_OPTIONS else value
    return kwargs


#: Trainer options that limit the batches of a split, and the split each limits.
LIMITS = {"limit_train_batches": "train", "limit_val_batches": "val",
          "limit_test_batches": "test"}


def split_batches(config: RunConfig) -> dict[str, int]:
    """Batches per device of each split, before the Trainer's limits."""
    from .data import DATASETS
    from .datamodule import EVAL_BATCH

    def evaluation(examples: int) -> int:
        return math.ceil(math.ceil(examples / device_count(config)) / EVAL_BATCH)

    return {"train": steps_per_epoch(config), "val": evaluation(config.val_size),
            "test": evaluation(DATASETS.get(config.dataset).test_size)}


def limited_batches(config: RunConfig) -> dict[str, int]:
    """Batches per device of each split that the Trainer runs (an epoch's training, a
    validation pass, the test), after its :data:`LIMITS` (a count, or a fraction of the
    split; 0 none), as Lightning applies them."""
    def limited(batches: int, limit) -> int:
        if type(limit) is int:
            return min(batches, limit)
        return int(batches * limit) if type(limit) is float else batches

    batches = split_batches(config)
    return {split: limited(batches[split], config.trainer.get(name))
            for name, split in LIMITS.items()}


def train_batches(config: RunConfig) -> int:
    """Training batches per epoch on each device, after the Trainer's ``limit_train_batches``
    (:func:`limited_batches`)."""
    return limited_batches(config)["train"]


def optimizer_steps_per_epoch(config: RunConfig) -> int:
    """Optimizer steps per epoch on each device: :func:`train_batches` over
    ``accumulate_grad_batches`` (Lightning steps on an epoch's last, partial group too)."""
    return math.ceil(train_batches(config) / config.trainer.get("accumulate_grad_batches", 1))


def check_batches(config: RunConfig) -> None:
    """What Lightning refuses only when a loop starts: a batch limit that is neither a count
    nor a fraction in [0, 1], a fraction that leaves a split no batch, a ``val_check_interval``
    in batches longer than the epoch; and a ``min_epochs`` or ``min_steps`` beyond the run's
    epochs or steps (silently trained past them)."""
    options, batches = config.trainer, split_batches(config)
    for name, split in LIMITS.items():
        limit = options.get(name)
        if type(limit) is not float:
            continue
        if not 0.0 <= limit <= 1.0:  # nan and inf too
            raise ConfigError(f"trainer: {name} {limit} is neither a count of batches nor a "
                              f"fraction in [0, 1]")
        if limit > 0 and batches[split] and int(batches[split] * limit) < 1:
            raise ConfigError(f"trainer: {name} {limit} of the {batches[split]} {split} "
                              f"batches leaves none; give a count of batches or a larger "
                              f"fraction")
    train = train_batches(config)
    min_epochs = options.get("min_epochs")
    if min_epochs is not None and min_epochs > config.epochs:
        raise ConfigError(f"trainer: min_epochs {min_epochs} is more than the run's "
                          f"{config.epochs} epochs (--epochs)")
    steps = config.epochs * optimizer_steps_per_epoch(config)
    min_steps = options.get("min_steps")
    if type(min_steps) is int and min_steps > steps:
        raise ConfigError(f"trainer: min_steps {min_steps} is more than the run's {steps} "
                          f"optimizer steps ({config.epochs} epochs of {train} batches)")
    interval = options.get("val_check_interval")
    if type(interval) is not int or options.get("check_val_every_n_epoch", 1) is None:
        return
    if interval > train:
        raise ConfigError(f"trainer: val_check_interval {interval} is more than the {train} "
                          f"training batches of an epoch; give at most {train}, a fraction "
                          f"of the epoch (0.5), or check_val_every_n_epoch: null")


#: Options that only change how the validation split is read.
VALIDATION_OPTIONS = ("check_val_every_n_epoch", "val_check_interval", "limit_val_batches",
                      "num_sanity_val_steps")


def check_inert(config: RunConfig) -> None:
    """Refuse an option that would change nothing (accepted, it read as if it had): validation
    settings without a validation split, a validation every N epochs never reached, a clipping
    algorithm without a clipping value."""
    options = config.trainer
    given = [name for name in VALIDATION_OPTIONS if name in options]
    if given and not config.val_size:
        raise ConfigError(f"trainer: {given[0]} with --val-size 0: the run has no validation "
                          f"split (hold one out with --val-size N)")
    every = options.get("check_val_every_n_epoch")
    if type(every) is int and every > config.epochs:
        raise ConfigError(f"trainer: check_val_every_n_epoch {every} is more than the run's "
                          f"{config.epochs} epochs (--epochs): it would never validate")
    if "gradient_clip_algorithm" in options and not options.get("gradient_clip_val"):
        raise ConfigError(f"trainer: gradient_clip_algorithm "
                          f"{options['gradient_clip_algorithm']!r} without gradient_clip_val: "
                          f"nothing is clipped; give gradient_clip_val too")


def check_monitors(callbacks: list, config: RunConfig) -> None:
    """A callback that monitors a metric (EarlyStopping, ModelCheckpoint) must name one the
    run logs (Lightning finds out only after the first epoch)."""
    from .module import MONITORABLE

    validates = config.val_size and config.trainer.get("limit_val_batches") not in (0, 0.0)
    logged = MONITORABLE["train"] + (MONITORABLE["val"] if validates else ())
    for callback in callbacks:
        monitor = getattr(callback, "monitor", None)
        if monitor is not None and monitor not in logged:
            raise ConfigError(f"trainer: {type(callback).__name__} monitors {monitor!r}, which "
                              f"this run does not log; valid choices: {', '.join(logged)}")


def epoch_checkpoint(dirpath: Path) -> ModelCheckpoint:
    """The run's own checkpoint, ``dirpath/last.ckpt``, rewritten at the end of every training
    epoch (without a monitor, top-1 is the newest), after the epoch's validation and the other
    callbacks. Lightning would otherwise save after each validation, which with
    ``check_val_every_n_epoch > 1`` or a fractional ``val_check_interval`` is not once an epoch
    nor at its end."""
    return ModelCheckpoint(dirpath=dirpath, filename=LAST.removesuffix(".ckpt"), save_top_k=1,
                           every_n_epochs=1, enable_version_counter=False,
                           save_on_train_epoch_end=True)


def default_strategy(config: RunConfig) -> str:
    """DDP when the run trains on several devices (``--trainer.strategy`` overrides it)."""
    return "ddp" if device_count(config) > 1 else "auto"


def cluster_environment() -> list:
    """The cluster environment plugin of a run's Trainer in a SLURM job (Lightning's own
    ``LightningEnvironment``, in a list for ``plugins``), else none (Lightning's choice, as
    torchrun's). A run is one task that launches its own ranks; Lightning's SLURMEnvironment
    takes the ranks for ``srun``'s tasks instead: ``--devices 2`` in a one-task job trained on
    one device ("Starting with 1 processes", ``"devices": 1`` in its results), and its SIGUSR1
    auto-requeue wrote ``hpc_ckpt_N.ckpt`` into the run's folder, called ``scontrol requeue``,
    and the run's test then loaded that checkpoint, testing the model of the signal's batch
    instead of the trained one (SIGUSR1 stops a run as SIGTERM does:
    :func:`~lotterynet.process_lifetime.stopping_on_sigterm`)."""
    from lightning_fabric.plugins.environments import LightningEnvironment

    return [LightningEnvironment()] if in_slurm_task() else []


#: What Lightning's ``deterministic=True`` sets besides torch's flags.
CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"


@contextlib.contextmanager
def keeping_torch_flags():
    """torch's process-wide flags as they were before the block (a run, or the Trainer that
    :func:`check_trainer_options` builds), whose ``--trainer.deterministic`` /
    ``--trainer.benchmark`` Lightning's Trainer sets for good
    (``torch.use_deterministic_algorithms``, ``cudnn.benchmark`` and :data:`CUBLAS_ENV`): a
    notebook's later GPU code raised on an op with no deterministic implementation. (A stack
    takes no Trainer options.)"""
    algorithms = (torch.are_deterministic_algorithms_enabled(),
                  torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    env = {CUBLAS_ENV: os.environ.get(CUBLAS_ENV)}
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(algorithms[0], warn_only=algorithms[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
        put_back_environment(env)


def check_trainer_options(config: RunConfig) -> None:
    """Refuse, as one :class:`ConfigError` line, any Trainer option that Lightning would
    refuse: names and class paths here, values by building (not running) the Trainer."""
    from .run_dir import run_dir_of  # (it imports the models and tickets: only when checked)

    kwargs = trainer_options(config.trainer, run_dir_of(config))  # built, never used
    if config.wandb and any(isinstance(x, WandbLogger) for x in kwargs.get("logger", [])):
        raise ConfigError("trainer: logger WandbLogger beside --wandb would log every metric "
                          "twice into the run's W&B run; drop it and give its project, entity, "
                          "group, tags or notes as --wandb-project, --wandb-entity, …")
    check_batches(config)
    check_monitors(kwargs.get("callbacks", []), config)
    kwargs.setdefault("devices", config.devices)
    kwargs.setdefault("strategy", default_strategy(config))
    try:
        with lightning_info_off(), keeping_torch_flags():  # (it sets them)
            trainer = pl.Trainer(accelerator=lightning_accelerator(config.accelerator),
                                 precision=config.precision, max_epochs=config.epochs, **{
                                     "enable_progress_bar": False, "enable_model_summary": False,
                                     "plugins": cluster_environment(), **kwargs,
                                     "logger": False, "callbacks": [
                                         epoch_checkpoint(Path(CHECKPOINTS)),
                                         *kwargs.get("callbacks", [])]})
    except Exception as err:  # noqa: BLE001 - Lightning's own check of the values
        given = {k: config.trainer[k] for k in config.trainer
                 if k not in CLASS_OPTIONS} or config.trainer
        raise ConfigError(f"trainer options {given!r} refused by Lightning: "
                          f"{one_line(err)}") from None
    # (torch's DistributedDataParallel refused it as the training started, on every rank)
    if (kwargs.get("sync_batchnorm") and trainer.num_devices > 1
            and trainer.strategy.root_device.type == "cpu"):
        raise ConfigError(f"trainer sync_batchnorm true on {trainer.num_devices} CPU devices: "
                          f"torch's SyncBatchNorm runs on CUDA GPUs only; leave it out on the "
                          f"CPU")
    check_inert(config)
    if kwargs.get("gradient_clip_val") and config.precision.endswith("-mixed") and \
            config.optimizer == "sgd":  # (Lightning raises at the first clipped step)
        raise ConfigError(f"trainer gradient_clip_val {kwargs['gradient_clip_val']!r} with "
                          f"--precision {config.precision} and --optimizer sgd: Lightning does "
                          f"not clip the gradients of the fused SGD under mixed precision; use "
                          f"--optimizer adam or adamw, or --precision 32-true or bf16-true")
