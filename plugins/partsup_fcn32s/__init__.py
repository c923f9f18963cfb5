"""FCN-32s backbone plugin (the PartMitosis / SegMitos backbone), registered as ``fcn32s``.

The network and its factory (:mod:`.backbone`, :mod:`.network`: torch) are imported when the
backbone is first built or one of their names is read here: registering the plugin
(``partsup --help``, ``partsup plugins``) imports neither.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from partsup.plugin import hookimpl

__all__ = ["FCN32s", "make_fcn32s", "bilinear_kernel", "CROP"]

#: each public name -> the submodule that defines it (imported on first use)
_HOMES = {"FCN32s": "network", "bilinear_kernel": "network", "CROP": "network",
          "make_fcn32s": "backbone"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def partsup_register_backbones(register: Callable[..., Any]) -> None:
    register("fcn32s", "partsup_fcn32s.backbone:make_fcn32s")
