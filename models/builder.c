/*
 * builder.c: the graph builder behind the architectures in models/. It grows plain arrays
 * of node, tensor and I/O definitions in an arena and hands them to the
 * runtime as a vbs_def, exactly as the file reader would; a counting
 * builder only sums the tensors' sizes. Below the builder, the layers the
 * families share (variational conv and transposed conv, norms, the latent
 * head, the output heads, the card). It holds no kernels and no whole
 * architecture.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder.h"

struct vbs_builder {
    vbs_def d;
    int cap_nodes, cap_tensors, cap_in, cap_out;
    uint64_t seed;
    uint32_t stream;
    int oom;
    int count_only;  /* tensors are counted into floats, never stored */
    int deterministic; /* variational tensors are built plain: their means only (the sigma = 0 baseline) */
    double floats;
};

vbs_builder *vbs_b_new(uint64_t seed) {
    vbs_builder *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->seed = seed;
    b->d.opset = 17;
    return b;
}

vbs_builder *vbs_b_new_counter(void) {
    vbs_builder *b = vbs_b_new(0);
    if (b) b->count_only = 1;
    return b;
}

double vbs_b_floats(const vbs_builder *b) { return b->floats; }
void vbs_b_set_deterministic(vbs_builder *b, int on) { b->deterministic = on; }

void vbs_b_free(vbs_builder *b) {
    if (!b) return;
    free(b->d.nodes); free(b->d.tensors); free(b->d.inputs); free(b->d.outputs);
    vbs_def_free(&b->d);
    free(b);
}

void *vbs_b_alloc(vbs_builder *b, size_t n) {
    void *p = vbs_arena_alloc(&b->d.arena, n);
    if (!p) b->oom = 1;
    return p;
}

const char *vbs_b_str(vbs_builder *b, const char *s) {
    char *p = vbs_arena_strdup(&b->d.arena, s);
    if (!p) { b->oom = 1; return ""; }
    return p;
}

static int grow(vbs_builder *b, void **arr, int *cap, int n, size_t sz) {
    if (n < *cap) return 1;
    int nc = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, sz * (size_t)nc);
    if (!p) { b->oom = 1; return 0; }
    memset((char *)p + sz * (size_t)*cap, 0, sz * (size_t)(nc - *cap));
    *arr = p;
    *cap = nc;
    return 1;
}

vbs_attr vbs_b_int(vbs_builder *b, const char *name, int64_t v) {
    return (vbs_attr){.name = (char *)vbs_b_str(b, name), .type = VBS_ATTR_INT, .i = v};
}
vbs_attr vbs_b_float(vbs_builder *b, const char *name, float v) {
    return (vbs_attr){.name = (char *)vbs_b_str(b, name), .type = VBS_ATTR_FLOAT, .f = v};
}
vbs_attr vbs_b_ints(vbs_builder *b, const char *name, int n, const int64_t *v) {
    int64_t *p = vbs_b_alloc(b, sizeof(int64_t) * (size_t)(n + 1));
    if (p) memcpy(p, v, sizeof(int64_t) * (size_t)n);
    return (vbs_attr){.name = (char *)vbs_b_str(b, name), .type = VBS_ATTR_INTS, .n = n, .ints = p};
}
vbs_attr vbs_b_string(vbs_builder *b, const char *name, const char *v) {
    return (vbs_attr){.name = (char *)vbs_b_str(b, name), .type = VBS_ATTR_STRING, .s = (char *)vbs_b_str(b, v)};
}

static void add_io(vbs_builder *b, vbs_io_def **arr, int *n, int *cap, const char *name, int ndim, const int64_t *dims,
                   const char *const *params) {
    if (!grow(b, (void **)arr, cap, *n, sizeof **arr)) return;
    vbs_io_def *io = &(*arr)[(*n)++];
    io->name = (char *)vbs_b_str(b, name);
    io->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        io->dims[i] = dims[i] < 0 ? -1 : dims[i];
        io->param[i] = dims[i] < 0 ? (char *)vbs_b_str(b, params && params[i] ? params[i] : "?") : NULL;
    }
}

