"""``partsup predict``: nothing lost, nothing surprising about its output folder and options."""
from __future__ import annotations

import csv
import errno

import pytest

from helpers import he_like, run_predict, save


def _rows(path):
    return list(csv.DictReader(path.open()))


def test_a_run_that_produced_nothing_keeps_the_previous_summary(tmp_path, plugin, checkpoint,
                                                                capsys):
    img = save(tmp_path / "in" / "a.png", he_like(200, 300, centres=[(100.0, 100.0)]))
    out = tmp_path / "out"
    assert run_predict([img, "--checkpoint", checkpoint, "--out", out, "--format", "csv"],
                       plugin) == 0
    before = (out / "summary.csv").read_bytes()
    capsys.readouterr()
    assert run_predict([tmp_path / "in" / "typo.png", "--checkpoint", checkpoint, "--out", out,
                        "--format", "csv"], plugin) == 2  # no input exists: one line, at once
    assert (out / "summary.csv").read_bytes() == before
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("typo.png: no such file or folder")


@pytest.mark.parametrize("option,value,match", [
    ("--mpp", "inf", "--mpp"), ("--mpp", "1e-9", "--mpp"), ("--mpp", "nan", "--mpp"),
    ("--hpf-area", "inf", "--hpf-area"), ("--hpf-area", "1e9", "--hpf-area")])
def test_implausible_mpp_and_hpf_area_are_refused(tmp_path, plugin, checkpoint, capsys, option,
                                                  value, match):
    img = save(tmp_path / "a.png", he_like(64, 64, centres=[]))
    assert run_predict([img, "--checkpoint", checkpoint, "--out", tmp_path / "o", option, value],
                       plugin) == 2
    err = capsys.readouterr().err
    assert match in err and "between" in err and "unexpected" not in err
    assert not (tmp_path / "o").exists()


def test_out_naming_a_file_fails_once_before_inference(tmp_path, plugin, checkpoint, capsys,
                                                       monkeypatch):
    import partsup.prediction.pipeline as pipeline
    monkeypatch.setattr(pipeline, "build_detector", lambda *a, **k: pytest.fail("model loaded"))
    imgs = [save(tmp_path / f"{c}.png", he_like(64, 64, centres=[])) for c in "ab"]
    blocker = tmp_path / "out.txt"
    blocker.write_text("mine")
    assert run_predict([*imgs, "--checkpoint", checkpoint, "--out", blocker], plugin) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "is a file, not a folder" in err
    assert "unexpected" not in err and blocker.read_text() == "mine"


def test_full_disk_leaves_no_files_for_the_failed_image(tmp_path, plugin, checkpoint, capsys,
                                                        monkeypatch):
    from partsup.output.writers import GeoJsonWriter

    def full(self, path, detections, info):
        path.write_text("{")  # a partial file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(GeoJsonWriter, "write", full)
    img = save(tmp_path / "a.png", he_like(64, 64, centres=[]))
    out = tmp_path / "out"
    assert run_predict([img, "--checkpoint", checkpoint, "--out", out, "--format", "csv,geojson"],
                       plugin) == 1
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "a.geojson: no space left on device" in err
    assert not out.exists() or sorted(out.iterdir()) == []  # no a.csv, geojson, overlay, summary


def test_recursive_predict_never_reads_its_own_outputs(tmp_path, plugin, checkpoint,
                                                       monkeypatch):
    save(tmp_path / "slides" / "a.png", he_like(200, 300, centres=[(100.0, 100.0)]))
    monkeypatch.chdir(tmp_path / "slides")
    for _ in range(2):  # default --out ./predictions lies inside the input folder
        assert run_predict([".", "--recursive", "--checkpoint", checkpoint, "--format", "csv"],
                           plugin) == 0
    rows = _rows(tmp_path / "slides" / "predictions" / "summary.csv")
    assert [r["id"] for r in rows] == ["a"]
    assert not (tmp_path / "slides" / "predictions" / "predictions").exists()


def test_nan_detection_parameters_are_refused_at_load(tmp_path, plugin, checkpoint, capsys):
    from partsup.checkpoint.files import load_checkpoint, save_checkpoint
    ckpt = load_checkpoint(checkpoint)
    ckpt["detect"]["s1"] = float("nan")
    save_checkpoint(checkpoint, ckpt)
    imgs = [save(tmp_path / f"{c}.png", he_like(64, 64, centres=[])) for c in "ab"]
    assert run_predict([*imgs, "--checkpoint", checkpoint, "--out", tmp_path / "o"], plugin) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("error:") == 1 and "dark.pt: detect.s1: nan is not a finite number" in err


def test_predict_overlay_has_a_legend_with_the_count(tmp_path):
    import numpy as np

    from partsup.prediction import write_overlay
    from partsup.types import Detection
    img = np.full((400, 600, 3), 230, np.uint8)
    far = [Detection(500, 300, 0.9, 300), Detection(450, 350, 0.8, 300)]
    one = np.asarray(Image.open(write_overlay(tmp_path / "1.png", img, far[:1])))
    two = np.asarray(Image.open(write_overlay(tmp_path / "2.png", img, far)))
    corner = (slice(0, 30), slice(0, 200))
    assert (one[corner] != 230).any()  # a legend band is drawn
    assert not np.array_equal(one[corner], two[corner])  # it says how many


from PIL import Image  # noqa: E402


def test_warnings_are_one_line_messages(tmp_path, plugin, checkpoint, capsys):
    import numpy as np
    gray = tmp_path / "g.png"
    Image.fromarray(np.full((64, 64), 200, np.uint8)).save(gray)
    assert run_predict([gray, "--checkpoint", checkpoint, "--out", tmp_path / "o", "--format",
                        "csv"], plugin) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: " in err and "g.png: grayscale image" in err
    assert "DataWarning" not in err and "warnings.warn(" not in err


def test_a_run_that_produced_nothing_leaves_no_new_folder(tmp_path, plugin, checkpoint):
    out = tmp_path / "new"
    assert run_predict([tmp_path / "typo.png", "--checkpoint", checkpoint, "--out", out],
                       plugin) == 2
    assert not out.exists()
