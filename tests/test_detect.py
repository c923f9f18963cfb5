"""Detector: tiled inference, blobs (Otsu, 8-connectivity, scores, centroids), fusion, filters."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from partsup import Registries, hookimpl, make_plugin_manager
from partsup.inference.blobs import detect_from_maps, find_blobs
from partsup.inference.detector import DetectParams, Detector
from partsup.inference.tiling import infer_maps
from partsup.errors import RecipeError
from partsup.types import Blobs


class ConvModel(nn.Module):
    """Tiny deterministic two-conv model (receptive field 5 px) honouring the model interface."""

    def __init__(self, strong: bool = True) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 2, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        self.strong = strong

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0

    def probabilities(self, x: torch.Tensor):
        p = torch.sigmoid(self.c2(torch.relu(self.c1(x))))
        return p[:, 0], (p[:, 1] if self.strong else None)


class DarkModel(nn.Module):
    """Probability = darkness of the pixel (weak) and its square (strong); exact per pixel."""

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0

    def probabilities(self, x: torch.Tensor):
        dark = 1.0 - x.mean(1)
        return dark, dark ** 2


def disks(shape, centres, radius=6, value=20):
    img = np.full((*shape, 3), 235, np.uint8)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for cx, cy in centres:
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius ** 2] = value
    return img


# -- tiled inference ---------------------------------------------------------------------------

def test_infer_maps_does_not_depend_on_tile_size():
    torch.manual_seed(0)
    model = ConvModel()
    img = np.random.default_rng(0).integers(0, 256, (150, 170, 3), dtype=np.uint8)
    with torch.no_grad():
        ref_w, ref_s = model.probabilities(model.preprocess(img))
    ref_w, ref_s = ref_w[0].numpy(), ref_s[0].numpy()
    for tile, overlap in ((64, 16), (96, 32), (128, 48), (512, 64)):
        pw, ps = infer_maps(model, img, tile=tile, overlap=overlap, batch_tiles=3)
        assert pw.shape == ps.shape == (150, 170) and pw.dtype == np.float32
        # only pixels within 2 px of a tile edge see the edge, and they carry ~1% of the weight
        assert np.abs(pw - ref_w).max() < 2e-3, tile
        assert np.abs(ps - ref_s).max() < 2e-3, tile
        assert np.abs(pw - ref_w).mean() < 1e-4


def test_infer_maps_tiles_are_blended_not_cut():
    model = ConvModel()
    img = np.random.default_rng(1).integers(0, 256, (130, 130, 3), dtype=np.uint8)
    hard, _ = infer_maps(model, img, tile=64, overlap=0)  # no blending: seams at tile edges
    soft, _ = infer_maps(model, img, tile=64, overlap=24)
    with torch.no_grad():
        ref = model.probabilities(model.preprocess(img))[0][0].numpy()
    assert np.abs(hard - ref).max() > 10 * np.abs(soft - ref).max()


def test_infer_maps_restores_training_mode():
    model = ConvModel()
    model.train()
    img = np.zeros((40, 40, 3), np.uint8)
    infer_maps(model, img, tile=32, overlap=8)
    assert model.training
    model.eval()
    infer_maps(model, img, tile=32, overlap=8)
    assert not model.training


def test_infer_maps_batching_and_weak_only():
    model = ConvModel(strong=False)
    img = np.random.default_rng(2).integers(0, 256, (100, 90, 3), dtype=np.uint8)
    a, none = infer_maps(model, img, tile=64, overlap=16, batch_tiles=1)
    b, _ = infer_maps(model, img, tile=64, overlap=16, batch_tiles=4)
    assert none is None
    np.testing.assert_allclose(a, b, atol=1e-5)  # conv kernels differ slightly per batch size


def test_infer_maps_small_image_is_padded():
    model = DarkModel()
    img = disks((20, 25), [(10, 10)], radius=3)
    pw, ps = infer_maps(model, img, tile=512, overlap=64)
    assert pw.shape == (20, 25)
    np.testing.assert_allclose(pw, 1 - img.mean(2) / 255.0, atol=1e-6)
    np.testing.assert_allclose(ps, pw ** 2, atol=1e-6)


def test_infer_maps_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        infer_maps(DarkModel(), np.zeros((10, 10, 3), np.float32))


def test_resolve_device_names_bad_and_missing_devices():
    from partsup.runtime import resolve_device
    from partsup.errors import PartsupError
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(PartsupError, match="'gpu': expected auto, cpu or cuda"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(PartsupError, match="'cuda:1': no CUDA device is available"):
            resolve_device("cuda:1")


def test_a_cuda_device_turns_cudnn_autotuning_on_before_any_forward(monkeypatch):
    from partsup.runtime import resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # no GPU is touched
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    resolve_device("cpu")
    assert torch.backends.cudnn.benchmark is False
    monkeypatch.setenv("PARTSUP_CUDNN_BENCHMARK", "0")
    assert resolve_device("cuda") == torch.device("cuda")
    assert torch.backends.cudnn.benchmark is False
    monkeypatch.delenv("PARTSUP_CUDNN_BENCHMARK")
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert torch.backends.cudnn.benchmark is True


# -- blobs -------------------------------------------------------------------------------------

def test_find_blobs_scores_centroids_and_areas():
    prob = np.full((40, 60), 0.02, np.float32)
    prob[5:10, 5:10] = 0.9                      # 25 px, uniform -> centroid (7, 7)
    prob[20:22, 30:34] = [[0.5, 0.5, 0.5, 0.9]] * 2  # weighted centroid pulled to the right
    b = find_blobs(prob, sigma=0)
    assert len(b) == 2
    order = np.argsort(b.x)
    x, y, s, a = b.x[order], b.y[order], b.score[order], b.area[order]
    assert a.tolist() == [25, 8]
    np.testing.assert_allclose([x[0], y[0], s[0]], [7.0, 7.0, 0.9], atol=1e-6)
    wx = (30 * 0.5 + 31 * 0.5 + 32 * 0.5 + 33 * 0.9) / 2.4
    np.testing.assert_allclose([x[1], y[1], s[1]], [wx, 20.5, 0.6], atol=1e-6)
    assert b.labels.shape == prob.shape and b.labels.max() == 2


def test_find_blobs_eight_connected():
    prob = np.zeros((20, 20), np.float32)
    prob[5, 5] = prob[6, 6] = prob[7, 7] = 1.0  # a diagonal line: one blob with 8-connectivity
    prob[15, 15] = 1.0
    b = find_blobs(prob, sigma=0)
    assert sorted(b.area.tolist()) == [1, 3]


def test_find_blobs_otsu_is_strict_and_global():
    rng = np.random.default_rng(0)
    prob = (rng.random((64, 64)) * 0.2).astype(np.float32)
    prob[10:20, 10:20] = 0.9
    from skimage.filters import threshold_otsu
    prob[40, 41] = prob[40, 39] = prob[39, 40] = prob[41, 40] = 0.0
    t = -1.0
    for _ in range(20):  # put one pixel exactly at the threshold (a fixed point of Otsu)
        if threshold_otsu(prob) == t:
            break
        t = threshold_otsu(prob)
        prob[40, 40] = t
    assert threshold_otsu(prob) == prob[40, 40] == t
    b = find_blobs(prob, sigma=0)
    assert not b.labels[40, 40]
    assert b.labels[15, 15]


def test_find_blobs_smoothing_and_empty_maps():
    assert len(find_blobs(np.zeros((30, 30), np.float32), sigma=1)) == 0
    assert len(find_blobs(np.full((30, 30), 0.7, np.float32), sigma=1)) == 0
    prob = np.zeros((30, 30), np.float32)
    prob[10, 10] = prob[10, 13] = 1.0  # two specks 3 px apart merge after smoothing
    assert len(find_blobs(prob, sigma=0)) == 2
    assert len(find_blobs(prob, sigma=2)) == 1


def _reference_blobs(prob, sigma):
    """Straightforward find_blobs: skimage Otsu and labels, one blob at a time."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu
    from skimage.measure import label
    smooth = ndimage.gaussian_filter(prob, sigma) if sigma > 0 else prob
    labels = label(smooth > threshold_otsu(smooth), connectivity=2)
    rows = []
    for k in range(1, labels.max() + 1):
        yy, xx = np.nonzero(labels == k)
        p = prob[yy, xx].astype(np.float64)
        rows.append(((p * xx).sum() / p.sum(), (p * yy).sum() / p.sum(), p.mean(), len(p)))
    return labels, np.array(rows).reshape(-1, 4)


