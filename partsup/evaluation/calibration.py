"""Calibration of the detection parameters (paper section III.D): sweep w, s1 and a1.

The network runs **once** per validation image; both probability maps are cached (as ``.npy``
files in a temporary folder, memory-mapped back, so RAM does not grow with the split). Then for
every fusion weight ``w`` (paper: 0, 0.1, ..., 1) the maps are fused, smoothed and thresholded
(Otsu, or each fixed threshold of the ``threshold`` grid) once per image, and every ``(s1, a1)`` pair of the grid only filters those blobs. TP/FP/FN
are summed over the images (micro F1, :mod:`partsup.evaluation.matching`); the best F1 wins (ties: the first
in grid order, i.e. the smallest w, s1, a1).

Several *views* (validation sets of another density, source or construction) are swept one by
one with the same grid and joined by :func:`combine`: each grid point then scores the **mean of
the views' F1**, so one set of parameters is chosen that holds on all of them, however many
images each view has.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from partsup.inference.blobs import filter_blobs, find_blobs, fuse
from partsup.inference.params import DetectParams, check_threshold
from partsup.inference.filters import area_in
from partsup.evaluation.matching import Counts, match
from partsup.manager import Registries
from partsup.types import Protocol


@dataclass
class CachedMaps:
    """One validation image reduced to what calibration needs.

    ``p_weak``/``p_strong``: ``(H, W)`` float32 arrays (possibly memory-mapped); ``gt``:
    ``(N, 2)`` x, y px; ``mpp``: um/px.
    """

    id: str
    p_weak: np.ndarray
    p_strong: np.ndarray | None
    gt: np.ndarray
    mpp: float


class MapCache:
    """Saves maps to ``folder`` as ``.npy`` and hands them back memory-mapped."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._n = 0

    def add(self, id: str, p_weak: np.ndarray, p_strong: np.ndarray | None, gt: np.ndarray,
            mpp: float) -> CachedMaps:
        i, self._n = self._n, self._n + 1

        def keep(name: str, a: np.ndarray | None) -> np.ndarray | None:
            if a is None:
                return None
            path = self.folder / f"{i:06d}_{name}.npy"
            np.save(path, np.asarray(a, np.float32))
            return np.load(path, mmap_mode="r")
        return CachedMaps(id, keep("weak", p_weak), keep("strong", p_strong),  # type: ignore[arg-type]
                          np.asarray(gt, np.float64).reshape(-1, 2), float(mpp))


@dataclass(frozen=True)
class Row:
    """One grid point: parameters and summed counts over the split."""

    w: float
    s1: float
    a1: float
    counts: Counts
    threshold: str | float = "otsu"
    view_f1: tuple[float, ...] = ()  # with several views: each view's F1 (counts are summed)
    #: with a second look: keep candidates whose verify probability is >= this (None: all)
    verify: float | None = None

    @property
    def score(self) -> float:
        """What calibration maximises: the F1, or with several views the mean of their F1."""
        return float(np.mean(self.view_f1)) if self.view_f1 else self.counts.f1

    def as_dict(self) -> dict[str, Any]:
        out = {"w": self.w, "threshold": self.threshold, "s1": self.s1, "a1": self.a1,
               **self.counts.as_dict()}
        if self.verify is not None:
            out["verify_threshold"] = self.verify
        if self.view_f1:
            out.update(view_f1=list(self.view_f1), mean_f1=self.score)
        return out


@dataclass
class CalibrationResult:
    """Every grid point (``rows``), the best one, and the best row for each w (Fig. 8 curve)."""

    rows: list[Row]
    best: Row
    per_w: list[Row]
    weak_only: bool = False

    def params(self, base: DetectParams) -> DetectParams:
        """``base`` with the calibrated w, threshold, s1, a1."""
        return dataclasses.replace(base, w=self.best.w, s1=self.best.s1, a1=self.best.a1,
                                   threshold=self.best.threshold)

    def as_dict(self) -> dict[str, Any]:
        return {"best": self.best.as_dict(), "per_w": [r.as_dict() for r in self.per_w],
                "rows": [r.as_dict() for r in self.rows], "weak_only": self.weak_only}


def _grid(values: Iterable[Any], name: str) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise ValueError(f"calibrate.{name}: the grid is empty")
    return out


def threshold_grid(values: Iterable[Any] | None, default: str | float) -> list[str | float]:
    """The foreground rules to try: ``values`` checked (``"otsu"`` or probabilities), or
    ``[default]`` when ``values`` is None."""
    if values is None:
        return [check_threshold(default)]
    out = [check_threshold(v, "calibrate.threshold") for v in values]
    if not out:
        raise ValueError("calibrate.threshold: the grid is empty")
    return out


