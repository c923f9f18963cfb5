"""The training batches: a stream of patch positions, sharded across ranks.

Every item is a pure function of ``(seed, epoch, index)`` (see :mod:`partsup.data.sampling`),
so the batch of a global iteration never depends on what ran before: resuming is exact.
Batches are collated patches: ``image (B, 3, H, W)`` float32 0..255, ``weak``/``strong``
``(B, H, W)`` int64 class maps, ``is_strong (B,)`` bool; ``B`` is ``train.batch_size`` per process.
A crop classifier's stream (:class:`CropStream`) shards and resumes the same way over the
crops of :mod:`partsup.data.crops`.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch

from partsup.errors import RecipeError
from partsup.manager import Registries
from partsup.runtime import Dist
from partsup.training.stages import Stage


class _Positions(torch.utils.data.Dataset):
    """Global item stream of one stage: position ``p`` is item ``p % L`` of epoch ``p // L``
    of a :class:`partsup.data.patches.PatchDataset` of ``L`` items per epoch."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:  # unbounded in principle; the batch sampler picks positions
        return 2 ** 62

    def __getitem__(self, p: int) -> dict[str, Any]:
        n = len(self.dataset)
        self.dataset.set_epoch(p // n)
        return self.dataset[p % n]


class TrainStream:
    """Batches for global iterations, sharded across ranks, from ``partsup.data.sampling``.

    Step ``i`` of a stage starting at ``s`` uses stream positions
    ``[(i - s) * G + r * B, (i - s) * G + (r + 1) * B)`` on rank ``r`` (``B`` = batch size per
    process, ``G = B * world``). Every item is a pure function of ``(seed, epoch, index)``, so
    the batch of step ``i`` never depends on what ran before: resuming is exact. Stage
    ``strong`` draws from set A only.
    """

    def __init__(self, recipe: dict[str, Any], registries: Registries, dist: Dist) -> None:
        from partsup.data import patches as pdata
        self.pdata = pdata
        self.data = pdata.build_training_data(recipe, registries)
        self._setup(recipe, dist, pdata.collate_patches)

    def _setup(self, recipe: dict[str, Any], dist: Dist, collate: Any) -> None:
        self.recipe, self.dist, self.collate = recipe, dist, collate
        self.batch_size = int(recipe["train"]["batch_size"])
        if self.batch_size < 1:
            raise RecipeError(f"train.batch_size: must be >= 1, got {self.batch_size}")
        self.workers = int(recipe["data"]["num_workers"])
        self.stage: Stage | None = None
        self._iter: Iterator[dict[str, Any]] | None = None
        self._next = -1

    def _dataset(self, stage: str) -> Any:
        if stage != "strong":
            return self.data.dataset
        d = self.data
        if d.strong is None:
            raise RecipeError("train.schedule: stagewise needs data.strong (set A) for its "
                              "strong stage")
        sampler = self.pdata.MixedSampler(d.strong, None, d.sampler.patch, d.sampler.augment,
                                          seed=d.sampler.seed)
        n = d.strong.num_points()
        length = max(1, math.ceil(n / max(d.sampler.patch.positive_fraction, 1e-6)))
        return self.pdata.PatchDataset(sampler, d.dataset.label_maker, length,
                                       label_maker_a=getattr(d.dataset, "label_maker_a", None))

    def set_stage(self, stage: Stage) -> None:
        """Draw the following batches for ``stage`` (set A only for ``strong``)."""
        self.stage, self._iter, self._next = stage, None, -1
        self._positions = _Positions(self._dataset(stage.name))

    def _indices(self, step: int) -> list[int]:
        assert self.stage is not None
        g = self.batch_size * self.dist.world
        first = (step - self.stage.start) * g + self.dist.rank * self.batch_size
        return list(range(first, first + self.batch_size))

    def batch(self, step: int) -> dict[str, Any]:
        """The batch of global iteration ``step`` for this rank (``partsup.data.sampling`` items
        collated: image ``(B, 3, H, W)`` float32 0..255, weak/strong ``(B, H, W)`` int64,
        is_strong ``(B,)`` bool)."""
        assert self.stage is not None, "set_stage first"
        if self._iter is None or step != self._next:
            steps = range(step, self.stage.end)
            loader = torch.utils.data.DataLoader(
                self._positions, batch_sampler=[self._indices(i) for i in steps],
                num_workers=self.workers, collate_fn=self.collate,
                persistent_workers=False,
                generator=torch.Generator().manual_seed(step))  # leaves the global RNG alone
            self._iter = iter(loader)
        self._next = step + 1
        return next(self._iter)

    def position(self) -> dict[str, Any]:
        """Where the stream stands (informative: batches are recomputed from the iteration)."""
        return {"stage": None if self.stage is None else self.stage.name,
                "next_step": self._next, "batch_size": self.batch_size,
                "world": self.dist.world}


class CropStream(TrainStream):
    """Batches of class-balanced training crops (:class:`partsup.data.crops.CropDataset`) for
    a crop classifier, sharded and resumable as :class:`TrainStream`'s: ``image (B, 3, S, S)``
    float32 RGB 0..255, ``targets (B, H)`` int64 (one per head, -100 = ignored)."""

    def __init__(self, recipe: dict[str, Any], crops: Any, dist: Dist) -> None:
        from partsup.data.crops import CropDataset, collate_crops
        from partsup.data.sampling import AugmentConfig
        self.crops = crops
        self.dataset = CropDataset(crops, AugmentConfig.from_recipe(recipe["data"]["augment"]),
                                   seed=int(recipe["seed"]))
        self._setup(recipe, dist, collate_crops)

    def _dataset(self, stage: str) -> Any:
        return self.dataset
