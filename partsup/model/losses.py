"""Ignore-aware pixel-wise cross-entropy with ``sum`` (the paper's) or ``mean`` reduction.

``loss(logits (B, C, H, W) float, target (B, H, W) int64) -> scalar`` float32; pixels whose target
is 255 (:data:`partsup.types.IGNORE_INDEX`) contribute nothing.

- ``reduction="sum"``: cross-entropy summed over the non-ignored pixels of the batch, divided by
  the batch size B (Caffe's SoftmaxWithLoss with ``normalize: false``, used with lr 1e-10).
- ``reduction="mean"``: averaged over the non-ignored pixels; 0 (with a gradient path) when every
  pixel is ignored, never NaN.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from partsup.errors import RecipeError
from partsup.types import IGNORE_INDEX

Reduction = Literal["sum", "mean"]


class MaskedCrossEntropy(nn.Module):
    """Pixel-wise softmax cross-entropy ignoring label 255.

    Args:
        reduction: ``sum`` (summed over pixels, divided by batch size) or ``mean``.
        weight: optional per-class weights (length C), as in ``torch.nn.CrossEntropyLoss``.
    """

    def __init__(self, reduction: Reduction = "sum", weight: Sequence[float] | None = None) -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise RecipeError(f"loss reduction: expected 'sum' or 'mean', got {reduction!r}")
        self.reduction = reduction
        w = None if weight is None else torch.as_tensor(list(weight), dtype=torch.float32)
        self.register_buffer("weight", w, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 4 or target.ndim != 3 or logits.shape[0] != target.shape[0] \
                or logits.shape[2:] != target.shape[1:]:
            raise ValueError(f"loss: expected logits (B, C, H, W) and target (B, H, W), got "
                             f"{tuple(logits.shape)} and {tuple(target.shape)}")
        target = target.long()
        per_pixel = F.cross_entropy(logits.float(), target, weight=self.weight,
                                    ignore_index=IGNORE_INDEX, reduction="none")
        if self.reduction == "sum":
            return per_pixel.sum() / logits.shape[0]
        valid = target != IGNORE_INDEX
        if self.weight is not None:
            denom = self.weight[target.clamp(max=logits.shape[1] - 1)][valid].sum()
        else:
            denom = valid.sum().to(per_pixel.dtype)
        return per_pixel.sum() / denom.clamp(min=1e-12) if bool(valid.any()) else per_pixel.sum()

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, ignore_index={IGNORE_INDEX}"


def pixel_ce(reduction: Reduction = "sum", weight: list[float] | None = None) -> MaskedCrossEntropy:
    """Strong pixel-wise 2-class cross-entropy, label 255 ignored; reduction sum | mean."""
    return MaskedCrossEntropy(reduction, weight)


LOSSES = {"pixel_ce": pixel_ce}
