"""``partsup predict``: detect objects in users' images and write them in the formats they need.

For every input image: read it (any size), run the checkpoint's detector (tiled), write one file
per requested format plus an overlay PNG, and count (per image, per mm^2). At the end a summary
table (and ``summary.csv``) and summary lines for the whole set (plugins may replace these lines
through ``partsup_count_summary``, e.g. with counts per field of a domain's standard size). A file
that cannot be read is reported by name and skipped (nothing is left behind for it); the exit
code is then 1. The output folder is checked before the model is loaded; folders are never
searched inside it; a run that predicted no image leaves ``summary.csv`` as it was.

The work per image lives in :mod:`partsup.prediction`. Plugins may add options to this command
and set two defaults it reads (``partsup_command_arguments``): ``default_mpp`` (um/px used when
neither ``--mpp`` nor the image gives one) and ``label`` (the objects' class name, given to the
writers as ``info["label"]``).

Many processes, many machines: ``torchrun --nproc-per-node N -m partsup predict PATHS`` shards
the inputs (images and slides) across the ranks (torch.distributed: gloo on CPU, nccl and one GPU
per rank with CUDA); rank 0 gathers the results and prints one summary and writes one
``summary.csv``: the same outputs as one process.
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any, Sequence

from rich.markup import escape
from rich.progress import TextColumn
from rich.table import Table

from partsup.cli.common import (add_normalize_arguments, apply_normalize_arguments, check_range,
                                normalize_label, progress_bar)
from partsup.cli.hooks import count_summary
from partsup.data.images import IMAGE_SUFFIXES
from partsup.errors import DataError, PartsupError
from partsup.inference.detector import build_detector
from partsup.manager import Registries
from partsup.slides.predict import predict_slide
from partsup.slides.reader import is_slide
from partsup.slides.tissue import read_roi
from partsup.output.outdir import check_not_foreign, record_owned
from partsup.prediction import (DetectorLike, ImageCount, Item, Result, check_output_folder,
                                collect_inputs, failure_message, planned_outputs, pool_counts,
                                predict_one)

#: accepted --mpp (um/px): wide, but finite and physically possible
MPP_RANGE = (0.01, 100.0)


# -- the command -------------------------------------------------------------------------------

def parse_formats(text: str, registries: Registries) -> dict[str, Any]:
    """``"csv,geojson"`` -> ``{name: writer}``; unknown names raise (listing the known ones)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise PartsupError("--format: give at least one format, e.g. csv,geojson")
    return {n: registries.writers.get(n, where="--format")() for n in dict.fromkeys(names)}


def count_lines(counts: Sequence[ImageCount], noun: str = "detections") -> list[str]:
    """The core's summary of a set's counts: total, images, area and the count per mm^2."""
    s = pool_counts(counts)
    return [f"{s.total} {noun} in {s.n_images} image(s), {s.area_mm2:.3f} mm²: "
            f"{s.per_mm2:.2f} per mm²"]


