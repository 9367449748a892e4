#!/usr/bin/python3
"""torch_ckpt.py OUTDIR: the oracle of test_pytorch (issue 11, section 1).

Writes into OUTDIR, with Debian's PyTorch (torch.save, zip format):
  - valid checkpoints (float32/16, bfloat16, float64, int64 num_batches_tracked,
    non-contiguous and offset views, two tensors sharing one storage, scalars, an
    empty tensor, a module's state_dict() with its _metadata, parameters, training
    checkpoints with epoch/optimizer/lists/floats/None, a memo bomb in a sub-tree
    not taken, a rewritten zip with no alignment) and, for each, the expected
    names, dtypes and shapes (cases.txt) and float values (FILE.ARGKEY.f32: each float
    tensor as torch converts it to float32, C order, concatenated);
  - hostile files, each with the substring its refusal must contain.
cases.txt lines:  ok FILE ARGKEY OUTKEY N  + N lines "NAME DTYPE NDIM DIMS..."
                  bad FILE ARGKEY MESSAGE...      (ARGKEY/OUTKEY "-": none)
"""
import collections
import io
import os
import pickletools
import struct
import sys
import tarfile
import zipfile
import zlib

import torch

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(11)
lines = []
DT = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64", torch.int64: "I64",
      torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL", torch.int8: "I8", torch.int16: "I16"}


def path(name):
    return os.path.join(OUT, name)


def expect_ok(name, sd, argkey="-", outkey="-"):
    lines.append("ok %s %s %s %d" % (name, argkey, outkey, len(sd)))
    with open(path("%s.%s.f32" % (name, argkey)), "wb") as f:
        for k, t in sd.items():
            t = t.detach()
            lines.append("%s %s %d %s" % (k, DT[t.dtype], t.dim(), " ".join(str(d) for d in t.shape)))
            if t.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
                f.write(t.float().contiguous().numpy().tobytes())


def expect_bad(name, msg, argkey="-"):
    lines.append("bad %s %s %s" % (name, argkey, msg))


def save(name, obj, **kw):
    torch.save(obj, path(name), **kw)


def entries(name):
    """a torch.save file's entries, in order: [(name, bytes)]"""
    with zipfile.ZipFile(path(name)) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def zipbytes(ents, method=zipfile.ZIP_STORED):
    """a zip written by Python's zipfile: no 64-byte alignment, no ZIP64 records"""
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", method) as z:
        for n, d in ents:
            z.writestr(n, d)
    return b.getvalue()


def write(name, data):
    with open(path(name), "wb") as f:
        f.write(data)


def pkl_of(ents):
    return [d for n, d in ents if n.endswith("/data.pkl")][0]


def with_pkl(ents, pkl):
    return [(n, pkl if n.endswith("/data.pkl") else d) for n, d in ents]


def ops(pkl):
    return list(pickletools.genops(pkl))


def sd_types():
    base = torch.randn(4, 6)
    shared = torch.randn(10)
    sd = collections.OrderedDict()
    sd["conv.weight"] = torch.randn(2, 3, 3, 3)
    sd["conv.bias"] = torch.randn(2)
    sd["half"] = torch.randn(3, 4).half()
    sd["bf16"] = torch.randn(5).bfloat16()
    sd["double"] = torch.randn(2, 2, 2, dtype=torch.float64)
    sd["bn.num_batches_tracked"] = torch.tensor(7)
    sd["transposed"] = base.t()                   # strides (1, 6)
    sd["strided"] = base[1:3, ::2]                # offset 6, strides (6, 2)
    sd["shared.a"] = shared[:4]                   # two views of one storage
    sd["shared.b"] = shared[4:].view(2, 3)
    sd["scalar"] = torch.tensor(3.5)
    sd["empty"] = torch.zeros(0, 3)
    sd["ints"] = torch.arange(6, dtype=torch.int32).view(2, 3)
    sd["mask"] = torch.tensor([True, False])
    sd["bytes"] = torch.tensor([1, 2, 3], dtype=torch.uint8)
    sd["expanded"] = torch.randn(3, 1).expand(3, 4)  # stride 0
    return sd


sd = sd_types()
save("types.pt", sd)
expect_ok("types.pt", sd)

