"""The core's own plugin: generic defaults, registered through the same hooks as any plugin.

Each hook below reads a plain ``name -> factory`` dict from the core module that owns those
components, so a module lists its own components next to their code. CLI commands are the
``COMMAND`` objects of the modules in :mod:`partsup.cli.commands`.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable

import numpy as np

from partsup.manager import hookimpl


def _register_dict(register: Callable[..., Any], module: str, attr: str) -> None:
    for name, factory in getattr(importlib.import_module(module), attr).items():
        register(name, factory)


@hookimpl
def partsup_register_weight_transfers(register: Callable[..., Any]) -> None:
    _register_dict(register, "partsup.model.transfer", "TRANSFERS")


@hookimpl
def partsup_register_losses(register: Callable[..., Any]) -> None:
    _register_dict(register, "partsup.model.losses", "LOSSES")


@hookimpl
def partsup_register_optimizers(register: Callable[..., Any]) -> None:
    _register_dict(register, "partsup.training.optim", "OPTIMIZERS")


@hookimpl
def partsup_register_filters(register: Callable[..., Any]) -> None:
    _register_dict(register, "partsup.inference.filters", "FILTERS")


@hookimpl
def partsup_register_writers(register: Callable[..., Any]) -> None:
    _register_dict(register, "partsup.output.writers", "WRITERS")


@hookimpl
def partsup_register_datasets(register: Callable[..., Any]) -> None:
    _register_dict(register, "partsup.data.folder", "DATASETS")


@hookimpl
def partsup_register_protocols(register: Callable[..., Any]) -> None:
    _register_dict(register, "partsup.evaluation.protocols", "PROTOCOLS")


@hookimpl
def partsup_register_commands(register: Callable[..., Any]) -> None:
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
