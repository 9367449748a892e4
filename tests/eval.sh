#!/usr/bin/env bash
# eval.sh BUILD_DIR: `vbseg eval` against values computed here by brute force
# in NumPy (Dice, IoU, HD95 with anisotropic voxels, AUROC, ECE), and
# `vbseg eval --merge` over the shard summaries of `vbseg infer`.
set -u
B=$1
V=$B/vbseg
T=$(mktemp -d /tmp/vbs_eval.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok() { if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $*"; fi; }
mkdir -p "$T/pred" "$T/truth"
/usr/bin/python3 - "$T" <<'PY'
import gzip, struct, sys
import numpy as np
t = sys.argv[1]
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
    s = np.zeros_like(m)
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
        a, b = pr == v, tr == v
        n = a.sum() + b.sum()
        r += [2 * (a & b).sum() / n if n else 1.0, (a & b).sum() / (a | b).sum() if (a | b).any() else 1.0, hd95(a, b)]
    rows[name] = r
mask = (pred != 0) | (truth != 0)
ece = abs((pred[mask] == truth[mask]).mean() - 0.6)
np.save(f"{t}/expected.npy", np.array(rows["A"] + rows["B"] + [1.0, ece]))
PY
ok "$V" eval --pred "$T/pred" --truth "$T/truth" --labels values --out "$T/eval.csv" >"$T/eval.out"
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
# a case without reference labels is reported, the others still evaluated
cp "$T/pred/A.nii.gz" "$T/pred/C.nii.gz"
"$V" eval --pred "$T/pred" --truth "$T/truth" --out "$T/eval2.csv" >/dev/null 2>"$T/err"
ok test $? -ne 0
ok grep -q "C: no reference labels" "$T/err"
ok grep -q "^A," "$T/eval2.csv"
# merging shard summaries from vbseg infer
"$V" create --arch unet --dims 2 --in-channels 4 --classes 4 --base 2 --depth 2 --out "$T/m.vbseg" >/dev/null
for c in P1 P2 P3 P4 P5; do mkdir -p "$T/in/$c"; "$B/samples/make_scan" "$T/in/$c" "$c" 24 20 4 >/dev/null; done
for i in 0 1; do "$V" infer --model "$T/m.vbseg" --input "$T/in" --output "$T/sh" --samples 2 --shard $i/2 --no-png --quiet; done
ok "$V" eval --merge "$T/sh"
ok /usr/bin/python3 - "$T/sh" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1] + "/summary.csv")))
assert sorted(r["case"] for r in rows) == ["P1", "P2", "P3", "P4", "P5"]
assert sorted(int(r["qc_rank"]) for r in rows) == [1, 2, 3, 4, 5]
assert len(json.load(open(sys.argv[1] + "/summary.json"))) == 5
PY
echo "eval: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
