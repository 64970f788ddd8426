"""malach / orseau / dacunha / fixedsize against literal float64 references, their parameter
counts against the papers' shapes, and layer_counts against count_params of the built layer."""

import math

import pytest
import torch
import torch.nn.functional as F

import lotterynet as ln
from lotterynet.distributions import orseau_range
from lotterynet.masking import MaskedWeight
from lotterynet.structures import (
    STRUCTURE_OPTIONS,
    STRUCTURES,
    TargetShape,
    layer_counts,
    structure_options,
)


def double_run(layer, x):
    """Float64 forward + backward of ``(y * g).sum()``; returns y, g and the masks as floats
    that require grad (for the literal reference's straight-through gradients)."""
    layer.double()
    x = x.double()
    y = layer(x)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    masks = {k: m.double().requires_grad_() for k, m in layer.mask().items()}
    return x, y, g, masks


def check_grads(layer, masks, y_ref, g):
    (y_ref * g).sum().backward()
    for name, m in masks.items():
        scores = getattr(layer.structure, name).scores
        torch.testing.assert_close(scores.grad, m.grad * torch.sign(scores.detach()),
                                   rtol=1e-9, atol=1e-10, msg=f"gradient of the {name} scores")
        assert scores.grad.abs().sum() > 0


@pytest.mark.parametrize("structure", ["malach", "orseau"])
def test_two_layer_linear_is_literally_two_layers(structure):
    layer = ln.SubnetLinear(6, 4, True, structure=structure, hidden=9, sparsity=0.3, seed=1)
    x, y, g, masks = double_run(layer, torch.randn(5, 6))
    u, v, b = layer.structure.u.weight, layer.structure.v.weight, layer.bias
    assert u.shape == (9, 6) and v.shape == (4, 9)
    hidden = [max(0.0, sum(u[h, j] * masks["u"][h, j] * x[s, j] for j in range(6)))
              for s in range(5) for h in range(9)]
    y_ref = torch.stack([torch.stack([
        b[i] + sum(v[i, h] * masks["v"][i, h] * hidden[s * 9 + h] for h in range(9))
        for i in range(4)]) for s in range(5)])
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    check_grads(layer, masks, y_ref, g)


def test_two_layer_conv_is_conv_relu_pointwise():
    layer = ln.SubnetConv2d(4, 6, 3, 2, 1, 1, 2, True, structure="malach", hidden=8,
                            sparsity=0.4, seed=2)
    x, y, g, masks = double_run(layer, torch.randn(2, 4, 7, 7))
    s = layer.structure
    h = F.relu(F.conv2d(x, s.u.weight * masks["u"], None, 2, 1, 1, 2))
    y_ref = F.conv2d(h, (s.v.weight * masks["v"])[..., None, None], layer.bias, groups=2)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    check_grads(layer, masks, y_ref, g)


def test_dacunha_conv_literal_per_output_channels():
    """y_ℓ = b_ℓ + Σ_{t<n′} v_{ℓt} relu((U_{ℓn′+t} ∗ X)), X ≥ 0 as the theorem assumes."""
    n, c0, c1 = 3, 2, 4
    layer = ln.SubnetConv2d(c0, c1, 3, padding=1, bias=True, structure="dacunha", pairs=n,
                            sparsity=0.25, seed=3)
    x, y, g, masks = double_run(layer, torch.rand(2, c0, 6, 6))
    s = layer.structure
    assert s.u.weight.shape == (c1 * n, c0, 3, 3) and s.v.weight.shape == (c1, n)
    u = s.u.weight * masks["u"]
    v = s.v.weight * masks["v"]
    y_ref = torch.stack([layer.bias[ell] + sum(
        v[ell, t] * F.relu(F.conv2d(x, u[ell * n + t:ell * n + t + 1], padding=1))[:, 0]
        for t in range(n)) for ell in range(c1)], dim=1)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    check_grads(layer, masks, y_ref, g)


