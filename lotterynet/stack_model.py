"""The stacked model: S models of one architecture trained as one (see :mod:`lotterynet.stack`
for stacked Lightning runs). Plain torch: equal frozen tensors are stored once, and the frozen
leading modules of ``nn.Sequential`` members run once per batch for every member."""

from __future__ import annotations

import operator
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .convert import laid_out
from .errors import first_line, memory_refused
from .layers import refuse_thawed
from .masking import MaskedSparsity, masked_weights, score_magnitudes
from .models import build_model
from .topk import laid_out_as, memory_order, rows_topk_mask


def share_frozen(models: Sequence[nn.Module]) -> None:
    """Make equal frozen parameters at the same place in several models one tensor, so a stack
    holds one copy of every frozen weight its members have in common."""
    seen: dict[str, list[nn.Parameter]] = {}
    for model in models:
        for module_name, module in model.named_modules():
            for name, p in list(module._parameters.items()):
                if p is None or p.requires_grad:
                    continue
                same_place = seen.setdefault(f"{module_name}.{name}", [])
                twin = next((q for q in same_place if q.shape == p.shape and q.dtype == p.dtype
                             and q.device == p.device and torch.equal(q, p)), None)
                if twin is None:
                    same_place.append(p)
                else:
                    module._parameters[name] = twin


def frozen_prefix_length(models: Sequence[nn.Module]) -> int:
    """How many leading modules of ``nn.Sequential`` models hold nothing trainable and no
    buffers (so they compute a fixed function of the input)."""
    if not all(isinstance(m, nn.Sequential) for m in models):
        return 0
    n = 0
    for layer in zip(*models):
        if any(p.requires_grad for m in layer for p in m.parameters()) or any(
                True for m in layer for _ in m.buffers()):
            break
        n += 1
    return n


def frozen_prefix(model: nn.Module) -> nn.Sequential | None:
    """The leading modules of an ``nn.Sequential`` ``model`` that compute a fixed function of
    the input with tensors of their own (LeNet5's frozen random convolutions and pools), or
    None where there are none (a bare ``Flatten`` costs nothing to run)."""
    n = frozen_prefix_length([model])
    prefix = model[:n] if n else None
    return prefix if prefix is not None and any(True for _ in prefix.parameters()) else None


def _training_randomness(module: nn.Module) -> tuple[str, float] | None:
    """The attribute by which ``module`` draws random numbers in training, and its value: the
    rate of dropout (``p``; a float ``dropout`` as ``nn.MultiheadAttention`` has; timm's
    ``drop_rate`` / ``drop_prob``), stochastic depth (torchvision's ``p``) or RReLU's slope
    range; None when it draws none."""
    from torchvision.ops import StochasticDepth

    if isinstance(module, nn.RReLU):
        return ("upper - lower", module.upper - module.lower) if module.upper > module.lower \
            else None
    attrs = ("p",) if isinstance(module, nn.modules.dropout._DropoutNd | StochasticDepth) \
        else ("dropout", "drop_rate", "drop_prob")
    rates = ((a, getattr(module, a, 0)) for a in attrs)
    return next(((a, r) for a, r in rates if isinstance(r, int | float) and r > 0), None)


def check_deterministic(model: nn.Module) -> None:
    """Refuse models that draw random numbers in training (dropout, drop-path, RReLU): the
    members of a stack would draw them from the one RNG in turn, so none would match its
    single run."""
    for name, module in model.named_modules():
        random = _training_randomness(module)
        if random:
            attr, rate = random
            raise ValueError(f"cannot stack a model that draws random numbers in training: "
                             f"{name or type(module).__name__} has {attr}={rate}; build it "
                             f"without (timm: model_kwargs drop_rate=0, drop_path_rate=0; "
                             f"torch: dropout=0, p=0; nn.LeakyReLU for nn.RReLU)")


