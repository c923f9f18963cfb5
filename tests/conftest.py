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


@pytest.fixture(scope="session")
def amibr_root() -> Path:
    """The real AMi-Br crops (../shared/data/ami-br); the test is skipped without them."""
    root = SHARED_DATA / "ami-br"
    if not root.is_dir():
        pytest.skip(f"{root} is absent (the real AMi-Br crops sit beside the repository)")
    return root


# -- shared worlds (helpers.py holds the functions these fixtures call) ------------------------

@pytest.fixture
def tiny_regs():
    """Registries with tests/tiny_plugin.py loaded (its 'tiny' dataset and backbone)."""
    from partsup.manager import load
    return load(["tiny_plugin"], disabled=())


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The dark-disk backbone plugin (helpers.DARK_PLUGIN) written as an importable module; its
    name."""
    from helpers import DARK_PLUGIN
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "partsup_dark_test.py").write_text(DARK_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    return "partsup_dark_test"


@pytest.fixture
def checkpoint(tmp_path, plugin):
    """The dark-disk model's checkpoint (tmp_path / "dark.pt"): dark disks on pink are found."""
    from helpers import write_dark_checkpoint
    return write_dark_checkpoint(tmp_path / "dark.pt", plugin)


@pytest.fixture
def toy(tmp_path):
    """The toy evaluation world: (registries, an existing data root, a checkpoint with
    calibrated detect values)."""
    from helpers import make_checkpoint, toy_registries
    regs = toy_registries()
    root = tmp_path / "data"
    root.mkdir()
    ckpt = make_checkpoint(tmp_path / "run" / "model.pt", regs, root,
                           detect={"w": 0.0, "s1": 0.5, "a1": 10.0, "sigma": 1.0,
                                   "area_unit": "px"})
    return regs, root, ckpt


def pytest_collection_modifyitems(items):
    """Tests that take the ``shared_data`` or ``amibr_root`` fixture carry the
    ``needs_shared_data`` marker
    (``pytest -m "not needs_shared_data"`` leaves them out)."""
    for item in items:
        if {"shared_data", "amibr_root"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.needs_shared_data)
