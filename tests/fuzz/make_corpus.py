#!/usr/bin/python3
"""make_corpus.py BUILD_DIR [TARGET...]: writes the seed corpora of the fuzz targets (all, or
the targets named) into tests/fuzz/corpus/<target>/, small valid files of each input kind
(each must be accepted: the replay test checks it). The ONNX, NIfTI, .npy,
card and dataset.json seeds are built here byte by byte (ONNX with the protobuf helpers
of regressions/onnx/gen.py); the PyTorch seeds by torch.save (Debian's
python3-torch, seeded: the same bytes each run); the .vbseg and checkpoint seeds are made by
BUILD_DIR/vbseg itself (create, convert, train on scans from
BUILD_DIR/samples/make_scan), the twin seeds (an options byte, then a
safetensors checkpoint) by `vbseg export` of corpus/vbseg/unet2d.vbseg and
by hand for corpus/onnx/norm-act.onnx. The committed bytes are what the tests use;
re-running this rewrites them (the .vbseg producer strings and the trained
weights depend on the build)."""
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")
B = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else None

gen = {}
exec(open(os.path.join(HERE, "regressions", "onnx", "gen.py")).read().split("\nRELU =")[0], gen)
fv, fb, fbs, tensor, node, attr = gen["fv"], gen["fb"], gen["fbs"], gen["tensor"], gen["node"], gen["attr"]
FLOAT, INT64, A_FLOAT, A_INT, A_STRING, A_FLOATS, A_INTS = 1, 7, 1, 2, 3, 6, 7


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- ONNX ------------------------------------------------------------------

def vi(name, dims):  # a float tensor's value_info; str dims are symbolic
    shape = b"".join(fb(1, fb(2, d) if isinstance(d, str) else fv(1, d)) for d in dims)
    return fb(1, name) + fb(2, fb(1, fv(1, FLOAT) + fb(2, shape)))


def sattr(name, s):
    return fb(1, name) + fb(4, s) + fv(20, A_STRING)


def iattr(name, i):
    return fb(1, name) + fv(3, i) + fv(20, A_INT)


def fattr(name, x):
    return fb(1, name) + gen["varint"](2 << 3 | 5) + struct.pack("<f", x) + fv(20, A_FLOAT)


def onnx(nodes, inputs, outputs, inits=(), opset=13):
    g = fbs(1, nodes) + fb(2, "g") + fbs(5, inits) + fbs(11, [vi(n, d) for n, d in inputs])
    g += fbs(12, [vi(n, d) for n, d in outputs])
    return fv(1, 8) + fb(8, fv(2, opset)) + fb(7, g)


def w(name, dims, seed=1):
    n = 1
    for d in dims:
        n *= d
    return tensor(name, FLOAT, dims, [((i * 37 + seed * 11) % 17 - 8) / 16.0 for i in range(n)])


def ints(name, v):
    return attr(name, A_INTS, ints=v)


