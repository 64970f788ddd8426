"""Which runs may train together as one stack, and how many of them fit in memory: the
members of a stack may differ only in :data:`VARYING` (:func:`check_stackable`), some runs
cannot be a stack's members at all (:func:`unstackable`), and what a stack needs grows by the
same for each member more (:func:`member_needs`, :func:`stack_need`,
:func:`members_that_fit`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .config import OUTPUT_ONLY
from .config_schema import RunConfig, on_gpu
from .datamodule import TensorDataModule
from .errors import ConfigError
from .memory import MemoryNeed, memory_needed
from .optim import optim_settings
from .run import model_spec, refusing_unbuildable

#: What the members of a stack may differ in; every other model or recipe field must agree,
#: the seed too: the members train on one batch order, and a member of another seed than the
#: order's recorded a seed whose single run trains on another (its results not its config's).
VARYING = ("sparsity", "epochs")
#: The precision whose runs are not stacked: float16 autocast scales each run's loss by its
#: own ``GradScaler``, and a stack steps its members through Lightning's one scaler, whose
#: ``update`` after each member's step changes the scale the next members' gradients are
#: unscaled by (S updates a step: the scale grows S times as fast as a single run's).
UNSTACKABLE_PRECISION = "16-mixed"


def recipe(config: RunConfig) -> dict:
    """The fields of ``config`` that every member of a stack must share."""
    return {k: v for k, v in config.to_dict().items() if k not in VARYING + OUTPUT_ONLY}


def check_stackable(configs: Sequence[RunConfig]) -> None:
    """Raise :class:`ConfigError` naming the first key in which two members differ (other than
    sparsity and epochs), or what keeps them from being stacked at all."""
    if not configs:
        raise ConfigError("a stack needs at least one member")
    first = recipe(configs[0])
    for config in configs[1:]:
        for key, value in recipe(config).items():
            if value != first[key]:
                raise ConfigError(
                    f"cannot stack these runs: they differ in {key!r} ({first[key]!r} vs "
                    f"{value!r}); the members of a stack may differ only in "
                    f"{' and '.join(VARYING)}"
                    + ("" if key != "seed" else " (one batch order, its seed's: a stack per "
                       "seed, as a sweep makes)"))
    why = unstackable(configs[0])
    if why:
        raise ConfigError(why)


def unstackable(config: RunConfig) -> str | None:
    """Why a run of ``config`` cannot be a stack's member (a sweep runs such cells singly),
    or None."""
    if config.train_weights:
        return ("cannot stack --train-weights runs: the trained dense baseline is a single run "
                "(stacks are for edge-popup members)")
    if config.trainer:
        return (f"cannot stack runs with Trainer options ({', '.join(config.trainer)}): a stack "
                f"steps its members itself (use --no-stack)")
    if config.devices != 1:
        return (f"cannot stack runs on {config.devices} devices: a stack runs on one device "
                f"(use --no-stack for DDP cells)")
    if config.precision == UNSTACKABLE_PRECISION:
        return ("cannot stack 16-mixed runs: each run scales its loss by a gradient scaler of "
                "its own, whose scale follows its own overflows; a stack's members would share "
                "Lightning's one scaler, updated after every member's step (use --no-stack, or "
                "bf16-mixed)")
    return None


#: :func:`memory_needed` of a stack of one member and of two, by the member's config but its
#: seed, epochs and folders (which change no tensor's size): :func:`member_needs`'.
MEMBER_NEEDS: dict[str, tuple[MemoryNeed, MemoryNeed]] = {}


def member_needs(config: RunConfig) -> list[tuple[int, int]]:
    """What a stack of one member of ``config``'s variant (its cells of one seed, differing
    in sparsity and epochs) needs and what each member more adds, in bytes, for each size that
    its check before it is built compares (:func:`~lotterynet.memory.check_fits`: as built,
    and on the CPU in training): each member more holds the same tensors (its scores, as built
    its own frozen copies, in training their gradients and states and its part of a step's
    activations), so what a stack of ``n`` needs grows by the same for each, read off
    :func:`memory_needed` of one member and of two (two builds on ``meta``, not ``n``: a stack
    of 1,000 members took minutes to count)."""
    key = repr(dataclasses.replace(config, seed=0, epochs=1, out=None, resume=None))
    if key not in MEMBER_NEEDS:
        with refusing_unbuildable(config.arch):
            member = (model_spec(config, TensorDataModule(config.dataset, config.data_dir)),
                      optim_settings(config))
            MEMBER_NEEDS[key] = tuple(memory_needed([member] * n, config, stack=True)
                                      for n in (1, 2))
    one, two = MEMBER_NEEDS[key]
    checked = ("built",) if on_gpu(config.accelerator) else ("built", "trained")
    return [(getattr(one, size), getattr(two, size) - getattr(one, size)) for size in checked]


def stack_need(config: RunConfig, members: int) -> int:
    """What a stack of ``members`` of ``config``'s variant needs, as its check compares it
    (:func:`member_needs`)."""
    return max(first + (members - 1) * more for first, more in member_needs(config))


def members_that_fit(config: RunConfig, have: int | None, jobs: int = 1) -> int | None:
    """The most members of ``config``'s variant that a stack may hold and still pass its check
    before it is built (:func:`member_needs`, against ``have``, the memory available
    (:func:`~lotterynet.memory.memory_available`, read by the caller, who may say it); a
    ``jobs``-th of it where ``jobs`` stacks train at once, each in its own process, each
    checked alone as it starts). At least 1 (a member that does not fit alone is refused as
    its single run); None where the memory available is unknown."""
    needs = member_needs(config)
    if have is None:
        return None
    return max(1, min(1 + (have // jobs - first) // more for first, more in needs))
