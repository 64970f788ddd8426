"""A run's memory, counted before its model is built: a lower bound of what its tensors
certainly take (:func:`memory_needed`, read off a build and a training forward on the ``meta``
device) against what the machine has available (:func:`check_fits`). A run that needs more
would end in the kernel's out-of-memory kill, which cannot be caught: it says nothing and
leaves the run's folder behind."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .config import ConfigError, RunConfig, examples_per_device, on_gpu
from .convert import on_meta
from .data import DATASETS
from .errors import in_binary_units, plural
from .machine import available_memory
from .models import build_model
from .stacked import frozen_prefix_length

#: The dtype a precision casts a model's floating tensors to in training; the others train them
#: in the float32 they are built in.
CAST = {"64-true": torch.float64, "bf16-true": torch.bfloat16, "16-true": torch.float16}
#: The dtype a mixed precision computes in where autocast lowers an operation; at least its
#: width is what each floating tensor saved for the backward takes there.
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@dataclass
class MemoryNeed:
    """Lower bounds of what a run's (or a stack's) models hold (:func:`memory_needed`)."""

    built: int  # bytes, as built on the CPU
    trained: int  # bytes, in training
    params: int  # parameters
    scores: int  # trained parameters (scores, and any trained bias or norm)
    states: int  # optimizer tensors per trained parameter
    dtype: torch.dtype  # of the floating tensors in training
    saved: int  # bytes autograd saves for the backward in one training forward (in trained)
    batch: int  # of that forward


def optimizer_states(optim: dict) -> int:
    """Tensors of its shape that the optimizer keeps for each trained parameter once it has
    stepped: Adam's and AdamW's two moments, SGD's momentum buffer (none without momentum);
    none counted for another optimizer."""
    return {"adam": 2, "adamw": 2, "sgd": int(optim["momentum"] > 0)}.get(optim["optimizer"], 0)


def memory_needed(members: Sequence[tuple[dict, dict]], config: RunConfig) -> MemoryNeed:
    """What the models of ``members`` (``build_model`` spec, optimizer settings) certainly hold,
    read off builds on the ``meta`` device (nothing allocated): built (on the CPU, in the
    float32 they are drawn in), each parameter and buffer; in training under ``config``'s
    precision, each in the dtype it casts them to, and for each trained parameter (a score) its
    gradient and the optimizer's state (:func:`optimizer_states`), all allocated by the end of
    the first step, and what autograd saves for the backward in one forward of a training
    batch of ``config``'s data set (:func:`saved_for_backward`; its batch size, or all the
    examples where they are fewer; the batch itself where a layer saves it). Nothing else (the
    gradients flowing back, a step's temporaries, the data set, the allocators' own) is
    counted."""
    dtype = CAST.get(config.precision, torch.float32)
    batch = min(config.batch_size, examples_per_device(config))
    need = MemoryNeed(0, 0, 0, 0, 0, dtype, 0, batch)
    models = []
    for spec, optim in members:
        with on_meta():
            model = build_model(**spec)
        models.append(model)
        states = optimizer_states(optim)
        need.states = max(need.states, states)
        for tensor in (*model.parameters(), *model.buffers()):
            trained = isinstance(tensor, torch.nn.Parameter) and tensor.requires_grad
            size = (dtype if tensor.is_floating_point() else tensor.dtype).itemsize
            need.built += tensor.numel() * tensor.element_size()
            need.trained += tensor.numel() * size * (1 + (1 + states) * trained)
            need.params += tensor.numel() * isinstance(tensor, torch.nn.Parameter)
            need.scores += tensor.numel() * trained
    data = DATASETS.get(config.dataset)
    need.saved = saved_for_backward(
        models, (batch, data.in_channels, data.image_size, data.image_size),
        AUTOCAST.get(config.precision, dtype))
    need.trained += need.saved
    return need


def saved_for_backward(models: Sequence[torch.nn.Module], shape: tuple[int, ...],
                       dtype: torch.dtype) -> int:
    """Bytes that autograd saves for the backward in one training forward of a batch of
    ``shape`` through ``models`` (built on the ``meta`` device; a stack's members, their frozen
    leading modules run once, as a stack runs them), run on that device, nothing allocated:
    the activations, and the masked weights the subnet layers compute, each storage once (two
    tensors that share one are one), its floating tensors in ``dtype``; not the models' own
    parameters and buffers, counted already. None (0) where a forward cannot run on ``meta``
    (an operation without a meta kernel, a value read off the data, whatever it raises there:
    the run is not refused for it): still a lower bound."""
    held = {t.untyped_storage()._cdata for m in models for t in (*m.parameters(), *m.buffers())}
    saved: dict[int, torch.Tensor] = {}  # by storage (the tensor kept: its id stays unique)

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = tensor.untyped_storage()._cdata
        if key not in held:
            saved[key] = tensor
        return tensor

    n = frozen_prefix_length(models)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            x = torch.empty(shape, device="meta")
            x = models[0][:n](x) if n else x
            for model in models:  # (built in training mode)
                (model[n:] if n else model)(x)
    except Exception:  # noqa: BLE001 (a forward that runs on a real device may fail on meta)
        return 0
    return sum(t.untyped_storage().nbytes() // t.element_size()
               * (dtype if t.is_floating_point() else t.dtype).itemsize for t in saved.values())


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
    saved = (f", and {in_binary_units(need.saved)} of activations and masked weights that a "
             f"batch of {need.batch} saves for the backward") * bool(need.saved)
    batch = ""
    if not on_gpu(config.accelerator) and need.trained > need.built:
        needed, stage = (need.trained, f"to train ({need.params:,} parameters in "
                                       f"{str(need.dtype)[6:]}, {need.scores:,} of them "
                                       f"trained, each with a gradient{state}{saved})")
        batch = " or a smaller --batch-size" * bool(need.saved)
    if have is not None and needed > have:
        raise ConfigError(
            f"{what} needs at least {in_binary_units(needed)} of memory {stage} and this "
            f"machine has {in_binary_units(have)} available; the sparsity does not change it "
            f"(pruned weights are held all the same): fewer parameters (a smaller --pairs or "
            f"--hidden, another --structure or --arch){batch} need less, or a machine with more "
            f"memory")
