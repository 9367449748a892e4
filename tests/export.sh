#!/bin/bash
# export.sh BUILD: `vbseg export` checked by ONNX Runtime (npm's onnxruntime-node,
# installed into BUILD/ort on first use with --ignore-scripts: the install script
# fetches GPU binaries, the CPU library is in the package). Skipped (exit 77) only
# when npm is missing or the registry cannot be reached.
#  - mean export on ORT = `vbseg run --raw --mode mean`, every output, for U-Net,
#    V-Net and FCN with latent, hetero head and dropout, 2D and 3D, instance and batch norm,
#    and for tests/torch_onnx.py's PyTorch models (Resize, Pad, pools, LeakyRelu, Sigmoid,
#    Softmax, old-opset Softmax) imported by `vbseg convert`
#  - sampling export (2D U-Net, 3D V-Net): 1000 ORT runs against `vbseg run --samples 1000`: per-voxel mean
#    and variance of the probabilities within 6 standard errors (export_check.py mc),
#    and a negative control (another rho) that this check must refuse; the sigma it computes
#    (ONNX's Softplus) and ORT's Softplus op against softplus in double
#  - the mean export of each model without its latent (whose broadcast `vbseg convert`
#    cannot import) re-imported by `vbseg convert` gives the same mean outputs; the
#    card read back from metadata_props (a wire parser of its own) and re-imported
#  - bad input: missing model, unwritable output, an existing output left intact,
#    unknown flags, wrong suffix: one line, exit 1 or 2
set -u
B=$(cd "$1" && pwd)
V=$B/vbseg
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
CHK="$PY $HERE/export_check.py"
RUN="node $HERE/ort_run.js $B/ort"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

if ! command -v npm >/dev/null || ! command -v node >/dev/null; then echo "export: SKIP: npm or node missing (apt-get install npm)"; exit 77; fi
if [ ! -d "$B/ort/node_modules/onnxruntime-node" ]; then
    mkdir -p "$B/ort"
    if ! npm install --ignore-scripts --no-audit --no-fund --prefix "$B/ort" onnxruntime-node >"$T/npm.log" 2>&1; then
        if grep -qE "ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|ENETUNREACH|network" "$T/npm.log"; then
            echo "export: SKIP: the npm registry cannot be reached"; tail -3 "$T/npm.log"; exit 77
        fi
        cat "$T/npm.log"; echo "export: npm install onnxruntime-node failed"; exit 1
    fi
fi

cd "$T"
# name arch dims extra; sizes are multiples of 2^depth and equal the card's patch (no windows)
models=(
  "u2 unet 2 --depth 2 --norm instance --patch 16x16"
  "u3 unet 3 --depth 2 --norm batch --patch 8x8x8"
  "v2 vnet 2 --depth 2 --norm batch --patch 16x16"
  "v3 vnet 3 --depth 2 --norm instance --patch 8x8x8"
  "f2 fcn 2 --depth 3 --norm instance --patch 16x16"
  "f3 fcn 3 --depth 3 --norm batch --patch 8x8x8"
)
for spec in "${models[@]}"; do
    set -- $spec
    name=$1 arch=$2 dims=$3; shift 3
    $V create --arch $arch --dims $dims --in-channels 2 --classes 3 --base 4 --latent 3 --hetero --dropout 0.2 --seed 7 "$@" --out $name.vbseg >/dev/null || { bad "$name: create"; continue; }
    if [ $dims = 2 ]; then shape="1,2,16,16"; else shape="1,2,8,8,8"; fi
    $PY -c "import numpy as np; np.random.seed(3); np.save('$name.in.npy', np.random.randn($shape).astype(np.float32))"
    $V export $name.vbseg $name.mean.onnx --mean >/dev/null || { bad "$name: export --mean"; continue; }
    $V run --model $name.vbseg --input $name.in.npy --out $name.v --raw --mode mean >/dev/null || { bad "$name: vbseg run"; continue; }
    if ! $RUN $name.mean.onnx $name.in.npy $name.o; then bad "$name: ORT mean run"; continue; fi
    # names and shapes (symbolic dims as dim_param) as vbseg info prints them
    $V info $name.vbseg | sed -n 's/^\(input\|output\): *\(.*\)$/\1 \2/p' >$name.io.want
    if $CHK io $name.mean.onnx >$name.io.got && [ -s $name.io.want ] && cmp -s $name.io.want $name.io.got; then ok
    else bad "$name inputs/outputs: $(cat $name.io.got) vs $(cat $name.io.want)"; fi
    for out in logits logvar; do
        if r=$($CHK close $name.o/$out.npy $name.v/$out.npy); then ok; else bad "$name mean $out: $r"; fi
        echo "$name mean export, $out: $r"
    done
    # re-import: the mean graph back into vbseg (deterministic) gives the same mean outputs. Without
    # the latent: its SpatialBroadcast exports as Shape/Slice/Expand, which vbseg convert does not import
    $V create --arch $arch --dims $dims --in-channels 2 --classes 3 --base 4 --latent 0 --hetero --dropout 0.2 --seed 7 "$@" --out $name.nl.vbseg >/dev/null
    if $V export $name.nl.vbseg $name.nl.onnx --mean >/dev/null && $V convert $name.nl.onnx $name.back.vbseg --sigma-init none >/dev/null &&
       $V run --model $name.nl.vbseg --input $name.in.npy --out $name.nv --raw --mode mean >/dev/null &&
       $V run --model $name.back.vbseg --input $name.in.npy --out $name.b --raw --mode mean >/dev/null &&
       r=$($CHK close $name.b/logits.npy $name.nv/logits.npy) && r2=$($CHK close $name.b/logvar.npy $name.nv/logvar.npy); then ok
    else bad "$name: re-import ${r:-} ${r2:-}"; fi
