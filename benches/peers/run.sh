#!/usr/bin/env bash
# Training speed side by side: icl (`cargo bench --bench train`) and the JAX peer
# (benches/peers/jax_train.py, the same step) on this machine, per config, with the ratio.
# Needs `python3 -m pip install jax` (not part of CI). Usage: benches/peers/run.sh [criterion filter]
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -c "import jax" 2>/dev/null || { echo "needs jax: python3 -m pip install jax" >&2; exit 1; }

echo "== icl: cargo bench --bench train" >&2
out=$(cargo bench --bench train -- --noplot "${1:-}" 2>&1 | tee /dev/stderr)
# Criterion prints `train_step/NAME  time: [low est high]`; keep the estimate, in ms.
icl_ms() {
  echo "$out" | awk -v name="$1" '
    index($0, "train_step/" name) { found = 1 }
    found && /time:/ {
      for (i = 1; i <= NF; i++) if ($i ~ /^\[/) { v = $(i + 2); u = $(i + 3); break }
      if (u == "s") v *= 1000; else if (u == "µs" || u == "us") v /= 1000
      print v; exit
    }'
}

printf "%-12s %12s %12s %10s\n" config "icl ms/step" "jax ms/step" "icl/jax"
for pair in "tiny:tiny.toml:300" "paper_small:paper_small:20"; do
  IFS=: read -r cfg bench steps <<<"$pair"
  icl=$(icl_ms "$bench")
  jax=$(python3 benches/peers/jax_train.py --config "$cfg" --steps "$steps" --warmup 5 |
        python3 -c "import json,sys; print(json.load(sys.stdin)['ms_per_step'])")
  python3 - "$cfg" "$icl" "$jax" <<'PY'
import sys
cfg, icl, jax = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
print(f"{cfg:<12} {icl:>12.2f} {jax:>12.2f} {icl / jax:>9.2f}x")
PY
done
