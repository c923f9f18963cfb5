"""Two more views of the AMi-Br crops: the ``windows`` layout of ``ami-br`` (figures in their
own natural context, no disc outline) and ``ami-br-crops`` (whole crops side by side)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from partsup.errors import DataError
from partsup_mitosis.amibr import factory
from partsup_mitosis.amibr.crops import factory as crops_factory
from partsup_mitosis.amibr.geometry import dihedral, dihedral_xy


def test_windows_share_is_checked():
    with pytest.raises(DataError, match="windows must be a share in"):
        factory(root="/nonexistent", windows=1.5)


def test_windows_keep_the_points_and_change_the_pixels(amibr_root):
    discs = factory(split="val", density=40.0, fields=12)
    rects = factory(split="val", density=40.0, fields=12, windows=1.0)
    half = factory(split="val", density=40.0, windows=0.5)
    assert all(rects.is_windows(i) for i in range(len(rects)))
    assert not any(discs.is_windows(i) for i in range(len(discs)))
    share = np.mean([half.is_windows(i) for i in range(len(half))])
    assert 0.35 < share < 0.65
    for i in range(3):
        np.testing.assert_array_equal(discs.points(i), rects.points(i))
        a, b = discs[i], rects[i]
        np.testing.assert_array_equal(a.points, b.points)
        assert (a.image != b.image).any()


def test_window_figures_are_whole_and_never_covered(amibr_root):
    """At every figure of a windows field, the 9x9 px around the point are that figure's crop
    centre, exactly: no other figure's window (pasted later) reaches it."""
    ds = factory(split="val", density=60.0, windows=1.0)
    checked = 0
    for i in range(len(ds)):
        if len(ds.points(i)) < 2:
            continue
        sample = ds[i]
        for (x, y), fig in zip(sample.points, ds.figures(i)):
            crop = ds.read_crop(fig)
            x, y = int(x), int(y)
            got = sample.image[y - 4:y + 5, x - 4:x + 5].astype(int)
            err = []
            for k in range(8):
                fx, fy = (int(v) for v in dihedral_xy(64, 64, 128, k))
                want = dihedral(crop, k)[fy - 4:fy + 5, fx - 4:fx + 5].astype(int)
                err.append(np.abs(want - got).max())
            assert min(err) <= 1
            checked += 1
        if checked >= 10:
            break
    assert checked >= 10


def test_window_masks_land_on_their_figures(amibr_root):
    ds = factory(split="train", masks=True, mask_slides=2, density=40.0, windows=1.0)
    hits = []
    for i in range(len(ds)):
        s = ds[i]
        for x, y in s.points:
            hits.append(s.mask[int(y) - 3:int(y) + 4, int(x) - 3:int(x) + 4].any())
        if len(hits) >= 20:
            break
    assert len(hits) >= 20 and np.mean(hits) > 0.9


def test_crops_view_tiles_whole_crops_with_every_figure(amibr_root):
    ds = crops_factory(split="test")
    fields = factory(split="test")
    assert ds.slides == fields.slides  # the same split
    assert sum(len(f) for _, _, f in ds.fields) == sum(len(v) for v in ds.by_slide.values())
    i = next(j for j in range(len(ds)) if len(ds.fields[j][2]) == 9)
    s = ds[i]
    assert s.image.shape == (384, 384, 3) and s.mask is None and s.mpp == 0.25
    figs = ds.fields[i][2]
    first = np.asarray(Image.open(ds.root / figs[0].file).convert("RGB"))
    np.testing.assert_array_equal(s.image[:128, :128], first)
    centres = {(64 + 128 * (j % 3), 64 + 128 * (j // 3)) for j in range(9)}
    assert centres <= {(int(x), int(y)) for x, y in s.points}
    assert len(s.points) >= 9
    small = crops_factory(split="test", per_row=2, fields=5)
    assert len(small) == 5 and max(small.size(j)[0] for j in range(5)) <= 256
    with pytest.raises(DataError, match="per_row"):
        crops_factory(split="test", per_row=0)


def test_crops_view_is_registered(registries, amibr_root):
    ds = registries.datasets.build("ami-br-crops", split="val", fields=3)
    assert len(ds) == 3 and ds[0].points.shape[1] == 2


@pytest.mark.slow
def test_datasets_page_crops_command_runs(amibr_root, tmp_path, monkeypatch):
    """The ``partsup evaluate --dataset ami-br-crops`` line of docs/datasets.md, on 2 fields."""
    import re
    import shlex

    from partsup.cli.main import main
    repo = Path(__file__).resolve().parents[1]
    text = (repo / "docs" / "datasets.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    lines = [ln for b in blocks for ln in b.splitlines() if "ami-br-crops" in ln]
    assert len(lines) == 1
    args = shlex.split(lines[0])
    args[args.index("--out") + 1] = str(tmp_path / "eval-crops")
    monkeypatch.chdir(repo)
    monkeypatch.setenv("PARTSUP_DATA", str(amibr_root.parent))
    assert main(args[1:] + ["--option", "fields=2", "--no-overlays"]) == 0
    assert (tmp_path / "eval-crops" / "metrics.json").is_file()


def test_source_and_label_filters_keep_the_full_split(amibr_root):
    """Filtering by source or label only drops slides: a TUPAC16-only or normal-only reader
    never holds a slide that the unfiltered split puts into another part."""
    full = {sp: factory(split=sp) for sp in ("train", "val", "test")}
    for kw in ({"sources": ["TUPAC16"]}, {"sources": ["MIDOG21"]}, {"labels": ["normal"]},
               {"labels": ["atypical"]}):
        for sp in ("train", "val", "test"):
            part = factory(split=sp, **kw)
            assert set(part.slides) <= set(full[sp].slides), (kw, sp)
    tupac_val = factory(split="val", sources=["TUPAC16"])
    assert tupac_val.slides == [s for s in full["val"].slides
                                if full["val"].by_slide[s][0].source == "TUPAC16"]
