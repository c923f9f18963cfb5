"""Training: :func:`fit`, reading top-down; the parts live beside it.

What is trained is the recipe's task (:mod:`.tasks`): ``segment``, the two-branch model,
``L = L_weak(A and B) + L_strong(A only)`` (paper section III.C) in the stages of
:mod:`.stages` (``end2end``, ``stagewise``, ``weak_only``), or ``classify``, a crop classifier
(:mod:`.classify`); both run through this one loop. Each stage has its own optimiser and
scheduler (built from ``train.optimizer`` for the stage's length, :mod:`.run`). Every random
draw of a step is seeded from ``(seed, iteration, rank)`` (:mod:`.step`) and the data module
draws its patches from ``(seed, index, epoch)`` (:mod:`.stream`), so a run resumed from a
checkpoint (:mod:`.resume`) continues exactly as the uninterrupted run would have
(bit-identical on CPU).

The run folder (``--out``, :mod:`.rundir`) holds the resolved recipe, ``metrics.jsonl``, the
periodic checkpoints, ``best.pt`` and the curves (:mod:`.display`). One training at a time: a
second ``fit`` on the same folder is refused, naming the PID of the one that holds it.
SIGINT / SIGTERM (:mod:`.signals`) save a checkpoint, then stop.

Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in
DistributedDataParallel (gloo on CPU, nccl on CUDA); each rank draws its own share of every
global batch; validation images are shared out and the counts summed (:mod:`.validate`); only
rank 0 writes.
"""
from __future__ import annotations

import copy
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as tdist

from partsup.checkpoint.files import save_checkpoint
from partsup.manager import Registries
from partsup.model.partial import load_strict
from partsup.runtime import Dist, init_distributed
from partsup.training.display import Display, plot_curves
from partsup.training.resume import (RunState, payload, restore_training_state, resumed_recipe,
                                     starting_checkpoint, state_of)
from partsup.training.run import Run, seed_all
from partsup.training.rundir import RunDir, check_finite, lock_run_folder
from partsup.training.signals import StopRequest
from partsup.training.stages import Stage, stage_at
from partsup.training.step import NonFiniteLoss, step_seed, train_step
from partsup.training.tasks import Task, task_of


@dataclass
class FitResult:
    """How a :func:`fit` call ended."""

    run_dir: Path
    iteration: int
    completed: bool
    best_f1: float | None              # the best validation score (segment: F1)
    best_path: Path | None
    interrupted_by: int | None = None  # the signal number when stopped by SIGINT/SIGTERM
    score_name: str = "F1"             # what ``best_f1`` is (classify: ``score``)


def fit(recipe: dict[str, Any], registries: Registries, out: str | Path, *, resume: bool = False,
        console: Any = None, device: str | None = None) -> FitResult:
    """Train a recipe into the run folder ``out`` (see the module docstring).

    Args:
        recipe: a resolved recipe (:func:`partsup.recipe.load_recipe`).
        registries: the run's registries.
        out: the run folder. Without ``resume`` it must not hold checkpoints yet.
        resume: continue from the newest checkpoint in ``out`` (exactly where it stopped).
        console: a rich Console for state (None: silent).
        device: overrides ``recipe["device"]``.

    Returns:
        A :class:`FitResult`; ``completed`` is False when a signal stopped the run (a checkpoint
        was saved first).

    Raises:
        NonFiniteLoss: the loss became NaN/inf (the last periodic checkpoint is kept).
        PartsupError: unwritable output, full disk, a recipe that does not match ``--resume``.
    """
    recipe = copy.deepcopy(recipe)
    if device is not None:
        recipe["device"] = device
    dist = init_distributed(recipe["device"])
    try:
        with lock_run_folder(Path(out), enabled=dist.is_main, new_run=not resume):
            result = _fit(recipe, registries, Path(out), resume, console, dist)
        if dist.enabled and tdist.is_initialized():
            tdist.barrier()  # tear down together: gloo may abort a rank whose peer already left
        return result
    finally:
        if dist.owns_group and tdist.is_initialized():
            tdist.destroy_process_group()


def _fit(recipe: dict[str, Any], registries: Registries, out: Path, resume: bool, console: Any,
         dist: Dist) -> FitResult:
    """Start (or resume) the run in the locked folder, train it, then write ``best.pt`` and
    the curves."""
    run_dir = RunDir(out, recipe["train"]["keep_last"])
    ckpt = starting_checkpoint(run_dir, recipe, resume)
    if ckpt is not None:  # the checkpoint's recipe rules, except the keys that may change
        recipe = resumed_recipe(ckpt, recipe)
    task = task_of(recipe)
    task.check_inputs(recipe)
    run = task.build(recipe, registries, dist)  # before writing anything: a failed start
    mpp_note = task.prepare(run)  # leaves no half-made run folder; data.mpp from the samples
    if dist.is_main:
        run_dir.prepare(recipe)
        if ckpt is not None:
            run_dir.truncate_log(int(ckpt["iteration"]))
    stages = task.stages(recipe)
    if ckpt is not None:
        load_strict(run.model, ckpt["model"], "checkpoint")
    state = state_of(ckpt)
    display = Display(console, stages[-1].end, state.iteration, dist.is_main, task.score_name)
    if mpp_note:
        display.message(mpp_note)
    try:
        with StopRequest() as stop:
            result = _loop(run, task, run_dir, stages, state, ckpt, display, stop)
    finally:
        display.close()
    if dist.is_main and result.completed:
        _finish(run, run_dir, state, stages[-1])
        plot_curves(run_dir, task.val_key, f"validation {task.score_name}")
    return result


