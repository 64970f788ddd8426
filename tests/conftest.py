import argparse
import errno
import os
import subprocess
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

import lotterynet.datamodule
import prefork
from lotterynet.data import resolve_data_dir
from lotterynet.errors import DatasetNotFound
from lotterynet.loggers import read_wandb_records

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
#: timm's ResNetV2-50x1-BiT at 128 channels (GroupNorm's 32 groups need them; 338k weights):
#: 53 weight-standardised StdConv2d layers and a plain Conv2d head; ``STD_CONVS``: patterns
#: that cover exactly those 53 layers.
TINY_BIT = ["--arch", "timm:resnetv2_50x1_bit", "--model-kwargs", "channels=[128,128,128,128]",
            "--model-kwargs", "stem_chs=32"]
STD_CONVS = ["stem.conv", "stages.*.blocks.*.downsample.conv", "stages.*.blocks.*.conv1",
             "stages.*.blocks.*.conv2", "stages.*.blocks.*.conv3"]
#: timm's NF-ResNet-26 at 32 channels, one block a stage (14k weights): 17 ScaledStdConv2d
#: layers (weight-standardised, scaled by a trained gain), which convert takes only with a
#: structure of one weight (refused under --structure subsetsum with ReLU), and a Linear head;
#: ``SCALED_STD_CONVS``: the --exclude patterns its refusal advises, exactly those 17 layers.
TINY_NF = ["--arch", "timm:nf_resnet26", "--model-kwargs", "channels=[32,32,32,32]",
           "--model-kwargs", "depths=[1,1,1,1]"]
SCALED_STD_CONVS = ["stem.conv", "stages.*.*.downsample.conv", "stages.*.*.conv1",
                    "stages.*.*.conv2", "stages.*.*.conv3"]



def pytest_collection_finish(session):
    """The prefork server imports in the background from the start of a test session that
    has tests forking from it (those of modules that import :mod:`prefork`, or use
    ``started_together``)."""
    if any(hasattr(item.module, "prefork") or "started_together" in item.fixturenames
           for item in session.items if isinstance(item, pytest.Function)):
        prefork.start_server()


@pytest.fixture
def pdf_backend():
    """matplotlib's backend set to ``pdf`` (a notebook user's own, say) for the test, and set
    back after it: a figure lotterynet draws in-process must leave it as it is."""
    import matplotlib

    previous = matplotlib.get_backend()
    matplotlib.use("pdf")
    yield "pdf"
    matplotlib.use(previous)


def wandb_exit_code(run_dir: Path) -> int | None:
    """The exit code the offline W&B run whose files are in ``run_dir`` ended with (its exit
    record's), None while it has not ended."""
    return next((record.exit.exit_code for record in read_wandb_records(
        next(run_dir.glob("run-*.wandb"))) if record.WhichOneof("record_type") == "exit"), None)


