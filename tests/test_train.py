"""Training: checkpoint I/O (atomic, weights_only, clear errors), optimisers, the training loop."""
from __future__ import annotations

import errno
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from partsup.checkpoint.files import (load_checkpoint, load_model, save_checkpoint,
                                      update_detect_params)
from partsup.checkpoint.payload import FORMAT
from partsup.training.resume import rng_state, set_rng_state
from partsup.errors import CheckpointError
from partsup.training.optim import OPTIMIZERS, adamw, sgd_paper, warmup_cosine

from helpers import TINY, load_tiny


def _model(regs, mode="transfer"):
    from partsup.model.partial import build_model
    return build_model({"backbone": {"name": "tiny"}, "mode": mode, "stop_gradient": True,
                        "shared_backbone": False,
                        "transfer": {"name": "mlp", "layers": 2, "activation": "leaky_relu"}},
                       regs)


def test_save_load_roundtrip_and_atomic_replace(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "c.pt"
    save_checkpoint(path, {"recipe": {"a": 1}, "model": {"w": torch.ones(3)}, "detect": None})
    save_checkpoint(path, {"recipe": {"a": 2}, "model": {"w": torch.zeros(3)}, "detect": None})
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == FORMAT and ckpt["recipe"] == {"a": 2}
    assert torch.equal(ckpt["model"]["w"], torch.zeros(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.pt"]  # no temp file left


def test_full_disk_is_clear_error_and_keeps_old_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"recipe": {}, "model": {"w": torch.ones(1)}})

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError, match="no space left on device"):
        save_checkpoint(path, {"recipe": {}, "model": {"w": torch.zeros(1)}})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(1))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_unwritable_folder_is_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where a folder should be: cannot create it, even as root
    with pytest.raises(CheckpointError, match="cannot create checkpoint folder"):
        save_checkpoint(blocker / "run" / "c.pt", {"recipe": {}, "model": {}})


@pytest.mark.parametrize("content,match", [
    (None, "not found"),
    (b"not a torch file", "not a readable torch checkpoint"),
    ("state_dict", "not a partsup checkpoint"),
])
def test_load_rejects_non_partsup_files(tmp_path: Path, content, match) -> None:
    path = tmp_path / "x.pt"
    if content == "state_dict":
        torch.save({"conv.weight": torch.ones(2)}, path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_load_refuses_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "recipe": {}, "model": {}, "obj": Path("/")}, path)
    with pytest.raises(CheckpointError, match="not a partsup checkpoint"):
        load_checkpoint(path)


def test_load_model_roundtrip_and_detect_update(tmp_path: Path, tiny_regs) -> None:
    model = _model(tiny_regs).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(path, {"recipe": {"model": {"backbone": {"name": "tiny", "weights": "/no"},
                                                "mode": "transfer", "stop_gradient": True,
                                                "shared_backbone": False,
                                                "transfer": {"name": "mlp", "layers": 2,
                                                             "activation": "leaky_relu"}}},
                           "model": model.state_dict(), "normalization": model.normalization,
                           "detect": None})
    loaded, ckpt = load_model(path, tiny_regs)
    x = torch.rand(1, 3, 16, 16) * 255
    with torch.no_grad():
        a, b = model(model.normalize(x)), loaded(loaded.normalize(x))
    assert torch.equal(a.weak, b.weak) and torch.equal(a.strong, b.strong)
    update_detect_params(path, {"w": 0.3, "s1": 0.6, "a1": 20.0, "sigma": 1.0, "area_unit": "px"})
    assert load_checkpoint(path)["detect"]["w"] == 0.3
    state = dict(ckpt["model"])
    state.pop(next(iter(state)))
    save_checkpoint(path, {**ckpt, "model": state})
    with pytest.raises(CheckpointError, match="missing tensor"):
        load_model(path, tiny_regs)


