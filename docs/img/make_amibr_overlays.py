"""Compose docs/img/amibr-test-overlays.jpg from the overlays ``partsup evaluate`` wrote.

    .venv/bin/python docs/img/make_amibr_overlays.py runs/amibr/eval-overlays runs/amibr/eval-crops

takes the first overlays (in name order) that show at least one true positive and one miss or
false alarm, ``--per-folder`` from each folder given, scales them to ``--size`` px high and
puts them side by side (green = found, blue = missed, yellow = false alarm, as evaluate draws
them).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def interesting(folder: Path, n: int) -> list[Path]:
    """Overlays whose image has a TP and an error, from ``per_image.csv`` beside them."""
    rows = list(csv.DictReader((folder / "per_image.csv").open()))
    keep = [r["id"] for r in rows if int(r["tp"]) > 0 and int(r["fp"]) + int(r["fn"]) > 0]
    paths = [folder / "overlays" / f"{i}.png" for i in keep]
    found = [p for p in paths if p.is_file()]
    if len(found) < n:  # ids map to file names in another way: take any overlay
        found = sorted((folder / "overlays").rglob("*.png"))
    return found[:n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="partsup evaluate --out folders")
    ap.add_argument("--per-folder", type=int, default=2)
    ap.add_argument("--size", type=int, default=400, help="height of each panel, px")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("amibr-test-overlays.jpg"))
    args = ap.parse_args(argv)
    panels = []
    for folder in args.folders:
        for path in interesting(folder, args.per_folder):
            im = Image.open(path).convert("RGB")
            w = round(im.width * args.size / im.height)
            panels.append(np.asarray(im.resize((w, args.size), Image.LANCZOS)))
    if not panels:
        print("no overlays found", file=sys.stderr)
        return 1
    gap = np.full((args.size, 8, 3), 255, np.uint8)
    row = np.concatenate([x for p in panels for x in (p, gap)][:-1], 1)
    Image.fromarray(row).save(args.out, quality=88)
    print(f"wrote {args.out} ({row.shape[1]}x{row.shape[0]} px, {len(panels)} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
