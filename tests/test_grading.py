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
    roi = tmp_path / "roi.geojson"
    roi.write_text(json.dumps({"type": "Polygon", "coordinates": [
        [[1000, 1000], [3000, 1000], [3000, 3000], [1000, 3000], [1000, 1000]]]}))
    lines = slide_outputs(s, {"field_diameter": 0.59, "roi": roi})
    short = [line for line in lines if "smaller than the hotspot" in line]
    assert len(short) == 1 and "the tissue in the ROI is 0.25 mm²" in short[0], lines
    assert "7 mitoses in 0.25 mm²" in short[0]
    ring = spot_ring(tmp_path / "out" / "case.hotspot.geojson")  # never past the tissue
    assert ring[:, :2].min() >= 1000 - 130 and ring[:, :2].max() <= 3000 + 130  # mask px: 125


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


def cluster_slide(tmp_path: Path, cluster: int = 30) -> SlideOutput:
    """16000x12000 px (4 x 3 mm): 12 scattered detections on the left, ``cluster`` in a
    cluster at the upper right; the tissue is the left 3/4 of the slide."""
    rng = np.random.default_rng(2)
    xy = np.concatenate([rng.uniform(0, 1, (12, 2)) * (5000, 12000),
                         rng.uniform(0, 1, (cluster, 2)) * 1500 + (9000, 2000)])
    mask = np.zeros((192, 256), bool)
    mask[:, :192] = True
    return slide(tmp_path, 16000, 12000, xy, tissue=mask)


@pytest.mark.parametrize("cluster", [30, 6])  # a continuous scale; one colour per count
def test_heatmap_reads_as_counts_per_field_from_zero(tmp_path, cluster):
    from matplotlib.collections import QuadMesh
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    from partsup_mitosis.heatmap import HOTSPOT_COLOUR, heatmap_figure
    s = cluster_slide(tmp_path, cluster)
    win = hotspot(s, field_area(0.59))
    field = field_area(0.59, fields=1)
    roi = [[np.array([[0, 0], [8000, 0], [8000, 6000], [0, 6000], [0, 0]], float)]]
    fig = heatmap_figure(s, win, field, "case: 42 mitoses", roi)
    ax, bar = fig.axes
    mesh = next(c for c in ax.collections if isinstance(c, QuadMesh))
    counts = mesh.get_array()
    top = int(counts.max())
    assert counts.sum() == 12 + cluster and top >= 4  # counts per cell of one field
    cell_px = np.sqrt(field) * 1000 / MPP * s.scale
    assert mesh.get_coordinates()[0, 1, 0] == pytest.approx(cell_px)
    assert np.ma.getmaskarray(counts)[counts.data == 0].all()  # empty cells: not drawn
    light = [0.2126 * r + 0.7152 * g + 0.0722 * b
             for r, g, b, _ in (mesh.cmap(mesh.norm(v)) for v in range(1, top + 1))]
    assert all(a > b for a, b in zip(light, light[1:]))  # 1 lightest, the top darkest
    assert mesh.cmap(mesh.norm(0))[3] == 0  # 0 has no colour, as the empty cells
    low, high = bar.get_ylim()
    ticks = [t for t in bar.get_yticks() if low <= t <= high]
    assert ticks[0] == 0 and all(float(t).is_integer() for t in ticks) and max(ticks) <= top
    assert bar.get_ylim() == pytest.approx((-0.5, top + 0.5) if top < 12 else (0, top))
    assert "mitoses per field" in bar.get_ylabel() and "0.273 mm²" in bar.get_ylabel()
    rect = next(p for p in ax.patches if isinstance(p, Rectangle) and not p.get_fill())
    assert rect.get_xy() == pytest.approx((win.x * s.scale, win.y * s.scale))
    assert rect.get_edgecolor()[:3] == pytest.approx((1.0, 31 / 255, 31 / 255))
    assert HOTSPOT_COLOUR == "#ff1f1f" and rect.get_linewidth() >= 2
    outline = [ln for ln in ax.lines if isinstance(ln, Line2D)]
    assert len(outline) == 1 and outline[0].get_xdata().max() == pytest.approx(8000 * s.scale)
    bars = [a for a in ax.artists if isinstance(a, AnchoredSizeBar)]
    assert len(bars) == 1 and bars[0].txt_label.get_text() == "0.5 mm"  # 4 mm wide slide
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_heatmap_png_shows_the_tissue_in_empty_cells_and_a_red_hotspot(tmp_path):
    from PIL import Image
    s = cluster_slide(tmp_path)
    slide_outputs(s, {"field_diameter": 0.59, "mitotic_cutoffs": (9, 19)})
    png = np.asarray(Image.open(tmp_path / "out" / "case.heatmap.png").convert("RGB")).astype(int)
    pink = np.all(np.abs(png - (232, 196, 218)) <= 2, axis=-1)
    assert pink.mean() > 0.15  # the tissue of empty cells shows as it is, no wash over it
    red = (png[..., 0] > 220) & (png[..., 1] < 70) & (png[..., 2] < 70)
    assert red.sum() > 400  # the hotspot's outline (and its legend line)


@pytest.mark.parametrize("width_mm, bar", [(4.0, 0.5), (20.0, 2.0), (2.0, 0.2), (0.9, 0.1),
                                           (60.0, 10.0)])
def test_scale_bar_is_a_round_fifth_of_the_width(width_mm, bar):
    from partsup_mitosis.heatmap import scale_bar_mm
    assert scale_bar_mm(width_mm) == pytest.approx(bar)


