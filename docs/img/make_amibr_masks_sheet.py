"""Contact sheet of the ami-br figure masks (docs/img/amibr_masks.png) and their counts.

    .venv/bin/python docs/img/make_amibr_masks_sheet.py [--mask-slides 6] [--out PATH]

Top rows: accepted masks of the ``ami-br`` mask slides (``masks: true``, ``mask_slides: N``),
an evenly spaced pick over those slides' crops; bottom row(s): rejected crops of all training
slides, the first of each reason in turn (the rejected candidate outline in red where there
was one). Prints the counts (crops considered, accepted, rejected by reason) for the mask slides
and for all training slides, the accepted masks' areas and centroid offsets, and how much of
each mask survives pasting into fields. Deterministic; reads ../shared/data/ami-br (~45 s).
"""
from __future__ import annotations

import argparse
import collections
import os
from pathlib import Path

import numpy as np

from partsup_mitosis.amibr import factory
from partsup_mitosis.amibr.masks import REASONS, MaskResult, figure_mask

ROWS, COLS, REJECTED_ROWS = 6, 8, 2
OUT = Path(__file__).resolve().parent / "amibr_masks.png"


def masks_of(ds, slides: list[str]) -> list[tuple]:
    """(figure, crop ``(C, C, 3)`` uint8, MaskResult) of every usable figure of ``slides``."""
    out = []
    for slide in slides:
        for f in ds.by_slide[slide]:
            if f.index not in ds.crowded:
                crop = ds.read_crop(f)
                out.append((f, crop, figure_mask(crop)))
    return out


def counts(results: list[tuple]) -> collections.Counter:
    """Crops considered, accepted and rejected per reason."""
    c = collections.Counter(r.reason or "accepted" for _, _, r in results)
    c["considered"] = len(results)
    return c


def report(name: str, c: collections.Counter) -> str:
    parts = [f"{c['considered']} considered", f"{c['accepted']} accepted"]
    parts += [f"{c[r]} {r}" for r in REASONS if c[r]]
    return f"{name}: " + ", ".join(parts)


def mask_stats(results: list[tuple]) -> str:
    """Area (px) and centroid offset from the crop centre (px) of the accepted masks."""
    masks = [r.mask for _, _, r in results if r.accepted]
    area = np.percentile([m.sum() for m in masks], [5, 50, 95])
    off = []
    for m in masks:
        ys, xs = np.nonzero(m)
        off.append(np.hypot(xs.mean() - m.shape[1] // 2, ys.mean() - m.shape[0] // 2))
    p = np.percentile(off, [50, 90, 99])
    return (f"area median {area[1]:.0f} px (5th-95th percentile {area[0]:.0f}-{area[2]:.0f}); "
            f"centroid from the centre: median {p[0]:.1f} px, 90th {p[1]:.1f}, 99th {p[2]:.1f}")


def field_stats(mask_slides: int) -> str:
    """How the masks survive pasting: fields of the mask slides at density 40 (every figure
    once): the share of each figure's mask pixels in the field, and of points on a mask pixel."""
    ds = factory(split="train", masks=True, mask_slides=mask_slides, density=40.0)
    yy, xx = np.mgrid[-34:35, -34:35]
    near = np.hypot(xx, yy) <= 34  # a figure disc reaches at most 30 + 3 px from its point
    kept, on = [], 0
    for i in range(len(ds)):
        if not len(ds.points(i)):
            continue
        s = ds[i]
        for (x, y), f in zip(s.points.astype(int), ds.figures(i)):
            got = s.mask[y - 34:y + 35, x - 34:x + 35].astype(bool) & near
            kept.append(got.sum() / ds.figure_masks[f.index][2].sum())
            on += int(s.mask[y, x])
    kept_a = np.asarray(kept)
    return (f"{len(kept)} figures, mask pixels kept {100 * kept_a.mean():.1f}% on "
            f"average, {100 * (kept_a >= 0.95).mean():.1f}% of figures keep >= 95%; "
            f"points on a mask pixel {100 * on / len(kept):.1f}%")


def pick(accepted: list[tuple], rejected: list[tuple]) -> list[tuple]:
    """Evenly spaced accepted crops, then rejected ones cycling over the reasons."""
    n_rej = REJECTED_ROWS * COLS
    idx = np.linspace(0, len(accepted) - 1, ROWS * COLS - n_rej).round().astype(int)
    by_reason = collections.defaultdict(list)
    for item in rejected:
        by_reason[item[2].reason].append(item)
    rej, depth = [], 0
    while len(rej) < n_rej and any(len(v) > depth for v in by_reason.values()):
        rej += [by_reason[r][depth] for r in REASONS if len(by_reason[r]) > depth]
        depth += 1
    return [accepted[j] for j in idx] + rej[:n_rej]


def draw(items: list[tuple], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(ROWS, COLS, figsize=(COLS * 1.9, ROWS * 2.05))
    for ax in axs.ravel():
        ax.axis("off")
    for ax, (f, crop, res) in zip(axs.ravel(), items):
        _tile(ax, f, crop, res)
    fig.suptitle("ami-br masks: green = accepted mask outline (mask slides), "
                 "red = rejected (all training slides); + = crop centre", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(out, dpi=72, pil_kwargs={"optimize": True})
    plt.close(fig)


def _tile(ax, f, crop: np.ndarray, res: MaskResult) -> None:
    ax.imshow(crop)
    c = crop.shape[0] // 2
    if res.candidate is not None:
        ax.contour(res.candidate.astype(float), [0.5], linewidths=1.0,
                   colors=["lime" if res.accepted else "red"])
    ax.plot([c], [c], "+", color="cyan", ms=5)
    label = f"{res.area} px" if res.accepted else res.reason.replace("the ", "")
    ax.set_title(f"{Path(f.file).stem} ({f.slide})\n{label}", fontsize=6,
                 color="black" if res.accepted else "darkred")


def main(argv: list[str] | None = None) -> dict[str, collections.Counter]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mask-slides", type=int, default=6)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    train = factory(split="train")
    chosen = train.choose_mask_slides(args.mask_slides)
    everything = masks_of(train, train.slides)
    mine = [item for item in everything if item[0].slide in chosen]
    result = {"mask slides": counts(mine), "all training slides": counts(everything)}
    print(f"mask slides ({args.mask_slides}): {', '.join(chosen)}")
    for name, c in result.items():
        print(report(name, c))
    print("accepted masks, all training slides: " + mask_stats(everything))
    print("pasted in fields of the mask slides at density 40: " + field_stats(args.mask_slides))
    draw(pick([m for m in mine if m[2].accepted], [m for m in everything if not m[2].accepted]),
         args.out)
    print(f"wrote {os.path.relpath(args.out)}")
    return result


if __name__ == "__main__":
    main()
