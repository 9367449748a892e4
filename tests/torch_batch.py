#!/usr/bin/env python3
"""Batched .npy inputs and fixed-size models against PyTorch (ctest: torch_batch).

Networks exported by torch.onnx.export and converted with `vbseg convert`:
 - a U-Net exported with dynamic_axes (N, H, W): a (3, C, H, W) array through
   `vbseg run --raw` equals PyTorch's batched output; without --raw the three
   images' maps (N leading) equal three single-image runs byte for byte
   (each image normalised on its own), and in mean mode equal PyTorch's
   output per image;
 - the same U-Net exported at a fixed 1x2x16x16: a smaller image equals
   PyTorch on the zero-padded (centred) image, cropped back; a larger one
   (and one smaller on one axis, larger on the other) equals the windows'
   PyTorch outputs blended in NumPy with the documented Gaussian weights;
 - a per-voxel (1x1 conv) network at a fixed 1x2x8x8 and a 3D one at a
   fixed 1x2x4x5x6: the windowed result equals PyTorch on the whole image,
   and in sample mode equals vbseg's own whole-image run of the same network
   exported with dynamic axes;
 - the U-Net at a fixed batch 2: its maps over a volume (slices two per
   pass) and a large image (windows two per pass) equal the batch-1 model's,
   sampled weights included;
 - fixed-batch and ambiguous refusals name the numbers and shapes.
Usage: torch_batch.py BUILD_DIR   (Debian's /usr/bin/python3 with python3-torch)
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_onnx import UNet  # noqa: E402  (2 channels in, softmax and sigmoid of 3 classes out; needs multiples of 4)

warnings.filterwarnings("ignore")

passed = failed = 0


def check(ok, what):
    global passed, failed
    passed += bool(ok)
    failed += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {what}")


def close(got, want, what, atol=1e-5, rtol=1e-4):
    ok = got.shape == want.shape and np.allclose(got, want, atol=atol, rtol=rtol)
    err = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    check(ok, f"{what}: shape {got.shape} vs {want.shape}, max |diff| {err:.2e}")


class Pointwise(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.c = (nn.Conv2d if dims == 2 else nn.Conv3d)(2, 3, 1)

    def forward(self, x):
        return torch.softmax(self.c(x), 1)


def main():
    build = sys.argv[1]
    vbseg = os.path.join(build, "vbseg")
    torch.manual_seed(0)
    rng = np.random.default_rng(5)
    tmp = tempfile.mkdtemp(prefix="vbs_torch_batch.")

    def run(*args, expect=0):
        r = subprocess.run([vbseg, *args], capture_output=True, text=True)
        if (r.returncode == 0) != (expect == 0):
            check(False, f"vbseg {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
            return None
        return r

    def save(name, a):
        p = os.path.join(tmp, name)
        np.save(p, np.ascontiguousarray(a, dtype=np.float32))
        return p

    def load(d, f):
        return np.load(os.path.join(tmp, d, f + ".npy"))

    def card(path, norm, patch):
        c = {"channels": ["a", "b"], "normalization": norm, "spatial_dims": len(patch), "patch": list(patch),
             "labels": {"0": "background", "1": "one", "2": "two"}, "output_activation": "none"}
        with open(path, "w") as f:
            json.dump(c, f)
        return path

    def export(model, shape, name, dynamic, sigma="none", norm="none", names=("o0", "o1")):
        onnx = os.path.join(tmp, name + ".onnx")
        out = list(names)
        axes = None
        if dynamic:
            sp = ["D", "H", "W"][3 - (len(shape) - 2):]
            ax = {0: "N", **{2 + i: s for i, s in enumerate(sp)}}
            axes = {"image": ax, **{o: ax for o in out}}
        torch.onnx.export(model, torch.zeros(shape), onnx, opset_version=13, input_names=["image"], output_names=out,
                          dynamic_axes=axes)
        vb = os.path.join(tmp, name + ".vbseg")
        r = run("convert", onnx, vb, "--sigma-init", sigma, "--card", card(os.path.join(tmp, name + ".json"), norm, shape[2:]))
        return vb if r else None

    unet = UNet(2).eval()

    def fwd(x):  # PyTorch's output 0 for a (N, C, H, W) array
        with torch.no_grad():
            return unet(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))[0].numpy()

    # ---- a batch of three through --raw and through MC ----------------------------
    dyn = export(unet, (1, 2, 16, 16), "dyn", True)
    dyn_z = export(unet, (1, 2, 16, 16), "dyn_z", True, sigma="moped:0.2", norm="zscore_nonzero")
    x3 = rng.standard_normal((3, 2, 16, 20)).astype(np.float32) * np.array([1, 3, 0.5], np.float32)[:, None, None, None] + 0.5
    p3 = save("x3.npy", x3)
    if run("run", "--model", dyn, "--input", p3, "--out", os.path.join(tmp, "raw3"), "--raw", "--mode", "mean"):
        with torch.no_grad():
            want = unet(torch.from_numpy(x3))
        close(load("raw3", "o0"), want[0].numpy(), "--raw (3,2,16,20): output 0 equals PyTorch's batched output")
        close(load("raw3", "o1"), want[1].numpy(), "--raw (3,2,16,20): output 1 equals PyTorch's batched output")
    if run("run", "--model", dyn, "--input", p3, "--out", os.path.join(tmp, "mean3"), "--mode", "mean"):
        close(load("mean3", "prob_mean"), fwd(x3), "MC mean mode (3,2,16,20): prob_mean[n] equals PyTorch on image n")
    if run("run", "--model", dyn_z, "--input", p3, "--out", os.path.join(tmp, "mc3"), "--samples", "4", "--seed", "7"):
        maps = ["labels", "prob_mean", "prob_var", "entropy", "aleatoric_entropy", "epistemic_mi"]
        same = True
        for n in range(3):
            pn = save(f"x3_{n}.npy", x3[n])
            if not run("run", "--model", dyn_z, "--input", pn, "--out", os.path.join(tmp, f"mc1_{n}"), "--samples", "4", "--seed", "7"):
                same = False
                continue
            for mname in maps:
                a, b = load("mc3", mname), load(f"mc1_{n}", mname)
                if a.shape[1:] != b.shape or not np.array_equal(a[n], b):
                    same = False
                    print(f"  {mname}[{n}]: batch {a.shape} differs from the single run {b.shape}")
        check(same and load("mc3", "prob_mean").shape == (3, 3, 16, 20),
              "MC (3,2,16,20) with per-image z-score: every map [n] equals the single run of image n, byte for byte")
        check(load("mc3", "epistemic_mi").max() > 0, "MC batch: the MOPED model's mutual information is not all 0")

    # ---- a model fixed at 1x2x16x16 -------------------------------------------------
    fixed = export(unet, (1, 2, 16, 16), "fixed", False)

    def padded_ref(img, pp):  # img (C, H, W) -> PyTorch on the centred zero padding, cropped back
        h, w = img.shape[1:]
        t, l = (pp[0] - h) // 2, (pp[1] - w) // 2
        xp = np.zeros((1, img.shape[0], *pp), np.float32)
        xp[0, :, t:t + h, l:l + w] = img
        return fwd(xp)[0, :, t:t + h, l:l + w]

    def starts(size, ws, overlap=0.5):
        if size <= ws:
            return [0]
        n = math.ceil((size - ws) / max(ws * (1 - overlap), 1)) + 1
        return [int(math.floor(i * (size - ws) / (n - 1) + 0.5)) for i in range(n)]

    def blended_ref(img, ws_fixed):  # windows of the fixed size, Gaussian-blended in NumPy
        c, h, w = img.shape
        ws = [min(h, ws_fixed[0]), min(w, ws_fixed[1])]
        st = [starts(h, ws[0]), starts(w, ws[1])]
        g = np.ones(ws)
        for ax in range(2):
            if len(st[ax]) > 1:
                q = np.arange(ws[ax]) - (ws[ax] - 1) / 2
                e = np.exp(-0.5 * (q / (ws[ax] / 8)) ** 2)
                g = g * (e[:, None] if ax == 0 else e[None, :])
        g = np.maximum(g, 1e-4)
        acc = np.zeros((3, h, w))
        wsum = np.zeros((h, w))
        for a in st[0]:
            for b in st[1]:
                p = padded_ref(img[:, a:a + ws[0], b:b + ws[1]], ws_fixed)
                acc[:, a:a + ws[0], b:b + ws[1]] += g * p
                wsum[a:a + ws[0], b:b + ws[1]] += g
        return (acc / wsum).astype(np.float32)

    for name, (h, w) in (("smaller", (11, 13)), ("larger", (24, 37)), ("smaller x larger", (11, 37))):
        img = rng.standard_normal((2, h, w)).astype(np.float32)
        p = save(f"f_{h}x{w}.npy", img)
        if run("run", "--model", fixed, "--input", p, "--out", os.path.join(tmp, f"f_{h}x{w}"), "--mode", "mean"):
            want = padded_ref(img, (16, 16)) if h <= 16 and w <= 16 else blended_ref(img, (16, 16))
            close(load(f"f_{h}x{w}", "prob_mean"), want, f"fixed 16x16 model, {name} image {h}x{w}: "
                  + ("PyTorch on the centred zero padding" if h <= 16 and w <= 16 else "PyTorch windows blended in NumPy"))
    # the graph's own shape through --raw; another batch refused with both numbers
    img = rng.standard_normal((1, 2, 16, 16)).astype(np.float32)
    if run("run", "--model", fixed, "--input", save("f1.npy", img), "--out", os.path.join(tmp, "f1"), "--raw", "--mode", "mean"):
        close(load("f1", "o0"), fwd(img), "--raw on the fixed model's own shape (1,2,16,16)")
    r = run("run", "--model", fixed, "--input", p3, "--out", os.path.join(tmp, "nope"), "--raw", expect=1)
    check(r is not None and "N = 3" in r.stderr and "fixed at 1" in r.stderr and r.stderr.count("\n") == 1,
          f"--raw N=3 on a fixed batch of 1 refused naming both: {r.stderr.strip() if r else ''}")

    # ---- per-voxel networks at fixed sizes: windows equal the whole image -----------
    for dims, fshape, img_shape in ((2, (1, 2, 8, 8), (2, 20, 13)), (3, (1, 2, 4, 5, 6), (2, 9, 3, 13))):
        pw = Pointwise(dims).eval()
        fx = export(pw, fshape, f"pw{dims}", False, sigma="moped:0.3", names=("p",))
        dx = export(pw, fshape, f"pw{dims}_dyn", True, sigma="moped:0.3", names=("p",))
        img = rng.standard_normal(img_shape).astype(np.float32)
        p = save(f"pw{dims}.npy", img)
        with torch.no_grad():
            want = pw(torch.from_numpy(img[None]))[0].numpy()
        if run("run", "--model", fx, "--input", p, "--out", os.path.join(tmp, f"pw{dims}_mean"), "--mode", "mean"):
            close(load(f"pw{dims}_mean", "prob_mean"), want, f"{dims}D per-voxel network fixed at {fshape[2:]}, image {img_shape[1:]}: "
                  "windows equal PyTorch on the whole image")
        ok = run("run", "--model", fx, "--input", p, "--out", os.path.join(tmp, f"pw{dims}_s"), "--samples", "3", "--seed", "2") and \
            run("run", "--model", dx, "--input", p, "--out", os.path.join(tmp, f"pw{dims}_d"), "--samples", "3", "--seed", "2")
        if ok:
            for mname in ("prob_mean", "prob_var", "epistemic_mi"):
                close(load(f"pw{dims}_s", mname), load(f"pw{dims}_d", mname), f"{dims}D per-voxel, sampled: windowed {mname} equals "
                      "the whole-image run", atol=2e-6)

    # ---- a fixed batch of 2 equals a batch of 1 --------------------------------------
    b1 = export(unet, (1, 2, 16, 16), "b1", False, sigma="moped:0.2")
    b2 = export(unet, (2, 2, 16, 16), "b2", False, sigma="moped:0.2")
    vol = save("vol.npy", rng.standard_normal((1, 2, 5, 16, 16)))  # one volume, five slices
    big = save("big.npy", rng.standard_normal((2, 24, 37)))          # eight windows
    for what, p in (("volume of 5 slices", vol), ("24x37 image in 8 windows", big)):
        r2 = run("run", "--model", b2, "--input", p, "--out", os.path.join(tmp, "b2"), "--samples", "3", "--seed", "4", "--verbose")
        r1 = run("run", "--model", b1, "--input", p, "--out", os.path.join(tmp, "b1"), "--samples", "3", "--seed", "4")
        if r1 and r2:
            check("2 per pass of batch 2" in r2.stderr, f"fixed batch 2, {what}: two per pass ({r2.stderr.strip()})")
            for mname in ("prob_mean", "prob_var", "epistemic_mi", "labels"):
                close(load("b2", mname), load("b1", mname), f"fixed batch 2, {what}: {mname} equals the batch-1 model's", atol=2e-6)

    # ---- shapes a model cannot read unambiguously ---------------------------------------
    r = run("run", "--model", dyn, "--input", save("amb.npy", rng.standard_normal((2, 5, 16, 16))), "--out", os.path.join(tmp, "nope"), expect=1)
    check(r is not None and "(2,H,W) one image, (N,2,H,W) a batch, or (N,2,D,H,W) volumes" in r.stderr and "5 channels" in r.stderr,
          f"(2,5,16,16) for a 2-channel 2D model refused with the accepted shapes: {r.stderr.strip() if r else ''}")
    check(not os.path.exists(os.path.join(tmp, "nope")), "a refused array writes nothing")
    print(f"torch_batch: {passed} passed, {failed} failed")
    subprocess.run(["rm", "-rf", tmp])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
