"""A run's memory, counted before its model is built: a lower bound of what its tensors
certainly take at the peak of a training step (:func:`memory_needed`, read off a build and
two training steps on the ``meta`` device) against what the machine has available
(:func:`check_fits`). A run that needs more would end in the kernel's out-of-memory kill, which
cannot be caught: it says nothing and leaves the run's folder behind."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch._prims_common import suggest_memory_format
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_leaves, tree_unflatten

from .config_schema import RunConfig, examples_per_device, on_gpu
from .data import DATASETS
from .errors import ConfigError, in_binary_units, plural
from .machine import available_memory, meminfo
from .masking import MaskedWeight
from .models import build_model
from .optim import optimizer_and_schedule, trainable_parameters
from .stack_model import frozen_prefix_length
from .topk import HINT_MIN_ENTRIES

#: The dtype a precision casts a model's floating tensors to in training; the others train them
#: in the float32 they are built in.
CAST = {"64-true": torch.float64, "bf16-true": torch.bfloat16, "16-true": torch.float16}
#: The dtype a mixed precision computes in where autocast lowers an operation; at least its
#: width is what each floating tensor a training step makes takes there.
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
    step: int  # bytes a training step holds at its peak beyond these (in trained)
    batch: int  # of that step
    shared: int = 0  # a stack's members' frozen parameters not counted again (at one place)
    #: bytes in training with a batch of one (the least a smaller batch needs), counted when
    #: called (a step on ``meta`` again); None where training is not counted (on a GPU)
    trained_at_one: Callable[[], int] | None = None


def optimizer_states(optim: dict) -> int:
    """Tensors of its shape that the optimizer keeps for each trained parameter once it has
    stepped: Adam's and AdamW's two moments, SGD's momentum buffer (none without momentum);
    none counted for another optimizer."""
    return {"adam": 2, "adamw": 2, "sgd": int(optim["momentum"] > 0)}.get(optim["optimizer"], 0)


def memory_needed(members: Sequence[tuple[dict, dict]], config: RunConfig,
                  stack: bool = False) -> MemoryNeed:
    """What the models of ``members`` (``build_model`` spec, optimizer settings) certainly hold,
    read off builds on the ``meta`` device (nothing allocated): built (on the CPU, in the
    float32 they are drawn in), each parameter and buffer; in training under ``config``'s
    precision, each in the dtype it casts them to (a stack's members' frozen ones at one place
    once: a stack makes equal ones one, :func:`~lotterynet.stack_model.share_frozen`; those of
    members of other seeds differ, which a build on ``meta`` does not tell), for each trained
    parameter (a score) its gradient and the optimizer's state (:func:`optimizer_states`), all
    held at once by the end of a step's backward, and what more a training step on a batch of
    ``config``'s data set holds at its peak (:func:`step_peak`: its activations, masks, masked
    weights, the gradients flowing back, the optimizer step's temporaries; its batch size, or
    all the examples where they are fewer; ``stack``: a stack's step; not for a run on a GPU,
    whose memory :func:`check_fits` does not ask), the selection of each mask's scratch
    included (:func:`selection_scratch`). Nothing else (the data set, another operation's
    scratch, the allocators' own) is counted."""
    dtype = CAST.get(config.precision, torch.float32)
    batch = min(config.batch_size, examples_per_device(config))
    need = MemoryNeed(0, 0, 0, 0, 0, dtype, 0, batch)
    models = []
    kept = 0  # bytes of the gradients and optimizer states
    places = set()  # of the frozen parameters counted
    for spec, optim in members:
        with torch.device("meta"):
            model = build_model(**spec)
        models.append(model)
        states = optimizer_states(optim)
        need.states = max(need.states, states)
        for name, tensor in (*model.named_parameters(), *model.named_buffers()):
            trained = isinstance(tensor, torch.nn.Parameter) and tensor.requires_grad
            size = tensor.numel() * (dtype if tensor.is_floating_point() else tensor.dtype).itemsize
            place = (name, tensor.shape, tensor.dtype)
            shared = place in places
            if isinstance(tensor, torch.nn.Parameter) and not trained:
                places.add(place)
            need.built += tensor.numel() * tensor.element_size()
            need.trained += size * (not shared)
            need.shared += tensor.numel() * shared
            kept += size * (1 + states) * trained
            need.params += tensor.numel() * isinstance(tensor, torch.nn.Parameter)
            need.scores += tensor.numel() * trained
    if on_gpu(config.accelerator):  # (only what is built is checked: :func:`check_fits`)
        return need
    data, held = DATASETS.get(config.dataset), need.trained

    def step(batch: int) -> int:  # (the peak holds the gradients and states counted)
        return max(0, step_peak(models, [optim for _, optim in members],
                                (batch, data.in_channels, data.image_size, data.image_size),
                                dtype, AUTOCAST.get(config.precision), stack) - kept)

    need.step = step(batch)
    need.trained += kept + need.step
    need.trained_at_one = lambda: held + kept + step(1)
    return need


class LiveStorage(TorchDispatchMode):
    """While on, the bytes of the storages that operations make, from the operation that makes
    each to its freeing, and their peak (:attr:`peak`): each storage once (a view of it, or an
    operation that writes into it, makes none), its floating tensors' in :attr:`dtype`; not
    those in ``held`` (made before: the models' parameters and buffers). Nothing is allocated
    where the tensors are on the ``meta`` device."""

    def __init__(self, dtype: torch.dtype, held: set[int]):
        super().__init__()
        self.dtype, self.held, self.live, self.peak = dtype, held, 0, 0
        self.sizes: dict[int, int] = {}  # bytes of each storage counted, by its address
        self._finalizers: list[weakref.finalize] = []
        self.made: dict[tuple, tuple] = {}  # layouts of the outputs of operations run (run)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = self.run(func, args, kwargs or {})
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage()._cdata not in self.held:
                self.count(t, self.dtype, again=False)
        return out

    def run(self, func, args: tuple, kwargs: dict):
        """``func(*args, **kwargs)``; where its tensors are all on the ``meta`` device and the
        operation ran before on inputs of the same layouts with the same other arguments (of
        the same types: ``1``, ``1.0`` and ``True`` promote differently), what it gave then
        without its meta kernel: the inputs it returned (in place, its inputs' layouts
        unchanged) and new tensors in the layouts it made. A tensor is new only where its
        storage is none of its inputs' nor of its other outputs' (``_unsafe_view`` returns an
        alias that its schema does not mark). Many meta kernels are Python (aten's refs: ~1 ms
        an operation, nan_to_num_ 6 ms), and a stack's members, of one shape, run the same
        operations (70 FC2 members: 16k)."""
        leaves, spec = tree_flatten((args, kwargs))
        tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
        if not all(x.is_meta for x in tensors):
            return func(*args, **kwargs)
        layouts = [(x.shape, x.stride(), x.dtype, x.storage_offset()) if isinstance(
            x, torch.Tensor) else typed(x) for x in leaves]
        try:
            key = (func, spec, *layouts)
            made = self.made.get(key)
        except TypeError:  # (an argument that cannot be a key)
            return laid_out_as_on_cpu(func, args, func(*args, **kwargs))
        if made is not None:
            return tree_unflatten([leaves[m] if isinstance(m, int) else torch.empty_strided(
                m[0], m[1], dtype=m[2], device="meta") for m in made[0]], made[1])
        out = laid_out_as_on_cpu(func, args, func(*args, **kwargs))
        outs, out_spec = tree_flatten(out)
        if not all(isinstance(t, torch.Tensor) and t.is_meta for t in outs):
            return out
        storages = [t.untyped_storage()._cdata for t in (*tensors, *outs)]
        made = []
        for t in outs:
            given = next((j for j, x in enumerate(leaves) if x is t), None)
            if given is not None and layouts[given] == (t.shape, t.stride(), t.dtype,
                                                        t.storage_offset()):
                made.append(given)
            elif given is None and storages.count(t.untyped_storage()._cdata) == 1 \
                    and t.storage_offset() == 0 and t.untyped_storage().nbytes() == \
                    torch.empty_strided(t.shape, t.stride(), dtype=t.dtype,
                                        device="meta").untyped_storage().nbytes():
                made.append((t.shape, t.stride(), t.dtype))
            else:
                return out
        self.made[key] = made, out_spec
        return out

    def count(self, t: torch.Tensor, dtype: torch.dtype, again: bool = True) -> None:
        """Count the storage of ``t``, its floating tensors in ``dtype``; one counted already
        only ``again`` (anew)."""
        storage = t.untyped_storage()
        key, counted = storage._cdata, self.sizes.get(storage._cdata)
        if counted is None:
            self._finalizers.append(weakref.finalize(storage, self._free, key))
        elif not again:
            return
        size = storage.nbytes() // t.element_size() * (
            dtype if t.is_floating_point() else t.dtype).itemsize
        self.sizes[key] = size
        self.live += size - (counted or 0)
        self.peak = max(self.peak, self.live)

    def hold(self, size: int) -> None:
        """Count ``size`` bytes more held for a moment (an operation's scratch), freed before
        the next operation."""
        self.peak = max(self.peak, self.live + size)

    def _free(self, key: int) -> None:
        self.live -= self.sizes.pop(key)

    def __exit__(self, *args):
        for finalizer in self._finalizers:  # (the tensors left are no longer its to count)
            finalizer.detach()
        return super().__exit__(*args)


