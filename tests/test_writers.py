"""Writers: every format is read back; GeoJSON shape; MIDOG mm units; counts."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from partsup.errors import DataError
from partsup.output import writers as core
from partsup.output.writers import format_of, read_detections, suffix_of
from partsup.types import Detection
from partsup_mitosis import formats
from partsup_mitosis.counts import HPF_AREA_MM2, ImageCount, area_mm2, summarize

#: the core's formats and the mitosis plugin's challenge formats
WRITERS = {**core.WRITERS, **formats.WRITERS}
SUFFIXES = {name: suffix_of(factory) for name, factory in WRITERS.items()}

DETS = [Detection(10.25, 20.5, 0.91, 300.0), Detection(1999.0, 5.0, 0.55, 120.5),
        Detection(0.0, 1499.6, 0.5, 1.0)]
INFO = {"image": "case1/tile", "width": 2000, "height": 1500, "mpp": 0.25, "label": "Mitosis"}
XYS = np.array([[d.x, d.y, d.score] for d in DETS])

# the challenge formats store integer pixels; the others keep sub-pixel positions
TOL = {"csv": 0.01, "geojson": 1e-9, "midog": 1e-9, "tupac": 0.5, "mitos-atypia": 0.5}


def test_builtin_writers_registered(registries):
    for name in WRITERS:
        assert name in registries.writers
        provider = registries.writers.entry(name).provider
        assert provider == ("partsup.builtin" if name in core.WRITERS else "mitosis (partsup)")
    suffixes = [SUFFIXES[n] for n in WRITERS]
    assert len(set(suffixes)) == len(suffixes)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_each_format_reads_back(tmp_path, name):
    writer = WRITERS[name]()
    path = tmp_path / f"tile{writer.suffix}"
    writer.write(path, DETS, INFO)
    assert format_of(path) in (name, "json")
    got = read_detections(path, mpp=INFO["mpp"])          # format guessed from the name
    explicit = read_detections(path, name, mpp=INFO["mpp"])
    np.testing.assert_array_equal(got, explicit)
    assert got.shape == (3, 3) and got.dtype == np.float64
    np.testing.assert_allclose(got[:, :2], XYS[:, :2], atol=TOL[name])
    if name == "tupac":
        np.testing.assert_array_equal(got[:, 2], 1.0)  # no score column in the TUPAC layout
    else:
        np.testing.assert_allclose(got[:, 2], XYS[:, 2], atol=1e-6)


def test_every_registered_writer_writes(registries, tmp_path):
    for name in registries.writers.names():
        writer = registries.writers.build(name)
        path = tmp_path / name / f"img{writer.suffix}"
        writer.write(path, DETS, INFO)  # the contract returns nothing; a Path is allowed
        assert path.is_file(), name
        if name in WRITERS:
            assert len(read_detections(path, name, mpp=0.25)) == len(DETS)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_empty_detections_read_back_empty(tmp_path, name):
    writer = WRITERS[name]()
    path = writer.write(tmp_path / f"e{writer.suffix}", [], INFO)
    assert read_detections(path, mpp=0.25).shape == (0, 3)


def test_csv_header_and_area(tmp_path):
    path = WRITERS["csv"]().write(tmp_path / "a.csv", DETS, INFO)
    lines = path.read_text().splitlines()
    assert lines[0] == "x,y,score,area"
    assert lines[2].split(",") == ["1999.0", "5.0", "0.55", "120.5"]


def test_tupac_is_row_col_without_header(tmp_path):
    path = WRITERS["tupac"]().write(tmp_path / "t.tupac.csv", DETS, INFO)
    assert path.read_text().splitlines() == ["20,10", "5,1999", "1500,0"]
    scored = WRITERS["tupac"](score=True).write(tmp_path / "s.tupac.csv", DETS, INFO)
    np.testing.assert_allclose(read_detections(scored)[:, 2], XYS[:, 2], atol=1e-6)


def test_mitos_atypia_is_x_y_confidence(tmp_path):
    path = WRITERS["mitos-atypia"]().write(tmp_path / "A03_00Aa_mitosis.csv", DETS, INFO)
    assert path.read_text().splitlines()[0] == "10,20,0.910000"


def test_geojson_is_qupath_point_detections(tmp_path):
    path = WRITERS["geojson"]().write(tmp_path / "g.geojson", DETS, INFO)
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 3
    ids = set()
    for feat, det in zip(doc["features"], DETS):
        # GeoJSON (RFC 7946) Feature with a Point geometry: one position [x, y]
        assert feat["type"] == "Feature"
        assert feat["geometry"]["type"] == "Point"
        coords = feat["geometry"]["coordinates"]
        assert len(coords) == 2 and all(isinstance(c, float) for c in coords)
        assert coords == [det.x, det.y]
        props = feat["properties"]
        # QuPath 0.4+: objectType, classification {name, color[3]}, measurements name -> number
        assert props["objectType"] == "detection"
        assert props["classification"]["name"] == "Mitosis"
        color = props["classification"]["color"]
        assert len(color) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in color)
        assert isinstance(props["measurements"], dict)
        assert props["measurements"]["score"] == det.score
        assert all(isinstance(v, float) for v in props["measurements"].values())
        ids.add(feat["id"])
    assert len(ids) == 3
    again = WRITERS["geojson"]().write(tmp_path / "g2.geojson", DETS, INFO)
    assert again.read_text() == path.read_text()  # deterministic


def test_geojson_reads_qupath03_measurement_list(tmp_path):
    doc = {"type": "FeatureCollection", "features": [{
        "type": "Feature", "geometry": {"type": "Point", "coordinates": [3, 4]},
        "properties": {"measurements": [{"name": "score", "value": 0.7}]}}]}
    path = tmp_path / "old.geojson"
    path.write_text(json.dumps(doc))
    np.testing.assert_allclose(read_detections(path), [[3, 4, 0.7]])


def test_midog_points_are_in_mm(tmp_path):
    path = WRITERS["midog"]().write(tmp_path / "m.midog.json", DETS, INFO)
    doc = json.loads(path.read_text())
    assert doc["type"] == "Multiple points" and "partsup" not in doc
    p0 = doc["points"][0]
    assert p0["name"] == "mitotic figure" and p0["probability"] == pytest.approx(0.91)
    assert p0["point"] == pytest.approx([10.25 * 0.25 / 1000, 20.5 * 0.25 / 1000, 0.0])
    with pytest.raises(DataError, match="mpp"):
        read_detections(path)  # mm -> px needs the mpp
    meta = WRITERS["midog"](metadata=True).write(tmp_path / "k.midog.json", DETS, INFO)
    np.testing.assert_allclose(read_detections(meta)[:, :2], XYS[:, :2], atol=1e-9)
    with pytest.raises(DataError, match="mpp"):
        WRITERS["midog"]().write(tmp_path / "x.midog.json", DETS, {"image": "x"})


def test_read_errors_name_the_file(tmp_path):
    for name, content, error in (
            ("bad.csv", b"x,y,score,area\n1,2,oops,4\n", r":2: malformed line .*oops"),
            ("bad.csv", b"1,2,0.5\n", r":1: expected a header starting x,y"),
            ("bad.csv", b"X,Y,Score,area\n\n1,2,inf,4\n", r":3: .*non-finite"),
            ("short_mitosis.csv", b"1,2,0.5\n3,4\n", r":2: .*at least 3"),
            ("bin.tupac.csv", b"\xff\xfe\x00\x81", r": cannot read")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=re.escape(str(tmp_path / name)) + error):
            read_detections(tmp_path / name)
    with pytest.raises(DataError, match="not found"):
        read_detections(tmp_path / "missing.csv")
    odd = tmp_path / "odd.txt"
    odd.write_text("1,2\n")
    with pytest.raises(DataError, match="odd.txt"):
        read_detections(odd)
    np.testing.assert_allclose(read_detections(odd, "tupac"), [[2, 1, 1]])
    broken = tmp_path / "broken.geojson"
    broken.write_text("{not json")
    with pytest.raises(DataError, match="broken.geojson"):
        read_detections(broken)


def _point(coordinates=(3, 4), **props):
    geometry = {"type": "Point"} if coordinates is None else \
        {"type": "Point", "coordinates": list(coordinates)}
    return {"type": "Feature", "geometry": geometry, "properties": props}


@pytest.mark.parametrize("feature, error", [
    (_point(None), r"feature 1: .*coordinates"),
    (_point(("a", 4)), r"feature 1: .*coordinates"),
    (_point((3,)), r"feature 1: .*coordinates"),
    (7, r"feature 1 is not a JSON object"),
    (_point(measurements={"score": "high"}), r"feature 1: .*score"),
    (_point(measurements=[{"name": "score", "value": [1]}]), r"feature 1: .*score"),
    ({"type": "Feature", "geometry": "Point"}, r"feature 1: .*geometry"),
])
def test_malformed_geojson_feature_names_file_and_index(tmp_path, feature, error):
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [_point(), feature]}))
    with pytest.raises(DataError, match=re.escape(str(path)) + ": " + error):
        read_detections(path)


def test_geojson_features_must_be_a_list(tmp_path):
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": {"a": 1}}))
    with pytest.raises(DataError, match=re.escape(str(path)) + ": .*features"):
        read_detections(path)


@pytest.mark.parametrize("point, error", [
    ({"point": [0.1, 0.2, 0], "probability": "high"}, r"point 1: .*probability"),
    ({"point": [0.1, 0.2, 0], "probability": None}, r"point 1: .*probability"),
    ({"point": [0.1, "x", 0]}, r"point 1 has no \[x, y, z\] 'point'"),
    (3, r"point 1 is not a JSON object"),
])
def test_malformed_midog_point_names_file_and_index(tmp_path, point, error):
    path = tmp_path / "bad.midog.json"
    ok = {"point": [0.01, 0.02, 0], "probability": 0.5}
    path.write_text(json.dumps({"type": "Multiple points", "points": [ok, point]}))
    with pytest.raises(DataError, match=re.escape(str(path)) + ": " + error):
        read_detections(path, mpp=0.25)


def test_counts_per_image_and_per_hpf():
    # ICPR 2012 HPF: 2084 px at 0.2456 um/px = 512 um square = 0.262 mm^2
    hpf = ImageCount("a", 5, 2084, 2084, 0.2456)
    assert hpf.area_mm2 == pytest.approx(0.26198, rel=1e-4)
    assert hpf.per_mm2 == pytest.approx(5 / 0.26198, rel=1e-4)
    pooled = summarize([hpf, ImageCount("b", 1, 2084, 2084, 0.2456)])
    assert pooled.total == 6 and pooled.n_images == 2
    assert pooled.per_10_hpf == pytest.approx(6 / (2 * 0.26198) * 2.37, rel=1e-4)
    assert HPF_AREA_MM2 == 0.237
    # a 7000x5000 MIDOG region at 0.25 um/px is 2.1875 mm^2, about 9.2 standard HPFs
    assert area_mm2(7000, 5000, 0.25) == pytest.approx(2.1875)
    assert math.isnan(summarize([]).per_10_hpf)  # no image of one HPF: no figure
    with pytest.raises(ValueError):
        area_mm2(10, 10, 0)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_has_scores_of_each_written_format(tmp_path, name):
    from partsup.output.writers import has_scores
    writer = WRITERS[name]()
    path = tmp_path / f"tile{writer.suffix}"
    writer.write(path, DETS, INFO)
    assert has_scores(path) == (name != "tupac")  # the TUPAC layout has no score column
    writer.write(tmp_path / f"empty{writer.suffix}", [], INFO)
    assert has_scores(tmp_path / f"empty{writer.suffix}")


def test_has_scores_of_hand_written_files(tmp_path):
    from partsup.output.writers import has_scores
    cases = {
        "a.tupac.csv": ("10,20,0.9\n30,40,0.8\n", True),
        "b.tupac.csv": ("10,20,0.9\n30,40\n", False),  # one row without its score
        "c.geojson": (json.dumps({"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [3, 4]},
             "properties": {"measurements": [{"name": "score", "value": 0.7}]}}]}), True),
        "d.geojson": (json.dumps({"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [3, 4]}}]}), False),
        "e.midog.json": (json.dumps({"points": [{"point": [0.1, 0.2, 0]}]}), False),
        "f.midog.json": (json.dumps({"points": [{"point": [0.1, 0.2, 0],
                                                 "probability": 0.4}]}), True),
    }
    for name, (text, expect) in cases.items():
        (tmp_path / name).write_text(text)
        assert has_scores(tmp_path / name) is expect, name
    (tmp_path / "g.txt").write_text("10,20\n")
    assert has_scores(tmp_path / "g.txt", fmt="tupac") is False


def test_a_plugins_format_reads_back_through_its_writer(tmp_path):
    """read_detections knows no format by name: a writer with a static ``read`` is enough."""
    class Semicolons:
        suffix = ".semi.txt"

        def write(self, path, detections, info):
            path.write_text("".join(f"{d.x};{d.y};{d.score}\n" for d in detections))

        @staticmethod
        def read(path, mpp=None):
            rows = [line.split(";") for line in path.read_text().splitlines()]
            return np.asarray(rows, np.float64).reshape(-1, 3)

    path = tmp_path / f"a{Semicolons.suffix}"
    Semicolons().write(path, DETS, INFO)
    writers = {**core.WRITERS, "semi": Semicolons}
    assert format_of(path, writers) == "semi"
    np.testing.assert_allclose(read_detections(path, writers=writers), XYS)
    # the core alone knows csv and geojson only; a challenge file is then not readable
    midog = formats.WRITERS["midog"]().write(tmp_path / "m.midog.json", DETS, INFO)
    with pytest.raises(DataError, match="cannot tell the detection format.*csv, geojson"):
        read_detections(midog, writers=core.WRITERS)
