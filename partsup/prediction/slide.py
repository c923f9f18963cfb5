"""Predicting on a whole slide, tile by tile at the model's resolution, on tissue only.

``slide --thumbnail--> tissue mask (& --roi) --> core tiles of `tile` model px that touch tissue
--> each read with a margin from the best pyramid level, resampled to the model's um/px,
detected --> detections whose centre lies in the tile's core (so overlaps give no duplicates),
mapped to level-0 px --> writers, overlay, tissue PNG, plugins' outputs``.

:func:`detect_slide` is the detection part (writes nothing: ``Detector.predict_slide`` without
``out``), :func:`write_slide` the files, :func:`predict_slide` both (``partsup predict``); the
run's settings (margin, the model's um/px, the plugins' outputs) come from
:mod:`partsup.prediction.settings`.
Memory is bounded by one tile plus its margin (and the thumbnail), whatever the slide's size.
Ctrl-C stops between tiles: the outputs are written for the tiles done and the result says
``interrupted``.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from partsup.errors import DataError
from partsup.output.outdir import check_not_foreign, record_owned
from partsup.prediction.counts import ImageCount, count_classes
from partsup.output.atomic import unlink_link
from partsup.prediction.image import detect_as_given, save_png, write_overlay
from partsup.prediction.inputs import Item
from partsup.prediction.points import look_classes
from partsup.prediction.result import DetectorLike, Result, provenance_of
from partsup.prediction.summary import class_line
from partsup.slides.reader import SlideReader, open_slide
from partsup.slides.tissue import check_roi_extent, rasterize, tissue_mask
from partsup.types import Detection


@dataclass
class SlideOutput:
    """What a slide gave, for writers and plugins (``partsup_slide_outputs``): ``xy`` (N, 3)
    float64 x, y level-0 px, score and ``detections`` in the same order; after a labelling
    second look, each detection's class in :attr:`labels` and ``classes`` (``class -> count``
    over the slide, the labelling head's order; empty without one)."""

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
    classes: dict[str, int] = field(default_factory=dict)

    @property
    def labels(self) -> list[str | None]:
        """Each detection's class (None: not labelled), in the order of ``xy``."""
        return [d.label for d in self.detections]


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


@dataclass
class SlideDetections:
    """The detection part of one slide (:func:`detect_slide`; nothing written): detections in
    level-0 px, the slide's size and um/px, the thumbnail and its tissue mask, the tiles run."""

    detections: list[Detection]
    width: int
    height: int
    mpp: float
    #: no um/px was given or recorded: ``default_mpp`` was used
    mpp_assumed: bool
    thumbnail: np.ndarray
    scale: float
    tissue: np.ndarray
    tiles_done: int
    tiles: int
    #: Ctrl-C stopped it between tiles (``detections`` hold the tiles done)
    interrupted: bool = False
    #: the detector's second look: every class (the writers' ``p_<class>`` columns; None:
    #: none) and the labelling head's classes (``()``: none)
    prob_classes: list[str] | None = None
    label_classes: tuple[str, ...] = ()
    #: ``partsup predict --at``: the given points were classified (no detection)
    given: bool = False
    #: which model found them (``Detector.provenance``: model file name and SHA-256), written
    #: into the formats that have room for it (GeoJSON)
    made_by: dict[str, str] = field(default_factory=dict)

    @property
    def classes(self) -> dict[str, int]:
        """``class -> count`` of the detections' labels (empty without a labelling head)."""
        return count_classes((d.label for d in self.detections), self.label_classes)


def classes_of(detector: Any) -> dict[str, Any]:
    """:class:`SlideDetections`' ``prob_classes`` and ``label_classes`` for ``detector``
    (:func:`partsup.prediction.points.look_classes`)."""
    probs, labels = look_classes(detector)
    return {"prob_classes": probs, "label_classes": labels}


def slide_mpp(path: Path, slide: Any, mpp: float | None, default_mpp: float | None) -> float:
    """The um/px a slide is read at: ``mpp``, else the file's, else ``default_mpp``.

    Raises:
        DataError: none of them (naming ``path``)."""
    use_mpp = mpp or slide.mpp or default_mpp
    if not use_mpp:
        raise DataError(f"{path}: no --mpp given and the slide records no resolution "
                        f"(um/px); pass --mpp")
    return use_mpp


