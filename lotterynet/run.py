"""One training run from a :class:`~lotterynet.config_schema.RunConfig`: build the data and the
model, train with Lightning (checkpoint every epoch), test once, write ``results.json``.

:func:`run` returns the results dict; the sweep runs many configs through it.

A run's parts, a module each: its folder and the files it ends with (:mod:`lotterynet.run_dir`),
its Lightning callbacks and checkpoint IO (:mod:`lotterynet.run_callbacks`), and what it says of
how it goes on when it stops or fails (:mod:`lotterynet.run_stops`); this module builds the run
(its model's spec, its data, its module and Trainer, checked before anything is written) and
runs it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import re
import subprocess
import sys
from dataclasses import replace
from functools import cache, partial
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor

from . import __version__
from .archs import FROZEN_CONV_INIT
from .checkpointing import (
    CHECKPOINTS,
    LAST,
    Resumed,
    load_checkpoint,
    remove_stale_temp_files,
    stored_config,
)
from .config import RESUMABLE, changed_fields
from .config_checks import read_options
from .config_schema import WIDE, RunConfig, examples_per_device, lightning_accelerator
from .datamodule import TensorDataModule
from .distributions import float32_draws
from .errors import ConfigError, memory_refused, resume_flag
from .hardware_checks import check_relaunchable
from .loggers import (
    check_wandb_environment,
    end_open_wandb,
    ending_wandb_runs,
    finish_wandb,
    make_loggers,
    reporting_wandb_failure,
)
from .machine import cpu_name, is_launched_worker
from .memory import check_fits, memory_needed
from .models import split_arch
from .module import EdgePopupModule, layer_densities, mask_digest
from .optim import optim_settings
from .params import count_params, kept_params
from .process_lifetime import (
    SigtermStop,
    put_back_environment,
    stop_all_ranks_on_sigterm,
    stopping_on_sigterm,
    tying_launched_ranks,
)
from .quiet import quiet_lightning
from .resumable import check_resumable
from .run_callbacks import (
    CheckedCheckpointIO,
    EpochLines,
    EpochTimer,
    RNGState,
    StopLaunchedRanks,
    StopOnDivergence,
    check_callback_states,
)
from .run_dir import (
    RESULTS,
    check_own_run,
    claim_run_dir,
    clear_previous_run,
    holding,
    holds_files,
    new_run_id,
    resumed_out,
    run_dir_of,
    stored_run_id,
    write_json_atomic,
    write_ticket,
)
from .run_stops import (
    START_OVER,
    after_wandb_failed,
    history_left_behind,
    needs_less,
    reporting_interrupts,
    reporting_interrupts_before_fit,
    reporting_out_of_memory,
    reporting_write_failure,
    run_goes_on,
)
from .structures import STRUCTURES, without_ignored_options
from .trainer_options import (
    cluster_environment,
    default_strategy,
    epoch_checkpoint,
    keeping_torch_flags,
    one_line,
    optimizer_steps_per_epoch,
    trainer_options,
)
from .widen import maskable_count, wide_width


def model_spec(config: RunConfig, data: TensorDataModule) -> dict:
    """``build_model`` arguments for the config; ``wide`` becomes the dense structure at the width
    that matches the ``match`` structure's maskable count. Without the structure options that
    the structure built does not read (a config file's ``activation`` under ``--structure
    dense``), which its layers would refuse."""
    name, family_kwargs = split_arch(config.arch)
    layer_options = dict(structure=config.structure, sparsity=config.sparsity,
                         pairs=config.pairs, activation=config.activation, init=config.init,
                         shared=config.shared, hidden=config.hidden, seed=config.seed)
    if config.score_init != "edgepopup":  # (left out at its default, as in older tickets)
        layer_options["score_init"] = config.score_init
    if family_kwargs:  # e.g. timm:<model>: an existing model, converted layer by layer
        given = {key: getattr(config, key) for key in ("model_kwargs", "exclude")
                 if getattr(config, key)}  # (left out when unset, as in older specs)
        return without_ignored_options(dict(
            name=name, **family_kwargs, **layer_options, **given, in_chans=data.in_channels,
            num_classes=data.num_classes, img_size=data.image_size))
    spec = dict(name=name, **layer_options, in_channels=data.in_channels,
                image_size=data.image_size, num_classes=data.num_classes)
    if config.subnet_convs:
        spec["subnet_convs"] = True
    if config.fan_in != "hidden":
        spec["fan_in"] = config.fan_in
    if config.conv_init is not None:
        spec["conv_init"] = config.conv_init
    if config.train_weights:
        spec.update(trained=True, structure="dense")
    elif config.structure == WIDE:
        kwargs = {k: v for k, v in spec.items() if k != "name"}
        target = maskable_count(config.arch, **without_ignored_options(
            {**kwargs, "structure": config.match, "sparsity": 0.0}))
        dense = without_ignored_options({**kwargs, "structure": "dense"})
        spec.update(structure="dense", width=wide_width(config.arch, target, **dense))
    return without_ignored_options(spec)


def device_name(trainer: pl.Trainer) -> str:
    """What ``results.json`` names as the run's ``device``: the GPU's name, or the CPU's with
    the threads torch computes on."""
    device = trainer.strategy.root_device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({torch.get_num_threads()} threads)"


#: The folder that holds the lotterynet package: a git checkout's root where it runs from one.
CHECKOUT = Path(__file__).resolve().parent.parent


@cache
def versions() -> dict:
    """What made a run's numbers besides its config and ``device``, as ``results.json``'s
    ``versions`` records it.

    On the CPU the same config gives the same numbers bit for bit only under the same torch
    build. Another build sums in another order: other last digits, which training grows.

    The CPU's vector instructions that torch's kernels use (``cpu_capability``: AVX2, AVX512,
    ...) choose their order of sums too. ``device`` names only the CPU's brand on many clouds'
    machines (``AMD EPYC``).

    The code is named by the commit of the git checkout lotterynet runs from. It is None where
    lotterynet runs from none (as installed); uncommitted changes are not recorded. The code is
    also named by lotterynet's own ``__version__``, pyproject.toml's. (The installed package's
    metadata would name the installed copy, not a checkout on ``PYTHONPATH``.) The version
    alone names no change."""
    return {"lotterynet": __version__, "commit": checkout_commit(CHECKOUT),
            "torch": torch.__version__, "pytorch_lightning": pl.__version__,
            "python": platform.python_version(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def checkout_commit(root: Path) -> str | None:
    """The commit checked out in ``root`` (``git rev-parse HEAD``, git's own reading of a
    worktree or a packed ref), None where ``root`` is no git checkout or git cannot say (not
    installed, a repository it refuses as another user's)."""
    if not (root / ".git").exists():
        return None
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # (a hook's)
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], env=env,
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and re.fullmatch("[0-9a-f]{40,64}", commit) else None


