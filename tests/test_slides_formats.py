"""Scanners' files: JPEG and JPEG 2000 tiles in the Aperio SVS layout (written here with tifffile
and imagecodecs, predicted on with the dark-disk model of test_predict), the um/px that OME-XML,
ImageJ and the TIFF resolution units record (:func:`partsup.slides.reader.file_mpp`), and DICOM
whole-slide images through OpenSlide."""
from __future__ import annotations

import builtins
import csv
import struct
from pathlib import Path

import numpy as np
import pytest

from partsup.errors import DataError
from partsup.output.writers import read_detections
from partsup.slides.reader import SlideReader, file_mpp, is_slide, open_slide

from helpers import SLIDE_CENTRES as CENTRES, matched, run_predict, slide_image

REPO = Path(__file__).resolve().parents[1]
APERIO = "Aperio Image Library v12.0.15 \r\n"


def _reduce(img: np.ndarray, f: int) -> np.ndarray:
    h, w = img.shape[0] // f, img.shape[1] // f
    small = img[: h * f, : w * f].reshape(h, f, w, f, 3).astype(np.float32).mean(axis=(1, 3))
    return np.round(small).astype(np.uint8)


def write_svs(path, img: np.ndarray, mpp: float, compression, tile: int = 256):
    """``img`` as an Aperio SVS does it: page 0 the tiled level 0 whose description holds
    ``|MPP = ...|``, page 1 a stripped thumbnail, then the tiled 4x and 16x levels (plain
    pages, not SubIFDs), then the label and macro images (stripped, NewSubfileType 1 and 9)."""
    import tifffile
    h, w = img.shape[:2]
    head = (f"{APERIO}{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) JPEG/RGB Q=80|AppMag = 40"
            f"|StripeWidth = 1000|ScanScope ID = SS1234|Filename = case|MPP = {mpp:.4f}"
            f"|Left = 25.6|Top = 23.4|LineCameraSkew = -0.000424|ImageID = 1004486")
    tiled = dict(tile=(tile, tile), photometric="rgb", compression=compression, metadata=None)
    with tifffile.TiffWriter(path) as tw:
        tw.write(img, description=head, resolution=(1e4 / mpp, 1e4 / mpp),
                 resolutionunit="CENTIMETER", **tiled)
        thumb = _reduce(img, 8)
        tw.write(thumb, photometric="rgb", compression="jpeg", rowsperstrip=16, metadata=None,
                 description=f"{APERIO}{w}x{h} -> {thumb.shape[1]}x{thumb.shape[0]} - |AppMag = 40"
                             f"|MPP = {mpp:.4f}")
        for f in (4, 16):
            level = _reduce(img, f)
            tw.write(level, description=f"{APERIO}{w}x{h} ({tile}x{tile}) -> "
                                        f"{level.shape[1]}x{level.shape[0]} JPEG/RGB Q=80", **tiled)
        tw.write(np.full((120, 100, 3), 200, np.uint8), photometric="rgb", compression="lzw",
                 subfiletype=1, description=f"{APERIO}label 100x120", metadata=None)
        tw.write(np.full((100, 300, 3), 180, np.uint8), photometric="rgb", compression="jpeg",
                 subfiletype=9, description=f"{APERIO}macro 300x100", metadata=None)
    return path


def test_the_test_extra_carries_the_slide_codecs():
    # without imagecodecs in the test extra the SVS tests below are skipped: no JPEG slide read
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    codecs = [[r for r in extras[name] if r.startswith("imagecodecs")] for name in
              ("test", "slides")]
    assert codecs[0] == codecs[1] == ["imagecodecs>=2023.3.16"], codecs


def _codec(name: str) -> None:
    """Skip unless imagecodecs (the ``slides`` and ``test`` extras) has codec ``name``."""
    codecs = pytest.importorskip("imagecodecs", reason="imagecodecs not installed "
                                 "(pip install 'partsup[slides]')")
    if not getattr(codecs, name).available:
        pytest.skip(f"this imagecodecs build has no {name} codec")


