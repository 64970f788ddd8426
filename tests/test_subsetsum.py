import itertools
import math
import warnings

import pytest
import torch

from conftest import requires_cuda
from lotterynet.subsetsum import MEMORY_BUDGET, solve


def brute_force(targets, coeffs, k=None):
    """Smallest |t − Σ_{i∈S} c_i| over all subsets S (of size k if given), one at a time."""
    n = coeffs.shape[1]
    if k is None:
        patterns = itertools.product((0, 1), repeat=n)
        subsets = [[i for i, b in enumerate(bits) if b] for bits in patterns]
    else:
        subsets = [list(s) for s in itertools.combinations(range(n), k)]
    best = []
    for t, c in zip(targets.tolist(), coeffs.tolist()):
        best.append(min(abs(t - math.fsum(c[i] for i in s)) for s in subsets))
    return torch.tensor(best, dtype=torch.float64)


def instances(W, n, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    coeffs = (torch.rand(W, n, generator=g, dtype=torch.float64) * 2 - 1) * scale
    targets = (torch.rand(W, generator=g, dtype=torch.float64) * 2 - 1) * scale
    return targets, coeffs


def assert_consistent(targets, coeffs, selection, approx, error):
    assert selection.dtype == torch.bool and selection.shape == coeffs.shape
    sums = torch.tensor([math.fsum(c[s].tolist()) for c, s in zip(coeffs, selection)],
                        dtype=torch.float64)
    torch.testing.assert_close(approx, sums, rtol=0, atol=1e-12)
    torch.testing.assert_close(error, (targets - approx).abs(), rtol=0, atol=0)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 10, 13, 14])
def test_matches_brute_force(n):
    targets, coeffs = instances(24, n, seed=n, scale=3.0)
    selection, approx, error = solve(targets, coeffs)
    assert_consistent(targets, coeffs, selection, approx, error)
    torch.testing.assert_close(error, brute_force(targets, coeffs), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [1, 4, 9, 12])
def test_fixed_size_matches_brute_force(n):
    targets, coeffs = instances(12, n, seed=100 + n, scale=2.0)
    for k in range(n + 1):
        selection, approx, error = solve(targets, coeffs, k)
        assert (selection.sum(1) == k).all()
        assert_consistent(targets, coeffs, selection, approx, error)
        torch.testing.assert_close(error, brute_force(targets, coeffs, k), rtol=0, atol=1e-12)


def test_exact_target_is_hit():
    # targets that are sums of 6 of the 18 coefficients must be found with (near) zero error
    _, coeffs = instances(200, 18, seed=7)
    keys = torch.rand(coeffs.shape, generator=torch.Generator().manual_seed(8))
    chosen = keys.argsort(1).argsort(1) < 6
    targets = (coeffs * chosen).sum(1)
    for k in (None, 6):
        selection, _, error = solve(targets, coeffs, k)
        assert error.max() < 1e-12
        assert k is None or (selection.sum(1) == k).all()


def test_chunking_gives_the_same_answer():
    targets, coeffs = instances(301, 16, seed=3)
    whole = solve(targets, coeffs, chunk_size=301)
    for chunk_size in (1, 7, 64):
        parts = solve(targets, coeffs, chunk_size=chunk_size, progress=False)
        for a, b in zip(whole, parts):
            assert torch.equal(a, b)
    whole_k = solve(targets, coeffs, 5, chunk_size=301)
    parts_k = solve(targets, coeffs, 5, chunk_size=13, progress=False)
    for a, b in zip(whole_k, parts_k):
        assert torch.equal(a, b)


def test_accepts_float32_and_returns_float64():
    targets, coeffs = instances(10, 8, seed=5)
    _, approx, error = solve(targets.float(), coeffs.float())
    assert approx.dtype == error.dtype == torch.float64
    torch.testing.assert_close(
        error, brute_force(targets.float().double(), coeffs.float().double()), rtol=0, atol=1e-12
    )


def test_python_lists_are_read_as_float64():
    """A list's floats are float64: torch's default float32 rounded 0.1 + 1e-12 to 0.1 (error 0)
    and 1e39 to inf (refused as not finite)."""
    _, _, error = solve([0.1 + 1e-12], [[0.1]])
    assert error.item() == pytest.approx(1e-12, rel=1e-3)
    _, approx, _ = solve([1e39], [[1e39, 1.0]])
    assert approx.item() == 1e39
    # a list of tensors, one requiring grad (numpy refuses it), is read as torch reads it
    with warnings.catch_warnings():  # (torch's own: a tensor that requires grad made a scalar)
        warnings.simplefilter("ignore", UserWarning)
        _, _, error = solve([torch.tensor(1.0, requires_grad=True)], [[torch.tensor(0.25)]])
    assert error.item() == 0.75


