"""Cost of the subset-sum layer and of the mask.

Prints medians and ratios measured in the same run:
* the layer target: a subset-sum step (784 -> 500, 5 pairs) against the dense layer with the
  same maskable count (784 x 2505), relu and identity, batch 64 and 256, with and without an
  update, single and as a stack of four members (``--target-only`` prints just this);
* one training step (mask, forward, backward) of SubnetLinear(784, 500, subsetsum, pairs=5)
  against a dense SubnetLinear(784, 2500) (about the same maskable count), a dense
  SubnetLinear(784, 500), and the literal computation (the paper's repeat-and-multiply for
  shared=True, the full batch x out x in x n intermediate for shared=False), with the extra
  peak memory of a step (CUDA: max_memory_allocated; CPU: peak RSS of a fresh process);
* the top-k mask against a full-sort reference on 1M and 10M scores.

    python benchmarks/bench_layers.py [--device cuda] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import flags
import torch
import torch.nn.functional as F

import lotterynet as ln
from lotterynet.cuda_graphs import StepGraphs
from lotterynet.machine import cpu_name, keep_freed_memory
from lotterynet.topk import topk_mask

D_IN, D_OUT, PAIRS = 784, 500, 5


def literal_forward(layer: ln.SubnetLinear, x: torch.Tensor) -> torch.Tensor:
    """Figure 1c computed as written: every hidden unit materialised."""
    s = layer.structure
    u, v = s.u(), s.v()  # masked coefficients, (in, n) or (out, in, n); (out, in, n)
    phi = F.relu if s.activation == "relu" else (lambda z: z)
    if s.shared:  # repeat each input n times, scale, one GEMM over in*n hidden units
        hidden = phi(x.repeat_interleave(PAIRS, dim=1) * u.reshape(1, -1))
        return hidden @ v.reshape(D_OUT, -1).T
    hidden = phi(x[:, None, :, None] * u[None])  # (batch, out, in, n)
    return (hidden * v[None]).sum((2, 3))


def variants(activation: str):
    sub = dict(structure="subsetsum", pairs=PAIRS, activation=activation)
    return {
        "subsetsum": lambda: (ln.SubnetLinear(D_IN, D_OUT, **sub, seed=0), None),
        "subsetsum-unshared": lambda: (ln.SubnetLinear(D_IN, D_OUT, **sub, shared=False, seed=0),
                                       None),
        "dense 784x2500": lambda: (ln.SubnetLinear(D_IN, 2500, seed=0), None),
        "dense 784x500": lambda: (ln.SubnetLinear(D_IN, D_OUT, seed=0), None),
        "literal shared": lambda: (ln.SubnetLinear(D_IN, D_OUT, **sub, seed=0), literal_forward),
        "literal unshared": lambda: (ln.SubnetLinear(D_IN, D_OUT, **sub, shared=False, seed=0),
                                     literal_forward),
    }


def make_step(name, activation, batch, device):
    layer, forward = variants(activation)[name]()
    layer.to(device)
    x = torch.randn(batch, D_IN, device=device)

    def step():
        layer.zero_grad(set_to_none=True)
        y = forward(layer, x) if forward else layer(x)
        y.square().mean().backward()
        with torch.no_grad():  # an SGD update, so the mask is recomputed every step
            for p in layer.parameters():
                if p.grad is not None:
                    p.sub_(1e-3 * p.grad)

    return step


WIDE_OUT = 2505  # 784 x 2505 = 5 x 784 x (1 + 500): the subset-sum layer's maskable count
STACK_SPARSITIES = (0.5, 0.75, 0.9, 0.95)


def make_target_step(kind, activation, batch, device, update: bool, stacked: bool,
                     graphed: bool = False):
    """One step of the subset-sum layer (``kind="subsetsum"``) or of the dense layer with the
    same maskable count (``"wide"``): forward + backward, with or without an SGD update (without
    one the scores do not change, so the cached mask is reused); ``stacked``: a stack of four
    members at four sparsities, one forward and backward for all of them; ``graphed``: the
    forward and backward replayed from a CUDA graph, as training steps are
    (:class:`lotterynet.cuda_graphs.StepGraphs`; eager on the CPU)."""
    def layer(sparsity):
        if kind == "subsetsum":
            return ln.SubnetLinear(D_IN, D_OUT, structure="subsetsum", pairs=PAIRS,
                                   activation=activation, sparsity=sparsity, seed=0)
        return ln.SubnetLinear(D_IN, WIDE_OUT, sparsity=sparsity, seed=0)

    sparsities = STACK_SPARSITIES if stacked else STACK_SPARSITIES[:1]
    model = ln.StackedModel([layer(s) for s in sparsities]).to(device)
    scores = [p for p in model.parameters() if p.requires_grad]
    x = torch.randn(batch, D_IN, device=device)
    graphs = StepGraphs(graphed)

    def step():
        for p in scores:
            p.grad = None
        sum(y.square().mean() for y in graphs(model, (model,), x)).backward()
        if update:
            with torch.no_grad():
                torch._foreach_add_(scores, [p.grad for p in scores], alpha=-1e-3)

    return step


def target_ratios(device, repeats: int, members=(False, True), updates=(True, False),
                  activations=("relu", "identity"), batches=(64, 256), graphed: bool = False):
    """The layer target, one dict per case: ``members``, ``update``, ``activation``, ``batch``,
    median seconds of a ``subsetsum`` and a ``wide`` step, and their ``ratio``."""
    for stacked in members:
        for update in updates:
            for activation in activations:
                for batch in batches:
                    steps = {kind: make_target_step(kind, activation, batch, device, update,
                                                    stacked, graphed)
                             for kind in ("subsetsum", "wide")}
                    times = median_times(steps, device, repeats)
                    yield dict(members=len(STACK_SPARSITIES) if stacked else 1, update=update,
                               activation=activation, batch=batch, **times,
                               ratio=times["subsetsum"] / times["wide"])


def target_table(device, repeats: int) -> None:
    print("\n## subset-sum layer against the dense layer of equal maskable count "
          f"(784x{WIDE_OUT}), median ms; target <= 1.25x")
    print("| members | update | activation | batch | subsetsum ms | wide ms | ratio | target |")
    print("|---|---|---|---|---|---|---|---|")
    for r in target_ratios(device, repeats):
        print(f"| {r['members']} | {'yes' if r['update'] else 'no'} | {r['activation']} | "
              f"{r['batch']} | {r['subsetsum'] * 1e3:.2f} | {r['wide'] * 1e3:.2f} | "
              f"{r['ratio']:.2f} | {'met' if r['ratio'] <= 1.25 else 'NOT met'} |", flush=True)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def median_times(fns: dict, device, repeats: int) -> dict[str, float]:
    """Round-robin over the variants (so load drift hits all alike); slow ones (> 1 s a call)
    stop after 3 samples."""
    samples = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for i in range(repeats):
        for name, fn in fns.items():
            if i < 3 or statistics.median(samples[name]) < 1.0:
                samples[name].append(timed(fn, device))
    return {name: statistics.median(ts) for name, ts in samples.items()}


def peak_memory(name, activation, batch, device) -> float:
    """Extra peak memory (MiB) of one training step beyond the model and input."""
    if device.type == "cuda":
        step = make_step(name, activation, batch, device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    out = subprocess.run([sys.executable, __file__, "--rss", json.dumps([name, activation, batch])],
                         capture_output=True, text=True, check=True)
    return float(out.stdout)


def peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it is not inherited from the
    parent across exec)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))


def rss_child(args):
    """In a fresh process: peak RSS after setup, then after one step."""
    name, activation, batch = json.loads(args)
    step = make_step(name, activation, batch, torch.device("cpu"))
    base = peak_rss_kib()
    step()
    print((peak_rss_kib() - base) / 1024)


def full_sort_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The reference: sort all |scores|, keep the k largest."""
    order = scores.abs().flatten().sort(descending=True).indices
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    mask[order[:k]] = True
    return mask.view_as(scores)


