"""PyTorch vs onnxruntime on the CPU, same model, same image, same run.

    python bench/export_speed.py [--size 2000] [--recipe recipes/quickstart.yaml] [--repeats 2]
                                 [--threads 2] [--json export_speed.json]

Builds the recipe's model (the light quickstart U-Net by default; random initialisation, no
weight files: speed does not depend on the weights), saves it as a checkpoint, exports it with
``partsup.inference.export.export_checkpoint`` (ONNX, opset 17), then times the whole detector
(tiling at the recipe's ``detect.tile``, maps, fusion, threshold, blobs) on one synthetic
``size x size`` RGB image, alternating the two runtimes ``--repeats`` times after one warm-up
each. Prints a table; writes the numbers, the machine, the max abs difference of the maps and
how many torch detections have an onnxruntime one within 1 px (random weights give many noisy
blobs under Otsu: a handful of border pixels may flip; tests/test_export.py checks identical
detections with a trained-like model).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_image(size: int, seed: int = 0) -> np.ndarray:
    """``(size, size, 3)`` uint8: pale background, noise and a few hundred dark disks."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal((230, 190, 210), 12, (size, size, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.ogrid[:size, :size]
    for cx, cy in rng.uniform(0, size, (max(1, size * size // 20000), 2)):
        r = rng.uniform(3, 9)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = (70, 40, 100)
    return img


def matched(a: list, b: list, radius: float = 1.0) -> int:
    """How many detections of ``a`` have one of ``b`` within ``radius`` px."""
    if not a or not b:
        return 0
    from scipy.spatial import cKDTree
    dist, _ = cKDTree([(d.x, d.y) for d in b]).query([(d.x, d.y) for d in a])
    return int((dist <= radius).sum())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=2000, help="image side, px (default 2000)")
    ap.add_argument("--recipe", type=Path, default=Path("recipes/quickstart.yaml"))
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per runtime")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)

    import torch
    import yaml

    from partsup.checkpoint.files import save_checkpoint
    from partsup.inference.detector import load_detector
    from partsup.inference.export import export_checkpoint
    from partsup.inference.onnx_runtime import load_onnx_detector
    from partsup.manager import load
    from partsup.model.partial import build_model

    torch.set_num_threads(args.threads)
    recipe = yaml.safe_load(args.recipe.read_text())
    regs = load()
    torch.manual_seed(0)
    model = build_model(recipe["model"], regs, skip_weights=True)
    image = synthetic_image(args.size)
    mpp = 0.25
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(Path(tmp) / "model.pt", {
            "recipe": {"name": recipe.get("name"), "model": recipe["model"],
                       "detect": recipe.get("detect") or {}},
            "model": model.state_dict(), "normalization": model.normalization, "detect": None})
        t0 = time.perf_counter()
        report = export_checkpoint(ckpt, Path(tmp) / "model.onnx", "onnx", regs)
        export_s = time.perf_counter() - t0
        runtimes = {"torch": load_detector(ckpt, regs, "cpu")[0],
                    "onnxruntime": load_onnx_detector(report.model, regs, threads=args.threads)}
        times: dict[str, list[float]] = {k: [] for k in runtimes}
        found: dict[str, list] = {}
        maps: dict[str, tuple] = {}
        for name, det in runtimes.items():  # warm-up (and the outputs compared below)
            maps[name] = det.maps(image)
            found[name] = det.detect(image, mpp)
        for _ in range(args.repeats):
            for name, det in runtimes.items():
                t0 = time.perf_counter()
                det.detect(image, mpp)
                times[name].append(time.perf_counter() - t0)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(maps["torch"], maps["onnxruntime"])
               if a is not None)
    mpx = args.size * args.size / 1e6
    rows = {k: {"best_s": min(v), "mean_s": float(np.mean(v)), "mpx_per_s": mpx / min(v),
                "detections": len(found[k])} for k, v in times.items()}
    print(f"{recipe.get('name')} model, {args.size}x{args.size} px image, tile "
          f"{runtimes['torch'].params.tile}, {args.threads} thread(s), {args.repeats} run(s)")
    print(f"{'runtime':<12} {'best s':>8} {'mean s':>8} {'Mpx/s':>7} {'detections':>10}")
    for k, r in rows.items():
        print(f"{k:<12} {r['best_s']:8.2f} {r['mean_s']:8.2f} {r['mpx_per_s']:7.3f} "
              f"{r['detections']:>10}")
    same = matched(found["torch"], found["onnxruntime"])
    print(f"max |onnx - torch| over the maps: {diff:.2e}; torch detections with an onnx one "
          f"within 1 px: {same}/{len(found['torch'])}; export {export_s:.1f} s, dynamic H/W: "
          f"{report.dynamic}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "recipe": str(args.recipe), "size": args.size, "threads": args.threads,
            "repeats": args.repeats, "runtimes": rows, "max_abs_diff_maps": diff,
            "torch_detections_matched_1px": same,
            "export_s": export_s, "dynamic": report.dynamic,
            "export_check_max_abs_diff": report.max_abs_diff,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "torch": torch.__version__,
                        "onnxruntime": __import__("onnxruntime").__version__,
                        "loadavg": os.getloadavg()}}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
