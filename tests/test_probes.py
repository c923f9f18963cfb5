"""Bad inputs and faults, one row each (issue 25, items 12-15): the setup, the command or call, the
one-line error or the correct result expected, and that nothing outside partsup's own files is
touched (every file of the probe's folder, a ``victim.txt`` beside the output folder included, is
the same before and after, except inside the folder partsup writes to).

A row's ``call`` returns an :class:`Outcome`: a command line's exit code and what it printed
(``cli``), or a Python call's value or the one-line :class:`PartsupError` it raised (``api``).
The dark-disk model (helpers.py) does the detecting: dark disks on pink are found.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from partsup.errors import PartsupError

from helpers import DARK, PINK, he_like, make_slide, save, tiny_recipe, write_dark_checkpoint

#: refusals are one line that names the file and the rule: a line that would wrap is a test failure
WIDE = "1000"


@dataclass
class World:
    """The probe's folder (``root``), the dark-disk plugin and checkpoint, and pytest's tools."""

    root: Path
    plugin: str
    checkpoint: Path
    capsys: Any
    monkeypatch: Any

    @property
    def out(self) -> Path:
        """The output folder partsup writes to in a probe (its files are partsup's)."""
        return self.root / "out"


@dataclass
class Outcome:
    """What a probe's call gave: exit code (a Python call: 0, or 2 for a PartsupError), the text
    printed or the error's message (whitespace runs made one space) and a Python call's value."""

    rc: int
    text: str
    lines: list[str] = field(default_factory=list)
    value: Any = None


def cli(w: World, *args: Any, plugin: bool = True) -> Outcome:
    """``partsup [--plugin DARK] ARGS...`` in this process."""
    from partsup.cli.main import main
    w.capsys.readouterr()
    rc = main([*(["--plugin", w.plugin] if plugin else []), *map(str, args)])
    got = w.capsys.readouterr()
    printed = got.out + got.err
    return Outcome(rc, " ".join(printed.split()), printed.splitlines())


def api(fn: Callable[[], Any]) -> Outcome:
    """``fn()``: its value (rc 0), or the PartsupError it raised (rc 2, its message)."""
    try:
        value = fn()
    except PartsupError as exc:
        assert "\n" not in str(exc).strip(), f"not one line: {exc}"
        return Outcome(2, str(exc), [str(exc)])
    return Outcome(0, "", [], value)


def detector(w: World, checkpoint: Path | None = None) -> Any:
    from partsup import Detector
    return Detector.from_checkpoint(checkpoint or w.checkpoint, "cpu", plugins=[w.plugin])


def images(w: World, *names: str, folder: str = "in") -> Path:
    """Small H&E-like images (one dark disk each) in ``root/folder``."""
    for name in names:
        save(w.root / folder / name, he_like(160, 200, centres=[(80.0, 70.0)]))
    return w.root / folder


def predict(w: World, *args: Any) -> Outcome:
    return cli(w, "predict", *args, "--device", "cpu", "--checkpoint", w.checkpoint)


def checkpoint_with(w: World, name: str, change: Callable[[dict], None]) -> Path:
    """A copy of the dark checkpoint changed by ``change(ckpt)``."""
    from partsup.checkpoint.files import load_checkpoint, save_checkpoint
    ckpt = load_checkpoint(w.checkpoint)
    change(ckpt)
    return save_checkpoint(w.root / name, ckpt)


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


# -- item 12: predict never writes through a link ------------------------------------------------

def links_to_victims(w: World) -> None:
    """A run's outputs, then its csv and summary.csv replaced by links to files outside --out."""
    images(w, "a.png")
    assert predict(w, w.root / "in", "--out", w.out).rc == 0
    (w.root / "victim2.txt").write_text("mine too\n")
    for name, victim in (("a.csv", "victim.txt"), ("summary.csv", "victim2.txt")):
        (w.out / name).unlink()
        (w.out / name).symlink_to(Path("..") / victim)


def outputs_are_files(w: World, o: Outcome) -> None:
    for name in ("a.csv", "summary.csv"):
        assert (w.out / name).is_file() and not (w.out / name).is_symlink()
    assert rows_of(w.out / "a.csv")[0]["x"]


def dangling_link(w: World) -> None:
    images(w, "a.png")
    w.out.mkdir()
    (w.out / "a.csv").symlink_to(Path("..") / "created.txt")  # points nowhere (yet)


def slide_links_to_victims(w: World) -> None:
    """A slide's outputs, then the plugin's heatmap and hotspot replaced by links to files
    outside --out (the mitosis plugin writes them through partsup.plugin.replacing)."""
    make_slide(w.root / "case.tif", scale=0.5, mpp=0.5, tile=128)
    assert predict(w, w.root / "case.tif", "--out", w.out, "--no-overlay").rc == 0
    for name, victim in (("case.heatmap.png", "victim.txt"), ("case.hotspot.geojson", "v2.txt")):
        (w.root / victim).write_text("mine\n")
        (w.out / name).unlink()
        (w.out / name).symlink_to(Path("..") / victim)


def slide_outputs_are_files(w: World, o: Outcome) -> None:
    for name in ("case.heatmap.png", "case.hotspot.geojson"):
        assert (w.out / name).is_file() and not (w.out / name).is_symlink()


# -- item 14: silently wrong ---------------------------------------------------------------------

def symlinked_sub_folders(w: World) -> None:
    images(w, "a.png")
    images(w, "b.png", folder="elsewhere/sub")
    (w.root / "in" / "linked").symlink_to(w.root / "elsewhere", target_is_directory=True)
    (w.root / "in" / "loop").symlink_to(w.root / "in", target_is_directory=True)


def each_image_once(w: World, o: Outcome) -> None:
    assert sorted(r["id"] for r in rows_of(w.out / "summary.csv")) == ["a", "linked/sub/b"]
    assert (w.out / "linked" / "sub" / "b.csv").is_file()


def onnx_world(w: World, edit: Callable[[dict], None] | None = None) -> Path:
    """The dark model exported to ``m.onnx`` (and a second copy ``other.onnx``); the sidecar
    changed by ``edit``."""
    pytest.importorskip("onnx", reason="onnx not installed (pip install 'partsup[onnx]')")
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    images(w, "a.png")
    model = w.root / "m.onnx"
    assert cli(w, "export", w.checkpoint, "--out", model).rc == 0
    shutil.copy(model, w.root / "other.onnx")
    if edit is not None:
        side = model.with_name(model.name + ".json")
        doc = json.loads(side.read_text())
        edit(doc)
        side.write_text(json.dumps(doc))
    return model


def onnx_predict(w: World) -> Outcome:
    return cli(w, "predict", w.root / "in", "--runtime", "onnx", "--model", w.root / "m.onnx",
               "--mpp", "0.25", "--out", w.out)


IMPORTED = "imported.txt"


def sidecar_plugin(w: World) -> None:
    (w.root / "pkg" / "partsup_probe_side_effect.py").write_text(
        f"from pathlib import Path\nPath({str(w.root / IMPORTED)!r}).write_text('ran')\n")
    onnx_world(w, lambda d: d.update(plugins=["partsup_probe_side_effect"]))


def not_imported(w: World, o: Outcome) -> None:
    assert not (w.root / IMPORTED).exists()


def roi(w: World, *polygon: tuple[float, float]) -> None:
    make_slide(w.root / "case.tif", scale=0.5, mpp=0.5, tile=128)  # 1024 x 768 px
    ring = [list(p) for p in polygon]
    (w.root / "roi.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring + ring[:1]]}}]}))


def roi_predict(w: World) -> Outcome:
    return predict(w, w.root / "case.tif", "--roi", w.root / "roi.geojson", "--slide-tile",
                   "256", "--format", "csv", "--no-overlay", "--out", w.out)


def clipped_roi_counts(w: World, o: Outcome) -> None:
    got = np.array([[float(r["x"]), float(r["y"])] for r in rows_of(w.out / "case.csv")])
    # the slide's disks inside the ROI's part on the slide (x < 350, y 100..350 at this scale)
    assert len(got) == 2 and sorted(np.round(got[:, 0] / 50)) == [3.0, 6.0], got


def seam_slide(w: World, model_mpp: float) -> None:
    """A 0.25 um/px slide with dark disks centred on the tile seams of a model at ``model_mpp``
    (tiles resampled from the slide), and that model (recipe data.mpp)."""
    from partsup.slides.write import from_array, write_pyramid
    r = 0.25 / model_mpp
    W, H = 1100, 900
    xs = [k * 256 / r for k in range(1, 8) if 150 < k * 256 / r < W - 150]
    ys = [k * 256 / r for k in range(1, 8) if 150 < k * 256 / r < H - 150]
    centres = [(x + dx, 700.0) for x, dx in zip(xs, [0, 0.3, 0.5, -0.5])] + \
        [(700.0 + dy, y) for y, dy in zip(ys, [0, 0.5, -0.5, 0.25])]
    img = np.full((H, W, 3), 255, np.uint8)
    img[100:H - 100, 100:W - 100] = PINK
    yy, xx = np.ogrid[:H, :W]
    for cx, cy in centres:
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= 100] = DARK
    write_pyramid(w.root / "seams.tif", from_array(img), W, H, 0.25, tile=256)
    checkpoint_with(w, "model.pt", lambda c: c["recipe"].setdefault("data", {}).update(
        mpp=model_mpp))
    (w.root / "centres.json").write_text(json.dumps(centres))


def seam_predict(w: World) -> Outcome:
    return cli(w, "predict", w.root / "seams.tif", "--checkpoint", w.root / "model.pt",
               "--slide-tile", "256", "--format", "csv", "--no-overlay", "--device", "cpu",
               "--out", w.out)


def each_disk_once(w: World, o: Outcome) -> None:
    centres = np.array(json.loads((w.root / "centres.json").read_text()))
    got = np.array([[float(r["x"]), float(r["y"])] for r in rows_of(w.out / "seams.csv")])
    assert len(got) == len(centres), (len(got), len(centres))
    for c in centres:
        assert np.hypot(*(got - c).T).min() < 2.0, c


def small_disks(w: World) -> None:
    """Disks of radius 6 px at 0.5 um/px (12 px at the model's 0.25: big enough to count)."""
    save(w.root / "in" / "half.png",
         he_like(240, 320, centres=[(60.0, 60.0), (160.0, 120.0), (260.0, 190.0)], radius=6))


def detect_half(w: World) -> Outcome:
    from PIL import Image
    rgb = np.asarray(Image.open(w.root / "in" / "half.png").convert("RGB"))
    return api(lambda: detector(w).detect(rgb, mpp=0.5))


def as_predict_finds(w: World, o: Outcome) -> None:
    assert predict(w, w.root / "in", "--mpp", "0.5", "--format", "csv", "--no-overlay",
                   "--out", w.out).rc == 0
    want = [(float(r["x"]), float(r["y"])) for r in rows_of(w.out / "half.csv")]
    got = [(round(d.x, 2), round(d.y, 2)) for d in o.value]
    assert got == want and {(60.0, 60.0), (160.0, 120.0), (260.0, 190.0)} <= set(got)


def half_slide(w: World) -> None:
    make_slide(w.root / "half.tif", scale=0.5, mpp=0.5, tile=128)


# -- item 15: unexpected or misleading -----------------------------------------------------------

def interrupt_at(w: World, n: int) -> dict[str, int]:
    """The detector raises KeyboardInterrupt (Ctrl-C) at its ``n``-th call; returns the counter
    (set its ``"at"`` to 0 to stop interrupting)."""
    from partsup.inference.detector import Detector
    real, state = Detector.detect, {"calls": 0, "at": n}

    def detect(self: Any, *a: Any, **k: Any) -> Any:
        state["calls"] += 1
        if state["calls"] == state["at"]:
            raise KeyboardInterrupt
        return real(self, *a, **k)
    w.monkeypatch.setattr(Detector, "detect", detect)
    return state


def ctrl_c_then_rerun(w: World) -> Outcome:
    state = interrupt_at(w, 2)
    first = predict(w, w.root / "in", "--out", w.out)
    assert first.rc == 130 and (w.out / "a.csv").is_file() and not (w.out / "b.csv").exists()
    state["at"] = 0
    return predict(w, w.root / "in", "--out", w.out)


def ctrl_c_in_slide(w: World) -> Outcome:
    interrupt_at(w, 3)
    return predict(w, w.root / "case.tif", "--slide-tile", "256", "--format", "csv",
                   "--no-overlay", "--out", w.out)


def marked_interrupted(w: World, o: Outcome) -> None:
    (row,) = rows_of(w.out / "summary.csv")
    assert row["status"] == "interrupted" and int(row["count"]) >= 0


def nan_resume(w: World) -> Outcome:
    from partsup.checkpoint.files import load_checkpoint, save_checkpoint
    from partsup.manager import load
    from partsup.recipe import load_recipe
    from partsup.training.loop import fit
    regs = load(["tiny_plugin"], disabled=())

    def recipe(iterations: int) -> dict:
        return load_recipe(data=tiny_recipe({"train.iterations": iterations, "train.val_every": 0,
                                             "train.checkpoint_every": 1}), registries=regs)
    fit(recipe(2), regs, w.root / "run")
    newest = w.root / "run" / "checkpoints" / "iter-00000002.pt"
    ckpt = load_checkpoint(newest)
    ckpt["model"] = {k: v.float().fill_(float("nan")) if v.is_floating_point() else v
                     for k, v in ckpt["model"].items()}
    save_checkpoint(newest, ckpt)
    return api(lambda: fit(recipe(3), regs, w.root / "run", resume=True))


def synth_file(w: World) -> Outcome:
    return cli(w, "synth", w.root / "afile", plugin=False)


# -- not fixed here (another change): evaluate and calibrate -------------------------------------

def unscored_detections(w: World) -> Outcome:
    from helpers import run_cli, toy_registries
    regs = toy_registries()
    (w.root / "data").mkdir()
    det = w.root / "det" / "case3"
    det.mkdir(parents=True)
    (det / "d.csv").write_text("x,y\n25,30\n75,60\n50,20\n")
    (det / "e.csv").write_text("x,y\n60,25\n")
    (det / "f.csv").write_text("x,y\n")
    w.capsys.readouterr()
    rc = run_cli(regs, ["evaluate", "--dataset", "toy", "--data-root", str(w.root / "data"),
                        "--split", "test", "--detections", str(w.root / "det"),
                        "--out", str(w.out)])
    printed = w.capsys.readouterr()
    return Outcome(rc, " ".join((printed.out + printed.err).split()), [])


def no_ap_without_scores(w: World, o: Outcome) -> None:
    assert json.loads((w.out / "metrics.json").read_text())["totals"]["ap"] is None


def calibrate_while_training(w: World) -> Outcome:
    from helpers import make_checkpoint, run_cli, toy_registries
    from partsup.training.rundir import lock_run_folder
    regs = toy_registries()
    (w.root / "data").mkdir()
    ckpt = make_checkpoint(w.root / "run" / "best.pt", regs, w.root / "data")
    before = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    w.capsys.readouterr()
    with lock_run_folder(w.root / "run"):
        try:
            rc = run_cli(regs, ["calibrate", "--checkpoint", str(ckpt), "--dry-run",
                                "--out", str(w.out)])
            message = ""
        except PartsupError as exc:
            rc, message = 2, str(exc)
    printed = w.capsys.readouterr()
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == before
    return Outcome(rc, " ".join((printed.out + printed.err + message).split()), [])


# -- the table -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Probe:
    """One probe: ``setup(w)`` builds its inputs; ``call(w)`` runs the command or the call; the
    outcome must have exit code ``rc`` and, when given, match ``message`` (a regex over the one
    line printed or raised); ``check(w, outcome)`` checks a correct result. ``writes``: folders
    (relative to the probe's folder) partsup may write besides ``out``."""

    id: str
    setup: Callable[[World], Any] | None
    call: Callable[[World], Outcome]
    rc: int
    message: str = ""
    check: Callable[[World, Outcome], None] | None = None
    writes: tuple[str, ...] = ()
    marks: tuple[Any, ...] = ()


MPP_RULE = r"mpp must be (a number of um/px )?between 0\.01 and 100"
SIDECAR = r"m\.onnx\.json"

PROBES = [
    # 12: data loss
    Probe("predict-replaces-owned-links", links_to_victims,
          lambda w: predict(w, w.root / "in", "--out", w.out), 0, check=outputs_are_files),
    Probe("predict-replaces-a-plugins-owned-links", slide_links_to_victims,
          lambda w: predict(w, w.root / "case.tif", "--out", w.out, "--no-overlay"), 0,
          check=slide_outputs_are_files),
    Probe("predict-refuses-a-planted-link", dangling_link,
          lambda w: predict(w, w.root / "in", "--out", w.out), 2,
          r"error: .*out/a\.csv is a symbolic link and was not written by partsup"),
    # 14: silently wrong
    Probe("input-named-summary", lambda w: images(w, "a.png", "summary.tif"),
          lambda w: predict(w, w.root / "in", "--out", w.out), 2,
          r"error: .*in/summary\.tif: its output .*out/summary\.csv would be replaced by the "
          r"run's summary table"),
    Probe("recursive-follows-linked-folders-once", symlinked_sub_folders,
          lambda w: predict(w, w.root / "in", "--recursive", "--out", w.out), 0,
          check=each_image_once),
    Probe("onnx-sidecar-names-another-model",
          lambda w: onnx_world(w, lambda d: d.update(model="other.onnx")), onnx_predict, 2,
          rf"error: .*{SIDECAR} belongs to the model other\.onnx, not to m\.onnx"),
    Probe("onnx-sidecar-plugins-not-imported", sidecar_plugin, onnx_predict, 2,
          rf"error: .*{SIDECAR}: the model needs plugin\(s\) partsup_probe_side_effect, which "
          r"are not loaded; a sidecar never imports code", check=not_imported),
    Probe("onnx-sidecar-without-outputs", lambda w: onnx_world(w, lambda d: d.update(outputs=[])),
          onnx_predict, 2, rf"error: .*{SIDECAR}: 'outputs' must list one or two output names"),
    Probe("onnx-sidecar-of-a-two-branch-model",
          lambda w: onnx_world(w, lambda d: d.update(outputs=["p_weak", "p_strong"])),
          onnx_predict, 2, r"error: .*m\.onnx: the model takes \['image'\] and gives 1 "
          r"output\(s\), but its sidecar says \['image'\] and 2"),
    Probe("roi-outside-the-slide", lambda w: roi(w, (5000, 100), (6000, 100), (6000, 900)),
          roi_predict, 1, r"error: .*case\.tif: --roi .*roi\.geojson: polygon 1 \(x 5000\.\.6000, "
          r"y 100\.\.900\) lies wholly outside the slide \(0\.\.1024 x 0\.\.768"),
    Probe("roi-at-negative-coordinates", lambda w: roi(w, (-900, -500), (-100, -500), (-100, -50)),
          roi_predict, 1, r"error: .*case\.tif: --roi .*polygon 1 .* lies wholly outside"),
    Probe("roi-degenerate", lambda w: roi(w, (100, 100), (200, 200), (300, 300)), roi_predict, 2,
          r"error: --roi .*roi\.geojson: polygon 1 is degenerate \(area 0"),
    Probe("roi-nan-vertex", lambda w: roi(w, (100, 100), (float("nan"), 200), (300, 100)),
          roi_predict, 2, r"error: --roi .*roi\.geojson: polygon 1 has a vertex that is not a "
          r"finite number"),
    Probe("roi-partly-outside-is-clipped",
          lambda w: roi(w, (-400, 100), (350, 100), (350, 350), (-400, 350)), roi_predict, 0,
          check=clipped_roi_counts),
    Probe("slide-seams-resampled-down", lambda w: seam_slide(w, 0.26), seam_predict, 0,
          check=each_disk_once),
    Probe("slide-seams-resampled-up", lambda w: seam_slide(w, 0.24), seam_predict, 0,
          check=each_disk_once),
    *[Probe(f"detect-mpp-{name}", None,
            lambda w, v=value: api(lambda: detector(w).detect(he_like(64, 64, []), mpp=v)), 2,
            rf"^detect: {MPP_RULE}")
      for name, value in [("0", 0), ("negative", -0.25), ("nan", float("nan")),
                          ("inf", float("inf")), ("none", None), ("string", "0.25"),
                          ("1e6", 1e6)]],
    Probe("detect-resamples-like-predict", small_disks, detect_half, 0, check=as_predict_finds),
    *[Probe(f"predict-slide-mpp-{name}", half_slide,
            lambda w, v=value: api(lambda: detector(w).predict_slide(w.root / "half.tif", mpp=v)),
            2, rf"^predict_slide: {MPP_RULE}")
      for name, value in [("0", 0.0), ("negative", -0.5), ("nan", float("nan")),
                          ("inf", float("inf"))]],
    # 15: unexpected or misleading
    Probe("out-is-the-input-folder", lambda w: images(w, "a.png", folder="out"),
          lambda w: predict(w, w.out, "--out", w.out), 2,
          r"error: --out .*out is the input folder .*out: predict never reads images inside its "
          r"output folder"),
    Probe("out-is-the-dataset-root", lambda w: images(w, "a.png", folder="out/images"),
          lambda w: predict(w, w.out / "images", "--out", w.out), 2,
          r"error: --out .*out holds the input folder .*out/images"),
    Probe("ctrl-c-mid-folder-then-rerun", lambda w: images(w, "a.png", "b.png", "c.png"),
          ctrl_c_then_rerun, 0,
          check=lambda w, o: [rows_of(w.out / f"{n}.csv") for n in "abc"]),
    Probe("ctrl-c-mid-slide-summary",
          lambda w: make_slide(w.root / "case.tif", scale=0.5, mpp=0.5, tile=128),
          ctrl_c_in_slide, 130, "interrupted",
          check=marked_interrupted),
    Probe("resume-from-nan-weights", None, nan_resume, 2,
          r"^--resume: .*iter-00000002\.pt is not a good checkpoint: its weights are not finite "
          r".*move it out of .*checkpoints to resume from iter-00000001\.pt", writes=("run",),
          marks=(pytest.mark.slow,)),
    Probe("predict-with-nan-weights",
          lambda w: (images(w, "a.png"), checkpoint_with(w, "nan.pt", lambda c: c["model"].update(
              {k: torch.full_like(v, float("nan")) for k, v in c["model"].items()}))),
          lambda w: cli(w, "predict", w.root / "in", "--checkpoint", w.root / "nan.pt",
                        "--mpp", "0.25", "--out", w.out), 2,
          r"error: .*nan\.pt: the weights are not finite \(NaN/inf in 2 tensor"),
    Probe("predict-with-input-std-0",
          lambda w: (images(w, "a.png"), checkpoint_with(w, "std0.pt", lambda c: c[
              "normalization"].update(std=[0.0, 0.0, 0.0]))),
          lambda w: cli(w, "predict", w.root / "in", "--checkpoint", w.root / "std0.pt",
                        "--mpp", "0.25", "--out", w.out), 2,
          r"error: .*std0\.pt: the input normalisation needs mean and std .* std > 0"),
    Probe("synth-into-a-file", lambda w: (w.root / "afile").write_text("mine\n"), synth_file, 2,
          r"error: synth: .*afile is a file, not a folder"),
    *[Probe(f"detect-{name}", None, lambda w, a=array: api(lambda: detector(w).detect(a, 0.25)),
            2, rf"^detect: expected a non-empty \(H, W, 3\) uint8 RGB image, got shape {shape}")
      for name, array, shape in [
          ("empty", np.zeros((0, 0, 3), np.uint8), r"\(0, 0, 3\)"),
          ("no-rows", np.zeros((0, 40, 3), np.uint8), r"\(0, 40, 3\)"),
          ("grey", np.zeros((40, 40), np.uint8), r"\(40, 40\)")]],
    Probe("evaluate-no-ap-for-unscored-csv", None, unscored_detections, 0, "carry no scores",
          check=no_ap_without_scores, writes=("data", "det")),
    Probe("calibrate-refuses-a-run-in-training", None, calibrate_while_training, 2,
          r"train(\.lock|ing)", writes=("run", "data")),
]


def snapshot(root: Path, skip: list[Path]) -> dict[str, tuple]:
    """Every entry under ``root`` but ``skip`` and caches: links (target), files (content hash,
    mode), folders."""
    found: dict[str, tuple] = {}
    for p in sorted(root.rglob("*")):
        if "__pycache__" in p.parts or any(p == s or s in p.parents for s in skip):
            continue
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            found[rel] = ("link", os.readlink(p))
        elif p.is_file():
            found[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
        else:
            found[rel] = ("folder",)
    return found


@pytest.mark.parametrize("probe", [pytest.param(p, id=p.id, marks=p.marks) for p in PROBES])
def test_probe(probe: Probe, tmp_path, plugin, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", WIDE)
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))  # a probe's own modules (sidecar plugins)
    w = World(tmp_path, plugin, write_dark_checkpoint(tmp_path / "dark.pt", plugin), capsys,
              monkeypatch)
    (tmp_path / "victim.txt").write_text("a file of the user's, outside --out\n")
    if probe.setup is not None:
        probe.setup(w)
    skip = [w.out, *(tmp_path / p for p in probe.writes)] if probe.rc != 2 else \
        [tmp_path / p for p in probe.writes]
    before = snapshot(tmp_path, skip)
    got = probe.call(w)
    assert got.rc == probe.rc, got.text
    assert "Traceback" not in got.text
    if probe.message:
        hits = [line for line in got.lines if re.search(probe.message, line)] if got.lines \
            else []
        assert hits or re.search(probe.message, got.text), got.text
        if got.lines:
            assert hits, f"not on one line: {got.text}"
    if probe.check is not None:
        probe.check(w, got)
    assert snapshot(tmp_path, skip) == before
