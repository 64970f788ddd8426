"""Each construction against a brute-force or float64 reference on tiny layers."""

import copy
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import lotterynet as ln
from conftest import requires_cuda
from lotterynet import constructions
from lotterynet.constructions import (
    GOLDEN_GAMMA,
    coefficient_bounds,
    construct_model,
    effective_errors,
    golden_ratio_cap,
    golden_ratio_decomposition,
    nearest_product,
    product_network,
    subset_sum,
)
from lotterynet.machine import device_clock


def nan_weight():
    layer = small_linear()
    with torch.no_grad():
        layer.weight[0, 1] = math.nan
    return layer


def small_linear(d_in=5, d_out=3, seed=0, scale=0.4, bias=False):
    torch.manual_seed(seed)
    layer = nn.Linear(d_in, d_out, bias=bias)
    with torch.no_grad():
        layer.weight.uniform_(-scale, scale)
    return layer


def brute_force(target: float, coeffs: torch.Tensor, k=None) -> float:
    """The smallest |target − Σ_{S} coeffs| over all subsets S (of size k if given)."""
    n = coeffs.numel()
    best = math.inf
    for size in range(n + 1) if k is None else [k]:
        for subset in itertools.combinations(range(n), size):
            best = min(best, abs(target - coeffs[list(subset)].sum().item()))
    return best


@pytest.mark.parametrize("k", [None, 3])
@pytest.mark.parametrize("coefficients", ["layer", "symmetric", "unit"])
def test_subset_sum_picks_the_best_subset_of_each_weight(k, coefficients):
    layer = small_linear(bias=True)
    n = 8
    subnet, stats = subset_sum(layer, n, torch.Generator().manual_seed(1), k=k,
                               coefficients=coefficients)
    structure = subnet.structure
    assert subnet.structure_name == ("subsetsum" if k is None else "fixedsize")
    v, mask = structure.v.weight.detach(), structure.v.mask()
    if k is not None:
        assert (mask.sum(2) == k).all()  # every weight keeps exactly k of its n (Natale)
    # the kept coefficients are the built layer's masked edges: the bias's subset is its frozen
    # value (they counted the bias's coefficients too: 15 k + 3 k at k = 3)
    assert stats["coefficients_kept"] == mask.sum()
    weight, _ = structure.effective_weight()
    for j, i in itertools.product(range(3), range(5)):
        w = layer.weight[j, i].item()
        lo, hi = stats["coefficient_range"]
        assert lo <= v[j, i].min() and v[j, i].max() <= hi
        assert abs(weight[j, i].item() - w) == pytest.approx(brute_force(w, v[j, i], k),
                                                             abs=1e-12)
    # the bias is approximated by its own subset sum of the same distribution: its n
    # coefficients are the generator's rows after the weights' (drawn again here), and the
    # frozen bias is their best subset's sum, not the target's bias itself
    errors = effective_errors(nn.Sequential(subnet), nn.Sequential(layer))
    assert errors.numel() == 15 + 3
    assert errors.max().item() == pytest.approx(stats["weight_error_max"], abs=1e-12)
    lo, hi = stats["coefficient_range"]
    coeffs = lo + (hi - lo) * torch.rand(15 + 3, n, generator=torch.Generator().manual_seed(1),
                                         dtype=torch.float64)
    assert torch.equal(coeffs[:15], v.movedim(2, -1).reshape(15, n))
    for j in range(3):
        b = layer.bias[j].item()
        assert errors[15 + j].item() == pytest.approx(brute_force(b, coeffs[15 + j], k),
                                                      abs=1e-12)


def test_coefficient_ranges_and_wrong_sign_count():
    w = torch.tensor([-0.48, -0.1, 0.05, 0.28], dtype=torch.float64)
    assert coefficient_bounds(w, "layer") == (-0.48, 0.28)
    assert coefficient_bounds(w, "symmetric") == (-0.48, 0.48)
    assert coefficient_bounds(w, "unit") == (-1.0, 1.0)
    with pytest.raises(ValueError, match="valid choices: layer, symmetric, unit"):
        coefficient_bounds(w, "wide")
    # the layer's range is over its weights and biases (what the sweeps' descriptions say)
    biased = nn.Linear(2, 1)
    with torch.no_grad():
        biased.weight.copy_(torch.tensor([[0.25, -0.5]]))
        biased.bias.fill_(-0.75)
    ranges = [subset_sum(biased, 1, torch.Generator(), coefficients=c)[1]["coefficient_range"]
              for c in ("layer", "symmetric")]
    assert ranges == [[-0.75, 0.25], [-0.75, 0.75]]
    # one coefficient per weight: a weight is "wrong-sign" when its only coefficient has the
    # other sign; with a lopsided range the count is what brute force says
    layer = nn.Linear(200, 50, bias=False)
    with torch.no_grad():
        layer.weight.uniform_(-0.48, 0.28)
    _, stats = subset_sum(layer, 1, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    lo, hi = stats["coefficient_range"]
    coeffs = lo + (hi - lo) * torch.rand(10_000, 1, generator=g, dtype=torch.float64)
    expected = int((coeffs[:, 0] * layer.weight.detach().double().reshape(-1) <= 0).sum())
    assert stats["all_coefficients_wrong_sign"] == expected > 0


def test_a_zero_target_is_not_a_wrong_sign_weight():
    """A weight of 0 is met exactly by the empty subset; every product ``a·0 <= 0`` counted it
    among the weights whose coefficients all have the wrong sign."""
    layer = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 0.5, 0.0, -0.5], [0.0, 0.0, 0.25, 0.0]]))
    _, stats = subset_sum(layer, 3, torch.Generator().manual_seed(0), coefficients="layer")
    coeffs = -0.5 + torch.rand(8, 3, generator=torch.Generator().manual_seed(0),
                               dtype=torch.float64)  # the same draws, U[-0.5, 0.5]
    w = layer.weight.detach().double().reshape(-1)
    expected = int(((coeffs * w[:, None] < 0).all(1) & (w != 0)).sum())
    assert stats["all_coefficients_wrong_sign"] == expected < 3


