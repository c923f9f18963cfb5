"""The AMi-Br mitotic-figure crops as detection data: ``ami-br`` (fields assembled so that a
figure's position carries no information; :mod:`.dataset`) and ``ami-br-crops`` (whole crops
side by side, for evaluation; :mod:`.crops`), with real figure masks (:mod:`.masks`).

Modules: ``metadata`` (metadata.csv, crop files, default root), ``splits`` (slides per split,
crowded figures, fields per slide), ``measure`` (hematoxylin, padding, figure radius),
``masks`` (the figure-mask rule), ``donors`` (decoded crops and what may be cut from them),
``geometry`` (disc radii, dihedral transforms), ``placement`` (where figures and decoys go),
``compose`` (the quilt and the pasted discs and windows), ``slides`` (what both views share),
``dataset`` and ``crops`` (the two registered readers).
"""
from __future__ import annotations

from partsup_mitosis.amibr import crops, dataset
from partsup_mitosis.amibr.crops import AmiBrCrops
from partsup_mitosis.amibr.dataset import AmiBrFields, AmiBrWarning, factory
from partsup_mitosis.amibr.metadata import DATA_ENV, Figure, default_root

__all__ = ["AmiBrCrops", "AmiBrFields", "AmiBrWarning", "DATA_ENV", "DATASETS", "Figure",
           "default_root", "factory"]

#: every dataset of the package: name -> factory (registered by the plugin)
DATASETS = {**dataset.DATASETS, **crops.DATASETS}
