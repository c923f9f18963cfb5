"""Losses: ignore 255, sum (divided by batch size) vs mean, gradients, every registered loss."""
from __future__ import annotations

import math

import pytest
import torch

from partsup.errors import RecipeError


def _case():
    logits = torch.zeros(2, 2, 3, 3)
    logits[:, 1] = 2.0  # every pixel predicts class 1 with p = sigmoid(2)
    target = torch.full((2, 3, 3), 255, dtype=torch.long)
    target[0, 0, 0] = 1   # loss log(1 + e^-2)
    target[0, 1, 1] = 0   # loss log(1 + e^2)
    target[1, 2, 2] = 1
    return logits, target


def test_every_loss_contract(registries):
    logits, target = _case()
    lo, hi = math.log1p(math.exp(-2)), math.log1p(math.exp(2))
    for name in registries.losses:
        s = registries.losses.build(name, reduction="sum")(logits, target)
        m = registries.losses.build(name, reduction="mean")(logits, target)
        assert s.ndim == 0 and s.dtype == torch.float32, name
        assert s.item() == pytest.approx((2 * lo + hi) / 2, rel=1e-5), name  # sum / batch size
        assert m.item() == pytest.approx((2 * lo + hi) / 3, rel=1e-5), name  # mean over 3 pixels


def test_ignored_pixels_have_no_effect_and_no_gradient(registries):
    for name in registries.losses:
        loss = registries.losses.build(name, reduction="sum")
        logits, target = _case()
        base = loss(logits, target).item()
        changed = logits.clone()
        changed[0, :, 2, 0] = torch.tensor([50.0, -50.0])  # (2, 0) of image 0 is ignored
        assert loss(changed, target).item() == pytest.approx(base)
        x = logits.clone().requires_grad_(True)
        loss(x, target).backward()
        assert x.grad[0, :, 2, 0].abs().sum() == 0
        assert x.grad[0, :, 0, 0].abs().sum() > 0


def test_all_ignored_is_zero_not_nan(registries):
    for name in registries.losses:
        for red in ("sum", "mean"):
            x = torch.randn(1, 2, 4, 4, requires_grad=True)
            out = registries.losses.build(name, reduction=red)(x, torch.full((1, 4, 4), 255))
            assert out.item() == 0.0
            out.backward()  # still differentiable
            assert torch.isfinite(x.grad).all()


def test_matches_torch_cross_entropy(registries):
    torch.manual_seed(0)
    x = torch.randn(3, 2, 5, 6)
    t = torch.randint(0, 2, (3, 5, 6))
    t[0, :2] = 255
    ref = torch.nn.functional.cross_entropy(x, t, ignore_index=255, reduction="mean")
    ref_sum = torch.nn.functional.cross_entropy(x, t, ignore_index=255, reduction="sum") / 3
    for name in registries.losses:
        assert registries.losses.build(name, reduction="mean")(x, t).item() == pytest.approx(ref.item(), rel=1e-5)
        assert registries.losses.build(name, reduction="sum")(x, t).item() == pytest.approx(ref_sum.item(), rel=1e-5)
    ref_w = torch.nn.functional.cross_entropy(x, t, ignore_index=255, weight=torch.tensor([1.0, 3.0]))
    for name in ("pixel_ce", "concentric"):  # the two that take class weights
        w = registries.losses.build(name, reduction="mean", weight=[1.0, 3.0])(x, t)
        assert w.item() == pytest.approx(ref_w.item(), rel=1e-5)


def test_half_precision_logits_are_upcast(registries):
    logits, target = _case()
    for name in registries.losses:
        out = registries.losses.build(name, reduction="sum")(logits.bfloat16(), target)
        assert out.dtype == torch.float32


def test_bad_reduction_and_shapes(registries):
    for name in registries.losses:
        with pytest.raises(RecipeError):
            registries.losses.build(name, reduction="avg", where="loss.weak")
        with pytest.raises(ValueError, match="expected logits"):
            registries.losses.build(name)(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, dtype=torch.long))
