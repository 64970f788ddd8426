"""Module-name glob patterns as :func:`~lotterynet.convert.convert` reads and writes them:
whether a call's ``include`` / ``exclude`` covers a module (:func:`matches`: a pattern covers
the modules it names and everything inside them), and the patterns convert's refusals and
warnings name for given modules (:func:`covering_patterns`, :func:`escaped`), the ``exclude=``
or ``include=`` that leaves them out or converts them apart."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence

from torch import nn


def matches(name: str, patterns: Sequence[str]) -> bool:
    """``name``, or a module it is inside, matches a pattern (``"stem"`` covers ``stem.0``,
    ``""``, the model, covers every module)."""
    parts = name.split(".") if name else []
    return any(fnmatch.fnmatchcase(".".join(parts[:i]), p)
               for i in range(len(parts) + 1) for p in patterns)


def escaped(name: str) -> str:
    """A pattern that matches the module name ``name`` only (its ``*``, ``?``, ``[`` literal)."""
    return re.sub(r"([*?[])", r"[\1]", name)


def covering_patterns(model: nn.Module, names: Iterable[str]) -> list[str]:
    """Patterns that cover (:func:`matches`) exactly the modules ``names`` of ``model`` and
    those inside them: each name with its numbers (block indices) read as ``*`` where that
    covers nothing else (``stages.*.blocks.*.conv1``), else the name itself."""
    names = list(names)
    every = [name for name, _ in model.named_modules(remove_duplicate=False)]
    wanted = {name for name in every if matches(name, names)}
    patterns: list[str] = []
    for name in names:
        if matches(name, patterns):
            continue
        parts = [escaped(part) for part in name.split(".")] if name else []
        general = ".".join("*" if part.isdigit() else part for part in parts)
        covers_more = any(matches(n, [general]) for n in every if n not in wanted)
        patterns.append(".".join(parts) if covers_more else general)
    return patterns
