"""The pixels of an ``ami-br`` field: the figure-free background quilt, then figures and decoys
pasted onto it as soft-edged discs or windows (``windows`` layout).

Canvases are ``(S, S, 3)`` float32 RGB (0-255), masks ``(S, S)`` uint8; coordinates are x =
column, y = row, px. A piece is cut around (sx, sy) of a (dihedrally transformed) donor crop
and pasted at (x, y) of the canvas.
"""
from __future__ import annotations

import math

import numpy as np

from partsup.plugin import DataError
from partsup_mitosis.amibr.donors import Donor
from partsup_mitosis.amibr.geometry import (DISC_EDGE, MAX_OFFSET, R_MIN, dihedral, dihedral_xy,
                                            disc_radius)
from partsup_mitosis.amibr.metadata import Figure

KEEP_CLEAR = 20  # px: a figure's window stops this short of another figure's centre
#: a window's half-extents (left, right, up, down) around its anchor, px
Extents = tuple[int, int, int, int]


def quilt(donors: list[Donor], rng: np.random.Generator, tile: int, feather: int, grid: int,
          name: str) -> np.ndarray:
    """Feather-blended ``grid x grid`` figure-free tiles (side ``tile``, overlap ``feather``):
    ``(S, S, 3)`` float32 with ``S = grid * (tile - feather)``."""
    t, f, n = tile, feather, grid
    step = tile - feather
    full = n * step + f
    acc = np.zeros((full, full, 3), np.float32)
    wsum = np.zeros((full, full, 1), np.float32)
    ramp = np.ones(t, np.float32)
    if f:
        r = (np.arange(f, dtype=np.float32) + 1) / (f + 1)
        ramp[:f], ramp[-f:] = r, r[::-1]
    weight = (ramp[:, None] * ramp[None, :])[..., None]
    usable = [d for d in donors if len(d.tiles)]
    if not usable:
        raise DataError(f"{name}: no figure-free {t}x{t} px window in the crops of "
                        f"this slide; use a smaller tile")
    for gy in range(n):
        for gx in range(n):
            d = usable[int(rng.integers(len(usable)))]
            x0, y0 = d.tiles[int(rng.integers(len(d.tiles)))]
            piece = dihedral(d.image[y0:y0 + t, x0:x0 + t], int(rng.integers(8)))
            ys, xs = gy * step, gx * step
            acc[ys:ys + t, xs:xs + t] += piece * weight
            wsum[ys:ys + t, xs:xs + t] += weight
    off = f // 2
    out = acc / np.maximum(wsum, 1e-6)
    size = grid * step
    return out[off:off + size, off:off + size]


def paste_disc(canvas: np.ndarray, image: np.ndarray, valid: np.ndarray,
               sx: float, sy: float, x: float, y: float, radius: float) -> None:
    """Alpha-paste the disc of ``radius`` around (sx, sy) of ``image`` at (x, y) of canvas."""
    r = int(math.ceil(radius)) + 1
    sx, sy, x, y = int(round(sx)), int(round(sy)), int(round(x)), int(round(y))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    alpha = np.clip((radius - np.sqrt(xx ** 2 + yy ** 2)) / DISC_EDGE, 0, 1)
    n = image.shape[0]
    ys, xs = np.clip(sy + yy, 0, n - 1), np.clip(sx + xx, 0, n - 1)
    inside = (sy + yy >= 0) & (sy + yy < n) & (sx + xx >= 0) & (sx + xx < n)
    alpha = (alpha * inside * valid[ys, xs]).astype(np.float32)[..., None]
    src = image[ys, xs].astype(np.float32)
    dst = canvas[y - r:y + r + 1, x - r:x + r + 1]
    dst *= 1 - alpha
    dst += alpha * src


