"""The core's own plugin: generic defaults, registered through the same hooks as any plugin.

Each registration hook reads a plain ``name -> factory`` dict from the core module that owns
those components (the :data:`CORE_COMPONENTS` table), so a module lists its own components next
to their code. CLI commands are the
``COMMAND`` objects of the modules in :mod:`partsup.cli.commands`.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable

import numpy as np

from partsup.hookspecs import KIND_BY_ATTR, ComponentKind, Register, hookimpl

#: component kind (a :data:`partsup.hookspecs.COMPONENT_KINDS` ``attr``) -> the core module that
#: lists its components and the name of its ``name -> factory`` dict
CORE_COMPONENTS: dict[str, tuple[str, str]] = {
    "weight_transfers": ("partsup.model.transfer", "TRANSFERS"),
    "losses": ("partsup.model.losses", "LOSSES"),
    "optimizers": ("partsup.training.optim", "OPTIMIZERS"),
    "filters": ("partsup.inference.filters", "FILTERS"),
    "writers": ("partsup.output.writers", "WRITERS"),
    "datasets": ("partsup.data.folder", "DATASETS"),
    "normalizers": ("partsup.data.normalize", "NORMALIZERS"),
    "protocols": ("partsup.evaluation.protocols", "PROTOCOLS"),
}


def _registration_impl(kind: ComponentKind, module: str, attr: str) -> Callable[..., None]:
    """The hook implementation ``partsup_register_<kind>`` that registers ``module.attr``
    (imported when the hook runs, so importing this plugin stays cheap)."""
    def impl(register: Register) -> None:
        for name, factory in getattr(importlib.import_module(module), attr).items():
            register(name, factory)
    impl.__name__ = impl.__qualname__ = kind.hook
    impl.__doc__ = f"Register the core's {kind.label} components (``{module}.{attr}``)."
    return hookimpl(impl)


# partsup_register_weight_transfers, partsup_register_losses, ... (one per CORE_COMPONENTS row)
for _attr, (_module, _dict) in CORE_COMPONENTS.items():
    globals()[KIND_BY_ATTR[_attr].hook] = _registration_impl(KIND_BY_ATTR[_attr], _module, _dict)
del _attr, _module, _dict


@hookimpl
def partsup_register_commands(register: Register) -> None:
    import partsup.cli.commands as pkg
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        command = getattr(module, "COMMAND", None)
        if command is not None:
            register(getattr(command, "name", info.name), command,
                     summary=getattr(command, "help", None))


@hookimpl(trylast=True)
def partsup_fuse(weak: np.ndarray, strong: np.ndarray | None,
                 params: dict[str, Any]) -> np.ndarray:
    """Default fusion (paper Eq. 2): ``S = w * S_weak + (1 - w) * S_strong``."""
    if strong is None:
        return weak
    w = float(params.get("w", 0.5))
    return w * weak + (1.0 - w) * strong
