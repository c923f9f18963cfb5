"""``partsup predict``: detect mitoses in users' images and write them in the formats they need.

For every input image: read it (any size), run the checkpoint's detector (tiled), write one file
per requested format plus an overlay PNG, and count (per image, per mm^2). At the end a summary
table (and ``summary.csv``) with per-10-HPF counts for the whole set. A file that cannot be read
is reported by name and skipped (nothing is left behind for it); the exit code is then 1. The
output folder is checked before the model is loaded; folders are never searched inside it; a run
that predicted no image leaves ``summary.csv`` as it was.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Protocol, Sequence

import numpy as np
from rich.markup import escape
from rich.progress import TextColumn
from rich.table import Table

from partsup.cli.common import progress_bar
from partsup.counts import HPF_AREA_MM2, ImageCount, summarize
from partsup.errors import DataError, PartsupError
from partsup.data.readers import IMAGE_SUFFIXES, read_image
from partsup.types import Detection

if TYPE_CHECKING:
    import torch

#: mpp used when neither --mpp nor the image says (MIDOG / AMIDA13 scanners)
DEFAULT_MPP = 0.25
#: accepted --mpp (um/px) and --hpf-area (mm^2): wide, but finite and physically possible
MPP_RANGE = (0.01, 100.0)
HPF_AREA_RANGE = (0.001, 100.0)


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


# -- inputs ------------------------------------------------------------------------------------

def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


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


def check_range(option: str, value: float, low: float, high: float, unit: str) -> None:
    """PartsupError unless ``low <= value <= high`` (NaN and inf are refused)."""
    if not (math.isfinite(value) and low <= value <= high):
        raise PartsupError(f"{option} must be between {low:g} and {high:g} {unit}, got {value:g}")


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
                mpp: float | None, overlay: bool = True) -> Result:
    """Read, detect, write every format (and the overlay) for one input; time it."""
    t0 = time.perf_counter()
    image, image_mpp = read_input(item.path)
    use_mpp = mpp or image_mpp or DEFAULT_MPP
    detections = list(detector.detect(image, use_mpp))
    h, w = image.shape[:2]
    info = {"image": item.id, "width": int(w), "height": int(h), "mpp": float(use_mpp),
            "source": str(item.path)}
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


def failure_message(path: Path, exc: BaseException) -> str:
    """One line naming ``path`` and what went wrong."""
    text = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename:
        from partsup.output.outdir import os_reason
        return f"{path}: cannot write {exc.filename}: {os_reason(exc)}"
    if not isinstance(exc, PartsupError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if (str(path) in text or path.name in text) else f"{path}: {text}"


# -- the model ---------------------------------------------------------------------------------

def build_detector(checkpoint: Path, registries: Any, device: str | torch.device,
                   overrides: dict[str, Any]) -> DetectorLike:
    """The checkpoint's :class:`partsup.inference.detector.Detector` (:func:`partsup.inference.detector.load_detector`:
    recipe ``detect:`` values, then calibrated ones, then the non-None ``overrides``)."""
    from partsup.inference.detector import load_detector
    return load_detector(checkpoint, registries, device, **overrides)[0]


# -- the command -------------------------------------------------------------------------------

def parse_formats(text: str, registries: Any) -> dict[str, Any]:
    """``"csv,geojson"`` -> ``{name: writer}``; unknown names raise (listing the known ones)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise PartsupError("--format: give at least one format, e.g. csv,geojson")
    return {n: registries.writers.get(n, where="--format")() for n in dict.fromkeys(names)}


def summary_table(results: Sequence[Result], hpf_area: float) -> tuple[Table, list[str]]:
    table = Table(title="partsup predict", show_footer=False)
    for col, just in (("file", "left"), ("count", "right"), ("per mm²", "right"),
                      ("area mm²", "right"), ("time s", "right"), ("status", "left")):
        table.add_column(col, justify=just, overflow="fold")
    for r in results:
        if r.count is None:
            table.add_row(escape(str(r.item.path)), "-", "-", "-", f"{r.seconds:.2f}",
                          "[red]failed[/]")
        else:
            c = r.count
            table.add_row(escape(r.item.id), str(c.count), f"{c.per_mm2:.2f}",
                          f"{c.area_mm2:.3f}", f"{r.seconds:.2f}", "ok")
    counts = [r.count for r in results if r.count is not None]
    lines = []
    if counts:
        s = summarize(counts, hpf_area)
        lines.append(f"{s.total} mitoses in {s.n_images} image(s), {s.area_mm2:.3f} mm²: "
                     f"{s.per_mm2:.2f} per mm²")
        lines.append(f"per 10 HPFs: {s.per_10_images:.1f} (each image = 1 HPF); "
                     f"{s.per_10_hpf:.1f} (area-standardised, 10 HPFs = "
                     f"{10 * s.hpf_area_mm2:.2f} mm²)")
    assumed = sum(r.mpp_assumed for r in results)
    if assumed:
        lines.append(f"note: {DEFAULT_MPP} um/px assumed for {assumed} image(s) that record no "
                     f"resolution; set --mpp for correct per-mm² counts")
    return table, lines


def write_summary_csv(path: Path, results: Sequence[Result]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["file", "id", "status", "count", "width", "height", "mpp", "area_mm2",
                    "per_mm2", "seconds", "error"])
        for r in results:
            c = r.count
            if c is None:
                w.writerow([r.item.path, r.item.id, "failed", "", "", "", "", "", "",
                            f"{r.seconds:.3f}", r.error])
            else:
                w.writerow([r.item.path, r.item.id, "ok", c.count, c.width, c.height, c.mpp,
                            f"{c.area_mm2:.6f}", f"{c.per_mm2:.4f}", f"{r.seconds:.3f}", ""])
    return path


