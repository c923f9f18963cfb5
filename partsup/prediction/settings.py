"""One place for what ``partsup predict`` and ``Detector.predict_slide`` both need besides the
detector and the inputs: the plugins' option values, the writers, the model's um/px, a slide
tile's margin and the plugins' slide outputs (:class:`PredictSettings`).

The plugins' ``predict`` options (``partsup_command_options``, :class:`partsup.options.Option`)
give the CLI its flags and defaults (:mod:`partsup.command`) and the Python API its defaults
(:func:`predict_defaults`): the same rows, so both see the same values.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from partsup.errors import PartsupError
from partsup.options import check_range, command_options, option_defaults
from partsup.slides.tissue import check_roi, read_roi

#: the command whose plugin options prediction reads
COMMAND = "predict"
#: values ``partsup predict`` has before any plugin sets them: ``default_mpp`` (um/px when
#: neither ``--mpp`` nor the file gives one) and ``label`` (the objects' class name)
BASE_DEFAULTS: Mapping[str, Any] = MappingProxyType({"default_mpp": None, "label": None})
#: least context around a slide tile, model px (more when the detector's tiles overlap more)
MIN_MARGIN = 64
#: accepted um/px (``--mpp``, ``Detector.detect(mpp=)``, ``predict_slide(mpp=)``): wide, but
#: finite and physically possible
MPP_RANGE = (0.01, 100.0)

Polygons = Sequence[Sequence[np.ndarray]]


def predict_defaults(pm: Any) -> dict[str, Any]:
    """``dest -> default`` of :data:`BASE_DEFAULTS` and every plugin's ``predict`` option
    (``pm``: the plugin manager; None: the base values only)."""
    return option_defaults(command_options(pm, COMMAND), BASE_DEFAULTS)


def predict_options(pm: Any, given: Mapping[str, Any], who: str = "predict_slide"
                    ) -> dict[str, Any]:
    """:func:`predict_defaults` updated by ``given`` (each non-None value passes its option's
    ``check``).

    Raises:
        PartsupError: an option no plugin defines (naming the known ones), or a refused value.
    """
    rows = command_options(pm, COMMAND)
    values = option_defaults(rows, BASE_DEFAULTS)
    unknown = sorted(set(given) - set(values))
    if unknown:
        raise PartsupError(f"{who}: unknown option(s) {', '.join(unknown)}; the installed "
                           f"plugins define {', '.join(sorted(values))}")
    checks = {row.dest: row.check for row in rows if row.check is not None}
    for key, value in given.items():
        if value is not None and key in checks:
            checks[key](value)
    values.update(given)
    return values


def check_mpp(value: Any, option: str = "mpp") -> float:
    """``value`` as um/px when it is a real number within :data:`MPP_RANGE` (``option`` names
    it in the message, e.g. ``"--mpp"``).

    Raises:
        PartsupError: not a number (None, a string, a bool), NaN, inf, or outside the range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise PartsupError(f"{option} must be a number of um/px between {MPP_RANGE[0]:g} and "
                           f"{MPP_RANGE[1]:g}, got {value!r}")
    check_range(option, float(value), *MPP_RANGE, "um/px")
    return float(value)


def make_writers(names: Sequence[str], registries: Any, where: str) -> dict[str, Any]:
    """``{name: writer}`` for the writer names (unknown names raise, naming ``where`` and the
    known ones)."""
    return {n: registries.writers.get(n, where=where)() for n in dict.fromkeys(names)}


def model_mpp(detector: Any, default_mpp: float | None) -> float | None:
    """The um/px inputs are resampled to: the detector's ``model_mpp``, else ``default_mpp``."""
    return getattr(detector, "model_mpp", None) or default_mpp


def slide_margin(detector: Any) -> int:
    """Context around each slide tile, model px: the detector's tile ``overlap``, at least
    :data:`MIN_MARGIN`."""
    overlap = getattr(getattr(detector, "params", None), "overlap", MIN_MARGIN)
    return max(MIN_MARGIN, int(overlap))


def slide_extra(pm: Any, options: Mapping[str, Any]) -> Callable[[Any], list[str]]:
    """``slide -> lines``: every plugin's ``partsup_slide_outputs`` for a written slide (a
    :class:`partsup.prediction.slide.SlideOutput`), their lines joined."""
    def extra(slide: Any) -> list[str]:
        found = pm.hook.partsup_slide_outputs(slide=slide, options=options)
        return [line for lines in found if lines for line in lines]
    return extra


def polygons_of(roi: str | Path | Polygons | None) -> Polygons | None:
    """``roi`` as polygons: a GeoJSON file read (:func:`partsup.slides.tissue.read_roi`),
    polygons checked (:func:`partsup.slides.tissue.check_roi`), None as None.

    Raises:
        DataError: an unreadable file, a vertex that is not finite, a polygon without area."""
    if roi is None:
        return None
    return read_roi(Path(roi)) if isinstance(roi, (str, Path)) else check_roi(roi, "roi")


def roi_name(roi: str | Path | Polygons | None) -> str:
    """How messages name ``roi``: ``--roi FILE`` for a file, else ``roi``."""
    return f"--roi {roi}" if isinstance(roi, (str, Path)) else "roi"


@dataclass(frozen=True)
class PredictSettings:
    """What a prediction run uses besides the detector and the inputs.

    ``out``: the output folder. ``writers``: ``{name: writer}``. ``options``: the command's
    option values by name, plugins' own included (``default_mpp``, ``label``, e.g. a hotspot
    area), as the hooks receive them. ``mpp``: um/px given for every input (None: each file's,
    else ``default_mpp``). ``overlay``: write ``<id>.overlay.png``. ``roi``: slides: polygons
    (level-0 px) or a GeoJSON file. ``slide_tile``: slides: core tile side, model px.
    ``at``: ``partsup predict --at DIR``: no detection; the points of ``DIR/<id>.csv`` are
    classified by the detector's second look (:mod:`partsup.prediction.points`).
    """

    out: Path
    writers: Mapping[str, Any]
    options: Mapping[str, Any] = field(default_factory=lambda: dict(BASE_DEFAULTS))
    mpp: float | None = None
    overlay: bool = True
    roi: str | Path | Polygons | None = None
    slide_tile: int = 1024
    at: Path | None = None

    @property
    def default_mpp(self) -> float | None:
        """um/px when neither ``mpp`` nor the file gives one (a plugin's default)."""
        return self.options.get("default_mpp")

    @property
    def label(self) -> str | None:
        """The detected objects' class name, given to writers as ``info["label"]``."""
        return self.options.get("label")

    def slide_geometry(self, detector: Any, roi: Polygons | None) -> dict[str, Any]:
        """The keyword arguments of :func:`partsup.prediction.slide.detect_slide` (and
        ``predict_slide``) for this run and ``detector``: um/px given, assumed and the model's,
        ``roi`` polygons (and how messages name them), tile and margin."""
        return {"mpp": self.mpp, "default_mpp": self.default_mpp,
                "model_mpp": model_mpp(detector, self.default_mpp), "roi": roi,
                "roi_name": roi_name(self.roi), "tile": self.slide_tile,
                "margin": slide_margin(detector)}
