"""Dataset readers on tiny fixtures in each exact format, broken fixtures, and the real MIDOG++ file."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from partsup.errors import DataError
from partsup.data.images import DataWarning
from partsup.types import Sample

from helpers import (SHAPE, disk_pixels, write_amida13, write_folder, write_icpr2012,
                     write_icpr2014, write_image, write_midog)

H, W = SHAPE


def _build(registries, name, root, **kw):
    return registries.datasets.get(name)(root, **kw)


# -- every reader ------------------------------------------------------------------------------

#: the readers of this repository, which all state where their data comes from
SOURCED = ("icpr2012", "icpr2014", "amida13", "midog", "folder")


def test_every_reader_has_layout_and_rejects_missing_root(registries, tmp_path):
    for name in registries.datasets:
        factory = registries.datasets.get(name)
        layout = getattr(factory, "LAYOUT", None)
        assert isinstance(layout, str) and layout.strip(), name
        with pytest.raises(DataError) as exc:
            factory(tmp_path / "nowhere")
        msg = str(exc.value)
        assert str(tmp_path / "nowhere") in msg and layout.strip("\n") in msg, name
        source = getattr(factory, "SOURCE", "")
        assert (name not in SOURCED or source.strip()), f"{name}: no SOURCE"
        if source:
            assert f"Where to get the data: {source}" in msg, name


def test_missing_root_message_of_evaluate_names_layout_and_source(registries, monkeypatch):
    from partsup.data.datasets import open_dataset
    monkeypatch.delenv("PARTSUP_DATA", raising=False)
    for name in SOURCED:
        factory = registries.datasets.get(name)
        with pytest.raises(DataError) as exc:
            open_dataset(registries, name, None, "test")
        msg = str(exc.value)
        assert "--data-root" in msg and factory.LAYOUT.strip("\n") in msg, name
        assert factory.SOURCE in msg, name
        assert "http" in factory.SOURCE or name == "folder", name  # a public site to go to


def test_missing_folders_and_files_also_show_layout_and_source(registries, tmp_path):
    (tmp_path / "empty").mkdir()
    for name in ("amida13", "icpr2014", "midog", "folder"):
        factory = registries.datasets.get(name)
        with pytest.raises(DataError) as exc:
            factory(tmp_path / "empty")
        msg = str(exc.value)
        assert str(tmp_path / "empty") in msg and factory.SOURCE in msg, name
        assert factory.LAYOUT.splitlines()[0] in msg, name


# -- icpr2012 ----------------------------------------------------------------------------------

def test_icpr2012_reads_pixel_lists_centroids_and_masks(registries, tmp_path):
    m1, m2 = disk_pixels(10, 20, 3), disk_pixels(50, 30, 2)
    write_icpr2012(tmp_path, {"A00_00": [m1, m2], "A01_00": []}, split="train")
    write_icpr2012(tmp_path, {"A02_00": [disk_pixels(5, 5, 1)]}, split="test")
    (tmp_path / "train" / "A01_v2" / "A01_00.csv").write_text("")
    r = _build(registries, "icpr2012", tmp_path, split="train", allow_empty=True)
    assert len(r) == 2 and r.ids == ["A00_v2/A00_00", "A01_v2/A01_00"]
    assert r.groups == ["A00", "A01"]
    np.testing.assert_allclose(r.points(0), [[10, 20], [50, 30]], atol=1e-5)
    s = r[0]
    assert isinstance(s, Sample) and s.image.shape == (H, W, 3) and s.image.dtype == np.uint8
    assert s.mask.shape == (H, W) and s.mask.sum() == len(m1) + len(m2)
    assert s.mask[20, 10] == 1 and s.mask[10, 20] == 0  # x = column, y = row
    assert s.mpp == pytest.approx(0.2456)
    assert len(_build(registries, "icpr2012", tmp_path, split="test")) == 1
    assert len(_build(registries, "icpr2012", tmp_path, split="all", allow_empty=True)) == 3
    val = _build(registries, "icpr2012", tmp_path, split="val", val_groups=["A01"],
                 allow_empty=True)
    assert val.ids == ["A01_v2/A01_00"]
    with pytest.raises(DataError, match="val_groups"):
        _build(registries, "icpr2012", tmp_path, split="val")


def test_icpr2012_broken_inputs(registries, tmp_path):
    write_icpr2012(tmp_path, {"A00_00": [disk_pixels(10, 20)], "A00_01": [disk_pixels(30, 30)]})
    csv = tmp_path / "train" / "A00_v2" / "A00_01.csv"
    csv.write_text("30,30,31\n10,10,11,10\n")
    with pytest.raises(DataError, match=rf"{csv}:1: malformed line .*odd number"):
        _build(registries, "icpr2012", tmp_path)
    with pytest.warns(DataWarning, match=rf"{csv}:1"):
        r = _build(registries, "icpr2012", tmp_path, strict=False)
    assert len(r) == 2 and len(r.points(1)) == 1  # bad line skipped, good one kept
    csv.write_text("10,10\n70,10\n")  # x=70 outside a 64-wide image
    with pytest.raises(DataError, match=rf"{csv}:2: mask pixels lie outside the 48x64"):
        _build(registries, "icpr2012", tmp_path)
    csv.write_text("")
    with pytest.raises(DataError, match=rf"{csv}: empty label file"):
        _build(registries, "icpr2012", tmp_path)
    csv.unlink()
    with pytest.raises(DataError, match=rf"{csv}: label file not found"):
        _build(registries, "icpr2012", tmp_path)


# -- icpr2014 ----------------------------------------------------------------------------------

def _icpr2014(tmp_path):
    return write_icpr2014(tmp_path, {
        "A03_00Aa": ([(10, 20, 1.0)], [(40, 5, 0.3)]),
        "A04_00Ab": ([(60, 40, 0.8), (5, 45, 1.0)], []),
        "A05_01Ac": ([], []),
    })


def test_icpr2014_layout_split_and_hard_negatives(registries, tmp_path):
    _icpr2014(tmp_path)
    train = _build(registries, "icpr2014", tmp_path, split="train")
    val = _build(registries, "icpr2014", tmp_path, split="val")
    assert val.ids == ["A03/A03_00Aa"] and train.ids == ["A04/A04_00Ab", "A05/A05_01Ac"]
    np.testing.assert_allclose(val.points(0), [[10, 20]])
    np.testing.assert_allclose(val.hard_negatives(0), [[40, 5]])
    np.testing.assert_allclose(train.points(0), [[60, 40], [5, 45]])
    assert len(train.points(1)) == 0  # empty CSV = no mitosis in the frame
    s = train[0]
    assert s.image.shape == (H, W, 3) and s.mask is None and s.group == "A04"
    assert s.mpp == pytest.approx(0.2455)
    conf = _build(registries, "icpr2014", tmp_path, split="train", min_confidence=0.9)
    assert len(conf.points(0)) == 1
    assert len(_build(registries, "icpr2014", tmp_path, split="all")) == 3
    other = _build(registries, "icpr2014", tmp_path, split="val", val_cases=["A05"])
    assert other.ids == ["A05/A05_01Ac"]


def test_icpr2014_train_is_the_paper_case_list(registries, tmp_path, caplog):
    """H03 is the same tissue as validation case A03: it (and any unlisted case) is not trained on."""
    write_icpr2014(tmp_path, {f"{c}_00Aa": ([(10, 20, 1.0)], []) for c in
                              ("A03", "A04", "A14", "H03", "H04", "A99")})
    with caplog.at_level("WARNING"):
        train = _build(registries, "icpr2014", tmp_path, split="train")
    assert train.groups == ["A04", "A14"]
    assert "A99, H03, H04" in caplog.text and "split all" in caplog.text
    assert _build(registries, "icpr2014", tmp_path, split="val").groups == ["A03"]
    assert len(_build(registries, "icpr2014", tmp_path, split="all")) == 6
    chosen = _build(registries, "icpr2014", tmp_path, split="train", train_cases=["H04", "A04"])
    assert chosen.groups == ["A04", "H04"]
    rest = _build(registries, "icpr2014", tmp_path, split="train", train_cases=None)
    assert rest.groups == ["A04", "A14", "A99", "H03", "H04"]  # None: every case not val/test
    with pytest.raises(DataError, match=r"A03.*both train_cases and val_cases"):
        _build(registries, "icpr2014", tmp_path, split="train", train_cases=["A03", "A04"])


def test_icpr2014_broken_inputs(registries, tmp_path):
    _icpr2014(tmp_path)
    bad = tmp_path / "A04" / "mitosis" / "A04_00Ab_mitosis.csv"
    bad.write_text("60,40,1\nabc,4,1\n")
    with pytest.raises(DataError, match=rf"{bad}:2: malformed line"):
        _build(registries, "icpr2014", tmp_path)
    bad.write_text("60,40,1\n10,90,1\n")  # y=90 outside a 48-high frame
    with pytest.raises(DataError, match=rf"{bad}:2: point x=10, y=90 lies outside"):
        _build(registries, "icpr2014", tmp_path)
    with pytest.warns(DataWarning):
        r = _build(registries, "icpr2014", tmp_path, strict=False)
    np.testing.assert_allclose(r.points(0), [[60, 40]])
    bad.write_text("")
    with pytest.raises(DataError, match="empty label file"):
        _build(registries, "icpr2014", tmp_path, allow_empty=False)
    frame = tmp_path / "A05" / "frames" / "x40" / "A05_01Ac.tiff"
    frame.write_bytes(b"this is not a tiff")
    with pytest.raises(DataError, match=rf"{frame}: cannot read image header"):
        _build(registries, "icpr2014", tmp_path)
    frame.unlink()
    (tmp_path / "A04" / "mitosis" / "A04_00Ab_not_mitosis.csv").unlink()
    with pytest.raises(DataError, match="A04_00Ab_not_mitosis.csv: label file not found"):
        _build(registries, "icpr2014", tmp_path)


# -- amida13 / tupac16 -------------------------------------------------------------------------

def test_amida13_row_col_order_and_case_splits(registries, tmp_path):
    write_amida13(tmp_path, {"01/01": [(60.0, 10.0)], "01/02": None, "11/01": [(3.0, 40.0)],
                             "13/05": [(20.0, 20.0)], "40/01": [(1.0, 2.0)]})
    csv = tmp_path / "mitoses_ground_truth" / "01" / "01.csv"
    assert csv.read_text().strip() == "10,60"  # row,col on disk
    train = _build(registries, "amida13", tmp_path, split="train")
    assert train.ids == ["01/01", "01/02", "40/01"]  # 40 = a TUPAC16 auxiliary case
    np.testing.assert_allclose(train.points(0), [[60, 10]])  # back to x,y
    assert len(train.points(1)) == 0  # no CSV = no mitoses
    assert _build(registries, "amida13", tmp_path, split="val").ids == ["11/01"]
    assert _build(registries, "amida13", tmp_path, split="test").ids == ["13/05"]
    custom = _build(registries, "amida13", tmp_path, split="val", val_cases=["1"])
    assert custom.ids == ["01/01", "01/02"]  # case names compare numerically
    s = train[0]
    assert s.image.shape == (H, W, 3) and s.mpp == 0.25 and s.group == "01"


def test_amida13_broken_inputs(registries, tmp_path):
    write_amida13(tmp_path, {"01/01": [(60.0, 10.0)], "01/02": [(5.0, 5.0)]})
    csv = tmp_path / "mitoses_ground_truth" / "01" / "02.csv"
    csv.write_text("5\n")
    with pytest.raises(DataError, match=rf"{csv}:1: malformed line"):
        _build(registries, "amida13", tmp_path)
    csv.write_text("5,70\n")  # col 70 > width 64
    with pytest.raises(DataError, match=rf"{csv}:1: point x=70, y=5 lies outside"):
        _build(registries, "amida13", tmp_path)
    csv.write_text("5,65\n")  # 1 px outside the border: within tolerance, clamped
    assert _build(registries, "amida13", tmp_path).points(1)[0].tolist() == [63, 5]
    # every kept point lies on a pixel: 0 <= x <= W-1, 0 <= y <= H-1 (x == W is one past the end)
    for line, xy in ((f"5,{W}", [W - 1, 5]), (f"{H},5", [5, H - 1]),
                     (f"{H - 0.5},{W - 0.5}", [W - 1, H - 1]), (f"{H - 1},{W - 1}", [W - 1, H - 1]),
                     ("0,0", [0, 0])):
        csv.write_text(line + "\n")
        assert _build(registries, "amida13", tmp_path).points(1)[0].tolist() == xy, line
    csv.write_text("\n")
    with pytest.raises(DataError, match=rf"{csv}: empty label file"):
        _build(registries, "amida13", tmp_path)
    csv.unlink()
    img = tmp_path / "mitoses_image_data" / "01" / "02.tif"
    img.unlink()
    (tmp_path / "mitoses_image_data" / "01" / "02.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="02.png: cannot read image header"):
        _build(registries, "amida13", tmp_path)
    with pytest.warns(DataWarning, match="02.png"):
        r = _build(registries, "amida13", tmp_path, strict=False)
    assert r.ids == ["01/01"]
    (tmp_path / "mitoses_ground_truth").rename(tmp_path / "gt")
    with pytest.raises(DataError, match="ground-truth folder .* not found"):
        _build(registries, "amida13", tmp_path)


def test_truncated_image_fails_on_read_naming_file(registries, tmp_path):
    write_amida13(tmp_path, {"01/01": [(60.0, 10.0)]}, shape=(96, 128))
    img = tmp_path / "mitoses_image_data" / "01" / "01.tif"
    img.write_bytes(img.read_bytes()[:2000])  # header intact, pixel data cut
    r = _build(registries, "amida13", tmp_path)
    assert len(r) == 1 and r.size(0) == (96, 128)
    with pytest.raises(DataError, match=rf"{img}"):
        r[0]


# -- midog -------------------------------------------------------------------------------------

def test_midog_fixture(registries, tmp_path):
    json_path = write_midog(tmp_path, {"001.tiff": ([(30, 20)], [(10, 40)]),
                                       "002.tiff": ([], [])})
    r = _build(registries, "midog", tmp_path, split="all")
    assert r.ids == ["001", "002"] and r.size(0) == SHAPE
    np.testing.assert_allclose(r.points(0), [[30, 20]])  # box centre
    np.testing.assert_allclose(r.hard_negatives(0), [[10, 40]])
    s = r[0]
    assert s.image.shape == (H, W, 3) and s.mpp == 0.25
    same = _build(registries, "midog", json_path, split="all")  # root may be the json file
    assert same.ids == r.ids


def test_midog_broken_inputs(registries, tmp_path):
    json_path = write_midog(tmp_path, {"001.tiff": ([(30, 20)], [])}, with_images=False)
    data = json.loads(json_path.read_text())
    r = _build(registries, "midog", tmp_path, split="all")
    with pytest.raises(DataError, match=r"001.tiff: image file not found"):
        r[0]  # annotations read fine without images; the error comes only on reading one
    data["annotations"].append({"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3]})
    json_path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"annotations\[1\] \(id 7\): malformed annotation .*bbox"):
        _build(registries, "midog", tmp_path, split="all")
    data["annotations"][-1] = {"id": 8, "image_id": 9, "category_id": 1, "bbox": [1, 2, 3, 4]}
    json_path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"\(id 8\): unknown image_id 9"):
        _build(registries, "midog", tmp_path, split="all")
    data["annotations"][-1] = {"id": 9, "image_id": 1, "category_id": 1,
                               "bbox": [100, 10, 150, 60]}  # centre x=125 far outside W=64
    json_path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"\(id 9\): point x=125, y=35 lies outside"):
        _build(registries, "midog", tmp_path, split="all")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = _build(registries, "midog", tmp_path, split="all", strict=False)
    assert len(r.points(0)) == 1 and any("id 9" in str(w.message) for w in caught)
    json_path.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError, match=rf"{json_path}:2: malformed JSON"):
        _build(registries, "midog", tmp_path, split="all")


def test_midog_real_midogpp_file(registries, shared_data):
    root = shared_data / "midogpp"
    if not (root / "MIDOG++.json").is_file():
        pytest.skip("MIDOG++.json absent")
    every = _build(registries, "midog", root, split="all")
    assert len(every) == 553
    assert every.num_points() == 11937
    assert sum(len(every.hard_negatives(i)) for i in range(len(every))) == 14349
    assert every.size(0) == (5412, 7215)  # (H, W) from the JSON
    parts = [_build(registries, "midog", root, split=s) for s in ("train", "val", "test")]
    ids = [set(p.ids) for p in parts]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert set().union(*ids) == set(every.ids)
    assert 0.1 < len(parts[2]) / 553 < 0.2
    breast = _build(registries, "midog", root, split="all", tumor_types=["human breast cancer"])
    assert len(breast) == 200
    with pytest.raises(DataError, match="image file not found"):
        every[0]  # images are not shipped: reading one fails clearly


# -- folder ------------------------------------------------------------------------------------

def test_folder_points_and_masks(registries, tmp_path):
    mask = np.zeros(SHAPE, np.uint8)
    mask[10:15, 40:45] = 1
    write_folder(tmp_path, {"a": [(12, 30, 1), (50, 5, 0)], "b": []}, masks={"b": mask})
    r = _build(registries, "folder", tmp_path, mpp=0.5)
    assert r.ids == ["a", "b"]
    np.testing.assert_allclose(r.points(0), [[12, 30]])
    np.testing.assert_allclose(r.hard_negatives(0), [[50, 5]])
    np.testing.assert_allclose(r.points(1), [[42, 12]])  # from the mask's component
    s0, s1 = r[0], r[1]
    assert s0.mask is None and s1.mask.shape == SHAPE and s1.mask.sum() == 25
    assert s1.mpp == 0.5
    with pytest.raises(DataError, match="val folder"):
        _build(registries, "folder", tmp_path, split="val")


def test_folder_split_folders_and_broken_inputs(registries, tmp_path):
    write_folder(tmp_path / "train", {"a": [(12, 30, 1)]}, suffix=".jpg")
    write_folder(tmp_path / "val", {"b": [(1, 1, 1)]}, suffix=".tif")
    assert _build(registries, "folder", tmp_path, split="val").ids == ["b"]
    assert _build(registries, "folder", tmp_path, split="train").ids == ["a"]
    csv = tmp_path / "train" / "points.csv"
    for text, error in (
            ("image,x,y\na.jpg,12,30\nzzz.png,1,1\n", ":3: image 'zzz.png' not found"),
            ("image,x,y\na,12,thirty\n", ":2: malformed line"),
            ("image,x,y\na.jpg,12,30\n\na.jpg,1\n",
             ":4: malformed line: expected image,x,y \\(2 fields, no y\\)$"),
            ("x,image,y,label\n12,a\n", ":2: malformed line: expected image,x,y \\(2 fields, no y\\)$"),
            ("image,x,y\na.jpg\n", ":2: malformed line: expected image,x,y \\(1 field, no x, y\\)$"),
            ("image,x,y\na,12,300\n", ":2: point x=12, y=300 lies outside"),
            ("file,col,row\na,1,1\n", ":1: header must name the columns image,x,y"),
            ("image,x,y\n", ": empty label file")):
        csv.write_text(text)
        with pytest.raises(DataError, match=rf"{csv}{error}"):
            _build(registries, "folder", tmp_path)
    csv.write_text("image,x,y\na.jpg,12,30,extra\n")  # fields past the header are ignored
    assert _build(registries, "folder", tmp_path).points(0).tolist() == [[12, 30]]
    csv.unlink()
    with pytest.raises(DataError, match="neither .*points.csv nor .*masks exists"):
        _build(registries, "folder", tmp_path)


def test_readers_are_picklable_for_dataloader_workers(registries, tmp_path):
    import pickle
    write_amida13(tmp_path, {"01/01": [(60.0, 10.0)]})
    r = _build(registries, "amida13", tmp_path)
    clone = pickle.loads(pickle.dumps(r))
    np.testing.assert_array_equal(clone[0].image, r[0].image)
    write_image(tmp_path / "x.png")  # unrelated file does not disturb the reader
    assert len(_build(registries, "amida13", tmp_path)) == 1


# -- partsup datasets ----------------------------------------------------------------------------

def test_datasets_command_prints_layouts_and_checks_a_root(registries, tmp_path, capsys):
    from partsup.cli.main import main
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in registries.datasets:
        factory = registries.datasets.get(name)
        layout = getattr(factory, "LAYOUT", "")
        assert name in out and layout.splitlines()[0][:40] in out, name
        if getattr(factory, "SOURCE", ""):
            assert factory.SOURCE.split()[0] in out, name
    flat = " ".join(out.split())
    assert "Where to get the data: MITOS-ATYPIA-14" in flat
    assert "https://mitos-atypia-14.grand-challenge.org/" in flat
    write_amida13(tmp_path, {"01/01": [(60.0, 10.0)], "11/01": None, "13/01": [(5.0, 5.0)]})
    assert main(["datasets", "amida13", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "mitoses" in out
    (tmp_path / "mitoses_ground_truth" / "01" / "01.csv").write_text("1\n")
    assert main(["datasets", "amida13", "--root", str(tmp_path), "--split", "train"]) == 1
    assert "01.csv:1: malformed line" in capsys.readouterr().out.replace("\n", "")
    assert main(["datasets", "--root", str(tmp_path)]) == 2  # needs a reader name
    assert main(["datasets", "amida14"]) == 2  # unknown reader: a one-line error
    assert "Did you mean 'amida13'" in capsys.readouterr().err
