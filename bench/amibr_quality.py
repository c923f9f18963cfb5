"""Real-tissue quality of a checkpoint on ami-br test fields at several densities.

One command, one table, one JSON file. For each density (figures per 2000x2000 px) the
checkpoint's maps are computed once per field, then scored with

* ``calibrated``: the checkpoint's own detection parameters (what ``partsup predict`` and
  ``partsup evaluate`` use; the same values at every density, no recalibration), and
* ``otsu`` (with ``--otsu-from calibration.json``): the paper's rule (Otsu over the whole map)
  with the best Otsu grid point of that validation calibration, and
* ``fixed`` (with ``--fixed-from calibration.json``): its best fixed-threshold grid point,

giving TP/FP/FN, precision, recall, F1 (greedy one-to-one matching within the protocol radius,
:func:`partsup.evaluation.matching.match`), the average precision over all candidates before ``s1``, and how
many false alarms sit on a decoy disc's nucleus (the rest fall on the quilt's own tissue); each
also per source dataset of the slides (MIDOG21, TUPAC16).

    .venv/bin/python bench/amibr_quality.py --checkpoint runs/amibr/best.pt \\
        --densities 1.8,8,40 --out runs/amibr/quality.json

Two more views of the same test slides, scored with the same parameters: ``--layouts
discs,windows`` adds fields whose figures and decoys are pasted as rectangles of their own crop
(``ami-br windows=1``: natural context, no disc outline), reported under ``windows``; ``--crops``
adds ``ami-br-crops`` (whole crops side by side, about 244 figures per 2000x2000 px), reported
under ``crops``.

A checkpoint with a second look (``partsup calibrate --second-look``) is scored three ways on
the same maps: ``calibrated`` (its own ``detect`` rule, as if it had no second look),
``candidates`` (the second look's candidate rule alone) and ``second_look`` (those candidates
kept when the crop classifier's verify probability reaches its threshold; AP ranks them by
that probability): what ``partsup predict`` now does.

``--shift NAME`` changes every field's colours or sharpness before the model sees it, a
scanner or stain the training never showed (a robustness check, not a tuning view):
``pale`` (30 % less contrast towards white, a faded or over-exposed scan), ``hed-`` (haematoxylin
x0.75, eosin x1.35: weak nuclei, strong eosin), ``hed+`` (haematoxylin x1.3, eosin x0.7), ``blur``
(a Gaussian of sigma 1.2 px, a scan slightly out of focus).

``--fields N`` scores a seeded subset of N fields per density (quicker; say so when quoting).
Skips with a message when ../shared/data/ami-br is absent.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from partsup.manager import Registries

REPO = Path(__file__).resolve().parents[1]
AMIBR = REPO.parent / "shared" / "data" / "ami-br"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--densities", default="1.8,8,40",
                    help="comma-separated figures per 2000x2000 px (default 1.8,8,40)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--fields", type=int, default=None,
                    help="a seeded subset of N fields per density (default: all)")
    ap.add_argument("--sources", default=None,
                    help="comma-separated ami-br sources to test on (MIDOG21, TUPAC16)")
    ap.add_argument("--otsu-from", type=Path, default=None,
                    help="a calibration.json whose best Otsu grid point is scored too")
    ap.add_argument("--layouts", default="discs",
                    help="comma-separated ami-br layouts: discs (default), windows (figures in "
                         "their natural context)")
    ap.add_argument("--crops", action="store_true",
                    help="also score ami-br-crops (whole crops side by side)")
    ap.add_argument("--fixed-from", type=Path, default=None,
                    help="a calibration.json whose best fixed-threshold row is scored too")
    ap.add_argument("--tta", action="store_true", help="dihedral test-time augmentation")
    ap.add_argument("--shift", default="none", choices=sorted(SHIFTS),
                    help="change every field's colours or sharpness first (default none)")
    ap.add_argument("--root", type=Path, default=AMIBR, help="the AMi-Br folder")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    return ap.parse_args(argv)


def best_row(calibration: Path, otsu: bool) -> dict[str, Any]:
    """The best Otsu row (``otsu``) or fixed-threshold row of a ``partsup calibrate`` JSON (by
    F1, or by the mean F1 of the views when it was calibrated on several)."""
    rows = [r for r in json.loads(calibration.read_text())["rows"]
            if (r.get("threshold", "otsu") == "otsu") == otsu]
    if not rows:
        kind = "Otsu" if otsu else "fixed-threshold"
        raise SystemExit(f"{calibration}: no {kind} row (calibrate with --threshold otsu,0.5,...)")
    return max(rows, key=lambda r: r.get("mean_f1", r["f1"]))  # several views: their mean F1


def hed_scale(image: np.ndarray, h: float, e: float) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with its haematoxylin and eosin densities scaled by ``h``, ``e``
    (colour deconvolution, :func:`skimage.color.rgb2hed`)."""
    from skimage.color import hed2rgb, rgb2hed
    hed = rgb2hed(image)
    hed[..., 0] *= h
    hed[..., 1] *= e
    return (np.clip(hed2rgb(hed), 0, 1) * 255 + 0.5).astype(np.uint8)


