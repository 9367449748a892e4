#!/usr/bin/env python3
"""PyTorch checkpoints through vbseg and back (ctest: ckpt_roundtrip).

Small segmentation nets (2D, and one 3D; Conv, BatchNorm or InstanceNorm, ReLU, MaxPool, ConvTranspose or
Upsample, a Concat skip, a final 1x1 conv) built from minimal bayesian-torch, BLiTZ, torchbnn and vbseg-plain
layers (tests/bnn_layers.py: the libraries' state-dict names), with random mu, rho in [-4, -2] and random
norm statistics. The twin is exported (converters/python/export_twin.py) from the net at one set of values,
then the values are redrawn and that second state is the checkpoint, so the converted model can only be right
if vbseg took every tensor from the checkpoint, by name. Saved with torch.save (zip), as a training checkpoint
{'state_dict': ..., 'epoch': 3} (--key state_dict), and as safetensors (a writer of a few lines below, from
the format's spec: Debian has no `safetensors` package). Then, against PyTorch running the same layers:
  (1) `vbseg run --mode mean --raw` equals the forward with mu weights, within 1e-4 * (1 + max|ref|);
  (2) `vbseg run --samples 2 --seed S --raw` equals the forward with w = mu + sigma * eps, eps recomputed from
      vbseg's documented RNG (tests/torch_reference.py's randn; stream = the tensor's index in the .vbseg + 1,
      read from tests/dump_tensors), sigma by each library's own rule (softplus(rho), exp(log_sigma));
  (3) `vbseg export out.vbseg back.safetensors --naming bayesian-torch`, loaded into a fresh bayesian-torch-like
      net with load_state_dict(strict=False) allowing only the non-parameter keys as missing, gives the same
      mean forward and the same rho, with the card and the naming in __metadata__.
Also the twin itself: for each library (with Linear layers too, which vbseg has no op for) make_twin's
forward equals the net's mean forward, its parameters are named P.weight / P.bias, and export_twin's
refusals. Usage: ckpt_roundtrip.py BUILD_DIR (with Debian's /usr/bin/python3).
Prints "ckpt_roundtrip: N passed, N failed".
"""
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "converters", "python")]
import bnn_layers as L  # noqa: E402
from export_twin import export_twin, make_twin  # noqa: E402
from torch_reference import load_tensors, randn, unet, weights  # noqa: E402

passed = failed = 0
UMASK = os.umask(0)
os.umask(UMASK)
NON_PARAM = ("eps_", "prior_", "num_batches_tracked")


def check(ok, label, detail=""):
    global passed, failed
    passed, failed = passed + bool(ok), failed + (not ok)
    print(f"{'ok  ' if ok else 'FAIL'} {label}{': ' + detail if detail else ''}")
    return ok


# ---------------------------------------------------------------- the nets

def libs(dims=2):
    """name -> (conv(i, o, k, pad, groups, dilation), up(i, o), norm(c)) of each library's layers."""
    bn = nn.BatchNorm2d
    inorm = lambda c: nn.InstanceNorm2d(c, affine=True)  # noqa: E731
    if dims == 3:  # bayesian-torch as its current releases save it: eps_* and prior_* not persistent
        conv3 = lambda i, o, k, p, g=1, d=1: L.Conv3dReparameterization(  # noqa: E731
            i, o, k, padding=p, groups=g, dilation=d, persistent_buffers=False)
        return {"bayesian-torch": (conv3, lambda i, o: nn.ConvTranspose3d(i, o, 2, stride=2),
                                   lambda c: nn.InstanceNorm3d(c, affine=True))}
    return {
        "bayesian-torch": (lambda i, o, k, p, g=1, d=1: L.Conv2dReparameterization(i, o, k, padding=p, groups=g, dilation=d),
                           lambda i, o: L.ConvTranspose2dReparameterization(i, o, 2, stride=2), bn),
        "blitz": (lambda i, o, k, p, g=1, d=1: L.BayesianConv2d(i, o, (k, k), padding=p, groups=g, dilation=d),
                  lambda i, o: nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), L.BayesianConv2d(i, o, (1, 1))), bn),
        "torchbnn": (lambda i, o, k, p, g=1, d=1: L.BayesConv2d(0.0, 0.1, i, o, k, padding=p, groups=g, dilation=d),
                     lambda i, o: nn.ConvTranspose2d(i, o, 2, stride=2), inorm),
        "plain": (lambda i, o, k, p, g=1, d=1: L.VbsConv2d(i, o, k, padding=p, groups=g, dilation=d),
                  lambda i, o: L.VbsConvTranspose2d(i, o, 2, stride=2), bn),
    }


