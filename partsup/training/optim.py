"""Optimisers: ``factory(model, **kw) -> (optimizer, scheduler | None)``.

The scheduler (if any) is stepped once per training iteration. A factory may declare an
``iterations`` parameter: partsup then passes the number of iterations of the current training
stage itself (it is not a recipe key). Only parameters with ``requires_grad`` are optimised, so a
frozen layer (FCN-32s ``upscore``, or the weak branch in the second stage of stage-wise training)
is never touched; a parameter that gets no gradient in a step (``grad is None``) is skipped by the
torch optimisers, weight decay included.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn


def _is_no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases and 1-D tensors (normalisation scales/shifts)."""
    return name.endswith("bias") or param.ndim <= 1


def sgd_paper(model: nn.Module, lr: float = 1.0e-10, momentum: float = 0.99,
              weight_decay: float = 5.0e-4, bias_lr_mult: float = 2.0
              ) -> tuple[torch.optim.Optimizer, None]:
    """The FCN recipe (also the paper's, weak-only and two-branch): plain SGD at a fixed tiny
    learning rate.

    Weights: ``lr``, ``weight_decay``. Biases: ``bias_lr_mult * lr`` and no weight decay (Caffe's
    ``lr_mult: 2, decay_mult: 0``). Meant for a loss *summed* over pixels (``reduction: sum``)
    and batch 1; no scheduler (fixed learning rate).
    """
    weights, biases = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (biases if name.endswith("bias") else weights).append(p)
    groups: list[dict[str, Any]] = []
    if weights:
        groups.append({"params": weights, "lr": lr, "weight_decay": weight_decay})
    if biases:
        groups.append({"params": biases, "lr": lr * bias_lr_mult, "weight_decay": 0.0})
    if not groups:
        raise ValueError("sgd_paper: the model has no trainable parameters")
    return torch.optim.SGD(groups, lr=lr, momentum=momentum), None


def warmup_cosine(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """Learning-rate factor at step ``i``: linear warm-up over ``warmup`` steps, then a cosine
    decay from 1 to ``min_ratio`` at the last step, ``total - 1``."""
    warmup = max(0, min(int(warmup), int(total)))
    total = max(1, int(total))

    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        span = max(1, total - warmup - 1)  # the last step (total - 1) runs at the minimum
        t = min(1.0, (i - warmup) / span)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
    return factor


def adamw(model: nn.Module, lr: float = 1.0e-3, weight_decay: float = 1.0e-4,
          betas: list[float] | tuple[float, float] = (0.9, 0.999), warmup: int = 100,
          min_lr_ratio: float = 0.01, iterations: int = 1000
          ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The modern default: AdamW with linear warm-up (``warmup`` iterations) and cosine decay
    to ``min_lr_ratio * lr`` at the end of the stage. No weight decay on biases and 1-D
    (normalisation) parameters. Meant for a *mean* loss and batches of several patches."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if _is_no_decay(name, p) else decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    if not groups:
        raise ValueError("adamw: the model has no trainable parameters")
    opt = torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))  # type: ignore[arg-type]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(warmup, iterations, min_lr_ratio))
    return opt, sched


#: registered by :mod:`partsup.builtin` through ``partsup_register_optimizers``
OPTIMIZERS: dict[str, Callable[..., Any]] = {"sgd_paper": sgd_paper, "adamw": adamw}
