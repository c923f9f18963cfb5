"""``ami-br``: real-tissue detection fields assembled from the AMi-Br mitotic-figure crops.

The AMi-Br crops (128x128 px, ~0.25 um/px) are each centred on one mitotic figure. Tiled
naively, a detector learns *where* figures sit (tile centres) instead of what they look like.
This reader assembles fields in which position carries no information:

1. **Background quilt.** A field of ``grid x grid`` square tiles (side ``tile`` px, neighbours
   overlapping by ``feather`` px and blended with linear ramps). Each tile is a window of a crop
   of the same slide that avoids every figure in that crop (the centred one, measured from its
   hematoxylin blob, and any other annotated figure of the slide that falls into the crop), in
   one of the 8 dihedral orientations. The quilt is figure-free tissue.
2. **Discs on top.** Round pieces of tissue (radius 18-30 px, 4 px soft edge) pasted at random
   positions, not overlapping each other: *figure discs* (a crop's figure with a margin of its own
   surrounding tissue) and *decoy discs* (the same radius law, cut from figure-free parts of the
   slide's crops, centred on the darkest spot there, i.e. usually a non-mitotic nucleus). Every
   field has ``Poisson(decoys) + 3 x figures`` decoys, so a disc outline says little about a
   figure; the figure sits at the disc centre up to 3 px.
   With ``windows`` > 0, that share of the fields (a seeded coin per field) shows every piece
   as a soft-edged *rectangle* instead: a figure keeps a window of its own crop 40-128 px wide
   around it (natural context, no disc outline, never covering another figure's centre), a
   decoy a small window around its nucleus. A detector trained on discs alone learns to expect
   the disc; mixing both layouts teaches it the figure, not the way it was pasted.
3. **Density.** Figures are spread over the slide's fields at ``density`` per 2000x2000 px
   (default 1.8, AMIDA13's rate), so most fields hold no figure at all.

Split by slide (``metadata.csv`` column ``slide``), per source dataset, with a fixed
``split_seed`` so train / val / test never share a slide. Figures with another annotated figure
within ``52`` px in the same slide are not used as figure discs (their disc would show an
unlabelled neighbour); their surroundings still serve, with both figures masked out.

``render(i, placement=k, figures=...)`` draws the same field with the figures moved to new
positions (``placement`` > 0) or removed (``figures=False``); the background (quilt and decoys)
stays the same: this is what the counterfactual check uses.

**Masks (real set A).** With ``masks=True`` the reader keeps only ``mask_slides`` (a few slides
of the split, see :meth:`AmiBrFields.choose_mask_slides`), builds a pixel mask of each of their
figures (:func:`partsup_mitosis.amibr.masks.figure_mask`), leaves out the figures whose mask is
rejected (their crops still serve as background, like crowded figures), and returns
``Sample.mask``: a ``(S, S)`` uint8 map, 1 where a figure's mask lands. The mask is pasted with
the figure's disc (same dihedral transform, same offset) and only where the disc is at least
half opaque (at most ``radius - 2`` px from the disc centre, on valid crop pixels).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from partsup.plugin import DataError, DataWarning, Sample
from partsup_mitosis.amibr.compose import paste_decoy, paste_figure, quilt
from partsup_mitosis.amibr.donors import Donor, DonorCache, make_donor
from partsup_mitosis.amibr.geometry import check_geometry
from partsup_mitosis.amibr.masks import build_figure_masks, crop_mask
from partsup_mitosis.amibr.metadata import Figure
from partsup_mitosis.amibr.placement import Centres, place_field
from partsup_mitosis.amibr.slides import AmiBrSlides
from partsup_mitosis.amibr.splits import (HPF_AREA, choose_mask_slides, plan_fields, slide_code,
                                          subset)

#: the warning of a metadata line skipped in non-strict mode (the reader base's DataWarning)
AmiBrWarning = DataWarning


class AmiBrFields(AmiBrSlides):
    """Real-tissue detection fields from AMi-Br crops (see the module docstring).

    A lazy sequence of :class:`partsup.types.Sample`: ``image (S, S, 3)`` uint8 with
    ``S = grid * (tile - feather)``, ``points (N, 2)`` float32 x, y (px) of the figures,
    ``point_labels`` (one ``"normal"`` / ``"atypical"`` per point, from ``metadata.csv``),
    ``mask None``, ``hard_negatives`` (the decoy centres with ``hard_negatives=True``, else
    ``(0, 2)``), ``mpp 0.25``, ``id "<slide>/<k>"``, ``group = slide``. ``points(i)`` and
    ``point_labels(i)`` never decode an image.

    With ``masks=True``, ``mask`` is an ``(S, S)`` uint8 map (1 = figure; see the module doc).
    The work is done by plain functions: placement (:mod:`.placement`), donors
    (:mod:`.donors`), pixels (:mod:`.compose`), masks (:mod:`.masks`), splits (:mod:`.splits`).
    """

    def __init__(self, root: str | Path | None = None, split: str = "train", strict: bool = True,
                 crop: int = 128, tile: int = 40, grid: int = 15, feather: int = 8,
                 density: float = 1.8, decoys: float = 10.0, seed: int = 0,
                 fields: int | None = None, val_fraction: float = 0.15,
                 test_fraction: float = 0.2, split_seed: int = 0,
                 sources: Sequence[str] | None = None, labels: Sequence[str] | None = None,
                 cache_slides: int = 512, hard_negatives: bool = False, masks: bool = False,
                 mask_slides: int | Sequence[str] | None = None, windows: float = 0.0) -> None:
        if not 0.0 <= float(windows) <= 1.0:
            raise DataError(f"{self.NAME}: windows must be a share in [0, 1], got {windows!r}")
        self.windows = float(windows)
        super().__init__(root, split, strict, crop, seed, val_fraction, test_fraction,
                         split_seed, sources, labels,
                         check=lambda: check_geometry(self.NAME, crop, tile, grid, feather,
                                                      density, decoys))
        self.tile, self.grid, self.feather = tile, grid, feather
        self.step = tile - feather
        self.field_size = grid * self.step
        self.density, self.decoys = float(density), float(decoys)
        self.with_hard_negatives = bool(hard_negatives)
        self.masks = bool(masks)
        self.figure_masks: dict[int, tuple[int, int, np.ndarray]] = {}
        self.mask_rejects: dict[int, str] = {}
        if self.masks:
            self._use_mask_slides(mask_slides)
        elif mask_slides is not None:
            raise DataError(f"{self.NAME}: mask_slides={mask_slides!r} needs masks=True")
        per_field = self.density * self.field_size ** 2 / HPF_AREA
        skip = self.crowded | set(self.mask_rejects)
        self.fields = subset(plan_fields(self.slides, self.by_slide, skip, per_field, self.seed),
                             self.seed, fields)
        self._placements: dict[tuple[int, int], Centres] = {}
        self._donors = DonorCache(cache_slides)

    def __getstate__(self) -> dict:
        """Pickle without the placement cache (DataLoader workers rebuild it lazily)."""
        state = dict(self.__dict__)
        state["_placements"] = {}
        return state

    # -- masks (real set A) ---------------------------------------------------------------------
    def choose_mask_slides(self, mask_slides: int | Sequence[str] | None) -> list[str]:
        """The slides that serve masks, sorted (:func:`partsup_mitosis.amibr.splits.
        choose_mask_slides` on this split)."""
        return choose_mask_slides(mask_slides, self.slides, self.by_slide, self.crowded,
                                  self.split, self.NAME)

    def _use_mask_slides(self, mask_slides: int | Sequence[str] | None) -> None:
        """Keep only the mask slides; build every usable figure's mask, note the rejected."""
        self.slides = self.choose_mask_slides(mask_slides)
        self.by_slide = {s: self.by_slide[s] for s in self.slides}
        self.figure_masks, self.mask_rejects = build_figure_masks(
            self.slides, self.by_slide, self.crowded, self.read_crop)
        if not self.figure_masks:
            raise DataError(f"{self.NAME}: no figure of mask_slides {self.slides} has an "
                            f"accepted mask")

    def crop_mask(self, f: Figure) -> np.ndarray:
        """``(crop, crop)`` uint8 mask (1 = figure) of an accepted figure, in crop pixels."""
        return crop_mask(self.figure_masks[f.index], self.crop)

    # -- cheap accessors ----------------------------------------------------------------------
    def __repr__(self) -> str:
        return (f"AmiBrFields(root={str(self.root)!r}, split={self.split!r}, "
                f"fields={len(self)}, slides={len(self.slides)}, points={self.num_points()})")

    def points(self, i: int, placement: int = 0) -> np.ndarray:
        """``(N, 2)`` float32 x, y figure centres of field ``i`` (px); no image is decoded."""
        figs, _ = self.centres(i, placement)
        return np.asarray([(x, y) for x, y, _ in figs], np.float32).reshape(-1, 2)

    def point_labels(self, i: int, placement: int = 0) -> tuple[str, ...]:
        """One class per point of field ``i`` (``points(i)``'s order): each figure's
        ``metadata.csv`` label, ``"normal"`` or ``"atypical"``; no image is decoded."""
        figs, _ = self.centres(i, placement)
        return tuple(f.label for _, _, f in figs)

    def hard_negatives(self, i: int) -> np.ndarray:
        """``(M, 2)`` float32 x, y (px) of field ``i``'s decoy discs (each centred on the
        darkest spot of a figure-free piece of tissue, usually a non-mitotic nucleus) when the
        reader was built with ``hard_negatives=True``; else ``(0, 2)`` (AMi-Br labels no
        non-mitoses). No image is decoded."""
        if not self.with_hard_negatives:
            return np.zeros((0, 2), np.float32)
        _, decoys = self.centres(i, 0)
        return np.asarray(decoys, np.float32).reshape(-1, 2)

    def size(self, i: int) -> tuple[int, int]:
        """``(H, W)`` of field ``i`` (all fields are square)."""
        return self.field_size, self.field_size

    @property
    def ids(self) -> list[str]:
        return [f"{self.slides[s]}/{k:04d}" for s, k, _ in self.fields]

    def centres(self, i: int, placement: int = 0) -> Centres:
        """Figure centres (x, y, figure) and decoy centres (x, y) of field ``i``, px
        (:func:`partsup_mitosis.amibr.placement.place_field`; cached, no pixels)."""
        key = (i, placement)
        if key in self._placements:
            return self._placements[key]
        s_i, k, figs = self.fields[i]
        result = place_field(self.seed, slide_code(self.slides[s_i]), k, figs, self.decoys,
                             self.field_size, placement)
        if len(self._placements) > 100_000:
            self._placements.clear()
        self._placements[key] = result
        return result

    # -- pixels -----------------------------------------------------------------------------------
    def render(self, i: int, placement: int = 0, figures: bool = True) -> Sample:
        """Field ``i`` as a Sample.

        Args:
            i: field index.
            placement: 0 for the field as listed; k > 0 puts the same figures (same discs) at
                new random positions, keeping the background (quilt and decoys) unchanged.
            figures: False leaves the figure discs out (the background only; no points).
        """
        s_i, k, _ = self.fields[i]
        slide = self.slides[s_i]
        donors = self.donors(slide)
        figs, decoys = self.centres(i, placement)
        canvas = quilt(donors, np.random.default_rng([self.seed, 15, slide_code(slide), k]),
                       self.tile, self.feather, self.grid, self.NAME)
        rng_d = np.random.default_rng([self.seed, 17, slide_code(slide), k])
        fig_radii = [d.radius for d in donors]
        rect = self.is_windows(i)
        for x, y in decoys:
            paste_decoy(canvas, donors, rng_d, fig_radii, x, y, rect)
        pts, labels = [], []
        mask = np.zeros(canvas.shape[:2], np.uint8) if self.masks else None
        if figures:
            centres = [(x, y) for x, y, _ in figs]
            slide_figs = self.by_slide[slide]
            for x, y, f in figs:
                others = [c for c in centres if c != (x, y)] if rect else None
                fig_mask = self.crop_mask(f) if mask is not None else None
                paste_figure(canvas, donors[slide_figs.index(f)], f, x, y, self.seed, mask,
                             fig_mask, others)
                pts.append((x, y))
                labels.append(f.label)
        image = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
        suffix = "" if placement == 0 else f"@{placement}"
        suffix += "" if figures else "-nofig"
        negatives = (np.asarray(decoys, np.float32).reshape(-1, 2) if self.with_hard_negatives
                     else np.zeros((0, 2), np.float32))
        return Sample(image=image, points=np.asarray(pts, np.float32).reshape(-1, 2), mask=mask,
                      hard_negatives=negatives, mpp=self.mpp_value,
                      id=f"{slide}/{k:04d}{suffix}", group=slide, point_labels=tuple(labels))

    def is_windows(self, i: int) -> bool:
        """Whether field ``i`` shows its pieces as rectangles (``windows`` layout) or discs."""
        if self.windows <= 0.0:
            return False
        s_i, k, _ = self.fields[i]
        coin = np.random.default_rng([self.seed, 20, slide_code(self.slides[s_i]), k]).random()
        return bool(coin < self.windows)

    def donors(self, slide: str) -> list[Donor]:
        """The decoded crops of ``slide``'s figures (in ``by_slide`` order), cached per slide."""
        figs = self.by_slide[slide]
        return self._donors.get(slide, lambda: [make_donor(self.read_crop(f), f, figs, self.tile)
                                                for f in figs])