@contextlib.contextmanager
def refusing_unbuildable(arch: str):
    """A model the config cannot build (a fixed-size group that keeps nothing, a structure
    option the architecture lacks) or whose tensors do not fit in memory (``--pairs 1000000``)
    is a :class:`ConfigError` naming ``arch``. Wrap the specs too: a wide net's width is measured
    on the built structured net."""
    try:
        yield
    except (TypeError, ValueError, AssertionError, ArithmeticError, LookupError, RuntimeError,
            MemoryError) as err:  # (timm asserts, divides by and looks up its arguments)
        size = memory_refused(err)
        if size is not None:
            raise ConfigError(f"cannot build {arch!r} with this config: its tensors do not fit "
                              f"in this machine's memory{size}") from None
        said = str(err) if isinstance(err, (TypeError, ValueError)) else \
            f"{type(err).__name__}: {str(err) or 'no message'}"
        raise ConfigError(f"cannot build {arch!r} with this config: {said}") from None


def params_metrics(counts: dict, densities: dict) -> dict:
    """What a run logs at step 0: its maskable and kept counts and each layer's density."""
    return {"params/maskable": counts["maskable"], "params/kept": kept_params(counts),
            **{f"density/{k}": v for k, v in densities.items()}}


def data_module(config: RunConfig) -> TensorDataModule:
    """The run's data: its data set, folder, batches, held-out split, seed and augmentation."""
    return TensorDataModule(config.dataset, config.data_dir, batch_size=config.batch_size,
                            val_size=config.val_size, limit_train=config.limit_train,
                            seed=config.seed, augment=config.augment,
                            download=config.download)


