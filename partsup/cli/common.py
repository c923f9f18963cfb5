"""Helpers shared by several commands (no command module imports another one):
``--option KEY=VALUE`` parsing, the transient progress bar,
and the staged output folder."""
from __future__ import annotations

import argparse
import contextlib
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


def add_checkpoint_arguments(parser: argparse.ArgumentParser, help: str, **kwargs: Any) -> None:
    """The checkpoint as ``CHECKPOINT`` (positional, optional) or ``--checkpoint`` alike (see
    :func:`take_checkpoint`); ``kwargs`` go to both (e.g. ``type=Path``)."""
    parser.add_argument("checkpoint_arg", nargs="?", default=None, metavar="CHECKPOINT",
                        help=f"{help} (or --checkpoint)", **kwargs)
    parser.add_argument("--checkpoint", default=None, metavar="CHECKPOINT",
                        help="the same as CHECKPOINT", **kwargs)


def take_checkpoint(args: argparse.Namespace, required: bool = True) -> Any:
    """``args.checkpoint`` set from ``CHECKPOINT`` or ``--checkpoint`` (one of them, or both
    naming the same file); None when neither is given and not ``required``.

    Raises:
        PartsupError: two different checkpoints, or none when ``required``.
    """
    pos, opt = getattr(args, "checkpoint_arg", None), args.checkpoint
    if pos is not None and opt is not None and str(pos) != str(opt):
        raise PartsupError(f"two checkpoints given ({pos} and --checkpoint {opt}); give one")
    args.checkpoint = opt if opt is not None else pos
    if required and args.checkpoint is None:
        raise PartsupError("no checkpoint given: pass CHECKPOINT or --checkpoint FILE (a "
                           "checkpoint, its run folder, or a .safetensors file)")
    return args.checkpoint


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


def add_normalize_arguments(parser: argparse.ArgumentParser) -> None:
    """``--normalize NAME|none`` and ``--normalize-reference IMAGE`` (see
    :func:`apply_normalize_arguments`)."""
    parser.add_argument("--normalize", default=None, metavar="NAME",
                        help="colour normalisation before the model: a colour normalizer "
                             "(`partsup plugins --kind normalizers`) or none (default: the "
                             "checkpoint's own, its recipe's data.normalize)")
    parser.add_argument("--normalize-reference", type=Path, default=None, metavar="IMAGE",
                        help="with --normalize NAME: the image whose colours inputs are mapped "
                             "to (e.g. a training image of the model)")


def apply_normalize_arguments(detector: Any, args: argparse.Namespace, registries: Any
                              ) -> dict[str, Any] | None:
    """Replace ``detector.normalizer`` as ``--normalize`` / ``--normalize-reference`` ask
    (neither given: the checkpoint's own stays). Returns the recipe value that rebuilds the new
    one (``{name, reference, **target}``; None for ``none``), or ``{}`` when nothing changed.

    Raises:
        PartsupError: a reference without a normalizer; RecipeError: an unknown name;
        DataError: a missing or unusable reference image.
    """
    from partsup.data.normalize import fit_normalize
    name, reference = args.normalize, args.normalize_reference
    if name is None:
        if reference is not None:
            raise PartsupError("--normalize-reference needs --normalize NAME (e.g. reinhard)")
        return {}
    if name == "none":
        if reference is not None:
            raise PartsupError("--normalize none takes no --normalize-reference")
        detector.normalizer = None
        return None
    spec = {"name": name, **({"reference": str(reference)} if reference is not None else {})}
    detector.normalizer, resolved = fit_normalize(spec, registries, "--normalize")
    return resolved


def normalize_label(detector: Any) -> str:
    """How a detector normalises colours, for a status line: ``"none"`` or the class name."""
    normalizer = getattr(detector, "normalizer", None)
    return "none" if normalizer is None else type(normalizer).__name__.lower()