void vbs_b_input(vbs_builder *b, const char *name, int ndim, const int64_t *dims, const char *const *params) {
    add_io(b, &b->d.inputs, &b->d.n_inputs, &b->cap_in, name, ndim, dims, params);
}

void vbs_b_output(vbs_builder *b, const char *name) {
    add_io(b, &b->d.outputs, &b->d.n_outputs, &b->cap_out, name, 0, NULL, NULL);
}

const char *vbs_b_node(vbs_builder *b, vbs_op op, const char *name, int n_in, const char *const *in, int n_attr,
                       const vbs_attr *attr) {
    int before = b->d.n_nodes;
    vbs_b_node_raw(b, vbs_ops[op].name, name, n_in, in, 1, &name, n_attr, attr);
    return b->d.n_nodes > before && b->d.nodes[before].out ? b->d.nodes[before].out[0] : "";
}

void vbs_b_node_raw(vbs_builder *b, const char *op_type, const char *name, int n_in, const char *const *in, int n_out,
                    const char *const *out, int n_attr, const vbs_attr *attr) {
    if (!grow(b, (void **)&b->d.nodes, &b->cap_nodes, b->d.n_nodes, sizeof(vbs_node_def))) return;
    vbs_node_def *n = &b->d.nodes[b->d.n_nodes++];
    n->name = (char *)vbs_b_str(b, name);
    n->op_type = (char *)vbs_b_str(b, op_type);
    n->n_in = n_in;
    n->in = vbs_b_alloc(b, sizeof(char *) * (size_t)(n_in + 1));
    for (int i = 0; n->in && i < n_in; i++) n->in[i] = (char *)vbs_b_str(b, in[i] ? in[i] : "");
    n->n_out = n_out;
    n->out = vbs_b_alloc(b, sizeof(char *) * (size_t)(n_out + 1));
    for (int i = 0; n->out && i < n_out; i++) n->out[i] = (char *)vbs_b_str(b, out[i]);
    n->n_attr = n_attr;
    n->attr = vbs_b_alloc(b, sizeof(vbs_attr) * (size_t)(n_attr + 1));
    if (n->attr && n_attr) memcpy(n->attr, attr, sizeof(vbs_attr) * (size_t)n_attr);
}

void vbs_b_set_opset(vbs_builder *b, int opset) { b->d.opset = opset; }

static vbs_tensor_def *add_tensor(vbs_builder *b, const char *name, int ndim, const int64_t *dims) {
    if (!grow(b, (void **)&b->d.tensors, &b->cap_tensors, b->d.n_tensors, sizeof(vbs_tensor_def))) return NULL;
    vbs_tensor_def *t = &b->d.tensors[b->d.n_tensors++];
    t->name = (char *)vbs_b_str(b, name);
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) { t->dims[i] = dims[i]; t->numel *= dims[i]; }
    t->nbytes = (uint64_t)t->numel * 4;
    b->floats += (double)t->numel;
    if (b->count_only) return t; /* t->data stays NULL */
    float *p = vbs_b_alloc(b, sizeof(float) * (size_t)t->numel);
    t->data = p;
    return p ? t : NULL;
}

const char *vbs_b_tensor(vbs_builder *b, const char *name, int ndim, const int64_t *dims, const float *data) {
    vbs_tensor_def *t = add_tensor(b, name, ndim, dims);
    if (!t) return "";
    if (t->data) memcpy((float *)t->data, data, sizeof(float) * (size_t)t->numel);
    return t->name;
}

void vbs_tensor_set_mu(vbs_tensor_def *mu, const char *rho, float prior_sigma) {
    mu->role = VBS_ROLE_MU;
    mu->rho = (char *)rho;
    mu->has_prior = 1;
    mu->prior.kind = VBS_PRIOR_GAUSSIAN;
    mu->prior.sigma = prior_sigma;
}

