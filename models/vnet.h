/*
 * vnet.h: the variational V-Net of Milletari, Navab and Ahmadi (2016), in
 * 2D or 3D, with the seed paper's latent and heteroscedastic heads.
 */
#ifndef VBS_MODELS_VNET_H
#define VBS_MODELS_VNET_H

#include "net.h"

/* Builds an untrained variational V-Net. depth = the stride-2 down
 * steps (the paper: 4, as the default; sizes must be multiples of
 * 2^depth). Level l (0..depth) has c_l = base*2^l channels. Each stage
 * is residual: n_l = min(l+1, 3) 5x5 (5x5x5) convs, each + norm + PReLU,
 * the stage's input added before the last PReLU. The first stage's input
 * is the image: added as it is when it has 1 channel (broadcast, as the
 * paper's) or base channels, else through a 1x1 conv "enc0.skip". Down: a
 * 2x2 stride-2 conv c_l -> c_(l+1) + norm + PReLU. Up: a 2x2 stride-2
 * transposed conv to c_l + norm + PReLU, concatenated with the encoder's
 * stage l (2*c_l channels), then a residual stage of n_l convs at 2*c_l.
 * With latent > 0, z from the pooled bottleneck is broadcast and
 * concatenated before the final 1x1 heads (logits, and logvar with
 * hetero). With dropout > 0, every stage (encoder and decoder) ends in a
 * Dropout "<stage>.dropout" of that ratio, so the skips carry it too.
 * Convs' weights and biases are variational; norms and PReLU slopes (0.25
 * per channel) are plain. *out as for vbs_model_load. */
vbs_status vbs_vnet_build(const vbs_net_opts *o, vbs_model **out);

/* The floats vbs_vnet_build would store, without storing them. */
double vbs_vnet_floats(const vbs_net_opts *o);

#endif
