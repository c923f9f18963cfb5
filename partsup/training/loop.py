"""Training the two-branch model: plain functions, no trainer class hierarchy.

``L = L_weak(A and B) + L_strong(A only)`` (paper section III.C). Schedules:

- ``end2end``: one stage ``joint`` of ``train.iterations`` steps optimising both losses.
- ``stagewise``: stage ``weak`` (``train.weak_iterations`` steps, default half; weak loss only),
  then stage ``strong`` (the rest; the weak branch frozen, strong loss only, set-A batches).
- ``model.mode: weak_only`` always trains one ``weak`` stage (the SegMitos baseline).

Each stage has its own optimiser and scheduler (built from ``train.optimizer`` for the stage's
length). Every random draw of a step is seeded from ``(seed, iteration, rank)`` and the data
module draws its patches from ``(seed, index, epoch)``, so a run resumed from a checkpoint
continues exactly as the uninterrupted run would have (bit-identical on CPU).

Run folder (``--out``)::

    recipe.yaml          the resolved recipe
    metrics.jsonl        one JSON object per log step / validation
    checkpoints/iter-XXXXXXXX.pt   periodic checkpoints (the last ``train.keep_last`` kept)
    best.pt              the best validation F1 of the last stage (the final weights if there
                         is no validation split)
    loss.png, val_f1.png curves, written at the end
    train.lock           present while a training holds the folder (see :func:`lock_run_folder`)

One training at a time: a second ``fit`` on the same folder is refused, naming the PID of the
one that holds it. Checkpoints are written only when every weight is finite; rotation never
deletes the newest readable checkpoint; ``--resume`` says which unreadable checkpoint it skipped.

Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in
DistributedDataParallel (gloo on CPU, nccl on CUDA); each rank draws its own share of every
global batch; validation images are shared out and the counts summed; only rank 0 writes.
"""
from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import json
import math
import os
import random
import re
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn

from partsup.training.checkpoint import FORMAT, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from partsup.errors import CheckpointError, PartsupError, RecipeError
from partsup.model.partial import ModelOutput, build_model
from partsup.runtime import Dist, autocast, init_distributed, resolve_device
from partsup.output.atomic import write_text

CHECKPOINT_RE = re.compile(r"^iter-(\d{8})\.pt$")
#: recipe keys that may differ between a run and its resumption
RESUMABLE_CHANGES = {"device", "train.iterations", "train.val_every", "train.checkpoint_every",
                     "train.keep_last", "train.log_every", "data.num_workers", "description"}


class NonFiniteLoss(PartsupError):
    """The loss or the weights became NaN or infinite; training stops without touching the last
    checkpoint."""


class CheckpointWarning(UserWarning):
    """``--resume`` skipped an unreadable checkpoint (the message names it and why)."""


