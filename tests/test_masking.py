import copy
import io
import math
import re

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import lotterynet as ln
from conftest import requires_cuda
from lotterynet.masking import MaskedWeight
from lotterynet.topk import (
    HINT_MIN_ENTRIES,
    ThresholdHint,
    count_dtype,
    count_ones,
    rows_topk_mask,
    topk_mask,
)


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


def test_a_weight_passed_in_must_have_the_masked_weights_shape():
    """A weight of another shape than ``shape`` (the scores') was taken: the product broadcast
    it against the mask, and ``kept`` counted the weight's entries with the scores' ``k``."""
    weight = torch.arange(12.0).view(3, 4)
    m = MaskedWeight([3, 4], fan_in=4, sparsity=0.5, weight=weight)
    assert torch.equal(m.weight, weight) and m.kept == 6
    with pytest.raises(ValueError, match=r"^weight of shape \(4,\) given for a MaskedWeight of "
                                         r"shape \(3, 4\): pass a weight of that shape$"):
        MaskedWeight((3, 4), fan_in=4, sparsity=0.5, weight=torch.randn(4))


def test_mask_keeps_largest_magnitudes():
    m = MaskedWeight((50, 40), fan_in=40, sparsity=0.8, generator=torch.Generator().manual_seed(1))
    mags = m.scores.detach().abs()
    kept, dropped = mags[m.mask()], mags[~m.mask()]
    assert kept.min() >= dropped.max()


@pytest.mark.parametrize("rule, fan_in, bound", [("edgepopup", 40, 40 ** -0.5),
                                                  ("kaiming", 40, (2 / 40) ** 0.5),
                                                  ("kaiming", 1, 2 ** 0.5),
                                                  ("unit", 400, 1.0)])
def test_scores_start_uniform_inside_the_score_init_bound(rule, fan_in, bound):
    """U(±b): the same draws for either rule, scaled to b (edge-popup 1/√fan_in; kaiming
    √(2/fan_in), Pensia et al.'s RedLayer); the frozen weight does not depend on the rule."""
    def build(score_init):
        return MaskedWeight((200, 50), fan_in=fan_in, sparsity=0.5, score_init=score_init,
                            generator=torch.Generator().manual_seed(3))

    m, reference = build(rule), build("edgepopup")
    scores = m.scores.detach()
    assert scores.abs().max() <= bound and scores.abs().max() > 0.99 * bound
    torch.testing.assert_close(scores, reference.scores.detach() * (bound * fan_in ** 0.5))
    assert torch.equal(m.weight, reference.weight)
    with pytest.raises(ValueError, match="unknown score_init 'wide'; valid choices: edgepopup"):
        build("wide")


def test_mask_with_ties_is_exact():
    mask = topk_mask(torch.ones(100), 37)
    assert int(mask.sum()) == 37