def onnx_seeds():
    # the card target's fixed model too: a 1x1 Conv, 2 channels to 3 raw logits, symbolic N, H, W
    put("onnx", "conv-head.onnx", onnx([node("Conv", "head", ["x", "w", "b"], ["y"])], [("x", ("N", 2, "H", "W"))],
                                       [("y", ("N", 3, "H", "W"))],
                                       [tensor("w", FLOAT, (3, 2, 1, 1), [0.5, -0.25, 0.1, 0.2, -0.3, 0.4]),
                                        tensor("b", FLOAT, (3,), [0.0, 0.1, -0.1])]))
    # a small U-Net-like graph: conv, relu, max-pool, transposed conv, concat, softmax
    put("onnx", "unet-like.onnx", onnx([
        node("Conv", "c1", ["x", "w1", "b1"], ["h1"], [ints("kernel_shape", (3, 3)), ints("pads", (1, 1, 1, 1))]),
        node("Relu", "r1", ["h1"], ["a1"]),
        node("MaxPool", "p1", ["a1"], ["q1"], [ints("kernel_shape", (2, 2)), ints("strides", (2, 2))]),
        node("ConvTranspose", "u1", ["q1", "wu", "bu"], ["up"], [ints("kernel_shape", (2, 2)), ints("strides", (2, 2))]),
        node("Concat", "cat", ["a1", "up"], ["cc"], [iattr("axis", 1)]),
        node("Conv", "head", ["cc", "w2", "b2"], ["lg"], [ints("kernel_shape", (1, 1))]),
        node("Softmax", "sm", ["lg"], ["y"], [iattr("axis", 1)])],
        [("x", ("N", 1, "H", "W"))], [("y", ("N", 2, "H", "W"))],
        [w("w1", (2, 1, 3, 3)), w("b1", (2,), 2), w("wu", (2, 2, 2, 2), 3), w("bu", (2,), 4), w("w2", (2, 4, 1, 1), 5),
         w("b2", (2,), 6)]))
    # normalisations, pooling, activations, pad, resize, dropout, sigmoid over one channel
    put("onnx", "norm-act.onnx", onnx([
        node("Conv", "c1", ["x", "w1"], ["h1"], [ints("kernel_shape", (3, 3)), sattr("auto_pad", "SAME_UPPER")]),
        node("BatchNormalization", "bn", ["h1", "g", "bb", "mu", "var"], ["h2"], [fattr("epsilon", 1e-5)]),
        node("LeakyRelu", "lr", ["h2"], ["h3"], [fattr("alpha", 0.1)]),
        node("InstanceNormalization", "in", ["h3", "g", "bb"], ["h4"]),
        node("AveragePool", "ap", ["h4"], ["h5"], [ints("kernel_shape", (2, 2)), ints("strides", (2, 2))]),
        node("Resize", "rs", ["h5", "", "sc"], ["h6"], [sattr("mode", "nearest")]),
        node("Dropout", "dr", ["h6"], ["h7"]),
        node("Add", "add", ["h7", "h4"], ["h8"]),
        node("Conv", "head", ["h8", "w2", "b2"], ["lg"], [ints("kernel_shape", (1, 1))]),
        node("Sigmoid", "sg", ["lg"], ["y"])],
        [("x", ("N", 2, "H", "W"))], [("y", ("N", 1, "H", "W"))],
        [w("w1", (2, 2, 3, 3)), tensor("g", FLOAT, (2,), [1.0, 0.5]), tensor("bb", FLOAT, (2,), [0.0, 0.1]),
         tensor("mu", FLOAT, (2,), [0.1, -0.1]), tensor("var", FLOAT, (2,), [1.0, 2.0]),
         tensor("sc", FLOAT, (4,), [1.0, 1.0, 2.0, 2.0]), w("w2", (1, 2, 1, 1), 7), w("b2", (1,), 8)]))
    # 3D at a fixed size, Pad, PRelu, global pooling, Mul, Transpose
    put("onnx", "fixed-3d.onnx", onnx([
        node("Pad", "pad", ["x", "pads"], ["h0"], [sattr("mode", "constant")]),
        node("Conv", "c1", ["h0", "w1", "b1"], ["h1"], [ints("kernel_shape", (3, 3, 3))]),
        node("PRelu", "pr", ["h1", "slope"], ["h2"]),
        node("GlobalAveragePool", "gap", ["h2"], ["gp"]),
        node("Mul", "mul", ["h2", "gp"], ["h3"]),
        node("Conv", "head", ["h3", "w2"], ["lg"], [ints("kernel_shape", (1, 1, 1))]),
        node("Transpose", "t1", ["lg"], ["lt"], [ints("perm", (0, 2, 3, 4, 1))]),
        node("Transpose", "t2", ["lt"], ["y"], [ints("perm", (0, 4, 1, 2, 3))])],
        [("x", (1, 1, 4, 4, 4))], [("y", (1, 2, 4, 4, 4))],
        [tensor("pads", INT64, (10,), [0, 0, 1, 1, 1, 0, 0, 1, 1, 1]), w("w1", (2, 1, 3, 3, 3)), w("b1", (2,), 2),
         tensor("slope", FLOAT, (2, 1, 1, 1), [0.25, 0.1]), w("w2", (2, 2, 1, 1, 1), 3)], opset=11))


# ---- NIfTI -------------------------------------------------------------------

