"""partsup: partially supervised segmentation-based detection.

The public names below are the stable API for using partsup from Python, and
:mod:`partsup.plugin` is the one for writing plugins (docs/plugins.md, "The plugin API");
everything else is internal.
"""
from __future__ import annotations

__version__ = "0.1.0"

import os as _os  # noqa: E402

# OpenMP threads that spin while they wait starve each other on a busy machine (measured: a
# 2-thread training step took 0.5 s with waiting threads asleep and 15 s with them spinning,
# next to another CPU job). Set before torch loads its OpenMP runtime; an explicit value wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from partsup.errors import PartsupError, RecipeError, PluginError  # noqa: E402
from partsup.hookspecs import hookimpl  # noqa: E402
from partsup.registry import Registry  # noqa: E402
from partsup.manager import make_plugin_manager, Registries  # noqa: E402
from partsup.manager import load as load_plugins  # noqa: E402
from partsup.types import Detection  # noqa: E402

__all__ = [
    "__version__",
    "Detection",
    "Detector",
    "PartsupError",
    "RecipeError",
    "PluginError",
    "Registry",
    "Registries",
    "hookimpl",
    "load_plugins",
    "make_plugin_manager",
]


def __getattr__(name: str) -> object:
    """``partsup.Detector`` is imported on first use (it loads torch): the inference detector
    plus ``predict_slide`` (:class:`partsup.prediction.api.Detector`)."""
    if name == "Detector":
        from partsup.prediction.api import Detector
        return Detector
    raise AttributeError(f"module 'partsup' has no attribute {name!r}")
