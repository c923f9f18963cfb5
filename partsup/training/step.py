"""One training step: the losses of a batch, the backward pass, the optimiser step, and its seed.

``L = L_weak(A and B) + L_strong(A only)`` (paper section III.C): the weak loss counts on every
sample, the strong loss only on set-A samples (the strong target of set-B samples is ignored,
255). Losses are float32 scalars. Every random draw of step ``i`` on rank ``r`` is seeded from
``(seed, i, r)`` (:func:`step_seed`), so a resumed run draws what the uninterrupted one would.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn

from partsup.errors import PartsupError
from partsup.model.partial import ModelOutput
from partsup.runtime import autocast

if TYPE_CHECKING:
    from partsup.training.run import Run


class NonFiniteLoss(PartsupError):
    """The loss or the weights became NaN or infinite; training stops without touching the last
    checkpoint."""


def non_finite(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold NaN or inf."""
    return [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()
            and not bool(torch.isfinite(v).all())]


def step_seed(seed: int, iteration: int, rank: int) -> int:
    """Seed of every random draw made during step ``iteration`` on ``rank`` (dropout, ...)."""
    return int(np.random.SeedSequence([int(seed), int(iteration), int(rank), 0x7A11])
               .generate_state(1)[0])


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch with its tensors moved to ``device`` (other values as they are)."""
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


#: what a task's losses are: ``(run, batch, stage) -> (total, {"loss_<part>": scalar})``
LossFunction = Callable[..., "tuple[torch.Tensor, dict[str, torch.Tensor]]"]


def segment_losses(run: Run, batch: dict[str, Any], stage: str
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`compute_losses` as ``(total, {"loss_weak": ..., "loss_strong": ...})``."""
    total, weak, strong = compute_losses(run, batch, stage)
    return total, {"loss_weak": weak, "loss_strong": strong}


def train_step(run: Run, batch: dict[str, Any], stage: str, optimizer: torch.optim.Optimizer,
               scheduler: Any = None, stop: bool = False, losses: LossFunction | None = None
               ) -> tuple[dict[str, float], bool]:
    """One optimisation step. Returns ``({"loss", "loss_<part>" ..., "lr"}, stop)``: the
    parts of ``losses`` (default :func:`segment_losses`: ``loss_weak``, ``loss_strong``).

    ``stop`` is this rank's stop request; the returned flag is True if any rank asked (one
    all-reduce carries the losses and the flag). A NaN/inf loss on any rank raises
    :class:`NonFiniteLoss` on every rank before the optimiser touches the weights.
    """
    batch = to_device(batch, run.device)
    optimizer.zero_grad(set_to_none=True)
    total, parts = (losses or segment_losses)(run, batch, stage)
    names = list(parts)
    stats = torch.stack([total.detach(), *(parts[n].detach() for n in names),
                         torch.tensor(float(stop), device=total.device)])
    if run.dist.enabled:
        tdist.all_reduce(stats)
        stats[:-1] /= run.dist.world
    values = stats.tolist()
    if not all(math.isfinite(v) for v in values[:-1]):
        each = "".join(f", {n.removeprefix('loss_')}={v}" for n, v in zip(names, values[1:]))
        raise NonFiniteLoss(f"loss is not finite (total={values[0]}{each})")
    total.backward()
    clip = run.recipe["train"]["grad_clip"]
    if clip:
        nn.utils.clip_grad_norm_([p for p in run.model.parameters() if p.grad is not None],
                                 float(clip))
    optimizer.step()
    lr = float(optimizer.param_groups[0]["lr"])
    if scheduler is not None:
        scheduler.step()
    return ({"loss": values[0], **dict(zip(names, values[1:-1])), "lr": lr}, values[-1] > 0)
