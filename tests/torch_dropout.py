#!/usr/bin/env python3
"""MC dropout networks exported from PyTorch (ctest: torch_dropout).

A small conv net with two nn.Dropout layers (p = 0.3 and 0.1) is exported
by torch.onnx.export with its dropout kept (training=TRAINING, and a model
left in train mode with PRESERVE) at opset 11 (the ratio an attribute) and
opsets 13 and 17 (the ratio a constant input, training_mode a bool
constant), and converted with `vbseg convert --sigma-init none` and with
MOPED. Checked:
  - the ratios are kept: `vbseg info` says "dropout (p=0.1..0.3, 2 nodes)"
    (MOPED: "both"), `--json` gives the kind and the ratios;
  - mean mode (`run --raw --mode mean`) equals PyTorch's eval() output;
  - one sampled pass (`run --raw`, sample 0 under --seed) equals PyTorch with
    each Dropout replaced by x * mask / (1 - p), the masks recomputed here in
    NumPy from the documented RNG: Philox4x32-10 keyed by the seed, counter
    (element/4, stream, sample), element e keeping when word e%4 >=
    round(p * 2^32), stream 0x80000000 | the node's index (tests/dump_tensors
    lists the nodes);
  - Monte-Carlo runs: the MI map of 16 samples equals the MI of 16 PyTorch
    passes with the masks of sample keys 0..15 (so MI > 0); MI = 0 everywhere
    in mean mode, and prob_mean is the softmax of eval(); the same bytes at
    --threads 1 and 2.
Usage: torch_dropout.py BUILD_DIR   (Debian's /usr/bin/python3 with python3-torch)
Prints "torch_dropout: N passed, N failed".
"""
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_onnx import Tally, run  # noqa: E402
from torch_reference import MASK, philox  # noqa: E402  (the documented RNG, shared with the U-Net reference)

P1, P2 = 0.3, 0.1


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 8, 3, padding=1)
        self.d1 = nn.Dropout(P1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.d2 = nn.Dropout(P2)
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x, masks=None):
        """masks: None (the module's own dropout) or two arrays (keep = 1)."""
        h = F.relu(self.c1(x))
        h = self.d1(h) if masks is None else h * torch.from_numpy(masks[0]).reshape(h.shape) / (1 - P1)
        h = F.relu(self.c2(h))
        h = self.d2(h) if masks is None else h * torch.from_numpy(masks[1]).reshape(h.shape) / (1 - P2)
        return self.head(h)


def keep_mask(seed, sample, stream, n, p):
    """Dropout's keep mask of n elements, as runtime/ops/dropout.c draws it."""
    blocks = (n + 3) // 4
    blk = np.arange(blocks, dtype=np.uint64)
    ctr = (blk & np.uint64(MASK), (blk >> np.uint64(32)) ^ np.uint64(((sample >> 32) << 16) & MASK),
           np.full(blocks, stream, dtype=np.uint64), np.full(blocks, sample & MASK, dtype=np.uint64))
    w = np.stack(philox(ctr, (seed & MASK, (seed >> 32) & MASK)), axis=1).reshape(-1)[:n]
    thr = min(int(np.float64(np.float32(p)) * 4294967296.0 + 0.5), 0xFFFFFFFF)
    return (w >= np.uint64(thr)).astype(np.float32)


