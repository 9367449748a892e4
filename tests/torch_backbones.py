#!/usr/bin/env python3
"""PyTorch reference for the V-Net, FCN-8s (and U-Net) builders (ctest: torch_backbones).

For 2D and 3D variational V-Nets and FCN-8s made by `vbseg create` (each
norm; with and without the latent and heteroscedastic heads; 1, base and
other input channel counts for the V-Net's first residual), a U-Net, and
--deterministic models of each family:
  - the file loads and validates (`vbseg info --json`: the format's checks,
    shape inference on the card's patch) and its mean and variational
    parameter counts equal the counts worked out here from the architecture
    (a formula, not the file);
  - FCN's upsamplings start as bilinear interpolation (Long et al.'s
    get_upsampling_weight, written here);
  - the same network rebuilt in PyTorch from the stored tensors gives
    `vbseg run --raw`'s outputs in mean mode, and in sample mode (weights
    mu + softplus(rho) * eps, eps recomputed from the documented RNG) where
    there is no latent and no dropout;
  - with --dropout, the Dropout nodes are exactly those vnet.h and fcn.h
    document (names and ratio), and mean mode (Dropout the identity) equals
    the same rebuild without them;
  - `vbseg info --shape`'s FLOPs per pass equal those of the rebuilt
    network's convolutions, counted as they run;
  - --deterministic: every tensor plain, each equal bit for bit to the mean
    of the variational model of the same options and seed, no variational
    parameter counted; `vbseg run --samples 4` gives MI exactly 0 and the
    mean pass's bytes without dropout and latent, MI > 0 with either; info
    says which (nothing, dropout, or the latent alone);
  - `vbseg run` at a size the network cannot take (depth >= 2) equals
    PyTorch on the input normalised, zero-padded (centred) to a multiple
    of 2^depth and cropped back, as the README says run does.
Usage: torch_backbones.py BUILD_DIR   (run with Debian's /usr/bin/python3)
Prints "torch_backbones: N passed, N failed".
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_reference import load_tensors, norm as ref_norm, unet as ref_unet, weights  # noqa: E402


def ops(dims):
    if dims == 2:
        return F.conv2d, F.conv_transpose2d, F.max_pool2d
    return F.conv3d, F.conv_transpose3d, F.max_pool3d


FLOPS = [0.0]  # the rebuilt network's convolutions, 2 per multiply-add, counted as they run


def layers(w, dims):
    conv0, convt0, pool = ops(dims)

    def conv(x, wt, b=None, **kw):
        y = conv0(x, wt, b, **kw)
        FLOPS[0] += 2.0 * y.numel() * wt[0].numel()  # each output: C_in * k^d products
        return y

    def convt(x, wt, b=None, **kw):
        FLOPS[0] += 2.0 * x.numel() * wt[0].numel()  # each input: C_out * k^d products
        return convt0(x, wt, b, **kw)

    def c(x, name, stride=1):
        wt = w[name + ".weight"]
        return conv(x, wt, w[name + ".bias"], stride=stride, padding=wt.shape[-1] // 2 if stride == 1 else 0)

    def norm(x, name):
        return ref_norm(w, x, name)

    def prelu(x, name):
        return F.prelu(x, w[name + ".slope"].reshape(-1))

    def join(x, z):
        return torch.cat([x, z.expand(-1, -1, *x.shape[2:])], 1)

    def latent(x):  # GaussianSample in mean mode: z = mean (rho is computed all the same)
        g = x.mean(dim=tuple(range(2, x.dim())), keepdim=True)
        c(g, "latent.rho")
        return c(g, "latent.mu")

    return c, convt, pool, norm, prelu, join, latent


def vnet(x, w, a):
    """Milletari et al.'s V-Net as vnet.h describes it."""
    c, convt, _, norm, prelu, join, latent = layers(w, a["dims"])
    n_convs = lambda l: min(l + 1, 3)

    def stage(x, res, name, n):
        for i in range(1, n + 1):
            x = norm(c(x, f"{name}.conv{i}"), f"{name}.norm{i}")
            if i == n:
                x = x + res
            x = prelu(x, f"{name}.prelu{i}")
        return x

    res = x if a["cin"] in (1, a["base"]) else c(x, "enc0.skip")
    x = stage(x, res, "enc0", 1)
    skips = [x]
    for l in range(1, a["depth"] + 1):
        n = f"down{l - 1}"
        x = prelu(norm(c(x, n, stride=2), n + ".norm"), n + ".prelu")
        x = stage(x, x, f"enc{l}", n_convs(l))
        skips.append(x)
    z = latent(x) if a["latent"] else None
    for l in reversed(range(a["depth"])):
        n = f"up{l}"
        x = prelu(norm(convt(x, w[n + ".weight"], w[n + ".bias"], stride=2), n + ".norm"), n + ".prelu")
        x = torch.cat([x, skips[l]], 1)
        x = stage(x, x, f"dec{l}", n_convs(l))
    if z is not None:
        x = join(x, z)
    return [c(x, "logits")] + ([c(x, "logvar")] if a["hetero"] else [])


