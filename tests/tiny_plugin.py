"""A tiny plugin for training tests: a two-conv backbone and an in-memory dataset.

Loaded by dotted name (``--plugin tiny_plugin`` with ``tests/`` on ``PYTHONPATH``, or through a
recipe's ``plugins:``), exactly like a third-party plugin. Small enough that a few training steps
take milliseconds on one CPU thread.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from partsup.plugin import Branch, Sample, hookimpl, named_normalization

#: seconds to sleep in every training forward (``TINY_PLUGIN_DELAY``; 0 = none)
DELAY = float(os.environ.get("TINY_PLUGIN_DELAY", "0") or 0)


class TinyBranch(Branch):
    """conv3x3(3->w) -> ReLU -> conv3x3 stride 2 (w->w) -> ReLU -> dropout -> semantic 1x1;
    head: bilinear upsampling to the input size."""

    def __init__(self, width: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.drop = nn.Dropout(dropout)
        self.semantic = nn.Conv2d(width, 2, 1)
        self.feature_channels = width
        self.normalization = named_normalization("unit")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if DELAY and self.training:  # slows training down so a test can stop it mid-way
            time.sleep(DELAY)
        return self.drop(F.relu(self.conv2(F.relu(self.conv1(x)))))

    def head(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def tiny(width: int = 8, dropout: float = 0.1, weights: str | None = None) -> TinyBranch:
    """A two-conv test backbone (``weights`` accepted and ignored, like a weight file option)."""
    return TinyBranch(width, dropout)


class TinyDataset:
    """``n`` images of ``size`` px: dark disks (mitoses, with masks) on a noisy pink field.

    Deterministic for ``(seed, split)``; ``masks`` False gives a points-only (set B) dataset.
    """

    LAYOUT = "(in memory: nothing on disk)"

    def __init__(self, root: str = "", split: str = "train", strict: bool = True, n: int = 4,
                 size: int = 48, per_image: int = 2, masks: bool = True, seed: int = 0,
                 mpp: float = 0.25) -> None:
        offset = {"train": 0, "val": 1000, "test": 2000}.get(split, 3000)
        self.samples = [self._make(np.random.default_rng(seed + offset + i), i, size, per_image,
                                   masks, mpp, split) for i in range(n)]

    @staticmethod
    def _make(rng: np.random.Generator, i: int, size: int, k: int, masks: bool, mpp: float,
              split: str) -> Sample:
        img = np.empty((size, size, 3), np.float32)
        img[:] = (230, 180, 200)
        img += rng.normal(0, 8, img.shape)
        yy, xx = np.mgrid[:size, :size]
        mask = np.zeros((size, size), np.uint8)
        pts = []
        for _ in range(k):
            x, y = rng.uniform(8, size - 8, 2)
            disk = (xx - x) ** 2 + (yy - y) ** 2 <= 16
            img[disk] = (60, 30, 90)
            mask[disk] = 1
            pts.append((x, y))
        return Sample(image=np.clip(img, 0, 255).astype(np.uint8),
                      points=np.asarray(pts, np.float32), mask=mask if masks else None,
                      mpp=mpp, id=f"{split}/{i}", group=f"{split}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    # the cheap accessors of partsup.data.readers.Reader that the sampler uses
    def points(self, i: int) -> np.ndarray:
        return self.samples[i].points

    def hard_negatives(self, i: int) -> np.ndarray:
        return self.samples[i].hard_negatives

    def num_points(self) -> int:
        return int(sum(len(s.points) for s in self.samples))


def tiny_dataset(root: str = "", split: str = "train", strict: bool = True, n: int = 4,
                 size: int = 48, per_image: int = 2, masks: bool = True, seed: int = 0,
                 mpp: float = 0.25) -> TinyDataset:
    """In-memory toy images with dark disks (for tests), ``mpp`` um/px."""
    return TinyDataset(root, split, strict, n, size, per_image, masks, seed, mpp)


@hookimpl
def partsup_register_backbones(register: Callable[..., Any]) -> None:
    register("tiny", tiny)


@hookimpl
def partsup_register_datasets(register: Callable[..., Any]) -> None:
    register("tiny", tiny_dataset)
