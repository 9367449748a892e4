#!/usr/bin/env bash
# loaders_regress.sh BUILD_DIR: replays the loader regression inputs of
# issue 10 (tests/fuzz/regressions/{npy,nifti,card,vbseg}/, from the outside
# fuzzing campaign) through the vbseg command: each is refused with exit 1,
# one line on stderr naming the file and the field (or node), nothing on
# stdout and nothing written. The oracle is the format itself: what each
# file declares is impossible or out of range, so refusal is the only right
# answer. The committed bytes must equal what make_loaders.py generates.
# Memory: the .npy and .nii.gz that declare gigabytes run with allocations
# capped (ulimit -v in the Release build; under ASan, which reserves
# terabytes of address space, ASan's own max_allocation_size_mb), so a
# reader that allocates what the header declares fails the test.
set -u
B=$1
V=$B/vbseg
S=$(cd "$(dirname "$0")" && pwd)
R=$S/fuzz/regressions
T=$(mktemp -d /tmp/vbs_loaders.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok() { if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $*"; fi; }
asan=0
grep -q '^VBS_SANITIZE:BOOL=ON' "$B/CMakeCache.txt" 2>/dev/null && asan=1

# refused FIELD FILE OUTDIR cmd...: exit 1, one stderr line naming FILE and FIELD, no stdout, OUTDIR empty
refused() {
  local field=$1 file=$2 out=$3; shift 3
  local so rc
  so=$("$@" 2>"$T/err"); rc=$?
  local e; e=$(cat "$T/err")
  if [ $rc -eq 1 ] && [ -z "$so" ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -qF -- "$file" "$T/err" && grep -qF -- "$field" "$T/err" &&
     { [ ! -e "$out" ] || [ -z "$(ls -A "$out")" ]; }; then
    return 0
  fi
  echo "  rc=$rc stdout='$so' stderr='$e' (wanted: exit 1, one line naming $file and '$field', nothing in $out)"
  return 1
}
# capped cmd...: runs cmd with allocations of more than 512 MB made to fail
capped() {
  if [ $asan = 1 ]; then
    ASAN_OPTIONS="${ASAN_OPTIONS:-}:max_allocation_size_mb=512:allocator_may_return_null=1" "$@"
  else
    (ulimit -v 1048576; "$@")
  fi
}

# the committed inputs are exactly the generator's bytes
/usr/bin/python3 "$R/make_loaders.py" "$T/gen"
for sub in npy nifti card vbseg; do
  ok diff -r "$R/$sub" "$T/gen/$sub"
done

"$V" create --arch unet --dims 2 --in-channels 1 --classes 2 --base 2 --depth 1 --latent 0 --out "$T/m.vbseg" >/dev/null
ok test -s "$T/m.vbseg"

# 1. .npy: a 128-byte file declaring 5.3 GB; a file whose data is not what its shape says
f=$R/npy/huge-shape-tiny-file.npy
ok refused "field shape" "$f" "$T/o1" capped "$V" run --model "$T/m.vbseg" --input "$f" --out "$T/o1"
ok refused "field shape" "$f" "$T/o2" capped "$V" run --model "$T/m.vbseg" --input "$f" --out "$T/o2" --raw
f=$R/npy/shape-longer-than-data.npy
ok refused "field shape" "$f" "$T/o3" "$V" run --model "$T/m.vbseg" --input "$f" --out "$T/o3"
# a .npy that is not a regular file (its size is unknown): refused, not read
mkfifo "$T/pipe.npy"
timeout 30 cat "$R/npy/shape-longer-than-data.npy" >"$T/pipe.npy" 2>/dev/null &
ok refused "not a regular file" "$T/pipe.npy" "$T/o4" "$V" run --model "$T/m.vbseg" --input "$T/pipe.npy" --out "$T/o4"
wait
# the rule refuses nothing good: a well-formed (1, 8, 8) array runs
/usr/bin/python3 -c "import numpy, sys; numpy.save(sys.argv[1], numpy.ones((1, 8, 8), numpy.float32))" "$T/good.npy"
ok "$V" run --model "$T/m.vbseg" --input "$T/good.npy" --out "$T/good" --samples 2 >/dev/null
ok test -s "$T/good/labels.npy"

# 2. NIfTI vox_offset out of int64's range or NaN: refused with the field named (UBSan: no float-cast-overflow)
for n in vox-offset-1e30 vox-offset-nan vox-offset-minus-1e30; do
  f=$R/nifti/$n.nii
  ok refused "field vox_offset" "$f" "$T/o_$n" "$V" run --model "$T/m.vbseg" --input "$f" --out "$T/o_$n"
done
# a .nii.gz declaring 8 GiB with 16 bytes of data: refused as truncated without allocating the 8 GiB
f=$R/nifti/huge-dims-tiny-file.nii.gz
ok refused "truncated" "$f" "$T/o5" capped "$V" run --model "$T/m.vbseg" --input "$f" --out "$T/o5"

# 3. .vbseg with empty INTS/FLOATS/STRING attributes (UBSan: no memcpy from NULL): read, then
#    refused by the graph checks naming the node 'relu' (Relu takes no such attribute)
ONNXCASE=/usr/include/onnx/backend/test/data/node/test_conv_with_strides_padding/model.onnx
for n in empty-ints-attribute empty-floats-attribute empty-string-attribute; do
  f=$R/vbseg/$n.vbseg
  ok refused "relu" "$f" "$T/none" "$V" info "$f"
done

# 4. model cards: truncated JSON and seeds out of range, refused by `vbseg convert --card` naming the field or position
if [ -f "$ONNXCASE" ]; then
  for n in seed-truncated seed-truncated-string seed-float-nan seed-integer-too-big; do
    f=$R/card/$n.json
    mkdir -p "$T/c_$n"
    ok refused "invalid JSON" "$f" "$T/c_$n" "$V" convert "$ONNXCASE" "$T/c_$n/m.vbseg" --card "$f"
  done
  for n in seed-float-1e300 seed-negative; do
    f=$R/card/$n.json
    mkdir -p "$T/c_$n"
    ok refused "field 'seed'" "$f" "$T/c_$n" "$V" convert "$ONNXCASE" "$T/c_$n/m.vbseg" --card "$f"
  done
else
  echo "SKIP: $ONNXCASE missing (libonnx-testdata): the card inputs are not replayed"
fi

echo "loaders_regress: $pass passed, $fail failed"
[ $fail -eq 0 ]
