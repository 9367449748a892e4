/*
 * builder.c: the graph builder behind the architectures in models/. It grows plain arrays
 * of node, tensor and I/O definitions in an arena and hands them to the
 * runtime as a vbs_def, exactly as the file reader would. It holds no
 * kernels and knows no architecture.
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
};

vbs_builder *vbs_b_new(uint64_t seed) {
    vbs_builder *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->seed = seed;
    b->d.opset = 17;
    return b;
}

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
    float *p = vbs_b_alloc(b, sizeof(float) * (size_t)t->numel);
    t->data = p;
    return p ? t : NULL;
}

const char *vbs_b_tensor(vbs_builder *b, const char *name, int ndim, const int64_t *dims, const float *data) {
    vbs_tensor_def *t = add_tensor(b, name, ndim, dims);
    if (!t) return "";
    memcpy((float *)t->data, data, sizeof(float) * (size_t)t->numel);
    return t->name;
}

const char *vbs_b_variational(vbs_builder *b, const char *name, int ndim, const int64_t *dims, int64_t fan_in, float rho0,
                              float prior_sigma) {
    char rname[512];
    snprintf(rname, sizeof rname, "%s.rho", name);
    vbs_tensor_def *mu = add_tensor(b, name, ndim, dims);
    if (!mu) return "";
    float *m = (float *)mu->data;
    if (fan_in > 0) {
        vbs_randn(b->seed, 0, b->stream++, 0, mu->numel, m);
        float sd = sqrtf(2.f / (float)fan_in);
        for (int64_t i = 0; i < mu->numel; i++) m[i] *= sd;
    } else memset(m, 0, sizeof(float) * (size_t)mu->numel);
    mu->role = VBS_ROLE_MU;
    mu->rho = (char *)vbs_b_str(b, rname);
    mu->has_prior = 1;
    mu->prior.kind = VBS_PRIOR_GAUSSIAN;
    mu->prior.sigma = prior_sigma;
    const char *mname = mu->name;
    vbs_tensor_def *rho = add_tensor(b, rname, ndim, dims);
    if (!rho) return "";
    rho->role = VBS_ROLE_RHO;
    for (int64_t i = 0; i < rho->numel; i++) ((float *)rho->data)[i] = rho0;
    return mname;
}

const char *vbs_b_variational_from(vbs_builder *b, const char *name, int ndim, const int64_t *dims, const float *mu,
                                   const float *sigma, float prior_sigma) {
    char rname[512];
    snprintf(rname, sizeof rname, "%s.rho", name);
    vbs_tensor_def *m = add_tensor(b, name, ndim, dims);
    if (!m) return "";
    memcpy((float *)m->data, mu, sizeof(float) * (size_t)m->numel);
    m->role = VBS_ROLE_MU;
    m->rho = (char *)vbs_b_str(b, rname);
    m->has_prior = 1;
    m->prior.kind = VBS_PRIOR_GAUSSIAN;
    m->prior.sigma = prior_sigma;
    const char *mname = m->name;
    vbs_tensor_def *r = add_tensor(b, rname, ndim, dims);
    if (!r) return "";
    r->role = VBS_ROLE_RHO;
    float *rho = (float *)r->data;
    for (int64_t i = 0; i < r->numel; i++) {
        double sg = sigma[i];
        /* softplus^-1: log(exp(s) - 1), exact enough in double; large s is itself */
        rho[i] = (float)(sg > 30 ? sg : log(expm1(sg)));
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
