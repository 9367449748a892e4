#!/usr/bin/env python3
"""Export the deterministic twin of a Bayesian PyTorch network to ONNX, for `vbseg convert CKPT --graph TWIN.onnx`.

A checkpoint of mu and rho holds no graph. The twin is the same network with mu as its weights: a deep copy
of the model in which every Bayesian layer is replaced, at the same module path, by the torch.nn layer of the
same kind and hyperparameters (stride, padding, dilation, groups, output_padding, padding_mode) with mu as
its weight and bias. Exported with do_constant_folding=False, its ONNX initializers are named by module
path, P.weight and P.bias, which is how `vbseg convert` matches the checkpoint's P.mu_kernel, P.weight_mu ...
onto the graph (and by exact bytes where an exporter renamed them).

    from export_twin import export_twin
    model.load_state_dict(torch.load("ckpt.pt"))
    export_twin(model, torch.randn(1, 4, 128, 128), "twin.onnx")
    # vbseg convert ckpt.pt --graph twin.onnx model.vbseg

Recognised, by the layer's own parameter names (not its class, so that subclasses and forks work):
  bayesian-torch   mu_kernel + rho_kernel (Conv1d/2d/3d, ConvTranspose1d/2d/3d *Reparameterization;
                   transposed when the class name says Transpose), mu_weight + rho_weight (Linear),
                   mu_bias + rho_bias.  A layer with bayesian-torch's dnn_to_bnn_flag attribute returns
                   (out, kl) as the library's layers do; its twin returns (out, 0) unless called with
                   return_kl=False or the flag is set, so the model's own forward still unpacks it.
  BLiTZ            weight_mu + weight_rho, bias_mu + bias_rho (BayesianConv1d/2d/3d, BayesianLinear); the
                   weight_sampler / bias_sampler / *_prior_dist children go with the layer.
  torchbnn         weight_mu + weight_log_sigma, bias_mu + bias_log_sigma (BayesConv2d, BayesLinear, and
                   transposed convs with transposed=True).
  vbseg plain      a torch.nn Conv/ConvTranspose/Linear whose state dict holds "weight.rho" (vbseg's names).
The kind comes from mu's rank (2: Linear; 3, 4, 5: 1D, 2D, 3D conv). In every convention a conv is
transposed when the layer is a torch ConvTranspose, its class name says Transpose (any library's: a
BLiTZ-style BayesConvTranspose2d too), or (torchbnn) it has transposed=True.

Refused (ValueError naming the module path): a mu without its spread or a spread without its mu; spreads of
two conventions in one layer; a parameter name ending in rho / log_sigma that no convention knows; a Bayesian
layer with another parameter of its own, or child modules holding other tensors (the twin would lose them,
BLiTZ's sampler aliases and eps_w excepted); a mu of another rank; channel
counts that disagree with mu's shape; a model with no Bayesian layer at all (an unknown library: its
parameters would reach the ONNX file under names no convention matches).

The export uses TrainingMode.PRESERVE on the twin in eval() mode, not TrainingMode.EVAL: PyTorch's EVAL
export runs an "eval peephole" that fuses Conv + BatchNorm into new, renamed weights even with
do_constant_folding=False (seen with PyTorch 1.13), which is exactly what `vbseg convert` refuses. PRESERVE
on an eval() model gives the same inference graph (BatchNormalization with running statistics, no Dropout)
without the fusion. PyTorch also merges initializers with equal values into one plus Identity nodes (a
fresh BatchNorm's weight and running_var are both ones); that pass is switched off for the export so every
tensor keeps its own initializer and name (vbseg's importer would fold such Identity nodes, but byte matching
and other tools see initializers only). The file is written to a temporary name and renamed.
"""
import argparse
import contextlib
import copy
import importlib
import json
import os
import pickle
import sys
import tempfile
import warnings

import torch
import torch.nn as nn

