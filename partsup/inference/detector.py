"""The Detector: a model plus detection parameters, ``detect(image, mpp) -> list[Detection]``,
and loading one from a checkpoint.

``image (H, W, 3) uint8 --infer_maps (tiling)--> P_weak, P_strong (H, W) float32
--detect_from_maps (blobs)--> list[Detection]`` (x, y px; score = mean probability; area px)
``--second look (when the checkpoint has one)--> the kept detections with label and probs``.
The parameters are :class:`DetectParams` (the recipe's ``detect:`` section, then a
checkpoint's calibrated values, then its second look's candidate rule, then overrides).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from partsup.data.normalize import Normalizer, build_normalizer
from partsup.errors import PartsupError, RecipeError
from partsup.inference.blobs import detect_from_maps
from partsup.inference.params import DetectParams, check_threshold
from partsup.inference.second_look import SecondLook, load_second_look
from partsup.inference.tiling import infer_maps
from partsup.manager import Registries
from partsup.runtime import resolve_device
from partsup.types import Detection

__all__ = ["DetectParams", "Detector", "build_detector", "check_threshold", "default_checkpoint",
           "load_detector", "model_mpp_of", "params_from_checkpoint"]


class Detector:
    """A model plus detection parameters: ``detect(image, mpp) -> list[Detection]``.

    From Python: ``Detector.from_checkpoint(path).detect(rgb, mpp=0.25)`` (docs/python-api.md;
    ``partsup.Detector`` is the subclass :class:`partsup.prediction.api.Detector`, which adds
    ``predict_slide``, a whole slide).
    ``model`` is a :class:`partsup.model.partial.PartialModel` or any object with its
    ``preprocess`` and ``probabilities`` (e.g. an exported model run by onnxruntime).
    ``model_mpp``: the um/px the model was trained at (the checkpoint recipe's ``data.mpp``;
    None when it records none). ``normalizer``: the colour normalisation applied to every image
    first (the checkpoint recipe's ``data.normalize``; None: none), see
    :mod:`partsup.data.normalize`. ``second_look``: the crop classifier run on the
    candidates (:class:`partsup.inference.second_look.SecondLook`; None: none), from the
    checkpoint's ``second_look`` section.
    Which model this is (None when not loaded from a file): ``model_name`` (the model file's
    name, e.g. ``best.pt``), ``model_sha256`` (its SHA-256, 64 hex digits,
    :func:`partsup.checkpoint.digest.file_sha256`) and, for an exported model,
    ``source_sha256`` (the SHA-256 of the checkpoint it was exported from);
    :meth:`provenance` gives them as the fields ``partsup predict`` writes.
    """

    def __init__(self, model: Any, params: DetectParams, registries: Registries,
                 device: str | torch.device = "cpu", amp: bool = True,
                 model_mpp: float | None = None, normalizer: Normalizer | None = None,
                 second_look: SecondLook | None = None, *, model_name: str | None = None,
                 model_sha256: str | None = None, source_sha256: str | None = None) -> None:
        self.model = model
        self.params = params
        self.registries = registries
        self.device = resolve_device(device)
        self.amp = amp
        self.model_mpp = model_mpp
        self.normalizer = normalizer
        self.second_look = second_look
        self.model_name = model_name
        self.model_sha256 = model_sha256
        self.source_sha256 = source_sha256

    def provenance(self) -> dict[str, str]:
        """``{"model": name, "model_sha256": hex, "source_sha256": hex}``, each only when
        known: what ``partsup predict`` records in ``summary.csv`` and the GeoJSON files."""
        found = {"model": self.model_name, "model_sha256": self.model_sha256,
                 "source_sha256": self.source_sha256}
        return {k: v for k, v in found.items() if v}

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, device: str | torch.device = "auto",
                        *, plugins: Sequence[str] = (), **overrides: Any) -> "Detector":
        """The detector of a checkpoint: a ``.pt`` file, a run folder (its ``best.pt``) or a
        ``.safetensors`` file; ``None``: the model a plugin ships (``partsup_default_checkpoint``,
        as ``partsup predict`` without ``--checkpoint``).

        Plugins are loaded for this call (a fresh plugin manager: the entry-point plugins plus
        ``plugins``, dotted module names; the checkpoint's recipe adds its own). ``device``:
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``. ``overrides``: detection
        parameters (e.g. ``tile=256``), None values ignored.

        Raises:
            PartsupError: no path and no plugin ships a model; CheckpointError: unreadable file.
        """
        from partsup.manager import load
        registries = load(list(plugins))
        chosen = default_checkpoint(registries) if path is None else path
        detector, _ = load_detector(chosen, registries, device, **overrides)
        return detector if type(detector) is cls else cls.adopt(detector)

    @classmethod
    def adopt(cls, detector: "Detector") -> "Detector":
        """A ``cls`` with the model, parameters and settings of ``detector`` (shared, not
        copied): how a subclass such as ``partsup.Detector`` (:mod:`partsup.prediction.api`,
        which adds ``predict_slide``) comes from a loaded one."""
        return cls(detector.model, detector.params, detector.registries, detector.device,
                   detector.amp, detector.model_mpp, detector.normalizer, detector.second_look,
                   model_name=detector.model_name, model_sha256=detector.model_sha256,
                   source_sha256=detector.source_sha256)

    def normalized(self, image: np.ndarray, colour: dict[str, Any] | None = None
                   ) -> np.ndarray:
        """``image`` after the detector's colour normalisation (itself when there is none),
        with ``colour`` as the image's estimate (None: estimated from ``image`` itself; a
        slide passes the estimate of its whole tissue so that every tile maps the same way)."""
        if self.normalizer is None:
            return image
        if colour is None:
            colour = self.normalizer.estimate(image)
        return self.normalizer.apply(image, colour)

    def maps(self, image: np.ndarray, colour: dict[str, Any] | None = None
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(p_weak, p_strong | None)`` of ``image`` (H, W, 3) uint8, each (H, W) float32
        (``colour``: see :meth:`normalized`)."""
        p = self.params
        return infer_maps(self.model, self.normalized(image, colour), tile=p.tile,
                          overlap=p.overlap, batch_tiles=p.batch_tiles, device=self.device,
                          amp=self.amp, tta=p.tta)

    def detect(self, image: np.ndarray, mpp: float, colour: dict[str, Any] | None = None
               ) -> list[Detection]:
        """Detections of one ``(H, W, 3)`` uint8 RGB image of ``mpp`` um/px: each with ``x``,
        ``y`` (px, x = column), ``score`` (mean probability) and ``area`` (px) (``colour``:
        see :meth:`normalized`). With a :attr:`second_look`, these are its candidates: only
        those its verify rule keeps are returned, with ``label`` and ``probs``."""
        p_weak, p_strong = self.maps(image, colour)
        found = detect_from_maps(p_weak, p_strong, self.params, mpp, self.registries)
        if self.second_look is None:
            return found
        return self.second_look.run(image, found, mpp, self._look_colour(colour))

    def classify(self, image: np.ndarray, points: np.ndarray | Sequence[Sequence[float]],
                 mpp: float, colour: dict[str, Any] | None = None) -> list[Detection]:
        """The second look alone on given ``points`` ((N, 2) x, y px) of one ``(H, W, 3)``
        uint8 RGB image of ``mpp`` um/px: one detection per point, in order, with ``label``,
        ``probs`` and ``score`` (the verify probability, else the label head's highest), area
        0; no detection step, nothing filtered.

        Raises:
            PartsupError: the checkpoint has no second look.
        """
        if self.second_look is None:
            raise PartsupError("this checkpoint has no second look (a crop classifier) to "
                               "classify points with; attach one with partsup calibrate "
                               "--second-look CLASSIFIER.pt")
        return self.second_look.classify(image, points, mpp, self._look_colour(colour))

    def _look_colour(self, colour: dict[str, Any] | None) -> dict[str, Any] | None:
        """``colour`` (an estimate for :attr:`normalizer`) when the second look normalises
        with the same kind of normalizer, else None (it estimates from the image itself)."""
        look = self.second_look
        if colour is None or look is None or look.normalizer is None \
                or type(look.normalizer) is not type(self.normalizer):
            return None
        return colour


def load_detector(checkpoint: str | Path, registries: Registries,
                  device: str | torch.device = "auto", **overrides: Any
                  ) -> tuple[Detector, dict[str, Any]]:
    """A :class:`Detector` for a checkpoint, and the checkpoint dict.

    The model comes from :func:`partsup.checkpoint.files.load_model` on ``device`` (see
    :func:`resolve_device`); the parameters from :func:`params_from_checkpoint` (recipe, then
    calibrated values, then the non-None ``overrides``). The detector records the file's name
    and SHA-256 (a run folder: its ``best.pt``'s).

    Raises:
        CheckpointError: unreadable checkpoint. RecipeError: bad ``detect`` values (message
        prefixed with the checkpoint path). PartsupError: unknown or unavailable device.
    """
    from partsup.checkpoint.digest import file_sha256
    from partsup.checkpoint.files import checkpoint_file, load_model
    dev = resolve_device(device)
    model, ckpt = load_model(checkpoint, registries, device=dev)
    source = checkpoint_file(checkpoint)
    try:
        params = params_from_checkpoint(ckpt, **overrides)
    except PartsupError as exc:
        raise type(exc)(f"{checkpoint}: {exc}") from exc
    spec = ((ckpt.get("recipe") or {}).get("data") or {}).get("normalize")
    try:
        normalizer = build_normalizer(spec, registries, "the checkpoint's data.normalize")
    except PartsupError as exc:
        raise type(exc)(f"{checkpoint}: {exc}") from exc
    second_look = load_second_look(ckpt, registries, dev, str(checkpoint), tta=params.tta)
    return Detector(model, params, registries, dev, model_mpp=model_mpp_of(ckpt),
                    normalizer=normalizer, second_look=second_look, model_name=source.name,
                    model_sha256=file_sha256(source)), ckpt


def build_detector(checkpoint: Path, registries: Registries, device: str | torch.device,
                   overrides: dict[str, Any]) -> Detector:
    """The checkpoint's :class:`Detector` (:func:`load_detector`: recipe ``detect:`` values,
    then calibrated ones, then the non-None ``overrides``); ``partsup predict`` uses it."""
    return load_detector(checkpoint, registries, device, **overrides)[0]


def model_mpp_of(checkpoint: dict[str, Any]) -> float | None:
    """The um/px a checkpoint's model works at: its recipe's ``data.mpp`` (None when the recipe
    does not record one, as in checkpoints written before training filled it)."""
    value = ((checkpoint.get("recipe") or {}).get("data") or {}).get("mpp")
    return float(value) if value else None


def default_checkpoint(registries: Registries) -> Path:
    """The checkpoint a plugin ships (first ``partsup_default_checkpoint`` result).

    Raises:
        PartsupError: no plugin ships one.
    """
    found = registries.pm.hook.partsup_default_checkpoint()
    if found is None:
        raise PartsupError("no checkpoint given and no plugin ships a default model; pass a "
                           "checkpoint (RUN/best.pt)")
    return Path(found)


def params_from_checkpoint(ckpt: dict[str, Any], **overrides: Any) -> DetectParams:
    """The recipe's ``detect:`` section, updated by the checkpoint's calibrated values
    (``ckpt["detect"]``: w, s1, a1, threshold, sigma, area_unit) when present, then by its
    second look's candidate rule (``second_look.params.candidate``), then by non-None
    overrides."""
    values = dict((ckpt.get("recipe") or {}).get("detect") or {})
    values.update(ckpt.get("detect") or {})
    look = ckpt.get("second_look")
    if isinstance(look, dict) and isinstance(look.get("params"), dict):
        values.update(look["params"].get("candidate") or {})
    _check_finite_numbers(values)
    return DetectParams.from_dict(values, **overrides)


def _check_finite_numbers(values: dict[str, Any]) -> None:
    """RecipeError naming the first number of a ``detect`` section that is NaN or inf."""
    for key, value in values.items():
        if isinstance(value, float) and not np.isfinite(value):
            raise RecipeError(f"detect.{key}: {value} is not a finite number; calibrate the "
                              f"checkpoint again (partsup calibrate) or fix its recipe")
