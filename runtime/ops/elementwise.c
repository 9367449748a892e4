/*
 * elementwise.c: the binary element-wise ops with numpy-style
 * broadcasting: Add and Mul (multidirectional) and PRelu (slope broadcast
 * to X). The fast kernel collapses the shapes into an outer loop and a
 * contiguous inner run; the naive one recomputes both source indices for
 * every output element.
 */
#include <stdio.h>

#include "ops.h"

typedef enum { BIN_ADD, BIN_MUL, BIN_PRELU } bin_kind;

static inline float apply(bin_kind k, float a, float b) {
    switch (k) {
    case BIN_ADD: return a + b;
    case BIN_MUL: return a * b;
    default: return a < 0.f ? a * b : a;
    }
}

/* Right-aligned broadcast of a and b into out; unidirectional: b must fit a. */
static vbs_status broadcast_shape(const vbs_node *n, const char *op, const vbs_shape *a, const vbs_shape *b, int uni,
                                  vbs_shape *out, char *err) {
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    if (uni && b->ndim > a->ndim) nd = -1;
    for (int i = 0; nd > 0 && i < nd; i++) {
        int64_t da = i < nd - a->ndim ? 1 : a->d[i - (nd - a->ndim)];
        int64_t db = i < nd - b->ndim ? 1 : b->d[i - (nd - b->ndim)];
        if (da != db && da != 1 && db != 1) { nd = -1; break; }
        if (uni && da != db && db != 1) { nd = -1; break; }
        out->d[i] = da > db ? da : db;
        if (da == 0 || db == 0) out->d[i] = 0;
    }
    if (nd < 0) {
        char sa[128], sb[128];
        int pa = 0, pb = 0;
        for (int i = 0; i < a->ndim; i++) pa += snprintf(sa + pa, sizeof sa - (size_t)pa, "%s%lld", i ? "x" : "", (long long)a->d[i]);
        for (int i = 0; i < b->ndim; i++) pb += snprintf(sb + pb, sizeof sb - (size_t)pb, "%s%lld", i ? "x" : "", (long long)b->d[i]);
        if (!a->ndim) snprintf(sa, sizeof sa, "scalar");
        if (!b->ndim) snprintf(sb, sizeof sb, "scalar");
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (%s): shapes %s and %s do not broadcast", n->name, op, sa, sb);
    }
    out->ndim = nd;
    return VBS_OK;
}

/* Strides of src (right-aligned into out's ndim) with 0 on broadcast axes. */
static void bstrides(const vbs_shape *src, const vbs_shape *out, int64_t *st) {
    int64_t s = 1;
    for (int i = out->ndim - 1; i >= 0; i--) {
        int j = i - (out->ndim - src->ndim);
        int64_t d = j >= 0 ? src->d[j] : 1;
        st[i] = d == 1 ? 0 : s;
        s *= d;
    }
}

static void binary_fast(const vbs_op_args *a, bin_kind k) {
    const vbs_shape *ys = a->ys[0];
    int nd = ys->ndim;
    int64_t n = vbs_shape_numel(ys);
    if (n == 0) return;
    int64_t sa[VBS_MAX_DIMS], sb[VBS_MAX_DIMS];
    bstrides(a->xs[0], ys, sa);
    bstrides(a->xs[1], ys, sb);
    const float *x0 = a->x[0], *x1 = a->x[1];
    float *y = a->y[0];
    if (nd == 0) { y[0] = apply(k, x0[0], x1[0]); return; }
    /* merge trailing axes while both inputs stay contiguous or both stay broadcast */
    int64_t inner = ys->d[nd - 1], ia = sa[nd - 1], ib = sb[nd - 1];
    int last = nd - 1;
    while (last > 0) {
        int j = last - 1;
        int a_ok = (ia == 0 && sa[j] == 0) || (ia == 1 && sa[j] == inner);
        int b_ok = (ib == 0 && sb[j] == 0) || (ib == 1 && sb[j] == inner);
        if (!a_ok || !b_ok) break;
        inner *= ys->d[j];
        last = j;
    }
    int64_t idx[VBS_MAX_DIMS] = {0};
    for (int64_t base = 0; base < n; base += inner) {
        int64_t oa = 0, ob = 0;
        for (int i = 0; i < last; i++) { oa += idx[i] * sa[i]; ob += idx[i] * sb[i]; }
        const float *pa = x0 + oa, *pb = x1 + ob;
        float *py = y + base;
        if (ia && ib) for (int64_t t = 0; t < inner; t++) py[t] = apply(k, pa[t], pb[t]);
        else if (ia) { float vb = pb[0]; for (int64_t t = 0; t < inner; t++) py[t] = apply(k, pa[t], vb); }
        else if (ib) { float va = pa[0]; for (int64_t t = 0; t < inner; t++) py[t] = apply(k, va, pb[t]); }
        else { float v = apply(k, pa[0], pb[0]); for (int64_t t = 0; t < inner; t++) py[t] = v; }
        for (int i = last - 1; i >= 0; i--) {
            if (++idx[i] < ys->d[i]) break;
            idx[i] = 0;
        }
    }
}

static void binary_naive(const vbs_op_args *a, bin_kind k) {
    const vbs_shape *ys = a->ys[0];
    int64_t n = vbs_shape_numel(ys);
    for (int64_t e = 0; e < n; e++) {
        int64_t r = e, ia = 0, ib = 0, ma = 1, mb = 1;
        for (int i = ys->ndim - 1; i >= 0; i--) {
            int64_t c = r % ys->d[i];
            r /= ys->d[i];
            int ja = i - (ys->ndim - a->xs[0]->ndim), jb = i - (ys->ndim - a->xs[1]->ndim);
            if (ja >= 0) { int64_t d = a->xs[0]->d[ja]; ia += (d == 1 ? 0 : c) * ma; ma *= d; }
            if (jb >= 0) { int64_t d = a->xs[1]->d[jb]; ib += (d == 1 ? 0 : c) * mb; mb *= d; }
        }
        a->y[0][e] = apply(k, a->x[0][ia], a->x[1][ib]);
    }
}

vbs_status vbs_add_parse(vbs_node *n, const vbs_node_def *d, char *err) { return vbs_parse_no_attrs(n, d, err); }
vbs_status vbs_mul_parse(vbs_node *n, const vbs_node_def *d, char *err) { return vbs_parse_no_attrs(n, d, err); }
vbs_status vbs_prelu_parse(vbs_node *n, const vbs_node_def *d, char *err) { return vbs_parse_no_attrs(n, d, err); }

vbs_status vbs_add_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) {
    return broadcast_shape(n, "Add", &in[0], &in[1], 0, out, err);
}
vbs_status vbs_mul_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) {
    return broadcast_shape(n, "Mul", &in[0], &in[1], 0, out, err);
}
vbs_status vbs_prelu_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) {
    return broadcast_shape(n, "PRelu", &in[0], &in[1], 1, out, err);
}

void vbs_add_forward(const vbs_op_args *a) { binary_fast(a, BIN_ADD); }
void vbs_add_forward_naive(const vbs_op_args *a) { binary_naive(a, BIN_ADD); }
void vbs_mul_forward(const vbs_op_args *a) { binary_fast(a, BIN_MUL); }
void vbs_mul_forward_naive(const vbs_op_args *a) { binary_naive(a, BIN_MUL); }
void vbs_prelu_forward(const vbs_op_args *a) { binary_fast(a, BIN_PRELU); }
void vbs_prelu_forward_naive(const vbs_op_args *a) { binary_naive(a, BIN_PRELU); }
