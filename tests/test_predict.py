"""``partsup predict`` end to end with a tiny hand-set model (dark disks = mitoses)."""
from __future__ import annotations

import csv
import json
import textwrap
import time

import numpy as np
import pytest
import torch
from PIL import Image

from partsup.cli.main import main
from partsup.prediction import collect_inputs, write_overlay
from partsup.errors import DataError
from partsup.types import Detection
from partsup.output.writers import read_detections

from helpers import IMAGE_CENTRES as CENTRES, he_like, run_predict, save


def test_build_detector_recipe_then_calibration_then_overrides(checkpoint, plugin):
    from partsup.inference.detector import build_detector
    from partsup.errors import RecipeError
    from partsup.manager import load
    regs = load([plugin], disabled=())
    p = build_detector(checkpoint, regs, "cpu", {"tile": 256, "batch_tiles": None}).params
    # s1, a1 from the calibration (not the recipe's 0.5, 100), tile from the command line,
    # batch_tiles and overlap from the recipe (a None override is no override)
    assert (p.w, p.s1, p.a1, p.tile, p.batch_tiles, p.overlap) == (1.0, 0.6, 150, 256, 2, 64)
    with pytest.raises(RecipeError, match=r"dark\.pt: detect: need tile > overlap"):
        build_detector(checkpoint, regs, "cpu", {"tile": 32})


def test_big_image_all_formats(tmp_path, plugin, checkpoint, capsys):
    img = save(tmp_path / "in" / "roi.png", he_like(1500, 2000))
    out = tmp_path / "out"
    t0 = time.perf_counter()
    rc = run_predict([img, "--checkpoint", checkpoint, "--out", out, "--mpp", "0.25",
                      "--device", "cpu", "--format", "csv,geojson,tupac,mitos-atypia,midog"],
                     plugin)
    assert rc == 0
    assert time.perf_counter() - t0 < 20
    expected = np.array(CENTRES)
    for suffix in (".csv", ".geojson", ".tupac.csv", "_mitosis.csv", ".midog.json"):
        got = read_detections(out / f"roi{suffix}", mpp=0.25)
        assert got.shape == (3, 3), suffix
        order = np.argsort(got[:, 0])
        np.testing.assert_allclose(got[order, :2], expected, atol=1.0, err_msg=suffix)
    geo = json.loads((out / "roi.geojson").read_text())
    assert {f["properties"]["classification"]["name"] for f in geo["features"]} == {"Mitosis"}
    overlay = Image.open(out / "roi.overlay.png")
    assert overlay.size == (2000, 1500)
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert rows[0]["status"] == "ok" and rows[0]["count"] == "3"
    area = 2000 * 1500 * (0.25 / 1000) ** 2
    assert float(rows[0]["per_mm2"]) == pytest.approx(3 / area, rel=1e-3)
    text = capsys.readouterr().out
    assert "roi" in text and "per 10 HPFs" in text


def test_corrupt_file_among_good_ones(tmp_path, plugin, checkpoint, capsys):
    folder = tmp_path / "hpfs"
    save(folder / "a.png", he_like(300, 400, centres=[(100.0, 100.0)]))
    save(folder / "sub" / "c.tif", he_like(300, 400, centres=[(50.0, 60.0), (300.0, 200.0)]))
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "notes.txt").write_text("ignored: not an image")
    out = tmp_path / "out"
    rc = run_predict([folder, tmp_path / "missing.png", "--checkpoint", checkpoint, "--out", out,
                      "--recursive", "--format", "csv", "--no-overlay"], plugin)
    assert rc == 1
    err = capsys.readouterr().err
    assert "b.png" in err and "missing.png" in err
    assert read_detections(out / "a.csv").shape == (1, 3)
    assert read_detections(out / "sub" / "c.csv").shape == (2, 3)
    assert not (out / "b.csv").exists() and not list(out.rglob("*.png"))
    rows = {r["id"]: r for r in csv.DictReader((out / "summary.csv").open())}
    assert rows["b"]["status"] == "failed" and "b.png" in rows["b"]["error"]
    assert rows["missing"]["status"] == "failed"
    assert rows["a"]["status"] == rows["sub/c"]["status"] == "ok"


