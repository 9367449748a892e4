#!/usr/bin/env bash
# paper_smoke.sh BUILD_DIR: samples/paper/reproduce.sh --quick --smoke end to
# end (tiny generated cases, a few steps per run): every output exists and
# parses. results.csv has one row per run of the grid (5 models x 4 train
# sizes) with scores in range, and the deterministic rows, only they, have
# no epistemic measures; tables.md has Tables 2 and 3 with the paper's
# numbers and our scores as results.csv has them; every PNG is a whole PNG
# (chunk CRCs, inflated image size) of a plausible size; a second run
# redoes nothing; --data splits a folder of cases by name, or refuses one
# with too few.
set -u
B=$(cd "$1" && pwd)
S=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d /tmp/vbs_paper.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
not_grep() { ! grep -q "$@"; }
ok() { if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $*"; fi; }
PY=/usr/bin/python3

bash "$S/../samples/paper/reproduce.sh" --quick --smoke --build "$B" --out "$T/p" >"$T/run.log" 2>&1
rc=$?
ok test $rc -eq 0
[ $rc -eq 0 ] || tail -20 "$T/run.log"
for f in results.csv tables.md dice_vs_train_size.png reliability.png uncertainty_error.png figure3.png; do
  ok test -s "$T/p/$f"
done

# results.csv: the header, 20 rows, every model at every size, values in range
"$PY" - "$T/p/results.csv" <<'EOF' >"$T/csv.out" 2>&1
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1])))
want = ["model", "train_size", "seed", "dice_wt", "iou_wt", "dice_tc", "iou_tc", "dice_et", "iou_et", "ece", "auroc_epistemic",
        "dicekept_wt_epistemic", "auroc_entropy", "dicekept_wt_entropy", "train_s", "infer_s"]
assert list(rows[0].keys()) == want, rows[0].keys()
assert len(rows) == 20, len(rows)
cells = {(r["model"], int(r["train_size"])) for r in rows}
assert cells == {(m, n) for m in ["unet", "vnet", "fcn", "unet-det", "unet-mcdrop"] for n in [5, 10, 15, 20]}, cells
for r in rows:
    for k in want[3:14]:
        v = float(r[k])
        epi = k in ("auroc_epistemic", "dicekept_wt_epistemic")
        if r["model"] == "unet-det" and epi:
            assert math.isnan(v), (r["model"], k, v)
        else:
            assert 0 <= v <= 1, (r["model"], k, v)
    # IoU = D / (2 - D) holds per case, so the mean IoU is at most the mean Dice
    assert float(r["iou_wt"]) <= float(r["dice_wt"]) + 1e-9
    assert int(r["train_s"]) >= 0 and int(r["infer_s"]) >= 0
print("ok")
EOF
ok grep -qx ok "$T/csv.out" || cat "$T/csv.out"

# tables.md: both tables, the paper's numbers, our U-Net scores as in results.csv
ok grep -q "### Table 2: mean Dice (whole tumour)" "$T/p/tables.md"
ok grep -q "### Table 3: mean IoU (whole tumour)" "$T/p/tables.md"
ok grep -q "^| 20 | .* | 64.3 | 56.5 | 58.9 |$" "$T/p/tables.md"
ok grep -q "^| 5 | .* | 48.4 | 46.7 | 47.2 |$" "$T/p/tables.md"
d=$(awk -F, '$1 == "unet" && $2 == 10 { printf "%.1f", 100 * $4 }' "$T/p/results.csv")
ok grep -q "^| 10 | $d | " "$T/p/tables.md"
ok test "$(grep -c '^| [0-9]* | U-Net deterministic (σ = 0) | [0-9.]* | n/a | ' "$T/p/tables.md")" -eq 4

# every PNG parses: signature, chunk CRCs, IHDR, the inflated IDAT of the right length
for f in dice_vs_train_size reliability uncertainty_error figure3; do
  "$PY" - "$T/p/$f.png" <<'EOF' >"$T/png.out" 2>&1
import struct, sys, zlib
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"\x89PNG\r\n\x1a\n"
i, idat, ihdr, end = 8, b"", None, False
while i < len(b):
    n, = struct.unpack(">I", b[i:i + 4]); t = b[i + 4:i + 8]; d = b[i + 8:i + 8 + n]
    assert struct.unpack(">I", b[i + 8 + n:i + 12 + n])[0] == zlib.crc32(t + d), t
    if t == b"IHDR": ihdr = struct.unpack(">IIBBBBB", d)
    if t == b"IDAT": idat += d
    if t == b"IEND": end = True
    i += 12 + n
w, h, depth, ctype = ihdr[:4]
ch = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
assert end and depth == 8 and w >= 100 and h >= 60, ihdr
assert len(zlib.decompress(idat)) == h * (1 + w * ch)
print("ok")
EOF
  ok grep -qx ok "$T/png.out" || { echo "$f.png:"; cat "$T/png.out"; }
done

# a second run finds every row done: nothing trained again, the same results
cp "$T/p/results.csv" "$T/first.csv"
bash "$S/../samples/paper/reproduce.sh" --quick --smoke --build "$B" --out "$T/p" >"$T/run2.log" 2>&1
ok test $? -eq 0
ok not_grep "run [0-9]* of" "$T/run2.log"
ok cmp -s "$T/first.csv" "$T/p/results.csv"
# --data: a folder of BraTS cases is split by name (20 training, 2 validation, the test set); too few refused
"$B/samples/make_brats" "$T/real" --cases 24 --seed 9 --size 32x32x16 --spacing 7.5x7.5x9.6875 --quiet
bash "$S/../samples/paper/reproduce.sh" --smoke --data "$T/real" --test-cases 2 --patch 32x32 --build "$B" --out "$T/r" >"$T/real.log" 2>&1
ok test $? -eq 0
ok test "$(ls "$T/r/data/test")" = "$(ls "$T/real" | sort | tail -2)"
ok test "$(ls "$T/r/data/pool" | wc -l)" -eq 20
ok test "$(tail -n +2 "$T/r/results.csv" | wc -l)" -eq 20
bash "$S/../samples/paper/reproduce.sh" --smoke --data "$T/real" --test-cases 3 --build "$B" --out "$T/r3" >"$T/few.log" 2>&1
ok test $? -eq 1
ok grep -q "^reproduce.sh: $T/real: 24 case folders, the grid needs 25 " "$T/few.log"
ok test "$(wc -l <"$T/few.log")" -eq 1
# bad options: one line, exit 2, nothing made
for bad in "--seeds x" "--jobs 0" "--test-cases 2a" "--data $T/nowhere" "--frobnicate"; do
  bash "$S/../samples/paper/reproduce.sh" --smoke $bad --build "$B" --out "$T/bad" >"$T/bad.log" 2>&1
  ok test $? -eq 2
  ok test "$(wc -l <"$T/bad.log")" -eq 1
  ok grep -q "^reproduce.sh: " "$T/bad.log"
done
ok test ! -e "$T/bad"
echo "paper_smoke: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
