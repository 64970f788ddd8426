"""Parameter accounting: a model's maskable, kept, frozen and trainable counts
(:func:`count_params`), and the kept count that a sweep's table and W&B report
(:func:`kept_params`)."""

from __future__ import annotations

from torch import nn

from .masking import check_module, masked_weights


def kept_params(counts: dict[str, int]) -> int:
    """The weights a network of :func:`count_params`' ``counts`` keeps, as a sweep's table and
    W&B's ``params/kept`` count them: those its masks keep, or, with no masks (the trained
    dense baseline, which keeps all its weights), every parameter it trains."""
    return counts["kept"] if counts["maskable"] else counts["trainable"]


def count_params(model: nn.Module) -> dict[str, int]:
    """Counts for a model:

    * ``maskable`` — frozen random weights that carry a score;
    * ``kept`` — maskable weights the current masks keep (what plots call "parameters");
    * ``frozen`` — frozen parameters that carry no score (frozen biases, random conv filters,
      and the norms / embeddings / tokens that :func:`~lotterynet.convert.convert` freezes at
      their initial values by default);
    * ``trainable`` — parameters the optimizer updates (scores, and any trained BN/bias).
    """
    tensors = masked_weights(check_module(model, "count_params"))
    maskable = {id(m.weight) for m in tensors}
    return {
        "maskable": sum(m.weight.numel() for m in tensors),
        "kept": sum(m.kept for m in tensors),
        "frozen": sum(p.numel() for p in model.parameters()
                      if not p.requires_grad and id(p) not in maskable),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
