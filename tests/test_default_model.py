"""The shipped real-tissue model (plugins/partsup_mitosis/models, docs/model-card.md)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from partsup.cli.main import main
from partsup_mitosis import DEFAULT_MODEL

REPO = DEFAULT_MODEL.parents[3]


def test_shipped_model_is_small_weights_only_and_calibrated():
    assert DEFAULT_MODEL.is_file(), "the default model is part of the repository"
    assert DEFAULT_MODEL.stat().st_size <= 20 * 2 ** 20
    ckpt = torch.load(DEFAULT_MODEL, map_location="cpu", weights_only=True)
    assert not {"optimizer", "scheduler", "rng"} & set(ckpt)  # weights, recipe, calibration
    detect = ckpt["detect"]
    assert set(detect) >= {"w", "threshold", "s1", "a1"}
    # the rule calibration chose: Otsu or a fixed probability (docs/model-card.md)
    assert detect["threshold"] == "otsu" or 0 < float(detect["threshold"]) < 1
    assert 0 <= detect["w"] <= 1 and 0 < detect["s1"] < 1
    assert ckpt["recipe"]["name"] == "partmitosis-amibr"
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_predict_without_checkpoint_finds_a_real_figure(shared_data, tmp_path, capsys):
    from partsup_mitosis.amibr import factory
    reader = factory(root=shared_data / "ami-br", split="test", density=40.0, fields=40)
    i = next(k for k in range(len(reader)) if len(reader.points(k)))
    sample = reader[i]
    path = tmp_path / "field.png"
    Image.fromarray(sample.image).save(path)
    rc = main(["predict", str(path), "--out", str(tmp_path / "out"), "--format", "csv",
               "--mpp", "0.25", "--device", "cpu", "--no-overlay"])
    assert rc == 0
    err = capsys.readouterr().err.replace("\n", "")
    assert "using the default model" in err and DEFAULT_MODEL.name in err
    rows = (tmp_path / "out" / "field.csv").read_text().splitlines()[1:]
    found = np.array([[float(v) for v in r.split(",")[:2]] for r in rows]).reshape(-1, 2)
    assert len(found) >= 1
    d = np.sqrt(((sample.points[:, None] - found[None]) ** 2).sum(-1))
    assert (d.min(1) <= 30).any(), "at least one planted figure is found within 7.5 um"


@pytest.mark.slow
def test_documented_quality_command_runs(shared_data, tmp_path):
    out = tmp_path / "quality.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "amibr_quality.py"), "--checkpoint",
         str(DEFAULT_MODEL), "--densities", "40", "--fields", "3", "--layouts",
         "discs,windows", "--crops", "--root",
         str(shared_data / "ami-br"), "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    row = result["densities"]["40"]
    assert row["fields"] == 3 and row["calibrated"]["tp"] + row["calibrated"]["fn"] == \
        row["figures"]
    assert "discs   40" in proc.stdout and "windows   40" in proc.stdout
    for view in (result["windows"]["40"], result["crops"]["crops"]):
        assert view["fields"] == 3
        assert view["calibrated"]["tp"] + view["calibrated"]["fn"] == view["figures"] > 0


def test_shipped_model_was_trained_by_the_repository_recipe():
    from partsup.manager import load
    from partsup.recipe import load_recipe
    ckpt = torch.load(DEFAULT_MODEL, map_location="cpu", weights_only=True)
    regs = load()
    recipe = load_recipe(REPO / "recipes" / "partmitosis-amibr.yaml", [], regs)
    # the stored recipe read by today's schema: keys added since (at the defaults the run used,
    # e.g. data.patch.negative_tries) are filled in, anything else must match
    stored = load_recipe(data=ckpt["recipe"], registries=regs)
    # training records the um/px its samples share (data.mpp) where the recipe leaves it open
    assert recipe["data"]["mpp"] is None and stored["data"]["mpp"] == 0.25
    stored["data"]["mpp"] = None
    assert stored == recipe, "retrain (docs/model-card.md) after changing the recipe"
