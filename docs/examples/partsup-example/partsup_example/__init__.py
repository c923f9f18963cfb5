"""An example third-party partsup plugin.

It registers three components through partsup's hooks:

* backbone ``tiny_cnn``: a two-conv network following the Branch contract (features, a final 1x1
  ``semantic`` layer that weight transfer can read and replace, a ``head`` that restores H x W);
* weak label ``square``: a filled square of side ``2 * half + 1`` px around each point;
* filter ``round_enough``: drops blobs whose area is far below a disk of ``min_radius`` px.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from partsup.plugin import hookimpl


class TinyCNN(nn.Module):
    """Two 3x3 convolutions at half resolution, then a 1x1 semantic layer (2 classes).

    Input ``(B, 3, H, W)`` float32 normalised as ``normalization`` says; output logits
    ``(B, 2, H, W)``.
    """

    def __init__(self, width: int = 8, num_classes: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True))
        self.semantic = nn.Conv2d(width, num_classes, 1)
        self.feature_channels = width
        self.normalization = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                              "scale": 255.0, "bgr": False}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def head(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        feats = self.features(x)
        logits = self.semantic(feats) if weight is None else F.conv2d(feats, weight)
        return self.head(logits, tuple(x.shape[-2:]))


def make_tiny_cnn(width: int = 8, num_classes: int = 2) -> TinyCNN:
    """Tiny two-conv CNN backbone (example plugin)."""
    return TinyCNN(width=width, num_classes=num_classes)


def make_square(half: int = 6) -> Callable[..., np.ndarray]:
    """Square weak label: 1 inside a (2*half+1) px square around each point, 0 elsewhere."""
    def maker(points: np.ndarray, shape: tuple[int, int], rng: np.random.Generator,
              mpp: float = 0.25) -> np.ndarray:
        out = np.zeros(shape, np.uint8)
        for x, y in np.asarray(points, float).reshape(-1, 2):
            c, r = int(round(x)), int(round(y))
            out[max(r - half, 0): r + half + 1, max(c - half, 0): c + half + 1] = 1
        return out
    return maker


def make_round_enough(min_radius: float = 3.0) -> Callable[..., np.ndarray]:
    """Keep blobs whose area (px) is at least that of a disk of ``min_radius`` px."""
    def keep(blobs: Any, mpp: float) -> np.ndarray:
        return np.asarray(blobs.area, float) >= np.pi * min_radius ** 2
    return keep


@hookimpl
def partsup_register_backbones(register: Callable[..., Any]) -> None:
    register("tiny_cnn", make_tiny_cnn)


@hookimpl
def partsup_register_label_makers(register: Callable[..., Any]) -> None:
    register("square", make_square)


@hookimpl
def partsup_register_filters(register: Callable[..., Any]) -> None:
    register("round_enough", make_round_enough)
