#!/usr/bin/env python3
"""Fine-tuning a network imported from ONNX (ctest: torch_finetune).

A small segmentation network that is not vbseg's U-Net (Conv with a
strided and a dilated layer, BatchNorm2d, LeakyReLU, ReLU, MaxPool,
AveragePool, bilinear interpolation and nn.Upsample (nearest) -> Resize,
ConvTranspose2d, a torch.cat skip, a 1x1 head to the classes) is exported
by torch.onnx.export with dynamic N/H/W (BatchNormalization kept, not
folded) and converted by `vbseg convert --sigma-init moped:0.1`, with four
tails: raw logits (opset 17), Softmax over the channels (opset 13, and
opset 11's Transpose-wrapped form) and one Sigmoid channel (opset 13).

1. One optimiser step (tests/train_step, BatchNormalization in training
   mode: one pass of the minibatch) against PyTorch autograd in float64 on
   the original nn.Module, called with the step's weights
   w = mu + softplus(rho) * eps (eps recomputed from the documented RNG,
   torch_train_step's helpers): the loss parts, every trained tensor's
   gradient (mu, rho, the BatchNormalization scales and biases) and the
   running statistics after the step. The loss of a graph that ends in its
   own Softmax or Sigmoid is the loss of the logits before it, as for a
   graph that ends in logits. Data within float32 rounding of a ReLU or
   max-pool kink is redrawn.
2. `vbseg train --init` on a binary lesion task (tests/train.sh's, nnU-Net
   layout) for the logits and the Softmax model: through `vbseg infer` and
   `vbseg eval` on two unseen cases the fine-tuned model's lesion Dice is
   above 0.6 and 0.3 above the converted (untrained) model's; `vbseg info`
   shows the card the trainer filled in (producer, patch, epochs, seed,
   validation metrics, the data's channels and labels) and the converted
   graph's ops, node for node (BatchNormalization and Resize included).
   The Softmax model's training losses, epoch by epoch, equal the logits
   model's (the same weights and logits); a graph ending in a Sigmoid over
   two channels is refused in one line.
Usage: torch_finetune.py BUILD_DIR   (Debian's /usr/bin/python3 with python3-torch)
"""
import csv
import gzip
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.stateless import functional_call

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_train_step as tts  # noqa: E402  (the documented RNG, the loss and the weight KL in float64)
from torch_onnx import Tally, run  # noqa: E402

torch.set_default_dtype(torch.float32)  # tts sets float64; the network is built and exported in float32

warnings.filterwarnings("ignore")


class Net(nn.Module):
    """An FCN with a U-Net-like skip; input sides a multiple of 4."""

    def __init__(self, k, tail):
        super().__init__()
        self.c1 = nn.Conv2d(4, 8, 3, padding=1)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 12, 3, padding=1, stride=2)
        self.b2 = nn.BatchNorm2d(12)
        self.c3 = nn.Conv2d(12, 12, 3, padding=2, dilation=2)
        self.up = nn.ConvTranspose2d(12, 8, 2, stride=2)
        self.near = nn.Upsample(scale_factor=4, mode="nearest")
        self.c4 = nn.Conv2d(8 + 8 + 12, 8, 3, padding=1)
        self.head = nn.Conv2d(8, k, 1)
        self.tail = tail
        self.taps = None  # a list: the ReLUs' inputs and the max-pool's input of a pass, for the kink margin

    def tap(self, x, kind):
        if self.taps is not None:
            self.taps.append((kind, x.detach().numpy()))
        return x

    def forward(self, x):
        a = F.leaky_relu(self.tap(self.b1(self.c1(x)), "relu"), 0.1)
        b = F.relu(self.tap(self.b2(self.c2(a)), "relu"))                       # 1/2
        c = F.relu(self.tap(self.c3(F.max_pool2d(self.tap(b, "pool"), 2)), "relu"))  # 1/4, dilated
        c = F.interpolate(c, scale_factor=2, mode="bilinear", align_corners=False)
        u = self.up(c + b)                                                       # back to full size
        r = self.near(F.avg_pool2d(b, 2))
        z = self.head(F.relu(self.tap(self.c4(torch.cat([u, a, r], 1)), "relu")))
        if self.tail == "softmax":
            return F.softmax(z, 1)
        if self.tail == "sigmoid":
            return torch.sigmoid(z)
        return z


