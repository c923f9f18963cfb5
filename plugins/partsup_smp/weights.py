"""Loading smp encoder weights from a local file (no hub downloads).

Accepted files: a state dict (or ``{"state_dict": ...}`` / ``{"model": ...}``) whose keys are the
encoder's own, or carry an ``encoder.`` prefix (a whole smp model), or lack the ``model.`` prefix
of timm-universal (``tu-``) encoders (a plain timm checkpoint). Tensors of an ImageNet
classifier that the encoder does not have (top-level ``fc``, ``classifier``, ``head``,
``last_linear``) are dropped; any other unexpected, missing or mis-shaped tensor raises
CheckpointError naming the key and both shapes.
"""
from __future__ import annotations

import torch
from torch import nn

from partsup.plugin import load_strict, read_weights, state_dict_of

CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.")


def _candidates(state: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    out = [state]
    if any(k.startswith("encoder.") for k in state):
        out.append({k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")})
    out.append({f"model.{k}": v for k, v in state.items()})
    return out


def align_encoder_state(state: dict[str, torch.Tensor], encoder: nn.Module) -> dict[str, torch.Tensor]:
    """Pick the key layout that best matches ``encoder`` and drop classifier tensors."""
    own = set(encoder.state_dict())
    best = max(_candidates(state), key=lambda s: len(own & set(s)))
    return {k: v for k, v in best.items()
            if k in own or not k.removeprefix("model.").startswith(CLASSIFIER_PREFIXES)}


def load_encoder_weights(encoder: nn.Module, path: str) -> None:
    """Strictly load a local weights file into ``encoder``."""
    state = state_dict_of(read_weights(path, "smp encoder weights"), str(path))
    load_strict(encoder, align_encoder_state(state, encoder), str(path))
