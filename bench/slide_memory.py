"""Peak memory and speed of ``partsup predict`` on one big synthetic slide (default 20000x20000).

    python bench/slide_memory.py [--size 20000] [--checkpoint C --plugin M] [--json out.json]

The parent process writes a multi-level tiled TIFF (level 0 plus 2x-reduced levels, 512-px
zlib tiles, 0.25 um/px) tile by tile (``partsup.slides.write.write_pyramid``): white glass with
an elliptic block of flat pink tissue, small purple nuclei every 37 px and a dark 12-px "mitosis"
every 600 px inside the tissue. A fresh child process then runs the slide path of ``partsup
predict`` on it (thumbnail, tissue mask, tiles at the model's resolution, detections in level-0
px, csv + geojson + overlay + tissue PNG + the mitosis plugin's heatmap and hotspot) with the
small conv model of bench/predict_memory.py (unless ``--checkpoint``), and reports its peak
resident memory (``VmHWM``), the memory just before the slide, the tissue Mpx/s and how many of
the planted mitoses it found. The flat colours keep the file small (a few hundred MB for
20000x20000) and writing fast; they change nothing in what predict holds in memory.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from predict_memory import (MiB, add_child_arguments, peak_bytes, print_report,  # bench/
                            registries, rss_bytes, run_child)

PINK, NUCLEUS, MITOSIS = (232, 196, 218), (90, 60, 140), (40, 20, 60)
SPACING, NUCLEI = 600, 37


def make_render(size: int):
    """``render(x, y, w, h)`` of the synthetic slide and the planted mitoses (n, 2) x, y."""
    c, a = size / 2.0, size * 0.42  # tissue: a disc of radius 0.42 * size

    def inside(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x - c) ** 2 + (y - c) ** 2 <= a * a

    def render(x0: int, y0: int, w: int, h: int, step: int = 1) -> np.ndarray:
        yy = (y0 + step * np.arange(h, dtype=np.float64))[:, None]
        xx = (x0 + step * np.arange(w, dtype=np.float64))[None, :]
        out = np.full((h, w, 3), 255, np.uint8)
        tissue = inside(xx, yy) & (xx < size) & (yy < size)
        out[tissue] = PINK
        nuc = ((xx % NUCLEI - NUCLEI / 2) ** 2 + (yy % NUCLEI - NUCLEI / 2) ** 2 <= 16) & tissue
        out[nuc] = NUCLEUS
        cx = (xx // SPACING) * SPACING + SPACING / 2
        cy = (yy // SPACING) * SPACING + SPACING / 2
        mit = ((xx - cx) ** 2 + (yy - cy) ** 2 <= 144) & inside(cx, cy)
        out[mit] = MITOSIS
        return out

    render.steps = True  # type: ignore[attr-defined]  # lower levels sampled, not averaged
    g = np.arange(SPACING / 2, size, SPACING)
    gx, gy = np.meshgrid(g, g)
    keep = inside(gx, gy)
    return render, np.stack([gx[keep], gy[keep]], 1)


def child(args: argparse.Namespace) -> None:
    """Run predict's slide path in this fresh process; print one JSON line."""
    import torch
    torch.set_num_threads(args.threads)
    from partsup.inference.detector import build_detector
    from partsup.prediction import Item
    from partsup.prediction.pipeline import predict_input
    from partsup.prediction.settings import PredictSettings, predict_options
    regs = registries(args.plugin)
    detector = build_detector(Path(args.checkpoint), regs, "cpu", {})
    before, peak_before = rss_bytes(), peak_bytes()
    writers = {n: regs.writers.get(n)() for n in ("csv", "geojson")}
    settings = PredictSettings(Path(args.out), writers, predict_options(regs.pm, {}),
                               mpp=args.mpp, slide_tile=args.tile)
    t0 = time.perf_counter()
    result = predict_input(Item(Path(args.image), "bench"), detector, settings, regs.pm)
    print(json.dumps({"rss_before_slide": before, "peak_before_slide": peak_before,
                      "peak": peak_bytes(), "seconds": time.perf_counter() - t0,
                      "count": result.count.count, "lines": result.lines}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=20000, help="slide side, px (square)")
    p.add_argument("--tile", type=int, default=1024, help="slide tile (predict --slide-tile)")
    add_child_arguments(p)
    args = p.parse_args()
    if args.child:
        child(args)
        return 0
    from partsup.slides.write import write_pyramid
    with tempfile.TemporaryDirectory(prefix="partsup-slide-bench-") as tmp:
        tmp_path = Path(tmp)
        render, planted = make_render(args.size)
        t0 = time.perf_counter()
        levels = 1 + max(0, math.ceil(math.log2(args.size / 2500)))
        slide = write_pyramid(tmp_path / "slide.tif", render, args.size, args.size, args.mpp,
                              tile=512, levels=levels)
        write_s = time.perf_counter() - t0
        res = run_child(__file__, slide, tmp_path, args, ["--tile", str(args.tile)])
        if isinstance(res, int):
            return res
        file_mib = slide.stat().st_size / MiB
    tissue_mpx = math.pi * (0.42 * args.size) ** 2 / 1e6
    report = {
        "slide": f"{args.size}x{args.size}", "model": args.checkpoint or "tiny conv (bench)",
        "file_mib": round(file_mib, 1), "write_seconds": round(write_s, 1),
        "tissue_mpx": round(tissue_mpx, 1), "mitoses_planted": int(len(planted)),
        "detected": res["count"], "rss_before_slide_mib": round(res["rss_before_slide"] / MiB, 1),
        "peak_rss_mib": round(res["peak"] / MiB, 1),
        "slide_cost_mib": round((res["peak"] - res["rss_before_slide"]) / MiB, 1),
        "seconds": round(res["seconds"], 1),
        "tissue_mpx_per_s": round(tissue_mpx / res["seconds"], 2), "threads": args.threads,
        "lines": res["lines"],
    }
    print_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
