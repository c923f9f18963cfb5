"""Training data: mixed A/B sampling, paper-style patches, augmentation, the torch Dataset.

Each training item is planned by :class:`MixedSampler` from ``(seed, epoch, index)`` alone, so a
resumed run, a DataLoader worker or a DistributedSampler shard sees exactly the same sample:

- set A (strong: masks) or set B (weak: points) at ``strong_fraction`` (exact ratio over
  consecutive indices);
- a *positive* patch (probability ``positive_fraction``) is centred on a mitosis drawn uniformly
  from all mitoses of the set, shifted in one of 9 directions (``shift`` x patch size), rotated by
  one of ``rotations`` angles (360/N steps) and mirrored at random; a *negative* patch sits at a
  random place that holds no mitosis when one is found in ``negative_tries`` tries (or on a hard
  negative with probability ``hard_negative_fraction``) and gets rot90 + mirror;
- optional HED stain jitter and colour jitter.

Geometry runs through albumentations on the image, the strong mask and a validity mask, with the
points as keypoints; the weak label is rendered *after* the geometry from the moved points (fresh
random radii for every item). Pixels that come from outside the source image are ignored (255)
in both targets. Patch coordinates: x = column, y = row, pixels.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

# albumentations checks PyPI for a newer version when imported: no network calls at run time
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from partsup.errors import RecipeError
from partsup.types import IGNORE_INDEX, Sample

LabelMaker = Callable[[np.ndarray, tuple[int, int], np.random.Generator, float], np.ndarray]


def size_hw(value: int | Sequence[int], key: str = "data.patch.size") -> tuple[int, int]:
    """A patch size from a recipe: ``int`` (square) or ``[h, w]`` -> ``(H, W)`` pixels."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise RecipeError(f"{key}: expected an integer or [h, w], got {value!r}")
        h, w = int(value[0]), int(value[1])
    else:
        h = w = int(value)
    if h < 8 or w < 8:
        raise RecipeError(f"{key}: a patch must be at least 8x8 px, got {value!r}")
    return h, w


@dataclass(frozen=True)
class PatchConfig:
    """Where patches come from (recipe ``data.patch``). Sizes are ``(H, W)`` pixels."""

    size: tuple[int, int] | int = (256, 256)
    negative_size: tuple[int, int] | int | None = None
    positive_fraction: float = 0.5
    strong_fraction: float = 0.5
    shift: float = 0.25
    negative_tries: int = 10
    hard_negative_fraction: float = 0.0

    @classmethod
    def from_recipe(cls, patch: dict[str, Any]) -> "PatchConfig":
        """Build from a resolved recipe's ``data.patch`` (unknown keys are ignored)."""
        neg = patch.get("negative_size")
        kw = {k: patch[k] for k in ("positive_fraction", "strong_fraction", "shift",
                                    "negative_tries", "hard_negative_fraction") if k in patch}
        return cls(size=size_hw(patch.get("size", 256)), negative_size=neg, **kw)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", size_hw(self.size))
        if self.negative_size is not None:
            object.__setattr__(self, "negative_size",
                               size_hw(self.negative_size, "data.patch.negative_size"))
        for key in ("positive_fraction", "strong_fraction", "hard_negative_fraction"):
            v = getattr(self, key)
            if not 0.0 <= v <= 1.0:
                raise RecipeError(f"data.patch.{key}: expected a number in [0, 1], got {v}")
        if not 0.0 <= self.shift < 0.5:
            raise RecipeError(f"data.patch.shift: expected [0, 0.5), got {self.shift}")

    @property
    def neg_size(self) -> tuple[int, int]:
        return self.negative_size or self.size  # type: ignore[return-value]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation switches (recipe ``data.augment``)."""

    geometric: bool = True
    rotations: int = 8
    stain: bool = False
    color_jitter: bool = False
    stain_sigma: float = 0.05
    jitter: tuple[float, float, float, float] = (0.1, 0.1, 0.1, 0.02)

    @classmethod
    def from_recipe(cls, augment: dict[str, Any]) -> "AugmentConfig":
        kw = {k: augment[k] for k in ("geometric", "rotations", "stain", "color_jitter",
                                      "stain_sigma") if k in augment}
        return cls(**kw)

    def __post_init__(self) -> None:
        if self.rotations < 1:
            raise RecipeError(f"data.augment.rotations: expected >= 1, got {self.rotations}")


