#!/usr/bin/python3
"""twin_make.py DIR: the PyTorch side of tests/twin.sh (Debian's python3-torch).

A small 2D network (Conv, BatchNorm in eval mode, ReLU, a deterministic Conv,
ConvTranspose, Conv head) whose variational layers are written under each
naming convention's state-dict keys with torch.save, and its deterministic
twin (the same network with mu as weights) exported by torch.onnx.export:
  twin.onnx       do_constant_folding=False, training=PRESERVE: initializers named by module path
  renamed.onnx    the same network inside a wrapper module: every initializer named "inner.*"
                  (only byte matching can find them)
  fused.onnx      exported in eval mode with do_constant_folding=True: Conv+BN fused
  ckpt_<conv>.pt  torch.save of the state dict, for conv in plain, bayesian-torch, blitz, torchbnn
  extra.pt        bayesian-torch keys plus a parameter the graph lacks ("ghost.mu_kernel")
  plainextra.pt   bayesian-torch keys plus an unmatched plain tensor ("stray.weight")
  x.npy           an input; want.npy: PyTorch's forward with mu as weights (float64 reference)
  logsig.pt       torchbnn keys with log sigma values from -800 to 88 in up.weight (for the rho check)
Random values (fixed seed) so that no two tensors share their bytes.
"""
import os
import sys

import numpy as np
import torch

out = sys.argv[1]
torch.manual_seed(7)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = torch.nn.Conv2d(2, 4, 3, padding=1)       # variational
        self.bn = torch.nn.BatchNorm2d(4)                    # plain tensors
        self.mid = torch.nn.Conv2d(4, 4, 3, padding=1)       # deterministic conv: plain weight and bias
        self.up = torch.nn.ConvTranspose2d(4, 3, 2, stride=2)  # variational
        self.head = torch.nn.Conv2d(3, 2, 1)                 # variational

    def forward(self, x):
        x = torch.relu(self.bn(self.enc(x)))
        x = torch.relu(self.mid(x))
        return self.head(self.up(x))


