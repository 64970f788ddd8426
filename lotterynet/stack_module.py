"""The stack's Lightning parts: :class:`StackModule`, the LightningModule that trains every
member as its single run's :class:`~lotterynet.module.EdgePopupModule` would (one optimizer and
schedule each, one backward of their summed losses, :func:`member_losses`), and
:class:`MemberResults`, the callback that keeps each member's history, stops a member that
diverges, and tests a member whose budget is over and writes its cell directory as a single run
does; :func:`~lotterynet.stack.run_stack` trains them."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from .checkpointing import CHECKPOINTS, LAST, atomic_torch_save, write_csv_atomic
from .cuda_graphs import StepGraphs
from .errors import DIVERGED_IN, CheckpointError, plural
from .loggers import METRICS_FILE
from .models import build_model
from .module import EPOCH_LOSS, divergence, layer_densities, mask_digest, require_grad_as_built
from .optim import optimizer_and_schedule
from .params import count_params
from .resumable import is_real
from .run import device_name, params_metrics, versions
from .run_callbacks import EpochLines, EpochTimer
from .run_dir import RESULTS, write_json_atomic, write_ticket
from .stack_model import StackedModel

# -------------------------------------------------------------------- the LightningModule


def as_list(things) -> list:
    """Lightning returns a lone optimizer or scheduler bare, several as a list."""
    return things if isinstance(things, list) else [things]


class StackModule(pl.LightningModule):
    """Edge-popup training of a stack: manual optimization with one optimizer and one schedule
    per member, so each member steps exactly as its single run's :class:`EdgePopupModule`
    (SGD/AdamW over its trainable tensors, cosine over its own ``epochs``).

    ``members``: one dict per member with ``name`` (its cell name), ``spec`` (``build_model``
    arguments), ``optim`` (as :class:`EdgePopupModule` takes it) and ``config`` (the member's
    RunConfig as a dict). Per-epoch sums of loss and correct predictions are kept per member
    in ``sums[stage]`` (``[loss · n, correct, n]``); :class:`MemberResults` reads them.
    ``diverged`` (kept in the checkpoint): the members whose trainable tensors stopped being
    finite, with what happened; they train no more and are not tested. ``cuda_graphs``: replay
    the training members' forward and backward from a CUDA graph where one may be used
    (:mod:`lotterynet.cuda_graphs`)."""

    def __init__(self, members: list[dict], cuda_graphs: bool = True):
        super().__init__()
        self.save_hyperparameters(logger=False)  # (logged by stack.train_stack, paths relative)
        self.automatic_optimization = False
        self.names = [m["name"] for m in members]
        self.budgets = [m["optim"]["epochs"] for m in members]
        self.model = StackedModel([build_model(**m["spec"]) for m in members])
        self.sums: dict[str, torch.Tensor] = {}
        self._index: dict[tuple, torch.Tensor] = {}
        self.diverged: dict[int, str] = {}
        self.prefixed = False  # whether the data module serves the shared prefix's output
        self.graphs = StepGraphs(cuda_graphs)
        self.step_losses: torch.Tensor | None = None  # the last step's, of its members

    def setup(self, stage: str) -> None:
        """The members' one shared frozen prefix (LeNet5's convs) runs once per example of each
        split, in the data module, as in a single run (``EdgePopupModule.setup``; not when the
        training batches are augmented: then the members run whole). The stack takes its
        precision's dtype here, before Lightning restores a checkpoint into it, as a single
        run's module does (``EdgePopupModule.setup``)."""
        self.trainer.precision_plugin.convert_module(self)
        self.prefixed = self.trainer.datamodule.encode_with(self.model.shared_prefix)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["diverged"] = dict(self.diverged)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.diverged = dict(checkpoint.get("diverged", {}))

    def unfreeze(self) -> None:
        """Lightning's (after ``freeze()``), but each member's parameters require grad as its
        build makes them (:func:`~lotterynet.module.require_grad_as_built`): Lightning's thawed
        the frozen random weights too, which the members' optimizers would train."""
        super().unfreeze()
        for member in self.model.members:
            require_grad_as_built(member)

    def training_members(self, epoch: int) -> list[int]:
        """Members still within their budget in ``epoch`` (0-based) that have not diverged."""
        return [s for s, budget in enumerate(self.budgets)
                if epoch < budget and s not in self.diverged]

    def configure_optimizers(self):
        optimizers, schedulers = [], []
        for member, settings in zip(self.model.members, self.hparams.members):
            optimizer, scheduler = optimizer_and_schedule(member, settings["optim"],
                                                          settings["optim"]["epochs"])
            optimizers.append(optimizer)
            schedulers.append(scheduler)
        return optimizers, schedulers

    def on_train_epoch_start(self) -> None:
        # Each schedule has stepped once per finished epoch of its member's budget. Catching up
        # here (rather than stepping at the epoch's end) is right after any resume, where
        # torch would warn that the schedule steps before its (fresh) optimizer has.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step")
            for s, scheduler in enumerate(as_list(self.lr_schedulers())):
                while scheduler.last_epoch < min(self.current_epoch, self.budgets[s]):
                    scheduler.step()
        self.sums = {"train": torch.zeros(len(self.budgets), 3, device=self.device)}
        self.graphs.clear()  # capture anew what changed since the last epoch

    def on_validation_epoch_start(self) -> None:
        self.sums["val"] = torch.zeros(len(self.budgets), 3, device=self.device)

    def _accumulate(self, stage: str, members: list[int], logits: torch.Tensor,
                    losses: torch.Tensor, y: torch.Tensor) -> None:
        """Add a batch's loss sum, correct predictions and count to each member's row of
        ``sums[stage]``; ``logits`` and ``losses`` as :func:`member_losses` takes and gives
        them."""
        with torch.no_grad():
            correct = (logits.argmax(2) == y).sum(1).float()
            loss = losses.float() * len(y)
            rows = torch.stack([loss, correct, torch.full_like(loss, len(y))], dim=1)
            key = (tuple(members), rows.device)
            if key not in self._index:  # one host-to-device copy per member set, not per step
                self._index[key] = torch.tensor(members, device=rows.device)
            self.sums[stage].index_add_(0, self._index[key], rows)

    def training_step(self, batch, batch_idx):
        x, y = batch
        members = self.training_members(self.current_epoch)
        outputs = self.graphs(partial(self.model, members=members, prefixed=self.prefixed),
                              [self.model.members[s] for s in members], x, key=tuple(members))
        logits = torch.stack(outputs)
        losses = member_losses(logits, y)
        self.step_losses = losses.detach()  # (read on the steps a run logs its loss at)
        self.manual_backward(losses.sum())  # d(Σ losses)/dθ_s = d(loss_s)/dθ_s for member s
        # Lightning counts a global step per step of its optimizer wrappers: all members but
        # the last step theirs bare, so that the stack's step count (its checkpoint's
        # global_step) is the batches trained, as a single run's, not S per batch
        optimizers = as_list(self.optimizers())
        for s in members:
            optimizer = optimizers[s] if s == members[-1] else optimizers[s].optimizer
            optimizer.step()
            optimizer.zero_grad()
        self._accumulate("train", members, logits, losses, y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        members = self.training_members(self.current_epoch)
        logits = torch.stack(self.model(x, members, self.prefixed))
        self._accumulate("val", members, logits, member_losses(logits, y), y)

    @torch.no_grad()
    def evaluate(self, members: list[int], loader) -> list[dict[str, float]]:
        """Test accuracy and mean loss of each of ``members`` over ``loader``, in one pass: the
        frozen prefix runs once per batch for all of them, as in training."""
        was_training = self.model.training
        self.model.eval()
        self.sums["test"] = torch.zeros(len(self.budgets), 3, device=self.device)
        plugin = self.trainer.precision_plugin
        with plugin.forward_context():
            for x, y in loader:
                x = plugin.convert_input(x)  # as Lightning's loops do (64-true, bf16-true)
                logits = torch.stack(self.model(x, members, self.prefixed))
                self._accumulate("test", members, logits, member_losses(logits, y), y)
        self.model.train(was_training)
        tested = (_epoch_metrics(self.sums["test"], s, "test") for s in members)
        return [{"test_acc": m["test/acc"], "test_loss": m["test/loss"]} for m in tested]


def member_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each member's mean cross-entropy over the batch, ``(S,)``, from the members' logits
    stacked, ``(S, batch, classes)``: one op for all members. Its value is that of
    ``F.cross_entropy(logits[s], y)`` up to float rounding, and its gradient that one's bit
    for bit: the log-softmax runs over the last dimension of ``(S · batch, classes)`` rows, as
    a single run's does (over a strided class dimension its kernel rounds differently, and a
    member drifts from its single run within a few epochs)."""
    members, batch, classes = logits.shape
    return F.cross_entropy(logits.reshape(members * batch, classes), y.repeat(members),
                           reduction="none").view(members, batch).mean(1)


# ------------------------------------------------------------ each member's cell directory


def _epoch_metrics(sums: torch.Tensor | None, s: int, stage: str) -> dict[str, float]:
    if sums is None or float(sums[s, 2]) == 0:
        return {}
    loss, correct, count = (float(v) for v in sums[s])
    return {EPOCH_LOSS[stage]: loss / count, f"{stage}/acc": correct / count}


class MemberResults(pl.Callback):
    """Records every member's epoch metrics (its history, kept in the stack checkpoint), logs
    them under the member's name, stops a member whose trainable tensors are no longer finite
    (``StackModule.diverged``; the others go on), and when a member's budget is over tests it
    and writes its cell directory. Runs at the end of each training epoch, after validation
    and before the stack checkpoint is saved; after a resume it first finishes members whose
    budget ended before the checkpoint but whose cell was not written."""

    def __init__(self, cell_dirs: Sequence[Path], stack_dir: Path, timer: EpochTimer):
        self.cell_dirs, self.stack_dir, self.timer = [Path(d) for d in cell_dirs], stack_dir, timer
        self.history: list[list[dict]] = [[] for _ in self.cell_dirs]

    def state_dict(self) -> dict:
        return {"history": self.history, "seconds": self.timer.seconds}

    def load_state_dict(self, state: dict) -> None:
        history, seconds = state.get("history"), state.get("seconds")
        rows = isinstance(history, list) and len(history) == len(self.cell_dirs) and all(
            isinstance(rows, list) and all(isinstance(row, dict) and all(
                isinstance(k, str) and is_real(v) for k, v in row.items()) for row in rows)
            for rows in history)
        if not (rows and isinstance(seconds, list) and all(map(is_real, seconds))):
            raise CheckpointError(f"the stack checkpoint being resumed holds member histories "
                                  f"that are not {len(self.cell_dirs)} lists of rows of numbers "
                                  f"and epoch seconds: {str(state)[:60]}")
        self.history, self.timer.seconds = history, list(seconds)

    def on_train_start(self, trainer, module: StackModule) -> None:
        self.finish(trainer, module, [s for s, budget in enumerate(module.budgets)
                                      if budget <= trainer.current_epoch])
        self.stop_when_none_trains(trainer, module, trainer.current_epoch)

    @staticmethod
    def stop_when_none_trains(trainer, module: StackModule, epoch: int) -> None:
        """End the fit before ``epoch`` when no member trains in it (the members left within
        their budget diverged): an epoch of no member has no loss to step on."""
        if not module.training_members(epoch):
            trainer.should_stop = True

    def on_train_batch_end(self, trainer, module: StackModule, outputs, batch, batch_idx
                           ) -> None:
        """On the steps where a single run logs its step loss (every ``log_every_n_steps``),
        each training member's, into its history and under its name."""
        if not trainer._logger_connector.should_update_logs:
            return
        members = module.training_members(trainer.current_epoch)
        self.log_members(trainer, module, "train/loss",
                         dict(zip(members, module.step_losses.float().tolist())), epoch=True)

    def on_train_batch_start(self, trainer, module: StackModule, batch, batch_idx) -> None:
        """At an epoch's first batch, each training member's learning rate for the epoch, at
        the step where a single run's ``LearningRateMonitor`` logs it (the epoch's start; in
        the member's history, as there, without an epoch; in the stack's log with it, as its
        every row). Not in ``on_train_epoch_start``: callbacks run before the module's, where
        the schedules catch up (``StackModule.on_train_epoch_start``)."""
        if batch_idx:
            return
        schedulers = as_list(module.lr_schedulers())
        self.log_members(trainer, module, "lr", {
            s: schedulers[s].get_last_lr()[0]
            for s in module.training_members(trainer.current_epoch)}, epoch=False)

    def log_members(self, trainer, module: StackModule, key: str, values: dict[int, float],
                    epoch: bool) -> None:
        """Each member ``s``'s ``values[s]`` at the step the loop is at: a row ``key`` in its
        history (with the epoch where ``epoch``), and ``NAME/key`` in the stack's loggers (with
        the epoch, as their every row)."""
        now, step = trainer.current_epoch, trainer.fit_loop.epoch_loop._batches_that_stepped
        for s, value in values.items():
            self.history[s].append({**({"epoch": now} if epoch else {}), "step": step,
                                    key: value})
        for logger in trainer.loggers:
            logger.log_metrics({**{f"{module.names[s]}/{key}": v for s, v in values.items()},
                                "epoch": now}, step=step)

    def on_train_epoch_end(self, trainer, module: StackModule) -> None:
        epoch = trainer.current_epoch
        logged, train_accs = {}, []
        for s in module.training_members(epoch):
            row = {"epoch": epoch, "step": (epoch + 1) * trainer.num_training_batches - 1,
                   **_epoch_metrics(module.sums.get("train"), s, "train"),
                   **_epoch_metrics(module.sums.get("val"), s, "val")}
            self.history[s].append(row)
            logged.update({f"{module.names[s]}/{k}": v for k, v in row.items()
                           if k not in ("epoch", "step")})
            train_accs.append(row.get("train/acc", 0.0))
        for logger in trainer.loggers:  # (with its epoch: a resume drops rows past its own;
            # at the members' optimizer step, as their single runs and metrics.csv have it)
            logger.log_metrics({**logged, "epoch": epoch},
                               step=(epoch + 1) * trainer.num_training_batches - 1)
        for s in module.training_members(epoch):
            what = divergence(module.model.members[s], module.hparams.members[s]["optim"]["lr"])
            if what is not None:
                module.diverged[s] = f"{module.names[s]} {DIVERGED_IN} {epoch + 1}: {what}"
        test_accs = self.finish(trainer, module, [s for s, budget in enumerate(module.budgets)
                                                  if budget == epoch + 1])
        self.stop_when_none_trains(trainer, module, epoch + 1)
        if trainer.is_global_zero:
            EpochLines.say(trainer, self.epoch_line(epoch, trainer.max_epochs, train_accs,
                                                    test_accs))

    def epoch_line(self, epoch: int, epochs: int, train_accs: list[float],
                   test_accs: list[float]) -> str:
        """One console line per stack epoch: how many members trained, their best epoch train
        accuracy, the members whose budget ended with it (their best test accuracy) and the
        epoch's seconds."""
        parts = [f"stack {self.stack_dir.name}: epoch {epoch + 1}/{epochs}",
                 f"{plural(len(train_accs), 'member')} trained, best train acc "
                 f"{100 * max(train_accs, default=0.0):.2f}%"]
        if test_accs:
            parts.append(f"{plural(len(test_accs), 'member')} done (best test accuracy "
                         f"{100 * max(test_accs):.2f}%)")
        return " | ".join([*parts, f"{self.timer.seconds[-1]:.1f} s"])

    def finish(self, trainer, module: StackModule, members: list[int]) -> list[float]:
        """Test ``members`` (one pass over the test set for all of them) and write each one's
        cell directory: its model checkpoint, its metrics history, then (last, atomically) its
        ``results.json``. A cell finished elsewhere is never overwritten. Returns the test
        accuracies."""
        members = [s for s in members if not (self.cell_dirs[s] / RESULTS).is_file()
                   and s not in module.diverged]
        if not members:
            return []
        tested = module.evaluate(members, trainer.datamodule.test_dataloader())
        for s, result in zip(members, tested):
            self.write_cell(trainer, module, s, result)
        return [result["test_acc"] for result in tested]

    def write_cell(self, trainer, module: StackModule, s: int, tested: dict) -> None:
        """Member ``s``'s cell directory, as a single run writes it (checkpoint, history,
        ticket), with ``tested`` (its test metrics) in ``results.json``."""
        settings = module.hparams.members[s]
        member, cell, budget = module.model.members[s], self.cell_dirs[s], module.budgets[s]
        state = {f"model.{k}": v for k, v in member.state_dict().items()}
        atomic_torch_save({"state_dict": state, "hyper_parameters": {
            k: settings[k] for k in ("spec", "optim", "config")},
            "epoch": budget - 1,  # Lightning's: the last epoch's 0-based index
            "global_step": budget * trainer.num_training_batches,  # (its single run's)
            # (what Lightning's load_from_checkpoint reads first, to migrate an older file)
            "pytorch-lightning_version": pl.__version__}, cell / CHECKPOINTS / LAST)
        history, counts, densities = self.history[s], count_params(member), layer_densities(member)
        # (then the test row, at the step after the last, as a single run's)
        rows = [*member_history(member, history),
                {"epoch": budget, "step": budget * trainer.num_training_batches,
                 "test/acc": tested["test_acc"], "test/loss": tested["test_loss"]}]
        write_csv_atomic(cell / METRICS_FILE, rows,
                         sorted(dict.fromkeys(k for row in rows for k in row)))
        write_ticket(member, cell)
        last = history[-1] if history else {}
        seconds = self.timer.seconds[:budget]
        config = settings["config"]
        results = {  # (its config's out, unset, is its cell, as a single run's is its folder)
            "finished": True, "config": {**config, "out": config["out"] or str(cell)},
            "spec": settings["spec"],
            "lr": settings["optim"]["lr"], "params": counts, "layer_density": densities, **tested,
            "val_acc": last.get("val/acc"), "train_acc": last.get("train/acc"),
            "val_epoch": budget if "val/acc" in last else None,
            "epochs_done": budget, "partial_epoch": None, "seconds_per_epoch": seconds,
            "train_seconds": sum(seconds), "device": device_name(trainer),
            "versions": versions(), "devices": 1,
            "mask_digests": [mask_digest(member)], "run_dir": str(cell),
            "stack": {"dir": str(self.stack_dir), "members": len(module.budgets)},
            # (a single run's W&B folder: with --wandb, its W&B run's once logged, which its
            # absence says it is not yet, stack.unlogged_members)
            **({} if config["wandb"] else {"wandb_dir": None}),
        }
        write_json_atomic(results, cell / RESULTS)


def member_history(member: torch.nn.Module, history: list[dict]) -> list[dict]:
    """A member's rows as its single run's ``metrics.csv`` holds them up to its last epoch:
    its parameter counts at step 0 (:func:`params_metrics`, which a run logs before its fit;
    they count its masks' sizes, not what its scores hold), then its ``history``."""
    return [{"step": 0, **params_metrics(count_params(member), layer_densities(member))},
            *history]
