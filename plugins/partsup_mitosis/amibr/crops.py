"""``ami-br-crops``: the AMi-Br crops tiled whole, side by side (a second view for evaluation).

The ``ami-br`` reader pastes figures onto a figure-free quilt so that position carries no
information (what training needs). A detector that only works on that construction is of little
use, so this reader shows the same split's crops the plain way: each field is a grid of whole
128x128 px crops of one slide (``per_row`` crops per row, the slide's crops in a seeded order),
each crop with its figure at the centre and its own surrounding tissue, as a person tiling the
crops would. Every annotated figure of the slide that falls inside a crop is a point (the centred
one and any neighbour), so crowded figures count too.

It is meant for evaluation and calibration: a network trained on it could learn that figures sit
at tile centres. Fields hold about ``per_row ** 2`` figures in ``(128 * per_row)^2`` px, i.e.
about 244 per 2000x2000 px: far more crowded than any ``ami-br`` density.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from partsup.plugin import DataError, Sample
from partsup_mitosis.amibr.metadata import Figure
from partsup_mitosis.amibr.slides import AmiBrSlides
from partsup_mitosis.amibr.splits import Field, slide_code, subset


class AmiBrCrops(AmiBrSlides):
    """Grids of whole AMi-Br crops (see the module docstring).

    A lazy sequence of :class:`partsup.types.Sample`: ``image (128 * rows, 128 * cols, 3)``
    uint8, ``points (N, 2)`` float32 x, y (px) of every annotated figure inside the crops,
    ``point_labels`` (one ``"normal"`` / ``"atypical"`` per point), ``mask None``, ``mpp 0.25``, ``id "<slide>/c<k>"``, ``group = slide``.
    """

    NAME = "ami-br-crops"
    LAYOUT = AmiBrSlides.LAYOUT.split("Default root")[0] + (
        "Default root: $PARTSUP_DATA/ami-br (the same folder as ami-br). Fields are grids of\n"
        "whole crops of one slide, for evaluation; split by slide exactly as ami-br.")

    def __init__(self, root: str | Path | None = None, split: str = "test", strict: bool = True,
                 per_row: int = 3, seed: int = 0, fields: int | None = None,
                 val_fraction: float = 0.15, test_fraction: float = 0.2, split_seed: int = 0,
                 sources: Sequence[str] | None = None,
                 labels: Sequence[str] | None = None) -> None:
        if int(per_row) < 1:
            raise DataError(f"{self.NAME}: per_row must be >= 1, got {per_row!r}")
        self.per_row = int(per_row)
        super().__init__(root, split, strict, 128, seed, val_fraction, test_fraction,
                         split_seed, sources, labels)
        self.fields = subset(self._grids(), self.seed, fields)

    def _grids(self) -> list[Field]:
        """Each slide's crops in a seeded order, ``per_row ** 2`` per field (the last fewer)."""
        per_field = self.per_row ** 2
        plan = []
        for s_i, slide in enumerate(self.slides):
            figs = self.by_slide[slide]
            order = np.random.default_rng([self.seed, 21, slide_code(slide)]).permutation(len(figs))
            for k, start in enumerate(range(0, len(figs), per_field)):
                plan.append((s_i, k, [figs[j] for j in order[start:start + per_field]]))
        return plan

    def _shape(self, i: int) -> tuple[int, int]:
        n = len(self.fields[i][2])
        cols = min(n, self.per_row)
        return math.ceil(n / cols), cols

    def points(self, i: int, placement: int = 0) -> np.ndarray:
        """``(N, 2)`` float32 x, y (px): every annotated figure of the slide inside a crop."""
        pts = [(x, y) for x, y, _ in self._shown(i)]
        return np.asarray(pts, np.float32).reshape(-1, 2)

    def point_labels(self, i: int) -> tuple[str, ...]:
        """One class per point of field ``i`` (``points(i)``'s order): each figure's
        ``metadata.csv`` label, ``"normal"`` or ``"atypical"``; no image is decoded."""
        return tuple(g.label for _, _, g in self._shown(i))

    def _shown(self, i: int) -> list[tuple[float, float, Figure]]:
        """(x, y, figure) of every annotated figure of the slide inside one of field ``i``'s
        crops, px."""
        s_i, _, figs = self.fields[i]
        everyone = self.by_slide[self.slides[s_i]]
        _, cols = self._shape(i)
        out = []
        for j, f in enumerate(figs):
            gy, gx = divmod(j, cols)
            for g in everyone:
                dx, dy = g.x - f.x + self.crop // 2, g.y - f.y + self.crop // 2
                if 0 <= dx < self.crop and 0 <= dy < self.crop:
                    out.append((gx * self.crop + dx, gy * self.crop + dy, g))
        return out

    def hard_negatives(self, i: int) -> np.ndarray:
        return np.zeros((0, 2), np.float32)

    def size(self, i: int) -> tuple[int, int]:
        rows, cols = self._shape(i)
        return rows * self.crop, cols * self.crop

    def render(self, i: int, placement: int = 0, figures: bool = True) -> Sample:
        if placement or not figures:
            raise DataError(f"{self.NAME}: fields are fixed grids of crops (no placements)")
        s_i, k, figs = self.fields[i]
        h, w = self.size(i)
        _, cols = self._shape(i)
        image = np.zeros((h, w, 3), np.uint8)
        for j, f in enumerate(figs):
            gy, gx = divmod(j, cols)
            image[gy * self.crop:(gy + 1) * self.crop,
                  gx * self.crop:(gx + 1) * self.crop] = self.read_crop(f)
        slide = self.slides[s_i]
        return Sample(image=image, points=self.points(i), mask=None, mpp=self.mpp_value,
                      id=f"{slide}/c{k:04d}", group=slide, point_labels=self.point_labels(i))

    @property
    def ids(self) -> list[str]:
        return [f"{self.slides[s]}/c{k:04d}" for s, k, _ in self.fields]

    def __repr__(self) -> str:
        return (f"AmiBrCrops(root={str(self.root)!r}, split={self.split!r}, "
                f"fields={len(self)}, slides={len(self.slides)}, per_row={self.per_row})")


def factory(root: str | Path | None = None, split: str = "test", strict: bool = True,
            per_row: int = 3, seed: int = 0, fields: int | None = None,
            val_fraction: float = 0.15, test_fraction: float = 0.2, split_seed: int = 0,
            sources: Sequence[str] | None = None,
            labels: Sequence[str] | None = None) -> AmiBrCrops:
    """The ``ami-br-crops`` dataset: whole AMi-Br crops side by side, for evaluation.

    Args:
        root: the AMi-Br folder (default ``$PARTSUP_DATA/ami-br``).
        split: train | val | test | all: the same slides as ``ami-br`` with the same
            ``split_seed``, ``val_fraction`` and ``test_fraction``.
        per_row: crops per row (and per column) of a field; a slide's last field holds the
            rest of its crops.
        seed: the order of a slide's crops; fields: keep this many fields (a seeded subset).
        sources, labels: keep only these sources (MIDOG21, TUPAC16) / labels (normal, atypical).
    """
    return AmiBrCrops(root, split, strict, per_row=per_row, seed=seed, fields=fields,
                      val_fraction=val_fraction, test_fraction=test_fraction,
                      split_seed=split_seed, sources=sources, labels=labels)


factory.LAYOUT = AmiBrCrops.LAYOUT  # type: ignore[attr-defined]
factory.POINTS = AmiBrCrops.POINTS  # type: ignore[attr-defined]

DATASETS = {"ami-br-crops": factory}
