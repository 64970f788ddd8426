"""Would batching a stack's members into (S, …) tensors make its member step fast enough for the
stacked-sweeps issue's ≥ 6× target? Measured, not built.

The stack today runs each member's own layers one after another (``StackedModel``): per step
and member ~100 small ops over its score tensors. The alternative: every member's scores of one
tensor stacked into one ``(S, …)`` tensor, so each op of the step (selection, masked product,
collapse, products, update) is one dispatch for all members. This script times one training
step of the FC part of LeNet5 (subset-sum identity, 5 pairs, batch 64, the paper's 14
sparsities, one seed: the frozen weights are shared) both ways, from the same scores:

* ``members``: the real members (``build_model``), each its own forward, one backward of the
  summed loss, each its own fused SGD step (what a stack's step does after the shared convs);
* ``batched``: the same math on (S, …) tensors — per-member exact top-k by a quickselect over
  the band around last step's threshold, masked products, the collapse, one batched product
  per layer, SGD with momentum and weight decay per member; its first masks are checked
  against the members'.

    python benchmarks/bench_member_batching.py [--threads 1 2] [--steps 100]
"""

from __future__ import annotations

import flags
import torch
import torch.nn.functional as F
from bench_layers import median_times  # the benchmarks beside this file (sys.path[0])
from bench_stack import PAPER_SPARSITIES

from lotterynet.machine import cpu_name
from lotterynet.masking import _MaskedProduct  # the layers' straight-through w ⊙ m
from lotterynet.models import build_model
from lotterynet.optim import OPTIMIZERS, trainable_parameters

RECIPE = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)


def batched_masks(scores: torch.Tensor, ks: list[int], hints: list) -> torch.Tensor:
    """0/1 masks of each row's own top ``ks[r]`` magnitudes; with hints, a quickselect over
    each row's band around its last threshold (the exactness argument of
    ``masking.kth_largest_near``; a row whose band misses falls back to a full quickselect)."""
    a = scores.detach().abs().flatten(1)
    n = a.shape[1]
    thresholds = [None] * len(ks)
    if all(h is not None for h in hints):
        h = torch.tensor(hints).unsqueeze(1)
        above_hi = torch.gt(a, h * 1.01, out=torch.empty_like(a))
        above = above_hi.sum(1).tolist()
        band = torch.ge(a, h * 0.99, out=torch.empty_like(a)).sub_(above_hi).bool()
        rows, cols = band.nonzero(as_tuple=True)
        parts = a[rows, cols].split(torch.bincount(rows, minlength=len(ks)).tolist())
        for r, part in enumerate(parts):
            need = ks[r] - int(above[r])
            if 0 < need <= part.numel():
                thresholds[r] = part.kthvalue(part.numel() - need + 1).values
    for r, t in enumerate(thresholds):
        if t is None:
            thresholds[r] = a[r].kthvalue(n - ks[r] + 1).values
        hints[r] = float(thresholds[r])
    cut = torch.stack(thresholds).unsqueeze(1)
    return torch.ge(a, cut, out=torch.empty_like(a)).view_as(scores)


