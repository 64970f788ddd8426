"""Stacked runs: every member computes exactly what its single run computes (masks, scores,
accuracy), shared tensors are stored and run once, a killed stack resumes to the uninterrupted
result, and incompatible members are refused naming the key that differs."""

import csv
import dataclasses
import importlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import lotterynet.loggers
import lotterynet.memory
import lotterynet.run
import lotterynet.stack
import lotterynet.stack_files
import prefork
from conftest import REPO, disk_full_at, wandb_exit_code
from lotterynet.checkpointing import atomic_torch_save, epochs_done
from lotterynet.cli import main
from lotterynet.config import make_config
from lotterynet.convert import convert
from lotterynet.data import load_split
from lotterynet.datamodule import EVAL_BATCH, TensorDataModule
from lotterynet.errors import ConfigError, Interrupted, Terminated, TrainingDiverged
from lotterynet.layers import SubnetConv2d, SubnetLinear
from lotterynet.loggers import (
    own_wandb_id,
    read_wandb_records,
    read_wandb_summary,
    wandb_run_id,
)
from lotterynet.masking import masked_weights
from lotterynet.models import build_model
from lotterynet.module import EdgePopupModule
from lotterynet.optim import optim_settings, trainable_parameters
from lotterynet.run import model_spec, run
from lotterynet.run_dir import left_before_a_checkpoint, locked
from lotterynet.run_stops import NOTHING_TO_RESUME as NOTHING
from lotterynet.stack import run_stack
from lotterynet.stack_checks import check_stackable
from lotterynet.stack_files import cannot_continue, read_stack_file, write_stack_file
from lotterynet.stack_model import StackedModel, stack_models
from lotterynet.stack_module import StackModule, member_losses
from lotterynet.sweep_cells import cell_configs
from lotterynet.sweep_grid import Sweep
from lotterynet.sweep_plan import plan_stacks
from lotterynet.ticket import load_ticket, save_ticket

# Three sparsities, two epoch budgets mixed in one stack (the 0.95 member stops after epoch 1).
MEMBERS = [(0.5, 2), (0.9, 2), (0.95, 1)]


def trained_model(run_dir: Path) -> torch.nn.Module:
    """The model a run (or a stack member) ended with, rebuilt from its checkpoint by
    ``EdgePopupModule.load_from_checkpoint`` (a member's raised Lightning's KeyError
    'pytorch-lightning_version': it was written without it)."""
    return EdgePopupModule.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt").model


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """``single_run(config)``: the folder and results of ``config`` run singly, run once a
    module (the batched and one-by-one cases of a variant compare with the same runs)."""
    done = {}

    def run_once(config) -> tuple[Path, dict]:
        key = json.dumps(config.to_dict(), sort_keys=True)
        if key not in done:
            folder = tmp_path_factory.mktemp(f"single-{config.sparsity}")
            done[key] = folder, run(make_config({**config.to_dict(), "out": str(folder)}))
        return done[key]

    return run_once


@pytest.mark.parametrize("arch,variant,batched,augment", [
    ("lenet5", "subsetsum:relu", False, "none"), ("lenet5", "subsetsum:identity", False, "none"),
    ("lenet5", "wide", False, "crop-flip"),  # (augmented: a case of its own, +15 s)
    ("fc2", "subsetsum:identity", False, "none"),  # (an all-linear net; its other two: +33 s)
    ("lenet5", "subsetsum:relu", True, "none"), ("lenet5", "wide", True, "none")])
def test_members_equal_their_single_runs(tmp_path, data_dir, arch, variant, batched, augment,
                                         monkeypatch, single_run):
    """One by one (the CPU's default) each member ends with its single run's masks and scores
    bit for bit; ``batched``: the stack runs its members as one (a GPU's default) on the CPU
    too, the same masks and the scores up to float rounding (batched products). Augmented
    training batches (``augment``) are the same in the stack as in each single run."""
    vmapped, calls = StackedModel._vmapped, []
    if batched:
        monkeypatch.setattr(StackedModel.__init__, "__defaults__", (True,))
        monkeypatch.setattr(StackedModel, "_vmapped", lambda self, *args: calls.append(
            vmapped(self, *args)) or calls[-1])
    structure, _, activation = variant.partition(":")
    base = dict(arch=arch, structure=structure, activation=activation or "relu",
                limit_train=640, val_size=200, lr=0.05, progress_bar=False,
                data_dir=str(data_dir), augment=augment)
    configs = [make_config({**base, "sparsity": s, "epochs": e}) for s, e in MEMBERS]
    cells = [tmp_path / "stack" / f"m{i}" for i in range(len(configs))]
    stacked = run_stack(configs, tmp_path / "stack", cells)
    for config, cell, member in zip(configs, cells, stacked):
        single_dir, single = single_run(config)
        a, b = trained_model(single_dir), trained_model(cell)
        # each wrote its ticket: the trained subnetwork, without W&B, loading to its model
        x = torch.randn(3, 1, 28, 28)
        for model, folder in ((a, single_dir), (b, cell)):
            ticket = load_ticket(folder / "model.ticket").eval()
            assert torch.equal(ticket(x), model.eval()(x))
        for ma, mb in zip(masked_weights(a), masked_weights(b), strict=True):
            assert torch.equal(ma.mask(), mb.mask())
            assert torch.allclose(ma.scores, mb.scores, rtol=0, atol=1e-6 if batched else 0)
            assert ma.kept == mb.kept == round((1 - config.sparsity) * ma.weight.numel())
        # one by one: the same count of correct test examples (float32 vs float64 quotient)
        assert abs(single["test_acc"] - member["test_acc"]) <= (0.002 if batched else 1e-6)
        assert member["epochs_done"] == config.epochs == single["epochs_done"]
        for folder in (cell, single_dir):  # Lightning's epoch index in both checkpoints
            assert epochs_done(torch.load(folder / "checkpoints" / "last.ckpt",
                                          weights_only=True)) == config.epochs
        assert member["params"] == single["params"]
        assert member["val_epoch"] == single["val_epoch"] == config.epochs
        assert_history_as_a_single_runs(cell, single_dir)
    assert stacked[0]["test_acc"] > 0.2  # it learned: chance is 0.1
    assert bool(calls) == batched and all(out is not None for out in calls)  # never refused


def assert_history_as_a_single_runs(cell: Path, single_dir: Path) -> None:
    """A member's ``metrics.csv`` has its single run's columns, the same parameter-count row
    first, its learning rates (at each epoch's start), step losses, epochs' rows and test row
    at the same steps (it held the epoch rows alone, then all but the step losses, then the
    learning rates at each epoch's end)."""
    def rows(folder: Path) -> list[dict]:
        with open(folder / "metrics.csv", newline="") as f:
            return list(csv.DictReader(f))

    def at(rows: list[dict], key: str) -> list[tuple]:
        return [(r["epoch"], r["step"], float(r[key])) for r in rows if r[key]]

    ours, theirs = rows(cell), rows(single_dir)
    assert set(ours[0]) == set(theirs[0]) and ours[0] == theirs[0]
    for key in ("lr", "train/loss", "train/acc", "val/acc", "test/acc"):
        assert [row[:2] for row in at(ours, key)] == [row[:2] for row in at(theirs, key)]
        assert [row[2] for row in at(ours, key)] == pytest.approx(  # (float32 quotients)
            [row[2] for row in at(theirs, key)], abs=1e-6), key


def test_stack_models_takes_a_numpy_array_of_sparsities():
    """``np.linspace(...)`` as a notebook writes it: one member per number, each the model
    ``build_model`` makes of it (it was refused: "sparsities must be a sequence of numbers (one
    member each), got array([0.5, 0.9])"); a single number in an array is still refused."""
    stack = stack_models("fc2", np.linspace(0.5, 0.9, 2), seed=0)
    assert [m.spec["sparsity"] for m in stack.members] == [0.5, 0.9]
    assert all(type(m.spec["sparsity"]) is float for m in stack.members)  # (a ticket's JSON)
    x = torch.randn(3, 1, 28, 28)
    for sparsity, out in zip((0.5, 0.9), stack(x), strict=True):
        assert torch.equal(out, build_model("fc2", sparsity=sparsity, seed=0)(x))
    with pytest.raises(TypeError, match=r"^sparsities must be a sequence of numbers \(one member "
                                        r"each\), got array\(0\.5\)$"):
        stack_models("fc2", np.array(0.5))


def test_a_stacks_forward_names_a_bad_member_index_and_the_members_there_are():
    """``stack(x, members=[5])`` of a 3-member stack was a bare ``IndexError: list index out
    of range`` and ``members=[1.0]`` a bare ``TypeError``; ``[True]`` ran member 1 (a bool is an
    int), ``[-1]`` the last. Now one line names the bad value and the members there are; a
    member named twice is refused; numpy's integers and a torch integer scalar are indices,
    and ``[]`` runs none."""
    stack = stack_models("fc2", [0.5, 0.7, 0.9], seed=0, width=8)
    x = torch.randn(2, 1, 28, 28)
    choices = "the stack's members are 0 to 2"
    for members, error, said in [
            ([5], ValueError, f"members=[5]: 5 is not a member's index; {choices}"),
            ([0, -1], ValueError, f"members=[0, -1]: -1 is not a member's index; {choices}"),
            ([1.0], TypeError, f"members=[1.0]: 1.0 is not a member's index; {choices}"),
            ([True], TypeError, f"members=[True]: True is not a member's index; {choices}"),
            ([torch.tensor(False)], TypeError,
             f"members=[tensor(False)]: tensor(False) is not a member's index; {choices}"),
            ([2, 0, 2], ValueError,
             "members=[2, 0, 2]: member 2 is named twice; name each member once"),
            (1, TypeError, f"members=1 is not a list of member indices; {choices}")]:
        with pytest.raises(error, match=f"^{re.escape(said)}$"):
            stack(x, members=members)
    with pytest.raises(ValueError, match=r"^members=\[1\]: 1 is not a member's index; the "
                                         r"stack's one member is 0$"):
        StackedModel([stack.members[0]])(x, members=[1])
    outputs = stack(x)
    chosen = stack(x, members=[np.int64(2), torch.tensor(0)])
    assert len(chosen) == 2 and torch.equal(chosen[0], outputs[2]) and \
        torch.equal(chosen[1], outputs[0])
    assert stack(x, members=[]) == []


def test_a_stack_member_trained_in_your_own_loop_is_its_single_model_and_saves_its_ticket(
        tmp_path):
    """README's own loop: SGD over ``stack.parameters()`` on the sum of the members' losses
    trains each member as its single model trained alone (the same scores, bit for bit), and
    ``stack.members[i]``, an ordinary model, saves a ticket that loads into a fresh model giving
    the member's outputs exactly."""
    stack = stack_models("fc2", [0.5, 0.9], seed=0)
    alone = build_model("fc2", sparsity=0.9, seed=0)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
                  for m in (stack, alone)]
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, y = torch.randn(8, 1, 28, 28, generator=generator), torch.arange(8)
        losses = [sum(F.cross_entropy(out, y) for out in stack(x)), F.cross_entropy(alone(x), y)]
        for optimizer, loss in zip(optimizers, losses):
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for mine, its in zip(masked_weights(stack.members[1]), masked_weights(alone), strict=True):
        assert torch.equal(mine.scores, its.scores) and torch.equal(mine.mask(), its.mask())
    save_ticket(stack.members[1], tmp_path / "member.ticket")
    loaded = load_ticket(tmp_path / "member.ticket", build_model("fc2", sparsity=0.9, seed=0))
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(loaded(x), stack(x)[1]) and torch.equal(loaded(x), alone(x))


def test_shared_tensors_are_stored_and_run_once():
    stack = stack_models("lenet5", [0.0, 0.5, 0.9, 0.99], structure="subsetsum", seed=3)
    assert stack.shared_prefixes == 1
    calls = []
    frozen_conv = stack.members[0][0]
    frozen_conv.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(5, 1, 28, 28)
    outputs = stack(x)
    assert len(calls) == 1  # LeNet5's random convs ran once for four members
    for s, (sparsity, out) in enumerate(zip([0.0, 0.5, 0.9, 0.99], outputs)):
        alone = build_model("lenet5", structure="subsetsum", sparsity=sparsity, seed=3)
        assert torch.equal(alone(x), out)
        # one copy of every frozen tensor: the members' frozen weights are the same tensor
        for mine, first in zip(masked_weights(stack.members[s]), masked_weights(stack.members[0])):
            assert mine.weight is first.weight and (s == 0 or mine.scores is not first.scores)
    unique = {p.data_ptr() for p in stack.parameters() if not p.requires_grad}
    assert len(unique) == sum(1 for p in stack.members[0].parameters() if not p.requires_grad)
    # different seeds: different frozen weights, so nothing is shared between them
    two_seeds = StackedModel([build_model("lenet5", sparsity=0.5, seed=s) for s in (0, 1)])
    assert two_seeds.shared_prefixes == 2 and two_seeds.shared_prefix is None
    # given the shared prefix's output, the stack runs only the rest
    with torch.no_grad():
        prefixed = stack(stack.shared_prefix(x), prefixed=True)
    assert len(calls) == 2 and all(torch.equal(a, b) for a, b in zip(prefixed, outputs))
    # members of two prefixes cannot take one prefix's output (member 1 ran its own on it)
    with pytest.raises(ValueError, match="these members have 2 different ones"):
        two_seeds(two_seeds._prefixes[0](x), prefixed=True)


def test_unfreeze_after_freeze_trains_what_the_members_are_built_to_train():
    """Lightning's ``freeze()`` then ``unfreeze()`` of a stack made every parameter require
    grad, its members' frozen random weights too (LeNet5's random convolutions, the subnet
    layers' weights), which a training forward then refused; unfreeze gives back the builds'."""
    members = [{"name": f"m{s}", "spec": {"name": "lenet5", "sparsity": sparsity},
                "optim": {"lr": 0.01, "epochs": 1}, "config": {}}
               for s, sparsity in enumerate([0.5, 0.9])]
    module = StackModule(members)
    built = {name: p.requires_grad for name, p in module.named_parameters()}
    assert not built["model.members.0.0.weight"]  # (LeNet5's random convolution)
    assert built["model.members.1.7.structure.weight.scores"]
    module.freeze()
    assert not any(p.requires_grad for p in module.parameters())
    module.unfreeze()
    assert module.training and {n: p.requires_grad for n, p in module.named_parameters()} == built
    sum(out.sum() for out in module.model(torch.randn(2, 1, 28, 28))).backward()
    assert {n for n, p in module.named_parameters() if p.grad is not None} == {
        n for n, trains in built.items() if trains}


def test_members_laid_out_differently_are_refused():
    """One member channels last, another not: the stack made the frozen weights one tensor (of
    the first member's layout) and laid every member's masks out as the first's, so the other
    computed in a layout not its own (its output off its single run's by rounding) or read two
    (slower). Refused, naming the tensor, and so a weight laid out otherwise (strides neither
    format has: it was taken for contiguous); members laid out alike stack, and so do members
    whose tensors differ in shape."""
    def member(layout: str) -> nn.Module:
        model = nn.Sequential(SubnetConv2d(4, 8, 3, sparsity=0.5, seed=0), nn.Flatten())
        if layout == "channels last":
            model.to(memory_format=torch.channels_last)
        if layout == "other":  # (8, 4, 3, 3) with the kernel's columns outermost after out
            frozen = model[0].structure.weight.weight
            frozen.data = frozen.data.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
        return model

    for layouts, said in (
            (("contiguous", "channels last"), "channels last in member 1 but contiguous"),
            (("channels last", "contiguous"), "contiguous in member 1 but channels last"),
            (("contiguous", "other"),
             r"laid out with strides \(36, 9, 1, 3\) in member 1 but contiguous")):
        with pytest.raises(ValueError, match=r"laid out alike: 0\.structure\.weight\.weight is "
                                             rf"{said} in member 0; give every member one"):
            StackedModel([member(c) for c in layouts])
    StackedModel([member("channels last"), member("channels last")])
    StackedModel([member("other"), member("other")])
    # tensors of other shapes share nothing: their strides differ, and they are not compared
    StackedModel([SubnetLinear(n, 10, sparsity=0.5, seed=0) for n in (20, 30)])


def test_a_stack_runs_its_shared_convs_once_per_example(tmp_path, data_dir, monkeypatch):
    """As in a single run, the data module serves the shared frozen convs' output: each
    example of each split goes through them once, whatever the epochs and members."""
    seen = []
    conv = torch.nn.Conv2d.forward

    def counting(self, x):
        if x.shape[1] == 1 and x.device.type != "meta":  # the first convolution (not the
            # memory check's forward on the meta device, which runs no example)
            seen.append(len(x))
        return conv(self, x)

    monkeypatch.setattr(torch.nn.Conv2d, "forward", counting)
    base = dict(arch="lenet5", structure="subsetsum", limit_train=320, val_size=100, epochs=2,
                progress_bar=False, data_dir=str(data_dir))
    configs = [make_config({**base, "sparsity": s}) for s in (0.5, 0.9, 0.99)]
    run_stack(configs, tmp_path / "stack", [tmp_path / f"m{i}" for i in range(3)])
    assert sum(seen) == 320 + 100 + 10_000


