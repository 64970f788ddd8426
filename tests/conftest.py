import os
import signal
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"



def requires_cuda(test):
    """Skipped without a GPU, and marked ``cuda`` so that ``pytest -m cuda`` runs exactly these
    (the GPU suite does)."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
    return pytest.mark.cuda(skip(test))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Local MNIST / Fashion-MNIST: $LOTTERYNET_DATA, else ../shared/data beside the repo."""
    path = Path(os.environ.get("LOTTERYNET_DATA", SHARED_DATA))
    if not (path / "MNIST" / "raw").is_dir():
        pytest.fail(f"MNIST not found under {path}: set LOTTERYNET_DATA")
    return path


def processes_mentioning(text: str) -> list[int]:
    """Pids of the processes whose command line contains ``text``."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_text():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def default_sigint() -> None:
    """``preexec_fn`` of a subprocess a test stops with SIGINT: the signal's default action in
    the child, where Python then raises KeyboardInterrupt. A test run started in the background
    (``pytest &`` in a script, ``nohup``) ignores SIGINT, and its children would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
