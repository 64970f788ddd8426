"""train.py end to end on a small MNIST subset (CPU): accuracy, results.json, frozen weights,
checkpoints (atomic, weights_only, resumable), W&B offline, DDP over gloo, bad input."""

import csv
import importlib.metadata
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import yaml

import lotterynet
import prefork
from conftest import REPO, SCALED_STD_CONVS, TINY_NF
from lotterynet import checkpointing
from lotterynet.archs import recipe, recipe_lr
from lotterynet.cli import build_parser, config_from_args, main
from lotterynet.config import NOT_COMPUTED, PRECISIONS, changed_fields, make_config
from lotterynet.config_checks import read_options
from lotterynet.config_flags import NAMED_CHOICES
from lotterynet.config_schema import FIELDS
from lotterynet.data import DATASETS
from lotterynet.datamodule import EpochPermutation, TensorDataModule, load_or_download
from lotterynet.distributions import DISTRIBUTIONS, orseau_range
from lotterynet.layers import SubnetLinear
from lotterynet.loggers import read_wandb_records, read_wandb_summary, replay_history
from lotterynet.masking import SCORE_BOUNDS, masked_weights
from lotterynet.models import MODELS, build_model
from lotterynet.optim import OPTIMIZERS, SCHEDULERS
from lotterynet.pensia_figure2 import TRAINED, paper_accuracy
from lotterynet.run import build_module, check_same_run, checkout_commit, model_spec
from lotterynet.structures import ACTIVATIONS, FAN_INS, STRUCTURES
from lotterynet.sweep_grid import Sweep
from lotterynet.ticket import load_ticket
from lotterynet.widen import maskable_count, wide_width

#: (the test pass on 2,000 of the 10,000 test images: enough to tell learning from chance)
SMALL = ["--limit-train", "2000", "--val-size", "500", "--epochs", "1", "--no-progress-bar",
         "--trainer.limit_test_batches", "2"]


def train(tmp_path, data_dir, *args, name="run"):
    out = tmp_path / name
    code = main([*SMALL, *args, "--data-dir", str(data_dir), "--out", str(out)])
    return code, out


