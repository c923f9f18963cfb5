"""Mitosis datasets (icpr2012, icpr2014, amida13, midog, ami-br), evaluation protocols, and the
shipped default model (``models/``, see docs/model-card.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from partsup.manager import hookimpl


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


#: the shipped real-tissue model (weights, recipe and calibration; docs/model-card.md)
DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "partmitosis-amibr.pt"


@hookimpl
def partsup_default_checkpoint() -> Path | None:
    return DEFAULT_MODEL if DEFAULT_MODEL.is_file() else None
