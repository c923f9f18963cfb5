"""``<id>.heatmap.png``: mitoses per field over a slide's thumbnail, as a pathologist reads it.

The slide is cut into square cells of one field's area (:func:`partsup_mitosis.counts.hpf_mm2`:
``pi * (D / 2) ** 2`` with ``--field-diameter D``, else ``--hpf-area``); each cell holding
mitoses is coloured by its count on a sequential scale from 0 (no colour) through pale (1) to
dark (the slide's highest count, at least :data:`MIN_TOP`), one colour per count up to
:data:`MAX_STEPS`, integer ticks; empty cells are left out, so the tissue shows as it is. The
hotspot (solid red) and the ``--roi`` (dashed black) are outlined in colours the scale does not
use, a scale bar gives millimetres and the title the counts.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from partsup.plugin import density_map, replacing

#: colour of the counts: ColorBrewer's single-hue sequential blues, whose lightness falls
#: steadily from pale (1) to dark (the top); H&E holds no blue, so cells never read as stain
CMAP = "Blues"
#: the hotspot's outline: a red that neither the scale nor H&E pink holds
HOTSPOT_COLOUR = "#ff1f1f"
#: the ROI's outline (dashed black)
ROI_COLOUR = "#111111"
#: the scale runs to the slide's highest count per field, and at least to this, so that a
#: slide with a few mitoses does not look dark
MIN_TOP = 5
#: at most this many distinct colours (one per count); above it the scale is continuous
MAX_STEPS = 12


def scale_bar_mm(width_mm: float) -> float:
    """A round length (mm) near a fifth of ``width_mm``: 1, 2 or 5 times a power of ten."""
    target = max(width_mm / 5.0, 1e-6)
    power = 10.0 ** math.floor(math.log10(target))
    return max(m * power for m in (1, 2, 5) if m * power <= target)


def write_heatmap(path: Path, slide: Any, win: Any, field_mm2: float, title: str,
                  roi: Sequence[Sequence[np.ndarray]] | None = None) -> Path:
    """Write the heatmap PNG of ``slide`` (:func:`heatmap_figure`) to ``path``."""
    import matplotlib.pyplot as plt
    fig = heatmap_figure(slide, win, field_mm2, title, roi)
    with replacing(path, "wb") as fh:  # a link planted at the name is replaced
        fig.savefig(fh, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def heatmap_figure(slide: Any, win: Any, field_mm2: float, title: str,
                   roi: Sequence[Sequence[np.ndarray]] | None = None) -> Any:
    """The heatmap of ``slide`` (a :class:`partsup.plugin.SlideOutput`) as a matplotlib
    Figure (Agg): counts per square cell of ``field_mm2`` mm^2 over the thumbnail, the hotspot
    ``win`` (``x, y, width, height`` level-0 px, and ``count``) and the ``roi`` polygons
    (``[exterior, *holes]`` of ``(N, 2)`` level-0 px) outlined, a scale bar in mm, ``title``
    above and the colour bar (its last axes) at the right."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    cell = math.sqrt(field_mm2) * 1000.0 / slide.mpp  # level-0 px
    grid = density_map(slide.xy[:, :2], slide.width, slide.height, cell)
    top = max(MIN_TOP, int(grid.max()))
    s = slide.scale  # thumbnail px per level-0 px
    h, w = slide.thumbnail.shape[:2]
    fig, ax = plt.subplots(figsize=(7.5, 7.5 * h / max(w, 1) + 0.6), dpi=120)
    ax.imshow(slide.thumbnail)
    base = plt.get_cmap(CMAP)
    none = [[1.0, 1.0, 1.0, 0.0]]  # 0 has no colour, as the empty cells
    if top < MAX_STEPS:  # one colour per count, 1 .. top
        cmap = ListedColormap(np.concatenate([none, base(np.linspace(0.22, 1.0, top))]))
        norm = BoundaryNorm(np.arange(-0.5, top + 1), cmap.N)
        ticks: list[int] | None = list(range(top + 1))
    else:  # continuous from 0 (the first 1/256 of the bar) to the top
        cmap = ListedColormap(np.concatenate([none, base(np.linspace(0.22, 1.0, 255))]))
        norm, ticks = Normalize(0, top), None
    xs = np.arange(grid.shape[1] + 1) * cell * s
    ys = np.arange(grid.shape[0] + 1) * cell * s
    mesh = ax.pcolormesh(xs, ys, np.ma.masked_equal(grid, 0), cmap=cmap, norm=norm, alpha=0.85,
                         edgecolors=(1, 1, 1, 0.6), linewidth=0.4)
    handles = [Line2D([], [], color=HOTSPOT_COLOUR, linewidth=2.5,
                      label=f"hotspot: {win.count} mitoses")]
    ax.add_patch(plt.Rectangle((win.x * s, win.y * s), win.width * s, win.height * s,
                               fill=False, edgecolor=HOTSPOT_COLOUR, linewidth=2.5, clip_on=False,
                               zorder=4))
    for rings in roi or []:
        ring = np.asarray(rings[0], np.float64)
        ax.plot(ring[:, 0] * s, ring[:, 1] * s, color=ROI_COLOUR, linewidth=1.8,
                linestyle=(0, (5, 3)), clip_on=False, zorder=3)
    if roi:
        handles.append(Line2D([], [], color=ROI_COLOUR, linewidth=1.8, linestyle=(0, (5, 3)),
                              label="ROI"))
    bar = scale_bar_mm(slide.width * slide.mpp / 1000.0)
    ax.add_artist(AnchoredSizeBar(ax.transData, bar * 1000.0 / slide.mpp * s,
                                  f"{bar:g} mm", "lower left", pad=0.4, sep=4,
                                  size_vertical=max(2.0, h / 150), color="black",
                                  frameon=True, fontproperties={"size": 9}))
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.9)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():  # the slide's edge
        spine.set_edgecolor("0.6")
    ax.set_title(title, fontsize=10)
    bar_ax = fig.colorbar(mesh, ax=ax, fraction=0.04, pad=0.02, ticks=ticks)
    if ticks is None:
        bar_ax.locator = MaxNLocator(integer=True)
        bar_ax.update_ticks()
    bar_ax.set_label(f"mitoses per field (square cells of one HPF, {field_mm2:.3f} mm²)",
                     fontsize=9)
    return fig
