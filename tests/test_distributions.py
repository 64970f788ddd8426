import math
import re

import numpy as np
import pytest
import torch
from scipy import stats

import lotterynet as ln
from lotterynet.distributions import DISTRIBUTIONS, check_seed, orseau_range

SHAPE, FAN_IN = (400, 500), 500


def draw(name, **kw):
    return ln.sample_weights(name, SHAPE, FAN_IN, torch.Generator().manual_seed(0), **kw)


def test_uniform_is_uniform_on_minus1_1():
    w = draw("uniform").flatten().double()
    assert stats.kstest(w.numpy(), stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-3


def test_scaled_uniform_bound():
    w = draw("scaled_uniform").flatten().double()
    a = 1 / math.sqrt(FAN_IN)
    assert stats.kstest(w.numpy(), stats.uniform(loc=-a, scale=2 * a).cdf).pvalue > 1e-3


@pytest.mark.parametrize("name", ["kaiming_normal", "kaiming_uniform"])
def test_kaiming_matches_torch_std(name):
    w = draw(name)
    std = math.sqrt(2 / FAN_IN)
    assert abs(w.std().item() / std - 1) < 0.01
    ref = torch.empty(SHAPE)
    getattr(torch.nn.init, name + "_")(ref, mode="fan_in", nonlinearity="relu")
    assert abs(ref.std().item() / w.std().item() - 1) < 0.01
    law = stats.norm(scale=std) if name == "kaiming_normal" else stats.uniform(
        loc=-math.sqrt(3) * std, scale=2 * math.sqrt(3) * std)
    assert stats.kstest(w.flatten().double().numpy(), law.cdf).pvalue > 1e-3


def test_signed_constant_takes_two_values():
    w = draw("signed_constant")
    sigma = math.sqrt(2 / FAN_IN)
    values = torch.unique(w)
    assert values.numel() == 2
    torch.testing.assert_close(values, torch.tensor([-sigma, sigma]))
    assert abs((w > 0).float().mean().item() - 0.5) < 0.01


def test_hyperbolic_log_magnitude_uniform():
    alpha, beta = 0.01, 2.0
    w = draw("hyperbolic", alpha=alpha, beta=beta).flatten().double()
    logs = w.abs().log().numpy()
    assert logs.min() >= math.log(alpha) - 1e-6 and logs.max() <= math.log(beta) + 1e-6
    law = stats.uniform(loc=math.log(alpha), scale=math.log(beta / alpha))
    assert stats.kstest(logs, law.cdf).pvalue > 1e-3
    assert abs((w > 0).double().mean().item() - 0.5) < 0.01


def test_hyperbolic_default_is_orseau_theorem3():
    alpha, beta = orseau_range(eps_w=0.01, w_max=1.0)
    q = ((2 * 0.01 / 9) * (2 / 3)) ** 0.25
    assert alpha == pytest.approx(2 * 0.01 / 9 / q) and beta == pytest.approx(2 / 3 / q)
    w = draw("hyperbolic").abs()
    assert w.min() >= alpha * (1 - 1e-6) and w.max() <= beta * (1 + 1e-6)


@pytest.mark.parametrize("name", DISTRIBUTIONS.names())
def test_a_seed_draws_the_same_numbers_on_any_number_of_threads(name):
    """The frozen weights of a seed do not depend on torch's thread count (a sweep's
    ``--jobs-per-device 2`` runs its jobs on one thread each): hyperbolic's ``(β/α)^u`` over a
    tensor torch split among threads took the scalar ``pow`` for the entries at the end of each
    thread's share, one bit off the vectorised one."""
    threads = torch.get_num_threads()
    drawn = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            drawn.append(ln.sample_weights(name, (1001, 1003), 1003,
                                           torch.Generator().manual_seed(0)))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(drawn[0], w) for w in drawn[1:])



@pytest.mark.parametrize("name", DISTRIBUTIONS.names())
def test_a_seed_draws_the_same_float32_numbers_under_any_default_dtype(name):
    """Under ``torch.set_default_dtype(torch.float64)`` five of the six drew float64 tensors
    of other numbers than the float32 ones a layer of the same seed is built from (a layer
    draws under float32 itself); ``signed_constant`` drew float32 all along."""
    reference = ln.sample_weights(name, (50, 40), 40, torch.Generator().manual_seed(0))
    torch.set_default_dtype(torch.float64)
    try:
        drawn = ln.sample_weights(name, (50, 40), 40, torch.Generator().manual_seed(0))
    finally:
        torch.set_default_dtype(torch.float32)
    assert drawn.dtype == reference.dtype == torch.float32 and drawn.device.type == "cpu"
    assert torch.equal(drawn, reference)

