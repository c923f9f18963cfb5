"""Training and validation crops of a crop classifier, around a dataset's points.

A crop is a square of ``crop_um`` micrometres centred on a point at the classifier's um/px,
``side = round(crop_um / mpp)`` px, cut by :func:`partsup.model.classifier.extract_crops` (the
cutter inference uses too: bilinear, mirrored borders, smoothed against aliasing when it
shrinks the image) and kept as uint8 (rounded).

Training items (:class:`CropDataset`) come from a :class:`CropSet`: one entry per point (a
positive) and per negative (the dataset's hard negatives, mined candidates), each with one
target per head (``-100``: the head ignores it):

- a point labelled ``L`` (``Sample.point_labels``): class ``L`` in every head that has it; the
  verify head's positive class;
- a negative: the verify head's other class; every other head ignores it.

Each entry keeps a *context* ``side + 2 * jitter`` px wide, so an item is cut from it at a
random offset (the centre moves by up to ``jitter`` px at the classifier's um/px). Item ``i`` of
epoch ``e`` is a pure function of ``(seed, e, i)``: a (head, class) pair drawn uniformly among
those with entries (class-balanced sampling), an entry of it, the offset, one of the 8 dihedral
transforms (``data.augment.geometric``) and the colour changes of ``data.augment``
(:func:`partsup.data.augment.colour`). The item trains the drawn head only (its other targets
are -100), so every head sees its classes in equal shares. Coordinates: x = column, y = row,
pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from partsup.data.augment import colour
from partsup.data.sampling import AugmentConfig
from partsup.errors import DataError, RecipeError
from partsup.model.classifier import extract_crops

__all__ = ["IGNORE", "CropDataset", "CropPlan", "CropSet", "build_crop_set", "collate_crops",
           "jitter_px"]

#: the target of a head that ignores an entry (``torch.nn.CrossEntropyLoss``'s ignore_index)
IGNORE = -100


@dataclass(frozen=True)
class CropPlan:
    """What the crops of a run are: heads (``{head: (class, ...)}``), crop side and jitter in
    px at ``mpp`` um/px, and the verify head with its positive class (None: no verify head)."""

    heads: Mapping[str, tuple[str, ...]]
    side: int
    mpp: float
    jitter: int = 0
    verify_head: str | None = None
    verify_positive: str | None = None

    @property
    def context(self) -> int:
        """Side of the kept context of an entry, px (``side + 2 * jitter``)."""
        return self.side + 2 * self.jitter

    def point_targets(self, label: str | None) -> tuple[int, ...]:
        """One target per head for a point labelled ``label`` (None: no class known)."""
        out = []
        for head, classes in self.heads.items():
            if head == self.verify_head:
                out.append(classes.index(self.verify_positive))
            else:
                out.append(classes.index(label) if label in classes else IGNORE)
        return tuple(out)

    def negative_targets(self) -> tuple[int, ...] | None:
        """One target per head for a negative (None without a verify head: no use for it)."""
        if self.verify_head is None:
            return None
        classes = self.heads[self.verify_head]
        negative = next(i for i, c in enumerate(classes) if c != self.verify_positive)
        return tuple(negative if h == self.verify_head else IGNORE for h in self.heads)


@dataclass
class CropSet:
    """Entries of one split: ``contexts (N, C, C, 3)`` uint8 (``C`` = :attr:`CropPlan.context`),
    ``targets (N, H)`` int64 (one per head, -100 = ignored), ``kinds (N,)`` int8 (0 point,
    1 hard negative, 2 mined candidate) and the source image id of each."""

    spec: CropPlan
    contexts: np.ndarray
    targets: np.ndarray
    kinds: np.ndarray
    ids: list[str]

    def __len__(self) -> int:
        return len(self.targets)

    def buckets(self) -> list[np.ndarray]:
        """Entry indices of every (head, class) pair that has entries (heads, then classes, in
        order): what class-balanced sampling draws from."""
        out = []
        for h, classes in enumerate(self.spec.heads.values()):
            for c in range(len(classes)):
                idx = np.flatnonzero(self.targets[:, h] == c)
                if len(idx):
                    out.append(idx)
        return out

    def bucket_heads(self) -> list[int]:
        """The head index of each of :meth:`buckets`."""
        return [h for h in range(len(self.spec.heads))
                for c in range(len(list(self.spec.heads.values())[h]))
                if (self.targets[:, h] == c).any()]

    def centre_crops(self) -> np.ndarray:
        """``(N, side, side, 3)`` uint8: every entry's crop without jitter (validation)."""
        j, s = self.spec.jitter, self.spec.side
        return self.contexts[:, j:j + s, j:j + s]

    def counts(self) -> dict[str, dict[str, int]]:
        """Entries per head and class: ``{head: {class: n}}``."""
        return {head: {c: int((self.targets[:, h] == k).sum()) for k, c in enumerate(classes)}
                for h, (head, classes) in enumerate(self.spec.heads.items())}


