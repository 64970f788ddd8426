"""lotterynet: training by pruning over frozen random weights (edge-popup), with the
strong-lottery-ticket structures of Pensia et al. (subset-sum) and friends."""

from . import timm_models  # noqa: F401  (registers the "timm" architecture)
from .attention import SubnetMultiheadAttention
from .convert import convert
from .distributions import DISTRIBUTIONS, sample_weights
from .export import export
from .layers import SubnetConv1d, SubnetConv2d, SubnetLinear
from .masking import FrozenWeight, MaskedWeight, global_topk, kept_count, masked_weights
from .params import count_params
from .stacked import StackedModel, stack_models
from .structures import STRUCTURES, LayerOp, TargetShape, layer_counts
from .subsetsum import solve as solve_subset_sum
from .ticket import TicketError, load_ticket, save_ticket

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


def __getattr__(name: str):
    """``lotterynet.run_stack`` imports Lightning only when it is asked for."""
    if name == "run_stack":
        from .stack import run_stack

        return run_stack
    raise AttributeError(f"module 'lotterynet' has no attribute {name!r}")
