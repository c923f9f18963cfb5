"""``partsup datasets``: each registered dataset reader's expected layout; optionally check a root."""
from __future__ import annotations

import argparse
import warnings

from rich.markup import escape
from rich.table import Table

from partsup.errors import DataError


class DatasetsCommand:
    name = "datasets"
    help = "show the on-disk layout each dataset reader expects (and check a dataset folder)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("dataset", nargs="?", help="only this reader (a registered dataset name)")
        parser.add_argument("--root", help="check this folder with the reader: counts per split, "
                                           "and every problem found (read non-strictly)")
        parser.add_argument("--split", action="append", default=None,
                            help="split(s) to check (default: train, val, test)")

    def run(self, args: argparse.Namespace, ctx) -> int:
        reg = ctx.registries.datasets
        names = [args.dataset] if args.dataset else reg.names()
        for name in names:
            entry = reg.entry(name, where="partsup datasets")
            layout = getattr(entry.factory, "LAYOUT", "") or "(this reader documents no layout)"
            ctx.console.rule(f"[bold]{name}[/] [dim]({escape(entry.provider)})[/]", align="left")
            ctx.console.print(escape(layout), soft_wrap=True, highlight=False)
            source = getattr(entry.factory, "SOURCE", "")
            if source:
                ctx.console.print(f"[bold]Where to get the data:[/] {escape(source)}",
                                  soft_wrap=True, highlight=False)
        if args.root:
            if not args.dataset:
                raise DataError("partsup datasets --root: name the dataset reader too "
                                "(e.g. partsup datasets NAME --root PATH)")
            return self._check(args, ctx)
        return 0

    def _check(self, args: argparse.Namespace, ctx) -> int:
        factory = ctx.registries.datasets.get(args.dataset, where="partsup datasets")
        table = Table(title=f"{args.dataset} at {escape(args.root)}")
        # the points' column is named by the reader's optional POINTS (what its points mark)
        points = str(getattr(factory, "POINTS", "") or "points")
        for col in ("split", "images", points, "hard negatives", "problems"):
            table.add_column(col, justify="left" if col in ("split", "problems") else "right")
        problems: list[str] = []
        for split in args.split or ["train", "val", "test"]:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    reader = factory(args.root, split=split, strict=False)
                except DataError as exc:
                    table.add_row(split, "-", "-", "-", escape(_first_line(exc)))
                    continue
            msgs = [str(w.message) for w in caught]
            problems += msgs
            negs = sum(len(reader.hard_negatives(i)) for i in range(len(reader))) \
                if hasattr(reader, "hard_negatives") else 0
            npts = sum(len(reader.points(i)) for i in range(len(reader))) \
                if hasattr(reader, "points") else "?"
            table.add_row(split, str(len(reader)), str(npts), str(negs), str(len(msgs)))
        ctx.console.print(table)
        for msg in problems:
            ctx.console.print(f"[yellow]problem:[/] {escape(msg)}", soft_wrap=True)
        return 1 if problems else 0


def _first_line(exc: Exception) -> str:
    """The message's first line for the table; a reader's "Expected layout:" (its layout
    follows on the next lines, and is printed above the table) is pointed to, not cut off."""
    first = str(exc).strip().splitlines()[0].rstrip()
    tail = "Expected layout:"
    if first.endswith(tail):
        first = f"{first[:-len(tail)].rstrip()} (the expected layout is shown above)"
    return first


COMMAND = DatasetsCommand