net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ConvTranspose2d(2, 3, 2))
msd = net.state_dict()
save("module.pt", msd)
expect_ok("module.pt", msd)

params = {"w": torch.nn.Parameter(torch.randn(3, 2)), "b": torch.nn.Parameter(torch.randn(3))}
save("params.pt", params)
expect_ok("params.pt", params)

opt = torch.optim.Adam(net.parameters(), lr=1e-3)
net(torch.randn(1, 1, 5, 5)).sum().backward()
opt.step()
ema = collections.OrderedDict((k, v * 0.5) for k, v in msd.items() if v.dtype == torch.float32)
train = {"state_dict": msd, "epoch": 12, "optimizer": opt.state_dict(), "best": 0.93, "note": None,
         "history": [1.0, 0.5, -2], "big": 2 ** 40, "neg": -5, "ema": ema}
save("train.pt", train)
expect_ok("train.pt", msd, "-", "state_dict")
expect_ok("train.pt", ema, "ema", "ema")
expect_bad("train.pt", "no key 'nope' in the checkpoint (keys: 'state_dict', 'epoch', 'optimizer'", "nope")
expect_bad("train.pt", "'epoch' is a int, not a state dict", "epoch")
expect_bad("train.pt", "'optimizer' is a dict, not a state dict", "optimizer")

save("train2.pt", {"epoch": 3, "model_state_dict": sd})
expect_ok("train2.pt", sd, "-", "model_state_dict")
save("nostate.pt", {"epoch": 3, "weights": sd})
expect_bad("nostate.pt", "not a state dict, and no 'state_dict' or 'model_state_dict' in it (keys: 'epoch', 'weights')")

# many long keys: the message lists the first and ends in "..."
save("manykeys.pt", {("k%03d_" % i) + "x" * 50: i for i in range(40)})
expect_bad("manykeys.pt", "(keys: 'k000_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx', 'k001_")
expect_bad("manykeys.pt", "', ...)", "nope")
save("emptydict.pt", {})
expect_ok("emptydict.pt", {})

# the same entries rewritten by Python's zipfile (no alignment padding, no ZIP64 records), another prefix
ents = entries("types.pt")
write("realigned.pt", zipbytes([("other_prefix" + n[n.index("/"):], d) for n, d in ents]))
expect_ok("realigned.pt", sd)

# a memo bomb in a sub-tree not taken: T_k = (T_{k-1}, T_{k-1}), 100 levels, shared (2^100 if copied)
save("bomb_base.pt", {"state_dict": msd, "bomb": None})
ents = entries("bomb_base.pt")
pkl = pkl_of(ents)
none_at = [pos for op, arg, pos in ops(pkl) if op.name == "NONE"][-1]
bomb = b"](]r" + struct.pack("<I", 5000)
for k in range(1, 101):
    bomb += b"j" + struct.pack("<I", 4999 + k) + b"j" + struct.pack("<I", 4999 + k) + b"\x86r" + struct.pack("<I", 5000 + k)
bomb += b"e"
write("bomb.pt", zipbytes(with_pkl(ents, pkl[:none_at] + bomb + pkl[none_at + 1:])))
expect_ok("bomb.pt", msd, "-", "state_dict")
os.remove(path("bomb_base.pt"))

# ---- hostile files ----------------------------------------------------------------
small = collections.OrderedDict([("aa", torch.randn(2, 3)), ("bb", torch.randn(3))])
save("small.pt", small)
ents = entries("small.pt")
pkl = pkl_of(ents)


def crafted(name, body, msg, argkey="-"):
    """data.pkl replaced by body (a protocol 2 pickle), the records kept"""
    write(name, zipbytes(with_pkl(ents, body)))
    expect_bad(name, msg, argkey)


P = b"\x80\x02"
crafted("os_system.pt", P + b"cposix\nsystem\nX\x0a\x00\x00\x00echo pwned\x85R.",
        "data.pkl: global posix.system is not allowed")
