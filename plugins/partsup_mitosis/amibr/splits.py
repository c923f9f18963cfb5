"""Which slides and figures an ``ami-br`` split holds and how its figures are spread over fields
(seeded; no pixels). Splits are by slide, per source, so train / val / test never share a slide."""
from __future__ import annotations

import math
import zlib
from collections.abc import Container
from pathlib import Path
from typing import Sequence

import numpy as np

from partsup.plugin import DataError
from partsup_mitosis.amibr.metadata import Figure

HPF_AREA = 2000.0 * 2000.0  # px^2 of the reference high-power field for ``density``
#: figures with another annotated figure this close (px) in the same slide are not pasted
CROWDED_PX = 52.0
#: a field plan: (slide index, field number k within the slide, the field's figures)
Field = tuple[int, int, list[Figure]]


def slide_code(name: str) -> int:
    """A stable integer for a slide name (seeding; independent of Python's hash salt)."""
    return zlib.crc32(name.encode())


def split_slides(figs: list[Figure], split: str, val_fraction: float, test_fraction: float,
                 split_seed: int) -> list[str]:
    """Slides of ``split``: per source, a seeded slide order filled to the fractions."""
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise DataError("ami-br: val_fraction + test_fraction must be in [0, 1)")
    per_source: dict[str, dict[str, int]] = {}
    for f in figs:
        per_source.setdefault(f.source, {}).setdefault(f.slide, 0)
        per_source[f.source][f.slide] += 1
    chosen: list[str] = []
    for s_i, source in enumerate(sorted(per_source)):
        counts = per_source[source]
        names = sorted(counts)
        order = [names[j] for j in
                 np.random.default_rng([split_seed, s_i]).permutation(len(names))]
        total = sum(counts.values())
        target = {"test": test_fraction * total, "val": val_fraction * total}
        got = {"test": 0, "val": 0}
        parts: dict[str, list[str]] = {"test": [], "val": [], "train": []}
        for name in order:  # a slide joins test / val while it half fits, else train
            part = next((p for p in ("test", "val")
                         if got[p] + counts[name] / 2 <= target[p]), "train")
            parts[part].append(name)
            if part != "train":
                got[part] += counts[name]
        chosen += names if split == "all" else parts[split]
    return sorted(chosen)


def select_figures(every: list[Figure], split: str, val_fraction: float, test_fraction: float,
                   split_seed: int, sources: Sequence[str] | None, labels: Sequence[str] | None,
                   metadata: Path) -> tuple[list[str], dict[str, list[Figure]]]:
    """The slides of ``split`` (sorted) and their figures of the wanted sources and labels.

    The split is made on every figure, so that filtering by source or label never moves a
    slide to another split (a source-only run must not train on the full test slides).
    """
    all_figs = [f for f in every if (sources is None or f.source in sources)
                and (labels is None or f.label in labels)]
    if not all_figs:
        raise DataError(f"{metadata}: no usable crop (sources={sources}, labels={labels})")
    kept = {f.slide for f in all_figs}
    slides = [s for s in split_slides(every, split, val_fraction, test_fraction, split_seed)
              if s in kept]
    by_slide: dict[str, list[Figure]] = {s: [] for s in slides}
    for f in all_figs:
        if f.slide in by_slide:
            by_slide[f.slide].append(f)
    return slides, by_slide


def crowded_figures(by_slide: dict[str, list[Figure]]) -> set[int]:
    """Indices of the figures with another annotated figure of the slide within CROWDED_PX."""
    out: set[int] = set()
    for figs in by_slide.values():
        xy = np.array([(f.x, f.y) for f in figs])
        if len(xy) < 2:
            continue
        d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) + np.eye(len(xy)) * 1e9
        out.update(figs[i].index for i in np.nonzero(d.min(1) < CROWDED_PX)[0])
    return out


def choose_mask_slides(mask_slides: int | Sequence[str] | None, slides: list[str],
                       by_slide: dict[str, list[Figure]], crowded: set[int], split: str,
                       name: str) -> list[str]:
    """The slides that serve masks, sorted.

    ``int k``: per source, the split's slides ranked by usable (not crowded) figures, most
    first (ties by name), taken in turn from each source (sources by name) until ``k``;
    ``None``: 6 that way; a list (or one name): those slides, which must belong to the split.
    """
    if isinstance(mask_slides, bool):
        raise DataError(f"{name}: mask_slides must be a count or slide names, "
                        f"got {mask_slides!r}")
    if isinstance(mask_slides, str):
        mask_slides = [mask_slides]
    if mask_slides is None or isinstance(mask_slides, int):
        k = 6 if mask_slides is None else int(mask_slides)
        if k < 1:
            raise DataError(f"{name}: mask_slides must be >= 1, got {k}")
        ranked: dict[str, list[str]] = {}
        for slide in slides:
            src = by_slide[slide][0].source
            ranked.setdefault(src, []).append(slide)

        def usable(slide: str) -> int:
            return sum(f.index not in crowded for f in by_slide[slide])
        queues = [sorted(v, key=lambda s: (-usable(s), s)) for _, v in sorted(ranked.items())]
        order = [q[j] for j in range(max(map(len, queues))) for q in queues if j < len(q)]
        return sorted(order[:k])
    names = [str(n) for n in mask_slides]
    unknown = [n for n in names if n not in by_slide]
    if unknown or not names:
        raise DataError(f"{name}: mask_slides {unknown or names} are not slides of "
                        f"split {split!r}")
    return sorted(set(names))


def plan_fields(slides: list[str], by_slide: dict[str, list[Figure]], skip: Container[int],
                per_field: float, seed: int) -> list[Field]:
    """Fields as (slide index, k, figures): each slide's figures (those whose index is not in
    ``skip``) spread uniformly at random over ``ceil(figures / per_field)`` fields (at least
    one; with ``per_field`` 0, one empty field per slide)."""
    plan = []
    for s_i, slide in enumerate(slides):
        usable = [f for f in by_slide[slide] if f.index not in skip]
        n = max(1, math.ceil(len(usable) / per_field)) if per_field > 0 else 1
        if per_field == 0:
            usable = []
        rng = np.random.default_rng([seed, 11, slide_code(slide)])
        where = rng.integers(n, size=len(usable))
        for k in range(n):
            plan.append((s_i, k, [f for f, w in zip(usable, where) if w == k]))
    return plan


def subset(plan: list[Field], seed: int, limit: int | None) -> list[Field]:
    """A seeded subset of ``limit`` fields of ``plan``, in plan order (all of them for None)."""
    if limit is None:
        return plan
    order = np.random.default_rng([seed, 12]).permutation(len(plan))
    return [plan[j] for j in sorted(order[:limit])]
