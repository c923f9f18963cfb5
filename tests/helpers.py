"""What several test modules share: plain functions and constants (fixtures are in conftest.py).

Test modules import from here (``from helpers import ...``; pytest puts tests/ on ``sys.path``)
and never from one another (tests/test_layout.py checks). The worlds the tests build:

- the **tiny recipe** (:func:`tiny_recipe`, :data:`TINY`): tests/tiny_plugin.py's dataset and
  backbone, 32-px patches, a few CPU iterations;
- the **dark-disk model** (:data:`DARK_PLUGIN`, :func:`he_like`, :func:`run_predict`): a backbone
  plugin whose p(mitosis) = sigmoid(20 * darkness - 12), so dark disks on pink are found (the
  ``plugin`` and ``checkpoint`` fixtures of conftest.py write it);
- the **toy evaluation world** (:func:`toy_registries`, :func:`make_checkpoint`,
  :func:`run_cli`): purple "mitoses" and dark-blue "mimics" on a light background;
- a **synthetic slide** (:func:`slide_image`, :func:`make_slide`, :func:`matched`): a pyramidal
  tiled TIFF with dark disks on a pink tissue block;
- the commands shown in the docs (:func:`documented_commands`, :func:`documented_line`).
Dataset writers (fixtures_formats.py) and float32 tolerances (tolerance.py) are re-exported.
"""
from __future__ import annotations

import copy
import re
import shlex
import textwrap
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image
from torch import nn

from fixtures_formats import (SHAPE, disk_pixels, write_amida13, write_folder,  # noqa: F401
                              write_icpr2012, write_icpr2014, write_image, write_midog)
from partsup import Registries, hookimpl, make_plugin_manager
from partsup.errors import DataError
from partsup.model.partial import Branch, build_model
from partsup.types import Sample
from tolerance import assert_linear_close  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"

# -- the tiny recipe ----------------------------------------------------------------------------

#: :func:`tiny_recipe`'s value for a key to remove
DROP = object()

_TINY: dict[str, Any] = {
    "name": "tiny",
    "plugins": ["tiny_plugin"],
    "seed": 1,
    "device": "cpu",
    "data": {"strong": {"name": "tiny", "split": "train", "n": 3, "masks": True},
             "weak": {"name": "tiny", "split": "train", "n": 3, "masks": False, "seed": 5},
             "val": {"name": "tiny", "split": "val", "n": 1},
             "patch": {"size": 32, "positive_fraction": 0.5, "strong_fraction": 0.5}},
    "labels": {"weak": {"name": "disk", "radius": 4}},
    "loss": {"weak": {"name": "concentric", "reduction": "mean"}},
    "model": {"backbone": {"name": "tiny"}},
    "train": {"schedule": "end2end", "optimizer": {"name": "adamw", "lr": 0.01, "warmup": 1},
              "iterations": 6, "batch_size": 2, "val_every": 3, "checkpoint_every": 2,
              "keep_last": 2, "log_every": 1},
    "detect": {"tile": 64, "overlap": 8},
    "eval": {"protocol": "pixels"},
}


