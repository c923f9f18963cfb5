"""Model weights as a ``.safetensors`` file: tensors plus the checkpoint's metadata as JSON.

A ``.safetensors`` file holds the :class:`partsup.model.partial.PartialModel` state dict (one
tensor per key, contiguous, on the CPU) and, in the header's string metadata, ``format``
(:data:`FORMAT`) and ``partsup``: JSON of ``{"recipe", "normalization", "detect"}`` (the resolved
recipe, the input normalisation and the calibrated detection parameters, or null). Reading it
never unpickles anything. Training state (optimiser, RNG, ...) is not kept: the file is for
inference (``partsup predict``, :class:`partsup.inference.detector.Detector`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from partsup.errors import CheckpointError
from partsup.output.atomic import atomic_open

#: the format tag stored in the header metadata
FORMAT = "partsup-safetensors/1"
SUFFIX = ".safetensors"
_KEYS = ("recipe", "normalization", "detect")


def is_safetensors(path: str | Path) -> bool:
    """Whether ``path`` names a ``.safetensors`` file (by its ending)."""
    return Path(path).suffix.lower() == SUFFIX


def save_safetensors(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint["model"]`` (tensors) and its recipe, normalisation and detection
    parameters (metadata) to ``path`` atomically.

    Raises:
        CheckpointError: the metadata is not JSON-serialisable, or the file cannot be written.
    """
    from safetensors.torch import save

    path = Path(path)
    # contiguous CPU copies: safetensors refuses shared or strided storage
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in checkpoint["model"].items()}
    try:
        meta = json.dumps({k: checkpoint.get(k) for k in _KEYS}, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is not JSON ({exc})") from exc
    data = save(tensors, metadata={"format": FORMAT, "partsup": meta})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def read_safetensors(path: str | Path, checkpoint_format: str) -> dict[str, Any]:
    """A checkpoint dict (``format`` = ``checkpoint_format``, ``recipe``, ``model``,
    ``normalization``, ``detect``) from a file :func:`save_safetensors` wrote, tensors on the CPU.

    Raises:
        CheckpointError: missing or unreadable file, or one without partsup metadata.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # a damaged or foreign file
        raise CheckpointError(f"{path} is not a readable safetensors file "
                              f"({type(exc).__name__})") from exc
    if meta.get("format") != FORMAT or "partsup" not in meta:
        raise CheckpointError(f"{path} holds no partsup metadata (format {FORMAT!r}); write "
                              f"it with partsup export --format safetensors")
    try:
        info = json.loads(meta["partsup"])
    except ValueError as exc:
        raise CheckpointError(f"{path}: damaged partsup metadata ({exc})") from exc
    return {"format": checkpoint_format, "model": tensors,
            **{k: info.get(k) for k in _KEYS}}

