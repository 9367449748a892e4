#!/usr/bin/env bash
# cli.sh BUILD_DIR: end-to-end checks of the vbseg command and the sample
# program on a generated scan: outputs exist and overlay the input,
# same seed -> same bytes at 1 and 2 threads, another seed -> other bytes,
# bad input -> one-line error, non-zero exit, nothing half-written.
set -u
B=$1
V=$B/vbseg
T=$(mktemp -d /tmp/vbs_cli.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok() { if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $*"; fi; }
not() { ! "$@"; }
one_line_error() { # cmd... : exit non-zero, exactly one line on stderr, nothing on stdout
  local out err rc
  out=$("$@" 2>"$T/err"); rc=$?
  err=$(cat "$T/err")
  [ $rc -ne 0 ] && [ -z "$out" ] && [ "$(wc -l <"$T/err")" -eq 1 ] || { echo "  rc=$rc stdout='$out' stderr='$err'"; return 1; }
}

"$B/samples/make_scan" "$T" Case_01 48 40 6 >/dev/null
ok test -s "$T/Case_01_flair.nii.gz"
ok "$V" create --arch unet --dims 2 --in-channels 4 --classes 4 --base 4 --depth 2 --latent 10 --hetero --out "$T/m.vbseg" >/dev/null
"$V" info "$T/m.vbseg" >"$T/info.txt"
ok grep -q "variational" "$T/info.txt"
ok grep -q "brats2018: 0=background 1=necrotic core 2=edema 4=enhancing tumour" "$T/info.txt"
ok grep -q "GaussianSample x1" "$T/info.txt"
"$V" info --json "$T/m.vbseg" >"$T/info.json"
ok /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['variational_parameters'] > 0 and d['card']['channels'] == ['flair','t1','t1ce','t2']" "$T/info.json"

in=()
for c in flair t1 t1ce t2; do in+=(--input "$T/Case_01_$c.nii.gz"); done
ok "$V" run --model "$T/m.vbseg" "${in[@]}" --samples 4 --seed 3 --threads 1 --out "$T/a" >/dev/null
for f in labels prob_mean prob_var entropy aleatoric_entropy epistemic_mi aleatoric_het epistemic_het; do ok test -s "$T/a/$f.nii.gz"; done
ok "$V" run --model "$T/m.vbseg" "${in[@]}" --samples 4 --seed 3 --threads 2 --out "$T/b" >/dev/null
ok "$V" run --model "$T/m.vbseg" "${in[@]}" --samples 4 --seed 4 --out "$T/c" >/dev/null
ok cmp -s "$T/a/epistemic_mi.nii.gz" "$T/b/epistemic_mi.nii.gz"
ok cmp -s "$T/a/labels.nii.gz" "$T/b/labels.nii.gz"
ok not cmp -s "$T/a/epistemic_mi.nii.gz" "$T/c/epistemic_mi.nii.gz"
# outputs overlay the input: same dims, pixdim, qform/sform and srows
ok /usr/bin/python3 - "$T/Case_01_flair.nii.gz" "$T/a/labels.nii.gz" "$T/a/prob_mean.nii.gz" <<'PY'
import gzip, struct, sys
def hdr(p):
    h = gzip.open(p).read(348)
    return struct.unpack('<8h', h[40:56]), h[76:108], h[252:328]
ref = hdr(sys.argv[1])
for p in sys.argv[2:]:
    d, pix, geo = hdr(p)
    assert d[1:4] == ref[0][1:4], (p, d, ref[0])
    assert pix[4:16] == ref[1][4:16] and geo == ref[2], p
assert hdr(sys.argv[3])[0][4] == 4  # four class probabilities along t
PY
mi_sampled_and_mean() { # SAMPLED MEAN: epistemic_mi.nii.gz maps, MI > 0 sampled and exactly 0 in mean mode
  /usr/bin/python3 - "$1" "$2" <<'PY'
import gzip, struct, sys
import numpy as np
def data(p):
    b = gzip.open(p).read()
    return np.frombuffer(b[int(struct.unpack('<f', b[108:112])[0]):], '<f4')
assert data(sys.argv[1]).mean() > 1e-4, data(sys.argv[1]).mean()
assert not data(sys.argv[2]).any()
PY
}
# MC dropout: a U-Net with --dropout (sigma ~ 1e-13: the spread is the masks'); info says both; MI > 0,
# the same bytes at 1 and 2 threads; mean mode MI = 0; a ratio of 1 refused
ok "$V" create --arch unet --dims 2 --in-channels 4 --classes 4 --base 4 --depth 2 --dropout 0.25 --rho -30 --out "$T/d.vbseg" >/dev/null
"$V" info "$T/d.vbseg" >"$T/dinfo.txt"
ok grep -q "Dropout x5" "$T/dinfo.txt" # depth 2: two encoder blocks, the bottleneck, two decoder blocks
ok grep -q "stochastic:   both: variational weights and dropout (p=0.25, 5 nodes)" "$T/dinfo.txt"
ok "$V" run --model "$T/d.vbseg" "${in[@]}" --samples 4 --seed 3 --threads 1 --out "$T/d1" >/dev/null
ok "$V" run --model "$T/d.vbseg" "${in[@]}" --samples 4 --seed 3 --threads 2 --out "$T/d2" >/dev/null
ok "$V" run --model "$T/d.vbseg" "${in[@]}" --mode mean --out "$T/d0" >/dev/null
for f in labels prob_mean epistemic_mi; do ok cmp -s "$T/d1/$f.nii.gz" "$T/d2/$f.nii.gz"; done
ok mi_sampled_and_mean "$T/d1/epistemic_mi.nii.gz" "$T/d0/epistemic_mi.nii.gz"
# the other families with --dropout: Dropouts where `create --help` says (V-Net depth 2: 3 encoder and 2 decoder
# stages; FCN depth 3: 3 pools, fc6, fc7), MI > 0 sampled, MI = 0 in mean mode
for fam in "vnet 2 5" "fcn 3 5"; do  # arch, depth, Dropouts
  set -- $fam
  ok "$V" create --arch "$1" --dims 2 --in-channels 4 --classes 4 --base 2 --depth $2 --dropout 0.25 --rho -30 --out "$T/d$1.vbseg" >/dev/null
  "$V" info --json "$T/d$1.vbseg" >"$T/d$1.json"
  ok /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); z=d['stochasticity']; assert d['ops']['Dropout'] == $3 == z['dropout_nodes'] and z['kind'] == 'both' and z['dropout_ratio_min'] == z['dropout_ratio_max'] == 0.25, d" "$T/d$1.json"
  ok "$V" run --model "$T/d$1.vbseg" "${in[@]}" --samples 4 --seed 3 --out "$T/d$1s" >/dev/null
  ok "$V" run --model "$T/d$1.vbseg" "${in[@]}" --mode mean --out "$T/d$1m" >/dev/null
  ok mi_sampled_and_mean "$T/d$1s/epistemic_mi.nii.gz" "$T/d$1m/epistemic_mi.nii.gz"
done
ok one_line_error "$V" create --arch unet --dims 2 --in-channels 4 --classes 4 --dropout 1 --out "$T/x.vbseg"
ok one_line_error "$V" train --data "$T" --out "$T/x.vbseg" --dropout 1
ok one_line_error "$V" train --data "$T" --out "$T/x.vbseg" --init "$T/d.vbseg" --dropout 0.2
ok grep -q "the --init model keeps its own graph" "$T/err"
# a 3D model on the same scan, and the .npy path
ok "$V" create --arch unet --latent 0 --dims 3 --in-channels 4 --classes 2 --base 2 --depth 1 --out "$T/m3.vbseg" >/dev/null
/usr/bin/python3 -c "import numpy as np; np.save('$T/x.npy', np.random.default_rng(1).standard_normal((4, 6, 40, 48)).astype(np.float32))"
ok "$V" run --model "$T/m3.vbseg" --input "$T/x.npy" --samples 3 --out "$T/n" >/dev/null
ok /usr/bin/python3 -c "import numpy as np; a=np.load('$T/n/prob_mean.npy'); assert a.shape==(2,6,40,48) and abs(a.sum(0)-1).max()<1e-5"
# malformed .npy arrays are refused in one line
/usr/bin/python3 - "$T" <<'PY'
import numpy as np, sys
t = sys.argv[1]
np.save(t + "/f.npy", np.asfortranarray(np.ones((4, 6, 40, 48), np.float32)))  # Fortran order
np.save(t + "/be.npy", np.ones((4, 40, 48), dtype=">f4"))
np.save(t + "/i.npy", np.ones((4, 40, 48), dtype=np.int32))
open(t + "/cut.npy", "wb").write(open(t + "/x.npy", "rb").read()[:500])
PY
for f in f be i cut; do ok one_line_error "$V" run --model "$T/m3.vbseg" --input "$T/$f.npy" --out "$T/bad"; done
ok test ! -e "$T/bad"
# array ranks: for the 2D model (N,C,H,W) is a batch whose maps carry N first, each map [n] the run of
# image n alone; a volume-like (C,D,H,W) whose dim 1 is not the channel count, or a rank the model
# cannot read, is refused with the shapes it accepts; nothing is written
/usr/bin/python3 - "$T" <<'PY'
import numpy as np, sys
t = sys.argv[1]
r = np.random.default_rng(3)
b = r.standard_normal((2, 4, 40, 48)).astype(np.float32) * np.array([1, 4], np.float32)[:, None, None, None]
np.save(t + "/b2.npy", b)
np.save(t + "/b2_1.npy", b[1])
np.save(t + "/c4.npy", r.standard_normal((4, 6, 40, 48)).astype(np.float32))
np.save(t + "/r3.npy", r.standard_normal((4, 40, 48)).astype(np.float32))
PY
ok "$V" run --model "$T/m.vbseg" --input "$T/b2.npy" --samples 3 --seed 5 --out "$T/nb" >/dev/null
ok "$V" run --model "$T/m.vbseg" --input "$T/b2_1.npy" --samples 3 --seed 5 --out "$T/n1" >/dev/null
ok /usr/bin/python3 - "$T" <<'PY'
import numpy as np, sys
t = sys.argv[1]
for f, shape in (("labels", (2, 40, 48)), ("prob_mean", (2, 4, 40, 48)), ("epistemic_mi", (2, 40, 48)), ("aleatoric_het", (2, 4, 40, 48))):
    a, one = np.load(f"{t}/nb/{f}.npy"), np.load(f"{t}/n1/{f}.npy")
    assert a.shape == shape and one.shape == shape[1:], (f, a.shape, one.shape)
    assert np.array_equal(a[1], one), f
    assert not np.array_equal(a[0], a[1]), f
PY
ok one_line_error "$V" run --model "$T/m.vbseg" --input "$T/c4.npy" --out "$T/bad"
ok grep -q "array (4,6,40,48) read as (N,C,H,W) has 6 channels, the model takes 4; it takes (4,H,W) one image, (N,4,H,W) a batch, or (N,4,D,H,W) volumes run slice by slice" "$T/err"
ok one_line_error "$V" run --model "$T/m3.vbseg" --input "$T/r3.npy" --out "$T/bad"
ok grep -q "array (4,40,48) has 3 dims; this 3D model takes (4,D,H,W) one image or (N,4,D,H,W) a batch" "$T/err"
ok test ! -e "$T/bad"
ok sh -c "'$V' run --help | grep -q 'rank R-1 one image'"
# the sample program, public API only
ok "$B/samples/uncertainty_summary" "$T/m.vbseg" 3 "$T/Case_01_flair.nii.gz" "$T/Case_01_t1.nii.gz" "$T/Case_01_t1ce.nii.gz" "$T/Case_01_t2.nii.gz" >"$T/sum.txt"
ok grep -q "mean mutual information" "$T/sum.txt"

# bad input: one line, non-zero exit, nothing written
ok one_line_error "$V" info "$T/missing.vbseg"
head -c 1000 "$T/m.vbseg" >"$T/cut.vbseg"
ok one_line_error "$V" info "$T/cut.vbseg"
head -c 3000 "$T/Case_01_t2.nii.gz" >"$T/bad_t2.nii.gz"
bad=(--input "$T/Case_01_flair.nii.gz" --input "$T/Case_01_t1.nii.gz" --input "$T/Case_01_t1ce.nii.gz" --input "$T/bad_t2.nii.gz")
ok one_line_error "$V" run --model "$T/m.vbseg" "${bad[@]}" --out "$T/bad"
ok grep -q "bad_t2.nii.gz" "$T/err"
ok test ! -e "$T/bad"
ok one_line_error "$V" run --model "$T/m.vbseg" --input "$T/Case_01_flair.nii.gz" --out "$T/bad"
ok one_line_error "$V" run --model "$T/m.vbseg" "${in[@]}" --samples zero --out "$T/bad"
ok one_line_error "$V" create --arch unet --latent 0 --dims 4 --in-channels 1 --classes 2 --out "$T/x.vbseg"
ok one_line_error "$V" bench --model "$T/m.vbseg" --shape 1x4xbad
# a size the network cannot take as given: named in the user's numbers with the sizes it takes (depth 2: multiples of 4)
ok one_line_error "$V" bench --model "$T/m.vbseg" --shape 1x4x50x50
ok grep -q "input 50x50: this network takes spatial sizes that are multiples of 4 (e.g. 48x48 or 52x52)" "$T/err"
# a failed write keeps the old file intact and leaves no temporary
cp "$T/m.vbseg" "$T/keep.vbseg"
chmod 500 "$T"
if [ "$(id -u)" != 0 ]; then ok not "$V" create --arch unet --latent 0 --dims 2 --in-channels 4 --classes 2 --out "$T/keep.vbseg" 2>/dev/null; fi
chmod 700 "$T"
ok cmp -s "$T/m.vbseg" "$T/keep.vbseg"
ok test -z "$(find "$T" -name '*.tmp.*')"
# convert: an ONNX conformance model with a card; bad input leaves nothing behind
ONNXCASE=/usr/include/onnx/backend/test/data/node/test_conv_with_strides_padding/model.onnx
if [ -f "$ONNXCASE" ]; then
  cat >"$T/card.json" <<'JSON'
{"channels": ["t1"], "normalization": "zscore_nonzero", "spatial_dims": 2, "patch": [240, 240],
 "labels": {"0": "background", "1": "lesion"}, "label_convention": "custom",
 "output_activation": "sigmoid", "training_data": "BraTS 2021", "epochs": 300, "metrics": {"dice_wt": 0.91}, "extra": {"site": "demo"}}
JSON
  ok "$V" convert "$ONNXCASE" "$T/conv.vbseg" --card "$T/card.json" >/dev/null
  "$V" info "$T/conv.vbseg" >"$T/conv.txt"
  ok grep -q "custom: 0=background 1=lesion" "$T/conv.txt"
  ok grep -q "metric:       dice_wt = 0.9100" "$T/conv.txt"
  ok grep -q "sigma_init = moped:0.1" "$T/conv.txt"
  echo '{"channels": ["a"], "labelz": {}}' >"$T/badcard.json"
  ok one_line_error "$V" convert "$ONNXCASE" "$T/nope.vbseg" --card "$T/badcard.json"
  ok grep -q "field 'labelz'" "$T/err"
  echo '{"channels": ["a",]}' >"$T/badjson.json"
  ok one_line_error "$V" convert "$ONNXCASE" "$T/nope.vbseg" --card "$T/badjson.json"
  ok one_line_error "$V" convert "$T/Case_01_t1.nii.gz" "$T/nope.vbseg"
  ok one_line_error "$V" convert "$ONNXCASE" "$T/nope.vbseg" --sigma-init moped:-1
  ok test ! -e "$T/nope.vbseg"
fi
for c in create info run bench convert; do ok "$V" "$c" --help >/dev/null; done
ok "$V" --help >/dev/null
"$V" nonsense 2>/dev/null; ok test $? -eq 2
# the V-Net and FCN-8s families (their numerics: torch_backbones); an unknown
# architecture, and sizes a family cannot take, are usage errors (exit 2) in one line
ok "$V" create --arch vnet --dims 2 --in-channels 4 --classes 2 --out "$T/v.vbseg" >/dev/null
ok "$V" create --arch fcn --dims 3 --in-channels 1 --classes 2 --base 2 --depth 3 --out "$T/f.vbseg" >/dev/null
ok grep -q "description:  untrained variational V-Net" <("$V" info "$T/v.vbseg")
ok grep -q "description:  untrained variational FCN-8s" <("$V" info "$T/f.vbseg")
for bad in "--arch resnet" "--arch fcn --depth 2" "--arch vnet --patch 100x100"; do
  # shellcheck disable=SC2086
  "$V" create $bad --dims 2 --in-channels 4 --classes 2 --out "$T/bad.vbseg" 2>"$T/arch.err"
  ok test $? -eq 2
  ok test "$(wc -l <"$T/arch.err")" -eq 1
  ok test ! -e "$T/bad.vbseg"
done
ok grep -q "not a multiple of 2^4 = 16" "$T/arch.err"
# a model larger than half the machine's memory is refused before it is built (its floats counted, not allocated)
ok one_line_error "$V" create --arch vnet --dims 3 --in-channels 4 --classes 4 --base 256 --depth 8 --out "$T/huge.vbseg"
ok grep -q "this configuration has [0-9.e+]* floats" "$T/err"
ok test ! -e "$T/huge.vbseg"
# info's FLOPs: at the card's patch (the V-Net's 240x240), at --shape, and a size the network cannot take refused
ok grep -q "^flops:        [0-9.]* GFLOP per pass at 1x4x240x240 " <("$V" info "$T/v.vbseg")
ok grep -q "^flops:        [0-9.]* GFLOP per pass at 1x1x16x16x16 " <("$V" info "$T/f.vbseg" --shape 1x1x16x16x16)
ok one_line_error "$V" info "$T/f.vbseg" --shape 1x1x12x16x16
echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
