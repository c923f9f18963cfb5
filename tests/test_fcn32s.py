"""FCN-32s plugin: layout, crop offset, frozen upscore, reference computation, weight loading."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from partsup.errors import CheckpointError, RecipeError
from partsup.model.partial import NORMALIZATIONS, build_model
from partsup_fcn32s import FCN32s, make_fcn32s
from partsup_fcn32s.network import CONV_NAMES
from partsup_fcn32s.weights import TORCHVISION_CONV_INDEX
from helpers import assert_linear_close

FC = 16  # small fc6/fc7 width for speed; the default (4096) is checked on the meta device
BLOCK_ENDS = {"conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"}


def bilinear_1d(n: int = 64) -> np.ndarray:
    """Independent 1-D bilinear upsampling kernel for stride n / 2: 1 - |i - 31.5| / 32."""
    i = np.arange(n, dtype=np.float64)
    return 1.0 - np.abs(i - (n - 1) / 2.0) / (n / 2.0)


def small_net(**kw) -> FCN32s:
    return make_fcn32s(fc_channels=FC, **kw)


def randomize_score(net: FCN32s) -> None:
    with torch.no_grad():
        net.score_fr.weight.normal_(0, 0.1)
        net.score_fr.bias.normal_(0, 0.1)


# -- layout -------------------------------------------------------------------------------------
def test_default_layout_is_faithful_fcn32s() -> None:
    with torch.device("meta"):
        net = make_fcn32s()
        assert net.conv1_1.padding == (100, 100)
        assert all(getattr(net, n).padding == (1, 1) and getattr(net, n).kernel_size == (3, 3)
                   for n in CONV_NAMES[1:])
        assert net.fc6.weight.shape == (4096, 512, 7, 7) and net.fc6.padding == (0, 0)
        assert net.fc7.weight.shape == (4096, 4096, 1, 1)
        assert net.score_fr.weight.shape == (2, 4096, 1, 1) and net.semantic is net.score_fr
        assert net.feature_channels == 4096
        assert net.pool.ceil_mode and net.pool.kernel_size == 2 and net.pool.stride == 2
        # element-wise dropout, not channel-wise
        assert type(net.drop6) is nn.Dropout and type(net.drop7) is nn.Dropout
        assert net.drop6.p == 0.5 and net.drop7.p == 0.5
        assert net.upscore.weight.shape == (2, 2, 64, 64) and net.upscore.stride == 32
        # facts: 500x500 input -> pool5 22x22, fc6 16x16, upscore 544x544, output 500x500
        x = torch.empty(1, 3, 500, 500)
        pool5 = net.trunk(x)
        assert pool5.shape[-2:] == (22, 22)
        feats = net.features(x)
        assert feats.shape == (1, 4096, 16, 16)
        assert net.upscore(net.score_fr(feats)).shape[-2:] == (544, 544)
        assert net(x).shape == (1, 2, 500, 500)
    assert net.normalization == NORMALIZATIONS["caffe"]


def test_fresh_score_layer_is_zero_and_upscore_bilinear_diagonal() -> None:
    net = small_net()
    assert torch.count_nonzero(net.score_fr.weight) == 0
    assert torch.count_nonzero(net.score_fr.bias) == 0
    k = torch.from_numpy(np.outer(bilinear_1d(), bilinear_1d())).float()
    w = net.upscore.weight
    assert torch.allclose(w[0, 0], k) and torch.allclose(w[1, 1], k)
    assert torch.count_nonzero(w[0, 1]) == 0 and torch.count_nonzero(w[1, 0]) == 0


@pytest.mark.parametrize("size", [(1, 1), (33, 47), (64, 31)])
def test_any_size_gives_same_size_output(size) -> None:
    net = small_net().eval()
    randomize_score(net)
    with torch.no_grad():
        out = net(torch.randn(1, 3, *size))
    assert out.shape == (1, 2, *size)
    assert torch.isfinite(out).all()


# -- crop offset (coordinate tests) --------------------------------------------------------------
def test_head_crop_offset_19_impulse() -> None:
    """An impulse at low-res cell (a, b) lands at output rows 32a + k - 19 (k = kernel tap)."""
    net = small_net()
    a, b, H, W = 2, 1, 100, 77
    low = torch.zeros(1, 2, 5, 4)
    low[0, 0, a, b] = 1.0
    out = net.head(low, (H, W))[0].double().numpy()
    k = bilinear_1d()
    rows = np.array([k[r + 19 - 32 * a] if 0 <= r + 19 - 32 * a < 64 else 0.0 for r in range(H)])
    cols = np.array([k[c + 19 - 32 * b] if 0 <= c + 19 - 32 * b < 64 else 0.0 for c in range(W)])
    np.testing.assert_allclose(out[0], np.outer(rows, cols), atol=1e-6)
    assert np.count_nonzero(out[1]) == 0
    # the peak is centred at 32a + 12.5 (between rows 32a+12 and 32a+13)
    peak = np.flatnonzero(out[0][:, 32 * b + 12] == out[0][:, 32 * b + 12].max())
    assert list(peak) == [32 * a + 12, 32 * a + 13]


@pytest.mark.slow
def test_receptive_field_centre_matches_crop() -> None:
    """fc6 unit r sees input rows centred on 32r + 12.5: where head() puts its score."""
    torch.manual_seed(0)
    net = small_net().eval()
    x = torch.randn(1, 3, 420, 1, requires_grad=True)
    r = 6
    net.fc6(net.trunk(x))[0, :, r, 0].sum().backward()
    rows = torch.nonzero(x.grad[0].abs().sum(dim=(0, 2))).flatten()
    lo, hi = int(rows.min()), int(rows.max())
    assert hi - lo + 1 == 404  # receptive field of fc6 in VGG16
    assert (lo + hi) / 2 == 32 * r + 12.5


# -- frozen upscore ------------------------------------------------------------------------------
@pytest.mark.slow
def test_upscore_stays_frozen_through_optimizer_step() -> None:
    net = small_net()
    randomize_score(net)
    before = net.upscore.weight.clone()
    assert all(p is not net.upscore.weight for p in net.parameters())
    net.requires_grad_(True)  # even a blanket unfreeze cannot make it trainable
    opt = torch.optim.SGD(net.parameters(), lr=10.0, momentum=0.9, weight_decay=0.1)
    for _ in range(2):
        opt.zero_grad()
        loss = F.cross_entropy(net(torch.randn(1, 3, 40, 40)), torch.ones(1, 40, 40, dtype=torch.long))
        loss.backward()
        opt.step()
    assert torch.equal(net.upscore.weight, before)
    assert "upscore.weight" in net.state_dict()


# -- reference computation -----------------------------------------------------------------------
def reference_fcn32s(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Straightforward functional FCN-32s on the same tensors (explicit padding, -inf ceil pools)."""
    h = F.pad(x, (100, 100, 100, 100))
    for name in CONV_NAMES:
        h = F.relu(F.conv2d(h, sd[f"{name}.weight"], sd[f"{name}.bias"],
                            padding=0 if name == "conv1_1" else 1))
        if name in BLOCK_ENDS:  # ceil-mode pooling = pad odd sizes with -inf, then floor pooling
            h = F.pad(h, (0, h.shape[-1] % 2, 0, h.shape[-2] % 2), value=float("-inf"))
            h = F.max_pool2d(h, 2, 2)
    h = F.relu(F.conv2d(h, sd["fc6.weight"], sd["fc6.bias"]))
    h = F.relu(F.conv2d(h, sd["fc7.weight"], sd["fc7.bias"]))
    score = F.conv2d(h, sd["score_fr.weight"], sd["score_fr.bias"])
    kern = torch.from_numpy(np.outer(bilinear_1d(), bilinear_1d())).float()
    up_w = torch.zeros(2, 2, 64, 64)
    up_w[0, 0] = kern
    up_w[1, 1] = kern
    up = F.conv_transpose2d(score, up_w, stride=32)
    return up[..., 19:19 + x.shape[-2], 19:19 + x.shape[-1]]


