#!/usr/bin/env python3
"""PyTorch reference for whole networks (ctest: torch_reference).

For 2D and 3D variational U-Nets made by `vbseg create` (with the latent
head and the heteroscedastic head), rebuild the same architecture in
PyTorch from the stored tensors and compare `vbseg run --raw` outputs:
  - mean mode: weights = mu;
  - sample mode: weights = mu + softplus(rho) * eps, with eps recomputed
    here from the documented RNG (Philox4x32-10 keyed by the seed, counter
    (element/4, stream, sample), Box-Muller on lane pairs), so the test
    also pins the sampling scheme.
Usage: torch_reference.py BUILD_DIR   (run with Debian's /usr/bin/python3)
Prints "torch_reference: N passed, N failed".
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF


def philox(c, key):
    """c: 4 uint64 arrays holding 32-bit counters; key: (k0, k1)."""
    c0, c1, c2, c3 = [x.astype(np.uint64) for x in c]
    k0, k1 = key
    for _ in range(10):
        p0 = c0 * np.uint64(M0)
        p1 = c2 * np.uint64(M1)
        n0 = (p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0)
        n1 = p1 & np.uint64(MASK)
        n2 = (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1)
        n3 = p0 & np.uint64(MASK)
        c0, c1, c2, c3 = n0, n1, n2, n3
        k0 = (k0 + W0) & MASK
        k1 = (k1 + W1) & MASK
    return c0, c1, c2, c3


def randn(seed, sample, stream, n):
    blocks = (n + 3) // 4
    blk = np.arange(blocks, dtype=np.uint64)
    ctr = (blk & np.uint64(MASK), (blk >> np.uint64(32)) ^ np.uint64(((sample >> 32) << 16) & MASK),
           np.full(blocks, stream, dtype=np.uint64), np.full(blocks, sample & MASK, dtype=np.uint64))
    r = philox(ctr, (seed & MASK, (seed >> 32) & MASK))
    u = [((x >> np.uint64(8)).astype(np.float64) + 1.0) / 16777216.0 for x in r]
    out = np.empty((blocks, 4))
    for j in (0, 2):
        rad = np.sqrt(-2.0 * np.log(u[j]))
        th = 2 * np.pi * u[j + 1]
        out[:, j] = rad * np.cos(th)
        out[:, j + 1] = rad * np.sin(th)
    return out.reshape(-1)[:n].astype(np.float32)


def load_tensors(d):
    t = {}
    for line in open(os.path.join(d, "manifest.txt")):
        i, role, name = line.split()
        t[name] = (int(i), role, np.load(os.path.join(d, f"{i}.npy")))
    return t


def weights(t, mode, seed):
    w = {}
    for name, (i, role, a) in t.items():
        if role == "rho":
            continue
        if role == "mu" and mode == "sample":
            rho = t[name + ".rho"][2]
            eps = randn(seed, 0, i + 1, a.size).reshape(a.shape)
            a = a + np.log1p(np.exp(rho)) * eps
        w[name] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return w


def norm(w, x, name):
    """The builders' norm `name` in inference mode (none when it has no scale)."""
    if name + ".scale" not in w:
        return x
    if name + ".running_mean" in w:  # inference: the running statistics
        return F.batch_norm(x, w[name + ".running_mean"], w[name + ".running_var"], w[name + ".scale"], w[name + ".bias"], eps=1e-5)
    return F.instance_norm(x, weight=w[name + ".scale"], bias=w[name + ".bias"], eps=1e-5)


