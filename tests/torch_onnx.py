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

Output activations: heads that end in Softmax over the channels (opset 13,
and the Transpose-wrapped form of opset 11), in Sigmoid, in a Softmax over
another axis, and in raw logits for K = 1 and K = 4, converted without a
card: the card's activation must be the right one and `convert` must say so;
`vbseg run --mode mean` must give prob_mean = PyTorch's softmax/sigmoid of
the logits (or its own probabilities), entropy = the categorical (binary for
one channel) entropy of those, labels = their argmax (0.5 threshold), and a
sampled run must keep prob_mean in [0, 1], summing to 1, with entropy, MI
>= 0. Cards that contradict the graph (activation, channel count, label
count) are refused by `convert` with one line and no file; `info` says "not
set" for an empty card. `vbseg infer` volumes of a Sigmoid head (the graph's
own probability) equal those of the same head as raw logits.
Usage: torch_onnx.py BUILD_DIR   (Debian's /usr/bin/python3 with python3-torch)
"""
import csv
import gzip
import json
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


class Head(nn.Module):
    """conv -> relu -> 1x1 conv to k channels, then the tail under test"""

    def __init__(self, cin, k, tail):
        super().__init__()
        self.c1 = nn.Conv2d(cin, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, k, 1)
        self.tail = tail
        with torch.no_grad():  # logits well outside [0, 1]
            self.c2.weight.mul_(4.0)
            self.c2.bias.uniform_(-1.0, 1.0)

    def logits(self, x):
        return self.c2(F.relu(self.c1(x)))

    def forward(self, x):
        y = self.logits(x)
        if self.tail == "softmax":
            return F.softmax(y, 1)
        if self.tail == "softmax_w":
            return F.softmax(y, 3)
        if self.tail == "sigmoid":
            return torch.sigmoid(y)
        return y


def probabilities(logits, k):
    """PyTorch's class probabilities of raw logits: softmax over K > 1, sigmoid for one"""
    return torch.sigmoid(logits) if k == 1 else F.softmax(logits, 1)


def entropy(p, k):
    p = p.double()
    xlogx = lambda q: torch.where(q > 0, q * torch.log(q.clamp_min(1e-300)), torch.zeros_like(q))
    return -(xlogx(p) + xlogx(1 - p))[:, 0] if k == 1 else -xlogx(p).sum(1)


class Tally:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, ok, what):
        self.passed += bool(ok)
        self.failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}")


def run(*args):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True)


def one_line_refusal(t, r, out, needles, what):
    lines = r.stderr.strip().split("\n")
    ok = r.returncode == 1 and len(lines) == 1 and lines[0].startswith("vbseg convert: ") and not os.path.exists(out)
    missing = [n for n in needles if n not in r.stderr]
    t.check(ok and not missing, f"{what}: {r.stderr.strip()}" + (f" (lacks {missing})" if missing else ""))


