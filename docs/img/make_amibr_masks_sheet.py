"""Contact sheet of the ami-br figure masks (docs/img/amibr_masks.png) and their counts.

    .venv/bin/python docs/img/make_amibr_masks_sheet.py [--mask-slides 6] [--out PATH]

Top rows: accepted masks of the ``ami-br`` mask slides (``masks: true``, ``mask_slides: N``),
an evenly spaced pick over those slides' crops; bottom row(s): rejected crops of all training
slides, the first of each reason in turn (the rejected candidate outline in red where there
was one). Prints the counts (crops considered, accepted, rejected by reason) for the mask slides
and for all training slides. Deterministic; reads ../shared/data/ami-br.
"""
from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np

from partsup_mitosis.amibr import factory
from partsup_mitosis.amibr_masks import REASONS, MaskResult, figure_mask

ROWS, COLS, REJECTED_ROWS = 6, 8, 2
OUT = Path(__file__).resolve().parent / "amibr_masks.png"


def masks_of(ds, slides: list[str]) -> list[tuple]:
    """(figure, crop ``(C, C, 3)`` uint8, MaskResult) of every usable figure of ``slides``."""
    out = []
    for slide in slides:
        for f in ds.by_slide[slide]:
            if f.index not in ds.crowded:
                crop = ds._read_crop(f)
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
    draw(pick([m for m in mine if m[2].accepted], [m for m in everything if not m[2].accepted]),
         args.out)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