def results_of(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("arch", ["fc2", "lenet5"])
@pytest.mark.parametrize("structure", ["subsetsum-relu", "subsetsum-identity", "wide"])
def test_one_epoch_learns_and_keeps_weights_frozen(tmp_path, data_dir, arch, structure):
    structure, _, activation = structure.partition("-")
    sized_only = structure == "wide"  # (sized to the subset-sum net: no activation)
    code, out = train(tmp_path, data_dir, "--arch", arch, "--structure", structure,
                      *[] if sized_only else ["--activation", activation or "relu"],
                      "--sparsity", "0.5")
    assert code == 0
    results = results_of(out)
    assert results["test_acc"] > 0.2 and results["epochs_done"] == 1
    assert results["config"]["arch"] == arch and results["config"]["structure"] == structure
    assert results["params"]["kept"] == round(results["params"]["maskable"] * 0.5)
    # Frozen weights: the checkpoint's equal a fresh build from the recorded spec.
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    fresh = build_model(**results["spec"]).state_dict()
    trained = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    frozen = [k for k in fresh if not k.endswith("scores")]
    assert frozen and all(torch.equal(fresh[k], trained[k]) for k in frozen)
    scores = [k for k in fresh if k.endswith("scores")]
    assert any(not torch.equal(fresh[k], trained[k]) for k in scores)  # the scores did train


def test_a_runs_results_hold_exact_accuracies_and_the_versions_it_ran_with(tmp_path, data_dir):
    """A single run stored its accuracies as torchmetrics' float32 quotients (0.8003000020980835
    for 8003 of 10,000 test images) where a stack member stores correct / examples as Python
    divides them (0.8003): the same cell's results differed in form as it ran singly or
    stacked. Both store the exact quotient (here of 1,000 test and 100 validation images)."""
    code, out = train(tmp_path, data_dir, "--arch", "fc2", "--structure", "dense",
                      "--limit-train", "256", "--val-size", "100",
                      "--trainer.limit_test_batches", "1")
    results = results_of(out)
    assert code == 0
    for key, examples in (("test_acc", 1000), ("val_acc", 100)):
        correct = round(results[key] * examples)
        assert results[key] == correct / examples, key
    # results.json recorded no versions, while a CPU run gives the same numbers bit for bit
    # only under the same torch build (the committed cells measured under the build installed
    # before give other last digits: results/README.md) and none said which build or code
    # made it: torch's, Lightning's, Python's, lotterynet's and the checkout's commit (HEAD)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip() if (REPO / ".git").exists() else None
    assert results["versions"] == {
        "lotterynet": lotterynet.__version__, "commit": head or None,
        "torch": torch.__version__, "pytorch_lightning": pl.__version__,
        "python": platform.python_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    assert checkout_commit(tmp_path) is None  # (no checkout, no commit)


@pytest.mark.parametrize("installed", ["0.0.1", None])  # (an older copy installed; none)
def test_the_versions_name_the_lotterynet_that_ran_not_the_installed_copy(monkeypatch,
                                                                          installed):
    """``versions["lotterynet"]`` was the installed package's metadata version: with
    ``PYTHONPATH`` on a checkout it named the installed copy (another checkout's, maybe another
    release's), and None where none was installed. It is the imported code's own
    ``__version__`` now (pyproject.toml reads its version from there)."""
    from lotterynet.run import versions

    def metadata_version(name):
        if installed is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed

    monkeypatch.setattr(importlib.metadata, "version", metadata_version)
    assert versions()["lotterynet"] == lotterynet.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", lotterynet.__version__)


def test_authors_protocol_flags_reach_the_frozen_tensors(tmp_path, data_dir):
    """The authors' stored LeNet5 runs: ``--conv-init scaled_uniform`` draws the frozen convs
    from PyTorch's default U(±1/√fan_in) (every other tensor is the default build's),
    ``--fan-in target`` draws ``v`` and its scores √n larger and ``--score-init kaiming`` every
    score √2 larger (their ``RedLayer``: U(±√(2/fan_in))); all reach the spec and the trained
    run."""
    code, out = train(tmp_path, data_dir, "--arch", "lenet5", "--structure", "subsetsum",
                      "--activation", "identity", "--sparsity", "0.5", "--conv-init",
                      "scaled_uniform", "--fan-in", "target", "--score-init", "kaiming")
    assert code == 0 and results_of(out)["test_acc"] > 0.2
    spec = results_of(out)["spec"]
    assert (spec["conv_init"], spec["fan_in"], spec["score_init"]) == (
        "scaled_uniform", "target", "kaiming")
    built = build_model(**spec).state_dict()
    default = build_model(**{k: v for k, v in spec.items() if k != "score_init"}
                          | {"conv_init": None, "fan_in": "hidden"}).state_dict()
    ran = {k.removeprefix("model."): v for k, v in torch.load(
        out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"].items()}
    for k, fan_in in (("0.weight", 25), ("3.weight", 150)):
        assert torch.equal(ran[k], built[k])  # frozen through training
        assert built[k].abs().max() <= fan_in ** -0.5 < default[k].abs().max()
    scaled = {"v.weight": 5 ** 0.5, "v.scores": 10 ** 0.5, "u.scores": 2 ** 0.5}
    for layer in (7, 9, 11):
        for name, factor in scaled.items():
            k = f"{layer}.structure.{name}"
            torch.testing.assert_close(built[k], default[k] * factor)
    assert all(torch.equal(built[k], default[k]) for k in built
               if k not in ("0.weight", "3.weight") and k.rpartition("structure.")[2] not in scaled)


def test_timm_arch_trains_a_converted_timm_model(tmp_path, data_dir):
    code, out = train(tmp_path, data_dir, "--arch", "timm:mobilenetv3_small_050",
                      "--structure", "dense", "--sparsity", "0.75", "--limit-train", "256")
    assert code == 0
    results = results_of(out)
    spec = results["spec"]
    assert (spec["name"], spec["model_name"], spec["in_chans"]) == (
        "timm", "mobilenetv3_small_050", 1)
    model = build_model(**spec)  # rebuilt from the recorded spec: same tensors, same counts
    assert results["params"]["kept"] == sum(m.kept for m in masked_weights(model))
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    trained = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    frozen = [k for k, v in model.named_parameters() if not v.requires_grad]
    assert frozen and all(torch.equal(model.state_dict()[k], trained[k]) for k in frozen)


def test_model_kwargs_reach_timm_and_the_spec(tmp_path, data_dir):
    """``--model-kwargs`` (values YAML) go to timm.create_model: a 2-block ViT with 7×7 patches
    on 28×28 MNIST (16×16 patches are refused, tests/test_bad_input.py), learning above
    chance, its spec rebuilding the run's frozen tensors."""
    code, out = train(tmp_path, data_dir, "--arch", "timm:vit_tiny_patch16_224",
                      "--model-kwargs", "patch_size=7", "--model-kwargs", "depth=2")
    assert code == 0
    results = results_of(out)
    assert results["test_acc"] > 0.2
    assert results["config"]["model_kwargs"] == results["spec"]["model_kwargs"] == {
        "patch_size": 7, "depth": 2}
    model = build_model(**results["spec"])
    assert len(model.blocks) == 2 and model.patch_embed.grid_size == (4, 4)
    trained = {k.removeprefix("model."): v for k, v in torch.load(
        out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"].items()}
    frozen = [k for k, v in model.named_parameters() if not v.requires_grad]
    assert frozen and all(torch.equal(model.state_dict()[k], trained[k]) for k in frozen)


def test_exclude_leaves_timm_layers_trained_and_is_kept_by_resume_and_ticket(tmp_path, data_dir,
                                                                             capsys):
    """A timm model with layers its conversion refuses (NF-ResNet's ScaledStdConv2d under subset
    sum with ReLU) is refused naming the
    ``--exclude`` that leaves them out; with it the run learns, those layers unmasked and
    trained (the rest frozen as the spec builds it), the patterns in results.json's config and
    spec; a resume refuses other patterns and keeps the run's; its ticket rebuilds the trained
    model bit for bit (train.py had no --exclude)."""
    assert train(tmp_path, data_dir, *TINY_NF, "--structure", "subsetsum", name="refused")[0] == 2
    assert shlex.split(capsys.readouterr().err.partition(" --exclude ")[2]) == SCALED_STD_CONVS
    code, out = train(tmp_path, data_dir, *TINY_NF, "--structure", "subsetsum",
                      "--exclude", *SCALED_STD_CONVS[:2],
                      "--exclude", *SCALED_STD_CONVS[2:], "--limit-train", "1000", "--epochs", "2",
                      "--stop-after", "1")
    assert code == 0
    checkpoint = out / "checkpoints" / "last.ckpt"
    assert main(["--resume", str(checkpoint), "--exclude", "stem.conv"]) == 2
    assert "--exclude ['stem.conv'] differs from the resumed run's ['stem.conv', 'stages.*" in \
        capsys.readouterr().err
    assert main(["--resume", str(checkpoint), "--no-progress-bar"]) == 0
    results = results_of(out)
    assert results["test_acc"] > 0.2
    assert results["config"]["exclude"] == results["spec"]["exclude"] == SCALED_STD_CONVS
    fresh = build_model(**results["spec"])
    kept = {f"{n}.{p}" for n, m in fresh.named_modules() if type(m).__name__ == "ScaledStdConv2d"
            for p in ("weight", "bias", "gain")}
    assert len(kept) == 3 * 17 and isinstance(fresh.head.fc, SubnetLinear)
    # (what a sweep's table counts as trained_params: trainable beyond the scores)
    assert results["params"]["trainable"] - results["params"]["maskable"] == sum(
        fresh.get_parameter(name).numel() for name in kept)
    subnets = [n for n, m in fresh.named_modules() if isinstance(m, SubnetLinear)]
    assert subnets == ["head.fc"]  # (the only layer masked: its scores the only ones)
    ran = build_model(**results["spec"]).eval()
    ran.load_state_dict({k.removeprefix("model."): v for k, v in torch.load(
        checkpoint, weights_only=True)["state_dict"].items()})
    for name, p in fresh.named_parameters():  # trained: what changed in the run
        assert p.requires_grad == (name in kept or name.startswith("head.fc.")
                                   and name.endswith("scores")), name
        assert torch.equal(p, ran.get_parameter(name)) != p.requires_grad, name
    x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    ticket = load_ticket(out / "model.ticket").eval()
    assert torch.equal(ticket(x), ran(x))
    assert all(torch.equal(v, ticket.state_dict()[k]) for k, v in ran.state_dict().items()
               if not k.endswith("scores"))


def test_structure_defaults_and_hidden_reach_the_layers(tmp_path, data_dir):
    code, out = train(tmp_path, data_dir, "--arch", "fc2", "--structure", "orseau",
                      "--hidden", "40", "--limit-train", "256")
    assert code == 0
    model = build_model(**results_of(out)["spec"])
    first = model[1].structure  # Flatten, then the first structured layer
    weights = [m.weight for m in masked_weights(first)]
    assert weights[0].shape[0] == 40  # H = --hidden
    alpha, beta = orseau_range()  # orseau's own default init: hyperbolic on ±[α, β]
    assert all(w.abs().min() >= alpha * (1 - 1e-6) and w.abs().max() <= beta * (1 + 1e-6)
               for w in weights)


@pytest.mark.parametrize("gpu", [False, True])
def test_a_model_that_cannot_fit_in_memory_is_refused_before_it_is_built(
        tmp_path, data_dir, monkeypatch, capsys, gpu):
    """A model too large for the machine (conv2 malach: 804M maskable weights) was built and
    trained until the kernel's out-of-memory kill ended it: no line of its own, and its folder
    left behind (a run again into it was refused as not empty). What its tensors certainly
    take (counted on a build on the meta device: every parameter, each score's gradient and
    momentum, and what more a training step on one batch holds at its peak, the step run on
    the meta device) is compared with the memory this machine has available before the model
    is built or the folder made: one line, exit 2. Here FC2 subset-sum, 54.9 MiB in training
    on the CPU (24.5 MiB of it the steps' peak, what choosing its masks takes included), with
    40 MiB available (counted with only what the forward saves for the backward, 39.7 MiB,
    the run was let train); a smaller batch is not advised, its count at a batch of one not
    fitting either; for a run on a GPU, the host holds the model as built (15.2 MiB,
    float32), with 8 MiB. The count is exactly what its build holds."""
    import lotterynet.memory

    monkeypatch.setattr(lotterynet.memory, "on_gpu", lambda accelerator: gpu)
    monkeypatch.setattr(lotterynet.memory, "available_memory",
                        lambda: 2**23 if gpu else 40 * 2**20)
    code, out = train(tmp_path, data_dir, "--arch", "fc2", "--sparsity", "0.99",
                      "--limit-train", "256", "--epochs", "1")
    need = "15.2 MiB of memory to build (3,982,840 parameters, drawn in float32) and this " \
        "machine has 8.0 MiB" if gpu else "54.9 MiB of memory to train (3,982,840 " \
        "parameters in float32, 1,991,420 of them trained, each with a gradient and 1 " \
        "optimizer state, and 24.5 MiB more at the peak of a training step on a batch of 64: " \
        "its activations, masks, masked weights and temporaries) and this machine has 40.0 MiB"
    assert capsys.readouterr().err.splitlines() == [
        f"train.py: error: fc2 subsetsum needs at least {need} available; the sparsity does "
        f"not change it (pruned weights are held all the same): fewer parameters (a smaller "
        f"--pairs or --hidden, another --structure or --arch) need less, or a machine "
        f"with more memory"]
    assert code == 2 and not out.exists()
    config = config_from_args(build_parser().parse_args(["--arch", "fc2"]))
    spec = model_spec(config, TensorDataModule(config.dataset, data_dir))
    built = build_model(**spec)
    assert lotterynet.memory.memory_needed([(spec, {"optimizer": "sgd", "momentum": 0.9})],
                                           config).built == 15931360 == sum(
        t.numel() * t.element_size() for t in (*built.parameters(), *built.buffers()))


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "64-true"])
def test_the_memory_count_holds_a_training_steps_peak(precision):
    """A training step holds, beyond the parameters, their gradients and the optimizer's state,
    its temporaries; the count held only what the forward saves for the backward (conv2
    malach: 15.1 GiB counted, its peak 21.7 GB; counted with the step's peak, 18.0 GiB; with
    what choosing its masks takes on the CPU, 23.8 GiB). The steps run on the meta device,
    whatever they hold counted from the operation that makes it to its freeing. For a dense
    FC2 (784-500-10) trained with SGD the peak is in the second step's choice of the first
    layer's mask (500 x 784 entries), beside the first step's gradients and momentum: the
    scores' magnitudes (in the parameters' width), and, the last step's threshold narrowing
    the search to a band (the hint), the float32 0/1 mask of the entries above the band and
    the band's float32 and boolean masks: 9 bytes an entry more; and the batch (B x 784
    floats, B labels). It is more than what the forward saves (1,284 B + 5,000 values, in
    autocast's width under a mixed precision). A batch of B takes the training examples'
    number where fewer."""
    import lotterynet.memory

    def need(**config):
        config = make_config(dict(arch="fc2", structure="dense", precision=precision, **config))
        return lotterynet.memory.memory_needed(
            [(dict(name="fc2", structure="dense"), {"optimizer": "sgd", "momentum": 0.9,
                                                    "lr": 0.1, "weight_decay": 0.0,
                                                    "scheduler": "cosine"})], config)

    width = {"32-true": 4, "bf16-mixed": 4, "64-true": 8}[precision]
    lowered = {"32-true": 4, "bf16-mixed": 2, "64-true": 8}[precision]
    one, more, few = need(batch_size=1), need(batch_size=65), need(batch_size=65, limit_train=9)
    assert (one.batch, more.batch, few.batch) == (1, 65, 9)
    for step in (one, more, few):
        saved = (1284 * step.batch + 5000) * lowered
        assert step.step == 784 * 500 * (width + 9) + step.batch * (784 * width + 8) > saved
        # (every weight and score, and each score's gradient and momentum)
        assert step.trained == 794000 * 2 * width + step.step
    assert more.step - one.step == 64 * (784 * width + 8)


def test_a_step_that_cannot_run_on_the_meta_device_counts_nothing():
    """A model whose forward reads a value off its data cannot run on the meta device: what
    its training step holds is then not counted (0, still a lower bound), not an error."""
    from lotterynet.memory import step_peak

    class Reads(torch.nn.Module):
        def forward(self, x):
            return x * float(x.detach().sum())

    class ToNumpy(torch.nn.Module):  # (on meta: a TypeError, which train.py would have taken
        def forward(self, x):  # for a model that cannot be built, and refused the run)
            return x + float(x.detach().numpy().sum())

    optim = {"optimizer": "adam", "momentum": 0.9, "lr": 0.1, "weight_decay": 0.0,
             "scheduler": "constant"}
    linear = torch.nn.Linear(3, 4, device="meta")
    # its input and labels, output, log-softmax and its gradient, the weight's and bias's
    # gradients, moments and the step's temporaries
    assert step_peak([linear], [optim], (2, 3), torch.float32) > (2 * 3 + 16 * 3) * 4
    for reads in (Reads(), ToNumpy()):
        assert step_peak([torch.nn.Sequential(linear, reads)], [optim], (2, 3),
                         torch.float32) == 0


def test_the_wide_sizing_builds_nothing_for_real(monkeypatch):
    """A wide run's width was measured on real builds, the structured net it matches at its
    full size among them (conv2 malach: 6 GiB drawn before the run's memory check refused
    it); they are built on the meta device, nothing allocated, with the same counts."""
    import lotterynet.widen

    on_meta = []

    def recording(*args, **kwargs):
        model = build_model(*args, **kwargs)
        on_meta.append(all(p.is_meta for p in model.parameters()))
        return model

    monkeypatch.setattr(lotterynet.widen, "build_model", recording)
    target = maskable_count("fc2", structure="subsetsum", pairs=5, sparsity=0.0)
    assert target == 1991420 and wide_width("fc2", target, sparsity=0.5) == 2508
    assert on_meta == [True] * 4


@pytest.mark.parametrize("arch, width", [("fc2", 2508), ("fc4", 1314), ("lenet5", 378)])
def test_wide_width_matches_authors_sizing(arch, width):
    target = maskable_count(arch, structure="subsetsum", pairs=5, sparsity=0.0)
    assert wide_width(arch, target, sparsity=0.5) == width
    wide = maskable_count(arch, structure="dense", width=width, sparsity=0.0)
    assert abs(wide - target) / target < 0.002


def test_wide_width_takes_the_options_the_matched_structure_was_counted_with():
    """The Python API: the subset-sum structure's own options, given to wide_width as to
    maskable_count, are left out of its dense builds (they were refused: 'pairs=5 is not an
    option of structure 'dense'')."""
    options = dict(pairs=5, activation="identity", sparsity=0.0)
    target = maskable_count("fc2", structure="subsetsum", **options)
    assert wide_width("fc2", target, **options) == 2508


def test_wide_width_is_the_width_of_the_nearest_count():
    """conv2 (CIFAR-10) counts 1049·h² + 67·h: 21,460,582 at h = 143, 21,761,712 at 144. A
    target of 21,611,000 is nearer 143's count, though its real root (143.50...) rounds up."""
    kwargs = dict(in_channels=3, image_size=32)
    assert [maskable_count("conv2", structure="dense", width=h, sparsity=0.0, **kwargs)
            for h in (143, 144)] == [21_460_582, 21_761_712]
    assert wide_width("conv2", 21_611_000, **kwargs) == 143
    assert wide_width("conv2", 21_611_200, **kwargs) == 144


def test_same_seed_same_frozen_weights_and_masks():
    def masks(seed):
        model = build_model("lenet5", structure="subsetsum", seed=seed, sparsity=0.7)
        return [(m.weight, m.mask()) for m in masked_weights(model)]

    a, b, c = masks(3), masks(3), masks(4)
    assert all(torch.equal(w1, w2) and torch.equal(m1, m2) for (w1, m1), (w2, m2) in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])


def epoch_lines(console: str) -> list[str]:
    """``epoch k/n`` of each epoch line a run printed."""
    return [line.split(" |")[0] for line in console.splitlines() if line.startswith("epoch ")]


def test_resume_reaches_the_uninterrupted_result(tmp_path, data_dir, capsys):
    """Every epoch ends with its checkpoint, also one without validation (Lightning's own
    default saves after validations: none after epoch 1 here; the kill tests of
    test_reliability.py resume runs validated every epoch)."""
    common = ["--arch", "fc2", "--structure", "dense", "--sparsity", "0.5", "--seed", "1",
              "--epochs", "2", "--trainer.check_val_every_n_epoch", "2"]
    code, whole = train(tmp_path, data_dir, *common, name="whole")
    assert code == 0
    code, part = train(tmp_path, data_dir, *common, "--stop-after", "1", name="part")
    assert code == 0 and not (part / "results.json").exists()
    checkpoint = part / "checkpoints" / "last.ckpt"
    assert "state_dict" in torch.load(checkpoint, weights_only=True)
    capsys.readouterr()
    assert main(["--resume", str(checkpoint), "--no-progress-bar"]) == 0
    assert epoch_lines(capsys.readouterr().out) == ["epoch 2/2"]  # continued, not retrained
    a, b = results_of(whole), results_of(part)
    assert b["epochs_done"] == 2 and len(b["seconds_per_epoch"]) == 2  # the whole history
    for key in ("test_acc", "test_loss", "val_acc", "mask_digests"):
        assert a[key] == b[key], key
    assert (part / "metrics.csv").read_text() == (whole / "metrics.csv").read_text()


def test_a_resume_records_the_out_of_the_run_it_continues(tmp_path, data_dir, monkeypatch):
    """A resume without --out goes on in its checkpoint's run and records that run's --out, as
    given (its results.json said out null), in its checkpoint too (a second resume reads it
    there); a run moved since records the folder it is in."""
    monkeypatch.chdir(tmp_path)
    args = ["--arch", "fc2", "--structure", "dense", "--limit-train", "256", "--val-size", "64",
            "--epochs", "3", "--no-progress-bar", "--trainer.limit_test_batches", "1",
            "--data-dir", str(data_dir)]
    assert main([*args, "--out", "runs/a", "--stop-after", "1"]) == 0
    assert main(["--resume", "runs/a/checkpoints/last.ckpt", "--stop-after", "2"]) == 0
    stored = torch.load("runs/a/checkpoints/last.ckpt", weights_only=True)
    assert stored["hyper_parameters"]["config"]["out"] == "runs/a"
    assert main(["--resume", "runs/a/checkpoints/last.ckpt"]) == 0
    results = results_of(Path("runs/a"))
    assert (results["config"]["out"], results["run_dir"]) == ("runs/a", "runs/a")
    assert main([*args, "--out", "runs/b", "--stop-after", "1"]) == 0
    Path("runs/b").rename("moved")
    assert main(["--resume", "moved/checkpoints/last.ckpt"]) == 0
    assert results_of(Path("moved"))["config"]["out"] == str(tmp_path.resolve() / "moved")


def test_existing_run_dir_is_not_overwritten(tmp_path, data_dir):
    args = ["--arch", "fc2", "--structure", "dense", "--limit-train", "200", "--val-size", "100"]
    code, out = train(tmp_path, data_dir, *args)
    assert code == 0
    before = (out / "results.json").read_bytes()
    code, _ = train(tmp_path, data_dir, *args, "--seed", "5")
    assert code == 2 and (out / "results.json").read_bytes() == before
    code, _ = train(tmp_path, data_dir, *args, "--seed", "5", "--overwrite")
    assert code == 0 and results_of(out)["config"]["seed"] == 5


def wandb_config_of(log: Path) -> dict:
    """The config (key → value) of a run's offline W&B record log, without W&B's own keys."""
    records = list(read_wandb_records(log))
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    updates = [r.config.update for r in records if r.WhichOneof("record_type") == "config"]
    return {i.key: json.loads(i.value_json) for u in [run.config.update, *updates] for i in u
            if not i.key.startswith("_")}


def test_wandb_replay_logs_counts_as_integers():
    """A resume that replays the run's metrics.csv into a new W&B run logs what the training
    logged: the counts (params/maskable, epoch) as integers, the rest as floats. Every value
    was replayed as a float, so the resumed offline run's params/maskable read 1.99142e+06
    where the first run's read 1991420."""
    logged = []

    class Logger:
        def log_metrics(self, metrics, step):
            logged.append((metrics, step))

    replay_history(Logger(), [
        {"params/maskable": "1991420", "lr": "", "epoch": "", "step": "0"},
        {"epoch": "0", "train/acc": "1.0", "lr": "1e-05", "val/loss": "nan", "step": "31"}])
    (first, step0), (second, step31) = logged
    assert (step0, step31) == (0, 31) and first == {"params/maskable": 1991420}
    assert type(first["params/maskable"]) is int and type(second["epoch"]) is int
    assert [type(second[k]) for k in ("train/acc", "lr", "val/loss")] == [float] * 3
    assert second["train/acc"] == 1.0 and second["lr"] == 1e-05


def test_wandb_trained_baseline_run_finishes(tmp_path, data_dir, monkeypatch):
    """The trained dense baseline (a sweep's baseline cell) has no masks: no ticket, the run
    finishes and logs (it ended in a traceback, without results.json, at the ticket). Its W&B
    config says it prunes nothing (it said sparsity 0.5, the default it never reads, so W&B
    grouped it with the 50 %-sparse runs) and holds no option of the structures. Its
    ``params/kept`` is every weight it trains, as the sweep's table counts it (it logged 0:
    the kept weights of masks it has none of)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    code, out = train(tmp_path, data_dir, "--arch", "fc2", "--train-weights", "--wandb",
                      "--limit-train", "256", "--val-size", "64")
    assert code == 0 and not (out / "model.ticket").exists()
    log = next(Path(results_of(out)["wandb_dir"]).glob("run-*.wandb"))
    assert read_wandb_summary(log)["test/acc"] == pytest.approx(results_of(out)["test_acc"])
    params = results_of(out)["params"]
    logged = [json.loads(i.value_json) for r in read_wandb_records(log)
              if r.WhichOneof("record_type") in ("history", "summary")
              for i in (r.history.item if r.WhichOneof("record_type") == "history"
                        else r.summary.update)
              if (i.key or "/".join(i.nested_key)) == "params/kept"]
    assert params["maskable"] == 0 and len(logged) > 1 and set(logged) == {params["trainable"]}
    config = wandb_config_of(log)
    assert config["sparsity"] == 0.0 and config["train_weights"] is True
    assert not {"pairs", "activation", "init", "score_init", "model_kwargs"} & set(config)


def test_wandb_offline_run_holds_test_accuracy(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    code, out = train(tmp_path, data_dir, "--arch", "fc2", "--structure", "dense", "--wandb",
                      "--limit-train", "640", "--val-size", "100", "--wandb-tags", "paper,fc2",
                      "--wandb-notes", "a test run", "--wandb-entity", "lotterynet-tests",
                      "--trainer.log_every_n_steps", "2", "--log-model")
    assert code == 0
    results = results_of(out)
    logs = list(Path(results["wandb_dir"]).glob("run-*.wandb"))
    assert len(logs) == 1 and Path(results["wandb_dir"]).name.startswith("offline-run-")
    summary = read_wandb_summary(logs[0])
    assert summary["test/acc"] == pytest.approx(results["test_acc"])
    assert summary["params/kept"] == results["params"]["kept"]
    assert summary["val/acc_best"] == pytest.approx(results["val_acc"])
    assert {"train/loss", "val/acc", "train/acc", "lr", "density/fc1", "density/fc2"} <= set(
        summary)
    records = list(read_wandb_records(logs[0]))
    rows = [{i.key or "/".join(i.nested_key) for i in r.history.item} for r in records
            if r.WhichOneof("record_type") == "history"]
    # 10 steps, logged every 2: the step loss five times; the learning rate (scheduled per
    # epoch) once per epoch
    assert sum("train/loss" in row for row in rows) == 5
    assert sum("lr" in row for row in rows) == results["epochs_done"]
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    updates = [r.config.update for r in records if r.WhichOneof("record_type") == "config"]
    keys = [i.key or "/".join(i.nested_key) for u in [run.config.update, *updates] for i in u]
    keys = [k for k in keys if not k.startswith("_")]  # W&B's own (_wandb)
    assert len(keys) == len(set(keys)) and {"arch", "sparsity", "lr", "epochs"} <= set(keys)
    assert wandb_config_of(logs[0])["sparsity"] == 0.5
    assert not {"overwrite", "progress_bar", "out", "spec", "optim", "config"} & set(keys)
    assert (list(run.tags), run.notes, run.entity) == (["paper", "fc2"], "a test run",
                                                       "lotterynet-tests")
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert sorted((a.type, a.name) for a in artifacts) == [  # the ticket; the checkpoint
        ("model", f"model-{run.run_id}"), ("model", f"ticket-{run.run_id}")]
    assert (out / "model.ticket").is_file()


def test_ddp_on_cpu_two_ranks_agree(tmp_path, data_dir):
    """Two gloo ranks end with the same masks: LeNet5's subset-sum layers, and each rank
    serving its share of the frozen convs' output from its own data module. The first step's
    train/loss is the mean of the two ranks' batch losses (it was rank 0's alone)."""
    out = tmp_path / "ddp"
    proc = prefork.run(  # (rank 0 forked; the rank it launches is started by Lightning)
        [sys.executable, "train.py", "--arch", "lenet5", "--structure", "subsetsum", "--lr", "0.05",
         "--accelerator", "cpu", "--devices", "2", "--limit-train", "1000", "--val-size", "200",
         "--epochs", "1", "--no-progress-bar", "--data-dir", str(data_dir), "--out", str(out),
         "--trainer.log_every_n_steps", "1", "--trainer.limit_test_batches", "1"],
        cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "all_gather is deprecated" not in proc.stderr  # torch's, about Lightning's call
    results = results_of(out)
    assert results["devices"] == 2
    first, second = results["mask_digests"]
    assert first == second and first > 0
    assert results["test_acc"] > 0.2
    with open(out / "metrics.csv") as f:
        logged = next(float(r["train/loss"]) for r in csv.DictReader(f) if r["train/loss"])
    config = make_config({**results["config"], "devices": 1})
    data = TensorDataModule(config.dataset, data_dir, val_size=config.val_size,
                            limit_train=config.limit_train, seed=config.seed)
    data.setup()
    module = build_module(config, data)  # the weights and scores before the first step
    x, y = data.splits["train"]
    with torch.no_grad():
        losses = [F.cross_entropy(module.model(x[i]), y[i]) for i in (
            EpochPermutation(len(x), shuffle=True, seed=config.seed, rank=rank,
                             world=2).indices()[:config.batch_size] for rank in (0, 1))]
    assert abs(losses[0] - losses[1]) > 1e-3  # (so that rank 0's alone would be told apart)
    assert logged == pytest.approx(float(sum(losses) / 2), rel=1e-5)


#: Windows, as far as this machine can be it: lotterynet imported afresh (torch kept) where
#: there is no fcntl, no signal mask, no folder that os.open opens (PermissionError; and so
#: shutil.rmtree walks folders by their names, as there, where nothing takes ``dir_fd``:
#: Linux's opened them, and torch 2.9's temporary folder, removed at exit, ended the process
#: with a traceback) and no fsync of a file opened read-only (EBADF: FlushFileBuffers needs
#: write access); a ticket of a converted model saved into argv[1] and loaded, then
#: ``train.py`` with the rest.
WINDOWS_LIKE = """
import fcntl, os, runpy, shutil, signal, sys, torch
for name in [name for name in sys.modules if name.split(".")[0] == "lotterynet"]:
    del sys.modules[name]
sys.modules["fcntl"] = None
del signal.pthread_sigmask
open_file, fsync = os.open, os.fsync
def no_folders(path, *args, **kwargs):
    if os.path.isdir(path):
        raise PermissionError(13, "Permission denied", str(path))
    return open_file(path, *args, **kwargs)
def fsync_written(fd):
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
        raise OSError(9, "Bad file descriptor")
    fsync(fd)
os.open, os.fsync = no_folders, fsync_written
shutil._use_fd_functions = False
from lotterynet import SubnetLinear, convert, load_ticket, save_ticket
def net():
    return torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
model = convert(net(), sparsity=0.5, seed=0).eval()
assert isinstance(model[0], SubnetLinear)
path = sys.argv.pop(1)
save_ticket(model, path)
x = torch.randn(5, 6)
assert torch.equal(load_ticket(path, model=net()).eval()(x), model(x))
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def test_a_run_its_ticket_and_the_layers_work_without_linuxs_locks_and_signal_masks(
        tmp_path, data_dir):
    """On Windows ``train.py`` failed at once (AttributeError: module 'signal' has no
    attribute 'pthread_sigmask'), then as it imported its run (ModuleNotFoundError: fcntl); and
    every ticket or checkpoint written, a converted model's too, ended in OSError (EBADF) as
    it was fsynced (opened read-only), or in PermissionError as its folder was. Now the ticket
    loads bit for bit and the run trains, unlocked, and writes its results and its ticket."""
    out = tmp_path / "run"
    done = prefork.run([sys.executable, "-c", WINDOWS_LIKE, tmp_path / "t.ticket", *SMALL,
                        "--arch", "fc2", "--limit-train", "256", "--val-size", "0",
                        "--data-dir", str(data_dir), "--out", str(out)], cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert results_of(out)["test_acc"] > 0.1
    assert any(isinstance(m, SubnetLinear) for m in load_ticket(out / "model.ticket").modules())


@pytest.mark.parametrize("platform, name", [("win32", "timm-resnet18"),
                                            ("linux", "timm:resnet18")])
def test_a_timm_runs_default_folder_holds_no_colon_on_windows(monkeypatch, platform, name):
    """``--arch timm:resnet18`` without ``--out`` made ``runs/timm:resnet18-…`` (and a sweep
    ``runs/sweep-timm:resnet18-grid``): Windows forbids ":" in a name, so neither could be
    made there. On Windows ":" is "-"; elsewhere the names are as they were (existing runs and
    sweeps keep their folders)."""
    from types import SimpleNamespace

    from lotterynet.run_dir import default_run_dir
    from lotterynet.sweep_grid import sweep_dir_of

    monkeypatch.setattr(sys, "platform", platform)
    config = make_config({"arch": "timm:resnet18", "sparsity": 0.9})
    assert default_run_dir(config) == Path("runs") / f"{name}-dense-s0.9-relu-e10-seed0"
    sweep = SimpleNamespace(base={"arch": "timm:resnet18"})
    assert sweep_dir_of(sweep, None, None) == Path(f"runs/sweep-{name}-grid")


def test_cli_subprocess_bad_input_and_help():
    proc = subprocess.run([sys.executable, "train.py", "--structure", "bogus"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "bogus" in proc.stderr and "Traceback" not in proc.stderr
    help_text = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO,
                               capture_output=True, text=True, timeout=120).stdout
    for name in FIELDS:
        assert "--" + name.replace("_", "-") in help_text
    assert "PRUNED" in help_text and "(default: 0.5)" in help_text


def test_help_says_which_examples_limit_train_keeps_and_the_timm_lr(data_dir):
    """``--limit-train N`` keeps the first N of a fixed shuffle (the help said "the first N"),
    and a timm model's recipe lr is 0.1 (the help named only the paper's architectures)."""
    x, _ = load_or_download("mnist", data_dir, train=True)
    kept = []
    for seed in (0, 1):
        data = TensorDataModule(data_dir=data_dir, limit_train=100, seed=seed)
        data.setup()
        kept.append(data.splits["train"][0])
    assert torch.equal(*kept) and not torch.equal(kept[0], x[:100])
    assert "the first N of a fixed (seeded) shuffle" in FIELDS["limit_train"].metadata["help"]
    lr = recipe_lr("timm:resnet18", None)
    assert f"{lr:g} for timm models" in FIELDS["lr"].metadata["help"]


def test_help_names_every_architecture():
    """``--arch``'s help (a fixed text: --help imports no torch) names every registered
    architecture, as the error for an unknown one lists them; it left out lenet5_dacunha,
    a target architecture, which it now names with the --train-weights it needs."""
    text = FIELDS["arch"].metadata["help"]
    own = [n for n in MODELS.names() if MODELS.get(n).__module__.startswith("lotterynet.")]
    assert "fc2" in own and all(re.search(rf"\b{name}\b", text) for name in own)  # (not
    # the architectures other test files register)
    targets = [name for name in own if recipe(name).target_only]
    assert targets == ["lenet5_dacunha"]
    for name in targets:
        assert re.search(rf"{name} \([^)]*only with --train-weights\)", text)


def flag_help(flag: str) -> str:
    """``flag``'s entry in ``python train.py --help``, on one line."""
    text = build_parser().format_help()
    entry = re.search(rf"\n  {flag}\b.*?(?=\n  -|\n\n)", text, re.S).group()
    return " ".join(entry.split())


@pytest.mark.parametrize("flag, choices", [
    ("--structure", [*STRUCTURES.names(), "wide"]), ("--match", STRUCTURES.names()),
    ("--activation", list(ACTIVATIONS)), ("--init", DISTRIBUTIONS.names()),
    ("--conv-init", DISTRIBUTIONS.names()), ("--precision", PRECISIONS)])
def test_help_names_every_choice_of_a_registered_name(flag, choices):
    """--structure named only dense, subsetsum and wide ("or any registered structure"), and
    --match, --activation, --init and --conv-init no choice at all; each now lists what the
    registry it is checked against holds (kept in the command line, which imports no torch).
    --precision named 32-true, bf16-mixed and 16-mixed, not the 64-true, bf16-true and 16-true
    that a run takes too."""
    assert tuple(sorted(choices)) == NAMED_CHOICES[flag[2:].replace("-", "_")]
    assert f"; choices: {', '.join(sorted(choices))} (default: " in flag_help(flag)


@pytest.mark.parametrize("flag, choices", [
    ("--dataset", DATASETS.names()), ("--optimizer", OPTIMIZERS.names()),
    ("--scheduler", SCHEDULERS.names()), ("--fan-in", FAN_INS), ("--score-init", SCORE_BOUNDS)])
def test_help_lists_the_choices_of_every_named_option_as_the_registered_ones_do(flag, choices):
    """--dataset, --optimizer, --scheduler, --fan-in and --score-init named their values in
    prose of their own ("data set (mnist, fashion-mnist, cifar10)", "cosine (...) or
    constant"), not in the "; choices: ..." of the flags above; each now lists, in that form,
    what its value is checked against (a registry, structures.FAN_INS, masking.SCORE_BOUNDS)."""
    assert tuple(sorted(choices)) == NAMED_CHOICES[flag[2:].replace("-", "_")]
    assert f"; choices: {', '.join(sorted(choices))} (default: " in flag_help(flag)


def test_help_says_a_sweep_file_gives_the_seeds_and_baseline():
    """--sweep-seeds said "(default 0)" and --baseline "(default: yes)", where a sweep file's
    seeds and baseline are the default."""
    assert "(default: the sweep file's seeds, else 0)" in flag_help("--sweep-seeds")
    assert "(default: the sweep file's baseline, else yes)" in flag_help("--baseline")


@pytest.mark.parametrize("given, unified", [(32, "32-true"), ("32", "32-true"),
                                             (64, "64-true"), ("bf16", "bf16-mixed")])
def test_lightnings_historical_precisions_are_read_as_lightning_reads_them(given, unified):
    assert make_config({"precision": given}).precision == unified


def test_flags_override_config_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"arch": "fc4", "sparsity": 0.9, "epochs": 7}))
    args = build_parser().parse_args(["--config", str(config), "--sparsity", "0.25"])
    resolved = config_from_args(args)
    assert (resolved.arch, resolved.sparsity, resolved.epochs) == ("fc4", 0.25, 7)


def test_a_config_file_is_read_as_utf_8_whatever_the_locale(tmp_path):
    """A config file is read as UTF-8, YAML's encoding, as an editor saves it:
    under the locale's encoding (cp1252 on Windows, ASCII here) its 'é' was 'Ã©', or the
    file was refused ("... cannot be read as text: 'ascii' codec can't decode byte 0xc3")."""
    config = tmp_path / "c.yaml"
    config.write_text("wandb_notes: résumé, γ = 0.5\n", encoding="utf-8")
    script = ("import sys; from lotterynet.config import load_yaml; "
              "print(ascii(load_yaml(sys.argv[1])))")
    done = subprocess.run([sys.executable, "-c", script, config], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "LC_ALL": "C",
                                                      "PYTHONCOERCECLOCALE": "0",
                                                      "PYTHONUTF8": "0"})
    assert done.stdout == "{'wandb_notes': 'r\\xe9sum\\xe9, \\u03b3 = 0.5'}\n", done.stderr


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("edgepopup_conv*.yaml")),
                         ids=lambda p: p.name)
