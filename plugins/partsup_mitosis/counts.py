"""Mitotic counts: per image, per mm^2 of tissue imaged, and per 10 high-power fields (HPFs).

Units: image sizes in px, ``mpp`` in micrometres per pixel, areas in mm^2
(``area_mm2 = width * height * (mpp / 1000) ** 2``).

One count per 10 HPFs is reported for a set of images, area-standardised:
``per_10_hpf = total_count / total_area_mm2 * 10 * hpf_mm2``, with one HPF of ``hpf_mm2``
(:func:`hpf_mm2`: a circle of ``--field-diameter D`` mm when given, else ``--hpf-area``, default
:data:`HPF_AREA_MM2` = 0.237 mm^2, the field of a 40x objective with a 22 mm field-number
eyepiece; 10 HPFs = 2.37 mm^2, the definition used by the MIDOG datasets). An image smaller
than one HPF is too small to stand for a field: it gets no per-10-HPF figure and is left out
of the set's per-mm^2 and per-10-HPF figures (its mitoses are still in the total). Whole
slides are not pooled here: a slide's figure is its hotspot's count
(:mod:`partsup_mitosis.grading`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from partsup.plugin import ImageCount, Option, SetCount, area_mm2, check_range, pool_counts

__all__ = ["HPF_AREA_MM2", "HPF_AREA_RANGE", "ImageCount", "HpfCount", "area_mm2", "summarize",
           "is_field", "predict_options", "summary_lines", "hpf_area", "hpf_mm2",
           "check_hpf_area"]

#: area of one standard high-power field, mm^2 (10 HPFs = 2.37 mm^2)
HPF_AREA_MM2 = 0.237
#: accepted --hpf-area (mm^2): wide, but finite and physically possible
HPF_AREA_RANGE = (0.001, 100.0)


@dataclass(frozen=True)
class HpfCount(SetCount):
    """The set's images of at least one HPF pooled (``n_images``, ``total``, ``area_mm2``),
    one HPF being ``hpf_area_mm2``; ``n_small`` images smaller than one HPF (``small_total``
    mitoses) are left out. See the module docstring."""

    hpf_area_mm2: float = HPF_AREA_MM2
    n_small: int = 0
    small_total: int = 0

    @property
    def per_10_hpf(self) -> float:
        """Count per 10 HPFs of ``hpf_area_mm2`` each (area-standardised); NaN when no image
        is as large as one HPF."""
        return self.per_mm2 * 10.0 * self.hpf_area_mm2


def is_field(count: ImageCount, hpf_area_mm2: float = HPF_AREA_MM2) -> bool:
    """True when the image is at least one HPF (``hpf_area_mm2`` mm^2) in area, so it can
    stand for a field."""
    return count.area_mm2 >= hpf_area_mm2 * (1.0 - 1e-9)


def summarize(counts: Sequence[ImageCount], hpf_area_mm2: float = HPF_AREA_MM2) -> HpfCount:
    """Pool the per-image counts of images of at least one HPF into one :class:`HpfCount`;
    smaller images are counted in ``n_small`` / ``small_total`` only."""
    if not hpf_area_mm2 > 0:
        raise ValueError(f"hpf_area_mm2 must be positive, got {hpf_area_mm2!r}")
    fields = [c for c in counts if is_field(c, hpf_area_mm2)]
    small = [c for c in counts if not is_field(c, hpf_area_mm2)]
    s = pool_counts(fields)
    return HpfCount(s.n_images, s.total, s.area_mm2, hpf_area_mm2=hpf_area_mm2,
                    n_small=len(small), small_total=sum(c.count for c in small))


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
                   help=f"area of one HPF for the count per 10 HPFs (default {HPF_AREA_MM2} "
                        f"mm²; --field-diameter, when given, sets the field instead)"),
            Option("default_mpp", DEFAULT_MPP,
                   help="um/px when neither --mpp nor the image gives one"),
            Option("label", "Mitosis", help="the detected objects' class name")]


#: mpp used when neither --mpp nor the image says (MIDOG / AMIDA13 scanners)
DEFAULT_MPP = 0.25


def summary_lines(counts: Sequence[ImageCount], hpf_area_mm2: float = HPF_AREA_MM2) -> list[str]:
    """The mitotic count of a set of images: the total, then one count per 10 HPFs
    (area-standardised, the HPF's area stated) over the images of at least one HPF, with
    their count per mm^2; images smaller than one HPF get neither (a line says so)."""
    every = pool_counts(counts)
    s = summarize(counts, hpf_area_mm2)
    hpf = f"1 HPF = {s.hpf_area_mm2:.3f} mm², 10 HPFs = {10 * s.hpf_area_mm2:.2f} mm²"
    total = f"{every.total} mitoses in {every.n_images} image(s), {every.area_mm2:.3f} mm²"
    if not s.n_small:
        return [f"{total}: {s.per_mm2:.2f} per mm²",
                f"per 10 HPFs: {s.per_10_hpf:.1f} (area-standardised: {hpf})"]
    if not s.n_images:
        return [total, f"per 10 HPFs: none (each image is smaller than 1 HPF of "
                       f"{s.hpf_area_mm2:.3f} mm², too small to stand for a field; its per mm² "
                       f"in the table is no mitotic count either)"]
    return [total,
            f"per 10 HPFs: {s.per_10_hpf:.1f} (area-standardised over the {s.n_images} "
            f"image(s) of at least 1 HPF: {s.total} mitoses in {s.area_mm2:.3f} mm², "
            f"{s.per_mm2:.2f} per mm²; {hpf})",
            f"left out of it: {s.n_small} image(s) smaller than 1 HPF ({s.small_total} "
            f"mitoses), too small to stand for a field; their per mm² in the table is no "
            f"mitotic count either"]