def test_nearest_product_is_the_argmin_of_each_sign_or_none():
    """Lemma 2.4's mask keeps at most one neuron per sign half: the nearest product, or none
    where 0 is nearer to w (it always kept one: w = 0 had the nearest product's error, a small
    w one of a coarse product, 0.5 here, instead of |w|)."""
    g = torch.Generator().manual_seed(2)
    products = torch.rand(3, 4, 6, generator=g, dtype=torch.float64) * 2 - 1
    u = torch.rand(4, 6, generator=g, dtype=torch.float64) * 2 - 1
    w = torch.rand(3, 4, generator=g, dtype=torch.float64) - 0.5
    w[0, 0] = 0.0
    products[1, 1], w[1, 1] = torch.linspace(0.6, 0.9, 6, dtype=torch.float64), 0.1
    nones = 0
    for allowed in (u > 0, u < 0):
        chosen = nearest_product(products, allowed, w)
        for j, i in itertools.product(range(3), range(4)):
            candidates = [t for t in range(6) if allowed[i, t]] + [None]  # None: keep none
            best = min(candidates, key=lambda t: abs(
                (0 if t is None else products[j, i, t]) - w[j, i]))
            assert chosen[j, i].sum() == (best is not None)
            if best is not None:
                assert chosen[j, i, best]
            nones += best is None
        assert not chosen[0, 0].any()  # a weight of 0 is met exactly by no neuron
        assert not chosen[1, 1].any()  # every product ≥ 0.6 for w = 0.1: none is nearer
    assert nones > 2


def test_golden_ratio_decomposition_meets_lemma_9():
    """Lemma 9 (γ = 2/3): with one candidate in each (γ^{i+1}, γ^i], i = 1..K, every w ∈ [0, 1]
    is approximated from below within γ^K; with arbitrary candidates never from above."""
    K = 12
    g = torch.Generator().manual_seed(3)
    lows = GOLDEN_GAMMA ** torch.arange(2, K + 2, dtype=torch.float64)
    highs = GOLDEN_GAMMA ** torch.arange(1, K + 1, dtype=torch.float64)
    w = torch.rand(200, 1, generator=g, dtype=torch.float64)
    signs = torch.where(torch.rand(200, 1, generator=g) < 0.5, -1.0, 1.0).double()
    buckets = lows + (highs - lows) * torch.rand(200, 1, K, generator=g, dtype=torch.float64)
    noise = torch.rand(200, 1, 5, generator=g, dtype=torch.float64) * 2 - 1  # other candidates
    products = torch.cat([buckets, noise], -1) * signs[..., None]
    chosen = golden_ratio_decomposition(products, torch.ones(1, K + 5, dtype=torch.bool),
                                        w * signs)
    approx = (products * chosen).sum(-1) * signs
    assert (approx <= w + 1e-12).all() and (approx >= -1e-12).all()
    assert (w - approx).max() <= GOLDEN_GAMMA**K
    # a weight of sign s only takes candidates of sign s
    assert ((products * signs[..., None])[chosen] > 0).all()


def test_golden_ratio_decomposition_takes_at_most_cap_products():
    """Uncapped, the greedy takes all five candidates below 1 (0.6 + 0.3 + 0.05 + 0.03 + 0.01);
    capped at 2 it stops after 0.6 + 0.3, within γ² of w (Lemma 9 with K = 2: 0.6 and 0.3
    lie in (γ², γ] and (γ³, γ²]). With random candidates, one in each (γ^{i+1}, γ^i],
    i = 1..K, and many small ones, the cap K keeps the γ^K bound."""
    products = torch.tensor([[[0.01, 0.3, 0.6, 0.03, 0.05]]], dtype=torch.float64)
    every = torch.ones(1, 5, dtype=torch.bool)
    w = torch.tensor([[1.0]], dtype=torch.float64)
    assert golden_ratio_decomposition(products, every, w).tolist() == [[[True] * 5]]
    chosen = golden_ratio_decomposition(products, every, w, cap=2)
    assert chosen.tolist() == [[[False, True, True, False, False]]]
    assert 1.0 - (products * chosen).sum().item() == pytest.approx(0.1, abs=1e-15)
    K = 4
    g = torch.Generator().manual_seed(6)
    lows = GOLDEN_GAMMA ** torch.arange(2, K + 2, dtype=torch.float64)
    highs = GOLDEN_GAMMA ** torch.arange(1, K + 1, dtype=torch.float64)
    w = torch.rand(500, 1, generator=g, dtype=torch.float64)
    buckets = lows + (highs - lows) * torch.rand(500, 1, K, generator=g, dtype=torch.float64)
    small = torch.rand(500, 1, 20, generator=g, dtype=torch.float64) * GOLDEN_GAMMA ** (K + 1)
    products = torch.cat([buckets, small], -1)
    every = torch.ones(1, K + 20, dtype=torch.bool)
    assert golden_ratio_decomposition(products, every, w).sum(-1).max() > K
    chosen = golden_ratio_decomposition(products, every, w, cap=K)
    approx = (products * chosen).sum(-1)
    assert chosen.sum(-1).max() == K and (approx <= w + 1e-12).all()
    assert (w - approx).max() <= GOLDEN_GAMMA**K


