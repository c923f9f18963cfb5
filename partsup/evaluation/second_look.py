"""Calibrating and scoring a *second look* (a crop classifier run on the detector's candidates,
:mod:`partsup.inference.second_look`).

- :func:`classifier_look`: the :class:`SecondLook` of a classifier run's checkpoint dict
  (``partsup calibrate --second-look``, ``partsup evaluate --at`` with a classifier alone),
  with :func:`default_params` (verify rule from the recipe's ``classifier.verify``, label rule
  the first other head).
- :class:`JointSweep`: the candidate rule (w, threshold, s1, a1) and the verify threshold swept
  together on one validation view. For each image and each ``(w, threshold)`` the blobs are
  found once; every candidate position any ``(s1, a1)`` of the grid keeps is classified **once
  per image** (the union over the grid, keyed by its exact position), and every verify
  threshold only filters those probabilities. TP/FP/FN are summed over the images; the grid
  without the verifier (the candidate rule alone) is kept too, for "before / after".
- :func:`class_report`: balanced accuracy, AUROC (per class one-vs-rest, and the head's) and
  the confusion matrix of one head, from class names and per-object probabilities.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from partsup.errors import PartsupError, RecipeError
from partsup.evaluation.calibration import CalibrationResult, Row, _grid, _result, threshold_grid
from partsup.evaluation.classification import (auroc, balanced_accuracy, confusion_matrix,
                                               macro_auroc)
from partsup.evaluation.matching import Counts, match
from partsup.inference.blobs import filter_blobs, find_blobs, fuse
from partsup.inference.filters import area_in
from partsup.inference.params import DetectParams
from partsup.inference.second_look import LabelRule, SecondLook, SecondLookParams, VerifyRule
from partsup.manager import Registries
from partsup.types import Protocol

__all__ = ["DEFAULT_VERIFY", "JointSweep", "class_report", "classifier_look", "default_params",
           "is_classifier", "parse_verify_grid"]

#: the verify thresholds calibrate tries by default
DEFAULT_VERIFY = [round(0.1 * i, 1) for i in range(1, 10)]


def is_classifier(ckpt: Mapping[str, Any]) -> bool:
    """Whether a checkpoint dict is a crop classifier's (its recipe says ``task: classify``)."""
    recipe = ckpt.get("recipe")
    return isinstance(recipe, Mapping) and recipe.get("task") == "classify"


def parse_verify_grid(text: str | None) -> list[float]:
    """``"0.2,0.5"`` -> ``[0.2, 0.5]`` (each in [0, 1]); None: :data:`DEFAULT_VERIFY`.

    Raises:
        PartsupError: not numbers, none, or one outside [0, 1] (one line).
    """
    if text is None:
        return list(DEFAULT_VERIFY)
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PartsupError(f"--verify-threshold: expected comma-separated probabilities, got "
                           f"{text!r}") from None
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if not values or bad:
        raise PartsupError(f"--verify-threshold: expected probabilities in [0, 1] (0 keeps "
                           f"every candidate), got {text!r}")
    return values


def default_params(section: Mapping[str, Any], heads: Mapping[str, Sequence[str]],
                   verify_head: str | None = None, positive: str | None = None,
                   threshold: float = 0.5) -> SecondLookParams:
    """The second-look rules a classifier recipe's ``classifier:`` section implies: verify with
    ``classifier.verify`` (``{head, positive}``; ``verify_head`` / ``positive`` replace them)
    at ``threshold``, and label with the first head that is not the verify head (none when the
    verify head is the only one).

    Raises:
        RecipeError: a verify head or positive class the classifier does not have.
    """
    given = section.get("verify") if isinstance(section.get("verify"), Mapping) else {}
    head = verify_head or given.get("head")
    verify = None
    if head is not None:
        pos = positive if positive is not None else (
            given.get("positive") if head == given.get("head") else None)
        if pos is None:
            raise RecipeError(f"verify head {head!r}: name its positive class (the classifier "
                              f"recipe's classifier.verify names none for it)")
        verify = VerifyRule(str(head), str(pos), float(threshold))
    others = [h for h in heads if verify is None or h != verify.head]
    label = LabelRule(others[0]) if others else None
    params = SecondLookParams(verify, label)
    params.check(heads, "second look")
    return params


