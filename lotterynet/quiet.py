"""Third-party console lines that say nothing about the run, filtered by their own text: the
Lightning tip advertising litlogger and torch's ``LeafSpec`` deprecation, raised inside
Lightning. Everything else Lightning and torch say still reaches the console (the
``log_every_n_steps`` warning is avoided, not hidden: :func:`lotterynet.run.make_trainer` logs
at most once per epoch's worth of steps)."""

from __future__ import annotations

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


def quiet_lightning() -> None:
    """Install the filters (once per process)."""
    logger = logging.getLogger(LIGHTNING_INFO)
    if not any(isinstance(f, DropLines) for f in logger.filters):
        logger.addFilter(DropLines("litlogger"))
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
