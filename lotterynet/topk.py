"""Exactly ``k`` entries of largest magnitude: the masks of
:class:`~lotterynet.masking.MaskedWeight`, chosen by selection, never a full sort
(:func:`topk_mask`), and, for a stack's members all at once, of
:class:`~lotterynet.stack_model.StackedModel`, by one sort of all rows (:func:`rows_topk_mask`),
each row's mask the one :func:`topk_mask` gives it.

The k-th largest magnitude is found by ``torch.topk(sorted=False)`` on every device but the CPU
(``k`` is a Python int fixed by the shape and the sparsity, so there is no host-device sync;
and MPS, say, had no ``kthvalue`` until pytorch PR #161817, August 2025) and by quickselect
(``kthvalue``) on the CPU, where it is faster; everything above it is kept, and entries tied
with it fill the remaining places by index: the lowest indices first (``ties="low"``, the
default) or the highest (``ties="high"``, what a stable ascending sort keeps, as in the
edge-popup reference code). Either way exactly ``k`` are kept and the mask is the same on every
device. On the CPU a :class:`ThresholdHint` (the last step's threshold) narrows the quickselect
to the few entries near it — scores move little per step — and selects exactly the same
entries. With ``group_dim``, each group of ``group_size`` consecutive entries keeps its own
``k`` (:func:`group_view`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch


def group_view(t: torch.Tensor, group_dim: int | None, group_size: int | None):
    """``(view, dim)``: ``t`` with its groups laid along ``dim`` of ``view`` (one group holding
    everything when ``group_dim`` is None)."""
    if group_dim is None:
        return t.reshape(1, -1), 1
    dim = group_dim % t.ndim
    return t.unflatten(dim, (-1, group_size)), dim + 1


#: Below this many entries a plain quickselect over the whole tensor is as fast as the hinted
#: one (its few extra ops cost more than they save: 4,200 entries 0.12 ms either way, 16,000
#: entries 0.33 vs 0.16 ms, 420 entries 0.06 vs 0.11 ms; one CPU thread).
HINT_MIN_ENTRIES = 8192


@dataclass
class ThresholdHint:
    """Where the k-th largest magnitude was last time (``value``) and the relative half-width
    of the band searched around it (``width``); :func:`topk_mask` reads and updates it."""

    value: float | None = None
    width: float = 0.01


def count_ones(mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """How many entries of a boolean or 0/1 float ``mask`` are set (along ``dim``). A float
    mask is summed into :func:`count_dtype`, exact whatever the mask's own float: a bfloat16
    or float16 sum rounds counts above 256 or 2048. ``count_nonzero`` of a float is ~100x
    slower on the CPU (240k entries: 1.07 ms against 11 µs for the sum)."""
    if not mask.is_floating_point():
        return mask.sum(dim)
    return mask.sum(dim, dtype=count_dtype(mask.numel(), mask.device))


def count_dtype(entries: int, device: torch.device) -> torch.dtype:
    """The dtype in which :func:`count_ones` sums a 0/1 float mask of ``entries`` on
    ``device``: float32, exact below 2**24; from there float64, or on MPS, which has no
    float64 (TypeError: 'Cannot convert a MPS Tensor to float64 dtype'), int64, as a boolean
    mask is counted."""
    if entries < 1 << 24:
        return torch.float32
    return torch.int64 if device.type == "mps" else torch.float64


def compare(op, values: torch.Tensor, threshold, dtype: torch.dtype) -> torch.Tensor:
    """``op(values, threshold)`` (``torch.ge``, ``torch.gt``) as 0/1 in ``dtype``, written
    directly: on the CPU a float result is ~4× faster to make than a boolean one (240k
    entries, one thread: 22 against 90 µs)."""
    if dtype == torch.bool:
        return op(values, threshold)
    return op(values, threshold, out=torch.empty(values.shape, dtype=dtype,
                                                 device=values.device))


def kth_largest_near(values: torch.Tensor, k: int, hint: ThresholdHint
                     ) -> tuple[torch.Tensor, int, torch.Tensor] | None:
    """``(t, places, tied_at)``: the ``k``-th largest entry ``t`` of the 1-D CPU tensor
    ``values``, how many of the ``k`` places are left for entries equal to ``t`` (``k`` minus
    those above it) and the indices of all entries equal to ``t`` (ascending), found by a
    quickselect over only the entries in the band ``[lo, hi]`` around ``hint.value``; None when
    the band does not contain it. Exact: if ``a`` entries lie above ``hi`` with ``a < k`` and the
    band holds at least ``k − a`` entries, the k-th largest overall is the (k − a)-th largest of
    the band (and every entry equal to it is in the band). The band widens after a miss and
    narrows while it holds over 4096 entries."""
    if hint.value is None:
        return None
    lo, hi = hint.value * (1 - hint.width), hint.value * (1 + hint.width)
    # 0/1 floats, not booleans, and a float sum for the count (240k entries: 22 + 11 µs
    # against 90 + 43 µs for a boolean and its count_nonzero)
    above_hi = compare(torch.gt, values, hi, torch.float32)
    above = int(count_ones(above_hi))
    if above < k:  # lo <= v <= hi: (v >= lo) minus (v > hi)
        at = compare(torch.ge, values, lo, torch.float32).sub_(above_hi).bool().nonzero()
        at = at.squeeze(1)
    if above >= k or at.numel() < k - above:
        hint.width = min(hint.width * 4, 1.0)
        return None
    if at.numel() > 4096:
        hint.width /= 2
    band = values[at]
    threshold = band.kthvalue(band.numel() - (k - above) + 1).values
    places = k - above - int(torch.count_nonzero(band > threshold))
    return threshold, places, at[band == threshold]


def topk_mask(magnitudes: torch.Tensor, k: int, group_dim: int | None = None,
              group_size: int | None = None, ties: str = "low",
              hint: ThresholdHint | None = None, dtype: torch.dtype = torch.bool
              ) -> torch.Tensor:
    """Mask (boolean, or 0/1 in ``dtype``) of exactly ``k`` largest entries, without sorting;
    entries tied at the cut-off are kept by index, lowest first (``ties="low"``) or highest
    first (``"high"``). With ``group_dim``, exactly ``k`` per block of ``group_size``
    consecutive entries along it. ``hint`` (CPU, one group of at least
    :data:`HINT_MIN_ENTRIES`) narrows the quickselect and is updated to this call's threshold."""
    grouped, dim = group_view(magnitudes, group_dim, group_size)
    n = grouped.shape[dim]
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k <= n:
        raise ValueError(f"k must be an integer in [0, {n}] (the entries of a group), got {k!r}")
    if k == n or k == 0:  # global_topk may leave a tensor nothing
        return torch.full_like(magnitudes, k > 0, dtype=dtype)
    if magnitudes.is_meta:  # shapes only (a model probed or built on the meta device)
        return torch.empty_like(magnitudes, dtype=dtype)
    # No host reads off the CPU (they would wait for the device) nor under torch.compile (they
    # would break the graph): the tie ranking then always runs, and a compiled CPU step
    # selects by plain quickselect.
    # torch.func's transforms (vmap over stacked scores: model ensembling) can do neither
    # host reads nor ops with out= on the tensors they wrap (a check dynamo cannot trace).
    compiling = torch.compiler.is_compiling()
    functional = not compiling and torch._C._functorch.is_functorch_wrapped_tensor(grouped)
    traced = compiling or functional
    on_cpu = grouped.device.type == "cpu"
    if not on_cpu:  # radix select; k is a Python int, so nothing waits on the device
        threshold = grouped.topk(k, dim=dim, sorted=False).values.amin(dim, keepdim=True)
    elif traced:
        threshold = grouped.kthvalue(n - k + 1, dim=dim, keepdim=True).values
    else:  # quickselect, over the entries near the last threshold when there is a hint
        hinted = hint is not None and grouped.shape[0] == 1 and n >= HINT_MIN_ENTRIES
        near = kth_largest_near(grouped[0], k, hint) if hinted else None
        if near:  # the band also says which entries tie with the threshold: rank only those
            threshold, places, tied_at = near
            hint.value = float(threshold)  # a host read: free on the CPU
            if tied_at.numel() <= places:  # every tied entry fits: nothing to choose
                return laid_out_as(compare(torch.ge, grouped, threshold, dtype), magnitudes)
            mask = compare(torch.gt, grouped, threshold, dtype)
            keep = tied_at[:places] if ties == "low" else tied_at[tied_at.numel() - places:]
            mask[0, keep] = True
            return laid_out_as(mask, magnitudes)
        threshold = grouped.kthvalue(n - k + 1, dim=dim, keepdim=True).values
        if hinted:
            hint.value = float(threshold)
        at_least = compare(torch.ge, grouped, threshold, dtype)
        # Every entry tied with the threshold fits: the tie rule has nothing to choose.
        if bool((count_ones(at_least, dim) == k).all()):
            return laid_out_as(at_least, magnitudes)
    # On the CPU a host read (free there) skips the ranking of ties when all of them fit.
    return laid_out_as(cut_at(grouped, threshold, k, dim, ties, dtype,
                              host_reads=on_cpu and not traced, functional=functional),
                       magnitudes)


