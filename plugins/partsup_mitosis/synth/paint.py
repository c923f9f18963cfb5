"""Painting of stain concentrations: the hematoxylin (H) and eosin (E) layers of a
:class:`Canvas`, textures, and the objects of an image (ordinary nuclei, cell bodies, mitotic
figures in four phases, mimics).

Sizes are in px (micrometres divided by ``mpp``); every function draws from the one
``numpy.random.Generator`` it is given, in a fixed order (the output is a pure function of it).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi


class Canvas:
    """Stain-concentration layers of one image: ``h`` and ``e`` ``(H, W)`` float32 >= 0."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        self.h = np.zeros(shape, np.float32)
        self.e = np.zeros(shape, np.float32)

    def window(self, cx: float, cy: float, half: int) -> tuple[slice, slice, np.ndarray,
                                                                  np.ndarray] | None:
        """Slices of the box of half-size ``half`` around (cx, cy), clipped, with local x, y."""
        h, w = self.shape
        x0, x1 = max(0, int(cx) - half), min(w, int(cx) + half + 1)
        y0, y1 = max(0, int(cy) - half), min(h, int(cy) + half + 1)
        if x0 >= x1 or y0 >= y1:
            return None
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        return slice(y0, y1), slice(x0, x1), xx - cx, yy - cy


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Zero-mean, unit-std noise with features of about ``scale_px`` (made at low resolution)."""
    f = max(1, int(scale_px / 2))
    small = (shape[0] // f + 3, shape[1] // f + 3)
    n = ndi.gaussian_filter(rng.standard_normal(small).astype(np.float32), 1.0)
    n = ndi.zoom(n, f, order=1)[: shape[0], : shape[1]]
    return (n - n.mean()) / (n.std() + 1e-6)


def fibres(rng: np.random.Generator, shape: tuple[int, int], mpp: float) -> np.ndarray:
    """Stroma texture: wavy bundles of collagen fibres, values in [0, 1]."""
    theta = rng.uniform(0, np.pi)
    warp = smooth_noise(rng, shape, 30 / mpp) * (6 / mpp)
    yy, xx = np.mgrid[0: shape[0], 0: shape[1]].astype(np.float32)
    u = xx * math.cos(theta) + yy * math.sin(theta) + warp
    period = rng.uniform(2.5, 4.0) / mpp
    phase = smooth_noise(rng, shape, 8 / mpp) * 2.5  # breaks fibres into bundles
    waves = 0.5 + 0.5 * np.sin(2 * np.pi * u / period + phase)
    gate = np.clip(0.5 + 0.5 * smooth_noise(rng, shape, 5 / mpp), 0, 1)
    return np.clip(waves ** 2 * gate + 0.15 * smooth_noise(rng, shape, 1.2 / mpp), 0, 1)


def _splat(acc: np.ndarray, x: np.ndarray, y: np.ndarray, w: float | np.ndarray = 1.0) -> None:
    """Bilinear splat of points (local px) into ``acc`` (in place)."""
    h, wd = acc.shape
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    ww = np.broadcast_to(np.asarray(w, np.float32), x.shape)
    for dx, dy, k in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                      (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < wd) & (yi >= 0) & (yi < h)
        np.add.at(acc, (yi[ok], xi[ok]), (ww * k)[ok])


def _strokes(rng: np.random.Generator, acc: np.ndarray, cx: np.ndarray, cy: np.ndarray,
             ang: np.ndarray, length: np.ndarray, curl: float = 0.0) -> None:
    """Draw straight or curling strokes (chromosome arms, chromatin threads) into ``acc``.

    ``cx, cy`` stroke centres and ``length`` in local px; ``ang`` radians; ``curl`` is the
    per-step turning noise (radians) for thread-like strokes.
    """
    n_steps = 12
    turn = np.cumsum(rng.normal(0, curl, (len(cx), n_steps)), 1) if curl else 0.0
    a = ang[:, None] + turn
    step = (length / n_steps)[:, None]
    dx = np.cumsum(np.cos(a) * step, 1)
    dy = np.cumsum(np.sin(a) * step, 1)
    dx -= dx[:, n_steps // 2: n_steps // 2 + 1]
    dy -= dy[:, n_steps // 2: n_steps // 2 + 1]
    _splat(acc, (cx[:, None] + dx).ravel(), (cy[:, None] + dy).ravel())


# -- objects ------------------------------------------------------------------------------------


def _ellipse_field(xx: np.ndarray, yy: np.ndarray, a: float, b: float, theta: float,
                   wobble: np.ndarray | None = None) -> np.ndarray:
    """Normalised elliptic radius (1 on the outline); ``wobble`` (k, 2) harmonic amplitudes."""
    c, s = math.cos(theta), math.sin(theta)
    u, v = xx * c + yy * s, -xx * s + yy * c
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    if wobble is not None:
        phi = np.arctan2(v, u)
        scale = 1.0 + sum(wobble[k, 0] * np.cos((k + 2) * phi + wobble[k, 1])
                          for k in range(len(wobble)))
        r = r / scale
    return r


def normal_nucleus(rng: np.random.Generator, cv: Canvas, cx: float, cy: float, mpp: float,
                    texture: np.ndarray, stroma: bool) -> None:
    """A pale vesicular (non-mitotic) nucleus: soft outline, darker rim, speckles, nucleolus."""
    if stroma:  # spindle fibroblast
        a, b = rng.uniform(4.0, 7.0) / mpp, rng.uniform(1.2, 2.0) / mpp
    else:
        a = rng.uniform(3.6, 6.0) / mpp
        b = a * rng.uniform(0.65, 1.0)
    win = cv.window(cx, cy, int(a + 4))
    if win is None:
        return
    sy, sx, xx, yy = win
    wob = np.stack([rng.normal(0, 0.05, 3), rng.uniform(0, 6.3, 3)], 1)
    r = _ellipse_field(xx, yy, a, b, rng.uniform(0, np.pi), wob)
    body = np.clip((1.0 - r) / 0.12 + 0.5, 0, 1)
    peak = rng.uniform(0.25, 0.62) * (1.25 if stroma else 1.0)
    tex = texture[sy, sx]
    conc = body * peak * (0.62 + 0.38 * np.clip(r, 0, 1) ** 3 + 0.22 * tex)
    if not stroma and rng.random() < 0.7:  # nucleolus
        ox, oy = rng.normal(0, 0.25 * b, 2)
        conc += 0.35 * peak * np.exp(-((xx - ox) ** 2 + (yy - oy) ** 2) / (2 * (0.5 / mpp) ** 2))
    cv.h[sy, sx] = np.maximum(cv.h[sy, sx], conc)
    cv.e[sy, sx] *= 1 - 0.5 * body


def cell_body(rng: np.random.Generator, cv: Canvas, cx: float, cy: float, radius: float,
          clear: float, pink: float = 0.0) -> None:
    """A round cell body around a figure or mimic: cleared (``clear``) or eosinophilic."""
    win = cv.window(cx, cy, int(radius * 1.3 + 3))
    if win is None:
        return
    sy, sx, xx, yy = win
    wob = np.stack([rng.normal(0, 0.06, 2), rng.uniform(0, 6.3, 2)], 1)
    r = _ellipse_field(xx, yy, radius, radius * rng.uniform(0.8, 1.0), rng.uniform(0, np.pi), wob)
    inside = np.clip((1.0 - r) / 0.15 + 0.5, 0, 1)
    cv.e[sy, sx] = cv.e[sy, sx] * (1 - clear * inside) + pink * inside
    cv.h[sy, sx] *= 1 - 0.9 * inside  # the cell body pushes neighbouring nuclei aside


def figure_patch(rng: np.random.Generator, phase: str, mpp: float) -> np.ndarray:
    """Chromatin density ``(S, S)`` float32 in [0, 1] of one mitotic figure, centred."""
    s = int(math.ceil(26 / mpp)) | 1
    acc = np.zeros((s, s), np.float32)
    c = s / 2.0
    um = 1.0 / mpp
    theta = rng.uniform(0, np.pi)
    ax, ay = math.cos(theta), math.sin(theta)  # plate axis
    nx, ny = -ay, ax  # spindle axis (normal to the plate)
    if phase == "prophase":  # condensed threads in a roundish nucleus, hairy outline
        n = int(rng.integers(45, 75))
        rad = rng.uniform(3.2, 4.6) * um
        rr = rad * np.sqrt(rng.uniform(0, 1, n))
        ph = rng.uniform(0, 2 * np.pi, n)
        _strokes(rng, acc, c + rr * np.cos(ph), c + rr * np.sin(ph), rng.uniform(0, 2 * np.pi, n),
                 rng.uniform(1.2, 2.8, n) * um, curl=0.35)
        k = int(rng.integers(4, 9))  # a few dense clumps
        rr, ph = rad * 0.7 * np.sqrt(rng.uniform(0, 1, k)), rng.uniform(0, 2 * np.pi, k)
        _splat(acc, c + rr * np.cos(ph), c + rr * np.sin(ph), 6.0)
    elif phase == "metaphase":  # a plate of chromosomes seen edge-on, arms sticking out
        n = int(rng.integers(40, 65))
        half = rng.uniform(3.0, 5.2) * um
        t = rng.uniform(-half, half, n)
        off = rng.normal(0, 0.45 * um, n)
        ang = math.atan2(ny, nx) + rng.normal(0, 0.55, n)
        _strokes(rng, acc, c + t * ax + off * nx, c + t * ay + off * ny, ang,
                 rng.uniform(1.4, 3.2, n) * um, curl=0.15)
    else:  # two daughter sets
        gap = (rng.uniform(2.0, 3.2) if phase == "anaphase" else rng.uniform(3.6, 5.2)) * um
        for side in (-1.0, 1.0):
            bx, by = c + side * gap * nx, c + side * gap * ny
            if phase == "anaphase":
                n = int(rng.integers(22, 36))
                half = rng.uniform(2.2, 4.0) * um
                t = rng.uniform(-half, half, n)
                bow = side * 0.6 * um * (t / half) ** 2  # plates bow towards the poles
                ang = math.atan2(ny, nx) + rng.normal(0, 0.5, n)
                _strokes(rng, acc, bx + t * ax + bow * nx, by + t * ay + bow * ny, ang,
                         rng.uniform(1.2, 2.6, n) * um, curl=0.2)
            else:  # telophase: compact, irregular clumps with threads
                n = int(rng.integers(22, 34))
                rad = rng.uniform(1.8, 2.8) * um
                rr, ph = rad * np.sqrt(rng.uniform(0, 1, n)), rng.uniform(0, 2 * np.pi, n)
                _strokes(rng, acc, bx + rr * np.cos(ph), by + rr * np.sin(ph),
                         rng.uniform(0, 2 * np.pi, n), rng.uniform(1.0, 2.4, n) * um, curl=0.4)
    acc = ndi.gaussian_filter(acc, 0.55 * um * 0.6 + 0.3)
    return 1.0 - np.exp(-acc / (acc.max() * 0.22 + 1e-6))


def paste_figure(cv: Canvas, patch: np.ndarray, cx: float, cy: float, darkness: float,
                  labels: np.ndarray, k: int) -> tuple[float, float] | None:
    """Paste a figure's chromatin into H; label its mask pixels ``k``; return its centroid."""
    s = patch.shape[0]
    half = s // 2
    x0, y0 = int(round(cx)) - half, int(round(cy)) - half
    h, w = cv.shape
    px0, py0 = max(0, -x0), max(0, -y0)
    px1, py1 = min(s, w - x0), min(s, h - y0)
    if px0 >= px1 or py0 >= py1:
        return None
    p = patch[py0:py1, px0:px1]
    sy, sx = slice(y0 + py0, y0 + py1), slice(x0 + px0, x0 + px1)
    cv.h[sy, sx] = np.maximum(cv.h[sy, sx], darkness * p)
    m = p > 0.45
    if m.sum() < 8:
        return None
    lab = labels[sy, sx]
    lab[m] = k
    ys, xs = np.nonzero(labels == k)
    return float(xs.mean()), float(ys.mean())


