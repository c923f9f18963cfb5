"""Crop classifiers: the ``classifiers`` component kind, the core's ``cnn``, and crops.

A *crop net* (what a ``classifiers`` factory returns) classifies square crops centred on
objects:

- ``factory(heads: dict[str, list[str]], **options) -> nn.Module``; ``heads`` (supplied by
  partsup from the recipe's ``classifier.heads``) names each head's classes, in logit order.
- ``forward(x)``: ``x (B, 3, S, S)`` float32, normalised as ``normalization`` says ->
  ``{head: logits (B, C_head)}`` float, one entry per head.
- ``normalization``: ``{"mean", "std", "scale", "bgr"}``, as a segmentation branch's
  (:data:`partsup.model.partial.NORMALIZATIONS`).

The crop side ``S`` is not part of the contract (nets pool globally): partsup cuts crops of
``crop_um`` micrometres at the classifier's um/px (:class:`CropSpec`, the recipe's
``classifier:`` section), ``S = round(crop_um / mpp)`` px, with :func:`extract_crops`, the one
crop cutter training and inference share.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from partsup.errors import PluginError, RecipeError
from partsup.manager import Registries
from partsup.model.heads import check_heads
from partsup.model.partial import named_normalization, normalize
from partsup.registry import component_kwargs

__all__ = ["CLASSIFIERS", "CropNet", "CropSpec", "build_classifier", "check_classifier",
           "crop_side", "extract_crops", "make_cnn", "normalize_crops"]


@dataclass(frozen=True)
class CropSpec:
    """What a classifier looks at: crops of ``crop_um`` um (side) at ``mpp`` um/px (None: the
    image's own), and its ``heads`` (``{head: (class, ...)}``)."""

    crop_um: float
    mpp: float | None
    heads: dict[str, tuple[str, ...]]

    @classmethod
    def from_section(cls, section: Mapping[str, Any], where: str = "classifier") -> "CropSpec":
        """Read a recipe's ``classifier:`` section (``crop_um``, ``mpp``, ``heads``).

        Raises:
            RecipeError: a missing or non-positive ``crop_um``, a bad ``mpp`` or bad heads.
        """
        if not isinstance(section, Mapping):
            raise RecipeError(f"{where}: expected a mapping, got {section!r}")
        crop_um, mpp = section.get("crop_um"), section.get("mpp")
        if not _positive(crop_um):
            raise RecipeError(f"{where}.crop_um: expected a positive number of micrometres, "
                              f"got {crop_um!r}")
        if mpp is not None and not _positive(mpp):
            raise RecipeError(f"{where}.mpp: expected a positive um/px or null, got {mpp!r}")
        heads = check_heads(section.get("heads"), f"{where}.heads")
        return cls(float(crop_um), None if mpp is None else float(mpp), heads)

    def side(self, image_mpp: float) -> int:
        """The crop side in px at the classifier's um/px (the image's when ``mpp`` is None)."""
        return crop_side(self.crop_um, self.mpp or image_mpp)


def _positive(value: Any) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value) and value > 0)


def crop_side(crop_um: float, mpp: float) -> int:
    """``round(crop_um / mpp)`` px, at least 1."""
    return max(1, int(round(crop_um / mpp)))