# (mu name, spread name) pairs per convention, the weight's first and the bias's last; a layer's spread names
# decide its convention.
_PAIRS = {
    "bayesian-torch": [("mu_kernel", "rho_kernel"), ("mu_weight", "rho_weight"), ("mu_bias", "rho_bias")],
    "blitz": [("weight_mu", "weight_rho"), ("bias_mu", "bias_rho")],
    "torchbnn": [("weight_mu", "weight_log_sigma"), ("bias_mu", "bias_log_sigma")],
}
_SPREAD_HINTS = ("rho", "log_sigma")


def _bayes_params(path, m):
    """(convention, weight mu, bias mu or None) of a Bayesian layer, or None for any other module."""
    own = {k: v for k, v in m.named_parameters(recurse=False) if v is not None}
    sd_keys = set(m.state_dict(keep_vars=True).keys())
    if "weight.rho" in sd_keys and isinstance(getattr(m, "weight", None), torch.Tensor):
        if "bias" in own and "bias.rho" not in sd_keys:
            raise ValueError(f"layer '{path}': weight.rho without bias.rho")
        return "plain", m.weight, own.get("bias")
    # the convention is the one whose spread names the layer holds; then its mu and spread come in pairs
    convs = [c for c, pairs in _PAIRS.items() if any(sp in own for _, sp in pairs)]
    if len(convs) > 1:
        raise ValueError(f"layer '{path}' ({type(m).__name__}): spreads of two conventions ({convs[0]}, {convs[1]})")
    if not convs:
        lone = [mu for pairs in _PAIRS.values() for mu, _ in pairs if mu in own]
        if lone:
            raise ValueError(f"layer '{path}' ({type(m).__name__}): {lone[0]} without its spread "
                             f"({', '.join(sp for pairs in _PAIRS.values() for mu, sp in pairs if mu == lone[0])})")
    for conv in convs:
        pairs = _PAIRS[conv]
        extra = [k for k in own if k not in {n for pair in pairs for n in pair}]
        if extra:
            raise ValueError(f"layer '{path}' ({type(m).__name__}): parameter '{extra[0]}' is not one of {conv}'s, "
                             f"and the twin would lose it")
        for mu, spread in pairs:
            if (mu in own) != (spread in own):
                raise ValueError(f"layer '{path}' ({type(m).__name__}): {mu if mu in own else spread} without "
                                 f"{spread if mu in own else mu}")
        w = [own[mu] for mu, _ in pairs[:-1] if mu in own]
        if len(w) != 1:
            raise ValueError(f"layer '{path}': expected one weight mu of {[p[0] for p in pairs[:-1]]}, found {len(w)}")
        return conv, w[0], own.get(pairs[-1][0])
    odd = [k for k in own if any(h in k.split("_") or k.endswith(h) for h in _SPREAD_HINTS)]
    if odd:
        raise ValueError(f"layer '{path}' ({type(m).__name__}): parameter '{odd[0]}' looks like a spread but no "
                         f"known convention (bayesian-torch, BLiTZ, torchbnn, vbseg plain) names it")
    return None


def _is_transposed(m):
    t = getattr(m, "transposed", None)
    if isinstance(t, bool):
        return t
    return isinstance(m, nn.modules.conv._ConvTransposeNd) or "transpose" in type(m).__name__.lower()


class _KLTuple:
    """Twin side of bayesian-torch's forward(x, return_kl=True) -> (out, kl): kl of the mean network is 0."""

    def forward(self, x, return_kl=True):
        out = super().forward(x)
        if return_kl and not self.dnn_to_bnn_flag:
            return out, out.new_zeros(())
        return out


