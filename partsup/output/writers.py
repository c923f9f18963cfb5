"""Detection writers (output formats) and a reader for all of them.

A writer is built by ``factory(**kw)`` and has ``suffix`` (the file-name ending it writes, unique
per format so a file's format is known from its name) and ``write(path, detections, info)``.
``detections`` is a list of :class:`partsup.types.Detection` (x = column, y = row, pixels; score in
[0, 1]; area in px). ``info`` describes the image: ``image`` (name), ``width``, ``height`` (px)
and ``mpp`` (micrometres per pixel).

Formats:

============  ==================  ======================================================
name          suffix              content
============  ==================  ======================================================
csv           ``.csv``            header ``x,y,score,area``; px, area in px
geojson       ``.geojson``        FeatureCollection of QuPath point detections (px)
tupac         ``.tupac.csv``      ``row,col`` per line, no header (AMIDA13/TUPAC16 layout)
mitos-atypia  ``_mitosis.csv``    ``x,y,confidence`` per line, no header (MITOS-ATYPIA-14)
midog         ``.midog.json``     grand-challenge "Multiple points", points in mm
============  ==================  ======================================================

:func:`read_detections` reads any of them back as an ``(K, 3)`` float64 array ``x, y, score``
in pixels.
"""
from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from partsup.errors import DataError
from partsup.data.readers import Problems, floats, read_csv_rows
from partsup.types import Detection

#: default colour of the "Mitosis" class in QuPath (RGB, 0-255)
MITOSIS_COLOR = (220, 40, 40)


def _prepare(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _mm(px: float, mpp: float) -> float:
    """Pixels -> millimetres: ``px * mpp / 1000``."""
    return float(px) * float(mpp) / 1000.0


class CsvWriter:
    """Plain CSV with header ``x,y,score,area`` (x = column, y = row, px; area in px)."""

    def __init__(self, decimals: int = 2, suffix: str = ".csv") -> None:
        self.decimals = decimals
        self.suffix = suffix

    def write(self, path: str | Path, detections: Sequence[Detection], info: dict[str, Any]) -> Path:
        path = _prepare(path)
        d = self.decimals
        with path.open("w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["x", "y", "score", "area"])
            for det in detections:
                w.writerow([round(det.x, d), round(det.y, d), round(det.score, 6),
                            round(det.area, d)])
        return path


class GeoJsonWriter:
    """GeoJSON FeatureCollection that QuPath (0.4+) imports as point detections.

    Each feature: ``geometry`` a GeoJSON ``Point`` ``[x, y]`` in px (QuPath's origin: top-left of
    the full-resolution image); ``properties.objectType = "detection"``;
    ``properties.classification = {"name": "Mitosis", "color": [r, g, b]}``;
    ``properties.measurements = {"score": s, "area_px": a}`` (a name -> number map, the layout
    QuPath writes and reads since 0.4). ``id`` is a UUID derived from image name and index,
    so the file is deterministic.
    """

    def __init__(self, classification: str = "Mitosis",
                 color: list[int] | tuple[int, int, int] = MITOSIS_COLOR,
                 object_type: str = "detection", suffix: str = ".geojson") -> None:
        if len(color) != 3:
            raise ValueError(f"color must be [r, g, b], got {color!r}")
        self.classification = classification
        self.color = [int(c) for c in color]
        self.object_type = object_type
        self.suffix = suffix

    def feature(self, det: Detection, image: str, index: int) -> dict[str, Any]:
        return {
            "type": "Feature",
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"partsup:{image}:{index}")),
            "geometry": {"type": "Point", "coordinates": [float(det.x), float(det.y)]},
            "properties": {
                "objectType": self.object_type,
                "classification": {"name": self.classification, "color": list(self.color)},
                "measurements": {"score": float(det.score), "area_px": float(det.area)},
            },
        }

    def write(self, path: str | Path, detections: Sequence[Detection], info: dict[str, Any]) -> Path:
        path = _prepare(path)
        image = str(info.get("image", path.stem))
        doc = {"type": "FeatureCollection",
               "features": [self.feature(d, image, i) for i, d in enumerate(detections)]}
        path.write_text(json.dumps(doc, indent=1) + "\n")
        return path


