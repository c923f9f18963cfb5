"""The paper's comparisons (baselines, training strategy, structure of Gamma, concentric labels,
fusion weight w) on the synthetic benchmark, several seeds each.

Every row is ``recipes/quickstart.yaml`` with a few ``--set`` overrides (``CONFIGS`` below),
trained on its own synthetic data (set A: 16 ICPR-2012-style images with masks; set B:
AMIDA13-style images with points, split into train / val / test; more images than the demo's,
so that the test split holds about 150 figures), with the quickstart's schedule (600 iterations;
``--iterations`` changes it). For every configuration and seed the script runs the documented
commands, in order:

1. ``partsup train recipes/quickstart.yaml --set seed=S --set train.iterations=N [overrides]
   --out RUNS/<config>-s<S>``;
2. ``partsup calibrate --checkpoint RUN/best.pt --out RUN/calib-val`` (validation split; w,
   threshold rule, s1, a1; stored in ``best.pt``);
3. ``partsup evaluate --checkpoint RUN/best.pt --dataset amida13 --split test`` (test split, the
   stored rule);
4. for models with a strong head, ``partsup calibrate --split test --dry-run`` over the same
   grid: it scores every grid point on the test split, so the test F1 of *any* validation-chosen
   point can be read off. This gives the strong-only baseline (the strong network of the
   two-network ``independent`` model, trained on set A only, applied alone: the validation's
   best point at w = 0) and the w sweep (for each w, the validation's best point at that w,
   scored on test).

Then it prints one table per comparison (mean and spread over the seeds of test precision,
recall and F1; validation F1), writes ``RUNS/results.json`` and, with ``--plot``, the w sweep as a
PNG. A step whose output exists is not run again, so an interrupted comparison continues where it
stopped; ``--shard I/N`` runs every N-th job only, so N copies can share the machine, and
``--report-only`` tabulates what has finished without running anything.

    .venv/bin/python bench/results.py --seeds 1,2,3 --runs runs/results --threads 1 --shard 0/2 &
    .venv/bin/python bench/results.py --seeds 1,2,3 --runs runs/results --threads 1 --shard 1/2 \\
        --plot docs/img/w_sweep.png
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECIPE = "recipes/quickstart.yaml"
MLP = "{{name: mlp, layers: {}, activation: {}}}"

#: config -> (tables it appears in, overrides of recipes/quickstart.yaml)
CONFIGS: dict[str, tuple[tuple[str, ...], list[str]]] = {
    "partmitosis": (("baselines", "strategy", "gamma", "labels"), []),
    "weak-only": (("baselines",), ["model.mode=weak_only"]),
    "two-networks": (("baselines",), ["model.mode=independent", "model.shared_backbone=false"]),
    "independent-heads": (("baselines",), ["model.mode=independent"]),
    "stagewise": (("strategy",), ["train.schedule=stagewise"]),
    "no-stop-gradient": (("strategy",), ["model.stop_gradient=false"]),
    "affine": (("gamma",), ["model.transfer={name: affine}"]),
    "mlp2-relu": (("gamma",), ["model.transfer=" + MLP.format(2, "relu")]),
    "mlp3-relu": (("gamma",), ["model.transfer=" + MLP.format(3, "relu")]),
    "mlp3-leaky": (("gamma",), ["model.transfer=" + MLP.format(3, "leaky_relu")]),
    "r12R24": (("labels",), ["labels.weak={name: concentric, r: 12, R: 24}"]),
    "r15R30": (("labels",), ["labels.weak={name: concentric, r: 15, R: 30}"]),
}

#: table -> rows: (label, config, which number: "own" = the calibrated model, or "w=0")
TABLES: dict[str, list[tuple[str, str, str]]] = {
    "baselines": [("weak-only (SegMitos-style)", "weak-only", "own"),
                  ("strong-only (set A only, applied to B)", "two-networks", "w=0"),
                  ("independent: two networks, no transfer", "two-networks", "own"),
                  ("independent heads on a shared trunk, no transfer", "independent-heads", "own"),
                  ("PartMitosis (shared trunk, transfer)", "partmitosis", "own")],
    "strategy": [("stage-wise", "stagewise", "own"),
                 ("end-to-end, no stop-gradient", "no-stop-gradient", "own"),
                 ("end-to-end, stop-gradient (default)", "partmitosis", "own")],
    "gamma": [("affine (1 layer)", "affine", "own"),
              ("2-layer ReLU", "mlp2-relu", "own"),
              ("2-layer LeakyReLU (default)", "partmitosis", "own"),
              ("3-layer ReLU", "mlp3-relu", "own"),
              ("3-layer LeakyReLU", "mlp3-leaky", "own")],
    "labels": [("r12R24", "r12R24", "own"),
               ("r15R30", "r15R30", "own"),
               ("random r in 10..17, R = alpha r (default)", "partmitosis", "own")],
}

#: the synthetic benchmark: folder -> partsup_mitosis.synth.generate() options
DATA: dict[str, dict[str, Any]] = {
    "icpr2012": {"like": "icpr2012", "n_images": 16, "seed": 1, "size": 512,
                 "val_fraction": 0.0, "test_fraction": 0.0},
    "amida13": {"like": "amida13", "n_images": 160, "seed": 2, "size": 512,
                "val_fraction": 0.15, "test_fraction": 0.25},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated training seeds")
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--runs", type=Path, default=Path("runs/results"), help="output folder")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"comma-separated subset of {', '.join(CONFIGS)}")
    ap.add_argument("--images", type=int, default=DATA["amida13"]["n_images"],
                    help="AMIDA13-style images, all splits (val 15 %%, test 25 %%)")
    ap.add_argument("--shard", default="0/1", metavar="I/N",
                    help="run jobs I, I+N, I+2N, ... only (start N copies to share a machine)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads per command (OMP_NUM_THREADS; default: torch's own)")
    ap.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra recipe override for every training (repeatable)")
    ap.add_argument("--plot", type=Path, default=None, help="write the w sweep PNG here")
    ap.add_argument("--amibr-runs", type=Path, default=None,
                    help="bench/amibr_seeds.py --strong-alone runs: add their validation w "
                         "sweep to the plot and the JSON")
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: tabulate the runs that have finished")
    return ap.parse_args(argv)


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; a clear error otherwise."""
    try:
        shard, shards = (int(x) for x in text.split("/"))
    except ValueError:
        raise SystemExit(f"--shard: expected I/N such as 0/2, got {text!r}") from None
    if not 0 <= shard < shards:
        raise SystemExit(f"--shard: need 0 <= I < N, got {text!r}")
    return shard, shards


