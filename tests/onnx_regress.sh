#!/usr/bin/env bash
# onnx_regress.sh BUILD_DIR: replays every ONNX regression input of issue
# 10 (tests/fuzz/regressions/onnx/, written by its gen.py) through
# `vbseg convert`. Each must exit 1 with exactly one stderr line naming the
# file and the node or field (the refusal the README promises), and leave
# no output and no temporary file behind. Under the ASan/UBSan build any
# report adds lines to stderr or changes the exit status (UBSan halts), so
# the same assertions catch the old crashes, overflows and UB.
set -u
BIN="$(cd "$1" && pwd)/vbseg"
SRC="$(cd "$(dirname "$0")" && pwd)/fuzz/regressions/onnx"
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# the committed bytes are what the generator writes
mkdir "$tmp/gen"
/usr/bin/python3 "$SRC/gen.py" "$tmp/gen" || bad "gen.py failed"
for f in "$tmp"/gen/*.onnx; do
  cmp -s "$f" "$SRC/$(basename "$f")" && ok || bad "$(basename "$f") differs from gen.py's output"
done

# file -> what its one line must say
declare -A want=(
  [node-without-outputs.onnx]="node 0 ('relu', Relu) has no outputs"
  [transpose-fold-perm-repeats-axis.onnx]="node 'tp' (Transpose): attribute perm is not a permutation of 0..1"
  [transpose-perm-repeats-axis.onnx]="node 'tp' (Transpose): attribute perm is not a permutation of 0..3"
  [graph-without-outputs.onnx]="graph 'g' has no outputs"
  [constantofshape-16m-elements.onnx]="node 'big': folding its constant 'z' would take 16777216 elements, over the folding budget"
  [float-constant-out-of-range.onnx]="graph output 'k' is a constant"
  [slice-step-overflow.onnx]="graph output 'k' is a constant"
  [empty-ints-attribute.onnx]="node 'relu' (Relu): unsupported attribute 'foo'"
  [empty-floats-attribute.onnx]="node 'relu' (Relu): unsupported attribute 'foo'"
  [empty-string-attribute.onnx]="node 'relu' (Relu): unsupported attribute 'foo'"
  [squeeze-non-unit-axis.onnx]="node 'sq': op 'Squeeze' is not supported"
  [unsqueeze-repeated-axis.onnx]="node 'usq': op 'Unsqueeze' is not supported"
  [squeeze-repeated-axes-attribute.onnx]="graph output 'k' is a constant"
  [slice-axes-shorter-than-starts.onnx]="node 'sl': op 'Slice' is not supported"
  # found by tests/fuzz/run.sh (written by gen_found.py; fuzz-*: libFuzzer's own input, whose Resize scale it also broke)
  [dropout-without-inputs.onnx]="node 'dr' (Dropout): 0 inputs and 1 outputs; expected 1..3 inputs"
  [resize-without-inputs.onnx]="node 'rs' (Resize): 0 inputs and 1 outputs; expected 1..1 inputs"
  [fuzz-dropout-without-inputs.onnx]="node 'rs' (Resize): attribute 'scales' is not finite"
)
n=0
for f in "$SRC"/*.onnx; do
  name=$(basename "$f")
  n=$((n + 1))
  [ -n "${want[$name]+x}" ] || { bad "$name: no expected message in onnx_regress.sh"; continue; }
  out="$tmp/out/$name.vbseg"
  mkdir -p "$tmp/out"
  (cd "$SRC" && "$BIN" convert "$name" "$out") >"$tmp/stdout" 2>"$tmp/stderr"
  rc=$?
  [ $rc -eq 1 ] && ok || bad "$name: exit $rc, expected 1"
  [ "$(wc -l <"$tmp/stderr")" -eq 1 ] && ok || bad "$name: stderr is not one line: $(head -c 2000 "$tmp/stderr")"
  line=$(head -n 1 "$tmp/stderr")
  case "$line" in
    "vbseg convert: $name: ${want[$name]}"*) ok ;;
    *) bad "$name: got '$line', expected 'vbseg convert: $name: ${want[$name]}...'" ;;
  esac
  [ -z "$(ls -A "$tmp/out")" ] && ok || bad "$name: left $(ls -A "$tmp/out")"
  rm -rf "$tmp/out"
done
[ $n -eq ${#want[@]} ] && ok || bad "$n input files, ${#want[@]} expected messages"
echo "onnx_regress: $pass passed, $fail failed"
[ $fail -eq 0 ]
