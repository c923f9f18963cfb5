"""Images that would give silently wrong results, or only a MemoryError, are named and explained."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageFile

from partsup.errors import DataError
from partsup.data.images import DataWarning, image_size, read_image


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


# -- the pixel limit is checked from the header, before any decoding (issue 25 item 13) ---------
def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG declaring ``width`` x ``height`` RGB px, with a minimal IDAT (a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _patched(fmt: str, width: int, height: int) -> bytes:
    """A small JPEG or BMP from Pillow whose header is rewritten to ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(buf, fmt)
    data = bytearray(buf.getvalue())
    if fmt == "JPEG":
        sof = data.find(b"\xff\xc0")  # baseline frame header: length, precision, height, width
        struct.pack_into(">HH", data, sof + 5, height, width)
    else:  # BMP info header: width, height (int32) at offset 18
        struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def crafted(tmp_path, suffix: str, width: int, height: int):
    path = tmp_path / f"bomb{suffix}"
    path.write_bytes(_png_header_only(width, height) if suffix == ".png"
                     else _patched("JPEG" if suffix == ".jpg" else "BMP", width, height))
    return path


@pytest.fixture
def no_decoding(monkeypatch):
    """Any attempt to decode pixels fails the test (instead of allocating gigabytes)."""
    def load(self, *a, **k):
        raise AssertionError(f"{self.filename}: pixels were decoded before the size was checked")
    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    monkeypatch.delenv("PARTSUP_MAX_IMAGE_PIXELS", raising=False)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp"])
@pytest.mark.parametrize("side", [60000, 14000])  # 3.6 Gpx; 196 Mpx, just over the default
def test_an_image_over_the_default_limit_is_refused_by_its_header(tmp_path, no_decoding,
                                                                 suffix, side):
    path = crafted(tmp_path, suffix, side, side)
    assert path.stat().st_size < 2000
    limit = 2 * Image.MAX_IMAGE_PIXELS  # the documented default, ~179 million px
    with pytest.raises(DataError) as err:
        read_image(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: {side}x{side} px is more than the limit "
                                              f"of {limit} px per image")
    assert "PARTSUP_MAX_IMAGE_PIXELS" in msg
    assert Image.MAX_IMAGE_PIXELS == limit // 2  # Pillow's own limit is restored


def test_the_header_size_of_a_huge_image_is_read_without_decoding(tmp_path, no_decoding):
    assert image_size(crafted(tmp_path, ".png", 60000, 50000)) == (50000, 60000)


def test_an_image_under_the_raised_limit_reaches_the_decoder(tmp_path, no_decoding, monkeypatch):
    path = crafted(tmp_path, ".png", 14000, 14000)
    monkeypatch.setenv("PARTSUP_MAX_IMAGE_PIXELS", "2e8")  # the documented override
    with pytest.raises(DataError, match="pixels were decoded"):  # the no_decoding guard
        read_image(path)


def test_the_limit_is_pillows_while_pillows_check_is_off(monkeypatch):
    from partsup.data.images import _pillow_off, max_image_pixels
    monkeypatch.delenv("PARTSUP_MAX_IMAGE_PIXELS", raising=False)
    default = max_image_pixels()
    assert default == 2 * Image.MAX_IMAGE_PIXELS
    with _pillow_off():
        assert Image.MAX_IMAGE_PIXELS is None
        with _pillow_off():
            assert max_image_pixels() == default
        assert Image.MAX_IMAGE_PIXELS is None
    assert max_image_pixels() == default and Image.MAX_IMAGE_PIXELS == default // 2
