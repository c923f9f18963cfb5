"""What a training run works with (:class:`Run`) and how it is built from a recipe.

:func:`build` makes the model (seeded from ``recipe.seed``, on its device), the losses, the
training stream and the validation reader; :func:`prepare_stage` freezes what a stage does not
train, wraps the model in DistributedDataParallel when distributed, and builds the stage's
optimiser and scheduler (for the stage's length in iterations).
"""
from __future__ import annotations

import inspect
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from partsup.data.normalize import NormalizedReader, build_normalizer, resolve_normalize
from partsup.errors import DataError, PartsupError
from partsup.manager import Registries
from partsup.model.partial import build_model
from partsup.registry import component_kwargs
from partsup.runtime import Dist, resolve_device
from partsup.training.stages import Stage
from partsup.training.stream import TrainStream


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


@dataclass
class Losses:
    """The weak loss (every sample) and the strong loss (set A; None in weak_only mode)."""

    weak: nn.Module
    strong: nn.Module | None


def build_losses(recipe: dict[str, Any], registries: Registries) -> Losses:
    """The recipe's ``loss.weak`` and ``loss.strong`` (not built in ``weak_only`` mode)."""
    def make(key: str) -> nn.Module:
        return registries.losses.build_component(recipe["loss"][key], f"loss.{key}")
    strong = None if recipe["model"]["mode"] == "weak_only" else make("strong")
    return Losses(make("weak"), strong)


@dataclass
class Run:
    """Everything a training run works with (built by :func:`build`)."""

    recipe: dict[str, Any]
    registries: Registries
    model: nn.Module                 # the PartialModel (task classify: the crop net)
    losses: Losses | None            # task classify: None (cross-entropy per head)
    data: TrainStream                # the training batches
    val: Any                         # validation samples (a reader; classify: a CropSet) or None
    device: torch.device
    dist: Dist = field(default_factory=Dist)
    #: what a training step calls in the current stage: the model (``weak`` stage: its weak
    #: branch only, so the idle strong branch costs nothing), wrapped in DDP when distributed
    net: nn.Module | None = None


def check_inputs(recipe: dict[str, Any]) -> None:
    """Raise one DataError naming every training dataset root and backbone weight file the
    recipe names that does not exist (with how to get each), instead of one at a time."""
    problems = []
    for key in ("strong", "weak", "train", "val"):
        section = (recipe.get("data") or {}).get(key)
        root = section.get("root") if isinstance(section, dict) else None
        if root and not Path(str(root)).expanduser().exists():
            problems.append(f"data.{key}.root {root} not found ({section.get('name')}: "
                            f"`partsup datasets` shows its layout and where to get the data)")
    weights = ((recipe.get("model") or {}).get("backbone") or {}).get("weights")
    if isinstance(weights, str) and not Path(weights).expanduser().exists():
        problems.append(f"model.backbone.weights {weights} not found (docs/backbones.md says "
                        f"how to get it; or train from random weights with --set "
                        f"model.backbone.weights=null)")
    if problems:
        raise DataError("cannot start training: " + "; ".join(problems))


def read_split(recipe: dict[str, Any], registries: Registries, key: str) -> Any:
    """The dataset reader of ``data.<key>`` (e.g. ``val``), colour-normalised by
    ``data.normalize``, or None when the recipe has none."""
    spec = recipe["data"].get(key)
    if not spec:
        return None
    reader = registries.datasets.build_component(spec, f"data.{key}")
    normalizer = build_normalizer(recipe["data"].get("normalize"), registries)
    return reader if normalizer is None else NormalizedReader(reader, normalizer)


def build(recipe: dict[str, Any], registries: Registries, dist: Dist | None = None,
          device: torch.device | None = None) -> Run:
    """Model (seeded from ``recipe.seed``), losses, training and validation data, on a device."""
    dist = dist or Dist()
    device = device or resolve_device(recipe["device"], dist.local_rank)
    seed_all(int(recipe["seed"]))
    # fit data.normalize to its reference once; the checkpoints record the fitted values
    recipe["data"]["normalize"] = resolve_normalize(recipe["data"].get("normalize"), registries)
    model = build_model(recipe["model"], registries).to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    losses = build_losses(recipe, registries)
    data = TrainStream(recipe, registries, dist)
    val = read_split(recipe, registries, "val")
    return Run(recipe, registries, model, losses, data, val, device, dist)


