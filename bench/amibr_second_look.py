"""The mitosis second look on its own: atypical vs normal and figure vs imposter on ami-br.

Classifies *given* points (no detection) with one or more trained crop classifiers (the
``best.pt`` of ``partsup train recipes/second-look-amibr.yaml``, one per seed) through
:meth:`partsup.Detector.classify`: each classifier is attached to the detector checkpoint as
its second look (verify head ``figure``, label head ``kind``) and the points' crops are
classified.

* ``kind`` (atypical vs normal): every annotated figure of the split's whole crops
  (``ami-br-crops``, the figures in their own context; neighbours that fall inside a crop
  count too) and of ``ami-br`` fields at density 40 (half of them windows). AUROC of
  ``p_atypical``; balanced accuracy at the threshold on ``p_atypical`` that is best on the
  validation slides' crops (chosen there only) and at 0.5 (the argmax).
* ``figure`` (figure vs imposter): ``ami-br`` test fields at density 40 (half of them
  windows): the figures against the decoy nuclei (the fields' hard negatives). AUROC of
  ``p_figure``; balanced accuracy at 0.5.

Several ``--classifier`` files (seeds) give mean +- sd (sample sd). ``--fields N`` scores a
seeded subset of N fields per view (quicker; say so when quoting). One JSON file with
``--out``. Skips with a message when ../shared/data/ami-br is absent.

    python bench/amibr_second_look.py --classifier runs/second-look/best.pt \\
        --out runs/second-look/second-look.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
AMIBR = REPO.parent / "shared" / "data" / "ami-br"
SECOND_LOOK = {"verify": {"head": "figure", "positive": "figure", "threshold": 0.5},
               "label": {"head": "kind"}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classifier", required=True, type=Path, action="append",
                    help="a crop classifier's checkpoint (repeat for seeds)")
    ap.add_argument("--detector", type=Path, default=None,
                    help="the detector checkpoint to attach it to (default: the shipped one)")
    ap.add_argument("--fields", type=int, default=None,
                    help="a seeded subset of N fields per view (default: all)")
    ap.add_argument("--tta", action="store_true", help="average the 8 dihedral views")
    ap.add_argument("--root", type=Path, default=AMIBR, help="the AMi-Br folder")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    return ap.parse_args(argv)


def detector_with(classifier: Path, detector: Path | None, regs: Any, folder: Path,
                  tta: bool) -> Any:
    """``partsup.Detector`` of ``detector`` with ``classifier`` attached as its second look."""
    import partsup
    from partsup.checkpoint.files import load_checkpoint, save_checkpoint
    from partsup.checkpoint.second_look import attach_second_look
    from partsup.inference.detector import default_checkpoint
    base = load_checkpoint(detector or default_checkpoint(regs))
    path = save_checkpoint(folder / f"with-{len(list(folder.iterdir()))}.pt",
                           attach_second_look(base, load_checkpoint(classifier), SECOND_LOOK))
    return partsup.Detector.from_checkpoint(path, device="cpu", tta=tta)


def collect(detector: Any, reader: Any) -> dict[str, np.ndarray]:
    """Per point and decoy of every field: p_atypical, p_figure, is-atypical (points; -1 for
    decoys), is-figure, and the slide's source."""
    rows: dict[str, list] = {"p_atypical": [], "p_figure": [], "atypical": [], "figure": [],
                             "source": []}
    for i in range(len(reader)):
        s = reader[i]
        decoys = reader.hard_negatives(i)
        points = np.concatenate([s.points, decoys]).reshape(-1, 2)
        if not len(points):
            continue
        found = detector.classify(s.image, points, s.mpp)
        src = reader.by_slide[reader.groups[i]][0].source
        n = len(s.points)
        rows["p_atypical"] += [d.probs["atypical"] for d in found]
        rows["p_figure"] += [d.probs["figure"] for d in found]
        rows["atypical"] += [int(lab == "atypical") for lab in s.point_labels] + [-1] * len(decoys)
        rows["figure"] += [1] * n + [0] * len(decoys)
        rows["source"] += [src] * len(points)
    return {k: np.asarray(v) for k, v in rows.items()}


def balanced(y: np.ndarray, positive: np.ndarray) -> float:
    """Balanced accuracy of the decisions ``positive`` (bool) for the 0/1 truths ``y``."""
    from partsup.evaluation.classification import balanced_accuracy
    return float(balanced_accuracy(y, positive.astype(np.int64), 2))


