"""A stack's members run as one against one by one: ``StackedModel(batched=True)`` (every
member's masks of a tensor from one sort, one ``torch.func.vmap`` of the members' forward over
their stacked scores) against ``batched=False`` (each member its own selection and forward).

One training step of LeNet5's layers after its frozen convs (subset-sum identity, 5 pairs,
batch 64, the paper's 14 sparsities, one seed: the frozen weights are shared), as
``StackModule`` steps: the stack's forward, every member's loss in one op, one backward of
their sum, each member's own SGD step. Per form: the median time of a step (the two forms
alternating) and the number of top-level ops the eager step dispatches (torch profiler), each
of which is at least one kernel launch on a GPU. On CUDA the timed steps are graphed as a
run's are (``--no-graphs``: eager).

    python benchmarks/bench_member_batching.py [--device cuda] [--threads 1 2] [--steps 100]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import flags
import torch
from bench_layers import median_times  # the benchmarks beside this file (sys.path[0])
from bench_stack import PAPER_SPARSITIES
from torch.profiler import profile

from lotterynet.cuda_graphs import StepGraphs
from lotterynet.machine import cpu_name
from lotterynet.models import build_model
from lotterynet.optim import OPTIMIZERS, trainable_parameters
from lotterynet.stack_model import StackedModel
from lotterynet.stack_module import member_losses


def stack_step(members: int, batched: bool, device: torch.device, graphed: bool = True
               ) -> Callable[[], None]:
    """One training step of a stack of LeNet5's layers after the frozen convs (subset-sum
    identity, the paper's first ``members`` sparsities, batch 64), graphed as a run's steps
    are where a graph may be used (or not); ``batched``: the members run as one or one by
    one. The step's ``stack`` and ``graphs`` are attributes of it (what ran: batched or not,
    graphed or not)."""
    stack = StackedModel([build_model("lenet5", structure="subsetsum", activation="identity",
                                      sparsity=s, seed=0)[7:]
                          for s in PAPER_SPARSITIES[:members]], batched=batched).to(device)
    optimizers = [OPTIMIZERS.get("sgd")(trainable_parameters(m), lr=0.01, momentum=0.9,
                                        weight_decay=5e-4) for m in stack.members]
    graphs = StepGraphs(enabled=graphed)
    x, y = torch.randn(64, 400, device=device), torch.arange(64, device=device) % 10

    def step():
        logits = torch.stack(graphs(stack, stack.members, x))
        member_losses(logits, y).sum().backward()  # as StackModule's step
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    step.stack, step.graphs = stack, graphs
    return step


def dispatched_ops(step: Callable[[], None]) -> int:
    """Top-level ops of one call of ``step`` (after a warm-up call)."""
    step()
    with profile() as prof:
        step()
    return sum(1 for e in prof.events() if e.cpu_parent is None)


def main(argv=None) -> None:
    parser = flags.parser(__file__, __doc__)
    parser.add_argument("--device", type=flags.device, default="cpu",
                        help="torch device: cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--threads", type=flags.integer(1), nargs="+", default=[1, 2],
                        help="torch CPU threads, one table row each (default: 1 2)")
    parser.add_argument("--steps", type=flags.integer(1), default=100,
                        help="timed steps of each form; the median is reported (default: 100)")
    parser.add_argument("--graphs", action=argparse.BooleanOptionalAction, default=True,
                        help="on CUDA, replay the steps from CUDA graphs as a run's are "
                        "(--no-graphs: eager) (default: graphs)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    S = len(PAPER_SPARSITIES)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"device: {name}, torch {torch.__version__}; LeNet5 FC part, subset-sum identity, "
          f"batch 64, {S} members, medians of {args.steps} steps, the two forms alternating")
    print("| threads | one by one, ms/step | batched, ms/step | batched / one by one "
          "| ops a step: one by one / batched |")
    print("|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        steps = {batched: stack_step(S, batched, device, args.graphs)
                 for batched in (False, True)}
        ops = {batched: dispatched_ops(stack_step(S, batched, device, graphed=False))
               for batched in (False, True)}
        ms = {k: 1e3 * v for k, v in median_times(steps, device, args.steps).items()}
        print(f"| {threads} | {ms[False]:.1f} | {ms[True]:.1f} | {ms[True] / ms[False]:.2f} "
              f"| {ops[False]:,} / {ops[True]:,} |")


if __name__ == "__main__":
    main()
