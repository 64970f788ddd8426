"""Sparsity sweeps: grid, aggregation (CSV, Markdown, PNG), skipping finished cells, resuming a
sweep killed in the middle of a cell."""

import contextlib
import csv
import dataclasses
import errno
import inspect
import json
import locale
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

import lotterynet.sweep as sweep_module
import lotterynet.sweep_cells as cells_module
import lotterynet.sweep_checks as checks_module
import lotterynet.sweep_cost as cost_module
import lotterynet.sweep_grid as grid_module
import lotterynet.sweep_jobs as jobs_module
import lotterynet.sweep_plan as plan_module
import lotterynet.sweep_table as table_module
import prefork
from conftest import (
    LARGER_THAN_MEMORY,
    REPO,
    STD_CONVS,
    TINY_BIT,
    disk_full_at,
    processes_mentioning,
    terabyte_file,
)
from lotterynet.checkpointing import atomic_torch_save
from lotterynet.cli import build_parser, given_values, main
from lotterynet.config import make_config
from lotterynet.config_schema import RunConfig
from lotterynet.config_yaml import ConfigLoader
from lotterynet.errors import ConfigError
from lotterynet.loggers import keep_wandb_id
from lotterynet.run import run
from lotterynet.run_stops import NOTHING_TO_RESUME as NOTHING
from lotterynet.stack_files import StackRecord, read_stack_file, write_stack_file
from lotterynet.sweep_grid import (
    OLD_LABELS,
    Overrides,
    Sweep,
    cell_name,
    digest,
    load_sweep,
    parse_variant,
    variant_label,
)

TINY = ["--arch", "fc2", "--limit-train", "300", "--val-size", "100", "--no-progress-bar",
        "--sweep-variants", "subsetsum:identity,wide", "--sweep-sparsities", "0.5,0.9",
        "--sweep-epochs", "1"]


def rows(sweep_dir):
    with open(sweep_dir / "sweep.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("base, variants, paper", [
    ({}, ["subsetsum:identity", "wide"], {"subsetsum/identity": 95.77, "wide": 97.24,
                                         "trained": 98.59}),
    # the variant named "subsetsum" is the identity curve when its base says so
    ({"activation": "identity"}, [{"structure": "subsetsum"}], {"subsetsum": 95.77,
                                                                 "trained": 98.59}),
    # n = 3 pairs: neither the subset-sum net nor the wide net of its size is the paper's
    ({"pairs": 3}, ["subsetsum:identity", "wide"], {"subsetsum/identity": "", "wide": "",
                                                    "trained": 98.59}),
    ({"hidden": 100}, ["wide"], {"wide": "", "trained": 98.59}),
    # unshared first layers (2n·d_in·d_out): neither the paper's subset-sum net nor, sized to
    # it, its wide net (h = 5000, not 2508)
    ({"shared": False}, ["subsetsum:identity", "wide"], {"subsetsum/identity": "", "wide": "",
                                                         "trained": 98.59}),
    ({"dataset": "fashion-mnist"}, ["wide"], {"wide": "", "trained": ""}),
    # LeNet5 with subnet convs: its baseline trains the convs too, not the paper's LeNet5 of
    # random frozen convs (98.36)
    ({"arch": "lenet5", "subnet_convs": True}, ["subsetsum:identity"],
     {"subsetsum/identity": "", "trained": ""}),
])
def test_paper_points_follow_the_cells_own_settings(tmp_path, base, variants, paper):
    """A row's paper_acc is Pensia et al.'s point only where the cells are the paper's network
    (it was matched on the variant's label: a base that changed the network kept the paper's
    number, a variant spelt as a map lost it)."""
    sweep = Sweep(base={"arch": "fc2", **base}, variants=[
        parse_variant(v) for v in variants], sparsities=[0.9], epochs=[1])
    for label, values in sweep.cells():
        cell = tmp_path / "cells" / cell_name(label, values)
        cell.mkdir(parents=True)
        (cell / "results.json").write_text(json.dumps({
            "config": make_config(values).to_dict(), "test_acc": 0.9,
            "params": {"kept": 10, "trainable": 10, "maskable": 100}}))
    table = table_module.aggregate(sweep, tmp_path)
    assert {r["variant"]: r["paper_acc"] for r in table} == paper
    assert all(r["gap"] == ("" if r["paper_acc"] == "" else round(90 - r["paper_acc"], 2))
               for r in table)


def test_a_cell_result_or_a_wandb_group_larger_than_the_memory_is_refused_unread(tmp_path):
    """A sweep's table read each cell's results.json whole, and its default W&B group the
    folder's wandb-group file: one of 1 TiB (sparse here) was a MemoryError's traceback."""
    from lotterynet.sweep_wandb import WANDB_GROUP_FILE, folder_wandb_group

    sweep = Sweep(base={"arch": "fc2"}, variants=[parse_variant("dense")], sparsities=[0.9],
                  epochs=[1], baseline=False)
    [(label, values)] = sweep.cells()
    (tmp_path / "cells" / cell_name(label, values)).mkdir(parents=True)
    results = terabyte_file(tmp_path / "cells" / cell_name(label, values) / "results.json")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(results))} {LARGER_THAN_MEMORY}"):
        table_module.aggregate(sweep, tmp_path)
    group = terabyte_file(tmp_path / WANDB_GROUP_FILE)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(group))} {LARGER_THAN_MEMORY}"):
        folder_wandb_group(tmp_path)


@pytest.mark.parametrize("written, fault", [
    ("{bad", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    ("[]", "not a mapping"),
    ('{"test_acc": 1.5}', "no test accuracy in [0, 1]"),
    ('{"test_acc": 0.9, "val_acc": "x"}', "a validation accuracy of 'x'"),
    ('{"test_acc": 0.9, "params": {"kept": 10}}', "no parameter counts (kept, trainable, "
                                                  "maskable)"),
    ('{"test_acc": 0.9, "params": {"kept": 1, "trainable": 1, "maskable": 1}, "config": {}}',
     "no epochs in its config")])
def test_a_damaged_cell_result_is_refused_in_a_line_naming_it(tmp_path, written, fault):
    """A cell's results.json that is not JSON (``{bad``: a write cut short, a hand edit), or
    lacks what its row holds, was a JSONDecodeError's (KeyError's) traceback from the table.
    (A sweep run again sets a cell of results not JSON aside and trains it anew before its
    table; one of a hand-edited mapping it counts done: moved away, it reruns the cell.)"""
    sweep = Sweep(base={"arch": "fc2"}, variants=[parse_variant("dense")], sparsities=[0.9],
                  epochs=[1], baseline=False)
    [(label, values)] = sweep.cells()
    results = tmp_path / "cells" / cell_name(label, values) / "results.json"
    results.parent.mkdir(parents=True)
    results.write_text(written)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(results))} is not a finished "
                                          rf"cell's results \({re.escape(fault)}\); move it "
                                          rf"away \(the sweep run again reruns the cell\) or "
                                          rf"restore it$"):
        table_module.aggregate(sweep, tmp_path)


def test_a_sweep_folder_whose_name_holds_a_control_character_is_named_as_the_group(tmp_path):
    """A sweep's default W&B group is its folder's name: one holding a control character (ESC
    here) was refused by the cells' configs as "--wandb-group 's\\x1bx-…' holds the control
    character", a flag the command did not give. It is refused as the folder, as one too long
    for a group is."""
    from lotterynet.sweep_wandb import wandb_group

    sweep = Sweep(base={"arch": "fc2", "wandb": True}, variants=[parse_variant("dense")],
                  sparsities=[0.9], epochs=[1], baseline=False)
    folder = tmp_path / "s\x1bx"
    suffix = f"-{digest(str(folder.resolve()))}"
    with pytest.raises(ConfigError, match=rf"^--sweep-out {re.escape(repr(str(folder)))}: its "
                                          rf"folder's name, the sweep's W&B group with "
                                          rf"'{suffix}' after it, holds the control character "
                                          rf"'\\x1b' \(choose another folder, or "
                                          rf"--wandb-group\)$"):
        wandb_group(sweep, folder, None, out_given=True)


def test_cells_written_before_an_option_existed_get_the_paper_points(tmp_path):
    """A cell whose results.json was written before ``hidden`` (and the other later options)
    existed, as those of results/sweep_fc2_cpu_reduced/, is a finished cell of the sweep run
    again, which then failed drawing its table: ``KeyError: 'hidden'``. Its config reads as the
    sweep reads it, the later options at their defaults: the paper's point."""
    later = ("augment", "conv_init", "cuda_graphs", "exclude", "fan_in", "hidden", "log_model",
             "model_kwargs", "score_init", "trainer")
    sweep = Sweep(base={"arch": "fc2"}, variants=[parse_variant("wide")], sparsities=[0.9],
                  epochs=[1])
    for label, values in sweep.cells():
        cell = tmp_path / "cells" / cell_name(label, values)
        cell.mkdir(parents=True)
        config = {k: v for k, v in make_config(values).to_dict().items() if k not in later}
        (cell / "results.json").write_text(json.dumps({
            "config": config, "test_acc": 0.9,
            "params": {"kept": 10, "trainable": 10, "maskable": 100}}))
    table = table_module.aggregate(sweep, tmp_path)
    assert [(r["variant"], r["paper_acc"], r["gap"]) for r in table] == [
        ("wide", 97.24, -7.24), ("trained", 98.59, -8.59)]


def test_a_variant_that_trains_weights_beside_its_masks_has_them_counted(tmp_path):
    """``kept_params`` counts masked weights alone: a variant that trains some layers
    (``--exclude``) shows them in a ``trained_params`` column (the trained baseline: all its
    weights); a sweep whose variants train none has no such column, as before."""
    def table(trained: int) -> list[dict]:
        sweep = Sweep(base={"arch": "fc2"}, variants=[{"structure": "dense"}],
                      sparsities=[0.5], epochs=[1])
        for label, values in sweep.cells():
            cell = tmp_path / str(trained) / "cells" / cell_name(label, values)
            cell.mkdir(parents=True)
            params = {"maskable": 0, "kept": 0, "frozen": 0, "trainable": 60} \
                if label == "trained" else \
                {"maskable": 100, "kept": 50, "frozen": 0, "trainable": 100 + trained}
            (cell / "results.json").write_text(json.dumps({
                "config": make_config(values).to_dict(), "test_acc": 0.9, "params": params}))
        return table_module.aggregate(sweep, tmp_path / str(trained))

    dense, baseline = table(30)
    assert (dense["kept_params"], dense["trained_params"]) == (50, 30)
    assert (baseline["kept_params"], baseline["trained_params"]) == (60, 60)
    assert list(dense)[:6] == ["variant", "sparsity", "pruned", "kept_params",
                               "maskable_params", "trained_params"]
    assert all("trained_params" not in row for row in table(0))


def test_a_row_says_the_fraction_its_masks_prune_beside_the_nominal_sparsity(tmp_path):
    """fixedsize keeps round((1 - s) n) of each group of n terms: at n = 3, s = 0.6 one of
    three, so 2/3 pruned; the row's sparsity stays the grid's 0.6 and ``pruned`` says 0.6667
    (the table showed only the nominal 0.6). The trained baseline prunes nothing."""
    from lotterynet.datamodule import TensorDataModule
    from lotterynet.params import count_params
    from lotterynet.run import build_module

    sweep = Sweep(base={"arch": "fc2", "pairs": 3}, variants=[
        {"structure": "fixedsize", "activation": "identity"}], sparsities=[0.6], epochs=[1])
    for label, values in sweep.cells():
        config = make_config(values)
        module = build_module(config, TensorDataModule(config.dataset, config.data_dir))
        cell = tmp_path / "cells" / cell_name(label, values)
        cell.mkdir(parents=True)
        (cell / "results.json").write_text(json.dumps({
            "config": config.to_dict(), "test_acc": 0.9, "params": count_params(module.model)}))
    fixedsize, trained = table_module.aggregate(sweep, tmp_path)
    assert (fixedsize["sparsity"], fixedsize["pruned"]) == (0.6, 0.6667)
    assert fixedsize["kept_params"] * 3 == fixedsize["maskable_params"]
    assert (trained["sparsity"], trained["pruned"]) == (0.0, 0.0)


def test_a_point_of_one_seed_has_no_spread(tmp_path):
    """A point of one seed (a sweep of one seed, or a seed's cell missing) had test_acc_std
    0.0 in the table, as if its seeds had agreed, where no spread was measured: it is empty
    (blank in sweep.csv and sweep.md, None in the W&B table, no band in the figure), as
    paper_acc where the paper has none; a point of two seeds has their standard deviation."""
    sweep = Sweep(base={"arch": "fc2"}, variants=[{"structure": "wide"}],
                  sparsities=[0.5, 0.9], epochs=[1], seeds=[0, 1])
    accs = {(0.5, 0): 0.9, (0.5, 1): 0.8, (0.9, 0): 0.7, (0.0, 0): 0.95}  # (0.9, 1): missing
    for label, values in sweep.cells():
        acc = accs.get((values.get("sparsity", 0.0) if label != "trained" else 0.0,
                        values["seed"]))
        if acc is None:
            continue
        cell = tmp_path / "cells" / cell_name(label, values)
        cell.mkdir(parents=True)
        (cell / "results.json").write_text(json.dumps({
            "config": make_config(values).to_dict(), "test_acc": acc,
            "params": {"kept": 10, "trainable": 10, "maskable": 100}}))
    table = table_module.aggregate(sweep, tmp_path)
    assert [(r["sparsity"], r["seeds"], r["test_acc_std"]) for r in table] == [
        (0.5, 2, 7.071), (0.9, 1, ""), (0.0, 1, "")]
    table_module.write_table(table, tmp_path, sweep.variants, {})
    assert [r["test_acc_std"] for r in rows(tmp_path)] == ["7.071", "", ""]
    assert [line.split(" | ")[list(table[0]).index("test_acc_std")] for line in
            (tmp_path / "sweep.md").read_text().splitlines()[2:]] == ["7.071", "", ""]
    assert [r["test_acc_std"] for r in table_module.wandb_table_rows(table)] == [
        0.07071, None, None]
    table_module.plot(table, tmp_path, "title", None, 10.0)  # (a band at 0.5 alone)


def test_the_best_epoch_budget_is_chosen_by_validation_accuracy_where_the_cells_have_it(
        tmp_path):
    """A point's best epoch budget was chosen by test accuracy even where the cells hold out a
    validation split: chosen on the test set whose accuracy it reports. It is chosen by
    val_acc where every budget of the seed has one, else by test_acc, Pensia et al.'s protocol
    (val_size 0); the table's best_by, the line above sweep.md's table and the figure's title
    say which."""
    sweep = Sweep(base={"arch": "fc2"}, variants=[{"structure": "wide"}], sparsities=[0.5],
                  epochs=[1, 2], seeds=[0, 1], baseline=False)
    accs = {(1, 0): (0.9, 0.8), (2, 0): (0.7, 0.85), (1, 1): (0.6, 0.78), (2, 1): (0.8, 0.75)}

    def table(validated: bool) -> list[dict]:
        for label, values in sweep.cells():
            val, test = accs[values["epochs"], values["seed"]]
            cell = tmp_path / str(validated) / "cells" / cell_name(label, values)
            cell.mkdir(parents=True)
            (cell / "results.json").write_text(json.dumps({
                "config": make_config(values).to_dict(), "test_acc": test,
                "val_acc": val if validated else None,
                "params": {"kept": 10, "trainable": 10, "maskable": 100}}))
        rows = table_module.aggregate(sweep, tmp_path / str(validated))
        table_module.write_table(rows, tmp_path / str(validated), sweep.variants, {})
        return rows

    validated, tested = table(True), table(False)
    assert [(r["test_acc_mean"], r["best_epochs"]) for r in validated] == [(77.5, "1/2")]
    assert [(r["test_acc_mean"], r["best_epochs"]) for r in tested] == [(81.5, "2/1")]
    for points, by, said in [(validated, "val_acc", "by validation accuracy"), (
            tested, "test_acc", "by test accuracy, the paper's protocol (no validation split)")]:
        assert [r["best_by"] for r in points] == [by]
        folder = tmp_path / str(points is validated)
        assert [r["best_by"] for r in rows(folder)] == [by]
        assert (folder / "sweep.md").read_text().splitlines()[:3] == [
            f"Best of the epoch budgets {said}.", "", "| " + " | ".join(points[0]) + " |"]
        assert table_module.figure_title(sweep, points) == (
            f"fc2 on mnist: best of 1 or 2 epochs, 2 seeds\nchosen {said}")


def test_a_point_whose_seeds_chose_their_budgets_differently_says_each_seeds_criterion(
        tmp_path):
    """A point whose seeds chose by different accuracies (a budget too short to validate, as
    a cell validating every 2nd epoch at 1 epoch, has no val_acc: its seed chose by test
    accuracy) read ``best_by`` ``test_acc/val_acc``, each criterion once, not which seed used
    which, and its ``best_epochs`` put a seed whose first budget was missing after the next
    seed: both are each seed's, in seed order, ``-`` for a seed of one budget (nothing
    chosen); seeds that agree still say their criterion once."""
    sweep = Sweep(base={"arch": "fc2"}, variants=[{"structure": "wide"}], sparsities=[0.5, 0.9],
                  epochs=[1, 2, 3], seeds=[0, 1, 2], baseline=False)
    accs = {(1, 1): (None, 0.7), (2, 1): (0.8, 0.9), (3, 1): (0.6, 0.85),  # (val, test)
            (2, 0): (0.7, 0.8), (3, 0): (0.9, 0.75), (3, 2): (0.5, 0.6)}  # (epochs, seed)
    for label, values in sweep.cells():
        val, test = accs.get((values["epochs"], values["seed"]), (None, None)) \
            if values["sparsity"] == 0.5 else (0.5 + values["epochs"] / 10, 0.5)
        if test is None:
            continue
        cell = tmp_path / "cells" / cell_name(label, values)
        cell.mkdir(parents=True)
        (cell / "results.json").write_text(json.dumps({
            "config": make_config(values).to_dict(), "test_acc": test, "val_acc": val,
            "params": {"kept": round(100 * (1 - values["sparsity"])), "trainable": 100,
                       "maskable": 100}}))
    table = table_module.aggregate(sweep, tmp_path)
    assert [(r["sparsity"], r["test_acc_mean"], r["best_epochs"], r["best_by"]) for r in table] \
        == [(0.9, 50.0, "3/3/3", "val_acc"), (0.5, 75.0, "3/2/3", "val_acc/test_acc/-")]
    assert table_module.chosen_by(table) == (
        "by validation accuracy where each budget of a seed has one, else by test accuracy, "
        "the paper's protocol (best_by)")


def test_a_point_missing_some_of_its_cells_names_them_in_the_table_and_is_crossed(
        tmp_path, monkeypatch):
    """A point some of whose cells have no results (a sweep stopped, a cell failed) looked
    complete in the table (``seeds 2, best_epochs 2/1``, seed 1 with budget 1 alone): its row
    names the missing cells (``missing``), and the figure crosses it (the baseline: in its
    legend); a table whose every point is complete has no such column, as before."""
    sweep = Sweep(base={"arch": "fc2"}, variants=[{"structure": "wide"}],
                  sparsities=[0.5, 0.9], epochs=[1, 2], seeds=[0, 1])
    absent = {(0.5, 2, 1), (0.0, 1, 0)}  # (sparsity, epochs, seed)
    for label, values in sweep.cells():
        sparsity = values["sparsity"] if label != "trained" else 0.0
        cell = tmp_path / "cells" / cell_name(label, values)
        cell.mkdir(parents=True)
        (cell / "results.json").write_text(json.dumps({
            "config": make_config(values).to_dict(), "test_acc": values["epochs"] / 10,
            "val_acc": None, "params": {"kept": round(100 * (1 - sparsity)), "trainable": 10,
                                        "maskable": 100}}))
        if (sparsity, values["epochs"], values["seed"]) in absent:
            (cell / "results.json").unlink()
    table = table_module.aggregate(sweep, tmp_path)
    assert [(r["variant"], r["sparsity"], r["seeds"], r["best_epochs"], r.get("missing"))
            for r in table] == [("wide", 0.9, 2, "2/2", ""), ("wide", 0.5, 2, "2/1", "e2-seed1"),
                                ("trained", 0.0, 2, "2/2", "e1-seed0")]
    table_module.write_table(table, tmp_path, sweep.variants, {})
    assert [r["missing"] for r in rows(tmp_path)] == ["", "e2-seed1", "e1-seed0"]
    legends, crossed = [], []
    monkeypatch.setattr(table_module, "savefig_atomic", lambda fig, *_, **__: (
        legends.append([t.get_text() for t in fig.axes[0].get_legend().get_texts()]),
        crossed.append([c.get_offsets().tolist() for c in fig.axes[0].collections])))
    table_module.plot(table, tmp_path, "title", None, 10.0)
    assert legends[0] == ["wide random", "wide random (Pensia et al.)",
                          "missing budgets or seeds (sweep.md)",
                          "trained dense (20.00%; missing budgets or seeds)", "chance",
                          table_module.BAND]
    assert crossed[0][-1] == [[50.0, 15.0]]  # (after the wide line's band and paper points)
    complete = dataclasses.replace(sweep, sparsities=[0.9], baseline=False)
    assert "missing" not in table_module.aggregate(complete, tmp_path)[0]


def test_a_point_none_of_whose_cells_has_results_has_a_row_naming_them(tmp_path, monkeypatch):
    """A point whose every cell lacks results (results/sweep_lenet5_authors/'s trained
    baseline) had no row, and nothing in the table said so: its row names its variant and
    sparsity, 0 seeds and its missing cells, every other column empty (None in the W&B
    table); the figure draws the points with numbers alone."""
    sweep = Sweep(base={"arch": "fc2"}, variants=[{"structure": "wide"}],
                  sparsities=[0.5, 0.9], epochs=[1, 2], seeds=[0, 1])
    for label, values in sweep.cells():
        if label == "trained" or values["sparsity"] == 0.9:
            continue
        cell = tmp_path / "cells" / cell_name(label, values)
        cell.mkdir(parents=True)
        (cell / "results.json").write_text(json.dumps({
            "config": make_config(values).to_dict(), "test_acc": values["epochs"] / 10,
            "val_acc": None, "params": {"kept": 50, "trainable": 100, "maskable": 100}}))
    table = table_module.aggregate(sweep, tmp_path)
    every = "e1-seed0, e1-seed1, e2-seed0, e2-seed1"
    assert [(r["variant"], r["sparsity"], r["seeds"], r["test_acc_mean"], r["missing"])
            for r in table] == [("wide", 0.5, 2, 20.0, ""), ("wide", 0.9, 0, "", every),
                                ("trained", 0.0, 0, "", every)]
    assert list(table[1]) == list(table[0]) and all(
        {k for k, v in row.items() if v != ""} == {"variant", "sparsity", "seeds", "missing"}
        for row in table[1:])
    table_module.write_table(table, tmp_path, sweep.variants, {})
    assert [(r["variant"], r["seeds"], r["test_acc_mean"], r["missing"])
            for r in rows(tmp_path)] == [("wide", "2", "20.0", ""), ("wide", "0", "", every),
                                         ("trained", "0", "", every)]
    assert (tmp_path / "sweep.md").read_text().splitlines()[-1] == (
        f"| trained | 0.0 |  |  |  |  |  | 0 |  |  | {every} |  |  |")
    assert [(r["test_acc_mean"], r["best_epochs"]) for r in
            table_module.wandb_table_rows(table)] == [(0.2, [2, 2]), (None, None), (None, None)]
    legends = []
    monkeypatch.setattr(table_module, "savefig_atomic", lambda fig, *_, **__: legends.append(
        ([t.get_text() for t in fig.axes[0].get_legend().get_texts()],
         [line.get_xydata().tolist() for line in fig.axes[0].get_lines()])))
    table_module.plot(table, tmp_path, "title", None, 10.0)
    assert legends[0] == (["wide random", "wide random (Pensia et al.)", "chance",
                           table_module.BAND],
                          [[[50.0, 20.0]], [[0.0, 10.0], [1.0, 10.0]]])


@pytest.mark.parametrize("seeds", [1, 2])
def test_the_figure_names_its_axes_its_curves_and_its_band_beside_the_points(seeds, tmp_path,
                                                                              monkeypatch):
    """Figure 2 as a reader takes it in: test accuracy (%) against kept parameters on a log
    axis, a line per variant and the trained dense baseline named in the legend. The legend
    stood inside the axes, over the points and the baseline's line (9 entries for three
    variants), and the shaded band of a point of several seeds was named nowhere: the legend
    stands right of the axes, and names the band (± 1 std) where there is one."""
    rows = [{"variant": variant, "sparsity": sparsity, "kept_params": kept,
             "test_acc_mean": 50.0 + kept / 100, "test_acc_std": 2.0 if seeds > 1 else "",
             "seeds": seeds, "paper_acc": ""}
            for variant in ("subsetsum/identity", "wide") for sparsity, kept in ((0.5, 2000),
                                                                               (0.9, 400))]
    rows.append({**rows[0], "variant": "trained", "test_acc_mean": 98.0})
    figures = []
    monkeypatch.setattr(table_module, "savefig_atomic", lambda fig, *_, **__: figures.append(
        (fig, fig.axes[0], fig.canvas.draw())))
    table_module.plot(rows, tmp_path, "title", None, 10.0)
    fig, ax, _ = figures[0]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_xscale()) == (
        "kept parameters", "test accuracy (%)", "log")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "subset-sum, identity", "wide random", "trained dense (98.00%)", "chance",
        *[table_module.BAND] * (seeds > 1)]
    assert ax.get_legend().get_window_extent().x0 > ax.get_window_extent().x1


