#!/usr/bin/env bash
# One prepared run on a GPU machine (docs/GPU.md): the binaries from scripts/build-cuda.sh, carried
# in target/cuda/release (the device tool's `carry`), no Rust toolchain needed there.
#   1. validation of ridge.icl at d = 8, n = 40 on cuda, f64 and f32 (errors vs the interpreter and
#      the exact solver, as icl-compile prints them);
#   2. timed training steps on cuda of paper_small (configs/paper.toml at 4 layers, width 128) and
#      of configs/paper.toml itself (16 layers, width 512): median steps/s over logged intervals.
# Usage: scripts/gpu-check.sh [OUT_DIR]   (default: $OUT, else /tmp/icl-gpu-check)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${ICL_BIN:-target/cuda/release}
OUT=${1:-${OUT:-/tmp/icl-gpu-check}}
mkdir -p "$OUT"
[ -x "$BIN/icl" ] && [ -x "$BIN/icl-compile" ] || { echo "no binaries in $BIN: run scripts/build-cuda.sh first" >&2; exit 1; }
# The CUDA 13 runtime libraries of the machine's PyTorch install (cudart, cuBLAS, cuRAND, NVRTC).
if [ -z "${ICL_CUDA_LIBS:-}" ]; then
  ICL_CUDA_LIBS=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))')
fi
export LD_LIBRARY_PATH="$ICL_CUDA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

echo "== 1. ridge.icl d=8 n=40: compile, certify, validate on cuda (f64 model; f32 validated beside it)"
"$BIN/icl-compile" programs/ridge.icl --set d=8 --set n=40 --prompts 64 --device cuda -o "$OUT/ridge-d8-n40" \
  | tee "$OUT/validation.txt"

median_steps() {  # median steps/s of the logged intervals after the first (warm-up) one
  python3 - "$1" <<'PY'
import json, statistics, sys
rates = [json.loads(l)["steps_per_s"] for l in open(sys.argv[1])][1:]
print(f"{statistics.median(rates):.2f}" if rates else "n/a")
PY
}

echo "== 2. training steps on cuda"
for spec in "paper_small:200:model.layers=4 model.width=128 model.mlp_hidden=512" "paper:60:"; do
  IFS=: read -r name steps sets <<<"$spec"
  args=()
  for s in $sets train.steps=$steps train.log_every=10 train.checkpoint_every=100000; do args+=(--set "$s"); done
  rm -rf "$OUT/train-$name"
  start=$(date +%s.%N)
  "$BIN/icl" train configs/paper.toml "${args[@]}" --device cuda -o "$OUT/train-$name" | tee "$OUT/train-$name.txt"
  end=$(date +%s.%N)
  echo "$name: median $(median_steps "$OUT/train-$name/metrics.jsonl") steps/s over 10-step intervals; $steps steps in $(python3 -c "print(f'{$end - $start:.1f}')") s including start-up"
done | tee "$OUT/training.txt"
