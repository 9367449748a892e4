#!/usr/bin/env bash
# train.sh BUILD_DIR: `vbseg train` end to end on generated scans: training
# learns (the trained model's Dice on unseen cases against the untrained
# one's, through vbseg infer and vbseg eval; its epistemic map higher on the
# lesion boundary than in the core and the background; the V-Net and FCN-8s
# families against their untrained selves too); the same model bytes
# at 1 and 2 threads; a run stopped after 2 epochs and resumed, and a run
# interrupted by SIGINT mid-epoch and resumed, equal the uninterrupted run
# byte for byte; every refusal (bad cases listed at once and --skip-bad, a
# configuration too large, a loss that goes NaN, a corrupt, foreign or
# differently-configured checkpoint, a full disk during a checkpoint); the
# nnU-Net raw, BraTS 2023 and MSD layouts; --deterministic (sigma = 0) trained, its KL exactly 0.
set -u
B=$1
S=$(cd "$(dirname "$0")" && pwd)
V=$B/vbseg
T=$(mktemp -d /tmp/vbs_train.XXXXXX)
trap 'umount "$T/tiny" 2>/dev/null; rm -rf "$T"' EXIT
pass=0 fail=0
ok() { if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $*"; fi; }
not() { ! "$@"; }
PY=/usr/bin/python3

# a BraTS 2021 training set (the generator varies the lesion with the case name), and two unseen cases
mkdir -p "$T/data" "$T/unseen"
for i in 01 02 03 04 05 06 07 08; do mkdir -p "$T/data/Case_$i"; "$B/samples/make_scan" "$T/data/Case_$i" "Case_$i" 48 48 8 >/dev/null; done
for i in 91 92; do mkdir -p "$T/unseen/New_$i"; "$B/samples/make_scan" "$T/unseen/New_$i" "New_$i" 48 48 8 >/dev/null; done
SMALL=(--base 6 --depth 2 --latent 4 --batch 8 --patch 48x48 --val 0.25 --seed 5 --val-samples 2)

# a run on the BraTS set: the layout and labels said, the model, its card, the log, the curves
"$V" train --data "$T/data" --out "$T/m.vbseg" "${SMALL[@]}" --epochs 3 --steps-per-epoch 4 --hetero --threads 2 >"$T/train.out" 2>&1
ok test $? -eq 0
ok grep -q "brats2021 layout, 8 cases, 4 channels (flair, t1, t1ce, t2), labels 0=background 1=necrotic core 2=edema 4=enhancing tumour" "$T/train.out"
ok grep -q "6 training and 2 validation cases" "$T/train.out"
ok grep -q "^epoch 3/3 step 4/4 | loss [0-9.]* (Dice" "$T/train.out"   # the progress line (not a tty: at each epoch's end)
# a run for a time: the progress line counts epochs without a total, and the run ends by itself
"$V" train --data "$T/data" --out "$T/min.vbseg" "${SMALL[@]}" --minutes 0.05 --steps-per-epoch 2 >"$T/min.out" 2>&1
ok test $? -eq 0
ok grep -q "^epoch 1 step 2/2 | loss [0-9.]* (Dice" "$T/min.out"
ok test -s "$T/min.vbseg"
ok test -s "$T/m.vbseg"
ok test "$(tail -n +2 "$T/m.vbseg.train/train_log.csv" | wc -l)" -eq 3
"$V" info "$T/m.vbseg" >"$T/info.txt"
ok grep -q "vbseg train" "$T/info.txt"
ok grep -q "val_dice_wt" "$T/info.txt"
ok grep -q "channels:     flair, t1, t1ce, t2" "$T/info.txt"
ok grep -q "heteroscedastic" "$T/info.txt"
ok $PY - "$T/m.vbseg.train/training_curves.png" <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"\x89PNG\r\n\x1a\n"
w, h = struct.unpack(">II", b[16:24])
assert w >= 600 and h >= 600, (w, h)
PY

# training learns (a lesion-against-brain task in the nnU-Net layout): on unseen cases, through vbseg infer and
# vbseg eval, Dice far above the untrained model's; the epistemic map higher on the lesion's boundary than in its
# core and in the background
mkdir -p "$T/bin/imagesTr" "$T/bin/labelsTr" "$T/ubin" "$T/ubin_truth"
binarise() { $PY -c "
import gzip, struct, sys
b = bytearray(gzip.open(sys.argv[1]).read()); off = int(struct.unpack('<f', b[108:112])[0])
b[off:] = bytes(1 if v else 0 for v in b[off:]); gzip.open(sys.argv[2], 'wb').write(bytes(b))" "$1" "$2"; }
for i in 01 02 03 04 05 06 07 08; do
  n=0; for ch in flair t1 t1ce t2; do cp "$T/data/Case_$i/Case_${i}_$ch.nii.gz" "$T/bin/imagesTr/c${i}_000$n.nii.gz"; n=$((n+1)); done
  binarise "$T/data/Case_$i/Case_${i}_seg.nii.gz" "$T/bin/labelsTr/c$i.nii.gz"
done
for i in 91 92; do
  n=0; for ch in flair t1 t1ce t2; do cp "$T/unseen/New_$i/New_${i}_$ch.nii.gz" "$T/ubin/u${i}_000$n.nii.gz"; n=$((n+1)); done
  binarise "$T/unseen/New_$i/New_${i}_seg.nii.gz" "$T/ubin_truth/u$i.nii.gz"
done
echo '{"channel_names": {"0": "flair", "1": "t1", "2": "t1ce", "3": "t2"}, "labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"}' \
  >"$T/bin/dataset.json"
# beats_untrained TRAINED UNTRAINED SAMPLES MIN: both models through infer (maps in $T/o_NAME) and eval on the unseen
# cases; the trained one's lesion Dice above MIN and 0.4 above the untrained one's
beats_untrained() {
  for m in "$1" "$2"; do
    "$V" infer --model "$T/$m.vbseg" --input "$T/ubin" --output "$T/o_$m" --samples "$3" --no-png --quiet
    "$V" eval --pred "$T/o_$m" --truth "$T/ubin_truth" --out "$T/eval_$m.csv" >/dev/null
  done
  $PY - "$1" "$T/eval_$1.csv" "$T/eval_$2.csv" "$4" <<'PY'
import csv, sys
def mean(p): return {k: float(v) for k, v in next(r for r in csv.DictReader(open(p)) if r["case"] == "mean").items() if k != "case"}
t, u = mean(sys.argv[2]), mean(sys.argv[3])
print(f"  {sys.argv[1]}: lesion Dice on unseen cases: trained {t['dice_label1']:.3f}, untrained {u['dice_label1']:.3f}; AUROC of MI for wrong voxels {t['auroc_epistemic']:.3f}")
assert t["dice_label1"] > float(sys.argv[4]) and t["dice_label1"] > u["dice_label1"] + 0.4, (t["dice_label1"], u["dice_label1"])
PY
}
"$V" train --data "$T/bin" --out "$T/lesion.vbseg" "${SMALL[@]}" --epochs 20 --steps-per-epoch 8 --lr 5e-3 --hetero --threads 2 --quiet
ok test $? -eq 0
"$V" create --arch unet --dims 2 --in-channels 4 --classes 2 --base 6 --depth 2 --latent 4 --hetero --seed 5 --out "$T/untrained.vbseg" >/dev/null
ok beats_untrained lesion untrained 10 0.8
ok $PY - "$T/o_lesion" "$T/ubin" "$T/ubin_truth" <<'PY'
import gzip, struct, sys
import numpy as np
def load(p):
    r = gzip.open(p).read(); d = struct.unpack('<8h', r[40:56]); off = int(struct.unpack('<f', r[108:112])[0])
    dt = {2: 'u1', 4: '<i2', 16: '<f4'}[struct.unpack('<h', r[70:72])[0]]
    return np.frombuffer(r[off:], dt).reshape(d[3], d[2], d[1]).astype(np.float64)
def grow(m):  # one voxel within each slice (a 2D model sees slices)
    g = m.copy()
    for ax in (1, 2):
        for sh in (1, -1):
            g |= np.roll(m, sh, ax)
    return g
bnd, core, bg = [], [], []
for c in ("u91", "u92"):
    mi = load(f"{sys.argv[1]}/{c}_epistemic.nii.gz"); lesion = load(f"{sys.argv[3]}/{c}.nii.gz") > 0
    brain = load(f"{sys.argv[2]}/{c}_0000.nii.gz") > 0
    edge = (grow(lesion) & ~lesion) | (lesion & grow(~lesion))   # brain touching the lesion, lesion touching brain
    near = grow(grow(edge))
    bnd.append(mi[edge & brain].mean()); core.append(mi[lesion & ~near].mean()); bg.append(mi[brain & ~lesion & ~near].mean())
b, k, g = np.mean(bnd), np.mean(core), np.mean(bg)
print(f"  mean MI: boundary {b:.5f}, core {k:.5f}, background {g:.5f}")
assert b > 3 * k and b > 3 * g, (b, k, g)
PY
# the V-Net and FCN-8s families learn the same task: Dice on the unseen cases, through infer and eval, well above
# their untrained selves' (a few seconds each: base 4, 4 epochs of 6 steps)
for spec in "vnet 2" "fcn 3"; do
  set -- $spec
  FAM=(--arch "$1" --base 4 --depth "$2" --latent 4 --hetero --seed 5)
  "$V" train --data "$T/bin" --out "$T/$1.vbseg" "${FAM[@]}" --batch 8 --patch 48x48 --val 0.25 --val-samples 2 --val-examples 16 \
    --epochs 4 --steps-per-epoch 6 --lr 5e-3 --threads 2 --quiet
  ok test $? -eq 0
  "$V" create "${FAM[@]}" --dims 2 --in-channels 4 --classes 2 --out "$T/untrained_$1.vbseg" >/dev/null
  ok beats_untrained "$1" "untrained_$1" 4 0.6
done
"$V" train --data "$T/bin" --out "$T/fcn2.vbseg" --arch fcn --depth 2 --epochs 1 --quiet 2>"$T/fcn2.err"
ok test $? -eq 2
ok grep -q "^vbseg train: fcn needs --depth 3 or more" "$T/fcn2.err"
ok test ! -e "$T/fcn2.vbseg"

# validation on a part of each case (--val-examples): one epoch from the trained model, validated on 2 slices of c07
# (the rule of the README: one at the middle of its foreground slices, one at the middle of its box); the log's
# mean-mode Dice equals the Dice of vbseg infer's labels on those slices, computed here
mkdir -p "$T/vx"; cp "$T"/bin/imagesTr/c07_000?.nii.gz "$T/vx/"
"$V" train --data "$T/bin" --out "$T/part.vbseg" "${SMALL[@]}" --init "$T/lesion.vbseg" --hetero --epochs 1 --steps-per-epoch 1 \
  --val-cases c07 --val-examples 2 --val-samples 0 --quiet
ok test $? -eq 0
"$V" infer --model "$T/part.vbseg" --input "$T/vx" --output "$T/o_part" --mode mean --no-png --quiet
ok $PY - "$T/o_part/c07.nii.gz" "$T/bin/labelsTr/c07.nii.gz" "$T/vx" "$T/part.vbseg.train/train_log.csv" <<'PY'
import csv, gzip, struct, sys
import numpy as np
def load(p):
    r = gzip.open(p).read(); d = struct.unpack('<8h', r[40:56]); off = int(struct.unpack('<f', r[108:112])[0])
    dt = {2: 'u1', 4: '<i2', 16: '<f4'}[struct.unpack('<h', r[70:72])[0]]
    return np.frombuffer(r[off:], dt).reshape(d[3], d[2], d[1]).astype(np.float64)
pred, ref = load(sys.argv[1]) > 0, load(sys.argv[2]) > 0
nz = np.zeros(ref.shape, bool)
for n in range(4): nz |= load(f"{sys.argv[3]}/c07_000{n}.nii.gz") != 0
zs = np.nonzero((nz | ref).any(axis=(1, 2)))[0]; z0, z1 = zs[0], zs[-1] + 1      # the box in z
fg = [z - z0 for z in range(z0, z1) if ref[z].any()]
a = fg[len(fg) // 2]; b = (z1 - z0) // 2
while b == a: b = (b + 1) % (z1 - z0)
sl = [z0 + a, z0 + b]
p, t = pred[sl], ref[sl]
dice = 2 * (p & t).sum() / (p.sum() + t.sum())
whole = 2 * (pred & ref).sum() / (pred.sum() + ref.sum())
log = float(next(csv.DictReader(open(sys.argv[4])))["val_dice"])
print(f"  validation Dice on slices {sl}: log {log:.6f}, recomputed {dice:.6f} (whole case {whole:.6f})")
assert abs(log - dice) < 2e-6, (log, dice)
PY

# validation's default share (--val-examples unset): about a tenth of an epoch's arithmetic, 3 passes per training
# voxel against 1 + val-samples per validation voxel, clamped to 64..256 slices; computed here from the boxes of
# the held-out cases (non-zero voxels of any channel, or labelled) and checked against the count the run says
mkdir -p "$T/tall"
for i in 1 2 3 4 5 6; do mkdir -p "$T/tall/T$i"; "$B/samples/make_scan" "$T/tall/T$i" "T$i" 40 44 40 >/dev/null; done
for spe in 1 200 400; do
  "$V" train --data "$T/tall" --out "$T/tall$spe.vbseg" --base 4 --depth 2 --latent 0 --batch 8 --patch 32x32 --val-cases T1,T2,T3,T4 \
    --val-samples 2 --epochs 1 --steps-per-epoch $spe --minutes 0.001 >"$T/tall$spe.out" 2>&1
  ok $PY - "$T/tall" "$spe" "$T/tall$spe.out" <<'PY'
import gzip, re, struct, sys
import numpy as np
def load(p):
    r = gzip.open(p).read(); d = struct.unpack('<8h', r[40:56]); off = int(struct.unpack('<f', r[108:112])[0])
    dt = {2: 'u1', 4: '<i2', 16: '<f4'}[struct.unpack('<h', r[70:72])[0]]
    return np.frombuffer(r[off:], dt).reshape(d[3], d[2], d[1])
d, spe = sys.argv[1], int(sys.argv[2])
area, depth = [], []
for c in ("T1", "T2", "T3", "T4"):
    nz = load(f"{d}/{c}/{c}_seg.nii.gz") != 0
    for ch in ("flair", "t1", "t1ce", "t2"): nz |= load(f"{d}/{c}/{c}_{ch}.nii.gz") != 0
    zs, ys, xs = np.nonzero(nz)
    area.append((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)); depth.append(zs.max() - zs.min() + 1)
n = int(0.1 * 3 * spe * 8 * 32 * 32 / (np.mean(area) * 3))
n = min(max(n, 64), 256)
share = [n // 4 + (i < n % 4) for i in range(4)]
n = sum(z if s >= z else s for s, z in zip(share, depth))   # a case with fewer slices than its share is checked whole
said = re.search(r"validation each epoch: (\d+) slices of 4 held-out cases, mean mode and 2 samples", open(sys.argv[3]).read())
print(f"  --steps-per-epoch {spe}: {said and said.group(1)} validation slices, want {n} (mean box {np.mean(area):.0f} px)")
assert said and int(said.group(1)) == n
PY
done
ok grep -q "validation each epoch: [0-9]* slices of 2 held-out cases, mean mode and 2 samples" "$T/train.out"

# reproducibility: the same model bytes at 1 and 2 threads
"$V" train --data "$T/data" --out "$T/t1.vbseg" "${SMALL[@]}" --epochs 2 --steps-per-epoch 3 --threads 1 --quiet
"$V" train --data "$T/data" --out "$T/t2.vbseg" "${SMALL[@]}" --epochs 2 --steps-per-epoch 3 --threads 2 --quiet
ok cmp -s "$T/t1.vbseg" "$T/t2.vbseg"
# stopped after 2 epochs and resumed to 3: the same bytes as 3 epochs straight
"$V" train --data "$T/data" --out "$T/r3.vbseg" "${SMALL[@]}" --epochs 3 --steps-per-epoch 3 --quiet
"$V" train --data "$T/data" --out "$T/r.vbseg" "${SMALL[@]}" --epochs 2 --steps-per-epoch 3 --quiet
ok "$V" train --resume "$T/r.vbseg.train/checkpoint.vbseg" --epochs 3 --quiet
ok cmp -s "$T/r3.vbseg" "$T/r.vbseg"
ok test "$(tail -n +2 "$T/r.vbseg.train/train_log.csv" | wc -l)" -eq 3
ok test "$(tail -n +2 "$T/r.vbseg.train/train_log.csv" | cut -d, -f1-5)" = "$(tail -n +2 "$T/r3.vbseg.train/train_log.csv" | cut -d, -f1-5)"
# SIGINT mid-epoch: a checkpoint, the command that resumes, exit 130; the resumed run equals the uninterrupted one
"$V" train --data "$T/data" --out "$T/s_ref.vbseg" "${SMALL[@]}" --epochs 3 --steps-per-epoch 60 --threads 1 --quiet
"$V" train --data "$T/data" --out "$T/s.vbseg" "${SMALL[@]}" --epochs 3 --steps-per-epoch 60 --threads 1 >"$T/sig.out" 2>&1 &
pid=$!
for _ in $(seq 1200); do grep -q "^epoch 1:" "$T/sig.out" 2>/dev/null && break; sleep 0.02; done
kill -INT $pid; wait $pid; rc=$?
ok test $rc -eq 130
ok grep -q "to continue: vbseg train --resume $T/s.vbseg.train/checkpoint.vbseg" "$T/sig.out"
ok grep -q "stopped at step [0-9]* (epoch 2)" "$T/sig.out"                   # mid-epoch
ok "$V" train --resume "$T/s.vbseg.train/checkpoint.vbseg" --quiet
ok cmp -s "$T/s_ref.vbseg" "$T/s.vbseg"

# refusals
# a resume with another option, a corrupt checkpoint, another data set
"$V" train --resume "$T/r.vbseg.train/checkpoint.vbseg" --lr 0.01 2>"$T/opt.err"
ok test $? -eq 2
ok grep -q -- "--lr 0.01 differs from the checkpoint's 0.001" "$T/opt.err"
cp "$T/r.vbseg.train/checkpoint.vbseg" "$T/bad.ckpt"
printf '\x55' | dd of="$T/bad.ckpt" bs=1 seek=100 conv=notrunc 2>/dev/null
"$V" train --resume "$T/bad.ckpt" 2>"$T/bad.err"
ok test $? -eq 1
ok test "$(wc -l <"$T/bad.err")" -eq 1
ok grep -q "bad.ckpt: header checksum mismatch" "$T/bad.err"
"$V" train --resume "$T/m.vbseg" 2>"$T/notck.err"
ok grep -q "not a checkpoint" "$T/notck.err"
mkdir -p "$T/other/Case_01" && "$B/samples/make_scan" "$T/other/Case_01" Case_01 48 48 8 >/dev/null && cp -r "$T/data/Case_02" "$T/other/"
cp -r "$T/r.vbseg.train" "$T/foreign.train"
"$V" train --resume "$T/foreign.train/checkpoint.vbseg" --data "$T/other" 2>"$T/foreign.err"
ok test $? -ne 0
# bad cases: all listed at once, nothing trained; --skip-bad trains without them
mkdir -p "$T/bad"
for c in Good_1 Good_2 Good_3 NoLabel Geometry Values Broken; do mkdir -p "$T/bad/$c"; "$B/samples/make_scan" "$T/bad/$c" "$c" 48 48 8 >/dev/null; done
rm "$T/bad/NoLabel/NoLabel_seg.nii.gz"
$PY "$S/write_nifti.py" "$T/bad/Geometry/Geometry_seg.nii.gz" 48 48 8 1
$PY - "$T/bad/Values/Values_seg.nii.gz" <<'PY'
import gzip, struct, sys
b = bytearray(gzip.open(sys.argv[1]).read()); off = int(struct.unpack('<f', b[108:112])[0])
b[off + 100] = 7                                              # a label value the BraTS map does not have
gzip.open(sys.argv[1], 'wb').write(bytes(b))
PY
head -c 3000 /dev/urandom >"$T/bad/Broken/Broken_t1.nii.gz"
"$V" train --data "$T/bad" --out "$T/b.vbseg" "${SMALL[@]}" --epochs 1 --steps-per-epoch 1 >"$T/bad.out" 2>&1
ok test $? -eq 1
for c in NoLabel Geometry Values Broken; do ok grep -q "vbseg train: .*$c" "$T/bad.out"; done
ok grep -q "NoLabel: no label file" "$T/bad.out"
ok grep -q "label value 7 is not in the label map" "$T/bad.out"
ok grep -q "4 of 7 cases cannot be used (listed above); fix them or train without them with --skip-bad" "$T/bad.out"
ok test ! -e "$T/b.vbseg"
ok "$V" train --data "$T/bad" --out "$T/b.vbseg" "${SMALL[@]}" --epochs 1 --steps-per-epoch 1 --skip-bad --quiet
ok test -s "$T/b.vbseg"
# a configuration that cannot fit is refused before the first step, with its estimate
"$V" train --data "$T/data" --out "$T/huge.vbseg" --base 16 --depth 4 --batch 16 --patch 8192x8192 --epochs 1 2>"$T/huge.err"
ok test $? -eq 1
ok grep -q "this configuration needs about [0-9.]* GB for a step" "$T/huge.err"
"$V" train --data "$T/data" --out "$T/huge.vbseg" --base 512 --depth 4 --epochs 1 2>"$T/huge2.err"
ok test $? -eq 1
ok grep -q "this configuration needs about [0-9.]* GB for its [0-9.e+]* parameters alone" "$T/huge2.err"
ok test ! -e "$T/huge.vbseg.train/checkpoint.vbseg"
# a loss that goes NaN: stopped with the step and the term; the last checkpoint stays
VBS_FAULT=train-loss-nan:7 "$V" train --data "$T/data" --out "$T/nan.vbseg" --base 4 --depth 2 --latent 0 --batch 4 --patch 32x32 --epochs 8 \
  --steps-per-epoch 3 --val 0.25 --threads 1 >"$T/nan.out" 2>&1
ok test $? -eq 1
ok grep -q "step 7: the cross-entropy is not finite" "$T/nan.out"
ok grep -q "^epoch 2:" "$T/nan.out"
ok not grep -q "^epoch 3:" "$T/nan.out"
ok grep -q "the last checkpoint, .*checkpoint.vbseg, is as it was" "$T/nan.out"
ok "$V" info "$T/nan.vbseg.train/checkpoint.vbseg" >/dev/null
ok test "$(tail -n +2 "$T/nan.vbseg.train/train_log.csv" | wc -l)" -eq 2   # the checkpoint of epoch 2 (steps 0-5) stays
# a full disk during a checkpoint: the previous checkpoint stays whole
if mkdir -p "$T/tiny" && mount -t tmpfs -o size=1200k tmpfs "$T/tiny" 2>/dev/null; then
  "$V" train --data "$T/data" --out "$T/full.vbseg" --base 10 --depth 2 --latent 4 --batch 2 --patch 32x32 --epochs 3 --steps-per-epoch 1 \
    --checkpoint-dir "$T/tiny" --val 0.25 >"$T/full.out" 2>&1
  ok test $? -eq 1
  ok grep -q "No space left on device" "$T/full.out"
  ok "$V" info "$T/tiny/checkpoint.vbseg" >/dev/null
  ok test -z "$(ls -a "$T/tiny" | grep '\.tmp\.')"
  umount "$T/tiny"
else
  echo "SKIP: full-disk check (cannot mount a small tmpfs here)"
fi

# the other layouts: nnU-Net raw, BraTS 2023, MSD Task01
mkdir -p "$T/nn/imagesTr" "$T/nn/labelsTr" "$T/b23" "$T/msd/imagesTr" "$T/msd/labelsTr"
for i in 01 02 03; do
  n=0; for ch in flair t1 t1ce t2; do cp "$T/data/Case_$i/Case_${i}_$ch.nii.gz" "$T/nn/imagesTr/nn_$i$(printf '_%04d' $n).nii.gz"; n=$((n+1)); done
  cp "$T/data/Case_$i/Case_${i}_seg.nii.gz" "$T/nn/labelsTr/nn_$i.nii.gz"
  mkdir -p "$T/b23/BraTS-GLI-000$i-000"
  for pair in flair:t2f t1:t1n t1ce:t1c t2:t2w; do
    cp "$T/data/Case_$i/Case_${i}_${pair%%:*}.nii.gz" "$T/b23/BraTS-GLI-000$i-000/BraTS-GLI-000$i-000-${pair##*:}.nii.gz"
  done
  $PY - "$T/data/Case_$i/Case_${i}_seg.nii.gz" "$T/b23/BraTS-GLI-000$i-000/BraTS-GLI-000$i-000-seg.nii.gz" <<'PY'
import gzip, struct, sys
b = bytearray(gzip.open(sys.argv[1]).read()); off = int(struct.unpack('<f', b[108:112])[0])
b[off:] = bytes(3 if v == 4 else v for v in b[off:])          # BraTS 2023: enhancing tumour is 3
gzip.open(sys.argv[2], 'wb').write(bytes(b))
PY
done
cat >"$T/nn/dataset.json" <<'JS'
{"channel_names": {"0": "FLAIR", "1": "T1", "2": "T1c", "3": "T2"},
 "labels": {"background": 0, "necrosis": 1, "edema": 2, "enhancing": 4}, "numTraining": 3, "file_ending": ".nii.gz", "name": "Synthetic"}
JS
$PY - "$T/data" "$T/msd" <<'PY'
import gzip, struct, sys
import numpy as np
src, dst = sys.argv[1:3]
for i in ("01", "02", "03"):
    chans = []
    for ch in ("flair", "t1", "t1ce", "t2"):
        b = gzip.open(f"{src}/Case_{i}/Case_{i}_{ch}.nii.gz").read(); off = int(struct.unpack('<f', b[108:112])[0]); hdr = bytearray(b[:off])
        chans.append(np.frombuffer(b[off:], '<f4'))
    struct.pack_into('<8h', hdr, 40, 4, 48, 48, 8, 4, 1, 1, 1)
    gzip.open(f"{dst}/imagesTr/BRATS_{i}.nii.gz", "wb").write(bytes(hdr) + np.concatenate(chans).astype('<f4').tobytes())
    s = gzip.open(f"{src}/Case_{i}/Case_{i}_seg.nii.gz").read(); off = int(struct.unpack('<f', s[108:112])[0])
    lab = np.frombuffer(s[off:], 'u1').copy(); msd = np.zeros_like(lab)
    msd[lab == 2] = 1; msd[lab == 1] = 2; msd[lab == 4] = 3      # MSD: 1 edema, 2 non-enhancing, 3 enhancing
    gzip.open(f"{dst}/labelsTr/BRATS_{i}.nii.gz", "wb").write(s[:off] + msd.tobytes())
PY
cat >"$T/msd/dataset.json" <<'JS'
{"name": "BRATS", "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
 "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}, "numTraining": 3,
 "training": [{"image": "./imagesTr/BRATS_01.nii.gz", "label": "./labelsTr/BRATS_01.nii.gz"}]}
JS
for lay in nn:nnunet b23:brats2023 msd:msd; do
  d=${lay%%:*}
  "$V" train --data "$T/$d" --out "$T/l_$d.vbseg" --base 4 --depth 2 --latent 0 --batch 2 --patch 32x32 --epochs 1 --steps-per-epoch 1 --val 0.34 \
    >"$T/l_$d.out" 2>&1
  ok test $? -eq 0
  ok grep -q "${lay##*:} layout, 3 cases, 4 channels" "$T/l_$d.out"
done
ok grep -q "channels (FLAIR, T1, T1c, T2), labels 0=background 1=necrosis 2=edema 4=enhancing" "$T/l_nn.out"
ok grep -q "labels 0=background 1=edema 2=non-enhancing tumor 3=enhancing tumour" "$T/l_msd.out"
"$V" info "$T/l_msd.vbseg" >"$T/msd.info"
ok grep -q "msd:" "$T/msd.info"
# a 3D model on patches, Flipout, the scale-mixture prior; a checkpoint says what it is
"$V" train --data "$T/data" --out "$T/m3.vbseg" --dims 3 --patch 8x16x16 --base 4 --depth 2 --latent 2 --batch 2 --epochs 1 --steps-per-epoch 2 \
  --flipout --prior mixture:0.5,1,0.01 --val 0.25 --quiet
ok test $? -eq 0
"$V" info "$T/m3.vbseg" >"$T/m3.info"
ok grep -q "spatial dims: 3, patch 8x16x16" "$T/m3.info"
ok grep -q "prior:        scale mixture 0.5 N(0, 1^2) + 0.5 N(0, 0.01^2)" "$T/m3.info"
"$V" info "$T/m3.vbseg.train/checkpoint.vbseg" >"$T/ck.info"
ok grep -q "checkpoint:   1 epoch, 2 steps done" "$T/ck.info"
"$V" train --data "$T/data" --out "$T/bn.vbseg" --norm batch --base 4 --depth 2 --latent 0 --batch 4 --patch 32x32 --epochs 1 --steps-per-epoch 2 \
  --val 0.25 --quiet
ok test $? -eq 0
"$V" train --data "$T/data" --out "$T/bnf.vbseg" --norm batch --flipout --epochs 1 2>"$T/bnf.err"
ok grep -q "flipout needs one pass per example" "$T/bnf.err"
# MC dropout: a U-Net with --dropout (and with batch norm: one pass of the minibatch) trains, says both kinds,
# the same bytes at 1 and 2 threads, and stopped and resumed equals the run straight through
"$V" train --data "$T/data" --out "$T/d1.vbseg" "${SMALL[@]}" --dropout 0.2 --epochs 2 --steps-per-epoch 2 --threads 1 --quiet
ok test $? -eq 0
"$V" train --data "$T/data" --out "$T/d2.vbseg" "${SMALL[@]}" --dropout 0.2 --epochs 2 --steps-per-epoch 2 --threads 2 --quiet
ok cmp -s "$T/d1.vbseg" "$T/d2.vbseg"
"$V" info "$T/d1.vbseg" >"$T/d1.info"
ok grep -q "stochastic:   both: variational weights and dropout (p=0.2, " "$T/d1.info"
"$V" train --data "$T/data" --out "$T/dr.vbseg" "${SMALL[@]}" --dropout 0.2 --epochs 1 --steps-per-epoch 2 --quiet
ok "$V" train --resume "$T/dr.vbseg.train/checkpoint.vbseg" --epochs 2 --quiet
ok cmp -s "$T/d1.vbseg" "$T/dr.vbseg"
"$V" train --data "$T/data" --out "$T/dbn.vbseg" --norm batch --base 4 --depth 2 --latent 0 --batch 4 --patch 32x32 --epochs 1 \
  --steps-per-epoch 2 --dropout 0.3 --val 0.25 --quiet
ok test $? -eq 0
# --dropout for the other families: trained, with their Dropouts (V-Net depth 2: 5 stages; FCN depth 3: 3 pools, fc6, fc7)
for fam in "vnet 2" "fcn 3"; do
  set -- $fam
  "$V" train --data "$T/data" --out "$T/d$1.vbseg" --arch "$1" --depth "$2" --base 4 --latent 0 --batch 4 --patch 32x32 --epochs 1 \
    --steps-per-epoch 2 --dropout 0.2 --val 0.25 --quiet
  ok test $? -eq 0
  "$V" info "$T/d$1.vbseg" >"$T/d$1.info"
  ok grep -q "Dropout x5" "$T/d$1.info"
  ok grep -q "stochastic:   both: variational weights and dropout (p=0.2, 5 nodes)" "$T/d$1.info"
done
# without validation (--val 0) the model of the last epoch is exported, even when
# the loss (here with a large KL weight) is far above 1
rm -f "$T/nv.vbseg"
"$V" train --data "$T/data" --out "$T/nv.vbseg" --base 4 --depth 2 --latent 0 --batch 4 --patch 32x32 --epochs 2 --steps-per-epoch 2 \
  --val 0 --kl-weight 1 --seed 3 --quiet
ok test $? -eq 0
ok test -s "$T/nv.vbseg"
ok "$V" info "$T/nv.vbseg" >/dev/null
# --deterministic (sigma = 0, plain weights): the U-Net learns the lesion task (Dice on the unseen cases well above
# its untrained self's), its log's KL column is exactly 0 without a latent and positive with one (the latent's KL
# still applies), info says nothing is stochastic; a resume refuses to change it; --init and --flipout refuse it
DET=(--arch unet --base 6 --depth 2 --latent 0 --seed 5 --deterministic)
"$V" train --data "$T/bin" --out "$T/det.vbseg" "${DET[@]}" --batch 8 --patch 48x48 --val 0.25 --val-samples 2 --val-examples 16 \
  --epochs 10 --steps-per-epoch 8 --lr 5e-3 --threads 2 --quiet
ok test $? -eq 0
"$V" create "${DET[@]}" --dims 2 --in-channels 4 --classes 2 --out "$T/untrained_det.vbseg" >/dev/null
ok beats_untrained det untrained_det 2 0.6
kl_col() { $PY -c "import csv, sys; print(' '.join(r['kl'] for r in csv.DictReader(open(sys.argv[1]))))" "$1"; }
ok $PY -c "import sys; k = [float(v) for v in sys.argv[1:]]; assert len(k) == 10 and all(v == 0.0 for v in k), k" $(kl_col "$T/det.vbseg.train/train_log.csv")
"$V" info "$T/det.vbseg" >"$T/det.info"
ok grep -q "stochastic:   none: every sample is the mean pass" "$T/det.info"
ok grep -q "parameters:   [0-9]* mean, of which 0 variational" "$T/det.info"
"$V" train --data "$T/data" --out "$T/detl.vbseg" --base 4 --depth 2 --latent 4 --deterministic --batch 4 --patch 32x32 --epochs 1 \
  --steps-per-epoch 2 --val 0.25 --quiet
ok test $? -eq 0
ok $PY -c "import sys; k = float(sys.argv[1]); assert k > 0, k" $(kl_col "$T/detl.vbseg.train/train_log.csv")
"$V" train --resume "$T/dr.vbseg.train/checkpoint.vbseg" --deterministic --epochs 2 --quiet 2>"$T/detr.err"
ok test $? -eq 2
ok grep -q "^vbseg train: .*checkpoint.vbseg: --deterministic 1 differs from the checkpoint's 0" "$T/detr.err"
for bad in "--init $T/untrained.vbseg" "--flipout" "--rho -3"; do
  "$V" train --data "$T/data" --out "$T/detbad.vbseg" --deterministic $bad --epochs 1 2>"$T/detbad.err"
  ok test $? -eq 2
  ok test "$(wc -l <"$T/detbad.err")" -eq 1
done
ok test ! -e "$T/detbad.vbseg"
echo "train: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
