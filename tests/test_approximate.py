import csv
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import REPO, terabyte_file
from lotterynet import approximate, approximate_sweeps, approximate_table, theory
from lotterynet.approximate import main, measure, predict
from lotterynet.approximate_sweeps import FC2_SWEEPS, LENET5_CONV_PART, LENET5_SWEEPS
from lotterynet.approximate_table import curve, curve_markdown, smallest_working, theory_sizes
from lotterynet.data import load_split
from lotterynet.errors import CheckpointError, ConfigError
from lotterynet.models import build_model
from lotterynet.targets import RECIPES, load_target, trained_target


def test_dacunha_lenet5_matches_the_paper():
    """Biases, 7 × 7 × 16 conv output, 2,572 conv parameters (da Cunha et al., Sec. 3)."""
    model = build_model("lenet5_dacunha", trained=True, seed=0)
    conv = model[:LENET5_CONV_PART]
    assert conv(torch.zeros(2, 1, 28, 28)).shape == (2, 16, 7, 7)
    assert sum(p.numel() for p in conv.parameters()) == 2572
    assert all(m.bias is not None for m in model if isinstance(m, nn.Conv2d | nn.Linear))
    with pytest.raises(ValueError, match="trained=True"):
        build_model("lenet5_dacunha", trained=False)


@pytest.mark.parametrize("name", ["pensia_fc2", "dacunha_lenet5_mnist"])
def test_targets_are_trained_through_the_training_stack(name, tmp_path, data_dir):
    out = tmp_path / name
    model, info = trained_target(name, data_dir=data_dir, epochs=1, limit_train=256, out=out)
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["train_weights"] and results["config"]["val_size"] == 0
    assert info["optimizer"]["optimizer"] == ("sgd" if name == "pensia_fc2" else "adam")
    # the loaded checkpoint is the network the stack tested
    test_x, test_y = load_split("mnist", data_dir, train=False)
    acc = (predict(model, test_x).argmax(1) == test_y).double().mean().item()
    assert acc == pytest.approx(results["test_acc"], abs=1e-4)
    # a second call loads the cached run instead of training again
    stamp = (out / "results.json").stat().st_mtime_ns
    again, _ = trained_target(name, data_dir=data_dir, epochs=1, limit_train=256, out=out)
    assert (out / "results.json").stat().st_mtime_ns == stamp
    for a, b in zip(model.state_dict().values(), load_target(out)[0].state_dict().values()):
        assert torch.equal(a, b)


def test_a_killed_target_training_continues_and_a_stray_folder_is_one_line(tmp_path, data_dir,
                                                                           capsys):
    out = tmp_path / "pensia_fc2"
    recipe = dict(data_dir=data_dir, epochs=2, limit_train=256, out=out)
    with pytest.raises(ConfigError, match="stopped"):  # killed after its first epoch
        trained_target("pensia_fc2", stop_after=1, **recipe)
    assert not (out / "results.json").exists()
    capsys.readouterr()
    _, info = trained_target("pensia_fc2", **recipe)  # continues, it does not start again
    assert [line.split(" |")[0] for line in capsys.readouterr().out.splitlines()
            if line.startswith("epoch ")] == ["epoch 2/2"]
    assert info["epochs"] == 2
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows if r["train/acc"]] == ["0", "1"]  # history kept, no restart
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"unfinished run with no checkpoint; delete it") as err:
        trained_target("pensia_fc2", **{**recipe, "out": stray})
    assert "--overwrite" not in str(err.value) and (stray / "notes.txt").read_text() == "mine"
    # stopped before its first checkpoint: what the run had written, and it starts again
    dead = tmp_path / "dead"
    dead.mkdir()
    (dead / "metrics.csv").write_text("epoch,step\n")
    (dead / "checkpoints").mkdir()
    assert trained_target("pensia_fc2", **{**recipe, "out": dead})[1]["epochs"] == 2


def test_a_target_begun_from_resume_and_stopped_runs_again(tmp_path, data_dir, capsys):
    """``targets NAME --epochs E --resume CKPT`` stopped before its end: the same command again
    continues it (was: refused, "--out holds another run", and targets has no --out)."""
    from lotterynet.run import run
    from lotterynet.targets import target_config

    name, small = "dacunha_lenet5_mnist", dict(data_dir=data_dir, limit_train=256)
    longer = tmp_path / "longer"  # a 4-epoch run stopped after its first epoch
    run(target_config(name, epochs=4, stop_after=1, out=longer, **small))
    recipe = dict(epochs=3, resume=str(longer / "checkpoints" / "last.ckpt"), **small)
    for stopped in ({"metrics.csv": "epoch,step\n"}, None):
        out = tmp_path / "target"
        if stopped:  # before its first checkpoint
            out.mkdir()
            for file, text in stopped.items():
                (out / file).write_text(text)
        else:  # after one: its own checkpoint, at epoch 2 of 3
            with pytest.raises(ConfigError, match="stopped"):
                trained_target(name, out=out, stop_after=2, **recipe)
        capsys.readouterr()
        _, info = trained_target(name, out=out, **recipe)
        assert info["epochs"] == 3 and (out / "results.json").is_file()
        assert [line.split(" |")[0] for line in capsys.readouterr().out.splitlines()
                if line.startswith("epoch ")] == (["epoch 3/3"] if stopped is None else
                                                  ["epoch 2/3", "epoch 3/3"])
        shutil.rmtree(out)


def test_measure_on_a_small_network_reports_the_built_model():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 4, 4, dtype=torch.float64)
    target = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                           nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                           nn.Flatten(), nn.Linear(3, 2)).double()
    y = predict(target, x).argmax(1)
    part, head = target[:LENET5_CONV_PART], target[LENET5_CONV_PART:]
    reference = predict(part, x)
    sweep = next(s for s in LENET5_SWEEPS if s.name == "dacunha")
    low = measure(sweep, 2, 0, part, head, x, y, reference)
    high = measure(sweep, 14, 0, part, head, x, y, reference)
    assert high["test_accuracy"] == 1.0  # the target's own predictions, recovered
    assert high["weight_error_max"] < 1e-2 < low["weight_error_max"]
    assert high["output_relative_error_max"] < low["output_relative_error_max"]
    assert high["coefficient_ranges"] == [[-1.0, 1.0]] * 2  # da Cunha's U[-1, 1]


def test_a_rows_machine_without_a_load_average_records_none(monkeypatch):
    """Windows has no ``os.getloadavg``: every measured row's record of its machine raised
    AttributeError there, after the row had been measured."""
    monkeypatch.delattr(os, "getloadavg")
    assert approximate.machine() == {"cpu": approximate.cpu_name(),
                                     "threads": torch.get_num_threads(),
                                     "torch": torch.__version__, "load_average_1min": None}