def test_members_that_finish_together_are_tested_in_one_pass(tmp_path, data_dir, monkeypatch):
    """The test set goes through the stack once per batch for all the members finishing at
    that epoch (the frozen prefix once, not once per member), and each member's test accuracy
    is its own trained model's, evaluated alone."""
    calls = []
    forward = StackedModel.forward

    def counting(self, x, members=None, prefixed=False):
        if not self.training:
            calls.append(len(members))
        return forward(self, x, members, prefixed)

    monkeypatch.setattr(StackedModel, "forward", counting)
    base = dict(arch="lenet5", structure="subsetsum", limit_train=128, val_size=0, epochs=1,
                progress_bar=False, data_dir=str(data_dir))
    configs = [make_config({**base, "sparsity": s}) for s in (0.5, 0.9, 0.99)]
    cells = [tmp_path / f"m{i}" for i in range(len(configs))]
    results = run_stack(configs, tmp_path / "stack", cells)
    images, labels = load_split("mnist", data_dir, train=False)
    assert calls == [3] * -(-len(labels) // EVAL_BATCH)  # every test batch: all three at once
    for result, cell in zip(results, cells):
        model = trained_model(cell).eval()
        with torch.no_grad():
            predicted = torch.cat([model(x).argmax(1) for x in images.split(EVAL_BATCH)])
        assert result["test_acc"] == pytest.approx((predicted == labels).double().mean().item(),
                                                   abs=1e-12)


def test_timm_models_stack_and_stochastic_ones_are_refused():
    pytest.importorskip("timm")
    members = [build_model("timm", model_name="resnet10t", structure="dense", sparsity=s,
                           in_chans=1, num_classes=10, seed=0) for s in (0.5, 0.9)]
    x = torch.randn(2, 1, 32, 32)
    expected = [m.eval()(x) for m in members]
    stack = StackedModel(members).eval()
    for out, ref in zip(stack(x), expected):
        assert torch.equal(out, ref)
    named = stack_models("timm:resnet10t", [0.5, 0.9], structure="dense", in_chans=1,
                         num_classes=10, seed=0).eval()  # --arch's spelling
    assert all(torch.equal(a, b) for a, b in zip(named(x), expected, strict=True))
    with pytest.raises(ValueError, match="unknown timm model 'resnet10tx'"):
        stack_models("timm:resnet10tx", [0.5])
    dropout = [build_model("timm", model_name="resnet10t", structure="dense", sparsity=0.5,
                           in_chans=1, num_classes=10, seed=0,
                           model_kwargs={"drop_rate": 0.2})] * 2
    with pytest.raises(ValueError, match="drop_rate"):
        StackedModel(dropout)

    from torchvision.ops import StochasticDepth

    # attention dropout, stochastic depth and RReLU draw in training too (they were stacked,
    # and member 1 no longer matched its single run); the same modules drawing nothing stack
    for random, said, quiet in (
            (nn.MultiheadAttention(8, 2, dropout=0.5), "dropout=0.5",
             nn.MultiheadAttention(8, 2)),
            (StochasticDepth(0.1, "row"), "p=0.1", StochasticDepth(0.0, "row")),
            (nn.RReLU(), "upper - lower=", nn.RReLU(0.2, 0.2))):
        with pytest.raises(ValueError, match=f"has {said}"):
            StackedModel([convert(nn.Sequential(nn.Linear(8, 8), random), sparsity=0.5, seed=0)
                          for _ in range(2)])
        StackedModel([convert(nn.Sequential(nn.Linear(8, 8), quiet), sparsity=0.5, seed=0)
                      for _ in range(2)])


def test_timms_same_padded_and_standardised_convolutions_stack_vmapped():
    """Members of converted timm Conv2dSame / StdConv2d / StdConv2dSame layers (TF-"SAME"
    padding per input, weight standardisation by batch norm over the weight) run vmapped as
    one, each computing what it computes alone, and train through it."""
    from timm.layers import Conv2dSame, StdConv2d, StdConv2dSame

    def member(sparsity):
        torch.manual_seed(0)
        return convert(nn.Sequential(Conv2dSame(1, 4, 3, stride=2), nn.ReLU(),
                                     StdConv2d(4, 4, 3), nn.ReLU(),
                                     StdConv2dSame(4, 2, 3, stride=2)), sparsity=sparsity, seed=0)

    members = [member(0.5), member(0.8)]
    x = torch.randn(3, 1, 8, 9)
    stack = StackedModel(members, batched=True)
    outputs = stack(x)
    assert stack.unbatchable is None  # (vmapped, not run one by one)
    for out, alone in zip(outputs, members, strict=True):
        torch.testing.assert_close(out, alone(x))
    sum(out.sum() for out in outputs).backward()
    assert all(m[i].structure.weight.scores.grad.abs().sum() > 0 for m in members
               for i in (0, 2, 4))


@pytest.mark.parametrize("others", ["frozen", "trainable"])
def test_timms_scaled_standardised_convolutions_stack_vmapped(others):
    """Members of converted timm ScaledStdConv2d / ScaledStdConv2dSame layers (the standardised
    weight scaled by the gain each took from timm's layer: frozen, one tensor for all; or
    trainable, each member's own) run vmapped as one, each computing what it computes alone,
    and train through it, their gains too where trainable."""
    from timm.layers import ScaledStdConv2d, ScaledStdConv2dSame

    def member(sparsity):
        torch.manual_seed(0)
        model = nn.Sequential(ScaledStdConv2d(1, 4, 3), nn.ReLU(),
                              ScaledStdConv2dSame(4, 2, 3, stride=2, gamma=1.5))
        with torch.no_grad():  # (as training leaves them: not timm's 1s)
            for i in (0, 2):
                model[i].gain.uniform_(0.5, 2.0)
        return convert(model, sparsity=sparsity, seed=0, others=others)

    members = [member(0.5), member(0.8)]
    x = torch.randn(3, 1, 8, 9)
    stack = StackedModel(members, batched=True)
    outputs = stack(x)
    assert stack.unbatchable is None  # (vmapped, not run one by one)
    assert (members[0][0].gain is members[1][0].gain) == (others == "frozen")
    for out, alone in zip(outputs, members, strict=True):
        torch.testing.assert_close(out, alone(x))
    sum(out.sum() for out in outputs).backward()
    for m in members:
        for i in (0, 2):
            assert m[i].structure.weight.scores.grad.abs().sum() > 0
            assert (m[i].gain.grad is not None) == (others == "trainable")


@pytest.mark.parametrize("key, value", [("arch", "lenet5"), ("structure", "malach"),
                                        ("hidden", 64), ("lr", 0.3), ("pairs", 3)])
def test_incompatible_members_are_refused_naming_the_key(key, value):
    base = dict(arch="fc2", structure="subsetsum", sparsity=0.5)
    with pytest.raises(ConfigError, match=rf"differ in '{key}'"):
        check_stackable([make_config(base), make_config({**base, key: value, "sparsity": 0.9})])
    check_stackable([make_config(base), make_config({**base, "sparsity": 0.9, "epochs": 3})])


def test_members_of_another_seed_are_refused_as_one_batch_order_is_one_seeds():
    """A member of seed 1 stacked behind one of seed 0 trained on seed 0's batch order, yet its
    results recorded seed 1, whose single run trains on another: refused, naming the seeds."""
    base = dict(arch="fc2", structure="subsetsum", sparsity=0.5)
    said = ("cannot stack these runs: they differ in 'seed' (0 vs 1); the members of a stack "
            "may differ only in sparsity and epochs (one batch order, its seed's: a stack per "
            "seed, as a sweep makes)")
    with pytest.raises(ConfigError, match=f"^{re.escape(said)}$"):
        check_stackable([make_config(base), make_config({**base, "sparsity": 0.9, "seed": 1})])
    with pytest.raises(ConfigError, match="train-weights"):
        check_stackable([make_config({**base, "train_weights": True})] * 2)



def test_16_mixed_runs_are_not_stacked_and_a_sweep_runs_them_singly(tmp_path, monkeypatch):
    """float16 autocast scales each run's loss by its own GradScaler; a stack's members would
    share Lightning's one, updated after every member's step (its scale grew S times a step,
    and the members after an update unscaled their gradients by the new scale)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # (16-mixed needs a GPU)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    base = dict(arch="fc2", structure="subsetsum", accelerator="gpu",
                precision=16)  # (Lightning's "16-mixed")
    with pytest.raises(ConfigError, match="cannot stack 16-mixed runs.*--no-stack"):
        check_stackable([make_config({**base, "sparsity": s}) for s in (0.5, 0.9)])
    sweep = Sweep(base=base, variants=[{"structure": "subsetsum"}], sparsities=[0.5, 0.9],
                  epochs=[2], baseline=False)
    configs = cell_configs(sweep, tmp_path)
    stacks, single, _, _ = plan_stacks(sweep, tmp_path, configs, list(configs.items()))
    assert stacks == {} and single == list(configs.items())
    sweep.base = {**base, "precision": "bf16-mixed"}  # (no scaler: stacked)
    configs = cell_configs(sweep, tmp_path)
    assert len(plan_stacks(sweep, tmp_path, configs, list(configs.items()))[0]) == 1


def test_a_stopped_stack_whose_group_the_sweep_extends_resumes_and_the_new_cells_run_singly(
        tmp_path, monkeypatch):
    """A stack stopped after an epoch of two, then its sweep run with a new sparsity in its
    group: the stack was set aside as STACK.stale-1 and its members started over with the new
    one (its epochs lost). It resumes with its own members, and the new cell runs singly
    (resumable from its own checkpoint, so a later run stacks nothing of it anew)."""
    import lotterynet.sweep_plan as plan_module

    sweep = Sweep(base={"arch": "fc2"}, variants=[{"structure": "subsetsum"}],
                  sparsities=[0.5, 0.9], epochs=[2], baseline=False)
    configs = cell_configs(sweep, tmp_path)
    record = lotterynet.stack_files.StackRecord({n: c.to_dict() for n, c in configs.items()}, 1)
    monkeypatch.setattr(plan_module, "stack_record", lambda stack_dir: record)
    sweep.sparsities = [0.5, 0.7, 0.9]
    configs = cell_configs(sweep, tmp_path)
    stacks, single, said, resumed = plan_stacks(sweep, tmp_path, configs, list(configs.items()))
    stack_dir = tmp_path / "stacks" / "subsetsum-seed0"
    assert stacks == {stack_dir: list(record.members)} and resumed == {stack_dir: record}
    assert [name for name, _ in single] == ["subsetsum-s0.7-e2-seed0"] and said == {}
    # a member finished meanwhile by its own --cell run trains again with its stack (which
    # resumes with every member its checkpoint holds), its results kept: said in one line
    done = configs["subsetsum-s0.5-e2-seed0"]
    todo = [(name, config) for name, config in configs.items() if config is not done]
    stacks, _, said, _ = plan_stacks(sweep, tmp_path, configs, todo)
    assert stacks == {stack_dir: list(record.members)} and said == {stack_dir: (
        None, "resumes with every member its checkpoint holds: subsetsum-s0.5-e2-seed0, "
              "finished meanwhile outside it, trains again with it (its own results are kept, "
              "not overwritten)")}
    # run again with another lr besides the new sparsity, it says why it cannot continue as a
    # changed cell does (it said one of four reasons: "other members or configs, ...")
    (stack_dir / "checkpoints").mkdir(parents=True)
    (stack_dir / "checkpoints" / "last.ckpt").touch()
    sweep.base = {"arch": "fc2", "lr": 0.05}
    configs = cell_configs(sweep, tmp_path)
    stacks, single, said, resumed = plan_stacks(sweep, tmp_path, configs, list(configs.items()))
    assert stacks == {stack_dir: list(configs)} and single == [] and resumed == {}
    assert said == {stack_dir: (
        "stale", "cannot be continued: it was run with another config (lr 0.1 -> 0.05)")}


def test_a_stopped_sweep_resumes_its_stacks_with_other_job_slots(tmp_path):
    """A stacked sweep stopped after an epoch in one job, re-run with ``--jobs-per-device 2``:
    its group was cut into two new parts, the stopped stack's folder never looked at (its
    members' epochs lost, the folder left behind without a word). Its stack resumes as it is,
    with its members, and the estimate counts their epochs left; one that cannot continue (a
    changed lr) is set aside, saying why, as the parts start anew. The parts of a 2-job run
    resume as parts in one job, and of two stacks that hold a cell, the one that trained more
    member-epochs resumes; the other is set aside naming it."""
    import lotterynet.sweep_cost as cost_module

    sweep = Sweep(base={"arch": "fc2"}, variants=[{"structure": "subsetsum"}],
                  sparsities=[0.5, 0.7, 0.8, 0.9], epochs=[3], baseline=False)
    configs = cell_configs(sweep, tmp_path)
    stack = tmp_path / "stacks" / "subsetsum-seed0"

    def stopped(folder: Path, members: list[str], epochs: int
                ) -> lotterynet.stack_files.StackRecord:
        atomic_torch_save({"state_dict": {}, "epoch": epochs - 1, "hyper_parameters": {
            "members": [{"name": m, "config": configs[m].to_dict()} for m in members]}},
            folder / "checkpoints" / "last.ckpt")
        return lotterynet.stack_files.stack_record(folder)

    def plan(slots: int) -> tuple:
        return plan_stacks(sweep, tmp_path, configs, list(configs.items()), slots)

    parts = plan(2)[0]  # (two parts of two cells)
    assert list(parts) == [stack.with_name(f"{stack.name}-part{i}of2") for i in (1, 2)]
    record = stopped(stack, list(configs), 1)
    assert plan(2) == ({stack: list(configs)}, [], {}, {stack: record})
    hours, what = cost_module.cpu_estimate(sweep, tmp_path, jobs=2)  # (2 epochs of 4 left)
    image = cost_module.CPU_EPOCH_SECONDS["fc2"] / cost_module.FULL_EPOCH
    share = cost_module.CPU_EVAL_SHARE  # (2 epochs left of 4 members, 4 tests, one train.py)
    assert hours * 3600 == pytest.approx(
        cost_module.CPU_START_SECONDS + cost_module.CPU_IMPORT_SECONDS
        + image * (8 * (55000 + share * 5000) + 4 * share * 10000))
    assert what.startswith("4 cells, epochs of 55,000 training and 5,000 validation images: "
                           "8 stacked at")
    sweep.base = {"arch": "fc2", "lr": 0.05}
    configs = cell_configs(sweep, tmp_path)
    assert plan(2)[:3] == (parts, [], {stack: (
        "stale", "cannot be continued: it was run with another config (lr 0.1 -> 0.05)")})
    sweep.base = {"arch": "fc2"}
    configs = cell_configs(sweep, tmp_path)
    shutil.rmtree(stack)
    records = {part: stopped(part, members, 1) for part, members in parts.items()}
    assert plan(1) == (parts, [], {}, records)
    record = stopped(stack, list(configs), 2)  # (8 member-epochs, the parts 2 each)
    assert plan(1) == ({stack: list(configs)}, [], {part: ("stale", (
        f"cannot be continued: stack {stack.name} resumes {', '.join(members)} (of the stacks "
        f"that hold them, the one that trained most)")) for part, members in parts.items()},
        {stack: record})


def test_a_stack_that_cannot_be_built_is_one_line(tmp_path, data_dir):
    """A member whose fixed-size groups would keep nothing (5 terms at sparsity 0.95): the
    refusal names the architecture and the limit, as a single run's does, and writes nothing."""
    configs = [make_config(dict(arch="fc2", structure="fixedsize", sparsity=s,
                                limit_train=256, val_size=64, data_dir=str(data_dir)))
               for s in (0.5, 0.95)]
    with pytest.raises(ConfigError, match=r"cannot build 'fc2'.*0\.95.*at most 0\.8"):
        run_stack(configs, tmp_path / "stack")
    assert not (tmp_path / "stack").exists()
    # cells named alike (their metrics went under one name, and the same call again was
    # refused as another stack), or one cell given twice ("in use by another process")
    configs[1] = dataclasses.replace(configs[1], sparsity=0.9)
    for cells in ([tmp_path / "p" / "cell", tmp_path / "q" / "cell"], [tmp_path / "c"] * 2):
        with pytest.raises(ValueError, match=f"cell directory '{cells[1]}': another member's "
                                             f"cell has the name '{cells[1].name}'"):
            run_stack(configs, tmp_path / "stack", cells)
    assert not any(tmp_path.iterdir())


def test_a_stopped_stack_too_big_for_the_memory_now_says_how_to_go_on_by_its_caller(
        tmp_path, data_dir, monkeypatch):
    """A stack run from Python (``ln.run_stack``), stopped in its second epoch and then too
    big for the memory now, said "moved away ..., it lets the sweep train its 2 unfinished
    members anew in parts that fit, or run the same sweep again", as its stop said "run the
    same sweep again": there is no sweep. Its lines name the same run_stack call, and calls of
    fewer members; a sweep's stacks still name the sweep (its tests)."""
    from lotterynet.errors import OutOfMemory
    from lotterynet.run_callbacks import CheckedCheckpointIO

    save = CheckedCheckpointIO.save_checkpoint

    def ctrl_c_in_epoch_2(self, checkpoint, path, storage_options=None):
        if checkpoint["epoch"] == 1:
            raise KeyboardInterrupt
        save(self, checkpoint, path, storage_options)

    configs = [make_config(dict(arch="fc2", sparsity=s, epochs=3, limit_train=128, val_size=64,
                                data_dir=str(data_dir))) for s in (0.5, 0.9)]
    with monkeypatch.context() as stopping, pytest.raises(Interrupted) as stopped:
        stopping.setattr(CheckedCheckpointIO, "save_checkpoint", ctrl_c_in_epoch_2)
        run_stack(configs, tmp_path / "stack")
    again = ("run the same run_stack call again to continue from its checkpoint (written at "
             "the end of epoch 1)")
    assert str(stopped.value) == f"stopped by Ctrl-C (SIGINT); stack stack: {again}"
    monkeypatch.setattr(lotterynet.memory, "available_memory", lambda: 2**20)
    monkeypatch.setattr(lotterynet.memory, "cgroup_memory", lambda: None)
    with pytest.raises(OutOfMemory) as refused:
        run_stack(configs, tmp_path / "stack")
    assert re.fullmatch(
        r"stack stack \(2 members\) needs at least .* and this machine has 1\.0 MiB available; "
        r"it resumes only with the members its checkpoint holds: moved away \(out of "
        + re.escape(str(tmp_path)) + r"\), its 2 unfinished members train anew in run_stack "
        r"calls of fewer members that fit, or run the same run_stack call again to continue "
        r"from its checkpoint where more memory is free", str(refused.value)), refused.value


@pytest.mark.parametrize("epochs", [1, 2])
def test_a_stack_stopped_as_it_saved_its_last_checkpoint_trains_nothing_again(
        tmp_path, data_dir, monkeypatch, capsys, epochs):
    """A stack stopped as it saved its last epoch's checkpoint, after every member's results:
    run again too big for the memory now, it was refused, "its 0 unfinished members train
    anew"; with the memory, it trained its last epoch again for nothing, saying its members
    had finished "meanwhile outside it" (without an earlier checkpoint, at one epoch, it was
    refused as holding another stack's history). Nothing trains: it says so and returns the
    members' results, its folders as they were; the stop said so too, not to "start it over"
    (no checkpoint written) or to "continue from its checkpoint"."""
    from lotterynet.run_callbacks import CheckedCheckpointIO

    save = CheckedCheckpointIO.save_checkpoint

    def ctrl_c_at_the_last(self, checkpoint, path, storage_options=None):
        if checkpoint["epoch"] == epochs - 1:
            raise KeyboardInterrupt
        save(self, checkpoint, path, storage_options)

    configs = [make_config(dict(arch="fc2", sparsity=s, epochs=epochs, limit_train=128,
                                val_size=64, data_dir=str(data_dir))) for s in (0.5, 0.9)]
    with monkeypatch.context() as stopping, pytest.raises(Interrupted) as stopped:
        stopping.setattr(CheckedCheckpointIO, "save_checkpoint", ctrl_c_at_the_last)
        run_stack(configs, tmp_path / "stack")
    assert str(stopped.value) == (
        "stopped by Ctrl-C (SIGINT); stack stack: every member has finished (its results are "
        "in its cell); run the same run_stack call again to end it, training nothing")
    kept = {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()}
    assert sum(f.name == "results.json" for f in kept) == 2
    capsys.readouterr()
    monkeypatch.setattr(lotterynet.memory, "available_memory", lambda: 2**20)
    monkeypatch.setattr(lotterynet.memory, "cgroup_memory", lambda: None)
    results = run_stack(configs, tmp_path / "stack")
    assert capsys.readouterr().out == ("stack stack: every member has finished (its results "
                                       "are in its cell); nothing to train\n")
    assert results == [json.loads((tmp_path / "stack" / "cells" / c / "results.json")
                                  .read_text()) for c in ("0", "1")]
    assert {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()} == kept


def stopped_in_second_member_init(init, members: list):
    """A ``wandb.init`` that logs as ``init`` does but stops (KeyboardInterrupt) in the second
    member's run of a stack (not the stack's own), the members' names appended to ``members``."""
    def stopped_in_the_second_member(*args, **kwargs):
        if kwargs.get("job_type") != "stack":
            members.append(kwargs["name"])
            if len(members) == 2:
                raise KeyboardInterrupt
        return init(*args, **kwargs)

    return stopped_in_the_second_member


def test_a_finished_stack_run_again_logs_the_members_its_end_did_not(tmp_path, data_dir,
                                                                      monkeypatch, capsys):
    """A stack whose end was stopped as it logged its finished members to W&B (the second
    one's ``wandb.init``) has finished: run again (``ln.run_stack``) it trains nothing and
    logs that member, once, under the id its cell keeps, saying only that nothing trains; the
    member logged before is not logged again."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    members = []
    stopped_in_the_second_member = stopped_in_second_member_init(wandb.init, members)
    configs = [make_config(dict(arch="fc2", sparsity=s, epochs=1, limit_train=128, val_size=64,
                                progress_bar=False, wandb=True, data_dir=str(data_dir)))
               for s in (0.5, 0.9)]
    cells = [tmp_path / "stack" / "cells" / name for name in ("0", "1")]
    with monkeypatch.context() as stopping, pytest.raises(Interrupted):
        stopping.setattr(wandb, "init", stopped_in_the_second_member)
        run_stack(configs, tmp_path / "stack")
    logged_before = json.loads((cells[0] / "results.json").read_text())["wandb_dir"]
    kept = own_wandb_id(cells[1])
    assert kept and "wandb_dir" not in json.loads((cells[1] / "results.json").read_text())
    capsys.readouterr()
    results = run_stack(configs, tmp_path / "stack")
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("stack")] \
        == ["stack stack: every member has finished (its results are in its cell); nothing to "
            "train"]
    assert results == [json.loads((cell / "results.json").read_text()) for cell in cells]
    assert [len(list((cell / "wandb").glob("offline-run-*"))) for cell in cells] == [1, 1]
    assert results[0]["wandb_dir"] == logged_before
    logged = logged_run(Path(results[1]["wandb_dir"]))
    assert (logged["name"], logged["id"]) == ("1", kept)
    assert logged["summary"]["test/acc"] == pytest.approx(results[1]["test_acc"])


def test_a_stack_run_in_its_own_folder_names_the_folder_in_its_lines(tmp_path, data_dir,
                                                                    monkeypatch, capsys):
    """A stack run as ``.`` (``train.py --stack-file stack.yaml`` in the stack's folder, or
    ``ln.run_stack(configs, ".")``) said "stack : ..." (the name of ``.`` is empty): its
    lines name the folder."""
    (tmp_path / "mystack").mkdir()
    monkeypatch.chdir(tmp_path / "mystack")
    configs = [make_config(dict(arch="fc2", sparsity=s, epochs=1, limit_train=64, val_size=0,
                                progress_bar=False, data_dir=str(data_dir))) for s in (0.5, 0.9)]
    run_stack(configs, ".")
    capsys.readouterr()
    run_stack(configs, ".")
    assert capsys.readouterr().out == ("stack mystack: every member has finished (its results "
                                       "are in its cell); nothing to train\n")


def test_a_cell_holding_another_configs_results_is_refused_before_training(tmp_path, data_dir):
    """``ln.run_stack`` given a member's cell that holds a finished run of another config
    returned those results as the member's (every cell finished: nothing trained; else the
    stack trained, keeping the cell as finished) where ``--stack-file`` refuses such a cell.
    It refuses it, naming the cell and what differs, before anything trains or is written."""
    def configs(sparsity):
        return [make_config(dict(arch="fc2", sparsity=sparsity, epochs=epochs, limit_train=128,
                                 val_size=64, data_dir=str(data_dir)))
                for epochs in (1, 2)]
    run_stack(configs(0.5), tmp_path / "a")
    cells = [tmp_path / "a" / "cells" / "0", tmp_path / "b" / "cells" / "1"]
    with pytest.raises(ConfigError, match=re.escape(
            f"cell directory {str(cells[0])!r} holds a finished run of another config "
            f"(sparsity differs); give the member a cell of its own")):
        run_stack(configs(0.9), tmp_path / "b", cells)
    assert not (tmp_path / "b").exists()


def test_a_members_out_other_than_its_cell_is_refused_before_anything_is_written(tmp_path):
    """``ln.run_stack`` given configs with an ``out`` of their own trained them into
    ``STACK/cells/<i>`` while each results.json named that ``out`` as its config's, a folder
    nothing was written to (``--stack-file`` refuses such a member). It refuses it in one line
    naming the member, its ``out`` and its cell; an ``out`` that is its cell is taken."""
    configs = [make_config(dict(arch="fc2", sparsity=s, out=str(tmp_path / "mine" / name)))
               for s, name in ((0.5, "a"), (0.9, "b"))]
    with pytest.raises(ValueError, match=re.escape(
            f"member 0's out {str(tmp_path / 'mine' / 'a')!r} is not its cell directory "
            f"{str(tmp_path / 'stack' / 'cells' / '0')!r}: a member's files go to its cell; "
            f"leave out unset, or pass the folders as cell_dirs") + "$"):
        run_stack(configs, tmp_path / "stack")
    assert not (tmp_path / "stack").exists() and not (tmp_path / "mine").exists()
    cells = [tmp_path / "mine" / "a", tmp_path / "other" / "a"]  # (its outs: checked next)
    same = [make_config({**c.to_dict(), "out": str(d)}) for c, d in zip(configs, cells)]
    with pytest.raises(ValueError, match=r"^cell directory .*another member's cell has the name"):
        run_stack(same, tmp_path / "stack", cells)


def test_memory_running_out_in_a_stack_run_from_python_says_what_needs_less_there(
        tmp_path, data_dir, monkeypatch):
    """Memory running out in a stack run by ``ln.run_stack`` advised "a sweep with --no-stack
    (one run per cell) or a smaller --batch-size (...; its cells then start over ...)" and to
    "run the same sweep again": there is no sweep, nor flags. It names fewer members or a
    smaller batch_size, and the same run_stack call."""
    from lotterynet.errors import OutOfMemory

    def out_of_memory(self, batch, batch_idx):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.")
    monkeypatch.setattr(StackModule, "training_step", out_of_memory)
    configs = [make_config(dict(arch="fc2", sparsity=s, limit_train=128, val_size=64,
                                data_dir=str(data_dir))) for s in (0.5, 0.9)]
    with pytest.raises(OutOfMemory) as ran_out:
        run_stack(configs, tmp_path / "stack")
    assert str(ran_out.value) == (
        "stack stack: memory ran out in training epoch 1 (one tensor alone: 2.00 GiB); a stack "
        "of fewer members or a smaller batch_size (now 64) needs less; "
        f"{NOTHING}; run the same run_stack call again to start it over in its folder")


def test_a_stack_whose_members_cannot_fit_in_memory_together_is_refused(
        tmp_path, data_dir, monkeypatch):
    """A stack's members train in one process: their memory needs add up (two FC2 subset-sum
    members, 54.9 MiB each in training, 71.8 MiB together: their equal frozen weights are held
    once, and a step's peak is in one member's part of it; with 64 MiB available each alone
    would fit). The stack is refused before its members are built, in one line, and writes
    nothing."""
    monkeypatch.setattr(lotterynet.memory, "available_memory", lambda: 64 * 2**20)
    configs = [make_config(dict(arch="fc2", sparsity=s, limit_train=256, val_size=64,
                                data_dir=str(data_dir))) for s in (0.5, 0.9)]
    with pytest.raises(ConfigError, match=r"^stack stack \(2 members\) needs at least 71\.8 "
                                          r"MiB of memory to train \(7,965,680 parameters in "
                                          r"float32, 1,991,420 of them copies of frozen ones "
                                          r"that an earlier member holds at the same place, "
                                          r"not counted again, .* "
                                          r"this machine has 64\.0 MiB available; "):
        run_stack(configs, tmp_path / "stack")
    assert not (tmp_path / "stack").exists()


def test_a_sweep_cuts_a_stack_too_big_for_memory_into_parts_that_fit(tmp_path, monkeypatch):
    """A variant's six sparsities, stacked in one process: FC2 subset-sum members need 47.3 MiB
    alone and 24.5 MiB each more (their frozen weights held once), so 110 MiB holds three. The
    sweep planned one stack of six, which passed the CPU-cost check and was refused only once
    its members were counted, after the sweep had started (a stack of 1,000 took minutes). The
    plan cuts the group into the fewest parts that pass the stack's own check (all its members
    counted on ``meta``), two of three, one member more would not; where one member alone does
    not fit, every cell runs singly (as a single run, it is refused before the sweep starts).
    Jobs that run at once share it. A stopped stack resumes with its recorded members whatever
    the memory."""
    monkeypatch.setattr(lotterynet.memory, "available_memory", lambda: 110 * 2**20)
    monkeypatch.setattr(lotterynet.memory, "cgroup_memory", lambda: None)
    sweep = Sweep(base={"arch": "fc2"}, variants=[{"structure": "subsetsum"}],
                  sparsities=[0.5, 0.6, 0.7, 0.8, 0.9, 0.95], epochs=[2], baseline=False)
    configs = cell_configs(sweep, tmp_path)
    cells = list(configs)
    stacks, single, _, _ = plan_stacks(sweep, tmp_path, configs, list(configs.items()))
    stack = tmp_path / "stacks" / "subsetsum-seed0"
    assert stacks == {stack.with_name(f"{stack.name}-part{i}of2"): cells[i - 1::2]
                      for i in (1, 2)} and single == []
    data = TensorDataModule("mnist")

    def check(members: list[str]) -> None:  # (as set_up_and_run_stack checks it)
        need = lotterynet.memory.memory_needed([(model_spec(configs[m], data), optim_settings(
            configs[m])) for m in members], configs[members[0]], stack=True)
        lotterynet.memory.check_fits("stack", need, configs[members[0]])

    for members in stacks.values():
        check(members)
    with pytest.raises(ConfigError, match=r"^stack needs at least 120\.7 MiB"):
        check(cells[:4])
    atomic_torch_save({"state_dict": {}, "epoch": 0, "hyper_parameters": {"members": [
        {"name": m, "config": configs[m].to_dict()} for m in cells]}},
        stack / "checkpoints" / "last.ckpt")
    resumed = plan_stacks(sweep, tmp_path, configs, list(configs.items()))
    assert resumed[0] == {stack: cells} and list(resumed[3]) == [stack]
    shutil.rmtree(stack)
    # two jobs at once (--jobs-per-device 2), each checked alone as it starts: the two parts of
    # three that 160 MiB holds (one for each job) together need 192.5 MiB; three parts of two,
    # 71.8 MiB each, fit in half of it
    monkeypatch.setattr(lotterynet.memory, "available_memory", lambda: 160 * 2**20)
    assert plan_stacks(sweep, tmp_path, configs, list(configs.items()), 2)[0] == {
        stack.with_name(f"{stack.name}-part{i}of3"): cells[i - 1::3] for i in (1, 2, 3)}
    monkeypatch.setattr(lotterynet.memory, "available_memory", lambda: 40 * 2**20)
    assert plan_stacks(sweep, tmp_path, configs, list(configs.items()))[:2] == (
        {}, list(configs.items()))


def test_a_sweep_says_where_it_cuts_a_stack_for_memory(tmp_path, monkeypatch, capsys):
    """A stack cut into parts because its members would not fit in memory together (above)
    showed it only in its parts' names. The sweep says so as it plans, before its line of the
    cells to run: what the members need together (169.7 MiB: 47.3 and 24.5 for each member
    more), what is available (each job's share where jobs run at once) and the parts; not
    where a stopped stack resumes whole instead."""
    import lotterynet.sweep

    monkeypatch.setattr(lotterynet.memory, "cgroup_memory", lambda: None)
    monkeypatch.setattr(lotterynet.sweep, "run_stack", lambda *args, **kwargs: None)  # (none)
    monkeypatch.setattr(lotterynet.sweep, "run_in_the_sweep", lambda *args: None)
    monkeypatch.setattr(lotterynet.sweep, "run_jobs", lambda *args: None)
    sweep = Sweep(base={"arch": "fc2"}, variants=[{"structure": "subsetsum"}],
                  sparsities=[0.5, 0.6, 0.7, 0.8, 0.9, 0.95], epochs=[2], baseline=False)
    need = "stack subsetsum-seed0: 6 members need at least 169.7 MiB of memory together"
    for have, jobs, said in (
            (110, 1, "110.0 MiB available: run as 2 parts of up to 3 members"),
            (160, 2, "160.0 MiB available (80.0 MiB for each of 2 jobs at once): run as 3 "
                     "parts of up to 2 members"),
            (40, 1, "40.0 MiB available: its cells run singly"),
            (1000, 1, None)):
        monkeypatch.setattr(lotterynet.memory, "available_memory", lambda have=have: have * 2**20)
        lotterynet.sweep.run_cells(sweep, tmp_path, jobs)
        out = capsys.readouterr().out
        assert out.startswith(f"{need}, {said}\n" * bool(said) + f"sweep {tmp_path}: 6 cells"), out
    configs = cell_configs(sweep, tmp_path)
    atomic_torch_save({"state_dict": {}, "epoch": 0, "hyper_parameters": {"members": [
        {"name": m, "config": c.to_dict()} for m, c in configs.items()]}},
        tmp_path / "stacks" / "subsetsum-seed0" / "checkpoints" / "last.ckpt")
    monkeypatch.setattr(lotterynet.memory, "available_memory", lambda: 110 * 2**20)
    lotterynet.sweep.run_cells(sweep, tmp_path, 1)  # (it resumes whole)
    assert capsys.readouterr().out.startswith(f"sweep {tmp_path}: 6 cells, 0 already done, "
                                              f"6 to run (1 stack)\n")


def test_a_sweep_run_again_does_not_say_again_that_it_cut_a_stack_for_memory(tmp_path,
                                                                             monkeypatch, capsys):
    """The line of a stack cut for memory (above) was said again on every run of the sweep
    while a cell of it was unfinished, though the cut was made on the first run and its parts
    resume. It is said as the cut is made, where no part's folder is there yet."""
    monkeypatch.setattr(lotterynet.memory, "available_memory", lambda: 110 * 2**20)
    monkeypatch.setattr(lotterynet.memory, "cgroup_memory", lambda: None)
    sweep = Sweep(base={"arch": "fc2"}, variants=[{"structure": "subsetsum"}],
                  sparsities=[0.5, 0.6, 0.7, 0.8, 0.9, 0.95], epochs=[2], baseline=False)
    configs = cell_configs(sweep, tmp_path)
    stacks = plan_stacks(sweep, tmp_path, configs, list(configs.items()), say=True)[0]
    assert "run as 2 parts of up to 3 members" in capsys.readouterr().out
    for folder, members in stacks.items():  # (the first run stopped: its parts' checkpoints)
        atomic_torch_save({"state_dict": {}, "epoch": 0, "hyper_parameters": {"members": [
            {"name": m, "config": configs[m].to_dict()} for m in members]}},
            folder / "checkpoints" / "last.ckpt")
    again = plan_stacks(sweep, tmp_path, configs, list(configs.items()), say=True)
    assert again[0] == stacks and list(again[3]) == list(stacks)
    assert capsys.readouterr().out == ""


def test_the_line_of_a_stack_cut_for_memory_says_the_memory_it_was_cut_by(tmp_path,
                                                                          monkeypatch, capsys):
    """The line read the memory available again as it was said, after the plan had cut the
    stack by what it read before: memory freed meanwhile (110 MiB, then 1000 MiB) made it say
    '1.0 GiB available: run as 2 parts of up to 3 members', a cut that 1000 MiB does not
    need. It says the figure the plan cut by, read once."""
    reads = itertools.chain([110], itertools.repeat(1000))
    monkeypatch.setattr(lotterynet.memory, "available_memory", lambda: next(reads) * 2**20)
    monkeypatch.setattr(lotterynet.memory, "cgroup_memory", lambda: None)
    sweep = Sweep(base={"arch": "fc2"}, variants=[{"structure": "subsetsum"}],
                  sparsities=[0.5, 0.6, 0.7, 0.8, 0.9, 0.95], epochs=[2], baseline=False)
    configs = cell_configs(sweep, tmp_path)
    stacks = plan_stacks(sweep, tmp_path, configs, list(configs.items()), say=True)[0]
    assert len(stacks) == 2 and capsys.readouterr().out == (
        "stack subsetsum-seed0: 6 members need at least 169.7 MiB of memory together, "
        "110.0 MiB available: run as 2 parts of up to 3 members\n")


def test_a_stack_counts_steps_as_its_single_runs(tmp_path, data_dir):
    """Lightning counts a step per optimizer step, S a batch in a stack of S: the stack's
    checkpoint said global_step 30 after 2 epochs of 10 batches with members of 2 and 1
    epochs. It says 20, the longest member's single run's; each member's checkpoint says its
    single run's (20, 10), and its history has the single run's steps. Its results.json had
    ``config.out: null`` (its config left it unset) and no ``wandb_dir``, where its single
    run's has its folder and ``wandb_dir`` (None without W&B): it has both, its out its cell,
    and beyond them only its ``stack``."""
    base = dict(arch="fc2", structure="dense", limit_train=640, val_size=100,
                progress_bar=False, data_dir=str(data_dir))
    configs = [make_config({**base, "sparsity": s, "epochs": e}) for s, e in ((0.5, 2),
                                                                                (0.9, 1))]
    cells = [tmp_path / "stack" / f"m{i}" for i in range(2)]
    run_stack(configs, tmp_path / "stack", cells)

    def global_step(folder: Path) -> int:
        return torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]

    assert global_step(tmp_path / "stack") == 20
    for config, cell, steps in zip(configs, cells, (20, 10)):
        single_dir = tmp_path / f"single-{config.sparsity}"
        run(make_config({**config.to_dict(), "out": str(single_dir)}))
        assert global_step(cell) == global_step(single_dir) == steps
        assert_history_as_a_single_runs(cell, single_dir)
        member, single = (json.loads((f / "results.json").read_text()) for f in (cell,
                                                                                 single_dir))
        assert set(member) == {*single, "stack"} and member["wandb_dir"] is None
        assert member["config"] == {**single["config"], "out": str(cell)}
        assert member["versions"] == single["versions"]  # (torch's, the code's: as recorded)