class SegNet(nn.Module):
    """enc1 -> pool -> enc2 (dilated) -> up -> concat(enc1) -> dec (grouped) -> head (1x1)."""

    def __init__(self, conv, up, norm, dims=2, cin=2, base=4, classes=3):
        super().__init__()
        self.enc1 = conv(cin, base, 3, 1)
        self.norm1 = norm(base)
        self.pool = nn.MaxPool2d(2) if dims == 2 else nn.MaxPool3d(2)
        self.enc2 = conv(base, 2 * base, 3, 2, 1, 2)
        self.norm2 = norm(2 * base)
        self.up = up(2 * base, base)
        self.dec = conv(2 * base, base, 3, 1, 2)
        self.head = conv(base, classes, 1, 0)

    def forward(self, x):
        e1 = F.relu(self.norm1(self.enc1(x)))
        e2 = F.relu(self.norm2(self.enc2(self.pool(e1))))
        d = F.relu(self.dec(torch.cat([self.up(e2), e1], 1)))
        return self.head(d)


def randomise(model, gen):
    """New values for every parameter and norm statistic: mu ~ N(0, 1/fan_in), rho ~ U(-4, -2) (torchbnn:
    log_sigma = log(softplus(rho)), the same sigma), BN running stats and affine terms around their usual values."""
    with torch.no_grad():
        for name, p in model.named_parameters():  # BLiTZ's sampler aliases share storage: skip, they follow
            leaf = name.rsplit(".", 1)[-1]
            if "_sampler." in name:
                continue
            if "rho" in leaf:
                p.copy_(torch.rand(p.shape, generator=gen) * 2 - 4)
            elif leaf.endswith("log_sigma"):
                p.copy_(torch.log(F.softplus(torch.rand(p.shape, generator=gen) * 2 - 4)))
            elif p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(p[0].numel()))
            elif "norm" in name and leaf == "weight":
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.2)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=gen) + 0.5)
    return model.eval()


def build(lib, dims, seed):
    conv, up, norm = libs(dims)[lib]
    torch.manual_seed(seed)
    return randomise(SegNet(conv, up, norm, dims), torch.Generator().manual_seed(seed))


def bayes_layers(model):
    return [(p, m) for p, m in model.named_modules() if isinstance(m, L._Sampled)]


# ---------------------------------------------------------------- files