def build_module(config: RunConfig, data: TensorDataModule,
                 run_id: str | None = None) -> EdgePopupModule:
    """The run's module, each refusal one line before anything is written: a config it cannot
    build (:func:`refusing_unbuildable`: its spec, its size, its build), tensors that would not
    fit in memory (:func:`~lotterynet.memory.check_fits`, before the build), a training batch
    of one example (the last, or every one) for a batch norm (:func:`check_last_batch`), a timm
    model that does not map the data's images to logits (:func:`check_logits`)."""
    optim = optim_settings(config)
    with refusing_unbuildable(config.arch):
        spec = model_spec(config, data)
        need = memory_needed([(spec, optim)], config)
    check_fits(f"{config.arch} {spec['structure']}", need, config)
    with refusing_unbuildable(config.arch):
        module = EdgePopupModule(spec, optim, config.to_dict(), cuda_graphs=config.cuda_graphs,
                                 run_id=run_id)
    check_last_batch(config, module.model)
    if split_arch(config.arch)[1]:
        check_logits(config, module.model, data)
    return module


def check_logits(config: RunConfig, model: torch.nn.Module, data: TensorDataModule) -> None:
    """A timm model (its ``model_kwargs`` may change what it returns: ``features_only``) maps
    a batch of the data set's images to ``(batch, classes)`` logits, checked on two blank
    images before anything is written rather than at the first loss. In evaluation mode, then
    in training mode (what only training runs: drop path, its rate), with autograd on (no mask
    cache is kept); the batch norms' statistics are put back."""
    side = data.image_size
    x = torch.zeros(2, data.in_channels, side, side)
    training, buffers = model.training, [b.clone() for b in model.buffers()]
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            out = model.eval()(x)
            model.train()(x)
    except (RuntimeError, TypeError, ValueError, AssertionError) as err:
        raise ConfigError(f"{config.arch} with this config cannot take {config.dataset}'s "
                          f"{data.in_channels}x{side}x{side} images: {one_line(err)}") from None
    finally:
        model.train(training)
        with torch.no_grad():
            for buffer, saved in zip(model.buffers(), buffers):
                buffer.copy_(saved)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (2, data.num_classes):
        raise ConfigError(f"{config.arch} with this config gives {shape} for a batch of 2 "
                          f"{config.dataset} images, not logits of shape (2, "
                          f"{data.num_classes}); check --model-kwargs")


def check_last_batch(config: RunConfig, model: torch.nn.Module) -> None:
    """Batch normalisation cannot train on a batch of one example (its variance is 0/0 where
    it sees one value per channel: a timm ResNet's last stage on MNIST's 28×28): refuse a split
    whose last batch, or a batch size whose every batch, would hold one, before training
    reaches it (``--batch-size 1`` ran into torch's "Expected more than 1 value per channel
    when training" traceback)."""
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    examples = examples_per_device(config)
    if config.batch_size == 1:
        raise ConfigError(f"--batch-size 1: every training batch would hold 1 example, on which "
                          f"{config.arch}'s batch norm cannot train; use a batch size of 2 or "
                          f"more")
    if examples % config.batch_size == 1:
        raise ConfigError(f"the last training batch would hold 1 example ({examples:,} "
                          f"examples, batch size {config.batch_size}), on which "
                          f"{config.arch}'s batch norm cannot train; change --batch-size or "
                          f"--limit-train")


def shows_progress_bar(config: RunConfig) -> bool:
    """``--progress-bar`` / ``--no-progress-bar``, or by default whether the output is a
    terminal (a bar redrawn in a log file is thousands of lines; one line per epoch instead)."""
    return sys.stdout.isatty() if config.progress_bar is None else config.progress_bar


