#!/usr/bin/env python3
"""PyTorch side of bench/conv_backward.c: the forward and backward time of
each convolution of the reference U-Net (bench/unet_layers.txt) at batch 1,
one thread, through aten::convolution_backward (the kernel autograd calls).
Prints one line per layer: name fwd_ms bwd_ms (best of --reps, in process
CPU time, as conv_backward.c: a shared machine preempts us), then the totals.
Run with Debian's /usr/bin/python3 (python3-torch)."""
import argparse
import os
import time

import torch


def best_ms(fn, reps):
    fn()
    best = 1e30
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(1)
    here = os.path.dirname(os.path.abspath(__file__))
    tf = tb = 0.0
    for line in open(os.path.join(here, "unet_layers.txt")):
        if line.startswith("#") or not line.strip():
            continue
        name, kind, cin, cout, k, s, p, h, w, dx = line.split()
        cin, cout, k, s, p, h, w, dx = map(int, (cin, cout, k, s, p, h, w, dx))
        tr = kind == "convT"
        x = torch.randn(a.batch, cin, h, w)
        wt = torch.randn((cin, cout, k, k) if tr else (cout, cin, k, k)) * 0.1
        b = torch.randn(cout)
        if tr:
            fwd = lambda: torch.nn.functional.conv_transpose2d(x, wt, b, stride=s, padding=p)
        else:
            fwd = lambda: torch.nn.functional.conv2d(x, wt, b, stride=s, padding=p)
        y = fwd()
        dy = torch.randn_like(y)
        bwd = lambda: torch.ops.aten.convolution_backward(dy, x, wt, [cout], [s, s], [p, p], [1, 1], tr, [0, 0], 1,
                                                          [bool(dx), True, True])
        with torch.no_grad():
            f, bk = best_ms(fwd, a.reps), best_ms(bwd, a.reps)
        tf += f
        tb += bk
        print(f"{name:6s} {f:8.3f} {bk:8.3f}")
    print(f"total  {tf:8.3f} {tb:8.3f}")


if __name__ == "__main__":
    main()
