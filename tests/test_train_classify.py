"""Training a crop classifier (``task: classify``) through the one training loop: the run
folder, best.pt picked by the mean balanced accuracy, exact resume, class-balanced crops, the
folder dataset's ``class`` column, mined negatives, the metric functions and one-line refusals
of bad recipes. Synthetic, CPU-only, a few seconds."""
from __future__ import annotations

import itertools
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from partsup.checkpoint.files import load_checkpoint
from partsup.errors import PartsupError
from partsup.evaluation.classification import (auroc, balanced_accuracy, confusion_matrix,
                                               macro_auroc)
from partsup.manager import Registries, make_plugin_manager
from partsup.recipe import load_recipe
from partsup.training.loop import fit
from partsup.training.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
ITERATIONS = 40


def make_folder(root: Path, split: str, n: int, seed: int, size: int = 64) -> None:
    """A ``folder`` dataset split: ``n`` pink images with 5 dark disks each (points; class
    ``blue`` or ``red`` by the disk's colour, in the ``class`` column) and 3 hard negatives
    (``label`` 0: plain background)."""
    rng = np.random.default_rng(seed)
    folder = root / split
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = ["image,x,y,label,class"]
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        img = np.empty((size, size, 3), np.float32)
        img[:] = (230, 190, 210)
        img += rng.normal(0, 6, img.shape)
        cells = [(x, y) for x in (10, 26, 42, 56) for y in (10, 26, 42, 56)]
        rng.shuffle(cells)
        for k, (x, y) in enumerate(cells[:8]):
            x, y = x + rng.uniform(-2, 2), y + rng.uniform(-2, 2)
            if k < 5:
                cls = ("blue", "red")[k % 2]
                img[(xx - x) ** 2 + (yy - y) ** 2 <= 12] = \
                    (60, 40, 150) if cls == "blue" else (150, 40, 60)
                rows.append(f"im{i}.png,{x:.2f},{y:.2f},1,{cls}")
            else:
                rows.append(f"im{i}.png,{x:.2f},{y:.2f},0,")
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / "images" /
                                                                     f"im{i}.png")
    (folder / "points.csv").write_text("\n".join(rows) + "\n")


def recipe_dict(root: Path, **train: object) -> dict:
    return {
        "name": "tiny-classifier", "seed": 2, "device": "cpu", "task": "classify",
        "classifier": {"crop_um": 8, "heads": {"verify": ["object", "other"],
                                               "kind": ["blue", "red"]},
                       "verify": {"head": "verify", "positive": "object"},
                       "model": {"name": "cnn", "widths": [8, 16], "dropout": 0.2}},
        "data": {"train": {"name": "folder", "root": str(root), "split": "train", "mpp": 0.5},
                 "val": {"name": "folder", "root": str(root), "split": "val", "mpp": 0.5},
                 "negatives": {"hard": True, "jitter_um": 1.0},
                 "augment": {"geometric": True, "stain": True}},
        "train": {"optimizer": {"name": "adamw", "lr": 0.01, "warmup": 3},
                  "iterations": ITERATIONS, "batch_size": 8, "val_every": 20,
                  "checkpoint_every": 10, "keep_last": 5, "log_every": 5, **train},
    }


@pytest.fixture(scope="module")
def regs() -> Registries:
    return Registries.from_pm(make_plugin_manager())


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crops")
    make_folder(root, "train", 4, 0)
    make_folder(root, "val", 2, 1)
    return root


@pytest.fixture
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _records(out: Path) -> list[dict]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time", "it_s")} for r in rows]


def test_classify_trains_into_a_run_folder(tmp_path: Path, regs, data, one_thread) -> None:
    recipe = load_recipe(data=recipe_dict(data), registries=regs)
    result = fit(recipe, regs, tmp_path / "run")
    out = tmp_path / "run"
    assert result.completed and result.iteration == ITERATIONS and result.score_name == "score"
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt", "checkpoints", "loss.png", "metrics.jsonl", "recipe.yaml", "val_score.png"]
    resolved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert resolved["task"] == "classify" and resolved["classifier"]["mpp"] == 0.5  # recorded
    assert not {"model", "labels", "loss", "detect"} & set(resolved)
    records = _records(out)
    losses = [r for r in records if "loss" in r]
    assert [r["iteration"] for r in losses] == list(range(5, ITERATIONS + 1, 5))
    assert {"loss_verify", "loss_kind", "lr"} <= set(losses[0])
    val = [r for r in records if "val_score" in r]
    assert [r["iteration"] for r in val] == [20, 40]
    for head, classes in (("verify", 2), ("kind", 2)):
        cm = np.asarray(val[-1][f"val_{head}_confusion"])
        assert cm.shape == (classes, classes) and cm.sum() == val[-1][f"val_{head}_n"]
    # 2 val images x (5 points + 3 hard negatives): verify sees all 16, kind the 10 points
    assert val[-1]["val_verify_n"] == 16 and val[-1]["val_kind_n"] == 10
    best = load_checkpoint(out / "best.pt")
    assert best["recipe"]["task"] == "classify" and "optimizer" not in best
    assert best["best"]["metric"] == result.best_f1 == max(r["val_score"] for r in val)
    assert result.best_f1 > 0.5  # beats chance (balanced accuracy 0.5) on an easy task
    assert max(r["val_kind_balanced_accuracy"] for r in val) > 0.5
    assert any(k.startswith("heads.kind.") for k in best["model"])


def test_classify_resume_is_bit_identical(tmp_path: Path, regs, data, one_thread,
                                          monkeypatch) -> None:
    """Stopped at iteration 15 (a stop request, as SIGTERM makes) and resumed, the run ends
    with the weights and the logs of an uninterrupted one."""
    recipe = load_recipe(data=recipe_dict(data), registries=regs)
    fit(recipe, regs, tmp_path / "a")
    import partsup.training.loop as loop
    real, calls = loop.train_step, itertools.count(1)

    def stop_at_15(run, batch, stage, opt, sched, stop, **kw):
        return real(run, batch, stage, opt, sched, next(calls) == 15, **kw)
    monkeypatch.setattr(loop, "train_step", stop_at_15)
    first = fit(recipe, regs, tmp_path / "b")
    assert not first.completed and first.iteration == 15
    monkeypatch.setattr(loop, "train_step", real)
    fit(load_recipe(data=recipe_dict(data), registries=regs), regs, tmp_path / "b", resume=True)
    a = load_checkpoint(RunDir(tmp_path / "a").checkpoint_path(ITERATIONS))["model"]
    b = load_checkpoint(RunDir(tmp_path / "b").checkpoint_path(ITERATIONS))["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _records(tmp_path / "a") == _records(tmp_path / "b")


def test_crops_are_class_balanced_and_deterministic(regs, data) -> None:
    from partsup.data.crops import CropDataset
    from partsup.data.sampling import AugmentConfig
    from partsup.training.classify import ClassifyTask
    from partsup.runtime import Dist
    recipe = load_recipe(data=recipe_dict(data), registries=regs)
    run = ClassifyTask().build(recipe, regs, Dist())
    crops = run.data.crops
    # 4 images x 5 points (3 blue, 2 red each) and 3 hard negatives
    assert crops.counts() == {"verify": {"object": 20, "other": 12},
                              "kind": {"blue": 12, "red": 8}}
    assert crops.contexts.shape == (32, 20, 20, 3)  # 8 um at 0.5 um/px + 2 x 2 px jitter
    ds = CropDataset(crops, AugmentConfig(stain=True), seed=7, length=400)
    again = CropDataset(crops, AugmentConfig(stain=True), seed=7, length=400)
    ds.set_epoch(3)
    again.set_epoch(3)
    assert torch.equal(ds[11]["image"], again[11]["image"])
    targets = torch.stack([ds[i]["targets"] for i in range(400)])
    assert ((targets != -100).sum(1) == 1).all()  # each item trains the head it was drawn for
    share = [float((targets[:, h] == c).float().mean()) for h in range(2) for c in range(2)]
    assert all(0.19 < s < 0.31 for s in share), share  # each (head, class) about 1/4


def test_mined_candidates_are_negatives_away_from_points(tmp_path: Path, regs, data) -> None:
    from partsup.runtime import Dist
    from partsup.training.classify import ClassifyTask
    mined = tmp_path / "mined"
    mined.mkdir()
    points = [r.split(",") for r in (data / "train" / "points.csv").read_text().splitlines()[1:]]
    x, y = (float(v) for v in points[0][1:3])  # a point of im0: a hit, not a false alarm
    (mined / "im0.csv").write_text(f"x,y,score\n{x + 0.5},{y},0.9\n3.0,3.0,0.4\n5.0,60.0,0.3\n")
    spec = recipe_dict(data)
    spec["data"]["negatives"]["mined"] = str(mined)
    run = ClassifyTask().build(load_recipe(data=spec, registries=regs), regs, Dist())
    kinds = run.data.crops.kinds
    assert int((kinds == 2).sum()) == 2 and int((kinds == 1).sum()) == 12
    assert run.data.crops.counts()["verify"] == {"object": 20, "other": 14}


def test_folder_dataset_reads_a_class_per_point(data, regs) -> None:
    reader = regs.datasets.build("folder", root=str(data), split="train", mpp=0.5)
    s = reader[0]
    assert len(s.point_labels) == len(s.points) == 5 and set(s.point_labels) == {"blue", "red"}
    assert len(s.hard_negatives) == 3 and reader.point_labels(0) == s.point_labels


def _refusal(regs, spec: dict, tmp_path: Path) -> str:
    with pytest.raises(PartsupError) as exc:
        fit(load_recipe(data=spec, registries=regs), regs, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # nothing written
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_bad_classify_recipes_are_refused_in_one_line(tmp_path: Path, regs, data) -> None:
    spec = recipe_dict(data)
    spec["classifier"]["heads"]["kind"] = ["blue", "green"]
    assert re.search(r"classifier\.heads\.kind: class 'green' is the label of no training "
                     r"point \(labels found: blue, red\)", _refusal(regs, spec, tmp_path))
    spec = recipe_dict(data)
    spec["classifier"]["verify"] = {"head": "verify", "positive": "yes"}
    assert "classifier.verify.positive: head 'verify' has no class 'yes'" in \
        _refusal(regs, spec, tmp_path)
    spec = recipe_dict(data)
    spec["classifier"]["crop_um"] = 0
    with pytest.raises(PartsupError, match=r"classifier\.crop_um: must be > 0, got 0$"):
        load_recipe(data=spec, registries=regs)
    no_points = tmp_path / "negatives-only"
    make_folder(no_points, "train", 1, 3)
    csv = no_points / "train" / "points.csv"
    csv.write_text("\n".join(r for r in csv.read_text().splitlines() if not r.endswith(
        ("blue", "red"))) + "\n")
    spec = recipe_dict(data)
    spec["data"]["train"]["root"] = str(no_points)
    assert "data.train: the dataset has no points" in _refusal(regs, spec, tmp_path)
    spec = recipe_dict(data)
    spec["model"] = {"backbone": {"name": "tiny"}}
    with pytest.raises(PartsupError, match=r"'model' belongs to task: segment recipes; this "
                                           r"one is task: classify"):
        load_recipe(data=spec, registries=regs)
    spec = recipe_dict(data)
    del spec["classifier"]["heads"]
    with pytest.raises(PartsupError, match=r"missing required value 'classifier\.heads'"):
        load_recipe(data=spec, registries=regs)


def test_segment_recipes_need_no_classifier_keys(regs) -> None:
    seg = {"name": "s", "labels": {"weak": "x"}, "loss": {"weak": "y"},
           "model": {"backbone": "z"}}
    resolved = load_recipe(data=seg)
    assert resolved["task"] == "segment" and "classifier" not in resolved
    assert not {"train", "negatives"} & set(resolved["data"])
    with pytest.raises(PartsupError, match=r"'classifier' belongs to task: classify recipes"):
        load_recipe(data={**seg, "classifier": {"crop_um": 8}})


def test_metric_functions() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(y, 1.0), 1)  # ties on purpose
    pairs = [(a, b) for a in s[y == 1] for b in s[y == 0]]
    brute = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs])
    assert auroc(y == 1, s) == pytest.approx(brute, abs=1e-12)
    assert np.isnan(auroc(np.ones(3, bool), [0.1, 0.2, 0.3]))
    truth, pred = [0, 0, 1, 1, 1, 2, -100], [0, 1, 1, 1, 0, 2, 0]
    assert confusion_matrix(truth, pred, 3).tolist() == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]
    assert balanced_accuracy(truth, pred, 3) == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    probs = np.eye(3)[[0, 0, 1, 1, 1, 2, 0]] * 0.8 + 0.1
    assert macro_auroc(truth, probs) == pytest.approx(np.mean(
        [auroc(np.array(truth[:6]) == c, probs[:6, c]) for c in range(3)]))


def test_docs_classifier_example_runs(tmp_path: Path, monkeypatch) -> None:
    """docs/training.md, "Training a crop classifier": its recipe and command, on tiny data
    and tiny settings."""
    from partsup.cli.main import main
    text = (REPO / "docs" / "training.md").read_text()
    section = text.split("## Training a crop classifier (task: classify)", 1)[1]
    recipe = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    command = section.split("```bash\n", 1)[1].split("```", 1)[0].strip()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "classifier.yaml").write_text(recipe)
    root = Path(yaml.safe_load(recipe)["data"]["train"]["root"])
    make_folder(root, "train", 2, 0)
    make_folder(root, "val", 1, 1)
    words = shlex.split(command)
    assert words[:2] == ["partsup", "train"]
    tiny = ["--set", "train.iterations=4", "--set", "train.val_every=2", "--set",
            "train.batch_size=4", "--set", "classifier.model.widths=[8, 16]", "--device", "cpu"]
    assert main(words[1:] + tiny) == 0
    out = Path(words[words.index("--out") + 1])
    assert (out / "best.pt").is_file()
    assert load_checkpoint(out / "best.pt")["recipe"]["task"] == "classify"
