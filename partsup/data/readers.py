"""Image reading and the shared machinery of dataset readers.

Images: :func:`read_image` decodes ``.tif/.tiff/.bmp/.png/.jpg/.jpeg`` into ``(H, W, 3)`` uint8 RGB
(grayscale is repeated, alpha dropped, 16-bit scaled down, float in [0, 1] scaled up; a
grayscale image, or 16-bit data that uses only 12 bits or fewer, is read with a
:class:`DataWarning`; an image larger than :func:`max_image_pixels` is refused);
:func:`image_size` reads only the header when the format allows. Unreadable files raise
:class:`partsup.errors.DataError` naming the file.

Readers: :class:`Reader` is the base of every dataset reader (core ``folder`` and the mitosis
plugin's). A subclass fills ``self.records`` (one :class:`Record` per image: path, points, hard
negatives, um/px, size when known) while parsing annotations; images are decoded only in
``reader[i]``. :class:`Problems` turns bad input into a DataError (``strict``) or a warning.
"""
from __future__ import annotations

import contextlib
import csv
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Sequence

import numpy as np

from partsup.errors import DataError
from partsup.types import Sample

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".tif", ".tiff", ".bmp", ".png", ".jpg", ".jpeg")
_TIFF = (".tif", ".tiff")


class DataWarning(UserWarning):
    """Bad input skipped by a reader in non-strict mode (the message names the file and line)."""


# -- images -----------------------------------------------------------------------------------

def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file into ``(H, W, 3)`` uint8 RGB.

    Grayscale ``(H, W)`` or ``(H, W, 1)`` is repeated to 3 channels; RGBA/extra channels are
    dropped; uint16 is scaled by 1/257 (0..65535 -> 0..255); float images with max <= 1 are
    scaled by 255; channel-first TIFFs ``(3, H, W)`` are transposed; multi-page TIFFs give the
    first page. Raises DataError naming the file when it is missing, unreadable or corrupt.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: image file not found")
    try:
        arr = _decode(p)
    except DataError:
        raise
    except Exception as exc:  # decoder errors vary by library and format
        raise DataError(f"{p}: cannot read image ({type(exc).__name__}: {exc})") from exc
    return to_rgb_uint8(arr, p)


def max_image_pixels() -> int:
    """The most pixels (H x W) partsup reads from one image file, whatever its format: Pillow's
    decompression-bomb limit (``2 * PIL.Image.MAX_IMAGE_PIXELS``, about 179 million), or the
    environment variable ``PARTSUP_MAX_IMAGE_PIXELS`` (a number, e.g. ``1e10``) when set."""
    env = os.environ.get("PARTSUP_MAX_IMAGE_PIXELS", "").strip()
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise DataError(f"PARTSUP_MAX_IMAGE_PIXELS: expected a number of pixels, got "
                            f"{env!r}") from None
    from PIL import Image
    return 2 * int(Image.MAX_IMAGE_PIXELS or 0) or 2 ** 62


def _check_pixels(p: Path, h: int, w: int) -> None:
    limit = max_image_pixels()
    if h * w > limit:
        raise DataError(f"{p}: {w}x{h} px is more than the limit of {limit} px per image (it "
                        f"would need about {3 * h * w / 2 ** 30:.1f} GiB of memory); set "
                        f"PARTSUP_MAX_IMAGE_PIXELS to a larger number to read it anyway")


@contextlib.contextmanager
def _pillow_limit(limit: int) -> Any:
    """Pillow checks :func:`max_image_pixels` (not its own limit) while the body runs."""
    from PIL import Image
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _decode(p: Path) -> np.ndarray:
    if p.suffix.lower() in _TIFF:
        import tifffile
        try:
            with tifffile.TiffFile(p) as tif:
                page = tif.pages[0]
                _check_pixels(p, *_hw_from_shape(tuple(page.shape), p))
                return page.asarray()
        except tifffile.TiffFileError:
            pass  # some TIFF variants are only readable by Pillow; try it below
    from PIL import Image
    with _pillow_limit(max_image_pixels()), Image.open(p) as im:
        _check_pixels(p, im.size[1], im.size[0])
        im.load()
        if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
            im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
        return np.asarray(im)


