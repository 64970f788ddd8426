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
import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger

from .config import ConfigError, RunConfig

#: Options the run itself decides, and why.
OWNED = {
    "default_root_dir": "files go to --out",
    "plugins": "checkpoints are written atomically by lotterynet's own plugin",
    "enable_checkpointing": "every run checkpoints every epoch (RUN/checkpoints/last.ckpt)",
}
#: Options given as class paths: the base class each object must have, and where a bare name
#: is looked up.
CLASS_OPTIONS = {"callbacks": (Callback, "pytorch_lightning.callbacks"),
                 "logger": (Logger, "pytorch_lightning.loggers")}
EXAMPLES = {"pytorch_lightning.callbacks": "EarlyStopping",
            "pytorch_lightning.loggers": "TensorBoardLogger"}


def _count(value) -> bool:
    return type(value) is int and value > 0


def _non_negative(value) -> bool:
    return type(value) in (int, float) and value >= 0


#: Values that Lightning takes at construction and would only refuse during training.
VALUE_CHECKS = {"accumulate_grad_batches": (_count, "a positive integer"),
                "gradient_clip_val": (_non_negative, "a number >= 0"),
                "log_every_n_steps": (_count, "a positive integer")}


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
                set(item) - {"class_path", "init_args"}:
            raise ConfigError(f"trainer: {option} entry {item!r} must be a mapping "
                              f"{{class_path: NAME, init_args: {{...}}}}")
        cls = import_class(item["class_path"], package)
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise ConfigError(f"trainer: {option} class_path {item['class_path']!r} is not a "
                              f"{base.__module__}.{base.__name__}")
        init_args = dict(item.get("init_args") or {})
        if "save_dir" in inspect.signature(cls).parameters:
            init_args.setdefault("save_dir", str(run_dir))
        try:
            objects.append(cls(**init_args))
        except Exception as err:  # noqa: BLE001 - any constructor error is the user's value
            raise ConfigError(f"trainer: {option} {item['class_path']!r} with init_args "
                              f"{init_args!r}: {one_line(err)}") from None
    return objects


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
        test, what = VALUE_CHECKS.get(key, (None, ""))
        if test and not test(value):
            raise ConfigError(f"trainer: {key} must be {what}, got {value!r}")
        kwargs[key] = instantiate(key, value, run_dir) if key in CLASS_OPTIONS else value
    return kwargs


@contextlib.contextmanager
def quiet_logger(name: str):
    """Lightning's info lines ("GPU available: ...") off while the block runs."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_trainer_options(config: RunConfig) -> None:
    """Refuse, as one :class:`ConfigError` line, any Trainer option that Lightning would
    refuse: names and class paths here, values by building (not running) the Trainer."""
    kwargs = trainer_options(config.trainer, Path(config.out or "runs"))  # built, never used
    kwargs.setdefault("devices", config.devices)
    kwargs.setdefault("strategy", "ddp" if config.devices > 1 else "auto")
    try:
        with quiet_logger("pytorch_lightning.utilities.rank_zero"):
            pl.Trainer(accelerator=config.accelerator, precision=config.precision,
                       max_epochs=config.epochs, **{**kwargs, "logger": False},
                       enable_checkpointing=False, enable_progress_bar=False,
                       enable_model_summary=False)
    except Exception as err:  # noqa: BLE001 - Lightning's own check of the values
        given = {k: config.trainer[k] for k in config.trainer if k not in CLASS_OPTIONS}
        raise ConfigError(f"trainer options {given!r} refused by Lightning: "
                          f"{one_line(err)}") from None
