"""partsup_mitosis.small_cnn: the small CNN bench/synth_baseline.py and
bench/amibr_counterfactual.py train (target, views, loop, blob read-out), and the first of those
benches on tiny settings."""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from partsup_mitosis import small_cnn
from partsup_mitosis.small_cnn import (SmallUNet, disc_target, probability_blobs, random_view,
                                       to_input, train_for)

REPO = Path(__file__).resolve().parents[1]


def test_disc_target_marks_the_pixels_within_the_radius():
    t = disc_target(np.array([[10.0, 5.0], [30.0, 12.0]]), (20, 40), 3.0)
    assert t.shape == (20, 40) and t.dtype == np.float32
    yy, xx = np.mgrid[0:20, 0:40]
    want = ((xx - 10) ** 2 + (yy - 5) ** 2 <= 9) | ((xx - 30) ** 2 + (yy - 12) ** 2 <= 9)
    assert np.array_equal(t, want.astype(np.float32)) and t.sum() == 2 * 29


def test_random_view_turns_image_and_target_alike_and_draws_all_eight_views():
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        a, b = random_view(rng, image, image[..., 0])
        assert a.shape == (3, 4, 4) and b.shape == (1, 4, 4) and a.dtype == np.uint8
        assert np.array_equal(a[0], b[0])
        seen.add(a.tobytes())
    assert len(seen) == 8


def test_small_unet_shape_and_size():
    torch.manual_seed(0)
    net = SmallUNet().eval()
    x = torch.from_numpy(to_input(np.full((2, 3, 32, 48), 255, np.uint8)))
    assert float(x.max()) == 0.5
    assert net(x).shape == (2, 1, 32, 48)
    assert 100_000 < sum(p.numel() for p in net.parameters()) < 150_000


def test_train_for_steps_until_the_budget_and_learns(monkeypatch):
    torch.manual_seed(0)
    net = SmallUNet()
    rng = np.random.default_rng(0)
    x = to_input(rng.integers(0, 255, (2, 3, 8, 8), dtype=np.uint8))
    y = (x[:, :1] > 0).astype(np.float32)  # a target the network can read off its input

    def loss() -> float:
        with torch.no_grad():
            return float(nn.functional.binary_cross_entropy_with_logits(
                net(torch.from_numpy(x)), torch.from_numpy(y)))

    assert train_for(net, lambda: (x, y), 0.0, pos_weight=1.0) == 0 and not net.training
    net.train()
    before = loss()
    net.eval()
    clock = itertools.count()  # one tick per look at the clock: the budget counts steps
    monkeypatch.setattr(small_cnn.time, "perf_counter", lambda: float(next(clock)))
    assert train_for(net, lambda: (x, y), 6.0, pos_weight=1.0) == 5
    assert not net.training
    net.train()  # compare in the same mode (batch statistics)
    assert loss() < 0.7 * before  # 0.67 -> 0.42 when written


class Fixed(nn.Module):
    """A stand-in network that returns given logits whatever the image."""

    def __init__(self, logits: np.ndarray) -> None:
        super().__init__()
        self.logits = torch.from_numpy(logits[None, None].astype(np.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits


def test_probability_blobs_reads_centroid_score_and_area():
    logits = np.full((12, 16), -10.0)
    logits[2:4, 3:6] = 10.0  # blob 1: 2 x 3 px
    logits[8, 12] = 10.0  # blob 2: one pixel, diagonal neighbour of blob 3 (8-connected)
    logits[9, 13] = 0.5
    xy, score, area = probability_blobs(Fixed(logits), np.zeros((12, 16, 3), np.uint8))
    assert np.array_equal(area, [6, 2])
    assert xy[0] == pytest.approx([4.0, 2.5])
    p_hi, p_mid = 1 / (1 + np.exp(-10.0)), 1 / (1 + np.exp(-0.5))
    assert score[1] == pytest.approx((p_hi + p_mid) / 2, rel=1e-6)
    assert xy[1] == pytest.approx([(12 * p_hi + 13 * p_mid) / (p_hi + p_mid),
                                   (8 * p_hi + 9 * p_mid) / (p_hi + p_mid)], rel=1e-6)
    none = probability_blobs(Fixed(np.full((8, 8), -5.0)), np.zeros((8, 8, 3), np.uint8))
    assert none[0].shape == (0, 2) and len(none[1]) == len(none[2]) == 0


def test_synth_baseline_bench_runs_tiny(tmp_path):
    """bench/synth_baseline.py (docs/datasets.md's difficulty window) on tiny settings: both
    threshold baselines and the small CNN report their counts."""
    out = tmp_path / "baseline.json"
    done = subprocess.run([sys.executable, "bench/synth_baseline.py", "--styles", "amida13",
                           "--images", "2", "--size", "128", "--cnn-seconds", "0.5",
                           "--threads", "1", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads(out.read_text())["amida13"]
    assert set(res) == {"tuned", "oracle", "cnn"} and res["cnn"]["iterations"] >= 1
    for r in res.values():
        assert {"tp", "fp", "fn", "precision", "recall", "f1"} <= set(r)
    assert "amida13    cnn" in done.stdout
