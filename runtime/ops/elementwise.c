/*
 * elementwise.c: the binary element-wise ops with numpy-style
 * broadcasting: Add and Mul (multidirectional) and PRelu (slope broadcast
 * to X), forward and backward, and the gradient loops other backward
 * kernels share (vbs_grad_add, vbs_grad_sum).
 *
 * Fast kernels collapse the shapes into an outer loop and contiguous
 * inner runs (walk); along a run each input is contiguous or one
 * broadcast value, so the backward is either an element-wise update or a
 * sum into one element: the reduction over the broadcast dims. Runs are
 * cut into blocks that stay in L1 so the two inputs' gradients read dy
 * once from memory. Naive kernels recompute the source indices for every
 * element; the naive backward gathers, for each input element, every
 * output element it was broadcast to, in double.
 *
 * PRelu is ONNX's y = x < 0 ? slope*x : x; at x == 0 it takes the x
 * branch (gradient 1 for x, 0 for the slope), as LeakyRelu does.
 */
#include <stdio.h>
#include <string.h>

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

/* The fast kernels' walk over the output: runs of `inner` contiguous
 * output elements, along which each input is contiguous (ia/ib = 1) or
 * one broadcast value (0). Trailing axes are merged while both inputs stay
 * contiguous or both stay broadcast. */
typedef struct {
    const vbs_shape *ys;
    int64_t n, inner, sa[VBS_MAX_DIMS], sb[VBS_MAX_DIMS], idx[VBS_MAX_DIMS], base;
    int last, ia, ib;
} walk;

static void walk_init(walk *w, const vbs_shape *xa, const vbs_shape *xb, const vbs_shape *ys) {
    memset(w, 0, sizeof *w);
    w->ys = ys;
    w->n = vbs_shape_numel(ys);
    int nd = ys->ndim;
    w->inner = 1;
    w->ia = w->ib = 1;
    if (nd == 0) return; /* one element: both inputs are scalars */
    bstrides(xa, ys, w->sa);
    bstrides(xb, ys, w->sb);
    w->inner = ys->d[nd - 1];
    w->ia = w->sa[nd - 1] != 0;
    w->ib = w->sb[nd - 1] != 0;
    w->last = nd - 1;
    while (w->last > 0) {
        int j = w->last - 1;
        int a_ok = (!w->ia && w->sa[j] == 0) || (w->ia && w->sa[j] == w->inner);
        int b_ok = (!w->ib && w->sb[j] == 0) || (w->ib && w->sb[j] == w->inner);
        if (!a_ok || !b_ok) break;
        w->inner *= ys->d[j];
        w->last = j;
    }
}

/* The next run: its output offset and the offsets of both inputs; 0 when done. */
static int walk_next(walk *w, int64_t *base, int64_t *oa, int64_t *ob) {
    if (w->base >= w->n || w->inner == 0) return 0;
    *base = w->base;
    *oa = *ob = 0;
    for (int i = 0; i < w->last; i++) { *oa += w->idx[i] * w->sa[i]; *ob += w->idx[i] * w->sb[i]; }
    w->base += w->inner;
    for (int i = w->last - 1; i >= 0; i--) {
        if (++w->idx[i] < w->ys->d[i]) break;
        w->idx[i] = 0;
    }
    return 1;
}

static void binary_fast(const vbs_op_args *a, bin_kind k) {
    walk w;
    walk_init(&w, a->xs[0], a->xs[1], a->ys[0]);
    int64_t inner = w.inner, base, oa, ob;
    while (walk_next(&w, &base, &oa, &ob)) {
        const float *pa = a->x[0] + oa, *pb = a->x[1] + ob;
        float *py = a->y[0] + base;
        if (w.ia && w.ib) for (int64_t t = 0; t < inner; t++) py[t] = apply(k, pa[t], pb[t]);
        else if (w.ia) { float vb = pb[0]; for (int64_t t = 0; t < inner; t++) py[t] = apply(k, pa[t], vb); }
        else if (w.ib) { float va = pa[0]; for (int64_t t = 0; t < inner; t++) py[t] = apply(k, va, pb[t]); }
        else { float v = apply(k, pa[0], pb[0]); for (int64_t t = 0; t < inner; t++) py[t] = v; }
    }
}

/* Flat index into src (right-aligned into the output's axes, size-1 axes
 * broadcast) of output coordinates o. */
static int64_t src_index(const vbs_shape *src, const vbs_shape *ys, const int64_t *o) {
    int64_t idx = 0;
    for (int j = 0; j < src->ndim; j++) {
        int64_t d = src->d[j];
        idx = idx * d + (d == 1 ? 0 : o[j + ys->ndim - src->ndim]);
    }
    return idx;
}

