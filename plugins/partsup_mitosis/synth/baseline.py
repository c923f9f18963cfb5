"""The classical baseline the generator is calibrated against: a hematoxylin threshold with an
area window (:func:`threshold_blobs` on :func:`hematoxylin`). A good detector must beat it on the
synthetic images while it stays at F1 <= 0.5 (the difficulty window that tests/test_synth.py pins
and bench/synth_baseline.py tunes; docs/datasets.md). It lives beside the generator, not in
bench/, because it states the generator's contract and the tests import it."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def hematoxylin(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 hematoxylin optical density of an RGB uint8 image (Ruifrok matrix)."""
    from skimage.color import rgb2hed
    return rgb2hed(image)[..., 0].astype(np.float32)


def threshold_blobs(h: np.ndarray, threshold: float, area: tuple[float, float]) -> np.ndarray:
    """Classical detector: blobs of ``h > threshold`` (8-connected) with area (px) in ``area``.

    Returns ``(K, 2)`` float32 blob centroids x, y in px.
    """
    lab, n = ndi.label(h > threshold, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros((0, 2), np.float32)
    idx = np.arange(1, n + 1)
    sizes = ndi.sum_labels(np.ones_like(h), lab, idx)
    keep = idx[(sizes >= area[0]) & (sizes <= area[1])]
    if len(keep) == 0:
        return np.zeros((0, 2), np.float32)
    cy_cx = np.asarray(ndi.center_of_mass(np.ones_like(h), lab, keep), np.float32).reshape(-1, 2)
    return cy_cx[:, ::-1].copy()
