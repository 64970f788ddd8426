"""Nothing lost, nothing silent: a resume writes only into the run it continues and keeps its
history; checkpoints are sealed with a digest, written durably, and a full disk says so."""

import contextlib
import csv
import errno
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

import lotterynet.checkpointing as checkpointing
import prefork
from conftest import (
    LARGER_THAN_MEMORY,
    REPO,
    SLURM_BATCH_JOB,
    disk_full_at,
    processes_mentioning,
    terabyte_file,
)
from lotterynet.checkpointing import (
    atomic_torch_save,
    load_checkpoint,
    remove_stale_temp_files,
    seal,
)
from lotterynet.cli import main
from lotterynet.config import make_config
from lotterynet.errors import CheckpointError, ConfigError, DiskFullError
from lotterynet.stack_files import write_stack_file

#: What a run or stack stopped before its first checkpoint says.
NOTHING = "no checkpoint had been written yet, so there is none to resume from"
#: ... and what a run then says to do.
START_OVER = f"{NOTHING}; run the same command again to start it over in its folder"
#: What a command stopped before its run, stack or sweep began says.
NOT_STARTED = ("it had not started (it was reading its options and files and importing what it "
               "runs): nothing was written; run the same command again")
#: (tested on 1,000 of the 10,000 test images: what these tests compare is the same there)
SMALL = ["--arch", "fc2", "--structure", "dense", "--limit-train", "600", "--val-size", "100",
         "--no-progress-bar", "--seed", "3", "--trainer.limit_test_batches", "1"]


