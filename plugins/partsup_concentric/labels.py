"""Weak labels made from points: concentric (SegMitos) and disk.

Every maker is called ``maker(points, shape, rng, mpp) -> (H, W) uint8`` with points ``(N, 2)``
float x (column), y (row) in pixels; the map holds 0 background, 1 object, 255 ignore
(:data:`partsup.types.IGNORE_INDEX`). Radii are in pixels at ``reference_mpp`` micrometres per
pixel when that is set (then scaled by ``reference_mpp / mpp`` for an image of ``mpp``), else in
pixels of the image as given. Disks are inclusive: a pixel centre at distance d from the point is
inside radius r when ``d**2 <= r**2``.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

from partsup.plugin import IGNORE_INDEX, RecipeError, scalar_or_pair

Overlap = Literal["sequential", "positive_wins"]
OutOfImage = Literal["clamp", "drop", "keep"]
_OVERLAPS = ("sequential", "positive_wins")
_OUT = ("clamp", "drop", "keep")


def _range(value: float | Sequence[float], key: str, integer: bool) -> tuple[float, float]:
    """A fixed value or ``[low, high]`` -> (low, high), validated."""
    lo, hi = scalar_or_pair(value, f"labels.weak.{key}", float, "a number or [low, high]")
    if integer and (lo != int(lo) or hi != int(hi)):
        raise RecipeError(f"labels.weak.{key}: expected integers, got {value!r}")
    if not (0 < lo <= hi):
        raise RecipeError(f"labels.weak.{key}: expected 0 < low <= high, got {value!r}")
    return lo, hi


def _choice(value: str, allowed: tuple[str, ...], key: str) -> str:
    if value not in allowed:
        raise RecipeError(f"labels.weak.{key}: expected one of {', '.join(allowed)}, got {value!r}")
    return value


def place_points(points: np.ndarray, shape: tuple[int, int], policy: str) -> np.ndarray:
    """Apply the out-of-image policy to ``(N, 2)`` x, y points for an ``(H, W)`` map.

    ``clamp`` moves a point outside ``[0, W-1] x [0, H-1]`` to the nearest border pixel (the
    original SegMitos behaviour); ``drop`` removes it; ``keep`` leaves it, so only the part of its
    disk that falls inside the map is painted (right for crops of a larger image).
    """
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    h, w = shape
    if policy == "clamp":
        return np.stack([np.clip(pts[:, 0], 0, w - 1), np.clip(pts[:, 1], 0, h - 1)], axis=1)
    if policy == "drop":
        inside = (pts[:, 0] >= 0) & (pts[:, 0] <= w - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= h - 1)
        return pts[inside]
    return pts


def _window(x: float, y: float, radius: float, shape: tuple[int, int]):
    """Slices and squared distances of the pixels within ``radius`` of (x, y), or None."""
    h, w = shape
    x0, x1 = max(int(np.floor(x - radius)), 0), min(int(np.ceil(x + radius)) + 1, w)
    y0, y1 = max(int(np.floor(y - radius)), 0), min(int(np.ceil(y + radius)) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return None
    yy, xx = np.ogrid[y0:y1, x0:x1]
    d2 = (xx - x) ** 2 + (yy - y) ** 2
    return (slice(y0, y1), slice(x0, x1)), d2


def paint_concentric(points: np.ndarray, radii: np.ndarray, shape: tuple[int, int],
                     overlap: str = "sequential") -> np.ndarray:
    """Render concentric labels with per-point radii ``(N, 2)`` = (r, R) in pixels.

    ``sequential``: points painted in order, each first its ignore disk (d <= R -> 255) then its
    positive disk (d <= r -> 1), so a later annulus can turn an earlier disk into ignore.
    ``positive_wins``: positives = union of the inner disks; ignore = union of the outer disks
    minus the positives; background elsewhere.
    """
    out = np.zeros(shape, np.uint8)
    if overlap == "positive_wins":
        pos = np.zeros(shape, bool)
    for (x, y), (r, big_r) in zip(points, radii):
        win = _window(x, y, max(r, big_r), shape)
        if win is None:
            continue
        sl, d2 = win
        view = out[sl]
        if overlap == "sequential":
            view[d2 <= big_r ** 2] = IGNORE_INDEX
            view[d2 <= r ** 2] = 1
        else:
            view[d2 <= big_r ** 2] = IGNORE_INDEX
            pos[sl] |= d2 <= r ** 2
    if overlap == "positive_wins":
        out[pos] = 1
    return out


class ConcentricLabels:
    """Concentric labels (SegMitos): disk r positive, annulus r < d <= R ignored, rest negative.

    Radii are drawn afresh for every point on every call: ``r`` uniformly among the integers
    ``[r_low, r_high]`` and ``R = round(alpha * r)`` with ``alpha ~ Uniform(R_scale)``; or ``R``
    fixed when given. ``reach(mpp)`` is the largest outer radius in pixels (how far a point
    outside a crop can paint into it).
    """

    def __init__(self, r: int | Sequence[int] = (10, 17), R_scale: float | Sequence[float] = (1.5, 2.5),
                 R: float | None = None, reference_mpp: float | None = None,
                 overlap: Overlap = "sequential", out_of_image: OutOfImage = "clamp") -> None:
        self.r = _range(r, "r", integer=True)
        self.R_scale = _range(R_scale, "R_scale", integer=False)
        self.R = None if R is None else float(R)
        if self.R is not None and self.R < self.r[1]:
            raise RecipeError(f"labels.weak.R: outer radius {R} is smaller than r {r}")
        if reference_mpp is not None and reference_mpp <= 0:
            raise RecipeError(f"labels.weak.reference_mpp: expected > 0, got {reference_mpp}")
        self.reference_mpp = reference_mpp
        self.overlap = _choice(overlap, _OVERLAPS, "overlap")
        self.out_of_image = _choice(out_of_image, _OUT, "out_of_image")

    def scale(self, mpp: float) -> float:
        """Pixel scale factor for an image of ``mpp`` micrometres per pixel."""
        return 1.0 if self.reference_mpp is None or not mpp else self.reference_mpp / mpp

    def reach(self, mpp: float) -> float:
        big = self.R if self.R is not None else np.floor(self.R_scale[1] * self.r[1] + 0.5)
        return float(big) * self.scale(mpp)

    def draw_radii(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, 2)`` float64 (r, R) in reference pixels: r integer, R = round(alpha * r)."""
        r = rng.integers(int(self.r[0]), int(self.r[1]) + 1, size=n).astype(np.float64)
        if self.R is not None:
            big = np.full(n, self.R)
        else:
            alpha = rng.uniform(self.R_scale[0], self.R_scale[1], size=n)
            big = np.floor(alpha * r + 0.5)  # round half up, not banker's rounding
        return np.stack([r, big], axis=1)

    def __call__(self, points: np.ndarray, shape: tuple[int, int], rng: np.random.Generator,
                 mpp: float = 0.25) -> np.ndarray:
        """``(H, W)`` uint8 label map (0 / 1 / 255) for ``(N, 2)`` x, y points."""
        pts = place_points(points, shape, self.out_of_image)
        radii = self.draw_radii(len(pts), rng) * self.scale(mpp)
        return paint_concentric(pts, radii, shape, self.overlap)


