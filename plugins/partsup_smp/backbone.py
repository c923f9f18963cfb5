"""The ``smp`` backbone factory: any segmentation-models-pytorch architecture and encoder
(segmentation-models-pytorch is imported when one is built)."""
from __future__ import annotations

from typing import Any, Literal

from torch import nn

from partsup.plugin import CheckpointError, RecipeError


def _hub_error(value: str) -> CheckpointError:
    return CheckpointError(
        f"model.backbone.encoder_weights: {value!r} would need a download from a model hub, "
        f"which is not possible here; set encoder_weights to a local file (a state dict of the "
        f"encoder, e.g. saved with torch.save(model.encoder.state_dict(), path)) or null")


def make_smp(arch: str = "Unet", encoder: str = "resnet18", encoder_weights: str | None = None,
             encoder_depth: int | None = None, decoder_channels: list[int] | int | None = None,
             normalization: Literal["imagenet", "caffe", "unit"] = "imagenet",
             **kw: Any) -> nn.Module:
    """Any smp architecture + encoder (tu-<name> for timm), 2 classes, 1x1 semantic layer.

    Args:
        arch: smp architecture name, case-insensitive (e.g. Unet, FPN, DeepLabV3Plus).
        encoder: smp encoder name (e.g. resnet18, efficientnet-b0) or ``tu-<timm model>``.
        encoder_weights: a local file with encoder weights, or None (random init). Hub names
            such as ``imagenet`` are refused (nothing is downloaded).
        encoder_depth: number of encoder stages (smp default when None).
        decoder_channels: passed to smp (a list for Unet-like, an int for DeepLabV3/FPN-like).
        normalization: input normalisation the encoder weights expect (ImageNet by default).
        **kw: further keyword arguments of the smp architecture.
    """
    import segmentation_models_pytorch as smp

    from partsup.plugin import named_normalization

    from .branch import SmpBranch
    from .weights import load_encoder_weights
    if encoder_weights is not None and not _looks_like_path(encoder_weights):
        raise _hub_error(encoder_weights)
    options = dict(kw)
    if encoder_depth is not None:
        options["encoder_depth"] = encoder_depth
    if decoder_channels is not None:
        options["decoder_channels"] = decoder_channels
    known = sorted(smp.MODEL_ARCHITECTURES_MAPPING)
    if arch.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
        raise RecipeError(f"model.backbone.arch: unknown smp architecture {arch!r}; "
                          f"known: {', '.join(known)}")
    try:
        model = smp.create_model(arch, encoder_name=encoder, encoder_weights=None,
                                 in_channels=3, classes=2, **options)
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        msg = str(exc.args[0] if exc.args else exc).splitlines()[0][:300]
        raise RecipeError(f"model.backbone: smp cannot build {arch} with encoder {encoder!r} "
                          f"and options {options}: {msg}") from None
    if encoder_weights is not None:
        load_encoder_weights(model.encoder, encoder_weights)
    return SmpBranch(model, arch, named_normalization(normalization, "model.backbone.normalization"))


def _looks_like_path(value: str) -> bool:
    """A local-file value: contains a path separator or a file suffix, or exists."""
    from pathlib import Path
    return "/" in value or "\\" in value or Path(value).suffix != "" or Path(value).exists()
