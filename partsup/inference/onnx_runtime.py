"""Running an exported model (``partsup export --format onnx``) with onnxruntime on the CPU.

:class:`OnnxMaps` has the two methods the tiled inference needs (``preprocess``,
``probabilities``), so the same :class:`partsup.inference.detector.Detector` (tiling, fusion,
threshold, blobs, filters) turns its maps into detections: only the network runs elsewhere.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from partsup.errors import PartsupError
from partsup.inference.export import SIDECAR_FORMAT, onnx_session, sidecar_path
from partsup.model.partial import normalize

if TYPE_CHECKING:
    from partsup.manager import Registries


def read_sidecar(path: str | Path) -> tuple[dict[str, Any], Path]:
    """``(sidecar, model file)`` of an exported model: ``path`` is the ``.onnx`` file or its
    ``.json`` sidecar.

    Raises:
        PartsupError: missing files, or a JSON that is not a partsup export sidecar.
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
    model = side.with_name(str(info.get("model", "")))
    if info.get("runtime") != "onnx" or not model.is_file():
        raise PartsupError(f"{side}: its model {model} is not an ONNX file that exists")
    return info, model


class OnnxMaps:
    """An exported ONNX model behind the ``preprocess`` / ``probabilities`` contract of
    :class:`partsup.model.partial.PartialModel` (CPU, float32)."""

    def __init__(self, model_file: str | Path, sidecar: dict[str, Any],
                 threads: int | None = None) -> None:
        self.session = onnx_session(model_file, threads)
        self.normalization = dict(sidecar["input"]["normalization"])
        self.outputs = list(sidecar["outputs"])
        self.size = None if sidecar.get("dynamic_size", True) else tuple(sidecar["size"])

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
    (``.onnx`` or its sidecar) with onnxruntime on the CPU, with the sidecar's detection
    parameters updated by the non-None ``overrides``.

    The detector records the ``.onnx`` file's name and SHA-256, and as ``source_sha256`` the
    checkpoint's that the model's metadata (else the sidecar) records."""
    from partsup.checkpoint.digest import file_sha256
    from partsup.inference.detector import Detector
    from partsup.data.normalize import build_normalizer
    from partsup.inference.params import DetectParams
    info, model = read_sidecar(path)
    if info.get("plugins") and hasattr(registries, "add_modules"):
        registries.add_modules(info["plugins"])
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
