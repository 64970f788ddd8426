"""Whether a loaded training checkpoint can continue a module's training, checked before
Lightning restores it.

A checkpoint's digest (:mod:`lotterynet.checkpointing`) proves that its bytes are the ones
written, not that they are a checkpoint of this run: a file edited and sealed again, or written
by other code, could otherwise train another mask without a word (a ``k`` other than the
config's), fail deep inside Lightning or torch, or crash the process (torch's fused SGD kernel
reads a momentum buffer of the wrong size out of bounds). The reference for every check is
what the module itself builds: its ``state_dict`` and the optimizers and schedules of its
``configure_optimizers``.
"""

from __future__ import annotations

import math
import numbers

import torch

from .checkpointing import epochs_done, nested
from .datamodule import TensorLoader
from .errors import CheckpointError

#: What a schedule's state may hold other than its fresh value: how far it has stepped.
SCHEDULE_PROGRESS = ("last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step",
                     "_is_initial")
#: What Lightning's ModelCheckpoint reads from its stored state without a default.
CHECKPOINT_CALLBACK_KEYS = ("best_model_score", "best_model_path")
#: Where Lightning's fit loop stores its training loaders' states in its own (the one
#: :meth:`~lotterynet.datamodule.TensorLoader.state_dict`: where in its epoch it stopped).
LOADER_STATES = "combined_loader"
#: A resume needs these; a checkpoint that lacks one is not a training checkpoint.
TRAINING_KEYS = ("epoch", "global_step", "optimizer_states", "lr_schedulers",
                 "pytorch-lightning_version")


def check_resumable(checkpoint: dict, module: torch.nn.Module, epochs: int, path, *,
                    finite: bool = True) -> None:
    """:class:`CheckpointError` naming the first part of ``checkpoint`` (as
    :func:`~lotterynet.checkpointing.load_checkpoint` read it) that cannot continue the
    training of ``module`` for ``epochs`` epochs. ``finite=False`` lets tensors be NaN or
    infinite (a stack's checkpoint holds a diverged member as it stopped, never trained on)."""
    check_model_state(checkpoint, module, path, finite)
    missing = next((k for k in TRAINING_KEYS if k not in checkpoint), None)
    if missing or not checkpoint["optimizer_states"] or not checkpoint["lr_schedulers"]:
        raise CheckpointError(f"checkpoint {str(path)!r} holds no {missing or 'optimizer_states'} "
                              f"(weights only?); a resume needs the RUN/checkpoints/last.ckpt a "
                              f"run writes")
    fault = progress_fault(checkpoint, epochs)
    optimizers, schedules = fresh_optimizers(module)
    for kind, stored, fresh in (("optimizer", checkpoint["optimizer_states"], optimizers),
                                ("schedule", checkpoint["lr_schedulers"], schedules)):
        if not fault and len(stored) != len(fresh):
            fault = f"it holds {len(stored)} {kind} states, this run has {len(fresh)}"
    for stored, optimizer in zip(checkpoint["optimizer_states"], optimizers):
        fault = fault or prefixed("its optimizer state",
                                  optimizer_fault(stored, optimizer, finite))
    for stored, schedule in zip(checkpoint["lr_schedulers"], schedules):
        fault = fault or prefixed("its schedule state",
                                  schedule_fault(stored, schedule.state_dict(), epochs))
    if fault:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot continue this run: {fault}")


def prefixed(what: str, fault: str | None) -> str | None:
    return fault and f"{what} {fault}"


