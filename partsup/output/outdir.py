"""Output folders partsup writes into without ever deleting what it did not create.

The marker file :data:`MARKER` lists every file partsup wrote in a folder and **which command
owns each** (``owners``: file -> command, e.g. ``"partsup predict"``). A command replaces or
removes only the files its own command recorded; a folder holding (existing) files that the
marker gives to another command is refused whole, in one line naming the folder and that
command (:func:`foreign_entry`), so ``evaluate`` never deletes ``predict``'s outputs, nor
``calibrate`` an evaluation's. A marker written before owners were recorded (``files`` and
``written_by`` only) is read safely: its files belong to its ``written_by`` command when that
command could have written them (``evaluate`` and ``calibrate`` write only the names in
:data:`OWN_NAMES`; ``predict`` any name), and to no command otherwise (never removed, and the
folder is refused by every command).

``predict`` writes its files one image at a time: before any model is loaded it refuses a
target that exists and that the folder's marker does not give to ``predict``
(:func:`check_not_foreign`), and it lists what it wrote (:func:`record_owned`). ``evaluate`` and
``calibrate`` write their files through :func:`staged_output`:

- ``--out`` must be a new folder, an empty folder, or a folder the same command wrote before
  (its marker gives it the files there). Anything else (a file, a folder of the user's, a
  dataset root, a run folder, another command's outputs) is refused before any work is done.
- The outputs are written into a staging folder inside ``--out`` and then moved into place one
  file at a time (``os.replace``: a reader sees either the old file or the new one).
- Files that the previous run of the same command listed in the marker and this run did not
  write again are removed (they would no longer match ``metrics.json``); nothing else is ever
  removed.
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

#: the file that marks a folder as partsup's output (JSON: the files partsup wrote there, and the
#: command that owns each)
MARKER = ".partsup-output"
_STAGING = ".partsup-staging-"
#: what each command wrote before the marker existed: (its names, its JSON file, keys that JSON
#: file holds). A folder holding only those names, whose JSON file has those keys, is taken as
#: that command's output and written into (nothing in it is deleted).
LEGACY = {"partsup evaluate": ({"metrics.json", "per_image.csv", "detections", "overlays"},
                               "metrics.json", {"protocol", "matching", "totals", "images"}),
          "partsup calibrate": ({"calibration.json", "f1_vs_w.png"}, "calibration.json",
                                {"checkpoint", "grid", "rows", "per_w", "best"})}
#: the top-level names ``evaluate`` and ``calibrate`` write (files, or folders of files): a marker
#: without owners gives its ``written_by`` command only the entries under these names
OWN_NAMES = {"partsup evaluate": {"metrics.json", "per_image.csv", "pr_curve.png",
                                  "detections", "overlays"},
             "partsup calibrate": {"calibration.json", "f1_vs_w.png"}}
#: how an entry without a known owner is named in messages
UNKNOWN_OWNER = "an unknown partsup command"


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
    """The files (relative, '/'-separated) partsup recorded in ``out``'s marker, whichever
    command owns them; None when ``out`` has no marker. Entries that would point outside
    ``out`` are ignored."""
    found = owners(out)
    return None if found is None else list(found)


def owners(out: Path) -> dict[str, str | None] | None:
    """``{file: command}`` for every file recorded in ``out``'s marker (None: owner unknown,
    see the module docstring); None when ``out`` has no marker, ``{}`` when it is unreadable."""
    marker = Path(out) / MARKER
    if not marker.is_file():
        return None
    try:
        doc = json.loads(marker.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    files = [f for f in doc.get("files", []) if isinstance(f, str) and _safe(f)]
    recorded = doc.get("owners")
    if isinstance(recorded, dict):
        return {f: _owner(recorded.get(f)) for f in files}
    writer = _owner(doc.get("written_by"))  # a marker from before owners were recorded
    return {f: writer if _could_write(writer, f) else None for f in files}


def _owner(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _could_write(command: str | None, rel: str) -> bool:
    """Whether ``command`` writes files named like ``rel`` (any name for ``predict``)."""
    if command is None:
        return False
    names = OWN_NAMES.get(command)
    return names is None or PurePosixPath(rel).parts[0] in names


def foreign_entry(out: Path, command: str) -> tuple[str, str] | None:
    """The first file in ``out`` that exists and that the marker gives to another command than
    ``command`` (or to no known one), as ``(file, owner)``; None when there is none."""
    found = owners(out) or {}
    for rel, owner in sorted(found.items()):
        if owner != command and (os.path.lexists(Path(out) / rel)):
            return rel, owner or UNKNOWN_OWNER
    return None


def _refuse_foreign(out: Path, command: str, option: str) -> None:
    """DataError when ``out`` holds another command's files (see :func:`foreign_entry`)."""
    hit = foreign_entry(out, command)
    if hit is not None:
        rel, owner = hit
        raise DataError(f"{option} {out} holds the outputs of {owner} (e.g. {rel}, listed in its "
                        f"{MARKER}); {command or 'partsup'} writes only into a new or empty "
                        f"folder or its own earlier output, and never replaces or deletes "
                        f"another command's files: choose another {option}")


