"""Image reading: every supported format and pixel layout, header-only sizes, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from partsup.errors import DataError
from partsup.data.images import DataWarning, image_size, read_image
from partsup.data.readers import group_split, mask_centroids

RGB = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".tiff", ".TIF"])
def test_lossless_formats_roundtrip(tmp_path, suffix):
    p = tmp_path / f"img{suffix}"
    if suffix.lower().startswith(".tif"):
        tifffile.imwrite(p, RGB)
    else:
        Image.fromarray(RGB).save(p)
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, RGB)
    assert image_size(p) == (5, 7)


def test_jpeg_is_rgb_and_close(tmp_path):
    p = tmp_path / "img.jpg"
    flat = np.full((16, 24, 3), (200, 100, 50), np.uint8)
    Image.fromarray(flat).save(p, quality=95)
    out = read_image(p)
    assert out.shape == (16, 24, 3) and np.abs(out.astype(int) - flat).max() <= 4
    assert image_size(p) == (16, 24)


def test_grayscale_rgba_palette_and_16bit(tmp_path):
    gray = RGB[:, :, 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    with pytest.warns(DataWarning, match="grayscale"):
        np.testing.assert_array_equal(read_image(tmp_path / "g.png"),
                                      np.repeat(gray[:, :, None], 3, 2))
    rgba = np.dstack([RGB, np.full((5, 7), 10, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), RGB)
    Image.fromarray(RGB).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (5, 7, 3)
    deep = RGB.astype(np.uint16) * 257  # 16-bit with the same content
    tifffile.imwrite(tmp_path / "d.tif", deep)
    np.testing.assert_array_equal(read_image(tmp_path / "d.tif"), RGB)
    tifffile.imwrite(tmp_path / "d1.tif", gray.astype(np.uint16) * 257)
    with pytest.warns(DataWarning, match="grayscale"):
        np.testing.assert_array_equal(read_image(tmp_path / "d1.tif")[:, :, 2], gray)
    tifffile.imwrite(tmp_path / "f.tif", RGB.astype(np.float32) / 255.0, photometric="rgb")
    assert np.abs(read_image(tmp_path / "f.tif").astype(int) - RGB).max() <= 1
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(RGB, -1, 0).copy(), photometric="rgb",
                     planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif"), RGB)
    assert image_size(tmp_path / "planar.tif") == (5, 7)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"nothere.png: image file not found"):
        read_image(tmp_path / "nothere.png")
    with pytest.raises(DataError, match=r"nothere.tif: image file not found"):
        image_size(tmp_path / "nothere.tif")
    bad = tmp_path / "bad.tiff"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(DataError, match=rf"{bad}: cannot read"):
        read_image(bad)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=rf"{junk}: cannot read image"):
        read_image(junk)
    with pytest.raises(DataError, match=rf"{junk}: cannot read image header"):
        image_size(junk)
    good = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    good.write_bytes(good.read_bytes()[:300])
    assert image_size(good) == (64, 64)  # header survives
    with pytest.raises(DataError, match=rf"{good}: cannot read image"):
        read_image(good)


def test_mask_centroids_8_connected():
    m = np.zeros((10, 12), np.uint8)
    m[1, 1] = m[2, 2] = 1  # diagonal neighbours: one component
    m[6:9, 8:11] = 1
    c = mask_centroids(m)
    np.testing.assert_allclose(c, [[1.5, 1.5], [9, 7]])
    assert mask_centroids(np.zeros((3, 3))).shape == (0, 2)


def test_group_split_with_and_without_a_train_list():
    names = ["A03", "A04", "A05", "H03"]
    assert group_split(names, "train", ["A03"], []) == ["A04", "A05", "H03"]  # the rest
    assert group_split(names, "train", ["A03"], [], train=["A05", "A04"]) == ["A04", "A05"]
    assert group_split(names, "train", ["A03"], [], train=[]) == []
    assert group_split(names, "val", ["A03"], [], train=["A04"]) == ["A03"]
    assert group_split(names, "all", ["A03"], [], train=["A04"]) == names
    assert group_split(["1", "02"], "train", [], [], train=["01"], norm=lambda n: str(int(n))) \
        == ["1"]
