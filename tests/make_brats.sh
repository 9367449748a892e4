#!/usr/bin/env bash
# make_brats.sh BUILD_DIR: the BraTS-like data set generator (samples/make_brats),
# mostly on small volumes. Oracles: cmp for bytes (the same seed at 1 and 2
# threads, a case regenerated alone with --first, another seed); nibabel for
# what the files hold (shape, dtype, the affine in sform and qform computed
# from the size and spacing, every label value in every case of every layout,
# the labels equal to the tissue map's lesion codes, BraTS 2023 = 2021 with 4
# as 3, images zero exactly outside the head); NumPy region means (over each
# tissue's voxels, and over its pure voxels) against the contrast table of
# make_brats.c's opening comment on two cases of the default size and
# difficulty, and the directions blur cannot undo at difficulty 0 and 1; the
# contrast-to-noise of oedema against white matter, and its border's
# sharpness, falling with --difficulty; `vbseg train` detecting and reading
# each of the three layouts and `vbseg infer` running on each; bad arguments
# refused in one line with exit 2.
set -u
B=$1
G=$B/samples/make_brats
V=$B/vbseg
T=$(mktemp -d /tmp/vbs_make_brats.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok() { if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $*"; fi; }
not() { ! "$@"; }
PY=/usr/bin/python3
SMALL=(--size 48x48x32 --cases 3)

# ---- bytes: the same seed at any thread count; one case alone; another seed
"$G" "$T/a" "${SMALL[@]}" --seed 7 --threads 2 --quiet
ok test $? -eq 0
"$G" "$T/b" "${SMALL[@]}" --seed 7 --threads 1 --quiet
ok test $? -eq 0
"$G" "$T/c" --size 48x48x32 --cases 1 --first 1 --seed 7 --quiet
"$G" "$T/d" "${SMALL[@]}" --seed 8 --quiet
same=1 differ=1
for f in $(cd "$T/a" && find . -name '*.nii.gz' | sort); do
  cmp -s "$T/a/$f" "$T/b/$f" || { same=0; echo "differs at 1 and 2 threads: $f"; }
  cmp -s "$T/a/$f" "$T/d/$f" && { differ=0; echo "the same for seeds 7 and 8: $f"; }
done
ok test "$same" -eq 1
ok test "$differ" -eq 1
ok test "$(cd "$T/a" && find . -name '*.nii.gz' | wc -l)" -eq 15
ok test "$(ls "$T/c")" = BraTS2021_00001
for m in flair t1 t1ce t2 seg; do ok cmp -s "$T/a/BraTS2021_00001/BraTS2021_00001_$m.nii.gz" "$T/c/BraTS2021_00001/BraTS2021_00001_$m.nii.gz"; done

# ---- the three layouts of the same cases, and their tissue maps
"$G" "$T/b21" "${SMALL[@]}" --seed 3 --tissue "$T/tis" --quiet
ok test $? -eq 0
"$G" "$T/b23" "${SMALL[@]}" --seed 3 --layout brats2023 --quiet
ok test $? -eq 0
"$G" "$T/nn" "${SMALL[@]}" --seed 3 --layout nnunet --prefix Syn_ --quiet
ok test $? -eq 0
# the images do not depend on the layout or the name: the same bytes under each name
for pair in flair:t2f:0000 t1:t1n:0001 t1ce:t1c:0002 t2:t2w:0003; do
  IFS=: read -r a b n <<<"$pair"
  ok cmp -s "$T/b21/BraTS2021_00002/BraTS2021_00002_$a.nii.gz" "$T/b23/BraTS-GLI-00002-000/BraTS-GLI-00002-000-$b.nii.gz"
  ok cmp -s "$T/b21/BraTS2021_00002/BraTS2021_00002_$a.nii.gz" "$T/nn/imagesTr/Syn_00002_$n.nii.gz"
done
# the contrasts: every direction of the table at the default size and difficulty; the directions that blur
# cannot undo (no thin layer: scalp, skull, cortex) at difficulty 0 and 1 on a coarser grid
"$G" "$T/full" --cases 2 --seed 11 --tissue "$T/tisf" --quiet
"$G" "$T/d0" --size 120x120x78 --spacing 2 --cases 3 --seed 11 --difficulty 0 --tissue "$T/tis0" --quiet
"$G" "$T/d1" --size 120x120x78 --spacing 2 --cases 3 --seed 11 --difficulty 1 --tissue "$T/tis1" --quiet
"$G" "$T/sp" --size 40x36x24 --spacing 2x2.5x3 --cases 1 --seed 5 --quiet
ok test -s "$T/sp/BraTS2021_00000/BraTS2021_00000_t2.nii.gz"

ok $PY - "$T" <<'PY'
import glob, json, os, sys
import nibabel as nib
import numpy as np
T = sys.argv[1]
bad = []
def check(cond, what):
    if not cond: bad.append(what)

def expected_affine(shape, sp):
    a = np.diag(list(sp) + [1.0])
    a[:3, 3] = [-(n - 1) / 2 * s for n, s in zip(shape, sp)]
    return a

def geometry(path, shape, sp, dtype):
    img = nib.load(path)
    check(img.shape == shape, f"{path}: shape {img.shape}")
    check(img.get_data_dtype() == np.dtype(dtype), f"{path}: dtype {img.get_data_dtype()}")
    want = expected_affine(shape, sp)
    s, sc = img.get_sform(coded=True)
    q, qc = img.get_qform(coded=True)
    check(int(sc) == 1 and int(qc) == 1, f"{path}: sform/qform codes {sc}/{qc}")
    check(s is not None and np.allclose(s, want, atol=1e-4), f"{path}: sform {s}")
    check(q is not None and np.allclose(q, want, atol=1e-4), f"{path}: qform {q}")
    check(np.allclose(img.affine, want, atol=1e-4), f"{path}: affine {img.affine}")
    check(np.allclose(img.header.get_zooms()[:3], sp), f"{path}: zooms {img.header.get_zooms()}")
    return np.asarray(img.dataobj)

layouts = {
    "b21": (lambda i: [f"{T}/b21/BraTS2021_{i:05d}/BraTS2021_{i:05d}_{m}.nii.gz" for m in ("flair", "t1", "t1ce", "t2", "seg")], {0, 1, 2, 4}),
    "b23": (lambda i: [f"{T}/b23/BraTS-GLI-{i:05d}-000/BraTS-GLI-{i:05d}-000-{m}.nii.gz" for m in ("t2f", "t1n", "t1c", "t2w", "seg")], {0, 1, 2, 3}),
    "nn": (lambda i: [f"{T}/nn/imagesTr/Syn_{i:05d}_{c:04d}.nii.gz" for c in range(4)] + [f"{T}/nn/labelsTr/Syn_{i:05d}.nii.gz"], {0, 1, 2, 3}),
}
segs = {}
for name, (files, values) in layouts.items():
    for i in range(3):
        fs = files(i)
        for f in fs[:4]:
            x = geometry(f, (48, 48, 32), (1, 1, 1), np.int16)
        seg = geometry(fs[4], (48, 48, 32), (1, 1, 1), np.uint8)
        check(set(np.unique(seg).tolist()) == values, f"{fs[4]}: label values {np.unique(seg)}, want {sorted(values)}")
        segs[name, i] = seg
for i in range(3):
    s21, s23, snn = segs["b21", i], segs["b23", i], segs["nn", i]
    check(np.array_equal(np.where(s21 == 4, 3, s21), s23), f"case {i}: BraTS 2023 labels are not 2021's with 4 as 3")
    check(np.array_equal(s23, snn), f"case {i}: nnU-Net labels differ from BraTS 2023's")
    tis = np.asarray(nib.load(f"{T}/tis/BraTS2021_{i:05d}_tissue.nii.gz").dataobj)
    want = np.select([tis == 8, tis == 6, tis == 7], [1, 2, 4], 0)
    check(np.array_equal(s21, want), f"case {i}: labels differ from the tissue map's lesion codes")
    for m in ("flair", "t1", "t1ce", "t2"):
        x = np.asarray(nib.load(f"{T}/b21/BraTS2021_{i:05d}/BraTS2021_{i:05d}_{m}.nii.gz").dataobj)
        check(np.array_equal(x != 0, tis != 0), f"case {i} {m}: non-zero voxels are not exactly the head")
js = json.load(open(f"{T}/nn/dataset.json"))
check(js.get("channel_names") == {"0": "flair", "1": "t1", "2": "t1ce", "3": "t2"}, f"dataset.json channel_names {js.get('channel_names')}")
check(js.get("labels") == {"background": 0, "necrotic core": 1, "edema": 2, "enhancing tumour": 3}, f"dataset.json labels {js.get('labels')}")
check(js.get("numTraining") == 3 and js.get("file_ending") == ".nii.gz", f"dataset.json {js}")
geometry(f"{T}/sp/BraTS2021_00000/BraTS2021_00000_t2.nii.gz", (40, 36, 24), (2, 2.5, 3), np.int16)

# the contrast table: AIR 0, SCALP 1, BONE 2, CSF 3, GM 4, WM 5, OEDEMA 6, ENH 7, NEC 8; modalities flair t1 t1ce t2
F, T1, T1CE, T2 = range(4)
SCALP, BONE, CSF, GM, WM, OED, ENH, NEC = range(1, 9)
rules = [  # (modality, brighter tissue, darker tissue)
    (F, OED, WM), (F, OED, GM), (T2, OED, WM), (T2, OED, GM),                       # oedema bright in FLAIR and T2
    (T1CE, ENH, WM), (T1CE, ENH, GM), (T1CE, ENH, OED), (T1CE, ENH, NEC), (T1CE, ENH, CSF),  # enhancing rim bright in T1ce
    (T2, NEC, WM), (T2, NEC, GM), (T1CE, WM, NEC),                                 # necrosis bright in T2, dark in T1ce
    (F, GM, CSF), (F, WM, CSF), (T1, GM, CSF), (T1, WM, CSF), (T2, CSF, GM), (T2, CSF, WM),  # CSF dark in FLAIR, T1; bright in T2
    (T1, WM, GM), (T2, GM, WM), (F, GM, WM),                                       # WM > GM in T1, GM > WM in T2, FLAIR
    (T1, SCALP, WM), (T1, SCALP, BONE), (F, SCALP, BONE), (T1CE, SCALP, BONE), (T2, SCALP, BONE),  # bright scalp, dark bone
]
# rules a blur of a few voxels cannot reverse: no thin layer (scalp, skull, cortex) against its neighbours,
# and not the small necrosis against white matter in T1ce (the bright rim around it blurs into it)
robust = [r for r in rules if (not ({r[1], r[2]} & {SCALP, BONE, GM}) or r in ((T1, WM, GM), (T1CE, ENH, GM))) and r != (T1CE, WM, NEC)]
def pure(m):
    """the voxels whose 3x3x3 neighbourhood is all of m: a tissue's own level, away from partial volume"""
    for ax in range(3):
        p = np.pad(m, [(1, 1) if a == ax else (0, 0) for a in range(3)])
        n = m.shape[ax]
        m = np.take(p, range(0, n), axis=ax) & np.take(p, range(1, n + 1), axis=ax) & np.take(p, range(2, n + 2), axis=ax)
    return m
def load(d, tisdir, i):
    tis = np.asarray(nib.load(f"{T}/{tisdir}/BraTS2021_{i:05d}_tissue.nii.gz").dataobj)
    xs = [np.asarray(nib.load(f"{T}/{d}/BraTS2021_{i:05d}/BraTS2021_{i:05d}_{m}.nii.gz").dataobj).astype(np.float32)
          for m in ("flair", "t1", "t1ce", "t2")]
    mu = np.array([[x[tis == t].mean() if (tis == t).any() else np.nan for x in xs] for t in range(9)])
    return tis, xs, mu
edge, cnr = {}, {}
for d, tisdir, diff, rs, ncase in (("full", "tisf", 0.25, rules, 2), ("d0", "tis0", 0, robust, 3), ("d1", "tis1", 1, robust, 3)):
    for i in range(ncase):
        tis, xs, mu = load(d, tisdir, i)
        n = np.bincount(tis.ravel(), minlength=9)
        check(all(n[1:] >= 50), f"{d} case {i}: a tissue with under 50 voxels: {n.tolist()}")
        for c, hi, lo in rs:
            check(mu[hi, c] > mu[lo, c], f"{d} (difficulty {diff}) case {i}: modality {c}: tissue {hi} ({mu[hi, c]:.0f}) not above tissue {lo} ({mu[lo, c]:.0f})")
        if d == "full":
            # the same on each tissue's pure voxels (scalp, skull and cortex are 2.5 voxels and more thick here)
            masks = [pure(tis == t) for t in range(9)]
            check(all(m.sum() >= 100 for m in masks[1:]), f"full case {i}: a tissue with under 100 pure voxels: {[int(m.sum()) for m in masks]}")
            pm = np.array([[x[m].mean() if m.any() else np.nan for x in xs] for m in masks])
            for c, hi, lo in rules:
                check(pm[hi, c] > pm[lo, c], f"full case {i}, pure voxels: modality {c}: tissue {hi} ({pm[hi, c]:.0f}) not above tissue {lo} ({pm[lo, c]:.0f})")
            continue
        x = xs[F]
        cnr[diff, i] = (mu[OED, F] - mu[WM, F]) / x[tis == WM].std()
        # the step between neighbours across the oedema/white-matter border, as a share of the full contrast
        a, b = tis[:-1], tis[1:]
        step = np.concatenate([(x[:-1] - x[1:])[(a == OED) & (b == WM)], (x[1:] - x[:-1])[(a == WM) & (b == OED)]])
        edge[diff, i] = step.mean() / (mu[OED, F] - mu[WM, F])
for i in range(3):
    check(cnr[0, i] > 2 * cnr[1, i], f"case {i}: oedema/WM CNR in FLAIR {cnr[0, i]:.1f} at difficulty 0, {cnr[1, i]:.1f} at 1")
    check(edge[0, i] > 1.5 * edge[1, i], f"case {i}: oedema/WM border step {edge[0, i]:.2f} of the contrast at difficulty 0, {edge[1, i]:.2f} at 1")
print("CNR", {k: round(float(v), 1) for k, v in cnr.items()}, "border step", {k: round(float(v), 2) for k, v in edge.items()})
for b in bad: print("  " + b)
sys.exit(1 if bad else 0)
PY

# ---- vbseg train detects and reads each layout; vbseg infer runs on the generated cases
TINY=(--base 4 --depth 2 --latent 0 --batch 2 --patch 32x32 --epochs 1 --steps-per-epoch 1 --val-samples 0 --val 0.34)
"$V" train --data "$T/b21" --out "$T/m21.vbseg" "${TINY[@]}" >"$T/t21.out" 2>&1
ok test $? -eq 0
ok grep -q "brats2021 layout, 3 cases, 4 channels (flair, t1, t1ce, t2), labels 0=background 1=necrotic core 2=edema 4=enhancing tumour" "$T/t21.out"
"$V" train --data "$T/b23" --out "$T/m23.vbseg" "${TINY[@]}" >"$T/t23.out" 2>&1
ok test $? -eq 0
ok grep -q "brats2023 layout, 3 cases, 4 channels (t2f, t1n, t1c, t2w), labels 0=background 1=necrotic core 2=edema 3=enhancing tumour" "$T/t23.out"
"$V" train --data "$T/nn" --out "$T/mnn.vbseg" "${TINY[@]}" >"$T/tnn.out" 2>&1
ok test $? -eq 0
ok grep -q "nnunet layout, 3 cases, 4 channels (flair, t1, t1ce, t2), labels 0=background 1=necrotic core 2=edema 3=enhancing tumour" "$T/tnn.out"
for x in 21:b21:BraTS2021_00000 23:b23:BraTS-GLI-00000-000 nn:nn/imagesTr:Syn_00000; do
  IFS=: read -r m d c <<<"$x"
  "$V" infer --model "$T/m$m.vbseg" --input "$T/$d" --output "$T/o$m" --samples 2 --no-png --quiet 2>"$T/i$m.err"
  ok test $? -eq 0
  ok test "$(grep -c ',ok,' "$T/o$m/summary.csv")" -eq 3
  ok $PY -c "
import sys, nibabel as nib, numpy as np
a, b = nib.load(sys.argv[1]), nib.load(sys.argv[2])
assert a.shape == b.shape and np.allclose(a.affine, b.affine), (a.shape, b.shape)" "$T/o$m/$c.nii.gz" \
    "$(ls "$T/$d"/$c*.nii.gz "$T/$d/$c"/*.nii.gz 2>/dev/null | head -1)"
done

# ---- bad arguments: one line on stderr, exit 2; an output that cannot be made: one line, exit 1
badarg() {
  "$G" "$@" >"$T/bad.out" 2>"$T/bad.err"
  local rc=$?
  [ "$rc" -eq 2 ] && [ "$(wc -l <"$T/bad.err")" -eq 1 ] && grep -q '^make_brats: ' "$T/bad.err" && [ ! -s "$T/bad.out" ] ||
    { echo "  $*: exit $rc, stderr: $(cat "$T/bad.err")"; return 1; }
}
ok badarg --cases 2
ok badarg "$T/x"
ok badarg "$T/x" --cases 0
ok badarg "$T/x" --cases two
ok badarg "$T/x" --cases 2 --size 48x48
ok badarg "$T/x" --cases 2 --size 8x48x48
ok badarg "$T/x" --cases 2 --size 48x48x32x2
ok badarg "$T/x" --cases 2 --size 2048x2048x2048
ok badarg "$T/x" --cases 2 --spacing 0
ok badarg "$T/x" --cases 2 --spacing 1x1
ok badarg "$T/x" --cases 2 --layout msd
ok badarg "$T/x" --cases 2 --difficulty 1.5
ok badarg "$T/x" --cases 2 --difficulty nan
ok badarg "$T/x" --cases 2 --seed -1
ok badarg "$T/x" --cases 2 --prefix a/b
ok badarg "$T/x" --cases 2 --first 99999
ok badarg "$T/x" --cases 2 --threads 0
ok badarg "$T/x" --cases 2 --bogus
ok badarg "$T/x" --cases
ok badarg "$T/x" "$T/y" --cases 2
ok test ! -e "$T/x"
touch "$T/file"
"$G" "$T/file" --cases 1 --size 16x16x16 2>"$T/file.err"
ok test $? -eq 1
ok test "$(wc -l <"$T/file.err")" -eq 1
ok grep -q "exists and is not a folder" "$T/file.err"

echo "make_brats: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
