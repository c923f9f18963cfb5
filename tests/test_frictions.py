"""Smaller frictions of the first day (issue 25, item 10); each test failed before its fix."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from partsup.cli.main import build_parser, main
from partsup.command import Context

from helpers import load_tiny, run_cli  # fixtures toy, tiny_regs are in conftest.py

REPO = Path(__file__).resolve().parents[1]


def _printed(registries, argv: list[str]) -> str:
    buf = io.StringIO()
    args = build_parser(registries).parse_args(argv)
    args._command.run(args, Context(registries=registries, console=Console(file=buf, width=300)))
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["backbone", "backbones", "Backbone"])
def test_plugins_kind_takes_the_label_the_table_shows(registries, kind):
    rows = [ln for ln in _printed(registries, ["plugins", "--kind", kind]).splitlines()
            if ln.startswith("│")]
    assert rows and all(ln.split("│")[1].strip() in ("backbone", "") for ln in rows)
    assert any("fcn32s" in ln for ln in rows)


def test_plugins_kind_takes_labels_with_spaces_and_names_them_when_unknown(registries, capsys):
    text = _printed(registries, ["plugins", "--kind", "weight transfer"])
    assert "weight transfer" in text and "backbone │" not in text
    assert "weak label" in _printed(registries, ["plugins", "--kind", "weak-label"])
    with pytest.raises(SystemExit):
        build_parser(registries).parse_args(["plugins", "--kind", "backbonez"])
    err = capsys.readouterr().err
    assert "unknown kind 'backbonez'" in err and "backbone, weight transfer" in err


def test_evaluate_and_calibrate_take_the_checkpoint_either_way(toy, tmp_path, capsys):
    regs, root, ckpt = toy
    data = ["--dataset", "toy", "--data-root", str(root), "--no-overlays"]
    assert run_cli(regs, ["evaluate", str(ckpt), *data, "--out", str(tmp_path / "a")]) == 0
    assert run_cli(regs, ["evaluate", "--checkpoint", str(ckpt), *data, "--out",
                          str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "metrics.json").read_text().replace(str(tmp_path / "a"), "") \
        == (tmp_path / "b" / "metrics.json").read_text().replace(str(tmp_path / "b"), "")
    grid = ["--w", "0", "--s1", "0.5", "--a1", "0", "--dry-run"]
    assert run_cli(regs, ["calibrate", str(ckpt), *grid, "--out", str(tmp_path / "c")]) == 0
    assert run_cli(regs, ["calibrate", "--checkpoint", str(ckpt), *grid, "--out",
                          str(tmp_path / "d")]) == 0
    for argv, message in (
            (["evaluate", *data], "give one source of detections: a checkpoint"),
            (["evaluate", str(ckpt), "--detections", str(tmp_path), *data], "not both"),
            (["calibrate", *grid], "no checkpoint given: pass CHECKPOINT or --checkpoint"),
            (["calibrate", str(ckpt), "--checkpoint", str(tmp_path / "other.pt"), *grid],
             "two checkpoints given")):
        from partsup.errors import PartsupError
        with pytest.raises(PartsupError, match=message):
            run_cli(regs, argv)


@pytest.mark.parametrize("command, option", [("evaluate", "--split"), ("calibrate", "--split"),
                                             ("synth", "--seed")])
def test_every_option_has_help(registries, command, option):
    parser = build_parser(registries)
    sub = next(a for a in parser._subparsers._group_actions if hasattr(a, "choices"))
    action = next(a for a in sub.choices[command]._actions if option in a.option_strings)
    assert action.help and len(action.help) > 20, (command, option)


def test_datasets_table_does_not_cut_the_layout_message_off(registries, tmp_path):
    text = _printed(registries, ["datasets", "folder", "--root", str(tmp_path)])
    assert "(the expected layout is shown above)" in text
    assert not any(ln.rstrip(" │").endswith("Expected layout:") for ln in text.splitlines())


def test_samples_within_5_percent_record_their_median_in_one_line(tmp_path, tiny_regs):
    """The quickstart recipe mixes 0.2456 um/px (ICPR 2012 style) and 0.25 (AMIDA13 style)."""
    from partsup.training.loop import fit
    from partsup.training.run import samples_mpp

    class At(list):
        def mpp(self, i):
            return self[i]
    assert samples_mpp([At([0.2456] * 12), At([0.25] * 24)])[0] == 0.25
    assert samples_mpp([At([0.2456] * 3), At([0.25] * 3)])[0] == 0.25  # the higher middle one
    assert samples_mpp([At([0.25]), At([0.5])]) == (None, "the samples are at 0.25, 0.5 um/px")
    recipe = load_tiny(tiny_regs, "train.iterations=1", "train.val_every=0",
                     "data.weak.mpp=0.2456")
    text = io.StringIO()
    fit(recipe, tiny_regs, tmp_path / "run", console=Console(file=text, width=300))
    assert yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())["data"]["mpp"] == 0.25
    lines = [x for x in text.getvalue().splitlines() if "data.mpp" in x]
    assert len(lines) == 1 and "data.mpp recorded as 0.25 um/px, the median" in lines[0]
    assert "0.2456, 0.25 um/px" in lines[0] and "not recorded" not in lines[0]


def test_make_slide_says_how_many_planted_disks_are_on_the_slide(tmp_path):
    """It printed "13 disks (30 in the cluster)": 30 planted, most of them off a small slide."""
    import csv
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "make_slide.py"),
                           str(tmp_path / "s.tif"), "--width", "2048", "--height", "1536"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "s.truth.csv") as fh:
        n = len(list(csv.DictReader(fh)))
    m = __import__("re").search(r"; (\d+) dark disks on the tissue: (\d+) scattered, (\d+) in the "
                                r"planted cluster; (\d+) of the 30 planted fell off the tissue",
                                proc.stdout)
    assert m, proc.stdout
    total, scattered, kept, lost = map(int, m.groups())
    assert total == n == scattered + kept and kept + lost == 30


def test_torchscript_export_says_once_that_it_is_deprecated_and_what_to_use(tmp_path, capsys):
    """torch's own "`torch.jit.load` is deprecated" came from the export's check, naming no
    alternative; now one line says it, with onnx as the portable format (nothing hidden)."""
    from helpers import tiny_checkpoint
    ckpt = tiny_checkpoint(tmp_path / "t.pt", tile=64)
    assert main(["--plugin", "tiny_plugin", "export", str(ckpt), "--format", "torchscript"]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "torch.jit is deprecated upstream" in err[0], err
    assert "--format onnx" in err[0] and "torch.export" in err[0]
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "deprecated upstream" in " ".join(capsys.readouterr().out.split())
