"""``SubnetMultiheadAttention``: ``nn.MultiheadAttention`` with maskable projections.

The query, key, value and output projections are four :class:`~lotterynet.layers.SubnetLinear`
layers, ``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj``, each with its own scores and its
own top-k: **packed q/k/v is scored per projection** (each keeps ``1 - sparsity`` of its
``embed_dim × in_dim`` weights), not as one ``3·embed_dim × embed_dim`` tensor. The module is
an ``nn.MultiheadAttention`` and runs that class's own ``forward`` (masks, ``batch_first``,
``need_weights``, ``average_attn_weights``, ``is_causal``, ``add_bias_kv``, ``add_zero_attn``,
unbatched inputs) on the projections' effective weights, through its separate-projection path
(``_qkv_same_embed_dim = False``, so torch's fused fast path, which reads packed weights, is
never taken). Given the same weights it computes what ``nn.MultiheadAttention`` computes.

A projection must be one linear map, so the structure must have a single, undoubled weight:
``dense``, or ``subsetsum`` / ``fixedsize`` with ``activation="identity"``.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

from .distributions import draw_seed, float32_draws, seeded_generator
from .layers import (
    BiasMode,
    SubnetLinear,
    _SubnetLayer,
    bias_mode,
    check_float_dtype,
    copy_redrawn,
    drawn,
    recorded_draw,
    set_bias_mode,
    subnet_call,
)
from .loaded_k import watch_loaded_k
from .masking import MaskedSparsity
from .structures import check_positive_int

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


class NotSingleMaps(ValueError):
    """An attention's projections would not be single linear maps (ReLU subset-sum, a two-stage
    structure): :func:`~lotterynet.convert.convert` names every such attention at once."""


class SubnetMultiheadAttention(MaskedSparsity, nn.MultiheadAttention):
    """Drop-in for ``nn.MultiheadAttention(embed_dim, num_heads, dropout, bias, add_bias_kv,
    add_zero_attn, kdim, vdim, batch_first, device, dtype)``; ``layer_options``
    (``sparsity``, ``structure``, ``init``, ``kept``, ...) go to the four projections.
    ``bias_k`` / ``bias_v`` (with ``add_bias_kv``) are Xavier-normal as in torch. ``bias``
    takes a subnet layer's (``convert(bias=)``'s modes too): the projections' biases and
    ``bias_k`` / ``bias_v`` are frozen, or trained with ``"trainable"``, as ``convert`` makes
    them. ``seed`` seeds all of it."""

    #: As a subnet layer's (layers.py): a layer pickled before it existed loads as seeded.
    seeded: bool = True

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0,
                 bias: bool | str | BiasMode = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, device=None, dtype=None, *,
                 seed: int | None = None, **layer_options):
        nn.Module.__init__(self)
        for name, size in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            check_positive_int(name, size)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or \
                not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout is a probability, in [0, 1]; got {dropout!r}")
        check_float_dtype(dtype)
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else check_positive_int("kdim", kdim)
        self.vdim = embed_dim if vdim is None else check_positive_int("vdim", vdim)
        self._qkv_same_embed_dim = False  # separate projections: never the packed fast path
        self.dropout, self.batch_first, self.add_zero_attn = dropout, batch_first, add_zero_attn
        with drawn(self, seed, device, dtype) as generator:  # as a SubnetLinear is drawn
            for name, d_in in zip(PROJECTIONS, (embed_dim, self.kdim, self.vdim, embed_dim)):
                layer = SubnetLinear(d_in, embed_dim, bias, seed=draw_seed(generator),
                                     **layer_options)
                effective = getattr(layer.structure, "effective_weight", None)
                if effective is None or effective()[1]:
                    raise NotSingleMaps(
                        f"attention projections must be single linear maps; structure "
                        f"{layer.structure_name!r} with these options is not (use dense, or "
                        "subsetsum / fixedsize with activation='identity')")
                setattr(self, name, layer)
            _draw_bias_kv(self, generator, add_bias_kv, embed_dim)
        set_bias_mode(self, bias_mode(bias))  # (bias_k / bias_v too)
        self.drawn_with = dict(seed=seed, add_bias_kv=add_bias_kv, embed_dim=embed_dim)
        watch_loaded_k(self)  # (a state dict of another sparsity warns, naming the attention)

    #: What ``bias_k`` / ``bias_v`` were drawn from (:meth:`redrawn`); None for a layer pickled
    #: before then.
    drawn_with: dict | None = None

    def redrawn(self) -> nn.Module:
        """A module holding ``bias_k`` / ``bias_v`` drawn again from the seed, float32 on the
        CPU: what :func:`~lotterynet.ticket.save_ticket` checks the layer's against (the
        projections are subnet layers, each drawn again by its own
        :meth:`~lotterynet.layers._SubnetLayer.redrawn`)."""
        fresh, drawn_with = nn.Module(), recorded_draw(self)
        generator = seeded_generator(drawn_with["seed"])
        with float32_draws():
            for _ in PROJECTIONS:  # the projections' seeds come first from the generator
                draw_seed(generator)
            _draw_bias_kv(fresh, generator, drawn_with["add_bias_kv"], drawn_with["embed_dim"])
        return fresh

    def reset_parameters(self) -> None:
        """The projections' and ``bias_k`` / ``bias_v``'s tensors drawn again, in place, as the
        layer was built (:meth:`~lotterynet.layers._SubnetLayer.reset_parameters`)."""
        for name in PROJECTIONS:
            getattr(self, name).reset_parameters()
        copy_redrawn(self)

    # What nn.MultiheadAttention.forward reads, computed from the projections.
    in_proj_weight = None

    @property
    def q_proj_weight(self) -> torch.Tensor:
        return self.q_proj.weight

    @property
    def k_proj_weight(self) -> torch.Tensor:
        return self.k_proj.weight

    @property
    def v_proj_weight(self) -> torch.Tensor:
        return self.v_proj.weight

    @property
    def in_proj_bias(self) -> torch.Tensor | None:
        biases = [self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]
        return None if biases[0] is None else torch.cat(biases)

    def forward(self, query, key, value, *args, **kwargs):
        """``nn.MultiheadAttention``'s, run as a subnet layer's
        (:func:`~lotterynet.layers.subnet_call`: one node under ``torch.fx`` tracing, as that
        leaf module's)."""
        return subnet_call(self, super().forward, query, key, value, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, kdim={self.kdim}, "
                f"vdim={self.vdim}, batch_first={self.batch_first}, dropout={self.dropout}")

    def plain(self) -> nn.MultiheadAttention:
        """The ``nn.MultiheadAttention`` computing the same, with the masked weights baked in
        (q/k/v packed into ``in_proj_weight`` when the three input sizes agree)."""
        params = next(self.parameters())
        attention = nn.MultiheadAttention(  # (on meta, then empty: no draw from the torch RNG)
            self.embed_dim, self.num_heads, self.dropout, self.out_proj.bias is not None,
            self.bias_k is not None, self.add_zero_attn, self.kdim, self.vdim, self.batch_first,
            device="meta", dtype=params.dtype).to_empty(device=params.device)
        with torch.no_grad():
            if attention._qkv_same_embed_dim:
                attention.in_proj_weight.copy_(torch.cat([self.q_proj_weight, self.k_proj_weight,
                                                          self.v_proj_weight]))
            else:
                for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                    getattr(attention, name).copy_(getattr(self, name))
            if attention.in_proj_bias is not None:
                attention.in_proj_bias.copy_(self.in_proj_bias)
                attention.out_proj.bias.copy_(self.out_proj.bias)
            attention.out_proj.weight.copy_(self.out_proj.weight)
            if self.bias_k is not None:
                attention.bias_k.copy_(self.bias_k)
                attention.bias_v.copy_(self.bias_v)
        return attention.train(self.training)


def _draw_bias_kv(module: nn.Module, generator, add_bias_kv: bool, embed_dim: int) -> None:
    """Set ``module.bias_k`` / ``bias_v``: frozen, Xavier-normal ``[1, 1, embed_dim]`` drawn
    from ``generator`` with ``add_bias_kv`` (as torch draws them), else None."""
    for name in ("bias_k", "bias_v"):
        value = None
        if add_bias_kv:
            value = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, 1, embed_dim),
                                                        generator=generator),
                                 requires_grad=False)
        setattr(module, name, value)


#: Every module type that holds maskable tensors as one replaceable unit (torch.fx records each
#: call of one as one node, as a leaf module's: ``traced_call``).
SUBNET_MODULES = (_SubnetLayer, SubnetMultiheadAttention)


def outermost_subnet_modules(model: nn.Module, remove_duplicate: bool = True,
                             where=lambda module: True) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the :data:`SUBNET_MODULES` of ``model`` (those ``where`` accepts)
    that are inside no other such module (an attention's, not its projections; ``model``
    alone, named ``""``, where it is one), in the model's order; a module registered under
    several names under each of them only with ``remove_duplicate`` False (as
    ``named_modules``)."""
    outermost: list[tuple[str, nn.Module]] = []  # (a module is listed before those inside it)
    for name, module in model.named_modules(remove_duplicate=remove_duplicate):
        if isinstance(module, SUBNET_MODULES) and where(module) and not any(
                name.startswith(f"{outer}." if outer else "") for outer, _ in outermost):
            outermost.append((name, module))
    return outermost
