"""``partsup evaluate``: with a checkpoint, with --detections, missing roots, staged outputs.

A test plugin (tests/helpers.py) provides a toy dataset (purple "mitoses" and dark-blue
"mimics" on a light background, hard negatives on the mimics) and a per-pixel backbone whose
weights the tests set: the weak branch fires on anything dark (mitoses and mimics), the strong
branch on purple only.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from partsup.errors import DataError, PartsupError

from helpers import ToyReader, make_checkpoint, run_cli, toy_registries


def test_evaluate_with_checkpoint(toy, tmp_path, capsys):
    regs, root, ckpt = toy
    out = tmp_path / "ev"
    assert run_cli(regs, ["evaluate", "--dataset", "toy", "--data-root", str(root),
                          "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    # w = 0: the strong (purple) branch alone finds the 3 mitoses and none of the mimics
    assert m["totals"]["tp"] == 3 and m["totals"]["fp"] == 0 and m["totals"]["fn"] == 0
    assert m["totals"]["f1"] == 1.0
    # the toy recipe names no protocol: the core's generic default, 8 um
    assert m["protocol"]["name"] == "microns" and m["protocol"]["radius_um"] == 8.0
    assert m["detect"]["w"] == 0.0
    assert [im["id"] for im in m["images"]] == ["case3/d", "case3/e", "case4/f"]
    assert sum(im["tp"] for im in m["images"]) == 3
    assert all(im["radius_px"] == 32.0 for im in m["images"])
    for i in ("case3/d", "case3/e", "case4/f"):
        assert (out / "detections" / f"{i}.csv").is_file()
        assert (out / "overlays" / f"{i}.png").is_file()
    rows = (out / "detections" / "case3/d.csv").read_text().splitlines()
    assert rows[0] == "x,y,score,area,match" and len(rows) == 3
    assert all(r.endswith(",tp") for r in rows[1:])
    printed = capsys.readouterr().out
    assert "case3/d" in printed and "F1 1.000" in printed
    assert not list(tmp_path.glob(".ev.*"))  # the staging folder was renamed away
    # threshold-free: AP in the totals, the curve, the table and a PNG
    assert m["totals"]["ap"] == 1.0 and m["pr_scores"].startswith("candidates before")
    assert m["pr_curve"]["recall"][-1] == 1.0 and m["pr_curve"]["n_gt"] == 3
    assert "AP 1.000" in printed and "pr_curve.png" in printed
    assert _table_header(printed)[-1] == "AP"
    _assert_png(out / "pr_curve.png")


def _table_header(printed: str) -> list[str]:
    """The column names of the first rich table in ``printed``."""
    line = next(ln for ln in printed.splitlines() if "image" in ln and "precision" in ln)
    return [c.strip() for c in line.strip("┃ ").split("┃")]


def _assert_png(path: Path) -> None:
    from PIL import Image
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] >= 400 and im.size[1] >= 300
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 5


def _ap_at(curve: dict, s1: float) -> tuple[float, float]:
    """(precision, recall) of a metrics.json curve at the last threshold above ``s1``."""
    i = max(k for k, t in enumerate(curve["thresholds"]) if t > s1)
    return curve["precision"][i], curve["recall"][i]


def test_evaluate_ap_covers_candidates_below_the_score_threshold(toy, tmp_path, capsys):
    """The weak branch alone fires on mitoses and mimics (5 candidates, 3 hits). AP ranks all
    candidates whatever s1 is; P/R/F1 stay the operating point's, which the curve passes."""
    regs, root, ckpt = toy
    from partsup.checkpoint.files import update_detect_params
    aps, curves = [], []
    for s1 in (0.5, 0.99, 0.9999):
        update_detect_params(ckpt, {"w": 1.0, "s1": s1, "a1": 10.0, "sigma": 1.0,
                                    "area_unit": "px"})
        out = tmp_path / f"ev{s1}"
        run_cli(regs, ["evaluate", "--dataset", "toy", "--data-root", str(root),
                       "--checkpoint", str(ckpt), "--out", str(out), "--no-overlays"])
        m = json.loads((out / "metrics.json").read_text())
        t, curve = m["totals"], m["pr_curve"]
        aps.append(t["ap"])
        curves.append(curve)
        assert curve["n_points"] == len(curve["recall"]) == 5 and curve["recall"][-1] == 1.0
        if t["tp"] + t["fp"]:
            assert _ap_at(curve, s1) == pytest.approx((t["precision"], t["recall"]))
    assert aps[0] == aps[1] == aps[2] == pytest.approx(0.75) and curves[0] == curves[2]
    assert (t["tp"], t["fp"], t["fn"]) == (0, 0, 3)  # s1 0.9999 keeps nothing
    assert (out / "pr_curve.png").is_file()
    # its detection files hold only the operating point: AP over those alone is 0
    run_cli(regs, ["evaluate", "--dataset", "toy", "--data-root", str(root),
                   "--detections", str(out / "detections"), "--out", str(tmp_path / "files")])
    assert json.loads((tmp_path / "files" / "metrics.json").read_text())["totals"]["ap"] == 0.0


