"""Post-processing per HPF: partsup's pipeline against a plain scikit-image one, same maps,
same run, with a check that both give identical detections.

    python bench/postprocess.py [--sizes 2084x2084,1539x1376] [--repeats 7] [--threshold otsu]
                                [--checkpoint CKPT] [--json postprocess.json]

The maps are real network output: the checkpoint (default: the bundled default model) is run
once per size on a synthetic ICPR-2012-style image of that size (``partsup_mitosis.synth``),
giving ``P_weak`` and ``P_strong``. Both pipelines then do the same steps on them (fusion
``S = w P_weak + (1 - w) P_strong``, Gaussian smoothing, Otsu over the whole map or a fixed
threshold with strict ``>``, 8-connected labelling, per-blob area / mean probability /
probability-weighted centroid, ``area > a1`` and ``score > s1``):

* **partsup**: :func:`partsup.inference.blobs.detect_from_maps` (what ``predict``, ``evaluate``
  and ``calibrate`` run);
* **scikit-image**: ``skimage.filters.gaussian`` (mode ``reflect``, as scipy's), ``threshold_otsu``,
  ``skimage.measure.label(connectivity=2)`` and ``regionprops`` (``area``, ``intensity_mean``,
  ``centroid_weighted``).

Times are the median of ``--repeats`` runs after one warm-up, each pipeline timed alternately.
Detections are identical when both lists have the same length, the same areas, and positions
and scores within 1e-4 px / 1e-6. Each row also gives the median time of each of partsup's
steps (fusion, smoothing, Otsu, threshold and labelling, per-blob sums), to show where the time
goes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="2084x2084,1539x1376", help="HxW,HxW,...")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threshold", default="otsu", help="otsu or a probability")
    ap.add_argument("--w", type=float, default=0.5)
    ap.add_argument("--sigma", type=float, default=1.0)
    ap.add_argument("--a1", type=float, default=0.0)
    ap.add_argument("--s1", type=float, default=0.5)
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="model for the maps (default: the bundled default model)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the maps")
    ap.add_argument("--json", type=Path, default=None)
    return ap.parse_args(argv)


def skimage_pipeline(p_weak: np.ndarray, p_strong: np.ndarray | None, w: float, sigma: float,
                     threshold: str | float, a1: float, s1: float) -> list[tuple[float, ...]]:
    """The same steps with scikit-image's own functions: ``[(x, y, score, area), ...]``."""
    from skimage.filters import gaussian, threshold_otsu
    from skimage.measure import label, regionprops
    fused = p_weak if p_strong is None else w * p_weak + (1 - w) * p_strong
    smooth = gaussian(fused, sigma=sigma, mode="reflect", preserve_range=True) if sigma else fused
    t = threshold_otsu(smooth) if threshold == "otsu" else float(threshold)
    labels = label(smooth > t, connectivity=2)
    out = []
    for r in regionprops(labels, intensity_image=fused):
        if r.area > a1 and r.intensity_mean > s1:
            cy, cx = r.centroid_weighted
            out.append((float(cx), float(cy), float(r.intensity_mean), float(r.area)))
    return out


def partsup_pipeline(p_weak: np.ndarray, p_strong: np.ndarray | None, params: Any,
                     registries: Any) -> list[tuple[float, ...]]:
    from partsup.inference.blobs import detect_from_maps
    dets = detect_from_maps(p_weak, p_strong, params, 0.25, registries)
    return [(d.x, d.y, d.score, d.area) for d in dets]


def partsup_steps(p_weak: np.ndarray, p_strong: np.ndarray | None, params: Any,
                  registries: Any, repeats: int) -> dict[str, float]:
    """Median seconds of each step of partsup's pipeline: fusion, smoothing, Otsu, threshold and
    labelling, per-blob sums (the functions ``detect_from_maps`` calls, one at a time)."""
    from scipy import ndimage

    from partsup.inference import blobs
    fused = blobs.fuse(p_weak, p_strong, params, registries)
    smooth = ndimage.gaussian_filter(fused, params.sigma)
    labels = np.zeros(fused.shape, np.int32)
    t = blobs.otsu_threshold(smooth)
    n = ndimage.label(smooth > t, np.ones((3, 3), bool), output=labels)
    steps = {"fuse": lambda: blobs.fuse(p_weak, p_strong, params, registries),
             "gaussian": lambda: ndimage.gaussian_filter(fused, params.sigma),
             "otsu": lambda: blobs.otsu_threshold(smooth),
             "threshold+label": lambda: ndimage.label(smooth > t, np.ones((3, 3), bool)),
             "blob sums": lambda: blobs.blob_sums(fused, labels, int(n))}
    return {k: timed(fn, repeats)[0] for k, fn in steps.items()}