def check_one_layout(models: Sequence[nn.Module]) -> None:
    """Refuse models whose tensors of one name are laid out differently (channels last in one,
    contiguous in another; any other strides): a stack makes equal frozen tensors one
    (:func:`share_frozen`) and lays every member's masks out as the first member's weights, so
    a member would compute in another layout than its single run (other numbers, by float
    rounding) or read two (slower). Tensors of other shapes are not compared (they share
    nothing), nor the strides of size-1 dimensions, which order nothing
    (:func:`~lotterynet.topk.memory_order`)."""
    def layout(p: torch.Tensor) -> str:
        return "channels last" if laid_out(p) else "contiguous" if p.is_contiguous() else \
            f"laid out with strides {tuple(p.stride())}"

    first = dict(models[0].named_parameters())
    for s, model in enumerate(models[1:], 1):
        for name, p in model.named_parameters():
            if name in first and p.shape == first[name].shape and \
                    memory_order(p) != memory_order(first[name]):
                raise ValueError(f"a stack's members must be laid out alike: {name} is "
                                 f"{layout(p)} in member {s} but {layout(first[name])} in "
                                 f"member 0; give every member one memory format "
                                 f"(model.to(memory_format=...))")


def _prefix_key(modules: Sequence[nn.Module]) -> tuple:
    """Two prefixes with equal keys compute the same function: same modules, same tensors."""
    return tuple((repr(m), tuple(id(p) for p in m.parameters())) for m in modules)


