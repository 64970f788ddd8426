"""The errors ``train.py`` reports as one line on stderr (exit code 2; 1 for a full disk or a
run that diverged).

They live apart from the code that raises them so that the command line can catch them
without importing torch or Lightning: a bad flag or config file is refused in a fraction of a
second, before the heavy imports.
"""


class ConfigError(ValueError):
    """A bad configuration value; the message is one line naming the value and the choices."""


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupt or not a lotterynet checkpoint."""


class DatasetNotFound(FileNotFoundError):
    """The data set is neither on disk nor downloadable; the message says what to do."""


class DiskFullError(OSError):
    """The disk filled while writing a file; the previous version of the file is intact."""


class TrainingDiverged(RuntimeError):
    """A run's trainable tensors stopped being finite (NaN or infinite): it is stopped at the
    end of that epoch, before its checkpoint, rather than finished with a meaningless result
    (NaN scores keep no entry at all, whatever ``k`` says)."""
