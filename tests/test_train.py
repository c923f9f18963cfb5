"""Training: checkpoint I/O (atomic, weights_only, clear errors), optimisers, the training loop."""
from __future__ import annotations

import errno
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from partsup.checkpoint import (FORMAT, load_checkpoint, load_model, rng_state, save_checkpoint,
                                set_rng_state, update_detect_params)
from partsup.errors import CheckpointError
from partsup.optim import OPTIMIZERS, adamw, sgd_paper, warmup_cosine

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def tiny_regs():
    from partsup.plugins import load
    return load(["tiny_plugin"], disabled=())


def _model(regs, mode="transfer"):
    from partsup.model import build_model
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
