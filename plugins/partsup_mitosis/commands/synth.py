"""``partsup synth``: write a synthetic H&E dataset in a real dataset's on-disk layout."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table


def _size(text: str) -> tuple[int, int]:
    """``512`` or ``456x512`` (H x W) -> (H, W)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}") from None
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}")


class SynthCommand:
    name = "synth"
    help = "write a synthetic H&E mitosis dataset in the layout of amida13/icpr2012/icpr2014/midog"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from partsup_mitosis.synth import LAYOUTS
        parser.add_argument("out", help="output folder (created; must be empty)")
        parser.add_argument("--like", choices=sorted(LAYOUTS), default="amida13",
                            help="on-disk layout, stain and scale to imitate")
        parser.add_argument("--images", type=int, default=24, help="number of images (all splits)")
        parser.add_argument("--seed", type=int, default=0,
                            help="random seed (default 0): the same seed and options give the "
                                 "same images and labels; another seed, a second, "
                                 "independent set (e.g. set A and set B)")
        parser.add_argument("--size", type=_size, default=None,
                            help="image size N or HxW in px (default: per style)")
        parser.add_argument("--density", type=float, default=12.0,
                            help="expected mitotic figures per megapixel")
        parser.add_argument("--mimics", type=float, default=3.5,
                            help="expected mimics (lymphocytes, apoptotic bodies, dark nuclei) "
                                 "per expected figure")
        parser.add_argument("--val-fraction", type=float, default=0.15)
        parser.add_argument("--test-fraction", type=float, default=0.25)
        parser.add_argument("--overwrite", action="store_true",
                            help="allow a non-empty output folder")

    def run(self, args: argparse.Namespace, ctx) -> int:
        from partsup.plugin import DataError
        from partsup_mitosis.synth import MANIFEST, generate
        out = Path(args.out)
        for path in (out, *out.parents):  # the first that exists must be a folder
            if path.exists():
                if not path.is_dir():
                    raise DataError(f"synth: {path} is a file, not a folder; give a new or "
                                    f"empty folder to write the dataset into")
                break
        ds = generate(args.out, like=args.like, n_images=args.images, seed=args.seed,
                      size=args.size, density=args.density, mimic_ratio=args.mimics,
                      val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                      overwrite=args.overwrite)
        table = Table(title=f"synthetic {ds.like} dataset in {ds.root} ({ds.seconds:.1f} s)")
        for col in ("split", "images", "mitoses", "mimics", "read back with"):
            table.add_column(col)
        for split, c in ds.counts.items():
            spec = ", ".join(f"{k}={v}" for k, v in ds.splits[split].items() if k != "root")
            table.add_row(split, str(c["images"]), str(c["mitoses"]), str(c["mimics"]), spec)
        ctx.console.print(table)
        ctx.console.print(f"reader options per split: {ds.root / MANIFEST}")
        return 0


COMMAND = SynthCommand
