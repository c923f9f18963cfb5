"""Stain normalisation of brightfield stains (H&E): Macenko's method, as the ``macenko``
colour normalizer (recipe ``data.normalize``, ``partsup predict --normalize``)."""
from __future__ import annotations

from typing import Any, Callable

from partsup.plugin import hookimpl


@hookimpl
def partsup_register_normalizers(register: Callable[..., Any]) -> None:
    register("macenko", "partsup_stain.macenko:Macenko",
             summary="Macenko stain vectors and concentrations (H&E)")
