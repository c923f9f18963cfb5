"""What predicting one input gives (:class:`Result`), failures as one line, and the exit code
of a run."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from partsup.errors import PartsupError
from partsup.prediction.counts import ImageCount
from partsup.prediction.inputs import Item
from partsup.types import Detection


class DetectorLike(Protocol):
    """What prediction needs of a detector (:class:`partsup.inference.detector.Detector`)."""

    def detect(self, image: np.ndarray, mpp: float) -> Sequence[Detection]: ...


@dataclass
class Result:
    """What predicting one input gave: its count (None if it failed) and timing."""

    item: Item
    count: ImageCount | None = None
    seconds: float = 0.0
    error: str = ""
    outputs: list[Path] = field(default_factory=list)
    mpp_assumed: bool = False
    #: Ctrl-C stopped a slide between tiles (its outputs hold the tiles done)
    interrupted: bool = False
    #: lines to print after the summary (slides: tiles, tissue, plugins' figures)
    lines: list[str] = field(default_factory=list)


def failure_message(path: Path, exc: BaseException) -> str:
    """One line naming ``path`` and what went wrong."""
    text = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename:
        from partsup.output.outdir import os_reason
        return f"{path}: cannot write {exc.filename}: {os_reason(exc)}"
    if not isinstance(exc, PartsupError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if (str(path) in text or path.name in text) else f"{path}: {text}"


def exit_code(results: Sequence[Result]) -> int:
    """130 when interrupted, 1 when an input failed, else 0."""
    if any(r.interrupted for r in results):
        return 130
    return 1 if any(r.count is None for r in results) else 0


def provenance_of(detector: Any) -> dict[str, str]:
    """:meth:`Detector.provenance` of ``detector``; ``{}`` for an object without it (any
    object with ``detect`` can predict)."""
    get = getattr(detector, "provenance", None)
    return dict(get()) if callable(get) else {}
