"""lotterynet without wandb installed (as on the GPU machine): blocked in a fresh interpreter."""

import subprocess
import sys

from conftest import REPO

BLOCK = "import sys; sys.modules['wandb'] = None\n"


def run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_trains_without_wandb(tmp_path, data_dir):
    proc = run_blocked(
        "from lotterynet.config import make_config\nfrom lotterynet.run import run\n"
        f"r = run(make_config(dict(arch='fc2', structure='dense', epochs=1, limit_train=128, "
        f"val_size=64, data_dir={str(data_dir)!r}, progress_bar=False, out={str(tmp_path)!r})))\n"
        "assert r['finished'] and r['wandb_dir'] is None\nprint('trained', r['test_acc'])")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trained" in proc.stdout


def test_wandb_flag_without_wandb_is_one_line_exit_2(tmp_path, data_dir):
    proc = run_blocked(
        "from lotterynet.cli import main\n"
        f"sys.exit(main(['--wandb', '--data-dir', {str(data_dir)!r}, '--out', "
        f"{str(tmp_path)!r}]))")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("train.py: error: --wandb needs the wandb package, which is "
                                   "not installed (pip install wandb, or run without W&B: "
                                   "--no-wandb)")