def summary_table(results: Sequence[Result], args: argparse.Namespace, pm: Any = None
                  ) -> tuple[Table, list[str]]:
    """The per-file table and the summary lines (``partsup_count_summary`` of a plugin, else
    :func:`count_lines`), with a note when the default mpp was assumed."""
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
    lines: list[str] = []
    if counts:
        extra = count_summary(pm, counts, args) if pm is not None else None
        lines.extend(count_lines(counts) if extra is None else extra)
    assumed = sum(r.mpp_assumed for r in results)
    if assumed:
        lines.append(f"note: {args.default_mpp} um/px assumed for {assumed} image(s) that "
                     f"record no resolution; set --mpp for correct per-mm² counts")
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
    help = "detect objects in images or folders; write csv/geojson (or plugins' formats) and counts"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
        parser.add_argument("--checkpoint", type=Path, default=None,
                            help="a checkpoint written by partsup train, or its run folder "
                                 "(then its best.pt); default: the model a plugin ships, if "
                                 "any (the bundled one: docs/model-card.md)")
        parser.add_argument("--out", type=Path, default=Path("predictions"),
                            help="output folder (default ./predictions)")
        parser.add_argument("--format", default="csv,geojson",
                            help="comma-separated writers: csv, geojson or any registered one "
                                 "(partsup plugins --kind writers); default csv,geojson")
        parser.add_argument("--mpp", type=float, default=None,
                            help="micrometres per pixel (default: the image's, else a plugin's "
                                 "default)")
        parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                            help="auto (default): cuda when available, else cpu")
        parser.add_argument("--recursive", action="store_true", help="search folders recursively")
        parser.add_argument("--no-overlay", dest="overlay", action="store_false",
                            help="do not write <image>.overlay.png")
        parser.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                            help="torch (default), or onnx: run --model (partsup export "
                                 "--format onnx) with onnxruntime on the CPU")
        parser.add_argument("--model", type=Path, default=None,
                            help="with --runtime onnx: the exported .onnx file (or its .json)")
        parser.add_argument("--tile", type=int, default=None, help="override detect.tile (px)")
        parser.add_argument("--batch-tiles", type=int, default=None,
                            help="override detect.batch_tiles")
        parser.add_argument("--roi", type=Path, default=None, metavar="GEOJSON",
                            help="slides: only the regions of these GeoJSON polygons (QuPath "
                                 "annotations, level-0 px)")
        parser.add_argument("--slide-tile", type=int, default=1024, metavar="N",
                            help="slides: core tile side in model px (default 1024)")
        add_normalize_arguments(parser)
        parser.set_defaults(default_mpp=None, label=None)  # plugins may set them

    def run(self, args: argparse.Namespace, ctx: Any) -> int:
        from partsup.runtime import init_distributed
        dist = init_distributed(args.device if args.runtime == "torch" else "cpu")
        try:
            rc = self._run(args, ctx, dist)
            if dist.enabled:  # leave together: gloo may abort a rank whose peer already left
                import torch.distributed as tdist
                tdist.barrier()
            return rc
        finally:
            if dist.owns_group:
                import torch.distributed as tdist
                tdist.destroy_process_group()

    def _run(self, args: argparse.Namespace, ctx: Any, dist: Any) -> int:
        """Under ``torchrun`` every rank predicts every ``world``-th input; rank 0 gathers the
        results, prints the summary and writes ``summary.csv`` (one process: rank 0 of 1)."""
        if args.mpp is not None:
            check_range("--mpp", args.mpp, *MPP_RANGE, "um/px")
        writers = parse_formats(args.format, ctx.registries)
        items, missing = collect_inputs(args.paths, args.recursive, exclude=args.out)
        if not items and not missing:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in "
                            f"{', '.join(map(str, args.paths))}"
                            + ("" if args.recursive else " (folders: add --recursive?)"))
        from partsup.runtime import on_main, resolve_device
        device = (resolve_device(args.device, dist.local_rank if dist.enabled else None)
                  if args.runtime == "torch" else "cpu (onnxruntime)")
        plan = planned_outputs(items, writers, args.out, args.overlay)
        on_main(dist, lambda: (check_output_folder(args.out), check_not_foreign(args.out, plan)))
        mine = list(range(len(items)))[dist.rank::dist.world]
        overrides = {"tile": args.tile, "batch_tiles": args.batch_tiles}
        if args.runtime == "onnx":
            if args.model is None:
                raise PartsupError("--runtime onnx needs --model FILE.onnx (partsup export)")
            from partsup.inference.onnx_runtime import load_onnx_detector
            detector = load_onnx_detector(args.model, ctx.registries, **overrides)
        else:
            checkpoint = resolve_checkpoint(args.checkpoint, ctx)
            detector = build_detector(checkpoint, ctx.registries, device, overrides)
        apply_normalize_arguments(detector, args, ctx.registries)
        if dist.is_main:
            ranks = f" ({dist.world} processes)" if dist.enabled else ""
            colour = normalize_label(detector)
            ctx.err.print(f"predict: {len(items)} image(s) on {device}{ranks}; formats "
                          f"{', '.join(writers)}; "
                          f"{'' if colour == 'none' else f'colours normalised by {colour}; '}"
                          f"writing to {escape(str(args.out))}",
                          highlight=False)
        results = [Result(m, error=f"{m.path}: no such file or folder") for m in missing]
        for r in results if dist.is_main else ():
            ctx.err.print(f"[bold red]error:[/] {escape(r.error)}", highlight=False)
        roi = read_roi(args.roi) if args.roi is not None else None
        done = self._loop([items[i] for i in mine], detector, writers, args, ctx, roi)
        results += gather_results(list(zip(mine, done)), dist)
        if not dist.is_main:  # rank 0 reports and writes summary.csv; the others agree on rc
            return exit_code(results)
        table, lines = summary_table(results, args, ctx.registries.pm)
        ctx.console.print(table)
        for line in lines + [x for r in results for x in r.lines]:
            ctx.console.print(escape(line), highlight=False)
        if any(r.count is not None for r in results):
            written = [p for r in results for p in r.outputs if p.exists()]
            record_owned(args.out, [*written, args.out / "summary.csv"], "partsup predict")
            write_summary_csv(args.out / "summary.csv", results)
        else:
            ctx.err.print(f"summary.csv not written: no image was predicted (the folder "
                          f"{escape(str(args.out))} is as it was)", highlight=False)
        if any(r.interrupted for r in results):
            ctx.err.print("interrupted: outputs hold the tiles done", highlight=False)
        failed = [r for r in results if r.count is None]
        if failed and not any(r.interrupted for r in results):
            ctx.err.print(f"[bold red]{len(failed)} of {len(results)} input(s) failed[/]: "
                          + escape(", ".join(str(r.item.path) for r in failed)), highlight=False)
        return exit_code(results)

    def _loop(self, items: Sequence[Item], detector: DetectorLike, writers: dict[str, Any],
              args: argparse.Namespace, ctx: Any, roi: Any = None) -> list[Result]:
        results: list[Result] = []
        model_mpp = getattr(detector, "model_mpp", None) or args.default_mpp
        with progress_bar(ctx.err, TextColumn("{task.fields[file]}")) as progress:
            task = progress.add_task("predict", total=len(items), file="")
            for item in items:
                progress.update(task, file=escape(item.id))
                t0 = time.perf_counter()
                try:
                    if is_slide(item.path):
                        results.append(self._slide(item, detector, writers, args, ctx, roi,
                                                   model_mpp, progress))
                        if results[-1].interrupted:
                            break
                    else:
                        results.append(predict_one(item, detector, writers, args.out, args.mpp,
                                                   args.overlay, args.default_mpp, args.label,
                                                   model_mpp))
                except Exception as exc:  # noqa: BLE001 - report, skip, go on
                    if ctx.debug:
                        raise
                    results.append(Result(item, seconds=time.perf_counter() - t0,
                                          error=failure_message(item.path, exc)))
                    progress.console.print(f"[bold red]error:[/] {escape(results[-1].error)}",
                                           highlight=False)
                progress.advance(task)
        return results

    @staticmethod
    def _slide(item: Item, detector: DetectorLike, writers: dict[str, Any],
               args: argparse.Namespace, ctx: Any, roi: Any, model_mpp: float | None,
               progress: Any) -> Result:
        """One slide, with its own progress bar of tissue tiles."""
        task = progress.add_task("tiles", total=None, file=escape(item.id))

        def on_tile(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        def extra(slide: Any) -> list[str]:
            found = ctx.registries.pm.hook.partsup_slide_outputs(slide=slide, args=args)
            return [line for lines in found if lines for line in lines]

        try:
            return predict_slide(item, detector, writers, args.out, mpp=args.mpp,
                                 default_mpp=args.default_mpp, model_mpp=model_mpp,
                                 label=args.label, roi=roi, tile=args.slide_tile,
                                 margin=max(64, getattr(getattr(detector, "params", None),
                                                        "overlap", 64)),
                                 overlay=args.overlay, on_tile=on_tile, extra=extra)
        finally:
            progress.remove_task(task)


def gather_results(mine: list[tuple[int, Result]], dist: Any) -> list[Result]:
    """Every rank's ``(input index, result)`` pairs, in input order (one process: its own)."""
    if not dist.enabled:
        return [r for _, r in mine]
    import torch.distributed as tdist
    everyone: list[Any] = [None] * dist.world
    tdist.all_gather_object(everyone, mine)  # partsup's own Result objects, between its ranks
    return [r for _, r in sorted((p for part in everyone for p in part), key=lambda p: p[0])]


def exit_code(results: Sequence[Result]) -> int:
    """130 when interrupted, 1 when an input failed, else 0."""
    if any(r.interrupted for r in results):
        return 130
    return 1 if any(r.count is None for r in results) else 0


COMMAND = PredictCommand
