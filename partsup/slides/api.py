"""A whole slide from Python: what ``Detector.predict_slide`` runs (docs/python-api.md).

``path --detect_slide (tissue, tiles at the model's um/px, no duplicates across seams)-->
detections in level-0 px``; with ``out`` the files ``partsup predict`` writes for a slide
(every default format, overlay, tissue mask, the plugins' slide outputs) via
:func:`partsup.slides.predict.write_slide`.

The defaults ``partsup predict`` takes from plugins (``partsup_command_arguments``: the um/px of
a slide that records none, the objects' label, the plugins' own options such as a hotspot area)
are read from a throwaway parser, so the API and the command agree.
"""
from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from partsup.data.images import DataWarning
from partsup.errors import PartsupError
from partsup.prediction import Item, check_output_folder
from partsup.slides.predict import detect_slide, summary_line, write_slide
from partsup.slides.tissue import read_roi
from partsup.types import Detection

log = logging.getLogger(__name__)

#: the formats written with ``out`` (``partsup predict``'s default ``--format``)
FORMATS = ("csv", "geojson")


def plugin_options(pm: Any, options: dict[str, Any]) -> argparse.Namespace:
    """The defaults plugins give ``partsup predict`` (``default_mpp``, ``label`` and their own
    options, by destination name), updated by ``options``.

    Raises:
        PartsupError: an option no plugin defines (naming the known ones)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.set_defaults(default_mpp=None, label=None)
    pm.hook.partsup_command_arguments(command="predict", parser=parser)
    args = parser.parse_known_args([])[0]
    unknown = sorted(set(options) - set(vars(args)))
    if unknown:
        raise PartsupError(f"predict_slide: unknown option(s) {', '.join(unknown)}; the "
                           f"installed plugins define {', '.join(sorted(vars(args)))}")
    for key, value in options.items():
        setattr(args, key, value)
    return args


def predict_slide_file(detector: Any, path: str | Path, *, mpp: float | None = None,
                       roi: str | Path | Sequence[Sequence[np.ndarray]] | None = None,
                       tile: int = 1024, out: str | Path | None = None, **options: Any
                       ) -> list[Detection]:
    """Detections (x, y level-0 px, score, area level-0 px) of the slide ``path`` for
    ``detector`` (a :class:`partsup.inference.detector.Detector`); see
    ``Detector.predict_slide``.

    Raises:
        DataError: unreadable slide or ROI, no um/px anywhere. KeyboardInterrupt: Ctrl-C
        (with ``out``, after writing the outputs of the tiles done).
    """
    args = plugin_options(detector.registries.pm, options)
    model_mpp = getattr(detector, "model_mpp", None) or args.default_mpp
    polygons = read_roi(Path(roi)) if isinstance(roi, (str, Path)) else roi
    item = Item(Path(path), Path(path).stem)
    writers = None
    if out is not None:
        out = Path(out)
        check_output_folder(out)
        writers = {n: detector.registries.writers.get(n, where="formats")() for n in FORMATS}
    margin = max(64, int(getattr(getattr(detector, "params", None), "overlap", 64)))
    found = detect_slide(item.path, detector, mpp=mpp, default_mpp=args.default_mpp,
                         model_mpp=model_mpp, roi=polygons, tile=tile, margin=margin)
    if found.mpp_assumed:
        warnings.warn(f"{path}: the slide records no um/px; {args.default_mpp} assumed (pass "
                      f"mpp= for correct coordinates of the model's resolution and per-mm² "
                      f"figures)", DataWarning, stacklevel=3)
    if writers is not None:
        def extra(slide: Any) -> list[str]:
            found_lines = detector.registries.pm.hook.partsup_slide_outputs(slide=slide,
                                                                            args=args)
            return [line for lines in found_lines if lines for line in lines]

        _, lines = write_slide(item, found, writers, Path(out or "."), label=args.label, extra=extra)
        for line in [summary_line(item.id, found, polygons is not None), *lines]:
            log.info(line)
    if found.interrupted:
        raise KeyboardInterrupt
    return found.detections
