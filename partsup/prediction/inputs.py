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
    their files with an image ending (:data:`IMAGE_SUFFIXES`), recursively with ``recursive``,
    except those inside ``exclude`` (the output folder: its overlays are not inputs).

    Raises:
        DataError: two inputs would write to the same output name.
    """
    items: list[Item] = []
    missing: list[Item] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = p.rglob("*") if recursive else p.iterdir()
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


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    root = Path(os.path.abspath(folder))
    return root in Path(os.path.abspath(path)).parents


def planned_outputs(items: Sequence[Item], writers: Mapping[str, Any], out: Path,
                    overlay: bool) -> list[Path]:
    """The files ``partsup predict`` will write for ``items`` (slides' plugin outputs aside)."""
    paths = [out / "summary.csv"]
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