class DiskLabels:
    """Disk labels: a fixed-radius positive disk per point, an optional ignore ring around it.

    ``radius`` px (at ``reference_mpp`` if set); ``ignore_ring`` px wide annulus outside the disk
    is ignored (0 = none); ``jitter`` px: the radius is drawn uniformly from
    ``[radius - jitter, radius + jitter]`` per point and call. Overlaps: positive wins.
    """

    def __init__(self, radius: float = 12.0, ignore_ring: float = 0.0, jitter: float = 0.0,
                 reference_mpp: float | None = None, out_of_image: OutOfImage = "clamp") -> None:
        if radius <= 0 or ignore_ring < 0 or not (0 <= jitter < radius):
            raise RecipeError(f"labels.weak: disk needs radius > 0, ignore_ring >= 0 and "
                              f"0 <= jitter < radius (got {radius}, {ignore_ring}, {jitter})")
        self.radius, self.ignore_ring, self.jitter = float(radius), float(ignore_ring), float(jitter)
        self.reference_mpp = reference_mpp
        self.out_of_image = _choice(out_of_image, _OUT, "out_of_image")

    def scale(self, mpp: float) -> float:
        return 1.0 if self.reference_mpp is None or not mpp else self.reference_mpp / mpp

    def reach(self, mpp: float) -> float:
        return (self.radius + self.jitter + self.ignore_ring) * self.scale(mpp)

    def __call__(self, points: np.ndarray, shape: tuple[int, int], rng: np.random.Generator,
                 mpp: float = 0.25) -> np.ndarray:
        pts = place_points(points, shape, self.out_of_image)
        r = self.radius + rng.uniform(-self.jitter, self.jitter, size=len(pts)) if self.jitter \
            else np.full(len(pts), self.radius)
        radii = np.stack([r, r + self.ignore_ring], axis=1) * self.scale(mpp)
        return paint_concentric(pts, radii, shape, "positive_wins")


def concentric(r: int | list[int] = (10, 17), R_scale: float | list[float] = (1.5, 2.5),
               R: float | None = None, reference_mpp: float | None = None,
               overlap: Overlap = "sequential", out_of_image: OutOfImage = "clamp") -> ConcentricLabels:
    """Concentric labels (SegMitos): r in [10, 17] px, R = round(U(1.5, 2.5) r), annulus ignored."""
    return ConcentricLabels(r, R_scale, R, reference_mpp, overlap, out_of_image)


def disk(radius: float = 12.0, ignore_ring: float = 0.0, jitter: float = 0.0,
         reference_mpp: float | None = None, out_of_image: OutOfImage = "clamp") -> DiskLabels:
    """Fixed-radius disk per point, optional ignore ring and radius jitter."""
    return DiskLabels(radius, ignore_ring, jitter, reference_mpp, out_of_image)


LABEL_MAKERS = {"concentric": concentric, "disk": disk}
