"""Synthetic H&E high-power fields with mitotic figures, written in the real datasets' layouts.

The generator paints stain *concentrations* (hematoxylin H, eosin E) and turns them into RGB by
Beer-Lambert mixing: ``OD = H * h + E * e + od_background``, ``RGB = 255 * exp(-OD)``, where
``h`` and ``e`` are the stains' optical-density vectors of the chosen style (scanner / centre).

An image holds tissue (stroma with fibres, cellular nests, some lumen), pale vesicular nuclei,
**mitotic figures** in four phases (clumped prophase, metaphase plate, anaphase pair, telophase
pair) and **mimics** as dark and as large as the figures (lymphocytes, apoptotic bodies,
hyperchromatic round nuclei). Figures differ from mimics by texture and outline (threaded,
hairy, clumped chromatin; plates; pairs) while mimics are smooth and round, so a hematoxylin
threshold with a size window cannot tell them apart but a small CNN can.

Sizes are drawn in micrometres and converted with the style's um/px (``mpp``), so styles differ
in stain and scale. Everything is driven by one ``numpy.random.Generator``: output is a pure
function of ``seed``.

Public API: :data:`STYLES`, :func:`render` (one image in memory), :func:`generate` (a dataset
on disk that the registered readers load). ``partsup synth`` is the command-line front end.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage as ndi

from partsup.errors import DataError

# -- styles -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Style:
    """One dataset look: scale, stain and default image size.

    Attributes:
        name: dataset style (``icpr2012``, ``icpr2014``, ``amida13``, ``midog``).
        mpp: micrometres per pixel of the written images.
        h_od: hematoxylin optical-density vector (R, G, B), unit length.
        e_od: eosin optical-density vector (R, G, B), unit length.
        background_od: optical density of the glass/background (R, G, B).
        e_gain: scales eosin concentration (paler / stronger counterstain).
        h_gain: scales hematoxylin concentration.
        size: default ``(H, W)`` in px.
    """

    name: str
    mpp: float
    h_od: tuple[float, float, float]
    e_od: tuple[float, float, float]
    background_od: tuple[float, float, float]
    e_gain: float
    h_gain: float
    size: tuple[int, int]


def _unit(v: tuple[float, float, float]) -> tuple[float, float, float]:
    n = math.sqrt(sum(x * x for x in v))
    return (v[0] / n, v[1] / n, v[2] / n)


STYLES: dict[str, Style] = {
    # Aperio XT, 0.2456 um/px; pink-purple.
    "icpr2012": Style("icpr2012", 0.2456, _unit((0.62, 0.74, 0.27)), _unit((0.09, 0.96, 0.27)),
                      (0.03, 0.05, 0.03), 0.95, 1.0, (512, 512)),
    # Aperio frames of MITOS-ATYPIA-14, 0.2455 um/px; bluer hematoxylin, weaker eosin.
    "icpr2014": Style("icpr2014", 0.2455, _unit((0.55, 0.77, 0.33)), _unit((0.16, 0.93, 0.33)),
                      (0.05, 0.07, 0.04), 0.75, 1.1, (456, 512)),
    # AMIDA13 / TUPAC16 auxiliary, 0.25 um/px; strong eosin, redder.
    "amida13": Style("amida13", 0.25, _unit((0.68, 0.69, 0.24)), _unit((0.05, 0.99, 0.16)),
                     (0.02, 0.04, 0.03), 1.2, 0.9, (512, 512)),
    # MIDOG (several scanners), 0.25 um/px; stain jittered more per image.
    "midog": Style("midog", 0.25, _unit((0.64, 0.72, 0.28)), _unit((0.08, 0.97, 0.20)),
                   (0.04, 0.05, 0.04), 1.0, 1.0, (480, 640)),
}

PHASES = ("prophase", "metaphase", "anaphase", "telophase")
MIMICS = ("lymphocyte", "apoptotic", "dark_nucleus")


@dataclass
class SynthImage:
    """One rendered image and its ground truth.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        points: ``(N, 2)`` float32 mitosis centroids x, y (px) = mean of each figure's mask pixels.
        labels: ``(H, W)`` int32, ``k + 1`` on the pixels of figure ``k``, 0 elsewhere.
        phases: the phase of each figure (one of :data:`PHASES`).
        mimics: ``(M, 2)`` float32 x, y of the mimics (hard negatives), px.
        mimic_kinds: the kind of each mimic (one of :data:`MIMICS`).
        mpp: micrometres per pixel.
    """

    image: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    phases: list[str]
    mimics: np.ndarray
    mimic_kinds: list[str]
    mpp: float

    def masks(self) -> list[np.ndarray]:
        """Per figure, ``(P, 2)`` int64 x, y of its mask pixels (the ICPR 2012 format)."""
        out = []
        for k in range(len(self.points)):
            ys, xs = np.nonzero(self.labels == k + 1)
            out.append(np.stack([xs, ys], 1).astype(np.int64))
        return out


# -- low-level painting -----------------------------------------------------------------------


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


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Zero-mean, unit-std noise with features of about ``scale_px`` (made at low resolution)."""
    f = max(1, int(scale_px / 2))
    small = (shape[0] // f + 3, shape[1] // f + 3)
    n = ndi.gaussian_filter(rng.standard_normal(small).astype(np.float32), 1.0)
    n = ndi.zoom(n, f, order=1)[: shape[0], : shape[1]]
    return (n - n.mean()) / (n.std() + 1e-6)


def _fibres(rng: np.random.Generator, shape: tuple[int, int], mpp: float) -> np.ndarray:
    """Stroma texture: wavy bundles of collagen fibres, values in [0, 1]."""
    theta = rng.uniform(0, np.pi)
    warp = _smooth_noise(rng, shape, 30 / mpp) * (6 / mpp)
    yy, xx = np.mgrid[0: shape[0], 0: shape[1]].astype(np.float32)
    u = xx * math.cos(theta) + yy * math.sin(theta) + warp
    period = rng.uniform(2.5, 4.0) / mpp
    phase = _smooth_noise(rng, shape, 8 / mpp) * 2.5  # breaks fibres into bundles
    waves = 0.5 + 0.5 * np.sin(2 * np.pi * u / period + phase)
    gate = np.clip(0.5 + 0.5 * _smooth_noise(rng, shape, 5 / mpp), 0, 1)
    return np.clip(waves ** 2 * gate + 0.15 * _smooth_noise(rng, shape, 1.2 / mpp), 0, 1)


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


def _normal_nucleus(rng: np.random.Generator, cv: Canvas, cx: float, cy: float, mpp: float,
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


def _halo(rng: np.random.Generator, cv: Canvas, cx: float, cy: float, radius: float,
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


def _figure_patch(rng: np.random.Generator, phase: str, mpp: float) -> np.ndarray:
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


def _paste_figure(cv: Canvas, patch: np.ndarray, cx: float, cy: float, darkness: float,
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


def _mimic(rng: np.random.Generator, cv: Canvas, kind: str, cx: float, cy: float, mpp: float,
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
        _halo(rng, cv, cx, cy, halo, clear, pink)
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


# -- whole image --------------------------------------------------------------------------------


def _tissue(rng: np.random.Generator, cv: Canvas, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """Fill E (and faint H) with stroma, cellular nests and lumen; return (nest, lumen) masks."""
    shape = cv.shape
    nest_field = _smooth_noise(rng, shape, 35 / mpp) + rng.uniform(-0.3, 0.6)
    nest = nest_field > 0
    lumen = _smooth_noise(rng, shape, 25 / mpp) > rng.uniform(1.5, 2.4)
    fib = _fibres(rng, shape, mpp)
    fine = _smooth_noise(rng, shape, 1.5 / mpp)
    stroma_e = 0.45 + 0.45 * fib
    cyto_e = 0.30 + 0.06 * fine
    wn = np.clip(nest_field / 0.4 + 0.5, 0, 1)  # soft nest boundary
    cv.e[:] = stroma_e * (1 - wn) + cyto_e * wn
    cv.e *= np.clip(1 + 0.12 * _smooth_noise(rng, shape, 10 / mpp), 0.5, 1.5)
    lum_soft = ndi.gaussian_filter(lumen.astype(np.float32), 1.5)
    cv.e *= 1 - 0.92 * lum_soft
    cv.h[:] = np.clip(0.04 + 0.02 * fine, 0, None) * (1 - lum_soft)
    return nest, lumen


def _jittered_points(rng: np.random.Generator, shape: tuple[int, int], spacing: float,
                     keep: np.ndarray) -> np.ndarray:
    """Points on a jittered grid of ``spacing`` px where ``keep`` is True, shuffled."""
    ys = np.arange(spacing / 2, shape[0], spacing)
    xs = np.arange(spacing / 2, shape[1], spacing)
    gx, gy = np.meshgrid(xs, ys)
    p = np.stack([gx.ravel(), gy.ravel()], 1) + rng.uniform(-0.4, 0.4, (gx.size, 2)) * spacing
    p[:, 0] = np.clip(p[:, 0], 0, shape[1] - 1)
    p[:, 1] = np.clip(p[:, 1], 0, shape[0] - 1)
    p = p[keep[p[:, 1].astype(int), p[:, 0].astype(int)]]
    return p[rng.permutation(len(p))]


def _place(rng: np.random.Generator, shape: tuple[int, int], n: int, allowed: np.ndarray,
           taken: list[tuple[float, float, float]], radius: float, margin: float) -> list:
    """Up to ``n`` centres in ``allowed``, at least ``radius`` + other radius from ``taken``."""
    out = []
    h, w = shape
    for _ in range(n * 30):
        if len(out) == n:
            break
        x, y = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
        if not allowed[int(y), int(x)]:
            continue
        if any((x - tx) ** 2 + (y - ty) ** 2 < (radius + tr) ** 2 for tx, ty, tr in taken):
            continue
        taken.append((x, y, radius))
        out.append((x, y))
    return out


def _stain(rng: np.random.Generator, style: Style, jitter: float) -> tuple[np.ndarray, ...]:
    h = np.asarray(style.h_od) + rng.normal(0, jitter, 3)
    e = np.asarray(style.e_od) + rng.normal(0, jitter, 3)
    h, e = np.abs(h) / np.linalg.norm(h), np.abs(e) / np.linalg.norm(e)
    gains = (style.h_gain * rng.uniform(0.9, 1.1), style.e_gain * rng.uniform(0.85, 1.15))
    return h.astype(np.float32), e.astype(np.float32), np.asarray(gains, np.float32)


def _to_rgb(rng: np.random.Generator, cv: Canvas, style: Style) -> np.ndarray:
    """Beer-Lambert mixing of the H and E layers, optics blur and sensor noise -> uint8 RGB."""
    h_od, e_od, (hg, eg) = _stain(rng, style, 0.06 if style.name == "midog" else 0.02)
    hh = ndi.gaussian_filter(cv.h, 0.6) * hg
    ee = ndi.gaussian_filter(cv.e, 0.8) * eg
    od = hh[..., None] * h_od + ee[..., None] * e_od + np.asarray(style.background_od, np.float32)
    rgb = 255.0 * np.exp(-od * math.log(10))  # optical density is base 10
    rgb += rng.normal(0, 2.0, rgb.shape).astype(np.float32)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def render(rng: np.random.Generator, style: str | Style = "amida13",
           size: tuple[int, int] | int | None = None, density: float = 12.0,
           mimic_ratio: float = 3.5, nuclei: float = 1.0) -> SynthImage:
    """Render one synthetic H&E image.

    Args:
        rng: the random generator (the only source of randomness).
        style: a :data:`STYLES` key or a :class:`Style`.
        size: ``(H, W)`` or a side in px; default the style's size.
        density: expected mitotic figures per megapixel (Poisson; 12 -> about 3 per 512x512).
        mimic_ratio: expected mimics per expected figure (mimics are drawn independently).
        nuclei: scales the number of ordinary nuclei.

    Returns:
        A :class:`SynthImage` (image uint8 RGB, centroids and masks in px).
    """
    st = _style(style)
    shape = _shape(size, st)
    mpp = st.mpp
    cv = Canvas(shape)
    nest, lumen = _tissue(rng, cv, mpp)
    tissue = ~lumen
    texture = _smooth_noise(rng, shape, 0.8 / mpp)
    area_mpx = shape[0] * shape[1] / 1e6
    n_fig = int(rng.poisson(density * area_mpx))
    n_mim = int(rng.poisson(density * area_mpx * mimic_ratio))
    taken: list[tuple[float, float, float]] = []
    fig_r, margin = 7.5 / mpp, 4.0 / mpp
    figs = _place(rng, shape, n_fig, nest & tissue, taken, fig_r, margin)
    kinds = [MIMICS[int(i)] for i in rng.integers(len(MIMICS), size=n_mim)]
    mims = []
    for kind in kinds:  # lymphocytes anywhere in tissue, the others among tumour cells
        where = tissue if kind == "lymphocyte" else nest & tissue
        mims += [(x, y, kind) for x, y in _place(rng, shape, 1, where, taken, 6.0 / mpp, margin)]
    # ordinary nuclei: dense in nests, sparse spindles in stroma; not under figures/mimics
    for spacing, where, stroma in ((10.5 / mpp / math.sqrt(nuclei), nest & tissue, False),
                                   (22.0 / mpp / math.sqrt(nuclei), ~nest & tissue, True)):
        for x, y in _jittered_points(rng, shape, spacing, where):
            if any((x - tx) ** 2 + (y - ty) ** 2 < (tr * 0.9) ** 2 for tx, ty, tr in taken):
                continue
            _normal_nucleus(rng, cv, x, y, mpp, texture, stroma)
    labels = np.zeros(shape, np.int32)
    points, phases = [], []
    for x, y in figs:
        phase = PHASES[int(rng.integers(len(PHASES)))]
        patch = _figure_patch(rng, phase, mpp)
        if rng.random() < 0.75:
            _halo(rng, cv, x, y, rng.uniform(5.5, 7.0) / mpp, rng.uniform(0.3, 0.7))
        # thin chromatin strokes lose some density to the optics blur: compensate so that
        # figures and mimics reach the same peak hematoxylin density after rendering
        c = _paste_figure(cv, patch, x, y, 1.12 * _darkness(rng), labels, len(points) + 1)
        if c is not None:
            points.append(c)
            phases.append(phase)
    for x, y, kind in mims:
        _mimic(rng, cv, kind, x, y, mpp, _darkness(rng))
    image = _to_rgb(rng, cv, st)
    return SynthImage(image=image, points=np.asarray(points, np.float32).reshape(-1, 2),
                      labels=labels, phases=phases,
                      mimics=np.asarray([m[:2] for m in mims], np.float32).reshape(-1, 2),
                      mimic_kinds=[m[2] for m in mims], mpp=mpp)


def _darkness(rng: np.random.Generator) -> float:
    """Peak hematoxylin concentration shared by figures and mimics (same distribution)."""
    return float(rng.uniform(1.1, 1.9))


def _style(style: str | Style) -> Style:
    if isinstance(style, Style):
        return style
    if style not in STYLES:
        raise DataError(f"synth: unknown style {style!r}; expected one of {', '.join(STYLES)}")
    return STYLES[style]


def _shape(size: tuple[int, int] | int | None, st: Style) -> tuple[int, int]:
    if size is None:
        return st.size
    if isinstance(size, int):
        size = (size, size)
    h, w = int(size[0]), int(size[1])
    if min(h, w) < 64:
        raise DataError(f"synth: image size {h}x{w} is too small (at least 64x64 px)")
    return h, w


# -- datasets on disk ---------------------------------------------------------------------------


@dataclass
class SynthDataset:
    """What :func:`generate` wrote.

    Attributes:
        root: the dataset folder.
        like: the layout / style written.
        splits: per split (``train``, ``val``, ``test``), the dataset component to read it back:
            ``{"name": <reader>, "root": <path>, "split": <split>, **reader options}``, usable
            as ``registries.datasets.build(**spec)`` or as a recipe's ``data.<set>`` value.
        counts: per split, ``{"images": n, "mitoses": n, "mimics": n}``.
        seconds: wall time of the generation.
    """

    root: Path
    like: str
    splits: dict[str, dict] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0

    def manifest(self) -> dict:
        """Plain-data description (also written to ``<root>/synth.yaml``)."""
        return {"like": self.like, "root": str(self.root), "splits": self.splits,
                "counts": self.counts, "seconds": round(self.seconds, 3)}


def split_sizes(n_images: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Images per split: at least one test image from 2 images, one val image from 3."""
    n_test = max(1 if n_images >= 2 else 0, int(round(test_fraction * n_images)))
    n_val = max(1 if n_images >= 3 and val_fraction > 0 else 0, int(round(val_fraction * n_images)))
    n_val = min(n_val, max(0, n_images - n_test - 1))
    return {"train": n_images - n_test - n_val, "val": n_val, "test": n_test}


def _write_csv(path: Path, rows: list[list[float | int]], fmt: str = "{:g}") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(",".join(fmt.format(v) for v in r) + "\n" for r in rows))


def _save_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".tif", ".tiff"):
        import tifffile
        tifffile.imwrite(path, image, photometric="rgb")
    else:
        from PIL import Image
        Image.fromarray(image).save(path)


class _Layout:
    """Writes one style's images into the real layout; ``finish`` returns the split specs."""

    reader = ""

    def __init__(self, root: Path, sizes: dict[str, int]) -> None:
        self.root, self.sizes = root, sizes
        self.count: dict[str, int] = {}

    def next_index(self, split: str) -> int:
        k = self.count.get(split, 0)
        self.count[split] = k + 1
        return k

    def write(self, split: str, im: SynthImage, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def specs(self) -> dict[str, dict]:
        names = [s for s, n in self.sizes.items() if n] + ["all"]
        return {s: {"name": self.reader, "root": str(self.root), "split": s} for s in names}

    def finish(self) -> None:
        """Write any whole-dataset file (e.g. the MIDOG JSON)."""


class _ICPR2012(_Layout):
    """``train/<slide>_<k>.bmp`` + ``.csv`` (mask pixel lists); val = slide A04 in train/."""

    reader = "icpr2012"
    TRAIN_SLIDES, VAL_SLIDE = ("A00", "A01", "A02", "A03"), "A04"

    def write(self, split: str, im: SynthImage, rng: np.random.Generator) -> None:
        k = self.next_index(split)
        if split == "val":
            folder, slide = "train", self.VAL_SLIDE
        else:
            folder = split
            slides = self.TRAIN_SLIDES + (self.VAL_SLIDE,) if split == "test" else self.TRAIN_SLIDES
            slide = slides[k % len(slides)]
        stem = f"{slide}_{k:02d}" if split != "test" else f"{slide}_{50 + k:02d}"
        _save_image(self.root / folder / f"{stem}.bmp", im.image)
        rows = [pix.ravel().tolist() for pix in im.masks()]
        _write_csv(self.root / folder / f"{stem}.csv", rows, "{:d}")

    def specs(self) -> dict[str, dict]:
        out = super().specs()
        for spec in out.values():
            spec["allow_empty"] = True  # an image without mitoses has an empty CSV
            if self.sizes.get("val") and spec["split"] != "all":
                spec["val_groups"] = [self.VAL_SLIDE]
        return out


class _ICPR2014(_Layout):
    """``<case>/frames/x40/<frame>.tiff`` + ``<case>/mitosis/<frame>_(not_)mitosis.csv``."""

    reader = "icpr2014"
    CASES = {"train": ("A04", "A05", "A07", "A10", "A11", "A12", "A14"), "val": ("A03",),
             "test": ("A06", "A08", "A09")}

    def write(self, split: str, im: SynthImage, rng: np.random.Generator) -> None:
        k = self.next_index(split)
        cases = self.CASES[split]
        case, j = cases[k % len(cases)], k // len(cases)
        frame = f"{case}_{j // 16:02d}{'ABCD'[(j // 4) % 4]}{'abcd'[j % 4]}"
        _save_image(self.root / case / "frames" / "x40" / f"{frame}.tiff", im.image)
        pos = [[round(float(x)), round(float(y)), 1.0] for x, y in im.points]
        neg = [[round(float(x)), round(float(y)), round(float(rng.uniform(0.5, 1.0)), 2)]
               for x, y in im.mimics]
        _write_csv(self.root / case / "mitosis" / f"{frame}_mitosis.csv", pos)
        _write_csv(self.root / case / "mitosis" / f"{frame}_not_mitosis.csv", neg)

    def specs(self) -> dict[str, dict]:
        out = super().specs()
        for spec in out.values():
            spec["val_cases"] = list(self.CASES["val"])
            spec["test_cases"] = list(self.CASES["test"])
        return out


class _AMIDA13(_Layout):
    """``mitoses_image_data/<case>/<tile>.tif`` + ``mitoses_ground_truth/<case>/<tile>.csv``."""

    reader = "amida13"
    CASES = {"train": tuple(f"{i:02d}" for i in range(1, 11)), "val": ("11", "12"),
             "test": tuple(f"{i:02d}" for i in range(13, 24))}

    def write(self, split: str, im: SynthImage, rng: np.random.Generator) -> None:
        k = self.next_index(split)
        cases = self.CASES[split]
        case, tile = cases[k % len(cases)], f"{k // len(cases) + 1:02d}"
        _save_image(self.root / "mitoses_image_data" / case / f"{tile}.tif", im.image)
        (self.root / "mitoses_ground_truth" / case).mkdir(parents=True, exist_ok=True)
        if len(im.points):  # no CSV = no mitosis
            rows = [[round(float(y)), round(float(x))] for x, y in im.points]
            _write_csv(self.root / "mitoses_ground_truth" / case / f"{tile}.csv", rows, "{:d}")


class _MIDOG(_Layout):
    """``MIDOG.json`` (COCO-like, bbox [x1, y1, x2, y2], 50x50) + ``<id>.tiff`` beside it."""

    reader = "midog"

    def __init__(self, root: Path, sizes: dict[str, int]) -> None:
        super().__init__(root, sizes)
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def write(self, split: str, im: SynthImage, rng: np.random.Generator) -> None:
        iid = len(self.images) + 1
        name = f"{iid:03d}.tiff"
        _save_image(self.root / name, im.image)
        h, w = im.image.shape[:2]
        self.images.append({"license": 1, "file_name": name, "id": iid, "width": w, "height": h,
                            "tumor_type": "synthetic breast cancer"})
        for cat, pts in ((1, im.points), (2, im.mimics)):
            for x, y in pts:
                cx, cy = round(float(x)), round(float(y))
                self.annotations.append({"bbox": [cx - 25, cy - 25, cx + 25, cy + 25],
                                         "category_id": cat, "image_id": iid,
                                         "labels": [cat, cat, cat],
                                         "id": len(self.annotations) + 1})

    def specs(self) -> dict[str, dict]:
        n = sum(self.sizes.values())
        out = super().specs()
        for spec in out.values():  # the reader splits MIDOG itself (seeded, per tumour type)
            spec["val_fraction"] = self.sizes["val"] / n
            spec["test_fraction"] = self.sizes["test"] / n
        return out

    def finish(self) -> None:
        data = {"info": {"description": "partsup synthetic MIDOG-style dataset"},
                "licenses": [{"id": 1, "name": "CC0"}], "images": self.images,
                "categories": [{"id": 1, "name": "mitotic figure"},
                               {"id": 2, "name": "not mitotic figure"}],
                "annotations": self.annotations}
        (self.root / "MIDOG.json").write_text(json.dumps(data))


MANIFEST = "synth.yaml"

#: per-style stream of image seeds, so that styles do not share their tissue layouts
STYLE_STREAM = {"icpr2012": 1, "icpr2014": 2, "amida13": 3, "midog": 4}


def image_rng(seed: int, like: str, i: int) -> np.random.Generator:
    """The generator of image ``i`` of ``generate(..., like=like, seed=seed)``."""
    return np.random.default_rng([seed, STYLE_STREAM[like], i])

LAYOUTS: dict[str, Callable[[Path, dict[str, int]], _Layout]] = {
    "icpr2012": _ICPR2012, "icpr2014": _ICPR2014, "amida13": _AMIDA13, "midog": _MIDOG}


def generate(out: str | Path, like: str = "amida13", n_images: int = 24, seed: int = 0,
             size: tuple[int, int] | int | None = None, density: float = 12.0,
             mimic_ratio: float = 3.5, val_fraction: float = 0.15,
             test_fraction: float = 0.25, overwrite: bool = False) -> SynthDataset:
    """Write a synthetic dataset in the real on-disk layout of ``like``.

    Image ``i`` is rendered from :func:`image_rng` ``(seed, like, i)`` in the style ``like``
    (so the first images do not change with ``n_images``, and styles do not share layouts);
    the test-split images come first, then val, then train. The registered reader of the same name loads the result;
    ``SynthDataset.splits`` holds the reader options for each split (also in
    ``<out>/synth.yaml``).

    Args:
        out: folder to create (must be empty or absent unless ``overwrite``).
        like: ``icpr2012`` | ``icpr2014`` | ``amida13`` | ``midog``.
        n_images: number of images in all splits together.
        seed: the generator's seed.
        size: ``(H, W)`` or a side, px (default: the style's size).
        density: expected mitotic figures per megapixel.
        mimic_ratio: expected mimics per expected figure.
        val_fraction, test_fraction: shares of the images in val and test.
        overwrite: allow writing into a non-empty folder.
    """
    import time
    t0 = time.perf_counter()
    if like not in LAYOUTS:
        raise DataError(f"synth: unknown layout {like!r}; expected one of {', '.join(LAYOUTS)}")
    if n_images < 1:
        raise DataError(f"synth: --images must be at least 1 (got {n_images})")
    root = Path(out).expanduser()
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise DataError(f"synth: output folder {root} is not empty (choose another or overwrite)")
    root.mkdir(parents=True, exist_ok=True)
    sizes = split_sizes(n_images, val_fraction, test_fraction)
    layout = LAYOUTS[like](root, sizes)
    order = ["test"] * sizes["test"] + ["val"] * sizes["val"] + ["train"] * sizes["train"]
    counts = {s: {"images": 0, "mitoses": 0, "mimics": 0} for s in sizes if sizes[s]}
    if like == "midog":  # the MIDOG reader draws its own split (same fractions)
        counts = {"all": {"images": 0, "mitoses": 0, "mimics": 0}}
    for i, split in enumerate(order):
        rng = image_rng(seed, like, i)
        im = render(rng, like, size, density, mimic_ratio)
        layout.write(split, im, rng)
        c = counts["all" if like == "midog" else split]
        c["images"] += 1
        c["mitoses"] += len(im.points)
        c["mimics"] += len(im.mimics)
    layout.finish()
    ds = SynthDataset(root=root, like=like, splits=layout.specs(), counts=counts,
                      seconds=time.perf_counter() - t0)
    import yaml  # a .json here would clash with the MIDOG reader's search for its annotation file
    (root / MANIFEST).write_text(yaml.safe_dump(ds.manifest(), sort_keys=False))
    return ds


# -- the classical baseline the generator is calibrated against ---------------------------------


def hematoxylin(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 hematoxylin optical density of an RGB uint8 image (Ruifrok matrix)."""
    from skimage.color import rgb2hed
    return rgb2hed(image)[..., 0].astype(np.float32)


def threshold_blobs(h: np.ndarray, threshold: float, area: tuple[float, float]) -> np.ndarray:
    """Classical detector: blobs of ``h > threshold`` (8-connected) with area (px) in ``area``.

    Returns ``(K, 2)`` float32 blob centroids x, y in px.
    """
    lab, n = ndi.label(h > threshold, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros((0, 2), np.float32)
    idx = np.arange(1, n + 1)
    sizes = ndi.sum_labels(np.ones_like(h), lab, idx)
    keep = idx[(sizes >= area[0]) & (sizes <= area[1])]
    if len(keep) == 0:
        return np.zeros((0, 2), np.float32)
    cy_cx = np.asarray(ndi.center_of_mass(np.ones_like(h), lab, keep), np.float32).reshape(-1, 2)
    return cy_cx[:, ::-1].copy()
