"""The AMi-Br crops on disk: ``metadata.csv`` (one :class:`Figure` per crop), the crop files it
names, and the default root ``$PARTSUP_DATA/ami-br``."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from partsup.plugin import DataError, Problems

#: the environment variable whose folder holds the datasets (``$PARTSUP_DATA/ami-br``)
DATA_ENV = "PARTSUP_DATA"
#: the dataset's name, and its folder under ``$PARTSUP_DATA``
NAME = "ami-br"
#: the header ``metadata.csv`` must have
COLUMNS = ("file", "source", "label", "slide", "x", "y")


@dataclass(frozen=True)
class Figure:
    """One annotated figure: its crop file, slide, label and slide coordinates (px)."""

    index: int
    file: str
    source: str
    label: str
    slide: str
    x: float
    y: float


def default_root() -> Path:
    """``$PARTSUP_DATA/ami-br``; DataError (one line naming ``root`` and the variable) when the
    variable is not set."""
    base = os.environ.get(DATA_ENV, "").strip()
    if not base:
        raise DataError(f"{NAME}: no root given and {DATA_ENV} is not set; pass "
                        f"root=<folder> (a recipe's data root, or --data-root) or set {DATA_ENV} "
                        f"so that ${DATA_ENV}/{NAME} holds the crops")
    return Path(base).expanduser() / NAME


def resolve_root(root: str | Path | None, name: str, layout: str) -> Path:
    """``root`` (default :func:`default_root`) when it holds ``metadata.csv``; else DataError
    naming the reader ``name`` and showing its ``layout``."""
    p = default_root() if root is None else Path(root).expanduser()
    if not (p / "metadata.csv").is_file():
        raise DataError(f"{name}: {p / 'metadata.csv'} not found. "
                        f"Expected layout:\n{layout}")
    return p


def read_metadata(root: Path, problems: Problems) -> list[Figure]:
    """Every usable figure of ``root/metadata.csv``, indexed in file order (malformed lines and
    missing crops are reported through ``problems``: raised when strict, else skipped)."""
    path = root / "metadata.csv"
    figs: list[Figure] = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{path}:1: header lacks {', '.join(sorted(missing))} "
                            f"(expected file,source,label,slide,x,y)")
        for lineno, row in enumerate(reader, start=2):
            try:
                fig = Figure(len(figs), row["file"], row["source"], row["label"],
                             row["slide"], float(row["x"]), float(row["y"]))
                if not (fig.file and fig.slide):
                    raise ValueError("empty file or slide")
            except (TypeError, ValueError) as exc:
                problems.report(f"{path}:{lineno}: malformed line ({exc})")
                continue
            if not (root / fig.file).is_file():
                problems.report(f"{path}:{lineno}: crop {root / fig.file} not found")
                continue
            figs.append(fig)
    if not figs:
        raise DataError(f"{path}: no usable crop")
    return figs


def read_crop(root: Path, f: Figure, crop: int) -> np.ndarray:
    """The ``(crop, crop, 3)`` uint8 RGB centre cut of figure ``f``'s crop file (the figure at
    ``(crop // 2, crop // 2)``); DataError when it cannot be read or is smaller."""
    from PIL import Image
    path = root / f.file
    try:
        with Image.open(path) as im:
            full = np.asarray(im.convert("RGB"))
    except Exception as exc:
        raise DataError(f"{path}: cannot read crop ({type(exc).__name__}: {exc})") from exc
    if full.shape[0] < crop or full.shape[1] < crop:
        raise DataError(f"{path}: crop is {full.shape[0]}x{full.shape[1]} px, smaller than "
                        f"crop={crop}")
    cy0, cx0 = (full.shape[0] - crop) // 2, (full.shape[1] - crop) // 2
    return np.ascontiguousarray(full[cy0:cy0 + crop, cx0:cx0 + crop])
