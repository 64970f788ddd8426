"""Edge-popup masks (Ramanujan et al. 2020, Alg. 1): a frozen random tensor ``w`` and a trainable
score tensor ``s`` of the same shape; the forward pass uses ``w ⊙ m`` with ``m = 1`` on the
``k`` entries of largest ``|s|``. The backward pass is straight-through:
``∂L/∂s = ∂L/∂(w ⊙ m) ⊙ w ⊙ sign(s)`` (the sign comes from ranking by ``|s|``).

The ``k`` entries are chosen by selection, never a full sort, the same ones on every
device (:mod:`lotterynet.topk`: how, and how ties at the cut-off are kept).

How many are kept (``kept``): ``"round"`` (default) keeps ``round((1 - sparsity) * n)``;
``"floor"`` keeps ``n - int(sparsity * n)`` — the reference code prunes ``int(s·n)``, one more
kept than ``"round"`` when the fractional part of ``s·n`` is above 1/2 (at exactly 1/2 it
depends on Python's round-half-to-even).

A tensor may be split into equal *groups* of ``group_size`` consecutive entries along
``group_dim``; then each group keeps exactly its own top ``k`` (the fixed-size subset sum of
Natale et al., where each target weight keeps exactly k of its n terms). The default is one
group holding the whole tensor, i.e. the layer-wise top-k of edge-popup.
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings

import torch
from torch import nn

from .distributions import sample_weights
from .registry import check_choice
from .topk import ThresholdHint, group_view, topk_mask

#: ``kept`` rules: entries a tensor of ``n`` entries keeps at sparsity ``s``.
KEPT_RULES = {
    "round": lambda n, s: round((1.0 - s) * n),
    "floor": lambda n, s: n - int(s * n),  # the edge-popup reference: prune int(s·n)
}
TIE_RULES = ("low", "high")
#: ``score_init`` rules: the bound b of the initial scores U(±b) from the tensor's fan-in.
#: ``edgepopup``: 1/√fan_in, the reference's ``kaiming_uniform_(a=√5)``; ``kaiming``:
#: √(2/fan_in), the Kaiming-normal std — what Pensia et al.'s ``RedLayer`` draws (√2 wider);
#: ``unit``: 1 whatever the fan-in, one scale for every tensor, so that :func:`global_topk`'s
#: ranking at init gives each tensor its size's share, not the small fan-in layers' more.
SCORE_BOUNDS = {
    "edgepopup": lambda fan_in: fan_in ** -0.5,
    "kaiming": lambda fan_in: (2.0 / fan_in) ** 0.5,
    "unit": lambda fan_in: 1.0,
}


def kept_count(numel: int, sparsity: float, rule: str = "round") -> int:
    """Number of entries a tensor of ``numel`` entries keeps: ``round((1 - sparsity) * numel)``,
    or ``numel - int(sparsity * numel)`` with ``rule="floor"`` (the reference code's count)."""
    if isinstance(numel, bool) or not isinstance(numel, numbers.Integral) or numel < 0:
        raise ValueError(f"numel is a number of entries, a non-negative integer; got {numel!r}")
    check_kept(rule)
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real) or \
            not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity is the fraction pruned, in [0, 1]; got {sparsity!r}")
    return KEPT_RULES[rule](numel, sparsity)


def check_kept(rule: str) -> str:
    return check_choice("kept rule", rule, KEPT_RULES)


def check_ties(ties: str) -> str:
    return check_choice("tie rule", ties, TIE_RULES)


def check_score_init(rule: str) -> str:
    return check_choice("score_init", rule, SCORE_BOUNDS)


def score_bound(fan_in: int, rule: str = "edgepopup") -> float:
    """The bound b of the initial scores U(±b) under ``rule`` (:data:`SCORE_BOUNDS`)."""
    return SCORE_BOUNDS[check_score_init(rule)](fan_in)


