"""Tiled inference: probability maps of a whole image of any size.

``image (H, W, 3) uint8 --infer_maps--> P_weak, P_strong (H, W) float32``: overlapping tiles
(:class:`_Axis` plans them per axis), reflect-padded only when a side is under
:data:`PAD_MULTIPLE` px, run in batches, blended seam-free with separable ramps; optional
test-time augmentation over the 8 dihedral transforms (:func:`dihedral_maps`).
Coordinates are pixels, x = column, y = row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from partsup.runtime import autocast, resolve_device

#: tile sides smaller than the tile size are padded up to a multiple of this (most backbones
#: need a multiple of 32: five stride-2 stages)
PAD_MULTIPLE = 32
#: blending weight of the outermost overlap/4 pixels of a tile edge inside the image
EDGE_WEIGHT = 1e-6


@dataclass(frozen=True)
class _Axis:
    """Tiling of one image axis: tile ``side``, blending ``overlap`` and the tile ``starts``."""

    length: int
    side: int
    overlap: int
    starts: tuple[int, ...]

    @classmethod
    def plan(cls, length: int, tile: int, overlap: int, multiple: int = PAD_MULTIPLE) -> "_Axis":
        """Tiles of side ``tile`` inside ``[0, length)``, the last one ending at ``length``.

        An axis shorter than ``tile`` is covered by tiles of the largest multiple of
        ``multiple`` that fits (so no padding is needed and the result matches larger tiles);
        an axis shorter than ``multiple`` gets one tile, padded by reflection.
        """
        side = tile if length >= tile else (length // multiple * multiple or length)
        ov = min(overlap, side // 2)
        if length <= side:
            starts = [0]
        else:
            starts = list(range(0, length - side, side - ov)) + [length - side]
        return cls(length, side, ov, tuple(sorted(set(starts))))

    def ramp(self, start: int) -> np.ndarray:
        """Blending weight ``(n,)`` float64 of the tile at ``start`` (n = its length here).

        Towards an edge inside the image the weight falls over ``overlap`` pixels: a squared
        ramp, then a margin of ``overlap // 4`` pixels at :data:`EDGE_WEIGHT` (where convolution
        padding disturbs the tile's output most). Edges on the image border keep weight 1.
        """
        n = min(self.side, self.length - start)
        w = np.ones(n, np.float64)
        k = min(self.overlap, n)
        if k > 0:
            m = k // 4
            r = np.concatenate([np.full(m, EDGE_WEIGHT),
                                ((np.arange(k - m) + 0.5) / (k - m)) ** 2])
            if start > 0:
                w[:k] = np.minimum(w[:k], r)
            if start + n < self.length:
                w[n - k:] = np.minimum(w[n - k:], r[::-1])
        return w

    def weight_sum(self) -> np.ndarray:
        """Sum of the ramps of all tiles, ``(length,)`` float64 (> 0 everywhere)."""
        total = np.zeros(self.length, np.float64)
        for s in self.starts:
            r = self.ramp(s)
            total[s: s + len(r)] += r
        return total


def _pad_to(tile: np.ndarray, multiple: int) -> np.ndarray:
    """Reflect-pad an ``(h, w, 3)`` tile at the bottom/right to multiples of ``multiple``."""
    h, w = tile.shape[:2]
    ph, pw = (-h) % multiple if h < multiple else 0, (-w) % multiple if w < multiple else 0
    if ph == 0 and pw == 0:
        return tile
    return np.pad(tile, ((0, ph), (0, pw), (0, 0)), mode="symmetric")


def _prepare(model: Any, dev: torch.device) -> bool:
    """Move ``model`` to ``dev`` and switch it to eval mode; return its previous training flag.

    The weights keep their memory format: channels-last inputs alone make cuDNN pick
    channels-last kernels, and a model being trained is not altered behind its optimiser.
    """
    if hasattr(model, "to"):
        model.to(dev)
    was_training = bool(getattr(model, "training", False))
    if hasattr(model, "eval"):
        model.eval()
    return was_training


@torch.inference_mode()
def infer_maps(model: Any, image: np.ndarray, tile: int = 512, overlap: int = 64,
               batch_tiles: int = 4, device: str | torch.device = "cpu", amp: bool = True,
               tta: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Probability maps of a whole image of any size, by overlapping tiles blended seam-free.

    Each tile is preprocessed on its own (``model.preprocess``), so memory stays bounded by the
    tile batch plus one or two float32 accumulators of the image size. Tile weights are
    separable ramps that vanish towards tile edges inside the image, so the blend has no seams
    and the result depends on ``tile`` only within blending tolerance. Tiles always lie inside
    the image (no padding unless a side is under 32 px). On CUDA, tiles run in bf16 autocast
    with channels-last inputs; on CPU in float32. The model runs in eval mode and gets its
    training flag back afterwards.

    Args:
        model: object with ``preprocess(image uint8 (h, w, 3)) -> (1, 3, h, w) float32`` and
            ``probabilities(x (B, 3, h, w)) -> (p_weak (B, h, w), p_strong (B, h, w) | None)``.
        image: ``(H, W, 3)`` uint8 RGB.
        tile, overlap: tile side and overlap, pixels (tile > overlap >= 0).
        batch_tiles: tiles per forward pass.
        device: torch device (``"auto"`` allowed); the model is moved there.
        amp: use bf16 autocast on CUDA (ignored on CPU).
        tta: average each tile's maps over its 8 dihedral transforms (see :func:`dihedral_maps`).

    Returns:
        ``(p_weak, p_strong)``: ``(H, W)`` float32 in [0, 1]; ``p_strong`` None for weak-only
        models.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"infer_maps: expected an (H, W, 3) uint8 image, got "
                         f"{image.shape} {image.dtype}")
    if tile < 1 or not 0 <= overlap < tile or batch_tiles < 1:
        raise ValueError(f"infer_maps: need tile > overlap >= 0 and batch_tiles >= 1, got "
                         f"tile={tile}, overlap={overlap}, batch_tiles={batch_tiles}")
    dev = resolve_device(device)
    was_training = _prepare(model, dev)
    h, w = image.shape[:2]
    ay, ax = _Axis.plan(h, tile, overlap), _Axis.plan(w, tile, overlap)
    acc: dict[str, np.ndarray] = {"weak": np.zeros((h, w), np.float32)}
    boxes = [(y, x) for y in ay.starts for x in ax.starts]
    try:
        for i in range(0, len(boxes), batch_tiles):
            _run_batch(model, image, boxes[i: i + batch_tiles], ay, ax, acc, dev, amp, tta)
    finally:
        if was_training:
            model.train()
    iy = (1.0 / ay.weight_sum()).astype(np.float32)[:, None]
    ix = (1.0 / ax.weight_sum()).astype(np.float32)[None, :]
    for a in acc.values():  # normalise in place: no second full-size array
        a *= iy
        a *= ix
        np.clip(a, 0.0, 1.0, out=a)
    return acc["weak"], acc.get("strong")


def dihedral_maps(model: Any, inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``model.probabilities`` averaged over the 8 dihedral transforms of ``inp``.

    Each transform (``k`` quarter turns, then an optional mirror of the last axis) is applied
    to the ``(B, 3, h, w)`` input and undone on the ``(B, h, w)`` maps before averaging, so
    the result is aligned with ``inp`` pixel for pixel.
    """
    sums: list[torch.Tensor | None] = [None, None]
    for k in range(8):
        x = torch.rot90(inp, k % 4, dims=(2, 3))
        x = torch.flip(x, dims=(3,)) if k >= 4 else x
        for j, m in enumerate(model.probabilities(x)):
            if m is None:
                continue
            m = m.float()
            m = torch.flip(m, dims=(2,)) if k >= 4 else m
            m = torch.rot90(m, -(k % 4), dims=(1, 2))
            sums[j] = m if sums[j] is None else sums[j] + m
    return sums[0] / 8.0, (None if sums[1] is None else sums[1] / 8.0)  # type: ignore[operator]


