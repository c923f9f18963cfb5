"""Synthetic H&E high-power fields with mitotic figures, written in the real datasets' layouts.

The generator paints stain *concentrations* (hematoxylin H, eosin E) and turns them into RGB by
Beer-Lambert mixing: ``OD = H * h + E * e + od_background``, ``RGB = 255 * exp(-OD)``, where
``h`` and ``e`` are the stains' optical-density vectors of the chosen style (scanner / centre).

An image holds tissue (stroma with fibres, cellular nests, some lumen), pale vesicular nuclei,
**mitotic figures** in four phases (clumped prophase, metaphase plate, anaphase pair, telophase
pair) and **mimics** as dark and as large as the figures (lymphocytes, apoptotic bodies,
hyperchromatic round nuclei). Figures differ from mimics by texture and outline (threaded,
hairy, clumped chromatin; plates; pairs) while mimics are smooth and round, so a hematoxylin
threshold with a size window cannot tell them apart but a small CNN can.

Sizes are drawn in micrometres and converted with the style's um/px (``mpp``), so styles differ
in stain and scale. Everything is driven by one ``numpy.random.Generator``: output is a pure
function of ``seed``.

Public API: :data:`STYLES`, :func:`render` (one image in memory), :func:`generate` (a dataset
on disk that the registered readers load). ``partsup synth`` is the command-line front end.

Modules: ``styles`` (looks, object kinds, :class:`SynthImage`), ``paint`` (stain layers and the
objects painted into them), ``image`` (:func:`render`: one whole image), ``layouts`` (writers of
the real datasets' on-disk layouts), ``dataset`` (:func:`generate`) and ``baseline`` (the
hematoxylin-threshold detector the generator's difficulty is calibrated against).
"""
from __future__ import annotations

from partsup_mitosis.synth.baseline import hematoxylin, threshold_blobs
from partsup_mitosis.synth.dataset import (MANIFEST, STYLE_STREAM, SynthDataset, generate,
                                           image_rng, split_sizes)
from partsup_mitosis.synth.image import render
from partsup_mitosis.synth.layouts import LAYOUTS, Layout
from partsup_mitosis.synth.paint import Canvas
from partsup_mitosis.synth.styles import MIMICS, PHASES, STYLES, Style, SynthImage

__all__ = ["Canvas", "LAYOUTS", "Layout", "MANIFEST", "MIMICS", "PHASES", "STYLES", "STYLE_STREAM",
           "Style", "SynthDataset", "SynthImage", "generate", "hematoxylin", "image_rng", "render",
           "split_sizes", "threshold_blobs"]
