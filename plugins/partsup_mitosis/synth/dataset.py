"""A synthetic dataset on disk (:func:`generate`): images rendered from per-image seeds, written
in a real dataset's layout, with the reader options of every split (:class:`SynthDataset`, also
in ``<root>/synth.yaml``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from partsup.plugin import DataError
from partsup_mitosis.synth.image import render
from partsup_mitosis.synth.layouts import LAYOUTS


@dataclass
class SynthDataset:
    """What :func:`generate` wrote.

    Attributes:
        root: the dataset folder.
        like: the layout / style written.
        splits: per split (``train``, ``val``, ``test``), the dataset component to read it back:
            ``{"name": <reader>, "root": <path>, "split": <split>, **reader options}``, usable
            as ``registries.datasets.build(**spec)`` or as a recipe's ``data.<set>`` value.
        counts: per split, ``{"images": n, "mitoses": n, "mimics": n}``.
        seconds: wall time of the generation.
    """

    root: Path
    like: str
    splits: dict[str, dict] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0

    def manifest(self) -> dict:
        """Plain-data description (also written to ``<root>/synth.yaml``)."""
        return {"like": self.like, "root": str(self.root), "splits": self.splits,
                "counts": self.counts, "seconds": round(self.seconds, 3)}


def split_sizes(n_images: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Images per split: at least one test image from 2 images, one val image from 3."""
    n_test = max(1 if n_images >= 2 else 0, int(round(test_fraction * n_images)))
    n_val = max(1 if n_images >= 3 and val_fraction > 0 else 0, int(round(val_fraction * n_images)))
    n_val = min(n_val, max(0, n_images - n_test - 1))
    return {"train": n_images - n_test - n_val, "val": n_val, "test": n_test}


MANIFEST = "synth.yaml"

#: per-style stream of image seeds, so that styles do not share their tissue layouts
STYLE_STREAM = {"icpr2012": 1, "icpr2014": 2, "amida13": 3, "midog": 4}


def image_rng(seed: int, like: str, i: int) -> np.random.Generator:
    """The generator of image ``i`` of ``generate(..., like=like, seed=seed)``."""
    return np.random.default_rng([seed, STYLE_STREAM[like], i])


def generate(out: str | Path, like: str = "amida13", n_images: int = 24, seed: int = 0,
             size: tuple[int, int] | int | None = None, density: float = 12.0,
             mimic_ratio: float = 3.5, val_fraction: float = 0.15,
             test_fraction: float = 0.25, overwrite: bool = False) -> SynthDataset:
    """Write a synthetic dataset in the real on-disk layout of ``like``.

    Image ``i`` is rendered from :func:`image_rng` ``(seed, like, i)`` in the style ``like``
    (so the first images do not change with ``n_images``, and styles do not share layouts);
    the test-split images come first, then val, then train. The registered reader of the same
    name loads the result; ``SynthDataset.splits`` holds the reader options for each split (also
    in ``<out>/synth.yaml``).

    Args:
        out: folder to create (must be empty or absent unless ``overwrite``).
        like: ``icpr2012`` | ``icpr2014`` | ``amida13`` | ``midog``.
        n_images: number of images in all splits together.
        seed: the generator's seed.
        size: ``(H, W)`` or a side, px (default: the style's size).
        density: expected mitotic figures per megapixel.
        mimic_ratio: expected mimics per expected figure.
        val_fraction, test_fraction: shares of the images in val and test.
        overwrite: allow writing into a non-empty folder.
    """
    import time
    t0 = time.perf_counter()
    if like not in LAYOUTS:
        raise DataError(f"synth: unknown layout {like!r}; expected one of {', '.join(LAYOUTS)}")
    if n_images < 1:
        raise DataError(f"synth: --images must be at least 1 (got {n_images})")
    root = Path(out).expanduser()
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise DataError(f"synth: output folder {root} is not empty (choose another or overwrite)")
    root.mkdir(parents=True, exist_ok=True)
    sizes = split_sizes(n_images, val_fraction, test_fraction)
    layout = LAYOUTS[like](root, sizes)
    order = ["test"] * sizes["test"] + ["val"] * sizes["val"] + ["train"] * sizes["train"]
    counts = {s: {"images": 0, "mitoses": 0, "mimics": 0} for s in sizes if sizes[s]}
    if like == "midog":  # the MIDOG reader draws its own split (same fractions)
        counts = {"all": {"images": 0, "mitoses": 0, "mimics": 0}}
    for i, split in enumerate(order):
        rng = image_rng(seed, like, i)
        im = render(rng, like, size, density, mimic_ratio)
        layout.write(split, im, rng)
        c = counts["all" if like == "midog" else split]
        c["images"] += 1
        c["mitoses"] += len(im.points)
        c["mimics"] += len(im.mimics)
    layout.finish()
    ds = SynthDataset(root=root, like=like, splits=layout.specs(), counts=counts,
                      seconds=time.perf_counter() - t0)
    import yaml  # a .json here would clash with the MIDOG reader's search for its annotation file
    (root / MANIFEST).write_text(yaml.safe_dump(ds.manifest(), sort_keys=False))
    return ds
