"""Macenko stain normalisation (Macenko et al., ISBI 2009) for two-stain images (H&E).

In optical density ``OD = -ln((RGB + 1) / Io)`` a pixel is a mix of two stain vectors,
``OD = S c``. The stain vectors ``S`` (3 x 2) of an image are the extreme angles (the ``alpha``
and ``100 - alpha`` percentiles) of its tissue pixels (``OD >= beta`` in every channel) in the
plane of the two main eigenvectors of their OD covariance; the concentrations ``c`` come by least
squares, and their 99th percentiles ``max_conc`` scale them. Normalising maps
``c -> c * max_conc_target / max_conc`` and re-mixes with the target's vectors. With fixed
estimates that is one 3x3 matrix in OD space, ``OD' = S_t diag(m_t / m) pinv(S) OD``, so
every tile of a slide maps the same way.

Why not torchstain: its ``MacenkoNormalizer.normalize`` estimates the source's vectors anew on
every call, from all of its pixels; a slide needs one estimate (from its tissue) applied to
every tile, which it does not offer without calling its private methods.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from partsup.plugin import DataError, fit_reference, sample_pixels

#: the usual default target (the H&E reference of the common Macenko implementations)
DEFAULT_STAINS = ((0.5626, 0.7201, 0.4062), (0.2159, 0.8012, 0.5581))
DEFAULT_MAX_CONC = (1.9705, 1.0308)


class Macenko:
    """Macenko stain normalisation to ``stains`` (H then E, each a unit OD vector of 3) and
    ``max_conc`` (their 99th-percentile concentrations); when absent they are fitted to
    ``reference`` (an image file) when given, else the usual default H&E target.

    ``intensity``: Io, the light intensity of background glass (0..255); ``alpha``: the
    percentile (%) of angles taken as the extreme stain directions; ``beta``: the least OD of a
    tissue pixel.
    """

    def __init__(self, reference: str | None = None,
                 stains: Sequence[Sequence[float]] | None = None,
                 max_conc: Sequence[float] | None = None, intensity: float = 240.0,
                 alpha: float = 1.0, beta: float = 0.15) -> None:
        if not (0 < intensity <= 255 and 0 <= alpha < 50 and beta >= 0):
            raise DataError(f"macenko: need 0 < intensity <= 255, 0 <= alpha < 50, beta >= 0 "
                            f"(got {intensity}, {alpha}, {beta})")
        self.intensity, self.alpha, self.beta = float(intensity), float(alpha), float(beta)
        if reference is not None and (stains is None or max_conc is None):
            fitted = fit_reference(self.estimate, reference)
            stains, max_conc = fitted["stains"], fitted["max_conc"]
        self.stains = np.asarray(DEFAULT_STAINS if stains is None else stains, np.float64)
        self.max_conc = np.asarray(DEFAULT_MAX_CONC if max_conc is None else max_conc,
                                   np.float64)
        if self.stains.shape != (2, 3) or self.max_conc.shape != (2,) or not (
                np.isfinite(self.stains).all() and (self.max_conc > 0).all()):
            raise DataError("macenko: stains must be two OD vectors of 3 values and max_conc "
                            "two positive values")

    def _od(self, rgb: np.ndarray) -> np.ndarray:
        return -np.log((rgb.astype(np.float32) + 1.0) / self.intensity)

    def estimate(self, image: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Any]:
        od = self._od(sample_pixels(image, mask)).astype(np.float64)
        od = od[(od >= self.beta).all(axis=1)]
        if len(od) < 100:
            return {}
        _, vecs = np.linalg.eigh(np.cov(od.T))
        plane = vecs[:, 1:3] * np.sign(od.mean(axis=0) @ vecs[:, 1:3])  # the cloud at phi ~ 0
        proj = od @ plane
        phi = np.arctan2(proj[:, 1], proj[:, 0])
        lo, hi = np.percentile(phi, [self.alpha, 100 - self.alpha])
        v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
        v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
        stains = np.stack([v1, v2] if v1[0] > v2[0] else [v2, v1])  # haematoxylin first
        stains *= np.sign(stains.sum(axis=1, keepdims=True))
        conc = np.linalg.lstsq(stains.T, od.T, rcond=None)[0]
        max_conc = np.percentile(conc, 99, axis=1)
        if not (np.isfinite(stains).all() and (max_conc > 1e-6).all()):
            return {}
        return {"stains": stains.tolist(), "max_conc": max_conc.tolist()}

    def matrix(self, estimate: dict[str, Any]) -> np.ndarray:
        """The 3x3 map of OD row vectors, ``od @ M``, from ``estimate``'s stains to the target."""
        source = np.asarray(estimate["stains"], np.float64)  # (2, 3)
        scale = self.max_conc / np.asarray(estimate["max_conc"], np.float64)
        to_conc = np.linalg.pinv(source)  # (3, 2): od (1, 3) @ -> concentrations (1, 2)
        return to_conc @ np.diag(scale) @ self.stains

    def apply(self, image: np.ndarray, estimate: dict[str, Any]) -> np.ndarray:
        if not estimate:
            return image
        od = self._od(image.reshape(-1, 3)) @ self.matrix(estimate).astype(np.float32)
        out = self.intensity * np.exp(-od) - 1.0
        return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(image.shape)

    def target(self) -> dict[str, Any]:
        return {"stains": self.stains.tolist(), "max_conc": self.max_conc.tolist(),
                "intensity": self.intensity, "alpha": self.alpha, "beta": self.beta}