class StackedModel(nn.Module):
    """S models trained as one: ``forward(x)`` returns the list of every member's output.

    The members are ordinary models of one architecture (e.g. ``build_model`` with S
    sparsities). Equal frozen tensors become one (:func:`share_frozen`); the frozen leading
    modules of ``nn.Sequential`` members run once per batch for all members that have the same
    ones. ``forward(x, members=[...])`` runs only those members (indices 0 to S - 1, each once:
    their outputs in that order, none for ``[]``; the others do no work); ``forward(h,
    prefixed=True)`` takes ``h`` as the output of the one frozen prefix all members share
    (:attr:`shared_prefix`), computed elsewhere (a data module's ``encode_with``).

    ``batched``: run the members as one. Each maskable tensor's masks of all running members
    come from one :func:`~lotterynet.topk.rows_topk_mask` (the masks each member's own
    selection gives), and where the members allow it (:attr:`unbatchable` is None) one
    ``torch.func.vmap`` of the first member's forward computes every member's output, over their
    scores stacked into ``(S, …)`` tensors: a few large kernels per op where member by member
    launches one small kernel per member and op (the same values up to float rounding; the
    gradients reach each member's own scores). None (default): on a GPU, any device but the
    CPU (as ``topk_mask`` tells them apart: CUDA, MPS, XPU), where a graphed stack's step is
    bound by its many small kernels (14 LeNet5 members: ~2,700 kernels, 6.5 ms of an H200's
    time); not on the CPU, where each member's hinted quickselect is
    cheaper than a sort and the members' steps are bound by memory traffic, not launches
    (``BENCHMARKS.md``)."""

    def __init__(self, members: Sequence[nn.Module], batched: bool | None = None):
        super().__init__()
        if not members:
            raise ValueError("a stack needs at least one member")
        kinds = {type(m).__name__ for m in members}
        if len(kinds) > 1:
            raise ValueError(f"a stack's members must be one architecture, got {sorted(kinds)}")
        for member in members:
            check_deterministic(member)
        check_one_layout(members)
        share_frozen(members)
        self.members = nn.ModuleList(members)
        n = frozen_prefix_length(members)
        # plain lists, not submodules: the modules are registered once, under ``members``
        groups: dict[tuple, int] = {}
        self._prefixes: list[nn.Module] = []
        self._prefix_of: list[int] = []
        self._rests: list[nn.Module] = []
        for m in members:
            key = _prefix_key(list(m)[:n]) if n else ()
            if key not in groups:
                groups[key] = len(self._prefixes)
                self._prefixes.append(m[:n] if n else nn.Identity())
            self._prefix_of.append(groups[key])
            self._rests.append(m[n:] if n else m)
        self.batched = batched
        self._masked = [masked_weights(m) for m in members]  # per member, in module order
        self._ks: dict[tuple, torch.Tensor] = {}  # each k list once on its device
        self._trainable = [[(name, p) for name, p in rest.named_parameters() if p.requires_grad]
                           for rest in self._rests]
        # the subnet modules whose refusal of thawed weights a vmapped forward runs (_vmapped)
        self._subnets = [[m for m in rest.modules() if isinstance(m, MaskedSparsity)]
                         for rest in self._rests]
        self.unbatchable: str | None = self._why_unbatchable()

    def forward(self, x: torch.Tensor, members: Sequence[int] | None = None,
                prefixed: bool = False) -> list[torch.Tensor]:
        if prefixed and self.shared_prefixes != 1:
            raise ValueError(f"prefixed=True takes the output of the one frozen prefix every "
                             f"member shares, but these members have {self.shared_prefixes} "
                             f"different ones (other seeds' frozen layers): pass the input")
        members = list(range(len(self.members))) if members is None else \
            member_indices(members, len(self.members))
        masks = self._row_masks(members)
        if masks and all(m is not None for m in masks) and self.unbatchable is None and \
                len({self._prefix_of[s] for s in members}) == 1:
            h = x if prefixed else self._prefixes[self._prefix_of[members[0]]](x)
            try:
                return list(self._vmapped(h, members, masks).unbind(0))
            except Exception as err:  # (told apart below, not by its words: torch rewords
                failed = first_line(err)  # them; its frames, the tensors they hold, freed)
                why = "their forward cannot be vmapped" if memory_refused(err) is None else \
                    "vmapping them ran out of memory"
        else:
            failed = None
        # member by member; where a tensor's masks were chosen together, each its own row
        positions = zip(*(self._masked[s] for s in members))  # each tensor of every member
        given = [(w, mask[row]) for mask, same in zip(masks, positions) if mask is not None
                 for row, w in enumerate(same)]
        shared: dict[int, torch.Tensor] = {0: x} if prefixed else {}
        outputs = []
        try:
            for w, mask in given:
                w.given_mask = mask
            for s in members:
                g = self._prefix_of[s]
                if g not in shared:
                    shared[g] = self._prefixes[g](x)
                outputs.append(self._rests[s](shared[g]))
        finally:
            for w, _ in given:
                w.given_mask = None
        if failed is not None:  # the members ran: vmap's own failure, not their forward's
            self.unbatchable = failed
            warnings.warn(f"the stack's members run one by one: {why} ({failed})",
                          stacklevel=2)
        return outputs

    def _row_masks(self, members: Sequence[int]) -> list[torch.Tensor | None]:
        """Per maskable tensor (in module order), the running members' masks as one
        ``(S, *shape)`` tensor from one :func:`rows_topk_mask` (see ``batched``), None for a
        tensor whose members each choose their own (fixed-size groups, mixed rules); an empty
        list when the members are not batched."""
        if len(members) < 2 or not self._masked[0]:
            return []
        off_cpu = self._masked[0][0].scores.device.type != "cpu"
        if not (off_cpu if self.batched is None else self.batched):
            return []
        masks = []
        for same in zip(*(self._masked[s] for s in members)):
            first = same[0]
            if any(w.group_dim is not None or w.ties != first.ties
                   or w.scores.shape != first.scores.shape for w in same):
                masks.append(None)
                continue
            key = (tuple(w.k for w in same), first.scores.device)
            if key not in self._ks:  # one host-to-device copy per k list (none in a graph)
                self._ks[key] = torch.tensor(key[0], device=first.scores.device)
            with torch.no_grad():
                magnitudes = score_magnitudes(torch.stack([w.scores.reshape(-1) for w in same]))
                rows = rows_topk_mask(magnitudes, self._ks[key], first.ties, first.weight.dtype)
            masks.append(laid_out_as(rows, first.weight, len(same)))
        return masks

    def _why_unbatchable(self) -> str | None:
        """Why one vmapped forward cannot stand for the members' own (None when it can): it
        runs the first member's modules with each member's trainable tensors, so every other
        tensor must be one the members share, and nothing may change in place (buffers)."""
        names = [[name for name, _ in t] for t in self._trainable]
        if any(n != names[0] for n in names):
            return "the members' trainable tensors differ in name"
        if any(True for rest in self._rests for _ in rest.buffers()):
            return "the members hold buffers (batch norm statistics)"
        frozen = [[p for p in rest.parameters() if not p.requires_grad] for rest in self._rests]
        if any(len(f) != len(frozen[0]) or any(p is not q for p, q in zip(f, frozen[0]))
               for f in frozen):
            return "the members' frozen tensors differ (other seeds)"
        return None

    def _vmapped(self, h: torch.Tensor, members: list[int], masks: list[torch.Tensor]
                 ) -> torch.Tensor:
        """``(S, …)``: every member's output on ``h`` (the shared prefix's output), from one
        ``torch.func.vmap`` of the first member's forward over the members' stacked trainable
        tensors and masks. Where it raises, :meth:`forward` runs the members one by one: they
        raise the error of a forward that fails as they would, and where they run, the
        forward is one vmap cannot run (an op reading a value on the host; whatever its
        error says): with a warning, member by member from then on (:attr:`unbatchable`)."""
        first = self._rests[members[0]]
        for module in self._subnets[members[0]]:  # (inside, a weight thawed before the stack
            refuse_thawed(module)  # was built is one of those vmapped: not refused)
        weights = self._masked[members[0]]
        stacked = {name: torch.stack([self._trainable[s][i][1] for s in members])
                   for i, (name, _) in enumerate(self._trainable[members[0]])}

        def member(tensors: dict, masks: list[torch.Tensor]) -> torch.Tensor:
            for w, mask in zip(weights, masks):
                w.given_mask = mask
            return torch.func.functional_call(first, tensors, (h,))

        try:
            return torch.func.vmap(member)(stacked, masks)
        finally:
            for w in weights:
                w.given_mask = None

    @property
    def shared_prefixes(self) -> int:
        """How many distinct frozen prefixes run per batch (1 when all members share one)."""
        return len(self._prefixes)

    @property
    def shared_prefix(self) -> nn.Module | None:
        """The frozen prefix every member shares, where it holds tensors (LeNet5's convs with
        one seed: :func:`frozen_prefix`); None otherwise."""
        return frozen_prefix(self.members[0]) if self.shared_prefixes == 1 else None


