"""The concentric loss (SegMitos): 2-class softmax cross-entropy with the annulus (255) ignored.

``loss(logits (B, 2, H, W), target (B, H, W) int64) -> scalar``; ``reduction="sum"`` sums over the
non-ignored pixels and divides by the batch size (the paper's recipe), ``"mean"`` averages over
them. It is the core's :class:`partsup.model.losses.MaskedCrossEntropy` under the recipe name used by
the papers.
"""
from __future__ import annotations

from partsup.plugin import MaskedCrossEntropy, Reduction


def concentric_loss(reduction: Reduction = "sum",
                    weight: list[float] | None = None) -> MaskedCrossEntropy:
    """Concentric loss: 2-class cross-entropy, annulus (255) ignored; reduction sum | mean."""
    return MaskedCrossEntropy(reduction, weight)


LOSSES = {"concentric": concentric_loss}