def to_rgb_uint8(arr: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """Bring a decoded array to ``(H, W, 3)`` uint8 RGB (see :func:`read_image` for the rules)."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] < 1 or a.shape[0] == 0 or a.shape[1] == 0:
        raise DataError(f"{path}: unsupported image shape {a.shape} (expected H x W [x C])")
    if a.shape[2] <= 2:  # gray, or gray + alpha
        warnings.warn(f"{path}: grayscale image, read as RGB with three equal channels; models "
                      f"trained on colour (H&E) images give unreliable detections on it",
                      DataWarning, stacklevel=3)
        a = np.repeat(a[:, :, :1], 3, axis=2)
    else:
        a = a[:, :, :3]
    return _to_uint8(a, path)


def _to_uint8(a: np.ndarray, path: str | Path) -> np.ndarray:
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        top = int(a.max())
        if top < 4096:
            bits = max(1, top.bit_length())
            warnings.warn(f"{path}: 16-bit image whose values reach only {top} (of 65535): "
                          f"{bits}-bit data? It is scaled by 1/257 as 16-bit and will look "
                          f"almost black (few or no detections); convert it to 8-bit first, "
                          f"e.g. value * 255 / {2 ** bits - 1}", DataWarning, stacklevel=3)
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        f = a.astype(np.float32)
        if np.nanmax(f) <= 1.0:
            f = f * 255.0
        return np.clip(np.nan_to_num(f) + 0.5, 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        return np.clip(a, 0, 255).astype(np.uint8)
    raise DataError(f"{path}: unsupported pixel type {a.dtype}")


def image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image, from its header where possible (TIFF, BMP, PNG, JPEG).

    Raises DataError naming the file when it is missing or its header cannot be read.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: image file not found")
    try:
        if p.suffix.lower() in _TIFF:
            import tifffile
            try:
                with tifffile.TiffFile(p) as tif:
                    page = tif.pages[0]
                    return _hw_from_shape(tuple(page.shape), p)
            except tifffile.TiffFileError:
                pass
        from PIL import Image
        with Image.open(p) as im:
            w, h = im.size
            return int(h), int(w)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{p}: cannot read image header ({type(exc).__name__}: {exc})") from exc


def _hw_from_shape(shape: tuple[int, ...], p: Path) -> tuple[int, int]:
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 3:
        if shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4):
            return shape[1], shape[2]
        return shape[0], shape[1]
    raise DataError(f"{p}: unsupported image shape {shape}")


def find_image(folder: Path, stem: str, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> Path | None:
    """The file ``folder/stem.<suffix>`` for the first suffix that exists (any case), or None."""
    for suf in suffixes:
        for cand in (folder / f"{stem}{suf}", folder / f"{stem}{suf.upper()}"):
            if cand.is_file():
                return cand
    return None


def list_images(folder: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES,
                recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (sorted by path), matching ``suffixes`` case-insensitively."""
    it = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in suffixes)


# -- reader machinery -------------------------------------------------------------------------

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
        points: ``(N, 2)`` float32 x, y mitosis centroids in pixels.
        hard_negatives: ``(M, 2)`` float32 x, y of labelled non-mitoses.
        mpp: micrometres per pixel.
        size: ``(H, W)`` when known without decoding (header or annotation file), else None.
        extra: reader-specific data (e.g. mask pixel lists, a mask file path).
    """

    id: str
    group: str
    image_path: Path
    points: np.ndarray
    hard_negatives: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    mpp: float = 0.25
    size: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def as_points(rows: Sequence[Sequence[float]]) -> np.ndarray:
    """List of (x, y) -> ``(N, 2)`` float32 array (``(0, 2)`` when empty)."""
    return np.asarray(rows, np.float32).reshape(-1, 2)


class Reader(Sequence[Sample]):
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

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        if isinstance(i, slice):
            raise TypeError(f"{self.NAME}: slicing is not supported; index one sample at a time")
        rec = self.records[i]
        image = read_image(rec.image_path)
        h, w = image.shape[:2]
        if rec.size is not None and rec.size != (h, w):
            raise DataError(f"{rec.image_path}: image is {h}x{w} (HxW) but its annotations "
                            f"say {rec.size[0]}x{rec.size[1]}")
        return Sample(image=image, points=rec.points.copy(),
                      mask=self.load_mask(rec, (h, w)),
                      hard_negatives=rec.hard_negatives.copy(), mpp=rec.mpp,
                      id=rec.id, group=rec.group)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
                f"images={len(self)}, points={self.num_points()})")

    # -- cheap accessors (no image decoding) --------------------------------------------------
    def points(self, i: int) -> np.ndarray:
        """``(N, 2)`` float32 x, y mitosis centroids of image ``i`` (pixels)."""
        return self.records[i].points

    def hard_negatives(self, i: int) -> np.ndarray:
        """``(M, 2)`` float32 x, y labelled non-mitoses of image ``i`` (pixels)."""
        return self.records[i].hard_negatives

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
    n_skip = len(reader.problems.skipped)
    log.info("%s %s: %d images, %d points%s", reader.NAME, reader.split, len(reader),
             reader.num_points(), f", {n_skip} problems skipped" if n_skip else "")
