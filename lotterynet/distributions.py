"""Distributions of the frozen random weights, by name.

Every sampler has the signature ``sample(shape, fan_in, generator, **options) -> Tensor`` and
returns float32 on the CPU; ``fan_in`` is the number of inputs a unit of the layer actually
receives (for the subset-sum structure's first layer that is 1, see ``structures.py``).
Layers and models are drawn under :func:`float32_draws`, so that a seed gives the same numbers
whatever ``torch.set_default_dtype`` says, and on any number of threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import math
import numbers

import torch

from .errors import python_value
from .registry import Registry

DISTRIBUTIONS: Registry = Registry("weight distribution (init)")

RELU_GAIN = math.sqrt(2.0)
FLOAT32 = torch.finfo(torch.float32)  # the dtype every sampler draws in
#: Entries per call of an elementwise op with a vectorised kernel (below torch's parallel grain
#: size, 32768, and a multiple of every SIMD block): see :func:`_one_thread`.
CHUNK = 16384


def layer_seed(seed: int, name: str) -> int:
    """A stable 63-bit seed for the layer called ``name`` of a model drawn with ``seed`` (sha256,
    not Python's salted hash): the layers of one seed, and of different seeds, draw from
    unrelated streams (``seed + i`` would give layer 1 of seed 0 the draws of layer 0 of
    seed 1)."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_weights(name: str, shape, fan_in: int, generator=None, **options) -> torch.Tensor:
    """Draw a frozen weight tensor of ``shape`` from the distribution registered as ``name``
    (:data:`DISTRIBUTIONS`): float32 on the CPU whatever torch's default dtype, as the layers
    draw theirs, so that a seed's numbers do not depend on it. ``fan_in``: the inputs a unit
    of the layer receives (the scale of all but ``uniform`` and ``hyperbolic``);
    ``generator``: a CPU ``torch.Generator`` (None: torch's global one); ``options``: the
    distribution's own, a layer's ``init_kwargs`` (``hyperbolic``'s ``alpha`` and ``beta``)."""
    from .structures import check_positive_int  # structures imports this module

    sampler = DISTRIBUTIONS.get(name)
    check_positive_int("fan_in", fan_in)
    takes = list(inspect.signature(sampler).parameters)[3:]  # after (shape, fan_in, generator)
    unknown = [key for key in options if key not in takes]
    if unknown:
        raise ValueError(f"init {name!r} takes no option {unknown[0]!r} (init_kwargs); its "
                         f"options: {', '.join(takes) or 'none'}")
    with float32_draws():  # (under a float64 default dtype a seed drew other numbers)
        return sampler(tuple(shape), fan_in, generator, **options)


def check_seed(seed, below: int = 2**64) -> int:
    """``seed`` as an ``int``, or an error naming it: an integer in [0, below). The default
    is the range ``torch.Generator.manual_seed`` takes without wrapping (it also takes negative
    seeds, but reads -1 as 2**64 - 1, so two seeds would draw the same weights). The message
    writes a power of two ``below`` as 2**n, and a numpy ``seed`` as the Python value it holds."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {python_value(seed)!r}")
    if not 0 <= seed < below:
        power = below.bit_length() - 1
        bound = f"2**{power}" if below == 2**power else str(below)
        raise ValueError(f"seed must be in [0, {bound}), got {python_value(seed)!r}")
    return int(seed)


@contextlib.contextmanager
def float32_draws():
    """Run the block under torch's float32 default dtype; yields the caller's default dtype,
    which the caller casts what it built to afterwards (as building it and then calling
    ``.to(dtype)`` would). Under ``torch.set_default_dtype(torch.float64)`` a seed would
    otherwise draw other numbers, not the float32 ones in more precision."""
    caller = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield caller
    finally:
        torch.set_default_dtype(caller)


def cast_drawn(module: torch.nn.Module, default: torch.dtype, device=None, dtype=None
               ) -> torch.nn.Module:
    """``module``, drawn under :func:`float32_draws` (float32, on the CPU), moved to ``device``
    and ``dtype`` (None: ``default``, the caller's default dtype that :func:`float32_draws`
    yielded), as ``nn.Linear(..., device=, dtype=)`` makes its tensors; left where it is when
    that is where it is."""
    dtype = dtype or default
    if device is not None or dtype != torch.float32:
        module.to(device=device, dtype=dtype)
    return module


def seeded_generator(seed: int | None) -> torch.Generator | None:
    """A CPU generator seeded with ``seed``, or None for ``seed=None`` (draws then come from
    torch's global generator)."""
    return None if seed is None else torch.Generator().manual_seed(check_seed(seed))


def draw_seed(generator: torch.Generator | None) -> int | None:
    """A seed in [0, 2**62) drawn from the CPU ``generator``, for a part built with a seed of
    its own; None (no seed: torch's global generator) for ``generator`` None."""
    return None if generator is None else int(
        torch.randint(2**62, (), generator=generator, device="cpu"))


def _check_finite(name: str, value):
    """``value``, if it is a finite real number; else an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


def _one_thread(fn, t: torch.Tensor) -> torch.Tensor:
    """``fn(t)`` for an elementwise ``fn``, the same numbers whatever the thread count: torch
    splits a large tensor among its threads, and the entries at the end of each thread's share
    go through the scalar version of a kernel, whose ``pow`` / ``exp`` differ from the
    vectorised ones in the last bit. In chunks that one thread runs whole, every entry takes
    the path it takes on one thread."""
    return torch.cat([fn(chunk) for chunk in t.reshape(-1).split(CHUNK)]).view(t.shape)


def _uniform(shape, bound: float, generator) -> torch.Tensor:
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


def _random_signs(shape, generator) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator).float() * 2 - 1


@DISTRIBUTIONS.register("uniform")
def uniform(shape, fan_in, generator):
    """U[-1, 1], the distribution the subset-sum theorems assume (Pensia et al., Thm. 1)."""
    return _uniform(shape, 1.0, generator)


@DISTRIBUTIONS.register("scaled_uniform")
def scaled_uniform(shape, fan_in, generator):
    """U[-a, a] with a = 1/sqrt(fan_in) (PyTorch's default Linear/Conv scale)."""
    return _uniform(shape, 1.0 / math.sqrt(fan_in), generator)


@DISTRIBUTIONS.register("kaiming_normal")
def kaiming_normal(shape, fan_in, generator):
    """N(0, std^2), std = sqrt(2 / fan_in), as torch.nn.init.kaiming_normal_ (fan_in, ReLU)."""
    return torch.empty(shape).normal_(0.0, RELU_GAIN / math.sqrt(fan_in), generator=generator)


@DISTRIBUTIONS.register("kaiming_uniform")
def kaiming_uniform(shape, fan_in, generator):
    """U[-b, b], b = sqrt(6 / fan_in), as torch.nn.init.kaiming_uniform_ (fan_in, ReLU)."""
    return _uniform(shape, math.sqrt(3.0) * RELU_GAIN / math.sqrt(fan_in), generator)


@DISTRIBUTIONS.register("signed_constant")
def signed_constant(shape, fan_in, generator):
    """±σ with σ = sqrt(2 / fan_in), the best init in Ramanujan et al. (2020), Sec. 4."""
    return _random_signs(shape, generator) * (RELU_GAIN / math.sqrt(fan_in))


def check_positive(name: str, value):
    """``value``, if it is a positive finite real number; else an error naming ``name``."""
    positive = isinstance(value, numbers.Real) and 0 < value < math.inf
    if isinstance(value, bool) or not positive:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def orseau_range(eps_w: float = 0.01, w_max: float = 1.0) -> tuple[float, float]:
    """[α, β] = [α'/q, β'/q] of Orseau et al. (2020), Theorem 3:
    α' = 2ε_w/9, β' = 2w_max/3, q = (α'β')^{1/4}. Both must be positive and finite (``w_max``:
    the largest |weight| of the target, so an all-zero target has no range)."""
    for name, value in (("eps_w", eps_w), ("w_max", w_max)):
        check_positive(f"orseau_range: {name}", value)
    alpha_, beta_ = 2 * eps_w / 9, 2 * w_max / 3
    q = (alpha_ * beta_) ** 0.25
    return alpha_ / q, beta_ / q


@DISTRIBUTIONS.register("hyperbolic")
def hyperbolic(shape, fan_in, generator, alpha: float | None = None, beta: float | None = None):
    """Density ∝ 1/|w| on ±[α, β] (Orseau et al. 2020, Sec. 5): |w| = α (β/α)^u, u ~ U[0, 1],
    with a random sign. Defaults: Theorem 3's range for ε_w = 0.01, w_max = 1. The draw is in
    float32, so α, β and β/α must be normal float32 numbers (else the weights are 0, inf or
    NaN)."""
    default_alpha, default_beta = orseau_range()
    alpha = _check_finite("hyperbolic alpha", default_alpha if alpha is None else alpha)
    beta = _check_finite("hyperbolic beta", default_beta if beta is None else beta)
    if not (FLOAT32.tiny <= alpha < beta <= FLOAT32.max and beta / alpha <= FLOAT32.max):
        ratio = f", beta/alpha={beta / alpha:.3g}" if alpha > 0 else ""  # (the limit it may break)
        raise ValueError(f"hyperbolic needs {FLOAT32.tiny:.3g} <= alpha < beta <= "
                         f"{FLOAT32.max:.3g} and beta/alpha <= {FLOAT32.max:.3g} (float32), "
                         f"got alpha={alpha}, beta={beta}{ratio}")
    u = torch.rand(shape, generator=generator)
    return _random_signs(shape, generator) * alpha * _one_thread(lambda x: (beta / alpha) ** x, u)