def activations(vbseg, tmp, t):
    x = torch.randn(1, 2, 12, 12)
    xnpy = os.path.join(tmp, "xa.npy")
    np.save(xnpy, x[0].numpy())
    # (tail, k, opset, activation in the card, phrase of the card's source, what convert prints)
    cases = [
        ("softmax", 4, 13, "none", "inferred: the graph ends in Softmax over the channels", "none: the graph outputs the probabilities of 4 classes"),
        ("softmax", 4, 11, "none", "inferred: the graph ends in Softmax over the channels", "none: the graph outputs the probabilities of 4 classes"),
        ("sigmoid", 1, 13, "none", "inferred: the graph ends in Sigmoid", "none: the graph outputs one foreground probability, threshold 0.5"),
        ("logits", 1, 13, "sigmoid", "inferred: the graph ends in raw logits", "sigmoid: one foreground probability, threshold 0.5"),
        ("logits", 4, 13, "softmax", "inferred: the graph ends in raw logits", "softmax over 4 classes"),
        ("softmax_w", 4, 13, "softmax", "inferred: the graph ends in raw logits: a Softmax over another axis, not the channels", "softmax over 4 classes"),
    ]
    for tail, k, opset, act, source, printed in cases:
        label = f"{tail} K={k} opset {opset}"
        model = Head(2, k, tail).eval()
        with torch.no_grad():
            out = model(x)
            logits = model.logits(x)
        onnx_path = os.path.join(tmp, f"head_{tail}{k}_{opset}.onnx")
        torch.onnx.export(model, x, onnx_path, opset_version=opset, input_names=["x"], output_names=["y"])
        vb = onnx_path.replace(".onnx", ".vbseg")
        r = run(vbseg, "convert", onnx_path, vb)
        said = r.stdout.strip().split("\n")[-1]
        t.check(r.returncode == 0 and said.startswith(f"output activation: {printed} ({source}"), f"{label}: convert says: {said} {r.stderr.strip()}")
        if r.returncode:
            continue
        d = json.loads(run(vbseg, "info", "--json", vb).stdout)
        t.check(d["card"]["output_activation"] == act and source in d["card"].get("output_activation_source", ""),
                f"{label}: card activation {d['card']['output_activation']} ({d['card'].get('output_activation_source')}), want {act}")
        if opset == 11 and tail == "softmax":
            t.check(d["ops"].get("Transpose") == 2, f"{label}: the exporter wrapped the Softmax in Transposes: {d['ops']}")
        # the maps in mean mode against PyTorch
        want_p = out if act == "none" else probabilities(out if tail == "softmax_w" else logits, k)
        od = os.path.join(tmp, "act_" + os.path.basename(vb))
        r = run(vbseg, "run", "--model", vb, "--input", xnpy, "--out", od, "--mode", "mean")
        t.check(r.returncode == 0, f"{label}: run: {r.stderr.strip()}")
        if r.returncode:
            continue
        pm, ent, lab = (np.load(os.path.join(od, f + ".npy")) for f in ("prob_mean", "entropy", "labels"))
        wp = want_p[0].numpy()
        t.check(pm.shape == wp.shape and np.allclose(pm, wp, atol=1e-5, rtol=1e-4),
                f"{label}: prob_mean = PyTorch's probabilities (max |diff| {float(np.abs(pm - wp).max()) if pm.shape == wp.shape else 'shape'})")
        t.check(pm.min() >= 0 and pm.max() <= 1 and (k == 1 or np.allclose(pm.sum(0), 1, atol=1e-5)) and (pm.max() - pm.min() > 0.3 or tail == "softmax_w"),
                f"{label}: prob_mean in [0, 1] ({pm.min():.3g} .. {pm.max():.3g}), sums to 1, not flat")
        we = entropy(want_p, k)[0].numpy()
        t.check(np.allclose(ent, we, atol=1e-4, rtol=1e-3) and ent.min() >= 0, f"{label}: entropy = that of the probabilities, >= 0 (min {ent.min():.3g})")
        wl = (wp[0] >= 0.5).astype(np.float32) if k == 1 else wp.argmax(0).astype(np.float32)
        clear = np.abs(wp[0] - 0.5) > 1e-4 if k == 1 else np.sort(wp, 0)[-1] - np.sort(wp, 0)[-2] > 1e-4
        t.check(np.array_equal(lab[clear], wl[clear]) and clear.mean() > 0.9 and len(np.unique(wl)) > 1, f"{label}: labels = argmax (threshold 0.5)")
        # sampled (MOPED weights): still probabilities, and the information measures not negative
        r = run(vbseg, "run", "--model", vb, "--input", xnpy, "--out", od + "s", "--samples", "6")
        if r.returncode:
            t.check(False, f"{label}: sampled run: {r.stderr.strip()}")
            continue
        pm, ent, al, mi = (np.load(os.path.join(od + "s", f + ".npy")) for f in ("prob_mean", "entropy", "aleatoric_entropy", "epistemic_mi"))
        t.check(pm.min() >= 0 and pm.max() <= 1 and (k == 1 or np.allclose(pm.sum(0), 1, atol=1e-5)) and ent.min() >= 0 and al.min() >= 0 and mi.min() >= 0,
                f"{label}: sampled maps: prob_mean {pm.min():.3g} .. {pm.max():.3g}, entropy >= 0, aleatoric >= 0, MI >= 0")


