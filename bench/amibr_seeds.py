"""PartMitosis (real set A) against its weak-only twin over several seeds, on real tissue.

For every seed and both recipes (``recipes/partmitosis-amibr.yaml`` and
``recipes/segmitos-amibr.yaml``: the same data, network, schedule and detection rule, with and
without set A and the strong head) this runs the documented commands, in order:

1. ``partsup train RECIPE --set seed=S --set train.iterations=N --out RUNS/<name>-s<S>``
2. ``partsup calibrate`` on validation fields (fixed thresholds; ``--val-fields`` of them),
   stored in the run's ``best.pt``;
3. ``bench/amibr_quality.py`` on test fields (``--densities``, the ``discs`` and ``windows``
   layouts, and ``ami-br-crops``), ``--test-fields`` per view;

then prints test F1 per view as mean and standard deviation over the seeds for each recipe,
and writes everything to ``RUNS/seeds.json``. A step whose output exists is not run again, so
an interrupted comparison continues where it stopped (training itself resumes from its last
checkpoint).

    .venv/bin/python bench/amibr_seeds.py --seeds 1,2,3 --iterations 2000 --runs runs/seeds

Skips with a message when ../shared/data/ami-br is absent.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
AMIBR = REPO.parent / "shared" / "data" / "ami-br"
RECIPES = {"partmitosis": "recipes/partmitosis-amibr.yaml",
           "weak-only": "recipes/segmitos-amibr.yaml"}
GRID = {"partmitosis": ["--w", "0.5,0.7,0.9,1"], "weak-only": []}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated training seeds")
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--runs", type=Path, default=Path("runs/seeds"), help="output folder")
    ap.add_argument("--val-fields", type=int, default=400,
                    help="validation fields for calibration (density 8)")
    ap.add_argument("--test-fields", type=int, default=None,
                    help="a seeded subset of test fields per view (default: all)")
    ap.add_argument("--fields", type=int, default=None,
                    help="a quick check: N validation and N test fields per view")
    ap.add_argument("--densities", default="8", help="test densities (figures per 2000^2 px)")
    ap.add_argument("--recipes", default="partmitosis,weak-only")
    ap.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra recipe override for training (repeatable)")
    ap.add_argument("--root", type=Path, default=AMIBR, help="the AMi-Br folder")
    ap.add_argument("--strong-alone", action="store_true",
                    help="also score PartMitosis's strong map alone (w = 0, s1 and the "
                         "threshold calibrated for it) and sweep w on validation")
    return ap.parse_args(argv)


def step(cmd: list[str], done: Path, root: Path) -> None:
    """Run ``cmd`` unless ``done`` exists; stop the comparison with its message if it fails."""
    if done.exists():
        print(f"  (kept) {done}", flush=True)
        return
    print("  $ " + " ".join(cmd), flush=True)
    env = {**os.environ, "PARTSUP_DATA": str(root.parent)}  # $PARTSUP_DATA/ami-br = root
    proc = subprocess.run(cmd, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")


def one_run(name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    run = args.runs / f"{name}-s{seed}"
    partsup = [sys.executable, "-m", "partsup"]
    resume = ["--resume"] if (run / "checkpoints").is_dir() else []  # an interrupted run
    step(partsup + ["train", RECIPES[name], "--set", f"seed={seed}",
                    "--set", f"train.iterations={args.iterations}",
                    "--set", f"train.val_every={max(args.iterations // 2, 1)}",
                    *[a for kv in args.train_set for a in ("--set", kv)],
                    "--out", str(run), *resume],
         run / "checkpoints" / f"iter-{args.iterations:08d}.pt", args.root)
    calib = run / "calib8"
    step(partsup + ["calibrate", "--checkpoint", str(run / "best.pt"), "--dataset", "ami-br",
                    "--split", "val", "--option", f"fields={args.val_fields}",
                    "--threshold", "0.4,0.5,0.6,0.7", "--s1", "0.5,0.6,0.7,0.8,0.85,0.9",
                    "--a1", "0", *GRID[name], "--out", str(calib)], calib / "calibration.json", args.root)
    quality = run / "quality.json"
    fields = [] if args.test_fields is None else ["--fields", str(args.test_fields)]
    step([sys.executable, str(REPO / "bench" / "amibr_quality.py"), "--checkpoint",
          str(run / "best.pt"), "--densities", args.densities, "--layouts", "discs,windows",
          "--crops", "--root", str(args.root), *fields, "--out", str(quality)], quality, args.root)
    out = _scores(quality, calib)
    if args.strong_alone and name == "partmitosis":
        out["strong_alone"] = strong_alone(run, args)
    return out


def _scores(quality: Path, calib: Path) -> dict[str, Any]:
    q = json.loads(quality.read_text())
    views = {f"discs {k}": v for k, v in q["densities"].items()}
    views.update({f"windows {k}": v for k, v in q.get("windows", {}).items()})
    views.update({"crops": q["crops"]["crops"]} if "crops" in q else {})
    val = json.loads((calib / "calibration.json").read_text())["best"]
    return {"val_f1": val["f1"], "params": {k: val[k] for k in ("w", "threshold", "s1", "a1")},
            "test": {v: {m: r["calibrated"][m] for m in ("precision", "recall", "f1", "ap")}
                     for v, r in views.items()}}


def strong_alone(run: Path, args: argparse.Namespace) -> dict[str, Any]:
    """PartMitosis's strong map alone: a copy of ``best.pt`` calibrated with w = 0 and scored
    on the same test views; plus the validation F1 against w (0, 0.1, ..., 1; a dry run)."""
    partsup = [sys.executable, "-m", "partsup"]
    copy = run / "strong-alone.pt"
    if not copy.exists():
        copy.write_bytes((run / "best.pt").read_bytes())
    val = ["--dataset", "ami-br", "--split", "val", "--option", f"fields={args.val_fields}",
           "--threshold", "0.3,0.4,0.5,0.6,0.7", "--s1", "0.3,0.4,0.5,0.6,0.7,0.8,0.85,0.9",
           "--a1", "0"]
    calib = run / "calib8-strong"
    step(partsup + ["calibrate", "--checkpoint", str(copy), *val, "--w", "0",
                    "--out", str(calib)], calib / "calibration.json", args.root)
    sweep = run / "calib8-w"
    step(partsup + ["calibrate", "--checkpoint", str(run / "best.pt"), *val, "--dry-run",
                    "--w", ",".join(f"{w / 10:g}" for w in range(11)), "--out", str(sweep)],
         sweep / "calibration.json", args.root)
    quality = run / "quality-strong.json"
    fields = [] if args.test_fields is None else ["--fields", str(args.test_fields)]
    step([sys.executable, str(REPO / "bench" / "amibr_quality.py"), "--checkpoint", str(copy),
          "--densities", args.densities, "--layouts", "discs,windows", "--crops", "--root",
          str(args.root), *fields, "--out", str(quality)], quality, args.root)
    out = _scores(quality, calib)
    out["val_f1_by_w"] = {f"{r['w']:g}": r["f1"] for r in
                          json.loads((sweep / "calibration.json").read_text())["per_w"]}
    return out


def summary(results: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    lines = []
    for name, by_seed in results.items():
        rows = list(by_seed.values())
        cols = {"val F1": [r["val_f1"] for r in rows]}
        for view in rows[0]["test"]:
            cols[f"test F1 {view}"] = [r["test"][view]["f1"] for r in rows]
        parts = [f"{k} {statistics.mean(v):.3f} +- {statistics.pstdev(v):.3f}"
                 for k, v in cols.items()]
        lines.append(f"{name} ({len(rows)} seeds): " + " | ".join(parts))
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.fields is not None:
        args.val_fields = args.test_fields = args.fields
    if not (args.root / "metadata.csv").is_file():
        print(f"skipped: {args.root} not found (the AMi-Br crops; see ../shared/data/README.md)")
        return 0
    args.runs.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in args.recipes.split(","):
            if name not in RECIPES:
                raise SystemExit(f"--recipes: unknown {name!r} ({', '.join(RECIPES)})")
            print(f"{name}, seed {seed}", flush=True)
            results.setdefault(name, {})[seed] = one_run(name, seed, args)
    alone = {s: r.pop("strong_alone") for s, r in results.get("partmitosis", {}).items()
             if "strong_alone" in r}
    if alone:
        results["partmitosis strong map alone"] = alone
    lines = summary(results)
    print("\n".join(lines))
    out = args.runs / "seeds.json"
    out.write_text(json.dumps({"iterations": args.iterations, "results": results,
                               "summary": lines}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
