"""Predicting on a whole slide, tile by tile at the model's resolution, on tissue only.

``slide --thumbnail--> tissue mask (& --roi) --> core tiles of `tile` model px that touch tissue
--> each read with a margin from the best pyramid level, resampled to the model's um/px,
detected --> detections whose centre lies in the tile's core (so overlaps give no duplicates),
mapped to level-0 px --> writers, overlay, tissue PNG, plugins' outputs``.

Memory is bounded by one tile plus its margin (and the thumbnail), whatever the slide's size.
Ctrl-C stops between tiles: the outputs are written for the tiles done and the result says
``interrupted``.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence  # noqa: F401

import numpy as np

from partsup.errors import DataError
from partsup.prediction import DetectorLike, ImageCount, Item, Result, write_overlay
from partsup.slides.reader import SlideReader
from partsup.slides.tissue import rasterize, tissue_mask
from partsup.types import Detection


@dataclass
class SlideOutput:
    """What a slide gave, for writers and plugins (``partsup_slide_outputs``)."""

    id: str
    out: Path
    width: int
    height: int
    mpp: float
    xy: np.ndarray
    thumbnail: np.ndarray
    scale: float
    tissue: np.ndarray
    label: str | None = None
    outputs: list[Path] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)


def tissue_tiles(tissue: np.ndarray, scale: float, width: int, height: int, tile: int
                 ) -> list[tuple[int, int]]:
    """Top-left corners (px of the model's grid, ``width x height``) of the ``tile``-px cores
    that touch ``tissue`` (a mask at ``scale`` mask px per model px), row by row."""
    cores = []
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            y0, x0 = int(y * scale), int(x * scale)
            y1 = max(y0 + 1, math.ceil((y + tile) * scale))
            x1 = max(x0 + 1, math.ceil((x + tile) * scale))
            if tissue[y0:y1, x0:x1].any():
                cores.append((x, y))
    return cores


def _read_tile(slide: SlideReader, level: int, f: float, box: tuple[int, int, int, int]
               ) -> np.ndarray:
    """The model-grid box ``(x0, y0, x1, y1)`` as RGB, read from ``level`` (``f`` level px per
    model px) and resampled (area-aware bilinear) when ``f != 1``."""
    from PIL import Image
    bx0, by0, bx1, by1 = box
    lx0, ly0 = math.floor(bx0 * f), math.floor(by0 * f)
    lx1, ly1 = math.ceil(bx1 * f), math.ceil(by1 * f)
    region = slide.read_region(level, lx0, ly0, lx1 - lx0, ly1 - ly0)
    if abs(f - 1.0) < 1e-6:
        return region
    img = Image.fromarray(region).resize(
        (bx1 - bx0, by1 - by0), Image.Resampling.BILINEAR,
        box=(bx0 * f - lx0, by0 * f - ly0, bx1 * f - lx0, by1 * f - ly0))
    return np.asarray(img)


def predict_slide(item: Item, detector: DetectorLike, writers: dict[str, Any], out: Path, *,
                  mpp: float | None = None, default_mpp: float | None = None,
                  model_mpp: float | None = None, label: str | None = None,
                  roi: Sequence[Sequence[np.ndarray]] | None = None, tile: int = 1024,
                  margin: int = 64, overlay: bool = True,
                  on_tile: Callable[[int, int], None] | None = None,
                  extra: Callable[[SlideOutput], list[str]] | None = None) -> Result:
    """Detect on the tissue of one slide; write every format (level-0 px), the overlay (on
    the thumbnail), ``<id>.tissue.png`` and what ``extra`` (the plugins) adds.

    The slide's um/px is ``mpp``, else the file's, else ``default_mpp`` (then
    ``Result.mpp_assumed``); tiles are resampled to ``model_mpp`` (None: read as they are).
    ``margin`` model px of context around each core tile must exceed an object's radius.
    ``on_tile(done, total)`` is called after each tile."""
    t0 = time.perf_counter()
    if tile < 32 or margin < 0:
        raise DataError(f"{item.path}: slide tiles need tile >= 32 and margin >= 0 px")
    with SlideReader(item.path) as slide:
        width, height = slide.dimensions
        use_mpp = mpp or slide.mpp or default_mpp
        if not use_mpp:
            raise DataError(f"{item.path}: no --mpp given and the slide records no resolution "
                            f"(um/px); pass --mpp")
        target = model_mpp or use_mpp
        r = use_mpp / target  # model px per level-0 px
        thumb, scale = slide.thumbnail()
        tissue = tissue_mask(thumb)
        if roi is not None:
            tissue &= rasterize(list(roi), tissue.shape, scale)
        mw, mh = math.ceil(width * r), math.ceil(height * r)
        cores = tissue_tiles(tissue, scale / r, mw, mh, tile)
        level = slide.best_level(1.0 / r)
        f = 1.0 / (r * slide.levels[level].downsample)
        found: list[Detection] = []
        result = Result(item, mpp_assumed=not (mpp or slide.mpp))
        done = 0
        try:
            for cx, cy in cores:
                box = (max(0, cx - margin), max(0, cy - margin),
                       min(mw, cx + tile + margin), min(mh, cy + tile + margin))
                for d in detector.detect(_read_tile(slide, level, f, box), target):
                    gx, gy = d.x + box[0], d.y + box[1]
                    if cx <= gx < cx + tile and cy <= gy < cy + tile:
                        found.append(Detection((gx + 0.5) / r - 0.5, (gy + 0.5) / r - 0.5,
                                               d.score, d.area / (r * r)))
                done += 1
                if on_tile is not None:
                    on_tile(done, len(cores))
        except KeyboardInterrupt:
            result.interrupted = True
    info = {"image": item.id, "width": int(width), "height": int(height),
            "mpp": float(use_mpp), "source": str(item.path), **({"label": label} if label else {})}
    result.count = ImageCount(item.id, len(found), int(width), int(height), float(use_mpp))
    xy = np.array([(d.x, d.y, d.score) for d in found], np.float64).reshape(-1, 3)
    slide_out = SlideOutput(item.id, out, int(width), int(height), float(use_mpp), xy, thumb,
                            scale, tissue, label, result.outputs, found)
    try:
        for writer in writers.values():
            result.outputs.append(out / f"{item.id}{writer.suffix}")
            writer.write(result.outputs[-1], found, info)
        result.outputs.append(out / f"{item.id}.tissue.png")
        _save_mask(result.outputs[-1], tissue)
        if overlay:
            result.outputs.append(out / f"{item.id}.overlay.png")
            small = [Detection(d.x * scale, d.y * scale, d.score, d.area * scale * scale)
                     for d in found]
            write_overlay(result.outputs[-1], thumb, small)
        if extra is not None:
            result.lines.extend(extra(slide_out))
    except BaseException:  # a failed slide leaves no files behind (a full disk, Ctrl-C)
        for path in result.outputs:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    result.lines.insert(0, f"{item.id}: {len(found)} detections on {done} of {len(cores)} "
                           f"tissue tiles ({tissue.mean() * 100:.1f}% of the slide is tissue"
                           f"{' in the ROI' if roi is not None else ''})"
                           + (" [interrupted: outputs hold the tiles done]"
                              if result.interrupted else ""))
    result.seconds = time.perf_counter() - t0
    return result


def _save_mask(path: Path, mask: np.ndarray) -> None:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
