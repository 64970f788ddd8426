"""The LightningModule: cross-entropy training of whatever ``requires_grad`` in the model — the
scores of the subnet layers (edge-popup), or the weights of the trained dense baseline.

Its hyperparameters are plain dicts (the model spec, the optimizer settings), so checkpoints
load with ``torch.load(weights_only=True)`` and rebuild the model through ``build_model``.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.plugins.precision import MixedPrecision
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.model_helpers import _restricted_classmethod
from torch.optim.lr_scheduler import CosineAnnealingLR
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from .checkpointing import check_restorable, parse_checkpoint, read_checkpoint, source_name
from .config_schema import RunConfig
from .convert_checks import plain_numbers
from .cuda_graphs import StepGraphs
from .datamodule import TensorDataModule
from .errors import CheckpointError
from .layers import SubnetLinear, _SubnetLayer
from .masking import masked_weights
from .models import MODELS, build_model, spec_difference, spec_value
from .optim import check_optim, optim_settings, optimizer_and_schedule
from .stack_model import frozen_prefix
from .ticket_rebuild import rebuild

STAGES = ("train", "val", "test")
#: Each stage's mean loss over an epoch; ``train/loss`` itself is the loss of a step, of
#: every step whose logs Lightning writes (each ``log_every_n_steps``-th).
EPOCH_LOSS = {"train": "train/loss_epoch", "val": "val/loss", "test": "test/loss"}
#: What a training run logs that a callback can monitor (``lr``: the learning-rate monitor).
MONITORABLE = {"train": ("train/loss", "train/loss_epoch", "train/acc", "lr"),
               "val": ("val/loss", "val/acc")}


#: The hooks that take a batch the data module may serve through the model's frozen prefix
#: (:meth:`EdgePopupModule.setup`): a subclass that overrides one of them gets the images.
ENCODED_HOOKS = ("forward", "training_step", "validation_step", "test_step", "predict_step")


def default_optim(arch: str) -> dict:
    """What :class:`EdgePopupModule` takes for the optimizer keys it is not given: those of
    ``train.py --arch <arch>`` (the recipe's ``lr`` of ``arch``,
    :func:`~lotterynet.archs.recipe_lr`, and :class:`~lotterynet.config_schema.RunConfig`'s
    defaults), but ``epochs`` None: the cosine schedule spans the Trainer's ``max_epochs``."""
    return {**optim_settings(RunConfig(arch=arch)), "epochs": None}


class FloatMean(MeanMetric):
    """A mean whose sums keep their float32 whatever dtype the module is moved to: a half
    precision Trainer (``bf16-true``, ``16-true``) converts the module with ``.to(dtype)``,
    which torchmetrics lets reach metric states. In bfloat16 an epoch's sums stopped growing
    (a full MNIST epoch of loss 0.3 read 0.5), in float16 they overflowed to inf."""

    def _apply(self, fn, exclude_state=()):
        return super()._apply(lambda t: fn(t).to(t.dtype), exclude_state)


class ExactAccuracy(MulticlassAccuracy):
    """Micro accuracy as the quotient of its counts in float64: correct / examples as Python
    divides them, as a stack member's (:func:`~lotterynet.stack_module._epoch_metrics`), where
    torchmetrics divides in float32 (0.8003000020980835 for 8003 of 10,000). A cell's results
    and history then hold the same number run singly or stacked."""

    def compute(self) -> torch.Tensor:
        tp, _, _, fn = self._final_state()
        return tp.sum().double() / (tp + fn).sum().double()


