"""Where computation runs: the device, bf16 autocast, and torch.distributed under ``torchrun``.

One place for these, shared by training and inference, so a device name means the same thing
(and fails with the same one-line error) everywhere.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as tdist

from partsup.errors import PartsupError


@dataclass(frozen=True)
class Dist:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """Join the process group torchrun describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``).

    gloo on CPU, nccl on CUDA. A single process (no ``WORLD_SIZE`` or 1) gets ``Dist()``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if tdist.is_initialized():
        return Dist(tdist.get_rank(), tdist.get_world_size(), local, False)
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    tdist.init_process_group(backend="nccl" if cuda else "gloo")
    return Dist(rank, world, local, True)


def on_main(dist: Dist, check: Callable[[], None]) -> None:
    """Run ``check`` on rank 0 only and raise its :class:`PartsupError` (same class) on every rank.

    For checks with side effects (proving a folder writable creates and removes it): ranks that
    ran them side by side raced, one removing the folder another was writing a probe file into.
    One process: ``check()`` itself.
    """
    if not dist.enabled:
        check()
        return
    error: list[PartsupError | None] = [None]
    if dist.is_main:
        try:
            check()
        except PartsupError as exc:
            error[0] = exc
    tdist.broadcast_object_list(error, src=0)  # partsup's own exception, from its rank 0
    if error[0] is not None:
        raise error[0]


def resolve_device(device: str | torch.device = "auto",
                   local_rank: int | None = None) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; any other name as a ``torch.device``.

    ``local_rank`` (under torchrun) picks this rank's GPU for ``auto`` and a bare ``cuda``.

    Raises:
        PartsupError: an unknown device name, or a CUDA device where none is available.
    """
    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise PartsupError(f"device {str(device)!r}: expected auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PartsupError(f"device {str(device)!r}: no CUDA device is available here; "
                           f"use cpu (or auto)")
    if dev.type == "cuda":
        tune_cudnn()
    if dev.type == "cuda" and dev.index is None and local_rank is not None:
        return torch.device("cuda", local_rank)
    return dev


def tune_cudnn() -> None:
    """Turn cuDNN autotuning on before the first CUDA forward pass (``PARTSUP_CUDNN_BENCHMARK=0``
    leaves it off).

    On large inputs (2084x2084 px) cuDNN's heuristic picks kernels several times slower than the
    tuned ones, and switching autotuning on after a first forward did not recover them in a
    measured run, so every CUDA device partsup resolves turns it on at once. Each new input shape is tuned once
    (a fixed tile size keeps that to one or two shapes).
    """
    if os.environ.get("PARTSUP_CUDNN_BENCHMARK", "1") != "0":
        torch.backends.cudnn.benchmark = True


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA when ``amp``; a no-op context elsewhere (CPU runs stay fp32)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
