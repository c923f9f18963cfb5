"""The summary of a prediction run: lines for the whole set (a plugin's, through
``partsup_count_summary``, else the core's total and count per mm^2; after a labelling second
look, one more line with the count and fraction of each class) and ``summary.csv``."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Sequence

from partsup.output.atomic import replacing
from partsup.prediction.counts import ImageCount, merge_classes, pool_counts
from partsup.prediction.result import Result
from partsup.slides.reader import is_slide


def count_lines(counts: Sequence[ImageCount], noun: str = "detections") -> list[str]:
    """The core's summary of a set's counts: total, images, area and the count per mm^2."""
    s = pool_counts(counts)
    return [f"{s.total} {noun} in {s.n_images} image(s), {s.area_mm2:.3f} mm²: "
            f"{s.per_mm2:.2f} per mm²"]


def class_line(classes: Mapping[str, int], total: int, noun: str = "detections"
               ) -> str | None:
    """``"N detections: a <class1> (x%), b <class2> (y%)"``: each class's count and its
    fraction of the labelled detections (``, k unlabelled`` when some carry no class); None
    when ``classes`` is empty (no labelling second look)."""
    if not classes:
        return None
    labelled = sum(classes.values())
    parts = [f"{n} {name}" + (f" ({100.0 * n / labelled:.1f}%)" if labelled else "")
             for name, n in classes.items()]
    if total > labelled:
        parts.append(f"{total - labelled} unlabelled")
    return f"{total} {noun}: {', '.join(parts)}"


def count_summary(pm: Any, counts: Sequence[ImageCount], options: Mapping[str, Any]
                  ) -> list[str] | None:
    """A plugin's summary lines for ``counts`` (``partsup_count_summary``), or None."""
    lines = pm.hook.partsup_count_summary(counts=list(counts), options=options)
    return None if lines is None else list(lines)


def summary_lines(results: Sequence[Result], options: Mapping[str, Any], pm: Any = None
                  ) -> list[str]:
    """The lines for the set's images (``partsup_count_summary`` of a plugin, else
    :func:`count_lines`; none when no image was counted: a whole slide's count is on its own
    lines), then each class's count and fraction
    (:func:`class_line`, after a labelling second look), then a note when ``options``'
    ``default_mpp`` was assumed for inputs that record no resolution."""
    counts = [r.count for r in results if r.count is not None]
    # a whole slide's count is on its own lines (and its plugins'): the set's lines pool images
    images = [r.count for r in results if r.count is not None and not is_slide(r.item.path)]
    lines: list[str] = []
    if images:
        extra = count_summary(pm, images, options) if pm is not None else None
        lines.extend(count_lines(images) if extra is None else extra)
    if counts:
        pooled = pool_counts(counts)
        by_class = class_line(pooled.classes, pooled.total)
        if by_class is not None:
            lines.append(by_class)
    assumed = sum(r.mpp_assumed for r in results)
    if assumed:
        lines.append(f"note: {options.get('default_mpp')} um/px assumed for {assumed} image(s) "
                     f"that record no resolution; set --mpp for correct per-mm² counts")
    return lines


def write_summary_csv(path: Path, results: Sequence[Result], model_sha256: str | None = None
                      ) -> Path:
    """One row per input (file, id, status, count, width and height px, mpp um/px, area mm^2,
    count per mm^2, seconds, error); after a labelling second look, then one ``count_<class>``
    column per class (empty for a failed input). Status: ``ok``, ``failed``, or
    ``interrupted`` (Ctrl-C stopped a slide: its count is of the tiles done).

    The last column, ``model_sha256``, is the SHA-256 of the model file the run used, on every
    row (empty when unknown)."""
    sha = model_sha256 or ""
    classes = list(merge_classes(r.count.classes for r in results if r.count is not None))
    with replacing(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["file", "id", "status", "count", "width", "height", "mpp", "area_mm2",
                    "per_mm2", "seconds", "error", *(f"count_{name}" for name in classes),
                    "model_sha256"])
        for r in results:
            c = r.count
            if c is None:
                w.writerow([r.item.path, r.item.id, "failed", "", "", "", "", "", "",
                            f"{r.seconds:.3f}", r.error, *([""] * len(classes)), sha])
            else:
                w.writerow([r.item.path, r.item.id, "interrupted" if r.interrupted else "ok",
                            c.count, c.width, c.height, c.mpp,
                            f"{c.area_mm2:.6f}", f"{c.per_mm2:.4f}", f"{r.seconds:.3f}", "",
                            *(c.classes.get(name, 0) for name in classes), sha])
    return path
