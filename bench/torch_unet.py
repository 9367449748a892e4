#!/usr/bin/env python3
"""PyTorch side of the side-by-side benchmark (bench/compare.sh).

The reference network of the README: a variational 2D U-Net, 4 input
channels, base 16 doubling over 4 levels (16-32-64-128), bottleneck 256,
two 3x3 conv + ReLU per block, 2x2 max-pool, 2x2 stride-2 transposed conv
up, concat skips, 1x1 heads to a logit mean and a log-variance. Every
conv is variational: each pass draws w = mu + softplus(rho) * eps for
every weight and bias, as vbseg does. Prints one line:
  torch per-sample: X ms, Y GFLOP/s
Run with Debian's /usr/bin/python3 (python3-torch).
"""
import argparse
import time

import torch
import torch.nn.functional as F


def make_params(cin, base, depth, classes):
    g = torch.Generator().manual_seed(1)
    params = []

    def var(shape, fan_in):
        mu = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5 if fan_in else torch.zeros(shape)
        rho = torch.full(shape, -5.0)
        params.append((mu, rho))
        return len(params) - 1

    spec = {"enc": [], "up": [], "dec": []}
    ch = cin
    for l in range(depth):
        co = base << l
        spec["enc"].append((var((co, ch, 3, 3), ch * 9), var((co,), 0), var((co, co, 3, 3), co * 9), var((co,), 0)))
        ch = co
    cb = base << depth
    spec["bott"] = (var((cb, ch, 3, 3), ch * 9), var((cb,), 0), var((cb, cb, 3, 3), cb * 9), var((cb,), 0))
    ch = cb
    for l in reversed(range(depth)):
        co = base << l
        spec["up"].append((var((ch, co, 2, 2), ch * 4), var((co,), 0)))
        spec["dec"].append((var((co, 2 * co, 3, 3), 2 * co * 9), var((co,), 0), var((co, co, 3, 3), co * 9), var((co,), 0)))
        ch = co
    spec["head"] = (var((classes, ch, 1, 1), ch), var((classes,), 0), var((classes, ch, 1, 1), ch), var((classes,), 0))
    return params, spec


def forward(x, w, spec, depth):
    def block(x, ids):
        x = F.relu(F.conv2d(x, w[ids[0]], w[ids[1]], padding=1))
        return F.relu(F.conv2d(x, w[ids[2]], w[ids[3]], padding=1))

    skips = []
    for l in range(depth):
        x = block(x, spec["enc"][l])
        skips.append(x)
        x = F.max_pool2d(x, 2)
    x = block(x, spec["bott"])
    for i, l in enumerate(reversed(range(depth))):
        wi, bi = spec["up"][i]
        x = F.conv_transpose2d(x, w[wi], w[bi], stride=2)
        x = torch.cat([x, skips[l]], 1)
        x = block(x, spec["dec"][i])
    h = spec["head"]
    return F.conv2d(x, w[h[0]], w[h[1]]), F.conv2d(x, w[h[2]], w[h[3]])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="1x4x240x240")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--flops", type=float, default=5.349e9, help="FLOPs per pass, from vbseg bench")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    shape = [int(s) for s in a.shape.split("x")]
    params, spec = make_params(shape[1], 16, 4, 1)
    sig = [F.softplus(r) for _, r in params]
    x = torch.randn(shape)

    def sample_pass():
        w = [mu + s * torch.randn_like(mu) for (mu, _), s in zip(params, sig)]
        m, lv = forward(x, w, spec, 4)
        p = torch.sigmoid(m)  # the MC accumulation's share
        return p, lv

    with torch.no_grad():
        sample_pass()
        best = 1e30
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            for _ in range(a.samples):
                sample_pass()
            best = min(best, time.perf_counter() - t0)
    per = best / a.samples
    print(f"torch {torch.__version__}, threads {a.threads}")
    print(f"torch per-sample: {per * 1e3:.2f} ms, {a.flops / per * 1e-9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
