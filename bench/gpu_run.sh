#!/usr/bin/env bash
# The 8b benchmark on the GPU machine, in one command: bench/bench_gpu.py --shapes 8b --out $OUT.
# That machine has torch, transformers, peft, accelerate, safetensors, tokenizers, torchvision, pillow, pyyaml, tqdm,
# but not fastcore; `import moe_router.infer` needs nothing else (no modal, trl or datasets). The wheels in .whl/
# (gitignored; carried to the machine) are unpacked into $SITE without pip (pure-python wheels: unpacking is installing).
# Writes $OUT/gpu-8b-<gpu>.json (after every section, so a run cut short still leaves its figures) and $OUT/gpu-8b.log.
# Time: the benchmark skips sections that no longer fit in LIMIT-40 seconds and is stopped (SIGTERM, then KILL 20 s
# later) at LIMIT seconds; the default LIMIT=370 keeps the whole command (imports check included) under 7 minutes.
# Usage, from the repository root:   OUT=/tmp/out bash bench/gpu_run.sh        (extra arguments go to bench_gpu.py)
# The same code paths on a CPU:       DEVICE=cpu PYTHON=.venv/bin/python OUT=/tmp/out bash bench/gpu_run.sh
#   (tiny shapes, the decode step compiled with inductor so that the compile cache is saved and loaded)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}; SITE=${SITE:-/tmp/site}; LIMIT=${LIMIT:-370}; DEVICE=${DEVICE:-cuda}; PY=${PYTHON:-python3}
mkdir -p "$SITE" "$OUT"
shopt -s nullglob
for w in .whl/*.whl; do "$PY" -m zipfile -e "$w" "$SITE" || echo "warning: could not unpack $w" >&2; done
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "$DEVICE" = cpu ]; then SHAPES=tiny; EXTRA=(--compile inductor); else SHAPES=8b; EXTRA=(); fi
timeout 60 "$PY" - <<'PY' 2>&1 | tee "$OUT/gpu-$SHAPES.log"
import sys, torch, transformers, peft
import moe_router.backbone, moe_router.routers, moe_router.experts, moe_router.infer
heavy = [m for m in ('modal', 'trl', 'datasets') if m in sys.modules]
assert not heavy, f"import moe_router.infer loads {heavy}: make that import lazy"
print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
      f"cuda {torch.cuda.is_available()} {torch.cuda.get_device_name() if torch.cuda.is_available() else ''}", flush=True)
PY
[ "${PIPESTATUS[0]}" = 0 ] || { echo "error: the imports failed (see above); nothing was measured" >&2; exit 2; }
timeout --signal=TERM --kill-after=20 "$LIMIT" "$PY" bench/bench_gpu.py --shapes "$SHAPES" --out "$OUT" --budget $((LIMIT - 40)) \
    "${EXTRA[@]}" "$@" 2>&1 | tee -a "$OUT/gpu-$SHAPES.log"
rc=${PIPESTATUS[0]}
ls -l "$OUT"
exit "$rc"
