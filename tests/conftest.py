"""Shared fixtures: small, CPU-only, deterministic."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# the datasets' folder (``${PARTSUP_DATA}`` in recipes, the ami-br reader's default root): the
# shared data beside the repository, unless the environment names another one
if SHARED_DATA.is_dir():
    os.environ.setdefault("PARTSUP_DATA", str(SHARED_DATA))


@pytest.fixture(autouse=True)
def _seed() -> None:
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def registries():
    """Fresh plugin manager + registries (bundled plugins via entry points)."""
    from partsup.manager import load
    return load(disabled=())


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (it sits beside the repository)")
    return SHARED_DATA