def check_keeps_largest(mask: torch.Tensor, scores: torch.Tensor, k: int) -> None:
    """``mask`` keeps ``k`` of the largest ``|scores|``: ``k`` entries, none smaller than an
    entry it drops. Which of the scores tied at the threshold are kept is free (``topk_mask``
    keeps the lowest indices, a full sort any), so masks are not compared entry by entry."""
    magnitudes, keep = scores.abs().flatten(), mask.flatten()
    kept, dropped = magnitudes[keep], magnitudes[~keep]
    assert kept.numel() == k, f"the mask keeps {kept.numel()} scores, not {k}"
    assert not (kept.numel() and dropped.numel()) or kept.min() >= dropped.max(), \
        f"the mask drops a score of {dropped.max():g} and keeps one of {kept.min():g}"


def mask_times(numel: int, device, repeats: int) -> tuple[float, float]:
    """Median seconds of the top-k mask and of the full-sort reference at sparsity 0.5 (the mask
    checked first), on seeded random scores."""
    scores = torch.randn(numel, generator=torch.Generator(device).manual_seed(0), device=device)
    k = numel // 2
    check_keeps_largest(topk_mask(scores.abs(), k), scores, k)
    times = median_times({"fast": lambda: topk_mask(scores.abs(), k),
                          "slow": lambda: full_sort_mask(scores, k)}, device, repeats)
    return times["fast"], times["slow"]


def main(argv=None):
    parser = flags.parser(__file__, __doc__)
    parser.add_argument("--device", type=flags.device, default="cpu",
                        help="torch device: cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--repeats", type=flags.integer(1), default=20,
                        help="timed calls of each variant (3 of one slower than 1 s); the median "
                        "is reported (default: 20)")
    parser.add_argument("--target-only", action="store_true",
                        help="only the subset-sum vs wide table (the layer target)")
    parser.add_argument("--rss", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    keep_freed_memory()  # as train.py does
    if args.rss:
        return rss_child(args.rss)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"device: {name}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    target_table(device, args.repeats)
    if args.target_only:
        return

    print("\n## training step (mask + forward + backward + update), median ms")
    print("| activation | batch | variant | ms | x subsetsum | extra peak MiB |")
    print("|---|---|---|---|---|---|")
    for activation in ["relu", "identity"]:
        for batch in [64, 256]:
            steps = {v: make_step(v, activation, batch, device) for v in variants(activation)}
            times = median_times(steps, device, args.repeats)
            del steps
            for variant, t in times.items():
                mem = peak_memory(variant, activation, batch, device)
                print(f"| {activation} | {batch} | {variant} | {t * 1e3:.2f} "
                      f"| {t / times['subsetsum']:.2f} | {mem:.1f} |", flush=True)

    print("\n## mask of a score tensor at sparsity 0.5, median ms")
    print("| elements | top-k selection | full sort | speed-up |")
    print("|---|---|---|---|")
    for numel in [10**6, 10**7]:
        fast, slow = mask_times(numel, device, args.repeats)
        print(f"| {numel:,} | {fast * 1e3:.1f} | {slow * 1e3:.1f} | {slow / fast:.1f}x |")


if __name__ == "__main__":
    main()