def factory(root: str | Path | None = None, split: str = "train", strict: bool = True,
            crop: int = 128, tile: int = 40, grid: int = 15, feather: int = 8,
            density: float = 1.8, decoys: float = 10.0, seed: int = 0,
            fields: int | None = None, val_fraction: float = 0.15, test_fraction: float = 0.2,
            split_seed: int = 0, sources: Sequence[str] | None = None,
            labels: Sequence[str] | None = None, hard_negatives: bool = False,
            masks: bool = False, mask_slides: int | list[str] | None = None,
            windows: float = 0.0) -> AmiBrFields:
    """The ``ami-br`` dataset: fields ``grid * (tile - feather)`` px square (default 480).

    Args:
        root: the AMi-Br folder (default ``$PARTSUP_DATA/ami-br``, :func:`default_root`).
        split: train | val | test | all (by slide, per source).
        crop: side (px) of the centre cut used from each 128 px crop.
        tile: side (px) of the figure-free background tiles; feather: their overlap (px).
        grid: tiles per field side.
        density: figures per 2000x2000 px (AMIDA13 ~1.8); most fields then hold none.
        decoys: mean number of figure-free decoy discs per field (plus 3 per figure).
        seed: assembly seed (placements, tiles); the split depends only on ``split_seed``.
        fields: keep only this many fields (a seeded subset), e.g. for quick evaluations.
        sources, labels: keep only these sources (MIDOG21, TUPAC16) / labels (normal, atypical).
        hard_negatives: report the decoy discs' centres as hard negatives (non-mitotic
            nuclei), so training can centre negative patches on them
            (``data.patch.hard_negative_fraction``).
        masks: real set A: only ``mask_slides``' fields, only figures whose pixel mask was
            accepted (``partsup_mitosis.amibr.masks``), ``Sample.mask`` ``(S, S)`` uint8 (1 =
            figure). Off (default): ``mask None``, fields exactly as without the option.
        mask_slides: with ``masks``: an int k (the k slides of the split with the most figures,
            taken in turn from each source; default 6) or a list of slide names.
        windows: share of the fields (seeded per field) whose figures and decoys are pasted
            as soft-edged rectangles of their crops instead of discs: figures in their own
            natural context, 40-128 px wide, no disc outline. 0 (default): discs only.
    """
    return AmiBrFields(root, split, strict, crop=crop, tile=tile, grid=grid, feather=feather,
                       density=density, decoys=decoys, seed=seed, fields=fields,
                       val_fraction=val_fraction, test_fraction=test_fraction,
                       split_seed=split_seed, sources=sources, labels=labels,
                       hard_negatives=hard_negatives, masks=masks, mask_slides=mask_slides,
                       windows=windows)


factory.LAYOUT = AmiBrFields.LAYOUT  # type: ignore[attr-defined]
factory.POINTS = AmiBrFields.POINTS  # type: ignore[attr-defined]

DATASETS = {"ami-br": factory}