def test_orseau_product_network_keeps_at_most_k_prime_products():
    """ε_w = w_max: k′ = log_{3/2} 3 = 2.71, so each weight's sign half sums at most 2 products
    (Theorem 3, Step 2), where the uncapped greedy takes up to 4 of these m = 20 candidates;
    a half with a candidate in each (γ^{i+1}, γ^i]·w_max, i = 1..k, k = ⌈log_{3/2} 2⌉ = 2, is
    within ε_w/2 (Corollary 10)."""
    # k′ = 5 and 14 exactly: float logs give 4.999… and 13.999…
    assert [golden_ratio_cap(1.0, 3 / 1.5**k) for k in (5, 14)] == [5, 14]
    layer = small_linear(d_in=6, d_out=4, scale=0.4)
    w = layer.weight.detach().double()
    w_max = w.abs().max().item()
    m = 20
    subnet, _ = product_network(layer, m, torch.Generator().manual_seed(1), rule="orseau",
                                epsilon=w_max)
    u, v = subnet.structure.u, subnet.structure.v
    u_own = u.weight.detach()[torch.arange(6 * m), torch.arange(6).repeat_interleave(m)]
    products = v.weight.detach().view(4, 6, m) * u_own.view(6, m)
    chosen = v.mask().view(4, 6, m)
    halves = (u_own.view(6, m) > 0, u_own.view(6, m) < 0)
    for half, uncapped, covered in zip(halves, (4, 3), (9, 14)):
        kept = chosen & half
        assert kept.sum(-1).max() == 2
        assert golden_ratio_decomposition(products, half, w).sum(-1).max() == uncapped
        approx = (products * kept).sum(-1)
        magnitude = products * torch.sign(w)[..., None] / w_max
        event = torch.ones_like(w, dtype=torch.bool)
        for i in (1, 2):
            event &= ((magnitude > GOLDEN_GAMMA ** (i + 1)) & (magnitude <= GOLDEN_GAMMA**i)
                      & half).any(-1)
        assert event.sum() == covered
        assert ((approx - w).abs()[event] <= w_max / 2).all()


@pytest.mark.parametrize("rule", ["malach", "orseau"])
def test_product_network_forward_equals_float64_reference(rule):
    layer = small_linear(d_in=6, d_out=4, bias=True)
    m = 10
    subnet, stats = product_network(layer, m, torch.Generator().manual_seed(4), rule=rule)
    assert subnet.structure_name == rule and subnet.structure.hidden == m * 6
    u = subnet.structure.u.weight.detach() * subnet.structure.u.mask()
    v = subnet.structure.v.weight.detach() * subnet.structure.v.mask()
    assert ((u != 0).sum(1) <= 1).all()  # every hidden neuron keeps at most one input edge
    x = torch.randn(32, 6, dtype=torch.float64)
    reference = torch.stack([
        torch.tensor([sum(v[j, h].item() * max(0.0, sum(u[h, i].item() * x[b, i].item()
                                                        for i in range(6)))
                          for h in range(m * 6)) + layer.bias[j].item() for j in range(4)],
                     dtype=torch.float64)
        for b in range(4)])
    with torch.no_grad():
        out = subnet(x[:4])
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-12)
    # the network's linear map on each sign half is the target's within the reported error
    with torch.no_grad():
        w_pos = subnet(torch.eye(6, dtype=torch.float64)) - layer.bias.double()
        w_neg = -(subnet(-torch.eye(6, dtype=torch.float64)) - layer.bias.double())
    error = torch.maximum((w_pos.T - layer.weight.double()).abs(),
                          (w_neg.T - layer.weight.double()).abs())
    assert error.max().item() == pytest.approx(stats["weight_error_max"], abs=1e-12)


@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_subset_sum_conv_forward_equals_literal_paths(padding_mode):
    """Figure 1b literally: one path of weight a_t per kept coefficient, convolved separately,
    each padded as the target pads (a circular one was refused: the layer padded only with
    zeros, another function at the borders)."""
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode=padding_mode)
    subnet, _ = subset_sum(conv, 6, torch.Generator().manual_seed(5), coefficients="unit")
    s = subnet.structure
    paths = (s.v.weight * s.v.mask() * s.u.weight * s.u.mask()).detach()  # (out, in, n, 3, 3)
    x = torch.randn(2, 2, 7, 7, dtype=torch.float64)
    literal = sum(conv._conv_forward(x, paths[:, :, t], None) for t in range(6)) + subnet.bias[
        None, :, None, None]
    with torch.no_grad():
        torch.testing.assert_close(subnet(x), literal, rtol=0, atol=1e-12)