def test_mask_cache_follows_score_updates():
    """Under no_grad, where the mask is cached (with grad it is re-ranked on every call): a
    change of the scores, or of ``k`` alone (the same scores), makes a new mask."""
    m = MaskedWeight((20,), fan_in=1, sparsity=0.5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = m.mask().clone()
        m.scores.copy_(torch.arange(20.0))  # in place: the version counter moves
        assert torch.equal(m.mask(), torch.arange(20) >= 10)
        assert not torch.equal(before, m.mask())
        m.sparsity = 0.9
        assert torch.equal(m.mask(), torch.arange(20) >= 18)


def test_a_copy_or_pickle_of_an_evaluated_layer_leaves_its_mask_cache_behind():
    """The evaluation mask cache (a snapshot of the scores and the mask, keyed by the scores'
    storage) went into ``copy.deepcopy`` and ``torch.save(model)``, where no forward can hit
    it: the pickle of a layer that had evaluated was twice that of a fresh one. It stays
    behind now, and the copies compute what the layer does."""
    layer = ln.SubnetLinear(64, 64, sparsity=0.5, seed=0).eval()
    fresh, evaluated = io.BytesIO(), io.BytesIO()
    torch.save(layer, fresh)
    x = torch.randn(2, 64)
    with torch.no_grad():
        y = layer(x)
    torch.save(layer, evaluated)
    assert evaluated.tell() == fresh.tell()
    evaluated.seek(0)
    for copy_ in (torch.load(evaluated, weights_only=False), copy.deepcopy(layer)):
        with torch.no_grad():
            assert torch.equal(copy_(x), y)


def test_a_layers_masks_are_copies_the_caller_may_change():
    """``layer.mask()`` in evaluation hands out copies: a caller who intersects the mask it got
    with something else, in place, changes neither the next mask nor the output."""
    layer = ln.SubnetLinear(10, 10, sparsity=0.5, seed=0).eval()
    x = torch.randn(2, 10)
    with torch.no_grad():
        before = layer(x)
        layer.mask()["weight"].zero_()
        assert int(layer.mask()["weight"].sum()) == 50
        assert torch.equal(layer(x), before)


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


@pytest.mark.filterwarnings("ignore:global_topk at sparsity")  # (a tensor left nothing: below)
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
    with torch.no_grad():  # NaN scores in layer 1 rank below all: its 200 go to layer 0
        model[1].structure.weight.scores.fill_(math.nan)
    assert ln.global_topk(model, sparsity=0.5) == {"0.structure.weight": 400,
                                                   "1.structure.weight": 0}
    # a compiled model's are its module's names (not the wrapper's _orig_mod.…)
    assert ln.global_topk(torch.compile(model), sparsity=0.5) == {"0.structure.weight": 400,
                                                                  "1.structure.weight": 0}


@pytest.mark.parametrize("score_init, small_fan_in_share", [("edgepopup", (0.85, 0.95)),
                                                             ("unit", (0.45, 0.55))])
def test_global_topk_at_init_is_fair_to_every_layer_with_unit_scores(score_init,
                                                                      small_fan_in_share):
    """Default scores U(±1/√fan_in) rank a fan-in-4 layer's above a fan-in-400 layer's: a
    global ranking at init keeps 10/11 of the small one (|s| > t with 2t + 20t = 1).
    ``score_init="unit"`` draws every tensor on one scale: each keeps about its share
    (1 − sparsity) of its weights."""
    model = torch.nn.Sequential(ln.SubnetLinear(4, 400, seed=0, score_init=score_init),
                                ln.SubnetLinear(400, 4, seed=1, score_init=score_init))
    ks = ln.global_topk(model, sparsity=0.5)
    low, high = small_fan_in_share
    assert low <= ks["0.structure.weight"] / 1600 <= high, ks
    assert sum(ks.values()) == 1600


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.5", None, True])
def test_bad_sparsity_raises(bad):
    with pytest.raises(ValueError, match="sparsity"):
        ln.SubnetLinear(10, 10, sparsity=bad)


def test_sparsity_that_keeps_nothing_raises():
    with pytest.raises(ValueError, match=r"sparsity 0\.999 keeps no weight"):
        ln.SubnetLinear(10, 10, sparsity=0.999)
    with pytest.raises(ValueError, match="sparsity"):
        ln.global_topk(torch.nn.Sequential(ln.SubnetLinear(10, 10)), 1.0)


def true_mask(m):
    """The top-k of |scores| by a full sort in float64 (lowest index first among ties)."""
    flat = m.scores.detach().abs().double().reshape(-1)
    order = sorted(range(flat.numel()), key=lambda i: (-flat[i].item(), i))[:m.k]
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[order] = True
    return mask.view_as(m.scores)


def fused_step(opt_class, **kw):
    def update(m):
        opt = opt_class([m.scores], lr=0.5, **kw)
        m.scores.grad = torch.randn_like(m.scores)
        opt.step()
    return update


def data_write(m):
    m.scores.data.copy_(torch.randn_like(m.scores))


def load_state(m):
    m.load_state_dict({**m.state_dict(), "scores": torch.randn_like(m.scores)})


def manual_edit(m):
    with torch.no_grad():
        m.scores[:5] *= -100.0  # a few entries jump to the top


UPDATES = {
    "sgd-fused": fused_step(torch.optim.SGD, fused=True),
    "adam-fused": fused_step(torch.optim.Adam, fused=True),
    "sgd-foreach": fused_step(torch.optim.SGD, foreach=True, momentum=0.9),
    "adamw-foreach": fused_step(torch.optim.AdamW, foreach=True),
    "data-write": data_write,
    "load-state-dict": load_state,
    "manual-edit": manual_edit,
}


@pytest.mark.parametrize("update", UPDATES.values(), ids=UPDATES.keys())
@pytest.mark.parametrize("grad_enabled", [True, False], ids=["train", "eval"])
def test_mask_is_never_stale(update, grad_enabled):
    m = MaskedWeight((200,), fan_in=1, sparsity=0.5, generator=torch.Generator().manual_seed(0))
    with torch.set_grad_enabled(grad_enabled):
        first = m.mask().clone()
        for _ in range(3):
            update(m)
            assert torch.equal(m.mask(), true_mask(m))
            assert torch.equal(m().detach(), torch.where(true_mask(m), m.weight, 0.0))
    assert not torch.equal(first, m.mask())


def test_evaluation_does_not_rerank_unchanged_scores(monkeypatch):
    import lotterynet.masking as masking

    calls = []
    original = masking.topk_mask
    monkeypatch.setattr(masking, "topk_mask",
                        lambda *a, **kw: calls.append(1) or original(*a, **kw))
    layer = ln.SubnetLinear(30, 20, seed=0)
    x = torch.randn(4, 30)
    with torch.no_grad():
        y = layer(x)
        assert torch.equal(layer(x), y) and torch.equal(layer(x), y)
    assert len(calls) == 1
    with torch.inference_mode():
        layer(x)
    assert len(calls) == 1
    layer(x)  # a training forward (grad enabled, trainable scores) always re-ranks
    layer(x)
    assert len(calls) == 3


def test_a_mask_made_under_inference_mode_is_not_kept_for_training():
    """Scores frozen, weights trained under the mask (allowed): a forward under
    ``torch.inference_mode`` (Lightning's validate/test/predict) cached its inference tensor,
    and the next training step raised "Inference tensors cannot be saved for backward"."""
    layer = ln.SubnetLinear(6, 4, sparsity=0.5, seed=0)
    layer.structure.weight.scores.requires_grad_(False)
    layer.structure.weight.weight.requires_grad_(True)
    x = torch.randn(3, 6)
    with torch.inference_mode():
        expected = layer(x)
    out = layer(x)
    out.sum().backward()
    mask = layer.mask()["weight"]
    assert torch.equal(out, expected)
    assert torch.equal(layer.structure.weight.weight.grad, x.sum(0).expand(4, 6) * mask)


def test_kept_rules():
    assert ln.kept_count(9, 0.5) == 4 and ln.kept_count(9, 0.5, "floor") == 5
    assert ln.kept_count(10, 0.25) == 8 and ln.kept_count(10, 0.25, "floor") == 8
    shapes = [(n, s) for n in (7, 9, 27, 75, 150, 363) for s in (0.1, 0.3, 0.5, 0.7, 0.9)]
    differs = [(n, s) for n, s in shapes if ln.kept_count(n, s) != ln.kept_count(n, s, "floor")]
    assert differs and all(ln.kept_count(n, s, "floor") == ln.kept_count(n, s) + 1
                           for n, s in differs)
    layer = ln.SubnetLinear(3, 3, sparsity=0.5, kept="floor")
    assert layer.structure.weight.k == 5 and int(layer.mask()["weight"].sum()) == 5
    with pytest.raises(ValueError, match="kept rule 'ceil'.*round, floor"):
        ln.SubnetLinear(3, 3, kept="ceil")
    with pytest.raises(ValueError, match="tie rule 'first'.*low, high"):
        ln.SubnetLinear(3, 3, ties="first")


@pytest.mark.parametrize("ties,expected", [("low", [0, 1, 2, 5]), ("high", [0, 5, 7, 8])])
def test_tie_rules(ties, expected):
    magnitudes = torch.tensor([3.0, 1, 1, 0, 0, 2, 0, 1, 1])  # keep 4: 3, 2 and two of four 1s
    mask = topk_mask(magnitudes, 4, ties=ties)
    assert mask.nonzero().squeeze(1).tolist() == expected
    rows = topk_mask(magnitudes.repeat(2), 4, group_dim=0, group_size=9, ties=ties)
    assert rows.view(2, 9).nonzero()[:, 1].tolist() == expected * 2  # per group, same rule


class _ReferenceSubnet(torch.autograd.Function):
    """The edge-popup reference's mask, re-implemented from its description: sort |s| ascending
    (stable), zero the first ``int((1 - prune_rate) * n)``, one elsewhere; gradient straight
    through to |s|."""

    @staticmethod
    def forward(ctx, magnitudes, prune_rate):
        order = magnitudes.flatten().sort(stable=True).indices
        j = int((1 - prune_rate) * magnitudes.numel())
        flat = torch.ones(magnitudes.numel())
        flat[order[:j]] = 0
        return flat.view_as(magnitudes)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class ReferenceLinear(nn.Linear):
    """A linear layer of the reference: weight * mask(|scores|), prune_rate = fraction kept."""

    def __init__(self, *args, prune_rate, **kwargs):
        super().__init__(*args, **kwargs)
        self.scores = nn.Parameter(torch.zeros_like(self.weight))
        self.weight.requires_grad_(False)
        self.prune_rate = prune_rate

    def subnet(self):
        return _ReferenceSubnet.apply(self.scores.abs(), self.prune_rate)

    def forward(self, x):
        return nn.functional.linear(x, self.weight * self.subnet(), self.bias)


@pytest.mark.parametrize("shape", [(7, 9), (10, 30), (3, 25)])
@pytest.mark.parametrize("prune_rate", [0.5, 0.3, 0.05])
def test_reference_rules_reproduce_the_reference_bit_for_bit(shape, prune_rate):
    """With kept="floor", ties="high" a layer copied from the reference gives the same masks,
    outputs and score gradients, step after step; scores on a coarse grid, so ties at the
    cut-off are many."""
    out_f, in_f = shape
    ours = ln.SubnetLinear(in_f, out_f, True, sparsity=1 - prune_rate, kept="floor",
                           ties="high", seed=0)
    ref = ReferenceLinear(in_f, out_f, prune_rate=prune_rate)
    tensor = ours.structure.weight
    with torch.no_grad():
        grid = torch.randint(-8, 9, shape, generator=torch.Generator().manual_seed(sum(shape)))
        tensor.scores.copy_(grid * 0.125)
        ref.weight.copy_(tensor.weight)
        ref.bias.copy_(ours.bias)
        ref.scores.copy_(tensor.scores)
    default = ln.SubnetLinear(in_f, out_f, sparsity=1 - prune_rate, seed=0)
    with torch.no_grad():
        default.structure.weight.scores.copy_(tensor.scores)
    assert not torch.equal(default.mask()["weight"], ref.subnet().bool())  # the rules matter
    opts = [torch.optim.SGD([m.scores], lr=0.01) for m in (tensor, ref)]
    x = torch.randn(16, in_f)
    for _ in range(3):
        assert torch.equal(ours.mask()["weight"], ref.subnet().bool())
        ys = [ours(x), ref(x)]
        assert torch.equal(*ys)
        for y, opt in zip(ys, opts):
            opt.zero_grad()
            y.square().sum().backward()
        assert torch.equal(tensor.scores.grad, ref.scores.grad)
        for opt in opts:
            opt.step()


@pytest.mark.parametrize("ties, first_k", [("low", 1600), ("high", 0)])
def test_global_topk_breaks_ties_by_the_tensors_rule(ties, first_k):
    """All scores tied (as after set_mask's 0/1 scores): the budget goes by index over the
    model's tensors, lowest first for ``ties="low"``, as each tensor's own top-k does."""
    model = torch.nn.Sequential(*(ln.SubnetLinear(40, 40, seed=s, ties=ties) for s in (0, 1)))
    with torch.no_grad():
        for layer in model:
            layer.structure.weight.scores.fill_(0.5)
    emptied = 0 if first_k == 0 else 1  # (the whole budget goes to the other tensor)
    with pytest.warns(UserWarning, match=f"keeps no weight of {emptied}.structure.weight"):
        ks = ln.global_topk(model, sparsity=0.5)
    assert list(ks.values()) == [first_k, 1600 - first_k]
    model[1].structure.weight.set_rules(ties="low" if ties == "high" else "high")
    with pytest.raises(ValueError, match="break ties by different rules .*high, low"):
        ln.global_topk(model, sparsity=0.5)


def test_global_topk_counts_by_the_tensors_kept_rule():
    """18 entries at 0.75: ``"floor"`` keeps 18 − int(13.5) = 5 in all, where ``"round"``
    keeps round(4.5) = 4; at 0.96 of 10 entries ``"floor"`` keeps 1 where ``"round"`` keeps
    none (refused) — the same counts as one tensor of that size under each rule."""
    def model(kept, shapes=((3, 3), (3, 3))):
        return torch.nn.Sequential(*(ln.SubnetLinear(*shape, seed=s, kept=kept)
                                     for s, shape in enumerate(shapes)))

    floor, rounded = model("floor"), model("round")
    assert sum(ln.global_topk(floor, sparsity=0.75).values()) == 5
    assert sum(ln.global_topk(rounded, sparsity=0.75).values()) == 4
    assert ln.count_params(floor)["kept"] == 5
    assert sum(ln.global_topk(model("floor", [(5, 2)]), sparsity=0.96).values()) == 1
    with pytest.raises(ValueError, match="sparsity 0.96 keeps no weight"):
        ln.global_topk(model("round", [(5, 2)]), sparsity=0.96)
    floor[1].structure.weight.set_rules(kept="round")
    with pytest.raises(ValueError, match="count kept entries by different rules .*floor, round"):
        ln.global_topk(floor, sparsity=0.75)


def test_pruned_fraction_is_what_the_masks_prune():
    """fixedsize rounds per group: 3 terms at sparsity 0.6 keep round(1.2) = 1 each (16 of the
    48 terms of a 4 → 2 ReLU layer), "floor" keeps 3 − int(1.8) = 2 (32); a dense 3 × 3 keeps
    round(3.6) = 4 of 9, and 1 after global_topk at 0.9."""
    fixed = ln.SubnetLinear(4, 2, structure="fixedsize", pairs=3, sparsity=0.6, seed=0)
    assert ln.pruned_fraction(fixed) == 32 / 48
    floor = ln.SubnetLinear(4, 2, structure="fixedsize", pairs=3, sparsity=0.6, kept="floor")
    assert ln.pruned_fraction(floor) == 16 / 48
    model = torch.nn.Sequential(ln.SubnetLinear(3, 3, sparsity=0.6, seed=1), fixed)
    assert ln.pruned_fraction(model) == (5 + 32) / 57
    ln.global_topk(model[:1], 0.9)
    assert ln.pruned_fraction(model) == (8 + 32) / 57
    with pytest.raises(ValueError, match="pruned_fraction: the model has no maskable"):
        ln.pruned_fraction(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("mask, words", [
    (torch.tensor([[2, 0, 0], [0, 0, 0]]), "torch.int64"),
    (torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]), "torch.float32"),
    ([[True, False, False], [False, False, False]], "<class 'list'>")])
