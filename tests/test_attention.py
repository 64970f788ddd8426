import copy

import pytest
import torch
import torchvision
from torch import nn

import lotterynet as ln
from lotterynet.attention import SubnetMultiheadAttention
from lotterynet.convert import convert

E, HEADS, L, S, N = 8, 2, 5, 6, 3


def inputs(batch_first, kdim=E, vdim=E, self_attention=False):
    q, k, v = torch.randn(L, N, E), torch.randn(S, N, kdim), torch.randn(S, N, vdim)
    if self_attention:
        k = v = q
    if batch_first:
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    return q, k, v


CALLS = {
    "default": dict(),
    "no-weights": dict(need_weights=False),
    "attn-mask": dict(attn_mask=torch.rand(L, S) < 0.3),
    "float-mask-per-head": dict(attn_mask=torch.randn(N * HEADS, L, S),
                                average_attn_weights=False),
    "padding-mask": dict(key_padding_mask=torch.tensor([[False] * S, [False] * 4 + [True] * 2,
                                                        [True] + [False] * 5])),
}
MODULES = {
    "seq-first": dict(),
    "batch-first": dict(batch_first=True),
    "bias-kv-zero-attn": dict(add_bias_kv=True, add_zero_attn=True),
    "kdim-vdim": dict(kdim=5, vdim=3),
    "no-bias": dict(bias=False),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
@pytest.mark.parametrize("options", MODULES.values(), ids=MODULES.keys())
def test_converted_attention_equals_the_original_at_sparsity_0(options, call):
    """convert() of an nn.MultiheadAttention, put back into the original module (same weights):
    bit-identical outputs and attention weights, whatever the options and call variant."""
    original = nn.MultiheadAttention(E, HEADS, **options).eval()
    converted = convert(nn.Sequential(copy.deepcopy(original)), sparsity=0.0, seed=3)[0]
    assert isinstance(converted, SubnetMultiheadAttention)
    original.load_state_dict(ln.export(converted).state_dict())
    q, k, v = inputs(options.get("batch_first", False), options.get("kdim", E),
                     options.get("vdim", E))
    with torch.no_grad():
        (out, weights), (ref_out, ref_weights) = converted(q, k, v, **call), original(q, k, v,
                                                                                      **call)
    assert torch.equal(out, ref_out)
    assert (weights is None) == (ref_weights is None) == (call.get("need_weights") is False)
    assert weights is None or torch.equal(weights, ref_weights)


def test_attention_sparsity_is_its_projections():
    """``sparsity`` / ``density`` of subnet attention are over its four projections, and
    setting the sparsity sets all four (it was a plain attribute: a no-op)."""
    attention = ln.SubnetMultiheadAttention(8, 2, kdim=4, seed=0, sparsity=0.5)
    assert (attention.sparsity, attention.density) == (0.5, 0.5)
    attention.sparsity = 0.75
    assert [m.k for m in ln.masked_weights(attention)] == [16, 8, 16, 16]
    assert attention.sparsity == 1 - 56 / 224 and attention.density == 56 / 224
    with pytest.raises(ValueError, match="keeps no weight of a tensor with 32 entries"):
        attention.sparsity = 0.99  # q_proj (64 entries) could keep one; k_proj (32) none
    assert [m.k for m in ln.masked_weights(attention)] == [16, 8, 16, 16]


def test_attention_made_with_a_trainable_bias_trains_its_biases_as_convert_makes_them():
    """``SubnetMultiheadAttention(bias="trainable")`` (a subnet layer's bias modes) trained its
    projections' biases but left ``bias_k`` / ``bias_v`` frozen, which
    ``convert(bias="trainable")`` trains: the same biases train either way; by default none."""
    def trains(attention):
        return {name: p.requires_grad for name, p in attention.named_parameters()
                if name.rpartition(".")[2] in ("bias", "bias_k", "bias_v")}
    made = ln.SubnetMultiheadAttention(E, HEADS, bias="trainable", add_bias_kv=True, seed=0)
    converted = convert(nn.ModuleList([nn.MultiheadAttention(E, HEADS, add_bias_kv=True)]),
                        sparsity=0.5, bias="trainable")[0]
    assert trains(made) == trains(converted) == dict.fromkeys(
        ("bias_k", "bias_v", "q_proj.bias", "k_proj.bias", "v_proj.bias", "out_proj.bias"), True)
    assert not any(trains(ln.SubnetMultiheadAttention(E, HEADS, add_bias_kv=True)).values())
    x = torch.randn(L, N, E)
    made(x, x, x)[0].sum().backward()
    assert made.bias_k.grad is not None and made.q_proj.bias.grad is not None


def test_self_attention_and_causal():
    original = nn.MultiheadAttention(E, HEADS, batch_first=True).double().eval()
    converted = convert(copy.deepcopy(original), sparsity=0.0, seed=0).double()
    original.load_state_dict(ln.export(converted).state_dict())
    x = inputs(True, self_attention=True)[0].double()
    causal = nn.Transformer.generate_square_subsequent_mask(L, dtype=torch.float64)
    for call in (dict(), dict(attn_mask=causal, is_causal=True, need_weights=False)):
        torch.testing.assert_close(converted(x, x, x, **call)[0], original(x, x, x, **call)[0],
                                   rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("layer_options", [dict(batch_first=True), dict(norm_first=True)])
def test_transformer_encoder_layer(layer_options):
    torch.manual_seed(0)
    original = nn.TransformerEncoderLayer(E, HEADS, 16, dropout=0.0, **layer_options).eval()
    converted = convert(copy.deepcopy(original), sparsity=0.0, seed=1)
    assert isinstance(converted.self_attn, SubnetMultiheadAttention)
    assert isinstance(converted.linear1, ln.SubnetLinear)
    converted.double(), original.double()
    original.load_state_dict(ln.export(converted).state_dict())
    x = inputs(layer_options.get("batch_first", False))[0].double()
    padding = torch.zeros(N, L, dtype=torch.bool)
    padding[1, -2:] = True
    with torch.no_grad():  # eval + no_grad: torch's fast path would be taken if allowed
        for call in (dict(), dict(src_key_padding_mask=padding)):
            torch.testing.assert_close(converted(x, **call), original(x, **call), rtol=1e-13,
                                       atol=1e-13)

    trained = convert(copy.deepcopy(original).float().train(), sparsity=0.5, seed=1)
    x = x.float()
    attention = {n: p.clone() for n, p in trained.named_parameters() if n.startswith("self_attn")}
    scores = [n for n in attention if n.endswith(".scores")]
    assert len(scores) == 4  # q, k, v and output projections, each its own tensor
    assert all(trained.self_attn.get_submodule(p).sparsity == 0.5 for p in
               ("q_proj", "k_proj", "v_proj", "out_proj"))
    opt = torch.optim.SGD([p for n, p in trained.named_parameters() if n.endswith("scores")],
                          lr=1.0)
    trained(x).square().sum().backward()
    opt.step()
    for n, p in trained.named_parameters():
        if n in scores:
            assert not torch.equal(p, attention[n]), n
        elif n in attention:
            assert not p.requires_grad and torch.equal(p, attention[n]), n


@pytest.mark.parametrize("sparse", [False, True], ids=["dense-storage", "sparse-storage"])
def test_exported_transformer_is_scriptable(sparse):
    """With sparse storage too: the encoder layer's fast path (evaluation) reads its
    feed-forward layers' weight, which a sparsely stored layer did not have."""
    model = convert(nn.TransformerEncoder(
        nn.TransformerEncoderLayer(E, HEADS, 16, dropout=0.0, batch_first=True), 2,
        enable_nested_tensor=False), sparsity=0.5, seed=0).eval()
    x = inputs(True)[0]
    rng = torch.get_rng_state()
    exported = ln.export(model, sparse=sparse)
    assert torch.equal(torch.get_rng_state(), rng)  # (nothing drawn to be overwritten)
    torch.testing.assert_close(exported(x), model(x), rtol=1e-6, atol=1e-6)
    scripted = torch.jit.script(exported)
    torch.testing.assert_close(scripted(x), model(x), rtol=1e-6, atol=1e-6)


def test_torchvision_vit_converts_and_trains_attention():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=16, patch_size=8, num_layers=1,
                                               num_heads=2, hidden_dim=8, mlp_dim=16,
                                               num_classes=3)
    convert(vit, sparsity=0.5, seed=0)
    names = [n for n, p in vit.named_parameters() if p.requires_grad]
    assert "encoder.layers.encoder_layer_0.self_attention.q_proj.structure.weight.scores" in names
    assert all(n.endswith(".scores") for n in names)  # an optimizer by name pattern finds them
    vit(torch.randn(2, 3, 16, 16)).sum().backward()
    attention = vit.encoder.layers.encoder_layer_0.self_attention
    assert all(m.scores.grad.abs().sum() > 0 for m in ln.masked_weights(attention))
    exported = ln.export(vit).eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(exported(x), vit.eval()(x), rtol=1e-6, atol=1e-6)


def test_converted_encoder_with_padding_mask_in_evaluation():
    """nn.TransformerEncoder's nested-tensor path (eval, batch_first, a key padding mask) reads
    the packed in_proj_weight; a converted encoder takes the plain path and computes what its
    export computes, with and without gradients."""
    model = convert(nn.TransformerEncoder(
        nn.TransformerEncoderLayer(E, HEADS, 16, dropout=0.0, batch_first=True), 2),
        sparsity=0.5, seed=0).eval()
    x = inputs(True)[0]
    padding = torch.zeros(N, L, dtype=torch.bool)
    padding[1, -2:] = True
    plain = ln.export(model)
    with torch.no_grad():
        expected = plain(x, src_key_padding_mask=padding)
        got = model(x, src_key_padding_mask=padding)
    kept = ~padding  # torch's nested path zeroes padded positions; compare the others
    torch.testing.assert_close(got[kept], expected[kept], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(x, src_key_padding_mask=padding)[kept], got[kept])


def test_device_dtype_and_sizes_as_nn_multihead_attention_takes_them():
    """``device`` / ``dtype`` reach every tensor, ``bias_k`` / ``bias_v`` included, with the
    numbers of building and then moving; bad sizes are refused naming the argument."""
    given = SubnetMultiheadAttention(8, 2, 0.0, True, True, False, None, None, False, "cpu",
                                     torch.float64, seed=0)
    moved = SubnetMultiheadAttention(8, 2, add_bias_kv=True, seed=0).double()
    assert {p.dtype for p in given.parameters()} == {torch.float64}
    assert all(torch.equal(a, b) for a, b in zip(given.state_dict().values(),
                                                 moved.state_dict().values(), strict=True))
    for embed_dim, num_heads, named in ((8, 0, "num_heads"), (0, 2, "embed_dim")):
        with pytest.raises(ValueError, match=f"{named} must be a positive integer"):
            SubnetMultiheadAttention(embed_dim, num_heads)
    for named in ("kdim", "vdim"):  # (the projection's in_features was named)
        with pytest.raises(ValueError, match=f"{named} must be a positive integer, got 0"):
            SubnetMultiheadAttention(8, 2, **{named: 0})
