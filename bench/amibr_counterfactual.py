"""Counterfactual check of the ami-br fields with a small trained CNN.

    python bench/amibr_counterfactual.py [--train-seconds 420] [--eval-fields 120]
                                         [--val-fields 80] [--realistic-fields 150]
                                         [--threads 2] [--json out.json]

1. Trains a small U-Net-like CNN (the one ``bench/synth_baseline.py`` trains, ~0.12 M
   parameters, from scratch, CPU; network, loop and blob read-out are
   :mod:`partsup_mitosis.small_cnn`'s) on ami-br *train* fields for ``--train-seconds``:
   128x128 patches, half of them around a figure, from a pool of pre-rendered fields (density
   18 per 2000x2000 px so the pool holds enough figures; the appearance of figures, decoys and
   quilt does not depend on density);
   a quarter of the patches are centred on decoy discs (dark non-mitotic nuclei). Target: disc of
   3 um (12 px) at each figure. Detections: blobs of probability > 0.5, kept when their mean
   probability > s1 and area > a1 px, (s1, a1) chosen for the best F1 on validation fields;
   matching: greedy one-to-one within 30 px (7.5 um, ``partsup.evaluation.matching.match``).
2. Evaluates on *test* fields (other slides) that hold figures, each rendered three ways
   (``AmiBrFields.render``): as listed (A), with the same figure discs moved to new random
   positions (B, ``placement=1``), and without figures (C, ``figures=False``).

Reported:
* recall and F1 on A and on B: the same figures at new offsets must still be found
  (|recall_A - recall_B| <= 0.05);
* movement: of the figures found in A, the share found at their new position in B, and the
  detections B leaves within 30 px of the *old* positions (should match the background rate);
* quiet background: false detections per megapixel in C (no figures at all), in A away from
  the figures, and in realistic-density fields (density 1.8, mostly figure-free);
* seams: the share of false detections whose centre lies within 2 px of a quilt seam, against
  the share of the field's area those bands cover (a model firing on seams would exceed it).

Prints a table and writes ``--json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from partsup.evaluation.matching import Counts, match
from partsup_mitosis.amibr import factory
from partsup_mitosis.small_cnn import (SmallUNet, disc_target, probability_blobs, random_view,
                                       to_input, train_for)

RADIUS = 30.0
PATCH = 128


def _pool(ds, n_pos: int, n_neg: int, rng: np.random.Generator) -> list:
    with_figs = [i for i in range(len(ds)) if len(ds.points(i))]
    pos = rng.choice(with_figs, min(n_pos, len(with_figs)), replace=False)
    neg = rng.choice(len(ds), n_neg, replace=False)
    out = []
    for i in sorted(int(j) for j in list(pos) + list(neg)):  # slide by slide: decode once
        s = ds[int(i)]
        decoys = np.asarray(ds.centres(i, 0)[1], np.float32).reshape(-1, 2)
        n = s.image.shape[0]
        out.append((s.image, s.points, disc_target(s.points, (n, n), 12.0), decoys))
    return out


def _batch(rng, pool, n=8):
    xs, ys = [], []
    for _ in range(n):
        image, pts, tg, decoys = pool[int(rng.integers(len(pool)))]
        size = image.shape[0]
        u = rng.random()
        if len(pts) and u < 0.5:
            cx, cy = pts[int(rng.integers(len(pts)))] + rng.uniform(-40, 40, 2)
        elif len(decoys) and u < 0.75:  # hard negatives: discs centred on dark nuclei
            cx, cy = decoys[int(rng.integers(len(decoys)))] + rng.uniform(-20, 20, 2)
        else:
            cx, cy = rng.uniform(PATCH / 2, size - PATCH / 2, 2)
        x0 = int(np.clip(cx - PATCH / 2, 0, size - PATCH))
        y0 = int(np.clip(cy - PATCH / 2, 0, size - PATCH))
        a, b = random_view(rng, image[y0:y0 + PATCH, x0:x0 + PATCH],
                           tg[y0:y0 + PATCH, x0:x0 + PATCH])
        xs.append(a)
        ys.append(b)
    return to_input(np.stack(xs)), np.stack(ys)


def train(seconds: float, seed: int = 0):
    import torch
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ds = factory(split="train", density=18.0)
    t0 = time.perf_counter()
    pool = _pool(ds, 400, 200, rng)
    t_pool = time.perf_counter() - t0
    net = SmallUNet()
    t0 = time.perf_counter()
    it = train_for(net, lambda: _batch(rng, pool), seconds, pos_weight=2.0)
    return net, {"iterations": it, "train_seconds": round(time.perf_counter() - t0, 1),
                 "pool_seconds": round(t_pool, 1), "pool_fields": len(pool)}


class Detector:
    """The trained net plus the blob filter (mean probability > s1, area > a1 px)."""

    def __init__(self, net, s1: float = 0.5, a1: float = 20.0) -> None:
        self.net, self.s1, self.a1 = net, s1, a1

    def __call__(self, image: np.ndarray) -> np.ndarray:
        xy, score, area = probability_blobs(self.net, image)
        return xy[(score > self.s1) & (area > self.a1)]


def calibrate(net, n_fields: int) -> tuple[Detector, dict]:
    """Choose (s1, a1) for the best F1 on validation fields (other slides than the test)."""
    ds = factory(split="val", density=18.0, fields=n_fields)
    found = [(ds.points(i), *probability_blobs(net, ds[i].image)) for i in range(len(ds))]
    best = (-1.0, 0.5, 20.0)
    for s1 in (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95):
        for a1 in (0, 20, 50, 100, 200, 400):
            c = Counts.total(match(gt, xy[(sc > s1) & (ar > a1)], radius_px=RADIUS).counts
                             for gt, xy, sc, ar in found)
            if c.f1 > best[0]:
                best = (c.f1, s1, a1)
    return Detector(net, best[1], best[2]), {"val_fields": len(ds), "val_f1": best[0],
                                             "s1": best[1], "a1": best[2]}


def _near(a: np.ndarray, b: np.ndarray, r: float = RADIUS) -> np.ndarray:
    """For each row of ``a``, whether some row of ``b`` lies within ``r``."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(len(a), bool)
    return (np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)) <= r).any(1)


