"""The greedy one-to-one matcher on hand-made cases, counts, and every registered protocol."""
from __future__ import annotations

import math

import numpy as np
import pytest

from partsup.errors import RecipeError
from partsup.evaluation.matching import Counts, match
from partsup.types import Protocol


def test_two_detections_on_one_mitosis_give_one_tp_one_fp():
    r = match([[100, 100]], [[103, 100], [98, 101]], radius_px=10)
    assert (r.tp, r.fp, r.fn) == (1, 1, 0)
    assert r.gt_match.tolist() == [1]  # the nearer one (distance sqrt(5) < 3)
    assert r.det_tp.tolist() == [False, True]


def test_one_detection_between_two_mitoses_serves_the_first_in_order():
    r = match([[0, 0], [20, 0]], [[10, 0]], radius_px=15)
    assert (r.tp, r.fp, r.fn) == (1, 0, 1)
    assert r.gt_match.tolist() == [0, -1]
    r = match([[20, 0], [0, 0]], [[10, 0]], radius_px=15)
    assert r.gt_match.tolist() == [0, -1]  # list order decides, not position


def test_greedy_not_optimal():
    # GT0 takes its nearest D0, which GT1 needed; an optimal assignment would give 2 TP
    r = match([[0, 0], [20, 0]], [[12, 0], [-25, 0]], radius_px=30)
    assert r.gt_match.tolist() == [0, -1]
    assert (r.tp, r.fp, r.fn) == (1, 1, 1)


def test_ties_break_by_score_then_index():
    gt = [[50, 50]]
    det = [[40, 50], [60, 50], [50, 40]]  # all at distance 10
    assert match(gt, det, radius_px=10).gt_match.tolist() == [0]
    assert match(gt, det, scores=[0.2, 0.9, 0.9], radius_px=10).gt_match.tolist() == [1]


def test_radius_is_inclusive():
    assert match([[0, 0]], [[3, 4]], radius_px=5.0).tp == 1
    assert match([[0, 0]], [[3, 4.001]], radius_px=5.0).tp == 0


def test_empty_images():
    r = match(np.zeros((0, 2)), np.zeros((0, 2)), radius_px=10)
    assert (r.tp, r.fp, r.fn) == (0, 0, 0)
    r = match([[1, 1], [50, 50]], [], radius_px=10)
    assert (r.tp, r.fp, r.fn) == (0, 0, 2) and r.gt_match.tolist() == [-1, -1]
    r = match([], [[1, 1]], radius_px=10)
    assert (r.tp, r.fp, r.fn) == (0, 1, 0)
    with pytest.raises(ValueError, match="scores"):
        match([[0, 0]], [[1, 1]], scores=[0.1, 0.2], radius_px=3)


def test_counts_are_summed_before_f1():
    a = match([[0, 0]], [[1, 0], [90, 90]], radius_px=5).counts   # 1 TP, 1 FP
    b = match([[0, 0], [40, 40]], [], radius_px=5).counts          # 2 FN
    total = Counts.total([a, b])
    assert (total.tp, total.fp, total.fn) == (1, 1, 2)
    assert total.precision == 0.5 and total.recall == pytest.approx(1 / 3)
    assert total.f1 == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert Counts().f1 == 0.0 and Counts().precision == 0.0 and Counts().recall == 0.0
    assert Counts(3, 0, 0).as_dict()["f1"] == 1.0


def test_every_registered_protocol(registries):
    names = set(registries.protocols.names())
    assert {"pixels", "microns", "icpr2012", "icpr2012-8um", "icpr2014", "amida13",
            "midog"} <= names
    for name in names:
        p = registries.protocols.build(name)
        assert isinstance(p, Protocol) and p.name == name
        assert p.radius_for(0.25) > 0 and p.description


@pytest.mark.parametrize("name, mpp, px", [
    ("icpr2012", 0.2456, 5 / 0.2456),      # 5 um ~ 20 px
    ("icpr2012-8um", 0.2456, 8 / 0.2456),
    ("icpr2014", 0.2455, 8 / 0.2455),      # 8 um ~ 32 px
    ("amida13", 0.25, 32.0),
    ("midog", 0.25, 30.0),                 # 7.5 um
])
def test_protocol_radii(registries, name, mpp, px):
    assert math.isclose(registries.protocols.build(name).radius_for(mpp), px, rel_tol=1e-9)


