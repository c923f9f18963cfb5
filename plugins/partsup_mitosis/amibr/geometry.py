"""The shapes the ``ami-br`` reader cuts its pieces in (px): disc radii and their soft edge, the
figure's offset from its disc centre, the 8 dihedral transforms of a square crop, and the check
that a field is large enough for a disc."""
from __future__ import annotations

import numpy as np

from partsup.plugin import DataError

#: disc radius range, soft-edge width and largest offset of a figure from its disc centre (px)
R_MIN, R_MAX, DISC_EDGE, MAX_OFFSET = 18, 30, 4.0, 3


def dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 dihedral transforms of an ``(N, N, ...)`` array: ``k`` in 0..7."""
    a = np.rot90(a, k % 4)
    return a[:, ::-1] if k >= 4 else a


def dihedral_xy(x: float, y: float, n: int, k: int) -> tuple[float, float]:
    """Where pixel (x, y) of an N x N array goes under :func:`dihedral` ``k``."""
    for _ in range(k % 4):  # np.rot90: new[r, c] = old[c, n - 1 - r]
        x, y = y, n - 1 - x
    if k >= 4:
        x = n - 1 - x
    return x, y


def disc_radius(fig_radius: float, rng: np.random.Generator) -> float:
    """A disc radius (px) for a figure of radius ``fig_radius`` px: 5-10 px more, clipped to
    ``[R_MIN, R_MAX]`` (one draw from ``rng``)."""
    return float(np.clip(fig_radius + rng.uniform(5, 10), R_MIN, R_MAX))


def check_geometry(name: str, crop: int, tile: int, grid: int, feather: int, density: float,
                   decoys: float) -> None:
    """DataError (one line naming ``name``) unless the field geometry can hold a figure disc."""
    if not 96 <= crop <= 128:
        raise DataError(f"{name}: crop={crop} must be in [96, 128] px (the crops "
                        f"are 128 px; discs need up to {R_MAX + MAX_OFFSET} px around "
                        f"the figure)")
    if not (16 <= tile <= crop // 2 and 0 <= feather < tile // 2):
        raise DataError(f"{name}: tile={tile} must be in [16, crop/2] and "
                        f"feather={feather} in [0, tile/2)")
    if grid < 2 or density < 0 or decoys < 0:
        raise DataError(f"{name}: grid must be >= 2, density and decoys >= 0")
    if grid * (tile - feather) < 2 * (R_MAX + MAX_OFFSET) + 2:
        raise DataError(f"{name}: field {grid}x({tile}-{feather}) px is too small "
                        f"for a figure disc")