def classifier_look(classifier_ckpt: Mapping[str, Any], registries: Registries,
                    device: Any = "cpu", source: str = "classifier", *,
                    params: SecondLookParams | None = None, tta: bool = False) -> SecondLook:
    """The :class:`SecondLook` of a classifier run's checkpoint dict (``recipe`` with a
    ``classifier:`` section, ``model``, ``normalization``), used as ``params`` say (None:
    :func:`default_params`).

    Raises:
        CheckpointError: not a classifier's checkpoint (prefixed with ``source``);
        RecipeError / PluginError: bad heads, rules or an unknown classifier.
    """
    from partsup.checkpoint.second_look import attach_second_look
    from partsup.errors import CheckpointError
    from partsup.inference.second_look import load_second_look
    from partsup.model.classifier import CropSpec
    recipe = classifier_ckpt.get("recipe")
    section = recipe.get("classifier") if isinstance(recipe, Mapping) else None
    try:
        if params is None:
            if not isinstance(section, Mapping):
                raise CheckpointError("not a crop classifier's checkpoint: its recipe has no "
                                      "'classifier' section (train one with task: classify)")
            params = default_params(section, CropSpec.from_section(section).heads)
        holder = attach_second_look({}, classifier_ckpt, params)
    except PartsupError as exc:
        raise type(exc)(f"{source}: {exc}") from exc
    look = load_second_look(holder, registries, device, source, tta=tta)
    assert look is not None
    return look


def verify_column(look: SecondLook) -> tuple[str, int] | None:
    """``(head, class index)`` of the verify rule's positive class; None without a rule."""
    rule = look.params.verify
    if rule is None:
        return None
    return rule.head, list(look.spec.heads[rule.head]).index(rule.positive)


class JointSweep:
    """The candidate rule and the verify threshold swept together on one view (module doc).

    Args:
        look: the second look (its verify rule's head and positive class are used; without a
            verify rule only the candidate rule is swept).
        params: the base detection parameters (sigma, area_unit, filters apply everywhere).
        w, threshold, s1, a1: the candidate grids (``threshold`` None: ``params.threshold``).
        verify: the verify thresholds (keep ``p(positive) >= v``).
    """

    def __init__(self, look: SecondLook, params: DetectParams, registries: Registries,
                 protocol: Protocol, w: Iterable[float], threshold: Iterable[Any] | None,
                 s1: Iterable[float], a1: Iterable[float], verify: Iterable[float]) -> None:
        self.look, self.params, self.registries, self.protocol = look, params, registries, protocol
        self.ws, self.s1s, self.a1s = _grid(w, "w"), _grid(s1, "s1"), _grid(a1, "a1")
        self.ts = threshold_grid(threshold, params.threshold)
        self.column = verify_column(look)
        self.vs = [float(v) for v in verify] if self.column is not None else []
        self.weak_only: bool | None = None
        self.totals: np.ndarray | None = None
        self.classified = 0  # candidate positions classified, over all images

    def add(self, p_weak: np.ndarray, p_strong: np.ndarray | None, image: np.ndarray,
            gt: np.ndarray, mpp: float) -> None:
        """Add one image: its maps (``(H, W)`` float32), its ``(H, W, 3)`` uint8 RGB, its
        ground truth (``(N, 2)`` x, y px) and um/px."""
        if self.weak_only is None:
            self.weak_only = p_strong is None
            if self.weak_only:
                self.ws = [float(self.params.w)]
        counts = self._image_counts(np.asarray(p_weak, np.float32),
                                    None if p_strong is None else np.asarray(p_strong, np.float32),
                                    image, np.asarray(gt, np.float64).reshape(-1, 2), float(mpp))
        self.totals = counts if self.totals is None else self.totals + counts

    def _image_counts(self, weak: np.ndarray, strong: np.ndarray | None, image: np.ndarray,
                      gt: np.ndarray, mpp: float) -> np.ndarray:
        """``(W, T, S1, A1, 1 + V, 3)`` int64 TP, FP, FN; verify index 0: no verifier."""
        stages = []
        positions: dict[tuple[float, float], int] = {}
        for wv in self.ws:
            for tv in self.ts:
                p = dataclasses.replace(self.params, w=wv, threshold=tv)
                blobs = find_blobs(fuse(weak, strong, p, self.registries), p.sigma, p.threshold)
                base = filter_blobs(blobs, p, mpp, self.registries, thresholds=False)
                area = area_in(blobs, mpp, p.area_unit)
                xy = np.stack([blobs.x, blobs.y], 1) if len(blobs) else np.zeros((0, 2))
                index = np.full(len(blobs), -1, np.int64)
                if self.column is not None:
                    ever = base & (blobs.score > min(self.s1s)) & (area > min(self.a1s))
                    for k in np.flatnonzero(ever):
                        index[k] = positions.setdefault((float(xy[k, 0]), float(xy[k, 1])),
                                                        len(positions))
                stages.append((np.asarray(blobs.score), base, area, xy, index))
        prob = np.zeros(len(positions), np.float64)
        if positions and self.column is not None:
            head, j = self.column
            pts = np.array(list(positions), np.float64)
            prob = self.look.probabilities(image, pts, mpp)[head][:, j].astype(np.float64)
            self.classified += len(pts)
        radius = self.protocol.radius_for(mpp)
        verify: list[float | None] = [None, *self.vs]
        out = np.zeros((len(self.ws), len(self.ts), len(self.s1s), len(self.a1s),
                        len(verify), 3), np.int64)
        for n, (score, base, area, xy, index) in enumerate(stages):
            iw, it = divmod(n, len(self.ts))
            p_blob = np.where(index >= 0, prob[np.maximum(index, 0)] if len(prob) else 0.0, 0.0)
            for i, sv in enumerate(self.s1s):
                for j, av in enumerate(self.a1s):
                    keep = base & (score > sv) & (area > av)
                    last: tuple[np.ndarray, tuple[int, int, int]] | None = None
                    for k, vv in enumerate(verify):
                        sel = keep if vv is None else keep & (p_blob >= vv)
                        if last is not None and np.array_equal(sel, last[0]):
                            out[iw, it, i, j, k] = last[1]  # same candidates, same counts
                            continue
                        c = match(gt, xy[sel], score[sel], radius_px=radius).counts
                        last = (sel, (c.tp, c.fp, c.fn))
                        out[iw, it, i, j, k] = last[1]
        return out

    def results(self) -> tuple[CalibrationResult, CalibrationResult]:
        """``(before, after)``: the candidate rule alone (rows without ``verify``), and the
        joint grid (rows with ``verify``; ``before`` itself without a verify rule)."""
        if self.totals is None:
            raise ValueError("JointSweep: no image was added")
        before, after = [], []
        for iw, wv in enumerate(self.ws):
            for it, tv in enumerate(self.ts):
                for i, sv in enumerate(self.s1s):
                    for j, av in enumerate(self.a1s):
                        t = self.totals[iw, it, i, j]
                        before.append(Row(wv, sv, av, Counts(*map(int, t[0])), tv))
                        after += [Row(wv, sv, av, Counts(*map(int, t[k + 1])), tv, (), vv)
                                  for k, vv in enumerate(self.vs)]
        first = _result(before, self.ws, bool(self.weak_only))
        return first, (_result(after, self.ws, bool(self.weak_only)) if after else first)


