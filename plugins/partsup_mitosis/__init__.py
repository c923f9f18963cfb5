"""Mitosis datasets (icpr2012, icpr2014, amida13, midog, ami-br), evaluation protocols, the
challenges' detection formats (tupac, mitos-atypia, midog), counts per HPF in ``partsup predict``,
the synthetic H&E generator with its ``partsup synth`` and ``partsup demo`` commands, and the
shipped default model (``models/``, see docs/model-card.md).

Everything is registered through the core's hooks, exactly as a third-party plugin would."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from partsup.plugin import hookimpl


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


@hookimpl
def partsup_register_writers(register: Callable[..., Any]) -> None:
    from partsup_mitosis import formats
    for name, factory in formats.WRITERS.items():
        register(name, factory)


@hookimpl
def partsup_register_commands(register: Callable[..., Any]) -> None:
    from partsup_mitosis.commands import demo, synth
    for module in (synth, demo):
        command = module.COMMAND
        register(command.name, command, summary=command.help)


@hookimpl
def partsup_command_options(command: str) -> list[Any] | None:
    if command != "predict":
        return None
    from partsup_mitosis.counts import predict_options
    from partsup_mitosis.grading import slide_options
    return predict_options() + slide_options()


@hookimpl
def partsup_slide_outputs(slide: Any, options: Mapping[str, Any]) -> list[str] | None:
    from partsup_mitosis.grading import slide_outputs
    return slide_outputs(slide, options)


@hookimpl
def partsup_count_summary(counts: Sequence[Any], options: Mapping[str, Any]
                          ) -> list[str] | None:
    from partsup_mitosis.counts import hpf_mm2, summary_lines
    return summary_lines(counts, hpf_mm2(options))


#: the shipped real-tissue model (weights, recipe and calibration; docs/model-card.md)
DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "partmitosis-amibr.pt"


@hookimpl
def partsup_default_checkpoint() -> Path | None:
    return DEFAULT_MODEL if DEFAULT_MODEL.is_file() else None