def mimic(rng: np.random.Generator, cv: Canvas, kind: str, cx: float, cy: float, mpp: float,
           darkness: float) -> None:
    """Paint a mimic: smooth, round, homogeneous and as dark as a mitotic figure."""
    um = 1.0 / mpp
    if kind == "lymphocyte":
        parts = [(0.0, 0.0, rng.uniform(2.4, 3.4) * um, rng.uniform(0.85, 1.0))]
        halo, clear, pink = parts[0][2] * 1.25, 0.3, 0.0
    elif kind == "apoptotic":
        k = int(rng.choice([1, 1, 2, 3]))
        base = rng.uniform(2.2, 3.4) * um / math.sqrt(k) * (1.2 if k > 1 else 1.0)
        parts = [(0.0, 0.0, base, 1.0)] + [
            (*(rng.normal(0, 1.0, 2) * base * 1.3), base * rng.uniform(0.6, 0.9), 1.0)
            for _ in range(k - 1)]
        halo, clear, pink = rng.uniform(4.5, 6.5) * um, 0.6, rng.uniform(0.0, 0.45)
    else:  # hyperchromatic round / oval nucleus
        parts = [(0.0, 0.0, rng.uniform(2.7, 4.0) * um, rng.uniform(0.7, 1.0))]
        halo, clear, pink = parts[0][2] * 1.4, rng.uniform(0.0, 0.5), 0.0
    if rng.random() < 0.6:
        cell_body(rng, cv, cx, cy, halo, clear, pink)
    for ox, oy, rad, aspect in parts:
        win = cv.window(cx + ox, cy + oy, int(rad + 4))
        if win is None:
            continue
        sy, sx, xx, yy = win
        wob = np.stack([rng.normal(0, 0.025, 2), rng.uniform(0, 6.3, 2)], 1)
        r = _ellipse_field(xx - ox, yy - oy, rad, rad * aspect, rng.uniform(0, np.pi), wob)
        body = np.clip((1.0 - r) / 0.10 + 0.5, 0, 1)
        shade = 1.0 - 0.12 * r ** 2 + 0.04 * rng.standard_normal()
        cv.h[sy, sx] = np.maximum(cv.h[sy, sx], darkness * body * shade)
