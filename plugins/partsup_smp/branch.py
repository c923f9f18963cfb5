"""segmentation-models-pytorch models as partsup :class:`~partsup.model.partial.Branch` es.

The smp model is split into ``features`` (encoder -> decoder [-> the layers of the segmentation
head before its last conv]) and a new 1x1 ``semantic`` layer ``nn.Conv2d(C, 2, 1)`` that replaces
smp's last head conv (3x3 in most architectures), so that a weight-transfer function can read
and replace it. ``head`` upsamples bilinearly to the (padded) input size and crops.

Inputs whose sides are not multiples of the encoder's output stride (twice that for DPT) are
zero-padded (bottom and
right, in normalised units) before the encoder and the output is cropped back, so any ``H x W``
works.
"""
from __future__ import annotations

import math
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from partsup.plugin import Branch, PluginError


def _split_head(model: nn.Module, arch: str) -> tuple[nn.Module, int]:
    """(layers of the segmentation head before its last conv, that conv's input channels)."""
    head = model.segmentation_head
    inner = getattr(head, "head", None)  # DPT: conv-bn-relu-dropout-conv1x1 in .head
    if isinstance(inner, nn.Sequential) and isinstance(inner[-1], nn.Conv2d):
        return inner[:-1], inner[-1].in_channels
    if isinstance(head, nn.Sequential) and isinstance(head[0], nn.Conv2d):
        return nn.Identity(), head[0].in_channels
    raise PluginError(f"smp architecture {arch!r}: unsupported segmentation head "
                      f"{type(head).__name__}")


class SmpBranch(Branch):
    """An smp encoder + decoder with a 2-class 1x1 ``semantic`` layer.

    Args:
        model: an smp ``SegmentationModel`` (its segmentation head's last conv is replaced).
        arch: architecture name, for messages.
        normalization: how the encoder weights expect input (see ``partsup.model.partial``).
    """

    def __init__(self, model: nn.Module, arch: str, normalization: dict[str, Any]) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.decoder = model.decoder
        self.pre_head, channels = _split_head(model, arch)
        self.semantic = nn.Conv2d(channels, 2, 1)
        nn.init.xavier_uniform_(self.semantic.weight)  # smp's head initialisation
        nn.init.zeros_(self.semantic.bias)
        self.feature_channels = channels
        self.prefix_tokens = isinstance(model, getattr(smp, "DPT", ()))
        stride = int(getattr(model.encoder, "output_stride", 32))
        # DPT fuses patch grids at half resolution: the grid itself must be even
        self.stride = 2 * stride if self.prefix_tokens else stride
        self.arch = arch
        self.normalization = normalization

    def padded(self, size: tuple[int, int]) -> tuple[int, int]:
        """Input size rounded up to multiples of the encoder's output stride, px."""
        return tuple(int(math.ceil(s / self.stride) * self.stride) for s in size)  # type: ignore[return-value]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, 3, H, W)`` -> decoder features ``(B, C, h, w)`` (h = H_pad / k)."""
        ph, pw = self.padded((int(x.shape[-2]), int(x.shape[-1])))
        if (ph, pw) != tuple(x.shape[-2:]):
            x = F.pad(x, (0, pw - x.shape[-1], 0, ph - x.shape[-2]))
        if self.prefix_tokens:
            feats, prefix = self.encoder(x)
            out = self.decoder(feats, prefix)
        else:
            out = self.decoder(self.encoder(x))
        return self.pre_head(out)

    def head(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``(B, 2, h, w)`` -> bilinear resize to the padded size -> crop to ``size``."""
        ph, pw = self.padded(size)
        if tuple(logits.shape[-2:]) != (ph, pw):
            logits = F.interpolate(logits, size=(ph, pw), mode="bilinear", align_corners=False)
        return logits[..., : size[0], : size[1]]
