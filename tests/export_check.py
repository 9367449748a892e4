"""export_check.py: the comparisons of tests/export.sh (NumPy; /usr/bin/python3).
  close A.npy B.npy                 max |A - B| <= 1e-4 * (1 + max |B|) (float32 sums reordered)
  mc ORTDIR VBSDIR N                ORT's N-run mean/var of the probabilities against vbseg's prob_mean/prob_var
                                    of N samples, within Z_MAX = 6 standard errors per value (printed)
  mc-differs ORTDIR VBSDIR N        the same check must FAIL (the negative control)
  card FILE.onnx OUT.json           metadata_props read by a protobuf wire parser of its own: writes
                                    "vbseg.card" to OUT.json, prints every key=value
  io FILE.onnx                      the graph's inputs and outputs, as `vbseg info` prints them
  zscore IN.npy OUT.npy             each channel's non-zero voxels to mean 0, sd 1 (vbseg's normalisation)
  softplus-probe FILE.onnx DIR RHO  the sampling export's sigma of one weight as an output, and ONNX's
                                    Softplus op alone over rho in -30..30 (see softplus_probe)
  relerr GOT.npy REF.npy LABEL MAX  max relative error <= MAX
"""
import json
import sys

import numpy as np


def varint(b, i):
    v = s = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return v, i


def packed(b, lo, hi):
    """the varints of a packed repeated field's payload b[lo:hi]"""
    out = []
    while lo < hi:
        v, lo = varint(b, lo)
        out.append(v)
    return out


def wire(b, lo, hi):
    """The protobuf fields of b[lo:hi]: (field, a, e, s0, s1) with the payload b[a:e] of a
    length-delimited field (a = the value and e = None for a varint) and s0..s1 the
    whole field, tag included."""
    i = lo
    while i < hi:
        s0 = i
        key, i = varint(b, i)
        f, t = key >> 3, key & 7
        if t == 0:
            v, i = varint(b, i)
            yield f, v, None, s0, i
        elif t == 2:
            n, i = varint(b, i)
            yield f, i, i + n, s0, i + n
            i += n
        elif t in (1, 5):
            i += 8 if t == 1 else 4
            yield f, None, None, s0, i
        else:
            raise ValueError("wire type %d" % t)


def fields_of(b, lo, hi, field):
    return [(a, e) for f, a, e, _s0, _s1 in wire(b, lo, hi) if f == field]


def close(a, b):
    a, b = np.load(a), np.load(b)
    if a.shape != b.shape:
        return False, "shapes %s vs %s" % (a.shape, b.shape)
    d = float(np.abs(a.astype(np.float64) - b).max())
    tol = 1e-4 * (1 + float(np.abs(b).max()))
    return d <= tol, "max diff %.3g (tolerance %.3g)" % (d, tol)


Z_MAX = 6.0


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
    # the bound: Bonferroni over the 2 M values for a family-wise false alarm of 1e-3 would be
    # |z| <= 5.3 for normal z at M = 1536; the variance's z is heavier-tailed (its standard
    # error comes from an estimated 4th moment; 5.07 was seen once in a few runs), hence 6
    ok = zm.max() <= Z_MAX and zv.max() <= Z_MAX
    return ok, "%d values: mean max z %.2f (rms %.2f), var max z %.2f (rms %.2f); mean var %.3g (ORT) vs %.3g (vbseg)" % (
        om.size, zm.max(), np.sqrt((zm ** 2).mean()), zv.max(), np.sqrt((zv ** 2).mean()), ov.mean(), vv.mean())


def metadata(path):
    """ModelProto field 14 (metadata_props: key 1, value 2), read from the wire."""
    b = open(path, "rb").read()
    out = {}
    for a, e in fields_of(b, 0, len(b), 14):
        kv = {f: b[aa:ee].decode() for f, aa, ee, _s0, _s1 in wire(b, a, e)}
        out[kv.get(1, "")] = kv.get(2, "")
    return out


def enc_varint(v):
    out = bytearray()
    while True:
        c = v & 0x7F
        v >>= 7
        out.append(c | (0x80 if v else 0))
        if not v:
            return bytes(out)


def enc(field, payload):
    """a length-delimited field (payload bytes) or a varint (int)"""
    if isinstance(payload, int):
        return enc_varint(field << 3) + enc_varint(payload)
    if isinstance(payload, str):
        payload = payload.encode()
    return enc_varint(field << 3 | 2) + enc_varint(len(payload)) + payload


def value_info(name, dims):
    """ValueInfoProto: float tensor, dims (None: no shape)"""
    tt = enc(1, 1)
    if dims is not None:
        tt += enc(2, b"".join(enc(1, enc(1, d)) for d in dims))
    return enc(1, name) + enc(2, enc(1, tt))