def sweep(images: Sequence[CachedMaps], params: DetectParams, registries: Registries,
          protocol: Protocol, w: Iterable[float], s1: Iterable[float], a1: Iterable[float],
          progress: Callable[[float], None] | None = None,
          threshold: Iterable[Any] | None = None) -> CalibrationResult:
    """Evaluate every ``(w, threshold, s1, a1)`` of the grid on the cached maps.

    ``a1`` is in ``params.area_unit``; ``params.sigma``, its named filters and the filter hook
    apply at every grid point. ``threshold`` lists foreground rules (``"otsu"`` or fixed
    probabilities; None = only ``params.threshold``). For weak-only models (no strong map) w
    has no effect and only ``params.w`` is tried. ``progress(w)`` is called after each w.
    """
    ws, s1s, a1s = _grid(w, "w"), _grid(s1, "s1"), _grid(a1, "a1")
    ts = threshold_grid(threshold, params.threshold)
    weak_only = all(im.p_strong is None for im in images)
    if weak_only:
        ws = [float(params.w)]
    rows: list[Row] = []
    for wv in ws:
        for tv in ts:
            p = dataclasses.replace(params, w=wv, threshold=tv)
            totals = np.zeros((len(s1s), len(a1s), 3), np.int64)
            for im in images:
                totals += _image_counts(im, p, registries, protocol, s1s, a1s)
            for i, sv in enumerate(s1s):
                for j, av in enumerate(a1s):
                    rows.append(Row(wv, sv, av, Counts(*map(int, totals[i, j])), tv))
        if progress is not None:
            progress(wv)
    return _result(rows, ws, weak_only)


def _result(rows: list[Row], ws: list[float], weak_only: bool) -> CalibrationResult:
    best = max(rows, key=lambda r: r.score)  # max keeps the first of equal values
    per_w = [max((r for r in rows if r.w == wv), key=lambda r: r.score) for wv in ws]
    return CalibrationResult(rows, best, per_w, weak_only)


def combine(results: Sequence[CalibrationResult]) -> CalibrationResult:
    """Join the sweeps of several views (same grid, same model): each grid point's counts are
    summed and its score is the mean of the views' F1 (:attr:`Row.score`). One view: itself."""
    if len(results) == 1:
        return results[0]
    keys = [[(r.w, r.threshold, r.s1, r.a1, r.verify) for r in res.rows] for res in results]
    if any(k != keys[0] for k in keys[1:]):
        raise ValueError("combine: the views were swept with different grids")
    rows = []
    for parts in zip(*(res.rows for res in results)):
        total = Counts(0, 0, 0)
        for r in parts:
            total = total + r.counts
        first = parts[0]
        rows.append(Row(first.w, first.s1, first.a1, total, first.threshold,
                        tuple(r.counts.f1 for r in parts), first.verify))
    ws = list(dict.fromkeys(r.w for r in rows))
    return _result(rows, ws, results[0].weak_only)


def _image_counts(im: CachedMaps, params: DetectParams, registries: Registries, protocol: Protocol,
                  s1s: list[float], a1s: list[float]) -> np.ndarray:
    """``(len(s1s), len(a1s), 3)`` int64 TP, FP, FN of one image over the (s1, a1) grid."""
    weak = np.asarray(im.p_weak, np.float32)
    strong = None if im.p_strong is None else np.asarray(im.p_strong, np.float32)
    blobs = find_blobs(fuse(weak, strong, params, registries), params.sigma, params.threshold)
    base = filter_blobs(blobs, params, im.mpp, registries, thresholds=False)
    area = area_in(blobs, im.mpp, params.area_unit)
    xy = np.stack([blobs.x, blobs.y], 1) if len(blobs) else np.zeros((0, 2))
    radius = protocol.radius_for(im.mpp)
    out = np.zeros((len(s1s), len(a1s), 3), np.int64)
    for i, sv in enumerate(s1s):
        for j, av in enumerate(a1s):
            keep = base & (blobs.score > sv) & (area > av)
            c = match(im.gt, xy[keep], blobs.score[keep], radius_px=radius).counts
            out[i, j] = (c.tp, c.fp, c.fn)
    return out


def plot_f1_vs_w(result: CalibrationResult, path: str | Path, title: str = "",
                 before: CalibrationResult | None = None) -> Path:
    """Save a PNG of the best F1 (and its precision, recall) at each w, like the paper's Fig. 8.

    ``before``: with a second look, the sweep of the candidate rule alone (``result`` is then
    the joint sweep with the verifier): its best score at each w is drawn too, dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = [r.w for r in result.per_w]
    fig, ax = plt.subplots(figsize=(7.0, 3.8), dpi=120)
    views = bool(result.best.view_f1)
    ax.plot(ws, [r.score for r in result.per_w], "o-", color="tab:red",
            label=("mean F1 of the views" if views else "F1")
            + (" after the second look" if before is not None else ""))
    if before is not None:
        ax.plot([r.w for r in before.per_w], [r.score for r in before.per_w], "o--",
                color="tab:gray", label=f"before (candidate rule alone; best "
                                        f"{before.best.score:.3f})")
    ax.plot(ws, [r.counts.precision for r in result.per_w], "s--", color="tab:blue", alpha=.5,
            ms=3, label="precision")
    ax.plot(ws, [r.counts.recall for r in result.per_w], "^--", color="tab:green", alpha=.5,
            ms=3, label="recall")
    b = result.best
    ax.plot([b.w], [b.score], "*", color="black", ms=14,
            label=f"best: w={b.w:g}, F1={b.score:.3f}")
    ax.set_xlabel("fusion weight w  (S = w·S_weak + (1 − w)·S_strong)")
    ax.set_ylabel("score (best s1, a1 at each w)")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(min(ws) - 0.05, max(ws) + 0.05)
    ax.grid(alpha=.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the data
    ax.set_title(title or "F1 vs fusion weight (validation)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_json(result: CalibrationResult, path: str | Path, extra: dict[str, Any]) -> Path:
    """``calibration.json``: ``extra`` (dataset, protocol, ...) plus every grid row."""
    path = Path(path)
    path.write_text(json.dumps({**extra, **result.as_dict()}, indent=1) + "\n")
    return path
