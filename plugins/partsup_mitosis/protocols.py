"""Evaluation protocols of the mitosis challenges (facts.md, "Evaluation protocols").

Each is a factory returning a :class:`partsup.types.Protocol`; radii are micrometres, converted
with each image's um/px, so the same protocol works on rescaled or synthetic data. Every one
uses the core's greedy one-to-one matcher with an inclusive radius (``partsup.metrics.match``).
``radius_um`` may be overridden (e.g. to reproduce a paper's pixel figure exactly).
"""
from __future__ import annotations

from typing import Callable

from partsup.types import Protocol


def _make(name: str, radius_um: float, note: str) -> Protocol:
    return Protocol(name=name, radius_um=float(radius_um),
                    description=f"{note}; match within {radius_um:g} um, greedy one-to-one")


def icpr2012(radius_um: float = 5.0) -> Protocol:
    """ICPR 2012 MITOS: 5 um (20 px at 0.2456 um/px), as in the PartMitosis paper."""
    return _make("icpr2012", radius_um, "ICPR 2012 MITOS (scanner A, 0.2456 um/px)")


def icpr2012_8um(radius_um: float = 8.0) -> Protocol:
    """ICPR 2012 MITOS scored with the 8 um radius used by the later challenges."""
    return _make("icpr2012-8um", radius_um, "ICPR 2012 MITOS with the 8 um radius")


def icpr2014(radius_um: float = 8.0) -> Protocol:
    """MITOS-ATYPIA-14: 8 um (32 px)."""
    return _make("icpr2014", radius_um, "ICPR 2014 MITOS-ATYPIA")


def amida13(radius_um: float = 8.0) -> Protocol:
    """AMIDA13 / TUPAC16: 8 um (32 px at 0.25 um/px)."""
    return _make("amida13", radius_um, "AMIDA13 / TUPAC16 (0.25 um/px)")


def midog(radius_um: float = 7.5) -> Protocol:
    """MIDOG 2021/2022/MIDOG++: 7.5 um (30 px at 0.25 um/px)."""
    return _make("midog", radius_um, "MIDOG (0.25 um/px)")


PROTOCOLS: dict[str, Callable[..., Protocol]] = {
    "icpr2012": icpr2012,
    "icpr2012-8um": icpr2012_8um,
    "icpr2014": icpr2014,
    "amida13": amida13,
    "midog": midog,
}
