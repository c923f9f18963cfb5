"""ami-br masks (real set A): the mask builder, the reader's ``masks`` option, its alignment
with the pasted figure discs, the default left unchanged, and the training pipeline on it.

Tests on the real crops skip when ../shared/data/ami-br is absent (as in test_amibr.py).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from partsup.errors import DataError
from partsup_mitosis.amibr import factory
from partsup_mitosis.amibr.geometry import dihedral, dihedral_xy
from partsup_mitosis.amibr.masks import NEAR_PX, PAIR_PX, REASONS, figure_mask

REPO = Path(__file__).resolve().parents[1]


# -- the mask builder on synthetic crops --------------------------------------------------------

def _tissue(seed: int = 0, n: int = 128) -> np.ndarray:
    """Pale pink noisy tissue, ``(n, n, 3)`` uint8."""
    rng = np.random.default_rng(seed)
    base = np.array([225, 185, 210], np.float32)
    return np.clip(base + rng.normal(0, 6, (n, n, 3)), 0, 255).astype(np.uint8)


def _disc(n: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _paint(image: np.ndarray, where: np.ndarray) -> np.ndarray:
    out = image.copy()
    out[where] = (60, 40, 110)  # dark hematoxylin purple
    return out


@pytest.mark.parametrize("r", [6.0, 10.0, 16.0])
def test_dark_centre_disc_gives_the_disc(r):
    disc = _disc(128, 64, 64, r)
    res = figure_mask(_paint(_tissue(), disc))
    assert res.accepted and res.reason == "" and res.mask.dtype == np.uint8
    assert res.mask.shape == (128, 128) and set(np.unique(res.mask)) == {0, 1}
    # within a pixel of the disc: the symmetric difference is a thin ring at most
    diff = res.mask.astype(bool) ^ disc
    inner, outer = _disc(128, 64, 64, r - 1.5), _disc(128, 64, 64, r + 1.5)
    assert not (diff & (inner | ~outer)).any()
    assert abs(int(res.mask.sum()) - int(disc.sum())) <= 2 * np.pi * r


def test_nothing_at_the_centre_is_rejected_with_a_reason():
    plain = figure_mask(_tissue())
    assert not plain.accepted and plain.mask is None and plain.reason in REASONS
    off = figure_mask(_paint(_tissue(), _disc(128, 30, 30, 8)))  # a nucleus far from the centre
    assert off.reason == "no dark component near the centre"


def test_rejections_by_size_and_reach():
    assert figure_mask(_paint(_tissue(), _disc(128, 64, 64, 3))).reason == "area below minimum"
    assert figure_mask(_paint(_tissue(), _disc(128, 64, 64, 26))).reason == \
        "area above maximum"
    bar = np.zeros((128, 128), bool)
    bar[62:67, 20:110] = True  # thin, long: small area, far reach
    assert figure_mask(_paint(_tissue(), bar)).reason == "reaches beyond max radius"
    edge = np.zeros((128, 128), bool)
    edge[60:68, 0:70] = True
    assert figure_mask(_paint(_tissue(), edge)).reason == "touches the crop border"
    padded = _paint(_tissue(), _disc(128, 64, 64, 8))
    padded[:, 50:] = 0  # black slide-border padding over the centre
    assert figure_mask(padded).reason == "padding at the centre"


def test_two_daughter_clumps_are_both_kept_and_the_rule_is_deterministic():
    pair = _disc(128, 64 - 13, 64, 6) | _disc(128, 64 + 13, 64, 6)  # centre between them
    image = _paint(_tissue(), pair)
    res = figure_mask(image)
    assert res.accepted and (res.mask.astype(bool) & pair).sum() > 0.9 * pair.sum()
    assert res.mask[64, 64] == 0 and PAIR_PX > 7 > NEAR_PX
    np.testing.assert_array_equal(figure_mask(image).mask, res.mask)


# -- the reader on the real crops ---------------------------------------------------------------

# sha256 of image + points bytes of two default fields, computed before the masks option existed
BEFORE = {("val", (("fields", 5),), 3):
          "165595b77d2e7f84fa729e54047a75c65ee9fee7ae2da16bacd07881b0b87875",
          ("train", (("density", 18.0), ("fields", 4)), 0):
          "802f481b418243dcfab0664360c3c5cf921f6edaf438e2fe9a489290d93188fb"}


def test_default_fields_are_unchanged(amibr_root):
    for (split, kw, i), want in BEFORE.items():
        s = factory(split=split, **dict(kw))[i]
        assert s.mask is None
        assert hashlib.sha256(s.image.tobytes() + s.points.tobytes()).hexdigest() == want


def test_mask_slides_are_chosen_deterministically(amibr_root):
    ds = factory(split="train", masks=True, mask_slides=2, fields=3)
    assert len(ds.slides) == 2
    assert {ds.by_slide[s][0].source for s in ds.slides} == {"MIDOG21", "TUPAC16"}
    assert ds.slides == factory(split="train", masks=True, mask_slides=2, fields=3).slides
    full = factory(split="train")
    named = factory(split="train", masks=True, mask_slides=[full.slides[0]], fields=3)
    assert named.slides == [full.slides[0]]
    with pytest.raises(DataError, match="not slides of split"):
        factory(split="val", masks=True, mask_slides=[full.slides[0]])
    with pytest.raises(DataError, match="needs masks=True"):
        factory(split="train", mask_slides=2)


def test_masks_follow_the_figure_discs(amibr_root):
    """Around each point, the field's mask is the figure's crop mask in the orientation the
    figure's pixels were pasted in: equal within 11 px of the point (the disc is at least 18 px,
    half-opaque to radius - 2, centred within 3 px per axis) and a subset out to 32 px."""
    ds = factory(split="train", masks=True, mask_slides=2, density=40.0)
    used = {f.index for _, _, figs in ds.fields for f in figs}
    assert used and used <= set(ds.figure_masks) and not used & set(ds.mask_rejects)
    yy, xx = np.mgrid[-32:33, -32:33]
    d = np.sqrt(xx ** 2 + yy ** 2)
    checked = inside = 0
    for i in range(len(ds)):
        if not len(ds.points(i)):
            continue
        s = ds[i]
        assert s.mask.shape == (480, 480) and s.mask.dtype == np.uint8
        np.testing.assert_array_equal(s.points, ds.points(i))
        for (x, y), f in zip(s.points.astype(int), ds.figures(i)):
            crop, cmask = ds.read_crop(f), ds.crop_mask(f)
            got = s.image[y - 6:y + 7, x - 6:x + 7].astype(int)
            errs = []
            for k in range(8):
                fx, fy = dihedral_xy(64, 64, 128, k)
                errs.append(np.abs(dihedral(crop, k)[fy - 6:fy + 7, fx - 6:fx + 7] - got).max())
            k = int(np.argmin(errs))
            assert errs[k] <= 1
            fx, fy = (int(v) for v in dihedral_xy(64, 64, 128, k))
            want = dihedral(cmask, k)[fy - 32:fy + 33, fx - 32:fx + 33].astype(bool)
            field = s.mask[y - 32:y + 33, x - 32:x + 33].astype(bool)
            np.testing.assert_array_equal(field[d <= 11], want[d <= 11])
            assert not (field & ~want & (d <= 32)).any()
            assert field[d <= PAIR_PX].any()  # the figure's mask comes this close to its point
            inside += bool(s.mask[y, x])
            checked += 1
        if checked >= 12:
            break
    assert checked >= 12 and inside >= checked // 2


def test_masks_render_deterministically_and_without_figures(amibr_root):
    ds = factory(split="train", masks=True, mask_slides=1, density=40.0, fields=4)
    i = next(j for j in range(len(ds)) if len(ds.points(j)))
    a, b = ds[i], factory(split="train", masks=True, mask_slides=1, density=40.0, fields=4)[i]
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.mask.sum() > 0
    empty = ds.render(i, figures=False)
    assert empty.mask is not None and empty.mask.sum() == 0
    import pickle
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(ds))[i].mask, a.mask)
    one = factory(split="train", masks=True, mask_slides=ds.slides[0], fields=2)
    assert one.slides == ds.slides
    for bad in (True, 0):
        with pytest.raises(DataError, match="mask_slides"):
            factory(split="train", masks=True, mask_slides=bad)


def _doc_yaml(marker: str) -> dict:
    text = (REPO / "docs" / "datasets.md").read_text()
    blocks = [b.split("```")[0] for b in text.split("```yaml\n")[1:]]
    return yaml.safe_load(next(b for b in blocks if marker in b))


@pytest.mark.slow
def test_documented_recipe_trains_on_real_masks(amibr_root, registries):
    """The documented ``data`` fragment, on the real-tissue recipe, gives set-A items whose
    strong target holds mask pixels."""
    from partsup.data.patches import build_training_data
    from partsup.recipe import load_recipe
    fragment = _doc_yaml("masks: true")["data"]
    assert fragment["strong"]["masks"] is True
    overrides = [f"data.{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
                 for k, v in fragment.items()]
    recipe = load_recipe(REPO / "recipes" / "partmitosis-amibr.yaml", overrides,
                         registries=registries)
    td = build_training_data(recipe, registries, length=400)
    assert td.strong.masks and len(td.strong.slides) == fragment["strong"]["mask_slides"]
    found = 0
    for j in range(400):
        draw = td.sampler.draw(0, j)
        if draw.is_strong and draw.positive:
            item = td.dataset[j]
            strong = item["strong"].numpy()
            assert set(np.unique(strong)) <= {0, 1, 255}
            found += int((strong == 1).sum() > 20)
            if found >= 2:
                break
    assert found >= 2


COLUMNS = ("considered", "accepted", "no dark component near the centre", "area below minimum",
           "area above maximum", "reaches beyond max radius", "touches the crop border")


def _doc_counts() -> dict[str, dict[str, int]]:
    """The counts table of docs/datasets.md: row name -> column -> count."""
    import re
    rows = {}
    for line in (REPO / "docs" / "datasets.md").read_text().splitlines():
        for name, start in (("mask slides", "| `mask_slides: 6`"),
                            ("all training slides", "| all 130 training slides")):
            if line.startswith(start):
                cells = [c.strip() for c in line.strip("|").split("|")[1:]]
                rows[name] = {k: int(re.match(r"\d+", c).group()) for k, c in zip(COLUMNS, cells)}
    return rows


@pytest.mark.slow
def test_documented_sheet_command_gives_the_documented_counts(amibr_root, tmp_path):
    import re
    import shlex
    import subprocess
    import sys
    text = (REPO / "docs" / "datasets.md").read_text()
    cmd = next(line for line in text.splitlines()
               if line.startswith(".venv/bin/python docs/img/make_amibr_masks_sheet.py"))
    argv = [sys.executable] + shlex.split(cmd)[1:] + ["--out", str(tmp_path / "sheet.png")]
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert (tmp_path / "sheet.png").stat().st_size > 100_000
    want = _doc_counts()
    assert set(want) == {"mask slides", "all training slides"}
    block = text.split(cmd + "\n", 1)[1].split("```")[0].splitlines()
    printed = out.splitlines()
    assert printed[:-1] == block[:-1] and printed[-1].startswith("wrote ")  # all but the path
    for name, counts in want.items():
        line = next(ln for ln in out.splitlines() if ln.startswith(name + ":"))
        got = {k: int(n) for n, k in re.findall(r"(\d+) ([a-z ]+?)(?:,|$)", line)}
        assert {k: got.get(k, 0) for k in COLUMNS} == counts, (name, line)