def laid_out_as(mask: torch.Tensor, like: torch.Tensor, members: int | None = None
                ) -> torch.Tensor:
    """``mask``, computed in the logical order of ``like``'s entries, in ``like``'s shape and
    memory layout: a channels_last weight's mask is channels_last too, so ``weight * mask`` reads
    both tensors in one order (mixed layouts: ~2x slower on the CPU, 2.4M entries 0.94 against
    0.50 ms) and the user's ``layer.mask()`` has the scores' layout. A contiguous ``like`` (the
    usual case) costs no copy. ``members``: ``mask`` holds that many masks of ``like``'s shape
    one after another (a stack's, ``(members, *like.shape)``), each laid out as ``like``
    (up to the strides of size-1 dimensions: a 1x1 kernel's mask is not copied)."""
    shape = like.shape if members is None else (members, *like.shape)
    mask = mask.view(shape)
    if memory_order(mask, like.dim()) == memory_order(like):
        return mask
    layout = torch.empty_like(like, device="meta").stride()  # like's (a dense one if it is not)
    if members is not None:
        layout = (like.numel(), *layout)
    return torch.empty_strided(shape, layout, dtype=mask.dtype, device=mask.device).copy_(mask)


def memory_order(t: torch.Tensor, dims: int | None = None) -> tuple[int, ...]:
    """The strides of ``t``'s last ``dims`` dimensions (all of them by default) of more than one
    entry: equal for two tensors of one shape that lay their entries out in one order (a size-1
    dimension's stride orders nothing)."""
    dims = t.dim() if dims is None else dims
    return tuple(stride for stride, n in zip(t.stride()[t.dim() - dims:], t.shape[t.dim() - dims:])
                 if n > 1)


