#!/usr/bin/python3
"""safetensors.py BUILD_DIR: converters/safetensors.c against independent
oracles, through BUILD_DIR/tests/st_tool (tests/st_tool.c).

The `safetensors` package is not in Debian 12 (not importable by
/usr/bin/python3), so the files are made by a writer written here from the
format's specification (8-byte little-endian header length, JSON header,
data buffer), and the C writer's output is parsed by a reader written here
from the same text. Values are made and converted by NumPy (F64 -> F32,
F16 -> F32) and torch (BF16 -> F32), and compared bit for bit (NaN with
NaN). Each hostile file must be refused with its expected one-line message.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import torch

B = os.path.abspath(sys.argv[1])
TOOL = os.path.join(B, "tests", "st_tool")
T = tempfile.mkdtemp(prefix="vbs-st-")
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL", what)


# ---- an independent writer, from the spec ----------------------------------

NP = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": "<i2", "U16": "<u2", "I32": "<i4", "U32": "<u4",
      "I64": "<i8", "U64": "<u8", "F16": "<f2", "F32": "<f4", "F64": "<f8"}


def raw(dtype, values, shape):
    """(bytes, float32 oracle or None) of values in dtype"""
    if dtype == "BF16":
        t = torch.tensor(values, dtype=torch.float32).reshape(shape).to(torch.bfloat16)
        return t.view(torch.int16).numpy().astype("<i2").tobytes(), t.to(torch.float32).numpy().ravel()
    a = np.array(values).astype(NP[dtype]).reshape(shape)
    if dtype in ("F16", "F64"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # F64 out of float range becomes Inf, as the reader must make it
            ref = a.astype(np.float32).ravel()
        return a.tobytes(), ref
    return a.tobytes(), (a.astype(np.float32).ravel() if dtype == "F32" else None)


def st_file(tensors, metadata=None, gaps=None, order=None, pad=True, header_extra=b""):
    """tensors: [(name, dtype, shape, bytes)]; the data laid out in `order` (indices; default header order)
    so that header order and offset order can differ; odd-sized tensors leave later ones unaligned"""
    order = order if order is not None else range(len(tensors))
    offs, buf = {}, b""
    for i in order:
        name, dtype, shape, data = tensors[i]
        offs[i] = (len(buf), len(buf) + len(data))
        buf += data
    h = {}
    if metadata is not None:
        h["__metadata__"] = metadata
    for i, (name, dtype, shape, data) in enumerate(tensors):
        h[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": list(offs[i])}
    hb = json.dumps(h).encode() + header_extra
    if pad:
        hb += b" " * (-len(hb) % 8)
    return struct.pack("<Q", len(hb)) + hb + buf


def put(name, data):
    p = os.path.join(T, name)
    with open(p, "wb") as f:
        f.write(data)
    return p


def run_read(path):
    vals = path + ".values"
    r = subprocess.run([TOOL, "read", path, vals], capture_output=True, text=True)
    return r.returncode, r.stdout, (np.fromfile(vals, dtype="<f4") if r.returncode == 0 else None)


def parse_listing(out):
    lines = out.splitlines()
    meta = lines[1][5:]
    ts = []
    for ln in lines[2:]:
        f = ln.split()
        name = bytes.fromhex(f[1].rstrip("-")).decode()
        nd = int(f[3])
        ts.append((name, f[2], tuple(int(x) for x in f[4:4 + nd]), int(f[4 + nd]), f[5 + nd] == "1"))
    return meta, ts


def same_bits(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a.shape == b.shape and (a.view(np.uint32) == b.view(np.uint32)).all()


# ---- every dtype, scalars, empty tensors, unaligned offsets, metadata --------

rng = np.random.default_rng(11)
special = [0.0, -0.0, 1.0, -2.5, 65504.0, 6.1e-5, 5.96e-8, 3e-6, -1e-7, float("inf"), float("-inf"), float("nan"), 1e-3, 300.0]
tensors, oracle = [], []


def add(name, dtype, values, shape):
    data, ref = raw(dtype, values, shape)
    tensors.append((name, dtype, shape, data))
    oracle.append((name, dtype, shape, ref))


add("enc.0.mu_weight", "F32", rng.standard_normal(24).tolist() + special[:6], (2, 3, 5))
add("u8.odd", "U8", [1, 2, 3], (3,))  # 3 bytes: every tensor after it in offset order is unaligned
add("half", "F16", special + rng.standard_normal(10).tolist(), (24,))
add("bf", "BF16", special + [1e30, -3.3e38, 1.00390625, 1.0078125] + rng.standard_normal(6).tolist(), (4, 6))
add("dbl", "F64", special + [2.0 ** 128 - 2.0 ** 103, 2.0 ** 128 - 2.0 ** 103 - 2.0 ** 80, -(2.0 ** 128 - 2.0 ** 103), 1e39, -1e39, 3.4028235e38, 3.40282356e38, 3.4028236e38, 1e-46, 2e-45, 1.5e-45] +
    rng.standard_normal(1).tolist(), (26,))
add("scalar64", "F64", [3.25], ())
add("scalar", "F32", [-7.5], ())
add("empty", "F32", [], (0, 3))
add("empty16", "F16", [], (4, 0))
add("steps", "I64", [12], ())
add("flags", "BOOL", [1, 0, 1], (3,))
for dt in ("I8", "I16", "U16", "I32", "U32", "U64"):
    add("int_" + dt, dt, [1, 2], (2, 1))
meta = {"format": "pt", "vbseg card": json.dumps({"labels": [0, 1]}), "ünï": "códe"}
order = [4, 1, 2, 0, 7, 3, 5, 8, 6] + list(range(9, len(tensors)))  # offset order differs from header order
path = put("all.safetensors", st_file(tensors, meta, order=order))
rc, out, vals = run_read(path)
check(rc == 0, "all dtypes: read: %s" % out.strip())
if rc == 0:
    m, ts = parse_listing(out)
    check(json.loads(m) == meta, "metadata kept: %s" % m)
    check([t[0] for t in ts] == [t[0] for t in oracle], "header order kept: %s" % [t[0] for t in ts])
    at = 0
    for (name, dtype, shape, numel, has), (oname, odt, oshape, ref) in zip(ts, oracle):
        n = int(np.prod(oshape))
        check(dtype == odt and shape == tuple(oshape) and numel == n, "%s: %s %s %d" % (name, dtype, shape, numel))
        check(has == (ref is not None and n > 0), "%s: values present only for float dtypes" % name)
        if has:
            got = vals[at:at + n]
            at += n
            check(same_bits(got, ref), "%s (%s) values: got %s want %s" % (name, dtype, got[:8], ref[:8]))
    check(at == len(vals), "no extra values")

# the header need not be padded, and data need not be aligned at all
p2 = put("unpadded.safetensors", st_file(tensors[2:5], pad=False, header_extra=b" "))
rc, out, vals = run_read(p2)
check(rc == 0 and same_bits(vals, np.concatenate([o[3] for o in oracle[2:5]])), "unpadded header (odd length): %s" % out)
# no tensors at all, and metadata alone
rc, out, _ = run_read(put("none.safetensors", st_file([])))
check(rc == 0 and out.startswith("ok 0\nmeta -"), "empty file {}: %s" % out)
rc, out, _ = run_read(put("meta-only.safetensors", st_file([], {"a": "b"})))
check(rc == 0 and "meta {\"a\":\"b\"}" in out, "metadata only: %s" % out)

# ---- the writer, read back by an independent parser and by the C reader ----------


def parse(data):
    """a reader from the spec, for the C writer's output"""
    n = struct.unpack("<Q", data[:8])[0]
    h = json.loads(data[8:8 + n].decode())
    buf = data[8 + n:]
    return n, data[8:8 + n], h, buf


