"""Classification metrics of a crop classifier's head: confusion matrix, balanced accuracy and
AUROC, in NumPy (no scikit-learn).

Class labels are integer indices ``0 .. n_classes - 1``; entries equal to ``ignore`` (default
-100, the training targets' ignore index) are left out of every metric.
"""
from __future__ import annotations

import numpy as np

__all__ = ["auroc", "balanced_accuracy", "confusion_matrix", "macro_auroc"]

#: the ignore index of the training targets (``torch.nn.CrossEntropyLoss``'s default)
IGNORE = -100


def _kept(y_true: np.ndarray, *others: np.ndarray, ignore: int = IGNORE
          ) -> tuple[np.ndarray, ...]:
    y = np.asarray(y_true).reshape(-1).astype(np.int64)
    keep = y != ignore
    return (y[keep], *(np.asarray(o)[keep] for o in others))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int,
                     ignore: int = IGNORE) -> np.ndarray:
    """``(n_classes, n_classes)`` int64 counts: row = true class, column = predicted class.

    Args:
        y_true: ``(N,)`` int true classes (``ignore`` entries left out).
        y_pred: ``(N,)`` int predicted classes.
        n_classes: the number of classes.
    """
    y, p = _kept(y_true, np.asarray(y_pred).reshape(-1).astype(np.int64), ignore=ignore)
    if len(y) and (y.min() < 0 or y.max() >= n_classes or p.min() < 0 or p.max() >= n_classes):
        raise ValueError(f"class indices must be in 0..{n_classes - 1}")
    out = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(out, (y, p), 1)
    return out


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int,
                      ignore: int = IGNORE) -> float:
    """Mean recall over the classes present in ``y_true`` (``(N,)`` int; NaN when none is)."""
    cm = confusion_matrix(y_true, y_pred, n_classes, ignore)
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(cm)[present] / support[present]))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` (``(N,)``), ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), np.float64)
    sorted_v = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2.0  # mean of ranks s+1 .. e
    return ranks


def auroc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` (``(N,)`` float, higher = more positive) for the
    binary truth ``positive`` (``(N,)`` bool), by the rank (Mann-Whitney U) formula with ties
    counted half; NaN when either class is absent."""
    pos = np.asarray(positive, bool).reshape(-1)
    s = np.asarray(scores, np.float64).reshape(-1)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def macro_auroc(y_true: np.ndarray, probs: np.ndarray, ignore: int = IGNORE) -> float:
    """AUROC of a head: with two classes, of class 1's probability (class 1 vs class 0); with
    more, the mean one-vs-rest AUROC over the classes present (NaN when fewer than two are).

    Args:
        y_true: ``(N,)`` int true classes (``ignore`` entries left out).
        probs: ``(N, C)`` float class probabilities.
    """
    probs = np.asarray(probs, np.float64)
    y, p = _kept(y_true, probs.reshape(len(probs), -1), ignore=ignore)
    n_classes = p.shape[1]
    if n_classes == 2:
        return auroc(y == 1, p[:, 1])
    values = [auroc(y == c, p[:, c]) for c in range(n_classes) if 0 < (y == c).sum() < len(y)]
    return float(np.mean(values)) if values else float("nan")