def test_a_copied_stack_logs_the_tickets_of_its_own_cells(tmp_path, data_dir, monkeypatch):
    """A stack's folders copied (``cp -r A B``, A deleted) after its first epoch, which
    finished its one-epoch member, and run again: each member's ticket was looked for in the
    cell its results.json names, A's, so none was logged; they are B's."""
    base = dict(arch="fc2", structure="dense", limit_train=300, val_size=100,
                progress_bar=False, data_dir=str(data_dir))
    configs = [make_config({**base, "sparsity": s, "epochs": e}) for s, e in ((0.5, 1), (0.9, 2))]
    names = ("dense-s0.5", "dense-s0.9")
    original, copy = tmp_path / "A", tmp_path / "B"
    run_stack([dataclasses.replace(c, stop_after=1) for c in configs], original / "stack",
              [original / name for name in names])
    assert [(original / name / "results.json").is_file() for name in names] == [True, False]
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    logged = []
    monkeypatch.setattr(lotterynet.stack, "finish_wandb",
                        lambda loggers, summary, tickets: logged.append(tickets))
    run_stack(configs, copy / "stack", [copy / name for name in names])
    assert logged == [{name: copy / name / "model.ticket" for name in names}]


def test_a_stack_is_one_wandb_run_with_every_members_metrics(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    base = dict(arch="fc2", structure="dense", limit_train=300, val_size=100, epochs=1,
                progress_bar=False, data_dir=str(data_dir), wandb=True)
    configs = [make_config({**base, "sparsity": s}) for s in (0.5, 0.9)]
    cells = [tmp_path / "cells" / name for name in ("dense-s0.5", "dense-s0.9")]
    results = run_stack(configs, tmp_path / "stack", cells)
    logs = list((tmp_path / "stack" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    summary = read_wandb_summary(logs[0])
    for cell, member in zip(cells, results):
        assert summary[f"{cell.name}/test/acc"] == pytest.approx(member["test_acc"])
        assert summary[f"{cell.name}/params/kept"] == member["params"]["kept"]
        assert summary[f"{cell.name}/val/acc_best"] == pytest.approx(member["val_acc"])
        assert summary[f"{cell.name}/density/fc1"] == pytest.approx(1 - member["config"][
            "sparsity"], abs=1e-4)
        assert {f"{cell.name}/{k}" for k in ("train/acc", "val/acc", "lr")} <= set(summary)
    # as single runs log them: each member's ticket an artifact, epochs at optimizer steps
    records = list(read_wandb_records(logs[0]))
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {i.key: json.loads(i.value_json) for i in run.config.update if i.key != "_wandb"}
    # (what its members share; not the first member's sparsity beside the list of them)
    assert config["sparsities"] == [0.5, 0.9] and "sparsity" not in config
    # what its members' own runs' configs share, as they trained: the learning rate fc2's
    # recipe gives them (the stack's showed the config's null)
    members = [logged_run(next((cell / "wandb").glob("offline-run-*")))["config"]
               for cell in cells]
    shared = {k: v for k, v in members[0].items() if all(m[k] == v for m in members)}
    assert config == {**shared, "members": [cell.name for cell in cells],
                      "sparsities": [0.5, 0.9], "epochs": 1} and config["lr"] == 0.1
    assert config["arch"] == "fc2" and run.job_type == "stack"  # (apart from its members' runs)
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert sorted(a.name for a in artifacts) == [f"ticket-{run.run_id}-{c.name}" for c in cells]
    steps = [json.loads(i.value_json) for r in records if r.WhichOneof("record_type") ==
             "history" for i in r.history.item
             if (i.key or "/".join(i.nested_key)) == "trainer/global_step"]
    # 300 examples, batch 64: 5 steps; the learning rate at the epoch's start, the step loss,
    # then the epoch
    assert steps == [0, 4, 4]
    assert {f"{c.name}/train/loss" for c in cells} <= set(summary)
    with open(cells[0] / "metrics.csv") as f:
        assert [row["step"] for row in csv.DictReader(f) if row["lr"]] == ["0"]


def logged_run(folder: Path) -> dict:
    """What the offline W&B run whose files are in ``folder`` holds: its name, id, group, job
    type, config, summary, the keys of its history and the names of its artifacts."""
    logged = {"config": {}, "history": set(), "artifacts": []}
    for record in read_wandb_records(next(folder.glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            logged.update(name=record.run.display_name, id=record.run.run_id,
                          group=record.run.run_group, job_type=record.run.job_type)
            logged["config"].update({i.key: json.loads(i.value_json)
                                     for i in record.run.config.update if i.key != "_wandb"})
        elif kind == "history":
            logged["history"] |= {i.key or "/".join(i.nested_key) for i in record.history.item}
        elif kind == "artifact":
            logged["artifacts"].append(record.artifact.name)
    return {**logged, "summary": read_wandb_summary(next(folder.glob("run-*.wandb")))}


def test_each_finished_member_is_the_wandb_run_its_single_run_would_be(tmp_path, data_dir,
                                                                         monkeypatch, capsys):
    """A stack logged with ``--wandb`` was one W&B run, its members' metrics keyed
    ``<member>/…``: a sweep's group had no run of a stacked cell (no scalar sparsity, no
    ``test/acc`` to line up against it). Each finished member is also the W&B run of its cell,
    as the cell's single run logs itself: its name, config, summary keys, history keys and
    ticket, its test accuracy its results.json's; its id kept in its cell, which a resume of
    the cell continues, and the stack says it logs them (seconds each, silent before). The
    stack run again logs no member again. With ``--log-model`` its checkpoint is its
    ``model-<id>`` artifact, as a single run's (a member's run had none). Its job type is a
    sweep's cell's, ``cell`` (it had none)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    base = dict(arch="fc2", structure="dense", limit_train=300, val_size=100, epochs=1,
                progress_bar=False, data_dir=str(data_dir), wandb=True, wandb_group="g",
                log_model=True)
    configs = [make_config({**base, "sparsity": s}) for s in (0.5, 0.9)]
    cells = [tmp_path / "cells" / name for name in ("dense-s0.5", "dense-s0.9")]
    results = run_stack(configs, tmp_path / "stack", cells)
    assert "stack stack: logging 2 members to W&B as runs of their own" in capsys.readouterr().out
    single = tmp_path / "single" / cells[0].name
    run(make_config({**configs[0].to_dict(), "out": str(single)}))
    as_single = logged_run(next((single / "wandb").glob("offline-run-*")))
    for cell, config, member in zip(cells, configs, results):
        (folder,) = (cell / "wandb").glob("offline-run-*")
        logged = logged_run(folder)
        assert json.loads((cell / "results.json").read_text())["wandb_dir"] == str(folder)
        assert (logged["name"], logged["id"], logged["group"], logged["job_type"]) == (
            cell.name, own_wandb_id(cell), "g", "cell")
        assert wandb_run_id(cell, cell / "checkpoints" / "last.ckpt") == (logged["id"], True)
        assert logged["config"]["sparsity"] == config.sparsity
        assert logged["summary"]["test/acc"] == pytest.approx(member["test_acc"])
        assert logged["artifacts"] == [f"model-{logged['id']}", f"ticket-{logged['id']}"]
        assert as_single["artifacts"] == [f"model-{as_single['id']}", f"ticket-{as_single['id']}"]
        (stored,) = [entry.local_path for record in read_wandb_records(
            next(folder.glob("run-*.wandb"))) if record.WhichOneof("record_type") == "artifact"
            for entry in record.artifact.manifest.contents if entry.path == "model.ckpt"]
        assert Path(stored).read_bytes() == (cell / "checkpoints" / "last.ckpt").read_bytes()
        assert logged["config"] == {**as_single["config"], "sparsity": config.sparsity}
        assert set(logged["summary"]) == set(as_single["summary"])
        assert logged["history"] == as_single["history"]
    capsys.readouterr()
    run_stack(configs, tmp_path / "stack", cells)
    assert [len(list((cell / "wandb").glob("offline-run-*"))) for cell in cells] == [1, 1]
    assert "logging" not in capsys.readouterr().out


def test_a_stack_logging_one_member_says_it_in_the_singular(tmp_path, data_dir, monkeypatch,
                                                           capsys):
    """A stack logging one member as a W&B run of its own said "logging 1 member to W&B as
    runs of their own"."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = make_config(dict(arch="fc2", structure="dense", limit_train=100, val_size=100,
                              epochs=1, progress_bar=False, data_dir=str(data_dir), wandb=True))
    run_stack([config], tmp_path / "stack", [tmp_path / "cells" / "a"])
    assert "stack stack: logging 1 member to W&B as a run of its own\n" in \
        capsys.readouterr().out


def test_a_sweep_logs_the_finished_members_its_stack_did_not_log(tmp_path, data_dir,
                                                                 monkeypatch, capsys):
    """A stack logs each member it finished as a W&B run of its own as it ends; where a stop
    landed in that (or ``wandb.init`` failed, online: the same, an error for a stop), the
    sweep run again skipped the finished cells and never logged them (a ``--stack-file`` run
    did). The sweep logs them, once, under the id the cell kept, with their whole history;
    the member logged before is not logged again. Its history is replayed even where a server
    would hold a run it continues (as online: a first logging that failed logged nothing).
    Where W&B refuses that run too (``wandb.init`` online, the server down), the error escaped
    the sweep as a traceback before it wrote its table, on every run of it until W&B took the
    run: it is one line among the sweep's failures (exit 1), the table is written, and the
    sweep run again logs it."""
    import wandb
    import wandb.errors

    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "sweep"
    argv = [*fc2_stack_sweep(tmp_path, data_dir, limit_train=300, epochs=1), "--wandb",
            "--sweep-out", str(out)]
    init, members = wandb.init, []
    stopped_in_the_second_member = stopped_in_second_member_init(init, members)

    def refused(*args, **kwargs):
        if kwargs.get("job_type") not in ("stack", "sweep-summary"):
            raise wandb.errors.CommError("server down")
        return init(*args, **kwargs)

    with monkeypatch.context() as stopping:
        stopping.setattr(wandb, "init", stopped_in_the_second_member)
        assert main(argv) == 130
    monkeypatch.setattr(lotterynet.loggers, "WANDB_SERVER_MODES", ("online", "offline"))
    cells = [out / "cells" / name for name in members]
    kept = own_wandb_id(cells[1])
    assert kept and not (cells[1] / "wandb").exists()
    assert all((cell / "results.json").is_file() for cell in cells)
    capsys.readouterr()
    with monkeypatch.context() as refusing:
        refusing.setattr(wandb, "init", refused)
        assert main(argv) == 1
    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if line.startswith("train.py")] == [
        f"train.py: error: cell {members[1]}: W&B refused to log it as a run of its own (server "
        f"down); its results are kept, and the sweep run again logs it"]
    assert "(1 failure)" in captured.out and (out / "sweep.csv").is_file()
    for again in range(2):
        assert main(argv) == 0
        printed = capsys.readouterr().out
        assert (f"sweep: logging 1 stacked cell to W&B as a run of its own (its stack's "
                f"logging of it did not end): {cells[1].name}\n" in printed) == (again == 0)
    first, second = (logged_run(folder) for cell in cells
                     for folder in (cell / "wandb").glob("offline-run-*"))
    results = json.loads((cells[1] / "results.json").read_text())
    assert results["wandb_dir"] == str(next((cells[1] / "wandb").glob("offline-run-*"))
                                       .relative_to(out))
    assert (second["name"], second["id"]) == (cells[1].name, kept)
    assert second["summary"]["test/acc"] == pytest.approx(results["test_acc"])
    assert second["history"] == first["history"] and "val/acc" in second["history"]
    assert second["artifacts"] == [f"ticket-{kept}"]


def sweep_rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "sweep.csv") as f:
        return list(csv.DictReader(f))


def stack_epoch_lines(console: str) -> list[str]:
    return [line for line in console.splitlines()
            if line.startswith("stack ") and ": epoch " in line]


def fc2_stack_sweep(tmp_path: Path, data_dir, limit_train: int, epochs: int) -> list[str]:
    """The arguments of a sweep that is one stack: FC2 subset-sum identity at 50 and 10 %
    kept, ``epochs`` epochs on ``limit_train`` examples."""
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "base": {"arch": "fc2", "limit_train": limit_train, "val_size": 100,
                 "progress_bar": False},
        "variants": ["subsetsum:identity"], "sparsities": [0.5, 0.9], "epochs": [epochs],
        "baseline": False}))
    return ["--sweep", str(sweep_file), "--data-dir", str(data_dir)]


