"""Colour normalisation (``data.normalize``, ``predict --normalize``): every registered
normalizer maps a recoloured image towards its reference, tile by tile the same as whole, leaves
blank images alone, and round-trips through its target values; training records the fitted
target in its checkpoints, and prediction applies it without the reference file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from partsup.data.normalize import NormalizedReader, normalize_image, resolve_normalize
from partsup.errors import DataError, PartsupError, RecipeError
from partsup.manager import load

from helpers import he_like, make_slide, run_predict, tiny_recipe

TESTS = Path(__file__).resolve().parent


H, E = np.array([0.5626, 0.7201, 0.4062]), np.array([0.2159, 0.8012, 0.5581])  # OD per unit stain


def tissue(seed: int = 0, size: int = 96, h=H, e=E) -> np.ndarray:
    """A field by Beer-Lambert: eosin everywhere, haematoxylin nuclei, a strip of glass."""
    rng = np.random.default_rng(seed)
    conc = np.zeros((size, size, 2))
    conc[..., 1] = rng.uniform(0.5, 1.2, (size, size))
    yy, xx = np.mgrid[:size, :size]
    for x, y in rng.uniform(6, size - 6, (14, 2)):
        disk = (xx - x) ** 2 + (yy - y) ** 2 <= rng.uniform(9, 30)
        conc[disk, 0] = rng.uniform(0.8, 1.4)
    conc[:, : size // 8] = 0  # glass
    od = conc @ np.stack([h, e]) + rng.normal(0, 0.01, (size, size, 3))
    return np.clip(240 * np.exp(-od) - 1, 0, 255).astype(np.uint8)


def recoloured(img: np.ndarray) -> np.ndarray:
    """``img`` as another lab would stain and scan it: each channel's optical density scaled."""
    od = -np.log((img.astype(np.float64) + 1) / 240)
    return np.clip(240 * np.exp(-od * (1.35, 0.8, 1.1)) - 1, 0, 255).astype(np.uint8)


def save(path: Path, img: np.ndarray) -> Path:
    Image.fromarray(img).save(path)
    return path


def registries():
    return load([], disabled=())


def names() -> list[str]:
    return sorted(registries().normalizers)


def test_bundled_normalizers_are_registered():
    assert {"reinhard", "macenko"} <= set(names())


@pytest.mark.parametrize("name", names())
def test_every_normalizer_maps_towards_its_reference(tmp_path, name):
    reference, other = tissue(0), tissue(1)
    norm = registries().normalizers.build(name, reference=str(save(tmp_path / "ref.png",
                                                                    reference)))
    shifted = recoloured(other)
    out = normalize_image(norm, shifted)
    assert out.shape == shifted.shape and out.dtype == np.uint8
    mean = lambda im: im[:, 12:].reshape(-1, 3).mean(axis=0)  # noqa: E731 - tissue only
    before = np.abs(mean(shifted) - mean(other)).sum()
    after = np.abs(mean(out) - mean(other)).sum()
    assert after < 0.5 * before, (before, after)
    # its own estimate of the reference maps the reference (close to) onto itself
    same = normalize_image(norm, reference)
    assert np.abs(same.astype(int) - reference).mean() < 6


@pytest.mark.parametrize("name", names())
def test_every_normalizer_is_tilewise_blank_safe_and_rebuilt_from_its_target(tmp_path, name):
    regs = registries()
    norm = regs.normalizers.build(name, reference=str(save(tmp_path / "ref.png", tissue(0))))
    image = recoloured(tissue(2))
    estimate = norm.estimate(image)
    json.dumps(estimate)  # JSON-able: it may be written beside a slide's outputs
    whole = norm.apply(image, estimate)
    tiles = np.concatenate([norm.apply(image[:, :40], estimate),
                            norm.apply(image[:, 40:], estimate)], axis=1)
    assert np.array_equal(whole, tiles)  # one estimate maps every tile the same way
    blank = np.full((64, 64, 3), 250, np.uint8)
    assert norm.estimate(blank) == {}
    assert np.array_equal(norm.apply(blank, {}), blank)
    target = json.loads(json.dumps(norm.target()))
    again = regs.normalizers.build(name, **target)  # no reference file needed
    assert np.array_equal(again.apply(image, estimate), whole)
    with pytest.raises(DataError, match="no such file"):
        regs.normalizers.build(name, reference=str(tmp_path / "missing.png"))
    with pytest.raises(DataError, match="too few coloured"):
        regs.normalizers.build(name, reference=str(save(tmp_path / "glass.png", blank)))