def test_set_mask_takes_only_a_boolean_tensor(mask, words):
    m = MaskedWeight((2, 3), fan_in=3, sparsity=0.5)
    with pytest.raises(TypeError, match=f"boolean tensor .*got {re.escape(words)}"):
        m.set_mask(mask)


def test_global_topk_may_leave_a_tensor_nothing():
    model = torch.nn.Sequential(ln.SubnetLinear(30, 20, seed=0), ln.SubnetLinear(20, 10, seed=1))
    with torch.no_grad():
        model[1].structure.weight.scores.add_(10.0)
    with pytest.warns(UserWarning, match=r"global_topk at sparsity 0.9 keeps no weight of "
                      r"0.structure.weight: what those layers output no longer depends"):
        assert ln.global_topk(model, sparsity=0.9)["0.structure.weight"] == 0
    assert not model[0].mask()["weight"].any() and int(model[1].mask()["weight"].sum()) == 80
    assert torch.equal(model[0](torch.randn(2, 30)), torch.zeros(2, 20))


def test_count_ones_is_exact_past_the_integers_of_float32():
    """A 0/1 float mask is counted by its sum: beyond 2**24 entries a float32 sum would round
    (2**24 + 3 becomes 2**24 + 4), so the count must come out exact there too."""
    n = (1 << 24) + 3
    assert int(count_ones(torch.ones(n))) == n
    mask = torch.zeros(2, 3000)
    mask[0, :1234] = 1
    assert count_ones(mask, 1).tolist() == [1234, 0]
    assert int(count_ones(mask.bool())) == 1234


