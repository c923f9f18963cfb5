"""Calibration: the sweep over w, s1, a1 on cached maps, and ``partsup calibrate`` end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest

from partsup.evaluation.calibration import CachedMaps, MapCache, sweep
from partsup.checkpoint.files import load_checkpoint
from partsup.inference.blobs import detect_from_maps
from partsup.inference.detector import DetectParams
from partsup.errors import RecipeError
from partsup.evaluation.matching import Counts, match

from helpers import make_checkpoint, run_cli, toy_registries


def maps_with(shape, weak_blobs, strong_blobs):
    """Maps with square blobs ``(x, y, half, value)``."""
    out = []
    for blobs in (weak_blobs, strong_blobs):
        m = np.full(shape, 0.01, np.float32)
        for x, y, h, v in blobs:
            m[y - h: y + h + 1, x - h: x + h + 1] = v
        out.append(m)
    return out


def test_sweep_picks_the_best_grid_point_and_agrees_with_the_detector(registries, tmp_path):
    # weak sees both mitoses and a mimic; strong sees only one mitosis, faintly
    w1, s1 = maps_with((80, 80), [(20, 20, 4, 0.9), (60, 60, 4, 0.9), (20, 60, 2, 0.8)],
                       [(20, 20, 4, 0.9)])
    images = [MapCache(tmp_path).add("a", w1, s1, [[20, 20], [60, 60]], 0.25)]
    base = DetectParams(sigma=0.0)
    proto = registries.protocols.build("pixels", radius_px=5)
    res = sweep(images, base, registries, proto, w=[0, 0.5, 1], s1=[0.3, 0.5],
                a1=[0, 30])
    assert len(res.rows) == 3 * 2 * 2 and [r.w for r in res.per_w] == [0.0, 0.5, 1.0]
    assert res.best.counts.f1 == max(r.counts.f1 for r in res.rows) == 1.0
    # w = 0: one mitosis only; w = 1 with a1 = 30 drops the 25-px mimic and keeps the 81-px ones
    assert res.per_w[0].counts == Counts(1, 0, 1)
    assert (res.best.w, res.best.s1, res.best.a1) == (0.5, 0.3, 30.0)
    # every grid row equals what the detector itself produces with those parameters
    for row in res.rows:
        p = DetectParams(sigma=0.0, w=row.w, s1=row.s1, a1=row.a1)
        dets = detect_from_maps(w1, s1, p, 0.25, registries)
        got = match([[20, 20], [60, 60]], [[d.x, d.y] for d in dets], radius_px=5).counts
        assert got == row.counts, row
    assert isinstance(images[0].p_weak, np.memmap)  # maps are cached on disk


def test_sweep_weak_only_and_empty_grid(registries):
    weak, _ = maps_with((40, 40), [(20, 20, 3, 0.9)], [])
    im = CachedMaps("a", weak, None, np.array([[20.0, 20.0]]), 0.25)
    proto = registries.protocols.build("pixels", radius_px=5)
    res = sweep([im], DetectParams(sigma=0.0, w=0.7), registries, proto, [0, 1], [0.5], [0])
    assert res.weak_only and [r.w for r in res.rows] == [0.7]
    assert res.best.counts == Counts(1, 0, 0)
    with pytest.raises(ValueError, match="empty"):
        sweep([im], DetectParams(), registries, proto, [], [0.5], [0])


def test_calibrate_command_stores_params_and_evaluate_reproduces_them(tmp_path):
    regs = toy_registries()
    root = tmp_path / "data"
    root.mkdir()
    ckpt = make_checkpoint(tmp_path / "run" / "model.pt", regs, root)
    assert load_checkpoint(ckpt)["detect"] is None
    assert run_cli(regs, ["calibrate", "--checkpoint", str(ckpt)]) == 0  # dataset from data.val
    out = tmp_path / "run" / "calibration"
    cal = json.loads((out / "calibration.json").read_text())
    assert (out / "f1_vs_w.png").stat().st_size > 1000
    assert cal["dataset"] == "toy" and cal["split"] == "val" and cal["images"] == 3
    assert len(cal["rows"]) == 27 and [r["w"] for r in cal["per_w"]] == [0.0, 0.5, 1.0]
    best = cal["best"]
    assert best["f1"] == max(r["f1"] for r in cal["rows"])
    # the weak branch alone also fires on the mimics (dark blue), so w = 1 is worse
    assert cal["per_w"][2]["f1"] < best["f1"] == 1.0
    stored = load_checkpoint(ckpt)["detect"]
    assert {k: stored[k] for k in ("w", "s1", "a1")} == {k: best[k] for k in ("w", "s1", "a1")}
    assert stored["sigma"] == 1.0 and stored["area_unit"] == "px"
    # evaluate on the same split with the stored parameters gives the calibration's counts
    run_cli(regs, ["evaluate", "--dataset", "toy", "--split", "val", "--checkpoint", str(ckpt),
                   "--out", str(tmp_path / "ev"), "--no-overlays"])
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert {k: m["totals"][k] for k in ("tp", "fp", "fn")} == \
        {k: best[k] for k in ("tp", "fp", "fn")}
    assert m["calibrated"] is True


def test_calibrate_dry_run_and_grid_options(tmp_path):
    regs = toy_registries()
    root = tmp_path / "data"
    root.mkdir()
    ckpt = make_checkpoint(tmp_path / "m.pt", regs, root)
    assert run_cli(regs, ["calibrate", "--checkpoint", str(ckpt), "--dataset", "toy",
                          "--data-root", str(root), "--w", "1", "--s1", "0.5,0.9", "--a1", "0",
                          "--out", str(tmp_path / "cal"), "--dry-run"]) == 0
    cal = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert [(r["w"], r["s1"], r["a1"]) for r in cal["rows"]] == [(1.0, 0.5, 0.0), (1.0, 0.9, 0.0)]
    assert load_checkpoint(ckpt)["detect"] is None
    with pytest.raises(RecipeError, match="--s1"):
        run_cli(regs, ["calibrate", "--checkpoint", str(ckpt), "--s1", "a,b"])


def test_sweep_over_foreground_rules_prefers_a_fixed_threshold_on_empty_fields(registries,
                                                                               tmp_path):
    # three fields: two without any object (faint nuclei only), one with two objects
    def field(objects):
        m = np.full((60, 60), 0.02, np.float32)
        for x, y, v in [(10, 10, 0.35), (50, 10, 0.35), (10, 50, 0.35)] + objects:
            m[y - 3: y + 4, x - 3: x + 4] = v
        return m
    cache = MapCache(tmp_path)
    images = [cache.add("e1", field([]), None, np.zeros((0, 2)), 0.25),
              cache.add("e2", field([]), None, np.zeros((0, 2)), 0.25),
              cache.add("f", field([(30, 30, 0.9), (50, 50, 0.8)]), None,
                        np.array([[30.0, 30.0], [50.0, 50.0]]), 0.25)]
    proto = registries.protocols.build("pixels", radius_px=5)
    res = sweep(images, DetectParams(sigma=0.0, w=1.0), registries, proto, [1.0], [0.3],
                [0], threshold=["otsu", 0.5])
    by_rule = {r.threshold: r.counts for r in res.rows}
    assert by_rule["otsu"] == Counts(2, 9, 0)  # Otsu keeps every faint nucleus, even on empty fields
    assert by_rule[0.5] == Counts(2, 0, 0)
    assert res.best.threshold == 0.5 and res.params(DetectParams()).threshold == 0.5
    assert res.as_dict()["best"]["threshold"] == 0.5
    with pytest.raises(RecipeError, match="calibrate.threshold"):
        sweep(images, DetectParams(), registries, proto, [1.0], [0.3], [0], threshold=[2.0])


def test_views_are_weighed_equally_not_pooled(registries, tmp_path):
    """A sparse view (ten fields, one object and two 0.55 look-alikes each) wants s1 = 0.6; a
    crowded view (one field, four objects at 0.55 and one at 0.9) wants s1 = 0.5. Pooled
    counts would let the sparse view's many fields decide (s1 = 0.6: F1 0.846 vs 0.6);
    :func:`combine` maximises the mean of the two views' F1 (0.75 at 0.5 vs 0.667 at 0.6)."""
    from partsup.evaluation.calibration import combine

    def field(blobs):
        m = np.full((60, 60), 0.02, np.float32)
        for x, y, v in blobs:
            m[y - 3: y + 4, x - 3: x + 4] = v
        return m
    cache = MapCache(tmp_path)
    sparse = [cache.add(f"s{k}", field([(30, 30, 0.9), (10, 10, 0.55), (50, 50, 0.55)]), None,
                        np.array([[30.0, 30.0]]), 0.25) for k in range(10)]
    pts = [(10, 10), (50, 10), (10, 50), (50, 50)]
    crowded = [cache.add("c", field([(30, 30, 0.9)] + [(x, y, 0.55) for x, y in pts]), None,
                         np.array([[30.0, 30.0]] + pts, np.float64), 0.25)]
    proto = registries.protocols.build("pixels", radius_px=5)
    p = DetectParams(sigma=0.0, w=1.0)
    one = [sweep(v, p, registries, proto, [1.0], [0.5, 0.6], [0], threshold=[0.3])
           for v in (sparse, crowded)]
    pooled = sweep(sparse + crowded, p, registries, proto, [1.0], [0.5, 0.6], [0],
                   threshold=[0.3])
    assert pooled.best.s1 == 0.6 and pooled.best.counts.f1 == pytest.approx(22 / 26)
    res = combine(one)
    assert res.best.s1 == 0.5 and res.best.view_f1 == pytest.approx((0.5, 1.0))
    assert res.best.score == pytest.approx(0.75) and res.best.counts == Counts(15, 20, 0)
    assert res.as_dict()["best"]["mean_f1"] == pytest.approx(0.75)
    assert combine(one[:1]) is one[0]
    other = sweep(crowded, p, registries, proto, [1.0], [0.5], [0], threshold=[0.3])
    with pytest.raises(ValueError, match="different grids"):
        combine([one[0], other])