def progress_fault(checkpoint: dict, epochs: int) -> str | None:
    """What in the checkpoint's loop and callback states Lightning could not restore, or what
    says it has trained more than ``epochs`` (None: nothing)."""
    loops = checkpoint.get("loops", {"fit_loop": {}})
    if "fit_loop" not in loops or not all(map(is_counts, without_loader_states(loops).values())):
        return "its loop states are not Lightning's mappings of counts"
    states = nested(loops, "fit_loop", "state_dict", LOADER_STATES, default=[])
    if not (isinstance(states, list) and len(states) <= 1 and all(
            isinstance(state, dict) and set(state) == set(TensorLoader.STATE_KEYS)
            and is_counts(state) for state in states)):  # (the run has one training loader)
        return (f"its training loader's state ({LOADER_STATES}) is not one position "
                f"({', '.join(TensorLoader.STATE_KEYS)}: counts)")
    for name, state in checkpoint.get("callbacks", {}).items():
        if name.startswith("ModelCheckpoint") and not set(CHECKPOINT_CALLBACK_KEYS) <= set(state):
            return f"its ModelCheckpoint state lacks {' or '.join(CHECKPOINT_CALLBACK_KEYS)}"
    completed = nested(checkpoint, "loops", "fit_loop", "epoch_progress", "current",
                       "completed", default=checkpoint["epoch"])
    if completed != checkpoint["epoch"]:  # (Lightning's current_epoch is the loop's count)
        return f"its epoch {checkpoint['epoch']} is not its loop's ({completed!r})"
    steps = loop_steps(loops["fit_loop"])
    if "global_step" in checkpoint and steps is not None and steps != checkpoint["global_step"]:
        return f"its global_step {checkpoint['global_step']} is not its loop's ({steps})"
    if epochs_done(checkpoint) > epochs:
        return f"it has trained {epochs_done(checkpoint)} epochs of a run of {epochs}"
    return None


def without_loader_states(loops: dict) -> dict:
    """``loops`` without the fit loop's stored loader states (a list: the one part of the loop
    states that is not counts)."""
    own = nested(loops, "fit_loop", "state_dict", default=None)
    if not isinstance(own, dict) or LOADER_STATES not in own:
        return loops
    return {**loops, "fit_loop": {**loops["fit_loop"], "state_dict": {
        k: v for k, v in own.items() if k != LOADER_STATES}}}


def loop_steps(fit_loop: dict) -> int | None:
    """The optimizer steps a fit loop's state counts (Lightning's ``global_step``: automatic
    and manual optimization each count their own; one of them is 0), or None: not stored."""
    counts = [nested(fit_loop, *keys, "total", "completed", default=None) for keys in (
        ("epoch_loop.automatic_optimization.optim_progress", "optimizer", "step"),
        ("epoch_loop.manual_optimization.optim_step_progress",))]
    return None if None in counts else sum(counts)


def is_counts(state) -> bool:
    """A Lightning loop's state: mappings whose leaves are counts (integers >= 0) or flags."""
    return isinstance(state, dict) and all(
        is_counts(v) if isinstance(v, dict) else isinstance(v, bool) or (
            isinstance(v, int) and v >= 0) for v in state.values())


def check_model_state(checkpoint: dict, module: torch.nn.Module, path,
                      finite: bool = True) -> None:
    """:class:`CheckpointError` unless the checkpoint's tensors have exactly the module's names
    and shapes, a dtype of the same kind (a float stays a float: precision may change between
    runs), live on the CPU, are finite, and hold the module's extra states (each layer's kept
    count ``k``, which the run's config decides) — a checkpoint of another model would fail
    deep inside Lightning, one with another ``k`` would train another mask, one with NaN
    scores would train an epoch before it stopped as diverged."""
    expected, stored = module.state_dict(), checkpoint["state_dict"]
    names = sorted(set(stored) ^ set(expected)) or [
        k for k in expected if stored[k].shape != expected[k].shape]
    if names:
        raise CheckpointError(f"checkpoint {str(path)!r} holds another model than its config "
                              f"builds (first difference: {names[0]!r})")
    for name, tensor in stored.items():
        ours = expected[name]
        if tensor.device.type != "cpu" or not same_kind(tensor.dtype, ours.dtype):
            raise CheckpointError(f"checkpoint {str(path)!r}: its {name!r} is {tensor.dtype} on "
                                  f"{tensor.device.type}, the model's is {ours.dtype}")
        if finite and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"checkpoint {str(path)!r}: its {name!r} holds NaN or "
                                  f"infinite values, which no training continues; resume from "
                                  f"another checkpoint or start the run over")
        if name.endswith("_extra_state") and not torch.equal(tensor, ours):
            raise CheckpointError(f"checkpoint {str(path)!r}: its {name!r} is "
                                  f"{tensor.tolist()}, the run's config gives {ours.tolist()} "
                                  f"(the kept count of that tensor)")