out_path = os.path.join(T, "written.safetensors")
wmeta = json.dumps({"vbseg": "1.2", "naming": "bayesian-torch", "q\"uote": "\\ \n"})
r = subprocess.run([TOOL, "copy", path, out_path, wmeta], capture_output=True, text=True)
check(r.returncode == 0, "copy: %s" % r.stdout)
if r.returncode == 0:
    data = open(out_path, "rb").read()
    n, hb, h, buf = parse(data)
    core = hb.rstrip(b" ")
    check(n % 8 == 0 and n == (len(core) + 7) // 8 * 8, "header padded with spaces to the next multiple of 8 (%d)" % n)
    check(h.get("__metadata__") == json.loads(wmeta), "metadata written: %s" % h.get("__metadata__"))
    floats = [o for o in oracle if o[1] in ("F32", "F16", "BF16", "F64")]
    names = [k for k in h if k != "__metadata__"]
    check(names == [o[0] for o in floats], "floats written, in order, others skipped: %s" % names)
    at = 0
    for name, dt, shape, ref in floats:
        e = h.get(name, {})
        sz = int(np.prod(shape)) * 4
        check(e.get("dtype") == "F32" and e.get("shape") == list(shape) and e.get("data_offsets") == [at, at + sz],
              "%s header entry %s" % (name, e))
        check(same_bits(np.frombuffer(buf[at:at + sz], "<f4"), ref), "%s written values" % name)
        at += sz
    check(at == len(buf), "buffer filled exactly (%d of %d)" % (at, len(buf)))
    rc, out2, vals2 = run_read(out_path)
    check(rc == 0 and same_bits(vals2, np.concatenate([f[3] for f in floats if f[3].size])), "C reader reads the C writer's file")
    # torch's own F16 -> F32 of the source bytes, a second oracle for what was written
    hsrc = tensors[2][3]
    e = h["half"]["data_offsets"]
    check(same_bits(np.frombuffer(buf[e[0]:e[1]], "<f4"),
                    torch.frombuffer(bytearray(hsrc), dtype=torch.float16).to(torch.float32).numpy()), "F16 as torch converts it")
# without metadata
r = subprocess.run([TOOL, "copy", p2, out_path], capture_output=True, text=True)
n, hb, h, buf = parse(open(out_path, "rb").read())
check(r.returncode == 0 and "__metadata__" not in h and list(h) == ["half", "bf", "dbl"], "no metadata: %s" % list(h))
# refusals by the writer: bad metadata, duplicate names; the old file is kept
before = open(out_path, "rb").read()
for bad, msg in (('{"a": 1}', "metadata must be a JSON object of string values"), ('["a"]', "metadata must be a JSON object of string values"),
                 ('{"a": "b", "a": "c"}', "metadata is not valid JSON: duplicate object key")):
    r = subprocess.run([TOOL, "copy", p2, out_path, bad], capture_output=True, text=True)
    check(r.returncode == 1 and r.stdout.strip() == "error VBS_ERR_ARG: %s: %s" % (out_path, msg) or
          (msg.endswith("key") and r.returncode == 1 and msg in r.stdout), "writer refuses %s: %s" % (bad, r.stdout.strip()))
r = subprocess.run([TOOL, "dup", out_path], capture_output=True, text=True)
check(r.stdout.strip() == "error VBS_ERR_ARG: %s: tensor 'w': name given twice" % out_path, "duplicate names: %s" % r.stdout)
check(open(out_path, "rb").read() == before and not [f for f in os.listdir(T) if ".tmp." in f], "refusals leave the file")

# ---- hostile files, each refused with its one-line message ----------------------

f32 = np.arange(6, dtype="<f4").tobytes()


def hdr(h, data=b"", n=None):
    hb = h if isinstance(h, bytes) else json.dumps(h).encode()
    return struct.pack("<Q", len(hb) if n is None else n) + hb + data


def ent(dtype, shape, a, b):
    return {"dtype": dtype, "shape": shape, "data_offsets": [a, b]}


hostile = [
    ("short", b"\x01\x00", "2 bytes, too short for a safetensors header length"),
    ("header-past-end", hdr(b'{"a":{}}', n=9), "header length 9 past the end of the file (16 bytes)"),
    ("header-over-100MB", hdr(b"{}", n=100000001), "header length 100000001 over the 100 MB limit"),
    ("header-2^64-1", hdr(b"{}", n=2 ** 64 - 1), "header length 18446744073709551615 over the 100 MB limit"),
    ("non-object", hdr(b"[1, 2]"), "header is not a JSON object"),
    ("number", hdr(b"12345678"), "header is not a JSON object"),
    ("duplicate-key", hdr(b'{"w":' + json.dumps(ent("F32", [6], 0, 24)).encode() + b',"w":' +
                          json.dumps(ent("F32", [6], 0, 24)).encode() + b"}", f32),
     "header is not valid JSON: column 64: duplicate object key near '\"w\"'"),
    ("shape-2^64", hdr({"w": ent("U8", [2 ** 32, 2 ** 32], 0, 0)}), "tensor 'w': shape's element count overflows 64 bits"),
    ("shape-2^64-times-size", hdr({"w": ent("F32", [2 ** 31, 2 ** 31], 0, 0)}),
     "tensor 'w': shape's element count overflows 64 bits"),
    ("overlap", hdr({"a": ent("F32", [4], 0, 16), "b": ent("F32", [2], 8, 16)}, f32[:16]),
     "tensor 'b': data_offsets [8, 16] overlap the previous tensor's, which end at 16"),
    ("hole", hdr({"a": ent("F32", [2], 0, 8), "b": ent("F32", [2], 16, 24)}, f32),
     "tensor 'b': data_offsets [16, 24] leave a hole after the previous tensor's, which end at 8"),
    ("not-from-0", hdr({"a": ent("F32", [2], 8, 16), "b": ent("F32", [2], 16, 24)}, f32),
     "tensor 'a': data_offsets [8, 16]: the data do not start at 0"),
    ("trailing", hdr({"a": ent("F32", [6], 0, 24)}, f32 + b"\0"), "1 trailing bytes after the tensors' data (which end at 24)"),
    ("past-end", hdr({"a": ent("F32", [6], 0, 24)}, f32[:20]),
     "tensor 'a': data_offsets [0, 24] past the end of the data (20 bytes)"),
    ("size-mismatch", hdr({"a": ent("F16", [6], 0, 24)}, f32),
     "tensor 'a': data_offsets [0, 24] span 24 bytes, but 6 elements of F16 take 12"),
    ("end-before-begin", hdr({"a": ent("F32", [0], 8, 0)}), "tensor 'a': data_offsets [8, 0] end before they begin"),
    ("unknown-dtype", hdr({"a": ent("F8_E4M3", [6], 0, 6)}, f32[:6]), "tensor 'a': unknown dtype 'F8_E4M3'"),
    ("meta-non-string", hdr({"__metadata__": {"epoch": 3}}), "__metadata__ value of 'epoch' is not a string"
                                                               " (a tensor may not be named __metadata__)"),
    ("meta-is-tensor", hdr({"__metadata__": ent("F32", [6], 0, 24)}, f32),
     "__metadata__ value of 'shape' is not a string (a tensor may not be named __metadata__)"),
    ("meta-array", hdr({"__metadata__": ["a"]}), "__metadata__ must be an object of strings (a tensor may not be named"
                                                 " __metadata__)"),
    ("invalid-utf8", hdr(b'{"\xff\xfe":' + json.dumps(ent("F32", [6], 0, 24)).encode() + b"}", f32),
     "header is not valid JSON: column 2: unable to decode byte 0xff near '\"'"),
    ("invalid-json", hdr(b'{"a": {"dtype": "F32",}}'), "header is not valid JSON: column 23: string or '}' expected near '}'"),
    ("nul-padding", hdr(b'{}\0\0\0\0\0\0'), "header is not valid JSON: a NUL byte at column 3"),
    ("negative-dim", hdr({"a": ent("F32", [-1], 0, 0)}), "tensor 'a': shape must be an array of non-negative integers"),
    ("float-offset", hdr({"a": {"dtype": "F32", "shape": [0], "data_offsets": [0.0, 0]}}),
     "tensor 'a': data_offsets must be [begin, end], non-negative integers"),
    ("extra-field", hdr({"a": dict(ent("F32", [0], 0, 0), dtypes="F32")}), "tensor 'a': unknown field 'dtypes'"),
    ("missing-field", hdr({"a": {"dtype": "F32", "shape": [0]}}), "tensor 'a': missing field 'data_offsets'"),
    ("control-bytes-in-name", hdr({"a\nb\x01": ent("Q8", [0], 0, 0)}), "tensor 'a\\nb\\x01': unknown dtype 'Q8'"),
    ("too-many-dims", hdr({"a": ent("F32", [1] * 9, 0, 4)}, f32[:4]), "tensor 'a': 9 dims, more than 8"),
]
for name, data, msg in hostile:
    p = put(name + ".safetensors", data)
    rc, out, _ = run_read(p)
    got = out.strip()
    want_tail = "%s: %s" % (p, msg)
    ok = rc == 1 and got.startswith("error VBS_ERR_") and got.endswith(want_tail) and "\n" not in got
    check(ok, "%s: got '%s', want '...%s'" % (name, got, want_tail))

print("safetensors: %d passed, %d failed" % (passed, failed))
if not failed:
    subprocess.run(["rm", "-rf", T])
sys.exit(1 if failed else 0)