def unet(x, w, depth, dims, latent, hetero, norm_fn=None, sample_z=None):
    """The U-Net of `vbseg create`. norm_fn(x, name), if given, replaces the inference-mode norms;
    sample_z(mean, rho), if given, makes the latent's z (else z = mean, as in mean mode)."""
    conv = F.conv2d if dims == 2 else F.conv3d
    convt = F.conv_transpose2d if dims == 2 else F.conv_transpose3d
    pool = F.max_pool2d if dims == 2 else F.max_pool3d

    def c(x, name, pad):
        return conv(x, w[name + ".weight"], w[name + ".bias"], padding=pad)

    nrm = norm_fn or (lambda x, name: norm(w, x, name))

    def block(x, name):
        x = F.relu(nrm(c(x, name + ".conv1", 1), name + ".norm1"))
        return F.relu(nrm(c(x, name + ".conv2", 1), name + ".norm2"))

    skips = []
    for l in range(depth):
        x = block(x, f"enc{l}")
        skips.append(x)
        x = pool(x, 2)
    x = block(x, "bottleneck")
    if latent:
        g = x.mean(dim=tuple(range(2, x.dim())), keepdim=True)
        z = c(g, "latent.mu", 0)  # GaussianSample in mean mode, and in sample mode its eps is checked separately
        if sample_z:
            z = sample_z(z, c(g, "latent.rho", 0))
        x = torch.cat([x, z.expand(-1, -1, *x.shape[2:])], 1)
    for l in reversed(range(depth)):
        x = convt(x, w[f"up{l}.weight"], w[f"up{l}.bias"], stride=2)
        x = torch.cat([x, skips[l]], 1)
        x = block(x, f"dec{l}")
    outs = [c(x, "logits", 0)]
    if hetero:
        outs.append(c(x, "logvar", 0))
    return outs


def main():
    build = sys.argv[1]
    vbseg = os.path.join(build, "vbseg")
    dump = os.path.join(build, "tests", "dump_tensors")
    passed = failed = 0
    torch.set_num_threads(1)
    cases = [  # dims, in, classes, base, depth, latent, hetero, spatial, norm
        (2, 4, 3, 4, 2, 0, 1, (24, 20), "none"),
        (2, 2, 1, 4, 3, 3, 0, (16, 24), "instance"),
        (3, 2, 2, 2, 2, 2, 1, (8, 12, 8), "instance"),
        (2, 3, 2, 4, 2, 0, 0, (16, 16), "batch"),
    ]
    rng = np.random.default_rng(5)
    with tempfile.TemporaryDirectory() as tmp:
        for k, (dims, cin, classes, base, depth, latent, hetero, spatial, norm) in enumerate(cases):
            model = os.path.join(tmp, f"m{k}.vbseg")
            args = [vbseg, "create", "--arch", "unet", "--dims", str(dims), "--in-channels", str(cin), "--classes", str(classes),
                    "--base", str(base), "--depth", str(depth), "--latent", str(latent), "--rho", "-2.5", "--seed", str(k + 3), "--norm", norm,
                    "--out", model] + (["--hetero"] if hetero else [])
            subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
            td = os.path.join(tmp, f"t{k}")
            os.mkdir(td)
            subprocess.run([dump, model, td], check=True)
            t = load_tensors(td)
            x = rng.standard_normal((cin,) + spatial).astype(np.float32)
            xin = os.path.join(tmp, f"x{k}.npy")
            np.save(xin, x)
            for mode in ("mean", "sample"):
                if mode == "sample" and latent:
                    continue  # the latent's eps belongs to its node, not a weight: covered by test_ops
                out = os.path.join(tmp, f"o{k}{mode}")
                subprocess.run([vbseg, "run", "--model", model, "--input", xin, "--out", out, "--raw", "--mode", mode,
                                "--seed", "77"], check=True, stdout=subprocess.DEVNULL)
                with torch.no_grad():
                    ref = unet(torch.from_numpy(x)[None], weights(t, mode, 77), depth, dims, latent, hetero)
                for name, r in zip(["logits", "logvar"], ref):
                    got = np.load(os.path.join(out, name + ".npy"))
                    r = r.numpy()
                    ok = got.shape == r.shape and np.allclose(got, r, atol=1e-4, rtol=1e-3)
                    err = float(np.abs(got - r).max()) if got.shape == r.shape else float("inf")
                    label = f"{dims}D unet base {base} depth {depth} latent {latent} norm {norm} {mode} {name}"
                    if ok:
                        passed += 1
                    else:
                        failed += 1
                        print(f"FAIL {label}: shape {got.shape} vs {r.shape}, max error {err:.3g}")
                        print("  got ", got.reshape(-1)[:4], "\n  want", r.reshape(-1)[:4])
                    print(f"{'ok  ' if ok else 'FAIL'} {label}: max |diff| {err:.2e}")
    print(f"torch_reference: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
