"""Every recipe in recipes/ validates against the registries, with --set overrides and env vars."""
from __future__ import annotations

from pathlib import Path

import pytest

from partsup.errors import DataError, RecipeError
from partsup.recipe import load_run
from partsup.training.stages import plan_stages

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
#: crop classifier recipes (task: classify) and the detector's (task: segment)
CLASSIFY = [p for p in RECIPES if "\ntask: classify" in p.read_text()]
SEGMENT = [p for p in RECIPES if p not in CLASSIFY]
SPLITS = ("strong", "weak", "val", "test")


@pytest.fixture
def env(monkeypatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("PARTSUP_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("PARTSUP_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.delenv("PARTSUP_DEMO_DATA", raising=False)
    monkeypatch.delenv("PARTSUP_SYNTH", raising=False)
    return tmp_path


def test_the_expected_recipes_exist() -> None:
    names = {p.stem for p in RECIPES}
    assert {"quickstart", "partmitosis", "partmitosis-icpr2014", "segmitos",
            "partmitosis-amibr", "partmitosis-amibr-gpu", "segmitos-amibr"} <= names


@pytest.mark.parametrize("path", SEGMENT, ids=[p.stem for p in SEGMENT])
def test_recipe_validates_with_overrides_and_env(path: Path, env: Path) -> None:
    recipe, regs = load_run(path, ["train.iterations=10", "train.weak_iterations=4", "seed=7",
                                   "train.batch_size=2"])
    assert recipe["name"] == path.stem
    assert (recipe["seed"], recipe["train"]["iterations"], recipe["train"]["batch_size"]) == \
        (7, 10, 2)
    assert plan_stages(recipe)[-1].end == 10
    for split in SPLITS:
        spec = recipe["data"][split]
        if spec is None:
            continue
        assert spec["name"] in regs.datasets
        root = spec.get("root")
        assert root is None or "${" not in str(root)
        if "PARTSUP_DATA" in path.read_text() and split in ("weak", "val", "test"):
            assert str(root).startswith(str(env / "data"))
    for key in ("weak", "weak_set_a"):
        if recipe["labels"][key]:
            assert recipe["labels"][key]["name"] in regs.label_makers
    assert recipe["model"]["backbone"]["name"] in regs.backbones
    assert recipe["train"]["optimizer"]["name"] in regs.optimizers
    assert recipe["eval"]["protocol"] in regs.protocols
    assert recipe["data"]["val"] is not None and recipe["data"]["test"] is not None


@pytest.mark.parametrize("path", CLASSIFY, ids=[p.stem for p in CLASSIFY])
def test_classify_recipe_validates_and_builds_its_crop_net(path: Path, env: Path) -> None:
    import torch
    from partsup.model.classifier import build_classifier, crop_side
    recipe, regs = load_run(path, ["train.iterations=10", "seed=7", "train.batch_size=2"])
    assert recipe["name"] == path.stem and recipe["task"] == "classify"
    assert (recipe["seed"], recipe["train"]["iterations"]) == (7, 10)
    for split in ("train", "val"):
        assert recipe["data"][split]["name"] in regs.datasets
    section = recipe["classifier"]
    verify = section["verify"]
    assert section["heads"][verify["head"]][1] == verify["positive"]
    net = build_classifier(section, regs).eval()
    side = crop_side(section["crop_um"], section["mpp"])
    with torch.no_grad():
        out = net(torch.zeros(2, 3, side, side))
    assert {h: tuple(v.shape) for h, v in out.items()} == \
        {h: (2, len(c)) for h, c in section["heads"].items()}


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_rejects_a_misspelt_override(path: Path, env: Path) -> None:
    with pytest.raises(RecipeError, match="train.iteration"):
        load_run(path, ["train.iteration=5"])


def test_paper_recipe_matches_the_paper(env: Path) -> None:
    recipe, _ = load_run(RECIPES[[p.stem for p in RECIPES].index("partmitosis")])
    t = recipe["train"]
    assert t["optimizer"] == {"name": "sgd_paper", "lr": 1e-10, "momentum": 0.99,
                              "weight_decay": 5e-4}
    assert (t["batch_size"], t["iterations"], t["schedule"]) == (1, 200000, "end2end")
    assert recipe["loss"]["weak"]["reduction"] == recipe["loss"]["strong"]["reduction"] == "sum"
    m = recipe["model"]
    assert (m["backbone"]["name"], m["mode"], m["stop_gradient"]) == ("fcn32s", "transfer", True)
    assert m["transfer"]["layers"] == 2 and m["transfer"]["activation"] == "leaky_relu"
    assert (recipe["data"]["strong"]["name"], recipe["data"]["weak"]["name"]) == \
        ("icpr2012", "amida13")
    assert recipe["labels"]["weak"]["r"] == [10, 17]


def test_icpr2014_recipe_labels(env: Path) -> None:
    recipe, _ = load_run(RECIPES[[p.stem for p in RECIPES].index("partmitosis-icpr2014")])
    assert (recipe["labels"]["weak"]["r"], recipe["labels"]["weak"]["R"]) == (15, 30)
    assert recipe["labels"]["weak_set_a"]["r"] == [10, 17]
    assert recipe["data"]["val"]["val_cases"] == ["A03"]


def test_unset_data_variable_is_named(monkeypatch) -> None:
    monkeypatch.delenv("PARTSUP_DATA", raising=False)
    monkeypatch.setenv("PARTSUP_WEIGHTS", "/w")
    with pytest.raises(RecipeError, match=r"\$\{PARTSUP_DATA\} is not set"):
        load_run(RECIPES[[p.stem for p in RECIPES].index("partmitosis")])


def test_missing_dataset_shows_the_expected_layout(env: Path) -> None:
    from partsup.data.patches import build_reader
    recipe, regs = load_run(RECIPES[[p.stem for p in RECIPES].index("partmitosis")])
    with pytest.raises(DataError, match="mitoses_image_data"):
        build_reader(recipe["data"]["weak"], regs, "data.weak")


@pytest.mark.parametrize("name", ["quickstart", "partmitosis-amibr"])
def test_light_recipes_build_their_model(name: str, env: Path) -> None:
    import torch
    from partsup.model.partial import build_model
    recipe, regs = load_run(RECIPES[[p.stem for p in RECIPES].index(name)])
    model = build_model(recipe["model"], regs).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 64))
    assert out.weak.shape == out.strong.shape == (1, 2, 64, 64)


def test_every_schema_key_is_documented() -> None:
    from partsup.recipe import SCHEMA
    doc = (Path(__file__).resolve().parents[1] / "docs" / "recipes.md").read_text()

    def keys(d: dict, prefix: str = ""):
        for k, v in d.items():
            path = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                yield from keys(v, path)
            else:
                yield path
    missing = [k for k in keys(SCHEMA) if f"`{k}`" not in doc]
    assert not missing, f"docs/recipes.md does not document {missing}"
