"""The resolution (um/px) a TIFF records, in the places scanners and tools put it: an Aperio
``MPP = x`` image description, OME-XML ``<Pixels PhysicalSizeX=...>``, an ImageJ description's
``unit=`` with the resolution tags, and the resolution tags (``ResolutionUnit`` inch, cm, and
tifffile's mm and um). :func:`partsup.slides.reader.file_mpp` is the entry point.

Values outside :data:`PLAUSIBLE` (0.05..5 um/px) are not a scan's (e.g. a screen's 72 dpi) and
are ignored.
"""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from typing import Any

#: um/px a scanned slide or field can have; anything else is not trusted
PLAUSIBLE = (0.05, 5.0)

#: um per unit of length, for the unit names OME-XML and ImageJ write (lower-cased)
UNIT_UM = {"µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0,
           "micrometer": 1.0, "micrometre": 1.0, "nm": 1e-3, "nanometer": 1e-3,
           "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "centimeter": 1e4, "m": 1e6,
           "å": 1e-4, "angstrom": 1e-4, "inch": 25400.0, "in": 25400.0, "pm": 1e-6}

#: um per TIFF ``ResolutionUnit``: 2 inch and 3 cm (TIFF 6), 4 mm and 5 um (tifffile's RESUNIT)
RESUNIT_UM = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}


def plausible(mpp: float | None) -> float | None:
    """``mpp`` when it is a finite value in :data:`PLAUSIBLE`, else None."""
    if mpp is None or not math.isfinite(mpp):
        return None
    return mpp if PLAUSIBLE[0] <= mpp <= PLAUSIBLE[1] else None


def description_mpp(desc: str) -> float | None:
    """um/px from an Aperio ``MPP = x`` image description (``...|MPP = 0.2520|...``), else None."""
    if "MPP = " not in desc:
        return None
    try:
        return float(desc.split("MPP = ")[1].split("|")[0].split()[0])
    except (IndexError, ValueError):
        return None


def ome_mpp(desc: str) -> float | None:
    """um/px from OME-XML: the first ``Pixels`` element's ``PhysicalSizeX`` in its
    ``PhysicalSizeXUnit`` (default um; um, nm, mm, cm ... honoured), else None."""
    if "<OME" not in desc[:4096] or "PhysicalSizeX" not in desc:
        return None
    try:
        root = ET.fromstring(desc.encode("utf-8") if desc.startswith("<?xml") else desc)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] != "Pixels":
            continue
        size, unit = el.get("PhysicalSizeX"), el.get("PhysicalSizeXUnit", "µm")
        try:
            return float(size) * UNIT_UM[unit.strip().lower()] if size else None
        except (KeyError, ValueError):
            return None
    return None


def imagej_unit_um(desc: str) -> float | None:
    """um per unit of an ImageJ description's ``unit=`` line (``unit=micron``, ``unit=mm``;
    ImageJ writes the resolution tags in px per that unit with ResolutionUnit none), else None."""
    if not desc.startswith("ImageJ="):
        return None
    match = re.search(r"^unit=(.+)$", desc, re.MULTILINE)
    if not match:
        return None
    unit = match.group(1).strip().replace("\\u00B5", "µ").lower()
    return UNIT_UM.get(unit)


def page_mpp(page: Any, description: str = "") -> float | None:
    """um/px a TIFF records, plausible values only (:data:`PLAUSIBLE`), else None.

    ``page`` is the tifffile page of level 0 (its tags); ``description`` the file's first
    ImageDescription when it differs from the page's (OME-XML sits in the first page). Tried in
    order: Aperio ``MPP = x``, OME-XML ``PhysicalSizeX`` (+unit), then ``XResolution`` (px per
    unit) with ``ResolutionUnit`` inch, cm, mm or um, or with none and an ImageJ ``unit=``.
    """
    desc = getattr(page, "description", "") or ""
    for text in dict.fromkeys((desc, description or desc)):
        for parse in (description_mpp, ome_mpp):
            mpp = parse(text)
            if mpp is not None:
                return plausible(mpp)
    tags = page.tags
    res, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
    if res is None:
        return None
    num, den = res.value
    if not num:
        return None
    code = int(unit.value) if unit is not None else 2  # TIFF's default unit is the inch
    per_unit = RESUNIT_UM.get(code)
    if code == 1:  # no unit: ImageJ names it in the description
        per_unit = imagej_unit_um(description or desc) or imagej_unit_um(desc)
    return plausible(per_unit * den / num) if per_unit else None


def tiff_mpp(tif: Any) -> float | None:
    """um/px a ``tifffile.TiffFile`` records (:func:`page_mpp` of its first series' level 0
    with the first page's description), else None."""
    first = tif.pages[0]
    try:
        base = tif.series[0].levels[0].keyframe
    except Exception:  # no series: the first page is the image
        base = first
    return page_mpp(base, getattr(first, "description", "") or "")