def laid_out_as_on_cpu(func, args: tuple, out):
    """``out``, what ``func`` gave on ``args`` on the ``meta`` device, laid out as the CPU's
    kernel lays it out where they differ: a convolution's output follows its input's (or
    else its weight's) channels-last memory format on the CPU, its meta kernel's does not (a
    later reshape of it then copies on ``meta`` alone: conv2 malach's hidden units)."""
    if func is not torch.ops.aten.convolution.default:
        return out
    formats = [suggest_memory_format(t) for t in args[:2]]
    layout = next((f for f in formats if f != torch.contiguous_format), torch.contiguous_format)
    return torch.empty_like(out, memory_format=layout)


def typed(x):
    """``x`` with its type, and those of its items (a list's, a tuple's): a key that tells
    ``1``, ``1.0`` and ``True`` apart, which are equal."""
    return type(x), tuple(map(typed, x)) if isinstance(x, (list, tuple)) else x


def step_peak(models: Sequence[torch.nn.Module], optims: Sequence[dict], shape: tuple[int, ...],
              dtype: torch.dtype, lowered: torch.dtype | None = None, stack: bool = False
              ) -> int:
    """The most bytes a training step holds at once beyond ``models``' parameters and buffers
    (:class:`LiveStorage`), read off two steps on a batch of ``shape`` through ``models``
    (built on the ``meta`` device; a stack's members, their frozen leading modules run once,
    as a stack runs them: in the data module, their output the batch), each with the
    optimizer of its settings in ``optims``, run on that device, nothing allocated (but
    Adam's step counts, a scalar each): the batch, the forward's activations, masks and
    masked weights, the loss, the backward's gradients (those flowing back and the trained
    parameters'), the optimizer's states (the second step starts with the first's) and its
    step's temporaries (a fused optimizer, which cannot step on ``meta``: its states, as it
    makes them, and none). Floating tensors are counted in ``dtype``, the parameters'; under
    a mixed precision, those that the forward and backward make in ``lowered``, autocast's
    (at least its width: what autocast lowers is not told apart), but the parameters'
    gradients. The gradients are set to None before the backward, as a single run's
    Lightning does (the forward holds the last step's), or, with ``stack``, after the step,
    as a stack does. None (0) where a step cannot run on ``meta`` (an operation without a
    meta kernel, a value read off the data, whatever it raises there: the run is not refused
    for it): still a lower bound. What an operation takes inside it (a kernel's scratch) is
    not counted, but a mask's selection (:func:`selection_scratch`, for a moment before each
    subnet tensor's forward; the first step's without a threshold hint): on ``meta`` it
    allocates nothing but the mask."""
    held = {t.untyped_storage()._cdata for m in models for t in (*m.parameters(), *m.buffers())}
    n = frozen_prefix_length(models)

    def step() -> None:
        x = torch.empty(shape, device="meta")
        y = torch.empty(shape[:1], dtype=torch.long, device="meta")
        live.dtype = lowered or dtype
        loss = sum(F.cross_entropy(model[n:](x) if n else model(x), y) for model in models)
        if not stack:  # (Lightning's automatic optimization: the forward held the last step's)
            for optimizer in optimizers:
                optimizer.zero_grad()
        loss.backward()
        live.dtype = dtype
        for model, optim, optimizer in zip(models, optims, optimizers):
            if not optimizer.defaults.get("fused"):
                optimizer.step()
            elif not optimizer.state:  # (no meta kernel: its states, as its first step makes them)
                for p in trainable_parameters(model):
                    optimizer.state[p]["meta"] = [torch.empty_like(p) for _ in
                                                  range(optimizer_states(optim))]
            if stack:  # (a stack's, each member's after its step)
                optimizer.zero_grad()

    hooks, hinted = [], False  # (the first step's masks have no threshold hint yet)
    try:
        if n:
            with torch.no_grad():
                shape = tuple(models[0][:n](torch.empty(shape, device="meta")).shape)
        with LiveStorage(dtype, held) as live:
            optimizers = [optimizer_and_schedule(model, optim, 1)[0]
                          for model, optim in zip(models, optims)]
            hooks = [p.register_post_accumulate_grad_hook(lambda p: live.count(p.grad, dtype))
                     for model in models for p in trainable_parameters(model)]
            hooks += [m.register_forward_pre_hook(
                lambda m, args: live.hold(selection_scratch(m, dtype, hinted)))
                for model in models for m in model.modules() if isinstance(m, MaskedWeight)]
            step()
            hinted = True
            step()
    except Exception:  # noqa: BLE001 (a step that runs on a real device may fail on meta)
        return 0
    finally:
        for hook in hooks:
            hook.remove()
    return live.peak


