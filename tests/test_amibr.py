"""ami-br: real-tissue fields from the AMi-Br crops, where position carries no information.

Tests on the real crops use the ``shared_data`` fixture (skipped when ../shared/data is absent);
the error paths use a tiny fake folder.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from partsup.errors import DataError
from partsup.evaluation.matching import Counts, match
from partsup_mitosis.amibr import AmiBrWarning, factory
from partsup_mitosis.amibr.geometry import dihedral, dihedral_xy

RADIUS = 30.0  # px: 7.5 um at 0.25 um/px (MIDOG protocol)


def _fake_root(tmp_path, lines):
    rng = np.random.default_rng(0)
    (tmp_path / "Normal").mkdir(parents=True)
    for k in range(4):
        im = rng.integers(150, 230, (128, 128, 3)).astype(np.uint8)
        im[56:72, 56:72] = 40
        Image.fromarray(im).save(tmp_path / "Normal" / f"c{k}.png")
    (tmp_path / "metadata.csv").write_text("file,source,label,slide,x,y\n" + "".join(lines))
    return tmp_path


def test_missing_root_names_the_layout(tmp_path):
    with pytest.raises(DataError, match="metadata.csv.*not found.*Expected layout"):
        factory(root=tmp_path / "nowhere")


def test_malformed_metadata_strict_and_lenient(tmp_path):
    lines = [f"Normal/c{k}.png,MIDOG21,normal,s{k % 2},{1000 + 300 * k},500\n" for k in range(4)]
    lines.insert(2, "Normal/c1.png,MIDOG21,normal,s1,notanumber,5\n")
    lines.append("Normal/missing.png,MIDOG21,normal,s1,10,10\n")
    root = _fake_root(tmp_path, lines)
    with pytest.raises(DataError, match=r"metadata.csv:4: malformed"):
        factory(root=root, split="all")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = factory(root=root, split="all", strict=False, tile=24, grid=4, feather=4,
                     density=2000)
    msgs = [str(w.message) for w in caught if issubclass(w.category, AmiBrWarning)]
    assert any(":4: malformed" in m for m in msgs) and any("missing.png" in m for m in msgs)
    assert ds.num_points() == 4
    s = ds[0]
    assert s.image.shape == (80, 80, 3) and s.image.dtype == np.uint8


def test_bad_geometry_is_a_data_error(tmp_path):
    root = _fake_root(tmp_path, ["Normal/c0.png,MIDOG21,normal,s0,1,1\n"])
    with pytest.raises(DataError, match="tile"):
        factory(root=root, tile=100)
    with pytest.raises(DataError, match="crop"):
        factory(root=root, crop=64)


def test_default_root_is_partsup_data(tmp_path, monkeypatch):
    root = _fake_root(tmp_path / "data" / "ami-br", ["Normal/c0.png,MIDOG21,normal,s0,1,1\n"])
    monkeypatch.setenv("PARTSUP_DATA", str(tmp_path / "data"))
    from partsup_mitosis.amibr import default_root
    assert default_root() == root
    monkeypatch.delenv("PARTSUP_DATA")
    with pytest.raises(DataError) as info:
        factory(split="all")
    message = str(info.value)
    assert "\n" not in message and "root=" in message and "PARTSUP_DATA is not set" in message


def test_registered_and_split_by_slide(registries, amibr_root):
    sets = {s: registries.datasets.build("ami-br", split=s, fields=50) for s in
            ("train", "val", "test")}
    full = {s: factory(split=s) for s in ("train", "val", "test", "all")}
    slides = {s: set(full[s].slides) for s in full}
    assert not slides["train"] & slides["val"] and not slides["train"] & slides["test"]
    assert not slides["val"] & slides["test"]
    assert slides["train"] | slides["val"] | slides["test"] == slides["all"]
    assert factory(split="test", seed=5).slides == full["test"].slides  # seed does not move it
    n = {s: full[s].num_points() for s in ("train", "val", "test")}
    assert 0.12 < n["test"] / sum(n.values()) < 0.3 and 0.08 < n["val"] / sum(n.values()) < 0.25
    for s, ds in sets.items():
        assert len(ds) == 50 and set(ds.groups) <= slides[s]
        sample = ds[0]
        assert sample.image.shape == (480, 480, 3) and sample.mpp == 0.25
        assert sample.group in slides[s] and sample.mask is None


@pytest.mark.slow
def test_realistic_density_by_default(amibr_root):
    ds = factory(split="train")
    counts = np.array([len(ds.points(i)) for i in range(len(ds))])
    per_field = 1.8 * 480 * 480 / 2000 ** 2  # AMIDA13: 1.8 per 2000x2000 px
    assert counts.mean() == pytest.approx(per_field, rel=0.1)
    assert (counts == 0).mean() > 0.85
    dense = factory(split="train", density=18.0)
    assert dense.num_points() == ds.num_points() and len(dense) < len(ds) / 8


def _figure_field(ds, start=0):
    return next(i for i in range(start, len(ds)) if len(ds.points(i)))


def _window(a, x, y, h=6):
    x, y = int(x), int(y)
    return a[y - h:y + h + 1, x - h:x + h + 1].astype(int)


def test_labels_sit_on_the_real_figure_pixels(amibr_root):
    ds = factory(split="val", density=40.0)
    checked = 0
    for i in range(len(ds)):
        if not len(ds.points(i)):
            continue
        sample = ds[i]
        np.testing.assert_array_equal(sample.points, ds.points(i))
        for (x, y), fig in zip(sample.points, ds.figures(i)):
            crop = np.asarray(Image.open(ds.root / fig.file).convert("RGB"))
            x, y = int(x), int(y)
            got = sample.image[y - 6:y + 7, x - 6:x + 7].astype(int)
            # the centre 13x13 px of the crop (in one of 8 orientations) is copied exactly
            best = min(np.abs(_window(dihedral(crop, k), *dihedral_xy(64, 64, 128, k))
                              - got).max() for k in range(8))
            assert best <= 1
            checked += 1
        if checked >= 6:
            break
    assert checked >= 6


def test_every_disc_fits_inside_its_field(amibr_root):
    ds = factory(split="val", density=60.0)  # crowded fields: darts pushed to the borders
    xy = np.concatenate([ds.points(i, p) for i in range(len(ds)) for p in (0, 1)])
    assert len(xy) == 2 * ds.num_points()
    assert xy.min() >= 31 + 3 and xy.max() <= ds.field_size - 1 - 31 - 3
    some = [i for i in range(len(ds)) if (ds.points(i) < 40).any()][:3]
    assert some and all(ds[i].image.shape == (480, 480, 3) for i in some)


def test_deterministic_seeded_and_picklable(amibr_root):
    import pickle
    a, b = factory(split="val", fields=5), factory(split="val", fields=5)
    c = factory(split="val", fields=5, seed=1)
    first = a[0].image
    np.testing.assert_array_equal(first, b[0].image)
    assert not np.array_equal(first, c[0].image)
    blob = pickle.dumps(a)
    assert len(blob) < 200_000  # no decoded crops travel to DataLoader workers
    np.testing.assert_array_equal(pickle.loads(blob)[0].image, first)


def _tile_centres(ds):
    c = (np.arange(ds.grid) + 0.5) * ds.step
    gx, gy = np.meshgrid(c, c)
    return np.stack([gx.ravel(), gy.ravel()], 1)


@pytest.mark.slow
@pytest.mark.parametrize("density", [1.8, 18.0])
def test_position_only_baselines_fail(amibr_root, density):
    train, test = factory(split="train", density=density), factory(split="test", density=density)
    train_pts = np.concatenate([train.points(i) for i in range(len(train))
                                if len(train.points(i))])
    mean_pos = train_pts.mean(0, keepdims=True)
    centres = _tile_centres(test)
    results = {"tile centres": Counts(), "train mean position": Counts(),
               "every disc centre": Counts()}
    for i in range(len(test)):
        gt = test.points(i)
        figs, decoys = test.centres(i, 0)
        discs = np.asarray([(x, y) for x, y, _ in figs] + list(decoys)).reshape(-1, 2)
        for name, det in (("tile centres", centres), ("train mean position", mean_pos),
                          ("every disc centre", discs)):
            c = match(gt, det, radius_px=RADIUS).counts if len(gt) else Counts(fp=len(det))
            results[name] = results[name] + c
    for name, c in results.items():
        print(f"density {density}: {name}: {c.as_dict()}")
        assert c.f1 <= 0.3, (name, c)
    assert results["every disc centre"].recall == 1.0  # discs are many: a figure is one of them
    # figure positions are spread over the field, not clustered at a few spots
    hist, _, _ = np.histogram2d(train_pts[:, 0], train_pts[:, 1], bins=4,
                                range=[[0, 480], [0, 480]])
    assert hist.min() > 0.3 * hist.mean()


def test_counterfactual_rendering_moves_only_the_figures(amibr_root):
    ds = factory(split="test", density=18.0)
    i = _figure_field(ds)
    base, moved = ds.render(i), ds.render(i, placement=1)
    empty = ds.render(i, figures=False)
    assert len(moved.points) == len(base.points) > 0
    assert np.abs(moved.points - base.points).max() > 10
    for p, q in zip(base.points, moved.points):  # the same disc, pixel for pixel
        (x, y), (u, v) = p.astype(int), q.astype(int)
        np.testing.assert_array_equal(base.image[y - 8:y + 9, x - 8:x + 9],
                                      moved.image[v - 8:v + 9, u - 8:u + 9])
    # the background is unchanged away from the discs; without figures it is the bare field
    far = np.ones(base.image.shape[:2], bool)
    yy, xx = np.mgrid[0:480, 0:480]
    for x, y in np.concatenate([base.points, moved.points]):
        far &= (xx - x) ** 2 + (yy - y) ** 2 > 40 ** 2
    same = (base.image == moved.image).all(-1) & (base.image == empty.image).all(-1)
    assert same[far].mean() > 0.97
    assert len(empty.points) == 0
    x, y = base.points[0].astype(int)
    assert not np.array_equal(base.image[y - 8:y + 9, x - 8:x + 9],
                              empty.image[y - 8:y + 9, x - 8:x + 9])


def test_hard_negatives_are_the_decoy_centres_and_off_by_default(shared_data):
    plain = factory(split="val", fields=12, density=40.0)
    hard = factory(split="val", fields=12, density=40.0, hard_negatives=True)
    assert all(plain.hard_negatives(i).shape == (0, 2) for i in range(len(plain)))
    total = 0
    for i in range(len(hard)):
        negs, pts = hard.hard_negatives(i), hard.points(i)
        assert negs.dtype == np.float32 and negs.shape[1] == 2
        total += len(negs)
        assert ((negs >= 0) & (negs < hard.field_size)).all()
        if len(pts) and len(negs):  # decoy discs never overlap figure discs
            d = np.sqrt(((negs[:, None] - pts[None]) ** 2).sum(-1))
            assert d.min() >= 2 * 33 - 1e-6
        # the same fields either way: the option only exposes the decoys
        np.testing.assert_array_equal(hard.points(i), plain.points(i))
    assert total >= 10 * len(hard)  # Poisson(10) + 3 per figure decoys per field
    # a decoy sits on a dark (hematoxylin-rich) spot: darker than the field on average
    s = hard[0]
    x, y = hard.hard_negatives(0)[0].astype(int)
    assert s.image[y - 3:y + 4, x - 3:x + 4].mean() < s.image.mean()


@pytest.mark.slow
def test_points_carry_their_metadata_label(shared_data):
    """Sample.point_labels: each point's metadata.csv label, in points order (both views);
    the fields' decoys are the Sample's hard negatives only with hard_negatives=True."""
    from partsup_mitosis.amibr.crops import factory as crops_factory
    ds = factory(split="val", fields=30, density=40.0, hard_negatives=True)
    plain = factory(split="val", fields=30, density=40.0)
    seen = set()
    for i in range(len(ds)):
        s, figs = ds[i], ds.centres(i)[0]
        assert s.point_labels == ds.point_labels(i) == tuple(f.label for _, _, f in figs)
        assert len(s.point_labels) == len(s.points)
        np.testing.assert_array_equal(s.hard_negatives, ds.hard_negatives(i))
        assert plain[i].hard_negatives.shape == (0, 2) and plain[i].point_labels == s.point_labels
        seen.update(s.point_labels)
    assert seen == {"normal", "atypical"}
    assert ds.render(0, figures=False).point_labels == ()
    crops = crops_factory(split="val", fields=8)
    for i in range(len(crops)):
        s = crops[i]
        assert s.point_labels == crops.point_labels(i) and len(s.point_labels) == len(s.points)
        # the figure at each crop's centre carries its own crop's label
        centre = {(float(x), float(y)): lab for (x, y), lab in zip(s.points, s.point_labels)}
        _, cols = crops._shape(i)
        for j, f in enumerate(crops.figures(i)):
            gy, gx = divmod(j, cols)
            assert centre[(gx * 128 + 64.0, gy * 128 + 64.0)] == f.label
