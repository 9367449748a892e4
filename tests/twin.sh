#!/bin/bash
# twin.sh BUILD: `vbseg convert CKPT --graph` and `vbseg export OUT.safetensors`
# (issue 11 §2-§4) against PyTorch (tests/twin_make.py, Debian's python3-torch):
#  - a checkpoint in each naming convention (torch.save) converted onto its ONNX
#    twin, auto-detected and named: `vbseg run --mode mean --raw` = PyTorch's
#    forward with mu as weights (float64) within 1e-4 relative; the report's
#    counts (by name, by bytes, variational, dropped keys) as the file holds them
#  - a twin whose initializers are all renamed (a wrapper module): matched by
#    bytes only, same output
#  - unmatched tensors reported on both sides; a mean the graph lacks, a Conv+BN
#    fused twin, NaN/Inf in a mean and a spread, mixed conventions: refused, one
#    line naming the file and the tensor, exit 1, an existing OUT untouched
#  - torchbnn's log sigma l -> rho: softplus(rho) = exp(l) within float rounding
#    (l from -800 to 88 across every branch: below -30 rho = l, exp(l) underflows) and back by export; --prior recorded (vbseg info), its absence as unknown
#  - bad usage: exit 2, one line
#  - a training checkpoint's state_dict, and another entry with --key; --card with an ONNX
#    twin (refused with a .vbseg graph); the model's own names saved by torch.save without one
#    rho onto the .vbseg graph: that weight plain, its rho gone; a `vbseg train` checkpoint
#    as the graph: its tensors back in order, byte for byte, its optimiser and training state dropped
#  - `vbseg export MODEL OUT.safetensors --naming N` of a `vbseg create` model (U-Net with
#    batch norm and a latent): the file parsed by this script's own few lines of json/struct,
#    every key as the convention's table names it (written here from issue 11's table),
#    mu and rho the model's bytes (torchbnn: log sigma = log softplus(rho) in double), the
#    card and convention in __metadata__; converted back with --graph MODEL.vbseg: every
#    tensor byte-identical (torchbnn: softplus(rho) within float rounding) and the outputs of
#    `vbseg run --samples 3 --seed 1 --raw` byte-identical (torchbnn: within 1e-4)
set -u
B=$(cd "$1" && pwd)
V=$B/vbseg
DUMP=$B/tests/dump_tensors
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
# check NAME CMD...: the command succeeds
check() { local n=$1; shift; if "$@"; then ok; else bad "$n"; fi; }
# refuse NAME RC PATTERN CMD...: exit RC, exactly one line on stderr matching PATTERN, nothing on stdout
refuse() {
    local n=$1 want=$2 pat=$3; shift 3
    "$@" >"$T/out.txt" 2>"$T/err.txt"
    local rc=$?
    if [ $rc -ne "$want" ]; then bad "$n: exit $rc, want $want"; cat "$T/err.txt"; return; fi
    if [ "$(wc -l <"$T/err.txt")" -ne 1 ] || [ -s "$T/out.txt" ]; then bad "$n: not one line"; cat "$T/err.txt" "$T/out.txt"; return; fi
    if ! grep -q -- "$pat" "$T/err.txt"; then bad "$n: message"; cat "$T/err.txt"; return; fi
    ok
}
# close A.npy B.npy: within 1e-4 relative to the larger magnitude
close() {
    $PY - "$1" "$2" <<'EOF'
import sys, numpy as np
a, b = np.load(sys.argv[1]).astype(np.float64), np.load(sys.argv[2]).astype(np.float64)
d = np.abs(a - b).max() if a.shape == b.shape else np.inf
ok = d <= 1e-4 * max(1.0, np.abs(b).max())
if not ok: print(f"shapes {a.shape} {b.shape}, max diff {d}")
sys.exit(0 if ok else 1)
EOF
}

if ! $PY -c "import torch" 2>/dev/null; then echo "twin: /usr/bin/python3 has no torch (apt-get install python3-torch)"; exit 1; fi
$PY "$HERE/twin_make.py" "$T" >"$T/make.log" 2>&1 || { cat "$T/make.log"; echo "twin: twin_make.py failed"; exit 1; }