def test_edgepopup_configs_hold_the_papers_recipe(path):
    """Ramanujan et al.'s CIFAR-10 recipe (hidden-networks' configs/smallscale/convN/*_usc_*):
    every layer a subnet layer, signed-constant weights, half kept, SGD lr 0.1, momentum 0.9,
    weight decay 1e-4, batch 128, cosine over 100 epochs, trained on all 50,000 training
    images (the reference evaluates on the test set; no validation hold-out), augmented by the
    reference's random crop (4-pixel padding) and horizontal flip (data/cifar.py)."""
    config = config_from_args(build_parser().parse_args(["--config", str(path)]))
    assert (config.arch, config.dataset) == (path.stem.split("_")[1], "cifar10")
    assert (config.structure, config.init, config.sparsity, config.train_weights) == \
        ("dense", "signed_constant", 0.5, False)
    assert (config.optimizer, config.lr, config.momentum, config.weight_decay,
            config.batch_size, config.scheduler, config.epochs) == \
        ("sgd", 0.1, 0.9, 1e-4, 128, "cosine", 100)
    assert (config.val_size, config.limit_train, config.augment) == (0, None, "crop-flip")


@pytest.mark.parametrize("arch", ["fc2", "fc4", "lenet5"])
def test_pensia_configs_hold_the_papers_recipe(arch):
    """Pensia et al.'s Experiment 2 recipe (../shared/DESIGN.md), as the Figure 2 sweep files
    hold it: SGD, momentum 0.9, weight decay 5e-4, batch 64, cosine, lr 0.1 (FC) or 0.01
    (LeNet5), Kaiming-normal weights, 5 pairs, trained on all 60,000 MNIST training images (the
    files held 5,000 out for validation)."""
    config = config_from_args(build_parser().parse_args(
        ["--config", str(REPO / "configs" / f"pensia_{arch}.yaml")]))
    assert (config.arch, config.dataset, config.structure, config.pairs, config.init) == \
        (arch, "mnist", "subsetsum", 5, "kaiming_normal")
    assert (config.optimizer, config.lr, config.momentum, config.weight_decay,
            config.batch_size, config.scheduler) == \
        ("sgd", 0.01 if arch == "lenet5" else 0.1, 0.9, 5e-4, 64, "cosine")
    assert (config.val_size, config.limit_train, config.augment) == (0, None, "none")


