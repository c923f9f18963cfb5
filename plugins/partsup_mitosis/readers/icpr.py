"""Readers of the two MITOS challenges, each in its exact published layout: ``icpr2012`` (MITOS
2012, per-mitosis pixel lists) and ``icpr2014`` (MITOS-ATYPIA-14, mitoses and hard negatives as
``x,y,confidence`` lines). Shared conventions: see :mod:`partsup_mitosis.readers`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from partsup.plugin import (DataError, Reader, Record, as_points, floats, group_split, list_images,
                            log_summary, read_csv_rows)

#: micrometres per pixel by scanner letter (first letter of the case / slide name)
ICPR2012_MPP = {"A": 0.2456, "H": 0.2273}
ICPR2014_MPP = {"A": 0.2455, "H": 0.2273}
#: MITOS-ATYPIA-14 training cases of the paper (PartMitosis, like SegMitos); A03 is validation
ICPR2014_TRAIN_CASES = ("A04", "A05", "A07", "A10", "A11", "A12", "A14")

log = logging.getLogger(__name__)


def _scanner_mpp(table: dict[str, float], name: str, default: float) -> float:
    return table.get(name[:1].upper(), default)


# -- ICPR 2012 ------------------------------------------------------------------------------

class ICPR2012(Reader):
    """MITOS (ICPR 2012): HPFs with one CSV per image, one line per mitosis = its pixel list."""

    NAME = "icpr2012"
    POINTS = "mitoses"  # the column title of `partsup datasets --root`
    LAYOUT = """\
<root>/train/**/<hpf>.bmp   training HPFs (2084x2084; scanner A 0.2456 um/px, H 0.2273 um/px)
<root>/train/**/<hpf>.csv   one line per mitosis listing every pixel of its mask:
                            x1,y1,x2,y2,... (x = column, y = row); centroid = mean of the pixels
<root>/test/**/<hpf>.bmp    test HPFs, with their .csv beside them (same format)
Without train/ and test/ folders, every image under <root> is one pool (split train or all).
Splits: train, test, all; val = train images of the slides in val_groups (default none).
Group (slide) = the file name before its last '_' (A00_01 -> A00)."""
    SOURCE = ("MITOS dataset of the ICPR 2012 mitosis detection contest (Roux et al., "
              "J Pathol Inform 2013), from the contest organisers' page "
              "http://ludo17.free.fr/mitos_2012/")

    def __init__(self, root: str | Path, split: str = "train", strict: bool = True,
                 val_groups: Sequence[str] = (), mpp: float | None = None,
                 allow_empty: bool = False, check_images: bool = True,
                 edge_tolerance: float | None = None) -> None:
        super().__init__(root, split, strict, edge_tolerance)
        self.val_groups = list(val_groups)
        self._mpp, self.allow_empty, self.check_images = mpp, allow_empty, check_images
        if split == "val" and not self.val_groups:
            raise DataError(f"{self.NAME}: the dataset has no validation split; name the "
                            f"validation slides with val_groups (e.g. [A04])")
        for folder in self._folders():
            for img in list_images(folder, recursive=True):
                group = img.stem.rsplit("_", 1)[0] if "_" in img.stem else img.parent.name
                if self._wanted(group, folder.name):
                    self._scan_image(img, folder, group)
        log_summary(self)

    def _folders(self) -> list[Path]:
        has_split_dirs = (self.root / "train").is_dir() or (self.root / "test").is_dir()
        if not has_split_dirs:
            if self.split == "test":
                raise self.missing_folder(self.root / "test", "test folder")
            return [self.root]
        names = {"train": ["train"], "val": ["train"], "test": ["test"], "all": ["train", "test"]}
        folders = [self.root / n for n in names[self.split] if (self.root / n).is_dir()]
        if not folders:
            raise self.missing_folder(self.root / names[self.split][0], f"{self.split} folder")
        return folders

    def _wanted(self, group: str, folder: str) -> bool:
        if self.split in ("all", "test"):
            return True
        in_val = group in self.val_groups
        return in_val if self.split == "val" else not in_val

    def _scan_image(self, img: Path, folder: Path, group: str) -> None:
        size = self.header_size(img) if self.check_images else None
        if self.check_images and size is None:
            return
        csv_path = img.with_suffix(".csv")
        if not csv_path.is_file():
            self.problems.report(f"{csv_path}: label file not found (expected beside {img.name})")
            return
        rows = read_csv_rows(csv_path, self.problems, 2, parse=_pixel_list,
                             allow_empty=self.allow_empty) or []
        masks, centroids = [], []
        for lineno, pix in rows:
            if size is not None and not _inside(pix, size).all():
                self.problems.report(f"{csv_path}:{lineno}: mask pixels lie outside the "
                                     f"{size[0]}x{size[1]} (HxW) image")
                continue
            masks.append(pix)
            centroids.append(pix.mean(axis=0))
        mpp = self._mpp or _scanner_mpp(ICPR2012_MPP, group, 0.2456)
        rel = img.relative_to(folder).with_suffix("").as_posix()
        self.records.append(Record(id=rel, group=group, image_path=img, points=as_points(centroids),
                                   mpp=mpp, size=size, extra={"pixels": masks}))

    def load_mask(self, record: Record, shape: tuple[int, int]) -> np.ndarray:
        """``(H, W)`` uint8 mask: 1 on every listed pixel (outside pixels are dropped)."""
        mask = np.zeros(shape, np.uint8)
        for pix in record.extra.get("pixels", []):
            xy = np.rint(pix).astype(np.int64)
            ok = _inside(xy, shape)
            mask[xy[ok, 1], xy[ok, 0]] = 1
        return mask


def _pixel_list(fields: list[str]) -> np.ndarray:
    vals = floats([f for f in fields if f != ""])
    if len(vals) % 2:
        raise ValueError(f"odd number of values ({len(vals)}); expected x,y pairs")
    return np.asarray(vals, np.float32).reshape(-1, 2)


def _inside(xy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(N,)`` bool: which x, y pixels lie in an image of ``size`` (H, W)."""
    h, w = size
    return (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)