def best_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold on ``p`` (one of its values) with the best balanced accuracy."""
    cands = np.unique(p)
    accs = [balanced(y, p >= c) for c in cands]
    return float(cands[int(np.argmax(accs))])


def kind_scores(r: dict[str, np.ndarray], threshold: float) -> dict[str, Any]:
    from partsup.evaluation.classification import auroc, confusion_matrix
    m = r["atypical"] >= 0
    y, p = r["atypical"][m], r["p_atypical"][m]
    out: dict[str, Any] = {"n": int(m.sum()), "atypical": int(y.sum()),
                           "auroc": float(auroc(y == 1, p)),
                           "balanced_accuracy": balanced(y, p >= threshold),
                           "balanced_accuracy_05": balanced(y, p >= 0.5),
                           "confusion": confusion_matrix(y, (p >= threshold).astype(np.int64),
                                                         2).tolist()}
    for src in sorted(set(r["source"][m])):
        k = r["source"][m] == src
        out[src] = {"n": int(k.sum()), "auroc": float(auroc(y[k] == 1, p[k])),
                    "balanced_accuracy": balanced(y[k], p[k] >= threshold)}
    return out


def figure_scores(r: dict[str, np.ndarray]) -> dict[str, Any]:
    from partsup.evaluation.classification import auroc
    y, p = r["figure"], r["p_figure"]
    return {"figures": int(y.sum()), "decoys": int((y == 0).sum()),
            "auroc": float(auroc(y == 1, p)), "balanced_accuracy_05": balanced(y, p >= 0.5),
            "decoys_kept_05": float((p[y == 0] >= 0.5).mean()),
            "figures_kept_05": float((p[y == 1] >= 0.5).mean())}


def one(classifier: Path, args: argparse.Namespace, regs: Any, folder: Path) -> dict[str, Any]:
    detector = detector_with(classifier, args.detector, regs, folder, args.tta)
    common = {"root": args.root, "fields": args.fields}
    fields = {"density": 40.0, "windows": 0.5, "hard_negatives": True}
    t0 = time.perf_counter()
    val = collect(detector, regs.datasets.build("ami-br-crops", split="val", **common))
    threshold = best_threshold(val["atypical"], val["p_atypical"])
    out: dict[str, Any] = {"classifier": str(classifier), "threshold_from_val": threshold,
                           "val_crops": kind_scores(val, threshold)}
    crops = collect(detector, regs.datasets.build("ami-br-crops", split="test", **common))
    test = collect(detector, regs.datasets.build("ami-br", split="test", **common, **fields))
    out["test_crops"] = kind_scores(crops, threshold)
    out["test_fields"] = kind_scores(test, threshold)
    out["test_figure"] = figure_scores(test)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


SUMMARY = [("test_crops", "auroc"), ("test_crops", "balanced_accuracy"),
           ("test_crops", "balanced_accuracy_05"), ("test_fields", "auroc"),
           ("test_fields", "balanced_accuracy"), ("test_figure", "auroc"),
           ("test_figure", "balanced_accuracy_05"), ("val_crops", "balanced_accuracy")]


def summary(runs: list[dict[str, Any]]) -> dict[str, str]:
    """``view.metric -> "mean +- sd (n)"`` over the classifiers."""
    out = {}
    for view, metric in SUMMARY:
        v = np.array([r[view][metric] for r in runs], np.float64)
        sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        out[f"{view}.{metric}"] = f"{v.mean():.3f} +- {sd:.3f} (n={len(v)})"
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.root / "metadata.csv").is_file():
        print(f"skipped: {args.root} not found (the AMi-Br crops; see ../shared/data/README.md)")
        return 0
    from partsup.manager import load
    regs = load()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.classifier:
            r = one(path, args, regs, Path(tmp))
            runs.append(r)
            line = {f"{v}.{m}": round(r[v][m], 3) for v, m in SUMMARY}
            print(f"{path}: threshold {r['threshold_from_val']:.3f} {json.dumps(line)}",
                  flush=True)
    result = {"fields": args.fields, "tta": args.tta, "runs": runs, "summary": summary(runs)}
    for key, value in result["summary"].items():
        print(f"{key}: {value}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
