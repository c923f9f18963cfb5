"""The second look: a crop classifier over candidates (filter and label uses), crops at the
classifier's um/px, TTA, the checkpoint section, writers' class columns, errors.

Synthetic scenes at 0.5 um/px on a pale field: dark discs and grey discs (objects of two kinds)
and dark rings (look-alikes). A hand-set "darkness" backbone finds all three as candidates; a
small ``cnn`` crop net trained here for a few dozen steps (heads ``verify: [object, decoy]``
and ``kind: [dark, grey]``) keeps the discs and labels them.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from partsup import hookimpl
from partsup.checkpoint.files import load_checkpoint, save_checkpoint
from partsup.checkpoint.second_look import attach_second_look
from partsup.errors import CheckpointError, PartsupError, RecipeError
from partsup.inference.detector import Detector, load_detector
from partsup.inference.second_look import SecondLook, SecondLookParams, load_second_look
from partsup.manager import Registries, make_plugin_manager
from partsup.model.classifier import CropSpec, build_classifier, extract_crops, normalize_crops
from partsup.model.partial import Branch, build_model
from partsup.output.writers import CsvWriter, GeoJsonWriter, read_detections
from partsup.types import Detection

MPP = 0.5
HEADS = {"verify": ["object", "decoy"], "kind": ["dark", "grey"]}
SECTION = {"crop_um": 12.0, "mpp": MPP, "heads": HEADS,
           "model": {"name": "cnn", "widths": [8, 16, 32]}}
PARAMS = {"verify": {"head": "verify", "positive": "object", "threshold": 0.5},
          "label": {"head": "kind"}}
KINDS = ("dark", "grey", "ring")  # the scene's objects, in grid order


def scene(kinds, spacing=40, scale=1, seed=0):
    """Objects on a grid (centres at integer px): ``(image, centres (N, 2), kinds)``; ``scale``
    renders the same scene at ``MPP / scale`` um/px."""
    n = len(kinds)
    cols = int(np.ceil(np.sqrt(n)))
    size = (spacing * cols + spacing // 2) * scale
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 232, np.float64) + rng.normal(0, 3, (size, size, 3))
    yy, xx = np.mgrid[:size, :size]
    centres = []
    for i, kind in enumerate(kinds):
        cx, cy = (spacing * (i % cols + 0.75) * scale, spacing * (i // cols + 0.75) * scale)
        r2 = (xx - cx) ** 2 + (yy - cy) ** 2
        if kind == "ring":
            img[(r2 <= (7 * scale) ** 2) & (r2 > (4 * scale) ** 2)] = 25
        else:
            img[r2 <= (6 * scale) ** 2] = 25 if kind == "dark" else 120
        centres.append((cx, cy))
    return np.clip(img, 0, 255).astype(np.uint8), np.asarray(centres, np.float64), list(kinds)


class Dark(Branch):
    """Hand-set backbone: p(object) = sigmoid(20 * darkness - 6); lights up every shape."""

    feature_channels = 1

    def __init__(self) -> None:
        super().__init__()
        self.normalization = {"mean": [0.0] * 3, "std": [1.0] * 3, "scale": 1, "bgr": False}
        self.semantic = nn.Conv2d(1, 2, 1)

    def features(self, x):
        return 1.0 - x.mean(dim=1, keepdim=True)

    def head(self, logits, size):
        return logits[..., : size[0], : size[1]]


class DarkPlugin:
    @hookimpl
    def partsup_register_backbones(self, register):
        register("dark_second_look", Dark)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these nets are tiny, and threads fighting over shared cores cost
    ~20x here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def regs() -> Registries:
    return Registries.from_pm(make_plugin_manager(objects=[DarkPlugin()], entry_points=False))


def train_classifier(regs: Registries, steps: int = 40) -> nn.Module:
    """The core ``cnn`` trained on jittered crops of random scenes (a few seconds on CPU)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    net = build_classifier(SECTION, regs)
    spec = CropSpec.from_section(SECTION)
    crops, verify, kind = [], [], []
    for seed in range(3):
        kinds = list(rng.choice(KINDS, 16))
        img, centres, _ = scene(kinds, seed=10 + seed)
        background = centres[:8] + 20.0  # between objects: nothing within the crop
        pts = np.concatenate([centres + rng.uniform(-2, 2, centres.shape), background])
        crops.append(extract_crops(img, pts, MPP, spec.crop_um, spec.mpp))
        verify += [0 if k != "ring" else 1 for k in kinds] + [1] * len(background)
        kind += [{"dark": 0, "grey": 1}.get(k, -100) for k in kinds] + [-100] * len(background)
    x = normalize_crops(torch.cat(crops), net)
    targets = {"verify": torch.tensor(verify), "kind": torch.tensor(kind)}
    params = list(net.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    net.train()
    for _ in range(steps):  # SGD with momentum, by hand (torch.optim imports torch._dynamo: 7 s)
        out = net(x)
        loss = sum(nn.functional.cross_entropy(out[h], targets[h], ignore_index=-100)
                   for h in HEADS)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, v, g in zip(params, velocity, grads):
                v.mul_(0.9).add_(g)
                p.sub_(0.05 * v)
    with torch.no_grad():  # batch-norm statistics of the trained net (40 steps leave them lagging)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        net(x)
    return net.eval()


@pytest.fixture(scope="module")
def look(regs) -> SecondLook:
    spec = CropSpec.from_section(SECTION)
    return SecondLook(train_classifier(regs), spec, SecondLookParams.from_dict(PARAMS, HEADS))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, regs, look):
    """A detector checkpoint (dark backbone), a classifier checkpoint, and the detector with
    the classifier attached, saved with torch.save."""
    folder = tmp_path_factory.mktemp("ckpt")
    section = {"backbone": {"name": "dark_second_look"}, "mode": "weak_only"}
    model = build_model(section, regs)
    with torch.no_grad():
        model.weak.semantic.weight.copy_(torch.tensor([[[[0.0]]], [[[20.0]]]]))
        model.weak.semantic.bias.copy_(torch.tensor([0.0, -6.0]))
    detect = {"w": 1.0, "sigma": 1.0, "a1": 30, "s1": 0.5, "threshold": 0.5, "tile": 256,
              "overlap": 32}
    det_ckpt = {"recipe": {"name": "dark", "model": section, "detect": detect},
                "model": model.state_dict(), "normalization": model.normalization}
    cls_ckpt = {"recipe": {"name": "crops", "task": "classify", "classifier": SECTION},
                "model": look.model.state_dict(), "normalization": look.model.normalization}
    plain = save_checkpoint(folder / "plain.pt", det_ckpt)
    both = save_checkpoint(folder / "both.pt", attach_second_look(det_ckpt, cls_ckpt, PARAMS))
    return plain, both, cls_ckpt


