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

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from partsup.plugin import ImageCount, Option, SetCount, area_mm2, check_range, pool_counts

__all__ = ["HPF_AREA_MM2", "HPF_AREA_RANGE", "ImageCount", "HpfCount", "area_mm2", "summarize",
           "predict_options", "summary_lines", "hpf_area", "hpf_mm2", "check_hpf_area"]

#: area of one standard high-power field, mm^2 (10 HPFs = 2.37 mm^2)
HPF_AREA_MM2 = 0.237
#: accepted --hpf-area (mm^2): wide, but finite and physically possible
HPF_AREA_RANGE = (0.001, 100.0)


@dataclass(frozen=True)
class HpfCount(SetCount):
    """Counts over a set of images (e.g. a folder of HPFs); see the module docstring."""

    hpf_area_mm2: float = HPF_AREA_MM2

    @property
    def per_10_images(self) -> float:
        """Count per 10 HPFs when every image is one HPF."""
        return 10.0 * self.total / self.n_images if self.n_images else float("nan")

    @property
    def per_10_hpf(self) -> float:
        """Count per 10 standard HPFs of ``hpf_area_mm2`` each (area-standardised)."""
        return self.per_mm2 * 10.0 * self.hpf_area_mm2


def summarize(counts: Sequence[ImageCount], hpf_area_mm2: float = HPF_AREA_MM2) -> HpfCount:
    """Pool per-image counts into one :class:`HpfCount`."""
    if not hpf_area_mm2 > 0:
        raise ValueError(f"hpf_area_mm2 must be positive, got {hpf_area_mm2!r}")
    s = pool_counts(counts)
    return HpfCount(s.n_images, s.total, s.area_mm2, hpf_area_mm2=hpf_area_mm2)


def hpf_mm2(options: Mapping[str, Any]) -> float:
    """The area of one high-power field for ``partsup predict``'s ``options``, mm^2: a circle
    of ``--field-diameter D`` mm (``pi * (D / 2) ** 2``) when given, else ``--hpf-area``
    (default :data:`HPF_AREA_MM2`)."""
    diameter = options.get("field_diameter")
    if diameter:
        return math.pi * (float(diameter) / 2.0) ** 2
    return float(options.get("hpf_area") or HPF_AREA_MM2)


def check_hpf_area(value: float) -> None:
    """A one-line PartsupError unless ``value`` (mm^2) lies in :data:`HPF_AREA_RANGE`."""
    check_range("--hpf-area", value, *HPF_AREA_RANGE, "mm²")


def hpf_area(text: str) -> float:
    """``--hpf-area`` value: a float in :data:`HPF_AREA_RANGE` (else a one-line PartsupError)."""
    value = float(text)
    check_hpf_area(value)
    return value


def predict_options() -> list[Option]:
    """``partsup predict`` options and defaults of this plugin: ``--hpf-area``, the scanners'
    0.25 um/px when an image records no resolution, and the class name "Mitosis"."""
    return [Option("hpf_area", HPF_AREA_MM2, flag="--hpf-area", type=hpf_area, metavar="MM2",
                   check=check_hpf_area,
                   help=f"area of one HPF for the area-standardised count (default "
                        f"{HPF_AREA_MM2} mm²)"),
            Option("default_mpp", DEFAULT_MPP,
                   help="um/px when neither --mpp nor the image gives one"),
            Option("label", "Mitosis", help="the detected objects' class name")]


#: mpp used when neither --mpp nor the image says (MIDOG / AMIDA13 scanners)
DEFAULT_MPP = 0.25


def summary_lines(counts: Sequence[ImageCount], hpf_area_mm2: float = HPF_AREA_MM2) -> list[str]:
    """The mitotic count of a set: total, per mm^2, and the two per-10-HPF figures."""
    s = summarize(counts, hpf_area_mm2)
    return [f"{s.total} mitoses in {s.n_images} image(s), {s.area_mm2:.3f} mm²: "
            f"{s.per_mm2:.2f} per mm²",
            f"per 10 HPFs: {s.per_10_images:.1f} (each image = 1 HPF); "
            f"{s.per_10_hpf:.1f} (area-standardised, 10 HPFs = {10 * s.hpf_area_mm2:.2f} mm²)"]
