"""The core's own plugin: generic defaults, registered through the same hooks as any plugin.

Each core module that owns components lists them in a plain ``name -> factory`` dict next to
their code (the :data:`CORE_COMPONENTS` table names the module and the dict). The registration
hooks register them lazily, as ``"module:attr"`` entries (:data:`CORE_NAMES`: each name's factory
attribute), so describing the registries (``partsup --help``, ``partsup plugins``) imports none
of those modules (nor torch); a module is imported when one of its components is first used.
This plugin sits low in the layer order (docs/architecture.md) and imports none of them itself.
The CLI's commands are registered by their own package, :mod:`partsup.cli.commands`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from partsup.hookspecs import Register, hookimpl

#: component kind (a :data:`partsup.hookspecs.COMPONENT_KINDS` ``attr``) -> the core module that
#: lists its components and the name of its ``name -> factory`` dict; each row has its hook
#: implementation below
CORE_COMPONENTS: dict[str, tuple[str, str]] = {
    "weight_transfers": ("partsup.model.transfer", "TRANSFERS"),
    "losses": ("partsup.model.losses", "LOSSES"),
    "classifiers": ("partsup.model.classifier", "CLASSIFIERS"),
    "optimizers": ("partsup.training.optim", "OPTIMIZERS"),
    "filters": ("partsup.inference.filters", "FILTERS"),
    "writers": ("partsup.output.writers", "WRITERS"),
    "datasets": ("partsup.data.folder", "DATASETS"),
    "normalizers": ("partsup.data.normalize", "NORMALIZERS"),
    "protocols": ("partsup.evaluation.protocols", "PROTOCOLS"),
}


#: component kind -> ``name -> attribute`` of each factory in the :data:`CORE_COMPONENTS` module
#: (the same names and objects as its dict: tests/test_startup.py), registered lazily
CORE_NAMES: dict[str, dict[str, str]] = {
    "weight_transfers": {"affine": "make_affine", "mlp": "make_mlp"},
    "losses": {"pixel_ce": "pixel_ce"},
    "classifiers": {"cnn": "make_cnn"},
    "optimizers": {"sgd_paper": "sgd_paper", "adamw": "adamw"},
    "filters": {"area": "area", "score": "score"},
    "writers": {"csv": "CsvWriter", "geojson": "GeoJsonWriter"},
    "datasets": {"folder": "Folder"},
    "normalizers": {"reinhard": "Reinhard"},
    "protocols": {"pixels": "pixels", "microns": "microns"},
}


def _register_core(register: Register, kind: str) -> None:
    """Register every component :data:`CORE_NAMES` lists for ``kind`` as a lazy
    ``"module:attr"`` entry of its :data:`CORE_COMPONENTS` module (nothing imported now)."""
    module, _ = CORE_COMPONENTS[kind]
    for name, attr in CORE_NAMES[kind].items():
        register(name, f"{module}:{attr}")


@hookimpl
def partsup_register_weight_transfers(register: Register) -> None:
    """Register the core's weight transfers (``partsup.model.transfer.TRANSFERS``)."""
    _register_core(register, "weight_transfers")


@hookimpl
def partsup_register_losses(register: Register) -> None:
    """Register the core's losses (``partsup.model.losses.LOSSES``)."""
    _register_core(register, "losses")


@hookimpl
def partsup_register_classifiers(register: Register) -> None:
    """Register the core's crop classifiers (``partsup.model.classifier.CLASSIFIERS``)."""
    _register_core(register, "classifiers")


@hookimpl
def partsup_register_optimizers(register: Register) -> None:
    """Register the core's optimiser recipes (``partsup.training.optim.OPTIMIZERS``)."""
    _register_core(register, "optimizers")


@hookimpl
def partsup_register_filters(register: Register) -> None:
    """Register the core's candidate filters (``partsup.inference.filters.FILTERS``)."""
    _register_core(register, "filters")


@hookimpl
def partsup_register_writers(register: Register) -> None:
    """Register the core's detection writers (``partsup.output.writers.WRITERS``)."""
    _register_core(register, "writers")


@hookimpl
def partsup_register_datasets(register: Register) -> None:
    """Register the core's dataset readers (``partsup.data.folder.DATASETS``)."""
    _register_core(register, "datasets")


@hookimpl
def partsup_register_normalizers(register: Register) -> None:
    """Register the core's colour normalizers (``partsup.data.normalize.NORMALIZERS``)."""
    _register_core(register, "normalizers")


@hookimpl
def partsup_register_protocols(register: Register) -> None:
    """Register the core's evaluation protocols (``partsup.evaluation.protocols.PROTOCOLS``)."""
    _register_core(register, "protocols")


@hookimpl(trylast=True)
def partsup_fuse(weak: np.ndarray, strong: np.ndarray | None,
                 params: dict[str, Any]) -> np.ndarray:
    """Default fusion (paper Eq. 2): ``S = w * S_weak + (1 - w) * S_strong``."""
    if strong is None:
        return weak
    w = float(params.get("w", 0.5))
    return w * weak + (1.0 - w) * strong
