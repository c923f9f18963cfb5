"""Write a synthetic test slide: a multi-level tiled TIFF (0.25 um/px by default) with a planted
cluster of dark "mitoses", and a QuPath GeoJSON region of interest beside it.

    python bench/make_slide.py slides/case.tif [--width 16000 --height 12000] [--seed 0]

The tissue (two overlapping pink ellipses with small purple nuclei on white glass) holds dark
disks of radius 12 px: scattered ones (about 4 per mm^2) plus a cluster of ``--cluster`` disks
within 1 mm^2 around 70% of the width, 35% of the height. Writes ``<slide>`` tile by tile,
``<slide stem>.truth.csv`` (x,y of every disk, level-0 px) and ``<slide stem>.roi.geojson`` (a
polygon over the left half of the slide).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

PINK, NUCLEUS, MITOSIS = (232, 196, 218), (90, 60, 140), (40, 20, 60)


def make(width: int, height: int, mpp: float, seed: int, cluster: int):
    """``(render, centres (n, 2), kept)`` of the slide: the centres of the disks that lie on
    the tissue (scattered ones first, then the cluster's), and how many of the ``cluster``
    planted disks are among them (a slide smaller than the 1 mm cluster loses some)."""
    rng = np.random.default_rng(seed)
    ell = [(0.38 * width, 0.5 * height, 0.3 * width, 0.4 * height),
           (0.68 * width, 0.45 * height, 0.25 * width, 0.35 * height)]

    def tissue(x, y):
        return np.logical_or.reduce([((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1
                                     for cx, cy, ax, ay in ell])

    area_mm2 = width * height * (mpp / 1000) ** 2
    pts = rng.uniform(0, 1, (int(4 * area_mm2), 2)) * (width, height)
    side = 1000.0 / mpp  # 1 mm
    cl = rng.uniform(-0.5, 0.5, (cluster, 2)) * side + (0.7 * width, 0.35 * height)
    pts = np.concatenate([pts, cl])
    on = tissue(pts[:, 0], pts[:, 1])
    kept = int(on[len(pts) - cluster:].sum()) if cluster else 0
    pts = pts[on]

    def render(x0: int, y0: int, w: int, h: int) -> np.ndarray:
        yy = np.arange(y0, y0 + h, dtype=np.float64)[:, None]
        xx = np.arange(x0, x0 + w, dtype=np.float64)[None, :]
        out = np.full((h, w, 3), 255, np.uint8)
        t = tissue(xx, yy) & (xx < width) & (yy < height)
        out[t] = PINK
        out[((xx % 37 - 18.5) ** 2 + (yy % 37 - 18.5) ** 2 <= 16) & t] = NUCLEUS
        near = pts[(pts[:, 0] > x0 - 13) & (pts[:, 0] < x0 + w + 13)
                   & (pts[:, 1] > y0 - 13) & (pts[:, 1] < y0 + h + 13)]
        for cx, cy in near:
            out[((xx - cx) ** 2 + (yy - cy) ** 2) <= 144] = MITOSIS
        return out

    return render, pts, kept


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("slide", type=Path)
    p.add_argument("--width", type=int, default=16000)
    p.add_argument("--height", type=int, default=12000)
    p.add_argument("--mpp", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cluster", type=int, default=30, help="disks in the planted cluster")
    args = p.parse_args()
    from partsup.slides.write import write_pyramid
    render, pts, kept = make(args.width, args.height, args.mpp, args.seed, args.cluster)
    write_pyramid(args.slide, render, args.width, args.height, args.mpp, tile=512, levels=4)
    stem = args.slide.with_suffix("")
    with open(f"{stem}.truth.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["x", "y"])
        w.writerows(np.round(pts, 2).tolist())
    half = [[0, 0], [args.width / 2, 0], [args.width / 2, args.height], [0, args.height], [0, 0]]
    Path(f"{stem}.roi.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [half]},
         "properties": {"objectType": "annotation", "name": "left half"}}]}, indent=1) + "\n")
    lost = (f"; {args.cluster - kept} of the {args.cluster} planted fell off the tissue "
            f"(the cluster spans 1 mm)" if kept < args.cluster else "")
    print(f"{args.slide}: {args.width}x{args.height} px at {args.mpp} um/px; {len(pts)} dark "
          f"disks on the tissue: {len(pts) - kept} scattered, {kept} in the planted cluster"
          f"{lost}; ground truth {stem}.truth.csv, ROI {stem}.roi.geojson")
    return 0


if __name__ == "__main__":
    sys.exit(main())
