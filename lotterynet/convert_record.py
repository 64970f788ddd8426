"""How ``convert`` records its calls, for a ticket to replay them on a fresh model: each call
on the module it converted (:data:`CONVERT_RECORD`, in call order: :func:`next_order`) and each
layer it made (:data:`CONVERTED_BY`), and the calls as a load replays them (:func:`left_out_of`,
:data:`NOTHING_LEFT`)."""

from __future__ import annotations

import contextvars

from torch import nn

from .convert_patterns import escaped, matches

#: ``convert`` records each call on the module it converted, under this attribute: a list of
#: ``{"order": n, "kwargs": {...}}`` (``n`` orders the calls, so that calls on nested modules
#: can be replayed in their order: :func:`next_order`). :func:`~lotterynet.ticket.save_ticket`
#: stores them, :func:`~lotterynet.ticket.load_ticket` replays them on a fresh model.
CONVERT_RECORD = "lotterynet_converts"


#: ... and on each layer it made, under this one, the call's ``order``: a ticket leaves a layer
#: that a later call made out of the earlier calls that select it (:func:`left_out_of`).
CONVERTED_BY = "lotterynet_converted_by"


_last_order = -1


#: True while a load replays a call none of whose layers the saved model holds any more
#: (:func:`left_out_of`): there it may convert nothing, and still applies its ``others`` /
#: ``batchnorm`` to what it selects.
NOTHING_LEFT = contextvars.ContextVar("lotterynet_convert_nothing_left", default=False)


def next_order(model: nn.Module) -> int:
    """The order of a new ``convert()`` call on ``model``: after every call made in this
    process, and after those recorded in ``model`` (calls and the layers they made), which
    another process made when the model was pickled there: :func:`left_out_of` compares them."""
    global _last_order
    recorded = [record["order"] for module in model.modules()
                for record in module.__dict__.get(CONVERT_RECORD, ())]
    recorded += [module.__dict__[CONVERTED_BY] for module in model.modules()
                 if CONVERTED_BY in module.__dict__]
    _last_order = max([_last_order, *recorded]) + 1
    return _last_order


def left_out_of(calls: list[dict], made: dict[str, int]) -> list[dict]:
    """The recorded ``convert()`` calls (``{"path", "order", "kwargs"}``, in call order) as a
    load replays them on a fresh model, given the layers they made that the model holds
    (``made``: name -> the order of the call that made it, :data:`CONVERTED_BY`): a layer made by
    a later call where an earlier call selects it (a layer put in place of one converted,
    timm's ``reset_classifier`` and then ``convert(model, include=["head"])``) is added to the
    earlier call's ``exclude``, which would convert it first on a fresh model, leaving the later
    call nothing to convert (refused). A call none of whose layers is left is marked
    ``nothing_left`` (:data:`NOTHING_LEFT`): its replay may convert nothing, and still freezes
    (``others``) or makes non-affine (``batchnorm``) what it selects, as it did."""
    replayed = []
    for call in calls:
        path, kwargs = call["path"], call["kwargs"]
        inner = {name[len(path) + 1:] if path else name: order for name, order in made.items()
                 if name == path or not path or name.startswith(f"{path}.")}
        later = [name for name, order in inner.items() if order > call["order"]
                 and (kwargs["include"] is None or matches(name, kwargs["include"]))
                 and not matches(name, kwargs["exclude"])]
        if later:
            call = {**call, "kwargs": {**kwargs, "exclude": [*kwargs["exclude"],
                                                             *map(escaped, later)]}}
        replayed.append({**call, "nothing_left": True}
                        if call["order"] not in inner.values() else call)
    return replayed
