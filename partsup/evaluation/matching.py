"""Scoring detections against ground truth: the greedy one-to-one matcher, counts, PR curves.

The matcher follows the reference rule of point-detection challenges (facts.md, "Evaluation
protocols"): ground-truth
points are taken **in list order**; each takes its **nearest unused** detection whose centroid
lies within the radius (distance ``<=`` radius, inclusive). Matched detections are true
positives, unused detections false positives, unmatched ground truth false negatives. It is
one-to-one: two detections on one object give one TP and one FP. Counts are summed over images
before precision, recall and F1 are computed (micro average). Hard negatives are never ground
truth: callers pass only ``Sample.points`` as ``gt``.

Threshold-free: :func:`pr_curve` ranks scored detections of all images, matches them in score
order (:func:`match_ranked`) and returns the precision-recall curve with its all-point average
precision (:class:`PRCurve`).

Protocols (the match radius to score with) live in :mod:`partsup.evaluation.protocols`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np


@dataclass(frozen=True)
class Counts:
    """True positives, false positives and false negatives (summable with ``+``)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        """TP / (TP + FP); 0.0 when there are no detections."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        """TP / (TP + FN); 0.0 when there is no ground truth."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """2TP / (2TP + FP + FN) (= 2PR / (P + R)); 0.0 when all counts are zero."""
        den = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / den if den else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision,
                "recall": self.recall, "f1": self.f1}

    @staticmethod
    def total(items: Iterable["Counts"]) -> "Counts":
        out = Counts()
        for c in items:
            out = out + c
        return out


@dataclass(frozen=True)
class MatchResult:
    """The outcome of matching one image.

    Attributes:
        gt_match: ``(N,)`` int64, index of the detection each ground-truth point took, or -1.
        det_tp: ``(K,)`` bool, True where the detection is a true positive.
        radius_px: the radius used, pixels.
    """

    gt_match: np.ndarray
    det_tp: np.ndarray
    radius_px: float

    @property
    def counts(self) -> Counts:
        tp = int(self.det_tp.sum())
        return Counts(tp=tp, fp=int(len(self.det_tp) - tp), fn=int((self.gt_match < 0).sum()))

    @property
    def tp(self) -> int:
        return self.counts.tp

    @property
    def fp(self) -> int:
        return self.counts.fp

    @property
    def fn(self) -> int:
        return self.counts.fn


def _xy(a: Any) -> np.ndarray:
    return np.asarray(a, np.float64).reshape(-1, 2)


def match(gt: Any, det: Any, scores: Any = None, radius_px: float = 30.0) -> MatchResult:
    """Greedy one-to-one matching of detections to ground truth.

    Args:
        gt: ``(N, 2)`` ground-truth centroids x, y in pixels, in the dataset's order.
        det: ``(K, 2)`` detection centroids x, y in pixels.
        scores: optional ``(K,)`` detection scores; only used to break exact distance ties
            (the higher score wins; then the lower index).
        radius_px: match radius in pixels; a distance equal to it still matches.

    Returns:
        A :class:`MatchResult`.
    """
    g, d = _xy(gt), _xy(det)
    gt_match = np.full(len(g), -1, np.int64)
    det_tp = np.zeros(len(d), bool)
    if len(g) and len(d):
        dist = np.sqrt(((g[:, None, :] - d[None, :, :]) ** 2).sum(-1))  # (N, K)
        s = np.zeros(len(d)) if scores is None else np.asarray(scores, np.float64).reshape(-1)
        if len(s) != len(d):
            raise ValueError(f"match: {len(s)} scores for {len(d)} detections")
        tie_order = np.lexsort((np.arange(len(d)), -s))  # best score first, then index
        for i in range(len(g)):
            row = dist[i, tie_order]
            ok = (row <= radius_px) & ~det_tp[tie_order]
            if not ok.any():
                continue
            cand = np.where(ok)[0]
            j = tie_order[cand[np.argmin(row[cand])]]  # argmin keeps the first of equal minima
            gt_match[i] = j
            det_tp[j] = True
    return MatchResult(gt_match=gt_match, det_tp=det_tp, radius_px=float(radius_px))


# -- ranked matching, precision-recall curve, average precision ------------------------------

def rank_order(scores: Any) -> np.ndarray:
    """Indices of ``scores`` ``(K,)``, highest score first; equal scores keep index order."""
    s = np.asarray(scores, np.float64).reshape(-1)
    return np.lexsort((np.arange(len(s)), -s))


def match_ranked(gt: Any, det: Any, scores: Any, radius_px: float = 30.0) -> np.ndarray:
    """True-positive flags ``(K,)`` bool of detections matched **in score order** (PASCAL VOC
    / COCO rule), for precision-recall curves.

    Detections are taken from the highest score down (equal scores: lower index first, the
    tie order of :func:`match`); each takes its nearest unused ground-truth point within
    ``radius_px`` pixels (inclusive, as in :func:`match`; equal distances: the earlier point
    in list order). Matching one-to-one in score order makes the counts at every score
    threshold nested, so the curve is well defined. Where a point has several detections
    within the radius this can differ from :func:`match` (which takes ground truth in list
    order, each its nearest detection), so the curve may miss the operating point's counts by
    a few in crowded images.

    Args:
        gt: ``(N, 2)`` ground-truth x, y, pixels. det: ``(K, 2)`` detections x, y, pixels.
        scores: ``(K,)`` detection scores. radius_px: match radius, pixels.
    """
    g, d = _xy(gt), _xy(det)
    s = np.asarray(scores, np.float64).reshape(-1)
    if len(s) != len(d):
        raise ValueError(f"match_ranked: {len(s)} scores for {len(d)} detections")
    tp = np.zeros(len(d), bool)
    if len(g) == 0 or len(d) == 0:
        return tp
    dist = np.sqrt(((d[:, None, :] - g[None, :, :]) ** 2).sum(-1))  # (K, N)
    used = np.zeros(len(g), bool)
    for j in rank_order(s):
        ok = (dist[j] <= radius_px) & ~used
        if ok.any():
            used[np.flatnonzero(ok)[np.argmin(dist[j][ok])]] = True
            tp[j] = True
    return tp


@dataclass(frozen=True)
class PRCurve:
    """A precision-recall curve over detection scores, pooled over images.

    Point ``i`` counts every detection with ``score >= thresholds[i]`` (tied scores enter
    together, so the order of ties never matters).

    Attributes:
        thresholds: ``(M,)`` float64 distinct scores, descending.
        precision: ``(M,)`` float64 TP / (TP + FP).
        recall: ``(M,)`` float64 TP / n_gt (NaN when ``n_gt`` is 0).
        tp, fp: ``(M,)`` int64 cumulative true and false positives.
        n_gt: ground-truth points over all images.
        ap: all-point average precision in [0, 1]; None without ground truth.
    """

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    n_gt: int
    ap: float | None

    def points(self, max_points: int = 200) -> dict[str, Any]:
        """A JSON-ready dict of at most ``max_points`` points (first and last kept; NaN as
        None)."""
        m = len(self.thresholds)
        idx = np.unique(np.linspace(0, m - 1, min(m, max_points)).round().astype(int)) \
            if m else np.zeros(0, int)

        def col(a: np.ndarray) -> list[Any]:
            return [None if not np.isfinite(v) else float(v) for v in a[idx]]
        return {"n_gt": self.n_gt, "n_points": m, "thresholds": col(self.thresholds),
                "precision": col(self.precision), "recall": col(self.recall)}


def average_precision(precision: Any, recall: Any) -> float:
    """All-point interpolated AP (PASCAL VOC 2010+ / COCO without the 101-point sampling).

    Precision is made non-increasing from the right (each point takes the best precision at
    any higher recall), then summed over the recall steps: ``sum (r_i - r_{i-1}) * p_i`` with
    ``r_0 = 0``. Recall never reached adds nothing, so missed ground truth lowers AP.

    Args:
        precision, recall: ``(M,)`` in threshold order (recall non-decreasing).
    """
    p = np.asarray(precision, np.float64).reshape(-1)
    r = np.asarray(recall, np.float64).reshape(-1)
    if len(p) == 0:
        return 0.0
    envelope = np.maximum.accumulate(p[::-1])[::-1]
    return float(np.sum(np.diff(np.concatenate([[0.0], r])) * envelope))


def pr_from_flags(scores: Sequence[Any], tp: Sequence[Any], n_gt: int) -> PRCurve:
    """The :class:`PRCurve` of pooled, already matched detections.

    Args:
        scores: per image ``(K_i,)`` detection scores (finite).
        tp: per image ``(K_i,)`` bool true-positive flags (e.g. from :func:`match_ranked`).
        n_gt: ground-truth points over all images.
    """
    s = np.concatenate([np.asarray(a, np.float64).reshape(-1) for a in scores] or [[]])
    t = np.concatenate([np.asarray(a, bool).reshape(-1) for a in tp] or [np.zeros(0, bool)])
    if len(s) != len(t):
        raise ValueError(f"pr_from_flags: {len(s)} scores for {len(t)} flags")
    if not np.isfinite(s).all():
        raise ValueError("pr_from_flags: detection scores must be finite")
    order = np.argsort(-s, kind="stable")
    s, t = s[order], t[order]
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if len(s) else np.zeros(0, int)
    ctp = np.cumsum(t, dtype=np.int64)[last]
    cfp = np.cumsum(~t, dtype=np.int64)[last]
    precision = ctp / np.maximum(ctp + cfp, 1)
    recall = ctp / n_gt if n_gt else np.full(len(last), np.nan)
    ap = average_precision(precision, recall) if n_gt else None
    return PRCurve(thresholds=s[last], precision=precision.astype(np.float64),
                   recall=np.asarray(recall, np.float64), tp=ctp, fp=cfp, n_gt=int(n_gt), ap=ap)


def pr_curve(gt: Sequence[Any], det: Sequence[Any], scores: Sequence[Any],
             radius_px: float | Sequence[float] = 30.0) -> PRCurve:
    """Precision-recall curve and average precision of scored detections over images.

    Each image's detections are matched by :func:`match_ranked`; then all detections of all
    images are ranked by score and TP / FP are accumulated down the ranking (ties enter
    together): recall = cumTP / total ground truth, precision = cumTP / (cumTP + cumFP). AP is
    :func:`average_precision` (all points); None without ground truth, 0.0 with ground truth
    but no detections.

    Args:
        gt: per image ``(N_i, 2)`` ground-truth x, y, pixels.
        det: per image ``(K_i, 2)`` detection x, y, pixels.
        scores: per image ``(K_i,)`` detection scores.
        radius_px: match radius in pixels, one for all images or one per image.
    """
    if not len(gt) == len(det) == len(scores):
        raise ValueError(f"pr_curve: {len(gt)} ground-truth lists, {len(det)} detection lists "
                         f"and {len(scores)} score lists")
    radii = np.broadcast_to(np.asarray(radius_px, np.float64), (len(gt),))
    flags = [match_ranked(g, d, s, float(r)) for g, d, s, r in zip(gt, det, scores, radii)]
    return pr_from_flags(scores, flags, sum(len(_xy(g)) for g in gt))