def make_trainer(config: RunConfig, run_dir: Path, loggers, timer: EpochTimer,
                 callbacks: tuple = (), resumed: Resumed | None = None) -> pl.Trainer:
    """The Trainer of a run (or of a stack, which adds its ``callbacks``, run after the epoch
    timer; the checkpoint is saved after them, at the end of the training epoch: Lightning
    runs checkpoint callbacks last; the epoch's lines are printed then, :class:`EpochLines`).
    ``resumed``: see :class:`CheckedCheckpointIO`."""
    checkpoint = epoch_checkpoint(run_dir / CHECKPOINTS)
    options = trainer_options(config.trainer, run_dir)  # the user's, over the defaults below
    trainer = pl.Trainer(**{
        "max_epochs": min(config.stop_after or config.epochs, config.epochs),
        "accelerator": lightning_accelerator(config.accelerator), "devices": config.devices,
        "strategy": default_strategy(config), "precision": config.precision,
        "num_sanity_val_steps": 0, "enable_model_summary": False,
        "enable_progress_bar": shows_progress_bar(config),
        # at least once per epoch (Lightning counts optimizer steps)
        "log_every_n_steps": max(1, min(50, optimizer_steps_per_epoch(config))),
        **({} if config.val_size else {"limit_val_batches": 0}), **options,  # no val split
        "logger": [*loggers, *options.get("logger", [])],
        # (the run's checkpoint last, after a checkpoint callback of the user's: Lightning runs
        # them in this order, and the run's holds the state the user's has then; the epoch's
        # lines once it is written)
        "callbacks": [RNGState(), StopLaunchedRanks(), timer, *callbacks,
                      *options.get("callbacks", []), checkpoint, EpochLines()],
        "plugins": [CheckedCheckpointIO(resumed), *cluster_environment()],
        "default_root_dir": run_dir})
    stop_all_ranks_on_sigterm(trainer)
    # Lightning resumes a fit bounded by max_steps as if from within an epoch, whatever the
    # checkpoint: from the run's, saved at an epoch's end, it called that epoch's end hooks
    # again (the epoch timer failed) and counted the epoch twice (it stopped an epoch early)
    trainer.fit_loop._iteration_based_training = lambda: False
    return trainer


def finished(trainer: pl.Trainer, config: RunConfig) -> bool:
    """Trained to the end, or stopped by a Trainer option (EarlyStopping, ``max_time``,
    ``max_steps``); not when stopped by ``--stop-after`` or interrupted."""
    if trainer.interrupted:
        return False
    stopped_by_option = trainer.should_stop or (  # (in --stop-after's epoch too)
        trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps)
    stopped_by_stop_after = (config.stop_after is not None
                             and config.stop_after <= trainer.current_epoch < config.epochs)
    return stopped_by_option or not stopped_by_stop_after


def epochs_completed(trainer: pl.Trainer) -> int:
    """Epochs trained to their last batch: Lightning counts an epoch that a callback stopped
    part way (``max_time``) as done."""
    partial = not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
    return trainer.current_epoch - (partial and trainer.current_epoch > 0)


#: What ``pl.seed_everything`` sets besides the generators (a DDP rank's seed is read from it).
SEED_ENV = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")


@contextlib.contextmanager
def keeping_global_rngs():
    """The caller's global random generators (torch's, CUDA's, numpy's, Python's ``random``)
    and :data:`SEED_ENV` as they were before the block, a run's or a stack's, which seeds them
    (``pl.seed_everything(config.seed)``: what draws from them in training, a timm model's
    dropout, follows the run's seed): a notebook's or a script's later draws are those it would
    have made without the run, not the same ones after every run. CUDA's, where it was not
    started before the block, are seeded again from torch's seed, as CUDA would seed them."""
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    env = {name: os.environ.get(name) for name in SEED_ENV}
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
        if cuda is None:  # (queued until CUDA starts, where it has not)
            torch.cuda.manual_seed_all(torch.initial_seed())
        else:
            torch.cuda.set_rng_state_all(cuda)
        put_back_environment(env)


