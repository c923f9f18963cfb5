"""Image files: decoding to RGB uint8, header sizes, finding and listing images.

:func:`read_image` decodes ``.tif/.tiff/.bmp/.png/.jpg/.jpeg`` into ``(H, W, 3)`` uint8 RGB
(grayscale is repeated, alpha dropped, 16-bit scaled down, float in [0, 1] scaled up; a
grayscale image, or 16-bit data that uses only 12 bits or fewer, is read with a
:class:`DataWarning`; an image larger than :func:`max_image_pixels` is refused);
:func:`image_size` reads only the header when the format allows. Unreadable files raise
:class:`partsup.errors.DataError` naming the file.
"""
from __future__ import annotations

import contextlib
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from partsup.errors import DataError

IMAGE_SUFFIXES = (".tif", ".tiff", ".bmp", ".png", ".jpg", ".jpeg")
_TIFF = (".tif", ".tiff")


class DataWarning(UserWarning):
    """Bad input skipped by a reader in non-strict mode (the message names the file and line)."""



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
    environment variable ``PARTSUP_MAX_IMAGE_PIXELS`` (a number, e.g. ``1e10``) when set.
    Checked against the header's size before any pixel is decoded."""
    env = os.environ.get("PARTSUP_MAX_IMAGE_PIXELS", "").strip()
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise DataError(f"PARTSUP_MAX_IMAGE_PIXELS: expected a number of pixels, got "
                            f"{env!r}") from None
    return 2 * int(_pillow_own_limit() or 0) or 2 ** 62


def _check_pixels(p: Path, h: int, w: int, limit: int) -> None:
    """Refuse an image of ``h`` x ``w`` px over ``limit`` px (one line naming file and limit)."""
    if h * w > limit:
        raise DataError(f"{p}: {w}x{h} px is more than the limit of {limit} px per image (it "
                        f"would need about {3 * h * w / 2 ** 30:.1f} GiB of memory); set "
                        f"PARTSUP_MAX_IMAGE_PIXELS to a larger number to read it anyway")


# Pillow's own limit is switched off while partsup opens a file (partsup checks its own limit,
# which may be larger); the value it had is kept here so that max_image_pixels() still reads it.
_pillow_lock = threading.Lock()
_pillow_users = 0
_pillow_saved: int | None = None


def _pillow_own_limit() -> int | None:
    """``PIL.Image.MAX_IMAGE_PIXELS`` as the user left it (not the None of :func:`_pillow_off`)."""
    from PIL import Image
    with _pillow_lock:
        return _pillow_saved if _pillow_users else Image.MAX_IMAGE_PIXELS


@contextlib.contextmanager
def _pillow_off() -> Any:
    """Pillow's decompression-bomb check off while the body runs (re-entrant, thread-safe); the
    body checks :func:`max_image_pixels` itself, from the header, before decoding."""
    global _pillow_users, _pillow_saved
    from PIL import Image
    with _pillow_lock:
        if _pillow_users == 0:
            _pillow_saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _pillow_users += 1
    try:
        yield
    finally:
        with _pillow_lock:
            _pillow_users -= 1
            if _pillow_users == 0:
                Image.MAX_IMAGE_PIXELS = _pillow_saved


def _decode(p: Path) -> np.ndarray:
    limit = max_image_pixels()  # before _pillow_off(), which hides Pillow's own limit
    if p.suffix.lower() in _TIFF:
        import tifffile
        try:
            with tifffile.TiffFile(p) as tif:
                page = tif.pages[0]
                _check_pixels(p, *_hw_from_shape(tuple(page.shape), p), limit)
                return page.asarray()
        except tifffile.TiffFileError:
            pass  # some TIFF variants are only readable by Pillow; try it below
    from PIL import Image
    with _pillow_off(), Image.open(p) as im:  # open() parses the header only
        _check_pixels(p, im.size[1], im.size[0], limit)
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
                      f"trained on colour images give unreliable detections on it",
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
        with _pillow_off(), Image.open(p) as im:  # the size of any image, big or not
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
