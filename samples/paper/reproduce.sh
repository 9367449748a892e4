#!/usr/bin/env bash
# reproduce.sh: the seed paper's experiment (Sagar, Tables 2-3) in one
# command. Trains 2D variational U-Net, V-Net and FCN-8s backbones with the
# latent of 10 on 5, 10, 15 and 20 cases under the paper's recipe (Adam at
# 1e-3, batch 16, 0.9 Dice + 0.1 cross-entropy + KL), and two U-Net
# baselines on the same cases (the deterministic network, sigma = 0, and MC
# dropout, p = 0.1, on deterministic weights); runs Monte-Carlo inference on
# one fixed test set that no run trains or validates on; and writes
#   results.csv   one row per run: per-image DSC and IoU (paper eq. 13-14,
#                 averaged over the test cases) for WT, TC and ET, ECE, the
#                 AUROC of the epistemic and of the entropy map for the wrong
#                 voxels, and WT Dice after discarding the 10% most uncertain
#   tables.md     Tables 2 and 3 in the paper's layout (mean +- sd over
#                 seeds, the paper's numbers beside), the baselines and the
#                 uncertainty quality
#   *.png         Dice against train size, reliability diagrams, error rate
#                 against uncertainty, and the Fig. 3 panel of one test case
#
# usage: samples/paper/reproduce.sh [--quick] [--data DIR] [--smoke] [options]
#   (default)  96x96 slices (2.5 mm), 3 seeds, 20 test cases: 60 runs
#   --quick    64x64 slices (3.75 mm), 1 seed, 10 test cases: 20 runs
#   --data DIR real BraTS 2018/2021 cases (one folder per case): the first 20
#              (by name) are the training pool, the next 2 validate, the next
#              --test-cases (the profile's) are the test set; training on
#              128x128 crops of the slices, inference on whole slices
#   --smoke    tiny sizes and a few steps: checks the pipeline (the test suite)
#   --seeds N, --test-cases N, --patch HxW (training crops), --jobs J (runs at
#   once, default: the cores), --threads T (each run's, default 1), --out DIR
# A run whose row exists is not redone: run the same command again to resume.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"

QUICK=0 SMOKE=0 DATA="" OUT="" SEEDS="" THREADS=1 JOBS=$(nproc) TEST_CASES="" PATCH_OPT="" BUILD=build
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --smoke) SMOKE=1 ;;
    --data) [ -d "${2:-}" ] || { echo "reproduce.sh: --data ${2:-}: not a folder" >&2; exit 2; }; DATA=$(cd "$2" && pwd); shift ;;
    --out) OUT=$2; shift ;;
    --seeds) SEEDS=$2; shift ;;
    --threads) THREADS=$2; shift ;;
    --jobs) JOBS=$2; shift ;;
    --test-cases) TEST_CASES=$2; shift ;;
    --patch) PATCH_OPT=$2; shift ;;
    --build) BUILD=$2; shift ;;
    -h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "reproduce.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# the profiles: image size, width, steps, samples, seeds, test cases
if [ $SMOKE = 1 ]; then
  SIZE=32x32x16 SPACING=7.5x7.5x9.6875 PATCH=32x32 BASE=2 VBASE=2 EPOCHS=1 STEPS=2 BATCH=4 SAMPLES=2 NSEED=1 NTEST=2 VALEX=4 NAME=smoke
elif [ $QUICK = 1 ]; then
  SIZE=64x64x40 SPACING=3.75x3.75x3.875 PATCH=64x64 BASE=8 VBASE=4 EPOCHS=20 STEPS=25 BATCH=16 SAMPLES=10 NSEED=1 NTEST=10 VALEX=64 NAME=quick
else
  SIZE=96x96x62 SPACING=2.5x2.5x2.5 PATCH=96x96 BASE=8 VBASE=4 EPOCHS=20 STEPS=30 BATCH=16 SAMPLES=10 NSEED=3 NTEST=20 VALEX=64 NAME=full
