#!/usr/bin/env bash
# infer.sh BUILD_DIR: `vbseg infer` end to end on generated cases in every
# input layout; a folder of 3 good and 4 bad cases; SIGKILL then re-run;
# shards; the same bytes at 1 and 2 threads.
set -u
B=$1
S=$(cd "$(dirname "$0")" && pwd)
V=$B/vbseg
T=$(mktemp -d /tmp/vbs_infer.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok() { if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $*"; fi; }
not() { ! "$@"; }
PY=/usr/bin/python3

"$V" create --arch unet --dims 2 --in-channels 4 --classes 4 --base 4 --depth 3 --latent 4 --rho -3 --out "$T/m.vbseg" >/dev/null

# BraTS 2021 folders: three good cases of different sizes (181 x 217 is the real in-plane size)
mkdir -p "$T/b21"
sizes=("61 53 5" "40 48 4" "181 217 4")
i=0
for c in BraTS_001 BraTS_002 BraTS_003; do
  mkdir -p "$T/b21/$c"; "$B/samples/make_scan" "$T/b21/$c" "$c" ${sizes[$i]} >/dev/null; i=$((i+1))
done
cp "$T/b21/BraTS_001/BraTS_001_flair.nii.gz" "$T/b21/BraTS_001/BraTS_001_extra.nii.gz"   # an extra file: reported, ignored
ok "$V" infer --model "$T/m.vbseg" --input "$T/b21" --output "$T/o21" --samples 3 --quiet
for c in BraTS_001 BraTS_002 BraTS_003; do
  for f in "" _entropy _epistemic _aleatoric _regions; do ok test -s "$T/o21/$c$f.nii.gz"; done
done
ok grep -q "extra file BraTS_001_extra.nii.gz ignored" "$T/o21/summary.csv"
# read back through libnifti by vbseg eval, which refuses a prediction whose geometry differs from its reference
ok "$V" eval --pred "$T/o21" --truth "$T/b21" --out "$T/o21_eval.csv"
ok test "$(grep -c '^BraTS_00' "$T/o21_eval.csv")" -eq 3
ok $PY - "$T" <<'PY'
import csv, gzip, json, struct, sys
t = sys.argv[1]
def hdr(p):
    h = gzip.open(p).read(348)
    return struct.unpack('<8h', h[40:56]), h[76:108], h[252:328], struct.unpack('<h', h[70:72])[0]
for c in ("BraTS_001", "BraTS_002", "BraTS_003"):
    ref = hdr(f"{t}/b21/{c}/{c}_t1.nii.gz")
    for suf in ("", "_entropy", "_epistemic", "_aleatoric", "_regions"):
        d, pix, geo, dt = hdr(f"{t}/o21/{c}{suf}.nii.gz")
        assert d[1:4] == ref[0][1:4] and pix[4:16] == ref[1][4:16] and geo == ref[2], (c, suf)
    raw = gzip.open(f"{t}/o21/{c}.nii.gz").read()
    labels = set(raw[352:])
    assert labels <= {0, 1, 2, 4}, labels          # BraTS 2018/2021 label values only
rows = list(csv.DictReader(open(f"{t}/o21/summary.csv")))
assert [r["status"] for r in rows] == ["ok"] * 3 and sorted(int(r["qc_rank"]) for r in rows) == [1, 2, 3]
assert all(float(r["wt_ml"]) >= float(r["tc_ml"]) >= float(r["et_ml"]) >= 0 for r in rows)
assert len(json.load(open(f"{t}/o21/summary.json"))) == 3
PY
# the PNG previews decode: signature, IHDR, and the zlib stream inflates to h rows of 1 + 3w bytes
ok $PY - "$T/o21" <<'PY'
import glob, struct, sys, zlib
pngs = sorted(glob.glob(sys.argv[1] + "/*_preview.png"))
assert len(pngs) == 3, pngs
for p in pngs:
    b = open(p, "rb").read()
    assert b[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(b):
        n, kind = struct.unpack(">I4s", b[pos:pos + 8])
        data = b[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", data[:10])
            assert depth == 8 and ctype == 2 and w > 100 and h > 50
        elif kind == b"IDAT":
            idat += data
        pos += 12 + n
    assert len(zlib.decompress(idat)) == h * (1 + 3 * w), p
PY
ok "$V" infer --model "$T/m.vbseg" --input "$T/b21" --output "$T/nopng" --samples 2 --no-png --quiet
ok test -z "$(ls "$T/nopng" | grep png)"
# nibabel, where installed, reads the same geometry
if $PY -c "import nibabel" 2>/dev/null; then
  ok $PY -c "import nibabel as nb, numpy as np, sys; a=nb.load(sys.argv[1]); b=nb.load(sys.argv[2]); assert np.allclose(a.affine, b.affine) and a.shape == b.shape" \
    "$T/b21/BraTS_002/BraTS_002_t1.nii.gz" "$T/o21/BraTS_002.nii.gz"
fi

# BraTS 2023 names, nnU-Net numbering and a flat 4D file give the same labels for the same scan
mkdir -p "$T/b23/BraTS-GLI-00001-000" "$T/nn" "$T/flat"
for pair in flair:t2f t1:t1n t1ce:t1c t2:t2w; do
  cp "$T/b21/BraTS_002/BraTS_002_${pair%%:*}.nii.gz" "$T/b23/BraTS-GLI-00001-000/BraTS-GLI-00001-000-${pair##*:}.nii.gz"
done
n=0; for ch in flair t1 t1ce t2; do gunzip -c "$T/b21/BraTS_002/BraTS_002_$ch.nii.gz" >"$T/nn/BraTS_002_000$n.nii"; n=$((n+1)); done   # plain .nii
ok "$V" infer --model "$T/m.vbseg" --input "$T/b23" --output "$T/o23" --samples 3 --quiet
ok "$V" infer --model "$T/m.vbseg" --input "$T/nn" --output "$T/onn" --samples 3 --quiet
ok cmp -s "$T/o21/BraTS_002.nii.gz" "$T/o23/BraTS-GLI-00001-000.nii.gz"
ok cmp -s "$T/o21/BraTS_002_epistemic.nii.gz" "$T/onn/BraTS_002_epistemic.nii.gz"
$PY "$S/write_nifti.py" "$T/flat/scanA.nii.gz" 40 36 3 4
ok "$V" infer --model "$T/m.vbseg" --input "$T/flat" --output "$T/oflat" --samples 2 --quiet
ok test -s "$T/oflat/scanA_epistemic.nii.gz"
# a 3D model in sliding windows (patch 8 x 16 x 16 over 3 x 36 x 40: padded to the patch in z)
"$V" create --arch unet --latent 0 --dims 3 --in-channels 4 --classes 2 --base 2 --depth 2 --patch 8x16x16 --out "$T/m3.vbseg" >/dev/null
ok "$V" infer --model "$T/m3.vbseg" --input "$T/flat" --output "$T/o3d" --samples 3 --overlap 0.25 --quiet
ok $PY - "$T/flat/scanA.nii.gz" "$T/o3d/scanA_epistemic.nii.gz" <<'PY'
import gzip, struct, sys
a = gzip.open(sys.argv[1]).read(348); b = gzip.open(sys.argv[2]).read(348)
assert struct.unpack('<4h', a[40:48])[1:] == struct.unpack('<4h', b[40:48])[1:] and a[252:328] == b[252:328]
PY
"$V" infer --model "$T/m.vbseg" --input "$T/flat" --output "$T/oflat2" --layout nnunet --quiet 2>/dev/null
ok test ! -e "$T/oflat2/scanA.nii.gz"   # forced to the wrong layout: no case is taken for one

# 3 good + 4 bad cases: truncated gzip, random bytes, a wrong-shape channel, a missing channel
mkdir -p "$T/mix"
cp -r "$T/b21/BraTS_001" "$T/b21/BraTS_002" "$T/mix/"
mkdir -p "$T/mix/Good_3" && "$B/samples/make_scan" "$T/mix/Good_3" Good_3 32 32 4 >/dev/null
for c in Bad_trunc Bad_random Bad_shape Bad_missing Bad_affine; do mkdir -p "$T/mix/$c"; "$B/samples/make_scan" "$T/mix/$c" "$c" 32 32 4 >/dev/null; done
$PY "$S/write_nifti.py" "$T/mix/Bad_affine/Bad_affine_t2.nii.gz" 32 32 4 1   # same size, other voxel spacing and origin
head -c 2000 "$T/b21/BraTS_002/BraTS_002_t2.nii.gz" >"$T/mix/Bad_trunc/Bad_trunc_t2.nii.gz"
head -c 5000 /dev/urandom >"$T/mix/Bad_random/Bad_random_t1.nii.gz"
"$B/samples/make_scan" "$T/mix" tmp 32 28 4 >/dev/null && mv "$T/mix/tmp_t1ce.nii.gz" "$T/mix/Bad_shape/Bad_shape_t1ce.nii.gz" && rm -f "$T/mix"/tmp_*
rm "$T/mix/Bad_missing/Bad_missing_flair.nii.gz"
"$V" infer --model "$T/m.vbseg" --input "$T/mix" --output "$T/omix" --samples 2 >"$T/mix.out" 2>&1
ok test $? -ne 0
ok grep -q "5 of 8 cases failed" "$T/mix.out"
for c in BraTS_001 BraTS_002 Good_3; do ok test -s "$T/omix/${c}_epistemic.nii.gz"; done
ok test -z "$(ls "$T/omix" | grep '^Bad_')"                     # no partial files for bad cases
ok test -z "$(find "$T" -name '*.tmp.*')"                          # no temporaries anywhere
ok $PY - "$T/omix/summary.csv" <<'PY'
import csv, sys
rows = {r["case"]: r for r in csv.DictReader(open(sys.argv[1]))}
assert len(rows) == 8
want = {"Bad_trunc": "truncated", "Bad_random": "sizeof_hdr", "Bad_shape": "dims", "Bad_missing": "missing channel flair",
        "Bad_affine": "differs"}
for c, needle in want.items():
    assert rows[c]["status"] == "error" and needle in rows[c]["error"], (c, rows[c]["error"])
order = list(rows)
assert all(rows[c]["status"] == "error" for c in order[:5])       # failures first, then the most uncertain
PY

# SIGKILL mid-run, re-run: the same bytes as an uninterrupted run, finished cases not recomputed
"$V" infer --model "$T/m.vbseg" --input "$T/b21" --output "$T/ref" --samples 12 --quiet
"$V" infer --model "$T/m.vbseg" --input "$T/b21" --output "$T/killed" --samples 12 --quiet &
pid=$!
for _ in $(seq 200); do [ -s "$T/killed/manifest.tsv" ] && break; sleep 0.02; done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
done_before=$(tail -n +2 "$T/killed/manifest.tsv" 2>/dev/null | cut -f1)
n_before=$(echo $done_before | wc -w)
ok test "$n_before" -ge 1 -a "$n_before" -le 2                 # killed after the first case, before the last
"$V" infer --model "$T/m.vbseg" --input "$T/b21" --output "$T/killed" --samples 12 >"$T/rerun.out" 2>&1
ok test $? -eq 0
for c in $done_before; do ok grep -q "$c: already done" "$T/rerun.out"; done
for f in "$T"/ref/*.nii.gz "$T"/ref/*.png; do ok cmp -s "$f" "$T/killed/$(basename "$f")"; done
ok test -z "$(ls "$T/killed" | grep -v -E '\.nii\.gz$|_preview\.png$|^summary|^manifest|\.tmp\.')"   # a SIGKILL may leave a temporary, never a partial output
"$V" infer --model "$T/m.vbseg" --input "$T/b21" --output "$T/killed" --samples 13 >"$T/rerun2.out" 2>&1
ok not grep -q "already done" "$T/rerun2.out"                  # other options: nothing skipped

# adaptive sampling reports the samples used; remapped labels are contiguous
ok "$V" infer --model "$T/m.vbseg" --input "$T/b21" --output "$T/adapt" --samples 40 --adaptive 1 --remap contiguous --no-png --quiet
ok $PY - "$T/adapt" <<'PY'
import csv, gzip, sys
rows = list(csv.DictReader(open(sys.argv[1] + "/summary.csv")))
assert all(r["samples"] == "10" for r in rows), [r["samples"] for r in rows]   # stopped after two blocks of 5
assert all(float(r["peak_mb"]) > 0 for r in rows)
for r in rows:
    assert set(gzip.open(f"{sys.argv[1]}/{r['case']}.nii.gz").read()[352:]) <= {0, 1, 2, 3}
PY
# cropping to the non-zero box: inside it the maps are those of a --no-crop run
# on the box cut out by hand (same bytes); outside it background, zero uncertainty
mkdir -p "$T/crop/BraTS_001" "$T/boxed/BraTS_001"
for m in flair t1 t1ce t2; do cp "$T/b21/BraTS_001/BraTS_001_$m.nii.gz" "$T/crop/BraTS_001/"; done
ok $PY - "$T/crop/BraTS_001" "$T/boxed/BraTS_001" "$T/box.txt" <<'PY'
import gzip, struct, sys, numpy as np
src, dst, boxf = sys.argv[1:4]
vols, hdrs = [], []
for m in ("flair", "t1", "t1ce", "t2"):
    b = gzip.open(f"{src}/BraTS_001_{m}.nii.gz").read()
    d = struct.unpack('<8h', b[40:56]); off = int(struct.unpack('<f', b[108:112])[0])
    assert struct.unpack('<h', b[70:72])[0] == 16
    vols.append(np.frombuffer(b[off:], '<f4').reshape(d[3], d[2], d[1])); hdrs.append(b[:off])
nz = np.argwhere(np.any(np.stack(vols) != 0, axis=0))
lo, hi = nz.min(0), nz.max(0) + 1              # z, y, x
assert (hi - lo).prod() < vols[0].size, "the test case needs a background margin"
open(boxf, "w").write(" ".join(map(str, list(lo) + list(hi))))
for m, v, h in zip(("flair", "t1", "t1ce", "t2"), vols, hdrs):
    h = bytearray(h); s = hi - lo
    struct.pack_into('<4h', h, 42, int(s[2]), int(s[1]), int(s[0]), 1)
    gzip.open(f"{dst}/BraTS_001_{m}.nii.gz", "wb").write(bytes(h) + v[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype('<f4').tobytes())
PY
ok "$V" infer --model "$T/m.vbseg" --input "$T/crop" --output "$T/ocrop" --samples 3 --save-probabilities --no-png --quiet
ok "$V" infer --model "$T/m.vbseg" --input "$T/boxed" --output "$T/oboxed" --samples 3 --save-probabilities --no-png --no-crop --quiet
ok $PY - "$T/ocrop" "$T/oboxed" "$T/box.txt" <<'PY'
import csv, gzip, struct, sys, numpy as np
a, b, boxf = sys.argv[1:4]
z0, y0, x0, z1, y1, x1 = map(int, open(boxf).read().split())
def load(p):
    r = gzip.open(p).read(); d = struct.unpack('<8h', r[40:56]); off = int(struct.unpack('<f', r[108:112])[0])
    dt = {2: 'u1', 16: '<f4'}[struct.unpack('<h', r[70:72])[0]]
    return np.frombuffer(r[off:], dt).reshape(d[4], d[3], d[2], d[1])
for suf in ("", "_entropy", "_epistemic", "_aleatoric", "_regions", "_probabilities"):
    full, box = load(f"{a}/BraTS_001{suf}.nii.gz"), load(f"{b}/BraTS_001{suf}.nii.gz")
    assert np.array_equal(full[:, z0:z1, y0:y1, x0:x1], box), suf
    outside = np.ones(full.shape[1:], bool); outside[z0:z1, y0:y1, x0:x1] = False
    rest = full[:, outside]
    if suf == "_probabilities": assert (rest[0] == 1).all() and (rest[1:] == 0).all()
    else: assert (rest == 0).all(), suf
ra, rb = (next(csv.DictReader(open(f"{d}/summary.csv"))) for d in (a, b))
for k in ra:
    if k.endswith("_ml") or k.endswith("_cv") or k.endswith("_mean_mi") or k == "samples":
        assert ra[k] == rb[k], (k, ra[k], rb[k])
PY

# shards cover every case exactly once; 1 and 2 threads give the same bytes
for i in 0 1 2; do "$V" infer --model "$T/m.vbseg" --input "$T/mix" --output "$T/sh" --samples 2 --shard $i/3 --quiet 2>/dev/null; done
ok $PY - "$T/sh" <<'PY'
import csv, glob, sys
ids = [r["case"] for f in sorted(glob.glob(sys.argv[1] + "/summary.shard-*-of-3.csv")) for r in csv.DictReader(open(f))]
assert len(ids) == 8 and len(set(ids)) == 8, ids
PY
# merged shard summaries rank and flag the cases as the unsharded run does (one QC rule), notes kept
ok "$V" eval --merge "$T/sh" >/dev/null
ok $PY - "$T/sh/summary.csv" "$T/omix/summary.csv" <<'PY'
import csv, sys
a, b = ({r["case"]: r for r in csv.DictReader(open(p))} for p in sys.argv[1:3])
assert a.keys() == b.keys()
for c in a:
    for k in ("status", "qc_rank", "qc_flag", "notes", "error"):
        assert a[c][k] == b[c][k], (c, k, a[c][k], b[c][k])
PY
ok "$V" infer --model "$T/m.vbseg" --input "$T/b21" --output "$T/t1" --samples 3 --threads 1 --quiet
ok "$V" infer --model "$T/m.vbseg" --input "$T/b21" --output "$T/t2" --samples 3 --threads 2 --quiet
for f in "$T"/t1/*.nii.gz; do ok cmp -s "$f" "$T/t2/$(basename "$f")"; done

# ---- data safety -----------------------------------------------------------
# the input folder as the output: refused before anything is written; inputs untouched
mkdir -p "$T/same" && cp "$T/flat/scanA.nii.gz" "$T/same/"
sum_before=$(md5sum "$T/same/scanA.nii.gz")
"$V" infer --model "$T/m.vbseg" --input "$T/same" --output "$T/same" --samples 2 2>"$T/same.err"
ok test $? -eq 1
ok grep -q "is the input folder" "$T/same.err"
ok test "$(ls "$T/same")" = "scanA.nii.gz"
ok test "$(md5sum "$T/same/scanA.nii.gz")" = "$sum_before"
ln -s "$T/same" "$T/same_link"                                    # the same folder under another name
"$V" infer --model "$T/m.vbseg" --input "$T/same" --output "$T/same_link" --samples 2 2>/dev/null
ok test $? -eq 1
ok test "$(ls "$T/same")" = "scanA.nii.gz"
# an output path that is an input file (through a link): refused before the first case
mkdir -p "$T/coll_in" "$T/coll_out" && cp "$T/flat/scanA.nii.gz" "$T/coll_out/scanA.nii.gz"
ln -s "$T/coll_out/scanA.nii.gz" "$T/coll_in/scanA.nii.gz"
"$V" infer --model "$T/m.vbseg" --input "$T/coll_in" --output "$T/coll_out" --samples 2 2>"$T/coll.err"
ok test $? -eq 1
ok grep -q "would overwrite an input file" "$T/coll.err"
ok cmp -s "$T/coll_out/scanA.nii.gz" "$T/flat/scanA.nii.gz"
# vbseg's own outputs in an input folder are not cases (a re-run on an output folder)
mkdir -p "$T/reused" && cp "$T/flat/scanA.nii.gz" "$T/reused/" && cp "$T/oflat/summary.csv" "$T/oflat/manifest.tsv" "$T/reused/"
for f in "$T"/oflat/scanA*; do b=$(basename "$f"); cp "$f" "$T/reused/scanB${b#scanA}"; done   # another case's outputs, labels included
"$V" infer --model "$T/m.vbseg" --input "$T/reused" --output "$T/oreused" --samples 2 --quiet 2>"$T/reused.err"
ok test $? -eq 0
ok test "$(tail -n +2 "$T/oreused/manifest.tsv" | cut -f1)" = "scanA"
ok grep -q "vbseg outputs skipped" "$T/reused.err"
# an empty folder is an error; files another layout would take are named in a warning
mkdir -p "$T/empty"
"$V" infer --model "$T/m.vbseg" --input "$T/empty" --output "$T/oempty" 2>"$T/empty.err"
ok test $? -eq 1
ok grep -q "no cases found" "$T/empty.err"
ok test ! -e "$T/oempty"                                           # no empty output folder left behind
mkdir -p "$T/mixed" && cp -r "$T/b21/BraTS_002" "$T/mixed/" && cp "$T/flat/scanA.nii.gz" "$T/mixed/loose.nii.gz"
"$V" infer --model "$T/m.vbseg" --input "$T/mixed" --output "$T/omixed" --samples 2 --no-png 2>"$T/mixed.err"
ok grep -q "warning: .*1 file or folder not used by the brats2021 layout: loose.nii.gz" "$T/mixed.err"
# the output folder is checked before any compute: not a folder, not writable
"$V" infer --model "$T/m.vbseg" --input "$T/b21" --output "$T/same/scanA.nii.gz" --samples 2 2>"$T/nf.err"
ok test $? -eq 1
ok grep -q "exists and is not a folder" "$T/nf.err"
ok not grep -q "^\[1/" "$T/nf.err"
"$V" infer --model "$T/m.vbseg" --input "$T/b21" --output /sys --samples 2 2>"$T/ro.err"
ok test $? -eq 1
ok test "$(wc -l <"$T/ro.err")" -eq 1
ok grep -q "^vbseg infer: /sys: cannot write to the output folder: Permission denied$" "$T/ro.err"
"$V" infer --model "$T/m.vbseg" --input "$T/b21" --output "$T/same/scanA.nii.gz/sub" --samples 2 2>"$T/nd.err"
ok grep -q "cannot create the output folder: Not a directory" "$T/nd.err"

# a full disk: the file and strerror's reason in one line, the run stops, the finished cases stay
if mkdir -p "$T/tiny" && mount -t tmpfs -o size=160k tmpfs "$T/tiny" 2>/dev/null; then
  "$V" infer --model "$T/m.vbseg" --input "$T/b21" --output "$T/tiny/o" --samples 2 --no-png 2>"$T/full.err"
  ok test $? -eq 1
  ok grep -q "No space left on device" "$T/full.err"
  ok grep -q "stopping: outputs cannot be written" "$T/full.err"
  ok test -z "$(ls -a "$T/tiny/o" | grep -E '\.tmp\.|^\.vbseg-part\.')"     # no temporaries
  for c in $(tail -n +2 "$T/tiny/o/manifest.tsv" 2>/dev/null | cut -f1); do ok test -s "$T/tiny/o/${c}_epistemic.nii.gz"; done
  "$V" create --arch unet --latent 0 --dims 2 --in-channels 4 --classes 4 --base 16 --depth 4 --out "$T/tiny/big.vbseg" 2>"$T/fullc.err"
  ok grep -q "^vbseg create: $T/tiny/big.vbseg: write failed: No space left on device$" "$T/fullc.err"
  umount "$T/tiny"
else
  echo "SKIP: full-disk checks (cannot mount a small tmpfs here)"
fi

# SIGINT in a case: it is abandoned without debris, the finished ones are kept with their summary, resume completes
mkdir -p "$T/slow"
for c in S1 S2 S3; do mkdir -p "$T/slow/$c"; done
"$B/samples/make_scan" "$T/slow/S1" S1 32 32 4 >/dev/null
"$B/samples/make_scan" "$T/slow/S2" S2 181 217 24 >/dev/null
"$B/samples/make_scan" "$T/slow/S3" S3 32 32 4 >/dev/null
"$V" infer --model "$T/m.vbseg" --input "$T/slow" --output "$T/slow_ref" --samples 6 --threads 1 --quiet
# consistency of an interrupted folder: a case in the manifest has every output, any other none (finished-looking or staged)
consistent() { $PY - "$1" <<'PY'
import os, sys
d = sys.argv[1]
done = [l.split("\t")[0] for l in open(f"{d}/manifest.tsv").read().splitlines()[1:]]
for c in ("S1", "S2", "S3"):
    files = [f for f in os.listdir(d) if f.startswith(c) or f.startswith(".vbseg-part." + c)]
    if c in done:
        assert len(files) == 6 and not any(f.startswith(".") for f in files), (c, files)
    else:
        assert not files, (c, files)
assert not [f for f in os.listdir(d) if ".tmp." in f], os.listdir(d)
PY
}
"$V" infer --model "$T/m.vbseg" --input "$T/slow" --output "$T/slow_int" --samples 6 --threads 1 2>"$T/int.err" &
pid=$!
for _ in $(seq 500); do [ -s "$T/slow_int/manifest.tsv" ] && break; sleep 0.01; done
kill -INT $pid; wait $pid; rc=$?
ok test $rc -eq 130
ok grep -q "interrupted after [12] of 3 cases; run the same command again to resume" "$T/int.err"
ok consistent "$T/slow_int"
ok test "$(tail -n +2 "$T/slow_int/summary.csv" | wc -l)" -eq "$(tail -n +2 "$T/slow_int/manifest.tsv" | wc -l)"
"$V" infer --model "$T/m.vbseg" --input "$T/slow" --output "$T/slow_int" --samples 6 --threads 1 --quiet
ok test $? -eq 0
for f in "$T"/slow_ref/*.nii.gz "$T"/slow_ref/*.png; do ok cmp -s "$f" "$T/slow_int/$(basename "$f")"; done
# SIGKILL in a case: no finished-looking file for it; the next start removes the staged leftovers
"$V" infer --model "$T/m.vbseg" --input "$T/slow" --output "$T/slow_kill" --samples 6 --threads 1 --quiet &
pid=$!
for _ in $(seq 500); do [ -s "$T/slow_kill/manifest.tsv" ] && break; sleep 0.01; done
sleep 0.3; kill -9 $pid; wait $pid 2>/dev/null
ok test -z "$(ls "$T/slow_kill" | grep '^S2')"                  # S2 was in flight: nothing of it with a final name
touch "$T/slow_kill/.vbseg-part.S2_entropy.nii.gz" "$T/slow_kill/summary.csv.tmp.AbC123"   # as a kill during writing leaves
"$V" infer --model "$T/m.vbseg" --input "$T/slow" --output "$T/slow_kill" --samples 6 --threads 1 2>"$T/kill.err"
ok grep -q "removed [0-9]* temporar" "$T/kill.err"
ok consistent "$T/slow_kill"
for f in "$T"/slow_ref/*.nii.gz; do ok cmp -s "$f" "$T/slow_kill/$(basename "$f")"; done

# progress within a case on a terminal: passes (samples x slices) and an ETA before the case ends
script -qfec "\"$V\" infer --model \"$T/m.vbseg\" --input \"$T/slow\" --output \"$T/slow_tty\" --samples 6 --threads 1 --no-png" /dev/null >"$T/tty.out" 2>&1
ok grep -q "\[2/3\] S2: [0-9]*/[0-9]* passes (samples x slices or windows), .*ETA case .*, run " "$T/tty.out"
# changed options: said, and every case redone
"$V" infer --model "$T/m.vbseg" --input "$T/slow" --output "$T/slow_tty" --samples 5 --threads 1 --no-png 2>"$T/opt.err" >/dev/null
ok grep -q "options differ from the manifest (.*); redoing 3 cases" "$T/opt.err"
ok not grep -q "already done" "$T/opt.err"
# the shard banner names its share
"$V" infer --model "$T/m.vbseg" --input "$T/slow" --output "$T/slow_sh" --samples 1 --no-png --shard 1/3 2>"$T/sh.err" >/dev/null
ok grep -q "shard 1 of 3 takes 1 of them (every 3rd case from the 2nd)" "$T/sh.err"

# heteroscedastic maps (eq. 10-11) from infer equal those of vbseg run on the same scan
"$V" create --arch unet --latent 0 --dims 2 --in-channels 4 --classes 4 --base 4 --depth 2 --hetero --rho -3 --out "$T/mh.vbseg" >/dev/null
mkdir -p "$T/het/H1" && "$B/samples/make_scan" "$T/het/H1" H1 40 36 4 >/dev/null
ok "$V" infer --model "$T/mh.vbseg" --input "$T/het" --output "$T/ohet" --samples 4 --no-crop --no-png --quiet
ok "$V" run --model "$T/mh.vbseg" --input "$T/het/H1/H1_flair.nii.gz" --input "$T/het/H1/H1_t1.nii.gz" --input "$T/het/H1/H1_t1ce.nii.gz" \
  --input "$T/het/H1/H1_t2.nii.gz" --samples 4 --out "$T/rhet" >/dev/null
ok cmp -s "$T/ohet/H1_aleatoric_het.nii.gz" "$T/rhet/aleatoric_het.nii.gz"
ok cmp -s "$T/ohet/H1_epistemic_het.nii.gz" "$T/rhet/epistemic_het.nii.gz"
ok cmp -s "$T/ohet/H1_epistemic.nii.gz" "$T/rhet/epistemic_mi.nii.gz"

# notes in their own column (not in error), NaN voxels reported; QC: no uncertainty is never flagged for review
mkdir -p "$T/nan/N1" && "$B/samples/make_scan" "$T/nan/N1" N1 32 32 4 >/dev/null
ok $PY - "$T/nan/N1/N1_t2.nii.gz" <<'PY'
import gzip, struct, sys
b = bytearray(gzip.open(sys.argv[1]).read()); off = int(struct.unpack('<f', b[108:112])[0])
struct.pack_into('<f', b, off + 4 * 100, float('nan')); struct.pack_into('<f', b, off + 4 * 101, float('inf'))
gzip.open(sys.argv[1], 'wb').write(bytes(b))
PY
"$V" infer --model "$T/m.vbseg" --input "$T/nan" --output "$T/onan" --mode mean --no-png 2>"$T/nan.err"
ok grep -q "note: .*N1_t2.nii.gz: 2 NaN/Inf voxels set to 0" "$T/nan.err"
ok $PY - "$T/onan/summary.csv" <<'PY'
import csv, sys
r = next(csv.DictReader(open(sys.argv[1])))
assert r["status"] == "ok" and r["error"] == "" and "2 NaN/Inf voxels" in r["notes"], r
assert float(r["qc_mean_mi"]) == 0 and r["qc_flag"] == "ok", r      # a single case in mean mode: nothing to review
PY
echo "infer: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
