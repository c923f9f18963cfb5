"""Writers of synthetic images into the real datasets' on-disk layouts (:data:`LAYOUTS`: one
:class:`Layout` per registered reader ``icpr2012``, ``icpr2014``, ``amida13``, ``midog``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from partsup_mitosis.synth.styles import SynthImage


def _write_csv(path: Path, rows: list[list[float | int]], fmt: str = "{:g}") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(",".join(fmt.format(v) for v in r) + "\n" for r in rows))


def _save_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".tif", ".tiff"):
        import tifffile
        tifffile.imwrite(path, image, photometric="rgb")
    else:
        from PIL import Image
        Image.fromarray(image).save(path)


class Layout:
    """Writes one style's images into the real layout; ``specs`` gives the reader options of
    each split, ``finish`` writes the whole-dataset files."""

    reader = ""

    def __init__(self, root: Path, sizes: dict[str, int]) -> None:
        self.root, self.sizes = root, sizes
        self.count: dict[str, int] = {}

    def next_index(self, split: str) -> int:
        k = self.count.get(split, 0)
        self.count[split] = k + 1
        return k

    def write(self, split: str, im: SynthImage, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def specs(self) -> dict[str, dict]:
        names = [s for s, n in self.sizes.items() if n] + ["all"]
        return {s: {"name": self.reader, "root": str(self.root), "split": s} for s in names}

    def finish(self) -> None:
        """Write any whole-dataset file (e.g. the MIDOG JSON)."""


class ICPR2012Layout(Layout):
    """``train/<slide>_<k>.bmp`` + ``.csv`` (mask pixel lists); val = slide A04 in train/."""

    reader = "icpr2012"
    TRAIN_SLIDES, VAL_SLIDE = ("A00", "A01", "A02", "A03"), "A04"

    def write(self, split: str, im: SynthImage, rng: np.random.Generator) -> None:
        k = self.next_index(split)
        if split == "val":
            folder, slide = "train", self.VAL_SLIDE
        else:
            folder = split
            slides = self.TRAIN_SLIDES + (self.VAL_SLIDE,) if split == "test" else self.TRAIN_SLIDES
            slide = slides[k % len(slides)]
        stem = f"{slide}_{k:02d}" if split != "test" else f"{slide}_{50 + k:02d}"
        _save_image(self.root / folder / f"{stem}.bmp", im.image)
        rows = [pix.ravel().tolist() for pix in im.masks()]
        _write_csv(self.root / folder / f"{stem}.csv", rows, "{:d}")

    def specs(self) -> dict[str, dict]:
        out = super().specs()
        for spec in out.values():
            spec["allow_empty"] = True  # an image without mitoses has an empty CSV
            if self.sizes.get("val") and spec["split"] != "all":
                spec["val_groups"] = [self.VAL_SLIDE]
        return out


class ICPR2014Layout(Layout):
    """``<case>/frames/x40/<frame>.tiff`` + ``<case>/mitosis/<frame>_(not_)mitosis.csv``."""

    reader = "icpr2014"
    CASES = {"train": ("A04", "A05", "A07", "A10", "A11", "A12", "A14"), "val": ("A03",),
             "test": ("A06", "A08", "A09")}

    def write(self, split: str, im: SynthImage, rng: np.random.Generator) -> None:
        k = self.next_index(split)
        cases = self.CASES[split]
        case, j = cases[k % len(cases)], k // len(cases)
        frame = f"{case}_{j // 16:02d}{'ABCD'[(j // 4) % 4]}{'abcd'[j % 4]}"
        _save_image(self.root / case / "frames" / "x40" / f"{frame}.tiff", im.image)
        pos = [[round(float(x)), round(float(y)), 1.0] for x, y in im.points]
        neg = [[round(float(x)), round(float(y)), round(float(rng.uniform(0.5, 1.0)), 2)]
               for x, y in im.mimics]
        _write_csv(self.root / case / "mitosis" / f"{frame}_mitosis.csv", pos)
        _write_csv(self.root / case / "mitosis" / f"{frame}_not_mitosis.csv", neg)

    def specs(self) -> dict[str, dict]:
        out = super().specs()
        for spec in out.values():
            spec["val_cases"] = list(self.CASES["val"])
            spec["test_cases"] = list(self.CASES["test"])
        return out


class AMIDA13Layout(Layout):
    """``mitoses_image_data/<case>/<tile>.tif`` + ``mitoses_ground_truth/<case>/<tile>.csv``."""

    reader = "amida13"
    CASES = {"train": tuple(f"{i:02d}" for i in range(1, 11)), "val": ("11", "12"),
             "test": tuple(f"{i:02d}" for i in range(13, 24))}

    def write(self, split: str, im: SynthImage, rng: np.random.Generator) -> None:
        k = self.next_index(split)
        cases = self.CASES[split]
        case, tile = cases[k % len(cases)], f"{k // len(cases) + 1:02d}"
        _save_image(self.root / "mitoses_image_data" / case / f"{tile}.tif", im.image)
        (self.root / "mitoses_ground_truth" / case).mkdir(parents=True, exist_ok=True)
        if len(im.points):  # no CSV = no mitosis
            rows = [[round(float(y)), round(float(x))] for x, y in im.points]
            _write_csv(self.root / "mitoses_ground_truth" / case / f"{tile}.csv", rows, "{:d}")


class MIDOGLayout(Layout):
    """``MIDOG.json`` (COCO-like, bbox [x1, y1, x2, y2], 50x50) + ``<id>.tiff`` beside it."""

    reader = "midog"

    def __init__(self, root: Path, sizes: dict[str, int]) -> None:
        super().__init__(root, sizes)
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def write(self, split: str, im: SynthImage, rng: np.random.Generator) -> None:
        iid = len(self.images) + 1
        name = f"{iid:03d}.tiff"
        _save_image(self.root / name, im.image)
        h, w = im.image.shape[:2]
        self.images.append({"license": 1, "file_name": name, "id": iid, "width": w, "height": h,
                            "tumor_type": "synthetic breast cancer"})
        for cat, pts in ((1, im.points), (2, im.mimics)):
            for x, y in pts:
                cx, cy = round(float(x)), round(float(y))
                self.annotations.append({"bbox": [cx - 25, cy - 25, cx + 25, cy + 25],
                                         "category_id": cat, "image_id": iid,
                                         "labels": [cat, cat, cat],
                                         "id": len(self.annotations) + 1})

    def specs(self) -> dict[str, dict]:
        n = sum(self.sizes.values())
        out = super().specs()
        for spec in out.values():  # the reader splits MIDOG itself (seeded, per tumour type)
            spec["val_fraction"] = self.sizes["val"] / n
            spec["test_fraction"] = self.sizes["test"] / n
        return out

    def finish(self) -> None:
        data = {"info": {"description": "partsup synthetic MIDOG-style dataset"},
                "licenses": [{"id": 1, "name": "CC0"}], "images": self.images,
                "categories": [{"id": 1, "name": "mitotic figure"},
                               {"id": 2, "name": "not mitotic figure"}],
                "annotations": self.annotations}
        (self.root / "MIDOG.json").write_text(json.dumps(data))


LAYOUTS: dict[str, Callable[[Path, dict[str, int]], Layout]] = {
    "icpr2012": ICPR2012Layout, "icpr2014": ICPR2014Layout, "amida13": AMIDA13Layout,
    "midog": MIDOGLayout}
