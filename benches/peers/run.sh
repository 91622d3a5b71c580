#!/usr/bin/env bash
# Training speed side by side: icl (`cargo bench --bench train`: the fused engine and the Candle
# engine) and the JAX peer (benches/peers/jax_train.py, the same step) on this machine, per
# config, with the ratios. Needs `python3 -m pip install jax` (not part of CI).
# Usage: benches/peers/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -c "import jax" 2>/dev/null || { echo "needs jax: python3 -m pip install jax" >&2; exit 1; }

echo "== icl: cargo bench --bench train" >&2
out=$(cargo bench --bench train -- --noplot 2>&1 | tee /dev/stderr)
# Criterion prints `GROUP/NAME  time: [low est high]`; keep the estimate, in ms.
icl_ms() {
  echo "$out" | awk -v name="$1" '
    index($0, name) { found = 1 }
    found && /time:/ {
      for (i = 1; i <= NF; i++) if ($i ~ /^\[/) { v = $(i + 2); u = $(i + 3); break }
      if (u == "s") v *= 1000; else if (u == "µs" || u == "us") v /= 1000
      print v; exit
    }'
}

printf "%-12s %12s %12s %12s %10s %10s\n" config "fused ms" "candle ms" "jax ms" "fused/jax" "candle/jax"
for pair in "tiny:300" "paper_small:20"; do
  IFS=: read -r cfg steps <<<"$pair"
  fused=$(icl_ms "train_step_fused/$cfg")
  candle=$(icl_ms "train_step_candle/$cfg")
  jax=$(python3 benches/peers/jax_train.py --config "$cfg" --steps "$steps" --warmup 5 |
        python3 -c "import json,sys; print(json.load(sys.stdin)['ms_per_step'])")
  python3 - "$cfg" "$fused" "$candle" "$jax" <<'PY'
import sys
cfg, fused, candle, jax = sys.argv[1], *map(float, sys.argv[2:])
print(f"{cfg:<12} {fused:>12.2f} {candle:>12.2f} {jax:>12.2f} {fused / jax:>9.2f}x {candle / jax:>9.2f}x")
PY
done