def tree(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes, and every folder."""
    return {p.relative_to(folder): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


def metric_rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def per_epoch(run: Path, key: str) -> dict[int, str]:
    """``{epoch: value}`` of one metric; fails on an epoch logged twice."""
    values = [(int(r["epoch"]), r[key]) for r in metric_rows(run) if r.get(key)]
    epochs = [e for e, _ in values]
    assert len(epochs) == len(set(epochs)), f"{key} logged twice for an epoch: {epochs}"
    return dict(values)


@pytest.fixture(scope="module")
def whole_and_stopped(tmp_path_factory, data_dir):
    """The same 3-epoch run uninterrupted, and stopped after its first epoch."""
    tmp = tmp_path_factory.mktemp("runs")
    common = [*SMALL, "--epochs", "3", "--data-dir", str(data_dir)]
    assert main([*common, "--out", str(tmp / "whole")]) == 0
    assert main([*common, "--stop-after", "1", "--out", str(tmp / "stopped")]) == 0
    return tmp / "whole", tmp / "stopped"


def assert_same_history_and_result(run: Path, whole: Path) -> None:
    results, expected = (json.loads((r / "results.json").read_text()) for r in (run, whole))
    for key in ("test_acc", "val_acc", "train_acc", "mask_digests", "epochs_done"):
        assert results[key] == expected[key], key
    assert len(results["seconds_per_epoch"]) == 3
    assert results["train_seconds"] == sum(results["seconds_per_epoch"])  # before the resume too
    for key in ("val/acc", "train/acc", "train/loss_epoch"):
        assert per_epoch(run, key) == per_epoch(whole, key)  # all three epochs, once each
    assert steps_of(run, "lr") == steps_of(whole, "lr")  # logged after a checkpoint: once


def test_a_float64_run_resumes_to_the_uninterrupted_result(tmp_path, data_dir):
    """``--precision 64-true``: Lightning restores the checkpoint before it converts the module
    to float64, so the stored scores came back rounded to float32 and the resumed run drifted
    from the uninterrupted one (another test accuracy, other mask bits). (One coefficient
    pair, not 5: the scores compared bit for bit below tell the rounding at any size.)"""
    common = [*SMALL, "--structure", "subsetsum", "--activation", "identity", "--pairs", "1",
              "--epochs", "3", "--precision", "64-true", "--data-dir", str(data_dir)]
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0
    assert main([*common, "--stop-after", "1", "--out", str(tmp_path / "run")]) == 0
    assert main(["--resume", str(tmp_path / "run" / "checkpoints" / "last.ckpt")]) == 0
    assert_same_history_and_result(tmp_path / "run", tmp_path / "whole")
    scores = [{k: v for k, v in torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)[
        "state_dict"].items() if k.endswith("scores")} for r in (tmp_path / "run",
                                                                 tmp_path / "whole")]
    assert scores[0].keys() == scores[1].keys() and all(
        v.dtype == torch.float64 and torch.equal(v, scores[1][k]) for k, v in scores[0].items())


def steps_of(run: Path, key: str) -> list[tuple[str, str]]:
    """``(step, value)`` of the rows logged without an epoch (the learning-rate monitor's)."""
    return [(r["step"], r[key]) for r in metric_rows(run) if r.get(key) and not r["epoch"]]


def test_resume_into_a_copy_leaves_the_original_byte_identical(whole_and_stopped, tmp_path):
    whole, stopped = whole_and_stopped
    original = tree(stopped)
    copy = tmp_path / "copy"
    shutil.copytree(stopped, copy)
    assert main(["--resume", str(copy / "checkpoints" / "last.ckpt")]) == 0
    assert tree(stopped) == original
    assert_same_history_and_result(copy, whole)


def test_lightning_restores_the_checkpoint_that_was_checked(whole_and_stopped, tmp_path,
                                                           monkeypatch):
    """The resume's checks and Lightning's restore see one reading of the checkpoint: a file
    that changes after the checks (here: junk written over it) is not what gets restored."""
    import lotterynet.run

    whole, stopped = whole_and_stopped
    copy = tmp_path / "copy"
    shutil.copytree(stopped, copy)
    checkpoint, check = copy / "checkpoints" / "last.ckpt", lotterynet.run.check_resumable

    def check_then_spoil(*args):
        check(*args)
        checkpoint.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(lotterynet.run, "check_resumable", check_then_spoil)
    assert main(["--resume", str(checkpoint)]) == 0
    assert_same_history_and_result(copy, whole)


def test_resume_of_an_older_checkpoint_into_its_run_is_refused(whole_and_stopped, tmp_path,
                                                               capsys):
    """A checkpoint of a run that is not its last one (a copy kept of an earlier epoch):
    continued in that run's folder it would cut the history back and replace the run's
    last.ckpt. Refused, nothing written; into an empty --out it resumes as usual."""
    whole, stopped = whole_and_stopped
    run_dir = tmp_path / "run"
    shutil.copytree(stopped, run_dir)
    older = run_dir / "checkpoints" / "epoch1.ckpt"
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", older)
    before = tree(run_dir)
    assert main(["--resume", str(older)]) == 2
    err = capsys.readouterr().err
    assert "is not the last checkpoint of run" in err and "give an empty --out" in err, err
    assert tree(run_dir) == before
    assert main(["--resume", str(older), "--out", str(tmp_path / "elsewhere")]) == 0
    assert tree(run_dir) == before
    assert_same_history_and_result(tmp_path / "elsewhere", whole)


def test_another_runs_checkpoint_copied_into_a_run_is_refused(whole_and_stopped, tmp_path,
                                                              data_dir, capsys):
    """``cp runB/checkpoints/last.ckpt runA/checkpoints/; --resume runA/checkpoints/last.ckpt``
    (both stopped after their first epoch) trained on from B's weights under A's history (A's
    first epoch, then B's), exit 0. Each run keeps its id (its checkpoints, its hparams.yaml):
    refused, exit 2, nothing written; into an empty --out too (it would carry A's history)."""
    _, stopped = whole_and_stopped
    other, run = tmp_path / "other", tmp_path / "run"
    assert main([*SMALL, "--limit-train", "64", "--seed", "4", "--epochs", "3", "--stop-after",
                 "1", "--data-dir", str(data_dir), "--out", str(other)]) == 0
    shutil.copytree(stopped, run)
    shutil.copy(other / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt")
    ids = [yaml.safe_load((r / "hparams.yaml").read_text())["run_id"] for r in (other, run)]
    capsys.readouterr()
    before, checkpoint = tree(run), run / "checkpoints" / "last.ckpt"
    for out in ([], ["--out", str(tmp_path / "new")]):
        assert main(["--resume", str(checkpoint), *out]) == 2
        assert capsys.readouterr().err.splitlines() == [
            f"train.py: error: --resume {str(checkpoint)!r} is a checkpoint of the run started "
            f"in {str(other)!r} (run {ids[0]}), not of the run in {str(run)!r} (run {ids[1]}, "
            f"its hparams.yaml), copied there: resume it from its own run's folder, or from a "
            f"copy outside any run's folder into an empty --out; to continue the run in "
            f"{str(run)!r}, put its own checkpoint back"]
        assert tree(run) == before and not (tmp_path / "new").exists()


def test_a_checkpoint_written_before_runs_had_ids_resumes_and_takes_one(whole_and_stopped,
                                                                       tmp_path):
    """A run's checkpoint without a run id (written before runs had one) resumes in its run
    as before; the resume gives the run an id, which its folder and next checkpoint keep."""
    _, stopped = whole_and_stopped
    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    checkpoint = run / "checkpoints" / "last.ckpt"
    older, first = load_checkpoint(checkpoint), yaml.safe_load(
        (run / "hparams.yaml").read_text())["run_id"]
    assert older["hyper_parameters"].pop("run_id") == first
    atomic_torch_save(older, checkpoint)
    assert main(["--resume", str(checkpoint), "--stop-after", "2"]) == 0
    taken = load_checkpoint(checkpoint)["hyper_parameters"]["run_id"]
    assert taken != first and yaml.safe_load((run / "hparams.yaml").read_text())[
        "run_id"] == taken
    assert sorted(per_epoch(run, "val/acc")) == [0, 1]


def test_overwrite_forgets_the_old_runs_wandb_id(tmp_path, data_dir):
    """An --overwrite run is a new run: a later --wandb resume of it must not log into the W&B
    run of what was there before."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "wandb-id").write_text("0ldrun00\n")
    (out / "wandb-ended").write_text("wandb\n")  # (a stack's diverged member's, logged)
    (out / "results.json").write_text("{}")
    assert main([*SMALL, "--epochs", "1", "--data-dir", str(data_dir), "--out", str(out),
                 "--overwrite"]) == 0
    assert not (out / "wandb-id").exists() and not (out / "wandb-ended").exists()


@pytest.mark.parametrize("marker", ["sweep.json", ".sweep.lock"])
def test_a_run_into_a_sweeps_folder_is_refused_even_with_overwrite(tmp_path, data_dir, capsys,
                                                                   marker):
    """``--out SWEEP --overwrite`` turned a sweep's folder into a run's (its table and figure
    replaced, a run mixed with its cells); refused, nothing touched."""
    sweep = tmp_path / "sweep"
    (sweep / "cells" / "wide-s0.5-e1-seed0").mkdir(parents=True)
    (sweep / "cells" / "wide-s0.5-e1-seed0" / "results.json").write_text("{}")
    (sweep / marker).write_text("{}")
    before = tree(sweep)
    assert main([*SMALL, "--epochs", "1", "--data-dir", str(data_dir), "--out", str(sweep),
                 "--overwrite"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"train.py: error: --out {str(sweep)!r} is a sweep's folder ({marker} is there): a run "
        "there would be mixed with its cells, and --overwrite would clear them; choose another "
        "--out"]
    assert tree(sweep) == before


def test_resume_of_a_moved_run_writes_only_where_it_now_is(whole_and_stopped, tmp_path):
    whole, stopped = whole_and_stopped
    old, new = tmp_path / "old", tmp_path / "moved" / "run"
    shutil.copytree(stopped, old)
    new.parent.mkdir()
    old.rename(new)
    assert main(["--resume", str(new / "checkpoints" / "last.ckpt")]) == 0
    assert not old.exists()
    assert_same_history_and_result(new, whole)


def test_resume_into_an_empty_out_leaves_the_source_alone(whole_and_stopped, tmp_path):
    whole, stopped = whole_and_stopped
    original, out = tree(stopped), tmp_path / "elsewhere"
    assert main(["--resume", str(stopped / "checkpoints" / "last.ckpt"), "--out", str(out)]) == 0
    assert tree(stopped) == original
    assert_same_history_and_result(out, whole)  # the history came along


def test_a_loose_checkpoint_resumed_says_its_history_stayed_behind(whole_and_stopped, tmp_path,
                                                                    capsys):
    """A checkpoint copied out of its run, resumed into a new --out: its metrics.csv began at
    the resumed epoch without a word; the resume says so at its start (a resume of the run
    itself carries its history on and says nothing)."""
    _, stopped = whole_and_stopped
    loose, out = tmp_path / "loose.ckpt", tmp_path / "new"
    shutil.copy(stopped / "checkpoints" / "last.ckpt", loose)
    assert main(["--resume", str(loose), "--out", str(out)]) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[1] == (f"--resume {str(loose)!r}: no metrics.csv of its run beside it, so "
                       f"{str(out / 'metrics.csv')!r} begins at epoch 2; the metrics of epoch 1 "
                       f"are in the original run's metrics.csv only")
    assert sorted(per_epoch(out, "val/acc")) == [1, 2]


@pytest.mark.parametrize("wandb", [False, True])
def test_a_resume_of_a_run_whose_history_is_gone_says_so(whole_and_stopped, tmp_path, capsys,
                                                         monkeypatch, wandb):
    """A run whose metrics.csv was deleted, resumed: it said the history was in "the original
    run's metrics.csv", which is the file gone. It says that the history is gone and how to
    keep it; with W&B offline, that its W&B history is too: the resume's offline folder, which
    the history is replayed into from the file, holds only the epochs after the checkpoint,
    and synced last replaced the W&B run's history (put back, the file is replayed whole)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    _, stopped = whole_and_stopped
    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    (run / "metrics.csv").rename(tmp_path / "kept.csv")
    checkpoint = run / "checkpoints" / "last.ckpt"
    argv = ["--resume", str(checkpoint), "--stop-after", "2"] + ["--wandb"] * wandb
    assert main(argv) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if "is gone" in line]
    assert said == [f"--resume {str(checkpoint)!r}: its run's history, "
                    f"{str(run / 'metrics.csv')!r}, is gone, so it "
                    f"{'and the W&B history begin' if wandb else 'begins'} anew at epoch 2, "
                    f"without the metrics of epoch 1; to keep them, stop now (Ctrl-C) and put "
                    f"that file back"]
    if wandb:
        from lotterynet.loggers import read_wandb_records

        (written,) = (run / "wandb").glob("offline-run-*")
        epochs = {json.loads(item.value_json) for record in read_wandb_records(
            next(written.glob("run-*.wandb"))) if record.WhichOneof("record_type") == "history"
            for item in record.history.item if (item.key or "/".join(item.nested_key)) == "epoch"}
        assert epochs == {1}  # (0-based: the resume's epoch 2 alone)
    assert sorted(per_epoch(run, "val/acc")) == [1]  # (0-based: the resume's epoch 2 alone)


def test_resume_takes_the_recipe_lr_of_a_run_stored_without_one(whole_and_stopped, tmp_path,
                                                                 capsys):
    """The run left ``lr`` unset (fc2's recipe: 0.1): ``--lr 0.1`` on its resume is the same
    run and continues it; ``--lr 0.05`` would change it and is refused, nothing written."""
    whole, stopped = whole_and_stopped
    checkpoint = str(stopped / "checkpoints" / "last.ckpt")
    before = tree(stopped)
    assert main(["--resume", checkpoint, "--lr", "0.05"]) == 2
    assert "--lr 0.05 differs from the resumed run's 0.1 (its recipe's)" in capsys.readouterr().err
    assert tree(stopped) == before
    out = tmp_path / "same-lr"
    assert main(["--resume", checkpoint, "--lr", "0.1", "--out", str(out)]) == 0
    assert_same_history_and_result(out, whole)


@pytest.mark.parametrize("change", [{"dataset": "fashion-mnist"}, {"seed": 4},
                                    {"momentum": 0.5}])
def test_the_python_api_resumes_only_the_same_run(whole_and_stopped, tmp_path, data_dir,
                                                  change):
    """``run(config)`` with ``config.resume`` (the Python API, the targets command) builds its
    config by hand, not from the checkpoint: one of another data set, seed or optimizer would
    train on as if it were this run's first epochs. Refused, nothing written."""
    from lotterynet.config import make_config
    from lotterynet.errors import ConfigError
    from lotterynet.run import run

    _, stopped = whole_and_stopped
    checkpoint = str(stopped / "checkpoints" / "last.ckpt")
    before, out = tree(stopped), tmp_path / "other"
    config = make_config({"arch": "fc2", "structure": "dense", "limit_train": 600,
                          "val_size": 100, "seed": 3, "epochs": 3, "progress_bar": False,
                          "data_dir": str(data_dir), "out": str(out), "resume": checkpoint,
                          **change})
    name, value = next(iter(change.items()))
    with pytest.raises(ConfigError, match=f"its {name} is .*, this run's {value!r}"):
        run(config)
    assert tree(stopped) == before and not out.exists()


def test_a_resume_compares_each_trainer_option_given_with_the_runs_own(tmp_path, data_dir,
                                                                       capsys):
    """``--trainer.KEY`` on a resume was compared with all the run's Trainer options at once:
    the refusal named options the command did not give (and refused one given unchanged, or a
    ``--devices auto``, which a resume may change). Now it names the option that differs."""
    run = tmp_path / "run"
    assert main([*SMALL, "--epochs", "2", "--stop-after", "1", "--trainer.gradient_clip_val",
                 "1.0", "--trainer.deterministic", "true", "--data-dir", str(data_dir),
                 "--out", str(run)]) == 0
    checkpoint = str(run / "checkpoints" / "last.ckpt")
    capsys.readouterr()
    for given, value, said in [
            ("gradient_clip_val", "2.0", "--trainer.gradient_clip_val 2.0 differs from the "
                                         "resumed run's 1.0; "),
            ("benchmark", "true", "--trainer.benchmark True is not one of the resumed run's "
                                  "Trainer options; ")]:
        assert main(["--resume", checkpoint, f"--trainer.{given}", value]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"train.py: error: {said}"), err
        others = {"gradient_clip_val", "deterministic", "benchmark"} - {given}
        assert not any(name in err[0] for name in others), err
    assert main(["--resume", checkpoint, "--trainer.gradient_clip_val", "1.0", "--devices",
                 "auto", "--print-config"]) == 0
    trainer = yaml.safe_load(capsys.readouterr().out)["trainer"]
    assert (trainer["gradient_clip_val"], trainer["deterministic"], trainer["devices"]) == (
        1.0, True, "auto")


def test_finished_run_is_not_resumed(whole_and_stopped, capsys):
    whole, _ = whole_and_stopped
    before = tree(whole)
    assert main(["--resume", str(whole / "checkpoints" / "last.ckpt")]) == 2
    err = capsys.readouterr().err
    assert "is finished" in err and str(whole) in err
    assert tree(whole) == before


def test_run_killed_in_its_test_phase_reports_its_training(whole_and_stopped, tmp_path):
    whole, _ = whole_and_stopped
    run = tmp_path / "untested"
    shutil.copytree(whole, run)
    (run / "results.json").unlink()  # trained 3 of 3 epochs, killed before the results
    assert main(["--resume", str(run / "checkpoints" / "last.ckpt")]) == 0
    assert_same_history_and_result(run, whole)


def trained(tmp_path: Path, data_dir: Path, trainer: dict, *argv: str) -> list[str]:
    """The run's arguments with ``trainer`` as its config file's Trainer options (3 epochs of
    10 batches), after training it uninterrupted into ``tmp_path / "whole"``."""
    config = tmp_path / "options.yaml"
    config.write_text(json.dumps({"trainer": trainer}))
    common = [*SMALL, "--limit-train", "640", "--epochs", "3", "--config", str(config),
              "--data-dir", str(data_dir), *argv]
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0
    return common


def assert_same_run(run: Path, whole: Path) -> None:
    results, expected = (json.loads((r / "results.json").read_text()) for r in (run, whole))
    for key in ("test_acc", "mask_digests", "epochs_done", "partial_epoch", "val_epoch"):
        assert results[key] == expected[key], key
    assert len(results["seconds_per_epoch"]) == len(expected["seconds_per_epoch"])
    assert (run / "metrics.csv").read_text() == (whole / "metrics.csv").read_text()


@pytest.mark.parametrize("trainer", [
    {"callbacks": [{"class_path": "EarlyStopping",  # stops at the end of epoch 1
                    "init_args": {"monitor": "val/acc", "mode": "max",
                                  "stopping_threshold": 0.1}}]},
    {"callbacks": [{"class_path": "conftest.StopAtStep",  # as max_time: part way
                    "init_args": {"step": 13}}]},
    {"max_steps": 25}])  # (part way through epoch 3)
def test_a_run_a_trainer_option_stopped_killed_in_its_test_phase_tests_the_same_model(
        tmp_path, data_dir, trainer):
    """Stopped by a Trainer option (EarlyStopping, ``max_time``, ``max_steps``) then killed
    before its results: the resume tests the model that the option stopped at (it trained on,
    another epoch or more, Lightning keeping no ``should_stop``), and says the same epochs and
    part of an epoch (after ``max_steps``, one epoch fewer)."""
    trained(tmp_path, data_dir, trainer)
    run = tmp_path / "untested"
    shutil.copytree(tmp_path / "whole", run)
    (run / "results.json").unlink()
    assert main(["--resume", str(run / "checkpoints" / "last.ckpt")]) == 0
    assert_same_run(run, tmp_path / "whole")


@pytest.mark.parametrize("trainer", [{"max_steps": 25},
                                     {"max_steps": 9, "accumulate_grad_batches": 3}])
def test_a_run_bounded_by_max_steps_resumes_to_the_uninterrupted_run(tmp_path, data_dir,
                                                                    trainer):
    """Lightning resumes a fit with ``max_steps`` as if from within an epoch: it ran the end of
    the checkpoint's epoch again (the run failed with a traceback) and counted that epoch
    twice."""
    common = trained(tmp_path, data_dir, trainer)
    run = tmp_path / "run"
    assert main([*common, "--stop-after", "1", "--out", str(run)]) == 0
    assert main(["--resume", str(run / "checkpoints" / "last.ckpt")]) == 0
    assert_same_run(run, tmp_path / "whole")


def start(argv: list[str]) -> prefork.Process:
    return prefork.Popen([sys.executable, "train.py", *argv], cwd=REPO, start_new_session=True)


def kill_after_next_checkpoint(proc: subprocess.Popen, checkpoint: Path) -> None:
    """SIGKILL ``proc`` early in the epoch after its next checkpoint: once it has written a
    checkpoint newer than the current one and logged that epoch's metrics (a kill at the
    checkpoint itself: ``test_kill_right_after_a_checkpoint_loses_no_row``)."""
    run = checkpoint.parent.parent
    seen = checkpoint.stat().st_mtime_ns if checkpoint.exists() else None
    deadline, epoch = time.time() + 300, None
    while proc.poll() is None and time.time() < deadline:
        if epoch is None and checkpoint.exists() and checkpoint.stat().st_mtime_ns != seen:
            epoch = str(load_checkpoint(checkpoint)["epoch"])
        if epoch is not None and (run / "metrics.csv").exists() and all(
                any(row.get("epoch") == epoch and row.get(key) for row in metric_rows(run))
                for key in ("val/acc", "train/acc", "train/loss_epoch")):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_metrics_history_complete_after_two_kills(whole_and_stopped, tmp_path, data_dir):
    whole, _ = whole_and_stopped
    run = tmp_path / "killed"
    checkpoint = run / "checkpoints" / "last.ckpt"
    kill_after_next_checkpoint(start([*SMALL, "--epochs", "3", "--data-dir", str(data_dir),
                                      "--out", str(run)]), checkpoint)
    kill_after_next_checkpoint(start(["--resume", str(checkpoint)]), checkpoint)
    assert load_checkpoint(checkpoint)["epoch"] >= 1 and not (run / "results.json").exists()
    assert main(["--resume", str(checkpoint)]) == 0
    assert_same_history_and_result(run, whole)


DIE_AFTER_CHECKPOINT = """
import os, sys
from lotterynet.run_callbacks import CheckedCheckpointIO
from lotterynet.cli import main
save = CheckedCheckpointIO.save_checkpoint
def save_then_die(self, *args, **kwargs):
    save(self, *args, **kwargs)
    os._exit(9)  # as SIGKILL: nothing after the checkpoint's write runs
CheckedCheckpointIO.save_checkpoint = save_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_kill_right_after_a_checkpoint_loses_no_row(whole_and_stopped, tmp_path, data_dir):
    """Killed twice at the worst moment, the instant each epoch's checkpoint is on disk (before
    anything Lightning does after it), the resumed run still has every epoch's row once."""
    whole, _ = whole_and_stopped
    run = tmp_path / "killed"
    checkpoint = run / "checkpoints" / "last.ckpt"
    for argv in ([*SMALL, "--epochs", "3", "--data-dir", str(data_dir), "--out", str(run)],
                 ["--resume", str(checkpoint)]):
        died = prefork.run([sys.executable, "-c", DIE_AFTER_CHECKPOINT, *argv], cwd=REPO)
        assert died.returncode == 9, died.stderr[-2000:]
    assert load_checkpoint(checkpoint)["epoch"] == 1 and not (run / "results.json").exists()
    assert main(["--resume", str(checkpoint)]) == 0
    assert_same_history_and_result(run, whole)


def test_bit_flipped_checkpoint_is_refused_before_loading(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"state_dict": {"w": torch.arange(1000.0)}}, path)
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"],
                       torch.arange(1000.0))  # still an ordinary torch checkpoint
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.arange(1000.0))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_a_checkpoint_larger_than_the_memory_is_refused_in_one_line_unread(tmp_path):
    """(a 1 TiB file, sparse here: read whole, it was a MemoryError's traceback)"""
    path = terabyte_file(tmp_path / "last.ckpt")
    with pytest.raises(CheckpointError, match=rf"^checkpoint {re.escape(repr(str(path)))} "
                                              rf"{LARGER_THAN_MEMORY}"):
        load_checkpoint(path)


