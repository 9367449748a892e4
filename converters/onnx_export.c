/*
 * onnx_export.c: vbseg model -> ONNX (opset 17), for `vbseg export`. Two
 * graphs:
 *  - mean: the weight means as initializers, Dropout and the GaussianSample
 *    latent as the identity (z = its mean): what `vbseg run --mode mean`
 *    computes.
 *  - sampling: every run of the ONNX graph draws a new sample, as one
 *    Monte-Carlo pass of vbseg does: each variational weight is
 *    w = mu + softplus(rho) * eps with eps from RandomNormalLike (ONNX
 *    Runtime draws anew each run; unseeded, each session starts anew too,
 *    seeded, each node has a seed of its own and a new session repeats the
 *    same sequence of samples); each GaussianSample latent is
 *    z = mean + softplus(rho) * eps the same way; each Dropout keeps an
 *    element where RandomUniformLike >= ratio and scales it by 1 / (1 -
 *    ratio), as vbseg's (see export_node for why not ONNX's Dropout). The
 *    draws are ONNX Runtime's, not vbseg's Philox streams: the statistics
 *    agree, the individual samples do not.
 * sigma is ONNX's Softplus of rho, named "vbs::sigma:<weight or latent>"
 * (tests/export.sh reads it): ONNX Runtime's Softplus was measured within
 * 2.1e-7 relative of softplus in double over rho in [-30, 30] (float
 * rounding), so no hand-written log1p is needed.
 *
 * The ops whose .vbseg form differs from ONNX's are rewritten: Resize's and
 * Pad's attributes become the inputs opset 17 takes; a Softmax with
 * vbseg's flatten=1 (opset < 13 semantics) becomes Flatten, Softmax and
 * Reshape; SpatialBroadcast (vbseg's own) becomes Reshape and Expand to the
 * reference's spatial shape; BatchNormalization loses the attributes opset
 * 17 dropped (spatial, training_mode = 0). Everything else is copied as it
 * is, attributes and all. Value names generated here start with "vbs::";
 * a model whose own names do so is refused.
 *
 * The card goes into metadata_props: its JSON (the fields `vbseg convert
 * --card` reads) under "vbseg.card", and readable keys for the main
 * fields. The protobuf is built with protobuf-c's generated ONNX code (the
 * importer's), every message in one arena, and written atomically.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/internal.h"
#include "onnx.pb-c.h"

#define PFX "vbs::"

typedef struct {
    vbs_arena *ar;
    const vbs_def *d;
    const char *file;
    char *err;
    Onnx__NodeProto **nodes;
    size_t n_nodes, cap_nodes;
    Onnx__TensorProto **inits;
    size_t n_inits, cap_inits;
    int counter;       /* generated value names */
    int seeded;        /* give each random node a "seed" attribute */
    uint32_t seed24;   /* the first node's, before mixing; then + 1 per node */
    int oom;
} ex;

static void *A(ex *e, size_t n) {
    void *p = vbs_arena_alloc(e->ar, n);
    if (!p) e->oom = 1;
    return p;
}

static char *S(ex *e, const char *s) {
    char *p = vbs_arena_strdup(e->ar, s ? s : "");
    if (!p) e->oom = 1;
    return p;
}

/* A fresh value name: vbs::<base>:<counter>. */
static char *fresh(ex *e, const char *base) {
    char buf[512];
    snprintf(buf, sizeof buf, PFX "%.400s:%d", base, e->counter++);
    return S(e, buf);
}

/* Room for one more pointer in a list of n (capacity *cap) in the arena
 * (the old array is left there); 0 if memory runs out. */
static int grow(ex *e, void ***list, size_t n, size_t *cap) {
    if (n < *cap) return 1;
    size_t c = *cap ? 2 * *cap : 64;
    void **p = A(e, c * sizeof *p);
    if (!p) return 0;
    if (n) memcpy(p, *list, n * sizeof *p);
    *list = p;
    *cap = c;
    return 1;
}

