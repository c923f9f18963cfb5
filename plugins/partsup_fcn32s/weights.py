"""Loading FCN-32s weights from local files (no downloads).

Formats (``weights_format``):

- ``caffe_voc``: the Caffe-converted Pascal-VOC FCN-32s state dict (``conv1_1..conv5_3``,
  ``fc6 (4096, 512, 7, 7)``, ``fc7 (4096, 4096, 1, 1)``, ``score_fr (21, 4096, 1, 1)``,
  ``upscore (21, 21, 64, 64)``). The 21-class ``score_fr`` and ``upscore`` are dropped: the
  2-class ``score_fr`` starts at zero and ``upscore`` is rebuilt (bilinear, 2 classes).
  Input: BGR, 0-255, minus the Caffe mean.
- ``torchvision_vgg16``: ImageNet VGG16 in torchvision layout (``features.N``,
  ``classifier.0`` -> fc6 reshaped ``(4096, 25088) -> (4096, 512, 7, 7)``, ``classifier.3`` ->
  fc7). The 1000-class ``classifier.6`` is dropped. Input: RGB ImageNet normalisation.
- ``partsup``: a partsup checkpoint (``{"model": state_dict, "normalization": ...}``; the weak
  branch ``weak.*`` is used) or a bare FCN32s state dict; every tensor must match.

Every other tensor must be present with the model's shape; anything missing, mismatched or
unexpected raises CheckpointError naming the key and both shapes.
"""
from __future__ import annotations

from typing import Any, Literal

import torch

from partsup.plugin import CheckpointError, load_strict, read_weights, state_dict_of

from .network import CONV_NAMES, FCN32s

WeightsFormat = Literal["auto", "caffe_voc", "torchvision_vgg16", "partsup"]

#: index of each VGG16 conv in torchvision's ``features`` Sequential
TORCHVISION_CONV_INDEX = dict(zip(CONV_NAMES, (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)))
#: tensors of a source file that are replaced on purpose (documented above)
DROPPED = {"caffe_voc": ("score_fr.weight", "score_fr.bias", "upscore.weight"),
           "torchvision_vgg16": ("classifier.6.weight", "classifier.6.bias")}
#: normalisation the weights expect, per format
NORMALIZATION = {"caffe_voc": "caffe", "torchvision_vgg16": "imagenet"}


def detect_format(obj: Any, source: str) -> str:
    """Guess the format of a loaded weights file."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        return "partsup"
    keys = set(obj) if isinstance(obj, dict) else set()
    if any(k.startswith("weak.") for k in keys):
        return "partsup"
    if "features.0.weight" in keys and "classifier.0.weight" in keys:
        return "torchvision_vgg16"
    if "conv1_1.weight" in keys and "score_fr.weight" in keys:
        score = obj["score_fr.weight"]
        up = obj.get("upscore.weight")
        ours = score.shape[0] == 2 and up is not None and tuple(up.shape[:2]) == (2, 2)
        return "partsup" if ours else "caffe_voc"
    raise CheckpointError(f"{source}: cannot tell the weights format; set "
                          f"model.backbone.weights_format to caffe_voc, torchvision_vgg16 "
                          f"or partsup")


def _fresh_head(net: FCN32s) -> dict[str, torch.Tensor]:
    """A zero 2-class score_fr and a bilinear 2-class upscore, as state-dict entries."""
    sd = net.state_dict()
    return {"score_fr.weight": torch.zeros_like(sd["score_fr.weight"]),
            "score_fr.bias": torch.zeros_like(sd["score_fr.bias"]),
            "upscore.weight": net.upscore.weight.detach().clone()}


def _take(state: dict[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"{source}: missing tensor {key!r}")
    return state.pop(key)


def _reject_leftovers(state: dict[str, torch.Tensor], source: str) -> None:
    if state:
        key = sorted(state)[0]
        raise CheckpointError(f"{source}: unexpected tensor {key!r} {tuple(state[key].shape)} "
                              f"(not part of FCN-32s)")


def from_caffe_voc(state: dict[str, torch.Tensor], net: FCN32s, source: str) -> dict[str, torch.Tensor]:
    """Caffe VOC FCN-32s state dict -> this net's state dict (score_fr/upscore replaced)."""
    state = dict(state)
    for key in DROPPED["caffe_voc"]:
        state.pop(key, None)
    out = {}
    for name in CONV_NAMES + ("fc6", "fc7"):
        for part in ("weight", "bias"):
            out[f"{name}.{part}"] = _take(state, f"{name}.{part}", source)
    _reject_leftovers(state, source)
    out.update(_fresh_head(net))
    return out


def from_torchvision_vgg16(state: dict[str, torch.Tensor], net: FCN32s,
                           source: str) -> dict[str, torch.Tensor]:
    """torchvision VGG16 state dict -> this net's state dict (fc6/fc7 from classifier.0/3)."""
    state = dict(state)
    for key in DROPPED["torchvision_vgg16"]:
        state.pop(key, None)
    out = {}
    for name, idx in TORCHVISION_CONV_INDEX.items():
        for part in ("weight", "bias"):
            out[f"{name}.{part}"] = _take(state, f"features.{idx}.{part}", source)
    own = net.state_dict()
    for fc, idx in (("fc6", 0), ("fc7", 3)):
        key = f"classifier.{idx}.weight"
        weight = _take(state, key, source)
        expected = own[f"{fc}.weight"].shape
        flat = (expected[0], expected[1] * expected[2] * expected[3])
        if tuple(weight.shape) != flat:
            raise CheckpointError(f"{source}: {key!r} has shape {tuple(weight.shape)} in the "
                                  f"file but {fc} needs {flat} (reshaped to {tuple(expected)})")
        out[f"{fc}.weight"] = weight.reshape(expected)
        out[f"{fc}.bias"] = _take(state, f"classifier.{idx}.bias", source)
    _reject_leftovers(state, source)
    out.update(_fresh_head(net))
    return out


def from_partsup(obj: Any, source: str) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """A partsup checkpoint or bare branch state dict -> (branch state dict, normalisation)."""
    norm = obj.get("normalization") if isinstance(obj, dict) else None
    state = state_dict_of(obj, source)
    if any(k.startswith("weak.") for k in state):
        state = {k[len("weak."):]: v for k, v in state.items() if k.startswith("weak.")}
    return state, norm if isinstance(norm, dict) else None


def load_fcn_weights(net: FCN32s, path: str, fmt: str = "auto") -> tuple[str, dict[str, Any] | None]:
    """Load ``path`` into ``net`` strictly; return (format used, normalisation recorded in a
    partsup checkpoint or None)."""
    source = str(path)
    obj = read_weights(path, "fcn32s weights")
    if fmt == "auto":
        fmt = detect_format(obj, source)
    recorded = None
    if fmt == "partsup":
        state, recorded = from_partsup(obj, source)
    elif fmt == "caffe_voc":
        state = from_caffe_voc(state_dict_of(obj, source), net, source)
    elif fmt == "torchvision_vgg16":
        state = from_torchvision_vgg16(state_dict_of(obj, source), net, source)
    else:
        raise CheckpointError(f"{source}: unknown weights_format {fmt!r}; expected auto, "
                              f"caffe_voc, torchvision_vgg16 or partsup")
    load_strict(net, state, source)
    return fmt, recorded
