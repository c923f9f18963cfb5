"""``partsup predict`` with a second look: labels survive resampling and slide tiling, the
outputs carry ``class`` and ``p_<class>``, counts per class in the table, the summary lines
and ``summary.csv``, ``--at DIR`` (given points classified, predict's own outputs read back,
on images and slides), its one-line errors, ``Detector.classify`` and the documented lines of
docs/predict.md ("Classifying given points").

The world: the dark-disk backbone (tests/helpers.py) finds every dark shape on a pink field as
a candidate; a hand-set crop net (``centre_colour``: the mean colour of the crop's central
eighth) keeps filled discs (``verify: [object, decoy]``; rings, pale in the middle, are
decoys) and labels them ``kind: [red, blue]``. Shapes at 0.25 um/px, the classifier at
0.5 um/px (its crops are resampled).
"""
from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from partsup.checkpoint.files import load_checkpoint, save_checkpoint
from partsup.checkpoint.second_look import attach_second_look
from partsup.cli.main import main

from helpers import DARK_PLUGIN, REPO, save, write_dark_checkpoint

MODULE = "partsup_look_test"
LOOK_PLUGIN = DARK_PLUGIN + '''

class CentreColour(nn.Module):
    """Hand-set crop net: the mean RGB (0..1) of the crop's central eighth decides."""

    def __init__(self, heads):
        super().__init__()
        self.normalization = {"mean": [0.0] * 3, "std": [1.0] * 3, "scale": 1, "bgr": False}
        self.heads = nn.ModuleDict({h: nn.Linear(3, len(c)) for h, c in heads.items()})
        weights = {"verify": ([[-20 / 3] * 3, [0.0] * 3], [10.0, 0.0]),
                   "kind": ([[10.0, 0.0, -10.0], [-10.0, 0.0, 10.0]], [0.0, 0.0])}
        with torch.no_grad():
            for head, (w, b) in weights.items():
                self.heads[head].weight.copy_(torch.tensor(w))
                self.heads[head].bias.copy_(torch.tensor(b))

    def forward(self, x):
        s = x.shape[-1]
        k = max(1, s // 8)
        a = (s - k) // 2
        centre = x[:, :, a:a + k, a:a + k].mean(dim=(2, 3))
        return {h: head(centre) for h, head in self.heads.items()}


@hookimpl
def partsup_register_classifiers(register):
    register("centre_colour", CentreColour)
'''
HEADS = {"verify": ["object", "decoy"], "kind": ["red", "blue"]}
SECTION = {"crop_um": 24.0, "mpp": 0.5, "heads": HEADS, "model": {"name": "centre_colour"}}
PARAMS = {"verify": {"head": "verify", "positive": "object", "threshold": 0.5},
          "label": {"head": "kind"}}
PINK, RED, BLUE, RING = (235, 200, 220), (120, 20, 40), (30, 30, 110), (40, 20, 60)
#: the two fields' shapes, on a grid of 80 px (centres at 40 + 80 i)
FIELDS = {"a": ["red", "blue", "red", "ring"], "b": ["blue", "blue", "ring", "red"]}
CLASS_COLUMNS = "class,p_object,p_decoy,p_red,p_blue"


