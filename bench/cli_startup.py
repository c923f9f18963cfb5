"""CLI start-up time: ``partsup --help`` and ``partsup plugins`` against bare Python and
``import torch``, each a fresh process, median of ``--repeats`` runs after one warm-up.

    python bench/cli_startup.py [--repeats 5] [--json cli_startup.json]

Also prints what ``partsup --help`` imports that costs most (``python -X importtime``), so a
slow start-up names its cause.
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
CASES = {"python -c pass": [sys.executable, "-c", "pass"],
         "python -c 'import torch'": [sys.executable, "-c", "import torch"],
         "partsup --version": [sys.executable, "-m", "partsup", "--version"],
         "partsup --help": [sys.executable, "-m", "partsup", "--help"],
         "partsup plugins": [sys.executable, "-m", "partsup", "plugins"]}
HEAVY = ("torch", "scipy", "skimage", "matplotlib", "segmentation_models_pytorch", "timm")


def wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return time.perf_counter() - t0


def heavy_imports(cmd: list[str]) -> dict[str, dict[str, object]]:
    """``module -> {ms (cumulative), via (the module that imported it)}`` for :data:`HEAVY`."""
    err = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], cwd=REPO, text=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).stderr
    rows = []
    for line in err.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            rows.append(((len(name) - len(name.lstrip())) // 2, name.strip(), int(parts[1])))
    out: dict[str, dict[str, object]] = {}
    for i, (depth, name, cum) in enumerate(rows):
        if name in HEAVY:
            parent = next((n for d, n, _ in rows[i + 1:] if d < depth), "(top level)")
            out[name] = {"ms": cum / 1000, "via": parent}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    results = {}
    for label, cmd in CASES.items():
        wall(cmd)  # warm-up (file cache)
        times = [wall(cmd) for _ in range(args.repeats)]
        results[label] = {"median_s": statistics.median(times), "runs_s": times}
        print(f"{label:<28} {statistics.median(times):6.2f} s (median of {args.repeats})")
    heavy = heavy_imports(CASES["partsup --help"])
    for name, info in heavy.items():
        print(f"  partsup --help imports {name}: {info['ms']:.0f} ms, via {info['via']}")
    if args.json:
        args.json.write_text(json.dumps({"cores": os.cpu_count(), "loadavg": os.getloadavg(),
                                         "results": results, "heavy_imports": heavy},
                                        indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