def test_the_table_and_figure_are_the_files_a_failed_sweep_clears(tmp_path):
    """write_table and plot write exactly TABLE_FILES, the names a sweep whose every cell
    failed removes (the names were written out twice, once in each list)."""
    rows = [{"variant": variant, "sparsity": 0.5, "kept_params": 100, "test_acc_mean": 90.0,
             "test_acc_std": 0.0, "seeds": 1, "paper_acc": ""}
            for variant in ("subsetsum", "trained")]
    table_module.write_table(rows, tmp_path, [{"structure": "subsetsum"}], {})
    figure = table_module.plot(rows, tmp_path, "title", None, 10.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(table_module.TABLE_FILES)
    assert figure.name in table_module.TABLE_FILES


def test_the_sweep_figure_leaves_the_callers_matplotlib_backend_as_it_was(tmp_path,
                                                                          pdf_backend):
    """sweep_table.plot called ``matplotlib.use("Agg")``: called in-process (a sweep's table
    from Python, a notebook), it switched its caller's backend for the whole process. It
    draws on a Figure of its own, and still writes both files."""
    import matplotlib

    rows = [{"variant": variant, "sparsity": 0.5, "kept_params": 100, "test_acc_mean": 90.0,
             "test_acc_std": 0.0, "seeds": 1, "paper_acc": ""}
            for variant in ("subsetsum", "trained")]
    table_module.plot(rows, tmp_path, "title", None, 10.0)
    assert matplotlib.get_backend() == pdf_backend
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(table_module.FIGURES)


def test_the_table_says_what_its_hashed_variant_values_are(tmp_path):
    """sweep.md's rows name a variant's list or mapping ``KEY=<hash>``; a legend under the
    table gives each hash's value, once however many variants share it (a mapping's keys in
    any order are one value); a sweep of scalar variants has the table alone, as before."""
    def table(variants: list[dict]) -> str:
        rows = [{"variant": variant_label(variant), "sparsity": 0.5, "test_acc_mean": 90.0}
                for variant in variants]
        table_module.write_table(rows, tmp_path, variants, grid_module.spelled_labels(variants))
        return (tmp_path / "sweep.md").read_text()

    bit = {"stem_chs": 32, "channels": [64] * 4}
    assert table([{"structure": "dense", "exclude": STD_CONVS},
                  {"structure": "dense", "exclude": STD_CONVS[:1],
                   "model_kwargs": {"channels": [64] * 4, "stem_chs": 32}},
                  {"structure": "subsetsum", "exclude": STD_CONVS, "model_kwargs": bit}]) == (
        "| variant | sparsity | test_acc_mean |\n|---|---|---|\n"
        "| dense/exclude=4fe8ab4f | 0.5 | 90.0 |\n"
        "| dense/exclude=0112b2d1/model_kwargs=4bf87c42 | 0.5 | 90.0 |\n"
        "| subsetsum/exclude=4fe8ab4f/model_kwargs=4bf87c42 | 0.5 | 90.0 |\n\n"
        "- `exclude=4fe8ab4f`: `exclude = ['stem.conv', 'stages.*.blocks.*.downsample.conv', "
        "'stages.*.blocks.*.conv1', 'stages.*.blocks.*.conv2', 'stages.*.blocks.*.conv3']`\n"
        "- `exclude=0112b2d1`: `exclude = ['stem.conv']`\n"
        "- `model_kwargs=4bf87c42`: `model_kwargs = {'channels': [64, 64, 64, 64], "
        "'stem_chs': 32}`\n")
    assert table([{"structure": "subsetsum", "activation": "identity"}, {"structure": "wide"}]) \
        == ("| variant | sparsity | test_acc_mean |\n|---|---|---|\n"
            "| subsetsum/identity | 0.5 | 90.0 |\n| wide | 0.5 | 90.0 |\n")


def test_the_csv_table_and_the_figure_spell_out_hashed_variant_values(tmp_path, monkeypatch):
    """sweep.csv (read without sweep.md's legend) has a ``variant_values`` column that writes
    out the lists and mappings a variant's label names by a hash; the figure's legend names a
    variant so where that is short, by its hashes where not. Scalar variants: no column."""
    long_one = {"structure": "dense", "exclude": STD_CONVS}
    short_one = {"structure": "dense", "exclude": ["stem.conv"]}
    rows = [{"variant": variant_label(variant), "sparsity": 0.5, "kept_params": 100 + i,
             "test_acc_mean": 90.0, "test_acc_std": 0.0, "seeds": 1, "paper_acc": ""}
            for i, variant in enumerate((long_one, short_one))]
    rows.append({**rows[0], "variant": "trained", "sparsity": 0.0})
    spelled = grid_module.spelled_labels([long_one, short_one])
    table_module.write_table(rows, tmp_path, [long_one, short_one], spelled)
    with open(tmp_path / "sweep.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[:2] == ["variant", "variant_values"]
    assert [(r["variant"], r["variant_values"]) for r in table] == [
        ("dense/exclude=4fe8ab4f", f"dense/exclude={STD_CONVS!r}"),
        ("dense/exclude=0112b2d1", "dense/exclude=['stem.conv']"), ("trained", "trained")]
    legends = []
    monkeypatch.setattr(table_module, "savefig_atomic", lambda fig, *_, **__: legends.append(
        [t.get_text() for t in fig.axes[0].get_legend().get_texts()]))
    table_module.plot(rows, tmp_path, "title", None, 10.0, spelled=spelled)
    assert legends[0][:2] == ["dense/exclude=4fe8ab4f", "dense/exclude=['stem.conv']"]
    scalar = [{**rows[0], "variant": "wide"}]
    table_module.write_table(scalar, tmp_path, [{"structure": "wide"}], {})
    assert (tmp_path / "sweep.csv").read_text().splitlines()[0].startswith("variant,sparsity,")


def test_a_table_holding_a_non_ascii_character_is_printed_under_a_non_utf8_locale(
        tmp_path, capsys):
    """sweep.md is written as UTF-8; the sweep printed it by reading it back in the locale's
    encoding (and wrote sweep.csv in it): under a non-UTF-8 locale a non-ASCII character in
    the table (``exclude = ['γ']`` in its legend) was a UnicodeDecodeError (the CSV's a
    UnicodeEncodeError) once every cell had finished. Both files are UTF-8, the table printed."""
    sweep = Sweep(base={"arch": "fc2"}, variants=[{"structure": "dense", "exclude": ["γ"]}],
                  sparsities=[0.5], epochs=[1], baseline=False)
    for config in cells_module.cell_configs(sweep, tmp_path).values():
        Path(config.out).mkdir(parents=True)
        (Path(config.out) / "results.json").write_text(json.dumps({
            "config": config.to_dict(), "test_acc": 0.9,
            "params": {"kept": 50, "trainable": 100, "maskable": 100}}))
    was = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")  # (ASCII, as a Latin-1 or cp1252 locale for 'γ')
    try:
        with open(os.devnull) as f:
            if sys.flags.utf8_mode or f.encoding.lower() in ("utf-8", "utf8"):
                pytest.skip("this Python opens files as UTF-8 whatever the locale")
        args = SimpleNamespace(stack=True)
        assert sweep_module.run_locked(sweep, tmp_path, args, 1, threading.Event()) == 0
    finally:
        locale.setlocale(locale.LC_CTYPE, was)
    legend = f"- `exclude={digest(['γ'])}`: `exclude = ['γ']`\n"
    table = (tmp_path / "sweep.md").read_text(encoding="utf-8")
    assert table.endswith(legend) and f"to run\n{table}sweep done: " in capsys.readouterr().out
    with open(tmp_path / "sweep.csv", newline="", encoding="utf-8") as f:
        assert [r["variant_values"] for r in csv.DictReader(f)] == ["dense/exclude=['γ']"]


#: A grid of 8 cells and 4 trained baselines (2 sparsities, 2 budgets, 2 seeds) whose results
#: :func:`finished_sweep` writes as a run does, training nothing.
TABLE_GRID = ["--arch", "fc2", "--sweep-variants", "wide", "--sweep-sparsities", "0.5,0.9",
              "--sweep-epochs", "1,2", "--sweep-seeds", "0,1"]


@pytest.fixture(scope="module")
def _finished_sweep(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """The sweep of :data:`TABLE_GRID`, every cell finished (results of each its own accuracy
    and kept count, written as a run writes them), and the table and figure that the sweep
    itself wrote of them (it ran none): ``sweep.csv`` and ``sweep.md``'s bytes. Made once."""
    out = tmp_path_factory.mktemp("finished") / "sweep"
    args = build_parser().parse_args([*TABLE_GRID, "--sweep-out", str(out)])
    sweep = load_sweep(args, given_values(args))
    for i, config in enumerate(cells_module.cell_configs(sweep, out).values()):
        Path(config.out).mkdir(parents=True)
        (Path(config.out) / "results.json").write_text(json.dumps({
            "config": config.to_dict(), "test_acc": 0.5 + i / 100, "val_acc": None,
            "params": {"kept": 50 - i, "trainable": 100, "maskable": 100}}))
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        assert sweep_module.run_locked(sweep, out, SimpleNamespace(stack=True), 1,
                                       threading.Event()) == 0
    return out, {name: (out / name).read_bytes() for name in ("sweep.csv", "sweep.md")}


@pytest.fixture
def finished_sweep(_finished_sweep, tmp_path) -> tuple[Path, dict[str, bytes]]:
    """A copy of :func:`_finished_sweep`'s in ``tmp_path / "sweep"``."""
    made, written = _finished_sweep
    return Path(shutil.copytree(made, tmp_path / "sweep")), written


def files_of(folder: Path) -> dict[Path, int]:
    """Every file under ``folder`` and its modification time (a folder's own changes as a
    sweep probes it: check_output_dir)."""
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if not p.is_dir()}


def test_table_only_writes_the_sweeps_own_table_and_marks_missing_cells_training_nothing(
        finished_sweep, tmp_path, capsys, monkeypatch):
    """A sweep's table and figure were written only by running the sweep, which trains every
    cell not finished: none could be had of half a grid, of cells copied in, or redrawn after
    a plotting fix. ``--table-only`` writes them from the finished cells and trains nothing:
    from the folder's sweep.json alone, or the sweep's file and flags, byte for byte the
    table the sweep wrote (with --wandb too, no W&B summary run logged); of a half-finished
    grid (no data to read), its missing points marked as the sweep marks them, no cell
    folder, checkpoint or other file written."""
    out, written = finished_sweep
    for name in table_module.TABLE_FILES:
        (out / name).unlink()
    capsys.readouterr()
    monkeypatch.setattr(sweep_module, "log_to_wandb", lambda *_: pytest.fail("logged"))
    for argv in (["--sweep-out", str(out)], [*TABLE_GRID, "--wandb", "--sweep-out", str(out)]):
        assert main(["--table-only", *argv]) == 0
        assert {name: (out / name).read_bytes() for name in written} == written
        assert (out / "figure.png").read_bytes()[:4] == b"\x89PNG"
        assert capsys.readouterr().out.splitlines()[-1] == (
            f"table of all 12 cells, nothing trained: {out / 'sweep.csv'}, "
            f"{out / 'sweep.md'}, {out / 'figure.png'}")
    for cell in ("wide-s0.5-e2-seed1", "trained-e1-seed0", "trained-e2-seed0",
                 "trained-e1-seed1", "trained-e2-seed1"):
        shutil.rmtree(out / "cells" / cell)
    monkeypatch.setenv("LOTTERYNET_DATA", str(tmp_path / "no-data"))
    before = files_of(out)
    assert main(["--table-only", "--sweep-out", str(out)]) == 0
    after = files_of(out)
    assert after.keys() == before.keys()
    assert sorted(p.name for p in after if after[p] != before[p]) == sorted(
        table_module.TABLE_FILES)
    assert [(r["variant"], r["sparsity"], r["seeds"], r["best_epochs"], r["missing"])
            for r in rows(out)] == [
        ("wide", "0.9", "2", "2/2", ""), ("wide", "0.5", "2", "2/1", "e2-seed1"),
        ("trained", "0.0", "0", "", "e1-seed0, e1-seed1, e2-seed0, e2-seed1")]
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"table of 7 of 12 cells (5 without results: sweep.md's missing column names them, the "
        f"figure crosses their points), nothing trained: {out / 'sweep.csv'}, "
        f"{out / 'sweep.md'}, {out / 'figure.png'}")


def test_a_sweep_run_again_from_its_sweep_json_keeps_its_cells_when_a_default_changed(
        finished_sweep, data_dir, capsys, monkeypatch):
    """A sweep's sweep.json held its base as given (its config file and flags), not the
    defaults then in force: once a default changed, the sweep run again from it refused its
    own finished cells as run with another config ('momentum 0.9 -> 0.5'; the results'
    README's sweep_fc2_cpu_reduced). It records the value every cell ran with of each option
    no variant sets: the cells are the sweep's, nothing trains."""
    out, written = finished_sweep
    fields = list(inspect.signature(RunConfig.__init__).parameters)[1:]
    defaults = list(RunConfig.__init__.__defaults__)
    defaults[fields.index("momentum")] = 0.5  # (a later version's default, say)
    monkeypatch.setattr(RunConfig.__init__, "__defaults__", tuple(defaults))
    assert make_config({}).momentum == 0.5
    capsys.readouterr()
    assert main(["--sweep", str(out / "sweep.json"), "--sweep-out", str(out),
                 "--data-dir", str(data_dir)]) == 0  # (CI has no $LOTTERYNET_DATA)
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"sweep done: {out / 'sweep.csv'}, {out / 'sweep.md'}, {out / 'figure.png'}")
    assert {name: (out / name).read_bytes() for name in written} == written


TABLE_ONLY = "--table-only writes the table and figure of a sweep's finished cells and runs " \
    "nothing; drop "
DAMAGED = "is not a sweep's resolved grid ({}); restore it, or give the sweep itself with " \
    "--sweep FILE.yaml (or the --sweep-* flags) as it ran"


@pytest.mark.parametrize("argv, line", [
    ([], "--table-only needs the sweep: its folder with --sweep-out DIR (whose sweep.json holds "
         "its grid), or --sweep FILE.yaml (or the --sweep-* flags) as it ran"),
    (["--sweep-out", "{sweep}", "--cell", "wide-s0.5-e1-seed0"], TABLE_ONLY + "--cell"),
    (["--stack-file", "{sweep}/stacks/wide-seed0/stack.yaml"], TABLE_ONLY + "--stack-file"),
    (["--sweep-out", "{sweep}", "--wandb-sweep", "w.yaml"], TABLE_ONLY + "--wandb-sweep"),
    (["--sweep-out", "{sweep}", "--jobs-per-device", "2"], TABLE_ONLY + "--jobs-per-device"),
    (["--sweep-out", "{sweep}", "--no-stack"], TABLE_ONLY + "--no-stack"),
    (["--sweep-out", "{sweep}", "--yes"], TABLE_ONLY + "--yes"),
    (["--sweep-out", "{sweep}", "--print-config"], TABLE_ONLY + "--print-config"),
    (["--sweep-out", "{sweep}", "--lr", "0.2"],
     "--lr: --table-only --sweep-out reads the sweep's grid and config from "
     "'{sweep}/sweep.json'; drop --lr, or give the sweep with --sweep FILE.yaml (or the "
     "--sweep-* flags) as it ran"),
    (["--sweep-out", "{tmp}/nowhere"], "--table-only: --sweep-out '{tmp}/nowhere' is not a "
     "folder; give the folder a sweep wrote (its sweep.json and cells/)"),
    (["--sweep-out", "{tmp}"], "--table-only: --sweep-out '{tmp}' has no sweep.json (not a "
     "sweep's folder); give the sweep itself with --sweep FILE.yaml (or the --sweep-* flags) "
     "as it ran"),
    (["--sweep-out", "{sweep}", "no sweep.json"], "--table-only: --sweep-out '{sweep}' has no "
     "sweep.json (its cells were run by --cell, which writes none, or by an older sweep); "
     "give the sweep itself with --sweep FILE.yaml (or the --sweep-* flags) as it ran"),
    (["--sweep-out", "{sweep}", '{"base": {}'], "--table-only: '{sweep}/sweep.json' " +
     DAMAGED.format("Expecting ',' delimiter: line 1 column 12 (char 11)")),
    (["--sweep-out", "{sweep}", '{"base": {}}'], "--table-only: '{sweep}/sweep.json' " +
     DAMAGED.format("not a mapping of the keys base, variants, sparsities, epochs, seeds, "
                    "baseline")),
    (["--sweep-out", "{sweep}", "epochs: 2"], "--table-only: '{sweep}/sweep.json' " +
     DAMAGED.format("epochs must be a non-empty list of positive integers, got 2")),
    ([*TABLE_GRID, "--sweep-out", "{tmp}/other"], "--table-only: sweep folder '{tmp}/other' "
     "holds no finished cell of this sweep's 12 cells (it has no cells/); give the folder it "
     "ran in (--sweep-out), or run the sweep"),
    ([*TABLE_GRID, "--lr", "0.2", "--sweep-out", "{sweep}"], "--table-only: sweep folder "
     "'{sweep}' holds 12 finished cells run with another config than this sweep's (lr 0.1 -> "
     "0.2); give the sweep's flags as it ran them, or --sweep-out alone (its sweep.json holds "
     "the grid it ran)"),
])
def test_table_only_refuses_what_it_cannot_tabulate_in_one_line_writing_nothing(
        finished_sweep, tmp_path, capsys, argv, line):
    """``--table-only`` beside a flag that runs cells or says how, with a run flag where the
    folder's sweep.json gives the config, or given a folder that is not a sweep's, without a
    sweep.json (a sweep's of W&B agents) or with a damaged one (a third argument here: it
    replaces the file, or a ``KEY: VALUE`` its key), a folder holding no cell of the grid or
    cells of another config: exit 2, one line naming it and what to give, nothing written."""
    sweep, _ = finished_sweep
    if argv[2:3] and not argv[2].startswith("-"):
        argv, file = argv[:2], argv[2]
        data = json.loads((sweep / "sweep.json").read_text())
        (sweep / "sweep.json").unlink()
        if file.startswith("epochs"):
            data["epochs"] = 2
            (sweep / "sweep.json").write_text(json.dumps(data))
        elif file != "no sweep.json":
            (sweep / "sweep.json").write_text(file)
    (tmp_path / "notes.txt").write_text("mine\n")
    before = files_of(tmp_path)
    argv = [arg.format(sweep=sweep, tmp=tmp_path) for arg in argv]
    assert main(["--table-only", *argv]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"train.py: error: {line.format(sweep=sweep, tmp=tmp_path)}\n")
    assert files_of(tmp_path) == before