def test_construct_model_replaces_every_layer_and_counts():
    target = nn.Sequential(nn.Flatten(), small_linear(8, 5), nn.ReLU(), small_linear(5, 2, 1))
    model, stats = construct_model(target, lambda layer, generator: product_network(
        layer, 4, generator, rule="orseau"), seed=0)
    assert [type(m).__name__ for m in model] == ["Flatten", "SubnetLinear", "ReLU",
                                                 "SubnetLinear"]
    assert [s["hidden"] for s in stats] == [32, 20]
    kept = ln.count_params(model)["kept"]
    v_kept = sum(s["coefficients_kept"] for s in stats)
    assert v_kept < kept <= 2 * v_kept  # kept v edges plus at most one u edge each
    with pytest.raises(ValueError, match="built for nn.Linear"):
        product_network(nn.Conv2d(1, 1, 3), 4, torch.Generator(), rule="malach")


@pytest.mark.parametrize("call, match", [
    (lambda g: subset_sum(small_linear(), -1, g), "n must be a positive integer, got -1"),
    (lambda g: subset_sum(small_linear(), 1.5, g), "n must be a positive integer, got 1.5"),
    (lambda g: subset_sum(small_linear(), 4, g, k=0), "k must be a positive integer, got 0"),
    (lambda g: subset_sum(small_linear(), 4, g, k=5), r"k must be in \[1, n=4\]"),
    (lambda g: product_network(small_linear(), 2, g, rule="bogus"),
     "unknown rule 'bogus'; valid choices: malach, orseau"),
    (lambda g: product_network(small_linear(), 0, g, rule="malach"),
     "m must be a positive integer, got 0"),
    # they named orseau_range's eps_w, not the argument given
    (lambda g: product_network(small_linear(), 4, g, rule="orseau", epsilon=0),
     "^epsilon must be a positive finite number, got 0$"),
    (lambda g: product_network(small_linear(), 4, g, rule="orseau", epsilon=-0.01),
     "^epsilon must be a positive finite number, got -0.01$"),
    (lambda g: product_network(small_linear(scale=0.0), 4, g, rule="orseau", epsilon=math.nan),
     "^epsilon must be a positive finite number, got nan$"),
    # malach, which reads no epsilon, took an invalid one silently
    (lambda g: product_network(small_linear(), 4, g, rule="malach", epsilon=-1.0),
     "^epsilon must be a positive finite number, got -1.0$"),
    (lambda g: product_network(small_linear(), 4, g, rule="malach", epsilon=math.inf),
     "^epsilon must be a positive finite number, got inf$"),
    # alpha and beta are in float32's range: the ratio, the limit broken, was not shown
    (lambda g: product_network(small_linear(), 4, g, rule="orseau", epsilon=1e-40),
     r"got alpha=\S+e-31, beta=\S+, beta/alpha=1.11e\+40$"),
    # refused naming only the hyperbolic range it gives ("hyperbolic needs ... alpha=4.7e-226")
    (lambda g: product_network(small_linear(), 4, g, rule="orseau", epsilon=1e-300),
     r"^epsilon=1e-300 puts Theorem 3's hyperbolic range for this layer \(max \|w\| = 0.371\) "
     r"outside float32: hyperbolic needs .* got alpha=4.\d+e-226"),
    (lambda g: product_network(small_linear(), 4, g, rule="orseau", epsilon=1e300),
     "^epsilon=1e[+]300 puts Theorem 3's hyperbolic range"),
    # a NaN weight built a network of NaN errors; an LSTM, an empty or a meta layer failed in
    # torch (AttributeError, min() of no elements, .item() of a meta tensor)
    (lambda g: product_network(nan_weight(), 4, g, rule="malach"),
     r"weight\[0, 1\] = nan is not finite"),
    (lambda g: subset_sum(nan_weight(), 4, g), r"weight\[0, 1\] = nan is not finite"),
    (lambda g: subset_sum(nn.LSTM(2, 2), 4, g), "built for nn.Linear or nn.Conv2d, got LSTM"),
    (lambda g: subset_sum(nn.Linear(0, 2), 4, g), r"no weights \(weight shape \(2, 0\)\)"),
    (lambda g: product_network(nn.Linear(2, 2, device="meta"), 4, g, rule="malach"),
     "meta device"),
])
def test_bad_construction_sizes_are_refused_naming_them(call, match):
    """They failed inside torch (a negative dimension), as a KeyError, or named a sparsity."""
    with pytest.raises(ValueError, match=match):
        call(torch.Generator().manual_seed(0))


@pytest.mark.parametrize("rule", ["malach", "orseau"])
def test_an_all_zero_target_is_built_exactly_keeping_nothing(rule):
    """Orseau's construction refused it naming an internal function ("orseau_range: w_max must
    be a positive finite number, got 0.0"); Malach's, like the subset sums, is exact on it."""
    subnet, stats = product_network(small_linear(scale=0.0), 4,
                                    torch.Generator().manual_seed(0), rule=rule)
    assert stats["weight_error_max"] == 0 and stats["coefficients_kept"] == 0
    assert ln.count_params(subnet)["kept"] == 0
    with torch.no_grad():
        assert not subnet(torch.randn(2, 5, dtype=torch.float64)).any()


