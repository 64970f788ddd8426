"""One name -> one constructor. Every pluggable choice in lotterynet (weight distributions,
structures, architectures, data sets) is looked up through a :class:`Registry`, so an unknown
name always fails the same way: a ``ValueError`` naming the value and the valid choices."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


def check_choice(kind: str, value, choices: Iterable[str]):
    """``value`` if it is one of ``choices``, else a ``ValueError`` naming the ``kind``, the
    value and the choices, in the order given."""
    choices = list(choices)  # (a list: an unhashable value is not a choice, not a TypeError)
    if value not in choices:
        raise ValueError(f"unknown {kind} {value!r}; valid choices: {', '.join(choices)}")
    return value


def defined_again(entry, new) -> bool:
    """Whether ``new`` is ``entry`` defined again by its module run as ``__main__`` (``python
    -m lotterynet.archs``): that module imports the package, whose import of it under its own
    name registered ``entry`` first."""
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    return (main is not None and getattr(new, "__module__", None) == "__main__"
            and getattr(entry, "__module__", None) == main.name
            and getattr(entry, "__qualname__", None) == getattr(new, "__qualname__", None))


class Registry(Generic[T]):
    """Names and their entries, of one ``kind`` (``lotterynet.DISTRIBUTIONS``,
    ``lotterynet.STRUCTURES``, ...): ``names()`` lists them, sorted; ``name in registry`` asks;
    ``get(name)`` gives one, a ``ValueError`` naming the valid choices for another;
    ``@registry.register(name)`` adds one (a name registered twice is refused, but for the
    same definition again from its module run as a command: see :func:`defined_again`)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                if defined_again(self._entries[name], entry):
                    return entry
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        return self._entries[check_choice(self.kind, name, self.names())]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