def test_tiny_sweep_table_plot_and_rerun_skips(tmp_path, data_dir, capsys, monkeypatch):
    out = tmp_path / "sweep"
    argv = [*TINY, "--data-dir", str(data_dir), "--sweep-out", str(out)]
    assert main(argv) == 0
    table = rows(out)
    assert {(r["variant"], r["sparsity"]) for r in table} == {
        ("subsetsum/identity", "0.5"), ("subsetsum/identity", "0.9"), ("wide", "0.5"),
        ("wide", "0.9"), ("trained", "0.0")}
    by_key = {(r["variant"], r["sparsity"]): r for r in table}
    # wide is sized to the structured net: equal maskable counts within 0.2 %
    a, b = (int(by_key[(v, "0.9")]["maskable_params"]) for v in ("subsetsum/identity", "wide"))
    assert abs(a - b) / a < 0.002
    assert int(by_key[("wide", "0.9")]["kept_params"]) < int(by_key[("wide", "0.5")]["kept_params"])
    assert all(10 < float(r["test_acc_mean"]) <= 100 for r in table)
    assert (out / "figure.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "figure.pdf").read_bytes()[:4] == b"%PDF"
    # Pensia et al.'s FC2 points beside ours: 97.24 % for wide at 10 % kept, and the gap to it
    wide = by_key[("wide", "0.9")]
    assert float(wide["paper_acc"]) == 97.24
    assert float(wide["gap"]) == pytest.approx(float(wide["test_acc_mean"]) - 97.24, abs=0.01)
    assert by_key[("subsetsum/identity", "0.5")]["paper_acc"] == "97.97"
    assert "| variant |" in (out / "sweep.md").read_text()
    cells = sorted(p.name for p in (out / "cells").iterdir())
    assert len(cells) == 5 and all((out / "cells" / c / "results.json").is_file() for c in cells)
    stamps = {c: (out / "cells" / c / "results.json").stat().st_mtime_ns for c in cells}
    capsys.readouterr()
    assert main(argv) == 0  # second invocation: nothing new runs
    assert "5 already done, 0 to run" in capsys.readouterr().out
    assert stamps == {c: (out / "cells" / c / "results.json").stat().st_mtime_ns for c in cells}
    assert rows(out) == table
    # --wandb added later: the cells trained without it have no W&B run, and the sweep says
    # which (their rows are in its summary table); a cell or stack with its id file has one
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(sweep_module, "log_to_wandb", lambda *_: None)
    stored = {c: json.loads((out / "cells" / c / "results.json").read_text()) for c in cells}
    logged = [c for c in cells if "stack" not in stored[c]][:1]
    keep_wandb_id(out / "cells" / logged[0], "a1")
    stack = next(r["stack"]["dir"] for r in stored.values() if "stack" in r)
    keep_wandb_id(out / stack, "b2")
    logged += [c for c in cells if stored[c].get("stack", {}).get("dir") == stack]
    assert main([*argv, "--wandb"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "no W&B run" in x)
    head, _, names = line.removesuffix("; their rows are in the summary table").partition(": ")
    unlogged = [c for c in cells if c not in logged]
    assert head == f"{len(unlogged)} finished cells have no W&B run (trained without --wandb)"
    assert sorted(names.split(", ")) == unlogged
    # a narrower grid there: its table leaves the trained baseline out, and says so (silently)
    assert main([*argv, "--no-baseline"]) == 0
    assert "not in the table: 1 finished cell of " in capsys.readouterr().out
    assert len(rows(out)) == 4
    # a folder where the sweep writes a file: one line naming it, exit 2 (were tracebacks)
    for name in ("sweep.csv", ".sweep.lock"):
        (out / name).unlink()
        (out / name).mkdir()
        assert main(argv) == 2
        assert capsys.readouterr().err.splitlines()[-1] == (
            f"train.py: error: '{out / name}': Is a directory (something else is where "
            f"lotterynet writes or reads: move it away)")
        (out / name).rmdir()
    # ... and a cell's results.json that is a folder is refused before anything trains (it was
    # reported after its stack had trained)
    results = out / "cells" / cells[0] / "results.json"
    results.unlink()
    results.mkdir()
    def files():  # (the lock file aside: the loop above removed it)
        return {p: p.stat().st_mtime_ns for p in out.rglob("*")
                if p.is_file() and p.name != ".sweep.lock"}

    before = files()
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1] == (
        f"train.py: error: '{results}': Is a directory (something else is where lotterynet "
        f"writes or reads: move it away)")
    assert files() == before


def as_older_sweeps_wrote(sweep_dir: Path, written: str | Path) -> None:
    """The cells' results in ``sweep_dir`` as sweeps wrote them before they stored their paths
    relative to the sweep folder: from ``written``, the folder as ``--sweep-out`` gave it."""
    for path in sweep_dir.glob("cells/*/results.json"):
        results = json.loads(path.read_text())
        for holder, key in ((results, "run_dir"), (results["config"], "out"),
                            (results.get("stack", {}), "dir")):
            if key in holder:
                assert not Path(holder[key]).is_absolute()
                holder[key] = str(Path(written) / holder[key])
        path.write_text(json.dumps(results, indent=2) + "\n")


def test_a_copied_sweep_names_its_own_cells(tmp_path, data_dir, capsys):
    """``cp -r A B``: B's finished cells' results named A's folders (``run_dir``, the stack's
    ``dir``, ``config.out``, absolute), where whatever followed them (a stack's tickets, a cell
    set aside) went, and a re-run in B rewrote them. A sweep stores them relative to its
    folder (and its stacks' own files relative to theirs): re-run with A gone, B trains
    nothing, writes its table and leaves every results.json byte for byte; an older sweep's
    copy, naming A's folders, is brought to the same files."""
    original, copy, older = tmp_path / "A", tmp_path / "B", tmp_path / "C"
    argv = [*TINY, "--sweep-variants", "subsetsum:identity", "--pairs", "1",
            "--data-dir", str(data_dir)]
    assert main([*argv, "--sweep-out", str(original)]) == 0
    stored = {p.relative_to(original): p.read_bytes()
              for p in original.glob("cells/*/results.json")}
    assert len(stored) == 3
    stacks = set()
    for path, text in stored.items():
        results = json.loads(text)
        assert results["run_dir"] == results["config"]["out"] == str(path.parent)
        stacks |= {results["stack"]["dir"]} if "stack" in results else set()
    assert stacks == {"stacks/subsetsum-identity-seed0"}
    # (the stack's hparams.yaml named its members' cells absolutely: it names them as
    # stack.yaml does, ../../cells/CELL)
    assert not [p for p in original.glob("stacks/*/*")
                if p.is_file() and str(original).encode() in p.read_bytes()]
    shutil.copytree(original, copy)
    shutil.copytree(original, older)
    as_older_sweeps_wrote(older, original)
    shutil.rmtree(original)
    for sweep_dir in (copy, older):
        for name in table_module.TABLE_FILES:
            (sweep_dir / name).unlink()
        capsys.readouterr()
        start = time.time_ns()
        assert main([*argv, "--sweep-out", str(sweep_dir)]) == 0
        assert "3 cells, 3 already done, 0 to run" in capsys.readouterr().out
        assert len(rows(sweep_dir)) == 3 and not original.exists()
        written = [p for p in sweep_dir.rglob("*") if p.is_file() and p.stat().st_mtime_ns >= start]
        assert not [p for p in written if str(original).encode() in p.read_bytes()]
        assert {p.relative_to(sweep_dir): p.read_bytes()
                for p in sweep_dir.glob("cells/*/results.json")} == stored


def test_a_sweep_run_from_elsewhere_keeps_its_relative_paths(tmp_path, data_dir, capsys,
                                                              monkeypatch):
    """The committed sweeps' results named their cells relative to the repository's root
    (``results/SWEEP/cells/CELL``): re-run from another folder they are read as this sweep's
    cells, stored relative to the sweep folder as a sweep stores them now; re-run from
    another folder, by its absolute path, or from inside it, the sweep was not moved, and no
    results.json is rewritten; a copy beside it names its own cells."""
    monkeypatch.chdir(tmp_path)
    argv = [*TINY, "--sweep-variants", "subsetsum:identity", "--pairs", "1",
            "--data-dir", str(data_dir)]
    assert main([*argv, "--sweep-out", "results/s"]) == 0
    sweep_dir = tmp_path / "results" / "s"
    before = {p: p.read_bytes() for p in sweep_dir.glob("cells/*/results.json")}
    assert len(before) == 3
    assert all(json.loads(b)["run_dir"].startswith("cells/") for b in before.values())
    as_older_sweeps_wrote(sweep_dir, "results/s")
    assert all(json.loads(p.read_bytes())["run_dir"].startswith("results/s/cells/")
               for p in before)
    (tmp_path / "elsewhere").mkdir()
    for cwd, out in ((tmp_path / "elsewhere", sweep_dir), (sweep_dir, "."),
                     (sweep_dir / "cells", ".."), (tmp_path, sweep_dir)):
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        assert main([*argv, "--sweep-out", str(out)]) == 0
        assert "3 cells, 3 already done, 0 to run" in capsys.readouterr().out
        assert {p: p.read_bytes() for p in sweep_dir.glob("cells/*/results.json")} == before
    shutil.copytree(sweep_dir, tmp_path / "results" / "t")  # (copied: A still there)
    as_older_sweeps_wrote(tmp_path / "results" / "t", "results/s")  # (naming A's cells)
    assert main([*argv, "--sweep-out", "results/t"]) == 0
    assert {p: p.read_bytes() for p in sweep_dir.glob("cells/*/results.json")} == before
    assert {p.relative_to(tmp_path / "results" / "t"): p.read_bytes()
            for p in (tmp_path / "results" / "t").glob("cells/*/results.json")} == {
        p.relative_to(sweep_dir): text for p, text in before.items()}


def test_paths_a_sweep_stored_on_windows_are_read_with_slashes(tmp_path):
    """A sweep run on Windows stored its cells' paths as ``str(Path)`` writes them there,
    ``cells\\CELL``, ``stacks\\STACK``: its folder copied to Linux or macOS (a committed
    sweep cloned), they named no folder there (the stack whose members' W&B runs are logged
    from it). They are read as the sweep's own and stored with ``/``, as every sweep now
    stores them, which Windows reads too; a path outside the sweep's folders stays as
    written (``\\`` may be part of a name there)."""
    cell = tmp_path / "sweep" / "cells" / "dense-s0.5-e1-seed0"
    cell.mkdir(parents=True)
    results = {"test_acc": 0.5, "run_dir": "cells\\dense-s0.5-e1-seed0",
               "wandb_dir": "elsewhere\\wandb", "stack": {"dir": "stacks\\dense-seed0"},
               "config": {"out": "cells\\dense-s0.5-e1-seed0", "resume": None}}
    posix = {**results, "run_dir": "cells/dense-s0.5-e1-seed0",
             "stack": {"dir": "stacks/dense-seed0"},
             "config": {"out": "cells/dense-s0.5-e1-seed0", "resume": None}}
    assert cells_module.relocate(cell, json.loads(json.dumps(results))) == posix
    assert json.loads((cell / "results.json").read_text()) == posix


def test_a_sweep_run_from_elsewhere_repoints_what_it_sets_aside(tmp_path, data_dir, capsys,
                                                                 monkeypatch):
    """A sweep written from one folder (results naming ``results/s/...``, relative, as older
    sweeps wrote them), grown by a sparsity, one cell damaged, and run again from another: the
    stack is set aside, and the cells it trained name its new folder, not the new stack's; the
    cell set aside as ``.stale-1`` names its new folder too (relative to the sweep folder, as
    a sweep stores them)."""
    monkeypatch.chdir(tmp_path)
    argv = [*TINY, "--sweep-variants", "subsetsum:identity", "--pairs", "1",
            "--data-dir", str(data_dir), "--no-baseline"]
    assert main([*argv, "--sweep-out", "results/s"]) == 0
    sweep_dir = tmp_path / "results" / "s"
    as_older_sweeps_wrote(sweep_dir, "results/s")
    stale = sweep_dir / "cells" / "subsetsum-identity-s0.9-e1-seed0"
    damaged = json.loads((stale / "results.json").read_text())
    (stale / "results.json").write_text(json.dumps({**damaged, "test_acc": 2.0}))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main([*argv, "--sweep-sparsities", "0.5,0.75,0.9", "--sweep-out", str(sweep_dir)]) == 0
    assert "has damaged results" in capsys.readouterr().out
    earlier, = (sweep_dir / "stacks").glob("subsetsum-identity-seed0.*-1")  # (stale: a member
    kept = json.loads((sweep_dir / "cells" / "subsetsum-identity-s0.5-e1-seed0" /  # runs again)
                       "results.json").read_text())
    assert kept["stack"]["dir"] == f"stacks/{earlier.name}"
    set_aside = json.loads((stale.with_name(stale.name + ".stale-1") / "results.json").read_text())
    assert set_aside["run_dir"] == f"cells/{stale.name}.stale-1"


def test_killed_sweep_resumes_to_the_same_rows(tmp_path, data_dir, capsys):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "base": {"arch": "fc2", "structure": "dense", "limit_train": 600, "val_size": 100,
                 "progress_bar": False, "trainer": {"limit_test_batches": 1}},
        "variants": ["dense"], "sparsities": [0.5], "epochs": [3], "baseline": False}))
    argv = ["--sweep", str(sweep_file), "--data-dir", str(data_dir)]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    assert main([*argv, "--sweep-out", str(whole)]) == 0
    proc = prefork.Popen([sys.executable, "train.py", *argv, "--sweep-out", str(killed)],
                         cwd=REPO, start_new_session=True)
    checkpoint = killed / "cells" / "dense-s0.5-e3-seed0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-cell: after epoch 1, before the results
    proc.wait()
    assert checkpoint.exists() and not (checkpoint.parent.parent / "results.json").exists()
    done = torch.load(checkpoint, weights_only=True)["epoch"] + 1  # epochs in the checkpoint
    capsys.readouterr()
    assert main([*argv, "--sweep-out", str(killed)]) == 0
    resumed = [line.split(" |")[0] for line in capsys.readouterr().out.splitlines()
               if line.startswith("epoch ")]
    assert resumed == [f"epoch {e}/3" for e in range(done + 1, 4)] and done >= 1  # continued
    assert rows(killed) == rows(whole)


def wandb_sweep_cells(argv: list[str], path: Path) -> tuple[dict, list[str]]:
    """The W&B sweep file that ``argv`` writes, and the cells of the sweep itself."""
    assert main([*argv, "--wandb-sweep", str(path)]) == 0
    args = build_parser().parse_args(argv)
    cells = [cell_name(label, v) for label, v in load_sweep(args, given_values(args)).cells()]
    return yaml.safe_load(path.read_text()), cells


def test_wandb_sweep_file_grid_is_the_sweeps_cells(tmp_path):
    sweep_file = REPO / "configs" / "sweeps" / "pensia_lenet5.yaml"
    spec, cells = wandb_sweep_cells(["--sweep", str(sweep_file)], tmp_path / "w.yaml")
    assert spec["program"] == str(REPO / "train.py") and spec["method"] == "grid"
    assert spec["project"] == "lotterynet" and "entity" not in spec  # the cells' project
    assert spec["metric"] == {"name": "test/acc", "goal": "maximize"}
    assert list(spec["parameters"]) == ["cell"]  # one parameter: nothing is crossed
    assert spec["parameters"]["cell"]["values"] == cells
    assert len(cells) == 215 and "trained-e100-seed0" in cells
    assert "--wandb" in spec["command"] and spec["command"][-1] == "${args}"


def test_wandb_sweep_yes_goes_into_its_agents_command(tmp_path):
    """An agent cannot answer: where the user gives ``--yes`` beside ``--wandb-sweep``, each
    agent's ``--cell`` run gets it (and sets aside its cell finished with another config);
    without it, agents are refused there."""
    source = ["--sweep", str(REPO / "configs" / "sweeps" / "cpu_fc2.yaml")]
    for yes in ([], ["--yes"]):
        spec, _ = wandb_sweep_cells([*source, *yes], tmp_path / f"w{len(yes)}.yaml")
        assert spec["command"].count("--yes") == len(yes)
        assert spec["command"][-1] == "${args}"


def test_wandb_sweep_never_replaces_a_users_sweep_file(tmp_path, capsys):
    """A file is replaced only if an earlier ``--wandb-sweep`` wrote it (its first line), not
    because it holds the keys of a sweep: the user's own sweep file, given as the target or
    named like the cells file beside it, stays byte for byte."""
    source = REPO / "configs" / "sweeps" / "cpu_fc2.yaml"
    for own, target in (("s.yaml", "s.yaml"), ("w.cells.yaml", "w.yaml")):
        folder = tmp_path / own.partition(".")[0]
        folder.mkdir()
        users = folder / own
        users.write_text("# my sweep\n" + source.read_text().replace("#", "##"))
        before = users.read_bytes()
        assert main(["--sweep", str(users), "--wandb-sweep", str(folder / target)]) == 2
        assert "is not a W&B sweep file written by train.py" in capsys.readouterr().err
        assert users.read_bytes() == before
    again = tmp_path / "again.yaml"
    for _ in range(2):  # its own files it rewrites
        assert main(["--sweep", str(source), "--wandb-sweep", str(again), "--sweep-out",
                     str(tmp_path / "out")]) == 0
    command = yaml.safe_load(again.read_text())["command"]
    assert command[command.index("--sweep-out") + 1] == str(tmp_path / "out")  # the agents'



@pytest.mark.parametrize("given", [["--data-dir", "data"], []])
def test_wandb_sweep_files_its_runs_where_the_cells_log_and_runs_anywhere(tmp_path, monkeypatch,
                                                                           given):
    """The spec named no project (``wandb sweep`` filed it under an automatic one, ignoring
    ``--wandb-project`` / ``--wandb-entity``: W&B moves a sweep's runs into the sweep's
    project), and its program and data folder were relative, so an agent started in another
    folder could not run a cell. The default data folder (no --data-dir: ./data here) was
    written as null, so an agent read ./data where it started: it is written absolute too. The
    cells' W&B group is written in the cells file: each agent took it from the path by which
    it reached the sweep's folder (another mount of it: another group)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOTTERYNET_DATA", raising=False)
    (tmp_path / "data").mkdir()
    source = REPO / "configs" / "sweeps" / "cpu_fc2.yaml"
    assert main(["--sweep", str(source), "--wandb-sweep", "w.yaml", "--wandb-project", "mine",
                 "--wandb-entity", "team", *given]) == 0
    spec = yaml.safe_load((tmp_path / "w.yaml").read_text())
    assert (spec["project"], spec["entity"]) == ("mine", "team")
    assert Path(spec["program"]).is_absolute() and Path(spec["program"]).is_file()
    cells = yaml.safe_load((tmp_path / "w.cells.yaml").read_text())
    assert cells["base"]["data_dir"] == str(tmp_path / "data")
    out = Path(spec["command"][spec["command"].index("--sweep-out") + 1])
    assert cells["base"]["wandb_group"] == f"{out.name}-{digest(str(out))}"


def test_the_files_a_sweep_writes_read_back_strings_that_look_like_numbers(tmp_path):
    """A cell's ``cell.yaml`` (``--config``, a ``--jobs-per-device`` job), a stack's
    ``stack.yaml`` (``--stack-file``) and a W&B sweep's cells file (``--sweep``, every agent)
    were written with ``yaml.safe_dump``: a W&B group or folder named ``1e3`` or ``5E-2`` was
    written bare and read back as the number 1000.0 or 0.05 (refused)."""
    names = {"wandb_group": "1e3", "data_dir": "5E-2"}
    config = make_config({"arch": "fc2", "out": str(tmp_path / "cells" / "a"), **names})
    cell = jobs_module.cell_job("a", config)
    assert yaml.load(Path(cell.argv[1]).read_text(), Loader=ConfigLoader) == config.to_dict()
    stack_file = write_stack_file([config], tmp_path / "stacks" / "s", [tmp_path / "cells" / "a"])
    member = read_stack_file(stack_file)[0][0]
    assert (member.wandb_group, member.data_dir) == ("1e3", str(Path("5E-2").resolve()))
    argv = ["--sweep", str(REPO / "configs" / "sweeps" / "cpu_fc2.yaml"), "--wandb-group", "1e3"]
    assert main([*argv, "--wandb-sweep", str(tmp_path / "w.yaml")]) == 0
    args = build_parser().parse_args(["--sweep", str(tmp_path / "w.cells.yaml")])
    assert load_sweep(args, given_values(args)).base["wandb_group"] == "1e3"


@pytest.mark.parametrize("holds", ["notes.txt", "results.json"])
def test_wandb_sweep_refuses_a_sweep_out_its_agents_would_refuse(tmp_path, capsys, holds):
    """``--wandb-sweep`` wrote its files for a ``--sweep-out`` holding other files or a run,
    which every agent then refused (exit 2)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / holds).write_text("{}")
    source = REPO / "configs" / "sweeps" / "cpu_fc2.yaml"
    assert main(["--sweep", str(source), "--wandb-sweep", str(tmp_path / "w.yaml"),
                 "--sweep-out", str(out)]) == 2
    assert "--sweep-out" in capsys.readouterr().err and not (tmp_path / "w.yaml").exists()


@pytest.mark.parametrize("flag, value", [("--wandb-project", "my/project"),
                                         ("--wandb-tags", "fc2," + "x" * 65)])
def test_wandb_sweep_refuses_names_its_agents_would_refuse(tmp_path, capsys, flag, value):
    """``--wandb-sweep`` wrote its files for a project or tag W&B does not take, which every
    agent's ``--wandb`` run then refused (exit 2), as ``--wandb`` refuses them up front."""
    source = REPO / "configs" / "sweeps" / "cpu_fc2.yaml"
    assert main(["--sweep", str(source), "--wandb-sweep", str(tmp_path / "w.yaml"), flag,
                 value]) == 2
    assert flag in capsys.readouterr().err and not (tmp_path / "w.yaml").exists()


def test_wandb_agents_write_where_the_sweep_run_here_writes(tmp_path, monkeypatch):
    """Without --sweep-out the agents wrote runs/sweep-<arch>-<name>.cells (the cells file's
    name): running the sweep here afterwards found none of their cells and trained them all."""
    monkeypatch.chdir(tmp_path)
    source = REPO / "configs" / "sweeps" / "cpu_fc2.yaml"
    assert main(["--sweep", str(source), "--wandb-sweep", "w.yaml"]) == 0
    command = yaml.safe_load((tmp_path / "w.yaml").read_text())["command"]
    assert command[command.index("--sweep-out") + 1] == str(tmp_path / "runs" /
                                                           "sweep-fc2-cpu_fc2")


def test_a_wandb_agent_runs_one_cell_of_the_sweep(tmp_path, data_dir):
    spec, cells = wandb_sweep_cells([*TINY, "--data-dir", str(data_dir)], tmp_path / "w.yaml")
    command = [a for a in spec["command"][3:-1] if a != "--wandb"]  # as the agent, minus W&B
    out = tmp_path / "sweep"
    assert main([*command, f"--cell={cells[1]}", "--sweep-out", str(out)]) == 0
    assert [p.name for p in (out / "cells").iterdir()] == [cells[1]]
    assert (out / "cells" / cells[1] / "results.json").is_file()


def test_a_wandb_sweeps_cell_names_find_their_cells_on_every_system(tmp_path, capsys,
                                                                    monkeypatch):
    """A W&B sweep's file named a variant's cells with what a name on Windows cannot hold
    (``data_dir: D:mnist``) as Linux names them, or, written on Windows, as Windows does: its
    agents on Windows refused ``--cell dense-data_dir=D:mnist-…`` (not a cell: there it is
    ``dense-data_dir=D-mnist-…``), and those elsewhere the dashed one. Its file names them as
    every system but Windows does, on Windows too, and each system's ``--cell`` takes that
    name for the cell of its folder there; a name of no cell is refused as before. (Its
    training: ``ran``, which says the folder it was given.)"""
    monkeypatch.chdir(tmp_path)
    ran = []
    monkeypatch.setattr(sweep_module, "run", lambda config, job_type=None: ran.append(
        Path(config.out).name) or {"test_acc": 0.5, "run_dir": config.out})
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(yaml.safe_dump({"variants": [
        {"structure": "dense", "data_dir": "D:mnist"}], "sparsities": [0.5], "epochs": [1],
        "baseline": False}))
    for platform, folder in (("win32", "dense-data_dir=D-mnist-s0.5-e1-seed0"),
                             ("linux", "dense-data_dir=D:mnist-s0.5-e1-seed0")):
        monkeypatch.setattr(sys, "platform", platform)
        spec, _ = wandb_sweep_cells(["--sweep", str(sweep_file), "--arch", "fc2"],
                                    tmp_path / f"{platform}.yaml")
        assert spec["parameters"]["cell"]["values"] == ["dense-data_dir=D:mnist-s0.5-e1-seed0"]
        command = [a for a in spec["command"][3:-1] if a != "--wandb"]  # as the agent's
        assert main([*command, "--cell=dense-data_dir=D:mnist-s0.5-e1-seed0"]) == 0
        assert ran.pop() == folder
        assert main([*command, "--cell=dense-data_dir=D:mnist-s0.5-e2-seed0"]) == 2
        assert capsys.readouterr().err.splitlines()[-1] == (
            f"train.py: error: --cell 'dense-data_dir=D:mnist-s0.5-e2-seed0' is not a cell of "
            f"this sweep; valid: {folder} (1 cells; see --wandb-sweep's file)")


#: (POOL's and ONE_CELL's cells are tested on 1,000 of the 10,000 test images: cells run
#: singly take Trainer options; a stack does not)
POOL = ["--arch", "fc2", "--structure", "dense", "--limit-train", "300", "--val-size", "100",
        "--sweep-variants", "dense", "--sweep-sparsities", "0.5,0.9", "--sweep-epochs", "1",
        "--no-baseline", "--no-stack", "--jobs-per-device", "2", "--trainer.limit_test_batches",
        "1"]


STACKS = ["--arch", "fc2", "--pairs", "1", "--limit-train", "300", "--val-size", "100",
          "--no-progress-bar", "--sweep-variants", "subsetsum:identity,wide",
          "--sweep-sparsities", "0.5,0.9", "--sweep-epochs", "1,2", "--no-baseline"]


def test_a_sweep_with_jobs_is_refused_on_windows_in_one_line(tmp_path, data_dir, capsys,
                                                             monkeypatch):
    """Windows has not the POSIX signals that hold a sweep's jobs back as they start and stop
    them (Popen refuses their ``preexec_fn`` there): a sweep with job slots is refused before
    it writes anything, in one line, not at its first job (ValueError: preexec_fn is not
    supported on Windows platforms)."""
    monkeypatch.setattr(sys, "platform", "win32")
    out = tmp_path / "sweep"
    assert main([*POOL, "--data-dir", str(data_dir), "--sweep-out", str(out)]) == 2
    assert capsys.readouterr().err == (
        "train.py: error: --jobs-per-device 2: a sweep runs its cells as jobs side by side on "
        "Linux and macOS only; on Windows run it with --jobs-per-device 1 on one device "
        "(CUDA_VISIBLE_DEVICES=0)\n")
    assert not out.exists()


@pytest.mark.parametrize("platform", ["win32", "linux"])
def test_a_sweeps_job_starts_on_windows_without_a_preexec_fn(tmp_path, monkeypatch, platform):
    """Windows' Popen refuses a ``preexec_fn`` (ValueError: preexec_fn is not supported on
    Windows platforms), which every job of a sweep was started with: a sweep's DDP cells, each
    a job of its own with --jobs-per-device 1 too, all failed there. A job starts there
    without one (what it does, die with the sweep and hold signals back, Windows has not: it
    did nothing there), elsewhere with it as before. (Its python: ``echo``, which says how it
    was started.)"""
    popen, hooks = subprocess.Popen, []

    def as_on(args, **kwargs):  # (subprocess's own rule, on Windows)
        hooks.append(kwargs.get("preexec_fn"))
        if platform == "win32" and hooks[-1] is not None:
            raise ValueError("preexec_fn is not supported on Windows platforms")
        return popen(args, **kwargs)

    monkeypatch.setattr(sys, "executable", shutil.which("echo"))
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(subprocess, "Popen", as_on)
    job = jobs_module.Job("cell c-seed0", ["--config", "c.yaml"], tmp_path / "train.log", ["c"])
    with open(job.log, "a") as log:
        assert jobs_module.start_job(job, None, 1, log).wait(timeout=10) == 0
    assert job.log.read_text() == f"{REPO / 'train.py'} --config c.yaml\n"
    assert [hook and hook.func for hook in hooks] == [
        None if platform == "win32" else jobs_module.starting_a_job]


def test_subprocess_pool_splits_a_stack_over_free_slots(tmp_path, data_dir, capsys, monkeypatch):
    """With job slots every stack runs in its own ``train.py --stack-file``; with more slots
    than stacks (2 for 1 variant) it is cut into parts of equal epochs (one budget-1 and one
    budget-2 member each). Every member ends exactly as in the in-process stack of four: same
    masks, same accuracy."""
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))  # as this process
    one_variant = [*STACKS, "--sweep-variants", "subsetsum:identity"]  # the last flag wins
    pooled, in_process = tmp_path / "pooled", tmp_path / "in-process"
    assert main([*one_variant, "--data-dir", str(data_dir), "--sweep-out", str(pooled),
                 "--jobs-per-device", "2"]) == 0
    assert capsys.readouterr().out.count("(subprocess, output in") == 2
    for part in (1, 2):
        stack = pooled / "stacks" / f"subsetsum-identity-seed0-part{part}of2"
        log = (stack / "train.log").read_text()
        assert "stack.yaml: 2 of 2 members finished" in log, log
        members = yaml.safe_load((stack / "stack.yaml").read_text())["members"]
        assert sorted(m["epochs"] for m in members) == [1, 2]
    assert main([*one_variant, "--data-dir", str(data_dir), "--sweep-out", str(in_process)]) == 0
    assert "(subprocess, output in" not in capsys.readouterr().out
    assert os.listdir(in_process / "stacks") == ["subsetsum-identity-seed0"]
    cells = sorted(os.listdir(in_process / "cells"))
    assert cells == sorted(os.listdir(pooled / "cells")) and len(cells) == 4
    for cell in cells:
        ours, theirs = (json.loads((d / "cells" / cell / "results.json").read_text())
                        for d in (pooled, in_process))
        assert (ours["stack"]["members"], theirs["stack"]["members"]) == (2, 4)
        assert ours["mask_digests"] == theirs["mask_digests"]
        assert ours["test_acc"] == theirs["test_acc"]
    assert rows(pooled) == rows(in_process)


