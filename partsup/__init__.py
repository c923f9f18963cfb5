"""partsup: partially supervised segmentation-based detection.

The public names below are the stable API; everything else is internal.
"""
from __future__ import annotations

__version__ = "0.1.0"

from partsup.errors import PartsupError, RecipeError, PluginError  # noqa: E402
from partsup.registry import Registry  # noqa: E402
from partsup.plugins import hookimpl, make_plugin_manager, Registries  # noqa: E402

__all__ = [
    "__version__",
    "PartsupError",
    "RecipeError",
    "PluginError",
    "Registry",
    "Registries",
    "hookimpl",
    "make_plugin_manager",
]
