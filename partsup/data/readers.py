"""The shared machinery of dataset readers.

:class:`Reader` is the base of every dataset reader (core ``folder`` and the plugins'). A
subclass fills ``self.records`` (one :class:`Record` per image: path, points, hard negatives,
um/px, size when known) while parsing annotations; images are decoded only in ``reader[i]``
(:func:`partsup.data.images.read_image`). :class:`Problems` turns bad input into a DataError
(``strict``) or a warning. Also: header-less CSV parsing, group splits, mask images.
"""
from __future__ import annotations

import csv
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Sequence

import numpy as np

from partsup.data.images import DataWarning, image_size, read_image
from partsup.errors import DataError
from partsup.types import Sample

log = logging.getLogger(__name__)


class Problems:
    """Reports bad input: raises DataError when ``strict``, else warns (:class:`DataWarning`).

    ``report`` returns normally only in non-strict mode, so callers skip the bad item after it.
    """

    def __init__(self, reader: str, strict: bool) -> None:
        self.reader = reader
        self.strict = strict
        self.skipped: list[str] = []

    def report(self, message: str) -> None:
        if self.strict:
            raise DataError(f"{self.reader}: {message}")
        self.skipped.append(message)
        warnings.warn(f"{self.reader}: {message} (skipped; strict=False)", DataWarning,
                      stacklevel=3)


@dataclass
class Record:
    """Annotations of one image, parsed without decoding the image.

    Attributes:
        id: stable identifier, e.g. ``case/tile``.
        group: slide / case / patient for leakage-free splits.
        image_path: the image file (may be absent for readers whose annotations carry the size).
        points: ``(N, 2)`` float32 x, y object centroids in pixels.
        hard_negatives: ``(M, 2)`` float32 x, y of labelled look-alikes (hard negatives).
        mpp: micrometres per pixel.
        size: ``(H, W)`` when known without decoding (header or annotation file), else None.
        extra: reader-specific data (e.g. mask pixel lists, a mask file path).
        point_labels: one class name per point (``Sample.point_labels``); empty when no class
            is known.
    """

    id: str
    group: str
    image_path: Path
    points: np.ndarray
    hard_negatives: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    mpp: float = 0.25
    size: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    point_labels: tuple[str, ...] = ()


def as_points(rows: Sequence[Sequence[float]]) -> np.ndarray:
    """List of (x, y) -> ``(N, 2)`` float32 array (``(0, 2)`` when empty)."""
    return np.asarray(rows, np.float32).reshape(-1, 2)


class SampleSequence(Sequence[Sample]):
    """A lazy sequence of :class:`partsup.types.Sample` indexed one at a time (no slicing): the
    base of :class:`Reader` and of readers that do not keep :class:`Record` objects (e.g. ones
    that render their samples). Subclasses define ``__len__`` and :meth:`load_sample`."""

    NAME: ClassVar[str] = "reader"
    #: what one index names, in the error that refuses slicing
    ITEM: ClassVar[str] = "sample"

    def load_sample(self, i: int) -> Sample:
        """Sample ``i`` (decoded or rendered now)."""
        raise NotImplementedError

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        if isinstance(i, slice):
            raise TypeError(f"{self.NAME}: slicing is not supported; index one {self.ITEM} "
                            f"at a time")
        return self.load_sample(i)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]


