"""Whole slides: pyramidal tiled TIFFs with resolution tags made with tifffile (tests/helpers.py),
the dark-disk model (dark disks = mitoses), tissue only, ROI, resampling, hotspot, Ctrl-C."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from partsup.output.writers import read_detections
from partsup.prediction import Item, predict_slide
from partsup.slides.density import best_window, density_map
from partsup.slides.reader import SlideReader, is_slide
from partsup.slides.tissue import tissue_mask
from partsup.slides.write import from_array, write_pyramid
from partsup.types import Detection

from helpers import SLIDE_CENTRES as CENTRES, CLUSTER, make_slide, matched, run_predict, slide_image


def test_reader_levels_regions_and_mpp(tmp_path):
    path = make_slide(tmp_path / "s.tif")
    img = slide_image()
    assert is_slide(path)
    with SlideReader(path) as s:
        assert s.dimensions == (2048, 1536) and s.mpp == pytest.approx(0.25)
        assert [lv.downsample for lv in s.levels] == [1.0, 2.0, 4.0]
        np.testing.assert_array_equal(s.read_region(0, 700, 300, 333, 257),
                                      img[300:557, 700:1033])
        assert (s.read_region(0, 2000, 1500, 100, 100)[60:, 60:] == 255).all()  # outside: white
        thumb, scale = s.thumbnail(600)
        assert scale == pytest.approx(1 / 4) and thumb.shape == (384, 512, 3)
    mask = tissue_mask(thumb)
    assert mask[100, 100] and not mask[10, 10] and not mask[int(300 / 4), int(1900 / 4)]
    assert 0.5 < mask[50:350, 25:375].mean() and mask.mean() < 0.6


def test_slide_detections_at_level0_tissue_only_and_hotspot(tmp_path, plugin, checkpoint,
                                                            capsys):
    path = make_slide(tmp_path / "case.tif")
    out = tmp_path / "out"
    rc = run_predict([path, "--checkpoint", checkpoint, "--out", out, "--device", "cpu",
                      "--slide-tile", "256", "--hotspot-area", "0.01", "--mitotic-cutoffs", "2,4"],
                     plugin)
    assert rc == 0
    got = read_detections(out / "case.csv")
    matched(got, CENTRES)  # level-0 px within 2 px; tile seams give no duplicates
    assert (out / "case.tissue.png").is_file() and (out / "case.overlay.png").is_file()
    assert (out / "case.heatmap.png").is_file()
    doc = json.loads((out / "case.hotspot.geojson").read_text())
    spot = [f for f in doc["features"] if f["properties"]["objectType"] == "annotation"]
    assert len(spot) == 1 and spot[0]["properties"]["measurements"]["mitoses"] == 5
    ring = np.array(spot[0]["geometry"]["coordinates"][0])
    for x, y in CLUSTER:
        assert ring[:, 0].min() <= x <= ring[:, 0].max() and ring[:, 1].min() <= y <= ring[:, 1].max()
    assert sum(f["properties"]["objectType"] == "detection" for f in doc["features"]) == 9
    text = capsys.readouterr().out
    assert "mitotic score 3" in text and "5 mitoses" in text
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert rows[0]["count"] == "9" and rows[0]["width"] == "2048"


def test_slide_at_another_mpp_is_resampled(tmp_path, plugin, checkpoint):
    path = make_slide(tmp_path / "half.tif", scale=0.5, mpp=0.5, tile=128)
    out = tmp_path / "out"
    rc = run_predict([path, "--checkpoint", checkpoint, "--out", out, "--device", "cpu",
                      "--slide-tile", "256", "--format", "csv", "--no-overlay"], plugin)
    assert rc == 0
    matched(read_detections(out / "half.csv"), [(x / 2, y / 2) for x, y in CENTRES], atol=2.0)


def test_mpp_option_overrides_the_file(tmp_path, plugin, checkpoint):
    # the file says 0.5 um/px, --mpp says 0.25 (the truth for this picture): no resampling
    img = slide_image()
    path = write_pyramid(tmp_path / "s.tif", from_array(img), 2048, 1536, 0.5)
    out = tmp_path / "out"
    assert run_predict([path, "--checkpoint", checkpoint, "--out", out, "--mpp", "0.25",
                        "--device", "cpu", "--format", "csv", "--no-overlay", "--slide-tile",
                        "256"], plugin) == 0
    matched(read_detections(out / "s.csv"), CENTRES)


def test_roi_restricts_the_region(tmp_path, plugin, checkpoint):
    path = make_slide(tmp_path / "case.tif")
    roi = tmp_path / "roi.geojson"
    roi.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"objectType": "annotation"},
        "geometry": {"type": "Polygon", "coordinates": [[[1000, 1000], [1400, 1000],
                                                          [1400, 1400], [1000, 1400],
                                                          [1000, 1000]]]}}]}))
    out = tmp_path / "out"
    assert run_predict([path, "--checkpoint", checkpoint, "--out", out, "--roi", roi, "--device",
                        "cpu", "--slide-tile", "256", "--format", "csv"], plugin) == 0
    got = read_detections(out / "case.csv")
    assert len(got) >= len(CLUSTER) and (got[:, :2] > 700).all()  # tiles touching the ROI


def test_bad_roi_is_one_line(tmp_path, plugin, checkpoint, capsys):
    path = make_slide(tmp_path / "case.tif")
    roi = tmp_path / "roi.geojson"
    roi.write_text('{"type": "FeatureCollection", "features": []}')
    assert run_predict([path, "--checkpoint", checkpoint, "--out", tmp_path / "o", "--roi", roi],
                       plugin) == 2
    assert "no Polygon" in capsys.readouterr().err


class StopAfter:
    """A detector that finds one object at each tile's centre and raises Ctrl-C at call n."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def detect(self, image, mpp):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        h, w = image.shape[:2]
        return [Detection(w / 2, h / 2, 0.9, 300.0)]