def test_jobs_share_the_cpu_threads_unless_told(monkeypatch):
    """CPU jobs split this process's threads among the jobs running at once; a GPU job gets
    its GPU; an OMP_NUM_THREADS the user set is kept."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert jobs_module.job_env(None, 4)["OMP_NUM_THREADS"] == "4"
    assert jobs_module.job_env(None, 32)["OMP_NUM_THREADS"] == "1"
    assert jobs_module.job_env(3, 2)["CUDA_VISIBLE_DEVICES"] == "3"
    assert "OMP_NUM_THREADS" not in jobs_module.job_env(3, 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert jobs_module.job_env(None, 4)["OMP_NUM_THREADS"] == "7"


def test_jobs_beyond_the_cpu_cores_are_capped_and_said_so(tmp_path, data_dir, capsys,
                                                          monkeypatch):
    """--jobs-per-device 99 on 2 cores without a GPU runs 2 jobs at once, one per core, and
    says so in one line (it started 99 train.py at once, each stack cut into up to 99 parts,
    unsaid); 2 jobs on 2 cores are run as given, without a word."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ran = []
    monkeypatch.setattr(sweep_module, "run_locked", lambda *args: ran.append(args[3]) or 0)
    argv = [*ONE_CELL, "--sweep-out", str(tmp_path / "s"), "--data-dir", str(data_dir)]
    for jobs in (99, 2):
        assert main([*argv, "--jobs-per-device", str(jobs)]) == 0
        said = [line for line in capsys.readouterr().out.splitlines() if "jobs-per-device" in line]
        assert said == ([] if jobs == 2 else [
            "--jobs-per-device 99: this machine has no GPU and 2 CPU cores, so the sweep runs 2 "
            "jobs at once, one per core"])
    assert ran == [2, 2]


ONE_CELL = ["--arch", "fc2", "--structure", "dense", "--limit-train", "300", "--val-size", "100",
            "--no-progress-bar", "--sweep-variants", "dense", "--sweep-sparsities", "0.5",
            "--sweep-epochs", "1", "--no-baseline", "--trainer.limit_test_batches", "1"]


def test_second_sweep_in_the_same_directory_is_refused(tmp_path, data_dir, capsys):
    import fcntl

    out = tmp_path / "sweep"
    out.mkdir()
    with open(out / ".sweep.lock", "a+") as held:  # another sweep is running here
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main([*ONE_CELL, "--data-dir", str(data_dir), "--sweep-out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "in use by another sweep" in err and len(err.strip().splitlines()) == 1
    assert not (out / "cells").exists()


def test_a_stack_file_run_by_hand_is_refused_while_its_sweep_runs(tmp_path, data_dir, capsys,
                                                                  monkeypatch):
    """A sweep's stack file run by hand while the sweep runs (which runs that stack, or will:
    by hand it trained a queued stack, and the sweep's own job then failed on it) is refused in
    one line, nothing written; the sweep's own jobs run it, and so does a hand run once the
    sweep has ended, holding the sweep off meanwhile."""
    import fcntl

    out = tmp_path / "sweep"
    cells = [out / "cells" / name for name in ("a", "b")]
    configs = [make_config({"arch": "fc2", "structure": "dense", "sparsity": s, "epochs": 1,
                            "limit_train": 256, "val_size": 64, "progress_bar": False,
                            "data_dir": str(data_dir), "out": str(c)})
               for s, c in zip((0.5, 0.9), cells)]
    path = write_stack_file(configs, out / "stacks" / "dense-seed0", cells)
    monkeypatch.delenv("LOTTERYNET_SWEEP_JOB", raising=False)
    with open(out / ".sweep.lock", "a+") as held:  # the sweep is running
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["--stack-file", str(path)]) == 2
        err = capsys.readouterr().err
        assert "is running and runs it" in err and len(err.strip().splitlines()) == 1
        assert not any(c.exists() for c in cells)
        with monkeypatch.context() as job:  # one of its jobs
            job.setenv(jobs_module.SWEEP_JOB, jobs_module.job_env(None, 1)[
                jobs_module.SWEEP_JOB])
            assert main(["--stack-file", str(path)]) == 0
    assert main(["--stack-file", str(path)]) == 0  # by hand, the sweep over
    assert "2 of 2 members finished" in capsys.readouterr().out
    with sweep_module.outside_a_running_sweep(out, "--stack-file"), pytest.raises(
            ConfigError, match="or a --stack-file or --cell run"), sweep_module.sweep_lock(out):
        pass


def test_a_cell_run_by_hand_is_refused_while_its_sweep_runs(tmp_path, data_dir, capsys,
                                                            monkeypatch):
    """``--cell`` of a sweep that is running (which runs that cell, or will: a queued
    stack's member trained by hand was trained again, or failed the stack) is refused in one
    line, nothing written; once the sweep has ended it runs, holding the sweep off meanwhile,
    and two such runs (W&B agents) share the sweep's lock."""
    import fcntl

    out = tmp_path / "sweep"
    argv = [*ONE_CELL, "--data-dir", str(data_dir), "--sweep-out", str(out),
            "--cell", "dense-s0.5-e1-seed0"]
    out.mkdir()
    monkeypatch.delenv(jobs_module.SWEEP_JOB, raising=False)
    with open(out / ".sweep.lock", "a+") as held:  # the sweep is running
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "--cell 'dense-s0.5-e1-seed0': its sweep" in err and "is running" in err
        assert len(err.strip().splitlines()) == 1 and not (out / "cells").exists()
    assert main(argv) == 0 and (out / "cells" / "dense-s0.5-e1-seed0" / "results.json").is_file()
    fresh = tmp_path / "agents"  # (W&B agents' cells, before any sweep has run there)
    for folder in (out, fresh):
        with sweep_module.outside_a_running_sweep(folder, "--cell a", is_a_sweep=True), \
                sweep_module.outside_a_running_sweep(folder, "--cell b", is_a_sweep=True), \
                pytest.raises(ConfigError, match="or a --stack-file or --cell run"), \
                sweep_module.sweep_lock(folder):
            pass


def test_cell_with_another_config_is_run_again(tmp_path, data_dir, capsys):
    out = tmp_path / "sweep"
    argv = [*ONE_CELL, "--data-dir", str(data_dir), "--sweep-out", str(out)]
    assert main([*argv, "--lr", "0.1"]) == 0
    capsys.readouterr()
    assert main([*argv, "--lr", "0.05", "--yes"]) == 0
    assert f"sweep {out}: 1 cell, 0 already done, 1 to run" in capsys.readouterr().out
    cell, kept = sorted((out / "cells").iterdir())  # the lr-0.1 cell kept beside the rerun
    assert kept.name == f"{cell.name}.stale-1"
    assert json.loads((cell / "results.json").read_text())["config"]["lr"] == 0.05
    assert json.loads((kept / "results.json").read_text())["config"]["lr"] == 0.1
    assert main([*argv, "--lr", "0.05"]) == 0
    assert f"sweep {out}: 1 cell, 1 already done, 0 to run" in capsys.readouterr().out


def assert_refused_to_set_aside(argv: list[str], out: Path, changed: str, capsys) -> None:
    """``argv`` is refused in one line, its sweep folder ``out`` left byte for byte, for its
    one finished cell of another config (``changed``: what differs)."""
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(argv) == 2
    said = capsys.readouterr()
    assert said.err.strip() == (
        f"train.py: error: sweep folder {str(out)!r} holds 1 finished cell run with another "
        f"config than this sweep's ({changed}); pass --yes to set them aside and train them "
        f"anew, or give another --sweep-out") and said.out == ""
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_sweep_that_would_set_aside_finished_cells_asks_for_yes(tmp_path, data_dir, capsys):
    """A sweep run on a folder whose finished cells were run with another config (a mistyped
    --sweep-out, a flag given by mistake) is refused before it writes anything, in one line
    naming how many and what changed: it set them aside at once, sweep.json replaced, however
    soon it was stopped. With --yes it sets them aside and trains them anew."""
    out = tmp_path / "sweep"
    argv = [*ONE_CELL, "--data-dir", str(data_dir), "--sweep-out", str(out)]
    assert main([*argv, "--limit-train", "200"]) == 0
    assert_refused_to_set_aside(argv, out, "limit_train 200 -> 300", capsys)
    assert main([*argv, "--yes"]) == 0
    assert (out / "cells" / "dense-s0.5-e1-seed0.stale-1" / "results.json").is_file()


def test_a_cell_run_that_would_set_aside_its_finished_cell_asks_for_yes(tmp_path, monkeypatch,
                                                                        capsys):
    """A ``--cell`` run (a W&B agent's) whose cell had finished with another config set it
    aside and trained it anew without asking, where the whole sweep is refused (above). It is
    refused by the same check, of its one cell, before it writes anything; with --yes it sets
    the cell aside and trains it anew."""
    def ran(config, job_type=None):
        results = {"finished": True, "config": config.to_dict(), "test_acc": 0.5,
                   "run_dir": config.out}
        Path(config.out).mkdir(parents=True, exist_ok=True)
        (Path(config.out) / "results.json").write_text(json.dumps(results))
        return results

    monkeypatch.setattr(sweep_module, "run", ran)
    out = tmp_path / "sweep"
    argv = [*TINY, "--sweep-out", str(out), "--cell", "trained-e1-seed0"]
    assert main([*argv, "--lr", "0.5"]) == 0
    assert_refused_to_set_aside(argv, out, "lr 0.5 -> 0.1", capsys)
    assert main([*argv, "--yes"]) == 0
    cell = out / "cells" / "trained-e1-seed0"
    assert json.loads((cell / "results.json").read_text())["config"]["lr"] is None  # (fc2's)
    kept = cell.with_name(f"{cell.name}.stale-1") / "results.json"
    assert json.loads(kept.read_text())["config"]["lr"] == 0.5
    other = "subsetsum-identity-s0.5-e1-seed0"  # (its own cell alone counts)
    assert main([*TINY, "--sweep-out", str(out), "--cell", other, "--lr", "0.5"]) == 0


def test_the_refusal_to_set_aside_finished_cells_counts_them_and_names_what_changed(tmp_path):
    """The refusal counts the finished cells of another config alone (not a damaged one's,
    nor one of the sweep's config) and names their first differences, each once."""
    sweep = Sweep({"arch": "fc2", "structure": "dense"}, [{}], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6,
                                                                0.7], [1], baseline=False)
    for (label, values), lr, acc in zip(sweep.cells(), (0.5, 0.5, 0.25, 0.2, 0.15, 0.05, 0.1),
                                        (0.9, 0.9, 0.9, 0.9, 0.9, 2.0, 0.9)):
        cell = tmp_path / "cells" / cell_name(label, values)
        cell.mkdir(parents=True)
        config = make_config({**values, "lr": lr, "out": str(cell)}).to_dict()
        (cell / "results.json").write_text(json.dumps({"config": config, "test_acc": acc}))
    with pytest.raises(ConfigError) as err:
        checks_module.check_finished_kept(sweep, tmp_path, go_on=False)
    assert "holds 5 finished cells run with another config than this sweep's (lr 0.5 -> 0.1; " \
        "lr 0.25 -> 0.1; lr 0.2 -> 0.1; …); pass --yes" in str(err.value)
    checks_module.check_finished_kept(sweep, tmp_path, go_on=True)


def test_stopping_or_killing_the_sweep_stops_its_cells(tmp_path, data_dir):
    """Ctrl-C to the sweep alone (SIGINT; a terminal sends it to the children too): the
    running cells stop, the queued one never starts, one line and exit 130. Before, the queued
    cells still ran to their end, then a traceback. Killed (SIGKILL): its cells die with it."""
    out = tmp_path / "sweep"
    argv = [sys.executable, "train.py", "--arch", "fc2", "--structure", "dense",
            "--limit-train", "300", "--val-size", "100", "--sweep-variants", "dense",
            "--sweep-sparsities", "0.5,0.9,0.95", "--sweep-epochs", "500", "--no-baseline",
            "--no-stack", "--jobs-per-device", "2", "--data-dir", str(data_dir),
            "--sweep-out", str(out)]
    cells, err_file = str(out / "cells"), tmp_path / "stderr"

    def start_and_wait_for_two_cells():
        proc = prefork.Popen(argv, cwd=REPO, stderr=err_file)  # (its jobs are started)
        deadline = time.time() + 120
        while len(processes_mentioning(cells)) < 2 and time.time() < deadline:
            time.sleep(0.2)
        assert len(processes_mentioning(cells)) == 2  # two cells run, the third waits
        return proc

    try:
        proc = start_and_wait_for_two_cells()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        err = err_file.read_text()
        assert len(err.splitlines()) == 1 and "stopped by Ctrl-C" in err, err
        assert processes_mentioning(cells) == []
        assert len(list(Path(cells).glob("*/train.log"))) == 2  # the third never started
        proc = start_and_wait_for_two_cells()
        proc.kill()  # the sweep's main process only
        proc.wait()
        deadline = time.time() + 30
        while processes_mentioning(cells) and time.time() < deadline:
            time.sleep(0.2)
        assert processes_mentioning(cells) == []
    finally:
        proc.kill()
        for pid in processes_mentioning(cells):  # only if the test failed
            os.kill(pid, signal.SIGKILL)


def fail_subprocesses(tmp_path, monkeypatch, shell: str) -> None:
    """The sweep's subprocesses start through an interpreter that first runs ``shell`` (a
    ``sh`` script that may exit to fail the job), then the real Python."""
    fake_python = tmp_path / "python"
    fake_python.write_text(f"#!/bin/sh\n{shell}exec {sys.executable} \"$@\"\n")
    fake_python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake_python))


def test_pool_runs_cells_and_a_failing_one_is_one_line(tmp_path, data_dir, capsys, monkeypatch):
    """With job slots each cell runs in its own ``train.py``. A cell whose process dies (here:
    an interpreter that fails for sparsity 0.9) is named in one line with its log; the other
    cell finishes, reports its accuracy and the sweep exits 1, no traceback."""
    fail_subprocesses(tmp_path, monkeypatch,  # argv: train.py --config CELL/cell.yaml
                      "if grep -q '^sparsity: 0.9$' \"$3\"; then "
                      "echo 'RuntimeError: out of memory' >&2; exit 5; fi\n")
    out = tmp_path / "pool"
    argv = [*POOL, "--data-dir", str(data_dir), "--sweep-out", str(out)]
    assert main(argv) == 1
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    failed = out / "cells" / "dense-s0.9-e1-seed0"
    assert "dense-s0.9-e1-seed0 failed (exit 5)" in line and str(failed / "train.log") in line
    assert "out of memory" in (failed / "train.log").read_text()
    assert "Traceback" not in captured.err + captured.out and "sweep incomplete" in captured.out
    assert re.search(r"\[\d/2\] dense-s0\.5-e1-seed0: test \d+\.\d\d%", captured.out)
    for cell in ("dense-s0.5-e1-seed0", "dense-s0.9-e1-seed0"):  # (as a stack's job is said)
        assert f"cell {cell} (subprocess, output in {out / 'cells' / cell / 'train.log'})" in \
            captured.out
    finished = out / "cells" / "dense-s0.5-e1-seed0"
    assert (finished / "results.json").is_file() and (finished / "cell.yaml").is_file()
    assert [(r["sparsity"], r["seeds"]) for r in rows(out)] == [("0.5", "1"), ("0.9", "0")]


def test_a_failing_stack_subprocess_is_one_line_and_the_other_stack_finishes(
        tmp_path, data_dir, capsys, monkeypatch):
    """A stack whose ``train.py --stack-file`` dies (killed, as by the out-of-memory killer: it
    read "failed (exit -9)") is named in one line with its log and how it ended, its members'
    points are in the table without numbers, their cells missing (each has its progress line:
    not finished), the other stack's members with theirs; exit 1. (How other ends are said:
    test_a_jobs_end_is_said_by_its_exit_code.)"""
    said = "was killed by SIGKILL (out of memory?)"
    fail_subprocesses(tmp_path, monkeypatch,  # argv: train.py --stack-file STACK.yaml
                      "case \"$3\" in *wide-seed0*) kill -9 $$;; esac\n")
    out = tmp_path / "pool"
    assert main([*STACKS, "--data-dir", str(data_dir), "--sweep-out", str(out),
                 "--jobs-per-device", "2"]) == 1
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    log = out / "stacks" / "wide-seed0" / "train.log"
    assert f"stack wide-seed0 {said}" in line and str(log) in line
    # one failure, the stack's four cells (two sparsities, two budgets) without results
    assert "sweep incomplete: 4 of 8 cells without results (1 failure)" in captured.out
    assert [(r["variant"], r["seeds"]) for r in rows(out)] == [("subsetsum/identity", "1")] * 2 \
        + [("wide", "0")] * 2
    # every cell has its progress line, the failed stack's too (they had none: [4/8] last)
    assert "[8/8] " in captured.out and captured.out.count(": not finished |") == 4


def test_a_jobs_end_is_said_by_its_exit_code(tmp_path):
    """A job's ``train.py`` that stopped on SIGTERM or Ctrl-C exits 128 + the signal after its
    line (a stack does wherever SIGTERM finds it; it was killed by it outside its fit): the
    sweep says it was stopped, not that it failed (exit 143). A job killed by SIGKILL may have
    run out of memory; one that exited with another code failed, with the one-line error its
    log ends in, if any: a log that ends in "Killed" (a shell's word) is no kill."""
    assert jobs_module.how_it_ended(143) == "was stopped by SIGTERM (exit 143)"
    assert jobs_module.how_it_ended(130) == "was stopped by SIGINT (exit 130)"
    assert jobs_module.how_it_ended(-15) == "was killed by SIGTERM"
    assert jobs_module.how_it_ended(-9) == "was killed by SIGKILL (out of memory?)"
    assert jobs_module.how_it_ended(3) == "failed (exit 3)"
    log = tmp_path / "train.log"
    job = jobs_module.Job("stack wide-seed0", [], log, ["wide-s0.5-e1-seed0"])
    log.write_text("epoch 1\nKilled\n")
    assert jobs_module.how_it_ended(5, job) == "failed (exit 5)"
    log.write_text("epoch 1\ntrain.py: error: stack wide-seed0: out of memory on cpu\n")
    assert jobs_module.how_it_ended(4, job) == "failed (exit 4): out of memory on cpu"


def test_a_job_stopped_by_sigterm_as_it_started_says_so_and_how_it_goes_on(
        tmp_path, data_dir, capsys, monkeypatch):
    """A job's ``train.py`` that got SIGTERM as it started (python starting, train.py's imports,
    before its handler) died by it, its log empty: the sweep said only that the cell 'was
    killed by SIGTERM'. The job holds SIGTERM back until train.py's handler, which stops it in
    one line (exit 143): the sweep says so and how it goes on when the sweep runs again (it
    starts over: it had no checkpoint), which it does; the sweep ends as with any failed job:
    exit 1, to re-run the same command."""
    fail_subprocesses(tmp_path, monkeypatch, "kill -TERM $$\n")
    out = tmp_path / "pool"
    argv = [*POOL, "--trainer.limit_test_batches", "1", "--data-dir", str(data_dir),
            "--sweep-out", str(out)]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"train.py: error: cell dense-s{s}-e1-seed0 was stopped by SIGTERM (exit 143); when "
        f"the sweep runs again, it starts over (it wrote no checkpoint); its output: "
        f"{out / 'cells' / f'dense-s{s}-e1-seed0'}/train.log" for s in ("0.5", "0.9")]
    assert "sweep incomplete: 2 of 2 cells without results (2 failures)" in captured.out and \
        "(re-run the same command to retry)" in captured.out
    monkeypatch.undo()  # (run again in the sweep's process: the grid is the same, the cells
    # its jobs left are what it starts over; two jobs' imports of torch took seconds)
    assert main([*argv, "--jobs-per-device", "1"]) == 0 and \
        "0 already done, 2 to run" in capsys.readouterr().out


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_job_sent_ctrl_c_or_sigterm_as_it_started_stops_in_one_line(tmp_path, data_dir, sent):
    """A Ctrl-C to a job's ``train.py`` alone (``kill -INT``) as it started, before its
    handler, was a traceback: Python's own handler raised it in Python's start (its site
    packages: exit 1) or in train.py's imports, and the sweep said the job failed; a SIGTERM
    (the sweep stopping its jobs as one started) killed it without a word (exit -15). The job
    holds both back until train.py's handlers take them: it stops there in one line saying
    that it wrote nothing (exit 130 / 143), and the sweep that it starts over."""
    cell = tmp_path / "cells" / "c-seed0"
    cell.mkdir(parents=True)
    job = jobs_module.Job("cell c-seed0", ["--arch", "fc2", "--limit-train", "64", "--epochs",
                                            "1", "--data-dir", str(data_dir), "--out", str(cell)],
                           cell / "train.log", ["c-seed0"])
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # (the job's: default)
    try:
        with open(job.log, "a") as log:
            proc = jobs_module.start_job(job, None, 1, log)
    finally:
        signal.signal(signal.SIGINT, previous)
    proc.send_signal(sent)  # (its python has not started yet)
    code, said = 128 + sent, "SIGTERM" if sent == signal.SIGTERM else "Ctrl-C (SIGINT)"
    assert proc.wait(timeout=120) == code
    assert job.log.read_text().splitlines() == [
        f"train.py: error: stopped by {said}; it had not started (it was reading its "
        "options and files and importing what it runs): nothing was written; run the same "
        "command again"]
    assert [p.name for p in cell.iterdir()] == ["train.log"]
    assert jobs_module.how_it_ended(proc.returncode, job) == (
        f"was stopped by {sent.name} (exit {code}); when the sweep runs again, it starts over "
        "(it wrote no checkpoint)")