class Reader(SampleSequence):
    """Base dataset reader: a lazy sequence of :class:`partsup.types.Sample`.

    Subclasses set ``NAME``, ``LAYOUT`` (the files expected) and ``SOURCE`` (where the data is
    obtained), both shown by ``partsup datasets`` and in missing-root errors, and fill
    ``self.records`` with :class:`Record` objects while parsing, using ``self.problems`` for bad
    input. Cheap accessors (:meth:`points`, :meth:`hard_negatives`, :meth:`image_path`,
    :meth:`size`) never decode images.
    """

    NAME: ClassVar[str] = "reader"
    LAYOUT: ClassVar[str] = ""
    SOURCE: ClassVar[str] = ""
    SPLITS: ClassVar[tuple[str, ...]] = ("train", "val", "test", "all")
    #: px a point may lie outside the image and still be kept (clamped to the border)
    edge_tolerance: float = 2.0

    def __init__(self, root: str | Path, split: str = "train", strict: bool = True,
                 edge_tolerance: float | None = None) -> None:
        self.root = Path(root).expanduser()
        if edge_tolerance is not None:
            self.edge_tolerance = float(edge_tolerance)
        self.split = split
        self.strict = strict
        self.problems = Problems(self.NAME, strict)
        if split not in self.SPLITS:
            raise DataError(f"{self.NAME}: unknown split {split!r}; expected one of "
                            f"{', '.join(self.SPLITS)}")
        if not self.root.exists():
            raise DataError(f"{self.NAME}: dataset root {self.root} not found. "
                            f"{layout_and_source(self)}")
        self.records: list[Record] = []

    # -- subclass hooks ---------------------------------------------------------------------
    def load_mask(self, record: Record, shape: tuple[int, int]) -> np.ndarray | None:
        """The ``(H, W)`` uint8 strong mask of ``record`` (1 = object), or None (no masks)."""
        return None

    # -- sequence -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def load_sample(self, i: int) -> Sample:
        rec = self.records[i]
        image = read_image(rec.image_path)
        h, w = image.shape[:2]
        if rec.size is not None and rec.size != (h, w):
            raise DataError(f"{rec.image_path}: image is {h}x{w} (HxW) but its annotations "
                            f"say {rec.size[0]}x{rec.size[1]}")
        return Sample(image=image, points=rec.points.copy(),
                      mask=self.load_mask(rec, (h, w)),
                      hard_negatives=rec.hard_negatives.copy(), mpp=rec.mpp,
                      id=rec.id, group=rec.group, point_labels=tuple(rec.point_labels))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
                f"images={len(self)}, points={self.num_points()})")

    # -- cheap accessors (no image decoding) --------------------------------------------------
    def points(self, i: int) -> np.ndarray:
        """``(N, 2)`` float32 x, y object centroids of image ``i`` (pixels)."""
        return self.records[i].points

    def hard_negatives(self, i: int) -> np.ndarray:
        """``(M, 2)`` float32 x, y hard negatives of image ``i`` (pixels)."""
        return self.records[i].hard_negatives

    def point_labels(self, i: int) -> tuple[str, ...]:
        """One class name per point of image ``i`` (empty when no class is known)."""
        return tuple(self.records[i].point_labels)

    def image_path(self, i: int) -> Path:
        return self.records[i].image_path

    def size(self, i: int) -> tuple[int, int] | None:
        """``(H, W)`` of image ``i`` if known without decoding, else None."""
        return self.records[i].size

    def mpp(self, i: int) -> float:
        return self.records[i].mpp

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    @property
    def groups(self) -> list[str]:
        return [r.group for r in self.records]

    def num_points(self) -> int:
        return int(sum(len(r.points) for r in self.records))

    # -- helpers for subclasses ---------------------------------------------------------------
    def header_size(self, path: Path) -> tuple[int, int] | None:
        """Image size from its header; a missing or unreadable image is reported (None)."""
        try:
            return image_size(path)
        except DataError as exc:
            self.problems.report(str(exc))
            return None

    def check_inside(self, xy: tuple[float, float], size: tuple[int, int] | None,
                     where: str) -> tuple[float, float] | None:
        """``xy`` if it lies on the image, ``[0, W-1] x [0, H-1]`` (px); up to ``edge_tolerance``
        px beyond the image's edges (``-tol <= x <= W + tol``, same for y), clamped to
        ``[0, W-1] x [0, H-1]``; farther out, reported (``where``) and None."""
        x, y = float(xy[0]), float(xy[1])
        if not (np.isfinite(x) and np.isfinite(y)):
            self.problems.report(f"{where}: non-finite point x={x}, y={y}")
            return None
        if size is None:
            return x, y
        h, w = size
        if 0 <= x <= w - 1 and 0 <= y <= h - 1:
            return x, y
        tol = self.edge_tolerance
        if -tol <= x <= w + tol and -tol <= y <= h + tol:
            return min(max(x, 0.0), w - 1.0), min(max(y, 0.0), h - 1.0)
        self.problems.report(f"{where}: point x={x:g}, y={y:g} lies outside the {h}x{w} "
                             f"(HxW) image")
        return None

    def missing_folder(self, path: Path, what: str) -> DataError:
        return DataError(f"{self.NAME}: {what} {path} not found. {layout_and_source(self)}")