def same_kind(stored: torch.dtype, ours: torch.dtype) -> bool:
    return stored == ours or (stored.is_floating_point and ours.is_floating_point)


def fresh_optimizers(module) -> tuple[list, list]:
    """The optimizers and schedules ``module.configure_optimizers()`` builds (either as a dict
    of one of each or as two lists)."""
    built = module.configure_optimizers()
    if isinstance(built, dict):
        return [built["optimizer"]], [built["lr_scheduler"]["scheduler"]]
    return list(built[0]), list(built[1])


def optimizer_fault(stored: dict, optimizer: torch.optim.Optimizer,
                    finite: bool = True) -> str | None:
    """What in an optimizer's stored state does not fit ``optimizer`` (None: it fits): the same
    groups of the same parameter indices, settings of the same types, and per parameter the
    same kinds of state, each a finite tensor of the parameter's shape or a 0-dimensional one
    (a step count). Settings a torch version adds or drops are not asked for."""
    fresh = optimizer.state_dict()["param_groups"]
    groups = stored["param_groups"]
    if not all(isinstance(g, dict) for g in groups):
        return "has parameter groups that are not mappings of settings"
    if len(groups) != len(fresh):
        return f"has {len(groups)} parameter groups, this run's optimizer {len(fresh)}"
    for group, ours in zip(groups, fresh):
        if group.get("params") != ours["params"]:
            return f"orders the parameters {group.get('params')!r}, this run {ours['params']}"
        bad = next((k for k, v in ours.items() if k in group and not same_type(group[k], v)),
                   None if "lr" in group else "lr")
        bad = bad or next((k for k, v in group.items() if k != "params" and is_real(v)
                           and not 0 <= v < math.inf), None)
        if bad:
            return f"has {bad} = {group.get(bad)!r}, this run's optimizer {ours.get(bad)!r}"
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = stored["state"]
    if not isinstance(state, dict) or not set(state) <= set(range(len(params))):
        return f"names parameters {sorted(state, key=str)[:3]!r}… of {len(params)}"
    if len({frozenset(s) for s in state.values()}) > 1:
        return "holds other kinds of state for some parameters than for others"
    for index, entries in state.items():
        for key, value in entries.items():
            param = params[index]
            if not isinstance(value, torch.Tensor) or value.device.type != "cpu" or (
                    value.dim() and (value.shape != param.shape
                                     or not same_kind(value.dtype, param.dtype))):
                what = (f"{tuple(value.shape)} {value.dtype}" if isinstance(value, torch.Tensor)
                        else repr(value)[:40])
                return (f"has {key} {what} for a parameter of shape {tuple(param.shape)} "
                        f"{param.dtype}")
            if finite and value.is_floating_point() and not torch.isfinite(value).all():
                return f"has NaN or infinite values in a parameter's {key}"
    return None


def schedule_fault(stored: dict, fresh: dict, epochs: int) -> str | None:
    """What in a schedule's stored state differs from the run's fresh one (None: nothing but
    its progress, and that of the same types)."""
    for key, ours in fresh.items():
        if key not in stored:
            continue
        value = stored[key]
        if key in SCHEDULE_PROGRESS:
            if not same_type(value, ours) or (isinstance(value, list) and (
                    len(value) != len(ours) or not all(map(same_type, value, ours)))):
                return f"has {key} = {value!r}, not like {ours!r}"
            if key == "last_epoch" and not 0 <= value <= epochs:
                return f"has last_epoch = {value}, not 0 to {epochs} (the run's epochs)"
        elif value != ours:
            return f"has {key} = {value!r}, the run's config gives {ours!r}"
    return None


def is_real(value) -> bool:
    """A real number that is not a bool (finite or not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def same_type(value, ours) -> bool:
    """``value`` is of ``ours``'s kind: a bool for a bool, a real number for a number (not a
    bool), else the same type (anything for None)."""
    if ours is None:
        return True
    if isinstance(ours, bool):
        return isinstance(value, bool)
    if isinstance(ours, numbers.Real):
        return is_real(value)
    return isinstance(value, type(ours))