#: The least number of first scores expected to equal the one at a mask's cut-off
#: (:func:`ties_expected`) for which :func:`selection_scratch` counts the ranking of those
#: tied: the first mask then ranks them in 99 draws of 100 or more.
TIES_CERTAIN = 100


def ties_expected(weight: MaskedWeight, dtype: torch.dtype) -> float:
    """How many of ``weight``'s first scores in ``dtype`` are expected, at least, to equal the
    one at its mask's cut-off (over all groups): its ``n`` scores are drawn U(±b) by
    ``uniform_`` on a grid of 2**24 values (their magnitudes 2**-23 b apart), and ``dtype``
    rounds them to its own values, at least ``t * eps / 2`` apart near a cut-off ``t`` (the
    k-th largest of a group of ``m`` magnitudes uniform on [0, b]: ``t = (m - k) / (m + 1) b``
    on average). One group expecting ``λ`` such ties ranks none of them only where the k-th
    largest is the last of them: ``(1 - e**-λ) / λ < 1 / λ`` of draws; several groups rank
    none less often still."""
    m = weight.group_size
    cut = (m - weight.k) / (m + 1)
    return weight.weight.numel() * max(2.0 ** -23, cut * torch.finfo(dtype).eps / 2)


def selection_scratch(weight: MaskedWeight, dtype: torch.dtype, hinted: bool) -> int:
    """The most bytes that the CPU's selection of ``weight``'s mask in a training forward
    (:func:`~lotterynet.topk.topk_mask`) holds at once beyond what the step holds before it,
    at least, its scores in ``dtype``: the scores' magnitudes and, where it runs a quickselect
    over the whole tensor (without a threshold hint, ``hinted``, as in a first step, and in
    every step for a tensor of several groups or under ``HINT_MIN_ENTRIES`` entries), a copy
    of them and an int64 index each (aten's ``kthvalue``; 12 bytes an entry of float32,
    measured); near the hint, the 0/1 float32 of those above its band and the float64 copy
    that summing it makes from 2**24 entries on (``count_ones``: aten's sum casts first), or
    under that, the band's 0/1 float32 and boolean (what each way takes before it may fall
    back to a quickselect: 12 and 9 bytes an entry). The mask left is counted on ``meta``.
    Where the first scores tied at a cut-off do not all fit, the quickselect is followed by
    their ranking over the whole tensor (:func:`~lotterynet.topk.cut_at`): the magnitudes,
    the mask and two booleans, the ties' int64 copy and its cumsum (``ties="high"``: and a
    flipped boolean), and each group's threshold and int64 count: 10 bytes an entry more than
    the quickselect (11 with ``ties="high"``), measured. It is counted in a first step where
    those ties are all but certain (:data:`TIES_CERTAIN`), as in bfloat16 from 51,200 scores
    at sparsity 0.5, in float32 from 839M (a resumed run's trained float32 scores lie finer
    than the draws: it may rank none); not where they depend on the scores (later steps)."""
    n, size = weight.weight.numel(), dtype.itemsize
    if weight.k in (0, weight.group_size) or hinted and not weight.scores.requires_grad:
        return 0  # (nothing to choose; frozen scores keep their first mask)
    if hinted and weight.group_size == n >= HINT_MIN_ENTRIES:
        return n * (size + 4 + (8 if n >= 1 << 24 else 5))
    if hinted or ties_expected(weight, dtype) < TIES_CERTAIN:
        return n * (2 * size + 8)
    return n * (2 * size + 18 + (weight.ties == "high")) + n // weight.group_size * (size + 8)