def main():
    build = sys.argv[1]
    vbseg = os.path.join(build, "vbseg")
    torch.manual_seed(0)
    t = Tally()
    net = Net()
    x = torch.randn(1, 2, 16, 16)
    seed = 7
    with tempfile.TemporaryDirectory() as tmp:
        xp = os.path.join(tmp, "x.npy")
        np.save(xp, x[0].numpy())
        net.eval()
        with torch.no_grad():
            ref_mean = net(x).numpy()
        for opset in (11, 13, 17):
            for how in ("training", "preserve"):
                label = f"opset {opset} {how}"
                onnx_path = os.path.join(tmp, f"d{opset}{how}.onnx")
                if how == "training":
                    net.eval()
                    torch.onnx.export(net, x, onnx_path, opset_version=opset, input_names=["x"], output_names=["y"],
                                      training=torch.onnx.TrainingMode.TRAINING)
                else:
                    net.train()
                    torch.onnx.export(net, x, onnx_path, opset_version=opset, input_names=["x"], output_names=["y"],
                                      training=torch.onnx.TrainingMode.PRESERVE)
                    net.eval()
                vb = os.path.join(tmp, f"d{opset}{how}.vbseg")
                r = run(vbseg, "convert", onnx_path, vb, "--sigma-init", "none")
                t.check(r.returncode == 0, f"{label}: convert {r.stderr.strip()}")
                if r.returncode:
                    continue
                # the ratios are kept, and said
                info = run(vbseg, "info", vb).stdout
                t.check("stochastic:   dropout (p=0.1..0.3, 2 nodes)" in info, f"{label}: info says the dropout: "
                        + next((ln for ln in info.split("\n") if ln.startswith("stochastic")), "(no line)"))
                d = json.loads(run(vbseg, "info", "--json", vb).stdout)["stochasticity"]
                t.check(d["kind"] == "dropout" and d["dropout_nodes"] == 2 and abs(d["dropout_ratio_min"] - P2) < 1e-6
                        and abs(d["dropout_ratio_max"] - P1) < 1e-6, f"{label}: info --json {d}")
                # mean mode: PyTorch's eval()
                od = os.path.join(tmp, "o")
                r = run(vbseg, "run", "--model", vb, "--input", xp, "--out", od, "--raw", "--mode", "mean")
                got = np.load(os.path.join(od, "y.npy")) if r.returncode == 0 else None
                t.check(got is not None and np.allclose(got, ref_mean, atol=1e-5, rtol=1e-4),
                        f"{label}: mean mode against eval() {r.stderr.strip()}"
                        + (f" max |diff| {np.abs(got - ref_mean).max():.2e}" if got is not None else ""))
                # one sampled pass: PyTorch with the documented masks
                dd = os.path.join(tmp, "dump")
                os.makedirs(dd, exist_ok=True)
                r = run(os.path.join(build, "tests", "dump_tensors"), vb, dd)
                nodes = [ln.split() for ln in open(os.path.join(dd, "nodes.txt")).read().strip().split("\n")]
                drops = [(int(n[0]), float(n[3])) for n in nodes if n[1] == "Dropout"]
                t.check(len(drops) == 2 and abs(drops[0][1] - P1) < 1e-6 and abs(drops[1][1] - P2) < 1e-6,
                        f"{label}: the nodes keep their ratios {drops}")
                if len(drops) != 2:
                    continue
                masks = [keep_mask(seed, 0, 0x80000000 | i, 8 * 16 * 16, p) for i, p in drops]
                with torch.no_grad():
                    ref_s = net(x, masks).numpy()
                r = run(vbseg, "run", "--model", vb, "--input", xp, "--out", od, "--raw", "--seed", seed)
                got = np.load(os.path.join(od, "y.npy")) if r.returncode == 0 else None
                t.check(got is not None and np.allclose(got, ref_s, atol=1e-5, rtol=1e-4) and not np.allclose(got, ref_mean, atol=1e-3),
                        f"{label}: a sampled pass against PyTorch with the documented masks {r.stderr.strip()}"
                        + (f" max |diff| {np.abs(got - ref_s).max():.2e}" if got is not None else ""))
                kept = [float(m.mean()) for m in masks]
                t.check(abs(kept[0] - (1 - P1)) < 0.06 and abs(kept[1] - (1 - P2)) < 0.04, f"{label}: keep rates {kept}")
                # Monte-Carlo: MI > 0 sampled, 0 in mean mode; the same bytes at 1 and 2 threads
                outs = {}
                for mode, threads in (("sample", 1), ("sample", 2), ("mean", 2)):
                    o = os.path.join(tmp, f"mc_{mode}{threads}")
                    r = run(vbseg, "run", "--model", vb, "--input", xp, "--out", o, "--mode", mode, "--samples", 16,
                            "--threads", threads, "--seed", seed)
                    t.check(r.returncode == 0, f"{label}: run --mode {mode} --threads {threads} {r.stderr.strip()}")
                    outs[mode, threads] = {f: open(os.path.join(o, f), "rb").read() for f in sorted(os.listdir(o))}
                mi = np.load(os.path.join(tmp, "mc_sample1", "epistemic_mi.npy"))
                mi0 = np.load(os.path.join(tmp, "mc_mean2", "epistemic_mi.npy"))
                # the same 16 samples in PyTorch: sample i draws its masks with sample key i
                with torch.no_grad():
                    ps = np.stack([torch.softmax(net(x, [keep_mask(seed, i, 0x80000000 | n, 8 * 16 * 16, p) for n, p in drops]), 1)[0].numpy()
                                   for i in range(16)]).astype(np.float64)
                pbar = ps.mean(0)
                want_mi = -(pbar * np.log(pbar)).sum(0) + (ps * np.log(ps)).sum(1).mean(0)
                t.check(mi.min() >= 0 and mi.mean() > 1e-4 and np.allclose(mi.reshape(want_mi.shape), want_mi, atol=2e-5),
                        f"{label}: sample mode MI (mean {mi.mean():.3g}) against 16 PyTorch passes with the documented masks "
                        f"(max |diff| {np.abs(mi.reshape(want_mi.shape) - want_mi).max():.2e})")
                t.check(not mi0.any(), f"{label}: mean mode MI is 0 everywhere (max {mi0.max():.3g})")
                t.check(outs["sample", 1] == outs["sample", 2], f"{label}: the same bytes at 1 and 2 threads")
                pm = np.load(os.path.join(tmp, "mc_mean2", "prob_mean.npy"))
                want = torch.softmax(torch.from_numpy(ref_mean), 1).numpy()
                t.check(np.allclose(pm.reshape(want.shape), want, atol=1e-5), f"{label}: mean mode prob_mean is softmax of eval()")
        # MOPED on top: both kinds
        vb = os.path.join(tmp, "both.vbseg")
        r = run(vbseg, "convert", os.path.join(tmp, "d13training.onnx"), vb)
        info = run(vbseg, "info", vb).stdout
        t.check(r.returncode == 0 and "stochastic:   both: variational weights and dropout (p=0.1..0.3, 2 nodes)" in info,
                "MOPED: info says both " + r.stderr.strip())
        # a model exported in eval mode has no Dropout left: none
        net.eval()
        onnx_path = os.path.join(tmp, "eval.onnx")
        torch.onnx.export(net, x, onnx_path, opset_version=13, input_names=["x"], output_names=["y"])
        vb = os.path.join(tmp, "eval.vbseg")
        r = run(vbseg, "convert", onnx_path, vb, "--sigma-init", "none")
        info = run(vbseg, "info", vb).stdout
        t.check(r.returncode == 0 and "stochastic:   none" in info, "eval() export: info says none " + r.stderr.strip())
        # seeded damage to the exported files (bit flips, overwritten bytes, truncation), through the
        # Dropout ratio's constant input (opset 17) and attribute (opset 11): every conversion exits 0 or
        # 1 (never a signal), a refusal is one line naming the file, and a refused output is never written
        rng = np.random.default_rng(3)
        for src in ("d11training.onnx", "d17training.onnx"):
            good = open(os.path.join(tmp, src), "rb").read()
            refused = bad = 0
            for k in range(100):
                b = bytearray(good)
                for _ in range(1 + k % 4):
                    at = int(rng.integers(len(b)))
                    if k % 3 == 0:
                        b[at] ^= 1 << int(rng.integers(8))
                    elif k % 3 == 1:
                        b[at] = int(rng.integers(256))
                    else:
                        b = b[:at]
                mp, mo = os.path.join(tmp, "mutant.onnx"), os.path.join(tmp, "mutant.vbseg")
                open(mp, "wb").write(bytes(b))
                if os.path.exists(mo):
                    os.remove(mo)
                # the damaged names a message quotes may not be UTF-8
                r = subprocess.run([vbseg, "convert", mp, mo, "--sigma-init", "none"], capture_output=True, text=True, errors="replace")
                if r.returncode == 1:
                    refused += 1
                    lines = r.stderr.strip().split("\n")
                    bad += not (len(lines) == 1 and "mutant.onnx" in lines[0] and not os.path.exists(mo))
                elif r.returncode != 0:
                    bad += 1
                    print(f"  {src} mutant {k}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
            t.check(bad == 0 and refused > 20, f"{src}: {bad} of 100 damaged files crashed or were refused badly ({refused} refused)")
    print(f"torch_dropout: {t.passed} passed, {t.failed} failed")
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