def _seam_band(ds, xy: np.ndarray, band: float = 2.0) -> np.ndarray:
    """Whether points lie within ``band`` px of a quilt seam (tile-overlap centre lines)."""
    off = ds.feather / 2.0  # the rendered field starts feather/2 into the quilt canvas
    d = np.abs(((xy + off) % ds.step) - ds.feather / 2.0)
    d = np.minimum(d, ds.step - d)
    return (d <= band).any(1)


def evaluate(detect: Detector, n_fields: int) -> dict:
    ds = factory(split="test", density=18.0)
    fields = [i for i in range(len(ds)) if len(ds.points(i))][:n_fields]
    ca, cb = Counts(), Counts()
    found_a = moved_found = stale = 0
    fp_a_far, fp_c, seam_fp, fp_total = 0, 0, 0, 0
    area = ds.field_size ** 2 / 1e6
    for i in fields:
        a, b, c = ds.render(i), ds.render(i, placement=1), ds.render(i, figures=False)
        da, db, dc = detect(a.image), detect(b.image), detect(c.image)
        ma = match(a.points, da, radius_px=RADIUS)
        ca, cb = ca + ma.counts, cb + match(b.points, db, radius_px=RADIUS).counts
        hit_a = ma.gt_match >= 0
        found_a += int(hit_a.sum())
        moved_found += int((_near(b.points, db) & hit_a).sum())
        # detections in B near the old spots but not near any new one
        stale += int((_near(db, a.points) & ~_near(db, b.points)).sum())
        fp_a_far += int((~_near(da, a.points, 60.0)).sum())
        fp_c += len(dc)
        false = np.concatenate([da[~ma.det_tp], dc]).reshape(-1, 2)
        fp_total += len(false)
        seam_fp += int(_seam_band(ds, false).sum())
    n = len(fields)
    yy, xx = np.mgrid[0:ds.field_size, 0:ds.field_size]
    seam_area = _seam_band(ds, np.stack([xx.ravel(), yy.ravel()], 1).astype(float)).mean()
    return {
        "fields": n, "figures": ca.tp + ca.fn,
        "A_as_listed": ca.as_dict(), "B_moved": cb.as_dict(),
        "recall_gap": abs(ca.recall - cb.recall),
        "found_in_A_and_at_new_position_in_B": moved_found / max(1, found_a),
        "B_detections_left_at_old_positions": stale,
        "B_stale_per_field": stale / max(1, n),
        "fp_per_mpx_A_away_from_figures": fp_a_far / (n * area),
        "fp_per_mpx_C_no_figures": fp_c / (n * area),
        "seam_band_share_of_false_detections": seam_fp / max(1, fp_total),
        "seam_band_share_of_area": float(seam_area),
    }


