"""Images that would give silently wrong results, or only a MemoryError, are named and explained."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from partsup.errors import DataError
from partsup.data.images import DataWarning, read_image


def test_twelve_bit_data_in_a_sixteen_bit_file_warns(tmp_path):
    img = np.zeros((16, 16, 3), np.uint16)
    img[4:8, 4:8] = 4095  # the brightest 12-bit value
    tifffile.imwrite(tmp_path / "a.tif", img)
    with pytest.warns(DataWarning, match=r"a\.tif: 16-bit image whose values reach only 4095 "
                                         r".*12-bit"):
        out = read_image(tmp_path / "a.tif")
    assert out.max() == 16  # still read as documented (1/257)


def test_full_range_sixteen_bit_is_read_without_a_warning(tmp_path, recwarn):
    img = np.linspace(0, 65535, 16 * 16 * 3).astype(np.uint16).reshape(16, 16, 3)
    tifffile.imwrite(tmp_path / "a.tif", img)
    read_image(tmp_path / "a.tif")
    assert not [w for w in recwarn if issubclass(w.category, DataWarning)]


def test_grayscale_image_warns(tmp_path):
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(tmp_path / "g.png")
    with pytest.warns(DataWarning, match=r"g\.png: grayscale image"):
        assert read_image(tmp_path / "g.png").shape == (16, 16, 3)


@pytest.mark.parametrize("name", ["big.tif", "big.png"])
def test_pixel_limit_is_the_same_for_tiff_and_png_and_can_be_raised(tmp_path, monkeypatch, name):
    img = np.zeros((20, 30, 3), np.uint8)
    if name.endswith(".tif"):
        tifffile.imwrite(tmp_path / name, img)
    else:
        Image.fromarray(img).save(tmp_path / name)
    monkeypatch.setenv("PARTSUP_MAX_IMAGE_PIXELS", "500")
    with pytest.raises(DataError, match=rf"{name}: 30x20 px is more than the limit of 500 px "
                                        rf".*PARTSUP_MAX_IMAGE_PIXELS"):
        read_image(tmp_path / name)
    monkeypatch.setenv("PARTSUP_MAX_IMAGE_PIXELS", "1e3")
    assert read_image(tmp_path / name).shape == (20, 30, 3)