@pytest.mark.parametrize("flags", [["--arch", "fc2"],
                                   ["--config", str(REPO / "configs" / "pensia_fc2.yaml")]],
                         ids=["default", "config-file"])
def test_a_trained_baseline_run_by_hand_is_stored_as_the_sweeps_baseline_cell(
        flags, tmp_path, monkeypatch):
    """A --train-weights run trains the dense net: its config (results.json's) says structure
    dense, as a sweep's baseline cell does, and is the paper's trained point (it said
    subsetsum, fc2's default or the config file's); and sparsity 0, as its sweep row and W&B
    config do (it said 0.5, the default it never reads). A run stored so before still matches:
    a sweep's finished baseline cell, a resume of it."""
    config = config_from_args(build_parser().parse_args([*flags, "--train-weights"]))
    sweep = Sweep(base={"arch": "fc2"}, variants=[{"structure": "subsetsum"}],
                  sparsities=[0.7], epochs=[10])
    cell = make_config(sweep.cells()[-1][1])
    assert config.structure == cell.structure == "dense"
    assert config.sparsity == cell.sparsity == read_options(config)["sparsity"] == 0.0
    assert paper_accuracy(config.to_dict()) == TRAINED["fc2"]
    before = {**config.to_dict(), "structure": "subsetsum", "sparsity": 0.5}
    assert changed_fields(before, config.to_dict()) == []
    assert changed_fields(before, config.to_dict(), NOT_COMPUTED) == []  # (a sweep's cell)
    checkpoint = tmp_path / "last.ckpt"
    checkpoint.write_bytes(b"")
    monkeypatch.setattr(checkpointing, "stored_run", lambda path: (before, 1))
    resumed = config_from_args(build_parser().parse_args(["--resume", str(checkpoint)]))
    assert (resumed.structure, resumed.sparsity, resumed.train_weights) == ("dense", 0.0, True)
    check_same_run((checkpoint, {"hyper_parameters": {"config": before}}), resumed)