@pytest.fixture(scope="module")
def fc2_stack_sweep_done(tmp_path_factory, data_dir) -> Path:
    """The folder of :func:`fc2_stack_sweep` on 640 examples for 2 epochs, run to its end
    once a module: for the tests that compare with that fresh sweep, or start from a copy of
    it (they never write into it)."""
    folder = tmp_path_factory.mktemp("fc2-stack-sweep")
    argv = fc2_stack_sweep(folder, data_dir, limit_train=640, epochs=2)
    assert main([*argv, "--sweep-out", str(folder / "out")]) == 0
    return folder / "out"


def test_killed_stack_resumes_to_the_uninterrupted_result(tmp_path, data_dir, capsys,
                                                         monkeypatch):
    argv = fc2_stack_sweep(tmp_path, data_dir, limit_train=1280, epochs=3)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main([*argv, "--sweep-out", str(whole)]) == 0
    lines = stack_epoch_lines(capsys.readouterr().out)  # one line per stack epoch
    assert [line.split(": ")[1].split(" |")[0] for line in lines] == [
        "epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all("2 members trained" in line for line in lines)
    assert ["done" in line for line in lines] == [False, False, True]
    stack_dir = killed / "stacks" / "subsetsum-identity-seed0"
    proc = prefork.Popen([sys.executable, "train.py", *argv, "--sweep-out", str(killed)],
                         cwd=REPO, start_new_session=True)
    checkpoint = stack_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # into epoch 2
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    epoch = torch.load(checkpoint, weights_only=True)["epoch"]
    assert epoch < 2 and not list((killed / "cells").glob("*/results.json"))
    check = lotterynet.stack.check_resumable

    def check_then_spoil(*args, **kwargs):  # Lightning restores what was checked, not the file
        check(*args, **kwargs)
        checkpoint.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(lotterynet.stack, "check_resumable", check_then_spoil)
    assert main([*argv, "--sweep-out", str(killed)]) == 0
    resumed = stack_epoch_lines(capsys.readouterr().out)
    assert [line.split(": ")[1].split(" |")[0] for line in resumed] == ["epoch 2/3", "epoch 3/3"]
    assert sweep_rows(killed) == sweep_rows(whole)
    for cell in sorted(p.name for p in (whole / "cells").iterdir()):
        a, b = trained_model(whole / "cells" / cell), trained_model(killed / "cells" / cell)
        assert all(torch.equal(x.mask(), y.mask())
                   for x, y in zip(masked_weights(a), masked_weights(b), strict=True))
        with open(killed / "cells" / cell / "metrics.csv") as f:  # the whole history survives
            assert [int(r["epoch"]) for r in csv.DictReader(f) if r["train/acc"]] == [0, 1, 2]
        with open(stack_dir / "metrics.csv") as f:  # each epoch's rate once, at its start
            assert [r["step"] for r in csv.DictReader(f) if r[f"{cell}/lr"]] == ["0", "20", "40"]
        results = json.loads((killed / "cells" / cell / "results.json").read_text())
        assert results["stack"]["dir"] == f"stacks/{stack_dir.name}"  # (in the sweep folder)


def tree(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def assert_run_stack_refuses(folder: Path, data_dir, epochs: int, cells: list[Path]) -> None:
    """``run_stack`` refuses ``folder``, which holds another stack's checkpoint or history,
    before writing anything into it."""
    before = tree(folder)
    configs = [make_config({"arch": "fc2", "structure": "subsetsum", "activation": "identity",
                            "sparsity": s, "epochs": epochs, "limit_train": 640,
                            "val_size": 100, "data_dir": str(data_dir)}) for s in (0.5, 0.9)]
    with pytest.raises(ConfigError, match=r"history that this stack cannot continue \((it "
                       r"was run with other members \(now without .*; now with .*\)|it has no "
                       r"checkpoint \(none was written, or it was deleted\))\); give"):
        run_stack(configs, folder, cells)
    assert tree(folder) == before


def test_a_stack_run_with_another_config_is_set_aside_not_resumed(tmp_path, data_dir, capsys,
                                                                 fc2_stack_sweep_done):
    """The same stacked sweep run again with another lr: its stack checkpoint (same member
    names) is another stack's, so the stack starts over in a fresh folder (the old one kept as
    STACK.stale-1) and gives what a fresh sweep with that lr gives; run_stack itself refuses a
    folder holding another stack's checkpoint, touching nothing."""
    argv = fc2_stack_sweep(tmp_path, data_dir, limit_train=640, epochs=2)
    rerun, fresh = tmp_path / "rerun", fc2_stack_sweep_done
    assert main([*argv, "--lr", "0.05", "--sweep-out", str(rerun)]) == 0
    old_stack = tree(rerun / "stacks" / "subsetsum-identity-seed0")
    assert main([*argv, "--sweep-out", str(rerun), "--yes"]) == 0
    assert "stack subsetsum-identity-seed0 cannot be continued: it was run with another config " \
        "(lr 0.05 -> 0.1); its files are now in" in capsys.readouterr().out
    stale = rerun / "stacks" / "subsetsum-identity-seed0.stale-1"
    assert tree(stale) == old_stack
    # the set-aside cells' results name where they and their stack now are (the old names
    # hold the new runs), in the sweep folder
    kept = rerun / "cells" / "subsetsum-identity-s0.5-e2-seed0.stale-1"
    results = json.loads((kept / "results.json").read_text())
    assert (results["run_dir"], results["stack"]["dir"]) == (f"cells/{kept.name}",
                                                            f"stacks/{stale.name}")
    assert sweep_rows(rerun) == sweep_rows(fresh)
    with open(rerun / "cells" / "subsetsum-identity-s0.5-e2-seed0" / "metrics.csv") as f:
        assert [float(r["lr"]) for r in csv.DictReader(f) if r["lr"]] == [0.1, 0.05]
    assert_run_stack_refuses(stale, data_dir, epochs=2, cells=[stale / "a", stale / "b"])
    assert tree(stale) == old_stack
    # a folder another process trains in (a --stack-file run by hand) is not renamed under it
    from lotterynet.sweep_cells import set_aside

    with locked(stale, "held as a --stack-file run holds it"):
        with pytest.raises(ConfigError, match="is in use by another process"):
            set_aside(stale, "cannot be continued")
    assert tree(stale) == old_stack


@pytest.mark.parametrize("checkpoint", [True, False])
def test_a_sweep_extended_with_new_cells_keeps_the_old_stacks_history(
        tmp_path, data_dir, capsys, checkpoint):
    """A finished sweep extended with two sparsities trains them as a new stack of the same
    variant and seed: the old stack's folder is set aside byte for byte — as STACK.done-1
    where its checkpoint shows every member finished, as STACK.stale-1 where the checkpoint
    is gone (a committed sweep keeps only the history, ``metrics.csv``) — its cells' results
    name it there, and the new stack logs into a folder of its own; ``run_stack`` itself
    refuses a folder holding such a history, touching nothing."""
    argv = fc2_stack_sweep(tmp_path, data_dir, limit_train=640, epochs=1)
    out = tmp_path / "out"
    assert main([*argv, "--sweep-out", str(out)]) == 0
    stack_dir = out / "stacks" / "subsetsum-identity-seed0"
    if not checkpoint:
        shutil.rmtree(stack_dir / "checkpoints")
    old_stack = tree(stack_dir)
    assert main([*argv, "--sweep-out", str(out), "--sweep-sparsities", "0.5,0.7,0.8,0.9"]) == 0
    said = capsys.readouterr().out
    finished = "stack subsetsum-identity-seed0 finished all its members before" in said
    refused = "stack subsetsum-identity-seed0 has no checkpoint to continue from (none was " \
        "written, or it was deleted; its history is kept): it starts over" in said
    assert (finished, refused) == (checkpoint, not checkpoint)
    stale = stack_dir.with_name(f"{stack_dir.name}.{'done' if checkpoint else 'stale'}-1")
    assert tree(stale) == old_stack
    for s in (0.5, 0.9):
        results = json.loads((out / "cells" / f"subsetsum-identity-s{s}-e1-seed0"
                              / "results.json").read_text())
        assert results["stack"]["dir"] == f"stacks/{stale.name}"
    with open(stack_dir / "metrics.csv") as f:
        members = {k.split("/")[0] for k in next(csv.reader(f)) if "/" in k}
    assert members == {"subsetsum-identity-s0.7-e1-seed0", "subsetsum-identity-s0.8-e1-seed0"}
    assert_run_stack_refuses(stale, data_dir, epochs=1, cells=[tmp_path / "a", tmp_path / "b"])
    assert tree(stale) == old_stack


def test_a_stack_stopped_before_its_first_epoch_ended_starts_over_in_its_folder(
        tmp_path, data_dir, capsys, monkeypatch):
    """A stack stopped (Ctrl-C) in its first epoch leaves a history of no finished epoch and
    no checkpoint: nothing to keep. Its line says to run the sweep again (it said only that
    there was no checkpoint to resume from). Each re-run starts it over in its folder, saying
    so; none sets it aside (it was set aside as STACK.stale-N on every re-run), and the sweep
    then ends as a fresh one does."""
    argv = [*fc2_stack_sweep(tmp_path, data_dir, limit_train=640, epochs=1),
            "--sweep-out", str(tmp_path / "out")]
    stacks = tmp_path / "out" / "stacks"
    with monkeypatch.context() as stopping:
        stopping.setattr(StackModule, "training_step", lambda *args: (_ for _ in ()).throw(
            KeyboardInterrupt))
        assert main(argv) == 130
        assert (stacks / "subsetsum-identity-seed0" / "metrics.csv").is_file()
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"train.py: error: stopped by Ctrl-C (SIGINT); stack subsetsum-identity-seed0: "
            f"{NOTHING}; run the same sweep again to start it over in its folder")
        assert main(argv) == 130
    assert main(argv) == 0
    assert [p.name for p in stacks.iterdir()] == ["subsetsum-identity-seed0"]
    assert capsys.readouterr().out.count(
        "stack subsetsum-identity-seed0: its folder holds no checkpoint (stopped before its "
        "first was written): it starts over there") == 2
    assert len(list((tmp_path / "out" / "cells").glob("*/results.json"))) == 2


def test_a_stacks_epoch_line_is_printed_once_its_checkpoint_is_written(tmp_path, data_dir,
                                                                      capsys, monkeypatch):
    """A stack's epoch line was printed before the stack checkpoint was written: Ctrl-C in
    epoch 2's save left 'epoch 2/2' on the screen of a stack that goes on from epoch 1."""
    from lotterynet.run_callbacks import CheckedCheckpointIO

    save = CheckedCheckpointIO.save_checkpoint

    def ctrl_c_in_epoch_2(self, checkpoint, path, storage_options=None):
        if checkpoint["epoch"] == 1:
            raise KeyboardInterrupt
        save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(CheckedCheckpointIO, "save_checkpoint", ctrl_c_in_epoch_2)
    argv = [*fc2_stack_sweep(tmp_path, data_dir, limit_train=320, epochs=2),
            "--sweep-out", str(tmp_path / "out")]
    assert main(argv) == 130
    captured = capsys.readouterr()
    assert [line.split(" | ")[0] for line in stack_epoch_lines(captured.out)] == [
        "stack subsetsum-identity-seed0: epoch 1/2"]
    assert captured.err.strip().splitlines()[-1] == (  # (its members' results are written)
        "train.py: error: stopped by Ctrl-C (SIGINT); stack subsetsum-identity-seed0: every "
        "member has finished (its results are in its cell); run the same sweep again to end "
        "it, training nothing")


@pytest.mark.parametrize("how, failing", [("--stack-file", 1), ("--stack-file", 2),
                                          ("--stack-file", 6), ("sweep", 2)])
def test_a_stack_that_cannot_write_a_file_says_how_it_goes_on_as_its_stop_does(
        tmp_path, data_dir, capsys, monkeypatch, how, failing):
    """A stack (``--stack-file``, or in a sweep's process) whose disk filled as it wrote a file
    (the ``failing``-th checkpoint: the stack's of epoch 1, a member's in epoch 2, the stack's
    once every member finished) ended with a line naming the file alone: it says how it goes
    on as its Ctrl-C does, by the same sweep run again (the sweep's own line does not replace
    it)."""
    if how == "sweep":
        argv = [*fc2_stack_sweep(tmp_path, data_dir, limit_train=320, epochs=2),
                "--sweep-out", str(tmp_path / "out")]
        stack_dir = tmp_path / "out" / "stacks" / "subsetsum-identity-seed0"
        cells = [tmp_path / "out" / "cells" / f"subsetsum-identity-s{s}-e2-seed0"
                 for s in (0.5, 0.9)]
    else:
        cells = [tmp_path / "cells" / name for name in ("a", "b")]
        configs = [make_config({"arch": "fc2", "structure": "dense", "sparsity": s,
                                "epochs": 2, "limit_train": 256, "val_size": 64,
                                "progress_bar": False, "data_dir": str(data_dir),
                                "out": str(c)}) for s, c in zip((0.5, 0.9), cells)]
        stack_dir = tmp_path / "stacks" / "dense-seed0"
        argv = ["--stack-file", str(write_stack_file(configs, stack_dir, cells))]
    disk_full_at(monkeypatch, failing)  # the checkpoint writes
    assert main(argv) == 1
    failed = [stack_dir, cells[0], stack_dir][[1, 2, 6].index(failing)] / "checkpoints" / \
        "last.ckpt"
    then = {1: f"{NOTHING}; run the same sweep again to start it over in its folder",
            2: "run the same sweep again to continue from its checkpoint (written at the end "
               "of epoch 1)",
            6: "every member has finished (its results are in its cell); run the same sweep "
               "again to end it, training nothing"}[failing]
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"train.py: error: disk full while writing {str(failed)!r}; the previous last.ckpt "
        f"(if any) is kept unchanged; stack {stack_dir.name}: {then}")


