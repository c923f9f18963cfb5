"""Evaluation protocols of the mitosis challenges (facts.md, "Evaluation protocols").

Each is a factory returning a :class:`partsup.types.Protocol`; radii are micrometres, converted
with each image's um/px, so the same protocol works on rescaled or synthetic data. Every one
uses the core's greedy one-to-one matcher with an inclusive radius (``partsup.evaluation.matching.match``).
``radius_um`` may be overridden; ``icpr2012``, ``icpr2014`` and ``amida13`` also take
``radius_px``, a radius in pixels used as-is whatever the image's um/px (the paper states its
radii as 20 px and 32 px, which are not exactly 5 um and 8 um on every scanner).
"""
from __future__ import annotations

import math
from typing import Callable

from partsup.plugin import Protocol, RecipeError


def _make(name: str, radius_um: float, note: str, radius_px: float | None = None) -> Protocol:
    if radius_px is None:
        return Protocol(name=name, radius_um=float(radius_um),
                        description=f"{note}; match within {radius_um:g} um, greedy one-to-one")
    if not (math.isfinite(radius_px) and radius_px > 0):
        raise RecipeError(f"protocol {name}: radius_px must be a positive number of pixels, "
                          f"got {radius_px!r}")
    return Protocol(name=name, radius_um=float(radius_um), radius_px=float(radius_px),
                    description=f"{note}; match within {radius_px:g} px (fixed, whatever the "
                                f"um/px), greedy one-to-one")


def icpr2012(radius_um: float = 5.0, radius_px: float | None = None) -> Protocol:
    """ICPR 2012 MITOS: 5 um, i.e. 20.36 px at 0.2456 um/px (scanner A).

    The PartMitosis paper states the radius as 20 px; pass ``radius_px=20`` to match with
    exactly 20 px (used as-is, ``radius_um`` then ignored).
    """
    return _make("icpr2012", radius_um, "ICPR 2012 MITOS (scanner A, 0.2456 um/px)", radius_px)


def icpr2012_8um(radius_um: float = 8.0) -> Protocol:
    """ICPR 2012 MITOS scored with the 8 um radius used by the later challenges."""
    return _make("icpr2012-8um", radius_um, "ICPR 2012 MITOS with the 8 um radius")


def icpr2014(radius_um: float = 8.0, radius_px: float | None = None) -> Protocol:
    """MITOS-ATYPIA-14: 8 um, i.e. 32.59 px at 0.2455 um/px (Aperio), 35.20 px at 0.2273
    (Hamamatsu).

    The paper states 32 px; pass ``radius_px=32`` to match with exactly 32 px on every frame
    (used as-is, ``radius_um`` then ignored).
    """
    return _make("icpr2014", radius_um, "ICPR 2014 MITOS-ATYPIA", radius_px)


def amida13(radius_um: float = 8.0, radius_px: float | None = None) -> Protocol:
    """AMIDA13 / TUPAC16: 8 um, i.e. exactly 32 px at 0.25 um/px.

    ``radius_px`` sets a radius in pixels used as-is (``radius_um`` then ignored).
    """
    return _make("amida13", radius_um, "AMIDA13 / TUPAC16 (0.25 um/px)", radius_px)


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
