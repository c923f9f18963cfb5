"""``partsup predict``: detect objects in users' images and write them in the formats they need.

For every input image: read it (any size), run the checkpoint's detector (tiled), write one file
per requested format plus an overlay PNG, and count (per image, per mm^2). At the end a summary
table (and ``summary.csv``) and summary lines for the whole set (plugins may replace these lines
through ``partsup_count_summary``, e.g. with counts per field of a domain's standard size). A file
that cannot be read is reported by name and skipped (nothing is left behind for it); the exit
code is then 1. The output folder is checked before the model is loaded; folders are never
searched inside it; a run that predicted no image leaves ``summary.csv`` as it was.

This command parses the options, runs :class:`partsup.prediction.pipeline.PredictRun` step by
step and prints (progress bars, the table, the lines). Plugins may add options to this command
and set two defaults it reads (``partsup_command_options``): ``default_mpp`` (um/px used when
neither ``--mpp`` nor the image gives one) and ``label`` (the objects' class name, given to the
writers as ``info["label"]``).

``--at DIR`` skips detection: the points of ``DIR/<image id>.csv`` (or ``.geojson``; predict's
own output folder reads back) are classified by the checkpoint's second look
(:mod:`partsup.prediction.points`, :mod:`partsup.prediction.given`), with the same outputs.

Many processes, many machines: ``torchrun --nproc-per-node N -m partsup predict PATHS`` shards
the inputs (images and slides) across the ranks (torch.distributed: gloo on CPU, nccl and one GPU
per rank with CUDA); rank 0 gathers the results and prints one summary and writes one
``summary.csv``: the same outputs as one process.
"""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from rich.markup import escape
from rich.progress import Progress, TextColumn
from rich.table import Table

from partsup.cli.common import (add_normalize_arguments, apply_normalize_arguments,
                                normalize_label, progress_bar)
from partsup.errors import DataError, PartsupError
from partsup.manager import Registries
from partsup.options import check_range
from partsup.prediction.counts import merge_classes
from partsup.prediction.inputs import Item, collect_inputs
from partsup.prediction.points import second_look_of
from partsup.prediction.result import Result, exit_code
from partsup.prediction.settings import (BASE_DEFAULTS, MPP_RANGE, PredictSettings,
                                        make_writers)


