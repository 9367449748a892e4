#!/usr/bin/env bash
# compare_train.sh [ROUNDS] [STEPS]: vbseg's trainer against PyTorch, side by
# side in one run on this machine: the optimiser step (minibatch of 16
# random 4x128x128 images, one weight draw, 0.9 Dice + 0.1 heteroscedastic
# NLL + weighted KL, backward, Adam) on the README's reference network
# (variational 2D U-Net, base 16, depth 4, no normalisation, heteroscedastic
# 1x1 heads), timed by `vbseg bench --train` and bench/torch_train.py. For 1
# and 2 threads it alternates the two programs ROUNDS times, each in a
# process of its own (so each peak RSS is that program's alone), and keeps
# each one's best step (and the largest peak RSS of its rounds), so a noisy
# neighbour on a shared machine hits both alike. Builds vbseg (build/, Release) if needed; needs Debian's
# python3-torch.
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-3}
N=${2:-5}
B=16 SHAPE=4x128x128
if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build build -j2 --target vbseg_cli >/dev/null
if ! build/vbseg bench --help | grep -q -- --train; then
  echo "compare_train.sh: build/vbseg: its bench has no --train" >&2
  exit 1
fi
M=$(mktemp -d /tmp/vbs_bench.XXXXXX)
trap 'rm -rf "$M"' EXIT
build/vbseg create --arch unet --latent 0 --dims 2 --in-channels 4 --classes 1 --base 16 --depth 4 --norm none --hetero --out "$M/ref.vbseg" >/dev/null

# step NAME CMD...: runs CMD, checks that its last line is the benchmark's
# "train-step: X ms, Y img/s, peak RSS Z MB", and prints "X Z"
step() {
  local name=$1 out last
  shift
  if ! out=$("$@" 2>&1); then
    printf 'compare_train.sh: %s failed:\n%s\n' "$name" "$out" >&2
    exit 1
  fi
  last=$(tail -n 1 <<<"$out")
  if ! [[ $last =~ ^train-step:\ ([0-9.]+)\ ms,\ [0-9.]+\ img/s,\ peak\ RSS\ ([0-9.]+)\ MB$ ]]; then
    printf 'compare_train.sh: %s: last line is not "train-step: X ms, Y img/s, peak RSS Z MB": %s\n' "$name" "$last" >&2
    exit 1
  fi
  echo "${BASH_REMATCH[1]} ${BASH_REMATCH[2]}"
}

echo "training step: batch $B x $SHAPE; best step of $R alternating rounds of $N steps; $(uptime | sed 's/.*\(load average\)/\1/')"
echo "| threads | vbseg ms/step | vbseg img/s | PyTorch ms/step | PyTorch img/s | img/s vbseg / PyTorch | vbseg peak RSS | PyTorch peak RSS |"
echo "|---|---|---|---|---|---|---|---|"
for t in 1 2; do
  vb=1e9 pb=1e9 vr=0 pr=0
  for r in $(seq "$R"); do
    res=$(step vbseg build/vbseg bench --train --model "$M/ref.vbseg" --batch "$B" --shape "$SHAPE" --threads "$t" --steps "$N" --repeat 1)
    read -r v vm <<<"$res"
    res=$(step PyTorch /usr/bin/python3 bench/torch_train.py --batch "$B" --shape "$SHAPE" --threads "$t" --steps "$N" --repeat 1)
    read -r p pm <<<"$res"
    vb=$(awk -v a="$vb" -v b="$v" 'BEGIN {print (b < a ? b : a)}')
    pb=$(awk -v a="$pb" -v b="$p" 'BEGIN {print (b < a ? b : a)}')
    vr=$(awk -v a="$vr" -v b="$vm" 'BEGIN {print (b > a ? b : a)}')
    pr=$(awk -v a="$pr" -v b="$pm" 'BEGIN {print (b > a ? b : a)}')
  done
  awk -v t="$t" -v b="$B" -v v="$vb" -v p="$pb" -v vm="$vr" -v pm="$pr" 'BEGIN {
    printf "| %d | %.0f | %.1f | %.0f | %.1f | **%.2f** | %.0f MB | %.0f MB |\n",
           t, v, b * 1e3 / v, p, b * 1e3 / p, p / v, vm, pm }'
done
echo "$(uptime | sed 's/.*\(load average\)/\1/') at the end"
