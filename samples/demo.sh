#!/usr/bin/env bash
# The demo of the README's Quick start: builds vbseg, generates a small
# BraTS-like training set with the scan generator, trains a variational 2D
# U-Net (the seed paper's latent of 10 at the bottleneck, a heteroscedastic
# head) by Bayes by Backprop for about two minutes, then runs Monte-Carlo
# inference with uncertainty on generated cases it did not train on,
# evaluates them against their reference labels (Dice, IoU, HD95, and how
# well the epistemic uncertainty finds the wrong voxels), and points to the
# previews. Everything goes to out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
source cmake/deps.sh
vbs_require "${VBS_BUILD_DEPS[@]}"
vbs_build build
rm -rf out/demo
mkdir -p out/demo/train out/demo/test
echo "== generating 16 training and 3 test scans (96 x 96 x 24, 4 channels, BraTS labels)"
for i in $(seq -w 1 16); do mkdir -p "out/demo/train/Train_$i"; build/samples/make_scan "out/demo/train/Train_$i" "Train_$i" 96 96 24 >/dev/null; done
for i in 1 2 3; do mkdir -p "out/demo/test/Test_$i"; build/samples/make_scan "out/demo/test/Test_$i" "Test_$i" 96 96 24 >/dev/null; done
set -x
build/vbseg train --data out/demo/train --out out/demo/unet2d.vbseg --base 8 --depth 3 --latent 10 --hetero \
  --batch 16 --patch 96x96 --lr 2e-3 --minutes 2 --val-samples 2 --seed 1
build/vbseg info out/demo/unet2d.vbseg
build/vbseg infer --model out/demo/unet2d.vbseg --input out/demo/test --output out/demo/maps --samples 20 --save-probabilities
build/vbseg eval --pred out/demo/maps --truth out/demo/test
set +x
echo
echo "The segmentation, its uncertainty maps (entropy, epistemic MI, aleatoric, and the"
echo "eq. 10-11 split of the heteroscedastic head) and a preview per case are in out/demo/maps:"
ls out/demo/maps/*_preview.png
echo "Training log and curves: out/demo/unet2d.vbseg.train/train_log.csv and training_curves.png"