static void binary_naive(const vbs_op_args *a, bin_kind k) {
    const vbs_shape *ys = a->ys[0];
    int64_t n = vbs_shape_numel(ys), o[VBS_MAX_DIMS];
    for (int64_t e = 0; e < n; e++) {
        int64_t r = e;
        for (int i = ys->ndim - 1; i >= 0; i--) { o[i] = r % ys->d[i]; r /= ys->d[i]; }
        a->y[0][e] = apply(k, a->x[0][src_index(a->xs[0], ys, o)], a->x[1][src_index(a->xs[1], ys, o)]);
    }
}

/* ---- backward ------------------------------------------------------------ */

/* d y / d a (which = 0) or d y / d b (which = 1), times the output gradient g. */
static inline __attribute__((always_inline)) float dgrad(bin_kind k, int which, float g, float a, float b) {
    switch (k) {
    case BIN_ADD: return g;
    case BIN_MUL: return which ? g * a : g * b;
    /* PRelu: a < 0 ? g*b : g and a < 0 ? g*a : 0, written as selects between
     * a value and 0 under > or >=, the only selects GCC 12 if-converts
     * (and so vectorises) under trapping math; the same values */
    default: return which ? (0.f > a ? g : 0.f) * a : (a >= 0.f ? g : 0.f) + (0.f > a ? g : 0.f) * b;
    }
}

static double dgrad_naive(bin_kind k, int which, double g, double a, double b) {
    switch (k) {
    case BIN_ADD: return g;
    case BIN_MUL: return which ? g * a : g * b;
    default: return which ? (a < 0 ? g * a : 0) : (a < 0 ? g * b : g);
    }
}

/* d[t] += dgrad(dy[t], a, b) over n elements; sa, sb are the operands'
 * strides along the run (1 or 0), constants after inlining. */
static inline __attribute__((always_inline)) void run_own(bin_kind k, int which, float *restrict d, const float *dy,
                                                          const float *pa, int64_t sa, const float *pb, int64_t sb, int64_t n) {
    for (int64_t t = 0; t < n; t++) d[t] += dgrad(k, which, dy[t], pa[t * sa], pb[t * sb]);
}

/* sum over n elements of dgrad(dy[t], a, b), in 8 interleaved lanes so that
 * it vectorises (and its order depends on n only). */
