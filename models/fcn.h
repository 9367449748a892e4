/*
 * fcn.h: the variational FCN-8s of Long, Shelhamer and Darrell (2015), in
 * 2D or 3D, with the seed paper's latent and heteroscedastic heads.
 */
#ifndef VBS_MODELS_FCN_H
#define VBS_MODELS_FCN_H

#include "net.h"

/* Builds an untrained variational FCN-8s. depth = the 2x max-pools of the
 * VGG-like encoder (VGG16: 5, the default; at least 3; sizes must be
 * multiples of 2^depth). Stage l (0..depth-1) has 2 (l < 2) or 3 3x3
 * (3x3x3) convs of base*2^min(l,3) channels (VGG's 64..512 for base 64),
 * each + norm + ReLU, then a max-pool. VGG's fc6 and fc7 are convs:
 * "conv6" 3x3 and "conv7" 1x1 of twice the last stage's channels. The
 * scores: 1x1 convs of the conv7 features (1/2^depth), of pool depth-2's
 * (1/2^(depth-1)) and of pool depth-3's (1/2^(depth-2)); the coarsest is
 * upsampled 2x (4x4 transposed conv, stride 2) and added to the next,
 * that sum again 2x and added to the finest, and the result upsampled
 * 2^(depth-2)x (8x at depth 5: kernel 16, stride 8) to the input's size.
 * The upsamplings are learned, start as bilinear interpolation and have
 * no bias, as FCN's. With latent > 0, z from the pooled conv7 features is
 * broadcast and concatenated to each of the three scores' inputs (before
 * the final 1x1 layers); with hetero, a second such head gives "logvar".
 * With dropout > 0, a Dropout of that ratio follows each stage's pool
 * ("stage<l>.dropout", so the scores' inputs carry it) and fc6's and
 * fc7's ReLUs ("conv6.dropout", "conv7.dropout": FCN's drop6 and drop7).
 * *out as for vbs_model_load. */
vbs_status vbs_fcn_build(const vbs_net_opts *o, vbs_model **out);

/* The floats vbs_fcn_build would store, without storing them. */
double vbs_fcn_floats(const vbs_net_opts *o);

#endif
