"""lotterynet: training by pruning over frozen random weights (edge-popup), with the
strong-lottery-ticket structures of Pensia et al. (subset-sum) and friends."""

import importlib
import sys
import types

#: The code's version, pyproject.toml's (read from here): what a run's ``results.json`` names
#: as ``versions["lotterynet"]``, also for a checkout on ``PYTHONPATH`` beside an installed copy.
__version__ = "0.1.0"

# Exported names and their modules (``module.attribute`` where the name differs there), imported
# on first use (PEP 562): ``import lotterynet`` and ``train.py --help`` stay fast, and torch is
# loaded only when something needs it.
_EXPORTS = {
    "convert": "convert", "DISTRIBUTIONS": "distributions", "sample_weights": "distributions",
    "export": "export", "SubnetConv1d": "layers", "SubnetConv2d": "layers",
    "SubnetLinear": "layers", "FrozenWeight": "masking", "MaskedWeight": "masking",
    "global_topk": "masking", "kept_count": "masking", "masked_weights": "masking",
    "pruned_fraction": "masking",
    "count_params": "params", "STRUCTURES": "structures", "LayerOp": "structures",
    "TargetShape": "structures", "layer_counts": "structures",
    "solve_subset_sum": "subsetsum.solve",
    "TicketError": "ticket", "load_ticket": "ticket", "save_ticket": "ticket",
    "SubnetMultiheadAttention": "attention", "SUBNET_MODULES": "attention",
    "StackedModel": "stack_model",
    "stack_models": "stack_model", "run_stack": "stack", "EdgePopupModule": "module",
    "TensorDataModule": "datamodule", "build_model": "models",
    "CheckedCheckpointIO": "run_callbacks",
}


class _Package(types.ModuleType):
    """Keeps ``lotterynet.convert`` and ``lotterynet.export`` the functions: importing the
    submodules of the same names would otherwise bind the modules to those names (the import
    system sets the parent's attribute), hiding the lazy export. The submodules stay importable
    (``from lotterynet.export import export``)."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lotterynet' has no attribute {name!r}")
    module, _, attribute = _EXPORTS[name].partition(".")
    return getattr(importlib.import_module(f".{module}", __name__), attribute or name)


def __dir__() -> list[str]:
    """The lazy exports too, so ``dir(lotterynet)`` and tab completion show them."""
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "DISTRIBUTIONS",
    "STRUCTURES",
    "SUBNET_MODULES",
    "CheckedCheckpointIO",
    "EdgePopupModule",
    "FrozenWeight",
    "LayerOp",
    "MaskedWeight",
    "StackedModel",
    "SubnetConv1d",
    "SubnetConv2d",
    "SubnetLinear",
    "SubnetMultiheadAttention",
    "TargetShape",
    "TensorDataModule",
    "TicketError",
    "build_model",
    "convert",
    "count_params",
    "export",
    "global_topk",
    "kept_count",
    "layer_counts",
    "load_ticket",
    "masked_weights",
    "pruned_fraction",
    "run_stack",
    "sample_weights",
    "save_ticket",
    "solve_subset_sum",
    "stack_models",
]

