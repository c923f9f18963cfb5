"""What the ``ami-br`` reader and the mask rule both measure on an AMi-Br crop (``(C, C, 3)``
uint8 RGB, the figure at ``(C // 2, C // 2)``, ~0.25 um/px): the smoothed hematoxylin map, the
pixels that are tissue rather than black slide-border padding, and the centred figure's radius."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def smoothed_hematoxylin(image: np.ndarray) -> np.ndarray:
    """``(C, C)`` float32 hematoxylin optical density (skimage ``rgb2hed``), Gaussian-smoothed
    with sigma 1 px."""
    from skimage.color import rgb2hed
    return ndi.gaussian_filter(rgb2hed(image)[..., 0].astype(np.float32), 1.0)


def valid_pixels(image: np.ndarray) -> np.ndarray:
    """``(C, C)`` bool, False on black slide-border padding (max channel < 12, grown by 2 px)."""
    return ~ndi.binary_dilation(image.max(-1) < 12, iterations=2)


def figure_radius(h: np.ndarray, c: int) -> float:
    """Radius (px) of the dark blob(s) of ``h`` (:func:`smoothed_hematoxylin`) touching the
    central 17x17 px around (c, c), clipped to [10, 28]; 16 when there is none."""
    centre = h[c - 8:c + 9, c - 8:c + 9]
    thr = max(0.6 * float(centre.max()), float(np.percentile(h, 85)))
    lab, n = ndi.label(h > thr, structure=np.ones((3, 3), bool))
    ids = np.unique(lab[c - 8:c + 9, c - 8:c + 9])
    ids = ids[ids > 0]
    if len(ids) == 0:
        return 16.0
    ys, xs = np.nonzero(np.isin(lab, ids))
    return float(np.clip(np.sqrt((xs - c) ** 2 + (ys - c) ** 2).max() + 1, 10, 28))
