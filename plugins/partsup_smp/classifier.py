"""The ``timm`` crop classifier: any timm model as the trunk of a second look.

``make_timm_classifier(heads, arch="resnet18", weights=None, ...)`` builds ``timm.create_model(
arch, num_classes=0)`` (pooled features ``(B, C)``) and one ``nn.Linear(C, len(classes))`` per
head: ``forward(x (B, 3, S, S) normalised) -> {head: logits (B, C_head)}`` (the contract of the
``classifiers`` kind, docs/plugins.md). Weights come only from a local file (a timm or
torchvision state dict of the same model; its ImageNet classifier tensors are dropped); timm is
imported only when a classifier is built.
"""
from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from partsup.plugin import RecipeError, named_normalization

__all__ = ["TimmClassifier", "make_timm_classifier"]


class TimmClassifier(nn.Module):
    """A timm trunk (``num_classes=0``: pooled features) and a Linear per head."""

    def __init__(self, trunk: nn.Module, heads: dict[str, list[str]],
                 normalization: dict[str, Any]) -> None:
        super().__init__()
        self.trunk = trunk
        channels = int(getattr(trunk, "num_features"))
        self.heads = nn.ModuleDict({h: nn.Linear(channels, len(c)) for h, c in heads.items()})
        self.classes = {h: list(c) for h, c in heads.items()}
        self.normalization = normalization

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(x)
        return {h: layer(features) for h, layer in self.heads.items()}


def make_timm_classifier(heads: dict[str, list[str]], arch: str = "resnet18",
                         weights: str | None = None, drop_rate: float = 0.0,
                         normalization: Literal["imagenet", "caffe", "unit"] = "imagenet",
                         **kw: Any) -> TimmClassifier:
    """Any timm model as a crop classifier (pooled features, a Linear per head).

    Args:
        heads: ``{head: [class, ...]}`` (supplied by partsup from ``classifier.heads``).
        arch: a timm model name (e.g. ``resnet18``, ``efficientnet_b0``, ``mobilenetv3_small_100``).
        weights: a local file with the model's weights (a state dict, e.g. a timm or
            torchvision ImageNet checkpoint; its classifier is dropped), or None (random init).
        drop_rate: dropout before the heads (timm's ``drop_rate``).
        normalization: the input normalisation the weights expect.
        **kw: further keyword arguments of ``timm.create_model``.
    """
    import timm

    from partsup_smp.weights import load_encoder_weights
    if weights is not None and not _local(weights):
        raise RecipeError(f"classifier.model.weights: {weights!r} is not a local file (nothing "
                          f"is downloaded); give a path to a state dict or null")
    try:
        trunk = timm.create_model(arch, pretrained=False, num_classes=0, drop_rate=drop_rate,
                                  **kw)
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        msg = str(exc.args[0] if exc.args else exc).splitlines()[0][:300]
        raise RecipeError(f"classifier.model: timm cannot build {arch!r} with options {kw}: "
                          f"{msg}") from None
    if weights is not None:
        load_encoder_weights(trunk, weights)
    return TimmClassifier(trunk, heads, named_normalization(normalization,
                                                            "classifier.model.normalization"))


def _local(value: str) -> bool:
    from pathlib import Path
    return "/" in value or "\\" in value or Path(value).suffix != "" or Path(value).exists()