def resolve_checkpoint(given: Path | None, ctx: Any) -> Path:
    """``given``, or the checkpoint a plugin ships (``partsup_default_checkpoint``), announced
    on stderr. Raises PartsupError when neither exists."""
    if given is not None:
        return given
    default = ctx.registries.pm.hook.partsup_default_checkpoint()
    if default is None:
        raise PartsupError("no --checkpoint given and no plugin ships a default model; "
                           "pass --checkpoint RUN/best.pt")
    ctx.err.print(f"predict: no --checkpoint given: using the default model "
                  f"{escape(str(default))} (see docs/model-card.md)", highlight=False)
    return Path(default)


class PredictCommand:
    name = "predict"
    help = "detect mitoses in images or folders; write csv/geojson/challenge files and counts"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
        parser.add_argument("--checkpoint", type=Path, default=None,
                            help="a checkpoint written by partsup train, or its run folder "
                                 "(then its best.pt); default: the model a plugin ships, if "
                                 "any (the bundled one: docs/model-card.md)")
        parser.add_argument("--out", type=Path, default=Path("predictions"),
                            help="output folder (default ./predictions)")
        parser.add_argument("--format", default="csv,geojson",
                            help="comma-separated: csv, geojson, tupac, mitos-atypia, midog "
                                 "(or a plugin's writer); default csv,geojson")
        parser.add_argument("--mpp", type=float, default=None,
                            help=f"micrometres per pixel (default: the image's, else {DEFAULT_MPP})")
        parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                            help="auto (default): cuda when available, else cpu")
        parser.add_argument("--recursive", action="store_true", help="search folders recursively")
        parser.add_argument("--no-overlay", dest="overlay", action="store_false",
                            help="do not write <image>.overlay.png")
        parser.add_argument("--hpf-area", type=float, default=HPF_AREA_MM2, metavar="MM2",
                            help=f"area of one HPF for the area-standardised count (default "
                                 f"{HPF_AREA_MM2} mm²)")
        parser.add_argument("--tile", type=int, default=None, help="override detect.tile (px)")
        parser.add_argument("--batch-tiles", type=int, default=None,
                            help="override detect.batch_tiles")

    def run(self, args: argparse.Namespace, ctx: Any) -> int:
        if args.mpp is not None:
            check_range("--mpp", args.mpp, *MPP_RANGE, "um/px")
        check_range("--hpf-area", args.hpf_area, *HPF_AREA_RANGE, "mm²")
        writers = parse_formats(args.format, ctx.registries)
        items, missing = collect_inputs(args.paths, args.recursive, exclude=args.out)
        if not items and not missing:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in "
                            f"{', '.join(map(str, args.paths))}"
                            + ("" if args.recursive else " (folders: add --recursive?)"))
        from partsup.runtime import resolve_device
        device = resolve_device(args.device)
        check_output_folder(args.out)
        overrides = {"tile": args.tile, "batch_tiles": args.batch_tiles}
        checkpoint = resolve_checkpoint(args.checkpoint, ctx)
        detector = build_detector(checkpoint, ctx.registries, device, overrides)
        ctx.err.print(f"predict: {len(items)} image(s) on {device}; formats "
                      f"{', '.join(writers)}; writing to {escape(str(args.out))}", highlight=False)
        results = [Result(m, error=f"{m.path}: no such file or folder") for m in missing]
        for r in results:
            ctx.err.print(f"[bold red]error:[/] {escape(r.error)}", highlight=False)
        results += self._loop(items, detector, writers, args, ctx)
        table, lines = summary_table(results, args.hpf_area)
        ctx.console.print(table)
        for line in lines:
            ctx.console.print(line, highlight=False)
        if any(r.count is not None for r in results):
            write_summary_csv(args.out / "summary.csv", results)
        else:
            ctx.err.print(f"summary.csv not written: no image was predicted (the folder "
                          f"{escape(str(args.out))} is as it was)", highlight=False)
        failed = [r for r in results if r.count is None]
        if failed:
            ctx.err.print(f"[bold red]{len(failed)} of {len(results)} input(s) failed[/]: "
                          + escape(", ".join(str(r.item.path) for r in failed)), highlight=False)
            return 1
        return 0

    def _loop(self, items: Sequence[Item], detector: DetectorLike, writers: dict[str, Any],
              args: argparse.Namespace, ctx: Any) -> list[Result]:
        results: list[Result] = []
        with progress_bar(ctx.err, TextColumn("{task.fields[file]}")) as progress:
            task = progress.add_task("predict", total=len(items), file="")
            for item in items:
                progress.update(task, file=escape(item.id))
                t0 = time.perf_counter()
                try:
                    results.append(predict_one(item, detector, writers, args.out, args.mpp,
                                               args.overlay))
                except Exception as exc:  # noqa: BLE001 - report, skip, go on
                    if ctx.debug:
                        raise
                    results.append(Result(item, seconds=time.perf_counter() - t0,
                                          error=failure_message(item.path, exc)))
                    progress.console.print(f"[bold red]error:[/] {escape(results[-1].error)}",
                                           highlight=False)
                progress.advance(task)
        return results


COMMAND = PredictCommand
