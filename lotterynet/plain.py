"""Plain-torch modules that exported models are made of (see :mod:`lotterynet.export`), and
the functions they share with the subnet layers (:func:`split_signs`, :func:`pad_same`,
:func:`standardized`), so that an export computes what its layer computed; LeNet5's pool
(:class:`MaxPool2x2`) is the trained model's too.

This file imports nothing but torch, and every module here is TorchScript-scriptable, so an
exported model saved with ``torch.jit.script(...).save`` runs without lotterynet. A pickled
one (``torch.save(model)``) that holds a module of this file (sparse storage, the subset-sum
ReLU split, LeNet5's pool) names it by its import path, so unpickling it needs lotterynet.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def autocast_on(x: torch.Tensor) -> bool:
    """Whether autocast is on for ``x``'s device; False for a device torch has no autocast for
    (meta: asking it raises "unknown device type for autocast")."""
    device = x.device.type
    return torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)


def split_signs(x: torch.Tensor, groups: int, dim: int) -> torch.Tensor:
    """``[relu(x), relu(-x)]`` along the channel dimension, per group: channel block g of the
    result is ``[relu(x_g), relu(-x_g)]``, so a grouped op sees both halves of its own group.
    Under autocast the halves are made in the autocast dtype, as the op they feed casts them
    (relu and negation are exact there): CPU autocast refuses to stack float16 tensors under
    bfloat16 (and bfloat16 under float16), as ``torch.stack`` is a promote op. TorchScript
    cannot ask a device's autocast state, so a scripted model makes the halves as one
    product with ``[1, -1]`` instead, which no autocast casts (the same values; slower to
    train through, hence not always)."""
    dim = dim % x.dim()
    xg = x.unflatten(dim, [groups, -1])
    if torch.jit.is_scripting():
        signs = 1 - 2 * torch.arange(2, dtype=x.dtype, device=x.device)
        return F.relu(xg.unsqueeze(dim + 1) * signs.view([2] + [1] * (x.dim() - dim))).flatten(
            dim, dim + 2)
    if x.is_floating_point() and x.dtype != torch.float64 and autocast_on(x):
        xg = xg.to(torch.get_autocast_dtype(x.device.type))
    return torch.stack([F.relu(xg), F.relu(-xg)], dim=dim + 1).flatten(dim, dim + 2)


class SplitSigns(nn.Module):
    """The input side of a collapsed subset-sum layer with φ = ReLU: the layer that follows has
    weight ``[P, N]`` and sees ``[relu(x), relu(-x)]`` (``dim``: channel dimension)."""

    def __init__(self, groups: int, dim: int):
        super().__init__()
        self.groups, self.dim = groups, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return split_signs(x, self.groups, self.dim)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, dim={self.dim}"


def pad_same(x: torch.Tensor, kernel_size: list[int], stride: list[int],
             dilation: list[int]) -> torch.Tensor:
    """``x`` zero-padded TensorFlow's "SAME" way for a convolution of this geometry (timm's
    ``pad_same``, which its ``Conv2dSame`` and ``StdConv2dSame`` run before an unpadded
    convolution), in as many spatial dimensions as ``kernel_size`` has: from each input size
    ``i``, ``max((⌈i / s⌉ - 1)·s + (k - 1)·d + 1 - i, 0)`` in all, half of it (rounded down)
    before and the rest after, so the output has ⌈i / s⌉ positions (asymmetric for an even
    input under stride 2, and computed per input, not fixed by the layer)."""
    pads: list[int] = []
    for i in range(len(kernel_size) - 1, -1, -1):  # (F.pad's order: the last dimension first)
        size, s = x.shape[i - len(kernel_size)], stride[i]
        total = max((-(-size // s) - 1) * s + (kernel_size[i] - 1) * dilation[i] + 1 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class SamePad(nn.Module):
    """The input side of an exported convolution padded TensorFlow's "SAME" way
    (:func:`pad_same`; the convolution that follows pads nothing)."""

    def __init__(self, kernel_size: tuple[int, ...], stride: tuple[int, ...],
                 dilation: tuple[int, ...]):
        super().__init__()
        self.kernel_size, self.stride, self.dilation = (
            list(kernel_size), list(stride), list(dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pad_same(x, self.kernel_size, self.stride, self.dilation)

    def extra_repr(self) -> str:
        return (f"kernel_size={tuple(self.kernel_size)}, stride={tuple(self.stride)}, "
                f"dilation={tuple(self.dilation)}")


class WithInputOps(nn.Sequential):
    """What a subnet layer does to its input first (:class:`SamePad`, :class:`SplitSigns`),
    then its plain layer (the last module), which it looks like, as the subnet layer did: an
    attribute it has not is the layer's (``weight``, ``bias``, ``kernel_size``, ...), for a
    module that reads it itself (timm's XCiT positional encoding reads
    ``token_projection.weight.device``, DaViT's downsampling ``conv.kernel_size``), but for
    ``in_channels`` / ``in_features``, which are the module's input's, as the subnet layer's
    were (a split's layer takes twice as many, as its weight shows)."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            layers = self.__dict__.get("_modules")
            if not layers or name.startswith("_"):  # (being built, or unpickled)
                raise
            *ops, layer = layers.values()
            value = getattr(layer, name)
            if name in ("in_channels", "in_features"):
                value //= 2 ** sum(isinstance(op, SplitSigns) for op in ops)
            return value


def standardized(weight: torch.Tensor, eps: float, gain: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """``weight`` standardised per output channel (zero mean, unit variance over its inputs and
    kernel taps, the variance biased, ``eps`` added to it), as timm's ``StdConv2d`` computes it
    (Weight Standardization, Qiao et al. 2019): ``F.batch_norm`` over the weight reshaped to
    ``(1, out, -1)``, in training mode without running statistics; with ``gain`` (one factor
    per output channel, any shape of ``out`` entries) each channel then multiplied by its
    factor, batch norm's affine weight, as timm's ``ScaledStdConv2d`` computes it (its
    ``gain * scale``: Brock et al. 2021's Scaled Weight Standardization)."""
    return F.batch_norm(weight.reshape(1, weight.shape[0], -1), None, None,
                        weight=None if gain is None else gain.reshape(-1), training=True,
                        momentum=0.0, eps=eps).reshape_as(weight)


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)``, with the same outputs, computed on the CPU as two elementwise
    maxima (row pairs, then column pairs) when nothing needs its gradient. PyTorch's CPU
    max-pool kernel is slow on the small maps of these networks (LeNet5's frozen convolutions,
    batch 64, one thread of the project's CPU machine: 1.82 ms for the 6 × 28 × 28 pool and
    0.65 ms for the 16 × 10 × 10 one, against 0.13 and 0.07 ms here — a fifth of a subset-sum
    LeNet5 step). Where a gradient flows through the pool (trained or masked convolutions
    before it), on another device, or with an odd side, it is ``F.max_pool2d``:
    ``torch.maximum`` would split a tie's gradient where max-pool gives it to one
    entry."""

    def __init__(self):
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.dim() != 4 or x.shape[2] % 2 or x.shape[3] % 2
                or (x.requires_grad and torch.is_grad_enabled())):
            return F.max_pool2d(x, 2)
        n, c, h, w = x.shape
        rows = x.view(n, c, h // 2, 2, w)
        rows = torch.maximum(rows[:, :, :, 0], rows[:, :, :, 1])  # (n, c, h/2, w)
        cols = rows.view(n, c, h // 2, w // 2, 2)
        return torch.maximum(cols[..., 0], cols[..., 1])


class _SparseStorage(nn.Module):
    """Keeps a layer's weight as the flat ``indices`` (int32 when they fit) and ``values`` of its
    non-zero entries, and rebuilds the dense weight for each forward (``sparse_weight``), in
    the weight's memory layout: a channels_last weight comes back channels_last (a convolution's
    result depends on the layout, by float rounding). With ``std_eps`` (a convolution converted
    from timm's ``StdConv2d``) it keeps the masked weight, whose pruned entries are 0, and
    standardises the rebuilt one with that eps (:func:`standardized`) at each forward, as the
    subnet layer does: the standardised weight, whose pruned entries are not 0, is not stored;
    with ``std_gain`` too (a buffer of one factor per output channel: one converted from timm's
    ``ScaledStdConv2d``, its gain times its scale) the standardised weight is scaled by it."""

    def _store_sparse(self, weight: torch.Tensor, std_eps: float | None = None,
                      std_gain: torch.Tensor | None = None) -> None:
        order = sorted(range(weight.dim()), key=lambda d: -weight.stride(d))  # in memory order
        stored = weight.detach().permute(order)
        if not stored.is_contiguous():  # (no dense layout: stored contiguous)
            order, stored = list(range(weight.dim())), weight.detach()
        flat = stored.reshape(-1)
        indices = flat.nonzero().squeeze(1)
        index_dtype = torch.int32 if flat.numel() <= torch.iinfo(torch.int32).max else torch.int64
        del self.weight
        self.register_buffer("indices", indices.to(index_dtype))
        self.register_buffer("values", flat[indices].clone())
        self.weight_shape: list[int] = list(stored.shape)  # (in memory order)
        self.weight_order: list[int] = [order.index(d) for d in range(weight.dim())]
        self.weight_numel: int = math.prod(weight.shape)
        self.std_eps = std_eps
        self.register_buffer("std_gain", None if std_gain is None else
                             std_gain.detach().reshape(-1).clone())

    def __setstate__(self, state: dict) -> None:
        """Unpickling (``torch.load``, ``copy.deepcopy``). A layer pickled before
        ``weight_order`` existed stored its entries in the weight's own order
        (``weight_shape`` its shape), which the identity order reads exactly as it did then;
        one pickled before ``std_eps`` or ``std_gain`` existed stored the weight it computes
        with, or standardised it unscaled."""
        super().__setstate__(state)
        if "weight_order" not in self.__dict__:
            self.weight_order = list(range(len(self.weight_shape)))
        if "std_eps" not in self.__dict__:
            self.std_eps = None
        self._buffers.setdefault("std_gain", None)

    def sparse_weight(self) -> torch.Tensor:
        """The dense weight the layer computes with, rebuilt from the stored entries (and
        standardised, with ``std_eps``, and scaled, with ``std_gain``)."""
        w = torch.zeros(self.weight_numel, dtype=self.values.dtype, device=self.values.device)
        w = w.index_put_([self.indices.long()], self.values)
        w = w.view(self.weight_shape).permute(self.weight_order)
        return w if self.std_eps is None else standardized(w, self.std_eps, self.std_gain)

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight the layer computes with (:meth:`sparse_weight`, read-only), for a
        module that reads its layer's weight itself (``F.linear(x, self.qkv.weight, ...)``,
        ``self.qk.weight.device``)."""
        return self.sparse_weight()

    def reset_parameters(self) -> None:
        """Nothing to draw: the stored entries are the weight (the layer's own ``__init__``
        calls this before they are stored)."""


def _bias_copy(dense: nn.Module) -> nn.Parameter | None:
    return None if dense.bias is None else nn.Parameter(dense.bias.detach().clone())


class SparseLinear(_SparseStorage, nn.Linear):
    """``nn.Linear`` with a sparsely stored weight."""

    def __init__(self, dense: nn.Linear):
        super().__init__(dense.in_features, dense.out_features, False, device="meta")
        self.bias = _bias_copy(dense)
        self._store_sparse(dense.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.sparse_weight(), self.bias)


class _SparseConvNd(_SparseStorage):
    """``std_eps``: ``dense``'s weight is the masked one of a convolution that standardises it
    with this eps, ``std_gain``: and scales it by these factors (:class:`_SparseStorage`)."""

    def __init__(self, dense, std_eps: float | None = None,
                 std_gain: torch.Tensor | None = None):
        super().__init__(dense.in_channels, dense.out_channels, dense.kernel_size, dense.stride,
                         dense.padding, dense.dilation, dense.groups, False,
                         dense.padding_mode, device="meta")
        self.bias = _bias_copy(dense)
        self._store_sparse(dense.weight, std_eps, std_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.sparse_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.std_eps is None else
                                       f", std_eps={self.std_eps:g}") + (
            "" if self.std_gain is None else ", std_gain=True")


class SparseConv1d(_SparseConvNd, nn.Conv1d):
    """``nn.Conv1d`` with a sparsely stored weight."""


class SparseConv2d(_SparseConvNd, nn.Conv2d):
    """``nn.Conv2d`` with a sparsely stored weight."""