@pytest.mark.parametrize("name, paper_px", [("icpr2012", 20), ("icpr2014", 32), ("amida13", 32)])
def test_paper_pixel_radius_is_used_as_is(registries, name, paper_px):
    default = registries.protocols.build(name)
    assert default.radius_px is None  # micrometres by default, converted per image
    p = registries.protocols.build(name, radius_px=paper_px)
    assert p.name == name and f"{paper_px} px" in p.description
    for mpp in (0.2273, 0.2455, 0.25, 0.5):
        assert p.radius_for(mpp) == paper_px
    # a detection 20.2 px away: outside the paper's 20 px, inside 5 um at 0.2456 um/px (20.36 px)
    if name == "icpr2012":
        assert match([[0, 0]], [[20.2, 0]], radius_px=p.radius_for(0.2456)).counts.tp == 0
        assert match([[0, 0]], [[20.2, 0]], radius_px=default.radius_for(0.2456)).counts.tp == 1
    with pytest.raises(RecipeError, match=rf"{name}.*radius_px"):
        registries.protocols.build(name, radius_px=0)


def test_pixel_and_override_radii(registries):
    assert registries.protocols.build("pixels", radius_px=20).radius_for(0.5) == 20
    assert registries.protocols.build("amida13", radius_um=5.0).radius_for(0.25) == 20


def test_radius_overrides_from_recipe_and_cli(registries):
    from partsup.evaluation.protocols import resolve_protocol
    recipe = {"eval": {"protocol": "icpr2012", "radius_um": None, "radius_px": 20}}
    proto = resolve_protocol(registries, None, None, recipe)
    assert proto.name == "icpr2012" and proto.radius_for(0.2456) == 20.0  # the paper's 20 px
    assert resolve_protocol(registries, None, None, {"eval": {"protocol": "icpr2012"}}
                            ).radius_for(0.2456) == pytest.approx(5 / 0.2456)
    recipe = {"eval": {"protocol": "amida13", "radius_um": 5.0}}
    assert resolve_protocol(registries, None, None, recipe).radius_for(0.25) == 20.0
    # CLI flags override whatever protocol was chosen, px before um
    assert resolve_protocol(registries, "midog", radius_px=32).radius_for(0.25) == 32.0
    assert resolve_protocol(registries, "midog", radius_um=8).radius_for(0.25) == 32.0


def test_protocol_fallback_is_the_callers_default(registries):
    """Without --protocol, a dataset protocol or a recipe choice, the caller's default applies
    (the core names no plugin protocol)."""
    from partsup.evaluation.protocols import resolve_protocol
    assert resolve_protocol(registries, None).name == "microns"
    assert resolve_protocol(registries, None, "folder", {"eval": {}}).name == "microns"
    assert resolve_protocol(registries, None, default="amida13").name == "amida13"
    assert resolve_protocol(registries, None, recipe={"eval": {"protocol": "pixels"}},
                            default="amida13").name == "pixels"


def test_open_dataset_uses_a_readers_default_root(monkeypatch):
    """A reader whose root is optional (ami-br: beside the repository) needs no --data-root;
    one whose root is required gets the layout message."""
    from partsup.errors import DataError
    from partsup.data.datasets import open_dataset
    from partsup import Registries, hookimpl, make_plugin_manager

    class Readers:
        @hookimpl
        def partsup_register_datasets(self, register):
            def with_default(root: str | None = None, split: str = "train", strict: bool = True):
                """reader with a default root"""
                return ("opened", root or "<default>", split)

            def required(root: str, split: str = "train", strict: bool = True):
                """reader that needs a root"""
                return ("opened", root, split)
            required.LAYOUT = "<root>/images/*.png"
            register("with_default", with_default)
            register("required", required)

    monkeypatch.delenv("PARTSUP_DATA", raising=False)
    regs = Registries.from_pm(make_plugin_manager(objects=[Readers()], entry_points=False))
    assert open_dataset(regs, "with_default", None, "test") == ("opened", "<default>", "test")
    with pytest.raises(DataError, match="no root folder"):
        open_dataset(regs, "required", None, "test")


