"""From a slide's mitoses to a mitotic score: the hotspot, its count and the score 1/2/3.

The hotspot is the square region of ``--hotspot-area`` mm^2 (default 2 mm^2) with the most
detected mitoses, or, with ``--field-diameter D`` (mm), the area of 10 high-power fields of that
diameter (``10 * pi * (D / 2) ** 2``), cut to the slide; when the slide or its tissue (in the
ROI) is smaller than that area, a line says so and the count is over the tissue that exists.
The score of its count uses the cut-offs the user gives
(``--mitotic-cutoffs A,B``: 1 when count <= A, 2 when count <= B, else 3), because the cut-offs
depend on the field diameter of the microscope the table was made for; docs/slides.md cites the
published rows we could verify. Outputs per slide: ``<id>.heatmap.png`` (density over the
thumbnail, hotspot outlined) and ``<id>.hotspot.geojson`` (the detections plus the hotspot as a
QuPath annotation, level-0 px).
"""
from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from partsup.plugin import (GeoJsonWriter, Option, PartsupError, best_window, replacing,
                            check_not_foreign, check_range, read_roi)
from partsup_mitosis.counts import hpf_mm2
from partsup_mitosis.heatmap import write_heatmap

#: default hotspot area, mm^2
HOTSPOT_AREA_MM2 = 2.0


def check_cutoffs(cuts: tuple[int, int]) -> None:
    """A one-line PartsupError unless ``cuts`` are two whole counts ``0 <= A < B``."""
    if not (isinstance(cuts, (tuple, list)) and len(cuts) == 2
            and all(isinstance(v, int) for v in cuts)):
        raise PartsupError(f"--mitotic-cutoffs: expected two whole numbers A,B, got {cuts!r}")
    a, b = cuts
    if not 0 <= a < b:
        raise PartsupError(f"--mitotic-cutoffs: need 0 <= A < B, got {a},{b}")


def cutoffs(text: str) -> tuple[int, int]:
    """``--mitotic-cutoffs A,B``: two whole counts 0 <= A < B (else a one-line PartsupError)."""
    try:
        a, b = (int(v) for v in text.split(","))
    except ValueError:
        raise PartsupError(f"--mitotic-cutoffs: expected two whole numbers A,B (score 1 when "
                           f"count <= A, 2 when <= B, else 3), got {text!r}") from None
    check_cutoffs((a, b))
    return a, b


def mitotic_score(count: int, cuts: tuple[int, int]) -> int:
    """1 when ``count <= cuts[0]``, 2 when ``count <= cuts[1]``, else 3."""
    return 1 if count <= cuts[0] else 2 if count <= cuts[1] else 3


def field_area(diameter_mm: float, fields: int = 10) -> float:
    """Area of ``fields`` circular fields of ``diameter_mm``, mm^2."""
    return fields * math.pi * (diameter_mm / 2.0) ** 2


def _in_range(option: str, low: float, high: float, unit: str) -> Callable[[float], None]:
    def check(value: float) -> None:
        check_range(option, value, low, high, unit)
    return check


def _positive(option: str, low: float, high: float, unit: str) -> Callable[[str], float]:
    check = _in_range(option, low, high, unit)

    def parse(text: str) -> float:
        value = float(text)
        check(value)
        return value
    return parse


def slide_options() -> list[Option]:
    """``partsup predict`` options of this plugin for slides: the hotspot's area or field
    diameter and the score's cut-offs."""
    return [
        Option("hotspot_area", HOTSPOT_AREA_MM2, flag="--hotspot-area",
               type=_positive("--hotspot-area", 0.01, 1000.0, "mm²"), metavar="MM2",
               check=_in_range("--hotspot-area", 0.01, 1000.0, "mm²"),
               help=f"slides: hotspot area (default {HOTSPOT_AREA_MM2} mm²)"),
        Option("field_diameter", None, flag="--field-diameter",
               type=_positive("--field-diameter", 0.1, 5.0, "mm"), metavar="MM",
               check=_in_range("--field-diameter", 0.1, 5.0, "mm"),
               help="the microscope's field diameter: one HPF is a circle of it (overrides "
                    "--hpf-area); slides: hotspot = 10 such HPFs (overrides --hotspot-area)"),
        Option("mitotic_cutoffs", None, flag="--mitotic-cutoffs", type=cutoffs, metavar="A,B",
               check=check_cutoffs,
               help="slides: score 1 when the hotspot count <= A, 2 when <= B, else 3 "
                    "(the table for your field diameter: docs/slides.md)")]


