/*
 * unet.c: the variational U-Net builder. Graph construction only; the
 * kernels live in runtime/ops. See unet.h for the architecture.
 */
#include <stdio.h>
#include <string.h>

#include "builder.h"
#include "unet.h"

vbs_unet_opts vbs_unet_defaults(void) {
    vbs_unet_opts o = {2, 4, 2, 16, 4, 0, 0, -5.f, 1.f, 1, {0, 0, 0}, VBS_UNET_NORM_INSTANCE, 0.f};
    return o;
}

typedef struct { vbs_builder *b; int nsp; const vbs_unet_opts *o; } ctx;

static void fill(int64_t *v, int n, int64_t x) { for (int i = 0; i < n; i++) v[i] = x; }

/* Conv with variational weight and bias; k = kernel size per axis. */
static const char *conv(ctx *c, const char *name, const char *x, int64_t cin, int64_t cout, int k) {
    int64_t wd[5] = {cout, cin, k, k, k}, bd[1] = {cout}, ks[3], pads[6];
    char wn[128], bn[128];
    snprintf(wn, sizeof wn, "%s.weight", name);
    snprintf(bn, sizeof bn, "%s.bias", name);
    int64_t fan_in = cin;
    for (int i = 0; i < c->nsp; i++) fan_in *= k;
    const char *w = vbs_b_variational(c->b, wn, 2 + c->nsp, wd, fan_in, c->o->rho0, c->o->prior_sigma);
    const char *bias = vbs_b_variational(c->b, bn, 1, bd, 0, c->o->rho0, c->o->prior_sigma);
    fill(ks, c->nsp, k);
    fill(pads, 2 * c->nsp, k / 2);
    vbs_attr a[2] = {vbs_b_ints(c->b, "kernel_shape", c->nsp, ks), vbs_b_ints(c->b, "pads", 2 * c->nsp, pads)};
    const char *in[3] = {x, w, bias};
    return vbs_b_node(c->b, VBS_OP_CONV, name, 3, in, 2, a);
}

static const char *relu(ctx *c, const char *name, const char *x) {
    return vbs_b_node(c->b, VBS_OP_RELU, name, 1, &x, 0, NULL);
}

/* InstanceNormalization or BatchNormalization of ch channels (deterministic scale and shift) */
static const char *norm(ctx *c, const char *name, const char *x, int64_t ch) {
    if (c->o->norm == VBS_UNET_NORM_NONE) return x;
    int64_t d[1] = {ch};
    float *one = vbs_b_alloc(c->b, sizeof(float) * (size_t)ch), *zero = vbs_b_alloc(c->b, sizeof(float) * (size_t)ch);
    if (!one || !zero) return x;
    for (int64_t i = 0; i < ch; i++) { one[i] = 1.f; zero[i] = 0.f; }
    char sn[160], bn[160], mn[160], vn[160];
    snprintf(sn, sizeof sn, "%s.scale", name);
    snprintf(bn, sizeof bn, "%s.bias", name);
    const char *in[5] = {x, vbs_b_tensor(c->b, sn, 1, d, one), vbs_b_tensor(c->b, bn, 1, d, zero), NULL, NULL};
    vbs_attr eps = vbs_b_float(c->b, "epsilon", 1e-5f);
    if (c->o->norm == VBS_UNET_NORM_INSTANCE) return vbs_b_node(c->b, VBS_OP_INSTANCE_NORM, name, 3, in, 1, &eps);
    snprintf(mn, sizeof mn, "%s.running_mean", name);
    snprintf(vn, sizeof vn, "%s.running_var", name);
    in[3] = vbs_b_tensor(c->b, mn, 1, d, zero);
    in[4] = vbs_b_tensor(c->b, vn, 1, d, one);
    vbs_attr a[2] = {eps, vbs_b_float(c->b, "momentum", 0.9f)};
    return vbs_b_node(c->b, VBS_OP_BATCH_NORM, name, 5, in, 2, a);
}