def test_flags_are_refused_only_where_nothing_reads_them(tmp_path):
    """A flag the run does not read is refused (tests/test_bad_input.py); the same options are
    accepted where something reads them, and a config file may hold options for other
    structures (one file serves several)."""
    def resolve(*flags):
        return config_from_args(build_parser().parse_args(list(flags)))

    paper = tmp_path / "paper.yaml"
    paper.write_text(yaml.safe_dump({"arch": "fc2", "pairs": 3, "activation": "identity"}))
    assert resolve("--config", str(paper), "--structure", "dense").pairs == 3
    assert resolve("--structure", "wide", "--match", "malach", "--hidden", "10").hidden == 10
    assert resolve("--structure", "wide", "--pairs", "3").pairs == 3
    assert resolve("--structure", "malach", "--pairs", "3").pairs == 3  # (its default hidden)
    assert resolve("--structure", "wide", "--match", "fixedsize", "--activation",
                   "identity").activation == "identity"  # (2n terms for ReLU: it sizes)
    assert resolve("--train-weights", "--init", "uniform").init == "uniform"  # LeNet5's convs
    assert resolve("--structure", "fixedsize", "--no-shared", "--fan-in", "target").fan_in \
        == "target"
    # a sweep refuses only what no cell reads: --pairs sizes the subset-sum and wide cells (not
    # the baseline), and a W&B sweep's agents run every cell with --wandb
    spec = tmp_path / "w.yaml"
    assert main(["--sweep-variants", "subsetsum,wide", "--sweep-sparsities", "0.5",
                 "--sweep-epochs", "1", "--pairs", "3", "--log-model", "--wandb-sweep",
                 str(spec)]) == 0
    cells = yaml.safe_load(spec.with_name("w.cells.yaml").read_text())
    assert cells["base"]["pairs"] == 3 and cells["base"]["log_model"] is True
    # a base (or flag) pairs that the subset-sum cells read, beside a malach variant whose
    # --hidden replaces it
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({
        "base": {"arch": "fc2", "pairs": 3}, "sparsities": [0.5], "epochs": [1],
        "variants": ["subsetsum", {"structure": "wide", "match": "malach", "hidden": 10}]}))
    assert main(["--sweep", str(sweep), "--pairs", "4", "--wandb-sweep", str(spec)]) == 0


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")))
def test_shipped_configs_are_valid(path):
    args = build_parser().parse_args(["--config", str(path)])
    assert config_from_args(args).arch in path.stem


