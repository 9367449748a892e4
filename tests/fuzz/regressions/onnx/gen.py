#!/usr/bin/python3
"""gen.py: writes the ONNX regression inputs of issue 10 beside itself, one
small file per finding of the fuzzing campaign. The protobuf bytes are
built by hand (python3-onnx is not among vbseg's packages): field numbers
are those of onnx.proto. Each file is the smallest graph that reached the
bug; tests/onnx_regress.sh replays them through `vbseg convert`."""
import os
import struct
import sys


def varint(v):
    v &= (1 << 64) - 1  # negative int64 as ten bytes, as protobuf does
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def fv(field, v):  # varint field
    return varint(field << 3) + varint(v)


def fb(field, data):  # length-delimited field
    if isinstance(data, str):
        data = data.encode()
    return varint(field << 3 | 2) + varint(len(data)) + data


def fbs(field, datas):
    return b"".join(fb(field, d) for d in datas)


FLOAT, INT64 = 1, 7
A_FLOAT, A_INT, A_STRING, A_FLOATS, A_INTS = 1, 2, 3, 6, 7


def tensor(name, dtype, dims, values):
    raw = struct.pack("<%d%s" % (len(values), "f" if dtype == FLOAT else "q"), *values)
    return b"".join(fv(1, d) for d in dims) + fv(2, dtype) + fb(8, name) + fb(9, raw)


def attr(name, atype, ints=(), floats=()):
    # an empty INTS/FLOATS/STRING attribute: the type alone, no values
    return fb(1, name) + b"".join(fv(8, i) for i in ints) + b"".join(varint(7 << 3 | 5) + struct.pack("<f", f) for f in floats) + fv(20, atype)


def node(op, name, inputs, outputs, attrs=()):
    return fbs(1, inputs) + fbs(2, outputs) + fb(3, name) + fb(4, op) + fbs(5, attrs)


def value_info(name, dims):
    shape = b"".join(fb(1, fv(1, d)) for d in dims)
    return fb(1, name) + fb(2, fb(1, fv(1, FLOAT) + fb(2, shape)))


def model(nodes, inputs=(("x", (1, 1, 4, 4)),), outputs=("y",), inits=(), out_dims=(1, 1, 4, 4)):
    g = fbs(1, nodes) + fb(2, "g") + fbs(5, inits) + fbs(11, [value_info(n, d) for n, d in inputs])
    g += fbs(12, [value_info(n, out_dims) for n in outputs])
    return fv(1, 8) + fb(8, fv(2, 13)) + fb(7, g)


RELU = node("Relu", "relu", ["x"], ["y"])
I64MAX = (1 << 63) - 1
CASES = {
    # 1: a node with no outputs, dereferenced as NULL in convert_graph
    "node-without-outputs.onnx": model([node("Relu", "relu", ["x"], [])]),
    # 2: Transpose perm [1, 1] folded on a constant (heap overflow read in fold)
    "transpose-fold-perm-repeats-axis.onnx": model(
        [node("Transpose", "tp", ["c"], ["ct"], [attr("perm", A_INTS, ints=(1, 1))]), RELU],
        inits=[tensor("c", INT64, (1, 3), range(3))]),  # (1, 3): [1, 1] reads up to index 4 of 3
    # 2: the same perm on a runtime Transpose (checked in conversion too)
    "transpose-perm-repeats-axis.onnx": model([node("Transpose", "tp", ["x"], ["y"], [attr("perm", A_INTS, ints=(0, 1, 1, 3))])]),
    # 3: a graph without outputs converted and saved a file that does not load
    "graph-without-outputs.onnx": model([RELU], outputs=()),
    # 4: ConstantOfShape of 256^3 from a few bytes (folding had no budget)
    "constantofshape-16m-elements.onnx": model(
        [node("ConstantOfShape", "big", ["s"], ["z"]), RELU], inits=[tensor("s", INT64, (3,), (256, 256, 256))]),
    # 5: a float constant out of int64's range (UB in the float-to-integer cast);
    # refused afterwards because the graph output is that constant
    "float-constant-out-of-range.onnx": model([], outputs=("k",), inits=[tensor("k", FLOAT, (1,), (1e30,))]),
    # 5: Slice with step INT64_MAX (signed overflow in its length); refused as a constant output
    "slice-step-overflow.onnx": model(
        [node("Slice", "sl", ["d", "st", "en", "ax", "sp"], ["k"])], outputs=("k",),
        inits=[tensor("d", INT64, (4,), (1, 2, 3, 4)), tensor("st", INT64, (1,), (0,)), tensor("en", INT64, (1,), (I64MAX,)),
               tensor("ax", INT64, (1,), (0,)), tensor("sp", INT64, (1,), (I64MAX,))]),
    # 5: empty INTS, FLOATS, STRING attributes (memcpy from NULL); refused as unknown attributes of Relu
    "empty-ints-attribute.onnx": model([node("Relu", "relu", ["x"], ["y"], [attr("foo", A_INTS)])]),
    "empty-floats-attribute.onnx": model([node("Relu", "relu", ["x"], ["y"], [attr("foo", A_FLOATS)])]),
    "empty-string-attribute.onnx": model([node("Relu", "relu", ["x"], ["y"], [attr("foo", A_STRING)])]),
    # found while fixing the above (same fold code), refused after the fix as unsupported runtime ops:
    # Squeeze of a dim of 4 (its data copied into a 1-element constant: heap overflow write)
    "squeeze-non-unit-axis.onnx": model(
        [node("Squeeze", "sq", ["d", "a"], ["k"]), RELU], inits=[tensor("d", INT64, (4,), (1, 2, 3, 4)), tensor("a", INT64, (1,), (0,))]),
    # Unsqueeze with a repeated axis (a shape read past x's rank: heap overflow write)
    "unsqueeze-repeated-axis.onnx": model(
        [node("Unsqueeze", "usq", ["d", "a"], ["k"]), RELU], inits=[tensor("d", INT64, (4,), (1, 2, 3, 4)), tensor("a", INT64, (2,), (0, 0))]),
    # two 'axes' attributes of 8 each on Squeeze (a stack array of 8 overrun); the first is used, and the
    # constant it folds to is refused as the graph output
    "squeeze-repeated-axes-attribute.onnx": model(
        [node("Squeeze", "sq", ["d"], ["k"], [attr("axes", A_INTS, ints=range(8)), attr("axes", A_INTS, ints=range(8))])], outputs=("k",),
        inits=[tensor("d", INT64, (1, 1), (5,))]),
    # Slice with fewer axes than starts (axes read past its end)
    "slice-axes-shorter-than-starts.onnx": model(
        [node("Slice", "sl", ["d", "st", "en", "ax"], ["k"]), RELU],
        inits=[tensor("d", INT64, (2, 2), (1, 2, 3, 4)), tensor("st", INT64, (2,), (0, 0)), tensor("en", INT64, (2,), (1, 1)),
               tensor("ax", INT64, (1,), (0,))]),
}

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    for name, data in CASES.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
