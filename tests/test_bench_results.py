"""bench/results.py (the paper's comparisons on the synthetic benchmark) runs as docs/results.md
shows it, on tiny settings, and its tables hold what they claim."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import documented_commands

REPO = Path(__file__).resolve().parents[1]
TINY = ["--seeds", "1,2", "--iterations", "2", "--images", "12",
        "--configs", "partmitosis,two-networks", "--train-set", "train.batch_size=2"]


def documented_results_line() -> list[str]:
    lines = [c for c in documented_commands("docs/results.md") if "bench/results.py" in c]
    assert lines, "docs/results.md shows no 'python bench/results.py' command"
    return shlex.split(lines[0])


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("results")
    argv = documented_results_line()
    for i, a in enumerate(argv):  # the runs and the plot go to the temporary folder
        if a.startswith(("runs/", "docs/img/")):
            argv[i] = str(tmp / Path(a).name)
    done = subprocess.run([sys.executable, *argv[1:], *TINY], cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = Path(argv[argv.index("--runs") + 1])
    return json.loads((runs / "results.json").read_text()), done.stdout, tmp, runs


@pytest.mark.slow
def test_every_table_row_comes_from_its_runs(tiny_results):
    out, stdout, tmp, runs = tiny_results
    base = {r["label"]: r for r in out["tables"]["baselines"]}
    assert set(base) == {"strong-only (set A only, applied to B)",
                         "independent: two networks, no transfer",
                         "PartMitosis (shared trunk, transfer)"}  # weak-only was not run
    assert all(r["seeds"] == 2 for r in base.values())
    for config, by_seed in out["results"].items():
        for seed, r in by_seed.items():
            metrics = json.loads((runs / f"{config}-s{seed}" / "eval" / "metrics.json")
                                 .read_text())["totals"]
            assert r["own"]["f1"] == metrics["f1"]  # the table reads evaluate's output
            assert r["own"]["test_f1_from_grid"] == pytest.approx(metrics["f1"])  # grid = evaluate
    strong = base["strong-only (set A only, applied to B)"]
    two = out["results"]["two-networks"]
    assert strong["f1"]["mean"] == pytest.approx(
        sum(r["per_w"]["0"]["f1"] for r in two.values()) / len(two))
    assert "| strong-only (set A only, applied to B) | 2 |" in stdout
    # only the baselines table has all its rows' runs; the others list what was run
    assert [r["config"] for r in out["tables"]["gamma"]] == ["partmitosis"]


@pytest.mark.slow
def test_w_sweep_is_written_and_plotted(tiny_results):
    out, _, tmp, _ = tiny_results
    sweep = out["w_sweep"]["partmitosis"]
    assert [float(w) for w in sweep] == sorted(float(w) for w in sweep) and len(sweep) == 11
    assert all(0 <= v["test_f1"]["mean"] <= 1 for v in sweep.values())
    assert (tmp / "w_sweep.png").stat().st_size > 1000


@pytest.mark.slow
def test_a_second_run_reuses_every_finished_step(tiny_results):
    _, _, tmp, runs = tiny_results
    argv = documented_results_line()
    argv = [str(runs) if a.startswith("runs/") else a for a in argv]
    argv = [a for a in argv if not a.startswith("docs/img/") and a != "--plot"]
    done = subprocess.run([sys.executable, *argv[1:], *TINY], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "$ " not in done.stdout  # no command ran again


def test_unknown_config_is_one_clear_error():
    done = subprocess.run([sys.executable, "bench/results.py", "--configs", "nope"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "--configs: unknown nope" in done.stderr
    done = subprocess.run([sys.executable, "bench/results.py", "--shard", "2/2"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "--shard: need 0 <= I < N, got '2/2'" in done.stderr