def deflated_zeros(tmp_path: Path) -> bytes:
    """A checkpoint of 10**7 float32 zeros (40 MB) as ``torch.save`` writes it, but with its
    zip's members deflated: 40 kB (megabytes of a file can declare gigabytes)."""
    stored = tmp_path / "stored.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(10**7)}}, stored)
    zipped = io.BytesIO()
    with zipfile.ZipFile(stored) as archive, zipfile.ZipFile(zipped, "w") as deflated:
        for member in archive.infolist():
            deflated.writestr(member.filename, archive.read(member), zipfile.ZIP_DEFLATED)
    return zipped.getvalue()


def test_a_checkpoint_that_inflates_past_the_memory_is_refused_before_it_loads(tmp_path,
                                                                              monkeypatch):
    """torch.load reads a zip's deflated members whole: 40 kB of file declared 40 MB (and
    megabytes declare gigabytes, a colleague's checkpoint an out-of-memory kill)."""
    path = tmp_path / "last.ckpt"
    path.write_bytes(seal(deflated_zeros(tmp_path)))
    assert path.stat().st_size < 10**5
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.zeros(10**7))
    monkeypatch.setattr(checkpointing, "available_memory", lambda: 2**25)  # (32 MiB)
    with pytest.raises(CheckpointError, match=rf"^checkpoint {re.escape(repr(str(path)))} "
                                              rf"inflates to 38\.1 MiB, more than the 32\.0 "
                                              rf"MiB of memory this machine has available to "
                                              rf"load it$"):
        load_checkpoint(path)


def test_a_checkpoint_declaring_more_than_the_memory_is_refused_before_its_crcs(tmp_path,
                                                                               monkeypatch):
    """A checkpoint without a digest (a Trainer's of your own) had its zip's CRC-32s checked
    first, inflating every member: one whose 40 kB member declared 40 MB (more than the
    memory) was read out to its end before its declared size was looked at (here, its CRC-32
    changed, refused as not matching it). ``load_from_checkpoint`` and
    ``load_checkpoint(unsealed=True)`` refuse the declared size first, read from the zip's
    central directory."""
    from lotterynet.module import EdgePopupModule

    data = bytearray(deflated_zeros(tmp_path))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        largest = max(archive.infolist(), key=lambda member: member.file_size)
    # its central directory entry (its name 46 bytes in), whose CRC-32 is 16 bytes in
    entry = data.index(largest.filename.encode(), data.index(b"PK\x01\x02")) - 46
    data[entry + 16] ^= 0x01
    path = tmp_path / "own.ckpt"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"does not match its CRC-32$"):
        load_checkpoint(path, unsealed=True)  # (the memory it has: inflated, then refused)
    monkeypatch.setattr(checkpointing, "available_memory", lambda: 2**25)  # (32 MiB)
    refusal = (rf"^checkpoint {re.escape(repr(str(path)))} inflates to 38\.1 MiB, more than "
               rf"the 32\.0 MiB of memory this machine has available to load it$")
    with pytest.raises(CheckpointError, match=refusal):
        EdgePopupModule.load_from_checkpoint(path)
    with pytest.raises(CheckpointError, match=refusal):
        load_checkpoint(path, unsealed=True)


