"""Every command in README.md runs as written (issue 25, item 5), on tiny settings and stand-in
data, like the docs/ pages' tests.

README.md's ``bash`` blocks are read in order. ``make ...`` lines are exempt: they create the
virtual environment and run the demo or the whole suite (``make demo``, ``make test``;
tests/test_first_hour.py checks what ``make venv`` installs). The "Using it" block is run line
by line by tests/test_first_hour.py (test_readme_using_it_runs_as_written_from_a_fresh_clone);
this file runs every other block, in an empty temporary folder: ``export`` lines set the
variable (an absolute path such as ``/data/mitosis`` is moved into the temporary folder),
``partsup ...`` lines go through ``partsup.cli.main.main`` with options appended that make them
tiny (1-2 iterations, small patches and tiles, CPU). What the lines read is made here first:
synthetic ICPR 2012 and AMIDA13 sets (``partsup synth``) under ``$PARTSUP_DATA``, a stand-in
``fcn32s_from_caffe.pth`` (the Caffe VOC layout, random values, fc6/fc7 narrowed by
``--set model.backbone.fc_channels=8``), a small ``folder`` dataset (``my_data``) and a few
images (``my_hpfs/``).
"""
from __future__ import annotations

import csv
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from partsup.cli.main import main

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
#: the block tests/test_first_hour.py runs
FIRST_HOUR_BLOCK = "## Using it"
#: options appended to each command (all of them on CPU)
TINY = {
    "train": ["--set", "train.iterations=2", "--set", "train.val_every=2", "--set",
              "train.checkpoint_every=2", "--set", "train.log_every=1", "--set",
              "train.batch_size=2", "--set", "data.patch.size=64", "--set", "data.num_workers=0",
              "--set", "detect.tile=96", "--set", "detect.overlap=16", "--device", "cpu"],
    "calibrate": ["--device", "cpu", "--w", "0.5", "--s1", "0.5", "--a1", "0"],
    "evaluate": ["--device", "cpu", "--no-overlays"],
    "predict": ["--device", "cpu"],
}
#: and per recipe: the paper's FCN-32s made small (one iteration, batch 1)
RECIPE_TINY = {"recipes/partmitosis.yaml": ["--set", "model.backbone.fc_channels=8", "--set",
                                            "train.iterations=1", "--set", "train.val_every=0",
                                            "--set", "train.batch_size=1", "--set",
                                            "data.patch.size=32"]}


def readme_blocks() -> list[tuple[str, list[str]]]:
    """``(heading, command lines)`` of each ``bash`` block of README.md, in order: comments
    dropped, continuation lines joined. ``heading``: the last ``#`` heading above the block."""
    text = (REPO / "README.md").read_text()
    out = []
    for m in re.finditer(r"```bash\n(.*?)```", text, re.S):
        heading = ([h for h in re.findall(r"^#+ .*$", text[:m.start()], re.M)] or [""])[-1]
        lines = [ln.split("  #")[0].strip() for ln in m.group(1).replace("\\\n", " ").splitlines()]
        out.append((heading, [ln for ln in lines if ln]))
    return out


def test_every_readme_command_is_run_by_a_test():
    blocks = readme_blocks()
    assert [h for h, _ in blocks].count(FIRST_HOUR_BLOCK) == 1
    source = (TESTS / "test_first_hour.py").read_text()
    assert f'_readme_block("{FIRST_HOUR_BLOCK}")' in source  # run there, line by line
    ours = [ln for h, lines in blocks if h != FIRST_HOUR_BLOCK for ln in lines]
    kinds = {shlex.split(ln)[0] for ln in ours}
    assert kinds <= {"make", "export", "partsup"}, kinds  # nothing this file does not run
    run = [ln for ln in ours if not ln.startswith("make ")]
    assert len(run) >= 10 and any("recipes/partmitosis.yaml" in ln for ln in run)
    assert any("recipes/folder.yaml" in ln for ln in run)
    readme = (REPO / "README.md").read_text()
    assert "PARTSUP_WEIGHTS" in readme and "fcn32s_from_caffe.pth" in readme


# -- stand-ins ---------------------------------------------------------------------------------