def tiny_recipe(changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The tiny training recipe as a new dict (a deep copy) with ``changes`` applied in order:
    ``{"train.iterations": 4}`` sets (replaces) the value at a dotted key, creating sections as
    needed; a value of :data:`DROP` removes the key. Six iterations of batch 2 on 32-px patches
    of 3 + 3 tiny images: about a second on one CPU core."""
    recipe = copy.deepcopy(_TINY)
    for key, value in (changes or {}).items():
        *parents, leaf = key.split(".")
        node = recipe
        for part in parents:
            node = node.setdefault(part, {})
        if value is DROP:
            del node[leaf]
        else:
            node[leaf] = copy.deepcopy(value)
    return recipe


#: the tiny recipe unchanged (read it, do not modify it: :func:`tiny_recipe` gives a copy)
TINY = tiny_recipe()


def load_tiny(regs: Registries, *overrides: str) -> dict[str, Any]:
    """:data:`TINY` resolved by ``load_recipe`` with ``--set`` style ``overrides``."""
    from partsup.recipe import load_recipe
    return load_recipe(data=TINY, overrides=overrides, registries=regs)


def tiny_checkpoint(path: Path, mode: str = "transfer", tile: int = 128) -> Path:
    """A randomly initialised tiny two-branch model (tests/tiny_plugin.py) saved as a checkpoint."""
    from partsup.checkpoint.files import save_checkpoint
    from partsup.manager import load
    section = {"backbone": {"name": "tiny", "width": 8}, "mode": mode}
    model = build_model(section, load(["tiny_plugin"], disabled=()))
    recipe = {"name": "tiny", "plugins": ["tiny_plugin"], "model": section,
              "detect": {"w": 0.5, "sigma": 1.0, "a1": 4, "s1": 0.5, "tile": tile,
                         "overlap": 32, "batch_tiles": 2}}
    save_checkpoint(path, {"recipe": recipe, "model": model.state_dict(),
                           "normalization": model.normalization,
                           "detect": {"w": 0.4, "s1": 0.55, "a1": 6, "sigma": 1.0,
                                      "area_unit": "px"}})
    return path


# -- the dark-disk model (dark disks = mitoses) --------------------------------------------------

# A backbone plugin whose "features" are darkness (1 - mean RGB in [0, 1]) and whose semantic
# layer is set so that p(mitosis) = sigmoid(20 * darkness - 12): dark disks light up.
DARK_PLUGIN = textwrap.dedent('''
    import torch
    from torch import nn
    from partsup.model.partial import Branch
    from partsup import hookimpl

    class Dark(Branch):
        feature_channels = 1

        def __init__(self):
            super().__init__()
            self.normalization = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                                  "scale": 1, "bgr": False}
            self.semantic = nn.Conv2d(1, 2, 1)

        def features(self, x):
            return 1.0 - x.mean(dim=1, keepdim=True)

        def head(self, logits, size):
            return logits[..., : size[0], : size[1]]

    @hookimpl
    def partsup_register_backbones(register):
        register("dark_test", Dark)
''')

#: x, y of :func:`he_like`'s dark disks by default
IMAGE_CENTRES = [(150.0, 120.0), (900.0, 400.0), (1720.0, 1310.0)]


def write_dark_checkpoint(path: Path, plugin: str) -> Path:
    """The dark-disk model (weak branch only, hand-set weights) saved at ``path``; ``plugin``
    names the importable module holding :data:`DARK_PLUGIN`."""
    from partsup.checkpoint.files import save_checkpoint
    from partsup.manager import load
    section = {"backbone": {"name": "dark_test"}, "mode": "weak_only"}
    model = build_model(section, load([plugin], disabled=()))
    with torch.no_grad():
        model.weak.semantic.weight.copy_(torch.tensor([[[[0.0]]], [[[20.0]]]]))
        model.weak.semantic.bias.copy_(torch.tensor([0.0, -12.0]))
    recipe = {"name": "dark", "model": section,
              "detect": {"w": 1.0, "sigma": 1.0, "a1": 100, "s1": 0.5, "area_unit": "px",
                         "filters": [], "tile": 512, "overlap": 64, "batch_tiles": 2}}
    save_checkpoint(path, {"recipe": recipe, "model": model.state_dict(),
                           "normalization": model.normalization,
                           "detect": {"w": 1.0, "s1": 0.6, "a1": 150, "sigma": 1.0,
                                      "area_unit": "px"}})
    return path


def he_like(h: int, w: int, centres=IMAGE_CENTRES, radius: int = 12) -> np.ndarray:
    """Pale pink background with a few small dark nuclei (too small to pass a1) and dark disks."""
    rng = np.random.default_rng(0)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (235, 200, 220)
    yy, xx = np.ogrid[:h, :w]
    for cx, cy in rng.uniform(0, 1, (20, 2)) * (w, h):  # tiny dark specks: area < a1
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= 9] = (40, 20, 60)
    for cx, cy in centres:
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius ** 2] = (40, 20, 60)
    return img


def save(path: Path, img: np.ndarray) -> Path:
    """``img`` written as an image file at ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def run_predict(args, plugin: str) -> int:
    """``partsup --plugin PLUGIN predict ARGS...`` in this process; its exit code."""
    from partsup.cli.main import main
    return main(["--plugin", plugin, "predict", *map(str, args)])


# -- the toy evaluation world --------------------------------------------------------------------

MITOSIS = (90, 10, 40)
MIMIC = (10, 10, 40)
BACKGROUND = (235, 235, 235)


def paint(shape, mitoses, mimics, radius=5):
    img = np.empty((*shape, 3), np.uint8)
    img[:] = BACKGROUND
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for pts, color in ((mitoses, MITOSIS), (mimics, MIMIC)):
        for x, y in pts:
            img[(xx - x) ** 2 + (yy - y) ** 2 <= radius ** 2] = color
    return img


#: per split: images as (id, mitoses, mimics); one image has a mitosis missing from the truth
TOY = {
    "val": [("case1/a", [(20, 20), (70, 40)], [(40, 70)]),
            ("case1/b", [(30, 60)], [(80, 20), (15, 15)]),
            ("case2/c", [], [(50, 50)])],
    "test": [("case3/d", [(25, 30), (75, 60)], [(50, 20)]),
             ("case3/e", [(60, 25)], [(20, 70)]),
             ("case4/f", [], [])],
}


class ToyReader(list):
    """A toy dataset reader (96 x 112 images at 0.25 um/px)."""

    LAYOUT = "ROOT/ (any existing folder; images are generated)"
    SOURCE = "https://example.org/toy"

    def __init__(self, root, split="train", strict=True):
        if not Path(root).is_dir():
            raise DataError(f"toy: dataset root {root} not found. Expected layout:\n{self.LAYOUT}")
        self.root = Path(root)
        super().__init__(Sample(image=paint((96, 112), m, f), points=np.array(m, np.float32),
                                hard_negatives=np.array(f, np.float32), mpp=0.25, id=i,
                                group=i.split("/")[0])
                         for i, m, f in TOY.get(split, []))


class PixelBranch(Branch):
    """features = a 1x1 conv of the RGB input (C = 1); head = identity."""

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.feature_channels = 1
        self.normalization = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "scale": 1,
                              "bgr": False}
        self.feat = nn.Conv2d(3, 1, 1)
        self.semantic = nn.Conv2d(1, 2, 1)

    def features(self, x):
        return self.feat(x)

    def head(self, logits, size):
        return logits


