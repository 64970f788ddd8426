"""The GPU suite end to end on the CPU (``--device cpu --quick``), so that it cannot rot."""

import os
import re
import sys

import pytest
import torch

import prefork
from conftest import REPO

CHECKS = {  # report row (start) -> whether it needs CUDA
    "CUDA tests (pytest -m cuda)": True,
    "no host-device sync: dense layer step": True,
    "no host-device sync: subsetsum layer step": True,
    "no host-device sync: fixedsize layer step": True,
    "no host-device sync: Lightning training step": True,
    "no host-device sync: batched stack step": True,
    "no host-device sync: crop-flip augmentation": True,
    "layer step subsetsum / wide, relu, batch 64": False,
    "layer step subsetsum / wide, relu, batch 256": False,
    "layer step subsetsum / wide, identity, batch 64": False,
    "layer step subsetsum / wide, identity, batch 256": False,
    "layer step subsetsum / wide, relu, batch 64, eager (no CUDA graph)": False,
    "mask of ": False,
    "LeNet5 edge-popup epoch": False,
    "LeNet5 epoch without CUDA graphs": False,
    "LeNet5 epoch: Lightning / bare PyTorch loop": False,
    "FC2 wide epoch": False,
    "host time a step, over a bare loop: lightning": False,
    "-member LeNet5 stack epoch / single run's": False,
    "single runs one after another, extrapolated: 2 x one run's epoch / the stack's epoch":
        False,
    "-member stack step: members batched / one by one": False,
    "subset-sum solver, n = 21": False,
    "subset-sum solver, n = 30": False,
    "train.py LeNet5 1 epoch: test acc bf16-mixed vs 32-true": False,
}


def test_quick_cpu_run_reports_every_check(tmp_path, data_dir):
    report = tmp_path / "report.md"
    proc = prefork.run(
        [sys.executable, "benchmarks/gpu_suite.py", "--device", "cpu", "--quick",
         "--data-dir", str(data_dir), "--report", str(report)],
        cwd=REPO, timeout=900, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = report.read_text()
    assert "- device: CPU: " in text and "- torch " in text
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ")]
    for start, needs_cuda in CHECKS.items():
        row = next((r for r in rows if start in r[0]), None)
        assert row is not None, f"no row for {start!r}"
        if needs_cuda:
            assert row[3] == "skipped (no CUDA) |"
        else:
            assert row[3] in ("REPORT |", "not judged (CPU) |"), row
            assert re.match(r"[\d.]+", row[1]), row
    assert "- batched stack step: one vmapped forward, 0 graph(s)" in text  # (no CUDA graph)
    stack_vs_runs = next(r for r in rows if "single runs one after another" in r[0])
    assert re.fullmatch(r"[\d.]+x \(2 x [\d.]+ / [\d.]+ s\)", stack_vs_runs[1])


def test_quick_epochs_are_timed_after_a_warm_up(monkeypatch):
    """Epoch times are the last of two epochs, the first paying the warm-up: under --quick too
    (its one epoch, warm-up included, was the single run the stack was compared with)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_suite

    assert gpu_suite.QUICK.epochs == gpu_suite.Scale().epochs == 2


CPU = ["--device", "cpu", "--quick", "--data-dir", "{data}"]


def test_the_bare_loops_epoch_validates_as_the_runs_epoch_does(monkeypatch, tmp_path, data_dir):
    """A run's epoch seconds (its EpochTimer) count the validation pass, which Lightning runs
    before the epoch's end: the bare loop it is compared with ("Lightning / bare PyTorch loop")
    trained only. It now also takes the validation split's forward, in evaluation batches,
    without gradient, in every epoch."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_suite

    from lotterynet.config import make_config

    seen = []  # (examples, whether a gradient was recorded) of each forward after the convs
    build_module = gpu_suite.build_module

    def spied(config, data):
        module = build_module(config, data)
        module.model[-1].register_forward_hook(
            lambda layer, args, out: seen.append((len(out), torch.is_grad_enabled())))
        return module

    monkeypatch.setattr(gpu_suite, "build_module", spied)
    config = make_config(dict(arch="lenet5", structure="subsetsum", activation="identity",
                              epochs=2, limit_train=128, val_size=1500, data_dir=str(data_dir),
                              accelerator="cpu", progress_bar=False, out=str(tmp_path / "run")))
    gpu_suite.bare_epoch_seconds(config, torch.device("cpu"))
    assert seen == [(64, True), (64, True), (1000, False), (500, False)] * 2


@pytest.mark.parametrize("argv, line", [
    (["--nope"], "unrecognized arguments: --nope"),  # not the default device (no CUDA here)
    ([], "argument --device: the default 'cuda': this machine has no CUDA device(s); valid "
         "here: cpu"),
    ([*CPU, "--report", "{tmp}/file/report.md"],
     "--report '{tmp}/file': '{tmp}/file' is a file, not a folder"),
    ([*CPU, "--report", "{tmp}"],  # (the in-the-way line, which named no flag)
     "--report '{tmp}' is a folder; give the report's file, e.g. '{tmp}/gpu_report.md'"),
    ([*CPU, "--data-dir", "{tmp}/loop"],
     "the data folder '{tmp}/loop' cannot be reached: a symbolic link on its way leads in a loop; "
     "point --data-dir or $LOTTERYNET_DATA at the folder that holds the data"),
])
def test_bad_flags_are_refused_before_the_suite_starts(monkeypatch, tmp_path, capsys, data_dir,
                                                       argv, line):
    """One line, exit code 2, before any check runs: a --report the suite could not write (it
    crashed on it after the whole suite), data that is not there, an unknown flag (the default
    --device cuda, checked first by argparse, was named in its place on a machine without CUDA)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_suite

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu_suite, "run_suite", lambda *_: pytest.fail("the suite started"))
    (tmp_path / "file").write_text("")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(SystemExit) as exit:
        gpu_suite.main([a.format(tmp=tmp_path, data=data_dir) for a in argv])
    assert exit.value.code == 2
    assert capsys.readouterr().err == f"gpu_suite.py: error: {line.format(tmp=tmp_path)}\n"


def test_only_syncs_count_as_syncs(monkeypatch):
    """The debug mode's own "prototype feature ... does not yet detect all synchronizing
    operations" warning (given once per process, at the first ``set_sync_debug_mode``) was
    counted as a sync of the dense layer on the H200; torch's warning at a synchronising op is
    counted, with its line."""
    import warnings

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_suite

    def caught(message, filename, lineno):
        return warnings.WarningMessage(UserWarning(message), UserWarning, filename, lineno)

    notice = caught("Synchronization debug mode is a prototype feature and does not yet detect "
                    "all synchronizing operations", "/x/torch/cuda/__init__.py", 1270)
    sync = caught("called a synchronizing CUDA operation", "/repo/lotterynet/masking.py", 240)
    assert gpu_suite.sync_sites([notice, sync]) == ["lotterynet/masking.py:240"]
    assert gpu_suite.sync_sites([notice]) == []