def test_curves_and_the_width_table(monkeypatch):
    rows = [{"size": n, "seed": s, "test_accuracy": acc, "hidden_layer1": 10 * n,
             "params": {"kept": n}} for n, accs in [(2, (0.5, 0.96, 0.2)), (4, (0.97, 0.99, 0.9)),
                                                    (8, (0.99, 0.99, 0.99))]
            for s, acc in enumerate(accs)]
    assert [(c["size"], c["median"], c["min"], c["max"]) for c in curve(rows, "test_accuracy")] \
        == [(2, 0.5, 0.2, 0.96), (4, 0.97, 0.9, 0.99), (8, 0.99, 0.99, 0.99)]
    result = {"rows": rows, "target": {"test_accuracy": 0.974}}
    assert smallest_working(result)["size"] == 4  # median 0.97 >= 0.974 - 0.005
    result["target"]["test_accuracy"] = 0.9951
    assert smallest_working(result) is None
    # Pensia's Theorem 1 at ε = 0.01 for FC2: 3⌈log2(784·500·2/0.01)⌉ = 81 per input
    assert theory_sizes("fc2", "pensia", result) == ("81", f"{81 * 784:,}")
    assert theory_sizes("fc2", "dacunha", result) == ("81", f"{81 * 500:,}")
    # Orseau's Thm. 3, Step 2: m = 8⌈k′ ln(k′/δ_w)⌉, δ_w = δ/(2N*) (Thm. 30's Step 3 union
    # bound over FC2's 397,000 weights; with δ in its place the table said 2.87e+03)
    k = theory.orseau_k((784, 500, 10), 0.01)
    asked = theory_sizes("fc2", "orseau", result)[0]
    assert asked == "7,536"  # exact, as README quotes it (it printed 7.54e+03)
    assert asked == f"{8 * math.ceil(k * math.log(k * 2 * 397_000 / 0.01)):,}"
    assert asked != f"{8 * math.ceil(k * math.log(k / 0.01)):,}"  # δ_w = δ: 2,872
    # e-notation only where astronomically large: Malach's m per weight and hidden width
    assert theory_sizes("fc2", "malach", result) == ("2.24e+16", "8.8e+21")
    # Pensia's and da Cunha's n are theory.pensia's / theory.dacunha's, with their min{ε, δ}
    # (it was recomputed with ε): at δ = 0.001, 3⌈log2(784·500·2/0.001)⌉ = 3 · 30 = 90 per
    # input; LeNet5's layer 2 3⌈log2(6·16·25·2/0.001)⌉ = 69, layer 1 57 per output, · 6
    monkeypatch.setattr(approximate_table, "DELTA", 0.001)
    assert theory_sizes("fc2", "pensia", result) == ("90", f"{90 * 784:,}") == (
        "90", f"{theory.pensia((784, 500, 10), 0.01, 0.001)[0].hidden:,}")
    assert theory_sizes("lenet5", "dacunha", result) == ("69", "342")


@pytest.mark.parametrize("seeds", [1, 2])
def test_a_curve_says_how_many_seeds_it_is_over(seeds):
    """'Median over 1 seed' ('1 seeds' before), '2 seeds'."""
    rows = [{"size": 2, "seed": s, "test_accuracy": 0.9, "hidden_layer1": 20, "params": {
        "kept": 2}, "weight_error_max": 0.1, "weight_error_median": 0.01,
        "output_relative_error_max": 0.2} for s in range(seeds)]
    result = {"rows": rows, "net": "fc2", "dataset": "mnist", "construction": "pensia",
              "paper": "Pensia et al.", "size": "n", "target": {
                  "test_accuracy": 0.98, "paper_test_accuracy": 0.97, "epochs": 10,
                  "paper_epochs": 10}}
    assert f"Median over {seeds} seed{'s' * (seeds > 1)}, [min–max]." in curve_markdown(result)


def test_the_approximation_figure_leaves_the_callers_matplotlib_backend_as_it_was(
        tmp_path, pdf_backend):
    """approximate_table.plot called ``matplotlib.use("Agg")``: called in-process (a
    notebook), it switched its caller's backend for the whole process. It draws on a Figure
    of its own."""
    import matplotlib

    shutil.copy(REPO / "results" / "approximation_fc2_pensia.json", tmp_path)
    approximate_table.plot(approximate_table.load_results(tmp_path), tmp_path / "fig.png", "t")
    assert matplotlib.get_backend() == pdf_backend
    assert (tmp_path / "fig.png").read_bytes().startswith(b"\x89PNG")


def test_the_table_states_natales_kept_basis_and_orseaus_epsilon(tmp_path, capsys):
    """Natale's kept params count v alone (u frozen), the others' u and v: the curve says so
    (it made Natale look ~2× cheaper); Orseau's theorem m is at ε_w ≈ 8.4e-8, the built
    network's at ε_w = 0.01: the table says so (it named neither)."""
    for name in ("natale", "pensia"):
        shutil.copy(REPO / "results" / f"approximation_fc2_{name}.json", tmp_path)
    main(["table", "--out", str(tmp_path)])
    text = (tmp_path / "approximation_table.md").read_text()
    assert capsys.readouterr().out == text + "\n"
    natale, pensia = text.split("\n### ")[1:]
    kept = approximate_table.NATALE_KEPT
    assert kept in natale and kept not in pensia
    assert "Natale's `fixedsize` masks only the coefficient layer v" in kept
    assert ("per-weight ε_w = ε / (e ℓ n_max^{3/2}) (theory.orseau_k, k′ = log_{3/2}(3/ε_w)) "
            "is 8.4e-08 for FC2; the network built here uses ε_w = 0.01 per weight") in text


def test_theorem_widths_of_lenet5_take_layer_1s_own_n():
    """Layer 1's hidden width comes from layer 1's n, not the largest n over the layers (it
    printed 1,425 / 342 / 47,550 / 68,550). LeNet5's conv layers (c_in d², c_out) = (25, 6),
    (150, 16); ℓ = 2, ε = 0.01."""
    rows = [{"size": k, "seed": 0, "test_accuracy": acc, "hidden_layer1": 1, "params": {"kept": 1}}
            for k, acc in [(1, 0.5), (2, 0.99)]]
    result = {"rows": rows, "target": {"test_accuracy": 0.99}}  # natale_k works at k = 2 of 16
    # Pensia Thm. 1, n = 3⌈log2(a b ℓ / ε)⌉: layer 1 3⌈log2(30,000)⌉ = 3 · 15 = 45,
    # layer 2 3⌈log2(480,000)⌉ = 3 · 19 = 57; hidden 25 · 45
    assert theory_sizes("lenet5", "pensia", result) == ("57", "1,125")
    assert theory_sizes("lenet5", "symmetric", result) == ("57", "1,125")
    # da Cunha Thm. 1: the same n′ per output channel, hidden 6 · 45
    assert theory_sizes("lenet5", "dacunha", result) == ("57", "270")
    # Natale Eq. (28) at γ′ = 1/4, H2(1/4) = 0.81128: layer 1 n* = 667 (log2²(2·2·25·6·¼·667 /
    # 0.01) / H2 = 23.2542² / 0.81128 = 666.55), layer 2 n* = 951 (27.7660² / 0.81128 = 950.29);
    # hidden 2 · 25 · 667
    assert theory_sizes("lenet5", "natale", result) == ("951 (γ′ = 0.25)", "33,350")
    # at γ′ = 2/16, H2(1/8) = 0.54356: layer 1 n* = 954 (log2²(2·2·25·6·⅛·954 / 0.01) / H2
    # = 22.7705² / 0.54356 = 953.88), layer 2 1,371 (27.2937² / 0.54356 = 1,370.48);
    # hidden 2 · 25 · 954
    assert theory_sizes("lenet5", "natale_k", result) == ("1,371 (γ′ = 0.125)", "47,700")
    # FC2's largest n is layer 1's: 2 · 784 · 1,585 (Eq. (28): 1,585 for (784, 500), 1,033 for
    # (500, 10) at γ′ = 1/4)
    assert theory_sizes("fc2", "natale", result) == ("1,585 (γ′ = 0.25)", "2,485,280")


