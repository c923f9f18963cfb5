"""Reader of AMIDA13 and the TUPAC16 auxiliary mitosis set (``amida13``): tiles with ``row,col``
CSVs, no CSV = no mitosis. Shared conventions: see :mod:`partsup_mitosis.readers`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from partsup.plugin import (DataError, Reader, Record, as_points, floats, group_split, list_images,
                            log_summary, read_csv_rows)

AMIDA13_TEST_CASES = tuple(f"{i:02d}" for i in range(13, 24))


def _case_key(name: str) -> str:
    """Case names compare numerically when numeric ("1" == "01")."""
    return str(int(name)) if name.isdigit() else name


class AMIDA13(Reader):
    """AMIDA13 (and the TUPAC16 auxiliary set): tiles with ``row,col`` CSVs; no CSV = no mitosis."""

    NAME = "amida13"
    POINTS = "mitoses"  # the column title of `partsup datasets --root`
    LAYOUT = """\
<root>/mitoses_image_data/<case>/<tile>.tif      HPF tiles (2000x2000, 0.25 um/px)
<root>/mitoses_ground_truth/<case>/<tile>.csv    one "row,col" (y,x) per line, no header;
                                                 a missing CSV means no mitosis in that tile
Also reads the TUPAC16 auxiliary set (same layout, cases 01-73; 01-23 are AMIDA13's).
Splits by case: test = test_cases (default 13-23, AMIDA13's test subjects), val = val_cases
(default 11, 12: our choice, the last two training subjects), train = the other cases."""
    SOURCE = ("AMIDA13 challenge (Veta et al., Med Image Anal 2015), from its organisers' "
              "website http://amida13.isi.uu.nl/; the TUPAC16 auxiliary mitosis set (which "
              "contains AMIDA13's cases as 01-23) from https://tupac.grand-challenge.org/ "
              "(Dataset page)")

    def __init__(self, root: str | Path, split: str = "train", strict: bool = True,
                 val_cases: Sequence[str] = ("11", "12"),
                 test_cases: Sequence[str] = AMIDA13_TEST_CASES, mpp: float = 0.25,
                 allow_empty: bool = False, check_images: bool = True,
                 edge_tolerance: float | None = None) -> None:
        super().__init__(root, split, strict, edge_tolerance)
        self.val_cases, self.test_cases = [str(c) for c in val_cases], [str(c) for c in test_cases]
        self._mpp, self.allow_empty, self.check_images = mpp, allow_empty, check_images
        images = self.root / "mitoses_image_data"
        if not images.is_dir():
            raise self.missing_folder(images, "image folder")
        labels = self.root / "mitoses_ground_truth"
        if not labels.is_dir():
            raise self.missing_folder(labels, "ground-truth folder")
        cases = sorted(p.name for p in images.iterdir() if p.is_dir())
        chosen = group_split(cases, split, self.val_cases, self.test_cases, norm=_case_key)
        if not chosen:
            raise DataError(f"{self.NAME}: split {split!r} selects no case under {images} "
                            f"(cases: {', '.join(cases) or 'none'}; val_cases={self.val_cases}, "
                            f"test_cases={self.test_cases})")
        for case in chosen:
            for tile in list_images(images / case):
                self._scan_tile(case, tile, labels / case / f"{tile.stem}.csv")
        log_summary(self)

    def _scan_tile(self, case: str, tile: Path, csv_path: Path) -> None:
        size = self.header_size(tile) if self.check_images else None
        if self.check_images and size is None:
            return
        keep = []
        if csv_path.is_file():
            rows = read_csv_rows(csv_path, self.problems, 2, parse=lambda f: floats(f, 2),
                                 allow_empty=self.allow_empty) or []
            for lineno, (row, col) in rows:
                xy = self.check_inside((col, row), size, f"{csv_path}:{lineno}")
                if xy is not None:
                    keep.append(xy)
        self.records.append(Record(id=f"{case}/{tile.stem}", group=case, image_path=tile,
                                   points=as_points(keep), mpp=self._mpp, size=size))