def prepare_stage(run: Run, stage: Stage) -> tuple[torch.optim.Optimizer, Any]:
    """Freeze what the stage does not train, wrap in DDP, build its optimiser and scheduler."""
    run.model.freeze_weak(stage.name == "strong")
    run.model.train()
    return stage_optimizer(run, stage, run.model.weak if stage.name == "weak" else run.model)


def stage_optimizer(run: Run, stage: Stage, net: nn.Module
                    ) -> tuple[torch.optim.Optimizer, Any]:
    """Wrap ``net`` (what a step calls) in DDP when distributed, set ``run.net``, and build
    the stage's optimiser and scheduler from ``train.optimizer`` for ``run.model``."""
    if run.dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [run.device.index] if run.device.type == "cuda" else None
        net = DDP(net, device_ids=ids, find_unused_parameters=True)
    run.net = net
    name, spec = component_kwargs(run.recipe["train"]["optimizer"], "train.optimizer")
    factory = run.registries.optimizers.get(name, where="train.optimizer")
    params = inspect.signature(factory).parameters
    supplied: dict[str, Any] = {"model": run.model}
    if "iterations" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        supplied["iterations"] = stage.length
    out = run.registries.optimizers.build(name, where="train.optimizer", supplied=supplied,
                                          **spec)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise PartsupError(f"optimizer {name!r} must return (optimizer, scheduler | None)")
    return out


#: training samples whose um/px spread over at most this fraction of their median are taken as
#: one resolution (e.g. 0.2456 and 0.25 um/px: 1.8 %), recorded as the median
MPP_TOLERANCE = 0.05


def fill_mpp(run: Run) -> str | None:
    """Record the resolution the run trains at: when the recipe's ``data.mpp`` is unset, set it
    (in ``run.recipe``: the resolved recipe and the checkpoints) to the um/px of the training
    samples (``data.strong`` and ``data.weak``) when they agree within :data:`MPP_TOLERANCE`
    (:func:`samples_mpp`). Returns one line when it took a median of differing values or left
    ``data.mpp`` unset (saying why), else None. Changes nothing the training computes."""
    data = run.recipe["data"]
    if data.get("mpp"):
        return None
    mpp, why = samples_mpp([run.data.data.strong, run.data.data.weak])
    if mpp is not None:
        data["mpp"] = mpp
        return why or None
    return (f"data.mpp not recorded: {why}; predict will assume the plugin's default um/px "
            f"(set data.mpp in the recipe to record one)")


def samples_mpp(readers: list[Any]) -> tuple[float | None, str]:
    """The um/px the samples of ``readers`` (None entries skipped) are at, and a line saying
    how, or None and why not, in words. One value: it, and ``""``. Values that all lie within
    :data:`MPP_TOLERANCE` of their median: that median (of an even count, the higher of the
    two middle samples, so always a sample's own value) and a line saying so. Reads each
    reader's ``mpp(i)`` when it has one (no image is decoded), else ``reader[i].mpp``."""
    values: list[float] = []
    for reader in readers:
        if reader is None:
            continue
        cheap = getattr(reader, "mpp", None)
        for i in range(len(reader)):
            value = cheap(i) if callable(cheap) else reader[i].mpp
            values.append(round(float(value), 6) if value and value > 0 else float("nan"))
    found = sorted(v for v in values if v == v)
    if not values:
        return None, "no training samples"
    if len(found) < len(values):
        return None, "some samples record no um/px"
    distinct = sorted(set(found))
    at = (f"{', '.join(f'{v:g}' for v in distinct[:5])}{' ...' if len(distinct) > 5 else ''} "
          f"um/px")
    if len(distinct) == 1:
        return distinct[0], ""
    median = statistics.median_high(found)
    if distinct[-1] - distinct[0] <= MPP_TOLERANCE * median:
        return median, (f"data.mpp recorded as {median:g} um/px, the median of the training "
                        f"samples (at {at}: within {MPP_TOLERANCE:.0%} of it); set data.mpp "
                        f"in the recipe to record another")
    return None, f"the samples are at {at}"
