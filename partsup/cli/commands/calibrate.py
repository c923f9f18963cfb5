"""``partsup calibrate``: tune w, threshold, s1, a1 on a validation split and store them in the checkpoint.

Runs the network once per image, caches both maps, sweeps the recipe's ``calibrate:`` grids
(:mod:`partsup.evaluation.calibration`), prints the best row for each w and the overall best, saves
``calibration.json`` and ``f1_vs_w.png`` (paper Fig. 8) in ``--out``, and writes w, threshold,
s1, a1 (with
sigma and area_unit) into ``checkpoint["detect"]`` atomically, so that ``evaluate`` and
``predict`` need nothing else.

``--view "NAME[:SPLIT] KEY=VALUE ..."`` (repeatable) adds validation views: other datasets, or
the same dataset with other reader options (another density, source, layout). Every view is
swept with the same grid and the parameters with the best **mean F1 over the views** win, so
one rule is chosen that holds on all of them.

``--second-look CLASSIFIER.pt`` (a crop classifier's run, ``task: classify``) sweeps the
candidate rule together with the classifier's verify threshold (``--verify-threshold``) on the
same views (:class:`partsup.evaluation.second_look.JointSweep`) and stores the classifier, its
rules and the chosen candidate rule in the checkpoint's ``second_look`` section; a checkpoint
that already has a second look is always recalibrated that way, with its own classifier.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from partsup.evaluation.calibration import (MapCache, combine, plot_f1_vs_w, sweep,
                                            write_json)
from partsup.cli.common import (add_checkpoint_arguments, add_normalize_arguments,
                                add_option_argument, apply_normalize_arguments, normalize_label,
                                parse_options, progress_bar, staged_dir, take_checkpoint)
from partsup.errors import DataError, PartsupError, RecipeError
from partsup.data.datasets import open_dataset
from partsup.evaluation.protocols import protocol_dict, resolve_protocol
from partsup.evaluation.second_look import parse_verify_grid
from partsup.cli.calibrate_look import per_w_table


def parse_grid(text: str | None, option: str) -> list[float] | None:
    """``"0.3,0.5"`` -> ``[0.3, 0.5]``; None stays None."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise RecipeError(f"{option}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise RecipeError(f"{option}: give at least one value")
    return values


def parse_thresholds(text: str | None) -> list[Any] | None:
    """``"otsu,0.4,0.5"`` -> ``["otsu", 0.4, 0.5]`` (checked); None stays None."""
    if text is None:
        return None
    from partsup.inference.detector import check_threshold
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise RecipeError("--threshold: give at least one value (otsu or a probability)")
    return [check_threshold(v, "--threshold") for v in values]


def default_dataset(recipe: dict[str, Any]) -> str | None:
    """Name of the recipe's validation set (``data.val``), if any."""
    return ((recipe.get("data") or {}).get("val") or {}).get("name")


def parse_view(spec: str, default_split: str) -> tuple[str, str, dict[str, Any]]:
    """``"ami-br:val density=40 fields=200"`` -> ``("ami-br", "val", {"density": 40, ...})``."""
    words = spec.split()
    if not words or "=" in words[0]:
        raise RecipeError(f"--view {spec!r}: expected NAME[:SPLIT] then KEY=VALUE options, "
                          f"e.g. --view 'my-set:val density=40'")
    name, _, split = words[0].partition(":")
    return name, split or default_split, parse_options(words[1:])


def view_label(name: str, split: str, options: dict[str, Any]) -> str:
    return " ".join([f"{name}/{split}", *(f"{k}={v}" for k, v in options.items())])