def parse_formats(text: str, registries: Registries) -> dict[str, Any]:
    """``"csv,geojson"`` -> ``{name: writer}``; unknown names raise (listing the known ones)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise PartsupError("--format: give at least one format, e.g. csv,geojson")
    return make_writers(names, registries, "--format")


def option_values(args: argparse.Namespace) -> dict[str, Any]:
    """The command's option values by name (plugins' own included), as the hooks get them."""
    return {k: v for k, v in vars(args).items() if not k.startswith("_")}


def results_table(results: Sequence[Result]) -> Table:
    """One row per input: file, count, (after a labelling second look: one column per class,
    its count), per mm², area mm², time s, status."""
    classes = list(merge_classes(r.count.classes for r in results if r.count is not None))
    table = Table(title="partsup predict", show_footer=False)
    for col, just in (("file", "left"), ("count", "right"),
                      *((escape(name), "right") for name in classes), ("per mm²", "right"),
                      ("area mm²", "right"), ("time s", "right"), ("status", "left")):
        table.add_column(col, justify=just, overflow="fold")
    for r in results:
        if r.count is None:
            table.add_row(escape(str(r.item.path)), "-", *(["-"] * len(classes)), "-", "-",
                          f"{r.seconds:.2f}", "[red]failed[/]")
        else:
            c = r.count
            table.add_row(escape(r.item.id), str(c.count),
                          *(str(c.classes.get(name, 0)) for name in classes),
                          f"{c.per_mm2:.2f}", f"{c.area_mm2:.3f}", f"{r.seconds:.2f}", "ok")
    return table


def check_at(at: Path | None, out: Path, roi: Path | None) -> None:
    """``--at DIR``: an existing folder, not ``--out`` (its points would be overwritten), and
    not with ``--roi``. Raises PartsupError (one line)."""
    if at is None:
        return
    if not at.is_dir():
        raise PartsupError(f"--at {at}: no such folder (it should hold <image id>.csv files "
                           f"of x, y px)")
    if out.exists() and at.resolve() == out.resolve():
        raise PartsupError(f"--at {at} is also --out: the points would be overwritten by the "
                           f"outputs; choose another --out")
    if roi is not None:
        raise PartsupError("--at classifies the given points; --roi does not apply to them "
                           "(leave one out)")


class ProgressWatcher:
    """The run's progress on a transient rich bar (one more bar per slide: its tissue tiles)."""

    def __init__(self, progress: Progress, total: int, tile_px: int | None = None) -> None:
        self.progress = progress
        self.tile_px = tile_px  # model px a slide tile covers: Mpx/s in a log's lines
        self.task = progress.add_task("predict", total=total, file="")

    def started(self, item: Item) -> None:
        self.progress.update(self.task, file=escape(item.id))

    @contextlib.contextmanager
    def slide(self, item: Item) -> Iterator[Callable[[int, int], None]]:
        task = self.progress.add_task("tiles", total=None, file=escape(item.id), px=self.tile_px)
        try:
            yield lambda done, total: self.progress.update(task, completed=done, total=total)
        finally:
            self.progress.remove_task(task)

    def failed(self, result: Result) -> None:
        self.progress.console.print(f"[bold red]error:[/] {escape(result.error)}",
                                    highlight=False)

    def finished(self, item: Item) -> None:
        self.progress.advance(self.task)


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
        parser.add_argument("--at", type=Path, default=None, metavar="DIR",
                            help="no detection: classify the points of DIR/<image id>.csv "
                                 "(x, y px; or .geojson: predict's own outputs read back) "
                                 "with the checkpoint's second look")
        add_normalize_arguments(parser)
        parser.set_defaults(**BASE_DEFAULTS)  # plugins may set them

    def run(self, args: argparse.Namespace, ctx: Any) -> int:
        items, missing = collect_inputs(args.paths, args.recursive, exclude=args.out)
        if missing and not items:  # one line, before the pipeline (and torch) is imported
            raise DataError(f"{', '.join(str(m.path) for m in missing)}: no such file or folder")
        from partsup.prediction.pipeline import distributed
        with distributed(args.device if args.runtime == "torch" else "cpu") as dist:
            return self._run(args, ctx, dist)

    def _run(self, args: argparse.Namespace, ctx: Any, dist: Any) -> int:
        """Under ``torchrun`` every rank predicts every ``world``-th input; rank 0 gathers the
        results, prints the summary and writes ``summary.csv`` (one process: rank 0 of 1)."""
        from partsup.prediction.pipeline import PredictRun, load_run_detector
        if args.mpp is not None:
            check_range("--mpp", args.mpp, *MPP_RANGE, "um/px")
        check_at(args.at, args.out, args.roi)
        settings = PredictSettings(args.out, parse_formats(args.format, ctx.registries),
                                   option_values(args), mpp=args.mpp, overlay=args.overlay,
                                   roi=args.roi, slide_tile=args.slide_tile, at=args.at)
        run = PredictRun(settings, ctx.registries, dist)
        items, missing = run.inputs(args.paths, args.recursive)
        device = run.device(args.device, args.runtime)
        run.check_outputs(items)
        checkpoint = resolve_checkpoint(args.checkpoint, ctx) if args.runtime == "torch" else None
        detector = load_run_detector(ctx.registries, device,
                                     {"tile": args.tile, "batch_tiles": args.batch_tiles},
                                     runtime=args.runtime, checkpoint=checkpoint,
                                     model=args.model)
        apply_normalize_arguments(detector, args, ctx.registries)
        if args.at is not None:
            second_look_of(detector)
        if run.is_main:
            ranks = f" ({dist.world} processes)" if dist.enabled else ""
            colour = normalize_label(detector)
            given = "" if args.at is None else f"classifying the points in {args.at}; "
            ctx.err.print(f"predict: {len(items)} image(s) on {device}{ranks}; formats "
                          f"{', '.join(settings.writers)}; "
                          f"{'' if colour == 'none' else f'colours normalised by {colour}; '}"
                          f"{escape(given)}writing to {escape(str(args.out))}",
                          highlight=False)
        results = run.missing(missing)
        for r in results if run.is_main else ():
            ctx.err.print(f"[bold red]error:[/] {escape(r.error)}", highlight=False)
        tile_px = args.slide_tile ** 2 if args.at is None else None
        with progress_bar(ctx.err, TextColumn("{task.fields[file]}")) as progress:
            results += run.predict(items, detector, ProgressWatcher(progress, len(items), tile_px),
                                   ctx.debug)
        if not run.is_main:  # rank 0 reports and writes summary.csv; the others agree on rc
            return exit_code(results)
        ctx.console.print(results_table(results))
        for line in run.summary_lines(results) + [x for r in results for x in r.lines]:
            ctx.console.print(escape(line), highlight=False)
        if not run.write_summary(results):
            ctx.err.print(f"summary.csv not written: no image was predicted (the folder "
                          f"{escape(str(args.out))} is as it was)", highlight=False)
        if any(r.interrupted for r in results):
            ctx.err.print("interrupted: outputs hold the tiles done", highlight=False)
        failed = [r for r in results if r.count is None]
        if failed and not any(r.interrupted for r in results):
            ctx.err.print(f"[bold red]{len(failed)} of {len(results)} input(s) failed[/]: "
                          + escape(", ".join(str(r.item.path) for r in failed)), highlight=False)
        return exit_code(results)


COMMAND = PredictCommand