def check_sparsity_range(sparsity) -> float:
    """A sparsity, the fraction *pruned*: a number in [0, 1)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(
            f"sparsity is the fraction of weights pruned and must be in [0, 1), got {sparsity!r}"
        )
    return float(sparsity)


class KeepsNoWeight(ValueError):
    """:func:`check_sparsity`'s refusal of a sparsity that keeps no entry of a tensor (or
    group): ``convert`` tells it from a layer's other refusals to advise leaving the layer out."""


def check_sparsity(sparsity, numel: int, unit: str = "a tensor", rule: str = "round") -> float:
    """Validate a sparsity (the fraction *pruned*, :func:`check_sparsity_range`) for ``unit``
    (a tensor, or one group of a group-wise top-k) of ``numel`` entries."""
    check_sparsity_range(sparsity)
    if kept_count(numel, sparsity, rule) < 1:
        raise KeepsNoWeight(
            f"sparsity {sparsity!r} keeps no weight of {unit} with {numel} entries; "
            f"use at most {1 - 1 / numel:.6g}"
        )
    return float(sparsity)


def score_magnitudes(scores: torch.Tensor) -> torch.Tensor:
    """``|scores|``, the key the mask ranks by, with a NaN score (a diverged one) ranked below
    every other (as −1): exactly ``k`` entries are kept whatever the scores hold, and the same
    ones on every device and whatever the threshold hint's history. (A NaN compares false with
    any threshold: it was neither above nor tied with one, so the mask kept fewer than ``k``.)"""
    return scores.abs().nan_to_num_(nan=-1.0, posinf=math.inf)


class _MaskedProduct(torch.autograd.Function):
    """``weight ⊙ mask`` forward (``mask`` 0/1 in the weight's dtype); straight-through
    backward to the scores: ``∂L/∂s = ∂L/∂(w ⊙ m) ⊙ w ⊙ sign(s)`` (Ramanujan et al. 2020,
    Eq. 3 with the |s| ranking). A float mask because on the CPU a product with it is one
    vectorised pass, where ``torch.where`` on a boolean mask costs ~15× more (240k entries:
    0.05 vs 0.8 ms). The weight is frozen, but a user may unfreeze it (``requires_grad_``; a
    subnet layer trains it so only with its scores frozen: ``layers.refuse_thawed``): it then
    gets the product's own gradient ``∂L/∂(w ⊙ m) ⊙ m`` (the mask is kept for the backward
    only then)."""

    generate_vmap_rule = True  # torch.func.vmap / grad / jacrev run it too

    @staticmethod
    def forward(scores: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor):
        return weight * mask

    @staticmethod
    def setup_context(ctx, inputs, output):
        scores, weight, mask = inputs
        ctx.save_for_backward(scores, weight, mask if ctx.needs_input_grad[1] else None)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        scores, weight, mask = ctx.saved_tensors
        grad_weight = grad * mask if ctx.needs_input_grad[1] else None
        # (in place on the product, which torch.func.vmap may batch: per-example gradients)
        return (grad * weight).mul_(scores.sign()), grad_weight, None


def _storage_version(t: torch.Tensor) -> tuple:
    """``(version counter, data pointer)`` of ``t``, ``(None, None)`` for a tensor that has
    neither (made under ``torch.inference_mode``, or wrapped by ``torch.func``)."""
    if t.is_inference():
        return None, None
    try:
        return t._version, t.data_ptr()
    except RuntimeError:  # torch.func's wrappers: "Cannot access data pointer of Tensor ..."
        return None, None


#: The names (last part) of a subnet layer's biases: frozen random as built, but, unlike its
#: weights, made trainable where the model is made (:func:`trainable_where_made`), and then
#: the ticket's to store. One made to require grad later (``layer.bias.requires_grad_()``) is
#: still frozen as built (``frozen_as_built``): a ticket regenerates it from the seed, and
#: ``save_ticket`` refuses it once it differs or while it requires grad.
BIAS_NAMES = ("bias", "bias_k", "bias_v")


