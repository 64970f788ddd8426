import os
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
#: timm's ResNetV2-50x1-BiT at 128 channels (GroupNorm's 32 groups need them; 338k weights):
#: 53 weight-standardised StdConv2d layers, which convert does not take, and a plain Conv2d
#: head; ``STD_CONVS``: the --exclude patterns its refusal advises, exactly those 53 layers.
TINY_BIT = ["--arch", "timm:resnetv2_50x1_bit", "--model-kwargs", "channels=[128,128,128,128]",
            "--model-kwargs", "stem_chs=32"]
STD_CONVS = ["stem.conv", "stages.*.blocks.*.downsample.conv", "stages.*.blocks.*.conv1",
             "stages.*.blocks.*.conv2", "stages.*.blocks.*.conv3"]



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



class StopAtStep(pl.Callback):
    """A Lightning callback (named by class path in a run's ``trainer.callbacks``) that stops
    training after optimizer step ``step``, as ``max_time``'s Timer does: from its
    ``on_train_batch_end``, part way through an epoch. It keeps that step's loss in
    ``StopAtStep.losses``."""

    losses: list[float] = []

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.should_stop = True
            StopAtStep.losses.append(float(outputs["loss"]))
