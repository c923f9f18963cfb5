"""What ``partsup predict`` reads and where it writes: inputs (files and folders expanded into
:class:`Item`), the files a run will write, and the proof that the output folder is writable."""
from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from partsup.data.images import IMAGE_SUFFIXES
from partsup.errors import DataError
from partsup.slides.reader import is_slide, listed_slide


#: the run's summary table in the output folder
SUMMARY = "summary.csv"


@dataclass(frozen=True)
class Item:
    """One input: the file and its output id (relative path without extension, '/'-separated)."""

    path: Path
    id: str


def _is_image(path: Path) -> bool:
    return path.is_file() and (path.suffix.lower() in IMAGE_SUFFIXES or listed_slide(path))


def collect_inputs(paths: Iterable[str | Path], recursive: bool = False,
                   exclude: Path | None = None) -> tuple[list[Item], list[Item]]:
    """Expand files and folders into inputs.

    Returns ``(items, missing)``: ``missing`` are paths that do not exist (reported as failures).
    A file named directly is used whatever its ending (the reader decides); folders contribute
    their files with an image ending (:data:`IMAGE_SUFFIXES`), recursively with ``recursive``
    (symbolic links to folders followed, each real folder searched once: a loop or a second
    link to a folder already searched is skipped), except those inside ``exclude`` (the output
    folder: its overlays are not inputs).

    Raises:
        DataError: two inputs would write to the same output name.
    """
    items: list[Item] = []
    missing: list[Item] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = _walk(p, exclude) if recursive else p.iterdir()
            for f in sorted(f for f in found if _is_image(f) and not _inside(f, exclude)):
                items.append(Item(f, f.relative_to(p).with_suffix("").as_posix()))
        elif p.exists():
            items.append(Item(p, p.stem))
        else:
            missing.append(Item(p, p.stem))
    seen: dict[str, Path] = {}
    for it in items:
        if it.id in seen and seen[it.id] != it.path:
            raise DataError(f"{seen[it.id]} and {it.path} would both write outputs named "
                            f"{it.id!r}; predict them into separate --out folders")
        seen[it.id] = it.path
    return list({it.path: it for it in items}.values()), missing


def _walk(folder: Path, exclude: Path | None) -> list[Path]:
    """Every file under ``folder``, following symbolic links to folders; each real folder is
    searched once (a link loop ends), ``exclude`` (and what links into it) not at all."""
    found: list[Path] = []
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen or (Path(root) != folder and _inside(Path(root), exclude, itself=True)):
            dirs[:] = []
            continue
        seen.add(real)
        found += [Path(root) / f for f in files]
    return found


def _inside(path: Path, folder: Path | None, itself: bool = False) -> bool:
    """Whether ``path`` lies in ``folder`` (or is it, with ``itself``), by its path or by where
    its links lead."""
    if folder is None:
        return False
    for norm in (os.path.abspath, os.path.realpath):
        root, here = Path(norm(folder)), Path(norm(path))
        if root in here.parents or (itself and root == here):
            return True
    return False


def check_not_input(out: Path, paths: Iterable[str | Path]) -> None:
    """Refuse an output folder that is, or holds, one of the input folders ``paths`` (their
    images would be skipped as predict's own outputs: folders are never searched inside
    ``out``).

    Raises:
        DataError: one line naming ``--out``, the input folder and what to do instead.
    """
    root = Path(os.path.realpath(out))
    for raw in paths:
        p = Path(raw)
        if not p.is_dir():
            continue
        real = Path(os.path.realpath(p))
        if real == root or root in real.parents:
            how = "is" if real == root else "holds"
            raise DataError(f"--out {out} {how} the input folder {p}: predict never reads "
                            f"images inside its output folder (they would be taken for its "
                            f"own outputs); choose another --out, e.g. {p / 'predictions'}")


def check_summary_clash(items: Iterable[Item], writers: Mapping[str, Any], out: Path) -> None:
    """Refuse an input whose output would be the run's ``summary.csv`` (an image named
    ``summary.tif`` with the ``csv`` format).

    Raises:
        DataError: one line naming the input, the file and what to do instead.
    """
    for item in items:
        for writer in writers.values():
            if f"{item.id}{writer.suffix}" == SUMMARY:
                raise DataError(f"{item.path}: its output {out / SUMMARY} would be replaced "
                                f"by the run's summary table ({SUMMARY}); rename the file "
                                f"(or predict it without the format ending "
                                f"{writer.suffix!r})")


def planned_outputs(items: Sequence[Item], writers: Mapping[str, Any], out: Path,
                    overlay: bool) -> list[Path]:
    """The files ``partsup predict`` will write for ``items`` (slides' plugin outputs aside)."""
    paths = [out / SUMMARY]
    for item in items:
        paths += [out / f"{item.id}{w.suffix}" for w in writers.values()]
        paths += [out / f"{item.id}.overlay.png"] if overlay else []
        paths += [out / f"{item.id}.tissue.png"] if is_slide(item.path) else []
    return paths


def check_output_folder(out: Path) -> None:
    """Prove that ``out`` can be created and written, before any model is loaded (a folder made
    for the proof is removed again: outputs create it when they are written).

    Raises:
        DataError: ``out`` is a file, or cannot be created or written (names it and why).
    """
    from partsup.output.outdir import os_reason
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a folder; choose a folder")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise DataError(f"cannot write to output folder {out}: {os_reason(exc)}") from exc
    finally:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
