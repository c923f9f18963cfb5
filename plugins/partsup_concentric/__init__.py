"""Concentric weak labels and the concentric loss (SegMitos), plus a disk point-label type."""
from __future__ import annotations

from typing import Any, Callable

from partsup.plugin import hookimpl


@hookimpl
def partsup_register_label_makers(register: Callable[..., Any]) -> None:
    from partsup_concentric.labels import LABEL_MAKERS
    for name, factory in LABEL_MAKERS.items():
        register(name, factory)


@hookimpl
def partsup_register_losses(register: Callable[..., Any]) -> None:
    from partsup_concentric.losses import LOSSES
    for name, factory in LOSSES.items():
        register(name, factory)