static inline __attribute__((always_inline)) float run_sum(bin_kind k, int which, const float *dy, const float *pa, int64_t sa,
                                                           const float *pb, int64_t sb, int64_t n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t t = 0;
    for (; t + 8 <= n; t += 8)
        for (int j = 0; j < 8; j++) acc[j] += dgrad(k, which, dy[t + j], pa[(t + j) * sa], pb[(t + j) * sb]);
    for (int j = 0; t < n; t++, j++) acc[j] += dgrad(k, which, dy[t], pa[t * sa], pb[t * sb]);
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

VBS_CLONES(grad_add, (float *restrict dx, const float *dy, int64_t n), run_own(BIN_ADD, 0, dx, dy, dy, 0, dy, 0, n))
void vbs_grad_add(float *dx, const float *dy, int64_t n) { VBS_PICK(grad_add)(dx, dy, n); }

/* sum of x (y == NULL) or of x*y, as a Mul gradient reduced to a scalar */
static inline __attribute__((always_inline)) void grad_dot_body(const float *x, const float *y, int64_t n, float *out) {
    *out = y ? run_sum(BIN_MUL, 0, x, x, 0, y, 1, n) : run_sum(BIN_ADD, 0, x, x, 0, x, 0, n);
}
VBS_CLONES(grad_dot, (const float *x, const float *y, int64_t n, float *out), grad_dot_body(x, y, n, out))
float vbs_grad_sum(const float *x, int64_t n) {
    float s;
    VBS_PICK(grad_dot)(x, NULL, n, &s);
    return s;
}
float vbs_grad_dot(const float *x, const float *y, int64_t n) {
    float s;
    VBS_PICK(grad_dot)(x, y, n, &s);
    return s;
}

/* One input's gradient over a block of n outputs. d is that input's
 * gradient at the block: contiguous along it when the input is (ia or ib),
 * else the one element the whole block was broadcast from. */
static inline __attribute__((always_inline)) void grad_block(bin_kind k, int which, float *restrict d, const float *dy,
                                                             const float *pa, const float *pb, int ia, int ib, int64_t n) {
    if (which ? ib : ia) {
        if (ia && ib) run_own(k, which, d, dy, pa, 1, pb, 1, n);
        else if (ia) run_own(k, which, d, dy, pa, 1, pb, 0, n);
        else run_own(k, which, d, dy, pa, 0, pb, 1, n);
    } else {
        float s;
        if (ia) s = run_sum(k, which, dy, pa, 1, pb, 0, n);
        else if (ib) s = run_sum(k, which, dy, pa, 0, pb, 1, n);
        else s = run_sum(k, which, dy, pa, 0, pb, 0, n);
        d[0] += s;
    }
}

enum { BLOCK = 1024 }; /* floats: dy, a, b and a gradient block fit in L1 */

static inline __attribute__((always_inline)) void binary_backward_body(const vbs_grad_args *g, bin_kind k) {
    const vbs_op_args *a = g->fwd;
    float *da = g->dx[0], *db = g->dx[1];
    if (!da && !db) return;
    walk w;
    walk_init(&w, a->xs[0], a->xs[1], a->ys[0]);
    int64_t base, oa, ob;
    while (walk_next(&w, &base, &oa, &ob))
        for (int64_t t0 = 0; t0 < w.inner; t0 += BLOCK) {
            int64_t n = w.inner - t0 < BLOCK ? w.inner - t0 : BLOCK, ta = w.ia ? oa + t0 : oa, tb = w.ib ? ob + t0 : ob;
            const float *dy = g->dy[0] + base + t0;
            if (da) grad_block(k, 0, da + ta, dy, a->x[0] + ta, a->x[1] + tb, w.ia, w.ib, n);
            if (db) grad_block(k, 1, db + tb, dy, a->x[0] + ta, a->x[1] + tb, w.ia, w.ib, n);
        }
}

VBS_CLONES(add_bw, (const vbs_grad_args *g), binary_backward_body(g, BIN_ADD))
VBS_CLONES(mul_bw, (const vbs_grad_args *g), binary_backward_body(g, BIN_MUL))
VBS_CLONES(prelu_bw, (const vbs_grad_args *g), binary_backward_body(g, BIN_PRELU))

/* For every element j of input `which`: the sum, over the output elements
 * it was broadcast to, of dgrad. The output coordinates of j are fixed on
 * the input's own axes and run free over the axes where it has size 1 (or
 * is absent). */
static void binary_backward_naive(const vbs_grad_args *g, bin_kind k) {
    const vbs_op_args *a = g->fwd;
    const vbs_shape *ys = a->ys[0];
    int nd = ys->ndim;
    for (int which = 0; which < 2; which++) {
        float *d = g->dx[which];
        if (!d) continue;
        const vbs_shape *s = a->xs[which];
        int64_t ns = vbs_shape_numel(s);
        for (int64_t j = 0; j < ns; j++) {
            int64_t fixed[VBS_MAX_DIMS], nfree = 1, r = j;
            int free_ax[VBS_MAX_DIMS], nf = 0;
            for (int i = nd - 1; i >= 0; i--) {
                int si = i - (nd - s->ndim);
                int64_t dim = si >= 0 ? s->d[si] : 1;
                fixed[i] = r % dim;
                r /= dim;
                if (dim == 1) { free_ax[nf++] = i; nfree *= ys->d[i]; }
            }
            double acc = 0;
            for (int64_t q = 0; q < nfree; q++) {
                int64_t o[VBS_MAX_DIMS], rq = q, e = 0;
                for (int i = 0; i < nd; i++) o[i] = fixed[i];
                for (int f = 0; f < nf; f++) { o[free_ax[f]] = rq % ys->d[free_ax[f]]; rq /= ys->d[free_ax[f]]; }
                for (int i = 0; i < nd; i++) e = e * ys->d[i] + o[i];
                acc += dgrad_naive(k, which, g->dy[0][e], a->x[0][src_index(a->xs[0], ys, o)], a->x[1][src_index(a->xs[1], ys, o)]);
            }
            d[j] += (float)acc;
        }
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

void vbs_add_backward(const vbs_grad_args *g) { VBS_PICK(add_bw)(g); }
void vbs_add_backward_naive(const vbs_grad_args *g) { binary_backward_naive(g, BIN_ADD); }
void vbs_mul_backward(const vbs_grad_args *g) { VBS_PICK(mul_bw)(g); }
void vbs_mul_backward_naive(const vbs_grad_args *g) { binary_backward_naive(g, BIN_MUL); }
void vbs_prelu_backward(const vbs_grad_args *g) { VBS_PICK(prelu_bw)(g); }
void vbs_prelu_backward_naive(const vbs_grad_args *g) { binary_backward_naive(g, BIN_PRELU); }
