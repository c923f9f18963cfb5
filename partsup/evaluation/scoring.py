"""Scoring detections against a dataset's ground truth, image by image, and the files it
writes (the library side of ``partsup evaluate``; see that command for the output layout).

Detections come from a checkpoint's detector or from another tool's files
(:class:`FileDetections`, any readable writer format). Coordinates are pixels (x = column);
the match radius comes from the protocol (um, converted with each image's mpp, or px).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from partsup.errors import DataError
from partsup.evaluation.matching import Counts, PRCurve, match, match_ranked, pr_from_flags
from partsup.types import Detection, Protocol, Sample


# -- detections from files -----------------------------------------------------------------------

@dataclass
class Found:
    """One image's detections at the operating point, and the scored ones the precision-recall
    curve ranks (a superset, e.g. before the score threshold s1; None: no scores to rank).
    ``before``: with a second look, the same for the candidate rule alone (scored, not
    written)."""

    detections: list[Detection]
    ranked: list[Detection] | None
    before: "Found | None" = None


class FileDetections:
    """Detections made by another tool: one file per image in ``folder`` (any writer format).

    ``unscored`` lists the files read whose detections carry no score of their own."""

    def __init__(self, folder: str | Path, fmt: str | None = None, writers: Any = None) -> None:
        from partsup.output.writers import readable
        self.folder = Path(folder)
        self.fmt = fmt
        self.writers = readable(writers)  # name -> factory of the formats read back
        self.found = 0
        self.unscored: list[Path] = []
        if not self.folder.is_dir():
            raise DataError(f"--detections: folder {self.folder} not found")

    def __call__(self, sample: Sample) -> Found:
        from partsup.output.writers import has_scores, locations, read_detections
        for path in locations(self.folder, sample.id, self.writers):
            if path.is_file():
                self.found += 1
                arr = read_detections(path, fmt=self.fmt, mpp=sample.mpp, writers=self.writers)
                dets = [Detection(float(x), float(y), float(s), 0.0) for x, y, s in arr]
                if not has_scores(path, fmt=self.fmt, writers=self.writers):
                    self.unscored.append(path)
                    return Found(dets, None)
                return Found(dets, dets)
        return Found([], [])  # no file: no detections (the usual challenge convention)


# -- one image -----------------------------------------------------------------------------------

@dataclass
class ImageScore:
    id: str
    mpp: float
    n_gt: int
    n_det: int
    counts: Counts
    radius_px: float
    #: ``(scores (K,), tp (K,) bool)`` of the ranked detections, or None (no scores)
    ranked: tuple[np.ndarray, np.ndarray] | None = None
    #: with a second look: the candidate rule alone (:attr:`Found.before`), scored the same way
    before: "ImageScore | None" = None
    #: matched ground truth with a known class: ``(class, the detection's probs)`` each
    labelled: list[tuple[str, dict[str, float]]] = field(default_factory=list)

    @property
    def curve(self) -> PRCurve | None:
        """This image's own precision-recall curve (None without scores)."""
        return None if self.ranked is None else pr_from_flags(*[[a] for a in self.ranked],
                                                              self.n_gt)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "mpp": self.mpp, "n_gt": self.n_gt, "n_det": self.n_det,
                "radius_px": self.radius_px, **self.counts.as_dict()}


