"""The public plugin API: every name a plugin may import from partsup.

Plugins import from here only (``from partsup.plugin import hookimpl, Branch, DataError``);
the bundled plugins do, and ``tests/test_plugin_api.py`` holds them to it. The names listed in
:data:`__all__` follow semantic versioning: one is removed, renamed or changes its signature
or meaning only in a new major version (after a minor version that warns). Every other module
of partsup is internal and may change in any release. The table of docs/plugins.md, "The
plugin API", says what each name is.

Importing this module is cheap: each name is imported from its home module on first use
(PEP 562 ``__getattr__``), so ``from partsup.plugin import hookimpl`` does not load torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real names, for type checkers and editors
    from partsup.command import Command, Context, add_command_arguments
    from partsup.data.images import list_images
    from partsup.data.normalize import fit_reference, sample_pixels
    from partsup.data.readers import (DataWarning, Problems, Reader, Record, SampleSequence,
                                      as_points, floats, group_split, layout_and_source,
                                      log_summary, read_csv_rows)
    from partsup.errors import CheckpointError, DataError, PartsupError, PluginError, RecipeError
    from partsup.hookspecs import Register, hookimpl
    from partsup.manager import Registries
    from partsup.model.losses import MaskedCrossEntropy, Reduction
    from partsup.model.partial import (Branch, load_strict, named_normalization, read_weights,
                                       state_dict_of)
    from partsup.options import Option, check_range
    from partsup.output.atomic import replacing
    from partsup.output.outdir import check_not_foreign
    from partsup.output.writers import GeoJsonWriter, json_number, load_json, number_rows, prepare
    from partsup.prediction.counts import ImageCount, SetCount, area_mm2, pool_counts
    from partsup.prediction.slide import SlideOutput
    from partsup.recipe import load_run
    from partsup.registry import scalar_or_pair
    from partsup.slides.density import Window, best_window, density_map
    from partsup.slides.tissue import read_roi
    from partsup.training.loop import fit
    from partsup.training.rundir import RunDir
    from partsup.types import IGNORE_INDEX, Blobs, Detection, Protocol, Sample

#: public name -> the module it comes from (imported on first use)
_EXPORTS: dict[str, str] = {
    # hooks and errors
    "hookimpl": "partsup.hookspecs",
    "Register": "partsup.hookspecs",
    "PartsupError": "partsup.errors",
    "RecipeError": "partsup.errors",
    "PluginError": "partsup.errors",
    "DataError": "partsup.errors",
    "CheckpointError": "partsup.errors",
    # data types
    "Sample": "partsup.types",
    "Detection": "partsup.types",
    "Blobs": "partsup.types",
    "Protocol": "partsup.types",
    "IGNORE_INDEX": "partsup.types",
    # recipe options and command options
    "scalar_or_pair": "partsup.registry",
    "Option": "partsup.options",
    "check_range": "partsup.options",
    # commands
    "Command": "partsup.command",
    "Context": "partsup.command",
    "add_command_arguments": "partsup.command",
    "Registries": "partsup.manager",
    # backbones, weights, losses
    "Branch": "partsup.model.partial",
    "named_normalization": "partsup.model.partial",
    "read_weights": "partsup.model.partial",
    "state_dict_of": "partsup.model.partial",
    "load_strict": "partsup.model.partial",
    "MaskedCrossEntropy": "partsup.model.losses",
    "Reduction": "partsup.model.losses",
    # dataset readers
    "Reader": "partsup.data.readers",
    "Record": "partsup.data.readers",
    "SampleSequence": "partsup.data.readers",
    "Problems": "partsup.data.readers",
    "DataWarning": "partsup.data.readers",
    "as_points": "partsup.data.readers",
    "floats": "partsup.data.readers",
    "group_split": "partsup.data.readers",
    "read_csv_rows": "partsup.data.readers",
    "layout_and_source": "partsup.data.readers",
    "log_summary": "partsup.data.readers",
    "list_images": "partsup.data.images",
    # colour normalizers
    "fit_reference": "partsup.data.normalize",
    "sample_pixels": "partsup.data.normalize",
    # output formats and files
    "GeoJsonWriter": "partsup.output.writers",
    "prepare": "partsup.output.writers",
    "load_json": "partsup.output.writers",
    "json_number": "partsup.output.writers",
    "number_rows": "partsup.output.writers",
    "check_not_foreign": "partsup.output.outdir",
    "replacing": "partsup.output.atomic",
    # counts and slides
    "ImageCount": "partsup.prediction.counts",
    "SetCount": "partsup.prediction.counts",
    "area_mm2": "partsup.prediction.counts",
    "pool_counts": "partsup.prediction.counts",
    "SlideOutput": "partsup.prediction.slide",
    "Window": "partsup.slides.density",
    "best_window": "partsup.slides.density",
    "density_map": "partsup.slides.density",
    "read_roi": "partsup.slides.tissue",
    # runs (for plugin commands)
    "load_run": "partsup.recipe",
    "fit": "partsup.training.loop",
    "RunDir": "partsup.training.rundir",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """``partsup.plugin.<name>``: imported from its home module on first use, then cached."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'partsup.plugin' has no attribute {name!r} (the plugin "
                             f"API is partsup.plugin.__all__, docs/plugins.md)")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