def trainable_where_made(any_tensor: bool = False) -> str:
    """The advice of every refusal of a tensor frozen as built that is trained or pruned (a
    subnet layer's training forward, ``torch.nn.utils.prune``, ``save_ticket``): a ticket
    regenerates such a tensor from the seed, whatever ``requires_grad`` says later, so it is
    the user's to train only made trainable where the model is made: a bias by
    ``convert(bias="trainable")`` or a subnet layer's own ``bias="trainable"``; with
    ``any_tensor``, a norm or other parameter too (``convert(batchnorm=, others=)``)."""
    options = "bias=, batchnorm=, others='trainable'" if any_tensor else "bias='trainable'"
    return (f"make it trainable where the model is made (convert({options}), or a subnet "
            f"layer's own bias='trainable') so that the ticket stores it")


class PrunesByMask:
    """Refuses ``torch.nn.utils.prune`` on what a subnet module prunes by its masks: a weight it
    computes (a subnet layer's ``weight``, an attention's ``q_proj_weight``: a property), on
    which prune failed with "cannot assign 'torch.FloatTensor' object to parameter
    'weight_orig'", a frozen random tensor (a :class:`MaskedWeight`'s ``weight``, a bias
    frozen as built: ``frozen_as_built``), which prune silently zeroed: values a ticket
    regenerates from the seed, and none of the subnetwork the scores choose, and the scores
    (a :class:`MaskedWeight`'s), whose top-k is the mask: pruned, they left ``scores_orig`` and
    ``scores_mask`` in the state, which no ticket saves or loads. A bias frozen as built is
    refused even after ``requires_grad_()`` (a ticket regenerates it all the same:
    :data:`BIAS_NAMES`), naming the way to make it the user's (:func:`trainable_where_made`).
    Prune registers ``<name>_orig`` first: refused there, in one line, before anything
    changes."""

    def register_parameter(self, name: str, param) -> None:
        stem = name.removesuffix("_orig")
        held = param is not None and param is self._parameters.get(stem)
        # (none: a MaskedWeight, FrozenWeight, whose weight is frozen as built whatever its
        # requires_grad says: trained under a fixed mask, a ticket still regenerates it)
        built = getattr(self, "frozen_as_built", None)
        scores = held and stem == "scores"
        frozen = held and not scores and (built is None or stem in built)
        if stem != name and (scores or frozen
                             or isinstance(getattr(type(self), stem, None), property)):
            what = ("the score tensor" if scores else
                    "a frozen random tensor" if frozen else "computed from the masks")
            why = ("which a ticket regenerates from the seed (requires_grad_() does not change "
                   f"that): to train and prune it, {trainable_where_made()}"
                   if frozen and stem in BIAS_NAMES else
                   "which prunes by its mask: set its sparsity (layer.sparsity, "
                   "lotterynet.global_topk), or prune the exported model "
                   "(lotterynet.export(model))")
            raise TypeError(f"torch.nn.utils.prune: {type(self).__name__}.{stem} is {what} of "
                            f"a subnet layer, {why}")
        super().register_parameter(name, param)


