#!/usr/bin/env bash
# corrupt_sweep.sh BUILD_DIR: format 1.2's checksums through the commands.
# A training checkpoint (made by `vbseg train` on four small make_scan
# cases) is format 1.2 with every tensor checksummed, the Adam moments
# included; a flipped bit in a first and in a second moment is refused by
# `vbseg train --resume` and by `vbseg info --verify`, naming the tensor,
# and the intact checkpoint still resumes. `vbseg info` says whether a
# file's weights are checksummed (the committed 1.1 checkpoint is not), and
# `info --verify` reports every damaged tensor and padding of a model, one
# line each, without stopping at the first. The oracle for where each
# tensor lies is the loader itself (corrupt_sweep --offset).
set -u
B=$1
V=$B/vbseg
S=$B/tests/corrupt_sweep
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d /tmp/vbs_csweep.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok() { if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $*"; fi; }
# flip FILE OFFSET MASK: xor one byte in place
flip() { /usr/bin/python3 -c "import sys; f=open(sys.argv[1],'r+b'); f.seek(int(sys.argv[2])); b=f.read(1)[0]; f.seek(int(sys.argv[2])); f.write(bytes([b ^ int(sys.argv[3])]))" "$@"; }

for i in 01 02 03 04; do mkdir -p "$T/data/Case_$i"; "$B/samples/make_scan" "$T/data/Case_$i" "Case_$i" 16 16 4 >/dev/null; done
"$V" train --data "$T/data" --out "$T/m.vbseg" --base 2 --depth 1 --latent 0 --norm none --batch 2 --patch 16x16 --val 0.25 --seed 5 \
  --val-samples 1 --epochs 1 --steps-per-epoch 1 --quiet
ok test $? -eq 0
CK=$T/m.vbseg.train/checkpoint.vbseg
ok test -s "$CK"
"$V" info "$CK" >"$T/info.txt"
ok grep -q "^weights:      CRC-32C verified (format 1.2)$" "$T/info.txt"
"$V" info --verify "$CK" >"$T/verify.txt"
ok test $? -eq 0
ok grep -q "^OK: [0-9]* tensors verified (CRC-32C), header CRC and padding verified$" "$T/verify.txt"
ok test "$(wc -l <"$T/verify.txt")" -eq 1

# a flipped bit in each kind of moment: refused on --resume and by info --verify, by name
for t in "adam.m:enc0.conv1.weight" "adam.v:dec0.conv2.bias.rho"; do
  off=$("$S" --offset "$CK" "$t")
  ok test -n "$off"
  cp "$CK" "$T/bad.ckpt"
  flip "$T/bad.ckpt" $((off + 5)) 16
  "$V" train --resume "$T/bad.ckpt" --quiet >"$T/resume.out" 2>"$T/resume.err"
  ok test $? -eq 1
  ok test "$(wc -l <"$T/resume.err")" -eq 1
  ok grep -q "^vbseg train: $T/bad.ckpt: tensor '$t': checksum mismatch (stored 0x[0-9A-F]\{8\}, computed 0x[0-9A-F]\{8\})$" "$T/resume.err"
  "$V" info --verify "$T/bad.ckpt" >"$T/v.out" 2>"$T/v.err"
  ok test $? -eq 1
  ok grep -q "tensor '$t': checksum mismatch" "$T/v.err"
  ok test ! -s "$T/v.out"
done
# the intact checkpoint resumes
ok "$V" train --resume "$CK" --epochs 2 --quiet

# a model with three problems: info --verify names each, one line each, exit 1; loading names the first
"$V" create --arch unet --dims 2 --in-channels 1 --classes 2 --base 2 --depth 1 --latent 0 --out "$T/u.vbseg" >/dev/null
cp "$T/u.vbseg" "$T/u3.vbseg"
o1=$("$S" --offset "$T/u.vbseg" "enc0.conv1.weight")
o2=$("$S" --offset "$T/u.vbseg" "logits.weight.rho")
n=$(stat -c %s "$T/u.vbseg")
flip "$T/u3.vbseg" $((o1 + 3)) 1
flip "$T/u3.vbseg" "$o2" 128
flip "$T/u3.vbseg" $((n - 1)) 4
"$V" info --verify "$T/u3.vbseg" 2>"$T/u3.err"
ok test $? -eq 1
ok test "$(wc -l <"$T/u3.err")" -eq 3
ok grep -q "^vbseg info: $T/u3.vbseg: tensor 'enc0.conv1.weight': checksum mismatch" "$T/u3.err"
ok grep -q "^vbseg info: $T/u3.vbseg: tensor 'logits.weight.rho': checksum mismatch" "$T/u3.err"
ok grep -q "^vbseg info: $T/u3.vbseg: padding after tensor '.*' is not zero (byte $((n - 1)) of the file)$" "$T/u3.err"
"$V" info "$T/u3.vbseg" 2>"$T/u3i.err"
ok test $? -eq 1
ok grep -q "tensor 'enc0.conv1.weight': checksum mismatch" "$T/u3i.err"
# a damaged header: the CRC line, then what that leaves unreadable; a truncation: one line
cp "$T/u.vbseg" "$T/h.vbseg"
flip "$T/h.vbseg" 40 1
"$V" info --verify "$T/h.vbseg" 2>"$T/h.err"
ok test $? -eq 1
ok grep -q "^vbseg info: $T/h.vbseg: header checksum mismatch" "$T/h.err"
head -c 1000 "$T/u.vbseg" >"$T/t.vbseg"
"$V" info --verify "$T/t.vbseg" 2>"$T/t.err"
ok test $? -eq 1
ok test "$(wc -l <"$T/t.err")" -eq 1
ok "$V" info --verify "$T/u.vbseg" >/dev/null
"$V" info --verify "$T/missing.vbseg" 2>"$T/miss.err"
ok test $? -eq 1
ok grep -q "^vbseg info: $T/missing.vbseg: cannot open: No such file or directory$" "$T/miss.err"
"$V" info --verify --json "$T/u.vbseg" 2>/dev/null
ok test $? -eq 2

# the committed 1.1 checkpoint: loads, says it is not checksummed, verifies what it can
"$V" info "$HERE/data/format11.vbseg" >"$T/old.txt"
ok test $? -eq 0
ok grep -q "^weights:      not checksummed (format 1.1; saving it again writes checksums)$" "$T/old.txt"
"$V" info --verify "$HERE/data/format11.vbseg" >"$T/oldv.txt"
ok test $? -eq 0
ok grep -q "^OK: header CRC and padding verified; the [0-9]* tensors are not checksummed (format 1.1 or older)$" "$T/oldv.txt"
"$V" info --json "$HERE/data/format11.vbseg" | grep -q '"format": "1.1", "weights_checksummed": false'
ok test $? -eq 0
"$V" info --json "$T/u.vbseg" | grep -q '"format": "1.2", "weights_checksummed": true'
ok test $? -eq 0

echo "corrupt_sweep.sh: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
