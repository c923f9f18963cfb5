"""Detection writers (output formats) and a reader for every format that can be read back.

A writer is built by ``factory(**kw)`` and has ``suffix`` (the file-name ending it writes, unique
per format so a file's format is known from its name) and ``write(path, detections, info)``.
``detections`` is a list of :class:`partsup.types.Detection` (x = column, y = row, pixels; score in
[0, 1]; area in px). ``info`` describes the image: ``image`` (name), ``width``, ``height`` (px),
``mpp`` (micrometres per pixel) and, when known, ``label`` (the objects' class name) and
``classes`` (the class names of a second look, in order: the ``p_<class>`` columns to write even
when no detection carries them, e.g. an image without detections), and which model made the
detections (:data:`PROVENANCE`: ``model`` file name, ``model_sha256``, ``source_sha256``).

Detections a second look labelled carry ``label`` (a class) and ``probs`` (class ->
probability): the core's formats then add them (:func:`class_columns`); detections without them
are written exactly as before.

A format can be read back when its factory (the writer class) also has a static
``read(path, mpp) -> (K, 3) float64 x, y, score`` (px). Optional, also static:
``scored(path) -> bool`` (every detection carries its own score; default True),
``sniff(path) -> bool`` (claims a file whose name ends with no writer's suffix, e.g. ``.json``, by
its content) and ``locations(folder, sample_id) -> list[Path]`` (further places a tool writes the
file of a sample to, besides ``folder/<id><suffix>``). :func:`read_detections` finds the reader
through the registered writers: plugins' formats read back like the core's.

Core formats:

============  ==================  ======================================================
name          suffix              content
============  ==================  ======================================================
csv           ``.csv``            header ``x,y,score,area``; px, area in px; with a second
                                  look also ``class`` and one ``p_<class>`` per class
geojson       ``.geojson``        FeatureCollection of QuPath point detections (px); with a
                                  second look named ``<label> (<class>)``, ``p_<class>``
                                  measurements
============  ==================  ======================================================
"""
from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from partsup.errors import DataError
from partsup.data.readers import Problems, floats, read_csv_rows
from partsup.output.atomic import replacing  # the core's writers write through it
from partsup.types import Detection

#: default colour of the objects' class in QuPath (RGB, 0-255)
DEFAULT_COLOR = (220, 40, 40)
#: class name written when neither the writer nor ``info["label"]`` names one
DEFAULT_LABEL = "object"
#: ``info`` keys naming the model that made the detections (the model file's name and SHA-256;
#: an exported model's source checkpoint's SHA-256), written where a format has room for them
PROVENANCE = ("model", "model_sha256", "source_sha256")


