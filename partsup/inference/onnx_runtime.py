"""Running an exported model (``partsup export --format onnx``) with onnxruntime on the CPU.

:class:`OnnxMaps` has the two methods the tiled inference needs (``preprocess``,
``probabilities``), so the same :class:`partsup.inference.detector.Detector` (tiling, fusion,
threshold, blobs, filters) turns its maps into detections: only the network runs elsewhere.

A sidecar is trusted only as far as it agrees with its model (:func:`read_sidecar`): it must
name the ``.onnx`` file given, hold the keys a run reads, and list as many outputs as the
graph gives. Its ``plugins`` (the training recipe's) are never imported from it: they must be
loaded by the user (``partsup --plugin``), else the run is refused (:func:`check_plugins`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from partsup.data.normalize import check_input_normalization
from partsup.errors import PartsupError
from partsup.inference.export import SIDECAR_FORMAT, onnx_session, sidecar_path
from partsup.model.partial import normalize

if TYPE_CHECKING:
    from partsup.manager import Registries


def read_sidecar(path: str | Path) -> tuple[dict[str, Any], Path]:
    """``(sidecar, model file)`` of an exported model: ``path`` is the ``.onnx`` file or its
    ``.json`` sidecar. The sidecar must name the model file beside it: a ``.onnx`` given is
    run only with a sidecar that names that very file, and a sidecar's ``model`` is a plain
    file name in its own folder.

    Raises:
        PartsupError: missing files, a JSON that is not a partsup export sidecar, a sidecar
            that names another model file, or one without the keys a run needs (one line
            naming the sidecar).
    """
    path = Path(path)
    side = path if path.suffix.lower() == ".json" else sidecar_path(path)
    if not side.is_file():
        raise PartsupError(f"{side} not found: --model needs the .onnx file and the .json "
                           f"sidecar partsup export wrote beside it")
    try:
        info = json.loads(side.read_text())
    except ValueError as exc:
        raise PartsupError(f"{side}: not JSON ({exc})") from exc
    if not isinstance(info, dict) or info.get("format") != SIDECAR_FORMAT:
        raise PartsupError(f"{side} is not a partsup export sidecar ({SIDECAR_FORMAT})")
    name = info.get("model")
    if not isinstance(name, str) or not name or name != Path(name).name or name in (".", ".."):
        raise PartsupError(f"{side}: 'model' must be the file name of the ONNX file beside it, "
                           f"got {name!r}")
    if side is not path and name != path.name:
        raise PartsupError(f"{side} belongs to the model {name}, not to {path.name}: a sidecar "
                           f"runs only the model it names (export {path.name} again, or give "
                           f"--model {side.with_name(name)})")
    model = side.with_name(name)
    if info.get("runtime") != "onnx" or not model.is_file():
        raise PartsupError(f"{side}: its model {model} is not an ONNX file that exists")
    _check_sidecar(info, side)
    return info, model


def _check_sidecar(info: dict[str, Any], side: Path) -> None:
    """The keys a run reads, with the types it needs (PartsupError naming ``side``)."""
    norm = (info.get("input") or {}).get("normalization") if isinstance(info.get("input"),
                                                                         dict) else None
    outputs = info.get("outputs")
    problem = None
    if not isinstance(norm, dict):
        problem = "'input.normalization' is missing"
    elif not isinstance(outputs, list) or not 1 <= len(outputs) <= 2:
        problem = f"'outputs' must list one or two output names, got {outputs!r}"
    elif not isinstance(info.get("detect"), dict):
        problem = "'detect' (the detection parameters) is missing"
    elif not info.get("dynamic_size", True) and not (
            isinstance(info.get("size"), list) and len(info["size"]) == 2):
        problem = "a fixed-size graph needs 'size': [H, W]"
    if problem is not None:
        raise PartsupError(f"{side}: {problem}; export the model again (partsup export)")
    check_input_normalization(norm, f"{side}: input.normalization")


def check_plugins(info: dict[str, Any], registries: Any, side: Path) -> None:
    """Refuse a sidecar whose ``plugins`` are not loaded: a sidecar never imports code (a
    model file from elsewhere must not run modules); load them with ``partsup --plugin``.

    Raises:
        PluginError: one line naming the sidecar, the plugins and what to do.
    """
    from partsup.errors import PluginError
    wanted = [str(m) for m in info.get("plugins") or []]
    pm = getattr(registries, "pm", None)
    loaded: set[str] = set()
    if pm is not None:
        for plugin in pm.get_plugins():
            loaded.update(n for n in (pm.get_name(plugin), getattr(plugin, "__name__", None))
                          if n)
    missing = [m for m in wanted if m not in loaded]
    if missing:
        flags = " ".join(f"--plugin {m}" for m in missing)
        raise PluginError(f"{side}: the model needs plugin(s) {', '.join(missing)}, which are "
                          f"not loaded; a sidecar never imports code itself: load them "
                          f"yourself (partsup {flags} predict ...) if you trust them")


class OnnxMaps:
    """An exported ONNX model behind the ``preprocess`` / ``probabilities`` contract of
    :class:`partsup.model.partial.PartialModel` (CPU, float32)."""

    def __init__(self, model_file: str | Path, sidecar: dict[str, Any],
                 threads: int | None = None) -> None:
        self.session = onnx_session(model_file, threads)
        self.normalization = dict(sidecar["input"]["normalization"])
        self.outputs = list(sidecar["outputs"])
        self.size = None if sidecar.get("dynamic_size", True) else tuple(sidecar["size"])
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != ["image"] or len(outputs) != len(self.outputs):
            raise PartsupError(f"{model_file}: the model takes {inputs} and gives {len(outputs)} "
                               f"output(s), but its sidecar says ['image'] and "
                               f"{len(self.outputs)} ({', '.join(map(str, self.outputs))}): "
                               f"the sidecar does not belong to this model; export it again")

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """``(H, W, 3)`` uint8 RGB -> ``(1, 3, H, W)`` float32 normalised."""
        x = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].float()
        return normalize(x, self.normalization)

    def probabilities(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, 3, h, w)`` normalised -> ``(p_weak, p_strong | None)`` each ``(B, h, w)``
        float32; one image per run (the graph's batch is 1)."""
        h, w = int(x.shape[-2]), int(x.shape[-1])
        maps: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for one in x.float().cpu():
            inp = one[None]
            if self.size is not None and (h, w) != self.size:  # a fixed-size graph
                if h > self.size[0] or w > self.size[1]:
                    raise PartsupError(f"the exported model takes {self.size} px only; set "
                                       f"--tile {self.size[0]}")
                inp = F.pad(inp, (0, self.size[1] - w, 0, self.size[0] - h), mode="reflect")
            for j, m in enumerate(self.session.run(None, {"image": inp.numpy()})):
                maps[j].append(m[0, :h, :w])
        out = [torch.from_numpy(np.stack(m)) for m in maps]
        return out[0], (out[1] if len(out) > 1 else None)