def _det_layer(path, m, w, b):
    """The torch.nn layer of m's kind and hyperparameters, with w (mu) and b as its weight and bias."""
    dims = w.dim() - 2
    if w.dim() == 2:
        base, args, kw = nn.Linear, (w.shape[1], w.shape[0]), {}
        declared = (getattr(m, "in_features", w.shape[1]), getattr(m, "out_features", w.shape[0]))
    elif 1 <= dims <= 3:
        transposed = _is_transposed(m)
        groups = int(getattr(m, "groups", 1))
        if transposed:
            cin, cout = w.shape[0], w.shape[1] * groups
            base = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[dims - 1]
        else:
            cin, cout = w.shape[1] * groups, w.shape[0]
            base = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1]
        args = (cin, cout, tuple(w.shape[2:]))
        kw = {"stride": getattr(m, "stride", 1), "padding": getattr(m, "padding", 0),
              "dilation": getattr(m, "dilation", 1), "groups": groups,
              "padding_mode": getattr(m, "padding_mode", "zeros")}
        if transposed:
            kw["output_padding"] = getattr(m, "output_padding", 0)
        declared = (getattr(m, "in_channels", cin), getattr(m, "out_channels", cout))
    else:
        raise ValueError(f"layer '{path}' ({type(m).__name__}): weight mu of shape {tuple(w.shape)} is neither "
                         f"Linear (rank 2) nor a 1D/2D/3D convolution (rank 3 to 5)")
    if tuple(declared) != tuple(args[:2]):
        raise ValueError(f"layer '{path}' ({type(m).__name__}): in/out {tuple(declared)} disagree with weight mu "
                         f"of shape {tuple(w.shape)} (in/out {tuple(args[:2])})")
    cls = base
    if hasattr(m, "dnn_to_bnn_flag"):
        cls = type("Twin" + base.__name__, (_KLTuple, base), {})
    layer = cls(*args, bias=b is not None, **kw).to(dtype=w.dtype, device=w.device)
    if hasattr(m, "dnn_to_bnn_flag"):
        layer.dnn_to_bnn_flag = bool(m.dnn_to_bnn_flag)
    with torch.no_grad():
        layer.weight.copy_(w)
        if b is not None:
            layer.bias.copy_(b)
    return layer


def make_twin(model):
    """Deep copy of model with each Bayesian layer replaced by its deterministic twin (mu weights), in eval()."""
    twin = copy.deepcopy(model)
    found = []
    for path, m in list(twin.named_modules()):
        if any(path.startswith(p + ".") for p in found):
            continue  # inside a layer already replaced (BLiTZ's samplers)
        kind = _bayes_params(path or "<model>", m)
        if kind is None:
            continue
        _, w, b = kind
        for cpath, child in m.named_modules():
            if not cpath:
                continue
            own = [n for n, t in list(child.named_parameters(recurse=False)) + list(child.named_buffers(recurse=False))
                   if t is not None and n not in ("mu", "rho", "eps_w")]
            if own:
                raise ValueError(f"layer '{path}': child module '{cpath}' holds '{own[0]}', which the twin would lose")
        layer = _det_layer(path or "<model>", m, w.detach(), None if b is None else b.detach())
        if not path:
            return layer.eval()
        parent, _, name = path.rpartition(".")
        setattr(twin.get_submodule(parent) if parent else twin, name, layer)
        found.append(path)
    if not found:
        raise ValueError("no Bayesian layer found (recognised: bayesian-torch mu_kernel/mu_weight + rho_*, BLiTZ "
                         "weight_mu + weight_rho, torchbnn weight_mu + weight_log_sigma, vbseg weight + weight.rho)")
    return twin.eval()


@contextlib.contextmanager
def _keep_equal_initializers():
    """PyTorch (1.13 and later) merges initializers of equal values into one; keep them apart during the export."""
    name = "_jit_pass_onnx_deduplicate_initializers"
    orig = getattr(torch._C, name, None)
    if orig is None:
        yield
        return
    setattr(torch._C, name, lambda graph, params, *rest: params)
    try:
        yield
    finally:
        setattr(torch._C, name, orig)


