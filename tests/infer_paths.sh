#!/usr/bin/env bash
# infer_paths.sh BUILD_DIR: case names that cannot name output files, and
# inputs whose outputs would collide (issue 10, item 10), on real files named
# so; then ONNX external data against the path tricks of ONNX's CVEs.
#  - a bad name (a newline or tab in the file name, a name too long for its
#    outputs) fails that case alone, named
#    printably on one line; the other cases run, exit 1; nothing of it is
#    written and the manifest and summaries keep one line per case;
#  - names that only look odd ('..' inside, spaces, a leading '-') are cases;
#  - collisions are refused before anything is written: a.nii beside
#    a.nii.gz, two nnU-Net files making one case apart in sorted order,
#    BraTS folders X and X_entropy, two flair files in one folder;
#  - external data: a symlinked parent folder, a symlink file, '..', an
#    absolute path, a hard link to a file outside: each refused by
#    `vbseg convert` in one line naming the initializer, nothing written.
set -u
B=$1
S=$(cd "$(dirname "$0")" && pwd)
V=$B/vbseg
T=$(mktemp -d /tmp/vbs_paths.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok() { if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $*"; fi; }
not() { ! "$@"; }
PY=/usr/bin/python3

"$V" create --arch unet --dims 2 --in-channels 4 --classes 4 --base 2 --depth 1 --latent 0 --out "$T/m.vbseg" >/dev/null
$PY "$S/write_nifti.py" "$T/scan.nii.gz" 12 12 2 4
args=(--model "$T/m.vbseg" --samples 2 --no-png)

# ---- bad names: the case fails alone ---------------------------------------
mkdir -p "$T/bad"
long=$(printf 'x%.0s' $(seq 230))
for n in good "a..b" "x .. y" "-dash" "a$'\n'b" $'nl\nname' $'tab\tname' "$long"; do cp "$T/scan.nii.gz" "$T/bad/$n.nii.gz"; done
"$V" infer "${args[@]}" --input "$T/bad" --output "$T/obad" >"$T/bad.out" 2>"$T/bad.err"
ok test $? -eq 1
ok grep -qx "\[[0-9]/8\] nl\\\\nname: FAILED: the case name 'nl\\\\nname' holds a control character: it would break the manifest and the summaries" "$T/bad.err"
ok grep -qx "\[[0-9]/8\] tab\\\\tname: FAILED: the case name 'tab\\\\tname' holds a control character: .*" "$T/bad.err"
ok grep -qx "\[[0-9]/8\] $long: FAILED: the case name '$long' is 230 bytes long: its outputs' names (270 bytes while written) would pass the output folder's limit of 255" "$T/bad.err"
ok grep -qx "vbseg infer: 3 of 8 cases failed (see $T/obad/summary.csv)" "$T/bad.err"
for n in good "a..b" "x .. y" "-dash" "a$'\n'b"; do ok test -s "$T/obad/${n}_epistemic.nii.gz"; done
ok test "$(ls "$T/obad" | grep -c -E '^(nl|tab|xxx)')" -eq 0        # nothing of the bad cases
ok test "$(ls -A "$T/obad" | wc -l)" -eq $((5 * 5 + 4))            # 5 maps for 5 cases, summaries, manifest, lock
ok $PY - "$T/obad" "$long" <<'PY'
import csv, json, sys
d, long = sys.argv[1:3]
rows = {r["case"]: r for r in csv.DictReader(open(f"{d}/summary.csv"))}
assert set(rows) == {"good", "a..b", "x .. y", "-dash", "a$'\\n'b", "nl\\nname", "tab\\tname", long}, set(rows)
for c in ("nl\\nname", "tab\\tname", long):
    assert rows[c]["status"] == "error" and rows[c]["error"].startswith(f"the case name '{c}'"), rows[c]
assert len(json.load(open(f"{d}/summary.json"))) == 8
m = open(f"{d}/manifest.tsv").read().splitlines()
assert sorted(l.split("\t")[0] for l in m[1:]) == sorted(["good", "a..b", "x .. y", "-dash", "a$'\\n'b"]), m
assert all(len(l.split("\t")) == 4 for l in m[1:]), m
PY
# a re-run skips the good ones and fails the bad ones again
"$V" infer "${args[@]}" --input "$T/bad" --output "$T/obad" 2>"$T/bad2.err"
ok test $? -eq 1
ok grep -q "8 cases; 5 already done" "$T/bad2.err"
# an empty case name: nnU-Net files "_0000.nii.gz" are no case (the layout wants CASE_XXXX), and are named
mkdir -p "$T/nn"
for ch in 0 1 2 3; do $PY "$S/write_nifti.py" "$T/nn/c1_000$ch.nii.gz" 12 12 2 1 $ch; cp "$T/nn/c1_000$ch.nii.gz" "$T/nn/_000$ch.nii.gz"; done
"$V" infer "${args[@]}" --input "$T/nn" --output "$T/onn" --layout nnunet 2>"$T/nn.err"
ok test $? -eq 0
ok grep -q "4 files or folders not used by the nnunet layout: _0000.nii.gz, _0001.nii.gz" "$T/nn.err"
ok test -s "$T/onn/c1_epistemic.nii.gz"
ok test -z "$(ls -A "$T/onn" | grep '^[._]' | grep -v '^\.manifest\.tsv\.lock$')"   # no hidden outputs

# ---- collisions: refused before anything is written ------------------------
refused() {   # refused INPUT_DIR LAYOUT EXPECTED_LINE: exit 1, that one line, no output folder
  "$V" infer "${args[@]}" --input "$1" --output "$T/ocoll" --layout "$2" 2>"$T/coll.err"
  local rc=$?
  [ $rc -eq 1 ] || { echo "exit $rc"; return 1; }
  [ "$(cat "$T/coll.err")" = "$3" ] || { echo "got: $(cat "$T/coll.err")"; return 1; }
  [ ! -e "$T/ocoll" ] || { echo "an output folder was left"; return 1; }
}
mkdir -p "$T/c1" && cp "$T/scan.nii.gz" "$T/c1/a.nii.gz" && gunzip -c "$T/scan.nii.gz" >"$T/c1/a.nii" && cp "$T/scan.nii.gz" "$T/c1/b.nii.gz"
ok refused "$T/c1" flat "vbseg infer: $T/c1: $T/c1/a.nii and $T/c1/a.nii.gz are the same input of case 'a': remove or rename one"
# nnU-Net: a_0000 (case a), a_0000_0000 (case a_0000), a_0001 (case a again, apart in sorted order)
mkdir -p "$T/c2"
for f in a_0000 a_0000_0000 a_0001; do cp "$T/nn/c1_0000.nii.gz" "$T/c2/$f.nii.gz"; done
ok refused "$T/c2" nnunet "vbseg infer: $T/c2: $T/c2/a_0000.nii.gz and $T/c2/a_0001.nii.gz both make the case 'a': remove or rename one"
# BraTS folders X and X_entropy: X's entropy map would be X_entropy's label map
mkdir -p "$T/c3/X" "$T/c3/X_entropy"
"$B/samples/make_scan" "$T/c3/X" X 16 16 4 >/dev/null
"$B/samples/make_scan" "$T/c3/X_entropy" X_entropy 16 16 4 >/dev/null
ok refused "$T/c3" brats2021 "vbseg infer: $T/c3: cases 'X' and 'X_entropy' would both write X_entropy.nii.gz: rename one"
# two flair files in one BraTS folder
cp -r "$T/c3/X" "$T/c4" 2>/dev/null; mkdir -p "$T/c4b" && mv "$T/c4" "$T/c4b/X"
gunzip -c "$T/c4b/X/X_flair.nii.gz" >"$T/c4b/X/X_flair.nii"
ok refused "$T/c4b" brats2021 "vbseg infer: $T/c4b: $T/c4b/X/X_flair.nii and $T/c4b/X/X_flair.nii.gz are the same input of case 'X': remove or rename one"
# a BraTS folder and a loose file of the same name: the file is no case of the layout (said), no collision
mkdir -p "$T/c5" && cp -r "$T/c3/X" "$T/c5/" && cp "$T/scan.nii.gz" "$T/c5/X.nii.gz"
"$V" infer "${args[@]}" --input "$T/c5" --output "$T/oc5" 2>"$T/c5.err"
ok test $? -eq 0
ok grep -q "1 file or folder not used by the brats2021 layout: X.nii.gz" "$T/c5.err"
# an existing output folder is left as it was by a refusal
mkdir -p "$T/ocoll" && echo keep >"$T/ocoll/keep.txt"
"$V" infer "${args[@]}" --input "$T/c3" --output "$T/ocoll" 2>/dev/null
ok test $? -eq 1
ok test "$(ls -A "$T/ocoll")" = "keep.txt"

# ---- ONNX external data ----------------------------------------------------
mkdir -p "$T/x/sub" "$T/outside"
ok $PY - "$S/fuzz/regressions/onnx" "$T" <<'PY'
import struct, sys
sys.path.insert(0, sys.argv[1])
from gen import fb, fv, node, model
t = sys.argv[2]
w = struct.pack("<f", 0.5)
for d in ("x", "x/sub", "outside"):
    open(f"{t}/{d}/w.bin", "wb").write(w)
open(f"{t}/outside/h.bin", "wb").write(w)
def ext_model(loc):
    # a 1x1 Conv whose weight is external data: dims, FLOAT, name, external_data {location}, data_location EXTERNAL
    wt = fv(1, 1) + fv(1, 1) + fv(1, 1) + fv(1, 1) + fv(2, 1) + fb(8, "W") + fb(13, fb(1, "location") + fb(2, loc)) + fv(14, 1)
    return model([node("Conv", "conv", ["x", "W"], ["y"])], inits=[wt])
cases = {"ok": "w.bin", "ok_sub": "sub/w.bin", "parent_link": "lnk/w.bin", "file_link": "flink.bin", "dotdot": "sub/../../outside/w.bin",
         "absolute": f"{t}/outside/w.bin", "hard_link": "hard.bin", "inner_link": "inlnk/w.bin"}
for name, loc in cases.items():
    open(f"{t}/x/{name}.onnx", "wb").write(ext_model(loc))
PY
ln -s "$T/outside" "$T/x/lnk"                 # a symlinked parent folder leading out (CVE-2026-27489)
ln -s "$T/outside/w.bin" "$T/x/flink.bin"     # a symlink file
ln "$T/outside/h.bin" "$T/x/hard.bin"         # a hard link to a file outside (CVE-2026-34446)
ln -s sub "$T/x/inlnk"                        # a link that stays inside the folder
ok "$V" convert "$T/x/ok.onnx" "$T/x/ok.vbseg" --sigma-init none
ok "$V" convert "$T/x/ok_sub.onnx" "$T/x/ok_sub.vbseg" --sigma-init none
ok "$V" convert "$T/x/inner_link.onnx" "$T/x/inner_link.vbseg" --sigma-init none
ext_refused() {   # ext_refused NAME NEEDLE
  "$V" convert "$T/x/$1.onnx" "$T/x/$1.vbseg" --sigma-init none 2>"$T/x/$1.err"
  local rc=$?
  [ $rc -eq 1 ] && [ "$(wc -l <"$T/x/$1.err")" -eq 1 ] && grep -q "$T/x/$1.onnx.*initializer 'W': external data .*$2" "$T/x/$1.err" &&
    [ ! -e "$T/x/$1.vbseg" ] || { echo "$1: exit $rc: $(cat "$T/x/$1.err")"; return 1; }
}
ok ext_refused parent_link "resolves outside the model's folder"
ok ext_refused file_link "is a symlink"
ok ext_refused dotdot "contains '..'"
ok ext_refused absolute "is absolute"
ok ext_refused hard_link "has 2 hard links"

echo "infer_paths: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