def layout_and_source(reader: Any) -> str:
    """The help text for a reader class, instance or factory: ``"Expected layout:\n<LAYOUT>"``
    then ``"Where to get the data: <SOURCE>"`` (each left out when that attribute is empty)."""
    layout = (getattr(reader, "LAYOUT", "") or "").strip("\n")
    source = (getattr(reader, "SOURCE", "") or "").strip()
    parts = ([f"Expected layout:\n{layout}"] if layout else []) + \
        ([f"Where to get the data: {source}"] if source else [])
    return "\n".join(parts)


def read_csv_rows(path: Path, problems: Problems, min_fields: int,
                  parse: Callable[[list[str]], Any] | None = None,
                  allow_empty: bool = False) -> list[tuple[int, Any]] | None:
    """Read a header-less CSV: ``[(line_number, parse(fields)), ...]``.

    Blank lines are skipped. A line with fewer than ``min_fields`` fields or that ``parse``
    rejects (ValueError) is reported as malformed (file and line); in non-strict mode it is
    skipped. A file without any data line is reported unless ``allow_empty``. Returns None when
    the file cannot be read (after reporting it).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        problems.report(f"{path}: cannot read ({type(exc).__name__}: {exc})")
        return None
    rows: list[tuple[int, Any]] = []
    for lineno, fields in enumerate(csv.reader(text.splitlines()), start=1):
        fields = [f.strip() for f in fields]
        if not fields or all(not f for f in fields):
            continue
        try:
            if len(fields) < min_fields:
                raise ValueError(f"expected at least {min_fields} comma-separated values")
            rows.append((lineno, parse(fields) if parse else fields))
        except ValueError as exc:
            problems.report(f"{path}:{lineno}: malformed line {','.join(fields)[:80]!r} ({exc})")
    if not rows and not allow_empty and not text.strip():
        problems.report(f"{path}: empty label file (no annotation lines; if its image has "
                        f"no annotation, set the dataset option allow_empty: true)")
    return rows


def floats(fields: Sequence[str], n: int | None = None) -> list[float]:
    """Parse the first ``n`` fields (all when None) as finite floats; ValueError otherwise."""
    vals = [float(f) for f in (fields if n is None else fields[:n])]
    if not all(np.isfinite(vals)):
        raise ValueError("non-finite number")
    return vals


def group_split(names: Sequence[str], split: str, val: Sequence[str], test: Sequence[str],
                norm: Callable[[str], str] = str,
                train: Sequence[str] | None = None) -> list[str]:
    """Select group names for ``split`` (in the order of ``names``).

    ``val`` / ``test`` pick their lists; ``all`` is every name. ``train`` is the names listed in
    ``train`` when given, else every name in neither ``val`` nor ``test``. ``norm`` maps a name
    to the key names compare by (e.g. ``"01"`` == ``"1"``).
    """
    keys = {"val": {norm(v) for v in val}, "test": {norm(t) for t in test}}
    if split == "all":
        return list(names)
    if split in keys:
        return [n for n in names if norm(n) in keys[split]]
    if train is not None:
        train_n = {norm(t) for t in train}
        return [n for n in names if norm(n) in train_n]
    return [n for n in names if norm(n) not in keys["val"] and norm(n) not in keys["test"]]


def mask_from_path(path: Path) -> np.ndarray:
    """Read a mask image: ``(H, W)`` uint8, 1 where any channel is non-zero."""
    try:
        from PIL import Image
        with Image.open(path) as im:
            a = np.asarray(im)
    except FileNotFoundError:
        raise DataError(f"{path}: mask file not found") from None
    except Exception as exc:
        raise DataError(f"{path}: cannot read mask ({type(exc).__name__}: {exc})") from exc
    if a.ndim == 3:
        a = a[:, :, :3].max(axis=2) if a.shape[2] >= 3 else a[:, :, 0]
    return (a > 0).astype(np.uint8)


def mask_centroids(mask: np.ndarray) -> np.ndarray:
    """Centroids ``(K, 2)`` float32 x, y of the 8-connected components of a binary mask."""
    from scipy import ndimage
    labels, n = ndimage.label(mask > 0, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros((0, 2), np.float32)
    cy_cx = ndimage.center_of_mass(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    return np.asarray([(cx, cy) for cy, cx in cy_cx], np.float32).reshape(-1, 2)


def log_summary(reader: Reader) -> None:
    """Log one INFO line: reader name, split, images, points and skipped problems."""
    n_skip = len(reader.problems.skipped)
    log.info("%s %s: %d images, %d points%s", reader.NAME, reader.split, len(reader),
             reader.num_points(), f", {n_skip} problems skipped" if n_skip else "")