const char *vbs_b_variational(vbs_builder *b, const char *name, int ndim, const int64_t *dims, int64_t fan_in, float rho0,
                              float prior_sigma) {
    char rname[512];
    snprintf(rname, sizeof rname, "%s.rho", name);
    vbs_tensor_def *mu = add_tensor(b, name, ndim, dims);
    if (!mu) return "";
    float *m = (float *)mu->data;
    if (m && fan_in > 0) {
        vbs_randn(b->seed, 0, b->stream++, 0, mu->numel, m);
        float sd = sqrtf(2.f / (float)fan_in);
        for (int64_t i = 0; i < mu->numel; i++) m[i] *= sd;
    } else if (m) memset(m, 0, sizeof(float) * (size_t)mu->numel);
    if (b->deterministic) return mu->name; /* the mean alone, a plain tensor: no rho, no prior */
    vbs_tensor_set_mu(mu, vbs_b_str(b, rname), prior_sigma);
    const char *mname = mu->name;
    vbs_tensor_def *rho = add_tensor(b, rname, ndim, dims);
    if (!rho) return "";
    rho->role = VBS_ROLE_RHO;
    for (int64_t i = 0; rho->data && i < rho->numel; i++) ((float *)rho->data)[i] = rho0;
    return mname;
}

const char *vbs_b_variational_from(vbs_builder *b, const char *name, int ndim, const int64_t *dims, const float *mu,
                                   const float *sigma, float prior_sigma) {
    char rname[512];
    snprintf(rname, sizeof rname, "%s.rho", name);
    vbs_tensor_def *m = add_tensor(b, name, ndim, dims);
    if (!m) return "";
    if (m->data) memcpy((float *)m->data, mu, sizeof(float) * (size_t)m->numel);
    if (b->deterministic) return m->name;
    vbs_tensor_set_mu(m, vbs_b_str(b, rname), prior_sigma);
    const char *mname = m->name;
    vbs_tensor_def *r = add_tensor(b, rname, ndim, dims);
    if (!r) return "";
    r->role = VBS_ROLE_RHO;
    float *rho = (float *)r->data;
    for (int64_t i = 0; rho && i < r->numel; i++) {
        rho[i] = (float)vbs_softplus_inv(sigma[i]);
    }
    return mname;
}

vbs_card *vbs_b_card(vbs_builder *b) { return &b->d.card; }

vbs_status vbs_b_finish(vbs_builder *b, const char *name, vbs_model **out) {
    vbs_model *m = vbs_model_alloc();
    *out = m;
    if (!m || !b || b->oom) {
        vbs_b_free(b);
        if (m) snprintf(m->err, sizeof m->err, "%s: out of memory building the model", name);
        return VBS_ERR_NOMEM;
    }
    /* move the arrays into the arena so the def owns everything */
    vbs_def *d = &b->d;
    void *arrs[4] = {d->nodes, d->tensors, d->inputs, d->outputs};
    size_t sizes[4] = {sizeof(vbs_node_def) * (size_t)d->n_nodes, sizeof(vbs_tensor_def) * (size_t)d->n_tensors,
                       sizeof(vbs_io_def) * (size_t)d->n_inputs, sizeof(vbs_io_def) * (size_t)d->n_outputs};
    void *moved[4];
    for (int i = 0; i < 4; i++) {
        moved[i] = vbs_arena_alloc(&d->arena, sizes[i] + 1);
        if (!moved[i]) { vbs_b_free(b); snprintf(m->err, sizeof m->err, "%s: out of memory", name); return VBS_ERR_NOMEM; }
        if (sizes[i]) memcpy(moved[i], arrs[i], sizes[i]);
        free(arrs[i]);
    }
    d->nodes = moved[0]; d->tensors = moved[1]; d->inputs = moved[2]; d->outputs = moved[3];
    m->def = *d;
    free(b);
    return vbs_model_init(m, name);
}

/* ---- the layers the families share ------------------------------------------ */

