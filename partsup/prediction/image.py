"""Predicting on users' image files: inputs, one image (read, detect, write every format and
the overlay), failures as one line, and counts per image.

The library side of ``partsup predict`` (:mod:`partsup.cli.commands.predict`); benchmarks and
other tools call :func:`predict_one` directly. Units: image sizes in px, ``mpp`` in micrometres
per pixel, areas in mm^2 (``area_mm2 = width * height * (mpp / 1000) ** 2``).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import numpy as np

from partsup.data.images import IMAGE_SUFFIXES, read_image
from partsup.errors import DataError, PartsupError
from partsup.types import Detection

def area_mm2(width: int, height: int, mpp: float) -> float:
    """Area of a ``width x height`` px image at ``mpp`` um/px, in mm^2."""
    if mpp is None or not mpp > 0:
        raise ValueError(f"mpp must be a positive number of um/px, got {mpp!r}")
    return float(width) * float(height) * (float(mpp) / 1000.0) ** 2


@dataclass(frozen=True)
class ImageCount:
    """The detection count of one image (``count`` detections on ``width x height`` px)."""

    name: str
    count: int
    width: int
    height: int
    mpp: float

    @property
    def area_mm2(self) -> float:
        return area_mm2(self.width, self.height, self.mpp)

    @property
    def per_mm2(self) -> float:
        """Detections per mm^2 of the image."""
        return self.count / self.area_mm2


@dataclass(frozen=True)
class SetCount:
    """Counts pooled over a set of images: ``total`` detections on ``area_mm2`` mm^2."""

    n_images: int
    total: int
    area_mm2: float

    @property
    def per_mm2(self) -> float:
        return self.total / self.area_mm2 if self.area_mm2 > 0 else float("nan")


def pool_counts(counts: Sequence[ImageCount]) -> SetCount:
    """Pool per-image counts into one :class:`SetCount`."""
    return SetCount(n_images=len(counts), total=sum(c.count for c in counts),
                    area_mm2=sum(c.area_mm2 for c in counts))


class DetectorLike(Protocol):
    def detect(self, image: np.ndarray, mpp: float) -> Sequence[Detection]: ...


@dataclass(frozen=True)
class Item:
    """One input: the file and its output id (relative path without extension, '/'-separated)."""

    path: Path
    id: str


@dataclass
class Result:
    """What predicting one input gave: its count (None if it failed) and timing."""

    item: Item
    count: ImageCount | None = None
    seconds: float = 0.0
    error: str = ""
    outputs: list[Path] = field(default_factory=list)
    mpp_assumed: bool = False
    #: Ctrl-C stopped a slide between tiles (its outputs hold the tiles done)
    interrupted: bool = False
    #: lines to print after the summary (slides: tiles, tissue, plugins' figures)
    lines: list[str] = field(default_factory=list)


# -- inputs ------------------------------------------------------------------------------------

def _is_image(path: Path) -> bool:
    from partsup.slides.reader import SLIDE_SUFFIXES
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES + SLIDE_SUFFIXES


def collect_inputs(paths: Iterable[str | Path], recursive: bool = False,
                   exclude: Path | None = None) -> tuple[list[Item], list[Item]]:
    """Expand files and folders into inputs.

    Returns ``(items, missing)``: ``missing`` are paths that do not exist (reported as failures).
    A file named directly is used whatever its ending (the reader decides); folders contribute
    their files with an image ending (:data:`IMAGE_SUFFIXES`), recursively with ``recursive``,
    except those inside ``exclude`` (the output folder: its overlays are not inputs).

    Raises:
        DataError: two inputs would write to the same output name.
    """
    items: list[Item] = []
    missing: list[Item] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = p.rglob("*") if recursive else p.iterdir()
            for f in sorted(f for f in found if _is_image(f) and not _inside(f, exclude)):
                items.append(Item(f, f.relative_to(p).with_suffix("").as_posix()))
        elif p.exists():
            items.append(Item(p, p.stem))
        else:
            missing.append(Item(p, p.stem))
    seen: dict[str, Path] = {}
    for it in items:
        if it.id in seen and seen[it.id] != it.path:
            raise DataError(f"{seen[it.id]} and {it.path} would both write outputs named "
                            f"{it.id!r}; predict them into separate --out folders")
        seen[it.id] = it.path
    return list({it.path: it for it in items}.values()), missing


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    root = Path(os.path.abspath(folder))
    return root in Path(os.path.abspath(path)).parents


def planned_outputs(items: Sequence[Item], writers: dict[str, Any], out: Path,
                    overlay: bool) -> list[Path]:
    """The files ``partsup predict`` will write for ``items`` (slides' plugin outputs aside)."""
    from partsup.slides.reader import is_slide
    paths = [out / "summary.csv"]
    for item in items:
        paths += [out / f"{item.id}{w.suffix}" for w in writers.values()]
        paths += [out / f"{item.id}.overlay.png"] if overlay else []
        paths += [out / f"{item.id}.tissue.png"] if is_slide(item.path) else []
    return paths


def check_output_folder(out: Path) -> None:
    """Prove that ``out`` can be created and written, before any model is loaded (a folder made
    for the proof is removed again: outputs create it when they are written).

    Raises:
        DataError: ``out`` is a file, or cannot be created or written (names it and why).
    """
    from partsup.output.outdir import os_reason
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a folder; choose a folder")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise DataError(f"cannot write to output folder {out}: {os_reason(exc)}") from exc
    finally:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()


# -- one image ---------------------------------------------------------------------------------

def tiff_mpp(path: Path) -> float | None:
    """um/px recorded in a TIFF (Aperio ``MPP = x`` description, or X resolution in
    pixels per cm / inch), when present and plausible (0.05..5 um/px); else None."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        import tifffile
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            desc = page.description or ""
            mpp = None
            if "MPP = " in desc:
                mpp = float(desc.split("MPP = ")[1].split("|")[0].split()[0])
            else:
                res, unit = page.tags.get("XResolution"), page.tags.get("ResolutionUnit")
                if res is not None and unit is not None:
                    num, den = res.value
                    per_um = {2: 25400.0, 3: 10000.0}.get(int(unit.value))
                    mpp = per_um * den / num if per_um and num else None
    except Exception:  # metadata is a convenience: never fail the image on it
        return None
    return mpp if mpp is not None and 0.05 <= mpp <= 5.0 else None


def read_input(path: Path) -> tuple[np.ndarray, float | None]:
    """``(image (H, W, 3) uint8 RGB, mpp recorded in the file or None)``."""
    return read_image(path), tiff_mpp(path)


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
    path.parent.mkdir(parents=True, exist_ok=True)
    small.save(path)
    return path


def predict_one(item: Item, detector: DetectorLike, writers: dict[str, Any], out: Path,
                mpp: float | None, overlay: bool = True, default_mpp: float | None = None,
                label: str | None = None, model_mpp: float | None = None) -> Result:
    """Read, detect, write every format (and the overlay) for one input; time it.

    The resolution used is ``mpp`` (um/px), else the one the file records, else ``default_mpp``
    (``Result.mpp_assumed`` then says so); with none of them the image fails (DataError).
    ``label`` (the detected objects' class name) goes to the writers as ``info["label"]``.
    An image whose um/px is known (given or recorded, not assumed) is resampled to
    ``model_mpp`` for detection when they differ by more than 1%; detections come back in the
    image's own pixels.
    """
    t0 = time.perf_counter()
    image, image_mpp = read_input(item.path)
    use_mpp = mpp or image_mpp or default_mpp
    if not use_mpp:
        raise DataError(f"{item.path}: no --mpp given and the image records no resolution "
                        f"(um/px); pass --mpp")
    known = mpp or image_mpp
    if model_mpp and known and abs(known / model_mpp - 1.0) > 0.01:
        detections = detect_resampled(detector, image, known, model_mpp)
    else:
        detections = list(detector.detect(image, use_mpp))
    h, w = image.shape[:2]
    info = {"image": item.id, "width": int(w), "height": int(h), "mpp": float(use_mpp),
            "source": str(item.path), **({"label": label} if label else {})}
    result = Result(item, ImageCount(item.id, len(detections), int(w), int(h), float(use_mpp)),
                    mpp_assumed=not (mpp or image_mpp))
    try:
        for writer in writers.values():
            result.outputs.append(out / f"{item.id}{writer.suffix}")
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
                     model_mpp: float) -> list[Detection]:
    """Detect on ``image`` (``mpp`` um/px) resampled to ``model_mpp``; detections (x, y, area)
    in the image's own pixels."""
    from PIL import Image
    r = mpp / model_mpp  # model px per image px
    h, w = image.shape[:2]
    size = (max(1, round(w * r)), max(1, round(h * r)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    rx, ry = size[0] / w, size[1] / h
    return [Detection((d.x + 0.5) / rx - 0.5, (d.y + 0.5) / ry - 0.5, d.score,
                      d.area / (rx * ry)) for d in detector.detect(small, model_mpp)]


def failure_message(path: Path, exc: BaseException) -> str:
    """One line naming ``path`` and what went wrong."""
    text = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename:
        from partsup.output.outdir import os_reason
        return f"{path}: cannot write {exc.filename}: {os_reason(exc)}"
    if not isinstance(exc, PartsupError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if (str(path) in text or path.name in text) else f"{path}: {text}"
