"""A detector checkpoint's ``second_look`` section: a crop classifier run after the blob step.

Layout (a plain dict inside the checkpoint, read with ``torch.load(weights_only=True)`` like
the rest)::

    second_look:
      recipe:        the classifier run's resolved recipe (task classify; its ``classifier:``
                     section gives crop_um, mpp and heads, ``classifier.model`` the net)
      model:         the crop net's state dict (CPU tensors)
      normalization: the crop net's input normalisation ({mean, std, scale, bgr}) or None
      params:        {"verify": {head, positive, threshold} | None, "label": {head} | None,
                      "candidate": {detect keys of the candidate stage}}
                     (:class:`partsup.model.heads.SecondLookParams`)

:func:`attach_second_look` writes it (``partsup calibrate --second-look``),
:func:`second_look_section` reads and checks it, :func:`load_second_look_model` builds the net.
A checkpoint without the key (or with None) has no second look.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
from torch import nn

from partsup.checkpoint.files import _load_plugins
from partsup.errors import CheckpointError, PartsupError
from partsup.manager import Registries
from partsup.model.classifier import CropSpec, build_classifier
from partsup.model.heads import SecondLookParams
from partsup.model.partial import load_strict

__all__ = ["SECTION", "attach_second_look", "load_second_look_model", "second_look_section"]

#: the checkpoint key
SECTION = "second_look"


def attach_second_look(detector_ckpt: Mapping[str, Any], classifier_ckpt: Mapping[str, Any],
                       params: SecondLookParams | Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``detector_ckpt`` whose ``second_look`` is the classifier of
    ``classifier_ckpt`` (a classifier run's checkpoint dict: ``recipe`` with a ``classifier:``
    section, ``model``, ``normalization``) used as ``params`` say (a
    :class:`SecondLookParams` or its dict). ``detector_ckpt`` itself is not changed; an
    existing second look is replaced. Save the result with
    :func:`partsup.checkpoint.files.save_checkpoint`.

    Raises:
        CheckpointError: ``classifier_ckpt`` is not a classifier's checkpoint.
        RecipeError: ``params`` that do not fit the classifier's heads (one line).
    """
    recipe = classifier_ckpt.get("recipe")
    state = classifier_ckpt.get("model")
    if not isinstance(recipe, Mapping) or not isinstance(recipe.get("classifier"), Mapping):
        raise CheckpointError("the second look's checkpoint is not a classifier's: its recipe "
                              "has no 'classifier' section (train it with task: classify)")
    if not isinstance(state, Mapping):
        raise CheckpointError("the second look's checkpoint lacks its 'model' state dict")
    spec = CropSpec.from_section(recipe["classifier"])
    if isinstance(params, SecondLookParams):
        params.check(spec.heads)
        checked = params
    else:
        checked = SecondLookParams.from_dict(params, spec.heads)
    norm = classifier_ckpt.get("normalization")
    out = dict(detector_ckpt)
    out[SECTION] = {
        "recipe": copy.deepcopy(dict(recipe)),
        "model": {k: v.detach().cpu() for k, v in state.items()},
        "normalization": copy.deepcopy(norm) if isinstance(norm, dict) else None,
        "params": checked.to_dict(),
    }
    return out


def second_look_section(ckpt: Mapping[str, Any], source: str = "checkpoint"
                        ) -> dict[str, Any] | None:
    """The checked ``second_look`` section of a checkpoint dict, or None when it has none.

    Raises:
        CheckpointError: a section without a classifier recipe, a state dict or params.
    """
    section = ckpt.get(SECTION)
    if section is None:
        return None
    where = f"{source}: {SECTION}"
    if not isinstance(section, Mapping):
        raise CheckpointError(f"{where}: expected a mapping, got {type(section).__name__}")
    recipe = section.get("recipe")
    if not isinstance(recipe, Mapping) or not isinstance(recipe.get("classifier"), Mapping):
        raise CheckpointError(f"{where}: its recipe has no 'classifier' section")
    state = section.get("model")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor)
                                                 for v in state.values()):
        raise CheckpointError(f"{where}: 'model' must be a state dict of tensors")
    if not isinstance(section.get("params"), Mapping):
        raise CheckpointError(f"{where}: lacks 'params' (verify / label rules)")
    return dict(section)


def load_second_look_model(section: Mapping[str, Any], registries: Registries,
                           device: str | torch.device = "cpu", source: str = "checkpoint"
                           ) -> tuple[nn.Module, CropSpec, SecondLookParams]:
    """Build the crop net of a :func:`second_look_section` through ``registries`` (the
    classifier recipe's plugins imported first), load its state dict strictly, and read its
    crop spec and params.

    Returns:
        ``(net in eval mode on device, CropSpec, SecondLookParams)``.

    Raises:
        CheckpointError: a state dict that does not fit the built net (names the key).
        PartsupError (RecipeError, PluginError): a bad classifier section or params, an
        unknown classifier; each prefixed with ``source``.
    """
    where = f"{source}: {SECTION}"
    recipe = section["recipe"]
    _load_plugins({"recipe": recipe}, registries, where)
    try:
        spec = CropSpec.from_section(recipe["classifier"])
        params = SecondLookParams.from_dict(section["params"], spec.heads,
                                            where=f"{SECTION}.params")
        net = build_classifier(recipe["classifier"], registries, skip_weights=True)
    except PartsupError as exc:
        raise type(exc)(f"{source}: {exc}") from exc
    load_strict(net, section["model"], where)
    if isinstance(section.get("normalization"), dict):
        net.normalization = copy.deepcopy(section["normalization"])
    net.to(device)
    net.eval()
    return net, spec, params
