"""The looks the synthetic generator imitates (:data:`STYLES`: scale and stain per dataset), the
kinds of objects it paints (:data:`PHASES`, :data:`MIMICS`) and what one rendered image holds
(:class:`SynthImage`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Style:
    """One dataset look: scale, stain and default image size.

    Attributes:
        name: dataset style (``icpr2012``, ``icpr2014``, ``amida13``, ``midog``).
        mpp: micrometres per pixel of the written images.
        h_od: hematoxylin optical-density vector (R, G, B), unit length.
        e_od: eosin optical-density vector (R, G, B), unit length.
        background_od: optical density of the glass/background (R, G, B).
        e_gain: scales eosin concentration (paler / stronger counterstain).
        h_gain: scales hematoxylin concentration.
        size: default ``(H, W)`` in px.
    """

    name: str
    mpp: float
    h_od: tuple[float, float, float]
    e_od: tuple[float, float, float]
    background_od: tuple[float, float, float]
    e_gain: float
    h_gain: float
    size: tuple[int, int]


def _unit(v: tuple[float, float, float]) -> tuple[float, float, float]:
    n = math.sqrt(sum(x * x for x in v))
    return (v[0] / n, v[1] / n, v[2] / n)


STYLES: dict[str, Style] = {
    # Aperio XT, 0.2456 um/px; pink-purple.
    "icpr2012": Style("icpr2012", 0.2456, _unit((0.62, 0.74, 0.27)), _unit((0.09, 0.96, 0.27)),
                      (0.03, 0.05, 0.03), 0.95, 1.0, (512, 512)),
    # Aperio frames of MITOS-ATYPIA-14, 0.2455 um/px; bluer hematoxylin, weaker eosin.
    "icpr2014": Style("icpr2014", 0.2455, _unit((0.55, 0.77, 0.33)), _unit((0.16, 0.93, 0.33)),
                      (0.05, 0.07, 0.04), 0.75, 1.1, (456, 512)),
    # AMIDA13 / TUPAC16 auxiliary, 0.25 um/px; strong eosin, redder.
    "amida13": Style("amida13", 0.25, _unit((0.68, 0.69, 0.24)), _unit((0.05, 0.99, 0.16)),
                     (0.02, 0.04, 0.03), 1.2, 0.9, (512, 512)),
    # MIDOG (several scanners), 0.25 um/px; stain jittered more per image.
    "midog": Style("midog", 0.25, _unit((0.64, 0.72, 0.28)), _unit((0.08, 0.97, 0.20)),
                   (0.04, 0.05, 0.04), 1.0, 1.0, (480, 640)),
}

PHASES = ("prophase", "metaphase", "anaphase", "telophase")
MIMICS = ("lymphocyte", "apoptotic", "dark_nucleus")


@dataclass
class SynthImage:
    """One rendered image and its ground truth.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        points: ``(N, 2)`` float32 mitosis centroids x, y (px) = mean of each figure's mask pixels.
        labels: ``(H, W)`` int32, ``k + 1`` on the pixels of figure ``k``, 0 elsewhere.
        phases: the phase of each figure (one of :data:`PHASES`).
        mimics: ``(M, 2)`` float32 x, y of the mimics (hard negatives), px.
        mimic_kinds: the kind of each mimic (one of :data:`MIMICS`).
        mpp: micrometres per pixel.
    """

    image: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    phases: list[str]
    mimics: np.ndarray
    mimic_kinds: list[str]
    mpp: float

    def masks(self) -> list[np.ndarray]:
        """Per figure, ``(P, 2)`` int64 x, y of its mask pixels (the ICPR 2012 format)."""
        out = []
        for k in range(len(self.points)):
            ys, xs = np.nonzero(self.labels == k + 1)
            out.append(np.stack([xs, ys], 1).astype(np.int64))
        return out