def _loop(run: Run, task: Task, run_dir: RunDir, stages: list[Stage], state: RunState,
          ckpt: dict[str, Any] | None, display: Display, stop: StopRequest) -> FitResult:
    """The steps from ``state.iteration`` to the end: each one logged, validated and
    checkpointed at its interval; a stop request saves a checkpoint and ends the loop."""
    t = run.recipe["train"]
    seed = int(run.recipe["seed"])
    main = run.dist.is_main
    opt = sched = None
    stage: Stage | None = None
    window_start, window_it = time.perf_counter(), state.iteration
    it_s = 0.0
    end = stages[-1].end
    while state.iteration < end:
        i = state.iteration
        if stage is None or i >= stage.end:
            stage = stage_at(stages, i)
            opt, sched = task.prepare_stage(run, stage)
            run.data.set_stage(stage)
            if ckpt is not None and ckpt.get("stage") == stage.name and ckpt["iteration"] == i:
                restore_training_state(ckpt, opt, sched)
            elif stage.start == i and i > 0:
                display.message(f"stage {stage.name}: iterations {stage.start}..{stage.end}")
        batch = run.data.batch(i)
        seed_all(step_seed(seed, i, run.dist.rank))  # after the batch: loaders draw seeds too
        try:
            stats, stop_all = train_step(run, batch, stage.name, opt, sched, stop.requested,
                                         losses=task.compute_losses)
        except NonFiniteLoss as exc:
            raise NonFiniteLoss(f"iteration {i + 1}: {exc}; training stopped, "
                                f"{run_dir.last_good()}. Lower train.optimizer.lr or set "
                                f"train.grad_clip") from None
        state.iteration = i + 1
        n = state.iteration
        log_now = n % t["log_every"] == 0 or n == end
        if log_now:
            now = time.perf_counter()
            it_s = (n - window_it) / max(now - window_start, 1e-9)
            window_start, window_it = now, n
            if main:
                run_dir.log({"iteration": n, "stage": stage.name, **stats,
                             "it_s": round(it_s, 4), "time": time.time()})
        display.update(n, stats, it_s, stage.name, log_now)
        if t["val_every"] and (n % t["val_every"] == 0 or n == end):
            _validate_and_keep_best(run, task, run_dir, state, stage, stages, display)
        if stop_all:
            if main:
                path = run_dir.save(n, payload(run, state, stage, opt, sched))
                display.message(f"stopped at iteration {n}: checkpoint {path}; continue with "
                                f"--resume")
            best = run_dir.best if run_dir.best.is_file() else None
            return FitResult(run_dir.root, n, False, state.best_f1, best,
                             interrupted_by=stop.signum or signal.SIGTERM,
                             score_name=task.score_name)
        if main and (n % t["checkpoint_every"] == 0 or n == end):
            run_dir.save(n, payload(run, state, stage, opt, sched))
    return FitResult(run_dir.root, state.iteration, True, state.best_f1, run_dir.best,
                     score_name=task.score_name)


def _validate_and_keep_best(run: Run, task: Task, run_dir: RunDir, state: RunState,
                            stage: Stage, stages: list[Stage], display: Display) -> None:
    """Validate; in the last stage a better score (the task's: segment F1) is saved as
    ``best.pt`` (rank 0)."""
    check_finite(run.model.state_dict(), state.iteration, run_dir)
    result = task.validate(run, stage.name)
    if result is None:
        return
    display.val_score = result["score"]
    if run.dist.is_main:
        run_dir.log({"iteration": state.iteration, "stage": stage.name,
                     **task.val_record(result)})
    final_stage = stage == stages[-1]
    if final_stage and (state.best_f1 is None or result["score"] > state.best_f1):
        state.best_f1, state.best_iteration = result["score"], state.iteration
        state.best_detect = task.best_params(result)
        if run.dist.is_main:
            save_checkpoint(run_dir.best, payload(run, state, stage, None, None,
                                                  training=False))
            display.message(f"iteration {state.iteration}: {task.val_text(result)} (best) "
                            f"-> {run_dir.best}")
    elif run.dist.is_main:
        display.message(f"iteration {state.iteration}: {task.val_text(result)}")


def _finish(run: Run, run_dir: RunDir, state: RunState, stage: Stage) -> None:
    """Without a validation split, ``best.pt`` holds the final weights."""
    if run.val is None or state.best_f1 is None:
        check_finite(run.model.state_dict(), state.iteration, run_dir)
        save_checkpoint(run_dir.best, payload(run, state, stage, None, None, training=False))