def test_the_classifier_learned_the_synthetic_classes(look):
    img, centres, kinds = scene(KINDS * 3, seed=99)
    probs = look.probabilities(img, centres, MPP)
    assert set(probs) == set(HEADS) and probs["kind"].shape == (9, 2)
    assert probs["verify"].dtype == np.float32
    np.testing.assert_allclose(probs["verify"].sum(1), 1.0, atol=1e-6)
    is_object = probs["verify"][:, 0] >= 0.5
    assert is_object.tolist() == [k != "ring" for k in kinds]
    called = [HEADS["kind"][j] for j in probs["kind"].argmax(1)]
    assert [c for c, k in zip(called, kinds) if k != "ring"] == \
        [k for k in kinds if k != "ring"]


def test_detect_filters_and_labels_candidates(regs, checkpoints):
    plain, both, _ = checkpoints
    img, centres, kinds = scene(KINDS * 3, seed=5)
    alone, _ = load_detector(plain, regs, "cpu")
    assert alone.second_look is None
    found = alone.detect(img, MPP)
    assert len(found) == 9 and all(d.label is None and d.probs == {} for d in found)
    detector, ckpt = load_detector(both, regs, "cpu")
    assert isinstance(detector.second_look, SecondLook) and "second_look" in ckpt
    kept = detector.detect(img, MPP)
    want = sorted((x, y, k) for (x, y), k in zip(centres, kinds) if k != "ring")
    got = sorted((round(d.x), round(d.y), d.label) for d in kept)
    assert got == [(round(x), round(y), k) for x, y, k in want]
    by_xy = {(round(d.x), round(d.y)): d for d in found}
    for d in kept:  # the candidate's score and area stay; the verify probability is in probs
        same = by_xy[(round(d.x), round(d.y))]
        assert (d.score, d.area) == (same.score, same.area)
        assert set(d.probs) == {"object", "decoy", "dark", "grey"} and d.probs["object"] >= 0.5
    label_only = Detector.adopt(detector)  # adopt carries the second look
    assert label_only.second_look is detector.second_look


