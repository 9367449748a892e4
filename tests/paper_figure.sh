#!/usr/bin/env bash
# paper_figure.sh BUILD_DIR: samples/paper/figure.c (paper_figure) on one
# small make_brats case, with a prediction and entropy/MI maps faked here in
# NumPy so that their values are known. The PNGs are decoded here with zlib
# (no imaging library). Oracles: nibabel's orientation codes (the slice shown
# radiologically: the volume reoriented to L, P, S and transposed); NumPy's
# percentiles for the grey window; the label colours and layout documented in
# figure.c's opening comment; matplotlib's published viridis table (a few
# entries copied below) for the maps; the argmax of the tumour count per
# slice for the default slice; the caption rendered here from canvas.c's
# glyph table and searched for in the image; an LPS twin of every file, whose
# figure must be the same bytes; and the refusals (exit 1, one line naming the
# file, nothing written; usage errors exit 2).
set -u
B=$1
S=$(cd "$(dirname "$0")/.." && pwd)
T=$(mktemp -d /tmp/vbs_paper_figure.XXXXXX)
trap 'rm -rf "$T"' EXIT
"$B/samples/make_brats" "$T/data" --size 64x64x16 --cases 1 --seed 5 --quiet || { echo "make_brats failed"; echo "paper_figure: 0 passed, 1 failed"; exit 1; }
/usr/bin/python3 - "$B/samples/paper_figure" "$T" "$S/runtime/cli/canvas.c" <<'PY'
import os, re, struct, subprocess, sys, zlib
import numpy as np
import nibabel as nib

FIG, T, CANVAS = sys.argv[1:4]
passed = failed = 0
def ok(cond, what):
    global passed, failed
    if cond: passed += 1
    else: failed += 1; print("FAIL:", what)

# ---- PNG, decoded with zlib ------------------------------------------------
def png_size(path):
    with open(path, "rb") as f: h = f.read(24)
    return struct.unpack(">II", h[16:24])