crafted("eval.pt", P + b"cbuiltins\neval\nX\x01\x00\x00\x001\x85R.", "global builtins.eval is not allowed")
crafted("reduce_storage.pt", P + b"ctorch\nFloatStorage\n)R.", "REDUCE on torch.FloatStorage")
crafted("reduce_str.pt", P + b"X\x01\x00\x00\x00a)R.", "REDUCE on a str")
crafted("setitem_list.pt", P + b"]X\x01\x00\x00\x00kX\x01\x00\x00\x00vs.", "SETITEM on a list, not a dict")
crafted("append_dict.pt", P + b"}Na.", "APPEND on a dict, not a list")
crafted("appends_tuple.pt", P + b")(Ne.", "APPENDS on a tuple, not a list")
crafted("opcode_dict.pt", P + b"(d.", "opcode DICT at byte 3 is not allowed")
crafted("proto4.pt", b"\x80\x04}.", "pickle protocol 4")
crafted("memo_cap.pt", P + b"}r\xff\xff\xff\x7f.", "memo index 2147483647 over its cap of 1048576")
crafted("depth_cap.pt", P + b"(" * 65 + b".", "more than 64 open MARKs at byte 66: nesting depth over its cap")
crafted("binget_unset.pt", P + b"h\x05.", "BINGET of memo 5 that was never put")
crafted("persid.pt", P + b"X\x06\x00\x00\x00module\x85Q.", "a persistent id that is not ('storage'")
crafted("list_top.pt", P + b"].", "data.pkl holds a list")
crafted("truncated.pkl.pt", P + b"X\xff\x00\x00\x00ab", "data.pkl: truncated at byte 7")
crafted("device.pt", P + b"}(X\x0a\x00\x00\x00state_dict}X\x06\x00\x00\x00devicectorch\ndevice\nX\x03\x00\x00\x00cpu\x85Ru.",
        "global torch.device is not allowed (only collections.OrderedDict")
crafted("build_dict.pt", P + b"}}b.", "BUILD of a dict with a dict state (only an OrderedDict's attributes)")
crafted("rebuild_args.pt", P + b"ctorch._utils\n_rebuild_tensor_v2\n)R.", "_rebuild_tensor_v2 with 0 arguments (6 or 7)")
crafted("long9.pt", P + b"\x8a\x09" + b"\x01" * 9 + b".", "an integer of 9 bytes (at most 64 bits)")
assert pkl.count(b"X\x01\x00\x00\x001") == 1
crafted("storage_shared_size.pt", pkl.replace(b"X\x01\x00\x00\x001", b"X\x01\x00\x00\x000"),
        "storage 0: the record has 24 bytes, its declared 3 FloatStorage elements take 12")
# 'bb' names storage 0 too, as 6 ints (the same 24 bytes): one storage, two types
o = list(ops(pkl))
k1 = [i for i, (op, arg, pos) in enumerate(o) if op.name == "BINUNICODE" and arg == "1"][0]
cls_at, key_at = o[k1 - 1][2], o[k1][2]
assert o[k1 - 1][0].name == "BINGET" and key_at == cls_at + 2  # the class, by memo, just before the key
n_at = pkl.index(b"K\x03t", key_at)
twice = (pkl[:cls_at] + b"ctorch\nIntStorage\n" + b"X\x01\x00\x00\x000" + pkl[key_at + 6:n_at] + b"K\x06" +
         pkl[n_at + 2:])
crafted("storage_twice.pt", twice, "storage 0: named twice with different types or sizes")
crafted("after_stop.pt", pkl + b"N", "data.pkl: 1 byte(s) after STOP")
# duplicate keys: 'bb' renamed 'aa'
crafted("dupkey.pt", pkl.replace(b"X\x02\x00\x00\x00bb", b"X\x02\x00\x00\x00aa"), "duplicate key 'aa' in a dict")
# lying size: the storage of 'aa' declared with 7 elements, its record holds 6
o = [(op.name, arg, pos) for op, arg, pos in ops(pkl)]
numel_at = [pos for (n, a, pos), nxt in zip(o, o[1:]) if nxt[0] == "TUPLE" and n == "BININT1"][0]
assert pkl[numel_at + 1] == 6
crafted("lying_numel.pt", pkl[:numel_at + 1] + b"\x07" + pkl[numel_at + 2:],
        "storage 0: the record has 24 bytes, its declared 7 FloatStorage elements take 28")