def test_output_equals_reference_computation() -> None:
    net = small_net().eval()
    randomize_score(net)
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(1, 3, 45, 37)
    with torch.no_grad():
        ours = net(x)
        ref = reference_fcn32s(sd, x)
    assert ours.shape == ref.shape == (1, 2, 45, 37)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-4)
    assert ref.abs().max() > 1e-3  # not trivially zero


# -- weight loading ------------------------------------------------------------------------------
def caffe_voc_state(src: FCN32s) -> dict[str, torch.Tensor]:
    """A Caffe-converted VOC FCN-32s dict: trunk of ``src`` + 21-class score_fr and upscore."""
    sd = {k: v.clone() for k, v in src.state_dict().items() if not k.startswith(("score_fr", "upscore"))}
    sd["score_fr.weight"] = torch.randn(21, FC, 1, 1)
    sd["score_fr.bias"] = torch.randn(21)
    sd["upscore.weight"] = torch.randn(21, 21, 64, 64)
    return sd


def torchvision_state(src: FCN32s) -> dict[str, torch.Tensor]:
    sd = {}
    for name, idx in TORCHVISION_CONV_INDEX.items():
        sd[f"features.{idx}.weight"] = getattr(src, name).weight.detach().clone()
        sd[f"features.{idx}.bias"] = getattr(src, name).bias.detach().clone()
    sd["classifier.0.weight"] = torch.randn(FC, 512 * 7 * 7)
    sd["classifier.0.bias"] = torch.randn(FC)
    sd["classifier.3.weight"] = torch.randn(FC, FC)
    sd["classifier.3.bias"] = torch.randn(FC)
    sd["classifier.6.weight"] = torch.randn(1000, FC)
    sd["classifier.6.bias"] = torch.randn(1000)
    return sd