def load_onnx_detector(path: str | Path, registries: Registries, threads: int | None = None,
                       **overrides: Any) -> Any:
    """A :class:`partsup.inference.detector.Detector` running the exported model ``path``
    (``.onnx`` or its sidecar, :func:`read_sidecar`) with onnxruntime on the CPU, with the
    sidecar's detection parameters updated by the non-None ``overrides``. The sidecar's
    ``plugins`` must be loaded already (:func:`check_plugins`): it imports none.

    The detector records the ``.onnx`` file's name and SHA-256, and as ``source_sha256`` the
    checkpoint's that the model's metadata (else the sidecar) records."""
    from partsup.checkpoint.digest import file_sha256
    from partsup.inference.detector import Detector
    from partsup.data.normalize import build_normalizer
    from partsup.inference.params import DetectParams
    info, model = read_sidecar(path)
    check_plugins(info, registries, sidecar_path(model))
    params = DetectParams.from_dict(dict(info["detect"]), **overrides)
    normalizer = build_normalizer(info.get("normalize"), registries,
                                  f"{path}: the sidecar's normalize")
    maps = OnnxMaps(model, info, threads)
    source = (maps.session.get_modelmeta().custom_metadata_map.get("source_sha256")
              or info.get("source_sha256"))
    return Detector(maps, params, registries, device="cpu", model_mpp=info.get("mpp"),
                    normalizer=normalizer, model_name=model.name,
                    model_sha256=file_sha256(model),
                    source_sha256=source if isinstance(source, str) and source else None)
