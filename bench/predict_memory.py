"""Peak memory of ``partsup predict`` on one big synthetic image (default 7000x5000, a MIDOG ROI).

    python bench/predict_memory.py [--width 7000 --height 5000] [--checkpoint C] [--json out.json]

The parent process writes a synthetic H&E-like TIFF (pale background, noise, small dark nuclei,
larger dark "mitoses"), then runs ``partsup predict`` on it in a fresh child process and reads
the child's peak resident memory (``VmHWM`` from ``/proc/self/status``; ``ru_maxrss`` elsewhere).
It reports the peak, the resident memory just before the image is read (Python, torch, model),
and the difference, i.e. what the big image costs. Without ``--checkpoint`` a small conv model
(3 -> 8 channels, 3x3, hand-set to light up dark disks) is used, so the number measures the
pipeline (image, tiles, full-size maps, blobs) rather than a backbone's activations; pass a real
checkpoint (and ``--plugin``) to add those.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from partsup import hookimpl

MiB = 1024 * 1024


# -- the small default model (registered through a plugin object: this module) ----------------

def _tiny_backbone():
    import torch
    from torch import nn
    from partsup.model.partial import Branch

    class TinyConv(Branch):
        """3x3 conv 3 -> 8 computing darkness (1 - mean RGB), ReLU, 1x1 semantic layer."""

        feature_channels = 8

        def __init__(self) -> None:
            super().__init__()
            self.normalization = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                                  "scale": 1, "bgr": False}
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.semantic = nn.Conv2d(8, 2, 1)
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.weight[:, :, 1, 1] = -1.0 / 3.0
                self.conv.bias.fill_(1.0)
                self.semantic.weight.zero_()
                self.semantic.weight[1] = 20.0 / 8
                self.semantic.bias.copy_(torch.tensor([0.0, -12.0]))

        def features(self, x):
            return torch.relu(self.conv(x))

        def head(self, logits, size):
            return logits[..., : size[0], : size[1]]

    return TinyConv


@hookimpl
def partsup_register_backbones(register) -> None:
    register("bench_tiny", _tiny_backbone())


def tiny_checkpoint(path: Path) -> Path:
    from partsup.checkpoint.files import save_checkpoint
    from partsup.model.partial import build_model
    regs = registries()
    section = {"backbone": {"name": "bench_tiny"}, "mode": "weak_only"}
    model = build_model(section, regs)
    save_checkpoint(path, {"recipe": {"name": "bench", "model": section, "detect": {}},
                           "model": model.state_dict(), "normalization": model.normalization,
                           "detect": {"w": 1.0, "s1": 0.6, "a1": 150, "sigma": 1.0,
                                      "area_unit": "px"}})
    return path


def registries(plugins: list[str] = ()):
    from partsup.manager import Registries, make_plugin_manager
    me = sys.modules[__name__]  # this module is the plugin providing bench_tiny
    return Registries.from_pm(make_plugin_manager(list(plugins), objects=[me]))


# -- the synthetic image -----------------------------------------------------------------------

def synthetic_image(h: int, w: int, n_mitoses: int = 60, n_nuclei: int = 4000,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(image (h, w, 3) uint8, mitoses (n, 2) x, y)``: noisy pink, nuclei r=4, mitoses r=12."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.uint8)
    for c, base in enumerate((232, 196, 218)):
        img[:, :, c] = base + rng.integers(-8, 9, (h, w), dtype=np.int16).astype(np.uint8)

    def disk(cx: float, cy: float, r: int, colour: tuple[int, int, int]) -> None:
        x0, x1 = max(int(cx) - r, 0), min(int(cx) + r + 1, w)
        y0, y1 = max(int(cy) - r, 0), min(int(cy) + r + 1, h)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        img[y0:y1, x0:x1][(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = colour

    for cx, cy in rng.uniform(0, 1, (n_nuclei, 2)) * (w, h):
        disk(cx, cy, 4, (90, 60, 140))
    pts = rng.uniform(0, 1, (n_mitoses, 2)) * (w - 60, h - 60) + 30
    for cx, cy in pts:
        disk(cx, cy, 12, (40, 20, 60))
    return img, pts


# -- measurement -------------------------------------------------------------------------------

def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_bytes() -> int:
    kib = _status_kib("VmHWM")
    if kib is None:  # not Linux: ru_maxrss (KiB on Linux, bytes on macOS)
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r if sys.platform == "darwin" else r * 1024
    return kib * 1024


def rss_bytes() -> int:
    kib = _status_kib("VmRSS")
    return (kib or 0) * 1024


def add_child_arguments(p: argparse.ArgumentParser) -> None:
    """The options every memory bench shares (model, threads, output), and the hidden ones of
    its measuring child process."""
    p.add_argument("--checkpoint", default=None, help="a real checkpoint (default: tiny conv)")
    p.add_argument("--plugin", action="append", default=[], help="plugin module for it")
    p.add_argument("--mpp", type=float, default=0.25)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--image", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)


def run_child(script: str, image: Path, tmp_path: Path, args: argparse.Namespace,
              extra: list[str] = ()) -> dict | int:
    """Run ``script --child`` on ``image`` in a fresh process (so its peak memory is its own);
    its last stdout line (JSON) as a dict, or its exit code when it failed."""
    ckpt = args.checkpoint or str(tiny_checkpoint(tmp_path / "tiny.pt"))
    cmd = [sys.executable, script, "--child", "--image", str(image), "--out",
           str(tmp_path / "out"), "--checkpoint", ckpt, "--mpp", str(args.mpp),
           "--threads", str(args.threads), *extra] + [f"--plugin={m}" for m in args.plugin]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return proc.returncode
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_report(report: dict, json_path: Path | None) -> None:
    """The report as aligned lines, then as one JSON line (and in ``json_path``)."""
    width = max(map(len, report))
    for k, v in report.items():
        print(f"{k:<{width}}  {v}")
    print(json.dumps(report))
    if json_path:
        json_path.write_text(json.dumps(report, indent=1) + "\n")


def child(args: argparse.Namespace) -> None:
    """Run predict on the image in this (fresh) process; print one JSON line."""
    import torch
    torch.set_num_threads(args.threads)
    from partsup.inference.detector import build_detector
    from partsup.prediction import Item, predict_one

    regs = registries(args.plugin)
    detector = build_detector(Path(args.checkpoint), regs, "cpu", {})
    before = rss_bytes()
    peak_before = peak_bytes()
    writers = {n: regs.writers.get(n)() for n in ("csv", "geojson")}
    t0 = time.perf_counter()
    result = predict_one(Item(Path(args.image), "bench"), detector, writers, Path(args.out),
                         args.mpp, overlay=True)
    seconds = time.perf_counter() - t0
    print(json.dumps({"rss_before_image": before, "peak_before_image": peak_before,
                      "peak": peak_bytes(), "seconds": seconds,
                      "count": result.count.count if result.count else None}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=7000)
    p.add_argument("--height", type=int, default=5000)
    add_child_arguments(p)
    args = p.parse_args()
    if args.child:
        child(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="partsup-bench-") as tmp:
        tmp_path = Path(tmp)
        img, pts = synthetic_image(args.height, args.width)
        import tifffile
        image_path = tmp_path / "roi.tif"
        tifffile.imwrite(image_path, img)
        del img
        res = run_child(__file__, image_path, tmp_path, args)
        if isinstance(res, int):
            return res
    report = {
        "image": f"{args.width}x{args.height}", "model": args.checkpoint or "tiny conv (bench)",
        "mitoses_drawn": int(len(pts)), "detected": res["count"],
        "image_mib": round(args.width * args.height * 3 / MiB, 1),
        "map_float32_mib": round(args.width * args.height * 4 / MiB, 1),
        "rss_before_image_mib": round(res["rss_before_image"] / MiB, 1),
        "peak_rss_mib": round(res["peak"] / MiB, 1),
        "image_cost_mib": round((res["peak"] - res["rss_before_image"]) / MiB, 1),
        "seconds": round(res["seconds"], 2), "threads": args.threads,
    }
    print_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
