"""The first hour of a new user: small surprises removed (each test failed before its fix)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def test_predicting_a_read_only_image_gives_no_torch_warning():
    """PIL gives read-only arrays; torch warned "The given NumPy array is not writable" once per
    process. A fresh process is needed: torch shows that warning only once."""
    code = ("import warnings, numpy as np, sys\n"
            f"sys.path.insert(0, {str(TESTS)!r})\n"
            "from partsup.model.partial import build_model\n"
            "from partsup.manager import load\n"
            "regs = load(['tiny_plugin'], disabled=())\n"
            "m = build_model({'backbone': {'name': 'tiny'}}, regs)\n"
            "a = np.zeros((8, 8, 3), np.uint8); a.flags.writeable = False\n"
            "warnings.simplefilter('error')\n"
            "m.preprocess(a)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "not writable" not in proc.stderr


def test_scientific_notation_is_a_number_in_recipes_and_overrides(tmp_path):
    """YAML 1.1 reads ``1e-3`` as a string; docs/recipes.md shows ``lr: 1e-3``."""
    import yaml

    from helpers import TINY
    from partsup.recipe import load_recipe, parse_override
    from partsup.manager import load
    regs = load(["tiny_plugin"], disabled=())
    path = tmp_path / "r.yaml"
    text = yaml.safe_dump(TINY).replace("lr: 0.01", "lr: 2e-3")
    assert "lr: 2e-3" in text
    path.write_text(text)
    assert load_recipe(path, registries=regs)["train"]["optimizer"]["lr"] == 0.002
    recipe = load_recipe(path, ["train.optimizer.lr=1e-3", "train.grad_clip=1E+1"],
                         registries=regs)
    assert recipe["train"]["optimizer"]["lr"] == 0.001 and recipe["train"]["grad_clip"] == 10.0
    assert parse_override("a=-5e-1") == (["a"], -0.5)
    assert parse_override("a=e5") == (["a"], "e5")  # not a number: stays a string


def test_checkpoint_run_folder_means_its_best_pt(tmp_path):
    import json

    import pytest

    from partsup.errors import CheckpointError
    from helpers import make_checkpoint, run_cli, toy_registries
    regs = toy_registries()
    root = tmp_path / "data"
    root.mkdir()
    run = tmp_path / "run"
    make_checkpoint(run / "best.pt", regs, root)
    assert run_cli(regs, ["calibrate", "--checkpoint", str(run), "--w", "0", "--s1", "0.5",
                          "--a1", "10"]) == 0
    assert (run / "calibration" / "calibration.json").is_file()
    assert run_cli(regs, ["evaluate", "--dataset", "toy", "--data-root", str(root),
                          "--checkpoint", str(run), "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["calibrated"] is True
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    (tmp_path / "empty" / "checkpoints" / "iter-00000004.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty is a folder without best\.pt.*"
                                              r"checkpoints/iter-00000004\.pt"):
        run_cli(regs, ["evaluate", "--dataset", "toy", "--data-root", str(root),
                       "--checkpoint", str(tmp_path / "empty"), "--out", str(tmp_path / "e2")])


@pytest.mark.slow
def test_resume_hint_keeps_the_set_overrides(tmp_path, monkeypatch, capsys):
    import re
    import shlex

    import yaml

    import partsup.training.loop as train
    from helpers import tiny_recipe
    from partsup.cli.main import main
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe({"train.val_every": 0})))
    out = tmp_path / "run"
    monkeypatch.setattr(train.StopRequest, "requested", property(lambda self: True))
    assert main(["train", str(recipe), "--set", "train.iterations=5", "--set",
                 "train.checkpoint_every=5", "--out", str(out)]) == 143
    monkeypatch.undo()
    err = " ".join(capsys.readouterr().err.split())
    hint = re.search(r"continue with: (partsup train .*? --resume)", err).group(1)
    assert "recipe.yaml" in err  # says where the resolved recipe (and the overrides) are
    assert main(shlex.split(hint)[1:]) == 0
    assert [i for i, _ in train.RunDir(out).existing()][-1] == 5  # not the recipe's 6
    assert yaml.safe_load((out / "recipe.yaml").read_text())["train"]["iterations"] == 5


def test_did_you_mean_ignores_case(registries):
    import pytest

    from partsup.errors import RecipeError
    with pytest.raises(RecipeError, match=r"--dataset: unknown dataset 'AMIDA13'\. Did you mean "
                                          r"'amida13'\?"):
        registries.datasets.get("AMIDA13", where="--dataset")
    with pytest.raises(RecipeError, match=r"Did you mean 'icpr2014'\?"):
        registries.datasets.get("ICPR-2014", where="--dataset")


def test_default_output_folders_are_git_ignored():
    """``evaluate`` writes eval/ and ``predict`` predictions/ into the working folder by default."""
    import shutil

    import pytest
    repo = TESTS.parent
    if shutil.which("git") is None or not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("eval/amida13-test/metrics.json", "predictions/summary.csv"):
        proc = subprocess.run(["git", "check-ignore", "-q", path], cwd=repo)
        assert proc.returncode == 0, f"{path} is not ignored by .gitignore"


def test_plugins_table_shows_whole_summaries(registries):
    import io

    from rich.console import Console

    from partsup.cli.main import Context, build_parser
    buf = io.StringIO()
    args = build_parser(registries).parse_args(["plugins"])
    args._command.run(args, Context(registries=registries,
                                    console=Console(file=buf, width=400)))
    text = buf.getvalue()
    assert "bbox = [x1, y1, x2, y2]" in text  # not eaten as rich markup
    summary = registries.protocols.entry("icpr2014").summary
    assert summary.endswith(".") and summary in text  # the whole first paragraph


def test_plugins_are_recorded_in_the_run_and_reloaded_by_predict(tmp_path, monkeypatch):
    """--plugin after the subcommand works; predict needs no --plugin for a run that used one."""
    import numpy as np
    import yaml
    from PIL import Image

    from partsup.checkpoint.files import load_checkpoint
    from helpers import DROP, tiny_recipe
    from partsup.cli.main import main
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe({"plugins": DROP, "train.iterations": 2,
                                                  "train.val_every": 0})))
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(run), "--plugin", "tiny_plugin"]) == 0
    assert load_checkpoint(run / "best.pt")["recipe"]["plugins"] == ["tiny_plugin"]
    assert yaml.safe_load((run / "recipe.yaml").read_text())["plugins"] == ["tiny_plugin"]
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "--checkpoint", str(run), "--out",
                 str(tmp_path / "pred"), "--format", "csv"]) == 0
    assert (tmp_path / "pred" / "a.csv").is_file()


def test_partmitosis_without_data_names_everything_missing_at_once(tmp_path):
    import pytest

    from partsup.errors import RecipeError
    from partsup.recipe import load_run
    recipe = TESTS.parent / "recipes" / "partmitosis.yaml"
    with pytest.raises(RecipeError) as info:
        load_run(recipe, env={})
    text = str(info.value)
    assert "${PARTSUP_DATA}" in text and "${PARTSUP_WEIGHTS}" in text
    assert "data.strong.root" in text and "data.weak.root" in text
    assert "partsup datasets" in text and "model.backbone.weights=null" in text


def test_missing_data_folders_and_weights_are_reported_together(tmp_path):
    import pytest

    from partsup.errors import PartsupError
    from partsup.recipe import load_run
    from partsup.training.loop import fit
    env = {"PARTSUP_DATA": str(tmp_path / "data"), "PARTSUP_WEIGHTS": str(tmp_path / "w")}
    recipe, regs = load_run(TESTS.parent / "recipes" / "partmitosis.yaml",
                            ["device=cpu"], env=env)
    with pytest.raises(PartsupError) as info:
        fit(recipe, regs, tmp_path / "run")
    text = str(info.value)
    for what in ("icpr2012", "amida13", "fcn32s_from_caffe.pth", "model.backbone.weights=null",
                 "partsup datasets"):
        assert what in text, what
    assert not (tmp_path / "run").exists()


def test_empty_label_file_error_names_the_allow_empty_option(registries, tmp_path):
    import pytest

    from partsup.errors import DataError
    from partsup.data.readers import Problems, read_csv_rows
    csv = tmp_path / "a.csv"
    csv.write_text("")
    with pytest.raises(DataError, match=r"a\.csv: empty label file .*allow_empty: true"):
        read_csv_rows(csv, Problems("icpr2012", strict=True), 2)


def _readme_block(heading: str) -> list[str]:
    """The lines of the first ```bash block after ``heading`` in README.md."""
    text = (TESTS.parent / "README.md").read_text()
    block = text.split(heading, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_readme_using_it_runs_as_written_from_a_fresh_clone(tmp_path, monkeypatch):
    """Each line of README "Using it", in order, in an empty folder; only made tiny (fewer and
    smaller images, iterations, batch, CPU), never reordered or completed."""
    import shlex

    from partsup.cli.main import main
    tiny = {"synth": ["--size", "96", "--images", "8"],
            "train": ["--set", "train.iterations=2", "--set", "train.val_every=2", "--set",
                      "train.batch_size=2", "--set", "data.patch.size=64", "--set",
                      "detect.tile=96", "--set", "detect.overlap=16", "--device", "cpu"],
            "calibrate": ["--device", "cpu"], "evaluate": ["--device", "cpu", "--no-overlays"],
            "predict": ["--device", "cpu"]}
    monkeypatch.chdir(tmp_path)
    lines = _readme_block("## Using it")
    assert lines[0] == ". .venv/bin/activate"
    ran = []
    for line in lines[1:]:
        words = shlex.split(line)
        if words[0] == "export":
            key, value = words[1].split("=", 1)
            monkeypatch.setenv(key, value)
            continue
        assert words[0] == "partsup", line
        args = [str(TESTS.parent / w) if w.startswith("recipes/") else w for w in words[1:]]
        rc = main(args + tiny.get(args[0], []))
        assert rc == 0, line
        ran.append(args[0])
    assert ran == ["plugins", "datasets", "synth", "synth", "train", "calibrate", "evaluate",
                   "predict"]
    assert (tmp_path / "eval" / "amida13-test" / "metrics.json").is_file()
    assert (tmp_path / "predictions" / "summary.csv").is_file()


def test_backbone_contract_is_checked_whole():
    """check_branch covers everything partsup calls on a backbone: a forward without
    ``weight`` (needed by weight transfer) is refused when the backbone is built."""
    import pytest
    import torch
    from torch import nn

    from partsup.errors import PluginError
    from partsup.model.partial import check_branch

    class NoWeight(nn.Module):
        feature_channels = 4
        normalization = {"mean": [0, 0, 0], "std": [1, 1, 1], "scale": 255, "bgr": False}

        def __init__(self):
            super().__init__()
            self.semantic = nn.Conv2d(4, 2, 1)

        def features(self, x):
            return x.repeat(1, 2, 1, 1)[:, :4]

        def head(self, logits, size):
            return logits

        def forward(self, x):
            return self.head(self.semantic(self.features(x)), x.shape[-2:])
    with pytest.raises(PluginError, match=r"forward\(x, weight=None\)"):
        check_branch(NoWeight(), "no_weight")
    assert torch.is_tensor(NoWeight()(torch.zeros(1, 3, 4, 4)))


@pytest.mark.slow
def test_help_and_plugins_do_not_import_the_smp_and_timm_stack():
    """CLI start-up: --help and `partsup plugins` import no model zoo (smp, timm, torchvision
    cost seconds); they are imported when an smp backbone is built."""
    code = ("import sys, io, contextlib\n"
            "from partsup.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n"
            "        main(['--help'])\n"
            "    except SystemExit:\n"
            "        pass\n"
            "    main(['plugins'])\n"
            "heavy = [m for m in ('segmentation_models_pytorch', 'timm', 'torchvision')"
            " if m in sys.modules]\n"
            "print(heavy)\n"
            "from partsup.manager import load\n"
            "load(disabled=()).backbones.build('smp', arch='Unet', encoder='resnet18',"
            " encoder_depth=3, decoder_channels=[16, 8, 4])\n"
            "assert 'segmentation_models_pytorch' in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_f1_vs_w_legend_hides_no_data(registries, tmp_path, monkeypatch):
    """The legend sat in the lower right, over the points at w = 0.8-1.0."""
    import matplotlib.pyplot as plt
    import numpy as np

    from partsup.evaluation.calibration import MapCache, plot_f1_vs_w, sweep
    from partsup.inference.detector import DetectParams
    weak = np.full((40, 40), 0.01, np.float32)
    strong = weak.copy()
    weak[28:33, 28:33] = 0.9  # the weak branch fires on a mimic only: F1 0 at high w
    strong[8:13, 8:13] = 0.9
    images = [MapCache(tmp_path).add("a", weak, strong, [[10, 10]], 0.25)]
    res = sweep(images, DetectParams(sigma=0.0), registries,
                registries.protocols.build("pixels", radius_px=5),
                w=[round(0.1 * i, 1) for i in range(11)], s1=[0.5], a1=[0])
    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    plot_f1_vs_w(res, tmp_path / "f.png")
    fig = figs[0]
    ax = fig.axes[0]
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    for line in ax.get_lines():
        for x, y in ax.transData.transform(line.get_xydata()):
            assert not legend.contains(x, y), (line.get_label(), x, y)
    # whatever the values: the legend lies beside the plotting area, not on it
    assert not legend.overlaps(ax.get_window_extent())
    plt.close(fig)


def test_make_venv_can_take_the_cpu_torch_wheel(tmp_path):
    """`make venv` installs torch from PyPI (the CUDA build on Linux, about 6 GB); with
    TORCH_INDEX it first installs torch from that index, e.g. PyTorch's CPU-only wheels."""
    import shutil

    import pytest
    if shutil.which("make") is None:
        pytest.skip("no make")
    repo = TESTS.parent
    index = "https://download.pytorch.org/whl/cpu"
    dry = subprocess.run(["make", "-n", "-B", "venv", f"VENV={tmp_path / 'v'}",
                          f"TORCH_INDEX={index}"], cwd=repo, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    torch_line = next(i for i, ln in enumerate(lines) if f"--index-url {index}" in ln)
    assert "torch" in lines[torch_line]
    assert torch_line < next(i for i, ln in enumerate(lines) if '-e ".[test]"' in ln)
    plain = subprocess.run(["make", "-n", "-B", "venv", f"VENV={tmp_path / 'v'}"], cwd=repo,
                           capture_output=True, text=True)
    assert "--index-url" not in plain.stdout  # the default stays plain PyPI
    readme = (repo / "README.md").read_text()
    assert f"TORCH_INDEX={index}" in readme