@pytest.mark.parametrize("epsilon", [10.0, np.float32(10), 0.03])
def test_orseau_keeps_nothing_of_a_layer_within_a_third_of_epsilon_of_zero(epsilon):
    """With 3 max|w| ≤ ε, Theorem 3's product range is empty and its mask size k′ ≤ 0: every
    weight is within ε/3 of 0, so keeping nothing meets its ε/2 per sign half. It was refused
    ("epsilon=10.0 is at least 3 max|w| ..."), though a layer with max|w| in (ε/3, ε/2) was
    built keeping nothing (cap 0), and an all-zero one too."""
    layer = small_linear(scale=0.01)
    subnet, stats = product_network(layer, 4, torch.Generator().manual_seed(0), rule="orseau",
                                    epsilon=epsilon)
    assert stats["coefficients_kept"] == 0
    assert stats["weight_error_max"] == layer.weight.abs().max().item() <= epsilon / 3
    assert ln.count_params(subnet)["kept"] == 0
    with torch.no_grad():
        assert not subnet(torch.randn(2, 5, dtype=torch.float64)).any()


@pytest.mark.parametrize("build", [
    lambda layer, g: subset_sum(layer, 1, g, coefficients="unit"),
    lambda layer, g: subset_sum(layer, 1, g, k=1, coefficients="unit"),
    lambda layer, g: product_network(layer, 1, g, rule="malach"),
    lambda layer, g: product_network(layer, 1, g, rule="orseau")])
def test_a_one_weight_layer_is_built(build):
    """A layer of one weight (refused as "sparsity 0.5 keeps no weight": the builders' placeholder
    sparsity, before their masks were set) is built and keeps what its selection chose."""
    layer = small_linear(d_in=1, d_out=1)
    subnet, stats = build(layer, torch.Generator().manual_seed(0))
    assert ln.count_params(subnet)["kept"] >= stats["coefficients_kept"]


DEVICE_BUILDS = [
    lambda layer, g: subset_sum(layer, 4, g),
    lambda layer, g: subset_sum(layer, 4, g, k=2, coefficients="unit"),
    lambda layer, g: product_network(layer, 3, g, rule="malach"),
    lambda layer, g: product_network(layer, 3, g, rule="orseau")]


def assert_same_network(built, reference):
    assert built.state_dict().keys() == reference.state_dict().keys()
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(built.state_dict()[name].cpu(), value, rtol=0, atol=1e-12,
                                   msg=name)


@pytest.mark.parametrize("build", DEVICE_BUILDS)
def test_the_constructions_draw_on_the_cpu_whatever_the_default_device(build):
    """The coefficients and random layers were drawn and built on the default device, not the
    CPU and then the layer's: under another one, the subset sums were refused naming coeffs the
    caller never passed ("coeffs is on the meta device"), the product networks failed in torch
    ("Tensor on device cpu is not on the expected device meta!")."""
    layer = small_linear(bias=True)
    reference, _ = build(layer, torch.Generator().manual_seed(3))
    with torch.device("meta"):
        built, _ = build(layer, torch.Generator().manual_seed(3))
    assert {p.device.type for p in built.parameters()} == {"cpu"}
    assert_same_network(built, reference)


@requires_cuda
@pytest.mark.parametrize("build", DEVICE_BUILDS)
def test_a_cuda_layer_is_built_on_cuda_as_on_the_cpu(build):
    """The coefficients were drawn on the CPU beside the layer's CUDA targets: "targets are on
    cuda:0 but coeffs on cpu"; the same seed now builds the same network, on the layer's
    device."""
    layer = small_linear(bias=True)
    reference, _ = build(layer, torch.Generator().manual_seed(3))
    built, _ = build(layer.cuda(), torch.Generator().manual_seed(3))
    assert {p.device.type for p in built.parameters()} == {"cuda"}
    assert_same_network(built, reference)
    with pytest.raises(TypeError, match="^generator must be a CPU torch.Generator .* got one on "
                                        "cuda:0$"):
        build(layer.cuda(), torch.Generator(device="cuda"))


@pytest.mark.parametrize("build", DEVICE_BUILDS)
def test_solve_seconds_wait_for_the_layers_device(build, monkeypatch):
    """The solve and the product selection were timed with time.perf_counter() alone: on a GPU,
    whose kernels return before they have run, solve_seconds under-reported. Both clock reads
    go through machine.device_clock on the layer's device, which synchronizes a CUDA one."""
    reads = []

    def clock(device):
        reads.append(device)
        return 10.0 * len(reads)

    monkeypatch.setattr(constructions, "device_clock", clock)
    layer = small_linear()
    _, stats = build(layer, torch.Generator().manual_seed(3))
    assert reads == [layer.weight.device] * 2 and stats["solve_seconds"] == 10.0
    monkeypatch.undo()
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", synced.append)
    device_clock(torch.device("cpu"))
    device_clock(torch.device("cuda", 1))  # (no GPU needed: synchronize is faked)
    assert synced == [torch.device("cuda", 1)]


@pytest.mark.parametrize("generator, got", [(3, "3"), ("seed", "'seed'")])
@pytest.mark.parametrize("build", DEVICE_BUILDS[::2])
def test_a_generator_that_is_not_a_cpu_generator_is_refused_naming_it(build, generator, got):
    """subset_sum(layer, 4, generator=3) failed with torch's many-line TypeError of torch.rand's
    signatures; product_network with torch.randint's."""
    with pytest.raises(TypeError, match=rf"^generator must be a CPU torch.Generator \(the "
                                        rf"constructions draw on the CPU\) or None, got {got}$"):
        build(small_linear(), generator)


