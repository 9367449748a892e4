/*
 * fcn.c: the variational FCN-8s builder (see fcn.h for the architecture).
 * Graph construction only, on builder.c's shared layers; the kernels live
 * in runtime/ops.
 */
#include <stdio.h>

#include "builder.h"
#include "fcn.h"

/* One FCN-8s head: 1x1 scores at three scales (f[0] finest), summed
 * coarse to fine through learned 2x upsamplings, then upsampled to the
 * input's size; the last node is named out and is a graph output. */
static void head(const vbs_layers *c, const char *out, const char *const f[3], const int64_t ch[3]) {
    int64_t k = c->o->classes, s = (int64_t)1 << (c->o->depth - 2);
    char n[128];
    snprintf(n, sizeof n, "%s.score5", out);
    const char *x = vbs_l_conv(c, n, f[2], ch[2], k, 1, 1);
    for (int i = 1; i >= 0; i--) {
        snprintf(n, sizeof n, "%s.up%d", out, i + 4);
        x = vbs_l_conv_t(c, n, x, k, k, 4, 2, VBS_L_BILINEAR);
        snprintf(n, sizeof n, "%s.score%d", out, i + 3);
        const char *sc = vbs_l_conv(c, n, f[i], ch[i], k, 1, 1);
        snprintf(n, sizeof n, "%s.fuse%d", out, i + 3);
        x = vbs_l_add(c, n, x, sc);
    }
    vbs_l_conv_t(c, out, x, k, k, (int)(2 * s), (int)s, VBS_L_BILINEAR);
    vbs_b_output(c->b, out);
}

static void fcn(const vbs_layers *c, const char *x) {
    const vbs_net_opts *o = c->o;
    int64_t ch = o->in_channels, k2[3] = {2, 2, 2}, fch[3];
    const char *f[3];
    char n[128];
    for (int l = 0; l < o->depth; l++) {
        int64_t co = (int64_t)o->base << (l < 3 ? l : 3);
        for (int i = 1; i <= (l < 2 ? 2 : 3); i++) {
            snprintf(n, sizeof n, "stage%d.conv%d", l, i);
            x = vbs_l_conv(c, n, x, ch, co, 3, 1);
            snprintf(n, sizeof n, "stage%d.norm%d", l, i);
            x = vbs_l_norm(c, n, x, co);
            snprintf(n, sizeof n, "stage%d.relu%d", l, i);
            x = vbs_l_relu(c, n, x);
            ch = co;
        }
        snprintf(n, sizeof n, "pool%d", l);
        vbs_attr a[2] = {vbs_b_ints(c->b, "kernel_shape", c->nsp, k2), vbs_b_ints(c->b, "strides", c->nsp, k2)};
        x = vbs_b_node(c->b, VBS_OP_MAX_POOL, n, 1, &x, 2, a);
        snprintf(n, sizeof n, "stage%d.dropout", l);
        x = vbs_l_dropout(c, n, x);
        if (l >= o->depth - 3 && l < o->depth - 1) { f[l - (o->depth - 3)] = x; fch[l - (o->depth - 3)] = ch; }
    }
    /* VGG's fully connected fc6 and fc7, as convolutions of twice the last stage's channels */
    int64_t fc = 2 * ch;
    for (int i = 6; i <= 7; i++) {
        snprintf(n, sizeof n, "conv%d", i);
        x = vbs_l_conv(c, n, x, ch, fc, i == 6 ? 3 : 1, 1);
        ch = fc;
        snprintf(n, sizeof n, "conv%d.norm", i);
        x = vbs_l_norm(c, n, x, ch);
        snprintf(n, sizeof n, "conv%d.relu", i);
        x = vbs_l_relu(c, n, x);
        snprintf(n, sizeof n, "conv%d.dropout", i); /* FCN's drop6, drop7 */
        x = vbs_l_dropout(c, n, x);
    }
    f[2] = x;
    fch[2] = ch;
    if (o->latent > 0) {
        const char *z = vbs_l_latent(c, x, ch);
        for (int i = 0; i < 3; i++) {
            snprintf(n, sizeof n, "latent.join%d", i + 3);
            f[i] = vbs_l_join(c, n, f[i], z);
            fch[i] += o->latent;
        }
    }
    head(c, "logits", f, fch);
    if (o->hetero) head(c, "logvar", f, fch);
}

vbs_status vbs_fcn_build(const vbs_net_opts *o, vbs_model **out) {
    return vbs_l_build(o, fcn, "fcn", "FCN-8s (Long et al. 2015; He-initialised, bilinear upsampling)", out);
}

double vbs_fcn_floats(const vbs_net_opts *o) { return vbs_l_floats(o, fcn); }