def paste_mask(out: np.ndarray, mask: np.ndarray, valid: np.ndarray, sx: float, sy: float,
               x: float, y: float, radius: float) -> None:
    """OR the ``(C, C)`` uint8 ``mask`` into ``out`` ``(S, S)`` uint8 where the disc pasted
    by :func:`paste_disc` with the same arguments is at least half opaque."""
    r = int(math.ceil(radius)) + 1
    sx, sy, x, y = int(round(sx)), int(round(sy)), int(round(x)), int(round(y))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    n = mask.shape[0]
    ys, xs = np.clip(sy + yy, 0, n - 1), np.clip(sx + xx, 0, n - 1)
    inside = (sy + yy >= 0) & (sy + yy < n) & (sx + xx >= 0) & (sx + xx < n)
    opaque = (radius - np.sqrt(xx ** 2 + yy ** 2)) / DISC_EDGE >= 0.5
    keep = (mask[ys, xs] > 0) & inside & opaque & valid[ys, xs]
    dst = out[y - r:y + r + 1, x - r:x + r + 1]
    dst |= keep.astype(np.uint8)


def rect_alpha(ext: Extents) -> np.ndarray:
    """``(u + d + 1, l + r + 1)`` float32 opacity of a window with half-extents
    ``(l, r, u, d)`` px around its anchor: 1 inside, ramping to 0 over DISC_EDGE px."""
    l, r, u, d = ext
    xx, yy = np.arange(-l, r + 1, dtype=np.float32), np.arange(-u, d + 1, dtype=np.float32)
    ax = np.minimum(xx + l, r - xx) + 0.5
    ay = np.minimum(yy + u, d - yy) + 0.5
    return np.clip(np.minimum(ay[:, None], ax[None, :]) / DISC_EDGE, 0, 1)


def rect_window(canvas_shape: tuple[int, ...], image: np.ndarray, sx: int, sy: int, x: int,
                y: int, ext: Extents) -> tuple | None:
    """The canvas slice and image slice of a window, clipped to both; None if empty."""
    l, r, u, d = ext
    n = image.shape[0]
    x0, x1 = max(-l, -x, -sx), min(r, canvas_shape[1] - 1 - x, n - 1 - sx)
    y0, y1 = max(-u, -y, -sy), min(d, canvas_shape[0] - 1 - y, n - 1 - sy)
    if x1 < x0 or y1 < y0:
        return None
    dst = (slice(y + y0, y + y1 + 1), slice(x + x0, x + x1 + 1))
    src = (slice(sy + y0, sy + y1 + 1), slice(sx + x0, sx + x1 + 1))
    a = (slice(y0 + u, y1 + u + 1), slice(x0 + l, x1 + l + 1))
    return dst, src, a


def paste_rect(canvas: np.ndarray, image: np.ndarray, valid: np.ndarray, sx: float, sy: float,
               x: float, y: float, ext: Extents, mask_out: np.ndarray | None = None,
               mask: np.ndarray | None = None) -> None:
    """Alpha-paste the window ``ext`` = (left, right, up, down) px around (sx, sy) of
    ``image`` at (x, y) of ``canvas``; OR ``mask`` into ``mask_out`` where at least half
    opaque."""
    sx, sy, x, y = int(round(sx)), int(round(sy)), int(round(x)), int(round(y))
    win = rect_window(canvas.shape, image, sx, sy, x, y, ext)
    if win is None:
        return
    dst, src, a = win
    alpha = (rect_alpha(ext)[a] * valid[src]).astype(np.float32)
    canvas[dst] *= 1 - alpha[..., None]
    canvas[dst] += alpha[..., None] * image[src].astype(np.float32)
    if mask_out is not None and mask is not None:
        mask_out[dst] |= ((mask[src] > 0) & (alpha >= 0.5)).astype(np.uint8)