def ensure_data(root: Path, images: int) -> None:
    """Generate the synthetic datasets under ``root`` unless already there."""
    from partsup_mitosis.synth import MANIFEST, generate
    for name, options in DATA.items():
        if not (root / name / MANIFEST).is_file():
            n = images if name == "amida13" else options["n_images"]
            generate(root / name, **{**options, "n_images": n})


def step(cmd: list[str], done: Path, env: dict[str, str]) -> None:
    """Run ``cmd`` unless ``done`` exists; stop with its message if it fails."""
    if done.exists():
        return
    print("  $ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")


def one_run(config: str, seed: int, args: argparse.Namespace, env: dict[str, str]) -> Path:
    """Train, calibrate and evaluate one configuration and seed; returns its run folder."""
    run = args.runs / f"{config}-s{seed}"
    partsup = [sys.executable, "-m", "partsup"]
    n = args.iterations
    sets = [f"seed={seed}", f"train.iterations={n}", f"train.val_every={max(n // 3, 1)}",
            f"train.checkpoint_every={max(n // 3, 1)}", *CONFIGS[config][1], *args.train_set]
    timing = run / "train_seconds.json"
    if not timing.exists():
        resume = ["--resume"] if (run / "checkpoints").is_dir() else []
        t0 = time.perf_counter()
        step(partsup + ["train", RECIPE, *[a for kv in sets for a in ("--set", kv)],
                        "--out", str(run), *resume], timing, env)
        timing.write_text(json.dumps({"seconds": time.perf_counter() - t0,
                                      "resumed": bool(resume)}) + "\n")
    ckpt = str(run / "best.pt")
    step(partsup + ["calibrate", "--checkpoint", ckpt, "--out", str(run / "calib-val")],
         run / "calib-val" / "calibration.json", env)
    test = ["--dataset", "amida13", "--data-root", str(args.runs / "data" / "amida13"),
            "--split", "test"]
    step(partsup + ["evaluate", "--checkpoint", ckpt, *test, "--no-overlays",
                    "--out", str(run / "eval")], run / "eval" / "metrics.json", env)
    if config != "weak-only":
        step(partsup + ["calibrate", "--checkpoint", ckpt, *test, "--dry-run",
                        "--out", str(run / "calib-test")], run / "calib-test" / "calibration.json",
             env)
    return run


