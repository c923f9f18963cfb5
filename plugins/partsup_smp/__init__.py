"""segmentation-models-pytorch / timm backbones plugin, registered as ``smp``.

Any smp architecture (Unet, UnetPlusPlus, FPN, DeepLabV3, DeepLabV3Plus, PAN, PSPNet, Linknet,
MAnet, UPerNet, Segformer, DPT) with any smp encoder, including timm encoders through smp's
``tu-<timm name>`` names. Weights come only from local files.

Also the ``timm`` crop classifier (a second look's net, :mod:`.classifier`): any timm model
with a Linear per head.

segmentation-models-pytorch (and timm, torchvision, torch) are imported only when a backbone or
classifier is built (:mod:`.backbone`, :mod:`.classifier`): registering the plugin
(``partsup --help``, ``partsup plugins``) does not pay for them.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from partsup.plugin import hookimpl

__all__ = ["SmpBranch", "make_smp"]

#: each public name -> the submodule that defines it (imported on first use: ``from partsup_smp
#: import SmpBranch`` imports segmentation-models-pytorch then)
_HOMES = {"SmpBranch": "branch", "make_smp": "backbone"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def partsup_register_backbones(register: Callable[..., Any]) -> None:
    register("smp", "partsup_smp.backbone:make_smp")


@hookimpl
def partsup_register_classifiers(register: Callable[..., Any]) -> None:
    register("timm", "partsup_smp.classifier:make_timm_classifier")
