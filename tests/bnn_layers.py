"""Minimal Bayesian layers with the state-dict names of bayesian-torch, BLiTZ and torchbnn (tests only).

bayesian-torch, BLiTZ and torchbnn are not in Debian, so the checkpoint tests build their networks from these
stand-ins. What they copy from each library is what a checkpoint shows: the parameter and buffer names, their
shapes and order, the aliases and the sampling rule. What they do not copy: KL terms and priors' maths, forward
returning (out, kl) (bayesian-torch's layers here return out only), initialisation schemes, quantisation, freezing.

  bayesian-torch (IntelLabs, layers/variational_layers): Conv2dReparameterization, Conv3dReparameterization,
    ConvTranspose2dReparameterization: mu_kernel, rho_kernel (conv: (out, in/groups, k...); transposed:
    (in, out/groups, k...)), mu_bias, rho_bias; LinearReparameterization: mu_weight, rho_weight, mu_bias,
    rho_bias. Buffers eps_kernel|eps_weight, prior_weight_mu, prior_weight_sigma, eps_bias, prior_bias_mu,
    prior_bias_sigma: persistent (in the state dict) in the library's first releases, persistent=False (absent)
    in current ones; `persistent_buffers` picks which. sigma = softplus(rho) (log1p(exp(rho))).
  BLiTZ (blitz.modules): BayesianConv2d, BayesianLinear: weight_mu, weight_rho, bias_mu, bias_rho, and the
    samplers' aliases weight_sampler.mu / .rho (a second Parameter over the same storage) with the buffer
    weight_sampler.eps_w, likewise bias_sampler.*. weight_prior_dist / bias_prior_dist are modules holding
    floats and torch.distributions, so they add no state-dict entries (as in the library). sigma = softplus(rho).
  torchbnn (Harry24k): BayesConv2d, BayesLinear (prior_mu, prior_sigma first, as in the library): weight_mu,
    weight_log_sigma, bias_mu, bias_log_sigma; buffers weight_eps / bias_eps are None (absent from the state
    dict). sigma = exp(log_sigma).
  vbseg plain: VbsConv2d, VbsConvTranspose2d: torch.nn layers whose rho is saved as "weight.rho" / "bias.rho",
    vbseg's own names (a PyTorch module cannot have a parameter with a dot, so the state dict is renamed).

Every layer samples w = mu + sigma * eps. `mode` selects what forward uses: "sample" (fresh eps from
torch.randn), "mean" (mu) or "fixed" (eps taken from `fixed_eps`, a dict {"weight": T, "bias": T}), the last so
that a test can replay another runtime's draw through the layer's own forward.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair, _triple


class _Sampled(nn.Module):
    """Common sampling switch; subclasses give sigma() and the (mu, spread) pairs."""

    def __init__(self):
        super().__init__()
        self.mode = "sample"
        self.fixed_eps = {}

    def sigma(self, spread):
        return F.softplus(spread)

    def draw(self, which, mu, spread):
        if mu is None or self.mode == "mean":
            return mu
        eps = self.fixed_eps[which] if self.mode == "fixed" else torch.randn_like(mu)
        return mu + self.sigma(spread) * eps


def set_mode(model, mode, eps=None):
    """mode of every layer in model; eps: {(module path, "weight"|"bias"): tensor} for "fixed"."""
    for path, m in model.named_modules():
        if isinstance(m, _Sampled):
            m.mode = mode
            m.fixed_eps = {w: eps[(path, w)] for w in ("weight", "bias") if eps and (path, w) in eps}


# ---------------------------------------------------------------- bayesian-torch

def _bt_params(layer, kind, shape, out, bias, prior_mean, prior_variance, mu_init, rho_init, persistent):
    """bayesian-torch's parameters and buffers, in its order: mu_<kind>, rho_<kind>, eps_<kind>, prior_weight_*,
    then mu_bias, rho_bias, eps_bias, prior_bias_* (kind: kernel for convs, weight for Linear)."""
    setattr(layer, "mu_" + kind, nn.Parameter(torch.empty(shape).normal_(mu_init, 0.1)))
    setattr(layer, "rho_" + kind, nn.Parameter(torch.empty(shape).normal_(rho_init, 0.1)))
    layer.register_buffer("eps_" + kind, torch.zeros(shape), persistent=persistent)
    layer.register_buffer("prior_weight_mu", torch.full(shape, float(prior_mean)), persistent=persistent)
    layer.register_buffer("prior_weight_sigma", torch.full(shape, float(prior_variance)), persistent=persistent)
    if bias:
        layer.mu_bias = nn.Parameter(torch.empty(out).normal_(mu_init, 0.1))
        layer.rho_bias = nn.Parameter(torch.empty(out).normal_(rho_init, 0.1))
        layer.register_buffer("eps_bias", torch.zeros(out), persistent=persistent)
        layer.register_buffer("prior_bias_mu", torch.full((out,), float(prior_mean)), persistent=persistent)
        layer.register_buffer("prior_bias_sigma", torch.full((out,), float(prior_variance)), persistent=persistent)
    else:
        layer.register_parameter("mu_bias", None)
        layer.register_parameter("rho_bias", None)


class _BTConv(_Sampled):
    dims, transposed = 2, False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 prior_mean=0, prior_variance=1, posterior_mu_init=0, posterior_rho_init=-3.0, bias=True,
                 output_padding=0, persistent_buffers=True):
        super().__init__()
        nt = _pair if self.dims == 2 else _triple
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.output_padding = output_padding
        self.bias = bias
        lead = (in_channels, out_channels // groups) if self.transposed else (out_channels, in_channels // groups)
        shape = lead + nt(kernel_size)
        _bt_params(self, "kernel", shape, out_channels, bias, prior_mean, prior_variance, posterior_mu_init,
                   posterior_rho_init, persistent_buffers)

    def forward(self, x):
        w = self.draw("weight", self.mu_kernel, self.rho_kernel)
        b = self.draw("bias", self.mu_bias, self.rho_bias)
        if self.transposed:
            f = F.conv_transpose2d if self.dims == 2 else F.conv_transpose3d
            return f(x, w, b, self.stride, self.padding, self.output_padding, self.groups, self.dilation)
        f = F.conv2d if self.dims == 2 else F.conv3d
        return f(x, w, b, self.stride, self.padding, self.dilation, self.groups)


class Conv2dReparameterization(_BTConv):
    dims, transposed = 2, False


class Conv3dReparameterization(_BTConv):
    dims, transposed = 3, False


class ConvTranspose2dReparameterization(_BTConv):
    dims, transposed = 2, True


class LinearReparameterization(_Sampled):
    def __init__(self, in_features, out_features, prior_mean=0, prior_variance=1, posterior_mu_init=0,
                 posterior_rho_init=-3.0, bias=True, persistent_buffers=True):
        super().__init__()
        self.in_features, self.out_features, self.bias = in_features, out_features, bias
        _bt_params(self, "weight", (out_features, in_features), out_features, bias, prior_mean, prior_variance,
                   posterior_mu_init, posterior_rho_init, persistent_buffers)

    def forward(self, x):
        return F.linear(x, self.draw("weight", self.mu_weight, self.rho_weight), self.draw("bias", self.mu_bias, self.rho_bias))


# ---------------------------------------------------------------- BLiTZ

class TrainableRandomDistribution(nn.Module):
    """BLiTZ's sampler: nn.Parameter(mu) over the layer's own Parameter makes a second Parameter on the same
    storage, hence the alias entries weight_sampler.mu / .rho in the state dict, plus its eps_w buffer."""

    def __init__(self, mu, rho):
        super().__init__()
        self.mu = nn.Parameter(mu)
        self.rho = nn.Parameter(rho)
        self.register_buffer("eps_w", torch.zeros(mu.shape))


class PriorWeightDistribution(nn.Module):
    """BLiTZ's scale-mixture prior: floats only, no state-dict entries."""

    def __init__(self, pi=1, sigma1=0.1, sigma2=0.001):
        super().__init__()
        self.pi, self.sigma1, self.sigma2 = pi, sigma1, sigma2


