"""From probability maps to detections: fusion, smoothing, threshold (Otsu or fixed), blobs,
filters.

Pipeline (paper section III.D; facts.md "Post-processing")::

    P_weak, P_strong (H, W) float32
      --fuse (partsup_fuse hook)--> S = w * P_weak + (1 - w) * P_strong
      --find_blobs--> Gaussian smoothing (sigma px) -> threshold, strict ``>``: Otsu over the
                      whole map (the paper's rule, ``threshold: otsu``) or a fixed probability
                      (``threshold: 0.5``; does not move with how many objects a field holds)
                      -> 8-connected blobs (score = mean probability, prob-weighted centroid)
      --filter_blobs--> area > a1 (px or um^2) AND score > s1 AND named filters AND hook
      --> list[Detection]

Coordinates are pixels, x = column, y = row.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from partsup.inference.filters import FILTERS
from partsup.inference.params import DetectParams
from partsup.manager import Registries
from partsup.registry import component_kwargs
from partsup.types import Blobs, Detection

#: a (smoothed) probability map whose values span less than this has no blobs
FLAT_RANGE = 1e-6


def find_blobs(prob: np.ndarray, sigma: float, threshold: str | float = "otsu") -> Blobs:
    """Candidate blobs of a probability map.

    Smooths ``prob`` with a Gaussian (``sigma`` px; 0 = none), thresholds the smoothed map
    (strict ``>``) with Otsu's threshold computed over the **whole** map (``threshold="otsu"``,
    the paper's rule) or with a fixed probability (``threshold`` a float), labels 8-connected
    components, and scores each blob by the mean of the *unsmoothed* probability over its
    pixels; the centroid is weighted by that probability (plain centroid where it sums to zero).
    A map whose smoothed values span less than :data:`FLAT_RANGE` has no blobs.

    Memory: besides ``prob``, at most one more ``(H, W)`` 4-byte array (the smoothed map, later
    the int32 labels) and one bool mask are alive at a time; per-blob sums are taken over the
    labelled pixels of row bands of :data:`STATS_CHUNK_PX` pixels.

    Args:
        prob: ``(H, W)`` float probability map in [0, 1].
        sigma: Gaussian sigma in pixels.
        threshold: ``"otsu"`` or a fixed probability in (0, 1).

    Returns:
        :class:`Blobs` with ``x, y`` (px, float64), ``score`` (float64), ``area`` (px, int64)
        and ``labels`` ``(H, W)`` int32 (0 = background, blob k has label k + 1).
    """
    prob = np.asarray(prob, np.float32)
    foreground = _foreground(prob, sigma, threshold)
    labels = np.zeros(prob.shape, np.int32)
    if foreground is None:
        return _no_blobs(labels)
    n = int(ndimage.label(foreground, structure=np.ones((3, 3), bool), output=labels))
    del foreground
    if n == 0:
        return _no_blobs(labels)
    area, psum, px, py, sx, sy = blob_sums(prob, labels, n)
    pos = psum > 0
    safe = np.where(pos, psum, 1.0)
    x = np.where(pos, px / safe, sx / area)
    y = np.where(pos, py / safe, sy / area)
    return Blobs(x=x, y=y, score=psum / area, area=area, labels=labels)


#: pixels per row band when summing blob statistics (bounds the temporaries to a few MiB)
STATS_CHUNK_PX = 1 << 20


def _no_blobs(labels: np.ndarray) -> Blobs:
    return Blobs(x=np.zeros(0), y=np.zeros(0), score=np.zeros(0), area=np.zeros(0, np.int64),
                 labels=labels)


def _foreground(prob: np.ndarray, sigma: float, threshold: str | float = "otsu"
                ) -> np.ndarray | None:
    """``smooth(prob) > t`` as ``(H, W)`` bool (``t`` = Otsu of the smoothed map, or the fixed
    ``threshold``), or None for a flat map under Otsu or an empty map.

    The smoothed float32 map lives only inside this function.
    """
    if prob.size == 0:
        return None
    smooth = ndimage.gaussian_filter(prob, float(sigma)) if sigma > 0 else prob
    if threshold != "otsu":
        return smooth > np.float32(threshold)
    if float(smooth.max()) - float(smooth.min()) < FLAT_RANGE:
        return None  # a flat map has nothing to separate (and Otsu cannot bin it)
    return smooth > otsu_threshold(smooth)


def otsu_threshold(values: np.ndarray) -> Any:
    """Otsu's threshold over all of ``values``, exactly ``skimage.filters.threshold_otsu(values)``
    (256 bins spanning the value range) without the flattened copy of the map skimage makes.

    Args:
        values: array of any shape (here the ``(H, W)`` float32 smoothed map); its values must
            not all be equal (:func:`find_blobs` checks :data:`FLAT_RANGE` first).

    Returns:
        The threshold as skimage gives it (a NumPy floating scalar of the bin centres' dtype), so
        the strict ``values > t`` test compares at the same precision.
    """
    counts, edges = np.histogram(values, bins=256)
    return threshold_otsu(hist=(counts, (edges[:-1] + edges[1:]) / 2.0))


def blob_sums(prob: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """Per-blob pixel count and probability sums, the statistics :func:`find_blobs` scores with.

    Row bands of :data:`STATS_CHUNK_PX` pixels are visited in raster order; within a band
    ``np.bincount`` sums each blob's pixels in raster order, and band totals are added band
    after band (so the result does not depend on how the map was cut into tiles).

    Args:
        prob: ``(H, W)`` float probability map.
        labels: ``(H, W)`` integer labels, 0 = background, blob k has label k + 1.
        n: number of blobs (the largest label).

    Returns:
        ``(area, sum_p, sum_px, sum_py, sum_x, sum_y)``, each of shape ``(n,)``: ``area``
        int64 (px), the others float64 sums over the blob's pixels of p, p*x, p*y, x and y
        (x = column, y = row, px).
    """
    w = prob.shape[1]
    area = np.zeros(n, np.int64)
    sums = np.zeros((5, n), np.float64)  # p, p*x, p*y, x, y
    step = max(1, STATS_CHUNK_PX // max(w, 1))
    for r0 in range(0, prob.shape[0], step):
        band = labels[r0: r0 + step].ravel()
        idx = np.flatnonzero(band)  # foreground only: memory scales with the blobs
        if idx.size == 0:
            continue
        lab = band[idx].astype(np.intp) - 1
        p = prob[r0: r0 + step].ravel()[idx].astype(np.float64)
        rows, cols = np.divmod(idx, w)
        rows, cols = (rows + r0).astype(np.float64), cols.astype(np.float64)
        area += np.bincount(lab, minlength=n)
        for k, v in enumerate((p, p * cols, p * rows, cols, rows)):
            sums[k] += np.bincount(lab, weights=v, minlength=n)
    return (area, *sums)


def filter_blobs(blobs: Blobs, params: DetectParams, mpp: float, registries: Registries,
                 thresholds: bool = True) -> np.ndarray:
    """Keep-mask ``(K,)`` bool: area/score thresholds AND named filters AND the filter hook.

    With ``thresholds=False`` the ``a1``/``s1`` tests are skipped (calibration sweeps them).
    """
    keep = np.ones(len(blobs), bool)
    if thresholds:
        keep &= FILTERS["area"](min=params.a1, unit=params.area_unit)(blobs, mpp)
        keep &= FILTERS["score"](min=params.s1)(blobs, mpp)
    for i, spec in enumerate(params.filters):
        name, kwargs = component_kwargs(spec, f"detect.filters[{i}]")
        fn = registries.filters.build(name, where=f"detect.filters[{i}]", **kwargs)
        keep &= _as_mask(fn(blobs, mpp), len(blobs), f"filter {name!r}")
    results = registries.pm.hook.partsup_filter_candidates(blobs=blobs, mpp=mpp,
                                                           params=params.to_dict())
    for r in results:
        if r is not None:
            keep &= _as_mask(r, len(blobs), "partsup_filter_candidates")
    return keep


def _as_mask(value: Any, n: int, who: str) -> np.ndarray:
    mask = np.asarray(value, bool).reshape(-1)
    if mask.shape != (n,):
        raise ValueError(f"{who} returned a keep-mask of shape {mask.shape} for {n} blobs")
    return mask


def fuse(p_weak: np.ndarray, p_strong: np.ndarray | None, params: DetectParams,
         registries: Registries) -> np.ndarray:
    """The fused ``(H, W)`` float32 map from the ``partsup_fuse`` hook (first result wins)."""
    fused = registries.pm.hook.partsup_fuse(weak=p_weak, strong=p_strong,
                                            params=params.to_dict())
    if fused is None:  # no implementation at all (core plugin blocked)
        fused = p_weak if p_strong is None else params.w * p_weak + (1 - params.w) * p_strong
    return np.asarray(fused, np.float32)



def to_detections(blobs: Blobs, keep: np.ndarray) -> list[Detection]:
    return [Detection(x=float(blobs.x[i]), y=float(blobs.y[i]), score=float(blobs.score[i]),
                      area=float(blobs.area[i])) for i in np.flatnonzero(keep)]


def detect_from_maps(p_weak: np.ndarray, p_strong: np.ndarray | None, params: DetectParams,
                     mpp: float, registries: Registries) -> list[Detection]:
    """Detections from the two probability maps ``(H, W)`` float32 of one image.

    Args:
        p_weak, p_strong: probability maps (``p_strong`` None for weak-only models).
        params: detection parameters.
        mpp: micrometres per pixel of the image (for ``area_unit: um2`` and filters).
        registries: the run's registries (plugin manager for the fuse and filter hooks).

    Returns:
        Detections (x, y px; score = mean probability; area px), in label (raster) order.
    """
    blobs = find_blobs(fuse(p_weak, p_strong, params, registries), params.sigma,
                       params.threshold)
    return to_detections(blobs, filter_blobs(blobs, params, mpp, registries))


def candidates_from_maps(p_weak: np.ndarray, p_strong: np.ndarray | None,
                         params: DetectParams, mpp: float, registries: Registries
                         ) -> tuple[list[Detection], np.ndarray]:
    """Every candidate before the score threshold ``s1``, and which of them are detections.

    Runs :func:`detect_from_maps` with ``s1 = -inf`` (so every other rule, filter and hook
    applies as usual; hooks see ``params["s1"] == -inf``), then marks ``score > s1``. For
    precision-recall curves over the score, which ``s1`` would otherwise cut short.

    Returns:
        ``(candidates, keep)``: detections as :func:`detect_from_maps` gives them (x, y px),
        and a ``(K,)`` bool mask; ``candidates[keep]`` are the detections at ``params``.
    """
    loose = dataclasses.replace(params)
    loose.s1 = -np.inf  # set after construction: no range check applies to it
    candidates = detect_from_maps(p_weak, p_strong, loose, mpp, registries)
    keep = np.array([d.score > params.s1 for d in candidates], bool)
    return candidates, keep