def nifti1(dims, datatype, bitpix, data, slope=0.0, inter=0.0, ext=b"", endian="<", magic=b"n+1\0"):
    h = bytearray(348)
    e = endian
    struct.pack_into(e + "i", h, 0, 348)
    struct.pack_into(e + "8h", h, 40, *([len(dims)] + list(dims) + [1] * (7 - len(dims))))
    struct.pack_into(e + "hh", h, 70, datatype, bitpix)
    struct.pack_into(e + "8f", h, 76, *([1.0, 1.0, 1.25, 2.0] + [1.0] * 4))
    struct.pack_into(e + "f", h, 108, 352.0 + len(ext))
    struct.pack_into(e + "ff", h, 112, slope, inter)
    struct.pack_into(e + "hh", h, 252, 1, 1)  # qform, sform codes
    struct.pack_into(e + "ffffff", h, 256, 0.0, 0.0, 0.0, -2.0, 3.0, 1.0)  # quatern b c d, qoffset
    for r, row in enumerate(([1, 0, 0, -2], [0, 1, 0, 3], [0, 0, 1.25, 1])):
        struct.pack_into(e + "4f", h, 280 + 16 * r, *row)
    h[344:348] = magic
    extender = bytes([1 if ext else 0, 0, 0, 0])
    return bytes(h) + extender + ext + data


def nifti2(dims, data):
    h = bytearray(540)
    struct.pack_into("<i", h, 0, 540)
    h[4:12] = b"n+2\0\r\n\x1a\n"
    struct.pack_into("<hh", h, 12, 16, 32)
    struct.pack_into("<8q", h, 16, *([len(dims)] + list(dims) + [1] * (7 - len(dims))))
    struct.pack_into("<8d", h, 104, *([1.0] * 8))
    struct.pack_into("<q", h, 168, 544)
    struct.pack_into("<dd", h, 176, 0.0, 0.0)
    struct.pack_into("<ii", h, 344, 0, 1)  # qform 0, sform 1
    for r, row in enumerate(([1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0])):
        struct.pack_into("<4d", h, 400 + 32 * r, *row)
    return bytes(h) + b"\0\0\0\0" + data


def floats(n, e="<"):
    return struct.pack(e + "%df" % n, *[(i % 9) * 0.5 - 1.0 for i in range(n)])


def nifti_seeds():
    put("nifti", "float32-4x4x2.nii", nifti1((4, 4, 2), 16, 32, floats(32)))
    put("nifti", "int16-scaled-3x3x2.nii", nifti1((3, 3, 2), 4, 16, struct.pack("<18h", *range(-9, 9)), slope=0.5, inter=1.0))
    put("nifti", "uint8-4d-2ch.nii", nifti1((2, 3, 2, 2), 2, 8, bytes(range(24))))
    put("nifti", "big-endian-float32.nii", nifti1((2, 2, 2), 16, 32, floats(8, ">"), endian=">"))
    put("nifti", "extension.nii", nifti1((2, 2, 1), 16, 32, floats(4), ext=struct.pack("<ii", 16, 6) + b"fuzz\0\0\0\0"))
    put("nifti", "float64-2d.nii", nifti1((3, 2), 64, 64, struct.pack("<6d", 1, 2, 3, 4, 5, float("nan"))))
    put("nifti", "nifti2-2x2x2.nii", nifti2((2, 2, 2), floats(8)))
    put("nifti", "float32-4x4x2.nii.gz", gzip.compress(nifti1((4, 4, 2), 16, 32, floats(32)), mtime=0))


# ---- .npy ----------------------------------------------------------------------