# ---- each convention onto the twin, auto-detected ----
declare -A DROPPED=([plain]=1 [bayesian-torch]=19 [blitz]=13 [torchbnn]=1)
for c in plain bayesian-torch blitz torchbnn; do
    out=$T/m_$c.vbseg
    if ! "$V" convert "$T/ckpt_$c.pt" --graph "$T/twin.onnx" "$out" >"$T/rep.txt" 2>&1; then bad "convert $c"; cat "$T/rep.txt"; continue; fi
    grep -qx "naming: $c (auto)" "$T/rep.txt" || bad "$c: naming line: $(head -1 "$T/rep.txt")"
    grep -qx "matched: 12 by name, 0 by bytes; 6 variational; ${DROPPED[$c]} non-parameter key$([ "${DROPPED[$c]}" = 1 ] || echo s) dropped" "$T/rep.txt" || bad "$c: counts: $(sed -n 2p "$T/rep.txt")"
    grep -qx "unmatched in the checkpoint (0)" "$T/rep.txt" && grep -qx "unmatched in the graph, kept as they are (0)" "$T/rep.txt" || bad "$c: unmatched"
    check "$c: info --verify" "$V" info --verify "$out" >/dev/null
    rm -rf "$T/o"
    if "$V" run --model "$out" --input "$T/x.npy" --out "$T/o" --mode mean --raw >/dev/null && close "$T/o/y.npy" "$T/want.npy"; then ok; else bad "$c: mean output against PyTorch"; fi
    "$V" convert "$T/ckpt_$c.pt" --graph "$T/twin.onnx" "$T/n_$c.vbseg" --naming "$c" >"$T/rep.txt" 2>&1 && grep -qx "naming: $c (--naming)" "$T/rep.txt" && ok || bad "$c: --naming $c"
done
# the same means and rhos whatever the convention (torchbnn's rho through log sigma: float rounding)
mkdir -p "$T/d1" "$T/d2"
"$DUMP" "$T/m_plain.vbseg" "$T/d1" && "$DUMP" "$T/m_blitz.vbseg" "$T/d2" && diff -r "$T/d1" "$T/d2" >/dev/null && ok || bad "plain and blitz give different tensors"

# ---- renamed initializers: bytes only, every convention ----
for c in plain bayesian-torch blitz torchbnn; do
    "$V" convert "$T/ckpt_$c.pt" --graph "$T/renamed.onnx" "$T/r_$c.vbseg" >"$T/rep.txt" 2>&1 || { bad "renamed $c: convert"; cat "$T/rep.txt"; }
    grep -qx "matched: 0 by name, 12 by bytes; 6 variational; ${DROPPED[$c]} non-parameter key$([ "${DROPPED[$c]}" = 1 ] || echo s) dropped" "$T/rep.txt" && ok || bad "renamed $c: counts: $(sed -n 2p "$T/rep.txt")"
    rm -rf "$T/o"
    "$V" run --model "$T/r_$c.vbseg" --input "$T/x.npy" --out "$T/o" --mode mean --raw >/dev/null && close "$T/o/y.npy" "$T/want.npy" && ok || bad "renamed $c: mean output"
done
cp "$T/r_blitz.vbseg" "$T/r.vbseg"
# the variational weights found by bytes: the renamed graph's names, the same rhos
rm -rf "$T/d2"; mkdir -p "$T/d2"
"$DUMP" "$T/r.vbseg" "$T/d2" && grep -qx "1 rho inner.enc.weight.rho" "$T/d2/manifest.txt" && ok || bad "renamed: rho names"
for i in $(seq 0 17); do cmp -s "$T/d1/$i.npy" "$T/d2/$i.npy" || { bad "renamed: tensor $i differs"; break; }; done

