"""The Python API's side of prediction: :class:`Detector` (``partsup.Detector``, the one
docs/python-api.md shows) is the inference detector plus :meth:`Detector.predict_slide`, a
whole slide through the same pipeline as ``partsup predict`` (:func:`predict_slide_file`).

The slide path lives here, above inference (docs/architecture.md, Layers): the inference
detector (:class:`partsup.inference.detector.Detector`) knows images and tiles, not slides,
output folders or plugins' slide outputs.
"""
from __future__ import annotations

import functools
import logging
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from partsup.data.images import DataWarning
from partsup.inference.detector import Detector as InferenceDetector
from partsup.prediction.inputs import Item, check_output_folder
from partsup.errors import PartsupError
from partsup.prediction.image import detect_resampled
from partsup.prediction.settings import (MPP_RANGE, PredictSettings, check_mpp,  # noqa: F401
                                         make_writers, model_mpp, polygons_of,
                                         predict_defaults, predict_options, slide_extra)
from partsup.prediction.slide import detect_slide, slide_lines, write_slide
from partsup.types import Detection

log = logging.getLogger(__name__)

#: the formats ``Detector.predict_slide`` writes with ``out`` (``partsup predict``'s default)
FORMATS = ("csv", "geojson")


class Detector(InferenceDetector):
    """``partsup.Detector``: :class:`partsup.inference.detector.Detector` plus
    :meth:`predict_slide`.

    - ``Detector.from_checkpoint(path=None, device="auto", *, plugins=(), **overrides)``;
    - ``detect(rgb, mpp)``: detections of one ``(H, W, 3)`` uint8 image of ``mpp`` um/px (x, y,
      area px; with a second look only those its verify rule keeps, with ``label`` and
      ``probs``), resampled to the model's um/px first as ``partsup predict --mpp`` does;
      ``mpp`` must lie in :data:`MPP_RANGE` (the range of ``--mpp``);
    - ``classify(rgb, points, mpp)``: the second look alone on given ``(N, 2)`` x, y px
      points: N detections in order, ``label`` and ``probs`` filled, ``score`` the verify
      probability (else the label head's highest), area 0; PartsupError without a second
      look (``partsup predict --at`` on files);
    - ``maps(rgb)``: the probability maps; :meth:`predict_slide`: a whole slide.
    """

    #: detection on an image as it is (no resampling, no checks): what the pipeline calls
    #: (:func:`partsup.prediction.image.detect_as_given`), which resamples itself
    detect_unresampled = InferenceDetector.detect

    @functools.cached_property
    def resample_mpp(self) -> float | None:
        """The um/px :meth:`detect` resamples images to, as ``partsup predict`` does: the
        model's (``model_mpp``), else the plugins' ``default_mpp``; None: no resampling."""
        return model_mpp(self, predict_defaults(self.registries.pm).get("default_mpp"))

    def detect(self, image: np.ndarray, mpp: float, colour: dict[str, Any] | None = None
               ) -> list[Detection]:
        """Detections of one ``(H, W, 3)`` uint8 RGB image of ``mpp`` um/px, as ``partsup
        predict --mpp`` finds them: an image whose ``mpp`` differs from the model's
        (:attr:`resample_mpp`) by more than 1% is resampled to it first
        (:func:`partsup.prediction.image.detect_resampled`); ``x``, ``y`` and ``area`` come back
        in the image's own px. ``colour``: see :meth:`normalized`.

        Raises:
            PartsupError: ``mpp`` not a number within :data:`MPP_RANGE` um/px (the range of
            ``--mpp``); ``image`` not a non-empty ``(H, W, 3)`` uint8 array.
        """
        image = check_rgb(image, "detect")
        mpp = check_mpp(mpp, "detect: mpp")
        target = self.resample_mpp
        if target and abs(mpp / target - 1.0) > 0.01:
            return detect_resampled(self, image, mpp, target, colour=colour)
        return super().detect(image, mpp, colour)

    def predict_slide(self, path: str | Path, *, mpp: float | None = None,
                      roi: str | Path | Sequence[Any] | None = None, tile: int = 1024,
                      out: str | Path | None = None, **options: Any) -> list[Detection]:
        """Detections of a whole slide (``.svs``, ``.ndpi``, multi-level ``.tif``) in level-0
        px, as ``partsup predict`` finds them: tissue tiles of ``tile`` model px, each read at
        the model's um/px (``model_mpp``, else a plugin's default), no duplicates across tile
        seams (docs/slides.md).

        ``mpp``: the slide's um/px when the file records none or a wrong one. ``roi``: a QuPath
        GeoJSON file (or its polygons, :func:`partsup.slides.tissue.read_roi`): only tissue
        inside. ``out``: None writes nothing; a folder gets what ``partsup predict`` writes for
        a slide (csv, geojson, overlay, tissue mask, plugins' outputs; not ``summary.csv``).
        ``options``: plugins' ``partsup predict`` options by name (e.g. ``hotspot_area=1.0``;
        the others keep the defaults ``partsup predict`` has). The same pipeline as the command
        (:func:`predict_slide_file`). Ctrl-C raises KeyboardInterrupt (with ``out``, once the
        tiles done are written)."""
        return predict_slide_file(self, path, mpp=mpp, roi=roi, tile=tile, out=out, **options)


