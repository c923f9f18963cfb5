"""The ``fcn32s`` backbone factory: FCN-32s with its weights loaded (imports torch)."""
from __future__ import annotations

from typing import Literal

from partsup.plugin import named_normalization

from .network import FCN32s
from .weights import NORMALIZATION, WeightsFormat, load_fcn_weights


def make_fcn32s(weights: str | None = None, weights_format: WeightsFormat = "auto",
                dropout: float = 0.5, fc_channels: int = 4096,
                normalization: Literal["caffe", "imagenet", "unit"] | None = None) -> FCN32s:
    """FCN-32s (VGG16, pad 100, frozen bilinear x32 upscore, crop 19), 2 classes.

    Args:
        weights: local weights file (None: random He-normal trunk; nothing is downloaded).
        weights_format: ``auto`` (detect), ``caffe_voc`` (converted Pascal-VOC FCN-32s),
            ``torchvision_vgg16`` (ImageNet VGG16) or ``partsup`` (a partsup checkpoint's weak
            branch, or a bare FCN32s state dict).
        dropout: element-wise dropout after fc6 and fc7.
        fc_channels: fc6/fc7 width; 4096 is FCN-32s (smaller only for quick tests).
        normalization: input normalisation override; None follows the weights (Caffe files:
            ``caffe``; torchvision: ``imagenet``; partsup: as recorded; no weights: ``caffe``).
    """
    net = FCN32s(fc_channels=fc_channels, dropout=dropout)
    if weights is not None:
        fmt, recorded = load_fcn_weights(net, weights, weights_format)
        if normalization is None:
            if fmt in NORMALIZATION:
                net.normalization = named_normalization(NORMALIZATION[fmt])
            elif recorded is not None:
                net.normalization = dict(recorded)
            else:
                from partsup.plugin import CheckpointError
                raise CheckpointError(f"{weights}: the file does not record its input "
                                      f"normalisation; set model.backbone.normalization "
                                      f"(caffe, imagenet or unit)")
    if normalization is not None:
        net.normalization = named_normalization(normalization, "model.backbone.normalization")
    return net