def test_a_job_stopped_by_sigterm_as_it_imported_says_how_it_goes_on(
        tmp_path, data_dir, capsys, monkeypatch):
    """A job's ``train.py`` stopped by SIGTERM as it imported torch and Lightning (its handler
    on, before its run's) says only 'stopped by SIGTERM' and exits 143: the sweep said the job
    'was stopped by SIGTERM (exit 143)', neither line how it goes on. The sweep's says it, as it
    does of the jobs it stopped itself: here it resumes from its checkpoint."""
    stopped = tmp_path / "pool" / "cells" / "dense-s0.9-e1-seed0"
    atomic_torch_save({"epoch": 0}, stopped / "checkpoints" / "last.ckpt")  # (a stopped run's)
    fail_subprocesses(tmp_path, monkeypatch,
                      "echo 'train.py: error: stopped by SIGTERM' >&2; exit 143\n")
    assert main([*POOL, "--data-dir", str(data_dir), "--sweep-out", str(tmp_path / "pool")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert f"train.py: error: cell dense-s0.9-e1-seed0 was stopped by SIGTERM (exit 143); when " \
        f"the sweep runs again, it resumes from its checkpoint (written at the end of epoch " \
        f"1); its output: {stopped / 'train.log'}" in lines


def test_a_job_that_fails_without_a_word_is_not_given_its_earlier_runs_line(tmp_path):
    """A resumed job's log holds its earlier run's output: a job that failed without writing a
    line of its own (a traceback cut short, a kill) was said to have failed with the earlier
    run's one-line error; only what this run wrote counts."""
    log = tmp_path / "train.log"
    log.write_text("train.py: error: cell c-seed0: memory ran out in training epoch 1\n")
    job = jobs_module.Job("cell c-seed0", [], log, ["c-seed0"], log_start=log.stat().st_size)
    assert jobs_module.reported(job) == ""
    with open(log, "a") as more:
        more.write("train.py: error: cell c-seed0: memory ran out in training epoch 3\n")
    assert jobs_module.reported(job) == ": memory ran out in training epoch 3"


@pytest.mark.parametrize("death, said, ended", [
    ("echo 'Killed' >&2; exit 5", "failed (exit 5); its output: ", "not finished"),
    # a job's own one-line error (memory ran out), said beside the exit code (it said only
    # "failed (exit 1)"), told by its exit code (OutOfMemory's): its cells' progress lines say
    # so, as those of a stack run in the sweep's process (they said "not finished")
    ("echo \"train.py: error: stack $(basename $(dirname $3)): memory ran out in training epoch "
     "1\" >&2; exit 4", "failed (exit 4): memory ran out in training epoch 1; its output: ",
     "out of memory"),
    # a divergence, told by its exit code (TrainingDiverged's): its cells' progress lines say
    # so (they said "not finished")
    ("echo \"train.py: error: stack $(basename $(dirname $3)): a diverged in epoch 1: x\" >&2; "
     "exit 3", "failed (exit 3): a diverged in epoch 1: x; its output: ", "diverged"),
    # a failure whose line says "diverged in epoch" is not a divergence (it was: the sweep
    # searched the line)
    ("echo \"train.py: error: stack $(basename $(dirname $3)): m diverged in epoch 1 before; "
     "disk full\" >&2; exit 1", "failed (exit 1): m diverged in epoch 1 before; disk full; "
     "its output: ", "not finished")])
def test_a_sweep_whose_every_stack_fails_names_them_and_writes_no_table(
        tmp_path, data_dir, capsys, monkeypatch, death, said, ended):
    """With no cell finished there is nothing to tabulate: each failure is one line, exit 1
    (an empty table was an IndexError traceback), with what the job said of it, if it did."""
    fail_subprocesses(tmp_path, monkeypatch, f"{death}\n")
    out = tmp_path / "pool"
    assert main([*STACKS, "--data-dir", str(data_dir), "--sweep-out", str(out),
                 "--jobs-per-device", "2"]) == 1
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 2 and "Traceback" not in captured.err
    assert captured.err.count(said) == 2 and "no cell finished" in captured.out
    assert captured.out.count(f": {ended} |") == 8
    assert ("a cell that diverged diverges again" in captured.out) == (ended == "diverged")
    assert not (out / "sweep.csv").exists()


def test_a_changed_sweep_whose_every_cell_fails_leaves_no_earlier_table(
        tmp_path, data_dir, capsys, monkeypatch):
    """A finished sweep run again with another lr sets its cells aside; when every new cell
    then fails there is no table, as it says: the earlier run's table, figure included, is
    not left standing for cells that are now in CELL.stale-1 (the cells themselves are)."""
    out = tmp_path / "pool"
    argv = [*POOL, "--data-dir", str(data_dir), "--sweep-out", str(out)]
    # (the first run in the sweep's process: two jobs' imports of torch took seconds)
    assert main([*argv, "--jobs-per-device", "1"]) == 0 and rows(out)
    fail_subprocesses(tmp_path, monkeypatch, "echo 'Killed' >&2; exit 5\n")
    assert main([*argv, "--lr", "0.05", "--yes"]) == 1
    assert "no cell finished, so there is no table" in capsys.readouterr().out
    assert [p.name for p in out.iterdir() if p.suffix in (".csv", ".md", ".png", ".pdf")] == []
    assert all((out / "cells" / f"dense-s{s}-e1-seed0.stale-1" / "results.json").is_file()
               for s in (0.5, 0.9))


def cpu_epoch_seconds(monkeypatch, single: dict, stacked: dict, start: float = 0.0,
                      imports: float = 0.0, eval_share: float = 0.0,
                      fixed_share: float = 1.0) -> None:
    """The CPU estimate's figures set to these (by default its training epochs alone, every
    model's at its architecture's epoch time)."""
    for name, value in (("CPU_EPOCH_SECONDS", single), ("CPU_STACKED_EPOCH_SECONDS", stacked),
                        ("CPU_START_SECONDS", start), ("CPU_IMPORT_SECONDS", imports),
                        ("CPU_EVAL_SHARE", eval_share), ("CPU_FIXED_SHARE", fixed_share)):
        monkeypatch.setattr(cost_module, name, value)


def test_cpu_estimate_counts_stacked_members_at_the_stacked_epoch_time(tmp_path, monkeypatch):
    """The paper-sized LeNet5 CPU sweep: 14 sparsities x 3 variants x budgets 10/20/30 stack
    (2,520 member-epochs), the trained baseline runs singly (10 + 20 + 30 epochs)."""
    cpu_epoch_seconds(monkeypatch, {"lenet5": 60.0}, {"lenet5": 10.0})
    args = build_parser().parse_args(["--sweep", str(REPO / "configs/sweeps/cpu_lenet5.yaml")])
    sweep = load_sweep(args, Overrides())
    stacked, what = cost_module.cpu_estimate(sweep, tmp_path, stack=True)
    full = 60 / 55  # (its epochs hold all 60,000 images; the epoch times are of 55,000)
    assert stacked * 3600 == pytest.approx((2520 * 10 + 60 * 60) * full)
    assert "epochs of 60,000 training and 0 validation images: 2,520 stacked at ~11 s, 60 " \
           "single at ~65 s" in what
    unstacked, _ = cost_module.cpu_estimate(sweep, tmp_path, stack=False)
    assert unstacked * 3600 == pytest.approx(2580 * 60 * full)
    # DDP ranks on the CPU share its cores: two take as long as one (each half the examples)
    ddp = build_parser().parse_args(["--sweep", str(REPO / "configs/sweeps/cpu_lenet5.yaml"),
                                     "--devices", "2", "--accelerator", "cpu"])
    ranks, _ = cost_module.cpu_estimate(load_sweep(ddp, given_values(ddp)), tmp_path / "ddp",
                                         stack=False)
    assert ranks == pytest.approx(unstacked)
    # DDP cells run one at a time whatever --jobs-per-device says (the estimate halved, "2 jobs
    # at once")
    slots, what = cost_module.cpu_estimate(load_sweep(ddp, given_values(ddp)), tmp_path / "ddp",
                                           stack=False, jobs=2)
    assert slots == pytest.approx(unstacked) and "jobs at once" not in what
    # a finished cell costs nothing (one finished member leaves 13 of its stack); a cell
    # finished with another config than the sweep's now is run again, so it counts
    label, values = next((lab, v) for lab, v in sweep.cells() if lab != "trained")
    done = tmp_path / "cells" / cell_name(label, values)
    done.mkdir(parents=True)
    for lr, saved in ((values["lr"] / 2, 0), (values["lr"], values["epochs"] * 10)):
        config = make_config({**values, "lr": lr}).to_dict()
        (done / "results.json").write_text(json.dumps({"config": config, "test_acc": 0.5}))
        left, _ = cost_module.cpu_estimate(sweep, tmp_path, stack=True)
        assert left * 3600 == pytest.approx(stacked * 3600 - saved * full)
    # a stack killed after its first epoch, that member finished meanwhile outside it,
    # resumes with every member it recorded, the finished one among them (it trains again):
    # each member's epochs left, not its budget; a diverged member trains no more. The
    # estimate reads each checkpoint once, in plan_stacks (it read them twice)
    group = {cell_name(lab, v): make_config(v).to_dict() for lab, v in sweep.cells()
             if lab == label and v["seed"] == values["seed"]}
    diverged = next(name for name in group if name != done.name)
    read, lost = [], frozenset()

    def stack_record(stack_dir: Path) -> StackRecord | None:
        read.append(stack_dir)
        return StackRecord(group, 1, lost) if stack_dir.name.startswith(
            label.replace("/", "-")) else None

    monkeypatch.setattr(plan_module, "stack_record", stack_record)
    for lost in (frozenset(), frozenset({diverged})):
        read.clear()
        resumed, _ = cost_module.cpu_estimate(sweep, tmp_path, stack=True)
        unrun = len(group) + sum(group[name]["epochs"] - 1 for name in lost)
        assert resumed * 3600 == pytest.approx(stacked * 3600 - unrun * 10 * full)
        assert len(read) == len(set(read)) == 3  # (the three variants' stacks)
    # two jobs at once, longest first onto the worker free first: the three variants' stacks
    # (840 member-epochs each, one less per member of the resumed one but the diverged
    # member's all), then the baseline's three runs (30, 20, 10 epochs) onto the worker with
    # one stack: the other ends last, with two stacks
    parallel, what = cost_module.cpu_estimate(sweep, tmp_path, stack=True, jobs=2)
    assert parallel * 3600 == pytest.approx((840 * 10 * 2 - unrun * 10) * full)
    assert "2 jobs at once" in what
    # jobs beyond the cores share them: 64 jobs on 2 cores take no less than 2 jobs (they
    # made an 88-hour sweep look like 1.7 hours and start without --yes); the stopped stack
    # resumes as it is, not cut into parts
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    many, what = cost_module.cpu_estimate(sweep, tmp_path, stack=True, jobs=64)
    assert many >= resumed / 2
    assert "64 jobs at once" in what
    # a cell stopped after 3 epochs of 30 in a single run resumes singly from its checkpoint,
    # as the sweep runs it: its 27 epochs left at the single epoch time (it counted as a member
    # of its variant's stack, at its whole budget)
    name, values = next((cell_name(lab, v), v) for lab, v in sweep.cells()
                        if lab == "wide" and v["epochs"] == 30)
    checkpoint = tmp_path / "cells" / name / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    atomic_torch_save({"state_dict": {}, "epoch": 2, "optimizer_states": [],
                       "hyper_parameters": {"config": make_config(values).to_dict()}}, checkpoint)
    alone, _ = cost_module.cpu_estimate(sweep, tmp_path, stack=True)
    assert alone * 3600 == pytest.approx(resumed * 3600 + (27 * 60 - 30 * 10) * full)


def test_cpu_estimate_times_each_cell_at_its_own_architecture(tmp_path, monkeypatch):
    """A variant may set its own arch: its cells are estimated at that arch's epoch time (they
    were at the base's, as was the line's arch), and an arch without one leaves the sweep
    without an estimate, the line naming it (it named the base's)."""
    cpu_epoch_seconds(monkeypatch, {"fc2": 30.0, "lenet5": 60.0}, {"lenet5": 10.0})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    sweep = Sweep(base={"arch": "lenet5"}, variants=[{"structure": "subsetsum", "arch": "fc2"}],
                  sparsities=[0.5, 0.9], epochs=[1])
    hours, what = cost_module.cpu_estimate(sweep, tmp_path)
    assert hours * 3600 == pytest.approx(2 * 30 + 60)  # (an fc2 stack, the LeNet5 baseline)
    assert what.endswith("2 stacked at ~30 s, 1 single at ~60 s, 3 tests of 10,000 images "
                         "at ~0 s, 2 starts at ~0 s (fc2, lenet5, the epoch times of a 2-core CPU)")
    assert what.startswith("3 cells, ")
    lone = Sweep(base={"arch": "lenet5"}, variants=[{}], sparsities=[0.5], epochs=[1],
                 baseline=False)
    assert cost_module.cpu_estimate(lone, tmp_path / "lone")[1].startswith("1 cell, ")
    sweep.variants.append({"structure": "dense", "arch": "fc4"})
    assert cost_module.check_cpu_cost(sweep, tmp_path, go_on=False) == \
        "sweep on the CPU: no epoch-time figure for fc4; no estimate"


def test_the_help_of_yes_states_the_hours_over_which_a_cpu_sweep_is_refused():
    """--yes's help said "estimated to take many hours on the CPU"; the sweep is refused over
    CPU_HOURS_WITHOUT_ASKING (4), which the help states (written out: --help imports no
    torch)."""
    help_text = build_parser()._option_string_actions["--yes"].help
    assert f"over {cost_module.CPU_HOURS_WITHOUT_ASKING:g} hours on the CPU" in help_text


def test_cpu_estimate_says_the_epochs_the_cells_train_of_the_images_they_train_on(
        tmp_path, monkeypatch):
    """Cells of --limit-train 300 are estimated at 300 images an epoch, and the line says their
    epochs of 300 images at the seconds of one (it said "epochs of 55,000 images: 0.04
    stacked at ~4 s", the epochs counted in full ones)."""
    cpu_epoch_seconds(monkeypatch, {"lenet5": 60.0}, {"lenet5": 10.0})
    sweep = Sweep(base={"arch": "lenet5", "limit_train": 300},
                  variants=[{"structure": "subsetsum"}], sparsities=[0.5, 0.9], epochs=[2])
    hours, what = cost_module.cpu_estimate(sweep, tmp_path)
    assert hours * 3600 == pytest.approx((4 * 10 + 2 * 60) * 300 / 55000)
    assert what == "3 cells, epochs of 300 training and 5,000 validation images: 4 stacked " \
                   "at ~0.055 s, 2 single at ~0.33 s, 3 tests of 10,000 images at ~0 s, 2 " \
                   "starts at ~0 s (lenet5, the epoch times of a 2-core CPU)"


def test_cpu_estimate_counts_each_cells_validation_test_and_start(tmp_path, monkeypatch):
    """A cell does more than its training epochs: each epoch validates its config's val_size
    images, the cell ends with a pass over its data set's 10,000 test images, and each stack
    and single cell starts (data, model, Trainer; in a train.py of its own with job slots,
    imports first). Under --limit-train 300 these are most of a sweep's time; the estimate
    counted the training images alone (here 0.12 s for the ~9 s they cost)."""
    cpu_epoch_seconds(monkeypatch, {"lenet5": 55.0}, {"lenet5": 11.0}, start=1.0, imports=7.0,
                      eval_share=0.5)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    sweep = Sweep(base={"arch": "lenet5", "limit_train": 300, "val_size": 1000},
                  variants=[{"structure": "subsetsum"}], sparsities=[0.5, 0.9], epochs=[2])
    hours, what = cost_module.cpu_estimate(sweep, tmp_path)
    epoch = 300 + 0.5 * 1000  # (its training images, its validation at half a training image's)
    test = 0.5 * 10000
    stacked = 2 * (2 * epoch + test) * 11 / 55000  # (2 members of one stack, 2 epochs each)
    single = (2 * epoch + test) * 55 / 55000  # (the trained baseline)
    assert hours * 3600 == pytest.approx(2 * 1.0 + stacked + single)
    assert what == "3 cells, epochs of 300 training and 1,000 validation images: 4 stacked " \
                   "at ~0.16 s, 2 single at ~0.8 s, 3 tests of 10,000 images at ~2 s, 2 " \
                   "starts at ~1 s (lenet5, the epoch times of a 2-core CPU)"
    # two jobs at once, each cell in a train.py of its own: two of the three after each other
    hours, what = cost_module.cpu_estimate(sweep, tmp_path, stack=False, jobs=2)
    assert hours * 3600 == pytest.approx(2 * (8.0 + single))
    assert "3 starts at ~8 s" in what


def test_cpu_estimate_of_a_cell_left_only_to_test_says_its_test(tmp_path, monkeypatch):
    """A cell killed once it had trained every epoch resumes only to test: the estimate said
    "1 cell, epochs of  training and  validation images: 1 test of  images at ~5 s", its
    numbers blank (the sizes were those of cells with epochs left); it says its test."""
    cpu_epoch_seconds(monkeypatch, {"lenet5": 55.0}, {"lenet5": 11.0}, start=1.0, eval_share=0.5)
    sweep = Sweep(base={"arch": "lenet5", "limit_train": 300}, variants=[{}], sparsities=[0.5],
                  epochs=[2], baseline=False)
    (label, values), = sweep.cells()
    checkpoint = tmp_path / "cells" / cell_name(label, values) / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    atomic_torch_save({"state_dict": {}, "epoch": 1, "optimizer_states": [],
                       "hyper_parameters": {"config": make_config(values).to_dict()}}, checkpoint)
    hours, what = cost_module.cpu_estimate(sweep, tmp_path)
    assert hours * 3600 == pytest.approx(1.0 + 0.5 * 10000 * 55 / 55000)
    assert what == ("1 cell, 1 test of 10,000 images at ~5 s, 1 start at ~1 s (lenet5, the "
                    "epoch times of a 2-core CPU)")


def test_cpu_estimate_counts_the_images_the_trainer_limits_leave(tmp_path, monkeypatch):
    """A cell's Trainer options limit_train_batches (a count or a fraction of the epoch),
    limit_val_batches (0: no validation; a fraction), limit_test_batches (a count),
    check_val_every_n_epoch and val_check_interval (a fraction of the epoch; a count of the
    run's batches where check_val_every_n_epoch is null) make it train, validate and test
    fewer or more images: the estimate counts those (it counted every image once an epoch,
    and a quick sweep a user limited could be refused as many hours), and its line says
    them."""
    import math

    from lotterynet.datamodule import EVAL_BATCH

    cpu_epoch_seconds(monkeypatch, {"fc2": 55.0}, {}, eval_share=0.5)
    limits = [{"limit_train_batches": 10, "limit_val_batches": 0, "limit_test_batches": 2},
              {"limit_train_batches": 0.25, "limit_val_batches": 0.4,
               "check_val_every_n_epoch": 2},
              {"limit_train_batches": 20, "val_check_interval": 0.25},
              {"limit_train_batches": 10, "check_val_every_n_epoch": None,
               "val_check_interval": 4}]
    sweep = Sweep(base={"arch": "fc2", "val_size": 5000, "batch_size": 64},
                  variants=[{"structure": s, "trainer": t}
                            for s, t in zip(("subsetsum", "dense", "malach", "fixedsize"),
                                            limits)],
                  sparsities=[0.5], epochs=[3], baseline=False)
    hours, what = cost_module.cpu_estimate(sweep, tmp_path)
    counted = {"train": 10 * 64, "val": 0, "test": 2 * EVAL_BATCH}
    fraction = {"train": int(math.ceil(55000 / 64) * 0.25) * 64,
                "val": int(math.ceil(5000 / EVAL_BATCH) * 0.4) * EVAL_BATCH, "test": 10000}
    quarters = {"train": 20 * 64, "val": 5000, "test": 10000}
    steps = {"train": 10 * 64, "val": 5000, "test": 10000}
    # (3 epochs each; the second validates in epoch 2 alone, the third 4 times an epoch (every
    # 5 of its 20 batches), the fourth every 4 of the run's 30 batches: 7 times; all test once)
    images = sum(3 * cell["train"] + 0.5 * (validations * cell["val"] + cell["test"])
                 for cell, validations in ((counted, 3), (fraction, 1), (quarters, 12),
                                           (steps, 7)))
    assert hours * 3600 == pytest.approx(images * 55 / 55000)
    assert what.startswith(f"4 cells, epochs of {counted['train']:,} or {quarters['train']:,} "
                           f"or {fraction['train']:,} training and 0 or {fraction['val']:,} or "
                           f"5,000 validation images: 12 single at ")
    assert f"4 tests of {counted['test']:,} or 10,000 images" in what


def test_cpu_estimate_times_each_structure_by_the_parameters_it_trains(tmp_path, monkeypatch):
    """fc2's epoch time is its default subset-sum net's (1,991,420 scores); beyond a fixed share
    a cell's is in proportion to what its model trains: the dense net's 397,000 scores cost
    less, malach's 6,308,280 more, the trained baseline's 397,000 weights as the dense net's
    (every cell was at the default's time)."""
    cpu_epoch_seconds(monkeypatch, {"fc2": 55.0}, {}, fixed_share=0.2)
    sweep = Sweep(base={"arch": "fc2", "val_size": 0},
                  variants=[{"structure": s} for s in ("subsetsum", "dense", "malach")],
                  sparsities=[0.5], epochs=[1])
    hours, _ = cost_module.cpu_estimate(sweep, tmp_path, stack=False)
    sizes = [0.2 + 0.8 * n / 1991420 for n in (1991420, 397000, 6308280, 397000)]
    assert hours * 3600 == pytest.approx(sum(sizes) * 60000 * 55 / 55000)


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "sweeps").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_sweep_files_build_valid_cells(path):
    """Every cell of every shipped sweep file is a valid run config (a misspelt value in a
    sweep's base would otherwise surface only when its cell starts, hours in)."""
    from lotterynet.config import make_config
    from lotterynet.config_checks import validate

    sweep = load_sweep(build_parser().parse_args(["--sweep", str(path)]), Overrides())
    cells = sweep.cells()
    assert len(cells) >= 5
    for _, values in cells:
        validate(make_config(values))


def test_a_large_grid_says_how_many_cells_it_checks_before_checking_them(monkeypatch, capsys):
    """A grid of thousands of cells takes seconds to check, cell by cell: a line says how many,
    counted from its axes, before the first cell's config is made (it waited silently)."""
    seen = []

    def spy(values):
        seen.append(capsys.readouterr().out)  # (what was printed before this cell's config)
        return make_config(values)

    monkeypatch.setattr(grid_module, "make_config", spy)
    monkeypatch.setattr(grid_module, "CELLS_TO_SAY", 7)
    argv = ["--arch", "fc2", "--sweep-variants", "dense,wide", "--sweep-sparsities", "0.5,0.9",
            "--sweep-epochs", "1", "--sweep-seeds", "0,1"]
    sweep = load_sweep(build_parser().parse_args([*argv, "--no-baseline"]), Overrides())
    assert sweep.size() == len(sweep.cells()) == 8
    assert len(seen) == 2  # (a config checked per variant: its cells differ in sparsity, seed)
    assert seen[0] == "checking the 8 cells of the sweep (variants 2 x sparsities 2 x epochs 1 " \
                      "x seeds 2), about 0 s\n"
    seen.clear()
    sweep = load_sweep(build_parser().parse_args(argv), Overrides())
    assert sweep.size() == len(sweep.cells()) == 10
    assert seen[0].startswith("checking the 10 cells of the sweep (") and \
        "seeds 2, and the baseline)" in seen[0]
    seen.clear()
    monkeypatch.setattr(grid_module, "CELLS_TO_SAY", 11)  # (a small grid is checked unsaid)
    load_sweep(build_parser().parse_args(argv), Overrides())
    assert seen[0] == ""


def test_a_grid_of_millions_of_cells_is_refused_from_its_axes_before_any_is_checked(
        monkeypatch):
    """Axes of a thousand values multiply to millions of cells: 10,000,000 were checked for
    about 2,000 s, their configs held in memory, before any refusal."""
    monkeypatch.setattr(grid_module, "make_config", lambda values: pytest.fail("checked"))
    argv = ["--arch", "fc2", "--sweep-variants", "dense",
            "--sweep-sparsities", ",".join(f"{i / 1000:g}" for i in range(500)),
            "--sweep-epochs", ",".join(str(e) for e in range(1, 202)), "--sweep-seeds", "0"]
    with pytest.raises(ConfigError, match=r"^the 100,701 cells of the sweep \(variants 1 x "
                                          r"sparsities 500 x epochs 201 x seeds 1, and the "
                                          r"baseline\) are more than 100,000, which no sweep "
                                          r"needs; give fewer variants, sparsities, epochs or "
                                          r"seeds$"):
        load_sweep(build_parser().parse_args(argv), Overrides())


PAPER_SPARSITIES = [0, 0.01, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975, 0.98,
                    0.99]


@pytest.mark.parametrize("name", ["pensia_fc2.yaml", "pensia_fc4.yaml", "pensia_lenet5.yaml",
                                  "authors_lenet5.yaml"])
def test_paper_sweep_files_hold_the_papers_recipe(name):
    """The Figure 2 sweep files run Pensia et al.'s Experiment 2 recipe in every cell
    (../shared/DESIGN.md): SGD, momentum 0.9, weight decay 5e-4, batch 64, cosine, lr 0.1 for
    the FC nets and 0.01 for LeNet5, Kaiming-normal frozen weights, 5 pairs, the paper's 14
    sparsities and 5 budgets, trained on all 60,000 MNIST training images as the paper (and the
    authors' code) does: the FC files held 5,000 out for validation."""
    sweep = load_sweep(build_parser().parse_args(["--sweep", str(REPO / "configs" / "sweeps" /
                                                                  name)]), Overrides())
    assert sweep.sparsities == PAPER_SPARSITIES and sweep.epochs == [10, 20, 30, 50, 100]
    for _, values in sweep.cells():
        config = make_config(values)
        lr = 0.01 if config.arch == "lenet5" else 0.1
        assert (config.optimizer, config.lr, config.momentum, config.weight_decay,
                config.batch_size, config.scheduler, config.init, config.pairs) == \
            ("sgd", lr, 0.9, 5e-4, 64, "cosine", "kaiming_normal", 5)
        assert (config.dataset, config.val_size, config.limit_train) == ("mnist", 0, None)


def test_a_cell_run_with_another_config_is_kept_beside_the_rerun(tmp_path, capsys):
    """Re-running a changed sweep runs its stale cells again in fresh folders; what they held
    (results, metrics) is renamed to CELL.stale-N, never deleted. A finished run's precision
    is part of its results (a resumed one may change it, as it may change its device)."""
    values = dict(arch="fc2", structure="dense", sparsity=0.5, epochs=1)
    cell = tmp_path / "cells" / cell_name("dense", {**values, "seed": 0})
    for n, other in enumerate(({"lr": 0.5}, {"lr": 0.25, "momentum": 0.8},
                               {"precision": "64-true"}), 1):
        cell.mkdir(parents=True)
        old = make_config({**values, **other, "out": str(cell)}).to_dict()
        (cell / "results.json").write_text(json.dumps({"config": old, "test_acc": n / 10}))
        (cell / "metrics.csv").write_text(f"epoch\n{n}\n")
        config = cells_module.prepare_cell(cells_module.cell_config(values, cell))
        assert config.overwrite and config.resume is None and not cell.exists()
        kept = cell.with_name(f"{cell.name}.stale-{n}")
        assert json.loads((kept / "results.json").read_text())["test_acc"] == n / 10
        assert (kept / "metrics.csv").read_text() == f"epoch\n{n}\n"
        said = capsys.readouterr().out
        now = {"lr": 0.1, "momentum": 0.9, "precision": "32-true"}  # (fc2's recipe lr: 0.1)
        changes = ", ".join(f"{key} {was!r} -> {now[key]!r}" for key, was in other.items())
        assert str(kept) in said and f"another config ({changes}); it trains anew (the sweep " \
            f"never reads a set-aside cell back, even run with its old config again)" in said
    ours = make_config({**values, "out": str(cell)}).to_dict()
    damaged = [{"test_acc": "high"}, {"test_acc": None}, {}, {"test_acc": float("nan")},
               {"test_acc": 5.0}, {"test_acc": True}]  # (it broke the table, or entered it)
    for n, acc in enumerate(damaged, 4):
        cell.mkdir()
        (cell / "results.json").write_text(json.dumps({"config": ours, **acc}))
        config = cells_module.prepare_cell(cells_module.cell_config(values, cell))
        assert config.overwrite and not cell.exists()
        assert cell.with_name(f"{cell.name}.stale-{n}").is_dir()
        assert "has damaged results (no test accuracy in [0, 1]); it trains anew" in \
            capsys.readouterr().out
    cell.mkdir()  # a cell with the sweep's own config and results is done: left as it is
    (cell / "results.json").write_text(json.dumps({"config": ours, "test_acc": 0.5}))
    assert cells_module.prepare_cell(cells_module.cell_config(values, cell)) is None
    assert (cell / "results.json").is_file()


@pytest.mark.parametrize("epochs, said", [
    ([1], "1 epoch"), ([2], "2 epochs"), ([1, 2], "best of 1 or 2 epochs"),  # (not "1/2")
    ([10, 20, 30], "best of 10, 20 or 30 epochs")])
def test_the_figure_title_names_the_epoch_budgets(epochs, said):
    sweep = Sweep(base={"arch": "fc2"}, variants=[], sparsities=[0.5], epochs=epochs, seeds=[0, 1])
    assert table_module.figure_title(sweep) == f"fc2 on mnist: {said}, 2 seeds"


def test_the_figures_chance_line_is_the_sweeps_data_sets(monkeypatch):
    """It was 10 % whatever the data set (plot's num_classes, never given)."""
    from lotterynet.data import DATASETS

    hundred = dataclasses.replace(DATASETS.get("cifar10"), name="cifar100", num_classes=100)
    monkeypatch.setitem(DATASETS._entries, "cifar100", hundred)
    for dataset, chance in [("mnist", 10.0), ("cifar100", 1.0)]:
        sweep = Sweep(base={"dataset": dataset}, variants=[], sparsities=[0.5], epochs=[1])
        assert table_module.chance_accuracy(sweep) == chance


@pytest.mark.parametrize("variant, title, chance, paper", [
    ({}, "fc2 on mnist", 10.0, 98.59),
    # (in the cells' order: the trained baseline's, the base's, last)
    ({"arch": "fc4"}, "fc4, fc2 on mnist", 10.0, None),
    ({"dataset": "fashion-mnist"}, "fc2 on fashion-mnist, mnist", 10.0, None),
    ({"dataset": "cifar100"}, "fc2 on cifar100, mnist", None, None)])
def test_the_figure_follows_the_data_and_archs_its_cells_use(monkeypatch, variant, title,
                                                              chance, paper):
    """A variant may set its own arch or data set: the title names every one the cells use,
    the chance line is drawn only where they share one number of classes, the paper's trained
    line only where every cell is that arch on MNIST (all three read the sweep's base alone)."""
    from lotterynet.data import DATASETS

    hundred = dataclasses.replace(DATASETS.get("cifar10"), name="cifar100", num_classes=100)
    monkeypatch.setitem(DATASETS._entries, "cifar100", hundred)
    sweep = Sweep(base={"arch": "fc2"}, variants=[{"structure": "wide", **variant}],
                  sparsities=[0.5], epochs=[1])
    assert table_module.figure_title(sweep) == f"{title}: 1 epoch, 1 seed"
    assert table_module.chance_accuracy(sweep) == chance
    assert table_module.paper_trained_accuracy(sweep) == paper
    # (the baseline is the base's: named so beside cells of another arch or data set)
    assert table_module.baseline_name(sweep) == (
        "trained dense" if title == "fc2 on mnist" else "trained dense fc2 on mnist")


def test_mapping_flags_add_keys_to_the_sweep_base(tmp_path):
    """``--model-kwargs`` and ``--trainer`` add to (and override keys of) the sweep base's
    mappings, as they do to a ``--config`` file's, instead of replacing them whole (which
    dropped the base's depth and trained a 12-block ViT)."""
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "base": {"arch": "timm:vit_tiny_patch16_224",
                 "model_kwargs": {"patch_size": 7, "depth": 1},
                 "trainer": {"gradient_clip_val": 1.0, "max_time": "00:01:00:00"}},
        "variants": ["dense"], "sparsities": [0.5], "epochs": [1], "baseline": False}))
    args = build_parser().parse_args(["--sweep", str(sweep_file), "--model-kwargs", "depth=2",
                                      "--trainer", "gradient_clip_val=0.5"])
    (_, values), = load_sweep(args, given_values(args)).cells()
    assert values["model_kwargs"] == {"patch_size": 7, "depth": 2}
    assert values["trainer"] == {"gradient_clip_val": 0.5, "max_time": "00:01:00:00"}


