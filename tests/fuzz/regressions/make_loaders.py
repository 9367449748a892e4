#!/usr/bin/python3
"""make_loaders.py [DIR]: writes the loader regression inputs of issue 10
(the outside fuzzing campaign's npy, NIfTI, card and .vbseg findings) into
DIR/{npy,nifti,card,vbseg}/ (default: this script's folder). The bytes are
committed too; tests/loaders_regress.sh regenerates them and checks that the
committed files are these bytes, then replays each through the vbseg command.
Built by hand (struct, zlib, a minimal protobuf encoder): no third-party
module is needed."""
import gzip, os, struct, sys, zlib

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))


def put(sub, name, data):
    os.makedirs(os.path.join(OUT, sub), exist_ok=True)
    with open(os.path.join(OUT, sub, name), "wb") as f:
        f.write(data)


# ---- npy: a 128-byte file whose header declares (1, 1331985105) float32 (5.3 GB)
def npy(shape_text, descr="<f4", data=b""):
    h = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape_text)
    h += " " * ((64 - (10 + len(h) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode() + data

put("npy", "huge-shape-tiny-file.npy", npy("(1, 1331985105)"))
assert len(npy("(1, 1331985105)")) == 128
# the same with one trailing float: also not the declared size
put("npy", "shape-longer-than-data.npy", npy("(2, 3)", data=struct.pack("<4f", 1, 2, 3, 4)))


# ---- NIfTI-1 single file: 348-byte header + 4 bytes of extension flag, then data
def nifti1(dims, vox_offset, datatype=16, bitpix=32, data=b""):
    h = bytearray(348)
    struct.pack_into("<i", h, 0, 348)
    dim = [len(dims)] + list(dims) + [1] * (7 - len(dims))
    struct.pack_into("<8h", h, 40, *dim)
    struct.pack_into("<hh", h, 70, datatype, bitpix)
    struct.pack_into("<8f", h, 76, 1, 1, 1, 1, 1, 1, 1, 1)  # pixdim
    struct.pack_into("<f", h, 108, vox_offset)
    struct.pack_into("<f", h, 112, 1.0)  # scl_slope
    h[344:348] = b"n+1\0"
    return bytes(h) + b"\0\0\0\0" + data

# vox_offset 1e30 is finite, but (int64_t)1e30 is undefined behaviour
put("nifti", "vox-offset-1e30.nii", nifti1((2, 2, 2), 1e30, data=bytes(32)))
put("nifti", "vox-offset-nan.nii", nifti1((2, 2, 2), float("nan"), data=bytes(32)))
put("nifti", "vox-offset-minus-1e30.nii", nifti1((2, 2, 2), -1e30, data=bytes(32)))
# 32767^2 x 2 float32 voxels (8 GiB) declared, 16 bytes present, gzipped: must not allocate the 8 GiB
put("nifti", "huge-dims-tiny-file.nii.gz", gzip.compress(nifti1((32767, 32767, 2), 352, data=bytes(16)), mtime=0))


# ---- model cards (vbseg convert --card): truncated and out-of-range seeds
put("card", "seed-truncated.json", b'{"seed": 1')
put("card", "seed-truncated-string.json", b'{"description": "abc')
put("card", "seed-float-1e300.json", b'{"seed": 1e300}')
put("card", "seed-float-nan.json", b'{"seed": NaN}')
put("card", "seed-integer-too-big.json", b'{"seed": 99999999999999999999}')
put("card", "seed-negative.json", b'{"seed": -1}')


# ---- .vbseg: a minimal protobuf encoder for the header
def varint(x):
    x &= (1 << 64) - 1
    b = bytearray()
    while True:
        if x < 0x80:
            b.append(x)
            return bytes(b)
        b.append(x & 0x7F | 0x80)
        x >>= 7

def fld(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload  # wire 2

def s(num, text):
    return fld(num, 2, text.encode())

def vbseg(attr):
    dim = lambda v: fld(2, 2, fld(1, 0, v))
    vi = lambda name, dims: s(1, name) + b"".join(dim(d) for d in dims)
    node = s(1, "relu") + s(2, "Relu") + s(3, "x") + s(4, "y") + fld(5, 2, attr)
    graph = s(1, "g") + fld(2, 2, node) + fld(3, 2, vi("x", (1, 1, 2, 2))) + fld(4, 2, vi("y", (1, 1, 2, 2)))
    header = fld(1, 0, 17) + fld(2, 2, graph)
    pre = b"\x89VBS\r\n\x1a\n" + struct.pack("<HHIQQ", 1, 0, zlib.crc32(header), len(header), 0)
    body = pre + header
    return body + bytes((64 - len(body) % 64) % 64)

# an attribute of type INTS (4) / FLOATS (5) / STRING (3) with no values:
# protobuf-c hands back a NULL array of length 0
put("vbseg", "empty-ints-attribute.vbseg", vbseg(s(1, "axes") + fld(2, 0, 4)))
put("vbseg", "empty-floats-attribute.vbseg", vbseg(s(1, "scales") + fld(2, 0, 5)))
put("vbseg", "empty-string-attribute.vbseg", vbseg(s(1, "mode") + fld(2, 0, 3)))
