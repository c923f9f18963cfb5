"""Concentric weak labels and the concentric loss (SegMitos), plus a disk point-label type.

Registered lazily (``"module:attr"``, the same names as :data:`.labels.LABEL_MAKERS` and
:data:`.losses.LOSSES`): the loss module (torch) is imported when a recipe builds it.
"""
from __future__ import annotations

from typing import Any, Callable

from partsup.plugin import hookimpl

#: registry kind -> ``name -> "module:attr"`` of each factory (tests/test_startup.py checks
#: them against the modules' tables)
LAZY: dict[str, dict[str, str]] = {
    "label_makers": {"concentric": "partsup_concentric.labels:concentric",
                     "disk": "partsup_concentric.labels:disk"},
    "losses": {"concentric": "partsup_concentric.losses:concentric_loss"},
}


@hookimpl
def partsup_register_label_makers(register: Callable[..., Any]) -> None:
    for name, target in LAZY["label_makers"].items():
        register(name, target)


@hookimpl
def partsup_register_losses(register: Callable[..., Any]) -> None:
    for name, target in LAZY["losses"].items():
        register(name, target)