def test_dacunha_linear_literal():
    layer = ln.SubnetLinear(5, 3, structure="dacunha", pairs=2, sparsity=0.2, seed=4)
    x, y, g, masks = double_run(layer, torch.rand(4, 5))
    s = layer.structure
    h = F.relu(x @ (s.u.weight * masks["u"]).T)  # (4, 3 * 2)
    y_ref = (h.view(4, 3, 2) * (s.v.weight * masks["v"])).sum(-1)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    check_grads(layer, masks, y_ref, g)


@pytest.mark.parametrize("activation", ["relu", "identity"])
def test_fixedsize_literal_per_group_selection(activation):
    """Every (out, in, sign half) group keeps exactly k of its n terms, the k largest |score|;
    the output is the literal Σ_{j,t} ṽ_ijt φ(u_jt x_j) over the 2n (ReLU) or n terms."""
    n, d_in, d_out, sparsity = 5, 4, 3, 0.6
    k = round((1 - sparsity) * n)
    layer = ln.SubnetLinear(d_in, d_out, structure="fixedsize", pairs=n, activation=activation,
                            sparsity=sparsity, seed=5)
    x, y, g, masks = double_run(layer, torch.randn(6, d_in))
    s = layer.structure
    assert set(masks) == {"v"}  # u is frozen and carries no score
    terms = 2 * n if activation == "relu" else n
    assert s.u.weight.shape == (d_in, terms) and s.v.weight.shape == (d_out, d_in, terms)
    if activation == "relu":  # first half sees relu(x), second half relu(-x)
        assert (s.u.weight[:, :n] > 0).all() and (s.u.weight[:, n:] < 0).all()
    scores = s.v.scores.detach().abs()
    for i in range(d_out):
        for j in range(d_in):
            for half in range(terms // n):
                block = slice(half * n, (half + 1) * n)
                chosen = set(scores[i, j, block].topk(k).indices.tolist())
                kept = set(torch.nonzero(masks["v"][i, j, block]).flatten().tolist())
                assert kept == chosen and len(kept) == k
    phi = F.relu if activation == "relu" else (lambda z: z)
    hidden = phi(x[:, :, None] * s.u.weight[None])  # (B, in, terms): every hidden unit
    y_ref = torch.einsum("bjt,ijt->bi", hidden, s.v.weight * masks["v"])
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    check_grads(layer, masks, y_ref, g)
    assert ln.count_params(layer)["kept"] == d_out * d_in * (terms // n) * k


def test_fixedsize_conv_keeps_k_per_group_after_training_steps():
    layer = ln.SubnetConv2d(4, 6, 3, groups=2, structure="fixedsize", pairs=4, sparsity=0.5)
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    for _ in range(3):
        opt.zero_grad()
        layer(torch.randn(2, 4, 6, 6)).square().sum().backward()
        opt.step()
    mask = layer.mask()["v"]  # (out, in_g, 2n, 3, 3)
    assert mask.shape == (6, 2, 8, 3, 3)
    assert (mask.unflatten(2, (2, 4)).sum(3) == 2).all()


def test_fixedsize_sparsity_must_keep_one_per_group():
    match = (r"sparsity 0\.9 keeps no weight of a group \(fixed-size top-k\) with 5 entries; "
             r"use at most 0\.8")
    with pytest.raises(ValueError, match=match):
        ln.SubnetLinear(4, 3, structure="fixedsize", pairs=5, sparsity=0.9)
    with pytest.raises(ValueError, match=match):
        layer_counts("fixedsize", TargetShape(3, 4), pairs=5, sparsity=0.9)
    assert ln.SubnetLinear(4, 3, structure="fixedsize", pairs=5, sparsity=0.8).structure.v.k == 1


def test_group_topk_option_and_global_topk_refusal():
    m = MaskedWeight((3, 12), fan_in=12, sparsity=0.5, group_dim=1, group_size=4,
                     generator=torch.Generator().manual_seed(0))
    assert m.k == 2 and m.kept == 3 * 3 * 2
    assert (m.mask().view(3, 3, 4).sum(-1) == 2).all()
    with pytest.raises(ValueError, match="group_size=5 must divide the size 12"):
        MaskedWeight((3, 12), fan_in=12, sparsity=0.5, group_dim=1, group_size=5)
    with pytest.raises(ValueError, match="same number of entries in every group"):
        m.set_mask(torch.arange(36).view(3, 12) < 3)
    model = torch.nn.Sequential(ln.SubnetLinear(4, 3, structure="fixedsize"))
    with pytest.raises(ValueError, match="cannot take a global share"):
        ln.global_topk(model, 0.5)


def test_orseau_weights_are_hyperbolic_in_theorem_range():
    """|w| ∈ [α, β] and log|w| uniform on [ln α, ln β] (density ∝ 1/|w|), both signs."""
    layer = ln.SubnetLinear(100, 80, structure="orseau", hidden=300, seed=6)
    alpha, beta = orseau_range()
    w = torch.cat([layer.structure.u.weight.flatten(), layer.structure.v.weight.flatten()])
    assert w.abs().min() >= alpha * (1 - 1e-6) and w.abs().max() <= beta * (1 + 1e-6)
    u = (w.abs().log() - math.log(alpha)) / math.log(beta / alpha)
    ks = torch.sort(u.double()).values - torch.linspace(0, 1, u.numel(), dtype=torch.float64)
    assert ks.abs().max() < 0.01  # Kolmogorov–Smirnov distance to U[0, 1], n = 54,000
    assert abs((w > 0).double().mean().item() - 0.5) < 0.01
    malach = ln.SubnetLinear(100, 80, structure="malach", seed=6).structure.u.weight
    assert malach.abs().max() <= 1 and malach.abs().max() > 0.99  # U[-1, 1]
    explicit = ln.SubnetLinear(100, 80, structure="orseau", init="kaiming_normal", seed=6)
    assert explicit.structure.u.weight.abs().min() < alpha  # an explicit init wins


def formula(structure, out, in_g, kernel=(), groups=1, n=5, hidden=None, activation="relu"):
    """Maskable count of one layer, written out from each paper's shapes."""
    K = math.prod(kernel)
    if structure == "dense":
        return out * in_g * K
    if structure == "subsetsum":
        return n * groups * in_g + out * in_g * n * K
    if structure == "fixedsize":
        return out * in_g * K * (2 * n if activation == "relu" else n)
    if structure in ("malach", "orseau"):
        H = n * groups * in_g if hidden is None else hidden
        return H * in_g * K + out * H // groups
    return out * n * (in_g * K + 1)  # dacunha


CASES = [(s, hidden) for s in STRUCTURES.names() for hidden in (None, 12)
         if hidden is None or s in ("malach", "orseau")]


@pytest.mark.parametrize("structure,hidden,activation", [
    (s, hidden, activation) for s, hidden in CASES for activation in ("relu", "identity")
    if activation == "relu" or "activation" in structure_options(s)])
def test_counts_match_formulas_and_built_layers(structure, hidden, activation):
    options = {name: value for name, value in dict(pairs=3, hidden=hidden,
                                                   activation=activation).items()
               if name in structure_options(structure)}  # (another is refused)
    kw = dict(structure=structure, sparsity=0.7, **options)
    lin = ln.SubnetLinear(10, 6, True, **kw)
    conv = ln.SubnetConv2d(4, 6, (3, 2), groups=2, **kw)
    for layer, target, shape in [
            (lin, TargetShape(6, 10), dict(out=6, in_g=10)),
            (conv, TargetShape(6, 2, (3, 2), 2, 1), dict(out=6, in_g=2, kernel=(3, 2), groups=2))]:
        built = ln.count_params(layer)
        counts = layer_counts(structure, target, sparsity=0.7, **options)
        assert counts["maskable"] == built["maskable"] == formula(
            structure, n=3, hidden=hidden, activation=activation, **shape)
        assert counts["kept"] == built["kept"]
        bias = 0 if layer.bias is None else layer.bias.numel()
        assert counts["frozen"] + bias == built["frozen"]
        x = torch.rand(2, 10) if layer is lin else torch.rand(2, 4, 7, 7)
        ref = (torch.nn.Linear(10, 6) if layer is lin else torch.nn.Conv2d(4, 6, (3, 2), groups=2))
        assert layer(x).shape == ref(x).shape


def test_fc2_malach_width_default_is_pensia_hidden_width():
    counts = layer_counts("malach", TargetShape(500, 784), pairs=5)
    assert counts["maskable"] == 5 * 784 * (784 + 500)


def test_conv_malach_width_default_is_pairs_in_channels_as_help_says():
    """A conv target's default H is pairs · in_channels, not pairs · fan-in (in · k · k), which
    --hidden's help said."""
    import dataclasses

    from lotterynet.config_schema import RunConfig
    conv = ln.SubnetConv2d(4, 6, 3, groups=2, structure="malach", pairs=2)
    assert conv.structure.u.weight.shape == (2 * 4, 2, 3, 3)
    help_text = {f.name: f for f in dataclasses.fields(RunConfig)}["hidden"].metadata["help"]
    assert "pairs x in_features / in_channels" in help_text and "fan-in" not in help_text


@pytest.mark.parametrize("kwargs,match", [
    (dict(structure="malach", hidden=0), r"hidden must be a positive integer, got 0"),
    (dict(structure="dacunha", hidden=4), r"^hidden=4 is not an option of structure "
     r"'dacunha' \(it configures malach, orseau\)"),  # (its width is out · pairs)
    (dict(structure="fixedsize", pairs=-1), r"pairs must be a positive integer, got -1"),
    (dict(structure="fixedsize", activation="tanh"), r"unknown activation 'tanh'"),
    # options that the structure does not read, which it ignored (a dense layer built unsaid)
    (dict(structure="malach", activation="identity"),
     r"^activation='identity' is not an option of structure 'malach' \(it configures "
     r"fixedsize, subsetsum\); drop it or choose one of those structures$"),
    (dict(structure="dense", pairs=3), r"^pairs=3 is not an option of structure 'dense' "
     r"\(it configures dacunha, fixedsize, malach, orseau, subsetsum\)"),
    (dict(structure="subsetsum", hidden=7), r"^hidden=7 is not an option of structure "
     r"'subsetsum' \(it configures malach, orseau\)"),
    (dict(structure="dacunha", shared=False, fan_in="target"), r"^shared=False is not an "
     r"option of structure 'dacunha' \(it configures fixedsize, subsetsum\)"),
])
def test_bad_structure_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ln.SubnetLinear(8, 8, **kwargs)
    with pytest.raises(ValueError, match=match):
        layer_counts(kwargs.pop("structure"), TargetShape(8, 8), **kwargs)


@pytest.mark.parametrize("target,options,error,match", [
    (TargetShape(4, 6), dict(pair=3), ValueError,
     r"unknown option 'pair' for subsetsum; valid: sparsity, .*hidden, kept, pairs"),
    ((4, 6), {}, TypeError, r"target must be a TargetShape\(out_features, .*got \(4, 6\)"),
])
def test_layer_counts_refuses_a_misspelt_option_and_a_plain_tuple(target, options, error,
                                                                   match):
    """A misspelt option was ignored (counted with pairs=5), a tuple failed on its missing
    ``out_features``."""
    with pytest.raises(error, match=match):
        layer_counts("subsetsum", target, **options)


def test_the_structure_options_are_those_the_structures_read():
    """STRUCTURE_OPTIONS (what layer_counts and the run's unread options go by) is the union of
    what each structure's specs reads, none missing and none extra."""
    assert set(STRUCTURE_OPTIONS) == set().union(*map(structure_options, STRUCTURES.names()))


def test_an_option_at_its_default_is_accepted_by_every_structure():
    """STRUCTURE_OPTIONS' defaults are the subnet layers': a caller that passes every option
    at its default (build_model's layers, convert's, a stack's) builds any structure, though
    the structure reads only some of them."""
    import inspect

    for layer in (ln.SubnetLinear, ln.SubnetConv2d):
        parameters = inspect.signature(layer).parameters
        assert {name: parameters[name].default for name in STRUCTURE_OPTIONS} == \
            STRUCTURE_OPTIONS
    for structure in STRUCTURES.names():
        ln.SubnetLinear(4, 3, structure=structure, **STRUCTURE_OPTIONS)
        layer_counts(structure, TargetShape(3, 4), **STRUCTURE_OPTIONS)


def test_effective_weight_only_where_it_exists():
    assert not hasattr(ln.SubnetLinear(4, 3, structure="malach").structure, "effective_weight")
    w, doubles = ln.SubnetLinear(4, 3, structure="fixedsize").structure.effective_weight()
    assert w.shape == (3, 8) and doubles


@pytest.mark.parametrize("structure,kw", [("fixedsize", dict(activation="identity")),
                                          ("dacunha", {})])
def test_ticket_round_trip_of_new_structures(tmp_path, structure, kw):
    """A ticket's ``k`` is the tensor's kept count, also for group-wise (fixed-size) masks."""
    from lotterynet.models import build_model
    model = build_model("fc2", structure=structure, sparsity=0.6, **kw)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model(torch.randn(4, 1, 28, 28)).square().sum().backward()
    opt.step()
    ln.save_ticket(model, tmp_path / "t.ticket")
    loaded = ln.load_ticket(tmp_path / "t.ticket")
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))