class CalibrateCommand:
    name = "calibrate"
    help = "tune the fusion weight w and the filters s1, a1 on a validation split (paper III.D)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_checkpoint_arguments(parser, "checkpoint to calibrate (updated in place, "
                                 "atomically), or a run folder (its best.pt)")
        parser.add_argument("--dataset", help="dataset name (default: the recipe's data.val)")
        parser.add_argument("--data-root", help="the dataset's folder")
        parser.add_argument("--split", default="val",
                            help="the dataset split to tune on (default val: never the test "
                                 "split you report; `partsup datasets NAME` shows the splits)")
        add_option_argument(parser)
        parser.add_argument("--radius-um", type=float, default=None,
                            help="match radius in micrometres (overrides the protocol)")
        parser.add_argument("--radius-px", type=float, default=None,
                            help="match radius in pixels, e.g. 20 or 32")
        parser.add_argument("--protocol", help="matching protocol (default: the dataset's own)")
        parser.add_argument("--out", help="folder for calibration.json and f1_vs_w.png "
                            "(default: <checkpoint folder>/calibration)")
        parser.add_argument("--w", help="comma-separated grid (default: recipe calibrate.w)")
        parser.add_argument("--s1", help="comma-separated grid (default: recipe calibrate.s1)")
        parser.add_argument("--a1", help="comma-separated grid, in detect.area_unit "
                            "(default: recipe calibrate.a1)")
        parser.add_argument("--threshold", help="comma-separated foreground rules to try: otsu "
                            "and/or probabilities, e.g. otsu,0.3,0.5,0.7 (default: recipe "
                            "calibrate.threshold, else detect.threshold)")
        parser.add_argument("--view", action="append", default=[], metavar="SPEC",
                            help="another validation view, 'NAME[:SPLIT] KEY=VALUE ...' "
                                 "(repeatable; split defaults to --split): the grid point "
                                 "with the best mean F1 over all views wins")
        parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
        add_normalize_arguments(parser)
        parser.add_argument("--dry-run", action="store_true",
                            help="sweep and report, but leave the checkpoint unchanged")
        parser.add_argument("--second-look", metavar="CLASSIFIER",
                            help="a crop classifier's checkpoint (task: classify) or run folder: "
                                 "sweep the candidate rule together with its verify threshold "
                                 "and store it in the checkpoint as its second look")
        parser.add_argument("--verify-threshold", metavar="GRID",
                            help="comma-separated verify thresholds to try with a second look "
                                 "(keep a candidate when p(positive) >= it; 0 keeps all; "
                                 "default 0.1,0.2,...,0.9)")

    def run(self, args: argparse.Namespace, ctx: Any) -> int:
        from partsup.checkpoint.files import checkpoint_file, update_detect_params
        from partsup.inference.detector import load_detector

        take_checkpoint(args)
        args.checkpoint = str(checkpoint_file(args.checkpoint))  # a run folder: its best.pt
        refuse_while_training(Path(args.checkpoint))
        detector, ckpt = load_detector(args.checkpoint, ctx.registries, args.device)
        normalize = apply_normalize_arguments(detector, args, ctx.registries)
        look, classifier = second_look_of(args, ckpt, detector, ctx.registries)
        if look is None and args.verify_threshold is not None:
            raise RecipeError("--verify-threshold goes with a second look: pass --second-look "
                              "CLASSIFIER.pt (or calibrate a checkpoint that has one)")
        verify_grid = parse_verify_grid(args.verify_threshold)
        params = detector.params
        recipe = ckpt.get("recipe") or {}
        name = args.dataset or default_dataset(recipe)
        if not name:
            raise DataError(f"{args.checkpoint}: its recipe has no data.val; pass --dataset")
        specs = [(name, args.split, parse_options(args.option))]
        specs += [parse_view(v, args.split) for v in args.view]
        views = []
        for v_name, v_split, options in specs:
            root = options.pop("root", None) or (args.data_root if v_name == name else None)
            root = None if root is None else str(root)
            ds = open_dataset(ctx.registries, v_name, root, v_split, recipe, options)
            if len(ds) == 0:
                raise DataError(f"dataset {v_name!r} split {v_split!r} has no images")
            proto = resolve_protocol(ctx.registries, args.protocol, v_name, recipe,
                                     args.radius_um, args.radius_px)
            views.append((view_label(v_name, v_split, options), ds, proto))
        dataset, protocol = views[0][1], views[0][2]
        grid = dict(recipe.get("calibrate") or {})
        for key in ("w", "s1", "a1"):
            grid[key] = parse_grid(getattr(args, key), f"--{key}") or grid.get(key)
            if not grid[key]:
                raise RecipeError(f"{args.checkpoint}: recipe calibrate.{key} is empty; "
                                  f"pass --{key}")
        grid["threshold"] = parse_thresholds(args.threshold) or grid.get("threshold")
        out = Path(args.out or Path(args.checkpoint).parent / "calibration")
        if look is not None:
            if args.second_look is None:
                ctx.console.print(f"{escape(str(args.checkpoint))} has a second look (a crop "
                                  f"classifier): recalibrating its candidate rule and verify "
                                  f"threshold with it")
            from partsup.cli.calibrate_look import calibrate_with_look
            return calibrate_with_look(args, ctx, detector, ckpt, look, classifier, views,
                                       grid, verify_grid, out, normalize)

        with staged_dir(out, "partsup calibrate") as tmp, \
                tempfile.TemporaryDirectory(dir=tmp) as cache_dir, progress_bar(ctx.console) as bar:
            cache = MapCache(cache_dir)
            results = []
            for label, ds, proto in views:
                task = bar.add_task(f"maps {label}", total=len(ds))
                images = []
                for i in range(len(ds)):
                    s = ds[i]
                    images.append(cache.add(s.id, *detector.maps(s.image), s.points, s.mpp))
                    bar.advance(task)
                wtask = bar.add_task(f"sweep w {label}", total=len(grid["w"]))
                results.append(sweep(images, params, ctx.registries, proto, grid["w"],
                                     grid["s1"], grid["a1"],
                                     progress=lambda w, t=wtask: bar.advance(t),
                                     threshold=grid["threshold"]))
                del images
            result = combine(results)
            best = result.params(params)
            write_json(result, tmp / "calibration.json", {
                "checkpoint": str(args.checkpoint), "dataset": name, "split": args.split,
                "images": sum(len(v[1]) for v in views), "protocol": protocol_dict(protocol),
                "views": [{"view": label, "images": len(ds), "best_f1": r.best.counts.f1}
                          for (label, ds, _), r in zip(views, results)],
                "normalize": normalize_label(detector), "detect": best.to_dict(), "grid": {k: grid[k] for k in ("w", "threshold", "s1", "a1")}})
            plot_f1_vs_w(result, tmp / "f1_vs_w.png",
                         f"{name}/{args.split}: F1 vs fusion weight w ({protocol.name})")

        on = (f"{name}/{args.split} ({len(dataset)} images" if len(views) == 1 else
              f"{len(views)} views ({sum(len(v[1]) for v in views)} images")
        ctx.console.print(per_w_table(result, f"calibration on {on}, {protocol.name}): best "
                                      f"s1, a1 at each w"))
        b = result.best
        if result.weak_only:
            ctx.console.print("weak-only model: w has no effect; only s1 and a1 were tuned")
        ctx.console.print(f"best: w={b.w:g} threshold={b.threshold} s1={b.s1:g} a1={b.a1:g} {params.area_unit} -> "
                          f"F1 {b.counts.f1:.3f} (P {b.counts.precision:.3f}, "
                          f"R {b.counts.recall:.3f})")
        for (label, ds, _), f1 in zip(views, b.view_f1):
            ctx.console.print(f"  view {escape(label)} ({len(ds)} images): F1 {f1:.3f}")
        if b.view_f1:
            ctx.console.print(f"  mean F1 of the views {b.score:.3f} (what was maximised)")
        if args.dry_run:
            ctx.console.print("dry run: checkpoint left unchanged")
        else:
            stored = {k: v for k, v in best.to_dict().items()
                      if k in ("w", "threshold", "s1", "a1", "sigma", "area_unit")}
            if normalize == {}:
                update_detect_params(args.checkpoint, stored)
            else:
                update_detect_params(args.checkpoint, stored, normalize=normalize)
            colour = "" if normalize == {} else (
                f" and the colour normalisation ({normalize_label(detector)})")
            ctx.console.print(f"stored w, threshold, s1, a1{colour} in "
                              f"{escape(str(args.checkpoint))}")
        ctx.console.print(f"wrote {escape(str(out))}/calibration.json and f1_vs_w.png")
        return 0


