"""What a run prints: no third-party noise, one line per epoch without a progress bar, and a
summary that names the files it wrote."""

import subprocess
import sys

from conftest import REPO


def test_quiet_console_one_line_per_epoch_and_the_paths(tmp_path, data_dir):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "train.py", "--arch", "fc2", "--structure", "dense", "--limit-train",
         "640", "--val-size", "100", "--epochs", "1", "--no-progress-bar", "--data-dir",
         str(data_dir), "--out", str(out)], cwd=REPO, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = proc.stdout + proc.stderr
    for noise in ("litlogger", "LeafSpec", "log_every_n_steps"):
        assert noise not in console, noise
    epoch_lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 1
    assert all(part in epoch_lines[0] for part in ("epoch 1/1", "train loss", "val acc", " s"))
    assert "(1 epoch)" in proc.stdout and "(1 epochs)" not in proc.stdout
    assert f"{out}/results.json" in proc.stdout
    assert f"{out}/checkpoints/last.ckpt" in proc.stdout