def unet(x, w, a):
    """The U-Net as unet.h describes it (torch_reference's rebuild)."""
    return ref_unet(x, w, a["depth"], a["dims"], a["latent"], a["hetero"])


def fcn(x, w, a):
    """Long et al.'s FCN-8s as fcn.h describes it."""
    c, convt, pool, norm, _, join, latent = layers(w, a["dims"])
    d = a["depth"]
    f = {}
    for l in range(d):
        for i in range(1, (2 if l < 2 else 3) + 1):
            x = F.relu(norm(c(x, f"stage{l}.conv{i}"), f"stage{l}.norm{i}"))
        x = pool(x, 2)
        if l >= d - 3:
            f[l - (d - 3) + 3] = x  # 3: pool depth-3's output, 4: pool depth-2's
    for i in (6, 7):
        x = F.relu(norm(c(x, f"conv{i}"), f"conv{i}.norm"))
    f[5] = x
    if a["latent"]:
        z = latent(x)
        f = {k: join(v, z) for k, v in f.items()}

    def head(p):
        s = convt(c(f[5], p + ".score5"), w[p + ".up5.weight"], stride=2, padding=1) + c(f[4], p + ".score4")
        s = convt(s, w[p + ".up4.weight"], stride=2, padding=1) + c(f[3], p + ".score3")
        up = 2 ** (d - 2)
        return convt(s, w[p + ".weight"], stride=up, padding=up // 2)

    return [head("logits")] + ([head("logvar")] if a["hetero"] else [])


def count(a):
    """(mean parameters, of which variational) from the architecture alone."""
    d, cin, base, K, L = a["dims"], a["cin"], a["base"], a["classes"], a["latent"]
    var = plain = 0
    nrm = {"none": 0, "instance": 2, "batch": 4}[a["norm"]]

    def conv(ci, co, k):
        nonlocal var
        var += co * ci * k ** d + co

    def norm(ch):
        nonlocal plain
        plain += nrm * ch

    if a["arch"] == "unet":
        def block(ci, co):
            conv(ci, co, 3); norm(co); conv(co, co, 3); norm(co)
        prev = cin
        for l in range(a["depth"]):
            block(prev, base * 2 ** l)
            prev = base * 2 ** l
        cb = base * 2 ** a["depth"]
        block(prev, cb)
        if L:
            conv(cb, L, 1); conv(cb, L, 1)
        prev = cb + L  # z joined at the bottleneck
        for l in reversed(range(a["depth"])):
            co = base * 2 ** l
            var += prev * co * 2 ** d + co  # the transposed conv
            block(2 * co, co)
            prev = co
        for _ in range(2 if a["hetero"] else 1):
            conv(prev, K, 1)
    elif a["arch"] == "vnet":
        n_convs = lambda l: min(l + 1, 3)
        ch = [base * 2 ** l for l in range(a["depth"] + 1)]
        conv(cin, base, 5); norm(base); plain += base
        if cin not in (1, base):
            conv(cin, base, 1)
        for l in range(1, a["depth"] + 1):
            conv(ch[l - 1], ch[l], 2); norm(ch[l]); plain += ch[l]
            for _ in range(n_convs(l)):
                conv(ch[l], ch[l], 5); norm(ch[l]); plain += ch[l]
        if L:
            conv(ch[-1], L, 1); conv(ch[-1], L, 1)
        prev = ch[-1]
        for l in reversed(range(a["depth"])):
            var += prev * ch[l] * 2 ** d + ch[l]; norm(ch[l]); plain += ch[l]  # the transposed conv
            for _ in range(n_convs(l)):
                conv(2 * ch[l], 2 * ch[l], 5); norm(2 * ch[l]); plain += 2 * ch[l]
            prev = 2 * ch[l]
        for _ in range(2 if a["hetero"] else 1):
            conv(prev + L, K, 1)
    else:
        D = a["depth"]
        ch = [base * 2 ** min(l, 3) for l in range(D)]
        prev = cin
        for l in range(D):
            for _ in range(2 if l < 2 else 3):
                conv(prev, ch[l], 3); norm(ch[l]); prev = ch[l]
        fc = 2 * ch[-1]
        conv(ch[-1], fc, 3); norm(fc); conv(fc, fc, 1); norm(fc)
        if L:
            conv(fc, L, 1); conv(fc, L, 1)
        for _ in range(2 if a["hetero"] else 1):
            conv(fc + L, K, 1); conv(ch[D - 2] + L, K, 1); conv(ch[D - 3] + L, K, 1)
            var += 2 * K * K * 4 ** d + K * K * (2 ** (D - 1)) ** d  # upsamplings: no bias
    # --deterministic: the same means, each a plain tensor
    return (var + plain, 0) if a.get("det") else (var + plain, var)


def bilinear(k, ch, dims):
    """Long et al.'s get_upsampling_weight, in dims dimensions."""
    factor = (k + 1) // 2
    centre = factor - 1 if k % 2 == 1 else factor - 0.5
    og = np.arange(k)
    f1 = 1 - abs(og - centre) / factor
    filt = f1
    for _ in range(dims - 1):
        filt = np.multiply.outer(filt, f1)
    w = np.zeros((ch, ch) + (k,) * dims, np.float32)
    for i in range(ch):
        w[i, i] = filt
    return w


def main():
    build = sys.argv[1]
    vbseg = os.path.join(build, "vbseg")
    dump = os.path.join(build, "tests", "dump_tensors")
    passed = failed = 0
    torch.set_num_threads(1)

    def check(ok, label, detail=""):
        nonlocal passed, failed
        passed += bool(ok)
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {label}{(': ' + detail) if detail else ''}")

    keys = ("arch", "dims", "cin", "classes", "base", "depth", "latent", "hetero", "norm", "spatial", "dropout", "det")
    cases = [dict(zip(keys, c)) for c in [
        ("vnet", 2, 4, 3, 4, 2, 0, 1, "none", (24, 20)),        # first residual: the input as it is (base channels)
        ("vnet", 2, 1, 2, 4, 3, 3, 0, "instance", (16, 24)),    # 1 channel, broadcast as the paper's
        ("vnet", 3, 3, 2, 2, 2, 2, 1, "instance", (8, 12, 8)),  # 3 channels: the 1x1 projection
        ("vnet", 2, 3, 1, 4, 2, 0, 0, "batch", (16, 16)),
        ("vnet", 3, 1, 2, 2, 1, 0, 0, "batch", (6, 8, 10)),
        ("vnet", 2, 2, 2, 3, 0, 2, 1, "instance", (7, 9)),      # depth 0: one stage, any size
        ("fcn", 2, 4, 3, 4, 3, 0, 1, "none", (24, 16)),
        ("fcn", 2, 2, 1, 2, 5, 3, 0, "instance", (32, 64)),     # VGG16's five pools: 8x upsampling
        ("fcn", 3, 2, 2, 2, 3, 2, 1, "instance", (8, 16, 8)),
        ("fcn", 2, 3, 2, 4, 4, 0, 0, "batch", (16, 32)),
        ("fcn", 3, 1, 2, 2, 3, 0, 0, "batch", (8, 8, 16)),
        # MC dropout: mean mode is the identity, so the rebuild without Dropout must match
        ("vnet", 2, 2, 3, 4, 2, 2, 1, "instance", (16, 20), 0.3),
        ("vnet", 3, 1, 2, 2, 1, 0, 0, "batch", (6, 8, 10), 0.2),
        ("fcn", 2, 3, 2, 4, 4, 2, 1, "instance", (16, 32), 0.3),
        ("fcn", 3, 2, 2, 2, 3, 0, 0, "none", (8, 16, 8), 0.1),
        # the U-Net too (its rebuild is torch_reference's), for the count of its parameters
        ("unet", 2, 4, 3, 4, 2, 3, 1, "instance", (16, 20)),
        # --deterministic (sigma = 0): plain weights, the variational model's means; with dropout, pure MC dropout
        ("unet", 2, 4, 3, 4, 2, 0, 1, "instance", (16, 20), 0, 1),
        ("unet", 3, 2, 2, 2, 2, 2, 0, "batch", (8, 8, 8), 0, 1),
        ("unet", 2, 4, 3, 4, 2, 0, 0, "instance", (16, 16), 0.1, 1),
        ("vnet", 2, 3, 2, 4, 2, 2, 1, "instance", (16, 16), 0, 1),
        ("vnet", 2, 1, 2, 4, 2, 0, 0, "none", (16, 24), 0, 1),
        ("fcn", 2, 2, 3, 2, 3, 3, 1, "instance", (16, 32), 0, 1),
        ("fcn", 2, 2, 2, 2, 3, 0, 0, "batch", (16, 16), 0, 1),
    ]]
    rng = np.random.default_rng(9)
    with tempfile.TemporaryDirectory() as tmp:
        for k, a in enumerate(cases):
            drop, det = a.get("dropout", 0), a.get("det", 0)
            tag = (f"{a['dims']}D {a['arch']} in {a['cin']} K {a['classes']} base {a['base']} depth {a['depth']} "
                   f"latent {a['latent']} hetero {a['hetero']} norm {a['norm']}" + (f" dropout {drop}" if drop else "")
                   + (" deterministic" if det else ""))
            model = os.path.join(tmp, f"m{k}.vbseg")
            args = [vbseg, "create", "--arch", a["arch"], "--dims", str(a["dims"]), "--in-channels", str(a["cin"]),
                    "--classes", str(a["classes"]), "--base", str(a["base"]), "--depth", str(a["depth"]),
                    "--latent", str(a["latent"]), "--seed", str(k + 3), "--norm", a["norm"]] + (["--hetero"] if a["hetero"] else []) + (
                    ["--dropout", str(drop)] if drop else [])
            subprocess.run(args + ["--out", model] + (["--deterministic"] if det else ["--rho", "-2.5"]), check=True,
                           stdout=subprocess.DEVNULL)
            info = subprocess.run([vbseg, "info", model, "--json"], capture_output=True, text=True)
            check(info.returncode == 0, f"{tag}: loads and validates", info.stderr.strip())
            if info.returncode:
                continue
            info = json.loads(info.stdout)
            want = count(a)
            got = (info["parameters"], info["variational_parameters"])
            check(got == want, f"{tag}: parameters {got[0]}, variational {got[1]}", f"want {want}")
            outs = [o["name"] for o in info["outputs"]]
            check(outs == (["logits", "logvar"] if a["hetero"] else ["logits"]), f"{tag}: outputs {outs}")
            td = os.path.join(tmp, f"t{k}")
            os.mkdir(td)
            subprocess.run([dump, model, td], check=True)
            t = load_tensors(td)
            if det:
                # plain tensors only, each the mean of the variational model of the same options and seed, bit for bit
                vm, vd = os.path.join(tmp, f"v{k}.vbseg"), os.path.join(tmp, f"v{k}")
                subprocess.run(args + ["--out", vm], check=True, stdout=subprocess.DEVNULL)
                os.mkdir(vd)
                subprocess.run([dump, vm, vd], check=True)
                v = load_tensors(vd)
                roles = sorted({r for _, r, _ in t.values()})
                check(roles == ["plain"], f"{tag}: every tensor plain", f"roles {roles}")
                means = {n: x for n, (_, r, x) in v.items() if r != "rho"}
                same = sorted(means) == sorted(t) and all(np.array_equal(means[n], t[n][2]) for n in t)
                check(same and any(r == "mu" for _, r, _ in v.values()),
                      f"{tag}: its tensors are the variational model's means ({len(t)} tensors, {len(v) - len(t)} rhos fewer)")
                # info says what still makes its samples differ: dropout's masks, the latent's z, or nothing
                z = info["stochasticity"]
                line = next(ln for ln in subprocess.run([vbseg, "info", model], capture_output=True, text=True).stdout.split("\n")
                            if ln.startswith("stochastic:"))
                want = (f"stochastic:   dropout (p={drop:g}, " if drop else
                        "stochastic:   none in the weights and no dropout, but a GaussianSample latent" if a["latent"] else
                        "stochastic:   none: every sample is the mean pass")
                check(z["kind"] == ("dropout" if drop else "none") and z["latent"] == bool(a["latent"]) and line.startswith(want),
                      f"{tag}: info says {line!r}", f"kind {z['kind']}, latent {z['latent']}")
            # the Dropouts where unet.h, vnet.h and fcn.h say: after each U-Net block and V-Net stage; after each FCN
            # stage's pool and fc6, fc7
            d = a["depth"]
            want = ([f"enc{l}.dropout" for l in range(d)] + ["bottleneck.dropout"] + [f"dec{l}.dropout" for l in range(d)]
                    if a["arch"] == "unet" else
                    ([f"enc{l}.dropout" for l in range(d + 1)] + [f"dec{l}.dropout" for l in range(d)]) if a["arch"] == "vnet"
                    else [f"stage{l}.dropout" for l in range(d)] + ["conv6.dropout", "conv7.dropout"]) if drop else []
            with open(os.path.join(td, "nodes.txt")) as f:
                got = [ln.split() for ln in f if ln.split()[1] == "Dropout"]
            check(sorted(g[2] for g in got) == sorted(want) and all(abs(float(g[3]) - drop) < 1e-7 for g in got),
                  f"{tag}: Dropout nodes {[g[2] for g in got]}")
            if a["arch"] == "fcn":
                s = 2 ** (a["depth"] - 2)
                ok = all(np.array_equal(t[n][2], bilinear(kk, a["classes"], a["dims"]))
                         for n, kk in [("logits.up5.weight", 4), ("logits.up4.weight", 4), ("logits.weight", 2 * s)])
                check(ok, f"{tag}: upsamplings start bilinear")
            x = rng.standard_normal((a["cin"],) + a["spatial"]).astype(np.float32)
            xin = os.path.join(tmp, f"x{k}.npy")
            np.save(xin, x)
            net = {"unet": unet, "vnet": vnet, "fcn": fcn}[a["arch"]]
            for mode in ("mean", "sample"):
                if mode == "sample" and (a["latent"] or drop):
                    continue  # the latent's eps and dropout's masks belong to their nodes (torch_reference, torch_dropout)
                out = os.path.join(tmp, f"o{k}{mode}")
                subprocess.run([vbseg, "run", "--model", model, "--input", xin, "--out", out, "--raw", "--mode", mode,
                                "--seed", "77"], check=True, stdout=subprocess.DEVNULL)
                FLOPS[0] = 0.0
                with torch.no_grad():
                    ref = net(torch.from_numpy(x)[None], weights(t, mode, 77), a)
                if mode == "mean" and net is not unet:  # (torch_reference's U-Net counts no FLOPs)
                    shape = "x".join(str(v) for v in (1,) + x.shape)
                    fl = json.loads(subprocess.run([vbseg, "info", model, "--json", "--shape", shape], check=True,
                                                   capture_output=True, text=True).stdout)["flops"]["per_pass"]
                    check(fl == FLOPS[0], f"{tag}: {fl:.0f} FLOPs per pass at {shape}", f"counted {FLOPS[0]:.0f}")
                for name, r in zip(["logits", "logvar"], ref):
                    got = np.load(os.path.join(out, name + ".npy"))
                    r = r.numpy()
                    same = got.shape == r.shape
                    err = float(np.abs(got - r).max()) if same else float("inf")
                    # a reference that varies over the image, so that a match says something
                    ok = same and np.allclose(got, r, atol=1e-4, rtol=1e-3) and r.std() > 1e-3
                    check(ok, f"{tag} {mode} {name}", f"shape {got.shape} vs {r.shape}, max |diff| {err:.2e}, sd {r.std():.3g}")
            if det:
                # Monte Carlo: with nothing stochastic every sample is the mean pass (MI exactly 0, the mean's bytes);
                # dropout's masks or the latent's z make samples differ
                mc = {}
                for mode in ("sample", "mean"):
                    out = os.path.join(tmp, f"mc{k}{mode}")
                    subprocess.run([vbseg, "run", "--model", model, "--input", xin, "--out", out, "--samples", "4", "--mode", mode,
                                    "--seed", "5"], check=True, stdout=subprocess.DEVNULL)
                    mc[mode] = {f: np.load(os.path.join(out, f + ".npy")) for f in ("prob_mean", "epistemic_mi")}
                mi = mc["sample"]["epistemic_mi"]
                if drop or a["latent"]:
                    check(mi.max() > 1e-6, f"{tag}: 4 samples differ (max MI {mi.max():.3g})")
                else:
                    check(not mi.any() and np.array_equal(mc["sample"]["prob_mean"], mc["mean"]["prob_mean"]),
                          f"{tag}: 4 samples are the mean pass (MI exactly 0)", f"max MI {mi.max():.3g}")
            if a["depth"] < 2:
                continue
            # a size the network cannot take: `run` normalises (z-score over the non-zero voxels), pads to the next
            # multiple of 2^depth, centred, and crops back; here the same by hand around the rebuilt network
            odd = tuple(v + 3 for v in a["spatial"])
            x = rng.standard_normal((a["cin"],) + odd).astype(np.float32)
            x[:, :2] = 0  # background, left out of the statistics
            xin = os.path.join(tmp, f"odd{k}.npy")
            np.save(xin, x)
            out = os.path.join(tmp, f"oo{k}")
            subprocess.run([vbseg, "run", "--model", model, "--input", xin, "--out", out, "--mode", "mean"], check=True,
                           stdout=subprocess.DEVNULL)
            xn = x.astype(np.float64)
            for ch in xn:
                nz = ch != 0
                ch[nz] = (ch[nz] - ch[nz].mean()) / ch[nz].std()
            m = 2 ** a["depth"]
            pp = [(v + m - 1) // m * m for v in odd]
            pb = [(p - v) // 2 for p, v in zip(pp, odd)]
            xp = np.zeros((a["cin"],) + tuple(pp), np.float32)
            xp[(slice(None),) + tuple(slice(b, b + v) for b, v in zip(pb, odd))] = xn
            with torch.no_grad():
                logits = net(torch.from_numpy(xp)[None], weights(t, "mean", 0), a)[0][0]
            logits = logits[(slice(None),) + tuple(slice(b, b + v) for b, v in zip(pb, odd))]
            want = (torch.sigmoid(logits) if a["classes"] == 1 else torch.softmax(logits, 0)).numpy()
            got = np.load(os.path.join(out, "prob_mean.npy"))
            same = got.shape == want.shape
            err = float(np.abs(got - want).max()) if same else float("inf")
            check(same and err < 1e-4, f"{tag}: run at {'x'.join(map(str, odd))} (padded to {'x'.join(map(str, pp))})",
                  f"prob_mean {got.shape} vs {want.shape}, max |diff| {err:.2e}")
    print(f"torch_backbones: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
