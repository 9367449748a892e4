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
#    (l from -20 to 3); --prior recorded (vbseg info), its absence as unknown
#  - bad usage: exit 2, one line
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
    grep -qx "matched: 12 by name, 0 by bytes; 6 variational; ${DROPPED[$c]} non-parameter keys dropped" "$T/rep.txt" || bad "$c: counts: $(sed -n 2p "$T/rep.txt")"
    grep -qx "unmatched in the checkpoint (0)" "$T/rep.txt" && grep -qx "unmatched in the graph, kept as they are (0)" "$T/rep.txt" || bad "$c: unmatched"
    check "$c: info --verify" "$V" info --verify "$out" >/dev/null
    rm -rf "$T/o"
    if "$V" run --model "$out" --input "$T/x.npy" --out "$T/o" --mode mean --raw >/dev/null && close "$T/o/y.npy" "$T/want.npy"; then ok; else bad "$c: mean output against PyTorch"; fi
    "$V" convert "$T/ckpt_$c.pt" --graph "$T/twin.onnx" "$T/n_$c.vbseg" --naming "$c" >"$T/rep.txt" 2>&1 && grep -qx "naming: $c (--naming)" "$T/rep.txt" && ok || bad "$c: --naming $c"
done
# the same means and rhos whatever the convention (torchbnn's rho through log sigma: float rounding)
mkdir -p "$T/d1" "$T/d2"
"$DUMP" "$T/m_plain.vbseg" "$T/d1" && "$DUMP" "$T/m_blitz.vbseg" "$T/d2" && diff -r "$T/d1" "$T/d2" >/dev/null && ok || bad "plain and blitz give different tensors"

# ---- renamed initializers: bytes only ----
"$V" convert "$T/ckpt_blitz.pt" --graph "$T/renamed.onnx" "$T/r.vbseg" >"$T/rep.txt" 2>&1 || { bad "renamed convert"; cat "$T/rep.txt"; }
grep -qx "matched: 0 by name, 12 by bytes; 6 variational; 13 non-parameter keys dropped" "$T/rep.txt" && ok || bad "renamed counts: $(sed -n 2p "$T/rep.txt")"
rm -rf "$T/o"
"$V" run --model "$T/r.vbseg" --input "$T/x.npy" --out "$T/o" --mode mean --raw >/dev/null && close "$T/o/y.npy" "$T/want.npy" && ok || bad "renamed: mean output"
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
refuse "a convention that does not fit" 1 "tensor 'enc.weight_mu' is a mean without its spread under the torchbnn convention" "$V" convert "$T/ckpt_blitz.pt" --graph "$T/twin.onnx" "$T/keep.vbseg" --naming torchbnn
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
rho = np.load(d + "/" + idx["head.weight.rho"] + ".npy").astype(np.float64)
l = np.load(sys.argv[2]).astype(np.float64)
sig = np.where(rho > 30, rho, np.log1p(np.exp(rho)))
rel = np.abs(sig / np.exp(l) - 1)
# float rounding of rho: half an ulp of |rho| in sigma's relative error (sigma ~ exp(rho) at -20, ~ rho at 3)
ok = l.min() == -20 and l.max() == 3 and (rel <= 2e-6).all()
if not ok: print("max rel", rel.max(), "l", l.min(), l.max())
sys.exit(0 if ok else 1)
EOF

# ---- the prior ----
"$V" info "$T/m_plain.vbseg" >"$T/info.txt" && grep -qx "extra:        prior = unknown" "$T/info.txt" && grep -qx "prior:        N(0, 1^2)" "$T/info.txt" && ok || bad "prior unknown"
"$V" convert "$T/ckpt_plain.pt" --graph "$T/twin.onnx" "$T/pr.vbseg" --prior normal:0.25 >/dev/null || bad "convert --prior"
"$V" info "$T/pr.vbseg" >"$T/info.txt" && grep -qx "extra:        prior = normal:0.25" "$T/info.txt" && grep -qx "prior:        N(0, 0.25^2)" "$T/info.txt" && ok || bad "prior recorded"
grep -qx "extra:        naming = plain" "$T/info.txt" && ! grep -q "sigma_init" "$T/info.txt" && ok || bad "card's naming, no sigma_init"

echo "twin: $pass passed, $fail failed"
[ $fail -eq 0 ]
