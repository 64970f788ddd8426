"""A ticket's model rebuilt: from its spec (:func:`~lotterynet.models.build_model`) or your
architecture, with the ``convert()`` calls recorded on the model it was saved from
(:func:`convert_calls`) replayed on it (:func:`replay_converts`), except those a builder makes
again (:func:`replayed`), all without the warnings its build gave once already; and the
network refused while a ticket loads (:func:`offline`: a Python audit hook), so that a spec
cannot make the load download anything."""

from __future__ import annotations

import contextlib
import contextvars
import sys
import warnings

from torch import nn

from .convert import convert
from .convert_record import CONVERT_RECORD, CONVERTED_BY, NOTHING_LEFT, left_out_of
from .models import build_model, recorded_spec
from .structures import without_ignored_options
from .ticket_file import TicketError

# --- no network while a ticket loads ---------------------------------------------------------

_OFFLINE = contextvars.ContextVar("lotterynet_ticket_offline", default=False)
_NETWORK_EVENTS = frozenset({"socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
                             "socket.gethostbyname_ex", "socket.gethostbyaddr", "socket.sendto",
                             "socket.sendmsg", "urllib.Request"})
_HOOK = []  # installed once, on the first load (audit hooks cannot be removed)


def _refuse_network(event: str, args, events=_NETWORK_EVENTS, offline=_OFFLINE,
                    error=TicketError) -> None:
    """The audit hook. What it reads is bound at its definition: it outlives this module's
    globals, which the interpreter clears as it exits while events still come."""
    if event in events and offline.get():
        raise error(f"loading a ticket may not use the network (refused {event})")


@contextlib.contextmanager
def offline():
    if not _HOOK:
        sys.addaudithook(_refuse_network)
        _HOOK.append(_refuse_network)
    token = _OFFLINE.set(True)
    try:
        yield
    finally:
        _OFFLINE.reset(token)


def convert_calls(model: nn.Module) -> list[dict]:
    """The ``convert()`` calls recorded on ``model`` and its submodules, in call order, as a
    load replays them: without the layers later calls converted (:func:`left_out_of`)."""
    calls = [{"path": name, **record} for name, module in model.named_modules()
             for record in module.__dict__.get(CONVERT_RECORD, ())]
    made = {name: module.__dict__[CONVERTED_BY] for name, module in model.named_modules()
            if CONVERTED_BY in module.__dict__}
    return left_out_of(sorted(calls, key=lambda call: call["order"]), made)


def rebuild(header: dict, base: nn.Module | None) -> nn.Module:
    """The ticket's model: ``base`` (your architecture; ``build_model(**spec)`` for None) with
    the recorded ``convert()`` calls replayed, except those a ``build_model`` builder made when
    ``base`` was built by one (it made them again)."""
    if base is None:  # (a spec or call saved before ignored options were refused: as then)
        spec = without_ignored_options(header["spec"])
        with _without_user_warnings():  # (a timm spec's build converts)
            base = build_model(**spec)
    return replay_converts(base, replayed(base, header.get("converts", [])))


@contextlib.contextmanager
def _without_user_warnings():
    """Without ``UserWarning`` s, which a load's rebuild would give again (convert's: layers
    left dense, near-zero layer scales, weights read by a parent; a builder's own): the
    model's build gave them when it was made."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def replayed(base: nn.Module, converts: list[dict]) -> list[dict]:
    """The ``convert()`` calls a rebuild on ``base`` replays: all but those a ``build_model``
    builder made when ``base`` was built by one (it made them again)."""
    return [call for call in converts
            if not (call.get("by_builder") and _built(base, call["path"]))]


def _built(model: nn.Module, path: str) -> bool:
    """Whether the module at ``path`` in ``model``, or one that holds it, was made by
    :func:`~lotterynet.models.build_model` (a built model wrapped in yours: its builder's
    ``convert()`` calls are made again when your model is)."""
    names = path.split(".") if path else []
    return any(recorded_spec(model.get_submodule(".".join(names[:depth]))) is not None
               for depth in range(len(names) + 1))  # (get_submodule(""): the model itself)


def replay_converts(model: nn.Module, converts: list[dict]) -> nn.Module:
    """Apply the ticket's recorded ``convert()`` calls to ``model``, in order, without their
    warnings (:func:`_without_user_warnings`); a call marked ``nothing_left``
    (:func:`~lotterynet.convert_record.left_out_of`) may convert nothing."""
    for call in converts:
        path = call["path"]
        target = model.get_submodule(path)
        nothing_left = NOTHING_LEFT.set(call.get("nothing_left") is True)
        try:
            with _without_user_warnings():
                result = convert(target, **without_ignored_options(call["kwargs"]))
        finally:
            NOTHING_LEFT.reset(nothing_left)
        if result is not target:  # the call converted a layer itself
            if not path:
                model = result
            else:
                parent, _, child = path.rpartition(".")
                setattr(model.get_submodule(parent), child, result)
    return model
