"""Mine a detector's candidates on ami-br fields: the negatives of a second round of the second look.

Runs a detector checkpoint (default: the shipped model) over every field of one ``ami-br``
view with a loose candidate rule (by default a fixed foreground threshold 0.2 and blobs kept
from mean probability 0.2: what a high-recall candidate stage finds) and writes one
``OUT/<image id>.csv`` per field (``x,y,score``, the columns ``partsup predict`` writes), the
folder that a classify recipe's ``data.negatives.mined`` reads. The classifier's training
leaves out every candidate within a quarter of its crop of a figure (a hit, not a false alarm),
so the folder may hold hits too. Give the view the classify recipe trains on (the same
``--option`` values), or the image ids will not match.

    python bench/amibr_mine.py --option density=40 --option windows=0.5 \\
        --out runs/mined/amibr-train

Prints how many candidates were written and how many sit on a figure. Skips with a message
when ../shared/data/ami-br is absent.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
AMIBR = REPO.parent / "shared" / "data" / "ami-br"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="the detector (default: the model the mitosis plugin ships)")
    ap.add_argument("--split", default="train", help="the ami-br split (default train)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="an ami-br reader option (YAML value), e.g. density=40; repeatable")
    ap.add_argument("--threshold", type=float, default=0.2,
                    help="the fixed foreground threshold of the candidate rule (default 0.2)")
    ap.add_argument("--s1", type=float, default=0.2,
                    help="keep blobs whose mean probability exceeds this (default 0.2)")
    ap.add_argument("--fields", type=int, default=None,
                    help="a seeded subset of N fields (default: every field of the view)")
    ap.add_argument("--root", type=Path, default=AMIBR, help="the AMi-Br folder")
    ap.add_argument("--out", type=Path, required=True,
                    help="a new (or empty) folder for the <image id>.csv files")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.root / "metadata.csv").is_file():
        print(f"skipped: {args.root} not found (the AMi-Br crops; see ../shared/data/README.md)")
        return 0
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"--out {args.out}: not empty; give a new folder")
    import partsup
    from partsup.cli.common import parse_options
    from partsup.evaluation.matching import match
    detector = partsup.Detector.from_checkpoint(args.checkpoint, device="cpu",
                                                threshold=args.threshold, s1=args.s1)
    detector.second_look = None  # the candidates themselves
    reader = detector.registries.datasets.build("ami-br", root=args.root, split=args.split,
                                                **{**parse_options(args.option),
                                                   **({"fields": args.fields}
                                                      if args.fields else {})})
    t0, total, hits = time.perf_counter(), 0, 0
    for i in range(len(reader)):
        s = reader[i]
        found = detector.detect(s.image, s.mpp)
        xy = np.array([[d.x, d.y] for d in found], np.float64).reshape(-1, 2)
        score = np.array([d.score for d in found], np.float64)
        path = args.out / f"{s.id}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["x,y,score"] + [f"{x:.2f},{y:.2f},{p:.4f}" for (x, y), p in zip(xy, score)]
        path.write_text("\n".join(lines) + "\n")
        total += len(xy)
        hits += int(match(s.points.astype(np.float64), xy, score, radius_px=30).counts.tp)
        if (i + 1) % 100 == 0 or i + 1 == len(reader):
            print(f"{i + 1}/{len(reader)} fields, {total} candidates ({hits} on a figure), "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