def non_finite(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold NaN or inf."""
    return [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()
            and not bool(torch.isfinite(v).all())]


# ------------------------------------------------------------------------------------------------
# Stages, devices, distribution
# ------------------------------------------------------------------------------------------------
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


def step_seed(seed: int, iteration: int, rank: int) -> int:
    """Seed of every random draw made during step ``iteration`` on ``rank`` (dropout, ...)."""
    return int(np.random.SeedSequence([int(seed), int(iteration), int(rank), 0x7A11])
               .generate_state(1)[0])


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------------
# Building
# ------------------------------------------------------------------------------------------------
@dataclass
class Losses:
    """The weak loss (every sample) and the strong loss (set A; None in weak_only mode)."""

    weak: nn.Module
    strong: nn.Module | None


def build_losses(recipe: dict[str, Any], registries: Any) -> Losses:
    def make(key: str) -> nn.Module:
        spec = dict(recipe["loss"][key])
        name = spec.pop("name")
        return registries.losses.build(name, where=f"loss.{key}", **spec)
    strong = None if recipe["model"]["mode"] == "weak_only" else make("strong")
    return Losses(make("weak"), strong)


@dataclass
class Run:
    """Everything a training run works with (built by :func:`build`)."""

    recipe: dict[str, Any]
    registries: Any
    model: nn.Module                 # the PartialModel
    losses: Losses
    data: TrainStream                # the training batches
    val: Any                         # validation samples (a reader) or None
    device: torch.device
    dist: Dist = field(default_factory=Dist)
    #: what a training step calls in the current stage: the model (``weak`` stage: its weak
    #: branch only, so the idle strong branch costs nothing), wrapped in DDP when distributed
    net: nn.Module | None = None


class _Positions(torch.utils.data.Dataset):
    """Global item stream of one stage: position ``p`` is item ``p % L`` of epoch ``p // L``
    of a :class:`partsup.data.dataset.PatchDataset` of ``L`` items per epoch."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:  # unbounded in principle; the batch sampler picks positions
        return 2 ** 62

    def __getitem__(self, p: int) -> dict[str, Any]:
        n = len(self.dataset)
        self.dataset.set_epoch(p // n)
        return self.dataset[p % n]


class TrainStream:
    """Batches for global iterations, sharded across ranks, from ``partsup.data.sampling``.

    Step ``i`` of a stage starting at ``s`` uses stream positions
    ``[(i - s) * G + r * B, (i - s) * G + (r + 1) * B)`` on rank ``r`` (``B`` = batch size per
    process, ``G = B * world``). Every item is a pure function of ``(seed, epoch, index)``, so
    the batch of step ``i`` never depends on what ran before: resuming is exact. Stage
    ``strong`` draws from set A only.
    """

    def __init__(self, recipe: dict[str, Any], registries: Any, dist: Dist) -> None:
        from partsup.data import dataset as pdata
        self.pdata = pdata
        self.data = pdata.build_training_data(recipe, registries)
        self.recipe, self.dist = recipe, dist
        self.batch_size = int(recipe["train"]["batch_size"])
        if self.batch_size < 1:
            raise RecipeError(f"train.batch_size: must be >= 1, got {self.batch_size}")
        self.workers = int(recipe["data"]["num_workers"])
        self.stage: Stage | None = None
        self._iter: Iterator[dict[str, Any]] | None = None
        self._next = -1

    def _dataset(self, stage: str) -> Any:
        if stage != "strong":
            return self.data.dataset
        d = self.data
        if d.strong is None:
            raise RecipeError("train.schedule: stagewise needs data.strong (set A) for its "
                              "strong stage")
        sampler = self.pdata.MixedSampler(d.strong, None, d.sampler.patch, d.sampler.augment,
                                          seed=d.sampler.seed)
        n = d.strong.num_points()
        length = max(1, math.ceil(n / max(d.sampler.patch.positive_fraction, 1e-6)))
        return self.pdata.PatchDataset(sampler, d.dataset.label_maker, length,
                                       label_maker_a=getattr(d.dataset, "label_maker_a", None))

    def set_stage(self, stage: Stage) -> None:
        self.stage, self._iter, self._next = stage, None, -1
        self._positions = _Positions(self._dataset(stage.name))

    def _indices(self, step: int) -> list[int]:
        assert self.stage is not None
        g = self.batch_size * self.dist.world
        first = (step - self.stage.start) * g + self.dist.rank * self.batch_size
        return list(range(first, first + self.batch_size))

    def batch(self, step: int) -> dict[str, Any]:
        """The batch of global iteration ``step`` for this rank (``partsup.data.sampling`` items
        collated: image ``(B, 3, H, W)`` float32 0..255, weak/strong ``(B, H, W)`` int64,
        is_strong ``(B,)`` bool)."""
        assert self.stage is not None, "set_stage first"
        if self._iter is None or step != self._next:
            steps = range(step, self.stage.end)
            loader = torch.utils.data.DataLoader(
                self._positions, batch_sampler=[self._indices(i) for i in steps],
                num_workers=self.workers, collate_fn=self.pdata.collate_patches,
                persistent_workers=False,
                generator=torch.Generator().manual_seed(step))  # leaves the global RNG alone
            self._iter = iter(loader)
        self._next = step + 1
        return next(self._iter)

    def position(self) -> dict[str, Any]:
        """Where the stream stands (informative: batches are recomputed from the iteration)."""
        return {"stage": None if self.stage is None else self.stage.name,
                "next_step": self._next, "batch_size": self.batch_size,
                "world": self.dist.world}


def read_split(recipe: dict[str, Any], registries: Any, key: str) -> Any:
    """The dataset reader of ``data.<key>`` (e.g. ``val``), or None when the recipe has none."""
    spec = recipe["data"].get(key)
    if not spec:
        return None
    spec = dict(spec)
    name = spec.pop("name")
    return registries.datasets.build(name, where=f"data.{key}", **spec)


def build(recipe: dict[str, Any], registries: Any, dist: Dist | None = None,
          device: torch.device | None = None) -> Run:
    """Model (seeded from ``recipe.seed``), losses, training and validation data, on a device."""
    dist = dist or Dist()
    device = device or resolve_device(recipe["device"], dist.local_rank)
    seed_all(int(recipe["seed"]))
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
    net = run.model.weak if stage.name == "weak" else run.model
    if run.dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [run.device.index] if run.device.type == "cuda" else None
        net = DDP(net, device_ids=ids, find_unused_parameters=True)
    run.net = net
    spec = dict(run.recipe["train"]["optimizer"])
    name = spec.pop("name")
    factory = run.registries.optimizers.get(name, where="train.optimizer")
    import inspect
    params = inspect.signature(factory).parameters
    supplied: dict[str, Any] = {"model": run.model}
    if "iterations" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        supplied["iterations"] = stage.length
    out = run.registries.optimizers.build(name, where="train.optimizer", supplied=supplied,
                                          **spec)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise PartsupError(f"optimizer {name!r} must return (optimizer, scheduler | None)")
    return out


# ------------------------------------------------------------------------------------------------
# One step
# ------------------------------------------------------------------------------------------------
def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
            for k, v in batch.items()}


def compute_losses(run: Run, batch: dict[str, Any], stage: str
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward one batch; returns ``(total, weak, strong)`` scalar losses (float32).

    ``batch``: ``image (B, 3, H, W)`` float32 RGB 0..255, ``weak (B, H, W)`` int64,
    ``strong (B, H, W)`` int64, ``is_strong (B,)`` bool. The strong target of set-B samples is
    ignored (255) whatever the data says.
    """
    x = run.model.normalize(batch["image"])
    if run.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    net = run.net if run.net is not None else run.model
    with autocast(run.device, bool(run.recipe["train"]["amp"])):
        out = net(x)
    if isinstance(out, torch.Tensor):  # the weak branch alone
        out = ModelOutput(out, None)
    zero = out.weak.new_zeros((), dtype=torch.float32)
    weak = run.losses.weak(out.weak.float(), batch["weak"]) if stage != "strong" else zero
    strong = zero
    if stage != "weak" and out.strong is not None and run.losses.strong is not None:
        is_a = batch["is_strong"].to(torch.bool).view(-1, 1, 1)
        target = torch.where(is_a, batch["strong"], torch.full_like(batch["strong"], 255))
        strong = run.losses.strong(out.strong.float(), target)
    return weak + strong, weak, strong


def train_step(run: Run, batch: dict[str, Any], stage: str, optimizer: torch.optim.Optimizer,
               scheduler: Any = None, stop: bool = False) -> tuple[dict[str, float], bool]:
    """One optimisation step. Returns ``({"loss", "loss_weak", "loss_strong", "lr"}, stop)``.

    ``stop`` is this rank's stop request; the returned flag is True if any rank asked (one
    all-reduce carries the losses and the flag). A NaN/inf loss on any rank raises
    :class:`NonFiniteLoss` on every rank before the optimiser touches the weights.
    """
    batch = to_device(batch, run.device)
    optimizer.zero_grad(set_to_none=True)
    total, weak, strong = compute_losses(run, batch, stage)
    stats = torch.stack([total.detach(), weak.detach(), strong.detach(),
                         torch.tensor(float(stop), device=total.device)])
    if run.dist.enabled:
        tdist.all_reduce(stats)
        stats[:3] /= run.dist.world
    values = stats.tolist()
    if not all(math.isfinite(v) for v in values[:3]):
        raise NonFiniteLoss(f"loss is not finite (total={values[0]}, weak={values[1]}, "
                            f"strong={values[2]})")
    total.backward()
    clip = run.recipe["train"]["grad_clip"]
    if clip:
        nn.utils.clip_grad_norm_([p for p in run.model.parameters() if p.grad is not None],
                                 float(clip))
    optimizer.step()
    lr = float(optimizer.param_groups[0]["lr"])
    if scheduler is not None:
        scheduler.step()
    return ({"loss": values[0], "loss_weak": values[1], "loss_strong": values[2], "lr": lr},
            values[3] > 0)


# ------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------
def validate(run: Run, stage: str = "joint") -> dict[str, Any] | None:
    """Detection F1 on the validation split (the detection pipeline of :mod:`partsup.inference.detector`).

    With ``train.val_sweep`` (default) the F1 is the best over the recipe's ``calibrate:`` grid
    of (w, s1, a1), i.e. what calibration would reach with these weights (maps are computed
    once per image, then swept, as ``partsup calibrate`` does); otherwise the ``detect:``
    values are used as they are. During a ``weak`` stage only the weak map counts (w = 1).
    Images are shared out across ranks and the counts summed.

    Returns ``Counts.as_dict()`` plus ``images``, ``w``, ``threshold``, ``s1``, ``a1`` (the grid point), or
    None when the recipe has no validation split.
    """
    if run.val is None:
        return None
    import tempfile

    from partsup.evaluation.calibration import MapCache, sweep
    from partsup.inference.detector import Detector, DetectParams

    params = DetectParams.from_dict(run.recipe["detect"])
    weak_map_only = stage == "weak" or run.model.mode == "weak_only"
    if weak_map_only:
        params.w = 1.0
    from partsup.evaluation.calibration import threshold_grid
    grid = dict(run.recipe["calibrate"]) if run.recipe["train"].get("val_sweep", True) else \
        {"w": [params.w], "s1": [params.s1], "a1": [params.a1], "threshold": None}
    grid["threshold"] = threshold_grid(grid.get("threshold"), params.threshold)
    w_grid = [1.0] if weak_map_only else grid["w"]
    detector = Detector(run.model, params, run.registries, device=run.device,
                        amp=bool(run.recipe["train"]["amp"]))
    n = len(run.val)
    mine = range(run.dist.rank, n, run.dist.world) if n >= run.dist.world else range(n)
    was_training = run.model.training
    try:
        with tempfile.TemporaryDirectory(prefix="partsup-val-") as folder:
            cache = MapCache(folder)
            images = []
            for i in mine:
                sample = run.val[i]
                images.append(cache.add(sample.id, *detector.maps(sample.image), sample.points,
                                        sample.mpp))
            rows = sweep(images, params, run.registries, _protocol(run), w_grid, grid["s1"],
                         grid["a1"], threshold=grid["threshold"]).rows if images else []
            del images
    finally:
        run.model.train(was_training)
    return _best_row(run, rows, len(mine), n, w_grid, grid)


def _best_row(run: Run, rows: list[Any], mine: int, n: int, w_grid: list[float],
              grid: dict[str, Any]) -> dict[str, Any]:
    """Sum each grid point's counts over ranks; the best F1 (first of ties, grid order)."""
    from partsup.evaluation.matching import Counts
    keys = [(float(w), t, float(s), float(a)) for w in w_grid for t in grid["threshold"]
            for s in grid["s1"] for a in grid["a1"]]
    counts = np.zeros((len(keys), 3), np.int64)
    index = {k: i for i, k in enumerate(keys)}
    for r in rows:
        c = r.counts
        counts[index[(float(r.w), r.threshold, float(r.s1), float(r.a1))]] = (c.tp, c.fp, c.fn)
    if run.dist.enabled and n >= run.dist.world:
        t = torch.from_numpy(counts).to(torch.float64)
        t = t.to(run.device) if run.device.type == "cuda" else t
        tdist.all_reduce(t)
        counts = t.cpu().numpy().astype(np.int64)
    totals = [Counts(*map(int, c)) for c in counts]
    best = max(range(len(keys)), key=lambda i: totals[i].f1)
    out: dict[str, Any] = totals[best].as_dict()
    out.update(images=n, w=keys[best][0], threshold=keys[best][1], s1=keys[best][2],
               a1=keys[best][3])
    return out


def _protocol(run: Run) -> Any:
    """The recipe's ``eval.protocol`` with its ``radius_um`` / ``radius_px`` overrides."""
    from partsup.evaluation.protocols import resolve_protocol
    return resolve_protocol(run.registries, None, None, run.recipe)


# ------------------------------------------------------------------------------------------------
# The run folder: recipe, metrics log, checkpoints, plots (rank 0 only)
# ------------------------------------------------------------------------------------------------
class RunDir:
    """Files of one run. Every write error is a one-line :class:`PartsupError`."""

    def __init__(self, root: str | Path, keep_last: int = 2) -> None:
        self.root = Path(root)
        self.keep_last = max(1, int(keep_last))

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.root / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    def checkpoint_path(self, iteration: int) -> Path:
        return self.checkpoints / f"iter-{iteration:08d}.pt"

    def existing(self) -> list[tuple[int, Path]]:
        """Periodic checkpoints, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoints.iterdir()
                 if (m := CHECKPOINT_RE.match(p.name))]
        return sorted(found)

    def prepare(self, recipe: dict[str, Any]) -> None:
        """Create the folder and write the resolved recipe (proves the folder is writable)."""
        from partsup.recipe import save_resolved
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            save_resolved(recipe, self.root)
        except OSError as exc:
            raise PartsupError(f"cannot write to the output folder {self.root}: "
                               f"{exc.strerror or exc}") from exc

    def log(self, record: dict[str, Any]) -> None:
        try:
            with self.metrics.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise PartsupError(f"cannot write {self.metrics}: {exc.strerror or exc}") from exc

    def records(self) -> list[dict[str, Any]]:
        if not self.metrics.is_file():
            return []
        out = []
        for line in self.metrics.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
        return out

    def truncate_log(self, iteration: int) -> None:
        """Drop records after ``iteration`` (written by a run that was then killed)."""
        kept = [r for r in self.records() if int(r.get("iteration", 0)) <= iteration]
        write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))

    def save(self, iteration: int, payload: dict[str, Any]) -> Path:
        """Write a periodic checkpoint (only when its weights are finite, else
        :class:`NonFiniteLoss`), then delete the older ones beyond the last ``keep_last``.

        Only checkpoints older than the one just written are deleted, so the newest readable
        checkpoint is never rotated away (not even by an unreadable file with a later number).
        """
        check_finite(payload["model"], iteration, self)
        path = save_checkpoint(self.checkpoint_path(iteration), payload)
        older = [p for i, p in self.existing() if i < iteration]
        for old in older[:max(0, len(older) - (self.keep_last - 1))]:
            with contextlib.suppress(OSError):
                old.unlink()
        return path

    def last_good(self) -> str:
        """Where a stopped run can be continued from, in words."""
        last = self.existing()
        return f"the last good checkpoint is {last[-1][1]}" if last else \
            "no checkpoint was written yet"

    def latest(self) -> dict[str, Any] | None:
        """The newest readable periodic checkpoint, or None. Each newer, unreadable one is
        skipped with a :class:`CheckpointWarning` naming the file and why."""
        errors = []
        for _, path in reversed(self.existing()):
            try:
                ckpt = load_checkpoint(path)
            except CheckpointError as exc:
                errors.append(str(exc))
                continue
            for text in errors:
                warnings.warn(f"--resume: skipped an unreadable checkpoint: {text}; resuming "
                              f"from {path}", CheckpointWarning, stacklevel=2)
            return ckpt
        if errors:
            raise CheckpointError(f"no readable checkpoint in {self.checkpoints}: {errors[0]}")
        return None


def check_finite(state: dict[str, Any], iteration: int, run_dir: RunDir) -> None:
    """Raise :class:`NonFiniteLoss` when a weight of ``state`` is NaN/inf (at ``iteration``)."""
    bad = non_finite(state)
    if bad:
        raise NonFiniteLoss(f"iteration {iteration}: the weights are not finite (NaN/inf in "
                            f"{len(bad)} tensor(s), e.g. {', '.join(bad[:3])}); training "
                            f"stopped, {run_dir.last_good()}. Lower train.optimizer.lr or set "
                            f"train.grad_clip")


@contextlib.contextmanager
def lock_run_folder(root: Path, enabled: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on the run folder ``root`` (created if needed) while the body runs.

    The lock is ``fcntl.flock`` on ``root/train.lock``, which holds the holder's PID; the
    operating system releases it when the process exits, however it exits. A second holder is
    refused at once with a :class:`PartsupError` naming that PID. A folder created here and
    still empty at the end (a failed start) is removed again.
    """
    if not enabled:
        yield
        return
    path = Path(root) / "train.lock"
    created = not Path(root).exists()
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        fd = _acquire(path, root)
    except OSError as exc:
        raise PartsupError(f"cannot write to the output folder {root}: "
                           f"{exc.strerror or exc}") from exc
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # before unlocking: a waiting process then locks a fresh file
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                Path(root).rmdir()  # a failed start: the folder it made is still empty


def _acquire(path: Path, root: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = _holder(path)
            raise PartsupError(f"{root} is in use by another training (PID {holder}); wait for "
                               f"it to end (or stop it), or choose another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its previous holder removed as we opened it
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, IndexError):
        return path.read_text().split()[0]
    return "unknown"


def plot_curves(run_dir: RunDir) -> list[Path]:
    """``loss.png`` (each loss vs iteration) and ``val_f1.png`` from ``metrics.jsonl``.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = run_dir.records()
    written: list[Path] = []
    train = [r for r in records if "loss" in r]
    if train:
        fig = Figure(figsize=(7, 4))
        ax = fig.add_subplot()
        its = [r["iteration"] for r in train]
        for key in ("loss", "loss_weak", "loss_strong"):
            vals = [r.get(key) for r in train]
            if any(v for v in vals):
                ax.plot(its, vals, label=key.replace("loss_", "L_") if key != "loss" else "L")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        if all(v > 0 for r in train for v in [r["loss"]]) and len(train) > 1:
            ax.set_yscale("log")
        ax.legend()
        ax.grid(alpha=0.3)
        FigureCanvasAgg(fig).print_png(str(run_dir.root / "loss.png"))
        written.append(run_dir.root / "loss.png")
    val = [r for r in records if "val_f1" in r]
    if val:
        fig = Figure(figsize=(7, 4))
        ax = fig.add_subplot()
        ax.plot([r["iteration"] for r in val], [r["val_f1"] for r in val], marker="o")
        ax.set_xlabel("iteration")
        ax.set_ylabel("validation F1")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        FigureCanvasAgg(fig).print_png(str(run_dir.root / "val_f1.png"))
        written.append(run_dir.root / "val_f1.png")
    return written


# ------------------------------------------------------------------------------------------------
# Progress display
# ------------------------------------------------------------------------------------------------
class Display:
    """A rich progress bar on a terminal (iteration, losses, it/s, ETA, last validation F1);
    plain lines every ``log_every`` iterations otherwise. Silent on ranks other than 0."""

    def __init__(self, console: Any, total: int, start: int, enabled: bool) -> None:
        self.console = console
        self.total, self.start = total, start
        self.enabled = enabled and console is not None
        self.val_f1: float | None = None
        self.progress = None
        self.task = None
        if self.enabled and getattr(console, "is_terminal", False):
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeRemainingColumn)
            self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                     console=console)
            self.progress.start()
            self.task = self.progress.add_task("train", total=total, completed=start, info="")

    def update(self, iteration: int, stats: dict[str, float], it_s: float, stage: str,
               log_line: bool) -> None:
        if not self.enabled:
            return
        eta = (self.total - iteration) / it_s if it_s > 0 else float("nan")
        val = "-" if self.val_f1 is None else f"{self.val_f1:.3f}"
        info = (f"{stage} L={stats['loss']:.4g} weak={stats['loss_weak']:.4g} "
                f"strong={stats['loss_strong']:.4g} {it_s:.2f} it/s val F1 {val}")
        if self.progress is not None:
            self.progress.update(self.task, completed=iteration, info=info)
        elif log_line:
            self.console.print(f"[{iteration}/{self.total}] {info} ETA {_hms(eta)}",
                               highlight=False, soft_wrap=True)

    def message(self, text: str) -> None:
        if self.enabled:
            (self.progress.console if self.progress is not None else self.console).print(
                text, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# ------------------------------------------------------------------------------------------------
# Signals
# ------------------------------------------------------------------------------------------------
class StopRequest:
    """SIGINT / SIGTERM set a flag (the loop saves a checkpoint and stops); a second SIGINT
    interrupts at once. Handlers are installed only in the main thread and restored on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        import threading
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    @property
    def requested(self) -> bool:
        return self.signum is not None


# ------------------------------------------------------------------------------------------------
# fit / resume
# ------------------------------------------------------------------------------------------------
@dataclass
class FitResult:
    """How a :func:`fit` call ended."""

    run_dir: Path
    iteration: int
    completed: bool
    best_f1: float | None
    best_path: Path | None
    interrupted_by: int | None = None  # the signal number when stopped by SIGINT/SIGTERM


@dataclass
class _State:
    iteration: int = 0
    best_f1: float | None = None
    best_iteration: int | None = None
    best_detect: dict[str, Any] | None = None  # the grid point of the best validation F1
    stage_name: str | None = None
    optimizer: Any = None
    scheduler: Any = None


def _payload(run: Run, state: _State, stage: Stage, optimizer: Any, scheduler: Any,
             training: bool = True) -> dict[str, Any]:
    """A checkpoint of the run at ``state.iteration`` (see :mod:`partsup.training.checkpoint`)."""
    world, batch = run.dist.world, int(run.recipe["train"]["batch_size"])
    payload: dict[str, Any] = {
        "format": FORMAT,
        "recipe": copy.deepcopy(run.recipe),
        "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
        "normalization": run.model.normalization,
        "detect": None,
        "iteration": state.iteration,
        "stage": stage.name,
        "best": {"metric": state.best_f1, "iteration": state.best_iteration,
                 "detect": state.best_detect},
        "sampler": {"iteration": state.iteration, "world": world, "batch_size": batch,
                    "position": _sampler_position(run)},
    }
    if training:
        payload["optimizer"] = optimizer.state_dict()
        payload["scheduler"] = scheduler.state_dict() if scheduler is not None else None
        payload["rng"] = rng_state()
    return payload


def _sampler_position(run: Run) -> Any:
    return run.data.position()


def _check_resumable(old: dict[str, Any], new: dict[str, Any]) -> None:
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
        raise RecipeError(f"--resume: the recipe differs from the checkpoint's at {key!r} "
                          f"({a.get(key)!r} -> {b.get(key)!r}); only "
                          f"{', '.join(sorted(RESUMABLE_CHANGES))} may change. Start a new run "
                          f"with another --out instead")


def fit(recipe: dict[str, Any], registries: Any, out: str | Path, *, resume: bool = False,
        console: Any = None, device: str | None = None) -> FitResult:
    """Train a recipe into the run folder ``out`` (see the module docstring).

    Args:
        recipe: a resolved recipe (:func:`partsup.recipe.load_recipe`).
        registries: the run's registries.
        out: the run folder. Without ``resume`` it must not hold checkpoints yet.
        resume: continue from the newest checkpoint in ``out`` (exactly where it stopped).
        console: a rich Console for progress (None: silent).
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
        with lock_run_folder(Path(out), enabled=dist.is_main):
            result = _fit(recipe, registries, Path(out), resume, console, dist)
        if dist.enabled and tdist.is_initialized():
            tdist.barrier()  # tear down together: gloo may abort a rank whose peer already left
        return result
    finally:
        if dist.owns_group and tdist.is_initialized():
            tdist.destroy_process_group()


def _fit(recipe: dict[str, Any], registries: Any, out: Path, resume: bool, console: Any,
         dist: Dist) -> FitResult:
    t = recipe["train"]
    run_dir = RunDir(out, t["keep_last"])
    ckpt = _starting_checkpoint(run_dir, recipe, resume)
    if ckpt is not None:  # the checkpoint's recipe rules, except the keys that may change
        for key in RESUMABLE_CHANGES:
            _set_path(ckpt["recipe"], key, _get_path(recipe, key))
        recipe = ckpt["recipe"]
    check_inputs(recipe)
    run = build(recipe, registries, dist)  # before writing anything: a failed start leaves
    if dist.is_main:                       # no half-made run folder
        run_dir.prepare(recipe)
        if ckpt is not None:
            run_dir.truncate_log(int(ckpt["iteration"]))
    stages = plan_stages(recipe)
    state = _State()
    if ckpt is not None:
        from partsup.model.partial import load_strict
        load_strict(run.model, ckpt["model"], "checkpoint")
        state.iteration = int(ckpt["iteration"])
        state.best_f1 = ckpt["best"]["metric"]
        state.best_iteration = ckpt["best"]["iteration"]
        state.best_detect = ckpt["best"].get("detect")
    display = Display(console, stages[-1].end, state.iteration, dist.is_main)
    try:
        with StopRequest() as stop:
            result = _loop(run, run_dir, stages, state, ckpt, display, stop)
    finally:
        display.close()
    if dist.is_main and result.completed:
        _finish(run, run_dir, state, stages[-1])
        plot_curves(run_dir)
    return result


def check_inputs(recipe: dict[str, Any]) -> None:
    """Raise one DataError naming every training dataset root and backbone weight file the
    recipe names that does not exist (with how to get each), instead of one at a time."""
    from partsup.errors import DataError
    problems = []
    for key in ("strong", "weak", "val"):
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


def _starting_checkpoint(run_dir: RunDir, recipe: dict[str, Any], resume: bool
                         ) -> dict[str, Any] | None:
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
    _check_resumable(ckpt["recipe"], recipe)
    return ckpt


def _get_path(d: dict[str, Any], dotted: str) -> Any:
    for k in dotted.split("."):
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def _loop(run: Run, run_dir: RunDir, stages: list[Stage], state: _State,
          ckpt: dict[str, Any] | None, display: Display, stop: StopRequest) -> FitResult:
    t = run.recipe["train"]
    seed = int(run.recipe["seed"])
    main = run.dist.is_main
    opt = sched = None
    stage: Stage | None = None
    window_start, window_it = time.perf_counter(), state.iteration
    it_s = 0.0
    stats: dict[str, float] = {"loss": 0.0, "loss_weak": 0.0, "loss_strong": 0.0}
    end = stages[-1].end
    while state.iteration < end:
        i = state.iteration
        if stage is None or i >= stage.end:
            stage = stage_at(stages, i)
            opt, sched = prepare_stage(run, stage)
            run.data.set_stage(stage)
            if ckpt is not None and ckpt.get("stage") == stage.name and ckpt["iteration"] == i:
                _restore_training_state(ckpt, opt, sched)
            elif stage.start == i and i > 0:
                display.message(f"stage {stage.name}: iterations {stage.start}..{stage.end}")
        batch = run.data.batch(i)
        seed_all(step_seed(seed, i, run.dist.rank))  # after the batch: loaders draw seeds too
        try:
            stats, stop_all = train_step(run, batch, stage.name, opt, sched, stop.requested)
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
            _validate_and_keep_best(run, run_dir, state, stage, stages, display)
        if stop_all:
            if main:
                path = run_dir.save(n, _payload(run, state, stage, opt, sched))
                display.message(f"stopped at iteration {n}: checkpoint {path}; continue with "
                                f"--resume")
            best = run_dir.best if run_dir.best.is_file() else None
            return FitResult(run_dir.root, n, False, state.best_f1, best,
                             interrupted_by=stop.signum or signal.SIGTERM)
        if main and (n % t["checkpoint_every"] == 0 or n == end):
            run_dir.save(n, _payload(run, state, stage, opt, sched))
    return FitResult(run_dir.root, state.iteration, True, state.best_f1, run_dir.best)


def _restore_training_state(ckpt: dict[str, Any], opt: Any, sched: Any) -> None:
    try:
        opt.load_state_dict(ckpt["optimizer"])
        if sched is not None and ckpt.get("scheduler") is not None:
            sched.load_state_dict(ckpt["scheduler"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"--resume: the optimiser state does not fit "
                              f"({type(exc).__name__}: {exc})") from exc
    if ckpt.get("rng"):
        set_rng_state(ckpt["rng"])


def _validate_and_keep_best(run: Run, run_dir: RunDir, state: _State, stage: Stage,
                            stages: list[Stage], display: Display) -> None:
    check_finite(run.model.state_dict(), state.iteration, run_dir)
    result = validate(run, stage.name)
    if result is None:
        return
    display.val_f1 = result["f1"]
    if run.dist.is_main:
        run_dir.log({"iteration": state.iteration, "stage": stage.name,
                     "val_f1": result["f1"], "val_precision": result["precision"],
                     "val_recall": result["recall"], "val_tp": result["tp"],
                     "val_fp": result["fp"], "val_fn": result["fn"],
                     "val_w": result["w"], "val_threshold": result["threshold"],
                     "val_s1": result["s1"], "val_a1": result["a1"]})
    final_stage = stage == stages[-1]
    if final_stage and (state.best_f1 is None or result["f1"] > state.best_f1):
        state.best_f1, state.best_iteration = result["f1"], state.iteration
        state.best_detect = {k: result[k] for k in ("w", "threshold", "s1", "a1")}
        if run.dist.is_main:
            save_checkpoint(run_dir.best, _payload(run, state, stage, None, None, training=False))
            display.message(f"iteration {state.iteration}: validation F1 {result['f1']:.3f} "
                            f"{_at(result)} (best) -> {run_dir.best}")
    elif run.dist.is_main:
        display.message(f"iteration {state.iteration}: validation F1 {result['f1']:.3f} "
                        f"{_at(result)}")


def _at(result: dict[str, Any]) -> str:
    return (f"(w={result['w']:g}, threshold={result['threshold']}, s1={result['s1']:g}, "
            f"a1={result['a1']:g})")


def _finish(run: Run, run_dir: RunDir, state: _State, stage: Stage) -> None:
    """Without a validation split, ``best.pt`` holds the final weights."""
    if run.val is None or state.best_f1 is None:
        check_finite(run.model.state_dict(), state.iteration, run_dir)
        save_checkpoint(run_dir.best, _payload(run, state, stage, None, None, training=False))