def _run_batch(model: Any, image: np.ndarray, boxes: list[tuple[int, int]], ay: _Axis,
               ax: _Axis, acc: dict[str, np.ndarray], dev: torch.device, amp: bool,
               tta: bool = False) -> None:
    """Run one batch of tiles and add their weighted probabilities into ``acc``."""
    crops = [image[y: y + ay.side, x: x + ax.side] for y, x in boxes]
    xs = [torch.as_tensor(model.preprocess(_pad_to(c, PAD_MULTIPLE))) for c in crops]
    inp = torch.cat(xs).to(dev, non_blocking=True)
    if dev.type == "cuda":
        inp = inp.contiguous(memory_format=torch.channels_last)
    with autocast(dev, amp):
        p_weak, p_strong = dihedral_maps(model, inp) if tta else model.probabilities(inp)
    maps = {"weak": p_weak.float().cpu().numpy()}
    if p_strong is not None:
        maps["strong"] = p_strong.float().cpu().numpy()
        acc.setdefault("strong", np.zeros_like(acc["weak"]))
    for i, ((y, x), crop) in enumerate(zip(boxes, crops)):
        th, tw = crop.shape[:2]
        wt = np.outer(ay.ramp(y), ax.ramp(x)).astype(np.float32)
        for key, m in maps.items():
            acc[key][y: y + th, x: x + tw] += wt * m[i, :th, :tw]