def check_rgb(image: Any, who: str = "detect") -> np.ndarray:
    """``image`` when it is a non-empty ``(H, W, 3)`` uint8 NumPy array (RGB).

    Raises:
        PartsupError: one line naming ``who``, what it got and what it needs.
    """
    if not isinstance(image, np.ndarray):
        raise PartsupError(f"{who}: expected an (H, W, 3) uint8 RGB NumPy array, got "
                           f"{type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape) < 1:
        raise PartsupError(f"{who}: expected a non-empty (H, W, 3) uint8 RGB image, got shape "
                           f"{tuple(image.shape)} {image.dtype}")
    return image


def predict_slide_file(detector: Any, path: str | Path, *, mpp: float | None = None,
                       roi: str | Path | Sequence[Any] | None = None, tile: int = 1024,
                       out: str | Path | None = None, **options: Any) -> list[Detection]:
    """Detections (x, y level-0 px, score, area level-0 px) of the slide ``path`` for
    ``detector`` (a :class:`partsup.inference.detector.Detector`): ``Detector.predict_slide``.
    ``options``: plugins' ``predict`` options by name (:func:`predict_options`). With ``out``
    the files ``partsup predict`` writes for a slide; its lines go to this module's logger.

    Raises:
        DataError: unreadable slide or ROI, no um/px anywhere. PartsupError: an unknown or
        refused option, ``mpp`` not a number within :data:`MPP_RANGE` um/px.
        KeyboardInterrupt: Ctrl-C (with ``out``, after writing the outputs of the tiles done).
    """
    if mpp is not None:
        mpp = check_mpp(mpp, "predict_slide: mpp")
    registries = detector.registries
    values = predict_options(registries.pm, options)
    polygons = polygons_of(roi)
    item = Item(Path(path), Path(path).stem)
    folder = Path(out) if out is not None else Path(".")
    if out is not None:
        check_output_folder(folder)
    writers = make_writers(FORMATS, registries, "formats") if out is not None else {}
    settings = PredictSettings(folder, writers, values, mpp=mpp, roi=polygons, slide_tile=tile)
    found = detect_slide(item.path, detector, **settings.slide_geometry(detector, polygons))
    if found.mpp_assumed:
        warnings.warn(f"{path}: the slide records no um/px; {settings.default_mpp} assumed "
                      f"(pass mpp= for correct coordinates of the model's resolution and "
                      f"per-mm² figures)", DataWarning, stacklevel=3)
    if out is not None:
        _, lines = write_slide(item, found, writers, folder, label=settings.label,
                               extra=slide_extra(registries.pm, values))
        for line in slide_lines(item.id, found, polygons is not None, lines):
            log.info(line)
    if found.interrupted:
        raise KeyboardInterrupt
    return found.detections
