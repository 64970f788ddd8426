"""Subset-sum approximation of a trained network, built as a pruned random lotterynet model.

Pensia et al. (2020), Experiment 1, and da Cunha et al. (2022), Figs. 3-4: every weight ``w``
of a trained target layer gets its own ``n`` random coefficients ``a_1 .. a_n`` (here from
``U[min w, max w]`` of its layer), and the subset ``S`` minimising ``|w − Σ_{t∈S} a_t|`` is
kept. The papers solved one Gurobi MIP per weight (21.5 h on 36 cores for FC2); here
:func:`lotterynet.subsetsum.solve` solves all of them exactly by meet in the middle.

The result is a real pruned network: each target ``nn.Linear`` / ``nn.Conv2d`` becomes a
``SubnetLinear`` / ``SubnetConv2d`` with ``structure="subsetsum"``, ``activation="identity"``,
``shared=False`` and ``pairs=n`` (Pensia et al.'s Figure 1c, one path per coefficient): the
second-layer weights ``v`` are the coefficients, the first-layer weights ``u`` are 1, and both
keep exactly the solver's paths, so ``W_ij = Σ_t ũ_ijt ṽ_ijt = Σ_{t∈S_ij} a_ijt``.

The targets are the project's architectures (:mod:`lotterynet.archs`) built with
``trained=True`` (plain bias-free ``nn`` layers) and trained by a short Adam loop: ``fc2``
784-500-10 (397,000 weights) and ``lenet5`` with trained convs (``subnet_convs=True``; 2,550
conv weights). Unlike da Cunha et al.'s LeNet5, these convs have no bias (they count 2,572
with biases) and the second conv is unpadded, so the conv part ends at 16 × 5 × 5, not 7 × 7.

    python -m lotterynet.approximate fc2 --data-dir ../shared/data
    python -m lotterynet.approximate lenet5 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import DatasetNotFound, load_split
from .layers import SubnetConv2d, SubnetLinear
from .machine import cpu_name
from .models import build_model
from .params import count_params
from .subsetsum import solve

LENET5 = {"name": "lenet5", "subnet_convs": True}  # with trained=True: all layers plain, trained
LENET5_CONV_PART = 6  # modules 0-5 of lotterynet.archs.lenet5: conv, ReLU, pool, conv, ReLU, pool


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epochs: int,
          lr: float = 1e-3, batch_size: int = 64, seed: int = 0) -> nn.Module:
    """A plain Adam loop over shuffled mini-batches; returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(images), generator=generator).split(batch_size):
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Outputs of ``model`` in its own dtype, batch by batch."""
    dtype = next(model.parameters()).dtype
    return torch.cat([model(x.to(dtype)) for x in images.split(batch_size)])


def approximate_layer(layer: nn.Linear | nn.Conv2d, n: int, generator: torch.Generator, *,
                      k: int | None = None, shared_per_row: bool = False):
    """The subset-sum approximation of one trained bias-free layer, as a pruned float64 subnet
    layer (subnet layers have no maskable bias, so a layer with a bias is rejected).

    Coefficients: ``U[lo, hi]`` with ``lo, hi`` the smallest and largest of the layer's
    weights, ``n`` per weight, or with ``shared_per_row`` one set per output unit used by all
    of its weights (the authors' variant). ``k``: every weight keeps exactly ``k`` of its ``n``
    coefficients (Natale et al.'s fixed-size subset sum). Returns ``(subnet_layer, stats)``.
    """
    if not isinstance(layer, nn.Linear | nn.Conv2d):
        raise ValueError(f"can approximate nn.Linear or nn.Conv2d, got {type(layer).__name__}")
    if layer.bias is not None:
        raise ValueError(f"{layer} has a bias; subnet layers have no maskable bias, so only "
                         "bias-free targets (bias=False) can be approximated")
    weight = layer.weight.detach().double()
    out, per_row = weight.shape[0], weight[0].numel()
    targets = weight.reshape(-1)
    lo, hi = targets.min().item(), targets.max().item()
    draws = out if shared_per_row else targets.numel()
    coeffs = lo + (hi - lo) * torch.rand(draws, n, generator=generator, dtype=torch.float64)
    if shared_per_row:
        coeffs = coeffs.repeat_interleave(per_row, dim=0)
    start = time.perf_counter()
    selection, _, error = solve(targets, coeffs, k)
    seconds = time.perf_counter() - start

    options = dict(sparsity=0.5, structure="subsetsum", pairs=n, activation="identity",
                   shared=False, seed=0)
    if isinstance(layer, nn.Linear):
        subnet = SubnetLinear(layer.in_features, layer.out_features, **options)
    else:
        subnet = SubnetConv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                              layer.stride, layer.padding, layer.dilation, layer.groups, **options)
    subnet.double()

    def as_v(x):  # (weights, n) -> v's layout (out, in_per_group, n, *kernel)
        return x.reshape(*weight.shape, n).movedim(-1, 2)

    structure = subnet.structure
    mask = as_v(selection)
    with torch.no_grad():
        structure.v.weight.copy_(as_v(coeffs))
        structure.u.weight.fill_(1.0)
    structure.v.set_mask(mask)
    structure.u.set_mask(mask)
    stats = {
        "layer": repr(layer),
        "targets": targets.numel(),
        "coefficients_drawn": draws * n,
        "coefficients_kept": int(selection.sum()),
        "weight_error_max": error.max().item(),
        "weight_error_median": error.median().item(),
        # U[min w, max w] is asymmetric: now and then all n coefficients have the wrong sign
        "all_coefficients_wrong_sign": int(
            ((coeffs * targets[:, None]) <= 0).all(1).sum()),
        "solve_seconds": seconds,
    }
    return subnet, stats


def approximate_model(target: nn.Sequential, n: int, *, seed: int = 0, k: int | None = None,
                      shared_per_row: bool = False):
    """Copy of ``target`` (float64) with every ``nn.Linear`` / ``nn.Conv2d`` replaced by its
    subset-sum approximation; returns ``(model, per-layer stats)``."""
    generator = torch.Generator().manual_seed(seed)
    model, stats = copy.deepcopy(target).double().eval(), []
    for i, layer in enumerate(model):
        if isinstance(layer, nn.Linear | nn.Conv2d):
            model[i], layer_stats = approximate_layer(layer, n, generator, k=k,
                                                      shared_per_row=shared_per_row)
            stats.append(layer_stats)
    return model, stats


@torch.no_grad()
def weight_errors(model: nn.Sequential, target: nn.Sequential) -> torch.Tensor:
    """``|w_model − w_target|`` of every weight of the approximated layers, read from the built
    model's effective weights ``Σ_t ũ_ijt ṽ_ijt`` (float64)."""
    errors = []
    for subnet, layer in zip(model, target):
        if isinstance(subnet, SubnetLinear | SubnetConv2d):
            weight, _ = subnet.structure.effective_weight()
            errors.append((weight - layer.weight.double()).abs().flatten())
    return torch.cat(errors)


def totals(stats: list[dict]) -> dict:
    keys = ("targets", "coefficients_drawn", "coefficients_kept",
            "all_coefficients_wrong_sign", "solve_seconds")
    return {key: sum(s[key] for s in stats) for key in keys}


def machine() -> dict:
    """Where the numbers were measured (the load average tells whether the cores were shared)."""
    return {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "load_average_1min": round(os.getloadavg()[0], 2)}


def target_network(arch: dict, checkpoint: Path | None, images, labels, *, epochs: int,
                   seed: int, save_to: Path):
    """The trained target ``build_model(**arch, trained=True, seed=seed)``: loaded from
    ``checkpoint`` (a state dict) or trained and saved."""
    model = build_model(**arch, trained=True, seed=seed)
    if checkpoint is not None:
        model.load_state_dict(torch.load(checkpoint, weights_only=True))
        return model.eval(), {"checkpoint": str(checkpoint)}
    start = time.perf_counter()
    train(model, images, labels, epochs=epochs, seed=seed)
    info = {"epochs": epochs, "optimizer": "Adam lr 1e-3, batch 64",
            "train_seconds": round(time.perf_counter() - start, 1), "saved_to": str(save_to)}
    save_to.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), save_to)
    return model, info


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).double().mean().item()


