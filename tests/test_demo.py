"""The demo resumes an interrupted training only when the resolved recipe is unchanged."""
from __future__ import annotations

from partsup_mitosis.commands.demo import _resumable
from partsup.recipe import load_recipe, save_resolved

RECIPE = ("name: t\nmodel: {backbone: {name: smp, encoder: resnet18}}\n"
          "labels: {weak: concentric}\nloss: {weak: concentric}\n")


def test_resumable_only_with_checkpoints_and_same_recipe(tmp_path):
    src = tmp_path / "r.yaml"
    src.write_text(RECIPE)
    recipe = load_recipe(src)
    run = tmp_path / "run"
    assert not _resumable(run, recipe)                      # nothing there
    save_resolved(recipe, run)
    assert not _resumable(run, recipe)                      # no checkpoint yet
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "iter-00000020.pt").write_bytes(b"")
    assert _resumable(run, recipe)
    changed = load_recipe(src, ["train.iterations=7"])
    assert not _resumable(run, changed)                     # other settings: start over
