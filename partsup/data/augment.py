"""Augmentation of training patches: the geometric pipeline of a :class:`Draw` and colour
changes (stain-space jitter, colour jitter), through albumentations.

Geometry runs on the image, the strong mask and a validity mask, with the points as keypoints;
every parameter was fixed by the draw (:mod:`partsup.data.sampling`), so the result is a pure
function of it.
"""
from __future__ import annotations

import math
import os
from typing import Any

# albumentations checks PyPI for a newer version when imported: no network calls at run time
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from partsup.data.sampling import AugmentConfig, Draw  # noqa: E402

def geometric(draw: Draw) -> A.Compose | None:
    """The albumentations pipeline of ``draw`` (fixed parameters: the draw already chose);
    None when the draw asks for no geometric change."""
    ops: list[A.BasicTransform] = []
    if draw.angle % 360:
        ops.append(A.Rotate(limit=(draw.angle, draw.angle), interpolation=cv2.INTER_LINEAR,
                            border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=1.0))
    if draw.transpose:
        ops.append(A.Transpose(p=1.0))
    if draw.vflip:
        ops.append(A.VerticalFlip(p=1.0))
    if draw.flip:
        ops.append(A.HorizontalFlip(p=1.0))
    if not ops:
        return None
    return A.Compose(ops, keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
                     seed=draw.seed)



class StainJitter(A.ImageOnlyTransform):
    """Stain-space jitter (Tellez et al.): in the optical-density space of a three-stain colour
    deconvolution (Ruifrok and Johnston; the matrix is ``skimage.color.hed_from_rgb``), each
    stain channel ``c`` becomes ``alpha_c * c + beta_c`` with ``alpha ~ U(1-s, 1+s)``,
    ``beta ~ U(-s, s)``; image ``(H, W, 3)`` uint8 RGB in and out."""

    def __init__(self, sigma: float = 0.05, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.sigma = float(sigma)

    def get_params(self) -> dict[str, Any]:
        g = self.random_generator
        return {"alpha": g.uniform(1 - self.sigma, 1 + self.sigma, 3),
                "beta": g.uniform(-self.sigma, self.sigma, 3)}

    def apply(self, img: np.ndarray, alpha: np.ndarray = np.ones(3),
              beta: np.ndarray = np.zeros(3), **params: Any) -> np.ndarray:
        from skimage.color import hed_from_rgb, rgb_from_hed
        log_adjust = math.log(1e-6)
        od = np.log(np.maximum(img[:, :, :3].astype(np.float32), 1.0) / 255.0) / log_adjust
        # cv2.transform applies a 3x3 matrix per pixel (m @ px), far cheaper than a BLAS call
        hed = cv2.transform(od, hed_from_rgb.T.astype(np.float32))
        hed = hed * alpha.astype(np.float32) + beta.astype(np.float32)
        out = np.exp(cv2.transform(hed, rgb_from_hed.T.astype(np.float32)) * log_adjust)
        return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("sigma",)


def colour(augment: AugmentConfig, seed: int) -> A.Compose | None:
    """The colour pipeline of ``augment`` (stain jitter, then colour jitter) seeded by ``seed``;
    None when both are off."""
    ops: list[A.BasicTransform] = []
    if augment.stain:
        ops.append(StainJitter(augment.stain_sigma, p=1.0))
    if augment.color_jitter:
        b, c, s, h = augment.jitter
        ops.append(A.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h, p=1.0))
    return A.Compose(ops, seed=seed) if ops else None
