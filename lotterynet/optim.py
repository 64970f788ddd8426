"""Optimizers and learning-rate schedules by name.

Only parameters with ``requires_grad`` reach the optimizer: in an edge-popup model those are
the scores, so weight decay acts on the scores and the frozen random weights never move.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import nn

from .archs import recipe_lr
from .registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")
SCHEDULERS: Registry = Registry("scheduler")


@OPTIMIZERS.register("sgd")
def sgd(params, *, lr, momentum, weight_decay):
    """SGD with torch's fused kernel: one pass over each tensor per step instead of four (the
    decay, momentum and update of the foreach path); on the CPU it gives the same numbers bit for
    bit (``tests/test_train.py``)."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           fused=True)


@OPTIMIZERS.register("adam")
def adam(params, *, lr, momentum, weight_decay):
    """Adam with ``betas=(momentum, 0.999)`` and L2 weight decay (added to the gradient)."""
    return torch.optim.Adam(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(params, *, lr, momentum, weight_decay):
    """AdamW: Adam with ``betas=(momentum, 0.999)`` and decoupled weight decay."""
    return torch.optim.AdamW(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)


@SCHEDULERS.register("cosine")
def cosine(optimizer, *, epochs):
    """Cosine annealing to 0 over ``epochs`` (stepped once per epoch): torch's
    ``CosineAnnealingLR``, whose rate climbs back after ``epochs`` steps (it is periodic), so
    a loop must not step it further (``EdgePopupModule`` refuses a Trainer that would)."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"the cosine schedule needs its length: optim['epochs'] or the "
                         f"Trainer's max_epochs, got {epochs!r} (a Trainer bounded by "
                         f"max_steps or max_time only has none); give one, or "
                         f"scheduler='constant'")
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)


@SCHEDULERS.register("constant")
def constant(optimizer, *, epochs):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def float16_failure(optimizer: str) -> str | None:
    """Why ``optimizer`` cannot train float16 tensors (``16-true``, a model made ``.half()``),
    None where it can. Adam's and AdamW's second moment, (1 − β₂)·g² with β₂ = 0.999, rounds to
    0 below float16's least number (2⁻²⁴) for every |g| < 5.5e-3, and so does their eps (1e-8):
    the first step divides the first moment by 0, and such a tensor is inf (NaN where g = 0).
    A run then stopped as diverged in its first epoch, telling to lower the lr, which cannot
    help. (bfloat16 has float32's range: Adam trains ``bf16-true``.)"""
    if optimizer in ("adam", "adamw"):
        return (f"in float16 {optimizer}'s second moment of a gradient below about 5e-3, and "
                f"its eps 1e-8, round to 0, so its first step makes those tensors inf or NaN")
    return None


def optimizer_and_schedule(model: nn.Module, optim: dict, epochs: int | None):
    """The optimizer of ``model``'s trainable parameters and its schedule over ``epochs``, as
    ``optim`` (a run's ``optimizer``, ``lr``, ``momentum``, ``weight_decay``, ``scheduler``)
    names them: one construction for a single run and each member of a stack, which then take
    the same steps. An optimizer that cannot train the float16 parameters given
    (:func:`float16_failure`) is refused (``ValueError``), before any step."""
    params = trainable_parameters(model)
    why = float16_failure(optim["optimizer"])
    if why and any(p.dtype == torch.float16 for p in params):
        raise ValueError(f"optimizer {optim['optimizer']!r} with float16 parameters (precision "
                         f"'16-true', or a model made .half()): {why}; give optim['optimizer'] "
                         f"'sgd', or precision 'bf16-true', 'bf16-mixed' or '32-true'")
    optimizer = OPTIMIZERS.get(optim["optimizer"])(
        params, lr=optim["lr"], momentum=optim["momentum"], weight_decay=optim["weight_decay"])
    return optimizer, SCHEDULERS.get(optim["scheduler"])(optimizer, epochs=epochs)


def optim_settings(config) -> dict:
    """The optimizer and schedule of a run (a :class:`~lotterynet.config_schema.RunConfig`), as
    :class:`~lotterynet.module.EdgePopupModule` takes them: an unset ``lr`` is the recipe's of
    its architecture (:func:`~lotterynet.archs.recipe_lr`)."""
    return dict(optimizer=config.optimizer, scheduler=config.scheduler,
                lr=recipe_lr(config.arch, config.lr), momentum=config.momentum,
                weight_decay=config.weight_decay, epochs=config.epochs)


#: What each optimizer number must be (``lr`` 0 would hold the model fixed: refused).
OPTIM_NUMBERS = {"lr": (lambda v: 0 < v < math.inf, "a positive finite number"),
                 "momentum": (lambda v: 0 <= v < 1, "a finite number in [0, 1)"),
                 "weight_decay": (lambda v: 0 <= v < math.inf, "a finite number >= 0")}


def shown(value) -> str:
    """``value`` as a refusal shows it: its repr, a numpy number's as the Python number it
    holds (``nan``, not ``np.float64(nan)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def check_optim(optim: dict) -> None:
    """One line (``ValueError``) naming the first bad setting of those ``optim`` holds: names
    from the registries, ``lr``, ``momentum`` and ``weight_decay`` as :data:`OPTIM_NUMBERS`
    says, ``epochs`` None or a positive integer. The one check of a run's config
    (:func:`~lotterynet.config_checks.check_numbers`) and of
    :class:`~lotterynet.module.EdgePopupModule`'s settings."""
    if "optimizer" in optim:
        OPTIMIZERS.get(optim["optimizer"])
    if "scheduler" in optim:
        SCHEDULERS.get(optim["scheduler"])
    for key, (holds, said) in OPTIM_NUMBERS.items():
        value = optim.get(key)
        if key in optim and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                             or not holds(value)):
            raise ValueError(f"{key} must be {said}, got {shown(value)}")
    epochs = optim.get("epochs")
    if epochs is not None and (isinstance(epochs, bool) or
                               not isinstance(epochs, numbers.Integral) or epochs < 1):
        raise ValueError(f"epochs (the schedule's length) must be a positive integer or None "
                         f"(the Trainer's max_epochs), got {shown(epochs)}")