@contextlib.contextmanager
def training_as_its_own_process():
    """A run or a stack called from the caller's code (a notebook's cell) trains as in
    ``train.py``'s process, whatever the caller's autograd mode and default dtype, both put back
    after it: under ``torch.no_grad()`` Lightning's fit turned autograd on for good, under
    ``torch.inference_mode()`` the first backward raised "element 0 of tensors does not require
    grad", and under ``torch.set_default_dtype(torch.float64)`` the model's float64 tensors met
    float32 batches ("expected m1 and m2 to have the same dtype")."""
    with torch.inference_mode(False), torch.enable_grad(), float32_draws():
        yield


@keeping_global_rngs()
@keeping_torch_flags()
@training_as_its_own_process()
@quiet_lightning()
def run(config: RunConfig, job_type: str | None = None) -> dict:
    """Train and test one configuration; returns (and writes to ``RUN_DIR/results.json``) the
    config, the parameter counts and the final metrics; ``job_type``: its W&B run's (a sweep's
    cell's, :data:`~lotterynet.loggers.CELL_JOB`). SIGTERM stops it with
    :class:`Interrupted` from its start to its results (:class:`~lotterynet.process_lifetime.
    SigtermStop`), also outside Lightning's fit and test. W&B's own errors are one line
    (:class:`~lotterynet.errors.WandbFailed`) saying how it goes on (:func:`after_wandb_failed`)."""
    with tying_launched_ranks(), stopping_on_sigterm() as sigterm:  # (its DDP ranks die with it)
        # (in its fit: reporting_interrupts; a fresh run's folder holds no checkpoint of its
        # own yet, only, with --overwrite, the old run's until it is cleared: the same command
        # starts it over there, as after a stop in its fit before its first checkpoint)
        own = run_dir_of(config) / CHECKPOINTS / LAST if config.resume else None
        with reporting_interrupts_before_fit(own, resumed=config.resume,
                                             nothing=None if config.resume else START_OVER):
            return set_up_and_run(config, sigterm, job_type)


def set_up_and_run(config: RunConfig, sigterm: SigtermStop, job_type: str | None) -> dict:
    """:func:`run` once its SIGTERM handler is installed."""
    check_relaunchable(config)
    if config.wandb:
        check_wandb_environment()
    resumed = None
    if config.resume:
        resumed = (config.resume, load_checkpoint(config.resume))
        check_same_run(resumed, config)
        if not config.out:
            config = replace(config, out=resumed_out(config, resumed))
    run_dir = run_dir_of(config)
    claim_run_dir(run_dir, config)
    check_own_run(resumed)
    for folder in (run_dir, run_dir / CHECKPOINTS):  # what a killed run's writes left (its
        remove_stale_temp_files(folder)  # results, ticket, history, W&B id; its checkpoint)
    pl.seed_everything(config.seed, verbose=False)
    data = data_module(config)
    data.setup()  # a missing or corrupt data set is refused here, before anything is written
    # (a checkpoint written before runs had ids: the resume takes one, kept from then on)
    module = build_module(config, data, resumed and stored_run_id(resumed[1]) or new_run_id())
    if resumed:
        check_resumable(resumed[1], module, config.epochs, config.resume)
        check_callback_states(resumed[1], (RNGState(), EpochTimer()))
    counts = count_params(module.model)
    densities = layer_densities(module.model)
    with holding(run_dir, config):
        if not config.resume and not is_launched_worker() and holds_files(run_dir):
            if not config.overwrite:  # (taken: what a run stopped before a checkpoint left)
                print(f"run directory {str(run_dir)!r} holds only what a run stopped before "
                      f"its first checkpoint left: the run starts over there", flush=True)
            clear_previous_run(run_dir)
        spec, lr = module.hparams.spec, module.hparams.optim["lr"]
        with (reporting_write_failure(partial(run_goes_on, run_dir, config.resume)),
              reporting_wandb_failure(f"run {str(run_dir)!r}: W&B failed to log it",
                                      partial(after_wandb_failed, run_dir, config.resume))):
            loggers = make_loggers(run_dir, wandb_config(config, spec, lr), resumed, job_type)
            return train_and_test(config, run_dir, data, module, loggers, counts, densities,
                                  resumed, sigterm)