# ---- unmatched on both sides ----
"$V" convert "$T/plainextra.pt" --graph "$T/twin.onnx" "$T/pe.vbseg" >"$T/rep.txt" 2>&1 || bad "plainextra convert"
grep -qx "unmatched in the checkpoint (1): stray.weight" "$T/rep.txt" && ok || bad "unmatched checkpoint: $(grep unmatched "$T/rep.txt")"
"$V" convert "$T/nobn.pt" --graph "$T/twin.onnx" "$T/nobn.vbseg" >"$T/rep.txt" 2>&1 || bad "nobn convert"
grep -qx "unmatched in the graph, kept as they are (2): bn.bias, bn.running_mean" "$T/rep.txt" && ok || bad "unmatched graph: $(grep unmatched "$T/rep.txt")"
grep -qx "matched: 10 by name, 0 by bytes; 6 variational; 19 non-parameter keys dropped" "$T/rep.txt" && ok || bad "nobn counts"
rm -rf "$T/o"
"$V" run --model "$T/nobn.vbseg" --input "$T/x.npy" --out "$T/o" --mode mean --raw >/dev/null && close "$T/o/y.npy" "$T/want.npy" && ok || bad "nobn: the twin's values kept"

# ---- refusals: one line, exit 1, an existing OUT untouched ----
echo keep >"$T/keep.vbseg"
refuse "a mean the graph lacks" 1 "extra.pt: tensor 'ghost.mu_kernel' is a mean the graph lacks" "$V" convert "$T/extra.pt" --graph "$T/twin.onnx" "$T/keep.vbseg"
refuse "Conv+BN fusion" 1 "fused.onnx: Conv weight '.*' matches no checkpoint tensor: export the twin with do_constant_folding=False (Conv+BN fusion changes the weights)" \
    "$V" convert "$T/ckpt_bayesian-torch.pt" --graph "$T/fused.onnx" "$T/keep.vbseg"
refuse "NaN in a mean" 1 "nan_mu.pt: tensor 'enc.mu_kernel' (the mean of 'enc.weight') contains NaN or Inf" "$V" convert "$T/nan_mu.pt" --graph "$T/twin.onnx" "$T/keep.vbseg"
refuse "Inf in a spread" 1 "inf_rho.pt: tensor 'up.rho_bias' (the spread of 'up.bias') contains NaN or Inf" "$V" convert "$T/inf_rho.pt" --graph "$T/twin.onnx" "$T/keep.vbseg"
refuse "mixed conventions" 1 "mixed.pt: keys of two naming conventions: 'enc.mu_kernel' (bayesian-torch) and 'head.weight_rho' (blitz)" \
    "$V" convert "$T/mixed.pt" --graph "$T/twin.onnx" "$T/keep.vbseg"
