"""Third-party console lines that say nothing about the run, filtered by their own text: the
Lightning tip advertising litlogger, torch's ``LeafSpec`` deprecation, raised inside
Lightning, and the two warnings every resume raised, both untrue here — "Previous log files in
this directory will be deleted" (:class:`~lotterynet.loggers.HistoryCSVLogger` starts from the
resumed run's rows and keeps them) and "Checkpoint directory … exists and is not empty" (a
run directory already holding a run is written only by the resume that continues it, or by a
fresh run that ``--overwrite`` asked for); and, on a resume into another folder, "The dirpath
has changed … best_model_score … won't be reloaded", moot here (the checkpoint is the last
epoch's; no metric ranks checkpoints); and torch's deprecation of the
``torch.distributed.nn.functional.all_gather`` that Lightning's own ``all_gather`` calls (once
per DDP rank at every run's end); and Lightning's "Detected KeyboardInterrupt, attempting
graceful shutdown" before the run's own line saying that Ctrl-C stopped it (SIGTERM's
"Received SIGTERM" goes with Lightning's handler: :func:`lotterynet.process_lifetime.
stop_all_ranks_on_sigterm`). Everything else Lightning and torch say still
reaches the console (the ``log_every_n_steps`` warning is avoided, not hidden:
:func:`lotterynet.run.make_trainer` logs at most once per epoch's worth of steps)."""

from __future__ import annotations

import contextlib
import logging
import warnings

LIGHTNING_INFO = "pytorch_lightning.utilities.rank_zero"


class DropLines(logging.Filter):
    """Drops the log records whose message contains one of ``texts``."""

    def __init__(self, *texts: str):
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in self.texts)


@contextlib.contextmanager
def lightning_info_off():
    """Lightning's info lines ("GPU available: ...") off while the block runs."""
    logger = logging.getLogger(LIGHTNING_INFO)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def quiet_lightning():
    """The filters while the block runs (a run's, a stack's), then the process's own again: in
    a notebook, a fit of the user's own after a run warns as before it (its "Checkpoint
    directory ... exists and is not empty" too), and Lightning's logger drops no line."""
    logger = logging.getLogger(LIGHTNING_INFO)
    drop = DropLines("litlogger", "Detected KeyboardInterrupt")
    logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is "
                                    r"deprecated", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and "
                                    r"is not empty\. Previous log files in this directory will be "
                                    r"deleted")
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not "
                                    r"empty")
            warnings.filterwarnings("ignore", message=r"The dirpath has changed from .* won't be "
                                    r"reloaded")
            warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\."
                                    r"all_gather is deprecated")
            yield
    finally:
        logger.removeFilter(drop)
