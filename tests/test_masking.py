import math

import pytest
import torch

import lotterynet as ln
from lotterynet.masking import MaskedWeight, ThresholdHint, topk_mask


@pytest.mark.parametrize("shape", [(10,), (7, 13), (4, 3, 5, 5), (1000, 3)])
@pytest.mark.parametrize("sparsity", [0.0, 0.01, 0.25, 0.5, 0.9, 0.99])
def test_exact_kept_count(shape, sparsity):
    numel = math.prod(shape)
    if round((1 - sparsity) * numel) < 1:
        with pytest.raises(ValueError, match="keeps no weight"):
            MaskedWeight(shape, fan_in=3, sparsity=sparsity)
        return
    m = MaskedWeight(shape, fan_in=3, sparsity=sparsity, generator=torch.Generator().manual_seed(0))
    mask = m.mask()
    assert mask.dtype == torch.bool and mask.shape == shape
    assert int(mask.sum()) == round((1 - sparsity) * numel) == m.k


def test_mask_keeps_largest_magnitudes():
    m = MaskedWeight((50, 40), fan_in=40, sparsity=0.8, generator=torch.Generator().manual_seed(1))
    mags = m.scores.detach().abs()
    kept, dropped = mags[m.mask()], mags[~m.mask()]
    assert kept.min() >= dropped.max()


def test_mask_with_ties_is_exact():
    mask = topk_mask(torch.ones(100), 37)
    assert int(mask.sum()) == 37


def test_mask_cache_follows_score_updates():
    m = MaskedWeight((20,), fan_in=1, sparsity=0.5, generator=torch.Generator().manual_seed(0))
    before = m.mask().clone()
    with torch.no_grad():
        m.scores.copy_(torch.arange(20.0))  # in place: the version counter moves
    assert torch.equal(m.mask(), torch.arange(20) >= 10)
    assert not torch.equal(before, m.mask())
    m.sparsity = 0.9
    assert torch.equal(m.mask(), torch.arange(20) >= 18)


def test_straight_through_gradient_float64():
    """∂L/∂s = ∂L/∂(w⊙m) ⊙ w ⊙ sign(s), computed by hand in float64."""
    m = MaskedWeight((6, 4), fan_in=4, sparsity=0.5, generator=torch.Generator().manual_seed(2))
    m.double()
    x = torch.randn(3, 4, dtype=torch.float64)
    out = x @ m().T
    (out ** 2).sum().backward()
    mask = m.mask().double()
    grad_w_eff = (2 * out).T @ x  # ∂L/∂(w⊙m)
    expected = grad_w_eff * m.weight * torch.sign(m.scores.detach())
    torch.testing.assert_close(m.scores.grad, expected, rtol=1e-12, atol=1e-12)
    assert m.weight.grad is None
    assert torch.equal(m().detach(), m.weight * mask)


def test_set_mask_imposes_selection():
    m = MaskedWeight((5, 5), fan_in=5, sparsity=0.5)
    wanted = torch.rand(5, 5) < 0.3
    m.set_mask(wanted)
    assert torch.equal(m.mask(), wanted) and m.k == int(wanted.sum())


def test_global_topk_ranks_all_tensors_together():
    model = torch.nn.Sequential(ln.SubnetLinear(30, 20, seed=0), ln.SubnetLinear(20, 10, seed=1))
    with torch.no_grad():  # layer 0: scores 1..600, layer 1: 601..800 -> layer 1 wins first
        model[0].structure.weight.scores.copy_(torch.arange(1, 601.0).view(20, 30))
        model[1].structure.weight.scores.copy_(torch.arange(601, 801.0).view(10, 20))
    ks = ln.global_topk(model, sparsity=0.75)  # keep 200 of 800
    assert ks == {"0.structure.weight": 0, "1.structure.weight": 200}
    ln.global_topk(model, sparsity=0.5)  # keep 400: all 200 of layer 1, top 200 of layer 0
    assert model[0].structure.weight.k == 200 and model[1].structure.weight.k == 200
    assert ln.count_params(model)["kept"] == 400
    assert bool(model[0].mask()["weight"].view(-1)[400:].all())


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.5", None, True])
def test_bad_sparsity_raises(bad):
    with pytest.raises(ValueError, match="sparsity"):
        ln.SubnetLinear(10, 10, sparsity=bad)


def test_sparsity_that_keeps_nothing_raises():
    with pytest.raises(ValueError, match=r"sparsity 0\.999 keeps no weight"):
        ln.SubnetLinear(10, 10, sparsity=0.999)
    with pytest.raises(ValueError, match="sparsity"):
        ln.global_topk(torch.nn.Sequential(ln.SubnetLinear(10, 10)), 1.0)


@pytest.mark.parametrize("n, k", [(1000, 1), (1000, 999), (5000, 2500), (60000, 6000)])
def test_hinted_selection_keeps_exactly_what_the_plain_one_keeps(n, k):
    """The threshold hint (the last step's k-th value) only narrows the quickselect: over scores
    that drift as in training, with ties planted at and around the cut-off, the mask is the
    plain selection's, lowest-index ties first, exactly k kept."""
    generator = torch.Generator().manual_seed(n + k)
    scores, hint = torch.randn(n, generator=generator), ThresholdHint()
    for step in range(40):
        scores = scores + 0.01 * torch.randn(n, generator=generator)
        if step % 7 == 0:
            scores[:50] = scores[100]
        if step % 11 == 0:
            scores = scores.round(decimals=2)
        hinted = topk_mask(scores.abs(), k, hint=hint)
        assert torch.equal(hinted, topk_mask(scores.abs(), k)) and int(hinted.sum()) == k
    assert hint.value is not None