class MaskedWeight(PrunesByMask, nn.Module):
    """One maskable tensor: frozen random ``weight`` and trainable ``scores``.

    ``forward()`` returns ``weight ⊙ mask``. ``k`` (entries kept per group; one group = the
    whole tensor unless ``group_dim`` is given) is set from ``sparsity`` or directly (global
    top-k, :meth:`set_mask`) and saved in ``state_dict``; ``kept`` is the tensor's total.
    ``weight`` may be passed in already sampled, of ``shape`` (``init`` is then unused).
    Scores are U(±b), b from the weight's fan-in by ``score_init`` (:data:`SCORE_BOUNDS`;
    default the edge-popup reference's Kaiming-uniform bound 1/√fan_in). ``kept`` /
    ``ties`` select the count and tie rules (module docstring; :meth:`set_rules`).

    **When the mask is recomputed.** Scores can change behind the version counter's back:
    fused optimizers (``SGD(fused=True)``, ``Adam(fused=True)``) and writes through
    ``scores.data`` do not bump ``scores._version``, so a cache keyed on it alone goes stale.
    :meth:`mask` therefore

    * re-ranks on every call while autograd records a step (grad enabled and the scores
      trainable): training changes the scores between steps anyway, so a cache would only
      ever miss there;
    * otherwise (evaluation, ``torch.no_grad``/``inference_mode``) on the CPU, reuses the
      mask while the scores' version, storage and ``k`` are unchanged *and* their content is
      equal to a snapshot taken when the mask was computed: ``torch.equal`` is a linear scan,
      several times cheaper than the quickselect it saves (1M scores: 8 ms vs 50 ms on 2
      shared cores), and it sees every write, whoever made it. The snapshot is one copy of
      the scores, held only once an evaluation forward has run;
    * on any other device (CUDA, MPS, XPU, as ``topk_mask`` tells them apart) outside
      training, re-ranks every call: a content check would need its answer on the host, a
      device sync per layer, which the mask path never does; the radix select it would save
      is sync-free (not measured on a GPU in this change). (On ``meta`` there is no content
      to check: ``torch.equal`` has no meta kernel.)
    """

    #: A mask for the next forwards in place of :meth:`mask` (a stack sets its members' masks
    #: for one forward, all chosen in one pass: ``StackedModel``); 0/1 in the weight's dtype.
    #: (A class default: a layer pickled before it existed loads with none.)
    given_mask: torch.Tensor | None = None

    def __init__(self, shape, *, fan_in: int, sparsity: float, init: str = "kaiming_normal",
                 init_kwargs: dict | None = None, generator: torch.Generator | None = None,
                 group_dim: int | None = None, group_size: int | None = None,
                 weight: torch.Tensor | None = None, kept: str = "round", ties: str = "low",
                 score_init: str = "edgepopup"):
        super().__init__()
        bound = score_bound(fan_in, score_init)
        if weight is None:
            weight = sample_weights(init, shape, fan_in, generator, **(init_kwargs or {}))
        elif weight.shape != torch.Size(shape):  # (the scores' shape: a product broadcast)
            raise ValueError(f"weight of shape {tuple(weight.shape)} given for a MaskedWeight "
                             f"of shape {tuple(shape)}: pass a weight of that shape")
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.scores = nn.Parameter(torch.empty(shape).uniform_(-bound, bound, generator=generator))
        if group_dim is not None and (group_size is None or group_size < 1
                                      or shape[group_dim] % group_size):
            raise ValueError(f"group_size={group_size!r} must divide the size "
                             f"{shape[group_dim]} of dimension {group_dim} of {tuple(shape)}")
        self.group_dim = group_dim
        self.group_size = weight.numel() if group_dim is None else group_size
        self._nominal_sparsity: float | None = None
        self.set_rules(kept, ties)  # (no k yet)
        self.sparsity = sparsity  # k, under the kept rule
        self._cache: tuple | None = None
        self._hint = ThresholdHint()

    def __getstate__(self) -> dict:
        """Copies and pickles (``copy.deepcopy``: an EMA or SWA copy, ``torch.save(model)``)
        leave the evaluation mask cache behind: keyed by the scores' storage, it is never hit
        by a copy's scores, which live elsewhere, yet it held a snapshot of the scores and the
        mask, which doubled the pickle of a model that had evaluated."""
        return {**self.__dict__, "_cache": None}

    def set_rules(self, kept: str = "round", ties: str = "low") -> None:
        """Choose the kept-count rule (``"round"``/``"floor"``) and the tie rule
        (``"low"``/``"high"``); ``k`` is recomputed from the last sparsity set, under the new
        count rule, unless it was set since by other means (:func:`global_topk`,
        :meth:`set_mask`, a state dict's or a ticket's ``k``), which it keeps."""
        check_kept(kept)
        nominal = self._nominal_sparsity  # (None: k was set by other means, :meth:`keep`)
        # (a k unlike its sparsity's: one set before keep recorded it, a layer pickled so)
        from_sparsity = nominal is not None and self.k == kept_count(
            self.group_size, nominal, self.kept_rule)
        self.kept_rule, self.ties = kept, check_ties(ties)
        if from_sparsity:
            self.sparsity = nominal

    @property
    def kept(self) -> int:
        """Entries kept in the whole tensor: ``k`` times the number of groups."""
        return self.k * (self.weight.numel() // self.group_size)

    @property
    def sparsity(self) -> float:
        """The fraction of the tensor's entries pruned, each group's: ``1 - k / group_size``.
        Set, it sets ``k`` by the kept rule (:func:`kept_count`), or refuses a value that is no
        sparsity of this tensor (:meth:`checked_sparsity`)."""
        return 1.0 - self.k / self.group_size

    @sparsity.setter
    def sparsity(self, value: float) -> None:
        value = self.checked_sparsity(value)
        self.k = kept_count(self.group_size, value, self.kept_rule)
        self._nominal_sparsity = value

    def keep(self, k: int) -> None:
        """Keep ``k`` entries (per group), set other than by a sparsity (:func:`global_topk`,
        :meth:`set_mask`, a state dict's or a ticket's ``k``): :meth:`set_rules` keeps it."""
        self.k, self._nominal_sparsity = k, None

    def checked_sparsity(self, value) -> float:
        """``value`` as a sparsity of this tensor (a float), else a ``ValueError`` naming why
        it is not one: not a number in [0, 1), or one that keeps no entry (of a group)."""
        unit = "a tensor" if self.group_dim is None else "a group (fixed-size top-k)"
        return check_sparsity(value, self.group_size, unit, self.kept_rule)

    def get_extra_state(self) -> torch.Tensor:
        """``k`` travels with the scores in ``state_dict``: after :func:`global_topk` or
        :meth:`set_mask` it is no longer what the sparsity a fresh layer is built with gives,
        and the same scores with another ``k`` are another mask. A tensor, so that a state dict
        stays a mapping of names to tensors (``torch.load(weights_only=True)``)."""
        return torch.tensor([self.k])

    def set_extra_state(self, state: torch.Tensor) -> None:
        k = int(state[0])
        if not 0 <= k <= self.group_size:
            raise ValueError(f"a state dict's k={k} is not a count of kept entries of "
                             f"{self.group_size} (the entries of one group of this tensor)")
        self.keep(k)  # (whatever set it where the state dict was made)

    def mask(self, dtype: torch.dtype = torch.bool) -> torch.Tensor:
        """The current mask, boolean or 0/1 in ``dtype`` (see the class docstring for when it
        is recomputed; under ``torch.compile`` on every call, inside the graph). It may be the
        cached tensor that the next forwards use: read it, do not change it in place."""
        scores = self.scores
        if torch.compiler.is_compiling():
            with torch.no_grad():
                return topk_mask(score_magnitudes(scores), self.k, self.group_dim, self.group_size,
                                 self.ties, dtype=dtype)
        key = (*_storage_version(scores), self.k, self.ties, dtype)
        training = torch.is_grad_enabled() and scores.requires_grad
        reusable = scores.device.type == "cpu" and not (training or key[0] is None)
        cache = self._cache
        if reusable and cache is not None and cache[0] == key and torch.equal(cache[1], scores):
            return cache[2]
        # (one made under inference mode is not kept: a backward outside it cannot save it)
        cacheable = reusable and not torch.is_inference_mode_enabled()
        with torch.no_grad():
            mask = topk_mask(score_magnitudes(scores), self.k, self.group_dim, self.group_size,
                             self.ties, self._hint, dtype)
            snapshot = scores.detach().clone() if cacheable else None
        self._cache = None if snapshot is None else (key, snapshot, mask)
        return mask

    def set_mask(self, mask: torch.Tensor) -> None:
        """Impose an explicit boolean mask (e.g. from the subset-sum solver): the scores become
        1 on kept entries and 0 elsewhere, and ``k`` the number kept (per group, which must
        then all keep the same number)."""
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"set_mask takes a boolean tensor (True = kept), got "
                            f"{mask.dtype if isinstance(mask, torch.Tensor) else type(mask)}")
        if mask.shape != self.scores.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != {tuple(self.scores.shape)}")
        grouped, dim = group_view(mask, self.group_dim, self.group_size)
        per_group = grouped.sum(dim).unique()
        if per_group.numel() != 1:
            raise ValueError("a group-wise (fixed-size) mask must keep the same number of "
                             "entries in every group")
        with torch.no_grad():
            self.scores.copy_(mask.to(self.scores.dtype))
        self.keep(int(per_group))

    def forward(self) -> torch.Tensor:
        mask = self.mask(self.weight.dtype) if self.given_mask is None else self.given_mask
        if not torch.compiler.is_compiling() and self.scores.is_inference():
            # made under torch.inference_mode: nothing to train, nothing to keep for backward
            return self.weight * mask
        return _MaskedProduct.apply(self.scores, self.weight, mask)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.weight.shape)}, kept={self.kept}/{self.weight.numel()}"