def prepare(path: str | Path) -> Path:
    """``path`` as a Path, its folder created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def empty() -> np.ndarray:
    """No detections: ``(0, 3)`` float64."""
    return np.zeros((0, 3), np.float64)


def class_columns(detections: Sequence[Detection], info: Mapping[str, Any] | None = None
                  ) -> list[str] | None:
    """The class names whose probabilities a file of ``detections`` shows (``p_<class>``):
    ``info["classes"]`` when given, else the detections' ``probs`` keys in first-seen order;
    None when there are none and no detection has a ``label`` (a file as without a second
    look)."""
    given = (info or {}).get("classes")
    if given is not None:
        return [str(c) for c in given]
    names = list(dict.fromkeys(c for d in detections for c in d.probs))
    if names or any(d.label is not None for d in detections):
        return names
    return None


class CsvWriter:
    """Plain CSV with header ``x,y,score,area`` (x = column, y = row, px; area in px).

    After a second look (:func:`class_columns`) the header goes on with ``class`` (the
    detection's label, empty when none) and one ``p_<class>`` per class (probability, 6
    decimals; empty when the detection has none).
    """

    def __init__(self, decimals: int = 2, suffix: str = ".csv") -> None:
        self.decimals = decimals
        self.suffix = suffix

    def write(self, path: str | Path, detections: Sequence[Detection], info: dict[str, Any]) -> Path:
        path = Path(path)
        d = self.decimals
        classes = class_columns(detections, info)
        extra = [] if classes is None else ["class", *(f"p_{c}" for c in classes)]
        with replacing(path, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["x", "y", "score", "area", *extra])
            for det in detections:
                row = [round(det.x, d), round(det.y, d), round(det.score, 6), round(det.area, d)]
                if classes is not None:
                    row += [det.label or "", *(round(det.probs[c], 6) if c in det.probs else ""
                                               for c in classes)]
                w.writerow(row)
        return path

    @staticmethod
    def read(path: Path, mpp: float | None = None) -> np.ndarray:
        """``x,y[,score]`` with a header line starting ``x,y``; no score column gives 1.0."""
        out = [(v[0], v[1], v[2] if len(v) > 2 else 1.0)
               for v in number_rows(path, 3, header=("x", "y"), optional=1)]
        return np.asarray(out, np.float64).reshape(-1, 3)

    @staticmethod
    def scored(path: Path) -> bool:
        """Whether every data line has a score (a third field); ``x,y`` files carry none."""
        with Path(path).open(newline="") as fh:
            rows = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
        body = rows[1:] if rows and [c.strip().lower() for c in rows[0][:2]] == ["x", "y"] else rows
        return all(len(r) > 2 and r[2].strip() != "" for r in body)


class GeoJsonWriter:
    """GeoJSON FeatureCollection that QuPath (0.4+) imports as point detections.

    Each feature: ``geometry`` a GeoJSON ``Point`` ``[x, y]`` in px (QuPath's origin: top-left of
    the full-resolution image); ``properties.objectType = "detection"``;
    ``properties.classification = {"name": name, "color": [r, g, b]}`` (``name``: the
    writer's ``classification``, else ``info["label"]``, else :data:`DEFAULT_LABEL`);
    ``properties.measurements = {"score": s, "area_px": a}`` (a name -> number map, the layout
    QuPath writes and reads since 0.4). ``id`` is a UUID derived from image name and index,
    so the file is deterministic. A detection a second look labelled is named ``"<name>
    (<label>)"`` (e.g. ``"Cell (dividing)"``) and its ``probs`` become ``p_<class>``
    measurements. When ``info`` names the model (:data:`PROVENANCE`), the collection has
    top-level ``properties`` ``{"model": ..., "model_sha256": ...}`` (features unchanged;
    QuPath reads the features and ignores it).
    """

    def __init__(self, classification: str | None = None,
                 color: list[int] | tuple[int, int, int] = DEFAULT_COLOR,
                 object_type: str = "detection", suffix: str = ".geojson") -> None:
        if len(color) != 3:
            raise ValueError(f"color must be [r, g, b], got {color!r}")
        self.classification = classification
        self.color = [int(c) for c in color]
        self.object_type = object_type
        self.suffix = suffix

    def feature(self, det: Detection, image: str, index: int,
                label: str = DEFAULT_LABEL) -> dict[str, Any]:
        name = self.classification or label
        measurements = {"score": float(det.score), "area_px": float(det.area)}
        measurements.update({f"p_{c}": float(p) for c, p in det.probs.items()})
        return {
            "type": "Feature",
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"partsup:{image}:{index}")),
            "geometry": {"type": "Point", "coordinates": [float(det.x), float(det.y)]},
            "properties": {
                "objectType": self.object_type,
                "classification": {"name": name if det.label is None else
                                   f"{name} ({det.label})", "color": list(self.color)},
                "measurements": measurements,
            },
        }

    def write(self, path: str | Path, detections: Sequence[Detection], info: dict[str, Any]) -> Path:
        path = Path(path)
        image = str(info.get("image", path.stem))
        label = str(info.get("label") or DEFAULT_LABEL)
        doc: dict[str, Any] = {"type": "FeatureCollection"}
        made_by = {k: str(info[k]) for k in PROVENANCE if info.get(k)}
        if made_by:
            doc["properties"] = made_by
        doc["features"] = [self.feature(d, image, i, label) for i, d in enumerate(detections)]
        with replacing(path, "w") as fh:
            fh.write(json.dumps(doc, indent=1) + "\n")
        return path

    @staticmethod
    def read(path: Path, mpp: float | None = None) -> np.ndarray:
        """Point features ``[x, y]`` (px) with their ``score`` measurement (else 1.0)."""
        doc = load_json(path)
        if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
            raise DataError(f"{path}: expected a GeoJSON FeatureCollection")
        features = doc.get("features", [])
        if not isinstance(features, list):
            raise DataError(f"{path}: 'features' must be a list")
        out = [_geojson_feature(path, i, feat) for i, feat in enumerate(features)]
        return np.asarray(out, np.float64).reshape(-1, 3)

    @staticmethod
    def scored(path: Path) -> bool:
        doc = load_json(path)
        features = doc.get("features") if isinstance(doc, dict) else None
        return all(not isinstance(f, dict) or _measured_score(f) is not None
                   for f in features or [])

    @staticmethod
    def sniff(path: Path) -> bool:
        """A ``.json`` file holding a ``features`` object."""
        if path.suffix.lower() != ".json":
            return False
        doc = load_json(path)
        return isinstance(doc, dict) and "features" in doc


#: name -> factory; registered by :mod:`partsup.builtin`.
WRITERS: dict[str, Callable[..., Any]] = {
    "csv": CsvWriter,
    "geojson": GeoJsonWriter,
}


# -- reading back ------------------------------------------------------------------------------

def registered_writers() -> dict[str, Callable[..., Any]]:
    """``name -> factory`` of every writer registered by the loaded plugins (a fresh manager)."""
    from partsup.manager import load
    return {e.name: e.factory for e in load().writers.entries()}


def readable(writers: Mapping[str, Callable[..., Any]] | Any | None = None
             ) -> dict[str, Callable[..., Any]]:
    """The writers (a ``name -> factory`` mapping or a writer Registry; None: the registered
    ones) whose files can be read back, longest default suffix first (so ``_x.csv`` beats
    ``.csv``)."""
    if writers is None:
        factories = registered_writers()
    elif hasattr(writers, "entries"):
        factories = {e.name: e.factory for e in writers.entries()}
    else:
        factories = dict(writers)
    found = {n: f for n, f in factories.items() if callable(getattr(f, "read", None))}
    return dict(sorted(found.items(), key=lambda kv: -len(suffix_of(kv[1]))))


def suffix_of(factory: Callable[..., Any]) -> str:
    """The default file-name ending of a writer factory (``factory().suffix``)."""
    return str(factory().suffix)


def format_of(path: str | Path, writers: Any = None) -> str | None:
    """The readable format a file belongs to: by its name's suffix, else the first format whose
    ``sniff`` claims it by content; None when none does."""
    path = Path(path)
    formats = readable(writers)
    name = path.name.lower()
    for fmt, factory in formats.items():
        if name.endswith(suffix_of(factory).lower()):
            return fmt
    for fmt, factory in formats.items():
        sniff = getattr(factory, "sniff", None)
        if sniff is not None and sniff(path):
            return fmt
    return None


def locations(folder: Path, sample_id: str, writers: Any = None) -> list[Path]:
    """Files that may hold the detections of ``sample_id`` inside ``folder``, in order: the id
    (or its ``/`` as ``_``, ``__``, or its last part) with each readable suffix or ``.json``,
    then the formats' own ``locations``."""
    formats = readable(writers)
    parts = sample_id.split("/")
    stems = [sample_id, sample_id.replace("/", "_"), sample_id.replace("/", "__"), parts[-1]]
    suffixes = [suffix_of(f) for f in formats.values()] + [".json"]
    out = [folder / f"{s}{suffix}" for s in dict.fromkeys(stems) for suffix in suffixes]
    for factory in formats.values():
        more = getattr(factory, "locations", None)
        if more is not None:
            out.extend(more(folder, sample_id))
    return out


def _reader(path: Path, fmt: str | None, writers: Any) -> Callable[..., Any]:
    formats = readable(writers)
    fmt = fmt or format_of(path, formats)
    if fmt not in formats:
        known = ", ".join(sorted(formats))
        raise DataError(f"{path}: cannot tell the detection format from the name; "
                        f"pass one of {known}")
    return formats[fmt]


def read_detections(path: str | Path, fmt: str | None = None, mpp: float | None = None,
                    writers: Any = None) -> np.ndarray:
    """Read a detection file written by any readable registered writer.

    Args:
        path: the file.
        fmt: a writer name (``csv``, ``geojson``, or a plugin's format); None guesses from the
            file name and, failing that, from its content (:func:`format_of`).
        mpp: um/px of the image, for formats that store physical units.
        writers: the writers to choose from (a ``name -> factory`` mapping or a Registry);
            None: those the loaded plugins register.

    Returns:
        ``(K, 3)`` float64 ``x, y, score`` in pixels (x = column). Formats without a score
        give score 1.0.

    Raises:
        DataError: missing, unreadable or malformed file (names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: detection file not found")
    return _reader(path, fmt, writers).read(path, mpp)


def has_scores(path: str | Path, fmt: str | None = None, writers: Any = None) -> bool:
    """Whether every detection in a readable detection file carries its own score (the
    format's ``scored``; formats without one always do). An empty file counts as scored.
    ``fmt`` and ``writers`` as in :func:`read_detections`."""
    path = Path(path)
    scored = getattr(_reader(path, fmt, writers), "scored", None)
    return True if scored is None else bool(scored(path))


# -- helpers for readers -----------------------------------------------------------------------

def number_rows(path: Path, n: int, header: Sequence[str] = (),
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


def load_json(path: Path) -> Any:
    """The parsed JSON of ``path``; DataError naming the file when it is not valid JSON."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def json_number(value: Any) -> float:
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
        x, y = json_number(coords[0]), json_number(coords[1])
    except ValueError:
        raise DataError(f"{where}: a Point needs numeric 'coordinates' [x, y], "
                        f"got {coords!r}") from None
    score = _measured_score(feat)
    try:
        return x, y, 1.0 if score is None else json_number(score)
    except ValueError as exc:
        raise DataError(f"{where}: measurement 'score' must be a number ({exc})") from None
