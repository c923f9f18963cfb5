"""Training values out of range are refused when the recipe is read: one line naming the key
and the rule, before a run folder exists (issue 25, item 14: grad_clip -1 trained and diverged;
checkpoint_every/log_every 0 and lr -1 gave "unexpected" errors; iterations 0 left a run folder)."""
from __future__ import annotations

from pathlib import Path

import pytest

from partsup.cli.main import main
from partsup.errors import RecipeError
from partsup.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"

MINIMAL = """
name: t
model: {backbone: {name: tiny}}
labels: {weak: {name: concentric}}
loss: {weak: {name: concentric}}
"""

BAD = [  # (override, the rule in the message)
    ("train.grad_clip=-1", "train.grad_clip: must be > 0 (or null), got -1"),
    ("train.grad_clip=0", "train.grad_clip: must be > 0 (or null), got 0"),
    ("train.grad_clip=.nan", "train.grad_clip: must be > 0 (or null), got nan"),
    ("train.checkpoint_every=0", "train.checkpoint_every: must be >= 1, got 0"),
    ("train.log_every=0", "train.log_every: must be >= 1, got 0"),
    ("train.iterations=0", "train.iterations: must be >= 1, got 0"),
    ("train.iterations=-5", "train.iterations: must be >= 1, got -5"),
    ("train.batch_size=0", "train.batch_size: must be >= 1, got 0"),
    ("train.keep_last=0", "train.keep_last: must be >= 1, got 0"),
    ("train.val_every=-1", "train.val_every: must be >= 0, got -1"),
    ("data.num_workers=-1", "data.num_workers: must be >= 0, got -1"),
    ("train.optimizer.lr=-1", "train.optimizer.lr: must be a number > 0, got -1"),
    ("train.optimizer.lr=0", "train.optimizer.lr: must be a number > 0, got 0"),
    ("train.optimizer.lr=.inf", "train.optimizer.lr: must be a number > 0, got inf"),
]


@pytest.mark.parametrize("override,rule", BAD, ids=[b[0] for b in BAD])
def test_out_of_range_values_are_refused_naming_key_and_rule(tmp_path, override, rule) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(MINIMAL)
    with pytest.raises(RecipeError) as err:
        load_recipe(path, [override])
    assert str(err.value) == f"{path}: {rule}"


GOOD = [("train.grad_clip=null", None), ("train.grad_clip=0.5", 0.5), ("train.val_every=0", 0),
        ("train.iterations=1", 1), ("train.optimizer.lr=1e-10", 1e-10),
        ("data.num_workers=0", 0), ("train.keep_last=1", 1)]


@pytest.mark.parametrize("override,value", GOOD, ids=[g[0] for g in GOOD])
def test_values_in_range_are_kept(tmp_path, override, value) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(MINIMAL)
    got = load_recipe(path, [override])
    for part in override.split("=")[0].split("."):
        got = got[part]
    assert got == value


@pytest.mark.parametrize("override,rule", [BAD[0], BAD[3], BAD[4], BAD[5], BAD[11]],
                         ids=["grad_clip", "checkpoint_every", "log_every", "iterations", "lr"])
def test_train_refuses_them_in_one_line_before_any_run_folder(tmp_path, capsys, override,
                                                               rule) -> None:
    out = tmp_path / "run"
    code = main(["train", str(QUICKSTART), "--out", str(out), "--set", override])
    captured = capsys.readouterr()
    assert code != 0
    lines = [ln for ln in (captured.err + captured.out).splitlines() if ln.strip()]
    assert len(lines) == 1 and rule in lines[0] and "unexpected" not in lines[0], lines
    assert not out.exists()
