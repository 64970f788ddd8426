"""Exact nearest subset sum for a batch of instances, by meet in the middle.

The problem (Lueker 1998; Pensia et al. 2020, Experiment 1; da Cunha et al. 2022, Sec. 3): given
a target ``w`` and coefficients ``a_1 .. a_n``, find ``S ⊆ [n]`` minimising ``|w − Σ_{i∈S} a_i|``.
The fixed-size variant (Natale et al., the Random Fixed-Size Subset Sum problem, Theorem 2) asks
for ``|S| = k`` exactly. Pensia et al. solved each of the 397k weights of FC2 as a Gurobi MIP
(21.5 h on 36 cores); da Cunha et al. did the same for LeNet5's 2,572 conv weights at n = 30.

Algorithm (Horowitz & Sahni 1974, "meet in the middle"): split the coefficients into halves A
(the first ``n // 2``) and B (the rest); enumerate each half's ``2^{n/2}`` subset sums as one
matrix product with the table of bit patterns; sort B's sums; for every sum ``s`` of A,
binary-search ``w − s`` among them. The best partner of ``s`` is one of the two neighbours of the
insertion point, so the optimum is the best of these ``2 · 2^{|A|}`` candidates:
``O(n · 2^{n/2})`` work per instance instead of ``2^n``, run for a chunk of instances at once as
tensor operations (float64). For ``|S| = k`` the half-sums are grouped by popcount and group
``j`` of A is searched only in group ``k − j`` of B, which is exact as well.
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
import torch
from tqdm.auto import tqdm

MEMORY_BUDGET = 256 * 2**20
"""Bytes of intermediates one chunk may use; the chunk size over W is chosen from it."""


def _bytes_per_instance(n: int) -> int:
    """Upper estimate of the intermediates of one instance: per sum of B its value, sorted value
    and sort index (plus slack); per sum of A the query, insertion point, two neighbours' values
    and errors (float64 / int64)."""
    return 32 * 2 ** (n - n // 2) + 80 * 2 ** (n // 2)


def _patterns(m: int, device: torch.device) -> torch.Tensor:
    """All ``2^m`` subsets of ``m`` items as a ``(2^m, m)`` bool table, ordered by popcount, so
    that the subsets of each size are one contiguous block of rows."""
    r = torch.arange(2**m, device=device)
    bits = (r[:, None] >> torch.arange(m, device=device)) & 1 == 1
    return bits[torch.argsort(bits.sum(1), stable=True)]


def _groups(m_a: int, m_b: int, k: int | None) -> list[tuple[slice, slice]]:
    """Row blocks (of A's table, of B's table) that may be combined: all with all, or for
    ``|S| = k`` size ``j`` of A with size ``k − j`` of B (the blocks of ``_patterns``)."""
    if k is None:
        return [(slice(0, 2**m_a), slice(0, 2**m_b))]

    def block(m, size):
        start = sum(math.comb(m, p) for p in range(size))
        return slice(start, start + math.comb(m, size))

    return [(block(m_a, j), block(m_b, k - j)) for j in range(max(0, k - m_b), min(k, m_a) + 1)]


def _solve_chunk(t, c, bits_a, bits_b, groups):
    """Best (row of A's table, row of B's table) per instance, for targets ``t`` (w,) and
    coefficients ``c`` (w, n)."""
    half = bits_a.shape[1]
    query = torch.addmm(t[:, None], c[:, :half], bits_a.T.to(c.dtype), alpha=-1)  # t − sums of A
    sums_b = c[:, half:] @ bits_b.T.to(c.dtype)
    inf = torch.full_like(t[:, None], math.inf)
    best_err = torch.full_like(t, math.inf)
    best_a = torch.zeros(t.shape, dtype=torch.long, device=t.device)
    best_b = torch.zeros_like(best_a)
    for rows_a, rows_b in groups:
        sorted_b, order = torch.sort(sums_b[:, rows_b], dim=1)
        padded = torch.cat([-inf, sorted_b, inf], dim=1)
        q = query[:, rows_a].contiguous()
        pos = torch.searchsorted(sorted_b, q)  # padded[pos] < q <= padded[pos + 1]
        below = q - padded.gather(1, pos)
        above = padded.gather(1, pos + 1) - q
        err, i = torch.minimum(below, above).min(1)
        i = i[:, None]
        j = pos.gather(1, i) + (above.gather(1, i) < below.gather(1, i)) - 1  # into sorted_b
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_a = torch.where(better, i.squeeze(1) + rows_a.start, best_a)
        best_b = torch.where(better, order.gather(1, j).squeeze(1) + rows_b.start, best_b)
    return best_a, best_b


_INTEGERS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _numbers(x) -> torch.Tensor:
    """A list's floats are Python's float64: read through numpy, not at torch's float32
    default; a list of tensors (one that requires grad numpy refuses) as torch reads it."""
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError):
        return torch.as_tensor(x)


def _check(name: str, x) -> torch.Tensor:
    try:
        x = (x if isinstance(x, torch.Tensor) else _numbers(x)).detach()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be numbers (a tensor, an array or nested lists), got "
                         f"{type(x).__name__} {x!r:.40}") from None
    if not (x.dtype.is_floating_point or x.dtype in _INTEGERS):
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    return check_values(name, x, "give it values first (e.g. module.to_empty(device=...) and "
                                  "an init)")


def check_values(name: str, x: torch.Tensor, remedy: str) -> torch.Tensor:
    """``x`` (real numbers) as float64, refused in one line if it is on the meta device
    (saying ``remedy``) or holds a NaN or an infinity (naming the first)."""
    if x.is_meta:
        raise ValueError(f"{name} is on the meta device, which holds no values; {remedy}")
    x = x.detach().to(torch.float64)
    bad = ~torch.isfinite(x)
    if bad.any():
        where = torch.nonzero(bad)[0].tolist()
        raise ValueError(f"{name}{where} = {x[tuple(where)].item()} is not finite; {name} "
                         f"must hold finite numbers")
    return x


def solve(targets, coeffs, k: int | None = None, *, chunk_size: int | None = None,
          progress: bool | None = None):
    """Exact nearest subset sum for W independent instances (meet in the middle, see module doc).

    Args:
        targets: ``(W,)`` target values ``w``.
        coeffs: ``(W, n)`` coefficients; row r belongs to ``targets[r]``. Computed in float64 on
            the device of ``coeffs`` (CPU or CUDA).
        k: ``None`` — any subset, the empty one (sum 0) included; an int in ``[0, n]`` — subsets
            of exactly ``k`` elements (Natale et al.'s fixed-size subset sum).
        chunk_size: instances solved at once; default from a memory budget of
            ``MEMORY_BUDGET`` bytes of intermediates, so peak memory is bounded for any W.
        progress: tqdm bar over instances; ``None`` shows it when there are more than 16 chunks.

    Returns:
        ``(selection, approx, error)``: bool ``(W, n)`` chosen coefficients, float64 ``(W,)``
        ``approx = Σ_i coeffs[r, i] · selection[r, i]`` and ``error = |targets − approx|``,
        the smallest achievable (up to float64 rounding of the sums).

    Raises:
        ValueError: targets not 1-D, coeffs not ``(W, n)``, the two on different devices,
            NaN/inf values or sums that overflow float64, k outside ``[0, n]``, chunk_size < 1,
            or n so large that one instance exceeds the memory budget.
    """
    t, c = _check("targets", targets), _check("coeffs", coeffs)
    if t.dim() != 1:
        raise ValueError(f"targets must be 1-D with shape (W,), got shape {tuple(t.shape)}")
    if c.dim() != 2 or c.shape[0] != t.shape[0]:
        raise ValueError(
            f"coeffs must have shape (W, n) = ({t.shape[0]}, n) to match targets, "
            f"got shape {tuple(c.shape)}"
        )
    if t.device != c.device:
        raise ValueError(f"targets are on {t.device} but coeffs on {c.device}; use one device")
    overflow = ~torch.isfinite(c.abs().sum(1) + t.abs())
    if overflow.any():
        r = int(torch.nonzero(overflow)[0])
        raise ValueError(f"targets[{r}] and coeffs[{r}] are too large: their sums overflow float64")
    n = c.shape[1]
    if k is not None and (isinstance(k, bool) or not isinstance(k, Integral) or not 0 <= k <= n):
        raise ValueError(f"k must be None or an int in [0, n] = [0, {n}], got k={k!r}")
    need = _bytes_per_instance(n)
    if need > MEMORY_BUDGET:
        largest = max(m for m in range(n) if _bytes_per_instance(m) <= MEMORY_BUDGET)
        raise ValueError(
            f"n={n} coefficients need {need / 2**20:.0f} MiB per instance, over the memory "
            f"budget of {MEMORY_BUDGET / 2**20:.0f} MiB; use n <= {largest}"
        )
    if chunk_size is None:
        chunk_size = MEMORY_BUDGET // need
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be None or an int >= 1, got chunk_size={chunk_size!r}")

    W = t.shape[0]
    bits_a = _patterns(n // 2, c.device)
    bits_b = _patterns(n - n // 2, c.device)
    groups = _groups(n // 2, n - n // 2, None if k is None else int(k))
    chunks = range(0, W, chunk_size)
    if progress is None:
        progress = len(chunks) > 16
    selection = torch.empty((W, n), dtype=torch.bool, device=c.device)
    approx = torch.empty_like(t)
    bar = tqdm(total=W, unit="inst", disable=not progress, desc="subset sum")
    with torch.no_grad(), bar:
        for s in chunks:
            part = slice(s, s + chunk_size)
            a, b = _solve_chunk(t[part], c[part], bits_a, bits_b, groups)
            selection[part] = torch.cat([bits_a[a], bits_b[b]], dim=1)
            approx[part] = (c[part] * selection[part]).sum(1)
            bar.update(a.shape[0])
    return selection, approx, (t - approx).abs()