@pytest.mark.parametrize("compression,codec,tol", [
    ("jpeg", "JPEG8", 12),                 # Aperio's usual tiles (TIFF compression 7)
    ("APERIO_JP2000_RGB", "JPEG2K", 3),    # Aperio's JPEG 2000 (33005), lossless here
], ids=["jpeg", "jpeg2000-33005"])
def test_aperio_svs_with_compressed_tiles_reads_and_predicts(tmp_path, plugin, checkpoint,
                                                              compression, codec, tol):
    _codec(codec)
    import tifffile
    img = slide_image()
    path = write_svs(tmp_path / "case.svs", img, 0.252, compression)
    with tifffile.TiffFile(path) as tif:  # the layout is the one tifffile knows as SVS
        assert tif.is_svs and [lv.keyframe.imagelength for lv in tif.series[0].levels] == [1536, 384, 96]
        assert tif.pages[0].compression in (7, 33005)
    assert is_slide(path) and file_mpp(path) == pytest.approx(0.252)
    with SlideReader(path) as s:
        assert s.mpp == pytest.approx(0.252) and s.dimensions == (2048, 1536)
        assert [lv.downsample for lv in s.levels] == [1.0, 4.0, 16.0]
        got = s.read_region(0, 700, 300, 333, 257).astype(int)
        assert np.abs(got - img[300:557, 700:1033]).mean() < tol  # decoded, not garbage
    out = tmp_path / "out"
    assert run_predict([path, "--checkpoint", checkpoint, "--out", out, "--device", "cpu",
                "--slide-tile", "256", "--format", "csv"], plugin) == 0
    # 0.252 um/px resampled to the model's 0.25; detections back in level-0 px
    matched(read_detections(out / "case.csv"), CENTRES, atol=3.0)
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert rows[0]["count"] == str(len(CENTRES)) and rows[0]["width"] == "2048"


# --- um/px from the file ------------------------------------------------------------------

OME = ('<?xml version="1.0" encoding="UTF-8"?>'
       '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
       '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" '
       'SizeX="16" SizeY="8" SizeC="3" SizeZ="1" SizeT="1" {size}>'
       '<Channel ID="Channel:0:0" SamplesPerPixel="3"/></Pixels></Image></OME>')


@pytest.mark.parametrize("attrs,expected", [
    ('PhysicalSizeX="0.25" PhysicalSizeXUnit="µm"', 0.25),
    ('PhysicalSizeX="0.5"', 0.5),                                  # the unit defaults to um
    ('PhysicalSizeX="250" PhysicalSizeXUnit="nm"', 0.25),
    ('PhysicalSizeX="0.00025" PhysicalSizeXUnit="mm"', 0.25),
    ('PhysicalSizeX="0.000025" PhysicalSizeXUnit="cm"', 0.25),
    ('PhysicalSizeX="0.2456" PhysicalSizeXUnit="um"', 0.2456),
    ('PhysicalSizeX="20" PhysicalSizeXUnit="µm"', None),          # implausible for a scan
    ('PhysicalSizeX="0.25" PhysicalSizeXUnit="parsec"', 1.0),     # unknown unit: the tags'
    ('', 1.0),                                                     # none recorded: the tags'
])
def test_mpp_from_ome_xml(tmp_path, attrs, expected):
    import tifffile
    path = tmp_path / "img.ome.tif"
    # resolution tags (1 um/px) that disagree: OME-XML comes first when it has a size
    tifffile.imwrite(path, np.zeros((8, 16, 3), np.uint8), photometric="rgb",
                     description=OME.format(size=attrs).encode(), metadata=None,
                     resolution=(1e4, 1e4), resolutionunit="CENTIMETER")
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
    got = file_mpp(path)
    assert (got is None if expected is None else got == pytest.approx(expected))


def test_mpp_from_an_ome_tiff_pyramid_written_by_tifffile(tmp_path):
    import tifffile
    path = tmp_path / "p.ome.tif"
    img = slide_image(0.25)
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(img, subifds=1, tile=(128, 128), photometric="rgb",
                 metadata={"PhysicalSizeX": 0.5, "PhysicalSizeXUnit": "µm",
                           "PhysicalSizeY": 0.5, "PhysicalSizeYUnit": "µm"})
        tw.write(_reduce(img, 2), subfiletype=1, tile=(128, 128), photometric="rgb")
    assert is_slide(path) and file_mpp(path) == pytest.approx(0.5)
    with open_slide(path) as s:
        assert s.mpp == pytest.approx(0.5) and s.dimensions == (512, 384)


@pytest.mark.parametrize("resolution,unit,expected", [
    (40000, "CENTIMETER", 0.25),      # 40000 px/cm
    (101600, "INCH", 0.25),           # 101600 px/inch (TIFF's default unit)
    (4000, "MILLIMETER", 0.25),       # tifffile's RESUNIT.MILLIMETER (4)
    (4, "MICROMETER", 0.25),          # tifffile's RESUNIT.MICROMETER (5)
    (2, "MICROMETER", 0.5),
    (72, "INCH", None),               # a screen's 72 dpi: not a scan
    (4, "NONE", None),                # px per unknown unit
])
def test_mpp_from_resolution_units(tmp_path, resolution, unit, expected):
    import tifffile
    path = tmp_path / "r.tif"
    tifffile.imwrite(path, np.zeros((8, 8, 3), np.uint8), resolution=(resolution, resolution),
                     resolutionunit=unit)
    got = file_mpp(path)
    assert (got is None if expected is None else got == pytest.approx(expected))


