"""The mitosis challenges' detection formats, registered through ``partsup_register_writers``
and read back by :func:`partsup.output.writers.read_detections` (each writer's ``read``).

============  ==================  ======================================================
name          suffix              content
============  ==================  ======================================================
tupac         ``.tupac.csv``      ``row,col`` per line, no header (AMIDA13/TUPAC16 layout)
mitos-atypia  ``_mitosis.csv``    ``x,y,confidence`` per line, no header (MITOS-ATYPIA-14)
midog         ``.midog.json``     grand-challenge "Multiple points", points in mm
============  ==================  ======================================================
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from partsup.plugin import DataError, Detection, json_number, load_json, number_rows, prepare


def _mm(px: float, mpp: float) -> float:
    """Pixels -> millimetres: ``px * mpp / 1000``."""
    return float(px) * float(mpp) / 1000.0


class TupacWriter:
    """AMIDA13 / TUPAC16 layout: one ``row,col`` (y, x; integer px) per line, no header.

    With ``score=True`` a third column carries the score (the ground-truth files have none).
    """

    def __init__(self, score: bool = False, suffix: str = ".tupac.csv") -> None:
        self.score = score
        self.suffix = suffix

    def write(self, path: str | Path, detections: Sequence[Detection], info: dict[str, Any]) -> Path:
        path = prepare(path)
        lines = []
        for det in detections:
            row = f"{int(round(det.y))},{int(round(det.x))}"
            lines.append(f"{row},{det.score:.6f}" if self.score else row)
        path.write_text("".join(line + "\n" for line in lines))
        return path

    @staticmethod
    def read(path: Path, mpp: float | None = None) -> np.ndarray:
        out = [(v[1], v[0], v[2] if len(v) > 2 else 1.0) for v in number_rows(path, 3, optional=1)]
        return np.asarray(out, np.float64).reshape(-1, 3)

    @staticmethod
    def scored(path: Path) -> bool:
        """Only with the optional third column on every line."""
        return all(len(v) > 2 for v in number_rows(path, 3, optional=1))


class MitosAtypiaWriter:
    """MITOS-ATYPIA-14 layout: ``x,y,confidence`` per line (x = column; integer px), no header."""

    def __init__(self, suffix: str = "_mitosis.csv") -> None:
        self.suffix = suffix

    def write(self, path: str | Path, detections: Sequence[Detection], info: dict[str, Any]) -> Path:
        path = prepare(path)
        path.write_text("".join(f"{int(round(d.x))},{int(round(d.y))},{d.score:.6f}\n"
                                for d in detections))
        return path

    @staticmethod
    def read(path: Path, mpp: float | None = None) -> np.ndarray:
        return np.asarray(number_rows(path, 3), np.float64).reshape(-1, 3)

    @staticmethod
    def locations(folder: Path, sample_id: str) -> list[Path]:
        """The challenge's own layout: ``<case>/mitosis/<frame>_mitosis.csv``."""
        parts = sample_id.split("/")
        if len(parts) < 2:
            return []
        return [folder.joinpath(*parts[:-1], "mitosis", f"{parts[-1]}_mitosis.csv")]


class MidogWriter:
    """MIDOG (grand-challenge) "Multiple points" JSON with points in millimetres.

    Each point is ``{"name": "mitotic figure", "point": (x_mm, y_mm, 0), "probability": p}``
    (a JSON list), ``mm = px * mpp / 1000``. With ``metadata=True`` a ``"partsup"`` key records image name,
    size and mpp so :func:`partsup.output.writers.read_detections` can convert back without being told the mpp
    (off by default: the challenge file stays exactly in its published shape).
    """

    def __init__(self, name: str = "mitotic figure", metadata: bool = False,
                 suffix: str = ".midog.json") -> None:
        self.name = name
        self.metadata = metadata
        self.suffix = suffix

    def write(self, path: str | Path, detections: Sequence[Detection], info: dict[str, Any]) -> Path:
        path = prepare(path)
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

    @staticmethod
    def read(path: Path, mpp: float | None = None) -> np.ndarray:
        return _read_midog(path, load_json(path), mpp)

    @staticmethod
    def scored(path: Path) -> bool:
        doc = load_json(path)
        points = doc.get("points") if isinstance(doc, dict) else None
        return all(not isinstance(p, dict) or "probability" in p for p in points or [])

    @staticmethod
    def sniff(path: Path) -> bool:
        """A ``.json`` file holding a ``points`` list."""
        if path.suffix.lower() != ".json":
            return False
        doc = load_json(path)
        return isinstance(doc, dict) and isinstance(doc.get("points"), list)


#: name -> factory; registered by :mod:`partsup_mitosis`.
WRITERS: dict[str, Callable[..., Any]] = {
    "tupac": TupacWriter,
    "mitos-atypia": MitosAtypiaWriter,
    "midog": MidogWriter,
}


def _midog_point(path: Path, i: int, p: Any, scale: float) -> tuple[float, float, float]:
    """``(x, y, score)`` in px of point ``i`` (mm times ``scale``); DataError naming the index."""
    if not isinstance(p, dict):
        raise DataError(f"{path}: point {i} is not a JSON object (got {type(p).__name__})")
    try:
        x, y = json_number(p["point"][0]), json_number(p["point"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        raise DataError(f"{path}: point {i} has no [x, y, z] 'point'") from None
    try:
        score = json_number(p.get("probability", 1.0))
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
