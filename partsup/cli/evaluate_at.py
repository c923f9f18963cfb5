"""``partsup evaluate --at``: score a second look (crop classifier) alone on the ground-truth
points of a dataset split, with no detection step.

The checkpoint is a detector's with a ``second_look`` section, or a classifier run's own
(``task: classify``; its rules from :func:`partsup.evaluation.second_look.default_params`).
Every ground-truth point is classified (as ``Detector.classify`` does); with a verify rule,
the split's hard negatives too. Scores per head
(:func:`partsup.evaluation.second_look.class_report`):

- the verify head: points are its positive class, hard negatives the other; predicted
  positive when ``p(positive) >= verify.threshold``;
- every other head: the points whose class (``Sample.point_labels``) is one of the head's;
  predicted: the most probable class.

Outputs (staged, as ``evaluate``'s): ``OUT/metrics.json`` (``heads``: per head, classes, n,
balanced accuracy, AUROC, per-class recall and one-vs-rest AUROC, the confusion matrix with
rows = true class) and ``OUT/points.csv`` (``image,x,y,kind,truth,class,score,p_<class>...``
per classified point; ``kind`` = point | hard_negative).
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from partsup.cli.common import parse_options, progress_bar, staged_dir
from partsup.data.datasets import open_dataset
from partsup.errors import DataError, PartsupError

__all__ = ["class_table", "run_at"]


def _look(args: argparse.Namespace, ctx: Any) -> tuple[Any, dict[str, Any], str]:
    """The second look to score, the checkpoint's recipe, and what it is (for the output)."""
    from partsup.checkpoint.files import checkpoint_file, load_checkpoint
    from partsup.evaluation.second_look import classifier_look, is_classifier
    from partsup.inference.detector import params_from_checkpoint
    from partsup.inference.second_look import load_second_look
    from partsup.runtime import resolve_device
    path = checkpoint_file(args.checkpoint)
    ckpt = load_checkpoint(path)
    device = resolve_device(args.device)
    if is_classifier(ckpt):
        return (classifier_look(ckpt, ctx.registries, device, str(path)), ckpt["recipe"],
                "a crop classifier's own checkpoint (default rules)")
    tta = params_from_checkpoint(ckpt).tta
    look = load_second_look(ckpt, ctx.registries, device, str(path), tta=tta)
    if look is None:
        raise PartsupError(f"{path} has no second look (a crop classifier) to score on given "
                           f"points; attach one with partsup calibrate --checkpoint {path} "
                           f"--second-look CLASSIFIER.pt, or give the classifier's own "
                           f"checkpoint")
    return look, ckpt.get("recipe") or {}, "the detector checkpoint's second look"


def run_at(args: argparse.Namespace, ctx: Any) -> int:
    """Run ``evaluate --at`` (``args``: evaluate's parsed options); the exit code."""
    from partsup.evaluation.second_look import class_report
    if args.checkpoint is None or args.detections is not None:
        raise PartsupError("--at scores a checkpoint's crop classifier on the ground-truth "
                           "points: give the checkpoint (CHECKPOINT or --checkpoint FILE), "
                           "not --detections")
    if args.normalize is not None or args.normalize_reference is not None:
        raise PartsupError("--normalize goes with detection; --at uses the classifier's own "
                           "colour normalisation")
    look, recipe, what = _look(args, ctx)
    dataset = open_dataset(ctx.registries, args.dataset, args.data_root, args.split, recipe,
                           parse_options(args.option))
    if len(dataset) == 0:
        raise DataError(f"dataset {args.dataset!r} split {args.split!r} has no images")
    verify = look.params.verify
    rows: list[tuple[str, str, Any, str]] = []  # image id, kind, detection, truth
    out = Path(args.out or f"eval/{args.dataset}-{args.split}-at")
    with staged_dir(out) as tmp, progress_bar(ctx.console) as bar:
        task = bar.add_task(f"classify points {args.dataset}/{args.split}", total=len(dataset))
        for i in range(len(dataset)):
            s = dataset[i]
            labels = s.point_labels or ("",) * len(s.points)
            if len(s.points):
                for det, truth in zip(look.classify(s.image, s.points, s.mpp), labels):
                    rows.append((s.id, "point", det, truth))
            if verify is not None and len(s.hard_negatives):
                for det in look.classify(s.image, s.hard_negatives, s.mpp):
                    rows.append((s.id, "hard_negative", det, ""))
            bar.advance(task)
        heads: dict[str, Any] = {}
        for head, classes in look.spec.heads.items():
            if verify is not None and head == verify.head:
                other = next(c for c in classes if c != verify.positive)
                truth = [verify.positive if kind == "point" else other
                         for _, kind, _, _ in rows]
                report = class_report(truth, [d.probs for _, _, d, _ in rows], classes,
                                      positive=verify.positive, threshold=verify.threshold)
            else:
                points = [(t, d.probs) for _, kind, d, t in rows if kind == "point"]
                report = class_report([t for t, _ in points], [p for _, p in points], classes)
            if report["n"]:
                heads[head] = report
        doc = {"dataset": args.dataset, "split": args.split,
               "root": str(getattr(dataset, "root", "")), "mode": "given points (--at)",
               "checkpoint": str(args.checkpoint), "classifier": what,
               "second_look": look.params.to_dict(), "images": len(dataset),
               "points": sum(kind == "point" for _, kind, _, _ in rows),
               "hard_negatives": sum(kind == "hard_negative" for _, kind, _, _ in rows),
               "heads": heads}
        (tmp / "metrics.json").write_text(json.dumps(doc, indent=1) + "\n")
        _write_points(tmp / "points.csv", rows, look.classes)
    for head, report in heads.items():
        objects = ("points and hard negatives" if verify is not None and head == verify.head
                   else "points with a known class")
        ctx.console.print(class_table(head, report, objects))
    if not heads:
        ctx.console.print("nothing to score: the split's points carry no class of any head and "
                          "there is no verify head with hard negatives")
    ctx.console.print(f"wrote {escape(str(out))}/metrics.json, points.csv")
    return 0


def _write_points(path: Path, rows: list[tuple[str, str, Any, str]], classes: list[str]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["image", "x", "y", "kind", "truth", "class", "score",
                    *(f"p_{c}" for c in classes)])
        for image, kind, d, truth in rows:
            w.writerow([image, f"{d.x:.2f}", f"{d.y:.2f}", kind, truth, d.label or "",
                        f"{d.score:.6f}", *(f"{d.probs[c]:.6f}" for c in classes)])


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def class_table(head: str, report: dict[str, Any], objects: str) -> Table:
    """A head's confusion matrix (rows: true class; columns: predicted), recall and one-vs-rest
    AUROC per class; balanced accuracy and AUROC in the title."""
    table = Table(title=f"head {escape(head)} on {report['n']} {objects}: balanced accuracy "
                        f"{_num(report['balanced_accuracy'])}, AUROC {_num(report['auroc'])}")
    table.add_column("true \\ predicted")
    for c in report["classes"]:
        table.add_column(escape(c), justify="right")
    table.add_column("recall", justify="right")
    table.add_column("AUROC (vs rest)", justify="right")
    for c, row in zip(report["classes"], report["confusion_matrix"]):
        table.add_row(escape(c), *map(str, row), _num(report["recall"][c]),
                      _num(report["auroc_per_class"][c]))
    return table
