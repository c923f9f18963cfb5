"""``partsup export``: a checkpoint's model as ONNX or TorchScript (with a JSON sidecar of the
normalisation and detection parameters), or its weights as safetensors. It never overwrites a
file: an existing ``--out`` (or sidecar) is refused, ``--force`` replaces only a file
``partsup export`` wrote before, and the source checkpoint is never written.

The library side is :mod:`partsup.inference.export`; this module parses and reports.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.markup import escape

from partsup.cli.common import add_checkpoint_arguments, take_checkpoint
from partsup.inference.detector import default_checkpoint
from partsup.inference.export import FORMATS, SUFFIXES, export_checkpoint


class ExportCommand:
    name = "export"
    help = "write a checkpoint's model as onnx / torchscript (+ JSON sidecar) or safetensors"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_checkpoint_arguments(parser, "a checkpoint (.pt), its run folder, or a "
                                 ".safetensors file (default: the model a plugin ships, "
                                 "docs/model-card.md)", type=Path)
        parser.add_argument("--format", choices=FORMATS, default="onnx",
                            help="onnx (default; needs partsup[onnx]; the portable format), "
                                 "torchscript (torch.jit, deprecated upstream: PyTorch points "
                                 "to torch.export, so prefer onnx for other runtimes), or "
                                 "safetensors (weights + metadata, loadable as a checkpoint)")
        parser.add_argument("--out", type=Path, default=None,
                            help="output file (default: beside the checkpoint, its name with "
                                 ".onnx, .ts.pt or .safetensors); an existing file is refused")
        parser.add_argument("--force", action="store_true",
                            help="replace an --out (and its sidecar) that partsup export "
                                 "wrote before; never the source checkpoint, never another file")

    def run(self, args: argparse.Namespace, ctx: Any) -> int:
        if take_checkpoint(args, required=False) is None:
            args.checkpoint = default_checkpoint(ctx.registries)
            ctx.err.print(f"export: no CHECKPOINT given: exporting the default model "
                          f"{escape(str(args.checkpoint))}", highlight=False)
        out = args.out
        if out is None:
            stem = args.checkpoint.stem if args.checkpoint.suffix else args.checkpoint.name
            suffix = ".ts.pt" if args.format == "torchscript" else SUFFIXES[args.format]
            out = args.checkpoint.with_name(stem + suffix)
        report = export_checkpoint(args.checkpoint, out, args.format, ctx.registries,
                                   force=args.force)
        ctx.console.print(f"wrote {escape(str(report.model))}"
                          + (f" and {escape(str(report.sidecar))}" if report.sidecar else ""),
                          highlight=False)
        if report.sidecar:
            sizes = ", ".join(f"{h}x{w}" for h, w in report.sizes)
            ctx.console.print(f"max |exported - PyTorch| = {report.max_abs_diff:.2e} on "
                              f"{sizes} px inputs; H, W "
                              + ("dynamic" if report.dynamic else
                                 f"fixed at {report.sizes[0][0]}x{report.sizes[0][1]} px"),
                              highlight=False)
        return 0


COMMAND = ExportCommand
