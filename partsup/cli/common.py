"""Helpers shared by several commands (no command module imports another one):
``--option KEY=VALUE`` parsing, the progress display (a transient bar on a terminal, plain
lines in a log), and the staged output folder."""
from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from rich.console import Console
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


def progress_bar(console: Any, *extra: Any) -> Any:
    """The progress of a command: a transient rich bar (description, bar, n/total, elapsed
    time, then the ``extra`` columns) on a terminal; in a log (stderr a file or a pipe) plain
    lines instead (:class:`PlainProgress`), on stderr.

    ``console`` is the terminal's console the bar is drawn on (a command's stdout or stderr
    console); when it is not a terminal, stderr is used: a bar when stderr is a terminal,
    plain lines otherwise. Both answer the same calls (``add_task``, ``update``, ``advance``,
    ``remove_task``, ``console``). A task's ``px`` field (pixels per step) adds Mpx/s to its
    lines.
    """
    err = console if getattr(console, "stderr", False) else Console(stderr=True)
    for shown in (console, err):
        if getattr(shown, "is_terminal", False):
            return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), *extra, console=shown, transient=True)
    return PlainProgress(err)


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float
    fields: dict[str, Any]
    started: float
    start_done: float
    last_line: float
    last_step: int = 0
    finished: bool = False  # its last line (done/total) shown


class PlainProgress:
    """Progress as plain lines, for a log: one line per task each ``step`` of its total
    (10 %) and at least every ``every`` seconds while it advances, e.g.
    ``tiles slide-3: 120/480 (25 %), 3.1 Mpx/s, ETA 2 min`` (the last one: ``in 7 min``).

    The rich :class:`~rich.progress.Progress` calls the commands make, on a ``console``
    (stderr); ``clock`` (seconds) is replaceable for tests.
    """

    def __init__(self, console: Any, every: float = 10.0, step: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.every, self.step, self.clock = every, step, clock
        self._tasks: dict[int, _Task] = {}
        self._next = 0

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0,
                 completed: float = 0, visible: bool = True, **fields: Any) -> int:
        now = self.clock()
        task_id, self._next = self._next, self._next + 1
        self._tasks[task_id] = _Task(description, total, completed, dict(fields), now,
                                     completed, now)
        return task_id

    def remove_task(self, task_id: int) -> None:
        self._tasks.pop(task_id, None)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, total: float | None = None,
               completed: float | None = None, advance: float | None = None,
               description: str | None = None, visible: bool | None = None,
               refresh: bool = False, **fields: Any) -> None:
        task = self._tasks[task_id]
        if total is not None:
            task.total = total
        if description is not None:
            task.description = description
        task.fields.update(fields)
        moved = completed is not None or advance is not None
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        if moved and task.total:
            self._report(task)

    def _report(self, task: _Task) -> None:
        now = self.clock()
        total = float(task.total or 0)
        step = int(task.completed / total / self.step + 1e-9) if total > 0 else 0
        done = task.completed >= total
        if done and task.finished and step <= task.last_step:
            return
        if step <= task.last_step and now - task.last_line < self.every and not done:
            return
        task.last_step, task.last_line = max(step, task.last_step), now
        task.finished = task.finished or done
        self.console.print(self.line(task, now), highlight=False, soft_wrap=True)

    @staticmethod
    def line(task: _Task, now: float) -> str:
        """``<description> <file>: done/total (pct %), rate, ETA`` (rich markup, as the bar)."""
        total = float(task.total or 0)
        label = " ".join(str(x) for x in (task.description, task.fields.get("file")) if x)
        pct = 100.0 * task.completed / total if total else 0.0
        text = f"{label}: {_count(task.completed)}/{_count(total)} ({pct:.0f} %)"
        seconds = now - task.started
        rate = (task.completed - task.start_done) / seconds if seconds > 0 else 0.0
        px = task.fields.get("px")
        if rate > 0:
            text += f", {_number(rate * float(px) / 1e6)} Mpx/s" if px else f", {_number(rate)}/s"
        if task.completed >= total:
            return f"{text}, in {_duration(seconds)}"
        return f"{text}, ETA {_duration((total - task.completed) / rate)}" if rate > 0 else text


def _number(value: float) -> str:
    """Two significant digits below 10 (``"3.1"``, ``"0.42"``), whole numbers above."""
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def _count(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _duration(seconds: float) -> str:
    """``"45 s"``, ``"12 min"``, ``"2 h 05 min"``."""
    s = max(0, int(round(seconds)))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{round(s / 60)} min"
    return f"{s // 3600} h {s // 60 % 60:02d} min"


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