def _stand_in_fcn_weights(path: Path) -> Path:
    """A file in the layout of the Caffe-converted VOC FCN-32s (conv1_1 ... fc7, the 21-class
    score_fr and upscore), with random values and fc6/fc7 8 channels wide."""
    import torch

    from partsup_fcn32s import FCN32s
    torch.manual_seed(0)
    net = FCN32s(fc_channels=8)
    state = {k: v for k, v in net.state_dict().items()
             if not k.startswith(("score_fr", "upscore"))}
    state["score_fr.weight"] = torch.zeros(21, 8, 1, 1)
    state["score_fr.bias"] = torch.zeros(21)
    state["upscore.weight"] = torch.zeros(21, 21, 64, 64)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def _disk_image(rng: np.random.Generator, n: int, size: int = 96):
    """A pink image with ``n`` dark disks (radius 6 px) away from the edges; (image, centres,
    mask)."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = (232, 196, 218)
    mask = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    centres = []
    while len(centres) < n:
        c = rng.integers(16, size - 16, 2)
        if all(np.hypot(*(c - d)) > 20 for d in centres):
            centres.append(c)
    for x, y in centres:
        disk = (xx - x) ** 2 + (yy - y) ** 2 <= 36
        img[disk], mask[disk] = (60, 30, 90), 255
    return img, centres, mask


def _folder_dataset(root: Path) -> None:
    """``root/{train,val,test}/images`` + ``points.csv``; masks for half the training images."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        (root / split / "images").mkdir(parents=True)
        rows = []
        for i in range(n):
            img, centres, mask = _disk_image(rng, 2)
            Image.fromarray(img).save(root / split / "images" / f"{split}{i}.png")
            rows += [(f"{split}{i}.png", int(x), int(y)) for x, y in centres]
            if split == "train" and i % 2 == 0:
                (root / split / "masks").mkdir(exist_ok=True)
                Image.fromarray(mask).save(root / split / "masks" / f"{split}{i}.png")
        with open(root / split / "points.csv", "w", newline="") as fh:
            csv.writer(fh).writerows([("image", "x", "y"), *rows])


def _localise(value: str, tmp: Path) -> str:
    """An absolute path of the README (``/data/...``) inside ``tmp``; others as they are."""
    return str(tmp / value.lstrip("/")) if value.startswith("/") else value


def test_readme_commands_run_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for key in ("PARTSUP_DATA", "PARTSUP_WEIGHTS", "PARTSUP_FOLDER"):
        monkeypatch.delenv(key, raising=False)
    lines = [ln for h, block in readme_blocks() if h != FIRST_HOUR_BLOCK for ln in block
             if not ln.startswith("make ")]
    exports = dict(shlex.split(ln)[1].split("=", 1) for ln in lines if ln.startswith("export "))
    data, weights = (Path(_localise(exports[k], tmp_path))
                     for k in ("PARTSUP_DATA", "PARTSUP_WEIGHTS"))
    for like in ("icpr2012", "amida13"):
        assert main(["synth", str(data / like), "--like", like, "--images", "8", "--size",
                     "96", "--density", "500", "--seed", "1"]) == 0  # no image without one
    _stand_in_fcn_weights(weights / "fcn32s_from_caffe.pth")
    _folder_dataset(tmp_path / exports["PARTSUP_FOLDER"])
    (tmp_path / "my_hpfs").mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(_disk_image(rng, 3, 128)[0]).save(tmp_path / "my_hpfs" / f"hpf{i}.png")
    ran = []
    for line in lines:
        words = shlex.split(line)
        if words[0] == "export":
            key, value = words[1].split("=", 1)
            monkeypatch.setenv(key, _localise(value, tmp_path))
            continue
        assert words[0] == "partsup", line
        args = [str(REPO / w) if w.startswith("recipes/") else w for w in words[1:]]
        extra = TINY.get(args[0], []) + [a for w in words[1:] for a in RECIPE_TINY.get(w, [])]
        rc = main(args + extra)
        assert rc == 0, line
        ran.append(args[0])
    assert ran.count("train") == 2 and ran.count("predict") == 2 and "calibrate" in ran
    assert (tmp_path / "runs" / "partmitosis" / "best.pt").is_file()
    assert (tmp_path / "eval" / "amida13-test" / "metrics.json").is_file()
    assert (tmp_path / "eval" / "folder" / "metrics.json").is_file()
    for out in ("predictions", "predictions-folder"):
        assert (tmp_path / out / "summary.csv").is_file(), out


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([__file__, "-q"]))
