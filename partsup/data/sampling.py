"""Training patches: where they come from. Each item is planned by :class:`MixedSampler` from
``(seed, epoch, index)`` alone, so a resumed run, a DataLoader worker or a DistributedSampler
shard sees exactly the same sample:

- set A (strong: masks) or set B (weak: points) at ``strong_fraction`` (exact ratio over
  consecutive indices);
- a *positive* patch (probability ``positive_fraction``) is centred on an object drawn uniformly
  from all objects of the set, shifted in one of 9 directions (``shift`` x patch size), rotated
  by one of ``rotations`` angles (360/N steps) and mirrored at random; a *negative* patch sits at
  a random place that holds no object when one is found in ``negative_tries`` tries (or on a
  hard negative with probability ``hard_negative_fraction``) and gets rot90 + mirror.

The plan is a :class:`Draw`; :func:`place_negative` and :func:`window_for` turn it into a source
window, :func:`extract` / :func:`center_crop` cut it. Augmentation: :mod:`partsup.data.augment`;
rendering and the torch Dataset: :mod:`partsup.data.patches`. Patch coordinates: x = column,
y = row, pixels. The recipe sections ``data.patch`` and ``data.augment`` are
:class:`PatchConfig` and :class:`AugmentConfig`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from partsup.errors import RecipeError
from partsup.registry import scalar_or_pair
from partsup.types import Sample

def size_hw(value: int | Sequence[int], key: str = "data.patch.size") -> tuple[int, int]:
    """A patch size from a recipe: ``int`` (square) or ``[h, w]`` -> ``(H, W)`` pixels."""
    h, w = scalar_or_pair(value, key, int, "an integer or [h, w]")
    if h < 8 or w < 8:
        raise RecipeError(f"{key}: a patch must be at least 8x8 px, got {value!r}")
    return h, w


def _config_kwargs(cls: type, section: dict[str, Any]) -> dict[str, Any]:
    """The keys of a recipe section that are fields of the dataclass ``cls`` (YAML lists as
    tuples); the recipe schema is derived from the same fields, so the two cannot drift."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in section.items() if k in names}


@dataclass(frozen=True)
class PatchConfig:
    """Where patches come from (recipe ``data.patch``). Sizes are ``(H, W)`` pixels."""

    size: tuple[int, int] | int = 256
    negative_size: tuple[int, int] | int | None = None
    positive_fraction: float = 0.5
    strong_fraction: float = 0.5
    shift: float = 0.25
    negative_tries: int = 10
    hard_negative_fraction: float = 0.0

    @classmethod
    def from_recipe(cls, patch: dict[str, Any]) -> "PatchConfig":
        """Build from a resolved recipe's ``data.patch`` (unknown keys are ignored)."""
        return cls(**_config_kwargs(cls, patch))

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
        """Build from a resolved recipe's ``data.augment`` (unknown keys are ignored)."""
        return cls(**_config_kwargs(cls, augment))

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
        self._objects = {k: _flat(r, "points") for k, r in self.sets.items()}
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
        objects = self._objects[is_strong]
        positive = rng.random() < self.patch.positive_fraction and len(objects) > 0
        seed = int(rng.integers(0, 2**31 - 1))
        if positive:
            i, x, y = objects[rng.integers(len(objects))]
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

# -- source windows ---------------------------------------------------------------------------

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


def center_crop(image: np.ndarray, aux: np.ndarray, points: np.ndarray,
                size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The central ``size = (h, w)`` window of ``image`` ``(H, W, 3)`` and ``aux`` ``(H, W, 2)``,
    and ``points`` ``(K, 2)`` float32 x, y moved into its pixels (kept even when outside)."""
    h, w = size
    H, W = image.shape[:2]
    y0, x0 = (H - h) // 2, (W - w) // 2
    pts = points - np.array([x0, y0], np.float32) if len(points) else points
    return image[y0:y0 + h, x0:x0 + w], aux[y0:y0 + h, x0:x0 + w], pts


def place_negative(draw: Draw, s: Sample, margin: float = 0.0) -> Draw:
    """Resolve a negative draw's centre: the first candidate with no object within the patch
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
            return replace(draw, center=(cx, cy))
    return replace(draw, center=first)