def pale(image: np.ndarray) -> np.ndarray:
    """30 % less contrast towards white: ``255 - 0.7 (255 - image)``."""
    return (255 - 0.7 * (255 - image.astype(np.float32)) + 0.5).astype(np.uint8)


def blur(image: np.ndarray) -> np.ndarray:
    """A Gaussian of sigma 1.2 px over each channel."""
    from scipy.ndimage import gaussian_filter
    smooth = gaussian_filter(image.astype(np.float32), (1.2, 1.2, 0))
    return np.clip(smooth + 0.5, 0, 255).astype(np.uint8)


#: ``--shift`` choices: name -> (H, W, 3) uint8 -> (H, W, 3) uint8 (None: unchanged)
SHIFTS = {"none": None, "pale": pale, "blur": blur,
          "hed-": lambda im: hed_scale(im, 0.75, 1.35), "hed+": lambda im: hed_scale(im, 1.3, 0.7)}


#: px: a false alarm this close to a decoy disc's centre sits on the decoy's nucleus
DECOY_PX = 12.0


def score(maps: list[tuple], params: Any, regs: Registries, radius: float) -> dict[str, Any]:
    """Counts at ``params``, AP over the candidates before ``s1`` (pooled over fields), and
    where the false alarms sit: on a decoy disc's nucleus (within :data:`DECOY_PX` of its
    centre), or elsewhere (the quilt's own nuclei and tissue)."""
    from partsup.inference.blobs import candidates_from_maps
    from partsup.evaluation.matching import Counts, match, pr_curve
    total, gts, dets, scores, fp_decoy = Counts(0, 0, 0), [], [], [], 0
    for p_weak, p_strong, gt, mpp, decoys in maps:
        cands, keep = candidates_from_maps(p_weak, p_strong, params, mpp, regs)
        xy = np.array([[d.x, d.y] for d in cands], np.float64).reshape(-1, 2)
        sc = np.array([d.score for d in cands], np.float64)
        m = match(gt, xy[keep], sc[keep], radius_px=radius)
        total = total + m.counts
        fp = xy[keep][~m.det_tp]
        if len(fp) and len(decoys):
            d = np.sqrt(((fp[:, None] - decoys[None]) ** 2).sum(-1)).min(1)
            fp_decoy += int((d <= DECOY_PX).sum())
        gts.append(gt)
        dets.append(xy)
        scores.append(sc)
    curve = pr_curve(gts, dets, scores, radius_px=radius)
    return {**total.as_dict(), "ap": curve.ap, "fp_on_decoys": fp_decoy}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from partsup.inference.detector import load_detector
    from partsup.manager import load
    regs = load()
    from partsup.inference.detector import params_from_checkpoint
    detector, ckpt = load_detector(args.checkpoint, regs, device="cpu")
    detector.params.tta = bool(args.tta)
    rules = {"calibrated": detector.params}
    if detector.second_look is not None:  # its own detect rule, the candidate rule, then both
        own = params_from_checkpoint({k: v for k, v in ckpt.items() if k != "second_look"})
        own.tta = bool(args.tta)
        rules = {"calibrated": own, "candidates": detector.params}
    if args.otsu_from is not None:
        row = best_row(args.otsu_from, otsu=True)
        rules["otsu"] = dataclasses.replace(detector.params, threshold="otsu", w=row["w"],
                                            s1=row["s1"], a1=row["a1"])
    if args.fixed_from is not None:
        row = best_row(args.fixed_from, otsu=False)
        rules["fixed"] = dataclasses.replace(detector.params, threshold=row["threshold"],
                                             w=row["w"], s1=row["s1"], a1=row["a1"])
    protocol = regs.protocols.build("midog")
    sources = args.sources.split(",") if args.sources else None
    out: dict[str, Any] = {"checkpoint": str(args.checkpoint), "split": args.split,
                           "shift": args.shift,
                           "fields": args.fields, "sources": sources, "tta": args.tta,
                           "rules": {k: dataclasses.asdict(v) for k, v in rules.items()},
                           "densities": {}}
    if detector.second_look is not None:
        out["second_look"] = detector.second_look.params.to_dict()
    views: list[tuple[str, str, float, dict[str, Any]]] = []
    for layout in args.layouts.split(","):
        if layout not in ("discs", "windows"):
            raise SystemExit(f"--layouts: unknown layout {layout!r} (discs, windows)")
        options = {"windows": 1.0} if layout == "windows" else {}
        views += [(layout, "ami-br", float(d), options) for d in args.densities.split(",")]
    if args.crops:
        views.append(("crops", "ami-br-crops", 0.0, {}))
    for layout, name, density, options in views:
        if name == "ami-br":
            options = {**options, "density": density, "hard_negatives": True}  # decoy centres
        reader = regs.datasets.build(name, root=args.root, split=args.split,
                                     fields=args.fields, sources=sources, **options)
        row = score_reader(reader, detector, rules, regs, protocol, SHIFTS[args.shift])
        key = "crops" if layout == "crops" else f"{density:g}"
        if layout == "discs":
            out["densities"][key] = row
        else:
            out.setdefault(layout, {})[key] = row
        label = layout if layout == "crops" else f"{layout} {density:>4g}"
        names = [k for k in row if k in rules or k == "second_look"]
        print(table_line(label, row, names), flush=True)
        for src, part in row["by_source"].items():
            print(f"  {src:>8}: " + table_line(label, part, names), flush=True)
    return out