# -- item 8: one count per 10 HPFs ------------------------------------------------------------

def test_hpfs_get_one_area_standardised_count_per_10_hpfs():
    from partsup_mitosis.counts import ImageCount, summarize, summary_lines
    # two ICPR 2012 HPFs: 2084 px at 0.2456 um/px = 0.262 mm^2 each
    hpfs = [ImageCount("a", 5, 2084, 2084, 0.2456), ImageCount("b", 1, 2084, 2084, 0.2456)]
    lines = summary_lines(hpfs)
    assert lines == ["6 mitoses in 2 image(s), 0.524 mm²: 11.45 per mm²",
                     "per 10 HPFs: 27.1 (area-standardised: 1 HPF = 0.237 mm², 10 HPFs = "
                     "2.37 mm²)"]
    assert summarize(hpfs).per_10_hpf == pytest.approx(6 / (2 * 0.26198) * 2.37, rel=1e-4)
    assert sum(line.count("per 10 HPFs") for line in lines) == 1
    assert not hasattr(summarize(hpfs), "per_10_images")  # one definition only
    # docs/predict.md shows these lines, and those of its example run (a and b: two crops)
    documented = (REPO / "docs/predict.md").read_text()
    crops = [ImageCount("a", 3, 2000, 1500, 0.25), ImageCount("b", 1, 400, 300, 0.25)]
    for line in lines + summary_lines(crops):
        assert f"\n{line}\n" in documented, line


def test_an_image_smaller_than_one_hpf_gets_no_per_10_hpf_or_per_mm2_figure():
    from partsup_mitosis.counts import ImageCount, summary_lines
    crop = [ImageCount("crop", 1, 128, 128, 0.25)]  # 0.001 mm^2: 976.56 per mm^2 before
    lines = summary_lines(crop)
    assert lines[0] == "1 mitoses in 1 image(s), 0.001 mm²"
    assert lines[1].startswith("per 10 HPFs: none (each image is smaller than 1 HPF of "
                               "0.237 mm², too small to stand for a field")
    assert not any("976" in line or "per 10 HPFs: 1" in line for line in lines)
    # mixed: the per-10-HPF figure is over the fields only, and says what it left out
    mixed = [ImageCount("a", 5, 2084, 2084, 0.2456), *crop,
             ImageCount("d", 3, 512, 512, 0.25)]
    lines = summary_lines(mixed)
    assert lines[0] == "9 mitoses in 3 image(s), 0.279 mm²"
    assert lines[1].startswith("per 10 HPFs: 45.2 (area-standardised over the 1 image(s) of "
                               "at least 1 HPF: 5 mitoses in 0.262 mm², 19.09 per mm²")
    assert lines[2].startswith("left out of it: 2 image(s) smaller than 1 HPF (4 mitoses)")


def test_the_field_diameter_defines_the_hpf_for_images_too():
    from partsup_mitosis.counts import ImageCount, hpf_mm2, summary_lines
    assert hpf_mm2({}) == 0.237 and hpf_mm2({"hpf_area": 0.3}) == 0.3
    assert hpf_mm2({"hpf_area": 0.237, "field_diameter": 0.59}) == pytest.approx(0.27340, 1e-4)
    lines = summary_lines([ImageCount("a", 10, 4000, 4000, 0.25)], hpf_mm2(
        {"field_diameter": 0.59}))
    assert lines[1] == ("per 10 HPFs: 27.3 (area-standardised: 1 HPF = 0.273 mm², 10 HPFs = "
                        "2.73 mm²)")


def test_a_slide_is_left_out_of_the_set_lines(tmp_path, registries):
    from partsup.plugin import ImageCount
    from partsup.prediction import Item
    from partsup.prediction.result import Result
    from partsup.prediction.summary import summary_lines
    from partsup.slides.write import from_array, write_pyramid
    img = np.full((1536, 2048, 3), 255, np.uint8)
    slide_path = write_pyramid(tmp_path / "case.tif", from_array(img), 2048, 1536, 0.25)
    hpf = tmp_path / "hpf.png"
    hpf.write_bytes(b"")
    slide_result = Result(Item(slide_path, "case"), ImageCount("case", 51, 2048, 1536, 0.25))
    hpf_result = Result(Item(hpf, "hpf"), ImageCount("hpf", 3, 2084, 2084, 0.2456))
    options = {"hpf_area": 0.237}
    assert summary_lines([slide_result], options, registries.pm) == []  # "510.0" before
    lines = summary_lines([slide_result, hpf_result], options, registries.pm)
    assert lines[0] == "3 mitoses in 1 image(s), 0.262 mm²: 11.45 per mm²"
    assert sum("per 10 HPFs" in line for line in lines) == 1


def test_a_slide_with_few_mitoses_is_not_drawn_dark(tmp_path):
    from matplotlib.collections import QuadMesh

    from partsup_mitosis.heatmap import heatmap_figure
    s = slide(tmp_path, 16000, 12000, [(1000.0, 1000.0), (1100.0, 1000.0), (9000.0, 9000.0)])
    fig = heatmap_figure(s, hotspot(s, 2.0), 0.237, "few")
    ax, bar = fig.axes
    mesh = next(c for c in ax.collections if isinstance(c, QuadMesh))
    assert int(mesh.get_array().max()) == 2 and bar.get_ylim() == pytest.approx((-0.5, 5.5))
    r, g, b, _ = mesh.cmap(mesh.norm(2))
    assert 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.6  # 2 of at least 5: still light
    import matplotlib.pyplot as plt
    plt.close(fig)
