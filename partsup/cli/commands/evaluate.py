"""``partsup evaluate``: score a checkpoint (or any tool's detections) on a dataset split.

Outputs (written to a staging folder inside ``--out`` and moved into place at the end, so an
interrupted or failed run leaves nothing half-written; see :mod:`partsup.output.outdir`)::

    OUT/metrics.json            protocol, totals (TP/FP/FN, precision, recall, F1, AP), per
                                image, and the precision-recall curve (<= 200 points)
    OUT/pr_curve.png            precision vs recall, AP and the operating point (when AP exists)
    OUT/per_image.csv           the same per image
    OUT/detections/<id>.csv     x,y,score,area,match (tp|fp) per detection
    OUT/overlays/<id>.png       TP green, FN blue, FP yellow circles (paper Fig. 10)

A checkpoint with a second look (a crop classifier) is scored after it (the operating point)
and before it (its candidate rule alone), and the matched objects whose class is known are
scored by each labelling head (balanced accuracy, AUROC, confusion matrix). ``--at`` scores the
classifier alone on the ground-truth points (:mod:`partsup.cli.evaluate_at`).

Scoring and the files it writes live in :mod:`partsup.evaluation.scoring`; this module parses
options, opens the dataset and prints the table.
"""
from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.markup import escape
from rich.table import Table

from partsup.cli.evaluate_at import class_table
from partsup.cli.common import (add_checkpoint_arguments, add_normalize_arguments,
                                add_option_argument, apply_normalize_arguments, normalize_label,
                                parse_options, progress_bar, staged_dir, take_checkpoint)
from partsup.errors import DataError, PartsupError
from partsup.data.datasets import open_dataset
from partsup.evaluation.matching import Counts, PRCurve
from partsup.evaluation.protocols import protocol_dict, resolve_protocol
from partsup.evaluation.scoring import (PR_MATCHING, FileDetections, Found, ImageScore, evaluate,
                                        pooled_curve, write_metrics, write_pr_plot)
from partsup.manager import Registries
from partsup.types import Sample


def check_detections_format(fmt: str | None, registries: Registries) -> str | None:
    """``fmt`` if it names a registered writer whose files can be read back, else PartsupError
    listing those formats (None passes: the format is then told by each file's name)."""
    from partsup.output.writers import readable
    if fmt is None:
        return None
    formats = readable(registries.writers)
    valid = [name for name in registries.writers.names() if name in formats]
    if fmt not in valid:
        raise PartsupError(f"--detections-format: unknown format {fmt!r}; expected one of "
                           f"{', '.join(valid)}")
    return fmt


def _pct(c: Counts, attr: str, den: int) -> str:
    return f"{getattr(c, attr):.3f}" if den else "-"


def _ap(curve: PRCurve | None) -> str:
    return "-" if curve is None or curve.ap is None else f"{curve.ap:.3f}"


def results_table(scores: Sequence[ImageScore], total: Counts, title: str,
                  curve: PRCurve | None = None) -> Table:
    """Per-image counts, P/R/F1 and AP ("-": undefined), totals in the footer."""
    table = Table(title=title, show_footer=True)
    cols = ("image", "GT", "det", "TP", "FP", "FN", "precision", "recall", "F1", "AP")
    foot = ("total", str(sum(s.n_gt for s in scores)), str(sum(s.n_det for s in scores)),
            str(total.tp), str(total.fp), str(total.fn), f"{total.precision:.3f}",
            f"{total.recall:.3f}", f"{total.f1:.3f}", _ap(curve))
    for i, (c, f) in enumerate(zip(cols, foot)):
        table.add_column(c, footer=f, justify="left" if i == 0 else "right", overflow="fold")
    for s in scores:
        c = s.counts
        table.add_row(escape(s.id), str(s.n_gt), str(s.n_det), str(c.tp), str(c.fp), str(c.fn),
                      _pct(c, "precision", c.tp + c.fp), _pct(c, "recall", c.tp + c.fn),
                      _pct(c, "f1", c.tp + c.fp + c.fn), _ap(s.curve))
    return table


# -- the command ---------------------------------------------------------------------------------

