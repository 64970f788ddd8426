"""lotterynet: training by pruning over frozen random weights (edge-popup), with the
strong-lottery-ticket structures of Pensia et al. (subset-sum) and friends."""

from .distributions import DISTRIBUTIONS, sample_weights
from .layers import SubnetConv1d, SubnetConv2d, SubnetLinear
from .masking import MaskedWeight, global_topk, kept_count, masked_weights
from .params import count_params
from .structures import STRUCTURES

__all__ = [
    "DISTRIBUTIONS",
    "STRUCTURES",
    "MaskedWeight",
    "SubnetConv1d",
    "SubnetConv2d",
    "SubnetLinear",
    "count_params",
    "global_topk",
    "kept_count",
    "masked_weights",
    "sample_weights",
]