def test_classify_given_points_keeps_every_point(regs, checkpoints):
    _, both, _ = checkpoints
    detector, _ = load_detector(both, regs, "cpu")
    img, centres, kinds = scene(KINDS * 3, seed=6)
    dets = detector.classify(img, centres, MPP)
    assert [(d.x, d.y) for d in dets] == [tuple(c) for c in centres]
    assert all(d.area == 0.0 and d.label in ("dark", "grey") for d in dets)
    scores = np.array([d.score for d in dets])
    np.testing.assert_allclose(scores, [d.probs["object"] for d in dets])
    assert ((scores >= 0.5) == np.array([k != "ring" for k in kinds])).all()
    with pytest.raises(PartsupError, match="no second look"):
        load_detector(checkpoints[0], regs, "cpu")[0].classify(img, centres, MPP)


def test_crops_are_resampled_to_the_classifiers_um_per_px():
    # R = x and G = y: bilinear sampling (and the anti-alias blur) keep a linear image exact
    h, w = 120, 160
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(w)[None, :]
    img[..., 1] = np.arange(h)[:, None]
    for image_mpp, crop_mpp in ((0.25, 0.5), (0.5, 0.25), (0.5, 0.5)):
        crops = extract_crops(img, [[80, 60], [70.5, 50.25]], image_mpp, 10.0, crop_mpp)
        side = round(10.0 / crop_mpp)
        assert crops.shape == (2, 3, side, side) and crops.dtype == torch.float32
        step = np.arange(side) + 0.5 - side / 2
        r = crop_mpp / image_mpp
        for k, (x, y) in enumerate([(80, 60), (70.5, 50.25)]):
            np.testing.assert_allclose(crops[k, 0].numpy(), np.tile(x + step * r, (side, 1)),
                                       atol=1e-3)
            np.testing.assert_allclose(crops[k, 1].numpy(),
                                       np.tile((y + step * r)[:, None], (1, side)), atol=1e-3)
    # outside the image the image is mirrored about its first pixel: R = |x|
    edge = extract_crops(img, [[0, 60]], 0.5, 4.0, 0.5)[0, 0, 0].numpy()
    np.testing.assert_allclose(edge, np.abs(np.arange(8) + 0.5 - 4), atol=1e-3)


def test_a_scene_at_another_um_per_px_gets_the_same_calls(look):
    img, centres, kinds = scene(KINDS * 3, seed=7)
    fine, fine_centres, _ = scene(KINDS * 3, seed=7, scale=2)  # the same scene at 0.25 um/px
    coarse_p = look.probabilities(img, centres, MPP)
    fine_p = look.probabilities(fine, fine_centres, MPP / 2)
    objects = np.array([k != "ring" for k in kinds])  # rings have no kind: not compared
    for head, rows in (("verify", slice(None)), ("kind", objects)):
        assert (coarse_p[head][rows].argmax(1) == fine_p[head][rows].argmax(1)).all()
        np.testing.assert_allclose(coarse_p[head][rows], fine_p[head][rows], atol=0.25)