class TupacWriter:
    """AMIDA13 / TUPAC16 layout: one ``row,col`` (y, x; integer px) per line, no header.

    With ``score=True`` a third column carries the score (the ground-truth files have none).
    """

    def __init__(self, score: bool = False, suffix: str = ".tupac.csv") -> None:
        self.score = score
        self.suffix = suffix

    def write(self, path: str | Path, detections: Sequence[Detection], info: dict[str, Any]) -> Path:
        path = _prepare(path)
        lines = []
        for det in detections:
            row = f"{int(round(det.y))},{int(round(det.x))}"
            lines.append(f"{row},{det.score:.6f}" if self.score else row)
        path.write_text("".join(line + "\n" for line in lines))
        return path


class MitosAtypiaWriter:
    """MITOS-ATYPIA-14 layout: ``x,y,confidence`` per line (x = column; integer px), no header."""

    def __init__(self, suffix: str = "_mitosis.csv") -> None:
        self.suffix = suffix

    def write(self, path: str | Path, detections: Sequence[Detection], info: dict[str, Any]) -> Path:
        path = _prepare(path)
        path.write_text("".join(f"{int(round(d.x))},{int(round(d.y))},{d.score:.6f}\n"
                                for d in detections))
        return path


class MidogWriter:
    """MIDOG (grand-challenge) "Multiple points" JSON with points in millimetres.

    Each point is ``{"name": "mitotic figure", "point": (x_mm, y_mm, 0), "probability": p}``
    (a JSON list), ``mm = px * mpp / 1000``. With ``metadata=True`` a ``"partsup"`` key records image name,
    size and mpp so :func:`read_detections` can convert back without being told the mpp
    (off by default: the challenge file stays exactly in its published shape).
    """

    def __init__(self, name: str = "mitotic figure", metadata: bool = False,
                 suffix: str = ".midog.json") -> None:
        self.name = name
        self.metadata = metadata
        self.suffix = suffix

    def write(self, path: str | Path, detections: Sequence[Detection], info: dict[str, Any]) -> Path:
        path = _prepare(path)
        mpp = info.get("mpp")
        if mpp is None or not mpp > 0:
            raise DataError(f"{path}: the midog format needs the image's mpp (um/px); got {mpp!r}")
        doc: dict[str, Any] = {
            "name": "Points of interest",
            "type": "Multiple points",
            "points": [{"name": self.name,
                        "point": [_mm(d.x, mpp), _mm(d.y, mpp), 0.0],
                        "probability": float(d.score)} for d in detections],
            "version": {"major": 1, "minor": 0},
        }
        if self.metadata:
            doc["partsup"] = {k: info[k] for k in ("image", "width", "height", "mpp") if k in info}
        path.write_text(json.dumps(doc, indent=1) + "\n")
        return path


#: name -> factory; registered by :mod:`partsup.builtin`.
WRITERS: dict[str, Callable[..., Any]] = {
    "csv": CsvWriter,
    "geojson": GeoJsonWriter,
    "tupac": TupacWriter,
    "mitos-atypia": MitosAtypiaWriter,
    "midog": MidogWriter,
}

#: default suffix of each built-in format, longest first (so ``_mitosis.csv`` beats ``.csv``)
SUFFIXES: dict[str, str] = dict(sorted(
    ((name, factory().suffix) for name, factory in WRITERS.items()),
    key=lambda kv: -len(kv[1])))


# -- reading back ------------------------------------------------------------------------------

def format_of(path: str | Path) -> str | None:
    """The built-in format a file name belongs to (by its suffix), or None."""
    name = Path(path).name.lower()
    for fmt, suffix in SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    if name.endswith(".json"):
        return "json"  # geojson or midog: decided by content
    return None


def _empty() -> np.ndarray:
    return np.zeros((0, 3), np.float64)


