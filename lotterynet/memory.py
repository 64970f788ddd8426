"""A run's memory, counted before its model is built: a lower bound of what its tensors
certainly take (:func:`memory_needed`, read off a build on the ``meta`` device) against what the
machine has available (:func:`check_fits`). A run that needs more would end in the kernel's
out-of-memory kill, which cannot be caught: it says nothing and leaves the run's folder behind."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .config import ConfigError, RunConfig, on_gpu
from .convert import on_meta
from .errors import in_binary_units, plural
from .machine import available_memory
from .models import build_model

#: The dtype a precision casts a model's floating tensors to in training; the others train them
#: in the float32 they are built in.
CAST = {"64-true": torch.float64, "bf16-true": torch.bfloat16, "16-true": torch.float16}


@dataclass
class MemoryNeed:
    """Lower bounds of what a run's (or a stack's) models hold (:func:`memory_needed`)."""

    built: int  # bytes, as built on the CPU
    trained: int  # bytes, in training
    params: int  # parameters
    scores: int  # trained parameters (scores, and any trained bias or norm)
    states: int  # optimizer tensors per trained parameter
    dtype: torch.dtype  # of the floating tensors in training


def optimizer_states(optim: dict) -> int:
    """Tensors of its shape that the optimizer keeps for each trained parameter once it has
    stepped: Adam's and AdamW's two moments, SGD's momentum buffer (none without momentum);
    none counted for another optimizer."""
    return {"adam": 2, "adamw": 2, "sgd": int(optim["momentum"] > 0)}.get(optim["optimizer"], 0)


def memory_needed(members: Sequence[tuple[dict, dict]], precision: str) -> MemoryNeed:
    """What the models of ``members`` (``build_model`` spec, optimizer settings) certainly hold,
    read off builds on the ``meta`` device (nothing allocated): built (on the CPU, in the
    float32 they are drawn in), each parameter and buffer; in training under ``precision``,
    each in the dtype it casts them to, and for each trained parameter (a score) its gradient
    and the optimizer's state (:func:`optimizer_states`), all allocated by the end of the
    first step. Nothing else (activations, the data, the allocators' own) is counted."""
    dtype = CAST.get(precision, torch.float32)
    need = MemoryNeed(0, 0, 0, 0, 0, dtype)
    for spec, optim in members:
        with on_meta():
            model = build_model(**spec)
        states = optimizer_states(optim)
        need.states = max(need.states, states)
        for tensor in (*model.parameters(), *model.buffers()):
            trained = isinstance(tensor, torch.nn.Parameter) and tensor.requires_grad
            size = (dtype if tensor.is_floating_point() else tensor.dtype).itemsize
            need.built += tensor.numel() * tensor.element_size()
            need.trained += tensor.numel() * size * (1 + (1 + states) * trained)
            need.params += tensor.numel() * isinstance(tensor, torch.nn.Parameter)
            need.scores += tensor.numel() * trained
    return need


def check_fits(what: str, need: MemoryNeed, config: RunConfig) -> None:
    """Refuse in one line (:class:`ConfigError`), before it is built, a run (or a stack,
    ``what``) whose models certainly cannot fit in this machine's memory: their ``need``
    (:func:`memory_needed`) as built (on the CPU, also for a run on a GPU) and, on the CPU,
    in training, against what the machine has available
    (:func:`~lotterynet.machine.available_memory`; not checked where that is unknown). A run
    that needs more ends in the kernel's out-of-memory kill, which cannot be caught: it says
    nothing and leaves the run's folder behind. A GPU's memory is not asked for (that would
    initialise CUDA in this process, which a forking strategy, ``ddp_fork``, then refuses):
    a GPU that runs out raises an error, which the run reports (:class:`OutOfMemory`)."""
    have = available_memory()
    state = f" and {plural(need.states, 'optimizer state')}" * bool(need.states)
    needed, stage = (need.built, f"to build ({need.params:,} parameters, drawn in float32)")
    if not on_gpu(config.accelerator) and need.trained > need.built:
        needed, stage = (need.trained, f"to train ({need.params:,} parameters in "
                                       f"{str(need.dtype)[6:]}, {need.scores:,} of them "
                                       f"trained, each with a gradient{state})")
    if have is not None and needed > have:
        raise ConfigError(
            f"{what} needs at least {in_binary_units(needed)} of memory {stage} and this "
            f"machine has {in_binary_units(have)} available; the sparsity does not change it "
            f"(pruned weights are held all the same): fewer parameters (a smaller --pairs or "
            f"--hidden, another --structure or --arch) need less, or a machine with more "
            f"memory")