def cards(vbseg, tmp, t):
    """cards that contradict the graph are refused by convert; info says what is not set"""
    x = torch.randn(1, 4, 8, 8)
    paths = {}
    for tail, k in (("logits", 4), ("logits", 1), ("softmax", 4), ("sigmoid", 1)):
        paths[tail, k] = os.path.join(tmp, f"card_{tail}{k}.onnx")
        torch.onnx.export(Head(4, k, tail).eval(), x, paths[tail, k], opset_version=13, input_names=["image"], output_names=["y"])
    card = os.path.join(tmp, "card.json")
    out = os.path.join(tmp, "card_out.vbseg")
    four = ["flair", "t1", "t1ce", "t2"]
    brats = {"0": "background", "1": "necrotic core", "2": "edema", "4": "enhancing tumour"}
    refusals = [
        (("logits", 4), {"channels": ["flair"], "labels": brats}, ["model card lists 1 channel (flair) but input 'image' has 4 channels"]),
        (("logits", 4), {"channels": four, "labels": {"0": "background", "1": "tumour"}}, ["model card lists 2 labels but output 'y' has 4 classes"]),
        (("logits", 4), {"output_activation": "none"}, ["ends in raw logits", "which are not probabilities", 'write "output_activation": "softmax"']),
        (("logits", 1), {"output_activation": "softmax"}, ["output 'y' has 1 channel", '"sigmoid"']),
        (("logits", 1), {"labels": {"1": "tumour"}}, ["model card lists 1 label but output 'y' has 1 channel", "list 2 labels (background, foreground)"]),
        (("softmax", 4), {"output_activation": "softmax"}, ["already ends in Softmax over the channels", "would pass through softmax again", '"none"']),
        (("sigmoid", 1), {"output_activation": "sigmoid"}, ["already ends in Sigmoid", '"none"']),
    ]
    for src, c, needles in refusals:
        with open(card, "w") as f:
            json.dump(c, f)
        one_line_refusal(t, run(vbseg, "convert", paths[src], out, "--card", card), out, needles, f"card {c} on {src[0]} K={src[1]} refused")
    # cards that fit: accepted, labels shown, the activation inferred (or the card's)
    accepted = [
        (("logits", 4), {"channels": four, "labels": brats, "label_convention": "brats2018"}, "softmax over 4 classes (inferred: the graph ends in raw logits"),
        (("logits", 1), {"channels": four, "labels": {"0": "background", "1": "tumour"}}, "sigmoid: one foreground probability, threshold 0.5 (inferred"),
        (("sigmoid", 1), {"channels": four, "labels": {"0": "background", "1": "tumour"}, "output_activation": "none"},
         "none: the graph outputs one foreground probability, threshold 0.5 (the card; the graph ends in Sigmoid"),
    ]
    for src, c, head in accepted:
        with open(card, "w") as f:
            json.dump(c, f)
        r = run(vbseg, "convert", paths[src], out, "--card", card)
        info = run(vbseg, "info", out).stdout
        t.check(r.returncode == 0 and f"output activation: {head}" in r.stdout and f"head:         {head}" in info and "channels:     flair, t1, t1ce, t2" in info,
                f"card {c} on {src[0]} K={src[1]} accepted: {r.stdout.strip().split(chr(10))[-1]} {r.stderr.strip()}")
        if os.path.exists(out):
            os.remove(out)
    # info on a model converted without a card: every empty field says so
    r = run(vbseg, "convert", paths["logits", 4], out)
    info = run(vbseg, "info", out).stdout
    for line in ("channels:     not set (vbseg convert --card card.json sets it)", "labels:       not set", "patch not set", "spatial dims: not set",
                 "data not set", "epochs not set", "metrics:      not set",
                 "head:         softmax over 4 classes (inferred: the graph ends in raw logits, node"):
        t.check(line in info, f"info of a card-less model shows '{line}'")
    t.check(not any(l.rstrip().endswith(":") for l in info.splitlines()), "info prints no blank field")