def write_safetensors(path, sd):
    """The `safetensors` package's save_file if it is importable (not in Debian 12: untested here), else a writer
    from the format's spec: u64 header length, JSON header (padded with spaces to 8), the data."""
    inside = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]  # not tests/safetensors.py (a script)
    try:
        from safetensors.torch import save_file
    except ImportError:
        save_file = None
    finally:
        sys.path[:] = inside
    if save_file:  # it refuses tensors that share memory (BLiTZ's aliases): each its own copy
        return save_file({k: v.detach().clone().contiguous() for k, v in sd.items()}, path)
    header, blobs, off = {}, [], 0
    for k, t in sd.items():
        a = t.detach().contiguous().numpy()
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[k] = {"dtype": {np.float32: "F32", np.int64: "I64"}[a.dtype.type], "shape": list(a.shape),
                     "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    h = json.loads(data[8:8 + n])
    meta = h.pop("__metadata__", {})
    buf = data[8 + n:]
    dt = {"F32": "<f4", "I64": "<i8"}
    out = {k: torch.from_numpy(np.frombuffer(buf[e["data_offsets"][0]:e["data_offsets"][1]], dt[e["dtype"]])
                               .reshape(e["shape"]).copy()) for k, e in h.items()}
    return out, meta


def save(kind, model, path):
    sd = model.state_dict()
    if kind == "zip":
        torch.save(sd, path)
    elif kind == "train":
        torch.save({"state_dict": sd, "epoch": 3, "optimizer": {"lr": 0.01}}, path)
    else:
        write_safetensors(path, sd)


# ---------------------------------------------------------------- runs

def run(args, label):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        check(False, label, f"exit {r.returncode}: {(r.stderr or r.stdout).strip()[:400]}")
    return r


def compare(got, ref, label):
    ref = ref.detach().numpy()
    if got.shape != ref.shape:
        return check(False, label, f"shape {got.shape} vs {ref.shape}")
    err = float(np.abs(got - ref).max())
    tol = 1e-4 * (1 + float(np.abs(ref).max()))
    return check(err <= tol, label, f"max |diff| {err:.2e} (tol {tol:.1e})")


def sample_eps(model, tdir, seed):
    """{(path, weight|bias): eps} for every Bayesian layer, from the stored tensor's index in the .vbseg;
    None (and a failure) when the converted model lacks P.weight / P.bias as variational means."""
    t = load_tensors(tdir)
    eps = {}
    for path, m in bayes_layers(model):
        for which, shape in layer_shapes(m):
            if shape is None:
                continue
            name = f"{path}.{which}"
            if name not in t or t[name][1] != "mu" or name + ".rho" not in t:
                check(False, f"{name} variational in the .vbseg", f"found {t.get(name, (None, 'absent'))[1]}")
                return None
            i, _, a = t[name]
            if tuple(a.shape) != tuple(shape):
                check(False, f"{name} shape in the .vbseg", f"{a.shape} vs {tuple(shape)}")
                return None
            eps[(path, which)] = torch.from_numpy(randn(seed, 0, i + 1, a.size).reshape(a.shape))
    return eps


def layer_shapes(m):
    """(weight|bias, mu shape or None) of a minimal layer."""
    if isinstance(m, L._BTConv):
        return [("weight", m.mu_kernel.shape), ("bias", None if m.mu_bias is None else m.mu_bias.shape)]
    if isinstance(m, L._VbsPlain):
        return [("weight", m.weight.shape), ("bias", None if m.bias is None else m.bias.shape)]
    return [("weight", m.weight_mu.shape), ("bias", m.bias_mu.shape if m.bias_mu is not None else None)]


def mean_forward(model, x):
    L.set_mode(model, "mean")
    with torch.no_grad():
        return model(x)


# ---------------------------------------------------------------- the twin, in Python only

class LinearNet(nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.fc1, self.fc2 = lin(6, 5), lin(5, 3)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class KLConv(L.Conv2dReparameterization):
    """bayesian-torch's calling convention: forward(x, return_kl=True) -> (out, kl), dnn_to_bnn_flag."""
    dnn_to_bnn_flag = False

    def forward(self, x, return_kl=True):
        out = super().forward(x)
        return (out, out.new_ones(()) * 5) if return_kl else out


class KLNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = KLConv(2, 3, 3, padding=1)

    def forward(self, x):
        y, kl = self.c(x)
        return y + 0 * kl


def twin_checks(tmp):
    x = torch.randn(2, 2, 16, 12)
    lins = {"bayesian-torch": lambda i, o: L.LinearReparameterization(i, o), "blitz": L.BayesianLinear,
            "torchbnn": lambda i, o: L.BayesLinear(0.0, 0.1, i, o)}
    for lib in libs():
        model = build(lib, 2, 3)
        before = [(p, type(m)) for p, m in bayes_layers(model)]
        twin = make_twin(model)
        ref = mean_forward(model, x)
        with torch.no_grad():
            err = float((twin(x) - ref).abs().max())
        check(err <= 1e-5, f"twin {lib} 2D: its forward is the mean forward", f"max |diff| {err:.1e}")
        names = set(n for n, _ in twin.named_parameters())
        want = {f"{p}.{w}" for p, m in bayes_layers(model) for w, s in layer_shapes(m) if s is not None}
        check(want <= names and not [n for n in names if "mu" in n or "rho" in n or "sigma" in n],
              f"twin {lib}: parameters named P.weight / P.bias", f"missing {sorted(want - names)}")
        check(all(type(twin.get_submodule(p)).__module__ == "torch.nn.modules.conv" for p, _ in bayes_layers(model)),
              f"twin {lib}: Bayesian layers became torch.nn layers")
        # the original model is left as it was (a deep copy is changed)
        check([(p, type(m)) for p, m in bayes_layers(model)] == before and len(before) >= 4,
              f"twin {lib}: the model keeps its Bayesian layers", f"{len(before)} layers")
    for lib, lin in lins.items():
        torch.manual_seed(4)
        model = randomise(LinearNet(lin), torch.Generator().manual_seed(4))
        xi = torch.randn(4, 6)
        twin = make_twin(model)
        with torch.no_grad():
            err = float((twin(xi) - mean_forward(model, xi)).abs().max())
        check(err <= 1e-6 and isinstance(twin.fc1, nn.Linear), f"twin {lib} Linear: nn.Linear, mean forward", f"{err:.1e}")
    torch.manual_seed(5)
    kl = KLNet().eval()
    twin = make_twin(kl)
    with torch.no_grad():
        out = twin.c(x)
        err = float((twin(x) - mean_forward(kl, x)).abs().max())
    check(isinstance(out, tuple) and float(out[1]) == 0 and err <= 1e-5 and not isinstance(twin.c(x, return_kl=False), tuple),
          "twin of a layer returning (out, kl): (out, 0), and out alone for return_kl=False")
    # the file: initializers named by module path (their names are plain strings in the protobuf)
    model = build("bayesian-torch", 2, 3)
    path = os.path.join(tmp, "names.onnx")
    export_twin(model, x[:1], path)
    blob = open(path, "rb").read()
    miss = [p for p, _ in bayes_layers(model) if f"{p}.weight".encode() not in blob]
    check(not miss and b"onnx::Conv_" not in blob, "export_twin: initializers P.weight, none renamed", f"missing {miss}")
    check(not [f for f in os.listdir(tmp) if f.startswith(".twin-")], "export_twin: no temporary file left")
    # refusals
    bad = build("bayesian-torch", 2, 3)
    del bad.enc1.rho_kernel
    extra = build("bayesian-torch", 2, 3)
    extra.dec.scale = nn.Parameter(torch.ones(1))
    for label, m, msg in (("mu without rho", bad, "layer 'enc1' (Conv2dReparameterization): mu_kernel without rho_kernel"),
                          ("no Bayesian layer", nn.Sequential(nn.Conv2d(2, 2, 1)), "no Bayesian layer found"),
                          ("a parameter it would lose", extra, "layer 'dec' (Conv2dReparameterization): parameter 'scale' "
                                                               "is not one of bayesian-torch's, and the twin would lose it"),
                          ("unknown spread", nn.Sequential(Unknown()), "parameter 'w_rho' looks like a spread")):
        try:
            make_twin(m)
            check(False, f"export_twin refuses {label}", "accepted")
        except ValueError as e:
            check(msg in str(e), f"export_twin refuses {label}", str(e))
    tool = os.path.join(HERE, "..", "converters", "python", "export_twin.py")
    r = subprocess.run([sys.executable, tool, "--help"], capture_output=True, text=True)
    check(r.returncode == 0 and "--graph TWIN.onnx" in r.stdout, "export_twin.py --help")
    # the command line: a training checkpoint (its state_dict found as vbseg finds it), then a wrong --key
    ck, out = os.path.join(tmp, "cli.pt"), os.path.join(tmp, "cli.onnx")
    torch.save({"state_dict": cli_net().state_dict(), "epoch": 3}, ck)  # torch 1.13's weights_only reads no floats
    env = dict(os.environ, PYTHONPATH=HERE)
    r = subprocess.run([sys.executable, tool, "ckpt_roundtrip:cli_net", ck, out, "--shape", "1,2,16,16"], env=env,
                       capture_output=True, text=True)
    check(r.returncode == 0 and not r.stderr and open(out, "rb").read().count(b"enc2.weight") >= 1 and os.stat(out).st_mode & 0o044 == 0o044 & ~UMASK,
          "export_twin.py MODULE:CALLABLE CKPT OUT --shape", (r.stderr.strip().splitlines() or [""])[-1][-300:])
    r = subprocess.run([sys.executable, tool, "ckpt_roundtrip:cli_net", ck, out, "--shape", "1,2,16,16", "--key", "nope"],
                       env=env, capture_output=True, text=True)
    check(r.returncode == 1 and r.stderr.strip() == f"export_twin: {ck}: no entry 'nope' (it has 'state_dict', 'epoch')",
          "export_twin.py: a wrong --key, one line", (r.stderr.strip().splitlines() or [""])[-1][-300:])


def cli_net():
    return build("blitz", 2, 8)


class Unknown(nn.Module):
    def __init__(self):
        super().__init__()
        self.w_mu, self.w_rho = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))


