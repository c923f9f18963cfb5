"""Output folders partsup writes into without ever deleting what it did not create.

``predict`` writes its files one image at a time: before any model is loaded it refuses a
target that exists and that the folder's marker does not list (:func:`check_not_foreign`), and it
lists what it wrote (:func:`record_owned`). ``evaluate`` and ``calibrate`` write their files
through :func:`staged_output`:

- ``--out`` must be a new folder, an empty folder, or a folder partsup wrote before (it holds the
  marker file :data:`MARKER`, which lists the files partsup wrote there). Anything else (a file,
  a folder of the user's, a dataset root, a run folder) is refused before any work is done.
- The outputs are written into a staging folder inside ``--out`` and then moved into place one
  file at a time (``os.replace``: a reader sees either the old file or the new one).
- Files that the previous run of partsup listed in the marker and this run did not write again
  are removed (they would no longer match ``metrics.json``); nothing else is ever removed.
- On any failure (or Ctrl-C) only the staging folder is removed, and ``--out`` itself when partsup
  created it for this run and it is still empty.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

from partsup.errors import DataError
from partsup.output.atomic import write_text

#: the file that marks a folder as partsup's output (JSON: the command and the files it wrote)
MARKER = ".partsup-output"
_STAGING = ".partsup-staging-"
#: what each command wrote before the marker existed: (its names, its JSON file, keys that JSON
#: file holds). A folder holding only those names, whose JSON file has those keys, is taken as
#: that command's output and written into (nothing in it is deleted).
LEGACY = {"partsup evaluate": ({"metrics.json", "per_image.csv", "detections", "overlays"},
                               "metrics.json", {"protocol", "matching", "totals", "images"}),
          "partsup calibrate": ({"calibration.json", "f1_vs_w.png"}, "calibration.json",
                                {"checkpoint", "grid", "rows", "per_w", "best"})}


def os_reason(exc: OSError) -> str:
    """A short, lower-case reason for a failed file operation (e.g. "no space left on device")."""
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    return exc.strerror or str(exc)


def owned_files(out: Path) -> list[str] | None:
    """The files (relative, '/'-separated) partsup recorded in ``out``'s marker; None when
    ``out`` has no marker. Entries that would point outside ``out`` are ignored."""
    marker = Path(out) / MARKER
    if not marker.is_file():
        return None
    try:
        doc = json.loads(marker.read_text())
        files = doc.get("files", []) if isinstance(doc, dict) else []
    except (OSError, ValueError):
        return []
    return [f for f in files if isinstance(f, str) and _safe(f)]


def _safe(rel: str) -> bool:
    p = PurePosixPath(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and p.name != MARKER


def check_output_folder(out: Path, option: str = "--out", command: str = "") -> None:
    """Refuse ``out`` unless it is absent, an empty folder, or a partsup output folder (with the
    marker, or holding only the names ``command`` wrote before the marker existed).

    Raises:
        DataError: ``out`` is a file, or a non-empty folder that partsup did not write (names
            it and says what to do instead).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{option} {out} is a file, not a folder; choose a folder")
    if not out.is_dir() or (out / MARKER).is_file():
        return
    try:
        entries = [p.name for p in out.iterdir() if not p.name.startswith(_STAGING)]
    except OSError as exc:
        raise DataError(f"cannot read output folder {out}: {os_reason(exc)}") from exc
    if entries and not _legacy_output(out, entries, command):
        raise DataError(f"{option} {out} is not empty and was not written by partsup (it holds "
                        f"{entries[0]!r}{' and more' if len(entries) > 1 else ''}); partsup "
                        f"never writes into or deletes from such a folder: choose a new or "
                        f"empty folder")


def _legacy_output(out: Path, entries: list[str], command: str) -> bool:
    """Whether ``out`` is ``command``'s output from before the marker (see :data:`LEGACY`)."""
    if command not in LEGACY:
        return False
    names, doc_name, keys = LEGACY[command]
    if not set(entries) <= names or doc_name not in entries:
        return False
    try:
        doc = json.loads((out / doc_name).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and keys <= set(doc)


@contextlib.contextmanager
def staged_output(out: Path, command: str = "partsup", option: str = "--out") -> Iterator[Path]:
    """Yield a staging folder inside ``out``; on success its files replace their namesakes in
    ``out`` (see the module docstring). ``command`` is recorded in the marker.

    Raises:
        DataError: ``out`` is refused by :func:`check_output_folder`, or cannot be written
            (permission, read-only file system, full disk: the message names the folder).
    """
    out = Path(out)
    check_output_folder(out, option, command)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_STAGING, dir=out))
    except OSError as exc:
        raise DataError(f"cannot write to output folder {out}: {os_reason(exc)}") from exc
    try:
        try:
            yield tmp
            _publish(tmp, out, command)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                                 errno.EPERM):
                raise
            raise DataError(f"cannot write to output folder {out}: {os_reason(exc)}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when still empty
        raise
    shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, out: Path, command: str) -> None:
    new = sorted((p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file()),
                 key=lambda r: (r.count("/") == 0, r))  # top-level files (metrics) last
    old = owned_files(out) or []
    _write_marker(out, command, sorted(set(old) | set(new)))  # a crash mid-way loses nothing
    for rel in new:
        target = out / rel
        if target.is_dir() and not target.is_symlink():
            raise DataError(f"cannot write {target}: a folder of that name is in the way")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, target)
    for rel in sorted(set(old) - set(new)):
        _remove_stale(out, rel)
    _write_marker(out, command, new)


def _remove_stale(out: Path, rel: str) -> None:
    """Remove a file partsup wrote in a previous run, then its folders once they are empty."""
    path = out / rel
    if path.is_file() or path.is_symlink():
        with contextlib.suppress(OSError):
            path.unlink()
    parent = path.parent
    while parent != out and out in parent.parents:
        try:
            parent.rmdir()  # fails (and stops) when the folder holds anything else
        except OSError:
            break
        parent = parent.parent


def _relative(out: Path, paths: Iterable[Path]) -> list[str]:
    return [Path(p).relative_to(out).as_posix() for p in paths]


def check_not_foreign(out: Path, paths: Iterable[Path]) -> None:
    """Refuse to write ``paths`` (files inside ``out``) when one of them exists and is not
    listed in ``out``'s marker: partsup replaces only files it wrote itself.

    Raises:
        DataError: names the first such file and what to do instead.
    """
    out = Path(out)
    owned = set(owned_files(out) or [])
    for rel in _relative(out, paths):
        if rel not in owned and (out / rel).exists():
            raise DataError(f"{out / rel} exists and was not written by partsup; partsup never "
                            f"replaces such a file: choose another --out (or move the file)")


def record_owned(out: Path, paths: Iterable[Path], command: str) -> None:
    """Add ``paths`` (files partsup wrote inside ``out``) to ``out``'s marker, so a later run
    may replace them (:func:`check_not_foreign`)."""
    out = Path(out)
    owned = set(owned_files(out) or [])
    new = owned | set(_relative(out, paths))
    if new != owned:
        _write_marker(out, command, sorted(new))


def _write_marker(out: Path, command: str, files: list[str]) -> None:
    doc = {"written_by": command, "note": "partsup replaces and removes only the files listed "
           "here; delete this file to keep partsup from writing into this folder again",
           "files": files}
    write_text(out / MARKER, json.dumps(doc, indent=1) + "\n")