# a key read from the file quoted as one line (a newline in it as \n), and whole: the message is not cut at 255 bytes
$PY - "$T" <<'EOF'
import json, struct, sys
def st(path, key):
    h = json.dumps({key: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + b"\0" * 4)
st(sys.argv[1] + "/nl.safetensors", "a\nb.weight_rho")
st(sys.argv[1] + "/long.safetensors", "l" * 100 + ".weight_rho")
EOF
refuse "a newline in a key" 1 "nl.safetensors: tensor 'a\\\\nb.weight_rho' is the spread of 'a\\\\nb.weight', which has no mean in the checkpoint$" \
    "$V" convert "$T/nl.safetensors" --graph "$T/twin.onnx" "$T/keep.vbseg"
cp "$T/nl.safetensors" "$T/a$(printf '\t')b.safetensors"
refuse "a tab in the file name" 1 "/a\\\\tb.safetensors: tensor 'a\\\\nb.weight_rho' is the spread" \
    "$V" convert "$T/a$(printf '\t')b.safetensors" --graph "$T/twin.onnx" "$T/keep.vbseg"
# a file name of 120 bytes 0x01 escapes to 480 bytes: cut to its 250, the message after it is whole
CTRL=$(printf '\001%.0s' $(seq 120))
cp "$T/nl.safetensors" "$T/$CTRL"
refuse "a file name of control bytes, cut" 1 "\\\\x01: tensor 'a\\\\nb.weight_rho' is the spread of 'a\\\\nb.weight', which has no mean in the checkpoint$" \
    "$V" convert "$T/$CTRL" --graph "$T/twin.onnx" "$T/keep.vbseg"
refuse "a long key, whole" 1 "long.safetensors: tensor 'l\{100\}.weight_rho' is the spread of 'l\{100\}.weight', which has no mean in the checkpoint$" \
    "$V" convert "$T/long.safetensors" --graph "$T/twin.onnx" "$T/keep.vbseg"
# the wrong --naming: a spread of the file's convention would be a plain tensor, its layer silently deterministic
for wrong in torchbnn bayesian-torch plain; do
  refuse "blitz keys under --naming $wrong" 1 "ckpt_blitz.pt: tensor '[a-z]*.weight_rho' is a spread under the blitz convention, not under $wrong: its weight would lose it (--naming blitz or auto)" \
      "$V" convert "$T/ckpt_blitz.pt" --graph "$T/twin.onnx" "$T/keep.vbseg" --naming $wrong
done
refuse "bayesian-torch keys under --naming blitz" 1 "tensor '[a-z]*.rho_kernel' is a spread under the bayesian-torch convention, not under blitz" \
    "$V" convert "$T/ckpt_bayesian-torch.pt" --graph "$T/twin.onnx" "$T/keep.vbseg" --naming blitz
refuse "equal means, different spreads" 1 "ambiguous.pt: graph tensor 'inner.enc.bias' has the bytes of both 'enc.bias_mu' and 'copy.bias_mu', whose spreads differ" \
    "$V" convert "$T/ambiguous.pt" --graph "$T/renamed.onnx" "$T/keep.vbseg"
refuse "a spread without its mean" 1 "lone.pt: tensor 'lone.rho_bias' is the spread of 'lone.bias', which has no mean" "$V" convert "$T/lone.pt" --graph "$T/twin.onnx" "$T/keep.vbseg"
refuse "a shape that differs" 1 "shape.pt: tensor 'enc.mu_bias' has shape \[5\] but the graph's 'enc.bias' has \[4\]" "$V" convert "$T/shape.pt" --graph "$T/twin.onnx" "$T/keep.vbseg"
refuse "two keys for one tensor" 1 "twice.pt: tensors 'enc.mu_kernel' and 'enc.mu_weight' both give the values of 'enc.weight'" "$V" convert "$T/twice.pt" --graph "$T/twin.onnx" "$T/keep.vbseg"
refuse "missing checkpoint" 1 "nothere.pt" "$V" convert "$T/nothere.pt" --graph "$T/twin.onnx" "$T/keep.vbseg"
refuse "missing graph" 1 "nothere.onnx" "$V" convert "$T/ckpt_plain.pt" --graph "$T/nothere.onnx" "$T/keep.vbseg"
[ "$(cat "$T/keep.vbseg")" = keep ] && ok || bad "an existing OUT was changed"
refuse "unknown naming" 2 "--naming 'keras'" "$V" convert "$T/ckpt_plain.pt" --graph "$T/twin.onnx" "$T/keep.vbseg" --naming keras
refuse "sigma-init with graph" 2 "--sigma-init applies to IN.onnx alone" "$V" convert "$T/ckpt_plain.pt" --graph "$T/twin.onnx" "$T/keep.vbseg" --sigma-init none
refuse "naming without graph" 2 "need --graph" "$V" convert "$T/twin.onnx" "$T/keep.vbseg" --naming plain
refuse "bad prior" 2 "--prior 'normal:0'" "$V" convert "$T/ckpt_plain.pt" --graph "$T/twin.onnx" "$T/keep.vbseg" --prior normal:0
refuse "graph without OUT" 2 "required" "$V" convert "$T/ckpt_plain.pt" --graph "$T/twin.onnx"
[ "$(cat "$T/keep.vbseg")" = keep ] && ok || bad "an existing OUT was changed by a usage error"

# ---- torchbnn: rho from log sigma ----
"$V" convert "$T/logsig.pt" --graph "$T/twin.onnx" "$T/ls.vbseg" >/dev/null 2>&1 || bad "logsig convert"
rm -rf "$T/d3"; mkdir -p "$T/d3"
"$DUMP" "$T/ls.vbseg" "$T/d3" || bad "logsig dump"
$PY - "$T/d3" "$T/logsig.npy" <<'EOF' && ok || bad "softplus(rho) = exp(log sigma)"
import sys, numpy as np
d = sys.argv[1]
idx = {l.split()[2]: l.split()[0] for l in open(d + "/manifest.txt")}
rho = np.load(d + "/" + idx["up.weight.rho"] + ".npy").astype(np.float64).reshape(-1)
l = np.load(sys.argv[2]).astype(np.float64).reshape(-1)
np.seterr(all="ignore")  # exp(-rho) overflows where the branch is not taken
# log softplus(rho) in double, by its branches (log1p(exp) underflows to 0 below -745)
ls = np.where(rho > 30, np.log(np.maximum(rho, 1)), np.where(rho < -30, rho, np.log(np.log1p(np.exp(np.minimum(rho, 30))))))
err = np.abs(ls - l)
# rho's float rounding (half an ulp, 2^-24 relative) through d log softplus(rho) / d rho = sigmoid(rho) / softplus(rho)
# (1 far below 0, 1/rho far above), plus 1e-7
slope = np.where(rho < -30, 1.0, 1 / (1 + np.exp(-rho)) / np.exp(ls))
tol = 1e-7 + 6e-8 * np.abs(rho) * slope
ok = sorted(set(l.tolist()) & {-800.0, -744.0, -30.0, 3.0, 88.0}) == [-800.0, -744.0, -30.0, 3.0, 88.0] and np.isfinite(rho).all() and (err <= tol).all()
print("log sigma in: max err / bound", (err / tol).max()) if ok else print("err", err[err > tol], "l", l[err > tol], "rho", rho[err > tol])
sys.exit(0 if ok else 1)
EOF
# and exported back as torchbnn: the same log sigma, finite at -800 (log softplus(-800) underflowed to -inf before)
"$V" export "$T/ls.vbseg" "$T/ls.safetensors" --naming torchbnn >/dev/null 2>&1 || bad "logsig export"
$PY - "$T/ls.safetensors" "$T/logsig.npy" <<'EOF' && ok || bad "log sigma exported back"
import json, struct, sys, numpy as np
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
e = json.loads(raw[8:8 + n])["up.weight_log_sigma"]
a, b = e["data_offsets"]
got = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").astype(np.float64).reshape(-1)
l = np.load(sys.argv[2]).astype(np.float64).reshape(-1)
err = np.abs(got - l)
ok = np.isfinite(got).all() and (err <= 1e-7 + 1.2e-7 * np.abs(l)).all()
if ok: print("log sigma back: max err / bound", (err / (1e-7 + 1.2e-7 * np.abs(l))).max())
if not ok: print("got", got, "want", l)
sys.exit(0 if ok else 1)
EOF

# ---- the prior ----
"$V" info "$T/m_plain.vbseg" >"$T/info.txt" && grep -qx "extra:        prior = unknown" "$T/info.txt" && grep -qx "prior:        N(0, 1^2)" "$T/info.txt" && ok || bad "prior unknown"
"$V" convert "$T/ckpt_plain.pt" --graph "$T/twin.onnx" "$T/pr.vbseg" --prior normal:0.25 >/dev/null || bad "convert --prior"
"$V" info "$T/pr.vbseg" >"$T/info.txt" && grep -qx "extra:        prior = normal:0.25" "$T/info.txt" && grep -qx "prior:        N(0, 0.25^2)" "$T/info.txt" && ok || bad "prior recorded"
grep -qx "extra:        naming = plain" "$T/info.txt" && ! grep -q "sigma_init" "$T/info.txt" && ok || bad "card's naming, no sigma_init"

# ---- export to safetensors, and back onto the model ----
"$V" create --arch unet --dims 2 --in-channels 2 --classes 3 --depth 2 --base 4 --seed 5 --rho -4 --norm batch --patch 16x16 \
    --out "$T/u.vbseg" >/dev/null || bad "create"
rm -rf "$T/du"; mkdir -p "$T/du"; "$DUMP" "$T/u.vbseg" "$T/du" || bad "dump u"
$PY -c "import numpy as np; np.save('$T/x2.npy', np.random.default_rng(3).standard_normal((1, 2, 16, 16)).astype(np.float32))"
"$V" run --model "$T/u.vbseg" --input "$T/x2.npy" --out "$T/ou" --samples 3 --seed 1 --raw >/dev/null || bad "run u"
NV=$(grep -c " mu " "$T/du/manifest.txt"); NT=$(grep -vc " rho " "$T/du/manifest.txt")
for c in plain bayesian-torch blitz torchbnn; do
    st=$T/u_$c.safetensors
    if [ $c = plain ]; then args=(); else args=(--naming $c); fi # plain is the default
    "$V" export "$T/u.vbseg" "$st" "${args[@]}" >"$T/rep.txt" 2>&1 || { bad "export $c"; cat "$T/rep.txt"; continue; }
    $PY - "$st" "$T/du" "$c" <<'PYEOF' && ok || bad "export $c: names and values"
import json, struct, sys, numpy as np
path, dump, conv = sys.argv[1:]
raw = open(path, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
meta = head.pop("__metadata__")
data = raw[8 + n:]
def get(k):
    e = head[k]
    assert e["dtype"] == "F32", k
    a, b = e["data_offsets"]
    return np.frombuffer(data[a:b], dtype="<f4").reshape(e["shape"])
man = [l.split() for l in open(dump + "/manifest.txt")]
arr = {name: np.load(f"{dump}/{i}.npy") for i, role, name in man}
want = {}
for i, role, name in man:
    if role == "plain":
        want[name] = (arr[name], None)
    elif role == "mu":
        p, which = name.rsplit(".", 1)
        rho = arr[name + ".rho"]
        if conv == "plain":
            mk, sk = name, name + ".rho"
        elif conv == "bayesian-torch":
            w = "kernel" if which == "weight" and arr[name].ndim > 2 else which
            mk, sk = f"{p}.mu_{w}", f"{p}.rho_{w}"
        elif conv == "blitz":
            mk, sk = f"{p}.{which}_mu", f"{p}.{which}_rho"
        else:
            mk, sk = f"{p}.{which}_mu", f"{p}.{which}_log_sigma"
        want[mk] = (arr[name], None)
        want[sk] = (rho, conv == "torchbnn")
bad = []
if set(want) != set(head):
    bad.append(f"keys: missing {sorted(set(want) - set(head))[:4]}, extra {sorted(set(head) - set(want))[:4]}")
for k, (v, logsig) in want.items():
    if k not in head: continue
    got = get(k)
    if logsig:
        r = v.astype(np.float64)
        l = np.log(np.where(r > 30, r, np.log1p(np.exp(r))))
        if got.shape != v.shape or np.abs(got - l).max() > 1e-6 * max(1, np.abs(l).max()): bad.append(k + ": log sigma")
    elif got.shape != v.shape or got.tobytes() != v.astype("<f4").tobytes(): bad.append(k + ": bytes")
card = json.loads(meta["vbseg.card"])
if meta.get("vbseg.naming") != conv or card.get("output_activation") != "softmax": bad.append(f"metadata {meta}")
if bad: print(conv, bad[:5])
sys.exit(1 if bad else 0)
PYEOF
    out=$T/b_$c.vbseg
    "$V" convert "$st" --graph "$T/u.vbseg" "$out" >"$T/rep.txt" 2>&1 || { bad "convert back $c"; cat "$T/rep.txt"; continue; }
    grep -qx "naming: $c (auto)" "$T/rep.txt" && grep -qx "matched: $NT by name, 0 by bytes; $NV variational; 0 non-parameter keys dropped" "$T/rep.txt" \
        && ok || bad "back $c: report $(head -2 "$T/rep.txt")"
    check "back $c: info --verify" "$V" info --verify "$out" >/dev/null
    rm -rf "$T/db" "$T/ob"; mkdir -p "$T/db"; "$DUMP" "$out" "$T/db" || bad "dump back $c"
    "$V" run --model "$out" --input "$T/x2.npy" --out "$T/ob" --samples 3 --seed 1 --raw >/dev/null || bad "run back $c"
    if [ $c != torchbnn ]; then
        diff -r "$T/du" "$T/db" >/dev/null && ok || bad "back $c: tensors not byte-identical"
        diff -r "$T/ou" "$T/ob" >/dev/null && ok || bad "back $c: sampled outputs not byte-identical"
    else
        cmp -s "$T/du/manifest.txt" "$T/db/manifest.txt" && ok || bad "back torchbnn: manifest"
        $PY - "$T/du" "$T/db" <<'PYEOF' && ok || bad "back torchbnn: tensors"
import sys, numpy as np
a, b = sys.argv[1:]
sp = lambda r: np.where(r > 30, r, np.log1p(np.exp(r)))
for l in open(a + "/manifest.txt"):
    i, role, name = l.split()
    x, y = np.load(f"{a}/{i}.npy").astype(np.float64), np.load(f"{b}/{i}.npy").astype(np.float64)
    if role != "rho" and x.tobytes() != y.tobytes(): sys.exit(f"{name}: differs")
    if role == "rho" and (np.abs(sp(y) / sp(x) - 1).max() > 2e-6): sys.exit(f"{name}: sigma beyond float rounding")
PYEOF
        for f in "$T"/ou/*.npy; do close "$T/ob/$(basename "$f")" "$f" || bad "back torchbnn: $(basename "$f")"; done
    fi
done
# the export's refusals and usage errors; an existing OUT untouched
echo keep >"$T/keep.safetensors"
refuse "export: --mean with safetensors" 2 "apply to OUT.onnx" "$V" export "$T/u.vbseg" "$T/keep.safetensors" --mean
refuse "export: auto" 2 "--naming 'auto'" "$V" export "$T/u.vbseg" "$T/keep.safetensors" --naming auto
refuse "export: naming with onnx" 2 "--naming applies to OUT.safetensors" "$V" export "$T/u.vbseg" "$T/keep.onnx" --naming plain --mean
refuse "export: missing model" 1 "nothere.vbseg" "$V" export "$T/nothere.vbseg" "$T/keep.safetensors"
refuse "export: wrong suffix" 2 "must end in .onnx or .safetensors" "$V" export "$T/u.vbseg" "$T/keep.pt"
# an ONNX import whose variational weight ONNX named (Conv+BN folded: onnx::Conv_N): no bayesian-torch name for it
"$V" convert "$T/fused.onnx" "$T/fusednames.vbseg" >/dev/null || bad "convert fused.onnx"
refuse "export: no name in the convention" 1 "tensor 'onnx::Conv_.*' has no name in the bayesian-torch convention" \
    "$V" export "$T/fusednames.vbseg" "$T/keep.safetensors" --naming bayesian-torch
[ "$(cat "$T/keep.safetensors")" = keep ] && ok || bad "an existing OUT.safetensors was changed"
# the same model in plain names: read back onto its own graph, the same tensors
"$V" export "$T/fusednames.vbseg" "$T/fn.safetensors" >/dev/null && "$V" convert "$T/fn.safetensors" --graph "$T/fusednames.vbseg" "$T/fn.vbseg" >/dev/null \
    && ok || bad "plain export of ONNX names and back"
rm -rf "$T/d4" "$T/d5"; mkdir -p "$T/d4" "$T/d5"
"$DUMP" "$T/fusednames.vbseg" "$T/d4" && "$DUMP" "$T/fn.vbseg" "$T/d5" && diff -r "$T/d4" "$T/d5" >/dev/null && ok || bad "ONNX names: tensors differ"

# ---- a training checkpoint (--key), a card, a PyTorch checkpoint onto a .vbseg graph ----
"$V" convert "$T/train.pt" --graph "$T/twin.onnx" "$T/tr.vbseg" >"$T/rep.txt" 2>&1 && grep -qx "naming: bayesian-torch (auto)" "$T/rep.txt" \
    && ok || bad "training checkpoint: its state_dict"
"$V" convert "$T/train.pt" --graph "$T/twin.onnx" "$T/tr.vbseg" --key ema >"$T/rep.txt" 2>&1 && grep -qx "naming: blitz (auto)" "$T/rep.txt" \
    && ok || bad "training checkpoint: --key ema"
refuse "--key with safetensors" 2 "--key applies to a PyTorch checkpoint" "$V" convert "$T/u_plain.safetensors" --graph "$T/u.vbseg" "$T/keep.vbseg" --key ema
printf '{"channels": ["t1", "t2"], "description": "twin test card"}' >"$T/card.json"
"$V" convert "$T/ckpt_blitz.pt" --graph "$T/twin.onnx" "$T/cd.vbseg" --card "$T/card.json" >/dev/null && "$V" info "$T/cd.vbseg" >"$T/info.txt" \
    && grep -q "twin test card" "$T/info.txt" && grep -q "t1, t2" "$T/info.txt" && grep -qx "extra:        naming = blitz" "$T/info.txt" && ok || bad "--card with an ONNX twin"
refuse "--card with a .vbseg graph" 1 "u.vbseg: --card applies to an ONNX twin" "$V" convert "$T/u_plain.safetensors" --graph "$T/u.vbseg" "$T/keep.vbseg" --card "$T/card.json"
# the model's own names saved by torch.save with one spread removed: that weight becomes plain (its rho gone), the rest as they were
$PY - "$T/u_plain.safetensors" "$T/u_torch.pt" <<'PYEOF' || bad "write u_torch.pt"
import json, struct, sys, numpy as np, torch
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n]); head.pop("__metadata__")
sd = {}
for k, e in head.items():
    a, b = e["data_offsets"]
    sd[k] = torch.from_numpy(np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(e["shape"]).copy())
del sd["up0.bias.rho"]
torch.save(sd, sys.argv[2])
PYEOF
"$V" convert "$T/u_torch.pt" --graph "$T/u.vbseg" "$T/ut.vbseg" >"$T/rep.txt" 2>&1 \
    && grep -qx "matched: $NT by name, 0 by bytes; $((NV - 1)) variational; 0 non-parameter keys dropped" "$T/rep.txt" && ok || bad "u_torch: report $(sed -n 2p "$T/rep.txt")"
rm -rf "$T/d6"; mkdir -p "$T/d6"
"$DUMP" "$T/ut.vbseg" "$T/d6" && grep -qx "[0-9]* plain up0.bias" "$T/d6/manifest.txt" && ! grep -q "up0.bias.rho" "$T/d6/manifest.txt" \
    && [ $(wc -l <"$T/d6/manifest.txt") -eq $(($(wc -l <"$T/du/manifest.txt") - 1)) ] && ok || bad "u_torch: up0.bias plain, its rho gone"
check "u_torch: info --verify" "$V" info --verify "$T/ut.vbseg" >/dev/null

# ---- a training checkpoint of `vbseg train` as the graph: its optimiser state and training state dropped ----
mkdir -p "$T/tdata"
for i in 01 02; do mkdir -p "$T/tdata/Case_$i"; "$B/samples/make_scan" "$T/tdata/Case_$i" "Case_$i" 32 32 4 >/dev/null; done
"$V" train --data "$T/tdata" --out "$T/tm.vbseg" --base 4 --depth 2 --latent 0 --patch 32x32 --epochs 1 --steps-per-epoch 1 --batch 2 \
    --val-cases Case_02 --quiet --checkpoint-dir "$T/tck" >/dev/null 2>&1 || bad "train a checkpoint"
"$V" export "$T/tck/checkpoint.vbseg" "$T/tck.safetensors" --naming blitz >/dev/null || bad "export the checkpoint"
"$V" convert "$T/tck.safetensors" --graph "$T/tck/checkpoint.vbseg" "$T/tback.vbseg" >"$T/rep.txt" 2>&1 || { bad "convert onto the checkpoint"; cat "$T/rep.txt"; }
rm -rf "$T/d7" "$T/d8"; mkdir -p "$T/d7" "$T/d8"
"$DUMP" "$T/tck/checkpoint.vbseg" "$T/d7" && "$DUMP" "$T/tback.vbseg" "$T/d8" || bad "dump the checkpoint"
nm=$(grep -vc "adam\." "$T/d7/manifest.txt")
[ "$nm" -gt 0 ] && grep -q "adam\." "$T/d7/manifest.txt" && [ "$(cat "$T/d8/manifest.txt")" = "$(head -n "$nm" "$T/d7/manifest.txt")" ] \
    && ok || bad "checkpoint graph: the model's tensors in order, no optimiser state"
for i in $(seq 0 $((nm - 1))); do cmp -s "$T/d7/$i.npy" "$T/d8/$i.npy" || { bad "checkpoint graph: tensor $i differs"; break; }; done
"$V" info "$T/tck/checkpoint.vbseg" | grep -q "^checkpoint:" && ! "$V" info "$T/tback.vbseg" | grep -q "^checkpoint:" && ok || bad "checkpoint graph: training state dropped"

echo "twin: $pass passed, $fail failed"
[ $fail -eq 0 ]