class EvaluateCommand:
    name = "evaluate"
    help = "score a checkpoint (or another tool's detections) on a dataset: P, R, F1, overlays"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--dataset", required=True, help="registered dataset name")
        parser.add_argument("--data-root", help="the dataset's folder (default: the checkpoint "
                            "recipe's root for it, or $PARTSUP_DATA/<name>)")
        parser.add_argument("--split", default="test",
                            help="the dataset split to score: train, val, test or all (default "
                                 "test; `partsup datasets NAME` shows what each holds)")
        add_option_argument(parser)
        add_checkpoint_arguments(parser, "a trained (ideally calibrated) checkpoint, or its run "
                                 "folder (then its best.pt); or score files with --detections")
        parser.add_argument("--detections", metavar="DIR",
                         help="score detections made by any tool: one file per image, "
                              "DIR/<image id>.csv (x,y[,score] with header), .geojson, or "
                              "any registered writer's format that reads back")
        parser.add_argument("--detections-format", default=None, metavar="FORMAT",
                            help="format of the --detections files when the name does not say: "
                                 "csv, geojson or a plugin's writer")
        parser.add_argument("--radius-um", type=float, default=None,
                            help="match radius in micrometres (overrides the protocol)")
        parser.add_argument("--radius-px", type=float, default=None,
                            help="match radius in pixels, e.g. 20 or 32")
        parser.add_argument("--protocol", help="protocol name (default: the dataset's own, "
                            "else the recipe's eval.protocol)")
        parser.add_argument("--out", help="output folder (default eval/<dataset>-<split>)")
        parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
        add_normalize_arguments(parser)
        parser.add_argument("--no-overlays", dest="overlays", action="store_false",
                            help="skip the overlay PNGs")
        parser.add_argument("--at", action="store_true",
                            help="score the second look (crop classifier) alone on the "
                                 "ground-truth points, no detection: balanced accuracy, AUROC, "
                                 "confusion matrix per head (a detector checkpoint with a second "
                                 "look, or a classifier's own checkpoint)")

    def run(self, args: argparse.Namespace, ctx: Any) -> int:
        recipe: dict[str, Any] | None = None
        take_checkpoint(args, required=False)
        if args.at:
            from partsup.cli.evaluate_at import run_at
            return run_at(args, ctx)
        if (args.checkpoint is None) == (args.detections is None):
            raise PartsupError("give one source of detections: a checkpoint (CHECKPOINT or "
                               "--checkpoint FILE) or --detections DIR"
                               + (", not both" if args.detections is not None else ""))
        look = None
        if args.checkpoint:
            detect, recipe, source = self._checkpoint_detector(args, ctx)
            look = detect.args[0].second_look
        else:
            if args.normalize is not None or args.normalize_reference is not None:
                raise PartsupError("--normalize goes with --checkpoint: --detections files are "
                                   "scored as they are")
            fmt = check_detections_format(args.detections_format, ctx.registries)
            files = FileDetections(args.detections, fmt, ctx.registries.writers)
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
            curve = pooled_curve(scores)
            info.update(pr_scores="candidates before the score threshold s1" if args.checkpoint
                        else "the detections' own scores", pr_matching=PR_MATCHING)
            if look is not None:
                info.update(second_look_summary(look, scores, curve))
                if look.params.verify is not None:
                    info["pr_scores"] = ("the candidate rule's detections, ranked by the second "
                                         "look's verify probability")
            total = write_metrics(tmp, scores, info, curve)
            plotted = write_pr_plot(tmp, curve, total, f"{args.dataset}/{args.split}, "
                                    f"{protocol.name}: {info['pr_scores']}")
        title = f"{args.dataset}/{args.split} — {protocol.name} ({protocol.description})"
        ctx.console.print(results_table(scores, total, title, curve))
        ctx.console.print(f"F1 {total.f1:.3f}  precision {total.precision:.3f}  recall "
                          f"{total.recall:.3f}  AP {_ap(curve)}  (TP {total.tp}, FP {total.fp}, "
                          f"FN {total.fn}; summed over {len(scores)} images)")
        if look is not None:
            print_second_look(ctx.console, info["second_look"])
        if args.detections and files.unscored:
            ctx.console.print(f"AP -: {len(files.unscored)} detection file(s) carry no scores "
                              f"(e.g. {escape(str(files.unscored[0]))}), so nothing ranks them")
        ctx.console.print(f"wrote {escape(str(out))}/metrics.json, detections/, "
                          f"{'overlays/, ' if args.overlays else ''}"
                          f"{'pr_curve.png, ' if plotted else ''}per_image.csv")
        return 0

    @staticmethod
    def _checkpoint_detector(args: argparse.Namespace, ctx: Any
                             ) -> tuple[Callable[[Sample], Found], dict, dict]:
        from partsup.inference.detector import load_detector
        detector, ckpt = load_detector(args.checkpoint, ctx.registries, args.device)
        apply_normalize_arguments(detector, args, ctx.registries)
        source = {"checkpoint": str(args.checkpoint), "detect": detector.params.to_dict(),
                  "calibrated": ckpt.get("detect") is not None,
                  "normalize": normalize_label(detector)}
        return partial(_candidates, detector), ckpt.get("recipe") or {}, source


