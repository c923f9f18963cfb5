"""The checkpoint layout: one dict, saved with ``torch.save`` and read with ``weights_only=True``.

Payload keys (format :data:`FORMAT`, ``partsup-checkpoint/1``):

- ``format``: the string :data:`FORMAT`.
- ``recipe``: the resolved recipe (plain dict, as :func:`partsup.recipe.load_recipe` returns).
- ``model``: the :class:`partsup.model.partial.PartialModel` state dict.
- ``normalization``: the input normalisation of the weights (``{"mean", "std", "scale", "bgr"}``).
- ``detect``: calibrated detection parameters (``w, s1, a1, sigma, area_unit``) or None.
- training state (absent or None in exported models; written and read by
  :mod:`partsup.training.resume`): ``optimizer``, ``scheduler`` (state dicts), ``iteration``
  (int, iterations done), ``rng`` (see :func:`partsup.training.resume.rng_state`), ``sampler``
  (the sampler position, a dict), ``best`` (``{"metric": float | None, "iteration": int}``),
  ``stage`` (``"weak"`` / ``"strong"`` / ``"joint"``).

Inference, evaluation and export read only :data:`MODEL_KEYS`. Everything in a payload is a
tensor, a number, a string, None, or a list/tuple/dict of those, so that :func:`torch.load` with
``weights_only=True`` reads it back (no pickled code).
"""
from __future__ import annotations

import copy
from typing import Any

from torch import nn

#: the format tag of this version of the checkpoint layout
FORMAT = "partsup-checkpoint/1"
#: the prefix every version's format tag starts with
FAMILY = "partsup-checkpoint/"
#: the keys that describe the model (what inference, evaluation and export read)
MODEL_KEYS = ("format", "recipe", "model", "normalization", "detect")


def model_payload(recipe: dict[str, Any], model: nn.Module,
                  detect: dict[str, Any] | None = None) -> dict[str, Any]:
    """The :data:`MODEL_KEYS` of a checkpoint of ``model``: a deep copy of ``recipe``, the
    state dict detached on the CPU, the model's ``normalization`` and ``detect``."""
    return {
        "format": FORMAT,
        "recipe": copy.deepcopy(recipe),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "normalization": model.normalization,
        "detect": detect,
    }