@pytest.mark.parametrize("epoch", [2, 1])
def test_memory_running_out_in_a_stack_is_one_line_and_the_sweep_exits_1(
        tmp_path, data_dir, capsys, monkeypatch, epoch):
    """An out-of-memory error in a stack's training step was a traceback that ended the sweep;
    it is one line naming the stack, the epoch and what needs less memory (a smaller batch:
    the sweep's, whose cells then start over), with the stack's way to go on (its checkpoint,
    or none yet: run the same sweep again), and the sweep goes on to its end and exits 1 (as
    beside a failed job)."""
    step = StackModule.training_step

    def out_of_memory(self, batch, batch_idx):
        if self.current_epoch == epoch - 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(StackModule, "training_step", out_of_memory)
    argv = [*fc2_stack_sweep(tmp_path, data_dir, limit_train=256, epochs=2),
            "--sweep-out", str(tmp_path / "out")]
    assert main(argv) == 1
    captured = capsys.readouterr()
    then = (", or run the same sweep again to continue from its checkpoint (written at the end "
            "of epoch 1) where more memory is free") if epoch > 1 else (
        f"; {NOTHING}; run the same sweep again to start it over in its folder")
    assert captured.err.strip().splitlines() == [
        f"train.py: error: stack subsetsum-identity-seed0: memory ran out in training epoch "
        f"{epoch} (one tensor alone: 2.00 GiB); a sweep with --no-stack (one run per cell) or "
        f"a smaller --batch-size (now 64; its cells then start over as new ones, the old set "
        f"aside as stale) needs less{then}"]
    assert "sweep incomplete: 2 of 2 cells without results (1 failure)" in captured.out


@pytest.mark.parametrize("header, kept", [
    ("epoch,step,a/lr,b/lr", False),  # (stopped before its first epoch ended)
    ("epoch,step,a/lr,a/train/loss,b/lr,b/train/loss", False),  # (... after some steps)
    ("epoch,step,a/lr,a/train/acc,a/train/loss,a/train/loss_epoch,a/val/acc", True),
    ("step,a/lr,a/train/acc,a/train/loss", True)])  # (an older stack's log: no epoch loss)
def test_a_stack_history_is_kept_where_it_logged_an_epoch(tmp_path, header, kept):
    """A stack folder without a checkpoint holds a stack worth keeping (set aside, not
    overwritten) where its metrics.csv logged an epoch's end, in this version's log or an
    older one's (the committed sweeps' stacks)."""
    (tmp_path / "metrics.csv").write_text(f"{header}\n0,0,0.1,0.1\n")
    assert lotterynet.stack_files.holds_a_stack(tmp_path) is kept


@pytest.mark.parametrize("budgets, where", [((2, 2), "save_checkpoint"), ((1, 2), "finish"),
                                            ((1, 2), "finished")])