def _safe(rel: str) -> bool:
    p = PurePosixPath(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and p.name != MARKER


def check_output_folder(out: Path, option: str = "--out", command: str = "") -> None:
    """Refuse ``out`` unless it is absent, an empty folder, or ``command``'s output folder (a
    marker giving every existing file it lists to ``command``, or holding only the names
    ``command`` wrote before the marker existed).

    Raises:
        DataError: ``out`` is a file, a non-empty folder that partsup did not write, or a folder
            holding another command's outputs (names it, and that command, and what to do).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{option} {out} is a file, not a folder; choose a folder")
    if not out.is_dir():
        return
    if (out / MARKER).is_file():
        _refuse_foreign(out, command, option)
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
    # only this command's own entries (check_output_folder refused another command's files)
    old = [rel for rel, owner in (owners(out) or {}).items() if owner == command]
    _write_marker(out, command, dict.fromkeys(set(old) | set(new), command))  # a crash mid-way
    #                                                                          loses nothing
    for rel in new:
        target = out / rel
        if target.is_dir() and not target.is_symlink():
            raise DataError(f"cannot write {target}: a folder of that name is in the way")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, target)
    for rel in sorted(set(old) - set(new)):
        _remove_stale(out, rel)
    _write_marker(out, command, dict.fromkeys(new, command))


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


def check_not_foreign(out: Path, paths: Iterable[Path], command: str = "partsup predict") -> None:
    """Refuse to write ``paths`` (files inside ``out``) for ``command`` when ``out`` holds
    another command's outputs (:func:`foreign_entry`), or when one of ``paths`` exists (a
    symbolic link too, even one pointing nowhere) and the marker does not give it to
    ``command``: partsup replaces only files its command wrote. A link at a name the marker
    does give to ``command`` is replaced by the new file, never written through
    (:mod:`partsup.output.atomic`).

    Raises:
        DataError: names the folder and the owning command, or the first such file, and what to
            do instead.
    """
    out = Path(out)
    _refuse_foreign(out, command, "--out")
    owned = {rel for rel, owner in (owners(out) or {}).items() if owner == command}
    for rel in _relative(out, paths):
        if rel not in owned and os.path.lexists(out / rel):  # a link, even a dangling one
            what = "is a symbolic link" if (out / rel).is_symlink() else "exists"
            raise DataError(f"{out / rel} {what} and was not written by partsup; partsup never "
                            f"replaces such a file: choose another --out (or move the file)")


def record_owned(out: Path, paths: Iterable[Path], command: str) -> None:
    """Add ``paths`` (files ``command`` wrote inside ``out``) to ``out``'s marker as
    ``command``'s, so a later run of that command may replace them (:func:`check_not_foreign`);
    the other entries keep their owners."""
    out = Path(out)
    old = owners(out) or {}
    new = {**old, **dict.fromkeys(_relative(out, paths), command)}
    marker = out / MARKER
    if new != old or (new and not _has_owners(marker)):
        _write_marker(out, command, new)


def _has_owners(marker: Path) -> bool:
    with contextlib.suppress(OSError, ValueError):
        doc = json.loads(marker.read_text())
        return isinstance(doc, dict) and isinstance(doc.get("owners"), dict)
    return False


def _write_marker(out: Path, command: str, files: dict[str, str | None]) -> None:
    """The marker: ``files`` (sorted) and ``owners`` (file -> command; null: unknown)."""
    names = sorted(files)
    doc = {"written_by": command, "note": "partsup replaces and removes only the files listed "
           "here, each only by the command that owns it; delete this file to keep partsup "
           "from writing into this folder again",
           "files": names, "owners": {f: files[f] for f in names}}
    write_text(out / MARKER, json.dumps(doc, indent=1) + "\n")
