"""export_check.py: the comparisons of tests/export.sh (NumPy; /usr/bin/python3).
  close A.npy B.npy                 max |A - B| <= 1e-4 * (1 + max |B|) (float32 sums reordered)
  mc ORTDIR VBSDIR N                ORT's N-run mean/var of the probabilities against vbseg's prob_mean/prob_var
                                    of N samples, within 5 standard errors per voxel (printed)
  mc-differs ORTDIR VBSDIR N        the same check must FAIL (the negative control)
  card FILE.onnx OUT.json           metadata_props read by a protobuf wire parser of its own: writes
                                    "vbseg.card" to OUT.json, prints every key=value
  zscore IN.npy OUT.npy             each channel's non-zero voxels to mean 0, sd 1 (vbseg's normalisation)
"""
import json
import sys

import numpy as np


def close(a, b):
    a, b = np.load(a), np.load(b)
    if a.shape != b.shape:
        return False, "shapes %s vs %s" % (a.shape, b.shape)
    d = float(np.abs(a.astype(np.float64) - b).max())
    tol = 1e-4 * (1 + float(np.abs(b).max()))
    return d <= tol, "max diff %.3g (tolerance %.3g)" % (d, tol)


def mc(odir, vdir, n):
    om, ov, o4 = (np.load("%s/%s.npy" % (odir, k)).astype(np.float64) for k in ("mean", "var", "m4"))
    vm, vv = (np.load("%s/%s.npy" % (vdir, k)).astype(np.float64).reshape(om.shape) for k in ("prob_mean", "prob_var"))
    # standard errors of the difference of two independent N-sample estimates:
    # mean: sqrt((var_a + var_b) / N); population variance: sqrt(2 (m4 - var^2) / N), m4 from ORT's runs.
    # Floors 1e-6 / 1e-7 cover voxels with no spread (float rounding of p near 0 or 1).
    se_m = np.sqrt((ov + vv) / n) + 1e-6
    se_v = np.sqrt(2 * np.maximum(o4 - ov ** 2, 0) / n) + 1e-7
    zm = np.abs(om - vm) / se_m
    zv = np.abs(ov - vv) / se_v
    ok = zm.max() <= 5 and zv.max() <= 5
    return ok, "%d values: mean max z %.2f (rms %.2f), var max z %.2f (rms %.2f); mean var %.3g (ORT) vs %.3g (vbseg)" % (
        om.size, zm.max(), np.sqrt((zm ** 2).mean()), zv.max(), np.sqrt((zv ** 2).mean()), ov.mean(), vv.mean())


def metadata(path):
    """ModelProto field 14 (metadata_props: key 1, value 2), read from the wire."""
    b = open(path, "rb").read()

    def varint(i):
        v = s = 0
        while True:
            c = b[i]
            i += 1
            v |= (c & 0x7F) << s
            s += 7
            if c < 0x80:
                return v, i

    def fields(lo, hi):
        i = lo
        while i < hi:
            key, i = varint(i)
            f, t = key >> 3, key & 7
            if t == 0:
                v, i = varint(i)
                yield f, v, None
            elif t == 2:
                n, i = varint(i)
                yield f, i, i + n
                i += n
            elif t == 5:
                i += 4
            elif t == 1:
                i += 8
            else:
                raise ValueError("wire type %d" % t)

    out = {}
    for f, a, e in fields(0, len(b)):
        if f == 14:
            kv = {ff: b[aa:ee].decode() for ff, aa, ee in fields(a, e)}
            out[kv.get(1, "")] = kv.get(2, "")
    return out


def main():
    cmd = sys.argv[1]
    if cmd == "close":
        ok, msg = close(sys.argv[2], sys.argv[3])
    elif cmd in ("mc", "mc-differs"):
        ok, msg = mc(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        if cmd == "mc-differs":
            ok = not ok
    elif cmd == "card":
        md = metadata(sys.argv[2])
        for k in sorted(md):
            print("%s=%s" % (k, md[k]))
        json.dump(json.loads(md["vbseg.card"]), open(sys.argv[3], "w"))
        ok, msg = True, ""
    elif cmd == "zscore":
        x = np.load(sys.argv[2]).astype(np.float64)
        for c in range(x.shape[1]):
            v = x[:, c]
            nz = v != 0
            v[nz] = (v[nz] - v[nz].mean()) / v[nz].std()
        np.save(sys.argv[3], x.astype(np.float32))
        ok, msg = True, ""
    else:
        raise SystemExit("unknown command " + cmd)
    if msg:
        print(msg)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