# a record shorter than its numel (the record rewritten)
write("short_record.pt", zipbytes([(n, d[:-4] if n.endswith("/data/0") else d) for n, d in ents]))
expect_bad("short_record.pt", "storage 0: the record has 20 bytes, its declared 6 FloatStorage elements take 24")
# a tensor extent past its storage: 'aa' (2,3) at storage offset 1 of 6
persid_at = [pos for op, arg, pos in ops(pkl) if op.name == "BINPERSID"][0]
assert pkl[persid_at + 1:persid_at + 3] in (b"K\x00",) or pkl[persid_at + 3:persid_at + 5] == b"K\x00"
off_at = pkl.index(b"K\x00", persid_at)
crafted("extent.pt", pkl[:off_at] + b"K\x01" + pkl[off_at + 2:], "a tensor (offset 1, 2 dims) reaches past its storage")
# a stride that reaches past: 'aa' strides (3,1) -> (4,1)
st_at = pkl.index(b"K\x03K\x01\x86", persid_at)
crafted("stride.pt", pkl[:st_at] + b"K\x04" + pkl[st_at + 2:], "reaches past its storage")

# views past the caps: a stride-0 tensor of 2^21 elements over one, 30 full views of one 2^20-element storage
save("expand.pt", {"e": torch.ones(1).expand(1 << 21)})
expect_bad("expand.pt", "tensor 'e' of 2097152 elements repeats its storage of 1 past the cap of 1048576")
big = torch.zeros(1 << 20)
save("views.pt", collections.OrderedDict(("v%02d" % i, big) for i in range(30)))
expect_bad("views.pt", "the tensors hold 31457280 floats in all, more than 4 per byte of a")
mid = torch.randn(3000)
ok_views = collections.OrderedDict(("v%d" % i, mid[i * 500:i * 500 + 1000]) for i in range(3))  # overlapping views
ok_views["r"] = torch.ones(3, 1).expand(3, 1000)
save("views_ok.pt", ok_views)
expect_ok("views_ok.pt", ok_views)

# ---- zip ------------------------------------------------------------------------
raw = open(path("small.pt"), "rb").read()
zb = zipbytes(ents)


def cd_entries(b):
    """(offset in b of each central directory entry)"""
    out, i = [], b.index(b"PK\x01\x02")
    while b[i:i + 4] == b"PK\x01\x02":
        out.append(i)
        nl, xl, cl = struct.unpack_from("<HHH", b, i + 28)
        i += 46 + nl + xl + cl
    return out


def patched(b, at, fmt, *v):
    b = bytearray(b)
    struct.pack_into(fmt, b, at, *v)
    return bytes(b)


