"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The data goes to a temporary file in the destination's folder, is flushed to disk, then renamed
over the destination (``os.replace``). On any error the temporary file is removed and the
destination is untouched. A symbolic link at the destination is replaced by the new file, never
written through (a link planted in an output folder cannot make partsup overwrite a file
elsewhere). The new file gets the permissions a plain ``open`` would give it (``0o666`` less the
umask), not the temporary file's ``0o600``.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kw: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` (``mode`` ``"w"`` or ``"wb"``; ``kw``: ``open``'s
    ``newline``, ``encoding``); on a clean exit it replaces ``path`` (a link there included).
    Raises whatever the writing raised (``OSError`` ...)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kw) as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def replacing(path: str | Path, mode: str = "w", **kw: Any) -> Iterator[IO[Any]]:
    """:func:`atomic_open` with ``path``'s folder created first: how the core's writers (and
    predict's images, ``summary.csv``) write, so a symbolic link at ``path`` is replaced, never
    written through. A plugin's writer may use it too."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, mode, **kw) as fh:
        yield fh


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return Path(path)


def unlink_link(path: str | Path) -> Path:
    """Remove ``path`` when it is a symbolic link (the link, never its target), so that a
    writer which opens ``path`` itself (a plugin's) creates a file there instead of writing
    through the link; returns ``path``."""
    path = Path(path)
    if path.is_symlink():
        path.unlink()
    return path
