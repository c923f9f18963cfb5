"""Given points (``partsup predict --at DIR``): where an input's points file is, reading it,
and what a second look brings to the outputs (its classes).

``DIR/<image id>.csv`` (or ``.geojson``, or any format a registered writer reads back:
:func:`partsup.output.writers.locations`) holds x, y in px of the input's own pixels (level-0
px for a slide): the names and columns ``partsup predict`` writes, so its own output folder
can be given back. Units: px.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from partsup.errors import DataError, PartsupError

#: the one-line error when ``--at`` meets a detector without a second look
NO_SECOND_LOOK = ("--at needs a checkpoint with a second look (partsup calibrate "
                  "--second-look CLASSIFIER.pt attaches a crop classifier)")


def second_look_of(detector: Any) -> Any:
    """The detector's second look (:class:`partsup.inference.second_look.SecondLook`).

    Raises:
        PartsupError: the detector has none (:data:`NO_SECOND_LOOK`; an exported model never
        has one)."""
    look = getattr(detector, "second_look", None)
    if look is None:
        raise PartsupError(NO_SECOND_LOOK)
    return look


def look_classes(detector: Any) -> tuple[list[str] | None, tuple[str, ...]]:
    """``(every class of the detector's second look in head order: the writers' p_<class>
    columns, or None without a second look; the labelling head's classes, () without one)``."""
    look = getattr(detector, "second_look", None)
    if look is None:
        return None, ()
    rule = look.params.label
    return list(look.classes), (tuple(look.spec.heads[rule.head]) if rule is not None else ())


def points_file(at: Path, item_id: str, writers: Any = None) -> Path:
    """The file in ``at`` that holds the points of the input ``item_id``: the first that
    exists of :func:`partsup.output.writers.locations` (``<id>.csv``, ``<id>.geojson``, the
    other readable formats).

    Raises:
        DataError: none exists (one line naming the folder and the expected names)."""
    from partsup.output.writers import locations
    for path in locations(Path(at), item_id, writers):
        if path.is_file():
            return path
    raise DataError(f"--at {at}: no points for {item_id}: expected {Path(at) / item_id}.csv "
                    f"or {Path(at) / item_id}.geojson (x, y px; or another format predict "
                    f"writes)")


def read_points(path: Path, width: int, height: int, writers: Any = None) -> np.ndarray:
    """``(N, 2)`` float64 x, y px of a points file (any readable detection format), each
    inside the ``width x height`` px image.

    Raises:
        DataError: unreadable file, or a point outside the image (naming the first)."""
    from partsup.output.writers import read_detections
    xy = read_detections(path, writers=writers)[:, :2]
    outside = ~((xy[:, 0] >= -0.5) & (xy[:, 0] < width - 0.5)
                & (xy[:, 1] >= -0.5) & (xy[:, 1] < height - 0.5))
    if outside.any():
        x, y = xy[int(np.argmax(outside))]
        raise DataError(f"{path}: {int(outside.sum())} point(s) outside the {width}x{height} px "
                        f"image, e.g. ({x:g}, {y:g}); x, y are px of the image itself")
    return xy
