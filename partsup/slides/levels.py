"""What both slide readers share (:class:`SlideBase`): a level's size and downsample, choosing a
level, and a thumbnail read band by band (:mod:`partsup.slides.reader`, :mod:`partsup.slides.openslide_reader`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class Level:
    width: int
    height: int
    downsample: float


def best_level(levels: Sequence[Level], downsample: float) -> int:
    """The coarsest of ``levels`` whose downsample is at most ``downsample`` (1% tolerance)."""
    best = 0
    for i, lv in enumerate(levels):
        if lv.downsample <= downsample * 1.01 and lv.downsample > levels[best].downsample:
            best = i
    return best


def band_thumbnail(slide: Any, max_side: int = 2048) -> tuple[np.ndarray, float]:
    """A small RGB picture of the whole of ``slide`` and its scale (thumbnail px per level-0
    px), read from the coarsest level in bands of rows, each reduced by an integer stride (block
    mean), so memory stays bounded even when that level is large."""
    level = len(slide.levels) - 1
    lv = slide.levels[level]
    stride = max(1, math.ceil(max(lv.width, lv.height) / max_side))
    tw, th = max(1, lv.width // stride), max(1, lv.height // stride)
    thumb = np.empty((th, tw, 3), np.uint8)
    band = stride * max(1, 2048 // stride)
    for by in range(0, th * stride, band):
        rows = min(band, th * stride - by)
        region = slide.read_region(level, 0, by, tw * stride, rows).astype(np.float32)
        small = region.reshape(rows // stride, stride, tw, stride, 3).mean(axis=(1, 3))
        thumb[by // stride: by // stride + rows // stride] = np.round(small).astype(np.uint8)
    return thumb, 1.0 / (stride * lv.downsample)


class SlideBase:
    """What every slide reader has on top of its ``levels``, ``read_region`` and ``close``:
    level-0 size, the context manager, level choice and the thumbnail."""

    levels: list[Level]

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def dimensions(self) -> tuple[int, int]:
        """``(width, height)`` of level 0, px."""
        return self.levels[0].width, self.levels[0].height

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def best_level(self, downsample: float) -> int:
        """The coarsest level whose downsample is at most ``downsample`` (1% tolerance)."""
        return best_level(self.levels, downsample)

    def thumbnail(self, max_side: int = 2048) -> tuple[np.ndarray, float]:
        """A small RGB picture of the whole slide and its scale (thumbnail px per level-0 px)
        (:func:`band_thumbnail`)."""
        return band_thumbnail(self, max_side)


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of an exception, for one-line errors."""
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