def test_tta_equals_no_tta_for_a_rotation_invariant_crop(look):
    img, centres, _ = scene(["dark"], seed=0)
    img[:] = 232  # no noise: a disc, symmetric under the 8 dihedral transforms
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    cx, cy = centres[0]
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= 36] = 25
    plain = look.probabilities(img, centres, MPP)
    tta = SecondLook(look.model, look.spec, look.params, tta=True).probabilities(
        img, centres, MPP)
    for head in HEADS:
        np.testing.assert_allclose(tta[head], plain[head], atol=1e-5)
    # on an asymmetric crop (noise) the 8 views differ, and TTA changes the numbers
    noise = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    a = look.probabilities(noise, [[17.0, 22.0]], MPP)
    b = SecondLook(look.model, look.spec, look.params, tta=True).probabilities(
        noise, [[17.0, 22.0]], MPP)
    assert max(np.abs(a[h] - b[h]).max() for h in HEADS) > 1e-6


def test_checkpoint_round_trip_keeps_probabilities(regs, look, checkpoints):
    _, both, cls_ckpt = checkpoints
    raw = torch.load(both, map_location="cpu", weights_only=True)
    assert raw["second_look"]["params"] == {**PARAMS, "candidate": {}}
    loaded = load_second_look(load_checkpoint(both), regs, "cpu", str(both))
    img, centres, _ = scene(KINDS * 2, seed=8)
    a, b = look.probabilities(img, centres, MPP), loaded.probabilities(img, centres, MPP)
    for head in HEADS:
        np.testing.assert_array_equal(a[head], b[head])
    # the candidate rule of the second look replaces the checkpoint's detection values
    ckpt = load_checkpoint(both)
    ckpt["second_look"]["params"]["candidate"] = {"s1": 0.2}
    detector, _ = load_detector(save_checkpoint(both.with_name("cand.pt"), ckpt), regs, "cpu")
    assert detector.params.s1 == 0.2


def test_export_refuses_a_checkpoint_with_a_second_look(regs, checkpoints, tmp_path):
    from partsup.inference.export import export_checkpoint
    for fmt in ("torchscript", "safetensors"):
        with pytest.raises(PartsupError, match="export does not carry the second look yet; "
                                               "predict with the checkpoint"):
            export_checkpoint(checkpoints[1], tmp_path / f"m.{fmt}", fmt, regs)


def test_writers_add_class_columns_only_with_a_second_look(tmp_path):
    labelled = [Detection(10.0, 20.0, 0.9, 50.0, "dark",
                          {"object": 0.8, "decoy": 0.2, "dark": 0.7, "grey": 0.3}),
                Detection(30.0, 5.0, 0.6, 40.0, "grey",
                          {"object": 0.55, "decoy": 0.45, "dark": 0.1, "grey": 0.9})]
    info = {"image": "a", "width": 64, "height": 64, "mpp": MPP, "label": "Cell"}
    path = CsvWriter().write(tmp_path / "a.csv", labelled, info)
    lines = path.read_text().splitlines()
    assert lines[0] == "x,y,score,area,class,p_object,p_decoy,p_dark,p_grey"
    assert lines[1] == "10.0,20.0,0.9,50.0,dark,0.8,0.2,0.7,0.3"
    np.testing.assert_allclose(read_detections(path), [[10, 20, 0.9], [30, 5, 0.6]])
    empty = CsvWriter().write(tmp_path / "b.csv", [], {**info, "classes": ["dark", "grey"]})
    assert empty.read_text() == "x,y,score,area,class,p_dark,p_grey\n"
    plain = CsvWriter().write(tmp_path / "c.csv", [Detection(1.0, 2.0, 0.5, 3.0)], info)
    assert plain.read_text() == "x,y,score,area\n1.0,2.0,0.5,3.0\n"
    doc = json.loads(GeoJsonWriter().write(tmp_path / "a.geojson", labelled, info).read_text())
    props = doc["features"][0]["properties"]
    assert props["classification"]["name"] == "Cell (dark)"
    assert props["measurements"] == {"score": 0.9, "area_px": 50.0, "p_object": 0.8,
                                     "p_decoy": 0.2, "p_dark": 0.7, "p_grey": 0.3}
    named = GeoJsonWriter(classification="Thing").feature(labelled[1], "a", 1)
    assert named["properties"]["classification"]["name"] == "Thing (grey)"
    np.testing.assert_allclose(read_detections(tmp_path / "a.geojson")[:, :2], [[10, 20], [30, 5]])


