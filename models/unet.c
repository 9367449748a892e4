/*
 * unet.c: the variational U-Net builder. Graph construction only; the
 * kernels live in runtime/ops. See unet.h for the architecture.
 */
#include <stdio.h>
#include <string.h>

#include "builder.h"
#include "unet.h"

vbs_unet_opts vbs_unet_defaults(void) {
    vbs_unet_opts o = {2, 4, 2, 16, 4, 0, 0, -5.f, 1.f, 1, {0, 0, 0}, VBS_UNET_NORM_INSTANCE, 0.f, 0};
    return o;
}

static const char *block(const vbs_layers *c, const char *name, const char *x, int64_t cin, int64_t cout) {
    char n[128];
    for (int i = 1; i <= 2; i++) {
        snprintf(n, sizeof n, "%s.conv%d", name, i);
        x = vbs_l_conv(c, n, x, i == 1 ? cin : cout, cout, 3, 1);
        snprintf(n, sizeof n, "%s.norm%d", name, i);
        x = vbs_l_norm(c, n, x, cout);
        snprintf(n, sizeof n, "%s.relu%d", name, i);
        x = vbs_l_relu(c, n, x);
    }
    snprintf(n, sizeof n, "%s.dropout", name);
    return vbs_l_dropout(c, n, x);
}

static void unet(const vbs_layers *c, const char *x) {
    const vbs_unet_opts *o = c->o;
    int nsp = c->nsp;
    const char *skip[16];
    int64_t ch = o->in_channels, k2[3] = {2, 2, 2};
    char n[128];
    for (int l = 0; l < o->depth; l++) {
        int64_t co = (int64_t)o->base << l;
        snprintf(n, sizeof n, "enc%d", l);
        skip[l] = x = block(c, n, x, ch, co);
        ch = co;
        snprintf(n, sizeof n, "pool%d", l);
        vbs_attr a[2] = {vbs_b_ints(c->b, "kernel_shape", nsp, k2), vbs_b_ints(c->b, "strides", nsp, k2)};
        x = vbs_b_node(c->b, VBS_OP_MAX_POOL, n, 1, &x, 2, a);
    }
    int64_t cb = (int64_t)o->base << o->depth;
    x = block(c, "bottleneck", x, ch, cb);
    ch = cb;
    if (o->latent > 0) {
        x = vbs_l_join(c, "latent", x, vbs_l_latent(c, x, ch));
        ch += o->latent;
    }
    for (int l = o->depth - 1; l >= 0; l--) {
        int64_t co = (int64_t)o->base << l;
        snprintf(n, sizeof n, "up%d", l);
        x = vbs_l_conv_t(c, n, x, ch, co, 2, 2, VBS_L_HE);
        snprintf(n, sizeof n, "cat%d", l);
        x = vbs_l_concat(c, n, x, skip[l]);
        snprintf(n, sizeof n, "dec%d", l);
        x = block(c, n, x, 2 * co, co);
        ch = co;
    }
    vbs_l_heads(c, x, ch);
}

vbs_status vbs_unet_build(const vbs_unet_opts *o, vbs_model **out) {
    return vbs_l_build(o, unet, "unet", "U-Net (He-initialised)", out);
}
double vbs_unet_floats(const vbs_unet_opts *o) { return vbs_l_floats(o, unet); }
