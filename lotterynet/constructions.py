"""The constructions of the five strong-lottery-ticket papers, built from a trained target layer
as real pruned random layers of the project's structures (explicit masks on ``SubnetLinear`` /
``SubnetConv2d``, ``MaskedWeight.set_mask``), so the result is evaluated as that network.

Subset-sum family — every target weight ``w`` gets its own ``n`` random coefficients and keeps
the subset whose sum is nearest to ``w`` (exact, :func:`lotterynet.subsetsum.solve`):

* **Pensia et al. (2020), Experiment 1** — coefficients ``U[min, max]`` of the layer's weights
  and biases (their FC2 has no biases: ``U[min w, max w]``); built as the ``subsetsum``
  structure with ``activation="identity"``, ``shared=False`` and the first layer fixed at 1:
  the over-parameterised *linear* network of their **Figure 1b** (one path of weight ``a_t``
  per coefficient; the figure puts the random ``a_t`` in the first layer and the 1s in the
  second, the same paths in the other order), not the ReLU construction of Figure 1c.
* **da Cunha et al. (2022), Sec. 3** — the same per-weight subset sum with ``U[−1, 1]``
  coefficients, applied to conv kernels (``SubnetConv2d``).
* **Natale et al., Random Fixed-Size Subset Sum (Theorem 2)** — exactly ``k`` of the ``n``
  coefficients per weight (``solve(k=...)``), built as the ``fixedsize`` structure, whose
  group-wise top-k then keeps exactly ``k`` per weight.

Product family — ``Linear(d_in → H) → ReLU → Linear(H → d_out)`` with ``H = m · d_in``: hidden
neuron ``h = i·m + t`` keeps only its edge from input ``i`` (first-layer weight ``u_h``), and a
kept second-layer edge ``v_{jh}`` adds the *product weight* ``z = u_h v_{jh}`` to target weight
``w_ji``: neurons with ``u_h > 0`` carry ``relu(x_i)``, those with ``u_h < 0`` carry
``relu(−x_i)``, and ``w x = w relu(x) − w relu(−x)`` needs ``Σ z ≈ w`` on both halves.

* **Malach et al. (2020), Lemmas 2.4–2.5** — U[−1, 1] weights; per target weight and sign half
  the single neuron whose product is nearest to ``w``, or none where 0 is nearer (at most two
  neurons per weight, as the lemma's mask).
* **Orseau et al. (2020), Corollary 10 / Theorem 3** — hyperbolic weights on Theorem 3's range;
  per target weight and sign half the greedy golden-ratio decomposition (Lemma 9): products in
  decreasing magnitude, each taken while it does not overshoot the residual, at most k′ of
  them (Theorem 3, Step 2). No search.

The papers' lemmas give every target weight its own neurons (``H = m · d_in · d_out``); here the
first layer is shared by the outputs (``H = m · d_in``, the project's ``malach`` / ``orseau``
sizing), each output having its own second-layer weights. Every weight still sees ``m``
independent products; they are not independent *across* outputs (``u_h`` is common).
"""

from __future__ import annotations

import copy
import math
from functools import partial

import torch
from torch import nn

from .convert_rules import CONVERTIBLE, base_rule, type_name
from .distributions import check_positive, check_seed, draw_seed, orseau_range
from .layers import SubnetConv2d, SubnetLinear
from .machine import device_clock
from .registry import check_choice
from .structures import check_positive_int
from .subsetsum import check_values, solve


def _symmetric(values: torch.Tensor) -> tuple[float, float]:
    top = values.abs().max().item()
    return -top, top


COEFFICIENT_RANGES = {
    "layer": lambda values: (values.min().item(), values.max().item()),
    "symmetric": _symmetric,
    "unit": lambda values: (-1.0, 1.0),
}
"""``[lo, hi]`` of the uniform coefficients from the values of a layer's weights and biases:
``layer``: U[min, max] of them (Pensia et al.); ``symmetric``: U[−a, a], ``a`` the largest
|weight or bias|; ``unit``: U[−1, 1] (da Cunha et al., and the theorems' distribution)."""