static const char *block(ctx *c, const char *name, const char *x, int64_t cin, int64_t cout) {
    char n[128];
    for (int i = 1; i <= 2; i++) {
        snprintf(n, sizeof n, "%s.conv%d", name, i);
        x = conv(c, n, x, i == 1 ? cin : cout, cout, 3);
        snprintf(n, sizeof n, "%s.norm%d", name, i);
        x = norm(c, n, x, cout);
        snprintf(n, sizeof n, "%s.relu%d", name, i);
        x = relu(c, n, x);
    }
    if (c->o->dropout > 0) {
        vbs_attr r = vbs_b_float(c->b, "ratio", c->o->dropout);
        snprintf(n, sizeof n, "%s.dropout", name);
        x = vbs_b_node(c->b, VBS_OP_DROPOUT, n, 1, &x, 1, &r);
    }
    return x;
}

vbs_status vbs_unet_build(const vbs_unet_opts *o, vbs_model **out) {
    *out = NULL;
    vbs_builder *b = vbs_b_new(o->seed);
    if (!b) return VBS_ERR_NOMEM;
    ctx c = {b, o->dims, o};
    int nsp = o->dims;
    int64_t in_dims[5] = {-1, o->in_channels, -1, -1, -1};
    const char *params[5] = {"N", NULL, nsp == 3 ? "D" : "H", nsp == 3 ? "H" : "W", "W"};
    vbs_b_input(b, "image", 2 + nsp, in_dims, params);
    const char *x = "image", *skip[16];
    int64_t ch = o->in_channels, k2[3] = {2, 2, 2};
    char n[128];
    for (int l = 0; l < o->depth; l++) {
        int64_t co = (int64_t)o->base << l;
        snprintf(n, sizeof n, "enc%d", l);
        skip[l] = x = block(&c, n, x, ch, co);
        ch = co;
        snprintf(n, sizeof n, "pool%d", l);
        vbs_attr a[2] = {vbs_b_ints(b, "kernel_shape", nsp, k2), vbs_b_ints(b, "strides", nsp, k2)};
        x = vbs_b_node(b, VBS_OP_MAX_POOL, n, 1, &x, 2, a);
    }
    int64_t cb = (int64_t)o->base << o->depth;
    x = block(&c, "bottleneck", x, ch, cb);
    ch = cb;
    if (o->latent > 0) {
        const char *g = vbs_b_node(b, VBS_OP_GLOBAL_AVERAGE_POOL, "latent.pool", 1, &x, 0, NULL);
        const char *mu = conv(&c, "latent.mu", g, ch, o->latent, 1);
        const char *rho = conv(&c, "latent.rho", g, ch, o->latent, 1);
        const char *zin[2] = {mu, rho};
        const char *z = vbs_b_node(b, VBS_OP_GAUSSIAN_SAMPLE, "latent.z", 2, zin, 0, NULL);
        const char *bin[2] = {z, x};
        const char *zb = vbs_b_node(b, VBS_OP_SPATIAL_BROADCAST, "latent.broadcast", 2, bin, 0, NULL);
        const char *cin[2] = {x, zb};
        vbs_attr ax = vbs_b_int(b, "axis", 1);
        x = vbs_b_node(b, VBS_OP_CONCAT, "latent.concat", 2, cin, 1, &ax);
        ch += o->latent;
    }
    for (int l = o->depth - 1; l >= 0; l--) {
        int64_t co = (int64_t)o->base << l;
        int64_t wd[5] = {ch, co, 2, 2, 2}, bd[1] = {co};
        char wn[128], bn[128];
        snprintf(n, sizeof n, "up%d", l);
        snprintf(wn, sizeof wn, "up%d.weight", l);
        snprintf(bn, sizeof bn, "up%d.bias", l);
        int64_t fan_in = ch << nsp;
        const char *w = vbs_b_variational(b, wn, 2 + nsp, wd, fan_in, o->rho0, o->prior_sigma);
        const char *bias = vbs_b_variational(b, bn, 1, bd, 0, o->rho0, o->prior_sigma);
        vbs_attr a[2] = {vbs_b_ints(b, "kernel_shape", nsp, k2), vbs_b_ints(b, "strides", nsp, k2)};
        const char *in[3] = {x, w, bias};
        x = vbs_b_node(b, VBS_OP_CONV_TRANSPOSE, n, 3, in, 2, a);
        const char *cat[2] = {x, skip[l]};
        vbs_attr ax = vbs_b_int(b, "axis", 1);
        snprintf(n, sizeof n, "cat%d", l);
        x = vbs_b_node(b, VBS_OP_CONCAT, n, 2, cat, 1, &ax);
        snprintf(n, sizeof n, "dec%d", l);
        x = block(&c, n, x, 2 * co, co);
        ch = co;
    }
    conv(&c, "logits", x, ch, o->classes, 1);
    vbs_b_output(b, "logits");
    if (o->hetero) {
        conv(&c, "logvar", x, ch, o->classes, 1);
        vbs_b_output(b, "logvar");
    }
    vbs_card *card = vbs_b_card(b);
    static const char *const brats[4] = {"flair", "t1", "t1ce", "t2"};
    const char **chn = vbs_b_alloc(b, sizeof(char *) * (size_t)(o->in_channels + 1));
    for (int i = 0; chn && i < o->in_channels; i++) {
        char tmp[32];
        snprintf(tmp, sizeof tmp, "ch%d", i);
        chn[i] = vbs_b_str(b, o->in_channels == 4 ? brats[i] : tmp);
    }
    card->channels = chn;
    card->n_channels = o->in_channels;
    card->normalization = VBS_NORM_ZSCORE_NONZERO;
    card->spatial_dims = nsp;
    int64_t *patch = vbs_b_alloc(b, sizeof(int64_t) * 3);
    for (int i = 0; patch && i < nsp; i++) patch[i] = o->patch[i] > 0 ? o->patch[i] : nsp == 2 ? 240 : 128;
    card->patch = patch;
    card->n_patch = nsp;
    int nl = o->classes == 1 ? 2 : o->classes;
    vbs_label *lab = vbs_b_alloc(b, sizeof(vbs_label) * (size_t)nl);
    static const char *const brats_names[4] = {"background", "necrotic core", "edema", "enhancing tumour"};
    static const int brats_vals[4] = {0, 1, 2, 4};
    int is_brats = o->classes == 4;
    for (int i = 0; lab && i < nl; i++) {
        char tmp[32];
        snprintf(tmp, sizeof tmp, i == 0 ? "background" : "class%d", i);
        lab[i].value = is_brats ? brats_vals[i] : i;
        lab[i].name = vbs_b_str(b, is_brats ? brats_names[i] : (nl == 2 && i == 1 ? "foreground" : tmp));
    }
    card->labels = lab;
    card->n_labels = nl;
    card->label_convention = is_brats ? VBS_LABELS_BRATS_2018 : VBS_LABELS_CUSTOM;
    card->heteroscedastic = o->hetero;
    card->output_activation = o->classes == 1 ? VBS_ACT_SIGMOID : VBS_ACT_SOFTMAX;
    card->producer = vbs_b_str(b, "vbseg create");
    card->producer_version = vbs_b_str(b, VBS_VERSION_STRING);
    card->training_data = vbs_b_str(b, "untrained");
    card->seed = o->seed;
    card->description = vbs_b_str(b, "untrained variational U-Net (He-initialised means)");
    return vbs_b_finish(b, "unet", out);
}