def test_find_blobs_matches_a_plain_reference_and_does_not_depend_on_row_bands(monkeypatch):
    from scipy import ndimage
    import partsup.inference.blobs as detect
    rng = np.random.default_rng(5)
    for sigma in (0.0, 1.0, 2.5):
        prob = ndimage.gaussian_filter(rng.random((70, 90)), 2).astype(np.float32)
        labels, ref = _reference_blobs(prob, sigma)
        b = find_blobs(prob, sigma)
        assert b.labels.dtype == np.int32 and np.array_equal(b.labels, labels)
        assert len(b) == len(ref) > 3
        np.testing.assert_allclose(np.stack([b.x, b.y, b.score, b.area], 1), ref, rtol=1e-12)
        monkeypatch.setattr(detect, "STATS_CHUNK_PX", 7)  # one-row bands: same sums, same order
        banded = find_blobs(prob, sigma)
        monkeypatch.undo()
        for key in ("x", "y", "score", "area"):
            assert np.array_equal(getattr(banded, key), getattr(b, key)), key


def test_find_blobs_memory_stays_near_two_maps(monkeypatch):
    """Peak NumPy allocations above the input: the smoothed map or the labels (4 B/px) plus the
    bool mask (1 B/px), plus a fixed ~2 MiB (np.histogram's blocks, row-band temporaries).
    Labelling into int64 then copying, or skimage's flattened copy for Otsu, would add 4-8 B/px."""
    import tracemalloc
    import partsup.inference.blobs as detect
    monkeypatch.setattr(detect, "STATS_CHUNK_PX", 1 << 16)
    prob = np.zeros((1200, 1600), np.float32)
    prob[::20, :] = 0.9  # a grid of lines: ~20% of the pixels end up in blobs
    prob[:, ::40] = 0.8
    prob[10::20, 20::40] = 0.7  # and many separate specks
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        b = find_blobs(prob, sigma=1.0)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert len(b) > 1000 and b.area.sum() > 0.1 * prob.size
    assert peak < 5 * prob.size + 3 * 2**20, f"{peak / prob.size:.2f} bytes per pixel"