def npy(shape, descr, data, version=1):
    sh = "(%s)" % ("".join("%d, " % d for d in shape) if len(shape) == 1 else ", ".join(str(d) for d in shape))
    hdr = ("{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, sh)).encode()
    lead = 10 if version == 1 else 12
    hdr += b" " * ((64 - (lead + len(hdr) + 1) % 64) % 64) + b"\n"
    ln = struct.pack("<H", len(hdr)) if version == 1 else struct.pack("<I", len(hdr))
    return b"\x93NUMPY" + bytes([version, 0]) + ln + hdr + data


def npy_seeds():
    put("npy", "f4-4x4.npy", npy((4, 4), "<f4", floats(16)))
    put("npy", "f4-2x3x4.npy", npy((2, 3, 4), "<f4", floats(24)))
    put("npy", "f8-1x2x2x3.npy", npy((1, 2, 2, 3), "<f8", struct.pack("<12d", *[i * 0.25 for i in range(12)])))
    put("npy", "f4-batch-2x1x2x2x2.npy", npy((2, 1, 2, 2, 2), "<f4", floats(16)))
    put("npy", "f4-v2-header-3x2.npy", npy((3, 2), "<f4", struct.pack("<6f", 1, float("inf"), 3, float("nan"), 5, 6), version=2))


# ---- model cards -------------------------------------------------------------

def card_seeds():
    full = {"channels": ["flair", "t1"], "normalization": "zscore_nonzero", "spatial_dims": 2, "patch": [16, 16],
            "labels": {"0": "background", "1": "edema", "2": "tumour"}, "label_convention": "custom",
            "output_activation": "softmax", "heteroscedastic": False, "training_data": "generated", "epochs": 3,
            "seed": 1, "description": "a seed of the card fuzz target", "metrics": {"dice_wt": 0.91},
            "extra": {"site": "none"}}
    put("card", "full.json", json.dumps(full, indent=1).encode())
    put("card", "minimal.json", b"{}")
    put("card", "percentile.json", json.dumps({"normalization": "percentile", "percentile": [0.5, 99.5],
                                               "spatial_dims": 3, "patch": [8, 16, 16]}).encode())
    put("card", "brats-labels.json", json.dumps({"channels": ["t1", "t2"], "labels": {"0": "bg", "2": "edema", "4": "et"},
                                                 "label_convention": "brats2018", "seed": 18446744073709}).encode())


# ---- dataset.json (nnU-Net v2, MSD / nnU-Net v1) -------------------------------

def dataset_seeds():
    put("dataset", "nnunet-v2.json", json.dumps({"name": "Dataset001_Brats", "channel_names": {"0": "FLAIR", "1": "T1w"},
                                                 "labels": {"background": 0, "edema": 1, "tumour": 2},
                                                 "numTraining": 2, "file_ending": ".nii.gz"}, indent=1).encode())
    put("dataset", "msd-v1.json", json.dumps({"name": "BrainTumour", "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
                                              "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor",
                                                         "3": "enhancing tumour"}, "numTraining": 484}).encode())
    put("dataset", "name-only.json", b'{"dataset_name": "x", "file_ending": ".nii"}')


# ---- safetensors (converters/safetensors.c) ----------------------------------

def safetensors(entries, metadata=None, pad=True):
    """entries: [(name, dtype, shape, raw bytes)], laid out in order (odd sizes leave later data unaligned)"""
    h, buf = {}, b""
    if metadata is not None:
        h["__metadata__"] = metadata
    for name, dtype, shape, data in entries:
        h[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(buf), len(buf) + len(data)]}
        buf += data
    hb = json.dumps(h, separators=(",", ":")).encode()
    if pad:
        hb += b" " * (-len(hb) % 8)
    return struct.pack("<Q", len(hb)) + hb + buf


def safetensors_seeds():
    f32 = struct.pack("<6f", 0.5, -1.0, 2.0, 0.0, 3.5, -0.25)
    f16 = struct.pack("<6H", 0x3c00, 0xbc00, 0x0001, 0x7c00, 0x7e00, 0x8400)  # 1, -1, a subnormal, Inf, NaN, -2^-14
    bf16 = struct.pack("<4H", 0x3f80, 0xc040, 0x7f80, 0x0001)
    f64 = struct.pack("<3d", 1.5, 1e39, -1e-300)
    put("safetensors", "bayesian-torch.safetensors", safetensors(
        [("conv1.mu_kernel", "F32", (2, 1, 1, 3), f32), ("conv1.rho_kernel", "F32", (6,), f32),
         ("conv1.mu_bias", "F16", (6,), f16), ("bn.num_batches_tracked", "I64", (), struct.pack("<q", 7))],
        {"format": "pt", "vbseg": "{\"labels\": [0, 1]}"}))
    put("safetensors", "every-dtype-unaligned.safetensors", safetensors(
        [("b", "BOOL", (3,), b"\x01\x00\x01"), ("h", "F16", (2, 3), f16), ("bf", "BF16", (4,), bf16),
         ("d", "F64", (3,), f64), ("u8", "U8", (1,), b"\x05"), ("i8", "I8", (1,), b"\xff"), ("i16", "I16", (1,), b"\x01\x80"),
         ("u16", "U16", (1,), b"\x01\x80"), ("i32", "I32", (1,), b"\x01\x00\x00\x80"), ("u32", "U32", (1,), b"\x01\x00\x00\x80"),
         ("u64", "U64", (1,), b"\x01" * 8), ("s", "F32", (), f32[:4])], pad=False))
    put("safetensors", "scalar-empty.safetensors", safetensors(
        [("empty", "F32", (0, 4), b""), ("scalar", "F64", (), f64[:8]), ("empty16", "BF16", (3, 0), b"")]))
    put("safetensors", "no-tensors.safetensors", safetensors([]))
    put("safetensors", "metadata-only.safetensors", safetensors([], {"epoch": "3"}))


