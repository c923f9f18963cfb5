"""DistributedDataParallel: ``torchrun --nproc_per_node=2 -m partsup train`` with gloo on CPU.

Two processes with one patch each see exactly the items one process with two patches sees
(the batch stream is sharded by rank), and with the summed loss (divided by the batch size)
averaging gradients over ranks equals the single-process gradient: both runs end with the same
weights, up to float rounding. Only rank 0 writes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
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

RECIPE = tiny_recipe({
    "name": "tiny-ddp",
    "seed": 4,
    "data.val.n": 2,
    "loss": {"weak": {"name": "concentric", "reduction": "sum"},
             "strong": {"name": "pixel_ce", "reduction": "sum"}},
    "model.backbone.dropout": 0.0,
    "train": {"schedule": "end2end", "optimizer": {"name": "sgd_paper", "lr": 1.0e-4,
                                                   "momentum": 0.9},
              "iterations": 3, "batch_size": 2, "val_every": 3, "checkpoint_every": 3,
              "log_every": 1},
})


@pytest.mark.slow
def test_torchrun_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recipe, regs = load_run(path)
        fit(recipe, regs, tmp_path / "single")
    finally:
        torch.set_num_threads(old)

    out = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "partsup", "train", str(path), "--out", str(out), "--set", "train.batch_size=1"],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("done: 3 iterations") == 1  # rank 0 reports, rank 1 is quiet

    single = load_checkpoint(RunDir(tmp_path / "single").checkpoint_path(3))
    ddp = load_checkpoint(RunDir(out).checkpoint_path(3))
    assert ddp["sampler"]["world"] == 2 and ddp["sampler"]["batch_size"] == 1
    for key, value in single["model"].items():
        assert torch.allclose(ddp["model"][key], value, rtol=1e-4, atol=1e-6), key
    moved = [k for k in single["model"]
             if not torch.equal(single["model"][k], load_checkpoint(
                 tmp_path / "single" / "best.pt")["model"][k])]
    assert not moved  # best.pt (val at 3) holds the final weights
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "loss" in r] == [1, 2, 3]  # written once
    val = [r for r in records if "val_f1" in r]
    ref = [json.loads(x) for x in (tmp_path / "single" / "metrics.jsonl").read_text()
           .splitlines() if "val_f1" in x]
    assert len(val) == 1 and val[0]["val_fn"] + val[0]["val_tp"] == 4  # both val images counted
    assert (val[0]["val_tp"], val[0]["val_fp"]) == (ref[0]["val_tp"], ref[0]["val_fp"])
    losses = [r["loss"] for r in records if "loss" in r]
    ref_losses = [json.loads(x)["loss"] for x in (tmp_path / "single" / "metrics.jsonl")
                  .read_text().splitlines() if '"loss"' in x]
    assert all(abs(a - b) <= 1e-3 * abs(b) for a, b in zip(losses, ref_losses))


ON_MAIN = """
import os, sys
from pathlib import Path
from partsup.errors import DataError
from partsup.runtime import init_distributed, on_main
import torch.distributed as tdist

dist = init_distributed("cpu")
log = Path(sys.argv[1])

def check():
    with log.open("a") as f:
        f.write(f"rank {dist.rank}\\n")
    raise DataError("the folder is bad")

try:
    on_main(dist, check)
except DataError as exc:
    print(f"rank {dist.rank}: {type(exc).__name__}: {exc}")
on_main(dist, lambda: None)  # a check that passes raises nowhere
print(f"rank {dist.rank}: passed")
tdist.barrier()
tdist.destroy_process_group()
"""


@pytest.mark.slow
def test_on_main_checks_once_and_every_rank_raises_the_same_error(tmp_path: Path) -> None:
    """A check with side effects (predict proving --out writable) runs on rank 0 alone; the
    other ranks raise its error (same class and message) instead of racing it."""
    script, log = tmp_path / "on_main.py", tmp_path / "calls.txt"
    script.write_text(ON_MAIN)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", str(script), str(log)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert log.read_text() == "rank 0\n"
    for rank in (0, 1):
        assert f"rank {rank}: DataError: the folder is bad" in proc.stdout
        assert f"rank {rank}: passed" in proc.stdout
