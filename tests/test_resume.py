"""Nothing lost: a run killed mid-way (SIGTERM, SIGKILL) and resumed ends with exactly the weights
of an uninterrupted run (CPU, tiny backbone, tiny in-memory data)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from partsup.checkpoint.files import load_checkpoint
from partsup.recipe import load_run
from partsup.training.loop import fit
from partsup.training.rundir import RunDir

from helpers import tiny_recipe

TESTS = Path(__file__).resolve().parent
ITERATIONS = 24

RECIPE = tiny_recipe({
    "name": "tiny-resume",
    "seed": 3,
    "data.augment": {"stain": True},
    "model.backbone.dropout": 0.2,  # dropout: the RNG matters
    "train": {"schedule": "stagewise", "weak_iterations": 10, "iterations": ITERATIONS,
              "optimizer": {"name": "adamw", "lr": 0.01, "warmup": 3}, "batch_size": 2,
              "val_every": 8, "checkpoint_every": 4, "keep_last": 2, "log_every": 1},
})


@pytest.fixture
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _recipe_file(tmp: Path) -> Path:
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    return path


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(RunDir(out).checkpoint_path(ITERATIONS))["model"]


def _loss_iterations(out: Path) -> list[int]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r["iteration"] for r in map(json.loads, lines) if "loss" in r]


def _wait(pred, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"training ended (rc {proc.returncode}) before it could be killed:\n{out}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail("training did not reach the kill point in time")
        time.sleep(0.02)


def _logged_at_least(out: Path, n: int) -> bool:
    try:
        return any(i >= n for i in _loss_iterations(out))
    except (OSError, json.JSONDecodeError):
        return False


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_run_resumes_to_identical_weights(tmp_path: Path, sig: int, one_thread) -> None:
    recipe_path = _recipe_file(tmp_path)
    recipe, regs = load_run(recipe_path)
    fit(recipe, regs, tmp_path / "ref")
    reference = _final_weights(tmp_path / "ref")

    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               OMP_NUM_THREADS="1", TINY_PLUGIN_DELAY="0.04")
    proc = subprocess.Popen([sys.executable, "-m", "partsup", "train", str(recipe_path),
                             "--out", str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    # SIGKILL: after the first checkpoints exist; SIGTERM: mid-way through the strong stage
    _wait(lambda: _logged_at_least(out, 13 if sig == signal.SIGTERM else 9), proc)
    proc.send_signal(sig)
    rc = proc.wait(timeout=60)
    log = proc.stdout.read() if proc.stdout else ""
    done = [i for i, _ in RunDir(out).existing()]
    if sig == signal.SIGTERM:
        assert rc == 143, log
        assert "stopped at iteration" in log and "--resume" in log
        assert done and done[-1] >= 13, done  # saved on SIGTERM (periodic ones: 4, 8, 12)
    else:
        assert rc == -signal.SIGKILL
    assert done and done[-1] < ITERATIONS, (done, log)

    result = fit(recipe, regs, out, resume=True)
    assert result.completed and result.iteration == ITERATIONS
    resumed = _final_weights(out)
    assert resumed.keys() == reference.keys()
    for key in reference:
        assert torch.equal(resumed[key], reference[key]), key
    its = _loss_iterations(out)
    assert its == list(range(1, ITERATIONS + 1))  # the log was cut back to the checkpoint
    assert (out / "loss.png").is_file() and (out / "val_f1.png").is_file()


def test_resume_refuses_a_changed_recipe_and_missing_checkpoints(tmp_path: Path,
                                                                 one_thread) -> None:
    from partsup.errors import CheckpointError, PartsupError, RecipeError
    recipe, regs = load_run(_recipe_file(tmp_path))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        fit(recipe, regs, tmp_path / "empty", resume=True)
    short = {**recipe, "train": {**recipe["train"], "iterations": 4, "val_every": 0,
                                 "schedule": "end2end"}}
    fit(short, regs, tmp_path / "run")
    with pytest.raises(PartsupError, match="already holds checkpoints"):
        fit(short, regs, tmp_path / "run")
    changed = {**short, "seed": 99}
    with pytest.raises(RecipeError, match="'seed'"):
        fit(changed, regs, tmp_path / "run", resume=True)


def test_resume_accepts_keys_the_schema_gained_but_not_changed_values():
    from partsup.errors import RecipeError
    from partsup.training.resume import check_resumable
    old = {"data": {"patch": {"size": 256}}}
    new = {"data": {"patch": {"size": 256, "negative_tries": 10}}}
    check_resumable(old, new)  # a run written before negative_tries was in the schema
    with pytest.raises(RecipeError, match="data.patch.size"):
        check_resumable(old, {"data": {"patch": {"size": 128, "negative_tries": 10}}})
    with pytest.raises(RecipeError, match="data.patch.size"):
        check_resumable(old, {"data": {"patch": {}}})  # a key dropped is still a change


def test_augment_jitter_from_the_recipe_reaches_the_config():
    from partsup.data.sampling import AugmentConfig, PatchConfig
    aug = AugmentConfig.from_recipe({"color_jitter": True, "jitter": [0.2, 0.1, 0.1, 0.0]})
    assert aug.jitter == (0.2, 0.1, 0.1, 0.0)
    assert PatchConfig.from_recipe({"size": [64, 96], "other": 1}).size == (64, 96)
