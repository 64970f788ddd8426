"""The checks of the paths a command will write, made before any work starts, so that a bad
invocation leaves nothing behind: a folder it may write in (:func:`check_output_dir`, a one-line
:class:`~lotterynet.errors.ConfigError` that names the bad path and what to do instead), and
files a run will write at its end that are folders (:func:`check_not_folders`), refused before
the training, not after it."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .errors import ConfigError


def check_output_dir(path: str | os.PathLike, flag: str,
                     instead: str = "choose another folder") -> None:
    """``path`` is, or can be created as, a folder we may write in: probed by creating (and
    removing) a temporary folder in its nearest existing ancestor. ``instead``: what to do
    where it is not writable."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents)
                    if os.path.lexists(p) or p == Path(p.anchor))
    if existing.is_symlink() and not existing.exists():  # (mkdir under it: a traceback)
        raise ConfigError(f"{flag} {str(path)!r}: {str(existing)!r} is a symbolic link that "
                          f"leads nowhere (broken, or a loop); point it at a folder, or choose "
                          f"another")
    if not existing.is_dir():
        raise ConfigError(f"{flag} {str(path)!r}: {str(existing)!r} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=existing))
    except OSError as err:
        raise ConfigError(f"{flag} {str(path)!r} is not writable ({err.strerror or err} in "
                          f"{str(existing)!r}); {instead}") from None


def check_not_folders(paths) -> None:
    """:class:`IsADirectoryError` (one line, exit 2: :data:`~lotterynet.errors.IN_THE_WAY`) for
    the first of ``paths`` — files a run will write at its end — that is a folder, so that a
    damaged run or sweep folder is refused before the training, not after it."""
    for path in paths:
        if Path(path).is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
