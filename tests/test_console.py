"""What a run prints: no third-party noise, one line per epoch without a progress bar, and a
summary that names the files it wrote."""

import importlib
import os
import re
import sys
from pathlib import Path

import pytest

import prefork
from conftest import REPO, parser_of, unexplained_arguments
from lotterynet.cli import main
from lotterynet.registry import Registry


def quiet_run(folder: Path, data_dir: Path, val_size: int) -> tuple[list[str], dict]:
    return ([sys.executable, "train.py", "--arch", "fc2", "--structure", "dense", "--limit-train",
             "640", "--val-size", str(val_size), "--epochs", "1", "--no-progress-bar",
             "--data-dir", str(data_dir), "--out", str(folder / "run")], dict(os.environ))


@pytest.mark.parametrize("val_size", [100, 0])
def test_quiet_console_one_line_per_epoch_and_the_paths(started_together, val_size):
    folder, proc = started_together(quiet_run)
    out = folder / "run"
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = proc.stdout + proc.stderr
    # "Total length of `list` across ranks is zero": Lightning on an empty validation loader;
    # "Trainer(limit_val_batches=1.0) was configured": Lightning when that option is passed
    for noise in ("litlogger", "LeafSpec", "log_every_n_steps", "Total length",
                  "limit_val_batches"):
        assert noise not in console, noise
    epoch_lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 1
    assert all(part in epoch_lines[0] for part in ("epoch 1/1", "train loss", " s"))
    assert ("val acc" in epoch_lines[0]) == (val_size > 0)
    assert "(1 epoch)" in proc.stdout and "(1 epochs)" not in proc.stdout
    # the run's seconds, to a tenth under 10 s (a short run printed "0 s"), whole from 10 s (a
    # loaded machine's)
    assert re.search(r"\| (\d\.\d|[1-9]\d+) s \(1 epoch\)", proc.stdout), proc.stdout
    assert f"{out}/results.json" in proc.stdout
    assert f"{out}/checkpoints/last.ckpt" in proc.stdout
    assert f"  ticket:     {out}/model.ticket" in proc.stdout and (out / "model.ticket").is_file()


def run_with(folder: Path, data_dir: Path, flag: str | None) -> tuple[list[str], dict]:
    return ([sys.executable, "train.py", "--arch", "fc2", "--structure", "dense", "--limit-train",
             "640", "--val-size", "100", "--epochs", "2", *([flag] if flag else []),
             "--trainer.limit_test_batches", "1", "--data-dir", str(data_dir), "--out",
             str(folder / "run")], dict(os.environ))


@pytest.mark.parametrize("flag", [None, "--progress-bar"])
def test_progress_bar_by_default_only_on_a_terminal(started_together, flag):
    """Output to a pipe or a file gets one line per epoch, not a redrawn bar (thousands of
    lines in a log); --progress-bar asks for the bar anyway."""
    _, proc = started_together(run_with)
    assert proc.returncode == 0, proc.stderr[-2000:]
    epoch_lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    bar = "it/s]" in proc.stdout + proc.stderr
    assert (len(epoch_lines), bar) == ((0, True) if flag else (2, False))