class FrozenWeight(PrunesByMask, nn.Module):
    """A frozen random tensor that carries no score (not maskable); ``forward()`` returns it, so
    a structure uses it exactly like a :class:`MaskedWeight`."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)

    def forward(self) -> torch.Tensor:
        return self.weight

    def extra_repr(self) -> str:
        return f"shape={tuple(self.weight.shape)}, frozen"


def check_module(model, caller: str) -> nn.Module:
    """``model`` itself, or a ``TypeError`` naming ``caller`` if it is not a ``torch.nn.Module``
    (an AttributeError deep inside would not say what was wrong)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{caller} takes a torch.nn.Module, got {type(model).__name__}")
    return model


def uncompiled(model: nn.Module, caller: str | None = None) -> nn.Module:
    """The module a ``torch.compile``d ``model`` runs (its names without the wrapper's
    ``_orig_mod.``: what ``convert`` selects and seeds layers by, what a ticket stores), or
    ``model`` itself; with ``caller``, first refused as :func:`check_module` refuses it."""
    if caller is not None:
        check_module(model, caller)
    dynamo = sys.modules.get("torch._dynamo")  # (not imported: nothing was compiled)
    return model._orig_mod if dynamo and isinstance(model, dynamo.eval_frame.OptimizedModule) \
        else model


