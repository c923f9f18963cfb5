"""Evaluation overlays (as the paper's Fig. 10): TP green, FN blue, FP yellow circles.

True positives and false positives are drawn at the detection's centroid, false negatives at
the ground-truth centroid; each circle has the protocol's match radius, so what lies inside a
circle is what the protocol would accept. Large images are downsampled by an integer stride.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from partsup.evaluation.matching import MatchResult

TP_COLOR = (0, 200, 60)     # green
FN_COLOR = (30, 90, 255)    # blue
FP_COLOR = (255, 220, 0)    # yellow
#: overlays are downsampled to at most this many px on the long side
MAX_SIDE = 2048


def downsampled_canvas(image: np.ndarray, max_side: int = MAX_SIDE) -> tuple[Any, int]:
    """``(PIL RGB image, stride)``: ``image`` ``(H, W, 3)`` uint8 taken every ``stride`` px, the
    smallest integer stride that brings its long side to at most ``max_side``."""
    from PIL import Image

    h, w = image.shape[:2]
    stride = max(1, -(-max(h, w) // max_side))
    return Image.fromarray(np.ascontiguousarray(image[::stride, ::stride, :3])), stride


def draw_overlay(image: np.ndarray, gt: Any, det: Any, result: MatchResult,
                 max_side: int = MAX_SIDE, legend: bool = True) -> Any:
    """A PIL RGB image of ``image`` with the matching outcome drawn on it.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        gt: ``(N, 2)`` ground-truth x, y (px).
        det: ``(K, 2)`` detection x, y (px).
        result: :func:`partsup.evaluation.matching.match` of ``gt`` and ``det`` (its ``radius_px`` sets the
            circle radius).
        max_side: downsample (integer stride) so the long side is at most this.
        legend: write ``TP n  FN n  FP n`` in the top-left corner.
    """
    from PIL import ImageDraw

    g = np.asarray(gt, np.float64).reshape(-1, 2)
    d = np.asarray(det, np.float64).reshape(-1, 2)
    h, w = image.shape[:2]
    canvas, stride = downsampled_canvas(image, max_side)
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(h, w) / stride / 400))
    r = max(result.radius_px / stride, 4.0)

    def circle(x: float, y: float, color: tuple[int, int, int]) -> None:
        x, y = x / stride, y / stride
        draw.ellipse([x - r, y - r, x + r, y + r], outline=color, width=width)

    for (x, y), tp in zip(d, result.det_tp):
        circle(x, y, TP_COLOR if tp else FP_COLOR)
    for (x, y), m in zip(g, result.gt_match):
        if m < 0:
            circle(x, y, FN_COLOR)
    if legend:
        _legend(draw, result, max(canvas.size))
    return canvas


def _legend(draw: Any, result: MatchResult, side: int) -> None:
    """``TP n  FN n  FP n`` on a black band in the top-left corner, scaled to the image."""
    c = result.counts
    legend_band(draw, [(f"TP {c.tp}", TP_COLOR), (f"FN {c.fn}", FN_COLOR),
                       (f"FP {c.fp}", FP_COLOR)], side)


def legend_band(draw: Any, items: list[tuple[str, tuple[int, int, int]]], side: int) -> None:
    """Coloured ``(text, rgb)`` items on a black band in the top-left corner; the font size
    follows the image's longer ``side`` (px)."""
    from PIL import ImageFont
    size = max(10, side // 50)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        font = ImageFont.load_default()
    x = pad = max(3, size // 4)
    boxes = []
    for text, color in items:
        left, top, right, bottom = draw.textbbox((x, pad), text, font=font)
        boxes.append((x, text, color))
        x = right + 2 * pad
    draw.rectangle([0, 0, x, bottom + pad], fill=(0, 0, 0))
    for x0, text, color in boxes:
        draw.text((x0, pad), text, fill=color, font=font)


def save_overlay(path: str | Path, image: np.ndarray, gt: Any, det: Any, result: MatchResult,
                 max_side: int = MAX_SIDE) -> Path:
    """Write :func:`draw_overlay` to ``path`` (PNG); creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_overlay(image, gt, det, result, max_side=max_side).save(path)
    return path