def test_construct_model_replaces_layers_at_any_depth():
    """Layers inside nested modules are built too (they stayed the exact trained layers, and the
    errors covered only the top-level ones)."""
    target = nn.Sequential(nn.Sequential(small_linear(8, 6), nn.ReLU()), small_linear(6, 3, 1))
    model, stats = construct_model(target, lambda layer, generator: subset_sum(
        layer, 4, generator, coefficients="unit"), seed=0)
    assert isinstance(model[0][0], ln.SubnetLinear) and isinstance(model[1], ln.SubnetLinear)
    assert [s["targets"] for s in stats] == [48, 18]
    assert effective_errors(model, target).numel() == 66


@pytest.mark.parametrize("kind", ["Conv2dSame", "StdConv2dSame", "ScaledStdConv2dSame"])
def test_a_timm_convolution_is_rebuilt_computing_as_it_does(kind):
    """A target layer of timm's Conv2dSame (TF "SAME" padding) or StdConv2dSame (weight
    standardisation) was rebuilt as a plain convolution: its network padded nothing and
    standardised nothing, so it computed something else than the target's layer given the
    constructed weight (another output size under stride 2); a ScaledStdConv2dSame was refused
    (its trained gain), and is rebuilt scaled by the target's gain. Conv2dSameExport, a
    subclass with no rule, is refused naming its type."""
    import timm.layers
    from timm.layers.conv2d_same import Conv2dSameExport

    torch.manual_seed(0)
    target = nn.Sequential(getattr(timm.layers, kind)(2, 3, 3, stride=2)).double()
    if hasattr(target[0], "gain"):  # (as training leaves it: not timm's 1s)
        with torch.no_grad():
            target[0].gain.uniform_(0.5, 2.0)
    model, _ = construct_model(target, lambda layer, generator: subset_sum(
        layer, 6, generator), seed=0)
    reference = copy.deepcopy(target)
    with torch.no_grad():  # (the bias too is a subset sum's)
        for name in ("weight", "bias"):
            if getattr(target[0], name) is not None:
                getattr(reference[0], name).copy_(getattr(model[0], name))
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    assert model(x).shape == (2, 3, 4, 4)
    torch.testing.assert_close(model(x), reference(x), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"^layer '0': timm\.layers\.conv2d_same\."
                       r"Conv2dSameExport subclasses nn\.Conv2d and may compute something else.*"
                       r"; if it computes what its base torch\.nn\.modules\.conv\.Conv2d does, "
                       r"register that rule for it first: lotterynet\.convert_rules\.CONVERTIBLE"
                       r"\.register\('timm\.layers\.conv2d_same\.Conv2dSameExport'\)"):
        construct_model(nn.Sequential(Conv2dSameExport(2, 3, 3)),
                        lambda layer, generator: subset_sum(layer, 6, generator))


def test_construct_model_of_a_single_layer_is_its_construction():
    """A target that is itself an nn.Linear came back unchanged (the trained layer, under the
    stats of a construction it did not hold)."""
    model, stats = construct_model(small_linear(), lambda layer, generator: subset_sum(
        layer, 4, generator))
    assert isinstance(model, ln.SubnetLinear) and [s["targets"] for s in stats] == [15]


def test_construct_model_names_the_layer_a_construction_refuses():
    """A refusal of one of the model's layers (a NaN weight, here) did not say which layer."""
    target = nn.Sequential(nn.Sequential(small_linear(3, 5), nn.ReLU()), nan_weight())
    with pytest.raises(ValueError, match=r"^layer '1': the layer's weight\[0, 1\] = nan is "
                                         r"not finite"):
        construct_model(target, lambda layer, generator: product_network(
            layer, 2, generator, rule="malach"))


@pytest.mark.parametrize("target, match", [
    (nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(),
                   nn.Linear(24, 2)),
     r"^the constructions replace nn.Linear and nn.Conv2d layers only; none replaces the "
     r"trained values of '0' \(Conv1d: weight, bias\), '1' \(BatchNorm1d: weight, bias, "
     r"running_mean, running_var\): they would stay in the pruned random network$"),
    (nn.MultiheadAttention(4, 2), r"of the model \(MultiheadAttention: in_proj_weight, "
                                  r"in_proj_bias\): they would stay"),
    (nn.Sequential(nn.Sequential(*[nn.LayerNorm(2) for _ in range(5)]), nn.Linear(2, 2)),
     r"'0.0' \(LayerNorm: weight, bias\), '0.1' .*, '0.2' .* and 2 more: they would stay"),
    (nn.Bilinear(2, 2, 2), r"the model \(Bilinear: weight, bias\)"),
    (nn.Sequential(nn.Flatten(), nn.ReLU()),
     r"^the constructions replace nn.Linear and nn.Conv2d layers; the model \(Sequential\) "
     r"has none$"),
], ids=["conv1d-batchnorm", "attention", "five-norms", "bilinear", "no-layer"])
def test_construct_model_refuses_a_target_whose_trained_values_it_would_keep(target, match):
    """Only the Linear / Conv2d layers were built: a Conv1d's and a norm's trained parameters
    and running statistics, MultiheadAttention's in_proj, stayed in the "pruned random
    network" without a word; a model with none came back unchanged with no stats."""
    built = []
    with pytest.raises(ValueError, match=match):
        construct_model(target, lambda layer, generator: built.append(layer))
    assert not built  # before anything is built



