#!/usr/bin/env python3
"""write_nifti.py OUT.nii.gz X Y Z T [SEED]: a 4D float32 NIfTI-1 file with a
scanner-space affine, written with the standard library (struct, gzip) so
the tests need no nibabel. Used by tests/infer.sh for the flat layout."""
import gzip
import random
import struct
import sys

out, x, y, z, t = sys.argv[1], *map(int, sys.argv[2:6])
seed = int(sys.argv[6]) if len(sys.argv) > 6 else 1
rng = random.Random(seed)
h = bytearray(352)
struct.pack_into("<i", h, 0, 348)
struct.pack_into("<8h", h, 40, 4, x, y, z, t, 1, 1, 1)
struct.pack_into("<hh", h, 70, 16, 32)
struct.pack_into("<8f", h, 76, 1, 1.2, 1.2, 2.0, 1, 1, 1, 1)
struct.pack_into("<f", h, 108, 352.0)
struct.pack_into("<f", h, 112, 1.0)
struct.pack_into("<B", h, 123, 2)  # mm
struct.pack_into("<hh", h, 252, 1, 1)
struct.pack_into("<4f", h, 280, 1.2, 0, 0, -30)
struct.pack_into("<4f", h, 296, 0, 1.2, 0, -40)
struct.pack_into("<4f", h, 312, 0, 0, 2.0, -10)
h[344:348] = b"n+1\0"
vals = []
for c in range(t):
    for k in range(z):
        for j in range(y):
            for i in range(x):
                inside = ((i - x / 2) / (x * 0.4)) ** 2 + ((j - y / 2) / (y * 0.45)) ** 2 < 1
                vals.append((500 + 100 * c + 300 * (((i - x * 0.6) ** 2 + (j - y * 0.45) ** 2) < (x * 0.1) ** 2)) * inside + rng.random() * 20 * inside)
with gzip.open(out, "wb") as f:
    f.write(bytes(h) + struct.pack(f"<{len(vals)}f", *vals))
