"""Reading multi-level slides (Aperio SVS, Hamamatsu NDPI, generic multi-level (pyramid) TIFF) region by
region with tifffile (MIRAX ``.mrxs``, DICOM ``.dcm`` and the other formats only OpenSlide reads:
:mod:`partsup.slides.openslide_reader`, through :func:`open_slide`), decoding only the tiles (or strips) that a region touches, so memory is
bounded by the region asked for, not by the slide.

Coordinates: ``x`` = column, ``y`` = row, in pixels of the level asked for; level 0 is the
full resolution. ``downsample`` = level-0 px per level px. ``mpp`` = micrometres per level-0
pixel (None when the file does not record a plausible one).
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np

from partsup.errors import DataError
from partsup.slides.levels import Level, SlideBase, first_line
from partsup.slides.mpp import tiff_mpp
from partsup.slides.openslide_reader import OPENSLIDE_SUFFIXES

#: file endings read as slides whatever their number of levels (the last ones through OpenSlide)
SLIDE_SUFFIXES = (".svs", ".ndpi", *OPENSLIDE_SUFFIXES)
#: endings read as slides when the file holds a pyramid (more than one level)
PYRAMID_SUFFIXES = (".tif", ".tiff")


def dicom_series(path: Path) -> str | None:
    """The Series Instance UID (0020,000E) of a DICOM file, else None: looked up in its first
    64 KiB (whole-slide DICOM is explicit VR little endian and its tags are sorted, so the UID
    comes before the optical path's ICC profile and the pixels)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    at = head.find(b"\x20\x00\x0e\x00UI") if head[128:132] == b"DICM" else -1
    if at < 0:
        return None
    size = int.from_bytes(head[at + 6: at + 8], "little")
    return head[at + 8: at + 8 + size].rstrip(b"\x00 ").decode("ascii", "replace") or None


@functools.lru_cache(maxsize=64)
def _dicom_firsts(folder: Path, mtime_ns: int) -> frozenset[Path]:
    """The first ``.dcm`` file (by name) of each DICOM series in ``folder``."""
    firsts: dict[object, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.suffix.lower() == ".dcm" and f.is_file():
            firsts.setdefault(dicom_series(f) or f, f)
    return frozenset(firsts.values())


def listed_slide(path: Path) -> bool:
    """Whether a file found in a folder is a slide input of its own: a slide ending
    (:data:`SLIDE_SUFFIXES`), and for DICOM (``.dcm``, one file per level or per associated
    image) only the first file of each series in its folder: OpenSlide opens the whole series
    from it. A file named directly is always an input."""
    suffix = path.suffix.lower()
    if suffix != ".dcm":
        return suffix in SLIDE_SUFFIXES
    try:
        return path in _dicom_firsts(path.parent, path.parent.stat().st_mtime_ns)
    except OSError:
        return True


def is_slide(path: Path) -> bool:
    """True for ``.svs``/``.ndpi`` (and OpenSlide's ``.mrxs``, ``.dcm`` ...) files and for
    ``.tif``/``.tiff`` files holding a pyramid."""
    suffix = path.suffix.lower()
    if suffix in SLIDE_SUFFIXES:
        return True
    if suffix not in PYRAMID_SUFFIXES or not path.is_file():
        return False
    try:
        import tifffile
        with tifffile.TiffFile(path) as tif:
            return len(tif.series[0].levels) > 1
    except Exception:  # not a readable TIFF: the image reader reports it
        return False


def file_mpp(path: str | Path) -> float | None:
    """um/px recorded in the image or slide file ``path``, or None; one rule for images and
    slides. A slide's is its reader's ``mpp`` (tifffile: :func:`partsup.slides.mpp.tiff_mpp`;
    OpenSlide: ``openslide.mpp-x``, e.g. DICOM's pixel spacing); a ``.tif``/``.tiff`` image's is
    :func:`partsup.slides.mpp.tiff_mpp`: Aperio ``MPP = x``, OME-XML ``PhysicalSizeX`` (um, nm,
    mm ...), else X resolution per inch, cm, mm or um (or per an ImageJ ``unit=``); plausible
    values 0.05..5 um/px only. None for other files. Metadata is a convenience: an unreadable
    file gives None (its reader reports it)."""
    path = Path(path)
    try:
        if is_slide(path):
            with open_slide(path) as slide:
                return slide.mpp
        if path.suffix.lower() not in PYRAMID_SUFFIXES:
            return None
        import tifffile
        with tifffile.TiffFile(path) as tif:
            return tiff_mpp(tif)
    except Exception:
        return None


class SlideReader(SlideBase):
    """A multi-level (pyramid) TIFF opened for region reads. Use as a context manager or call close()."""

    def __init__(self, path: str | Path) -> None:
        import tifffile
        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
            series = self._tif.series[0]
            self._pages = [lv.keyframe for lv in series.levels]
        except Exception as exc:
            raise DataError(f"{self.path}: cannot read slide ({first_line(exc)})") from exc
        base = self._pages[0]
        if base.imagewidth < 1 or base.imagelength < 1:
            raise DataError(f"{self.path}: empty slide")
        self.levels = [Level(int(p.imagewidth), int(p.imagelength),
                             base.imagewidth / p.imagewidth) for p in self._pages]
        try:
            self.mpp = tiff_mpp(self._tif)
        except Exception:  # metadata is a convenience: never fail the slide on it
            self.mpp = None

    def close(self) -> None:
        self._tif.close()

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """``(height, width, 3)`` uint8 RGB of the given box of ``level`` (clipped to the level;
        outside is white). Only the tiles or strips the box touches are read and decoded."""
        page = self._pages[level]
        lv = self.levels[level]
        out = np.full((height, width, 3), 255, np.uint8)
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(lv.width, x + width), min(lv.height, y + height)
        if x1 <= x0 or y1 <= y0:
            return out
        if page.is_tiled:
            th, tw = int(page.tilelength), int(page.tilewidth)
        else:
            th, tw = int(page.rowsperstrip or lv.height), lv.width
        across = math.ceil(lv.width / tw)
        fh = self._tif.filehandle
        for ty in range(y0 // th, (y1 - 1) // th + 1):
            for tx in range(x0 // tw, (x1 - 1) // tw + 1):
                index = ty * across + tx
                offset, count = page.dataoffsets[index], page.databytecounts[index]
                if count == 0:
                    continue
                fh.seek(offset)
                data = fh.read(count)
                try:
                    seg, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
                except Exception as exc:  # e.g. JPEG tiles without imagecodecs
                    raise DataError(f"{self.path}: cannot decode level {level} tile {index} "
                                    f"({first_line(exc)}); JPEG / JPEG 2000 slides need "
                                    f"pip install imagecodecs (partsup[slides])") from exc
                seg = _rgb(np.asarray(seg).reshape(seg.shape[-3:]))
                sy, sx = ty * th, tx * tw
                # the part of the segment inside both the box and the level
                gy0, gy1 = max(sy, y0), min(sy + seg.shape[0], y1)
                gx0, gx1 = max(sx, x0), min(sx + seg.shape[1], x1)
                if gy1 > gy0 and gx1 > gx0:
                    out[gy0 - y: gy1 - y, gx0 - x: gx1 - x] = seg[gy0 - sy: gy1 - sy,
                                                                gx0 - sx: gx1 - sx]
        return out


def open_slide(path: str | Path) -> Any:
    """The reader for a slide: :class:`SlideReader` (tifffile), or for the formats only
    OpenSlide reads (``.mrxs`` ...) and with ``PARTSUP_SLIDE_BACKEND=openslide``
    :class:`partsup.slides.openslide_reader.OpenSlideReader`; both have the same methods.

    Raises:
        DataError: unreadable slide, or OpenSlide needed but not installed (says how).
    """
    from partsup.slides.openslide_reader import OpenSlideReader, wants_openslide
    path = Path(path)
    return OpenSlideReader(path) if wants_openslide(path) else SlideReader(path)


def _rgb(seg: np.ndarray) -> np.ndarray:
    """A decoded segment ``(h, w, samples)`` as uint8 RGB."""
    if seg.dtype != np.uint8:
        seg = (seg.astype(np.float64) / np.iinfo(seg.dtype).max * 255).astype(np.uint8) \
            if np.issubdtype(seg.dtype, np.integer) else np.clip(seg * 255, 0, 255).astype(np.uint8)
    if seg.shape[-1] == 1:
        return np.repeat(seg, 3, axis=-1)
    return seg[..., :3]
