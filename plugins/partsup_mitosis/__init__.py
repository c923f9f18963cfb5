"""Mitosis datasets (icpr2012, icpr2014, amida13, midog, ami-br) and evaluation protocols."""
from __future__ import annotations

from typing import Any, Callable

from partsup.plugins import hookimpl


@hookimpl
def partsup_register_datasets(register: Callable[..., Any]) -> None:
    from partsup_mitosis import amibr, readers
    for table in (readers.DATASETS, amibr.DATASETS):
        for name, factory in table.items():
            register(name, factory)


@hookimpl
def partsup_register_protocols(register: Callable[..., Any]) -> None:
    from partsup_mitosis import protocols
    for name, factory in protocols.PROTOCOLS.items():
        register(name, factory)
