"""Pensia et al. (2020), Experiment 2 / Figure 2: the authors' stored accuracies on MNIST
(``../shared/DESIGN.md``, "Paper recipes and anchor numbers"), for putting a sweep beside the paper.

``FIGURE2[(arch, variant)]`` maps sparsity (fraction pruned; so is the authors' ``--sparsity``:
their ``GetSubnet`` prunes the ``int(sparsity · numel)`` lowest |scores|) to test accuracy in
percent, each the best over the paper's 10/20/30/50/100-epoch runs; ``TRAINED[arch]`` is the
trained dense baseline (LeNet5 with its random frozen convolutions). ``LABELS`` names the sweep
variants in the paper's words.
"""

from __future__ import annotations

_SPARSITIES = (0.5, 0.75, 0.9, 0.95, 0.99)  # fractions pruned: 50, 25, 10, 5, 1 % kept


def _points(*accuracies: float) -> dict[float, float]:
    return dict(zip(_SPARSITIES, accuracies))


FIGURE2: dict[tuple[str, str], dict[float, float]] = {
    ("fc2", "subsetsum/identity"): _points(97.97, 97.53, 95.77, 89.27, 39.26),
    ("fc2", "subsetsum/relu"): _points(96.55, 93.30, 78.67, 57.41, 18.18),
    ("fc2", "wide"): _points(98.17, 98.07, 97.24, 95.67, 87.79),
    ("fc4", "subsetsum/identity"): _points(97.90, 97.92, 97.20, 93.86, 10.28),
    ("fc4", "wide"): _points(98.71, 98.73, 98.63, 98.51, 88.76),
    ("lenet5", "subsetsum/identity"): _points(98.04, 96.78, 87.77, 57.51, 10.28),
    ("lenet5", "wide"): _points(97.39, 96.63, 92.48, 83.23, 30.48),
}
TRAINED = {"fc2": 98.59, "fc4": 98.69, "lenet5": 98.36}
LABELS = {"subsetsum/identity": "subset-sum, identity", "subsetsum/relu": "subset-sum, ReLU",
          "wide": "wide random", "trained": "trained dense"}


def figure2_curve(config: dict) -> str | None:
    """The curve of Figure 2 that a run with ``config`` (a :class:`RunConfig` as a dict) is a
    point of — a ``FIGURE2`` variant or ``"trained"`` — or None where the run is not one of
    the paper's networks: other data, or another network (not n = 5 coefficient pairs, a hidden
    width of its own, first-layer coefficients not shared by all outputs, LeNet5's convolutions
    pruned too, or trained too in its trained baseline, a wide net not sized as the subset-sum
    one). Initialisation and recipe may differ: those are what a sweep compares."""
    if config["dataset"] != "mnist":
        return None
    if config["train_weights"]:
        trained = config["structure"] == "dense" and not config["subnet_convs"]
        return "trained" if trained else None
    if (config["pairs"] != 5 or config["hidden"] is not None or not config["shared"]
            or config["subnet_convs"]):
        return None
    if config["structure"] == "subsetsum":
        return f"subsetsum/{config['activation']}"
    return "wide" if config["structure"] == "wide" and config["match"] == "subsetsum" else None


def paper_accuracy(config: dict) -> float | None:
    """The paper's accuracy for the point a run with ``config`` is, or None where it has none."""
    curve, arch = figure2_curve(config), config["arch"]
    if curve == "trained":
        return TRAINED.get(arch)
    return FIGURE2.get((arch, curve), {}).get(round(config["sparsity"], 6))