def extract_crops(image: np.ndarray, points: np.ndarray, image_mpp: float, crop_um: float,
                  crop_mpp: float | None = None) -> torch.Tensor:
    """Square crops centred on ``points``, resampled to ``crop_mpp`` um/px.

    Args:
        image: ``(H, W, 3)`` uint8 RGB at ``image_mpp`` um/px.
        points: ``(N, 2)`` x (column), y (row) in image px; pixel ``i``'s centre is at ``i``.
        crop_um: crop side in micrometres; the crop has ``S = crop_side(crop_um, crop_mpp)`` px.
        crop_mpp: um/px of the crops (None: ``image_mpp``, no resampling).

    Returns:
        ``(N, 3, S, S)`` float32 RGB 0..255 (CPU). Crop pixel ``j`` samples the image at
        ``point + (j + 0.5 - S / 2) * crop_mpp / image_mpp`` px (bilinear), so the point sits at
        the crop's centre; outside the image the image is mirrored (reflect). When a crop pixel
        spans more than 1.5 image pixels the image is first smoothed with a Gaussian of sigma
        ``sqrt(r^2 - 1) / 2`` image px (``r`` = crop px / image px) against aliasing.
    """
    crop_mpp = image_mpp if crop_mpp is None else crop_mpp
    side = crop_side(crop_um, crop_mpp)
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return torch.zeros((0, 3, side, side), dtype=torch.float32)
    ratio = float(crop_mpp) / float(image_mpp)  # image px per crop px
    sigma = math.sqrt(ratio ** 2 - 1.0) / 2.0 if ratio > 1.5 else 0.0
    margin = 2 + int(math.ceil(3 * sigma))
    half = side * ratio / 2.0
    win = int(math.ceil(side * ratio)) + 2 * margin + 1  # window side, image px
    height, width = image.shape[:2]
    padded = np.pad(np.asarray(image), ((win, win), (win, win), (0, 0)),
                    mode="reflect" if min(height, width) > 1 else "edge")
    x0 = np.clip(np.floor(pts[:, 0] - half).astype(np.int64) - margin + win, 0, width + win)
    y0 = np.clip(np.floor(pts[:, 1] - half).astype(np.int64) - margin + win, 0, height + win)
    windows = np.stack([padded[y: y + win, x: x + win] for x, y in zip(x0, y0)])
    t = torch.from_numpy(windows).permute(0, 3, 1, 2).float()
    if sigma > 0:
        t = _gaussian_blur(t, sigma)
    offsets = (np.arange(side) + 0.5 - side / 2.0) * ratio
    gx = pts[:, 0:1] + win - x0[:, None] + offsets[None, :]  # (N, S) window px
    gy = pts[:, 1:2] + win - y0[:, None] + offsets[None, :]
    nx = torch.from_numpy((2.0 * gx + 1.0) / win - 1.0).float()  # align_corners=False
    ny = torch.from_numpy((2.0 * gy + 1.0) / win - 1.0).float()
    grid = torch.stack(torch.broadcast_tensors(nx[:, None, :], ny[:, :, None]), dim=-1)
    return F.grid_sample(t, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` float (edges replicated)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def normalize_crops(crops: torch.Tensor, net: nn.Module) -> torch.Tensor:
    """RGB 0..255 crops ``(N, 3, S, S)`` -> the input ``net`` expects (its ``normalization``)."""
    return normalize(crops, net.normalization)


class CropNet(nn.Module):
    """The core's ``cnn`` crop net: per width, a stride-2 3x3 conv-BN-ReLU (then ``blocks - 1``
    stride-1 ones), global average pooling, dropout, one Linear per head.

    ``forward(x (B, 3, S, S) float32 normalised) -> {head: logits (B, C_head)}``; any ``S >= 1``
    (``2 ** len(widths)`` or more keeps every stage spatial). With the default widths about
    0.39 M parameters (2 heads).
    """

    def __init__(self, heads: Mapping[str, Sequence[str]],
                 widths: Sequence[int] = (32, 64, 128, 256), blocks: int = 1,
                 dropout: float = 0.0, normalization: str = "imagenet") -> None:
        super().__init__()
        heads = check_heads(heads, "classifier.heads")
        if not widths or any(int(w) < 1 for w in widths):
            raise RecipeError(f"classifier.model.widths: expected positive channel counts, "
                              f"got {list(widths)!r}")
        if blocks < 1:
            raise RecipeError(f"classifier.model.blocks: must be >= 1, got {blocks}")
        if not 0.0 <= dropout < 1.0:
            raise RecipeError(f"classifier.model.dropout: expected a value in [0, 1), "
                              f"got {dropout}")
        layers: list[nn.Module] = []
        c_in = 3
        for width in (int(w) for w in widths):
            for b in range(blocks):
                layers += [nn.Conv2d(c_in, width, 3, stride=2 if b == 0 else 1, padding=1,
                                     bias=False),
                           nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                c_in = width
        self.trunk = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({h: nn.Linear(c_in, len(c)) for h, c in heads.items()})
        self.classes = {h: list(c) for h, c in heads.items()}
        self.feature_channels = c_in
        self.normalization = named_normalization(normalization, "classifier.model.normalization")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` normalised -> pooled features ``(B, C)``."""
        return F.adaptive_avg_pool2d(self.trunk(x), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.dropout(self.features(x))
        return {h: layer(f) for h, layer in self.heads.items()}


def make_cnn(heads: dict[str, list[str]], widths: Sequence[int] = (32, 64, 128, 256),
             blocks: int = 1, dropout: float = 0.0, normalization: str = "imagenet") -> CropNet:
    """Small conv net for crops (core): stride-2 conv-BN-ReLU stages, global pooling, a Linear
    per head; trains on CPU."""
    return CropNet(heads, widths=widths, blocks=blocks, dropout=dropout,
                   normalization=normalization)


#: name -> factory; registered by :mod:`partsup.builtin` (the ``classifiers`` kind)
CLASSIFIERS: dict[str, Any] = {"cnn": make_cnn}


def check_classifier(net: Any, name: str) -> None:
    """Check what partsup needs of a crop net (``forward`` and ``normalization``).

    Raises:
        PluginError: one line naming the classifier and what is missing.
    """
    if not isinstance(net, nn.Module):
        raise PluginError(f"classifier {name!r}: the factory must return an nn.Module, got "
                          f"{type(net).__name__}")
    norm = getattr(net, "normalization", None)
    if not isinstance(norm, dict) or not {"mean", "std"} <= set(norm):
        raise PluginError(f"classifier {name!r}: needs a normalization dict with mean, std, "
                          f"scale, bgr")


def build_classifier(section: Mapping[str, Any], registries: Registries, *,
                     skip_weights: bool = False) -> nn.Module:
    """The crop net of a recipe's ``classifier:`` section: ``model`` (a component, default
    ``cnn``) built through ``registries.classifiers`` with ``heads`` supplied.

    ``skip_weights``: options ending in ``weights`` set to None (a checkpoint's state dict is
    loaded next, so no weight file is read).

    Raises:
        RecipeError: a bad section or unknown classifier/options. PluginError: a net that
        breaks the contract.
    """
    spec = CropSpec.from_section(section)
    name, kwargs = component_kwargs(section.get("model") or "cnn", "classifier.model")
    if skip_weights:
        kwargs = {k: (None if k.endswith("weights") else v) for k, v in kwargs.items()}
    heads = {h: list(c) for h, c in spec.heads.items()}
    net = registries.classifiers.build(name, "classifier.model", supplied={"heads": heads},
                                       **kwargs)
    check_classifier(net, name)
    return net
