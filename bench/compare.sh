#!/usr/bin/env bash
# compare.sh [SAMPLES] [ROUNDS]: vbseg against PyTorch, side by side in one
# run on this machine, on the README's reference network (variational 2D
# U-Net, 1x4x240x240, base 16, depth 4, heteroscedastic 1x1 heads, every
# conv variational, weights re-drawn every pass). For 1 and 2 threads it
# alternates the two programs ROUNDS times and keeps each one's best
# per-sample time, so a noisy neighbour on a shared machine hits both
# alike. Needs a built tree (build/) and Debian's python3-torch.
set -euo pipefail
cd "$(dirname "$0")/.."
S=${1:-10}
R=${2:-3}
M=$(mktemp -d /tmp/vbs_bench.XXXXXX)
trap 'rm -rf "$M"' EXIT
build/vbseg create --arch unet --latent 0 --dims 2 --in-channels 4 --classes 1 --base 16 --depth 4 --norm none --hetero --out "$M/ref.vbseg" >/dev/null
flops=$(build/vbseg bench --model "$M/ref.vbseg" --samples 1 --repeat 1 --threads 1 --shape 1x4x240x240 | awk '/flops per pass/ {print $4 * 1e9}')
echo "reference network: $(awk -v f="$flops" 'BEGIN {printf "%.3f", f / 1e9}') GFLOP per pass; best of $R alternating rounds of $S samples"
for t in 1 2; do
  vb=1e9 pb=1e9
  for r in $(seq "$R"); do
    v=$(build/vbseg bench --model "$M/ref.vbseg" --samples "$S" --repeat 1 --threads "$t" --shape 1x4x240x240 | tail -1 | awk '{print $2}')
    p=$(/usr/bin/python3 bench/torch_unet.py --samples "$S" --repeat 1 --threads "$t" --flops "$flops" | tail -1 | awk '{print $3}')
    vb=$(awk -v a="$vb" -v b="$v" 'BEGIN {print (b < a ? b : a)}')
    pb=$(awk -v a="$pb" -v b="$p" 'BEGIN {print (b < a ? b : a)}')
  done
  awk -v t="$t" -v v="$vb" -v p="$pb" -v f="$flops" 'BEGIN {
    printf "threads %d: vbseg %.1f ms (%.1f GFLOP/s) | PyTorch %.1f ms (%.1f GFLOP/s) | vbseg time / PyTorch time = %.2f\n",
           t, v, f / v * 1e-6, p, f / p * 1e-6, v / p }'
done
