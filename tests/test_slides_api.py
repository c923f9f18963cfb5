"""``Detector.predict_slide``: a whole slide from Python, on the synthetic slides of
tests/helpers.py with the dark-disk model of tests/helpers.py. Without ``out`` nothing is written;
with ``out`` the files are those ``partsup predict`` writes for the slide."""
from __future__ import annotations

import json

import numpy as np
import pytest

from partsup import Detector
from partsup.output.writers import read_detections

from helpers import SLIDE_CENTRES as CENTRES, CLUSTER, make_slide, matched, run_predict


@pytest.fixture
def detector(plugin, checkpoint):
    return Detector.from_checkpoint(checkpoint, "cpu", plugins=[plugin])


def xy(detections) -> np.ndarray:
    return np.array([(d.x, d.y) for d in detections], float).reshape(-1, 2)


def test_planted_objects_come_back_in_level0_px_and_nothing_is_written(tmp_path, detector):
    path = make_slide(tmp_path / "case.tif")
    before = sorted(tmp_path.rglob("*"))
    found = detector.predict_slide(path, tile=256)
    matched(xy(found), CENTRES, atol=2.0)  # within 2 px; tile seams give no duplicates
    assert all(0 < d.score <= 1 and d.area > 100 for d in found)
    assert sorted(tmp_path.rglob("*")) == before


def test_slide_at_another_mpp_comes_back_in_its_own_level0_px(tmp_path, detector):
    path = make_slide(tmp_path / "half.tif", scale=0.5, mpp=0.5, tile=128)
    found = detector.predict_slide(str(path), tile=256)  # resampled to the model's 0.25 um/px
    matched(xy(found), [(x / 2, y / 2) for x, y in CENTRES], atol=2.0)


@pytest.mark.slow
def test_out_writes_what_partsup_predict_writes(tmp_path, plugin, checkpoint, detector):
    path = make_slide(tmp_path / "case.tif")
    cli, api = tmp_path / "cli", tmp_path / "api"
    assert run_predict([path, "--checkpoint", checkpoint, "--out", cli, "--device", "cpu",
                        "--slide-tile", "256"], plugin) == 0
    found = detector.predict_slide(path, tile=256, out=api)
    names = sorted(p.name for p in cli.iterdir() if p.name != "summary.csv")
    assert sorted(p.name for p in api.iterdir()) == names
    assert {"case.csv", "case.geojson", "case.overlay.png", "case.tissue.png"} <= set(names)
    assert (api / "case.csv").read_text() == (cli / "case.csv").read_text()
    assert (api / "case.geojson").read_text() == (cli / "case.geojson").read_text()
    np.testing.assert_allclose(read_detections(api / "case.csv")[:, :2], xy(found), atol=0.01)


def test_roi_file_and_plugin_options(tmp_path, detector):
    path = make_slide(tmp_path / "case.tif")
    roi = tmp_path / "roi.geojson"
    roi.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": {
        "type": "Polygon", "coordinates": [[[1000, 1000], [1400, 1000], [1400, 1400],
                                            [1000, 1400], [1000, 1000]]]}}))
    found = detector.predict_slide(path, roi=roi, tile=256)
    assert len(found) >= len(CLUSTER) and (xy(found) > 700).all()  # tiles touching the ROI
    from partsup.errors import PartsupError
    with pytest.raises(PartsupError, match="unknown option.*no_such_option"):
        detector.predict_slide(path, no_such_option=1)