def run_fc2(args) -> dict:
    """Experiment 1 of Pensia et al. on FC2 / MNIST, with the pruned network evaluated."""
    train_x, train_y = load_split("mnist", args.data_dir, train=True)
    test_x, test_y = load_split("mnist", args.data_dir, train=False)
    target, target_info = target_network({"name": "fc2"}, args.checkpoint, train_x, train_y,
                                         epochs=args.epochs, seed=args.seed,
                                         save_to=args.targets_dir / "fc2_mnist.pt")
    n = args.n or args.C * math.ceil(math.log2(1 / args.epsilon))
    model, stats = approximate_model(target, n, seed=args.seed, k=args.k,
                                     shared_per_row=args.shared_per_row)
    target_logits = predict(copy.deepcopy(target).double(), test_x)
    logits = predict(model, test_x)
    errors = weight_errors(model, target)
    result = {
        "experiment": "Pensia et al. 2020, Experiment 1: subset-sum approximation of FC2",
        "target": {"architecture": "lotterynet.archs fc2 (trained=True): 784-500-10, ReLU, "
                                   "no bias", "dataset": "mnist",
                   "test_accuracy": accuracy(target_logits, test_y), **target_info},
        "n": n, "epsilon": args.epsilon, "C": args.C, "k": args.k,
        "coefficients": "U[min w, max w] of each layer, "
                        + ("one set per row" if args.shared_per_row else "one set per weight"),
        "seed": args.seed,
        "approximation": {
            "model": "SubnetLinear(structure='subsetsum', activation='identity', shared=False, "
                     f"pairs={n}) per layer, masks from the solver",
            "test_accuracy": accuracy(logits, test_y),
            "predictions_agreeing_with_target": (logits.argmax(1) == target_logits.argmax(1))
            .double().mean().item(),
            "logit_error_max": (logits - target_logits).abs().max().item(),
            "weight_error_max": errors.max().item(),
            "weight_error_median": errors.median().item(),
            "weights_within_epsilon": (errors <= args.epsilon).double().mean().item(),
            **totals(stats),
            "params": count_params(model),
        },
        "layers": stats,
        "machine": machine(),
    }
    write(args.out / "approximation_fc2.json", json.dumps(result, indent=2))
    write(args.out / "approximation_fc2.md", fc2_markdown(result))
    return result