def test_ctrl_c_leaves_complete_outputs_for_tiles_done(tmp_path):
    from partsup.output.writers import CsvWriter
    path = make_slide(tmp_path / "case.tif")
    result = predict_slide(Item(path, "case"), StopAfter(4), {"csv": CsvWriter()},
                           tmp_path / "out", default_mpp=0.25, tile=256, margin=0)
    assert result.interrupted and result.count.count == 3
    assert read_detections(tmp_path / "out" / "case.csv").shape == (3, 3)
    assert (tmp_path / "out" / "case.tissue.png").is_file()


def test_corrupt_slide_fails_by_name(tmp_path, plugin, checkpoint, capsys):
    bad = tmp_path / "bad.svs"
    bad.write_bytes(b"II*\x00 not a slide")
    assert run_predict([bad, "--checkpoint", checkpoint, "--out", tmp_path / "o"], plugin) == 1
    assert "bad.svs" in capsys.readouterr().err


def test_density_and_best_window():
    xy = np.array([[10, 10], [15, 12], [18, 19], [90, 90]], float)
    grid = density_map(xy, 100, 100, 20)
    assert grid.shape == (5, 5) and grid[0, 0] == 3 and grid[4, 4] == 1
    win = best_window(xy, 100, 100, 30)
    assert win.count == 3 and win.x <= 10 and win.x + 30 > 18


def test_grading_cutoffs_and_field_area():
    from partsup.errors import PartsupError
    from partsup_mitosis.grading import cutoffs, field_area, mitotic_score
    assert [mitotic_score(c, (9, 19)) for c in (0, 9, 10, 19, 20)] == [1, 1, 2, 2, 3]
    assert field_area(0.59) == pytest.approx(2.734, abs=1e-3)
    with pytest.raises(PartsupError):
        cutoffs("5")
    with pytest.raises(PartsupError):
        cutoffs("10,5")


def test_undecodable_tiles_are_one_line_naming_the_slide(tmp_path, monkeypatch):
    path = make_slide(tmp_path / "case.tif")
    with SlideReader(path) as s:
        page = s._pages[0]

        def broken(*a, **k):
            raise ValueError("<COMPRESSION.JPEG: 7> requires the 'imagecodecs' package")
        monkeypatch.setattr(type(page), "decode", property(lambda self: broken))
        from partsup.errors import DataError
        with pytest.raises(DataError, match="case.tif.*imagecodecs"):
            s.read_region(0, 0, 0, 10, 10)


@pytest.mark.slow
def test_plain_image_of_known_mpp_is_resampled_to_the_model(tmp_path, plugin, checkpoint):
    from helpers import IMAGE_CENTRES as IMG_CENTRES, he_like, save
    img = save(tmp_path / "roi.png", he_like(1500, 2000))
    out = tmp_path / "out"
    # the image says nothing; --mpp 0.5 against the model's 0.25: detected at 2x, mapped back
    assert run_predict([img, "--checkpoint", checkpoint, "--out", out, "--mpp", "0.5", "--device",
                        "cpu", "--format", "csv", "--no-overlay"], plugin) == 0
    got = read_detections(out / "roi.csv")
    matched(got, IMG_CENTRES, atol=1.5)
    assert got.shape == (3, 3)
