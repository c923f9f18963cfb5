"""The torch training Dataset: render planned patches, label them, collate them, and build it
all from a recipe.

:func:`render` cuts and moves a patch as its :class:`Draw` says (:func:`transform`), applies the
colour augmentation, and renders the weak label *after* the geometry from the moved points
(fresh random radii for every item). Pixels that come from outside the source image are ignored
(255) in both targets. Patch coordinates: x = column, y = row, pixels.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from partsup.data.augment import colour, geometric
from partsup.data.normalize import NormalizedReader, build_normalizer
from partsup.data.sampling import (AugmentConfig, Draw, MixedSampler, PatchConfig, center_crop, extract,
                                   place_negative, window_for)
from partsup.errors import RecipeError
from partsup.manager import Registries
from partsup.types import IGNORE_INDEX, Sample

LabelMaker = Callable[[np.ndarray, tuple[int, int], np.random.Generator, float], np.ndarray]


class PatchDataset(Dataset):
    """Training items as dicts, deterministic in ``(seed, epoch, index)``.

    Item keys: ``image`` float32 ``(3, H, W)`` RGB in 0..255 (the model normalises); ``weak``
    int64 ``(H, W)`` 0/1/255 from the label maker; ``strong`` int64 ``(H, W)`` 0/1/255 from the
    mask (all 255 for set-B items, and for set-A images without a mask); ``is_strong`` bool;
    ``positive`` bool; ``id`` str (source image id).

    ``length`` items per epoch. Call :meth:`set_epoch` before each epoch (with a DataLoader use
    ``persistent_workers=False`` so workers pick it up). Sharding: wrap in
    ``torch.utils.data.DistributedSampler`` as usual; every rank computes the same item for the
    same index.
    """

    def __init__(self, sampler: MixedSampler, label_maker: LabelMaker, length: int,
                 epoch: int = 0, cache_images: int = 2,
                 label_maker_a: LabelMaker | None = None) -> None:
        if length < 1:
            raise RecipeError(f"data: samples per epoch must be >= 1, got {length}")
        self.sampler, self.label_maker, self.length = sampler, label_maker, int(length)
        self.label_maker_a = label_maker_a  # set-A items' weak labels (None: label_maker)
        self.epoch, self.cache_images = int(epoch), int(cache_images)
        self._cache: OrderedDict[tuple[bool, int], Sample] = OrderedDict()

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state

    def sample(self, is_strong: bool, i: int) -> Sample:
        key = (is_strong, i)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        s = self.sampler.sets[is_strong][i]
        if self.cache_images > 0:
            self._cache[key] = s
            while len(self._cache) > self.cache_images:
                self._cache.popitem(last=False)
        return s

    def __getitem__(self, index: int) -> dict[str, Any]:
        draw = self.sampler.draw(self.epoch, index)
        s = self.sample(draw.is_strong, draw.image_index)
        maker = self.label_maker_a if draw.is_strong and self.label_maker_a else self.label_maker
        item = render(draw, s, maker, self.sampler.augment,
                      self.sampler.rng(self.epoch, index, stream=1))
        item["id"] = s.id
        return item


def transform(draw: Draw, s: Sample, reach: float = 64.0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The geometric part of :func:`render`: cut and move the patch, its masks and points.

    Returns the ``(h, w, 3)`` uint8 image, an ``(h, w, 2)`` uint8 stack (strong mask, validity)
    and the ``(K, 2)`` float32 x, y points in patch pixels (those within ``reach`` of the patch
    and maybe outside it).
    """
    draw = place_negative(draw, s, reach)
    win = window_for(draw)
    image, aux, (x0, y0) = extract(s.image, s.mask, draw.center, win)
    pts = s.points.astype(np.float32).reshape(-1, 2) - np.array([x0, y0], np.float32)
    # only points that can reach the patch after rotation: within half a diagonal + reach
    half = math.hypot(*win) / 2 + reach
    centre = np.array([win[1] / 2, win[0] / 2], np.float32)
    pts = pts[np.abs(pts - centre).max(axis=1) <= half]
    pipeline = geometric(draw)
    if pipeline is not None:
        out = pipeline(image=image, mask=aux, keypoints=pts)
        image, aux = out["image"], out["mask"]
        pts = np.asarray(out["keypoints"], np.float32).reshape(-1, 2)
    return center_crop(image, aux, pts, draw.size)