def fc2_markdown(r: dict) -> str:
    a, t, p = r["approximation"], r["target"], r["approximation"]["params"]
    trained = (f"trained {t['epochs']} epochs ({t['optimizer']}, {t['train_seconds']} s)"
               if "epochs" in t else f"loaded from {t['checkpoint']}")
    k = "" if r["k"] is None else f", exactly k = {r['k']} kept per weight (Natale et al.)"
    return f"""# Subset-sum approximation of FC2 (Pensia et al. 2020, Experiment 1)

Target: {t['architecture']} on MNIST, {trained}. Every one of the {a['targets']:,} weights is
approximated by the nearest subset sum of n = {r['n']} coefficients ({r['coefficients']}{k}),
solved exactly by `lotterynet.subsetsum.solve` (meet in the middle) on {r['machine']['cpu']}
({r['machine']['threads']} threads). The approximation is evaluated as a real pruned network:
{a['model']}.

| quantity | value |
|---|---|
| target test accuracy | {100 * t['test_accuracy']:.2f} % |
| pruned subset-sum network test accuracy | {100 * a['test_accuracy']:.2f} % |
| test predictions equal to the target's | {100 * a['predictions_agreeing_with_target']:.2f} % |
| max / median weight error | {a['weight_error_max']:.2e} / {a['weight_error_median']:.2e} |
| weights within ε = {r['epsilon']} | {100 * a['weights_within_epsilon']:.3f} % |
| weights whose n coefficients all have the wrong sign | {a['all_coefficients_wrong_sign']:,} |
| max logit error | {a['logit_error_max']:.2e} |
| coefficients drawn / kept | {a['coefficients_drawn']:,} / {a['coefficients_kept']:,} |
| model maskable / kept parameters (u and v) | {p['maskable']:,} / {p['kept']:,} |
| solve time | {a['solve_seconds']:.1f} s (Pensia et al.: 21.5 h on 36 cores, Gurobi MIP) |
"""