def test_empty_batch():
    selection, approx, error = solve(torch.zeros(0), torch.zeros(0, 5))
    assert selection.shape == (0, 5) and approx.shape == error.shape == (0,)


def test_n_32_runs_within_budget():
    """2^32 subsets: random targets are met to ~1e-9 (the gaps between sums), planted ones (sums
    of 11 of the 32 coefficients) exactly — a search that missed a side or a term would not."""
    targets, coeffs = instances(3, 32, seed=11)
    selection, approx, error = solve(targets, coeffs)
    assert_consistent(targets, coeffs, selection, approx, error)
    assert error.max() < 1e-7
    chosen = torch.rand(coeffs.shape, generator=torch.Generator().manual_seed(12)).argsort(1) < 11
    planted = (coeffs * chosen).sum(1)
    assert solve(planted, coeffs)[2].max() < 1e-12


@pytest.mark.parametrize(
    "targets, coeffs, kwargs, match",
    [
        (torch.zeros(3, 1), torch.zeros(3, 4), {}, r"targets must be 1-D.*\(3, 1\)"),
        (torch.zeros(3), torch.zeros(3), {}, r"coeffs must have shape \(W, n\) = \(3, n\).*\(3,\)"),
        (torch.zeros(3), torch.zeros(2, 4), {}, r"coeffs must have shape.*\(2, 4\)"),
        (torch.tensor([0.0, math.nan]), torch.zeros(2, 4), {},
         r"targets\[1\] = nan is not finite; targets must hold finite numbers"),
        (torch.zeros(2), torch.tensor([[0.0, math.inf]] * 2), {}, r"coeffs\[0, 1\] = inf is not"),
        (torch.zeros(2), torch.full((2, 3), 1e308, dtype=torch.float64), {},
         r"targets\[0\].*overflow"),
        (torch.zeros(2), torch.zeros(2, 4), {"k": 5}, r"k must be.*\[0, 4\].*k=5"),
        (torch.zeros(2), torch.zeros(2, 4), {"k": -1}, r"k must be.*\[0, 4\].*k=-1"),
        (torch.zeros(2), torch.zeros(2, 4), {"k": 2.0}, r"k must be.*k=2\.0"),
        (torch.zeros(2), torch.zeros(2, 4), {"chunk_size": 0}, r"chunk_size.*>= 1.*chunk_size=0"),
        (torch.zeros(1), torch.zeros(1, 60), {}, r"n=60 .*MiB per instance.*use n <= \d+"),
        (torch.zeros(2, dtype=torch.bool), torch.zeros(2, 4), {}, r"targets.*dtype torch.bool"),
        ("a", torch.zeros(2, 4), {}, r"targets must be numbers .* got str 'a'"),
        (torch.zeros(2), [[1, "x"]] * 2, {}, r"coeffs must be numbers .* got list"),
        (torch.zeros(2, device="meta"), torch.zeros(2, 4), {}, r"targets is on the meta device"),
    ],
)
def test_bad_input_raises(targets, coeffs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        solve(targets, coeffs, **kwargs)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_integer_instances_are_solved_as_float64(dtype):
    """Integer weights (quantised networks, hand-made examples) of any width: 7 = 3 + 4 of
    {3, 4, 6}, 2 is nearest to 3 alone."""
    selection, approx, error = solve(torch.tensor([7, 2], dtype=dtype),
                                     torch.tensor([[3, 4, 6], [3, 4, 6]], dtype=dtype))
    assert selection.tolist() == [[True, True, False], [True, False, False]]
    assert approx.dtype == torch.float64 and error.tolist() == [0.0, 1.0]


def test_memory_budget_bounds_the_default_chunk(monkeypatch):
    from lotterynet import subsetsum

    calls = []
    real = subsetsum._solve_chunk
    monkeypatch.setattr(subsetsum, "_solve_chunk",
                        lambda t, *a: calls.append(len(t)) or real(t, *a))
    targets, coeffs = instances(5000, 20, seed=2)
    solve(targets, coeffs, progress=False)
    assert len(calls) > 1 and max(calls) * subsetsum._bytes_per_instance(20) <= MEMORY_BUDGET
    assert sum(calls) == 5000


@requires_cuda
def test_cuda_matches_cpu():
    targets, coeffs = instances(500, 20, seed=9)
    cpu = solve(targets, coeffs)
    gpu = solve(targets.cuda(), coeffs.cuda())
    assert all(x.device.type == "cuda" for x in gpu)
    torch.testing.assert_close(gpu[2].cpu(), cpu[2], rtol=0, atol=1e-12)
    assert_consistent(targets, coeffs, *(x.cpu() for x in gpu))
    gpu_k = solve(targets.cuda(), coeffs.cuda(), k=7)
    torch.testing.assert_close(gpu_k[2].cpu(), solve(targets, coeffs, k=7)[2], rtol=0, atol=1e-12)
