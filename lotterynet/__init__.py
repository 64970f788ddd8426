"""lotterynet: training by pruning over frozen random weights (edge-popup), with the
strong-lottery-ticket structures of Pensia et al. (subset-sum) and friends."""

import importlib

# Exported names and their modules (``module.attribute`` where the name differs there), imported
# on first use (PEP 562): ``import lotterynet`` and ``train.py --help`` stay fast, and torch is
# loaded only when something needs it.
_EXPORTS = {
    "convert": "convert", "DISTRIBUTIONS": "distributions", "sample_weights": "distributions",
    "export": "export", "SubnetConv1d": "layers", "SubnetConv2d": "layers",
    "SubnetLinear": "layers", "FrozenWeight": "masking", "MaskedWeight": "masking",
    "global_topk": "masking", "kept_count": "masking", "masked_weights": "masking",
    "count_params": "params", "STRUCTURES": "structures", "LayerOp": "structures",
    "TargetShape": "structures", "layer_counts": "structures",
    "solve_subset_sum": "subsetsum.solve",
    "TicketError": "ticket", "load_ticket": "ticket", "save_ticket": "ticket",
    "SubnetMultiheadAttention": "attention", "StackedModel": "stacked",
    "stack_models": "stacked", "run_stack": "stack",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lotterynet' has no attribute {name!r}")
    module, _, attribute = _EXPORTS[name].partition(".")
    return getattr(importlib.import_module(f".{module}", __name__), attribute or name)


__all__ = [
    "DISTRIBUTIONS",
    "STRUCTURES",
    "FrozenWeight",
    "LayerOp",
    "MaskedWeight",
    "SubnetConv1d",
    "StackedModel",
    "SubnetConv2d",
    "SubnetLinear",
    "SubnetMultiheadAttention",
    "TargetShape",
    "TicketError",
    "convert",
    "count_params",
    "export",
    "global_topk",
    "kept_count",
    "layer_counts",
    "load_ticket",
    "masked_weights",
    "run_stack",
    "sample_weights",
    "save_ticket",
    "solve_subset_sum",
    "stack_models",
]

