"""``partsup evaluate``: score a checkpoint (or any tool's detections) on a dataset split.

Outputs (written to a staging folder inside ``--out`` and moved into place at the end, so an
interrupted or failed run leaves nothing half-written; see :mod:`partsup.outdir`)::

    OUT/metrics.json            protocol, totals (TP/FP/FN, precision, recall, F1), per image
    OUT/per_image.csv           the same per image
    OUT/detections/<id>.csv     x,y,score,area,match (tp|fp) per detection
    OUT/overlays/<id>.png       TP green, FN blue, FP yellow circles (paper Fig. 10)
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from partsup.errors import DataError, PartsupError, RecipeError
from partsup.metrics import Counts, match, open_dataset, protocol_dict, resolve_protocol
from partsup.types import Detection, Protocol, Sample


# -- staging -------------------------------------------------------------------------------------

@contextlib.contextmanager
def staged_dir(out: Path, command: str = "partsup evaluate") -> Iterator[Path]:
    """Yield a staging folder inside ``out``; on success its files replace their namesakes in
    ``out``, which must be new, empty, or a partsup output (:mod:`partsup.outdir`: nothing
    partsup did not write is ever overwritten or deleted).

    On any exception (including Ctrl-C) the staging folder is removed and ``out`` is left as it
    was.
    """
    from partsup.outdir import staged_output
    with staged_output(Path(out), command) as tmp:
        yield tmp


def add_option_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a dataset reader option, e.g. val_cases=[A03] (YAML value; "
                             "repeatable); the recipe's options for the same dataset apply too")


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    """``["a=1", "b=[x, y]"]`` -> ``{"a": 1, "b": ["x", "y"]}`` (values parsed as YAML)."""
    import yaml

    from partsup.recipe import safe_load
    out: dict[str, Any] = {}
    for text in items:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--option {text!r}: expected KEY=VALUE, e.g. val_cases=[A03]")
        try:
            out[key.strip()] = safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def progress_bar(console: Any, *extra: Any) -> Progress:
    """A transient bar: description, bar, n/total, elapsed time, then the ``extra`` columns."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), *extra, console=console, transient=True)


# -- detections from files -----------------------------------------------------------------------

def detection_candidates(folder: Path, sample_id: str) -> list[Path]:
    """Files that may hold the detections of ``sample_id`` inside ``folder``, in order."""
    from partsup.writers import SUFFIXES
    parts = sample_id.split("/")
    stems = [sample_id, sample_id.replace("/", "_"), sample_id.replace("/", "__"), parts[-1]]
    out = [folder / f"{s}{suffix}" for s in dict.fromkeys(stems)
           for suffix in list(SUFFIXES.values()) + [".json"]]
    if len(parts) > 1:  # MITOS-ATYPIA-14: <case>/mitosis/<frame>_mitosis.csv
        out.append(folder.joinpath(*parts[:-1], "mitosis", f"{parts[-1]}_mitosis.csv"))
    return out


def check_detections_format(fmt: str | None, registries: Any) -> str | None:
    """``fmt`` if it names a registered writer whose files can be read back, else PartsupError
    listing those formats (None passes: the format is then told by each file's name)."""
    from partsup.writers import WRITERS
    if fmt is None:
        return None
    valid = [name for name in registries.writers.names() if name in WRITERS]
    if fmt not in valid:
        raise PartsupError(f"--detections-format: unknown format {fmt!r}; expected one of "
                           f"{', '.join(valid)}")
    return fmt


class FileDetections:
    """Detections made by another tool: one file per image in ``folder`` (any writer format)."""

    def __init__(self, folder: str | Path, fmt: str | None = None) -> None:
        self.folder = Path(folder)
        self.fmt = fmt
        self.found = 0
        if not self.folder.is_dir():
            raise DataError(f"--detections: folder {self.folder} not found")

    def __call__(self, sample: Sample) -> list[Detection]:
        from partsup.writers import read_detections
        for path in detection_candidates(self.folder, sample.id):
            if path.is_file():
                self.found += 1
                arr = read_detections(path, fmt=self.fmt, mpp=sample.mpp)
                return [Detection(float(x), float(y), float(s), 0.0) for x, y, s in arr]
        return []  # no file: no detections (the AMIDA13 convention)


# -- one image -----------------------------------------------------------------------------------

@dataclass
class ImageScore:
    id: str
    mpp: float
    n_gt: int
    n_det: int
    counts: Counts
    radius_px: float

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "mpp": self.mpp, "n_gt": self.n_gt, "n_det": self.n_det,
                "radius_px": self.radius_px, **self.counts.as_dict()}