@pytest.mark.parametrize("seed, error, match", [
    (-1, ValueError, r"^seed must be in \[0, 2\*\*64\), got -1$"),  # (drew 2**64 - 1's network)
    (1.5, TypeError, "^seed must be an integer, got 1.5$"),  # (torch's RuntimeError)
    ("0", TypeError, "^seed must be an integer, got '0'$"),
])
def test_construct_model_refuses_a_seed_that_is_not_a_generators(seed, error, match):
    built = []
    with pytest.raises(error, match=match):
        construct_model(small_linear(), lambda layer, generator: built.append(layer), seed=seed)
    assert not built  # before anything is built

def test_construct_model_builds_a_tied_layer_once_and_puts_it_everywhere():
    """A layer used twice was replaced at its first place only: the second stayed the exact
    trained layer, counted in no stats."""
    layer = small_linear(4, 4)
    model, stats = construct_model(nn.Sequential(layer, nn.ReLU(), layer),
                                   lambda layer, generator: subset_sum(layer, 4, generator))
    assert isinstance(model[0], ln.SubnetLinear) and model[2] is model[0]
    assert [s["targets"] for s in stats] == [16]


def small_conv(bias=True):
    torch.manual_seed(0)
    return nn.Conv2d(2, 3, 3, bias=bias)


@pytest.mark.parametrize("target, build", [
    (nn.Sequential(small_linear(6, 5), nn.ReLU(), small_linear(5, 3, seed=1)),
     lambda layer, generator: subset_sum(layer, 7, generator)),  # Pensia
    (nn.Sequential(small_linear(6, 5)),
     lambda layer, generator: subset_sum(layer, 7, generator, shared_per_row=True)),
    (nn.Sequential(small_linear(6, 5, bias=True)),
     lambda layer, generator: subset_sum(layer, 7, generator, k=2)),  # Natale
    (nn.Sequential(small_conv(), nn.ReLU(), small_conv(bias=False)),
     lambda layer, generator: subset_sum(layer, 5, generator, coefficients="unit")),  # da Cunha
])
def test_a_subset_sum_construction_saves_as_a_ticket_and_loads_bit_exactly(target, build,
                                                                            tmp_path):
    """save_ticket refused every subset-sum construction: "frozen parameter
    '0.structure.u.weight' is no longer what its seed draws (trained, or changed in place
    ...)" ('0.bias' for a conv), since its coefficients are drawn from the target's range, not
    by the layer's seed. The layer records their draw (the generator's state), which the
    ticket's check draws again; the bias, the sums found, is stored. A ticket loads into the
    same construction (not one of another seed), equal bit for bit, holding no coefficient."""
    model, _ = construct_model(target, build, seed=0)
    size = ln.save_ticket(model, tmp_path / "x.ticket")
    assert size < sum(p.numel() * 8 for n, p in model.named_parameters() if "v.weight" in n)
    loaded = ln.load_ticket(tmp_path / "x.ticket", model=construct_model(target, build)[0])
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    with pytest.raises(ln.TicketError, match="different frozen random weights"):
        ln.load_ticket(tmp_path / "x.ticket", model=construct_model(target, build, seed=1)[0])
    with torch.no_grad():
        model[0].structure.v.weight[0, 0, 0] += 1
    with pytest.raises(ValueError, match="'0.structure.v.weight' is no longer what its seed"):
        ln.save_ticket(model, tmp_path / "y.ticket")


@pytest.mark.parametrize("rule", ["malach", "orseau"])
def test_a_biased_product_network_saves_as_a_ticket_and_loads_bit_exactly(rule, tmp_path):
    """save_ticket refused a product network of a biased layer: "frozen parameter '0.bias' is
    no longer what its seed draws (trained, or changed in place ...)", since the construction
    copies the target's bias over the one the seed drew, still recorded as frozen as built.
    The bias is the construction's, so the ticket stores it (as a subset sum's): a ticket
    loads into the same construction, equal bit for bit, and gives the same outputs."""
    target = nn.Sequential(small_linear(6, 5, bias=True), nn.ReLU(),
                           small_linear(5, 3, seed=1, bias=True))

    def build(layer, generator):
        return product_network(layer, 3, generator, rule=rule)

    model = construct_model(target, build)[0].eval()
    ln.save_ticket(model, tmp_path / "x.ticket")
    loaded = ln.load_ticket(tmp_path / "x.ticket", model=construct_model(target, build)[0])
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    x = torch.randn(4, 6, dtype=torch.float64)  # (a construction is float64)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x))