# -- ICPR 2014 (MITOS-ATYPIA-14) ------------------------------------------------------------

class ICPR2014(Reader):
    """MITOS-ATYPIA-14: x40 frames; mitoses and hard negatives as ``x,y,confidence`` CSV lines."""

    NAME = "icpr2014"
    POINTS = "mitoses"  # the column title of `partsup datasets --root`
    LAYOUT = """\
<root>/<case>/frames/x40/<frame>.tiff           x40 frames (1539x1376), e.g. A03/frames/x40/A03_00Aa.tiff
<root>/<case>/mitosis/<frame>_mitosis.csv       lines x,y,confidence (x = column): mitoses
<root>/<case>/mitosis/<frame>_not_mitosis.csv   lines x,y,confidence: hard negatives
Scanner by case letter: A (Aperio) 0.2455 um/px, H (Hamamatsu) 0.2273 um/px.
Splits by case: train = train_cases (default A04 A05 A07 A10 A11 A12 A14, the paper's; null =
every case not in val/test), val = val_cases (default [A03], the paper's), test = test_cases
(default none: point root at the test release and use split all), all = every case. A case in
none of the lists (e.g. the Hamamatsu twins H03...) is read only by split all.
An empty CSV means no annotation in that frame."""
    SOURCE = ("MITOS-ATYPIA-14 challenge (ICPR 2014), from its website "
              "https://mitos-atypia-14.grand-challenge.org/ (Dataset page)")

    def __init__(self, root: str | Path, split: str = "train", strict: bool = True,
                 train_cases: Sequence[str] | None = ICPR2014_TRAIN_CASES,
                 val_cases: Sequence[str] = ("A03",), test_cases: Sequence[str] = (),
                 min_confidence: float = 0.0, mpp: float | None = None,
                 allow_empty: bool = True, check_images: bool = True,
                 edge_tolerance: float | None = None) -> None:
        super().__init__(root, split, strict, edge_tolerance)
        self.train_cases = None if train_cases is None else list(train_cases)
        self.val_cases, self.test_cases = list(val_cases), list(test_cases)
        self.min_confidence, self._mpp = min_confidence, mpp
        self.allow_empty, self.check_images = allow_empty, check_images
        self._check_case_lists()
        cases = sorted(p.name for p in self.root.iterdir() if (p / "frames" / "x40").is_dir())
        if not cases:
            raise self.missing_folder(self.root / "<case>" / "frames" / "x40", "case folders")
        chosen = group_split(cases, split, self.val_cases, self.test_cases,
                             train=self.train_cases)
        if not chosen:
            raise DataError(f"{self.NAME}: split {split!r} selects no case under {self.root} "
                            f"(cases: {', '.join(cases)}; train_cases={self.train_cases}, "
                            f"val_cases={self.val_cases}, test_cases={self.test_cases})")
        self._warn_unlisted(cases)
        for case in chosen:
            for frame in list_images(self.root / case / "frames" / "x40"):
                self._scan_frame(case, frame)
        log_summary(self)

    def _check_case_lists(self) -> None:
        """Split train must not read a case that val_cases or test_cases name (a leak)."""
        if self.split != "train" or self.train_cases is None:
            return
        for key, other in (("val_cases", self.val_cases), ("test_cases", self.test_cases)):
            both = sorted(set(self.train_cases) & set(other))
            if both:
                raise DataError(f"{self.NAME}: case(s) {', '.join(both)} listed in both "
                                f"train_cases and {key}")

    def _warn_unlisted(self, cases: Sequence[str]) -> None:
        """Log the cases that no split list names (only split all reads them)."""
        if self.train_cases is None or self.split == "all":
            return
        listed = set(self.train_cases) | set(self.val_cases) | set(self.test_cases)
        unlisted = [c for c in cases if c not in listed]
        if unlisted:
            log.warning("%s: case(s) %s under %s are in none of train_cases / val_cases / "
                        "test_cases and are not used by split %s (only split all reads them)",
                        self.NAME, ", ".join(unlisted), self.root, self.split)

    def _scan_frame(self, case: str, frame: Path) -> None:
        size = self.header_size(frame) if self.check_images else None
        if self.check_images and size is None:
            return
        folder = self.root / case / "mitosis"
        pts = self._read_points(folder / f"{frame.stem}_mitosis.csv", size, self.min_confidence)
        negs = self._read_points(folder / f"{frame.stem}_not_mitosis.csv", size, None)
        if pts is None or negs is None:
            return
        self.records.append(Record(id=f"{case}/{frame.stem}", group=case, image_path=frame,
                                   points=pts, hard_negatives=negs, size=size,
                                   mpp=self._mpp or _scanner_mpp(ICPR2014_MPP, case, 0.2455)))

    def _read_points(self, path: Path, size: tuple[int, int] | None,
                     min_conf: float | None) -> np.ndarray | None:
        if not path.is_file():
            self.problems.report(f"{path}: label file not found")
            return None
        rows = read_csv_rows(path, self.problems, 2, parse=floats,
                             allow_empty=self.allow_empty) or []
        keep = []
        for lineno, vals in rows:
            if min_conf is not None and len(vals) >= 3 and vals[2] < min_conf:
                continue
            xy = self.check_inside((vals[0], vals[1]), size, f"{path}:{lineno}")
            if xy is not None:
                keep.append(xy)
        return as_points(keep)