# ---- .vbseg models and checkpoints, made by vbseg ------------------------------

def run(*args):
    subprocess.run([str(a) for a in args], check=True, stdout=subprocess.DEVNULL)


def vbseg_seeds():
    V = os.path.join(B, "vbseg")
    d = os.path.join(OUT, "vbseg")
    os.makedirs(d, exist_ok=True)
    tiny = ["--base", "1", "--depth", "1", "--seed", "3"]
    run(V, "create", "--arch", "unet", "--dims", "2", "--in-channels", "1", "--classes", "2", "--latent", "0", "--patch", "8x8",
        "--norm", "none", *tiny, "--out", os.path.join(d, "unet2d.vbseg"))
    run(V, "create", "--arch", "unet", "--dims", "2", "--in-channels", "2", "--classes", "3", "--latent", "2", "--hetero",
        "--dropout", "0.2", "--patch", "8x8", *tiny, "--out", os.path.join(d, "unet2d-latent-hetero-dropout.vbseg"))
    run(V, "create", "--arch", "unet", "--dims", "3", "--in-channels", "1", "--classes", "1", "--latent", "0", "--norm", "batch",
        "--patch", "4x4x4", *tiny, "--out", os.path.join(d, "unet3d-sigmoid-bn.vbseg"))
    run(V, "create", "--arch", "vnet", "--dims", "2", "--in-channels", "1", "--classes", "2", "--latent", "0", "--patch", "4x4",
        *tiny, "--out", os.path.join(d, "vnet2d.vbseg"))
    run(V, "create", "--arch", "fcn", "--dims", "2", "--in-channels", "1", "--classes", "2", "--latent", "0", "--base", "1",
        "--depth", "3", "--patch", "8x8", "--deterministic", "--out", os.path.join(d, "fcn2d-deterministic.vbseg"))
    for name in ("conv-head", "norm-act", "fixed-3d"):
        run(V, "convert", os.path.join(OUT, "onnx", name + ".onnx"), os.path.join(d, "onnx-" + name + ".vbseg"))
    # checkpoints: a few steps of training on two generated scans
    t = tempfile.mkdtemp()
    try:
        for c in ("Case_01", "Case_02"):
            os.makedirs(os.path.join(t, "data", c))
            run(os.path.join(B, "samples", "make_scan"), os.path.join(t, "data", c), c, 16, 16, 4)
        common = ["--data", os.path.join(t, "data"), "--base", "1", "--depth", "1", "--latent", "0", "--patch", "16x16",
                  "--batch", "2", "--epochs", "1", "--steps-per-epoch", "1", "--val", "0.5", "--val-samples", "1", "--quiet"]
        run(V, "train", *common, "--out", os.path.join(t, "a.vbseg"))
        run(V, "train", *common, "--optimizer", "sgd", "--latent", "1", "--out", os.path.join(t, "s.vbseg"))
        ck = os.path.join(OUT, "checkpoint")
        os.makedirs(ck, exist_ok=True)
        shutil.copy(os.path.join(t, "a.vbseg.train", "checkpoint.vbseg"), os.path.join(ck, "adam.ckpt"))
        shutil.copy(os.path.join(t, "s.vbseg.train", "checkpoint.vbseg"), os.path.join(ck, "sgd-latent.ckpt"))
    finally:
        shutil.rmtree(t)


