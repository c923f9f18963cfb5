"""The first hour of a new user: small surprises removed (each test failed before its fix)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_predicting_a_read_only_image_gives_no_torch_warning():
    """PIL gives read-only arrays; torch warned "The given NumPy array is not writable" once per
    process. A fresh process is needed: torch shows that warning only once."""
    code = ("import warnings, numpy as np, sys\n"
            f"sys.path.insert(0, {str(TESTS)!r})\n"
            "from partsup.model import build_model\n"
            "from partsup.plugins import load\n"
            "regs = load(['tiny_plugin'], disabled=())\n"
            "m = build_model({'backbone': {'name': 'tiny'}}, regs)\n"
            "a = np.zeros((8, 8, 3), np.uint8); a.flags.writeable = False\n"
            "warnings.simplefilter('error')\n"
            "m.preprocess(a)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "not writable" not in proc.stderr