@pytest.mark.parametrize("fmt", ["auto", "caffe_voc"])
def test_load_caffe_voc(tmp_path, fmt: str) -> None:
    src = small_net()
    path = tmp_path / "fcn32s_voc.pth"
    torch.save(caffe_voc_state(src), path)
    net = small_net(weights=str(path), weights_format=fmt)
    for key, value in src.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key  # trunk copied; head fresh
    assert torch.count_nonzero(net.score_fr.weight) == 0 and net.score_fr.weight.shape[0] == 2
    assert net.upscore.weight.shape == (2, 2, 64, 64)
    assert net.normalization == NORMALIZATIONS["caffe"]


@pytest.mark.parametrize("fmt", ["auto", "torchvision_vgg16"])
def test_load_torchvision_vgg16(tmp_path, fmt: str) -> None:
    src = small_net()
    sd = torchvision_state(src)
    path = tmp_path / "vgg16.pth"
    torch.save(sd, path)
    net = small_net(weights=str(path), weights_format=fmt)
    assert torch.equal(net.conv3_2.weight, sd["features.12.weight"])
    assert torch.equal(net.conv5_3.bias, sd["features.28.bias"])
    # fc6 as a 7x7 convolution equals the Linear layer on the flattened (C, H, W) pool5 map
    # (25,088-term sums of values ~1: results ~250, float32 rounding ~1e-3 that depends on the
    # CPU's kernels, so the tolerance scales with the sum; tests/tolerance.py)
    pool5 = torch.randn(1, 512, 7, 7)
    with torch.no_grad():
        assert_linear_close(net.fc6(pool5).flatten(1), pool5.flatten(1),
                            sd["classifier.0.weight"], sd["classifier.0.bias"])
        h = torch.randn(1, FC)
        assert_linear_close(net.fc7(h[:, :, None, None]).flatten(1), h,
                            sd["classifier.3.weight"], sd["classifier.3.bias"])
    assert torch.count_nonzero(net.score_fr.weight) == 0
    assert net.normalization == NORMALIZATIONS["imagenet"]