def realistic(detect: Detector, n_fields: int) -> dict:
    ds = factory(split="test", fields=n_fields)  # default density 1.8: mostly empty fields
    c = Counts()
    for i in range(len(ds)):
        s = ds[i]
        c = c + match(s.points, detect(s.image), radius_px=RADIUS).counts
    area = len(ds) * ds.field_size ** 2 / 1e6
    return {"fields": len(ds), **c.as_dict(), "fp_per_mpx": c.fp / area}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train-seconds", type=float, default=420.0)
    ap.add_argument("--eval-fields", type=int, default=120)
    ap.add_argument("--realistic-fields", type=int, default=150)
    ap.add_argument("--val-fields", type=int, default=80)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    net, info = train(args.train_seconds)
    detect, cal = calibrate(net, args.val_fields)
    res = {"train": info, "calibration": cal, "counterfactual": evaluate(detect, args.eval_fields),
           "realistic_density": realistic(detect, args.realistic_fields)}
    cf = res["counterfactual"]
    print(f"trained {info['iterations']} iterations in {info['train_seconds']} s "
          f"(pool of {info['pool_fields']} fields rendered in {info['pool_seconds']} s)")
    print(f"calibrated on {cal['val_fields']} val fields: s1 {cal['s1']}, a1 {cal['a1']} "
          f"(val F1 {cal['val_f1']:.3f})")
    print(f"test fields with figures: {cf['fields']} ({cf['figures']} figures)")
    for key in ("A_as_listed", "B_moved"):
        c = cf[key]
        print(f"  {key:14s} P {c['precision']:.3f}  R {c['recall']:.3f}  F1 {c['f1']:.3f}")
    print(f"  recall gap |A - B|: {cf['recall_gap']:.3f}  (must be <= 0.05)")
    print(f"  found in A -> found at the new position in B: "
          f"{cf['found_in_A_and_at_new_position_in_B']:.3f}")
    print(f"  B detections left at old positions: {cf['B_detections_left_at_old_positions']} "
          f"({cf['B_stale_per_field']:.3f} per field)")
    print(f"  false detections / Mpx: A away from figures "
          f"{cf['fp_per_mpx_A_away_from_figures']:.2f}, "
          f"C without figures {cf['fp_per_mpx_C_no_figures']:.2f}")
    print(f"  false detections on seam bands: {cf['seam_band_share_of_false_detections']:.3f} "
          f"(bands cover {cf['seam_band_share_of_area']:.3f} of the area)")
    r = res["realistic_density"]
    print(f"realistic density (1.8 / 2000^2 px), {r['fields']} test fields: P {r['precision']:.3f}"
          f" R {r['recall']:.3f} F1 {r['f1']:.3f}, false detections / Mpx {r['fp_per_mpx']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
