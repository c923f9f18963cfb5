"""Training records the resolution it was trained at: ``data.mpp`` unset in the recipe is filled
from the training samples' um/px when they all agree (resolved recipe, checkpoints, so
``partsup predict`` and ``Detector.predict_slide`` resample to it); disagreeing samples leave it
unset with one line why; the weights do not change; ``--resume`` keeps working."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console

from partsup.checkpoint.files import load_checkpoint
from partsup.training.loop import fit
from partsup.training.rundir import RunDir

from helpers import load_tiny


def _mpp(run: Path) -> object:
    return yaml.safe_load((run / "recipe.yaml").read_text())["data"].get("mpp")


def test_agreeing_samples_set_data_mpp_without_changing_the_weights(tmp_path, tiny_regs):
    from partsup.inference.detector import load_detector
    recipe = load_tiny(tiny_regs, "train.iterations=4", "train.val_every=0")
    assert recipe["data"]["mpp"] is None
    fit(recipe, tiny_regs, tmp_path / "a")
    assert _mpp(tmp_path / "a") == 0.25
    last = load_checkpoint(RunDir(tmp_path / "a").checkpoint_path(4))
    assert last["recipe"]["data"]["mpp"] == 0.25
    assert load_detector(tmp_path / "a" / "best.pt", tiny_regs, "cpu")[0].model_mpp == 0.25
    given = load_tiny(tiny_regs, "train.iterations=4", "train.val_every=0", "data.mpp=0.25")
    fit(given, tiny_regs, tmp_path / "b")  # the same run with data.mpp written in the recipe
    a = load_checkpoint(tmp_path / "a" / "best.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "best.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical weights


def test_a_recipe_value_is_kept(tmp_path, tiny_regs):
    recipe = load_tiny(tiny_regs, "train.iterations=1", "train.val_every=0", "data.mpp=0.5")
    fit(recipe, tiny_regs, tmp_path / "run")
    assert _mpp(tmp_path / "run") == 0.5


def test_disagreeing_samples_leave_it_unset_and_say_why(tmp_path, tiny_regs):
    recipe = load_tiny(tiny_regs, "train.iterations=1", "train.val_every=0",
                       "data.weak.mpp=0.5")
    text = io.StringIO()
    fit(recipe, tiny_regs, tmp_path / "run", console=Console(file=text, width=200))
    assert _mpp(tmp_path / "run") is None
    lines = [x for x in text.getvalue().splitlines() if "data.mpp" in x]
    assert len(lines) == 1 and "0.25, 0.5 um/px" in lines[0], text.getvalue()
    assert load_checkpoint(tmp_path / "run" / "best.pt")["recipe"]["data"]["mpp"] is None


def test_resume_with_the_unset_recipe_keeps_the_recorded_value(tmp_path, tiny_regs):
    from partsup.errors import RecipeError
    from partsup.training.resume import check_resumable
    short = load_tiny(tiny_regs, "train.iterations=2", "train.val_every=0",
                      "train.checkpoint_every=2")
    fit(short, tiny_regs, tmp_path / "run")
    longer = load_tiny(tiny_regs, "train.iterations=4", "train.val_every=0",
                       "train.checkpoint_every=2")
    assert fit(longer, tiny_regs, tmp_path / "run", resume=True).completed
    assert _mpp(tmp_path / "run") == 0.25
    assert load_checkpoint(RunDir(tmp_path / "run").checkpoint_path(4))["recipe"]["data"][
        "mpp"] == 0.25
    check_resumable({"data": {"mpp": 0.25}}, {"data": {"mpp": None}})
    with pytest.raises(RecipeError, match="data.mpp"):
        check_resumable({"data": {"mpp": 0.25}}, {"data": {"mpp": 0.5}})