def second_look_of(args: argparse.Namespace, ckpt: dict[str, Any], detector: Any,
                   registries: Any) -> tuple[Any, dict[str, Any] | None]:
    """The second look to calibrate with, and the classifier checkpoint dict to store: from
    ``--second-look`` (rules from its recipe), else the checkpoint's own; ``(None, None)``
    when there is neither."""
    from partsup.checkpoint.files import checkpoint_file, load_checkpoint
    from partsup.checkpoint.safetensors_file import is_safetensors
    from partsup.errors import CheckpointError
    from partsup.evaluation.second_look import classifier_look, is_classifier
    if args.second_look is None:
        section = ckpt.get("second_look")
        if detector.second_look is None or not isinstance(section, dict):
            return None, None
        return detector.second_look, {k: section.get(k) for k in
                                      ("recipe", "model", "normalization")}
    if is_safetensors(Path(args.checkpoint)):
        raise CheckpointError(f"{args.checkpoint}: a .safetensors file cannot carry a second "
                              f"look; calibrate the .pt checkpoint")
    path = checkpoint_file(args.second_look)
    classifier = load_checkpoint(path)
    if not is_classifier(classifier):
        task = (classifier.get("recipe") or {}).get("task", "segment")
        raise CheckpointError(f"--second-look {path} is not a crop classifier (its recipe "
                              f"says task: {task}); give a checkpoint trained with task: "
                              f"classify")
    look = classifier_look(classifier, registries, detector.device, str(path),
                           tta=detector.params.tta)
    return look, classifier


COMMAND = CalibrateCommand


def refuse_while_training(checkpoint: Path) -> None:
    """PartsupError when a training holds the checkpoint's run folder (``train.lock``): it may
    replace ``best.pt`` while calibration tunes it, and the stored values would belong to
    other weights."""
    from partsup.training.rundir import LOCK, training_holder
    pid = training_holder(checkpoint.parent)
    if pid is not None:
        raise PartsupError(f"{checkpoint}: its run folder is in training (PID {pid} holds "
                           f"{checkpoint.parent / LOCK}); calibrate it after the training ends")