#: What ``sbatch`` sets in a one-task batch job's environment (a job named by its script, not
#: ``bash``: an ``salloc`` shell's, which Lightning does not take for SLURM's).
SLURM_BATCH_JOB = {"SLURM_JOB_ID": "123", "SLURM_JOB_NAME": "job.sh", "SLURM_NTASKS": "1",
                   "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}

#: The end of the line refusing a 1 TiB file (:func:`terabyte_file`) unread:
#: ``machine.refuse_larger_than_memory``'s.
LARGER_THAN_MEMORY = (r"is 1\.0 TiB, more than the [\d,.]+ [KMG]iB of memory this machine has "
                      r"available to read it$")


def terabyte_file(path: Path) -> Path:
    """``path`` made a file of 1 TiB, sparse (no disk used), as a colleague's file larger
    than any machine's memory."""
    with path.open("wb") as f:
        f.truncate(2**40)
    return path


def disk_full_at(monkeypatch, failing: int, number: int = errno.ENOSPC) -> None:
    """``Path.write_bytes`` (what the checkpoint writes go through) fails at its ``failing``-th
    call as the system does (``number``: a full disk; ``EFBIG``, a file size limit); the
    others write."""
    write_bytes, written = Path.write_bytes, []

    def write(self, data):
        written.append(self)
        if len(written) == failing:
            raise OSError(number, os.strerror(number))
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", write)


def parser_of(main, monkeypatch) -> argparse.ArgumentParser:
    """The parser that command ``main`` (a ``main(argv)``) builds, read as ``--help`` prints
    it: nothing past the flags runs."""
    printed = []
    print_help = argparse.ArgumentParser.print_help
    monkeypatch.setattr(argparse.ArgumentParser, "print_help",
                        lambda parser, file=None: printed.append(parser) or print_help(parser))
    try:
        code = main(["--help"])  # (train.py's returns its exit code)
    except SystemExit as exit_:
        code = exit_.code
    assert code == 0 and len(printed) == 1
    return printed[0]


def unexplained_arguments(parser: argparse.ArgumentParser) -> list[str]:
    """The arguments of ``parser`` that its --help lists without a word on what they do
    (hidden ones, ``help=argparse.SUPPRESS``, aside)."""
    return [", ".join(a.option_strings) or a.dest for a in parser._actions
            if a.help is not argparse.SUPPRESS and not (a.help or "").strip()]


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


@pytest.fixture(scope="session", autouse=True)
def _shared_data_read_once():
    """The splits of the data sets in the shared data folder (:func:`data_dir`'s, which no
    test writes) are read from their files once a session, not once a run: every run of the
    tests' own process gets a copy of the tensors of the first read (its data module's, or
    the run's check of the data before it starts). A split elsewhere (a test's own files) is
    read as ever."""
    read, splits = lotterynet.datamodule.load_split, {}
    shared = Path(os.environ.get("LOTTERYNET_DATA", SHARED_DATA)).resolve()

    def load_split(name: str, root=None, *, train: bool, download: bool = False):
        try:
            elsewhere = resolve_data_dir(root).resolve() != shared
        except DatasetNotFound:  # (a loop of links: refused by the read)
            elsewhere = True
        if elsewhere:
            return read(name, root, train=train, download=download)
        if (name, train) not in splits:
            splits[name, train] = read(name, root, train=train, download=download)
        return tuple(t.clone() for t in splits[name, train])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lotterynet.datamodule, "load_split", load_split)
        yield


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


@pytest.fixture(scope="module")
def _started_together(tmp_path_factory, data_dir):
    started = {}  # test id -> (its folder, its process, its stdout file, its stderr file)
    yield started, tmp_path_factory, data_dir
    for _, proc, *_ in started.values():  # (those of a test that failed before waiting)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def skipped(case: pytest.Item) -> bool:
    """Whether ``case`` is marked to be skipped (``skip``, or ``skipif`` of a true condition):
    its process is not started."""
    return any(mark.name == "skip" or (mark.name == "skipif" and mark.args and mark.args[0])
               for mark in case.iter_markers())


@pytest.fixture
def started_together(request, _started_together):
    """``started_together(job)``: the folder and the finished process (a CompletedProcess, its
    output as text) of this case of a parametrised subprocess test, the first of its cases to
    ask having started every collected case's process at once. ``job(folder, data_dir,
    **params)``, given an empty folder of the case's own and the case's parameters, writes
    what the process needs there and returns its argv and environment (it runs in the
    repository: :func:`prefork.Popen`). The cases' processes are as independent as when each
    test started its own; the CI machine's second core runs one while another trains."""
    started, tmp_path_factory, data_dir = _started_together

    def run(job) -> tuple[Path, subprocess.CompletedProcess]:
        if request.node.nodeid not in started:
            for case in request.session.items:
                if getattr(case, "function", None) is request.function and \
                        case.nodeid not in started and not skipped(case):
                    folder = tmp_path_factory.mktemp(case.originalname[:30])
                    argv, env = job(folder, data_dir, **case.callspec.params)
                    out, err = folder / ".stdout", folder / ".stderr"
                    proc = prefork.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=err)
                    started[case.nodeid] = folder, proc, out, err
        folder, proc, out, err = started[request.node.nodeid]
        try:
            proc.wait(timeout=600)
        except subprocess.TimeoutExpired:  # a hung case frees its core for the cases after it
            proc.kill()
            raise
        return folder, subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(),
                                                   err.read_text())

    return run



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