class _BlitzLayer(_Sampled):
    def _params(self, wshape, out, bias, mu_init, rho_init, prior):
        self.weight_mu = nn.Parameter(torch.empty(wshape).normal_(mu_init, 0.1))
        self.weight_rho = nn.Parameter(torch.empty(wshape).normal_(rho_init, 0.1))
        self.weight_sampler = TrainableRandomDistribution(self.weight_mu, self.weight_rho)
        if bias:
            self.bias_mu = nn.Parameter(torch.empty(out).normal_(mu_init, 0.1))
            self.bias_rho = nn.Parameter(torch.empty(out).normal_(rho_init, 0.1))
            self.bias_sampler = TrainableRandomDistribution(self.bias_mu, self.bias_rho)
            self.bias_prior_dist = PriorWeightDistribution(*prior)
        else:
            self.register_buffer("bias_zero", torch.zeros(out))
        self.weight_prior_dist = PriorWeightDistribution(*prior)

    def _wb(self):
        w = self.draw("weight", self.weight_mu, self.weight_rho)
        b = self.draw("bias", self.bias_mu, self.bias_rho) if self.bias else self.bias_zero
        return w, b


class BayesianConv2d(_BlitzLayer):
    def __init__(self, in_channels, out_channels, kernel_size, groups=1, stride=1, padding=0, dilation=1, bias=True,
                 prior_sigma_1=0.1, prior_sigma_2=0.002, prior_pi=1, posterior_mu_init=0, posterior_rho_init=-6.0):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.groups, self.stride, self.padding, self.dilation, self.bias = groups, stride, padding, dilation, bias
        self._params((out_channels, in_channels // groups, *kernel_size), out_channels, bias, posterior_mu_init,
                     posterior_rho_init, (prior_pi, prior_sigma_1, prior_sigma_2))

    def forward(self, x):
        w, b = self._wb()
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)