def test_full_disk_says_so_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"state_dict": {"w": torch.ones(3)}}, path)

    def no_space(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", no_space)
    with pytest.raises(DiskFullError, match="disk full") as error:
        atomic_torch_save({"state_dict": {"w": torch.zeros(3)}}, path)
    assert str(path) in error.value.strerror
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.parametrize("number", [errno.EFBIG, errno.EROFS, errno.EACCES, errno.EIO])
def test_a_write_the_system_refuses_is_one_line_naming_the_file_and_keeps_the_last_good_one(
        tmp_path, monkeypatch, number):
    """A file size limit (``ulimit -f``: EFBIG), a folder made read-only, an I/O error: the
    system's reason, with the file, in one line (it was a traceback; only a full disk was
    said), and the previous checkpoint kept."""
    from lotterynet.errors import WriteFailed

    path = tmp_path / "last.ckpt"
    atomic_torch_save({"state_dict": {"w": torch.ones(3)}}, path)

    def refused(self, data):
        raise OSError(number, os.strerror(number))

    monkeypatch.setattr(Path, "write_bytes", refused)
    with pytest.raises(WriteFailed) as error:
        atomic_torch_save({"state_dict": {"w": torch.zeros(3)}}, path)
    assert error.value.strerror == (f"could not write {str(path)!r} ({os.strerror(number)}); "
                                    f"the previous last.ckpt (if any) is kept unchanged")
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_file_written_again_takes_away_the_temp_files_killed_writers_left_of_it(tmp_path):
    """SIGKILL leaves ``.NAME.tmpPID`` beside a file (theory's figure, a sweep's table): the
    next atomic write of that file removes it, and only its own (a live writer's and another
    file's stay)."""
    from lotterynet.checkpointing import write_text_atomic

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".fig[1].png.tmp{dead}"
    live = tmp_path / f".fig[1].png.tmp{os.getppid()}"
    other = tmp_path / f".table.md.tmp{dead}"
    for path in (stale, live, other):
        path.write_bytes(b"half")
    write_text_atomic(tmp_path / "fig[1].png", "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["fig[1].png", live.name, other.name])
    assert (tmp_path / "fig[1].png").read_text() == "whole"


def test_on_windows_a_temp_file_of_another_process_is_kept_unprobed(tmp_path, monkeypatch):
    """Windows' ``os.kill(pid, 0)`` sends Ctrl-C (its signal 0 is CTRL_C_EVENT) to the processes
    of a console, the run's own among them, or raises OSError: there a temp file
    of another process is kept, whether or not that process runs."""
    monkeypatch.setattr(sys, "platform", "win32")
    stale = tmp_path / f".results.json.tmp{2 ** 22 + 1}"  # (above any pid_max: no process)
    stale.write_bytes(b"half")
    assert remove_stale_temp_files(tmp_path) == []
    assert stale.read_bytes() == b"half"


def test_stale_temp_files_are_removed_and_refusal_names_only_real_files(tmp_path, capsys):
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = checkpoints / f".last.ckpt.tmp{dead}"
    live = checkpoints / f".last.ckpt.tmp{os.getppid()}"  # a writer still running
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    assert remove_stale_temp_files(checkpoints) == [stale]
    assert not stale.exists() and live.exists()
    # the first checkpoint never completed: the refusal does not recommend --resume
    assert main(["--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "--resume" not in err


def test_a_resume_removes_what_a_killed_runs_writes_left_in_its_folder(whole_and_stopped,
                                                                       tmp_path):
    """A run killed while it wrote its results, ticket or history leaves the temporary file
    beside it, in the run's folder: only the checkpoints' folder was cleaned at the next
    start, so these stayed for good (a ticket's: the size of the masks). The resume removes
    them as it does a checkpoint's."""
    _, stopped = whole_and_stopped
    run = tmp_path / "killed"
    shutil.copytree(stopped, run)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    left = [run / f".{name}.tmp{dead}" for name in ("results.json", "model.ticket",
                                                    "metrics.csv")]
    left.append(run / "checkpoints" / f".last.ckpt.tmp{dead}")
    for path in left:
        path.write_bytes(b"half")
    assert main(["--resume", str(run / "checkpoints" / "last.ckpt")]) == 0
    assert not list(run.rglob(".*.tmp*")) and (run / "results.json").is_file()


def test_wandb_run_id_is_kept_across_resume_into_the_same_run(tmp_path):
    """A resume continues its run's W&B run; a resume into another --out (the original stays
    resumable) is a W&B run of its own, and the original's id file is left as it was."""
    from lotterynet.loggers import wandb_run_id

    first = tmp_path / "run"
    run_id, continued = wandb_run_id(first, None)
    assert not continued
    checkpoint = first / "checkpoints" / "last.ckpt"
    assert wandb_run_id(first, str(checkpoint)) == (run_id, True)
    forked, continued = wandb_run_id(tmp_path / "copy", str(checkpoint))
    assert forked != run_id and (tmp_path / "copy" / "wandb-id").read_text().startswith(
        forked + "\n")
    assert not continued and (first / "wandb-id").read_text() == f"{run_id}\n{first}\n"
    assert wandb_run_id(tmp_path / "new", None)[0] != run_id


def test_a_copied_run_resumed_is_a_wandb_run_of_its_own_and_a_moved_one_keeps_its_id(tmp_path):
    """``cp -r R C`` then a resume of C: C's id file is R's, and C's resume logged into R's
    W&B run, which R's own resume continues too (one W&B run, two histories). The file names
    the folder it was written in: C's resume is a new W&B run while R holds the id; a moved run
    (R gone) keeps it, and so does an id file of an older version (the id alone)."""
    from lotterynet.loggers import wandb_run_id

    first = tmp_path / "run"
    run_id, _ = wandb_run_id(first, None)
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    forked, continued = wandb_run_id(copy, str(copy / "checkpoints" / "last.ckpt"))
    assert forked != run_id and not continued
    assert wandb_run_id(first, str(first / "checkpoints" / "last.ckpt")) == (run_id, True)
    assert wandb_run_id(copy, str(copy / "checkpoints" / "last.ckpt")) == (forked, True)
    moved = tmp_path / "moved"
    first.rename(moved)
    assert wandb_run_id(moved, str(moved / "checkpoints" / "last.ckpt")) == (run_id, True)
    (moved / "wandb-id").write_text("0ldrun00\n")
    assert wandb_run_id(moved, str(moved / "checkpoints" / "last.ckpt")) == ("0ldrun00", True)


@pytest.mark.parametrize("number, says", [(errno.ENOSPC, "disk full while writing {}"),
                                           (errno.EFBIG, "could not write {} (File too large)")])
@pytest.mark.parametrize("failing", [1, 2])
def test_full_disk_during_training_is_one_line_and_exit_1(tmp_path, data_dir, monkeypatch,
                                                           capsys, number, says, failing):
    """A full disk, and a file size limit (``ulimit -f``, whose EFBIG was a traceback), at the
    ``failing``-th epoch's checkpoint: one line naming the file, then how the run goes on once
    it can write (the line named the file alone): from the checkpoint kept, else over."""
    disk_full_at(monkeypatch, failing, number)
    out = tmp_path / "run"
    assert main([*SMALL, "--limit-train", "200", "--epochs", "2", "--data-dir", str(data_dir),
                 "--out", str(out)]) == 1
    last = out / "checkpoints" / "last.ckpt"
    then = (f"resume with --resume {last} (written at the end of epoch 1)" if failing == 2
            else START_OVER)
    assert capsys.readouterr().err.strip().splitlines()[-1:] == [
        f"train.py: error: {says.format(repr(str(last)))}; the previous last.ckpt (if any) is "
        f"kept unchanged; {then}"]
    # no temp file left behind; epoch 1's checkpoint kept
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["last.ckpt"] * (failing - 1)


def test_ddp_ranks_die_with_rank_zero(tmp_path, data_dir):
    """SIGKILL rank 0 of a two-rank run: the rank it launched does not live on (it would hang
    in a collective, or train on alone in the same folder)."""
    out = tmp_path / "ddp"
    proc = start([*SMALL, "--accelerator", "cpu", "--devices", "2", "--epochs", "500",
                  "--data-dir", str(data_dir), "--out", str(out)])
    try:
        deadline = time.time() + 120
        while not processes_mentioning(str(out)) and time.time() < deadline:
            time.sleep(0.2)
        # (the rank rank 0 launched, by its command line; rank 0 is forked: prefork's)
        assert len(processes_mentioning(str(out))) == 1
        os.kill(proc.pid, signal.SIGKILL)  # rank 0 only, not its process group
        proc.wait()
        deadline = time.time() + 30
        while processes_mentioning(str(out)) and time.time() < deadline:
            time.sleep(0.2)
        assert processes_mentioning(str(out)) == []
    finally:
        proc.kill()
        for pid in processes_mentioning(str(out)):  # only if the test failed
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("to", ["group", "launched rank"])
def test_sigterm_to_a_ddp_run_stops_every_rank(tmp_path, data_dir, to):
    """A scheduler's SIGTERM goes to the whole process group: the rank rank 0 launched got it
    twice (from the group, and forwarded by rank 0), broadcast once more than rank 0 from
    Lightning's handler, and the run hung for good; so did a SIGTERM to that rank alone. Now
    it stops: one line, exit 143, no rank left."""
    out, err_file = tmp_path / "ddp", tmp_path / "stderr"
    proc = prefork.Popen(
        [sys.executable, "train.py", *SMALL, "--accelerator", "cpu", "--devices", "2",
         "--epochs", "500", "--data-dir", str(data_dir), "--out", str(out)],
        cwd=REPO, stderr=err_file, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
            time.sleep(0.2)
        # (the rank rank 0 launched, by its command line; rank 0 is forked: prefork's)
        (launched,) = processes_mentioning(str(out))
        if to == "group":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            os.kill(launched, signal.SIGTERM)
        proc.wait(timeout=120)
        err = err_file.read_text()
        assert proc.returncode == 143, err[-2000:]
        assert err.strip().splitlines()[-1].startswith("train.py: error: stopped by SIGTERM; "
                                                       "resume with --resume")
        deadline = time.time() + 30
        while processes_mentioning(str(out)) and time.time() < deadline:
            time.sleep(0.2)
        assert processes_mentioning(str(out)) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # only if the test failed


LATE_SIGTERM = """
import os, signal, sys
from pytorch_lightning.trainer.connectors.signal_connector import _SignalConnector
from lotterynet.run_callbacks import CheckedCheckpointIO
from lotterynet.cli import main
save, teardown = CheckedCheckpointIO.save_checkpoint, _SignalConnector.teardown
def save_then_signal(self, *args, **kwargs):  # the scheduler's SIGTERM
    save(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)
def teardown_then_signal(self):  # the copy a launched rank forwarded, landing late
    teardown(self)
    if self.received_sigterm:
        os.kill(os.getpid(), signal.SIGTERM)
CheckedCheckpointIO.save_checkpoint = save_then_signal
_SignalConnector.teardown = teardown_then_signal
code = main(sys.argv[1:])
os.kill(os.getpid(), signal.SIGTERM)  # and later still
sys.exit(code)
"""


def test_a_second_sigterm_after_lightnings_teardown_does_not_kill_a_stopping_run(tmp_path,
                                                                                 data_dir):
    """The race behind a DDP run's SIGTERM to its process group: rank 0 got a second SIGTERM
    (forwarded by the rank it launched) after Lightning's teardown had put back the handler
    it found, the default one, and died by it (-15) instead of exiting 143 with its line."""
    run = tmp_path / "run"
    stopped = prefork.run(
        [sys.executable, "-c", LATE_SIGTERM, *SMALL, "--epochs", "2", "--data-dir",
         str(data_dir), "--out", str(run)], cwd=REPO)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"train.py: error: stopped by SIGTERM; resume with --resume "
        f"{run / 'checkpoints' / 'last.ckpt'} (written at the end of epoch 1)")


STACK_SIGTERM = """
import os, signal, sys
from pytorch_lightning.trainer.connectors.signal_connector import _SignalConnector
import lotterynet.run as run
import lotterynet.run_callbacks as run_callbacks
import lotterynet.stack as stack
import lotterynet.stack_files as stack_files
from lotterynet.cli import main
name = os.environ["IN"]
owner = {"save_checkpoint": run_callbacks.CheckedCheckpointIO, "TensorDataModule": run,
         "read_stack_file": stack_files}.get(name, stack)
called, teardown = getattr(owner, name), _SignalConnector.teardown
def signalled(*args, **kwargs):  # the scheduler's SIGTERM
    os.kill(os.getpid(), signal.SIGTERM)
    return called(*args, **kwargs)
def teardown_then_signal(self):  # a copy of it landing late, after Lightning's teardown
    teardown(self)
    if self.received_sigterm:
        os.kill(os.getpid(), signal.SIGTERM)
setattr(owner, name, signalled)
_SignalConnector.teardown = teardown_then_signal
code = main(sys.argv[1:])
os.kill(os.getpid(), signal.SIGTERM)  # and later still
sys.exit(code)
"""


def stack_sigterm(folder: Path, data_dir: Path, where: str) -> tuple[list[str], dict]:
    """A stack file of two members under ``folder`` (stacks/s, cells/a and cells/b), and the
    command that runs it sent SIGTERM in ``where``."""
    cells = [folder / "cells" / name for name in ("a", "b")]
    configs = [make_config({"arch": "fc2", "structure": "subsetsum", "activation": "identity",
                            "limit_train": 128, "val_size": 64, "epochs": 1, "sparsity": s,
                            "progress_bar": False, "data_dir": str(data_dir)})
               for s in (0.5, 0.9)]
    stack_file = write_stack_file(configs, folder / "stacks" / "s", cells)
    return ([sys.executable, "-c", STACK_SIGTERM, "--stack-file", str(stack_file)],
            {**os.environ, "IN": where})


@pytest.mark.parametrize("where", ["read_stack_file", "TensorDataModule", "save_checkpoint",
                                   "finish_wandb"])
def test_a_sigterm_anywhere_in_a_stack_is_one_line_and_exit_143(started_together, where):
    """A stack (``--stack-file``, as a sweep's job runs it) stops on SIGTERM as a single run
    does: while its file or the data are read, in its fit with a second SIGTERM after
    Lightning's teardown, or once its members' results are written; one line, exit 143 (it was
    killed by the signal: the sweep said "was killed by SIGTERM" of a stack it had not
    stopped). Once every member has finished it says that the sweep run again trains nothing
    (it said to continue from the checkpoint, where nothing is left to train)."""
    folder, stopped = started_together(stack_sigterm)
    cells = [folder / "cells" / name for name in ("a", "b")]
    assert stopped.returncode == 143 and "Traceback" not in stopped.stderr, stopped.stderr[-2000:]
    then = {"read_stack_file": f"; {NOT_STARTED}", "TensorDataModule": (
        f"; stack s: {NOTHING}; run the "
        "same sweep again to start it over in its folder")}.get(
        where, "; stack s: every member has finished (its results are in its cell); run the "
               "same sweep again to end it, training nothing")
    assert stopped.stderr.strip().splitlines()[-1] == f"train.py: error: stopped by SIGTERM{then}"
    # (the members' cells are written at the end of their last epoch, before its checkpoint)
    assert all((cell / "results.json").is_file() == (where not in ("read_stack_file",
                                                                  "TensorDataModule"))
               for cell in cells)


@pytest.mark.parametrize("where, stop, said", [
    ("read_stack_file", KeyboardInterrupt, f"Ctrl-C (SIGINT); {NOT_STARTED}"),
    ("run_stack", "Terminated", "SIGTERM; it had begun: what it wrote is kept; run the same "
                                "command again to go on from it")], ids=["before", "begun"])
def test_a_stop_that_no_run_reports_says_whether_anything_was_written(
        tmp_path, data_dir, monkeypatch, capsys, where, stop, said):
    """A Ctrl-C or SIGTERM that no run, stack or sweep reported (a stack file being read, torch
    being imported; a stack's summary being printed) was a bare "stopped by SIGTERM": it says
    whether the command had begun, and so written anything, and how to go on (exit 130 / 143)."""
    import lotterynet.stack as stack_runner
    import lotterynet.stack_files as files_module
    from lotterynet.errors import Terminated

    stop = Terminated if stop == "Terminated" else stop

    def stopped(*args, **kwargs):
        raise stop
    stack_file, _ = stack_sigterm(tmp_path, data_dir, where)
    monkeypatch.setattr(files_module if where == "read_stack_file" else stack_runner, where,
                        stopped)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert main(stack_file[3:]) == (130 if stop is KeyboardInterrupt else 143)
    finally:  # (train.py's handler stays on its way out)
        signal.signal(signal.SIGTERM, previous)
    assert capsys.readouterr().err.strip().splitlines() == [f"train.py: error: stopped by {said}"]


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_train_py_stopped_as_it_imports_stops_in_one_line(tmp_path, data_dir, sent):
    """A Ctrl-C to ``train.py`` in its own imports (before its handlers: here as it imports
    lotterynet's command line, which ``-X importtime`` shows) was Python's KeyboardInterrupt
    traceback, and SIGTERM's default action killed it without a word (exit -15). It holds both
    back until its handlers take them: it stops in the one line, and with the exit code, of a
    stop a moment later (130 / 143), having written nothing. (A real process: Python's start.)"""
    out = tmp_path / "run"
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # (not inherited ignored)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", "train.py", *SMALL, "--data-dir", str(data_dir),
             "--out", str(out)], cwd=REPO, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    with proc:
        for line in proc.stderr:  # (each import as it ends: the package's, then its cli's)
            if line.rsplit("|", 1)[-1].strip() == "lotterynet":
                proc.send_signal(sent)
                break
        said = proc.stderr.read()
    said_as = "SIGTERM" if sent == signal.SIGTERM else "Ctrl-C (SIGINT)"
    assert proc.returncode == 128 + sent and "Traceback" not in said
    assert said.strip().splitlines()[-1] == f"train.py: error: stopped by {said_as}; {NOT_STARTED}"
    assert not out.exists()


STOPPED_AS_IT_EXITS = """
import atexit, os, runpy, signal, sys
atexit.register(os.kill, os.getpid(), int(sys.argv[1]))  # (as the interpreter exits)
sys.argv = ["train.py", *sys.argv[2:]]
runpy.run_path("train.py", run_name="__main__")
"""


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_train_py_stopped_as_it_exits_done_keeps_its_exit_code(sent):
    """A Ctrl-C or SIGTERM that found ``train.py`` done, its interpreter exiting (torch's
    teardown: a killed run's fuzzing landed there), met the handler its command put back: a
    finished run died by SIGTERM (exit 143 without a word: a scheduler counts it as failed,
    and its same command then refuses the finished folder) or printed "Exception ignored ...
    KeyboardInterrupt". Either ends it then with its own exit code: 0, nothing said.
    (A command done at once, --print-config, through the same handlers as a run's.)"""
    done = prefork.run([sys.executable, "-c", STOPPED_AS_IT_EXITS, str(int(sent)), "--arch",
                        "fc2", "--print-config"], cwd=REPO)
    assert (done.returncode, done.stderr) == (0, "")
    assert "  arch: fc2\n" in done.stdout


@pytest.mark.parametrize("entry", ["run", "run_stack"])
def test_a_run_stopped_by_sigterm_in_a_library_callers_process_puts_its_handler_back(
        tmp_path, data_dir, monkeypatch, entry):
    """run() or run_stack() called from a notebook or a service: a SIGTERM that stopped it left
    its handler installed, and the caller's process ignored every later SIGTERM (only
    train.py's process, on its way out, should). The handler the caller had is put back."""
    import lotterynet.run as run_module
    import lotterynet.stack as stack_runner
    from lotterynet.errors import Interrupted, Terminated

    data_module = run_module.TensorDataModule  # (run.data_module: a run's and a stack's)

    def terminated(*args, **kwargs):  # the signal lands while the data is read
        os.kill(os.getpid(), signal.SIGTERM)
        return data_module(*args, **kwargs)

    monkeypatch.setattr(run_module, "TensorDataModule", terminated)
    config = {"arch": "fc2", "structure": "dense", "limit_train": 600, "val_size": 100,
              "seed": 3, "epochs": 1, "data_dir": str(data_dir), "out": str(tmp_path / "run")}

    def callers(signum, frame):  # the caller's own handler
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, callers)
    try:
        with pytest.raises((Terminated, Interrupted)):
            if entry == "run":
                run_module.run(make_config(config))
            else:
                member = {k: v for k, v in config.items() if k != "out"}  # (its cell's)
                stack_runner.run_stack([member, {**member, "sparsity": 0.9}], tmp_path / "stack")
        assert signal.getsignal(signal.SIGTERM) is callers
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_run_in_a_library_callers_process_leaves_its_environment_as_it_was(
        tmp_path, data_dir, monkeypatch):
    """run() records its pid in LOTTERYNET_LAUNCHER_PID for the DDP ranks it launches; it left
    it there, so a notebook's later torchrun workers (LOCAL_RANK > 0) took that process for
    their launcher and tied themselves to it. The variable is there during the run only."""
    import pytorch_lightning as pl

    import lotterynet.process_lifetime as lifetime
    import lotterynet.run as run_module

    monkeypatch.delenv(lifetime.LAUNCHER_ENV, raising=False)
    during, fit = [], pl.Trainer.fit

    def noting_the_launcher(*args, **kwargs):  # (where Lightning would launch the ranks)
        during.append(os.environ.get(lifetime.LAUNCHER_ENV))
        return fit(*args, **kwargs)
    monkeypatch.setattr(pl.Trainer, "fit", noting_the_launcher)
    run_module.run(make_config({"arch": "fc2", "structure": "dense", "limit_train": 256,
                                "val_size": 100, "epochs": 1, "data_dir": str(data_dir),
                                "out": str(tmp_path / "run")}))
    assert during == [str(os.getpid())] and lifetime.LAUNCHER_ENV not in os.environ
    monkeypatch.setenv(lifetime.LAUNCHER_ENV, "12345")  # (a caller's own value is put back)
    with lifetime.tying_launched_ranks():
        assert os.environ[lifetime.LAUNCHER_ENV] == str(os.getpid())
    assert os.environ[lifetime.LAUNCHER_ENV] == "12345"


@pytest.mark.parametrize("entry", ["run", "run_stack", "failed run"])
def test_a_run_in_a_library_callers_process_leaves_its_global_random_generators_as_they_were(
        tmp_path, data_dir, entry):
    """run() and run_stack() seed torch's, numpy's and Python's global generators with the
    run's seed (pl.seed_everything) and left them so: a notebook's or a script's draws after
    a run were the same after every run, whatever it had seeded, and $PL_GLOBAL_SEED stayed set
    for a later Lightning fit of its own. They are as they were, also after a run that failed
    once seeded (its data set missing)."""
    import random

    import numpy as np

    import lotterynet.run as run_module
    import lotterynet.stack as stack_runner
    from lotterynet.errors import DatasetNotFound

    torch.manual_seed(1234), np.random.seed(1234), random.seed(1234)  # the caller's
    torch.rand(3), np.random.rand(3), random.random()  # (and drawn from since)
    before = (torch.get_rng_state(), np.random.get_state(), random.getstate(),
              dict(os.environ))
    config = {"arch": "fc2", "structure": "dense", "sparsity": 0.5, "seed": 3, "limit_train": 128,
              "val_size": 100, "epochs": 1, "data_dir": str(data_dir), "progress_bar": False}
    if entry == "run":
        run_module.run(make_config({**config, "out": str(tmp_path / "run")}))
    elif entry == "run_stack":
        stack_runner.run_stack([config, {**config, "sparsity": 0.9}], tmp_path / "stack")
    else:
        with pytest.raises(DatasetNotFound):
            run_module.run(make_config({**config, "data_dir": str(tmp_path / "none"),
                                        "download": False, "out": str(tmp_path / "run")}))
    torch_state, (kind, keys, pos, has_gauss, gauss), python_state, environment = before
    assert torch.equal(torch.get_rng_state(), torch_state)
    now = np.random.get_state()
    assert (now[0], now[2:]) == (kind, (pos, has_gauss, gauss)) and np.array_equal(now[1], keys)
    assert random.getstate() == python_state
    assert dict(os.environ) == environment


@contextlib.contextmanager
def float64_default():
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("entry", ["run", "run_stack"])
@pytest.mark.parametrize("caller", [torch.no_grad, torch.inference_mode, float64_default])
def test_a_run_trains_whatever_its_callers_grad_mode_and_dtype_and_leaves_them(
        tmp_path, data_dir, entry, caller):
    """Lightning's fit turns autograd on with ``torch.set_grad_enabled(True)``, never put back: a
    notebook cell's run() or run_stack() inside ``torch.no_grad()`` left the rest of the block
    (and the thread, after it) building autograd graphs; inside ``torch.inference_mode()`` or
    under a float64 default dtype it failed in its first step (no grad_fn; float64 weights,
    float32 batches). It trains as outside them (the same metrics), the caller's mode and dtype
    put back."""
    import lotterynet.run as run_module
    import lotterynet.stack as stack_runner

    config = {"arch": "fc2", "structure": "dense", "sparsity": 0.5, "limit_train": 128,
              "val_size": 100, "epochs": 1, "data_dir": str(data_dir), "progress_bar": False}

    def metrics(out):
        if entry == "run":
            results = [run_module.run(make_config({**config, "out": str(out)}))]
        else:
            results = stack_runner.run_stack([config, {**config, "sparsity": 0.9}], out)
        return [(result["test_acc"], result["test_loss"]) for result in results]

    with caller():
        grad, inference, dtype = (torch.is_grad_enabled(), torch.is_inference_mode_enabled(),
                                  torch.get_default_dtype())
        called = metrics(tmp_path / "called")
        assert (torch.is_grad_enabled(), torch.is_inference_mode_enabled(),
                torch.get_default_dtype()) == (grad, inference, dtype)
    assert called == metrics(tmp_path / "plain")


def test_a_run_in_a_library_callers_process_leaves_torchs_flags_as_they_were(
        tmp_path, data_dir, monkeypatch):
    """Lightning's Trainer sets --trainer.deterministic and --trainer.benchmark process-wide,
    and the config's check of its options builds one: after such a run, or only make_config,
    torch.use_deterministic_algorithms(True), cudnn.benchmark and $CUBLAS_WORKSPACE_CONFIG
    stayed set, and a notebook's later GPU code raised on an op with no deterministic
    implementation. They are as the caller had them."""
    import lotterynet.run as run_module
    from lotterynet.trainer_options import CUBLAS_ENV

    def flags():
        return (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # (put back after the test)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setenv(CUBLAS_ENV, ":16:8")  # the caller's own
    before = flags(), dict(os.environ)
    try:
        config = make_config({"arch": "fc2", "structure": "dense", "limit_train": 128,
                              "val_size": 100, "epochs": 1, "data_dir": str(data_dir),
                              "progress_bar": False, "out": str(tmp_path / "run"),
                              "trainer": {"deterministic": True, "benchmark": True}})
        assert (flags(), dict(os.environ)) == before
        run_module.run(config)
        assert (flags(), dict(os.environ)) == before
    finally:
        torch.use_deterministic_algorithms(before[0][0], warn_only=before[0][1])


def test_a_rank_another_launcher_started_stops_on_sigterm_and_runs_twice(monkeypatch):
    """A DDP rank that torchrun (not a lotterynet run) started has LOCAL_RANK > 0 and records
    itself as the run its own ranks die with: SIGTERM outside Lightning's fit (reading the
    data) made its handler signal its own process, again and again (a RecursionError, not the
    one line and exit 143), and a second run() in it exited at once (it 'died with' itself)."""
    import lotterynet.process_lifetime as lifetime
    from lotterynet.errors import Terminated

    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.delenv(lifetime.LAUNCHER_ENV, raising=False)
    tied = []
    monkeypatch.setattr(lifetime, "die_with_parent", tied.append)
    with lifetime.tying_launched_ranks():
        pass
    with lifetime.tying_launched_ranks():  # (a second run in the same process)
        assert lifetime.launching_run() is None
    assert tied == [] and lifetime.launching_run() is None
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(Terminated), lifetime.stopping_on_sigterm():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # (the signal lands here)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_second_ctrl_c_while_train_py_stops_is_ignored():
    """train.py's first Ctrl-C stops the run (KeyboardInterrupt); more while it stops are
    ignored. Lightning ignored them only until its teardown put back the handler it found
    (Python's), so a second Ctrl-C a moment later raised a traceback in the stop (W&B's
    finish, an atexit hook) or killed the process by the signal at its exit. A block without
    Ctrl-C puts Python's handler back; a library caller's (not ending the process) leaves it
    alone."""
    import lotterynet.process_lifetime as lifetime

    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (as Python starts train.py)
    try:
        with lifetime.stopping_on_sigterm():
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with lifetime.stopping_on_sigterm(ends_the_process=True):
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with pytest.raises(KeyboardInterrupt), lifetime.stopping_on_sigterm(
                ends_the_process=True):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # (the signal lands here)
        try:
            os.kill(os.getpid(), signal.SIGINT)  # (the process on its way out)
            time.sleep(0.2)
        except KeyboardInterrupt:
            pytest.fail("a second Ctrl-C while the run stops raised KeyboardInterrupt")
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # (to the process's end)
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


class StoppedInAFinalizer:
    """An object whose finalizer the signal ``sent`` lands in (as a Ctrl-C did in a regex's
    ``Group.__del__`` while the garbage collector ran during a run's start)."""

    def __init__(self, sent: int):
        self.sent = sent

    def __del__(self):
        signal.raise_signal(self.sent)  # (its handler runs here, in the finalizer)


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_that_lands_in_a_finalizer_still_stops_train_py(sent):
    """A Ctrl-C or SIGTERM whose handler ran inside a finalizer raised its stop there, which
    Python drops ("Exception ignored in: <function Group.__del__ ...>", a traceback): the run
    trained on to its end, exit 0, and, its stop raised, ignored every Ctrl-C or SIGTERM
    after. The stop is raised again once the finalizer is over: train.py stops (130 / 143)."""
    import lotterynet.process_lifetime as lifetime
    from lotterynet.errors import Terminated

    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    hook = sys.unraisablehook
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (as Python starts train.py)
    try:
        with pytest.raises(KeyboardInterrupt if sent == signal.SIGINT else Terminated), \
                lifetime.stopping_on_sigterm(ends_the_process=True):
            StoppedInAFinalizer(sent)  # (dropped at once: its finalizer runs here)
            time.sleep(5)  # (the stop, raised again, lands here)
        assert sys.unraisablehook is hook
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


@pytest.mark.parametrize("val_size", ["100", "0"])
def test_a_diverging_run_stops_with_one_line_and_keeps_its_last_finite_checkpoint(
        tmp_path, data_dir, capsys, val_size):
    """lr 1e30 turns the scores into NaN in the first epoch; NaN scores keep no entry, so the
    run used to finish with chance accuracy and the full kept count in results.json. Without
    validation (the paper recipes') divergence is found at the epoch's end, after its line was
    made, which waits for the epoch's checkpoint: it is printed all the same (it was not)."""
    out = tmp_path / "run"
    assert main([*SMALL, "--epochs", "2", "--lr", "1e30", "--data-dir", str(data_dir),
                 "--val-size", val_size, "--out", str(out)]) == 3  # (its own: a sweep tells a
    printed = capsys.readouterr()  # job that diverged by it)
    assert [line.startswith("epoch 1/2 ") for line in printed.out.splitlines()
            if line.startswith("epoch ")] == ([True] if val_size == "0" else [])
    err = printed.err.strip().splitlines()
    assert len(err) == 1 and "diverged in epoch 1" in err[0] and "scores" in err[0], err
    assert "--lr" in err[0] and "no checkpoint was written" in err[0]
    assert not (out / "results.json").exists()
    assert not (out / "checkpoints").exists() or not list((out / "checkpoints").iterdir())


def test_divergence_in_a_later_epoch_keeps_the_epoch_before(tmp_path, data_dir, monkeypatch,
                                                             capsys):
    """A NaN that appears in epoch 2 stops the run before epoch 2's checkpoint: the checkpoint
    left is epoch 1's, the same bytes of model state as a run stopped after epoch 1."""
    from lotterynet.module import EdgePopupModule

    def poisoned(self, outputs, batch, batch_idx):  # after the step's optimizer update
        if self.current_epoch == 1:
            with torch.no_grad():
                self.model[1].structure.weight.scores[0, 0] = float("nan")

    common = [*SMALL, "--epochs", "3", "--data-dir", str(data_dir)]
    assert main([*common, "--stop-after", "1", "--out", str(tmp_path / "stopped")]) == 0
    monkeypatch.setattr(EdgePopupModule, "on_train_batch_end", poisoned, raising=False)
    out = tmp_path / "run"
    assert main([*common, "--out", str(out)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "diverged in epoch 2" in err[0] and "1.structure.weight.scores" \
        in err[0] and str(out / "checkpoints" / "last.ckpt") in err[0], err
    kept, stopped = (load_checkpoint(r / "checkpoints" / "last.ckpt")
                     for r in (out, tmp_path / "stopped"))
    assert kept["epoch"] == stopped["epoch"] == 0
    assert kept["state_dict"].keys() == stopped["state_dict"].keys()
    assert all(torch.equal(kept["state_dict"][k], v) for k, v in stopped["state_dict"].items())
    assert not (out / "results.json").exists()


@pytest.mark.parametrize("device, epoch", [("cuda", 2), ("cpu", 1), ("cpu", None)])
def test_memory_running_out_in_training_is_one_line_and_exit_4(tmp_path, data_dir, monkeypatch,
                                                               capsys, device, epoch):
    """An out-of-memory error in a training step (CUDA's OutOfMemoryError, the CPU allocator's
    RuntimeError) was a traceback; it is one line naming the run, the epoch and what needs less
    memory, with how to resume where a checkpoint was written, exit 4 (not bad input; its
    own, by which a sweep tells a job that ran out of memory). So in
    the test of the trained model (``epoch`` None), which was a traceback too: its resume
    tests it."""
    from lotterynet.module import EdgePopupModule

    refused = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 "
                                     "has a total capacity of 79.15 GiB") if device == "cuda" \
        else RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not "
                          "enough memory: you tried to allocate 4294967296 bytes.")
    name = "training_step" if epoch else "test_step"
    step = getattr(EdgePopupModule, name)

    def out_of_memory(self, batch, batch_idx):
        if epoch is None or self.current_epoch == epoch - 1:
            raise refused
        return step(self, batch, batch_idx)

    monkeypatch.setattr(EdgePopupModule, name, out_of_memory)
    out = tmp_path / "run"
    assert main([*SMALL, "--epochs", "2", "--batch-size", "200", "--data-dir", str(data_dir),
                 "--out", str(out)]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    checkpoint = out / "checkpoints" / "last.ckpt"
    when = f"in training epoch {epoch}" if epoch else "testing its trained model"
    then = {2: f", or resume with --resume {checkpoint} (written at the end of epoch 1) where "
               f"more memory is free",
            1: f"; {NOTHING}",
            None: f", or resume with --resume {checkpoint} to test (written at the end of epoch "
                  f"2) where more memory is free"}
    size = f" (one tensor alone: {'2.00' if device == 'cuda' else '4.0'} GiB)"
    assert err == [f"train.py: error: run {str(out)!r}: memory ran out {when}{size}; a new run "
                   f"with a smaller --batch-size (now 200) or a narrower model (--pairs, "
                   f"--hidden) needs less{then[epoch]}"]
    assert not (out / "results.json").exists()
    if epoch is None:  # the hint, followed
        monkeypatch.setattr(EdgePopupModule, name, step)
        assert main(["--resume", str(checkpoint)]) == 0
        assert json.loads((out / "results.json").read_text())["epochs_done"] == 2


def ctrl_c_in_the_save_of(epoch: int, monkeypatch) -> None:
    """Ctrl-C in the save of epoch ``epoch``'s checkpoint (before it is written)."""
    from lotterynet.run_callbacks import CheckedCheckpointIO

    save = CheckedCheckpointIO.save_checkpoint

    def ctrl_c_in_epoch(self, checkpoint, path, storage_options=None):
        if checkpoint["epoch"] == epoch - 1:
            raise KeyboardInterrupt
        save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(CheckedCheckpointIO, "save_checkpoint", ctrl_c_in_epoch)


@pytest.mark.parametrize("epoch", [1, 2])
def test_an_epochs_line_is_printed_once_its_checkpoint_is_written(tmp_path, data_dir,
                                                                 monkeypatch, capsys, epoch):
    """An epoch's line was printed before its checkpoint was written (Lightning runs checkpoint
    callbacks last): Ctrl-C in that save left on the screen an epoch that no checkpoint held,
    and the resume went on from the epoch before. Ctrl-C in epoch 1's or 2's save: the lines
    are those of the epochs saved, and the resume goes on from the last of them."""
    ctrl_c_in_the_save_of(epoch, monkeypatch)
    out = tmp_path / "run"
    assert main([*SMALL, "--epochs", "2", "--data-dir", str(data_dir), "--out", str(out)]) == 130
    then = {1: START_OVER, 2: f"resume with --resume {out / 'checkpoints' / 'last.ckpt'} "
                           f"(written at the end of epoch 1)"}
    captured = capsys.readouterr()
    assert [line.split(" | ")[0] for line in captured.out.splitlines()
            if line.startswith("epoch ")] == [f"epoch {e}/2" for e in range(1, epoch)]
    assert captured.err.strip().splitlines()[-1] == \
        f"train.py: error: stopped by Ctrl-C (SIGINT); {then[epoch]}"


def test_the_resume_line_of_a_run_in_a_relative_out_names_its_epoch(tmp_path, data_dir,
                                                                   monkeypatch, capsys):
    """Lightning saves the run's checkpoint under the absolute path of a relative ``--out``:
    the resume line, which looked it up by the relative one, named no epoch."""
    ctrl_c_in_the_save_of(2, monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert main([*SMALL, "--epochs", "2", "--data-dir", str(data_dir), "--out", "run"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "train.py: error: stopped by Ctrl-C (SIGINT); resume with --resume "
        "run/checkpoints/last.ckpt (written at the end of epoch 1)")


def test_a_run_stopped_before_its_first_checkpoint_starts_over_with_the_same_command(
        tmp_path, data_dir, monkeypatch, capsys):
    """The same command then said 'run directory ... is not empty; pass --overwrite': it
    starts the run over in its folder, saying so (also where the stop came before the first
    epoch's rows). A folder holding anything more (a file of the user's, a history past the
    first epoch whose checkpoint is gone, a history alone) is still refused, and kept."""
    from lotterynet.run_dir import left_before_a_checkpoint

    ctrl_c_in_the_save_of(1, monkeypatch)
    out = tmp_path / "run"
    argv = [*SMALL, "--epochs", "1", "--data-dir", str(data_dir), "--out", str(out)]
    assert main(argv) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"train.py: error: stopped by Ctrl-C (SIGINT); {START_OVER}"
    assert sorted(map(str, tree(out))) == ["hparams.yaml", "metrics.csv"]
    history = (out / "metrics.csv").read_text()
    before_epoch_1 = tmp_path / "before-epoch-1"  # (its rows: no epoch column yet)
    shutil.copytree(out, before_epoch_1)
    (before_epoch_1 / "metrics.csv").write_text("lr,step\n0.1,0\n")
    assert left_before_a_checkpoint(before_epoch_1)
    for name, extra in (("notes.txt", "mine"),
                        ("metrics.csv", history + ",,1,,,,18,,,,,\n"),  # (epoch 2's row)
                        ("hparams.yaml", None)):
        other = tmp_path / name
        shutil.copytree(out, other)
        if extra is None:
            (other / name).unlink()
        else:
            (other / name).write_text(extra)
        before = tree(other)
        assert main([*argv[:-1], str(other)]) == 2
        assert "is not empty; pass --overwrite" in capsys.readouterr().err
        assert tree(other) == before
    monkeypatch.undo()
    assert main(argv) == 0
    assert f"run directory {str(out)!r} holds only what a run stopped before its first " \
           f"checkpoint left: the run starts over there" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["epochs_done"] == 1
    assert [row["params/maskable"] for row in metric_rows(out)
            if row["params/maskable"]] == ["397000"]  # (the first attempt's history replaced)


def test_a_run_that_failed_before_its_fit_starts_over_with_the_same_command(
        tmp_path, data_dir, monkeypatch, capsys):
    """A run that failed before its fit (W&B failing to start, at the first metrics it logs:
    the parameter counts) left them in metrics.csv, and its wandb-id, without hparams.yaml;
    the corrected command was refused, 'run directory ... is not empty; pass --overwrite'. It
    starts over there, as after a Ctrl-C before the first checkpoint."""
    from lotterynet.loggers import RunWandbLogger

    def fails(*args, **kwargs):
        raise RuntimeError("W&B failed to start")

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    out = tmp_path / "run"
    argv = [*SMALL, "--epochs", "1", "--wandb", "--data-dir", str(data_dir), "--out", str(out)]
    with monkeypatch.context() as failing, pytest.raises(RuntimeError, match="failed to start"):
        failing.setattr(RunWandbLogger, "log_metrics", fails)
        main(argv)
    assert sorted(map(str, tree(out))) == ["metrics.csv", "wandb-id"]
    assert main(argv) == 0
    assert f"run directory {str(out)!r} holds only what a run stopped before its first " \
           f"checkpoint left: the run starts over there" in capsys.readouterr().out


def test_a_run_stopped_by_ctrl_c_ends_its_wandb_run_with_its_exit_code(tmp_path, data_dir,
                                                                       monkeypatch):
    """A run stopped by Ctrl-C (exit 130) left its W&B run to W&B's exit hook, which recorded
    Lightning's exit 1, a failure: it is finished with the command's 130."""
    from lotterynet.loggers import read_wandb_records

    ctrl_c_in_the_save_of(1, monkeypatch)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    assert main([*SMALL, "--epochs", "1", "--wandb", "--data-dir", str(data_dir), "--out",
                 str(tmp_path / "run")]) == 130
    log, = (tmp_path / "wandb-dir" / "wandb").glob("offline-run-*/run-*.wandb")
    assert [r.exit.exit_code for r in read_wandb_records(log)
            if r.WhichOneof("record_type") == "exit"] == [130]


def test_a_target_folder_is_taken_only_where_a_stopped_run_left_nothing_to_keep(tmp_path,
                                                                              data_dir):
    """A target folder without results or checkpoint was deleted, to train the target again,
    whenever its entries bore the names a run stopped before its first checkpoint leaves: a
    copy of an earlier checkpoint in its ``checkpoints/``, or a history past the first epoch
    whose checkpoint is gone, went with it. The targets take a folder by the run's own rule
    (``left_before_a_checkpoint``), which keeps those; a resumed run carries the history of
    its checkpoint's epochs, which is no reason to keep its folder."""
    from lotterynet.errors import ConfigError
    from lotterynet.run_dir import left_before_a_checkpoint
    from lotterynet.targets import trained_target

    header = "epoch,step,train/acc\n"
    for name, files in (("copy", {"checkpoints/epoch=0.ckpt": "mine", "hparams.yaml": ""}),
                        ("history", {"metrics.csv": f"{header}0,3,0.5\n1,7,0.6\n",
                                     "hparams.yaml": ""})):
        out = tmp_path / name
        for file, text in files.items():
            (out / file).parent.mkdir(parents=True, exist_ok=True)
            (out / file).write_text(text)
        (out / "checkpoints").mkdir(exist_ok=True)
        before = tree(out)
        with pytest.raises(ConfigError, match="holds an unfinished run with no checkpoint"):
            trained_target("pensia_fc2", data_dir=data_dir, epochs=2, limit_train=64, out=out)
        assert tree(out) == before
    assert [left_before_a_checkpoint(tmp_path / "history", resumed) for resumed in (0, 1)] == \
        [False, True]  # (resumed from a checkpoint of one epoch: epoch 1 was being trained)


@pytest.mark.parametrize("epoch", [1, 2])
def test_a_stopped_run_tells_its_caller_the_epochs_of_its_checkpoint(tmp_path, data_dir,
                                                                    monkeypatch, epoch):
    """A sweep named the epoch its stopped cell goes on from by reading the cell's checkpoint
    again (seconds for a big model, in a scheduler's SIGTERM grace period): ``Interrupted``
    carries it, None where no checkpoint was written."""
    from lotterynet.config import make_config
    from lotterynet.errors import Interrupted
    from lotterynet.run import run

    ctrl_c_in_the_save_of(epoch, monkeypatch)
    config = make_config({"arch": "fc2", "structure": "dense", "limit_train": 600,
                          "val_size": 100, "epochs": 2, "progress_bar": False,
                          "data_dir": str(data_dir), "out": str(tmp_path / "run")})
    with pytest.raises(Interrupted) as stopped:
        run(config)
    assert stopped.value.checkpoint_epochs == {1: None, 2: 1}[epoch]


def test_the_resume_line_names_the_epochs_of_the_runs_own_checkpoint(tmp_path):
    """A checkpoint that a user's callback saves through the run's checkpoint IO (every N
    steps, elsewhere) after the run's own ``last.ckpt`` made the resume line name its epoch."""
    from types import SimpleNamespace

    from lotterynet.run_callbacks import CheckedCheckpointIO
    from lotterynet.run_stops import how_to_go_on

    io, last = CheckedCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    for path, epoch in ((last, 1), (tmp_path / "extra" / "step=150.ckpt", 2)):
        path.parent.mkdir(parents=True)
        io.save_checkpoint({"epoch": epoch}, path)
    trainer = SimpleNamespace(strategy=SimpleNamespace(checkpoint_io=io))
    assert how_to_go_on(last, trainer=trainer).endswith("(written at the end of epoch 2)")


@pytest.mark.parametrize("asked, size", [(1048576, "1.0 MiB"), (536870912, "0.5 GiB"),
                                         (4294967296, "4.0 GiB"), (300, "300 bytes")])
def test_the_size_memory_refused_is_said_in_a_unit_it_shows_in(asked, size):
    """The CPU allocator's byte count was always said in GiB, one decimal: a tensor of 1 MiB
    refused was '(one tensor alone: 0.0 GiB)'."""
    from lotterynet.errors import memory_refused

    refused = RuntimeError(f"DefaultCPUAllocator: not enough memory: you tried to allocate "
                           f"{asked} bytes.")
    assert memory_refused(refused) == f" (one tensor alone: {size})"


def test_a_diverging_ddp_run_says_so_once(tmp_path, data_dir):
    """Every rank stops at the same epoch end; rank 0 speaks for all (one line, exit 3)."""
    proc = prefork.run(
        [sys.executable, "train.py", *SMALL, "--accelerator", "cpu", "--devices", "2",
         "--epochs", "1", "--lr", "1e30", "--data-dir", str(data_dir),
         "--out", str(tmp_path / "run")], cwd=REPO, timeout=600)
    assert proc.returncode == 3
    errors = [line for line in proc.stderr.splitlines() if line.startswith("train.py: error")]
    assert len(errors) == 1 and "diverged in epoch 1" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


SIGNAL_AFTER_CHECKPOINT = """
import os, signal, sys
from lotterynet.run_callbacks import CheckedCheckpointIO
from lotterynet.cli import main
save = CheckedCheckpointIO.save_checkpoint
def save_then_signal(self, *args, **kwargs):
    save(self, *args, **kwargs)
    os.kill(os.getpid(), getattr(signal, os.environ["SEND"]))
CheckedCheckpointIO.save_checkpoint = save_then_signal
sys.exit(main(sys.argv[1:]))
"""


def signalled(argv: list[str], name: str) -> subprocess.CompletedProcess:
    """``train.py ARGV`` sent signal ``name`` by itself once its first checkpoint is written."""
    return prefork.run([sys.executable, "-c", SIGNAL_AFTER_CHECKPOINT, *argv], cwd=REPO,
                       env={**os.environ, "SEND": name})


def signalled_after_a_checkpoint(folder: Path, data_dir: Path, name: str,
                                 **_) -> tuple[list[str], dict]:
    """What :func:`signalled` runs: a 3-epoch run into ``folder / "stopped"``."""
    return ([sys.executable, "-c", SIGNAL_AFTER_CHECKPOINT, *SMALL, "--epochs", "3",
             "--data-dir", str(data_dir), "--out", str(folder / "stopped")],
            {**os.environ, "SEND": name})


@pytest.mark.parametrize("name, code, said", [("SIGTERM", 143, "SIGTERM"),
                                               ("SIGINT", 130, "Ctrl-C (SIGINT)")])
def test_stopped_by_a_signal_says_so_and_is_not_a_success(whole_and_stopped, started_together,
                                                          name, code, said):
    """Lightning ends a run stopped by SIGTERM with exit status 0 and no word (a scheduler, or
    ``train.py && next``, took it for done): the run says what stopped it and how to go on,
    exits 128 + the signal, and its resume ends where the whole run ends, history included
    (the learning-rate rows logged between the checkpoint and the stop, once)."""
    whole, _ = whole_and_stopped
    folder, stopped = started_together(signalled_after_a_checkpoint)
    run = folder / "stopped"
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert stopped.returncode == code, stopped.stderr[-2000:]
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"train.py: error: stopped by {said}; resume with --resume {checkpoint} (written at "
        f"the end of epoch 1)")
    assert "Detected KeyboardInterrupt" not in stopped.stderr  # (Lightning's, a line before)
    assert "Received SIGTERM" not in stopped.stderr
    assert load_checkpoint(checkpoint)["epoch"] == 0 and not (run / "results.json").exists()
    assert main(["--resume", str(checkpoint)]) == 0
    assert_same_history_and_result(run, whole)


#: SLURM's notice that a job's time is nearly up (``sbatch --signal=USR1@90``), sent once, as
#: the run's first checkpoint is written.
SLURM_NOTICE_AFTER_CHECKPOINT = """
import os, signal, sys
from lotterynet.run_callbacks import CheckedCheckpointIO
from lotterynet.cli import main
save, sent = CheckedCheckpointIO.save_checkpoint, []
def save_then_notice(self, *args, **kwargs):
    save(self, *args, **kwargs)
    if not sent:
        sent.append(True)
        os.kill(os.getpid(), signal.SIGUSR1)
CheckedCheckpointIO.save_checkpoint = save_then_notice
sys.exit(main(sys.argv[1:]))
"""


def test_slurms_sigusr1_in_a_batch_job_stops_the_run_as_sigterm_does(whole_and_stopped,
                                                                      tmp_path, data_dir):
    """In a SLURM batch job Lightning's auto-requeue took SIGUSR1: it wrote ``hpc_ckpt_1.ckpt``
    into the run's folder, failed to run ``scontrol requeue`` (here: "scontrol: not found"),
    trained on, then tested the model it had loaded back from that checkpoint, exit 0. The
    notice stops the run as SIGTERM does: one line, exit 143, resumed by ``--resume`` to the
    uninterrupted run's result."""
    whole, _ = whole_and_stopped
    run = tmp_path / "run"
    checkpoint = run / "checkpoints" / "last.ckpt"
    stopped = prefork.run([sys.executable, "-c", SLURM_NOTICE_AFTER_CHECKPOINT, *SMALL,
                           "--epochs", "3", "--data-dir", str(data_dir), "--out", str(run)],
                          cwd=REPO, env={**os.environ, **SLURM_BATCH_JOB}, timeout=600)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"train.py: error: stopped by SIGTERM; resume with --resume {checkpoint} (written at "
        f"the end of epoch 1)")
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "hparams.yaml",
                                                     "metrics.csv"]
    assert main(["--resume", str(checkpoint)]) == 0
    assert_same_history_and_result(run, whole)


SIGNAL_IN = """
import os, signal, sys
import lotterynet.run as run
from lotterynet.cli import main
name = os.environ["IN"]
called = getattr(run, name)
def interrupted(*args, **kwargs):
    os.kill(os.getpid(), getattr(signal, os.environ["SEND"]))
    return called(*args, **kwargs)
setattr(run, name, interrupted)
sys.exit(main(sys.argv[1:]))
"""


def signalled_in(folder: Path, data_dir: Path, where: str, name: str) -> tuple[list[str], dict]:
    """A 3-epoch run into ``folder / "run"`` sent signal ``name`` by itself in ``where``."""
    return ([sys.executable, "-c", SIGNAL_IN, *SMALL, "--epochs", "3", "--data-dir",
             str(data_dir), "--out", str(folder / "run")],
            {**os.environ, "IN": where, "SEND": name})


@pytest.mark.parametrize("where, name", [  # (each signal before the Trainer and after it)
    ("build_module", "SIGINT"), ("write_ticket", "SIGINT"), ("TensorDataModule", "SIGTERM"),
    ("write_json_atomic", "SIGTERM")])
def test_a_signal_outside_the_trainer_is_one_line_too(whole_and_stopped, started_together,
                                                      where, name):
    """Ctrl-C or SIGTERM before the Trainer runs (the data being read, the model built) or
    after its test (the ticket, the results being written) is said in one line and exits 130
    / 143 as in training (Ctrl-C was a traceback; SIGTERM killed the run without a word); the
    run stopped after its test leaves no part of a file and resumes to the same result."""
    whole, _ = whole_and_stopped
    folder, stopped = started_together(signalled_in)
    run = folder / "run"
    checkpoint = run / "checkpoints" / "last.ckpt"
    code, said = (130, "Ctrl-C (SIGINT)") if name == "SIGINT" else (143, "SIGTERM")
    assert stopped.returncode == code and "Traceback" not in stopped.stderr, \
        stopped.stderr[-2000:]
    then = f"; resume with --resume {checkpoint} to test (written at the end of epoch 3)" \
        if where.startswith("write") else f"; {START_OVER}"
    assert stopped.stderr.strip().splitlines()[-1] == f"train.py: error: stopped by {said}{then}"
    if where.startswith("write"):
        assert not (run / "results.json").exists()
        assert not list(run.rglob(".*.tmp*"))  # (no part of a ticket or results file)
        assert main(["--resume", str(checkpoint)]) == 0
        assert_same_history_and_result(run, whole)


@pytest.mark.parametrize("where,out", [("TensorDataModule", False), ("TensorDataModule", True),
                                       ("training_step", True)])
def test_a_resumed_run_stopped_by_sigterm_before_its_own_checkpoint_names_the_one_it_resumed(
        whole_and_stopped, tmp_path, monkeypatch, capsys, where, out):
    """A resumed run stopped by SIGTERM before its fit (the data being read) said only "stopped
    by SIGTERM", and one resumed into a new --out stopped in its fit before its first epoch
    there ended said there was no checkpoint to resume from; the checkpoint it resumed is
    there to resume again, and the line says so as a stop after a checkpoint does (a new run
    stopped before its first has none: its line says to start it over, as above): with the
    --out while that holds nothing (the hint followed resumes there), else into an empty one
    (without --out the hint would continue the checkpoint's own run, and into one that holds
    files a resume is refused)."""
    import lotterynet.run as run_module
    from lotterynet.module import EdgePopupModule

    whole, stopped = whole_and_stopped
    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    checkpoint = run / "checkpoints" / "last.ckpt"
    owner = run_module if where == "TensorDataModule" else EdgePopupModule
    called = getattr(owner, where)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return called(*args, **kwargs)

    new = tmp_path / "new"
    with monkeypatch.context() as patched:
        patched.setattr(owner, where, signalled)
        previous = signal.getsignal(signal.SIGTERM)
        try:
            assert main(["--resume", str(checkpoint), *(["--out", str(new)] if out else [])]) \
                == 143
        finally:  # (train.py's handler stays on its way out)
            signal.signal(signal.SIGTERM, previous)
    err = capsys.readouterr().err.strip().splitlines()
    # (in its own folder the epoch its checkpoint holds, read off the file: it said none)
    then = f"resume with --resume {checkpoint}" + (" (written at the end of epoch 1)"
        if not out else f" --out {new}" if where == "TensorDataModule" else
        f" and an empty --out ({str(new)!r} holds this attempt's files)")
    assert err[-1] == f"train.py: error: stopped by SIGTERM; {then}"
    assert load_checkpoint(checkpoint)["epoch"] == 0 and not (run / "results.json").exists()
    if out and where == "TensorDataModule":  # the hint, followed
        assert main(["--resume", str(checkpoint), "--out", str(new)]) == 0
        assert_same_history_and_result(new, whole)


def test_an_overwrite_stopped_before_its_fit_does_not_name_the_old_runs_checkpoint(
        whole_and_stopped, tmp_path, data_dir, monkeypatch, capsys):
    """``--out R --overwrite`` stopped while its data is read (R's old run not yet cleared)
    said "resume with --resume R/checkpoints/last.ckpt": the old run's checkpoint, of another
    config. A fresh run has no checkpoint to resume before its fit: its line says that the same
    command (--overwrite and all) starts it over."""
    import lotterynet.run as run_module

    _, stopped = whole_and_stopped
    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    data_module = run_module.TensorDataModule

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return data_module(*args, **kwargs)

    monkeypatch.setattr(run_module, "TensorDataModule", signalled)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert main([*SMALL, "--epochs", "2", "--data-dir", str(data_dir), "--out", str(run),
                     "--overwrite"]) == 143
    finally:  # (train.py's handler stays on its way out)
        signal.signal(signal.SIGTERM, previous)
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"train.py: error: stopped by SIGTERM; {START_OVER}"


def test_a_fresh_run_stopped_before_its_fit_starts_over_with_the_same_command(
        tmp_path, data_dir, monkeypatch, capsys):
    """A new run stopped by Ctrl-C once its folder was held and its loggers made, before its
    fit, said a bare "stopped by Ctrl-C (SIGINT)": it says there is no checkpoint and that the
    same command starts it over in its folder, which it does (no --overwrite needed)."""
    import lotterynet.run as run_module

    make_trainer = run_module.make_trainer

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return make_trainer(*args, **kwargs)

    out = tmp_path / "run"
    argv = [*SMALL, "--epochs", "1", "--data-dir", str(data_dir), "--out", str(out)]
    with monkeypatch.context() as patched:
        patched.setattr(run_module, "make_trainer", interrupted)
        assert main(argv) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"train.py: error: stopped by Ctrl-C (SIGINT); {START_OVER}"
    assert out.is_dir()
    assert main(argv) == 0
    assert json.loads((out / "results.json").read_text())["epochs_done"] == 1


def test_a_finished_run_resumed_into_a_new_out_stopped_testing_names_the_checkpoint(
        whole_and_stopped, tmp_path, monkeypatch, capsys):
    """A checkpoint of all its run's epochs resumed into a new --out (to test it) trains no epoch
    there, so that --out has no checkpoint of its own: stopped while testing, it said "no
    epoch had finished, so there is no checkpoint to resume from"; it names the checkpoint it
    resumed, as a stop in its fit does."""
    from lotterynet.module import EdgePopupModule

    whole, _ = whole_and_stopped
    trained = tmp_path / "trained"  # (its run, all epochs trained, stopped before its test)
    shutil.copytree(whole, trained)
    (trained / "results.json").unlink()
    checkpoint = trained / "checkpoints" / "last.ckpt"
    called = EdgePopupModule.test_step

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return called(*args, **kwargs)

    new = tmp_path / "new"
    monkeypatch.setattr(EdgePopupModule, "test_step", signalled)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert main(["--resume", str(checkpoint), "--out", str(new)]) == 143
    finally:  # (train.py's handler stays on its way out)
        signal.signal(signal.SIGTERM, previous)
    assert not (new / "checkpoints" / "last.ckpt").exists()
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"train.py: error: stopped by SIGTERM; resume with --resume {checkpoint} and an empty "
        f"--out ({str(new)!r} holds this attempt's files)")


@pytest.mark.parametrize("resumable", [True, False])
def test_a_stack_stopped_before_its_fit_says_how_to_go_on_where_it_can(tmp_path, data_dir,
                                                                        monkeypatch, resumable):
    """A stack stopped by SIGTERM while its data is read (before its fit) said only "stopped
    by SIGTERM" though its checkpoint was there to continue from, and so did one with none,
    which in its fit says that the sweep starts it over; each says so as in its fit."""
    import lotterynet.run as run_module
    import lotterynet.stack as stack_runner
    from lotterynet.errors import Interrupted

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(run_module, "TensorDataModule", terminated)  # (run.data_module)
    stack_dir = tmp_path / "stacks" / "s"
    if resumable:  # (read after the data: here only there)
        (stack_dir / "checkpoints").mkdir(parents=True)
        (stack_dir / "checkpoints" / "last.ckpt").touch()
    config = {"arch": "fc2", "structure": "dense", "epochs": 1, "data_dir": str(data_dir)}
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(Interrupted) as stopped:
            stack_runner.run_stack([config, {**config, "sparsity": 0.9}], stack_dir)
    finally:
        signal.signal(signal.SIGTERM, previous)
    then = "run the same run_stack call again to continue from its checkpoint" if resumable \
        else f"{NOTHING}; run the same run_stack call again to start it over in its folder"
    assert str(stopped.value) == f"stopped by SIGTERM; stack s: {then}"
    assert stopped.value.exit_code == 143


def with_a_word_for_a_metric(text: str) -> str:
    """``metrics.csv`` with its first row's first metric value (not epoch or step) a word."""
    header, first, rest = text.split("\n", 2)
    values = first.split(",")
    column = next(i for i, (name, value) in enumerate(zip(header.split(","), values))
                  if value and name not in ("epoch", "step"))
    values[column] = "abc"
    return "\n".join([header, ",".join(values), rest])


@pytest.mark.parametrize("edit, said", [
    (lambda text: text + ",,x,,,,,,,,,,,,,,\n", "epoch 'x'"),
    (with_a_word_for_a_metric, "holds 'abc' as"),
    (lambda text: text.replace("\n", "\n0,1\n", 1), "line 2 is not a row"),  # (only the last
    # line may be short: a kill's)
    (lambda text: text + "," * 40 + "\n", "fields"),
    (lambda text: text + "1,2\n", "is not a row"),  # (a short last line that ends: appended,
    # not cut off by a kill; it was dropped, and the resume replaced the file)
    (lambda text: text.replace("val/acc", "val/\udcff", 1), "not a CSV file"),
    (lambda text: text.split("\n", 1)[1], "has no header naming its columns"),
    (lambda text: 'garbage,,"unterminated\n', "its first line is 'garbage,,unterminated"),
])
def test_history_edited_by_hand_is_refused_and_kept(whole_and_stopped, tmp_path, capsys, edit,
                                                    said):
    """A ``metrics.csv`` that is not the run's log any more stops the resume with one line, and
    the file stays as it was (Lightning's CSV logger would have replaced it)."""
    _, stopped = whole_and_stopped
    run = tmp_path / "edited"
    shutil.copytree(stopped, run)
    history = run / "metrics.csv"
    history.write_bytes(edit(history.read_text()).encode("utf-8", "surrogateescape"))
    before = tree(run)
    assert main(["--resume", str(run / "checkpoints" / "last.ckpt")]) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and said in err and str(history) in err, err
    assert out == ""  # the refusal alone, no parameter counts before it
    assert tree(run) == before


@pytest.mark.parametrize("lost", [0, 1])
def test_a_history_cut_short_is_refused_and_kept(whole_and_stopped, tmp_path, data_dir,
                                                capsys, lost):
    """A ``metrics.csv`` that lost the rows of whole epochs (cut short by hand, or by a kill
    while Lightning rewrote it) stops the resume with one line naming the first lost epoch
    (the resume went on and the run ended with a history missing them; the last epoch's rows
    were not even looked for); the file is kept."""
    import csv

    _, stopped = whole_and_stopped
    run = tmp_path / "cut"
    shutil.copytree(stopped, run)
    checkpoint = str(run / "checkpoints" / "last.ckpt")
    assert main(["--resume", checkpoint, "--stop-after", "2"]) == 0  # epochs 0 and 1 done
    capsys.readouterr()
    history = run / "metrics.csv"
    with open(history, newline="") as f:
        reader = csv.DictReader(f)
        rows, columns = [r for r in reader if r["epoch"] != str(lost)], reader.fieldnames
    with open(history, "w", newline="") as f:  # (without the rows of epoch `lost`)
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    before = tree(run)
    assert main(["--resume", checkpoint]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(history) in err, err
    assert f"has no rows of epoch {lost}, which its checkpoint (epoch 1) has trained" in err
    assert tree(run) == before


def test_only_a_last_line_a_kill_cut_off_is_left_out_of_the_history(tmp_path):
    """A kill part way through Lightning's append leaves a short last line without its end:
    the resume leaves it out and logs it again. A short last line that ends (appended by hand)
    is not the run's log: refused as any other line that is not a row (it was dropped)."""
    from lotterynet.errors import CheckpointError
    from lotterynet.loggers import resumed_history

    history = tmp_path / "metrics.csv"
    rows = "epoch,lr,step,train/loss\r\n,0.1,0,\r\n0,,7,0.5\r\n"
    resumed = (tmp_path / "checkpoints" / "last.ckpt", {"epoch": 0, "global_step": 8})
    history.write_text(rows + "1,,9", newline="")  # (the kill: in epoch 1's row)
    assert [r["step"] for r in resumed_history(resumed)] == ["0", "7"]
    for appended in ("1,,9\r\n", "1,,9\n", "hello,world\n"):
        history.write_text(rows + appended, newline="")
        with pytest.raises(CheckpointError, match="line 4 is not a row"):
            resumed_history(resumed)


def test_a_results_file_larger_than_the_memory_reads_as_unreadable(tmp_path):
    """A run's results.json of 1 TiB (sparse here) reads as a file that cannot be read, as a
    damaged one does (a sweep sets its cell aside): read whole, it was a MemoryError's
    traceback. (An hparams.yaml that large is refused unread, below.)"""
    from lotterynet.run_dir import read_results

    terabyte_file(tmp_path / "results.json")
    assert read_results(tmp_path) == {}


def test_a_resumed_runs_hparams_yaml_over_the_config_cap_is_refused_unread(whole_and_stopped,
                                                                          tmp_path, capsys):
    """The run id of a resumed run's folder was read by parsing its whole hparams.yaml, of any
    size (3 MB: 20 s; 1 TiB: taken as unknown, which skipped the check that the checkpoint is
    the folder's run's). One over the 256 KiB a config may be (train.py writes the run's
    options there, a few KB) is refused in one line naming it and the cap, exit 2, nothing
    written."""
    from lotterynet.run_dir import folder_run_id

    _, stopped = whole_and_stopped
    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    hparams = run / "hparams.yaml"
    text = hparams.read_text()  # (ASCII) + a comment: 300 KiB in all
    hparams.write_text(text + "# " + "x" * (300 * 2**10 - len(text) - 3) + "\n")
    before, checkpoint = tree(run), run / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    assert main(["--resume", str(checkpoint)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"train.py: error: the run's hparams.yaml {str(hparams)!r} is 300.0 KiB, more than the "
        f"256.0 KiB a run's hparams.yaml may be; no option needs that"]
    assert tree(run) == before
    terabyte_file(hparams)
    with pytest.raises(ConfigError, match=r"^the run's hparams\.yaml '.+' is 1\.0 TiB, more than "
                                          r"the 256\.0 KiB a run's hparams\.yaml may be; no option "
                                          r"needs that$"):
        folder_run_id(run)


def test_a_wandb_id_file_larger_than_the_memory_reads_as_none(tmp_path):
    """A run's wandb-id of 1 TiB (sparse here) reads as one that cannot be read (no id kept),
    as another folder's unreadable one does: read whole, it was a MemoryError's traceback."""
    from lotterynet.loggers import WANDB_ID_FILE, read_wandb_id

    terabyte_file(tmp_path / WANDB_ID_FILE)
    assert read_wandb_id(tmp_path) is None


def test_a_history_larger_than_the_memory_is_refused_in_one_line_unread(tmp_path):
    """(a 1 TiB metrics.csv, sparse here: read whole, it was a MemoryError's traceback)"""
    from lotterynet.loggers import resumed_history

    history = terabyte_file(tmp_path / "metrics.csv")
    resumed = (tmp_path / "checkpoints" / "last.ckpt", {"epoch": 0, "global_step": 8})
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(history))}, the history of the "
                                              rf"run being resumed, {LARGER_THAN_MEMORY}"):
        resumed_history(resumed)


def test_a_failed_rewrite_of_the_history_keeps_its_rows(tmp_path, monkeypatch):
    """Lightning rewrites the whole file when a column first appears (``test/acc`` at the
    test), reopening it with "w": a kill or full disk during the rewrite left it cut short.
    The rewrite is atomic: after a failed one the file holds every row it held."""
    import csv

    from lotterynet.loggers import HistoryCSVLogger

    logger = HistoryCSVLogger(tmp_path, [])
    logger.log_metrics({"train/loss": 0.5}, step=0)
    logger.log_metrics({"train/loss": 0.25}, step=1)
    logger.save()
    before = (tmp_path / "metrics.csv").read_bytes()

    def fail(self, rows):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", fail)
    with pytest.raises(OSError):  # (the logger saves every row as it is logged)
        logger.log_metrics({"test/acc": 0.9}, step=2)
        logger.save()
    assert (tmp_path / "metrics.csv").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]  # no temporary file left


