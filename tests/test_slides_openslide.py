"""Slides through OpenSlide (``partsup[openslide]``): the formats only it reads (``.mrxs``...)
and any slide with ``PARTSUP_SLIDE_BACKEND=openslide``. Checked on the synthetic pyramid TIFF,
which OpenSlide reads as a generic TIFF (level 0 only: its pyramid levels are sub-IFDs)."""
from __future__ import annotations

import builtins

import numpy as np
import pytest

from partsup.errors import DataError
from partsup.output.writers import read_detections
from partsup.slides.reader import SlideReader, is_slide, open_slide

from helpers import SLIDE_CENTRES as CENTRES, make_slide, matched, run_predict, slide_image


def test_openslide_backend_reads_what_tifffile_reads(tmp_path, monkeypatch):
    pytest.importorskip("openslide", reason="OpenSlide not installed "
                        "(pip install 'partsup[openslide]')")
    from partsup.slides.openslide_reader import OpenSlideReader
    path = make_slide(tmp_path / "s.tif")
    monkeypatch.setenv("PARTSUP_SLIDE_BACKEND", "openslide")
    with open_slide(path) as s, SlideReader(path) as t:
        assert isinstance(s, OpenSlideReader)
        assert s.dimensions == t.dimensions == (2048, 1536) and s.mpp == pytest.approx(0.25)
        np.testing.assert_array_equal(s.read_region(0, 700, 300, 333, 257),
                                      slide_image()[300:557, 700:1033])
        assert (s.read_region(0, 2000, 1500, 100, 100)[60:, 60:] == 255).all()  # outside
        thumb, scale = s.thumbnail(600)
        assert thumb.shape[:2] == (round(1536 * scale), round(2048 * scale))
        assert np.abs(thumb[100, 100].astype(int) - t.thumbnail(600)[0][100, 100]).max() < 40


def test_slide_predicted_through_openslide_finds_the_disks(tmp_path, plugin, checkpoint,
                                                           monkeypatch):
    pytest.importorskip("openslide", reason="OpenSlide not installed "
                        "(pip install 'partsup[openslide]')")
    path = make_slide(tmp_path / "case.tif")
    monkeypatch.setenv("PARTSUP_SLIDE_BACKEND", "openslide")
    assert run_predict([path, "--checkpoint", checkpoint, "--out", tmp_path / "out", "--device",
                        "cpu", "--slide-tile", "256", "--format", "csv"], plugin) == 0
    matched(read_detections(tmp_path / "out" / "case.csv"), CENTRES)


def test_mrxs_is_a_slide_and_fails_in_one_line(tmp_path, monkeypatch, plugin, checkpoint,
                                               capsys):
    bad = tmp_path / "scan.mrxs"
    bad.write_text("not a MIRAX index")
    assert is_slide(bad)
    real = builtins.__import__

    def no_openslide(name, *a, **k):
        if name == "openslide":
            raise ImportError("no openslide")
        return real(name, *a, **k)
    with monkeypatch.context() as m:
        m.setattr(builtins, "__import__", no_openslide)
        with pytest.raises(DataError, match=r"needs OpenSlide: pip install 'partsup\[openslide\]'"):
            open_slide(bad)
    pytest.importorskip("openslide", reason="OpenSlide not installed")
    with pytest.raises(DataError, match="cannot read slide"):
        open_slide(bad)
    assert run_predict([bad, "--checkpoint", checkpoint, "--out", tmp_path / "out", "--device",
                        "cpu"], plugin) == 1  # reported, skipped, exit 1
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "scan.mrxs: cannot read slide" in err and "Traceback" not in err
