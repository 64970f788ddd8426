"""The collapsed subset-sum layer against a literal float64 computation of Pensia et al.'s
Figure 1c (every hidden unit materialised), in value and in the gradients of both scores."""

import itertools

import pytest
import torch
import torch.nn.functional as F

import lotterynet as ln
from conftest import requires_cuda


def literal_linear(x, u, v, activation, shared):
    """y_i = Σ_{j,t} v_ijt φ(u_jt x_j) (shared) or φ(u_ijt x_j) (unshared), all units explicit."""
    phi = F.relu if activation == "relu" else (lambda z: z)
    if shared:  # hidden (B, in, n), one unit per input and pair
        hidden = phi(x[:, :, None] * u[None])
        return torch.einsum("bjt,ijt->bi", hidden, v)
    hidden = phi(x[:, None, :, None] * u[None])  # (B, out, in, n)
    return (hidden * v[None]).sum((2, 3))


def literal_conv(x, u, v, activation, shared, stride, padding, dilation, groups):
    """Per output position: y_o = Σ_{j,t,a,b} v_{o j t a b} φ(u · x_j(p + (a, b)))."""
    phi = F.relu if activation == "relu" else (lambda z: z)
    out, in_g, n, kh, kw = v.shape
    patches = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)
    batch, length = x.shape[0], patches.shape[-1]
    patches = patches.view(batch, groups, 1, in_g, 1, kh * kw, length)
    vv = v.reshape(groups, out // groups, in_g, n, kh * kw, 1)
    uu = (u.view(groups, 1, in_g, n, 1, 1) if shared
          else u.reshape(groups, out // groups, in_g, n, kh * kw, 1))
    hidden = phi(patches * uu)  # (B, g, out_g, in_g, n, kk, L): every hidden unit
    y = (hidden * vv).sum((3, 4, 5)).reshape(batch, out, length)
    h_out = (x.shape[2] + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    return y.view(batch, out, h_out, -1)


def check_against_literal(layer, x, literal, input_grad=False):
    """Value, both scores' gradients, the bias's and (``input_grad``) the input's against
    ``literal(x, ũ, ṽ)`` (+ the layer's bias) in float64."""
    layer.double()
    x = x.double().requires_grad_(input_grad)
    y = layer(x)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    masks = layer.mask()
    u_w, v_w = layer.structure.u.weight, layer.structure.v.weight
    m_u = masks["u"].double().requires_grad_()
    m_v = masks["v"].double().requires_grad_()
    x_ref = x.detach().requires_grad_(input_grad)
    bias = 0 if layer.bias is None else layer.bias.detach().requires_grad_()
    y_ref = literal(x_ref, u_w * m_u, v_w * m_v) + bias
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    (y_ref * g).sum().backward()
    for name, m_ref, masked in [("u", m_u, layer.structure.u), ("v", m_v, layer.structure.v)]:
        # straight-through: the score receives ∂L/∂m times sign(s)
        expected = m_ref.grad * torch.sign(masked.scores.detach())
        torch.testing.assert_close(masked.scores.grad, expected, rtol=1e-9, atol=1e-10,
                                   msg=f"gradient of the {name} scores")
        assert masked.scores.grad.abs().sum() > 0
    if layer.bias is not None:
        torch.testing.assert_close(layer.bias.grad, bias.grad, rtol=1e-10, atol=1e-10)
    if input_grad:
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-10)


CASES = list(itertools.product(["relu", "identity"], [True, False]))


@pytest.mark.parametrize("activation,shared", CASES)
@pytest.mark.parametrize("literal_rows", [0, 10**6], ids=["collapsed", "literal"])
@pytest.mark.parametrize("input_grad", [False, True], ids=["first-layer", "input-grad"])
def test_linear_matches_literal(activation, shared, literal_rows, input_grad, monkeypatch):
    """Both ways a Linear layer can compute (the collapse; hidden units made literally, which
    a shared layer does for small batches, with ũ's gradient taken from ṽ's when the input
    needs none) against the float64 reference, with a bias."""
    from lotterynet.structures import SubsetSum

    monkeypatch.setattr(SubsetSum, "literal_rows", dict.fromkeys(SubsetSum.literal_rows,
                                                                 literal_rows))
    layer = ln.SubnetLinear(9, 6, bias=True, structure="subsetsum", pairs=4,
                            activation=activation, shared=shared, sparsity=0.4, seed=3)
    with torch.no_grad():
        layer.bias.normal_(generator=torch.Generator().manual_seed(1))
    layer.bias.requires_grad_()  # (frozen as built: its gradient is checked all the same,
    ln.layers.record_frozen(layer)  # as a bias made trainable, which a forward then allows)
    x = torch.randn(5, 9, generator=torch.Generator().manual_seed(0))
    # an exact zero input: relu(ũ·0) = 0 with derivative 0, in the shortcut as in autograd
    x[0, 2] = 0
    check_against_literal(layer, x, lambda x, u, v: literal_linear(x, u, v, activation, shared),
                          input_grad)


@pytest.mark.parametrize("activation,shared", CASES)
@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 0, 1, 1), (2, 1, 2, 2)])
def test_conv2d_matches_literal(activation, shared, stride, padding, dilation, groups):
    layer = ln.SubnetConv2d(4, 6, 3, stride, padding, dilation, groups, structure="subsetsum",
                            pairs=3, activation=activation, shared=shared, sparsity=0.3, seed=4)
    x = torch.randn(2, 4, 9, 9, generator=torch.Generator().manual_seed(1))
    check_against_literal(layer, x, lambda x, u, v: literal_conv(
        x, u, v, activation, shared, stride, padding, dilation, groups))


