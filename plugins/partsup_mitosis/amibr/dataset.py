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
figures (:func:`partsup_mitosis.amibr_masks.figure_mask`), leaves out the figures whose mask is
rejected (their crops still serve as background, like crowded figures), and returns
``Sample.mask``: a ``(S, S)`` uint8 map, 1 where a figure's mask lands. The mask is pasted with
the figure's disc (same dihedral transform, same offset) and only where the disc is at least
half opaque (at most ``radius - 2`` px from the disc centre, on valid crop pixels).
"""
from __future__ import annotations

import csv
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from partsup.data.readers import DataWarning, Problems, SampleSequence
from partsup.errors import DataError
from partsup.types import Sample

#: the environment variable whose folder holds the datasets (``$PARTSUP_DATA/ami-br``)
DATA_ENV = "PARTSUP_DATA"
HPF_AREA = 2000.0 * 2000.0  # px^2 of the reference high-power field for ``density``
R_MIN, R_MAX, DISC_EDGE, MAX_OFFSET = 18, 30, 4.0, 3
CROWDED_PX = 52.0
KEEP_CLEAR = 20  # px: a figure's window stops this short of another figure's centre
KEEP_OUT_MIN = 22.0  # px: no tile or decoy comes closer than this (+4) to a crop's figure
GLASS_MAX = 0.3  # tiles with more than this share of bright glass pixels are not used
SOURCES_CODE = {"MIDOG21": 1, "TUPAC16": 2}


#: the warning of a metadata line skipped in non-strict mode (the reader base's DataWarning)
AmiBrWarning = DataWarning


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


@dataclass
class Donor:
    """One decoded crop and what may be cut from it.

    Attributes:
        image: ``(C, C, 3)`` uint8 crop (figure at ``(c, c)``, ``c = C // 2``).
        valid: ``(C, C)`` bool, False on black slide-border padding.
        radius: the centred figure's radius (px), from its hematoxylin blob.
        tiles: ``(T, 2)`` int top-left (x0, y0) of figure-free ``tile`` windows.
        spots: ``(S, 3)`` float (x, y, room): candidate decoy-disc centres and the largest disc
            radius that stays figure-free and inside the crop there; sorted darkest first.
    """

    image: np.ndarray
    valid: np.ndarray
    radius: float
    tiles: np.ndarray
    spots: np.ndarray


def _dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 dihedral transforms of an ``(N, N, ...)`` array: ``k`` in 0..7."""
    a = np.rot90(a, k % 4)
    return a[:, ::-1] if k >= 4 else a


def _dihedral_xy(x: float, y: float, n: int, k: int) -> tuple[float, float]:
    """Where pixel (x, y) of an N x N array goes under :func:`_dihedral` ``k``."""
    for _ in range(k % 4):  # np.rot90: new[r, c] = old[c, n - 1 - r]
        x, y = y, n - 1 - x
    if k >= 4:
        x = n - 1 - x
    return x, y


def _hematoxylin(image: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2hed
    return ndi.gaussian_filter(rgb2hed(image)[..., 0].astype(np.float32), 1.0)


def _figure_radius(h: np.ndarray, c: int) -> float:
    """Radius (px) of the dark blob(s) touching the central 17x17 px, clipped to [10, 28]."""
    centre = h[c - 8:c + 9, c - 8:c + 9]
    thr = max(0.6 * float(centre.max()), float(np.percentile(h, 85)))
    lab, n = ndi.label(h > thr, structure=np.ones((3, 3), bool))
    ids = np.unique(lab[c - 8:c + 9, c - 8:c + 9])
    ids = ids[ids > 0]
    if len(ids) == 0:
        return 16.0
    ys, xs = np.nonzero(np.isin(lab, ids))
    return float(np.clip(np.sqrt((xs - c) ** 2 + (ys - c) ** 2).max() + 1, 10, 28))


class AmiBrFields(SampleSequence):
    """Real-tissue detection fields from AMi-Br crops (see the module docstring).

    A lazy sequence of :class:`partsup.types.Sample`: ``image (S, S, 3)`` uint8 with
    ``S = grid * (tile - feather)``, ``points (N, 2)`` float32 x, y (px) of the figures,
    ``mask None``, ``hard_negatives (0, 2)``, ``mpp 0.25``, ``id "<slide>/<k>"``,
    ``group = slide``. ``points(i)`` never decodes an image.

    With ``masks=True``, ``mask`` is an ``(S, S)`` uint8 map (1 = figure; see the module doc).
    """

    NAME = "ami-br"
    ITEM = "field"
    POINTS = "mitoses"  # the column title of `partsup datasets --root`
    LAYOUT = """\
<root>/metadata.csv            file,source,label,slide,x,y (one line per crop, header line)
<root>/Normal/<name>.png       128x128 RGB crops, each centred on one mitotic figure
<root>/Atypical/<name>.png     (the figure's slide coordinates are x,y in metadata.csv)
Default root: $PARTSUP_DATA/ami-br. Fields are assembled from the crops (figures at
random positions on a figure-free quilt of the same slide's tissue); split by slide."""
    SPLITS = ("train", "val", "test", "all")

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
        self.root = self._resolve_root(root)
        if split not in self.SPLITS:
            raise DataError(f"{self.NAME}: unknown split {split!r}; expected one of "
                            f"{', '.join(self.SPLITS)}")
        self._check_geometry(crop, tile, grid, feather, density, decoys)
        self.split, self.strict = split, strict
        self.problems = Problems(self.NAME, strict)  # raises when strict, else warns and skips
        self.crop, self.tile, self.grid, self.feather = crop, tile, grid, feather
        self.step = tile - feather
        self.field_size = grid * self.step
        self.density, self.decoys, self.seed = float(density), float(decoys), int(seed)
        self.with_hard_negatives = bool(hard_negatives)
        self.mpp_value = 0.25
        every = self._read_metadata()
        all_figs = [f for f in every if (sources is None or f.source in sources)
                    and (labels is None or f.label in labels)]
        if not all_figs:
            raise DataError(f"{self.root / 'metadata.csv'}: no usable crop (sources={sources}, "
                            f"labels={labels})")
        # the split is made on every figure, so that filtering by source or label never moves
        # a slide to another split (a source-only run must not train on the full test slides)
        kept = {f.slide for f in all_figs}
        self.slides = [s for s in self._split_slides(every, split, val_fraction, test_fraction,
                                                     split_seed) if s in kept]
        self.by_slide: dict[str, list[Figure]] = {s: [] for s in self.slides}
        for f in all_figs:
            if f.slide in self.by_slide:
                self.by_slide[f.slide].append(f)
        self.crowded = self._crowded()
        self.masks = bool(masks)
        self.figure_masks: dict[int, tuple[int, int, np.ndarray]] = {}
        self.mask_rejects: dict[int, str] = {}
        if self.masks:
            self._use_mask_slides(mask_slides)
        elif mask_slides is not None:
            raise DataError(f"{self.NAME}: mask_slides={mask_slides!r} needs masks=True")
        self.fields = self._plan_fields(fields)
        self._placements: dict[tuple[int, int], tuple] = {}
        self._cache: OrderedDict[str, list[Donor]] = OrderedDict()
        self.cache_slides = cache_slides

    def __getstate__(self) -> dict:
        """Pickle without the caches (DataLoader workers rebuild them lazily)."""
        state = dict(self.__dict__)
        state["_cache"], state["_placements"] = OrderedDict(), {}
        return state

    # -- construction -------------------------------------------------------------------------
    def _resolve_root(self, root: str | Path | None) -> Path:
        p = default_root() if root is None else Path(root).expanduser()
        if not (p / "metadata.csv").is_file():
            raise DataError(f"{self.NAME}: {p / 'metadata.csv'} not found. "
                            f"Expected layout:\n{self.LAYOUT}")
        return p

    def _check_geometry(self, crop: int, tile: int, grid: int, feather: int, density: float,
                        decoys: float) -> None:
        if not 96 <= crop <= 128:
            raise DataError(f"{self.NAME}: crop={crop} must be in [96, 128] px (the crops "
                            f"are 128 px; discs need up to {R_MAX + MAX_OFFSET} px around "
                            f"the figure)")
        if not (16 <= tile <= crop // 2 and 0 <= feather < tile // 2):
            raise DataError(f"{self.NAME}: tile={tile} must be in [16, crop/2] and "
                            f"feather={feather} in [0, tile/2)")
        if grid < 2 or density < 0 or decoys < 0:
            raise DataError(f"{self.NAME}: grid must be >= 2, density and decoys >= 0")
        if grid * (tile - feather) < 2 * (R_MAX + MAX_OFFSET) + 2:
            raise DataError(f"{self.NAME}: field {grid}x({tile}-{feather}) px is too small "
                            f"for a figure disc")

    def _read_metadata(self) -> list[Figure]:
        """Every usable figure of ``metadata.csv`` (malformed lines and missing crops are
        reported through ``self.problems``)."""
        path = self.root / "metadata.csv"
        figs: list[Figure] = []
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = {"file", "source", "label", "slide", "x", "y"} - set(reader.fieldnames or ())
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
                    self.problems.report(f"{path}:{lineno}: malformed line ({exc})")
                    continue
                if not (self.root / fig.file).is_file():
                    self.problems.report(f"{path}:{lineno}: crop {self.root / fig.file} not found")
                    continue
                figs.append(fig)
        if not figs:
            raise DataError(f"{path}: no usable crop")
        return figs

    @staticmethod
    def _split_slides(figs: list[Figure], split: str, val_fraction: float, test_fraction: float,
                      split_seed: int) -> list[str]:
        """Slides of ``split``: per source, a seeded slide order filled to the fractions."""
        if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
            raise DataError("ami-br: val_fraction + test_fraction must be in [0, 1)")
        per_source: dict[str, dict[str, int]] = {}
        for f in figs:
            per_source.setdefault(f.source, {}).setdefault(f.slide, 0)
            per_source[f.source][f.slide] += 1
        chosen: list[str] = []
        for s_i, source in enumerate(sorted(per_source)):
            counts = per_source[source]
            names = sorted(counts)
            order = [names[j] for j in
                     np.random.default_rng([split_seed, s_i]).permutation(len(names))]
            total = sum(counts.values())
            target = {"test": test_fraction * total, "val": val_fraction * total}
            got = {"test": 0, "val": 0}
            parts: dict[str, list[str]] = {"test": [], "val": [], "train": []}
            for name in order:  # a slide joins test / val while it half fits, else train
                part = next((p for p in ("test", "val")
                             if got[p] + counts[name] / 2 <= target[p]), "train")
                parts[part].append(name)
                if part != "train":
                    got[part] += counts[name]
            chosen += names if split == "all" else parts[split]
        return sorted(chosen)

    def _crowded(self) -> set[int]:
        """Figures with another annotated figure of the slide within CROWDED_PX px."""
        out: set[int] = set()
        for figs in self.by_slide.values():
            xy = np.array([(f.x, f.y) for f in figs])
            if len(xy) < 2:
                continue
            d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) + np.eye(len(xy)) * 1e9
            out.update(figs[i].index for i in np.nonzero(d.min(1) < CROWDED_PX)[0])
        return out

    def _plan_fields(self, limit: int | None) -> list[tuple[int, int, list[Figure]]]:
        """Fields as (slide index, k, figures); figures spread uniformly over a slide's fields."""
        per_field = self.density * self.field_size ** 2 / HPF_AREA
        plan = []
        for s_i, slide in enumerate(self.slides):
            usable = [f for f in self.by_slide[slide] if f.index not in self.crowded
                      and f.index not in self.mask_rejects]
            n = max(1, math.ceil(len(usable) / per_field)) if per_field > 0 else 1
            if per_field == 0:
                usable = []
            rng = np.random.default_rng([self.seed, 11, _code(slide)])
            where = rng.integers(n, size=len(usable))
            for k in range(n):
                plan.append((s_i, k, [f for f, w in zip(usable, where) if w == k]))
        if limit is not None:
            order = np.random.default_rng([self.seed, 12]).permutation(len(plan))
            plan = [plan[j] for j in sorted(order[:limit])]
        return plan

    # -- masks (real set A) ---------------------------------------------------------------------
    def choose_mask_slides(self, mask_slides: int | Sequence[str] | None) -> list[str]:
        """The slides that serve masks, sorted.

        ``int k``: per source, the split's slides ranked by usable (not crowded) figures, most
        first (ties by name), taken in turn from each source (sources by name) until ``k``;
        ``None``: 6 that way; a list (or one name): those slides, which must belong to the
        split.
        """
        if isinstance(mask_slides, bool):
            raise DataError(f"{self.NAME}: mask_slides must be a count or slide names, "
                            f"got {mask_slides!r}")
        if isinstance(mask_slides, str):
            mask_slides = [mask_slides]
        if mask_slides is None or isinstance(mask_slides, int):
            k = 6 if mask_slides is None else int(mask_slides)
            if k < 1:
                raise DataError(f"{self.NAME}: mask_slides must be >= 1, got {k}")
            ranked: dict[str, list[str]] = {}
            for slide in self.slides:
                src = self.by_slide[slide][0].source
                ranked.setdefault(src, []).append(slide)
            queues = [sorted(v, key=lambda s: (-self._usable_count(s), s))
                      for _, v in sorted(ranked.items())]
            order = [q[j] for j in range(max(map(len, queues))) for q in queues if j < len(q)]
            return sorted(order[:k])
        names = [str(n) for n in mask_slides]
        unknown = [n for n in names if n not in self.by_slide]
        if unknown or not names:
            raise DataError(f"{self.NAME}: mask_slides {unknown or names} are not slides of "
                            f"split {self.split!r}")
        return sorted(set(names))

    def _usable_count(self, slide: str) -> int:
        return sum(f.index not in self.crowded for f in self.by_slide[slide])

    def _use_mask_slides(self, mask_slides: int | Sequence[str] | None) -> None:
        """Keep only the mask slides; build every usable figure's mask, note the rejected."""
        from partsup_mitosis.amibr_masks import figure_mask
        self.slides = self.choose_mask_slides(mask_slides)
        self.by_slide = {s: self.by_slide[s] for s in self.slides}
        for slide in self.slides:
            for f in self.by_slide[slide]:
                if f.index in self.crowded:
                    continue
                res = figure_mask(self._read_crop(f))
                if res.mask is None:
                    self.mask_rejects[f.index] = res.reason
                    continue
                ys, xs = np.nonzero(res.mask)
                y0, x0 = int(ys.min()), int(xs.min())
                self.figure_masks[f.index] = (
                    x0, y0, res.mask[y0:ys.max() + 1, x0:xs.max() + 1].copy())
        if not self.figure_masks:
            raise DataError(f"{self.NAME}: no figure of mask_slides {self.slides} has an "
                            f"accepted mask")

    def _read_crop(self, f: Figure) -> np.ndarray:
        """The ``(crop, crop, 3)`` uint8 centre cut of ``f``'s crop (as :meth:`_donor` cuts)."""
        from PIL import Image
        path = self.root / f.file
        try:
            with Image.open(path) as im:
                full = np.asarray(im.convert("RGB"))
        except Exception as exc:
            raise DataError(f"{path}: cannot read crop ({type(exc).__name__}: {exc})") from exc
        if full.shape[0] < self.crop or full.shape[1] < self.crop:
            raise DataError(f"{path}: crop is {full.shape[0]}x{full.shape[1]} px, smaller than "
                            f"crop={self.crop}")
        cy0, cx0 = (full.shape[0] - self.crop) // 2, (full.shape[1] - self.crop) // 2
        return np.ascontiguousarray(full[cy0:cy0 + self.crop, cx0:cx0 + self.crop])

    def crop_mask(self, f: Figure) -> np.ndarray:
        """``(crop, crop)`` uint8 mask (1 = figure) of an accepted figure, in crop pixels."""
        x0, y0, m = self.figure_masks[f.index]
        out = np.zeros((self.crop, self.crop), np.uint8)
        out[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
        return out

    # -- sequence ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.fields)

    def load_sample(self, i: int) -> Sample:
        return self.render(int(i))

    def __repr__(self) -> str:
        return (f"AmiBrFields(root={str(self.root)!r}, split={self.split!r}, "
                f"fields={len(self)}, slides={len(self.slides)}, points={self.num_points()})")

    # -- cheap accessors ----------------------------------------------------------------------
    def points(self, i: int, placement: int = 0) -> np.ndarray:
        """``(N, 2)`` float32 x, y figure centres of field ``i`` (px); no image is decoded."""
        figs, _ = self._placement(i, placement)
        return np.asarray([(x, y) for x, y, _ in figs], np.float32).reshape(-1, 2)

    def hard_negatives(self, i: int) -> np.ndarray:
        """``(M, 2)`` float32 x, y (px) of field ``i``'s decoy discs (each centred on the
        darkest spot of a figure-free piece of tissue, usually a non-mitotic nucleus) when the
        reader was built with ``hard_negatives=True``; else ``(0, 2)`` (AMi-Br labels no
        non-mitoses). No image is decoded."""
        if not self.with_hard_negatives:
            return np.zeros((0, 2), np.float32)
        _, decoys = self._placement(i, 0)
        return np.asarray(decoys, np.float32).reshape(-1, 2)

    def size(self, i: int) -> tuple[int, int]:
        """``(H, W)`` of field ``i`` (all fields are square)."""
        return self.field_size, self.field_size

    def mpp(self, i: int) -> float:
        return self.mpp_value

    @property
    def ids(self) -> list[str]:
        return [f"{self.slides[s]}/{k:04d}" for s, k, _ in self.fields]

    @property
    def groups(self) -> list[str]:
        return [self.slides[s] for s, _, _ in self.fields]

    def figures(self, i: int) -> list[Figure]:
        """The AMi-Br figures shown in field ``i`` (in the order of ``points(i)``)."""
        return list(self.fields[i][2])

    def num_points(self) -> int:
        return sum(len(f) for _, _, f in self.fields)

    # -- placement (rng only, no pixels) ------------------------------------------------------
    def _placement(self, i: int, placement: int) -> tuple[list, list]:
        """Figure centres (x, y, figure) and decoy centres (x, y) of field ``i``."""
        key = (i, placement)
        if key in self._placements:
            return self._placements[key]
        s_i, k, figs = self.fields[i]
        slide = _code(self.slides[s_i])
        rng = np.random.default_rng([self.seed, 13, slide, k])
        n_dec = int(rng.poisson(self.decoys)) + 3 * len(figs)
        taken: list[tuple[float, float]] = []
        decoys = [p for p in (self._dart(rng, taken) for _ in range(n_dec)) if p is not None]
        out = []
        if figs:
            rng_f = np.random.default_rng([self.seed, 14, slide, k, placement])
            for f in figs:
                p = self._dart(rng_f, taken, force=True, decoys=decoys)
                out.append((p[0], p[1], f))
        result = (out, decoys)
        if len(self._placements) > 100_000:
            self._placements.clear()
        self._placements[key] = result
        return result

    def _dart(self, rng: np.random.Generator, taken: list[tuple[float, float]],
              force: bool = False, decoys: list | None = None) -> tuple[float, float] | None:
        """A disc centre (integer px) at least 2 * (R_MAX + offset) from the others.

        Centres keep ``R_MAX + MAX_OFFSET + 2`` px from the border: a disc (radius up to
        R_MAX, drawn in a box of R_MAX + 1, centred up to MAX_OFFSET from the figure) stays
        inside the field.
        """
        lo = R_MAX + MAX_OFFSET + 2
        hi = self.field_size - lo
        gap2 = (2 * (R_MAX + MAX_OFFSET)) ** 2
        for _ in range(200):
            x, y = float(rng.integers(lo, hi)), float(rng.integers(lo, hi))
            if all((x - a) ** 2 + (y - b) ** 2 >= gap2 for a, b in taken):
                taken.append((x, y))
                return x, y
        if not force:
            return None
        # crowded field: the spot farthest from the other figures; drop the decoys it overlaps
        others = np.asarray([p for p in taken if p not in (decoys or [])]).reshape(-1, 2)
        cand = rng.integers(lo, hi, size=(200, 2)).astype(float)
        if len(others):
            far = np.sqrt(((cand[:, None] - others[None]) ** 2).sum(-1)).min(1)
            cand = cand[np.argmax(far)][None]
        x, y = float(cand[0, 0]), float(cand[0, 1])
        if decoys is not None:
            for d in [d for d in decoys if (x - d[0]) ** 2 + (y - d[1]) ** 2 < gap2]:
                decoys.remove(d)
                taken.remove(d)
        taken.append((x, y))
        return x, y

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
        donors = self._donors(slide)
        figs, decoys = self._placement(i, placement)
        canvas = self._quilt(donors, np.random.default_rng([self.seed, 15, _code(slide), k]))
        rng_d = np.random.default_rng([self.seed, 17, _code(slide), k])
        fig_radii = [d.radius for d in donors]
        rect = self.is_windows(i)
        for x, y in decoys:
            self._paste_decoy(canvas, donors, rng_d, fig_radii, x, y, rect)
        pts = []
        mask = np.zeros(canvas.shape[:2], np.uint8) if self.masks else None
        if figures:
            centres = [(x, y) for x, y, _ in figs]
            for x, y, f in figs:
                others = [c for c in centres if c != (x, y)] if rect else None
                self._paste_figure(canvas, donors, f, x, y, mask, others)
                pts.append((x, y))
        image = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
        suffix = "" if placement == 0 else f"@{placement}"
        suffix += "" if figures else "-nofig"
        return Sample(image=image, points=np.asarray(pts, np.float32).reshape(-1, 2), mask=mask,
                      mpp=self.mpp_value, id=f"{slide}/{k:04d}{suffix}", group=slide)

    def is_windows(self, i: int) -> bool:
        """Whether field ``i`` shows its pieces as rectangles (``windows`` layout) or discs."""
        if self.windows <= 0.0:
            return False
        s_i, k, _ = self.fields[i]
        coin = np.random.default_rng([self.seed, 20, _code(self.slides[s_i]), k]).random()
        return bool(coin < self.windows)

    def _quilt(self, donors: list[Donor], rng: np.random.Generator) -> np.ndarray:
        """Feather-blended grid of figure-free tiles: ``(S, S, 3)`` float32."""
        t, f, n = self.tile, self.feather, self.grid
        full = n * self.step + f
        acc = np.zeros((full, full, 3), np.float32)
        wsum = np.zeros((full, full, 1), np.float32)
        ramp = np.ones(t, np.float32)
        if f:
            r = (np.arange(f, dtype=np.float32) + 1) / (f + 1)
            ramp[:f], ramp[-f:] = r, r[::-1]
        weight = (ramp[:, None] * ramp[None, :])[..., None]
        usable = [d for d in donors if len(d.tiles)]
        if not usable:
            raise DataError(f"{self.NAME}: no figure-free {t}x{t} px window in the crops of "
                            f"this slide; use a smaller tile")
        for gy in range(n):
            for gx in range(n):
                d = usable[int(rng.integers(len(usable)))]
                x0, y0 = d.tiles[int(rng.integers(len(d.tiles)))]
                piece = _dihedral(d.image[y0:y0 + t, x0:x0 + t], int(rng.integers(8)))
                ys, xs = gy * self.step, gx * self.step
                acc[ys:ys + t, xs:xs + t] += piece * weight
                wsum[ys:ys + t, xs:xs + t] += weight
        off = f // 2
        out = acc / np.maximum(wsum, 1e-6)
        return out[off:off + self.field_size, off:off + self.field_size]

    @staticmethod
    def _disc_radius(fig_radius: float, rng: np.random.Generator) -> float:
        return float(np.clip(fig_radius + rng.uniform(5, 10), R_MIN, R_MAX))

    def _paste_disc(self, canvas: np.ndarray, image: np.ndarray, valid: np.ndarray,
                    sx: float, sy: float, x: float, y: float, radius: float) -> None:
        """Alpha-paste the disc of ``radius`` around (sx, sy) of ``image`` at (x, y) of canvas."""
        r = int(math.ceil(radius)) + 1
        sx, sy, x, y = int(round(sx)), int(round(sy)), int(round(x)), int(round(y))
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        alpha = np.clip((radius - np.sqrt(xx ** 2 + yy ** 2)) / DISC_EDGE, 0, 1)
        n = image.shape[0]
        ys, xs = np.clip(sy + yy, 0, n - 1), np.clip(sx + xx, 0, n - 1)
        inside = (sy + yy >= 0) & (sy + yy < n) & (sx + xx >= 0) & (sx + xx < n)
        alpha = (alpha * inside * valid[ys, xs]).astype(np.float32)[..., None]
        src = image[ys, xs].astype(np.float32)
        dst = canvas[y - r:y + r + 1, x - r:x + r + 1]
        dst *= 1 - alpha
        dst += alpha * src

    @staticmethod
    def _rect_alpha(ext: tuple[int, int, int, int]) -> np.ndarray:
        """``(u + d + 1, l + r + 1)`` float32 opacity of a window with half-extents
        ``(l, r, u, d)`` px around its anchor: 1 inside, ramping to 0 over DISC_EDGE px."""
        l, r, u, d = ext
        xx, yy = np.arange(-l, r + 1, dtype=np.float32), np.arange(-u, d + 1, dtype=np.float32)
        ax = np.minimum(xx + l, r - xx) + 0.5
        ay = np.minimum(yy + u, d - yy) + 0.5
        return np.clip(np.minimum(ay[:, None], ax[None, :]) / DISC_EDGE, 0, 1)

    @staticmethod
    def _rect_window(canvas_shape: tuple[int, ...], image: np.ndarray, sx: int, sy: int, x: int,
                     y: int, ext: tuple[int, int, int, int]) -> tuple | None:
        """The canvas slice and image slice of a window, clipped to both; None if empty."""
        l, r, u, d = ext
        n = image.shape[0]
        x0, x1 = max(-l, -x, -sx), min(r, canvas_shape[1] - 1 - x, n - 1 - sx)
        y0, y1 = max(-u, -y, -sy), min(d, canvas_shape[0] - 1 - y, n - 1 - sy)
        if x1 < x0 or y1 < y0:
            return None
        dst = (slice(y + y0, y + y1 + 1), slice(x + x0, x + x1 + 1))
        src = (slice(sy + y0, sy + y1 + 1), slice(sx + x0, sx + x1 + 1))
        a = (slice(y0 + u, y1 + u + 1), slice(x0 + l, x1 + l + 1))
        return dst, src, a

    def _paste_rect(self, canvas: np.ndarray, image: np.ndarray, valid: np.ndarray, sx: float,
                    sy: float, x: float, y: float, ext: tuple[int, int, int, int],
                    mask_out: np.ndarray | None = None, mask: np.ndarray | None = None) -> None:
        """Alpha-paste the window ``ext`` = (left, right, up, down) px around (sx, sy) of
        ``image`` at (x, y) of ``canvas``; OR ``mask`` into ``mask_out`` where at least half
        opaque."""
        sx, sy, x, y = int(round(sx)), int(round(sy)), int(round(x)), int(round(y))
        win = self._rect_window(canvas.shape, image, sx, sy, x, y, ext)
        if win is None:
            return
        dst, src, a = win
        alpha = (self._rect_alpha(ext)[a] * valid[src]).astype(np.float32)
        canvas[dst] *= 1 - alpha[..., None]
        canvas[dst] += alpha[..., None] * image[src].astype(np.float32)
        if mask_out is not None and mask is not None:
            mask_out[dst] |= ((mask[src] > 0) & (alpha >= 0.5)).astype(np.uint8)

    def _figure_extents(self, f: Figure, fx: float, fy: float, n: int, x: float, y: float,
                        others: list[tuple[float, float]]) -> tuple[int, int, int, int]:
        """Half-extents (l, r, u, d) of a figure's window: 20-64 px per side, inside the
        crop, and at least KEEP_CLEAR px short of every other figure's centre."""
        rng = np.random.default_rng([self.seed, 19, f.index])
        l, r, u, d = (int(v) for v in rng.integers(20, 65, size=4))
        l, r = min(l, int(fx)), min(r, n - 1 - int(fx))
        u, d = min(u, int(fy)), min(d, n - 1 - int(fy))
        for ox, oy in others:
            dx, dy = ox - x, oy - y
            if abs(dx) > max(l, r) + KEEP_CLEAR or abs(dy) > max(u, d) + KEEP_CLEAR:
                continue
            if abs(dx) >= abs(dy):
                if dx > 0:
                    r = min(r, max(int(dx) - KEEP_CLEAR, 4))
                else:
                    l = min(l, max(int(-dx) - KEEP_CLEAR, 4))
            elif dy > 0:
                d = min(d, max(int(dy) - KEEP_CLEAR, 4))
            else:
                u = min(u, max(int(-dy) - KEEP_CLEAR, 4))
        return l, r, u, d

    def _paste_figure(self, canvas: np.ndarray, donors: list[Donor], f: Figure, x: float,
                      y: float, mask: np.ndarray | None = None,
                      others: list[tuple[float, float]] | None = None) -> None:
        """Paste figure ``f`` centred on (x, y): a disc, or (``others`` given: the centres of
        the field's other figures) a window of its crop that keeps clear of them."""
        figs = self.by_slide[f.slide]
        d = donors[figs.index(f)]
        rng = np.random.default_rng([self.seed, 18, f.index])  # the disc's own look
        k = int(rng.integers(8))
        radius = self._disc_radius(d.radius, rng)
        ox, oy = rng.integers(-MAX_OFFSET, MAX_OFFSET + 1, size=2)
        n = d.image.shape[0]
        c = n // 2
        fx, fy = _dihedral_xy(c, c, n, k)
        image, valid = _dihedral(d.image, k), _dihedral(d.valid, k)
        if others is not None:
            ext = self._figure_extents(f, fx, fy, n, x, y, others)
            crop_mask = _dihedral(self.crop_mask(f), k) if mask is not None else None
            self._paste_rect(canvas, image, valid, fx, fy, x, y, ext, mask, crop_mask)
            return
        # the disc's centre is (ox, oy) from the figure; the figure lands on (x, y)
        self._paste_disc(canvas, image, valid, fx + ox, fy + oy, x + ox, y + oy, radius)
        if mask is not None:
            self._paste_mask(mask, _dihedral(self.crop_mask(f), k), valid, fx + ox, fy + oy,
                             x + ox, y + oy, radius)

    @staticmethod
    def _paste_mask(out: np.ndarray, mask: np.ndarray, valid: np.ndarray, sx: float, sy: float,
                    x: float, y: float, radius: float) -> None:
        """OR the ``(C, C)`` uint8 ``mask`` into ``out`` ``(S, S)`` uint8 where the disc pasted
        by :meth:`_paste_disc` with the same arguments is at least half opaque."""
        r = int(math.ceil(radius)) + 1
        sx, sy, x, y = int(round(sx)), int(round(sy)), int(round(x)), int(round(y))
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        n = mask.shape[0]
        ys, xs = np.clip(sy + yy, 0, n - 1), np.clip(sx + xx, 0, n - 1)
        inside = (sy + yy >= 0) & (sy + yy < n) & (sx + xx >= 0) & (sx + xx < n)
        opaque = (radius - np.sqrt(xx ** 2 + yy ** 2)) / DISC_EDGE >= 0.5
        keep = (mask[ys, xs] > 0) & inside & opaque & valid[ys, xs]
        dst = out[y - r:y + r + 1, x - r:x + r + 1]
        dst |= keep.astype(np.uint8)

    def _paste_decoy(self, canvas: np.ndarray, donors: list[Donor], rng: np.random.Generator,
                     fig_radii: list[float], x: float, y: float, rect: bool = False) -> None:
        radius = self._disc_radius(fig_radii[int(rng.integers(len(fig_radii)))], rng)
        while True:
            cands = [d for d in donors if len(d.spots) and d.spots[0, 2] >= radius]
            if cands or radius <= R_MIN:
                break
            radius -= 1.0
        if not cands:
            return
        d = cands[int(rng.integers(len(cands)))]
        ok = d.spots[d.spots[:, 2] >= radius]
        j = int(rng.integers(max(1, int(math.ceil(len(ok) * 0.25)))))  # a dark spot
        sx, sy = ok[j, 0], ok[j, 1]
        k = int(rng.integers(8))
        n = d.image.shape[0]
        tx, ty = _dihedral_xy(sx, sy, n, k)
        if rect:  # a window inside the figure-free disc of ``radius``: sides <= radius / sqrt 2
            half = max(int(radius / math.sqrt(2.0)), 8)
            ext = tuple(int(v) for v in rng.integers(max(half - 6, 8), half + 1, size=4))
            self._paste_rect(canvas, _dihedral(d.image, k), _dihedral(d.valid, k), tx, ty, x, y,
                             ext)  # type: ignore[arg-type]
            return
        self._paste_disc(canvas, _dihedral(d.image, k), _dihedral(d.valid, k), tx, ty, x, y,
                         radius)

    # -- donors (decoded crops, cached per slide) -------------------------------------------------
    def _donors(self, slide: str) -> list[Donor]:
        if slide in self._cache:
            self._cache.move_to_end(slide)
            return self._cache[slide]
        figs = self.by_slide[slide]
        donors = [self._donor(f, figs) for f in figs]
        self._cache[slide] = donors
        while len(self._cache) > self.cache_slides:
            self._cache.popitem(last=False)
        return donors

    def _donor(self, f: Figure, figs: list[Figure]) -> Donor:
        image = self._read_crop(f)
        c = self.crop // 2
        valid = ~ndi.binary_dilation(image.max(-1) < 12, iterations=2)
        h = _hematoxylin(image)
        radius = _figure_radius(h, c)
        keep_out = [(c, c, max(radius, KEEP_OUT_MIN) + 4.0)]  # generous: blobs underestimate
        for g in figs:  # other annotated figures that fall into this crop
            dx, dy = g.x - f.x, g.y - f.y
            if g is not f and abs(dx) < c + R_MAX and abs(dy) < c + R_MAX:
                keep_out.append((c + dx, c + dy, 28.0))
        glass = image.min(-1) > 200
        return Donor(image, valid, radius, self._tile_spots(valid, glass, keep_out),
                     self._decoy_spots(h, valid, keep_out))

    def _tile_spots(self, valid: np.ndarray, glass: np.ndarray, keep_out: list) -> np.ndarray:
        n, t = valid.shape[0], self.tile
        g = np.arange(0, n - t + 1, 2)
        x0, y0 = [a.ravel() for a in np.meshgrid(g, g)]
        ok = np.ones(len(x0), bool)
        for cx, cy, r in keep_out:  # distance from the disc centre to the window rectangle
            dx = np.maximum(np.maximum(x0 - cx, 0), cx - (x0 + t - 1))
            dy = np.maximum(np.maximum(y0 - cy, 0), cy - (y0 + t - 1))
            ok &= dx ** 2 + dy ** 2 > r ** 2
        bad = ndi.uniform_filter((~valid).astype(np.float32), t, origin=-(t // 2)) > 0
        glass = ndi.uniform_filter(glass.astype(np.float32), t, origin=-(t // 2)) > GLASS_MAX
        ok &= ~bad[y0, x0] & ~glass[y0, x0]
        return np.stack([x0[ok], y0[ok]], 1)

    @staticmethod
    def _decoy_spots(h: np.ndarray, valid: np.ndarray, keep_out: list) -> np.ndarray:
        n = valid.shape[0]
        g = np.arange(R_MIN, n - R_MIN, 2)
        sx, sy = [a.ravel().astype(np.float32) for a in np.meshgrid(g, g)]
        room = np.minimum.reduce([sx, sy, n - 1 - sx, n - 1 - sy])
        for cx, cy, r in keep_out:
            room = np.minimum(room, np.sqrt((sx - cx) ** 2 + (sy - cy) ** 2) - r)
        room = np.minimum(room, R_MAX)
        ok = (room >= R_MIN) & valid[sy.astype(int), sx.astype(int)]
        spots = np.stack([sx[ok], sy[ok], np.floor(room[ok])], 1)
        dark = h[spots[:, 1].astype(int), spots[:, 0].astype(int)] if len(spots) else spots[:, 0]
        return spots[np.argsort(-dark, kind="stable")]


def default_root() -> Path:
    """``$PARTSUP_DATA/ami-br``; DataError (one line naming ``root`` and the variable) when the
    variable is not set."""
    base = os.environ.get(DATA_ENV, "").strip()
    if not base:
        raise DataError(f"{AmiBrFields.NAME}: no root given and {DATA_ENV} is not set; pass "
                        f"root=<folder> (a recipe's data root, or --data-root) or set {DATA_ENV} "
                        f"so that ${DATA_ENV}/{AmiBrFields.NAME} holds the crops")
    return Path(base).expanduser() / AmiBrFields.NAME


def _code(name: str) -> int:
    """A stable integer for a slide name (seeding; independent of Python's hash salt)."""
    import zlib
    return zlib.crc32(name.encode())


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
            accepted (``partsup_mitosis.amibr_masks``), ``Sample.mask`` ``(S, S)`` uint8 (1 =
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
