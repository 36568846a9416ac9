#!/usr/bin/env bash
# The 8b benchmark on the GPU machine: bench/bench_gpu.py --shapes 8b --out $OUT/gpu-8b.
# That machine has torch, transformers, peft, accelerate, safetensors, tokenizers, torchvision, pillow, pyyaml, tqdm,
# but not fastcore; `import moe_router.infer` needs nothing else (no modal, trl or datasets). The wheels in .whl/
# (gitignored; carried to the machine: fastcore-2.2.41-py3-none-any.whl) are unpacked into /tmp/site, without pip.
# Usage, from the repository root:  OUT=/tmp/out bash bench/gpu_run.sh   (extra arguments go to bench_gpu.py)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}; SITE=${SITE:-/tmp/site}
mkdir -p "$SITE" "$OUT"
shopt -s nullglob
for w in .whl/*.whl; do python3 -m zipfile -e "$w" "$SITE"; done   # pure-python wheels: unpacking is installing
export PYTHONPATH="$SITE:$PWD" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 - <<'PY'
import sys, torch, transformers, peft
import moe_router.backbone, moe_router.routers, moe_router.experts, moe_router.infer
heavy = [m for m in ('modal', 'trl', 'datasets') if m in sys.modules]
assert not heavy, f"import moe_router.infer loads {heavy}: make that import lazy"
print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
      f"cuda {torch.cuda.is_available()} {torch.cuda.get_device_name() if torch.cuda.is_available() else ''}", flush=True)
PY
python3 bench/bench_gpu.py --shapes 8b --out "$OUT/gpu-8b" "$@" 2>&1 | tee "$OUT/gpu-8b.log"