def named_masked_weights(model: nn.Module, remove_duplicate: bool = True
                         ) -> dict[str, MaskedWeight]:
    """``model``'s maskable tensors by module name, in the model's order (what a ticket's
    format and :func:`global_topk`'s tie order follow); a tensor registered under several
    names once, under its first, unless ``remove_duplicate`` is False (as
    ``named_modules``)."""
    return {name: m for name, m in check_module(model, "named_masked_weights").named_modules(
        remove_duplicate=remove_duplicate) if isinstance(m, MaskedWeight)}


def masked_weights(model: nn.Module) -> list[MaskedWeight]:
    """``model``'s maskable tensors, in its order, each once (:func:`named_masked_weights`)."""
    return list(named_masked_weights(check_module(model, "masked_weights")).values())


def pruned_fraction(model: nn.Module) -> float:
    """The sparsity ``model``'s masks actually reach: pruned / maskable over all its maskable
    tensors (the counts of :func:`~lotterynet.params.count_params`). The nominal sparsity is
    rounded to a kept count once per tensor, once over the model after :func:`global_topk`,
    and once per *group* in the fixedsize structure: groups of 3 terms at sparsity 0.6 keep
    round(1.2) = 1 term each, so 2/3 of the weights are pruned, not 0.6."""
    tensors = masked_weights(check_module(model, "pruned_fraction"))
    if not tensors:
        raise ValueError("pruned_fraction: the model has no maskable (subnet) layers")
    maskable = sum(m.weight.numel() for m in tensors)
    return (maskable - sum(m.kept for m in tensors)) / maskable


