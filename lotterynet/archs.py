"""The architectures of the experiments, registered in :data:`lotterynet.models.MODELS`.

* ``fc2`` 784-500-10 and ``fc4`` 784-500-500-500-10 (Pensia et al., Experiment 2);
* ``lenet5``: conv 6@5×5 (padding 2) → pool → conv 16@5×5 → pool → 120 → 84 → 10; the convs
  are random and frozen by default (the paper's setup; ``conv_init`` draws them from another
  distribution), subnet layers with ``subnet_convs``;
* ``conv2`` … ``conv8``: the CIFAR-10 convnets of Ramanujan et al. (3×3 convs, two per block,
  channels 64/128/256/512, max-pool after each block, then 256-256-10).

Every layer that the structure applies to (all Linear layers of the FC nets, LeNet5's FC part,
every layer of the conv nets) is built by a :class:`Layers` factory, which makes either subnet
layers (frozen random weights under an edge-popup mask, no bias) or, for the trained dense
baseline, plain ``nn`` layers. Pensia et al. replace every FC layer, the last one included:
their wide sizing (h = 2508 for FC2) is only reproduced when the output layer counts too.

``width``: ``None`` gives the paper's widths; an integer gives the *wide* family, where every
hidden width is an integer multiple of ``width`` (FC nets: all hidden layers = width; LeNet5:
both FC hidden layers = width; conv nets: channels width·(1, 2, 4, 8), FC hidden 4·width).
So the maskable count is a quadratic polynomial in ``width`` (see :mod:`lotterynet.widen`).

Each architecture is registered with its :class:`Recipe` (:func:`register`): the learning rate
and structure a run gets when its config leaves them unset, and whether it is a target
architecture only, so adding an architecture is one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from functools import partial

import torch
from torch import nn

from .convert_rules import CONVERTIBLE, type_name
from .distributions import check_seed, float32_draws, layer_seed, sample_weights
from .errors import plural
from .layers import SubnetConv2d, SubnetLinear, copy_redrawn
from .models import MODELS, split_arch
from .plain import MaxPool2x2
from .structures import check_positive_int


@dataclass(frozen=True)
class Recipe:
    """An architecture's recipe, what a run's config leaves unset: the learning rate ``lr``, the
    ``structure`` (Pensia et al.'s ``subsetsum`` for the paper's architectures, the plain
    edge-popup layer ``dense`` for the others, as :func:`lotterynet.convert.convert` does), and
    ``target_only``: built only as a trained target network (``--train-weights``), never
    masked. An architecture registered without one (the ``timm`` family) gets the defaults."""

    lr: float = 0.1
    structure: str = "dense"
    target_only: bool = False


def register(name: str, **recipe):
    """Registers a builder in :data:`~lotterynet.models.MODELS` as ``name``, with its
    :class:`Recipe` (``recipe``: its fields)."""
    def add(build):
        build.recipe = Recipe(**recipe)
        return MODELS.register(name)(build)

    return add


def recipe(arch: str) -> Recipe:
    """The recipe of ``arch`` (``family:model``: its family's); the defaults for a name
    registered without one, or not registered."""
    family = split_arch(arch)[0]
    return getattr(MODELS.get(family), "recipe", Recipe()) if family in MODELS else Recipe()


def recipe_lr(arch: str, lr: float | None) -> float:
    """The learning rate a run uses: ``lr``, else its architecture's recipe's."""
    return recipe(arch).lr if lr is None else lr


#: The distribution of random frozen conv filters where neither their own init nor the layers'
#: is given: Kaiming normal, the paper's text.
FROZEN_CONV_INIT = "kaiming_normal"


@dataclass
class Layers:
    """Builds the layers of one model; layer ``i`` gets seed ``layer_seed(seed, str(i))``, so the
    frozen weights and the initial scores depend only on the seed and the position, and no
    layer of one seed repeats (or starts with) the draws of a layer of another."""

    structure: str = "dense"
    sparsity: float = 0.5
    pairs: int = 5
    activation: str = "relu"
    init: str | None = None  # None: each structure's own default
    hidden: int | None = None
    shared: bool = True
    fan_in: str = "hidden"
    score_init: str = "edgepopup"
    trained: bool = False
    seed: int = 0
    kept: str = "round"
    ties: str = "low"
    _count: int = field(default=0, init=False, repr=False)

    def _next_seed(self) -> int:
        self._count += 1
        return layer_seed(self.seed, str(self._count - 1))

    def _subnet_kwargs(self) -> dict:
        return ({name: getattr(self, name) for name in MODEL_LAYER_OPTIONS}
                | {"seed": self._next_seed()})

    def linear(self, d_in: int, d_out: int) -> nn.Module:
        if self.trained:
            return _seeded(nn.Linear(d_in, d_out, bias=False), self._next_seed())
        return SubnetLinear(d_in, d_out, **self._subnet_kwargs())

    def conv(self, c_in: int, c_out: int, kernel: int, padding: int = 0) -> nn.Module:
        if self.trained:
            return _seeded(nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=False),
                           self._next_seed())
        return SubnetConv2d(c_in, c_out, kernel, padding=padding, **self._subnet_kwargs())

    def frozen_conv(self, c_in: int, c_out: int, kernel: int, padding: int = 0,
                    init: str | None = None) -> nn.Module:
        """A conv with random frozen filters and no mask (LeNet5 in the paper), drawn from
        ``init``, else the layers' ``init``, else :data:`FROZEN_CONV_INIT`."""
        return FrozenConv2d(c_in, c_out, kernel, padding=padding,
                            init=init or self.init or FROZEN_CONV_INIT, seed=self._next_seed())


class FrozenConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` without bias whose filters are random and frozen, drawn from the
    distribution ``init`` by a generator seeded with ``seed``. Its :meth:`reset_parameters`
    draws them again from that seed, as a subnet layer's does (``nn.Conv2d``'s drew them from
    torch's global generator: a model built on the meta device, given storage by ``to_empty``
    and reset, held other filters than its spec builds, and its ticket did not load), and
    :meth:`redrawn` is what :func:`~lotterynet.ticket.save_ticket` checks them against.
    :func:`~lotterynet.export.export` makes it a plain ``nn.Conv2d``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, padding: int, init: str, seed: int):
        self.drawn_with = dict(init=init, seed=seed)  # (nn.Conv2d's __init__ resets: first)
        super().__init__(c_in, c_out, kernel, padding=padding, bias=False)
        self.weight.requires_grad_(False)

    def redrawn(self) -> nn.Module:
        """A module holding the filters drawn again from the seed, float32 on the CPU."""
        fresh = nn.Module()
        generator = torch.Generator().manual_seed(self.drawn_with["seed"])
        with float32_draws(), torch.device("cpu"):
            fresh.weight = nn.Parameter(sample_weights(
                self.drawn_with["init"], self.weight.shape, self.weight[0].numel(), generator),
                requires_grad=False)
        return fresh

    def reset_parameters(self) -> None:
        """The filters drawn again from the seed, in place (:meth:`redrawn`)."""
        copy_redrawn(self)


# convert() masks it as the nn.Conv2d it computes (only its reset differs)
CONVERTIBLE.register(type_name(FrozenConv2d))(CONVERTIBLE.get(type_name(nn.Conv2d)))


def _seeded(layer: nn.Module, seed: int) -> nn.Module:
    """Re-initialise an ``nn`` layer as PyTorch does, but from its own seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    return layer


def _mlp(layers: Layers, widths: list[int]) -> list[nn.Module]:
    """Linear layers through ``widths`` with ReLU between them (none after the last)."""
    modules: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:])):
        modules += [layers.linear(d_in, d_out)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
    return modules


#: The options of :func:`~lotterynet.models.build_model` that :class:`Layers` passes to every
#: subnet layer an architecture builds (its fields but ``trained`` and ``seed``, which it
#: reads itself).
MODEL_LAYER_OPTIONS = tuple(f.name for f in fields(Layers)
                            if f.init and f.name not in ("trained", "seed"))


def _width(width: int | None) -> int | None:
    """``width`` checked: None (the paper's widths) or a positive integer (0 is refused, not
    taken for None)."""
    return None if width is None else check_positive_int("width", width)


def _check_options(options: dict, own: str) -> None:
    """An option that is neither the architecture's (``own``) nor its layers' is refused
    naming both lists."""
    unknown = next((k for k in options if k not in MODEL_LAYER_OPTIONS), None)
    if unknown is not None:
        raise ValueError(f"unknown model option {unknown!r}; valid choices: the architecture's "
                         f"({own}) and its layers' ({', '.join(MODEL_LAYER_OPTIONS)})")


def _layers(seed, trained, **subnet) -> Layers:
    """The layer factory of one model; an unknown option is refused (:func:`_check_options`)."""
    _check_options(subnet, "width, in_channels, image_size, num_classes, seed, trained, ...")
    return Layers(trained=trained, seed=check_seed(seed), **subnet)


def _fc(depth: int):
    def build(*, width: int | None = None, in_channels: int = 1, image_size: int = 28,
              num_classes: int = 10, seed: int = 0, trained: bool = False, **subnet) -> nn.Module:
        hidden = [_width(width) or 500] * depth
        widths = [in_channels * image_size**2, *hidden, num_classes]
        return nn.Sequential(nn.Flatten(), *_mlp(_layers(seed, trained, **subnet), widths))

    build.__doc__ = f"FC{depth + 1}: {plural(depth, 'hidden layer')} of 500 (or ``width``)."
    return build


for _depth, _name in [(1, "fc2"), (3, "fc4")]:
    register(_name, structure="subsetsum")(_fc(_depth))


@register("lenet5", lr=0.01, structure="subsetsum")
def lenet5(*, width: int | None = None, in_channels: int = 1, image_size: int = 28,
           num_classes: int = 10, seed: int = 0, trained: bool = False,
           subnet_convs: bool = False, conv_init: str | None = None, **subnet) -> nn.Module:
    """``conv_init``: the distribution of the random frozen conv filters (default: ``init``).
    Pensia et al.'s stored Figure 2 runs froze PyTorch's default conv init, U(±1/√fan_in)
    (``scaled_uniform``): their ``--load-weights`` LeNet5 holds conv filters inside exactly
    that bound, untrained, beside trained FC weights."""
    layers = _layers(seed, trained, **subnet)
    if subnet_convs and conv_init is not None:
        raise ValueError("conv_init draws the frozen conv filters; subnet_convs has none")
    conv = layers.conv if subnet_convs else partial(layers.frozen_conv, init=conv_init)
    side = (image_size // 2 - 4) // 2  # conv1 keeps the size (padding 2), conv2 takes 4 off
    hidden = [width, width] if _width(width) else [120, 84]
    return nn.Sequential(
        conv(in_channels, 6, 5, padding=2), nn.ReLU(), MaxPool2x2(),
        conv(6, 16, 5), nn.ReLU(), MaxPool2x2(), nn.Flatten(),
        *_mlp(layers, [16 * side * side, *hidden, num_classes]))


def _convnet(blocks: int):
    def build(*, width: int | None = None, in_channels: int = 3, image_size: int = 32,
              num_classes: int = 10, seed: int = 0, trained: bool = False,
              **subnet) -> nn.Module:
        layers = _layers(seed, trained, **subnet)
        width = _width(width) or 64
        modules: list[nn.Module] = []
        c_in = in_channels
        for block in range(blocks):
            c_out = width * 2**block
            modules += [layers.conv(c_in, c_out, 3, padding=1), nn.ReLU(),
                        layers.conv(c_out, c_out, 3, padding=1), nn.ReLU(), MaxPool2x2()]
            c_in = c_out
        side = image_size // 2**blocks
        widths = [c_in * side * side, 4 * width, 4 * width, num_classes]
        return nn.Sequential(*modules, nn.Flatten(), *_mlp(layers, widths))

    build.__doc__ = (f"Conv{2 * blocks} of Ramanujan et al. (edge-popup), "
                     f"{plural(blocks, 'conv block')}.")
    return build


for _blocks in range(1, 5):
    register(f"conv{2 * _blocks}")(_convnet(_blocks))


@register("lenet5_dacunha", lr=1e-3, target_only=True)
def lenet5_dacunha(*, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                   seed: int = 0, trained: bool = False, **unused) -> nn.Module:
    """da Cunha et al. (2022), Sec. 3: the LeNet5 whose conv weights they approximate — ReLU,
    **biases** on every layer, and both 5×5 convs zero-padded by 2, so the conv part ends at
    16 × 7 × 7 ("the activation tensor has dimension 7 × 7 × 16"): 2,550 conv weights + 22 conv
    biases = their 2,572 parameters; FC 784-120-84-10. Kaiming-uniform weights (He et al.,
    ReLU gain, the paper's init), zero biases (Flux.jl's default). A *target* architecture:
    it is built with ``trained=True`` only (``--train-weights``); the subnet options are
    ignored (any other option is refused)."""
    if not trained:
        raise ValueError("lenet5_dacunha is a target architecture with biases; build it with "
                         "trained=True (--train-weights)")
    _check_options(unused, "in_channels, image_size, num_classes, seed, trained")
    generator = torch.Generator().manual_seed(check_seed(seed))
    side = image_size // 4  # both convs keep the size, two 2×2 pools
    layers = [nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), MaxPool2x2(),
              nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), MaxPool2x2(), nn.Flatten(),
              nn.Linear(16 * side * side, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
              nn.Linear(84, num_classes)]
    for layer in layers:
        if isinstance(layer, nn.Conv2d | nn.Linear):
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu", generator=generator)
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)