def run_lenet5(args) -> dict:
    """da Cunha et al.'s Figs. 3-4: LeNet5's conv weights approximated for n = n_min..n_max;
    max weight error and max relative error of the conv part's output (16 × 5 × 5) per n."""
    checkpoints = args.checkpoint or [None] * len(args.datasets)
    results = {}
    for dataset, checkpoint in zip(args.datasets, checkpoints):
        train_x, train_y = load_split(dataset, args.data_dir, train=True)
        test_x, test_y = load_split(dataset, args.data_dir, train=False)
        target, target_info = target_network(LENET5, checkpoint, train_x, train_y,
                                             epochs=args.epochs, seed=args.seed,
                                             save_to=args.targets_dir / f"lenet5_{dataset}.pt")
        target64 = copy.deepcopy(target).double()
        conv, head = target[:LENET5_CONV_PART], target64[LENET5_CONV_PART:]
        reference = predict(target64[:LENET5_CONV_PART], test_x)
        scale = reference.flatten(1).abs().amax(1)
        rows = []
        for n in range(args.n_min, args.n_max + 1):
            approx, stats = approximate_model(conv, n, seed=args.seed, k=args.k,
                                              shared_per_row=args.shared_per_row)
            features = predict(approx, test_x)
            relative = (features - reference).flatten(1).abs().amax(1) / scale
            errors = weight_errors(approx, conv)
            rows.append({
                "n": n,
                "weight_error_max": errors.max().item(),
                "weight_error_median": errors.median().item(),
                "output_relative_error_max": relative.max().item(),
                "output_relative_error_median": relative.median().item(),
                "test_accuracy": accuracy(predict(head, features), test_y),
                **totals(stats),
            })
        results[dataset] = {"target": {"test_accuracy": accuracy(predict(target64, test_x),
                                                                  test_y), **target_info},
                            "per_n": rows}
    result = {
        "experiment": "da Cunha et al. 2022, Figs. 3-4: subset-sum approximation of LeNet5's "
                      "conv weights",
        "target": "lotterynet.archs lenet5 (trained=True, subnet_convs=True): conv 6@5x5 pad 2, "
                  "pool, conv 16@5x5, pool, 120, 84, 10; no biases (2,550 conv weights)",
        "coefficients": "U[min w, max w] of each layer, "
                        + ("one set per row" if args.shared_per_row else "one set per weight"),
        "k": args.k, "seed": args.seed, "test_images": "whole test split (10,000)",
        "datasets": results,
        "machine": machine(),
    }
    write(args.out / "approximation_lenet5.json", json.dumps(result, indent=2))
    plot(results, "weight_error_max", "max |w − approximation|",
         "LeNet5 conv weights (da Cunha et al. Fig. 3)", args.out / "lenet5_weight_error.png")
    plot(results, "output_relative_error_max", "max relative output error",
         "LeNet5 conv part output (da Cunha et al. Fig. 4)", args.out / "lenet5_output_error.png")
    write(args.out / "approximation_lenet5.md", lenet5_markdown(result))
    return result