GOLDEN_GAMMA = 2 / 3
"""γ of Orseau et al.'s Corollary 10 (Lemma 9 with 1/φ ≤ γ < 1): its log base 3/2 is
log_{1/γ}."""


def coefficient_bounds(weight: torch.Tensor, coefficients: str) -> tuple[float, float]:
    """``[lo, hi]`` of the uniform coefficient distribution for a layer whose weights and biases
    are the values of ``weight`` (every value the subset sums approximate):
    :data:`COEFFICIENT_RANGES`."""
    return COEFFICIENT_RANGES[check_choice("coefficient range", coefficients,
                                           COEFFICIENT_RANGES)](weight)


def _check_target(layer, kinds: tuple[type, ...], what: str) -> None:
    """A trained layer the constructions can read: of ``kinds``, with weights, on a device
    that holds values, and finite (a NaN weight built a network of NaN errors)."""
    if not isinstance(layer, kinds):
        raise ValueError(f"{what} is built for {' or '.join(f'nn.{k.__name__}' for k in kinds)},"
                         f" got {type(layer).__name__}")
    for name in ("weight", "bias"):
        tensor = getattr(layer, name)
        if tensor is not None:
            check_values(f"the layer's {name}", tensor, "load the trained weights first")
    if layer.weight.numel() == 0:
        raise ValueError(f"the layer has no weights (weight shape {tuple(layer.weight.shape)})")


def _check_generator(generator) -> None:
    """``generator``: a CPU ``torch.Generator`` (the constructions draw on the CPU) or None
    (torch's global one)."""
    if generator is None or isinstance(generator, torch.Generator) and \
            generator.device.type == "cpu":
        return
    got = (f"one on {generator.device}" if isinstance(generator, torch.Generator)
           else repr(generator))
    raise TypeError(f"generator must be a CPU torch.Generator (the constructions draw on the "
                    f"CPU) or None, got {got}")


def _subnet_like(layer: nn.Linear | nn.Conv2d, **options) -> SubnetLinear | SubnetConv2d:
    """A float64 subnet layer with ``layer``'s geometry (and a frozen bias if it has one), as
    ``convert`` makes it (:data:`~lotterynet.convert_rules.CONVERTIBLE`'s rule for ``layer``'s type:
    timm's ``Conv2dSame`` pads and ``StdConv2d`` standardises as the target does,
    ``ScaledStdConv2d`` also scales by the target's gain, which it takes, frozen), drawn on the
    CPU and moved to ``layer``'s device (the same seed gives the same network on any device).
    A subclass of nn.Linear / nn.Conv2d without a rule may compute something else (timm's
    ``Conv2dSameExport`` pads each input itself): refused, naming its type."""
    name, family = type_name(type(layer)), nn.Linear if isinstance(layer, nn.Linear) else nn.Conv2d
    if name not in CONVERTIBLE:
        base, call = base_rule(type(layer))
        raise ValueError(f"{name} subclasses nn.{family.__name__} and may "
                         f"compute something else, so no construction rebuilds it (known: "
                         f"{', '.join(CONVERTIBLE.names())}); if it computes what its base "
                         f"{base} does, register that rule for it first: {call}")
    rule = CONVERTIBLE.get(name)
    with torch.device("cpu"):  # (whatever the default device)
        subnet = rule.build(layer, layer.bias is not None, **options)
    subnet = subnet.to(layer.weight.device, torch.float64)
    rule.take(layer, subnet, trainable=False)
    return subnet


def _coefficients(generator: torch.Generator | None, *, lo: float, hi: float, n: int,
                  draws: int, repeats: int) -> torch.Tensor:
    """``draws`` rows of ``n`` U[lo, hi] coefficients (float64, drawn on the CPU from
    ``generator``), each row ``repeats`` times (one set shared by the weights of an output)."""
    coeffs = lo + (hi - lo) * torch.rand(draws, n, generator=generator, dtype=torch.float64,
                                         device="cpu")
    return coeffs.repeat_interleave(repeats, dim=0)