def check_same_run(resumed: Resumed, config: RunConfig) -> None:
    """The resumed checkpoint must be of a run of ``config`` (any epochs: a target trains on
    from a longer run's checkpoint): a :class:`ConfigError` naming the first field that differs
    (another data set, optimizer...). train.py builds its config from the checkpoint; this
    guards the runs that do not (``python -m lotterynet.targets --resume``, the Python API)."""
    path, checkpoint = resumed
    stored = stored_config(checkpoint, path)
    changed = changed_fields(stored, config.to_dict(), ignored=(*RESUMABLE, "epochs"))
    if changed:
        raise ConfigError(f"--resume {str(path)!r} is a checkpoint of another run: its "
                          f"{changed[0]} is {stored.get(changed[0])!r}, this run's "
                          f"{getattr(config, changed[0])!r}")


def wandb_config(config: RunConfig, spec: dict, lr: float) -> dict:
    """A run's W&B config (a stack member's too, as its single run's): the structure built
    (``spec``'s: "dense" for a trained baseline, whose config does not read one), its options,
    the distributions it draws from where its config leaves them to a default
    (:func:`drawn_inits`), its learning rate and a wide net's width."""
    width = {"width": spec["width"]} if "width" in spec else {}  # --structure wide's
    read = read_options(config)
    return {"structure": spec["structure"], **read, **drawn_inits(config, spec["structure"], read),
            "lr": lr, **width}


def drawn_inits(config: RunConfig, structure: str, read: dict) -> dict:
    """``init`` and ``conv_init`` as the run draws them where it reads them (``read``) and its
    config leaves them unset (None: a W&B filter on the init would miss the run): ``init``,
    the built ``structure``'s ``default_init`` (a trained baseline's, which only LeNet5's
    frozen convs read, :data:`~lotterynet.archs.FROZEN_CONV_INIT`); ``conv_init``, ``init``,
    else ``FROZEN_CONV_INIT`` (``Layers.frozen_conv``)."""
    drawn = {}
    if "init" in read and config.init is None:
        drawn["init"] = (FROZEN_CONV_INIT if config.train_weights
                         else STRUCTURES.get(structure).default_init)
    if "conv_init" in read and config.conv_init is None:
        drawn["conv_init"] = config.init or FROZEN_CONV_INIT
    return drawn


def train_and_test(config: RunConfig, run_dir: Path, data: TensorDataModule,
                   module: EdgePopupModule, loggers: list, counts: dict, densities: dict,
                   resumed: Resumed | None, sigterm: SigtermStop) -> dict:
    """:func:`run` from the moment its folder is held and its ``loggers`` made: train, test,
    write the results. ``resumed``: the checkpoint of ``config.resume``, checked
    (:class:`CheckedCheckpointIO`). ``sigterm``: the run's handler, asked after fit and test
    for a SIGTERM that Lightning noted too late to act on."""
    with ending_wandb_runs(loggers) as logged_to:
        spec = module.hparams.spec
        if not is_launched_worker():  # (after the last refusal: a refused run prints one line)
            wide = f", width {spec['width']}" if "width" in spec else ""
            print(f"{config.arch} {spec['structure']}{wide}: maskable {counts['maskable']:,}, "
                  f"kept {counts['kept']:,}, frozen {counts['frozen']:,}, "
                  f"trainable {counts['trainable']:,}", flush=True)
            if resumed and (note := history_left_behind(resumed, run_dir, any(
                    getattr(logger, "replays_history", False) for logger in loggers))):
                print(note, flush=True)
        timer = EpochTimer(announce=not shows_progress_bar(config), epochs=config.epochs)
        trainer = make_trainer(config, run_dir, loggers, timer,
                               # the schedule steps once per epoch (module.configure_optimizers),
                               # so once per epoch says all: per step it was logged again for
                               # each accumulated batch
                               callbacks=(LearningRateMonitor(logging_interval="epoch"),
                                          StopOnDivergence()), resumed=resumed)
        logged_to[:] = trainer.loggers
        results = fit_and_test(config, run_dir, data, module, loggers, trainer, timer, counts,
                               densities, sigterm)
    # the run's own W&B run is finished (finish_wandb); one of the user's Trainer options,
    # which Lightning leaves open (a sweep's next cell would log into it), ends with the run
    end_open_wandb(trainer.loggers, 0)
    return results


