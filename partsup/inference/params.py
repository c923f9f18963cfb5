"""Detection parameters: the recipe's ``detect:`` section as a dataclass, and the threshold rule.

Units: ``sigma``, ``tile``, ``overlap`` in pixels; ``a1`` in ``area_unit`` (px or um^2);
``w``, ``s1`` and a fixed ``threshold`` are probabilities.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from partsup.errors import RecipeError


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