def figure_extents(f: Figure, fx: float, fy: float, n: int, x: float, y: float,
                   others: list[tuple[float, float]], seed: int) -> Extents:
    """Half-extents (l, r, u, d) of a figure's window: 20-64 px per side, inside the
    crop, and at least KEEP_CLEAR px short of every other figure's centre."""
    rng = np.random.default_rng([seed, 19, f.index])
    l, r, u, d = (int(v) for v in rng.integers(20, 65, size=4))
    l, r = min(l, int(fx)), min(r, n - 1 - int(fx))
    u, d = min(u, int(fy)), min(d, n - 1 - int(fy))
    for ox, oy in others:
        dx, dy = ox - x, oy - y
        if abs(dx) > max(l, r) + KEEP_CLEAR or abs(dy) > max(u, d) + KEEP_CLEAR:
            continue
        if abs(dx) >= abs(dy):
            if dx > 0:
                r = min(r, max(int(dx) - KEEP_CLEAR, 4))
            else:
                l = min(l, max(int(-dx) - KEEP_CLEAR, 4))
        elif dy > 0:
            d = min(d, max(int(dy) - KEEP_CLEAR, 4))
        else:
            u = min(u, max(int(-dy) - KEEP_CLEAR, 4))
    return l, r, u, d


def paste_figure(canvas: np.ndarray, donor: Donor, f: Figure, x: float, y: float, seed: int,
                 mask: np.ndarray | None = None, crop_mask: np.ndarray | None = None,
                 others: list[tuple[float, float]] | None = None) -> None:
    """Paste figure ``f`` (its crop: ``donor``) centred on (x, y): a disc, or (``others`` given:
    the centres of the field's other figures) a window of its crop that keeps clear of them.
    With ``mask`` (the field's) and ``crop_mask`` (the figure's ``(C, C)`` uint8 mask), OR the
    figure's mask where the piece is at least half opaque."""
    rng = np.random.default_rng([seed, 18, f.index])  # the disc's own look
    k = int(rng.integers(8))
    radius = disc_radius(donor.radius, rng)
    ox, oy = rng.integers(-MAX_OFFSET, MAX_OFFSET + 1, size=2)
    n = donor.image.shape[0]
    c = n // 2
    fx, fy = dihedral_xy(c, c, n, k)
    image, valid = dihedral(donor.image, k), dihedral(donor.valid, k)
    if others is not None:
        ext = figure_extents(f, fx, fy, n, x, y, others, seed)
        turned = dihedral(crop_mask, k) if mask is not None and crop_mask is not None else None
        paste_rect(canvas, image, valid, fx, fy, x, y, ext, mask, turned)
        return
    # the disc's centre is (ox, oy) from the figure; the figure lands on (x, y)
    paste_disc(canvas, image, valid, fx + ox, fy + oy, x + ox, y + oy, radius)
    if mask is not None and crop_mask is not None:
        paste_mask(mask, dihedral(crop_mask, k), valid, fx + ox, fy + oy, x + ox, y + oy, radius)


def paste_decoy(canvas: np.ndarray, donors: list[Donor], rng: np.random.Generator,
                fig_radii: list[float], x: float, y: float, rect: bool = False) -> None:
    """Paste a decoy centred on (x, y): a figure-free disc (or, ``rect``, a small window) of a
    random donor, around one of its darkest spots, as large as a figure's disc would be."""
    radius = disc_radius(fig_radii[int(rng.integers(len(fig_radii)))], rng)
    while True:
        cands = [d for d in donors if len(d.spots) and d.spots[0, 2] >= radius]
        if cands or radius <= R_MIN:
            break
        radius -= 1.0
    if not cands:
        return
    d = cands[int(rng.integers(len(cands)))]
    ok = d.spots[d.spots[:, 2] >= radius]
    j = int(rng.integers(max(1, int(math.ceil(len(ok) * 0.25)))))  # a dark spot
    sx, sy = ok[j, 0], ok[j, 1]
    k = int(rng.integers(8))
    n = d.image.shape[0]
    tx, ty = dihedral_xy(sx, sy, n, k)
    if rect:  # a window inside the figure-free disc of ``radius``: sides <= radius / sqrt 2
        half = max(int(radius / math.sqrt(2.0)), 8)
        ext = tuple(int(v) for v in rng.integers(max(half - 6, 8), half + 1, size=4))
        paste_rect(canvas, dihedral(d.image, k), dihedral(d.valid, k), tx, ty, x, y,
                   ext)  # type: ignore[arg-type]
        return
    paste_disc(canvas, dihedral(d.image, k), dihedral(d.valid, k), tx, ty, x, y, radius)
