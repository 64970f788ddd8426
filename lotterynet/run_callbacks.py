"""A run's Lightning callbacks and checkpoint IO, which a stack's Trainer gets too: the checked
checkpoint IO (:class:`CheckedCheckpointIO`: checkpoints written atomically with their digest,
read checked, once), the host RNGs kept in the checkpoint (:class:`RNGState`), the stop of a
diverged run (:class:`StopOnDivergence`), an epoch's console lines printed once its checkpoint
is written (:class:`EpochLines`), the epochs' times and accuracies (:class:`EpochTimer`), and
the check that a resumed checkpoint's callback states can be restored
(:func:`check_callback_states`)."""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from pytorch_lightning.utilities.exceptions import SIGTERMException

from .checkpointing import (
    CHECKPOINTS,
    LAST,
    Resumed,
    atomic_torch_save,
    check_restorable,
    epochs_done,
    load_checkpoint,
    nested,
)
from .errors import DIVERGED_IN, CheckpointError, TrainingDiverged
from .machine import device_clock
from .module import EPOCH_LOSS, divergence
from .resumable import is_real


class CheckedCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with lotterynet's checks, for a Trainer of your own
    (``pl.Trainer(plugins=[lotterynet.CheckedCheckpointIO()])``; ``train.py``'s has it). A
    checkpoint is written atomically and durably, with its integrity digest
    (:func:`~lotterynet.checkpointing.atomic_torch_save`; to a URL, ``s3://``, as Lightning
    writes one, without it); ``storage_options`` are refused, as Lightning's own IO refuses
    them (a ``TypeError``, nothing written). A ``ckpt_path`` is read as :meth:`~lotterynet.module.
    EdgePopupModule.load_from_checkpoint` reads one (a URL through fsspec): its digest
    checked, or without one (a Trainer's without this plugin) its zip's CRC-32s, and loaded
    with ``torch.load(weights_only=True)``, unless the Trainer's ``fit``, ``validate``,
    ``test`` or ``predict`` was given ``weights_only=False`` (the user's choice, for a file of
    their own whose callback states hold Python objects). A truncated, corrupt or foreign
    file (one without the Lightning version it reads first too), or one holding Python objects
    (unless so asked), is a one-line
    :class:`~lotterynet.errors.CheckpointError` before Lightning restores anything
    (Lightning's own IO failed on a truncated file deep inside torch, and loaded a changed
    byte as a changed weight). The module does not read the file again to check it.

    ``resumed``: the checkpoint a run resumes from, read and checked before the Trainer was
    built (:func:`~lotterynet.resumable.check_resumable`). Lightning restores those contents,
    not the file read again: what it restores is what was checked, and the file is read
    once."""

    def __init__(self, resumed: Resumed | None = None):
        super().__init__()
        self.resumed = resumed
        self.epochs_saved: dict[str, int] = {}  # each checkpoint saved or loaded: its epochs

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if "://" in str(path) or storage_options is not None:  # (a URL: written as Lightning
            # writes one, without a digest; storage_options: refused as Lightning refuses them)
            super().save_checkpoint(checkpoint, path, storage_options)
        else:
            atomic_torch_save(checkpoint, path)
        self.epochs_saved[file_key(path)] = epochs_done(checkpoint)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        if self.resumed and os.fspath(path) == os.fspath(self.resumed[0]):
            (_, checkpoint), self.resumed = self.resumed, None  # (Lightning edits what it loads)
            self.epochs_saved[file_key(path)] = epochs_done(checkpoint)
            return with_its_epoch_completed(checkpoint)
        checkpoint = load_checkpoint(path, map_location=map_location, unsealed=True,
                                     weights_only=weights_only is not False)
        check_restorable(checkpoint, path)
        return checkpoint

    def epochs_of(self, path: str | os.PathLike) -> int | None:
        """The epochs of the checkpoint saved or loaded last at ``path``, however the path is
        written (Lightning's checkpoint callback saves under the absolute path of a relative
        ``--out``); None where none was."""
        return self.epochs_saved.get(file_key(path))


def file_key(path: str | os.PathLike) -> str:
    """``path`` as one file has one name: resolved, a URL as it is."""
    path = os.fspath(path)
    return path if "://" in path else os.path.realpath(path)


def with_its_epoch_completed(checkpoint: dict) -> dict:
    """``checkpoint`` with the epoch at whose end it was saved counted as completed. The run's
    checkpoint is saved in the epoch's ``on_train_epoch_end``, before Lightning counts the
    epoch completed; a resume counts it so when it goes on to train, but not when it trains no
    further (a run stopped by ``max_steps``, killed in its test phase, said an epoch fewer)."""
    counts = nested(checkpoint, "loops", "fit_loop", "epoch_progress", default={})
    for count in (counts.get("current"), counts.get("total")):
        if isinstance(count, dict) and count.get("ready") == count.get("started") == \
                count.get("processed") == count.get("completed", -2) + 1:
            count["completed"] = count["processed"]
    return checkpoint


class RNGState(pl.Callback):
    """Saves and restores the host RNGs (torch, CUDA, numpy, random) with the checkpoint, as
    plain tensors and lists (weights_only-safe)."""

    def state_dict(self) -> dict:
        np_state = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
            "random": [random.getstate()[0], list(random.getstate()[1]),
                       random.getstate()[2]],
        }

    def load_state_dict(self, state: dict) -> None:
        try:
            torch.set_rng_state(state["torch"])
            if state["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda"])
            kind, keys, *rest = state["numpy"]
            np.random.set_state((kind, keys.numpy(), *rest))
            version, internal, gauss = state["random"]
            random.setstate((version, tuple(internal), gauss))
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
            raise CheckpointError(f"the checkpoint being resumed holds a random-generator "
                                  f"state that cannot be restored ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0] if str(err) else ''})") from None


class StopLaunchedRanks(pl.Callback):
    """A run stopped by SIGTERM: rank 0 kills the DDP ranks it launched (SIGKILL, as Lightning
    does on Ctrl-C) as it stops, before it closes anything. It stops at the end of its batch,
    on the flag that it alone sets (:func:`~lotterynet.process_lifetime.
    stop_all_ranks_on_sigterm`), while they go on to the next batch's broadcast of that flag,
    where rank 0 never comes. They died with rank 0 (``PR_SET_PDEATHSIG``), but under torch 2.9
    rank 0's exit closed its connections first: the broadcast failed, which Lightning takes
    for no SIGTERM, and each launched rank died in its next all-reduce, its traceback
    ("RuntimeError: [.../gloo/transport/tcp/pair.cc:547] Connection closed by peer") after the
    run's one line."""

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        launcher = trainer.strategy.launcher
        if isinstance(exception, SIGTERMException) and isinstance(launcher,
                                                                  _SubprocessScriptLauncher):
            launcher.kill(signal.SIGKILL)  # (none in a launched rank: it launched none)
            for proc in launcher.procs:
                proc.wait()


class StopOnDivergence(pl.Callback):
    """Stops a run whose trainable tensors are no longer finite with :class:`TrainingDiverged`
    (at the end of each validation and training epoch; Lightning runs the checkpoint callback
    after this one, so the last checkpoint stays the last finite one)."""

    def on_validation_end(self, trainer, pl_module) -> None:
        self.check(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.check(trainer, pl_module)

    @staticmethod
    def check(trainer, pl_module) -> None:
        what = divergence(pl_module.model, pl_module.hparams.optim["lr"])
        if what is None:
            return
        checkpoint = Path(trainer.default_root_dir) / CHECKPOINTS / LAST
        kept = (f"its last finite checkpoint is kept: {checkpoint}" if checkpoint.is_file()
                else "no checkpoint was written")
        raise TrainingDiverged(f"training {DIVERGED_IN} {trainer.current_epoch + 1}: "
                               f"{what}; lower --lr; {kept}")


class EpochLines(Checkpoint):
    """Prints an epoch's console lines (the epoch timer's, a stack's
    :class:`~lotterynet.stack_module.MemberResults`') once the epoch's checkpoint is written.
    Lightning runs the checkpoint callbacks after all others, in the order given: as one, after
    the run's ModelCheckpoint, this one's epoch end comes after that one's save. It writes
    nothing itself. (Printed by the callbacks that made them, the lines came before the save:
    a Ctrl-C between the two left an epoch on the screen that no checkpoint held.)"""

    def __init__(self):
        self.lines: list[str] = []

    @staticmethod
    def say(trainer: pl.Trainer, line: str) -> None:
        """``line`` once the ``trainer``'s epoch checkpoint is written; at once where it has no
        :class:`EpochLines`."""
        printer = next((c for c in trainer.callbacks if isinstance(c, EpochLines)), None)
        if printer is None:
            print(line, flush=True)
        else:
            printer.lines.append(line)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        for line in self.lines:
            print(line, flush=True)
        self.lines.clear()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """A diverged epoch's line (its loss not finite), which no checkpoint holds, as the
        one-line error that follows says: printed all the same."""
        if isinstance(exception, TrainingDiverged):
            self.on_train_epoch_end(trainer, pl_module)


class EpochTimer(pl.Callback):
    """Seconds per training epoch, the epoch's last train/val accuracy and the best validation
    accuracy; kept in the checkpoint, so a resumed run reports its whole history. With
    ``announce`` (runs without a progress bar) it prints one line per epoch, counting to
    ``epochs`` (the run's, also when ``--stop-after`` ends this process sooner).

    The checkpoint keeps too whether a Trainer option (EarlyStopping, ``max_time``) stopped the
    run in its epoch: a run killed in its test phase resumes to test, not to train on past the
    option's stop (Lightning does not keep ``should_stop``); and the seconds of an epoch under
    way (``running``: one saved within it, ``every_n_train_steps``), which its resume adds to
    those it trains after. One saved at an epoch's last batch resumes with the next epoch's
    start (``EdgePopupModule.on_train_start``): the epoch's are then those it trained until
    its checkpoint (the checkpoint predates its validation)."""

    METRICS = ("train/acc", "val/acc", EPOCH_LOSS["train"])

    def __init__(self, announce: bool = False, epochs: int | None = None):
        self.seconds: list[float] = []
        self.metrics: dict[str, float] = {}
        self.best_val_acc: float | None = None
        self.val_epoch: int | None = None  # the last epoch that validated (1-based)
        # the last epoch, when a Trainer option (max_time) stopped it part way: its batches
        # trained, of how many (it is not counted in epochs_done)
        self.partial: dict[str, int] | None = None
        self.announce, self.epochs = announce, epochs
        self._validated = False  # whether the epoch under way has validated
        self.stopped = False  # a resumed checkpoint's: a Trainer option stopped the run
        self._start: float | None = None  # the clock when the epoch under way (None: none) began
        self._before: float | None = None  # a resumed checkpoint's seconds of its epoch under way
        self._trainer: pl.Trainer | None = None  # (its should_stop is saved: state_dict)

    def setup(self, trainer, pl_module, stage):
        self._trainer = trainer

    def on_train_start(self, trainer, pl_module):
        # (here, not when restored: Lightning then counts the checkpoint's epoch as done)
        trainer.should_stop = trainer.should_stop or self.stopped
        # a resume within an epoch (a checkpoint of every_n_train_steps) starts no epoch: the
        # epoch's clock starts here (its seconds: the part trained after the resume, and before)
        self._start = device_clock(pl_module.device)

    def on_train_epoch_start(self, trainer, pl_module):
        if self._before is not None:  # the checkpoint's epoch ended at its last batch
            self.seconds.append(self._before)
            self.partial, self._before = None, None
        self._start = device_clock(pl_module.device)
        self._validated = False  # (check_val_every_n_epoch: not every epoch validates)

    def on_validation_epoch_end(self, trainer, pl_module):
        self._validated = not trainer.sanity_checking

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds.append(self._running())
        self._start, self._before = None, None
        progress = trainer.fit_loop.epoch_loop.batch_progress
        self.partial = None if progress.is_last_batch else {
            "batches": progress.current.completed, "of": trainer.num_training_batches}
        self.metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()
                             if k in self.METRICS})
        if "val/acc" in self.metrics:
            self.best_val_acc = max(self.best_val_acc or 0.0, self.metrics["val/acc"])
        if self._validated:
            self.val_epoch = trainer.current_epoch + 1
        if self.announce and trainer.is_global_zero:
            EpochLines.say(trainer, self.epoch_line(
                trainer.current_epoch + 1, self.epochs or trainer.max_epochs, self._validated))

    def epoch_line(self, epoch: int, epochs: int, validated: bool = True) -> str:
        """The epoch's line; its validation accuracy only when the epoch ``validated`` (the
        last one stays in ``metrics``)."""
        m = self.metrics
        parts = [f"epoch {epoch}/{epochs}"]
        if EPOCH_LOSS["train"] in m:
            parts.append(f"train loss {m[EPOCH_LOSS['train']]:.4f} acc "
                         f"{100 * m.get('train/acc', 0.0):.2f}%")
        if "val/acc" in m and validated:
            parts.append(f"val acc {100 * m['val/acc']:.2f}%")
        if self.partial:
            parts.append(f"stopped after {self.partial['batches']} of {self.partial['of']} "
                         f"batches")
        return " | ".join([*parts, f"{self.seconds[-1]:.1f} s"])

    def _running(self) -> float | None:
        """Seconds the epoch under way has trained, those before a resume too; None: none."""
        if self._start is None:
            return None
        clock = device_clock(self._trainer.lightning_module.device)
        return (self._before or 0.0) + clock - self._start

    def state_dict(self) -> dict:
        return {"seconds": list(self.seconds), "metrics": dict(self.metrics),
                "best_val_acc": self.best_val_acc, "val_epoch": self.val_epoch,
                "partial": self.partial, "running": self._running(),
                "stopped": bool(self._trainer is not None and self._trainer.should_stop)}

    def load_state_dict(self, state: dict) -> None:
        valid = {"seconds": lambda v: isinstance(v, list) and all(map(is_real, v)),
                 "metrics": lambda v: isinstance(v, dict) and all(map(is_real, v.values())),
                 "best_val_acc": lambda v: v is None or is_real(v),
                 # (None too in a checkpoint written before it was kept)
                 "val_epoch": lambda v: v is None or (type(v) is int and v >= 1),
                 "partial": lambda v: v is None or (isinstance(v, dict) and set(v) == {
                     "batches", "of"} and all(type(n) is int and n >= 0 for n in v.values())),
                 "running": lambda v: v is None or (is_real(v) and v >= 0),
                 "stopped": lambda v: v is None or isinstance(v, bool)}
        bad = next((key for key, ok in valid.items() if not ok(state.get(key))), None)
        if bad:
            raise CheckpointError(f"the checkpoint being resumed holds an epoch history whose "
                                  f"{bad!r} is {state.get(bad)!r:.60}, not numbers")
        self.seconds, self.metrics = list(state["seconds"]), dict(state["metrics"])
        self.best_val_acc, self.val_epoch = state["best_val_acc"], state.get("val_epoch")
        self.partial, self.stopped = state.get("partial"), bool(state.get("stopped"))
        self._before = state.get("running")


def check_callback_states(checkpoint: dict, callbacks: Sequence[pl.Callback]) -> None:
    """Loads the checkpoint's states of ``callbacks`` (fresh ones, of the kinds the run's
    Trainer gets) to refuse one that cannot be restored before the run prints or writes
    anything: Lightning restores them only inside ``fit``. The host RNGs are left as they
    were."""
    states, host_rngs = checkpoint.get("callbacks", {}), RNGState().state_dict()
    try:
        for callback in callbacks:
            if callback.state_key in states:
                callback.load_state_dict(states[callback.state_key])
    finally:
        RNGState().load_state_dict(host_rngs)
