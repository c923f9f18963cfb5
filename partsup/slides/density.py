"""Generic counts over space: a density map of points and the square window holding the most
of them. Units: pixels of level 0 (x = column, y = row)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """A square box ``[x, x + size) x [y, y + size)`` (px) holding ``count`` points."""

    x: float
    y: float
    size: float
    count: int


def density_map(xy: np.ndarray, width: int, height: int, cell: float) -> np.ndarray:
    """``(ceil(height / cell), ceil(width / cell))`` int64 counts of the points ``xy`` (N, 2)
    in square cells of ``cell`` px."""
    ny, nx = max(1, math.ceil(height / cell)), max(1, math.ceil(width / cell))
    grid = np.zeros((ny, nx), np.int64)
    if len(xy):
        xy = np.asarray(xy, np.float64)
        cx = np.clip((xy[:, 0] // cell).astype(np.int64), 0, nx - 1)
        cy = np.clip((xy[:, 1] // cell).astype(np.int64), 0, ny - 1)
        np.add.at(grid, (cy, cx), 1)
    return grid


def count_in(xy: np.ndarray, x: float, y: float, size: float) -> int:
    """Number of points inside ``[x, x + size) x [y, y + size)``."""
    if not len(xy):
        return 0
    xy = np.asarray(xy, np.float64)
    return int(np.count_nonzero((xy[:, 0] >= x) & (xy[:, 0] < x + size)
                                & (xy[:, 1] >= y) & (xy[:, 1] < y + size)))


def best_window(xy: np.ndarray, width: int, height: int, size: float, steps: int = 8
                ) -> Window:
    """The square window of side ``size`` px inside the image (or the whole image when smaller)
    holding the most points, searched on a grid of ``size / steps`` px; ties go to the
    top-most, then left-most window. Counts are exact for the returned box."""
    size = float(size)
    step = max(size / steps, 1.0)
    grid = density_map(xy, width, height, step)
    k = max(1, min(int(round(size / step)), *grid.shape))
    csum = np.zeros((grid.shape[0] + 1, grid.shape[1] + 1), np.int64)
    csum[1:, 1:] = grid.cumsum(0).cumsum(1)
    sums = csum[k:, k:] - csum[:-k, k:] - csum[k:, :-k] + csum[:-k, :-k]
    iy, ix = np.unravel_index(int(np.argmax(sums)), sums.shape)
    x = min(ix * step, max(0.0, width - size))
    y = min(iy * step, max(0.0, height - size))
    return Window(x, y, size, count_in(xy, x, y, size))
