"""The ``folder`` dataset: a user's own images with a points CSV and/or mask PNGs.

Registered by :mod:`partsup.builtin` from :data:`DATASETS`. Layout in :attr:`Folder.LAYOUT`.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from partsup.errors import DataError
from partsup.data.images import list_images
from partsup.data.readers import (Reader, Record, as_points, layout_and_source, log_summary, mask_centroids,
                                  mask_from_path)

_SPLIT_DIRS = ("train", "val", "test")


class Folder(Reader):
    """A user's images with points (``points.csv``) and/or strong masks (``masks/*.png``)."""

    NAME = "folder"
    LAYOUT = """\
<root>/images/<name>.png|tif|tiff|bmp|jpg   the images (any size, RGB, gray or 16-bit)
<root>/points.csv     optional; header row "image,x,y" (+ optional "label", "class"): image =
                      file name (or stem) in images/, x = column, y = row in pixels; label 1
                      (default) = object, 0 = hard negative (a labelled look-alike); class = the
                      object's class name (for crop classifiers; empty = not known)
<root>/masks/<name>.png   optional strong masks, same size as the image, non-zero = object;
                      an image without rows in points.csv gets its points from the mask's
                      8-connected components (centroids)
At least one of points.csv and masks/ is required.
Splits: with <root>/train, <root>/val, <root>/test folders (each in the layout above) a split is
its folder; without them the whole root is split train (or all)."""
    SOURCE = "your own images and annotations (nothing to download), arranged as above"

    def __init__(self, root: str | Path, split: str = "train", strict: bool = True,
                 mpp: float = 0.25, points: str = "points.csv", images: str = "images",
                 masks: str = "masks", check_images: bool = True,
                 edge_tolerance: float | None = None) -> None:
        super().__init__(root, split, strict, edge_tolerance)
        self._mpp, self.check_images = mpp, check_images
        base = self._split_root()
        image_dir, csv_path, mask_dir = base / images, base / points, base / masks
        if not image_dir.is_dir():
            raise self.missing_folder(image_dir, "image folder")
        if not csv_path.is_file() and not mask_dir.is_dir():
            raise DataError(f"{self.NAME}: neither {csv_path} nor {mask_dir} exists; give points "
                            f"and/or masks. {layout_and_source(self)}")
        files = list_images(image_dir)
        sizes = {f.name: self.header_size(f) if check_images else None for f in files}
        files = [f for f in files if not check_images or sizes[f.name] is not None]
        rows = self._read_points(csv_path, files, sizes) if csv_path.is_file() else {}
        for f in files:
            self._add(f, image_dir, mask_dir, rows.get(f.name, ([], [], [])), sizes[f.name])
        log_summary(self)

    def _split_root(self) -> Path:
        if any((self.root / d).is_dir() for d in _SPLIT_DIRS):
            if self.split == "all":
                raise DataError(f"{self.NAME}: split 'all' is not available when {self.root} has "
                                f"train/val/test folders; pick one of them")
            if not (self.root / self.split).is_dir():
                raise self.missing_folder(self.root / self.split, f"{self.split} folder")
            return self.root / self.split
        if self.split in ("val", "test"):
            raise self.missing_folder(self.root / self.split, f"{self.split} folder")
        return self.root

    def _read_points(self, path: Path, files: list[Path],
                     sizes: dict[str, Any]) -> dict[str, tuple[list, list, list]]:
        """``{file name: (points, hard negatives, point classes)}`` from ``points.csv``."""
        by_name = {f.name: f.name for f in files} | {f.stem: f.name for f in files}
        out: dict[str, tuple[list, list, list]] = {f.name: ([], [], []) for f in files}
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read ({exc})") from None
        reader = csv.DictReader(lines)
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        if not {"image", "x", "y"} <= set(header):
            raise DataError(f"{path}:1: header must name the columns image,x,y (got "
                            f"{','.join(header) or 'an empty file'})")
        reader.fieldnames = header
        n = 0
        for row in reader:  # line_num: the file's line (DictReader skips blank lines)
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue
            n += 1
            self._point_row(path, reader.line_num, row, by_name, sizes, out)
        if n == 0:
            self.problems.report(f"{path}: empty label file (header only)")
        return out

    def _point_row(self, path: Path, lineno: int, row: dict[str, Any], by_name: dict[str, str],
                   sizes: dict[str, Any], out: dict[str, tuple[list, list, list]]) -> None:
        where = f"{path}:{lineno}"
        missing = [k for k in ("image", "x", "y") if row.get(k) is None]
        if missing:  # DictReader fills the columns a short line lacks with None
            n = sum(v is not None for k, v in row.items() if k is not None)
            self.problems.report(f"{where}: malformed line: expected image,x,y ({n} field"
                                 f"{'' if n == 1 else 's'}, no {', '.join(missing)})")
            return
        try:
            name = (row.get("image") or "").strip()
            x, y = float(row["x"]), float(row["y"])
            label = int(float(row.get("label") or 1))
            if label not in (0, 1):
                raise ValueError(f"label must be 1 (object) or 0 (hard negative), got {label}")
        except (TypeError, ValueError) as exc:
            self.problems.report(f"{where}: malformed line ({exc})")
            return
        if name not in by_name:
            self.problems.report(f"{where}: image {name!r} not found in the image folder")
            return
        fname = by_name[name]
        xy = self.check_inside((x, y), sizes.get(fname), where)
        if xy is not None:
            out[fname][0 if label == 1 else 1].append(xy)
            if label == 1:
                out[fname][2].append((row.get("class") or "").strip())

    def _add(self, f: Path, image_dir: Path, mask_dir: Path, rows: tuple[list, list, list],
             size: tuple[int, int] | None) -> None:
        mask_path = mask_dir / f"{f.stem}.png"
        has_mask = mask_path.is_file()
        pts = as_points(rows[0])
        if not rows[0] and has_mask:
            try:
                mask = mask_from_path(mask_path)
            except DataError as exc:
                self.problems.report(str(exc))
                return
            if size is not None and mask.shape != size:
                self.problems.report(_size_mismatch(mask_path, mask.shape, size))
                return
            pts = mask_centroids(mask)
        self.records.append(Record(id=f.relative_to(image_dir).with_suffix("").as_posix(),
                                   group=f.stem, image_path=f, points=pts,
                                   hard_negatives=as_points(rows[1]), mpp=self._mpp, size=size,
                                   extra={"mask": mask_path if has_mask else None},
                                   point_labels=tuple(rows[2]) if any(rows[2]) else ()))

    def load_mask(self, record: Record, shape: tuple[int, int]) -> np.ndarray | None:
        path = record.extra.get("mask")
        if path is None:
            return None
        mask = mask_from_path(path)
        if mask.shape != shape:
            raise DataError(_size_mismatch(path, mask.shape, shape))
        return mask


def _size_mismatch(path: Path, mask: tuple[int, ...], image: tuple[int, ...]) -> str:
    return (f"{path}: mask is {mask[0]}x{mask[1]} but its image is {image[0]}x{image[1]} "
            f"(HxW)")


DATASETS = {"folder": Folder}
