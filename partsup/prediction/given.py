"""Given points on a whole slide (``partsup predict SLIDE --at DIR``): no detection; the
detector's second look classifies each level-0 point of ``DIR/<id>.csv`` from a region read
around it.

``points (level-0 px) --grouped by cells of `region` px of the pyramid level nearest the
classifier's um/px--> one region per cell (the cell's points plus half a crop and a margin
around them) --Detector.classify--> one detection per point (the given x, y; label, probs,
score) --> the slide's usual outputs (:func:`partsup.prediction.slide.write_slide`)``.
Memory is bounded by one region (at most ``region`` px plus a crop a side) and the thumbnail,
whatever the number of points. Images are done by :func:`partsup.prediction.image.predict_one`
with ``at``.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from partsup.prediction.inputs import Item
from partsup.prediction.points import points_file, read_points, second_look_of
from partsup.prediction.result import Result, provenance_of
from partsup.prediction.slide import (SlideDetections, SlideOutput, classes_of, slide_mpp,
                                      slide_result)
from partsup.slides.reader import open_slide
from partsup.slides.tissue import tissue_mask
from partsup.types import Detection

#: side of the cells points are grouped by, px of the level read (one region per cell)
REGION = 1024
#: context read beyond half a crop around the outermost points of a region, px
MARGIN = 4


def classify_slide(path: Path, detector: Any, points: np.ndarray, *, mpp: float | None = None,
                   default_mpp: float | None = None, region: int = REGION,
                   on_tile: Callable[[int, int], None] | None = None) -> SlideDetections:
    """Classify the level-0 ``points`` ((N, 2) x, y px) of the slide ``path`` with the
    detector's second look; write nothing. One detection per point, in the given order (x, y
    as given; ``label``, ``probs``, ``score`` from ``Detector.classify``; area 0).

    The slide's um/px is ``mpp``, else the file's, else ``default_mpp`` (then
    ``mpp_assumed``). Regions are read from the coarsest pyramid level at least as fine as
    the classifier's um/px; a detector with a colour ``normalizer`` maps every region by one
    estimate made from the thumbnail's tissue. ``on_tile(done, total)`` after each region;
    Ctrl-C stops between regions (``interrupted``: the points of the regions done).

    Raises:
        PartsupError: a detector without a second look. DataError: no um/px, a point outside
        the slide.
    """
    look = second_look_of(detector)
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    with open_slide(path) as slide:
        width, height = slide.dimensions
        use_mpp = slide_mpp(path, slide, mpp, default_mpp)
        level = slide.best_level((look.spec.mpp or use_mpp) / use_mpp)
        lv = slide.levels[level]
        level_mpp = use_mpp * lv.downsample
        half = math.ceil(look.spec.crop_um / level_mpp / 2) + MARGIN
        thumb, scale = slide.thumbnail()
        tissue = tissue_mask(thumb)
        normalizer = getattr(detector, "normalizer", None)
        colour = {"colour": normalizer.estimate(thumb, tissue)} if normalizer else {}
        local = (pts + 0.5) / lv.downsample - 0.5  # level px
        cells: dict[tuple[int, int], list[int]] = {}
        for i, (x, y) in enumerate(local):
            cells.setdefault((int(y // region), int(x // region)), []).append(i)
        found: list[Detection | None] = [None] * len(pts)
        out = SlideDetections([], int(width), int(height), float(use_mpp),
                              not (mpp or slide.mpp), thumb, scale, tissue, 0, len(cells),
                              given=True, made_by=provenance_of(detector), **classes_of(detector))
        try:
            for key in sorted(cells):
                idx = cells[key]
                x0 = max(0, int(math.floor(local[idx, 0].min())) - half)
                y0 = max(0, int(math.floor(local[idx, 1].min())) - half)
                x1 = min(lv.width, int(math.ceil(local[idx, 0].max())) + half + 1)
                y1 = min(lv.height, int(math.ceil(local[idx, 1].max())) + half + 1)
                rgb = slide.read_region(level, x0, y0, x1 - x0, y1 - y0)
                dets = detector.classify(rgb, local[idx] - (x0, y0), level_mpp, **colour)
                for i, d in zip(idx, dets):
                    found[i] = replace(d, x=float(pts[i, 0]), y=float(pts[i, 1]))
                out.tiles_done += 1
                if on_tile is not None:
                    on_tile(out.tiles_done, len(cells))
        except KeyboardInterrupt:
            out.interrupted = True
    out.detections.extend(d for d in found if d is not None)
    return out


def predict_slide_at(item: Item, detector: Any, writers: Mapping[str, Any], out: Path,
                     at: Path, *, mpp: float | None = None, default_mpp: float | None = None,
                     label: str | None = None, overlay: bool = True,
                     on_tile: Callable[[int, int], None] | None = None,
                     extra: Callable[[SlideOutput], list[str]] | None = None) -> Result:
    """``partsup predict SLIDE --at DIR``: the points of ``DIR/<id>.csv`` (level-0 px; or
    another readable file, :func:`partsup.prediction.points.points_file`) classified
    (:func:`classify_slide`), then the slide's usual outputs (every format, overlay, tissue
    mask, the plugins' ``extra``) and lines.

    Raises:
        PartsupError: a detector without a second look. DataError: no points file, a point
        outside the slide, no um/px.
    """
    t0 = time.perf_counter()
    second_look_of(detector)
    readers = getattr(getattr(detector, "registries", None), "writers", None)
    with open_slide(item.path) as slide:
        width, height = slide.dimensions
    points = read_points(points_file(at, item.id, readers), int(width), int(height), readers)
    found = classify_slide(item.path, detector, points, mpp=mpp, default_mpp=default_mpp,
                           on_tile=on_tile)
    return slide_result(item, found, writers, out, t0, label=label, overlay=overlay,
                        extra=extra)
