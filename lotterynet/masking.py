"""Edge-popup masks (Ramanujan et al. 2020, Alg. 1): a frozen random tensor ``w`` and a trainable
score tensor ``s`` of the same shape; the forward pass uses ``w ⊙ m`` with ``m = 1`` on the
``k`` entries of largest ``|s|``. The backward pass is straight-through:
``∂L/∂s = ∂L/∂(w ⊙ m) ⊙ w ⊙ sign(s)`` (the sign comes from ranking by ``|s|``).

The mask is chosen by selection, never a full sort: ``torch.topk(sorted=False)`` on CUDA (``k``
is a Python int fixed by the shape and the sparsity, so there is no host-device sync), a
quickselect threshold (``kthvalue``) on the CPU, where it is faster; both keep exactly ``k``.
On the CPU a :class:`ThresholdHint` (the last step's threshold) narrows the quickselect to the
few entries near it — scores move little per step — which is 4-8x cheaper than a quickselect
over the whole tensor and selects exactly the same entries.
The boolean mask is cached until the scores change, so evaluation does not re-rank at all.

A tensor may be split into equal *groups* of ``group_size`` consecutive entries along
``group_dim``; then each group keeps exactly its own top ``k`` (the fixed-size subset sum of
Natale et al., where each target weight keeps exactly k of its n terms). The default is one
group holding the whole tensor, i.e. the layer-wise top-k of edge-popup.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
from torch import nn

from .distributions import sample_weights


def kept_count(numel: int, sparsity: float) -> int:
    """Number of entries a tensor of ``numel`` entries keeps: ``round((1 - sparsity) * numel)``."""
    return round((1.0 - sparsity) * numel)


def check_sparsity(sparsity, numel: int, unit: str = "a tensor") -> float:
    """Validate a sparsity (the fraction *pruned*) for ``unit`` (a tensor, or one group of a
    group-wise top-k) of ``numel`` entries."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(
            f"sparsity is the fraction of weights pruned and must be in [0, 1), got {sparsity!r}"
        )
    if kept_count(numel, sparsity) < 1:
        raise ValueError(
            f"sparsity {sparsity!r} keeps no weight of {unit} with {numel} entries; "
            f"use at most {1 - 1 / numel:.6g}"
        )
    return float(sparsity)