def _candidates(detector: Any, sample: Sample) -> Found:
    """The operating point's detections and every candidate before s1 (for the PR curve).

    With a second look: its kept detections (labelled), ranked by the verify probability,
    and ``before``: the candidate rule alone, as without one."""
    import dataclasses

    import numpy as np

    from partsup.evaluation.second_look import verify_column
    from partsup.inference.blobs import candidates_from_maps
    p_weak, p_strong = detector.maps(sample.image)
    cands, keep = candidates_from_maps(p_weak, p_strong, detector.params, sample.mpp,
                                       detector.registries)
    kept = [d for d, k in zip(cands, keep) if k]
    look = detector.second_look
    if look is None:
        return Found(kept, cands)
    before = Found(kept, cands)
    if not kept:
        return Found([], [], before)
    probs = look.probabilities(sample.image, np.array([[d.x, d.y] for d in kept]), sample.mpp)
    column = verify_column(look)
    ranked = kept if column is None else [
        dataclasses.replace(d, score=float(probs[column[0]][i, column[1]]))
        for i, d in enumerate(kept)]
    return Found(look.apply(kept, probs), ranked, before)


def second_look_summary(look: Any, scores: Sequence[ImageScore], curve: PRCurve | None
                        ) -> dict[str, Any]:
    """``{"second_look": {...}}`` for metrics.json: the look's params, the detection counts
    and AP before it (the candidate rule alone), and each labelling head's scores on the
    matched objects whose class is known (:func:`partsup.evaluation.second_look.class_report`)."""
    from partsup.evaluation.second_look import class_report
    before = [s.before for s in scores if s.before is not None]
    b_curve = pooled_curve(before)
    b_total = Counts.total(s.counts for s in before)
    after = Counts.total(s.counts for s in scores)
    pairs = [pair for s in scores for pair in s.labelled]
    verify = look.params.verify
    heads = {}
    for head, classes in look.spec.heads.items():
        if verify is not None and head == verify.head:
            continue
        report = class_report([t for t, _ in pairs], [p for _, p in pairs], classes)
        if report["n"]:
            heads[head] = report
    return {"second_look": {
        "params": look.params.to_dict(),
        "before": {**b_total.as_dict(), "ap": None if b_curve is None else b_curve.ap,
                   "detections": sum(s.n_det for s in before),
                   "pr_scores": "candidates before the score threshold s1"},
        "after": {**after.as_dict(), "ap": None if curve is None else curve.ap,
                  "detections": sum(s.n_det for s in scores)},
        "classification": {
            "objects": "matched ground truth with a known class (Sample.point_labels); "
                       "predicted: the head's most probable class",
            "matched_with_class": len(pairs), "heads": heads}}}


def print_second_look(console: Any, section: dict[str, Any]) -> None:
    """Before / after lines and one confusion-matrix table per labelling head."""
    for key, what in (("before", "before the second look (candidate rule alone)"),
                      ("after", "after the second look")):
        c = section[key]
        ap = "-" if c["ap"] is None else f"{c['ap']:.3f}"
        console.print(f"{what}: F1 {c['f1']:.3f}  precision {c['precision']:.3f}  recall "
                      f"{c['recall']:.3f}  AP {ap}  (TP {c['tp']}, FP {c['fp']}, FN {c['fn']})")
    heads = section["classification"]["heads"]
    if not heads:
        console.print("classification: no matched object with a known class (the dataset "
                      "gives none, or no labelling head)")
    for head, report in heads.items():
        console.print(class_table(head, report, "matched objects"))


COMMAND = EvaluateCommand
