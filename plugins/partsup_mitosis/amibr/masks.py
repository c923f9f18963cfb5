"""Pixel masks of the centred mitotic figure of an AMi-Br crop (real set A for ``ami-br``).

Rule (:func:`figure_mask`), on a crop of ``(C, C, 3)`` uint8 RGB with the figure at
``(c, c)``, ``c = C // 2``, at about 0.25 um/px:

1. Hematoxylin by colour deconvolution (skimage ``rgb2hed``), Gaussian-smoothed with sigma 1 px
   (:func:`partsup_mitosis.amibr.measure.smoothed_hematoxylin`, the same map the reader measures
   figures on).
2. Threshold ``max(otsu(h), LOCAL_FRACTION * p95(h in the central 17x17 px))``: Otsu separates
   nuclei from stroma; the local term keeps a pale-nucleus halo out of a dark figure's mask.
3. Components (8-connected) with a pixel within ``NEAR_PX`` px of the centre: the figure. When
   none comes that close (the centre of an anaphase or telophase lies between its two daughter
   clumps), the components within ``PAIR_PX`` px instead.
4. Holes filled, then a binary opening and closing with a disc of radius 1 px (the mask
   outline is smoothed and single-pixel bridges to neighbours are cut), holes filled again;
   the components near the centre are selected again after the opening.
5. Rejected, with the first reason that applies: black slide-border padding at the centre, no
   dark component near the centre, the area outside ``[AREA_MIN_PX, AREA_MAX_PX]``, the mask
   touches the crop border, or it reaches farther than ``MAX_RADIUS_PX`` from the centre.

Deterministic (no randomness). Returns :class:`MaskResult` (``mask`` uint8 ``(C, C)``, 1 =
figure, or ``None`` with ``reason``). :func:`build_figure_masks` applies the rule to the figures of
the ``ami-br`` reader's mask slides and :func:`crop_mask` gives one back in crop pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage as ndi

from partsup_mitosis.amibr.measure import smoothed_hematoxylin, valid_pixels
from partsup_mitosis.amibr.metadata import Figure

MPP = 0.25  # um/px of the AMi-Br crops
NEAR_PX = 4.0  # a component must come this close (px) to the crop centre ...
PAIR_PX = 12.0  # ... or, when none does, this close (the two daughter clumps of a telophase)
LOCAL_FRACTION = 0.5  # threshold floor: this fraction of the centre's dark level
AREA_MIN_PX = 60  # 3.75 um^2: smaller is a speck, not a figure
AREA_MAX_PX = 1600  # 100 um^2: larger is a nucleus cluster or a merged neighbour
MAX_RADIUS_PX = 28.0  # 7 um from the centre (the reader's blob radius is clipped to 28 px)

REASONS = ("no dark component near the centre", "area below minimum", "area above maximum",
           "reaches beyond max radius", "touches the crop border", "padding at the centre")


@dataclass(frozen=True)
class MaskResult:
    """A figure mask or why there is none.

    Attributes:
        mask: ``(C, C)`` uint8, 1 = figure, or None when rejected.
        reason: "" when accepted, else one of :data:`REASONS`.
        area: mask area (px) of the candidate (0 when no component was found).
        threshold: the hematoxylin threshold used (optical density units).
        candidate: ``(C, C)`` bool, the smoothed component(s) near the centre before the
            rejection rules (None when none was found); for contact sheets.
    """

    mask: np.ndarray | None
    reason: str
    area: int
    threshold: float
    candidate: np.ndarray | None = None

    @property
    def accepted(self) -> bool:
        return self.mask is not None


def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu
    return float(threshold_otsu(values))


def _near_centre(binary: np.ndarray, c: int, near_px: float) -> np.ndarray:
    """The 8-connected components of ``binary`` with a pixel within ``near_px`` of (c, c)."""
    lab, _ = ndi.label(binary, structure=np.ones((3, 3), bool))
    n = binary.shape[0]
    yy, xx = np.mgrid[0:n, 0:n]
    near = (xx - c) ** 2 + (yy - c) ** 2 <= near_px ** 2
    ids = np.unique(lab[near & binary])
    return np.isin(lab, ids[ids > 0])


def threshold(h: np.ndarray, valid: np.ndarray, c: int) -> float:
    """The hematoxylin threshold of a crop: ``max(otsu, LOCAL_FRACTION * centre p95)``."""
    centre = h[c - 8:c + 9, c - 8:c + 9]
    return max(_otsu(h[valid]), LOCAL_FRACTION * float(np.percentile(centre, 95)))


def smooth(mask: np.ndarray, c: int, near_px: float) -> np.ndarray:
    """Fill holes, open and close with the radius-1 px disc (a 3x3 cross), fill holes again and
    keep the components within ``near_px`` of (c, c): ``(C, C)`` bool."""
    disc = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)
    m = ndi.binary_fill_holes(mask)
    m = ndi.binary_opening(m, structure=disc)
    m = ndi.binary_closing(np.pad(m, 2), structure=disc)[2:-2, 2:-2]
    m = ndi.binary_fill_holes(m)
    return _near_centre(m, c, near_px)


def figure_mask(image: np.ndarray, near_px: float = NEAR_PX, pair_px: float = PAIR_PX,
                area_min: int = AREA_MIN_PX, area_max: int = AREA_MAX_PX,
                max_radius: float = MAX_RADIUS_PX) -> MaskResult:
    """The mask of the figure at the centre of ``image``, or why there is none.

    Args:
        image: ``(C, C, 3)`` uint8 RGB crop, the figure at ``(C // 2, C // 2)``, ~0.25 um/px.
        near_px, pair_px: how close (px) a component must come to the centre (first rule, and
            the fallback for a figure split in two around the centre).
        area_min, area_max: accepted mask area (px).
        max_radius: farthest accepted mask pixel from the centre (px).

    Returns:
        :class:`MaskResult`; ``mask`` ``(C, C)`` uint8 (1 = figure) when accepted. The rule is
        in the module docstring; it is deterministic.
    """
    n = image.shape[0]
    c = n // 2
    valid = valid_pixels(image)  # False on black slide padding
    if not valid[c - 8:c + 9, c - 8:c + 9].all():
        return MaskResult(None, "padding at the centre", 0, 0.0)
    h = smoothed_hematoxylin(image)
    thr = threshold(h, valid, c)
    dark = (h > thr) & valid
    cand = _near_centre(dark, c, near_px)
    if not cand.any():
        near_px = max(near_px, pair_px)
        cand = _near_centre(dark, c, near_px)
    if not cand.any():
        return MaskResult(None, "no dark component near the centre", 0, thr)
    m = smooth(cand, c, near_px)
    area = int(m.sum())
    if area == 0:
        return MaskResult(None, "no dark component near the centre", 0, thr)
    reason = _reject(m, c, area, area_min, area_max, max_radius)
    if reason:
        return MaskResult(None, reason, area, thr, m)
    return MaskResult(m.astype(np.uint8), "", area, thr, m)


def _reject(m: np.ndarray, c: int, area: int, area_min: int, area_max: int,
            max_radius: float) -> str:
    """The first rejection rule a candidate mask ``m`` (bool ``(C, C)``) breaks, or ""."""
    if area < area_min:
        return "area below minimum"
    if area > area_max:
        return "area above maximum"
    if m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any():
        return "touches the crop border"
    ys, xs = np.nonzero(m)
    if np.sqrt((xs - c) ** 2 + (ys - c) ** 2).max() > max_radius:
        return "reaches beyond max radius"
    return ""


#: a figure's accepted mask, trimmed to its bounding box: (x0, y0, ``(h, w)`` uint8 mask) in
#: crop pixels
TrimmedMask = tuple[int, int, np.ndarray]


def build_figure_masks(slides: list[str], by_slide: dict[str, list[Figure]],
                       crowded: set[int], read_crop: Callable[[Figure], np.ndarray]
                       ) -> tuple[dict[int, TrimmedMask], dict[int, str]]:
    """Apply :func:`figure_mask` to every figure of ``slides`` that is not crowded.

    Returns ``(accepted, rejected)``: figure index -> :data:`TrimmedMask`, and figure index ->
    the rejection reason (one of :data:`REASONS`). ``read_crop`` gives a figure's
    ``(C, C, 3)`` uint8 crop.
    """
    accepted: dict[int, TrimmedMask] = {}
    rejected: dict[int, str] = {}
    for slide in slides:
        for f in by_slide[slide]:
            if f.index in crowded:
                continue
            res = figure_mask(read_crop(f))
            if res.mask is None:
                rejected[f.index] = res.reason
                continue
            ys, xs = np.nonzero(res.mask)
            y0, x0 = int(ys.min()), int(xs.min())
            accepted[f.index] = (x0, y0, res.mask[y0:ys.max() + 1, x0:xs.max() + 1].copy())
    return accepted, rejected


def crop_mask(trimmed: TrimmedMask, crop: int) -> np.ndarray:
    """``(crop, crop)`` uint8 mask (1 = figure) of an accepted figure, in crop pixels."""
    x0, y0, m = trimmed
    out = np.zeros((crop, crop), np.uint8)
    out[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
    return out