def test_resolve_records_the_fitted_target_beside_the_reference(tmp_path):
    ref = save(tmp_path / "ref.png", tissue(0))
    spec = resolve_normalize({"name": "reinhard", "reference": str(ref)}, registries())
    assert spec["name"] == "reinhard" and spec["reference"] == str(ref)
    assert len(spec["mean"]) == 3 and len(spec["std"]) == 3
    ref.unlink()  # the fitted values win: the file is not read again
    assert resolve_normalize(spec, registries()) == spec
    assert resolve_normalize(None, registries()) is None
    with pytest.raises(RecipeError, match="unknown"):
        resolve_normalize({"name": "nope"}, registries())


def test_normalized_reader_keeps_the_samples_but_their_colours(tmp_path):
    import sys
    sys.path.insert(0, str(TESTS))
    from tiny_plugin import TinyDataset
    reader = TinyDataset(n=2, size=48)
    norm = registries().normalizers.build("reinhard",
                                          reference=str(save(tmp_path / "r.png", tissue(0))))
    wrapped = NormalizedReader(reader, norm)
    assert len(wrapped) == 2 and wrapped.num_points() == reader.num_points()
    s, t = reader[1], wrapped[1]
    assert np.array_equal(s.points, t.points) and s.id == t.id and s.mask is not None
    assert not np.array_equal(s.image, t.image)
    assert np.array_equal(t.image, normalize_image(norm, s.image))
    assert list(wrapped.estimates) == [1]  # estimated once, kept for the next reads
    assert np.array_equal(wrapped[1].image, t.image)


# -- training records the target, prediction applies it -------------------------------------

def _tiny_recipe(tmp_path: Path, reference: Path, iterations: int) -> Path:
    recipe = tiny_recipe({
        "name": "tiny-normalize",
        "data.strong.n": 2, "data.weak.n": 2, "data.patch": {"size": 32},
        "data.normalize": {"name": "reinhard", "reference": str(reference)},
        "model.backbone.dropout": 0.0,
        "train": {"schedule": "end2end", "iterations": iterations, "batch_size": 2,
                  "val_every": 2, "checkpoint_every": 2, "log_every": 1,
                  "optimizer": {"name": "adamw", "lr": 0.01}},
    })
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_training_normalises_its_data_records_the_target_and_resumes(tmp_path, monkeypatch):
    from partsup.data.patches import build_training_data
    from partsup.inference.detector import load_detector
    from partsup.recipe import load_run
    from partsup.training.loop import fit
    monkeypatch.syspath_prepend(str(TESTS))
    torch.set_num_threads(1)
    ref = save(tmp_path / "ref.png", tissue(0))
    recipe, regs = load_run(_tiny_recipe(tmp_path, ref, 2))
    fit(recipe, regs, tmp_path / "run")
    saved = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["recipe"]
    spec = saved["data"]["normalize"]
    assert spec["reference"] == str(ref) and len(spec["mean"]) == 3
    data = build_training_data(saved, regs)
    assert isinstance(data.strong, NormalizedReader) and isinstance(data.weak, NormalizedReader)
    # resumed with the recipe as written (reference only): the fitted values are not a change
    recipe, regs = load_run(_tiny_recipe(tmp_path, ref, 4))
    assert fit(recipe, regs, tmp_path / "run", resume=True).completed
    ref.unlink()  # prediction needs only the checkpoint
    detector, _ = load_detector(tmp_path / "run" / "best.pt", regs, "cpu")
    assert detector.normalizer is not None
    assert np.allclose(detector.normalizer.target()["mean"], spec["mean"])
    other = {"name": "reinhard", "mean": [0.0, 0.0, 0.0], "std": [0.1, 0.1, 0.1]}
    recipe, regs = load_run(_tiny_recipe(tmp_path, ref, 6), [f"data.normalize={other}"])
    with pytest.raises(PartsupError, match="data.normalize"):
        fit(recipe, regs, tmp_path / "run", resume=True)


@pytest.fixture
def normalised_checkpoint(tmp_path, plugin, checkpoint):
    """The dark-disk test model of test_predict with a Reinhard target in its recipe."""
    ckpt = torch.load(checkpoint, weights_only=True)
    norm = registries().normalizers.build("reinhard",
                                          reference=str(save(tmp_path / "r.png",
                                                             he_like(200, 200))))
    ckpt["recipe"]["data"] = {"normalize": {"name": "reinhard", **norm.target()}}
    path = tmp_path / "normalised.pt"
    torch.save(ckpt, path)
    return path, norm


