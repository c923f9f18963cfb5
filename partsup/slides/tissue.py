"""Where the tissue is: a mask from a low-resolution picture of the slide (saturation + Otsu,
holes filled, small specks removed; scikit-image) and regions of interest from QuPath GeoJSON
annotations (polygons in level-0 px)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from partsup.errors import DataError

#: saturation spread below which a picture is taken as uniform (all tissue or all background)
MIN_SPREAD = 0.05


def tissue_mask(thumb: np.ndarray, min_area_fraction: float = 0.0005) -> np.ndarray:
    """``(h, w)`` bool: tissue pixels of an RGB ``thumb`` (uint8).

    Tissue is stained, so more saturated than the bright background: HSV saturation above its
    Otsu threshold, then holes filled and objects smaller than ``min_area_fraction`` of the
    picture removed. A picture with (almost) uniform saturation is all tissue when saturated,
    else none."""
    from scipy import ndimage
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_objects

    sat = rgb2hsv(thumb)[..., 1]
    if float(sat.max() - sat.min()) < MIN_SPREAD:
        return np.full(sat.shape, float(sat.mean()) > MIN_SPREAD)
    mask = sat > threshold_otsu(sat)
    mask = ndimage.binary_fill_holes(mask)
    min_size = max(1, int(min_area_fraction * mask.size))
    try:  # scikit-image >= 0.26 names the bound max_size (objects <= it are removed)
        return remove_small_objects(mask, max_size=min_size - 1)
    except TypeError:
        return remove_small_objects(mask, min_size=min_size)


def read_roi(path: Path) -> list[list[np.ndarray]]:
    """Polygons of a GeoJSON file (QuPath's export: a FeatureCollection, a list of features or
    one feature; Polygon and MultiPolygon geometries), each ``[exterior, *holes]`` of ``(N, 2)``
    x, y level-0 px.

    Raises:
        DataError: unreadable file, or no polygon in it (names the file)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"--roi {path}: cannot read GeoJSON ({exc})") from exc
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features") or []
    elif isinstance(data, list):
        features = data
    else:
        features = [data]
    polygons: list[list[np.ndarray]] = []
    for feat in features:
        geom: Any = feat.get("geometry", feat) if isinstance(feat, dict) else None
        if not isinstance(geom, dict):
            continue
        parts = {"Polygon": [geom.get("coordinates")],
                 "MultiPolygon": geom.get("coordinates")}.get(geom.get("type"), [])
        for rings in parts or []:
            try:
                polygons.append([np.asarray(r, np.float64)[:, :2] for r in rings])
            except (TypeError, ValueError, IndexError) as exc:
                raise DataError(f"--roi {path}: a polygon has bad coordinates ({exc})") from exc
    if not polygons:
        raise DataError(f"--roi {path}: no Polygon or MultiPolygon in the file")
    return polygons


def rasterize(polygons: list[list[np.ndarray]], shape: tuple[int, int], scale: float
              ) -> np.ndarray:
    """``shape`` bool mask of the polygons (level-0 px) drawn at ``scale`` px per level-0 px;
    holes are cut out."""
    from skimage.draw import polygon as fill
    mask = np.zeros(shape, bool)
    for rings in polygons:
        for k, ring in enumerate(rings):
            rr, cc = fill(ring[:, 1] * scale, ring[:, 0] * scale, shape)
            mask[rr, cc] = k == 0
    return mask
