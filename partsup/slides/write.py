"""Writing multi-level tiled TIFFs (level 0 plus 2x-reduced levels as SubIFDs, resolution tags in
px/cm) from a function that renders any box, so slides larger than memory can be made for tests
and benchmarks; :class:`partsup.slides.reader.SlideReader` reads them back."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

#: ``render(x, y, width, height) -> (height, width, 3) uint8`` of level 0
Render = Callable[[int, int, int, int], np.ndarray]


def from_array(image: np.ndarray) -> Render:
    """A :data:`Render` cutting boxes out of an in-memory ``(H, W, 3)`` uint8 image (white
    outside)."""
    def render(x: int, y: int, w: int, h: int) -> np.ndarray:
        out = np.full((h, w, 3), 255, np.uint8)
        part = image[y: y + h, x: x + w]
        out[: part.shape[0], : part.shape[1]] = part
        return out
    return render


def write_pyramid(path: str | Path, render: Render, width: int, height: int, mpp: float,
                  tile: int = 256, levels: int = 3, compression: str | None = "zlib") -> Path:
    """Write a ``width x height`` slide at ``mpp`` um/px tile by tile (memory: one tile per
    level) with ``levels`` levels, each half the size of the one before (block mean; a render
    with the attribute ``steps = True`` is instead called as ``render(x, y, w, h, step=f)`` and
    returns level ``k``'s pixels itself, sampled every ``f = 2 ** k`` level-0 px)."""
    import tifffile
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    res = (1e4 / mpp, 1e4 / mpp)

    def tiles(k: int) -> Iterator[np.ndarray]:
        f = 2 ** k
        lw, lh = width // f, height // f
        for ty in range(0, lh, tile):
            for tx in range(0, lw, tile):
                if f > 1 and getattr(render, "steps", False):  # renders level k itself
                    yield render(tx * f, ty * f, tile, tile, step=f)
                    continue
                box = render(tx * f, ty * f, tile * f, tile * f).astype(np.float32)
                yield np.round(box.reshape(tile, f, tile, f, 3).mean(axis=(1, 3))
                               ).astype(np.uint8)

    n = max(1, min(levels, 1 + int(math.log2(max(1, min(width, height) // tile)))))
    opts = dict(tile=(tile, tile), photometric="rgb", compression=compression,
                dtype=np.uint8)
    with tifffile.TiffWriter(path, bigtiff=width * height * 3 > 2 ** 31) as tw:
        tw.write(tiles(0), shape=(height, width, 3), subifds=n - 1, resolution=res,
                 resolutionunit="CENTIMETER", description=f"partsup synthetic slide|MPP = {mpp}",
                 **opts)
        for k in range(1, n):
            tw.write(tiles(k), shape=(height // 2 ** k, width // 2 ** k, 3), subfiletype=1,
                     resolution=(res[0] / 2 ** k, res[1] / 2 ** k),
                     resolutionunit="CENTIMETER", **opts)
    return path
