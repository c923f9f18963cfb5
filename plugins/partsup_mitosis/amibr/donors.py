"""Donors: decoded AMi-Br crops and what the ``ami-br`` reader may cut from each (figure-free
background tiles, decoy-disc centres), kept for the most recently used slides."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage as ndi

from partsup_mitosis.amibr.geometry import R_MAX, R_MIN
from partsup_mitosis.amibr.measure import figure_radius, smoothed_hematoxylin, valid_pixels
from partsup_mitosis.amibr.metadata import Figure

KEEP_OUT_MIN = 22.0  # px: no tile or decoy comes closer than this (+4) to a crop's figure
GLASS_MAX = 0.3  # tiles with more than this share of bright glass pixels are not used


@dataclass
class Donor:
    """One decoded crop and what may be cut from it.

    Attributes:
        image: ``(C, C, 3)`` uint8 crop (figure at ``(c, c)``, ``c = C // 2``).
        valid: ``(C, C)`` bool, False on black slide-border padding.
        radius: the centred figure's radius (px), from its hematoxylin blob.
        tiles: ``(T, 2)`` int top-left (x0, y0) of figure-free ``tile`` windows.
        spots: ``(S, 3)`` float (x, y, room): candidate decoy-disc centres and the largest disc
            radius that stays figure-free and inside the crop there; sorted darkest first.
    """

    image: np.ndarray
    valid: np.ndarray
    radius: float
    tiles: np.ndarray
    spots: np.ndarray


def make_donor(image: np.ndarray, f: Figure, figs: list[Figure], tile: int) -> Donor:
    """The donor of figure ``f``'s ``(C, C, 3)`` uint8 crop ``image``; ``figs`` are the slide's
    annotated figures (those falling into the crop are kept out of tiles and decoys too)."""
    c = image.shape[0] // 2
    valid = valid_pixels(image)
    h = smoothed_hematoxylin(image)
    radius = figure_radius(h, c)
    keep_out = [(c, c, max(radius, KEEP_OUT_MIN) + 4.0)]  # generous: blobs underestimate
    for g in figs:  # other annotated figures that fall into this crop
        dx, dy = g.x - f.x, g.y - f.y
        if g is not f and abs(dx) < c + R_MAX and abs(dy) < c + R_MAX:
            keep_out.append((c + dx, c + dy, 28.0))
    glass = image.min(-1) > 200
    return Donor(image, valid, radius, tile_spots(valid, glass, keep_out, tile),
                 decoy_spots(h, valid, keep_out))


def tile_spots(valid: np.ndarray, glass: np.ndarray, keep_out: list[tuple[float, float, float]],
               tile: int) -> np.ndarray:
    """``(T, 2)`` int top-left (x0, y0), on a 2 px grid, of the ``tile`` px windows that avoid
    every ``keep_out`` disc (cx, cy, r), padding, and hold at most GLASS_MAX glass."""
    n, t = valid.shape[0], tile
    g = np.arange(0, n - t + 1, 2)
    x0, y0 = [a.ravel() for a in np.meshgrid(g, g)]
    ok = np.ones(len(x0), bool)
    for cx, cy, r in keep_out:  # distance from the disc centre to the window rectangle
        dx = np.maximum(np.maximum(x0 - cx, 0), cx - (x0 + t - 1))
        dy = np.maximum(np.maximum(y0 - cy, 0), cy - (y0 + t - 1))
        ok &= dx ** 2 + dy ** 2 > r ** 2
    bad = ndi.uniform_filter((~valid).astype(np.float32), t, origin=-(t // 2)) > 0
    glass = ndi.uniform_filter(glass.astype(np.float32), t, origin=-(t // 2)) > GLASS_MAX
    ok &= ~bad[y0, x0] & ~glass[y0, x0]
    return np.stack([x0[ok], y0[ok]], 1)


def decoy_spots(h: np.ndarray, valid: np.ndarray,
                keep_out: list[tuple[float, float, float]]) -> np.ndarray:
    """``(S, 3)`` float (x, y, room) of the decoy-disc centres (2 px grid) with room for a disc of
    at least R_MIN px clear of every ``keep_out`` disc; sorted darkest (in ``h``) first."""
    n = valid.shape[0]
    g = np.arange(R_MIN, n - R_MIN, 2)
    sx, sy = [a.ravel().astype(np.float32) for a in np.meshgrid(g, g)]
    room = np.minimum.reduce([sx, sy, n - 1 - sx, n - 1 - sy])
    for cx, cy, r in keep_out:
        room = np.minimum(room, np.sqrt((sx - cx) ** 2 + (sy - cy) ** 2) - r)
    room = np.minimum(room, R_MAX)
    ok = (room >= R_MIN) & valid[sy.astype(int), sx.astype(int)]
    spots = np.stack([sx[ok], sy[ok], np.floor(room[ok])], 1)
    dark = h[spots[:, 1].astype(int), spots[:, 0].astype(int)] if len(spots) else spots[:, 0]
    return spots[np.argsort(-dark, kind="stable")]


class DonorCache:
    """The donors of the last ``capacity`` slides used (the least recently used is dropped).
    Pickles empty (DataLoader workers rebuild it lazily)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._slides: OrderedDict[str, list[Donor]] = OrderedDict()

    def get(self, slide: str, make: Callable[[], list[Donor]]) -> list[Donor]:
        """The donors of ``slide``, made by ``make()`` unless cached."""
        if slide in self._slides:
            self._slides.move_to_end(slide)
            return self._slides[slide]
        donors = make()
        self._slides[slide] = donors
        while len(self._slides) > self.capacity:
            self._slides.popitem(last=False)
        return donors

    def __getstate__(self) -> dict:
        return {"capacity": self.capacity, "_slides": OrderedDict()}
