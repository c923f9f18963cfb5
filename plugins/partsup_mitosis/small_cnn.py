"""A small from-scratch CNN for the checks of the bundled data, not a model of the library.

Two benches ask a question about *data* by training a deliberately small network for a few
minutes of CPU wall time: ``bench/synth_baseline.py`` (can a small CNN tell the synthetic
figures from their mimics, where a hematoxylin threshold cannot: the difficulty window of
docs/datasets.md) and ``bench/amibr_counterfactual.py`` (does a model trained on ``ami-br``
fields follow the figures or the places figures used to be). Both use the network, the target,
the training loop and the blob read-out here, so they train the same thing:

* :class:`SmallUNet`: 3 levels (16-32-64 channels, about 0.12 M parameters), one logit per pixel;
* :func:`disc_target`: a ``{0, 1}`` disc of a fixed radius at each figure;
* :func:`train_for`: AdamW (lr 3e-3) on binary cross-entropy with a positive weight, for a
  budget of *seconds* (what the benches fix and report), batches drawn by the caller;
* :func:`probability_blobs`: 8-connected blobs of probability > 0.5 with their probability-
  weighted centroid, mean probability and area.

Images enter the network as ``uint8 RGB / 255 - 0.5`` (:func:`to_input`). The library's own
training (``partsup train``: two branches, recipe losses and labels, a count of iterations) is
a different measurement; these numbers are quoted in docs/datasets.md as this network's.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn

__all__ = ["SmallUNet", "disc_target", "probability_blobs", "random_view", "to_input",
           "train_for"]


def _block(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(True),
                         nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(True))


class SmallUNet(nn.Module):
    """U-Net-like network: ``(B, 3, H, W)`` float32 -> ``(B, 1, H, W)`` logits (H, W multiples
    of 4). Two max-pool levels down, nearest-neighbour upsampling and skip concatenation up;
    parameters drawn from torch's global generator (seed it first for a repeatable net)."""

    def __init__(self) -> None:
        super().__init__()
        self.e1, self.e2, self.e3 = _block(3, 16), _block(16, 32), _block(32, 64)
        self.d2, self.d1 = _block(64 + 32, 32), _block(32 + 16, 16)
        self.out = nn.Conv2d(16, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.e1(x)
        e2 = self.e2(nn.functional.max_pool2d(e1, 2))
        e3 = self.e3(nn.functional.max_pool2d(e2, 2))
        d2 = self.d2(torch.cat([nn.functional.interpolate(e3, scale_factor=2), e2], 1))
        d1 = self.d1(torch.cat([nn.functional.interpolate(d2, scale_factor=2), e1], 1))
        return self.out(d1)


def disc_target(points: np.ndarray, shape: tuple[int, int], radius: float) -> np.ndarray:
    """``(H, W)`` float32 target: 1 within ``radius`` px (``<=``) of any point, else 0.

    ``points``: ``(K, 2)`` x, y in px (x = column); ``shape``: ``(H, W)``."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    t = np.zeros((h, w), np.float32)
    for x, y in points:
        t[(xx - x) ** 2 + (yy - y) ** 2 <= radius * radius] = 1
    return t


def random_view(rng: np.random.Generator, image: np.ndarray, target: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """One of the 8 right-angle views of a patch and its target, drawn from ``rng`` (a
    rotation by k * 90 degrees, then a left-right flip half of the time).

    ``image``: ``(p, p, 3)`` uint8; ``target``: ``(p, p)``. Returns ``(3, p, p)`` (channels
    first: a transposed view of a contiguous copy) and a contiguous ``(1, p, p)``, of the
    inputs' dtypes."""
    k = int(rng.integers(4))
    a, b = np.rot90(image, k), np.rot90(target, k)
    if rng.random() < 0.5:
        a, b = a[:, ::-1], b[:, ::-1]
    return np.ascontiguousarray(a).transpose(2, 0, 1), np.ascontiguousarray(b)[None]


def to_input(images: np.ndarray) -> np.ndarray:
    """The network's input: ``(B, 3, H, W)`` uint8 RGB -> float32 ``value / 255 - 0.5``."""
    return np.asarray(images).astype(np.float32) / 255.0 - 0.5


def train_for(net: nn.Module, next_batch: Callable[[], tuple[np.ndarray, np.ndarray]],
              seconds: float, pos_weight: float, lr: float = 3e-3) -> int:
    """Train ``net`` in place until ``seconds`` of wall time have passed; returns the steps.

    Each step takes ``(x, y) = next_batch()`` (``x (B, 3, p, p)`` float32 from
    :func:`to_input`, ``y (B, 1, p, p)`` float32 in {0, 1}) and makes one AdamW step (``lr``,
    torch's default weight decay) on ``binary_cross_entropy_with_logits`` with ``pos_weight``.
    The budget is checked before each step (the last step may end after it). The network is in
    train mode during the loop and left in eval mode.
    """
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    weight = torch.tensor(float(pos_weight))
    t0, it = time.perf_counter(), 0
    net.train()
    while time.perf_counter() - t0 < seconds:
        x, y = next_batch()
        loss = nn.functional.binary_cross_entropy_with_logits(
            net(torch.from_numpy(x)), torch.from_numpy(y), pos_weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        it += 1
    net.eval()
    return it


def probability_blobs(net: nn.Module, image: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blobs of probability > 0.5 (8-connected) of one whole image.

    ``image``: ``(H, W, 3)`` uint8 RGB, H and W multiples of 4; ``net`` in eval mode. Returns
    ``(xy, score, area)``: ``(K, 2)`` float64 probability-weighted centroids x, y (px), ``(K,)``
    mean probability and ``(K,)`` area (px, float64), in label (raster) order.
    """
    with torch.no_grad():
        x = torch.from_numpy(to_input(image.transpose(2, 0, 1)[None]))
        prob = torch.sigmoid(net(x))[0, 0].numpy()
    lab, n = ndi.label(prob > 0.5, structure=np.ones((3, 3), bool))
    idx = np.arange(1, n + 1)
    xy = np.asarray(ndi.center_of_mass(prob, lab, idx)).reshape(-1, 2)[:, ::-1]
    return xy, np.asarray(ndi.mean(prob, lab, idx)).reshape(-1), \
        np.asarray(ndi.sum_labels(np.ones_like(prob), lab, idx)).reshape(-1)