def test_a_sweep_variant_may_exclude_layers_of_a_timm_model(tmp_path):
    """A variant's ``exclude`` reaches its cells' configs and models: convert leaves the
    ScaledStdConv2d layers, which subset sum with ReLU refuses, as they are (every cell's model
    builds), where the variant without it is refused before the sweep starts, naming the
    --exclude that builds it."""
    from conftest import SCALED_STD_CONVS, TINY_NF

    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "variants": [{"structure": "subsetsum", "exclude": SCALED_STD_CONVS}, "subsetsum",
                     "dense"], "sparsities": [0.5, 0.9], "epochs": [1], "baseline": False}))
    args = build_parser().parse_args(["--sweep", str(sweep_file), *TINY_NF])
    sweep = load_sweep(args, given_values(args))
    excluding = [values for label, values in sweep.cells() if "exclude" in values]
    assert len(excluding) == 2 and all(v["exclude"] == SCALED_STD_CONVS for v in excluding)
    checks_module.check_buildable(dataclasses.replace(sweep, variants=sweep.variants[:1]))
    with pytest.raises(ConfigError, match=re.escape(
            "(not masked, trained) with --exclude 'stages.*.*.downsample.conv' "
            "'stages.*.*.conv1'")):
        checks_module.check_buildable(dataclasses.replace(sweep, variants=sweep.variants[1:2]))
    # (the weight-standardised layers convert, NF-ResNet's scaled ScaledStdConv2d and BiT's
    # StdConv2d: their dense variant without exclude builds)
    checks_module.check_buildable(dataclasses.replace(sweep, variants=sweep.variants[2:]))
    args = build_parser().parse_args(["--sweep", str(sweep_file), *TINY_BIT])
    sweep = load_sweep(args, given_values(args))
    checks_module.check_buildable(dataclasses.replace(sweep, variants=sweep.variants[2:]))


def test_a_variants_list_or_mapping_names_its_folders_by_a_hash(tmp_path):
    """A variant's ``exclude`` or ``model_kwargs`` is ``KEY=<hash>`` in its cells' folder names
    (they were ``dense-['stem.conv', 'stages.*.blocks.*.downsample.conv', …]-s0.5-…``: quotes,
    brackets, spaces and ``*``, as long as the list), one per value; a scalar is ``KEY=VALUE``
    but a structure and an activation, so that the sweeps in results/ keep their names, and two
    variants that set one value in other keys have folders of their own (both were
    ``malach-3-…``, refused as sharing it)."""
    def names(sweep: dict, *flags: str) -> list[str]:
        sweep_file = tmp_path / "s.yaml"
        sweep_file.write_text(yaml.safe_dump(sweep, sort_keys=False))
        args = build_parser().parse_args(["--sweep", str(sweep_file), *flags])
        return [cell_name(*cell) for cell in load_sweep(args, given_values(args)).cells()]

    bit = {"channels": [128] * 4, "stem_chs": 32}
    listed = names({
        "base": {"arch": "timm:resnetv2_50x1_bit", "model_kwargs": bit},
        "variants": [{"structure": "dense", "exclude": STD_CONVS},
                     {"structure": "dense", "exclude": STD_CONVS[:1]},
                     {"structure": "dense", "exclude": STD_CONVS,
                      "model_kwargs": {**bit, "channels": [64] * 4}},
                     {"structure": "subsetsum", "exclude": STD_CONVS}],
        "sparsities": [0.5], "epochs": [1], "baseline": False})
    assert listed == ["dense-exclude=4fe8ab4f-s0.5-e1-seed0",
                      "dense-exclude=0112b2d1-s0.5-e1-seed0",
                      "dense-exclude=4fe8ab4f-model_kwargs=4bf87c42-s0.5-e1-seed0",
                      "subsetsum-exclude=4fe8ab4f-s0.5-e1-seed0"]
    scalars = names({"variants": ["subsetsum:identity", {"structure": "fixedsize", "pairs": 3},
                                  "wide"], "sparsities": [0.5, 0.99], "epochs": [1, 10]},
                    "--arch", "fc2", "--sweep-seeds", "0,1")
    assert scalars[:24:4] + scalars[24:] == [
        "subsetsum-identity-s0.5-e1-seed0", "subsetsum-identity-s0.99-e1-seed0",
        "fixedsize-pairs=3-s0.5-e1-seed0", "fixedsize-pairs=3-s0.99-e1-seed0", "wide-s0.5-e1-seed0",
        "wide-s0.99-e1-seed0", "trained-e1-seed0", "trained-e1-seed1", "trained-e10-seed0",
        "trained-e10-seed1"]
    assert scalars[:4] == ["subsetsum-identity-s0.5-e1-seed0", "subsetsum-identity-s0.5-e1-seed1",
                           "subsetsum-identity-s0.5-e10-seed0",
                           "subsetsum-identity-s0.5-e10-seed1"]
    keyed = names({"variants": [{"structure": "malach", "pairs": 3},
                                {"structure": "malach", "hidden": 3},
                                {"pairs": 2, "activation": "relu", "structure": "subsetsum"}],
                   "sparsities": [0.5], "epochs": [1], "baseline": False}, "--arch", "fc2")
    assert keyed == ["malach-pairs=3-s0.5-e1-seed0", "malach-hidden=3-s0.5-e1-seed0",
                     "subsetsum-relu-pairs=2-s0.5-e1-seed0"]  # (structure, activation, others)
    with pytest.raises(ConfigError, match=r"would share the folder 'wide-s0.5-e1-seed0'; give "
                                          r"sparsities that differ within 6 significant digits"):
        names({"variants": ["wide"], "sparsities": [0.5, 0.5000001], "epochs": [1]})
    for name in listed + scalars + keyed:
        assert re.fullmatch(r"[\w.=-]+", name) and len(name) < 64, name


@pytest.mark.parametrize("platform", ["win32", "linux"])
def test_a_variants_value_windows_forbids_in_a_name_is_a_dash_in_its_folders_there(
        tmp_path, capsys, monkeypatch, platform):
    """A variant's value holding what a name cannot hold on Windows (``arch: timm:resnet18``,
    ``data_dir: D:\\mnist``; ``<>"|?*``) made cell and stack folders Windows cannot make
    (``\\`` a folder in another): there each such character is "-", as "/" is on every
    system, and two variants whose cells would then share a folder are refused before any
    work, in one line (exit 2); elsewhere the names are as they were (a resumed sweep finds
    its cells by name)."""
    monkeypatch.setattr(sys, "platform", platform)
    sweep_file, windows = tmp_path / "s.yaml", platform == "win32"
    argv = ["--sweep", str(sweep_file), "--arch", "fc2", "--sweep-out", str(tmp_path / "out")]

    def folders(*data_dirs: str) -> list[tuple[str, str]]:
        sweep_file.write_text(yaml.safe_dump({"variants": [
            {"structure": "dense", "data_dir": d} for d in data_dirs], "sparsities": [0.5],
            "epochs": [1], "baseline": False}))
        args = build_parser().parse_args(argv)
        return [(cell_name(*cell), cells_module.stack_name(*cell))
                for cell in load_sweep(args, given_values(args)).cells()]

    named = ["data_dir=D--mnist", "data_dir=a-b-c-d-e-f-g"] if windows else \
        ["data_dir=D:\\mnist", 'data_dir=a<b>c"d|e?f*g']
    assert folders("D:\\mnist", 'a<b>c"d|e?f*g') == [
        (f"dense-{n}-s0.5-e1-seed0", f"dense-{n}-seed0") for n in named]
    assert cell_name("dense/arch=timm:resnet18", {"sparsity": 0.5, "epochs": 1, "seed": 0}) == \
        f"dense-arch=timm{'-' if windows else ':'}resnet18-s0.5-e1-seed0"
    if not windows:
        assert [cell for cell, _ in folders("a:b", "a-b")] == [
            "dense-data_dir=a:b-s0.5-e1-seed0", "dense-data_dir=a-b-s0.5-e1-seed0"]
        return
    with pytest.raises(ConfigError):  # (the sweep file written)
        folders("a:b", "a-b")
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "train.py: error: sweep cells dense/data_dir=a:b at sparsity 0.5 and dense/data_dir=a-b "
        "at sparsity 0.5 would share the folder 'dense-data_dir=a-b-s0.5-e1-seed0'; make the "
        "variants' values differ in more than '/' or a character Windows forbids in a name "
        "(<>:\"\\|?*) against '-'\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("platform", ["darwin", "win32", "linux"])
