"""Training step with and without ``torch.compile`` (the Lightning/W&B issue).

One SGD step (forward, backward, update; the masks are re-ranked every step) of
* LeNet5 with subset-sum ReLU layers (the paper's model, ``build_model``), batch 64, 28×28;
* timm's ``resnet10t`` converted with ``lotterynet.convert`` (dense edge-popup), batch 32,
  64×64 inputs.
Eager against ``torch.compile(model)`` (inductor, ``fullgraph=True``: a graph break would
fail), medians of round-robin samples after the compile, measured in one run; prints the
compile time, both step times and their ratio.

    python benchmarks/bench_compile.py [--device cuda] [--repeats 20]
"""

from __future__ import annotations

import time

import flags
import timm
import torch
import torch.nn.functional as F
from bench_layers import median_times, sync

import lotterynet as ln
from lotterynet.machine import cpu_name, keep_freed_memory
from lotterynet.models import build_model


def lenet5():
    model = build_model("lenet5", structure="subsetsum", activation="relu", sparsity=0.5, seed=0)
    return model, (64, 1, 28, 28)


def resnet10t():
    model = ln.convert(timm.create_model("resnet10t", num_classes=10), sparsity=0.5, seed=0)
    return model, (32, 3, 64, 64)


MODELS = {"lenet5 subsetsum/relu": lenet5, "timm resnet10t, converted": resnet10t}


def make_step(model, shape, device):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    x = torch.randn(shape, device=device)
    y = torch.randint(0, 10, (shape[0],), device=device)

    def step():
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()

    return step


def main(argv=None) -> None:
    parser = flags.parser(__file__, __doc__)
    parser.add_argument("--device", type=flags.device, default="cpu",
                        help="torch device: cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--repeats", type=flags.integer(1), default=20,
                        help="timed steps of each form; the median is reported (default: 20)")
    args = parser.parse_args(argv)
    keep_freed_memory()
    device = torch.device(args.device)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"{cpu_name()} ({torch.get_num_threads()} threads)")
    print(f"device: {name}, torch {torch.__version__}")
    print("| model | compile s | eager ms | compiled ms | compiled / eager |")
    print("|---|---|---|---|---|")
    for label, make in MODELS.items():
        eager_model, shape = make()
        compiled_model, _ = make()
        eager = make_step(eager_model.to(device).train(), shape, device)
        compiled = make_step(torch.compile(compiled_model.to(device).train(), fullgraph=True),
                             shape, device)
        sync(device)
        start = time.perf_counter()
        compiled()  # the compile
        sync(device)
        compile_s = time.perf_counter() - start
        times = median_times({"eager": eager, "compiled": compiled}, device, args.repeats)
        print(f"| {label} | {compile_s:.1f} | {times['eager'] * 1e3:.2f} | "
              f"{times['compiled'] * 1e3:.2f} | {times['compiled'] / times['eager']:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