def cut_at(values: torch.Tensor, threshold: torch.Tensor, k, dim: int, ties: str,
           dtype: torch.dtype, host_reads: bool, functional: bool = False) -> torch.Tensor:
    """The entries of ``values`` above ``threshold`` (the ``k``-th largest along ``dim``: an int,
    or a tensor of one k per slice) and, of those tied with it, as many as make ``k``, by index
    (``ties``); 0/1 in ``dtype``. ``host_reads``: skip ranking the ties when all of them fit,
    which the host must read to know. ``functional``: under a ``torch.func`` transform, which
    batches no op with ``out=``."""
    mask = values > threshold
    missing = k - mask.sum(dim, keepdim=True)
    tied = values == threshold
    if not host_reads or bool((tied.sum(dim, keepdim=True) > missing).any()):
        rank = tied.cumsum(dim) if ties == "low" else tied.flip(dim).cumsum(dim).flip(dim)
        tied &= rank <= missing
    if functional:
        return torch.logical_or(mask, tied).to(dtype)
    out = torch.empty(values.shape, dtype=dtype, device=values.device)
    return torch.logical_or(mask, tied, out=out)


def rows_topk_mask(magnitudes: torch.Tensor, ks: torch.Tensor, ties: str = "low",
                   dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """Row ``r`` of the ``(S, N)`` ``magnitudes`` keeps its own ``ks[r]`` largest entries
    (``ks``: integers on the same device), tied entries by index as :func:`topk_mask` keeps
    them, so each row's mask is the one :func:`topk_mask` gives that row alone. The masks of S
    tensors of one shape in one pass: a stack's members (:class:`~lotterynet.stack_model.
    StackedModel`). One sort of all rows, where S selections would each launch a dozen small
    kernels on a GPU."""
    ks = ks.view(-1, 1)
    ordered = magnitudes.sort(dim=1, descending=True).values
    # Each row's k-th largest; a row keeping none cuts at its largest and fills no tie.
    threshold = ordered.gather(1, (ks - 1).clamp(min=0))
    return cut_at(magnitudes, threshold, ks, 1, ties, dtype, host_reads=False)
