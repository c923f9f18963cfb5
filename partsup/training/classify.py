"""``task: classify``: training a crop classifier through the one training loop.

The network is the recipe's ``classifier.model`` (a ``classifiers`` component,
:func:`partsup.model.classifier.build_classifier`), with one output per head of
``classifier.heads``. Training crops come from ``data.train`` (:mod:`partsup.data.crops`: its
points are positives, its hard negatives and the mined candidates of ``data.negatives.mined``
negatives of the verify head ``classifier.verify``), class-balanced and augmented; validation
crops from ``data.val`` (every point and hard negative, centred, not augmented). Crops are
``classifier.crop_um`` wide at ``classifier.mpp`` um/px (unset: the training samples' um/px,
recorded in the run).

Loss: the sum over heads of the cross-entropy of the head's logits (mean over the batch's
crops that the head does not ignore; targets -100 are ignored; 0 when the head ignores all).
Validation: per head, balanced accuracy, AUROC and the confusion matrix
(:mod:`partsup.evaluation.classification`); ``score`` = the mean balanced accuracy over the
heads, which picks ``best.pt``. Every rank validates every crop (crops are cheap), so no
counts are exchanged.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from partsup.data.crops import IGNORE, CropPlan, CropSet, build_crop_set, jitter_px
from partsup.data.normalize import resolve_normalize
from partsup.errors import DataError, RecipeError
from partsup.evaluation.classification import balanced_accuracy, confusion_matrix, macro_auroc
from partsup.manager import Registries
from partsup.model.classifier import CropSpec, build_classifier, crop_side, normalize_crops
from partsup.runtime import Dist, autocast, resolve_device
from partsup.training.run import (Run, check_inputs, read_split, samples_mpp, seed_all,
                                  stage_optimizer)
from partsup.training.stages import Stage
from partsup.training.stream import CropStream

__all__ = ["ClassifyTask", "classify_losses", "crop_plan", "validate_crops"]

#: crops per forward pass in validation
VAL_BATCH = 256


def crop_plan(recipe: dict[str, Any], mpp: float) -> CropPlan:
    """The crops of a classify recipe at ``mpp`` um/px (``classifier`` and
    ``data.negatives.jitter_um``), its heads and verify rule checked.

    Raises:
        RecipeError: bad heads, a verify rule naming an unknown head or class, or a verify
            head without exactly two classes.
    """
    section = recipe["classifier"]
    spec = CropSpec.from_section(section)
    verify = section.get("verify")
    head = positive = None
    if verify is not None:
        unknown = sorted(set(verify) - {"head", "positive"})
        if unknown or not {"head", "positive"} <= set(verify):
            raise RecipeError(f"classifier.verify: expected {{head, positive}}, got {verify!r}")
        head, positive = verify["head"], verify["positive"]
        if head not in spec.heads:
            raise RecipeError(f"classifier.verify.head: unknown head {head!r}; the heads are "
                              f"{', '.join(spec.heads)}")
        if positive not in spec.heads[head]:
            raise RecipeError(f"classifier.verify.positive: head {head!r} has no class "
                              f"{positive!r}; its classes: {', '.join(spec.heads[head])}")
        if len(spec.heads[head]) != 2:
            raise RecipeError(f"classifier.heads.{head}: a verify head has two classes "
                              f"(positive, negative), got {len(spec.heads[head])}")
    jitter = jitter_px(recipe["data"]["negatives"]["jitter_um"], mpp)
    return CropPlan(spec.heads, crop_side(spec.crop_um, mpp), float(mpp), jitter, head,
                    positive)


class MinedCandidates:
    """Mined candidates read from ``folder/<image id>.csv`` (or ``.geojson``; what ``partsup
    predict`` writes) on demand: ``mined.get(image_id)`` is an ``(M, 2)`` float64 x, y px
    array, or None when the image has no file.

    Raises:
        DataError: the folder is missing, or a file cannot be read (names it).
    """

    def __init__(self, folder: str, registries: Registries) -> None:
        self.root = Path(folder).expanduser()
        self.writers = getattr(registries, "writers", None)
        if not self.root.is_dir():
            raise DataError(f"data.negatives.mined: folder {self.root} not found (it holds "
                            f"<image id>.csv detections, e.g. from partsup predict)")

    def get(self, image_id: str) -> np.ndarray | None:
        from partsup.output.writers import read_detections
        for suffix in (".csv", ".geojson"):
            path = self.root / f"{image_id}{suffix}"
            if path.is_file():
                rows = read_detections(path, writers=self.writers)
                return np.asarray(rows, np.float64).reshape(-1, 3)[:, :2]
        return None


class ClassifyTask:
    """A crop classifier (``task: classify``); see the module docstring."""

    name = "classify"
    score_name = "score"
    val_key = "val_score"

    def check_inputs(self, recipe: dict[str, Any]) -> None:
        check_inputs(recipe)

    def build(self, recipe: dict[str, Any], registries: Registries, dist: Dist) -> Run:
        dist = dist or Dist()
        device = resolve_device(recipe["device"], dist.local_rank)
        seed_all(int(recipe["seed"]))
        recipe["data"]["normalize"] = resolve_normalize(recipe["data"].get("normalize"),
                                                        registries)
        section = recipe["classifier"]
        CropSpec.from_section(section)  # heads and crop_um, before anything is read
        model = build_classifier(section, registries).to(device)
        train = read_split(recipe, registries, "train")
        if section.get("mpp") is None:
            mpp, why = samples_mpp([train])
            if mpp is None:
                raise DataError(f"classifier.mpp is unset and cannot come from data.train: "
                                f"{why}; set classifier.mpp (the um/px the classifier works "
                                f"at)")
            section["mpp"] = mpp  # recorded in recipe.yaml and every checkpoint
        plan = crop_plan(recipe, section["mpp"])
        negatives = recipe["data"]["negatives"]
        mined = MinedCandidates(negatives["mined"], registries) if negatives["mined"] else None
        crops = build_crop_set(train, plan, hard=bool(negatives["hard"]), mined=mined,
                               check_classes=True, exclude_um=plan_exclude_um(section))
        data = CropStream(recipe, crops, dist)
        val_reader = read_split(recipe, registries, "val")
        val = None
        if val_reader is not None:
            val = build_crop_set(val_reader, dataclasses.replace(plan, jitter=0),
                                 hard=bool(negatives["hard"]), where="data.val")
            if not (val.targets != IGNORE).any():
                raise DataError("data.val: no validation crop has a target for any head")
        return Run(recipe, registries, model, None, data, val, device, dist)

    def prepare(self, run: Run) -> str | None:
        return None

    def stages(self, recipe: dict[str, Any]) -> list[Stage]:
        return [Stage("joint", 0, int(recipe["train"]["iterations"]))]

    def prepare_stage(self, run: Run, stage: Stage) -> tuple[torch.optim.Optimizer, Any]:
        run.model.train()
        return stage_optimizer(run, stage, run.model)

    def compute_losses(self, run: Run, batch: dict[str, Any], stage: str
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return classify_losses(run, batch)

    def validate(self, run: Run, stage: str) -> dict[str, Any] | None:
        return None if run.val is None else validate_crops(run, run.val)

    def val_record(self, result: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"val_score": result["score"], "val_crops": result["crops"]}
        for head, r in result["heads"].items():
            out.update({f"val_{head}_balanced_accuracy": _finite(r["balanced_accuracy"]),
                        f"val_{head}_auroc": _finite(r["auroc"]),
                        f"val_{head}_n": r["n"], f"val_{head}_confusion": r["confusion"]})
        return out

    def val_text(self, result: dict[str, Any]) -> str:
        heads = "; ".join(f"{h}: balanced accuracy {_fmt(r['balanced_accuracy'])}, AUROC "
                          f"{_fmt(r['auroc'])}" for h, r in result["heads"].items())
        return f"validation score {result['score']:.3f} ({heads})"

    def best_params(self, result: dict[str, Any]) -> dict[str, Any] | None:
        return None


def plan_exclude_um(section: Mapping[str, Any]) -> float:
    """Mined candidates closer than this (um) to a point of their image are left out: a
    quarter of the crop side (the candidate detector's hits, not false alarms)."""
    return float(section["crop_um"]) / 4.0


def classify_losses(run: Run, batch: dict[str, Any]
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(total, {"loss_<head>": ...})``: per head the cross-entropy over the batch's crops it
    does not ignore (``targets (B, H)`` int64, -100 ignored; 0 when it ignores all), summed.

    ``batch``: ``image (B, 3, S, S)`` float32 RGB 0..255, ``targets (B, H)`` int64.
    """
    x = normalize_crops(batch["image"], run.model)
    if run.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    net = run.net if run.net is not None else run.model
    with autocast(run.device, bool(run.recipe["train"]["amp"])):
        out = net(x)
    parts: dict[str, torch.Tensor] = {}
    targets = batch["targets"]
    for h, head in enumerate(run.recipe["classifier"]["heads"]):
        t = targets[:, h]
        n = (t != IGNORE).sum().clamp(min=1).to(torch.float32)
        parts[f"loss_{head}"] = F.cross_entropy(out[head].float(), t, ignore_index=IGNORE,
                                                reduction="sum") / n
    total = torch.stack(list(parts.values())).sum()
    return total, parts


@torch.no_grad()
def validate_crops(run: Run, crops: CropSet) -> dict[str, Any]:
    """Per head balanced accuracy, AUROC (:func:`partsup.evaluation.classification.macro_auroc`)
    and confusion matrix of the model on ``crops`` (centred, not augmented), and
    ``score`` = the mean balanced accuracy over the heads that have validation crops."""
    model = run.model
    was_training = model.training
    model.eval()
    probs: dict[str, list[np.ndarray]] = {h: [] for h in run.recipe["classifier"]["heads"]}
    images = crops.centre_crops()
    try:
        for start in range(0, len(crops), VAL_BATCH):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + VAL_BATCH]))
            x = normalize_crops(x.permute(0, 3, 1, 2).float().to(run.device), model)
            with autocast(run.device, bool(run.recipe["train"]["amp"])):
                out = model(x)
            for head in probs:
                probs[head].append(torch.softmax(out[head].float(), 1).cpu().numpy())
    finally:
        model.train(was_training)
    heads: dict[str, Any] = {}
    for h, (head, classes) in enumerate(run.recipe["classifier"]["heads"].items()):
        p = np.concatenate(probs[head]) if probs[head] else np.zeros((0, len(classes)))
        y = crops.targets[:, h]
        pred = p.argmax(axis=1) if len(p) else np.zeros(0, np.int64)
        heads[head] = {"balanced_accuracy": balanced_accuracy(y, pred, len(classes)),
                       "auroc": macro_auroc(y, p),
                       "confusion": confusion_matrix(y, pred, len(classes)).tolist(),
                       "n": int((y != IGNORE).sum())}
    values = [r["balanced_accuracy"] for r in heads.values()
              if math.isfinite(r["balanced_accuracy"])]
    return {"score": float(np.mean(values)) if values else 0.0, "heads": heads,
            "crops": len(crops)}


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _fmt(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "-"