def test_evaluate_detections_ap_needs_scores(toy, tmp_path, capsys):
    """tupac files without their score column: AP "-" and a note; with it: AP over the
    scores (a miss ranked first lowers AP although the counts are the same)."""
    regs, root, _ = toy
    for scored in (False, True):
        det = tmp_path / f"det{scored}"
        (det / "case3").mkdir(parents=True)
        rows = {"d": [(31, 26, 0.2), (59, 74, 0.8), (80, 100, 0.9)], "e": [(25, 60, 0.7)]}
        for name, pts in rows.items():
            (det / "case3" / f"{name}.tupac.csv").write_text(
                "".join(f"{r},{c},{sc}\n" if scored else f"{r},{c}\n" for r, c, sc in pts))
        out = tmp_path / f"ev{scored}"
        capsys.readouterr()
        assert run_cli(regs, ["evaluate", "--dataset", "toy", "--data-root", str(root),
                              "--detections", str(det), "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        m = json.loads((out / "metrics.json").read_text())
        assert (m["totals"]["tp"], m["totals"]["fp"], m["totals"]["fn"]) == (3, 1, 0)
        if scored:
            # ranked: miss (0.9), hit (0.8), hit (0.7), hit (0.2): P 0, 1/2, 2/3, 3/4
            assert m["totals"]["ap"] == pytest.approx(0.75)
            assert "AP 0.750" in printed and "carry no scores" not in printed
            _assert_png(out / "pr_curve.png")
        else:
            assert m["totals"]["ap"] is None and m["pr_curve"] is None
            assert "AP -" in printed and not (out / "pr_curve.png").exists()
            note = next(ln for ln in printed.splitlines() if "carry no scores" in ln)
            assert note.startswith("AP -: 2 detection file(s)")
            assert _table_header(printed)[-1] == "AP"


def test_candidates_from_maps_keep_mask_gives_detect_from_maps(toy):
    """candidates[keep] are exactly detect_from_maps' detections; the area filter still
    applies to the candidates, the score threshold does not."""
    from partsup.inference.blobs import candidates_from_maps, detect_from_maps
    from partsup.inference.detector import DetectParams
    regs, _, _ = toy
    rng = np.random.default_rng(1)
    weak = np.zeros((64, 80), np.float32)
    for k, (y, x, r) in enumerate([(10, 10, 4), (30, 50, 5), (50, 20, 2), (50, 65, 6)]):
        yy, xx = np.mgrid[:64, :80]
        weak[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = 0.3 + 0.15 * k
    weak += rng.uniform(0, 0.02, weak.shape).astype(np.float32)
    for s1 in (0.0, 0.4, 0.6, 0.9):
        p = DetectParams(w=1.0, sigma=0.0, s1=s1, a1=20.0)
        cands, keep = candidates_from_maps(weak, None, p, 0.25, regs)
        assert [c for c, k in zip(cands, keep) if k] == detect_from_maps(weak, None, p, 0.25,
                                                                       regs)
        assert len(cands) == 3 and all(c.area > 20 for c in cands)  # the r = 2 disk is cut
        assert keep.tolist() == [c.score > s1 for c in cands]
    assert keep.sum() == 0


def test_evaluate_counts_mimics_as_false_positives_not_ground_truth(toy, tmp_path):
    regs, root, ckpt = toy
    from partsup.checkpoint.files import update_detect_params
    update_detect_params(ckpt, {"w": 1.0, "s1": 0.5, "a1": 10.0, "sigma": 1.0,
                                "area_unit": "px"})  # weak branch alone: mimics fire too
    out = tmp_path / "ev"
    run_cli(regs, ["evaluate", "--dataset", "toy", "--data-root", str(root),
                   "--checkpoint", str(ckpt), "--out", str(out), "--no-overlays"])
    m = json.loads((out / "metrics.json").read_text())
    assert (m["totals"]["tp"], m["totals"]["fp"], m["totals"]["fn"]) == (3, 2, 0)
    assert not (out / "overlays").exists()


def test_evaluate_detections_folder_matches_checkpoint_run(toy, tmp_path):
    regs, root, ckpt = toy
    run_cli(regs, ["evaluate", "--dataset", "toy", "--data-root", str(root),
                   "--checkpoint", str(ckpt), "--out", str(tmp_path / "a")])
    run_cli(regs, ["evaluate", "--dataset", "toy", "--data-root", str(root),
                   "--detections", str(tmp_path / "a" / "detections"), "--out",
                   str(tmp_path / "b")])
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert a["totals"] == b["totals"] and a["images"] == b["images"]
    assert b["detections"] == str(tmp_path / "a" / "detections")


def test_evaluate_other_tools_formats(toy, tmp_path):
    """Hand-written files of another tool: csv (x,y,score), tupac (row,col), mitos-atypia."""
    regs, root, _ = toy
    det = tmp_path / "other"
    (det / "case3").mkdir(parents=True)
    # d: both mitoses found, plus a detection on the mimic (a hard negative -> FP)
    (det / "case3" / "d.csv").write_text("x,y,score\n26,31,0.9\n74,59,0.8\n50,20,0.7\n")
    (det / "case3" / "e.tupac.csv").write_text("90,90\n")  # row,col far from (60, 25): FP, FN
    # case4/f has no file: no detections
    out = tmp_path / "ev"
    assert run_cli(regs, ["evaluate", "--dataset", "toy", "--data-root", str(root),
                          "--detections", str(det), "--out", str(out),
                          "--protocol", "pixels"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    per = {im["id"]: (im["tp"], im["fp"], im["fn"]) for im in m["images"]}
    assert per == {"case3/d": (2, 1, 0), "case3/e": (0, 1, 1), "case4/f": (0, 0, 0)}
    assert m["protocol"] == {"name": "pixels", "radius_um": 0.0, "radius_px": 30.0,
                             "description": m["protocol"]["description"]}


def test_evaluate_rejects_unknown_detections_format(toy, tmp_path):
    regs, root, _ = toy
    det = tmp_path / "other"
    (det / "case3").mkdir(parents=True)
    (det / "case3" / "d.csv").write_text("x,y,score\n26,31,0.9\n")
    argv = ["evaluate", "--dataset", "toy", "--data-root", str(root), "--detections", str(det),
            "--out", str(tmp_path / "ev"), "--protocol", "pixels", "--detections-format"]
    with pytest.raises(PartsupError) as exc:
        run_cli(regs, argv + ["nope"])
    msg = str(exc.value)
    assert "\n" not in msg and "--detections-format" in msg and "'nope'" in msg
    for name in ("csv", "geojson", "tupac", "mitos-atypia", "midog"):
        assert name in msg and name in regs.writers
    assert not (tmp_path / "ev").exists()
    assert run_cli(regs, argv + ["csv"]) == 0


def test_evaluate_detections_folder_that_matches_nothing(toy, tmp_path):
    regs, root, _ = toy
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no detection file"):
        run_cli(regs, ["evaluate", "--dataset", "toy", "--data-root", str(root),
                       "--detections", str(tmp_path / "empty"), "--out", str(tmp_path / "ev")])
    assert not (tmp_path / "ev").exists()
    assert not list(tmp_path.glob(".ev.*"))  # nothing half-written


def test_evaluate_without_root_explains_layout(tmp_path, monkeypatch):
    regs = toy_registries()
    monkeypatch.delenv("PARTSUP_DATA", raising=False)
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError) as exc:
        run_cli(regs, ["evaluate", "--dataset", "toy", "--detections", str(tmp_path / "d"),
                       "--out", str(tmp_path / "ev")])
    msg = str(exc.value)
    assert "--data-root" in msg and ToyReader.LAYOUT in msg and ToyReader.SOURCE in msg
    assert not (tmp_path / "ev").exists()
    monkeypatch.setenv("PARTSUP_DATA", str(tmp_path))
    (tmp_path / "toy").mkdir()  # $PARTSUP_DATA/<name> is found
    with pytest.raises(DataError, match="no detection file"):
        run_cli(regs, ["evaluate", "--dataset", "toy", "--detections", str(tmp_path / "d"),
                       "--out", str(tmp_path / "ev")])


def test_evaluate_failure_mid_run_keeps_previous_output(toy, tmp_path):
    regs, root, _ = toy
    out = tmp_path / "ev"
    det = tmp_path / "det"
    (det / "case3").mkdir(parents=True)
    (det / "case3" / "d.csv").write_text("x,y,score\n26,31,0.9\n")
    run_cli(regs, ["evaluate", "--dataset", "toy", "--data-root", str(root),
                   "--detections", str(det), "--out", str(out)])
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (det / "case3" / "e.csv").write_text("x,y,score\n26,oops,0.9\n")  # second image: bad line
    with pytest.raises(DataError, match=r"e\.csv:2: malformed line"):
        run_cli(regs, ["evaluate", "--dataset", "toy", "--data-root", str(root),
                       "--detections", str(det), "--out", str(out)])
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "det", "ev", "run"]


def test_overlay_colours(tmp_path):
    from PIL import Image
    from partsup.evaluation.matching import match
    from partsup.evaluation.overlay import FN_COLOR, FP_COLOR, TP_COLOR, save_overlay
    img = np.full((200, 200, 3), 128, np.uint8)
    gt, det = [[50, 50], [150, 150]], [[52, 50], [150, 40]]
    r = match(gt, det, radius_px=20)
    path = save_overlay(tmp_path / "o.png", img, gt, det, r)
    a = np.asarray(Image.open(path).convert("RGB"))
    assert tuple(a[50, 52 + 20]) == TP_COLOR     # right edge of the TP circle at the detection
    assert tuple(a[150, 150 + 20]) == FN_COLOR   # missed ground truth
    assert tuple(a[40, 150 + 20]) == FP_COLOR    # false positive


# -- a synthetic AMIDA13-style set (partsup_mitosis.synth), read by the real amida13 reader -----

@pytest.fixture(scope="module")
def synth_amida13(tmp_path_factory):
    synth = pytest.importorskip("partsup_mitosis.synth")
    root = tmp_path_factory.mktemp("amida13")
    ds = synth.generate(root, like="amida13", n_images=8, seed=3, size=256)
    assert ds.counts["test"]["mitoses"] > 0
    return root


def test_synthetic_amida13_oracle_detections(synth_amida13, tmp_path):
    """Ground truth written as TUPAC detections scores F1 = 1; shifted by 9 um it scores 0."""
    regs = toy_registries()
    test = regs.datasets.build("amida13", root=str(synth_amida13), split="test")
    for name, shift in (("exact", 0.0), ("near", 7.9 / 0.25 / np.sqrt(2)), ("far", 9.0 / 0.25)):
        det = tmp_path / name
        for i in range(len(test)):
            rows = "".join(f"{y + shift:.3f},{x:.3f}\n" if name == "far" else
                           f"{y + shift:.3f},{x + shift:.3f}\n" for x, y in test.points(i))
            (det / test.ids[i]).parent.mkdir(parents=True, exist_ok=True)
            (det / f"{test.ids[i]}.tupac.csv").write_text(rows)
        out = tmp_path / f"ev-{name}"
        run_cli(regs, ["evaluate", "--dataset", "amida13", "--data-root", str(synth_amida13),
                       "--detections", str(det), "--out", str(out), "--no-overlays"])
        m = json.loads((out / "metrics.json").read_text())
        n = test.num_points()
        assert m["protocol"]["name"] == "amida13" and m["images"][0]["radius_px"] == 32.0
        expect = (n, 0, 0) if name != "far" else (0, n, n)
        assert (m["totals"]["tp"], m["totals"]["fp"], m["totals"]["fn"]) == expect, name


def test_radius_flags_change_the_match_radius(synth_amida13, tmp_path):
    """Detections 25 px from the truth: TP at the default 32 px, missed at --radius-px 20."""
    regs = toy_registries()
    test = regs.datasets.build("amida13", root=str(synth_amida13), split="test")
    det = tmp_path / "det"
    for i in range(len(test)):
        (det / test.ids[i]).parent.mkdir(parents=True, exist_ok=True)
        (det / f"{test.ids[i]}.tupac.csv").write_text(
            "".join(f"{y + 25.0:.3f},{x:.3f}\n" for x, y in test.points(i)))
    n = test.num_points()
    for flags, expect in (([], (n, 0, 0)), (["--radius-px", "20"], (0, n, n)),
                          (["--radius-um", "5"], (0, n, n))):
        out = tmp_path / f"ev{len(flags)}{flags[:1]}"
        run_cli(regs, ["evaluate", "--dataset", "amida13", "--data-root", str(synth_amida13),
                       "--detections", str(det), "--out", str(out), "--no-overlays", *flags])
        m = json.loads((out / "metrics.json").read_text())
        assert (m["totals"]["tp"], m["totals"]["fp"], m["totals"]["fn"]) == expect, flags
        assert m["images"][0]["radius_px"] == (32.0 if not flags else 20.0)


def test_synthetic_amida13_checkpoint_calibrate_and_evaluate(synth_amida13, tmp_path):
    regs = toy_registries()
    ckpt = make_checkpoint(tmp_path / "run" / "m.pt", regs, synth_amida13)
    assert run_cli(regs, ["calibrate", "--checkpoint", str(ckpt), "--dataset", "amida13",
                          "--data-root", str(synth_amida13), "--a1", "0,50"]) == 0
    cal = json.loads((tmp_path / "run" / "calibration" / "calibration.json").read_text())
    assert cal["images"] == 1 and cal["protocol"]["name"] == "amida13"
    out = tmp_path / "ev"
    assert run_cli(regs, ["evaluate", "--dataset", "amida13", "--data-root", str(synth_amida13),
                          "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    test = regs.datasets.build("amida13", root=str(synth_amida13), split="test")
    assert [im["id"] for im in m["images"]] == test.ids
    assert [im["n_gt"] for im in m["images"]] == [len(test.points(i)) for i in range(len(test))]
    t = m["totals"]
    assert t["tp"] == sum(im["tp"] for im in m["images"])
    assert t["tp"] + t["fn"] == test.num_points()
    assert m["detect"]["w"] == cal["best"]["w"] and m["calibrated"]
    for i in test.ids:
        csv_rows = (out / "detections" / f"{i}.csv").read_text().splitlines()[1:]
        im = next(x for x in m["images"] if x["id"] == i)
        assert len(csv_rows) == im["n_det"] and sum(r.endswith(",tp") for r in csv_rows) == im["tp"]
        assert (out / "overlays" / f"{i}.png").is_file()
    # the same detections scored from their files give the same numbers
    run_cli(regs, ["evaluate", "--dataset", "amida13", "--data-root", str(synth_amida13),
                   "--detections", str(out / "detections"), "--out", str(tmp_path / "ev2"),
                   "--no-overlays"])
    m2 = json.loads((tmp_path / "ev2" / "metrics.json").read_text())
    assert m2["totals"] == m["totals"]


def test_reader_options_from_command_line_and_recipe(tmp_path):
    """A synthetic icpr2014 set needs its case lists: --option passes reader options."""
    synth = pytest.importorskip("partsup_mitosis.synth")
    root = tmp_path / "icpr2014"
    ds = synth.generate(root, like="icpr2014", n_images=4, seed=2, size=200)
    spec = ds.splits["test"]
    regs = toy_registries()
    det = tmp_path / "det"
    det.mkdir()
    test = regs.datasets.build(**spec)
    (det / f"{test.ids[0].replace('/', '_')}.csv").write_text("x,y,score\n")
    opts = [f"{k}={json.dumps(v)}" for k, v in spec.items() if k not in ("name", "root", "split")]
    assert opts  # icpr2014 synth sets val_cases / test_cases
    argv = ["evaluate", "--dataset", "icpr2014", "--data-root", str(root), "--detections",
            str(det), "--out", str(tmp_path / "ev"), "--no-overlays"]
    assert run_cli(regs, argv + [a for o in opts for a in ("--option", o)]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert [im["id"] for im in m["images"]] == test.ids
    assert m["protocol"]["name"] == "icpr2014"
    assert m["totals"]["fn"] == test.num_points()
    from partsup.errors import RecipeError
    with pytest.raises(RecipeError, match="--option"):
        run_cli(regs, argv + ["--option", "nonsense"])


def _documented_commands(section: str) -> list[str]:
    """The ``partsup ...`` lines of the first bash block after heading ``section`` in
    docs/evaluation.md."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "evaluation.md").read_text()
    block = text.split(section, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [ln for ln in block.splitlines() if ln.strip()]


def test_documented_ap_commands(synth_amida13, tmp_path, monkeypatch, capsys):
    """The commands in docs/evaluation.md's AP section, run as written on the synthetic
    AMIDA13-style set (DIR) with a toy checkpoint (best.pt)."""
    import shlex
    regs = toy_registries()
    make_checkpoint(tmp_path / "best.pt", regs, synth_amida13)
    monkeypatch.chdir(tmp_path)
    lines = _documented_commands("### Average precision")
    assert len(lines) == 2 and all(ln.startswith("partsup evaluate ") for ln in lines)
    for line in lines:
        argv = shlex.split(line.replace("DIR", str(synth_amida13)))[1:]
        assert run_cli(regs, argv) == 0, line
        assert "AP " in capsys.readouterr().out
    m = json.loads((tmp_path / "eval" / "ap" / "metrics.json").read_text())
    files = json.loads((tmp_path / "eval" / "ap-files" / "metrics.json").read_text())
    assert m["totals"]["ap"] is not None and 0.0 <= m["totals"]["ap"] <= 1.0
    assert len(m["pr_curve"]["recall"]) <= 200 and m["pr_scores"].startswith("candidates")
    _assert_png(tmp_path / "eval" / "ap" / "pr_curve.png")
    # the files hold the operating point only: same counts, AP over those detections alone
    assert {k: v for k, v in files["totals"].items() if k != "ap"} == \
        {k: v for k, v in m["totals"].items() if k != "ap"}
    assert files["totals"]["ap"] is not None and files["pr_curve"]["n_points"] <= \
        m["pr_curve"]["n_points"]
