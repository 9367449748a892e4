#!/usr/bin/env bash
# load_verify.sh [RUNS]: the cost of format 1.2's checksums at load
# (bench/load_verify.c) on the README's 15 MB reference model (variational
# 2D U-Net, base 16, depth 4, heteroscedastic heads: 1,941,266 means and as
# many rhos), warm cache, median of RUNS runs (default 200). Builds vbseg
# (build/, Release) if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-200}
if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build build -j2 --target vbseg_cli vbseg_static >/dev/null
M=$(mktemp -d /tmp/vbs_loadv.XXXXXX)
trap 'rm -rf "$M"' EXIT
cc -O2 -Iruntime -Iruntime/include -Ibuild/gen bench/load_verify.c build/libvbseg_static.a \
  -lopenblas -lprotobuf-c -lnifti2 -lznz -ljansson -lz -lm -fopenmp -o "$M/load_verify"
build/vbseg create --arch unet --latent 0 --dims 2 --in-channels 4 --classes 1 --base 16 --depth 4 --norm none --hetero --out "$M/ref.vbseg" >/dev/null
"$M/load_verify" "$M/ref.vbseg" "$R"
