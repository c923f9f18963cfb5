"""Where the tissue is: a mask from a low-resolution picture of the slide (saturation + Otsu,
holes filled, small specks removed; scikit-image) and regions of interest from QuPath GeoJSON
annotations (polygons in level-0 px).

An ROI is checked before it is used (:func:`check_roi`, :func:`check_roi_extent`): every vertex
finite, every polygon with an area (three or more vertices not all on one line), and no polygon
wholly outside the slide; a polygon partly outside is clipped to the slide."""
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
    return check_roi(polygons, f"--roi {path}")


def check_roi(polygons: Any, where: str = "roi") -> list[list[np.ndarray]]:
    """``polygons`` (each ``[exterior, *holes]``, rings ``(N, 2)`` x, y level-0 px) as float64
    arrays, when every vertex is finite and every exterior ring encloses an area.

    Raises:
        DataError: one line naming ``where`` (e.g. ``"--roi FILE"``), the polygon (1-based)
            and the rule it breaks.
    """
    out: list[list[np.ndarray]] = []
    for i, rings in enumerate(polygons, 1):
        try:
            arrays = [np.asarray(r, np.float64).reshape(len(r), -1)[:, :2] for r in rings]
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}: polygon {i} has bad coordinates ({exc})") from None
        if not arrays or any(a.shape[1] != 2 for a in arrays):
            raise DataError(f"{where}: polygon {i} has bad coordinates (each vertex needs x, y)")
        if not all(np.isfinite(a).all() for a in arrays):
            raise DataError(f"{where}: polygon {i} has a vertex that is not a finite number "
                            f"(NaN or inf); every vertex needs finite x, y in level-0 px")
        ring = arrays[0]
        x, y = ring[:, 0], ring[:, 1]
        area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
        if len(np.unique(ring, axis=0)) < 3 or area <= 0.0:
            raise DataError(f"{where}: polygon {i} is degenerate (area 0: fewer than three "
                            f"distinct vertices, or all on one line); an ROI needs an area")
        out.append(arrays)
    if not out:
        raise DataError(f"{where}: no polygon")
    return out


def check_roi_extent(polygons: Any, width: int, height: int, where: str = "roi") -> None:
    """Refuse an ROI with a polygon wholly outside a ``width`` x ``height`` px slide (level 0);
    a polygon partly outside is kept (clipped when drawn, :func:`rasterize`).

    Raises:
        DataError: one line naming ``where``, the polygon (1-based), its extent and the
            slide's.
    """
    for i, rings in enumerate(polygons, 1):
        ring = np.asarray(rings[0], np.float64)
        (x0, y0), (x1, y1) = ring.min(axis=0), ring.max(axis=0)
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            raise DataError(f"{where}: polygon {i} (x {x0:g}..{x1:g}, y {y0:g}..{y1:g}) lies "
                            f"wholly outside the slide (0..{width} x 0..{height} level-0 px); "
                            f"ROI coordinates are level-0 px from the slide's top-left corner")


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