def test_missing_data_offline_is_one_clear_error(tmp_path, monkeypatch, capsys):
    """Offline (every mirror unreachable, as torchvision reports it): one line that says the
    data is missing and the download failed, and the folders the download made are gone, the
    data folder's missing parents too (QA: --data-dir ../shared/data run elsewhere left one)."""
    import urllib.error

    import torchvision.datasets.mnist

    def unreachable(url, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", unreachable)
    assert main(["--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "shared" / "empty"),
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"train.py: error: fashion-mnist: no data under "
                          f"{tmp_path / 'shared' / 'empty'};")
    assert err.endswith("and the download failed (<urlopen error [Errno -2] Name or service not "
                        "known>)")
    assert list(tmp_path.iterdir()) == []  # neither the data folder nor the run


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_no_download_refuses_missing_data_at_once_without_trying_the_network(
        tmp_path, monkeypatch, capsys, sweep):
    """A missing data set was always downloaded, and torchvision's download sets no timeout:
    on a machine whose firewall drops the traffic (or a proxy that never answers) train.py and
    the sweep waited before their one line, or for ever. ``--no-download`` (a run option, as
    ``TensorDataModule(download=False)``) refuses it at once, naming the files and the flag,
    nothing tried and nothing made."""
    import torchvision.datasets.mnist

    tried = []
    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive",
                        lambda *args, **kwargs: tried.append(args))
    empty = tmp_path / "empty"
    empty.mkdir()
    if sweep:
        (tmp_path / "s.yaml").write_text(yaml.safe_dump({
            "base": {"arch": "fc2"}, "sparsities": [0.5], "epochs": [1], "variants": ["dense"]}))
        where = ["--sweep", str(tmp_path / "s.yaml"), "--sweep-out", str(tmp_path / "out")]
    else:
        where = ["--out", str(tmp_path / "out")]
    assert main([*where, "--data-dir", str(empty), "--no-download"]) == 2
    assert capsys.readouterr().err == (
        f"train.py: error: mnist: no data under {empty}; put MNIST/raw/{{train,t10k}}-"
        f"{{images-idx3,labels-idx1}}-ubyte (or .gz) there, point --data-dir or $LOTTERYNET_DATA "
        f"at the folder that holds them, or allow downloading (leave out --no-download)\n")
    assert tried == [] and sorted(tmp_path.rglob("*")) == [empty] + [tmp_path / "s.yaml"] * sweep


def test_checkpoint_save_is_atomic(tmp_path):
    from lotterynet.checkpointing import atomic_torch_save, atomic_write

    path = tmp_path / "last.ckpt"
    atomic_torch_save({"state_dict": {"w": torch.ones(3)}}, path)

    def interrupted(tmp):
        Path(tmp).write_bytes(b"half a checkpo")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_figures_and_texts_are_written_atomically(tmp_path, monkeypatch):
    """Tables and figures go through the same temporary-file-and-rename as checkpoints: a save
    that fails half way leaves the previous file whole and no temporary file behind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lotterynet.checkpointing import savefig_atomic, write_text_atomic

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    for name, magic in (("figure.png", b"\x89PNG"), ("figure.pdf", b"%PDF")):
        savefig_atomic(fig, tmp_path / name, dpi=50)
        assert (tmp_path / name).read_bytes().startswith(magic)
    write_text_atomic(tmp_path / "sweep.md", "| a |\n")
    before = sorted(p.name for p in tmp_path.iterdir())

    def broken(self, tmp, **kwargs):
        Path(tmp).write_bytes(b"half a fig")
        raise OSError("device error")

    monkeypatch.setattr(type(fig), "savefig", broken)
    with pytest.raises(OSError, match="device error"):
        savefig_atomic(fig, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    plt.close(fig)


def test_a_figure_saved_again_later_is_the_same_file(tmp_path, monkeypatch):
    """A sweep's figure.pdf redrawn from the same results differed from the committed one by
    its creation date alone, so git showed it as changed; the clock is moved a day between
    the saves (matplotlib dates a PDF by $SOURCE_DATE_EPOCH where it is set)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lotterynet.checkpointing import savefig_atomic

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    for name in ("figure.png", "figure.pdf"):
        saves = []
        for day in (0, 1):
            monkeypatch.setenv("SOURCE_DATE_EPOCH", str(86400 * day))
            savefig_atomic(fig, tmp_path / name, dpi=50)
            saves.append((tmp_path / name).read_bytes())
        assert saves[0] == saves[1], name
    plt.close(fig)


def test_registry_sgd_is_plain_sgd_bit_for_bit_on_the_cpu():
    """The fused SGD the runs use updates exactly as torch's single-tensor SGD (momentum and
    weight decay included), so fusing changed no result."""
    from lotterynet.optim import OPTIMIZERS

    start = [torch.randn(1000, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    ends = []
    for make in (OPTIMIZERS.get("sgd"), partial(torch.optim.SGD, foreach=False)):
        params = [p.clone().requires_grad_() for p in start]
        opt = make(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
        gen = torch.Generator().manual_seed(7)
        for _ in range(20):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        ends.append(params)
    assert all(torch.equal(a, b) for a, b in zip(*ends))
    assert not torch.equal(ends[0][0], start[0])


@pytest.mark.parametrize("optim, said", [
    ({"lr": np.float64("nan")}, "lr must be a positive finite number, got nan"),
    ({"momentum": np.float32(1)}, "momentum must be a finite number in [0, 1), got 1.0"),
    ({"epochs": np.int64(0)}, "or None (the Trainer's max_epochs), got 0"),
])
def test_a_refused_numpy_setting_is_shown_as_the_number_it_holds(optim, said):
    """A setting from numpy (an lr from np.logspace) was refused as 'got np.float64(nan)'."""
    from lotterynet.module import EdgePopupModule

    with pytest.raises(ValueError, match=re.escape(said) + "$"):
        EdgePopupModule({"name": "fc2"}, optim)


@pytest.mark.parametrize("mode, said", [
    ("bogus", "$WANDB_MODE is 'bogus'; valid choices: online, offline, disabled, shared, dryrun, "
              "run (or unset: online with an API key, else offline)"),
    ("", "$WANDB_MODE is ''; valid choices: online"),
    ("online", "$WANDB_MODE is 'online' but no W&B API key is configured: run `wandb login`"),
    ("shared", "$WANDB_MODE is 'shared' but no W&B API key is configured"),
])
def test_a_bad_wandb_mode_is_refused_before_anything_is_written(tmp_path, data_dir, monkeypatch,
                                                                 capsys, mode, said):
    """``$WANDB_MODE`` is input the run reads: a value wandb refuses (an empty one too), or a
    server mode without an API key, was a traceback at ``wandb.init`` (exit 1) that left files
    blocking the corrected command."""
    monkeypatch.setenv("WANDB_MODE", mode)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # (no ~/.netrc entry)
    code, out = train(tmp_path, data_dir, "--arch", "fc2", "--wandb", "--limit-train", "256",
                      "--val-size", "64")
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists()
    assert len(err.splitlines()) == 1 and err.startswith(f"train.py: error: {said}"), err


def test_a_disabled_wandb_run_names_no_folder(tmp_path, data_dir, monkeypatch, capsys):
    """``WANDB_MODE=disabled`` writes nothing: the run names no W&B folder (it named one that
    does not exist, after waiting a minute for its record log)."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    started = time.perf_counter()
    code, out = train(tmp_path, data_dir, "--arch", "fc2", "--wandb", "--limit-train", "256",
                      "--val-size", "64")
    assert code == 0 and results_of(out)["wandb_dir"] is None
    assert "W&B:" not in capsys.readouterr().out
    assert time.perf_counter() - started < 50


def wandb_history(results: dict) -> list[dict]:
    """The history rows (key → value) of the run's offline W&B record log."""
    (log,) = Path(results["wandb_dir"]).glob("run-*.wandb")
    return [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            for r in read_wandb_records(log) if r.WhichOneof("record_type") == "history"]


def test_a_resumed_offline_wandb_run_holds_the_whole_history(tmp_path, data_dir, monkeypatch):
    """W&B cannot resume an offline run: the resume's folder began a history of its own at
    ``_step`` 0 (which replaces the first folder's on ``wandb sync``). The resumed history is
    logged into it first: the resume's folder holds every row of the uninterrupted run."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    args = ["--arch", "fc2", "--structure", "dense", "--wandb", "--limit-train", "640",
            "--val-size", "100", "--epochs", "2", "--trainer.log_every_n_steps", "2"]
    assert train(tmp_path, data_dir, *args, name="whole")[0] == 0
    code, stopped = train(tmp_path, data_dir, *args, "--stop-after", "1", name="stopped")
    assert code == 0 and main(["--resume", str(stopped / "checkpoints" / "last.ckpt")]) == 0
    whole, resumed = (wandb_history(results_of(tmp_path / name)) for name in ("whole", "stopped"))

    def rows(history):  # what the training logged, without W&B's own keys (_step, _runtime…)
        return [{k: v for k, v in row.items() if not k.startswith("_")} for row in history]

    assert len(whole) > 10 and rows(resumed) == rows(whole)
    assert [row["_step"] for row in resumed] == list(range(len(whole)))


def test_a_run_stopped_part_way_through_an_epoch_logs_that_steps_loss(tmp_path, data_dir,
                                                                      capsys):
    """A callback that stops training part way through an epoch (``max_time``): the epoch is
    not counted as done (Lightning's count said 2 after 1.3 epochs), and the stopping step's
    row holds its own loss (it held the last logged step's)."""
    from conftest import StopAtStep

    config = tmp_path / "stop.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"log_every_n_steps": 4, "callbacks": [
        {"class_path": "conftest.StopAtStep", "init_args": {"step": 13}}]}}))
    StopAtStep.losses.clear()
    code, out = train(tmp_path, data_dir, "--arch", "fc2", "--structure", "dense",
                      "--limit-train", "640", "--val-size", "64", "--epochs", "3",
                      "--config", str(config))
    results = results_of(out)
    assert code == 0 and results["epochs_done"] == 1 and len(StopAtStep.losses) == 1
    # said alike everywhere (the console counted the part as an epoch and the total did not)
    assert results["partial_epoch"] == {"batches": 3, "of": 10}
    assert results["val_epoch"] == 2 and len(results["seconds_per_epoch"]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert any(re.match(r"epoch 2/3 \|.* \| stopped after 3 of 10 batches \| [\d.]+ s$", line)
               for line in lines), lines
    assert any("(1 epoch and 3 of 10 batches)" in line for line in lines), lines
    with open(out / "metrics.csv", newline="") as f:
        losses = {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f)
                  if r["train/loss"]}
    assert sorted(losses) == [3, 7, 11, 12]  # every 4th step, and the stopping one
    assert losses[12] == pytest.approx(StopAtStep.losses[0], rel=1e-6)


def test_a_trainer_stop_in_the_stop_after_epoch_finishes_the_run(tmp_path, data_dir):
    """A Trainer option that ends the run (``max_steps``, EarlyStopping) in the epoch where
    ``--stop-after`` stops too: the run is finished and tested (it said "stopped after 2
    epochs; resume", and the resume trained on past the option's end)."""
    code, out = train(tmp_path, data_dir, "--arch", "fc2", "--structure", "dense",
                      "--limit-train", "256", "--val-size", "64", "--epochs", "3",
                      "--stop-after", "2", "--trainer.max_steps", "8")  # 4 steps an epoch
    results = results_of(out)
    assert code == 0 and results["finished"] and results["epochs_done"] == 2
    assert 0 < results["test_acc"] <= 1


def test_the_runs_checkpoint_holds_a_user_checkpoint_callbacks_state_of_that_epoch(tmp_path,
                                                                                   data_dir):
    """A ModelCheckpoint of the user's beside the run's: ``last.ckpt`` holds its state after
    the epoch's save (it held the epoch before's, naming a best file already deleted)."""
    config = tmp_path / "best.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "ModelCheckpoint", "init_args": {"monitor": "val/acc", "mode": "max",
                                                        "filename": "best-{epoch}"}}]}}))
    code, out = train(tmp_path, data_dir, "--arch", "fc2", "--structure", "dense",
                      "--limit-train", "256", "--val-size", "200", "--epochs", "3",
                      "--config", str(config))
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    best = [s["best_model_path"] for k, s in state.items() if "val/acc" in k]
    assert code == 0 and len(best) == 1 and Path(best[0]).is_file()


