/*
 * unet.h: the variational U-Net of the seed paper (Sagar), in 2D or 3D.
 */
#ifndef VBS_MODELS_UNET_H
#define VBS_MODELS_UNET_H

#include "net.h"

/* The U-Net takes the common options; depth = max-pools (and levels below
 * the first), the bottleneck has base*2^depth channels. */
typedef vbs_net_opts vbs_unet_opts;

enum { VBS_UNET_NORM_NONE = VBS_NET_NORM_NONE, VBS_UNET_NORM_INSTANCE = VBS_NET_NORM_INSTANCE, VBS_UNET_NORM_BATCH = VBS_NET_NORM_BATCH };

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