# -- fusion and filters ------------------------------------------------------------------------

def two_maps():
    weak = np.zeros((60, 80), np.float32)
    strong = np.zeros((60, 80), np.float32)
    weak[10:20, 10:20] = 0.9   # only the weak branch sees A (area 100)
    strong[40:46, 60:66] = 0.8  # only the strong branch sees B (area 36)
    return weak, strong


def test_fusion_weight_selects_branches(registries):
    weak, strong = two_maps()
    only_weak = detect_from_maps(weak, strong, DetectParams(w=1.0, sigma=0, s1=0.1), 0.25,
                                 registries)
    only_strong = detect_from_maps(weak, strong, DetectParams(w=0.0, sigma=0, s1=0.1), 0.25,
                                   registries)
    assert [(round(d.x, 3), round(d.y, 3)) for d in only_weak] == [(14.5, 14.5)]
    assert [(round(d.x, 3), round(d.y, 3)) for d in only_strong] == [(62.5, 42.5)]
    both = detect_from_maps(weak, strong, DetectParams(w=0.5, sigma=0, s1=0.1), 0.25, registries)
    assert len(both) == 2
    assert {round(d.score, 3) for d in both} == {0.45, 0.4}
    weak_only = detect_from_maps(weak, None, DetectParams(w=0.0, sigma=0, s1=0.1), 0.25,
                                 registries)
    assert len(weak_only) == 1  # no strong map: the weak map is used whatever w


