"""End-to-end detection per HPF (image in memory -> detections), GPU and CPU, same script.

    python bench/hpf_speed.py [--models fcn32s,light] [--sizes 2084x2084,1539x1376]
                              [--modes fp32,bf16,fast] [--device auto] [--repeats 5]
                              [--folder 8] [--compile] [--threads N] [--json hpf_speed.json]

Models (random initialisation; speed does not depend on the weights, no weight files needed):

* ``fcn32s``: the paper's two-branch FCN-32s (``recipes/partmitosis.yaml``: two VGG-16 trunks,
  transferred strong head); ``fcn32s-shared``: the same with one shared trunk;
* ``light``: the CPU recipe (``recipes/quickstart.yaml``: U-Net with a MobileNetV3-small encoder,
  shared trunk).

Modes, each timed as ``Detector.detect`` (tiling, network, maps, fusion, smoothing, Otsu, blobs,
filters), median of ``--repeats`` runs after ``--warmup`` untimed ones (default 1), CUDA
synchronised:

* ``fp32``: the recipe's tiles (``detect.tile``), float32;
* ``bf16`` (CUDA): the same tiles in bf16 autocast, channels-last;
* ``fast`` (CUDA): bf16, channels-last, cuDNN autotuning on from the first forward (partsup turns
  it on for every CUDA run), the whole HPF as one tile (padded to a multiple of 32), and with
  ``--compile`` the network through ``torch.compile``.

On a machine without CUDA the GPU modes print "no GPU" and the CPU rows still run (FCN-32s on a
CPU takes minutes per HPF: ``--models light`` or ``--repeats 1``). Peak GPU memory is
``torch.cuda.max_memory_allocated`` over the timed runs.

``--folder N`` adds a throughput row per model: N HPFs of the first size written as PNG files
and run through ``partsup predict`` (decoding, detection and writing included), seconds per HPF
next to the in-memory figure.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODELS = {"fcn32s": ("recipes/partmitosis.yaml", {"backbone": {"name": "fcn32s"}}),
          "fcn32s-shared": ("recipes/partmitosis.yaml", {"backbone": {"name": "fcn32s"},
                                                         "shared_backbone": True}),
          "light": ("recipes/quickstart.yaml", {})}
GPU_MODES = ("bf16", "fast")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="fcn32s,light", help=f"of {', '.join(MODELS)}")
    ap.add_argument("--sizes", default="2084x2084,1539x1376", help="HxW,HxW,...")
    ap.add_argument("--modes", default="fp32,bf16,fast")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed runs first (cuDNN autotuning, compilation; 0 on a slow CPU)")
    ap.add_argument("--folder", type=int, default=0, help="HPFs for the partsup predict row")
    ap.add_argument("--compile", action="store_true", help="torch.compile in the fast mode")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", type=Path, default=None)
    return ap.parse_args(argv)


def hpf_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A synthetic ICPR-2012-style H&E field of ``h x w`` px, ``(h, w, 3)`` uint8."""
    from partsup_mitosis.synth import image_rng, render
    return render(image_rng(seed, "icpr2012", 0), "icpr2012", (h, w)).image


def build(name: str, registries: Any) -> tuple[Any, dict[str, Any]]:
    """The model of ``MODELS[name]`` (random init) and its recipe."""
    import torch
    import yaml

    from partsup.model.partial import build_model
    path, model_over = MODELS[name]
    recipe = yaml.safe_load((REPO / path).read_text())
    section = dict(recipe["model"])
    for key, value in model_over.items():
        section[key] = ({**section[key], **value} if isinstance(value, dict) else value)
    recipe["model"] = section
    torch.manual_seed(0)
    return build_model(section, registries, skip_weights=True), recipe