def test_a_history_whose_folder_was_removed_under_the_run_is_one_line_naming_it(tmp_path):
    """``rm -rf RUN`` while the run trains: Lightning's append of the next rows raised
    FileNotFoundError as a traceback; it is one line naming the file, and nothing is made
    again in the folder's place."""
    from lotterynet.errors import WriteFailed
    from lotterynet.loggers import HistoryCSVLogger

    run = tmp_path / "run"
    logger = HistoryCSVLogger(run, [])
    logger.log_metrics({"train/loss": 0.5}, step=0)
    shutil.rmtree(run)
    with pytest.raises(WriteFailed) as error:
        logger.log_metrics({"train/loss": 0.25}, step=1)
    assert error.value.strerror == (f"could not write {str(run / 'metrics.csv')!r} (No such "
                                    f"file or directory)")
    assert not run.exists()


def test_a_failed_rewrite_of_the_hyperparameters_keeps_the_file(tmp_path, monkeypatch):
    """Lightning rewrites ``hparams.yaml`` at each fit's start, reopening it with "w": a kill
    or full disk then left it empty, and with it the run's id (which tells this folder's
    checkpoint from another run's). The rewrite is atomic: after a failed one the file is as
    it was."""
    import yaml
    from pytorch_lightning.loggers import csv_logs

    from lotterynet import loggers

    logger = loggers.HistoryCSVLogger(tmp_path, [])
    logger.log_hyperparams({"run_id": "0123456789abcdef", "lr": 0.1})
    before = (tmp_path / "hparams.yaml").read_bytes()
    assert yaml.safe_load(before) == {"run_id": "0123456789abcdef", "lr": 0.1}

    def fail(path, hparams):  # (Lightning's writer, failing part way)
        with open(path, "w") as f:
            f.write("run_")
            raise OSError(28, "No space left on device")

    for module in (csv_logs, loggers):  # (Lightning's writer calls it from csv_logs)
        monkeypatch.setattr(module, "save_hparams_to_yaml", fail)
    with pytest.raises(OSError):
        logger.log_hyperparams({"lr": 0.2})
    assert (tmp_path / "hparams.yaml").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hparams.yaml"]  # no temporary left