def fit_and_test(config: RunConfig, run_dir: Path, data: TensorDataModule,
                 module: EdgePopupModule, loggers: list, trainer: pl.Trainer,
                 timer: EpochTimer, counts: dict, densities: dict, sigterm: SigtermStop
                 ) -> dict:
    """:func:`train_and_test` once its ``trainer`` is made (logging to ``loggers``, the run's
    own, and to the user's Trainer options' loggers; ``timer``: its epoch timer)."""
    spec = module.hparams.spec
    for logger in loggers if not config.resume else []:  # a resumed run has logged these
        logger.log_metrics(params_metrics(counts, densities), step=0)
    checkpoint = run_dir / CHECKPOINTS / LAST
    what = f"run {str(run_dir)!r}"
    less = needs_less(config)
    with reporting_interrupts(trainer, checkpoint, resumed=config.resume, nothing=START_OVER), \
            reporting_out_of_memory(trainer, what, less, checkpoint, resumed=config.resume):
        trainer.fit(module, datamodule=data, ckpt_path=config.resume)
        sigterm.stop_if_received()
        if not finished(trainer, config):  # stopped before its end: resumable
            finish_wandb(loggers, {})
            return {"finished": False, "epochs_done": trainer.current_epoch,
                    "run_dir": str(run_dir)}
    to_test = f"resume with {resume_flag(checkpoint)} to test"
    with reporting_interrupts(trainer, checkpoint, to_test, resumed=config.resume), \
            reporting_out_of_memory(trainer, what, less, checkpoint, to_test, config.resume,
                                    testing=True):
        digests = trainer.strategy.all_gather(
            torch.tensor(mask_digest(module.model), dtype=torch.float64))
        tested = trainer.test(module, datamodule=data, verbose=False)[0]
        sigterm.stop_if_received()
        results = {
            "finished": True,
            "config": config.to_dict(),
            "spec": spec,
            "lr": module.hparams.optim["lr"],
            "params": counts,
            "layer_density": densities,
            "test_acc": tested["test/acc"],
            "test_loss": tested["test/loss"],
            "val_acc": timer.metrics.get("val/acc"),
            "val_epoch": timer.val_epoch,  # (check_val_every_n_epoch: maybe before the last)
            "train_acc": timer.metrics.get("train/acc"),
            "epochs_done": epochs_completed(trainer),
            "partial_epoch": timer.partial,  # (then the last of seconds_per_epoch, val_epoch)
            "seconds_per_epoch": timer.seconds,
            "train_seconds": sum(timer.seconds),  # every epoch's, those before a resume too
            "device": device_name(trainer),
            "versions": versions(),
            "devices": trainer.world_size,
            "mask_digests": [float(d) for d in digests.reshape(-1)],
            "run_dir": str(run_dir),
            "wandb_dir": None,  # (its W&B run's folder, once that has ended)
        }
        ticket = write_ticket(module.model, run_dir) if trainer.is_global_zero else None
        summary = {"test/acc": results["test_acc"], "params/kept": kept_params(counts),
                   "val/acc_best": timer.best_val_acc}
        if trainer.is_global_zero:  # (first: a run whose W&B logging fails at its end is
            write_json_atomic(results, run_dir / RESULTS)  # finished all the same)
        results["wandb_dir"] = finish_wandb(
            loggers, {k: v for k, v in summary.items() if v is not None},
            None if ticket is None else {"": ticket})
        if results["wandb_dir"] is not None and trainer.is_global_zero:  # (where its run is)
            write_json_atomic(results, run_dir / RESULTS)
        return results
