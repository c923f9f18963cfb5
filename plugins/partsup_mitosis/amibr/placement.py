"""Where an ``ami-br`` field's figures and decoys go: seeded darts on the field, no pixels.

Centres keep ``2 * (R_MAX + MAX_OFFSET)`` px apart and ``R_MAX + MAX_OFFSET + 2`` px from the
border, so that no two discs overlap and every disc stays inside the field.
"""
from __future__ import annotations

import numpy as np

from partsup_mitosis.amibr.geometry import MAX_OFFSET, R_MAX
from partsup_mitosis.amibr.metadata import Figure

#: the centres of one field: figures as (x, y, figure), decoys as (x, y), px
Centres = tuple[list[tuple[float, float, Figure]], list[tuple[float, float]]]


def place_field(seed: int, slide: int, k: int, figs: list[Figure], decoys: float,
                field_size: int, placement: int = 0) -> Centres:
    """The figure and decoy centres of field ``k`` of slide ``slide`` (its
    :func:`~partsup_mitosis.amibr.splits.slide_code`).

    Decoys (``Poisson(decoys) + 3 x figures`` of them) depend only on (seed, slide, k); the
    figures are placed after them from a stream that also takes ``placement`` (0: the field as
    listed; k > 0: the same figures elsewhere). A figure that finds no free spot goes to the spot
    farthest from the others and removes the decoys it would overlap.
    """
    rng = np.random.default_rng([seed, 13, slide, k])
    n_dec = int(rng.poisson(decoys)) + 3 * len(figs)
    taken: list[tuple[float, float]] = []
    decoy_xy = [p for p in (dart(rng, taken, field_size) for _ in range(n_dec)) if p is not None]
    out = []
    if figs:
        rng_f = np.random.default_rng([seed, 14, slide, k, placement])
        for f in figs:
            p = dart(rng_f, taken, field_size, force=True, decoys=decoy_xy)
            out.append((p[0], p[1], f))
    return out, decoy_xy


def dart(rng: np.random.Generator, taken: list[tuple[float, float]], field_size: int,
         force: bool = False, decoys: list | None = None) -> tuple[float, float] | None:
    """A disc centre (integer px) at least 2 * (R_MAX + offset) from the ``taken`` ones (it is
    appended to them); None after 200 misses unless ``force``.

    Centres keep ``R_MAX + MAX_OFFSET + 2`` px from the border: a disc (radius up to
    R_MAX, drawn in a box of R_MAX + 1, centred up to MAX_OFFSET from the figure) stays
    inside the field.
    """
    lo = R_MAX + MAX_OFFSET + 2
    hi = field_size - lo
    gap2 = (2 * (R_MAX + MAX_OFFSET)) ** 2
    for _ in range(200):
        x, y = float(rng.integers(lo, hi)), float(rng.integers(lo, hi))
        if all((x - a) ** 2 + (y - b) ** 2 >= gap2 for a, b in taken):
            taken.append((x, y))
            return x, y
    if not force:
        return None
    # crowded field: the spot farthest from the other figures; drop the decoys it overlaps
    others = np.asarray([p for p in taken if p not in (decoys or [])]).reshape(-1, 2)
    cand = rng.integers(lo, hi, size=(200, 2)).astype(float)
    if len(others):
        far = np.sqrt(((cand[:, None] - others[None]) ** 2).sum(-1)).min(1)
        cand = cand[np.argmax(far)][None]
    x, y = float(cand[0, 0]), float(cand[0, 1])
    if decoys is not None:
        for d in [d for d in decoys if (x - d[0]) ** 2 + (y - d[1]) ** 2 < gap2]:
            decoys.remove(d)
            taken.remove(d)
    taken.append((x, y))
    return x, y
