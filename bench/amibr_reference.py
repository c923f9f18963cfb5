"""Save ami-br training fields of one source (or several) as a colour-normalisation reference.

    python bench/amibr_reference.py --source MIDOG21 --out runs/refs/midog21.png

Writes the first ``--fields`` fields (default 16: a seeded choice over its slides, in a 4x4 grid; density 8) of the
``ami-br`` reader's training split restricted to ``--source``, side by side in one PNG: the
colours a model trained on that source saw. ``partsup evaluate|predict --normalize macenko
--normalize-reference runs/refs/midog21.png`` maps other sources' images to them
(docs/stain.md). ``--figure F.jpg`` also draws test fields of ``--show`` (default TUPAC16) as
scanned and as each registered normalizer maps them. Skips with a message when
../shared/data/ami-br is absent.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
AMIBR = REPO.parent / "shared" / "data" / "ami-br"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", required=True,
                    help="MIDOG21, TUPAC16, or both comma-separated (MIDOG21,TUPAC16)")
    ap.add_argument("--out", required=True, type=Path, help="the PNG to write (must not exist)")
    ap.add_argument("--fields", type=int, default=16, help="fields side by side (default 16)")
    ap.add_argument("--root", type=Path, default=AMIBR, help="the AMi-Br folder")
    ap.add_argument("--figure", type=Path, default=None, metavar="JPG",
                    help="also write a picture: test fields of --show as they are and mapped to "
                         "the reference by every registered colour normalizer")
    ap.add_argument("--show", default="TUPAC16", help="the source of the --figure's fields")
    args = ap.parse_args(argv)
    if not args.root.is_dir():
        print(f"skipped: {args.root} not found (the AMi-Br crops, ../shared/data/ami-br)")
        return 0
    for path, option in ((args.out, "--out"), (args.figure, "--figure")):
        if path is not None and path.exists():
            print(f"error: {path} exists; choose another {option}", file=sys.stderr)
            return 2
    from PIL import Image
    from partsup.manager import load
    reader = load([]).datasets.build("ami-br", root=str(args.root), split="train", density=8.0,
                                     sources=args.source.split(","), fields=args.fields)
    images = [reader[i].image for i in range(min(args.fields, len(reader)))]
    side = int(np.ceil(np.sqrt(len(images))))
    rows = [np.concatenate(images[r * side:(r + 1) * side] + [np.full_like(images[0], 255)] * (
        side - len(images[r * side:(r + 1) * side])), axis=1) for r in range(
        int(np.ceil(len(images) / side)))]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out)
    print(f"wrote {args.out}: {len(images)} {args.source} training field(s) of "
          f"{images[0].shape[1]}x{images[0].shape[0]} px")
    if args.figure is not None:
        figure(args, images[0])
    return 0


def figure(args: argparse.Namespace, reference_field: np.ndarray) -> None:
    """Rows: three ``--show`` test fields; columns: as they are, then mapped to the reference
    (``--out``) by each registered normalizer; the first row's first cell ends with a
    reference field for comparison."""
    from PIL import Image, ImageDraw
    from partsup.data.normalize import normalize_image
    from partsup.manager import load
    regs = load([])
    reader = regs.datasets.build("ami-br", root=str(args.root), split="test", density=8.0,
                                 sources=args.show.split(","), fields=3)
    norms = {name: regs.normalizers.build(name, reference=str(args.out))
             for name in sorted(regs.normalizers)}
    cells = []
    for i in range(len(reader)):
        field = reader[i].image
        cells.append([field] + [normalize_image(n, field) for n in norms.values()]
                     + [reference_field])
    heads = ["as scanned", *norms, "reference"]
    grid = np.concatenate([np.concatenate(row, axis=1) for row in cells], axis=0)
    img = Image.fromarray(grid)
    draw = ImageDraw.Draw(img)
    side = reference_field.shape[1]
    for j, head in enumerate(heads):
        draw.rectangle([j * side, 0, j * side + 9 * len(head) + 8, 18], fill=(255, 255, 255))
        draw.text((j * side + 4, 3), head, fill=(0, 0, 0))
    img = img.resize((img.width // 2, img.height // 2))
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    img.save(args.figure, quality=85)
    print(f"wrote {args.figure}: {len(cells)} {args.show} test field(s) x "
          f"{', '.join(heads)}")


if __name__ == "__main__":
    raise SystemExit(main())
