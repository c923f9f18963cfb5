"""The mitosis plugin's slide outputs, driven directly with synthetic detections (no model): the
hotspot never claims more than the slide or tissue holds (issue 25, item 6), the heatmap
(item 7) and the count lines (item 8)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from partsup.plugin import SlideOutput
from partsup_mitosis.grading import field_area, hotspot, slide_outputs

MPP = 0.25  # um/px
REPO = Path(__file__).resolve().parents[1]


def slide(tmp_path: Path, width: int, height: int, xy, tissue: np.ndarray | None = None,
          thumb_px: int = 256) -> SlideOutput:
    """A slide of ``width x height`` level-0 px at 0.25 um/px with detections at ``xy``; the
    thumbnail is ``thumb_px`` px on its long side, all tissue unless ``tissue`` (a mask at
    thumbnail scale) says otherwise."""
    scale = thumb_px / max(width, height)
    th, tw = round(height * scale), round(width * scale)
    thumb = np.full((th, tw, 3), (232, 196, 218), np.uint8)
    mask = np.ones((th, tw), bool) if tissue is None else tissue
    thumb[~mask] = 255
    pts = np.asarray(xy, np.float64).reshape(-1, 2)
    xy3 = np.concatenate([pts, np.ones((len(pts), 1))], axis=1)
    return SlideOutput("case", tmp_path / "out", width, height, MPP, xy3, thumb, scale, mask)


def spot_ring(path: Path) -> np.ndarray:
    doc = json.loads(path.read_text())
    spot = [f for f in doc["features"] if f["properties"]["objectType"] == "annotation"]
    assert len(spot) == 1
    return np.array(spot[0]["geometry"]["coordinates"][0])


def test_hotspot_larger_than_the_slide_is_cut_to_it_and_said_once(tmp_path):
    # 4096x3072 px at 0.25 um/px = 0.786 mm^2 < the 2 mm^2 default hotspot (the case)
    rng = np.random.default_rng(0)
    s = slide(tmp_path, 4096, 3072, rng.uniform(0, 1, (51, 2)) * (4096, 3072))
    lines = slide_outputs(s, {"hotspot_area": 2.0, "mitotic_cutoffs": (9, 19)})
    ring = spot_ring(tmp_path / "out" / "case.hotspot.geojson")
    assert ring[:, 0].min() >= 0 and ring[:, 0].max() <= 4096
    assert ring[:, 1].min() >= 0 and ring[:, 1].max() <= 3072
    short = [line for line in lines if "smaller than the hotspot" in line]
    assert len(short) == 1, lines
    assert "the slide is 0.79 mm²" in short[0] and "2.00 mm²" in short[0]
    assert "51 mitoses in 0.79 mm²" in short[0]
    assert not any("side 5657" in line for line in lines)
    documented = (REPO / "docs/slides.md").read_text()
    for line in lines[:2]:  # docs/slides.md shows these two lines as they are
        assert f"  {line}\n" in documented, line
    score = [line for line in lines if "mitotic score" in line]
    assert len(score) == 1 and "0.79 mm²" in score[0]  # the score says it counted less
    doc = json.loads((tmp_path / "out" / "case.hotspot.geojson").read_text())
    m = doc["features"][-1]["properties"]["measurements"]
    assert m["mitoses"] == 51 and m["area_mm2"] == pytest.approx(0.786, abs=1e-3)


def test_hotspot_larger_than_the_tissue_in_the_roi_counts_the_tissue(tmp_path):
    # a large slide (40 mm^2) whose tissue (here: the ROI) is a 2000x2000 px square, 0.25 mm^2
    width, height = 32000, 20000
    scale = 256 / width
    mask = np.zeros((round(height * scale), 256), bool)
    mask[round(1000 * scale):round(3000 * scale), round(1000 * scale):round(3000 * scale)] = True
    xy = [(1500.0 + 100 * i, 1500.0 + 50 * i) for i in range(7)]
    s = slide(tmp_path, width, height, xy, tissue=mask)
    win = hotspot(s, field_area(0.59), in_roi=True)
    assert win.count == 7 and win.short == "tissue in the ROI"
    assert win.tissue_mm2 == pytest.approx(0.25, rel=0.05)
    lines = slide_outputs(s, {"field_diameter": 0.59, "roi": "roi.geojson"})
    short = [line for line in lines if "smaller than the hotspot" in line]
    assert len(short) == 1 and "the tissue in the ROI is 0.25 mm²" in short[0], lines
    assert "7 mitoses in 0.25 mm²" in short[0]


def test_hotspot_inside_a_large_slide_says_nothing_more(tmp_path):
    rng = np.random.default_rng(1)
    xy = np.concatenate([rng.uniform(0, 1, (40, 2)) * (16000, 12000),
                         rng.uniform(0, 1, (30, 2)) * 2000 + (11000, 3000)])
    s = slide(tmp_path, 16000, 12000, xy)
    win = hotspot(s, 2.0)
    assert win.short is None and win.width == win.height == pytest.approx(5656.85, abs=0.01)
    assert win.count >= 30
    lines = slide_outputs(s, {"hotspot_area": 2.0})
    assert not any("smaller than the hotspot" in line for line in lines)
    assert any(f"side 5657 px: {win.count} mitoses" in line for line in lines), lines
