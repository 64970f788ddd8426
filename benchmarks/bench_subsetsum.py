"""Benchmark of lotterynet.subsetsum.solve (issue 5). A script that prints; not a test.

(a) against scipy.optimize.milp (HiGHS) on the same instances at n = 21: time and error;
(b) all 397,000 weights of Pensia et al.'s FC2 (Experiment 1) at n = 21 on CPU;
(c) the same on CUDA if a GPU is present;
(d) da Cunha et al.'s scale: 2,572 LeNet5 conv weights at n = 30.
Instances mimic Experiment 1: targets ~ N(0, 0.05²) like trained weights, each with its own n
coefficients from U[min w, max w].

    PYTHONPATH=. python benchmarks/bench_subsetsum.py [--milp-instances 200] [--instances 397000]
"""

import os
import statistics
import time

import flags
import numpy as np
import torch

from lotterynet.machine import cpu_name
from lotterynet.subsetsum import solve


def instances(W, n, seed):
    g = torch.Generator().manual_seed(seed)
    targets = torch.randn(W, generator=g, dtype=torch.float64) * 0.05
    lo, hi = targets.min(), targets.max()
    return targets, lo + (hi - lo) * torch.rand(W, n, generator=g, dtype=torch.float64)


def milp_one(w, c):
    """min p + q  s.t.  c·b + p − q = w,  b ∈ {0,1}^n,  p, q ≥ 0  (so p + q = |w − c·b|)."""
    from scipy.optimize import Bounds, LinearConstraint, milp  # only (a) needs scipy

    n = len(c)
    res = milp(
        np.r_[np.zeros(n), 1.0, 1.0],
        constraints=LinearConstraint(np.r_[c, 1.0, -1.0][None], w, w),
        integrality=np.r_[np.ones(n), 0, 0],
        bounds=Bounds(np.zeros(n + 2), np.r_[np.ones(n), np.inf, np.inf]),
        options={"mip_rel_gap": 0.0},
    )
    b = np.round(res.x[:n])
    return abs(w - c @ b)


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def run(t, c):
    out = solve(t, c, progress=False)
    if t.is_cuda:
        torch.cuda.synchronize()
    return out


def compare_with_milp(n, W):
    """(a): the same instances through solve (one batch, best of 5) and milp, one by one."""
    targets, coeffs = instances(W, n, seed=0)
    solve(targets[:2], coeffs[:2])  # warm-up
    (_, _, ours), t_ours = min((timed(solve, targets, coeffs) for _ in range(5)),
                               key=lambda result: result[1])
    milp_err, milp_time = [], []
    milp_one(targets.numpy()[0], coeffs.numpy()[0])  # warm-up: scipy's import (~0.3 s)
    for w, c in zip(targets.numpy(), coeffs.numpy()):
        err, dt = timed(milp_one, w, c)
        milp_err.append(err)
        milp_time.append(dt)
    milp_err = torch.tensor(milp_err, dtype=torch.float64)
    print(f"\n(a) n={n}, {W} instances")
    print(f"  solve: {t_ours:.3f} s in one batch, best of 5 "
          f"({1e6 * t_ours / W:.0f} µs per instance)")
    print(f"  milp (HiGHS): {sum(milp_time):.1f} s, median {statistics.median(milp_time):.3f} s "
          f"per instance; time ratio milp/solve = {sum(milp_time) / t_ours:,.0f}x")
    print(f"  error: ours <= milp on {(ours <= milp_err + 1e-15).sum().item()}/{W} instances; "
          f"median ours {ours.median():.2e} vs milp {milp_err.median():.2e}; "
          f"max ours {ours.max():.2e} vs milp {milp_err.max():.2e}")


def main(argv=None):
    parser = flags.parser(__file__, __doc__)
    parser.add_argument("--milp-instances", type=flags.integer(0), default=200,
                        help="instances of (a), against scipy's milp; 0 skips (a) "
                        "(default: 200)")
    parser.add_argument("--instances", type=flags.integer(1), default=397_000,
                        help="instances of (b) and (c) (default: 397,000, FC2's weights)")
    parser.add_argument("--repeats", type=flags.integer(1), default=1,
                        help="(b)/(c) timed this many times; the median is reported "
                        "(default: 1)")
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_name()}, torch threads: {torch.get_num_threads()}, "
          f"torch {torch.__version__}, load average before start: {os.getloadavg()[0]:.1f}")

    # (a) side by side with HiGHS
    n = 21
    if args.milp_instances > 0:
        compare_with_milp(n, args.milp_instances)

    # (b) all of FC2 on CPU, (c) on CUDA
    targets, coeffs = instances(args.instances, n, seed=1)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for label, device in zip("bc", devices):
        t, c = targets.to(device), coeffs.to(device)
        run(t[:2], c[:2])  # warm-up
        times = []
        for _ in range(args.repeats):
            (_, _, err), dt = timed(run, t, c)
            times.append(dt)
        dt = statistics.median(times)
        name = torch.cuda.get_device_name() if device == "cuda" else cpu_name()
        print(f"\n({label}) n={n}, {args.instances:,} instances on {device} ({name}): {dt:.1f} s "
              f"median of {len(times)} ({', '.join(f'{x:.1f}' for x in times)}; "
              f"{1e6 * dt / args.instances:.0f} µs per instance); error median {err.median():.2e},"
              f" max {err.max():.2e}")
    if not torch.cuda.is_available():
        print("\n(c) CUDA not available: skipped")

    # (d) da Cunha et al.'s LeNet5 conv weights at n = 30
    targets, coeffs = instances(2572, 30, seed=2)
    (_, _, err), dt = timed(run, targets, coeffs)
    print(f"\n(d) n=30, 2,572 instances on cpu: {dt:.1f} s; error median {err.median():.2e}, "
          f"max {err.max():.2e}")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
