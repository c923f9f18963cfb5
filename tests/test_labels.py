"""Weak-label makers on hand-made cases: radii, ignore ring, overlaps, clamping, mpp scaling."""
from __future__ import annotations

import numpy as np
import pytest

from partsup.errors import RecipeError
from partsup.types import IGNORE_INDEX


def _make(registries, name, **kw):
    return registries.label_makers.build(name, where="labels.weak", **kw)


def _d2(shape, x, y):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return (xx - x) ** 2 + (yy - y) ** 2


def test_every_maker_follows_contract(registries):
    pts = np.array([[30.0, 30.0], [5.0, 60.0]], np.float32)
    for name in registries.label_makers:
        maker = _make(registries, name)
        out = maker(pts, (64, 80), np.random.default_rng(0), 0.25)
        assert out.shape == (64, 80) and out.dtype == np.uint8, name
        assert set(np.unique(out)) <= {0, 1, IGNORE_INDEX}, name
        assert out[30, 30] == 1, name  # the point itself is positive
        empty = maker(np.zeros((0, 2), np.float32), (16, 16), np.random.default_rng(0), 0.25)
        assert (empty == 0).all(), name


def test_concentric_fixed_radii_exact(registries):
    maker = _make(registries, "concentric", r=12, R=24)
    shape = (80, 90)
    out = maker(np.array([[40.0, 35.0]]), shape, np.random.default_rng(0), 0.25)
    d2 = _d2(shape, 40, 35)
    assert (out[d2 <= 144] == 1).all()
    assert (out[(d2 > 144) & (d2 <= 576)] == IGNORE_INDEX).all()
    assert (out[d2 > 576] == 0).all()
    # inclusive boundary: (40+12, 35) is exactly r away -> positive; (40+24, 35) -> ignore
    assert out[35, 52] == 1 and out[35, 53] == IGNORE_INDEX
    assert out[35, 64] == IGNORE_INDEX and out[35, 65] == 0


def test_concentric_random_radii_in_range_and_fresh(registries):
    maker = _make(registries, "concentric", r=[10, 17], R_scale=[1.5, 2.5])
    rng = np.random.default_rng(1)
    radii = maker.draw_radii(2000, rng)
    r, big = radii[:, 0], radii[:, 1]
    assert set(np.unique(r)) == set(range(10, 18))  # integers 10..17 inclusive, all reached
    assert (big >= np.floor(1.5 * r + 0.5)).all() and (big <= np.floor(2.5 * r + 0.5)).all()
    assert (big == np.round(big)).all()
    shape = (100, 100)
    maps = [maker(np.array([[50.0, 50.0]]), shape, rng, 0.25) for _ in range(8)]
    positives = {int((m == 1).sum()) for m in maps}
    assert len(positives) > 1  # fresh radii on each call
    for m in maps:  # each map is a valid concentric label: inner disk area within r range
        n_pos = int((m == 1).sum())
        assert int((_d2(shape, 50, 50) <= 100).sum()) <= n_pos <= int((_d2(shape, 50, 50) <= 289).sum())


def test_concentric_overlap_sequential_vs_positive_wins(registries):
    pts = np.array([[30.0, 40.0], [50.0, 40.0]])  # 20 px apart: second annulus covers first disk
    shape = (80, 90)
    seq = _make(registries, "concentric", r=10, R=25, overlap="sequential")(
        pts, shape, np.random.default_rng(0), 0.25)
    pos = _make(registries, "concentric", r=10, R=25, overlap="positive_wins")(
        pts, shape, np.random.default_rng(0), 0.25)
    # pixel (x=25, y=40): in the first disk (d=5) and in the second annulus (d=25)
    assert seq[40, 25] == IGNORE_INDEX
    assert pos[40, 25] == 1
    # the later point's disk is positive under both rules
    assert seq[40, 50] == 1 and pos[40, 50] == 1
    # pixel (x=40,y=40) is 10 from both: positive in both
    assert seq[40, 40] == 1 and pos[40, 40] == 1
    # reversed order: sequential now keeps the second (x=50) disk partly ignored instead
    seq_rev = _make(registries, "concentric", r=10, R=25, overlap="sequential")(
        pts[::-1].copy(), shape, np.random.default_rng(0), 0.25)
    assert seq_rev[40, 25] == 1 and seq_rev[40, 55] == IGNORE_INDEX
    assert ((pos == 1) >= (seq == 1)).all()


