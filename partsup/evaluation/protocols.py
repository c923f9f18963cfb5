"""Evaluation protocols: the match radius to score with, and which protocol a run uses.

A :class:`partsup.types.Protocol` gives the radius in micrometres (converted with each image's
um/px) or in pixels. The core registers the generic ``pixels`` and ``microns``; plugins register
dataset protocols. :func:`resolve_protocol` picks one from the command line, the dataset, the
recipe or a caller's default; :func:`with_radius` overrides its radius.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from partsup.manager import Registries
from partsup.types import Protocol


def pixels(radius_px: float = 30.0) -> Protocol:
    """A fixed radius in pixels, whatever the image's um/px."""
    return Protocol(name="pixels", radius_um=0.0, radius_px=float(radius_px),
                    description=f"match within {radius_px:g} px (inclusive), greedy one-to-one")


def microns(radius_um: float = 8.0) -> Protocol:
    """A radius in micrometres, converted with each image's um/px."""
    return Protocol(name="microns", radius_um=float(radius_um),
                    description=f"match within {radius_um:g} um (inclusive), greedy one-to-one")


PROTOCOLS: dict[str, Callable[..., Protocol]] = {"pixels": pixels, "microns": microns}


def protocol_dict(protocol: Protocol) -> dict[str, Any]:
    """A JSON-ready description of ``protocol``."""
    return {"name": protocol.name, "radius_um": protocol.radius_um,
            "radius_px": protocol.radius_px, "description": protocol.description}


def resolve_protocol(registries: Registries, name: str | None, dataset: str | None = None,
                     recipe: dict[str, Any] | None = None, radius_um: float | None = None,
                     radius_px: float | None = None, default: str = "microns") -> Protocol:
    """The protocol to score with: ``name`` if given; else the dataset's own protocol when one
    is registered under the dataset's name; else the recipe's ``eval.protocol``; else the
    caller's ``default`` (``microns``: 8 um unless the recipe sets a radius). A recipe's
    ``eval.radius_um`` / ``eval.radius_px`` override the radius of a protocol chosen from the
    recipe; the ``radius_um`` / ``radius_px`` arguments (CLI flags) override any protocol."""
    section = (recipe or {}).get("eval") or {}
    if name:
        proto = registries.protocols.build(name, where="--protocol")
    elif dataset and dataset in registries.protocols:
        proto = registries.protocols.build(dataset)
    else:
        chosen = section.get("protocol") or default
        proto = registries.protocols.build(chosen, where="eval.protocol")
        proto = with_radius(proto, section.get("radius_um"), section.get("radius_px"))
    return with_radius(proto, radius_um, radius_px)


def with_radius(proto: Protocol, radius_um: float | None = None,
                radius_px: float | None = None) -> Protocol:
    """``proto`` with its match radius replaced: in pixels (used as-is for every image) if
    ``radius_px`` is given, else in micrometres if ``radius_um`` is given."""
    if radius_px is not None:
        return dataclasses.replace(proto, radius_px=float(radius_px),
                                   description=f"{proto.description}; radius {radius_px:g} px")
    if radius_um is not None:
        return dataclasses.replace(proto, radius_um=float(radius_um), radius_px=None,
                                   description=f"{proto.description}; radius {radius_um:g} um")
    return proto