def test_variants_whose_values_differ_only_in_case_are_refused_where_case_is_ignored(
        tmp_path, capsys, monkeypatch, platform):
    """Two variants whose values differ only in case (``data_dir: A``, ``data_dir: a``) named
    their cells and stacks apart by case alone: on macOS and Windows, whose file systems ignore
    case, one folder, where a cell would resume or replace the other's run and the table give
    one result for two points. There they are refused before any work, in one line naming
    both cells and the folder (exit 2); on Linux, case-sensitive, they run apart as before."""
    monkeypatch.chdir(tmp_path)  # (data_dir: A, where the old code went on to train)
    monkeypatch.setattr(sys, "platform", platform)
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(yaml.safe_dump({"variants": [
        {"structure": "dense", "data_dir": d} for d in ("A", "a")], "sparsities": [0.5],
        "epochs": [1], "baseline": False}))
    argv = ["--sweep", str(sweep_file), "--arch", "fc2", "--sweep-out", str(tmp_path / "out")]
    if platform == "linux":
        args = build_parser().parse_args(argv)
        cells = load_sweep(args, given_values(args)).cells()
        assert [(cell_name(*cell), cells_module.stack_name(*cell)) for cell in cells] == [
            (f"dense-data_dir={d}-s0.5-e1-seed0", f"dense-data_dir={d}-seed0") for d in "Aa"]
        return
    assert main(argv) == 2
    system, ignored = {"darwin": ("macOS", "case and Unicode normalization"),
                       "win32": ("Windows", "case")}[platform]
    windows = ' or a character Windows forbids in a name (<>:"\\|?*)' * (platform == "win32")
    assert capsys.readouterr().err == (
        f"train.py: error: sweep cells dense/data_dir=A at sparsity 0.5 and dense/data_dir=a "
        f"at sparsity 0.5 would share the folder 'dense-data_dir=A-s0.5-e1-seed0' on {system}, "
        f"whose file systems ignore {ignored} ('dense-data_dir=a-s0.5-e1-seed0' is the same "
        f"name there); make the variants' values differ in more than {ignored} or "
        f"'/'{windows} against '-'\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("platform", ["darwin", "win32", "linux"])
def test_variants_whose_values_differ_only_in_unicode_normalization_are_refused_on_macos(
        tmp_path, monkeypatch, platform):
    """``data_dir: é`` as one code point and as ``e`` and a combining accent (NFC, NFD: what
    two editors may write) named two cells that macOS's file systems, which ignore Unicode
    normalization, take for one folder. On macOS they are refused before any work; on
    Windows and Linux, whose file systems keep both names apart, they run apart."""
    monkeypatch.setattr(sys, "platform", platform)
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(yaml.safe_dump({"variants": [
        {"structure": "dense", "data_dir": d} for d in ("\u00e9", "e\u0301")],
        "sparsities": [0.5], "epochs": [1], "baseline": False}))
    args = build_parser().parse_args(["--sweep", str(sweep_file), "--arch", "fc2"])
    if platform == "darwin":
        with pytest.raises(ConfigError, match=r"^sweep cells dense/data_dir=\u00e9 at sparsity "
                           r"0\.5 and dense/data_dir=e\u0301 at sparsity 0\.5 would share the "
                           r"folder 'dense-data_dir=\u00e9-s0\.5-e1-seed0' on macOS, whose file "
                           r"systems ignore case and Unicode normalization \('dense-data_dir="
                           r"e\u0301-s0\.5-e1-seed0' is the same name there\); make the "
                           r"variants' values differ in more than case and Unicode normalization"
                           r" or '/' against '-'$"):
            load_sweep(args, given_values(args))
        return
    assert [cell_name(*cell) for cell in load_sweep(args, given_values(args)).cells()] == [
        f"dense-data_dir={d}-s0.5-e1-seed0" for d in ("\u00e9", "e\u0301")]


def test_a_sweep_written_before_labels_named_their_keys_is_renamed_not_trained(
        tmp_path, data_dir, capsys):
    """A sweep folder written when a variant's scalars stood without their keys
    (``subsetsum-identity-2-…``, now ``subsetsum-identity-pairs=2-…``): its cells and stack
    take their new names, their results naming them, and nothing trains; a ``--cell`` renames
    its own cell, and one named the old way (a W&B sweep's) is refused naming the new."""
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(yaml.safe_dump({"variants": [
        {"structure": "subsetsum", "activation": "identity", "pairs": 2}]}, sort_keys=False))
    out = tmp_path / "sweep"
    argv = ["--sweep", str(sweep_file), *TINY[:7], "--sweep-sparsities", "0.5,0.9",
            "--sweep-epochs", "1", "--no-baseline", "--data-dir", str(data_dir),
            "--sweep-out", str(out)]
    assert main(argv) == 0
    table = rows(out)
    assert {r["variant"] for r in table} == {"subsetsum/identity/pairs=2"}

    def results() -> dict:
        return {p.parent.name: json.loads(p.read_text()) for p in out.glob("cells/*/results.json")}

    def as_before(*folders: Path) -> None:  # (as the sweep wrote them before)
        for new in folders:
            new.rename(new.with_name(new.name.replace("pairs=", "")))
            for path in out.glob("cells/*/results.json"):
                cells_module.repoint(path, new, new.with_name(new.name.replace("pairs=", "")))

    stored = results()
    stacks = {r["stack"]["dir"] for r in stored.values()}
    assert stacks == {"stacks/subsetsum-identity-pairs=2-seed0"}
    as_before(*out.glob("cells/*"), *out.glob("stacks/*"))
    assert {r["stack"]["dir"] for r in results().values()} == {"stacks/subsetsum-identity-2-seed0"}
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for kind, old, new in (("cell", "subsetsum-identity-2-s0.5-e1-seed0",
                            "subsetsum-identity-pairs=2-s0.5-e1-seed0"),
                           ("stack", "subsetsum-identity-2-seed0",
                            "subsetsum-identity-pairs=2-seed0")):
        assert f"{kind} {old} is now {new} (a variant's label names the key" in printed
    assert "2 cells, 2 already done, 0 to run" in printed and "not in the table" not in printed
    assert results() == stored and rows(out) == table
    assert [p.name for p in out.glob("stacks/*")] == ["subsetsum-identity-pairs=2-seed0"]
    cells = sorted(out.glob("cells/*"))
    as_before(*cells)
    assert main([*argv, f"--cell={cells[0].name}"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"cell subsetsum-identity-2-s0.5-e1-seed0 is now {cells[0].name} (a variant's label "
        f"names the key of each value but its structure and activation)",
        f"cell {cells[0].name} is done: {cells[0] / 'results.json'}"]
    assert main([*argv, "--cell=subsetsum-identity-2-s0.9-e1-seed0"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "train.py: error: --cell 'subsetsum-identity-2-s0.9-e1-seed0' is this sweep's cell "
        "'subsetsum-identity-pairs=2-s0.9-e1-seed0' by its old name (a variant's label names "
        "the key of each value but its structure and activation); run that one, or write the "
        "W&B sweep anew (--wandb-sweep)")
    assert results()[cells[0].name] == stored[cells[0].name]


@pytest.mark.parametrize("form, variant, label", [
    ("keyless", {"structure": "subsetsum", "pairs": 2}, "subsetsum-2"),
    ("given", {"pairs": 2, "structure": "subsetsum"}, "pairs=2-subsetsum"),
    ("given", {"structure": "subsetsum", "pairs": 2}, "pairs=2-subsetsum"),  # (reordered)
    ("same run", {"structure": "subsetsum", "pairs": 2}, "subsetsum-relu-pairs=2")])
def test_a_stack_stopped_before_labels_named_their_keys_resumes_under_the_new_names(
        tmp_path, capsys, form, variant, label):
    """A stack stopped (after its first epoch of two) when its variant's label had no keys
    (``subsetsum-2-seed0``, its members ``subsetsum-2-s0.5-e2-seed0``, ...), or wrote them in
    the order the variant gave them (``pairs=2-subsetsum-seed0``), the sweep file's keys
    reordered since or not, or when the sweep file wrote its variant another way
    (``subsetsum:relu`` with ``pairs: 2``, the default activation written out; its members'
    stored configs are the cells' now): once its folder and cells are renamed, the sweep
    continues it from its checkpoint, whose members, history and stack file name the cells by
    their new names. Its checkpoint named the old cells: the stack was set aside as one that
    cannot be continued and trained anew, its stack file naming the old cells (and in the order
    given, or written another way, the sweep did not find the old folders at all: it trained
    every cell anew into new ones; so it did in the order given when written if the file's keys
    were reordered since)."""
    from lotterynet.stack_files import stack_record

    sweep = Sweep(base={"arch": "fc2"}, variants=[variant],
                  sparsities=[0.5, 0.9], epochs=[2], baseline=False)
    configs = cells_module.cell_configs(sweep, tmp_path)
    olds = {cell_name(label, values): values for _, values in sweep.cells()}
    old = tmp_path / "stacks" / f"{label}-seed0"  # (as a sweep wrote it before)
    (old / "checkpoints").mkdir(parents=True)
    atomic_torch_save({"state_dict": {}, "epoch": 0, "hyper_parameters": {"members": [
        {"name": name, "config": config.to_dict()}
        for name, config in zip(olds, configs.values())]}}, old / "checkpoints" / "last.ckpt")
    write_stack_file([cells_module.cell_config(v, tmp_path / "cells" / n) for n, v in olds.items()],
                     old, [tmp_path / "cells" / name for name in olds])
    (old / "metrics.csv").write_text("epoch,step," + ",".join(
        f"{name}/train/acc" for name in olds) + "\n0,3,0.5,0.25\n")
    for name in olds:
        (tmp_path / "cells" / name).mkdir(parents=True)
    cells_module.rename_old_folders(sweep, tmp_path)
    stack, cells = tmp_path / "stacks" / "subsetsum-pairs=2-seed0", list(configs)
    assert cells == ["subsetsum-pairs=2-s0.5-e2-seed0", "subsetsum-pairs=2-s0.9-e2-seed0"]
    why = OLD_LABELS.get(form, cells_module.SAME_RUN)
    assert f"stack {label}-seed0 is now subsetsum-pairs=2-seed0 ({why})" in \
        capsys.readouterr().out.splitlines()
    todo = [(name, cells_module.prepare_cell(config)) for name, config in configs.items()]
    assert plan_module.plan_stacks(sweep, tmp_path, configs, todo)[:3] == (
        {stack: cells}, [], {})
    assert list(stack_record(stack).members) == cells
    assert read_stack_file(stack / "stack.yaml")[1] == [tmp_path / "cells" / c for c in cells]
    with open(stack / "metrics.csv") as f:
        assert list(csv.reader(f)) == [["epoch", "step", *(f"{c}/train/acc" for c in cells)],
                                       ["0", "3", "0.5", "0.25"]]


def test_a_variant_written_another_way_finds_its_cells_by_their_config(tmp_path, data_dir,
                                                                      capsys):
    """A sweep file that writes its variant another way (``subsetsum``, then ``{structure:
    subsetsum, activation: relu, pairs: 5}``, the defaults written out) resolves to the same
    runs under other labels: the cell folder whose stored config is a cell's takes its name,
    its results naming it, and nothing trains (every cell was trained anew into new folders).
    A folder of another config (here another sparsity) keeps its name, and so do two folders
    of one cell's config (never two onto one)."""
    sweep_file, out = tmp_path / "s.yaml", tmp_path / "sweep"

    def argv(variant, *sparsities: float) -> list[str]:
        sweep_file.write_text(yaml.safe_dump({"variants": [variant]}))
        return ["--sweep", str(sweep_file), *TINY[:7], "--sweep-sparsities",
                ",".join(map(str, sparsities)), "--sweep-epochs", "1", "--no-baseline",
                "--data-dir", str(data_dir), "--sweep-out", str(out)]

    assert main(argv("subsetsum", 0.5, 0.9)) == 0
    old, new = "subsetsum-s0.5-e1-seed0", "subsetsum-relu-pairs=5-s0.5-e1-seed0"
    stored = json.loads((out / "cells" / old / "results.json").read_text())
    capsys.readouterr()
    spelled = {"structure": "subsetsum", "activation": "relu", "pairs": 5}
    assert main(argv(spelled, 0.5)) == 0
    printed = capsys.readouterr().out
    assert f"cell {old} is now {new} ({cells_module.SAME_RUN})" in printed.splitlines()
    assert "1 cell, 1 already done, 0 to run" in printed
    assert sorted(p.name for p in out.glob("cells/*")) == [new, "subsetsum-s0.9-e1-seed0"]
    assert [p.name for p in out.glob("stacks/*")] == ["subsetsum-seed0"]  # (a member stays)
    results = json.loads((out / "cells" / new / "results.json").read_text())
    assert results["run_dir"] == results["config"]["out"] == f"cells/{new}"
    assert results == {**stored, "run_dir": f"cells/{new}",
                       "config": {**stored["config"], "out": f"cells/{new}"}}
    shutil.copytree(out / "cells" / "subsetsum-s0.9-e1-seed0", out / "cells" / "x-s0.9-e1-seed0")
    args = build_parser().parse_args(argv(spelled, 0.5, 0.9))
    assert cells_module.same_runs(load_sweep(args, given_values(args)), out) == {}


def test_a_variants_mapping_names_the_same_folders_in_any_key_order(tmp_path):
    """``model_kwargs: {stem_chs: 32, channels: ...}`` is the same run as ``{channels: ...,
    stem_chs: 32}``: its cells keep their folders (a finished sweep's file with the mapping's
    keys written in another order re-ran every cell into new ones), and a variant that spells
    out the base's mapping in another order is the same run as one that leaves it out. A
    folder that a sweep labelled before in its file's order of keys is renamed whatever its
    keys' order now (``{structure, activation, pairs}`` written as ``{pairs, activation,
    structure}``: ``pairs=2-identity-subsetsum-…`` was left behind, every cell trained anew)."""
    def names(*variants: dict, base=None) -> list[str]:
        sweep_file = tmp_path / "s.yaml"
        sweep_file.write_text(yaml.safe_dump({
            "base": {"arch": "timm:resnetv2_50x1_bit", "exclude": STD_CONVS, **(base or {})},
            "variants": list(variants), "sparsities": [0.5], "epochs": [1], "baseline": False},
            sort_keys=False))
        args = build_parser().parse_args(["--sweep", str(sweep_file)])
        return [cell_name(*cell) for cell in load_sweep(args, given_values(args)).cells()]

    bit = {"channels": [128] * 4, "stem_chs": 32, "conv_layer": {"b": 1, "a": [{"y": 2, "x": 1}]}}
    reordered = {"stem_chs": 32, "conv_layer": {"a": [{"x": 1, "y": 2}], "b": 1},
                 "channels": [128] * 4}
    assert names({"structure": "dense", "model_kwargs": bit}) == \
        names({"structure": "dense", "model_kwargs": reordered}) == \
        names({"model_kwargs": reordered, "structure": "dense"})  # (the variant's own keys)
    with pytest.raises(ConfigError, match="are the same run; give each variant once"):
        names({"structure": "dense"}, {"structure": "dense", "model_kwargs": reordered},
              base={"model_kwargs": bit})
    renamed = cells_module.renamed_folders(Sweep(
        base={"arch": "fc2"}, variants=[{"structure": "subsetsum", "activation": "identity",
                                         "pairs": 2}], sparsities=[0.5], epochs=[1]))
    assert renamed["cells/pairs=2-identity-subsetsum-s0.5-e1-seed0"] == (
        "cells/subsetsum-identity-pairs=2-s0.5-e1-seed0", OLD_LABELS["given"])
    assert renamed["stacks/identity-pairs=2-subsetsum-seed0"][0] == \
        "stacks/subsetsum-identity-pairs=2-seed0"
    assert len(renamed) == 2 * (5 + 1)  # (a cell's and a stack's 3! - 1 orders and keyless)


def test_a_cell_set_aside_by_another_agent_is_refused_not_a_traceback(tmp_path):
    """Two ``--cell`` agents find the same stale cell; the first sets it aside, so the second
    finds nothing at the name (or the first's new run there): it says the folder is in use,
    and the first's set-aside folder is left as it is."""
    cell = tmp_path / "cells" / "dense-s0.5-e1-seed0"
    cell.mkdir(parents=True)
    (cell / "results.json").write_text("{}")
    kept = cells_module.set_aside(cell, "cell was run with another config")
    assert kept == cell.with_name(f"{cell.name}.stale-1") and not cell.exists()
    with pytest.raises(sweep_module.ConfigError, match="is in use by another process"):
        cells_module.set_aside(cell, "cell was run with another config")
    assert os.listdir(tmp_path / "cells") == [kept.name]
    assert (kept / "results.json").read_text() == "{}"


def test_a_cell_stopped_in_a_single_run_resumes_singly_in_a_stacked_sweep(tmp_path, data_dir,
                                                                          capsys):
    """A cell interrupted while it ran singly (``--no-stack``, a ``--cell`` agent) resumes from
    its checkpoint when the sweep runs stacked; it became a member of a new stack, which
    started at epoch 0 over its checkpoint and history. The other cells stack."""
    argv = [*TINY, "--sweep-variants", "subsetsum:identity", "--sweep-sparsities",
            "0.5,0.9,0.95", "--sweep-epochs", "2", "--no-baseline", "--data-dir",
            str(data_dir), "--sweep-out", str(tmp_path / "sweep")]
    args = build_parser().parse_args(argv)
    (label, values), *_ = load_sweep(args, given_values(args)).cells()
    cell = tmp_path / "sweep" / "cells" / cell_name(label, values)
    run(dataclasses.replace(cells_module.prepare_cell(cells_module.cell_config(values, cell)),
                            stop_after=1))
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(" |")[0] for line in printed if line.startswith("epoch ")] == [
        "epoch 2/2"]  # the cell's own run, continued
    assert sum(line.startswith("stack subsetsum-identity-seed0: epoch") for line in printed) == 2
    assert json.loads((cell / "results.json").read_text())["epochs_done"] == 2


@pytest.mark.parametrize("wandb_dir", [None, "wandb-dir"])
def test_the_sweep_summary_run_goes_where_its_cells_go(tmp_path, monkeypatch, wandb_dir):
    """The table-and-figure run was given only the project and group: with ``--wandb-entity``
    it landed outside the cells' entity, without their tags and notes. Each aggregation made
    another summary run; it resumes the sweep's one. Its W&B files go where the cells' go:
    into ``$WANDB_DIR`` where it is set (they went beside the figure whatever it said)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lotterynet.loggers import read_wandb_records

    monkeypatch.setenv("WANDB_MODE", "offline")
    if wandb_dir:
        monkeypatch.setenv("WANDB_DIR", str(tmp_path / wandb_dir))
    figure = tmp_path / "figure.png"
    plt.plot([1, 2])
    plt.savefig(figure)
    plt.close("all")
    base = {"wandb_project": "p", "wandb_group": "g", "wandb_entity": "e",
            "wandb_tags": "a, b", "wandb_notes": "n"}
    for again in range(2):  # a sweep aggregated again (re-run, a cell run since)
        table_module.log_to_wandb([{"cell": "x", "test_acc": 0.5 + again / 10}], figure,
                                  Sweep(base, [{"structure": "dense"}], [0.5], [1]))
    assert (tmp_path / "wandb").exists() == (wandb_dir is None)
    records = [r.run for log in (tmp_path / (wandb_dir or "") / "wandb").glob(
                   "offline-run-*/run-*.wandb")
               for r in read_wandb_records(log) if r.WhichOneof("record_type") == "run"]
    assert len(records) == 2
    for record in records:
        assert (record.project, record.run_group, record.entity, list(record.tags),
                record.notes, record.display_name) == ("p", "g", "e", ["a", "b"], "n",
                                                       "g-summary")
    # one summary run: the second aggregation resumed the first's (a new run each time
    # collected duplicate summary runs on the dashboard), its id kept in the sweep's folder
    assert {r.run_id for r in records} == {
        (tmp_path / "wandb-id").read_text().splitlines()[0]}


@pytest.mark.parametrize("checkpointed", [True, False])
@pytest.mark.parametrize("one_cell", [False, True])
def test_a_cell_the_sweep_runs_itself_says_to_run_the_sweep_again_when_stopped(
        tmp_path, monkeypatch, checkpointed, one_cell):
    """A cell run in the sweep's own process (the trained baseline, ``--no-stack``) stopped by
    SIGTERM or Ctrl-C said ``resume with --resume CELL/checkpoints/last.ckpt``: that one cell,
    the rest of the sweep left unrun. With a checkpoint it says to run the sweep again, as a
    stack does (a cell run by ``--cell``, a W&B agent's: the same ``--cell`` command); without
    one, that there is nothing to resume and that the sweep run again starts it over (it
    repeated the run's own line, which told of no way on). Its checkpoint's epoch is named, as
    a single run's resume line names it (it was not), from what the stopped run says (the
    file is not read again while the process stops)."""
    from lotterynet.errors import Interrupted, interrupted

    def stopped(config, job_type=None):
        if checkpointed:  # (bytes that a read would refuse: the epoch is the run's)
            (Path(config.out) / "checkpoints").mkdir(parents=True)
            (Path(config.out) / "checkpoints" / "last.ckpt").write_bytes(b"not read")
        raise interrupted(True, "resume with --resume X (written at the end of epoch 2)"
                          if checkpointed else NOTHING, 2 if checkpointed else None)

    monkeypatch.setattr(sweep_module, "run", stopped)
    sweep = Sweep(base={"arch": "fc2"}, variants=[], sparsities=[0.5], epochs=[1])
    with pytest.raises(Interrupted) as err:
        if one_cell:
            sweep_module.run_one_cell(sweep, tmp_path, "trained-e1-seed0")
        else:
            sweep_module.run_cells(sweep, tmp_path, 1, stack=False)
    assert err.value.exit_code == 143
    again = "--cell command" if one_cell else "sweep"
    assert str(err.value) == "stopped by SIGTERM; cell trained-e1-seed0: " + (
        f"run the same {again} again to continue from its checkpoint (written at the end of "
        f"epoch 2)" if checkpointed else
        f"{NOTHING}; run the same {again} again to start it over in its folder")


@pytest.mark.parametrize("stop", ["disk full", "SIGTERM"])
def test_a_finished_cell_whose_wandb_end_fails_says_it_is_finished(tmp_path, monkeypatch,
                                                                   stop):
    """A cell whose results were written, then whose W&B end failed a write (or was stopped),
    said to "run the same sweep again to continue from its checkpoint", where its run's own
    line said it was finished (a sweep run again counts it done, and continues nothing)."""
    from lotterynet.errors import DiskFullError, Interrupted, interrupted, message

    def finished_then_failed(config, job_type=None):
        cell = Path(config.out)
        (cell / "checkpoints").mkdir(parents=True)
        (cell / "checkpoints" / "last.ckpt").write_bytes(b"not read")
        (cell / "results.json").write_text("{}")
        done = f"the run is finished: its results are in {str(cell / 'results.json')!r}"
        if stop == "SIGTERM":
            raise interrupted(True, done, 1)
        full = DiskFullError(28, "disk full while writing 'x'")
        full.then = done
        raise full

    monkeypatch.setattr(sweep_module, "run", finished_then_failed)
    sweep = Sweep(base={"arch": "fc2"}, variants=[], sparsities=[0.5], epochs=[1])
    with pytest.raises(DiskFullError if stop == "disk full" else Interrupted) as err:
        sweep_module.run_cells(sweep, tmp_path, 1, stack=False)
    results = tmp_path / "cells" / "trained-e1-seed0" / "results.json"
    said = "disk full while writing 'x'" if stop == "disk full" else "stopped by SIGTERM"
    assert message(err.value) == (f"{said}; cell trained-e1-seed0 is finished: its results are "
                                  f"in {str(results)!r}, and the same sweep run again counts it "
                                  f"done")


@pytest.mark.parametrize("failing", [1, 2])
def test_a_cell_the_sweep_runs_itself_that_cannot_write_says_to_run_the_sweep_again(
        tmp_path, data_dir, capsys, monkeypatch, failing):
    """A cell run in the sweep's own process whose disk filled as it wrote its checkpoint (the
    ``failing``-th: epoch 1's, epoch 2's) said its run's way on, ``resume with --resume
    CELL/checkpoints/last.ckpt``: that one cell, the rest of the sweep left unrun. It says
    what its Ctrl-C says: to run the sweep again, to continue from its checkpoint or, without
    one, to start it over."""
    disk_full_at(monkeypatch, failing)  # the checkpoint writes
    out = tmp_path / "sweep"
    assert main([*ONE_CELL, "--sweep-epochs", "2", "--data-dir", str(data_dir),
                 "--sweep-out", str(out)]) == 1
    cell = "dense-s0.5-e2-seed0"
    then = (f"{NOTHING}; run the same sweep again to start it over in its folder" if failing == 1
            else "run the same sweep again to continue from its checkpoint (written at the end "
                 "of epoch 1)")
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"train.py: error: disk full while writing "
        f"{str(out / 'cells' / cell / 'checkpoints' / 'last.ckpt')!r}; the previous last.ckpt "
        f"(if any) is kept unchanged; cell {cell}: {then}")


@pytest.mark.parametrize("checkpointed", [True, False])
@pytest.mark.parametrize("how", ["in its process", "as its job", "--cell"])
def test_a_cell_the_sweep_runs_says_to_run_the_sweep_again_when_memory_ran_out(
        tmp_path, monkeypatch, capsys, checkpointed, how):
    """A cell run in the sweep's own process that ran out of memory said ``..., or resume with
    --resume CELL/checkpoints/last.ckpt where more memory is free``, and so did a cell run as
    the sweep's job (``train.py --config CELL/cell.yaml``, whose line the sweep quotes) and
    one run by ``--cell`` (a W&B agent's): that one cell, outside its sweep. They say to run
    the sweep (the ``--cell`` command) again, as a stack does: to continue from the cell's
    checkpoint, or, without one, to start it over. What needs less memory is the sweep's: a
    smaller --batch-size given to it (not to a new run of the cell) changes every cell, which
    then start over as new ones."""
    import lotterynet.run as run_module
    from lotterynet.errors import OutOfMemory
    from lotterynet.run_stops import needs_less, reporting_out_of_memory

    def ran_out(config, job_type=None):
        if checkpointed:
            (Path(config.out) / "checkpoints").mkdir(parents=True)
            (Path(config.out) / "checkpoints" / "last.ckpt").write_bytes(b"")
        trainer = SimpleNamespace(current_epoch=1, loggers=[])  # (in its second epoch)
        with reporting_out_of_memory(
                trainer, f"run {config.out!r}", needs_less(config),
                Path(config.out) / "checkpoints" / "last.ckpt"):
            raise MemoryError

    again = "--cell command" if how == "--cell" else "sweep"
    then = (f", or run the same {again} again to continue from its checkpoint where more "
            f"memory is free") if checkpointed else (
        f"; {NOTHING}; run the same {again} again to start it over in its folder")
    cell = tmp_path / "cells" / "trained-e1-seed0"
    said = (f"run {str(cell)!r}: memory ran out in training epoch 2; a sweep with a smaller "
            f"--batch-size (now 64) or a narrower model (--pairs, --hidden) needs less (its "
            f"cells then start over as new ones, the old set aside as stale){then}")
    sweep = Sweep(base={"arch": "fc2"}, variants=[], sparsities=[0.5], epochs=[1])
    if how == "as its job":
        monkeypatch.setattr(run_module, "run", ran_out)
        monkeypatch.setenv(jobs_module.SWEEP_JOB, "1")
        assert main(["--arch", "fc2", "--out", str(cell)]) == 4  # (OutOfMemory's: 1 before)
        assert capsys.readouterr().err.strip() == f"train.py: error: {said}"
        return
    monkeypatch.setattr(sweep_module, "run", ran_out)
    if how == "--cell":
        with pytest.raises(OutOfMemory) as err:
            sweep_module.run_one_cell(sweep, tmp_path, "trained-e1-seed0")
        assert str(err.value) == said
        return
    assert sweep_module.run_cells(sweep, tmp_path, 1, stack=False) == [
        jobs_module.Failure(f"cell trained-e1-seed0: {said}", OutOfMemory.exit_code,
                             ("trained-e1-seed0",))]
    assert needs_less(make_config({"batch_size": 8})) == (  # (outside a sweep)
        "a new run with a smaller --batch-size (now 8) or a narrower model (--pairs, --hidden) "
        "needs less")


#: Two single cells (no stack, no baseline), which :func:`failing_at` runs in the sweep's process.
TWO_CELLS = ["--arch", "fc2", "--structure", "dense", "--sweep-variants", "dense",
             "--sweep-sparsities", "0.5,0.9", "--sweep-epochs", "1", "--no-baseline",
             "--no-stack"]


def failing_at(sparsity: float, error: Exception, monkeypatch, structure: str | None = None
               ) -> None:
    """The sweep's runs, stood in for: the cell of ``sparsity`` (of ``structure``'s variant,
    where given) raises ``error``, the others write a finished cell's results at once; no
    figure is drawn."""
    def ran(config, job_type=None):
        if config.sparsity == sparsity and structure in (None, config.structure):
            raise error
        results = {"finished": True, "config": config.to_dict(), "test_acc": 0.5,
                   "params": {"kept": 1, "maskable": 2, "trainable": 2}, "run_dir": config.out}
        Path(config.out).mkdir(parents=True, exist_ok=True)
        (Path(config.out) / "results.json").write_text(json.dumps(results))

    monkeypatch.setattr(sweep_module, "run", ran)
    monkeypatch.setattr(sweep_module, "plot", lambda *args, **kwargs: None)


@pytest.mark.parametrize("ended, advised", [
    ("diverged", "a lower lr: --lr runs every cell anew (another config: pass --yes to set "
                 "aside the 1 finished cell), lr in a variant's mapping that variant's (another "
                 "config: pass --yes to set aside the 1 finished cell of dense)"),
    ("out of memory", "re-run the same command to retry; a smaller --batch-size or a narrower "
                      "model runs every cell anew: pass --yes to set aside the 1 finished cell")],
    ids=["diverged", "out of memory"])
def test_the_sweeps_advice_after_a_failed_cell_says_that_finished_cells_need_yes(
        tmp_path, data_dir, monkeypatch, capsys, ended, advised):
    """A cell diverged (ran out of memory) beside a finished one: the sweep's line advised
    another --lr (a smaller --batch-size), which runs every cell anew, and the sweep so changed
    was refused (exit 2: it would set the finished cell aside) unless --yes, which the advice
    did not say. It says so, with the finished cells' count; the command it advises then
    runs (here its cell fails again)."""
    from lotterynet.errors import OutOfMemory, TrainingDiverged

    failing_at(0.9, TrainingDiverged("diverged in epoch 1") if ended == "diverged" else
               OutOfMemory("memory ran out in training epoch 1", "less", None, "nothing"),
               monkeypatch)
    argv = [*TWO_CELLS, "--data-dir", str(data_dir), "--sweep-out", str(tmp_path / "sweep")]
    assert main(argv) == 1
    said = capsys.readouterr().out.strip().splitlines()[-1]
    assert said.startswith("sweep incomplete: 1 of 2 cells without results (1 failure); ")
    assert said.endswith(f"({advised})" if ended == "out of memory" else
                         f"(a cell that diverged diverges again when re-run: it needs {advised})")
    flag = ["--lr", "0.01"] if ended == "diverged" else ["--batch-size", "32"]
    assert main([*argv, *flag]) == 2 and "pass --yes" in capsys.readouterr().err
    assert main([*argv, *flag, "--yes"]) == 1


def test_the_advice_after_a_diverged_cell_counts_its_variants_finished_cells(
        tmp_path, data_dir, monkeypatch, capsys):
    """A cell diverged beside finished cells of its variant and of another: the advice to
    lower the lr in that variant's mapping said only '(with --yes too where it has finished
    ones)', where --lr's says how many finished cells --yes would set aside. It says how many
    of that variant's, as --lr's does of every cell's."""
    from lotterynet.errors import TrainingDiverged

    failing_at(0.9, TrainingDiverged("diverged in epoch 1"), monkeypatch, structure="dense")
    assert main(["--arch", "fc2", "--sweep-variants", "dense,wide", "--sweep-sparsities",
                 "0.5,0.9", "--sweep-epochs", "1", "--no-baseline", "--no-stack", "--data-dir",
                 str(data_dir), "--sweep-out", str(tmp_path / "sweep")]) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith(
        "(a cell that diverged diverges again when re-run: it needs a lower lr: --lr runs every "
        "cell anew (another config: pass --yes to set aside the 3 finished cells), lr in a "
        "variant's mapping that variant's (another config: pass --yes to set aside the 1 "
        "finished cell of dense))")


def test_the_advice_after_only_the_baseline_diverged_leaves_the_variants_lr_out(
        tmp_path, data_dir, monkeypatch, capsys):
    """Only the trained baseline's cell diverged: the advice still said "lr in a variant's
    mapping that variant's", which does not set the baseline's lr (--lr alone does: it has no
    mapping). It says only --lr's way."""
    from lotterynet.errors import TrainingDiverged

    failing_at(0.0, TrainingDiverged("diverged in epoch 1"), monkeypatch)  # (its sparsity)
    assert main(["--arch", "fc2", "--structure", "dense", "--sweep-variants", "dense",
                 "--sweep-sparsities", "0.5", "--sweep-epochs", "1", "--no-stack",
                 "--data-dir", str(data_dir), "--sweep-out", str(tmp_path / "sweep")]) == 1
    said = capsys.readouterr()
    assert re.search(r"cell trained-\S*: diverged in epoch 1", said.err), said.err
    assert said.out.strip().splitlines()[-1].endswith(
        "(a cell that diverged diverges again when re-run: it needs a lower lr: --lr runs every "
        "cell anew (another config: pass --yes to set aside the 1 finished cell))")


def test_a_cell_that_wandb_failed_to_log_fails_alone(tmp_path, data_dir, monkeypatch, capsys):
    """W&B's own error in a cell the sweep runs in its process (its server out of reach: a
    one-line WandbFailed) stopped the whole sweep there: the cells after it never trained and
    no table was written. It fails alone, as a divergence does; the others train."""
    from lotterynet.errors import WandbFailed

    failing_at(0.5, WandbFailed("run: W&B failed to log it (server unreachable); resume it"),
               monkeypatch)
    out = tmp_path / "sweep"
    assert main([*TWO_CELLS, "--data-dir", str(data_dir), "--sweep-out", str(out)]) == 1
    said = capsys.readouterr()
    assert "cell dense-s0.5-e1-seed0: run: W&B failed to log it (server unreachable)" in said.err
    assert (out / "cells" / "dense-s0.9-e1-seed0" / "results.json").is_file()
    assert said.out.strip().splitlines()[-1].startswith(
        "sweep incomplete: 1 of 2 cells without results (1 failure); the table holds the others")


def test_a_stopped_stack_too_big_for_the_memory_now_fails_alone_and_says_how_to_go_on(
        tmp_path, data_dir, capsys, monkeypatch):
    """A stack stopped in its second epoch resumes only with the members its checkpoint
    holds, and two FC2 members (15.5 MiB together) do not fit in the 13 MiB available now: its
    check refused it (ConfigError) in the sweep's process, so the sweep exited 2 at once, the
    other variant's cells never trained, with advice for a new run (fewer parameters). It
    fails alone, as memory that ran out (exit 4's word), and says what it needs, what there is
    and how to go on: where more memory is free, the same sweep continues it; moved away, the
    sweep trains its unfinished members anew in parts that fit. The other cells train (cut
    into single runs that fit), the sweep exits 1, and the stack's folder is left as it was."""
    from lotterynet.run_callbacks import CheckedCheckpointIO

    save = CheckedCheckpointIO.save_checkpoint

    def ctrl_c_in_epoch_2(self, checkpoint, path, storage_options=None):
        if checkpoint["epoch"] == 1:
            raise KeyboardInterrupt
        save(self, checkpoint, path, storage_options)

    out = tmp_path / "out"
    argv = [*STACKS, "--sweep-epochs", "3", "--data-dir", str(data_dir), "--sweep-out", str(out)]
    with monkeypatch.context() as stopping:
        stopping.setattr(CheckedCheckpointIO, "save_checkpoint", ctrl_c_in_epoch_2)
        assert main(argv) == 130
    stack = out / "stacks" / "subsetsum-identity-seed0"
    kept = {f: f.read_bytes() for f in stack.rglob("*") if f.is_file()}
    capsys.readouterr()
    monkeypatch.setattr("lotterynet.memory.available_memory", lambda: 13 * 2**20)
    monkeypatch.setattr("lotterynet.memory.cgroup_memory", lambda: None)
    assert main(argv) == 1
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert re.fullmatch(
        r"train\.py: error: stack subsetsum-identity-seed0 \(2 members\) needs at least 15\.5 "
        r"MiB of memory to train \(.*\) and this machine has 13\.0 MiB available; it resumes "
        r"only with the members its checkpoint holds: moved away \(out of "
        + re.escape(str(out / "stacks")) + r"\), it lets the sweep train its 2 unfinished "
        r"members anew in parts that fit, or run the same sweep again to continue from its "
        r"checkpoint where more memory is free", line), line
    assert captured.out.count(": out of memory |") == 2
    assert "sweep incomplete: 2 of 4 cells without results (1 failure)" in captured.out
    assert [(r["variant"], r["seeds"]) for r in rows(out)] == [("subsetsum/identity", "0")] * 2 \
        + [("wide", "1")] * 2
    cells = sorted(p.name for p in (out / "cells").iterdir())
    assert {f: f.read_bytes() for f in stack.rglob("*") if f.is_file()} == kept
    # moved away, as the line says, its unfinished members train anew in parts that fit (here
    # singly)
    stack.rename(tmp_path / "kept")
    sweep = Sweep(**json.loads((out / "sweep.json").read_text()))
    configs = cells_module.cell_configs(sweep, out)
    todo = [(name, prepared) for name, config in configs.items()
            if (prepared := cells_module.prepare_cell(config)) is not None]
    assert [name for name, _ in todo] == cells[:2]
    assert plan_module.plan_stacks(sweep, out, configs, todo)[:2] == ({}, todo)


@pytest.mark.parametrize("out", [".", "../mysweep", "sub/.."])
def test_the_wandb_group_of_a_sweep_is_its_folders_name_however_it_is_spelled(
        tmp_path, monkeypatch, out):
    """``--sweep-out .`` with ``--wandb`` (a sweep run from its own folder) was refused with
    'wandb_group is empty; leave it out for its default', a flag the user never gave: the
    group was the name of the path as spelled (``''``; ``'..'`` for ``sub/..``). It is the
    folder's own name."""
    (tmp_path / "mysweep").mkdir()
    monkeypatch.chdir(tmp_path / "mysweep")
    groups = []
    monkeypatch.setattr(sweep_module, "run_one_cell",
                        lambda sweep, *_: groups.append(sweep.base["wandb_group"]) or 0)
    assert main([*TINY, "--wandb", "--sweep-out", out, "--cell", "trained-e1-seed0"]) == 0
    assert groups == [f"mysweep-{digest(str(tmp_path.resolve() / 'mysweep'))}"]


def test_sweeps_in_folders_of_one_name_log_to_groups_of_their_own(tmp_path, monkeypatch):
    """``--sweep-out a/run1`` and ``--sweep-out b/run1`` logged their cells to one W&B group,
    the folders' name, and mixed their dashboards. A new sweep's group is its folder's name
    and 8 hex digits of its path, kept in the folder at its first run, with ``--wandb`` or
    not (a first run without it left the folder a sweep's, whose later ``--wandb`` runs took
    its bare name: 'run1' again): its later runs log to it, the folder moved too. A folder that
    a sweep ran in before groups were kept logs to its name, as its cells did;
    ``--wandb-group`` still chooses."""
    groups = []
    monkeypatch.setattr(sweep_module, "run", lambda config, job_type=None: groups.append(
        config.wandb_group) or {"test_acc": 0.5, "run_dir": config.out})

    def group(out: Path, *flags: str) -> str:
        assert main([*TINY, "--wandb", *flags, "--sweep-out", str(out),
                     "--cell", "trained-e1-seed0"]) == 0
        return groups[-1]

    a, b, moved, before = (tmp_path / "a" / "run1", tmp_path / "b" / "run1",
                           tmp_path / "c" / "run1", tmp_path / "d" / "run1")
    first = group(a)
    assert first == f"run1-{digest(str(a.resolve()))}" and group(b) != first
    assert (a / "wandb-group").read_text() == f"{first}\n"
    assert group(a) == first and group(a, "--wandb-group", "mine") == "mine"
    a.parent.rename(moved.parent)
    assert group(moved) == first
    (before / "cells").mkdir(parents=True)
    assert group(before) == "run1"
    quiet = [tmp_path / "e" / "run1", tmp_path / "f" / "run1"]
    for folder in quiet:  # a first run without --wandb, its cell's folder left as a run leaves it
        assert main([*TINY, "--sweep-out", str(folder), "--cell", "trained-e1-seed0"]) == 0
        (folder / "cells" / "trained-e1-seed0").mkdir(parents=True, exist_ok=True)
    assert [group(folder) for folder in quiet] == [
        f"run1-{digest(str(folder.resolve()))}" for folder in quiet]


@pytest.mark.parametrize("how", [["--wandb"], ["--wandb-sweep", "w.yaml"]])
def test_a_default_sweep_folder_too_long_for_a_wandb_group_is_named_by_its_sweep_file(
        tmp_path, monkeypatch, capsys, how):
    """The default sweep folder (no --sweep-out), whose name, the W&B group, is too long for
    W&B, was refused as ``--sweep-out 'runs/sweep-…'``, a flag the user never gave. It names
    the folder and the sweep file its name comes from, and the flags that choose another."""
    monkeypatch.chdir(tmp_path)
    sweep_file = f"{'s' * 120}.yaml"
    (tmp_path / sweep_file).write_text(yaml.safe_dump({
        "base": {"arch": "fc2"}, "variants": ["dense"], "sparsities": [0.5], "epochs": [1]}))
    assert main(["--sweep", sweep_file, *how]) == 2
    folder = f"runs/sweep-fc2-{'s' * 120}"
    suffix = f"-{digest(str(tmp_path.resolve() / folder))}"
    assert capsys.readouterr().err.strip() == (
        f"train.py: error: the sweep's folder {folder!r} (its name from the sweep file "
        f"{sweep_file!r}): its name, the sweep's W&B group with {suffix!r} after it, has 139 "
        f"characters; W&B takes a group name of at most 128 (choose --sweep-out, or "
        f"--wandb-group)")
    assert sorted(p.name for p in tmp_path.iterdir()) == [sweep_file]  # nothing written


def test_a_folder_where_a_cells_results_go_is_refused_before_the_cost_line(
        tmp_path, monkeypatch, capsys):
    """A folder where an unfinished cell's results.json goes was refused after the sweep had
    printed its CPU cost: two lines for one refusal (the cost line says the sweep starts). It
    is refused before that line, as every other bad input is."""
    monkeypatch.setattr(sweep_module, "check_cpu_cost", lambda *a, **k: "sweep on the CPU: ...")
    monkeypatch.setattr(sweep_module, "check_data", lambda sweep: None)
    monkeypatch.setattr(sweep_module, "check_buildable", lambda sweep: None)
    (tmp_path / "sweep" / "cells" / "wide-s0.5-e1-seed0" / "results.json").mkdir(parents=True)
    assert main([*TINY, "--sweep-out", str(tmp_path / "sweep")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "wide-s0.5-e1-seed0/results.json" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "sweep" / "sweep.json").exists()


@pytest.mark.parametrize("first", [signal.SIGTERM, signal.SIGINT])
def test_a_second_sigterm_while_a_sweeps_jobs_stop_is_ignored(tmp_path, monkeypatch, first):
    """SIGTERM (or Ctrl-C) stops a sweep's jobs and waits for them to end; a SIGTERM during that
    wait (a scheduler's, sent twice) found the handler from before the sweep put back already,
    or after a Ctrl-C the sweep's own: it raised there, and its line ('stopped by SIGTERM')
    replaced the sweep's, which says how it stopped and how to go on. It is ignored: the
    sweep's line, once the jobs ended."""
    import threading

    from lotterynet.errors import Interrupted

    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(1), sys.exit(143)))\n"
             "signal.signal(signal.SIGINT, signal.getsignal(signal.SIGTERM))\n"
             "print('up', flush=True)\n"
             "time.sleep(30)\n")

    def start(job, device, workers, log):
        return subprocess.Popen([sys.executable, "-c", child], stdout=log)

    def second(signum, frame):
        raise RuntimeError("the handler from before the sweep")

    monkeypatch.setattr(jobs_module, "start_job", start)
    jobs = [jobs_module.Job(f"stack {i}", [], tmp_path / f"{i}.log", [f"c{i}"]) for i in (1, 2)]

    def signal_twice():
        while not all(job.log.is_file() and "up" in job.log.read_text() for job in jobs):
            time.sleep(0.05)
        os.kill(os.getpid(), first)
        time.sleep(0.4)  # (the jobs take a second to stop)
        os.kill(os.getpid(), signal.SIGTERM)

    ended = []
    previous = signal.signal(signal.SIGTERM, second)
    signal_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=signal_twice, daemon=True).start()
        with pytest.raises(Interrupted) as err:
            jobs_module.run_jobs(jobs, [None, None], tmp_path / "sweep",
                                  lambda job, code: ended.append(code))
        assert signal.getsignal(signal.SIGTERM) is second
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal_int)
    said = "SIGTERM" if first == signal.SIGTERM else "Ctrl-C (SIGINT)"
    assert err.value.exit_code == 128 + first and str(err.value).startswith(
        f"sweep {tmp_path / 'sweep'} stopped by {said}; run the same command again")