def test_paper_defaults_of_the_coefficient_range():
    ranges = {s.name: s.build(5).keywords["coefficients"] for s in FC2_SWEEPS
              if s.name in ("pensia", "dacunha", "symmetric", "natale")}
    assert ranges == {"pensia": "layer", "dacunha": "unit", "symmetric": "symmetric",
                      "natale": "layer"}
    lenet = {s.name: s.build(5).keywords["coefficients"] for s in LENET5_SWEEPS}
    assert lenet["natale"] == lenet["natale_k"] == lenet["dacunha"] == "unit"
    offset = approximate_sweeps.DATASET_SEED_OFFSET
    assert offset["mnist"] != offset["fashion-mnist"]  # independent draws per data set


def test_cli_help_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "fc2" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["fc2", "--only", "gurobi", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "valid choices: pensia" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["table", "--out", str(tmp_path)])
    assert "run fc2 / lenet5 first" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fc2", "--seeds", "0"])
    assert "--seeds" in capsys.readouterr().err


def test_rows_of_a_one_epoch_target_are_refused_in_the_singular(tmp_path, capsys, monkeypatch):
    """The refusal said "trained 1 epochs"."""
    monkeypatch.setattr(approximate, "trained_target",
                        lambda *a, **k: pytest.fail("trained before checking the stored rows"))
    path = tmp_path / "approximation_lenet5_mnist_pensia.json"
    path.write_text(json.dumps({
        "construction": "pensia", "target": {"recipe": "dacunha_lenet5_mnist", "epochs": 1},
        "rows": [{"construction": "pensia", "size": 5, "seed": 0, "test_accuracy": 0.5}]}))
    with pytest.raises(SystemExit) as exit_info:
        main(["lenet5", "--only", "pensia", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "target dacunha_lenet5_mnist trained 1 epoch, not 50: " in capsys.readouterr().err


def test_rows_of_another_target_are_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """A result file measured on the 13-epoch target is not resumed by a run on the paper's
    50-epoch one (its rows would count as done): exit 2 naming both, before any training,
    even when the mismatch is in the second data set's file."""
    monkeypatch.setattr(approximate, "trained_target",
                        lambda *a, **k: pytest.fail("trained before checking the stored rows"))
    stored = {"construction": "pensia",
              "target": {"recipe": "dacunha_lenet5_fashion-mnist", "epochs": 16},
              "rows": [{"construction": "pensia", "size": 5, "seed": 0, "test_accuracy": 0.5}]}
    path = tmp_path / "approximation_lenet5_fashion-mnist_pensia.json"
    path.write_text(json.dumps(stored))
    with pytest.raises(SystemExit) as exit_info:
        main(["lenet5", "--only", "pensia", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert str(path) in err and "trained 16 epochs, not 50" in err
    assert json.loads(path.read_text()) == stored  # untouched
    # a committed file of before targets were recorded by digest: its rows cannot be resumed
    # (it was refused only after the target had trained, as "sha256 None, not 3faeb4368002")
    path = tmp_path / "approximation_fc2_pensia.json"
    shutil.copy(REPO / "results" / path.name, path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fc2", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.splitlines() == [
        f"python -m lotterynet.approximate: error: {path} was measured before targets were "
        f"recorded by digest (its target has no weights_sha256), so its rows cannot be resumed: "
        f"move it away or give --out another folder to measure them again"], err
    # a target record a resume cannot read (tracebacks: KeyError 'recipe', TypeError)
    for target, said in (({}, "a target without recipe: str"),
                         ({"recipe": "pensia_fc2", "epochs": "10"}, "a target without epochs"),
                         ({"recipe": "pensia_fc2", "epochs": 10, "weights_sha256": 5},
                          "a target without weights_sha256: str")):
        bad = tmp_path / "bad"
        bad.mkdir(exist_ok=True)
        (bad / path.name).write_text(json.dumps({**stored, "target": target}))
        with pytest.raises(SystemExit) as exit_info:
            main(["fc2", "--only", "pensia", "--out", str(bad)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
        assert f"{bad / path.name} is not an approximation result file ({said}" in err, err
    # ... and a command that adds no rows to it says so, without training (it printed nothing)
    main(["fc2", "--only", "pensia", "--sizes", "3", "5", "--out", str(tmp_path)])
    assert capsys.readouterr().out == (f"nothing to do: every size and seed asked for is in "
                                       f"{path}\n")


def test_stored_rows_are_checked_against_the_targets_trained_already_before_any_work(
        tmp_path, capsys, monkeypatch):
    """lenet5 on both data sets, both targets trained: a Fashion-MNIST file measured on other
    weights is refused before the MNIST sweeps are measured (it was refused after them)."""
    for name in ("dacunha_lenet5_mnist", "dacunha_lenet5_fashion-mnist"):  # finished runs
        run_dir = tmp_path / "t" / f"{name}-e50-seed0"
        run_dir.mkdir(parents=True)
        (run_dir / "results.json").write_text("{}")
    monkeypatch.setattr(approximate, "trained_target", lambda name, **k: (
        nn.Sequential(), {"recipe": name, "epochs": 50, "run_dir": name,
                          "weights_sha256": "ab" * 32}))
    monkeypatch.setattr(approximate, "load_or_download",
                        lambda *a, **k: pytest.fail("measured before checking the stored rows"))
    path = tmp_path / "approximation_lenet5_fashion-mnist_pensia.json"
    path.write_text(json.dumps({
        "construction": "pensia", "rows": [{"construction": "pensia", "size": 5, "seed": 1000,
                                            "test_accuracy": 0.5}],
        "target": {"recipe": "dacunha_lenet5_fashion-mnist", "epochs": 50,
                   "weights_sha256": "cd" * 32}}))
    with pytest.raises(SystemExit) as exit_info:
        main(["lenet5", "--only", "pensia", "--out", str(tmp_path), "--targets-dir",
              str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    assert f"{path} holds rows measured on other dacunha_lenet5_fashion-mnist target" in err
    assert "sha256 cdcdcdcdcdcd, not abababababab" in err


def edited_results():
    """(content, what the refusal says) for a committed result file with one edit each: the
    table read these fields unchecked (tracebacks) or took NaN, another construction's row and
    a negative size silently."""
    stored = (REPO / "results" / "approximation_fc2_pensia.json").read_text()

    def edit(change):
        data = json.loads(stored)
        change(data)
        return json.dumps(data)

    yield edit(lambda d: d.update(net="vgg")), "net 'vgg' is none of fc2, lenet5"
    yield edit(lambda d: d.pop("paper")), "a file without paper: str"
    yield edit(lambda d: d["target"].update(test_accuracy="x")), "a target without test_accuracy"
    yield edit(lambda d: d["rows"][1].pop("hidden_layer1")), "a row without hidden_layer1: int"
    yield edit(lambda d: d["rows"][0].update(weight_error_max="x")), "without weight_error_max"
    yield edit(lambda d: d["rows"][0].update(test_accuracy=math.nan)), "without test_accuracy"
    yield edit(lambda d: d["rows"][0]["params"].pop("kept")), "a row's params without kept"
    yield edit(lambda d: d["rows"][0].update(construction="natale")), "construction 'natale'"
    yield edit(lambda d: d["rows"][0].update(size=-3)), "size -3"
    # these entered the table as they were
    yield edit(lambda d: d.update(net="lenet5")), \
        "net 'lenet5' in a file named 'approximation_fc2_pensia.json'"
    yield edit(lambda d: d["rows"][0].update(hidden_layer1=-1)), "-1 hidden units in layer 1"
    yield edit(lambda d: d["rows"].append(d["rows"][0])), "two rows of size 3, seed 0"
    yield edit(lambda d: d["rows"][0].update(test_accuracy=1.5)), "test accuracy 1.5"
    # the wrong-sign count: of every row or of none (the table read it off the first row)
    yield edit(lambda d: d["rows"][3].pop("all_coefficients_wrong_sign")), \
        "a row without all_coefficients_wrong_sign: int"
    yield edit(lambda d: d["rows"][0].update(all_coefficients_wrong_sign="x")), \
        "a row without all_coefficients_wrong_sign: int"


def test_result_files_and_datasets_it_cannot_use_are_one_line(tmp_path, capsys):
    """A result file that is not one (not JSON, no rows, a construction it does not know, a
    folder) is named, not half-read into the table or a traceback; a data set given twice
    is refused (its second pass took the first's rows as done, under its own target)."""
    path = tmp_path / "approximation_fc2_pensia.json"
    for content, said in (("[]", "not a mapping with rows"), ("{bad", "Expecting property"),
                          ('{"construction": "foo", "rows": [{}]}', "no known construction"),
                          ('{"construction": "pensia", "target": {}, "rows": [{"size": "5"}]}',
                           "a row without construction"),
                          *edited_results()):
        path.write_text(content)
        with pytest.raises(SystemExit) as exit_info:
            main(["table", "--out", str(tmp_path)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
        assert f"{path} is not an approximation result file" in err and said in err
    with pytest.raises(SystemExit) as exit_info:
        main(["lenet5", "--datasets", "mnist", "mnist", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--datasets names 'mnist' twice" in capsys.readouterr().err


def test_a_result_file_larger_than_the_memory_is_refused_unread(tmp_path):
    """(a 1 TiB approximation file, sparse here: read whole, it was a MemoryError's
    traceback)"""
    from lotterynet.approximate_files import read_result

    path = terabyte_file(tmp_path / "approximation_fc2_pensia.json")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))} is not an approximation "
                                         rf"result file \(it is 1\.0 TiB, more than the [\d,.]+ "
                                         rf"[KMG]iB of memory this machine has available to read "
                                         rf"it\); move it away or restore it$"):
        read_result(path)


@pytest.mark.parametrize("argv, said", [
    (["fc2", "--datasets", "mnist"], "--datasets is not read by fc2"),
    (["table", "--seeds", "3"], "--seeds is not read by table; it reads --out"),
    (["table", "--targets-dir", "t"], "--targets-dir is not read by table; it reads --out"),
    (["fc2", "--target-epochs", "1", "2"], "give one --target-epochs, got [1, 2]"),
    (["lenet5", "--target-epochs", "0", "1"], "--target-epochs must be >= 1"),
    (["fc2", "--sizes", "5", "99"], "--sizes 99 is in no sweep of pensia"),
    (["fc2", "--only", "malach", "--sizes", "3"], "valid sizes: 4, 8, 16, 32, 64"),
    # was "unknown construction 'malach'": it is known, for fully connected layers
    (["lenet5", "--only", "malach"], "construction 'malach' builds fully connected layers only, "
     "not lenet5's conv layers; valid choices for lenet5: pensia, dacunha, symmetric, natale, "
     "natale_k"),
])
def test_options_an_experiment_cannot_use_are_refused_before_any_work(argv, said, tmp_path,
                                                                     capsys, monkeypatch):
    """Before, these were ignored: a size outside every sweep ran nothing and exited 0, fc2
    trained on its one target whatever --datasets said."""
    monkeypatch.setattr(approximate, "trained_target",
                        lambda *a, **k: pytest.fail("worked before refusing the options"))
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and said in err, err


def measured_until(monkeypatch, stop):
    """``approximate`` with a stand-in FC2 target (one linear map) and data, whose
    measurements record each ``(size, seed)`` and call ``stop`` at the fourth: ``(the
    target's info, the list of those measured)``."""
    info = {"recipe": "pensia_fc2", "epochs": RECIPES["pensia_fc2"]["epochs"],
            "run_dir": "runs/targets/pensia_fc2-e10-seed0", "weights_sha256": "ab" * 32}
    monkeypatch.setattr(approximate, "trained_target", lambda *a, **k: (
        nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), info))
    monkeypatch.setattr(approximate, "load_or_download", lambda *a, **k: (
        torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)))
    measured = []

    def measure(sweep, size, seed, *args):
        if len(measured) == 3:
            stop()
        measured.append((size, seed))
        return {"construction": sweep.name, "size": size, "seed": seed, "test_accuracy": 0.5,
                "weight_error_max": 0.1}

    monkeypatch.setattr(approximate, "measure", measure)
    return info, measured


def test_ctrl_c_is_one_line_and_only_the_same_target_is_continued(tmp_path, capsys, monkeypatch):
    """Ctrl-C during a sweep: exit 130 and one line (not a traceback); the sizes finished
    stay in the result file, and the same command measures only what is left."""
    def ctrl_c():
        raise KeyboardInterrupt

    info, measured = measured_until(monkeypatch, ctrl_c)
    monkeypatch.setattr(approximate, "machine", lambda: {"cpu": "first"})
    argv = ["fc2", "--only", "pensia", "--sizes", "3", "5", "--seeds", "2", "--out",
            str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 130 and len(err.splitlines()) == 1, err
    assert "stopped by Ctrl-C" in err and str(tmp_path) in err
    path = tmp_path / "approximation_fc2_pensia.json"
    data = json.loads(path.read_text())
    assert [(r["size"], r["seed"], r["machine"]) for r in data["rows"]] == [
        (3, 0, {"cpu": "first"}), (3, 1, {"cpu": "first"})]  # size 5 was cut short
    # the continuation on another machine, of a file of before per-row records (one record
    # of the file's): every row keeps the record of where it was measured, the file its
    # target's (the resume replaced the file's one record, earlier rows' too, with its own)
    data["machine"] = {"cpu": "first"}
    for row in data["rows"]:
        del row["machine"]
    path.write_text(json.dumps(data))
    monkeypatch.setattr(approximate, "machine", lambda: {"cpu": "second"})
    first_run_dir, info["run_dir"] = info["run_dir"], "elsewhere/pensia_fc2-e10-seed0"
    measured.clear()
    main(argv)
    assert measured == [(5, 0), (5, 1)]
    data = json.loads(path.read_text())
    assert [(r["size"], r["machine"]["cpu"]) for r in data["rows"]] == [
        (3, "first"), (3, "first"), (5, "second"), (5, "second")]
    assert "machine" not in data and data["target"]["run_dir"] == first_run_dir
    # a resume with nothing left to measure leaves the file as it was (it was rewritten with
    # the resuming run's machine and target record), does not load the target, and says so
    # (it printed nothing)
    before, stamp = path.read_bytes(), path.stat().st_mtime_ns
    monkeypatch.setattr(approximate, "machine", lambda: {"cpu": "third"})
    target = approximate.trained_target
    monkeypatch.setattr(approximate, "trained_target",
                        lambda *a, **k: pytest.fail("loaded a target with nothing to measure"))
    measured.clear()
    capsys.readouterr()
    main(argv)
    assert measured == [] and path.read_bytes() == before and path.stat().st_mtime_ns == stamp
    assert capsys.readouterr().out == (f"nothing to do: every size and seed asked for is in "
                                       f"{path}\n")
    monkeypatch.setattr(approximate, "trained_target", target)
    # the same recipe trained to other weights (another machine, another lotterynet's initial
    # draws) does not add rows to the file: refused, naming both digests, before measuring
    info["weights_sha256"] = "cd" * 32
    measured.clear()
    with pytest.raises(SystemExit) as exit_info:
        main([*argv[:4], "7", *argv[4:]])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and measured == [], err
    assert f"{path} holds rows measured on other pensia_fc2 target weights" in err
    assert "sha256 abababababab, not cdcdcdcdcdcd" in err


def test_sigterm_while_measuring_is_one_line_and_the_same_command_measures_the_rest(
        tmp_path, capsys, monkeypatch):
    """SIGTERM once the target was trained (measuring) killed the command by the signal's
    default action, exit 143 without a word (only Ctrl-C had a line): it says, in one line,
    what is kept and how to go on; the sizes finished are in the result file, no half file
    beside it, and the same command measures only the rest."""
    import os
    import signal

    def sigterm():  # (the default action would end pytest's process too)
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            pytest.fail("no SIGTERM handler while measuring: the signal kills silently")
        os.kill(os.getpid(), signal.SIGTERM)

    _, measured = measured_until(monkeypatch, sigterm)
    argv = ["fc2", "--only", "pensia", "--sizes", "3", "5", "--seeds", "2", "--out",
            str(tmp_path)]
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
    finally:  # (the command's handler stays on its way out)
        signal.signal(signal.SIGTERM, previous)
    err = capsys.readouterr().err
    assert exit_info.value.code == 143 and err.splitlines() == [
        f"python -m lotterynet.approximate: error: stopped by SIGTERM; the rows of every size "
        f"measured to its last seed are kept in the result files in {str(tmp_path)!r}, not "
        f"those of the size being measured: run the same command again to measure the rest"]
    path = tmp_path / "approximation_fc2_pensia.json"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert [(r["size"], r["seed"]) for r in json.loads(path.read_text())["rows"]] == [
        (3, 0), (3, 1)]
    measured.clear()
    main(argv)
    assert measured == [(5, 0), (5, 1)]


@pytest.mark.parametrize("checkpointed", [True, False])
def test_a_stopped_target_says_the_same_command_continues_it(checkpointed, tmp_path, capsys,
                                                             monkeypatch):
    """SIGTERM or Ctrl-C while a target trains said the run's own line, "resume with --resume
    T/checkpoints/last.ckpt", a flag approximate has not (targets' is for a longer run's
    checkpoint): the same command again is what continues the target (or, stopped before its
    first checkpoint, starts it over)."""
    from lotterynet import targets
    from lotterynet.errors import interrupted

    folder = tmp_path / "t" / "pensia_fc2-e2-seed0"

    def stopped(config):
        if checkpointed:  # (bytes a read would refuse: the epoch is the run's)
            (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
            (folder / "checkpoints" / "last.ckpt").write_bytes(b"not read")
        raise interrupted(True, "resume with --resume X (written at the end of epoch 1)"
                          if checkpointed else None, 1 if checkpointed else None)

    monkeypatch.setattr(targets, "run", stopped)
    then = same_command_again(checkpointed)
    for _, code, err in each_target_command(tmp_path, capsys):
        assert code == 143, err
        assert re.match(rf"^python -m lotterynet\.\w+: error: stopped by SIGTERM; target run "
                        rf"{re.escape(repr(str(folder)))}: {re.escape(then)}\n$", err), err


@pytest.mark.parametrize("checkpointed", [True, False])
def test_a_target_that_cannot_write_a_file_says_the_same_command_continues_it(
        checkpointed, tmp_path, capsys, monkeypatch):
    """A target whose disk filled as it trained said its run's way on, "resume with --resume
    T/checkpoints/last.ckpt", a flag approximate has not: it says what its stop says, the
    same command again (from its checkpoint, with that checkpoint's epoch, or over)."""
    import torch

    from lotterynet import targets
    from lotterynet.errors import DiskFullError

    folder = tmp_path / "t" / "pensia_fc2-e2-seed0"

    def full(config):
        if checkpointed:
            (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
            torch.save({"epoch": 0}, folder / "checkpoints" / "last.ckpt")
        failed = DiskFullError(28, "disk full while writing 'x'")
        failed.then = "resume with --resume X (written at the end of epoch 1)"  # (the run's)
        raise failed

    monkeypatch.setattr(targets, "run", full)
    then = same_command_again(checkpointed)
    for command, code, err in each_target_command(tmp_path, capsys):
        assert code == 1, err
        assert err == (f"python -m lotterynet.{command}: error: disk full while writing 'x'; "
                       f"target run {str(folder)!r}: {then}\n")


def same_command_again(checkpointed: bool) -> str:
    """How a target stopped (or failed) as it trained goes on: the same command again, from
    its checkpoint of epoch 1 where it had one, else over."""
    return ("run the same command again to continue from its checkpoint (written at the end "
            "of epoch 1)" if checkpointed else
            "no checkpoint had been written yet, so there is none to resume from; run the same "
            "command again to start it over in its folder")


def each_target_command(tmp_path, capsys):
    """``(command, exit code, stderr)`` of ``approximate`` and of ``targets`` training the
    FC2 target (2 epochs, seed 0) into ``tmp_path / "t"``, each stopped by what its training
    raises."""
    from lotterynet import targets

    for command, argv in ((main, ["fc2", "--target-epochs", "2", "--out", str(tmp_path)]),
                          (targets.main, ["pensia_fc2", "--epochs", "2"])):
        with pytest.raises(SystemExit) as exit_info:
            command([*argv, "--targets-dir", str(tmp_path / "t")])
        yield command.__module__.split(".")[-1], exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("checkpointed", [True, False])
def test_a_target_out_of_memory_says_what_the_same_command_can_do(checkpointed, tmp_path,
                                                                   capsys, monkeypatch):
    """A target whose training ran out of memory said the run's own line, "a new run with a
    smaller --batch-size (now 64) or a narrower model (--pairs, --hidden) needs less, or resume
    with --resume T/checkpoints/last.ckpt", flags approximate has not (targets' --resume is for
    a longer run's checkpoint): the recipe's batch size is the paper's, and the same command
    again, where more memory is free, continues the target (or starts it over). Exit 4."""
    from lotterynet import targets
    from lotterynet.errors import OutOfMemory
    from lotterynet.run_stops import NOTHING_TO_RESUME, needs_less

    folder = tmp_path / "t" / "pensia_fc2-e2-seed0"

    def ran_out(config):  # (as run() reports it: run_stops.reporting_out_of_memory)
        if checkpointed:
            (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
            torch.save({"epoch": 0}, folder / "checkpoints" / "last.ckpt")
        raise OutOfMemory(f"run {str(folder)!r}: memory ran out in training epoch 2 (one "
                          f"tensor alone: 2.0 GiB)", needs_less(config),
                          "resume with --resume X (written at the end of epoch 1)"
                          if checkpointed else None, NOTHING_TO_RESUME)

    monkeypatch.setattr(targets, "run", ran_out)
    then = (", or run the same command again to continue from its checkpoint (written at the "
            "end of epoch 1) where more memory is free" if checkpointed else
            "; no checkpoint had been written yet, so there is none to resume from; run the "
            "same command again to start it over in its folder")
    for command, code, err in each_target_command(tmp_path, capsys):
        assert code == 4 and err.splitlines() == [
            f"python -m lotterynet.{command}: error: target run "
            f"{str(folder)!r}: memory ran out in training epoch 2 (one tensor alone: 2.0 GiB); "
            f"free memory (its batch size, 64, and model are the paper's recipe: no flag of "
            f"this command changes them){then}"], err


def test_a_target_that_cannot_fit_names_what_the_same_command_can_do(tmp_path, capsys,
                                                                     monkeypatch, data_dir):
    """A target whose run was refused before it was built for the memory it needs said the
    run's remedies, "fewer parameters (a smaller --pairs or --hidden, another --structure or
    --arch) need less", flags neither command has: the recipe's model and batch size are the
    paper's, so only free memory or a machine with more. Exit 2, before its folder is made."""
    import lotterynet.memory

    monkeypatch.setattr(lotterynet.memory, "available_memory", lambda: 2**20)
    monkeypatch.setattr(lotterynet.memory, "cgroup_memory", lambda: None)
    monkeypatch.setenv("LOTTERYNET_DATA", str(data_dir))  # (the commands read it before)
    folder = tmp_path / "t" / "pensia_fc2-e2-seed0"
    for command, code, err in each_target_command(tmp_path, capsys):
        assert code == 2, err
        assert re.match(rf"^python -m lotterynet\.{command}: error: target run "
                        rf"{re.escape(repr(str(folder)))}: fc2 dense needs at least 5\.0 MiB of "
                        rf"memory to train \(397,000 parameters in float32, .*\) and this "
                        rf"machine has 1\.0 MiB available; free memory \(its batch size, 64, "
                        rf"and model are the paper's recipe: no flag of this command changes "
                        rf"them\), or run the same command on a machine with more memory\n$",
                        err), err
        assert not folder.exists()


def test_targets_stopped_outside_a_targets_training_is_one_line(tmp_path, capsys, monkeypatch):
    """python -m lotterynet.targets stopped while it loads a trained target (or prints it)
    was killed by SIGTERM's default action without a word, and Ctrl-C there was a traceback:
    each is one line, exit 143 / 130, saying that the trained targets are kept and the same
    command goes on."""
    import os
    import signal

    from lotterynet import targets

    stop = []

    def load_target(run_dir):  # (the default action would end pytest's process too)
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            pytest.fail("no SIGTERM handler while a target loads: the signal kills silently")
        stop[0]()
        pytest.fail("the signal did not stop the command")

    def interrupt():
        raise KeyboardInterrupt

    folder = tmp_path / "t" / "pensia_fc2-e2-seed0"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text("{}")  # (a finished run: loaded, not trained)
    monkeypatch.setattr(targets, "load_target", load_target)
    for sent, code, said in ((lambda: os.kill(os.getpid(), signal.SIGTERM), 143, "SIGTERM"),
                             (interrupt, 130, "Ctrl-C (SIGINT)")):
        stop[:] = [sent]
        previous = signal.getsignal(signal.SIGTERM)
        try:
            with pytest.raises(SystemExit) as exit_info:
                targets.main(["pensia_fc2", "--epochs", "2", "--targets-dir",
                              str(tmp_path / "t")])
        finally:  # (the command's handler stays on its way out)
            signal.signal(signal.SIGTERM, previous)
        err = capsys.readouterr().err
        assert exit_info.value.code == code and err.splitlines() == [
            f"python -m lotterynet.targets: error: stopped by {said}; every target trained is "
            f"kept in {str(tmp_path / 't')!r}: run the same command again to go on (a trained "
            f"target is loaded, not trained again)"], err


@pytest.mark.parametrize("command, sent", [("approximate", signal.SIGTERM),
                                           ("targets", signal.SIGINT)],
                         ids=["approximate-SIGTERM", "targets-SIGINT"])
def test_a_module_command_stopped_as_it_imports_torch_stops_in_one_line(command, sent,
                                                                          tmp_path):
    """``python -m lotterynet.approximate`` / ``lotterynet.targets`` stopped in their own
    imports (here as torch's ends, which ``-X importtime`` shows) got Python's default: a
    Ctrl-C was a KeyboardInterrupt traceback (killed by SIGINT), SIGTERM killed the process
    without a word (exit -15). Each holds both back until its handlers take them, as
    ``train.py`` does: the one line and exit code (130 / 143) of a stop a moment later."""
    argv, then = {
        "approximate": (["table", "--out", str(tmp_path)],
                        "run the same command again to write the table"),
        "targets": (["pensia_fc2", "--targets-dir", str(tmp_path / "t")],
                    f"every target trained is kept in {str(tmp_path / 't')!r}: run the same "
                    f"command again to go on (a trained target is loaded, not trained again)")}[
        command]
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # (not inherited ignored)
    try:
        proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", f"lotterynet.{command}",
                                 *argv], cwd=REPO, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    with proc:
        for line in proc.stderr:  # (each import as it ends)
            if line.rsplit("|", 1)[-1].strip() == "torch":
                proc.send_signal(sent)
                break
        said = proc.stderr.read()
    said_as = "SIGTERM" if sent == signal.SIGTERM else "Ctrl-C (SIGINT)"
    assert proc.returncode == 128 + sent and "Traceback" not in said, said
    lines = [line for line in said.splitlines() if not line.startswith("import time:")]
    assert lines == [f"python -m lotterynet.{command}: error: stopped by {said_as}; {then}"]


def test_missing_test_data_is_downloaded_as_the_targets_are(tmp_path, capsys, monkeypatch):
    """The test split is loaded as the training stack loads the target's data: downloaded
    when missing, and a failed download says so (it ended "or allow downloading", which
    approximate has no way to do)."""
    from torchvision import datasets

    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nno network here")

    monkeypatch.setattr(datasets.MNIST, "download", offline)
    monkeypatch.setattr(approximate, "trained_target", lambda *a, **k: (
        nn.Sequential(), {"recipe": "pensia_fc2", "epochs": 10, "run_dir": "r",
                          "weights_sha256": "ab" * 32}))
    with pytest.raises(SystemExit) as exit_info:
        main(["fc2", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.splitlines() == [
        f"python -m lotterynet.approximate: error: mnist: no data under {tmp_path / 'none'}; put "
        f"MNIST/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte (or .gz) there, point "
        f"--data-dir or $LOTTERYNET_DATA at the folder that holds them, and the download "
        f"failed (no network here)"], err
    assert not (tmp_path / "none").exists()  # the download's empty folders are removed


def test_targets_cli_refuses_a_damaged_target_in_one_line(tmp_path, data_dir, capsys,
                                                          monkeypatch):
    from lotterynet import targets

    out = tmp_path / "runs" / "targets" / "pensia_fc2-e1-seed0"
    trained_target("pensia_fc2", data_dir=data_dir, epochs=1, limit_train=256, out=out)
    checkpoint = out / "checkpoints" / "last.ckpt"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0x40  # one flipped bit in the weights
    checkpoint.write_bytes(bytes(data))
    monkeypatch.chdir(tmp_path)
    for argv, said in ((["pensia_fc2", "--epochs", "1"], "do not match its integrity digest"),
                       (["pensia_fc2", "--epochs", "0"], "--epochs must be >= 1, got 0")):
        with pytest.raises(SystemExit) as exit_info:
            targets.main([*argv, "--data-dir", str(data_dir)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and said in err, err


def test_targets_cli_names_the_epochs_flag_before_any_work(tmp_path, capsys, monkeypatch):
    """``--epochs -1`` was refused as "epochs must be positive" (the run's config key, not the
    flag) once the target's run was being set up."""
    from lotterynet import targets

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(targets, "trained_target",
                        lambda *a, **k: pytest.fail("worked before refusing --epochs"))
    with pytest.raises(SystemExit) as exit_info:
        targets.main(["pensia_fc2", "--epochs", "-1"])
    assert exit_info.value.code == 2 and capsys.readouterr().err.splitlines() == [
        "python -m lotterynet.targets: error: --epochs must be >= 1, got -1"]
    assert list(tmp_path.iterdir()) == []


def test_targets_resume_refuses_another_recipes_checkpoint(tmp_path, data_dir, capsys,
                                                          monkeypatch):
    """``--resume`` finishes a target from a longer run of the same recipe: an MNIST target's
    checkpoint would have trained the Fashion-MNIST target on MNIST (exit 0 before). A
    finished target given another recipe's checkpoint is refused too, not loaded."""
    from lotterynet import targets

    monkeypatch.chdir(tmp_path)
    out = targets.TARGETS_DIR / "dacunha_lenet5_mnist-e1-seed0"  # where main finds it, finished
    trained_target("dacunha_lenet5_mnist", data_dir=data_dir, epochs=1, limit_train=256,
                   out=out)
    fashion = tmp_path / "fashion"
    trained_target("dacunha_lenet5_fashion-mnist", data_dir=data_dir, epochs=1,
                   limit_train=256, out=fashion)
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    checkpoint = str(out / "checkpoints" / "last.ckpt")
    for names, resume, said in (
            (["dacunha_lenet5_fashion-mnist"], checkpoint, "is a checkpoint of another run: its "
                                                           "dataset is 'mnist', this run's "
                                                           "'fashion-mnist'"),
            (["dacunha_lenet5_mnist"], str(fashion / "checkpoints" / "last.ckpt"),
             "its dataset is 'fashion-mnist', this run's 'mnist'"),
            (["dacunha_lenet5_mnist", "dacunha_lenet5_fashion-mnist"], checkpoint,
             "--resume continues one target"),
            (["dacunha_lenet5_mnist"], "", "--resume is empty"),
            (["dacunha_lenet5_mnist"], str(fashion), "is a folder; give the checkpoint file")):
        with pytest.raises(SystemExit) as exit_info:
            targets.main([*names, "--epochs", "1", "--resume", resume, "--data-dir",
                          str(data_dir)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and said in err, err
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == before


def test_a_target_folder_holding_another_recipes_run_is_refused(tmp_path, data_dir, capsys,
                                                                monkeypatch):
    """A finished run copied (or renamed) into another recipe's target folder was loaded as
    that target: ``approximate fc2`` measured LeNet5's conv layers as FC2's (exit 0), and
    ``targets`` reported it as pensia_fc2. Its stored config is checked against the recipe's."""
    from lotterynet import targets

    monkeypatch.chdir(tmp_path)
    lenet5 = tmp_path / "lenet5"
    trained_target("dacunha_lenet5_mnist", data_dir=data_dir, epochs=1, limit_train=256,
                   out=lenet5)
    fc2 = targets.TARGETS_DIR / "pensia_fc2-e1-seed0"
    shutil.copytree(lenet5, fc2)
    said = (f"target folder {str(fc2)!r} holds a run of another recipe than pensia_fc2: its "
            f"arch is 'lenet5_dacunha', the recipe's 'fc2'; delete it to train the target again")
    with pytest.raises(ConfigError, match="its arch is 'lenet5_dacunha'"):
        trained_target("pensia_fc2", data_dir=data_dir, epochs=1, limit_train=256, out=fc2)
    for command, argv in ((targets.main, ["pensia_fc2", "--epochs", "1"]),
                          (main, ["fc2", "--target-epochs", "1", "--out", "out", "--seeds",
                                  "1", "--sizes", "3", "--only", "pensia"])):
        with pytest.raises(SystemExit) as exit_info:
            command([*argv, "--data-dir", str(data_dir)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.splitlines()[1:] == [] and said in err, err
    assert not (tmp_path / "out" / "approximation_fc2_pensia.json").exists()


def test_a_target_whose_checkpoint_is_another_runs_is_refused(tmp_path, data_dir, monkeypatch):
    """A checkpoint copied in from another seed's run was loaded as the target whose
    results.json reported the first run's accuracy (only the results' config was checked);
    one of another length (epochs done) too."""
    from lotterynet import targets

    monkeypatch.chdir(tmp_path)
    folder = targets.TARGETS_DIR / "pensia_fc2-e1-seed0"
    other = {"seed": tmp_path / "seed1", "epochs done": tmp_path / "e2"}
    weights = trained_target("pensia_fc2", data_dir=data_dir, epochs=1, limit_train=256,
                             out=folder)[1]["weights_sha256"]
    trained_target("pensia_fc2", data_dir=data_dir, epochs=1, limit_train=256, seed=1,
                   out=other["seed"])
    trained_target("pensia_fc2", data_dir=data_dir, epochs=2, limit_train=256,
                   out=other["epochs done"])
    checkpoint, results = folder / "checkpoints" / "last.ckpt", folder / "results.json"
    own = checkpoint.read_bytes()
    for what, values in (("seed", "1, the results' 0"), ("epochs done", "2, the results' 1")):
        shutil.copy(other[what] / "checkpoints" / "last.ckpt", checkpoint)
        said = (f"checkpoint {str(checkpoint)!r} is of another run than {str(results)!r}: its "
                f"{what} is {values}; delete {str(folder)!r} to train the target again")
        with pytest.raises(CheckpointError) as refused:
            trained_target("pensia_fc2", data_dir=data_dir, epochs=1, limit_train=256,
                           out=folder)
        assert str(refused.value) == said
    checkpoint.write_bytes(own)  # its own checkpoint is loaded as before
    assert trained_target("pensia_fc2", data_dir=data_dir, epochs=1, limit_train=256,
                          out=folder)[1]["weights_sha256"] == weights


def test_a_target_a_trainer_option_stopped_within_an_epoch_is_loaded(tmp_path, data_dir):
    """A target run that a Trainer option (``max_steps`` here, ``max_time`` alike) stopped part
    way through its second epoch was refused as soon as it was trained: "its epochs done is 2,
    the results' 1" (the checkpoint counts the epoch begun, as Lightning does; results.json
    gives it as ``partial_epoch``). Now it is loaded, as it was trained."""
    options = {"data_dir": data_dir, "epochs": 2, "limit_train": 128,
               "trainer": {"max_steps": 3}, "out": tmp_path / "target"}  # (2 batches an epoch)
    info = trained_target("pensia_fc2", **options)[1]
    results = json.loads((tmp_path / "target" / "results.json").read_text())
    assert (results["epochs_done"], results["partial_epoch"]) == (1, {"batches": 1, "of": 2})
    assert trained_target("pensia_fc2", **options)[1]["weights_sha256"] == info["weights_sha256"]


def test_a_target_folder_without_its_checkpoint_says_what_to_do(tmp_path, capsys, monkeypatch):
    """results/approximation_targets/ keeps each target's results.json only: given as
    --targets-dir, it was refused as "checkpoint '.../last.ckpt' not found", which said
    neither why nor what to do."""
    from lotterynet import targets

    folder = tmp_path / "pensia_fc2-e10-seed0"
    shutil.copytree(REPO / "results" / "approximation_targets" / folder.name, folder)
    said = (f"target folder {str(folder)!r} holds a finished run's results but not its "
            f"checkpoint {str(folder / 'checkpoints' / 'last.ckpt')!r}, which the target is "
            f"loaded from; delete {str(folder)!r} to train it again")
    for command, argv in ((targets.main, ["pensia_fc2"]),
                          (main, ["fc2", "--out", str(tmp_path / "out")])):
        with pytest.raises(SystemExit) as exit_info:
            command([*argv, "--targets-dir", str(tmp_path)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.endswith(f"error: {said}\n"), err
        assert len(err.splitlines()) == 1, err

@pytest.mark.parametrize("command, argv, said", [
    ("approximate", ["table", "--out", ""], "--out is empty"),  # was: results in the cwd
    ("approximate", ["fc2", "--out="], "--out is empty"),
    ("targets", ["pensia_fc2", "--data-dir", ""], "--data-dir is empty"),
    ("targets", [""], "an argument is empty"),
    ("targets", ["--", ""], "an argument is empty"),  # was: "-- is empty"
    ("theory", ["study", "--out", ""], "--out is empty"),
])
def test_module_commands_refuse_an_empty_value(command, argv, said, tmp_path, capsys,
                                               monkeypatch):
    import importlib

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(f"lotterynet.{command}").main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.splitlines() == [
        f"python -m lotterynet.{command}: error: {said}"
        + ("; leave it out for its default" if said.startswith("--") else
           " (''); drop it or fill it in")], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["targets", "approximate"])
def test_a_full_disk_while_training_a_target_is_one_line(command, tmp_path, capsys,
                                                         monkeypatch):
    """The errors train.py reports as one line are reported so by the module commands that
    train targets too (a full disk was a traceback in targets, in approximate as well)."""
    from lotterynet import targets
    from lotterynet.errors import DiskFullError

    def full(*args, **kwargs):
        raise DiskFullError(28, "disk full while writing 'last.ckpt'; the previous version "
                                "is intact")

    monkeypatch.setattr(targets, "trained_target", full)
    monkeypatch.setattr(approximate, "trained_target", full)
    with pytest.raises(SystemExit) as exit_info:
        if command == "targets":
            targets.main(["pensia_fc2"])
        else:
            main(["fc2", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.splitlines() == [
        f"python -m lotterynet.{command}: error: disk full while writing 'last.ckpt'; the "
        f"previous version is intact"], err


def test_the_targets_folder_is_an_option_of_both_commands(tmp_path, monkeypatch, capsys):
    """``--targets-dir`` moves the trained targets' runs out of ``./runs/targets`` (the working
    folder's: the only way to keep them elsewhere was to change folder)."""
    import lotterynet.targets as targets

    assert targets.target_config("pensia_fc2", targets_dir=tmp_path).out == \
        str(tmp_path / "pensia_fc2-e10-seed0")
    assert targets.target_config("pensia_fc2").out == "runs/targets/pensia_fc2-e10-seed0"
    asked = []

    def stop(name, **kwargs):
        asked.append(kwargs["targets_dir"])
        raise ConfigError("stopped here")

    monkeypatch.setattr(targets, "trained_target", stop)
    monkeypatch.setattr(approximate, "trained_target", stop)
    for command, argv in ((targets.main, ["pensia_fc2"]),
                          (approximate.main, ["fc2", "--out", str(tmp_path / "results")])):
        with pytest.raises(SystemExit):
            command([*argv, "--targets-dir", str(tmp_path / "t")])
    assert asked == [tmp_path / "t", tmp_path / "t"]


def test_a_bad_targets_folder_is_named_as_targets_dir_before_any_work(tmp_path, monkeypatch,
                                                                      capsys):
    """``--targets-dir`` under a file was reported as ``--out '<dir>/pensia_fc2-e10-seed0'``
    (a flag the user did not give it to), and only once the target's run began."""
    import lotterynet.targets as targets

    (tmp_path / "file").write_text("")
    bad = tmp_path / "file" / "t"
    for module in (targets, approximate):
        monkeypatch.setattr(module, "trained_target",
                            lambda *a, **k: pytest.fail("worked before refusing --targets-dir"))
    for command, argv in ((targets.main, ["pensia_fc2"]),
                          (approximate.main, ["fc2", "--out", str(tmp_path / "results")]),
                          (approximate.main, ["lenet5", "--out", str(tmp_path / "results")])):
        with pytest.raises(SystemExit) as exit_info:
            command([*argv, "--targets-dir", str(bad)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.splitlines()[1:] == [], err
        assert f"error: --targets-dir {str(bad)!r}: {str(tmp_path / 'file')!r} is a file" in err


def test_paths_starting_with_a_tilde_are_refused_naming_what_they_would_mean(tmp_path,
                                                                           monkeypatch, capsys):
    """``--out '~/x'`` (quoted: no shell expanded it) made the folder ``./~/x``; ``--data-dir``
    read ``./~/d``; ``--targets-dir '~/t'`` was refused as the target run's ``out``. Each is
    refused as train.py refuses its paths, naming its flag, before any work."""
    import lotterynet.targets as targets

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    for module in (targets, approximate):
        monkeypatch.setattr(module, "trained_target",
                            lambda *a, **k: pytest.fail("worked before refusing the path"))
    for command, argv, flag in ((main, ["table"], "--out"), (main, ["fc2"], "--out"),
                                (main, ["lenet5"], "--data-dir"),
                                (main, ["fc2"], "--targets-dir"),
                                (targets.main, ["pensia_fc2"], "--targets-dir")):
        with pytest.raises(SystemExit) as exit_info:
            command([*argv, flag, "~/x"])
        said = (f"{flag} '~/x' starts with '~', which only a shell expands (unquoted); give "
                f"'{tmp_path}/home/x' (in the home folder), or '{tmp_path}/~/x' (the name '~' "
                f"here)")
        assert exit_info.value.code == 2
        assert re.match(rf"^python -m lotterynet\.\w+: error: {re.escape(said)}\n$",
                        capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []
