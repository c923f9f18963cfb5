"""Calibrating and scoring a second look: ``partsup calibrate --second-look`` (the candidate
rule and the verify threshold swept together, stored in the checkpoint), a plain calibrate of
a checkpoint that has one, ``partsup evaluate`` before / after it with classification scores
of the matched objects, ``evaluate --at`` (given points), one-line refusals, and the commands
of docs/evaluation.md ("Calibrating and scoring a second look").

The world (noise-free, 0.5 um/px, a ``folder`` dataset with train/val/test splits): dark discs
(class ``dark``), grey discs (class ``grey``) and dark rings (hard negatives) on a pale field.
A hand-set "darkness" backbone finds all three as candidates; a hand-set crop net reads the
mean of the crop's centre ``m`` (0..1): ``p(object) = sigmoid(10 (0.8 - m))`` (discs 0.96 and
more, rings 0.25: only a verify threshold above 0.25 removes them) and ``kind`` = dark when
``m < 0.3``.
"""
from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from partsup import hookimpl
from partsup.checkpoint.files import load_checkpoint, save_checkpoint
from partsup.errors import PartsupError
from partsup.evaluation.classification import auroc
from partsup.evaluation.second_look import class_report
from partsup.manager import Registries, make_plugin_manager
from partsup.model.partial import Branch, build_model

from helpers import REPO, run_cli

MPP = 0.5
HEADS = {"verify": ["object", "decoy"], "kind": ["dark", "grey"]}
CLASSIFIER = {"crop_um": 12.0, "mpp": MPP, "heads": HEADS, "model": {"name": "centre_test"},
              "verify": {"head": "verify", "positive": "object"}}
OPTS = ["--dataset", "folder", "--option", f"mpp={MPP}"]
# the test image: (shape, class in points.csv); None = a ring (hard negative); "" = unknown
TEST = [("dark", "dark"), ("grey", "grey"), ("ring", None), ("dark", "grey"), ("grey", "grey"),
        ("ring", None), ("dark", "dark"), ("grey", ""), ("ring", None)]


class Dark(Branch):
    """p(object) = sigmoid(20 * darkness - 6): every dark or grey shape is a candidate."""

    feature_channels = 1

    def __init__(self) -> None:
        super().__init__()
        self.normalization = {"mean": [0.0] * 3, "std": [1.0] * 3, "scale": 1, "bgr": False}
        self.semantic = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.semantic.weight.copy_(torch.tensor([[[[0.0]]], [[[20.0]]]]))
            self.semantic.bias.copy_(torch.tensor([0.0, -6.0]))

    def features(self, x):
        return 1.0 - x.mean(dim=1, keepdim=True)

    def head(self, logits, size):
        return logits[..., : size[0], : size[1]]