def check_same_module(checkpoint: dict, spec: dict, optim: dict | None, path) -> None:
    """Refuse, in one :class:`~lotterynet.errors.CheckpointError` naming the first option that
    differs, a checkpoint (read from ``path``) of a module of another model than ``spec``
    builds or, ``optim`` given (a fit resuming it), of another optimizer: the state dict of
    another sparsity or seed loaded silently (``k`` and the frozen weights are in it), another
    optimizer's state failed deep inside torch (``KeyError: 'step'``), and another ``lr`` was
    replaced by the restored one. Another ``epochs`` is taken (a target finishes a longer
    run's constant schedule), the restored schedule checked by
    :meth:`EdgePopupModule.on_train_start`."""
    saved = checkpoint.get("hyper_parameters")
    if not isinstance(saved, dict) or not isinstance(saved.get("spec"), dict):
        return
    what, differs = "spec", spec_difference(saved["spec"], spec)
    if differs is None and optim is not None and isinstance(saved.get("optim"), dict):
        what, differs = "optim", next(((k, saved["optim"].get(k), v) for k, v in optim.items()
                                       if k != "epochs" and saved["optim"].get(k) != v), None)
    if differs is not None:
        key, theirs, mine = differs
        named = f" {str(path)!r}" if path is not None else ""
        raise CheckpointError(f"checkpoint{named} was saved with {what}[{key!r}] = {theirs!r}, "
                              f"not {mine!r}: EdgePopupModule.load_from_checkpoint(path) builds "
                              f"the module it was saved with")


def unwrapped(checkpoint_io):
    """The checkpoint IO that Lightning's wrappers (``AsyncCheckpointIO``) hand their loads to,
    or ``checkpoint_io`` itself."""
    while getattr(checkpoint_io, "checkpoint_io", None) is not None:
        checkpoint_io = checkpoint_io.checkpoint_io
    return checkpoint_io


def check_images(spec: dict, data: TensorDataModule) -> None:
    """The model ``build_model(**spec)`` builds takes the data set's images: its channels
    (``in_channels``, timm's ``in_chans``) and, for the paper architectures, their side
    (``image_size``; timm drops an ``img_size`` that a model does not take, and a ViT's own
    check names it); else one line naming the argument to build it with (a model of other
    images failed at its first step, in a convolution or a matrix product)."""
    for key, have in (("in_channels", data.in_channels), ("in_chans", data.in_channels),
                      ("image_size", data.image_size)):
        value = spec_value(spec, key)
        if value is not None and value != have:
            raise ValueError(f"the model's {key} is {value!r}, the data set {data.dataset!r} "
                             f"has {have}: build it with {key}={have}")


