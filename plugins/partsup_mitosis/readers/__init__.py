"""Readers of the public mitosis datasets, each in its exact published layout.

``icpr2012`` (MITOS 2012, per-mitosis pixel lists), ``icpr2014`` (MITOS-ATYPIA-14),
``amida13`` (AMIDA13 and the TUPAC16 auxiliary set) and ``midog`` (MIDOG 2021 / 2022 / MIDOG++).
Each is ``factory(root, split="train", strict=True, **options)`` returning a lazy sequence of
:class:`partsup.types.Sample`; annotations are parsed up front (cheap accessors ``points(i)``,
``hard_negatives(i)``, ``size(i)`` never decode an image), images are decoded in ``reader[i]``.
Coordinates are converted to x = column, y = row, pixels. Split choices are recipe options and
are documented in docs/datasets.md.
"""
from __future__ import annotations

from partsup_mitosis.readers.amida13 import AMIDA13, AMIDA13_TEST_CASES
from partsup_mitosis.readers.icpr import (ICPR2012, ICPR2012_MPP, ICPR2014, ICPR2014_MPP,
                                          ICPR2014_TRAIN_CASES)
from partsup_mitosis.readers.midog import MIDOG

__all__ = ["AMIDA13", "AMIDA13_TEST_CASES", "DATASETS", "ICPR2012", "ICPR2012_MPP", "ICPR2014",
           "ICPR2014_MPP", "ICPR2014_TRAIN_CASES", "MIDOG"]

DATASETS = {"icpr2012": ICPR2012, "icpr2014": ICPR2014, "amida13": AMIDA13, "midog": MIDOG}
