"""Reader of MIDOG 2021 / 2022 / MIDOG++ (``midog``): a COCO-like JSON (bbox = [x1, y1, x2, y2]),
category 1 mitosis, 2 hard negative. Shared conventions: see :mod:`partsup_mitosis.readers`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from partsup.plugin import (DataError, Reader, Record, as_points, floats, layout_and_source,
                            log_summary)

class MIDOG(Reader):
    """MIDOG JSON (COCO-like, bbox = [x1, y1, x2, y2]); category 1 mitosis, 2 hard negative."""

    NAME = "midog"
    POINTS = "mitoses"  # the column title of `partsup datasets --root`
    edge_tolerance = 25.0  # half a 50 px box: the real MIDOG++ file has centres a few px outside
    LAYOUT = """\
<root>/<annotations>.json   COCO-like: images [{id, file_name, width, height, tumor_type?}],
                            annotations [{image_id, bbox: [x1, y1, x2, y2], category_id}];
                            category 1 = mitotic figure, 2 = hard negative (not mitotic figure);
                            point = box centre ((x1+x2)/2, (y1+y2)/2)
<root>/<file_name>          the images (.tiff, ~0.25 um/px); needed only when an image is read
root may also be the .json file itself (images then beside it, or in images=<folder>).
Splits (no official one): per tumour type, a seeded permutation of the images gives
test_fraction (0.15) test, val_fraction (0.15) val, the rest train; all = every image."""
    SOURCE = ("MIDOG++ (Aubreville et al., Sci Data 2023): figshare collection "
              "https://doi.org/10.6084/m9.figshare.c.6615571 (images and MIDOG++.json); the "
              "MIDOG 2021 training set: https://doi.org/10.5281/zenodo.4643381")

    def __init__(self, root: str | Path, split: str = "train", strict: bool = True,
                 annotations: str | None = None, images: str | None = None,
                 val_fraction: float = 0.15, test_fraction: float = 0.15, split_seed: int = 0,
                 tumor_types: Sequence[str] | None = None, mpp: float = 0.25,
                 mitosis_category: int = 1, negative_category: int = 2,
                 edge_tolerance: float | None = None) -> None:
        super().__init__(root, split, strict, edge_tolerance)
        self.json_path = self._find_json(annotations)
        image_dir = Path(images).expanduser() if images else self.json_path.parent
        if images and not image_dir.is_absolute():
            image_dir = self.json_path.parent / image_dir
        if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
            raise DataError(f"{self.NAME}: val_fraction + test_fraction must be in [0, 1)")
        data = self._load_json()
        imgs = self._images(data)
        self._known_ids = set(imgs)
        if tumor_types is not None:
            imgs = {k: v for k, v in imgs.items() if v.get("tumor_type") in set(tumor_types)}
        chosen = self._split_ids(imgs, split, val_fraction, test_fraction, split_seed)
        pts: dict[int, list] = {i: [] for i in chosen}
        negs: dict[int, list] = {i: [] for i in chosen}
        for k, ann in enumerate(data.get("annotations", [])):
            self._annotation(k, ann, imgs, pts, negs, mitosis_category, negative_category)
        for iid in chosen:
            info = imgs[iid]
            name = str(info["file_name"])
            self.records.append(Record(
                id=Path(name).with_suffix("").as_posix(), group=Path(name).stem,
                image_path=image_dir / name, points=as_points(pts[iid]),
                hard_negatives=as_points(negs[iid]), mpp=mpp,
                size=(int(info["height"]), int(info["width"])),
                extra={"image_id": iid, "tumor_type": info.get("tumor_type", "")}))
        log_summary(self)

    def _find_json(self, annotations: str | None) -> Path:
        if self.root.is_file():
            return self.root
        if annotations:
            p = Path(annotations).expanduser()
            p = p if p.is_absolute() else self.root / p
            if not p.is_file():
                raise self.missing_folder(p, "annotation file")
            return p
        found = sorted(self.root.glob("*.json"))
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise DataError(f"{self.NAME}: {what} .json files in {self.root}; name the "
                            f"annotation file with annotations=<file>. "
                            f"{layout_and_source(self)}")
        return found[0]

    def _load_json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.json_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{self.json_path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{self.json_path}: cannot read ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DataError(f"{self.json_path}: not a COCO-like MIDOG file (no 'images' list)")
        return data

    def _images(self, data: dict[str, Any]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for k, info in enumerate(data["images"]):
            try:
                iid = int(info["id"])
                int(info["width"]), int(info["height"]), str(info["file_name"])
            except (KeyError, TypeError, ValueError) as exc:
                self.problems.report(f"{self.json_path}: images[{k}]: malformed entry "
                                     f"(needs id, file_name, width, height; {exc!r})")
                continue
            out[iid] = info
        return out

    def _split_ids(self, imgs: dict[int, dict[str, Any]], split: str, val_fraction: float,
                   test_fraction: float, seed: int) -> list[int]:
        if split == "all":
            return sorted(imgs)
        strata: dict[str, list[int]] = {}
        for iid in sorted(imgs):
            strata.setdefault(str(imgs[iid].get("tumor_type", "")), []).append(iid)
        chosen: list[int] = []
        for n_stratum, key in enumerate(sorted(strata)):
            ids = strata[key]
            perm = np.random.default_rng([seed, n_stratum]).permutation(len(ids))
            n_test = int(round(test_fraction * len(ids)))
            n_val = int(round(val_fraction * len(ids)))
            part = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val],
                    "train": perm[n_test + n_val:]}[split]
            chosen.extend(ids[i] for i in part)
        return sorted(chosen)

    def _annotation(self, k: int, ann: Any, imgs: dict[int, dict[str, Any]],
                    pts: dict[int, list], negs: dict[int, list], pos_cat: int,
                    neg_cat: int) -> None:
        where = f"{self.json_path}: annotations[{k}]" + \
            (f" (id {ann.get('id')})" if isinstance(ann, dict) and "id" in ann else "")
        try:
            iid, cat = int(ann["image_id"]), int(ann["category_id"])
            bbox = ann["bbox"]
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                raise ValueError(f"bbox must be 4 numbers [x1, y1, x2, y2], got {bbox!r}")
            x1, y1, x2, y2 = floats([str(v) for v in bbox])
            if x2 < x1 or y2 < y1:
                raise ValueError("expected bbox [x1, y1, x2, y2] with x2 >= x1, y2 >= y1")
        except (KeyError, TypeError, ValueError) as exc:
            self.problems.report(f"{where}: malformed annotation ({exc})")
            return
        if iid not in self._known_ids:
            self.problems.report(f"{where}: unknown image_id {iid}")
            return
        if iid not in pts:  # an image of another split or tumour type
            return
        target = pts if cat == pos_cat else negs if cat == neg_cat else None
        if target is None:
            self.problems.report(f"{where}: unknown category_id {cat} (expected {pos_cat} "
                                 f"mitosis or {neg_cat} hard negative)")
            return
        centre = ((x1 + x2) / 2.0, (y1 + y2) / 2.0)
        info = imgs[iid]
        xy = self.check_inside(centre, (int(info["height"]), int(info["width"])), where)
        if xy is not None:
            target[iid].append(xy)

