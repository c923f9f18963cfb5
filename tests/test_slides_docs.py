"""Every command in docs/slides.md runs as written, on tiny settings: the bench scripts on a
2048x1536 (make_slide) or 2048x2048 (slide_memory) slide, ``predict`` with the dark-disk test
model (tests/helpers.py) in place of ``runs/quick``; ``slides/`` and ``predictions/`` live in a
temporary folder."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from partsup.cli.main import main

from helpers import documented_commands

REPO = Path(__file__).resolve().parents[1]
TINY = {"bench/make_slide.py": ["--width", "2048", "--height", "1536", "--cluster", "6"],
        "bench/slide_memory.py": ["--size", "2048"]}


def torchrun_commands(page: str) -> list[list[str]]:
    """The ``torchrun ...`` lines of the page's bash blocks, as argv."""
    text = (REPO / page).read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [shlex.split(line.split(" #")[0]) for block in blocks
            for line in block.splitlines() if line.startswith("torchrun ")]


@pytest.mark.slow
def test_documented_slide_commands_run(tmp_path, plugin, checkpoint, monkeypatch):
    cmds = documented_commands("docs/slides.md")
    assert [shlex.split(c)[1] for c in cmds] == ["bench/make_slide.py", "predict", "predict",
                                                  "bench/slide_memory.py"]
    monkeypatch.chdir(tmp_path)
    for cmd in cmds:
        args = shlex.split(cmd)
        if args[0] == "python":
            proc = subprocess.run([sys.executable, str(REPO / args[1]), *args[2:],
                                   *TINY[args[1]]], capture_output=True, text=True,
                                  timeout=600)
            assert proc.returncode == 0, proc.stderr
            continue
        args = [str(checkpoint) if a == "runs/quick" else a for a in args[1:]]
        assert main(["--plugin", plugin, *args, "--device", "cpu", "--slide-tile", "512"]) == 0
    assert (tmp_path / "predictions/case/case.heatmap.png").is_file()
    torchrun = torchrun_commands("docs/slides.md")
    assert len(torchrun) == 1
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(tmp_path / "pkg"), os.environ.get("PYTHONPATH", "")]))
    env.pop("WORLD_SIZE", None)
    args = [str(checkpoint) if a == "runs/quick" else a for a in torchrun[0][1:]]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", *args, "--plugin",
                           plugin, "--device", "cpu", "--slide-tile", "512"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ((tmp_path / "predictions/all/case.csv").read_text()
            == (tmp_path / "predictions/case/case.csv").read_text())
    spot = json.loads((tmp_path / "predictions/case/case.hotspot.geojson").read_text())
    assert spot["features"][-1]["properties"]["name"] == "Hotspot"
    truth = (tmp_path / "slides/case.truth.csv").read_text().splitlines()[1:]
    found = (tmp_path / "predictions/case/case.csv").read_text().splitlines()[1:]
    assert len(found) == len(truth)
    left = [float(r.split(",")[0]) for r in
            (tmp_path / "predictions/case-roi/case.csv").read_text().splitlines()[1:]]
    assert all(x < 1024 + 512 + 64 for x in left)  # ROI: the left half (tiles touching it)