#: A cgroup's memory files, by the controllers its line of /proc/self/cgroup names (cgroup
#: v2's none, v1's memory controller, whose limits are a huge number where none is set): its
#: limit and what it holds, the keys of its page cache and of the shared memory in that cache
#: in its memory.stat, and its swap limit and what it holds there (v2's of swap alone, v1's
#: of memory and swap together).
CGROUP_FILES = {"": ("memory.max", "memory.current", "file", "shmem", "memory.swap.max",
                     "memory.swap.current"),
                "memory": ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_cache",
                           "total_shmem", "memory.memsw.limit_in_bytes",
                           "memory.memsw.usage_in_bytes")}


def cgroup_memory(root: Path = Path("/sys/fs/cgroup"), own: Path = Path("/proc/self/cgroup"),
                  swappiness: Path = Path("/proc/sys/vm/swappiness")) -> int | None:
    """Bytes that this process's cgroups (named in ``own``, their folders under ``root``) let it
    still take: the least, over its cgroup and those above it that set a memory limit (cgroup
    v2's ``memory.max``, v1's ``memory.limit_in_bytes``), of that limit less what the cgroup
    holds but its page cache, which the kernel reclaims before it kills (not the shared
    memory in it, tmpfs and /dev/shm files, which only swap frees), and the swap they may
    still use beyond it, as :func:`~lotterynet.machine.available_memory` counts the
    machine's: the machine's SwapFree, or less where a cgroup's swap limit leaves less (v2's
    ``memory.swap.max``; v1's ``memory.memsw.limit_in_bytes`` limits memory and swap
    together); none where the machine has none, or where the swappiness that a cgroup's
    reclaim at its limit uses is 0 (v1's own ``memory.swappiness``, v2's ``swappiness``, the
    machine's): it then swaps nothing out. None where no cgroup sets a memory limit or none
    can be read (not in a cgroup, another system)."""
    try:
        lines = own.read_text().splitlines()
    except OSError:
        return None
    rooms, together, swaps = [], [], [meminfo("SwapFree") or 0]
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers not in CGROUP_FILES:
            continue
        limit, usage, cache, shmem, swap_limit, swap_usage = CGROUP_FILES[controllers]
        parts = [part for part in path.split("/") if part]
        folders = [root.joinpath(controllers, *parts[:depth]) for depth in range(len(parts) + 1)]
        limited = [left_under(folder, limit, usage, cache, shmem) for folder in folders]
        rooms += limited
        if controllers:  # (v1's swap limit holds its memory and swap together)
            together += [left_under(folder, swap_limit, swap_usage, cache, shmem)
                         for folder in folders]
        else:
            swaps += [left_under(folder, swap_limit, swap_usage) for folder in folders]
        if any(n is not None for n in limited) and swaps_nothing(
                folders[-1] / "memory.swappiness" if controllers else swappiness):
            swaps.append(0)  # (where this hierarchy limits memory)
    rooms, together, swaps = ([n for n in found if n is not None]
                              for found in (rooms, together, swaps))
    return min([min(rooms) + max(min(swaps), 0), *together]) if rooms else None