def test_calibrate_command_with_a_second_view(tmp_path):
    regs = toy_registries()
    root = tmp_path / "data"
    root.mkdir()
    ckpt = make_checkpoint(tmp_path / "m.pt", regs, root)
    assert run_cli(regs, ["calibrate", "--checkpoint", str(ckpt), "--view",
                          f"toy:test root={root}", "--out", str(tmp_path / "cal")]) == 0
    cal = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert [v["view"] for v in cal["views"]] == ["toy/val", "toy/test"]
    assert [v["images"] for v in cal["views"]] == [3, 3] and cal["images"] == 6
    best = cal["best"]
    assert len(best["view_f1"]) == 2
    assert best["mean_f1"] == pytest.approx(sum(best["view_f1"]) / 2)
    assert best["mean_f1"] == max(r["mean_f1"] for r in cal["rows"])
    with pytest.raises(RecipeError, match="--view"):
        run_cli(regs, ["calibrate", "--checkpoint", str(ckpt), "--view", "density=3"])


def test_calibrate_with_normalize_stores_it_and_evaluate_uses_it(tmp_path):
    """``calibrate --normalize NAME --normalize-reference IMG`` tunes the parameters on mapped
    images and stores the mapping with them; evaluate then reproduces the calibration."""
    from PIL import Image
    regs = toy_registries()
    root = tmp_path / "data"
    root.mkdir()
    ckpt = make_checkpoint(tmp_path / "run" / "model.pt", regs, root)
    ref = np.full((64, 64, 3), (200, 150, 190), np.uint8)
    ref[20:40, 20:40] = (90, 60, 150)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    common = ["calibrate", "--checkpoint", str(ckpt), "--normalize", "reinhard",
              "--normalize-reference", str(tmp_path / "ref.png")]
    assert run_cli(regs, [*common, "--dry-run", "--out", str(tmp_path / "dry")]) == 0
    assert load_checkpoint(ckpt)["recipe"]["data"].get("normalize") is None
    assert run_cli(regs, common) == 0
    spec = load_checkpoint(ckpt)["recipe"]["data"]["normalize"]
    assert spec["name"] == "reinhard" and spec["reference"] == str(tmp_path / "ref.png")
    cal = json.loads((tmp_path / "run" / "calibration" / "calibration.json").read_text())
    assert cal["normalize"] == "reinhard"
    (tmp_path / "ref.png").unlink()  # the checkpoint holds the fitted values
    run_cli(regs, ["evaluate", "--dataset", "toy", "--split", "val", "--checkpoint", str(ckpt),
                   "--out", str(tmp_path / "ev"), "--no-overlays"])
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["normalize"] == "reinhard"
    assert {k: m["totals"][k] for k in ("tp", "fp", "fn")} == \
        {k: cal["best"][k] for k in ("tp", "fp", "fn")}
    assert run_cli(regs, ["calibrate", "--checkpoint", str(ckpt), "--normalize", "none"]) == 0
    assert load_checkpoint(ckpt)["recipe"]["data"]["normalize"] is None
