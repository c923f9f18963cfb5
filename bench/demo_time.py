"""Time `make demo` (= `partsup demo`) from a clean folder and report its F1.

    python bench/demo_time.py [--threads 2] [--out runs/demo-bench] [--keep-data] [--json out.json]

Runs ``partsup demo --retrain --out OUT`` in a subprocess (synthetic data generated from scratch
unless ``--keep-data``), with ``OMP_NUM_THREADS=--threads`` if given, and reports wall time,
CPU time of the subprocess, the machine's load average before and after (the demo's time
depends on what else runs on the machine) and, from ``OUT/summary.json``, each model's training
time and validation / test F1. Prints a table; ``--json`` writes the same numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path


def run_demo(out: Path, threads: int | None, keep_data: bool) -> dict:
    if out.exists():
        keep = out / "data" if keep_data and (out / "data").is_dir() else None
        for child in out.iterdir():
            if child != keep:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    env = dict(os.environ)
    env.pop("PARTSUP_DEMO_DATA", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    load_before = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "partsup", "demo", "--retrain", "--out",
                           str(out)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return {
        "returncode": proc.returncode, "wall_s": wall,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "threads": threads, "cpus": os.cpu_count(), "load_before": load_before,
        "load_after": os.getloadavg(), "summary": summary,
        "tail": (proc.stdout + proc.stderr)[-3000:],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/demo-bench")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the demo")
    ap.add_argument("--keep-data", action="store_true", help="reuse OUT/data if present")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    res = run_demo(Path(args.out), args.threads, args.keep_data)
    print(f"demo exit code {res['returncode']}, wall {res['wall_s']:.0f} s "
          f"({res['wall_s'] / 60:.1f} min), CPU {res['cpu_s']:.0f} s, {res['cpus']} CPUs, "
          f"threads {res['threads'] or 'default'}, load average before "
          f"{res['load_before'][0]:.2f} after {res['load_after'][0]:.2f}")
    rows = res["summary"].get("rows", [])
    print(f"{'model':24s} {'train s':>8s} {'val F1':>7s} {'test P':>7s} {'test R':>7s} "
          f"{'test F1':>7s}")
    for r in rows:
        t = r["test"]
        print(f"{r['label']:24s} {r['train_s']:8.0f} {r['val']['f1']:7.3f} "
              f"{t['precision']:7.3f} {t['recall']:7.3f} {t['f1']:7.3f}")
    if res["returncode"] != 0:
        print(res["tail"])
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0 if res["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