class Centre(nn.Module):
    """Hand-set crop net on the mean ``m`` of the crop's central eighth (module docstring)."""

    def __init__(self, heads) -> None:
        super().__init__()
        self.normalization = {"mean": [0.0] * 3, "std": [1.0] * 3, "scale": 1, "bgr": False}
        self.heads = nn.ModuleDict({h: nn.Linear(1, len(c)) for h, c in heads.items()})
        with torch.no_grad():
            for head, (w, b) in {"verify": ([-10.0, 0.0], [8.0, 0.0]),
                                 "kind": ([-10.0, 10.0], [3.0, -3.0])}.items():
                self.heads[head].weight.copy_(torch.tensor(w).view(2, 1))
                self.heads[head].bias.copy_(torch.tensor(b))

    def forward(self, x):
        s = x.shape[-1]
        k = max(1, s // 8)
        a = (s - k) // 2
        m = x[:, :, a:a + k, a:a + k].mean(dim=(1, 2, 3)).unsqueeze(1)
        return {h: head(m) for h, head in self.heads.items()}


class WorldPlugin:
    @hookimpl
    def partsup_register_backbones(self, register):
        register("dark_look_cal", Dark)

    @hookimpl
    def partsup_register_classifiers(self, register):
        register("centre_test", Centre)


@pytest.fixture(scope="module")
def regs() -> Registries:
    return Registries.from_pm(make_plugin_manager(objects=[WorldPlugin()], entry_points=False))


def scene(shapes, spacing=40):
    """``(image, centres (N, 2))``: the shapes on a grid, noise-free."""
    cols = int(np.ceil(np.sqrt(len(shapes))))
    size = spacing * cols + spacing // 2
    img = np.full((size, size, 3), 232, np.uint8)
    yy, xx = np.mgrid[:size, :size]
    centres = []
    for i, shape in enumerate(shapes):
        cx, cy = spacing * (i % cols + 0.75), spacing * (i // cols + 0.75)
        r2 = (xx - cx) ** 2 + (yy - cy) ** 2
        if shape == "ring":
            img[(r2 <= 49) & (r2 > 16)] = 25
        else:
            img[r2 <= 36] = 25 if shape == "dark" else 120
        centres.append((cx, cy))
    return img, np.asarray(centres)


def write_split(root: Path, split: str, images: list[list[tuple[str, str | None]]]) -> None:
    (root / split / "images").mkdir(parents=True)
    rows = ["image,x,y,label,class"]
    for n, objects in enumerate(images):
        img, centres = scene([shape for shape, _ in objects])
        Image.fromarray(img).save(root / split / "images" / f"im{n}.png")
        for (x, y), (_, cls) in zip(centres, objects):
            rows.append(f"im{n}.png,{x},{y},0," if cls is None else f"im{n}.png,{x},{y},1,{cls}")
    (root / split / "points.csv").write_text("\n".join(rows) + "\n")


def make_world(folder: Path, regs: Registries) -> tuple[Path, Path, Path]:
    """``(data root, detector checkpoint, classifier checkpoint)`` under ``folder``."""
    data = folder / "data" / "objects"
    mixed = [("dark", "dark"), ("grey", "grey"), ("ring", None)]
    write_split(data, "train", [mixed])
    write_split(data, "val", [mixed * 3, list(reversed(mixed)) * 2])
    write_split(data, "test", [TEST])
    section = {"backbone": {"name": "dark_look_cal"}, "mode": "weak_only"}
    model = build_model(section, regs)
    detect = {"w": 1.0, "sigma": 1.0, "a1": 30, "s1": 0.5, "threshold": 0.5, "tile": 256,
              "overlap": 32}
    recipe = {"name": "dark", "model": section, "detect": detect,
              "calibrate": {"w": [1.0], "s1": [0.3, 0.5], "a1": [0, 30]}}
    detector = save_checkpoint(folder / "runs" / "detector" / "best.pt",
                               {"recipe": recipe, "model": model.state_dict(),
                                "normalization": model.normalization})
    net = Centre(HEADS)
    classifier = save_checkpoint(folder / "runs" / "classifier" / "best.pt", {
        "recipe": {"name": "centres", "task": "classify", "classifier": CLASSIFIER},
        "model": net.state_dict(), "normalization": net.normalization})
    return data, detector, classifier


@pytest.fixture(scope="module")
def world(tmp_path_factory, regs):
    return make_world(tmp_path_factory.mktemp("world"), regs)


def calibrate(regs, ckpt, data, out, *extra) -> int:
    return run_cli(regs, ["calibrate", "--checkpoint", str(ckpt), *OPTS, "--data-root",
                          str(data), "--split", "val", "--threshold", "0.5", "--out", str(out),
                          *map(str, extra)])


def test_calibrate_sweeps_the_verify_threshold_and_stores_the_second_look(
        regs, world, tmp_path, capsys):
    data, detector, classifier = world
    ckpt = tmp_path / "det.pt"
    ckpt.write_bytes(detector.read_bytes())
    before = ckpt.read_bytes()
    assert calibrate(regs, ckpt, data, tmp_path / "dry", "--second-look", classifier,
                     "--dry-run") == 0
    assert ckpt.read_bytes() == before and "checkpoint left unchanged" in capsys.readouterr().out
    assert calibrate(regs, ckpt, data, tmp_path / "cal", "--second-look", classifier) == 0
    printed = capsys.readouterr().out
    assert "before the second look (candidate rule alone)" in printed and "F1 0.800" in printed
    assert "after the second look" in printed and "verify>=0.3 -> F1 1.000" in printed
    cal = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    look = cal["second_look"]
    # 6 discs and 3 rings per view: the rings survive every candidate rule (F1 12/15) and a
    # verify threshold of 0.1 or 0.2 (p(object) of a ring is 0.25); 0.3 is the first to drop them
    assert look["f1_before"] == pytest.approx(0.8) and look["f1_after"] == 1.0
    assert cal["before"]["best"]["f1"] == pytest.approx(0.8)
    assert cal["best"]["verify_threshold"] == 0.3 and cal["best"]["fp"] == 0
    assert {r["verify_threshold"] for r in cal["rows"]} == {round(0.1 * i, 1)
                                                            for i in range(1, 10)}
    assert [r["f1"] for r in cal["rows"] if r["s1"] == 0.5 and r["a1"] == 30][:3] == \
        pytest.approx([0.8, 0.8, 1.0])
    # each candidate position classified once per image, whatever the (s1, a1, verify) grid
    assert look["candidates_classified"] == 9 + 6
    assert (tmp_path / "cal" / "f1_vs_w.png").stat().st_size > 1000
    stored = load_checkpoint(ckpt)
    params = stored["second_look"]["params"]
    assert params["verify"] == {"head": "verify", "positive": "object", "threshold": 0.3}
    assert params["label"] == {"head": "kind"}
    assert set(params["candidate"]) == {"w", "threshold", "s1", "a1", "sigma", "area_unit"}
    assert params["candidate"]["s1"] == 0.3 and params["candidate"]["threshold"] == 0.5
    assert stored.get("detect") is None  # the detector's own rule is left as it was
    assert stored["second_look"]["recipe"]["task"] == "classify"
    # evaluate reproduces the calibrated counts on the same split
    assert run_cli(regs, ["evaluate", str(ckpt), *OPTS, "--data-root", str(data), "--split",
                          "val", "--out", str(tmp_path / "ev"), "--no-overlays"]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert {k: m["totals"][k] for k in ("tp", "fp", "fn")} == \
        {k: cal["best"][k] for k in ("tp", "fp", "fn")}


def test_plain_calibrate_recalibrates_an_attached_second_look(regs, world, tmp_path, capsys):
    data, detector, classifier = world
    ckpt = tmp_path / "det.pt"
    ckpt.write_bytes(detector.read_bytes())
    assert calibrate(regs, ckpt, data, tmp_path / "a", "--second-look", classifier) == 0
    stale = load_checkpoint(ckpt)
    stale["second_look"]["params"]["candidate"] = {"s1": 0.99}
    stale["second_look"]["params"]["verify"]["threshold"] = 0.05
    save_checkpoint(ckpt, stale)
    capsys.readouterr()
    assert calibrate(regs, ckpt, data, tmp_path / "b", "--verify-threshold", "0.2,0.6",
                     "--view", f"folder:test mpp={MPP} root={data}") == 0
    printed = capsys.readouterr().out
    assert "has a second look (a crop classifier): recalibrating its candidate rule and verify " \
           "threshold with it" in " ".join(printed.split())
    params = load_checkpoint(ckpt)["second_look"]["params"]
    assert params["verify"]["threshold"] == 0.6 and params["candidate"]["s1"] == 0.3
    cal = json.loads((tmp_path / "b" / "calibration.json").read_text())
    assert cal["second_look"]["verify_grid"] == [0.2, 0.6]
    # two views (val: 15 objects, test: 9): each row's F1 per view, the mean chosen
    assert [v["images"] for v in cal["views"]] == [2, 1]
    assert cal["best"]["view_f1"] == [1.0, 1.0] and cal["best"]["verify_threshold"] == 0.6
    assert cal["before"]["best"]["view_f1"] == pytest.approx([0.8, 0.8])


def test_evaluate_before_and_after_and_the_confusion_matrix(regs, world, tmp_path, capsys):
    data, detector, classifier = world
    ckpt = tmp_path / "det.pt"
    ckpt.write_bytes(detector.read_bytes())
    assert calibrate(regs, ckpt, data, tmp_path / "cal", "--second-look", classifier) == 0
    capsys.readouterr()
    out = tmp_path / "ev"
    assert run_cli(regs, ["evaluate", str(ckpt), *OPTS, "--data-root", str(data), "--out",
                          str(out), "--no-overlays"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    m = json.loads((out / "metrics.json").read_text())
    look = m["second_look"]
    # the test image: 6 discs (ground truth) and 3 rings (hard negatives)
    assert {k: look["before"][k] for k in ("tp", "fp", "fn")} == {"tp": 6, "fp": 3, "fn": 0}
    assert {k: look["after"][k] for k in ("tp", "fp", "fn")} == {"tp": 6, "fp": 0, "fn": 0}
    assert m["totals"]["f1"] == look["after"]["f1"] == 1.0
    assert look["before"]["f1"] == pytest.approx(0.8)
    assert look["after"]["ap"] == 1.0 and "verify probability" in m["pr_scores"]
    assert "before the second look (candidate rule alone): F1 0.800" in printed
    assert "after the second look: F1 1.000" in printed
    # by hand: known classes dark (2 discs, both called dark), grey (3: two grey discs called
    # grey and a dark disc labelled grey, called dark); one grey disc has no class
    kind = look["classification"]["heads"]["kind"]
    assert kind["classes"] == ["dark", "grey"] and kind["n"] == 5
    assert kind["confusion_matrix"] == [[2, 0], [1, 2]]
    assert kind["balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    assert kind["recall"] == pytest.approx({"dark": 1.0, "grey": 2 / 3})
    assert "balanced accuracy 0.833" in printed
    rows = list(csv.DictReader((out / "detections" / "im0.csv").open()))
    assert len(rows) == 6 and {r["class"] for r in rows} == {"dark", "grey"}
    assert list(rows[0])[:6] == ["x", "y", "score", "area", "match", "class"]
    # AUROC of p(grey): from the written probabilities, by pairs (ties half)
    truth = {(round(float(x)), round(float(y))): c for (shape, c), (x, y) in
             zip(TEST, scene([s for s, _ in TEST])[1]) if c}
    pairs = [(truth[(round(float(r["x"])), round(float(r["y"])))], float(r["p_grey"]))
             for r in rows if truth.get((round(float(r["x"])), round(float(r["y"]))))]
    pos = [p for c, p in pairs if c == "grey"]
    neg = [p for c, p in pairs if c == "dark"]
    by_pairs = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg])
    assert kind["auroc"] == pytest.approx(by_pairs, abs=1e-5)


def test_evaluate_at_scores_the_classifier_on_given_points(regs, world, tmp_path, capsys):
    data, detector, classifier = world
    ckpt = tmp_path / "det.pt"
    ckpt.write_bytes(detector.read_bytes())
    assert calibrate(regs, ckpt, data, tmp_path / "cal", "--second-look", classifier) == 0
    reports = {}
    for name, source in (("detector", ckpt), ("classifier", classifier)):
        out = tmp_path / name
        assert run_cli(regs, ["evaluate", str(source), "--at", *OPTS, "--data-root", str(data),
                              "--out", str(out)]) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert m["points"] == 6 and m["hard_negatives"] == 3
        reports[name] = m["heads"]
        rows = list(csv.DictReader((out / "points.csv").open()))
        assert [r["kind"] for r in rows] == ["point"] * 6 + ["hard_negative"] * 3
    for heads in reports.values():
        assert heads["verify"]["confusion_matrix"] == [[6, 0], [0, 3]]
        assert heads["verify"]["balanced_accuracy"] == 1.0 and heads["verify"]["auroc"] == 1.0
        assert heads["kind"]["confusion_matrix"] == [[2, 0], [1, 2]]
        assert heads["kind"]["n"] == 5 and heads["kind"]["n_unknown"] == 1
    printed = " ".join(capsys.readouterr().out.split())
    assert "head kind on 5 points with a known class: balanced accuracy 0.833" in printed


def test_class_report_by_hand():
    probs = [{"a": 0.9, "b": 0.1, "c": 0.0}, {"a": 0.2, "b": 0.7, "c": 0.1},
             {"a": 0.6, "b": 0.3, "c": 0.1}, {"a": 0.1, "b": 0.1, "c": 0.8}]
    r = class_report(["a", "b", "b", "x"], probs, ["a", "b", "c"])
    assert r["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert r["n"] == 3 and r["n_unknown"] == 1 and r["balanced_accuracy"] == 0.75
    assert r["auroc_per_class"]["c"] is None  # class c absent: undefined
    assert r["auroc_per_class"]["a"] == auroc(np.array([1, 0, 0], bool), np.array([.9, .2, .6]))
    v = class_report(["yes", "no"], [{"yes": 0.4, "no": 0.6}, {"yes": 0.2, "no": 0.8}],
                     ["yes", "no"], positive="yes", threshold=0.3)
    assert v["confusion_matrix"] == [[1, 0], [0, 1]]


def test_one_line_refusals(regs, world, tmp_path):
    from partsup.inference.detector import load_detector
    data, detector, classifier = world

    def refused(argv, match):
        with pytest.raises(PartsupError, match=match) as info:
            run_cli(regs, argv)
        assert "\n" not in str(info.value)

    where = [*OPTS, "--data-root", str(data)]
    crop = rf"{classifier} is a crop classifier \(task: classify\), not a detector; give it " \
           r"with --second-look"
    refused(["calibrate", str(classifier), *where, "--out", str(tmp_path / "c")], crop)
    refused(["evaluate", str(classifier), *where, "--out", str(tmp_path / "e")], crop)
    with pytest.raises(PartsupError, match=crop):  # what predict and the Python API load with
        load_detector(classifier, regs, "cpu")
    refused(["calibrate", str(detector), *where, "--second-look", str(detector)],
            r"--second-look .* is not a crop classifier \(its recipe says task: segment\)")
    refused(["calibrate", str(detector), *where, "--verify-threshold", "0.5"],
            "--verify-threshold goes with a second look")
    refused(["calibrate", str(detector), *where, "--second-look", str(classifier),
             "--verify-threshold", "0.5,1.5"], r"--verify-threshold: expected probabilities")
    refused(["evaluate", str(detector), "--at", *where, "--out", str(tmp_path / "a")],
            "has no second look")
    refused(["evaluate", "--at", "--detections", str(tmp_path), *where], "--at scores")
    assert not (tmp_path / "c").exists() and not (tmp_path / "e").exists()


def _doc_block(heading: str) -> list[str]:
    text = (REPO / "docs" / "evaluation.md").read_text()
    block = text.split(heading, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [" ".join(ln.split()) for ln in block.replace("\\\n", " ").splitlines() if ln.strip()]


def test_documented_second_look_commands(regs, tmp_path, monkeypatch, capsys):
    """The commands of docs/evaluation.md's second-look section, run as written in a folder
    holding runs/detector, runs/classifier and data/objects."""
    make_world(tmp_path, regs)
    monkeypatch.chdir(tmp_path)
    lines = _doc_block("### Calibrating and scoring a second look")
    assert [ln.split()[1] for ln in lines] == ["calibrate", "evaluate", "evaluate"]
    for line in lines:
        assert run_cli(regs, shlex.split(line)[1:]) == 0, line
    params = load_checkpoint(tmp_path / "runs/detector/best.pt")["second_look"]["params"]
    assert params["verify"]["threshold"] == 0.3
    m = json.loads((tmp_path / "eval/with-look/metrics.json").read_text())
    assert m["second_look"]["after"]["f1"] == 1.0
    at = json.loads((tmp_path / "eval/classifier-at/metrics.json").read_text())
    assert at["heads"]["kind"]["confusion_matrix"] == [[2, 0], [1, 2]]
