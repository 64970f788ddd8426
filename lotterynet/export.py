"""``export(model)``: a deep copy of a subnet model in which every subnet layer is a plain torch
layer with its masked weights baked in, for inference (scripted: without lotterynet).

Each subnet layer becomes the ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` whose weight is its
structure's ``effective_weight()``: the masked weight for ``dense``; for ``subsetsum`` the
collapsed weight (``../shared/DESIGN.md``) — with φ = identity one layer
``W_ij = Σ_t ṽ_ijt ũ_jt``, with φ = ReLU ``SplitSigns`` (``[relu(x), relu(-x)]`` per group)
followed by one layer with weight ``[P, N]`` on twice the input channels. Any structure that
exposes ``effective_weight()`` exports the same way. A convolution converted from timm's
``StdConv2d`` bakes in its weight standardised (its pruned entries no longer 0; sparse: below),
one from ``ScaledStdConv2d`` standardised and scaled (by its ``gain * std_scale``),
one from ``Conv2dSame`` becomes ``SamePad`` followed by the unpadded convolution.
``sparse=True`` stores each baked weight as the indices and values of its non-zero entries
(:mod:`lotterynet.plain`), smaller when most weights are pruned, and rebuilds it at each
forward; a standardised convolution stores its masked weight so (what its masks keep) and
standardises (and scales) the rebuilt weight at each forward as the subnet layer does
(``std_eps``, ``std_gain``: its factors, ``gain * std_scale`` as exported).

``SubnetMultiheadAttention`` becomes the ``nn.MultiheadAttention`` with the same masked weights
(stored dense even with ``sparse=True``: ``nn.MultiheadAttention`` reads its weights directly).
A sparse layer's ``weight`` is the dense weight it computes with, rebuilt from its entries
(and standardised, for a standardised convolution), for a module that reads a layer's weight
itself (``nn.TransformerEncoderLayer``'s fast path its feed-forward layers', torchvision's Swin
attention its ``qkv`` and ``proj``, timm's MobileViT cross attention its ``qkv_proj``'s).

The result is made of torch modules and of those in :mod:`lotterynet.plain` (torch only,
TorchScript-scriptable): ``torch.jit.script(export(model))`` runs with no lotterynet at all
(a pickle of it does not, where it holds one of those).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from .archs import FrozenConv2d
from .attention import SUBNET_MODULES, SubnetMultiheadAttention, outermost_subnet_modules
from .convert import drop_subnet_guards, move_hooks
from .convert_checks import refuse_torch_pruned
from .convert_record import CONVERT_RECORD
from .layers import SubnetConv1d, SubnetConv2d, SubnetLinear, _SubnetLayer
from .masking import uncompiled
from .plain import SamePad, SparseConv1d, SparseConv2d, SparseLinear, SplitSigns, WithInputOps


def _linear_args(layer: SubnetLinear, weight: torch.Tensor) -> tuple:
    return (weight.shape[1], weight.shape[0], layer.bias is not None)


def _conv_args(layer: SubnetConv1d | SubnetConv2d, weight: torch.Tensor) -> tuple:
    return (weight.shape[1] * layer.groups, weight.shape[0], layer.kernel_size, layer.stride,
            layer.padding, layer.dilation, layer.groups, layer.bias is not None,
            layer.padding_mode)


@dataclass(frozen=True)
class PlainForm:
    """The plain layer a subnet layer type exports to: its class, its sparse twin, the channel
    dimension of its input (from the end: batched or not), and its constructor's arguments
    given the baked weight (whose input channels may be doubled)."""

    plain: type
    sparse: type
    channel_dim: int
    args: Callable[[_SubnetLayer, torch.Tensor], tuple]


PLAIN_FORMS: dict[type, PlainForm] = {
    SubnetLinear: PlainForm(nn.Linear, SparseLinear, -1, _linear_args),
    SubnetConv1d: PlainForm(nn.Conv1d, SparseConv1d, -2, _conv_args),
    SubnetConv2d: PlainForm(nn.Conv2d, SparseConv2d, -3, _conv_args),
}


def export_layer(layer: nn.Module, *, sparse: bool = False, name: str = "") -> nn.Module:
    """The plain module computing what ``layer`` computes with its current masks, with the hooks
    on ``layer``'s calls."""
    if isinstance(layer, SubnetMultiheadAttention):
        return move_hooks(layer, layer.plain(), share=False)
    if not hasattr(layer.structure, "effective_weight"):
        raise ValueError(
            f"layer {name!r}: structure {layer.structure_name!r} has no single dense weight (a "
            f"two-stage structure, map, ReLU, map, has two), so export cannot bake its masks "
            f"into a plain layer: convert that layer with a one-weight structure (dense, "
            f"subsetsum, fixedsize) to export it, or torch.export the converted model itself")
    # (a parametrized layer, its bias or scores: of a subclass torch made; the values baked in)
    form = PLAIN_FORMS[parametrize.type_before_parametrizations(layer)]
    # a standardising convolution's (timm's StdConv2d) sparse form stores its masked weight
    # (and the factors that scale it: timm's ScaledStdConv2d) and standardises it at each
    # forward; dense, the standardised (scaled) weight is baked in
    std_eps = getattr(layer, "std_eps", None) if sparse else None
    with torch.no_grad():
        weight, doubles_input = layer.structure.effective_weight()
        if std_eps is None:
            weight = layer.baked(weight)
        # built on the meta device (no draw from the RNG, nothing allocated), then given the
        # baked weight (in its layout: channels_last stays) and the bias, copied; the sparse
        # form copies what it keeps (the weight's non-zero entries, the bias) itself
        plain = form.plain(*form.args(layer, weight), device="meta", dtype=weight.dtype)
        plain.weight = nn.Parameter(weight if sparse else weight.clone())
        if layer.bias is not None:
            plain.bias = nn.Parameter(layer.bias.detach().to(weight.device, weight.dtype,
                                                             copy=not sparse))
    if sparse:
        plain = form.sparse(plain) if std_eps is None else form.sparse(plain, std_eps,
                                                                     layer.std_gain())
    inputs = []  # what the layer does to its input before its map
    if getattr(layer, "same_pad", False):  # (timm's Conv2dSame)
        inputs.append(SamePad(layer.kernel_size, layer.stride, layer.dilation))
    if doubles_input:
        inputs.append(SplitSigns(getattr(layer, "groups", 1), form.channel_dim))
    if inputs:
        plain = WithInputOps(*inputs, plain)
    return move_hooks(layer, plain.train(layer.training), share=False)