@dataclass(frozen=True)
class Draw:
    """The plan of one training item (everything random about it, fixed up front).

    ``center`` is the patch centre in source-image pixels (x, y), or None for a negative patch
    whose place is chosen among ``candidates`` (relative (u, v) in [0, 1]) once the image size
    is known. ``angle`` degrees counter-clockwise; ``k90`` quarter turns and ``transpose`` /
    ``flip`` for negatives; ``seed`` drives colour augmentation and the weak-label radii.
    """

    is_strong: bool
    positive: bool
    image_index: int
    size: tuple[int, int]
    center: tuple[float, float] | None = None
    candidates: tuple[tuple[float, float], ...] = ()
    angle: float = 0.0
    flip: bool = False
    transpose: bool = False
    vflip: bool = False
    seed: int = 0


def strong_at(index: int, fraction: float) -> bool:
    """Whether item ``index`` comes from set A: exactly ``fraction`` of any run of indices."""
    return math.floor((index + 1) * fraction + 1e-9) - math.floor(index * fraction + 1e-9) == 1


class MixedSampler:
    """Plans items from set A (``strong``) and set B (``weak``) readers; see the module doc.

    Readers are any sequence with the cheap accessors of :class:`partsup.data.readers.Reader`
    (``points(i)``, ``hard_negatives(i)``); either may be None (then every item comes from
    the other set).
    """

    def __init__(self, strong: Any | None, weak: Any | None, patch: PatchConfig,
                 augment: AugmentConfig = AugmentConfig(), seed: int = 0) -> None:
        if strong is None and weak is None:
            raise RecipeError("data: give data.strong and/or data.weak for training")
        self.sets = {True: strong, False: weak}
        self.patch, self.augment, self.seed = patch, augment, int(seed)
        self.fraction = patch.strong_fraction if strong is not None and weak is not None \
            else float(strong is not None)
        self._mitoses = {k: _flat(r, "points") for k, r in self.sets.items()}
        self._negatives = {k: _flat(r, "hard_negatives") for k, r in self.sets.items()}
        for k, r in self.sets.items():
            if r is not None and len(r) == 0:
                raise RecipeError(f"data.{'strong' if k else 'weak'}: the dataset has no images")

    def rng(self, epoch: int, index: int, stream: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(epoch), int(index), stream])

    def draw(self, epoch: int, index: int) -> Draw:
        """The deterministic plan of item ``index`` in ``epoch``."""
        rng = self.rng(epoch, index)
        is_strong = strong_at(index, self.fraction)
        reader = self.sets[is_strong]
        mitoses = self._mitoses[is_strong]
        positive = rng.random() < self.patch.positive_fraction and len(mitoses) > 0
        seed = int(rng.integers(0, 2**31 - 1))
        if positive:
            i, x, y = mitoses[rng.integers(len(mitoses))]
            h, w = self.patch.size
            shift = self.patch.shift if self.augment.geometric else 0.0
            dx, dy = rng.integers(-1, 2, size=2)  # 9 directions (incl. none)
            angle = 0.0
            if self.augment.geometric:
                angle = float(rng.integers(self.augment.rotations)) * 360.0 / self.augment.rotations
            return Draw(True if is_strong else False, True, int(i), (h, w),
                        center=(x - dx * shift * w, y - dy * shift * h), angle=angle,
                        flip=bool(self.augment.geometric and rng.random() < 0.5), seed=seed)
        negs = self._negatives[is_strong]
        geo = self.augment.geometric
        flags = rng.random(3) < 0.5
        common = dict(flip=bool(geo and flags[0]), transpose=bool(geo and flags[1]),
                      vflip=bool(geo and flags[2]), seed=seed)
        if len(negs) and rng.random() < self.patch.hard_negative_fraction:
            i, x, y = negs[rng.integers(len(negs))]
            return Draw(is_strong, False, int(i), self.patch.neg_size, center=(x, y), **common)
        i = int(rng.integers(len(reader)))
        cands = tuple((float(u), float(v)) for u, v in rng.random((self.patch.negative_tries, 2)))
        return Draw(is_strong, False, i, self.patch.neg_size, candidates=cands, **common)