@pytest.mark.parametrize("kw,match", [
    ({"alpha": 0.0}, "alpha=0.0"),
    ({"alpha": 2.0, "beta": 1.0}, "alpha=2.0, beta=1.0"),
    ({"alpha": "a", "beta": 1}, "hyperbolic alpha must be a finite number, got 'a'"),
    ({"alpha": 0.1, "beta": math.inf}, "hyperbolic beta must be a finite number, got inf"),
    ({"alpha": math.nan}, "hyperbolic alpha must be a finite number, got nan"),
    ({"alpha": 1e-300, "beta": 1e300}, "alpha=1e-300, beta=1e+300"),
    ({"alpha": 1e-30, "beta": 1e30}, "beta/alpha <= 3.4e+38 (float32)"),  # the ratio
    ({"alpha": 1e38, "beta": 1e39}, "alpha=1e+38, beta=1e+39"),  # beta past float32
    ({"alpha": 1e-50, "beta": 1e-49}, "alpha=1e-50, beta=1e-49"),  # alpha rounds to 0
])
def test_hyperbolic_bad_range(kw, match):
    """Each was drawn: as NaN or inf weights, zeros, or a comparison error naming no
    parameter."""
    with pytest.raises(ValueError, match=re.escape(match)):
        draw("hyperbolic", **kw)


@pytest.mark.parametrize("fan_in", [0, -1, 2.0, None])
def test_fan_in_must_be_a_positive_integer(fan_in):
    """Was ZeroDivisionError (0), "math domain error" (-1), or a silently used float."""
    with pytest.raises(ValueError, match=f"fan_in must be a positive integer, got {fan_in!r}"):
        ln.sample_weights("kaiming_normal", (3, 3), fan_in)


def test_unknown_init_lists_choices():
    with pytest.raises(ValueError) as err:
        ln.SubnetLinear(4, 4, init="xavier")
    msg = str(err.value)
    assert "'xavier'" in msg
    for name in ["uniform", "scaled_uniform", "kaiming_normal", "kaiming_uniform",
                 "signed_constant", "hyperbolic"]:
        assert name in msg


def test_layer_passes_init_kwargs():
    layer = ln.SubnetLinear(30, 20, init="hyperbolic", init_kwargs={"alpha": 0.5, "beta": 0.6})
    w = layer.structure.weight.weight.abs()
    assert w.min() >= 0.5 - 1e-6 and w.max() <= 0.6 + 1e-6


@pytest.mark.parametrize("below, said", [(2**64, "2**64"), (2**32, "2**32"), (10, "10")])
def test_check_seed_takes_0_to_below_minus_1_and_names_the_range(below, said):
    assert check_seed(0, below=below) == 0
    assert check_seed(below - 1, below=below) == below - 1
    for bad in (-1, below):
        with pytest.raises(ValueError, match=re.escape(f"seed must be in [0, {said}), got {bad}")):
            check_seed(bad, below=below)


@pytest.mark.parametrize("seed, below, error, said", [
    (np.int64(-2), 2**64, ValueError, "seed must be in [0, 2**64), got -2"),
    (np.uint64(2**63), 10, ValueError, "seed must be in [0, 10), got 9223372036854775808"),
    (np.float64(1.5), 2**64, TypeError, "seed must be an integer, got 1.5")])
def test_check_seed_names_a_numpy_seed_as_its_python_value(seed, below, error, said):
    """A numpy seed was named in numpy's form ("got np.int64(-2)"), not as the user wrote it."""
    with pytest.raises(error, match=f"^{re.escape(said)}$"):
        check_seed(seed, below=below)


def test_the_data_modules_seed_bound_is_seed_max_whatever_it_is(monkeypatch):
    """It was given bits=SEED_MAX.bit_length(), right only while SEED_MAX is 2**n - 1: a
    SEED_MAX of 10**6 let seeds up to 2**20 - 1 through."""
    monkeypatch.setattr("lotterynet.datamodule.SEED_MAX", 10**6)
    assert ln.TensorDataModule("mnist", seed=10**6).seed == 10**6
    with pytest.raises(ValueError, match=re.escape("seed must be in [0, 1000001), got 1000001")):
        ln.TensorDataModule("mnist", seed=10**6 + 1)