def outcome(layer, x):
    """The output's dtype, or the type of the error ``layer(x)`` raises."""
    try:
        return layer(x).dtype
    except Exception as e:
        return type(e)


@pytest.mark.parametrize("structure", ["subsetsum", "fixedsize"])
@pytest.mark.parametrize("activation", ["relu", "identity"])
@pytest.mark.parametrize("rows", [4, 400])  # the literal path (few rows) and the collapse
@pytest.mark.parametrize("input_dtype, layer_dtype", [
    (torch.long, torch.float32), (torch.float16, torch.float32), (torch.float32, torch.float64)])
def test_an_input_of_another_dtype_is_refused_as_nn_linear_refuses_it(
        structure, activation, rows, input_dtype, layer_dtype):
    """An input of another dtype than the layer's (long, or float16 to a float32 layer, float32
    to a float64 one) of a few rows went through the literal product ``x ũ``, which promoted it
    and returned the output of an input in the layer's dtype; of more rows the layer refused it
    (``nn.Linear``'s dtype error): whether it ran depended on the batch size. Under bfloat16
    autocast, which casts both unless one is float64, the layer runs where nn.Linear runs."""
    x = torch.randint(-3, 4, (rows, 20)).to(input_dtype)
    with pytest.raises(RuntimeError, match="same dtype") as plain:
        torch.nn.Linear(20, 3).to(layer_dtype)(x)
    layer = ln.SubnetLinear(20, 3, structure=structure, activation=activation, sparsity=0.5)
    layer.to(layer_dtype)
    with pytest.raises(RuntimeError, match="same dtype") as subnet:
        layer(x)
    assert type(subnet.value) is type(plain.value)
    linear = torch.nn.Linear(20, 3).to(layer_dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for given in (x.float(), x.bfloat16(), x.to(layer_dtype)):
            assert outcome(layer, given) == outcome(linear, given)
