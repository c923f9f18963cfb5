"""Helpers shared by several commands (no command module imports another one):
``--option KEY=VALUE`` parsing, range checks of numeric options, the transient progress bar,
and the staged output folder."""
from __future__ import annotations

import argparse
import contextlib
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from partsup.errors import PartsupError, RecipeError


@contextlib.contextmanager
def staged_dir(out: Path, command: str = "partsup evaluate") -> Iterator[Path]:
    """Yield a staging folder inside ``out``; on success its files replace their namesakes in
    ``out``, which must be new, empty, or a partsup output (:mod:`partsup.output.outdir`: nothing
    partsup did not write is ever overwritten or deleted).

    On any exception (including Ctrl-C) the staging folder is removed and ``out`` is left as it
    was.
    """
    from partsup.output.outdir import staged_output
    with staged_output(Path(out), command) as tmp:
        yield tmp


def add_option_argument(parser: argparse.ArgumentParser) -> None:
    """``--option KEY=VALUE`` (repeatable): a dataset reader option."""
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a dataset reader option, e.g. val_cases=[A03] (YAML value; "
                             "repeatable); the recipe's options for the same dataset apply too")


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    """``["a=1", "b=[x, y]"]`` -> ``{"a": 1, "b": ["x", "y"]}`` (values parsed as YAML)."""
    import yaml

    from partsup.recipe import safe_load
    out: dict[str, Any] = {}
    for text in items:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--option {text!r}: expected KEY=VALUE, e.g. val_cases=[A03]")
        try:
            out[key.strip()] = safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def progress_bar(console: Any, *extra: Any) -> Progress:
    """A transient bar: description, bar, n/total, elapsed time, then the ``extra`` columns."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), *extra, console=console, transient=True)


def check_range(option: str, value: float, low: float, high: float, unit: str) -> None:
    """PartsupError unless ``low <= value <= high`` (NaN and inf are refused)."""
    if not (math.isfinite(value) and low <= value <= high):
        raise PartsupError(f"{option} must be between {low:g} and {high:g} {unit}, got {value:g}")
