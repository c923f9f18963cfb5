"""Checkpoints: one ``torch.save``'d dict, written atomically, read with ``weights_only=True``.

Payload keys (format ``partsup-checkpoint/1``):

- ``format``: the string :data:`FORMAT`.
- ``recipe``: the resolved recipe (plain dict, as :func:`partsup.recipe.load_recipe` returns).
- ``model``: the :class:`partsup.model.partial.PartialModel` state dict.
- ``normalization``: the input normalisation of the weights (``{"mean", "std", "scale", "bgr"}``).
- ``detect``: calibrated detection parameters (``w, s1, a1, sigma, area_unit``) or None.
- training state (absent or None in exported models): ``optimizer``, ``scheduler`` (state dicts),
  ``iteration`` (int, iterations done), ``rng`` (see :func:`rng_state`), ``sampler``
  (the sampler position, a dict), ``best`` (``{"metric": float | None, "iteration": int}``),
  ``stage`` (``"weak"`` / ``"strong"`` / ``"joint"``).

Everything in a payload is a tensor, a number, a string, None, or a list/tuple/dict of those, so
that :func:`torch.load` with ``weights_only=True`` reads it back (no pickled code).
"""
from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from partsup.errors import CheckpointError
from partsup.manager import Registries
from partsup.output.outdir import os_reason as _os_reason
from partsup.output.atomic import atomic_open
from partsup.training.safetensors_file import is_safetensors, read_safetensors, save_safetensors

#: the format tag of this version of the checkpoint layout
FORMAT = "partsup-checkpoint/1"
_FAMILY = "partsup-checkpoint/"


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
    with :func:`partsup.training.safetensors_file.read_safetensors` (weights and metadata only).

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
    if not isinstance(fmt, str) or not fmt.startswith(_FAMILY):
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
        CheckpointError: unreadable file, or a state dict that does not fit the built model
            (names the first missing / unexpected / mis-shaped key).
    """
    from partsup.model.partial import build_model, load_strict

    ckpt = load_checkpoint(path)
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
    model.to(device)
    model.eval()
    return model, ckpt


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


# -- random number generator states (only weights_only-safe types) -----------------------------

def rng_state() -> dict[str, Any]:
    """The Python, NumPy (legacy global) and torch (CPU and CUDA) RNG states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