def test_a_stack_stopped_before_its_first_checkpoint_starts_over_in_its_folder(
        tmp_path, data_dir, monkeypatch, capsys, budgets, where):
    """A Ctrl-C after a stack's first epoch's rows were logged but before its first checkpoint
    (as that was written; as the member whose budget the epoch ended was tested; once that
    member's results were written), a member left unfinished (a sweep killed at random landed
    there): its stop said to run it again "to start it over in its folder", but run again
    (``run_stack``, ``--stack-file``) it was refused, "holds an earlier stack's checkpoint or
    history that this stack cannot continue (it has no checkpoint ...)", and a sweep set the
    folder aside as ``STACK.stale-1`` (where none had finished: once one has, the sweep's stack
    of the cells left is another, and still does). It starts over there: its history holds
    each epoch once, and a member it had finished trains again with it, its cell's files kept
    as they were."""
    from lotterynet.run_callbacks import CheckedCheckpointIO
    from lotterynet.stack_module import MemberResults

    finish = MemberResults.finish

    def ctrl_c(*args, **kwargs):
        if where == "save_checkpoint":
            raise KeyboardInterrupt
        tested = finish(*args) if where == "finished" or not args[-1] else None
        if args[-1]:  # (a member to test: at an epoch's end; "finished": once it is written)
            raise KeyboardInterrupt
        return tested

    configs = [make_config(dict(arch="fc2", sparsity=s, epochs=e, limit_train=128, val_size=64,
                                data_dir=str(data_dir))) for s, e in zip((0.5, 0.9), budgets)]
    with monkeypatch.context() as stopping, pytest.raises(Interrupted) as stopped:
        stopping.setattr(*(CheckedCheckpointIO, where) if where == "save_checkpoint" else
                         (MemberResults, "finish"), ctrl_c)
        run_stack(configs, tmp_path / "stack")
    assert str(stopped.value) == (f"stopped by Ctrl-C (SIGINT); stack stack: {NOTHING}; run the "
                                  f"same run_stack call again to start it over in its folder")
    with open(tmp_path / "stack" / "metrics.csv", newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f) if r["1/train/acc"]] == ["0"]
    finished = {p: p.read_bytes() for p in tmp_path.glob("stack/cells/**/*") if p.is_file()}
    assert len(finished) == (4 if where == "finished" else 0)  # (its checkpoint, history,
    # ticket and results)
    capsys.readouterr()
    again = run_stack(configs, tmp_path / "stack")
    assert [r["epochs_done"] for r in again] == list(budgets)
    assert {p: p.read_bytes() for p in finished} == finished  # (kept, not tested again)
    assert capsys.readouterr().out.splitlines()[0] == (
        "stack stack: its folder holds no checkpoint (stopped before its first was written): it "
        "starts over there" + ("; 0, finished, trains again with it (its own results are kept, "
                               "not overwritten)" if where == "finished" else ""))
    with open(tmp_path / "stack" / "metrics.csv", newline="") as f:  # (each epoch's end once)
        rows = list(csv.DictReader(f))
    assert [[r["epoch"] for r in rows if r[f"{s}/train/acc"]] for s in (0, 1)] == [
        [str(epoch) for epoch in range(budget)] for budget in budgets]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack"]


def test_a_sweeps_stack_stopped_with_a_member_finished_before_its_checkpoint_says_what_follows(
        tmp_path, data_dir, monkeypatch, capsys):
    """A sweep's stack of 1- and 2-epoch members stopped (Ctrl-C) once its 1-epoch members'
    results were written, before its first checkpoint: it said "run the same sweep again to
    start it over in its folder", but the sweep run again keeps the finished cells and trains
    the cells left as another stack, setting that folder aside first. The line says so; run
    again, the sweep does what it said."""
    from lotterynet.stack_module import MemberResults

    finish = MemberResults.finish

    def ctrl_c(*args):
        tested = finish(*args)
        if args[-1]:  # (once the first member to finish is written)
            raise KeyboardInterrupt
        return tested

    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({
        "base": {"arch": "fc2", "limit_train": 64, "val_size": 64, "progress_bar": False},
        "variants": ["subsetsum:identity"], "sparsities": [0.5, 0.9], "epochs": [1, 2],
        "baseline": False}))
    argv = ["--sweep", str(sweep), "--data-dir", str(data_dir), "--sweep-out",
            str(tmp_path / "out")]
    stacks = tmp_path / "out" / "stacks"
    with monkeypatch.context() as stopping:
        stopping.setattr(MemberResults, "finish", ctrl_c)
        assert main(argv) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"train.py: error: stopped by Ctrl-C (SIGINT); stack subsetsum-identity-seed0: "
        f"{NOTHING}; run the same sweep again to train the members left anew (its 2 finished "
        f"members' results are kept in their cells; where they train as a stack again, the "
        f"sweep first sets this stack's folder aside as subsetsum-identity-seed0.stale-N)")
    assert main(argv) == 0
    assert sorted(p.name for p in stacks.iterdir()) == [
        "subsetsum-identity-seed0", "subsetsum-identity-seed0.stale-1"]
    assert "stack subsetsum-identity-seed0: 2 members, budgets [2]" in capsys.readouterr().out


def test_a_stack_stopped_in_another_precision_starts_over(tmp_path, data_dir, capsys,
                                                         fc2_stack_sweep_done):
    """A sweep's cells are its precision's: the sweep's stack, stopped after epoch 1 of 2 in
    64-bit, is not continued by the 32-bit sweep (1 epoch of each, labelled 32-bit) but set
    aside, and the sweep gives what a fresh one gives."""
    argv = fc2_stack_sweep(tmp_path, data_dir, limit_train=640, epochs=2)
    rerun, fresh = tmp_path / "rerun", fc2_stack_sweep_done
    stack_dir = rerun / "stacks" / "subsetsum-identity-seed0"
    cells = [rerun / "cells" / f"subsetsum-identity-s{s}-e2-seed0" for s in (0.5, 0.9)]
    configs = [make_config({"arch": "fc2", "structure": "subsetsum", "activation": "identity",
                            "sparsity": s, "epochs": 2, "limit_train": 640, "val_size": 100,
                            "progress_bar": False, "data_dir": str(data_dir), "out": str(c),
                            "precision": "64-true", "stop_after": 1})
               for s, c in zip((0.5, 0.9), cells)]
    run_stack(configs, stack_dir, cells)
    assert epochs_done(torch.load(stack_dir / "checkpoints" / "last.ckpt", weights_only=True)
                       ) == 1
    assert main([*argv, "--sweep-out", str(rerun)]) == 0
    said = capsys.readouterr().out
    assert "stack subsetsum-identity-seed0 cannot be continued: it was run with another config " \
        "(precision '64-true' -> '32-true'); its files" in said
    assert "Restoring states" not in said and stack_dir.with_name(f"{stack_dir.name}.stale-1"
                                                                  ).is_dir()
    assert sweep_rows(rerun) == sweep_rows(fresh)


def test_a_stack_that_cannot_be_continued_says_why(tmp_path):
    """Why a stack checkpoint does not continue a stack is the one reason that holds (it said
    all four: "other members or configs, or trained to its end with a member's results
    missing, or its checkpoint gone"): the members added or dropped, a changed config as a
    changed cell says it, the members whose results are missing."""
    configs = {n: make_config({"arch": "fc2", "structure": "subsetsum", "sparsity": s})
               for n, s in (("a", 0.5), ("b", 0.9), ("c", 0.7))}
    cells = {n: tmp_path / n for n in configs}
    record = lotterynet.stack_files.StackRecord({n: configs[n].to_dict() for n in "ab"}, 1)

    def why(record, names):
        return cannot_continue(record, names, [configs[n] for n in names],
                               [cells[n] for n in names])

    assert why(None, "ab") == "its checkpoint cannot be read as a stack's"
    assert why(record, "ac") == ("it was run with other members (now without member b; now "
                                 "with member c)")
    assert why(record, "abc") == "it was run with other members (now with member c)"  # (not 1)
    assert why(record, "ba") == "it was run with other members (in another order)"
    assert why(record, "ab") is None
    configs = {n: dataclasses.replace(c, lr=0.05, seed=1) for n, c in configs.items()}
    assert why(record, "ab") == "it was run with another config (lr 0.1 -> 0.05, seed 0 -> 1)"
    configs = {n: dataclasses.replace(c, lr=0.05, seed=0, epochs=1) for n, c in configs.items()}
    cells["b"].mkdir()
    (cells["b"] / "results.json").write_text("{}")
    assert why(dataclasses.replace(record, members={n: configs[n].to_dict() for n in "ab"}),
               "ab") == "it trained to its end, and the results of a are missing"


def test_a_stopped_stack_whose_members_left_the_sweep_is_not_called_finished(
        tmp_path, data_dir, capsys):
    """A stack stopped part way, re-run by a sweep that no longer lists its members (another
    epoch budget), is set aside as STACK.stale-1, "cannot be continued": it was STACK.done-1,
    said to have finished all its members, whose cells held no results."""
    argv = fc2_stack_sweep(tmp_path, data_dir, limit_train=640, epochs=2)
    out = tmp_path / "out"
    stack_dir = out / "stacks" / "subsetsum-identity-seed0"
    cells = [out / "cells" / f"subsetsum-identity-s{s}-e2-seed0" for s in (0.5, 0.9)]
    configs = [make_config({"arch": "fc2", "structure": "subsetsum", "activation": "identity",
                            "sparsity": s, "epochs": 2, "limit_train": 640, "val_size": 100,
                            "progress_bar": False, "data_dir": str(data_dir), "out": str(c),
                            "stop_after": 1})
               for s, c in zip((0.5, 0.9), cells)]
    run_stack(configs, stack_dir, cells)
    capsys.readouterr()
    assert main([*argv, "--sweep-out", str(out), "--sweep-epochs", "1"]) == 0
    said = capsys.readouterr().out
    assert "stack subsetsum-identity-seed0 cannot be continued: it was run with other members " \
        "(now without members subsetsum-identity-s0.5-e2-seed0, " \
        "subsetsum-identity-s0.9-e2-seed0; now with members subsetsum-identity-s0.5-e1-seed0, " \
        "subsetsum-identity-s0.9-e1-seed0); its" in said
    assert "finished all its members" not in said
    assert stack_dir.with_name(f"{stack_dir.name}.stale-1").is_dir()
    assert not any((c / "results.json").is_file() for c in cells)


def test_a_lost_cell_of_a_finished_stack_is_trained_again(tmp_path, data_dir,
                                                         fc2_stack_sweep_done):
    """A stack trained to its end whose member lost its results (deleted by hand): resuming
    its checkpoint would train nothing and write nothing ("sweep done" without the cell), so
    the cell is trained again, giving the same masks. The stack's log rows carry their epoch
    (a resume drops the rows logged after its checkpoint) and the members' optimizer step
    (10 a epoch here: the learning rates' row at the epoch's start, the step losses' row,
    logged every 10 steps, then the epoch's), and a stack folder in use by another process is
    refused."""
    argv = [*fc2_stack_sweep(tmp_path, data_dir, limit_train=640, epochs=2), "--sweep-out",
            str(tmp_path / "out")]
    shutil.copytree(fc2_stack_sweep_done, tmp_path / "out")  # (that command, run to its end)
    stack_dir = tmp_path / "out" / "stacks" / "subsetsum-identity-seed0"
    with open(stack_dir / "metrics.csv") as f:
        assert [(r["epoch"], r["step"]) for r in csv.DictReader(f)] == [
            ("0", "0"), ("0", "9"), ("0", "9"), ("1", "10"), ("1", "19"), ("1", "19")]
    lost = tmp_path / "out" / "cells" / "subsetsum-identity-s0.9-e2-seed0" / "results.json"
    before = json.loads(lost.read_text())
    lost.unlink()
    assert main(argv) == 0  # the lone cell left runs singly: the same masks
    again = json.loads(lost.read_text())
    assert again["mask_digests"] == before["mask_digests"]
    assert again["test_acc"] == pytest.approx(before["test_acc"], abs=1e-6)
    configs = [make_config({"arch": "fc2", "structure": "subsetsum", "sparsity": 0.5,
                            "limit_train": 640, "val_size": 100, "data_dir": str(data_dir)})]
    with locked(stack_dir, "held as a running stack job holds it"):
        with pytest.raises(ConfigError, match="is in use by another process"):
            run_stack(configs, stack_dir, [tmp_path / "elsewhere"])


def test_a_stack_holds_its_members_cells_as_a_run_holds_its_folder(tmp_path, data_dir,
                                                                    monkeypatch):
    """A stack and a single run (``--cell``, a W&B agent) never train one cell at once: the
    stack holds every member's cell folder while it trains, and a stack whose member's cell a
    run holds is refused before it writes anything."""
    import lotterynet.stack as stack_runner

    configs = [make_config({"arch": "fc2", "structure": "subsetsum", "sparsity": s,
                            "limit_train": 640, "val_size": 100, "data_dir": str(data_dir)})
               for s in (0.5, 0.9)]
    stack_dir, cells = tmp_path / "stack", [tmp_path / "cells" / "a", tmp_path / "cells" / "b"]
    busy = []

    def try_each_cell(configs, stack_dir, cell_dirs, *rest):  # (data, module, sigterm)
        for cell in cell_dirs:
            try:
                with locked(cell, "free"):
                    pass
            except ConfigError:
                busy.append(cell)
        return []

    monkeypatch.setattr(stack_runner, "train_stack", try_each_cell)
    run_stack(configs, stack_dir, cells)
    assert busy == cells
    monkeypatch.undo()
    with locked(cells[1], "held as a run training cell b holds it"):
        with pytest.raises(ConfigError, match=rf"cell '{cells[1]}' is in use by another"):
            run_stack(configs, stack_dir, cells)
    assert list(stack_dir.iterdir()) == [] and list(cells[0].iterdir()) == []


def test_a_stack_removes_what_a_killed_stacks_writes_left(tmp_path, data_dir, monkeypatch):
    """A stack killed while it wrote its checkpoint (or a member's checkpoint, ticket or
    results) leaves a temporary file beside it; the stack that starts next in those folders
    removes it, as a run does its own (they piled up, one stack checkpoint's size each), and
    keeps one whose writer is still running."""
    configs = [make_config({"arch": "fc2", "structure": "subsetsum", "sparsity": s,
                            "limit_train": 640, "val_size": 100, "data_dir": str(data_dir)})
               for s in (0.5, 0.9)]
    stack_dir, cells = tmp_path / "stack", [tmp_path / "cells" / "a", tmp_path / "cells" / "b"]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = [stack_dir / "checkpoints" / f".last.ckpt.tmp{dead}",
             cells[0] / "checkpoints" / f".last.ckpt.tmp{dead}",
             cells[1] / f".results.json.tmp{dead}"]
    live = stack_dir / "checkpoints" / f".last.ckpt.tmp{os.getppid()}"  # a writer still running
    for path in (*stale, live):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    left = []
    monkeypatch.setattr(lotterynet.stack, "train_stack", lambda *args: left.extend(
        p for p in (*stale, live) if p.exists()) or [])
    run_stack(configs, stack_dir, cells)
    assert left == [live]


def test_a_folder_where_a_cell_writes_its_ticket_is_refused_before_training(tmp_path, data_dir,
                                                                            capsys):
    """A member writes its ticket when it finishes: a folder in the way was a traceback after
    the training, again on every re-run. Refused first, in one line, by a sweep and a stack."""
    sweep = ["--arch", "fc2", "--sweep-variants", "dense", "--sweep-sparsities", "0.5,0.9",
             "--sweep-epochs", "1", "--limit-train", "64", "--val-size", "0", "--data-dir",
             str(data_dir), "--sweep-out", str(tmp_path / "sweep")]
    (tmp_path / "sweep" / "cells" / "dense-s0.9-e1-seed0" / "model.ticket").mkdir(parents=True)
    assert main(sweep) == 2
    err = capsys.readouterr().err
    assert "model.ticket" in err and "move it away" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "sweep" / "stacks").exists()
    configs = [make_config({"arch": "fc2", "structure": "dense", "sparsity": s, "epochs": 1,
                            "limit_train": 64, "val_size": 0, "data_dir": str(data_dir)})
               for s in (0.5, 0.9)]
    cells = [tmp_path / "stack" / "a", tmp_path / "stack" / "b"]
    (cells[1] / "model.ticket").mkdir(parents=True)
    with pytest.raises(IsADirectoryError, match="model.ticket"):
        run_stack(configs, tmp_path / "stack", cells)
    assert not (tmp_path / "stack" / "checkpoints").exists()


@pytest.mark.parametrize("given, env", [("data", None), (None, None), (None, "data")])
def test_a_stack_file_names_its_cells_wherever_it_is_run_from(tmp_path, monkeypatch, given,
                                                               env):
    """A sweep given a relative --sweep-out writes stack files whose cells are relative to the
    file's folder: run by hand from another folder (``--stack-file``), the stack writes into
    the sweep's cells, not into a new tree under the current folder. Its data folder, given
    relative to where the sweep ran (``--data-dir ../data``), is written absolute: it named
    a folder under the current one, where no data was (and ``--data-dir`` was refused beside
    ``--stack-file``; now it is taken, as with ``--resume``, and the stack checkpoint resumes
    with it). So is the default (``./data`` there, or a relative $LOTTERYNET_DATA), which was
    written as null and so read ./data where the stack was run. A file naming its cells
    absolutely, outside any sweep (written by hand), runs them as it names them."""
    monkeypatch.chdir(tmp_path)
    if env:
        monkeypatch.setenv("LOTTERYNET_DATA", env)
    else:
        monkeypatch.delenv("LOTTERYNET_DATA", raising=False)
    cells = [Path("sweep/cells/a"), Path("sweep/cells/b")]
    configs = [make_config({"arch": "fc2", "structure": "dense", "sparsity": s, "out": str(c),
                            "data_dir": given}) for s, c in zip((0.5, 0.9), cells)]
    path = write_stack_file(configs, Path("sweep/stacks/dense-seed0"), cells)
    assert yaml.safe_load(path.read_text())["cells"] == ["../../cells/a", "../../cells/b"]
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    read, read_cells = read_stack_file(tmp_path / path)
    assert read_cells == [tmp_path / c for c in cells]
    assert [c.out for c in read] == [str(tmp_path / c) for c in cells]
    assert [c.data_dir for c in read] == [str((tmp_path / "data").resolve())] * 2
    ran = []
    # (lotterynet.sweep, which main imports, imported first: it binds run_stack as it imports,
    # and one bound to this stand-in ran the next test's stacks)
    importlib.import_module("lotterynet.sweep")
    monkeypatch.setattr(lotterynet.stack, "run_stack", lambda configs, *_, **__: ran.extend(
        configs) or [{"finished": False}] * len(configs))
    assert main(["--stack-file", str(tmp_path / path), "--data-dir", "mine"]) == 0
    assert [c.data_dir for c in ran] == ["mine"] * 2
    record = lotterynet.stack_files.StackRecord({"a": read[0].to_dict(), "b": read[1].to_dict()}, 0)
    assert lotterynet.stack_files.cannot_continue(record, ["a", "b"], ran, read_cells) is None
    by_hand = tmp_path / "mine" / "stack.yaml"
    by_hand.parent.mkdir()
    absolute = [str(tmp_path / cell) for cell in cells]
    by_hand.write_text(yaml.safe_dump({"members": [{**c.to_dict(), "out": cell}
                                                   for c, cell in zip(configs, absolute)],
                                       "cells": absolute}))
    assert read_stack_file(by_hand)[1] == [tmp_path / c for c in cells]