def score_reader(reader: Any, detector: Any, rules: dict[str, Any], regs: Registries,
                 protocol: Any, shift: Any = None) -> dict[str, Any]:
    """One view: maps once per field (of its image changed by ``shift`` first, when given),
    then every rule, overall and per source."""
    from partsup.inference.blobs import candidates_from_maps
    t0 = time.perf_counter()
    maps, source, looks = [], [], []
    groups = reader.groups
    look = detector.second_look
    for i in range(len(reader)):
        s = reader[i]
        image = s.image if shift is None else shift(s.image)
        maps.append((*detector.maps(image), s.points.astype(np.float64), s.mpp,
                     reader.hard_negatives(i).astype(np.float64)))
        source.append(reader.by_slide[groups[i]][0].source)
        if look is not None:  # the candidates' verify probabilities, as predict computes them
            cands, keep = candidates_from_maps(maps[-1][0], maps[-1][1], detector.params,
                                               s.mpp, regs)
            xy = np.array([[d.x, d.y] for d in cands], np.float64).reshape(-1, 2)[keep]
            looks.append((xy, verify_probability(look, image, xy, s.mpp)))
    seconds = time.perf_counter() - t0
    radius = protocol.radius_for(reader.mpp(0))
    row: dict[str, Any] = {"fields": len(reader), "figures": int(sum(len(m[2]) for m in maps)),
                           "seconds_maps": round(seconds, 1)}
    row.update({name: score(maps, p, regs, radius) for name, p in rules.items()})
    if look is not None:
        row["second_look"] = score_look(maps, looks, look.params.verify.threshold, radius)
    row["by_source"] = {}
    for src in sorted(set(source)):  # the same fields, split by the slide's source
        sub = [m for m, k in zip(maps, source) if k == src]
        part = {"fields": len(sub), "figures": int(sum(len(m[2]) for m in sub))}
        part.update({name: score(sub, p, regs, radius) for name, p in rules.items()})
        if look is not None:
            part["second_look"] = score_look(sub, [lk for lk, k in zip(looks, source)
                                                   if k == src],
                                             look.params.verify.threshold, radius)
        row["by_source"][src] = part
    return row


def verify_probability(look: Any, image: np.ndarray, xy: np.ndarray, mpp: float) -> np.ndarray:
    """``(K,)`` the verify head's positive-class probability of the crops around ``xy``."""
    rule = look.params.verify
    if not len(xy):
        return np.zeros(0, np.float64)
    probs = look.probabilities(image, xy, mpp)[rule.head]
    return probs[:, look.spec.heads[rule.head].index(rule.positive)].astype(np.float64)


def score_look(maps: list[tuple], looks: list[tuple], threshold: float,
               radius: float) -> dict[str, Any]:
    """Counts of the candidates whose verify probability is ``>= threshold``, AP over the
    candidates ranked by that probability, false alarms on decoys (as :func:`score`)."""
    from partsup.evaluation.matching import Counts, match, pr_curve
    total, gts, fp_decoy = Counts(0, 0, 0), [], 0
    for (_, _, gt, _, decoys), (xy, p) in zip(maps, looks):
        kept = p >= threshold
        m = match(gt, xy[kept], p[kept], radius_px=radius)
        total = total + m.counts
        fp = xy[kept][~m.det_tp]
        if len(fp) and len(decoys):
            d = np.sqrt(((fp[:, None] - decoys[None]) ** 2).sum(-1)).min(1)
            fp_decoy += int((d <= DECOY_PX).sum())
        gts.append(gt)
    curve = pr_curve(gts, [xy for xy, _ in looks], [p for _, p in looks], radius_px=radius)
    return {**total.as_dict(), "ap": curve.ap, "fp_on_decoys": fp_decoy}


def table_line(label: str, row: dict[str, Any], rules: list[str]) -> str:
    parts = [f"{label}: {row['fields']:>5} fields, {row['figures']:>4} figures"]
    for name in rules:
        r = row[name]
        ap = "-" if r["ap"] is None else f"{r['ap']:.3f}"
        parts.append(f"{name}: P {r['precision']:.3f} R {r['recall']:.3f} F1 {r['f1']:.3f} "
                     f"AP {ap} (TP {r['tp']} FP {r['fp']} [{r['fp_on_decoys']} on decoys] "
                     f"FN {r['fn']})")
    return " | ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.root / "metadata.csv").is_file():
        print(f"skipped: {args.root} not found (the AMi-Br crops; see ../shared/data/README.md)")
        return 0
    result = run(args)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
