"""Architectures by name. ``build_model(name, **kwargs)`` calls the builder registered as
``name`` and records the call on the model as ``model.spec`` (JSON-able), so that a ticket or a
checkpoint can rebuild the same model — frozen random weights included, since the builders
take a ``seed``. The builders live in :mod:`lotterynet.archs` (the paper's nets: fc2, lenet5,
conv2, ...) and :mod:`lotterynet.timm_models` (``timm:<model name>``, timm's models converted
to subnet layers).
"""

from __future__ import annotations

import inspect

from torch import nn

from .convert_checks import plain_numbers
from .convert_record import CONVERT_RECORD
from .distributions import cast_drawn, float32_draws
from .loaded_k import watch_loaded_k
from .registry import Registry
from .structures import STRUCTURE_OPTIONS, structure_options

MODELS: Registry = Registry("architecture")

#: Set on a model :func:`build_model` built on the ``meta`` device: given storage by
#: ``to_empty``, its frozen tensors outside the seeded layers (a timm model's tokens, position
#: embeddings, layer scales, a layer left dense) hold what no reset draws as the build does,
#: so :func:`~lotterynet.ticket.save_ticket` compares them with a real build.
BUILT_ON_META = "lotterynet_built_on_meta"


def split_arch(arch: str) -> tuple[str, dict]:
    """``"family:model"`` names a family builder and its ``model_name`` (``"timm:resnet18"`` →
    ``("timm", {"model_name": "resnet18"})``); a plain name has no extra arguments."""
    family, colon, model_name = arch.partition(":")
    return (family, {"model_name": model_name}) if colon else (arch, {})


def build_model(name: str, **kwargs) -> nn.Module:
    """The model ``name`` builds (a registered family, or ``family:model`` as ``--arch`` spells
    it: ``build_model("timm:resnet18", ...)`` is ``build_model("timm", model_name="resnet18",
    ...)``); ``model.spec`` records the arguments, in the second form, numpy scalars as Python
    numbers (:func:`~lotterynet.convert_checks.plain_numbers`)."""
    family, extra = split_arch(name)
    kwargs = plain_numbers(kwargs)
    _check_options(family, {**extra, **kwargs})
    with float32_draws() as default:  # a seed's numbers, whatever the default dtype
        model = MODELS.get(family)(**extra, **kwargs)
    cast_drawn(model, default)  # as torch's own layers follow the default dtype
    model.spec = {"name": family, **extra, **kwargs}
    if any(p.is_meta for p in model.parameters()):
        model.__dict__[BUILT_ON_META] = True
    for module in model.modules():  # the spec makes these calls again; a ticket replays others
        for call in module.__dict__.get(CONVERT_RECORD, ()):
            call["by_builder"] = True
    watch_loaded_k(model)  # (a state dict of another sparsity warns, as a converted model's)
    return model


def _check_options(family: str, kwargs: dict) -> None:
    """An option the builder does not take (one its ``**kwargs`` take is listed in its
    ``options``; a builder without that list checks them itself), or one it needs and is not
    given, refused in one line naming it and the builder's options, before anything is built:
    a spec's typo failed inside what the builder calls (``convert: unknown option``, naming
    only the layer options), a missing ``model_name`` as the builder function's TypeError."""
    builder = MODELS.get(family)
    parameters = inspect.signature(builder).parameters
    named = [name for name, p in parameters.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    options = [*named, *getattr(builder, "options", ())]
    unknown = next((key for key in kwargs if key not in options), None)
    if unknown is not None and hasattr(builder, "options"):
        raise ValueError(f"unknown option {unknown!r} of model {family!r}; valid choices: "
                         f"{', '.join(options)}")
    missing = next((name for name in named if name not in kwargs
                    and parameters[name].default is parameters[name].empty), None)
    if missing is not None:
        raise ValueError(f"model {family!r} needs the option {missing!r}; its options: "
                         f"{', '.join(options)}")


def recorded_spec(model: nn.Module) -> dict | None:
    """The call :func:`build_model` recorded on ``model``; None for a model it did not build
    (a ``spec`` attribute of a user's own model is not one)."""
    spec = getattr(model, "spec", None)
    return spec if isinstance(spec, dict) and spec.get("name") in MODELS else None


def spec_value(spec: dict, key: str):
    """The argument ``key`` of the model ``build_model(**spec)`` builds: the spec's, or its
    builder's default (``num_classes``: timm's 1000, the paper architectures' 10); None for
    an argument the builder does not name."""
    if key in spec:
        return spec[key]
    builder = MODELS.get(split_arch(spec["name"])[0])
    parameter = inspect.signature(builder).parameters.get(key)
    return None if parameter is None else parameter.default


def spec_option(spec: dict, key: str):
    """The option ``key`` of the model ``build_model(**spec)`` builds: the spec's, else its
    builder's default (:func:`spec_value`), else its layers' (:class:`~lotterynet.archs.Layers`)."""
    value = spec_value(spec, key)
    return getattr(archs.Layers, key, None) if value is None and key not in spec else value


def spec_difference(saved: dict, ours: dict) -> tuple[str, object, object] | None:
    """The first option (``key``, its value in ``saved``, in ``ours``) in which two specs build
    different models; None when they build the same one (a default given in one and left out
    of the other, or an option their structure does not read, is no difference)."""
    unread = set(STRUCTURE_OPTIONS) - structure_options(spec_option(ours, "structure"))
    for key in dict.fromkeys(["name", "structure", *saved, *ours]):
        theirs, mine = spec_option(saved, key), spec_option(ours, key)
        if key not in unread and theirs != mine:
            return key, theirs, mine
    return None


from . import archs, timm_models  # noqa: E402,F401  (register the architectures)