cds = cd_entries(zb)
eocd = zb.rindex(b"PK\x05\x06")
# the first central entry listed twice (same local header): two entries over the same bytes
n0 = 46 + struct.unpack_from("<H", zb, cds[0] + 28)[0]
dup = zb[:cds[-1]] + zb[cds[0]:cds[0] + n0] + zb[cds[-1]:eocd]
cnt = len(cds) + 1
dup += patched(zb[eocd:], 8, "<HHII", cnt, cnt, len(dup) - cds[0], cds[0])
write("zip_overlap.pt", dup)
expect_bad("zip_overlap.pt", "overlap")
# an entry's local header offset past the directory
write("zip_offset.pt", patched(zb, cds[1] + 42, "<I", 0x7FFFFFF0))
expect_bad("zip_offset.pt", "local header offset 2147483632 is not a local header before the directory")
# a data size running past the central directory
write("zip_size.pt", patched(patched(zb, cds[1] + 20, "<I", 1 << 30), cds[1] + 24, "<I", 1 << 30))
expect_bad("zip_size.pt", "bytes at offset")
# the directory said to lie past the end record
write("zip_cd.pt", patched(zb, eocd + 16, "<I", eocd - 10))
expect_bad("zip_cd.pt", "central directory (offset")
# a flipped data byte: the CRC
d0 = zb.index(ents[1][1])
write("zip_crc.pt", zb[:d0] + bytes([zb[d0] ^ 1]) + zb[d0 + 1:])
expect_bad("zip_crc.pt", "CRC-32")
# a compressed entry
write("deflated.pt", zipbytes(ents, zipfile.ZIP_DEFLATED))
expect_bad("deflated.pt", "is compressed (method 8)")
# torch.save's own file: ZIP64 end record and locator (torch always writes them)
ze = raw.rindex(b"PK\x05\x06")
z64 = raw.rindex(b"PK\x06\x06")
loc = raw.rindex(b"PK\x06\x07")
write("z64_count.pt", patched(raw, z64 + 32, "<Q", 99))
expect_bad("z64_count.pt", "the ZIP64 end record disagrees with the end record")
write("z64_locator.pt", patched(raw, loc + 8, "<Q", 1 << 50))
expect_bad("z64_locator.pt", "ZIP64 locator points outside the file")
write("z64_recsize.pt", patched(raw, z64 + 4, "<Q", 1 << 62))
expect_bad("z64_recsize.pt", "ZIP64 end record size")
write("z64_nolocator.pt", patched(patched(raw, loc, "<I", 0), ze + 16, "<I", 0xFFFFFFFF))
expect_bad("z64_nolocator.pt", "the end record has ZIP64 markers but there is no ZIP64 locator")
rcd = cd_entries(raw)
write("z64_extra.pt", patched(raw, rcd[0] + 20, "<II", 0xFFFFFFFF, 0xFFFFFFFF))
expect_bad("z64_extra.pt", "has ZIP64 markers but no complete ZIP64 extra field")
# a valid ZIP64 extra field: the first entry's sizes moved into one (the entry's extra grows by 20 bytes)
c0 = rcd[0]
nl0, xl0 = struct.unpack_from("<HH", raw, c0 + 28)
size0 = struct.unpack_from("<I", raw, c0 + 24)[0]
ext = struct.pack("<HHQQ", 1, 16, size0, size0)
ent = bytearray(raw[c0:c0 + 46 + nl0 + xl0])
struct.pack_into("<IIH", ent, 20, 0xFFFFFFFF, 0xFFFFFFFF, nl0)
struct.pack_into("<H", ent, 30, xl0 + len(ext))
ent = bytes(ent) + ext
good64 = raw[:c0] + ent + raw[c0 + 46 + nl0 + xl0:z64]
z64rec = patched(raw[z64:loc], 40, "<Q", len(good64) - c0)       # the directory's size
locrec = patched(raw[loc:ze], 8, "<Q", len(good64))               # the ZIP64 record moved by 20 bytes
endrec = patched(raw[ze:], 12, "<I", len(good64) - c0)
write("z64_valid.pt", good64 + z64rec + locrec + endrec)
expect_ok("z64_valid.pt", small)

# TorchScript, the legacy formats, not a zip at all
torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path("script.pt"))
expect_bad("script.pt", "a TorchScript archive (torch.jit.save), not a torch.save checkpoint: re-save it with a current "
                        "torch.save(model.state_dict())")
save("legacy.pt", small, _use_new_zipfile_serialization=False)
expect_bad("legacy.pt", "a legacy pickle stream (PyTorch < 1.6 or _use_new_zipfile_serialization=False), not a zip "
                        "archive: re-save it with a current torch.save(model.state_dict())")
with tarfile.open(path("legacy_tar.pt"), "w") as t:
    for n in ("sys_info", "pickle", "storages", "tensors"):
        info = tarfile.TarInfo(n)
        info.size = 4
        t.addfile(info, io.BytesIO(b"\x80\x02N."))
expect_bad("legacy_tar.pt", "a legacy tar checkpoint (PyTorch < 0.4), not a zip archive: re-save it")
write("text.pt", b"hello, this is not a checkpoint at all\n")
expect_bad("text.pt", "not a zip archive (no end of central directory record)")
write("nopkl.pt", zipbytes([(n, d) for n, d in ents if not n.endswith("data.pkl")]))
expect_bad("nopkl.pt", "no small/data.pkl in the archive")
write("newline.pt", zipbytes(ents + [("else\nwhere/x", b"1")]))
expect_bad("newline.pt", "entry else?where/x is outside")  # a name from the file, printed on one line
write("outside.pt", zipbytes(ents + [("elsewhere/x", b"1")]))
expect_bad("outside.pt", "entry elsewhere/x is outside the archive's folder small/")

with open(path("cases.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("torch_ckpt.py: %d cases in %s" % (sum(1 for l in lines if l.startswith(("ok ", "bad "))), OUT))
