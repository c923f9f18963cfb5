"""One whole synthetic H&E image (:func:`render`): tissue, placed figures, mimics and ordinary
nuclei, then Beer-Lambert mixing of the stain layers into RGB (see :mod:`partsup_mitosis.synth`)."""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from partsup.plugin import DataError
from partsup_mitosis.synth.paint import (Canvas, cell_body, fibres, figure_patch, mimic,
                                         normal_nucleus, paste_figure, smooth_noise)
from partsup_mitosis.synth.styles import MIMICS, PHASES, STYLES, Style, SynthImage


def _tissue(rng: np.random.Generator, cv: Canvas, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """Fill E (and faint H) with stroma, cellular nests and lumen; return (nest, lumen) masks."""
    shape = cv.shape
    nest_field = smooth_noise(rng, shape, 35 / mpp) + rng.uniform(-0.3, 0.6)
    nest = nest_field > 0
    lumen = smooth_noise(rng, shape, 25 / mpp) > rng.uniform(1.5, 2.4)
    fib = fibres(rng, shape, mpp)
    fine = smooth_noise(rng, shape, 1.5 / mpp)
    stroma_e = 0.45 + 0.45 * fib
    cyto_e = 0.30 + 0.06 * fine
    wn = np.clip(nest_field / 0.4 + 0.5, 0, 1)  # soft nest boundary
    cv.e[:] = stroma_e * (1 - wn) + cyto_e * wn
    cv.e *= np.clip(1 + 0.12 * smooth_noise(rng, shape, 10 / mpp), 0.5, 1.5)
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
    texture = smooth_noise(rng, shape, 0.8 / mpp)
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
            normal_nucleus(rng, cv, x, y, mpp, texture, stroma)
    labels = np.zeros(shape, np.int32)
    points, phases = [], []
    for x, y in figs:
        phase = PHASES[int(rng.integers(len(PHASES)))]
        patch = figure_patch(rng, phase, mpp)
        if rng.random() < 0.75:
            cell_body(rng, cv, x, y, rng.uniform(5.5, 7.0) / mpp, rng.uniform(0.3, 0.7))
        # thin chromatin strokes lose some density to the optics blur: compensate so that
        # figures and mimics reach the same peak hematoxylin density after rendering
        c = paste_figure(cv, patch, x, y, 1.12 * _darkness(rng), labels, len(points) + 1)
        if c is not None:
            points.append(c)
            phases.append(phase)
    for x, y, kind in mims:
        mimic(rng, cv, kind, x, y, mpp, _darkness(rng))
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
