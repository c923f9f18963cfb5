"""PartialModel: modes, stop-gradient, freezing, probabilities, every backbone x transfer."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from partsup import Registries, hookimpl, make_plugin_manager
from partsup.errors import PluginError, RecipeError
from partsup.model.partial import (NORMALIZATIONS, Branch, ModelOutput, PartialModel, build_model,
                           normalize)

#: small options per bundled backbone, so each runs in well under a second on one core
SMALL = {
    "fcn32s": {"fc_channels": 16},
    "smp": {"arch": "Unet", "encoder": "resnet18", "encoder_depth": 3,
            "decoder_channels": [16, 8, 8]},
}


class TinyBranch(Branch):
    """conv3x3 -> ReLU -> 2x2 average pool; head = bilinear resize. For tests only."""

    def __init__(self, channels: int = 6) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.semantic = nn.Conv2d(channels, 2, 1)
        self.feature_channels = channels
        self.normalization = dict(NORMALIZATIONS["imagenet"])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.conv(x)), 2, ceil_mode=True)

    def head(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def make_tiny(channels: int = 6) -> TinyBranch:
    """A tiny test backbone."""
    return TinyBranch(channels)


tiny_plugin = types.SimpleNamespace(
    partsup_register_backbones=hookimpl(lambda register: register("tiny", make_tiny)))


@pytest.fixture
def regs() -> Registries:
    return Registries.from_pm(make_plugin_manager(entry_points=False, objects=[tiny_plugin]))


def section(**kw) -> dict:
    base = {"backbone": {"name": "tiny"}, "mode": "transfer", "stop_gradient": True,
            "shared_backbone": False,
            "transfer": {"name": "mlp", "layers": 2, "activation": "leaky_relu"}}
    base.update(kw)
    return base


def randomize_semantic(model: PartialModel) -> None:
    with torch.no_grad():
        model.weak.semantic.weight.normal_()


def strong_loss(out: ModelOutput) -> torch.Tensor:
    assert out.strong is not None
    return F.cross_entropy(out.strong, torch.ones(out.strong.shape[0], *out.strong.shape[2:],
                                                  dtype=torch.long))


def weak_loss(out: ModelOutput) -> torch.Tensor:
    return F.cross_entropy(out.weak, torch.ones(out.weak.shape[0], *out.weak.shape[2:],
                                                dtype=torch.long))


def grad_norm(params) -> float:
    return float(sum(p.grad.abs().sum() for p in params if p.grad is not None))


# -- modes and outputs ---------------------------------------------------------------------------
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("mode", ["transfer", "independent", "weak_only"])
def test_modes_give_full_size_logits_and_probabilities(regs, mode: str, shared: bool) -> None:
    model = build_model(section(mode=mode, shared_backbone=shared), regs)
    x = torch.randn(2, 3, 13, 10)
    out = model(x)
    assert isinstance(out, ModelOutput) and out.weak.shape == (2, 2, 13, 10)
    if mode == "weak_only":
        assert out.strong is None and model.strong is None and model.transfer is None
    else:
        assert out.strong is not None and out.strong.shape == (2, 2, 13, 10)
    assert (model.transfer is not None) == (mode == "transfer")
    assert (model.strong is None) == (shared or mode == "weak_only")
    p_weak, p_strong = model.probabilities(x)
    assert p_weak.shape == (2, 13, 10) and p_weak.dtype == torch.float32
    assert torch.allclose(p_weak, torch.softmax(out.weak, 1)[:, 1])
    assert float(p_weak.detach().min()) >= 0 and float(p_weak.detach().max()) <= 1
    assert (p_strong is None) == (mode == "weak_only")


def test_transfer_strong_logits_use_gamma_weights_without_bias(regs) -> None:
    model = build_model(section(), regs).eval()
    randomize_semantic(model)
    x = torch.randn(1, 3, 8, 8)
    w = model.transfer(model.weak.semantic.weight.detach().reshape(2, -1)).reshape(2, -1, 1, 1)
    expected = model.strong.head(F.conv2d(model.strong.features(x), w), (8, 8))
    assert torch.allclose(model(x).strong, expected, atol=1e-6)


def test_shared_backbone_uses_one_trunk(regs) -> None:
    model = build_model(section(shared_backbone=True), regs).eval()
    randomize_semantic(model)
    x = torch.randn(1, 3, 8, 8)
    feats = model.weak.features(x)
    expected = model.weak.head(F.conv2d(feats, model.strong_weight()), (8, 8))
    assert torch.allclose(model(x).strong, expected, atol=1e-6)
    n_trunk = sum(p.numel() for p in model.weak.parameters())
    n_all = sum(p.numel() for p in model.parameters())
    assert n_all == n_trunk + sum(p.numel() for p in model.transfer.parameters())


def test_unknown_mode_and_bad_backbone_are_clear_errors(regs) -> None:
    with pytest.raises(RecipeError, match="mode"):
        build_model(section(mode="both"), regs)
    with pytest.raises(RecipeError, match="unknown backbone"):
        build_model(section(backbone={"name": "tinny"}), regs)

    class NoSemantic(nn.Module):
        feature_channels = 4
        normalization = NORMALIZATIONS["unit"]

        def features(self, x):
            return x

        def head(self, x, size):
            return x
    bad = types.SimpleNamespace(partsup_register_backbones=hookimpl(
        lambda register: register("bad", lambda: NoSemantic())))
    regs2 = Registries.from_pm(make_plugin_manager(entry_points=False, objects=[bad]))
    with pytest.raises(PluginError, match="semantic"):
        build_model(section(backbone={"name": "bad"}), regs2)


# -- gradients -----------------------------------------------------------------------------------
@pytest.mark.parametrize("shared", [False, True])
def test_stop_gradient_strong_loss_trains_gamma_not_w_weak(regs, shared: bool) -> None:
    model = build_model(section(shared_backbone=shared), regs)
    randomize_semantic(model)
    strong_loss(model(torch.randn(2, 3, 8, 8))).backward()
    w = model.weak.semantic.weight
    assert w.grad is None or torch.count_nonzero(w.grad) == 0
    assert grad_norm(model.transfer.parameters()) > 0
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0
               for p in model.transfer.parameters() if p.dim() == 2)


@pytest.mark.parametrize("shared", [False, True])
def test_without_stop_gradient_both_get_gradient(regs, shared: bool) -> None:
    model = build_model(section(stop_gradient=False, shared_backbone=shared), regs)
    randomize_semantic(model)
    strong_loss(model(torch.randn(2, 3, 8, 8))).backward()
    assert torch.count_nonzero(model.weak.semantic.weight.grad) > 0
    assert grad_norm(model.transfer.parameters()) > 0


@pytest.mark.parametrize("stop", [True, False])
def test_weak_loss_never_reaches_gamma_or_strong(regs, stop: bool) -> None:
    model = build_model(section(stop_gradient=stop), regs)
    randomize_semantic(model)
    weak_loss(model(torch.randn(2, 3, 8, 8))).backward()
    assert torch.count_nonzero(model.weak.semantic.weight.grad) > 0
    assert grad_norm(model.strong_parameters()) == 0


def test_parameter_groups_partition_trainable_parameters(regs) -> None:
    for mode in ("transfer", "independent", "weak_only"):
        for shared in (False, True):
            model = build_model(section(mode=mode, shared_backbone=shared), regs)
            weak = {id(p) for p in model.weak_parameters()}
            strong = {id(p) for p in model.strong_parameters()}
            trainable = {id(p) for p in model.parameters() if p.requires_grad}
            assert not weak & strong
            assert weak | strong == trainable, (mode, shared)


# -- stage-wise training -------------------------------------------------------------------------
@pytest.mark.parametrize("shared", [False, True])
def test_frozen_weak_branch_does_not_change(regs, shared: bool) -> None:
    model = build_model(section(shared_backbone=shared), regs)
    randomize_semantic(model)
    model.freeze_weak()
    model.train()
    assert not model.weak.training and model.weak_frozen
    before = {k: v.clone() for k, v in model.weak.state_dict().items()}
    gamma_before = [p.detach().clone() for p in model.transfer.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    for _ in range(2):
        opt.zero_grad()
        out = model(torch.randn(2, 3, 8, 8))
        (weak_loss(out) + strong_loss(out)).backward()
        opt.step()
    after = model.weak.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(gamma_before, model.transfer.parameters()))
    model.freeze_weak(False)
    assert all(p.requires_grad for p in model.weak_parameters())


# -- normalisation and preprocessing -------------------------------------------------------------
def test_normalize_caffe_and_imagenet() -> None:
    x = torch.zeros(1, 3, 1, 1)
    x[0, :, 0, 0] = torch.tensor([10.0, 20.0, 30.0])  # R, G, B
    caffe = normalize(x, NORMALIZATIONS["caffe"])[0, :, 0, 0]
    assert torch.allclose(caffe, torch.tensor([30 - 104.00699, 20 - 116.66877, 10 - 122.67892]))
    imnet = normalize(x, NORMALIZATIONS["imagenet"])[0, :, 0, 0]
    expected = (torch.tensor([10.0, 20.0, 30.0]) / 255 - torch.tensor([0.485, 0.456, 0.406])) \
        / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(imnet, expected)


def test_preprocess_matches_normalize(regs) -> None:
    model = build_model(section(), regs)
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = model.preprocess(image)
    assert x.shape == (1, 3, 5, 7) and x.dtype == torch.float32
    raw = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    assert torch.allclose(x, normalize(raw, model.normalization))
    assert model.normalization == NORMALIZATIONS["imagenet"]


# -- save / load ---------------------------------------------------------------------------------
def test_state_dict_round_trip_gives_identical_outputs(regs, tmp_path) -> None:
    sec = section(transfer={"name": "mlp", "layers": 3, "activation": "relu", "hidden": 5})
    model = build_model(sec, regs).eval()
    randomize_semantic(model)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    torch.manual_seed(123)
    other = build_model(sec, regs).eval()
    other.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(1, 3, 9, 11)
    a, b = model(x), other(x)
    assert torch.equal(a.weak, b.weak) and torch.equal(a.strong, b.strong)


# -- every registered backbone x every transfer --------------------------------------------------
@pytest.mark.slow
def test_every_backbone_and_transfer_forward_backward(registries) -> None:
    assert {"fcn32s", "smp"} <= set(registries.backbones.names())
    transfers = registries.weight_transfers.names()
    for backbone in registries.backbones.names():
        spec = {"name": backbone, **SMALL.get(backbone, {})}
        for i, transfer in enumerate(transfers):
            # alternate trunk sharing to cover both without doubling the cost
            model = build_model(section(backbone=spec, transfer={"name": transfer},
                                        shared_backbone=bool(i % 2)), registries)
            randomize_semantic(model)
            x = torch.randn(1, 3, 35, 33)
            out = model(x)
            assert out.weak.shape == out.strong.shape == (1, 2, 35, 33), (backbone, transfer)
            (weak_loss(out) + strong_loss(out)).backward()
            assert grad_norm(model.transfer.parameters()) > 0, (backbone, transfer)
            assert grad_norm(model.weak_parameters()) > 0, (backbone, transfer)


def test_every_backbone_round_trips_through_save_load(registries, tmp_path) -> None:
    for backbone in registries.backbones.names():
        sec = section(backbone={"name": backbone, **SMALL.get(backbone, {})},
                      shared_backbone=True)
        model = build_model(sec, registries).eval()
        randomize_semantic(model)
        path = tmp_path / f"{backbone}.pt"
        torch.save(model.state_dict(), path)
        torch.manual_seed(99)
        other = build_model(sec, registries).eval()
        other.load_state_dict(torch.load(path, weights_only=True))
        x = torch.randn(1, 3, 20, 22)
        with torch.no_grad():
            a, b = model(x), other(x)
        assert torch.equal(a.weak, b.weak) and torch.equal(a.strong, b.strong), backbone
        assert a.strong.abs().max() > 0, backbone


# -- the worked example in docs/backbones.md -----------------------------------------------------
def _doc_block(marker: str) -> str:
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "docs" / "backbones.md").read_text()
    blocks = text.split("```python\n")[1:]
    return next(b.split("```")[0] for b in blocks if b.startswith(marker))


def test_documented_example_backbone_works(tmp_path, monkeypatch) -> None:
    (tmp_path / "my_backbones.py").write_text(_doc_block("# file: my_backbones.py"))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        _run_documented_example(tmp_path)
    finally:
        sys.modules.pop("my_backbones", None)


def _run_documented_example(tmp_path) -> None:
    regs = Registries.from_pm(make_plugin_manager(["my_backbones"], entry_points=False))
    exec(_doc_block("from partsup.model.partial import build_model"), {"torch": torch})
    model = build_model(section(backbone={"name": "dilated_cnn", "width": 8, "depth": 2}), regs)
    randomize_semantic(model)
    out = model(torch.randn(1, 3, 21, 18))
    (weak_loss(out) + strong_loss(out)).backward()
    assert grad_norm(model.transfer.parameters()) > 0
    # its weights option loads strictly and is skipped when a checkpoint is restored
    path = tmp_path / "w.pt"
    torch.save(model.weak.state_dict(), path)
    sec = section(backbone={"name": "dilated_cnn", "width": 8, "depth": 2, "weights": str(path)})
    loaded = build_model(sec, regs)
    assert torch.equal(loaded.weak.semantic.weight, model.weak.semantic.weight)
    path.unlink()
    assert build_model(sec, regs, skip_weights=True).weak.feature_channels == 8
    with pytest.raises(RecipeError, match="width"):
        build_model(section(backbone={"name": "dilated_cnn", "widht": 8}), regs)
