#!/usr/bin/env bash
# compare.sh [SAMPLES]: vbseg against PyTorch, side by side in one run on
# this machine, on the README's reference network (variational 2D U-Net,
# 1x4x240x240, base 16, depth 4, heteroscedastic 1x1 heads, every conv
# variational, weights re-drawn every pass). Prints both per-sample times
# at 1 thread and at 2, and the ratios. Needs a built tree (build/) and
# Debian's python3-torch.
set -euo pipefail
cd "$(dirname "$0")/.."
S=${1:-10}
M=$(mktemp -d /tmp/vbs_bench.XXXXXX)
trap 'rm -rf "$M"' EXIT
build/vbseg create --arch unet --dims 2 --in-channels 4 --classes 1 --base 16 --depth 4 --hetero --out "$M/ref.vbseg" >/dev/null
flops=$(build/vbseg bench --model "$M/ref.vbseg" --samples 1 --repeat 1 --threads 1 --shape 1x4x240x240 | awk '/flops per pass/ {print $4 * 1e9}')
for t in 1 2; do
  v=$(build/vbseg bench --model "$M/ref.vbseg" --samples "$S" --threads "$t" --shape 1x4x240x240 | tail -1)
  p=$(/usr/bin/python3 bench/torch_unet.py --samples "$S" --threads "$t" --flops "$flops" | tail -1)
  vm=$(echo "$v" | awk '{print $2}'); pm=$(echo "$p" | awk '{print $3}')
  echo "threads $t: vbseg $v | $p | vbseg time / torch time = $(awk -v a="$vm" -v b="$pm" 'BEGIN {printf "%.2f", a / b}')"
done