def test_rng_state_roundtrip_through_file(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "r.pt", {"recipe": {}, "model": {}, "rng": rng_state()})
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == a


def test_sgd_paper_groups(tiny_regs) -> None:
    model = _model(tiny_regs)
    model.weak.conv1.weight.requires_grad_(False)  # a frozen layer (like upscore) is excluded
    opt, sched = sgd_paper(model)
    assert sched is None and opt.defaults["momentum"] == 0.99
    ids = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert id(model.weak.conv1.weight) not in ids
    w, b = ids[id(model.weak.conv2.weight)], ids[id(model.weak.conv2.bias)]
    assert (w["lr"], w["weight_decay"]) == (1e-10, 5e-4)
    assert (b["lr"], b["weight_decay"]) == (2e-10, 0.0)
    # transfer mode: the strong branch's own semantic layer is unused and frozen
    assert id(model.strong.semantic.weight) not in ids


def test_adamw_warmup_then_cosine(tiny_regs) -> None:
    opt, sched = adamw(_model(tiny_regs), lr=1e-2, warmup=4, iterations=20, min_lr_ratio=0.1)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(2.5e-3) and lrs[3] == pytest.approx(1e-2)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    assert lrs[-1] == pytest.approx(1e-3, rel=0.05)
    f = warmup_cosine(0, 10, 0.0)
    assert f(0) == 1.0 and f(9) == pytest.approx(0.0)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_registered_optimizer_steps(name: str, tiny_regs) -> None:
    model = _model(tiny_regs)
    entry = tiny_regs.optimizers.entry(name)
    kwargs = {"iterations": 5} if "iterations" in entry.factory.__code__.co_varnames else {}
    opt, sched = entry.factory(model, **kwargs)
    before = model.weak.conv1.weight.detach().clone()
    out = model(torch.rand(2, 3, 16, 16))
    (out.weak.sum() + out.strong.sum()).backward()
    opt.step()
    if sched is not None:
        sched.step()
    assert not torch.equal(before, model.weak.conv1.weight)


# -- the training loop ----------------------------------------------------------------------------

import json as _json

import yaml as _yaml

from partsup.errors import PartsupError, RecipeError
from partsup.training.loop import fit
from partsup.training.run import build, prepare_stage
from partsup.training.rundir import RunDir
from partsup.training.stages import Stage, plan_stages
from partsup.training.step import NonFiniteLoss, compute_losses