class Wrap(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


net = Net()
with torch.no_grad():
    for p in net.parameters():
        p.copy_(torch.randn_like(p) * 0.5)
    net.bn.running_mean.copy_(torch.randn(4) * 0.1)
    net.bn.running_var.copy_(torch.rand(4) + 0.5)
net.eval()
x = torch.randn(1, 2, 8, 8)
np.save(os.path.join(out, "x.npy"), x.numpy())
with torch.no_grad():
    want = net.double()(x.double()).numpy()
    net.float()
np.save(os.path.join(out, "want.npy"), want)

kw = dict(input_names=["x"], output_names=["y"], opset_version=17,
          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
torch.onnx.export(net, x, os.path.join(out, "twin.onnx"), do_constant_folding=False,
                  training=torch.onnx.TrainingMode.PRESERVE, **kw)
torch.onnx.export(Wrap(net), x, os.path.join(out, "renamed.onnx"), do_constant_folding=False,
                  training=torch.onnx.TrainingMode.PRESERVE, **kw)
torch.onnx.export(net, x, os.path.join(out, "fused.onnx"), do_constant_folding=True, **kw)

VAR = {"enc": True, "up": True, "head": True}
sd = net.state_dict()


def keys(conv, path, which, kernel):
    """the (mu key, spread key) of module path's weight or bias"""
    if conv == "plain":
        return f"{path}.{which}", f"{path}.{which}.rho"
    if conv == "bayesian-torch":
        w = "kernel" if (which == "weight" and kernel) else which
        return f"{path}.mu_{w}", f"{path}.rho_{w}"
    if conv == "blitz":
        return f"{path}.{which}_mu", f"{path}.{which}_rho"
    return f"{path}.{which}_mu", f"{path}.{which}_log_sigma"


def ckpt(conv, rho_of=lambda t: -3.0 + 0.5 * torch.rand_like(t)):
    torch.manual_seed(11)  # the same rhos in every convention
    d = {}
    for k, v in sd.items():
        path, which = k.rsplit(".", 1)
        if path in VAR and which in ("weight", "bias"):
            mk, sk = keys(conv, path, which, v.dim() > 2)
            d[mk] = v.clone()
            rho = rho_of(v)
            d[sk] = torch.log(torch.nn.functional.softplus(rho)) if conv == "torchbnn" else rho
            if conv == "bayesian-torch":
                d[f"{path}.eps_{mk.split('.mu_')[1]}"] = torch.zeros_like(v)
                d[f"{path}.prior_{which}_mu"] = torch.zeros_like(v)
                d[f"{path}.prior_{which}_sigma"] = torch.ones_like(v)
            if conv == "blitz":
                d[f"{path}.{which}_sampler.mu"] = d[mk]
                d[f"{path}.{which}_sampler.rho"] = d[sk]
        else:
            d[k] = v.clone()
    return d


torch.manual_seed(11)
for conv in ("plain", "bayesian-torch", "blitz", "torchbnn"):
    torch.save(ckpt(conv), os.path.join(out, f"ckpt_{conv}.pt"))
d = ckpt("bayesian-torch")
d["ghost.mu_kernel"] = torch.randn(2, 2, 1, 1)
d["ghost.rho_kernel"] = torch.full((2, 2, 1, 1), -4.0)
torch.save(d, os.path.join(out, "extra.pt"))
d = ckpt("bayesian-torch")
d["stray.weight"] = torch.randn(5)
torch.save(d, os.path.join(out, "plainextra.pt"))
# log sigma across the range, both sides of every branch (rho = l below -30; sigma = exp(l) subnormal
# in double from -708, 0 below -745; rho = sigma above sigma 30, l 3.40; sigma near FLT_MAX at 88):
# the test checks log softplus(rho) = l per element, and the export back
LS = [-800.0, -746.0, -744.0, -740.0, -700.0, -100.0, -31.0, -30.0, -29.0, -20.0, -5.0, -1.0, -0.3665, 0.0, 0.5, 1.0, 3.0,
      3.4, 3.41, 5.0, 10.0, 50.0, 88.0]
d = ckpt("torchbnn")
v = torch.linspace(-3.0, 2.0, 48)
v[:len(LS)] = torch.tensor(LS)
d["up.weight_log_sigma"] = v.reshape(4, 3, 2, 2).clone()
torch.save(d, os.path.join(out, "logsig.pt"))
np.save(os.path.join(out, "logsig.npy"), d["up.weight_log_sigma"].numpy())
# a graph tensor without its checkpoint tensor (kept from the twin, reported)
d = ckpt("bayesian-torch")
del d["bn.running_mean"], d["bn.bias"]
torch.save(d, os.path.join(out, "nobn.pt"))
# NaN in a mean, Inf in a spread: refused by name
d = ckpt("bayesian-torch")
d["enc.mu_kernel"].view(-1)[5] = float("nan")
torch.save(d, os.path.join(out, "nan_mu.pt"))
d = ckpt("bayesian-torch")
d["up.rho_bias"][1] = float("inf")
torch.save(d, os.path.join(out, "inf_rho.pt"))
# two conventions in one file: refused by auto, naming a key of each
d = ckpt("bayesian-torch")
d["head.weight_rho"] = d.pop("head.rho_kernel")
torch.save(d, os.path.join(out, "mixed.pt"))
# byte matching that could pair a mean with the wrong spread: two equal means, different spreads
d = ckpt("blitz")
d["copy.bias_mu"] = d["enc.bias_mu"].clone()
d["copy.bias_rho"] = d["enc.bias_rho"] - 1.0
torch.save(d, os.path.join(out, "ambiguous.pt"))
# a spread without its mean; a mean of the wrong shape; two keys for one tensor
d = ckpt("bayesian-torch")
d["lone.rho_bias"] = torch.zeros(3)
torch.save(d, os.path.join(out, "lone.pt"))
d = ckpt("bayesian-torch")
d["enc.mu_bias"], d["enc.rho_bias"] = torch.randn(5), torch.full((5,), -3.0)
torch.save(d, os.path.join(out, "shape.pt"))
d = ckpt("bayesian-torch")
d["enc.mu_weight"], d["enc.rho_weight"] = d["enc.mu_kernel"].clone(), d["enc.rho_kernel"].clone()
torch.save(d, os.path.join(out, "twice.pt"))
# a training checkpoint: its state_dict by default, another entry with --key
torch.save({"epoch": 3, "ema": ckpt("blitz"), "state_dict": ckpt("bayesian-torch")}, os.path.join(out, "train.pt"))