class EdgePopupModule(pl.LightningModule):
    """Edge-popup training of a registered architecture with any ``pl.Trainer``::

        module = EdgePopupModule({"name": "fc2", "structure": "subsetsum", "sparsity": 0.9},
                                 {"optimizer": "adam", "lr": 1e-3})
        pl.Trainer(max_epochs=5).fit(module, datamodule=TensorDataModule("mnist"))
    """

    def __init__(self, spec: dict, optim: dict | None = None, config: dict | None = None,
                 cuda_graphs: bool = True, run_id: str | None = None):
        """``spec``: ``build_model`` arguments, ``{"name": arch, **kwargs}``; ``optim``: any of
        ``optimizer``, ``scheduler``, ``lr``, ``momentum``, ``weight_decay``, ``epochs``
        (:func:`default_optim` of the architecture for the others); ``config``: the run's
        whole configuration, kept in the checkpoint for ``--resume``; ``cuda_graphs``: replay
        each training step's forward and backward from a CUDA graph where one may be used
        (:mod:`lotterynet.cuda_graphs`); ``run_id``: the ``train.py`` run it trains, kept in its
        checkpoints and its folder's ``hparams.yaml``, so that a resume tells its run's
        checkpoint from another run's copied there (:func:`~lotterynet.run_dir.check_own_run`)."""
        super().__init__()
        if not isinstance(spec, dict) or "name" not in spec:
            raise ValueError(f"spec holds build_model's arguments with the architecture as "
                             f"'name' (one of {', '.join(MODELS.names())}), got {spec!r}")
        defaults = default_optim(str(spec["name"]))
        unknown = sorted(set(optim or {}) - set(defaults))
        if unknown:
            raise ValueError(f"unknown optimizer setting {unknown[0]!r}; valid keys: "
                             f"{', '.join(defaults)}")
        optim = {**defaults, **(optim or {})}
        check_optim(optim)
        # The hyperparameters with numpy numbers as Python's, which a checkpoint loaded with
        # torch.load(weights_only=True) holds (build_model makes its model.spec so itself).
        spec, optim = plain_numbers(spec), plain_numbers(optim)
        self.num_classes = spec_value(spec, "num_classes")
        if self.num_classes is None:
            raise ValueError(f"architecture {spec['name']!r} takes no num_classes, which the "
                             f"module's accuracy needs: give its builder a num_classes argument")
        self.save_hyperparameters()
        self.model = build_model(**spec)
        # ModuleDict keys may not shadow Module attributes such as ``train``: key "<stage>_".
        # No check that reads a GPU tensor on the host in every step: torchmetrics' input
        # validation (torch.unique) and NaN filter (nans.any()) would each wait for the GPU.
        self.acc = torch.nn.ModuleDict({f"{s}_": ExactAccuracy(
            self.num_classes, average="micro", validate_args=False) for s in STAGES})
        self.loss = torch.nn.ModuleDict(
            {f"{s}_": FloatMean(nan_strategy="disable") for s in STAGES})
        self._handed: set[str] = set()  # stages whose metrics Lightning holds this epoch
        self._loss_logged = True  # whether the last training step logged its loss
        self._monitored_loss = False  # whether a callback monitors the step loss (on_fit_start)
        self._after_prefix: tuple[torch.nn.Module, ...] | None = None  # set by setup
        self._image_shape: torch.Size | None = None  # the data's own shape, with the prefix
        self.graphs = StepGraphs(cuda_graphs)

    @property
    def lr(self) -> float:
        """The optimizer's ``lr``, ``hparams.optim['lr']`` (what :meth:`configure_optimizers`
        builds with, and a checkpoint keeps): the attribute that Lightning's
        ``Tuner(trainer).lr_find`` looks for and sets to its suggestion (it found none, and its
        ``attr_name`` cannot name a key of a dict)."""
        return self.hparams.optim["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        optim = {**self.hparams.optim, "lr": plain_numbers(value)}
        check_optim(optim)
        self.hparams.optim = optim

    @_restricted_classmethod  # as Lightning's: called on an instance it loaded nothing into it
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None,
                             strict=None, weights_only=True, **kwargs):
        """Lightning's, for a checkpoint file read as ``train.py --resume`` reads it
        (:mod:`lotterynet.checkpointing`): its integrity digest checked (a run's checkpoint),
        or without one (your own Trainer's) its zip's CRC-32s, then loaded with
        ``torch.load(weights_only=True)`` unless ``weights_only=False`` is given (your choice,
        for a file you trust: one whose callback keeps Python objects in its state); a missing,
        truncated, corrupt or foreign file (a ticket, a dict without the Lightning version
        that Lightning's load reads first), or one holding Python objects that a
        weights-only load refuses (a numpy number), is a one-line
        :class:`~lotterynet.errors.CheckpointError`; so is one whose hyperparameters hold no
        ``spec``, unless ``spec`` is given (a bare ``TypeError`` of ``__init__``'s missing
        argument). Lightning's own loaded a changed byte as a changed weight, and failed on a
        truncated file deep inside torch. A ``spec`` given builds the checkpoint's model
        (it loaded another sparsity's, under its own spec). A file object's bytes, and a URL's
        (``s3://``, ``https://``, ``file://``: read through fsspec, as Lightning reads one), are
        checked alike. (Lightning's takes a file, not the checked contents, and parses the bytes
        again: the contents parsed here are let go first, so that two copies of the
        checkpoint, not three, are in memory at once.)"""
        weights_only = weights_only is not False
        data = read_checkpoint(checkpoint_path, unsealed=True)
        name = source_name(checkpoint_path)
        checkpoint = parse_checkpoint(data, name, weights_only=weights_only)
        check_restorable(checkpoint, name)
        if isinstance(kwargs.get("spec"), dict):  # (Lightning puts it in its place)
            check_same_module(checkpoint, kwargs["spec"], None, name)
        elif ("spec" not in kwargs and hparams_file is None
              and "spec" not in checkpoint.get("hyper_parameters", {})):
            raise CheckpointError(f"checkpoint {name!r} holds no model "
                                  f"spec (no 'spec' in its 'hyper_parameters': not saved from "
                                  f"an EdgePopupModule); give the model's as spec=...")
        del checkpoint
        return super().load_from_checkpoint(io.BytesIO(data), map_location, hparams_file,
                                            strict, weights_only=weights_only, **kwargs)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint of another model (``spec``), or a fit resumed from one of another
        optimizer (``optim``), is refused in one line before Lightning loads it
        (:func:`check_same_module`); so is a Trainer's ``ckpt_path`` whose bytes are not what
        was written (its digest, or its zip's CRC-32s: Lightning read it with ``torch.load``
        alone, and a changed byte in a weight loaded silently). A Trainer with
        :class:`~lotterynet.run_callbacks.CheckedCheckpointIO` (``train.py``'s) checked what it
        loaded, read once, wrapped or not (``AsyncCheckpointIO(CheckedCheckpointIO())``): the
        file is not read again. Loaded without a Trainer (:meth:`load_from_checkpoint`), the
        module takes the dtype of the checkpoint's tensors first (:func:`stored_dtype`)."""
        from .run_callbacks import CheckedCheckpointIO  # (run_callbacks imports this module)

        trainer = self._trainer
        if trainer is None and (dtype := stored_dtype(checkpoint)) is not None:
            self.to(dtype)
        path = trainer.ckpt_path if trainer is not None else None
        checked = trainer is not None and isinstance(unwrapped(trainer.strategy.checkpoint_io),
                                                     CheckedCheckpointIO)
        if path is not None and Path(path).is_file() and not checked:  # (not a remote one)
            read_checkpoint(path, unsealed=True, loading=False)
        fitting = trainer is not None and trainer.state.fn == TrainerFn.FITTING
        check_same_module(checkpoint, self.hparams.spec, self.hparams.optim if fitting else None,
                          path)

    def setup(self, stage: str) -> None:
        """With a :class:`TensorDataModule`, the model's frozen leading modules (LeNet5's random
        convolutions and pools, :func:`~lotterynet.stack_model.frozen_prefix`) run once per example
        of each split, in the data module (:meth:`TensorDataModule.encode_with`), and the steps
        run the rest of the model: the same numbers (bit for bit on the CPU), ~25 % less time
        per LeNet5 step there. Other data (your own loaders), every split of a data module
        that augments its training batches, and the batches of a subclass that overrides a step
        or ``forward`` (:data:`ENCODED_HOOKS`: its own ``self(x)`` ran the whole model on the
        encoded batch, a convolution's error) go through the whole model. (A callback's batch
        hooks get the batch as the step does: encoded, for the module's own steps.)

        The module takes its precision's dtype here (``64-true``: float64), before Lightning
        restores a ``ckpt_path`` into it (Lightning converts it only after): a float64
        checkpoint came back rounded to float32, and a resume drifted from the run."""
        self.trainer.precision_plugin.convert_module(self)
        data, self._after_prefix = self.trainer.datamodule, None
        if isinstance(data, TensorDataModule):
            if self.num_classes != data.num_classes:
                raise ValueError(f"the model has {self.num_classes} classes, the data set "
                                 f"{data.dataset!r} {data.num_classes}: build it with "
                                 f"num_classes={data.num_classes}")
            check_images(self.hparams.spec, data)
            own = all(getattr(type(self), hook) is getattr(EdgePopupModule, hook)
                      for hook in ENCODED_HOOKS)
            prefix = frozen_prefix(self.model) if own else None
            if data.encode_with(prefix):
                self._after_prefix = tuple(self.model)[len(prefix):]
                self._image_shape = data.splits["test"][0].shape[1:]

    def on_fit_start(self) -> None:
        """Fresh metric states: a ``validate`` or ``test`` call before this fit left states made
        in inference mode, which the fit's steps (outside it) may not update in place. Whether
        a callback (``ModelCheckpoint``, ``EarlyStopping``) monitors ``train/loss``: then every
        step logs it (:meth:`_logs_step_loss`)."""
        for metric in (*self.acc.values(), *self.loss.values()):
            metric.reset()
        self._monitored_loss = any(getattr(callback, "monitor", None) == "train/loss"
                                   for callback in self.trainer.callbacks)

    def on_train_start(self) -> None:
        """A cosine schedule that ends before the Trainer's ``max_epochs`` (``optim['epochs']``
        shorter, or the length a ``ckpt_path`` restored: a resumed run keeps its schedule's)
        is refused before the first step: past its end ``CosineAnnealingLR``'s rate rises
        again, to the full ``lr`` at twice its length. CUDA graphs capture one device's steps
        only: on for the fit where ``cuda_graphs`` asks and it runs in one process (here, not at
        each epoch's start, which a resume within an epoch skips for its first).

        A checkpoint saved at an epoch's last batch (``every_n_train_steps``) resumes with the
        next epoch's start, as an uninterrupted fit goes on: Lightning counted the checkpoint's
        epoch done (``FitLoop.reset``), but took the next for one restarted part way, started
        without its ``on_train_epoch_start`` hooks (``LearningRateMonitor`` logged no ``lr`` for
        it) and with the batch's optimizer step not yet counted (``_batches_that_stepped``, which
        the hooks' rows are logged at, is counted after the batch's save)."""
        loop = self.trainer.fit_loop
        batches = loop.epoch_loop
        if loop.restarted_mid_epoch and batches.restarted_on_train_batch_end and \
                batches.batch_progress.is_last_batch:
            loop.reset_restart_stage()  # its first iteration starts an epoch, hooks and all
            batches.restarting = False  # whose batches start afresh (reset_on_run)
            batches._batches_that_stepped += 1  # (as the restart would have, after the hooks)
        self.graphs.enabled = self.hparams.cuda_graphs and self.trainer.world_size == 1
        schedule, max_epochs = self.lr_schedulers(), self.trainer.max_epochs
        if isinstance(schedule, CosineAnnealingLR) and max_epochs > schedule.T_max:
            raise ValueError(
                f"the cosine schedule spans {schedule.T_max} epochs, the Trainer's max_epochs "
                f"is {max_epochs}: past its end the rate would rise again; give optim['epochs'] "
                f">= max_epochs (None: max_epochs) when the run starts, or max_epochs <= "
                f"{schedule.T_max}")

    def teardown(self, stage: str) -> None:
        """Undo :meth:`setup`'s encoding when the Trainer is done (fit, validate, test): the
        data module's loaders serve the inputs themselves again, as the model takes them."""
        if self._after_prefix is not None:
            self.trainer.datamodule.encode_with(None)
            self._after_prefix = None

    def on_train_epoch_start(self) -> None:
        self._handed.discard("train")
        self.graphs.clear()  # capture anew what changed since the last epoch

    def on_validation_epoch_start(self) -> None:
        self._handed.discard("val")

    def on_test_epoch_start(self) -> None:
        self._handed.discard("test")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _logits(self, x: torch.Tensor, graphed: bool = False) -> torch.Tensor:
        """The model's output for ``x``; for a batch the data module encoded, only the layers
        after the frozen prefix. Images (your own loader, while Lightning keeps a data module
        of an earlier call attached) go through the whole model. ``graphed``: through
        :attr:`graphs` (training steps), unless a subclass's own ``forward`` computes them, which
        runs as it is (the training steps ran ``self.model`` past it, the evaluation steps not)."""
        if self._after_prefix is None or x.shape[1:] == self._image_shape:
            if graphed and type(self).forward is EdgePopupModule.forward:
                return self.graphs(self.model, (self.model,), x)
            return self(x)
        if graphed:
            return self.graphs(self._after_prefix_logits, self._after_prefix, x)
        return self._after_prefix_logits(x)

    def _after_prefix_logits(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self._after_prefix:  # the data module applied the frozen prefix
            x = layer(x)
        return x

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self._logits(x, graphed=stage == "train")
        loss = F.cross_entropy(logits, y)
        acc, mean_loss = self.acc[f"{stage}_"], self.loss[f"{stage}_"]
        acc.update(logits.detach(), y)
        # The batch's mean loss once per example: the epoch's mean over examples, also with a
        # shorter last batch. (A weight argument would be dropped: with nan_strategy="disable"
        # MeanMetric replaces the weights by ones, torchmetrics issue #3434.)
        mean_loss.update(loss.detach().expand(len(y)))
        # Metric objects are computed (and synced across DDP ranks) once per epoch from all of
        # the epoch's updates, so handing them to Lightning once per epoch is enough; logging
        # them in every step cost ~1.3 ms of a ~10 ms LeNet5 CPU step. The train stage's epoch
        # values reach the loggers from on_train_epoch_end (see there).
        if stage not in self._handed:
            self._handed.add(stage)
            to_loggers = stage != "train"
            self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True,
                     prog_bar=stage != "test", logger=to_loggers)
            self.log(EPOCH_LOSS[stage], mean_loss, on_step=False, on_epoch=True,
                     logger=to_loggers)
        if stage == "train":
            self._loss_logged = self._logs_step_loss()
            if self._loss_logged:
                self._log_step_loss(loss)
        return loss

    def _log_step_loss(self, loss: torch.Tensor) -> None:
        """The step's ``train/loss``: under DDP the mean over the ranks' batches (the loss of
        the step's whole batch), not rank 0's alone; an all-reduce in logged steps only."""
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, sync_dist=True)

    def _logs_step_loss(self) -> bool:
        """Whether this training step logs its loss: where Lightning writes the step's logs,
        every ``log_every_n_steps``-th optimizer step and a stopping one (its
        ``should_update_logs``, which counts the same steps), and in every step while a
        callback monitors it. Logging in no other step saves ~1 ms of host time per step
        (``self.log`` moves Lightning's record of the value to its device at every call): half
        a graphed LeNet5 step on a GPU, ~10 % of one on the CPU. A monitoring callback reads
        the last step's loss, as of any module that logs it in every step (it read the last
        logged step's, up to ``log_every_n_steps - 1`` steps old, and none before the first:
        ``ModelCheckpoint(monitor='train/loss')`` failed at the end of an epoch shorter)."""
        trainer = self._trainer
        if trainer is None or self._monitored_loss:  # (by hand: self.log warns, logs nothing)
            return True
        n = trainer.log_every_n_steps
        return n > 0 and ((self.global_step + 1) % n == 0 or trainer.should_stop)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        """A step stopped by a callback's hook (``max_time``: the Timer sets ``should_stop``
        after the step) is one Lightning writes logs for: its loss is logged now (Lightning
        wrote the last logged step's loss under it)."""
        trainer = self._trainer
        if trainer.should_stop and not self._loss_logged and trainer.log_every_n_steps > 0:
            self._log_step_loss(outputs["loss"] if isinstance(outputs, dict) else outputs)

    def on_train_epoch_end(self) -> None:
        """Write the epoch's training metrics to the loggers now, before the epoch's checkpoint
        is saved (Lightning would write them only after it): a run killed between the two then
        loses no row of ``metrics.csv``, and its resume starts from a complete history."""
        metrics = self.trainer.callback_metrics
        row = {key: float(metrics[key]) for key in ("train/acc", EPOCH_LOSS["train"])
               if key in metrics}
        # the step Lightning gives epoch-end rows: the epoch's last batch (its logging counter)
        step = self.trainer.fit_loop.epoch_loop._batches_that_stepped - 1
        for logger in self.loggers:
            logger.log_metrics({**row, "epoch": self.current_epoch}, step=step)

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx):
        """The logits of a batch: ``(x, y)`` (the data module's test split, or your loader),
        ``(x,)`` or ``x``."""
        return self._logits(batch[0] if isinstance(batch, list | tuple) else batch)

    def unfreeze(self) -> None:
        """Lightning's (after ``freeze()``: every parameter requires grad again, training mode),
        but the model's parameters require grad as its build makes them
        (:func:`require_grad_as_built`)."""
        super().unfreeze()
        require_grad_as_built(self.model)

    def configure_optimizers(self):
        """The optimizer ``optim`` names and its schedule. The fused SGD (``sgd``) with a
        Trainer's ``gradient_clip_val`` under a mixed precision is refused in one line before
        the fit's first step: Lightning does not clip the gradients of an optimizer that
        unscales them itself, and failed at that step ("Are you using a 'fused' optimizer?")."""
        o, trainer = self.hparams.optim, self._trainer  # (None: a resume's check builds them)
        if trainer is not None and o["optimizer"] == "sgd" and trainer.gradient_clip_val and \
                isinstance(trainer.precision_plugin, MixedPrecision):
            raise ValueError(f"gradient_clip_val {trainer.gradient_clip_val!r} with precision "
                             f"{trainer.precision!r} and optimizer 'sgd': Lightning does not "
                             f"clip the gradients of the fused SGD under a mixed precision; "
                             f"give optim['optimizer'] 'adam' or 'adamw', or precision "
                             f"'32-true' or 'bf16-true'")
        optimizer, scheduler = optimizer_and_schedule(self.model, o,
                                                      o["epochs"] or self.trainer.max_epochs)
        # "name": what LearningRateMonitor logs the rate as.
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler,
                                                          "interval": "epoch", "name": "lr"}}