@pytest.mark.parametrize("params, message", [
    ({"verify": {"head": "nope", "positive": "object", "threshold": 0.5}},
     r"second_look\.params\.verify\.head: unknown head 'nope'; the classifier has verify, kind"),
    ({"verify": {"head": "verify", "positive": "dark", "threshold": 0.5}},
     r"verify\.positive: head 'verify' has no class 'dark'; its classes: object, decoy"),
    ({"verify": {"head": "verify", "positive": "object", "threshold": 1.5}},
     r"verify\.threshold: expected a probability in \[0, 1\], got 1\.5"),
    ({"verify": {"head": "verify", "positive": "object", "threshold": -0.1}}, r"got -0\.1"),
    ({"verify": {"head": "verify", "positive": "object", "threshold": True}}, r"got True"),
    ({"verify": {"head": "verify", "positive": "object"}}, r"verify: missing threshold"),
    ({"label": {"head": "colour"}}, r"label\.head: unknown head 'colour'"),
    ({"label": None}, r"needs verify, label or both"),
    ({"label": {"head": "kind"}, "extra": 1}, r"unknown key\(s\) extra"),
])
def test_bad_params_are_one_line_errors(params, message):
    with pytest.raises(RecipeError, match=message) as info:
        SecondLookParams.from_dict(params, HEADS)
    assert "\n" not in str(info.value)


def test_bad_classifier_sections_and_checkpoints(regs, checkpoints):
    with pytest.raises(RecipeError, match=r"classifier\.heads\.kind: class 'object' is "
                                          r"already a class of head 'verify'"):
        CropSpec.from_section({**SECTION, "heads": {"verify": ["object", "x"],
                                                    "kind": ["object", "y"]}})
    with pytest.raises(RecipeError, match=r"classifier\.crop_um: expected a positive"):
        CropSpec.from_section({**SECTION, "crop_um": 0})
    with pytest.raises(RecipeError, match=r"heads\.verify: expected a list of two or more"):
        CropSpec.from_section({**SECTION, "heads": {"verify": ["object"]}})
    with pytest.raises(RecipeError, match=r"unknown classifier 'resnet9000'"):
        build_classifier({**SECTION, "model": {"name": "resnet9000"}}, regs)
    plain = load_checkpoint(checkpoints[0])
    with pytest.raises(CheckpointError, match="not a classifier's"):
        attach_second_look(plain, plain, PARAMS)
    broken = attach_second_look(plain, checkpoints[2], PARAMS)
    broken["second_look"]["model"].pop("heads.kind.bias")
    with pytest.raises(CheckpointError, match=r"second_look: missing tensor 'heads\.kind\.bias'"):
        load_second_look(broken, regs, "cpu", "x.pt")


def test_the_cnn_is_light_and_listed(regs, capsys):
    from partsup.cli.main import main
    net = build_classifier({**SECTION, "model": {"name": "cnn"}}, regs)
    assert 3e5 < sum(p.numel() for p in net.parameters()) < 1e6
    out = net(torch.zeros(2, 3, 48, 48))
    assert {h: tuple(v.shape) for h, v in out.items()} == {"verify": (2, 2), "kind": (2, 2)}
    assert main(["plugins", "--kind", "classifiers"]) == 0
    assert "cnn" in capsys.readouterr().out