def _number_rows(path: Path, n: int, header: Sequence[str] = (),
                 optional: int = 0) -> list[list[float]]:
    """The data lines of a CSV as lists of finite floats (:func:`partsup.data.readers.read_csv_rows`).

    Each line needs ``n - optional`` to ``n`` numbers (extra fields are ignored). With ``header``
    the first line must start with those names (case-insensitive). Raises DataError naming the
    file and line.
    """
    names = [h.lower() for h in header]

    def parse(cells: list[str]) -> list[float] | None:
        if names and [c.lower() for c in cells[:len(names)]] == names:
            return None  # the header line
        return floats(cells, n if len(cells) >= n else n - optional)

    rows = read_csv_rows(path, Problems("detections", strict=True), n - optional, parse=parse,
                         allow_empty=True) or []
    if names and rows and rows[0][1] is not None:
        raise DataError(f"{path}:{rows[0][0]}: expected a header starting {','.join(header)}")
    return [vals for _, vals in rows if vals is not None]


def _read_csv(path: Path) -> np.ndarray:
    """``x,y[,score]`` with a header line starting ``x,y``; no score column gives score 1.0."""
    out = [(v[0], v[1], v[2] if len(v) > 2 else 1.0)
           for v in _number_rows(path, 3, header=("x", "y"), optional=1)]
    return np.asarray(out, np.float64).reshape(-1, 3)


def _read_tupac(path: Path) -> np.ndarray:
    out = [(v[1], v[0], v[2] if len(v) > 2 else 1.0) for v in _number_rows(path, 3, optional=1)]
    return np.asarray(out, np.float64).reshape(-1, 3)


def _read_mitos_atypia(path: Path) -> np.ndarray:
    return np.asarray(_number_rows(path, 3), np.float64).reshape(-1, 3)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def _number(value: Any) -> float:
    """A JSON number (not a bool, not a string) as a finite float; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a number")
    out = float(value)
    if not np.isfinite(out):
        raise ValueError(f"{value!r} is not finite")
    return out


def _measured_score(feat: dict[str, Any]) -> Any:
    """A GeoJSON feature's ``score`` measurement (QuPath), or None when it has none."""
    props = feat.get("properties") or {}
    meas = props.get("measurements") if isinstance(props, dict) else None
    if isinstance(meas, list):  # QuPath <= 0.3: [{"name": ..., "value": ...}, ...]
        meas = {m.get("name"): m.get("value") for m in meas if isinstance(m, dict)}
    return meas.get("score") if isinstance(meas, dict) else None


def _geojson_feature(path: Path, i: int, feat: Any) -> tuple[float, float, float]:
    """``(x, y, score)`` of feature ``i``; DataError naming the file and the index."""
    where = f"{path}: feature {i}"
    if not isinstance(feat, dict):
        raise DataError(f"{where} is not a JSON object (got {type(feat).__name__})")
    geom = feat.get("geometry") or {}
    if not isinstance(geom, dict):
        raise DataError(f"{where}: 'geometry' is not a JSON object")
    if geom.get("type") != "Point":
        raise DataError(f"{where} is a {geom.get('type')!r}, expected a Point")
    coords = geom.get("coordinates")
    try:
        if not isinstance(coords, list) or len(coords) < 2:
            raise ValueError("missing")
        x, y = _number(coords[0]), _number(coords[1])
    except ValueError:
        raise DataError(f"{where}: a Point needs numeric 'coordinates' [x, y], "
                        f"got {coords!r}") from None
    score = _measured_score(feat)
    try:
        return x, y, 1.0 if score is None else _number(score)
    except ValueError as exc:
        raise DataError(f"{where}: measurement 'score' must be a number ({exc})") from None


def _read_geojson(path: Path, doc: Any) -> np.ndarray:
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise DataError(f"{path}: expected a GeoJSON FeatureCollection")
    features = doc.get("features", [])
    if not isinstance(features, list):
        raise DataError(f"{path}: 'features' must be a list")
    out = [_geojson_feature(path, i, feat) for i, feat in enumerate(features)]
    return np.asarray(out, np.float64).reshape(-1, 3)