# ---------------------------------------------------------------- through vbseg

CASES = [  # library, dims, how saved, --naming, sample mode checked, exported back
    ("bayesian-torch", 2, "zip", "auto", True, True),
    ("bayesian-torch", 2, "train", "bayesian-torch", False, False),
    ("bayesian-torch", 3, "st", "auto", True, False),
    ("blitz", 2, "zip", "auto", True, True),
    ("blitz", 2, "st", "blitz", False, False),
    ("torchbnn", 2, "st", "auto", True, True),
    ("torchbnn", 2, "zip", "torchbnn", False, False),
    ("plain", 2, "zip", "auto", True, True),
]
SEED = 77


def convert_case(k, case, vbseg, dump, tmp):
    lib, dims, kind, naming, sample, back = case
    label = f"{lib} {dims}D {kind} --naming {naming}"
    a = build(lib, dims, 10 + k)
    ex = torch.randn((1, 2) + (16,) * dims if dims == 2 else (1, 2, 8, 8, 8))
    twin = os.path.join(tmp, f"twin{k}.onnx")
    export_twin(a, ex, twin)
    x = torch.randn((2, 2, 16, 12) if dims == 2 else (1, 2, 8, 12, 8))
    xin = os.path.join(tmp, f"x{k}.npy")
    np.save(xin, x.numpy())
    # the twin alone, imported as a plain ONNX network, is the mean network it was exported from
    plain = os.path.join(tmp, f"p{k}.vbseg")
    d = os.path.join(tmp, f"twin{k}")
    if run([vbseg, "convert", twin, plain, "--sigma-init", "none"], f"{label}: twin imports").returncode == 0 and \
            run([vbseg, "run", "--model", plain, "--input", xin, "--out", d, "--raw", "--mode", "mean"], f"{label}: twin runs").returncode == 0:
        compare(np.load(os.path.join(d, "logits.npy")), mean_forward(a, x), f"{label}: the twin in vbseg = PyTorch mu forward")
    ref_a = mean_forward(a, x)
    b = randomise(a, torch.Generator().manual_seed(100 + k))  # the checkpoint: other values, same names
    gap = float((mean_forward(b, x) - ref_a).abs().max())
    check(gap > 1e-2 * (1 + float(ref_a.abs().max())), f"{label}: twin and checkpoint differ ({gap:.2e}), so values must come by name")
    ckpt = os.path.join(tmp, f"ckpt{k}." + ("safetensors" if kind == "st" else "pt"))
    save(kind, b, ckpt)
    out = os.path.join(tmp, f"m{k}.vbseg")
    args = [vbseg, "convert", ckpt, "--graph", twin, out, "--naming", naming] + (["--key", "state_dict"] if kind == "train" else [])
    r = run(args, f"{label}: convert")
    if r.returncode != 0:
        return
    said = f"naming: {lib}" + (" (auto)" if naming == "auto" else "")
    check(said in r.stdout, f"{label}: convert says '{said}'", r.stdout.strip().splitlines()[0] if r.stdout.strip() else "no output")
    # every graph tensor by name (the checkpoint's values differ from the twin's, so bytes cannot match), none left
    n_graph = len([k for k in make_twin(a).state_dict() if not k.endswith("num_batches_tracked")])
    by = re.search(r"(\d+) by name, (\d+) by bytes", r.stdout)
    left = [int(n) for n in re.findall(r"unmatched[^\n(]*\((\d+)\)", r.stdout)]
    check(by and (int(by[1]), int(by[2])) == (n_graph, 0) and len(left) == 2 and left == [0, 0],
          f"{label}: all {n_graph} graph tensors matched by name, nothing unmatched",
          " | ".join(l for l in r.stdout.splitlines() if "match" in l))
    quiet = [s for s in ("eps_", "prior_", "_sampler", "num_batches_tracked") if s in r.stdout + r.stderr]
    check(not quiet, f"{label}: non-parameter keys dropped silently", f"mentioned: {quiet}")
    d = os.path.join(tmp, f"mean{k}")
    if run([vbseg, "run", "--model", out, "--input", xin, "--out", d, "--raw", "--mode", "mean"], f"{label}: run mean").returncode == 0:
        compare(np.load(os.path.join(d, "logits.npy")), mean_forward(b, x), f"{label}: mean mode = PyTorch mu forward")
    if sample:
        td = os.path.join(tmp, f"t{k}")
        os.mkdir(td)
        subprocess.run([dump, out, td], check=True)
        eps = sample_eps(b, td, SEED)
        d = os.path.join(tmp, f"sample{k}")
        r = run([vbseg, "run", "--model", out, "--input", xin, "--out", d, "--raw", "--samples", "2", "--seed", str(SEED)],
                f"{label}: run sample")
        if eps is not None and r.returncode == 0:
            L.set_mode(b, "fixed", eps)
            with torch.no_grad():
                ref = b(x)
            gap = float((ref - mean_forward(b, x)).abs().max())
            check(gap > 1e-2 * (1 + float(ref.abs().max())), f"{label}: the draw moves the output ({gap:.2e}), so sample mode is tested")
            compare(np.load(os.path.join(d, "logits.npy")), ref, f"{label}: sample 0 = PyTorch w = mu + sigma * eps(seed {SEED})")
    if back:
        export_back(lib, b, out, x, vbseg, tmp, label)