def test_a_resume_prints_no_warning_about_deleting_or_reusing_the_run(tmp_path, data_dir,
                                                                      capsys):
    """Lightning warns on every resume that the log directory's files "will be deleted" and
    that the checkpoint directory "is not empty", and on a resume into another folder that "the
    dirpath has changed" so the best-k bookkeeping is not reloaded: untrue or moot here (the CSV
    logger keeps the resumed history; only the resume writes there; the checkpoint is the last
    epoch's, no metric ranks it), so none reaches the console."""
    out = tmp_path / "run"
    assert main(["--no-progress-bar", "--arch", "fc2", "--structure", "dense", "--limit-train",
                 "640", "--val-size", "100", "--epochs", "2", "--stop-after", "1", "--data-dir",
                 str(data_dir), "--out", str(out), "--trainer.limit_test_batches", "1"]) == 0
    # (in this process: only resumes print; they test on 1,000 images, as the run says)
    assert "epoch 1/2 " in capsys.readouterr().out  # the run's epochs, not --stop-after's
    resume = [sys.executable, "train.py", "--no-progress-bar", "--resume",
              str(out / "checkpoints" / "last.ckpt")]
    for extra in (["--out", str(tmp_path / "copy")], []):  # into an empty folder, then in place
        resumed = prefork.run([*resume, *extra], cwd=REPO, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        console = resumed.stdout + resumed.stderr
        assert "epoch 2/2" in console
        for noise in ("will be deleted", "exists and is not empty", "lr_scheduler.step()",
                      "dirpath has changed"):
            assert noise not in console, noise
    assert len((out / "metrics.csv").read_text().strip().splitlines()) >= 3  # header + 2 epochs


@pytest.mark.parametrize("entry", ["run", "run_stack"])
def test_a_run_in_a_library_callers_process_leaves_its_warning_filters_as_they_were(
        tmp_path, data_dir, entry):
    """run() and run_stack() installed their filters of that noise for good: in a notebook, a
    Trainer of the user's own after a run no longer warned that its checkpoint directory
    "exists and is not empty", and Lightning's logger dropped lines of its text. They hold
    while the run lasts only."""
    import logging
    import warnings

    import lotterynet.run as run_module
    import lotterynet.stack as stack_runner
    from lotterynet.config import make_config
    from lotterynet.quiet import LIGHTNING_INFO

    lightning = logging.getLogger(LIGHTNING_INFO)
    before = list(warnings.filters), list(lightning.filters)
    config = {"arch": "fc2", "structure": "dense", "sparsity": 0.5, "limit_train": 128,
              "val_size": 100, "epochs": 1, "data_dir": str(data_dir), "progress_bar": False}
    if entry == "run":
        run_module.run(make_config({**config, "out": str(tmp_path / "run")}))
    else:
        stack_runner.run_stack([config, {**config, "sparsity": 0.9}], tmp_path / "stack")
    assert (list(warnings.filters), list(lightning.filters)) == before


def test_a_resume_hint_is_a_command_a_shell_reads_as_printed(tmp_path, capsys):
    """The --resume a stopped run's line, the summary of a run stopped by --stop-after and a
    refusal offer is quoted where the path needs it (an --out with a space): it was printed
    bare, and pasted into a shell it named two paths."""
    from lotterynet.cli import summary_line
    from lotterynet.run_stops import resume_hint

    run = tmp_path / "my runs" / "run 1"
    checkpoint = run / "checkpoints" / "last.ckpt"
    quoted = f"--resume '{checkpoint}'"
    assert summary_line({"finished": False, "epochs_done": 1, "run_dir": str(run)}).endswith(
        quoted)
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")  # (what the line and the refusal look for)
    assert resume_hint(str(checkpoint)) == f"resume with {quoted}"
    assert main(["--arch", "fc2", "--out", str(run)]) == 2
    assert f"pass --overwrite, {quoted}, or another --out" in capsys.readouterr().err



#: A process's stdout as ``PYTHONIOENCODING=cp1252`` (or a Windows console, or output
#: redirected there) sets it up: cp1252, strict. (The variable itself is read as Python
#: starts, which a process forked from the prefork server has done: it is set up here.)
CP1252_STDOUT = ("import io, runpy, sys; sys.stdout = io.TextIOWrapper(sys.stdout.buffer, "
                 "'cp1252', line_buffering=True); ")


@pytest.mark.parametrize("command, said", [
    ("runpy.run_module('lotterynet.theory', run_name='__main__', alter_sys=True)",
     "target widths ``n_0, \u2026, n_\\u2113``"),  # (cp1252 has the '…', not the 'ℓ')
    ("runpy.run_module('lotterynet.approximate', run_name='__main__', alter_sys=True)",
     "(subset sum, U[\\u22121, 1])"),
    ("runpy.run_path('train.py', run_name='__main__')",
     "wrote {folder}/\\u03b3/w.yaml (2 cells, listed in {folder}/\\u03b3/w.cells.yaml)")],
    ids=["theory", "approximate", "train.py"])
def test_output_an_encoding_cannot_hold_is_escaped_not_a_traceback(command, said, tmp_path):
    """``python -m lotterynet.theory --help`` (its 'ℓ'), ``lotterynet.approximate --help`` (its
    '−'), train.py's "wrote PATH" of a path with a 'γ', to a cp1252 stdout: a
    UnicodeEncodeError's traceback (exit 1; approximate's exit 2, its one line), after the W&B
    sweep file was written. Each is written as a backslash escape."""
    (tmp_path / "γ").mkdir()
    argv = ["--help"] if "run_module" in command else [
        "--sweep-variants", "dense", "--sweep-sparsities", "0.5", "--sweep-epochs", "1",
        "--wandb-sweep", str(tmp_path / "γ" / "w.yaml"), "--sweep-out", str(tmp_path / "s")]
    out, err = tmp_path / "out", tmp_path / "err"
    proc = prefork.Popen([sys.executable, "-c", f"{CP1252_STDOUT}sys.argv[1:] = {argv!r}; "
                          f"{command}"], cwd=REPO, stdout=out, stderr=err)
    assert proc.wait(120) == 0, err.read_text()[-2000:]
    assert said.format(folder=tmp_path) in out.read_bytes().decode("cp1252")


@pytest.mark.parametrize("module", ["lotterynet.archs", "lotterynet.timm_models"])
def test_a_module_that_registers_architectures_runs_as_a_command_silently(module):
    """``python -m lotterynet.archs`` (``timm_models``) ended in a traceback, ``ValueError:
    architecture 'fc2' is registered twice`` ('timm'): run as ``__main__`` the module registers
    its architectures again, beside the package's import of it. It runs silently, as every
    other module does; a name registered twice is still refused, the same entry too."""
    # (as python -m runs it; the prefork server imported it already, which runpy warns of)
    proc = prefork.run([sys.executable, "-c", "import runpy, sys, warnings; "
                        "warnings.filterwarnings('ignore', '.* found in sys.modules after "
                        "import of package', RuntimeWarning); runpy.run_module(sys.argv[1], "
                        "run_name='__main__', alter_sys=True)", module], cwd=REPO, timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    things = Registry("thing")

    def build():
        pass

    things.register("a")(build)
    for again in build, lambda: None:
        with pytest.raises(ValueError, match=r"^thing 'a' is registered twice$"):
            things.register("a")(again)


COMMANDS = ["lotterynet.cli", "lotterynet.approximate", "lotterynet.theory", "lotterynet.targets"]


@pytest.mark.parametrize("module", COMMANDS)
def test_every_argument_of_a_command_says_what_it_does_and_no_default_is_none(module, capsys,
                                                                               monkeypatch):
    """--help listed theory's --arch and command, approximate's experiment and targets' names
    and --data-dir bare, and train.py's --limit-train, --stop-after, --resume and four W&B
    flags as "(default: None)": Python's word, not what the run does without them."""
    parser = parser_of(importlib.import_module(module).main, monkeypatch)
    assert unexplained_arguments(parser) == []
    assert "default: None" not in " ".join(capsys.readouterr().out.split())


def test_train_help_lists_the_run_flags_in_groups(monkeypatch):
    """train.py --help listed its 50 run flags as one wall under "options"."""
    parser = parser_of(main, monkeypatch)
    group = {action.dest: g.title for g in parser._action_groups for action in g._group_actions}
    assert [dest for dest, title in group.items() if title == "options"] == [
        "help", "config", "print_config"]
    assert [group[dest] for dest in ("sparsity", "limit_train", "lr", "precision", "out",
                                     "wandb_tags", "sweep_epochs")] == [
        "model (what is trained)", "data", "training", "hardware", "output", "Weights & Biases",
        "sweep mode (a grid of runs, aggregated like Figure 2)"]


def test_every_flag_readme_names_is_a_flag_of_its_command(monkeypatch, capsys):
    """A flag in README's commands (``python train.py ...``, ``python -m lotterynet.X ...``,
    ``benchmarks/X.py ...``) is one of that command's, and one its prose names is one of
    some command's: a renamed flag left in README is caught (the flags of other tools aside:
    the hidden-networks table, ``wandb login --host``, ``sbatch --ntasks / --signal``,
    LightningCLI's ``--model.KEY``); and README names every flag of train.py."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    flags = {}
    for name in ("cli", "approximate", "theory", "targets"):
        flags[name] = parser_of(importlib.import_module(f"lotterynet.{name}").main,
                                monkeypatch)._option_string_actions
    for name in ("bench_subsetsum", "bench_member_batching", "gpu_suite"):
        flags[name] = parser_of(importlib.import_module(name).main,
                                monkeypatch)._option_string_actions
    capsys.readouterr()
    readme = (REPO / "README.md").read_text().split("## Coming from hidden-networks")
    readme = readme[0] + readme[1].split("\n## ", 1)[1]
    named = re.compile(r"(?<![\w-])--(?!(?:model|data|trainer)\.)[a-zA-Z][\w-]*")
    commands = re.findall(r"(train\.py|-m lotterynet\.(\w+)|benchmarks/(\w+)\.py)([^#`\n]*)",
                          readme.replace("\\\n", " "))
    assert len(commands) > 20
    for command, module, script, argv in commands:
        parser = flags[module or script or "cli"]
        assert [flag for flag in named.findall(argv) if flag not in parser] == [], command
    every = set().union(*flags.values()) | {"--host", "--wandb-", "--ntasks", "--signal"}
    assert sorted(set(named.findall(readme)) - every) == []
    # and it names every flag of train.py, in one of its forms (it had no --scheduler, and no
    # --shared nor --no-shared), of approximate, targets and theory
    mentioned = set(named.findall(readme)) | {"--help", "--trainer"}  # (as --trainer.KEY)
    assert sorted({action.option_strings[0] for name in ("cli", *COMMANDS[1:])
                   for action in flags[name.split(".")[-1]].values()
                   if not mentioned & set(action.option_strings)}) == []