double vbs_unet_floats(const vbs_unet_opts *o) {
    double k = o->dims == 3 ? 27 : 9, up = o->dims == 3 ? 8 : 4, n = 0, ch = o->in_channels;
    double norm = o->norm == VBS_UNET_NORM_BATCH ? 4 : o->norm == VBS_UNET_NORM_INSTANCE ? 2 : 0;
    /* a block: two 3x3 convs (weights and biases, mean and rho each) and their norms */
#define BLOCK(cin, cout) (2 * (k * (cin) * (cout) + (cout)) + 2 * (k * (cout) * (cout) + (cout)) + 2 * norm * (cout))
    for (int l = 0; l < o->depth; l++) {
        double co = (double)o->base * (double)(1LL << l);
        n += BLOCK(ch, co);
        ch = co;
    }
    double cb = (double)o->base * (double)(1LL << o->depth);
    n += BLOCK(ch, cb);
    ch = cb;
    if (o->latent > 0) { n += 2 * 2 * (ch * o->latent + o->latent); ch += o->latent; }
    for (int l = o->depth - 1; l >= 0; l--) {
        double co = (double)o->base * (double)(1LL << l);
        n += 2 * (up * ch * co + co) + BLOCK(2 * co, co);
        ch = co;
    }
    n += 2 * (ch * o->classes + o->classes) * (o->hetero ? 2 : 1);
#undef BLOCK
    return n;
}
