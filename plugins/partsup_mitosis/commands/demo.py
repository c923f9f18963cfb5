"""``partsup demo``: what ``make demo`` runs, end to end on synthetic data.

1. generates the synthetic data (seconds) into ``<out>/data`` unless it is there already;
2. trains ``recipes/quickstart.yaml`` (PartMitosis) into ``<out>/partmitosis``;
3. calibrates w, s1, a1 on the validation split and evaluates on the test split;
4. does the same for the weak-only baseline (``model.mode=weak_only``, SegMitos) trained with
   the same data, patches, optimiser and iterations, into ``<out>/weak_only``;
5. prints a comparison table and writes ``<out>/summary.json``.

A completed training run found in its folder is reused (``--retrain`` trains again).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

#: the synthetic datasets of the demo: folder name -> generate() options
DEMO_DATA: dict[str, dict[str, Any]] = {
    "icpr2012": {"like": "icpr2012", "n_images": 16, "seed": 1, "size": 512,
                 "val_fraction": 0.0, "test_fraction": 0.0},
    "amida13": {"like": "amida13", "n_images": 80, "seed": 2, "size": 512,
                "val_fraction": 0.15, "test_fraction": 0.25},
}
MODELS = (("partmitosis", "PartMitosis", []),
          ("weak_only", "weak-only", ["model.mode=weak_only"]))
TARGET_F1 = 0.80


def recipes_dir() -> Path:
    """``recipes/`` of the source checkout (the package is installed editable), else ./recipes."""
    here = Path(__file__).resolve().parents[3] / "recipes"
    return here if here.is_dir() else Path("recipes")


def ensure_data(root: Path, console: Console) -> float:
    """Generate the demo datasets under ``root`` unless present; returns the seconds spent."""
    from partsup_mitosis.synth import MANIFEST, generate
    t0 = time.perf_counter()
    for name, options in DEMO_DATA.items():
        folder = root / name
        if (folder / MANIFEST).is_file():
            continue
        console.print(f"generating synthetic {name}-style data in {folder} ...", highlight=False)
        generate(folder, overwrite=True, **options)
    return time.perf_counter() - t0


def _completed(run_dir: Path, iterations: int) -> bool:
    from partsup.plugin import RunDir
    done = RunDir(run_dir).existing()
    return (run_dir / "best.pt").is_file() and bool(done) and done[-1][0] >= iterations


def _resumable(run_dir: Path, recipe: dict[str, Any]) -> bool:
    """An interrupted demo run of the same resolved recipe: continue it rather than start over."""
    import yaml
    from partsup.plugin import RunDir
    saved = run_dir / "recipe.yaml"
    if not saved.is_file() or not RunDir(run_dir).existing():
        return False
    return yaml.safe_load(saved.read_text()) == recipe


def _run_command(name: str, argv: list[str], ctx: Any) -> None:
    """Run another partsup command quietly (its tables go to a buffer)."""
    from partsup.plugin import Context, add_command_arguments
    command = ctx.registries.commands.get(name)
    command = command() if isinstance(command, type) else command
    parser = argparse.ArgumentParser(prog=f"partsup {name}")
    add_command_arguments(ctx.registries.pm, name, command, parser)
    quiet = Console(file=io.StringIO(), width=120)
    rc = command.run(parser.parse_args(argv), Context(registries=ctx.registries, console=quiet,
                                                      err=ctx.err, debug=ctx.debug))
    if rc:
        raise SystemExit(rc)


class DemoCommand:
    name = "demo"
    help = "generate synthetic data, train quickstart + the weak-only baseline, compare (make demo)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", default="runs/demo", help="demo folder (default runs/demo)")
        parser.add_argument("--recipe", default=None,
                            help="recipe to train (default recipes/quickstart.yaml)")
        parser.add_argument("--set", dest="overrides", action="append", default=[],
                            metavar="KEY=VALUE", help="override a recipe value (both models)")
        parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
        parser.add_argument("--retrain", action="store_true",
                            help="train again even if a completed run is in --out")
        parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                            help="skip the weak-only baseline")

    def run(self, args: argparse.Namespace, ctx: Any) -> int:
        start = time.perf_counter()
        out = Path(args.out)
        data = out / "data"
        os.environ.setdefault("PARTSUP_DEMO_DATA", str(data))
        data = Path(os.environ["PARTSUP_DEMO_DATA"])
        gen_s = ensure_data(data, ctx.console)
        recipe_path = Path(args.recipe) if args.recipe else recipes_dir() / "quickstart.yaml"
        rows = []
        for key, label, extra in MODELS:
            if key != "partmitosis" and not args.baseline:
                continue
            rows.append(self._one(key, label, recipe_path, [*args.overrides, *extra], out,
                                  args, ctx))
        total = time.perf_counter() - start
        self._report(rows, gen_s, total, out, ctx.console)
        ok = rows[0]["test"]["f1"] >= TARGET_F1
        return 0 if ok else 1

    def _one(self, key: str, label: str, recipe_path: Path, overrides: list[str], out: Path,
             args: argparse.Namespace, ctx: Any) -> dict[str, Any]:
        from partsup.plugin import fit, load_run
        if args.device:
            overrides = [*overrides, f"device={args.device}"]
        recipe, registries = load_run(recipe_path, overrides, ctx.plugin_modules)
        run_dir = out / key
        t0 = time.perf_counter()
        if args.retrain or not _completed(run_dir, recipe["train"]["iterations"]):
            resume = not args.retrain and _resumable(run_dir, recipe)
            if run_dir.exists() and not resume:
                import shutil
                shutil.rmtree(run_dir)
            ctx.console.rule(f"[bold]{label}: " + ("resuming the interrupted training"
                                                    if resume else "training"))
            result = fit(recipe, registries, run_dir, console=ctx.console, resume=resume)
            if not result.completed:
                raise SystemExit(130)
        else:
            ctx.console.print(f"{label}: reusing the completed run in {run_dir} "
                              f"(--retrain to train again)", highlight=False)
        train_s = time.perf_counter() - t0
        ckpt = run_dir / "best.pt"
        device = ["--device", args.device or recipe["device"]]
        ctx.console.print(f"{label}: calibrating w, s1, a1 on the validation split ...",
                          highlight=False)
        t1 = time.perf_counter()
        _run_command("calibrate", ["--checkpoint", str(ckpt), "--out",
                                   str(run_dir / "calibration"), *device], ctx)
        cal = json.loads((run_dir / "calibration" / "calibration.json").read_text())
        test = recipe["data"]["test"]
        ctx.console.print(f"{label}: evaluating on the test split ...", highlight=False)
        _run_command("evaluate", ["--checkpoint", str(ckpt), "--dataset", test["name"],
                                  "--data-root", str(test["root"]), "--split", test["split"],
                                  "--out", str(run_dir / "eval"), "--no-overlays", *device], ctx)
        metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
        return {"key": key, "label": label, "train_s": train_s,
                "eval_s": time.perf_counter() - t1, "val": cal["best"],
                "test": metrics["totals"], "checkpoint": str(ckpt)}

    def _report(self, rows: list[dict[str, Any]], gen_s: float, total: float, out: Path,
                console: Console) -> None:
        table = Table(title="partsup demo: synthetic AMIDA13-style test split, 8 um, "
                            "greedy one-to-one")
        for col in ("model", "val F1", "test P", "test R", "test F1", "TP/FP/FN", "train"):
            table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
        for r in rows:
            v, t = r["val"], r["test"]
            table.add_row(r["label"], f"{v['f1']:.3f}", f"{t['precision']:.3f}",
                          f"{t['recall']:.3f}", f"[bold]{t['f1']:.3f}[/]",
                          f"{t['tp']}/{t['fp']}/{t['fn']}", f"{r['train_s']:.0f} s")
        console.print(table)
        console.print("calibrated on the validation split: " + "; ".join(
            f"{r['label']} " + (f"w={r['val']['w']:g} " if r["key"] != "weak_only" else "")
            + f"s1={r['val']['s1']:g} a1={r['val']['a1']:g}" for r in rows), highlight=False)
        f1 = rows[0]["test"]["f1"]
        verdict = "[green]reached[/]" if f1 >= TARGET_F1 else "[red]NOT reached[/]"
        console.print(f"PartMitosis test F1 {f1:.3f}: target {TARGET_F1:.2f} {verdict}. "
                      f"Data generation {gen_s:.0f} s; demo total {total:.0f} s "
                      f"({total / 60:.1f} min). Checkpoints: {rows[0]['checkpoint']}")
        summary = {"rows": rows, "data_seconds": gen_s, "total_seconds": total,
                   "target_f1": TARGET_F1}
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


COMMAND = DemoCommand
