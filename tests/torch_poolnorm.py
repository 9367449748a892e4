#!/usr/bin/env python3
"""PyTorch reference for the pooling and normalisation backward passes
(ctest: torch_poolnorm).

`test_grad_poolnorm --dump DIR` writes fixed cases: inputs, dy, the fast
forward's y and the fast backward's dx, and for BatchNormalization in
training mode the running statistics after vbs_batch_norm_update_running.
Here each case is rebuilt with torch.nn.functional and autograd:
  - MaxPool on values 0, 1, 2 (ties everywhere): the gradient must go where
    PyTorch sends it (the first maximum of each window);
  - AveragePool with count_include_pad 0/1 and ceil_mode, GlobalAveragePool;
  - BatchNormalization in training mode: y, dx, dscale, dbias, and the
    running mean and variance after one step, against F.batch_norm with
    momentum = 1 - ONNX momentum (ONNX 0.9 = PyTorch 0.1);
  - BatchNormalization in inference mode (frozen statistics): the gradients
    of all five inputs from autograd through the formula in float64;
  - InstanceNormalization: y, dx, dscale, dbias against F.instance_norm.
Usage: torch_poolnorm.py BUILD_DIR   (run with Debian's /usr/bin/python3)
Prints "torch_poolnorm: N passed, N failed".
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

passed = failed = 0


def check(name, got, want, atol=1e-5, rtol=1e-4):
    global passed, failed
    want = np.asarray(want, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if got.shape != want.shape:
        print(f"FAIL {name}: shape {got.shape}, want {want.shape}")
        failed += 1
        return
    err = np.abs(got - want)
    bad = err > atol + rtol * np.abs(want)
    if bad.any():
        idx = np.argwhere(bad)[:3]
        for i in idx:
            t = tuple(i)
            print(f"  {name}{list(t)}: got {got[t]:.7g}, want {want[t]:.7g}")
        print(f"FAIL {name}: {int(bad.sum())} of {bad.size} differ, max error {err.max():.3g}")
        failed += 1
    else:
        passed += 1


def ints(v):
    return [int(t) for t in v.split(",")]


def main():
    global failed
    build = sys.argv[1]
    exe = os.path.join(build, "tests", "test_grad_poolnorm")
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([exe, "--dump", d], check=True)
        with open(os.path.join(d, "manifest.txt")) as f:
            lines = [ln.split() for ln in f if ln.strip()]

        def load(name, what):
            return np.load(os.path.join(d, f"{name}_{what}.npy"))

        for name, op, *spec in lines:
            kv = dict(s.split("=") for s in spec if "=" in s)
            x0 = torch.tensor(load(name, "x0"), dtype=torch.float32, requires_grad=True)
            dy = torch.tensor(load(name, "dy"))
            nsp = x0.dim() - 2
            if op in ("MaxPool", "AveragePool"):
                k, s, dil, p = ints(kv["k"]), ints(kv["s"]), ints(kv["d"]), ints(kv["p"])
                ceil = kv["ceil"] == "1"
                if op == "MaxPool":
                    fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[nsp - 1]
                    y = fn(x0, k, s, p, dil, ceil_mode=ceil)
                else:
                    assert all(v == 1 for v in dil)
                    fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nsp - 1]
                    y = fn(x0, k, s, p, ceil_mode=ceil, count_include_pad=kv["cip"] == "1")
                y.backward(dy)
                check(f"{name} y", load(name, "y"), y.detach().numpy())
                check(f"{name} dx", load(name, "dx0"), x0.grad.numpy())
            elif op == "GlobalAveragePool":
                y = x0.mean(dim=tuple(range(2, x0.dim())), keepdim=True)
                y.backward(dy)
                check(f"{name} y", load(name, "y"), y.detach().numpy())
                check(f"{name} dx", load(name, "dx0"), x0.grad.numpy())
            elif op == "BatchNormalization" and kv["training"] == "1":
                w = torch.tensor(load(name, "x1"), requires_grad=True)
                b = torch.tensor(load(name, "x2"), requires_grad=True)
                rm, rv = torch.tensor(load(name, "x3")), torch.tensor(load(name, "x4"))
                y = F.batch_norm(x0, rm, rv, w, b, training=True, momentum=1 - float(kv["momentum"]), eps=float(kv["eps"]))
                y.backward(dy)
                check(f"{name} y", load(name, "y"), y.detach().numpy())
                check(f"{name} dx", load(name, "dx0"), x0.grad.numpy())
                check(f"{name} dscale", load(name, "dx1"), w.grad.numpy())
                check(f"{name} dbias", load(name, "dx2"), b.grad.numpy())
                check(f"{name} running mean", load(name, "rm"), rm.numpy(), 1e-6, 1e-5)
                check(f"{name} running var", load(name, "rv"), rv.numpy(), 1e-6, 1e-5)
            elif op == "BatchNormalization":
                x = x0.detach().double().requires_grad_()
                p = [torch.tensor(load(name, f"x{i}"), dtype=torch.float64, requires_grad=True) for i in range(1, 5)]
                sh = [1, -1] + [1] * nsp
                w, b, rm, rv = (t.view(sh) for t in p)
                y = w * (x - rm) / torch.sqrt(rv + float(kv["eps"])) + b
                y.backward(dy.double())
                check(f"{name} y", load(name, "y"), y.detach().numpy())
                check(f"{name} dx", load(name, "dx0"), x.grad.numpy())
                for i, what in enumerate(("dscale", "dbias", "drunning_mean", "drunning_var")):
                    check(f"{name} {what}", load(name, f"dx{i + 1}"), p[i].grad.numpy())
            elif op == "InstanceNormalization":
                w = torch.tensor(load(name, "x1"), requires_grad=True)
                b = torch.tensor(load(name, "x2"), requires_grad=True)
                y = F.instance_norm(x0, weight=w, bias=b, eps=float(kv["eps"]))
                y.backward(dy)
                check(f"{name} y", load(name, "y"), y.detach().numpy())
                check(f"{name} dx", load(name, "dx0"), x0.grad.numpy())
                check(f"{name} dscale", load(name, "dx1"), w.grad.numpy())
                check(f"{name} dbias", load(name, "dx2"), b.grad.numpy())
            else:
                print(f"FAIL {name}: unknown op {op}")
                failed += 1
    if len(lines) != 17:
        print(f"FAIL {len(lines)} cases dumped, expected 17")
        failed += 1
    print(f"torch_poolnorm: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