def swaps_nothing(swappiness: Path) -> bool:
    """Whether the file ``swappiness`` says 0: a cgroup's reclaim at its limit then takes only
    page cache (only the machine's own reclaim swaps at 0)."""
    try:
        return int(swappiness.read_text()) == 0
    except (OSError, ValueError):
        return False


def left_under(folder: Path, limit: str, usage: str, cache: str | None = None,
               shmem: str | None = None) -> int | None:
    """Bytes that the cgroup ``folder``'s ``limit`` file leaves beyond what its ``usage``
    file says it holds, and its page cache (the ``cache`` key of its memory.stat) less the
    shared memory in it (``shmem``); None where it sets no limit or cannot be read."""
    try:
        most = (folder / limit).read_text().strip()
        if most == "max" or int(most) >= 1 << 62:
            return None
        stat = dict(entry.split() for entry in (folder / "memory.stat").read_text()
                    .splitlines()) if cache else {}
        return (int(most) - int((folder / usage).read_text()) + int(stat.get(cache, 0))
                - int(stat.get(shmem, 0)))
    except (OSError, ValueError):
        return None


def memory_available() -> int | None:
    """What this machine's memory leaves a run: :func:`~lotterynet.machine.available_memory`,
    or less where its cgroup's limit leaves less (:func:`cgroup_memory`); None where both are
    unknown."""
    return min((m for m in (available_memory(), cgroup_memory()) if m is not None), default=None)


