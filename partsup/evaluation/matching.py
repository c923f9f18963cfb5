"""Scoring detections against ground truth: the greedy one-to-one matcher, counts, protocols.

The matcher follows the MIDOG reference rule (facts.md, "Evaluation protocols"): ground-truth
points are taken **in list order**; each takes its **nearest unused** detection whose centroid
lies within the radius (distance ``<=`` radius, inclusive). Matched detections are true
positives, unused detections false positives, unmatched ground truth false negatives. It is
one-to-one: two detections on one mitosis give one TP and one FP. Counts are summed over images
before precision, recall and F1 are computed (micro average). Hard negatives are never ground
truth: callers pass only ``Sample.points`` as ``gt``.

Threshold-free: :func:`pr_curve` ranks scored detections of all images, matches them in score
order (:func:`match_ranked`) and returns the precision-recall curve with its all-point average
precision (:class:`PRCurve`).

Generic protocols live here (``pixels``, ``microns``); dataset protocols (icpr2012, amida13,
midog, ...) are registered by the mitosis plugin.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from partsup.types import Protocol


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


# -- generic protocols -----------------------------------------------------------------------

def pixels(radius_px: float = 30.0) -> Protocol:
    """A fixed radius in pixels, whatever the image's um/px."""
    return Protocol(name="pixels", radius_um=0.0, radius_px=float(radius_px),
                    description=f"match within {radius_px:g} px (inclusive), greedy one-to-one")


def microns(radius_um: float = 8.0) -> Protocol:
    """A radius in micrometres, converted with each image's um/px."""
    return Protocol(name="microns", radius_um=float(radius_um),
                    description=f"match within {radius_um:g} um (inclusive), greedy one-to-one")


PROTOCOLS: dict[str, Callable[..., Protocol]] = {"pixels": pixels, "microns": microns}


def protocol_dict(protocol: Protocol) -> dict[str, Any]:
    """A JSON-ready description of ``protocol``."""
    return {"name": protocol.name, "radius_um": protocol.radius_um,
            "radius_px": protocol.radius_px, "description": protocol.description}


# -- datasets and protocols for evaluation ----------------------------------------------------

def recipe_dataset(name: str, split: str, recipe: dict[str, Any] | None) -> dict[str, Any]:
    """The recipe's ``data:`` section for dataset ``name`` (preferring one with the same
    ``split``), as a plain dict; empty when the recipe names no such dataset."""
    sections = [s for s in ((recipe or {}).get("data") or {}).values()
                if isinstance(s, dict) and s.get("name") == name]
    same = [s for s in sections if s.get("split", "train") == split]
    return dict((same or sections or [{}])[0])


def dataset_root(name: str, root: str | None, recipe_section: dict[str, Any] | None = None
                 ) -> str | None:
    """Where dataset ``name`` lives: ``root`` if given, else the recipe section's root, else
    ``$PARTSUP_DATA/<name>`` when that folder exists."""
    import os
    from pathlib import Path
    if root:
        return str(root)
    if recipe_section and recipe_section.get("root"):
        return str(recipe_section["root"])
    base = os.environ.get("PARTSUP_DATA")
    if base and (Path(base) / name).is_dir():
        return str(Path(base) / name)
    return None


def missing_root_message(name: str, factory: Any) -> str:
    """What to tell a user who gave no root for dataset ``name``: the reader's expected layout
    (``LAYOUT``) and where to get the data (``SOURCE``)."""
    from partsup.data.readers import layout_and_source
    lines = [f"dataset {name!r} has no root folder: pass --data-root DIR "
             f"(or set PARTSUP_DATA so that $PARTSUP_DATA/{name} exists)."]
    help_text = layout_and_source(factory)
    if help_text:
        lines.append(help_text)
    if not (getattr(factory, "SOURCE", "") or "").strip():
        lines.append("Where to get it: see docs/datasets.md (research downloads are not bundled; "
                     "`partsup synth OUT --like NAME` writes a synthetic set in the same layout).")
    return "\n".join(lines)


def open_dataset(registries: Any, name: str, root: str | None = None, split: str = "test",
                 recipe: dict[str, Any] | None = None,
                 options: dict[str, Any] | None = None) -> Any:
    """Build the registered reader ``name`` for ``split``.

    Reader options come from the recipe's ``data:`` section for the same dataset (see
    :func:`recipe_dataset`; e.g. ``val_cases``), updated by ``options``; the root from
    :func:`dataset_root`.

    Raises:
        RecipeError: unknown dataset name (lists the known ones) or reader option.
        DataError: no root (message with the expected layout and where to get the data), a
            missing folder or bad files (the reader's own message).
    """
    from partsup.errors import DataError
    factory = registries.datasets.get(name, where="--dataset")
    section = recipe_dataset(name, split, recipe)
    where = dataset_root(name, root, section)
    kwargs = {k: v for k, v in section.items() if k not in ("name", "root", "split")}
    kwargs.update(options or {})
    if where is None:
        if not _has_default_root(factory):
            raise DataError(missing_root_message(name, factory))
        # the reader knows where its data lives (e.g. ami-br beside the repository); it raises
        # its own message, with the layout, when that folder is absent
        return registries.datasets.build(name, where="--dataset", split=split, **kwargs)
    return registries.datasets.build(name, where="--dataset", root=where, split=split, **kwargs)


def _has_default_root(factory: Any) -> bool:
    """Whether a reader factory's ``root`` argument is optional (it has a default location)."""
    import inspect
    try:
        param = inspect.signature(factory).parameters.get("root")
    except (TypeError, ValueError):
        return False
    return param is not None and param.default is not inspect.Parameter.empty


def resolve_protocol(registries: Any, name: str | None, dataset: str | None = None,
                     recipe: dict[str, Any] | None = None, radius_um: float | None = None,
                     radius_px: float | None = None) -> Protocol:
    """The protocol to score with: ``name`` if given; else the dataset's own protocol when one
    is registered under the dataset's name; else the recipe's ``eval.protocol``; else
    ``amida13`` (8 um) or, without the mitosis plugin, ``microns`` (8 um). A recipe's
    ``eval.radius_um`` / ``eval.radius_px`` override the radius of a protocol chosen from the
    recipe; the ``radius_um`` / ``radius_px`` arguments (CLI flags) override any protocol."""
    section = (recipe or {}).get("eval") or {}
    if name:
        proto = registries.protocols.build(name, where="--protocol")
    elif dataset and dataset in registries.protocols:
        proto = registries.protocols.build(dataset)
    else:
        chosen = section.get("protocol") or ("amida13" if "amida13" in registries.protocols
                                             else "microns")
        proto = registries.protocols.build(chosen, where="eval.protocol")
        proto = with_radius(proto, section.get("radius_um"), section.get("radius_px"))
    return with_radius(proto, radius_um, radius_px)


def with_radius(proto: Protocol, radius_um: float | None = None,
                radius_px: float | None = None) -> Protocol:
    """``proto`` with its match radius replaced: in pixels (used as-is for every image) if
    ``radius_px`` is given, else in micrometres if ``radius_um`` is given."""
    import dataclasses
    if radius_px is not None:
        return dataclasses.replace(proto, radius_px=float(radius_px),
                                   description=f"{proto.description}; radius {radius_px:g} px")
    if radius_um is not None:
        return dataclasses.replace(proto, radius_um=float(radius_um), radius_px=None,
                                   description=f"{proto.description}; radius {radius_um:g} um")
    return proto