def kink_margin(taps):
    """How close a pass came to a kink, relative to each tensor's largest value: a ReLU input near 0, or
    a 2x2 max-pool window whose two largest values are near each other (float32 may fall on the other side)."""
    m = math.inf
    for kind, v in taps:
        scale = float(np.abs(v).max())
        if kind == "relu":
            m = min(m, float(np.abs(v).min()) / scale)
            continue
        n, c, h, w = v.shape
        win = np.maximum(v, 0).reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
        top2 = np.sort(win, -1)[..., -2:]
        live = top2[..., 1] > 0
        if live.any():
            m = min(m, float((top2[..., 1] - top2[..., 0])[live].min()) / scale)
    return m


MODELS = [  # name, classes, tail, opset
    ("logits", 2, "logits", 17),
    ("softmax", 2, "softmax", 13),
    ("softmax11", 2, "softmax", 11),
    ("sigmoid", 1, "sigmoid", 13),
]
CARD = {"channels": ["flair", "t1", "t1ce", "t2"], "labels": {"0": "background", "1": "lesion"}, "normalization": "zscore_nonzero"}


def export_and_convert(vbseg, tmp, t, name, k, tail, opset):
    torch.manual_seed(3)
    net = Net(k, tail).eval()
    with torch.no_grad():  # trained-looking statistics, so that the running update matters
        for bn in (net.b1, net.b2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    onnx = os.path.join(tmp, f"{name}.onnx")
    # PRESERVE keeps BatchNormalization as a node (EVAL folds it into the Conv before it)
    torch.onnx.export(net, torch.randn(1, 4, 48, 48), onnx, opset_version=opset, training=torch.onnx.TrainingMode.PRESERVE,
                      input_names=["image"], output_names=["y"], dynamic_axes={"image": {0: "N", 2: "H", 3: "W"}, "y": {0: "N", 2: "H", 3: "W"}})
    card = os.path.join(tmp, "card.json")
    with open(card, "w") as f:
        json.dump(CARD, f)
    vb = os.path.join(tmp, f"{name}.vbseg")
    r = run(vbseg, "convert", onnx, vb, "--sigma-init", "moped:0.1", "--card", card)
    t.check(r.returncode == 0, f"{name}: convert: {r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ''} {r.stderr.strip()}")
    info = json.loads(run(vbseg, "info", "--json", vb).stdout) if r.returncode == 0 else {"ops": {}}
    ops = info["ops"]
    want = {"Conv": 5, "BatchNormalization": 2, "ConvTranspose": 1, "MaxPool": 1, "AveragePool": 1, "Resize": 2, "Concat": 1, "LeakyRelu": 1}
    t.check(all(ops.get(o) == n for o, n in want.items()) and (ops.get("Softmax") == 1) == (tail == "softmax")
            and (ops.get("Transpose", 0) == 2) == (opset == 11 and tail == "softmax") and (ops.get("Sigmoid") == 1) == (tail == "sigmoid"),
            f"{name}: the converted graph has the network's ops: {ops}")
    return net, vb, info


# ---- 1. one step against autograd -----------------------------------------------

STEP = dict(seed=31, lr=1e-3, kl_weight=1e-4)
B, SIDE = 3, 16
ATTEMPTS = 8
KINK_MARGIN = 2e-6


def reference(net, P, x, y, k, seed):
    """The objective of step 0 in float64 and its parts; BatchNormalization's running statistics (P's
    tensors) updated in place as the pass goes."""
    noise = tts.weight_noise(P, seed, 0)
    w = tts.draw_weights(P, noise, seed)
    net.train()
    net.tail, tail = "logits", net.tail  # the loss reads the logits, also under the graph's own Softmax or Sigmoid
    net.taps = []
    try:
        z = functional_call(net, w, (x,))
    finally:
        net.tail = tail
    taps, net.taps = net.taps, None
    dsum = csum = 0
    for n in range(x.shape[0]):
        d, c = tts.data_loss(z[n].reshape(k, -1), None, y[n].reshape(-1), k, seed, n)
        dsum, csum = dsum + d, csum + c
    klw = STEP["kl_weight"] * tts.weight_kl(P)
    L = (0.9 * dsum + 0.1 * csum) / x.shape[0] + klw
    return L, [dsum / x.shape[0], csum / x.shape[0], klw, 0.0], kink_margin(taps)


def one_step(build, tmp, t, name, net, vb, k, rng):
    dd = os.path.join(tmp, f"dump_{name}")
    os.mkdir(dd)
    subprocess.run([os.path.join(build, "tests", "dump_tensors"), vb, dd], check=True)
    dump = tts.load_dump(dd)
    net = net.double()
    for attempt in range(ATTEMPTS):
        x = rng.standard_normal((B, 4, SIDE, SIDE)).astype(np.float32)
        y = rng.integers(0, 2, (B, SIDE, SIDE)).astype(np.float32)
        od = os.path.join(tmp, f"step_{name}_{attempt}")
        os.mkdir(od)
        np.save(os.path.join(od, "x.npy"), x)
        np.save(os.path.join(od, "y.npy"), y)
        r = run(os.path.join(build, "tests", "train_step"), vb, os.path.join(od, "x.npy"), os.path.join(od, "y.npy"), od, "--steps", 1,
                "--seed", STEP["seed"], "--lr", STEP["lr"], "--kl-weight", STEP["kl_weight"])
        if r.returncode:
            t.check(False, f"{name}: one step: train_step: {r.stderr.strip()}")
            return
        man = tts.load_manifest(od)
        P = tts.Params(dump, man)
        L, parts, margin = reference(net, P, torch.tensor(x.astype(np.float64)), torch.tensor(y.astype(np.int64)), k, STEP["seed"])
        if margin < KINK_MARGIN:
            print(f"  note: {name}: the data of attempt {attempt} comes within {margin:.1e} of a kink; new data")
            continue
        L.backward()
        want_g = {i: P.t[i].grad.detach().numpy().copy() for i in P.leaves()}
        gnorm = math.sqrt(sum(float((g * g).sum()) for g in want_g.values()))
        want = [float(L)] + [float(p) for p in parts] + [gnorm]
        got_loss, got_g, got_after = tts.load_out(od, man)
        for d in P.disagree:
            print(f"  {d}")
        t.check(not P.disagree and len(P.leaves()) == 4 * 6 + 2 * 2 and all(man[i][3] == P.trained[i] for i in man),
                f"{name}: one step: the trained tensors are every mu and rho and the BatchNormalization scales and biases, not the running statistics")
        t.check(len(got_loss) == 1 and tts.compare_loss(0, got_loss[0], want),
                f"{name}: one step: loss {got_loss[0][0]:.7g} (Dice {got_loss[0][1]:.5f}, CE {got_loss[0][2]:.5f}) = PyTorch's {want[0]:.7g}"
                f" (Dice {want[1]:.5f}, CE {want[2]:.5f}, on the logits)")
        ok, worst = tts.compare_grads(got_g, want_g, gnorm, P)
        t.check(ok, f"{name}: one step: the gradients of all {len(want_g)} trained tensors = autograd's (worst {worst[2]} at {worst[0]:.2f} of its bound,"
                    f" ||g - ref|| / ||ref|| {worst[1]:.1e})")
        run_ok = True
        for i in P.t:
            if P.trained[i]:
                continue
            w = P.t[i].detach().numpy()
            e = float((np.abs(got_after[i] - w) / (tts.RUNNING_ATOL + tts.AFTER_RTOL * np.abs(w))).max())
            moved = float(np.abs(w - dump[i][2]).max())
            if e > 1 or moved < 1e-3:
                print(f"  FAIL {P.name[i]}: got {got_after[i].ravel()[:3]}, want {w.ravel()[:3]} (moved {moved:.2g})")
                run_ok = False
        t.check(run_ok, f"{name}: one step: BatchNormalization's running statistics after the step = F.batch_norm's (momentum 0.1, unbiased variance)")
        return
    t.check(False, f"{name}: one step: no data without a kink in {ATTEMPTS} attempts")


# ---- 2. fine-tuning ----------------------------------------------------------------

def binarise(src, dst):
    b = bytearray(gzip.open(src).read())
    off = int(struct.unpack('<f', b[108:112])[0])
    b[off:] = bytes(1 if v else 0 for v in b[off:])
    gzip.open(dst, "wb").write(bytes(b))


def lesion_task(build, tmp):
    """tests/train.sh's lesion task: 8 generated cases binarised, nnU-Net raw layout; 2 unseen cases."""
    data, unseen, truth = os.path.join(tmp, "lesion"), os.path.join(tmp, "unseen"), os.path.join(tmp, "truth")
    for d in ("imagesTr", "labelsTr"):
        os.makedirs(os.path.join(data, d))
    os.makedirs(unseen)
    os.makedirs(truth)
    chans = ("flair", "t1", "t1ce", "t2")
    for i, dst, lab in [(f"{i:02d}", os.path.join(data, "imagesTr"), os.path.join(data, "labelsTr")) for i in range(1, 9)] + \
                       [(str(i), unseen, truth) for i in (91, 92)]:
        case = f"Case_{i}"
        scan = os.path.join(tmp, "scans", case)
        os.makedirs(scan)
        subprocess.run([os.path.join(build, "samples", "make_scan"), scan, case, "48", "48", "8"], check=True, stdout=subprocess.DEVNULL)
        for n, ch in enumerate(chans):
            shutil.copy(os.path.join(scan, f"{case}_{ch}.nii.gz"), os.path.join(dst, f"c{i}_{n:04d}.nii.gz"))
        binarise(os.path.join(scan, f"{case}_seg.nii.gz"), os.path.join(lab, f"c{i}.nii.gz"))
    with open(os.path.join(data, "dataset.json"), "w") as f:
        json.dump({"channel_names": {"0": "flair", "1": "t1", "2": "t1ce", "3": "t2"}, "labels": {"background": 0, "lesion": 1},
                   "file_ending": ".nii.gz"}, f)
    return data, unseen, truth


def lesion_dice(vbseg, tmp, model, unseen, truth, tag):
    out, csvp = os.path.join(tmp, f"infer_{tag}"), os.path.join(tmp, f"eval_{tag}.csv")
    r = run(vbseg, "infer", "--model", model, "--input", unseen, "--output", out, "--samples", 8, "--no-png", "--quiet", "--threads", 2)
    if r.returncode:
        return None, r.stderr.strip()
    r = run(vbseg, "eval", "--pred", out, "--truth", truth, "--out", csvp)
    if r.returncode:
        return None, r.stderr.strip()
    row = next(r for r in csv.DictReader(open(csvp)) if r["case"] == "mean")
    return float(row["dice_label1"]), ""


def fine_tune(vbseg, tmp, t, name, vb, info0, data, unseen, truth):
    ft = os.path.join(tmp, f"ft_{name}.vbseg")
    r = run(vbseg, "train", "--init", vb, "--data", data, "--out", ft, "--batch", 8, "--patch", "48x48", "--val", 0.25, "--seed", 5,
            "--val-samples", 2, "--epochs", 8, "--steps-per-epoch", 8, "--lr", 5e-3, "--threads", 2, "--quiet")
    t.check(r.returncode == 0 and os.path.exists(ft), f"{name}: vbseg train --init {os.path.basename(vb)}: {r.stderr.strip()}")
    if r.returncode:
        return
    before, e0 = lesion_dice(vbseg, tmp, vb, unseen, truth, f"{name}_0")
    after, e1 = lesion_dice(vbseg, tmp, ft, unseen, truth, f"{name}_ft")
    t.check(before is not None and after is not None and after > 0.6 and after > before + 0.3,
            f"{name}: lesion Dice on unseen cases: fine-tuned {after}, converted {before} {e0} {e1}")
    info = json.loads(run(vbseg, "info", "--json", ft).stdout)
    t.check(info["ops"] == info0["ops"] and info["nodes"] == info0["nodes"] and info["inputs"] == info0["inputs"]
            and info["outputs"] == info0["outputs"] and info["variational_parameters"] == info0["variational_parameters"],
            f"{name}: the fine-tuned model is the converted graph: {info['nodes']} nodes {info['ops']}")
    c = info["card"]
    log = list(csv.DictReader(open(os.path.join(tmp, f"ft_{name}.vbseg.train", "train_log.csv"))))
    best = max(log, key=lambda e: float(e["val_dice_mc"]))
    t.check(c.get("producer") == "vbseg train" and c.get("spatial_dims") == 2 and c.get("patch") == [48, 48] and c.get("seed") == 5
            and c.get("epochs") == int(best["epoch"]) and abs(c.get("metrics", {}).get("val_dice_mc", -1) - float(best["val_dice_mc"])) < 1e-5
            and "val_dice_lesion" in c.get("metrics", {}) and c.get("channels") == CARD["channels"]
            and c.get("labels") == {"0": "background", "1": "lesion"} and c.get("normalization") == "zscore_nonzero"
            and c.get("output_activation") == info0["card"]["output_activation"] and c.get("training_data"),
            f"{name}: vbseg info shows the card the trainer filled in: {json.dumps(c)}")
    text = run(vbseg, "info", ft).stdout
    t.check("producer:     vbseg train" in text and "patch 48x48" in text and "val_dice_lesion" in text, f"{name}: vbseg info's text says so too")
    return log


def main():
    build = sys.argv[1]
    vbseg = os.path.join(build, "vbseg")
    torch.set_num_threads(1)
    t = Tally()
    rng = np.random.default_rng(11)
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for name, k, tail, opset in MODELS:
            net, vb, info = export_and_convert(vbseg, tmp, t, name, k, tail, opset)
            models[name] = (vb, info)
            if os.path.exists(vb):
                one_step(build, tmp, t, name, net, vb, k, rng)
        data, unseen, truth = lesion_task(build, tmp)
        logs = {}
        for name in ("logits", "softmax"):
            if os.path.exists(models[name][0]):
                logs[name] = fine_tune(vbseg, tmp, t, name, models[name][0], models[name][1], data, unseen, truth)
        # the same weights and the same logits: the graph's own Softmax changes nothing in training
        cols = ("epoch", "step", "loss", "dice_loss", "ce", "kl")
        same = [[e[c] for c in cols] for e in logs.get("logits") or []] == [[e[c] for c in cols] for e in logs.get("softmax") or [{}]]
        t.check(same, "the Softmax model's training losses, epoch by epoch, = those of the same network ending in logits: "
                + "; ".join(f"{e['loss']} ({e['dice_loss']}, {e['ce']})" for e in (logs.get("softmax") or [])[:3]) + " ...")
        # a Sigmoid over 2 channels (independent probabilities) is refused in one line before any step
        _, vb2, _ = export_and_convert(vbseg, tmp, t, "sigmoid2", 2, "sigmoid", 13)
        r = run(vbseg, "train", "--init", vb2, "--data", data, "--out", os.path.join(tmp, "s2.vbseg"), "--patch", "48x48", "--epochs", 1, "--quiet")
        lines = r.stderr.strip().split("\n")
        t.check(r.returncode == 1 and len(lines) == 1 and "the graph ends in Sigmoid, node '/Sigmoid', over 2 channels" in lines[0] and vb2 in lines[0]
                and not os.path.exists(os.path.join(tmp, "s2.vbseg")), f"sigmoid2: vbseg train refuses: {r.stderr.strip()}")
    print(f"torch_finetune: {t.passed} passed, {t.failed} failed")
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
