/*
 * unet.h: the variational U-Net of the seed paper (Sagar), in 2D or 3D.
 */
#ifndef VBS_MODELS_UNET_H
#define VBS_MODELS_UNET_H

#include "vbseg.h"

typedef struct {
    int dims;            /* 2 or 3 */
    int in_channels;     /* e.g. 4: flair, t1, t1ce, t2 */
    int classes;         /* K output channels; 1 = sigmoid head */
    int base;            /* channels of the first level, doubling per level */
    int depth;           /* encoder levels; the bottleneck has base*2^depth channels */
    int hetero;          /* add a logit log-variance head (eq. 10-11 split) */
    int latent;          /* VAE-style latent size at the bottleneck; 0 = none */
    float rho0;          /* initial rho of every variational weight (-5: sigma 0.0067) */
    float prior_sigma;   /* Gaussian prior sigma recorded for the trainer */
    uint64_t seed;       /* He initialisation of the means */
    int64_t patch[3];    /* the card's slice (2D) or sliding-window (3D) size; 0 = 240 (2D), 128 (3D) */
    int norm;            /* after each conv of a block: VBS_UNET_NORM_* (instance, as nnU-Net) */
    float dropout;       /* > 0: a Dropout of this ratio after each block (MC dropout); 0 = none */
} vbs_unet_opts;

enum { VBS_UNET_NORM_NONE = 0, VBS_UNET_NORM_INSTANCE = 1, VBS_UNET_NORM_BATCH = 2 };

vbs_unet_opts vbs_unet_defaults(void);

/* Builds an untrained variational U-Net: per level two 3x3(x3) conv (+ norm) + ReLU,
 * 2x max-pool down, 2x stride-2 transposed conv up, skip concatenation,
 * a 1x1 head; every conv weight and bias is variational (He-initialised mu,
 * rho = rho0; the norms' scale and shift are deterministic: scale 1, shift 0,
 * BatchNormalization's running statistics 0 and 1). With latent > 0: GlobalAveragePool of the bottleneck, two
 * 1x1 convs give the latent mean and rho, GaussianSample draws z, and
 * SpatialBroadcast + Concat join z to the bottleneck features. With
 * dropout > 0 every block (encoder, bottleneck, decoder) ends in a Dropout
 * of that ratio, so the skips carry it too.
 * *out as for vbs_model_load. */
vbs_status vbs_unet_build(const vbs_unet_opts *o, vbs_model **out);

/* The number of floats vbs_unet_build would store (means, rhos and the
 * norms' tensors), computed without building: for checks before a build. */
double vbs_unet_floats(const vbs_unet_opts *o);

#endif
