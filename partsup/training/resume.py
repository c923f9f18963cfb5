"""The state of a run that a checkpoint holds, and how a run continues from one (``--resume``).

:func:`payload` makes the checkpoint dict of a run (layout in :mod:`partsup.checkpoint.payload`:
the model's part from :func:`partsup.checkpoint.payload.model_payload`, plus the run state);
:func:`starting_checkpoint` finds the newest readable checkpoint and refuses a recipe that
changed anything but :data:`RESUMABLE_CHANGES`; :func:`restore_training_state` puts the
optimiser, scheduler and random generators back where they were, so the resumed run is
bit-identical (on CPU) to the uninterrupted one.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from partsup.checkpoint.payload import model_payload
from partsup.errors import CheckpointError, PartsupError, RecipeError
from partsup.training.rundir import RunDir
from partsup.training.stages import Stage
from partsup.training.step import non_finite

if TYPE_CHECKING:
    from partsup.training.run import Run

#: recipe keys that may differ between a run and its resumption
RESUMABLE_CHANGES = {"device", "train.iterations", "train.val_every", "train.checkpoint_every",
                     "train.keep_last", "train.log_every", "data.num_workers", "description"}
#: recipe keys :func:`partsup.training.loop.fit` fills when the recipe leaves them unset
#: (``data.mpp``, ``classifier.mpp``: the samples' um/px); a resumed recipe that leaves them
#: unset keeps the checkpoint's value
FILLED_BY_FIT = {"data.mpp", "classifier.mpp"}
#: the normalizer's values fitted to its reference (a recipe gives the reference file only)
FITTED_PREFIX = "data.normalize."


@dataclass
class RunState:
    """How far a run got: iterations done and its best validation so far."""

    iteration: int = 0
    best_f1: float | None = None
    best_iteration: int | None = None
    best_detect: dict[str, Any] | None = None  # the grid point of the best validation F1


def payload(run: Run, state: RunState, stage: Stage, optimizer: Any, scheduler: Any,
            training: bool = True) -> dict[str, Any]:
    """A checkpoint of the run at ``state.iteration`` (see :mod:`partsup.checkpoint.payload`);
    without ``training`` it holds no optimiser, scheduler or generator state (``best.pt``)."""
    world, batch = run.dist.world, int(run.recipe["train"]["batch_size"])
    out: dict[str, Any] = {
        **model_payload(run.recipe, run.model),
        "iteration": state.iteration,
        "stage": stage.name,
        "best": {"metric": state.best_f1, "iteration": state.best_iteration,
                 "detect": state.best_detect},
        "sampler": {"iteration": state.iteration, "world": world, "batch_size": batch,
                    "position": run.data.position()},
    }
    if training:
        out["optimizer"] = optimizer.state_dict()
        out["scheduler"] = scheduler.state_dict() if scheduler is not None else None
        out["rng"] = rng_state()
    return out


def state_of(ckpt: dict[str, Any] | None) -> RunState:
    """The state a checkpoint records (a fresh one without a checkpoint)."""
    if ckpt is None:
        return RunState()
    best = ckpt["best"]
    return RunState(int(ckpt["iteration"]), best["metric"], best["iteration"], best.get("detect"))


def starting_checkpoint(run_dir: RunDir, recipe: dict[str, Any], resume: bool
                        ) -> dict[str, Any] | None:
    """The checkpoint a run starts from: None for a new run (refused when ``run_dir`` already
    holds checkpoints), else the newest readable one, whose recipe must match ``recipe`` and
    whose weights must be finite (:func:`check_finite_weights`)."""
    existing = run_dir.existing()
    if not resume:
        if existing:
            raise PartsupError(f"{run_dir.root} already holds checkpoints; continue it with "
                               f"--resume, or choose another --out")
        return None
    ckpt = run_dir.latest()
    if ckpt is None:
        raise CheckpointError(f"--resume: no checkpoint in {run_dir.checkpoints} "
                              f"(nothing to resume; run without --resume)")
    check_resumable(ckpt["recipe"], recipe)
    check_finite_weights(ckpt, run_dir)
    return ckpt


def check_finite_weights(ckpt: dict[str, Any], run_dir: RunDir) -> None:
    """Refuse to resume from a checkpoint whose weights hold NaN/inf (training never writes
    one, so the file was damaged or replaced): it is not a good checkpoint to go on from.

    Raises:
        CheckpointError: one line naming the file, the tensors and what to do.
    """
    bad = non_finite(ckpt.get("model") or {})
    if not bad:
        return
    path = run_dir.checkpoint_path(int(ckpt["iteration"]))
    earlier = [p for i, p in run_dir.existing() if i < int(ckpt["iteration"])]
    then = (f"move it out of {run_dir.checkpoints} to resume from {earlier[-1].name}"
            if earlier else "no earlier checkpoint is left: start a new run in another --out")
    raise CheckpointError(f"--resume: {path} is not a good checkpoint: its weights are not "
                          f"finite (NaN/inf in {len(bad)} tensor(s), e.g. {', '.join(bad[:3])}); "
                          f"{then}")


def check_resumable(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse to resume with a recipe that changes anything but :data:`RESUMABLE_CHANGES`."""
    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix: d}
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    a, b = flat(old), flat(new)
    for key in sorted(set(a) | set(b)):
        if key in RESUMABLE_CHANGES or key.endswith(".root") or a.get(key) == b.get(key):
            continue
        fitted = key.startswith(FITTED_PREFIX) and key not in (
            FITTED_PREFIX + "name", FITTED_PREFIX + "reference")
        if (key in FILLED_BY_FIT or fitted) and b.get(key) is None:
            continue
        if key not in a:  # a key the schema gained since the checkpoint; its default keeps
            continue      # the old behaviour, so a run of an older partsup still resumes
        raise RecipeError(f"--resume: the recipe differs from the checkpoint's at {key!r} "
                          f"({a.get(key)!r} -> {b.get(key)!r}); only "
                          f"{', '.join(sorted(RESUMABLE_CHANGES))} may change. Start a new run "
                          f"with another --out instead")


def resumed_recipe(ckpt: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's recipe with the :data:`RESUMABLE_CHANGES` keys taken from ``recipe``
    (the checkpoint's dict, changed in place)."""
    for key in RESUMABLE_CHANGES:
        _set_path(ckpt["recipe"], key, _get_path(recipe, key))
    return ckpt["recipe"]


def restore_training_state(ckpt: dict[str, Any], opt: Any, sched: Any) -> None:
    """Load the checkpoint's optimiser, scheduler and random generator states."""
    try:
        opt.load_state_dict(ckpt["optimizer"])
        if sched is not None and ckpt.get("scheduler") is not None:
            sched.load_state_dict(ckpt["scheduler"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"--resume: the optimiser state does not fit "
                              f"({type(exc).__name__}: {exc})") from exc
    if ckpt.get("rng"):
        set_rng_state(ckpt["rng"])


# -- random number generator states (only weights_only-safe types) -----------------------------

def rng_state() -> dict[str, Any]:
    """The Python, NumPy (legacy global) and torch (CPU and CUDA) RNG states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _get_path(d: dict[str, Any], dotted: str) -> Any:
    for k in dotted.split("."):
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value