static void fill(int64_t *v, int n, int64_t x) { for (int i = 0; i < n; i++) v[i] = x; }

/* "<name>.<suffix>" into buf */
static const char *sub(char *buf, size_t n, const char *name, const char *suffix) {
    snprintf(buf, n, "%s.%s", name, suffix);
    return buf;
}

const char *vbs_l_conv(const vbs_layers *c, const char *name, const char *x, int64_t cin, int64_t cout, int k, int stride) {
    int64_t wd[5] = {cout, cin, k, k, k}, bd[1] = {cout}, ks[3], pads[6], st[3];
    char wn[160], bn[160];
    int64_t fan_in = cin;
    for (int i = 0; i < c->nsp; i++) fan_in *= k;
    const char *w = vbs_b_variational(c->b, sub(wn, sizeof wn, name, "weight"), 2 + c->nsp, wd, fan_in, c->o->rho0, c->o->prior_sigma);
    const char *bias = vbs_b_variational(c->b, sub(bn, sizeof bn, name, "bias"), 1, bd, 0, c->o->rho0, c->o->prior_sigma);
    fill(ks, c->nsp, k);
    fill(pads, 2 * c->nsp, stride == 1 ? k / 2 : 0);
    fill(st, c->nsp, stride);
    vbs_attr a[3] = {vbs_b_ints(c->b, "kernel_shape", c->nsp, ks), vbs_b_ints(c->b, "pads", 2 * c->nsp, pads),
                     vbs_b_ints(c->b, "strides", c->nsp, st)};
    const char *in[3] = {x, w, bias};
    return vbs_b_node(c->b, VBS_OP_CONV, name, 3, in, stride > 1 ? 3 : 2, a);
}

/* FCN's bilinear upsampling kernel (Long et al.'s get_upsampling_weight):
 * channel i to channel i, zero across channels. w is (ch, ch, k^nsp). */
static void bilinear(float *w, int64_t ch, int k, int nsp) {
    int64_t kv = 1;
    for (int i = 0; i < nsp; i++) kv *= k;
    double f = (k + 1) / 2, centre = k % 2 ? f - 1 : f - 0.5;
    memset(w, 0, sizeof(float) * (size_t)(ch * ch * kv));
    for (int64_t i = 0; i < ch; i++)
        for (int64_t p = 0; p < kv; p++) {
            double v = 1;
            for (int64_t q = p, j = 0; j < nsp; j++, q /= k) v *= 1 - fabs((double)(q % k) - centre) / f;
            w[(i * ch + i) * kv + p] = (float)v;
        }
}

const char *vbs_l_conv_t(const vbs_layers *c, const char *name, const char *x, int64_t cin, int64_t cout, int k, int stride, int init) {
    int64_t wd[5] = {cin, cout, k, k, k}, bd[1] = {cout}, ks[3], st[3], pads[6];
    char wn[160], bn[160];
    int64_t fan_in = cin, kv = 1;
    for (int i = 0; i < c->nsp; i++) { fan_in *= k; kv *= k; }
    const char *in[3] = {x, NULL, NULL};
    sub(wn, sizeof wn, name, "weight");
    if (init == VBS_L_BILINEAR) {
        /* as FCN: no bias; the means start as bilinear interpolation */
        float *mu = NULL, *sg = NULL;
        if (!c->b->count_only) { /* a counting builder reads neither */
            mu = vbs_b_alloc(c->b, sizeof(float) * (size_t)(cin * cout * kv));
            sg = vbs_b_alloc(c->b, sizeof(float) * (size_t)(cin * cout * kv));
            if (!mu || !sg) return "";
            bilinear(mu, cin, k, c->nsp);
            float s0 = (float)log1p(exp((double)c->o->rho0));
            for (int64_t i = 0; i < cin * cout * kv; i++) sg[i] = s0;
        }
        in[1] = vbs_b_variational_from(c->b, wn, 2 + c->nsp, wd, mu, sg, c->o->prior_sigma);
    } else {
        in[1] = vbs_b_variational(c->b, wn, 2 + c->nsp, wd, fan_in, c->o->rho0, c->o->prior_sigma);
        in[2] = vbs_b_variational(c->b, sub(bn, sizeof bn, name, "bias"), 1, bd, 0, c->o->rho0, c->o->prior_sigma);
    }
    fill(ks, c->nsp, k);
    fill(st, c->nsp, stride);
    fill(pads, 2 * c->nsp, (k - stride) / 2); /* the output is exactly stride x the input */
    vbs_attr a[3] = {vbs_b_ints(c->b, "kernel_shape", c->nsp, ks), vbs_b_ints(c->b, "strides", c->nsp, st),
                     vbs_b_ints(c->b, "pads", 2 * c->nsp, pads)};
    return vbs_b_node(c->b, VBS_OP_CONV_TRANSPOSE, name, in[2] ? 3 : 2, in, k > stride ? 3 : 2, a);
}

