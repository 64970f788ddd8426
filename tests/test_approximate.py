import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lotterynet as ln
from lotterynet.approximate import (
    LENET5,
    LENET5_CONV_PART,
    approximate_layer,
    approximate_model,
    main,
    weight_errors,
)
from lotterynet.models import build_model
from lotterynet.subsetsum import solve


@pytest.fixture(scope="module")
def tiny_target():
    """A 20-16-4 ReLU net trained a few Adam steps on a synthetic 4-class problem."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 20, generator=g)
    labels = (x @ torch.randn(20, 4, generator=g)).argmax(1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 16, bias=False), nn.ReLU(), nn.Linear(16, 4, bias=False))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(30):
        loss = F.cross_entropy(net(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


def test_pruned_model_matches_target_within_propagated_bound(tiny_target):
    model, stats = approximate_model(tiny_target, 12, seed=1)
    first, second = model[0], model[2]
    for layer in (first, second):
        assert isinstance(layer, ln.SubnetLinear)
        s = layer.structure
        assert (layer.structure_name, s.activation, s.shared, s.pairs) == (
            "subsetsum", "identity", False, 12)
    e1, e2 = (s["weight_error_max"] for s in stats)  # what the solver reports, per layer
    x = torch.randn(64, 20, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    w1 = tiny_target[0].weight.detach().double()
    w2 = tiny_target[2].weight.detach().double()
    h = F.relu(x @ w1.T)
    y = h @ w2.T
    with torch.no_grad():
        h_approx = F.relu(first(x))
        y_approx = model(x)
    # |Δy1| <= e1 Σ|x| per unit; ReLU is 1-Lipschitz;
    # Δy2 = (W2' − W2) h' + W2 (h' − h)  =>  |Δy2_i| <= e2 Σ|h'| + Σ_j |W2_ij| · bound1
    bound1 = e1 * x.abs().sum(1, keepdim=True)
    assert ((h_approx - h).abs() <= bound1 + 1e-12).all()
    bound2 = e2 * h_approx.abs().sum(1, keepdim=True) + bound1 * w2.abs().sum(1)
    assert ((y_approx - y).abs() <= bound2 + 1e-12).all()
    assert (y_approx - y).abs().max() > 0  # the approximation is not the target itself
    assert bound2.max() < 0.5 * y.abs().max()  # and the bound says something


def test_kept_count_equals_solver_selection(tiny_target):
    n = 10
    model, stats = approximate_model(tiny_target, n, seed=3)
    for layer, subnet, s in zip((tiny_target[0], tiny_target[2]), (model[0], model[2]), stats):
        v = subnet.structure.v
        # re-solve the weights from the model's own coefficients, v laid out as (out, in, n)
        targets = layer.weight.detach().double().reshape(-1)
        selection, _, error = solve(targets, v.weight.detach().reshape(-1, n))
        assert v.k == subnet.structure.u.k == int(selection.sum()) == s["coefficients_kept"]
        assert torch.equal(v.mask().reshape(-1, n), selection)
        model_error = (subnet.structure.effective_weight()[0] - layer.weight.double()).abs()
        torch.testing.assert_close(model_error.reshape(-1), error, rtol=0, atol=1e-12)
    params = ln.count_params(model)
    assert params["kept"] == 2 * sum(m.structure.v.k for m in (model[0], model[2]))


def test_fixed_size_and_shared_per_row(tiny_target):
    model, _ = approximate_model(tiny_target, 8, seed=4, k=3)
    for subnet in (model[0], model[2]):
        assert (subnet.structure.v.mask().sum(2) == 3).all()
    model, _ = approximate_model(tiny_target, 8, seed=4, shared_per_row=True)
    v = model[0].structure.v.weight  # (out, in, n): one set of coefficients per output row
    assert torch.equal(v, v[:, :1].expand_as(v))
    assert not torch.equal(v[0], v[1])


def test_conv_part_layout():
    conv = build_model(**LENET5, trained=True, seed=0)[:LENET5_CONV_PART]
    model, stats = approximate_model(conv, 9, seed=5)
    assert isinstance(model[0], ln.SubnetConv2d) and isinstance(model[3], ln.SubnetConv2d)
    errors = weight_errors(model, conv)
    assert errors.numel() == 6 * 25 + 16 * 6 * 25
    # the model's effective kernels are off by exactly the solver's errors
    assert errors.max().item() == pytest.approx(max(s["weight_error_max"] for s in stats),
                                                abs=1e-12)
    x = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        out, ref = model(x), conv.double()(x)
    assert out.shape == ref.shape == (4, 16, 5, 5)
    assert (out - ref).abs().max() < 0.5 * ref.abs().max()


def test_rejects_other_layers_and_biases():
    with pytest.raises(ValueError, match="nn.Linear or nn.Conv2d, got ReLU"):
        approximate_layer(nn.ReLU(), 5, torch.Generator())
    with pytest.raises(ValueError, match="has a bias.*bias=False"):
        approximate_layer(nn.Linear(3, 2), 5, torch.Generator())


def test_cli_help_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "fc2" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["fc2", "--data-dir", str(tmp_path), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert str(tmp_path) in capsys.readouterr().err  # the missing data folder is named
    with pytest.raises(SystemExit):
        main(["lenet5", "--n-min", "9", "--n-max", "5", "--data-dir", str(tmp_path)])
    assert "--n-min" in capsys.readouterr().err