def test_area_and_score_thresholds(registries):
    weak, strong = two_maps()
    p = DetectParams(w=0.5, sigma=0, s1=0.1, a1=36)  # strict: area 36 is dropped
    assert [d.area for d in detect_from_maps(weak, strong, p, 0.25, registries)] == [100]
    p = DetectParams(w=0.5, sigma=0, s1=0.42)  # scores 0.45 and 0.4
    assert [d.area for d in detect_from_maps(weak, strong, p, 0.25, registries)] == [100]
    # 36 px at 0.5 um/px = 9 um^2, 100 px = 25 um^2
    p = DetectParams(w=0.5, sigma=0, s1=0.1, a1=9.0, area_unit="um2")
    assert [d.area for d in detect_from_maps(weak, strong, p, 0.5, registries)] == [100]
    p = DetectParams(w=0.5, sigma=0, s1=0.1, a1=8.9, area_unit="um2")
    assert len(detect_from_maps(weak, strong, p, 0.5, registries)) == 2


class _Plugins:
    """A test plugin: a named filter, a candidate-filter hook and a max fusion."""

    def __init__(self, fuse: bool = False) -> None:
        self.fuse = fuse

    @hookimpl
    def partsup_register_filters(self, register):
        def right_half(min_x: float = 40.0):
            return lambda blobs, mpp: np.asarray(blobs.x) > min_x
        register("right_half", right_half)

    @hookimpl
    def partsup_filter_candidates(self, blobs, mpp, params):
        if params.get("filters") == ["veto"]:
            return np.zeros(len(blobs), bool)
        return None

    @hookimpl
    def partsup_fuse(self, weak, strong, params):
        return np.maximum(weak, strong) if self.fuse else None


def test_named_filters_hooks_and_fusion_plugins():
    regs = Registries.from_pm(make_plugin_manager(entry_points=False, objects=[_Plugins()]))
    weak, strong = two_maps()
    p = DetectParams(w=0.5, sigma=0, s1=0.1, filters=[{"name": "right_half"}])
    assert [d.area for d in detect_from_maps(weak, strong, p, 0.25, regs)] == [36]
    p = DetectParams(w=0.5, sigma=0, s1=0.1, filters=[{"name": "right_half", "min_x": 100}])
    assert detect_from_maps(weak, strong, p, 0.25, regs) == []
    with pytest.raises(RecipeError, match="unknown filter/scorer 'nope'"):
        detect_from_maps(weak, strong, DetectParams(filters=[{"name": "nope"}]), 0.25, regs)
    regs2 = Registries.from_pm(make_plugin_manager(entry_points=False,
                                                   objects=[_Plugins(fuse=True)]))
    fused = detect_from_maps(weak, strong, DetectParams(w=0.5, sigma=0, s1=0.1), 0.25, regs2)
    assert {round(d.score, 3) for d in fused} == {0.9, 0.8}  # max fusion won over the default


def test_every_registered_filter_gives_a_mask(registries):
    blobs = Blobs(x=np.array([1.0, 50.0]), y=np.array([2.0, 3.0]), score=np.array([0.2, 0.9]),
                  area=np.array([10, 400]))
    assert {"area", "score"} <= set(registries.filters.names())
    for name in registries.filters.names():
        keep = registries.filters.build(name)(blobs, 0.25)
        assert np.asarray(keep).dtype == bool and np.asarray(keep).shape == (2,), name


# -- detector and params -----------------------------------------------------------------------

def test_detector_finds_dark_disks(registries):
    centres = [(30, 40), (100, 25), (70, 110), (150, 120)]
    img = disks((140, 180), centres)
    det = Detector(DarkModel(), DetectParams(w=0.5, sigma=1.0, s1=0.3, a1=20, tile=64,
                                             overlap=16), registries)
    found = det.detect(img, mpp=0.25)
    got = sorted((round(d.x), round(d.y)) for d in found)
    assert got == sorted(centres)
    assert all(d.score > 0.5 and 100 < d.area < 140 for d in found)