def _key(row: dict[str, Any]) -> tuple:
    return (row["w"], str(row["threshold"]), row["s1"], row["a1"])


def collect(run: Path) -> dict[str, Any]:
    """The numbers of one finished run: own (calibrated) test scores, val F1, and per w."""
    val = json.loads((run / "calib-val" / "calibration.json").read_text())
    test = json.loads((run / "eval" / "metrics.json").read_text())["totals"]
    out: dict[str, Any] = {
        "train_seconds": json.loads((run / "train_seconds.json").read_text())["seconds"],
        "own": {"val_f1": val["best"]["f1"], "params": {k: val["best"][k] for k in
                                                       ("w", "threshold", "s1", "a1")},
                **{k: test[k] for k in ("tp", "fp", "fn", "precision", "recall", "f1")}},
        "per_w": {}}
    cal_test = run / "calib-test" / "calibration.json"
    if cal_test.exists():
        rows = {_key(r): r for r in json.loads(cal_test.read_text())["rows"]}
        for best in val["per_w"]:  # the validation's best point at each w, scored on test
            t = rows[_key(best)]
            out["per_w"][f"{best['w']:g}"] = {
                "val_f1": best["f1"], "params": {k: best[k] for k in ("threshold", "s1", "a1")},
                **{k: t[k] for k in ("tp", "fp", "fn", "precision", "recall", "f1")}}
        own = rows[_key(val["best"])]
        out["own"]["test_f1_from_grid"] = own["f1"]  # equals the evaluate F1 (a check)
    return out


def _stat(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(values), "sd": statistics.pstdev(values),
            "min": min(values), "max": max(values)}