@pytest.mark.parametrize("device, dtype", [("cpu", torch.float64), ("cuda", torch.float64),
                                           ("mps", torch.int64)])
def test_count_ones_past_the_integers_of_float32_needs_no_float64_on_mps(device, dtype):
    """Past 2**24 entries a 0/1 float mask was summed in float64 on every device: MPS has
    none (a drop-in layer's mask counted on an Apple GPU raised TypeError: 'Cannot convert a
    MPS Tensor to float64 dtype'). There it is counted in int64, as a boolean mask is; exact
    too (checked here on the CPU); elsewhere in float64 as before, and below 2**24 in
    float32 on every device."""
    n = (1 << 24) + 3
    assert count_dtype(n, torch.device(device)) == dtype
    assert count_dtype(n - 4, torch.device(device)) == torch.float32
    assert torch.ones(n).sum(dtype=dtype).item() == n


@pytest.mark.parametrize("device", ["mps", "xpu"])
def test_a_mask_on_a_device_other_than_the_cpu_is_selected_by_topk_without_host_reads(device):
    """Only CUDA took ``torch.topk``: every other device took the CPU's ``kthvalue``, which MPS
    lacked (NotImplementedError before pytorch PR #161817), and its host reads, which would wait
    for the device. Selected on a fake tensor of that device (shapes only: a host read raises
    DataDependentOutputException), a mask now comes from topk, of the scores' shape, device and
    the dtype asked for."""
    ops = set()

    class RecordOps(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ops.add(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with FakeTensorMode(), RecordOps():
        mask = topk_mask(torch.empty(4, 6, device=device), 2, group_dim=1, group_size=3,
                         dtype=torch.float16)
    assert (mask.shape, mask.device.type, mask.dtype) == ((4, 6), device, torch.float16)
    assert "topk" in ops and "kthvalue" not in ops


def test_a_layer_off_the_cpu_evaluates_again_without_checking_its_scores_on_the_host():
    """Outside training the mask cache checks the scores by content (``torch.equal``, whose
    answer is read on the host): on every device but CUDA, where ``topk_mask`` reads nothing
    back off the CPU. A layer on ``meta`` (a model probed for its shapes) raised
    NotImplementedError (aten::equal has no meta kernel) at its second evaluation forward; on
    MPS each forward waited for the device. Off the CPU the mask is now chosen anew."""
    layer = ln.SubnetLinear(8, 4, sparsity=0.5, seed=0).to("meta").eval()
    with torch.no_grad():
        for _ in range(2):
            assert layer(torch.empty(2, 8, device="meta")).shape == (2, 4)


@requires_cuda
@pytest.mark.parametrize("ties", ["low", "high"])
def test_a_cuda_mask_is_the_cpu_mask_ties_included(ties):
    """CUDA selects by ``torch.topk`` (the k-th largest is the least of the k largest), the CPU
    by quickselect: the same exactly ``k`` entries, ties at the cut-off by the same rule, whole
    tensors and groups (values on a coarse grid, so many magnitudes tie)."""
    g = torch.Generator().manual_seed(0)
    magnitudes = torch.randint(0, 12, (6, 300), generator=g).float() / 4
    for k, group in ((1, {}), (37, {}), (1799, {}), (7, dict(group_dim=1, group_size=50))):
        cpu = topk_mask(magnitudes, k, ties=ties, **group)
        assert torch.equal(topk_mask(magnitudes.cuda(), k, ties=ties, **group).cpu(), cpu)
        assert int(cpu.sum()) == k * (36 if group else 1)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_mask_keeps_exactly_k_among_many_ties(dtype):
    """4097 tied entries and k = 4096: the mask's own float cannot count them (a bfloat16 or
    float16 sum of 4097 ones is 4096), yet the mask keeps exactly k, the lowest indices."""
    magnitudes = torch.cat([torch.ones(4097), torch.zeros(100)])
    mask = topk_mask(magnitudes, 4096, dtype=dtype)
    assert mask.dtype == dtype and int(mask.double().sum()) == 4096
    assert torch.equal(mask.bool(), torch.arange(4197) < 4096)


@pytest.mark.parametrize("ties", ["low", "high"])
@pytest.mark.parametrize("n, k", [(10000, 1), (10000, 9999), (20000, 10000), (60000, 6000)])
def test_hinted_selection_keeps_exactly_what_the_plain_one_keeps(n, k, ties):
    """The threshold hint (the last step's k-th value) only narrows the quickselect and ranks
    the ties it finds in its band: over scores that drift as in training, with ties planted at
    and around the cut-off, the mask is the plain selection's under either tie rule, exactly k
    kept."""
    generator = torch.Generator().manual_seed(n + k)
    scores, hint, float_hint = torch.randn(n, generator=generator), ThresholdHint(), ThresholdHint()
    for step in range(40):
        scores = scores + 0.01 * torch.randn(n, generator=generator)
        if step % 7 == 0:
            scores[:50] = scores[100]
        if step % 11 == 0:
            scores = scores.round(decimals=2)
        hinted = topk_mask(scores.abs(), k, ties=ties, hint=hint)
        assert torch.equal(hinted, topk_mask(scores.abs(), k, ties=ties))
        assert int(hinted.sum()) == k
        # the 0/1 float mask the forward multiplies by: the same selection on the same path
        as_float = topk_mask(scores.abs(), k, ties=ties, hint=float_hint, dtype=torch.float32)
        assert as_float.dtype == torch.float32 and torch.equal(as_float, hinted.float())
    assert hint.value is not None


@pytest.mark.parametrize("ties", ["low", "high"])
@pytest.mark.parametrize("k", [0, 1, 4, 9])
def test_float_mask_is_the_boolean_mask_on_every_path(ties, k):
    """Plain selection with ties ranked, group-wise, every entry kept or none: the 0/1 mask in
    the weight's dtype keeps exactly the entries the boolean one keeps."""
    magnitudes = torch.tensor([3.0, 1, 1, 0, 0, 2, 0, 1, 1])
    for args in [dict(), dict(group_dim=0, group_size=9)]:
        values = magnitudes.repeat(2) if args else magnitudes
        expected = topk_mask(values, k, ties=ties, **args)
        for dtype in (torch.float32, torch.float64, torch.bfloat16):
            got = topk_mask(values, k, ties=ties, dtype=dtype, **args)
            assert got.dtype == dtype and torch.equal(got, expected.to(dtype))


def test_small_tensors_select_without_the_hint():
    """Below HINT_MIN_ENTRIES the plain quickselect runs (the hint's extra ops would cost more):
    the hint stays unset and the mask is the plain one."""
    scores = torch.randn(HINT_MIN_ENTRIES - 1, generator=torch.Generator().manual_seed(0))
    hint = ThresholdHint()
    for _ in range(3):
        assert torch.equal(topk_mask(scores.abs(), 100, hint=hint), topk_mask(scores.abs(), 100))
    assert hint.value is None


@pytest.mark.parametrize("k", [-1, 11, True, None, 2.0])
def test_topk_mask_refuses_a_k_outside_the_tensor(k):
    with pytest.raises(ValueError, match=r"k must be an integer in \[0, 10\]"):
        topk_mask(torch.rand(10), k)


@pytest.mark.parametrize("sparsity", [-0.1, 1.5, float("nan"), True])
def test_kept_count_refuses_a_sparsity_outside_0_1(sparsity):
    with pytest.raises(ValueError, match="fraction pruned"):
        ln.kept_count(10, sparsity)


def test_unfrozen_weight_gets_the_products_gradient_float64():
    """A user who unfreezes the weights (``requires_grad_``) gets ∂L/∂w = ∂L/∂(w⊙m) ⊙ m, by
    hand in float64, and the scores' gradient is unchanged."""
    m = MaskedWeight((6, 4), fan_in=4, sparsity=0.5, generator=torch.Generator().manual_seed(2))
    m.double().requires_grad_(True)
    x = torch.randn(3, 4, dtype=torch.float64)
    out = x @ m().T
    (out ** 2).sum().backward()
    grad_w_eff = (2 * out).T @ x
    mask = m.mask().double()
    torch.testing.assert_close(m.weight.grad, grad_w_eff * mask, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.scores.grad, grad_w_eff * m.weight * m.scores.sign(),
                               rtol=1e-12, atol=1e-12)
    assert int(m.weight.grad.ne(0).sum()) == m.kept == 12
    layer = ln.SubnetLinear(10, 10, True, seed=0).requires_grad_(True)
    assert ln.count_params(layer) == {"maskable": 100, "kept": 50, "frozen": 0,
                                      "trainable": 210}


def test_floor_rule_is_applied_from_the_start():
    """``kept="floor"`` keeps ``n - int(s·n)``: at 0.96 of 10 entries one, where ``"round"``
    keeps none; the layer and the analytic count agree."""
    assert ln.kept_count(10, 0.96, "floor") == 1 and ln.kept_count(10, 0.96) == 0
    layer = ln.SubnetLinear(5, 2, sparsity=0.96, kept="floor", seed=0)
    assert int(layer.mask()["weight"].sum()) == 1
    for structure in ("subsetsum", "fixedsize"):
        options = dict(structure=structure, pairs=5, activation="identity")
        target = ln.TargetShape(3, 4)
        built = ln.SubnetLinear(4, 3, sparsity=0.78, kept="floor", **options)
        counted = ln.layer_counts(structure, target, sparsity=0.78, kept="floor", pairs=5,
                                  activation="identity")
        assert ln.count_params(built)["kept"] == counted["kept"]
        assert counted["kept"] != ln.layer_counts(structure, target, sparsity=0.78, pairs=5,
                                                  activation="identity")["kept"]
    with pytest.raises(ValueError, match="keeps no weight"):
        ln.SubnetLinear(5, 2, sparsity=0.96)


def test_global_topk_and_set_mask_survive_a_state_dict(tmp_path):
    """``k`` is part of the state: after global_topk / set_mask, a fresh model loading the
    state dict (through a weights_only file) keeps what the original keeps, bit for bit."""
    def make():
        return nn.Sequential(ln.SubnetLinear(8, 16, seed=0), ln.SubnetLinear(16, 4, seed=2),
                             ln.SubnetLinear(4, 4, structure="fixedsize", pairs=4, seed=3,
                                             activation="identity"))
    model = make()
    ln.global_topk(model[:2], 0.3)
    wanted = torch.zeros(4, 4, 4, dtype=torch.bool)
    wanted[..., :3] = True  # 3 of each weight's 4 terms (fixed size: per group)
    model[2].structure.v.set_mask(wanted)
    torch.save(model.state_dict(), tmp_path / "state.pt")
    fresh = make()
    assert ln.count_params(fresh)["kept"] != ln.count_params(model)["kept"]
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    x = torch.randn(5, 8)
    assert ln.count_params(fresh)["kept"] == ln.count_params(model)["kept"]
    assert torch.equal(fresh(x), model(x))
    state = model.state_dict()
    state["0.structure.weight._extra_state"] = torch.tensor([200])
    with pytest.raises(ValueError, match="k=200 is not a count of kept entries of 128"):
        fresh.load_state_dict(state)


def test_a_tensor_keeping_every_entry_survives_a_state_dict():
    """``k`` may be the whole tensor (sparsity 0, or a global_topk share of all of it): a state
    dict's ``k`` equal to the entries loads, as one above them is refused."""
    dense = ln.SubnetLinear(3, 2, sparsity=0.0, seed=0)
    fresh = ln.SubnetLinear(3, 2, seed=0)  # sparsity 0.5: k = 3
    fresh.load_state_dict(dense.state_dict())
    assert fresh.structure.weight.k == 6 and bool(fresh.structure.weight.mask().all())


@pytest.mark.parametrize("ties", ["low", "high"])
def test_rows_topk_mask_is_each_rows_own_topk_mask(ties):
    """One pass over S rows, each with its own k (none, one, all, all but one, any), gives
    every row exactly the mask topk_mask gives it alone, ties included (values on a coarse
    grid, so many magnitudes tie at every threshold)."""
    g = torch.Generator().manual_seed(0)
    magnitudes = torch.randint(0, 12, (7, 300), generator=g).float() / 4
    ks = [0, 1, 299, 300, 37, 150, 211]
    masks = rows_topk_mask(magnitudes, torch.tensor(ks), ties, torch.float32)
    for row, k, mask in zip(magnitudes, ks, masks):
        assert torch.equal(mask, topk_mask(row, k, ties=ties, dtype=torch.float32))
        assert int(mask.sum()) == k



def sorted_mask(key: torch.Tensor, k: int, ties: str) -> torch.Tensor:
    """The reference: a full stable sort of ``key``, descending, ties by index (lowest first
    for ``"low"``), and its first ``k``."""
    flipped = ties == "high"
    order = torch.sort(-(key.flip(0) if flipped else key), stable=True).indices[:k]
    mask = torch.zeros(key.numel(), dtype=torch.bool)
    mask[key.numel() - 1 - order if flipped else order] = True
    return mask


@pytest.mark.parametrize("n", [300, 4 * HINT_MIN_ENTRIES])  # plain and hinted selection
@pytest.mark.parametrize("ties", ["low", "high"])
def test_nan_scores_rank_below_every_other_and_exactly_k_are_kept(n, ties):
    """A NaN score (a diverged one) compares false with any threshold, so it was neither above
    nor tied with one: the mask kept fewer than k (and the hinted path kept what the hint's
    history gave). NaNs now rank below every magnitude: exactly k kept, the largest finite
    first, NaNs only when too few are finite, by the tie rule; the full sort's mask."""
    layer = MaskedWeight((n,), fan_in=n, sparsity=0.7, ties=ties)
    k, generator = layer.k, torch.Generator().manual_seed(n)
    for nans in (0, 1, 17, n - k - 1, n - k + 5):  # the last: some NaNs must be kept
        with torch.no_grad():
            layer.scores.add_(1e-3 * torch.randn(n, generator=generator))  # drift, as in training
            layer.scores[torch.randperm(n, generator=generator)[:nans]] = math.nan
        nan = layer.scores.detach().isnan()
        mask = layer.mask()
        assert int(mask.sum()) == k
        assert torch.equal(mask, sorted_mask(layer.scores.detach().abs().nan_to_num(-1.0), k,
                                             ties))
        assert int((mask & nan).sum()) == max(0, k - int((~nan).sum()))


@pytest.mark.parametrize("ties", ["low", "high"])
def test_a_nan_score_ranks_below_a_zero_score(ties):
    """Below every magnitude means below 0 too (the score of an entry set_mask pruned, a loaded
    ticket's): a NaN ranked as 0 would tie with it and, first by the tie rule, take its place."""
    m = MaskedWeight((4,), fan_in=4, sparsity=0.5, ties=ties)  # k = 2
    with torch.no_grad():
        m.scores.copy_(torch.tensor([math.nan, 0.0, 1.0, math.nan]))
    assert m.mask().tolist() == [False, True, True, False]


def test_mask_digest_tells_masks_of_the_same_index_sum_apart():
    """Keeping entries 0 and 3 is not keeping 1 and 2 (the digest summed the kept indices), nor
    the same bits in another shape; the same masks give the same digest."""
    from lotterynet.module import mask_digest

    def digest(kept, shape=(1, 4)):
        layer = ln.SubnetLinear(shape[1], shape[0], bias=False, structure="dense", sparsity=0.5)
        layer.structure.weight.set_mask(torch.tensor(kept, dtype=torch.bool).view(shape))
        return mask_digest(layer)

    assert digest([1, 0, 0, 1]) == digest([1, 0, 0, 1])
    assert digest([1, 0, 0, 1]) != digest([0, 1, 1, 0])
    assert digest([1, 0, 0, 1]) != digest([1, 0, 0, 1], shape=(2, 2))


def test_set_rules_keeps_a_k_set_other_than_by_the_sparsity():
    """A ``k`` from global_topk or a state dict (a ticket's too) survives ``set_rules``, which
    recomputed it from the sparsity the tensor was built with, silently undoing the global
    ranking (and bringing back pruned entries of a loaded ticket, tied at score 0); a ``k``
    from that sparsity is still recounted under the new kept rule."""
    model = torch.nn.Sequential(*(ln.SubnetLinear(10, 10, seed=s, sparsity=0.5)
                                  for s in (0, 1)))
    with torch.no_grad():
        model[1].structure.weight.scores.mul_(1e-3)
    with pytest.warns(UserWarning, match="keeps no weight of 1.structure.weight"):
        ks = ln.global_topk(model, sparsity=0.6)
    assert ks == {"0.structure.weight": 80, "1.structure.weight": 0}
    for layer in model:
        layer.structure.weight.set_rules(kept="floor", ties="high")
    assert [layer.structure.weight.k for layer in model] == [80, 0]
    loaded = ln.SubnetLinear(10, 10, seed=0, sparsity=0.5)
    loaded.load_state_dict(model[0].state_dict())
    loaded.structure.weight.set_rules(ties="high")
    assert loaded.structure.weight.k == 80
    pair = torch.nn.Sequential(*(ln.SubnetLinear(5, 2, seed=s, sparsity=0.75) for s in (0, 1)))
    with torch.no_grad():  # two large scores in each: a global 4 of 20 keeps 2 and 2
        for layer, top in zip(pair, (10.0, 8.0)):
            layer.structure.weight.scores.fill_(0.1).view(-1)[:2] = top
    assert ln.global_topk(pair, sparsity=0.8) == {"0.structure.weight": 2,  # (what 0.75 keeps)
                                                  "1.structure.weight": 2}
    loaded = torch.nn.Sequential(*(ln.SubnetLinear(5, 2, seed=s, sparsity=0.75) for s in (0, 1)))
    loaded.load_state_dict(pair.state_dict())
    for layer in (*pair, *loaded):  # a ranking's k that happens to be the sparsity's is the
        layer.structure.weight.set_rules(kept="floor")  # ranking's, loaded or not
    assert [layer.structure.weight.k for layer in (*pair, *loaded)] == [2, 2, 2, 2]
    odd = ln.SubnetLinear(5, 2, seed=0, sparsity=0.76)  # 10 entries: round(2.4) = 2 kept
    odd.structure.weight.set_rules(kept="floor")
    assert odd.structure.weight.k == 3  # 10 - int(7.6)