def test_a_history_begun_by_a_resume_without_one_is_not_cut_short(whole_and_stopped, tmp_path):
    """A run resumed once with its history moved away logs from its resumed epoch on: a later
    resume takes that history as it is."""
    _, stopped = whole_and_stopped
    run = tmp_path / "moved"
    shutil.copytree(stopped, run)
    (run / "metrics.csv").rename(tmp_path / "old-metrics.csv")
    checkpoint = str(run / "checkpoints" / "last.ckpt")
    assert main(["--resume", checkpoint, "--stop-after", "2"]) == 0
    assert main(["--resume", checkpoint]) == 0
    assert sorted(per_epoch(run, "val/acc")) == [1, 2]


def test_an_empty_history_resumes_as_no_history(whole_and_stopped, tmp_path):
    """A ``metrics.csv`` emptied (0 bytes: a full disk, a truncation) was a traceback ("I/O
    operation on closed file"); the run resumes with the history of its resumed epochs alone,
    to the uninterrupted run's result."""
    whole, stopped = whole_and_stopped
    run = tmp_path / "emptied"
    shutil.copytree(stopped, run)
    (run / "metrics.csv").write_bytes(b"")
    assert main(["--resume", str(run / "checkpoints" / "last.ckpt")]) == 0
    results, expected = (json.loads((r / "results.json").read_text()) for r in (run, whole))
    assert (results["test_acc"], results["mask_digests"]) == (expected["test_acc"],
                                                              expected["mask_digests"])
    assert per_epoch(run, "val/acc") == {e: v for e, v in per_epoch(whole, "val/acc").items()
                                         if e > 0}