def export_twin(model, example_input, path, opset=17, input_names=("image",), output_names=("logits",),
                dynamic=True):
    """Write the ONNX twin of model to path (atomically). Returns nothing.

    example_input: a tensor (N, C, spatial...) the model takes. dynamic: batch and spatial dims of the input and
    outputs are symbolic (N, D, H, W), so `vbseg run` takes any size the network allows. Raises ValueError for
    what the module docstring lists as refused."""
    twin = make_twin(model)
    spatial = ["D", "H", "W"][-(example_input.dim() - 2):] if example_input.dim() > 2 else []
    axes = {0: "N", **{i + 2: s for i, s in enumerate(spatial)}}
    dyn = {n: axes for n in list(input_names) + list(output_names)} if dynamic else None
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".twin-", suffix=".onnx", dir=folder)
    os.close(fd)
    try:
        with torch.no_grad(), _keep_equal_initializers():
            torch.onnx.export(twin, example_input, tmp, opset_version=opset, do_constant_folding=False,
                              training=torch.onnx.TrainingMode.PRESERVE, input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=dyn)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is for the temporary only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Export the deterministic ONNX twin (mu weights) of a Bayesian PyTorch model, for "
                    "`vbseg convert CKPT --graph TWIN.onnx OUT.vbseg`.",
        epilog="example: export_twin.py mynet:UNet ckpt.pt twin.onnx --shape 1,4,128,128 --kwargs '{\"base\": 16}'")
    ap.add_argument("model", help="MODULE:CALLABLE that builds the model (MODULE importable, e.g. with PYTHONPATH)")
    ap.add_argument("checkpoint", help="torch.save'd state dict, or a dict holding it under --key")
    ap.add_argument("out", help="the ONNX file to write")
    ap.add_argument("--shape", required=True, help="example input shape, e.g. 1,4,128,128")
    ap.add_argument("--key", help="entry of the checkpoint dict that holds the state dict (e.g. state_dict)")
    ap.add_argument("--kwargs", default="{}", help="JSON keyword arguments for the callable")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--static", action="store_true", help="fixed input size (default: N and spatial dims symbolic)")
    a = ap.parse_args(argv)
    modname, _, fn = a.model.partition(":")
    if not fn:
        ap.error("model must be MODULE:CALLABLE")
    model = getattr(importlib.import_module(modname), fn)(**json.loads(a.kwargs))
    try:
        ck = torch.load(a.checkpoint, map_location="cpu", weights_only=True)
        if a.key:
            if not isinstance(ck, dict) or a.key not in ck:
                raise KeyError(f"no entry '{a.key}' (it has {', '.join(map(repr, ck))})")
            sd = ck[a.key]
        else:  # as vbseg reads it: a state dict, else its 'state_dict', else its 'model_state_dict'
            sd = ck if all(isinstance(v, torch.Tensor) for v in ck.values()) else \
                ck.get("state_dict", ck.get("model_state_dict"))
        if not isinstance(sd, dict):
            raise KeyError("no state dict in it (name its entry with --key)")
        model.load_state_dict(sd)
    except pickle.UnpicklingError as e:  # weights_only: never run what the file asks for
        print(f"export_twin: {a.checkpoint}: torch.load(weights_only=True) refuses it ({' '.join(str(e).split())[-120:]}); "
              f"load the model in Python and call export_twin()", file=sys.stderr)
        return 1
    except (KeyError, RuntimeError, AttributeError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"export_twin: {a.checkpoint}: {' '.join(str(msg).split())}", file=sys.stderr)
        return 1
    shape = tuple(int(s) for s in a.shape.split(","))
    # PyTorch 1.13 notes a missing shape inference for constants on every export; the graph is right
    warnings.filterwarnings("ignore", message="The shape inference of prim::Constant")
    try:
        export_twin(model, torch.randn(shape), a.out, opset=a.opset, dynamic=not a.static)
    except ValueError as e:
        print(f"export_twin: {a.checkpoint}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
