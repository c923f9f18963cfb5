"""Slides through OpenSlide (optional: ``pip install 'partsup[openslide]'``, the openslide-bin
and openslide-python wheels): the formats tifffile cannot read, above all 3DHISTECH MIRAX
(``.mrxs``, a small index file beside a folder of data files), DICOM whole-slide images
(``.dcm``: OpenSlide 4 opens the series from any one of its files, the others in the same
folder), and any slide when
``PARTSUP_SLIDE_BACKEND=openslide``. Same interface as :class:`partsup.slides.reader.SlideReader`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from partsup.errors import DataError
from partsup.slides.levels import Level, SlideBase, first_line
from partsup.slides.mpp import plausible

#: file endings only OpenSlide reads (MIRAX, Hamamatsu VMS/VMU, Leica SCN, Ventana BIF, DICOM)
OPENSLIDE_SUFFIXES = (".mrxs", ".vms", ".vmu", ".scn", ".bif", ".dcm")

INSTALL = "pip install 'partsup[openslide]' (the openslide-bin and openslide-python wheels)"


def wants_openslide(path: Path) -> bool:
    """Whether ``path`` is read through OpenSlide: its format needs it, or the environment
    variable ``PARTSUP_SLIDE_BACKEND`` is ``openslide``."""
    return (path.suffix.lower() in OPENSLIDE_SUFFIXES
            or os.environ.get("PARTSUP_SLIDE_BACKEND", "").lower() == "openslide")


def _mpp(props: dict[str, str]) -> float | None:
    """``openslide.mpp-x`` (DICOM: the pixel spacing in mm x 1000), when plausible."""
    try:
        return plausible(float(props.get("openslide.mpp-x", "")))
    except ValueError:
        return None


class OpenSlideReader(SlideBase):
    """A slide opened with OpenSlide for region reads (context manager, or call close())."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            import openslide
        except ImportError:
            raise DataError(f"{self.path}: reading this slide needs OpenSlide: {INSTALL}"
                            ) from None
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except Exception as exc:  # OpenSlideUnsupportedFormatError, OpenSlideError, OSError
            raise DataError(f"{self.path}: cannot read slide ({first_line(exc)})") from exc
        self.levels = [Level(int(w), int(h), float(d)) for (w, h), d in
                       zip(self._slide.level_dimensions, self._slide.level_downsamples)]
        self.mpp = _mpp(dict(self._slide.properties))

    def close(self) -> None:
        self._slide.close()

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """``(height, width, 3)`` uint8 RGB of the box of ``level`` (``x``, ``y`` in that
        level's px); outside the slide and transparent pixels are white."""
        lv = self.levels[level]
        # OpenSlide takes the box's corner in level-0 px and its size in level px
        x0, y0 = int(round(x * lv.downsample)), int(round(y * lv.downsample))
        rgba = np.asarray(self._slide.read_region((x0, y0), level, (width, height)))
        alpha = rgba[..., 3:4].astype(np.float32) / 255.0
        rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.round(rgb).astype(np.uint8)