def test_identity_collapses_to_product_sum():
    layer = ln.SubnetLinear(5, 3, structure="subsetsum", activation="identity", pairs=2, seed=0)
    w, doubles = layer.structure.effective_weight()
    u, v = layer.structure.u(), layer.structure.v()
    assert not doubles
    torch.testing.assert_close(w, (v * u[None]).sum(-1))


@requires_cuda
@pytest.mark.parametrize("activation,shared", CASES)
def test_cuda_matches_cpu(activation, shared):
    layer = ln.SubnetConv2d(8, 16, 3, padding=1, structure="subsetsum", activation=activation,
                            shared=shared, seed=0)
    x = torch.randn(4, 8, 12, 12)
    y_cpu = layer(x)
    layer.cuda()
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # cuDNN's default: TF32
        y_gpu = layer(x.cuda())
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=1e-4, atol=1e-4)
    assert all(torch.equal(m.cpu(), m_cpu) for m, m_cpu in
               zip(layer.mask().values(), layer.cpu().mask().values()))


@pytest.mark.parametrize("structure", ["subsetsum", "fixedsize"])
def test_fan_in_target_draws_the_second_layer_at_the_authors_scale(structure):
    """``fan_in="target"``: ``v`` and its scores are the same draws as with Kaiming's fan-in
    (``n·d_in`` hidden units), √n larger — std √(2/d_in), Pensia et al.'s ``RedLayer``; ``u``
    and the counts do not change; an unknown value names the choices."""
    common = dict(structure=structure, pairs=5, activation="identity", sparsity=0.6, seed=3)
    hidden = ln.SubnetLinear(400, 120, **common)
    target = ln.SubnetLinear(400, 120, fan_in="target", **common)
    hv, tv = hidden.structure.v, target.structure.v
    torch.testing.assert_close(tv.weight, hv.weight * 5 ** 0.5)
    torch.testing.assert_close(tv.scores, hv.scores * 5 ** 0.5)
    assert target.structure.u.state_dict().keys() == hidden.structure.u.state_dict().keys()
    assert all(torch.equal(t, h) for t, h in zip(target.structure.u.state_dict().values(),
                                                 hidden.structure.u.state_dict().values()))
    assert abs(tv.weight.std().item() / (2 / 400) ** 0.5 - 1) < 0.01  # 240,000 draws
    assert tv.kept == hv.kept == 96_000  # 2 of every 5 terms
    with pytest.raises(ValueError, match="'sideways'; valid choices: hidden, target"):
        ln.SubnetLinear(400, 120, fan_in="sideways", **common)


@pytest.mark.parametrize("fan_in, v_fan_in", [("hidden", 64 * 9 * 5), ("target", 64 * 9)])
def test_a_conv_layers_tensors_are_drawn_at_their_fan_ins(fan_in, v_fan_in):
    """Each hidden unit of ``u`` sees one input: fan-in 1. Each output of ``v`` sums
    in·k·k·n hidden units (Kaiming's fan-in), or in·k·k with ``fan_in="target"``: the kernel
    taps count, as in ``nn.Conv2d``'s init. Weights Kaiming-normal, std √(2/fan_in); scores
    U(±1/√fan_in), the largest of hundreds near the bound."""
    layer = ln.SubnetConv2d(64, 8, 3, structure="subsetsum", pairs=5, activation="identity",
                            fan_in=fan_in, seed=0)
    for m, fan in ((layer.structure.u, 1), (layer.structure.v, v_fan_in)):
        assert abs(m.weight.std().item() / (2 / fan) ** 0.5 - 1) < 0.2  # 320 / 23,040 draws
        largest = m.scores.abs().max().item()
        assert 0.95 * fan ** -0.5 < largest <= fan ** -0.5


def test_first_layer_shortcut_under_autocast():
    """Under bf16 autocast the literal ReLU layer's first-layer backward (ũ's gradient from
    ṽ's) gives the scores what autograd gives through the hidden units, to bf16 precision."""
    layer = ln.SubnetLinear(30, 8, structure="subsetsum", pairs=3, sparsity=0.3, seed=5)
    x = torch.randn(16, 30, generator=torch.Generator().manual_seed(2))
    grads = []
    for input_grad in (False, True):  # True: autograd's path, the input needs its gradient
        layer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x.clone().requires_grad_(input_grad))
        assert y.dtype == torch.bfloat16
        y.float().square().sum().backward()
        grads.append([layer.structure.u.scores.grad, layer.structure.v.scores.grad])
    for shortcut, autograd in zip(*grads):
        assert shortcut.dtype == torch.float32
        torch.testing.assert_close(shortcut, autograd, rtol=2e-2, atol=1e-3 * autograd.abs().max())