@pytest.mark.parametrize("build", [
    lambda layer, generator: subset_sum(layer, 5, generator),
    lambda layer, generator: subset_sum(layer, 5, generator, k=2),
    lambda layer, generator: product_network(layer, 3, generator, rule="malach"),
    lambda layer, generator: product_network(layer, 3, generator, rule="orseau"),
], ids=["subset_sum", "fixed_size", "malach", "orseau"])
def test_a_constructions_layer_resets_to_what_it_solved(build):
    """``reset_parameters()`` of a construction's layer drew the seed's random bias and initial
    scores (its masks) over the ones solved from the target; then it was refused, but
    ``model.apply`` of it (after ``to_empty``, timm's ``init_weights``) had reset the modules
    visited before it, leaving the model half reset. It puts back what it solved, over its
    frozen weights drawn again: after ``to_empty`` too, the model is the one built, whole."""
    layer = construct_model(small_linear(bias=True), build)[0]
    state = {n: t.clone() for n, t in layer.state_dict().items()}
    x = torch.randn(4, 5, dtype=torch.float64)
    with torch.no_grad():
        built = layer(x)
    model = nn.Sequential(nn.Linear(5, 5, dtype=torch.float64), layer).to_empty(device="cpu")
    model.apply(lambda m: hasattr(m, "reset_parameters") and m.reset_parameters())
    assert layer.state_dict().keys() == state.keys()
    assert all(torch.equal(layer.state_dict()[n], t) for n, t in state.items())
    with torch.no_grad():
        assert torch.equal(layer(x), built)


def test_a_constructions_scaled_standardised_layer_resets_to_the_targets_gain():
    """``reset_parameters()`` of a construction's layer rebuilt from timm's ScaledStdConv2d
    left its gain as ``to_empty`` left it (garbage): it gets back the target's gain it took,
    and the model computes what it was built to."""
    from timm.layers import ScaledStdConv2d

    torch.manual_seed(0)
    target = nn.Sequential(ScaledStdConv2d(2, 3, 3)).double()
    with torch.no_grad():  # (as training leaves it: not timm's 1s)
        target[0].gain.uniform_(0.5, 2.0)
    model, _ = construct_model(target, lambda layer, generator: subset_sum(
        layer, 6, generator), seed=0)
    state = {n: t.clone() for n, t in model.state_dict().items()}
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        built = model(x)
        model.to_empty(device="cpu")
        for p in model.parameters():  # (to_empty's memory may still hold the values)
            p.fill_(float("nan"))
    model.apply(lambda m: hasattr(m, "reset_parameters") and m.reset_parameters())
    assert torch.equal(model[0].gain, target[0].gain)
    assert all(torch.equal(model.state_dict()[n], t) for n, t in state.items())
    with torch.no_grad():
        assert torch.equal(model(x), built)


def test_a_product_networks_median_error_is_over_every_weight():
    """The median weight error of a model of several product layers is the median of all their
    weights' errors (it was the median of the layers' medians: two layers counted equally)."""
    from functools import partial

    from lotterynet.approximate import measure
    from lotterynet.approximate_sweeps import Sweep, _product

    target = nn.Sequential(small_linear(20, 10, 0), nn.ReLU(), small_linear(10, 2, 1))
    sweep = Sweep("malach", "Malach", "m", (3,), partial(_product, "malach"))
    x = torch.randn(8, 20, dtype=torch.float64)
    row = measure(sweep, 3, 0, target, nn.Sequential(), x, torch.zeros(8, dtype=torch.long),
                  target.double()(x))
    model, stats = construct_model(target, sweep.build(3), seed=0)
    errors = torch.cat([s["weight_errors"] for s in stats])
    assert errors.numel() == 220
    assert row["weight_error_median"] == errors.median().item()
    assert row["weight_error_max"] == errors.max().item()


@pytest.mark.parametrize("target, found", [
    (nn.Sequential(nn.Linear(4, 3)), "a Linear of weight \\(3, 4\\) and a bias at '0'"),
    (nn.Sequential(nn.ReLU()), "a ReLU at '0'"),
    (nn.Sequential(), "no module at '0'"),
    (nn.Sequential(nn.Linear(5, 3, bias=False)), "a Linear of weight \\(3, 5\\) at '0'"),
])
def test_effective_errors_against_another_target_is_refused_naming_the_layer(target, found):
    """It failed in torch (a size mismatch, "'ReLU' object has no attribute 'weight'",
    "Sequential has no attribute `0`"), or, the target's layer without the model's bias, left
    the bias out of the errors; a model of no subset-sum layer failed in torch.cat."""
    built = nn.Sequential(small_linear(bias=True))
    model, _ = construct_model(built, lambda layer, generator: subset_sum(layer, 3, generator))
    with pytest.raises(ValueError, match=rf"^effective_errors compares a model with the target "
                                         rf"it was built from; the target has {found}, where the "
                                         rf"model's layer was built from an nn.Linear of weight "
                                         rf"\(3, 5\) and a bias$"):
        effective_errors(model, target)
    with pytest.raises(ValueError, match=r"^effective_errors reads a constructed model's "
                                         r"subset-sum layers; the model \(Sequential\) has none$"):
        effective_errors(built, built)  # (torch.cat of no tensors)


def test_effective_errors_of_a_product_network_is_refused_in_one_line():
    """It failed with AttributeError: 'Malach' object has no attribute 'effective_weight'."""
    target = nn.Sequential(small_linear())
    model, _ = construct_model(
        target, lambda layer, generator: product_network(layer, 2, generator, rule="malach"))
    with pytest.raises(ValueError, match=r"0 is a malach layer .*stats\['weight_errors'\]"):
        effective_errors(model, target)