def non_param(key):
    """The keys a vbseg export does not give back: eps_*, prior_*, num_batches_tracked, BLiTZ's sampler aliases."""
    return key.rsplit(".", 1)[-1].startswith(NON_PARAM) or "_sampler." in key


def export_back(lib, b, model, x, vbseg, tmp, label):
    st = os.path.join(tmp, f"back-{lib}.safetensors")
    if run([vbseg, "export", model, st, "--naming", lib], f"{label}: export --naming {lib}").returncode:
        return
    sd, meta = read_safetensors(st)
    fresh = build(lib, 2, 999)
    res = fresh.load_state_dict(sd, strict=False)
    odd = [m for m in res.missing_keys if not non_param(m)]
    check(not res.unexpected_keys and not odd, f"{label}: export --naming {lib} loads with only non-parameter keys missing",
          f"unexpected {res.unexpected_keys}, missing {odd}")
    want = {k: v for k, v in b.state_dict().items() if not non_param(k)}
    # torchbnn's log_sigma comes back through rho = log(expm1(exp(l))) and log(softplus(rho)): float rounding
    err = max(float(((sd[k] - v).abs() / (1 + v.abs())).max()) if k in sd else float("inf") for k, v in want.items())
    check(err <= 1e-5, f"{label}: exported tensors = the checkpoint's", f"max rel diff {err:.1e} over {len(want)} tensors")
    compare(mean_forward(fresh, x).numpy(), mean_forward(b, x), f"{label}: exported then loaded, the same mean forward")
    check(meta.get("vbseg.naming") == lib, f"{label}: __metadata__ vbseg.naming", str(meta.get("vbseg.naming")))
    try:
        card = json.loads(meta.get("vbseg.card", ""))
    except ValueError:
        card = None
    check(isinstance(card, dict), f"{label}: __metadata__ vbseg.card is the card's JSON", str(meta.get("vbseg.card"))[:80])


