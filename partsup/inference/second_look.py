"""The second look: a crop classifier decides on, and labels, each candidate detection.

``image (H, W, 3) uint8, points (N, 2) px, mpp --crops (crop_um at the classifier's um/px,
bilinear, reflect borders)--> crop net --> {head: (N, C) probabilities}``, then
:meth:`SecondLook.apply`: keep a candidate when ``p(verify.positive) >= verify.threshold``
and give each kept one ``label`` (the most probable class of the label head) and ``probs``
(every class of every head). The net is any ``classifiers`` component
(:mod:`partsup.model.classifier`); a detector checkpoint carries it in its ``second_look``
section (:mod:`partsup.checkpoint.second_look`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from partsup.data.normalize import Normalizer, build_normalizer
from partsup.errors import PartsupError, PluginError
from partsup.manager import Registries
from partsup.model.classifier import CropSpec, extract_crops, normalize_crops
from partsup.model.heads import LabelRule, SecondLookParams, VerifyRule
from partsup.runtime import resolve_device
from partsup.types import Detection

__all__ = ["LabelRule", "SecondLook", "SecondLookParams", "VerifyRule", "load_second_look"]


class SecondLook:
    """A crop classifier and how to use it on candidates.

    Args:
        model: a crop net (``forward(x (B, 3, S, S) normalised) -> {head: logits (B, C)}``,
            ``normalization``), in eval mode.
        spec: crop side (um), the net's um/px and its heads (:class:`CropSpec`).
        params: the verify / label rules (:class:`SecondLookParams`).
        device: where the net runs.
        tta: average the probabilities over the 8 dihedral transforms of each crop.
        batch: crops per forward pass.
        normalizer: colour normalisation of the image before cropping (the classifier
            recipe's ``data.normalize``; None: none).
    """

    def __init__(self, model: nn.Module, spec: CropSpec, params: SecondLookParams,
                 device: str | torch.device = "cpu", *, tta: bool = False, batch: int = 64,
                 normalizer: Normalizer | None = None) -> None:
        params.check(spec.heads)
        if batch < 1:
            raise PartsupError(f"second look: batch must be >= 1, got {batch}")
        self.model = model
        self.spec = spec
        self.params = params
        self.device = resolve_device(device)
        self.tta = tta
        self.batch = batch
        self.normalizer = normalizer

    @property
    def classes(self) -> list[str]:
        """Every class of every head, in head order (the keys of a detection's ``probs``)."""
        return [c for classes in self.spec.heads.values() for c in classes]

    def probabilities(self, image: np.ndarray, points: np.ndarray | Sequence[Sequence[float]],
                      mpp: float, colour: dict[str, Any] | None = None
                      ) -> dict[str, np.ndarray]:
        """Class probabilities of the crops around ``points``.

        Args:
            image: ``(H, W, 3)`` uint8 RGB of ``mpp`` um/px.
            points: ``(N, 2)`` x, y px.
            colour: the image's estimate for :attr:`normalizer` (None: estimated from
                ``image``); unused without a normalizer.

        Returns:
            ``{head: (N, C_head) float32}``, rows summing to 1, classes in the head's order.

        Raises:
            PluginError: the net's output lacks a head or has the wrong number of classes.
        """
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        if self.normalizer is not None:
            image = self.normalizer.apply(image, self.normalizer.estimate(image)
                                          if colour is None else colour)
        out = {h: np.zeros((len(pts), len(c)), np.float32) for h, c in self.spec.heads.items()}
        for start in range(0, len(pts), self.batch):
            part = pts[start: start + self.batch]
            crops = extract_crops(image, part, mpp, self.spec.crop_um, self.spec.mpp)
            for head, p in self._forward(crops).items():
                out[head][start: start + len(part)] = p
        return out

    def _forward(self, crops: torch.Tensor) -> dict[str, np.ndarray]:
        """Softmax probabilities ``{head: (B, C)}`` of RGB 0..255 crops (TTA when set)."""
        x = normalize_crops(crops.to(self.device), self.model)
        views = [x] if not self.tta else [
            torch.flip(torch.rot90(x, k % 4, dims=(2, 3)), dims=(3,)) if k >= 4
            else torch.rot90(x, k, dims=(2, 3)) for k in range(8)]
        sums: dict[str, torch.Tensor] = {}
        with torch.inference_mode():
            for view in views:
                logits = self.model(view)
                for head, classes in self.spec.heads.items():
                    z = logits.get(head) if isinstance(logits, Mapping) else None
                    if z is None or tuple(z.shape) != (len(x), len(classes)):
                        got = None if z is None else tuple(z.shape)
                        raise PluginError(f"second look: the classifier's output for head "
                                          f"{head!r} should be ({len(x)}, {len(classes)}) "
                                          f"logits, got {got}")
                    p = torch.softmax(z.float(), dim=1)
                    sums[head] = p if head not in sums else sums[head] + p
        return {h: (s / len(views)).cpu().numpy().astype(np.float32) for h, s in sums.items()}

    def apply(self, detections: Sequence[Detection], probs: Mapping[str, np.ndarray], *,
              verify: bool = True) -> list[Detection]:
        """The ``detections`` the verify rule keeps (all without one, or with ``verify``
        False), each a copy with ``probs`` (class -> probability, every head) and ``label``
        (the label head's most probable class; None without a label rule); ``score`` and the
        rest unchanged. ``probs``: :meth:`probabilities` of the detections' points, in order."""
        keep = self.keep(probs, len(detections)) if verify else np.ones(len(detections), bool)
        names = [(h, j, c) for h, classes in self.spec.heads.items() for j, c in enumerate(classes)]
        out = []
        for i, det in enumerate(detections):
            if not keep[i]:
                continue
            values = {c: float(probs[h][i, j]) for h, j, c in names}
            label = None
            if self.params.label is not None:
                head = self.params.label.head
                label = self.spec.heads[head][int(np.argmax(probs[head][i]))]
            out.append(dataclasses.replace(det, label=label, probs=values))
        return out

    def keep(self, probs: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """``(n,)`` bool: the verify rule (``p(positive) >= threshold``); all True without one."""
        rule = self.params.verify
        if rule is None:
            return np.ones(n, bool)
        j = self.spec.heads[rule.head].index(rule.positive)
        return np.asarray(probs[rule.head][:, j] >= rule.threshold, bool).reshape(n)

    def run(self, image: np.ndarray, detections: Sequence[Detection], mpp: float,
            colour: dict[str, Any] | None = None) -> list[Detection]:
        """:meth:`apply` to ``detections`` (candidates of ``image``, px) with their crops'
        :meth:`probabilities`."""
        if not detections:
            return []
        points = np.array([[d.x, d.y] for d in detections], np.float64)
        return self.apply(detections, self.probabilities(image, points, mpp, colour))

    def classify(self, image: np.ndarray, points: np.ndarray | Sequence[Sequence[float]],
                 mpp: float, colour: dict[str, Any] | None = None) -> list[Detection]:
        """One detection per point (no filtering; area 0): ``label`` and ``probs`` filled,
        ``score`` the verify head's positive probability (without a verify rule: the label
        head's highest probability)."""
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        probs = self.probabilities(image, pts, mpp, colour)
        rule = self.params.verify
        if rule is not None:
            scores = probs[rule.head][:, self.spec.heads[rule.head].index(rule.positive)]
        else:
            assert self.params.label is not None  # SecondLookParams.check: one rule at least
            scores = probs[self.params.label.head].max(axis=1)
        given = [Detection(float(x), float(y), float(s), 0.0)
                 for (x, y), s in zip(pts, scores)]
        return self.apply(given, probs, verify=False)


def load_second_look(ckpt: Mapping[str, Any], registries: Registries,
                     device: str | torch.device = "cpu", source: str = "checkpoint", *,
                     tta: bool = False) -> SecondLook | None:
    """The :class:`SecondLook` a detector checkpoint dict carries (None when it has none):
    the net built through ``registries`` and loaded strictly, its params and its recipe's
    ``data.normalize``.

    Raises:
        CheckpointError: a malformed section or a state dict that does not fit the net;
        RecipeError / PluginError: bad params, an unknown classifier (prefixed with ``source``).
    """
    from partsup.checkpoint.second_look import load_second_look_model, second_look_section
    section = second_look_section(ckpt, source)
    if section is None:
        return None
    dev = resolve_device(device)
    net, spec, params = load_second_look_model(section, registries, dev, source)
    norm_spec = ((section["recipe"].get("data") or {}).get("normalize"))
    try:
        normalizer = build_normalizer(norm_spec, registries,
                                      "the second look's data.normalize")
    except PartsupError as exc:
        raise type(exc)(f"{source}: {exc}") from exc
    return SecondLook(net, spec, params, dev, tta=tta, normalizer=normalizer)