def test_an_epoch_line_shows_a_validation_accuracy_only_when_the_epoch_validated(
        tmp_path, data_dir, capsys):
    """With validation every 2nd epoch, epochs 1 and 3 say no validation accuracy (epoch 3
    repeated epoch 2's, from a validation that did not run)."""
    code, out = train(tmp_path, data_dir, "--arch", "fc2", "--structure", "dense",
                      "--limit-train", "256", "--val-size", "64", "--epochs", "3",
                      "--trainer.check_val_every_n_epoch", "2")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert code == 0 and len(lines) == 3
    assert ["val acc" in line for line in lines] == [False, True, False]
    assert results_of(out)["val_epoch"] == 2  # (its val_acc is epoch 2's: it said not which)


def test_a_cell_resumed_by_another_wandb_agent_is_that_agents_run(tmp_path, monkeypatch):
    """W&B gives a sweep agent's run the agent's id whatever the run asks for: a cell that an
    interrupted agent left, resumed by the next agent, kept the first agent's id in
    ``RUN/wandb-id`` and (online) skipped logging its history into the new run."""
    from lotterynet.loggers import wandb_run_id

    run_dir = tmp_path / "cell"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "wandb-id").write_text("agentc\n")
    checkpoint = str(run_dir / "checkpoints" / "last.ckpt")
    monkeypatch.setenv("WANDB_RUN_ID", "agentd")
    assert wandb_run_id(run_dir, checkpoint) == ("agentc", True)  # a resume by hand
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep1")
    assert wandb_run_id(run_dir, checkpoint) == ("agentd", False)
    assert (run_dir / "wandb-id").read_text().startswith("agentd\n")


