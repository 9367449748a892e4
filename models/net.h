/*
 * net.h: what every architecture in models/ takes (U-Net, V-Net, FCN-8s),
 * and the families by name, so that `vbseg create` and `vbseg train` build
 * any of them with one call. The families themselves are in unet.h,
 * vnet.h and fcn.h; new options go at the end of vbs_net_opts.
 */
#ifndef VBS_MODELS_NET_H
#define VBS_MODELS_NET_H

#include <stddef.h>

#include "vbseg.h"

typedef struct {
    int dims;            /* 2 or 3 */
    int in_channels;     /* e.g. 4: flair, t1, t1ce, t2 */
    int classes;         /* K output channels; 1 = sigmoid head */
    int base;            /* channels of the first level (see each family for how they grow) */
    int depth;           /* down-sampling steps; each family documents its own */
    int hetero;          /* add a logit log-variance head (eq. 10-11 split) */
    int latent;          /* VAE-style latent size from the pooled bottleneck; 0 = none */
    float rho0;          /* initial rho of every variational weight (-5: sigma 0.0067) */
    float prior_sigma;   /* Gaussian prior sigma recorded for the trainer */
    uint64_t seed;       /* He initialisation of the means */
    int64_t patch[3];    /* the card's slice (2D) or sliding-window (3D) size; 0 = 240 (2D), 128 (3D), rounded up to a multiple of 2^depth */
    int norm;            /* after each conv: VBS_NET_NORM_* (instance, as nnU-Net) */
    float dropout;       /* > 0: MC dropout, a Dropout of this ratio where each family documents; 0 = none */
    int deterministic;   /* 1: the sigma = 0 baseline: every weight and bias that is otherwise variational is a
                            plain tensor (the same name and He-initialised values as the mean; no rho, no prior).
                            The latent's GaussianSample stays; with dropout > 0, pure MC dropout */
} vbs_net_opts;

enum { VBS_NET_NORM_NONE = 0, VBS_NET_NORM_INSTANCE = 1, VBS_NET_NORM_BATCH = 2 };

typedef enum { VBS_ARCH_UNET = 0, VBS_ARCH_VNET = 1, VBS_ARCH_FCN = 2 } vbs_arch;

/* "unet", "vnet" or "fcn" into *a; 0 for any other name. */
int vbs_arch_parse(const char *name, vbs_arch *a);
const char *vbs_arch_name(vbs_arch a);

/* The family's defaults: depth 4 (U-Net, V-Net) or 5 (FCN-8s: VGG's five
 * pools), latent 0, instance norm, 2D, 4 channels, 2 classes, base 16. */
vbs_net_opts vbs_net_defaults(vbs_arch a);

/* 1 if the family takes o's sizes; else 0 with a one-line reason in err
 * (FCN-8s needs depth >= 3 for its three score scales; every family needs
 * a patch that is a multiple of 2^depth). */
int vbs_net_check(vbs_arch a, const vbs_net_opts *o, char *err, size_t n);

/* Builds an untrained model of the family; *out as for vbs_model_load. */
vbs_status vbs_net_build(vbs_arch a, const vbs_net_opts *o, vbs_model **out);

/* The number of floats vbs_net_build would store (means, rhos and plain
 * tensors; means only with deterministic), without allocating them: for
 * the memory check before a build. */
double vbs_net_floats(vbs_arch a, const vbs_net_opts *o);

#endif
