"""Regenerate the pictures of docs/datasets.md (section "Bundled data") (run from the repository root).

    python docs/img/make_bundled_data_figures.py

Writes docs/img/synth_styles.png (one synthetic image per style, then the same image with its
labels: green = mitotic figure mask outline / centroid, orange = mimic) and
docs/img/amibr_fields.png (ami-br fields: as listed with their labels, the same field with the
figures moved, and the construction: quilt seams, decoy discs, figure discs).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

from partsup_mitosis.synth import STYLES, render

OUT = Path(__file__).resolve().parent


def _label(im: Image.Image, text: str) -> Image.Image:
    d = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    d.rectangle([0, 0, 8 + 7 * len(text), 16], fill=(255, 255, 255))
    d.text((4, 2), text, fill=(0, 0, 0), font=font)
    return im


def _save(rgb: np.ndarray, name: str) -> None:
    """A 256-colour PNG (keeps the docs light)."""
    Image.fromarray(rgb).quantize(256, dither=Image.Dither.NONE).save(OUT / name, optimize=True)


def synth_styles() -> None:
    tiles = []
    for k, style in enumerate(STYLES):
        s = render(np.random.default_rng([3, k]), style, 384, density=30)
        raw = _label(Image.fromarray(s.image), f"{style} ({s.mpp} um/px)")
        ann = Image.fromarray(s.image)
        edge = (s.labels > 0) & ~ndi.binary_erosion(s.labels > 0, iterations=2)
        a = np.asarray(ann).copy()
        a[edge] = (0, 220, 0)
        ann = Image.fromarray(a)
        d = ImageDraw.Draw(ann)
        for (x, y), ph in zip(s.points, s.phases):
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(0, 220, 0))
            d.text((x + 22, y - 6), ph[:4], fill=(0, 120, 0))
        for (x, y), kind in zip(s.mimics, s.mimic_kinds):
            d.ellipse([x - 20, y - 20, x + 20, y + 20], outline=(255, 140, 0), width=2)
            d.text((x + 22, y - 6), kind[:5], fill=(160, 80, 0))
        tiles.append(np.concatenate([np.asarray(raw), np.asarray(_label(ann, "labels"))], 0))
    _save(np.concatenate(tiles, 1), "synth_styles.png")


def amibr_fields() -> None:
    from partsup_mitosis.amibr import factory
    ds = factory(split="test", density=18.0)
    idx = [i for i in range(len(ds)) if len(ds.points(i))][:2]
    cols = []
    for n, i in enumerate(idx):
        a, b = ds.render(i), ds.render(i, placement=1)
        figs, decoys = ds.centres(i, 0)
        panels = []
        slide, k = a.id.split("/")
        for s, title in ((a, f"slide {slide}, field {k}"), (b, "same figures moved (placement=1)")):
            im = Image.fromarray(s.image)
            d = ImageDraw.Draw(im)
            for x, y in s.points:
                d.ellipse([x - 30, y - 30, x + 30, y + 30], outline=(0, 230, 0), width=3)
            panels.append(np.asarray(_label(im, title)))
        if n == 0:  # the construction, once
            im = Image.fromarray(a.image)
            d = ImageDraw.Draw(im)
            for g in range(1, ds.grid):
                p = g * ds.step
                d.line([(p, 0), (p, ds.field_size)], fill=(255, 255, 255), width=1)
                d.line([(0, p), (ds.field_size, p)], fill=(255, 255, 255), width=1)
            for x, y in decoys:
                d.ellipse([x - 24, y - 24, x + 24, y + 24], outline=(255, 140, 0), width=2)
            for x, y, _ in figs:
                d.ellipse([x - 24, y - 24, x + 24, y + 24], outline=(0, 230, 0), width=3)
            panels.append(np.asarray(_label(im, "seams (white), decoys (orange), figures")))
        else:
            panels.append(np.asarray(_label(Image.fromarray(ds.render(i, figures=False).image),
                                            "figures=False")))
        cols.append(np.concatenate(panels, 0))
    _save(np.concatenate(cols, 1), "amibr_fields.png")


if __name__ == "__main__":
    synth_styles()
    amibr_fields()
