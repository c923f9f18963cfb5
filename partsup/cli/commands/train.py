"""``partsup train RECIPE [--set k=v ...] [--out runs/NAME] [--resume] [--device ...]``."""
from __future__ import annotations

import argparse
import os
import shlex
import signal
from pathlib import Path
from typing import Sequence


def resume_command(out: str | Path, plugins: Sequence[str] = ()) -> str:
    """The command that continues the run in ``out`` from its own resolved recipe."""
    flags = "".join(f"--plugin {shlex.quote(m)} " for m in plugins)
    return f"partsup {flags}train {shlex.quote(str(out))} --resume"


class TrainCommand:
    name = "train"
    help = "train a recipe (stage-wise or end-to-end); --resume continues a stopped run"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("recipe", help="recipe YAML, or a run folder holding recipe.yaml")
        parser.add_argument("--set", dest="overrides", action="append", default=[],
                            metavar="KEY=VALUE", help="override a recipe value (repeatable), "
                            "e.g. --set train.iterations=500")
        parser.add_argument("--out", default=None,
                            help="run folder (default runs/<recipe name>)")
        parser.add_argument("--resume", action="store_true",
                            help="continue from the newest checkpoint in the run folder")
        parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                            help="override the recipe's device")

    def run(self, args: argparse.Namespace, ctx) -> int:
        from partsup.recipe import load_run
        from partsup.training.loop import fit

        recipe_path = Path(args.recipe)
        out = args.out
        if recipe_path.is_dir():  # a run folder: its resolved recipe, and the folder itself
            out = out or str(recipe_path)
            recipe_path = recipe_path / "recipe.yaml"
        overrides = list(args.overrides)
        if args.device:
            overrides.append(f"device={args.device}")
        recipe, registries = load_run(recipe_path, overrides, ctx.plugin_modules)
        out = out or str(Path("runs") / recipe["name"])
        result = fit(recipe, registries, out, resume=args.resume, console=ctx.console)
        if not result.completed:
            ctx.err.print(f"stopped at iteration {result.iteration}; continue with: "
                          f"{resume_command(out, ctx.plugin_modules)} (the run folder's "
                          f"recipe.yaml is the recipe it trains, --set overrides included)",
                          highlight=False)
            return 130 if result.interrupted_by == signal.SIGINT else 143
        if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports
            return 0
        best = (f", best validation {result.score_name} {result.best_f1:.3f}"
                if result.best_f1 is not None else "")
        ctx.console.print(f"done: {result.iteration} iterations{best}; model {result.best_path}",
                          highlight=False)
        return 0


COMMAND = TrainCommand