def test_predict_applies_the_checkpoints_normalizer_and_the_options(tmp_path, plugin,
                                                                    normalised_checkpoint,
                                                                    capsys):
    path, norm = normalised_checkpoint
    image = recoloured(he_like(300, 400, centres=[(100.0, 100.0), (300.0, 200.0)]))
    save(tmp_path / "in.png", image)
    save(tmp_path / "pre.png", normalize_image(norm, image))
    common = ["--checkpoint", path, "--mpp", "0.25", "--device", "cpu", "--format", "csv",
              "--no-overlay"]
    assert run_predict([tmp_path / "in.png", *common, "--out", tmp_path / "a"], plugin) == 0
    assert "colours normalised by reinhard" in capsys.readouterr().err
    assert run_predict([tmp_path / "pre.png", *common, "--normalize", "none", "--out",
                        tmp_path / "b"], plugin) == 0
    assert "normalised" not in capsys.readouterr().err
    a = (tmp_path / "a" / "in.csv").read_text()
    assert a == (tmp_path / "b" / "pre.csv").read_text() and len(a.splitlines()) == 3
    # another reference on the command line
    ref = save(tmp_path / "ref2.png", tissue(3))
    assert run_predict([tmp_path / "in.png", *common, "--normalize", "macenko",
                        "--normalize-reference", ref, "--out", tmp_path / "c"], plugin) == 0
    assert "colours normalised by macenko" in capsys.readouterr().err
    for bad, message in [(["--normalize-reference", ref], "needs --normalize NAME"),
                         (["--normalize", "nope"], "unknown colour normalizer 'nope'"),
                         (["--normalize", "reinhard", "--normalize-reference",
                           tmp_path / "missing.png"], "no such file"),
                         (["--normalize", "none", "--normalize-reference", ref], "takes no")]:
        assert run_predict([tmp_path / "in.png", *common, *bad, "--out", tmp_path / "d"],
                           plugin) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


def test_a_slide_is_normalised_by_one_estimate_from_its_tissue(tmp_path):
    from partsup.prediction.slide import detect_slide
    from partsup.slides.reader import SlideReader
    from partsup.slides.tissue import tissue_mask
    path = make_slide(tmp_path / "s.tif")
    norm = registries().normalizers.build("reinhard", mean=[0.0, 0.0, 0.0],
                                          std=[0.1, 0.1, 0.1])

    class Recorder:
        normalizer = norm
        seen: list = []

        def detect(self, image, mpp, colour=None):
            self.seen.append(colour)
            return []

    found = detect_slide(path, Recorder(), tile=512, margin=32)
    assert found.tiles > 1 and len(Recorder.seen) == found.tiles
    with SlideReader(path) as slide:
        thumb, _ = slide.thumbnail()
    expected = norm.estimate(thumb, tissue_mask(thumb))
    assert expected and all(c == expected for c in Recorder.seen)


def test_onnx_export_carries_the_normalisation(tmp_path, plugin, normalised_checkpoint, capsys):
    pytest.importorskip("onnx", reason="onnx not installed (pip install 'partsup[onnx]')")
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    from partsup.cli.main import main
    path, norm = normalised_checkpoint
    onnx_file = tmp_path / "n.onnx"
    assert main(["--plugin", plugin, "export", str(path), "--out", str(onnx_file)]) == 0
    save(tmp_path / "in.png", recoloured(he_like(300, 400, centres=[(100.0, 100.0)])))
    common = ["--plugin", plugin, "predict", str(tmp_path / "in.png"), "--mpp", "0.25",
              "--format", "csv", "--no-overlay", "--device", "cpu"]
    assert main([*common, "--checkpoint", str(path), "--out", str(tmp_path / "t")]) == 0
    assert main([*common, "--runtime", "onnx", "--model", str(onnx_file),
                 "--out", str(tmp_path / "o")]) == 0
    assert "colours normalised by reinhard" in capsys.readouterr().err
    assert (tmp_path / "o" / "in.csv").read_text() == (tmp_path / "t" / "in.csv").read_text()


def test_evaluate_refuses_normalize_with_detection_files(tmp_path, capsys):
    from partsup.cli.main import main
    rc = main(["evaluate", "--detections", str(tmp_path), "--dataset", "folder",
               "--data-root", str(tmp_path), "--normalize", "reinhard"])
    err = capsys.readouterr().err
    assert rc == 2 and "--normalize goes with --checkpoint" in err and "Traceback" not in err
