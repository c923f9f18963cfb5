"""Training throughput, and whether data loading keeps up with the steps.

    python bench/train_speed.py [--recipe recipes/quickstart.yaml] [--set KEY=VALUE ...]
                                [--steps 30] [--warmup 5] [--device auto] [--threads N]
                                [--json train_speed.json]

Builds the recipe's run exactly as ``partsup train`` does (``partsup.training.run.build``:
model, losses, patch stream with ``data.num_workers`` loader processes) and measures, after
``--warmup`` steps each:

* **loader**: batches per second from the patch stream alone (``TrainStream.batch``: sampling,
  labels, augmentation, collation; workers prefetching as in training);
* **step**: optimisation steps per second on batches already in memory (forward, both losses,
  backward, optimiser; CUDA synchronised);
* **train**: both together, as the training loop runs them (iterations/s and samples/s).

The loader keeps up when its rate is at least 2x the step rate. The recipe's data roots must
exist; for the quickstart the synthetic data is generated into a temporary folder
(``$PARTSUP_DEMO_DATA``) unless that variable points at it already. The model is randomly
initialised (``model.backbone.weights=null``): speed does not depend on the weights.

    # the paper's FCN-32s branches on the quickstart's synthetic data, 500 px patches, batch 1
    python bench/train_speed.py --set "model.backbone={name: fcn32s}" \\
        --set model.shared_backbone=false --set data.patch.size=500 --set train.batch_size=1
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", type=Path, default=REPO / "recipes" / "quickstart.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    return ap.parse_args(argv)


def _sync(device: Any) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def rate(fn: Any, steps: int, warmup: int, device: Any) -> float:
    """Calls per second of ``fn(i)`` over ``steps`` calls after ``warmup`` calls."""
    for i in range(warmup):
        fn(i)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        fn(i)
    _sync(device)
    return steps / (time.perf_counter() - t0)


def measure(recipe: dict[str, Any], registries: Any, steps: int, warmup: int) -> dict[str, Any]:
    from partsup.training.run import build, prepare_stage
    from partsup.training.stages import plan_stages
    from partsup.training.step import train_step
    run = build(recipe, registries)
    stage = plan_stages(recipe)[-1] if recipe["model"]["mode"] == "weak_only" else \
        plan_stages(recipe)[0]
    opt, sched = prepare_stage(run, stage)
    run.data.set_stage(stage)
    n = warmup + steps
    loader = rate(run.data.batch, steps, warmup, run.device)  # positions 0 .. n-1
    batches = [run.data.batch(i) for i in range(n, n + min(n, 8))]  # in memory
    step = rate(lambda i: train_step(run, batches[i % len(batches)], stage.name, opt, sched),
                steps, warmup, run.device)
    run.data.set_stage(stage)
    offset = 2 * n + 8

    def both(i: int) -> None:
        train_step(run, run.data.batch(offset + i), stage.name, opt, sched)

    train = rate(both, steps, warmup, run.device)
    b = int(recipe["train"]["batch_size"])
    return {"stage": stage.name, "batch_size": b, "num_workers": recipe["data"]["num_workers"],
            "loader_batches_s": loader, "step_it_s": step, "train_it_s": train,
            "train_samples_s": train * b, "loader_over_step": loader / step}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from partsup.recipe import load_run
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if "PARTSUP_DEMO_DATA" not in os.environ:
            from partsup_mitosis.synth import generate
            for name, n in (("icpr2012", 16), ("amida13", 32)):  # the quickstart's two styles
                generate(Path(tmp) / name, like=name, n_images=n, seed=1, size=512,
                         **({"val_fraction": 0.0, "test_fraction": 0.0}
                            if name == "icpr2012" else {}))
            os.environ["PARTSUP_DEMO_DATA"] = tmp
        overrides = [f"device={args.device}", *args.overrides]
        recipe, registries = load_run(args.recipe, overrides, ())
        if recipe["model"]["backbone"].get("weights"):  # random init: no weight files needed
            recipe, registries = load_run(args.recipe, [*overrides, "model.backbone.weights=null"])
        r = measure(recipe, registries, args.steps, args.warmup)
    device = "cuda" if recipe["device"] != "cpu" and torch.cuda.is_available() else "cpu"
    print(f"{recipe['name']} ({', '.join(args.overrides) or 'as written'}) on {device}, "
          f"{torch.get_num_threads()} CPU thread(s), batch {r['batch_size']}, "
          f"{r['num_workers']} loader worker(s), stage {r['stage']}")
    print(f"loader {r['loader_batches_s']:.2f} batches/s | step {r['step_it_s']:.2f} it/s | "
          f"train {r['train_it_s']:.2f} it/s = {r['train_samples_s']:.1f} samples/s | "
          f"loader / step = {r['loader_over_step']:.1f}x "
          f"({'keeps up' if r['loader_over_step'] >= 2 else 'below the 2x target'})")
    if args.json:
        out = {"recipe": str(args.recipe), "overrides": args.overrides, "device": device,
               "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
               "threads": torch.get_num_threads(), "cores": os.cpu_count(),
               "platform": platform.platform(), "loadavg": os.getloadavg(),
               "steps": args.steps, "warmup": args.warmup, **r}
        args.json.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
