"""Helpers that write tiny datasets in each reader's exact on-disk format (for tests).

Images are small, non-square (H != W, so row/column mix-ups fail) and deterministic. Points are
given as x (column), y (row) unless a function says otherwise; each writer converts to its
format's own order (e.g. AMIDA13 writes ``row,col``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

SHAPE = (48, 64)  # (H, W)


def make_image(shape: tuple[int, int] = SHAPE, seed: int = 0) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB pinkish noise."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (*shape, 3), dtype=np.uint8)
    return img + np.array([180, 120, 170], np.uint8)


def write_image(path: Path, image: np.ndarray | None = None, shape: tuple[int, int] = SHAPE,
                seed: int = 0) -> Path:
    """Write ``image`` (default :func:`make_image`) in the format given by ``path``'s suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = make_image(shape, seed) if image is None else image
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile
        tifffile.imwrite(path, img, photometric="rgb" if img.ndim == 3 else None)
    else:
        from PIL import Image
        Image.fromarray(img).save(path)
    return path


def _lines(path: Path, rows: Iterable[Sequence[float]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(",".join(f"{v:g}" for v in row) + "\n" for row in rows))
    return path


def disk_pixels(x: int, y: int, r: int = 3) -> list[tuple[int, int]]:
    """Integer pixels (x, y) of a disk: a mitosis mask as ICPR 2012 lists it."""
    return [(x + dx, y + dy) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
            if dx * dx + dy * dy <= r * r]


def write_icpr2012(root: Path, images: dict[str, list[list[tuple[int, int]]]],
                   split: str | None = "train", shape: tuple[int, int] = SHAPE) -> Path:
    """``<root>/<split>/<slide>_v2/<name>.bmp`` + ``<name>.csv`` (one line per mitosis, x,y pairs)."""
    for k, (name, mitoses) in enumerate(images.items()):
        folder = (root / split if split else root) / f"{name.rsplit('_', 1)[0]}_v2"
        write_image(folder / f"{name}.bmp", shape=shape, seed=k)
        _lines(folder / f"{name}.csv", [[c for px in pix for c in px] for pix in mitoses])
    return root


def write_icpr2014(root: Path, frames: dict[str, tuple[list, list]],
                   shape: tuple[int, int] = SHAPE) -> Path:
    """``<root>/<case>/frames/x40/<frame>.tiff`` + ``mitosis/<frame>_mitosis.csv`` and
    ``_not_mitosis.csv`` with ``x,y,confidence`` lines; ``frames = {frame: (mitoses, negatives)}``
    with rows (x, y, confidence); the case is the frame name before ``_``."""
    for k, (frame, (pos, neg)) in enumerate(frames.items()):
        case = frame.split("_")[0]
        write_image(root / case / "frames" / "x40" / f"{frame}.tiff", shape=shape, seed=k)
        _lines(root / case / "mitosis" / f"{frame}_mitosis.csv", pos)
        _lines(root / case / "mitosis" / f"{frame}_not_mitosis.csv", neg)
    return root


def write_amida13(root: Path, tiles: dict[str, list[tuple[float, float]] | None],
                  shape: tuple[int, int] = SHAPE) -> Path:
    """``mitoses_image_data/<case>/<tile>.tif`` + ``mitoses_ground_truth/<case>/<tile>.csv``.

    ``tiles = {"case/tile": [(x, y), ...] or None}``; the CSV gets ``row,col`` = ``y,x`` lines;
    None writes no CSV (a tile without mitoses).
    """
    for k, (key, pts) in enumerate(tiles.items()):
        case, tile = key.split("/")
        write_image(root / "mitoses_image_data" / case / f"{tile}.tif", shape=shape, seed=k)
        (root / "mitoses_ground_truth" / case).mkdir(parents=True, exist_ok=True)
        if pts is not None:
            _lines(root / "mitoses_ground_truth" / case / f"{tile}.csv", [(y, x) for x, y in pts])
    return root


def write_midog(root: Path, images: dict[str, tuple[list, list]], shape: tuple[int, int] = SHAPE,
                with_images: bool = True, tumor_type: str = "human breast cancer",
                name: str = "MIDOG.json") -> Path:
    """A MIDOG-style JSON: ``images = {file_name: (mitoses [(x, y)], hard_negatives [(x, y)])}``;
    each point becomes a 50x50 box ``[x-25, y-25, x+25, y+25]`` (category 1 or 2)."""
    root.mkdir(parents=True, exist_ok=True)
    data: dict = {"images": [], "annotations": [],
                  "categories": [{"id": 1, "name": "mitotic figure"},
                                 {"id": 2, "name": "not mitotic figure"}]}
    for i, (fname, (pos, neg)) in enumerate(images.items(), start=1):
        data["images"].append({"id": i, "file_name": fname, "width": shape[1],
                               "height": shape[0], "tumor_type": tumor_type})
        for cat, pts in ((1, pos), (2, neg)):
            for x, y in pts:
                data["annotations"].append({"id": len(data["annotations"]) + 1, "image_id": i,
                                            "category_id": cat,
                                            "bbox": [x - 25, y - 25, x + 25, y + 25]})
        if with_images:
            write_image(root / fname, shape=shape, seed=i)
    (root / name).write_text(json.dumps(data))
    return root / name


def write_folder(root: Path, images: dict[str, list[tuple[float, float, int]]],
                 masks: dict[str, np.ndarray] | None = None, shape: tuple[int, int] = SHAPE,
                 suffix: str = ".png", with_csv: bool = True) -> Path:
    """``images/<name><suffix>``, ``points.csv`` (image,x,y,label), optional ``masks/<name>.png``."""
    from PIL import Image
    for k, name in enumerate(images):
        write_image(root / "images" / f"{name}{suffix}", shape=shape, seed=k)
    if with_csv:
        rows = ["image,x,y,label"] + [f"{n}{suffix},{x:g},{y:g},{lab}"
                                      for n, pts in images.items() for x, y, lab in pts]
        (root / "points.csv").write_text("\n".join(rows) + "\n")
    for name, mask in (masks or {}).items():
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray((mask > 0).astype(np.uint8) * 255).save(root / "masks" / f"{name}.png")
    return root
