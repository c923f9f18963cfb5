"""Which model made a result: the SHA-256 of a model file (a checkpoint, a ``.safetensors``
file, an exported ``.onnx``).

A detector loaded from a file records it (``Detector.model_sha256``); ``partsup predict``
writes it into ``summary.csv`` and the GeoJSON files, and ``partsup export`` into the ONNX
model's metadata (``source_sha256``), so that a lab can tell which model produced a count.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["file_sha256"]

#: bytes read at a time: a model file is hashed without holding it in memory
CHUNK = 1 << 20

#: ``(resolved path, mtime ns, size) -> hex digest``: each file is read once per process
#: (a changed file has another mtime or size and is read again)
_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of the file ``path`` (a link: of the file it points to) as 64 lowercase
    hex digits, streamed in :data:`CHUNK` byte pieces and cached for the process by the
    file's resolved path, modification time (ns) and size.

    Raises:
        OSError: the file cannot be read (missing, a folder, no permission).
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_mtime_ns, st.st_size)
    found = _CACHE.get(key)
    if found is None:
        h = hashlib.sha256()
        with open(real, "rb") as fh:
            for block in iter(lambda: fh.read(CHUNK), b""):
                h.update(block)
        found = _CACHE[key] = h.hexdigest()
    return found