class BayesianLinear(_BlitzLayer):
    def __init__(self, in_features, out_features, bias=True, prior_sigma_1=0.1, prior_sigma_2=0.4, prior_pi=1,
                 posterior_mu_init=0, posterior_rho_init=-7.0):
        super().__init__()
        self.in_features, self.out_features, self.bias = in_features, out_features, bias
        self._params((out_features, in_features), out_features, bias, posterior_mu_init, posterior_rho_init,
                     (prior_pi, prior_sigma_1, prior_sigma_2))

    def forward(self, x):
        w, b = self._wb()
        return F.linear(x, w, b)


# ---------------------------------------------------------------- torchbnn

class _TorchbnnLayer(_Sampled):
    def sigma(self, spread):
        return torch.exp(spread)

    def _params(self, prior_mu, prior_sigma, wshape, out, bias):
        self.prior_mu, self.prior_sigma, self.prior_log_sigma = prior_mu, prior_sigma, math.log(prior_sigma)
        stdv = 1.0 / math.sqrt(wshape[1] * (wshape[2] ** 2 if len(wshape) > 2 else 1))
        self.weight_mu = nn.Parameter(torch.empty(wshape).uniform_(-stdv, stdv))
        self.weight_log_sigma = nn.Parameter(torch.full(wshape, self.prior_log_sigma))
        self.register_buffer("weight_eps", None)
        self.bias = bool(bias)
        if self.bias:
            self.bias_mu = nn.Parameter(torch.empty(out).uniform_(-stdv, stdv))
            self.bias_log_sigma = nn.Parameter(torch.full((out,), self.prior_log_sigma))
        else:
            self.register_parameter("bias_mu", None)
            self.register_parameter("bias_log_sigma", None)
        self.register_buffer("bias_eps", None)

    def _wb(self):
        return self.draw("weight", self.weight_mu, self.weight_log_sigma), self.draw("bias", self.bias_mu, self.bias_log_sigma)


class BayesConv2d(_TorchbnnLayer):
    def __init__(self, prior_mu, prior_sigma, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros"):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.transposed, self.output_padding, self.groups, self.padding_mode = False, _pair(0), groups, padding_mode
        self._params(prior_mu, prior_sigma, (out_channels, in_channels // groups, *self.kernel_size), out_channels, bias)

    def forward(self, x):
        w, b = self._wb()
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)


class BayesLinear(_TorchbnnLayer):
    def __init__(self, prior_mu, prior_sigma, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._params(prior_mu, prior_sigma, (out_features, in_features), out_features, bias)

    def forward(self, x):
        w, b = self._wb()
        return F.linear(x, w, b)


# ---------------------------------------------------------------- vbseg's own names

class _VbsPlain(_Sampled):
    """A torch.nn conv whose rho parameters are saved as "weight.rho" / "bias.rho" (vbseg's names)."""

    def _setup(self, base, args, kw, rho_init):
        base.__init__(self, *args, **kw)
        self.mode, self.fixed_eps = "sample", {}
        self.weight_rho_ = nn.Parameter(torch.full_like(self.weight, rho_init))
        self.bias_rho_ = nn.Parameter(torch.full_like(self.bias, rho_init)) if self.bias is not None else None

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        for name in ("weight", "bias"):
            mu, rho = getattr(self, name), getattr(self, name + "_rho_")
            if mu is not None:
                destination[prefix + name] = mu if keep_vars else mu.detach()
                destination[prefix + name + ".rho"] = rho if keep_vars else rho.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        for name in ("weight", "bias"):
            mu = getattr(self, name)
            if mu is None:
                continue
            for key, param in ((prefix + name, mu), (prefix + name + ".rho", getattr(self, name + "_rho_"))):
                if key in state_dict:
                    with torch.no_grad():
                        param.copy_(state_dict[key])
                else:
                    missing_keys.append(key)

    def _wb(self):
        return self.draw("weight", self.weight, self.weight_rho_), self.draw("bias", self.bias, self.bias_rho_)


class VbsConv2d(nn.Conv2d, _VbsPlain):
    def __init__(self, *args, rho_init=-3.0, **kw):
        self._setup(nn.Conv2d, args, kw, rho_init)

    def forward(self, x):
        w, b = self._wb()
        return self._conv_forward(x, w, b)


class VbsConvTranspose2d(nn.ConvTranspose2d, _VbsPlain):
    def __init__(self, *args, rho_init=-3.0, **kw):
        self._setup(nn.ConvTranspose2d, args, kw, rho_init)

    def forward(self, x):
        w, b = self._wb()
        return F.conv_transpose2d(x, w, b, self.stride, self.padding, self.output_padding, self.groups, self.dilation)
