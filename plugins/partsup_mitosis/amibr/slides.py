"""What the two views of the AMi-Br crops (``ami-br`` fields and ``ami-br-crops`` grids) share:
the root, the split's slides and figures, the crowded figures, reading a crop, and the sequence
accessors. Each view plans its own fields and renders them."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from partsup.plugin import DataError, Problems, Sample, SampleSequence
from partsup_mitosis.amibr.metadata import NAME, Figure, read_crop, read_metadata, resolve_root
from partsup_mitosis.amibr.splits import Field, crowded_figures, select_figures


class AmiBrSlides(SampleSequence):
    """The figures of one split of the AMi-Br crops, by slide, and the fields a view makes of them.

    Attributes:
        root: the AMi-Br folder (``metadata.csv`` and the crops).
        slides: the split's slide names, sorted.
        by_slide: slide -> its figures (of the wanted sources and labels), in metadata order.
        crowded: indices of the figures with another annotated figure within ``CROWDED_PX``.
        fields: the view's fields as (slide index, k, figures); set by the subclass.
        crop: side (px) of the centre cut used from each crop; ``mpp_value`` 0.25 um/px.
    """

    NAME = NAME
    ITEM = "field"
    POINTS = "mitoses"  # the column title of `partsup datasets --root`
    LAYOUT = """\
<root>/metadata.csv            file,source,label,slide,x,y (one line per crop, header line)
<root>/Normal/<name>.png       128x128 RGB crops, each centred on one mitotic figure
<root>/Atypical/<name>.png     (the figure's slide coordinates are x,y in metadata.csv)
Default root: $PARTSUP_DATA/ami-br. Fields are assembled from the crops (figures at
random positions on a figure-free quilt of the same slide's tissue); split by slide."""
    SPLITS = ("train", "val", "test", "all")

    def __init__(self, root: str | Path | None, split: str, strict: bool, crop: int, seed: int,
                 val_fraction: float, test_fraction: float, split_seed: int,
                 sources: Sequence[str] | None, labels: Sequence[str] | None,
                 check: Callable[[], None] | None = None) -> None:
        """Read the split; ``check`` (the view's option checks) runs once the root and the
        split name are known good and before ``metadata.csv`` is read."""
        self.root = resolve_root(root, self.NAME, self.LAYOUT)
        if split not in self.SPLITS:
            raise DataError(f"{self.NAME}: unknown split {split!r}; expected one of "
                            f"{', '.join(self.SPLITS)}")
        if check is not None:
            check()
        self.split, self.strict = split, strict
        self.problems = Problems(self.NAME, strict)  # raises when strict, else warns and skips
        self.crop, self.seed = crop, int(seed)
        self.mpp_value = 0.25
        every = read_metadata(self.root, self.problems)
        self.slides, self.by_slide = select_figures(
            every, split, val_fraction, test_fraction, split_seed, sources, labels,
            self.root / "metadata.csv")
        self.crowded = crowded_figures(self.by_slide)
        self.fields: list[Field] = []

    def read_crop(self, f: Figure) -> np.ndarray:
        """The ``(crop, crop, 3)`` uint8 centre cut of ``f``'s crop (what the fields are cut
        from)."""
        return read_crop(self.root, f, self.crop)

    def render(self, i: int, placement: int = 0, figures: bool = True) -> Sample:
        """Field ``i`` as a Sample (rendered now)."""
        raise NotImplementedError

    # -- sequence ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.fields)

    def load_sample(self, i: int) -> Sample:
        return self.render(int(i))

    def mpp(self, i: int) -> float:
        return self.mpp_value

    @property
    def groups(self) -> list[str]:
        return [self.slides[s] for s, _, _ in self.fields]

    def figures(self, i: int) -> list[Figure]:
        """The AMi-Br figures shown in field ``i`` (in the order of ``points(i)``)."""
        return list(self.fields[i][2])

    def num_points(self) -> int:
        return sum(len(f) for _, _, f in self.fields)