class ToyPlugin:
    @hookimpl
    def partsup_register_datasets(self, register):
        register("toy", ToyReader)

    @hookimpl
    def partsup_register_backbones(self, register):
        register("pixel", PixelBranch)


def toy_registries() -> Registries:
    return Registries.from_pm(make_plugin_manager(objects=[ToyPlugin()]))


def _set(branch: PixelBranch, rgb_weights, bias, gain):
    """feature = rgb . weights + bias; p(mitosis) = sigmoid(gain * feature)."""
    with torch.no_grad():
        branch.feat.weight.copy_(torch.tensor(rgb_weights, dtype=torch.float32).view(1, 3, 1, 1))
        branch.feat.bias.fill_(bias)
        branch.semantic.weight.copy_(torch.tensor([0.0, gain]).view(2, 1, 1, 1))
        branch.semantic.bias.zero_()


def make_checkpoint(path: Path, regs: Registries, data_root: Path, detect=None) -> Path:
    """A checkpoint of the toy two-branch model (independent mode) with a resolved recipe."""
    from partsup.checkpoint.files import save_checkpoint
    from partsup.recipe import load_recipe
    recipe = load_recipe(data={
        "name": "toy", "model": {"backbone": {"name": "pixel"}, "mode": "independent"},
        "labels": {"weak": "concentric"},
        "loss": {"weak": {"name": "concentric", "reduction": "mean"}},
        "data": {"val": {"name": "toy", "root": str(data_root), "split": "val"}},
        "detect": {"sigma": 1.0, "s1": 0.5, "a1": 0, "w": 0.5},
        "calibrate": {"w": [0.0, 0.5, 1.0], "s1": [0.3, 0.6, 0.7], "a1": [0, 30, 200]},
    }, registries=regs)
    model = build_model(recipe["model"], regs)
    _set(model.weak, [-1 / 3, -1 / 3, -1 / 3], 0.5, 12.0)   # dark: mitoses and mimics
    _set(model.strong, [1.0, -2.0, 0.0], -0.12, 30.0)       # purple (R high, G low) only
    save_checkpoint(path, {"recipe": recipe, "model": model.state_dict(),
                           "normalization": model.normalization, "detect": detect})
    return path