class _MaskedProduct(torch.autograd.Function):
    """``weight ⊙ mask`` forward; straight-through backward to the scores:
    ``∂L/∂s = ∂L/∂(w ⊙ m) ⊙ w ⊙ sign(s)`` (Ramanujan et al. 2020, Eq. 3 with the |s| ranking).
    One fused op instead of ``abs``, a float copy of the mask and a product."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor):
        ctx.save_for_backward(scores, weight)
        return torch.where(mask, weight, 0.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        scores, weight = ctx.saved_tensors
        return grad * weight * scores.sign(), None, None


def group_view(t: torch.Tensor, group_dim: int | None, group_size: int | None):
    """``(view, dim)``: ``t`` with its groups laid along ``dim`` of ``view`` (one group holding
    everything when ``group_dim`` is None)."""
    if group_dim is None:
        return t.reshape(1, -1), 1
    dim = group_dim % t.ndim
    return t.unflatten(dim, (-1, group_size)), dim + 1


@dataclass
class ThresholdHint:
    """Where the k-th largest magnitude was last time (``value``) and the relative half-width
    of the band searched around it (``width``); :func:`topk_mask` reads and updates it."""

    value: float | None = None
    width: float = 0.01


def kth_largest_near(values: torch.Tensor, k: int, hint: ThresholdHint) -> torch.Tensor | None:
    """The ``k``-th largest entry of the 1-D CPU tensor ``values``, found by a quickselect over
    only the entries in the band ``[lo, hi]`` around ``hint.value``; None when the band does
    not contain it. Exact: if ``a`` entries lie above ``hi`` with ``a < k`` and the band holds
    at least ``k − a`` entries, the k-th largest overall is the (k − a)-th largest of the band.
    The band widens after a miss and narrows while it holds many more entries than needed."""
    if hint.value is None:
        return None
    lo, hi = hint.value * (1 - hint.width), hint.value * (1 + hint.width)
    above = int(torch.count_nonzero(values > hi))
    band = values[(values >= lo) & (values <= hi)] if above < k else values[:0]
    if band.numel() < k - above or above >= k:
        hint.width = min(hint.width * 4, 1.0)
        return None
    if band.numel() > max(4096, 16 * (k - above)):
        hint.width /= 2
    return band.kthvalue(band.numel() - (k - above) + 1).values


def topk_mask(magnitudes: torch.Tensor, k: int, group_dim: int | None = None,
              group_size: int | None = None, hint: ThresholdHint | None = None) -> torch.Tensor:
    """Boolean mask of exactly ``k`` largest entries, without sorting; with ``group_dim``, exactly
    ``k`` per block of ``group_size`` consecutive entries along it. On the CPU, ties at the
    threshold are kept lowest index first; ``hint`` (one group only) speeds up the selection
    and is updated to this call's threshold."""
    grouped, dim = group_view(magnitudes, group_dim, group_size)
    n = grouped.shape[dim]
    if k >= n:
        return torch.ones_like(magnitudes, dtype=torch.bool)
    if grouped.is_cuda:  # radix select; k is a Python int, so nothing waits on the device
        mask = torch.zeros_like(grouped, dtype=torch.bool)
        mask.scatter_(dim, grouped.topk(k, dim=dim, sorted=False).indices, True)
    else:  # quickselect the k-th largest value; keep what is above it, then ties in order
        threshold = None
        if hint is not None and grouped.shape[0] == 1:
            threshold = kth_largest_near(grouped[0], k, hint)
        if threshold is None:
            threshold = grouped.kthvalue(n - k + 1, dim=dim, keepdim=True).values
        if hint is not None and grouped.shape[0] == 1:
            hint.value = float(threshold)  # a host read: free on the CPU
        mask = grouped >= threshold
        if bool((torch.count_nonzero(mask, dim) != k).any()):  # ties straddle the threshold
            mask = grouped > threshold
            missing = k - mask.sum(dim, keepdim=True)
            ties = grouped == threshold
            mask |= ties & (ties.cumsum(dim) <= missing)
    return mask.view_as(magnitudes)