def write_detection_csv(path: Path, detections: Sequence[Detection], tp: np.ndarray) -> None:
    """``x,y,score,area,match`` (px; match = tp|fp), then ``class`` and one ``p_<class>`` per
    class when a second look gave the detections probabilities; readable by
    ``read_detections``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    classes = list(next((d.probs for d in detections if d.probs), {}))
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["x", "y", "score", "area", "match"]
                   + (["class", *(f"p_{c}" for c in classes)] if classes else []))
        for d, t in zip(detections, tp):
            extra = [d.label or "", *(f"{d.probs.get(c, float('nan')):.6f}" for c in classes)]
            w.writerow([f"{d.x:.2f}", f"{d.y:.2f}", f"{d.score:.6f}", f"{d.area:g}",
                        "tp" if t else "fp"] + (extra if classes else []))


def _xy_scores(detections: Sequence[Detection]) -> tuple[np.ndarray, np.ndarray]:
    """``(K, 2)`` x, y (px) and ``(K,)`` scores, float64."""
    xy = np.array([[d.x, d.y] for d in detections], np.float64).reshape(-1, 2)
    return xy, np.array([d.score for d in detections], np.float64)


def score_image(sample: Sample, found: Found, protocol: Protocol, out: Path,
                overlays: bool) -> ImageScore:
    """Match one image's detections (hard negatives are never ground truth); write its CSV and
    overlay under ``out``; match ``found.ranked`` in score order for the PR curve."""
    detections = found.detections
    xy, scores = _xy_scores(detections)
    radius = protocol.radius_for(sample.mpp)
    result, ranked = _match(sample, found, radius)
    write_detection_csv(out / "detections" / f"{sample.id}.csv", detections, result.det_tp)
    if overlays:
        from partsup.evaluation.overlay import save_overlay
        save_overlay(out / "overlays" / f"{sample.id}.png", sample.image, sample.points, xy,
                     result)
    before = None
    if found.before is not None:
        b_result, b_ranked = _match(sample, found.before, radius)
        before = ImageScore(sample.id, float(sample.mpp), len(sample.points),
                            len(found.before.detections), b_result.counts, radius, b_ranked)
    labelled = [(sample.point_labels[i], detections[j].probs)
                for i, j in enumerate(result.gt_match)
                if sample.point_labels and j >= 0 and detections[j].probs]
    return ImageScore(sample.id, float(sample.mpp), len(sample.points), len(xy), result.counts,
                      radius, ranked, before, labelled)


def _match(sample: Sample, found: Found, radius: float
           ) -> tuple[Any, tuple[np.ndarray, np.ndarray] | None]:
    """The operating point's :class:`MatchResult` and the ranked detections' ``(scores,
    tp flags)`` (None without scores)."""
    xy, scores = _xy_scores(found.detections)
    result = match(sample.points, xy, scores, radius_px=radius)
    ranked = None
    if found.ranked is not None:
        rxy, rscores = _xy_scores(found.ranked)
        ranked = (rscores, match_ranked(sample.points, rxy, rscores, radius_px=radius))
    return result, ranked


def evaluate(dataset: Sequence[Sample],
             detect: Callable[[Sample], Found | Sequence[Detection]], protocol: Protocol,
             out: Path, overlays: bool = True,
             on_image: Callable[[ImageScore], None] | None = None) -> list[ImageScore]:
    """Detect and score every sample of ``dataset``, writing per-image outputs under ``out``.

    ``detect`` returns a :class:`Found`, or a plain list of detections (then ranked as they
    are for the precision-recall curve)."""
    scores = []
    for i in range(len(dataset)):
        sample = dataset[i]
        found = detect(sample)
        if not isinstance(found, Found):
            found = Found(list(found), list(found))
        s = score_image(sample, found, protocol, out, overlays)
        scores.append(s)
        if on_image is not None:
            on_image(s)
    return scores


def pooled_curve(scores: Sequence[ImageScore]) -> PRCurve | None:
    """The precision-recall curve over all images (None when an image has no scores)."""
    if any(s.ranked is None for s in scores):
        return None
    return pr_from_flags([s.ranked[0] for s in scores], [s.ranked[1] for s in scores],
                         sum(s.n_gt for s in scores))


def write_metrics(out: Path, scores: Sequence[ImageScore], info: dict[str, Any],
                  curve: PRCurve | None = None) -> Counts:
    """``metrics.json`` (``totals.ap``: None without scores or ground truth; ``pr_curve``: at
    most 200 points) and ``per_image.csv``; returns the summed counts."""
    total = Counts.total(s.counts for s in scores)
    totals = {**total.as_dict(), "ap": None if curve is None else curve.ap}
    doc = {**info, "totals": totals, "images": [s.as_dict() for s in scores],
           "pr_curve": None if curve is None else curve.points(200)}
    (out / "metrics.json").write_text(json.dumps(doc, indent=1) + "\n")
    with (out / "per_image.csv").open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        keys = list(scores[0].as_dict()) if scores else ["id"]
        w.writerow(keys)
        for s in scores:
            w.writerow(csv_row(s, keys))
    return total


def csv_row(score: ImageScore, keys: Sequence[str]) -> list[Any]:
    """The values of ``keys``; "-" for a ratio whose denominator is 0 (as the table shows)."""
    c = score.counts
    undefined = {"precision": c.tp + c.fp == 0, "recall": c.tp + c.fn == 0,
                 "f1": c.tp + c.fp + c.fn == 0}
    row = score.as_dict()
    return ["-" if undefined.get(k) else row[k] for k in keys]


def plot_pr_curve(path: Path, curve: PRCurve, total: Counts, title: str) -> Path:
    """``path`` (PNG): precision against recall (axes 0-1), the all-point interpolated area
    shaded, AP in the legend, and the operating point (``total``) as a star with P/R/F1."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.6), dpi=120)
    ax = fig.add_subplot()
    n_ranked = int(curve.tp[-1] + curve.fp[-1]) if len(curve.tp) else 0
    r = np.r_[0.0, curve.recall]
    p = np.r_[curve.precision[:1] if n_ranked else [0.0], curve.precision]
    envelope = np.maximum.accumulate(p[::-1])[::-1]
    ax.fill_between(r, envelope, step="pre", color="tab:blue", alpha=0.15)
    ax.plot(r, envelope, drawstyle="steps-pre", color="tab:blue", lw=1.8,
            label=f"AP {curve.ap:.3f} (all-point; {n_ranked} ranked, {curve.n_gt} ground truth)")
    ax.plot(r[1:], p[1:], ".", color="tab:blue", ms=5, alpha=0.6, label="precision at each score")
    ax.plot([total.recall], [total.precision], "*", color="tab:red", ms=15, mec="black",
            label=f"operating point: P {total.precision:.3f}, R {total.recall:.3f}, "
                  f"F1 {total.f1:.3f}")
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(path))
    return path


#: how ``metrics.json``'s ``pr_curve`` and ``totals.ap`` were computed
PR_MATCHING = ("per image, detections in score order each take their nearest unused ground "
               "truth within the radius (inclusive); all images ranked together, equal scores "
               "entering together; AP = all-point interpolated area under precision vs recall")


def write_pr_plot(out: Path, curve: PRCurve | None, total: Counts, title: str) -> bool:
    """``out/pr_curve.png`` when AP is defined (scores and ground truth); whether written."""
    if curve is None or curve.ap is None:
        return False
    plot_pr_curve(out / "pr_curve.png", curve, total, title)
    return True
