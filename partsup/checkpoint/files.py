"""Checkpoint files: one ``torch.save``'d dict (layout in :mod:`partsup.checkpoint.payload`),
written atomically, read with ``weights_only=True``; ``.safetensors`` files
(:mod:`partsup.checkpoint.safetensors_file`) are read and updated the same way.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from partsup.checkpoint.payload import FAMILY, FORMAT
from partsup.checkpoint.safetensors_file import is_safetensors, read_safetensors, save_safetensors
from partsup.errors import CheckpointError
from partsup.manager import Registries
from partsup.output.atomic import atomic_open
from partsup.output.outdir import os_reason as _os_reason


def _torch_write_reason(exc: RuntimeError, folder: Path) -> str:
    """Why torch could not write a file: its "[enforce fail at inline_container.cc ...] file
    write failed" usually means a full disk (checked while the partial file still exists)."""
    import shutil
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "write failed" not in text and "enforce fail" not in text:
        return text
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if free is not None and free < 1 << 20:
        return f"no space left on device in {folder}"
    return f"torch could not write the file in {folder} (is the disk full?): {text}"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file in the same folder, fsync, rename).

    A reader never sees a half-written file: either the old checkpoint or the new one.
    ``payload["format"]`` is set to :data:`FORMAT` when missing.

    Raises:
        CheckpointError: the folder cannot be created or written (permission, read-only file
            system, full disk); the message names the path and the reason, and any temporary
            file is removed.
    """
    path = Path(path)
    payload = dict(payload)
    payload.setdefault("format", FORMAT)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create checkpoint folder {path.parent}: "
                              f"{_os_reason(exc)}") from exc
    try:
        with atomic_open(path, "wb") as fh:
            torch.save(payload, fh)
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {_os_reason(exc)}") from exc
    except RuntimeError as exc:  # torch wraps some write failures (e.g. ENOSPC) in RuntimeError
        raise CheckpointError(f"cannot write checkpoint {path}: "
                              f"{_torch_write_reason(exc, path.parent)}") from exc
    return path


def checkpoint_file(path: str | Path) -> Path:
    """``path`` itself, or ``path/best.pt`` when ``path`` is a run folder.

    Raises:
        CheckpointError: a folder without ``best.pt`` (the message lists the ``.pt`` files in it).
    """
    path = Path(path)
    if not path.is_dir():
        return path
    if (path / "best.pt").is_file():
        return path / "best.pt"
    found = sorted(p.relative_to(path).as_posix() for p in path.rglob("*.pt"))[-5:]
    raise CheckpointError(f"{path} is a folder without best.pt; "
                          + (f"it holds {', '.join(found)}: pass one of those" if found else
                             "it holds no .pt file (pass a checkpoint file or a run folder)"))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a partsup checkpoint with ``torch.load(weights_only=True)`` onto the CPU; a run
    folder stands for its ``best.pt`` (:func:`checkpoint_file`); a ``.safetensors`` file is read
    with :func:`partsup.checkpoint.safetensors_file.read_safetensors` (weights and metadata only).

    Raises:
        CheckpointError: missing file, a file that is not a torch file, or a torch file that is
            not a partsup checkpoint (e.g. a bare state dict), each naming the path.
    """
    path = checkpoint_file(path)
    if is_safetensors(path):  # tensors + JSON metadata, never unpickled
        return read_safetensors(path, FORMAT)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise CheckpointError(f"{path} is not a readable torch checkpoint file "
                              f"(truncated, or another kind of file)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused an object: not ours
        raise CheckpointError(f"{path} is not a partsup checkpoint: it holds pickled objects "
                              f"other than tensors and plain values (refused for safety)") from exc
    except Exception as exc:  # a damaged archive
        raise CheckpointError(f"{path} is not a readable torch checkpoint file "
                              f"({type(exc).__name__})") from exc
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if not isinstance(fmt, str) or not fmt.startswith(FAMILY):
        raise CheckpointError(f"{path} is not a partsup checkpoint (no {FORMAT!r} format tag; "
                              f"a bare state dict or another tool's file?)")
    if fmt != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {fmt!r} is not supported by this "
                              f"version of partsup (expected {FORMAT!r})")
    for key in ("recipe", "model"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    return ckpt


def load_model(path: str | Path, registries: Registries, device: str | torch.device = "cpu"
               ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the model a checkpoint describes and load its weights.

    Args:
        path: a checkpoint written by ``partsup train`` (or :func:`save_checkpoint`), or a
            ``.safetensors`` file written by ``partsup export --format safetensors``.
        registries: a :class:`partsup.manager.Registries` with the backbone and transfer used.
        device: where to put the model.

    Returns:
        ``(model, checkpoint)``; the model is in eval mode on ``device``.

    Raises:
        CheckpointError: unreadable file, a crop classifier's checkpoint (task: classify; one
            line pointing to ``calibrate --second-look`` and ``evaluate --at``), or a state
            dict that does not fit the built model (names the first missing / unexpected /
            mis-shaped key), weights that are not finite or an input normalisation with a
            std of 0 (:func:`check_usable`).
    """
    from partsup.model.partial import build_model, load_strict

    ckpt = load_checkpoint(path)
    if (ckpt.get("recipe") or {}).get("task") == "classify":
        raise CheckpointError(f"{path} is a crop classifier (task: classify), not a detector; "
                              f"give it with --second-look to partsup calibrate --checkpoint "
                              f"DETECTOR.pt (which attaches it), or score it alone with "
                              f"partsup evaluate --at")
    _load_plugins(ckpt, registries, path)
    try:
        section = ckpt["recipe"]["model"]
    except (KeyError, TypeError):
        raise CheckpointError(f"{path}: checkpoint recipe has no 'model' section") from None
    # weight files named by the recipe (e.g. Pascal-VOC FCN-32s) need not exist here: the
    # checkpoint's state dict replaces every weight
    model = build_model(section, registries, skip_weights=True)
    load_strict(model, ckpt["model"], str(path))
    if isinstance(ckpt.get("normalization"), dict):
        # the input normalisation the trained weights expect (built without weight files, a
        # backbone may otherwise fall back to another default)
        model.normalization = ckpt["normalization"]
    check_usable(path, ckpt["model"], model.normalization)
    model.to(device)
    model.eval()
    return model, ckpt


def check_usable(path: str | Path, state: Any, normalization: Any) -> None:
    """Refuse a model whose weights hold NaN/inf or whose input normalisation divides by zero
    (:func:`partsup.data.normalize.check_input_normalization`): every map would be NaN.

    Raises:
        CheckpointError: one line naming the checkpoint and the rule.
    """
    from partsup.data.normalize import check_input_normalization
    from partsup.errors import DataError
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{path}: the weights are not finite (NaN/inf in {len(bad)} "
                              f"tensor(s), e.g. {', '.join(bad[:3])}); the model cannot detect "
                              f"anything: use an earlier checkpoint")
    try:
        check_input_normalization(normalization, str(path))
    except DataError as exc:
        raise CheckpointError(str(exc)) from None


def _load_plugins(ckpt: dict[str, Any], registries: Registries, path: str | Path) -> None:
    """Import the plugin modules the checkpoint's run used (its recipe's ``plugins``)."""
    from partsup.errors import PluginError
    modules = (ckpt.get("recipe") or {}).get("plugins") or []
    if not modules or not hasattr(registries, "add_modules"):
        return
    try:
        registries.add_modules([str(m) for m in modules])
    except PluginError as exc:
        raise PluginError(f"{path}: the run used plugin module(s) {', '.join(modules)}: "
                          f"{exc}") from exc


_KEEP: Any = object()


def update_detect_params(path: str | Path, params: dict[str, Any] | None,
                         normalize: dict[str, Any] | None = _KEEP) -> Path:
    """Replace ``checkpoint["detect"]`` with ``params`` (plain numbers/strings) and, when
    given, the recipe's ``data.normalize`` with ``normalize`` (None: none), atomically."""
    path = checkpoint_file(path)
    ckpt = load_checkpoint(path)
    ckpt["detect"] = None if params is None else dict(params)
    if normalize is not _KEEP:
        recipe = dict(ckpt.get("recipe") or {})
        recipe["data"] = {**(recipe.get("data") or {}), "normalize": normalize}
        ckpt["recipe"] = recipe
    if is_safetensors(path):
        return save_safetensors(path, ckpt)
    return save_checkpoint(path, ckpt)

