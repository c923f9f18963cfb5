"""``partsup export`` (onnx, torchscript, safetensors) and ``partsup predict --runtime onnx``:
the exported model gives PyTorch's maps, and the onnx runtime PyTorch's detections.

Models are built in the tests (tests/tiny_plugin.py, and the hand-set "dark" model of helpers.py):
nothing is downloaded. Tests that need onnx/onnxruntime skip without them.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from partsup.cli.main import main
from partsup.errors import CheckpointError
from partsup.manager import load

from helpers import he_like, save, tiny_checkpoint

SKIP_ONNX = "onnx/onnxruntime not installed: pip install 'partsup[onnx]'"
#: largest |exported - PyTorch| probability accepted (docs/python-api.md states the measured one)
TOL = 1e-5


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_gives_pytorch_maps_at_any_size(tmp_path, fmt, capsys):
    if fmt == "onnx":
        pytest.importorskip("onnx", reason=SKIP_ONNX)
        pytest.importorskip("onnxruntime", reason=SKIP_ONNX)
    from partsup.inference.export import check_input, run_exported
    from partsup.checkpoint.files import load_model
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / f"tiny.{fmt}"
    assert main(["--plugin", "tiny_plugin", "export", str(ckpt), "--format", fmt,
                 "--out", str(out)]) == 0
    assert "max |exported - PyTorch|" in capsys.readouterr().out
    side = json.loads((tmp_path / f"tiny.{fmt}.json").read_text())
    assert side["outputs"] == ["p_weak", "p_strong"] and side["dynamic_size"] is True
    assert side["detect"]["w"] == 0.4 and side["detect"]["s1"] == 0.55  # calibrated values
    assert side["input"]["normalization"]["scale"] == 1 and side["max_abs_diff"] < TOL
    model, _ = load_model(ckpt, load(["tiny_plugin"], disabled=()))
    x = check_input(model, (96, 160), seed=5)  # a size the export was not traced at
    with torch.inference_mode():
        want = model.probabilities(x)
    got = run_exported(out, fmt, x)
    assert [g.shape for g in got] == [(1, 96, 160)] * 2
    assert max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want)) < TOL


def test_safetensors_round_trip_same_detections(tmp_path):
    from partsup import Detector
    from partsup.checkpoint.files import load_checkpoint
    from safetensors import safe_open
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    st = tmp_path / "tiny.safetensors"
    assert main(["--plugin", "tiny_plugin", "export", str(ckpt), "--format", "safetensors",
                 "--out", str(st)]) == 0
    with safe_open(str(st), framework="pt") as fh:  # plain safetensors: tensors + metadata
        meta = json.loads(fh.metadata()["partsup"])
    assert meta["detect"]["s1"] == 0.55 and meta["recipe"]["name"] == "tiny"
    a, b = load_checkpoint(ckpt), load_checkpoint(st)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    image = he_like(160, 200, centres=[(50, 60), (150, 100)])
    d_pt = Detector.from_checkpoint(ckpt, device="cpu", plugins=["tiny_plugin"])
    d_st = Detector.from_checkpoint(st, device="cpu", plugins=["tiny_plugin"])
    assert d_st.params == d_pt.params
    assert d_st.detect(image, mpp=0.25) == d_pt.detect(image, mpp=0.25)
    from partsup.checkpoint.files import update_detect_params
    update_detect_params(st, {"w": 0.3, "s1": 0.7, "a1": 2, "sigma": 1.0, "area_unit": "px"})
    assert load_checkpoint(st)["detect"]["s1"] == 0.7  # calibrate writes safetensors back
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_checkpoint(tmp_path / "bad.safetensors")


def read_csv(path):
    with open(path) as fh:
        return [(round(float(r["x"]), 3), round(float(r["y"]), 3)) for r in csv.DictReader(fh)]


def test_predict_runtime_onnx_gives_torch_detections(tmp_path, plugin, checkpoint,  # noqa: F811
                                                     capsys):
    pytest.importorskip("onnx", reason=SKIP_ONNX)
    pytest.importorskip("onnxruntime", reason=SKIP_ONNX)
    centres = [(60.0, 70.0), (300.0, 200.0), (520.0, 90.0)]
    img = save(tmp_path / "in" / "a.png", he_like(300, 600, centres=centres))
    onnx_file = tmp_path / "dark.onnx"
    assert main(["--plugin", plugin, "export", str(checkpoint), "--out", str(onnx_file)]) == 0
    common = ["--plugin", plugin, "predict", str(img), "--mpp", "0.25", "--format", "csv",
              "--no-overlay", "--tile", "256"]
    assert main([*common, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "t")]) == 0
    assert main([*common, "--runtime", "onnx", "--model", str(onnx_file),
                 "--out", str(tmp_path / "o")]) == 0
    torch_found, onnx_found = read_csv(tmp_path / "t" / "a.csv"), read_csv(tmp_path / "o" / "a.csv")
    assert len(torch_found) == 3 and onnx_found == torch_found
    capsys.readouterr()
    assert main([*common, "--runtime", "onnx", "--out", str(tmp_path / "x")]) == 2
    assert "--runtime onnx needs --model" in capsys.readouterr().err


def test_missing_onnxruntime_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    import builtins

    from partsup.inference.export import onnx_session
    real = builtins.__import__

    def no_ort(name, *a, **k):
        if name == "onnxruntime":
            raise ImportError("no onnxruntime")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_ort)
    with pytest.raises(Exception, match=r"pip install 'partsup\[onnx\]'"):
        onnx_session(tmp_path / "m.onnx")


@pytest.mark.slow
def test_documented_export_bench_runs_tiny(tmp_path):
    """The ``python bench/export_speed.py`` line of docs/performance.md, on a 128 px image."""
    import re
    import shlex
    import subprocess
    import sys
    from pathlib import Path
    pytest.importorskip("onnxruntime", reason=SKIP_ONNX)
    repo = Path(__file__).resolve().parents[1]
    text = (repo / "docs" / "performance.md").read_text()
    line = next(ln for block in re.findall(r"```bash\n(.*?)```", text, re.S)
                for ln in block.splitlines() if "bench/export_speed.py" in ln)
    args = shlex.split(line.split(" #")[0])[1:]
    args[args.index("--json") + 1] = str(tmp_path / "speed.json")
    proc = subprocess.run([sys.executable, *args, "--size", "128", "--repeats", "1"],
                          cwd=repo, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "speed.json").read_text())
    assert set(result["runtimes"]) == {"torch", "onnxruntime"}
    assert result["max_abs_diff_maps"] < 1e-4 and "onnxruntime" in proc.stdout


def test_from_checkpoint_without_a_shipped_model_says_what_to_pass(monkeypatch):
    from partsup import Detector
    from partsup.errors import PartsupError
    monkeypatch.setenv("PARTSUP_DISABLE_PLUGINS", "mitosis")
    with pytest.raises(PartsupError, match="no checkpoint given and no plugin ships"):
        Detector.from_checkpoint()