def test_a_ctrl_c_stops_a_sweeps_jobs_on_windows_in_the_sweeps_line(tmp_path, monkeypatch):
    """On Windows a Ctrl-C reaches every process of the console, the sweep's jobs too (a DDP
    cell's there); the sweep sent them SIGINT besides, which Popen sends no process there: its
    ValueError ('Unsupported signal: 2') replaced the sweep's line. Now it sends nothing more
    and waits for them: its line, with how each job goes on."""
    from lotterynet.errors import Interrupted

    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGINT, lambda *a: sys.exit(130))\n"
             "print('up', flush=True)\n"
             "time.sleep(30)\n")
    started = []

    def start(job, device, workers, log):
        started.append(subprocess.Popen([sys.executable, "-c", child], stdout=log))
        return started[-1]

    def as_on_windows(self, sig):  # (subprocess's own Popen.send_signal there)
        if sig != signal.SIGTERM:
            raise ValueError(f"Unsupported signal: {sig}")
        self.terminate()

    monkeypatch.setattr(jobs_module, "start_job", start)
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(subprocess.Popen, "send_signal", as_on_windows)
    jobs = [jobs_module.Job(f"cell c{i}", [], tmp_path / f"{i}.log", [f"c{i}"]) for i in (1, 2)]

    def console_ctrl_c():
        while not all(job.log.is_file() and "up" in job.log.read_text() for job in jobs):
            time.sleep(0.05)
        for pid in [*(proc.pid for proc in started), os.getpid()]:
            os.kill(pid, signal.SIGINT)

    ended = []
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=console_ctrl_c, daemon=True).start()
        with pytest.raises(Interrupted) as err:
            jobs_module.run_jobs(jobs, [None, None], tmp_path / "sweep",
                                  lambda job, code: ended.append(code))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert [proc.returncode for proc in started] == [130, 130]
    assert (err.value.exit_code, str(err.value)) == (130, (
        f"sweep {tmp_path / 'sweep'} stopped by Ctrl-C (SIGINT); run the same command again "
        f"to continue (finished cells are kept): cell c1 starts over (it wrote no checkpoint), "
        f"cell c2 starts over (it wrote no checkpoint)"))


def test_a_stack_resumed_and_stopped_before_its_first_new_epoch_names_its_checkpoints_epoch(
        tmp_path, data_dir, capsys, monkeypatch):
    """A stack resumed and stopped (Ctrl-C) before its fit loaded its checkpoint (here: as it
    checks it) said to continue from it without the epoch it holds, which its line names once
    its fit wrote or loaded it: the epoch it was resumed from, read off the file."""
    from lotterynet.run_callbacks import CheckedCheckpointIO

    save = CheckedCheckpointIO.save_checkpoint

    def ctrl_c_in_epoch_2(self, checkpoint, path, storage_options=None):
        if checkpoint["epoch"] == 1:
            raise KeyboardInterrupt
        save(self, checkpoint, path, storage_options)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    argv = [*STACKS, "--sweep-variants", "subsetsum:identity", "--sweep-epochs", "3",
            "--data-dir", str(data_dir), "--sweep-out", str(tmp_path / "out")]
    stopped = ("train.py: error: stopped by Ctrl-C (SIGINT); stack subsetsum-identity-seed0: "
               "run the same sweep again to continue from its checkpoint (written at the end "
               "of epoch 1)")
    with monkeypatch.context() as stopping:
        stopping.setattr(CheckedCheckpointIO, "save_checkpoint", ctrl_c_in_epoch_2)
        assert main(argv) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == stopped
    monkeypatch.setattr("lotterynet.stack.check_resumable", ctrl_c)
    assert main(argv) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == stopped


def stop_the_sweeps_jobs(tmp_path, monkeypatch, jobs, start_job, then=None):
    """Run ``jobs`` through ``jobs_module.run_jobs`` as ``start_job`` starts them, and stop
    it once each job's log says ``up``, with ``then``: SIGTERM (None: the jobs stop it
    themselves); the :class:`Interrupted` that it raised."""
    import threading

    from lotterynet.errors import Interrupted

    def up_then_stopped():
        while not all(job.log.is_file() and "up" in job.log.read_text() for job in jobs):
            time.sleep(0.05)
        os.kill(os.getpid(), then)

    monkeypatch.setattr(jobs_module, "start_job", start_job)
    previous = signal.getsignal(signal.SIGTERM)
    signal_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if then is not None:
            threading.Thread(target=up_then_stopped, daemon=True).start()
        with pytest.raises(Interrupted) as err:
            jobs_module.run_jobs(jobs, [None] * len(jobs), tmp_path / "sweep",
                                  lambda job, code: None)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal_int)
    return err.value


#: A job's child in the tests that stop them: says it is up, then waits to be stopped.
WAITING_CHILD = "import time\nprint('up', flush=True)\ntime.sleep(30)\n"


def test_a_sweep_that_stops_its_jobs_names_the_epoch_each_ones_checkpoint_holds(
        tmp_path, monkeypatch):
    """A sweep whose jobs (``--jobs-per-device``) it stopped said only to run it again (each
    stopped stack's own ``train.log`` named the epoch its checkpoint holds): its line names
    each stopped job's, as a stack or cell stopped in the sweep's process does ('written at
    the end of epoch N'), read off the checkpoint once the job ended, or that it starts
    over."""
    stack, cell = tmp_path / "stacks" / "s-seed0", tmp_path / "cells" / "c-seed0"
    atomic_torch_save({"epoch": 2}, stack / "checkpoints" / "last.ckpt")  # (0-based: epoch 3)
    # a stack stopped as it saved its last checkpoint, its members' results written, said it
    # resumes from that checkpoint: run again it trains nothing
    done, members = tmp_path / "stacks" / "d-seed0", [tmp_path / "cells" / m for m in "de"]
    atomic_torch_save({"epoch": 0}, done / "checkpoints" / "last.ckpt")
    for member in members:
        member.mkdir(parents=True)
        (member / "results.json").write_text("{}")
    jobs = [jobs_module.Job("stack s-seed0", [], stack / "train.log", ["a", "b"],
                            cell_dirs=[tmp_path / "cells" / m for m in "ab"]),
            jobs_module.Job("cell c-seed0", [], cell / "train.log", ["c-seed0"],
                            cell_dirs=[cell]),
            jobs_module.Job("stack d-seed0", [], done / "train.log", ["d", "e"],
                            cell_dirs=members)]
    stopped = stop_the_sweeps_jobs(tmp_path, monkeypatch, jobs, lambda job, device, workers,
                                   log: subprocess.Popen([sys.executable, "-c", WAITING_CHILD],
                                                         stdout=log), signal.SIGTERM)
    assert stopped.exit_code == 143
    assert str(stopped) == (
        f"sweep {tmp_path / 'sweep'} stopped by SIGTERM; run the same command again to "
        f"continue (finished cells are kept): cell c-seed0 starts over (it wrote no "
        f"checkpoint), stack d-seed0 has finished (its results are written): it trains "
        f"nothing, stack s-seed0 resumes from its checkpoint (written at the end of epoch 3)")


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_sweep_stops_its_jobs_by_the_signal_it_got(tmp_path, monkeypatch, sent):
    """One Ctrl-C to a sweep with jobs (``--jobs-per-device``): the terminal sends SIGINT to
    the jobs too, and the sweep sent them SIGTERM; the two raced, and one job's line said it
    was stopped by SIGINT, another's by SIGTERM. The sweep sends its jobs the signal it got:
    every job has the same account of one Ctrl-C, or of one SIGTERM."""
    child = ("import signal, sys, time\n"
             "def stop(signum, frame):\n"
             "    print(signal.Signals(signum).name, flush=True)\n"
             "    sys.exit(128 + signum)\n"
             "signal.signal(signal.SIGINT, stop)\n"
             "signal.signal(signal.SIGTERM, stop)\n"
             "print('up', flush=True)\n"
             "time.sleep(30)\n")
    jobs = [jobs_module.Job(f"cell c{i}-seed0", [], tmp_path / f"c{i}" / "train.log",
                             [f"c{i}-seed0"]) for i in (1, 2)]
    stopped = stop_the_sweeps_jobs(tmp_path, monkeypatch, jobs, lambda job, device, workers,
                                   log: subprocess.Popen([sys.executable, "-c", child],
                                                         stdout=log), sent)
    assert stopped.exit_code == 128 + sent
    assert [job.log.read_text().split() for job in jobs] == [["up", sent.name]] * 2


def test_a_queued_job_is_said_as_it_starts_not_before(tmp_path, monkeypatch, capsys):
    """With more jobs than slots (``--jobs-per-device``) the sweep said of every job up front
    where its output goes ('cell c2-seed0 (subprocess, output in .../train.log)'), a queued
    one's log not there yet: it says so of each as it starts, a stack with its members."""
    jobs = [jobs_module.Job("stack s-seed0", [], tmp_path / "s" / "train.log", ["a", "b"],
                             said="stack s-seed0: 2 members, budgets [1]"),
            jobs_module.Job("cell c-seed0", [], tmp_path / "c" / "train.log", ["c-seed0"])]
    said_before = []  # (the output so far as each job starts)

    class Ended:  # (a job's process, ended at once)
        def wait(self) -> int:
            return 0

    def start(job, device, workers, log):
        said_before.append(capsys.readouterr().out)
        return Ended()

    monkeypatch.setattr(jobs_module, "start_job", start)
    jobs_module.run_jobs(jobs, [None], tmp_path, lambda job, code: None)
    assert [*said_before, capsys.readouterr().out] == [
        "", f"stack s-seed0: 2 members, budgets [1] (subprocess, output in {jobs[0].log})\n",
        f"cell c-seed0 (subprocess, output in {jobs[1].log})\n"]


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_job_started_as_the_sweep_stops_is_stopped_too(tmp_path, monkeypatch, sent):
    """Ctrl-C (or SIGTERM) while a sweep's job was starting: the sweep ignored SIGTERM
    (SIG_IGN) while it stopped its jobs, and the job started in that moment inherited it
    through its exec, so the SIGTERM that stops it was lost: it ran to its end, the sweep
    waiting for it. A job started then has SIGTERM's default action, and stops."""
    job = jobs_module.Job("stack s-seed0", [], tmp_path / "s" / "train.log", ["a"])

    def ctrl_c_as_it_starts(job, device, workers, log):
        sweep_handler = signal.getsignal(signal.SIGTERM)
        os.kill(os.getpid(), sent)  # (the sweep's thread stops the jobs, waiting
        while signal.getsignal(signal.SIGTERM) is sweep_handler:  # for this one to start)
            time.sleep(0.01)
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])

    stopped = stop_the_sweeps_jobs(tmp_path, monkeypatch, [job], ctrl_c_as_it_starts)
    # (it ran its 5 s and ended with exit 0: the sweep named no job it stopped)
    assert stopped.exit_code == 128 + sent and str(stopped).endswith(
        "(finished cells are kept): stack s-seed0 starts over (it wrote no checkpoint)")


def test_ctrl_c_while_a_sweep_writes_its_jobs_says_how_to_go_on(tmp_path, data_dir, capsys,
                                                               monkeypatch):
    """Ctrl-C while a sweep with job slots wrote its stacks' files, before it started their
    jobs, said only 'stopped by Ctrl-C (SIGINT)': it says to run it again, as once they
    run."""
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs_module, "write_stack_file", ctrl_c)
    out = tmp_path / "pool"
    assert main([*STACKS, "--data-dir", str(data_dir), "--sweep-out", str(out),
                 "--jobs-per-device", "2"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        f"train.py: error: sweep {out} stopped by Ctrl-C (SIGINT); run the same command again "
        f"to continue (finished cells are kept, stopped ones resume from their checkpoints)"]


@pytest.mark.parametrize("where, sent, ran_before", [
    ("check_buildable", signal.SIGINT, False), ("prepare_cell", signal.SIGTERM, False),
    ("check_cpu_cost", signal.SIGTERM, True), ("plan_stacks", signal.SIGINT, True),
    ("aggregate", signal.SIGTERM, False)])
def test_a_sweep_stopped_while_it_plans_says_it_started_no_cell_and_how_to_go_on(
        tmp_path, data_dir, capsys, monkeypatch, where, sent, ran_before):
    """Ctrl-C or SIGTERM while a sweep checked and planned its cells (its models built, its
    stacks planned: seconds for a big grid), before it started one, said only 'stopped by
    Ctrl-C (SIGINT)': it says it started no cell and that the same command starts it (or
    continues a sweep that ran before), which it does; stopped after its cells ran (its table
    being written), to run it again to continue."""
    called = getattr(sweep_module, where)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), sent)
        return called(*args, **kwargs)

    out = tmp_path / "sweep"
    if ran_before:
        (out / "cells").mkdir(parents=True)
    argv = [*ONE_CELL, "--trainer.limit_test_batches", "1", "--data-dir", str(data_dir),
            "--sweep-out", str(out)]
    previous = signal.getsignal(signal.SIGTERM)
    signal_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with monkeypatch.context() as stopping:
            stopping.setattr(sweep_module, where, signalled)
            assert main(argv) == 128 + sent
    finally:  # (train.py's handlers stay on its way out)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal_int)
    said = "SIGTERM" if sent == signal.SIGTERM else "Ctrl-C (SIGINT)"
    go_on = ("run the same command again to continue (finished cells are kept, stopped ones "
             "resume from their checkpoints)")
    then = go_on if where == "aggregate" else "it had started no cell (it was checking and " \
        "planning them): " + (go_on if ran_before else "run the same command again to start it")
    assert capsys.readouterr().err.strip().splitlines() == [
        f"train.py: error: sweep {out} stopped by {said}; {then}"]
    if where != "aggregate":
        assert not list(out.glob("cells/*"))  # (no cell started)
    if where in ("prepare_cell", "aggregate"):  # (what the stop left: its lock, sweep.json)
        done = int(where == "aggregate")
        assert main(argv) == 0 and \
            f"1 cell, {done} already done, {1 - done} to run" in capsys.readouterr().out
        assert (out / "sweep.csv").is_file()



@pytest.mark.parametrize("file", ["sweep.json", "sweep.md"])
def test_a_sweep_that_cannot_write_its_own_file_says_how_it_goes_on_as_its_stop_does(
        tmp_path, data_dir, capsys, monkeypatch, file):
    """A sweep whose disk filled as it wrote a file of its own (its ``sweep.json`` as it
    planned its cells, its table once they ran) ended with a line naming the file alone: it
    says how it goes on as its Ctrl-C there does."""
    write_text = Path.write_text

    def no_space(self, *args, **kwargs):
        if self.name.startswith(f".{file}."):  # (its temporary file)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", no_space)
    out = tmp_path / "sweep"
    assert main([*ONE_CELL, "--data-dir", str(data_dir), "--sweep-out", str(out)]) == 1
    then = "run the same command again to continue (finished cells are kept, stopped ones " \
        "resume from their checkpoints)" if file == "sweep.md" else \
        "it had started no cell (it was checking and planning them): run the same command " \
        "again to start it"
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"train.py: error: disk full while writing {str(out / file)!r}; the previous {file} "
        f"(if any) is kept unchanged; {then}")


@pytest.mark.parametrize("cell, where", [(False, "check_sweep_dir"), (True, "check_sweep_dir"),
                                         (True, "keep_wandb_group")],
                         ids=["sweep", "cell first checks", "cell"])
def test_a_sweep_stopped_before_it_wrote_anything_says_it_had_not_started(
        tmp_path, data_dir, capsys, monkeypatch, cell, where):
    """A sweep or a --cell run stopped by Ctrl-C in its first checks (its folder checked:
    milliseconds, nothing written) said 'it had begun: what it wrote is kept': it says it had
    not started and wrote nothing, which is so. A --cell run stopped where it writes outside
    the cell's run (the sweep's W&B group kept) says it had begun."""
    from lotterynet.cli import BEGUN, NOT_STARTED

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_module, where, ctrl_c)
    out = tmp_path / "sweep"
    begun = where == "keep_wandb_group"
    assert main([*ONE_CELL, "--data-dir", str(data_dir), "--sweep-out", str(out),
                 *(["--cell", "dense-s0.5-e1-seed0"] if cell else [])]) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        f"train.py: error: stopped by Ctrl-C (SIGINT); {BEGUN if begun else NOT_STARTED}"]
    assert out.exists() == begun

def test_a_negative_zero_sparsity_is_zero():
    """``-0`` (a sweep's sparsity, a run's) is the run that 0 is: its cell was named
    ``…-s-0-…`` beside 0's ``…-s0-…``, and a run stored ``sparsity: -0.0``."""
    args = build_parser().parse_args(["--arch", "fc2", "--sweep-variants", "dense",
                                      "--sweep-sparsities=-0", "--sweep-epochs", "1",
                                      "--no-baseline"])
    (label, values), = load_sweep(args, given_values(args)).cells()
    assert cell_name(label, values) == "dense-s0-e1-seed0"
    assert str(make_config({"sparsity": -0.0}).sparsity) == "0.0"


def test_counts_of_thousands_are_written_with_separators():
    """A sweep of thousands of cells said 'checking the 4,000 cells' and then '(4000 cells,
    ...)' in its cost line and 'sweep big: 10000 cells': every count that plural() writes (cells,
    members, epochs ...) has its thousands separators (QA)."""
    from lotterynet.errors import plural

    assert (plural(4000, "cell"), plural(1, "member"), plural(12, "epoch")) == (
        "4,000 cells", "1 member", "12 epochs")