def detector_for(model: Any, recipe: dict[str, Any], registries: Any, device: str, mode: str,
                 size: tuple[int, int], compiled: bool) -> Any:
    import torch

    from partsup.inference.detector import Detector
    from partsup.inference.params import DetectParams
    detect = {k: v for k, v in (recipe.get("detect") or {}).items()
              if k in DetectParams.__dataclass_fields__}
    if mode == "fast":
        detect["tile"] = max(size)  # one tile: the whole HPF
        detect["overlap"] = 0
        if compiled:
            model.probabilities = torch.compile(model.probabilities)
    return Detector(model, DetectParams(**detect), registries, device=device,
                    amp=mode != "fp32")


def time_detect(det: Any, image: np.ndarray, repeats: int, warmup: int = 1
                ) -> tuple[float, int]:
    import torch
    cuda = det.device.type == "cuda"

    def once() -> int:
        n = len(det.detect(image, 0.25))
        if cuda:
            torch.cuda.synchronize()
        return n

    for _ in range(warmup):  # cuDNN autotuning, compilation
        once()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times, n = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = once()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), n


def folder_row(model: Any, recipe: dict[str, Any], size: tuple[int, int], n: int,
               device: str) -> dict[str, Any]:
    """``partsup predict`` over ``n`` PNG HPFs: wall seconds per HPF, everything included."""
    from PIL import Image

    from partsup.checkpoint.files import save_checkpoint
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(Path(tmp) / "model.pt", {
            "recipe": {"name": recipe.get("name"), "model": recipe["model"],
                       "detect": recipe.get("detect") or {}},
            "model": model.state_dict(), "normalization": model.normalization, "detect": None})
        folder = Path(tmp) / "hpfs"
        folder.mkdir()
        for i in range(n):
            Image.fromarray(hpf_image(*size, seed=i)).save(folder / f"hpf{i:03d}.png")
        cmd = [sys.executable, "-m", "partsup", "predict", str(folder), "--checkpoint", str(ckpt),
               "--mpp", "0.25", "--device", device, "--out", str(Path(tmp) / "out")]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(f"partsup predict failed: {proc.stderr[-1000:]}")
    return {"hpfs": n, "wall_s": wall, "s_per_hpf": wall / n}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from partsup.manager import load
    from partsup.runtime import resolve_device
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    registries = load()
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]
    rows: list[dict[str, Any]] = []
    print(f"device {device}{' (' + torch.cuda.get_device_name() + ')' if cuda else ''}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)")
    print(f"{'model':<14} {'HPF':>11} {'mode':<6} {'ms/HPF':>10} {'peak GiB':>9} {'dets':>6}")
    for name in args.models.split(","):
        model, recipe = build(name, registries)
        for size in sizes:
            image = hpf_image(*size)
            for mode in args.modes.split(","):
                row: dict[str, Any] = {"model": name, "size": list(size), "mode": mode}
                if mode in GPU_MODES and not cuda:
                    row["note"] = "no GPU"
                    print(f"{name:<14} {size[0]:>5}x{size[1]:<5} {mode:<6} {'no GPU':>10}")
                    rows.append(row)
                    continue
                det = detector_for(model, recipe, registries, str(device), mode, size,
                                   args.compile)
                sec, n = time_detect(det, image, args.repeats, args.warmup)
                model.__dict__.pop("probabilities", None)  # undo --compile for the next rows
                row.update(ms=1e3 * sec, detections=n, tile=det.params.tile)
                if cuda:
                    row["peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
                peak = f"{row['peak_gib']:.2f}" if cuda else "-"
                print(f"{name:<14} {size[0]:>5}x{size[1]:<5} {mode:<6} {row['ms']:10.1f} "
                      f"{peak:>9} {n:6d}")
                rows.append(row)
        if args.folder:
            fr = folder_row(model, recipe, sizes[0], args.folder, str(device))
            rows.append({"model": name, "size": list(sizes[0]), "mode": "predict-folder", **fr})
            print(f"{name:<14} {sizes[0][0]:>5}x{sizes[0][1]:<5} folder "
                  f"{1e3 * fr['s_per_hpf']:10.1f}  ({args.folder} PNGs through partsup "
                  f"predict, all included)")
    out = {"device": str(device), "gpu": torch.cuda.get_device_name() if cuda else None,
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
           "loadavg": os.getloadavg(), "repeats": args.repeats, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