def test_concentric_out_of_image_clamp_drop_keep(registries):
    shape = (40, 40)
    outside = np.array([[-8.0, 20.0]])
    clamp = _make(registries, "concentric", r=5, R=10, out_of_image="clamp")(
        outside, shape, np.random.default_rng(0), 0.25)
    drop = _make(registries, "concentric", r=5, R=10, out_of_image="drop")(
        outside, shape, np.random.default_rng(0), 0.25)
    keep = _make(registries, "concentric", r=5, R=10, out_of_image="keep")(
        outside, shape, np.random.default_rng(0), 0.25)
    assert clamp[20, 0] == 1 and clamp[20, 5] == 1 and clamp[20, 6] == IGNORE_INDEX
    assert (drop == 0).all()
    # kept at x=-8: no positive pixel (r=5 < 8), ignore reaches x <= 2
    assert (keep != 1).all() and keep[20, 2] == IGNORE_INDEX and keep[20, 3] == 0


def test_concentric_reference_mpp_scales_radii(registries):
    maker = _make(registries, "concentric", r=10, R=20, reference_mpp=0.25)
    shape = (101, 101)
    at_ref = maker(np.array([[50.0, 50.0]]), shape, np.random.default_rng(0), 0.25)
    half = maker(np.array([[50.0, 50.0]]), shape, np.random.default_rng(0), 0.5)
    assert at_ref[50, 60] == 1 and at_ref[50, 61] == IGNORE_INDEX
    assert half[50, 55] == 1 and half[50, 56] == IGNORE_INDEX and half[50, 61] == 0
    assert maker.reach(0.5) == pytest.approx(10.0)
    no_ref = _make(registries, "concentric", r=10, R=20)
    same = no_ref(np.array([[50.0, 50.0]]), shape, np.random.default_rng(0), 0.5)
    assert same[50, 60] == 1  # without reference_mpp radii are plain pixels


def test_disk_with_ring_and_jitter(registries):
    shape = (60, 60)
    out = _make(registries, "disk", radius=6, ignore_ring=3)(
        np.array([[30.0, 30.0]]), shape, np.random.default_rng(0), 0.25)
    d2 = _d2(shape, 30, 30)
    assert (out[d2 <= 36] == 1).all() and (out[(d2 > 36) & (d2 <= 81)] == IGNORE_INDEX).all()
    assert (out[d2 > 81] == 0).all()
    plain = _make(registries, "disk", radius=6)(np.array([[30.0, 30.0]]), shape,
                                                np.random.default_rng(0), 0.25)
    assert IGNORE_INDEX not in plain and (plain == 1).sum() == (d2 <= 36).sum()
    jit = _make(registries, "disk", radius=8, jitter=3)
    areas = {int((jit(np.array([[30.0, 30.0]]), shape, np.random.default_rng(s), 0.25) == 1).sum())
             for s in range(6)}
    assert len(areas) > 1 and all((d2 <= 25).sum() <= a <= (d2 <= 121).sum() for a in areas)


@pytest.mark.parametrize("kw, key", [({"r": [17, 10]}, "r"), ({"r": [10.5, 12]}, "r"),
                                     ({"R_scale": [1, 2, 3]}, "R_scale"),
                                     ({"overlap": "last"}, "overlap"),
                                     ({"out_of_image": "wrap"}, "out_of_image"),
                                     ({"r": 12, "R": 8}, "R")])
def test_concentric_bad_options(registries, kw, key):
    with pytest.raises(RecipeError, match=key):
        _make(registries, "concentric", **kw)
