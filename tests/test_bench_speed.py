"""The speed benches of docs/performance.md run as written (tiny sizes), and bench/gpu_all.sh
calls them with options they accept."""
from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import documented_line

REPO = Path(__file__).resolve().parents[1]


def bench_module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(argv: list[str], *extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *argv[1:], *extra], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def with_value(argv: list[str], option: str, value: str) -> list[str]:
    argv = list(argv)
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    return argv


@pytest.mark.slow
def test_postprocess_bench_finds_the_same_detections_as_scikit_image(tmp_path):
    argv = documented_line("postprocess.py")
    argv = with_value(with_value(argv, "--sizes", "300x420"), "--repeats", "1")
    out = tmp_path / "pp.json"
    done = run(with_value(argv, "--json", str(out)))
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["size"] == [300, 420] and rows[0]["identical"] and rows[0]["detections"] > 0
    assert set(rows[0]["partsup_steps_s"]) == {"fuse", "gaussian", "otsu", "threshold+label",
                                               "blob sums"}
    assert all(v > 0 for v in rows[0]["partsup_steps_s"].values())
    assert "yes" in done.stdout


@pytest.mark.parametrize("threshold", ["otsu", 0.4])
def test_skimage_pipeline_and_partsup_agree_on_a_map_with_many_blobs(threshold):
    from scipy import ndimage
    from partsup.inference.params import DetectParams
    from partsup.manager import load
    pp = bench_module("postprocess")
    rng = np.random.default_rng(3)
    weak = ndimage.gaussian_filter(rng.random((160, 200)).astype(np.float32), 2) ** 3
    weak = (weak / weak.max()).astype(np.float32)
    strong = np.roll(weak, 3, axis=1)
    params = DetectParams(w=0.3, sigma=1.0, a1=2, s1=0.3, threshold=threshold)
    ours = pp.partsup_pipeline(weak, strong, params, load())
    theirs = pp.skimage_pipeline(weak, strong, 0.3, 1.0, threshold, 2, 0.3)
    assert len(ours) > 5 and pp.identical(ours, theirs)
    assert not pp.identical(ours, theirs[1:])
    moved = [(x + 0.01, *rest) for x, *rest in theirs]
    assert not pp.identical(ours, moved)


@pytest.mark.slow
def test_hpf_speed_bench_runs_the_cpu_rows_and_names_the_gpu_ones(tmp_path):
    argv = documented_line("hpf_speed.py")
    argv = with_value(with_value(argv, "--sizes", "96x128"), "--repeats", "1")
    argv = with_value(with_value(argv, "--models", "light"), "--modes", "fp32,fast")
    out = tmp_path / "hpf.json"
    run(with_value(with_value(argv, "--json", str(out)), "--folder", "1"), "--device", "cpu")
    rows = json.loads(out.read_text())["rows"]
    fp32 = [r for r in rows if r["mode"] == "fp32"]
    assert fp32 and fp32[0]["ms"] > 0 and fp32[0]["tile"] > 0
    assert [r["note"] for r in rows if r["mode"] == "fast"] == ["no GPU"]
    folder = [r for r in rows if r["mode"] == "predict-folder"]
    assert folder and folder[0]["hpfs"] == 1 and folder[0]["s_per_hpf"] > 0


@pytest.mark.slow
def test_train_speed_bench_measures_loader_step_and_both(tmp_path):
    argv = documented_line("train_speed.py")
    out = tmp_path / "train.json"
    argv = with_value(with_value(argv, "--steps", "2"), "--warmup", "1")
    run(with_value(argv, "--json", str(out)), "--set", "train.batch_size=2", "--device", "cpu")
    r = json.loads(out.read_text())
    assert r["batch_size"] == 2 and r["stage"] == "joint"
    assert r["loader_batches_s"] > 0 and r["step_it_s"] > 0 and r["train_it_s"] > 0
    assert r["loader_over_step"] == pytest.approx(r["loader_batches_s"] / r["step_it_s"])


@pytest.mark.slow
def test_cli_startup_bench_times_every_case_and_names_heavy_imports(tmp_path):
    argv = with_value(documented_line("cli_startup.py"), "--repeats", "1")
    out = tmp_path / "cli.json"
    run(with_value(argv, "--json", str(out)))
    r = json.loads(out.read_text())
    assert set(r["results"]) >= {"partsup --help", "partsup plugins", "partsup --version"}
    assert all(v["median_s"] > 0 for v in r["results"].values())
    times = {k: v["median_s"] for k, v in r["results"].items()}
    assert times["partsup --version"] < times["partsup plugins"]  # no plugins, no torch


def gpu_all_commands() -> list[list[str]]:
    """The ``"$PY" bench/<script>.py ...`` commands of bench/gpu_all.sh, as argv."""
    text = (REPO / "bench" / "gpu_all.sh").read_text().replace("\\\n", " ")
    cmds = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith('"$PY" bench/'):
            line = line.split(" || ")[0].replace('"$OUT_DIR"', "OUT")
            cmds.append(shlex.split(line.replace('"$PY"', "python")))
    return cmds


def test_gpu_all_script_is_valid_bash_and_its_options_exist():
    assert subprocess.run(["bash", "-n", str(REPO / "bench" / "gpu_all.sh")]).returncode == 0
    cmds = gpu_all_commands()
    scripts = {Path(c[1]).stem for c in cmds}
    assert {"hpf_speed", "postprocess", "train_speed", "slide_memory"} <= scripts
    for cmd in cmds:
        if "def parse_args" in (REPO / cmd[1]).read_text():
            bench_module(Path(cmd[1]).stem).parse_args(cmd[2:])  # SystemExit if unknown
        else:  # slide_memory.py (options shared with predict_memory.py), checked by name
            src = ((REPO / cmd[1]).read_text()
                   + (REPO / "bench" / "predict_memory.py").read_text())
            assert all(f'"{a}"' in src for a in cmd[2:] if a.startswith("--"))
    hpf = [c for c in cmds if c[1].endswith("hpf_speed.py")]
    assert any("fcn32s" in c[c.index("--models") + 1] and "fast" in c[c.index("--modes") + 1]
               for c in hpf)
