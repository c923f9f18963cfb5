"""Nothing lost: ``evaluate`` and ``calibrate`` never delete or overwrite what partsup did not
write, and say clearly (before any work) when ``--out`` cannot be used."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from partsup.checkpoint.files import load_checkpoint
from partsup.errors import DataError
from partsup.output.outdir import MARKER

from helpers import make_checkpoint, run_cli, toy_registries


def _evaluate(regs, root, ckpt, out, *extra) -> int:
    return run_cli(regs, ["evaluate", "--dataset", "toy", "--data-root", str(root),
                          "--checkpoint", str(ckpt), "--out", str(out), "--no-overlays", *extra])


def test_evaluate_refuses_a_folder_it_did_not_write_and_deletes_nothing(toy, tmp_path):
    regs, root, ckpt = toy
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(DataError, match="not written by partsup.*notes.txt"):
        _evaluate(regs, root, ckpt, out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "my notes"


def test_evaluate_out_data_root_keeps_the_dataset(toy, tmp_path):
    regs, root, ckpt = toy
    (root / "image.png").write_bytes(b"pretend image")
    with pytest.raises(DataError, match="not written by partsup"):
        _evaluate(regs, root, ckpt, root)
    assert sorted(p.name for p in root.iterdir()) == ["image.png"]


def test_evaluate_rerun_replaces_only_its_own_files(toy, tmp_path):
    regs, root, ckpt = toy
    out = tmp_path / "ev"
    assert _evaluate(regs, root, ckpt, out) == 0
    assert (out / MARKER).is_file()
    owned = json.loads((out / MARKER).read_text())["files"]
    assert "metrics.json" in owned and "detections/case3/d.csv" in owned
    (out / "detections" / "case3" / "mine.txt").write_text("keep me")  # the user's
    (out / "notes.txt").write_text("keep me too")
    assert _evaluate(regs, root, ckpt, out, "--split", "val") == 0
    assert (out / "detections" / "case3" / "mine.txt").read_text() == "keep me"
    assert (out / "notes.txt").read_text() == "keep me too"
    # the previous run's detections (split test) are gone: they no longer match metrics.json
    assert not (out / "detections" / "case3" / "d.csv").exists()
    assert not (out / "detections" / "case4").exists()
    assert (out / "detections" / "case1" / "a.csv").is_file()
    assert json.loads((out / "metrics.json").read_text())["split"] == "val"
    assert not [p for p in out.iterdir() if p.name.startswith(".partsup-staging")]


def test_calibrate_out_run_folder_keeps_the_checkpoint(tmp_path):
    regs = toy_registries()
    root = tmp_path / "data"
    root.mkdir()
    ckpt = make_checkpoint(tmp_path / "run" / "best.pt", regs, root)
    before = ckpt.read_bytes()
    with pytest.raises(DataError, match="not written by partsup"):
        run_cli(regs, ["calibrate", "--checkpoint", str(ckpt), "--out", str(ckpt.parent)])
    assert ckpt.read_bytes() == before
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["best.pt"]
    load_checkpoint(ckpt)


def test_evaluate_out_naming_a_file_is_refused_before_inference(toy, tmp_path, monkeypatch):
    regs, root, ckpt = toy
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    import partsup.cli.commands.evaluate as ev
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: pytest.fail("inference ran"))
    with pytest.raises(DataError, match="is a file, not a folder"):
        _evaluate(regs, root, ckpt, blocker)
    assert blocker.read_text() == "x"


def test_evaluate_unwritable_out_is_a_one_line_error(toy, tmp_path, monkeypatch):
    regs, root, ckpt = toy
    out = tmp_path / "ro"
    out.mkdir()
    if os.geteuid() == 0:  # root ignores folder permissions: refuse the write as the OS would
        import errno
        import tempfile

        def denied(*a, **k):
            raise PermissionError(errno.EACCES, "Permission denied", str(out))
        monkeypatch.setattr(tempfile, "mkdtemp", denied)
    out.chmod(0o500)
    try:
        with pytest.raises(DataError, match="cannot write to output folder .*permission denied"):
            _evaluate(regs, root, ckpt, out)
    finally:
        out.chmod(0o700)
    assert list(out.iterdir()) == []


def test_evaluate_full_disk_is_a_one_line_error_and_leaves_nothing(toy, tmp_path, monkeypatch):
    regs, root, ckpt = toy
    import errno

    import partsup.evaluation.scoring as scoring

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(scoring, "write_detection_csv", full)
    out = tmp_path / "ev"
    with pytest.raises(DataError, match=r"cannot write to output folder .*ev: no space left"):
        _evaluate(regs, root, ckpt, out)
    assert not out.exists()  # created for this run, removed again (it was empty)


def test_evaluate_out_dot(toy, tmp_path, monkeypatch):
    regs, root, ckpt = toy
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert _evaluate(regs, root, ckpt, ".") == 0  # an empty working folder: fine
    assert (work / "metrics.json").is_file() and (work / MARKER).is_file()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "thesis.tex").write_text("x")
    monkeypatch.chdir(tmp_path / "other")
    with pytest.raises(DataError, match=r"--out \. is not empty"):
        _evaluate(regs, root, ckpt, ".")
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["thesis.tex"]


def test_per_image_csv_writes_a_dash_where_a_ratio_is_undefined(toy, tmp_path):
    import csv
    regs, root, ckpt = toy
    out = tmp_path / "ev"
    assert _evaluate(regs, root, ckpt, out) == 0
    rows = {r["id"]: r for r in csv.DictReader((out / "per_image.csv").open())}
    empty = rows["case4/f"]  # no ground truth, no detection
    assert (empty["precision"], empty["recall"], empty["f1"]) == ("-", "-", "-")
    assert rows["case3/d"]["precision"] == "1.0"


def test_evaluate_detections_csv_with_x_y_only_as_its_help_says(toy, tmp_path):
    regs, root, _ = toy
    det = tmp_path / "det"
    (det / "case3").mkdir(parents=True)
    (det / "case3" / "d.csv").write_text("x,y\n26,31\n74,61\n")  # no score column
    out = tmp_path / "ev"
    assert run_cli(regs, ["evaluate", "--dataset", "toy", "--data-root", str(root),
                          "--detections", str(det), "--out", str(out), "--no-overlays"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["images"][0]["tp"] == 2
    from partsup.output.writers import read_detections
    assert read_detections(det / "case3" / "d.csv").tolist() == [[26, 31, 1.0], [74, 61, 1.0]]


def test_output_folder_of_an_older_partsup_is_reused(tmp_path):
    """A calibration folder written before the marker existed holds only partsup's names: it is
    written into again (the demo reuses its run folders); one more file makes it the user's."""
    regs = toy_registries()
    root = tmp_path / "data"
    root.mkdir()
    ckpt = make_checkpoint(tmp_path / "run" / "best.pt", regs, root)
    old = tmp_path / "run" / "calibration"
    old.mkdir()
    (old / "calibration.json").write_text(json.dumps(
        {k: [] for k in ("checkpoint", "grid", "rows", "per_w", "best")}))
    (old / "f1_vs_w.png").write_bytes(b"png")
    args = ["calibrate", "--checkpoint", str(ckpt), "--w", "0", "--s1", "0.5", "--a1", "0"]
    assert run_cli(regs, args) == 0
    assert json.loads((old / "calibration.json").read_text())["dataset"] == "toy"
    assert (old / MARKER).is_file()
    (old / MARKER).unlink()
    (old / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not written by partsup"):
        run_cli(regs, args)
    # a user's folder that merely uses one of partsup's names is not taken for its output
    (old / "notes.txt").unlink()
    (old / "calibration.json").write_text('{"mine": 1}')
    with pytest.raises(DataError, match="not written by partsup"):
        run_cli(regs, args)
    assert (old / "calibration.json").read_text() == '{"mine": 1}'