def test_a_stack_file_written_on_windows_names_its_cells_on_linux(tmp_path, monkeypatch):
    """A sweep's stack file written on Windows (``os.path.relpath`` there: ``\\``) named its
    cells ``..\\..\\cells\\a``: its sweep folder copied to Linux or macOS, that was a name
    of no folder there. It is written with ``/`` (Windows reads it too), and one an older
    version wrote on Windows is read as naming the same cells, resume and all."""
    import ntpath
    from types import SimpleNamespace

    sweep = tmp_path / "sweep"
    cells = [sweep / "cells" / "a", sweep / "cells" / "b"]
    resume = cells[0] / "checkpoints" / "last.ckpt"
    resume.parent.mkdir(parents=True)
    resume.write_bytes(b"")
    configs = [make_config({"arch": "fc2", "structure": "dense", "sparsity": s, "out": str(c),
                            "data_dir": str(tmp_path), "resume": r and str(r)})
               for s, c, r in zip((0.5, 0.9), cells, (resume, None))]
    windows = SimpleNamespace(path=ntpath, sep="\\")  # (the os this file's code sees there)
    monkeypatch.setattr(lotterynet.stack_files, "os", windows)
    path = write_stack_file(configs, sweep / "stacks" / "dense-seed0", cells)
    monkeypatch.undo()
    written = yaml.safe_load(path.read_text())
    assert written["cells"] == [m["out"] for m in written["members"]] == [
        "../../cells/a", "../../cells/b"]
    assert [m["resume"] for m in written["members"]] == [
        "../../cells/a/checkpoints/last.ckpt", None]
    for text in (path.read_text(), path.read_text().replace("/", "\\")):  # (as before)
        path.write_text(text)
        read, read_cells = read_stack_file(path)
        assert read_cells == cells
        assert [(c.out, c.resume) for c in read] == [(str(cells[0]), str(resume)),
                                                     (str(cells[1]), None)]


def test_a_copied_sweeps_stack_file_runs_its_own_cells(tmp_path, data_dir, capsys,
                                                        monkeypatch):
    """``cp -r A B``, A deleted: B's stack file, run by hand from another folder, named A's
    cells absolutely and trained into them, recreating A. Written relative to its folder, it
    trains B's cells; an older file naming A's cells absolutely, or naming them relative to the
    folder the sweep ran from, is read as naming B's (the sweep run again would rewrite it so),
    saying so in one line."""
    argv = fc2_stack_sweep(tmp_path, data_dir, limit_train=128, epochs=1)
    original, copy = tmp_path / "A", tmp_path / "B"
    assert main([*argv, "--sweep-out", str(original)]) == 0
    names = [f"subsetsum-identity-s{s}-e1-seed0" for s in (0.5, 0.9)]
    cells = [original / "cells" / name for name in names]
    write_stack_file([make_config(json.loads((cell / "results.json").read_text())["config"])
                      for cell in cells], original / "stacks" / "subsetsum-identity-seed0",
                     cells)  # (as the sweep's job, --jobs-per-device, runs it)
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    path = copy / "stacks" / "subsetsum-identity-seed0" / "stack.yaml"
    stack = yaml.safe_load(path.read_text())
    assert stack["cells"] == [f"../../cells/{name}" for name in names]

    def naming(cells: list[str]) -> str:
        return yaml.safe_dump({"members": [{**m, "out": c} for m, c in zip(stack["members"],
                                                                            cells)],
                               "cells": cells})

    older = naming([str(original / "cells" / name) for name in names])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("LOTTERYNET_SWEEP_JOB", raising=False)
    capsys.readouterr()
    for text, note in ((path.read_text(), False), (older, True)):  # as written now, as before
        for folder in (copy / "cells", path.parent):  # (the stack to train again)
            shutil.rmtree(folder)
        path.parent.mkdir()
        path.write_text(text)
        assert main(["--stack-file", str(path)]) == 0
        out = capsys.readouterr().out
        assert "2 of 2 members finished" in out
        assert (f"its cells name {str(original / 'cells')!r}" in out) == note
        for name in names:
            results = json.loads((copy / "cells" / name / "results.json").read_text())
            assert results["run_dir"] == str(copy / "cells" / name)
        assert not original.exists() and not os.listdir(elsewhere)
    path.write_text(naming([f"B/cells/{name}" for name in names]))  # (written from tmp_path)
    assert read_stack_file(path)[1] == [copy / "cells" / name for name in names]


def test_a_stack_file_whose_members_finished_runs_again(tmp_path, data_dir, capsys):
    """A finished member's cell holds its checkpoint: a re-run of the stack file (a sweep's
    job after a kill, --jobs-per-device) took that cell for a stack's folder and failed
    forever; now it finds the members done."""
    cells = [tmp_path / "cells" / name for name in ("a", "b")]
    configs = [make_config({"arch": "fc2", "structure": "dense", "sparsity": s, "epochs": e,
                            "limit_train": 256, "val_size": 64, "progress_bar": False,
                            "data_dir": str(data_dir), "out": str(c)})
               for s, e, c in zip((0.5, 0.9), (1, 2), cells)]
    path = write_stack_file(configs, tmp_path / "stacks" / "dense-seed0", cells)
    for _ in range(2):
        assert main(["--stack-file", str(path)]) == 0
        assert "2 of 2 members finished" in capsys.readouterr().out


def test_a_stack_file_run_by_hand_says_a_member_finished_outside_it_trains_again(
        tmp_path, data_dir, capsys):
    """A stack stopped after its first epoch of two whose member was meanwhile finished by
    itself (``--cell``), then run by hand (``--stack-file``): it resumes with every member its
    checkpoint holds, so that member trains again, its results kept. The sweep said so
    (473869d); by hand it trained it again without a word."""
    cells = [tmp_path / "cells" / name for name in ("a", "b")]
    configs = [make_config({"arch": "fc2", "structure": "dense", "sparsity": s, "epochs": 2,
                            "limit_train": 128, "val_size": 32, "progress_bar": False,
                            "data_dir": str(data_dir), "out": str(c)})
               for s, c in zip((0.5, 0.9), cells)]
    stack_dir = tmp_path / "stacks" / "dense-seed0"
    run_stack([dataclasses.replace(c, stop_after=1) for c in configs], stack_dir, cells)
    run(configs[0])  # (as its --cell run trains it)
    finished = json.loads((cells[0] / "results.json").read_text())
    capsys.readouterr()
    assert main(["--stack-file", str(write_stack_file(configs, stack_dir, cells))]) == 0
    assert "stack dense-seed0 resumes with every member its checkpoint holds: a, finished " \
           "meanwhile outside it, trains again with it (its own results are kept, not " \
           "overwritten)" in capsys.readouterr().out.splitlines()
    assert json.loads((cells[0] / "results.json").read_text()) == finished
    assert (cells[1] / "results.json").is_file()


def test_a_diverged_member_stops_alone_and_is_named(tmp_path, data_dir, monkeypatch):
    """A member whose scores turn NaN (here: written in epoch 1, after an update) trains no
    more and is not tested; the others train to their end and write their cells; then the
    stack raises TrainingDiverged naming it. Run again, it resumes, finds it still diverged and
    leaves the finished cells as they were."""
    def poisoned(self, outputs, batch, batch_idx):
        if self.current_epoch == 0 and batch_idx == 2:
            with torch.no_grad():
                trainable_parameters(self.model.members[1])[0].view(-1)[0] = float("inf")

    monkeypatch.setattr(StackModule, "on_train_batch_end", poisoned, raising=False)
    base = dict(arch="fc2", structure="subsetsum", limit_train=640, val_size=100, epochs=2,
                lr=0.05, progress_bar=False, data_dir=str(data_dir))
    configs = [make_config({**base, "sparsity": s}) for s in (0.5, 0.9, 0.95)]
    cells = [tmp_path / f"m{i}" for i in range(len(configs))]
    with pytest.raises(TrainingDiverged, match=r"m1 diverged in epoch 1: .*scores holds NaN"
                       r".*the other 2 finished"):
        run_stack(configs, tmp_path / "stack", cells)
    assert [(c / "results.json").is_file() for c in cells] == [True, False, True]
    finished = {c: (c / "results.json").read_bytes() for c in (cells[0], cells[2])}
    for cell in (cells[0], cells[2]):
        assert json.loads(finished[cell])["epochs_done"] == 2
    single = run(make_config({**configs[2].to_dict(), "out": str(tmp_path / "single")}))
    assert json.loads(finished[cells[2]])["test_acc"] == pytest.approx(single["test_acc"],
                                                                       abs=0.002)
    monkeypatch.undo()
    with pytest.raises(TrainingDiverged, match="m1 diverged in epoch 1"):
        run_stack(configs, tmp_path / "stack", cells)
    assert {c: (c / "results.json").read_bytes() for c in (cells[0], cells[2])} == finished
    assert not (cells[1] / "results.json").exists()


def test_a_diverged_member_is_a_wandb_run_ended_as_a_diverged_single_run(tmp_path, data_dir,
                                                                         monkeypatch):
    """A member that diverged had no W&B run of its own, where its single run has one (ended
    with its exit code, 3: failed): it is the run of its cell, its history up to the
    divergence, no test, ended with exit code 3; once (the stack run again, the member still
    diverged, logs it no more). A new stack in its cell does not continue that run."""
    def poisoned(self, outputs, batch, batch_idx):
        if batch_idx == 2:
            with torch.no_grad():
                trainable_parameters(self.model.members[1])[0].view(-1)[0] = float("inf")

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(StackModule, "on_train_batch_end", poisoned, raising=False)
    base = dict(arch="fc2", structure="subsetsum", pairs=1, limit_train=300, val_size=100,
                epochs=1, progress_bar=False, data_dir=str(data_dir), wandb=True)
    configs = [make_config({**base, "sparsity": s}) for s in (0.5, 0.9)]
    cells = [tmp_path / "cells" / name for name in ("a", "b")]
    for _ in range(2):
        with pytest.raises(TrainingDiverged, match="b diverged in epoch 1"):
            run_stack(configs, tmp_path / "stack", cells)
        (folder,) = (cells[1] / "wandb").glob("offline-run-*")
    diverged = logged_run(folder)
    assert wandb_exit_code(folder) == 3 and (diverged["name"], diverged["id"]) == ("b",
                                                                              own_wandb_id(cells[1]))
    assert diverged["config"]["sparsity"] == 0.9 and "test/acc" not in diverged["summary"]
    assert {"train/loss", "val/acc", "lr", "params/kept"} <= diverged["history"]
    assert not (cells[1] / "results.json").exists()
    monkeypatch.undo()
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_stack(configs, tmp_path / "new-stack", cells)
    runs = {logged_run(f)["id"]: wandb_exit_code(f)
            for f in (cells[1] / "wandb").glob("offline-run-*")}
    assert len(runs) == 2 and runs.pop(diverged["id"]) == 3 and list(runs.values()) == [0]
    assert not (cells[1] / "wandb-ended").exists()  # (that it was logged: not the new one's)


@pytest.mark.parametrize("stopped_in", ["init", "replay"])
def test_a_diverged_member_whose_logging_was_stopped_is_logged_again_under_its_id(
        tmp_path, data_dir, monkeypatch, stopped_in):
    """A stop as the stack logged a diverged member, in ``wandb.init`` (or it refused, online)
    or as its history was replayed into its started run, left its W&B id in its cell, written
    before its run started, which marked it logged: the stack run again (it resumes, the
    member still diverged) never logged it. Then, with the id deleted on the stop, it was
    logged under a new id: a stopped replay's offline folder (130) synced as a failed run of
    its own. Only the end of its run marks it logged (``wandb-ended``): the stack run again
    logs it under the id its cell keeps, ended with exit code 3, one W&B run with the stopped
    folder's."""
    import wandb

    from lotterynet.loggers import RunWandbLogger, WandbLogger

    def poisoned(self, outputs, batch, batch_idx):
        if batch_idx == 2:
            with torch.no_grad():
                trainable_parameters(self.model.members[1])[0].view(-1)[0] = float("inf")

    def stopped_in_init(*args, **kwargs):
        if kwargs.get("name") == "b":
            raise KeyboardInterrupt
        return init(*args, **kwargs)

    def stopped_in_the_replay(self, metrics, step=None):
        if step and self._wandb_init.get("name") == "b":  # (after its run started)
            raise KeyboardInterrupt
        WandbLogger.log_metrics(self, metrics, step)

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(StackModule, "on_train_batch_end", poisoned, raising=False)
    base = dict(arch="fc2", structure="subsetsum", limit_train=300, val_size=100, epochs=1,
                progress_bar=False, data_dir=str(data_dir), wandb=True)
    configs = [make_config({**base, "sparsity": s}) for s in (0.5, 0.9)]
    cells = [tmp_path / "cells" / name for name in ("a", "b")]
    init = wandb.init
    with monkeypatch.context() as stopping:
        if stopped_in == "init":
            stopping.setattr(wandb, "init", stopped_in_init)
        else:
            stopping.setattr(RunWandbLogger, "log_metrics", stopped_in_the_replay, raising=False)
        with pytest.raises(Interrupted):
            run_stack(configs, tmp_path / "stack", cells)
    assert not (cells[1] / "wandb-ended").exists()
    with pytest.raises(TrainingDiverged, match="b diverged in epoch 1"):
        run_stack(configs, tmp_path / "stack", cells)
    folders = sorted((cells[1] / "wandb").glob("offline-run-*"))
    assert [logged_run(f)["id"] for f in folders] == [own_wandb_id(cells[1])] * len(folders)
    assert [wandb_exit_code(f) for f in folders] == ([3] if stopped_in == "init" else [130, 3])
    assert left_before_a_checkpoint(cells[1])  # (its marker too: --cell starts it over there)


@pytest.mark.parametrize("stop,code", [(KeyboardInterrupt, 130), (Terminated, 143)])
@pytest.mark.parametrize("member", ["finished", "diverged"])
def test_a_stop_while_a_member_is_logged_to_wandb_ends_its_run_as_stopped(tmp_path, data_dir,
                                                                          monkeypatch, member,
                                                                          stop, code):
    """A Ctrl-C or SIGTERM while a stack (or a sweep, for the members its stack did not log)
    logged a member as a W&B run of its own, its history being replayed, left that run open
    until the process ended (its offline folder without an exit record, marked neither
    stopped nor failed). It ends with the stop's exit code, 130 or 143, as a stopped single
    run's, and the stop goes on."""
    import wandb

    from lotterynet.loggers import RunWandbLogger, WandbLogger
    from lotterynet.stack import log_diverged_member, log_member_run

    def stopped_in_the_replay(self, metrics, step=None):
        if step:  # (after its first row, which started the run)
            raise stop
        WandbLogger.log_metrics(self, metrics, step)

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(RunWandbLogger, "log_metrics", stopped_in_the_replay, raising=False)
    config = make_config({"arch": "fc2", "structure": "dense", "sparsity": 0.5,
                          "data_dir": str(data_dir), "wandb": True})
    cell = tmp_path / "cells" / "a"
    cell.mkdir(parents=True)
    rows = [{"step": 0, "train/loss": 2.0}, {"epoch": 0, "step": 4, "train/acc": 0.5},
            {"epoch": 1, "step": 4, "test/acc": 0.5}]
    with open(cell / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["epoch", "step", "train/loss", "train/acc", "test/acc"])
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(stop):
        if member == "finished":
            log_member_run(config, cell, {
                "finished": True, "spec": {"structure": "dense"}, "lr": 0.1, "epochs_done": 1,
                "test_acc": 0.5, "params": {"kept": 10}, "layer_density": {"fc1": 0.5}})
        else:
            log_diverged_member(config, cell, {"spec": {"structure": "dense"},
                                               "optim": {"lr": 0.1}}, rows)
    (folder,) = (cell / "wandb").glob("offline-run-*")
    assert wandb.run is None and wandb_exit_code(folder) == code