def tables(results: dict[str, dict[int, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Mean and spread over the seeds for every table row whose runs are all there."""
    out: dict[str, list[dict[str, Any]]] = {}
    for table, rows in TABLES.items():
        for label, config, which in rows:
            runs = list(results.get(config, {}).values())
            if not runs:
                continue
            got = [r["own"] if which == "own" else r["per_w"]["0"] for r in runs]
            row = {"label": label, "config": config, "which": which, "seeds": len(runs),
                   "val_f1": _stat([g["val_f1"] for g in got]),
                   **{m: _stat([g[m] for g in got]) for m in ("precision", "recall", "f1")},
                   "train_seconds": _stat([r["train_seconds"] for r in runs])}
            if which == "own" and "w" in got[0].get("params", {}) and config != "weak-only":
                row["w"] = [g["params"]["w"] for g in got]
            out.setdefault(table, []).append(row)
    return out


def markdown(table: list[dict[str, Any]]) -> list[str]:
    lines = ["| row | seeds | test P | test R | test F1 | val F1 | w chosen | train s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        pm = [f"{r[m]['mean']:.3f} ± {r[m]['sd']:.3f}" for m in ("precision", "recall", "f1")]
        w = ", ".join(f"{x:g}" for x in r.get("w", [])) or ("0" if r["which"] == "w=0" else "-")
        lines.append(f"| {r['label']} | {r['seeds']} | {' | '.join(pm)} | "
                     f"{r['val_f1']['mean']:.3f} | {w} | {r['train_seconds']['mean']:.0f} |")
    return lines


def w_sweep(results: dict[str, dict[int, dict[str, Any]]], config: str) -> dict[str, Any]:
    """Validation and test F1 against w (mean and sd over seeds) for one configuration."""
    runs = [r for r in results.get(config, {}).values() if r["per_w"]]
    if not runs:
        return {}
    ws = sorted(runs[0]["per_w"], key=float)
    return {w: {"val_f1": _stat([r["per_w"][w]["val_f1"] for r in runs]),
                "test_f1": _stat([r["per_w"][w]["f1"] for r in runs])} for w in ws}


def amibr_sweep(runs: Path) -> dict[str, Any]:
    """Validation F1 against w of the real-tissue PartMitosis seeds (``bench/amibr_seeds.py
    --strong-alone`` writes ``<runs>/partmitosis-s*/calib8-w``), mean and sd over seeds."""
    per_seed = [json.loads(p.read_text())["per_w"]
                for p in sorted(runs.glob("partmitosis-s*/calib8-w/calibration.json"))]
    if not per_seed:
        return {}
    ws = [f"{r['w']:g}" for r in per_seed[0]]
    return {"seeds": len(per_seed), "val_f1": {w: _stat([rows[i]["f1"] for rows in per_seed])
                                               for i, w in enumerate(ws)}}


def plot(sweeps: dict[str, dict[str, Any]], path: Path, iterations: int,
         real: dict[str, Any] | None = None) -> None:
    """F1 against w: the synthetic sweeps (validation and test), and the real-tissue
    validation sweep in a second panel when given."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = 2 if real else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 3.8), dpi=120, squeeze=False)
    ax = axes[0][0]
    for config, style in zip(sweeps, ("-", "--", ":")):
        sweep = sweeps[config]
        ws = [float(w) for w in sweep]
        for split, color in (("val_f1", "tab:blue"), ("test_f1", "tab:red")):
            m = [sweep[w][split]["mean"] for w in sweep]
            s = [sweep[w][split]["sd"] for w in sweep]
            ax.errorbar(ws, m, yerr=s, fmt="o" + style, color=color, ms=3, capsize=2,
                        label=f"{config} {split.split('_')[0]}")
    ax.set_title(f"synthetic benchmark ({iterations} it, mean ± sd over seeds)", fontsize=9)
    if real:
        bx = axes[0][1]
        ws = [float(w) for w in real["val_f1"]]
        bx.errorbar(ws, [v["mean"] for v in real["val_f1"].values()],
                    yerr=[v["sd"] for v in real["val_f1"].values()], fmt="o-",
                    color="tab:blue", ms=3, capsize=2, label="partmitosis val")
        bx.set_title(f"real tissue, ami-br validation, density 8 ({real['seeds']} seeds, "
                     f"1,000 it)", fontsize=9)
    for a in axes[0]:
        a.set_xlabel("w (weight of the weak map; 0 = strong map only, 1 = weak only)")
        a.set_ylabel("F1")
        a.legend(fontsize=7)
        a.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configs = args.configs.split(",")
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"--configs: unknown {', '.join(unknown)} ({', '.join(CONFIGS)})")
    shard, shards = parse_shard(args.shard)
    args.runs.mkdir(parents=True, exist_ok=True)
    ensure_data(args.runs / "data", args.images)
    env = {**os.environ, "PARTSUP_DEMO_DATA": str((args.runs / "data").resolve())}
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    jobs = [(c, int(s)) for s in args.seeds.split(",") for c in configs]
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for i, (config, seed) in enumerate(jobs):
        if i % shards != shard or args.report_only:
            continue
        print(f"{config}, seed {seed} ({i + 1}/{len(jobs)})", flush=True)
        one_run(config, seed, args, env)
    for config, seed in jobs:  # every finished run, this shard's or another's
        run = args.runs / f"{config}-s{seed}"
        if (run / "eval" / "metrics.json").exists() and (
                config == "weak-only" or (run / "calib-test" / "calibration.json").exists()):
            results.setdefault(config, {})[seed] = collect(run)
    out = {"iterations": args.iterations, "seeds": args.seeds, "results": results,
           "tables": tables(results),
           "w_sweep": {c: w_sweep(results, c) for c in ("partmitosis", "two-networks")
                       if c in results}}
    for name, table in out["tables"].items():
        print(f"\n{name} (synthetic test split, {args.iterations} iterations)")
        print("\n".join(markdown(table)))
    real = amibr_sweep(args.amibr_runs) if args.amibr_runs else {}
    if real:
        out["amibr_w_sweep"] = real
    (args.runs / "results.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.runs / 'results.json'}")
    if args.plot and out["w_sweep"]:
        plot(out["w_sweep"], args.plot, args.iterations, real)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