def _nan_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def class_report(truth: Sequence[str], probs: Sequence[Mapping[str, float]],
                 classes: Sequence[str], *, positive: str | None = None,
                 threshold: float | None = None) -> dict[str, Any]:
    """One head's classification scores.

    Args:
        truth: the true class name of each object (names not in ``classes`` are left out:
            unknown classes).
        probs: each object's probabilities, ``class name -> p`` (at least ``classes``).
        classes: the head's classes, in order.
        positive, threshold: a verify head: predict ``positive`` when its probability is
            ``>= threshold``, else the other class; otherwise the most probable class.

    Returns:
        ``{"classes", "n" (objects scored), "n_unknown", "balanced_accuracy", "auroc" (two
        classes: of the second class; more: the mean one-vs-rest), "auroc_per_class" (class ->
        one-vs-rest AUROC), "confusion_matrix" (rows: true class, columns: predicted, ints),
        "recall" (class -> recall)}``; undefined values are None.
    """
    names = list(classes)
    keep = [i for i, t in enumerate(truth) if t in names]
    y = np.array([names.index(truth[i]) for i in keep], np.int64)
    p = np.array([[float(probs[i][c]) for c in names] for i in keep], np.float64
                 ).reshape(len(keep), len(names))
    if positive is not None and threshold is not None:
        jp = names.index(positive)
        other = next(j for j in range(len(names)) if j != jp)
        pred = np.where(p[:, jp] >= threshold, jp, other)
    else:
        pred = p.argmax(1) if len(p) else np.zeros(0, np.int64)
    cm = confusion_matrix(y, pred, len(names))
    support = cm.sum(1)
    return {
        "classes": names, "n": int(len(keep)), "n_unknown": int(len(truth) - len(keep)),
        "balanced_accuracy": _nan_none(balanced_accuracy(y, pred, len(names))),
        "auroc": _nan_none(macro_auroc(y, p) if len(p) else float("nan")),
        "auroc_per_class": {c: _nan_none(auroc(y == j, p[:, j])) for j, c in enumerate(names)},
        "confusion_matrix": cm.tolist(),
        "recall": {c: _nan_none(cm[j, j] / support[j] if support[j] else float("nan"))
                   for j, c in enumerate(names)},
    }