def test_trainer_options_whose_lightning_default_is_null_can_be_unset(tmp_path, capsys):
    """``--trainer.KEY null`` unsets a config file's gradient_clip_val, limit_train_batches or
    limit_test_batches: null is their default in ``pl.Trainer``'s signature (it was refused,
    "must be a number >= 0, got None"), and gives Lightning's default. Not log_every_n_steps,
    whose null would be Lightning's 50 steps, not the run's own default (at least once an
    epoch): it stays refused."""
    import pytorch_lightning as pl

    from lotterynet.trainer_options import trainer_options

    keys = ("gradient_clip_val", "limit_train_batches", "limit_test_batches")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"trainer": dict(zip(keys, (0.5, 3, 2)))}))
    nulls = [arg for key in keys for arg in (f"--trainer.{key}", "null")]
    assert main(["--arch", "fc2", "--config", str(config), *nulls, "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["trainer"].items() >= \
        dict.fromkeys(keys).items()
    given = trainer_options(dict.fromkeys(keys), tmp_path)
    built, default = (pl.Trainer(**options, logger=False, enable_checkpointing=False,
                                 enable_progress_bar=False, enable_model_summary=False)
                      for options in (given, {}))
    assert [getattr(built, key) for key in keys] == [getattr(default, key) for key in keys]
    assert main(["--arch", "fc2", "--trainer.log_every_n_steps", "null", "--print-config"]) == 2
    assert "log_every_n_steps must be a positive integer, got None" in capsys.readouterr().err