const char *vbs_l_norm(const vbs_layers *c, const char *name, const char *x, int64_t ch) {
    if (c->o->norm == VBS_NET_NORM_NONE) return x;
    int64_t d[1] = {ch};
    float *one = vbs_b_alloc(c->b, sizeof(float) * (size_t)ch), *zero = vbs_b_alloc(c->b, sizeof(float) * (size_t)ch);
    if (!one || !zero) return x;
    for (int64_t i = 0; i < ch; i++) { one[i] = 1.f; zero[i] = 0.f; }
    char sn[160], bn[160], mn[160], vn[160];
    const char *in[5] = {x, vbs_b_tensor(c->b, sub(sn, sizeof sn, name, "scale"), 1, d, one),
                         vbs_b_tensor(c->b, sub(bn, sizeof bn, name, "bias"), 1, d, zero), NULL, NULL};
    vbs_attr eps = vbs_b_float(c->b, "epsilon", 1e-5f);
    if (c->o->norm == VBS_NET_NORM_INSTANCE) return vbs_b_node(c->b, VBS_OP_INSTANCE_NORM, name, 3, in, 1, &eps);
    in[3] = vbs_b_tensor(c->b, sub(mn, sizeof mn, name, "running_mean"), 1, d, zero);
    in[4] = vbs_b_tensor(c->b, sub(vn, sizeof vn, name, "running_var"), 1, d, one);
    vbs_attr a[2] = {eps, vbs_b_float(c->b, "momentum", 0.9f)};
    return vbs_b_node(c->b, VBS_OP_BATCH_NORM, name, 5, in, 2, a);
}

const char *vbs_l_relu(const vbs_layers *c, const char *name, const char *x) {
    return vbs_b_node(c->b, VBS_OP_RELU, name, 1, &x, 0, NULL);
}

const char *vbs_l_prelu(const vbs_layers *c, const char *name, const char *x, int64_t ch) {
    int64_t d[4] = {ch, 1, 1, 1};
    float *s = vbs_b_alloc(c->b, sizeof(float) * (size_t)ch);
    if (!s) return x;
    for (int64_t i = 0; i < ch; i++) s[i] = 0.25f; /* PyTorch's nn.PReLU init */
    char sn[160];
    const char *in[2] = {x, vbs_b_tensor(c->b, sub(sn, sizeof sn, name, "slope"), 1 + c->nsp, d, s)};
    return vbs_b_node(c->b, VBS_OP_PRELU, name, 2, in, 0, NULL);
}

const char *vbs_l_dropout(const vbs_layers *c, const char *name, const char *x) {
    if (!(c->o->dropout > 0)) return x;
    vbs_attr r = vbs_b_float(c->b, "ratio", c->o->dropout);
    return vbs_b_node(c->b, VBS_OP_DROPOUT, name, 1, &x, 1, &r);
}

const char *vbs_l_add(const vbs_layers *c, const char *name, const char *x, const char *y) {
    const char *in[2] = {x, y};
    return vbs_b_node(c->b, VBS_OP_ADD, name, 2, in, 0, NULL);
}