def twin_seeds():
    # fuzz_twin's input: one byte of options (graph, naming, prior; fuzz_twin.c), then a safetensors checkpoint
    def sel(graph, naming, prior=None):
        names = ("auto", "plain", "bayesian-torch", "blitz", "torchbnn")
        b = graph | names.index(naming) << 1
        return bytes([b if prior is None else b | 16 | prior << 5])
    t = tempfile.mkdtemp()
    try:
        unet = os.path.join(OUT, "vbseg", "unet2d.vbseg")
        for i, conv in enumerate(("plain", "bayesian-torch", "blitz", "torchbnn")):
            st = os.path.join(t, conv + ".safetensors")
            run(os.path.join(B, "vbseg"), "export", unet, st, "--naming", conv)
            data = open(st, "rb").read()
            put("twin", "unet2d-%s.bin" % conv, sel(0, conv, i if i % 2 else None) + data)
            put("twin", "unet2d-%s-auto.bin" % conv, sel(0, "auto") + data)
    finally:
        shutil.rmtree(t)
    # the ONNX twin (norm-act.onnx, batch norm kept): its initializers by name, w1 variational ...
    f32 = lambda *v: struct.pack("<%df" % len(v), *v)
    val = lambda n, seed: [((i * 37 + seed * 11) % 17 - 8) / 16.0 for i in range(n)]  # as w() above: the graph's bytes
    w1 = val(36, 1)
    named = [("w1", "F32", (2, 2, 3, 3), f32(*w1)), ("w1.rho", "F32", (2, 2, 3, 3), f32(*[-5.0 + i / 8 for i in range(36)])),
             ("g", "F32", (2,), f32(1.0, 0.5)), ("bb", "F32", (2,), f32(0.0, 0.1)), ("mu", "F32", (2,), f32(0.1, -0.1)),
             ("var", "F32", (2,), f32(1.0, 2.0)), ("w2", "F32", (1, 2, 1, 1), f32(*val(2, 7))), ("b2", "F32", (1,), f32(*val(1, 8)))]
    put("twin", "norm-act-plain.bin", sel(1, "plain") + safetensors(named))
    # ... and under other names, matched by their bytes (the Resize scales kept from the graph)
    put("twin", "norm-act-bytes.bin", sel(1, "auto") + safetensors(
        [("layer.%d" % i, d, s, v) for i, (n, d, s, v) in enumerate(named) if n != "w1.rho"]))
    # other dtypes: read as float (w1's values are exact in F16)
    put("twin", "norm-act-f16.bin", sel(1, "plain", 3) + safetensors(
        [("w1", "F16", (2, 2, 3, 3), struct.pack("<36e", *w1)), ("w2", "BF16", (1, 2, 1, 1), struct.pack("<2H", 0xbe80, 0x3f00)),
         ("b2", "F64", (1,), struct.pack("<d", 0.5))]))


def pytorch_seeds():
    # small torch.save zip archives: the dtypes, views and training checkpoints the reader takes
    import collections
    import torch
    torch.manual_seed(11)
    d = os.path.join(OUT, "pytorch")
    os.makedirs(d, exist_ok=True)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    torch.save(net.state_dict(), os.path.join(d, "conv-bn.pt"))
    base = torch.randn(3, 4)
    sd = collections.OrderedDict([("h", torch.randn(3).half()), ("bf", torch.randn(2).bfloat16()),
                                  ("d", torch.randn(2, dtype=torch.float64)), ("t", base.t()), ("v", base[1:, ::2]),
                                  ("s", torch.tensor(2.5)), ("e", torch.zeros(0, 2)), ("n", torch.tensor(3))])
    torch.save(sd, os.path.join(d, "dtypes-views.pt"))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(1, 1, 4, 4)).sum().backward()
    opt.step()
    torch.save({"state_dict": net.state_dict(), "epoch": 3, "optimizer": opt.state_dict(), "best": 0.5, "note": None},
               os.path.join(d, "train-sgd.pt"))
    torch.save({"w": torch.nn.Parameter(torch.randn(2, 2))}, os.path.join(d, "params.pt"))


WANT = set(sys.argv[2:])  # make_corpus.py BUILD_DIR TARGET...: only those targets' seeds
TARGETS = {"vbseg", "nifti", "npy", "onnx", "card", "dataset", "checkpoint", "pytorch", "safetensors", "twin"}
if WANT - TARGETS:
    sys.exit("make_corpus.py: unknown target %s (targets: %s)" % (", ".join(sorted(WANT - TARGETS)), " ".join(sorted(TARGETS))))
if not B and WANT & {"vbseg", "checkpoint", "twin"}:
    sys.exit("make_corpus.py: the vbseg, checkpoint and twin seeds need BUILD_DIR")
for t, make in (("onnx", onnx_seeds), ("nifti", nifti_seeds), ("npy", npy_seeds), ("card", card_seeds),
                ("dataset", dataset_seeds), ("pytorch", pytorch_seeds), ("safetensors", safetensors_seeds)):
    if not WANT or t in WANT:
        make()
if B and (not WANT or WANT & {"vbseg", "checkpoint"}):
    vbseg_seeds()
if B and (not WANT or "twin" in WANT):
    twin_seeds()
for root, _, files in sorted(os.walk(OUT)):
    for f in sorted(files):
        p = os.path.join(root, f)
        print("%6d %s" % (os.path.getsize(p), os.path.relpath(p, HERE)))
