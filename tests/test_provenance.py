"""Which model made a result (issue 25 item 11): the model file's SHA-256 in the model card,
in an exported ONNX file's own metadata, in ``summary.csv`` and in the GeoJSON files, and on
the loaded detector."""
from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import pytest

from partsup.checkpoint import digest
from partsup.checkpoint.digest import file_sha256
from partsup.output.writers import read_detections

from helpers import he_like, run_predict, save, tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "plugins" / "partsup_mitosis" / "models" / "partmitosis-amibr.pt"
SKIP_ONNX = "onnx/onnxruntime not installed: pip install 'partsup[onnx]'"


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_file_sha256_streams_and_is_cached_per_path_mtime_and_size(tmp_path, monkeypatch):
    path = tmp_path / "m.bin"
    path.write_bytes(bytes(range(256)) * 9000)  # > one CHUNK when CHUNK is small
    monkeypatch.setattr(digest, "CHUNK", 4096)
    assert file_sha256(path) == sha(path)
    reads = []
    monkeypatch.setattr(digest, "open", lambda *a, **k: reads.append(a) or open(*a, **k),
                        raising=False)
    assert file_sha256(path) == sha(path) and reads == []  # cached: not read again
    assert file_sha256(tmp_path / "." / "m.bin") == sha(path) and reads == []  # same file
    path.write_bytes(b"another model")  # another size: read again
    assert file_sha256(path) == sha(path) and len(reads) == 1


def test_predict_records_the_model_sha256_in_summary_and_geojson(tmp_path, plugin, checkpoint):
    from partsup import Detector
    want = sha(checkpoint)
    detector = Detector.from_checkpoint(checkpoint, device="cpu", plugins=[plugin])
    assert (detector.model_name, detector.model_sha256) == (checkpoint.name, want)
    assert detector.provenance() == {"model": checkpoint.name, "model_sha256": want}
    img = save(tmp_path / "in" / "a.png", he_like(400, 500, centres=[(200, 200)]))
    out = tmp_path / "out"
    assert run_predict([img, tmp_path / "in" / "missing.png", "--checkpoint", checkpoint,
                        "--out", out, "--mpp", "0.25", "--device", "cpu", "--format",
                        "csv,geojson", "--no-overlay"], plugin) == 1  # one input missing
    with (out / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    header = (out / "summary.csv").read_text().splitlines()[0].split(",")
    assert header[:11] == ["file", "id", "status", "count", "width", "height", "mpp",
                           "area_mm2", "per_mm2", "seconds", "error"]  # the old columns first
    assert header[-1] == "model_sha256"
    assert [r["model_sha256"] for r in rows] == [want, want]  # every row, the failed one too
    geo = json.loads((out / "a.geojson").read_text())
    assert geo["properties"] == {"model": checkpoint.name, "model_sha256": want}
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == 1
    # the features are as before (QuPath reads them, and ignores the collection's properties)
    assert set(geo["features"][0]["properties"]) == {"objectType", "classification",
                                                     "measurements"}
    assert read_detections(out / "a.geojson").shape == (1, 3)
    assert "model" not in (out / "a.csv").read_text()  # the csv of detections: as before


def test_a_slide_geojson_names_its_model(tmp_path, plugin, checkpoint):
    from partsup import Detector
    from helpers import make_slide
    detector = Detector.from_checkpoint(checkpoint, "cpu", plugins=[plugin])
    found = detector.predict_slide(make_slide(tmp_path / "case.tif"), tile=256,
                                   out=tmp_path / "out")
    geo = json.loads((tmp_path / "out" / "case.geojson").read_text())
    assert geo["properties"] == {"model": "dark.pt", "model_sha256": sha(checkpoint)}
    assert len(geo["features"]) == len(found) > 0


def test_geojson_without_a_known_model_is_as_before(tmp_path):
    from partsup.output.writers import GeoJsonWriter
    from partsup.types import Detection
    path = GeoJsonWriter().write(tmp_path / "a.geojson", [Detection(1.0, 2.0, 0.9, 10.0)],
                                 {"image": "a"})
    assert list(json.loads(path.read_text())) == ["type", "features"]


def test_onnx_export_writes_the_source_sha256_into_the_model_metadata(tmp_path):
    onnx = pytest.importorskip("onnx", reason=SKIP_ONNX)
    pytest.importorskip("onnxruntime", reason=SKIP_ONNX)
    import partsup
    from partsup.cli.main import main
    from partsup.inference.onnx_runtime import load_onnx_detector
    from partsup.manager import load
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "tiny.onnx"
    assert main(["--plugin", "tiny_plugin", "export", str(ckpt), "--out", str(out)]) == 0
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["source_sha256"] == sha(ckpt) and meta["source"] == "tiny.pt"
    assert meta["partsup_version"] == partsup.__version__
    side = json.loads((tmp_path / "tiny.onnx.json").read_text())
    assert meta["mpp"] == ("" if side["mpp"] is None else repr(side["mpp"]))
    assert side["source_sha256"] == sha(ckpt)
    # the onnx runtime's detector: the .onnx file's own SHA-256, and its source's from the
    # model's metadata even when the sidecar says nothing of it
    side.pop("source_sha256")
    (tmp_path / "tiny.onnx.json").write_text(json.dumps(side))
    det = load_onnx_detector(out, load(["tiny_plugin"], disabled=()))
    assert det.provenance() == {"model": "tiny.onnx", "model_sha256": sha(out),
                                "source_sha256": sha(ckpt)}


def test_model_card_states_the_shipped_model_sha256():
    card = (ROOT / "docs" / "model-card.md").read_text()
    found = re.findall(r"^\| sha256 \| `([0-9a-f]{64})`", card, flags=re.M)
    assert found, "docs/model-card.md: its table needs a row '| sha256 | `<64 hex>` |'"
    assert found == [sha(SHIPPED)], (
        f"{SHIPPED.name} changed: put its SHA-256 {sha(SHIPPED)} in docs/model-card.md's "
        f"'sha256' row (sha256sum {SHIPPED.relative_to(ROOT)})")