# -- precision-recall curve and average precision ----------------------------------------------

def _line(xs):
    """Points (x, 0) for each x."""
    return [[x, 0.0] for x in xs]


def test_ap_perfect_ranking_is_one():
    from partsup.evaluation.matching import pr_curve
    # two hits scored above a false alarm: precision 1 until recall 1
    c = pr_curve([_line([0, 100])], [_line([0, 100, 300])], [[0.9, 0.8, 0.7]], radius_px=5)
    assert c.ap == 1.0
    assert c.precision.tolist() == [1.0, 1.0, pytest.approx(2 / 3)]
    assert c.recall.tolist() == [0.5, 1.0, 1.0] and c.thresholds.tolist() == [0.9, 0.8, 0.7]
    # the same false alarm ranked first: P = 0, 1/2, 2/3 at R = 0, 1/2, 1; the precision at
    # recall 1/2 is raised to the 2/3 reached later (interpolation), so AP = 2/3, not 7/12
    c = pr_curve([_line([0, 100])], [_line([0, 100, 300])], [[0.8, 0.7, 0.9]], radius_px=5)
    assert c.precision.tolist() == [0.0, 0.5, pytest.approx(2 / 3)]
    assert c.ap == pytest.approx(2 / 3)


def test_ap_known_interleaving_is_exact():
    from partsup.evaluation.matching import pr_curve
    # ranked hit, miss, hit, miss, hit over 3 ground-truth points:
    # P = 1, 1/2, 2/3, 1/2, 3/5 at R = 1/3, 1/3, 2/3, 2/3, 1; interpolated P = 1, 2/3, 3/5
    c = pr_curve([_line([0, 100, 200])], [_line([0, 50, 100, 300, 200])],
                 [[0.9, 0.8, 0.7, 0.6, 0.5]], radius_px=5)
    assert c.ap == pytest.approx(1 / 3 + (1 / 3) * (2 / 3) + (1 / 3) * (3 / 5))  # 34/45
    assert c.tp.tolist() == [1, 1, 2, 2, 3] and c.fp.tolist() == [0, 1, 1, 2, 2]


def test_ap_counts_missed_ground_truth_and_pools_images():
    from partsup.evaluation.matching import pr_curve
    # image 1: one hit; image 2: its point is never found; image 3: a false alarm ranked first
    c = pr_curve([_line([0]), _line([0]), []], [_line([0]), [], _line([9])],
                 [[0.5], [], [0.6]], radius_px=[5, 5, 5])
    assert c.n_gt == 2 and c.recall.tolist() == [0.0, 0.5]
    assert c.precision.tolist() == [0.0, 0.5] and c.ap == 0.25


def test_ap_edge_cases():
    from partsup.evaluation.matching import pr_curve
    none = pr_curve([_line([0])], [[]], [[]], radius_px=5)      # ground truth, no detections
    assert none.ap == 0.0 and len(none.precision) == 0
    no_gt = pr_curve([[]], [_line([0])], [[0.4]], radius_px=5)  # AP undefined
    assert no_gt.ap is None and no_gt.precision.tolist() == [0.0]
    assert np.isnan(no_gt.recall).all() and no_gt.points()["recall"] == [None]
    empty = pr_curve([], [], [], radius_px=5)
    assert empty.ap is None and empty.n_gt == 0
    with pytest.raises(ValueError, match="scores"):
        pr_curve([_line([0])], [_line([0])], [[0.1, 0.2]], radius_px=5)
    with pytest.raises(ValueError, match="finite"):
        pr_curve([_line([0])], [_line([0])], [[float("nan")]], radius_px=5)