def run_cli(regs: Registries, argv: list[str], capsys=None) -> int:
    """A partsup command line run with ``regs`` (e.g. :func:`toy_registries`); its exit code."""
    from rich.console import Console

    from partsup.cli.main import Context, build_parser
    args = build_parser(regs).parse_args(argv)
    return args._command.run(args, Context(registries=regs, console=Console(width=150)))


# -- a synthetic whole slide ---------------------------------------------------------------------

PINK, DARK, GREY = (235, 170, 210), (40, 20, 60), (50, 50, 50)
#: x, y at level 0 (0.25 um/px): spread, two on 256-px tile seams, and a cluster of five
SPREAD = [(300.0, 400.0), (768.0, 600.0), (600.0, 512.0), (1300.0, 300.0)]
CLUSTER = [(1150.0, 1150.0), (1190.0, 1170.0), (1230.0, 1140.0), (1160.0, 1220.0),
           (1215.0, 1215.0)]
SLIDE_CENTRES = SPREAD + CLUSTER
OUTSIDE = (1900.0, 300.0)  # a grey disk on the glass, far from tissue: never run


def slide_image(scale: float = 1.0, w: int = 2048, h: int = 1536) -> np.ndarray:
    """White glass, a pink tissue block with noise, dark disks of radius 10 px (x ``scale``)."""
    rng = np.random.default_rng(0)
    W, H = int(w * scale), int(h * scale)
    img = np.full((H, W, 3), 255, np.uint8)
    t = [int(v * scale) for v in (100, 200, 1500, 1400)]  # x0, y0, x1, y1
    img[t[1]:t[3], t[0]:t[2]] = PINK
    img[t[1]:t[3], t[0]:t[2]] = np.clip(img[t[1]:t[3], t[0]:t[2]].astype(int)
                                        + rng.integers(-8, 9, (t[3] - t[1], t[2] - t[0], 1)),
                                        0, 255)
    yy, xx = np.ogrid[:H, :W]
    for (cx, cy), colour in [(c, DARK) for c in SLIDE_CENTRES] + [(OUTSIDE, GREY)]:
        img[(xx - cx * scale) ** 2 + (yy - cy * scale) ** 2 <= (10 * scale) ** 2] = colour
    return img


def make_slide(path, scale=1.0, mpp=0.25, tile=256):
    from partsup.slides.write import from_array, write_pyramid
    img = slide_image(scale)
    return write_pyramid(path, from_array(img), img.shape[1], img.shape[0], mpp, tile=tile)


def matched(got: np.ndarray, expected, atol=2.0) -> None:
    exp = np.array(expected)
    assert len(got) == len(exp), got
    for x, y in exp:
        d = np.hypot(got[:, 0] - x, got[:, 1] - y)
        assert d.min() <= atol, (x, y, got[:, :2])


# -- commands shown in the docs ------------------------------------------------------------------

def documented_commands(page: str) -> list[str]:
    """``partsup ...`` and ``python bench/...`` lines of the page's bash blocks, continuation
    lines joined, comments dropped."""
    text = (REPO / page).read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith(("partsup ", "python bench/")):
                out.append(line)
    return out


def documented_line(script: str, page: str = "performance.md") -> list[str]:
    """The first ``python bench/<script> ...`` command of ``docs/<page>``, as argv (a leading
    ``$`` prompt and a trailing ``# comment`` removed)."""
    text = (REPO / "docs" / page).read_text()
    for line in text.splitlines():
        line = line.strip().removeprefix("$").strip()
        if line.startswith(f"python bench/{script}"):
            return shlex.split(line.split("#", 1)[0])
    raise AssertionError(f"docs/{page} shows no 'python bench/{script}' command")
