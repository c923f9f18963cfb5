"""FCN-32s (Long et al.) as a partsup :class:`~partsup.model.partial.Branch`.

Layout of the Caffe ``voc-fcn32s`` net: VGG16 trunk with ``conv1_1`` padded by 100 px, 3x3
convolutions (padding 1) each followed by ReLU, five 2x2/2 max-pools rounding up (ceil mode);
``fc6`` (7x7, no padding) and ``fc7`` (1x1) as convolutions, each with ReLU and element-wise
dropout; ``score_fr`` (1x1, 2 classes, the semantic layer); ``upscore`` a frozen bilinear
transposed convolution (kernel 64, stride 32, no bias); output crop ``[19:19+H, 19:19+W]``.
Any ``H x W`` input gives an ``H x W`` output.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from partsup.plugin import Branch, named_normalization

#: VGG16 blocks: (block name, output channels of each 3x3 conv)
VGG16_BLOCKS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("conv1", (64, 64)),
    ("conv2", (128, 128)),
    ("conv3", (256, 256, 256)),
    ("conv4", (512, 512, 512)),
    ("conv5", (512, 512, 512)),
)
CONV_NAMES: tuple[str, ...] = tuple(f"{block}_{i + 1}" for block, widths in VGG16_BLOCKS
                                    for i in range(len(widths)))
PAD1 = 100        # conv1_1 padding, px
UP_KERNEL = 64    # upscore kernel size, px
UP_STRIDE = 32    # upscore stride = total trunk stride, px
CROP = 19         # offset of the output crop in the upscored map, px


def bilinear_kernel(size: int) -> torch.Tensor:
    """The ``(size, size)`` bilinear interpolation kernel of a transposed convolution."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float64)
    filt = 1 - (og - center).abs() / factor
    return (filt[:, None] * filt[None, :]).float()


class BilinearUpscore(nn.Module):
    """Frozen transposed convolution, channel i -> i bilinear, no bias.

    The kernel is a persistent *buffer* ``weight`` ``(C, C, k, k)``, not a parameter, so no
    optimiser can change it; it is saved in state dicts as ``upscore.weight``.
    """

    def __init__(self, channels: int = 2, kernel: int = UP_KERNEL, stride: int = UP_STRIDE) -> None:
        super().__init__()
        self.stride = stride
        weight = torch.zeros(channels, channels, kernel, kernel)
        k = bilinear_kernel(kernel)
        for c in range(channels):
            weight[c, c] = k
        self.register_buffer("weight", weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> ``(B, C, (h - 1) * stride + k, (w - 1) * stride + k)``."""
        return F.conv_transpose2d(x, self.weight.to(x.dtype), stride=self.stride)


class FCN32s(Branch):
    """FCN-32s with a 2-class ``score_fr`` (zero-initialised) as the semantic layer.

    Args:
        fc_channels: width of fc6/fc7 (4096 in FCN-32s; smaller values only for tests).
        dropout: element-wise dropout probability after fc6 and fc7 (0.5 in FCN-32s).
    """

    def __init__(self, fc_channels: int = 4096, dropout: float = 0.5) -> None:
        super().__init__()
        in_ch = 3
        for name, out_ch in zip(CONV_NAMES, (w for _, ws in VGG16_BLOCKS for w in ws)):
            self.add_module(name, nn.Conv2d(in_ch, out_ch, 3, padding=PAD1 if name == "conv1_1" else 1))
            in_ch = out_ch
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.fc6 = nn.Conv2d(512, fc_channels, 7)
        self.drop6 = nn.Dropout(dropout)
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
        self.drop7 = nn.Dropout(dropout)
        self.score_fr = nn.Conv2d(fc_channels, 2, 1)
        self.upscore = BilinearUpscore(2)
        self.feature_channels = fc_channels
        self.normalization: dict[str, Any] = named_normalization("caffe")
        self.reset_parameters()

    @property
    def semantic(self) -> nn.Conv2d:  # type: ignore[override]
        """``score_fr``: the final 1x1 layer ``(2, fc_channels, 1, 1)`` that Gamma reads."""
        return self.score_fr

    def reset_parameters(self) -> None:
        """He-normal (fan_out) convolutions with zero biases; ``score_fr`` all zero."""
        for name in CONV_NAMES + ("fc6", "fc7"):
            conv = getattr(self, name)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        self.zero_score()

    def zero_score(self) -> None:
        """Zero weight and bias of ``score_fr`` (the mitosis papers' start)."""
        nn.init.zeros_(self.score_fr.weight)
        nn.init.zeros_(self.score_fr.bias)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, 3, H, W)`` -> pool5 ``(B, 512, h5, w5)``."""
        for block, widths in VGG16_BLOCKS:
            for i in range(len(widths)):
                x = F.relu(getattr(self, f"{block}_{i + 1}")(x))
            x = self.pool(x)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, 3, H, W)`` -> fc7 features ``(B, fc_channels, h, w)``, h ~ (H + 6) / 32 - 6."""
        x = self.drop6(F.relu(self.fc6(self.trunk(x))))
        return self.drop7(F.relu(self.fc7(x)))

    def head(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``(B, 2, h, w)`` -> upscore (x32) -> crop ``[19:19+H, 19:19+W]`` -> ``(B, 2, H, W)``."""
        up = self.upscore(logits)
        height, width = size
        if up.shape[-2] < CROP + height or up.shape[-1] < CROP + width:
            raise ValueError(f"upscored map {tuple(up.shape[-2:])} too small for a "
                             f"{height}x{width} crop at offset {CROP}: input does not match logits")
        return up[..., CROP:CROP + height, CROP:CROP + width]