def png_read(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR": w, h, depth, ctype = struct.unpack(">IIBB", body[:10]); assert (depth, ctype) == (8, 2)
        if kind == b"IDAT": idat += body
        pos += 12 + n
    raw, stride = zlib.decompress(idat), 3 * w
    img, prev = np.zeros((h, stride), np.uint8), np.zeros(stride, np.int64)
    for y in range(h):
        f, row = raw[y * (stride + 1)], np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        if f == 0: cur = row
        elif f == 1: cur = np.cumsum(row.reshape(w, 3), axis=0).reshape(-1) % 256
        elif f == 2: cur = (row + prev) % 256
        else:
            r, p, cur = row.tolist(), prev.tolist(), [0] * stride
            for x in range(stride):
                a = cur[x - 3] if x >= 3 else 0
                b, c = p[x], (p[x - 3] if x >= 3 else 0)
                if f == 3: pred = (a + b) // 2
                else:
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                cur[x] = (r[x] + pred) % 256
            cur = np.array(cur, np.int64)
        img[y], prev = cur, cur
    return img.reshape(h, w, 3).astype(int)

# ---- text, from canvas.c's glyphs --------------------------------------------
glyph = {}
for m in re.finditer(r"\['(\\.|.)' - 32\] = ((?:\"[.#]{5}\" ?){8})", open(CANVAS).read()):
    ch = m.group(1)[-1] if m.group(1).startswith("\\") else m.group(1)
    glyph[ch] = "".join(re.findall(r"[.#]{5}", m.group(2)))
def text_mask(s, scale=2):
    m = np.zeros((8 * scale, max(1, 6 * scale * len(s) - scale)), bool)
    for i, ch in enumerate(s):
        g = np.array([c == "#" for c in glyph[ch]]).reshape(8, 5)
        m[:, 6 * scale * i:6 * scale * i + 5 * scale] = np.kron(g, np.ones((scale, scale), bool))
    return m
def find_text(img, s):
    """the top-left corners where s is drawn in white, exactly (its blank pixels not white)"""
    white, m = (img == 255).all(axis=2), text_mask(s)
    ys, xs = np.nonzero(m)
    cand = np.argwhere(white[:white.shape[0] - m.shape[0] + 1, :white.shape[1] - m.shape[1] + 1]) - [ys[0], xs[0]]
    return [tuple(p) for p in cand if p.min() >= 0 and (white[p[0]:p[0] + m.shape[0], p[1]:p[1] + m.shape[1]] == m).all()]

# ---- the case, a prediction and maps with known values -----------------------
case = "BraTS2021_00000"
D = os.path.join(T, "data", case)
src = {k: os.path.join(D, f"{case}_{k}.nii.gz") for k in ("flair", "seg")}
flair_img, seg_img = nib.load(src["flair"]), nib.load(src["seg"])
flair, seg = flair_img.get_fdata(dtype=np.float32), np.asarray(seg_img.dataobj).astype(np.int16)
aff, nx, ny, nz = flair_img.affine, *flair.shape
seg = np.roll(seg, -3, axis=2)                      # the generator centres its tumours: move the fullest slice off the middle
per_z = (seg > 0).sum(axis=(0, 1))
Z = int(per_z.argmax())
ok((per_z == per_z.max()).sum() == 1 and per_z.max() > 0 and per_z[0] == per_z[-1] == 0, f"one slice holds the most tumour: {per_z.tolist()}")
ok(Z not in (nz // 2, (nz - 1) // 2), f"the fullest slice {Z} is not the middle one")
ok((seg[:, :, Z] == 4).any() and (seg[:, :, Z] == 2).any(), "slice Z holds enhancing tumour and oedema")
pred = seg.copy()
et = np.argwhere(seg[:, :, Z] == 4)
moved = (seg == 4) & (np.arange(nx)[:, None, None] < np.median(et[:, 0]))
pred[moved] = 2                                     # half the enhancing tumour called oedema
brain = np.argwhere((flair[:, :, Z] > 0) & (seg[:, :, Z] == 0))
nb = brain[len(brain) // 3]
pred[nb[0], nb[1], Z] = 1                           # one false necrosis
ok(moved[:, :, Z].any(), "the prediction differs from the reference on slice Z")
rng = np.random.default_rng(0)
ent = np.where(flair > 0, rng.uniform(0, 0.2, flair.shape), 0).astype(np.float32)
mi = (ent / 4).astype(np.float32)
# known values on slice Z at brain voxels: t = 0, 1/4, 1/2, 3/4, 1 of each map's top (entropy 1, MI 0.5)
spots = [tuple(brain[i]) for i in np.linspace(0, len(brain) - 1, 5).astype(int)]
for t, (i, j) in zip((0, 0.25, 0.5, 0.75, 1.0), spots):
    ent[i, j, Z], mi[i, j, Z] = t, t / 2
ent[:, :, Z + 1 if Z + 1 < nz else Z - 1] = 3.0                             # another slice's larger values must not set the scale
def save(path, a, like, affine=None):
    h = like.header.copy()
    h.set_data_dtype(a.dtype)
    img = nib.Nifti1Image(a, like.affine if affine is None else affine, h)
    if affine is not None: img.set_qform(affine, 1); img.set_sform(affine, 1)
    nib.save(img, path)
P = {"image": src["flair"]}
for k, a in (("labels", seg), ("pred", pred), ("entropy", ent), ("mi", mi)):
    P[k] = os.path.join(T, f"{case}_{k}.nii.gz"); save(P[k], a, seg_img if k in ("labels", "pred") else flair_img)
def run(out, *extra, files=P):
    args = [FIG, out] + [x for k in ("image", "labels", "pred", "entropy", "mi") for x in ("--" + k, files[k])] + list(extra)
    r = subprocess.run(args, capture_output=True, text=True)
    return r.returncode, r.stderr

# ---- the figure at --scale 5 --------------------------------------------------
SC, pw = 5, 64 * 5
out = os.path.join(T, "fig.png")
rc, err = run(out, "--scale", str(SC))
ok(rc == 0 and err == "", f"runs: {rc} {err}")
img = png_read(out)
cw = max(pw, 300) + 32
ok(img.shape == (196 + 64 * SC, 24 + 5 * cw + 64, 3), f"size {img.shape[1]}x{img.shape[0]}")
rc6, _ = run(os.path.join(T, "fig6.png"), "--scale", "6")
w6, h6 = png_size(os.path.join(T, "fig6.png")) if rc6 == 0 else (0, 0)
ok((w6 - img.shape[1], h6 - img.shape[0]) == (5 * 64, 64), f"one more pixel per voxel: +5 panel widths, +1 height ({w6}x{h6})")
def panel(k):
    x0 = 12 + k * (cw + 16) + 16 + (cw - 32 - pw) // 2
    return img[52:52 + pw, x0:x0 + pw]
# radiological: the volume reoriented so that axes run to the patient's Left, Posterior, Superior; rows P, columns L
ornt = nib.orientations.ornt_transform(nib.io_orientation(aff), nib.orientations.axcodes2ornt(("L", "P", "S")))
def shown(vol):
    a = nib.orientations.apply_orientation(vol, ornt)
    zz = Z if nib.io_orientation(aff)[2, 1] > 0 else nz - 1 - Z
    return np.kron(a[:, :, zz].T, np.ones((SC, SC), a.dtype))
sl = flair[:, :, Z]
lo, hi = np.percentile(sl[sl != 0], [0.5, 99.5])
grey = np.round(255 * np.clip((shown(flair) - lo) / (hi - lo), 0, 1))
d = np.abs(panel(0) - grey[:, :, None]).max()
ok(d <= 1, f"FLAIR panel: grey within 1 of the 0.5-99.5 percentile window, max diff {d}")
colour = {1: (230, 40, 40), 2: (40, 200, 60), 4: (250, 220, 0)}
for k, lab in ((1, seg), (2, pred)):
    want = np.repeat(grey[:, :, None], 3, axis=2)
    s = shown(lab)
    for v, c in colour.items(): want[s == v] = c
    d = np.abs(panel(k) - want).max()
    ok(d <= 1, f"{'reference' if k == 1 else 'prediction'} panel: colours over the grey scan, max diff {d}")
# one voxel each way, explicitly: where the reference is 4 and the prediction 2
ij = np.argwhere(moved[:, :, Z])[0]
spot = np.zeros_like(flair); spot[ij[0], ij[1], Z] = 1
r, c = np.argwhere(shown(spot) == 1)[0]
ok(tuple(panel(1)[r, c]) == colour[4] and tuple(panel(2)[r, c]) == colour[2], f"label 4 voxel {tuple(ij)}: enhancing in the reference, oedema in the prediction")
viridis = {0: (68.1, 1.2, 84.0), 0.25: (58.7, 81.9, 139.1), 0.5: (32.7, 144.1, 140.5), 0.75: (92.5, 200.6, 98.6), 1.0: (253.3, 231.1, 36.7)}
for t, (i, j) in zip((0, 0.25, 0.5, 0.75, 1.0), spots):
    spot = np.zeros_like(flair); spot[i, j, Z] = 1
    r, c = np.argwhere(shown(spot) == 1)[0]
    for k in (3, 4):
        d = np.abs(panel(k)[r, c] - viridis[t]).max()
        ok(d <= 2, f"{'entropy' if k == 3 else 'MI'} at t={t}: {tuple(panel(k)[r, c])} vs viridis {viridis[t]}")
ok(tuple(panel(3)[np.unravel_index(np.argmax(shown(ent)), (pw, pw))]) == (253, 231, 37), "the max-entropy voxel has viridis's top colour")
for s in ("slice max 1 nats", "slice max 0.5 nats", "FLAIR", "reference", "prediction", "entropy (nats)", "mutual information (nats)", "enhancing (4)", "oedema (2)"):
    ok(len(find_text(img, s)) == 1, f"text '{s}' drawn once")
mm = round(float(aff[2] @ [(nx - 1) / 2, (ny - 1) / 2, Z, 1]) * 10) / 10 + 0.0
caption = f"{case}: slice {Z} of 0..{nz - 1}, z={mm:+.1f} mm"
ok(len(find_text(img, caption)) == 1, f"caption '{caption}'")

# ---- the default slice is the one with the most tumour ------------------------
dflt, at_z, next_z = (os.path.join(T, f) for f in ("d.png", "z.png", "n.png"))
rc1, _ = run(dflt); rc2, _ = run(at_z, "--z", str(Z)); rc3, _ = run(next_z, "--z", str(Z + 1 if Z + 1 < nz else Z - 1))
ok(rc1 == rc2 == rc3 == 0, "default and --z runs")
ok(open(dflt, "rb").read() == open(at_z, "rb").read(), f"the default slice is {Z}, the one with the most tumour")
ok(open(dflt, "rb").read() != open(next_z, "rb").read(), "another slice gives another figure")
ok(png_size(dflt) == (24 + 5 * 332 + 64, 196 + 256), f"default scale: 256-pixel panels ({png_size(dflt)})")

# ---- an LPS twin of every file gives the same bytes ---------------------------
F = np.array([[-1, 0, 0, nx - 1], [0, -1, 0, ny - 1], [0, 0, 1, 0], [0, 0, 0, 1]], float)
twin = {}
os.makedirs(os.path.join(T, "lps", case))
for k, path in P.items():
    im = nib.load(path)
    twin[k] = os.path.join(T, "lps", case, os.path.basename(path))
    save(twin[k], np.asarray(im.dataobj)[::-1, ::-1, :].copy(), im, im.affine @ F)
ok(nib.aff2axcodes(nib.load(twin["image"]).affine) == ("L", "P", "S"), "the twin is stored LPS")
rc, err = run(os.path.join(T, "lps.png"), "--scale", str(SC), files=twin)
ok(rc == 0 and open(os.path.join(T, "lps.png"), "rb").read() == open(out, "rb").read(), f"the LPS twin's figure is the same bytes {err}")

# ---- BraTS 2023's 3 for enhancing: the same colour; the legend names the values found
b23 = dict(P); b23["labels"] = os.path.join(T, "seg2023.nii.gz"); save(b23["labels"], np.where(seg == 4, 3, seg).astype(seg.dtype), seg_img)
rc, err = run(os.path.join(T, "b23.png"), "--scale", str(SC), files=b23)
i23 = png_read(os.path.join(T, "b23.png")) if rc == 0 else img * 0
ok(len(find_text(i23, "enhancing (3, 4)")) == 1, "legend: enhancing (3, 4) when the reference has 3 and the prediction 4")
ok((i23[52:52 + pw] == img[52:52 + pw]).all(), "3 is drawn as 4 is: the panels are the same pixels")

# ---- refusals: exit 1, one line naming the file, nothing written ----------------
bad = dict(P)
bad["mi"] = os.path.join(T, "short_mi.nii.gz"); save(bad["mi"], mi[:, :, :-1].copy(), flair_img)
shifted = aff.copy(); shifted[0, 3] += 5
bad_aff = dict(P); bad_aff["pred"] = os.path.join(T, "shifted_pred.nii.gz"); save(bad_aff["pred"], pred, seg_img, shifted)
missing = dict(P); missing["labels"] = os.path.join(T, "no_such_seg.nii.gz")
cases = [("mismatched dims", bad, [], bad["mi"]), ("shifted affine", bad_aff, [], bad_aff["pred"]),
         ("z out of range", P, ["--z", str(nz)], P["image"]), ("missing file", missing, [], missing["labels"])]
for what, files, extra, name in cases:
    o = os.path.join(T, "refused", "out.png")
    os.makedirs(os.path.dirname(o), exist_ok=True)
    rc, err = run(o, *extra, files=files)
    ok(rc == 1, f"{what}: exit {rc}")
    ok(err.count("\n") == 1 and err.startswith("paper_figure: ") and name in err, f"{what}: one line naming {name}: {err!r}")
    ok(os.listdir(os.path.dirname(o)) == [], f"{what}: nothing written: {os.listdir(os.path.dirname(o))}")
before = open(P["mi"], "rb").read()
rc, err = run(P["mi"])
ok(rc == 1 and P["mi"] in err and open(P["mi"], "rb").read() == before, f"OUT.png = an input: refused, the input kept: {err!r}")
keep = os.path.join(T, "keep.png")
open(keep, "wb").write(b"old")
rc, _ = run(keep, "--z", str(nz))
ok(rc == 1 and open(keep, "rb").read() == b"old", "a refused run leaves an existing OUT.png as it was")
for what, args in (("no --mi", [FIG, os.path.join(T, "u.png"), "--image", P["image"]]), ("--scale 0", [FIG, os.path.join(T, "u.png"), "--scale", "0"]),
                   ("unknown option", [FIG, os.path.join(T, "u.png"), "--colour", "x"]), ("--z -1", [FIG, os.path.join(T, "u.png"), "--z", "-1"])):
    r = subprocess.run(args, capture_output=True, text=True)
    ok(r.returncode == 2 and r.stderr.startswith("paper_figure: "), f"usage error {what}: exit {r.returncode}")
ok(not os.path.exists(os.path.join(T, "u.png")), "usage errors write nothing")
print(f"paper_figure: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
