#!/usr/bin/env bash
# eval.sh BUILD_DIR: `vbseg eval` against values computed here by brute force
# in NumPy (Dice, IoU, HD95 with anisotropic voxels, AUROC, ECE, Dice after
# discarding the most uncertain voxels, the --curves rows), over the
# union of the label values of both sides, BraTS 2018/2023 regions found by
# `auto` and the warnings for contradicting conventions, label maps refused
# (non-integer, too many values), the CSV written atomically or the exit
# status 1 with the reason, and `vbseg eval --merge` over the shard summaries
# of `vbseg infer` (missing shards warned, shards of different N refused).
set -u
B=$1
V=$B/vbseg
T=$(mktemp -d /tmp/vbs_eval.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok() { if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $*"; fi; }
# status NAME WANT GOT: one check of an exit status
status() { if [ "$3" -eq "$2" ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $1: exit status $3, want $2"; fi; }
mkdir -p "$T/pred" "$T/truth"
# the NumPy side: NIfTI writer and brute-force metrics, shared by the checks below
cat >"$T/evlib.py" <<'PY'
import csv, gzip, math, struct
import numpy as np
sp = (1.2, 1.2, 2.0)
def save(path, a):                      # a is (z, y, x) -> NIfTI x fastest
    a = np.asarray(a, np.float32)
    h = bytearray(352)
    struct.pack_into("<i", h, 0, 348)
    t4 = a.shape[0] if a.ndim == 4 else 1
    zyx = a.shape[-3:]
    struct.pack_into("<8h", h, 40, 4 if a.ndim == 4 else 3, zyx[2], zyx[1], zyx[0], t4, 1, 1, 1)
    struct.pack_into("<hh", h, 70, 16, 32)
    struct.pack_into("<8f", h, 76, 1, *sp, 1, 1, 1, 1)
    struct.pack_into("<f", h, 108, 352.0); struct.pack_into("<f", h, 112, 1.0)
    struct.pack_into("<hh", h, 252, 1, 1)
    struct.pack_into("<4f", h, 280, sp[0], 0, 0, 0); struct.pack_into("<4f", h, 296, 0, sp[1], 0, 0); struct.pack_into("<4f", h, 312, 0, 0, sp[2], 0)
    h[344:348] = b"n+1\0"
    with gzip.open(path, "wb") as f: f.write(bytes(h) + a.astype("<f4").tobytes())
def surface(m):
    p = np.pad(m, 1)
    inner = p[1:-1, 1:-1, 1:-1] & p[:-2, 1:-1, 1:-1] & p[2:, 1:-1, 1:-1] & p[1:-1, :-2, 1:-1] & p[1:-1, 2:, 1:-1] & p[1:-1, 1:-1, :-2] & p[1:-1, 1:-1, 2:]
    return m & ~inner
def hd95(a, b):
    if not a.any() and not b.any(): return 0.0
    if not a.any() or not b.any(): return float("nan")
    pa = np.argwhere(surface(a)) * np.array(sp[::-1]); pb = np.argwhere(surface(b)) * np.array(sp[::-1])
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    p95 = lambda v: np.sort(v)[int(np.ceil(0.95 * len(v))) - 1]
    return max(p95(d.min(1)), p95(d.min(0)))
def metrics(a, b):                      # masks: prediction a, reference b -> dice, iou, hd95
    n = a.sum() + b.sum()
    return [2 * (a & b).sum() / n if n else 1.0, (a & b).sum() / (a | b).sum() if (a | b).any() else 1.0, hd95(a, b)]
def expect(pred, truth, names):         # names: {column suffix: (pred values, truth values)}
    want = {}
    for name, (pv, tv) in names.items():
        for col, val in zip(("dice", "iou", "hd95"), metrics(np.isin(pred, pv), np.isin(truth, tv))):
            want[f"{col}_{name}"] = val
    return want
def check(csv_path, case, want, columns=None):
    rows = {r["case"]: r for r in csv.DictReader(open(csv_path))}
    for col, w in want.items():
        g = float(rows[case][col])
        assert (math.isnan(g) and math.isnan(w)) or abs(g - w) < 1e-4, (case, col, g, w)
    if columns is not None:
        score = lambda c: c.split("_")[0] in ("dice", "iou", "hd95")
        got, columns = [c for c in rows[case] if score(c)], [c for c in columns if score(c)]
        assert sorted(got) == sorted(columns), (got, columns)
    return rows
def ranked(u, pred, truth):             # the voxels either side labels, most uncertain first, equal u by index (file order)
    idx = np.flatnonzero(((pred != 0) | (truth != 0)).ravel())
    uu = np.asarray(u, np.float32).ravel()[idx]
    order = np.argsort(-uu, kind="stable")  # idx ascends, so a stable sort keeps equal u by index
    return idx[order], uu[order]
def dicekept(pred, truth, u, f, names):     # f: --discard as written (exact decimal); names as in expect
    from fractions import Fraction
    idx, _ = ranked(u, pred, truth)
    keep = np.ones(pred.size, bool)
    keep[idx[:math.ceil(Fraction(f) * len(idx))]] = False
    keep = keep.reshape(pred.shape)
    want = {}
    for name, (pv, tv) in names.items():
        a, b = np.isin(pred, pv) & keep, np.isin(truth, tv) & keep
        want[f"dicekept_{name}"] = 2 * (a & b).sum() / (a.sum() + b.sum()) if a.any() or b.any() else 1.0
    return want
def curves(cases):                      # cases: (pred, truth, u or None, probabilities or None) -> {(kind, bin): (lo, hi, count, mean, rate)}
    nan = float("nan")
    rel = [[0, 0.0, 0.0] for _ in range(15)]
    dec = [[0, 0.0, 0.0, math.inf, -math.inf] for _ in range(10)]
    for pred, truth, u, pr in cases:
        lab = (pred != 0) | (truth != 0)
        if pr is not None:
            conf = np.maximum(np.asarray(pr, np.float32).max(0)[lab], 0)
            right = (pred == truth)[lab]
            for c, r in zip(conf, right):
                q = min(int(np.floor(c * np.float32(15))), 14)  # float32 product, as the definition's floor(15 p)
                rel[q][0] += 1; rel[q][1] += float(c); rel[q][2] += bool(r)
        if u is not None:
            idx, uu = ranked(u, pred, truth)
            k = len(idx)
            for p in range(k):
                d = 9 - (p * 10) // k
                e = dec[d]
                e[0] += 1; e[1] += float(uu[p]); e[2] += bool(pred.ravel()[idx[p]] != truth.ravel()[idx[p]])
                e[3] = min(e[3], float(uu[p])); e[4] = max(e[4], float(uu[p]))
    want = {}
    for q, (n, c, r) in enumerate(rel):
        want[("reliability", q)] = (q / 15, (q + 1) / 15, n, c / n if n else nan, r / n if n else nan)
    for d, (n, s, w, lo, hi) in enumerate(dec):
        want[("uncertainty", d)] = (lo if n else nan, hi if n else nan, n, s / n if n else nan, w / n if n else nan)
    return want
def check_curves(path, want):
    lines = open(path).read().splitlines()
    assert lines[0] == "kind,bin,lo,hi,count,mean,rate", lines[0]
    rows = list(csv.DictReader(lines))
    assert [(r["kind"], int(r["bin"])) for r in rows] == list(want), [(r["kind"], r["bin"]) for r in rows]
    for r in rows:
        w = want[(r["kind"], int(r["bin"]))]
        g = (float(r["lo"]), float(r["hi"]), int(r["count"]), float(r["mean"]), float(r["rate"]))
        for x, y, col in zip(g, w, ("lo", "hi", "count", "mean", "rate")):
            assert (math.isnan(x) and math.isnan(y)) or abs(x - y) < 1e-5, (r["kind"], r["bin"], col, x, y)
if __name__ == "__main__":              # evlib.py CSV CASE WANT.json: the scores and exactly those columns
    import json, sys
    want = json.load(open(sys.argv[3]))
    check(sys.argv[1], sys.argv[2], want, list(want))
PY
export PYTHONPATH=$T
# scores CSV CASE WANT.json: the case's scores in CSV are those in WANT.json, and no other label or region
scores() { /usr/bin/python3 "$T/evlib.py" "$@"; }
/usr/bin/python3 - "$T" <<'PY'
import sys
import numpy as np
from evlib import save, metrics
t = sys.argv[1]
shape = (14, 24, 26)
truth = np.zeros(shape, np.int32); truth[3:10, 5:15, 6:18] = 1; truth[5:8, 8:12, 9:14] = 2
pred = np.zeros(shape, np.int32); pred[3:10, 5:15, 8:20] = 1; pred[5:8, 9:13, 9:14] = 2
save(f"{t}/truth/A_seg.nii.gz", truth); save(f"{t}/pred/A.nii.gz", pred)
wrong = pred != truth
save(f"{t}/pred/A_epistemic.nii.gz", wrong * 0.7 + 0.1)         # uncertainty that flags exactly the wrong voxels
probs = np.stack([np.full(shape, 0.1), np.full(shape, 0.6), np.full(shape, 0.3)])
save(f"{t}/pred/A_probabilities.nii.gz", probs)                  # max probability 0.6 everywhere
truthB = np.zeros(shape, np.int32); truthB[2:6, 2:6, 2:6] = 1
save(f"{t}/truth/B_seg.nii.gz", truthB); save(f"{t}/pred/B.nii.gz", np.zeros(shape))
rows = {}
for name, tr, pr in (("A", truth, pred), ("B", truthB, np.zeros(shape, np.int32))):
    r = []
    for v in (1, 2):
        r += metrics(pr == v, tr == v)
    rows[name] = r
mask = (pred != 0) | (truth != 0)
ece = abs((pred[mask] == truth[mask]).mean() - 0.6)
np.save(f"{t}/expected.npy", np.array(rows["A"] + rows["B"] + [1.0, ece]))
PY
"$V" eval --pred "$T/pred" --truth "$T/truth" --labels values --out "$T/eval.csv" >"$T/eval.out" 2>"$T/eval.err"
status "eval A,B" 0 $?
ok test ! -s "$T/eval.err"
ok /usr/bin/python3 - "$T" <<'PY'
import csv, math, sys
import numpy as np
t = sys.argv[1]
want = np.load(f"{t}/expected.npy")
rows = {r["case"]: r for r in csv.DictReader(open(f"{t}/eval.csv"))}
cols = ["dice_label1", "iou_label1", "hd95_label1", "dice_label2", "iou_label2", "hd95_label2"]
got = [float(rows["A"][c]) for c in cols] + [float(rows["B"][c]) for c in cols] + [float(rows["A"]["auroc_epistemic"]), float(rows["A"]["ece"])]
for g, w, name in zip(got, want, [f"A.{c}" for c in cols] + [f"B.{c}" for c in cols] + ["auroc", "ece"]):
    assert (math.isnan(g) and math.isnan(w)) or abs(g - w) < 1e-4, (name, g, w)
assert "mean" in rows and "sd" in rows
PY
ok grep -q "auroc (epistemic, wrong voxels): 1.0000" "$T/eval.out"
# label maps alone (infer without --save-probabilities, or no uncertainty maps): said, not "nan"
mkdir -p "$T/labelsonly" && cp "$T/pred/A.nii.gz" "$T/pred/B.nii.gz" "$T/labelsonly/"
"$V" eval --pred "$T/labelsonly" --truth "$T/truth" --labels values --out "$T/lo.csv" >"$T/lo.out" 2>&1
status "eval, label maps only" 0 $?
ok grep -q "auroc: not computed (no CASE_epistemic.nii.gz in $T/labelsonly)   ece: not computed (no CASE_probabilities.nii.gz; vbseg infer --save-probabilities writes them)" "$T/lo.out"
ok bash -c "! grep -q nan \"$T/lo.out\""

# the CSV: the default PRED/eval.csv is written with no temporary file left;
# an output that cannot be written is exit 1 with the file and the reason, and
# a stale CSV there from an earlier run stays whole and is said to be stale
"$V" eval --pred "$T/pred" --truth "$T/truth" --labels values >/dev/null 2>&1
status "default --out" 0 $?
ok cmp -s "$T/eval.csv" "$T/pred/eval.csv"
ok test -z "$(ls "$T/pred" | grep tmp)"
: >"$T/afile"
"$V" eval --pred "$T/pred" --truth "$T/truth" --labels values --out "$T/afile/eval.csv" >/dev/null 2>"$T/err"
status "--out under a regular file" 1 $?
ok test "$(cat "$T/err")" = "vbseg eval: $T/afile/eval.csv: cannot write: Not a directory"
mkdir "$T/dir.csv"
"$V" eval --pred "$T/pred" --truth "$T/truth" --labels values --out "$T/dir.csv" >/dev/null 2>"$T/err"
status "--out is a directory" 1 $?
ok test "$(cat "$T/err")" = "vbseg eval: $T/dir.csv: cannot write: Is a directory"
# a name of 253 bytes exists, but no temporary name beside it fits in NAME_MAX (255), even as root
long=$T/$(printf 'e%.0s' $(seq 249)).csv
echo "case,stale" >"$long"
"$V" eval --pred "$T/pred" --truth "$T/truth" --labels values --out "$long" >/dev/null 2>"$T/err"
status "stale CSV not replaced" 1 $?
ok test "$(wc -l <"$T/err")" -eq 1
ok grep -q "^vbseg eval: $long: cannot write: File name too long; the file there holds an earlier run's results$" "$T/err"
ok test "$(cat "$long")" = "case,stale"

# a case without reference labels is reported, the others still evaluated
cp "$T/pred/A.nii.gz" "$T/pred/C.nii.gz"
"$V" eval --pred "$T/pred" --truth "$T/truth" --out "$T/eval2.csv" >/dev/null 2>"$T/err"
status "missing reference" 1 $?
ok grep -q "C: no reference labels" "$T/err"
ok grep -q "^A," "$T/eval2.csv"

# the union of the label values of both sides over all cases: predicted 2 and
# 4 against a 0/1 reference (case U1), and a reference-only 7 (case U2)
mkdir -p "$T/u/pred" "$T/u/truth"
ok /usr/bin/python3 - "$T/u" <<'PY'
import sys, json
import numpy as np
from evlib import save, expect
t = sys.argv[1]
shape = (10, 16, 18)
tr1 = np.zeros(shape); tr1[2:7, 3:12, 4:14] = 1
pr1 = np.zeros(shape); pr1[2:7, 3:12, 4:9] = 2; pr1[2:7, 3:12, 9:15] = 4
tr2 = np.zeros(shape); tr2[3:6, 4:9, 5:11] = 7; tr2[6:8, 4:9, 5:11] = 1
pr2 = np.zeros(shape); pr2[3:8, 4:9, 5:11] = 1
for c, pr, tr in (("U1", pr1, tr1), ("U2", pr2, tr2)):
    save(f"{t}/pred/{c}.nii.gz", pr); save(f"{t}/truth/{c}_seg.nii.gz", tr)
    json.dump(expect(pr, tr, {f"label{v}": ([v], [v]) for v in (1, 2, 4, 7)}), open(f"{t}/{c}.json", "w"))
PY
"$V" eval --pred "$T/u/pred" --truth "$T/u/truth" --labels values >/dev/null 2>"$T/err"
status "union of labels" 0 $?
for c in U1 U2; do
    ok scores "$T/u/pred/eval.csv" $c "$T/u/$c.json"
done

# conventions: auto finds BraTS 2023 (3, no 4) and 2018/2021 (4) and scores
# WT/TC/ET; predictions in 4 against references in 3 are warned about and
# scored with the predicted 4 as 3; --labels brats2023 on 0/1/2/4 warns
mkdir -p "$T/b23/pred" "$T/b23/truth" "$T/b18/pred" "$T/b18/truth" "$T/bx/pred" "$T/bx/truth"
ok /usr/bin/python3 - "$T" <<'PY'
import sys, json
import numpy as np
from evlib import save, expect
t = sys.argv[1]
shape = (12, 20, 22)
def tumour(shift, et):
    a = np.zeros(shape); a[2:10, 4:16, 4 + shift:18 + shift] = 2; a[4:8, 6:14, 7 + shift:15 + shift] = 1
    a[5:7, 8:12, 9 + shift:13 + shift] = et
    return a
def regions(et_p, et_t):
    return {"label1": ([1], [1]), "label2": ([2], [2]), f"label{et_t}": ([et_p], [et_t]),
            "wt": ([1, 2, et_p], [1, 2, et_t]), "tc": ([1, et_p], [1, et_t]), "et": ([et_p], [et_t])}
for d, et_p, et_t in (("b23", 3, 3), ("b18", 4, 4), ("bx", 4, 3)):
    pr, tr = tumour(2, et_p), tumour(0, et_t)
    save(f"{t}/{d}/pred/K.nii.gz", pr); save(f"{t}/{d}/truth/K_seg.nii.gz", tr)
    want = expect(pr, tr, regions(et_p, et_t))
    if d == "bx":                       # uncertain exactly where wrong once 4 reads as 3: AUROC 1 only if mapped
        save(f"{t}/{d}/pred/K_epistemic.nii.gz", (np.where(pr == 4, 3, pr) != tr) * 0.7 + 0.1)
        want["auroc_epistemic"] = 1.0
    json.dump(want, open(f"{t}/{d}/want.json", "w"))
PY
for d in b23 b18; do
    "$V" eval --pred "$T/$d/pred" --truth "$T/$d/truth" >"$T/$d/out" 2>"$T/$d/err"
    status "auto $d" 0 $?
    ok test ! -s "$T/$d/err"
    ok scores "$T/$d/pred/eval.csv" K "$T/$d/want.json"
done
ok grep -q "^labels: BraTS 2023" "$T/b23/out"
ok grep -q "^labels: BraTS 2018/2021" "$T/b18/out"
"$V" eval --pred "$T/bx/pred" --truth "$T/bx/truth" >/dev/null 2>"$T/bx/err"
status "auto, 4 against 3" 0 $?
ok test "$(wc -l <"$T/bx/err")" -eq 1
ok grep -q "^vbseg eval: warning: the predictions follow BraTS 2018/2021 (ET = 4), the references BraTS 2023 (ET = 3); predicted 4 is scored as 3$" "$T/bx/err"
ok scores "$T/bx/pred/eval.csv" K "$T/bx/want.json"
"$V" eval --pred "$T/b18/pred" --truth "$T/b18/truth" --labels brats2023 --out "$T/b18/as23.csv" >/dev/null 2>"$T/err"
status "brats2023 on 0/1/2/4" 0 $?
ok test "$(wc -l <"$T/err")" -eq 2
ok grep -q "^vbseg eval: warning: --labels brats2023 but the predictions hold 4, not a BraTS 2023 label" "$T/err"
ok grep -q "^vbseg eval: warning: --labels brats2023 but the references hold 4, not a BraTS 2023 label" "$T/err"
ok grep -q "^K," "$T/b18/as23.csv"
# only the predictions show a convention: it is used, and a foreign reference value warned about
mkdir -p "$T/b5/pred" "$T/b5/truth"
cp "$T/b18/pred/K.nii.gz" "$T/b5/pred/"
ok /usr/bin/python3 - "$T" <<'PY'
import gzip, sys, json
import numpy as np
from evlib import save, expect
t = sys.argv[1]
def load(p):
    h = gzip.open(p).read()
    return np.frombuffer(h[352:], "<f4").reshape(12, 20, 22).copy()
pr, tr = load(f"{t}/b5/pred/K.nii.gz"), load(f"{t}/b18/truth/K_seg.nii.gz")
tr[tr == 4] = 0; tr[1, 2:5, 3:6] = 5                                   # references: 1, 2, 5
save(f"{t}/b5/truth/K_seg.nii.gz", tr)
want = expect(pr, tr, {"label1": ([1], [1]), "label2": ([2], [2]), "label4": ([4], [4]), "label5": ([5], [5]),
                       "wt": ([1, 2, 4], [1, 2, 4]), "tc": ([1, 4], [1, 4]), "et": ([4], [4])})
json.dump(want, open(f"{t}/b5/want.json", "w"))
PY
"$V" eval --pred "$T/b5/pred" --truth "$T/b5/truth" >/dev/null 2>"$T/err"
status "auto from the predictions" 0 $?
ok test "$(cat "$T/err")" = "vbseg eval: warning: the predictions follow BraTS 2018/2021 but the references hold 5, not a BraTS 2018/2021 label; scored on its own, in no region"
ok scores "$T/b5/pred/eval.csv" K "$T/b5/want.json"
"$V" eval --help >"$T/help"
ok grep -q "^--labels values: each label value on its own, no regions" "$T/help"
ok grep -q "^--discard F (default 0.1; 0: off)" "$T/help"
ok grep -q "^--curves FILE.csv: writes atomically" "$T/help"

# label maps only: a non-integer value or more than 64 distinct values refuse
# that case (exit 1, one line naming the file and the voxel), not the others
mkdir -p "$T/nl/pred" "$T/nl/truth"
ok /usr/bin/python3 - "$T/nl" <<'PY'
import sys, json
import numpy as np
from evlib import save, expect
t = sys.argv[1]
shape = (9, 12, 13)
good = np.zeros(shape); good[2:6, 3:9, 3:10] = 1
save(f"{t}/pred/G.nii.gz", good); save(f"{t}/truth/G_seg.nii.gz", good)
frac = good.copy(); frac[4, 6, 7] = 0.37; frac[5, 6, 7] = 0.5      # first in file order: x=7, y=6, z=4
save(f"{t}/pred/F.nii.gz", good); save(f"{t}/truth/F_seg.nii.gz", frac)
inten = (np.arange(good.size) % 1235).reshape(shape)                 # integer intensities, 1234 non-zero values
save(f"{t}/pred/I.nii.gz", good); save(f"{t}/truth/I_seg.nii.gz", inten)
pfrac = good.copy(); pfrac[1, 2, 3] = 2.5
save(f"{t}/pred/P.nii.gz", pfrac); save(f"{t}/truth/P_seg.nii.gz", good)
assert len(np.unique(inten[inten != 0])) == 1234
json.dump(expect(good, good, {"label1": ([1], [1])}), open(f"{t}/want.json", "w"))
PY
"$V" eval --pred "$T/nl/pred" --truth "$T/nl/truth" --labels values >/dev/null 2>"$T/err"
status "not label maps" 1 $?
ok test "$(wc -l <"$T/err")" -eq 3
ok grep -qx "vbseg eval: $T/nl/truth/F_seg.nii.gz: not a label map: non-integer value 0.37 at voxel (7, 6, 4)" "$T/err"
ok grep -qx "vbseg eval: $T/nl/truth/I_seg.nii.gz: not a label map: 1234 distinct label values (more than 64)" "$T/err"
ok grep -qx "vbseg eval: $T/nl/pred/P.nii.gz: not a label map: non-integer value 2.5 at voxel (3, 2, 1)" "$T/err"
ok scores "$T/nl/pred/eval.csv" G "$T/nl/want.json"
ok test "$(grep -c '^[FIP],' "$T/nl/pred/eval.csv")" -eq 0

# after discarding the most uncertain voxels (dicekept_*) and the --curves
# data, against NumPy brute force: BraTS 2018 cases with ties in the
# uncertainty (cut through by --discard 0.28), 25 labelled voxels (0.28 * 25
# is 7.000000000000001 in double: 7 dropped, not 8), an empty tumour on both
# sides (nothing to drop: Dice 1), a false positive only, a case without
# maps (nan), a map of other dims (warned, not used); every curves row pooled
mkdir -p "$T/k/pred" "$T/k/truth"
ok /usr/bin/python3 - "$T/k" <<'PY'
import sys, json, pickle
import numpy as np
from evlib import save, dicekept, curves
t = sys.argv[1]
rng = np.random.default_rng(7)
names = {"label1": ([1], [1]), "label2": ([2], [2]), "label4": ([4], [4]), "wt": ([1, 2, 4], [1, 2, 4]), "tc": ([1, 4], [1, 4]), "et": ([4], [4])}
def tumour(shape, o):
    a = np.zeros(shape); a[1:5, 2 + o:8 + o, 2:10] = 2; a[2:4, 3 + o:7 + o, 3:8] = 1; a[2:4, 4 + o:6 + o, 4:6] = 4
    return a
def probs(shape, onehot):
    p = rng.random((4,) + shape) ** 3; p /= p.sum(0)
    p[:, onehot] = 0; p[2][onehot] = 1                                  # max exactly 1: the last bin
    return p.astype(np.float32)
cases = {}
shape = (6, 10, 12)
for c in ("D1", "D2"):
    tr = tumour(shape, 0); pr = tumour(shape, 1)
    flip = rng.random(shape) < 0.08; pr[flip] = rng.choice([0, 1, 2, 4], flip.sum())
    wrong = pr != tr
    epi = np.round((0.5 * wrong + 0.6 * rng.random(shape)) * 4) / 4            # five values: many ties
    ent = np.round((0.3 * wrong + rng.random(shape)) * 8) / 8
    cases[c] = (pr, tr, epi, ent, probs(shape, rng.random(shape) < 0.1))
small = (4, 6, 8)
trS = np.zeros(small); trS[1, 1:6, 1:6] = 2                                     # 25 labelled voxels
prS = trS.copy(); prS[1, 2, 1:4] = 1
cases["S"] = (prS, trS, np.where(prS != trS, 0.9, 0.2) + (np.arange(prS.size).reshape(small) % 3) * 0.05,
              np.full(small, 0.5), probs(small, np.zeros(small, bool)))
z = np.zeros(small)
cases["E"] = (z, z, rng.random(small), rng.random(small), probs(small, np.zeros(small, bool)))
prF = z.copy(); prF[2, 3, 2:5] = 4
cases["F"] = (prF, z, prF * 0.1 + rng.random(small) * 0.05, rng.random(small), probs(small, np.zeros(small, bool)))
cases["N"] = (cases["D1"][0], cases["D1"][1], None, None, None)
cases["W"] = (cases["D2"][0], cases["D2"][1], np.zeros((6, 10, 11)), np.zeros((6, 10, 11)), None)
assert ((prS != 0) | (trS != 0)).sum() == 25 and 0.28 * 25 > 7
for c, (pr, tr, epi, ent, p) in cases.items():
    save(f"{t}/pred/{c}.nii.gz", pr); save(f"{t}/truth/{c}_seg.nii.gz", tr)
    if epi is not None:
        save(f"{t}/pred/{c}_epistemic.nii.gz", epi); save(f"{t}/pred/{c}_entropy.nii.gz", ent)
    if p is not None: save(f"{t}/pred/{c}_probabilities.nii.gz", p)
want = {}
for run, unc, f in (("default", 2, "0.1"), ("entropy", 3, "0.28")):
    want[run] = {c: (dicekept(pr, tr, m[unc], f, names) if m[unc] is not None and m[unc].shape == pr.shape else
                     {k: float("nan") for k in dicekept(pr, tr, pr, f, names)}) for c, m in cases.items() for pr, tr in [m[:2]]}
    use = lambda m: m[unc] if m[unc] is not None and m[unc].shape == m[0].shape else None
    want[run + ".curves"] = curves([(m[0], m[1], use(m), m[4]) for m in cases.values()])
want["S.kept"] = want["default"]["S"]["dicekept_label2"], want["entropy"]["S"]["dicekept_label2"]
pickle.dump(want, open(f"{t}/want.pkl", "wb"))
PY
"$V" eval --pred "$T/k/pred" --truth "$T/k/truth" --out "$T/k/d.csv" --curves "$T/k/d.curves.csv" >"$T/k/d.out" 2>"$T/k/d.err"
status "dicekept, curves" 0 $?
ok test "$(cat "$T/k/d.err")" = "vbseg eval: warning: $T/k/pred/W_epistemic.nii.gz: 11x10x6 voxels, the prediction 12x10x6; not used"
"$V" eval --pred "$T/k/pred" --truth "$T/k/truth" --uncertainty entropy --discard 0.28 --out "$T/k/e.csv" --curves "$T/k/e.curves.csv" >"$T/k/e.out" 2>/dev/null
status "dicekept, curves: entropy, --discard 0.28" 0 $?
"$V" eval --pred "$T/k/pred" --truth "$T/k/truth" --discard 0 --out "$T/k/z.csv" >"$T/k/z.out" 2>/dev/null
status "--discard 0" 0 $?
ok /usr/bin/python3 - "$T/k" <<'PY'
import csv, math, pickle, re, sys
import numpy as np
from evlib import check_curves
t = sys.argv[1]
want = pickle.load(open(f"{t}/want.pkl", "rb"))
cols = [f"dicekept_{n}" for n in ("label1", "label2", "label4", "wt", "tc", "et")]
close = lambda g, w: (math.isnan(g) and math.isnan(w)) or abs(g - w) < 1e-5
for run, name, pct, unc in (("default", "d", "10", "epistemic"), ("entropy", "e", "28", "entropy")):
    head = open(f"{t}/{name}.csv").readline().rstrip("\n").split(",")
    assert head[-8:] == [f"auroc_{unc}", "ece"] + cols, head             # after the existing columns, in region order
    rows = {r["case"]: r for r in csv.DictReader(open(f"{t}/{name}.csv"))}
    for c, w in want[run].items():
        for col, v in w.items():
            assert close(float(rows[c][col]), v), (run, c, col, rows[c][col], v)
    means = {}
    for col in cols:                                                      # mean and sd over the cases with the map
        v = np.array([want[run][c][col] for c in want[run]], float)
        v = v[~np.isnan(v)]
        means[col] = v.mean()
        assert close(float(rows["mean"][col]), v.mean()) and close(float(rows["sd"][col]), v.std()), (run, col)
    line = [l for l in open(f"{t}/{name}.out") if l.startswith("dice after discarding")]
    assert len(line) == 1 and line[0].startswith(f"dice after discarding the {pct}% most uncertain voxels ({unc}): label1 "), line
    got = dict(re.findall(r" (\w+) ([0-9.]+)", line[0].split(":", 1)[1]))
    assert sorted(got) == sorted(c[9:] for c in cols), got
    for col in cols: assert abs(float(got[col[9:]]) - means[col]) < 6e-5, (col, got, means)
    check_curves(f"{t}/{name}.curves.csv", want[run + ".curves"])
# S by hand: --discard 0.1 drops its 3 wrong voxels (the most uncertain); its entropy is
# one value, so --discard 0.28 drops the first 7 in file order: 5 right, 2 of the 3 wrong
assert want["S.kept"] == (1.0, 34 / 35), want["S.kept"]
# --discard 0: no dicekept columns nor line, every other column as with the default
z = list(csv.DictReader(open(f"{t}/z.csv")))
d = list(csv.DictReader(open(f"{t}/d.csv")))
assert not any(c.startswith("dicekept") for c in z[0]), list(z[0])
assert [{k: v for k, v in r.items() if not k.startswith("dicekept")} for r in d] == z
assert not any(l.startswith("dice after") for l in open(f"{t}/z.out"))
PY
# --discard outside 0..1 or not a number: a usage error, one line
for f in 1.5 -0.1 nan x; do
    "$V" eval --pred "$T/k/pred" --truth "$T/k/truth" --discard "$f" --out "$T/k/bad.csv" >/dev/null 2>"$T/err"
    status "--discard $f" 2 $?
    ok test "$(wc -l <"$T/err")" -eq 1
    ok grep -q "^vbseg eval: --discard: '$f' is not a" "$T/err"
done
ok test ! -e "$T/k/bad.csv"
# no case with maps: the curves file has every row with count 0, and warnings say why
"$V" eval --pred "$T/labelsonly" --truth "$T/truth" --labels values --out "$T/lo2.csv" --curves "$T/lo.curves.csv" >"$T/lo2.out" 2>"$T/err"
status "curves without maps" 0 $?
ok test "$(cat "$T/err")" = "vbseg eval: warning: $T/lo.curves.csv: no case has CASE_probabilities.nii.gz; its reliability rows are empty
vbseg eval: warning: $T/lo.curves.csv: no case has CASE_epistemic.nii.gz; its uncertainty rows are empty"
ok grep -q "^dice after discarding the 10% most uncertain voxels (epistemic): not computed (no CASE_epistemic.nii.gz in $T/labelsonly)$" "$T/lo2.out"
ok /usr/bin/python3 -c "
from evlib import curves, check_curves
check_curves('$T/lo.curves.csv', curves([]))"
ok /usr/bin/python3 -c "
import csv, math
r = {x['case']: x for x in csv.DictReader(open('$T/lo2.csv'))}
assert all(math.isnan(float(r[c][k])) for c in ('A', 'B') for k in r[c] if k.startswith('dicekept')), r"
# a map that cannot be read (truncated): one warning naming it, the case scored without it
mkdir -p "$T/gb" && cp "$T/pred/A.nii.gz" "$T/pred/A_epistemic.nii.gz" "$T/gb/"
head -c 200 "$T/pred/A_probabilities.nii.gz" >"$T/gb/A_probabilities.nii.gz"
"$V" eval --pred "$T/gb" --truth "$T/truth" --labels values >/dev/null 2>"$T/err"
status "truncated probabilities" 0 $?
ok test "$(wc -l <"$T/err")" -eq 1
ok grep -q "^vbseg eval: warning: $T/gb/A_probabilities.nii.gz: .*; not used$" "$T/err"
ok /usr/bin/python3 -c "
import csv, math
r = next(csv.DictReader(open('$T/gb/eval.csv')))
assert r['case'] == 'A' and math.isnan(float(r['ece'])) and float(r['auroc_epistemic']) == 1, r"
# --curves that cannot be written: exit 1, one line naming it; a stale file there stays whole
"$V" eval --pred "$T/k/pred" --truth "$T/k/truth" --out "$T/k/u.csv" --curves "$T/afile/curves.csv" >/dev/null 2>"$T/err"
status "--curves under a regular file" 1 $?
ok test "$(grep -v warning "$T/err")" = "vbseg eval: $T/afile/curves.csv: cannot write: Not a directory"
ok cmp -s "$T/k/u.csv" "$T/k/d.csv"
longc=$T/$(printf 'c%.0s' $(seq 249)).csv
echo "kind,stale" >"$longc"
"$V" eval --pred "$T/k/pred" --truth "$T/k/truth" --out "$T/k/u.csv" --curves "$longc" >/dev/null 2>"$T/err"
status "stale curves not replaced" 1 $?
ok test "$(grep -vc warning "$T/err")" -eq 1
ok grep -q "^vbseg eval: $longc: cannot write: File name too long; the file there holds an earlier run's results$" "$T/err"
ok test "$(cat "$longc")" = "kind,stale"
ok test -z "$( (ls -a "$T"; ls -a "$T/k") | grep tmp)"

# merging shard summaries from vbseg infer
"$V" create --arch unet --latent 0 --dims 2 --in-channels 4 --classes 4 --base 2 --depth 2 --out "$T/m.vbseg" >/dev/null
for c in P1 P2 P3 P4 P5; do mkdir -p "$T/in/$c"; "$B/samples/make_scan" "$T/in/$c" "$c" 24 20 4 >/dev/null; done
for i in 0 1; do "$V" infer --model "$T/m.vbseg" --input "$T/in" --output "$T/sh" --samples 2 --shard $i/2 --no-png --quiet; done
"$V" eval --merge "$T/sh" >/dev/null 2>"$T/err"
status "merge" 0 $?
ok test ! -s "$T/err"
ok /usr/bin/python3 - "$T/sh" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1] + "/summary.csv")))
assert sorted(r["case"] for r in rows) == ["P1", "P2", "P3", "P4", "P5"]
assert sorted(int(r["qc_rank"]) for r in rows) == [1, 2, 3, 4, 5]
assert len(json.load(open(sys.argv[1] + "/summary.json"))) == 5
PY
# a missing shard: warned, the partial merge written, exit 0
mv "$T/sh/summary.shard-1-of-2.csv" "$T/shard1.csv"
"$V" eval --merge "$T/sh" >/dev/null 2>"$T/err"
status "merge, shard 1 missing" 0 $?
ok test "$(cat "$T/err")" = "vbseg eval: warning: shards 1 of 2 missing: summary.shard-1-of-2.csv; the merged summary is partial"
ok /usr/bin/python3 -c "import csv; assert sorted(r['case'] for r in csv.DictReader(open('$T/sh/summary.csv'))) == ['P1', 'P3', 'P5']"
# shards of another N: refused, nothing written
mv "$T/shard1.csv" "$T/sh/summary.shard-1-of-2.csv"
cp "$T/sh/summary.shard-1-of-2.csv" "$T/sh/summary.shard-2-of-3.csv"
cp "$T/sh/summary.csv" "$T/before.csv"
"$V" eval --merge "$T/sh" >/dev/null 2>"$T/err"
status "merge, N disagree" 1 $?
ok test "$(wc -l <"$T/err")" -eq 1
ok grep -qx "vbseg eval: $T/sh/summary.shard-2-of-3.csv: a shard of 3, but summary.shard-0-of-2.csv is a shard of 2 (shards of different runs); nothing merged" "$T/err"
ok cmp -s "$T/before.csv" "$T/sh/summary.csv"
# several shards missing, and a file with another name ignored
mkdir "$T/sh5"
cp "$T/sh/summary.shard-1-of-2.csv" "$T/sh5/summary.shard-2-of-5.csv"
cp "$T/sh/summary.shard-1-of-2.csv" "$T/sh5/summary.shard-x.csv"
"$V" eval --merge "$T/sh5" >/dev/null 2>"$T/err"
status "merge, 4 of 5 missing" 0 $?
ok test "$(wc -l <"$T/err")" -eq 2
ok grep -qx "vbseg eval: warning: shards 0, 1, 3, 4 of 5 missing: summary.shard-0-of-5.csv, summary.shard-1-of-5.csv, summary.shard-3-of-5.csv, summary.shard-4-of-5.csv; the merged summary is partial" "$T/err"
ok grep -qx "vbseg eval: warning: $T/sh5/summary.shard-x.csv: not named summary.shard-I-of-N.csv with 0 <= I < N; ignored" "$T/err"
ok /usr/bin/python3 -c "import csv; assert sorted(r['case'] for r in csv.DictReader(open('$T/sh5/summary.csv'))) == ['P2', 'P4']"
echo "eval: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
