"""From an image to detections: tiled inference, fusion, smoothing, Otsu, blobs, filters.

Pipeline (paper section III.D; facts.md "Post-processing")::

    image (H, W, 3) uint8 --infer_maps--> P_weak, P_strong (H, W) float32
      --partsup_fuse--> S = w * P_weak + (1 - w) * P_strong
      --find_blobs--> Gaussian smoothing (sigma px) -> threshold, strict ``>``: Otsu over the
                      whole map (the paper's rule, ``threshold: otsu``) or a fixed probability
                      (``threshold: 0.5``; does not move with how many objects a field holds)
                      -> 8-connected blobs (score = mean probability, prob-weighted centroid)
      --filter_blobs--> area > a1 (px or um^2) AND score > s1 AND named filters AND hook
      --> list[Detection]

Coordinates are pixels, x = column, y = row.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from scipy import ndimage
from skimage.filters import threshold_otsu

from partsup.errors import PartsupError, RecipeError
from partsup.inference.filters import FILTERS
from partsup.types import Blobs, Detection
from partsup.runtime import autocast, resolve_device

#: tile sides smaller than the tile size are padded up to a multiple of this (most backbones
#: need a multiple of 32: five stride-2 stages)
PAD_MULTIPLE = 32
#: blending weight of the outermost overlap/4 pixels of a tile edge inside the image
EDGE_WEIGHT = 1e-6
#: a (smoothed) probability map whose values span less than this has no blobs
FLAT_RANGE = 1e-6


@dataclass
class DetectParams:
    """Detection parameters: the recipe's ``detect:`` section (see ``partsup.recipe.SCHEMA``).

    Attributes:
        w: fusion weight of the weak map, ``S = w * P_weak + (1 - w) * P_strong``.
        sigma: Gaussian smoothing sigma, pixels (0 = none).
        a1: keep blobs with ``area > a1`` (``area_unit``: ``"px"`` or ``"um2"``).
        s1: keep blobs with mean probability ``> s1``.
        threshold: foreground rule on the smoothed map: ``"otsu"`` (Otsu over the whole map,
            the paper's rule) or a fixed probability in (0, 1) (``smooth > threshold``).
        area_unit: unit of ``a1``.
        filters: extra named filters, ``[{"name": ..., **kwargs}, ...]``.
        tile, overlap: inference tile side and overlap, pixels.
        batch_tiles: tiles per forward pass.
        tta: test-time augmentation: average the maps over the 8 dihedral transforms of each
            tile (rotations by 90 degrees, with and without a mirror); 8x the inference time.
    """

    w: float = 0.5
    sigma: float = 1.0
    a1: float = 0.0
    s1: float = 0.5
    threshold: str | float = "otsu"
    area_unit: Literal["px", "um2"] = "px"
    filters: list[dict[str, Any]] = field(default_factory=list)
    tile: int = 512
    overlap: int = 64
    batch_tiles: int = 4
    tta: bool = False

    def __post_init__(self) -> None:
        if self.area_unit not in ("px", "um2"):
            raise RecipeError(f"detect.area_unit: expected 'px' or 'um2', got {self.area_unit!r}")
        if self.tile < 1 or self.overlap < 0 or self.overlap >= self.tile:
            raise RecipeError(f"detect: need tile > overlap >= 0, got tile={self.tile}, "
                              f"overlap={self.overlap}")
        if self.batch_tiles < 1:
            raise RecipeError(f"detect.batch_tiles: must be >= 1, got {self.batch_tiles}")
        self.threshold = check_threshold(self.threshold)

    @classmethod
    def from_dict(cls, section: dict[str, Any] | None, **overrides: Any) -> "DetectParams":
        """Build from a recipe ``detect:`` section (or a checkpoint's ``detect``) plus overrides.

        Unknown keys raise :class:`RecipeError`; missing keys take the defaults.
        """
        values = dict(section or {})
        values.update({k: v for k, v in overrides.items() if v is not None})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise RecipeError(f"detect: unknown key(s) {', '.join(unknown)}; "
                              f"expected {', '.join(sorted(names))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (numbers, strings, lists) fit for YAML, JSON and checkpoints."""
        return dataclasses.asdict(self)


def check_threshold(value: Any, key: str = "detect.threshold") -> str | float:
    """``"otsu"`` or a float in (0, 1); anything else raises :class:`RecipeError`."""
    if isinstance(value, str) and value.strip().lower() == "otsu":
        return "otsu"
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise RecipeError(f"{key}: expected 'otsu' or a probability in (0, 1), "
                          f"got {value!r}") from None
    if isinstance(value, bool) or not 0.0 < t < 1.0:
        raise RecipeError(f"{key}: expected 'otsu' or a probability in (0, 1), got {value!r}")
    return t


# -- tiled inference -------------------------------------------------------------------------

@dataclass(frozen=True)
class _Axis:
    """Tiling of one image axis: tile ``side``, blending ``overlap`` and the tile ``starts``."""

    length: int
    side: int
    overlap: int
    starts: tuple[int, ...]

    @classmethod
    def plan(cls, length: int, tile: int, overlap: int, multiple: int = PAD_MULTIPLE) -> "_Axis":
        """Tiles of side ``tile`` inside ``[0, length)``, the last one ending at ``length``.

        An axis shorter than ``tile`` is covered by tiles of the largest multiple of
        ``multiple`` that fits (so no padding is needed and the result matches larger tiles);
        an axis shorter than ``multiple`` gets one tile, padded by reflection.
        """
        side = tile if length >= tile else (length // multiple * multiple or length)
        ov = min(overlap, side // 2)
        if length <= side:
            starts = [0]
        else:
            starts = list(range(0, length - side, side - ov)) + [length - side]
        return cls(length, side, ov, tuple(sorted(set(starts))))

    def ramp(self, start: int) -> np.ndarray:
        """Blending weight ``(n,)`` float64 of the tile at ``start`` (n = its length here).

        Towards an edge inside the image the weight falls over ``overlap`` pixels: a squared
        ramp, then a margin of ``overlap // 4`` pixels at :data:`EDGE_WEIGHT` (where convolution
        padding disturbs the tile's output most). Edges on the image border keep weight 1.
        """
        n = min(self.side, self.length - start)
        w = np.ones(n, np.float64)
        k = min(self.overlap, n)
        if k > 0:
            m = k // 4
            r = np.concatenate([np.full(m, EDGE_WEIGHT),
                                ((np.arange(k - m) + 0.5) / (k - m)) ** 2])
            if start > 0:
                w[:k] = np.minimum(w[:k], r)
            if start + n < self.length:
                w[n - k:] = np.minimum(w[n - k:], r[::-1])
        return w

    def weight_sum(self) -> np.ndarray:
        """Sum of the ramps of all tiles, ``(length,)`` float64 (> 0 everywhere)."""
        total = np.zeros(self.length, np.float64)
        for s in self.starts:
            r = self.ramp(s)
            total[s: s + len(r)] += r
        return total


def _pad_to(tile: np.ndarray, multiple: int) -> np.ndarray:
    """Reflect-pad an ``(h, w, 3)`` tile at the bottom/right to multiples of ``multiple``."""
    h, w = tile.shape[:2]
    ph, pw = (-h) % multiple if h < multiple else 0, (-w) % multiple if w < multiple else 0
    if ph == 0 and pw == 0:
        return tile
    return np.pad(tile, ((0, ph), (0, pw), (0, 0)), mode="symmetric")


def _prepare(model: Any, dev: torch.device) -> bool:
    """Move ``model`` to ``dev`` and switch it to eval mode; return its previous training flag.

    The weights keep their memory format: channels-last inputs alone make cuDNN pick
    channels-last kernels, and a model being trained is not altered behind its optimiser.
    """
    if hasattr(model, "to"):
        model.to(dev)
    was_training = bool(getattr(model, "training", False))
    if hasattr(model, "eval"):
        model.eval()
    return was_training


@torch.inference_mode()
def infer_maps(model: Any, image: np.ndarray, tile: int = 512, overlap: int = 64,
               batch_tiles: int = 4, device: str | torch.device = "cpu", amp: bool = True,
               tta: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Probability maps of a whole image of any size, by overlapping tiles blended seam-free.

    Each tile is preprocessed on its own (``model.preprocess``), so memory stays bounded by the
    tile batch plus one or two float32 accumulators of the image size. Tile weights are
    separable ramps that vanish towards tile edges inside the image, so the blend has no seams
    and the result depends on ``tile`` only within blending tolerance. Tiles always lie inside
    the image (no padding unless a side is under 32 px). On CUDA, tiles run in bf16 autocast
    with channels-last inputs; on CPU in float32. The model runs in eval mode and gets its
    training flag back afterwards.

    Args:
        model: object with ``preprocess(image uint8 (h, w, 3)) -> (1, 3, h, w) float32`` and
            ``probabilities(x (B, 3, h, w)) -> (p_weak (B, h, w), p_strong (B, h, w) | None)``.
        image: ``(H, W, 3)`` uint8 RGB.
        tile, overlap: tile side and overlap, pixels (tile > overlap >= 0).
        batch_tiles: tiles per forward pass.
        device: torch device (``"auto"`` allowed); the model is moved there.
        amp: use bf16 autocast on CUDA (ignored on CPU).
        tta: average each tile's maps over its 8 dihedral transforms (see :func:`dihedral_maps`).

    Returns:
        ``(p_weak, p_strong)``: ``(H, W)`` float32 in [0, 1]; ``p_strong`` None for weak-only
        models.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"infer_maps: expected an (H, W, 3) uint8 image, got "
                         f"{image.shape} {image.dtype}")
    if tile < 1 or not 0 <= overlap < tile or batch_tiles < 1:
        raise ValueError(f"infer_maps: need tile > overlap >= 0 and batch_tiles >= 1, got "
                         f"tile={tile}, overlap={overlap}, batch_tiles={batch_tiles}")
    dev = resolve_device(device)
    was_training = _prepare(model, dev)
    h, w = image.shape[:2]
    ay, ax = _Axis.plan(h, tile, overlap), _Axis.plan(w, tile, overlap)
    acc: dict[str, np.ndarray] = {"weak": np.zeros((h, w), np.float32)}
    boxes = [(y, x) for y in ay.starts for x in ax.starts]
    try:
        for i in range(0, len(boxes), batch_tiles):
            _run_batch(model, image, boxes[i: i + batch_tiles], ay, ax, acc, dev, amp, tta)
    finally:
        if was_training:
            model.train()
    iy = (1.0 / ay.weight_sum()).astype(np.float32)[:, None]
    ix = (1.0 / ax.weight_sum()).astype(np.float32)[None, :]
    for a in acc.values():  # normalise in place: no second full-size array
        a *= iy
        a *= ix
        np.clip(a, 0.0, 1.0, out=a)
    return acc["weak"], acc.get("strong")


def dihedral_maps(model: Any, inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``model.probabilities`` averaged over the 8 dihedral transforms of ``inp``.

    Each transform (``k`` quarter turns, then an optional mirror of the last axis) is applied
    to the ``(B, 3, h, w)`` input and undone on the ``(B, h, w)`` maps before averaging, so
    the result is aligned with ``inp`` pixel for pixel.
    """
    sums: list[torch.Tensor | None] = [None, None]
    for k in range(8):
        x = torch.rot90(inp, k % 4, dims=(2, 3))
        x = torch.flip(x, dims=(3,)) if k >= 4 else x
        for j, m in enumerate(model.probabilities(x)):
            if m is None:
                continue
            m = m.float()
            m = torch.flip(m, dims=(2,)) if k >= 4 else m
            m = torch.rot90(m, -(k % 4), dims=(1, 2))
            sums[j] = m if sums[j] is None else sums[j] + m
    return sums[0] / 8.0, (None if sums[1] is None else sums[1] / 8.0)  # type: ignore[operator]


def _run_batch(model: Any, image: np.ndarray, boxes: list[tuple[int, int]], ay: _Axis,
               ax: _Axis, acc: dict[str, np.ndarray], dev: torch.device, amp: bool,
               tta: bool = False) -> None:
    """Run one batch of tiles and add their weighted probabilities into ``acc``."""
    crops = [image[y: y + ay.side, x: x + ax.side] for y, x in boxes]
    xs = [torch.as_tensor(model.preprocess(_pad_to(c, PAD_MULTIPLE))) for c in crops]
    inp = torch.cat(xs).to(dev, non_blocking=True)
    if dev.type == "cuda":
        inp = inp.contiguous(memory_format=torch.channels_last)
    with autocast(dev, amp):
        p_weak, p_strong = dihedral_maps(model, inp) if tta else model.probabilities(inp)
    maps = {"weak": p_weak.float().cpu().numpy()}
    if p_strong is not None:
        maps["strong"] = p_strong.float().cpu().numpy()
        acc.setdefault("strong", np.zeros_like(acc["weak"]))
    for i, ((y, x), crop) in enumerate(zip(boxes, crops)):
        th, tw = crop.shape[:2]
        wt = np.outer(ay.ramp(y), ax.ramp(x)).astype(np.float32)
        for key, m in maps.items():
            acc[key][y: y + th, x: x + tw] += wt * m[i, :th, :tw]


# -- blobs and filters -----------------------------------------------------------------------

def find_blobs(prob: np.ndarray, sigma: float, threshold: str | float = "otsu") -> Blobs:
    """Candidate blobs of a probability map.

    Smooths ``prob`` with a Gaussian (``sigma`` px; 0 = none), thresholds the smoothed map
    (strict ``>``) with Otsu's threshold computed over the **whole** map (``threshold="otsu"``,
    the paper's rule) or with a fixed probability (``threshold`` a float), labels 8-connected
    components, and scores each blob by the mean of the *unsmoothed* probability over its
    pixels; the centroid is weighted by that probability (plain centroid where it sums to zero).
    A map whose smoothed values span less than :data:`FLAT_RANGE` has no blobs.

    Memory: besides ``prob``, at most one more ``(H, W)`` 4-byte array (the smoothed map, later
    the int32 labels) and one bool mask are alive at a time; per-blob sums are taken over the
    labelled pixels of row bands of :data:`STATS_CHUNK_PX` pixels.

    Args:
        prob: ``(H, W)`` float probability map in [0, 1].
        sigma: Gaussian sigma in pixels.
        threshold: ``"otsu"`` or a fixed probability in (0, 1).

    Returns:
        :class:`Blobs` with ``x, y`` (px, float64), ``score`` (float64), ``area`` (px, int64)
        and ``labels`` ``(H, W)`` int32 (0 = background, blob k has label k + 1).
    """
    prob = np.asarray(prob, np.float32)
    foreground = _foreground(prob, sigma, threshold)
    labels = np.zeros(prob.shape, np.int32)
    if foreground is None:
        return _no_blobs(labels)
    n = int(ndimage.label(foreground, structure=np.ones((3, 3), bool), output=labels))
    del foreground
    if n == 0:
        return _no_blobs(labels)
    area, psum, px, py, sx, sy = _blob_sums(prob, labels, n)
    pos = psum > 0
    safe = np.where(pos, psum, 1.0)
    x = np.where(pos, px / safe, sx / area)
    y = np.where(pos, py / safe, sy / area)
    return Blobs(x=x, y=y, score=psum / area, area=area, labels=labels)


#: pixels per row band when summing blob statistics (bounds the temporaries to a few MiB)
STATS_CHUNK_PX = 1 << 20


def _no_blobs(labels: np.ndarray) -> Blobs:
    return Blobs(x=np.zeros(0), y=np.zeros(0), score=np.zeros(0), area=np.zeros(0, np.int64),
                 labels=labels)


def _foreground(prob: np.ndarray, sigma: float, threshold: str | float = "otsu"
                ) -> np.ndarray | None:
    """``smooth(prob) > t`` as ``(H, W)`` bool (``t`` = Otsu of the smoothed map, or the fixed
    ``threshold``), or None for a flat map under Otsu or an empty map.

    The smoothed float32 map lives only inside this function.
    """
    if prob.size == 0:
        return None
    smooth = ndimage.gaussian_filter(prob, float(sigma)) if sigma > 0 else prob
    if threshold != "otsu":
        return smooth > np.float32(threshold)
    if float(smooth.max()) - float(smooth.min()) < FLAT_RANGE:
        return None  # a flat map has nothing to separate (and Otsu cannot bin it)
    return smooth > _otsu(smooth)


def _otsu(values: np.ndarray) -> Any:
    """Otsu's threshold over all of ``values``, exactly ``skimage.filters.threshold_otsu(values)``
    (256 bins spanning the value range) without the flattened copy of the map skimage makes.

    The caller guarantees the values are not all equal. The threshold is returned as skimage
    gives it (a NumPy scalar), so the ``>`` test compares at the same precision."""
    counts, edges = np.histogram(values, bins=256)
    return threshold_otsu(hist=(counts, (edges[:-1] + edges[1:]) / 2.0))


def _blob_sums(prob: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """Per-blob ``area`` (int64) and float64 sums of p, p*x, p*y, x, y over labelled pixels.

    Row bands are visited in raster order and ``np.add.at`` adds pixel by pixel, so every sum
    is accumulated in the same order as one ``np.bincount`` over the whole image would.
    """
    w = prob.shape[1]
    area = np.zeros(n, np.int64)
    sums = np.zeros((5, n), np.float64)  # p, p*x, p*y, x, y
    step = max(1, STATS_CHUNK_PX // max(w, 1))
    for r0 in range(0, prob.shape[0], step):
        band = labels[r0: r0 + step].ravel()
        idx = np.flatnonzero(band)  # foreground only: memory scales with the blobs
        if idx.size == 0:
            continue
        lab = band[idx].astype(np.intp) - 1
        p = prob[r0: r0 + step].ravel()[idx].astype(np.float64)
        rows, cols = np.divmod(idx, w)
        rows, cols = (rows + r0).astype(np.float64), cols.astype(np.float64)
        area += np.bincount(lab, minlength=n)
        for k, v in enumerate((p, p * cols, p * rows, cols, rows)):
            np.add.at(sums[k], lab, v)
    return (area, *sums)


def filter_blobs(blobs: Blobs, params: DetectParams, mpp: float, registries: Any,
                 thresholds: bool = True) -> np.ndarray:
    """Keep-mask ``(K,)`` bool: area/score thresholds AND named filters AND the filter hook.

    With ``thresholds=False`` the ``a1``/``s1`` tests are skipped (calibration sweeps them).
    """
    keep = np.ones(len(blobs), bool)
    if thresholds:
        keep &= FILTERS["area"](min=params.a1, unit=params.area_unit)(blobs, mpp)
        keep &= FILTERS["score"](min=params.s1)(blobs, mpp)
    for i, spec in enumerate(params.filters):
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or "name" not in spec:
            raise RecipeError(f"detect.filters[{i}]: expected {{name: ..., options}}, got {spec!r}")
        kwargs = {k: v for k, v in spec.items() if k != "name"}
        fn = registries.filters.build(spec["name"], where=f"detect.filters[{i}]", **kwargs)
        keep &= _as_mask(fn(blobs, mpp), len(blobs), f"filter {spec['name']!r}")
    results = registries.pm.hook.partsup_filter_candidates(blobs=blobs, mpp=mpp,
                                                           params=params.to_dict())
    for r in results:
        if r is not None:
            keep &= _as_mask(r, len(blobs), "partsup_filter_candidates")
    return keep


def _as_mask(value: Any, n: int, who: str) -> np.ndarray:
    mask = np.asarray(value, bool).reshape(-1)
    if mask.shape != (n,):
        raise ValueError(f"{who} returned a keep-mask of shape {mask.shape} for {n} blobs")
    return mask


def fuse(p_weak: np.ndarray, p_strong: np.ndarray | None, params: DetectParams,
         registries: Any) -> np.ndarray:
    """The fused ``(H, W)`` float32 map from the ``partsup_fuse`` hook (first result wins)."""
    fused = registries.pm.hook.partsup_fuse(weak=p_weak, strong=p_strong,
                                            params=params.to_dict())
    if fused is None:  # no implementation at all (core plugin blocked)
        fused = p_weak if p_strong is None else params.w * p_weak + (1 - params.w) * p_strong
    return np.asarray(fused, np.float32)


def to_detections(blobs: Blobs, keep: np.ndarray) -> list[Detection]:
    return [Detection(x=float(blobs.x[i]), y=float(blobs.y[i]), score=float(blobs.score[i]),
                      area=float(blobs.area[i])) for i in np.flatnonzero(keep)]


def detect_from_maps(p_weak: np.ndarray, p_strong: np.ndarray | None, params: DetectParams,
                     mpp: float, registries: Any) -> list[Detection]:
    """Detections from the two probability maps ``(H, W)`` float32 of one image.

    Args:
        p_weak, p_strong: probability maps (``p_strong`` None for weak-only models).
        params: detection parameters.
        mpp: micrometres per pixel of the image (for ``area_unit: um2`` and filters).
        registries: the run's registries (plugin manager for the fuse and filter hooks).

    Returns:
        Detections (x, y px; score = mean probability; area px), in label (raster) order.
    """
    blobs = find_blobs(fuse(p_weak, p_strong, params, registries), params.sigma,
                       params.threshold)
    return to_detections(blobs, filter_blobs(blobs, params, mpp, registries))


def candidates_from_maps(p_weak: np.ndarray, p_strong: np.ndarray | None,
                         params: DetectParams, mpp: float, registries: Any
                         ) -> tuple[list[Detection], np.ndarray]:
    """Every candidate before the score threshold ``s1``, and which of them are detections.

    Runs :func:`detect_from_maps` with ``s1 = -inf`` (so every other rule, filter and hook
    applies as usual; hooks see ``params["s1"] == -inf``), then marks ``score > s1``. For
    precision-recall curves over the score, which ``s1`` would otherwise cut short.

    Returns:
        ``(candidates, keep)``: detections as :func:`detect_from_maps` gives them (x, y px),
        and a ``(K,)`` bool mask; ``candidates[keep]`` are the detections at ``params``.
    """
    loose = dataclasses.replace(params)
    loose.s1 = -np.inf  # set after construction: no range check applies to it
    candidates = detect_from_maps(p_weak, p_strong, loose, mpp, registries)
    keep = np.array([d.score > params.s1 for d in candidates], bool)
    return candidates, keep


class Detector:
    """A model plus detection parameters: ``detect(image, mpp) -> list[Detection]``."""

    def __init__(self, model: Any, params: DetectParams, registries: Any,
                 device: str | torch.device = "cpu", amp: bool = True) -> None:
        self.model = model
        self.params = params
        self.registries = registries
        self.device = resolve_device(device)
        self.amp = amp

    def maps(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(p_weak, p_strong | None)`` of ``image`` (H, W, 3) uint8, each (H, W) float32."""
        p = self.params
        return infer_maps(self.model, image, tile=p.tile, overlap=p.overlap,
                          batch_tiles=p.batch_tiles, device=self.device, amp=self.amp,
                          tta=p.tta)

    def detect(self, image: np.ndarray, mpp: float) -> list[Detection]:
        """Detections of one ``(H, W, 3)`` uint8 image of ``mpp`` um/px."""
        p_weak, p_strong = self.maps(image)
        return detect_from_maps(p_weak, p_strong, self.params, mpp, self.registries)


def load_detector(checkpoint: str | Path, registries: Any,
                  device: str | torch.device = "auto", **overrides: Any
                  ) -> tuple[Detector, dict[str, Any]]:
    """A :class:`Detector` for a checkpoint, and the checkpoint dict.

    The model comes from :func:`partsup.training.checkpoint.load_model` on ``device`` (see
    :func:`resolve_device`); the parameters from :func:`params_from_checkpoint` (recipe, then
    calibrated values, then the non-None ``overrides``).

    Raises:
        CheckpointError: unreadable checkpoint. RecipeError: bad ``detect`` values (message
        prefixed with the checkpoint path). PartsupError: unknown or unavailable device.
    """
    from partsup.training.checkpoint import load_model
    dev = resolve_device(device)
    model, ckpt = load_model(checkpoint, registries, device=dev)
    try:
        params = params_from_checkpoint(ckpt, **overrides)
    except PartsupError as exc:
        raise type(exc)(f"{checkpoint}: {exc}") from exc
    return Detector(model, params, registries, dev), ckpt


def params_from_checkpoint(ckpt: dict[str, Any], **overrides: Any) -> DetectParams:
    """The recipe's ``detect:`` section, updated by the checkpoint's calibrated values
    (``ckpt["detect"]``: w, s1, a1, threshold, sigma, area_unit) when present, then by non-None overrides."""
    values = dict((ckpt.get("recipe") or {}).get("detect") or {})
    values.update(ckpt.get("detect") or {})
    _check_finite_numbers(values)
    return DetectParams.from_dict(values, **overrides)


def _check_finite_numbers(values: dict[str, Any]) -> None:
    """RecipeError naming the first number of a ``detect`` section that is NaN or inf."""
    for key, value in values.items():
        if isinstance(value, float) and not np.isfinite(value):
            raise RecipeError(f"detect.{key}: {value} is not a finite number; calibrate the "
                              f"checkpoint again (partsup calibrate) or fix its recipe")