def _midog_point(path: Path, i: int, p: Any, scale: float) -> tuple[float, float, float]:
    """``(x, y, score)`` in px of point ``i`` (mm times ``scale``); DataError naming the index."""
    if not isinstance(p, dict):
        raise DataError(f"{path}: point {i} is not a JSON object (got {type(p).__name__})")
    try:
        x, y = _number(p["point"][0]), _number(p["point"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        raise DataError(f"{path}: point {i} has no [x, y, z] 'point'") from None
    try:
        score = _number(p.get("probability", 1.0))
    except ValueError as exc:
        raise DataError(f"{path}: point {i}: 'probability' must be a number ({exc})") from None
    return x * scale, y * scale, score


def _read_midog(path: Path, doc: Any, mpp: float | None) -> np.ndarray:
    if not isinstance(doc, dict) or not isinstance(doc.get("points"), list):
        raise DataError(f"{path}: expected a MIDOG points JSON with a 'points' list")
    meta = doc.get("partsup")
    mpp = mpp if mpp is not None else (meta.get("mpp") if isinstance(meta, dict) else None)
    try:
        mpp = float(mpp)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        mpp = None
    if mpp is None or not mpp > 0:
        raise DataError(f"{path}: MIDOG points are in mm; pass the image's mpp to convert to px")
    scale = 1000.0 / mpp
    out = [_midog_point(path, i, p, scale) for i, p in enumerate(doc["points"])]
    return np.asarray(out, np.float64).reshape(-1, 3)


def read_detections(path: str | Path, fmt: str | None = None,
                    mpp: float | None = None) -> np.ndarray:
    """Read a detection file written by any built-in writer.

    Args:
        path: the file.
        fmt: ``csv``, ``geojson``, ``tupac``, ``mitos-atypia`` or ``midog``; None guesses from the
            file name (:data:`SUFFIXES`) and, for JSON, from its content.
        mpp: um/px of the image, needed for ``midog`` (points in mm) unless the file was written
            with ``metadata=True``.

    Returns:
        ``(K, 3)`` float64 ``x, y, score`` in pixels (x = column). Formats without a score
        (``tupac`` without its optional third column) give score 1.0.

    Raises:
        DataError: missing, unreadable or malformed file (names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: detection file not found")
    fmt = fmt or format_of(path)
    if fmt in ("geojson", "midog", "json"):
        doc = _load_json(path)
        if fmt == "json":
            fmt = "geojson" if isinstance(doc, dict) and "features" in doc else "midog"
        return _read_geojson(path, doc) if fmt == "geojson" else _read_midog(path, doc, mpp)
    readers = {"csv": _read_csv, "tupac": _read_tupac, "mitos-atypia": _read_mitos_atypia}
    if fmt not in readers:
        known = ", ".join(WRITERS)
        raise DataError(f"{path}: cannot tell the detection format from the name; "
                        f"pass one of {known}")
    return readers[fmt](path)


def has_scores(path: str | Path, fmt: str | None = None) -> bool:
    """Whether every detection in a readable detection file carries its own score.

    ``csv`` and ``mitos-atypia`` require one; ``tupac`` (third column), ``geojson`` (measurement
    ``score``) and ``midog`` (``probability``) may leave it out, and :func:`read_detections`
    then gives 1.0. An empty file counts as scored. ``fmt`` as in :func:`read_detections`.
    """
    path = Path(path)
    fmt = fmt or format_of(path)
    if fmt == "tupac":
        return all(len(v) > 2 for v in _number_rows(path, 3, optional=1))
    if fmt not in ("geojson", "midog", "json"):
        return True
    doc = _load_json(path)
    if isinstance(doc, dict) and isinstance(doc.get("features"), list):
        return all(not isinstance(f, dict) or _measured_score(f) is not None
                   for f in doc["features"])
    points = doc.get("points") if isinstance(doc, dict) else None
    return all(not isinstance(p, dict) or "probability" in p for p in points or [])