def fused_twin_refused(vbseg, tmp):
    """A twin exported the way export_twin avoids (TrainingMode.EVAL: Conv+BN fused, weights renamed) is refused."""
    a = build("blitz", 2, 7)
    twin = make_twin(a)
    path = os.path.join(tmp, "fused.onnx")
    torch.onnx.export(twin, torch.randn(1, 2, 16, 16), path, opset_version=17, do_constant_folding=False,
                      training=torch.onnx.TrainingMode.EVAL, input_names=["image"], output_names=["logits"])
    ckpt = os.path.join(tmp, "fused.pt")
    torch.save(a.state_dict(), ckpt)
    r = subprocess.run([vbseg, "convert", ckpt, "--graph", path, os.path.join(tmp, "fused.vbseg")], capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    check(r.returncode == 1 and len(lines) == 1 and lines[0].startswith("vbseg convert: ") and "do_constant_folding=False" in lines[0]
          and not os.path.exists(os.path.join(tmp, "fused.vbseg")), "a twin with Conv+BN fused is refused with the hint",
          r.stderr.strip()[:300])


def vbseg_graph_case(vbseg, dump, tmp):
    """A checkpoint of vbseg's own U-Net written from PyTorch (vbseg's names), converted with --graph MODEL.vbseg:
    every tensor the checkpoint's, and the runs against torch_reference's rebuild of the U-Net."""
    label = "2D U-Net --graph MODEL.vbseg"
    graph, out = os.path.join(tmp, "u.vbseg"), os.path.join(tmp, "u2.vbseg")
    subprocess.run([vbseg, "create", "--arch", "unet", "--dims", "2", "--in-channels", "2", "--classes", "3", "--base", "4",
                    "--depth", "2", "--latent", "0", "--norm", "batch", "--rho", "-2.5", "--seed", "3", "--out", graph], check=True, stdout=subprocess.DEVNULL)
    td = os.path.join(tmp, "u")
    os.mkdir(td)
    subprocess.run([dump, graph, td], check=True)
    gen = torch.Generator().manual_seed(21)
    sd = {}
    for name, (_, role, a) in load_tensors(td).items():
        t = torch.from_numpy(a)
        if role == "rho":
            sd[name] = torch.rand(t.shape, generator=gen) * 2 - 4
        elif name.endswith(("running_var", "scale")):
            sd[name] = torch.rand(t.shape, generator=gen) + 0.5
        else:
            sd[name] = torch.randn(t.shape, generator=gen) * (1 / np.sqrt(t[0].numel()) if t.dim() > 1 else 0.2)
    ckpt = os.path.join(tmp, "u.pt")
    torch.save(sd, ckpt)
    r = run([vbseg, "convert", ckpt, "--graph", graph, out, "--naming", "auto"], f"{label}: convert")
    if r.returncode:
        return
    check("naming: plain (auto)" in r.stdout, f"{label}: convert says 'naming: plain (auto)'",
          next((l for l in r.stdout.splitlines() if l.startswith("naming")), "no naming line"))
    td2 = os.path.join(tmp, "u2")
    os.mkdir(td2)
    subprocess.run([dump, out, td2], check=True)
    t2 = load_tensors(td2)
    same = sorted(t2) == sorted(sd) and all(np.array_equal(t2[k][2], sd[k].numpy()) for k in sd)
    check(same, f"{label}: every tensor is the checkpoint's, bit for bit", f"{len(t2)} stored, {len(sd)} in the checkpoint")
    x = torch.randn(2, 2, 16, 12)
    xin = os.path.join(tmp, "ux.npy")
    np.save(xin, x.numpy())
    for mode in ("mean", "sample"):
        d = os.path.join(tmp, f"u-{mode}")
        if run([vbseg, "run", "--model", out, "--input", xin, "--out", d, "--raw", "--mode", mode, "--seed", str(SEED)],
               f"{label}: run {mode}").returncode == 0:
            with torch.no_grad():
                ref = unet(x, weights(t2, mode, SEED), 2, 2, 0, 0)[0]
            compare(np.load(os.path.join(d, "logits.npy")), ref, f"{label}: {mode} mode = torch_reference's U-Net")


def equal_tensors_case(vbseg, tmp):
    """Freshly made norms (weight = running_var = 1, bias = running_mean = 0): PyTorch would merge the equal
    initializers into one and Identity nodes; export_twin keeps each under its own name."""
    label = "fresh batch norms (equal tensors)"
    a = build("bayesian-torch", 2, 12)
    for m in a.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
    twin, ckpt, out = (os.path.join(tmp, f"eq{e}") for e in (".onnx", ".pt", ".vbseg"))
    export_twin(a, torch.randn(1, 2, 16, 16), twin)
    torch.save(a.state_dict(), ckpt)
    check(open(twin, "rb").read().count(b"Identity") == 0, f"{label}: each its own initializer, no Identity node")
    r = run([vbseg, "convert", ckpt, "--graph", twin, out], f"{label}: convert")
    n_graph = len([k for k in make_twin(a).state_dict() if not k.endswith("num_batches_tracked")])
    by = re.search(r"(\d+) by name, (\d+) by bytes", r.stdout)
    check(by and (int(by[1]), int(by[2])) == (n_graph, 0), f"{label}: all {n_graph} graph tensors matched by name",
          by[0] if by else r.stdout.strip()[:100])


def main():
    build_dir = sys.argv[1]
    vbseg = os.path.join(build_dir, "vbseg")
    dump = os.path.join(build_dir, "tests", "dump_tensors")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", category=UserWarning)  # torch.onnx's notes on shape inference
    with tempfile.TemporaryDirectory() as tmp:
        twin_checks(tmp)
        for k, case in enumerate(CASES):
            convert_case(k, case, vbseg, dump, tmp)
        fused_twin_refused(vbseg, tmp)
        vbseg_graph_case(vbseg, dump, tmp)
        equal_tensors_case(vbseg, tmp)
    print(f"ckpt_roundtrip: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
