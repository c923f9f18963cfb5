"""Counts: detections per image, per mm^2, and pooled over a set of images.

Units: image sizes in px, ``mpp`` in micrometres per pixel, areas in mm^2
(``area_mm2 = width * height * (mpp / 1000) ** 2``).

After a second look that labels its detections, counts also hold ``classes``: ``class ->
number of detections`` in the labelling head's class order (empty without one).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence


def area_mm2(width: int, height: int, mpp: float) -> float:
    """Area of a ``width x height`` px image at ``mpp`` um/px, in mm^2."""
    if mpp is None or not mpp > 0:
        raise ValueError(f"mpp must be a positive number of um/px, got {mpp!r}")
    return float(width) * float(height) * (float(mpp) / 1000.0) ** 2


def count_classes(labels: Iterable[str | None], classes: Sequence[str] = ()
                  ) -> dict[str, int]:
    """``class -> count`` of ``labels`` (a detection's ``label`` each; None not counted):
    every class of ``classes`` first (0 when absent), in order, then any other label in
    first-seen order."""
    out = dict.fromkeys(classes, 0)
    for label in labels:
        if label is not None:
            out[label] = out.get(label, 0) + 1
    return out


def merge_classes(parts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """The per-class counts of ``parts`` summed, classes in first-seen order."""
    out: dict[str, int] = {}
    for part in parts:
        for name, n in part.items():
            out[name] = out.get(name, 0) + int(n)
    return out


@dataclass(frozen=True)
class ImageCount:
    """The detection count of one image (``count`` detections on ``width x height`` px);
    ``classes``: ``class -> count`` after a labelling second look (empty without)."""

    name: str
    count: int
    width: int
    height: int
    mpp: float
    classes: Mapping[str, int] = field(default_factory=dict)

    @property
    def area_mm2(self) -> float:
        return area_mm2(self.width, self.height, self.mpp)

    @property
    def per_mm2(self) -> float:
        """Detections per mm^2 of the image."""
        return self.count / self.area_mm2


@dataclass(frozen=True)
class SetCount:
    """Counts pooled over a set of images: ``total`` detections on ``area_mm2`` mm^2
    (``classes``: ``class -> count`` summed over the images; empty without a second look)."""

    n_images: int
    total: int
    area_mm2: float
    classes: Mapping[str, int] = field(default_factory=dict)

    @property
    def per_mm2(self) -> float:
        return self.total / self.area_mm2 if self.area_mm2 > 0 else float("nan")


def pool_counts(counts: Sequence[ImageCount]) -> SetCount:
    """Pool per-image counts into one :class:`SetCount`."""
    return SetCount(n_images=len(counts), total=sum(c.count for c in counts),
                    area_mm2=sum(c.area_mm2 for c in counts),
                    classes=merge_classes(c.classes for c in counts))