def test_ap_ties_enter_together_whatever_their_order():
    from partsup.evaluation.matching import pr_curve
    # a hit and a false alarm with equal scores form one point (P 1/2, R 1), in either order
    for det in (_line([0, 50]), _line([50, 0])):
        c = pr_curve([_line([0])], [det], [[0.5, 0.5]], radius_px=5)
        assert c.thresholds.tolist() == [0.5] and c.precision.tolist() == [0.5]
        assert c.ap == 0.5
    # equal scores across images: also one point
    c = pr_curve([_line([0]), _line([0])], [_line([50]), _line([0])], [[0.5], [0.5]], 5)
    assert c.tp.tolist() == [1] and c.fp.tolist() == [1] and c.ap == 0.25


def test_match_ranked_takes_detections_in_score_order():
    from partsup.evaluation.matching import match_ranked
    # two detections on one point: the higher score is the hit, even when farther away
    assert match_ranked(_line([0]), _line([1, 4]), [0.5, 0.9], radius_px=5).tolist() == [
        False, True]
    assert match([[0, 0]], _line([1, 4]), [0.5, 0.9], radius_px=5).det_tp.tolist() == [
        True, False]  # match() takes the nearest instead (same counts here)
    # a detection takes its nearest point; list-order matching of the same case gives 1 TP
    gt, det = _line([0, 20]), _line([12, -25])
    assert match_ranked(gt, det, [0.9, 0.8], radius_px=30).tolist() == [True, True]
    assert match(gt, det, [0.9, 0.8], radius_px=30).tp == 1
    # the radius is inclusive; equal scores: lower index first
    assert match_ranked([[0, 0]], [[3, 4]], [1.0], radius_px=5.0).tolist() == [True]
    assert match_ranked([[0, 0]], [[3, 4.001]], [1.0], radius_px=5.0).tolist() == [False]
    assert match_ranked(_line([0]), _line([2, 2]), [0.5, 0.5], 5).tolist() == [True, False]


def test_ap_properties_on_random_cases():
    """AP in [0, 1]; recall non-decreasing; cumulative counts nested; AP equals the rectangle
    sum under the interpolated curve; shuffling the detections changes nothing."""
    from partsup.evaluation.matching import average_precision, pr_curve
    rng = np.random.default_rng(0)
    for trial in range(60):
        n_img = int(rng.integers(1, 4))
        gt = [rng.uniform(0, 100, (int(rng.integers(0, 6)), 2)) for _ in range(n_img)]
        det = [rng.uniform(0, 100, (int(rng.integers(0, 8)), 2)) for _ in range(n_img)]
        sc = [rng.choice([0.2, 0.5, 0.7, 0.9], len(d)) for d in det]  # many ties
        c = pr_curve(gt, det, sc, radius_px=15)
        if c.n_gt == 0:
            assert c.ap is None
            continue
        assert 0.0 <= c.ap <= 1.0
        assert np.all(np.diff(c.recall) >= 0) and np.all(np.diff(c.thresholds) < 0)
        assert np.all(np.diff(c.tp) >= 0) and np.all(np.diff(c.fp) >= 0)
        assert np.all((c.precision >= 0) & (c.precision <= 1))
        assert c.ap <= max(c.recall, default=0.0) + 1e-12
        if len(c.tp):
            assert c.tp[-1] + c.fp[-1] == sum(len(d) for d in det)
        assert average_precision(c.precision, c.recall) == c.ap
        perm = [rng.permutation(len(d)) for d in det]
        s = pr_curve(gt, [d[p] for d, p in zip(det, perm)], [x[p] for x, p in zip(sc, perm)],
                     radius_px=15)
        assert s.ap == pytest.approx(c.ap) and s.tp.tolist() == c.tp.tolist(), trial


def test_pr_points_are_downsampled_keeping_the_ends():
    from partsup.evaluation.matching import pr_curve
    n = 1000
    c = pr_curve([_line(range(0, 10 * n, 10))], [_line(range(0, 10 * n, 10))],
                 [np.linspace(1, 0, n)], radius_px=1)
    pts = c.points(200)
    assert c.ap == 1.0 and pts["n_points"] == n and len(pts["precision"]) == 200
    assert pts["thresholds"][0] == 1.0 and pts["thresholds"][-1] == 0.0
    assert pts["recall"][-1] == 1.0 and len(c.points(5000)["recall"]) == n
