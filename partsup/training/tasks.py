"""What a training run trains: the recipe's ``task:``, each an object the one training loop
(:func:`partsup.training.loop.fit`) calls.

- ``segment`` (:class:`SegmentTask`): the two-branch detector; losses ``loss_weak`` and
  ``loss_strong``; validation F1 of the detection pipeline (:mod:`.validate`), which picks
  ``best.pt``.
- ``classify`` (:class:`partsup.training.classify.ClassifyTask`): a crop classifier; one loss
  per head; validation balanced accuracy and AUROC per head, their mean balanced accuracy
  picking ``best.pt``.

A task builds the :class:`partsup.training.run.Run`, plans its stages, prepares each stage's
optimiser, computes a batch's losses and validates; everything else (run folder, lock, exact
resume, checkpoints, progress display, signals) is the loop's, shared by every task.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch

from partsup.errors import RecipeError
from partsup.manager import Registries
from partsup.runtime import Dist
from partsup.training.classify import ClassifyTask
from partsup.training.run import Run, build, check_inputs, fill_mpp, prepare_stage
from partsup.training.stages import Stage, plan_stages
from partsup.training.step import segment_losses
from partsup.training.validate import validate

__all__ = ["TASKS", "ClassifyTask", "SegmentTask", "Task", "task_of"]


class Task(Protocol):
    """What the training loop asks of a task."""

    #: the recipe's ``task:`` value
    name: str
    #: the validation score's name in messages and the progress display (e.g. ``F1``)
    score_name: str
    #: the ``metrics.jsonl`` key of the validation score (its curve: ``<val_key>.png``)
    val_key: str

    def check_inputs(self, recipe: dict[str, Any]) -> None:
        """Refuse, in one error, every missing input file the recipe names."""

    def build(self, recipe: dict[str, Any], registries: Registries, dist: Dist) -> Run:
        """The model (seeded from ``recipe.seed``), the training stream and the validation
        data, on the run's device; nothing is written yet."""

    def prepare(self, run: Run) -> str | None:
        """Record what the run found out (e.g. the samples' um/px) in ``run.recipe``; a line
        to show, or None."""

    def stages(self, recipe: dict[str, Any]) -> list[Stage]:
        """The stages of the run, in order."""

    def prepare_stage(self, run: Run, stage: Stage) -> tuple[torch.optim.Optimizer, Any]:
        """Set the model up for ``stage``; its optimiser and scheduler."""

    def compute_losses(self, run: Run, batch: dict[str, Any], stage: str
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(total, {"loss_<part>": scalar})`` float32 losses of a batch."""

    def validate(self, run: Run, stage: str) -> dict[str, Any] | None:
        """Validation results with key ``score`` (higher is better), or None without a
        validation split."""

    def val_record(self, result: dict[str, Any]) -> dict[str, Any]:
        """The ``metrics.jsonl`` keys of a validation (``val_key`` among them)."""

    def val_text(self, result: dict[str, Any]) -> str:
        """A validation in words, e.g. ``validation F1 0.812 (w=0.5, ...)``."""

    def best_params(self, result: dict[str, Any]) -> dict[str, Any] | None:
        """What a checkpoint's ``best.detect`` records of the best validation (or None)."""


class SegmentTask:
    """The two-branch detector (``task: segment``): the functions of :mod:`.run`,
    :mod:`.stages`, :mod:`.step` and :mod:`.validate`, unchanged."""

    name = "segment"
    score_name = "F1"
    val_key = "val_f1"

    def check_inputs(self, recipe: dict[str, Any]) -> None:
        check_inputs(recipe)

    def build(self, recipe: dict[str, Any], registries: Registries, dist: Dist) -> Run:
        return build(recipe, registries, dist)

    def prepare(self, run: Run) -> str | None:
        return fill_mpp(run)

    def stages(self, recipe: dict[str, Any]) -> list[Stage]:
        return plan_stages(recipe)

    def prepare_stage(self, run: Run, stage: Stage) -> tuple[torch.optim.Optimizer, Any]:
        return prepare_stage(run, stage)

    def compute_losses(self, run: Run, batch: dict[str, Any], stage: str
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return segment_losses(run, batch, stage)

    def validate(self, run: Run, stage: str) -> dict[str, Any] | None:
        result = validate(run, stage)
        return None if result is None else {**result, "score": result["f1"]}

    def val_record(self, result: dict[str, Any]) -> dict[str, Any]:
        return {"val_f1": result["f1"], "val_precision": result["precision"],
                "val_recall": result["recall"], "val_tp": result["tp"],
                "val_fp": result["fp"], "val_fn": result["fn"],
                "val_w": result["w"], "val_threshold": result["threshold"],
                "val_s1": result["s1"], "val_a1": result["a1"]}

    def val_text(self, result: dict[str, Any]) -> str:
        return (f"validation F1 {result['f1']:.3f} (w={result['w']:g}, "
                f"threshold={result['threshold']}, s1={result['s1']:g}, a1={result['a1']:g})")

    def best_params(self, result: dict[str, Any]) -> dict[str, Any] | None:
        return {k: result[k] for k in ("w", "threshold", "s1", "a1")}


#: ``task:`` value -> the task
TASKS: dict[str, Task] = {"segment": SegmentTask(), "classify": ClassifyTask()}


def task_of(recipe: dict[str, Any]) -> Task:
    """The task of a resolved recipe (``segment`` when it names none: a recipe of an older
    partsup)."""
    name = recipe.get("task") or "segment"
    if name not in TASKS:
        raise RecipeError(f"task: expected one of {', '.join(TASKS)}, got {name!r}")
    return TASKS[name]