def build_crop_set(reader: Any, spec: CropPlan, *, hard: bool = True, mined: Any = None,
                   where: str = "data.train", check_classes: bool = False,
                   exclude_um: float = 0.0) -> CropSet:
    """Every point (and negative) of ``reader`` as a :class:`CropSet` entry (images decoded
    once each, in order).

    Args:
        reader: a dataset reader (a sequence of :class:`partsup.types.Sample`).
        spec: the crops.
        hard: use the samples' ``hard_negatives`` as negatives.
        mined: mined candidates, negatives too: ``mined.get(image id)`` gives ``(M, 2)`` x, y
            px or None (a dict works); those within ``exclude_um`` micrometres of one of the
            image's points are left out (detections of real objects, not false alarms).
        where: the recipe key of the dataset, for errors.
        check_classes: refuse a class of a labelling head that no point carries.

    Raises:
        DataError: the dataset has no images or no points.
        RecipeError: (``check_classes``) a class of a labelling head that no point carries.
    """
    contexts, targets, kinds, ids = [], [], [], []
    labels_seen: set[str] = set()
    n_points = 0
    negative = spec.negative_targets()
    if len(reader) == 0:
        raise DataError(f"{where}: the dataset has no images")
    for i in range(len(reader)):
        s = reader[i]
        labels: Sequence[str | None] = tuple(s.point_labels) or (None,) * len(s.points)
        if len(labels) != len(s.points):
            raise DataError(f"{where}: sample {s.id!r} has {len(s.points)} points but "
                            f"{len(labels)} point labels")
        n_points += len(s.points)
        labels_seen.update(str(v) for v in labels if v)
        entries: list[tuple[np.ndarray, tuple[int, ...], int]] = [
            (p, spec.point_targets(lab), 0) for p, lab in zip(s.points, labels)]
        if negative is not None:
            negs = [(s.hard_negatives if hard else np.zeros((0, 2)), 1)]
            found = mined.get(s.id) if mined is not None else None
            if found is not None:
                negs.append((_far_from(found, s.points, exclude_um / s.mpp), 2))
            entries += [(p, negative, kind) for pts, kind in negs for p in pts]
        entries = [e for e in entries if any(t != IGNORE for t in e[1])]
        if not entries:
            continue
        cut = extract_crops(s.image, np.stack([e[0] for e in entries]), s.mpp,
                            spec.context * spec.mpp, spec.mpp)
        contexts.append(cut.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
        targets += [e[1] for e in entries]
        kinds += [e[2] for e in entries]
        ids += [s.id] * len(entries)
    if n_points == 0:
        raise DataError(f"{where}: the dataset has no points; a crop classifier trains and "
                        f"validates on crops around points")
    if check_classes:
        _check_classes(spec, labels_seen)
    c = spec.context
    empty = np.zeros((0, c, c, 3), np.uint8)
    return CropSet(spec, np.concatenate(contexts) if contexts else empty,
                   np.asarray(targets, np.int64).reshape(-1, len(spec.heads)),
                   np.asarray(kinds, np.int8), ids)


def _far_from(candidates: np.ndarray, points: np.ndarray, distance: float) -> np.ndarray:
    cand = np.asarray(candidates, np.float64).reshape(-1, 2)
    if distance <= 0 or len(points) == 0 or len(cand) == 0:
        return cand
    d = np.linalg.norm(cand[:, None, :] - np.asarray(points, np.float64)[None], axis=2)
    return cand[d.min(axis=1) >= distance]


def _check_classes(spec: CropPlan, labels_seen: set[str]) -> None:
    for head, classes in spec.heads.items():
        if head == spec.verify_head:
            continue
        unknown = [c for c in classes if c not in labels_seen]
        if unknown:
            found = ", ".join(sorted(labels_seen)) or "none (the dataset gives no point labels)"
            raise RecipeError(f"classifier.heads.{head}: class {unknown[0]!r} is the label of "
                              f"no training point (labels found: {found}); a labelling head's "
                              f"classes are point labels")


class CropDataset(Dataset):
    """Training items of a :class:`CropSet`, deterministic in ``(seed, epoch, index)`` (see
    the module docstring); ``length`` items per epoch (default: the number of entries).

    Item: ``{"image": (3, side, side) float32 RGB 0..255, "targets": (H,) int64}``: the
    target of the head drawn, -100 for the others.
    """

    def __init__(self, crops: CropSet, augment: AugmentConfig, seed: int = 0,
                 length: int | None = None, epoch: int = 0) -> None:
        self.crops, self.augment, self.seed = crops, augment, int(seed)
        self.buckets, self.bucket_heads = crops.buckets(), crops.bucket_heads()
        if not self.buckets:
            raise DataError("data.train: no training crop has a target (no point, or no "
                            "negative for the verify head)")
        self.length = max(1, int(length if length is not None else len(crops)))
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index), 0xC207])
        b = int(rng.integers(len(self.buckets)))
        k = int(self.buckets[b][int(rng.integers(len(self.buckets[b])))])
        spec = self.crops.spec
        ox, oy = (int(v) for v in rng.integers(0, 2 * spec.jitter + 1, 2))
        crop = self.crops.contexts[k, oy:oy + spec.side, ox:ox + spec.side]
        quarter, flip = int(rng.integers(4)), bool(rng.integers(2))
        colour_seed = int(rng.integers(2 ** 31))
        if self.augment.geometric:
            crop = np.rot90(crop, quarter)
            if flip:
                crop = crop[:, ::-1]
        crop = np.ascontiguousarray(crop)
        if (jitter := colour(self.augment, colour_seed)) is not None:
            crop = jitter(image=crop)["image"]
        targets = np.full(len(spec.heads), IGNORE, np.int64)
        head = self.bucket_heads[b]
        targets[head] = self.crops.targets[k, head]  # the drawn head only: balanced classes
        return {"image": torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float(),
                "targets": torch.from_numpy(targets)}


def collate_crops(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """``{"image": (B, 3, S, S) float32, "targets": (B, H) int64}``."""
    return {"image": torch.stack([b["image"] for b in batch]),
            "targets": torch.stack([b["targets"] for b in batch])}


def jitter_px(jitter_um: float, mpp: float) -> int:
    """The largest centre shift in px at ``mpp`` um/px for ``jitter_um`` micrometres."""
    return int(math.floor(float(jitter_um) / float(mpp) + 1e-9))
