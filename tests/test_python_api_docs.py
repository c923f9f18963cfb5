"""Every code block of docs/python-api.md runs as written, in page order, in a temporary folder
holding ``my_hpfs/field.png`` (96x96 px, one dark square) and ``slides/case.tif`` (a 1024x768 px
slide of bench/make_slide.py, with its ROI file): ``python`` blocks are executed,
``partsup`` lines of ``bash`` blocks go through :func:`partsup.cli.main.main` (plus
``--device cpu`` for predict). Needs the shipped model and onnx/onnxruntime (skipped without)."""
from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from partsup.cli.main import main

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "python-api.md"
SKIP_ONNX = "onnx/onnxruntime not installed: pip install 'partsup[onnx]'"


def blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of the page's fenced blocks, in order."""
    return re.findall(r"```(python|bash)\n(.*?)```", text, re.S)


def commands(code: str) -> list[list[str]]:
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        line = line.split(" #")[0].strip()
        if line.startswith("partsup "):
            out.append(shlex.split(line)[1:])
    return out


def make_slide(path: Path, width: int = 1024, height: int = 768) -> Path:
    """A small slide of bench/make_slide.py (0.25 um/px, dark disks) and its ROI file."""
    spec = importlib.util.spec_from_file_location("make_slide", REPO / "bench" / "make_slide.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    old = sys.argv
    sys.argv = ["make_slide.py", str(path), "--width", str(width), "--height", str(height),
                "--cluster", "4"]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        assert bench.main() == 0
    finally:
        sys.argv = old
    return path


def second_look_checkpoint(path: Path) -> Path:
    """The page's ``runs/look/best.pt``: the shipped model with an untrained core ``cnn`` crop
    classifier attached as its second look (labelling head ``kind: [a, b]``)."""
    from partsup.checkpoint.files import load_checkpoint, save_checkpoint
    from partsup.checkpoint.second_look import attach_second_look
    from partsup.manager import load
    from partsup.model.classifier import build_classifier
    regs = load()
    section = {"crop_um": 16.0, "mpp": 0.5, "heads": {"kind": ["a", "b"]},
               "model": {"name": "cnn", "widths": [8, 16]}}
    net = build_classifier(section, regs).eval()
    crops = {"recipe": {"name": "look", "task": "classify", "classifier": section},
             "model": net.state_dict(), "normalization": net.normalization}
    shipped = load_checkpoint(regs.pm.hook.partsup_default_checkpoint())
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, attach_second_look(shipped, crops, {"label": {"head": "kind"}}))


def test_page_shows_the_api_and_the_export():
    text = PAGE.read_text()
    kinds = [k for k, _ in blocks(text)]
    assert kinds.count("python") >= 2 and "bash" in kinds
    assert "Detector.from_checkpoint(" in text and ".detect(rgb, mpp=0.25)" in text
    assert '.predict_slide("slides/case.tif")' in text
    shown = [c for _, code in blocks(text) for c in commands(code)]
    assert {"export", "predict"} <= {c[0] for c in shown}
    assert "docs/python-api.md" in (REPO / "README.md").read_text()


@pytest.mark.slow
def test_every_block_of_the_page_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnx", reason=SKIP_ONNX)
    pytest.importorskip("onnxruntime", reason=SKIP_ONNX)
    from partsup.manager import load
    if load().pm.hook.partsup_default_checkpoint() is None:
        pytest.skip("no shipped default model installed")
    monkeypatch.chdir(tmp_path)
    field = np.full((96, 96, 3), 200, np.uint8)
    field[40:56, 40:56] = (60, 30, 90)
    (tmp_path / "my_hpfs").mkdir()
    Image.fromarray(field).save(tmp_path / "my_hpfs" / "field.png")
    make_slide(tmp_path / "slides" / "case.tif")
    second_look_checkpoint(tmp_path / "runs" / "look" / "best.pt")
    ran = 0
    for lang, code in blocks(PAGE.read_text()):
        if lang == "python":
            exec(compile(code, str(PAGE), "exec"), {"__name__": "__doc_block__"})
            ran += 1
            continue
        for args in commands(code):
            extra = ["--device", "cpu"] if args[0] == "predict" else []
            assert main(args + extra) == 0, " ".join(args)
            ran += 1
    assert ran >= 8
    assert {"case.csv", "case.geojson", "case.tissue.png"} <= {
        p.name for p in (tmp_path / "predictions" / "case").iterdir()}
    assert (tmp_path / "model.onnx.json").is_file() and (tmp_path / "model.safetensors").is_file()
    onnx_csv = (tmp_path / "predictions-onnx" / "field.csv").read_text()
    assert onnx_csv == (tmp_path / "predictions" / "field.csv").read_text()
    assert "max |exported - PyTorch|" in capsys.readouterr().out
