"""CUDA graphs for a training step's forward and backward.

An edge-popup step of a small model is launch-bound on a GPU: LeNet5's step after its frozen
convolutions is ~200 small kernels that keep an H200 busy for 0.5 ms, which the host takes
5.4 ms to launch one by one (batch 64; ``BENCHMARKS.md``, "GPU suite"). :class:`StepGraphs`
captures the forward and backward once per input shape with torch's own
``torch.cuda.make_graphed_callables`` and replays them as two launches: 1.0 ms. The optimizer
step stays outside the graph, so learning-rate schedules, gradient clipping and Lightning's
loop work as they do without it.

A graph replays the kernels it captured, on the memory it captured: the parameters' storage
and every mask's ``k`` are fixed in it, and Python-side work in a forward (a counter kept in
an attribute) does not run on replay. The Lightning modules therefore drop their graphs at the
start of every training epoch, so whatever happens between epochs (a resume, a new sparsity, a
callback's ``set_mask``) is captured anew; code that changes a mask or moves parameters in the
middle of an epoch calls :meth:`StepGraphs.clear`. A graph is only used where replaying it is
the same computation: a step that records gradients, on a CUDA tensor, outside autocast
(``bf16-mixed`` and ``16-mixed`` steps run eagerly), on one device. A step that cannot be
captured (one that reads a value on the host, such as ``BatchNorm2d(momentum=None)``) runs
eagerly from then on, with a warning that says why.

Capturing runs the step's forward and backward a few times on the first batch of a shape
(torch's warm-up); the buffers those runs change (batch norms' running statistics) are put
back, so a graphed run's buffers see each batch once, as an eager run's do. Random draws in a
forward (dropout) come from another place of the generator's stream than an eager run's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .errors import first_line

#: Input shapes captured per epoch (a loader's full batches and its shorter last one, and a
#: few more); a step of any other shape runs eagerly rather than hold one more graph's memory.
MAX_GRAPHS = 4


class _Captured(nn.Module):
    """``fn`` as a module that holds ``modules``: ``make_graphed_callables`` differentiates a
    module's forward with respect to its parameters."""

    def __init__(self, fn: Callable, modules: Sequence[nn.Module]):
        super().__init__()
        self.fn = fn
        self.parts = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor):
        out = self.fn(x)
        return tuple(out) if isinstance(out, list) else out


class StepGraphs:
    """``graphs(fn, modules, x)`` is ``fn(x)`` (a tensor or a list of tensors), replayed from a
    CUDA graph captured at the first call with ``x``'s shape and ``key``, where a graph may be
    used (see the module docstring); eagerly otherwise, or while ``enabled`` is False.
    ``modules`` hold every parameter ``fn`` trains. ``captures`` counts the graphs made;
    ``failed`` says why a capture failed (no more are tried)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.captures = 0
        self.failed: str | None = None
        self._graphs: dict[tuple, Callable] = {}

    def clear(self) -> None:
        """Drop every graph (and the memory it holds); the next steps capture anew."""
        self._graphs.clear()

    def __getstate__(self) -> dict:
        """Copies and pickles (a callback's ``deepcopy`` of the module, a checkpoint of the
        whole object) hold no graph: one replays the memory of the model it was captured on,
        so a copy captures its own."""
        return {**self.__dict__, "_graphs": {}}

    def usable(self, x: torch.Tensor) -> bool:
        return (self.enabled and self.failed is None and x.is_cuda and torch.is_grad_enabled()
                and not torch.is_autocast_enabled(x.device.type))

    def __call__(self, fn: Callable, modules: Sequence[nn.Module], x: torch.Tensor,
                 key: tuple = ()):
        if not self.usable(x):
            return fn(x)
        name = (tuple(x.shape), x.dtype, x.device, key)
        graphed = self._graphs.get(name)
        if graphed is None:
            if len(self._graphs) >= MAX_GRAPHS:
                return fn(x)
            # The sample becomes the graph's input buffer; every replay copies x into it.
            buffers = [(b, b.clone()) for m in modules for b in m.buffers()]
            try:
                graphed = torch.cuda.make_graphed_callables(
                    _Captured(fn, modules), (x.detach().clone(),), allow_unused_input=True)
            except RuntimeError as err:  # a host read or an op a graph cannot hold
                self.failed = first_line(err)
                warnings.warn(f"CUDA graphs off: the training step could not be captured "
                              f"({self.failed}); its steps run eagerly (--no-cuda-graphs "
                              f"skips the attempt)", stacklevel=2)
            finally:  # undo the warm-up's updates of running statistics
                with torch.no_grad():
                    for buffer, before in buffers:
                        buffer.copy_(before)
            if self.failed is not None:
                return fn(x)
            self._graphs[name] = graphed
            self.captures += 1
        return graphed(x)
