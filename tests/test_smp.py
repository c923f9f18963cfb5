"""smp / timm backbone plugin: architectures, 1x1 semantic layer, padding, local encoder weights."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from partsup.errors import CheckpointError, RecipeError
from partsup.model.partial import NORMALIZATIONS, check_branch
from partsup_smp import make_smp

UNET_SMALL = {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}
CASES = [
    ("Unet", "resnet18", UNET_SMALL),
    ("FPN", "resnet18", {"encoder_depth": 3, "decoder_pyramid_channels": 16,
                         "decoder_segmentation_channels": 32}),
    ("DeepLabV3Plus", "resnet18", {"encoder_depth": 4, "decoder_channels": 16}),
    ("Unet", "tu-resnet18", UNET_SMALL),
]


@pytest.mark.parametrize("arch,encoder,kw", CASES)
def test_architectures_give_full_size_two_class_logits(arch, encoder, kw) -> None:
    branch = make_smp(arch, encoder, **kw).eval()
    check_branch(branch, "smp")
    sem = branch.semantic
    assert isinstance(sem, nn.Conv2d) and sem.kernel_size == (1, 1) and sem.out_channels == 2
    x = torch.randn(1, 3, 37, 50)
    with torch.no_grad():
        out = branch(x)
        feats = branch.features(x)
        w = torch.randn(2, branch.feature_channels, 1, 1)
        replaced = branch(x, weight=w)
    assert out.shape == (1, 2, 37, 50)
    assert feats.shape[1] == branch.feature_channels
    # a supplied weight replaces the semantic layer (no bias)
    assert torch.allclose(replaced, branch.head(F.conv2d(feats, w), (37, 50)), atol=1e-5)
    assert branch.normalization == NORMALIZATIONS["imagenet"]


def test_odd_sizes_are_zero_padded_then_cropped() -> None:
    branch = make_smp("Unet", "resnet18", **UNET_SMALL).eval()
    assert branch.stride == 8
    x = torch.randn(1, 3, 21, 30)
    padded = F.pad(x, (0, 2, 0, 3))  # to 24 x 32
    with torch.no_grad():
        assert torch.allclose(branch(x), branch(padded)[..., :21, :30], atol=1e-6)


def test_registered_and_built_through_the_registry(registries) -> None:
    branch = registries.backbones.build("smp", where="model.backbone", arch="unet",
                                        encoder="resnet18", **UNET_SMALL)
    assert branch.feature_channels == 8
    with pytest.raises(RecipeError, match="architecture"):
        registries.backbones.build("smp", where="model.backbone", arch="UNet3000")
    with pytest.raises(RecipeError, match="resnet1800"):
        registries.backbones.build("smp", where="model.backbone", encoder="resnet1800")
    with pytest.raises(RecipeError, match="normalization"):
        registries.backbones.build("smp", where="model.backbone", normalization="bgr")


@pytest.mark.parametrize("value", ["imagenet", "ssl", "swsl"])
def test_hub_weights_are_refused_naming_the_local_file_option(value: str) -> None:
    with pytest.raises(CheckpointError, match=r"download.*local file"):
        make_smp("Unet", "resnet18", encoder_weights=value, **UNET_SMALL)


def test_encoder_weights_from_local_encoder_state_dict(tmp_path) -> None:
    src = make_smp("Unet", "resnet18", **UNET_SMALL)
    path = tmp_path / "encoder.pth"
    torch.save(src.encoder.state_dict(), path)
    branch = make_smp("Unet", "resnet18", encoder_weights=str(path), **UNET_SMALL)
    for key, value in src.encoder.state_dict().items():
        assert torch.equal(branch.encoder.state_dict()[key], value), key


def test_encoder_weights_torchvision_and_timm_layouts(tmp_path) -> None:
    tv = torchvision.models.resnet18(weights=None).state_dict()  # has fc.* (ImageNet classifier)
    path = tmp_path / "tv_resnet18.pth"
    torch.save(tv, path)
    branch = make_smp("Unet", "resnet18", encoder_weights=str(path), **UNET_SMALL)
    assert torch.equal(branch.encoder.layer2[0].conv1.weight, tv["layer2.0.conv1.weight"])
    tm = timm.create_model("resnet18", pretrained=False).state_dict()
    path = tmp_path / "timm_resnet18.pth"
    torch.save({"state_dict": tm}, path)
    branch = make_smp("Unet", "tu-resnet18", encoder_weights=str(path))
    assert torch.equal(branch.encoder.model.layer4[1].conv2.weight, tm["layer4.1.conv2.weight"])


def test_encoder_weights_are_checked_strictly(tmp_path) -> None:
    src = make_smp("Unet", "resnet18", **UNET_SMALL)
    sd = src.encoder.state_dict()
    path = tmp_path / "enc.pth"
    bad = dict(sd)
    bad["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    torch.save(bad, path)
    with pytest.raises(CheckpointError, match=r"layer1\.0\.conv1\.weight.*\(64, 64, 5, 5\).*\(64, 64, 3, 3\)"):
        make_smp("Unet", "resnet18", encoder_weights=str(path), **UNET_SMALL)
    bad = dict(sd)
    del bad["bn1.running_var"]
    torch.save(bad, path)
    with pytest.raises(CheckpointError, match=r"missing tensor 'bn1\.running_var'"):
        make_smp("Unet", "resnet18", encoder_weights=str(path), **UNET_SMALL)
    bad = dict(sd)
    bad["extra.weight"] = torch.zeros(2)
    torch.save(bad, path)
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'extra\.weight'"):
        make_smp("Unet", "resnet18", encoder_weights=str(path), **UNET_SMALL)
    # resnet34 weights do not fit a resnet18 encoder
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError, match="unexpected tensor 'layer1.2"):
        make_smp("Unet", "resnet18", encoder_weights=str(path), **UNET_SMALL)
    with pytest.raises(CheckpointError, match="not found"):
        make_smp("Unet", "resnet18", encoder_weights=str(tmp_path / "none.pth"), **UNET_SMALL)


# -- the timm crop classifier (a second look's net) --------------------------------------------

CROPS = {"crop_um": 16.0, "mpp": 0.5, "heads": {"verify": ["object", "decoy"],
                                                "kind": ["a", "b", "c"]}}


def test_every_registered_classifier_honours_the_crop_net_contract(registries) -> None:
    from partsup.model.classifier import build_classifier
    assert {"cnn", "timm"} <= set(registries.classifiers.names())
    for name in registries.classifiers.names():
        options = {"arch": "resnet10t"} if name == "timm" else {}
        net = build_classifier({**CROPS, "model": {"name": name, **options}}, registries).eval()
        out = net(torch.zeros(2, 3, 32, 32))
        assert {h: tuple(v.shape) for h, v in out.items()} == {"verify": (2, 2), "kind": (2, 3)}
        assert set(net.normalization) == {"mean", "std", "scale", "bgr"}


def test_timm_classifier_weights_from_a_local_timm_checkpoint(tmp_path, registries) -> None:
    from partsup.model.classifier import build_classifier
    src = timm.create_model("resnet10t", num_classes=7)  # an ImageNet-like file: fc dropped
    path = tmp_path / "resnet10t.pth"
    torch.save(src.state_dict(), path)
    section = {**CROPS, "model": {"name": "timm", "arch": "resnet10t", "weights": str(path)}}
    net = build_classifier(section, registries)
    for key, value in net.trunk.state_dict().items():
        assert torch.equal(value, src.state_dict()[key]), key
    with pytest.raises(RecipeError, match=r"classifier\.model\.weights: 'imagenet' is not a "
                                          r"local file"):
        build_classifier({**CROPS, "model": {"name": "timm", "weights": "imagenet"}}, registries)
    with pytest.raises(RecipeError, match=r"timm cannot build 'resnet1800'"):
        build_classifier({**CROPS, "model": {"name": "timm", "arch": "resnet1800"}}, registries)
