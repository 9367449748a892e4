/*
 * naming.h: the state-dict naming conventions of the Bayesian PyTorch
 * libraries (issue 11 §2), as pure string functions: detect a checkpoint's
 * convention from its keys, split a key into the graph tensor it fills and
 * what it is (mean, spread, plain tensor, or a key that is not a parameter),
 * and join a graph tensor's name back into a key for the export. No tensor
 * data here: converters/twin.c matches and converts the values.
 *
 * A variational layer at module path P has, in vbseg's graph (and in the
 * ONNX twin, where torch.onnx.export names parameters by module path), the
 * tensors "P.weight" and "P.bias"; its checkpoint keys are:
 *   bayesian-torch  P.mu_kernel / P.rho_kernel (Conv, ConvTranspose), P.mu_weight / P.rho_weight
 *                   (Linear), P.mu_bias / P.rho_bias; P.eps_*, P.prior_* dropped
 *   blitz           P.weight_mu / P.weight_rho, P.bias_mu / P.bias_rho; P.weight_sampler.*,
 *                   P.bias_sampler.*, P.weight_prior_dist.*, P.bias_prior_dist.* dropped
 *   torchbnn        P.weight_mu / P.weight_log_sigma, P.bias_mu / P.bias_log_sigma
 *   plain           P.weight / P.weight.rho, P.bias / P.bias.rho (vbseg's own names)
 * Every other key (a deterministic layer's weight, batch norm's statistics)
 * is a plain tensor of its own name; *.num_batches_tracked is dropped.
 */
#ifndef VBS_CONVERTERS_NAMING_H
#define VBS_CONVERTERS_NAMING_H

#include <stddef.h>

typedef enum {
    VBS_NAMING_AUTO = 0,
    VBS_NAMING_PLAIN,
    VBS_NAMING_BAYESIAN_TORCH,
    VBS_NAMING_BLITZ,
    VBS_NAMING_TORCHBNN
} vbs_naming;

typedef enum {
    VBS_KEY_PLAIN = 0,   /* a tensor of its own name (plain: also a mean, if a spread names it) */
    VBS_KEY_MU,          /* the mean of the graph tensor `target` */
    VBS_KEY_SPREAD,      /* its spread: rho (softplus(rho) = sigma), or torchbnn's log sigma */
    VBS_KEY_DROPPED      /* not a parameter (eps_*, prior_*, samplers' aliases, num_batches_tracked) */
} vbs_key_kind;

/* "auto", "plain", "bayesian-torch", "blitz", "torchbnn" -> *out; 0 if unknown. */
int vbs_naming_parse(const char *word, vbs_naming *out);
const char *vbs_naming_word(vbs_naming n);

/* What key means under convention n (not AUTO): its kind, and in target
 * (len bytes) the graph tensor it fills ("P.weight", "P.bias", or the key
 * itself for a plain tensor; empty for a dropped key). Returns the kind, or
 * -1 if target does not fit in len. */
int vbs_naming_split(vbs_naming n, const char *key, char *target, size_t len);

/* The key under convention n (not AUTO) of graph tensor `name`: its mean
 * (spread 0) or its spread (spread 1) when variational (conv: the weight of
 * a Conv or ConvTranspose, bayesian-torch's *_kernel), else the plain
 * tensor itself (variational 0). Returns 0, or -1 when the name cannot be
 * written in that convention (a variational tensor not named P.weight or
 * P.bias outside plain, or a key that would not split back to the same
 * tensor and kind), or does not fit in len. */
int vbs_naming_join(vbs_naming n, const char *name, int variational, int spread, int conv, char *key, size_t len);

/* Decides the convention from a checkpoint's keys: mu_* / rho_* suffixes
 * -> bayesian-torch, weight_rho / bias_rho -> blitz, *_log_sigma ->
 * torchbnn, a ".rho" suffix -> plain; no spread key at all -> plain. Keys
 * of two conventions are refused naming one of each (err, errlen). */
int vbs_naming_detect(const char *const *keys, int n, vbs_naming *out, char *err, size_t errlen);

#endif
