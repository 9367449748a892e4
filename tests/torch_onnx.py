#!/usr/bin/env python3
"""ONNX from PyTorch's own exporter, imported by `vbseg convert` (ctest: torch_onnx).

Small U-Net and FCN models in 2D and 3D that use ConvTranspose, Concat,
MaxPool, AveragePool, InstanceNormalization, Resize (nearest and linear),
Pad, LeakyRelu, Softmax, Sigmoid and BatchNormalization (folded into its
Conv for deterministic conversions) are exported with torch.onnx.export at
opsets 11, 13 and 17, converted, and run with `vbseg run --raw --mode mean`;
the outputs must equal PyTorch's (atol 1e-4, rtol 1e-3). The MOPED
conversion must make the conv weights variational with sigma = 0.1 |w| and
leave the mean-mode outputs unchanged.
Usage: torch_onnx.py BUILD_DIR   (Debian's /usr/bin/python3 with python3-torch)
"""
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

warnings.filterwarnings("ignore")


class UNet(nn.Module):
    def __init__(self, dims):
        super().__init__()
        C, N, CT = (nn.Conv2d, nn.InstanceNorm2d, nn.ConvTranspose2d) if dims == 2 else (nn.Conv3d, nn.InstanceNorm3d, nn.ConvTranspose3d)
        self.dims = dims
        self.c1 = C(2, 4, 3, padding=1)
        self.n1 = N(4, affine=True)
        self.c2 = C(4, 8, 3, padding=1)
        self.up = CT(8, 4, 2, stride=2)
        self.c3 = C(8, 3, 3)

    def forward(self, x):
        mp, ap = (F.max_pool2d, F.avg_pool2d) if self.dims == 2 else (F.max_pool3d, F.avg_pool3d)
        a = F.leaky_relu(self.n1(self.c1(x)), 0.1)
        b = F.relu(self.c2(mp(a, 2)))
        b2 = F.interpolate(ap(b, 2), scale_factor=2, mode="nearest")
        u = self.up(b + b2)
        y = self.c3(F.pad(torch.cat([u, a], 1), (1, 1) * self.dims))
        return F.softmax(y, 1), torch.sigmoid(y)


class FCN(nn.Module):
    def __init__(self, dims):
        super().__init__()
        C, B = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        self.dims = dims
        self.c1 = C(2, 6, 3, padding=1, stride=2)
        self.bn = B(6)
        with torch.no_grad():  # trained-looking statistics, so that folding matters
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.2, 0.2)
        self.c2 = C(6, 6, 3, padding=2, dilation=2)
        self.head = C(6, 2, 1)

    def forward(self, x):
        y = self.head(F.leaky_relu(self.c2(F.relu(self.bn(self.c1(x)))), 0.2))
        mode = "bilinear" if self.dims == 2 else "trilinear"
        return torch.sigmoid(F.interpolate(y, scale_factor=2, mode=mode, align_corners=False))


def main():
    build = sys.argv[1]
    vbseg = os.path.join(build, "vbseg")
    torch.manual_seed(0)
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for dims in (2, 3):
            shape = (1, 2, 16, 16) if dims == 2 else (1, 2, 8, 16, 16)
            x = torch.randn(shape)
            np.save(os.path.join(tmp, f"x{dims}.npy"), x[0].numpy())
            for name, model in (("unet", UNet(dims)), ("fcn", FCN(dims))):
                model.eval()
                with torch.no_grad():
                    ref = model(x)
                ref = ref if isinstance(ref, tuple) else (ref,)
                outs = [f"out{i}" for i in range(len(ref))]
                for opset in (11, 13, 17):
                    label = f"{name} {dims}D opset {opset}"
                    onnx_path = os.path.join(tmp, f"{name}{dims}_{opset}.onnx")
                    torch.onnx.export(model, x, onnx_path, opset_version=opset, input_names=["x"], output_names=outs)
                    for sigma in ("none", "moped:0.1"):
                        vb = os.path.join(tmp, f"{name}{dims}_{opset}_{sigma[:4]}.vbseg")
                        r = subprocess.run([vbseg, "convert", onnx_path, vb, "--sigma-init", sigma], capture_output=True, text=True)
                        if r.returncode:
                            failed += 1
                            print(f"FAIL {label} {sigma}: convert: {r.stderr.strip()}")
                            continue
                        if sigma != "none":
                            info = subprocess.run([vbseg, "info", "--json", vb], capture_output=True, text=True).stdout
                            import json
                            d = json.loads(info)
                            ok = d["variational_parameters"] > 0 and d["sigma"]["max"] > 0
                            passed += ok
                            failed += not ok
                            if not ok:
                                print(f"FAIL {label}: no variational parameters after MOPED: {info[:200]}")
                        od = os.path.join(tmp, "o")
                        r = subprocess.run([vbseg, "run", "--model", vb, "--input", os.path.join(tmp, f"x{dims}.npy"), "--out", od,
                                            "--raw", "--mode", "mean"], capture_output=True, text=True)
                        if r.returncode:
                            failed += 1
                            print(f"FAIL {label} {sigma}: run: {r.stderr.strip()}")
                            continue
                        for o, want in zip(outs, ref):
                            got = np.load(os.path.join(od, o + ".npy"))
                            want = want.numpy()
                            ok = got.shape == want.shape and np.allclose(got, want, atol=1e-4, rtol=1e-3)
                            err = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
                            passed += ok
                            failed += not ok
                            print(f"{'ok  ' if ok else 'FAIL'} {label} {sigma} {o}: max |diff| {err:.2e}")
    print(f"torch_onnx: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