def detect_slide(path: Path, detector: DetectorLike, *, mpp: float | None = None,
                 default_mpp: float | None = None, model_mpp: float | None = None,
                 roi: Sequence[Sequence[np.ndarray]] | None = None, tile: int = 1024,
                 margin: int = 64, on_tile: Callable[[int, int], None] | None = None,
                 roi_name: str = "roi") -> SlideDetections:
    """Detect on the tissue of the slide ``path``, tile by tile; write nothing.

    The slide's um/px is ``mpp``, else the file's, else ``default_mpp`` (then
    ``mpp_assumed``); tiles are resampled to ``model_mpp`` (None: read as they are).
    ``margin`` model px of context around each core tile must exceed an object's radius.
    A detector with a colour ``normalizer`` maps every tile by one estimate, made from the
    thumbnail's tissue.
    ``on_tile(done, total)`` is called after each tile. Ctrl-C stops between tiles
    (``interrupted``).

    An object is counted by the tile whose core holds its centre (:func:`merge_seams`: within
    :data:`SEAM_TOLERANCE` model px of a seam, the two tiles' estimates are one object).
    ``roi_name`` names ``roi`` in messages (e.g. ``"--roi FILE"``).

    Raises:
        DataError: no um/px; a polygon of ``roi`` wholly outside the slide (naming the slide
        and ``roi_name``)."""
    if tile < 32 or margin < 0:
        raise DataError(f"{path}: slide tiles need tile >= 32 and margin >= 0 px")
    with open_slide(path) as slide:
        width, height = slide.dimensions
        use_mpp = slide_mpp(path, slide, mpp, default_mpp)
        target = model_mpp or use_mpp
        r = use_mpp / target  # model px per level-0 px
        thumb, scale = slide.thumbnail()
        tissue = tissue_mask(thumb)
        if roi is not None:
            check_roi_extent(roi, width, height, f"{path}: {roi_name}")
            tissue &= rasterize(list(roi), tissue.shape, scale)
        mw, mh = math.ceil(width * r), math.ceil(height * r)
        cores = tissue_tiles(tissue, scale / r, mw, mh, tile)
        level = slide.best_level(1.0 / r)
        f = 1.0 / (r * slide.levels[level].downsample)
        normalizer = getattr(detector, "normalizer", None)
        colour = {"colour": normalizer.estimate(thumb, tissue)} if normalizer else {}
        found: list[Detection] = []
        out = SlideDetections(found, int(width), int(height), float(use_mpp),
                              not (mpp or slide.mpp), thumb, scale, tissue, 0, len(cores),
                              made_by=provenance_of(detector), **classes_of(detector))
        seen: list[Seen] = []
        try:
            for k, (cx, cy) in enumerate(cores):
                box = (max(0, cx - margin), max(0, cy - margin),
                       min(mw, cx + tile + margin), min(mh, cy + tile + margin))
                e = SEAM_TOLERANCE
                for d in detect_as_given(detector, _read_tile(slide, level, f, box), target,
                                         **colour):
                    gx, gy = d.x + box[0], d.y + box[1]
                    if cx - e <= gx < cx + tile + e and cy - e <= gy < cy + tile + e:
                        seen.append(Seen(k, gx, gy, d))
                out.tiles_done += 1
                if on_tile is not None:
                    on_tile(out.tiles_done, len(cores))
        except KeyboardInterrupt:
            out.interrupted = True
        done = set(cores[:out.tiles_done])
        found.extend(replace(s.det, x=(s.gx + 0.5) / r - 0.5, y=(s.gy + 0.5) / r - 0.5,
                             area=s.det.area / (r * r))
                     for s in merge_seams(seen, cores, done, tile))
    return out


#: model px: two tiles' estimates of one object's centre may differ by this much across their
#: seam (each tile is resampled from the slide on its own pixel phase, so the same object's
#: pixel values, hence its centre, differ slightly between the two)
SEAM_TOLERANCE = 1.0


@dataclass(frozen=True)
class Seen:
    """A detection of tile ``tile`` (index into the cores) at ``gx, gy`` model px."""

    tile: int
    gx: float
    gy: float
    det: Detection