def _params(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _changed(before, after) -> list[bool]:
    return [not torch.equal(a, b) for a, b in zip(before, after)]


def test_fit_writes_the_run_folder(tmp_path: Path, tiny_regs) -> None:
    result = fit(load_tiny(tiny_regs), tiny_regs, tmp_path / "run")
    run = tmp_path / "run"
    assert result.completed and result.iteration == 6 and result.best_path == run / "best.pt"
    assert sorted(p.name for p in run.iterdir()) == [
        "best.pt", "checkpoints", "loss.png", "metrics.jsonl", "recipe.yaml", "val_f1.png"]
    assert [i for i, _ in RunDir(run).existing()] == [4, 6]  # keep_last 2 of 2, 4, 6
    resolved = _yaml.safe_load((run / "recipe.yaml").read_text())
    assert resolved["train"]["iterations"] == 6 and resolved["loss"]["weak"]["name"] == "concentric"
    records = [_json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["iteration"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert all({"loss_weak", "loss_strong", "lr", "it_s"} <= set(r) for r in steps)
    assert all(r["loss"] == pytest.approx(r["loss_weak"] + r["loss_strong"], rel=1e-5)
               for r in steps)
    assert [r["iteration"] for r in records if "val_f1" in r] == [3, 6]
    ckpt = load_checkpoint(run / "checkpoints" / "iter-00000006.pt")
    assert {"optimizer", "scheduler", "rng", "sampler", "best", "normalization"} <= set(ckpt)
    assert ckpt["iteration"] == 6 and ckpt["detect"] is None
    best = load_checkpoint(run / "best.pt")
    assert "optimizer" not in best and best["best"]["metric"] == result.best_f1


def test_cpu_runs_are_repeatable(tmp_path: Path, tiny_regs) -> None:
    recipe = load_tiny(tiny_regs, "train.iterations=3", "train.val_every=0")
    fit(recipe, tiny_regs, tmp_path / "a")
    fit(recipe, tiny_regs, tmp_path / "b")
    a = load_checkpoint(RunDir(tmp_path / "a").checkpoint_path(3))["model"]
    b = load_checkpoint(RunDir(tmp_path / "b").checkpoint_path(3))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = load_tiny(tiny_regs, "train.iterations=3", "train.val_every=0", "seed=2")
    fit(other, tiny_regs, tmp_path / "c")
    c = load_checkpoint(RunDir(tmp_path / "c").checkpoint_path(3))["model"]
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_strong_loss_only_on_set_a(tiny_regs) -> None:
    run = build(load_tiny(tiny_regs, "model.backbone.dropout=0.0"), tiny_regs)
    stage = plan_stages(run.recipe)[0]
    prepare_stage(run, stage)
    run.data.set_stage(stage)
    batch = run.data.batch(0)
    assert sorted(batch["is_strong"].tolist()) == [False, True]  # strong_fraction 0.5
    a, b = int(batch["is_strong"].int().argmax()), int((~batch["is_strong"]).int().argmax())
    batch["strong"][b] = 1  # a set-B "mask" must never be used
    with torch.no_grad():
        total, weak, strong = compute_losses(run, batch, "joint")
    only_a = {k: (v[a:a + 1] if hasattr(v, "shape") else v) for k, v in batch.items()}
    # mean reduction: the strong loss of the batch is the strong loss of its set-A sample
    with torch.no_grad():
        alone = float(compute_losses(run, only_a, "joint")[2])
    assert float(strong) == pytest.approx(alone, rel=1e-5)
    batch["is_strong"][:] = False
    with torch.no_grad():
        assert float(compute_losses(run, batch, "joint")[2]) == 0.0
    assert float(total) == pytest.approx(float(weak) + float(strong))


def test_stagewise_freezes_what_each_stage_does_not_train(tmp_path: Path, tiny_regs) -> None:
    recipe = load_tiny(tiny_regs, "train.schedule=stagewise", "train.iterations=4",
                       "train.weak_iterations=2", "train.val_every=0", "train.checkpoint_every=1",
                       "train.keep_last=10")
    assert [(s.name, s.start, s.end) for s in plan_stages(recipe)] == [("weak", 0, 2),
                                                                        ("strong", 2, 4)]
    fit(recipe, tiny_regs, tmp_path / "run")
    runs = RunDir(tmp_path / "run")
    w = [load_checkpoint(runs.checkpoint_path(i))["model"] for i in (1, 2, 4)]
    weak = [k for k in w[0] if k.startswith("weak.")]
    strong = [k for k in w[0] if k.startswith(("strong.", "transfer."))
              and not k.startswith("strong.semantic")]
    assert all(torch.equal(w[0][k], w[1][k]) for k in strong)       # weak stage: strong still
    assert any(not torch.equal(w[0][k], w[1][k]) for k in weak)
    assert all(torch.equal(w[1][k], w[2][k]) for k in weak)         # strong stage: weak frozen
    assert any(not torch.equal(w[1][k], w[2][k]) for k in strong)
    assert load_checkpoint(runs.checkpoint_path(4))["stage"] == "strong"


def test_strong_stage_draws_set_a_only(tiny_regs) -> None:
    recipe = load_tiny(tiny_regs, "train.schedule=stagewise")
    run = build(recipe, tiny_regs)
    run.data.set_stage(Stage("strong", 3, 6))
    assert all(run.data.batch(i)["is_strong"].all() for i in (3, 4, 5))


@pytest.mark.parametrize("mode", ["weak_only", "independent"])
def test_baseline_modes_train(tmp_path: Path, tiny_regs, mode: str) -> None:
    recipe = load_tiny(tiny_regs, f"model.mode={mode}", "train.schedule=stagewise",
                       "train.iterations=2", "train.val_every=2")
    stages = plan_stages(recipe)
    assert [s.name for s in stages] == (["weak"] if mode == "weak_only" else ["weak", "strong"])
    result = fit(recipe, tiny_regs, tmp_path / mode)
    assert result.completed and result.best_f1 is not None


def test_gradient_clipping_bounds_the_update(tmp_path: Path, tiny_regs) -> None:
    recipe = load_tiny(tiny_regs, "train.iterations=1", "train.val_every=0",
                       "train.optimizer={name: sgd_paper, lr: 1.0, momentum: 0.0, "
                       "weight_decay: 0.0, bias_lr_mult: 1.0}", "train.grad_clip=0.001")
    run = build(recipe, tiny_regs)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    fit(recipe, tiny_regs, tmp_path / "run")
    after = load_checkpoint(RunDir(tmp_path / "run").checkpoint_path(1))["model"]
    step = torch.sqrt(sum(((after[k] - before[k]) ** 2).sum() for k in before))
    assert 0 < float(step) <= 0.001 + 1e-7  # lr 1: the update is the clipped gradient


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path, tiny_regs) -> None:
    recipe = load_tiny(tiny_regs, "train.iterations=50", "train.val_every=0",
                       "train.checkpoint_every=1", "train.keep_last=1",
                       "train.optimizer={name: sgd_paper, lr: 1.0e+30, momentum: 0.0}")
    with pytest.raises(NonFiniteLoss, match=r"iteration \d+: loss is not finite.*last good "
                                            r"checkpoint is .*iter-\d+\.pt"):
        fit(recipe, tiny_regs, tmp_path / "run")
    (i, path), = RunDir(tmp_path / "run").existing()
    assert 0 < i < 50
    assert all(torch.isfinite(t).all() for t in load_checkpoint(path)["model"].values())


def test_unwritable_output_is_a_clear_error(tmp_path: Path, tiny_regs) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PartsupError, match="cannot write to the output folder"):
        fit(load_tiny(tiny_regs), tiny_regs, blocker / "run")


def test_stagewise_recipe_checks(tiny_regs) -> None:
    with pytest.raises(RecipeError, match="weak_iterations"):
        plan_stages(load_tiny(tiny_regs, "train.schedule=stagewise", "train.weak_iterations=6"))


def test_train_command(tmp_path: Path, tiny_regs, monkeypatch) -> None:
    from partsup.cli.main import main
    path = tmp_path / "tiny.yaml"
    path.write_text(_yaml.safe_dump(TINY))
    out = tmp_path / "run"
    rc = main(["train", str(path), "--set", "train.iterations=2", "--set", "train.val_every=0",
               "--out", str(out), "--device", "cpu"])
    assert rc == 0 and (out / "best.pt").is_file()
    assert _yaml.safe_load((out / "recipe.yaml").read_text())["train"]["iterations"] == 2
    assert main(["train", str(path), "--out", str(out)]) == 2  # exists: needs --resume
    rc = main(["train", str(out), "--resume", "--set", "train.iterations=3"])  # a run folder
    assert rc == 0 and RunDir(out).existing()[-1][0] == 3


def test_weak_labels_per_set(tiny_regs) -> None:
    """labels.weak_set_a: set-A items get their own weak labels (e.g. ICPR 2012 random radii
    while ICPR 2014 uses r15/R30)."""
    recipe = load_tiny(tiny_regs, "labels.weak_set_a={name: disk, radius: 1.0}",
                       "data.patch.positive_fraction=1.0", "train.batch_size=8")
    run = build(recipe, tiny_regs)
    run.data.set_stage(plan_stages(recipe)[0])
    batch = run.data.batch(0)
    area = (batch["weak"] == 1).flatten(1).sum(1)
    a, b = area[batch["is_strong"]], area[~batch["is_strong"]]
    assert len(a) and len(b) and int(a.max()) <= 5 * 2 < int(b.min())  # r=1 disks vs r=4


@pytest.mark.slow
def test_demo_runs_end_to_end_on_tiny_data(tmp_path: Path, monkeypatch, capsys) -> None:
    """`partsup demo` wiring (data generation, two trainings, calibrate, evaluate, table) with a
    tiny model and tiny synthetic data; the real demo's timing and F1 are in docs/performance.md."""
    from partsup.cli.main import main
    from partsup_mitosis.commands import demo
    monkeypatch.setattr(demo, "DEMO_DATA", {
        "icpr2012": {"like": "icpr2012", "n_images": 3, "seed": 1, "size": 128,
                     "val_fraction": 0.0, "test_fraction": 0.0},
        "amida13": {"like": "amida13", "n_images": 12, "seed": 2, "size": 128,
                    "val_fraction": 0.25, "test_fraction": 0.25}})
    out = tmp_path / "demo"
    monkeypatch.setenv("PARTSUP_DEMO_DATA", str(out / "data"))
    recipe = {**TINY, "plugins": [],
              "data": {"strong": {"name": "icpr2012", "root": "${PARTSUP_DEMO_DATA}/icpr2012",
                                  "split": "train", "allow_empty": True},
                       **{k: {"name": "amida13", "root": "${PARTSUP_DEMO_DATA}/amida13",
                              "split": s} for k, s in (("weak", "train"), ("val", "val"),
                                                       ("test", "test"))},
                       "patch": {"size": 32}},
              "train": {**TINY["train"], "iterations": 2, "val_every": 2},
              "calibrate": {"w": [0.5, 1.0], "s1": [0.5], "a1": [0]},
              "eval": {"protocol": "amida13"}}
    path = tmp_path / "tiny-demo.yaml"
    path.write_text(_yaml.safe_dump(recipe))
    argv = ["--plugin", "tiny_plugin", "demo", "--recipe", str(path), "--out", str(out),
            "--device", "cpu"]
    assert main(argv) in (0, 1)  # 1: the tiny model misses the F1 target, as it should
    summary = _json.loads((out / "summary.json").read_text())
    assert [r["key"] for r in summary["rows"]] == ["partmitosis", "weak_only"]
    for row in summary["rows"]:
        assert {"tp", "fp", "fn", "f1"} <= set(row["test"]) and 0 <= row["val"]["f1"] <= 1
        assert load_checkpoint(row["checkpoint"])["detect"]["w"] in (0.5, 1.0)  # calibrated
    assert load_checkpoint(out / "weak_only" / "best.pt")["recipe"]["model"]["mode"] == \
        "weak_only"
    text = capsys.readouterr().out
    assert "PartMitosis" in text and "weak-only" in text and "test F1" in text
    main(argv)  # a second run reuses the completed trainings
    assert "reusing the completed run" in capsys.readouterr().out


def test_full_disk_inside_torch_names_the_folder(tmp_path: Path, monkeypatch) -> None:
    """torch reports a full disk as "[enforce fail at inline_container.cc:672] ... file write
    failed": say "no space left on device" and name the folder."""
    import shutil
    from collections import namedtuple

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed")
    monkeypatch.setattr(torch, "save", full)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 ** 9, 10 ** 9, 0))
    with pytest.raises(CheckpointError, match=rf"cannot write checkpoint .*c\.pt: no space left "
                                              rf"on device in {tmp_path}"):
        save_checkpoint(tmp_path / "c.pt", {"recipe": {}, "model": {"w": torch.ones(1)}})
    assert list(tmp_path.iterdir()) == []