def identical(a: list[tuple[float, ...]], b: list[tuple[float, ...]]) -> bool:
    """Same detections: same count and order, areas equal, x/y within 1e-4, score within 1e-6."""
    if len(a) != len(b):
        return False
    if not a:
        return True
    x, y = np.asarray(a), np.asarray(b)
    return bool(np.all(x[:, 3] == y[:, 3]) and np.allclose(x[:, :2], y[:, :2], atol=1e-4, rtol=0)
                and np.allclose(x[:, 2], y[:, 2], atol=1e-6, rtol=0))


def maps_for(size: tuple[int, int], detector: Any) -> tuple[np.ndarray, np.ndarray | None]:
    from partsup_mitosis.synth import image_rng, render
    image = render(image_rng(0, "icpr2012", 0), "icpr2012", size).image
    return detector.maps(image)


def timed(fn: Any, repeats: int) -> tuple[float, list[float]]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from partsup import Detector
    from partsup.inference.params import DetectParams
    from partsup.manager import load
    if args.threads:
        torch.set_num_threads(args.threads)
    detector = Detector.from_checkpoint(args.checkpoint, device="cpu")
    registries = load()
    threshold: str | float = args.threshold if args.threshold == "otsu" else float(args.threshold)
    params = DetectParams(w=args.w, sigma=args.sigma, a1=args.a1, s1=args.s1, threshold=threshold)
    rows = []
    print(f"{'HPF':>11s} {'partsup ms':>11s} {'skimage ms':>11s} {'speed-up':>9s} "
          f"{'detections':>10s} identical")
    for spec in args.sizes.split(","):
        h, w = (int(v) for v in spec.lower().split("x"))
        p_weak, p_strong = maps_for((h, w), detector)
        ours = partsup_pipeline(p_weak, p_strong, params, registries)
        theirs = skimage_pipeline(p_weak, p_strong, args.w, args.sigma, threshold, args.a1,
                                  args.s1)
        same = identical(ours, theirs)
        t_ours: list[float] = []
        t_sk: list[float] = []
        _, t_sk = timed(lambda: skimage_pipeline(p_weak, p_strong, args.w, args.sigma, threshold,
                                                 args.a1, args.s1), args.repeats)
        _, t_ours = timed(lambda: partsup_pipeline(p_weak, p_strong, params, registries),
                          args.repeats)
        row = {"size": [h, w], "partsup_s": statistics.median(t_ours),
               "skimage_s": statistics.median(t_sk), "partsup_runs_s": t_ours,
               "skimage_runs_s": t_sk, "detections": len(ours), "skimage_detections": len(theirs),
               "identical": same}
        row["speedup"] = row["skimage_s"] / row["partsup_s"]
        row["partsup_steps_s"] = partsup_steps(p_weak, p_strong, params, registries,
                                               args.repeats)
        rows.append(row)
        print(f"{h:>5d}x{w:<5d} {1e3 * row['partsup_s']:11.1f} {1e3 * row['skimage_s']:11.1f} "
              f"{row['speedup']:8.1f}x {len(ours):10d} {'yes' if same else 'NO'}")
        print("            partsup by step: " + ", ".join(
            f"{k} {1e3 * v:.1f} ms" for k, v in row["partsup_steps_s"].items()))
    out = {"machine": {"cpu": platform.processor() or platform.machine(),
                       "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                       "python": platform.python_version()},
           "params": {"w": args.w, "sigma": args.sigma, "threshold": threshold, "a1": args.a1,
                      "s1": args.s1}, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