class MaskedSparsity(PrunesByMask):
    """``sparsity`` / ``density`` of a layer over the maskable tensors inside it (a subnet
    layer, subnet attention). Setting the sparsity sets every tensor's, or, when one of them
    refuses the value (it would keep none of its weights), none."""

    def __prepare_scriptable__(self):
        """``torch.jit.script`` calls this on every module before compiling: a subnet layer
        (its mask selection, its top-k) is not TorchScript, which failed deep inside torch
        ("Unknown type annotation: 'bool'"); the model to script is its export."""
        raise TypeError(f"torch.jit.script: {type(self).__name__} is a subnet layer, which is "
                        f"not scriptable; script the exported model, masks baked in: "
                        f"torch.jit.script(lotterynet.export(model)) (or torch.export / "
                        f"torch.compile the model itself)")

    @property
    def sparsity(self) -> float:
        """Fraction of this layer's maskable weights that are pruned."""
        return 1.0 - self.density

    @sparsity.setter
    def sparsity(self, value: float) -> None:
        tensors = masked_weights(self)
        for m in tensors:
            m.checked_sparsity(value)
        for m in tensors:
            m.sparsity = value

    @property
    def density(self) -> float:
        """Fraction of this layer's maskable weights that are kept (1 − sparsity): kept /
        maskable itself, the nearest float to it (1 − the sparsity was 0.09999999999999998
        for a tenth kept, in ``results.json`` and W&B's ``density/<layer>``)."""
        tensors = masked_weights(self)
        return sum(m.kept for m in tensors) / sum(m.weight.numel() for m in tensors)


def global_topk(model: nn.Module, sparsity: float) -> dict[str, int]:
    """Rank the scores of all maskable tensors of ``model`` together and give each tensor its
    share of the largest ``|score|``: as many as the tensors' ``kept`` rule keeps of all their
    entries together (``round((1 - sparsity) * total)``, or ``total - int(sparsity * total)``
    for ``"floor"``), ties at the cut-off broken by the tensors' tie rule, over the tensors in
    the model's order. Returns the new ``k`` per tensor (by module name). A tensor may end up
    with ``k = 0`` (a warning names them). A ``torch.compile``d model's names are its module's
    (:func:`uncompiled`).

    This concatenates all scores once per call; call it when the ranking should be refreshed
    (e.g. once per epoch), not on every batch: between calls each tensor keeps its own top-k.

    The ranking compares raw scores across tensors, so it inherits their init scales: scores
    drawn from U(±1/√fan_in) (``score_init="edgepopup"``, the default) give the layers of small
    fan-in larger scores, and a ranking at init keeps more of them. Build the layers with
    ``score_init="unit"`` (one scale for all) for a ranking at init that keeps about
    ``1 - sparsity`` of every tensor.
    """
    named = list(named_masked_weights(uncompiled(model, "global_topk")).items())
    if not named:
        raise ValueError("global_topk: the model has no maskable (subnet) layers")
    grouped = [n for n, m in named if m.group_dim is not None]
    if grouped:
        raise ValueError(f"global_topk ranks whole tensors; {', '.join(grouped)} keep a fixed "
                         "number per group (fixedsize structure) and cannot take a global share")
    sizes = [m.weight.numel() for _, m in named]
    total = sum(sizes)
    ties, rules = {m.ties for _, m in named}, {m.kept_rule for _, m in named}
    if len(ties) > 1:
        raise ValueError(f"global_topk: the model's tensors break ties by different rules "
                         f"({', '.join(sorted(ties))}); give them one (set_rules)")
    if len(rules) > 1:
        raise ValueError(f"global_topk: the model's tensors count kept entries by different "
                         f"rules ({', '.join(sorted(rules))}); give them one (set_rules)")
    rule = rules.pop()
    k = kept_count(total, check_sparsity(sparsity, total, "the model's maskable tensors", rule),
                   rule)
    with torch.no_grad():  # ties at the cut-off by the tensors' rule, in the models' order
        scores = score_magnitudes(torch.cat([m.scores.reshape(-1) for _, m in named]))
        kept = topk_mask(scores, k, ties=ties.pop(), dtype=torch.int64)
        counts = torch.stack([part.sum() for part in kept.split(sizes)]).tolist()
    for (_, m), c in zip(named, counts):
        m.keep(int(c))
    if empty := [n for (n, _), c in zip(named, counts) if c == 0]:  # (convert refuses that)
        warnings.warn(f"global_topk at sparsity {sparsity} keeps no weight of {', '.join(empty)}: "
                      f"what those layers output no longer depends on their input (a lower "
                      f"sparsity, or each tensor's own top-k, keeps some in each)", stacklevel=2)
    return {n: m.k for n, m in named}