class DoesNotFit(ConfigError):
    """:func:`check_fits`' refusal, its parts as its args (it pickles): what needs how much
    memory and what this machine has available, then what needs less; a stack that resumes
    says its own ways on after the first (:func:`~lotterynet.stack.set_up_and_run_stack`)."""

    def __str__(self) -> str:
        return "; ".join(self.args)


def check_fits(what: str, need: MemoryNeed, config: RunConfig) -> None:
    """Refuse in one line (:class:`DoesNotFit`), before it is built, a run (or a stack,
    ``what``) whose models certainly cannot fit in this machine's memory: their ``need``
    (:func:`memory_needed`) as built (on the CPU, also for a run on a GPU) and, on the CPU,
    in training, against what the machine has available (:func:`memory_available`; not
    checked where that is unknown). A run that needs more ends in the kernel's out-of-memory
    kill, which cannot be caught: it says nothing and leaves the run's folder behind. A GPU's
    memory is not asked for (that would initialise CUDA in this process, which a forking
    strategy, ``ddp_fork``, then refuses): a GPU that runs out raises an error, which the run
    reports (:class:`OutOfMemory`). A smaller ``--batch-size`` is advised only where a batch of
    one would fit."""
    have = memory_available()
    state = f" and {plural(need.states, 'optimizer state')}" * bool(need.states)
    needed, stage = (need.built, f"to build ({need.params:,} parameters, drawn in float32)")
    shared = (f", {need.shared:,} of them copies of frozen ones that an earlier member holds "
              f"at the same place, not counted again") * bool(need.shared)
    step = (f", and {in_binary_units(need.step)} more at the peak of a training step on a "
            f"batch of {need.batch}: its activations, masks, masked weights and temporaries"
            ) * bool(need.step)
    training = not on_gpu(config.accelerator) and need.trained > need.built
    if training:
        needed, stage = (need.trained, f"to train ({need.params:,} parameters in "
                                       f"{str(need.dtype)[6:]}{shared}, {need.scores:,} of "
                                       f"them trained, each with a gradient{state}{step})")
    if have is not None and needed > have:
        smaller = training and need.batch > 1 and need.trained_at_one() <= have
        batch = " or a smaller --batch-size" * smaller  # (where a batch of one would fit)
        raise DoesNotFit(
            f"{what} needs at least {in_binary_units(needed)} of memory {stage} and this "
            f"machine has {in_binary_units(have)} available", f"the sparsity does not change "
            f"it (pruned weights are held all the same): fewer parameters (a smaller --pairs or "
            f"--hidden, another --structure or --arch){batch} need less, or a machine with more "
            f"memory")
