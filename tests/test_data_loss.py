"""Nothing lost (issue 25, item 12): a command replaces or deletes only the files its own
command recorded in a folder's ``.partsup-output`` marker; ``partsup train`` never writes over a
folder that is not a new run's; ``partsup export`` never overwrites a file (above all not its
source checkpoint). Each case failed before its fix."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from partsup.errors import DataError, PartsupError
from partsup.output.outdir import MARKER, check_not_foreign, owners, record_owned

from helpers import TINY, run_cli, tiny_checkpoint  # the toy fixture is in conftest.py


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _predict_folder(out: Path, marker: str = "owners") -> Path:
    """A folder as ``partsup predict`` leaves it (its calls to record_owned), or, with
    ``marker="old"``, as a partsup before owners were recorded wrote it."""
    out.mkdir(parents=True)
    for name in ("case.csv", "summary.csv"):
        (out / name).write_text(f"{name} of predict\n")
    if marker == "owners":
        record_owned(out, [out / "case.csv", out / "summary.csv"], "partsup predict")
    else:
        (out / MARKER).write_text(json.dumps({"written_by": "partsup predict",
                                              "files": ["case.csv", "summary.csv"]}))
    return out


def _evaluate(regs, root, ckpt, out) -> int:
    return run_cli(regs, ["evaluate", "--dataset", "toy", "--data-root", str(root),
                          "--checkpoint", str(ckpt), "--out", str(out), "--no-overlays"])


def _calibrate(regs, ckpt, out, *extra) -> int:
    return run_cli(regs, ["calibrate", "--checkpoint", str(ckpt), "--w", "0", "--s1", "0.5",
                          "--a1", "0", "--out", str(out), *extra])


@pytest.mark.parametrize("marker", ["owners", "old"])
def test_evaluate_refuses_predicts_outputs_and_deletes_nothing(toy, tmp_path, marker):
    regs, root, ckpt = toy
    out = _predict_folder(tmp_path / "pred", marker)
    before = _snapshot(out)
    with pytest.raises(DataError) as info:
        _evaluate(regs, root, ckpt, out)
    text = str(info.value)
    assert "\n" not in text
    assert f"{out} holds the outputs of partsup predict" in text and "choose another --out" in text
    assert _snapshot(out) == before


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_calibrate_refuses_an_evaluation_and_evaluate_a_calibration(toy, tmp_path, dry_run):
    regs, root, ckpt = toy
    ev = tmp_path / "ev"
    assert _evaluate(regs, root, ckpt, ev) == 0
    before_ev, before_ckpt = _snapshot(ev), ckpt.read_bytes()
    with pytest.raises(DataError, match=rf"{ev} holds the outputs of partsup evaluate"):
        _calibrate(regs, ckpt, ev, *dry_run)
    assert _snapshot(ev) == before_ev and ckpt.read_bytes() == before_ckpt
    cal = tmp_path / "cal"
    assert _calibrate(regs, ckpt, cal, *dry_run) == 0
    assert set(owners(cal).values()) == {"partsup calibrate"}
    before_cal = _snapshot(cal)
    with pytest.raises(DataError, match=rf"{cal} holds the outputs of partsup calibrate"):
        _evaluate(regs, root, ckpt, cal)
    assert _snapshot(cal) == before_cal
    assert _calibrate(regs, ckpt, cal, *dry_run) == 0  # its own folder: written again


def test_predict_refuses_a_folder_of_another_command(toy, tmp_path):
    regs, root, ckpt = toy
    ev = tmp_path / "ev"
    assert _evaluate(regs, root, ckpt, ev) == 0
    with pytest.raises(DataError, match=rf"{ev} holds the outputs of partsup evaluate"):
        check_not_foreign(ev, [ev / "case.csv"])  # what predict calls before any model loads
    out = _predict_folder(tmp_path / "pred")
    check_not_foreign(out, [out / "case.csv"])  # predict's own: may be replaced


def test_marker_records_the_owner_of_each_file(tmp_path):
    out = _predict_folder(tmp_path / "pred")
    doc = json.loads((out / MARKER).read_text())
    assert doc["owners"] == {"case.csv": "partsup predict", "summary.csv": "partsup predict"}
    assert doc["files"] == ["case.csv", "summary.csv"]  # still a list, as older readers expect


def test_an_old_marker_gives_a_command_only_the_names_it_writes(toy, tmp_path):
    """A marker without owners (written_by calibrate) that also lists a name calibrate never
    writes (left by a crash of an older partsup that mixed two commands' files): that file's
    owner is unknown, so it is never removed and the folder is refused."""
    regs, root, ckpt = toy
    old = tmp_path / "cal"
    old.mkdir()
    (old / "calibration.json").write_text("{}")
    (old / "metrics.json").write_text('{"of": "evaluate"}')
    (old / MARKER).write_text(json.dumps({"written_by": "partsup calibrate",
                                          "files": ["calibration.json", "metrics.json"]}))
    assert owners(old) == {"calibration.json": "partsup calibrate", "metrics.json": None}
    with pytest.raises(DataError, match="holds the outputs of an unknown partsup command "
                                        r"\(e\.g\. metrics\.json"):
        _calibrate(regs, ckpt, old)
    assert (old / "metrics.json").read_text() == '{"of": "evaluate"}'
    (old / "metrics.json").unlink()  # gone: nothing left to protect, the folder is calibrate's
    assert _calibrate(regs, ckpt, old) == 0
    assert set(owners(old).values()) == {"partsup calibrate"}


# -- partsup train --out ---------------------------------------------------------------------

def _train(tmp_path: Path, out: Path, *extra: str) -> int:
    import yaml

    from partsup.cli.main import main
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    return main(["train", str(recipe), "--out", str(out), "--set", "train.iterations=2",
                 "--set", "train.val_every=0", "--set", "train.checkpoint_every=2", *extra])


def test_train_never_writes_over_a_users_folder(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("recipe.yaml", "best.pt", "loss.png"):
        (mine / name).write_text(f"my own {name}")
    before = _snapshot(mine)
    assert _train(tmp_path, mine) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{mine} holds best.pt but no checkpoint to resume from" in err, err
    assert "choose another --out" in err
    assert _snapshot(mine) == before and sorted(p.name for p in mine.iterdir()) == sorted(before)
    (mine / "best.pt").unlink()
    before = _snapshot(mine)
    assert _train(tmp_path, mine) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{mine} is not empty (it holds 'loss.png' and 1 more)" in err, err
    assert _snapshot(mine) == before


def test_train_does_not_retrain_over_a_finished_model(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(tmp_path, run) == 0
    import shutil
    shutil.rmtree(run / "checkpoints")  # a finished run, kept with its model only
    before = _snapshot(run)
    assert _train(tmp_path, run) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{run} holds best.pt but no checkpoint to resume from" in err
    assert _snapshot(run) == before  # metrics.jsonl not appended to, best.pt kept
    # stopped before its first checkpoint (e.g. kill -9): refused too, nothing appended
    (run / "best.pt").unlink()
    (run / "loss.png").unlink()
    before = _snapshot(run)
    assert _train(tmp_path, run) == 2
    assert "stopped before its first checkpoint" in " ".join(capsys.readouterr().err.split())
    assert _snapshot(run) == before


def test_train_starts_in_an_empty_folder_or_one_left_by_a_failed_start(tmp_path):
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    (empty / "train.lock").write_text("12345\n")  # left by a killed start: not a lock
    assert _train(tmp_path, empty) == 0
    assert (empty / "best.pt").is_file()


# -- partsup export --out ----------------------------------------------------------------------

def _export(ckpt: Path, *args: str) -> int:
    from partsup.cli.main import main
    return main(["--plugin", "tiny_plugin", "export", str(ckpt), *args])


def test_export_never_overwrites_its_source_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    ckpt = tiny_checkpoint(run / "best.pt", tile=64)
    before = ckpt.read_bytes()
    for source in (ckpt, run):  # the file, or its run folder (which stands for best.pt)
        for force in ([], ["--force"]):
            assert _export(source, "--format", "safetensors", "--out", str(ckpt), *force) == 2
            err = " ".join(capsys.readouterr().err.split())
            assert f"--out {ckpt} is the checkpoint being exported; partsup export never " \
                   "overwrites its source" in err, err
    (tmp_path / "link.pt").symlink_to(ckpt)  # another name for the source
    assert _export(ckpt, "--format", "safetensors", "--out", str(tmp_path / "link.pt"),
                   "--force") == 2
    assert "is the checkpoint being exported" in capsys.readouterr().err
    st = tmp_path / "model.safetensors"  # the default name of a .safetensors source: itself
    assert _export(ckpt, "--format", "safetensors", "--out", str(st)) == 0
    assert _export(st, "--format", "safetensors") == 2
    assert "is the checkpoint being exported" in capsys.readouterr().err
    assert ckpt.read_bytes() == before


def test_export_refuses_existing_files_and_force_replaces_only_its_own(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt", tile=64)
    mine = tmp_path / "notes.onnx"
    mine.write_text("my notes")
    for force in ([], ["--force"]):
        assert _export(ckpt, "--format", "torchscript", "--out", str(mine), *force) == 2
        assert mine.read_text() == "my notes"
    err = " ".join(capsys.readouterr().err.split())
    assert f"{mine} exists; partsup export never overwrites a file" in err
    assert f"{mine} exists and was not written by partsup export" in err
    side = tmp_path / "model.ts.pt.json"  # a file of the user's where the sidecar would go
    side.write_text("{}")
    assert _export(ckpt, "--format", "torchscript", "--out", str(tmp_path / "model.ts.pt"),
                   "--force") == 2
    assert not (tmp_path / "model.ts.pt").exists() and side.read_text() == "{}"
    side.unlink()
    out = tmp_path / "model.ts.pt"
    assert _export(ckpt, "--format", "torchscript", "--out", str(out)) == 0
    assert _export(ckpt, "--format", "torchscript", "--out", str(out)) == 2  # exists
    assert _export(ckpt, "--format", "torchscript", "--out", str(out), "--force") == 0
    assert _export(ckpt, "--format", "safetensors", "--out", str(out), "--force") == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