def export(model: nn.Module, *, sparse: bool = False) -> nn.Module:
    """A deep copy of ``model`` with every subnet layer replaced by :func:`export_layer` (a
    layer registered under several names, tied, is one plain layer under all of them); of a
    ``torch.compile``d model, of the module it runs (uncompiled: scriptable). ``model`` is
    left as it is; each plain layer is in its subnet layer's mode (``train`` / ``eval``).

    Each subnet layer becomes the ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` /
    ``nn.MultiheadAttention`` computing what it computes with its current masks, weights baked
    in (a subset-sum layer with ``activation="relu"``: :class:`~lotterynet.plain.SplitSigns`
    before it); ``sparse=True`` stores each baked weight as the indices and values of its
    non-zero entries (:class:`~lotterynet.plain.SparseLinear`, ...: smaller where most are
    pruned; an attention's stay dense). A layer of a two-stage structure (malach, orseau,
    dacunha: no single weight) is refused (``ValueError``, naming it)."""
    if not isinstance(sparse, bool):
        raise TypeError(f"sparse must be True or False, got {sparse!r}")
    model = uncompiled(model, "export")
    refuse_torch_pruned(model, "export", "export does not take")
    exported = copy.deepcopy(model)
    for module in exported.modules():  # no longer what build_model / convert made
        module.__dict__.pop("spec", None)
        module.__dict__.pop(CONVERT_RECORD, None)
        drop_subnet_guards(module)
        if isinstance(module, FrozenConv2d):  # (LeNet5's: a plain conv, its seed dropped)
            del module.drawn_with
            module.__class__ = nn.Conv2d
    if isinstance(exported, SUBNET_MODULES):
        return export_layer(exported, sparse=sparse)
    plain: dict[int, nn.Module] = {}
    for name, layer in outermost_subnet_modules(exported, remove_duplicate=False):
        parent, _, child = name.rpartition(".")
        owner = exported.get_submodule(parent)
        if id(layer) not in plain:
            plain[id(layer)] = export_layer(layer, sparse=sparse, name=name)
        setattr(owner, child, plain[id(layer)])
    return exported