class Batched:
    """The FC part of S LeNet5 subset-sum (identity) members as (S, …) score tensors."""

    def __init__(self, fcs: list[torch.nn.Module]):
        self.layers = []
        for position in range(len(subnet_layers(fcs[0]))):
            layer = []
            for name in ("v", "u"):
                tensors = [getattr(subnet_layers(fc)[position].structure, name) for fc in fcs]
                weight = tensors[0].weight
                assert all(torch.equal(t.weight, weight) for t in tensors)  # one seed: shared
                scores = torch.stack([t.scores.detach() for t in tensors]).requires_grad_()
                layer.append(dict(weight=weight, scores=scores, ks=[t.k for t in tensors],
                                  hints=[None] * len(tensors),
                                  buffer=torch.zeros_like(scores)))
            self.layers.append(layer)
        self.lr = torch.full((len(fcs),), RECIPE["lr"])

    def masks(self):
        return [[batched_masks(t["scores"], t["ks"], t["hints"]) for t in layer]
                for layer in self.layers]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        h = x
        for i, ((v, u), (mv, mu)) in enumerate(zip(self.layers, self.masks())):
            v_eff = _MaskedProduct.apply(v["scores"], v["weight"], mv)  # (S, out, in, n)
            u_eff = _MaskedProduct.apply(u["scores"], u["weight"], mu)  # (S, in, n)
            n = v_eff.shape[-1]
            w = ((v_eff * u_eff.unsqueeze(1)).flatten(0, -2) @ v_eff.new_ones(n)).view(
                v_eff.shape[:-1])
            h = torch.matmul(h, w.transpose(1, 2))
            if i < len(self.layers) - 1:
                h = h.relu()
        S, B = h.shape[:2]
        loss = F.cross_entropy(h.reshape(S * B, -1), y.repeat(S), reduction="sum") / B
        loss.backward()
        with torch.no_grad():
            for t in (t for layer in self.layers for t in layer):
                p, g = t["scores"], t["scores"].grad.add_(t["scores"], alpha=RECIPE[
                    "weight_decay"])
                t["buffer"].mul_(RECIPE["momentum"]).add_(g)
                p.sub_(t["buffer"] * self.lr.view(-1, *[1] * (p.ndim - 1)))
                p.grad = None


def subnet_layers(fc: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in fc if hasattr(m, "structure")]


def members_step(fcs, optimizers, x, y) -> None:
    loss = sum(F.cross_entropy(fc(x), y) for fc in fcs)
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()
        optimizer.zero_grad()


def same_up_to_ties(tensor, batched: torch.Tensor) -> bool:
    """The layer's mask and the batched one agree but where the batched threshold mask also
    keeps scores tied with its threshold (the layer keeps exactly k of them)."""
    differ = tensor.mask(torch.float32) != batched
    tied = tensor.scores.detach().abs() == tensor.scores.detach().abs()[batched.bool()].min()
    return bool(tied[differ].all())


def measure(threads: int, steps: int) -> tuple[float, float]:
    """Median ms per step of the 14 members, and of the batched form, on ``threads``."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    fcs = [build_model("lenet5", structure="subsetsum", activation="identity", sparsity=s,
                       seed=0)[7:] for s in PAPER_SPARSITIES]  # after the convs and flatten
    x, y = torch.randn(64, 400).relu(), torch.randint(0, 10, (64,))
    batched = Batched(fcs)  # the members' initial scores, before any step
    for s, fc in enumerate(fcs):  # the same masks (a full quickselect at the first call)
        for layer, (mv, mu) in zip(subnet_layers(fc), batched.masks()):
            assert same_up_to_ties(layer.structure.v, mv[s])
            assert same_up_to_ties(layer.structure.u, mu[s])
    optimizers = [OPTIMIZERS.get("sgd")(trainable_parameters(fc), **RECIPE) for fc in fcs]
    seconds = median_times({"members": lambda: members_step(fcs, optimizers, x, y),
                            "batched": lambda: batched.step(x, y)}, torch.device("cpu"), steps)
    return 1e3 * seconds["members"], 1e3 * seconds["batched"]


def main(argv=None) -> None:
    parser = flags.parser(__file__, __doc__)
    parser.add_argument("--threads", type=flags.integer(1), nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=flags.integer(1), default=100)
    args = parser.parse_args(argv)
    S = len(PAPER_SPARSITIES)
    print(f"device: {cpu_name()}, torch {torch.__version__}; LeNet5 FC part, subset-sum "
          f"identity, batch 64, {S} members, medians of {args.steps} steps, the two "
          f"alternating")
    print("| threads | members, ms/step | batched, ms/step | per member: members / batched "
          "| batched / members |")
    print("|---|---|---|---|---|")
    for threads in args.threads:
        reference, candidate = measure(threads, args.steps)
        print(f"| {threads} | {reference:.1f} | {candidate:.1f} | {reference / S:.2f} / "
              f"{candidate / S:.2f} ms | {candidate / reference:.2f} |")


if __name__ == "__main__":
    main()