class MaskedWeight(nn.Module):
    """One maskable tensor: frozen random ``weight`` and trainable ``scores``.

    ``forward()`` returns ``weight ⊙ mask``. ``k`` (entries kept per group; one group = the
    whole tensor unless ``group_dim`` is given) is set from ``sparsity`` or directly (global
    top-k, :meth:`set_mask`); ``kept`` is the tensor's total. ``weight`` may be passed in
    already sampled (``init`` is then unused). Scores are Kaiming-uniform with the weight's
    fan-in, as in the edge-popup reference.
    """

    def __init__(self, shape, *, fan_in: int, sparsity: float, init: str = "kaiming_normal",
                 init_kwargs: dict | None = None, generator: torch.Generator | None = None,
                 group_dim: int | None = None, group_size: int | None = None,
                 weight: torch.Tensor | None = None):
        super().__init__()
        if weight is None:
            weight = sample_weights(init, shape, fan_in, generator, **(init_kwargs or {}))
        self.weight = nn.Parameter(weight, requires_grad=False)
        bound = fan_in ** -0.5  # kaiming_uniform_(a=sqrt(5)), the edge-popup score init
        self.scores = nn.Parameter(torch.empty(shape).uniform_(-bound, bound, generator=generator))
        if group_dim is not None and (group_size is None or group_size < 1
                                      or shape[group_dim] % group_size):
            raise ValueError(f"group_size={group_size!r} must divide the size "
                             f"{shape[group_dim]} of dimension {group_dim} of {tuple(shape)}")
        self.group_dim = group_dim
        self.group_size = weight.numel() if group_dim is None else group_size
        self.sparsity = sparsity
        self._cache: tuple | None = None
        self._hint = ThresholdHint()

    @property
    def kept(self) -> int:
        """Entries kept in the whole tensor: ``k`` times the number of groups."""
        return self.k * (self.weight.numel() // self.group_size)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.k / self.group_size

    @sparsity.setter
    def sparsity(self, value: float) -> None:
        unit = "a tensor" if self.group_dim is None else "a group (fixed-size top-k)"
        self.k = kept_count(self.group_size, check_sparsity(value, self.group_size, unit))

    def mask(self) -> torch.Tensor:
        """The current boolean mask (recomputed only when the scores or ``k`` changed)."""
        key = (self.scores._version, self.scores.data_ptr(), self.k)
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                mask = topk_mask(self.scores.abs(), self.k, self.group_dim, self.group_size,
                                 self._hint)
                self._cache = (key, mask)
        return self._cache[1]

    def set_mask(self, mask: torch.Tensor) -> None:
        """Impose an explicit boolean mask (e.g. from the subset-sum solver): the scores become
        1 on kept entries and 0 elsewhere, and ``k`` the number kept (per group, which must
        then all keep the same number)."""
        if mask.shape != self.scores.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != {tuple(self.scores.shape)}")
        grouped, dim = group_view(mask, self.group_dim, self.group_size)
        per_group = grouped.sum(dim).unique()
        if per_group.numel() != 1:
            raise ValueError("a group-wise (fixed-size) mask must keep the same number of "
                             "entries in every group")
        with torch.no_grad():
            self.scores.copy_(mask.to(self.scores.dtype))
        self.k = int(per_group)

    def forward(self) -> torch.Tensor:
        return _MaskedProduct.apply(self.scores, self.weight, self.mask())

    def extra_repr(self) -> str:
        return f"shape={tuple(self.weight.shape)}, kept={self.kept}/{self.weight.numel()}"


class FrozenWeight(nn.Module):
    """A frozen random tensor that carries no score (not maskable); ``forward()`` returns it, so
    a structure uses it exactly like a :class:`MaskedWeight`."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)

    def forward(self) -> torch.Tensor:
        return self.weight

    def extra_repr(self) -> str:
        return f"shape={tuple(self.weight.shape)}, frozen"


def masked_weights(model: nn.Module) -> list[MaskedWeight]:
    return [m for m in model.modules() if isinstance(m, MaskedWeight)]


def global_topk(model: nn.Module, sparsity: float) -> dict[str, int]:
    """Rank the scores of all maskable tensors of ``model`` together and give each tensor its
    share of the ``round((1 - sparsity) * total)`` largest ``|score|``. Returns the new ``k`` per
    tensor (by module name). A tensor may end up with ``k = 0``.

    This concatenates all scores once per call; call it when the ranking should be refreshed
    (e.g. once per epoch), not on every batch: between calls each tensor keeps its own top-k.
    """
    named = [(n, m) for n, m in model.named_modules() if isinstance(m, MaskedWeight)]
    if not named:
        raise ValueError("global_topk: the model has no maskable (subnet) layers")
    grouped = [n for n, m in named if m.group_dim is not None]
    if grouped:
        raise ValueError(f"global_topk ranks whole tensors; {', '.join(grouped)} keep a fixed "
                         "number per group (fixedsize structure) and cannot take a global share")
    sizes = [m.weight.numel() for _, m in named]
    total = sum(sizes)
    k = kept_count(total, check_sparsity(sparsity, total))
    with torch.no_grad():
        scores = torch.cat([m.scores.abs().reshape(-1) for _, m in named])
        winners = scores.topk(k, sorted=False).indices
        ends = torch.tensor(sizes, device=scores.device).cumsum(0)
        owner = torch.bucketize(winners, ends, right=True)
        counts = torch.bincount(owner, minlength=len(named)).tolist()
    for (_, m), c in zip(named, counts):
        m.k = int(c)
    return {n: m.k for n, m in named}