def layer_names(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The subnet layers of ``model`` by a readable name: the module's own name, except where
    it is only ``nn.Sequential`` positions (``"3"``), which become ``fc1, fc2, …`` for linear
    layers and ``conv1, conv2, …`` for convolutions, in order (LeNet5's naming)."""
    counts = {"fc": 0, "conv": 0}
    names = {}
    for name, m in model.named_modules():
        if not isinstance(m, _SubnetLayer):
            continue
        if all(part.isdigit() for part in name.split(".")):
            kind = "fc" if isinstance(m, SubnetLinear) else "conv"
            counts[kind] += 1
            name = f"{kind}{counts[kind]}"
        names[name] = m
    return names


def layer_densities(model: torch.nn.Module) -> dict[str, float]:
    """Fraction kept of each subnet layer's maskable weights, by :func:`layer_names`."""
    return {name: m.density for name, m in layer_names(model).items()}


def divergence(model: torch.nn.Module, lr: float) -> str | None:
    """``"<tensor> holds NaN or infinite values (lr <lr>)"`` for the first trainable tensor of
    ``model`` that is no longer finite, None while all are: one pass over them, one host
    read. What a single run (``run_callbacks.StopOnDivergence``) and a stack member report."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        return None
    bad = (~torch.stack([torch.isfinite(p).all() for _, p in named])).nonzero()
    return f"{named[int(bad[0])][0]} holds NaN or infinite values (lr {lr:g})" if len(bad) \
        else None


def stored_dtype(checkpoint: dict) -> torch.dtype | None:
    """The one floating dtype of the checkpoint's weights and scores (``64-true``'s float64,
    ``bf16-true``'s bfloat16), None where they have several. A module built in float32 and
    given float64 scores rounds them: scores apart by less than float32 resolves tie, and
    the top-k keeps other weights (another mask, another network)."""
    dtypes = {t.dtype for t in checkpoint["state_dict"].values() if t.is_floating_point()}
    return dtypes.pop() if len(dtypes) == 1 else None


def mask_digest(model: torch.nn.Module) -> float:
    """A fingerprint of all masks: the first 52 bits of the SHA-256 of every mask's shape and
    bits, in order, as a float64 (exact, so that DDP ranks can gather it). Two models with the
    same masks have the same digest, and two with other masks another one (it was a sum of
    the kept indices: keeping entries 0 and 3 read as keeping 1 and 2)."""
    digest = hashlib.sha256()
    for m in masked_weights(model):
        mask = m.mask()
        digest.update(repr(tuple(mask.shape)).encode())
        digest.update(np.packbits(mask.reshape(-1).bool().cpu().numpy()).tobytes())
    return float(int.from_bytes(digest.digest()[:7], "big") >> 4)


def require_grad_as_built(model: torch.nn.Module) -> None:
    """Each parameter of ``model`` (made by ``build_model``) requires grad as its build makes
    it: its scores (a baseline's weights), not the frozen random weights, which Lightning's
    ``unfreeze()`` thaws too, so that the next training step refused them
    (``layers.refuse_thawed``). The build is the one a ticket's load makes of the spec: on the
    meta device (nothing allocated), without its warnings."""
    with torch.device("meta"):
        built = dict(rebuild({"spec": model.spec}, None).named_parameters())
    for name, p in model.named_parameters():
        p.requires_grad_(name not in built or built[name].requires_grad)
