"""How hard is the synthetic data? A classical baseline vs a small CNN, on each style.

    python bench/synth_baseline.py [--styles amida13 icpr2012] [--images 24] [--size 384]
                                   [--cnn-seconds 180] [--threads 2] [--json out.json]

For each style the script renders ``--images`` training and ``--images`` test images exactly as
``partsup synth --seed 0`` would (test images first), then reports, with the protocol radius
8 um and greedy one-to-one matching (``partsup.evaluation.matching.match``):

* **threshold baseline (tuned on train)**: hematoxylin OD (Ruifrok) > t, 8-connected blobs with
  area in [lo, hi] px; (t, lo, hi) chosen on the training images, F1 measured on the test images;
* **threshold baseline (oracle)**: the same, tuned on the test images themselves (an upper bound);
* **small CNN** (with ``--cnn-seconds`` > 0): a 3-level U-Net-like network (16-32-64 channels,
  about 0.12 M parameters) trained from scratch for that many seconds of wall time on CPU, on
  128x128 patches (half centred near a figure) with disk targets (radius 3 um); detections are
  blobs of probability > 0.5 with area >= 20 px. This is a feasibility check of the difficulty
  window (the real training loop is ``partsup train``), not a model to keep. Network, loop and
  read-out are :mod:`partsup_mitosis.small_cnn`'s.

Prints one table row per style and method; ``--json`` writes the same numbers.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy import ndimage as ndi

from partsup.evaluation.matching import Counts, match
from partsup_mitosis.small_cnn import (SmallUNet, disc_target, probability_blobs, random_view,
                                       to_input, train_for)
from partsup_mitosis.synth import STYLES, hematoxylin, image_rng, render, split_sizes, threshold_blobs

THRESHOLDS = (0.10, 0.13, 0.16, 0.19, 0.22, 0.25, 0.28)
GRID = [(t, lo, hi) for t in THRESHOLDS for lo in (10, 30, 60, 120, 200)
        for hi in (150, 300, 600, 1200, 4000) if hi > lo]


def _blobs(images):
    out = {}
    for t in THRESHOLDS:
        out[t] = []
        for im in images:
            h = hematoxylin(im.image)
            lab, n = ndi.label(h > t, structure=np.ones((3, 3), bool))
            areas = ndi.sum_labels(np.ones_like(h), lab, np.arange(1, n + 1))
            out[t].append((threshold_blobs(h, t, (0, np.inf)), areas))
    return out


def _score(images, blobs, t, lo, hi) -> Counts:
    return Counts.total(match(im.points, xy[(a >= lo) & (a <= hi)], radius_px=8.0 / im.mpp).counts
                        for im, (xy, a) in zip(images, blobs[t]))


def threshold_baseline(train, test) -> dict:
    tr, te = _blobs(train), _blobs(test)
    tuned = max(GRID, key=lambda k: _score(train, tr, *k).f1)
    oracle = max(GRID, key=lambda k: _score(test, te, *k).f1)
    return {"tuned": {"params": tuned, **_score(test, te, *tuned).as_dict()},
            "oracle": {"params": oracle, **_score(test, te, *oracle).as_dict()}}


# -- the small CNN (partsup_mitosis.small_cnn: the same network as bench/amibr_counterfactual.py)

def _batch(rng, images, targets, n=8, p=128):
    xs, ys = [], []
    for _ in range(n):
        k = int(rng.integers(len(images)))
        im, tg = images[k], targets[k]
        h, w = tg.shape
        if len(im.points) and rng.random() < 0.5:
            cx, cy = im.points[int(rng.integers(len(im.points)))] + rng.uniform(-40, 40, 2)
            x0 = int(np.clip(cx - p / 2, 0, w - p))
            y0 = int(np.clip(cy - p / 2, 0, h - p))
        else:
            x0, y0 = int(rng.integers(0, w - p + 1)), int(rng.integers(0, h - p + 1))
        a, b = random_view(rng, im.image[y0:y0 + p, x0:x0 + p], tg[y0:y0 + p, x0:x0 + p])
        xs.append(a)
        ys.append(b)
    return to_input(np.stack(xs)), np.stack(ys)


def small_cnn(train, test, seconds: float, seed: int = 0) -> dict:
    import torch
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = SmallUNet()
    targets = [disc_target(im.points, im.image.shape[:2], 3.0 / im.mpp) for im in train]
    t0 = time.perf_counter()
    it = train_for(net, lambda: _batch(rng, train, targets), seconds, pos_weight=5.0)
    counts = Counts()
    for im in test:
        xy, _, area = probability_blobs(net, im.image)
        counts = counts + match(im.points, xy[area >= 20], radius_px=8.0 / im.mpp).counts
    return {"iterations": it, "seconds": round(time.perf_counter() - t0, 1), **counts.as_dict()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--styles", nargs="+", default=list(STYLES), choices=list(STYLES))
    ap.add_argument("--images", type=int, default=24, help="training and test images each")
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--cnn-seconds", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    n_all = 2 * args.images
    n_test = split_sizes(n_all, 0.0, 0.5)["test"]
    results = {}
    print(f"{'style':10s} {'method':22s} {'P':>6s} {'R':>6s} {'F1':>6s}  notes")
    for style in args.styles:
        ims = [render(image_rng(0, style, i), style, args.size) for i in range(n_all)]
        test, train = ims[:n_test], ims[n_test:]
        res = threshold_baseline(train, test)
        if args.cnn_seconds > 0:
            res["cnn"] = small_cnn(train, test, args.cnn_seconds)
        results[style] = res
        for method, r in res.items():
            note = r.get("params", f"{r.get('iterations')} it / {r.get('seconds')} s")
            print(f"{style:10s} {method:22s} {r['precision']:6.3f} {r['recall']:6.3f} "
                  f"{r['f1']:6.3f}  {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
