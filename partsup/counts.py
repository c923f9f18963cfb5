"""Mitotic counts: per image, per mm^2 of tissue imaged, and per 10 high-power fields (HPFs).

Units: image sizes in px, ``mpp`` in micrometres per pixel, areas in mm^2
(``area_mm2 = width * height * (mpp / 1000) ** 2``).

Two "per 10 HPFs" figures are reported for a set of images, because "HPF" means two things:

* ``per_10_images`` -- each input image *is* one HPF (ICPR 2012, AMIDA13/TUPAC16 and
  MITOS-ATYPIA-14 images were cut as HPFs): ``10 * total_count / n_images``.
* ``per_10_hpf`` -- area-standardised: 10 HPFs = ``10 * hpf_area_mm2``, default
  :data:`HPF_AREA_MM2` = 0.237 mm^2 (the field of a 40x objective with a 22 mm field-number
  eyepiece; 10 HPFs = 2.37 mm^2, the definition used by the MIDOG datasets):
  ``total_count / total_area_mm2 * 10 * hpf_area_mm2``. Use this one for images that are not
  HPFs (e.g. ~7000x5000 MIDOG regions, 2.2 mm^2 each).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

#: area of one standard high-power field, mm^2 (10 HPFs = 2.37 mm^2)
HPF_AREA_MM2 = 0.237


def area_mm2(width: int, height: int, mpp: float) -> float:
    """Area of a ``width x height`` px image at ``mpp`` um/px, in mm^2."""
    if mpp is None or not mpp > 0:
        raise ValueError(f"mpp must be a positive number of um/px, got {mpp!r}")
    return float(width) * float(height) * (float(mpp) / 1000.0) ** 2


@dataclass(frozen=True)
class ImageCount:
    """The mitotic count of one image (``count`` detections on ``width x height`` px)."""

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
    """Counts over a set of images (e.g. a folder of HPFs); see the module docstring."""

    n_images: int
    total: int
    area_mm2: float
    hpf_area_mm2: float = HPF_AREA_MM2

    @property
    def per_mm2(self) -> float:
        return self.total / self.area_mm2 if self.area_mm2 > 0 else float("nan")

    @property
    def per_10_images(self) -> float:
        """Count per 10 HPFs when every image is one HPF."""
        return 10.0 * self.total / self.n_images if self.n_images else float("nan")

    @property
    def per_10_hpf(self) -> float:
        """Count per 10 standard HPFs of ``hpf_area_mm2`` each (area-standardised)."""
        return self.per_mm2 * 10.0 * self.hpf_area_mm2


def summarize(counts: Sequence[ImageCount], hpf_area_mm2: float = HPF_AREA_MM2) -> SetCount:
    """Pool per-image counts into one :class:`SetCount`."""
    if not hpf_area_mm2 > 0:
        raise ValueError(f"hpf_area_mm2 must be positive, got {hpf_area_mm2!r}")
    return SetCount(n_images=len(counts), total=sum(c.count for c in counts),
                    area_mm2=sum(c.area_mm2 for c in counts), hpf_area_mm2=hpf_area_mm2)