def _as_v(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Per-weight rows ``(targets, n)`` (a bias's rows after the weights, left out) in the
    layout of a subset-sum layer's ``v`` for a target weight of ``shape``:
    ``(out, in_per_group, n, *kernel)``."""
    return x[:math.prod(shape)].reshape(*shape, x.shape[1]).movedim(-1, 2)


def _put_coefficients(subnet: nn.Module, coeffs: torch.Tensor, shape: tuple[int, ...]) -> None:
    """Make ``subnet``'s frozen weights the coefficients ``coeffs`` (``v``) behind first-layer
    weights of 1 (``u``)."""
    with torch.no_grad():
        subnet.structure.v.weight.copy_(_as_v(coeffs, shape))
        subnet.structure.u.weight.fill_(1.0)


def _put_bias(subnet: nn.Module, bias: torch.Tensor) -> None:
    """Make ``subnet``'s frozen bias ``bias``, what a construction found for it: no seed draws
    it, so it is no longer frozen as built (``frozen_as_built``), and a ticket stores it
    instead of regenerating it."""
    with torch.no_grad():
        subnet.bias.copy_(bias)
    subnet.frozen_as_built -= {"bias"}


def _redraw_coefficients(subnet: nn.Module, *, state: torch.Tensor, shape: tuple[int, ...],
                         **draw) -> None:
    """The ``drawn_over`` of a :func:`subset_sum` layer: a redraw of it (``subnet``, made
    float64 here, as built) gets the coefficients drawn again from ``state``, the CPU generator
    state they were drawn from (which the layer's seed does not draw: they come from the
    target's range)."""
    generator = torch.Generator()
    generator.set_state(state)
    _put_coefficients(subnet.double(), _coefficients(generator, **draw), shape)


def subset_sum(layer: nn.Linear | nn.Conv2d, n: int, generator: torch.Generator, *,
               k: int | None = None, coefficients: str = "layer",
               shared_per_row: bool = False) -> tuple[nn.Module, dict]:
    """Subset-sum approximation of one trained layer (Pensia Fig. 1b / da Cunha / Natale).

    ``n`` coefficients per weight from ``coefficients`` (:data:`COEFFICIENT_RANGES`), or with
    ``shared_per_row`` one set per output unit shared by its weights (the authors' variant);
    ``k``: exactly ``k`` kept per weight (Natale et al.; the ``fixedsize`` structure). The
    coefficients are drawn on the CPU and solved for on ``layer``'s device, where the layer is
    built (the same seed gives the same network on any device). A bias,
    if any, is approximated the same way (its own ``n`` coefficients, the range drawn over the
    weights and the bias: every value the subset sums approximate) and stored as the layer's
    frozen bias, since subnet layers have no maskable bias; ``coefficients_kept`` counts the
    kept coefficients of the weights, the masked edges of the built layer. The layer records
    the generator's state the coefficients were drawn from (``drawn_over``), so that its
    ticket (``save_ticket``) draws them again, as a seed's weights; it stores the bias.
    Returns ``(subnet_layer, stats)``.
    """
    _check_target(layer, (nn.Linear, nn.Conv2d), "the subset-sum approximation")
    _check_generator(generator)
    check_positive_int("n", n)
    if k is not None and not (check_positive_int("k", k) <= n):
        raise ValueError(f"k must be in [1, n={n}] (the kept coefficients of a weight), got {k}")
    weight = layer.weight.detach().double()
    targets = weight.reshape(-1)
    if layer.bias is not None:
        targets = torch.cat([targets, layer.bias.detach().double()])
    lo, hi = coefficient_bounds(targets, coefficients)
    if shared_per_row and layer.bias is not None:
        raise ValueError("shared_per_row is defined for bias-free layers")
    draw = {"lo": lo, "hi": hi, "n": n, "draws": weight.shape[0] if shared_per_row
            else targets.numel(), "repeats": weight[0].numel() if shared_per_row else 1}
    state = (torch.default_generator if generator is None else generator).get_state()
    coeffs = _coefficients(generator, **draw).to(targets.device)
    start = device_clock(targets.device)
    selection, approx, error = solve(targets, coeffs, k, progress=False)
    seconds = device_clock(targets.device) - start

    if k is None:
        subnet = _subnet_like(layer, structure="subsetsum", pairs=n, activation="identity",
                              shared=False, sparsity=0.0, seed=0)  # (set_mask sets k below)
    else:
        subnet = _subnet_like(layer, structure="fixedsize", pairs=n, activation="identity",
                              shared=False, sparsity=1 - k / n, seed=0)
    structure, weights, shape = subnet.structure, weight.numel(), tuple(weight.shape)
    _put_coefficients(subnet, coeffs, shape)
    # what the ticket's redraw draws: these coefficients again, from the generator's state
    subnet.drawn_over = partial(_redraw_coefficients, state=state, shape=shape, **draw)
    if layer.bias is not None:  # the sums found
        _put_bias(subnet, approx[weights:])
    structure.v.set_mask(_as_v(selection, shape))
    if k is None:  # the fixedsize first layer is frozen, unmasked (implied by v's mask)
        structure.u.set_mask(_as_v(selection, shape))
    subnet.record_solved()  # (what reset_parameters puts back)
    stats = {
        "targets": targets.numel(),
        "coefficient_range": [lo, hi],
        # the masked edges of v (a bias's kept coefficients are summed into its frozen value)
        "coefficients_kept": int(selection[:weights].sum()),
        "weight_error_max": error.max().item(),
        "weight_error_median": error.median().item(),
        # (a target of 0 is met exactly by the empty subset: no coefficient is wrong for it)
        "all_coefficients_wrong_sign": int((((coeffs * targets[:, None]) <= 0).all(1)
                                            & (targets != 0)).sum()),
        "solve_seconds": seconds,
        "hidden": n * weights,  # one path per coefficient (Fig. 1b, unshared)
    }
    return subnet, stats


def nearest_product(products: torch.Tensor, allowed: torch.Tensor,
                    w: torch.Tensor) -> torch.Tensor:
    """Malach et al., Lemma 2.4: per target ``w[j, i]`` at most one allowed candidate ``t``
    (the lemma's mask keeps ``Σ_j ‖b^(j)‖_0 ≤ 2`` weights, at most one per sign half): the one
    whose product ``products[j, i, t]`` is nearest to ``w``, or none when ``|w|`` (the error of
    keeping none, the half then adding 0) is no larger than its distance — a target of 0 keeps
    none and is exact. Bool, at most one True per ``(j, i)``; ``allowed`` broadcasts against
    ``products`` (j, i, m)."""
    distance = torch.where(allowed, (products - w[..., None]).abs(), torch.inf)
    best = distance.min(-1, keepdim=True)
    chosen = torch.zeros_like(products, dtype=torch.bool).scatter_(-1, best.indices, True)
    return chosen & (best.values < w.abs()[..., None])


def golden_ratio_decomposition(products: torch.Tensor, allowed: torch.Tensor,
                               w: torch.Tensor, cap: int | None = None) -> torch.Tensor:
    """Orseau et al., Corollary 10 (Lemma 9): the greedy decomposition of ``w[j, i]`` over the
    allowed candidates ``products[j, i, :]`` — in decreasing magnitude, take a product when it
    has ``w``'s sign and does not exceed the residual, and at most ``cap`` of them (the mask
    size ``|b| ≤ k′`` of Corollary 10; None: no cap). So ``0 ≤ |w| − |ŵ|`` always, and
    ``|w| − |ŵ| ≤ γ^K`` (γ = 2/3, ``|w| ≤ 1``; scaled by ``w_max``) when each interval
    ``(γ^{i+1}, γ^i]``, i = 1..K, holds a candidate and ``cap ≥ K``: uncapped, the residual is
    at most γ^i once the candidates above γ^{i+1} are passed (Lemma 9's induction), and after
    the t-th product taken it is at most γ^t (one taken from ``(γ^{i+1}, γ^i]`` leaves less
    than ``min(γ^t, γ^{i-1}) − γ^{i+1} ≤ γ^{t+1}``), so stopping at ``K`` costs nothing.
    Returns the bool selection (j, i, m)."""
    sign = torch.sign(w)[..., None]
    magnitude = torch.where(allowed & (products * sign > 0), (products * sign), 0.0)
    order = magnitude.argsort(-1, descending=True)
    ordered = magnitude.gather(-1, order)
    residual = w.abs().clone()
    taken = torch.zeros_like(ordered, dtype=torch.bool)
    count = torch.zeros_like(residual, dtype=torch.int64)
    for t in range(ordered.shape[-1]):
        take = (ordered[..., t] > 0) & (ordered[..., t] <= residual)
        if cap is not None:
            take &= count < cap
        residual -= torch.where(take, ordered[..., t], 0.0)
        count += take
        taken[..., t] = take
    return torch.zeros_like(taken).scatter_(-1, order, taken)


def golden_ratio_cap(w_max: float, epsilon: float) -> int:
    """``⌊k′⌋``, ``k′ = log_{3/2}(3 w_max / ε_w)``: the most products per target weight and
    sign half in Orseau et al.'s Theorem 3 (Step 2: Corollary 10 at accuracy ε_w/2 for each of
    ŵ⁺ and ŵ⁻, a mask of size at most k′). It is at least Lemma 9's
    ``k = ⌈log_{3/2}(2 w_max / ε_w)⌉``, what the γ^k bound needs (0 when ε_w > 2 w_max:
    ŵ = 0 is then within ε_w/2 of every weight). (A relative 1e-12 keeps an integer k′
    whole.)"""
    return math.floor(math.log(3 * w_max / epsilon, 1 / GOLDEN_GAMMA) * (1 + 1e-12))


#: The product networks' selections, by ``rule``, which is also the structure they build.
PRODUCT_RULES = {"malach": nearest_product, "orseau": golden_ratio_decomposition}


def product_network(layer: nn.Linear, m: int, generator: torch.Generator, *, rule: str,
                    epsilon: float = 0.01) -> tuple[nn.Module, dict]:
    """Malach's (``rule="malach"``) or Orseau's (``rule="orseau"``) construction of one trained
    ``nn.Linear`` as a pruned ``SubnetLinear`` of that structure with ``hidden = m · d_in``
    (module doc). Orseau's hyperbolic range is Theorem 3's for ``ε_w = epsilon`` and
    ``w_max = max |w|`` of the layer, and each weight's sign half sums at most
    :func:`golden_ratio_cap` products (a layer with ``3 max |w| ≤ epsilon``, all-zero too,
    keeps none: every weight is within ε/3 of 0); Malach's reads no ``epsilon`` (its nearest
    product has no accuracy to meet), which is checked all the same. A bias, if any,
    is kept as the frozen output bias (no seed draws it: its ticket stores it). The random
    layer is drawn on the CPU and moved to ``layer``'s device, where its products are chosen
    (the same seed gives the same network on any device). Returns ``(subnet_layer, stats)``."""
    _check_target(layer, (nn.Linear,), f"the {rule} construction")
    _check_generator(generator)
    select = PRODUCT_RULES[check_choice("rule", rule, PRODUCT_RULES)]
    check_positive_int("m", m)
    check_positive("epsilon", epsilon)  # (malach's too, which does not read it)
    w = layer.weight.detach().double()
    d_out, d_in = w.shape
    init_kwargs = None
    if rule == "orseau":
        w_max = w.abs().max().item()
        # With 3 w_max ≤ ε (an all-zero layer too) Theorem 3's range [2ε/9, 2 w_max/3] is empty
        # and its mask size k′ = log_{3/2}(3 w_max / ε) ≤ 0: every weight is within ε/3 of 0,
        # so keeping nothing meets the theorem's ε/2 on each half (exact on an all-zero layer,
        # as Malach's). Its random weights are then drawn on the range for w_max = ε (any
        # would do).
        empty = 3 * w_max <= epsilon
        alpha, beta = orseau_range(eps_w=epsilon, w_max=epsilon if empty else w_max)
        init_kwargs = {"alpha": alpha, "beta": beta}
        select = partial(select, cap=0 if empty else golden_ratio_cap(w_max, epsilon))
    try:
        subnet = _subnet_like(layer, structure=rule, hidden=m * d_in, sparsity=0.0,
                              init_kwargs=init_kwargs, seed=draw_seed(generator))
    except ValueError as error:
        if init_kwargs is None:
            raise
        raise ValueError(f"epsilon={epsilon} puts Theorem 3's hyperbolic range for this layer "
                         f"(max |w| = {w_max:.3g}) outside float32: {error}") from None
    u, v = subnet.structure.u, subnet.structure.v
    neurons = torch.arange(m * d_in, device=w.device)
    inputs = neurons // m  # hidden neuron h = i·m + t sees input i
    u_own = u.weight.detach()[neurons, inputs].view(d_in, m)
    products = v.weight.detach().view(d_out, d_in, m) * u_own
    start = device_clock(w.device)
    chosen = select(products, u_own > 0, w) | select(products, u_own < 0, w)
    seconds = device_clock(w.device) - start
    v.set_mask(chosen.view(d_out, m * d_in))
    u_mask = torch.zeros(m * d_in, d_in, dtype=torch.bool, device=w.device)
    u_mask[neurons, inputs] = chosen.any(0).view(-1)
    u.set_mask(u_mask)
    if layer.bias is not None:  # the target's own
        _put_bias(subnet, layer.bias.detach().double())
    subnet.record_solved()  # (what reset_parameters puts back)
    kept = torch.where(chosen, products, 0.0)
    positive, negative = (kept * (u_own > 0)).sum(-1), (kept * (u_own < 0)).sum(-1)
    error = torch.maximum((positive - w).abs(), (negative - w).abs())
    stats = {
        "targets": w.numel(),
        "coefficients_kept": int(chosen.sum()),
        "weight_error_max": error.max().item(),
        "weight_error_median": error.median().item(),
        "weight_errors": error.flatten(),  # (a tensor: the model's median is over all weights)
        "solve_seconds": seconds,
        "hidden": m * d_in,
    }
    return subnet, stats


def _kept_trained(module: nn.Module, path: str = "") -> list[str]:
    """``'path' (Type: names)`` of every module of ``module`` outside its ``nn.Linear`` /
    ``nn.Conv2d`` layers (a layer's own submodules go with it) that holds parameters or
    floating buffers (running statistics) of its own: no construction replaces them."""
    if isinstance(module, nn.Linear | nn.Conv2d):
        return []
    own = [*(n for n, _ in module.named_parameters(recurse=False)),
           *(n for n, b in module.named_buffers(recurse=False) if b.is_floating_point())]
    label = repr(path) if path else "the model"
    found = [f"{label} ({type(module).__name__}: {', '.join(own)})"] if own else []
    for name, child in module.named_children():
        found += _kept_trained(child, f"{path}.{name}" if path else name)
    return found


def construct_model(target: nn.Module, build, *, seed: int = 0) -> tuple[nn.Module, list]:
    """Copy of ``target`` (float64) with every ``nn.Linear`` / ``nn.Conv2d`` in it, at any depth,
    replaced by ``build(layer, generator=generator)`` (a construction above with its size
    bound), in module order; returns ``(model, per-layer stats)`` (a target that is itself such
    a layer: its construction). A layer used at several
    places (tied) is built once and that one construction put at each of them. A layer that
    ``build`` refuses (``ValueError``) is refused naming it (its module path in ``target``);
    a target with no such layer, or with trained values elsewhere (another layer type's
    parameters, a norm's running statistics: they would stay in the pruned random network),
    is refused naming those modules, before anything is built; so is a ``seed`` that is not an
    integer in [0, 2**64) (:func:`check_seed`: -1 would draw what 2**64 - 1 draws)."""
    seed = check_seed(seed)
    kept = _kept_trained(target)
    if kept:
        more = f" and {len(kept) - 3} more" if len(kept) > 3 else ""
        raise ValueError(f"the constructions replace nn.Linear and nn.Conv2d layers only; "
                         f"none replaces the trained values of {', '.join(kept[:3])}{more}: they "
                         f"would stay in the pruned random network")
    if not any(isinstance(m, nn.Linear | nn.Conv2d) for m in target.modules()):
        raise ValueError(f"the constructions replace nn.Linear and nn.Conv2d layers; the model "
                         f"({type(target).__name__}) has none")
    generator = torch.Generator().manual_seed(seed)
    model, stats, built = copy.deepcopy(target).double().eval(), [], {}
    for name, layer in list(model.named_modules(remove_duplicate=False)):
        if isinstance(layer, nn.Linear | nn.Conv2d):
            if id(layer) not in built:
                try:
                    built[id(layer)], layer_stats = build(layer, generator=generator)
                except ValueError as error:
                    label = f"layer {name!r}" if name else "the model"
                    raise ValueError(f"{label}: {error}") from None
                stats.append(layer_stats)
            if not name:  # the target is itself the layer
                return built[id(layer)], stats
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, built[id(layer)])
    return model, stats


def _target_layer(target: nn.Module, name: str, subnet: nn.Module,
                  weight: torch.Tensor) -> nn.Linear | nn.Conv2d:
    """The layer at ``name`` in ``target`` that ``subnet`` (effective weight ``weight``) was
    built from: of its family, with that weight shape and a bias where it has one; else refused
    naming what is there."""
    kind = nn.Linear if isinstance(subnet, SubnetLinear) else nn.Conv2d
    try:
        layer = target.get_submodule(name)
    except AttributeError:
        layer = None
    if isinstance(layer, kind) and layer.weight.shape == weight.shape \
            and (layer.bias is None) == (subnet.bias is None):
        return layer
    def of(weight, bias):
        return f" of weight {tuple(weight.shape)}{'' if bias is None else ' and a bias'}"

    found = "no module" if layer is None else f"a {type(layer).__name__}" + (
        of(layer.weight, layer.bias) if isinstance(layer, nn.Linear | nn.Conv2d) else "")
    raise ValueError(f"effective_errors compares a model with the target it was built from; the "
                     f"target has {found} at {repr(name) if name else 'its root'}, where the "
                     f"model's layer was built from an nn.{kind.__name__}{of(weight, subnet.bias)}")


@torch.no_grad()
def effective_errors(model: nn.Module, target: nn.Module) -> torch.Tensor:
    """``|w_model − w_target|`` of every weight and bias of the subset-sum layers, read from the
    built model's effective weights ``Σ_t ũ ṽ`` and frozen biases (float64); ``target``: the
    one the model was built from (another is refused naming the layer it lacks)."""
    errors = []
    for name, subnet in model.named_modules():
        if isinstance(subnet, SubnetLinear | SubnetConv2d):
            if not hasattr(subnet.structure, "effective_weight"):
                raise ValueError(f"effective_errors reads subset-sum layers; {name or 'the model'}"
                                 f" is a {type(subnet.structure).__name__.lower()} layer (a "
                                 f"product network's errors are its stats['weight_errors'])")
            weight, _ = subnet.structure.effective_weight()
            layer = _target_layer(target, name, subnet, weight)
            errors.append((weight - layer.weight.double()).abs().flatten())
            if layer.bias is not None:
                errors.append((subnet.bias - layer.bias.double()).abs())
    if not errors:
        raise ValueError(f"effective_errors reads a constructed model's subset-sum layers; the "
                         f"model ({type(model).__name__}) has none")
    return torch.cat(errors)