@dataclass(frozen=True)
class Hotspot:
    """The hotspot of a slide: the box ``[x, x + width) x [y, y + height)`` (level-0 px), the
    square of ``area_mm2`` cut to the slide, holding ``count`` detections and ``tissue_mm2``
    mm^2 of tissue (in the ROI). ``short`` names what is smaller than ``area_mm2`` ("slide",
    "tissue" or "tissue in the ROI", ``short_mm2`` mm^2; then the count is over what exists),
    else None. ``mpp``: the slide's um/px."""

    x: float
    y: float
    width: float
    height: float
    count: int
    area_mm2: float
    tissue_mm2: float
    #: the slide's um/px
    mpp: float
    short: str | None = None
    short_mm2: float = 0.0

    @property
    def box_mm2(self) -> float:
        """Area of the box, mm^2 (``area_mm2`` unless the slide is smaller)."""
        return self.width * self.height * (self.mpp / 1000.0) ** 2


def tissue_mm2(slide: Any, box: tuple[float, float, float, float] | None = None) -> float:
    """mm^2 of the slide's tissue mask (tissue in the ROI) inside ``box`` ``(x0, y0, x1, y1)``
    level-0 px (the whole slide when None), at the mask's resolution."""
    mask = np.asarray(slide.tissue, bool)
    mh, mw = mask.shape
    sx, sy = mw / slide.width, mh / slide.height  # mask px per level-0 px
    if box is not None:
        x0, y0, x1, y1 = box
        mask = mask[int(y0 * sy):max(int(y0 * sy) + 1, round(y1 * sy)),
                    int(x0 * sx):max(int(x0 * sx) + 1, round(x1 * sx))]
    return float(mask.sum()) / (sx * sy) * (slide.mpp / 1000.0) ** 2


def tissue_box(slide: Any) -> tuple[float, float, float, float] | None:
    """``(x0, y0, x1, y1)`` level-0 px around the slide's tissue mask (tissue in the ROI), or
    None when the mask is empty."""
    mask = np.asarray(slide.tissue, bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    sx, sy = mask.shape[1] / slide.width, mask.shape[0] / slide.height
    return (cols[0] / sx, rows[0] / sy, min((cols[-1] + 1) / sx, slide.width),
            min((rows[-1] + 1) / sy, slide.height))


def hotspot(slide: Any, area_mm2: float, in_roi: bool = False) -> Hotspot:
    """The square of ``area_mm2`` with the most detections, cut to the slide (level-0 px).
    When the slide, or its tissue (in the ROI: ``in_roi``), is smaller than ``area_mm2`` the
    hotspot says so (``short``), is cut to the box around the tissue too, and its count is
    over what exists."""
    side = math.sqrt(area_mm2) * 1000.0 / slide.mpp
    xy = slide.xy[:, :2]
    win = best_window(xy, slide.width, slide.height, side)
    x0, y0 = win.x, win.y
    x1 = x0 + side if x0 + side <= slide.width else float(slide.width)
    y1 = y0 + side if y0 + side <= slide.height else float(slide.height)
    px2 = (slide.mpp / 1000.0) ** 2
    slide_mm2 = slide.width * slide.height * px2
    all_tissue = tissue_mm2(slide)
    short, short_mm2, count = None, 0.0, win.count
    if slide_mm2 < area_mm2:
        short, short_mm2 = "slide", slide_mm2
    elif all_tissue < area_mm2:
        short, short_mm2 = ("tissue in the ROI" if in_roi else "tissue"), all_tissue
    box = tissue_box(slide) if short else None
    if box is not None:  # never past the tissue: the best window inside the box around it
        bx0, by0, bx1, by1 = box
        inner = best_window(xy - (bx0, by0), math.ceil(bx1 - bx0), math.ceil(by1 - by0), side)
        x0, y0 = bx0 + inner.x, by0 + inner.y
        x1, y1 = min(x0 + side, bx1), min(y0 + side, by1)
        count = int(np.count_nonzero((xy[:, 0] >= x0) & (xy[:, 0] < x1)
                                     & (xy[:, 1] >= y0) & (xy[:, 1] < y1)))
    return Hotspot(x0, y0, x1 - x0, y1 - y0, count, area_mm2,
                   tissue_mm2(slide, (x0, y0, x1, y1)), float(slide.mpp), short, short_mm2)


def write_hotspot_geojson(path: Path, slide: Any, win: Hotspot) -> Path:
    """The detections (QuPath detections) and the hotspot (a QuPath annotation: its box, level-0
    px, its count and the area it counts, mm^2: :func:`counted_mm2`)."""
    writer = GeoJsonWriter()
    label = slide.label or "Mitosis"
    features = [writer.feature(d, slide.id, i, label) for i, d in enumerate(slide.detections)]
    x0, y0, x1, y1 = win.x, win.y, win.x + win.width, win.y + win.height
    features.append({
        "type": "Feature",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"partsup:{slide.id}:hotspot")),
        "geometry": {"type": "Polygon",
                     "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
        "properties": {"objectType": "annotation", "name": "Hotspot",
                       "classification": {"name": "Hotspot", "color": [255, 31, 31]},
                       "measurements": {"mitoses": win.count,
                                        "area_mm2": counted_mm2(win)}}})
    with replacing(path) as fh:  # a link planted at the name is replaced, not written through
        fh.write(json.dumps({"type": "FeatureCollection", "features": features}, indent=1)
                 + "\n")
    return path