def merge_seams(seen: Sequence[Seen], cores: Sequence[tuple[int, int]],
                done: set[tuple[int, int]], tile: int) -> list[Seen]:
    """The detections to count, in tile order: each object once, by the tile whose core holds
    its centre (cores: top-left corners on a ``tile``-px grid; ``done``: the cores run).

    ``seen`` holds each tile's detections whose centre lies in its core widened by
    :data:`SEAM_TOLERANCE`. A centre in its own core is kept, unless another tile's estimate
    of it (within the tolerance) was kept already: two tiles can each place an object lying on
    their seam inside their own core. A centre in the widened band only is kept when the tile
    whose core holds it ran and kept no estimate within the tolerance (both tiles can also
    place it just outside their own core). Detections further than the tolerance from every
    seam are kept as they come."""
    e = SEAM_TOLERANCE
    owned = [cores[s.tile][0] <= s.gx < cores[s.tile][0] + tile
             and cores[s.tile][1] <= s.gy < cores[s.tile][1] + tile for s in seen]

    def near_seam(s: Seen) -> bool:
        fx, fy = s.gx % tile, s.gy % tile
        return min(fx, tile - fx) < e or min(fy, tile - fy) < e

    keep = [own and not near_seam(s) for s, own in zip(seen, owned)]
    kept_near: list[Seen] = []
    near = [i for i, s in enumerate(seen) if not keep[i] and near_seam(s)]
    for i in sorted(near, key=lambda i: not owned[i]):  # own-core estimates first
        s = seen[i]
        home = (int(s.gx // tile) * tile, int(s.gy // tile) * tile)
        if not owned[i] and home not in done:
            continue  # its centre belongs to a tile not run (no tissue there, or Ctrl-C)
        if any(o.tile != s.tile and abs(o.gx - s.gx) <= e and abs(o.gy - s.gy) <= e
               for o in kept_near):
            continue
        kept_near.append(s)
        keep[i] = True
    return [s for s, k in zip(seen, keep) if k]


def write_slide(item: Item, found: SlideDetections, writers: Mapping[str, Any], out: Path,
                *, label: str | None = None, overlay: bool = True,
                extra: Callable[[SlideOutput], list[str]] | None = None
                ) -> tuple[list[Path], list[str]]:
    """Write what ``partsup predict`` writes for a slide: every format (level-0 px), the
    overlay (on the thumbnail), ``<id>.tissue.png`` and what ``extra`` (the plugins) adds.
    Returns the files written and ``extra``'s lines. A failure (a full disk, Ctrl-C) removes
    the files written so far, then raises."""
    info = {"image": item.id, "width": found.width, "height": found.height,
            "mpp": found.mpp, "source": str(item.path), **({"label": label} if label else {}),
            **({"classes": found.prob_classes} if found.prob_classes is not None else {}),
            **found.made_by}
    dets = found.detections
    xy = np.array([(d.x, d.y, d.score) for d in dets], np.float64).reshape(-1, 3)
    planned = [out / f"{item.id}{w.suffix}" for w in writers.values()]
    check_not_foreign(out, [*planned, out / f"{item.id}.tissue.png",
                            out / f"{item.id}.overlay.png"])
    outputs: list[Path] = []
    slide_out = SlideOutput(item.id, out, found.width, found.height, found.mpp, xy,
                            found.thumbnail, found.scale, found.tissue, label, outputs, dets,
                            found.classes)
    try:
        for writer in writers.values():
            outputs.append(unlink_link(out / f"{item.id}{writer.suffix}"))
            writer.write(outputs[-1], dets, info)
        outputs.append(out / f"{item.id}.tissue.png")
        _save_mask(outputs[-1], found.tissue)
        if overlay:
            outputs.append(out / f"{item.id}.overlay.png")
            s = found.scale
            small = [replace(d, x=d.x * s, y=d.y * s, area=d.area * s * s) for d in dets]
            write_overlay(outputs[-1], found.thumbnail, small)
        lines = extra(slide_out) if extra is not None else []
    except BaseException:  # a failed slide leaves no files behind (a full disk, Ctrl-C)
        for path in outputs:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    record_owned(out, outputs, "partsup predict")
    return outputs, list(lines)


def predict_slide(item: Item, detector: DetectorLike, writers: Mapping[str, Any], out: Path,
                  *, mpp: float | None = None, default_mpp: float | None = None,
                  model_mpp: float | None = None, label: str | None = None,
                  roi: Sequence[Sequence[np.ndarray]] | None = None, tile: int = 1024,
                  margin: int = 64, overlay: bool = True,
                  on_tile: Callable[[int, int], None] | None = None,
                  extra: Callable[[SlideOutput], list[str]] | None = None,
                  roi_name: str = "roi") -> Result:
    """Detect on the tissue of one slide (:func:`detect_slide`), then write every format
    (level-0 px), the overlay (on the thumbnail), ``<id>.tissue.png`` and what ``extra`` (the
    plugins) adds (:func:`write_slide`): ``partsup predict`` on a slide.

    The slide's um/px is ``mpp``, else the file's, else ``default_mpp`` (then
    ``Result.mpp_assumed``); tiles are resampled to ``model_mpp`` (None: read as they are).
    ``margin`` model px of context around each core tile must exceed an object's radius.
    A detector with a colour ``normalizer`` maps every tile by one estimate, made from the
    thumbnail's tissue.
    ``on_tile(done, total)`` is called after each tile."""
    t0 = time.perf_counter()
    found = detect_slide(item.path, detector, mpp=mpp, default_mpp=default_mpp,
                         model_mpp=model_mpp, roi=roi, tile=tile, margin=margin, on_tile=on_tile,
                         roi_name=roi_name)
    return slide_result(item, found, writers, out, t0, label=label, overlay=overlay,
                        extra=extra, in_roi=roi is not None)


def slide_result(item: Item, found: SlideDetections, writers: Mapping[str, Any], out: Path,
                 t0: float, *, label: str | None = None, overlay: bool = True,
                 extra: Callable[[SlideOutput], list[str]] | None = None, in_roi: bool = False
                 ) -> Result:
    """The :class:`Result` of a slide whose detections are ``found`` (started at ``t0``,
    ``time.perf_counter``): its files (:func:`write_slide`), count and lines (the summary
    line, each class's count after a labelling second look, then ``extra``'s)."""
    result = Result(item, mpp_assumed=found.mpp_assumed, interrupted=found.interrupted)
    result.count = ImageCount(item.id, len(found.detections), found.width, found.height,
                              found.mpp, found.classes)
    outputs, lines = write_slide(item, found, writers, out, label=label, overlay=overlay,
                                 extra=extra)
    result.outputs.extend(outputs)
    result.lines.extend(slide_lines(item.id, found, in_roi, lines))
    result.seconds = time.perf_counter() - t0
    return result


def slide_lines(name: str, found: SlideDetections, in_roi: bool = False,
                extra: Sequence[str] = ()) -> list[str]:
    """What a slide prints: :func:`summary_line`, each class's count and fraction after a
    labelling second look (``<name>: N detections: a <class1> (x%), ...``), then ``extra``
    (the plugins' lines)."""
    by_class = class_line(found.classes, len(found.detections))
    return [summary_line(name, found, in_roi), *([f"{name}: {by_class}"] if by_class else []),
            *extra]


def summary_line(name: str, found: SlideDetections, in_roi: bool = False) -> str:
    """``<name>: N detections on D of T tissue tiles (P% of the slide is tissue)``; given
    points (``--at``): ``<name>: N given points classified in D of T regions (...)``."""
    what = (f"{len(found.detections)} given points classified in {found.tiles_done} of "
            f"{found.tiles} regions" if found.given else
            f"{len(found.detections)} detections on {found.tiles_done} of {found.tiles} "
            f"tissue tiles")
    return (f"{name}: {what} ({found.tissue.mean() * 100:.1f}% of the slide is "
            f"tissue{' in the ROI' if in_roi else ''})"
            + (" [interrupted: outputs hold the tiles done]" if found.interrupted else ""))


def _save_mask(path: Path, mask: np.ndarray) -> None:
    from PIL import Image
    save_png(path, Image.fromarray(mask.astype(np.uint8) * 255))
