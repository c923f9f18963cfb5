"""Candidate filters: ``factory(**kw) -> fn(blobs, mpp) -> keep``.

``blobs`` is a :class:`partsup.types.Blobs` table (arrays of length K); ``mpp`` the image's
micrometres per pixel; ``keep`` a ``(K,)`` bool array. The detector always applies ``area``
(``min=a1``, ``unit=area_unit``) and ``score`` (``min=s1``) from the ``detect:`` section, then
the recipe's extra named filters, then the ``partsup_filter_candidates`` hook; a blob survives
only if every filter keeps it.
"""
from __future__ import annotations

from typing import Callable, Literal

import numpy as np

from partsup.types import Blobs

Filter = Callable[[Blobs, float], np.ndarray]


def area_in(blobs: Blobs, mpp: float, unit: str) -> np.ndarray:
    """Blob areas as float64 in ``unit``: ``"px"`` (pixels) or ``"um2"`` (square micrometres)."""
    area = np.asarray(blobs.area, np.float64)
    if unit == "um2":
        return area * float(mpp) ** 2
    if unit != "px":
        raise ValueError(f"area unit must be 'px' or 'um2', got {unit!r}")
    return area


def area(min: float = 0.0, max: float | None = None,
         unit: Literal["px", "um2"] = "px") -> Filter:
    """Keep blobs with ``area > min`` (and ``area <= max`` when given), area in px or um^2."""
    if unit not in ("px", "um2"):
        raise ValueError(f"area filter: unit must be 'px' or 'um2', got {unit!r}")

    def keep(blobs: Blobs, mpp: float) -> np.ndarray:
        a = area_in(blobs, mpp, unit)
        out = a > min
        if max is not None:
            out &= a <= max
        return out
    return keep


def score(min: float = 0.5, max: float | None = None) -> Filter:
    """Keep blobs whose mean probability is ``> min`` (and ``<= max`` when given)."""

    def keep(blobs: Blobs, mpp: float) -> np.ndarray:
        s = np.asarray(blobs.score, np.float64)
        out = s > min
        if max is not None:
            out &= s <= max
        return out
    return keep


FILTERS: dict[str, Callable[..., Filter]] = {"area": area, "score": score}