def roi_polygons(roi: Any) -> list[list[np.ndarray]] | None:
    """``predict``'s ``roi`` option as polygons: a GeoJSON file read, polygons as they are."""
    if roi is None:
        return None
    return read_roi(Path(roi)) if isinstance(roi, (str, Path)) else list(roi)


def heatmap_title(slide: Any, win: Hotspot, options: Mapping[str, Any]) -> str:
    """The heatmap's title: the slide's count and score, the hotspot's count and area, and
    when the slide or tissue is smaller than the hotspot, the area counted."""
    diameter = options.get("field_diameter")
    cuts = options.get("mitotic_cutoffs")
    score = f"; mitotic score {mitotic_score(win.count, cuts)}" if cuts is not None else ""
    what = f"10 HPFs of {diameter} mm = " if diameter else ""
    title = (f"{slide.id}: {len(slide.xy)} mitoses{score}\n"
             f"hotspot ({what}{win.area_mm2:.2f} mm²): {win.count} mitoses")
    if win.short:
        title += (f"\ncounted over {counted_mm2(win):.2f} mm²: the {win.short} is smaller "
                  f"than the hotspot")
    return title


def counted_mm2(win: Hotspot) -> float:
    """The area ``win``'s count is over, mm^2: its area, or, when the slide or tissue is
    smaller (``win.short``), the tissue in its box."""
    return win.tissue_mm2 if win.short else win.area_mm2


def slide_outputs(slide: Any, options: Mapping[str, Any]) -> list[str]:
    """Hotspot, its count, the score (with cut-offs), the heatmap and the annotated GeoJSON
    (``options``: ``predict``'s option values, :func:`slide_options` among them, and ``roi``).
    When the slide or its tissue (in the ROI) is smaller than the hotspot, one line says so
    and the count is over the tissue that exists."""
    diameter = options.get("field_diameter")
    area = field_area(diameter) if diameter else options.get("hotspot_area", HOTSPOT_AREA_MM2)
    win = hotspot(slide, area, in_roi=options.get("roi") is not None)
    check_not_foreign(slide.out, [slide.out / f"{slide.id}.heatmap.png",
                                  slide.out / f"{slide.id}.hotspot.geojson"])
    slide.outputs.append(slide.out / f"{slide.id}.heatmap.png")
    write_heatmap(slide.outputs[-1], slide, win, hpf_mm2(options),
                  heatmap_title(slide, win, options), roi_polygons(options.get("roi")))
    slide.outputs.append(slide.out / f"{slide.id}.hotspot.geojson")
    write_hotspot_geojson(slide.outputs[-1], slide, win)
    what = f"10 HPFs of {diameter} mm" if diameter else f"{area:.2f} mm²"
    size = (f"side {win.width:.0f} px" if win.width == win.height
            else f"{win.width:.0f}x{win.height:.0f} px")
    lines = [f"{slide.id}: {len(slide.xy)} mitoses; hotspot ({what}) at x={win.x:.0f}, "
             f"y={win.y:.0f}, {size}: {win.count} mitoses"]
    if win.short:
        lines.append(f"{slide.id}: the {win.short} is {win.short_mm2:.2f} mm², smaller than the "
                     f"hotspot's {area:.2f} mm²: counted over what exists, {win.count} mitoses "
                     f"in {counted_mm2(win):.2f} mm² of tissue")
    cuts = options.get("mitotic_cutoffs")
    if cuts is None:
        lines.append(f"{slide.id}: mitotic score not given: pass --mitotic-cutoffs A,B for your "
                     f"field diameter (docs/slides.md)")
    else:
        lines.append(f"{slide.id}: mitotic score {mitotic_score(win.count, cuts)} "
                     f"(cut-offs <= {cuts[0]}: 1, <= {cuts[1]}: 2, else 3)"
                     + (f"; from {counted_mm2(win):.2f} mm², less than the {area:.2f} mm² the "
                        f"cut-offs are for" if win.short else ""))
    return lines