def test_detect_params_from_recipe_section():
    from partsup.recipe import load_recipe
    recipe = load_recipe(data={"name": "t", "model": {"backbone": {"name": "x"}},
                               "labels": {"weak": "disk"}, "loss": {"weak": "concentric"},
                               "detect": {"w": 0.6, "a1": 300}})
    p = DetectParams.from_dict(recipe["detect"])
    assert (p.w, p.a1, p.s1, p.area_unit, p.tile) == (0.6, 300.0, 0.5, "px", 512)
    assert DetectParams.from_dict(p.to_dict(), s1=0.7).s1 == 0.7
    with pytest.raises(RecipeError, match="unknown key"):
        DetectParams.from_dict({"wrong": 1})
    with pytest.raises(RecipeError, match="area_unit"):
        DetectParams(area_unit="mm")


def _field(n_objects: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A 200x200 map with faint nuclei-like blobs (0.35) and ``n_objects`` strong ones (0.9)."""
    prob = np.full((200, 200), 0.02, np.float32)
    spots = [(x, y) for y in range(20, 200, 40) for x in range(20, 200, 40)]
    objects = spots[:n_objects]
    for k, (x, y) in enumerate(spots):
        prob[y - 4: y + 5, x - 4: x + 5] = 0.9 if k < n_objects else 0.35
    return prob, objects


def test_fixed_threshold_does_not_move_with_density_but_otsu_does():
    # Otsu splits whatever the map holds: with no strong object it keeps the faint ones
    empty, _ = _field(0)
    assert len(find_blobs(empty, sigma=0, threshold="otsu")) == 25
    assert len(find_blobs(empty, sigma=0, threshold=0.5)) == 0
    for n in (1, 5, 20):
        prob, objects = _field(n)
        b = find_blobs(prob, sigma=0, threshold=0.5)
        assert len(b) == n
        got = sorted(zip(np.round(b.x).astype(int), np.round(b.y).astype(int)))
        assert got == sorted(objects)
    # strict '>' at a fixed threshold, too
    flat = np.zeros((10, 10), np.float32)
    flat[2:4, 2:4] = np.float32(0.5)
    flat[6:8, 6:8] = np.float32(0.6)
    b = find_blobs(flat, sigma=0, threshold=0.5)
    assert len(b) == 1 and b.labels[6, 6] and not b.labels[2, 2]


def test_threshold_values_are_checked(registries):
    assert DetectParams(threshold="OTSU").threshold == "otsu"
    assert DetectParams(threshold=0.4).threshold == 0.4
    assert DetectParams(threshold="0.4").threshold == 0.4
    for bad in (0, 1, 1.5, -0.1, "median", True, None):
        with pytest.raises(RecipeError, match="detect.threshold"):
            DetectParams(threshold=bad)
    prob, objects = _field(3)
    dets = detect_from_maps(prob, None, DetectParams(sigma=0, threshold=0.6, s1=0.1), 0.25,
                            registries)
    assert len(dets) == 3


class _Asymmetric(nn.Module):
    """A position-dependent 'model' (no dihedral symmetry): p = sigmoid of a fixed conv + ramp."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 1, 5, padding=2)

    def preprocess(self, image):
        return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255

    def probabilities(self, x):
        ramp = torch.linspace(-1, 1, x.shape[-1])[None, None, :]
        return torch.sigmoid(self.conv(x)[:, 0] + ramp), None


def test_tta_averages_the_eight_dihedral_transforms():
    model = _Asymmetric()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 96, 3)).astype(np.uint8)
    plain, _ = infer_maps(model, image, tile=512, overlap=0)
    tta, none = infer_maps(model, image, tile=512, overlap=0, tta=True)
    assert none is None and tta.shape == plain.shape == (64, 96)
    # reference: transform the image itself, run, undo, average
    ref = np.zeros((64, 96), np.float64)
    for k in range(8):
        im = np.rot90(image, k % 4)
        im = im[:, ::-1] if k >= 4 else im
        m, _ = infer_maps(model, np.ascontiguousarray(im), tile=512, overlap=0)
        m = m[:, ::-1] if k >= 4 else m
        ref += np.rot90(m, -(k % 4))
    np.testing.assert_allclose(tta, ref / 8, atol=1e-5)
    assert np.abs(tta - plain).max() > 1e-2  # the model is not symmetric: TTA changes maps
    assert DetectParams(tta=True).to_dict()["tta"] is True
