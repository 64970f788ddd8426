"""Which layer types :func:`~lotterynet.convert.convert` replaces and how it rebuilds each as a
subnet layer: the :data:`CONVERTIBLE` registry of rules (:class:`Convertible`: the subnet class
and the arguments read off the plain layer), by fully qualified type name (:func:`type_name`),
and the layer types it leaves dense (:data:`LEFT_DENSE`); with what it does to the other
selected modules: :data:`BATCHNORM_MODES` and :data:`OTHERS_MODES`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .attention import SubnetMultiheadAttention
from .layers import BiasMode, SubnetConv1d, SubnetConv2d, SubnetLinear
from .registry import Registry


@dataclass(frozen=True)
class Convertible:
    """How to rebuild a plain layer type as a subnet layer: the class, its positional args
    (before ``bias``) and its keyword args; ``copied``: the names of the plain layer's
    parameters the subnet layer takes as they are (:meth:`take`), which are no random weight
    (timm's ``ScaledStdConv2d``'s ``gain``)."""

    subnet: type
    args: Callable[[nn.Module], tuple]
    kwargs: Callable[[nn.Module], dict] = field(default=lambda m: {})
    copied: tuple[str, ...] = ()

    def build(self, module: nn.Module, bias: bool | BiasMode, **options) -> nn.Module:
        """The subnet layer with ``module``'s geometry, a bias or not (or its mode:
        :func:`~lotterynet.layers.bias_mode`), and ``options``."""
        return self.subnet(*self.args(module), bias, **self.kwargs(module), **options)

    def take(self, module: nn.Module, layer: nn.Module, trainable: bool) -> None:
        """Copy into subnet ``layer`` (built by :meth:`build`, then given ``module``'s device and
        dtype) the values of ``module``'s :attr:`copied` parameters (as its constructor or a
        pretrained model left them, not drawn anew: no seed draws them, so a ticket stores
        them), trainable or frozen as ``trainable`` says (``convert``'s ``others``)."""
        with torch.no_grad():
            for name in self.copied:
                layer.get_parameter(name).copy_(module.get_parameter(name))
                layer.get_parameter(name).requires_grad_(trainable)


def _linear_args(m: nn.Linear) -> tuple:
    return (m.in_features, m.out_features)


def _conv_args(m: nn.Conv1d | nn.Conv2d) -> tuple:
    return (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
            m.groups)


def _conv_kwargs(m: nn.Conv1d | nn.Conv2d) -> dict:
    return dict(padding_mode=m.padding_mode)


def _timm_conv(*, same_pad: Callable[[nn.Conv2d], bool], standardized: bool,
               scaled: bool = False) -> Convertible:
    """The rule of a timm convolution that pads each input TensorFlow's "SAME" way where
    ``same_pad(module)`` says (``Conv2dSame`` always, ``StdConv2dSame`` / ``ScaledStdConv2dSame``
    where its padding is not static), standardises its weight with its ``eps`` where
    ``standardized`` (``StdConv2d``, ``StdConv2dSame``) and scales the standardised weight by
    its ``gain`` (copied) times its ``scale`` where ``scaled`` (``ScaledStdConv2d``,
    ``ScaledStdConv2dSame``): the subnet layer's ``same_pad``, ``std_eps`` and ``std_scale``."""
    return Convertible(SubnetConv2d, _conv_args, lambda m: dict(
        _conv_kwargs(m), same_pad=same_pad(m), std_eps=m.eps if standardized else None,
        std_scale=m.scale if scaled else None), copied=("gain",) if scaled else ())


def _attention_args(m: nn.MultiheadAttention) -> tuple:
    return (m.embed_dim, m.num_heads, m.dropout)


def _attention_kwargs(m: nn.MultiheadAttention) -> dict:
    return dict(add_bias_kv=m.bias_k is not None, add_zero_attn=m.add_zero_attn, kdim=m.kdim,
                vdim=m.vdim, batch_first=m.batch_first)


def type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def base_rule(cls: type) -> tuple[str, str]:
    """``(base, call)``: the nearest base of ``cls`` (a subclass of a convertible type without
    a rule of its own) that has a rule, and the call that registers that rule for ``cls``, for
    a subclass that computes what its base does (which only the user can know)."""
    base = next(type_name(c) for c in cls.__mro__[1:] if type_name(c) in CONVERTIBLE)
    return base, (f"lotterynet.convert_rules.CONVERTIBLE.register({type_name(cls)!r})("
                  f"lotterynet.convert_rules.CONVERTIBLE.get({base!r}))")


#: Layer types ``convert`` replaces, by fully qualified class name. A subclass of ``nn.Linear``
#: or ``nn.Conv*d`` that is not listed here may compute something else (``timm``'s
#: ``Conv2dSameExport`` pads each input itself), so ``convert`` refuses it rather than change
#: what the model computes. The modules inside an
#: ``nn.MultiheadAttention`` (its ``out_proj``) are converted with it, never on their own.
CONVERTIBLE: Registry = Registry("convertible layer type")
CONVERTIBLE.register(type_name(nn.Linear))(Convertible(SubnetLinear, _linear_args))
CONVERTIBLE.register(type_name(nn.Conv1d))(Convertible(SubnetConv1d, _conv_args, _conv_kwargs))
CONVERTIBLE.register(type_name(nn.Conv2d))(Convertible(SubnetConv2d, _conv_args, _conv_kwargs))
# timm's Linear only adds a dtype cast under TorchScript.
CONVERTIBLE.register("timm.layers.linear.Linear")(Convertible(SubnetLinear, _linear_args))
# timm's TF-"SAME" and weight-standardised convolutions (EfficientNet's tf_ variants, BiT;
# scaled by a gain: NFNets)
CONVERTIBLE.register("timm.layers.conv2d_same.Conv2dSame")(
    _timm_conv(same_pad=lambda m: True, standardized=False))
CONVERTIBLE.register("timm.layers.std_conv.StdConv2d")(
    _timm_conv(same_pad=lambda m: False, standardized=True))
CONVERTIBLE.register("timm.layers.std_conv.StdConv2dSame")(
    _timm_conv(same_pad=lambda m: m.same_pad, standardized=True))
CONVERTIBLE.register("timm.layers.std_conv.ScaledStdConv2d")(
    _timm_conv(same_pad=lambda m: False, standardized=True, scaled=True))
CONVERTIBLE.register("timm.layers.std_conv.ScaledStdConv2dSame")(
    _timm_conv(same_pad=lambda m: m.same_pad, standardized=True, scaled=True))
CONVERTIBLE.register(type_name(nn.MultiheadAttention))(
    Convertible(SubnetMultiheadAttention, _attention_args, _attention_kwargs))
FAMILIES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.MultiheadAttention)


def _non_affine(bn: _BatchNorm) -> None:
    bn.affine = False
    bn.weight = None  # nn.Module turns this into register_parameter("weight", None)
    bn.bias = None


BATCHNORM_MODES: Registry = Registry("batchnorm mode")
BATCHNORM_MODES.register("non-affine")(_non_affine)
BATCHNORM_MODES.register("trainable")(lambda bn: None)

OTHERS_MODES: Registry = Registry("mode for other parameters (others)")
OTHERS_MODES.register("frozen")(False)  # the value is requires_grad
OTHERS_MODES.register("trainable")(True)


#: Weight-bearing layer types ``convert`` does not replace (a UNet decoder's transposed
#: convolutions, a CRNN's LSTM, timm's ``CondConv2d``, whose experts' weights are a raw
#: parameter), by fully qualified class name (timm's is not imported for it): a selected one,
#: or one of a subclass, is left dense, its parameters under ``others``.
LEFT_DENSE = frozenset([*map(type_name, (nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                                         nn.ConvTranspose3d, nn.Bilinear, nn.RNNBase,
                                         nn.RNNCellBase)),
                        "timm.layers.cond_conv2d.CondConv2d"])