def test_a_sweep_names_what_diverged_and_exits_1(tmp_path, data_dir, capsys):
    """Every member diverges in epoch 1 of 2: the stack ends there (an epoch of no member had
    no loss to step on: a traceback, on every re-run too), and a re-run says so again."""
    argv = ["--arch", "fc2", "--sweep-variants", "dense", "--sweep-sparsities", "0.5,0.9",
            "--sweep-epochs", "2", "--no-baseline", "--limit-train", "200", "--val-size", "100",
            "--lr", "1e30", "--no-progress-bar", "--data-dir", str(data_dir)]
    for stack in ("--stack", "--no-stack"):
        out = tmp_path / stack
        for _ in range(2):
            assert main([*argv, stack, "--sweep-out", str(out)]) == 1
            captured = capsys.readouterr()
            assert captured.err.count("diverged in epoch 1") == 2  # both members, or cells
            assert "the other" not in captured.err
            assert "no cell finished" in captured.out
            assert not list(out.glob("cells/*/results.json"))
            assert re.search(r"\[\d/2\] dense-s0\.5-e2-seed0: diverged \|", captured.out)
            assert ("(a cell that diverged diverges again when re-run: it needs a lower lr: --lr "
                    "runs every cell anew (another config), lr in a variant's mapping that "
                    "variant's)") in captured.out and "re-run the same command" not in captured.out
            assert ("2 to run (1 stack)" in captured.out) == (stack == "--stack")  # ("1 stacks")


@pytest.mark.parametrize("arch", ["fc2", "lenet5"])
@pytest.mark.parametrize("precision", ["64-true", "bf16-true"])
def test_a_stack_trains_and_tests_in_the_runs_precision(tmp_path, data_dir, precision, arch):
    """The test pass converts its inputs as Lightning's loops do (it raised on a float32 batch
    against float64 or bfloat16 weights; LeNet5's frozen convs get them converted from the
    data module), and a member ends as its single run does."""
    base = dict(arch=arch, structure="subsetsum", limit_train=128, val_size=64, epochs=1,
                precision=precision, progress_bar=False, data_dir=str(data_dir))
    configs = [make_config({**base, "sparsity": s}) for s in (0.5, 0.9)]
    stacked = run_stack(configs, tmp_path / "stack", [tmp_path / "m0", tmp_path / "m1"])
    single = run(make_config({**configs[1].to_dict(), "out": str(tmp_path / "single")}))
    assert stacked[1]["test_acc"] == pytest.approx(single["test_acc"], abs=1e-6)  # float32


def test_a_stack_checkpoint_with_junk_members_or_divergences_is_not_resumed(tmp_path):
    """A sealed stack checkpoint whose members or ``diverged`` record are not what run_stack
    writes (an edited file) is no stack record (set aside by the sweep, not resumed): before,
    ``stack_record`` raised, and a ``diverged`` index of -1 named the last member, so a
    divergence that never happened was reported."""
    from lotterynet.checkpointing import atomic_torch_save
    from lotterynet.stack_files import stack_record

    def record(**changes):
        checkpoint = {"state_dict": {}, "epoch": 0, "diverged": {1: "b diverged"},
                      "hyper_parameters": {"members": [{"name": "a", "config": {}},
                                                       {"name": "b", "config": {}}]}}
        checkpoint.update(changes)
        atomic_torch_save(checkpoint, tmp_path / "checkpoints" / "last.ckpt")
        return stack_record(tmp_path)

    assert record().diverged == frozenset({"b"}) and list(record().members) == ["a", "b"]
    for junk in ({-1: "x"}, {2: "x"}, {True: "x"}, {0: 0}, {"0": "x"}, [0], "x"):
        assert record(diverged=junk) is None, junk
    for junk in ([1, 2], "ab", None):
        assert record(hyper_parameters={"members": junk}) is None, junk
    assert record(hyper_parameters={}) is None


def test_junk_member_histories_in_a_stack_checkpoint_are_one_line(tmp_path):
    from lotterynet.errors import CheckpointError
    from lotterynet.run_callbacks import EpochTimer
    from lotterynet.stack_module import MemberResults

    results = MemberResults([tmp_path / "a", tmp_path / "b"], tmp_path, EpochTimer())
    good = {"history": [[{"epoch": 0, "val/acc": 0.5}], []], "seconds": [1.5]}
    results.load_state_dict(good)
    assert results.history == good["history"] and results.timer.seconds == [1.5]
    for junk in ({"history": [[]], "seconds": []}, {"history": [[1], [2]], "seconds": []},
                 {"history": "x", "seconds": 5}, {**good, "seconds": ["x"]},
                 {"history": [[{"epoch": "x"}], []], "seconds": []}):
        with pytest.raises(CheckpointError, match="not 2 lists of rows of numbers"):
            results.load_state_dict(junk)


def test_callback_states_are_checked_before_the_run_and_leave_the_host_rngs(tmp_path):
    """A resume loads the stored callback states into throwaway callbacks before anything is
    printed or written (Lightning restores them only inside ``fit``, after the run's first
    lines): junk is refused there, and the host RNGs stay as they were."""
    from lotterynet.errors import CheckpointError
    from lotterynet.run_callbacks import EpochTimer, RNGState, check_callback_states
    from lotterynet.stack_module import MemberResults

    torch.manual_seed(1)
    stored = {"RNGState": RNGState().state_dict(), "EpochTimer": EpochTimer().state_dict(),
              "MemberResults": {"history": [[], []], "seconds": []}}
    callbacks = (RNGState(), EpochTimer(), MemberResults([tmp_path / "a", tmp_path / "b"],
                                                          tmp_path, EpochTimer()))
    torch.manual_seed(2)
    expected = torch.rand(4)
    torch.manual_seed(2)
    check_callback_states({"callbacks": stored}, callbacks)
    assert torch.equal(torch.rand(4), expected)
    junk = {**stored, "MemberResults": {"history": "x", "seconds": []}}
    torch.manual_seed(2)
    with pytest.raises(CheckpointError, match="not 2 lists of rows of numbers"):
        check_callback_states({"callbacks": junk}, callbacks)
    assert torch.equal(torch.rand(4), expected)  # (restored on the refusal too)


@pytest.mark.parametrize("batched", [False, True])
def test_a_stack_of_members_thawed_before_it_was_built_is_refused(batched):
    """Members whose frozen random weights were made trainable (``requires_grad_(True)``)
    before the stack was built: member by member their layers refused it, but vmapped (a GPU's
    default) the weights were stacked as trainable tensors, which a layer inside vmap takes
    for its own transform's, and trained."""
    members = [build_model("fc2", width=16, sparsity=s).requires_grad_(True) for s in (0.5, 0.9)]
    stack = StackedModel(members, batched=batched)
    with pytest.raises(RuntimeError, match=r"^SubnetLinear\(.*\): its frozen random weight "
                                           r"'structure\.weight\.weight' requires grad"):
        stack(torch.randn(2, 1, 28, 28))


def test_a_stack_batches_its_members_by_default_on_every_device_but_the_cpu():
    """``batched=None`` batched the members on CUDA only (MPS and XPU ran them one by one,
    though ``topk_mask`` selects there as on CUDA); now off the CPU, here ``meta`` (shapes
    only): each tensor's masks of both members come from one selection, ``(S, *shape)``
    rows, and the vmapped forward gives both outputs. On the CPU, still one by one."""
    members = [build_model("fc2", width=16, sparsity=s) for s in (0.5, 0.9)]
    stack = StackedModel(members)
    assert stack._row_masks([0, 1]) == []
    stack.to("meta")
    assert [(tuple(m.shape), m.device.type) for m in stack._row_masks([0, 1])] == [
        ((2, 16, 784), "meta"), ((2, 10, 16), "meta")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (no "members run one by one")
        with torch.no_grad():
            outputs = stack(torch.empty(3, 1, 28, 28, device="meta"))
    assert [tuple(y.shape) for y in outputs] == [(3, 10)] * 2 and stack.unbatchable is None


@pytest.mark.parametrize("structure,activation", [("subsetsum", "identity"),
                                                   ("subsetsum", "relu"), ("dense", "relu"),
                                                   ("fixedsize", "relu")])
def test_batched_members_train_as_member_by_member(structure, activation):
    """``batched`` (a GPU's default): every member gets the masks its own selection gives (one
    sort per tensor), and one vmapped forward of all members (not for fixed-size groups, whose
    members choose their own masks) gives, in float64, the logits and, after SGD steps, the
    scores and masks of member-by-member steps; no member keeps a given mask afterwards."""
    sparsities = [0.0, 0.4, 0.6, 0.8] if structure == "fixedsize" else [0.0, 0.5, 0.9, 0.99]

    def stack(batch):
        return StackedModel([build_model("lenet5", structure=structure, activation=activation,
                                         sparsity=s, seed=0) for s in sparsities],
                            batched=batch).double()

    batched, single = stack(True), stack(False)
    assert batched.unbatchable is None
    masks = batched._row_masks([0, 1, 3])
    for position, mask in enumerate(masks):
        same = [masked_weights(batched.members[s])[position] for s in (0, 1, 3)]
        assert (mask is None) == (same[0].group_dim is not None)
        for w, m in zip(same, [] if mask is None else mask):
            assert torch.equal(m, w.mask(w.weight.dtype))
    assert single._row_masks([0, 1, 3]) == []
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    y = torch.arange(16) % 10
    optimizers = [torch.optim.SGD(trainable_parameters(m), lr=0.5, momentum=0.9)
                  for m in (batched, single)]
    vmapped = StackedModel._vmapped
    calls = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StackedModel, "_vmapped",
                      lambda self, *args: calls.append(self) or vmapped(self, *args))
        for _ in range(3):
            outs = [m(x, members=[0, 1, 3]) for m in (batched, single)]
            for a, b in zip(*outs):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
            for out, opt in zip(outs, optimizers):
                sum(nn.functional.cross_entropy(o, y) for o in out).backward()
                opt.step()
                opt.zero_grad()
    assert calls == ([] if structure == "fixedsize" else [batched] * 3)
    for a, b in zip(batched.parameters(), single.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(masked_weights(batched), masked_weights(single)):
        assert torch.equal(a.mask(), b.mask())
    assert all(w.given_mask is None for m in batched.members for w in masked_weights(m))


class _HostRead(nn.Module):
    """Reads a value on the host in its forward (what torch.func.vmap cannot batch)."""

    def forward(self, x):
        return x * float(x.abs().max() > 0)


def test_a_stack_whose_forward_cannot_be_vmapped_runs_member_by_member_with_a_warning():
    def stack(batch):
        return StackedModel([nn.Sequential(
            SubnetLinear(8, 4, sparsity=s, seed=0), _HostRead()) for s in (0.25, 0.75)],
            batched=batch)

    batched, single = stack(True), stack(False)
    x = torch.randn(5, 8)
    with pytest.warns(UserWarning, match="members run one by one.*cannot be vmapped"):
        out = batched(x)
    assert batched.unbatchable and "item" in batched.unbatchable.lower()
    for a, b in zip(out, single(x)):
        assert torch.equal(a, b)
    assert all(w.given_mask is None for w in masked_weights(batched))


@pytest.mark.parametrize("members,why", [
    (lambda: [nn.Sequential(SubnetLinear(8, 4, sparsity=s, seed=0), nn.BatchNorm1d(4))
              for s in (0.25, 0.75)], "buffers"),
    (lambda: [SubnetLinear(8, 4, sparsity=0.5, seed=seed) for seed in (0, 1)],
     "frozen tensors differ")])
def test_what_keeps_a_stack_from_one_vmapped_forward(members, why):
    stack = StackedModel(members(), batched=True)
    assert why in stack.unbatchable
    out = stack(torch.randn(5, 8))
    assert len(out) == 2 and all(o.shape == (5, 4) for o in out)


@pytest.mark.parametrize("batch", [64, 24, 7])
def test_member_losses_are_each_members_cross_entropy_with_its_gradient_bit_for_bit(batch):
    """The loss a stack steps on: each member's cross-entropy (to float rounding) and, in
    float32 as trained, the gradient of their sum bit for bit that of each member's own (as a
    single run computes it), for full batches and a shorter last one."""
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(batch, 10, generator=g, requires_grad=True) for _ in range(14)]
    y = torch.randint(0, 10, (batch,), generator=g)
    losses = member_losses(torch.stack(logits), y)
    expected = [nn.functional.cross_entropy(out, y) for out in logits]
    torch.testing.assert_close(losses, torch.stack(expected), rtol=1e-6, atol=0)
    stacked = torch.autograd.grad(losses.sum(), logits)
    each = torch.autograd.grad(sum(expected), logits)
    assert all(torch.equal(a, b) for a, b in zip(stacked, each))


@pytest.mark.parametrize("error, said", [
    (RuntimeError("something else\nits second line"),
     "their forward cannot be vmapped (something else)"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore"),
     "vmapping them ran out of memory (CUDA out of memory. Tried to allocate 2.00 GiB)"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't "
                  "allocate memory: you tried to allocate 2147483648 bytes."),
     "vmapping them ran out of memory ([enforce fail at alloc_cpu.cpp:121] data. "
     "DefaultCPUAllocator: can't allocate memory: you tried to allocate 2147483648 bytes.)")])
def test_a_forward_vmap_cannot_run_is_told_by_the_members_running_not_by_its_words(
        monkeypatch, error, said):
    """A forward vmap could not run was told from the forward's own error by the words "vmap"
    or "batching rule" in its message: reworded by torch, the stack fell back member by member
    every step, calling vmap again each time, unwarned. Where vmap raises and the members
    then run one by one, it is vmap's failure, whatever it says: warned once, and member by
    member from then on; where vmap's S members at once ran out of memory, the warning says
    so (not that the forward cannot be vmapped)."""
    def stack(batch):
        return StackedModel([SubnetLinear(8, 4, sparsity=s, seed=0) for s in (0.25, 0.75)],
                            batched=batch)

    batched, single = stack(True), stack(False)
    calls = []

    def failing(function):
        calls.append(function)
        raise error

    monkeypatch.setattr(torch.func, "vmap", failing)
    x = torch.randn(5, 8)
    with pytest.warns(UserWarning, match=re.escape(f"members run one by one: {said}") + "$"):
        out = batched(x)
    assert batched.unbatchable == said[said.index("(") + 1:-1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once
        assert all(torch.equal(a, b) for a, b in zip(batched(x), single(x)))
    assert len(calls) == 1  # (not tried again)
    assert all(torch.equal(a, b) for a, b in zip(out, single(x)))
    assert all(w.given_mask is None for w in masked_weights(batched))


class _Refuses(nn.Module):
    """A forward whose own error names vmap."""

    def forward(self, x):
        raise RuntimeError("my op has no batching rule for vmap")


@pytest.mark.parametrize("members, x, said", [
    (lambda s: SubnetLinear(8, 4, sparsity=s, seed=0), torch.randn(5, 9),  # 9 inputs for 8
     "cannot be multiplied"),
    (lambda s: nn.Sequential(SubnetLinear(8, 4, sparsity=s, seed=0), _Refuses()),
     torch.randn(5, 8), "no batching rule for vmap")])  # (was taken for vmap's by its words)
def test_an_error_of_the_members_own_forward_is_raised_not_taken_for_vmap(members, x, said):
    stack = StackedModel([members(s) for s in (0.25, 0.75)], batched=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "cannot be vmapped" warning
        with pytest.raises(RuntimeError, match=said):
            stack(x)
    assert stack.unbatchable is None
    if said == "cannot be multiplied":
        assert len(stack(torch.randn(5, 8))) == 2


def test_a_batched_stack_ranks_nan_scores_as_each_member_does():
    """The masks of all members in one sort treat a NaN score (a diverged member) as the
    member's own selection does, below every magnitude: each member keeps exactly its k."""
    members = [SubnetLinear(40, 30, sparsity=s, seed=0) for s in (0.5, 0.9, 0.97)]
    with torch.no_grad():
        for i, m in enumerate(members):
            m.structure.weight.scores.view(-1)[: 10 + 20 * i] = float("nan")
    stack = StackedModel(members, batched=True)
    (masks,) = stack._row_masks([0, 1, 2])
    for m, mask in zip(members, masks):
        assert torch.equal(mask, m.structure.weight.mask(mask.dtype))
        assert int(mask.sum()) == m.structure.weight.k


def test_a_channels_last_stacks_batched_masks_are_laid_out_as_its_members_weights():
    """A batched stack's masks of a channels_last conv member are laid out as its weight (they
    were contiguous rows: ``weight * mask`` read two layouts, as the single layer did before
    ``topk.laid_out_as``), hold each member's own mask, and the vmapped forward gives what
    the members give one by one."""
    members = [nn.Sequential(SubnetConv2d(3, 8, 3, sparsity=s, seed=0), nn.Flatten())
               for s in (0.25, 0.5, 0.75)]
    stack = StackedModel(members, batched=True).to(memory_format=torch.channels_last)
    (masks,) = stack._row_masks([0, 1, 2])
    for member, mask in zip(members, masks):
        w = member[0].structure.weight
        assert mask.stride() == w.weight.stride() != w.weight.contiguous().stride()
        assert torch.equal(mask, w.mask(mask.dtype))
    x = torch.randn(2, 3, 6, 6).to(memory_format=torch.channels_last)
    for a, b in zip(stack(x), [m(x) for m in members]):
        torch.testing.assert_close(a, b)