@pytest.mark.parametrize("unit,resolution,expected", [
    ("micron", 4.0, 0.25), ("\\u00B5m", 2.0, 0.5), ("mm", 4000.0, 0.25), ("nm", 0.004, 0.25),
    ("pixel", 4.0, None),
])
def test_mpp_from_imagej_units(tmp_path, unit, resolution, expected):
    # what Fiji / ImageJ save: ResolutionUnit none, px per the description's unit=
    import tifffile
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, np.zeros((8, 8, 3), np.uint8), imagej=True,
                     resolution=(resolution, resolution), metadata={"unit": unit})
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and int(tif.pages[0].tags["ResolutionUnit"].value) == 1
    got = file_mpp(path)
    assert (got is None if expected is None else got == pytest.approx(expected))


def test_plain_image_and_slide_use_the_same_rule(tmp_path):
    # one function for both: an OME-XML image and an OME-XML pyramid give the same mpp
    import tifffile
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.zeros((8, 16, 3), np.uint8), photometric="rgb", metadata=None,
                     description=OME.format(size='PhysicalSizeX="300" PhysicalSizeXUnit="nm"'))
    assert not is_slide(flat) and file_mpp(flat) == pytest.approx(0.3)


# --- DICOM whole-slide images (OpenSlide 4) ---------------------------------------------------
# Written by hand below (no pydicom here): one file per level, VL Whole Slide Microscopy Image
# Storage, explicit VR little endian, uncompressed RGB frames in TILED_FULL order, the pixel
# spacing (mm) in the shared functional groups: what OpenSlide's DICOM reader needs.

WSM = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage
LONG_VRS = {"OB", "OW", "SQ", "UT", "UN"}


def _element(group: int, elem: int, vr: str, value) -> bytes:
    if isinstance(value, str):
        raw = value.encode("ascii")
        raw += (b"\0" if vr == "UI" else b" ") * (len(raw) % 2)
    elif vr in ("US", "UL"):
        raw = struct.pack("<H" if vr == "US" else "<I", value)
    else:
        raw = bytes(value) + b"\0" * (len(value) % 2)
    head = struct.pack("<HH", group, elem) + vr.encode()
    if vr in LONG_VRS:
        return head + b"\0\0" + struct.pack("<I", len(raw)) + raw
    return head + struct.pack("<H", len(raw)) + raw


def _sequence(group: int, elem: int, *items: bytes) -> bytes:
    body = b"".join(struct.pack("<HHI", 0xFFFE, 0xE000, len(i)) + i for i in items)
    return _element(group, elem, "SQ", body)


def write_dicom_level(path, img: np.ndarray, mpp: float, series: str, instance: str,
                      image_type: str = "ORIGINAL\\PRIMARY\\VOLUME\\NONE", tile: int = 256):
    """One level of a DICOM whole-slide image: ``img`` at ``mpp`` um/px in ``tile`` px frames."""
    h, w = img.shape[:2]
    frames = []
    for ty in range(0, h, tile):
        for tx in range(0, w, tile):
            frame = np.full((tile, tile, 3), 255, np.uint8)
            part = img[ty: ty + tile, tx: tx + tile]
            frame[: part.shape[0], : part.shape[1]] = part
            frames.append(frame.tobytes())
    spacing = f"{mpp / 1000:.8g}"  # mm
    data = b"".join([
        _element(0x0008, 0x0008, "CS", image_type),
        _element(0x0008, 0x0016, "UI", WSM),
        _element(0x0008, 0x0018, "UI", instance),
        _element(0x0008, 0x0060, "CS", "SM"),
        _element(0x0020, 0x000D, "UI", "1.2.826.0.1.3680043.9.7156.1.1"),
        _element(0x0020, 0x000E, "UI", series),
        _element(0x0020, 0x9311, "CS", "TILED_FULL"),
        _element(0x0028, 0x0002, "US", 3),
        _element(0x0028, 0x0004, "CS", "RGB"),
        _element(0x0028, 0x0006, "US", 0),
        _element(0x0028, 0x0008, "IS", str(len(frames))),
        _element(0x0028, 0x0010, "US", tile),
        _element(0x0028, 0x0011, "US", tile),
        _element(0x0028, 0x0100, "US", 8),
        _element(0x0028, 0x0101, "US", 8),
        _element(0x0028, 0x0102, "US", 7),
        _element(0x0028, 0x0103, "US", 0),
        _element(0x0048, 0x0006, "UL", w),
        _element(0x0048, 0x0007, "UL", h),
        _element(0x0048, 0x0303, "UL", 1),
        _sequence(0x5200, 0x9229, _sequence(0x0028, 0x9110, _element(
            0x0028, 0x0030, "DS", f"{spacing}\\{spacing}"))),
        _element(0x7FE0, 0x0010, "OB", b"".join(frames)),
    ])
    meta = b"".join([
        _element(0x0002, 0x0001, "OB", b"\0\1"),
        _element(0x0002, 0x0002, "UI", WSM),
        _element(0x0002, 0x0003, "UI", instance),
        _element(0x0002, 0x0010, "UI", "1.2.840.10008.1.2.1"),  # explicit VR little endian
        _element(0x0002, 0x0012, "UI", "1.2.826.0.1.3680043.9.7156.1"),
    ])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 128 + b"DICM" + _element(0x0002, 0x0000, "UL", len(meta)) + meta
                     + data)
    return path