def read_nifti(path):
    """voxels of a NIfTI-1 .nii.gz written by vbseg (datatype uint8 or float32)"""
    b = gzip.open(path).read()
    dims = np.frombuffer(b[40:56], "<i2")
    dtype = {2: np.uint8, 16: np.float32}[int(np.frombuffer(b[70:72], "<i2")[0])]
    off = int(np.frombuffer(b[108:112], "<f4")[0])
    n = int(np.prod(dims[1:1 + dims[0]]))
    return np.frombuffer(b[off:off + n * np.dtype(dtype).itemsize], dtype)


def infer_volumes(vbseg, build, tmp, t):
    """a Sigmoid head (the graph's own probability) gives the volumes its raw logits give"""
    scans = os.path.join(tmp, "scans")
    os.makedirs(os.path.join(scans, "Case_1"))
    r = run(os.path.join(build, "samples", "make_scan"), os.path.join(scans, "Case_1"), "Case_1", 32, 32, 8)
    if r.returncode:
        t.check(False, f"make_scan: {r.stderr.strip()}")
        return
    os.remove(os.path.join(scans, "Case_1", "Case_1_seg.nii.gz"))
    card = os.path.join(tmp, "infer_card.json")
    with open(card, "w") as f:
        json.dump({"channels": ["flair", "t1", "t1ce", "t2"], "normalization": "zscore_nonzero", "labels": {"0": "background", "1": "lesion"}}, f)
    head = Head(4, 1, "sigmoid").eval()
    with torch.no_grad():  # foreground where the (normalised) flair is bright
        head.c1.weight.zero_(); head.c1.bias.zero_(); head.c1.weight[0, 0, 1, 1] = 1.0
        head.c2.weight.zero_(); head.c2.weight[0, 0] = 4.0; head.c2.bias.fill_(-2.0)
    rows = {}
    for tail in ("sigmoid", "logits"):
        head.tail = tail
        onnx_path = os.path.join(tmp, f"infer_{tail}.onnx")
        torch.onnx.export(head, torch.randn(1, 4, 32, 32), onnx_path, opset_version=13, input_names=["image"], output_names=["y"],
                          dynamic_axes={"image": {2: "H", 3: "W"}})
        vb = onnx_path.replace(".onnx", ".vbseg")
        od = os.path.join(tmp, f"infer_out_{tail}")
        r = run(vbseg, "convert", onnx_path, vb, "--card", card, "--sigma-init", "none")
        r2 = run(vbseg, "infer", "--model", vb, "--input", scans, "--output", od, "--mode", "mean", "--no-png", "--quiet") if not r.returncode else r
        t.check(r.returncode == 0 and r2.returncode == 0, f"infer with the {tail} head: {r.stderr.strip()} {r2.stderr.strip()}")
        if r2.returncode:
            return
        with open(os.path.join(od, "summary.csv")) as f:
            rows[tail] = next(csv.DictReader(f))
        rows[tail]["labelled"] = int((read_nifti(os.path.join(od, "Case_1.nii.gz")) == 1).sum())
    s, l = rows["sigmoid"], rows["logits"]
    t.check(s["labelled"] > 0 and s["labelled"] == l["labelled"], f"the same voxels labelled lesion: {s['labelled']} and {l['labelled']}")
    t.check(float(s["lesion_ml"]) > 0 and s["lesion_ml"] == l["lesion_ml"],
            f"lesion_ml of the sigmoid head {s['lesion_ml']} = that of its raw logits {l['lesion_ml']}, not 0")


def main():
    build = sys.argv[1]
    vbseg = os.path.join(build, "vbseg")
    torch.manual_seed(0)
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        t = Tally()
        activations(vbseg, tmp, t)
        cards(vbseg, tmp, t)
        infer_volumes(vbseg, build, tmp, t)
        passed, failed = t.passed, t.failed
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