def test_relu_layer_under_vmap_passes_the_gradient_to_a_batched_input():
    """Inside ``torch.func.vmap`` a batched input reports ``requires_grad=False`` even when a
    gradient flows to it (a stack's second layer, per-example models): the layer must not take
    the first-layer shortcut, which gives the input no gradient. The input's and the scores'
    gradients equal those of a loop over the batch."""
    layer = ln.SubnetLinear(9, 6, structure="subsetsum", pairs=4, activation="relu",
                            sparsity=0.4, seed=3).double()
    x = torch.randn(3, 5, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grads = []
    for apply in (torch.func.vmap(layer), lambda xs: torch.stack([layer(x) for x in xs])):
        layer.zero_grad(set_to_none=True)
        xs = x.clone().requires_grad_()
        apply(xs).square().sum().backward()
        grads.append([xs.grad, layer.structure.u.scores.grad, layer.structure.v.scores.grad])
    for vmapped, looped in zip(*grads):
        torch.testing.assert_close(vmapped, looped, rtol=1e-10, atol=1e-12)


def test_an_in_place_op_may_follow_the_first_layer_on_tokens():
    """Rows of tokens (input of 3 dims) through the literal first-layer path with a bias, then
    ``nn.ReLU(inplace=True)`` (torchvision's Swin V2): the Function's output was a view, and
    the in-place ReLU raised; it now gives what an out-of-place ReLU gives."""
    def model(inplace: bool) -> torch.nn.Module:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(inplace=inplace),
                                  torch.nn.Linear(8, 3))
        return ln.convert(net, sparsity=0.5, structure="subsetsum", seed=0)

    x = torch.randn(4, 5, 2)
    outputs, grads = [], []
    for inplace in (True, False):
        net = model(inplace)
        out = net(x)
        out.sum().backward()
        outputs.append(out)
        grads.append([p.grad for p in net.parameters() if p.requires_grad])
    assert torch.equal(outputs[0], outputs[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


@pytest.mark.parametrize("rows", [4, 400])
def test_a_float16_input_runs_under_cpu_bfloat16_autocast(rows):
    """As nn.Linear and nn.Conv2d run there, at every batch size, giving what a float32 copy of
    the input gives. The collapsed ReLU layer (a shared Linear layer past ``literal_rows``, and
    every unshared or conv layer) stacked ``[relu(x), relu(-x)]`` in float16, which CPU
    autocast refuses ("Unexpected floating ScalarType in at::autocast::prioritize")."""
    common = dict(structure="subsetsum", sparsity=0.5, seed=0)
    for layer, x in ((ln.SubnetLinear(20, 7, True, **common), torch.randn(rows, 20)),
                     (ln.SubnetLinear(20, 7, True, shared=False, **common), torch.randn(rows, 20)),
                     (ln.SubnetConv2d(4, 6, 3, bias=True, **common),
                      torch.randn(rows // 4, 4, 6, 6))):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x.half())
            assert y.dtype == torch.bfloat16 and torch.equal(y, layer(x.half().float()))


def test_the_relu_split_runs_on_the_meta_device():
    """As before it asked the input's device whether autocast is on: shape inference and FLOP
    counters run a layer, or its export's SplitSigns, on meta tensors, and torch has no
    autocast for meta ("unknown device type for autocast")."""
    common = dict(structure="subsetsum", sparsity=0.5, seed=0)
    for layer, x in ((ln.SubnetLinear(20, 7, True, **common), torch.randn(400, 20)),
                     (ln.SubnetLinear(20, 7, True, shared=False, **common), torch.randn(4, 20)),
                     (ln.SubnetConv2d(4, 6, 3, bias=True, **common), torch.randn(1, 4, 6, 6)),
                     (ln.plain.SplitSigns(2, 1), torch.randn(3, 4))):
        shape = layer(x).shape
        assert layer.to("meta")(x.to("meta")).shape == shape


def test_an_input_of_another_dtype_runs_on_meta_as_nn_linear_does():
    """A shared Linear layer asks whether autocast is on to take an input of another dtype
    than its own: on meta, which torch has no autocast for, asking raised "unknown device type
    for autocast", where nn.Linear gives its output (the CPU refuses both alike)."""
    x = torch.randn(3, 20, dtype=torch.float16)
    for layer in (ln.SubnetLinear(20, 7, True, structure="subsetsum", sparsity=0.5, seed=0),
                  torch.nn.Linear(20, 7)):
        with pytest.raises(RuntimeError, match="same dtype"):
            layer(x)
        y = layer.to("meta")(x.to("meta"))
        assert y.shape == (3, 7) and y.dtype == torch.float32