done

# the ops `vbseg create` does not use (Resize nearest and linear, Pad, AveragePool, LeakyRelu,
# Sigmoid, Softmax; at opset 11 a Softmax of the old flatten semantics between Transposes): PyTorch
# models of tests/torch_onnx.py through `vbseg convert` (MOPED), exported, mean on ORT = vbseg's
# mean, and the sampling export runs on ORT
if $PY - <<PYEOF
import sys
sys.path.insert(0, "$HERE")
import numpy as np, torch
from torch_onnx import UNet, FCN
torch.manual_seed(0)
for dims in (2, 3):
    x = torch.randn((1, 2, 16, 16) if dims == 2 else (1, 2, 8, 16, 16))
    np.save("t%d.in.npy" % dims, x.numpy())
    for name, model in (("unet", UNet(dims)), ("fcn", FCN(dims))):
        model.eval()
        n = len(model(x)) if name == "unet" else 1
        for opset in (11, 17):
            torch.onnx.export(model, x, "t_%s%d_%d.onnx" % (name, dims, opset), opset_version=opset, input_names=["x"],
                              output_names=["out%d" % i for i in range(n)])
# a value named in the export's reserved "vbs::" space
torch.onnx.export(FCN(2).eval(), torch.randn(1, 2, 16, 16), "reserved.onnx", opset_version=17, input_names=["x"], output_names=["vbs::y"])
PYEOF
then
    $V convert reserved.onnx reserved.vbseg >/dev/null
    $V export reserved.vbseg reserved.x.onnx --mean 2>e0; rc=$?
    if [ $rc = 1 ] && [ "$(wc -l <e0)" = 1 ] && grep -q 'vbs::y' e0 && [ ! -e reserved.x.onnx ]; then ok; else bad "reserved name: rc $rc $(cat e0)"; fi
    for f in t_*.onnx; do
        base=${f%.onnx}
        dims=$(echo $base | sed 's/^t_[a-z]*\([23]\)_.*/\1/')
        if $V convert $f $base.vbseg >/dev/null && $V export $base.vbseg $base.x.onnx --mean >/dev/null && $V export $base.vbseg $base.s.onnx --sampling >/dev/null &&
           $V run --model $base.vbseg --input t$dims.in.npy --out $base.v --raw --mode mean >/dev/null && $RUN $base.x.onnx t$dims.in.npy $base.o &&
           $RUN $base.s.onnx t$dims.in.npy $base.so; then
            $V info $base.vbseg | sed -n 's/^\(input\|output\): *\(.*\)$/\1 \2/p' >$base.io.want
            if $CHK io $base.x.onnx >$base.io.got && [ -s $base.io.want ] && cmp -s $base.io.want $base.io.got; then ok
            else bad "$base inputs/outputs: $(cat $base.io.got) vs $(cat $base.io.want)"; fi
            for out in $base.v/*.npy; do
                o=$(basename $out)
                if r=$($CHK close $base.o/$o $out); then ok; else bad "$base $o: $r"; fi
                echo "$base (PyTorch via vbseg convert) mean export, $o: $r"
            done
        else bad "$base: convert, export or runs"; fi
    done
else bad "PyTorch models"; fi

# sampling: tiny models with every source of randomness (weights, latent, dropout), a 2D U-Net
# and a 3D V-Net (batch norm); the U-Net also against a model with another rho (negative control)
N=1000
sampling=(
  "s2 unet 2 1,2,16,16 --depth 2 --norm instance --patch 16x16"
  "s3 vnet 3 1,2,8,8,8 --depth 2 --norm batch --patch 8x8x8"
)
for spec in "${sampling[@]}"; do
    set -- $spec
    name=$1 arch=$2 dims=$3 shape=$4; shift 4
    $V create --arch $arch --dims $dims --in-channels 2 --classes 3 --base 4 --latent 3 --hetero --dropout 0.2 --rho -3 --seed 5 "$@" --out $name.vbseg >/dev/null
    $PY -c "import numpy as np; np.random.seed(4); np.save('$name.raw.npy', np.random.randn($shape).astype(np.float32))"
    $CHK zscore $name.raw.npy $name.in.npy # vbseg run normalises as the card says; ORT gets the normalised image
    # the statistics from a seeded export and vbseg's seed 0: the same figures every run (an
    # unseeded comparison would fail now and then by chance, at whatever bound)
    if $V export $name.vbseg $name.onnx --sampling --seed 11 >/dev/null && $RUN $name.onnx $name.in.npy $name.o $N softmax &&
       $V run --model $name.vbseg --input $name.in.npy --out $name.v --samples $N >/dev/null; then
        if r=$($CHK mc $name.o $name.v $N); then ok; else bad "$name sampling statistics: $r"; fi
        echo "$name sampling export (seed 11) vs vbseg, $N samples: $r"
        # seeded: two sessions repeat the same samples; an other seed and the unseeded export do not
        if $RUN $name.onnx $name.in.npy $name.s1 && $RUN $name.onnx $name.in.npy $name.s2 && cmp -s $name.s1/logits.npy $name.s2/logits.npy
        then ok; else bad "$name: two sessions of the seeded export differ"; fi
        if $V export $name.vbseg $name.12.onnx --sampling --seed 12 >/dev/null && $RUN $name.12.onnx $name.in.npy $name.s12 &&
           ! $CHK close $name.s1/logits.npy $name.s12/logits.npy >/dev/null
        then ok; else bad "$name: seeds 11 and 12 gave the same logits"; fi
        if $V export $name.vbseg $name.u.onnx --sampling >/dev/null && $RUN $name.u.onnx $name.in.npy $name.o1 &&
           $RUN $name.u.onnx $name.in.npy $name.o2 && ! $CHK close $name.o1/logits.npy $name.o2/logits.npy >/dev/null
        then ok; else bad "$name: two runs of the unseeded export gave the same logits"; fi
    else bad "$name: sampling export or runs"; fi
done
if $V create --arch unet --dims 2 --in-channels 2 --classes 3 --depth 2 --base 4 --latent 3 --hetero --dropout 0.2 --rho -2 --seed 5 --patch 16x16 --out s_other.vbseg >/dev/null &&
   $V run --model s_other.vbseg --input s2.in.npy --out s2.w --samples $N >/dev/null; then
    if r=$($CHK mc-differs s2.o s2.w $N); then ok; else bad "negative control (rho -2 vs -3) not refused: $r"; fi
    echo "negative control (vbseg at rho -2): $r"
else bad "negative control runs"; fi

# softplus: ONNX Runtime's Softplus op over rho in [-30, 30], and the sigma the sampling export
# computes (its "vbs::sigma:NAME" made an output) for models whose rho is one value, both within
# 1e-6 relative of softplus in double (float32 rounds to 6e-8)
$PY -c "import numpy as np; np.save('img.npy', np.zeros((1,1,16,16),np.float32))"
for rho in -25 -12 -3 2; do
    mkdir -p sp$rho
    if $V create --arch unet --dims 2 --in-channels 1 --classes 2 --depth 2 --base 4 --latent 0 --rho $rho --patch 16x16 --out sp$rho.vbseg >/dev/null &&
       $V export sp$rho.vbseg sp$rho.onnx --sampling >/dev/null && $CHK softplus-probe sp$rho.onnx sp$rho $rho &&
       $RUN sp$rho/sigma.onnx img.npy sp$rho/o && r=$($CHK relerr sp$rho/o/vbs__sigma_*.npy sp$rho/sigma_model_ref.npy "exported sigma at rho $rho" 1e-6)
    then ok; else bad "exported sigma at rho $rho: ${r:-}"; fi
    echo "${r:-}"
done
if $RUN sp2/softplus_op.onnx "rho=sp2/rho.npy" sp2/p && r=$($CHK relerr sp2/p/sigma.npy sp2/sigma_ref.npy "ONNX Runtime's Softplus op" 1e-6); then ok; else bad "${r:-Softplus op}"; fi
echo "${r:-}"

# the card through metadata_props
if $CHK card u2.mean.onnx u2.card.json >u2.meta && grep -qx "vbseg.mode=mean" u2.meta && grep -qx "vbseg.channels=ch0,ch1" u2.meta &&
   grep -qx "vbseg.labels=0:background,1:class1,2:class2" u2.meta && grep -qx "vbseg.heteroscedastic=true" u2.meta; then ok; else bad "metadata keys"; cat u2.meta; fi
if $V convert u2.nl.onnx u2.card.vbseg --sigma-init none --card u2.card.json >/dev/null && $V export u2.card.vbseg u2.card.onnx --mean >/dev/null &&
   $CHK card u2.card.onnx u2.card2.json >/dev/null &&
   $PY -c "
import json, sys
a, b = json.load(open('u2.card.json')), json.load(open('u2.card2.json'))
for c in (a, b):  # what vbseg convert adds of its own
    for k in ('output_activation_source', 'sigma_init'): c.get('extra', {}).pop(k, None)
    if not c.get('extra'): c.pop('extra', None)
sys.exit(0 if a == b and a['channels'] == ['ch0', 'ch1'] and a['heteroscedastic'] else 1)"; then ok; else bad "card round trip"; fi

# bad input
one_line() { [ "$(wc -l <"$1")" = 1 ] && grep -q "^vbseg export: " "$1"; }
$V export missing.vbseg x.onnx --mean 2>e1; rc=$?
if [ $rc = 1 ] && one_line e1 && grep -q "missing.vbseg" e1; then ok; else bad "missing model: rc $rc $(cat e1)"; fi
$V export u2.vbseg nodir/x.onnx --mean 2>e2; rc=$?
if [ $rc = 1 ] && one_line e2 && grep -q "nodir/x.onnx" e2; then ok; else bad "unwritable output: rc $rc $(cat e2)"; fi
echo keep >old.onnx
head -c 300 u2.vbseg >trunc.vbseg
$V export trunc.vbseg old.onnx --mean 2>e3; rc=$?
if [ $rc = 1 ] && one_line e3 && [ "$(cat old.onnx)" = keep ]; then ok; else bad "existing output after a refused model: rc $rc $(cat e3)"; fi
mkdir isdir.onnx
$V export u2.vbseg isdir.onnx --mean 2>e4; rc=$?
if [ $rc = 1 ] && one_line e4 && [ -d isdir.onnx ] && [ -z "$(ls -A isdir.onnx)" ] && [ -z "$(ls -a | grep -i 'tmp')" ]; then ok; else bad "output a folder: rc $rc $(cat e4); $(ls -a)"; fi
for args in "u2.vbseg x.onnx --mean --frobnicate" "u2.vbseg x.safetensors --mean" "u2.vbseg x.onnx" "u2.vbseg x.onnx --mean --sampling" "u2.vbseg" \
            "u2.vbseg x.onnx --mean --seed 3" "u2.vbseg x.onnx --sampling --seed x" "u2.vbseg x.onnx --sampling --seed -1" "u2.vbseg x.onnx --sampling --seed"; do
    $V export $args 2>e5 >/dev/null; rc=$?
    if [ $rc = 2 ] && one_line e5; then ok; else bad "usage '$args': rc $rc $(cat e5)"; fi
done
grep -q "\.onnx" e5 || true
$V export u2.vbseg x.pt --mean 2>e6
if grep -q "must end in .onnx" e6; then ok; else bad "suffix message: $(cat e6)"; fi

echo "export: $pass passed, $fail failed"
[ $fail = 0 ]