def test_all_good_exit_zero_and_counts_per_hpf(tmp_path, plugin, checkpoint, capsys):
    folder = tmp_path / "hpfs"
    save(folder / "a.png", he_like(300, 400, centres=[(100.0, 100.0)]))
    save(folder / "b.bmp", he_like(300, 400, centres=[(100.0, 100.0), (300.0, 200.0)]))
    rc = run_predict([folder, "--checkpoint", checkpoint, "--out", tmp_path / "o", "--format",
                      "csv", "--device", "auto"], plugin)
    assert rc == 0
    out = capsys.readouterr().out
    assert "3 mitoses in 2 image(s)" in out
    assert "per 10 HPFs: none (each image is smaller than 1 HPF" in out  # 300x400 px crops
    assert "0.25 um/px assumed" in out  # no --mpp and PNG/BMP record none


def test_user_errors_exit_2(tmp_path, plugin, checkpoint, capsys):
    img = save(tmp_path / "a.png", he_like(64, 64, centres=[]))
    assert run_predict([img, "--checkpoint", checkpoint, "--format", "csv,qupath"], plugin) == 2
    assert "unknown writer 'qupath'" in capsys.readouterr().err
    assert run_predict([img, "--checkpoint", tmp_path / "nope.pt"], plugin) == 2
    assert "nope.pt" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run_predict([tmp_path / "empty", "--checkpoint", checkpoint], plugin) == 2
    assert "no images" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert run_predict([img, "--checkpoint", checkpoint, "--device", "cuda"], plugin) == 2
        assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(tmp_path, plugin, checkpoint):
    img = save(tmp_path / "a.png", he_like(700, 900, centres=[(100.0, 100.0), (600.0, 500.0)]))
    for dev in ("cpu", "cuda"):
        assert run_predict([img, "--checkpoint", checkpoint, "--out", tmp_path / dev, "--device",
                            dev, "--format", "csv"], plugin) == 0
    np.testing.assert_allclose(read_detections(tmp_path / "cuda" / "a.csv")[:, :2],
                               read_detections(tmp_path / "cpu" / "a.csv")[:, :2], atol=1.0)