def field(kinds, scale=1, size=160):
    """A pink field with ``kinds`` (red/blue discs of radius 12, rings of radius 9-14) on a
    2-column grid; ``(image, [(x, y, kind), ...])``, drawn ``scale`` times larger."""
    n = size * scale
    img = np.empty((n, n, 3), np.uint8)
    img[:] = PINK
    yy, xx = np.ogrid[:n, :n]
    shapes = []
    for i, kind in enumerate(kinds):
        cx, cy = (40 + 80 * (i % 2)) * scale, (40 + 80 * (i // 2)) * scale
        r2 = (xx - cx) ** 2 + (yy - cy) ** 2
        if kind == "ring":
            img[(r2 <= (14 * scale) ** 2) & (r2 > (9 * scale) ** 2)] = RING
        else:
            img[r2 <= (12 * scale) ** 2] = RED if kind == "red" else BLUE
        shapes.append((float(cx), float(cy), kind))
    return img, shapes


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def called(path: Path) -> list[tuple[int, int, str]]:
    """``(round x, round y, class)`` of a predict CSV, sorted."""
    return sorted((round(float(r["x"])), round(float(r["y"])), r["class"]) for r in rows(path))


def truth(shapes, scale=1) -> list[tuple[int, int, str]]:
    return sorted((round(x), round(y), k) for x, y, k in shapes if k != "ring")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The plugin module, a plain dark-disk checkpoint (``plain``) and the same with the
    second look attached (``look``; recipe data.mpp 0.25)."""
    folder = tmp_path_factory.mktemp("look")
    (folder / "pkg").mkdir()
    (folder / "pkg" / f"{MODULE}.py").write_text(LOOK_PLUGIN)
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(folder / "pkg"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: threads fighting over shared cores cost more
    from partsup.manager import load
    from partsup.model.classifier import build_classifier
    plain = write_dark_checkpoint(folder / "plain.pt", MODULE)
    ckpt = load_checkpoint(plain)
    ckpt["recipe"]["data"] = {"mpp": 0.25}
    net = build_classifier(SECTION, load([MODULE], disabled=()))
    cls_ckpt = {"recipe": {"name": "colours", "task": "classify", "classifier": SECTION},
                "model": net.state_dict(), "normalization": net.normalization}
    look = save_checkpoint(folder / "look.pt", attach_second_look(ckpt, cls_ckpt, PARAMS))
    yield {"plain": plain, "look": look}
    mp.undo()
    torch.set_num_threads(threads)


def predict(*args) -> int:
    """``partsup --plugin MODULE predict ARGS --device cpu`` in this process; its exit code."""
    return main(["--plugin", MODULE, "predict", *map(str, args), "--device", "cpu"])


def fields(folder: Path, scale=1) -> dict[str, list]:
    out = {}
    for name, kinds in FIELDS.items():
        img, out[name] = field(kinds, scale)
        save(folder / f"{name}.png", img)
    return out


def test_predict_labels_counts_and_at_round_trip(world, tmp_path, capsys):
    shapes = fields(tmp_path / "in")
    assert predict(tmp_path / "in", "--checkpoint", world["look"], "--out", tmp_path / "pred",
                   "--mpp", "0.25") == 0
    out = capsys.readouterr().out
    for name in FIELDS:
        csv_path = tmp_path / "pred" / f"{name}.csv"
        assert csv_path.read_text().splitlines()[0] == f"x,y,score,area,{CLASS_COLUMNS}"
        assert called(csv_path) == truth(shapes[name])  # rings filtered, discs labelled
        for r in rows(csv_path):
            p = {c: float(r[f"p_{c}"]) for c in ("object", "decoy", "red", "blue")}
            assert p["object"] >= 0.5 and abs(p["red"] + p["blue"] - 1) < 1e-5
            assert r["class"] == max(("red", "blue"), key=p.get)
    doc = json.loads((tmp_path / "pred" / "a.geojson").read_text())
    names = sorted(f["properties"]["classification"]["name"] for f in doc["features"])
    label = names[0].split(" (")[0]  # a plugin's class name (e.g. Mitosis) or "object"
    assert names == [f"{label} (blue)", f"{label} (red)", f"{label} (red)"]
    assert {"p_red", "p_blue", "p_object"} <= set(doc["features"][0]["properties"]["measurements"])
    # per class: the table's columns, the summary line, summary.csv
    assert re.search(r"a\s*│\s*3\s*│\s*2\s*│\s*1\s*│", out), out
    assert "6 detections: 3 red (50.0%), 3 blue (50.0%)" in out
    summary = rows(tmp_path / "pred" / "summary.csv")
    assert [(r["id"], r["count"], r["count_red"], r["count_blue"]) for r in summary] == \
        [("a", "3", "2", "1"), ("b", "3", "1", "2")]
    # --at: predict's own csv (and geojson) read back give the same classes at the same points
    assert predict(tmp_path / "in", "--checkpoint", world["look"], "--at", tmp_path / "pred",
                   "--out", tmp_path / "again", "--mpp", "0.25") == 0
    err = capsys.readouterr().err
    assert "classifying the points in" in err
    for name in FIELDS:
        before = rows(tmp_path / "pred" / f"{name}.csv")
        after = rows(tmp_path / "again" / f"{name}.csv")
        assert [(r["x"], r["y"], r["class"]) for r in after] == \
            [(r["x"], r["y"], r["class"]) for r in before]
        for b, a in zip(before, after):  # score = the verify probability; area 0
            assert float(a["score"]) == pytest.approx(float(b["p_object"]), abs=1e-3)
            assert a["area"] == "0.0"
            assert float(a["p_red"]) == pytest.approx(float(b["p_red"]), abs=1e-3)
    geo = tmp_path / "geo"
    geo.mkdir()
    (geo / "a.geojson").write_text((tmp_path / "pred" / "a.geojson").read_text())
    assert predict(tmp_path / "in" / "a.png", "--checkpoint", world["look"], "--at", geo,
                   "--out", tmp_path / "geo-out", "--mpp", "0.25", "--format", "csv") == 0
    assert called(tmp_path / "geo-out" / "a.csv") == truth(shapes["a"])


def test_labels_survive_resampling(world, tmp_path, capsys):
    # the same fields drawn twice as large, given at 0.125 um/px: resampled to the model's 0.25
    shapes = fields(tmp_path / "in", scale=2)
    assert predict(tmp_path / "in", "--checkpoint", world["look"], "--out", tmp_path / "pred",
                   "--mpp", "0.125", "--format", "csv", "--no-overlay") == 0
    for name in FIELDS:
        got = called(tmp_path / "pred" / f"{name}.csv")
        assert [k for *_, k in got] == [k for *_, k in truth(shapes[name])]
        for (x, y, _), (tx, ty, _) in zip(got, truth(shapes[name])):
            assert abs(x - tx) <= 1 and abs(y - ty) <= 1


def test_outputs_without_a_second_look_are_unchanged(world, tmp_path, capsys):
    fields(tmp_path / "in")
    assert predict(tmp_path / "in", "--checkpoint", world["plain"], "--out", tmp_path / "pred",
                   "--mpp", "0.25", "--format", "csv", "--no-overlay") == 0
    out = capsys.readouterr().out
    assert (tmp_path / "pred" / "a.csv").read_text().splitlines()[0] == "x,y,score,area"
    assert len(rows(tmp_path / "pred" / "a.csv")) == 4  # the ring too: nothing filters it
    header = (tmp_path / "pred" / "summary.csv").read_text().splitlines()[0]
    assert header == ("file,id,status,count,width,height,mpp,area_mm2,per_mm2,seconds,error,"
                      "model_sha256")
    assert "detections:" not in out and "blue" not in out and "│ red" not in out


def test_at_errors_are_one_line(world, tmp_path, capsys):
    fields(tmp_path / "in")
    points = tmp_path / "points"
    points.mkdir()
    (points / "a.csv").write_text("x,y\n40,40\n120,40\n")
    # a checkpoint without a second look: refused before any image
    assert predict(tmp_path / "in", "--checkpoint", world["plain"], "--at", points,
                   "--out", tmp_path / "o1", "--mpp", "0.25") == 2
    err = capsys.readouterr().err
    assert "--at needs a checkpoint with a second look (partsup calibrate --second-look" in err
    assert not (tmp_path / "o1" / "a.csv").exists()
    # b has no points file: it fails naming the expected files; a (x, y only) is classified
    assert predict(tmp_path / "in", "--checkpoint", world["look"], "--at", points,
                   "--out", tmp_path / "o2", "--mpp", "0.25") == 1
    err = capsys.readouterr().err
    assert f"--at {points}: no points for b: expected {points / 'b'}.csv or " \
           f"{points / 'b'}.geojson" in " ".join(err.split())
    assert [(r["x"], r["y"], r["class"]) for r in rows(tmp_path / "o2" / "a.csv")] == \
        [("40.0", "40.0", "red"), ("120.0", "40.0", "blue")]
    summary = rows(tmp_path / "o2" / "summary.csv")
    assert [(r["id"], r["status"], r["count_red"], r["count_blue"]) for r in summary] == \
        [("a", "ok", "1", "1"), ("b", "failed", "", "")]
    # a point outside the image; a missing folder; --at = --out
    (points / "b.csv").write_text("x,y\n40,400\n")
    assert predict(tmp_path / "in" / "b.png", "--checkpoint", world["look"], "--at", points,
                   "--out", tmp_path / "o3", "--mpp", "0.25") == 1
    assert "1 point(s) outside the 160x160 px image, e.g. (40, 400)" in \
        " ".join(capsys.readouterr().err.split())
    assert predict(tmp_path / "in", "--checkpoint", world["look"], "--at", tmp_path / "nope",
                   "--out", tmp_path / "o4") == 2
    assert "no such folder" in capsys.readouterr().err
    assert predict(tmp_path / "in", "--checkpoint", world["look"], "--at", points,
                   "--out", points) == 2
    assert "the points would be overwritten" in capsys.readouterr().err


def test_python_classify_and_predict_one(world, tmp_path):
    from partsup import Detector
    from partsup.prediction import Item, predict_one
    detector = Detector.from_checkpoint(world["look"], "cpu", plugins=[MODULE])
    img, shapes = field(FIELDS["b"])
    found = detector.classify(img, [(x, y) for x, y, _ in shapes], mpp=0.25)
    assert [d.label for d, (*_, k) in zip(found, shapes) if k != "ring"] == \
        [k for *_, k in shapes if k != "ring"]
    assert all(d.label in ("red", "blue") and d.area == 0.0 for d in found)
    assert [d.score >= 0.5 for d in found] == [k != "ring" for *_, k in shapes]
    assert [(d.x, d.y) for d in found] == [(x, y) for x, y, _ in shapes]
    # an image with no detection still gets the class columns (and zero counts)
    save(tmp_path / "empty.png", np.full((64, 64, 3), PINK, np.uint8))
    writers = {n: detector.registries.writers.get(n)() for n in ("csv",)}
    result = predict_one(Item(tmp_path / "empty.png", "empty"), detector, writers,
                         tmp_path / "out", 0.25, overlay=False)
    assert (tmp_path / "out" / "empty.csv").read_text() == f"x,y,score,area,{CLASS_COLUMNS}\n"
    assert dict(result.count.classes) == {"red": 0, "blue": 0}


# -- slides ------------------------------------------------------------------------------------

#: level-0 x, y (0.25 um/px) and kind: two on the 512-px tile seam, a ring
SLIDE_SHAPES = [(300.0, 300.0, "red"), (512.0, 400.0, "blue"), (700.0, 512.0, "red"),
                (900.0, 700.0, "blue"), (400.0, 800.0, "ring"), (1100.0, 300.0, "blue")]


def write_test_slide(path: Path) -> Path:
    from partsup.slides.write import from_array, write_pyramid
    w, h = 1536, 1024
    img = np.full((h, w, 3), 255, np.uint8)
    img[100:950, 100:1400] = PINK
    yy, xx = np.ogrid[:h, :w]
    for cx, cy, kind in SLIDE_SHAPES:
        r2 = (xx - cx) ** 2 + (yy - cy) ** 2
        if kind == "ring":
            img[(r2 <= 196) & (r2 > 81)] = RING
        else:
            img[r2 <= 144] = RED if kind == "red" else BLUE
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_pyramid(path, from_array(img), w, h, 0.25, tile=256)


def test_slide_labels_survive_tiling_and_at_reads_them_back(world, tmp_path, capsys):
    slide = write_test_slide(tmp_path / "slides" / "case.tif")
    assert predict(slide, "--checkpoint", world["look"], "--out", tmp_path / "pred",
                   "--slide-tile", "512", "--format", "csv") == 0
    out = capsys.readouterr().out
    want = truth(SLIDE_SHAPES)
    assert called(tmp_path / "pred" / "case.csv") == want
    assert "case: 5 detections: 2 red (40.0%), 3 blue (60.0%)" in out
    assert rows(tmp_path / "pred" / "summary.csv")[0]["count_blue"] == "3"
    assert predict(slide, "--checkpoint", world["look"], "--at", tmp_path / "pred",
                   "--out", tmp_path / "again", "--format", "csv") == 0
    out = capsys.readouterr().out
    assert "case: 5 given points classified in" in out
    assert called(tmp_path / "again" / "case.csv") == want
    assert (tmp_path / "again" / "case.tissue.png").is_file()
    from partsup.prediction import SlideOutput
    assert "labels" in dir(SlideOutput)


# -- the documented lines ------------------------------------------------------------------------

def section_commands(page: str, heading: str) -> list[list[str]]:
    """The ``partsup ...`` lines of the bash blocks under ``heading`` (to the next ``## ``)."""
    text = (REPO / page).read_text()
    part = text.split(heading, 1)[1].split("\n## ", 1)[0]
    out = []
    for block in re.findall(r"```bash\n(.*?)```", part, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("partsup "):
                out.append(shlex.split(line)[1:])
    return out


def test_documented_at_lines_run(world, tmp_path, monkeypatch, capsys):
    cmds = section_commands("docs/predict.md", "## Classifying given points")
    assert [c[0] for c in cmds] == ["predict", "predict"] and "--at" in cmds[1]
    monkeypatch.chdir(tmp_path)
    fields(tmp_path / "fields")
    (tmp_path / "runs" / "look").mkdir(parents=True)
    (tmp_path / "runs" / "look" / "best.pt").write_bytes(world["look"].read_bytes())
    for args in cmds:
        assert main(["--plugin", MODULE, *args, "--device", "cpu"]) == 0, args
    out = capsys.readouterr().out
    assert "6 detections: 3 red (50.0%), 3 blue (50.0%)" in out
    at = cmds[1][cmds[1].index("--out") + 1]
    first = cmds[0][cmds[0].index("--out") + 1]
    assert called(tmp_path / at / "a.csv") == called(tmp_path / first / "a.csv")


def test_python_api_page_classify_block_runs(world, tmp_path, monkeypatch, capsys):
    text = (REPO / "docs" / "python-api.md").read_text()
    block = next(code for code in re.findall(r"```python\n(.*?)```", text, re.S)
                 if ".classify(" in code)
    monkeypatch.chdir(tmp_path)
    img, _ = field(FIELDS["a"])
    save(tmp_path / "my_hpfs" / "field.png", img[:96, :96])
    ckpt = load_checkpoint(world["look"])
    ckpt["recipe"]["plugins"] = [MODULE]  # the page loads no plugin of its own
    save_checkpoint(tmp_path / "runs" / "look" / "best.pt", ckpt)
    exec(compile(block, "python-api.md", "exec"), {"__name__": "__doc_block__"})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("(48.0, 48.0): ") and out[1].startswith("(20.5, 70.0): ")
    assert "'p_red'" not in out[0] and "'red'" in out[0] and "'blue'" in out[0]
