/*
 * vnet.c: the variational V-Net builder (see vnet.h for the architecture).
 * Graph construction only, on builder.c's shared layers; the kernels live
 * in runtime/ops.
 */
#include <stdio.h>

#include "builder.h"
#include "vnet.h"

/* convs per stage, the paper's 1, 2, 3, 3, ... */
static int n_convs(int l) { return l < 2 ? l + 1 : 3; }

/* A residual stage: n 5x5 convs of ch channels, each + norm + PReLU, with
 * res added before the last PReLU; then o->dropout's Dropout, if any. */
static const char *stage(const vbs_layers *c, const char *name, const char *x, const char *res, int64_t cin, int64_t ch, int n) {
    char s[128];
    for (int i = 1; i <= n; i++) {
        snprintf(s, sizeof s, "%s.conv%d", name, i);
        x = vbs_l_conv(c, s, x, i == 1 ? cin : ch, ch, 5, 1);
        snprintf(s, sizeof s, "%s.norm%d", name, i);
        x = vbs_l_norm(c, s, x, ch);
        if (i == n) {
            snprintf(s, sizeof s, "%s.add", name);
            x = vbs_l_add(c, s, x, res);
        }
        snprintf(s, sizeof s, "%s.prelu%d", name, i);
        x = vbs_l_prelu(c, s, x, ch);
    }
    snprintf(s, sizeof s, "%s.dropout", name);
    return vbs_l_dropout(c, s, x);
}

/* conv (down) or transposed conv (up), 2x2 stride 2, + norm + PReLU */
static const char *resample(const vbs_layers *c, const char *name, const char *x, int64_t cin, int64_t cout, int up) {
    char s[128];
    x = up ? vbs_l_conv_t(c, name, x, cin, cout, 2, 2, VBS_L_HE) : vbs_l_conv(c, name, x, cin, cout, 2, 2);
    snprintf(s, sizeof s, "%.100s.norm", name);
    x = vbs_l_norm(c, s, x, cout);
    snprintf(s, sizeof s, "%.100s.prelu", name);
    return vbs_l_prelu(c, s, x, cout);
}

static void vnet(const vbs_layers *c, const char *x) {
    const vbs_net_opts *o = c->o;
    const char *skip[16];
    char s[128];
    int64_t cin = o->in_channels, base = o->base;
    /* the first stage adds its input: as it is (1 channel broadcasts, as in
     * the paper, or already base channels), else projected by a 1x1 conv */
    const char *res = cin == 1 || cin == base ? x : vbs_l_conv(c, "enc0.skip", x, cin, base, 1, 1);
    x = skip[0] = stage(c, "enc0", x, res, cin, base, n_convs(0));
    for (int l = 1; l <= o->depth; l++) {
        int64_t ch = base << l;
        snprintf(s, sizeof s, "down%d", l - 1);
        x = resample(c, s, x, ch / 2, ch, 0);
        snprintf(s, sizeof s, "enc%d", l);
        x = skip[l] = stage(c, s, x, x, ch, ch, n_convs(l));
    }
    int64_t ch = base << o->depth; /* the bottleneck's */
    const char *z = o->latent > 0 ? vbs_l_latent(c, x, ch) : NULL;
    for (int l = o->depth - 1; l >= 0; l--) {
        int64_t cl = base << l;
        snprintf(s, sizeof s, "up%d", l);
        x = resample(c, s, x, ch, cl, 1);
        snprintf(s, sizeof s, "cat%d", l);
        x = vbs_l_concat(c, s, x, skip[l]);
        ch = 2 * cl;
        snprintf(s, sizeof s, "dec%d", l);
        x = stage(c, s, x, x, ch, ch, n_convs(l));
    }
    if (z) {
        x = vbs_l_join(c, "latent", x, z);
        ch += o->latent;
    }
    vbs_l_heads(c, x, ch);
}

vbs_status vbs_vnet_build(const vbs_net_opts *o, vbs_model **out) {
    return vbs_l_build(o, vnet, "vnet", "V-Net (Milletari et al. 2016; He-initialised)", out);
}

double vbs_vnet_floats(const vbs_net_opts *o) { return vbs_l_floats(o, vnet); }