const char *vbs_l_concat(const vbs_layers *c, const char *name, const char *x, const char *y) {
    const char *in[2] = {x, y};
    vbs_attr ax = vbs_b_int(c->b, "axis", 1);
    return vbs_b_node(c->b, VBS_OP_CONCAT, name, 2, in, 1, &ax);
}

const char *vbs_l_latent(const vbs_layers *c, const char *x, int64_t ch) {
    const char *g = vbs_b_node(c->b, VBS_OP_GLOBAL_AVERAGE_POOL, "latent.pool", 1, &x, 0, NULL);
    const char *zin[2] = {vbs_l_conv(c, "latent.mu", g, ch, c->o->latent, 1, 1), vbs_l_conv(c, "latent.rho", g, ch, c->o->latent, 1, 1)};
    return vbs_b_node(c->b, VBS_OP_GAUSSIAN_SAMPLE, "latent.z", 2, zin, 0, NULL);
}

const char *vbs_l_join(const vbs_layers *c, const char *name, const char *x, const char *z) {
    char n[160];
    const char *bin[2] = {z, x};
    const char *zb = vbs_b_node(c->b, VBS_OP_SPATIAL_BROADCAST, sub(n, sizeof n, name, "broadcast"), 2, bin, 0, NULL);
    return vbs_l_concat(c, sub(n, sizeof n, name, "concat"), x, zb);
}

void vbs_l_heads(const vbs_layers *c, const char *x, int64_t ch) {
    vbs_l_conv(c, "logits", x, ch, c->o->classes, 1, 1);
    vbs_b_output(c->b, "logits");
    if (c->o->hetero) {
        vbs_l_conv(c, "logvar", x, ch, c->o->classes, 1, 1);
        vbs_b_output(c->b, "logvar");
    }
}

/* The card of a new model: channel names (BraTS's for 4), z-score over the
 * brain, the patch, labels (BraTS 2018's for 4 classes), the head. */
static void card(vbs_builder *b, const vbs_net_opts *o, const char *description) {
    int nsp = o->dims;
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
    /* by default 240 (2D) or 128 (3D), rounded up to a size the network takes */
    int64_t mult = (int64_t)1 << o->depth, dflt = ((nsp == 2 ? 240 : 128) + mult - 1) / mult * mult;
    for (int i = 0; patch && i < nsp; i++) patch[i] = o->patch[i] > 0 ? o->patch[i] : dflt;
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
    char d[512];
    snprintf(d, sizeof d, "untrained %s %s", o->deterministic ? "deterministic (plain weights, sigma = 0)" : "variational", description);
    card->description = vbs_b_str(b, d);
}

/* the graph input "image" (N, C, [D,] H, W), then the family's graph */
static void graph(vbs_builder *b, const vbs_net_opts *o, vbs_l_graph_fn fn) {
    int nsp = o->dims;
    int64_t in_dims[5] = {-1, o->in_channels, -1, -1, -1};
    const char *params[5] = {"N", NULL, nsp == 3 ? "D" : "H", nsp == 3 ? "H" : "W", "W"};
    vbs_b_input(b, "image", 2 + nsp, in_dims, params);
    vbs_layers c = {b, o, nsp};
    vbs_b_set_deterministic(b, o->deterministic);
    fn(&c, "image");
}

vbs_status vbs_l_build(const vbs_net_opts *o, vbs_l_graph_fn fn, const char *name, const char *description, vbs_model **out) {
    *out = NULL;
    vbs_builder *b = vbs_b_new(o->seed);
    if (!b) return VBS_ERR_NOMEM;
    graph(b, o, fn);
    card(b, o, description);
    return vbs_b_finish(b, name, out);
}

double vbs_l_floats(const vbs_net_opts *o, vbs_l_graph_fn fn) {
    vbs_builder *b = vbs_b_new_counter();
    if (!b) return 0;
    graph(b, o, fn);
    double n = b->floats;
    vbs_b_free(b);
    return n;
}