@pytest.mark.slow
def test_load_partsup_checkpoint_round_trip(tmp_path, registries) -> None:
    sec = {"backbone": {"name": "fcn32s", "fc_channels": FC}, "mode": "weak_only"}
    model = build_model(sec, registries).eval()
    randomize_score(model.weak)
    model.normalization = NORMALIZATIONS["imagenet"]
    path = tmp_path / "ckpt.pt"
    torch.save({"format": "partsup-checkpoint", "model": model.state_dict(),
                "normalization": model.normalization}, path)
    net = small_net(weights=str(path)).eval()
    x = torch.randn(1, 3, 30, 26)
    with torch.no_grad():
        assert torch.equal(net(x), model(x).weak)
    assert net.normalization == NORMALIZATIONS["imagenet"]
    # a bare branch state dict needs the normalisation stated
    bare = tmp_path / "bare.pt"
    torch.save(net.state_dict(), bare)
    with pytest.raises(CheckpointError, match="normalization"):
        small_net(weights=str(bare))
    again = small_net(weights=str(bare), normalization="caffe").eval()
    with torch.no_grad():
        assert torch.equal(again(x), net(x))
    assert again.normalization == NORMALIZATIONS["caffe"]


def test_mismatched_missing_unexpected_tensors_are_named(tmp_path) -> None:
    src = small_net()
    sd = caffe_voc_state(src)
    sd["fc7.weight"] = torch.randn(FC + 1, FC, 1, 1)
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    with pytest.raises(CheckpointError, match=r"fc7\.weight.*\(17, 16, 1, 1\).*\(16, 16, 1, 1\)"):
        small_net(weights=str(bad))
    sd = caffe_voc_state(src)
    del sd["conv4_2.bias"]
    torch.save(sd, bad)
    with pytest.raises(CheckpointError, match=r"missing tensor 'conv4_2\.bias'"):
        small_net(weights=str(bad), weights_format="caffe_voc")
    sd = caffe_voc_state(src)
    sd["extra.weight"] = torch.zeros(3)
    torch.save(sd, bad)
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'extra\.weight'"):
        small_net(weights=str(bad))
    # the faithful 4096-wide fc6 cannot take a 16-wide torchvision classifier
    torch.save(torchvision_state(src), bad)
    with pytest.raises(CheckpointError, match=r"classifier\.0\.weight.*\(16, 25088\).*\(32, 25088\)"):
        make_fcn32s(weights=str(bad), fc_channels=32)
    # partsup format: strict too
    sd = src.state_dict()
    sd["score_fr.weight"] = torch.zeros(2, FC + 2, 1, 1)
    torch.save({"model": sd, "normalization": NORMALIZATIONS["caffe"]}, bad)
    with pytest.raises(CheckpointError, match=r"score_fr\.weight.*\(2, 18, 1, 1\).*\(2, 16, 1, 1\)"):
        small_net(weights=str(bad))


def test_missing_file_unknown_format_and_bad_options(tmp_path, registries) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        small_net(weights=str(tmp_path / "nope.pth"))
    odd = tmp_path / "odd.pth"
    torch.save({"a.weight": torch.zeros(1)}, odd)
    with pytest.raises(CheckpointError, match="weights_format"):
        small_net(weights=str(odd))
    with pytest.raises(RecipeError, match="weights_format"):
        registries.backbones.build("fcn32s", where="model.backbone", weights_format="caffe")
    with pytest.raises(RecipeError, match="normalization"):
        registries.backbones.build("fcn32s", where="model.backbone", normalization="bgr")