def test_overwrite_with_resume_is_refused(whole_and_stopped, capsys):
    """``--overwrite`` was silently ignored by a resume (which continues its run): refused, in
    one line, nothing touched."""
    _, stopped = whole_and_stopped
    before = tree(stopped)
    assert main(["--resume", str(stopped / "checkpoints" / "last.ckpt"), "--overwrite"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "train.py: error: --overwrite with --resume: a resume continues its run and never clears "
        "it; drop --overwrite, or start the run anew without --resume"]
    assert tree(stopped) == before


def test_interrupted_overwrite_resumes_as_the_new_run(whole_and_stopped, tmp_path, data_dir):
    """``--overwrite`` removes the previous run's result and checkpoint before it trains: stopped
    after its first epoch, the folder is the new run's, resumable, not the old finished one."""
    whole, _ = whole_and_stopped
    run = tmp_path / "overwritten"
    shutil.copytree(whole, run)
    checkpoint = run / "checkpoints" / "last.ckpt"
    stopped = signalled([*SMALL, "--seed", "4", "--epochs", "2", "--overwrite", "--data-dir",
                         str(data_dir), "--out", str(run)], "SIGTERM")
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert not (run / "results.json").exists()
    assert load_checkpoint(checkpoint)["hyper_parameters"]["config"]["seed"] == 4
    assert main(["--resume", str(checkpoint)]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["config"]["seed"] == 4 and results["epochs_done"] == 2


def test_resume_that_would_stop_before_it_starts_is_refused(whole_and_stopped, capsys):
    """``--stop-after 1`` on a run stopped after one epoch would train nothing and report
    "stopped after 1 epoch" (rewriting its logs): refused, nothing touched."""
    _, stopped = whole_and_stopped
    before = tree(stopped)
    assert main(["--resume", str(stopped / "checkpoints" / "last.ckpt"), "--stop-after",
                 "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("train.py: error: --stop-after 1: the resumed run has done 1 epoch already; "
                   "give more, or leave it out to train to its end")
    assert tree(stopped) == before


def test_a_run_folder_in_use_by_another_run_is_refused(tmp_path, data_dir, capsys):
    """Two runs started into one ``--out`` at once both pass the early "is it empty" check;
    the folder lock (held here as another run would hold it) makes the second one refuse
    instead of writing into the first one's files."""
    import fcntl

    out = tmp_path / "busy"
    out.mkdir()
    folder = os.open(out, os.O_RDONLY)
    fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    argv = [*SMALL, "--epochs", "1", "--data-dir", str(data_dir), "--out", str(out)]
    try:
        assert main(argv) == 2
    finally:
        os.close(folder)
    printed, err = capsys.readouterr()
    assert err.strip() == (f"train.py: error: run directory {str(out)!r} is in use by another "
                           f"run; wait for it, or choose another --out")
    assert printed == ""  # the refusal alone
    assert list(out.iterdir()) == []
    assert main(argv) == 0 and (out / "results.json").is_file()  # released: it runs
