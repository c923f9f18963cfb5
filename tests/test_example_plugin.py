"""The example third-party plugin in docs/examples is installed (pip --target) and used."""
from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from partsup.manager import Registries, make_plugin_manager

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "partsup-example"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Install the example package into a private folder, then put it on sys.path."""
    target = tmp_path_factory.mktemp("site")
    src = tmp_path_factory.mktemp("src") / "partsup-example"
    shutil.copytree(EXAMPLE, src)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
           "--no-index", "--target", str(target), str(src)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    yield target
    sys.path.remove(str(target))
    for mod in [m for m in sys.modules if m.startswith("partsup_example")]:
        del sys.modules[mod]


def test_discovered_through_entry_point(installed):
    regs = Registries.from_pm(make_plugin_manager(disabled=()))
    entry = regs.backbones.entry("tiny_cnn")
    assert entry.provider == "example (partsup-example)"
    assert entry.summary.startswith("Tiny two-conv CNN")
    assert "square" in regs.label_makers and "round_enough" in regs.filters


def test_blocked_by_env(installed, monkeypatch):
    monkeypatch.setenv("PARTSUP_DISABLE_PLUGINS", "example")
    regs = Registries.from_pm(make_plugin_manager())
    assert "tiny_cnn" not in regs.backbones


def test_components_work(installed):
    regs = Registries.from_pm(make_plugin_manager(disabled=()))
    net = regs.backbones.build("tiny_cnn", width=4)
    x = torch.randn(1, 3, 33, 17)
    logits = net(x)
    assert logits.shape == (1, 2, 33, 17)
    w = torch.zeros(2, 4, 1, 1)
    assert torch.count_nonzero(net(x, weight=w)) == 0  # replacing the semantic layer works
    maker = regs.label_makers.build("square", half=2)
    lab = maker(np.array([[5.0, 4.0]]), (10, 10), np.random.default_rng(0), 0.25)
    assert lab.sum() == 25 and lab[4, 5] == 1 and lab[4, 8] == 0


def test_docs_walkthrough_runs_as_written(installed, tmp_path, monkeypatch):
    """docs/plugins.md "A complete example": the commands after `pip install`, in order, on
    tiny synthetic data (quickstart's other backbone keys must not leak into tiny_cnn, and the
    shared-backbone path must need nothing beyond the documented backbone contract)."""
    import shlex

    from partsup.cli.main import main
    from partsup_mitosis.synth import generate
    text = (REPO / "docs" / "plugins.md").read_text()
    block = text.split("Install it and use it by name", 1)[1].split("```bash\n", 1)[1]
    lines = [ln.split("  #")[0].strip() for ln in block.split("```", 1)[0].splitlines()
             if ln.strip()]
    assert lines[0] == "pip install ./docs/examples/partsup-example"  # the fixture did this
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PARTSUP_DEMO_DATA", str(tmp_path / "data"))
    generate(tmp_path / "data" / "icpr2012", like="icpr2012", n_images=4, seed=1, size=96)
    generate(tmp_path / "data" / "amida13", like="amida13", n_images=8, seed=0, size=96)
    tiny = ["--set", "train.iterations=2", "--set", "train.val_every=2", "--set",
            "train.batch_size=2", "--set", "data.patch.size=64", "--device", "cpu"]
    for line in lines[1:]:
        words = shlex.split(line)
        assert words[0] == "partsup", line
        args = [str(REPO / w) if w.startswith("recipes/") else w for w in words[1:]]
        assert main(args + (tiny if args[0] == "train" else [])) == 0, line
    ckpt = torch.load(tmp_path / "runs" / "quickstart" / "best.pt", weights_only=True)
    assert ckpt["recipe"]["model"]["backbone"] == {"name": "tiny_cnn", "width": 16}
