"""CLI start-up time: ``partsup --help``, ``partsup plugins``, ``partsup datasets`` and a
one-line error (a missing input) against bare Python and ``import torch``, each a fresh
process, median of ``--repeats`` runs after one warm-up.

    python bench/cli_startup.py [--repeats 5] [--json cli_startup.json]

Also prints, from ``python -X importtime``, the cumulative import time of partsup's own
modules for each partsup case (the ``partsup`` package, the CLI, the plugin manager, the
registrations) and which heavy module each one imports and through what, so a slow start-up
names its cause. Times depend on the machine's load (printed, with the core count).
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

REPO = Path(__file__).resolve().parents[1]
PARTSUP = [sys.executable, "-m", "partsup"]
CASES = {"python -c pass": [sys.executable, "-c", "pass"],
         "python -c 'import torch'": [sys.executable, "-c", "import torch"],
         "partsup --version": [*PARTSUP, "--version"],
         "partsup --help": [*PARTSUP, "--help"],
         "partsup plugins": [*PARTSUP, "plugins"],
         "partsup datasets": [*PARTSUP, "datasets"],
         "partsup predict /no/such/file.png": [*PARTSUP, "predict", "/no/such/file.png"]}
HEAVY = ("torch", "scipy", "skimage", "matplotlib", "segmentation_models_pytorch", "timm")


def wall(cmd: list[str]) -> float:
    """Seconds one run of ``cmd`` takes (its exit code is not checked: an error is a case)."""
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def import_rows(cmd: list[str]) -> list[tuple[int, str, int]]:
    """``(depth, module, cumulative us)`` of each import ``cmd`` makes (``-X importtime``)."""
    err = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], cwd=REPO, text=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).stderr
    rows = []
    for line in err.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            rows.append(((len(name) - len(name.lstrip())) // 2, name.strip(), int(parts[1])))
    return rows


def heavy_imports(rows: list[tuple[int, str, int]]) -> dict[str, dict[str, object]]:
    """``module -> {ms (cumulative), via (the module that imported it)}`` for :data:`HEAVY`."""
    out: dict[str, dict[str, object]] = {}
    for i, (depth, name, cum) in enumerate(rows):
        if name in HEAVY:
            parent = next((n for d, n, _ in rows[i + 1:] if d < depth), "(top level)")
            out[name] = {"ms": cum / 1000, "via": parent}
    return out


def partsup_imports(rows: list[tuple[int, str, int]]) -> dict[str, float]:
    """Cumulative ms of each top-level import of a ``partsup``/``partsup_*`` module (one
    imported from a module outside partsup, e.g. by ``runpy`` or an entry point's loader)."""
    out: dict[str, float] = {}
    for i, (depth, name, cum) in enumerate(rows):
        if not name.split(".")[0].startswith("partsup"):
            continue
        parent = next((n for d, n, _ in rows[i + 1:] if d < depth), "")
        if not parent.split(".")[0].startswith("partsup"):
            out[name] = out.get(name, 0.0) + cum / 1000
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    load = os.getloadavg()
    print(f"{os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    results, heavy, modules = {}, {}, {}
    for label, cmd in CASES.items():
        wall(cmd)  # warm-up (file cache)
        times = [wall(cmd) for _ in range(args.repeats)]
        results[label] = {"median_s": statistics.median(times), "runs_s": times}
        print(f"{label:<36} {statistics.median(times):6.2f} s (median of {args.repeats})")
    for label, cmd in CASES.items():
        if not label.startswith("partsup") or label == "partsup --version":
            continue
        rows = import_rows(cmd)
        heavy[label], modules[label] = heavy_imports(rows), partsup_imports(rows)
        largest = sorted(modules[label].items(), key=lambda kv: -kv[1])[:6]
        print(f"  {label}: partsup modules {sum(modules[label].values()):.0f} ms cumulative "
              f"(largest: {', '.join(f'{n} {ms:.0f} ms' for n, ms in largest)})")
        for name, info in heavy[label].items():
            print(f"  {label} imports {name}: {info['ms']:.0f} ms, via {info['via']}")
    if args.json:
        args.json.write_text(json.dumps({"cores": os.cpu_count(), "loadavg": load,
                                         "results": results,
                                         "heavy_imports": heavy["partsup --help"],
                                         "heavy_imports_by_case": heavy,
                                         "partsup_imports_ms": modules}, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