def member_indices(members, count: int) -> list[int]:
    """``members``, the members a :class:`StackedModel` of ``count`` runs, as their indices:
    integers (numpy's, a torch integer scalar), 0 to ``count - 1``, each once. A bad one was a
    bare ``IndexError`` (``[5]``) or ``TypeError`` (``[1.0]``) deep in the forward, or ran
    another member than meant (``[True]``: member 1, a bool being an int; ``[-1]``: the last)
    or one twice; now a one-line error naming it. Plain Python on a short list, per forward."""
    choices = f"the stack's members are 0 to {count - 1}" if count > 1 else \
        "the stack's one member is 0"
    try:
        given = list(members)
    except TypeError:
        raise TypeError(f"members={members!r} is not a list of member indices; "
                        f"{choices}") from None
    indices: list[int] = []
    for s in given:
        try:
            index = None if isinstance(s, bool) or getattr(s, "dtype", None) == torch.bool \
                else operator.index(s)
        except TypeError:
            index = None
        if index is None:
            raise TypeError(f"members={given!r}: {s!r} is not a member's index; {choices}")
        if not 0 <= index < count:
            raise ValueError(f"members={given!r}: {s!r} is not a member's index; {choices}")
        if index in indices:
            raise ValueError(f"members={given!r}: member {index} is named twice; name each "
                             f"member once")
        indices.append(index)
    return indices


def stack_models(arch: str, sparsities: Sequence[float], **kwargs) -> StackedModel:
    """A :class:`StackedModel` of ``build_model(arch, sparsity=s, **kwargs)`` for every ``s``:
    ``stack_models("lenet5", [0.5, 0.9], structure="subsetsum", seed=0)``, or
    ``stack_models("timm:resnet10t", [0.5, 0.9], num_classes=10)``. ``sparsities`` may be a
    1-D numpy array (``np.linspace(0.5, 0.99, 5)``): its numbers are taken as ``build_model``
    takes numpy's."""
    if isinstance(sparsities, np.ndarray) and sparsities.ndim == 1:
        sparsities = list(sparsities)
    if isinstance(sparsities, str | bytes) or not isinstance(sparsities, Sequence):
        raise TypeError(f"sparsities must be a sequence of numbers (one member each), got "
                        f"{sparsities!r}")
    return StackedModel([build_model(arch, sparsity=s, **kwargs) for s in sparsities])