def softplus_probe(model, outdir, rho_value):
    """Writes outdir/sigma.onnx: the exported sampling model (made with every rho =
    rho_value) with "vbs::sigma:NAME" of its first variational weight as an output,
    and sigma_model_ref.npy: softplus(rho_value) in float64 in that weight's shape;
    and outdir/softplus_op.onnx: ONNX's Softplus op alone on a 2001-vector "rho",
    with rho.npy (-30..30) and sigma_ref.npy (their softplus in float64)."""
    b = open(model, "rb").read()
    top = list(wire(b, 0, len(b)))
    ga, ge = fields_of(b, 0, len(b), 7)[0]
    inits, nodes = {}, []
    for f, a, e, _s0, _s1 in wire(b, ga, ge):
        if f == 5:  # TensorProto: dims 1, name 8
            name, dims = None, []
            for ff, aa, ee, _s0, _s1 in wire(b, a, e):
                if ff == 8:
                    name = b[aa:ee].decode()
                elif ff == 1 and ee is None:
                    dims.append(aa)
                elif ff == 1:  # packed dims
                    dims += packed(b, aa, ee)
            inits[name] = dims
        elif f == 1:  # NodeProto: input 1, output 2, op_type 4
            nd = {"in": [], "out": [], "op": ""}
            for ff, aa, ee, _s0, _s1 in wire(b, a, e):
                if ff == 1:
                    nd["in"].append(b[aa:ee].decode())
                elif ff == 2:
                    nd["out"].append(b[aa:ee].decode())
                elif ff == 4:
                    nd["op"] = b[aa:ee].decode()
            nodes.append(nd)
    weight = sorted(n[len("vbs::mu:"):] for n in inits if n.startswith("vbs::mu:"))[0]
    # the rho: the input of the RandomNormalLike that draws this weight's eps
    rho = [n["in"][0] for n in nodes if n["op"] == "RandomNormalLike" and n["out"][0].startswith("vbs::%s:" % weight)][0]
    dims = inits[rho]
    graph = b[ga:ge] + enc(12, value_info("vbs::sigma:" + weight, None))
    head = b"".join(b[s0:s1] for f, _a, _e, s0, s1 in top if f != 7)
    open(outdir + "/sigma.onnx", "wb").write(head + enc(7, graph))
    sp = lambda r: np.maximum(r, 0) + np.log1p(np.exp(-np.abs(r)))
    np.save(outdir + "/sigma_model_ref.npy", np.full(dims, sp(float(np.float32(rho_value)))))
    node = enc(1, "rho") + enc(2, "sigma") + enc(4, "Softplus")
    g = enc(1, node) + enc(2, "softplus") + enc(11, value_info("rho", [2001])) + enc(12, value_info("sigma", [2001]))
    open(outdir + "/softplus_op.onnx", "wb").write(enc(1, 8) + enc(8, enc(1, "") + enc(2, 17)) + enc(7, g))
    r = np.linspace(-30, 30, 2001).astype(np.float32)
    np.save(outdir + "/rho.npy", r)
    np.save(outdir + "/sigma_ref.npy", sp(r.astype(np.float64)))


def relerr(got, ref, what):
    g, r = np.load(got).astype(np.float64).ravel(), np.load(ref).ravel()
    e = np.abs(g - r) / r
    k = int(e.argmax())
    return float(e.max()), "%s: max relative error %.3g against softplus in double (worst: %.7g for %.7g)" % (what, e.max(), g[k], r[k])


def io(path):
    """GraphProto's inputs (11) and outputs (12): 'input NAME (d, d, ...)' lines as
    `vbseg info` prints them (dim_value or dim_param)."""
    b = open(path, "rb").read()
    lines = []

    def first(lo, hi, field):
        return fields_of(b, lo, hi, field)

    ga, ge = first(0, len(b), 7)[0]
    for f, a, e, _s0, _s1 in wire(b, ga, ge):
        if f not in (11, 12):
            continue
        name = [b[x:y].decode() for x, y in first(a, e, 1)][0]
        dims = []
        for ta, te in first(a, e, 2):  # TypeProto.tensor_type (1).shape (2).dim (1)
            for tta, tte in first(ta, te, 1):
                for sa, se in first(tta, tte, 2):
                    for da, de in first(sa, se, 1):
                        for ff, x, y, _s0, _s1 in wire(b, da, de):
                            dims.append(str(x) if ff == 1 else b[x:y].decode())
        lines.append("%s %s (%s)" % ("input" if f == 11 else "output", name, ", ".join(dims)))
    return lines


def main():
    cmd = sys.argv[1]
    if cmd == "close":
        ok, msg = close(sys.argv[2], sys.argv[3])
    elif cmd in ("mc", "mc-differs"):
        ok, msg = mc(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        if cmd == "mc-differs":
            ok = not ok
    elif cmd == "softplus-probe":
        softplus_probe(sys.argv[2], sys.argv[3], float(sys.argv[4]))
        ok, msg = True, ""
    elif cmd == "relerr":  # GOT.npy REF.npy LABEL MAX
        e, msg = relerr(sys.argv[2], sys.argv[3], sys.argv[4])
        ok = e <= float(sys.argv[5])
    elif cmd == "io":  # FILE.onnx: prints the graph's inputs and outputs
        print("\n".join(io(sys.argv[2])))
        ok, msg = True, ""
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
