#!/usr/bin/env bash
# Every GPU row of docs/performance.md, one command, under 8 minutes on one H100/H200:
#
#   bash bench/gpu_all.sh [OUT_DIR]        (default: $OUT if set, else bench-results/)
#
# Each benchmark prints its table and writes JSON into OUT_DIR; a log of everything goes to
# OUT_DIR/gpu_all.log. Without CUDA the scripts still run their CPU rows and print "no GPU"
# for the GPU ones (FCN-32s on a CPU takes minutes per HPF; this script is meant for a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-bench-results}}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
exec > >(tee "$OUT_DIR/gpu_all.log") 2>&1
"$PY" - <<'PYEOF'
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "(no GPU)")
PYEOF
t0=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - t0 )) s)"; }

step "1. end-to-end detection per HPF: fp32, bf16, fast (two-branch and shared FCN-32s, light)"
"$PY" bench/hpf_speed.py --models fcn32s,fcn32s-shared,light --sizes 2084x2084,1539x1376 \
    --modes fp32,bf16,fast --repeats 5 --folder 16 --json "$OUT_DIR/hpf_speed.json"
step "1b. the fast mode with torch.compile (two-branch FCN-32s)"
"$PY" bench/hpf_speed.py --models fcn32s --sizes 2084x2084,1539x1376 --modes fast --compile \
    --repeats 5 --json "$OUT_DIR/hpf_speed_compile.json" || echo "torch.compile failed (above)"
step "2. post-processing per HPF: partsup vs plain scikit-image (CPU of this machine)"
"$PY" bench/postprocess.py --json "$OUT_DIR/postprocess.json"
step "4. training throughput and loader rate: quickstart, then FCN-32s branches (500 px, batch 1)"
"$PY" bench/train_speed.py --steps 50 --json "$OUT_DIR/train_speed_quickstart.json"
"$PY" bench/train_speed.py --set "model.backbone={name: fcn32s}" --set model.shared_backbone=false \
    --set data.patch.size=500 --set train.batch_size=1 --set data.num_workers=4 --steps 30 \
    --json "$OUT_DIR/train_speed_fcn32s.json"
step "slides: a 20000x20000 px slide through partsup predict (tissue Mpx/s, peak memory)"
"$PY" bench/slide_memory.py --size 20000 --json "$OUT_DIR/slide_memory.json"
step "done"
