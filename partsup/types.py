"""Plain data types passed between parts. Coordinates are pixels, x = column, y = row."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: class value of "ignore" pixels in label maps (uint8) and targets (int64)
IGNORE_INDEX = 255


def _points(a: object = None) -> np.ndarray:
    arr = np.zeros((0, 2), np.float32) if a is None else np.asarray(a, np.float32).reshape(-1, 2)
    return arr


@dataclass
class Sample:
    """One image with its annotations.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        points: ``(N, 2)`` float32 object centroids, x (column), y (row), pixels.
        mask: ``(H, W)`` uint8 strong mask (1 = object) for set-A samples, else None.
        hard_negatives: ``(M, 2)`` float32 x, y of labelled look-alikes (never ground truth).
        mpp: micrometres per pixel.
        id: stable identifier (e.g. ``case/tile``), used for output file names.
        group: the slide / case / patient, for splitting without leakage.
        point_labels: one class name per point (e.g. from a reader that knows each object's
            class); empty when no class is known.
    """

    image: np.ndarray
    points: np.ndarray = field(default_factory=_points)
    mask: np.ndarray | None = None
    hard_negatives: np.ndarray = field(default_factory=_points)
    mpp: float = 0.25
    id: str = ""
    group: str = ""
    point_labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.points = _points(self.points)
        self.hard_negatives = _points(self.hard_negatives)
        self.point_labels = tuple(str(c) for c in self.point_labels)
        if self.point_labels and len(self.point_labels) != len(self.points):
            raise ValueError(f"Sample {self.id!r}: {len(self.point_labels)} point labels for "
                             f"{len(self.points)} points")


@dataclass
class Detection:
    """One detected object: centroid x, y (pixels), score in [0, 1], area (pixels).

    A second look (a crop classifier, :mod:`partsup.inference.second_look`) adds ``label``, the
    class its labelling head gives (None: none), and ``probs``, ``class name -> probability``
    for every class of every head (class names are unique across heads; writers show them as
    ``p_<class>``). Without a second look both stay empty and every writer writes what it
    always did.
    """

    x: float
    y: float
    score: float
    area: float
    label: str | None = None
    probs: dict[str, float] = field(default_factory=dict)


@dataclass
class Blobs:
    """Candidate blobs of one image (arrays of length K), before filtering.

    ``x``, ``y`` probability-weighted centroids (px); ``score`` mean probability; ``area`` px;
    ``labels`` the ``(H, W)`` int32 label image the blobs came from (0 = background).
    """

    x: np.ndarray
    y: np.ndarray
    score: np.ndarray
    area: np.ndarray
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol: match radius in micrometres (or pixels when ``radius_px`` is set)."""

    name: str
    radius_um: float
    radius_px: float | None = None
    description: str = ""

    def radius_for(self, mpp: float) -> float:
        """Match radius in pixels for an image of ``mpp`` micrometres per pixel."""
        return self.radius_px if self.radius_px is not None else self.radius_um / mpp