def render(draw: Draw, s: Sample, label_maker: LabelMaker, augment: AugmentConfig,
           rng: np.random.Generator) -> dict[str, Any]:
    """Cut, transform and label one patch of sample ``s`` as planned by ``draw``."""
    reach = float(getattr(label_maker, "reach", lambda mpp: 64.0)(s.mpp))
    image, aux, kp = transform(draw, s, reach)
    if (jitter := colour(augment, draw.seed)) is not None:
        image = jitter(image=image)["image"]
    weak = weak_label(label_maker, kp, draw.size, rng, s.mpp, reach)
    valid = aux[:, :, 1] > 0
    weak[~valid] = IGNORE_INDEX
    if draw.is_strong and s.mask is not None:
        strong = aux[:, :, 0].astype(np.uint8)
        strong[~valid] = IGNORE_INDEX
    else:
        strong = np.full(draw.size, IGNORE_INDEX, np.uint8)
    return {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float(),
            "weak": torch.from_numpy(weak.astype(np.int64)),
            "strong": torch.from_numpy(strong.astype(np.int64)),
            "is_strong": bool(draw.is_strong), "positive": bool(draw.positive)}


def weak_label(label_maker: LabelMaker, points: np.ndarray, size: tuple[int, int],
               rng: np.random.Generator, mpp: float, reach: float) -> np.ndarray:
    """Render on a canvas padded by ``reach`` so points just outside the patch paint their part."""
    pad = int(math.ceil(reach)) + 1
    h, w = size
    keep = (points[:, 0] >= -pad) & (points[:, 0] < w + pad) & \
           (points[:, 1] >= -pad) & (points[:, 1] < h + pad)
    canvas = label_maker(points[keep] + pad, (h + 2 * pad, w + 2 * pad), rng, mpp)
    return np.ascontiguousarray(canvas[pad:pad + h, pad:pad + w]).copy()


def collate_patches(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate items of different patch sizes: pad to the largest (image 0, targets 255)."""
    h = max(b["image"].shape[1] for b in batch)
    w = max(b["image"].shape[2] for b in batch)
    out: dict[str, Any] = {
        "image": torch.zeros(len(batch), 3, h, w),
        "weak": torch.full((len(batch), h, w), IGNORE_INDEX, dtype=torch.int64),
        "strong": torch.full((len(batch), h, w), IGNORE_INDEX, dtype=torch.int64)}
    for k, b in enumerate(batch):
        bh, bw = b["image"].shape[1:]
        out["image"][k, :, :bh, :bw] = b["image"]
        out["weak"][k, :bh, :bw] = b["weak"]
        out["strong"][k, :bh, :bw] = b["strong"]
    for key in ("is_strong", "positive"):
        out[key] = torch.tensor([bool(b[key]) for b in batch])
    out["id"] = [b.get("id", "") for b in batch]
    return out


# -- from a recipe ------------------------------------------------------------------------------

@dataclass
class TrainingData:
    """What :func:`build_training_data` made: the dataset and its parts."""

    dataset: PatchDataset
    sampler: MixedSampler
    strong: Any | None = None
    weak: Any | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def build_reader(spec: dict[str, Any] | None, registries: Registries, where: str) -> Any | None:
    """A reader from a resolved recipe component ``{name, root, split, ...}`` (None if absent)."""
    if spec is None:
        return None
    return registries.datasets.build_component(spec, where)


def build_training_data(recipe: dict[str, Any], registries: Registries, length: int | None = None,
                        epoch: int = 0) -> TrainingData:
    """Readers (``data.strong`` / ``data.weak``, colour-normalised by ``data.normalize``), label maker (``labels.weak``), sampler and
    :class:`PatchDataset` from a resolved recipe. ``length`` defaults to the number of objects
    of both sets divided by ``positive_fraction`` (each object about once per epoch)."""
    data = recipe["data"]
    strong = build_reader(data.get("strong"), registries, "data.strong")
    weak = build_reader(data.get("weak"), registries, "data.weak")
    normalizer = build_normalizer(data.get("normalize"), registries)
    if normalizer is not None:
        strong, weak = (NormalizedReader(r, normalizer) if r is not None else None
                        for r in (strong, weak))
    patch = PatchConfig.from_recipe(data.get("patch", {}))
    augment = AugmentConfig.from_recipe(data.get("augment", {}))
    sampler = MixedSampler(strong, weak, patch, augment, seed=int(recipe.get("seed", 0)))
    maker = registries.label_makers.build_component(recipe["labels"]["weak"], "labels.weak")
    spec_a = recipe["labels"].get("weak_set_a")
    maker_a = None if not spec_a else registries.label_makers.build_component(
        spec_a, "labels.weak_set_a")
    if length is None:
        n = sum(r.num_points() for r in (strong, weak) if r is not None)
        length = max(1, int(math.ceil(n / max(patch.positive_fraction, 1e-6))))
    return TrainingData(PatchDataset(sampler, maker, length, epoch, label_maker_a=maker_a),
                        sampler, strong, weak)