def write_detection_csv(path: Path, detections: Sequence[Detection], tp: np.ndarray) -> None:
    """``x,y,score,area,match`` (px; match = tp|fp); readable by ``read_detections``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["x", "y", "score", "area", "match"])
        for d, t in zip(detections, tp):
            w.writerow([f"{d.x:.2f}", f"{d.y:.2f}", f"{d.score:.6f}", f"{d.area:g}",
                        "tp" if t else "fp"])


def score_image(sample: Sample, detections: Sequence[Detection], protocol: Protocol,
                out: Path, overlays: bool) -> ImageScore:
    """Match one image's detections (hard negatives are never ground truth); write its CSV and
    overlay under ``out``."""
    xy = np.array([[d.x, d.y] for d in detections], np.float64).reshape(-1, 2)
    scores = np.array([d.score for d in detections], np.float64)
    radius = protocol.radius_for(sample.mpp)
    result = match(sample.points, xy, scores, radius_px=radius)
    write_detection_csv(out / "detections" / f"{sample.id}.csv", detections, result.det_tp)
    if overlays:
        from partsup.overlay import save_overlay
        save_overlay(out / "overlays" / f"{sample.id}.png", sample.image, sample.points, xy,
                     result)
    return ImageScore(sample.id, float(sample.mpp), len(sample.points), len(xy), result.counts,
                      radius)


def evaluate(dataset: Sequence[Sample], detect: Callable[[Sample], Sequence[Detection]],
             protocol: Protocol, out: Path, overlays: bool = True,
             on_image: Callable[[ImageScore], None] | None = None) -> list[ImageScore]:
    """Detect and score every sample of ``dataset``, writing per-image outputs under ``out``."""
    scores = []
    for i in range(len(dataset)):
        sample = dataset[i]
        s = score_image(sample, list(detect(sample)), protocol, out, overlays)
        scores.append(s)
        if on_image is not None:
            on_image(s)
    return scores


def write_metrics(out: Path, scores: Sequence[ImageScore], info: dict[str, Any]) -> Counts:
    total = Counts.total(s.counts for s in scores)
    doc = {**info, "totals": total.as_dict(), "images": [s.as_dict() for s in scores]}
    (out / "metrics.json").write_text(json.dumps(doc, indent=1) + "\n")
    with (out / "per_image.csv").open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        keys = list(scores[0].as_dict()) if scores else ["id"]
        w.writerow(keys)
        for s in scores:
            w.writerow(csv_row(s, keys))
    return total


def csv_row(score: ImageScore, keys: Sequence[str]) -> list[Any]:
    """The values of ``keys``; "-" for a ratio whose denominator is 0 (as the table shows)."""
    c = score.counts
    undefined = {"precision": c.tp + c.fp == 0, "recall": c.tp + c.fn == 0,
                 "f1": c.tp + c.fp + c.fn == 0}
    row = score.as_dict()
    return ["-" if undefined.get(k) else row[k] for k in keys]


def _pct(c: Counts, attr: str, den: int) -> str:
    return f"{getattr(c, attr):.3f}" if den else "-"


def results_table(scores: Sequence[ImageScore], total: Counts, title: str) -> Table:
    table = Table(title=title, show_footer=True)
    cols = ("image", "GT", "det", "TP", "FP", "FN", "precision", "recall", "F1")
    foot = ("total", str(sum(s.n_gt for s in scores)), str(sum(s.n_det for s in scores)),
            str(total.tp), str(total.fp), str(total.fn), f"{total.precision:.3f}",
            f"{total.recall:.3f}", f"{total.f1:.3f}")
    for i, (c, f) in enumerate(zip(cols, foot)):
        table.add_column(c, footer=f, justify="left" if i == 0 else "right", overflow="fold")
    for s in scores:
        c = s.counts
        table.add_row(escape(s.id), str(s.n_gt), str(s.n_det), str(c.tp), str(c.fp), str(c.fn),
                      _pct(c, "precision", c.tp + c.fp), _pct(c, "recall", c.tp + c.fn),
                      _pct(c, "f1", c.tp + c.fp + c.fn))
    return table


# -- the command ---------------------------------------------------------------------------------

class EvaluateCommand:
    name = "evaluate"
    help = "score a checkpoint (or another tool's detections) on a dataset: P, R, F1, overlays"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--dataset", required=True, help="registered dataset name")
        parser.add_argument("--data-root", help="the dataset's folder (default: the checkpoint "
                            "recipe's root for it, or $PARTSUP_DATA/<name>)")
        parser.add_argument("--split", default="test")
        add_option_argument(parser)
        src = parser.add_mutually_exclusive_group(required=True)
        src.add_argument("--checkpoint", help="a trained (ideally calibrated) checkpoint, or "
                         "its run folder (then its best.pt)")
        src.add_argument("--detections", metavar="DIR",
                         help="score detections made by any tool: one file per image, "
                              "DIR/<image id>.csv (x,y[,score] with header) or a challenge "
                              "format (.tupac.csv, _mitosis.csv, .midog.json, .geojson)")
        parser.add_argument("--detections-format", default=None, metavar="FORMAT",
                            help="format of the --detections files when the name does not say: "
                                 "csv, geojson, tupac, mitos-atypia or midog")
        parser.add_argument("--radius-um", type=float, default=None,
                            help="match radius in micrometres (overrides the protocol)")
        parser.add_argument("--radius-px", type=float, default=None,
                            help="match radius in pixels, e.g. the paper's 20 (ICPR 2012) or 32")
        parser.add_argument("--protocol", help="protocol name (default: the dataset's own, "
                            "else the recipe's eval.protocol)")
        parser.add_argument("--out", help="output folder (default eval/<dataset>-<split>)")
        parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
        parser.add_argument("--no-overlays", dest="overlays", action="store_false",
                            help="skip the overlay PNGs")

    def run(self, args: argparse.Namespace, ctx: Any) -> int:
        recipe: dict[str, Any] | None = None
        if args.checkpoint:
            detect, recipe, source = self._checkpoint_detector(args, ctx)
        else:
            fmt = check_detections_format(args.detections_format, ctx.registries)
            files = FileDetections(args.detections, fmt)
            detect, source = files, {"detections": str(args.detections)}
        dataset = open_dataset(ctx.registries, args.dataset, args.data_root, args.split, recipe,
                               parse_options(args.option))
        if len(dataset) == 0:
            raise DataError(f"dataset {args.dataset!r} split {args.split!r} has no images")
        protocol = resolve_protocol(ctx.registries, args.protocol, args.dataset, recipe,
                                    args.radius_um, args.radius_px)
        out = Path(args.out or f"eval/{args.dataset}-{args.split}")
        with staged_dir(out) as tmp, progress_bar(ctx.console) as bar:
            task = bar.add_task(f"evaluate {args.dataset}/{args.split}", total=len(dataset))
            scores = evaluate(dataset, detect, protocol, tmp, args.overlays,
                              on_image=lambda s: bar.advance(task))
            if args.detections and files.found == 0:
                raise DataError(f"--detections: no detection file in {args.detections} matches "
                                f"any image of {args.dataset}/{args.split} (expected e.g. "
                                f"{args.detections}/{scores[0].id}.csv)")
            info = {"dataset": args.dataset, "split": args.split,
                    "root": str(getattr(dataset, "root", "")),
                    "protocol": protocol_dict(protocol), "matching": "greedy one-to-one, "
                    "ground truth in order, nearest unused detection within the radius "
                    "(inclusive); hard negatives are never ground truth", **source}
            total = write_metrics(tmp, scores, info)
        ctx.console.print(results_table(scores, total, f"{args.dataset}/{args.split} — "
                                        f"{protocol.name} ({protocol.description})"))
        ctx.console.print(f"F1 {total.f1:.3f}  precision {total.precision:.3f}  recall "
                          f"{total.recall:.3f}  (TP {total.tp}, FP {total.fp}, FN {total.fn}; "
                          f"summed over {len(scores)} images)")
        ctx.console.print(f"wrote {escape(str(out))}/metrics.json, detections/, "
                          f"{'overlays/, ' if args.overlays else ''}per_image.csv")
        return 0

    @staticmethod
    def _checkpoint_detector(args: argparse.Namespace, ctx: Any
                             ) -> tuple[Callable[[Sample], Sequence[Detection]], dict, dict]:
        from partsup.detect import load_detector
        detector, ckpt = load_detector(args.checkpoint, ctx.registries, args.device)
        source = {"checkpoint": str(args.checkpoint), "detect": detector.params.to_dict(),
                  "calibrated": ckpt.get("detect") is not None}
        return (lambda s: detector.detect(s.image, s.mpp)), ckpt.get("recipe") or {}, source


COMMAND = EvaluateCommand