def write_dicom_slide(folder, img: np.ndarray, mpp: float, series: str, name: str = "case"):
    """``img`` as a DICOM series in ``folder``: level 0 and a 4x level, one file each."""
    write_dicom_level(folder / f"{name}_0.dcm", img, mpp, series, f"{series}.1")
    write_dicom_level(folder / f"{name}_1.dcm", _reduce(img, 4), mpp * 4, series, f"{series}.2",
                      "DERIVED\\PRIMARY\\VOLUME\\RESAMPLED")
    return folder


def _without_openslide(monkeypatch) -> None:
    real = builtins.__import__

    def no_openslide(name, *a, **k):
        if name == "openslide":
            raise ImportError("no openslide")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_openslide)


def test_dcm_is_a_slide_routed_to_openslide_and_one_line_without_it(tmp_path, monkeypatch):
    from partsup.slides.openslide_reader import wants_openslide
    path = write_dicom_level(tmp_path / "s" / "x.DCM", slide_image(0.25), 0.25, "1.2.3.4",
                             "1.2.3.4.1")
    assert is_slide(path) and wants_openslide(path)
    with monkeypatch.context() as m:
        _without_openslide(m)
        with pytest.raises(DataError, match=r"x\.DCM: reading this slide needs OpenSlide: "
                                            r"pip install 'partsup\[openslide\]'"):
            open_slide(path)
        assert file_mpp(path) is None  # metadata never fails: the reader reports it


def test_dicom_folder_is_one_slide_per_series(tmp_path):
    from partsup.prediction import collect_inputs
    from partsup.slides.reader import dicom_series
    img = slide_image(0.25)
    write_dicom_slide(tmp_path / "scans", img, 0.25, "1.2.3.4.5", name="a")
    write_dicom_slide(tmp_path / "scans", img, 0.25, "1.2.3.4.6", name="b")
    (tmp_path / "scans" / "notes.dcm").write_bytes(b"not DICOM")  # its own input: reported
    assert dicom_series(tmp_path / "scans" / "a_1.dcm") == "1.2.3.4.5"
    items, _ = collect_inputs([tmp_path / "scans"])
    assert [i.id for i in items] == ["a_0", "b_0", "notes"]
    items, _ = collect_inputs([tmp_path / "scans" / "b_1.dcm"])  # named: always an input
    assert [i.id for i in items] == ["b_1"]


def test_dicom_wsi_predicted_through_openslide(tmp_path, plugin, checkpoint):
    openslide = pytest.importorskip("openslide", reason="OpenSlide not installed "
                                    "(pip install 'partsup[openslide]')")
    if tuple(int(v) for v in openslide.__library_version__.split(".")[:1]) < (4,):
        pytest.skip("OpenSlide < 4 does not read DICOM")
    img = slide_image()
    folder = write_dicom_slide(tmp_path / "case", img, 0.25, "1.2.826.0.1.3680043.9.7156.2")
    with open_slide(folder / "case_1.dcm") as s:  # any file of the series opens all of it
        assert s.dimensions == (2048, 1536) and [lv.downsample for lv in s.levels] == [1, 4]
        assert s.mpp == pytest.approx(0.25)
        np.testing.assert_array_equal(s.read_region(0, 700, 300, 333, 257),
                                      img[300:557, 700:1033])
    assert file_mpp(folder / "case_0.dcm") == pytest.approx(0.25)
    out = tmp_path / "out"
    assert run_predict([folder, "--checkpoint", checkpoint, "--out", out, "--device", "cpu",
                        "--slide-tile", "256", "--format", "csv"], plugin) == 0
    matched(read_detections(out / "case_0.csv"), CENTRES)
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["count"] for r in rows] == [str(len(CENTRES))]  # one slide, not one per file
