"""Ticket sizes: a ticket (bit-packed masks + trained tensors + spec) against the float32
state_dict of the plain model it stands for, and against the subnet model's own state_dict
(frozen weights + float scores, what public edge-popup code saves).

    PYTHONPATH=. python benchmarks/bench_tickets.py [--sparsity 0.5]

Each ticket is also loaded back and checked for bit-identical outputs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import flags
import torch
from torch import nn

import lotterynet as ln
from lotterynet import timm_models
from lotterynet.models import MODELS, build_model
from lotterynet.ticket import load_ticket, save_ticket


@MODELS.register("bench_fc2")
def fc2(*, sparsity: float, seed: int = 0, **layer_options) -> nn.Module:
    """Pensia et al.'s FC2 (784-500-10) as a subnet model."""
    return nn.Sequential(nn.Flatten(),
                         ln.SubnetLinear(784, 500, sparsity=sparsity, seed=seed, **layer_options),
                         nn.ReLU(),
                         ln.SubnetLinear(500, 10, sparsity=sparsity, seed=seed + 1,
                                         **layer_options))


def plain_fc2() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 500, bias=False), nn.ReLU(),
                         nn.Linear(500, 10, bias=False))


def state_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


CASES = [  # label, build_model arguments, the plain model, an input
    ("resnet18", dict(name="timm", model_name="resnet18"),
     lambda: timm_models.create_timm_model("resnet18", seed=0), (1, 3, 64, 64)),
    ("vit_tiny_patch16_224", dict(name="timm", model_name="vit_tiny_patch16_224"),
     lambda: timm_models.create_timm_model("vit_tiny_patch16_224", seed=0), (1, 3, 224, 224)),
    ("convnext_atto", dict(name="timm", model_name="convnext_atto"),
     lambda: timm_models.create_timm_model("convnext_atto", seed=0), (1, 3, 64, 64)),
    ("mobilenetv3_small_100", dict(name="timm", model_name="mobilenetv3_small_100"),
     lambda: timm_models.create_timm_model("mobilenetv3_small_100", seed=0), (1, 3, 64, 64)),
    ("FC2 784-500-10 subsetsum n=5 relu",
     dict(name="bench_fc2", structure="subsetsum", pairs=5, activation="relu"),
     plain_fc2, (2, 1, 28, 28)),
]


def main(argv=None) -> None:
    parser = flags.parser(__file__, __doc__)
    parser.add_argument("--sparsity", type=flags.sparsity, default=0.5,
                        help="fraction of maskable weights PRUNED, in [0, 1) (default: 0.5)")
    args = parser.parse_args(argv)
    header = (f"{'model':<36} {'structure':<10} {'plain fp32':>11} {'subnet fp32':>12} "
              f"{'ticket':>10} {'vs plain':>9} {'vs subnet':>10}  round trip")
    print(f"sparsity {args.sparsity}; sizes in MB\n{header}\n{'-' * len(header)}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, spec, plain, input_shape in CASES:
            spec = dict(spec)
            model = build_model(spec.pop("name"), sparsity=args.sparsity, **spec).eval()
            path = Path(tmp) / "ticket"
            size = save_ticket(model, path)
            x = torch.randn(input_shape)
            with torch.no_grad():
                identical = torch.equal(model(x), load_ticket(path).eval()(x))
            plain_size, subnet_size = state_bytes(plain()), state_bytes(model)
            print(f"{label:<36} {spec.get('structure', 'dense'):<10} {plain_size / 1e6:>11.2f} "
                  f"{subnet_size / 1e6:>12.2f} {size / 1e6:>10.3f} {plain_size / size:>8.1f}x "
                  f"{subnet_size / size:>9.1f}x  {'bit-identical' if identical else 'DIFFERS'}")


if __name__ == "__main__":
    main()
