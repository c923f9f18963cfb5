"""The memory bench lines of docs/performance.md and docs/predict.md run as written, on a tiny
slide / image."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import documented_line

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_documented_slide_memory_bench_runs_tiny(tmp_path):
    argv = documented_line("slide_memory.py")
    assert "--size" in argv
    argv[argv.index("--size") + 1] = "1500"  # the documented 50000 takes ~18 minutes
    out = tmp_path / "slide.json"
    done = subprocess.run([sys.executable, *argv[1:], "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["slide"] == "1500x1500"
    assert result["detected"] == result["mitoses_planted"] > 0
    assert result["peak_rss_mib"] >= result["rss_before_slide_mib"] > 0
    assert re.search(r"peak_rss_mib", done.stdout)


@pytest.mark.slow
def test_documented_predict_memory_bench_runs_tiny(tmp_path):
    argv = documented_line("predict_memory.py", "predict.md")
    out = tmp_path / "image.json"
    done = subprocess.run([sys.executable, *argv[1:], "--width", "800", "--height", "600",
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["image"] == "800x600" and result["detected"] > 0
    assert result["peak_rss_mib"] >= result["rss_before_image_mib"] > 0