static Onnx__AttributeProto *attr_new(ex *e, const char *name, Onnx__AttributeProto__AttributeType t) {
    Onnx__AttributeProto *a = A(e, sizeof *a);
    if (!a) return NULL;
    *a = (Onnx__AttributeProto)ONNX__ATTRIBUTE_PROTO__INIT;
    a->name = S(e, name);
    a->has_type = 1;
    a->type = t;
    return a;
}

static Onnx__AttributeProto *attr_int(ex *e, const char *name, int64_t v) {
    Onnx__AttributeProto *a = attr_new(e, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (a) { a->has_i = 1; a->i = v; }
    return a;
}

/* The next random node's seed: a bijection of 24 bits (xor-shifts and odd
 * multipliers modulo 2^24) of a counter, so the nodes' seeds are distinct,
 * and exact as the float ONNX's "seed" attribute is. ONNX Runtime seeds
 * std::default_random_engine (minstd_rand0) with it, which maps 0 to 1:
 * 0 becomes 2^24, still exact. */
static Onnx__AttributeProto *attr_seed(ex *e) {
    const uint32_t m = 0xFFFFFF;
    uint32_t x = e->seed24++ & m;
    x ^= x >> 12;
    x = (x * 0x9E3779B1u) & m;
    x ^= x >> 11;
    x = (x * 0x85EBCA6Bu) & m;
    x ^= x >> 12;
    Onnx__AttributeProto *a = attr_new(e, "seed", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (a) { a->has_f = 1; a->f = x ? (float)x : 16777216.f; }
    return a;
}

/* A vbseg attribute as ONNX's. */
static Onnx__AttributeProto *attr_copy(ex *e, const vbs_attr *v) {
    static const Onnx__AttributeProto__AttributeType types[] = {
        [VBS_ATTR_INT] = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT, [VBS_ATTR_FLOAT] = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT,
        [VBS_ATTR_STRING] = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING, [VBS_ATTR_INTS] = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS,
        [VBS_ATTR_FLOATS] = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS};
    if (v->type < VBS_ATTR_INT || v->type > VBS_ATTR_FLOATS) return NULL;
    Onnx__AttributeProto *a = attr_new(e, v->name, types[v->type]);
    if (!a) return NULL;
    switch (v->type) {
    case VBS_ATTR_INT: a->has_i = 1; a->i = v->i; break;
    case VBS_ATTR_FLOAT: a->has_f = 1; a->f = v->f; break;
    case VBS_ATTR_STRING:
        a->has_s = 1;
        a->s.data = (uint8_t *)S(e, v->s);
        a->s.len = v->s ? strlen(v->s) : 0;
        break;
    case VBS_ATTR_INTS: a->n_ints = (size_t)v->n; a->ints = v->ints; break;
    case VBS_ATTR_FLOATS: a->n_floats = (size_t)v->n; a->floats = v->floats; break;
    }
    return a;
}

/* Appends a node op(in...) -> out with n_attr attributes (filled by the
 * caller); returns it, or NULL (e->oom). Inputs "" are omitted optionals. */
static Onnx__NodeProto *node(ex *e, const char *op, const char *name, int n_in, const char *const *in, const char *out, int n_attr) {
    if (!grow(e, (void ***)&e->nodes, e->n_nodes, &e->cap_nodes)) return NULL;
    Onnx__NodeProto *n = A(e, sizeof *n);
    char **ins = A(e, (size_t)(n_in + 1) * sizeof *ins), **outs = A(e, sizeof *outs);
    Onnx__AttributeProto **at = A(e, (size_t)(n_attr + 1) * sizeof *at);
    if (!n || !ins || !outs || !at) return NULL;
    *n = (Onnx__NodeProto)ONNX__NODE_PROTO__INIT;
    for (int i = 0; i < n_in; i++) ins[i] = S(e, in[i]);
    outs[0] = S(e, out);
    n->n_input = (size_t)n_in;
    n->input = ins;
    n->n_output = 1;
    n->output = outs;
    n->op_type = S(e, op);
    n->name = S(e, name);
    n->attribute = at;
    e->nodes[e->n_nodes++] = n;
    return e->oom ? NULL : n;
}

/* A one-input, one-output node with a fresh output name. */
static const char *unary(ex *e, const char *op, const char *x, const char *base) {
    const char *y = fresh(e, base);
    return y && node(e, op, y, 1, &x, y, 0) ? y : NULL;
}

static const char *binary(ex *e, const char *op, const char *x, const char *z, const char *base) {
    const char *in[2] = {x, z}, *y = fresh(e, base);
    return y && node(e, op, y, 2, in, y, 0) ? y : NULL;
}

static Onnx__TensorProto *init_new(ex *e, const char *name, int32_t type, int ndim, const int64_t *dims) {
    if (!grow(e, (void ***)&e->inits, e->n_inits, &e->cap_inits)) return NULL;
    Onnx__TensorProto *t = A(e, sizeof *t);
    int64_t *dd = A(e, (size_t)(ndim + 1) * sizeof *dd);
    if (!t || !dd) return NULL;
    *t = (Onnx__TensorProto)ONNX__TENSOR_PROTO__INIT;
    if (ndim) memcpy(dd, dims, (size_t)ndim * sizeof *dd);
    t->n_dims = (size_t)ndim;
    t->dims = dd;
    t->has_data_type = 1;
    t->data_type = type;
    t->name = S(e, name);
    e->inits[e->n_inits++] = t;
    return e->oom ? NULL : t;
}

/* A small constant initializer (copied into the arena) with a fresh name;
 * ndim 0 is a scalar. */
static const char *constant(ex *e, const char *base, int32_t type, int ndim, const int64_t *dims, const void *data, size_t nbytes) {
    const char *name = fresh(e, base);
    Onnx__TensorProto *t = name ? init_new(e, name, type, ndim, dims) : NULL;
    uint8_t *buf = A(e, nbytes + 1);
    if (!t || !buf) return NULL;
    memcpy(buf, data, nbytes);
    t->has_raw_data = 1;
    t->raw_data.data = buf;
    t->raw_data.len = nbytes;
    return name;
}

static const char *const_i64(ex *e, const char *base, int n, const int64_t *v) {
    int64_t dim = n;
    return constant(e, base, ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1, &dim, v, (size_t)n * sizeof *v);
}

static const char *const_f32(ex *e, const char *base, float v) {
    return constant(e, base, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 0, NULL, &v, sizeof v);
}

/* out = mean + softplus(rho) * eps, eps = RandomNormalLike(rho) (float; a
 * new draw every run, from a seed of its own when the export is seeded). */
static int gaussian(ex *e, const char *mean, const char *rho, const char *out) {
    const char *eps = fresh(e, out);
    Onnx__NodeProto *r = eps ? node(e, "RandomNormalLike", eps, 1, &rho, eps, 1 + e->seeded) : NULL;
    if (!r) return 0;
    r->attribute[r->n_attribute++] = attr_int(e, "dtype", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
    if (e->seeded) r->attribute[r->n_attribute++] = attr_seed(e);
    char sn[512];
    snprintf(sn, sizeof sn, PFX "sigma:%.480s", out); /* a fixed name: tests read it as an output */
    const char *sigma = S(e, sn);
    const char *t = sigma && node(e, "Softplus", sigma, 1, &rho, sigma, 0) ? binary(e, "Mul", sigma, eps, out) : NULL;
    const char *in[2] = {mean, t};
    return t && node(e, "Add", out, 2, in, out, 0) != NULL;
}

/* Node nd with its attributes copied, bar those named in drop. */
static Onnx__NodeProto *copy_node(ex *e, const vbs_node_def *nd, int n_in, const char *const *in, const char *const *drop) {
    Onnx__NodeProto *n = node(e, nd->op_type, nd->name, n_in, in, nd->out[0], nd->n_attr);
    for (int i = 0; n && i < nd->n_attr; i++) {
        int skip = 0;
        for (int k = 0; drop && drop[k]; k++) skip |= !strcmp(drop[k], nd->attr[i].name);
        if (skip) continue;
        if (!(n->attribute[n->n_attribute++] = attr_copy(e, &nd->attr[i]))) return NULL;
    }
    return n;
}

/* SpatialBroadcast(z, ref): z (N, L) or (N, L, 1..) reshaped to
 * (N, L, 1 x spatial rank) and expanded to (N, L, ref's spatial). */
static int spatial_broadcast(ex *e, const vbs_node_def *nd) {
    const char *base = nd->out[0];
    int64_t zero = 0, two = 2, big = INT64_MAX, one = 1, ones[2] = {1, 1};
    const char *sz = unary(e, "Shape", nd->in[0], base), *sr = unary(e, "Shape", nd->in[1], base);
    const char *s0 = const_i64(e, "start", 1, &zero), *s2 = const_i64(e, "start", 1, &two), *end = const_i64(e, "end", 1, &big);
    const char *nl = fresh(e, base), *sp = fresh(e, base), *ones_sp = fresh(e, base), *zshape = fresh(e, base), *zr = fresh(e, base),
               *eshape = fresh(e, base);
    const char *in_nl[3] = {sz, s0, s2}, *in_sp[3] = {sr, s2, end};
    if (e->oom || !node(e, "Slice", nl, 3, in_nl, nl, 0) || !node(e, "Slice", sp, 3, in_sp, sp, 0)) return 0;
    const char *rank = unary(e, "Shape", sp, base);
    Onnx__NodeProto *c = rank ? node(e, "ConstantOfShape", ones_sp, 1, &rank, ones_sp, 1) : NULL;
    if (!c) return 0;
    Onnx__AttributeProto *v = attr_new(e, "value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
    Onnx__TensorProto *t = A(e, sizeof *t);
    int64_t *dims = A(e, sizeof *dims);
    uint8_t *raw = A(e, sizeof one);
    if (!v || !t || !dims || !raw) return 0;
    *t = (Onnx__TensorProto)ONNX__TENSOR_PROTO__INIT;
    dims[0] = 1;
    memcpy(raw, &one, sizeof one);
    t->n_dims = 1;
    t->dims = dims;
    t->has_data_type = 1;
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
    t->has_raw_data = 1;
    t->raw_data.data = raw;
    t->raw_data.len = sizeof one;
    v->t = t;
    c->attribute[c->n_attribute++] = v;
    const char *in_zs[2] = {nl, ones_sp}, *in_zr[2] = {nd->in[0], zshape}, *head = const_i64(e, "ones", 2, ones);
    const char *in_es[2] = {head, sp}, *in_ex[2] = {zr, eshape};
    Onnx__NodeProto *cz = node(e, "Concat", zshape, 2, in_zs, zshape, 1);
    if (cz) cz->attribute[cz->n_attribute++] = attr_int(e, "axis", 0);
    Onnx__NodeProto *ce = cz && node(e, "Reshape", zr, 2, in_zr, zr, 0) ? node(e, "Concat", eshape, 2, in_es, eshape, 1) : NULL;
    if (ce) ce->attribute[ce->n_attribute++] = attr_int(e, "axis", 0);
    return ce && !e->oom && node(e, "Expand", nd->name, 2, in_ex, nd->out[0], 0) != NULL;
}

/* One .vbseg node as ONNX nodes. */
static vbs_status export_node(ex *e, const vbs_node_def *nd, int sampling) {
    vbs_op op = vbs_op_from_name(nd->op_type);
    const char *const *in = (const char *const *)nd->in;
    if (nd->n_out != 1)
        return vbs_fail_file(e->err, VBS_ERR_UNSUPPORTED, e->file, "node '%s' (%s): %d outputs; the export takes one", nd->name,
                             nd->op_type, nd->n_out);
    switch (op) {
    case VBS_OP_DROPOUT: {
        if (!sampling) return node(e, "Identity", nd->name, 1, in, nd->out[0], 0) ? VBS_OK : VBS_ERR_NOMEM;
        /* Not ONNX's Dropout with training_mode = true: ONNX Runtime's optimizer
         * (EliminateDropout) removes every Dropout whatever its training_mode
         * (measured with onnxruntime-node 1.30.0: no spread at the default level,
         * the right one with optimisations off). So the mask is drawn in ops:
         * y = u < ratio ? 0 : x / (1 - ratio), u = RandomUniformLike(x) in
         * [0, 1), a new draw every run (seeded as gaussian's). */
        const vbs_attr *r = vbs_attr_find(nd, "ratio");
        float ratio = r ? r->f : 0.5f;
        const char *u = fresh(e, nd->out[0]);
        Onnx__NodeProto *ru = u ? node(e, "RandomUniformLike", u, 1, in, u, 1 + e->seeded) : NULL;
        if (!ru) return VBS_ERR_NOMEM;
        ru->attribute[ru->n_attribute++] = attr_int(e, "dtype", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
        if (e->seeded) ru->attribute[ru->n_attribute++] = attr_seed(e);
        const char *drop = binary(e, "Less", u, const_f32(e, "ratio", ratio), nd->out[0]);
        const char *kept = binary(e, "Mul", nd->in[0], const_f32(e, "scale", 1.f / (1.f - ratio)), nd->out[0]);
        const char *args[3] = {drop, const_f32(e, "zero", 0.f), kept};
        return !e->oom && node(e, "Where", nd->name, 3, args, nd->out[0], 0) ? VBS_OK : VBS_ERR_NOMEM;
    }
    case VBS_OP_GAUSSIAN_SAMPLE:
        if (!sampling) return node(e, "Identity", nd->name, 1, in, nd->out[0], 0) ? VBS_OK : VBS_ERR_NOMEM;
        return gaussian(e, nd->in[0], nd->in[1], nd->out[0]) ? VBS_OK : VBS_ERR_NOMEM;
    case VBS_OP_SPATIAL_BROADCAST: return spatial_broadcast(e, nd) ? VBS_OK : VBS_ERR_NOMEM;
    case VBS_OP_RESIZE: {
        static const char *const drop[] = {"scales", "sizes", "antialias", NULL};
        const vbs_attr *sc = vbs_attr_find(nd, "scales"), *si = vbs_attr_find(nd, "sizes");
        const char *args[4] = {nd->in[0], "", "", ""};
        if (sc && sc->type == VBS_ATTR_FLOATS) {
            int64_t n = sc->n;
            args[2] = constant(e, "scales", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1, &n, sc->floats, (size_t)n * sizeof(float));
        } else if (si && si->type == VBS_ATTR_INTS) args[3] = const_i64(e, "sizes", si->n, si->ints);
        else return vbs_fail_file(e->err, VBS_ERR_GRAPH, e->file, "node '%s' (Resize): neither scales nor sizes", nd->name);
        return !e->oom && copy_node(e, nd, args[3][0] ? 4 : 3, args, drop) ? VBS_OK : VBS_ERR_NOMEM;
    }
    case VBS_OP_PAD: {
        static const char *const drop[] = {"pads", "value", NULL};
        const vbs_attr *p = vbs_attr_find(nd, "pads"), *v = vbs_attr_find(nd, "value");
        if (!p || p->type != VBS_ATTR_INTS) return vbs_fail_file(e->err, VBS_ERR_GRAPH, e->file, "node '%s' (Pad): no pads", nd->name);
        const char *args[3] = {nd->in[0], const_i64(e, "pads", p->n, p->ints), const_f32(e, "value", v ? v->f : 0.f)};
        return !e->oom && copy_node(e, nd, 3, args, drop) ? VBS_OK : VBS_ERR_NOMEM;
    }
    case VBS_OP_BATCH_NORM: {
        static const char *const drop[] = {"spatial", "training_mode", NULL};
        return copy_node(e, nd, nd->n_in, in, drop) ? VBS_OK : VBS_ERR_NOMEM;
    }
    case VBS_OP_SOFTMAX: {
        const vbs_attr *f = vbs_attr_find(nd, "flatten"), *ax = vbs_attr_find(nd, "axis");
        if (!f || !f->i) {
            static const char *const drop[] = {"flatten", NULL};
            return copy_node(e, nd, nd->n_in, in, drop) ? VBS_OK : VBS_ERR_NOMEM;
        }
        /* opset < 13: one softmax over everything from axis on */
        const char *flat = fresh(e, nd->out[0]), *sm = fresh(e, nd->out[0]);
        Onnx__NodeProto *fl = flat ? node(e, "Flatten", flat, 1, in, flat, 1) : NULL;
        if (fl) fl->attribute[fl->n_attribute++] = attr_int(e, "axis", ax ? ax->i : 1);
        Onnx__NodeProto *s = fl ? node(e, "Softmax", sm, 1, &flat, sm, 1) : NULL;
        if (s) s->attribute[s->n_attribute++] = attr_int(e, "axis", 1);
        const char *shape = s ? unary(e, "Shape", nd->in[0], nd->out[0]) : NULL;
        const char *args[2] = {sm, shape};
        return shape && !e->oom && node(e, "Reshape", nd->name, 2, args, nd->out[0], 0) ? VBS_OK : VBS_ERR_NOMEM;
    }
    case VBS_OP_INVALID:
    case VBS_OP_COUNT:
        return vbs_fail_file(e->err, VBS_ERR_UNSUPPORTED, e->file, "node '%s': op '%s' has no ONNX form", nd->name, nd->op_type);
    default: /* the ONNX op of the same name and attributes */
        return copy_node(e, nd, nd->n_in, in, NULL) ? VBS_OK : VBS_ERR_NOMEM;
    }
}

static Onnx__ValueInfoProto *value_info(ex *e, const vbs_value_info *v) {
    Onnx__ValueInfoProto *vi = A(e, sizeof *vi);
    Onnx__TypeProto *tp = A(e, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = A(e, sizeof *tt);
    Onnx__TensorShapeProto *sh = A(e, sizeof *sh);
    Onnx__TensorShapeProto__Dimension **dims = A(e, (size_t)(v->ndim + 1) * sizeof *dims);
    if (!vi || !tp || !tt || !sh || !dims) return NULL;
    *vi = (Onnx__ValueInfoProto)ONNX__VALUE_INFO_PROTO__INIT;
    *tp = (Onnx__TypeProto)ONNX__TYPE_PROTO__INIT;
    *tt = (Onnx__TypeProto__Tensor)ONNX__TYPE_PROTO__TENSOR__INIT;
    *sh = (Onnx__TensorShapeProto)ONNX__TENSOR_SHAPE_PROTO__INIT;
    for (int i = 0; i < v->ndim; i++) {
        Onnx__TensorShapeProto__Dimension *d = A(e, sizeof *d);
        if (!d) return NULL;
        *d = (Onnx__TensorShapeProto__Dimension)ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT;
        if (v->dims[i] >= 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = v->dims[i];
        } else if (v->dim_param[i]) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = S(e, v->dim_param[i]);
        } /* else: an unknown dim, neither value nor name */
        dims[i] = d;
    }
    sh->n_dim = (size_t)v->ndim;
    sh->dim = dims;
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tt->shape = sh;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    vi->name = S(e, v->name);
    vi->type = tp;
    return e->oom ? NULL : vi;
}

/* A model tensor as an initializer named name (its data not copied). */
static int tensor_init(ex *e, const vbs_tensor_def *t, const char *name) {
    Onnx__TensorProto *p = init_new(e, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, t->ndim, t->dims);
    if (!p) return 0;
    p->has_raw_data = 1;
    p->raw_data.data = (uint8_t *)(uintptr_t)t->data; /* packed, never written */
    p->raw_data.len = (size_t)t->numel * sizeof(float);
    return 1;
}

static const vbs_tensor_def *find_tensor(const vbs_def *d, const char *name) {
    for (int i = 0; i < d->n_tensors; i++)
        if (!strcmp(d->tensors[i].name, name)) return &d->tensors[i];
    return NULL;
}

static int taken(const char *s) { return s && !strncmp(s, PFX, strlen(PFX)); }

/* The readable metadata keys and the card's JSON. */
static int metadata(ex *e, const vbs_card *c, const char *mode, Onnx__ModelProto *mp) {
    static const char *const acts[] = {"softmax", "sigmoid", "none"};
    static const char *const norms[] = {"none", "zscore_nonzero", "percentile"};
    char *json = vbs_card_json(c);
    if (!json) return 0;
    char channels[1024] = "", labels[1024] = "", dims[16];
    size_t p = 0;
    for (int i = 0; i < c->n_channels && p < sizeof channels; i++)
        p += (size_t)snprintf(channels + p, sizeof channels - p, "%s%s", i ? "," : "", c->channels[i] ? c->channels[i] : "");
    p = 0;
    for (int i = 0; i < c->n_labels && p < sizeof labels; i++)
        p += (size_t)snprintf(labels + p, sizeof labels - p, "%s%d:%s", i ? "," : "", c->labels[i].value, c->labels[i].name ? c->labels[i].name : "");
    snprintf(dims, sizeof dims, "%d", c->spatial_dims);
    const char *kv[][2] = {{"vbseg.card", json},
                           {"vbseg.mode", mode},
                           {"vbseg.channels", channels},
                           {"vbseg.labels", labels},
                           {"vbseg.spatial_dims", dims},
                           {"vbseg.normalization", (unsigned)c->normalization < 3 ? norms[c->normalization] : "?"},
                           {"vbseg.output_activation", (unsigned)c->output_activation < 3 ? acts[c->output_activation] : "?"},
                           {"vbseg.heteroscedastic", c->heteroscedastic ? "true" : "false"},
                           {"vbseg.producer", c->producer ? c->producer : ""},
                           {"vbseg.description", c->description ? c->description : ""}};
    size_t n = sizeof kv / sizeof kv[0];
    mp->metadata_props = A(e, n * sizeof *mp->metadata_props);
    for (size_t i = 0; mp->metadata_props && i < n; i++) {
        Onnx__StringStringEntryProto *s = A(e, sizeof *s);
        if (!s) break;
        *s = (Onnx__StringStringEntryProto)ONNX__STRING_STRING_ENTRY_PROTO__INIT;
        s->key = S(e, kv[i][0]);
        s->value = S(e, kv[i][1]);
        mp->metadata_props[mp->n_metadata_props++] = s;
    }
    free(json);
    return !e->oom;
}

typedef struct { uint8_t *buf; size_t len; } blob;

static vbs_status write_blob(int fd, void *user, char *err) {
    const blob *b = user;
    if (vbs_write_all(fd, b->buf, b->len)) return vbs_fail(err, VBS_ERR_IO, "write failed: %s", strerror(errno));
    return VBS_OK;
}

vbs_status vbs_export_onnx(vbs_model *m, const char *path, const vbs_export_opts *opts) {
    if (!m || !path || !opts || (opts->mode != VBS_EXPORT_MEAN && opts->mode != VBS_EXPORT_SAMPLING)) return VBS_ERR_ARG;
    vbs_export_mode mode = opts->mode;
    if (!m->loaded) return vbs_fail(m->err, VBS_ERR_STATE, "vbs_export_onnx: model did not load");
    const vbs_def *d = &m->def;
    vbs_arena ar = {0};
    ex e = {.ar = &ar, .d = d, .file = path, .err = m->err, .seeded = opts->seeded && mode == VBS_EXPORT_SAMPLING};
    /* the seed's 64 bits folded into the counter's start (splitmix64's finaliser) */
    uint64_t h = opts->seed + 0x9E3779B97F4A7C15ull;
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
    e.seed24 = (uint32_t)(h ^ (h >> 31));
    int sampling = mode == VBS_EXPORT_SAMPLING;
    vbs_status st = VBS_OK;
    /* generated names must not meet the model's own */
    for (int i = 0; i < d->n_nodes && !st; i++)
        for (int k = 0; k < d->nodes[i].n_out && !st; k++)
            if (taken(d->nodes[i].out[k]))
                st = vbs_fail_file(m->err, VBS_ERR_UNSUPPORTED, path, "node '%s': value name '%s' starts with \"" PFX "\", which the export reserves",
                                   d->nodes[i].name, d->nodes[i].out[k]);
    for (int i = 0; i < d->n_tensors && !st; i++)
        if (taken(d->tensors[i].name))
            st = vbs_fail_file(m->err, VBS_ERR_UNSUPPORTED, path, "tensor '%s' starts with \"" PFX "\", which the export reserves", d->tensors[i].name);
    /* weights: means (and, sampling, the draws of the variational ones) */
    for (int i = 0; i < d->n_tensors && !st; i++) {
        const vbs_tensor_def *t = &d->tensors[i];
        if (t->role == VBS_ROLE_PLAIN || (t->role == VBS_ROLE_MU && !sampling)) {
            if (!tensor_init(&e, t, t->name)) st = VBS_ERR_NOMEM;
        } else if (t->role == VBS_ROLE_MU) {
            const vbs_tensor_def *rho = t->rho ? find_tensor(d, t->rho) : NULL;
            char mu[512];
            snprintf(mu, sizeof mu, PFX "mu:%.480s", t->name);
            if (!rho) st = vbs_fail_file(m->err, VBS_ERR_FORMAT, path, "tensor '%s': its rho '%s' is missing", t->name, t->rho ? t->rho : "");
            else if (!tensor_init(&e, t, mu) || !tensor_init(&e, rho, rho->name) || !gaussian(&e, mu, rho->name, t->name)) st = VBS_ERR_NOMEM;
        }
    }
    for (int i = 0; i < d->n_nodes && !st; i++) st = export_node(&e, &d->nodes[i], sampling);
    if (!st && e.oom) st = VBS_ERR_NOMEM;

    Onnx__ModelProto mp = ONNX__MODEL_PROTO__INIT;
    Onnx__GraphProto g = ONNX__GRAPH_PROTO__INIT;
    Onnx__OperatorSetIdProto os = ONNX__OPERATOR_SET_ID_PROTO__INIT, *osp = &os;
    if (!st) {
        g.name = S(&e, d->graph_name ? d->graph_name : "vbseg");
        g.n_node = e.n_nodes;
        g.node = e.nodes;
        g.n_initializer = e.n_inits;
        g.initializer = e.inits;
        g.input = A(&e, (size_t)(d->n_inputs + 1) * sizeof *g.input);
        g.output = A(&e, (size_t)(d->n_outputs + 1) * sizeof *g.output);
        for (int i = 0; g.input && i < d->n_inputs; i++) {
            vbs_value_info v;
            if (vbs_model_input(m, i, &v) || !(g.input[g.n_input++] = value_info(&e, &v))) e.oom = 1;
        }
        for (int i = 0; g.output && i < d->n_outputs; i++) {
            vbs_value_info v;
            if (vbs_model_output(m, i, &v) || !(g.output[g.n_output++] = value_info(&e, &v))) e.oom = 1;
        }
        os.domain = S(&e, "");
        os.has_version = 1;
        os.version = 17;
        mp.has_ir_version = 1;
        mp.ir_version = 8;
        mp.n_opset_import = 1;
        mp.opset_import = &osp;
        mp.producer_name = S(&e, "vbseg");
        mp.producer_version = S(&e, VBS_VERSION_STRING);
        mp.graph = &g;
        if (e.oom || !g.input || !g.output || !metadata(&e, &d->card, sampling ? "sampling" : "mean", &mp)) st = VBS_ERR_NOMEM;
    }
    if (!st) {
        blob b = {NULL, protobuf_c_message_get_packed_size(&mp.base)};
        if (b.len > (size_t)INT32_MAX)
            st = vbs_fail_file(m->err, VBS_ERR_UNSUPPORTED, path, "%zu bytes: over ONNX's 2 GB protobuf limit (external data is not written)", b.len);
        else if (!(b.buf = malloc(b.len ? b.len : 1))) st = VBS_ERR_NOMEM;
        else {
            protobuf_c_message_pack(&mp.base, b.buf);
            char err[VBS_ERRLEN];
            if ((st = vbs_atomic_write(path, write_blob, &b, err))) vbs_fail(m->err, st, "%s", err);
        }
        free(b.buf);
    }
    if (st == VBS_ERR_NOMEM) vbs_fail_file(m->err, st, path, "out of memory while building the ONNX graph");
    vbs_arena_free(&ar);
    return st;
}
