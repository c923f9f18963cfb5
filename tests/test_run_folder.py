"""Nothing lost in a run folder: one training at a time (a lock), resume that says what it
skipped and never rotates away the only readable checkpoint, and no checkpoint called good (or
saved as best) that holds NaN/inf weights."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from partsup.checkpoint.files import load_checkpoint
from partsup.errors import PartsupError
from partsup.training.loop import fit
from partsup.training.rundir import CheckpointWarning, RunDir
from partsup.training.step import NonFiniteLoss

from helpers import load_tiny, tiny_recipe

TESTS = Path(__file__).resolve().parent


def _finite(path: Path) -> bool:
    return all(torch.isfinite(t).all() for t in load_checkpoint(path)["model"].values()
               if t.is_floating_point())


@pytest.mark.slow
def test_second_training_in_the_same_folder_is_refused_naming_the_pid(tmp_path: Path,
                                                                      tiny_regs) -> None:
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(tiny_recipe({"train.iterations": 400,
                                                       "train.val_every": 0})))
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               OMP_NUM_THREADS="1", TINY_PLUGIN_DELAY="0.05")
    proc = subprocess.Popen([sys.executable, "-m", "partsup", "train", str(recipe_path),
                             "--out", str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 120
        while not (out / "metrics.jsonl").is_file():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < end, "the first training did not start in time"
            time.sleep(0.05)
        before = (out / "recipe.yaml").read_bytes()
        with pytest.raises(PartsupError, match=rf"{out} is in use by another training "
                                               rf"\(PID {proc.pid}\)"):
            fit(load_tiny(tiny_regs, "train.iterations=2"), tiny_regs, out, resume=True)
        assert (out / "recipe.yaml").read_bytes() == before  # nothing touched
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    # released when its holder exits (SIGTERM: it saved a checkpoint): the run can go on
    assert not (out / "train.lock").exists()
    (stopped, _), = RunDir(out).existing()[-1:]
    result = fit(load_tiny(tiny_regs, f"train.iterations={stopped + 1}", "train.val_every=0"),
                 tiny_regs, out, resume=True)
    assert result.completed and result.iteration == stopped + 1


def test_lock_is_released_when_fit_returns(tmp_path: Path, tiny_regs) -> None:
    recipe = load_tiny(tiny_regs, "train.iterations=2", "train.val_every=0")
    fit(recipe, tiny_regs, tmp_path / "run")
    fit(load_tiny(tiny_regs, "train.iterations=3", "train.val_every=0"), tiny_regs,
        tmp_path / "run", resume=True)
    assert [i for i, _ in RunDir(tmp_path / "run").existing()] == [2, 3]


def test_resume_names_the_unreadable_checkpoint_and_keeps_a_readable_one(tmp_path: Path,
                                                                         tiny_regs) -> None:
    out = tmp_path / "run"
    fit(load_tiny(tiny_regs, "train.iterations=4", "train.val_every=0",
                  "train.checkpoint_every=2", "train.keep_last=2"), tiny_regs, out)
    runs = RunDir(out)
    newest = runs.checkpoint_path(4)
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated (a full disk, a bad copy)
    # resume, then stop before the newest (corrupt) iteration is reached again
    recipe = load_tiny(tiny_regs, "train.iterations=3", "train.val_every=0",
                       "train.checkpoint_every=1", "train.keep_last=1")
    with pytest.warns(UserWarning, match=r"iter-00000004\.pt.*(truncated|not a readable).*"
                                         r"resuming from .*iter-00000002\.pt"):
        fit(recipe, tiny_regs, out, resume=True)
    readable = [i for i, p in runs.existing() if _readable(p)]
    assert readable == [3], runs.existing()  # the new one; the corrupt 4 was not the one kept
    with pytest.warns(CheckpointWarning):  # the corrupt 4 is still there, and skipped again
        result = fit(load_tiny(tiny_regs, "train.iterations=5", "train.val_every=0"), tiny_regs,
                     out, resume=True)  # and the next resume works
    assert result.completed and _readable(runs.checkpoint_path(4))


def _readable(path: Path) -> bool:
    try:
        load_checkpoint(path)
        return True
    except Exception:
        return False


def test_nan_weights_are_never_called_good_nor_saved_as_best(tmp_path: Path, tiny_regs,
                                                             monkeypatch) -> None:
    """The loss stays finite while part of the weights is NaN (here: the strong branch during
    the weak stage, which the loss does not use)."""
    import partsup.training.loop as train
    real = train.train_step
    calls = []

    def poisoned(run, batch, stage, *a, **k):
        out = real(run, batch, stage, *a, **k)
        calls.append(stage)
        if len(calls) >= 2:  # from iteration 2 on
            with torch.no_grad():
                run.model.strong.semantic.weight.fill_(float("nan"))
        return out
    monkeypatch.setattr(train, "train_step", poisoned)
    recipe = load_tiny(tiny_regs, "train.schedule=stagewise", "train.iterations=6",
                       "train.weak_iterations=3", "train.val_every=1", "train.checkpoint_every=1",
                       "train.keep_last=5")
    with pytest.raises(NonFiniteLoss, match=r"iteration 2: .*not finite.*strong\.semantic"
                                            r".*last good checkpoint is .*iter-00000001\.pt"):
        fit(recipe, tiny_regs, tmp_path / "run")
    assert calls == ["weak", "weak"]  # the loss was finite: only the weights were checked
    runs = RunDir(tmp_path / "run")
    assert [i for i, _ in runs.existing()] == [1] and _finite(runs.checkpoint_path(1))
    assert not runs.best.exists()


def test_a_failed_start_leaves_no_run_folder(tmp_path: Path, tiny_regs, monkeypatch) -> None:
    import partsup.training.tasks as tasks  # the segment task builds the run

    def broken(*a, **k):
        raise PartsupError("tiny: dataset root /nowhere not found")
    monkeypatch.setattr(tasks, "build", broken)  # e.g. data that is not there
    with pytest.raises(PartsupError, match="not found"):
        fit(load_tiny(tiny_regs), tiny_regs, tmp_path / "runs" / "new")
    assert not (tmp_path / "runs" / "new").exists()
    kept = tmp_path / "mine"
    kept.mkdir()
    with pytest.raises(PartsupError, match="not found"):
        fit(load_tiny(tiny_regs), tiny_regs, kept)
    assert kept.is_dir() and list(kept.iterdir()) == []  # an existing folder stays