def _flat(reader: Any, attr: str) -> np.ndarray:
    """``(K, 3)`` float64 rows (image index, x, y) over every image of ``reader``."""
    if reader is None:
        return np.zeros((0, 3))
    rows = [np.column_stack([np.full(len(p), i), p]) for i in range(len(reader))
            if len(p := np.asarray(getattr(reader, attr)(i), np.float64).reshape(-1, 2))]
    return np.concatenate(rows) if rows else np.zeros((0, 3))


# -- geometry -----------------------------------------------------------------------------------

def extract(image: np.ndarray, mask: np.ndarray | None, center: tuple[float, float],
            size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Cut an ``size = (h, w)`` window centred on ``center`` (x, y), zero-padded outside.

    Returns the ``(h, w, 3)`` uint8 image, an ``(h, w, 2)`` uint8 stack (strong mask, validity:
    1 where the pixel exists in the source) and the window's top-left (x0, y0) in source pixels.
    """
    h, w = size
    H, W = image.shape[:2]
    x0, y0 = int(round(center[0])) - w // 2, int(round(center[1])) - h // 2
    out = np.zeros((h, w, 3), np.uint8)
    aux = np.zeros((h, w, 2), np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if sx0 < sx1 and sy0 < sy1:
        dst = (slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0))
        out[dst] = image[sy0:sy1, sx0:sx1]
        if mask is not None:
            aux[dst + (0,)] = mask[sy0:sy1, sx0:sx1]
        aux[dst + (1,)] = 1
    return out, aux, (x0, y0)


def window_for(draw: Draw) -> tuple[int, int]:
    """Source window size: big enough that the rotated, cropped patch has no blank corners."""
    h, w = draw.size
    if draw.angle % 90:
        side = int(math.ceil(math.hypot(h, w))) + 2
        return side, side
    if draw.angle % 180:
        return max(h, w), max(h, w)
    return (w, h) if draw.transpose else (h, w)


def geometric(draw: Draw) -> A.Compose | None:
    """The albumentations pipeline of ``draw`` (fixed parameters: the draw already chose);
    None when the draw asks for no geometric change."""
    ops: list[A.BasicTransform] = []
    if draw.angle % 360:
        ops.append(A.Rotate(limit=(draw.angle, draw.angle), interpolation=cv2.INTER_LINEAR,
                            border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=1.0))
    if draw.transpose:
        ops.append(A.Transpose(p=1.0))
    if draw.vflip:
        ops.append(A.VerticalFlip(p=1.0))
    if draw.flip:
        ops.append(A.HorizontalFlip(p=1.0))
    if not ops:
        return None
    return A.Compose(ops, keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
                     seed=draw.seed)


def center_crop(image: np.ndarray, aux: np.ndarray, points: np.ndarray,
                size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = size
    H, W = image.shape[:2]
    y0, x0 = (H - h) // 2, (W - w) // 2
    pts = points - np.array([x0, y0], np.float32) if len(points) else points
    return image[y0:y0 + h, x0:x0 + w], aux[y0:y0 + h, x0:x0 + w], pts


# -- colour -------------------------------------------------------------------------------------

class HEDJitter(A.ImageOnlyTransform):
    """HED stain jitter (Tellez et al.): in Ruifrok's haematoxylin-eosin-DAB optical density
    space, each channel ``c`` becomes ``alpha_c * c + beta_c`` with ``alpha ~ U(1-s, 1+s)``,
    ``beta ~ U(-s, s)``; image uint8 RGB in and out."""

    def __init__(self, sigma: float = 0.05, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.sigma = float(sigma)

    def get_params(self) -> dict[str, Any]:
        g = self.random_generator
        return {"alpha": g.uniform(1 - self.sigma, 1 + self.sigma, 3),
                "beta": g.uniform(-self.sigma, self.sigma, 3)}

    def apply(self, img: np.ndarray, alpha: np.ndarray = np.ones(3),
              beta: np.ndarray = np.zeros(3), **params: Any) -> np.ndarray:
        from skimage.color import hed_from_rgb, rgb_from_hed
        log_adjust = math.log(1e-6)
        od = np.log(np.maximum(img[:, :, :3].astype(np.float32), 1.0) / 255.0) / log_adjust
        # cv2.transform applies a 3x3 matrix per pixel (m @ px), far cheaper than a BLAS call
        hed = cv2.transform(od, hed_from_rgb.T.astype(np.float32))
        hed = hed * alpha.astype(np.float32) + beta.astype(np.float32)
        out = np.exp(cv2.transform(hed, rgb_from_hed.T.astype(np.float32)) * log_adjust)
        return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("sigma",)


def colour(augment: AugmentConfig, seed: int) -> A.Compose | None:
    ops: list[A.BasicTransform] = []
    if augment.stain:
        ops.append(HEDJitter(augment.stain_sigma, p=1.0))
    if augment.color_jitter:
        b, c, s, h = augment.jitter
        ops.append(A.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h, p=1.0))
    return A.Compose(ops, seed=seed) if ops else None


# -- the torch dataset --------------------------------------------------------------------------

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


def place_negative(draw: Draw, s: Sample, margin: float = 0.0) -> Draw:
    """Resolve a negative draw's centre: the first candidate with no mitosis within the patch
    grown by ``margin`` px (a label's reach); the first candidate when none is free."""
    if draw.center is not None:
        return draw
    H, W = s.image.shape[:2]
    h, w = window_for(draw)
    first = None
    for u, v in draw.candidates or ((0.5, 0.5),):
        cx = w / 2 + u * max(W - w, 0) if W >= w else W / 2
        cy = h / 2 + v * max(H - h, 0) if H >= h else H / 2
        first = first or (cx, cy)
        p = s.points
        inside = (np.abs(p[:, 0] - cx) <= w / 2 + margin) & \
            (np.abs(p[:, 1] - cy) <= h / 2 + margin)
        if not inside.any():
            return _replace(draw, center=(cx, cy))
    return _replace(draw, center=first)


def _replace(draw: Draw, **kw: Any) -> Draw:
    from dataclasses import replace
    return replace(draw, **kw)


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


def build_reader(spec: dict[str, Any] | None, registries: Any, where: str) -> Any | None:
    """A reader from a resolved recipe component ``{name, root, split, ...}`` (None if absent)."""
    if spec is None:
        return None
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    return registries.datasets.build(spec["name"], where=where, **kwargs)


def build_training_data(recipe: dict[str, Any], registries: Any, length: int | None = None,
                        epoch: int = 0) -> TrainingData:
    """Readers (``data.strong`` / ``data.weak``), label maker (``labels.weak``), sampler and
    :class:`PatchDataset` from a resolved recipe. ``length`` defaults to the number of mitoses
    of both sets divided by ``positive_fraction`` (each mitosis about once per epoch)."""
    data = recipe["data"]
    strong = build_reader(data.get("strong"), registries, "data.strong")
    weak = build_reader(data.get("weak"), registries, "data.weak")
    patch = PatchConfig.from_recipe(data.get("patch", {}))
    augment = AugmentConfig.from_recipe(data.get("augment", {}))
    sampler = MixedSampler(strong, weak, patch, augment, seed=int(recipe.get("seed", 0)))
    spec = recipe["labels"]["weak"]
    maker = registries.label_makers.build(spec["name"], where="labels.weak",
                                          **{k: v for k, v in spec.items() if k != "name"})
    spec_a = recipe["labels"].get("weak_set_a")
    maker_a = None if not spec_a else registries.label_makers.build(
        spec_a["name"], where="labels.weak_set_a",
        **{k: v for k, v in spec_a.items() if k != "name"})
    if length is None:
        n = sum(r.num_points() for r in (strong, weak) if r is not None)
        length = max(1, int(math.ceil(n / max(patch.positive_fraction, 1e-6))))
    return TrainingData(PatchDataset(sampler, maker, length, epoch, label_maker_a=maker_a),
                        sampler, strong, weak)
