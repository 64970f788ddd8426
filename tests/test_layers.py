import io
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lotterynet as ln
from lotterynet.models import build_model
from lotterynet.module import layer_densities

STRUCTS = [dict(structure="dense"), dict(structure="subsetsum", activation="relu"),
           dict(structure="subsetsum", activation="identity", shared=False)]


def make_model(seed=0, **kw):
    return nn.Sequential(
        ln.SubnetConv2d(1, 4, 3, padding=1, seed=seed, **kw), nn.ReLU(),
        ln.SubnetConv2d(4, 8, 3, 2, 1, 1, 2, seed=seed + 1, **kw), nn.ReLU(), nn.Flatten(),
        ln.SubnetLinear(8 * 4 * 4, 10, True, seed=seed + 2, **kw))


@pytest.mark.parametrize("kw", STRUCTS)
def test_drop_in_shapes(kw):
    x = torch.randn(3, 7)
    assert ln.SubnetLinear(7, 5, **kw)(x).shape == nn.Linear(7, 5)(x).shape
    x = torch.randn(2, 6, 11, 13)
    for args in [(6, 4, 3), (6, 4, (3, 5), 2, 1, 2), (6, 3, 1, 1, 0, 1, 3)]:
        assert ln.SubnetConv2d(*args, **kw)(x).shape == nn.Conv2d(*args)(x).shape
    x = torch.randn(2, 6, 20)
    assert ln.SubnetConv1d(6, 3, 5, 2, **kw)(x).shape == nn.Conv1d(6, 3, 5, 2)(x).shape
    assert ln.SubnetLinear(7, 5, **kw)(torch.randn(2, 3, 7)).shape == (2, 3, 5)


@pytest.mark.parametrize("kw", STRUCTS)
def test_optimizer_changes_scores_only(kw):
    model = make_model(**kw)
    frozen = {n: b.clone() for n, b in model.named_parameters() if not b.requires_grad}
    scores = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert frozen and scores and all(n.endswith("scores") for n in scores)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and not torch.equal(p, scores[n]), n
        else:
            assert p.grad is None and torch.equal(p, frozen[n]), n


@pytest.mark.parametrize("kw", STRUCTS)
def test_seed_reproduces_weights_masks_outputs(kw):
    a, b, c = make_model(0, **kw), make_model(0, **kw), make_model(10, **kw)
    x = torch.randn(4, 1, 8, 8)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                 b.state_dict().values()))
    assert torch.equal(a(x), b(x))
    assert not torch.equal(a(x), c(x))


@pytest.mark.parametrize("arch", ["fc4", "lenet5"])
def test_the_layers_of_different_model_seeds_draw_unrelated_numbers(arch):
    """No frozen tensor or score of a seed's model repeats, or starts with, the draws of
    another tensor of that model or of the next seed's (layer i drew from seed + i: FC4's
    second hidden layer of seed 0 was the first of seed 1, so seeds were not independent)."""
    drawn = [(seed, name, t.flatten()) for seed in (0, 1)
             for name, t in build_model(arch, sparsity=0.5, seed=seed).state_dict().items()
             if t.is_floating_point() and t.numel() > 1000]
    for i, (seed_a, name_a, a) in enumerate(drawn):
        for seed_b, name_b, b in drawn[i + 1:]:
            n = min(a.numel(), b.numel())
            r = torch.corrcoef(torch.stack([a[:n], b[:n]]))[0, 1].abs().item()
            assert r < 0.2, (seed_a, name_a, seed_b, name_b, r)


def test_unseeded_layers_follow_global_rng():
    torch.manual_seed(5)
    a = ln.SubnetLinear(10, 10)
    torch.manual_seed(5)
    b = ln.SubnetLinear(10, 10)
    assert torch.equal(a.structure.weight.weight, b.structure.weight.weight)


@pytest.mark.parametrize("kw", STRUCTS)
def test_state_dict_round_trip(kw):
    model = make_model(0, **kw)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    opt.step()  # trained scores, so a fresh model differs
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh = make_model(99, **kw)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(fresh(x), model(x))
    assert all(torch.equal(m1, m2) for l1, l2 in zip(model, fresh) if hasattr(l1, "mask")
               for m1, m2 in zip(l1.mask().values(), l2.mask().values()))


def test_count_params_dense_by_hand():
    model = nn.Sequential(ln.SubnetLinear(784, 500, True, sparsity=0.9),
                          ln.SubnetConv2d(6, 16, 5, groups=2, sparsity=0.5))
    maskable = 784 * 500 + 16 * 3 * 25
    assert ln.count_params(model) == {
        "maskable": maskable, "kept": round(0.1 * 784 * 500) + round(0.5 * 16 * 3 * 25),
        "frozen": 500, "trainable": maskable}


def test_count_params_subsetsum_by_hand():
    n, d_in, d_out = 5, 784, 500
    shared = ln.SubnetLinear(d_in, d_out, structure="subsetsum", pairs=n, sparsity=0.75)
    counts = ln.count_params(shared)
    assert counts["maskable"] == n * d_in * (1 + d_out) == 1_963_920
    assert counts["kept"] == round(0.25 * n * d_in) + round(0.25 * n * d_in * d_out)
    unshared = ln.SubnetLinear(d_in, d_out, structure="subsetsum", pairs=n, shared=False)
    assert ln.count_params(unshared)["maskable"] == 2 * n * d_in * d_out
    conv = ln.SubnetConv2d(6, 16, 5, groups=2, structure="subsetsum", pairs=3)
    assert ln.count_params(conv)["maskable"] == 6 * 3 + 16 * 3 * 3 * 25
    assert ln.count_params(nn.Sequential(nn.Linear(3, 2)))["trainable"] == 8


def test_sparsity_property_updates_every_tensor():
    layer = ln.SubnetLinear(20, 10, structure="subsetsum", pairs=2, sparsity=0.5)
    layer.sparsity = 0.9
    assert {m.k for m in ln.masked_weights(layer)} == {round(0.1 * 40), round(0.1 * 400)}
    assert layer.sparsity == pytest.approx(1 - 44 / 440)


def test_a_layers_density_is_its_kept_fraction_as_the_nearest_float():
    """A layer's density (``results.json``'s ``layer_density``, W&B's ``density/<layer>``) was
    1 − its sparsity: 0.09999999999999998 for a tenth kept. It is kept / maskable itself."""
    model = nn.Sequential(ln.SubnetLinear(20, 10, sparsity=0.9), nn.ReLU(),
                          ln.SubnetLinear(10, 10, sparsity=0.7))
    assert [layer.density for layer in (model[0], model[2])] == [20 / 200, 30 / 100] == [0.1, 0.3]
    assert layer_densities(model) == {"fc1": 0.1, "fc2": 0.3}
    assert model[0].sparsity == 1 - 0.1


def test_a_sparsity_one_tensor_refuses_changes_no_tensor():
    """Malach's v (4 entries) cannot keep 10 % of its weights; u (80) could: the refusal names
    v's bound, and u keeps its k (it was changed before v refused)."""
    layer = ln.SubnetLinear(20, 1, structure="malach", hidden=4, sparsity=0.5)
    with pytest.raises(ValueError, match="sparsity 0.9 keeps no weight of a tensor with 4 "):
        layer.sparsity = 0.9
    assert [m.k for m in ln.masked_weights(layer)] == [40, 2]