def test_collect_inputs(tmp_path):
    save(tmp_path / "d" / "x.png", np.zeros((4, 4, 3), np.uint8))
    save(tmp_path / "d" / "deep" / "y.JPG", np.zeros((4, 4, 3), np.uint8))
    items, missing = collect_inputs([tmp_path / "d", tmp_path / "nope.tif"])
    assert [i.id for i in items] == ["x"] and [m.id for m in missing] == ["nope"]
    items, _ = collect_inputs([tmp_path / "d"], recursive=True)
    assert sorted(i.id for i in items) == ["deep/y", "x"]
    save(tmp_path / "e" / "x.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="x.png"):
        collect_inputs([tmp_path / "d", tmp_path / "e"])


def test_file_mpp_from_resolution_units_and_aperio_description(tmp_path):
    import tifffile

    from partsup.slides.reader import file_mpp
    path = tmp_path / "r.tif"
    tifffile.imwrite(path, np.zeros((8, 8, 3), np.uint8), resolution=(40000, 40000),
                     resolutionunit="CENTIMETER")  # 40000 px/cm = 0.25 um/px
    assert file_mpp(path) == pytest.approx(0.25)
    tifffile.imwrite(path, np.zeros((8, 8, 3), np.uint8), resolution=(50800, 50800),
                     resolutionunit="INCH")  # 50800 px/inch = 0.5 um/px
    assert file_mpp(path) == pytest.approx(0.5)
    tifffile.imwrite(path, np.zeros((8, 8, 3), np.uint8), resolution=(72, 72),
                     resolutionunit="INCH")  # 352 um/px: a screen default, not a scan
    assert file_mpp(path) is None
    tifffile.imwrite(path, np.zeros((8, 8, 3), np.uint8), resolution=(40000, 40000),
                     resolutionunit="CENTIMETER",  # the Aperio description comes first
                     description="Aperio Image Library v12 |AppMag = 40|MPP = 0.2462|Left = 1")
    assert file_mpp(path) == pytest.approx(0.2462)
    tifffile.imwrite(path, np.zeros((8, 8, 3), np.uint8), description="Aperio |MPP = 12.5")
    assert file_mpp(path) is None  # implausible: not a scan
    tifffile.imwrite(path, np.zeros((8, 8, 3), np.uint8))
    assert file_mpp(path) is None  # nothing recorded
    save(tmp_path / "p.png", np.zeros((8, 8, 3), np.uint8))
    assert file_mpp(tmp_path / "p.png") is None and file_mpp(tmp_path / "none.tif") is None


def test_overlay_downsamples_big_images(tmp_path):
    img = np.full((5000, 7000, 3), 230, np.uint8)
    path = write_overlay(tmp_path / "o.png", img, [Detection(3500, 2500, 0.9, 300)])
    small = np.asarray(Image.open(path))
    assert max(small.shape[:2]) <= 2048
    assert (small != 230).any()  # the circle is drawn


def test_no_checkpoint_uses_a_plugin_default_and_says_so(tmp_path, plugin, checkpoint, capsys,
                                                          monkeypatch):
    (tmp_path / "pkg" / "partsup_default_test.py").write_text(textwrap.dedent(f'''
        from partsup import hookimpl

        @hookimpl
        def partsup_default_checkpoint():
            return {str(checkpoint)!r}
    '''))
    img = save(tmp_path / "a.png", he_like(300, 400, centres=[(100.0, 100.0)]))
    monkeypatch.setenv("PARTSUP_DISABLE_PLUGINS", "mitosis")  # the shipped model stays out
    rc = main(["--plugin", plugin, "--plugin", "partsup_default_test", "predict", str(img),
               "--out", str(tmp_path / "o"), "--format", "csv", "--device", "cpu",
               "--mpp", "0.25"])  # without the mitosis plugin no default resolution is assumed
    assert rc == 0
    captured = capsys.readouterr()
    assert f"using the default model {checkpoint}" in captured.err.replace("\n", "")
    assert "1 detections in 1 image(s)" in captured.out  # the core's summary: no HPF counts
    assert "HPF" not in captured.out
    # no plugin offers one: a one-line error that names the option
    assert run_predict([img, "--out", tmp_path / "o2"], plugin) == 2
    assert "no --checkpoint given and no plugin ships a default model" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_shards_inputs_and_writes_what_one_process_writes(tmp_path, plugin,
                                                                   checkpoint, capsys):
    import os
    import subprocess
    import sys
    folder = tmp_path / "hpfs"
    for i, centres in enumerate([[(100.0, 100.0)], [(50.0, 60.0), (300.0, 200.0)], [],
                                 [(200.0, 150.0)], [(120.0, 220.0), (330.0, 90.0)]]):
        save(folder / f"f{i}.png", he_like(300, 400, centres=centres))
    (folder / "f5.png").write_bytes(b"not a png")  # fails on whichever rank gets it
    common = ["--checkpoint", str(checkpoint), "--format", "csv,geojson", "--mpp", "0.25",
              "--device", "cpu"]
    assert run_predict([folder, *common, "--out", tmp_path / "one"], plugin) == 1
    capsys.readouterr()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(tmp_path / "pkg"), os.environ.get("PYTHONPATH", "")]))
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "partsup", "--plugin", plugin, "predict", str(folder), *common,
         "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0  # f5.png failed: every rank exits 1, torchrun reports it
    import re
    assert "(2 processes)" in proc.stderr
    assert len(re.findall(r"6 mitoses in\s+5\s+image", proc.stdout)) == 1  # one summary
    one, two = tmp_path / "one", tmp_path / "two"
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir()) and "f4.csv" in names
    for name in names:
        if name.endswith((".csv", ".geojson")) and name != "summary.csv":
            assert (one / name).read_text() == (two / name).read_text(), name

    def rows(path):  # seconds differ between runs
        return [{k: v for k, v in r.items() if k != "seconds"}
                for r in csv.DictReader(path.open())]
    assert rows(one / "summary.csv") == rows(two / "summary.csv")
    assert [r["id"] for r in rows(two / "summary.csv")] == [f"f{i}" for i in range(6)]
