"""bench/amibr_mine.py (a detector's candidates as a second look's mined negatives) and the
``--shift`` views of bench/amibr_quality.py, on tiny settings with the shipped model."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "plugins" / "partsup_mitosis" / "models" / "partmitosis-amibr.pt"


def bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shifts_change_the_image_as_documented():
    shifts = bench_module("amibr_quality").SHIFTS
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    assert shifts["none"] is None and set(shifts) == {"none", "pale", "blur", "hed-", "hed+"}
    pale = shifts["pale"](image).astype(np.float64)
    assert np.allclose(255 - pale, 0.7 * (255 - image.astype(np.float64)), atol=1.0)
    blur = shifts["blur"](image)
    assert blur.std() < 0.7 * image.std()  # smoother, same mean
    assert abs(blur.mean() - image.mean()) < 0.02 * image.mean()
    from skimage.color import rgb2hed
    nuclei = np.zeros((8, 8, 3), np.uint8) + np.array([80, 60, 160], np.uint8)
    weak, strong = shifts["hed-"](nuclei), shifts["hed+"](nuclei)
    h = [rgb2hed(x)[..., 0].mean() for x in (nuclei, weak, strong)]
    assert h[1] < h[0] < h[2]  # less, then more haematoxylin
    for shift in ("pale", "blur", "hed-", "hed+"):
        out = shifts[shift](image)
        assert out.shape == image.shape and out.dtype == np.uint8


@pytest.mark.slow
def test_mine_writes_one_csv_per_field_and_refuses_a_full_folder(shared_data, tmp_path):
    out = tmp_path / "mined"
    cmd = [sys.executable, str(REPO / "bench" / "amibr_mine.py"), "--option", "density=40",
           "--fields", "3", "--root", str(shared_data / "ami-br"), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.rglob("*.csv"))
    assert len(files) == 3 and "3/3 fields" in proc.stdout
    for f in files:
        assert f.read_text().splitlines()[0] == "x,y,score"
        assert f.parent.parent == out  # <slide>/<k>.csv: the reader's image ids
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode != 0 and "not empty" in again.stderr


@pytest.mark.slow
def test_quality_records_and_applies_the_shift(shared_data, tmp_path):
    scores = {}
    for shift in ("none", "pale"):
        out = tmp_path / f"{shift}.json"
        proc = subprocess.run(
            [sys.executable, str(REPO / "bench" / "amibr_quality.py"), "--checkpoint",
             str(MODEL), "--densities", "40", "--fields", "2", "--shift", shift, "--root",
             str(shared_data / "ami-br"), "--out", str(out)],
            capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(out.read_text())
        assert result["shift"] == shift
        scores[shift] = result["densities"]["40"]["calibrated"]
    assert scores["none"] != scores["pale"]  # the same fields, other pixels