@pytest.mark.parametrize("kwargs,match", [
    (dict(structure="wide"),
     r"unknown structure 'wide'; valid choices: dacunha, dense, fixedsize, malach, orseau, "
     r"subsetsum"),
    (dict(structure="subsetsum", activation="tanh"),
     r"unknown activation 'tanh'; valid choices: relu, identity"),
    (dict(structure="subsetsum", pairs=0), r"pairs must be a positive integer, got 0"),
    (dict(structure="subsetsum", pairs=2.5), r"pairs must be a positive integer, got 2\.5"),
    (dict(structure="fixedsize", shared="False"), r"shared must be True or False, got 'False'"),
    (dict(init="glorot"), r"unknown weight distribution \(init\) 'glorot'"),
    (dict(init="hyperbolic", init_kwargs={"alpa": 0.1}),
     r"init 'hyperbolic' takes no option 'alpa' \(init_kwargs\); its options: alpha, beta"),
    (dict(init="uniform", init_kwargs={"std": 1}),
     r"init 'uniform' takes no option 'std' \(init_kwargs\); its options: none"),
    (dict(sparsity=1.0), r"must be in \[0, 1\), got 1\.0"),
    (dict(dtype=torch.complex64), r"dtype must be a floating-point torch\.dtype \(torch\.float16, "
                                  r".*got torch\.complex64"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ln.SubnetLinear(8, 8, **kwargs)
    with pytest.raises(ValueError, match=match):
        ln.SubnetConv2d(4, 4, 3, **kwargs)


def test_bad_groups():
    with pytest.raises(ValueError, match="groups=3 must divide in_channels=4"):
        ln.SubnetConv2d(4, 6, 3, groups=3)


WEIGHTED = STRUCTS + [dict(structure="fixedsize", activation="relu", pairs=2, sparsity=0.5),
                      dict(structure="subsetsum", activation="identity")]


@pytest.mark.parametrize("kw", WEIGHTED)
def test_weight_is_what_the_forward_uses(kw):
    """``layer.weight`` in a plain F.linear / F.conv reproduces the layer (on [relu(x),
    relu(-x)] for the collapsed ReLU subset sum), in float64."""
    from lotterynet.plain import split_signs

    cases = [(ln.SubnetLinear(7, 5, True, seed=0, **kw), torch.randn(3, 7), -1,
              lambda x, w, layer: nn.functional.linear(x, w, layer.bias)),
             (ln.SubnetConv2d(4, 6, 3, 2, 1, 1, 2, True, seed=1, **kw), torch.randn(2, 4, 7, 7),
              1, lambda x, w, layer: nn.functional.conv2d(x, w, layer.bias, 2, 1, 1, 2)),
             (ln.SubnetConv1d(4, 2, 3, seed=2, **kw), torch.randn(2, 4, 9), 1,
              lambda x, w, layer: nn.functional.conv1d(x, w))]
    for layer, x, dim, plain in cases:
        layer.double()
        x = x.double()
        weight = layer.weight
        doubled = weight.shape[1] != layer.structure.target.in_per_group
        assert doubled == (kw.get("activation") == "relu" and kw["structure"] != "dense")
        inputs = split_signs(x, getattr(layer, "groups", 1), dim) if doubled else x
        torch.testing.assert_close(plain(inputs, weight, layer), layer(x), rtol=1e-12,
                                   atol=1e-12)
        for value in (weight.detach(), nn.Parameter(weight.detach())):  # (re-tying weights)
            with pytest.raises(AttributeError, match=r"\.weight is read-only"):
                layer.weight = value


def test_a_relu_subset_sum_weight_used_as_the_targets_names_its_layer():
    """A ReLU subset-sum layer's weight is [P, 2N] over [relu(x), relu(-x)]: used as the
    [out, in] weight of the layer it replaces it failed deep in torch ("mat1 and mat2 shapes
    cannot be multiplied"), naming no layer. That failure names the layer and what to do; its
    shape and its use over split_signs(x) are as before, the results plain tensors."""
    from lotterynet.plain import split_signs

    layer, x = ln.SubnetLinear(6, 4, structure="subsetsum", pairs=2, seed=0), torch.randn(3, 6)
    weight = layer.weight
    assert weight.shape == (4, 12) and type(weight * 1) is torch.Tensor
    torch.testing.assert_close(nn.functional.linear(split_signs(x, 1, -1), weight), layer(x))
    with pytest.raises(RuntimeError, match=r"^SubnetLinear\(in_features=6, out_features=4, .*\)"
                                           r"\.weight with activation='relu' is \[P, 2N\] over "
                                           r"\[relu\(x\), relu\(-x\)\], not \[out, in\], so "
                                           r"linear failed \(mat1 and mat2 shapes .*\): convert "
                                           r"this layer with activation='identity', in a call of "
                                           r"its own$"):
        nn.functional.linear(x, weight)
    # (review) a fault of another kind over [relu(x), relu(-x)] is torch's, as is its type
    with pytest.raises(RuntimeError, match=r"^expected m1 and m2 to have the same dtype"):
        nn.functional.linear(split_signs(x, 1, -1).double(), weight)
    conv = ln.SubnetConv2d(3, 4, 3, structure="subsetsum", pairs=2, seed=0)
    with pytest.raises(RuntimeError, match=r"^SubnetConv2d\(3, 4, .*\)\.weight with activation="
                                           r"'relu' is \[P, 2N\] .*, so conv2d failed"):
        nn.functional.conv2d(torch.randn(1, 3, 5, 5), conv.weight)


def test_two_stage_layers_say_why_they_have_no_weight():
    layer = ln.SubnetLinear(4, 3, structure="malach")
    with pytest.raises(AttributeError, match="'malach' has no single weight"):
        _ = layer.weight
    assert not hasattr(layer, "weight") and layer.bias is None  # other attributes unaffected


@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
@pytest.mark.parametrize("subnet, plain", [(ln.SubnetConv2d, nn.Conv2d),
                                           (ln.SubnetConv1d, nn.Conv1d)])
def test_attributes_and_repr_match_the_replaced_layer(subnet, plain, padding_mode):
    """A convolution's geometry as nn.Conv*d's; padding_mode, transposed and output_padding
    were missing (QA: code that reads a convolution's geometry), and a padding_mode other
    than 'zeros' was refused."""
    conv = subnet(6, 4, 3, 2, 1, 2, padding_mode=padding_mode, sparsity=0.75, seed=0)
    plain = plain(6, 4, 3, 2, 1, 2, padding_mode=padding_mode)
    for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                 "groups", "padding_mode", "transposed", "output_padding"):
        assert getattr(conv, name) == getattr(plain, name), name
    assert conv.weight.shape == plain.weight.shape
    assert conv.extra_repr() == (f"{plain.extra_repr()}, bias=False, structure='dense', "
                                 f"density=0.25")
    linear = ln.SubnetLinear(8, 3, sparsity=0.5, structure="subsetsum", seed=0)
    assert (linear.in_features, linear.out_features) == (8, 3)
    assert "structure='subsetsum', density=0.5" in repr(linear)



@pytest.mark.parametrize("make", [lambda bias: ln.SubnetLinear(4, 3, bias, seed=0),
                                  lambda bias: ln.SubnetConv2d(2, 3, 3, bias=bias, seed=0)],
                         ids=["linear", "conv"])
def test_the_repr_names_the_bias_mode(make):
    """A frozen bias and a trainable one both printed ``bias=True`` (nn.Linear's, for any
    bias): the repr names the bias as ``bias=`` takes it; a trainable one frozen since prints
    'frozen', a frozen one thawed since (refused in training) still 'frozen'."""
    for bias, shown in ((True, "'frozen'"), ("frozen", "'frozen'"),
                        ("trainable", "'trainable'"), (False, "False"), ("none", "False")):
        assert f", bias={shown}, structure='dense'," in make(bias).extra_repr(), bias
    thawed, frozen = make("frozen"), make("trainable")
    thawed.bias.requires_grad_()
    frozen.bias.requires_grad_(False)
    assert ", bias='frozen', " in repr(thawed) and ", bias='frozen', " in repr(frozen)


@pytest.mark.parametrize("layer, fan_in", [
    (lambda: ln.SubnetLinear(784, 4000, bias=True, seed=0), 784),
    (lambda: ln.SubnetConv2d(8, 4000, 3, bias=True, seed=0), 72)])
def test_frozen_bias_is_drawn_as_torch_layers_draw_theirs(layer, fan_in):
    """U(-1/√fan_in, 1/√fan_in), as nn.Linear and nn.Conv2d initialise a bias; frozen."""
    bias, bound = layer().bias, fan_in ** -0.5
    assert not bias.requires_grad and bias.abs().max() <= bound
    assert bias.abs().max() > 0.99 * bound and abs(float(bias.mean())) < 0.05 * bound
    assert float(bias.std()) == pytest.approx(bound / 3 ** 0.5, rel=0.05)  # uniform's std


@pytest.mark.parametrize("build, named", [
    (lambda: ln.SubnetLinear(0, 3), "in_features"),
    (lambda: ln.SubnetLinear(4, True), "out_features"),
    (lambda: ln.SubnetConv2d(1, 2, 0), "kernel_size"),
    (lambda: ln.SubnetConv2d(2, 2, 3, groups=0), "groups"),
    (lambda: ln.SubnetLinear(4, 3, seed=1.5), "seed"),
    (lambda: ln.kept_count(-10, 0.5), "numel .*non-negative integer; got -10"),
    (lambda: ln.kept_count(10.5, 0.5), "numel .*non-negative integer; got 10.5"),
    (lambda: ln.SubnetMultiheadAttention(16, 4, dropout=2.0), r"dropout .*\[0, 1\]; got 2.0"),
    (lambda: ln.SubnetMultiheadAttention(16, 4, dropout=float("nan")), "dropout .*got nan"),
    (lambda: ln.SubnetMultiheadAttention(16, 4, dtype=torch.complex64),
     "dtype must be a floating-point .*got torch.complex64"),
    (lambda: ln.TensorDataModule(batch_size=0), "batch_size"),
    (lambda: ln.TensorDataModule(limit_train=-5), "limit_train"),
    (lambda: ln.TensorDataModule(val_size=1.5), "val_size"),
    (lambda: ln.SubnetLinear(4, 3, score_init="wide"), "score_init 'wide'"),
    (lambda: ln.stack_models("fc2", "0.5"), "sparsities must be a sequence"),  # not 3 members
    (lambda: ln.export(ln.SubnetLinear(4, 3), sparse="no"), "sparse must be True or False"),
    (lambda: ln.convert(nn.Linear(4, 3), sparsity=0.5, include=5), "include must be glob"),
])
def test_bad_sizes_are_refused_naming_the_argument(build, named):
    """A zero, negative, boolean or fractional size is refused where it is given, not deep
    inside a tensor op (ZeroDivisionError, 'negative dimension') or silently (a limit of -5
    dropping the last 5 examples)."""
    with pytest.raises((ValueError, TypeError), match=named):
        build()


ALL_STRUCTURES = STRUCTS + [dict(structure="malach", hidden=8), dict(structure="orseau"),
                            dict(structure="dacunha", pairs=2),
                            dict(structure="fixedsize", pairs=2)]


@pytest.mark.parametrize("kw", ALL_STRUCTURES)
def test_unbatched_conv_input_as_torch_takes_it(kw):
    """(C, H, W) / (C, L) without a batch dimension, as nn.Conv2d / nn.Conv1d accept it: the
    batched result's one row, for every structure (ReLU and two-stage ones work along the
    channel dimension)."""
    for layer, x in ((ln.SubnetConv2d(4, 6, 3, padding=1, seed=0, **kw), torch.randn(4, 7, 7)),
                     (ln.SubnetConv1d(4, 6, 3, seed=0, **kw), torch.randn(4, 9))):
        expected = layer(x.unsqueeze(0))[0]
        assert torch.equal(layer(x), expected)


@pytest.mark.parametrize("kw", ALL_STRUCTURES)
def test_a_convolution_padded_other_than_with_zeros_pads_its_input_once(kw):
    """padding_mode='reflect', 'circular', 'replicate' (refused before) pad the input as
    nn.Conv*d does, once, before the first stage (a two-stage structure's hidden map pads
    nothing): the layer is the same layer unpadded on the padded input (the same weights, from
    its seed), for every structure, and 'same' padding pads asymmetrically as torch's does."""
    draws = torch.Generator().manual_seed(0)  # (not torch's: later tests' draws unchanged)
    x, line = torch.randn(2, 4, 5, 5, generator=draws), torch.randn(2, 4, 7, generator=draws)
    for mode in ("reflect", "circular", "replicate"):
        padded = ln.SubnetConv2d(4, 6, 3, padding=1, padding_mode=mode, seed=0, **kw)
        unpadded = ln.SubnetConv2d(4, 6, 3, seed=0, **kw)
        assert torch.equal(padded(x), unpadded(F.pad(x, [1, 1, 1, 1], mode=mode)))
        same = ln.SubnetConv1d(4, 6, 4, padding="same", padding_mode=mode, seed=0, **kw)
        assert torch.equal(same(line), ln.SubnetConv1d(4, 6, 4, seed=0, **kw)(
            F.pad(line, [1, 2], mode=mode)))


@pytest.mark.parametrize("kw", ALL_STRUCTURES)
def test_channels_last_as_torch_convs_take_it(kw):
    """``model.to(memory_format=torch.channels_last)`` (timm's --channels-last) works for every
    structure and changes no number (subset sum's 5-D ``v`` failed in torch); 4-D weights
    take the format, as nn.Conv2d's does."""
    layer = ln.SubnetConv2d(4, 6, 3, padding=1, seed=0, **kw)
    x = torch.randn(2, 4, 6, 6)
    expected = layer(x)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    layer.to(memory_format=torch.channels_last)
    got = layer(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    got.sum().backward()
    assert all(torch.equal(v, state[k]) for k, v in layer.state_dict().items())
    assert all(p.is_contiguous(memory_format=torch.channels_last)
               for p in layer.parameters() if p.dim() == 4)


@pytest.mark.parametrize("in_channels", [3, 1])
def test_a_channels_last_layers_mask_is_laid_out_as_its_weight(in_channels):
    """A channels_last SubnetConv2d's mask is channels_last like its scores and weight (it was
    contiguous: ``weight * mask`` read two layouts, ~2x slower), and the layer computes bit for
    bit what nn.Conv2d in that format computes with the masked weight, in the same output
    layout. (A 1-in-channel kernel's strides are one memory order in both formats: torch gives
    ``|scores|`` and ``weight * mask`` the contiguous strides whatever the operands have.)"""
    layer = ln.SubnetConv2d(in_channels, 6, 3, padding=1, seed=0).to(
        memory_format=torch.channels_last)
    frozen = layer.structure.weight
    for dtype in (torch.bool, torch.float32):
        assert frozen.mask(dtype).stride() == layer.weight.stride()
    assert layer.mask()["weight"].stride() == layer.weight.stride()
    plain = nn.Conv2d(in_channels, 6, 3, padding=1, bias=False)
    with torch.no_grad():
        plain.weight.copy_(layer.weight)
    plain.to(memory_format=torch.channels_last)
    x = torch.randn(2, in_channels, 7, 7).to(memory_format=torch.channels_last)
    with torch.no_grad():
        got, expected = layer(x), plain(x)
    assert torch.equal(got, expected) and got.stride() == expected.stride()


def test_a_mask_laid_out_as_a_1x1_channels_last_weight_is_not_copied():
    """A 1x1 kernel's channels_last strides differ from the contiguous ones only in its size-1
    dimensions, one memory order: laid_out_as returns the mask itself (it copied it, on every
    ranking), and copies where the order differs."""
    from lotterynet.topk import laid_out_as

    mask = torch.arange(64 * 32 * 9.0)
    for shape, copied in (((64, 32, 1, 1), False), ((64, 32, 3, 3), True)):
        like = torch.empty(shape).to(memory_format=torch.channels_last)
        laid = laid_out_as(mask[:like.numel()], like)
        assert (laid.data_ptr() != mask.data_ptr()) == copied
        assert torch.equal(laid, mask[:like.numel()].view(shape))


@pytest.mark.parametrize("kw", ALL_STRUCTURES)
def test_autocast_gives_what_torch_layers_give(kw):
    """Under CPU bf16 autocast every structure with a bias returns what nn.Linear / nn.Conv2d
    return there (bf16), close to its float32 output; the two-stage structures added their
    bias in float32 and returned float32."""
    for layer, plain, x in (
            (ln.SubnetLinear(12, 6, True, seed=0, **kw), nn.Linear(12, 6), torch.randn(3, 12)),
            (ln.SubnetConv2d(4, 6, 3, groups=2, bias=True, seed=0, **kw),
             nn.Conv2d(4, 6, 3, groups=2), torch.randn(2, 4, 6, 6))):
        expected = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, y_plain = layer(x), plain(x)
        assert y.dtype == y_plain.dtype == torch.bfloat16
        torch.testing.assert_close(y.float(), expected, rtol=0.05,
                                   atol=0.02 * expected.abs().max().item())


@pytest.mark.parametrize("args, kwargs, match", [
    ((4, 4, 3), dict(padding="foo"), "Invalid padding string 'foo'"),
    ((4, 4, 3), dict(stride=2, padding="same"), "padding='same' is not supported for strided"),
    ((4, 4, 3), dict(stride=0), "stride must be a positive integer or a tuple of 2, got 0"),
    ((4, 4, (3, 0)), dict(), r"kernel_size must be a positive integer .*got \(3, 0\)"),
    ((4, 4, 3), dict(dilation=(1, 0)), r"dilation must be .*got \(1, 0\)"),
    ((4, 4, (3, 3, 3)), dict(), r"kernel_size .*or a tuple of 2, got \(3, 3, 3\)"),
    ((4, 4, 3), dict(stride=(1, 1, 1)), r"stride .*or a tuple of 2, got \(1, 1, 1\)"),
    ((4, 4, 3), dict(padding=-1), "padding must be a non-negative integer .*got -1"),
    ((4, 4, 3), dict(padding=1.5), "padding must be a non-negative integer .*got 1.5"),
    ((4, 4, 3), dict(padding_mode="mirror"), "padding_mode must be one of .*got "
                                              "padding_mode='mirror'"),
])
def test_conv_arguments_are_checked_at_construction(args, kwargs, match):
    """What nn.Conv2d refuses when built is refused when built (not at the first forward)."""
    with pytest.raises(ValueError, match=match):
        ln.SubnetConv2d(*args, **kwargs)


def test_device_and_dtype_are_taken_as_torch_layers_take_them():
    """``nn.Linear(in, out, bias, device, dtype)`` / ``nn.Conv2d(..., padding_mode, device,
    dtype)``, positionally or by name (code that passes them, as timm's layers do, fails with a
    TypeError otherwise): the same numbers as building and then moving the layer."""
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    pairs = [(ln.SubnetLinear(5, 3, True, "cpu", torch.float64, sparsity=0.5, seed=1),
              ln.SubnetLinear(5, 3, True, sparsity=0.5, seed=1).double()),
             (ln.SubnetConv2d(4, 6, 3, 1, 1, 1, 2, True, "zeros", "cpu", torch.float64,
                              structure="subsetsum", sparsity=0.5, seed=2),
              ln.SubnetConv2d(4, 6, 3, 1, 1, 1, 2, True, structure="subsetsum", sparsity=0.5,
                              seed=2).double())]
    for given, moved in pairs:
        assert all(p.dtype == torch.float64 for p in given.parameters())
        assert torch.equal(given(x), moved(x))
    half = ln.SubnetConv1d(4, 2, 3, dtype=torch.bfloat16, device="cpu", seed=0)
    assert half(torch.randn(1, 4, 7, dtype=torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize("kw", ALL_STRUCTURES)
def test_a_layer_built_under_inference_mode_runs_in_and_out_of_it(kw):
    """As nn.Conv2d does (a model loaded for serving inside ``torch.inference_mode()``)."""
    x = torch.randn(2, 4, 6, 6)
    expected = ln.SubnetConv2d(4, 6, 3, seed=0, **kw)(x)
    with torch.inference_mode():
        layer = ln.SubnetConv2d(4, 6, 3, seed=0, **kw)
        assert torch.equal(layer(x), expected)
    assert torch.equal(layer(x), expected)


@pytest.mark.parametrize("kw", ALL_STRUCTURES)
def test_torch_func_per_example_gradients_sum_to_the_batch_gradient(kw):
    """``torch.func.vmap(torch.func.grad(...))`` over the examples (per-example gradients, as
    for nn.Conv2d), and ``vmap`` of the forward: what the batched autograd pass gives."""
    layer = ln.SubnetConv2d(2, 4, 3, bias=True, seed=0, **kw)
    # (its own draw: from torch's global generator the input depended on the tests run before,
    # and one order gave an element 2.4e-5 off)
    x = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    layer(x).square().sum().backward()
    params = {name: p.detach() for name, p in layer.named_parameters()}

    def loss(params, example):
        return torch.func.functional_call(layer, params, (example[None],)).square().sum()

    per_example = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, x)
    trained = {name: p.grad for name, p in layer.named_parameters() if p.requires_grad}
    assert trained and all(per_example[name].shape == (3, *g.shape) for name, g in trained.items())
    for name, grad in trained.items():
        torch.testing.assert_close(per_example[name].sum(0), grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.func.vmap(layer)(x[:, None]), layer(x)[:, None])


@pytest.mark.parametrize("kw", ALL_STRUCTURES)
def test_torch_func_model_ensembling_over_stacked_scores(kw):
    """The ``torch.func`` ensembling recipe (``stack_module_state``, ``vmap`` of
    ``functional_call`` over the stacked parameters): each member's output and score gradients,
    to float rounding (batched products sum in another order; a wrong mask would be far off).
    The mask selection raised: no batching rule for its ``out=`` ops. One conv
    layer small enough for plain selection, one linear layer large enough for the hinted one;
    ``k`` is the base module's, as for any non-parameter state under ``functional_call``."""
    import copy

    members = [nn.Sequential(ln.SubnetConv2d(2, 4, 3, seed=0, **kw), nn.Flatten(),
                             ln.SubnetLinear(4 * 3 * 3, 2500, seed=1, **kw)) for _ in range(3)]
    for i, member in enumerate(members):
        for weight in ln.masked_weights(member):
            torch.nn.init.uniform_(weight.scores, -1, 1, generator=torch.Generator().manual_seed(i))
    params, buffers = torch.func.stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")
    x = torch.randn(4, 2, 5, 5, generator=torch.Generator().manual_seed(0))

    def loss(params, buffers):
        return torch.func.functional_call(base, (params, buffers), (x,)).square().sum()

    outputs = torch.func.vmap(lambda p, b: torch.func.functional_call(base, (p, b), (x,)))(
        params, buffers)
    grads = torch.func.vmap(torch.func.grad(loss))(params, buffers)
    for i, member in enumerate(members):
        torch.testing.assert_close(outputs[i], member(x), rtol=1e-4, atol=1e-4)
        member(x).square().sum().backward()
        for name, p in member.named_parameters():
            if p.requires_grad:
                # orseau's hyperbolic weights give gradients up to ~1e8 beside ones near 0
                # that are sums of large terms: float32 rounding is relative to the largest
                torch.testing.assert_close(grads[name][i], p.grad, rtol=1e-3,
                                           atol=1e-6 * float(p.grad.abs().max()))


def test_torch_jit_trace_is_refused_in_one_line_and_the_export_traces():
    """torch.jit.trace of a subnet model failed its check with a diff of two graphs over
    hundreds of lines ("Graphs differed across invocations": the mask selection's host reads
    and cached mask recorded as constants). Refused in one line, as torch.jit.script is, for a
    layer and an attention; the exported model traces and computes what the model does (the
    layer's: torch's own nn.MultiheadAttention fails the trace's check)."""
    class Attends(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = ln.SubnetMultiheadAttention(4, 2, batch_first=True, seed=0)

        def forward(self, x):
            return self.attention(x, x, x)[0]
    x, linear = torch.randn(2, 3, 4), nn.Sequential(ln.SubnetLinear(4, 4, seed=0), nn.ReLU())
    for model, name in ((linear, "SubnetLinear"), (Attends(), "SubnetMultiheadAttention")):
        with pytest.raises(TypeError, match=rf"^torch\.jit\.trace: {name} is a subnet layer, "
                                            r".* torch\.jit\.trace\(lotterynet\.export\(model\)"):
            torch.jit.trace(model.eval(), x)
    traced = torch.jit.trace(ln.export(linear), x)
    assert torch.allclose(traced(x), linear(x))


@pytest.fixture
def float64_default():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("init", ["kaiming_normal", "signed_constant", "hyperbolic"])
@pytest.mark.parametrize("structure", ["dense", "subsetsum", "orseau"])
def test_a_seed_draws_the_same_numbers_under_any_default_dtype(structure, init):
    """Under ``torch.set_default_dtype(torch.float64)`` a layer is float64, as nn.Linear is,
    holding its seed's float32 draws: the layer built in float32 and then ``.double()``."""
    built = ln.SubnetConv2d(3, 4, 3, bias=True, structure=structure, init=init, seed=5).double()
    torch.set_default_dtype(torch.float64)
    try:
        under_float64 = ln.SubnetConv2d(3, 4, 3, bias=True, structure=structure, init=init, seed=5)
    finally:
        torch.set_default_dtype(torch.float32)
    assert built.state_dict().keys() == under_float64.state_dict().keys()
    for name, value in built.state_dict().items():
        assert torch.equal(value, under_float64.state_dict()[name]), name
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    assert torch.equal(built(x), under_float64(x))


def test_build_model_under_a_float64_default_is_the_seeds_model_in_float64(float64_default):
    model = build_model("lenet5", sparsity=0.5, seed=3)
    torch.set_default_dtype(torch.float32)
    expected = build_model("lenet5", sparsity=0.5, seed=3).double()
    assert all(torch.equal(a, b) and a.dtype == torch.float64 for a, b in
               zip(model.state_dict().values(), expected.state_dict().values(), strict=True)
               if a.is_floating_point())


def test_conv_repr_shows_what_nn_conv_shows():
    for args, kwargs in (((4, 6, 3), dict(dilation=2, padding="same", groups=2)),
                         ((4, 6, (3, 1)), dict(stride=(2, 1), padding=(1, 0)))):
        plain = nn.Conv2d(*args, **kwargs)
        assert repr(ln.SubnetConv2d(*args, **kwargs)).splitlines()[1].strip().startswith(
            plain.extra_repr() + ", bias=False, structure='dense'")


def test_seed_takes_any_integer_type_and_names_a_bad_one():
    import numpy as np

    a, b = ln.SubnetLinear(4, 3, seed=np.int64(3)), ln.SubnetLinear(4, 3, seed=3)
    assert torch.equal(a.structure.weight.weight, b.structure.weight.weight)
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\), got 1844"):
        ln.SubnetLinear(4, 3, seed=2**64)
    # torch reads -1 as 2**64 - 1: both would draw the same weights
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\), got -1"):
        ln.SubnetLinear(4, 3, seed=-1)
    top = ln.SubnetLinear(4, 3, seed=2**64 - 1).structure.weight.weight
    assert not torch.equal(top, ln.SubnetLinear(4, 3, seed=2**64 - 2).structure.weight.weight)
    with pytest.raises(TypeError, match="seed must be an integer, got '3'"):
        ln.SubnetConv2d(4, 3, 1, seed="3")


@pytest.mark.parametrize("call, error, match", [
    (lambda: build_model("fc2", seed=True), TypeError, "seed must be an integer, got True"),
    (lambda: build_model("fc2", seed="1"), TypeError, "seed must be an integer, got '1'"),
    (lambda: build_model("lenet5_dacunha", trained=True, seed=1.0), TypeError,
     "seed must be an integer, got 1.0"),
    (lambda: build_model("fc2", sparsty=0.5), ValueError,
     r"unknown model option 'sparsty'; valid choices: .*\(structure, sparsity, .*, ties\)"),
    (lambda: build_model("fc2", width=0), ValueError, "width must be a positive integer, got 0"),
    (lambda: build_model("lenet5", width=0), ValueError, "width must be a positive integer"),
    (lambda: build_model("conv2", width=0), ValueError, "width must be a positive integer"),
    (lambda: build_model("lenet5_dacunha", trained=True, num_clases=5), ValueError,
     r"unknown model option 'num_clases'; valid choices: the architecture's \(in_channels, "
     r"image_size, num_classes, seed, trained\) and its layers' \(structure, "),
    (lambda: ln.load_ticket("x.ticket", max_bytes="10"), ValueError,
     "max_bytes must be a positive integer"),
    # a structure option that the structure does not read (built without it, unsaid)
    (lambda: build_model("fc2", width=3, pairs=3), ValueError,
     r"^pairs=3 is not an option of structure 'dense' \(it configures dacunha, fixedsize, "),
    (lambda: build_model("lenet5", width=3, structure="malach", subnet_convs=True,
                         activation="identity"), ValueError,
     r"^activation='identity' is not an option of structure 'malach'"),
    (lambda: ln.SubnetConv2d(2, 3, 3, structure="subsetsum", hidden=4), ValueError,
     r"^hidden=4 is not an option of structure 'subsetsum' \(it configures malach, orseau\)"),
    (lambda: ln.SubnetMultiheadAttention(4, 2, shared=False), ValueError,
     r"^shared=False is not an option of structure 'dense' \(it configures fixedsize, "),
])
def test_bad_model_options_are_refused_naming_them(call, error, match):
    """seed=True built seed 1, seed='1' and unknown options failed inside the builder; width=0
    built the paper's widths (it was read as None); lenet5_dacunha, which ignores the layer
    options, ignored any other too (a misspelt num_classes built 10 classes); a structure
    option that the structure does not read built the model without it."""
    with pytest.raises(error, match=match):
        call()


def test_built_models_take_the_kept_and_tie_rules_their_layers_take():
    floor = build_model("fc2", width=3, sparsity=0.55, kept="floor", ties="high")
    # n - int(0.55 n), the reference code's count (round keeps 1058 of the first 2352)
    assert [m.kept for m in ln.masked_weights(floor)] == [1059, 14]
    assert {m.ties for m in ln.masked_weights(floor)} == {"high"}


class AttendsThenMaps(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(4, 2, batch_first=True)
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        return self.linear(self.attention(x, x, x)[0])


def each_parameter_trainable(model):
    for p in model.parameters():
        p.requires_grad = True


@pytest.mark.parametrize("unfreeze", [
    lambda model: model.requires_grad_(True), each_parameter_trainable,
    lambda model: pytest.importorskip("pytorch_lightning").callbacks.BaseFinetuning
    .make_trainable(model),  # (what unfreeze_and_add_param_group calls)
], ids=["requires_grad_", "p.requires_grad", "lightning-unfreeze"])
def test_frozen_tensors_unfrozen_with_the_scores_are_refused_at_a_training_forward(unfreeze):
    """Every parameter of a converted model made trainable (then an optimizer over
    ``model.parameters()`` trained the frozen random weights and biases, and only
    ``save_ticket`` said so) is refused at the first training forward of each subnet layer, in
    one line naming the layer and the weight. Evaluation, ``no_grad`` and the weights trained
    under a fixed mask (scores frozen) still run."""
    model, x = ln.convert(AttendsThenMaps(), sparsity=0.5, seed=0), torch.randn(2, 3, 4)
    unfreeze(model)
    for layer, name in ((model, r"SubnetMultiheadAttention\(embed_dim=4, .*\): its frozen random "
                                r"weight 'q_proj\.structure\.weight\.weight'"),
                        (model.linear, r"SubnetLinear\(in_features=4, out_features=3, "
                                       r"bias='frozen', .*\): its frozen random weight "
                                       r"'structure\.weight\.weight'")):
        with pytest.raises(RuntimeError, match=rf"^{name} requires grad, as do its scores "
                                               r"\(model\.requires_grad_\(True\), .* unfreeze "
                                               r"only the scores"):
            layer(x)
    with warnings.catch_warnings(), pytest.raises(RuntimeError, match=r"^SubnetLinear\(.*\): "
                                                                  r"its frozen random weight"):
        warnings.simplefilter("error")  # (dynamo warned of a graph break at the functorch check)
        torch.compile(model.linear, backend="eager")(x)
    model.eval()(x)
    with torch.no_grad():
        model.train()(x)
    for name, p in model.named_parameters():
        p.requires_grad_(not name.endswith("scores"))
    model(x).sum().backward()
    assert model.linear.structure.weight.weight.grad is not None


def test_a_frozen_bias_unfrozen_with_the_scores_is_refused_at_a_training_forward():
    """A bias ``convert`` froze (``bias="frozen"``, the default) made to require grad later
    (``layer.bias.requires_grad_()``) trained silently, and only ``save_ticket`` refused the
    model, after the training: a ticket regenerates it from the seed. Refused at the first
    training forward, in one line naming ``convert(bias='trainable')``, with which the bias
    trains (the attention's too)."""
    x = torch.randn(2, 3, 4)
    model = ln.convert(AttendsThenMaps(), sparsity=0.5, seed=0)
    for layer, bias, named in ((model.linear, "bias", "bias"),
                               (model, "attention.q_proj.bias", "q_proj.bias")):
        layer.get_parameter(bias).requires_grad_()
        with pytest.raises(RuntimeError, match=rf"^Subnet\w+\(.*\): its frozen random bias "
                                               rf"'{re.escape(named)}' requires grad, as do its "
                                               r"scores, but a ticket .*: make it trainable "
                                               r"where the model is made \(convert\(bias="
                                               r"'trainable'\), or a subnet layer's own bias="
                                               r"'trainable'\) so that the ticket stores it, "
                                               r"or freeze it again"):
            layer(x)
        layer.get_parameter(bias).requires_grad_(False)
    trainable = ln.convert(AttendsThenMaps(), sparsity=0.5, seed=0, bias="trainable")
    trainable(x).sum().backward()
    assert trainable.linear.bias.grad is not None and (
        trainable.attention.q_proj.bias.grad is not None)


@pytest.mark.parametrize("make, shape", [
    (lambda bias: ln.SubnetLinear(4, 3, bias=bias, seed=0), (2, 4)),
    (lambda bias: ln.SubnetConv2d(2, 3, 3, bias=bias, seed=0), (2, 2, 5, 5)),
], ids=["linear", "conv"])
def test_a_layer_made_with_a_trainable_bias_trains_it_and_its_ticket_stores_it(make, shape,
                                                                              tmp_path):
    """A subnet layer made directly (``SubnetLinear(4, 3, bias=True)``) had a frozen random
    bias and no public way to train it: only ``convert(bias="trainable")`` made one. Its
    ``bias`` takes convert's modes: ``"trainable"`` draws the same bias and trains it, and a
    ticket stores it (reloaded bit-exactly); True (``"frozen"``, the default with a bias) is
    unchanged, False is ``"none"``."""
    frozen = make(True)
    assert not frozen.bias.requires_grad and "bias" in frozen.frozen_as_built
    assert make("frozen").frozen_as_built == frozen.frozen_as_built
    assert make(False).bias is None and make("none").bias is None
    with pytest.raises(ValueError, match=r"^unknown bias mode 'train'; valid choices: frozen, "
                                         r"none, trainable$"):
        make("train")
    layer = make("trainable")
    assert layer.bias.requires_grad and "bias" not in layer.frozen_as_built
    assert torch.equal(layer.bias, frozen.bias)  # (the same draw)
    optimizer = torch.optim.SGD([p for p in layer.parameters() if p.requires_grad], lr=0.5)
    layer(torch.randn(shape, generator=torch.Generator().manual_seed(0))).sum().backward()
    optimizer.step()
    assert not torch.equal(layer.bias, frozen.bias)
    ln.save_ticket(layer, tmp_path / "layer.ticket")
    loaded = ln.load_ticket(tmp_path / "layer.ticket", make("trainable"))
    assert torch.equal(loaded.bias, layer.bias) and loaded.bias.requires_grad
    assert all(torch.equal(m, layer.mask()[name]) for name, m in loaded.mask().items())



@pytest.mark.parametrize("make, records", [
    (lambda: ln.SubnetLinear(4, 3, "trainable", seed=0), 1),
    (lambda: ln.SubnetConv2d(2, 3, 3, bias=True, seed=0), 1),
    (lambda: ln.SubnetMultiheadAttention(4, 2, add_bias_kv=True, seed=0), 5),
], ids=["linear", "conv", "attention"])
def test_a_layer_records_its_frozen_tensors_once_as_it_is_made(make, records, monkeypatch):
    """A subnet layer's build recorded its frozen tensors twice (``drawn``'s exit, then
    ``set_bias_mode``): once now, by ``set_bias_mode`` (an attention: itself, and each of its
    four projections as it is made), and what it records is still what is frozen as made."""
    calls = []
    record = ln.layers.record_frozen
    monkeypatch.setattr(ln.layers, "record_frozen", lambda layer: (calls.append(layer),
                                                                   record(layer)))
    layer = make()
    assert len(calls) == records
    assert all(m.frozen_as_built == {n for n, p in m.named_parameters() if not p.requires_grad}
               for m in layer.modules() if isinstance(m, ln.SubnetLinear | ln.SubnetConv2d)
               or m is layer)


@pytest.mark.parametrize("make", [
    lambda: ln.SubnetMultiheadAttention(4, 2, bias="trainable", add_bias_kv=True, seed=0),
    lambda: ln.convert(nn.Sequential(nn.Linear(4, 4), nn.Conv2d(1, 2, 3)), bias="trainable",
                       sparsity=0.5, seed=0),
    lambda: ln.convert(nn.Sequential(nn.MultiheadAttention(4, 2, add_bias_kv=True)),
                       bias="trainable", sparsity=0.5, seed=0),
    lambda: ln.convert(nn.Sequential(nn.MultiheadAttention(4, 2, bias=False, add_bias_kv=True)),
                       bias="trainable", sparsity=0.5, seed=0),
], ids=["attention", "convert", "convert-attention", "convert-attention-no-bias"])
def test_each_subnet_layer_records_its_frozen_tensors_once(make, monkeypatch):
    """An attention recorded each projection twice (as the projection was made, then again
    with itself), and ``convert`` recorded each layer it made twice (its build in the frozen
    mode, then its own ``set_bias_mode`` in the one asked for): each once now, built in the
    mode asked for; what is recorded is what is frozen as made, ``bias_k`` / ``bias_v``
    trainable with the biases (an attention without biases too, as before)."""
    records = []  # (the modules themselves: the id of one freed, as convert's probe builds
    # on the meta device are, may be a later layer's)

    def recorded(module):
        if "recorded" not in module.__dict__:
            raise AttributeError("frozen_as_built")  # (not yet: as without the property)
        return module.__dict__["recorded"]

    def record(module, value):
        records.append(module)
        module.__dict__["recorded"] = value

    for cls in (ln.SubnetLinear, ln.SubnetConv2d, ln.SubnetMultiheadAttention):
        monkeypatch.setattr(cls, "frozen_as_built", property(recorded, record), raising=False)
    model = make()
    subnet = [m for m in model.modules() if isinstance(
        m, ln.SubnetLinear | ln.SubnetConv2d | ln.SubnetMultiheadAttention)]
    assert [sum(r is m for r in records) for m in subnet] == [1] * len(subnet)
    assert all(m.frozen_as_built == {n for n, p in m.named_parameters() if not p.requires_grad}
               and not {n for n in m.frozen_as_built if n.rpartition(".")[2] in
                        ("bias", "bias_k", "bias_v")} for m in subnet)
    assert any(n.endswith("bias_k") and p.requires_grad for n, p in model.named_parameters()) \
        or not isinstance(model[0], ln.SubnetMultiheadAttention)


def refuses_prune(layer: nn.Module, target: nn.Module, name: str, match: str) -> None:
    """``torch.nn.utils.prune`` of ``target``'s ``name`` (inside ``layer``) raises ``match``, and
    leaves the layer as it was: its parameters and buffers (no ``<name>_mask``), no hook."""
    before = {n: p.clone() for n, p in layer.named_parameters()}
    buffers = dict(layer.named_buffers()).keys()
    with pytest.raises(TypeError, match=match):
        torch.nn.utils.prune.l1_unstructured(target, name, 0.5)
    after = dict(layer.named_parameters())
    assert after.keys() == before.keys() and dict(layer.named_buffers()).keys() == buffers
    assert not target._forward_pre_hooks
    assert all(torch.equal(after[n], p) for n, p in before.items())


@pytest.mark.parametrize("make, name, exported_name", [
    (lambda: ln.SubnetLinear(8, 4, seed=0), "weight", "weight"),
    (lambda: ln.SubnetConv2d(2, 4, 3, seed=0), "weight", "weight"),
    (lambda: ln.SubnetMultiheadAttention(4, 2, seed=0), "q_proj_weight", "in_proj_weight"),
], ids=["linear", "conv", "attention"])
def test_torch_prune_is_refused_in_one_line_and_the_export_prunes(make, name, exported_name):
    """``torch.nn.utils.prune`` on a subnet layer's computed weight failed with "cannot assign
    'torch.FloatTensor' object to parameter 'weight_orig'"; refused saying that the layer prunes
    by its mask, leaving it as it was. The exported model's layers prune as torch's do."""
    layer = make()
    refuses_prune(layer, layer, name, rf"^torch\.nn\.utils\.prune: {type(layer).__name__}\."
                                      rf"{name} is computed from the masks of a subnet layer, "
                                      r"which prunes by its mask: set its sparsity")
    exported = ln.export(nn.Sequential(make()))[0]
    torch.nn.utils.prune.l1_unstructured(exported, exported_name, 0.5)
    assert hasattr(exported, f"{exported_name}_orig")


@pytest.mark.parametrize("make, module, name, thawed", [
    *((lambda: ln.SubnetLinear(8, 4, seed=0), lambda layer: layer.structure.weight, "weight",
       thawed) for thawed in (False, True)),
    *((lambda: ln.SubnetLinear(8, 4, bias=True, seed=0), lambda layer: layer, "bias", thawed)
      for thawed in (False, True)),
    (lambda: ln.SubnetMultiheadAttention(4, 2, add_bias_kv=True, seed=0),
     lambda layer: layer.q_proj, "bias", False),
    *((lambda: ln.SubnetMultiheadAttention(4, 2, add_bias_kv=True, seed=0), lambda layer: layer,
       "bias_k", thawed) for thawed in (False, True)),
], ids=["masked-weight", "masked-weight-requires-grad", "bias", "bias-requires-grad",
        "attention-projection-bias", "attention-bias-k", "attention-bias-k-requires-grad"])
def test_torch_prune_of_a_frozen_random_tensor_is_refused(make, module, name, thawed):
    """``torch.nn.utils.prune`` of a subnet layer's frozen random weight (the ``MaskedWeight``
    inside it) or of its frozen bias silently zeroed random values that a ticket regenerates
    from the seed: refused as the computed weight is, leaving the layer as it was. A bias made
    to require grad (``requires_grad_()``) is still regenerated by a ticket (save_ticket
    refuses it trained), and was refused as "a frozen random tensor ... which prunes by its
    mask": the refusal says so, and names ``convert(bias="trainable")``, which makes a bias
    the user's to prune (and the ticket's to store). A ``MaskedWeight``'s weight made to
    require grad (trained under a fixed mask) was pruned: a ticket regenerates it too."""
    layer = make()
    target = module(layer)
    getattr(target, name).requires_grad_(thawed)
    why = (r"which a ticket regenerates from the seed \(requires_grad_\(\) does not change "
           r"that\): to train and prune it, make it trainable where the model is made "
           r"\(convert\(bias='trainable'\), or a subnet layer's own bias='trainable'\) so "
           r"that the ticket stores it$" if name != "weight" else
           r"which prunes by its mask: set its sparsity")
    refuses_prune(layer, target, name, rf"^torch\.nn\.utils\.prune: {type(target).__name__}\."
                                       rf"{name} is a frozen random tensor of a subnet layer, "
                                       rf"{why}")
    trained = ln.convert(nn.Sequential(nn.Linear(8, 4)), sparsity=0.5, bias="trainable")[0]
    torch.nn.utils.prune.l1_unstructured(trained, "bias", 0.5)
    assert hasattr(trained, "bias_orig")


def trainable_bias_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), ln.SubnetLinear(8, 4, bias="trainable", seed=0))


@pytest.mark.parametrize("use", [
    lambda model, path: ln.save_ticket(model, path),
    lambda model, path: ln.export(model),
    lambda model, path: ln.save_ticket(trainable_bias_model(), path) and ln.load_ticket(
        path, model)], ids=["save_ticket", "export", "load_ticket"])
def test_a_bias_pruned_by_torch_is_refused_by_save_ticket_and_export_until_removed(
        use, tmp_path):
    """A subnet layer's trainable bias is the user's to prune with ``torch.nn.utils.prune``;
    ``save_ticket``, ``export`` and ``load_ticket`` into the model then failed deep in
    ``copy.deepcopy`` ("Only Tensors created explicitly by the user (graph leaves) support the
    deepcopy protocol"), naming neither layer nor tensor. Refused in one line naming both and
    the ``prune.remove`` that makes the pruning permanent, after which the model saves (its
    ticket stores the pruned bias), loads and exports."""
    model = trainable_bias_model()
    torch.nn.utils.prune.l1_unstructured(model[1], "bias", 0.5)
    with pytest.raises(ValueError, match=r"^(save_ticket|export|load_ticket): module '1' "
                                         r"\(SubnetLinear\) has 'bias' pruned by torch\.nn\."
                                         r"utils\.prune \(bias_orig, bias_mask and a hook\), "
                                         r"which .*; make the pruning permanent first: torch\."
                                         r"nn\.utils\.prune\.remove\(model\.get_submodule"
                                         r"\('1'\), 'bias'\)$"):
        use(model, tmp_path / "m.ticket")
    torch.nn.utils.prune.remove(model.get_submodule("1"), "bias")
    ln.save_ticket(model, tmp_path / "m.ticket")
    loaded = ln.load_ticket(tmp_path / "m.ticket", trainable_bias_model())
    x = torch.randn(2, 8)
    assert int((loaded[1].bias == 0).sum()) == 2
    assert torch.equal(loaded(x), model(x)) and torch.equal(ln.export(model)(x), model(x))


class Doubled(nn.Module):
    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        return 2 * tensor


@pytest.mark.parametrize("module, tensor", [("1", "bias"), ("1.structure.weight", "scores")])
def test_a_parametrized_bias_or_score_exports_baked_in_and_saves_once_removed(
        module, tensor, tmp_path):
    """A parametrization (``torch.nn.utils.parametrize``) of a subnet layer's trainable bias or
    scores trains, but ``export`` failed with ``KeyError: <class '...ParametrizedSubnetLinear'>``
    and ``save_ticket`` wrote a ticket that no load took ("the model has no tensor
    '1.parametrizations.bias.original'"). ``export`` now bakes the parametrized values in;
    ``save_ticket`` refuses in one line naming the module, the tensor and the
    ``remove_parametrizations`` after which the model saves and loads bit for bit."""
    model = trainable_bias_model()
    torch.nn.utils.parametrize.register_parametrization(model.get_submodule(module), tensor,
                                                        Doubled())
    x = torch.randn(3, 8)
    assert torch.equal(ln.export(model)(x), model(x))
    with pytest.raises(ValueError, match=rf"^save_ticket: module '{re.escape(module)}' of a "
                                         rf"subnet layer has parametrizations of {tensor} \("
                                         r"torch\.nn\.utils\.parametrize\), which a ticket does "
                                         r"not store; remove them first, keeping their values: "
                                         r"torch\.nn\.utils\.parametrize\.remove_"
                                         rf"parametrizations\(model\.get_submodule\("
                                         rf"'{re.escape(module)}'\), '{tensor}'\)$"):
        ln.save_ticket(model, tmp_path / "m.ticket")
    torch.nn.utils.parametrize.remove_parametrizations(model.get_submodule(module), tensor)
    ln.save_ticket(model, tmp_path / "m.ticket")
    assert torch.equal(ln.load_ticket(tmp_path / "m.ticket", trainable_bias_model())(x), model(x))


@pytest.mark.parametrize("trainable", [True, False], ids=["trainable", "frozen"])
def test_torch_prune_of_the_scores_is_refused(trainable):
    """``torch.nn.utils.prune`` of a ``MaskedWeight``'s scores went through, leaving
    ``scores_orig`` and ``scores_mask`` in the layer's state, which no ticket saves or loads
    (the layer prunes by the top-k of its scores): refused as its frozen weight is, the layer
    left as it was, whether the scores train or not."""
    layer = ln.SubnetLinear(8, 4, seed=0)
    target = layer.structure.weight
    target.scores.requires_grad_(trainable)
    refuses_prune(layer, target, "scores", r"^torch\.nn\.utils\.prune: MaskedWeight\.scores is "
                                           r"the score tensor of a subnet layer, which prunes by "
                                           r"its mask: set its sparsity")


class AttendsWithBiasKV(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.attention = ln.SubnetMultiheadAttention(4, 2, add_bias_kv=True, batch_first=True,
                                                     seed=3)
        self.conv = ln.SubnetConv2d(2, 2, 3, bias=True, seed=4, **kw)

    def forward(self, x):
        return self.conv(self.attention(x, x, x)[0][:, None].repeat(1, 2, 1, 1))


@pytest.mark.parametrize("kw", ALL_STRUCTURES)
def test_reset_parameters_redraws_a_meta_models_tensors_as_built(kw):
    """``model.to("meta").to_empty(device="cpu")`` (lazy initialisation) left the frozen
    weights and scores uninitialised, and a subnet layer had no ``reset_parameters`` to draw
    them again: ``model.apply`` of it now gives every tensor, and the outputs, as built (in
    the layout the model was given: channels_last); an unseeded layer draws new ones, as
    torch's do."""
    model = AttendsWithBiasKV(**kw).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    built, expected = copy_state(model), model(x)
    model.to("meta").to_empty(device="cpu")
    with torch.no_grad():  # (to_empty's memory may still hold the values)
        for p in model.parameters():
            p.fill_(float("nan"))
    model.apply(lambda m: hasattr(m, "reset_parameters") and m.reset_parameters())
    state = model.state_dict()
    assert state.keys() == built.keys()
    assert all(torch.equal(state[n], t) and state[n].stride() == t.stride()
               for n, t in built.items())
    assert torch.equal(model(x), expected)
    unseeded = ln.SubnetLinear(4, 3, True)
    before = copy_state(unseeded)
    unseeded.reset_parameters()
    assert not torch.equal(unseeded.bias, before["bias"])



def test_reset_parameters_makes_a_scaled_standardised_layers_gain_1_as_built():
    """A subnet convolution scaled as timm's ScaledStdConv2d (``std_scale``) left its ``gain``
    as ``to_empty`` left it (garbage, as timm's own layer does): reset, it is 1 again, as
    built (a trained or copied gain is lost, as a BatchNorm's weight is), with everything else
    as the seed draws it."""
    layer = ln.SubnetConv2d(2, 3, 3, seed=0, std_eps=1e-6, std_scale=0.5)
    built = copy_state(layer)
    layer.to("meta").to_empty(device="cpu")
    with torch.no_grad():
        for p in layer.parameters():
            p.fill_(float("nan"))
    layer.reset_parameters()
    assert torch.equal(layer.gain, torch.ones(3, 1, 1, 1))
    assert all(torch.equal(layer.state_dict()[n], t) for n, t in built.items())


@pytest.mark.parametrize("make", [lambda: ln.SubnetLinear(4, 3, True, seed=0),
                                  lambda: ln.SubnetMultiheadAttention(4, 2, add_bias_kv=True,
                                                                      seed=0)],
                         ids=["linear", "attention"])
def test_a_layer_pickled_before_it_recorded_its_draw_says_what_to_do(tmp_path, make):
    """A layer pickled whole by a lotterynet that did not record what it was drawn from
    (``drawn_with``) failed ``reset_parameters`` with a bare TypeError ("argument after ** must
    be a mapping, not NoneType"); it says, in one line, why and what to do, and loading its
    state into a layer built anew gives one that redraws."""
    layer = make()
    del layer.drawn_with  # (as an older lotterynet pickled it)
    torch.save(layer, tmp_path / "older.pt")
    older = torch.load(tmp_path / "older.pt", weights_only=False)
    with pytest.raises(RuntimeError, match=rf"^{type(layer).__name__} was pickled by an older "
                                           r"lotterynet, .* cannot be drawn again: build the "
                                           r"model anew and load this one's state into it "
                                           r"\(new\.load_state_dict\(old\.state_dict\(\)\)\)$"):
        older.reset_parameters()
    new = make()
    new.load_state_dict(older.state_dict())
    new.reset_parameters()

def copy_state(model):
    return {n: t.clone() for n, t in model.state_dict().items()}