def plot(results: dict, key: str, ylabel: str, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for dataset, r in results.items():
        rows = r["per_n"]
        ax.semilogy([row["n"] for row in rows], [row[key] for row in rows], marker="o",
                    markersize=3, label=dataset)
    ax.set(xlabel="n (coefficients per weight)", ylabel=ylabel, title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def lenet5_markdown(r: dict) -> str:
    m = r["machine"]
    text = f"""# Subset-sum approximation of LeNet5's conv layers (da Cunha et al. 2022, Figs. 3-4)

Target: {r['target']}. Each conv weight is approximated by the nearest subset sum of n
coefficients ({r['coefficients']}), built as pruned `SubnetConv2d(structure='subsetsum',
activation='identity', shared=False, pairs=n)` layers. Relative output error of an image:
max |Δ activation| / max |activation| over the 16 × 5 × 5 output of the conv part; the table
gives its maximum over the {r['test_images']}. Test accuracy: the approximated conv part
followed by the target's own FC part. Solved on {m['cpu']} ({m['threads']} threads).
Plots: `lenet5_weight_error.png` (Fig. 3), `lenet5_output_error.png` (Fig. 4).
"""
    for dataset, d in r["datasets"].items():
        text += f"""
## {dataset}: target test accuracy {100 * d['target']['test_accuracy']:.2f} %

| n | max weight error | max rel. output error | test accuracy | coefficients kept / drawn | solve |
|---|---|---|---|---|---|
"""
        text += "".join(
            f"| {x['n']} | {x['weight_error_max']:.2e} | {x['output_relative_error_max']:.2e} | "
            f"{100 * x['test_accuracy']:.2f} % | {x['coefficients_kept']:,} / "
            f"{x['coefficients_drawn']:,} | {x['solve_seconds']:.2f} s |\n"
            for x in d["per_n"])
    return text


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")


def check(args) -> None:
    """Reject bad options with a ValueError naming the value and the valid range."""
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.experiment == "fc2":
        if not 0 < args.epsilon < 1:
            raise ValueError(f"--epsilon must be in (0, 1), got {args.epsilon}")
        if args.C < 1 or (args.n is not None and args.n < 1):
            raise ValueError(f"--C and --n must be >= 1, got C={args.C}, n={args.n}")
    else:
        if not 1 <= args.n_min <= args.n_max:
            raise ValueError(f"need 1 <= --n-min <= --n-max, got {args.n_min}, {args.n_max}")
        if args.checkpoint and len(args.checkpoint) != len(args.datasets):
            raise ValueError(f"give one --checkpoint per dataset {args.datasets}, "
                             f"got {len(args.checkpoint)}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m lotterynet.approximate", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="folder holding MNIST/ and FashionMNIST/ in "
                        "torchvision's layout (default: $LOTTERYNET_DATA, else ./data)")
    common.add_argument("--out", type=Path, default=Path("results"),
                        help="where the JSON, Markdown and PNG results go (default: results)")
    common.add_argument("--targets-dir", type=Path, default=Path("runs/approximate"),
                        help="where trained targets are saved (default: runs/approximate)")
    common.add_argument("--seed", type=int, default=0, help="target init/training and "
                        "coefficients (default: 0)")
    common.add_argument("--k", type=int, help="keep exactly k coefficients per weight "
                        "(Natale et al.'s fixed-size subset sum; default: any number)")
    common.add_argument("--shared-per-row", action="store_true", help="one set of n "
                        "coefficients per output unit, shared by its weights (authors' variant)")
    experiments = parser.add_subparsers(dest="experiment", required=True)
    p = experiments.add_parser("fc2", parents=[common], help="Pensia et al.'s Experiment 1: "
                               "FC2 784-500-10 on MNIST")
    p.add_argument("--checkpoint", type=Path, help="state dict of a trained FC2 (default: train)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (default: 3)")
    p.add_argument("--epsilon", type=float, default=0.01, help="target precision (default 0.01)")
    p.add_argument("--C", type=int, default=3, help="n = C·ceil(log2(1/ε)) (default 3 → n = 21)")
    p.add_argument("--n", type=int, help="coefficients per weight (overrides --C/--epsilon)")
    p = experiments.add_parser("lenet5", parents=[common], help="da Cunha et al.'s Figs. 3-4: "
                               "LeNet5 conv weights, n = n-min..n-max")
    p.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"],
                   choices=["mnist", "fashion-mnist"])
    p.add_argument("--checkpoint", type=Path, nargs="+",
                   help="state dicts of trained LeNet5s, one per dataset (default: train)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs (default: 2)")
    p.add_argument("--n-min", type=int, default=5)
    p.add_argument("--n-max", type=int, default=30)
    args = parser.parse_args(argv)
    try:
        check(args)
        return run_fc2(args) if args.experiment == "fc2" else run_lenet5(args)
    except DatasetNotFound as err:
        parser.error(str(err))
    except ValueError as err:  # bad options (check) or k out of range (subsetsum.solve)
        parser.error(str(err))


if __name__ == "__main__":
    main()