fi
num() { # NAME VALUE: a whole number from 1, else one line and exit 2
  case "$2" in ''|*[!0-9]*|0*) echo "reproduce.sh: --$1 '$2' is not a whole number from 1" >&2; exit 2 ;; esac
}
[ -z "$SEEDS" ] || num seeds "$SEEDS"
[ -z "$TEST_CASES" ] || num test-cases "$TEST_CASES"
num threads "$THREADS"
num jobs "$JOBS"
[ -n "$SEEDS" ] && NSEED=$SEEDS
[ -n "$TEST_CASES" ] && NTEST=$TEST_CASES
[ -n "$DATA" ] && NAME=$NAME-data
[ -n "$OUT" ] || OUT=out/paper-$NAME
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

if [ $SMOKE = 0 ] || [ ! -x "$BUILD/vbseg" ]; then
  source cmake/deps.sh
  vbs_require "${VBS_BUILD_DEPS[@]}" "${VBS_PAPER_DEPS[@]}"
  vbs_build "$BUILD"
fi
V=$(cd "$BUILD" && pwd)/vbseg
GEN=$(cd "$BUILD" && pwd)/samples/make_brats
FIG=$(cd "$BUILD" && pwd)/samples/paper_figure
command -v gnuplot >/dev/null || { echo "reproduce.sh: gnuplot is missing (apt-get install gnuplot-nox)" >&2; exit 1; }
T0=$(date +%s)
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# ---- the data: a training pool of 20, 2 validation cases, a test set ----------------
D=$OUT/data
if [ -n "$DATA" ]; then
  mapfile -t ALL < <(find "$DATA" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | LC_ALL=C sort)
  need=$((22 + NTEST))
  [ ${#ALL[@]} -ge $need ] || { echo "reproduce.sh: $DATA: ${#ALL[@]} case folders, the grid needs $need (20 training, 2 validation, $NTEST test)" >&2; exit 1; }
  rm -rf "$D"; mkdir -p "$D/pool" "$D/val" "$D/test"
  for i in $(seq 0 19); do ln -s "$DATA/${ALL[$i]}" "$D/pool/${ALL[$i]}"; done
  for i in 20 21; do ln -s "$DATA/${ALL[$i]}" "$D/val/${ALL[$i]}"; done
  for i in $(seq 22 $((need - 1))); do ln -s "$DATA/${ALL[$i]}" "$D/test/${ALL[$i]}"; done
  PATCH=128x128 # random crops of the slices in training (vbseg train's default); inference on whole slices
elif [ ! -f "$D/.done" ]; then
  log "generating 20 training, 2 validation and $NTEST test cases ($SIZE voxels of $SPACING mm, BraTS 2021 naming)"
  rm -rf "$D"; mkdir -p "$D"
  "$GEN" "$D/pool" --cases 20 --seed 1 --size "$SIZE" --spacing "$SPACING" --prefix Train --quiet
  "$GEN" "$D/val" --cases 2 --seed 2 --size "$SIZE" --spacing "$SPACING" --prefix Val --quiet
  "$GEN" "$D/test" --cases "$NTEST" --seed 3 --size "$SIZE" --spacing "$SPACING" --prefix Test --quiet
  touch "$D/.done"
fi
mapfile -t POOL < <(ls "$D/pool" | LC_ALL=C sort)
mapfile -t VALS < <(ls "$D/val" | LC_ALL=C sort)
VALCASES=$(IFS=,; echo "${VALS[*]}")
# each train size: a folder of links to the first N of the pool and the validation cases
for n in 5 10 15 20; do
  t=$D/train_n$n
  [ -d "$t" ] && continue
  mkdir -p "$t.tmp"
  for c in "${POOL[@]:0:n}"; do ln -s "$D/pool/$c" "$t.tmp/$c"; done
  for c in "${VALS[@]}"; do ln -s "$D/val/$c" "$t.tmp/$c"; done
  mv "$t.tmp" "$t"
done

[ -n "$PATCH_OPT" ] && PATCH=$PATCH_OPT

# ---- the runs -----------------------------------------------------------------------
# model name, vbseg train options, vbseg infer mode
# (V-Net at half the others' base: its 5x5 convs and stages of up to 3 convs give it
# 6.8x the U-Net's parameters and 6.6x its FLOPs at the same base, 1.7x at half)
MODELS=("unet|--arch unet --base $BASE|sample" "vnet|--arch vnet --base $VBASE|sample" "fcn|--arch fcn --base $BASE|sample"
        "unet-det|--arch unet --base $BASE --deterministic|mean"
        "unet-mcdrop|--arch unet --base $BASE --deterministic --dropout 0.1|sample")
HEADER="model,train_size,seed,dice_wt,iou_wt,dice_tc,iou_tc,dice_et,iou_et,ece,auroc_epistemic,dicekept_wt_epistemic,auroc_entropy,dicekept_wt_entropy,train_s,infer_s"
RUNS=$OUT/runs
mkdir -p "$RUNS"

# the mean row of an eval CSV as the named columns (nan where absent)
pick() { # FILE COL...
  awk -F, -v cols="${*:2}" 'NR == 1 { for (i = 1; i <= NF; i++) h[$i] = i }
    $1 == "mean" { n = split(cols, c, " "); s = ""
      for (k = 1; k <= n; k++) s = s (k > 1 ? "," : "") (c[k] in h ? $(h[c[k]]) : "nan"); print s }' "$1"
}

# one run: train, infer on the test set, evaluate with both maps, one row
run_one() { # MODEL N SEED TRAIN-OPTIONS INFER-MODE
  local model=$1 n=$2 seed=$3 topts=$4 mode=$5 r=$RUNS/${1}_n${2}_s$3 t1 t2 t3 u seg ent
  rm -rf "$r"; mkdir -p "$r"
  t1=$(date +%s)
  # shellcheck disable=SC2086
  "$V" train --data "$D/train_n$n" --val-cases "$VALCASES" --out "$r/model.vbseg" $topts --dims 2 --latent 10 \
    --batch $BATCH --lr 1e-3 --optimizer adam --epochs $EPOCHS --steps-per-epoch $STEPS ${PATCH:+--patch $PATCH} \
    --val-samples 4 --val-examples $VALEX --seed "$seed" --cache "$r/cache" --threads "$THREADS" --quiet >"$r/train.log" 2>&1 ||
    { echo "reproduce.sh: training $model (n=$n, seed $seed) failed; see $r/train.log: $(tail -1 "$r/train.log")" >&2; return 1; }
  t2=$(date +%s)
  "$V" infer --model "$r/model.vbseg" --input "$D/test" --output "$r/maps" --samples $SAMPLES --mode "$mode" --seed "$seed" \
    --save-probabilities --no-png --quiet --threads "$THREADS" >"$r/infer.log" 2>&1 ||
    { echo "reproduce.sh: inference of $model (n=$n, seed $seed) failed; see $r/infer.log" >&2; return 1; }
  t3=$(date +%s)
  for u in epistemic entropy; do
    "$V" eval --pred "$r/maps" --truth "$D/test" --uncertainty $u --discard 0.1 --out "$r/eval_$u.csv" --curves "$r/curves_$u.csv" \
      >"$r/eval_$u.log" 2>&1 || { echo "reproduce.sh: evaluating $model (n=$n, seed $seed) failed; see $r/eval_$u.log" >&2; return 1; }
  done
  seg=$(pick "$r/eval_epistemic.csv" dice_wt iou_wt dice_tc iou_tc dice_et iou_et ece auroc_epistemic dicekept_wt)
  ent=$(pick "$r/eval_entropy.csv" auroc_entropy dicekept_wt)
  # a deterministic network has no epistemic map (its MI is 0 everywhere): not a measurement
  [ "$mode" = mean ] && seg=$(echo "$seg" | awk -F, -v OFS=, '{ $8 = "nan"; $9 = "nan"; print }')
  # the maps of the 20-case runs of seed 1 are kept for the figures; the rest are done with
  { [ "$n" = 20 ] && [ "$seed" = 1 ]; } || rm -rf "$r/maps"
  rm -rf "$r/cache" "$r/model.vbseg.train/checkpoint.vbseg"
  echo "$model,$n,$seed,$seg,$ent,$((t2 - t1)),$((t3 - t2))" >"$r/row.tmp" && mv "$r/row.tmp" "$r/row.csv"
}

# the grid, JOBS runs at a time (each run's bytes do not depend on its threads)
total=$(( ${#MODELS[@]} * 4 * NSEED )) k=0
log "$total runs, $JOBS at a time, $THREADS thread(s) each; $EPOCHS epochs of $STEPS steps; results in $OUT"
for n in 5 10 15 20; do
  for spec in "${MODELS[@]}"; do
    IFS='|' read -r model topts mode <<<"$spec"
    for seed in $(seq 1 "$NSEED"); do
      k=$((k + 1))
      [ -f "$RUNS/${model}_n${n}_s$seed/row.csv" ] && continue
      while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
      log "run $k of $total: $model, $n training cases, seed $seed"
      run_one "$model" "$n" "$seed" "$topts" "$mode" &
    done
  done
done
wait || true
missing=0
for n in 5 10 15 20; do for spec in "${MODELS[@]}"; do for seed in $(seq 1 "$NSEED"); do
  [ -f "$RUNS/${spec%%|*}_n${n}_s$seed/row.csv" ] || missing=$((missing + 1))
done; done; done
[ $missing = 0 ] || { echo "reproduce.sh: $missing of $total runs failed (above); run the same command again to redo only those" >&2; exit 1; }

# ---- the outputs ----------------------------------------------------------------------
{ echo "$HEADER"; cat "$RUNS"/*/row.csv | LC_ALL=C sort -t, -k1,1 -k2,2n -k3,3n; } >"$OUT/results.csv.tmp"
mv "$OUT/results.csv.tmp" "$OUT/results.csv"
awk -F, -v profile="$NAME" -v seeds="$NSEED" -v samples="$SAMPLES" -v size="${SIZE}" -v data="${DATA:-generated}" \
  -f "$HERE/tables.awk" "$OUT/results.csv" >"$OUT/tables.md.tmp"
mv "$OUT/tables.md.tmp" "$OUT/tables.md"

# plot data (in a scratch folder): mean and sd per model and train size, and the paper's Table 2
P=$OUT/.plotdata
rm -rf "$P"; mkdir -p "$P"
awk -F, 'NR > 1 { k = $1 " " $2; n[k]++; s[k] += $4; q[k] += $4 * $4; m[$1] = 1 }
  END { for (k in n) { mu = s[k] / n[k]; v = n[k] > 1 ? (q[k] - n[k] * mu * mu) / (n[k] - 1) : 0
          split(k, a, " "); print a[1], a[2], mu, (v > 0 ? sqrt(v) : 0) > ("'"$P"'/plot_" a[1] ".dat") } }' "$OUT/results.csv"
for f in "$P"/plot_*.dat; do sort -k2,2n -o "$f" "$f"; done
printf '5 53.1 50.6 50.2\n10 56.6 51.3 52.1\n15 60.8 53.8 54.4\n20 64.3 56.5 58.9\n' >"$P/plot_paper.dat"
for m in unet vnet fcn unet-det unet-mcdrop; do
  for u in epistemic entropy; do
    c=$RUNS/${m}_n20_s1/curves_$u.csv
    [ -f "$c" ] && awk -F, 'NR > 1 && ($1 == "reliability" || $1 == "uncertainty") && $5 > 0 {
      print $1, $2, $3, $4, $5, $6, $7 > ("'"$P"'/curve_'"$m"'_'"$u"'_" $1 ".dat") }' "$c"
  done
done
PLOT="set terminal pngcairo size 900,600 font 'sans,11' noenhanced"
gnuplot <<EOF
$PLOT
set output '$OUT/dice_vs_train_size.png'
set title 'Whole-tumour Dice on the test set against train size (2D, latent 10; mean +- sd over $NSEED seed(s))'
set xlabel 'training cases'; set ylabel 'Dice (WT)'; set key below maxrows 3; set xrange [3:22]; set xtics (5, 10, 15, 20); set grid
plot '$P/plot_unet.dat' u 2:3:4 w yerrorlines lw 2 lc rgb '#1f77b4' t 'U-Net (variational)', \
     '$P/plot_vnet.dat' u 2:3:4 w yerrorlines lw 2 lc rgb '#d62728' t 'V-Net (variational)', \
     '$P/plot_fcn.dat' u 2:3:4 w yerrorlines lw 2 lc rgb '#2ca02c' t 'FCN-8s (variational)', \
     '$P/plot_unet-det.dat' u 2:3:4 w yerrorlines dt 2 lc rgb '#7f7f7f' t 'U-Net deterministic', \
     '$P/plot_unet-mcdrop.dat' u 2:3:4 w yerrorlines dt 3 lc rgb '#9467bd' t 'U-Net MC dropout', \
     '$P/plot_paper.dat' u 1:(\$2/100) w lp dt 4 pt 6 lc rgb '#1f77b4' t 'paper: U-Net (BraTS 2018)', \
     '' u 1:(\$3/100) w lp dt 4 pt 6 lc rgb '#d62728' t 'paper: V-Net', '' u 1:(\$4/100) w lp dt 4 pt 6 lc rgb '#2ca02c' t 'paper: FCN'
EOF
declare -A COLOUR=([unet]='#1f77b4' [vnet]='#d62728' [fcn]='#2ca02c' [unet-det]='#7f7f7f' [unet-mcdrop]='#9467bd')
plots() { # KIND FILE-SUFFIX: one line per model that has the data
  local s="" m f
  for m in unet vnet fcn unet-det unet-mcdrop; do
    f=$P/curve_${m}_$1.dat
    [ -f "$f" ] || continue
    [ "$m" = unet-det ] && [ "$1" = epistemic_uncertainty ] && continue # its MI is 0 everywhere
    s="$s${s:+, }'$f' u $2 w lp lw 2 lc rgb '${COLOUR[$m]}' t '$m'"
  done
  echo "$s"
}
gnuplot <<EOF
$PLOT
set output '$OUT/reliability.png'
set title 'Reliability at 20 training cases (voxels either side labels, 15 bins)'
set xlabel 'confidence (max-class mean probability)'; set ylabel 'accuracy'; set key top left; set grid
set xrange [0:1]; set yrange [0:1]
plot x w l dt 2 lc rgb 'black' t 'calibrated', $(plots epistemic_reliability '6:7')
EOF
gnuplot <<EOF
$PLOT
set terminal pngcairo size 1300,560
set output '$OUT/uncertainty_error.png'
set multiplot layout 1,2 title 'Error rate by uncertainty decile at 20 training cases (voxels either side labels)'
set ylabel 'error rate'; set key top left; set grid; set yrange [0:1]; set xrange [-0.5:9.5]
set xlabel 'decile of mutual information (epistemic)'
plot $(plots epistemic_uncertainty '2:7')
set xlabel 'decile of predictive entropy'
plot $(plots entropy_uncertainty '2:7')
unset multiplot
EOF
# Fig. 3: one test case of the variational U-Net trained on 20 cases
fr=$RUNS/unet_n20_s1/maps
fc=$(ls "$D/test" | LC_ALL=C sort | head -1)
flair=$(ls "$D/test/$fc"/*[_-]flair.nii* 2>/dev/null | head -1)
seg=$(ls "$D/test/$fc"/*[_-]seg.nii* 2>/dev/null | head -1)
if [ -d "$fr" ] && [ -n "$flair" ] && [ -n "$seg" ]; then
  "$FIG" "$OUT/figure3.png" --image "$flair" --labels "$seg" --pred "$fr/$fc.nii.gz" --entropy "$fr/${fc}_entropy.nii.gz" \
    --mi "$fr/${fc}_epistemic.nii.gz" --scale $([ $SMOKE = 1 ] && echo 2 || echo 4) --title "$fc: variational U-Net, 20 training cases, $SAMPLES samples"
fi
rm -rf "$P"
log "done in $(( $(date +%s) - T0 )) s: $OUT/tables.md, results.csv, dice_vs_train_size.png, reliability.png, uncertainty_error.png, figure3.png"
