"""The benchmark scripts' command line, held to train.py's rule: a bad flag is refused in one
line that names it and its valid values (exit code 2) before anything is measured, and the
errors lotterynet reports as one line (a bad config, missing data) stay one line here.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch

from lotterynet.errors import REPORTED, OneLineErrorParser, exit_code, message


def parser(script: str, doc: str) -> OneLineErrorParser:
    """The parser of the script at path ``script`` (its ``__file__``: its name starts each
    error line), described by the first paragraph of its docstring ``doc``."""
    return OneLineErrorParser(prog=Path(script).name,
                              description=" ".join(doc.split("\n\n")[0].split()))


def integer(minimum: int, maximum: int | None = None):
    """A flag type: an integer from ``minimum`` to ``maximum`` (no bound if None)."""
    valid = f"an integer from {minimum} to {maximum}" if maximum is not None \
        else f"an integer >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {valid}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{value} is not {valid}")
        return value
    return parse


def sparsity(text: str) -> float:
    """A flag type: the fraction of weights pruned, in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction pruned in [0, 1)")
    return value


def device(text: str) -> str:
    """A flag type: a torch device this machine has (``cpu``, ``cuda``, ``cuda:N``)."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    valid = ", ".join(["cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(gpus)] if gpus else []))
    try:
        named = torch.device(text)
    except RuntimeError:
        named = None
    if named is None or named.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; valid here: {valid}")
    if named.type == "cuda" and (named.index or 0) >= gpus:
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has "
                                         f"{gpus or 'no'} CUDA device(s); valid here: {valid}")
    return text


@contextlib.contextmanager
def reported(parser: argparse.ArgumentParser):
    """lotterynet's one-line errors (:data:`~lotterynet.errors.REPORTED`) end the script as
    they end ``train.py``: the line, and their exit code."""
    try:
        yield
    except REPORTED as err:
        parser.exit(exit_code(err), f"{parser.prog}: error: {message(err)}\n")
