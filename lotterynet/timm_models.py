"""The ``"timm"`` architecture: any timm model, built without pretrained weights under a fixed
torch seed (so the values ``convert`` does not replace — norms, tokens, position embeddings —
are reproducible from the spec) and converted to edge-popup layers::

    build_model("timm", model_name="resnet18", in_chans=1, num_classes=10, img_size=28,
                sparsity=0.9, seed=0)

``img_size`` is passed to models whose constructor takes one (ViT-style models need it for
28×28 or 32×32 inputs) and ignored by the others (convolutional nets accept any size). Other
timm constructor arguments go in ``model_kwargs`` (e.g. ``{"patch_size": 4}`` for a ViT on
28×28 inputs); other keyword arguments go to :func:`lotterynet.convert.convert`.

A ``timm:<name>`` that names no timm model is refused in one line naming the closest names
(:func:`check_timm_model`), by a run config's checks too
(:func:`~lotterynet.config_checks.validate`, which imports :mod:`lotterynet.models`, and so this
module, already).
"""

from __future__ import annotations

import difflib
import inspect
import shlex

import torch
from torch import nn

from .config_checks import check_model_kwargs
from .convert import convert
from .convert_checks import LAYER_OPTIONS, LayersRefused
from .errors import ConfigError
from .models import MODELS


def sourced(model_name: str) -> bool:
    """Whether timm builds ``model_name`` from a config it fetches or reads: a source prefix,
    ``hf-hub:`` (the Hugging Face Hub) or ``local-dir:`` (a folder's ``config.json``)."""
    return ":" in model_name


def check_timm_model(name: str) -> None:
    """``timm:<name>`` must name a timm model (closest names suggested)."""
    if not name:
        raise ConfigError("--arch 'timm:' needs a timm model name, e.g. timm:resnet18")
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"closest: {', '.join(close)}" if close else "see timm.list_models()"
        raise ConfigError(f"unknown timm model {name!r}; {hint}")


def _seeded_create(model_name: str, seed: int, **kwargs) -> nn.Module:
    import timm  # heavy import, only when a timm model is asked for

    if not sourced(model_name):  # (a sourced one is timm's to fetch or read)
        check_timm_model(model_name)  # timm's own error names no alternative
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return timm.create_model(model_name, pretrained=False, **kwargs)


def create_timm_model(model_name: str, *, seed: int, img_size=None, **model_kwargs) -> nn.Module:
    """``timm.create_model(model_name, pretrained=False, ...)`` under ``torch.manual_seed(seed)``;
    ``img_size`` is dropped for models that do not take it."""
    if img_size is not None:
        try:
            model = _seeded_create(model_name, seed, img_size=img_size, **model_kwargs)
        except TypeError as error:
            if "img_size" not in str(error):
                raise
        else:
            check_patches(model, model_name)
            return model
    return _seeded_create(model_name, seed, **model_kwargs)


def check_patches(model: nn.Module, model_name: str) -> None:
    """A ViT-style model whose patches do not tile its image (16×16 patches on 28×28 MNIST:
    one patch) sees only part of each image, timm dropping the rest without a word: refused,
    naming the fix (a hybrid's patches tile its backbone's feature map, not the image).
    Padding the image takes both of timm's dynamic options: with
    ``dynamic_img_pad`` alone the padded image's patches outnumber the position embeddings."""
    embed = getattr(model, "patch_embed", None)
    grid, patch = getattr(embed, "grid_size", None), getattr(embed, "patch_size", None)
    padded = getattr(embed, "dynamic_img_pad", False) and getattr(model, "dynamic_img_size", False)
    if grid is None or patch is None or padded:
        return
    feature = getattr(embed, "feature_size", None)  # (a hybrid's: its backbone's output)
    size = tuple(embed.img_size if feature is None else feature)
    covered = tuple(g * p for g, p in zip(grid, patch))
    if covered != size:
        fit = next(p for p in (7, 4, 2, 1) if size[0] % p == 0)
        raise ValueError(
            f"{model_name} at img_size {embed.img_size[0]}: its {patch[0]}x{patch[1]} patches "
            f"cover {covered[0]}x{covered[1]} of the {size[0]}x{size[1]} "
            f"{'pixels' if feature is None else 'backbone features'}, the rest is never "
            f"seen; give a patch size that divides {size[0]}: model_kwargs={{'patch_size': "
            f"{fit}}} (train.py --model-kwargs patch_size={fit}), or pad the image: "
            f"model_kwargs={{'dynamic_img_size': True, 'dynamic_img_pad': True}}")


@MODELS.register("timm")
def timm_model(model_name: str, *, in_chans: int = 3, num_classes: int = 1000, img_size=None,
               model_kwargs: dict | None = None, sparsity: float = 0.5, seed: int = 0,
               **convert_kwargs) -> nn.Module:
    check_model_kwargs(model_kwargs or {})  # (a ticket's spec is untrusted: no file is read)
    model = create_timm_model(model_name, seed=seed, img_size=img_size, in_chans=in_chans,
                              num_classes=num_classes, **(model_kwargs or {}))
    try:
        return convert(model, sparsity=sparsity, seed=seed, **convert_kwargs)
    except LayersRefused as error:  # (a subclass it does not take, a layer its options refuse)
        raise ValueError(f"{error}; train.py --arch timm:{model_name} leaves them as they are "
                         f"(not masked, trained) with --exclude {shlex.join(error.exclude)}"
                         ) from None


#: What ``timm_model``'s ``**convert_kwargs`` take (:func:`~lotterynet.models.build_model`
#: refuses another): ``convert``'s options but the two it names itself, and the layers'.
timm_model.options = (*(name for name, p in inspect.signature(convert).parameters.items()
                        if p.kind is p.KEYWORD_ONLY and name not in ("sparsity", "seed")),
                      *LAYER_OPTIONS)
