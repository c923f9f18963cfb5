"""Counts: detections per image, per mm^2, and pooled over a set of images.

Units: image sizes in px, ``mpp`` in micrometres per pixel, areas in mm^2
(``area_mm2 = width * height * (mpp / 1000) ** 2``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


def area_mm2(width: int, height: int, mpp: float) -> float:
    """Area of a ``width x height`` px image at ``mpp`` um/px, in mm^2."""
    if mpp is None or not mpp > 0:
        raise ValueError(f"mpp must be a positive number of um/px, got {mpp!r}")
    return float(width) * float(height) * (float(mpp) / 1000.0) ** 2


@dataclass(frozen=True)
class ImageCount:
    """The detection count of one image (``count`` detections on ``width x height`` px)."""

    name: str
    count: int
    width: int
    height: int
    mpp: float

    @property
    def area_mm2(self) -> float:
        return area_mm2(self.width, self.height, self.mpp)

    @property
    def per_mm2(self) -> float:
        """Detections per mm^2 of the image."""
        return self.count / self.area_mm2


@dataclass(frozen=True)
class SetCount:
    """Counts pooled over a set of images: ``total`` detections on ``area_mm2`` mm^2."""

    n_images: int
    total: int
    area_mm2: float

    @property
    def per_mm2(self) -> float:
        return self.total / self.area_mm2 if self.area_mm2 > 0 else float("nan")


def pool_counts(counts: Sequence[ImageCount]) -> SetCount:
    """Pool per-image counts into one :class:`SetCount`."""
    return SetCount(n_images=len(counts), total=sum(c.count for c in counts),
                    area_mm2=sum(c.area_mm2 for c in counts))
