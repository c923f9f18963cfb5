"""Every command in docs/results.md, docs/model-card.md and docs/stain.md runs as written (on
tiny settings).

Commands are read from the pages' ``bash`` blocks and run in order (later ones use what
earlier ones wrote), with ``runs/``, ``my_hpfs/`` and ``predictions`` moved into a temporary
folder and options appended that make them tiny: 2 training iterations, 2 fields per split or
density. Needs the AMi-Br crops beside the repository (skipped otherwise).
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from partsup.cli.main import main

from helpers import documented_commands

REPO = Path(__file__).resolve().parents[1]
PAGES = ["docs/results.md", "docs/model-card.md", "docs/stain.md"]
TINY = {
    "train": ["--set", "train.iterations=2", "--set", "train.val_every=2",
              "--set", "train.checkpoint_every=2", "--set", "train.log_every=1",
              "--set", "train.batch_size=2", "--set", "data.val.fields=2",
              "--set", "data.num_workers=0"],
    "calibrate": ["--option", "fields=2"],
    "evaluate": ["--option", "fields=2"],
    "predict": ["--device", "cpu"],
}

#: bench/amibr_seeds.py trains: one seed, 2 iterations, tiny validation during training
SEEDS_TINY = ["--seeds", "1", "--iterations", "2", "--train-set", "train.batch_size=2",
              "--train-set", "data.val.fields=2", "--train-set", "data.num_workers=0",
              "--train-set", "train.checkpoint_every=2", "--train-set", "train.log_every=1"]


def localise(cmd: str, tmp: Path) -> list[str]:
    """``cmd`` as argv with the folders it writes or reads (``runs/``, ``my_hpfs/``,
    ``predictions``, ``docs/img/``, also after ``key=`` in ``--set``) moved into ``tmp``."""
    args = shlex.split(cmd)
    for i, a in enumerate(args):
        for prefix in ("runs/", "my_hpfs/", "predictions", "docs/img/"):
            if a.startswith(prefix):
                args[i] = str(tmp / a)
            elif f"={prefix}" in a:
                key, value = a.split("=", 1)
                args[i] = f"{key}={tmp / value}"
    return args


def test_pages_show_the_commands_this_test_runs():
    cmds = [c for p in PAGES for c in documented_commands(p)]
    kinds = {shlex.split(c)[1] for c in cmds}
    assert {"train", "calibrate", "evaluate", "predict", "bench/amibr_quality.py",
            "bench/amibr_seeds.py", "bench/results.py"} <= kinds
    readme = (REPO / "README.md").read_text()
    shown = [c for c in documented_commands("docs/model-card.md") if " predict " in f" {c}"]
    assert shown and shown[0] in readme  # README shows the model card's (tested) line


@pytest.mark.slow
def test_documented_real_tissue_commands_run(shared_data, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    field = np.full((96, 96, 3), 200, np.uint8)
    field[40:56, 40:56] = (60, 30, 90)
    for page in PAGES:
        tmp = tmp_path / Path(page).stem
        tmp.mkdir()
        (tmp / "my_hpfs").mkdir()
        Image.fromarray(field).save(tmp / "my_hpfs" / "a.png")
        for cmd in documented_commands(page):
            args = localise(cmd, tmp)
            if args[0] == "python" and args[1] == "bench/results.py":
                continue  # synthetic, no AMi-Br needed: tests/test_bench_results.py runs it
            if args[0] == "python":
                args += ["--fields", "2"] + (SEEDS_TINY if "amibr_seeds" in args[1] else [])
                proc = subprocess.run([sys.executable, *args[1:]], capture_output=True,
                                      text=True, timeout=900)
                assert proc.returncode == 0, f"{page}: {cmd}\n{proc.stderr[-2000:]}"
                continue
            args = [f"{a} fields=2" if i and args[i - 1] == "--view" else a
                    for i, a in enumerate(args)]  # calibrate's extra views: 2 fields each
            extra = TINY.get(args[1], [])
            if args[1] == "train" and "task: classify" in (REPO / args[2]).read_text():
                extra = extra + ["--set", "data.train.fields=2"]  # a crop classifier's split
            rc = main(args[1:] + extra)
            assert rc == 0, f"{page}: {cmd}"
    assert (tmp_path / "results" / "runs" / "amibr" / "quality.json").is_file()
    assert (tmp_path / "model-card" / "predictions" / "summary.csv").is_file()
    assert (tmp_path / "stain" / "docs" / "img" / "stain.jpg").is_file()
    for name in ("tupac-none", "tupac-reinhard", "tupac-macenko"):
        metrics = (tmp_path / "stain" / "runs" / "norm" / name / "metrics.json").read_text()
        assert json.loads(metrics)["normalize"] == name.split("-")[1]
