#!/usr/bin/env bash
# infer_lock.sh BUILD_DIR: two `vbseg infer` runs on one output folder (issue
# 10, item 8). Runs are held open deterministically, not by timing: a case
# whose input is a named pipe blocks its run in open() until the test feeds
# the pipe, so the run holds its lock for as long as the test wants.
#  - a second run is refused (exit 1, one line naming the first run's pid,
#    nothing written by it); with --wait it waits, says so once (nothing with
#    --quiet), then skips what the first finished;
#  - two shards of one job array run at once; an unsharded run and a second
#    copy of a running shard are refused meanwhile; a shard clears only its
#    own temporaries; a lock held by flock(1) refuses a run too;
#  - every output equals a single uninterrupted run's, byte for byte (cmp).
set -u
B=$1
S=$(cd "$(dirname "$0")" && pwd)
V=$B/vbseg
T=$(mktemp -d /tmp/vbs_lock.XXXXXX)
bg=()
cleanup() { for p in "${bg[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
pass=0 fail=0
ok() { if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $*"; fi; }
PY=/usr/bin/python3
# waits (at most ~20 s) until a file holds a line matching a pattern
wait_for() { for _ in $(seq 2000); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.01; done; echo "timed out waiting for '$2' in $1"; return 1; }

"$V" create --arch unet --dims 2 --in-channels 4 --classes 4 --base 2 --depth 2 --latent 2 --rho -3 --out "$T/m.vbseg" >/dev/null
# flat layout, one 4D file per case; the reference folder has plain files only
mkdir -p "$T/ref_in" "$T/in" "$T/sh_in"
i=1
for c in a0 a1 f0 f1; do $PY "$S/write_nifti.py" "$T/ref_in/$c.nii.gz" 20 16 3 4 $i; i=$((i+1)); done
cp "$T"/ref_in/a*.nii.gz "$T/in/"; cp "$T"/ref_in/a*.nii.gz "$T/sh_in/"
mkfifo "$T/in/f0.nii.gz"                              # run 1 blocks on this case
mkfifo "$T/sh_in/f0.nii.gz" "$T/sh_in/f1.nii.gz"      # shard 0 of 2 takes a0, f0; shard 1 takes a1, f1
cp "$T/ref_in/f1.nii.gz" "$T/in/"
args=(--model "$T/m.vbseg" --samples 3 --seed 5)
"$V" infer "${args[@]}" --input "$T/ref_in" --output "$T/ref" --quiet
ok test "$(ls "$T/ref" | grep -c '\.nii\.gz$')" -eq 20

same_as_ref() {   # every output of the reference run, byte for byte
  local d=$1 f
  for f in "$T"/ref/*.nii.gz "$T"/ref/*.png; do cmp -s "$f" "$d/$(basename "$f")" || { echo "differs: $d/$(basename "$f")"; return 1; }; done
}

# ---- a second run on the same folder: refused, naming the first ------------
"$V" infer "${args[@]}" --input "$T/in" --output "$T/o" 2>"$T/run1.err" &
p1=$!; bg+=($p1)
ok wait_for "$T/o/.manifest.tsv.lock" "^$p1 *\$"        # the holder's pid, in the lock file
ok wait_for "$T/run1.err" "^\[2/4\] a1: ok"           # working: a0, a1 done, f0 next (blocked on the pipe)
"$V" infer "${args[@]}" --input "$T/in" --output "$T/o" >"$T/run2.out" 2>"$T/run2.err"
ok test $? -eq 1
ok test "$(cat "$T/run2.err")" = "vbseg infer: $T/o: another vbseg infer is writing here (pid $p1); wait for it, or add --wait"
ok test ! -s "$T/run2.out"
ok test "$(tail -n +2 "$T/o/manifest.tsv" | cut -f1 | tr '\n' ' ')" = "a0 a1 "   # run 2 wrote nothing: the manifest is run 1's
ok test -z "$(ls "$T/o" | grep -E '^(f0|f1)')"
# the lock file is not a case nor an output, for infer and eval
ok test "$(ls -A "$T/o" | grep -c lock)" -eq 1
# --wait: one line saying so, then it proceeds once run 1 is done, skipping its cases
"$V" infer "${args[@]}" --input "$T/in" --output "$T/o" --wait 2>"$T/run3.err" &
p3=$!; bg+=($p3)
"$V" infer "${args[@]}" --input "$T/in" --output "$T/o" --wait --quiet 2>"$T/run4.err" &
p4=$!; bg+=($p4)
ok wait_for "$T/run3.err" "^vbseg infer: $T/o: another vbseg infer is writing here (pid $p1); waiting for it to finish\$"
sleep 0.2                                              # (only to let run 4 reach its wait: its silence is checked below)
ok kill -0 $p3                                         # both still waiting
ok kill -0 $p4
cat "$T/ref_in/f0.nii.gz" >"$T/in/f0.nii.gz"           # release run 1
wait $p1; ok test $? -eq 0
wait $p3; rc3=$?
wait $p4; rc4=$?
ok test $rc3 -eq 0
ok test $rc4 -eq 0
ok test "$(grep -c 'waiting for it to finish' "$T/run3.err")" -eq 1
for c in a0 a1 f0 f1; do ok grep -q "^\[[1-4]/4\] $c: already done" "$T/run3.err"; done
ok test ! -s "$T/run4.err"                             # --quiet: not a word, waiting included
ok same_as_ref "$T/o"
ok test "$(tail -n +2 "$T/o/manifest.tsv" | cut -f1 | sort | tr '\n' ' ')" = "a0 a1 f0 f1 "
ok test -z "$(ls -A "$T/o" | grep -E '\.tmp\.|^\.vbseg-part\.')"

# ---- shards: two at once; others refused while they run --------------------
"$V" infer "${args[@]}" --input "$T/sh_in" --output "$T/s" --shard 0/2 --quiet 2>"$T/s0.err" &
s0=$!; bg+=($s0)
"$V" infer "${args[@]}" --input "$T/sh_in" --output "$T/s" --shard 1/2 --quiet 2>"$T/s1.err" &
s1=$!; bg+=($s1)
ok wait_for "$T/s/.manifest.shard-0-of-2.tsv.lock" "^$s0 *\$"
ok wait_for "$T/s/.manifest.shard-1-of-2.tsv.lock" "^$s1 *\$"
ok wait_for "$T/s/manifest.shard-0-of-2.tsv" "^a0	ok"   # each did its plain case, and waits on its pipe
ok wait_for "$T/s/manifest.shard-1-of-2.tsv" "^a1	ok"
ok kill -0 $s0                                           # both hold their locks at once
ok kill -0 $s1
"$V" infer "${args[@]}" --input "$T/sh_in" --output "$T/s" --shard 1/2 2>"$T/s1b.err"
ok test $? -eq 1
ok grep -qx "vbseg infer: $T/s: another vbseg infer is writing here (pid $s1); wait for it, or add --wait" "$T/s1b.err"
"$V" infer "${args[@]}" --input "$T/sh_in" --output "$T/s" 2>"$T/sall.err"   # unsharded: it would take the shards' cases
ok test $? -eq 1
ok grep -qE "^vbseg infer: $T/s: another vbseg infer is writing here \(pid ($s0|$s1)\); wait for it, or add --wait\$" "$T/sall.err"
ok test "$(wc -l <"$T/sall.err")" -eq 1
cat "$T/ref_in/f0.nii.gz" >"$T/sh_in/f0.nii.gz"
cat "$T/ref_in/f1.nii.gz" >"$T/sh_in/f1.nii.gz"
wait $s0; ok test $? -eq 0
wait $s1; ok test $? -eq 0
ok test ! -s "$T/s0.err"
ok same_as_ref "$T/s"
# a shard starting clears the temporaries a killed run of the same shard left, never another shard's
# (which may be running): here one of each, as a kill while writing leaves them
mkdir -p "$T/st"
for f in .vbseg-part.a0_entropy.nii.gz .vbseg-part.a0.nii.gz.tmp.AbC123 summary.shard-0-of-2.csv.tmp.XyZ789 \
         .vbseg-part.a1_entropy.nii.gz .vbseg-part.a1.nii.gz.tmp.AbC123 summary.shard-1-of-2.csv.tmp.XyZ789; do touch "$T/st/$f"; done
"$V" infer "${args[@]}" --input "$T/ref_in" --output "$T/st" --shard 0/2 2>"$T/st.err"
ok test $? -eq 0
ok grep -q "removed 3 temporaries left by an interrupted run" "$T/st.err"
ok test "$(ls -A "$T/st" | grep -E '\.tmp\.|^\.vbseg-part\.' | LC_ALL=C sort | tr '\n' ' ')" = ".vbseg-part.a1.nii.gz.tmp.AbC123 .vbseg-part.a1_entropy.nii.gz summary.shard-1-of-2.csv.tmp.XyZ789 "
# an unsharded run holds the folder alone and clears every temporary
"$V" infer "${args[@]}" --input "$T/ref_in" --output "$T/st" --quiet
ok test -z "$(ls -A "$T/st" | grep -E '\.tmp\.|^\.vbseg-part\.')"
# a shard started while an unsharded run holds the folder is refused; the folder run's pid is named
mkdir -p "$T/gate" && cp "$T/ref_in/a0.nii.gz" "$T/gate/" && mkfifo "$T/gate/f0.nii.gz"
"$V" infer "${args[@]}" --input "$T/gate" --output "$T/g" --quiet &
g=$!; bg+=($g)
ok wait_for "$T/g/.manifest.tsv.lock" "^$g *\$"
"$V" infer "${args[@]}" --input "$T/gate" --output "$T/g" --shard 0/2 2>"$T/gsh.err"
ok test $? -eq 1
ok grep -qx "vbseg infer: $T/g: another vbseg infer is writing here (pid $g); wait for it, or add --wait" "$T/gsh.err"
cat "$T/ref_in/f0.nii.gz" >"$T/gate/f0.nii.gz"
wait $g; ok test $? -eq 0

# ---- a lock held by another program (flock(1)) ------------------------------
mkdir -p "$T/h" && mkfifo "$T/release"
flock "$T/h/.manifest.tsv.lock" sh -c 'echo 424242 >"$1"; cat "$2" >/dev/null' sh "$T/h/.manifest.tsv.lock" "$T/release" &
fl=$!; bg+=($fl)
ok wait_for "$T/h/.manifest.tsv.lock" "^424242\$"
"$V" infer "${args[@]}" --input "$T/ref_in" --output "$T/h" 2>"$T/h.err"
ok test $? -eq 1
ok test "$(cat "$T/h.err")" = "vbseg infer: $T/h: another vbseg infer is writing here (pid 424242); wait for it, or add --wait"
ok test "$(ls "$T/h")" = ""                             # nothing written
"$V" infer "${args[@]}" --input "$T/ref_in" --output "$T/h" --wait --quiet &
w=$!; bg+=($w)
sleep 0.3
ok kill -0 $w                                           # still waiting while the lock is held
ok test "$(ls "$T/h")" = ""
: >"$T/release"                                         # the holder's command ends: flock(1) releases
wait $fl
wait $w; ok test $? -eq 0
ok same_as_ref "$T/h"

echo "infer_lock: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
