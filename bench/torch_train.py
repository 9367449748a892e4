#!/usr/bin/env python3
"""PyTorch side of the training benchmark (bench/compare_train.sh).

Times the optimiser step that `vbseg bench --train` times, on the reference
network of bench/torch_unet.py (whose make_params and forward it reuses):
a minibatch of random images and binary targets; one weight draw
w = mu + softplus(rho) * eps for the whole minibatch, eps redrawn every
step; forward; loss = 0.9 * soft Dice loss on sigmoid(logit mean) (per
example, (2 I + 1) / (P + G + 1), averaged) + 0.1 * Kendall & Gal's
heteroscedastic NLL over T = 10 logit samples x_t = z + exp(s/2) e_t
(-mean_v log mean_t p_t(target)) + kl_weight * KL(q(w) || N(0, 1)) in
closed form; autograd backward; torch.optim.Adam (lr 1e-3); float32.
It is a timing, not a check of vbseg's numbers. Runs --warmup steps, then
--repeat runs of --steps steps, timing each step; the last line reads
  train-step: X ms, Y img/s, peak RSS Z MB
X the best single step, Y = batch / X, Z the process's peak resident set
(ru_maxrss; torch's own libraries included, as vbseg's are in its figure).
Run with Debian's /usr/bin/python3 (python3-torch).
"""
import argparse
import math
import resource
import time

import torch
import torch.nn.functional as F

from torch_unet import forward, make_params


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--shape", default="4x128x128", help="one image: CxHxW")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per run")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--samples", type=int, default=10, help="heteroscedastic logit samples T")
    ap.add_argument("--kl-weight", type=float, default=1e-6)
    ap.add_argument("--lr", type=float, default=1e-3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    c, h, w = (int(s) for s in a.shape.split("x"))
    torch.manual_seed(0)
    params, spec = make_params(c, 16, 4, 1)
    mus = [mu.requires_grad_() for mu, _ in params]
    rhos = [rho.requires_grad_() for _, rho in params]
    opt = torch.optim.Adam(mus + rhos, lr=a.lr)
    x = torch.randn(a.batch, c, h, w)
    y = (torch.rand(a.batch, 1, h, w) < 0.3).float()
    sign = 2 * y - 1  # p_t(target) = sigmoid(sign * x_t)
    log_t = math.log(a.samples)

    def step():
        sig = [F.softplus(r) for r in rhos]
        wts = [mu + s * torch.randn_like(mu) for mu, s in zip(mus, sig)]
        z, lv = forward(x, wts, spec, 4)
        p = torch.sigmoid(z)
        inter = (p * y).sum((1, 2, 3))
        dice = (2 * inter + 1) / (p.sum((1, 2, 3)) + y.sum((1, 2, 3)) + 1)
        xt = z + torch.exp(0.5 * lv) * torch.randn((a.samples,) + z.shape)
        nll = -(torch.logsumexp(F.logsigmoid(sign * xt), 0) - log_t).mean()
        kl = sum((0.5 * (s * s + mu * mu - 1) - torch.log(s)).sum() for mu, s in zip(mus, sig))
        loss = 0.9 * (1 - dice.mean()) + 0.1 * nll + a.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    best = math.inf
    for _ in range(a.repeat):
        for _ in range(a.steps):
            t0 = time.perf_counter()
            loss = step()
            best = min(best, time.perf_counter() - t0)
    if not math.isfinite(loss):
        raise SystemExit(f"torch_train.py: loss {loss} is not finite")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"torch {torch.__version__}, threads {a.threads}, batch {a.batch}x{a.shape}, last loss {loss:.4f}")
    print(f"train-step: {best * 1e3:.1f} ms, {a.batch / best:.2f} img/s, peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
