"""Mitosis datasets (icpr2012, icpr2014, amida13, midog, ami-br), evaluation protocols, the
challenges' detection formats (tupac, mitos-atypia, midog), counts per HPF in ``partsup predict``,
the synthetic H&E generator with its ``partsup synth`` and ``partsup demo`` commands, and the
shipped default model (``models/``, see docs/model-card.md).

Everything is registered through the core's hooks, exactly as a third-party plugin would."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from partsup.plugin import hookimpl


#: registry kind -> ``name -> "module:attr"`` of each factory, registered lazily (the modules,
#: some slow to import, load when a component is first used); the same names and objects as
#: the modules' own tables (``readers.DATASETS``, ``amibr.DATASETS``, ``protocols.PROTOCOLS``,
#: ``formats.WRITERS``; tests/test_startup.py checks them)
LAZY: dict[str, dict[str, str]] = {
    "datasets": {"icpr2012": "partsup_mitosis.readers.icpr:ICPR2012",
                 "icpr2014": "partsup_mitosis.readers.icpr:ICPR2014",
                 "amida13": "partsup_mitosis.readers.amida13:AMIDA13",
                 "midog": "partsup_mitosis.readers.midog:MIDOG",
                 "ami-br": "partsup_mitosis.amibr.dataset:factory",
                 "ami-br-crops": "partsup_mitosis.amibr.crops:factory"},
    "protocols": {"icpr2012": "partsup_mitosis.protocols:icpr2012",
                  "icpr2012-8um": "partsup_mitosis.protocols:icpr2012_8um",
                  "icpr2014": "partsup_mitosis.protocols:icpr2014",
                  "amida13": "partsup_mitosis.protocols:amida13",
                  "midog": "partsup_mitosis.protocols:midog"},
    "writers": {"tupac": "partsup_mitosis.formats:TupacWriter",
                "mitos-atypia": "partsup_mitosis.formats:MitosAtypiaWriter",
                "midog": "partsup_mitosis.formats:MidogWriter"},
}

#: command name -> (``"module:attr"``, its one-line help: the command class's ``help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("partsup_mitosis.commands.synth:COMMAND",
              "write a synthetic H&E mitosis dataset in the layout of "
              "amida13/icpr2012/icpr2014/midog"),
    "demo": ("partsup_mitosis.commands.demo:COMMAND",
             "generate synthetic data, train quickstart + the weak-only baseline, compare "
             "(make demo)"),
}


@hookimpl
def partsup_register_datasets(register: Callable[..., Any]) -> None:
    for name, target in LAZY["datasets"].items():
        register(name, target)


@hookimpl
def partsup_register_protocols(register: Callable[..., Any]) -> None:
    for name, target in LAZY["protocols"].items():
        register(name, target)


@hookimpl
def partsup_register_writers(register: Callable[..., Any]) -> None:
    for name, target in LAZY["writers"].items():
        register(name, target)


@hookimpl
def partsup_register_commands(register: Callable[..., Any]) -> None:
    for name, (target, help) in COMMANDS.items():
        register(name, target, summary=help)


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
