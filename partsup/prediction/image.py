"""One image: read it (with the um/px its file records), detect (resampled to the model's um/px
when they differ; or, with ``--at``, classify given points), write every format and the
overlay; a failed image leaves no files.

Benchmarks and other tools call :func:`predict_one` directly. Units: image sizes in px, ``mpp``
in micrometres per pixel.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from partsup.data.images import read_image
from partsup.errors import DataError
from partsup.output.atomic import unlink_link
from partsup.prediction.counts import ImageCount, count_classes
from partsup.prediction.inputs import Item
from partsup.prediction.points import look_classes, points_file, read_points, second_look_of
from partsup.prediction.result import DetectorLike, Result, provenance_of
from partsup.slides.reader import file_mpp
from partsup.types import Detection


def read_input(path: Path) -> tuple[np.ndarray, float | None]:
    """``(image (H, W, 3) uint8 RGB, mpp recorded in the file or None)``
    (:func:`partsup.slides.reader.file_mpp`)."""
    return read_image(path), file_mpp(path)


def write_overlay(path: Path, image: np.ndarray, detections: Sequence[Detection],
                  max_side: int = 2048) -> Path:  # overlay.MAX_SIDE
    """Save ``image`` (downsampled by an integer stride to <= ``max_side`` px) with a circle
    around each detection (radius from its area, at least 12 px of the full image) and a legend
    with their number in the top-left corner."""
    from PIL import ImageDraw

    from partsup.evaluation.overlay import downsampled_canvas, legend_band
    small, stride = downsampled_canvas(image, max_side)
    draw = ImageDraw.Draw(small)
    width = max(2, round(3 / stride * 2))
    for d in detections:
        r = max(12.0, 1.6 * float(np.sqrt(max(d.area, 0.0) / np.pi))) / stride + width
        x, y = d.x / stride, d.y / stride
        draw.ellipse([x - r, y - r, x + r, y + r], outline=(0, 230, 90), width=width)
    n = len(detections)
    legend_band(draw, [(f"{n} detection{'s' if n != 1 else ''} (green circles)",
                        (0, 230, 90))], max(small.size))
    save_png(path, small)
    return path


def save_png(path: Path, image: Any) -> Path:
    """Save the PIL ``image`` as PNG at ``path`` (folders created) through a temporary file
    that replaces it: a symbolic link at ``path`` is replaced, never written through."""
    from partsup.output.atomic import replacing
    with replacing(path, "wb") as fh:
        image.save(fh, format="PNG")
    return path


def predict_one(item: Item, detector: DetectorLike, writers: Mapping[str, Any], out: Path,
                mpp: float | None, overlay: bool = True, default_mpp: float | None = None,
                label: str | None = None, model_mpp: float | None = None,
                at: Path | None = None) -> Result:
    """Read, detect, write every format (and the overlay) for one input; time it.

    The resolution used is ``mpp`` (um/px), else the one the file records, else ``default_mpp``
    (``Result.mpp_assumed`` then says so); with none of them the image fails (DataError).
    ``label`` (the detected objects' class name) goes to the writers as ``info["label"]``.
    An image whose um/px is known (given or recorded, not assumed) is resampled to
    ``model_mpp`` for detection when they differ by more than 1%; detections come back in the
    image's own pixels.

    ``at`` (``partsup predict --at DIR``): no detection; the points of ``DIR/<id>.csv`` (or
    another readable file, :func:`partsup.prediction.points.points_file`) are classified by
    the detector's second look (``Detector.classify``), one detection per point, in order.
    With a second look the writers get its classes (``info["classes"]``: the ``p_<class>``
    columns even for an image without detections) and the count its labels per class.

    Raises:
        DataError: no um/px; with ``at``: no points file, a point outside the image.
        PartsupError: ``at`` with a detector without a second look.
    """
    t0 = time.perf_counter()
    image, image_mpp = read_input(item.path)
    use_mpp = mpp or image_mpp or default_mpp
    if not use_mpp:
        raise DataError(f"{item.path}: no --mpp given and the image records no resolution "
                        f"(um/px); pass --mpp")
    known = mpp or image_mpp
    h, w = image.shape[:2]
    if at is not None:
        second_look_of(detector)
        readers = getattr(getattr(detector, "registries", None), "writers", None)
        points = read_points(points_file(at, item.id, readers), w, h, readers)
        detections = list(detector.classify(image, points, use_mpp))  # type: ignore[attr-defined]
    elif model_mpp and known and abs(known / model_mpp - 1.0) > 0.01:
        detections = detect_resampled(detector, image, known, model_mpp)
    else:
        detections = detect_as_given(detector, image, use_mpp)
    probs, labels = look_classes(detector)
    info = {"image": item.id, "width": int(w), "height": int(h), "mpp": float(use_mpp),
            "source": str(item.path), **({"label": label} if label else {}),
            **({"classes": probs} if probs is not None else {}), **provenance_of(detector)}
    count = ImageCount(item.id, len(detections), int(w), int(h), float(use_mpp),
                       count_classes((d.label for d in detections), labels))
    result = Result(item, count, mpp_assumed=not (mpp or image_mpp))
    try:
        for writer in writers.values():
            result.outputs.append(unlink_link(out / f"{item.id}{writer.suffix}"))
            writer.write(result.outputs[-1], detections, info)
        if overlay:
            result.outputs.append(out / f"{item.id}.overlay.png")
            write_overlay(result.outputs[-1], image, detections)
    except BaseException:  # a failed image leaves no files behind (a full disk, Ctrl-C)
        for path in result.outputs:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    result.seconds = time.perf_counter() - t0
    return result


def detect_resampled(detector: DetectorLike, image: np.ndarray, mpp: float,
                     model_mpp: float, colour: dict[str, Any] | None = None) -> list[Detection]:
    """Detect on ``image`` (``mpp`` um/px) resampled to ``model_mpp``; detections (x, y, area)
    in the image's own pixels (a second look's ``label`` and ``probs`` kept). ``colour``: the
    colour normaliser's estimate passed on to ``detector.detect`` (None: not passed)."""
    from PIL import Image
    r = mpp / model_mpp  # model px per image px
    h, w = image.shape[:2]
    size = (max(1, round(w * r)), max(1, round(h * r)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    rx, ry = size[0] / w, size[1] / h
    return [replace(d, x=(d.x + 0.5) / rx - 0.5, y=(d.y + 0.5) / ry - 0.5,
                    area=d.area / (rx * ry)) for d in detect_as_given(
                        detector, small, model_mpp,
                        **({} if colour is None else {"colour": colour}))]


def detect_as_given(detector: DetectorLike, image: np.ndarray, mpp: float, **kw: Any
                    ) -> list[Detection]:
    """``detector.detect(image, mpp, **kw)`` on ``image`` as it is: the pipeline resamples
    itself, so the Python API's :meth:`partsup.Detector.detect` (which resamples to the
    model's um/px) is bypassed through its ``detect_unresampled``."""
    raw = getattr(detector, "detect_unresampled", None) or detector.detect
    return list(raw(image, mpp, **kw))
