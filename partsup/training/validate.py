"""Validation during training: detection F1 on the recipe's validation split.

The F1 is computed with the detection pipeline of :mod:`partsup.inference.detector` and the
matching of :mod:`partsup.evaluation.matching` (``eval.protocol``, radii in micrometres or
pixels). Under distribution every rank detects its share of the images and the TP/FP/FN counts
of each grid point are summed across ranks before the best point is chosen.
"""
from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as tdist

if TYPE_CHECKING:
    from partsup.training.run import Run


def validate(run: Run, stage: str = "joint") -> dict[str, Any] | None:
    """Detection F1 on the validation split (the pipeline of :mod:`partsup.inference.detector`).

    With ``train.val_sweep`` (default) the F1 is the best over the recipe's ``calibrate:`` grid
    of (w, s1, a1), i.e. what calibration would reach with these weights (maps are computed
    once per image, then swept, as ``partsup calibrate`` does); otherwise the ``detect:``
    values are used as they are. During a ``weak`` stage only the weak map counts (w = 1).
    Images are shared out across ranks and the counts summed.

    Returns ``Counts.as_dict()`` plus ``images``, ``w``, ``threshold``, ``s1``, ``a1`` (the grid
    point), or None when the recipe has no validation split.
    """
    if run.val is None:
        return None
    from partsup.evaluation.calibration import MapCache, sweep, threshold_grid
    from partsup.inference.detector import Detector, DetectParams

    params = DetectParams.from_dict(run.recipe["detect"])
    weak_map_only = stage == "weak" or run.model.mode == "weak_only"
    if weak_map_only:
        params.w = 1.0
    grid = dict(run.recipe["calibrate"]) if run.recipe["train"].get("val_sweep", True) else \
        {"w": [params.w], "s1": [params.s1], "a1": [params.a1], "threshold": None}
    grid["threshold"] = threshold_grid(grid.get("threshold"), params.threshold)
    w_grid = [1.0] if weak_map_only else grid["w"]
    detector = Detector(run.model, params, run.registries, device=run.device,
                        amp=bool(run.recipe["train"]["amp"]))
    n = len(run.val)
    mine = range(run.dist.rank, n, run.dist.world) if n >= run.dist.world else range(n)
    was_training = run.model.training
    try:
        with tempfile.TemporaryDirectory(prefix="partsup-val-") as folder:
            cache = MapCache(folder)
            images = []
            for i in mine:
                sample = run.val[i]
                images.append(cache.add(sample.id, *detector.maps(sample.image), sample.points,
                                        sample.mpp))
            rows = sweep(images, params, run.registries, _protocol(run), w_grid, grid["s1"],
                         grid["a1"], threshold=grid["threshold"]).rows if images else []
            del images
    finally:
        run.model.train(was_training)
    return _best_row(run, rows, len(mine), n, w_grid, grid)


def _best_row(run: Run, rows: list[Any], mine: int, n: int, w_grid: list[float],
              grid: dict[str, Any]) -> dict[str, Any]:
    """Sum each grid point's counts over ranks; the best F1 (first of ties, grid order)."""
    from partsup.evaluation.matching import Counts
    keys = [(float(w), t, float(s), float(a)) for w in w_grid for t in grid["threshold"]
            for s in grid["s1"] for a in grid["a1"]]
    counts = np.zeros((len(keys), 3), np.int64)
    index = {k: i for i, k in enumerate(keys)}
    for r in rows:
        c = r.counts
        counts[index[(float(r.w), r.threshold, float(r.s1), float(r.a1))]] = (c.tp, c.fp, c.fn)
    if run.dist.enabled and n >= run.dist.world:
        t = torch.from_numpy(counts).to(torch.float64)
        t = t.to(run.device) if run.device.type == "cuda" else t
        tdist.all_reduce(t)
        counts = t.cpu().numpy().astype(np.int64)
    totals = [Counts(*map(int, c)) for c in counts]
    best = max(range(len(keys)), key=lambda i: totals[i].f1)
    out: dict[str, Any] = totals[best].as_dict()
    out.update(images=n, w=keys[best][0], threshold=keys[best][1], s1=keys[best][2],
               a1=keys[best][3])
    return out


def _protocol(run: Run) -> Any:
    """The recipe's ``eval.protocol`` with its ``radius_um`` / ``radius_px`` overrides."""
    from partsup.evaluation.protocols import resolve_protocol
    return resolve_protocol(run.registries, None, None, run.recipe)
