"""Training stages: which loss each global iteration optimises.

Schedules (``train.schedule``):

- ``end2end``: one stage ``joint`` of ``train.iterations`` steps optimising both losses.
- ``stagewise``: stage ``weak`` (``train.weak_iterations`` steps, default half; weak loss only),
  then stage ``strong`` (the rest; the weak branch frozen, strong loss only, set-A batches).
- ``model.mode: weak_only`` always trains one ``weak`` stage (the weak-labels-only baseline).

Iterations are counted globally across stages (``0 <= i < train.iterations``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from partsup.errors import RecipeError


@dataclass(frozen=True)
class Stage:
    """A stage of training: global iterations ``start <= i < end``.

    ``name``: ``joint`` (both losses), ``weak`` (weak loss only) or ``strong`` (strong loss only,
    weak branch frozen).
    """

    name: str
    start: int
    end: int

    @property
    def length(self) -> int:
        """Number of iterations in the stage."""
        return self.end - self.start


def plan_stages(recipe: dict[str, Any]) -> list[Stage]:
    """The stages of a run from ``train.schedule``, ``train.iterations``, ``model.mode``."""
    t = recipe["train"]
    total = int(t["iterations"])
    if total < 1:
        raise RecipeError(f"train.iterations: must be >= 1, got {total}")
    if recipe["model"]["mode"] == "weak_only":
        return [Stage("weak", 0, total)]
    if t["schedule"] == "end2end":
        return [Stage("joint", 0, total)]
    weak = total // 2 if t.get("weak_iterations") is None else int(t["weak_iterations"])
    if not 0 < weak < total:
        raise RecipeError(f"train.weak_iterations: must be between 1 and train.iterations - 1 "
                          f"({total - 1}), got {weak}")
    return [Stage("weak", 0, weak), Stage("strong", weak, total)]


def stage_at(stages: list[Stage], iteration: int) -> Stage:
    """The stage that runs step ``iteration`` (the last stage once training is done)."""
    for s in stages:
        if iteration < s.end:
            return s
    return stages[-1]
