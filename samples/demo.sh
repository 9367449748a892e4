#!/usr/bin/env bash
# The demo of the README's Quick start: builds vbseg, makes a variational
# 2D U-Net (BraTS labels, a latent of 10 at the bottleneck), describes it,
# generates a synthetic four-channel scan and runs 20 Monte-Carlo samples
# on it, writing the segmentation and uncertainty maps to out/demo/maps.
# The model is untrained: the maps show the machinery, not a diagnosis.
set -euo pipefail
cd "$(dirname "$0")/.."
source cmake/deps.sh
vbs_require "${VBS_BUILD_DEPS[@]}"
vbs_build build
mkdir -p out/demo/scan
set -x
build/vbseg create --arch unet --dims 2 --in-channels 4 --classes 4 --base 16 --depth 4 --latent 10 --out out/demo/unet2d.vbseg
build/vbseg info out/demo/unet2d.vbseg
build/samples/make_scan out/demo/scan Demo_001
build/vbseg run --model out/demo/unet2d.vbseg \
  --input out/demo/scan/Demo_001_flair.nii.gz --input out/demo/scan/Demo_001_t1.nii.gz \
  --input out/demo/scan/Demo_001_t1ce.nii.gz --input out/demo/scan/Demo_001_t2.nii.gz \
  --samples 20 --seed 0 --out out/demo/maps
ls out/demo/maps
