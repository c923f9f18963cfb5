"""Patch sampling, augmentation alignment, targets, determinism, sharding and collation."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from partsup.data.augment import StainJitter
from partsup.data.patches import PatchDataset, build_training_data, collate_patches, render, transform
from partsup.data.sampling import AugmentConfig, Draw, MixedSampler, PatchConfig, strong_at
from partsup.errors import RecipeError
from partsup.types import IGNORE_INDEX, Sample


class ListReader:
    """In-memory stand-in for a dataset reader (same cheap accessors)."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]

    def points(self, i):
        return self.samples[i].points

    def hard_negatives(self, i):
        return self.samples[i].hard_negatives

    def num_points(self):
        return sum(len(s.points) for s in self.samples)


def marked_sample(x=70, y=45, shape=(120, 160), r=4, with_mask=True, seed=0):
    """Dark noisy image with one bright disk of radius r at (x, y), its mask and its point."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 40, (*shape, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    disk = (xx - x) ** 2 + (yy - y) ** 2 <= r * r
    img[disk] = 255
    return Sample(image=img, points=[[x, y]], mask=disk.astype(np.uint8) if with_mask else None,
                  hard_negatives=[[130, 100]], mpp=0.25, id=f"m{seed}", group="g")


def centroid(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def _draws(size=(48, 64)):
    """Positive draws over every rotation of 16, with mirror and all 9 shifts; negatives over
    every rot90/transposition/mirror combination centred on the mark."""
    out = []
    for k in range(16):
        for dx in (-1, 0, 1):
            out.append(Draw(True, True, 0, size, center=(70 - dx * 10, 45 + dx * 8),
                            angle=k * 22.5, flip=bool(k % 2), seed=k))
    for code in range(8):
        out.append(Draw(True, False, 0, size, center=(70, 45), flip=bool(code & 1),
                        transpose=bool(code & 2), vflip=bool(code & 4), seed=code))
    return out


def test_geometry_keeps_point_mask_and_image_aligned():
    s = marked_sample()
    for d in _draws():
        image, aux, pts = transform(d, s)
        assert image.shape == (48, 64, 3) and aux.shape == (48, 64, 2), d
        assert len(pts) == 1
        bright = image.max(axis=2) > 150
        c_img, c_mask = centroid(bright), centroid(aux[:, :, 0] > 0)
        assert np.abs(c_img - pts[0]).max() <= 1.0, (d, c_img, pts[0])
        assert np.abs(c_mask - pts[0]).max() <= 1.0, (d, c_mask, pts[0])
        assert abs(int(bright.sum()) - int((aux[:, :, 0] > 0).sum())) <= 12, d


def test_rendered_targets_follow_the_moved_point(registries):
    s = marked_sample()
    maker = registries.label_makers.build("disk", radius=3)
    for d in _draws():
        item = render(d, s, maker, AugmentConfig(), np.random.default_rng(0))
        weak, strong = item["weak"].numpy(), item["strong"].numpy()
        img = item["image"].numpy().transpose(1, 2, 0)
        assert item["image"].dtype == torch.float32 and item["weak"].dtype == torch.int64
        assert img.max() <= 255 and img.min() >= 0
        c_weak, c_strong = centroid(weak == 1), centroid(strong == 1)
        c_img = centroid(img.max(axis=2) > 150)
        assert np.abs(c_weak - c_img).max() <= 1.0, d
        assert np.abs(c_strong - c_img).max() <= 1.0, d


def test_weak_label_after_rotation_is_a_round_disk(registries):
    """Labels are drawn after the geometry: a rotated disk label is still a clean disk."""
    s = marked_sample()
    maker = registries.label_makers.build("concentric", r=10, R=20)
    d = Draw(False, True, 0, (64, 64), center=(70, 45), angle=22.5, seed=3)
    weak = render(d, s, maker, AugmentConfig(), np.random.default_rng(0))["weak"].numpy()
    c = centroid(weak == 1)
    yy, xx = np.mgrid[0:64, 0:64]
    d2 = (xx - c[0]) ** 2 + (yy - c[1]) ** 2
    assert ((weak == 1) == (d2 <= 100.5)).mean() > 0.995


def test_outside_source_is_ignored_and_set_b_has_no_strong_target(registries):
    s = marked_sample(x=5, y=5, shape=(40, 50))  # patch larger than the image, corner point
    maker = registries.label_makers.build("concentric", r=3, R=6)
    d = Draw(False, True, 0, (64, 64), center=(5, 5), seed=0)
    item = render(d, s, maker, AugmentConfig(), np.random.default_rng(0))
    weak, strong = item["weak"].numpy(), item["strong"].numpy()
    assert (strong == IGNORE_INDEX).all()  # set B
    img = item["image"].numpy()
    outside = img.sum(axis=0) == 0
    assert outside.any() and (weak[outside] == IGNORE_INDEX).all()
    a = render(Draw(True, True, 0, (64, 64), center=(5, 5), seed=0), s, maker, AugmentConfig(),
               np.random.default_rng(0))["strong"].numpy()
    assert (a[outside] == IGNORE_INDEX).all() and (a == 1).sum() == (s.mask == 1).sum()
    assert set(np.unique(a[~outside])) == {0, 1}


def test_point_outside_patch_paints_its_part(registries):
    """A mitosis just beyond the patch edge still paints its disk inside (no clamping)."""
    s = marked_sample(x=70, y=45)
    maker = registries.label_makers.build("concentric", r=8, R=16, out_of_image="clamp")
    d = Draw(False, False, 0, (40, 40), center=(70 + 20 + 4, 45), seed=0)  # point 4 px left of patch
    weak = render(d, s, maker, AugmentConfig(), np.random.default_rng(0))["weak"].numpy()
    assert weak[20, 0] == 1 and weak[20, 4] == 1 and weak[20, 5] == IGNORE_INDEX
    assert weak[20, 13] == 0  # d=17 > R


def test_sampler_ratio_positives_and_negatives(registries):
    a = ListReader([marked_sample(seed=i) for i in range(2)])
    b = ListReader([marked_sample(seed=5 + i, with_mask=False) for i in range(3)])
    samp = MixedSampler(a, b, PatchConfig(size=(32, 32), strong_fraction=0.3,
                                          positive_fraction=0.5), AugmentConfig(rotations=16))
    draws = [samp.draw(0, i) for i in range(200)]
    assert sum(d.is_strong for d in draws) == 60  # exact
    assert sum(strong_at(i, 0.3) for i in range(10)) == 3
    pos = [d for d in draws if d.positive]
    assert 70 < len(pos) < 130
    assert {d.angle for d in pos} <= {k * 22.5 for k in range(16)} and len({d.angle for d in pos}) > 8
    shifts = {(round(d.center[0] - 70), round(d.center[1] - 45)) for d in pos}
    assert shifts == {(sx, sy) for sx in (-8, 0, 8) for sy in (-8, 0, 8)}  # 9 directions, 0.25*32
    neg = [d for d in draws if not d.positive]
    assert all(d.angle == 0 for d in neg) and {(d.flip, d.transpose, d.vflip) for d in neg}.__len__() == 8
    only_a = MixedSampler(a, None, PatchConfig(size=32))
    assert all(only_a.draw(0, i).is_strong for i in range(10))
    only_b = MixedSampler(None, b, PatchConfig(size=32, strong_fraction=0.9))
    assert not any(only_b.draw(0, i).is_strong for i in range(10))
    with pytest.raises(RecipeError):
        MixedSampler(None, None, PatchConfig())


def test_negative_patches_avoid_mitoses(registries):
    b = ListReader([marked_sample(shape=(200, 300), seed=i, with_mask=False) for i in range(2)])
    maker = registries.label_makers.build("disk", radius=3)
    samp = MixedSampler(None, b, PatchConfig(size=48, positive_fraction=0.0), AugmentConfig())
    ds = PatchDataset(samp, maker, 30)
    assert all((ds[i]["weak"] != 1).all() for i in range(30))
    hard = MixedSampler(None, b, PatchConfig(size=48, positive_fraction=0.0,
                                             hard_negative_fraction=1.0), AugmentConfig())
    assert all(hard.draw(0, i).center == (130.0, 100.0) for i in range(5))


def test_dataset_is_deterministic_resumable_and_shardable(registries):
    a = ListReader([marked_sample(seed=i) for i in range(2)])
    b = ListReader([marked_sample(seed=5 + i, with_mask=False) for i in range(3)])
    maker = registries.label_makers.build("concentric")

    def make():
        return PatchDataset(MixedSampler(a, b, PatchConfig(size=40, strong_fraction=0.5),
                                         AugmentConfig(stain=True, color_jitter=True), seed=7),
                            maker, 12)
    ds1, ds2 = make(), make()
    for i in (0, 3, 7):
        x, y = ds1[i], ds2[i]
        for key in ("image", "weak", "strong"):
            assert torch.equal(x[key], y[key]), (i, key)
    clone = pickle.loads(pickle.dumps(ds1))
    assert torch.equal(clone[5]["weak"], ds1[5]["weak"])
    first = ds1[2]["image"]
    ds1.set_epoch(1)
    assert not torch.equal(ds1[2]["image"], first)  # a new epoch draws anew
    ds2.set_epoch(1)
    assert torch.equal(ds1[2]["weak"], ds2[2]["weak"])
    shards = [list(DistributedSampler(ds1, num_replicas=2, rank=k, shuffle=False)) for k in (0, 1)]
    assert sorted(shards[0] + shards[1]) == list(range(12)) and not set(shards[0]) & set(shards[1])
    batch = next(iter(DataLoader(ds1, batch_size=4, sampler=shards[1], num_workers=0)))
    assert batch["image"].shape == (4, 3, 40, 40) and batch["is_strong"].dtype == torch.bool
    assert torch.equal(batch["weak"][0], ds1[shards[1][0]]["weak"])


def test_colour_augmentation_changes_pixels_not_labels(registries):
    s = marked_sample()
    maker = registries.label_makers.build("disk", radius=3)
    d = Draw(True, True, 0, (48, 48), center=(70, 45), angle=45.0, seed=11)
    plain = render(d, s, maker, AugmentConfig(), np.random.default_rng(0))
    aug = render(d, s, maker, AugmentConfig(stain=True, color_jitter=True),
                 np.random.default_rng(0))
    assert not torch.equal(plain["image"], aug["image"])
    assert torch.equal(plain["weak"], aug["weak"]) and torch.equal(plain["strong"], aug["strong"])
    img = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    same = StainJitter(sigma=0.0).apply(img, alpha=np.ones(3), beta=np.zeros(3))
    assert np.abs(same.astype(int) - img).max() <= 1
    darker = StainJitter().apply(img, alpha=np.full(3, 1.5), beta=np.zeros(3))
    assert darker.astype(int).sum() < img.astype(int).sum()


def test_collate_pads_mixed_sizes():
    items = [{"image": torch.ones(3, 4, 5), "weak": torch.zeros(4, 5, dtype=torch.long),
              "strong": torch.ones(4, 5, dtype=torch.long), "is_strong": True, "positive": True,
              "id": "a"},
             {"image": torch.ones(3, 6, 3), "weak": torch.zeros(6, 3, dtype=torch.long),
              "strong": torch.full((6, 3), 255, dtype=torch.long), "is_strong": False,
              "positive": False, "id": "b"}]
    out = collate_patches(items)
    assert out["image"].shape == (2, 3, 6, 5) and out["weak"].shape == (2, 6, 5)
    assert (out["weak"][0, 4:] == IGNORE_INDEX).all() and (out["image"][0, :, 4:] == 0).all()
    assert out["is_strong"].tolist() == [True, False] and out["id"] == ["a", "b"]


def test_build_training_data_from_recipe(registries, tmp_path):
    from helpers import disk_pixels, write_amida13, write_icpr2012
    write_amida13(tmp_path / "amida", {"01/01": [(40.0, 30.0)], "02/01": [(10.0, 10.0)]},
                  shape=(96, 128))
    write_icpr2012(tmp_path / "icpr", {"A00_00": [disk_pixels(60, 50, 5)]}, shape=(96, 128))
    recipe = {"seed": 3, "labels": {"weak": {"name": "concentric", "r": [10, 12]}},
              "data": {"strong": {"name": "icpr2012", "root": str(tmp_path / "icpr")},
                       "weak": {"name": "amida13", "root": str(tmp_path / "amida"),
                                "split": "train"},
                       "patch": {"size": [40, 56], "negative_size": None,
                                 "positive_fraction": 0.5, "strong_fraction": 0.5},
                       "augment": {"geometric": True, "rotations": 8, "stain": False,
                                   "color_jitter": False}}}
    td = build_training_data(recipe, registries)
    assert len(td.dataset) == 6  # 3 mitoses / positive_fraction 0.5
    item = td.dataset[0]
    assert item["image"].shape == (3, 40, 56)
    strong_items = [td.dataset[i] for i in range(6) if td.dataset[i]["is_strong"]]
    assert len(strong_items) == 3
    assert all(set(it["strong"].unique().tolist()) <= {0, 1, 255} for it in strong_items)
    with pytest.raises(RecipeError, match="data.patch.size"):
        build_training_data({**recipe, "data": {**recipe["data"], "patch": {"size": [1, 2, 3]}}},
                            registries)


def test_configs_from_resolved_recipe_sections():
    from partsup.recipe import SCHEMA, _validate_section
    data = _validate_section({"patch": {"size": [64, 48], "shift": 0.1,
                                        "hard_negative_fraction": 0.5},
                              "augment": {"rotations": 16, "stain": True, "stain_sigma": 0.02}},
                             SCHEMA["data"], "data", "<test>", None)
    patch = PatchConfig.from_recipe(data["patch"])
    aug = AugmentConfig.from_recipe(data["augment"])
    assert patch.size == (64, 48) and patch.neg_size == (64, 48) and patch.shift == 0.1
    assert patch.hard_negative_fraction == 0.5 and patch.strong_fraction == 0.5
    assert aug.rotations == 16 and aug.stain and aug.stain_sigma == 0.02 and aug.geometric
    with pytest.raises(RecipeError, match="shift"):
        PatchConfig(size=64, shift=0.6)
    with pytest.raises(RecipeError, match="strong_fraction"):
        PatchConfig(size=64, strong_fraction=1.5)
