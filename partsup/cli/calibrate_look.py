"""``partsup calibrate`` with a second look: the candidate rule (w, threshold, s1, a1) and the
crop classifier's verify threshold swept together on every view
(:class:`partsup.evaluation.second_look.JointSweep`), the grid point with the best mean F1
of the views chosen, and the classifier, its rules and that candidate rule stored in the
checkpoint's ``second_look`` section (:func:`partsup.checkpoint.second_look.attach_second_look`).

``calibration.json`` holds every joint grid row (``verify_threshold`` in each), ``best``, and
``before``: the best of the candidate rule alone over the same grid (what a calibration
without the second look would choose), with ``second_look`` (classifier, rules, F1 before and
after); ``f1_vs_w.png`` draws both. Also :func:`per_w_table`, the printed table of both paths.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from rich.markup import escape
from rich.table import Table

from partsup.cli.common import normalize_label, progress_bar, staged_dir
from partsup.evaluation.calibration import combine, plot_f1_vs_w, write_json
from partsup.evaluation.protocols import protocol_dict

__all__ = ["calibrate_with_look", "per_w_table"]

#: the detection keys a calibration stores (``checkpoint["detect"]`` or the candidate rule)
STORED = ("w", "threshold", "s1", "a1", "sigma", "area_unit")


def per_w_table(result: Any, title: str) -> Table:
    table = Table(title=title)
    views = bool(result.best.view_f1)
    verify = result.best.verify is not None
    for c in ("w", "threshold", "s1", "a1", *(["verify >="] if verify else []), "TP", "FP",
              "FN", "precision", "recall", "mean F1 of views" if views else "F1"):
        table.add_column(c, justify="right")
    for r in result.per_w:
        c = r.counts
        mark = "[bold green]" if r is result.best else ""
        end = "[/]" if mark else ""
        table.add_row(*(f"{mark}{v}{end}" for v in (
            f"{r.w:g}", f"{r.threshold}", f"{r.s1:g}", f"{r.a1:g}",
            *([f"{r.verify:g}"] if verify else []), c.tp, c.fp, c.fn, f"{c.precision:.3f}",
            f"{c.recall:.3f}", f"{r.score:.3f}")))
    return table


def calibrate_with_look(args: argparse.Namespace, ctx: Any, detector: Any, ckpt: dict[str, Any],
                        look: Any, classifier: dict[str, Any], views: Sequence[tuple],
                        grid: dict[str, Any], verify_grid: list[float], out: Path,
                        normalize: Any) -> int:
    """Sweep, report, and (unless ``--dry-run``) store; the exit code. ``views``: ``(label,
    dataset, protocol)`` each; ``grid``: the candidate grids (w, threshold, s1, a1)."""
    from partsup.evaluation.second_look import JointSweep
    params = detector.params
    befores, afters, classified = [], [], 0
    with staged_dir(out, "partsup calibrate") as tmp, progress_bar(ctx.console) as bar:
        for label, ds, proto in views:
            joint = JointSweep(look, params, ctx.registries, proto, grid["w"],
                               grid["threshold"], grid["s1"], grid["a1"], verify_grid)
            task = bar.add_task(f"maps and second look {label}", total=len(ds))
            for i in range(len(ds)):
                s = ds[i]
                joint.add(*detector.maps(s.image), s.image, s.points, s.mpp)
                bar.advance(task)
            before, after = joint.results()
            befores.append(before)
            afters.append(after)
            classified += joint.classified
        before, result = combine(befores), combine(afters)
        best = result.params(params)
        dataset, protocol = views[0][1], views[0][2]
        summary = {
            "classifier": str(args.second_look or f"{args.checkpoint} (its own second look)"),
            "verify": None if look.params.verify is None else {
                "head": look.params.verify.head, "positive": look.params.verify.positive},
            "label": None if look.params.label is None else {"head": look.params.label.head},
            "verify_grid": verify_grid if look.params.verify is not None else [],
            "candidates_classified": classified,
            "f1_before": before.best.score, "f1_after": result.best.score}
        write_json(result, tmp / "calibration.json", {
            "checkpoint": str(args.checkpoint), "dataset": views[0][0].split("/")[0],
            "split": args.split, "images": sum(len(v[1]) for v in views),
            "protocol": protocol_dict(protocol),
            "views": [{"view": label, "images": len(ds), "best_f1": r.best.counts.f1,
                       "best_f1_before": b.best.counts.f1}
                      for (label, ds, _), r, b in zip(views, afters, befores)],
            "normalize": normalize_label(detector), "detect": best.to_dict(),
            "grid": {k: grid[k] for k in ("w", "threshold", "s1", "a1")},
            "second_look": summary,
            "before": {"best": before.best.as_dict(),
                       "per_w": [r.as_dict() for r in before.per_w]}})
        plot_f1_vs_w(result, tmp / "f1_vs_w.png",
                     f"{views[0][0]}: F1 vs fusion weight w, with the second look "
                     f"({protocol.name})", before=before)
    _report(ctx.console, args, views, dataset, protocol, before, result, params)
    b = result.best
    if args.dry_run:
        ctx.console.print("dry run: checkpoint left unchanged")
    else:
        _store(args, ckpt, classifier, look, b, best, normalize)
        rule = "" if b.verify is None else f", its verify threshold {b.verify:g}"
        colour = "" if normalize == {} else (
            f" and the colour normalisation ({normalize_label(detector)})")
        ctx.console.print(f"stored the second look{rule} and its candidate rule (w, threshold, "
                          f"s1, a1){colour} in {escape(str(args.checkpoint))}")
    ctx.console.print(f"wrote {escape(str(out))}/calibration.json and f1_vs_w.png")
    return 0


def _report(console: Any, args: argparse.Namespace, views: Sequence[tuple], dataset: Any,
            protocol: Any, before: Any, result: Any, params: Any) -> None:
    on = (f"{views[0][0]} ({len(dataset)} images" if len(views) == 1 else
          f"{len(views)} views ({sum(len(v[1]) for v in views)} images")
    console.print(per_w_table(result, f"calibration with the second look on {on}, "
                                      f"{protocol.name}): best threshold, s1, a1 and verify "
                                      f"threshold at each w"))
    if result.weak_only:
        console.print("weak-only model: w has no effect; the other values were tuned")
    for name, res in (("before the second look (candidate rule alone)", before),
                      ("after the second look", result)):
        r = res.best
        verify = "" if r.verify is None else f" verify>={r.verify:g}"
        console.print(f"{name}: w={r.w:g} threshold={r.threshold} s1={r.s1:g} a1={r.a1:g} "
                      f"{params.area_unit}{verify} -> F1 {r.counts.f1:.3f} (P "
                      f"{r.counts.precision:.3f}, R {r.counts.recall:.3f})"
                      + (f"; mean F1 of the views {r.score:.3f}" if r.view_f1 else ""))
        for (label, ds, _), f1 in zip(views, r.view_f1):
            console.print(f"  view {escape(label)} ({len(ds)} images): F1 {f1:.3f}")
    if result.best.score < before.best.score:
        console.print(f"note: the second look lowers the best F1 on these views ("
                      f"{before.best.score:.3f} -> {result.best.score:.3f}); a verify threshold "
                      f"of 0 (--verify-threshold 0,...) keeps every candidate")


def _store(args: argparse.Namespace, ckpt: dict[str, Any], classifier: dict[str, Any],
           look: Any, row: Any, best: Any, normalize: Any) -> None:
    """The checkpoint rewritten (atomically) with the second look: the classifier, its verify
    rule at ``row.verify``, its label rule, and the candidate rule ``best``."""
    import dataclasses

    from partsup.checkpoint.files import save_checkpoint
    from partsup.checkpoint.second_look import attach_second_look
    rules = look.params
    verify = None if rules.verify is None else dataclasses.replace(rules.verify,
                                                                   threshold=float(row.verify))
    candidate = {k: v for k, v in best.to_dict().items() if k in STORED}
    new = attach_second_look(ckpt, classifier, dataclasses.replace(
        rules, verify=verify, candidate=candidate))
    if normalize != {}:
        recipe = dict(new.get("recipe") or {})
        recipe["data"] = {**(recipe.get("data") or {}), "normalize": normalize}
        new["recipe"] = recipe
    save_checkpoint(args.checkpoint, new)
