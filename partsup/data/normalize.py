"""Colour normalisation: bring every image's colours to a reference's before the model sees it.

Images from another lab or scanner differ in colour; a normalizer maps them to one reference,
in training (every image of every set) and in prediction (the checkpoint records the reference's
parameters, so ``partsup predict`` needs no reference file). A recipe names one as
``data.normalize: {name: reinhard, reference: ref.png}``; null (the default) changes nothing.

A normalizer (registry ``normalizers``) is built by ``factory(reference=None, **target)``:
``reference`` is an image file to fit the target to; ``target`` the fitted values themselves (what
:meth:`Normalizer.target` returns), which win over ``reference`` when both are given: a
checkpoint records both, and needs no reference file. It has three methods:

- ``estimate(image, mask=None) -> dict``: the colour parameters of ``image`` (``(H, W, 3)``
  uint8 RGB) over the pixels of ``mask`` (``(H, W)`` bool, None: all), JSON-able; ``{}`` when
  too few pixels carry colour (the image is then left as it is);
- ``apply(image, estimate) -> image``: ``image`` mapped from the colours of ``estimate`` to the
  target (``(H, W, 3)`` uint8). A fixed estimate maps every tile of a slide the same way;
- ``target() -> dict``: keyword arguments that rebuild this normalizer without the reference.

The core's own normalizer is ``reinhard`` (Reinhard et al. 2001: mean and standard deviation of
each channel of the l-alpha-beta space); plugins add others (the bundled ``stain`` plugin:
``macenko``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from partsup.errors import DataError

__all__ = ["NORMALIZERS", "NormalizedReader", "Normalizer", "Reinhard", "build_normalizer",
           "check_input_normalization", "fit_normalize", "fit_reference", "normalize_image",
           "read_reference", "resolve_normalize"]

#: pixels used to estimate an image's colours (a regular subsample of larger images)
ESTIMATE_PIXELS = 250_000


def check_input_normalization(norm: Any, where: str) -> dict[str, Any]:
    """``norm``, a model's input normalisation (``{"mean", "std", "scale", "bgr"}``: RGB 0..255
    times ``scale / 255``, minus ``mean``, over ``std``; :func:`partsup.model.partial.normalize`),
    when ``mean`` and ``std`` are three finite numbers each, every ``std`` > 0, and ``scale``
    (if given) a finite number > 0. A ``std`` of 0 would divide by zero and make every
    probability NaN, whatever the image.

    Raises:
        DataError: one line naming ``where`` (e.g. the checkpoint) and the rule.
    """
    def numbers(key: str) -> np.ndarray | None:
        try:
            values = np.asarray(norm[key], np.float64).reshape(-1)
        except (KeyError, TypeError, ValueError):
            return None
        return values if values.size == 3 and np.isfinite(values).all() else None

    if not isinstance(norm, dict):
        raise DataError(f"{where}: the input normalisation must be a mapping with mean and std, "
                        f"got {type(norm).__name__}")
    mean, std = numbers("mean"), numbers("std")
    if mean is None or std is None or not (std > 0).all():
        raise DataError(f"{where}: the input normalisation needs mean and std of three finite "
                        f"numbers each, std > 0 (got mean {norm.get('mean')!r}, std "
                        f"{norm.get('std')!r}); a std of 0 divides by zero")
    scale = norm.get("scale", 255)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (
            np.isfinite(scale) and scale > 0):
        raise DataError(f"{where}: the input normalisation's scale must be a finite number "
                        f"> 0, got {scale!r}")
    return norm


class Normalizer(Protocol):
    def estimate(self, image: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Any]: ...

    def apply(self, image: np.ndarray, estimate: dict[str, Any]) -> np.ndarray: ...

    def target(self) -> dict[str, Any]: ...


def read_reference(path: str | Path) -> np.ndarray:
    """The reference image ``path`` as ``(H, W, 3)`` uint8 RGB.

    Raises:
        DataError: the file is missing or is not an image partsup reads.
    """
    from partsup.data.images import read_image
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"normalize reference {path}: no such file")
    return read_image(path)


def fit_reference(estimate: Any, reference: str | Path) -> dict[str, Any]:
    """``estimate(image)`` of the reference image file (a normalizer's target).

    Raises:
        DataError: the file is missing or unreadable, or too few of its pixels carry colour.
    """
    fitted = estimate(read_reference(reference))
    if not fitted:
        raise DataError(f"normalize reference {reference}: too few coloured (non-white) pixels "
                        f"to fit to")
    return fitted


def sample_pixels(image: np.ndarray, mask: np.ndarray | None = None,
                  limit: int = ESTIMATE_PIXELS) -> np.ndarray:
    """``(N, 3)`` float32 RGB of the pixels of ``mask`` (all when None), a regular subsample
    of at most about ``limit`` of them."""
    step = max(1, int(np.ceil(np.sqrt(image.shape[0] * image.shape[1] / limit))))
    rgb = image[::step, ::step].reshape(-1, 3)
    if mask is not None:
        rgb = rgb[np.asarray(mask, bool)[::step, ::step].reshape(-1)]
    return rgb.astype(np.float32)


def normalize_image(normalizer: Normalizer, image: np.ndarray,
                    mask: np.ndarray | None = None) -> np.ndarray:
    """``image`` mapped to the normalizer's target with its own estimate (over ``mask``)."""
    return normalizer.apply(image, normalizer.estimate(image, mask))


# -- Reinhard: l-alpha-beta statistics ----------------------------------------------------------

_RGB2LMS = np.array([[0.3811, 0.5783, 0.0402], [0.1967, 0.7244, 0.0782],
                     [0.0241, 0.1288, 0.8444]])
_LMS2LAB = np.diag([1 / np.sqrt(3), 1 / np.sqrt(6), 1 / np.sqrt(2)]) @ np.array(
    [[1, 1, 1], [1, 1, -2], [1, -1, 0]], float)
_LAB2LMS = np.linalg.inv(_LMS2LAB)
_LMS2RGB = np.linalg.inv(_RGB2LMS)


def _to_lab(rgb: np.ndarray) -> np.ndarray:
    """``(N, 3)`` RGB 0..255 -> l-alpha-beta (log10 of LMS cone responses of (RGB + 1) / 256)."""
    lms = (rgb.astype(np.float32) + 1.0) / 256.0 @ _RGB2LMS.T.astype(np.float32)
    return np.log10(np.maximum(lms, 1e-6)) @ _LMS2LAB.T.astype(np.float32)


def _from_lab(lab: np.ndarray) -> np.ndarray:
    lms = np.power(10.0, lab @ _LAB2LMS.T.astype(np.float32))
    return lms @ _LMS2RGB.T.astype(np.float32) * 256.0 - 1.0


def _is_tissue(rgb: np.ndarray, bright: float = 220.0) -> np.ndarray:
    """Pixels not near white (some channel below ``bright``): background glass is left out of
    the statistics."""
    return rgb.min(axis=1) < bright


class Reinhard:
    """Colour transfer by the mean and standard deviation of each l-alpha-beta channel
    (Reinhard et al., IEEE CG&A 2001), over the non-white pixels.

    ``mean``, ``std``: the target's three values each; when absent they are fitted to
    ``reference`` (an image file), which is then required.
    """

    def __init__(self, reference: str | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        if reference is not None and (mean is None or std is None):
            fitted = fit_reference(self.estimate, reference)
            mean, std = fitted["mean"], fitted["std"]
        if mean is None or std is None:
            raise DataError("reinhard: give reference (an image file) or mean and std")
        self.mean = np.asarray(mean, np.float32).reshape(3)
        self.std = np.asarray(std, np.float32).reshape(3)
        if not (np.isfinite(self.mean).all() and np.isfinite(self.std).all()
                and (self.std > 0).all()):
            raise DataError(f"reinhard: mean {list(mean)} and std {list(std)} must be finite, "
                            f"std > 0")

    def estimate(self, image: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Any]:
        rgb = sample_pixels(image, mask)
        rgb = rgb[_is_tissue(rgb)]
        if len(rgb) < 100:
            return {}
        lab = _to_lab(rgb)
        std = lab.std(axis=0)
        if not (std > 1e-6).all():
            return {}
        return {"mean": lab.mean(axis=0).tolist(), "std": std.tolist()}

    def apply(self, image: np.ndarray, estimate: dict[str, Any]) -> np.ndarray:
        if not estimate:
            return image
        mean = np.asarray(estimate["mean"], np.float32)
        scale = self.std / np.asarray(estimate["std"], np.float32)
        lab = _to_lab(image.reshape(-1, 3))
        out = _from_lab((lab - mean) * scale + self.mean)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(image.shape)

    def target(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


NORMALIZERS = {"reinhard": Reinhard}


# -- recipes and datasets -------------------------------------------------------------------------

def build_normalizer(spec: dict[str, Any] | str | None, registries: Any,
                     where: str = "data.normalize") -> Normalizer | None:
    """The normalizer of a recipe value ``{name, reference | target values}`` (None: none)."""
    if not spec:
        return None
    return registries.normalizers.build_component(spec, where)


def fit_normalize(spec: dict[str, Any] | str | None, registries: Any,
                  where: str = "data.normalize") -> tuple[Normalizer | None, dict[str, Any] | None]:
    """The normalizer of a recipe value and that value with the fitted target values added
    beside ``reference``, so that a checkpoint rebuilds it without the reference file
    (``(None, None)``: none)."""
    normalizer = build_normalizer(spec, registries, where)
    if normalizer is None:
        return None, None
    name = spec if isinstance(spec, str) else spec["name"]
    reference = None if isinstance(spec, str) else spec.get("reference")
    return normalizer, {"name": name, **({"reference": str(reference)} if reference else {}),
                        **normalizer.target()}


def resolve_normalize(spec: dict[str, Any] | str | None, registries: Any,
                      where: str = "data.normalize") -> dict[str, Any] | None:
    """The recipe value with the fitted target values beside ``reference``
    (:func:`fit_normalize`; None: none)."""
    return fit_normalize(spec, registries, where)[1]


class NormalizedReader(Sequence):  # type: ignore[type-arg]
    """A dataset reader whose samples' images are normalised (each with its own estimate);
    everything else is the wrapped reader's.

    Each image's estimate is computed once and kept (a few numbers per image): training reads
    the same image many times, and estimating costs several times as much as applying.
    """

    def __init__(self, reader: Any, normalizer: Normalizer) -> None:
        self.reader, self.normalizer = reader, normalizer
        self.estimates: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> Any:  # type: ignore[override]
        sample = self.reader[index]
        estimate = self.estimates.get(index)
        if estimate is None:
            estimate = self.estimates[index] = self.normalizer.estimate(sample.image)
        return dataclasses.replace(sample, image=self.normalizer.apply(sample.image, estimate))

    def __getattr__(self, name: str) -> Any:
        if name in ("reader", "normalizer", "estimates"):
            raise AttributeError(name)
        return getattr(self.reader, name)
