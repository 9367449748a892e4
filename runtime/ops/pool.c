/*
 * pool.c: ONNX MaxPool, AveragePool (1D/2D/3D; pads, strides, dilations,
 * ceil_mode, count_include_pad, auto_pad) and GlobalAveragePool, forward
 * and backward. Pooling is memory-bound and its direct loop is already the
 * simplest form, so the fast and naive forwards coincide except for the
 * U-Net's 2D 2x2 stride-2 MaxPool; the tests check them against
 * hand-computed windows instead.
 *
 * Backward: MaxPool sends an output's gradient to the first maximum of
 * its window in scan order (PyTorch's convention for ties); padding never
 * gets any. It recomputes that argmax from x rather than saving indices in
 * the forward: x is still live, a 2x2 window is four compares, and the
 * forward (which also runs at inference) keeps its single output stream.
 * The fast kernels: the 2x2 and 2x2x2 stride-2 MaxPools vectorised, other
 * MaxPools a scatter per window with its taps clipped once, AveragePool as
 * three 1D adjoints, one per axis. The naive kernels gather, for each
 * input element, over the windows that contain it, in double.
 */
#include <float.h>
#include <stdint.h>
#include <string.h>

#include "geo.h"
#include "ops.h"

static const char *const max_known[] = {"kernel_shape", "strides", "pads", "dilations", "auto_pad", "ceil_mode",
                                        "storage_order", NULL};
static const char *const avg_known[] = {"kernel_shape", "strides", "pads", "auto_pad", "ceil_mode",
                                        "count_include_pad", "dilations", NULL};

vbs_status vbs_max_pool_parse(vbs_node *n, const vbs_node_def *d, char *err) {
    vbs_status st = vbs_attr_check_known(d, max_known, err);
    if (st) return st;
    int64_t so;
    if ((st = vbs_attr_int(d, "storage_order", 0, &so, err))) return st;
    if (so != 0)
        return vbs_fail(err, VBS_ERR_UNSUPPORTED, "node '%s' (MaxPool): storage_order=%lld unsupported (only 0)", d->name, (long long)so);
    if (d->n_out > 1)
        return vbs_fail(err, VBS_ERR_UNSUPPORTED, "node '%s' (MaxPool): the Indices output is unsupported", d->name);
    return vbs_window_parse(n, d, 0, err);
}

vbs_status vbs_average_pool_parse(vbs_node *n, const vbs_node_def *d, char *err) {
    vbs_status st = vbs_attr_check_known(d, avg_known, err);
    return st ? st : vbs_window_parse(n, d, 0, err);
}

static vbs_status pool_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) {
    if (in[0].ndim - 2 != n->a.win.nsp)
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s': kernel is %dD but the input has %d dims", n->name, n->a.win.nsp, in[0].ndim);
    return vbs_window_out(n, &in[0], out, in[0].d[1], err);
}

vbs_status vbs_max_pool_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) { return pool_shape(n, in, out, err); }
vbs_status vbs_average_pool_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) { return pool_shape(n, in, out, err); }

/* The pooling geometry of a call: spatial dims expanded to three, with the
 * end pads (which only the count_include_pad divisor reads). */
typedef struct {
    vbs_geo g;
    int64_t pe[3];
    int64_t planes;
} pool_geo;

static void pool_geo_make(pool_geo *p, const vbs_op_args *a) {
    const vbs_window_attr *w = &a->node->a.win;
    vbs_geo_make(&p->g, w, a->xs[0], a->ys[0], NULL);
    int nsp = a->xs[0]->ndim - 2, off = 3 - nsp;
    p->pe[0] = p->pe[1] = p->pe[2] = 0;
    for (int i = 0; i < nsp; i++) p->pe[off + i] = w->pad[VBS_MAX_SPATIAL + i];
    p->planes = a->xs[0]->d[0] * a->xs[0]->d[1];
}

/* The taps of window o along axis i that land in the input plus its pads:
 * a factor of the count_include_pad divisor. */
static inline int64_t pad_span(const pool_geo *p, int i, int64_t o) {
    const vbs_geo *g = &p->g;
    int64_t st = o * g->s[i] - g->pb[i], en = st + (g->k[i] - 1) * g->d[i] + 1;
    if (en > g->in[i] + p->pe[i]) en = g->in[i] + p->pe[i];
    return g->d[i] == 1 ? en - st : (en - st + g->d[i] - 1) / g->d[i];
}

/* The count_include_pad divisor of the window at output o[3]. */
static int64_t count_with_pads(const pool_geo *p, const int64_t *o) {
    return pad_span(p, 0, o[0]) * pad_span(p, 1, o[1]) * pad_span(p, 2, o[2]);
}

static void pool(const vbs_op_args *a, int is_max) {
    const vbs_window_attr *w = &a->node->a.win;
    pool_geo pg;
    pool_geo_make(&pg, a);
    const vbs_geo g = pg.g;
    for (int64_t p = 0; p < pg.planes; p++) {
        const float *x = a->x[0] + p * g.in_sz;
        float *y = a->y[0] + p * g.out_sz;
        for (int64_t od = 0; od < g.out[0]; od++)
            for (int64_t oh = 0; oh < g.out[1]; oh++)
                for (int64_t ow = 0; ow < g.out[2]; ow++) {
                    int64_t o[3] = {od, oh, ow}, cnt_pad = count_with_pads(&pg, o);
                    float mx = -FLT_MAX;
                    double sum = 0;
                    int64_t cnt = 0;
                    for (int64_t kd = 0; kd < g.k[0]; kd++) {
                        int64_t id = od * g.s[0] - g.pb[0] + kd * g.d[0];
                        if (id < 0 || id >= g.in[0]) continue;
                        for (int64_t kh = 0; kh < g.k[1]; kh++) {
                            int64_t ih = oh * g.s[1] - g.pb[1] + kh * g.d[1];
                            if (ih < 0 || ih >= g.in[1]) continue;
                            for (int64_t kw = 0; kw < g.k[2]; kw++) {
                                int64_t iw = ow * g.s[2] - g.pb[2] + kw * g.d[2];
                                if (iw < 0 || iw >= g.in[2]) continue;
                                float v = x[(id * g.in[1] + ih) * g.in[2] + iw];
                                if (v > mx) mx = v;
                                sum += v;
                                cnt++;
                            }
                        }
                    }
                    float r;
                    if (is_max) r = mx;
                    else r = (float)(sum / (double)(w->count_include_pad ? cnt_pad : (cnt ? cnt : 1)));
                    y[(od * g.out[1] + oh) * g.out[2] + ow] = r;
                }
    }
}

/* The U-Nets' down-sampling layer: a 2x2 (2x2x2) window, stride 2, no
 * padding or dilation, floor sizes. Returns its spatial dims (2 or 3), or 0. */
static int halving_dims(const vbs_op_args *a) {
    const vbs_window_attr *w = &a->node->a.win;
    int nsp = a->xs[0]->ndim - 2;
    if (nsp < 2) return 0;
    for (int i = 0; i < nsp; i++)
        if (w->kernel[i] != 2 || w->stride[i] != 2 || w->dil[i] != 1 || w->pad[i] || w->pad[VBS_MAX_SPATIAL + i] ||
            a->ys[0]->d[2 + i] != a->xs[0]->d[2 + i] / 2)
            return 0;
    return nsp;
}

static inline __attribute__((always_inline)) void max2x2_body(const float *x, int64_t planes, int64_t h, int64_t w, float *y) {
    int64_t oh = h / 2, ow = w / 2;
    for (int64_t p = 0; p < planes; p++)
        for (int64_t r = 0; r < oh; r++) {
            const float *r0 = x + (p * h + 2 * r) * w, *r1 = r0 + w;
            float *dst = y + (p * oh + r) * ow;
            for (int64_t c = 0; c < ow; c++) {
                float m0 = r0[2 * c] > r0[2 * c + 1] ? r0[2 * c] : r0[2 * c + 1];
                float m1 = r1[2 * c] > r1[2 * c + 1] ? r1[2 * c] : r1[2 * c + 1];
                dst[c] = m0 > m1 ? m0 : m1;
            }
        }
}

VBS_CLONES(max2x2, (const float *x, int64_t planes, int64_t h, int64_t w, float *y), max2x2_body(x, planes, h, w, y))

void vbs_max_pool_forward(const vbs_op_args *a) {
    if (halving_dims(a) == 2) {
        VBS_PICK(max2x2)(a->x[0], a->xs[0]->d[0] * a->xs[0]->d[1], a->xs[0]->d[2], a->xs[0]->d[3], a->y[0]);
        return;
    }
    pool(a, 1);
}
void vbs_max_pool_forward_naive(const vbs_op_args *a) { pool(a, 1); }
void vbs_average_pool_forward(const vbs_op_args *a) { pool(a, 0); }
void vbs_average_pool_forward_naive(const vbs_op_args *a) { pool(a, 0); }

/* ---- backward ---------------------------------------------------------- */

/* The kernel taps [*lo, *hi) of window o along axis i that land inside the
 * input (empty when lo == hi). */
static inline void taps(const vbs_geo *g, int i, int64_t o, int64_t *lo, int64_t *hi) {
    int64_t st = o * g->s[i] - g->pb[i], d = g->d[i], in = g->in[i], l, h;
    if (d == 1) {
        l = st < 0 ? -st : 0;
        h = in - st;
    } else {
        l = st < 0 ? (-st + d - 1) / d : 0;
        h = st < in ? (in - 1 - st) / d + 1 : 0;
    }
    if (h > g->k[i]) h = g->k[i];
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* dx += dy scattered over the windows, each output's to the first maximum
 * of its window. */
static void max_backward(const vbs_grad_args *gr) {
    const vbs_op_args *a = gr->fwd;
    pool_geo pg;
    pool_geo_make(&pg, a);
    const vbs_geo *g = &pg.g;
    for (int64_t p = 0; p < pg.planes; p++) {
        const float *x = a->x[0] + p * g->in_sz, *dy = gr->dy[0] + p * g->out_sz;
        float *dx = gr->dx[0] + p * g->in_sz;
        for (int64_t od = 0; od < g->out[0]; od++) {
            int64_t d0, d1, bd = od * g->s[0] - g->pb[0];
            taps(g, 0, od, &d0, &d1);
            for (int64_t oh = 0; oh < g->out[1]; oh++) {
                int64_t h0, h1, bh = oh * g->s[1] - g->pb[1];
                taps(g, 1, oh, &h0, &h1);
                for (int64_t ow = 0; ow < g->out[2]; ow++) {
                    int64_t w0, w1, bw = ow * g->s[2] - g->pb[2];
                    taps(g, 2, ow, &w0, &w1);
                    if (d0 == d1 || h0 == h1 || w0 == w1) continue; /* a window of padding only */
                    int64_t best = ((bd + d0 * g->d[0]) * g->in[1] + bh + h0 * g->d[1]) * g->in[2] + bw + w0 * g->d[2];
                    float mx = x[best];
                    for (int64_t kd = d0; kd < d1; kd++)
                        for (int64_t kh = h0; kh < h1; kh++) {
                            int64_t row = ((bd + kd * g->d[0]) * g->in[1] + bh + kh * g->d[1]) * g->in[2] + bw;
                            for (int64_t kw = w0; kw < w1; kw++) {
                                int64_t i = row + kw * g->d[2];
                                if (x[i] > mx) { mx = x[i]; best = i; } /* strict: ties keep the first */
                            }
                        }
                    dx[best] += dy[(od * g->out[1] + oh) * g->out[2] + ow];
                }
            }
        }
    }
}

/* AveragePool's backward is the adjoint of a box filter, and a box (and its
 * divisor, count_include_pad or not) is a product over the axes: so it runs
 * as three 1D adjoints, w, then h, then d, each output spread over its taps
 * on one axis with that axis's factor of the divisor. Each step is a few
 * vectorised passes (a shifted axpy per tap) instead of a scatter per
 * window whose overlapping read-modify-writes serialise. */

/* The outputs o whose tap k along axis i lands inside the input: [*lo, *hi). */
static inline void tap_outputs(const vbs_geo *g, int i, int64_t k, int64_t *lo, int64_t *hi) {
    int64_t off = g->pb[i] - k * g->d[i], s = g->s[i], in = g->in[i]; /* input = o s - off */
    int64_t l = off <= 0 ? 0 : (off + s - 1) / s, h = in - 1 + off < 0 ? 0 : (in - 1 + off) / s + 1;
    if (h > g->out[i]) h = g->out[i];
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* An axis whose adjoint is the identity, output o on input o (the leading
 * axes of 1D and 2D pools). */
static int axis_trivial(const vbs_geo *g, int i) {
    return g->k[i] == 1 && g->pb[i] == 0 && g->in[i] == g->out[i] && (g->s[i] == 1 || g->out[i] == 1);
}

/* dst[o s] += src[o] f[o] for o < n */
static inline __attribute__((always_inline)) void spread_body(const float *restrict src, const float *restrict f, int64_t n, int64_t s,
                                                              float *restrict dst) {
    if (s == 1)
        for (int64_t o = 0; o < n; o++) dst[o] += src[o] * f[o];
    else
        for (int64_t o = 0; o < n; o++) dst[o * s] += src[o] * f[o];
}

/* dst += src f over n floats */
static inline __attribute__((always_inline)) void add_scaled_body(const float *restrict src, int64_t n, float f, float *restrict dst) {
    for (int64_t j = 0; j < n; j++) dst[j] += src[j] * f;
}

VBS_CLONES(spread, (const float *restrict src, const float *restrict f, int64_t n, int64_t s, float *restrict dst),
           spread_body(src, f, n, s, dst))
VBS_CLONES(add_scaled, (const float *restrict src, int64_t n, float f, float *restrict dst), add_scaled_body(src, n, f, dst))

/* dst (outer, in_i, inner) += the adjoint along axis i of src (outer, out_i,
 * inner), output o weighted by f[o]. */
static void axis_adjoint(const vbs_geo *g, int i, const float *f, const float *src, int64_t outer, int64_t inner, float *dst) {
    int64_t in = g->in[i], out = g->out[i];
    for (int64_t q = 0; q < outer; q++) {
        const float *sq = src + q * out * inner;
        float *dq = dst + q * in * inner;
        if (inner == 1) /* along a row: tap by tap, a strided axpy over the outputs */
            for (int64_t k = 0; k < g->k[i]; k++) {
                int64_t lo, hi;
                tap_outputs(g, i, k, &lo, &hi);
                if (lo < hi)
                    VBS_PICK(spread)(sq + lo, f + lo, hi - lo, g->s[i], dq + lo * g->s[i] - g->pb[i] + k * g->d[i]);
            }
        else /* across rows or planes: whole rows at a time */
            for (int64_t o = 0; o < out; o++) {
                int64_t k0, k1;
                taps(g, i, o, &k0, &k1);
                for (int64_t k = k0; k < k1; k++)
                    VBS_PICK(add_scaled)(sq + o * inner, inner, f[o], dq + (o * g->s[i] - g->pb[i] + k * g->d[i]) * inner);
            }
    }
}

/* Scratch: the per-axis factors of 1/divisor, then the tensor after the w
 * step (out0, out1, in2) and after the h step (out0, in1, in2). SIZE_MAX if
 * that overflows. */
size_t vbs_average_pool_backward_work(const vbs_node *n, const vbs_shape *in, const vbs_shape *out) {
    vbs_geo g;
    vbs_geo_make(&g, &n->a.win, &in[0], &out[0], NULL);
    int64_t a, b, c, d;
    if (!vbs_mul_ok(g.out[0], g.out[1], &a) || !vbs_mul_ok(a, g.in[2], &b) || !vbs_mul_ok(g.out[0], g.in[1], &c) ||
        !vbs_mul_ok(c, g.in[2], &d) || b > INT64_MAX / 4 || d > INT64_MAX / 4)
        return SIZE_MAX;
    return (size_t)(g.out[0] + g.out[1] + g.out[2] + b + d);
}

static void avg_backward(const vbs_grad_args *gr) {
    const vbs_op_args *a = gr->fwd;
    pool_geo pg;
    pool_geo_make(&pg, a);
    const vbs_geo *g = &pg.g;
    float *f[3] = {gr->work, gr->work + g->out[0], gr->work + g->out[0] + g->out[1]};
    float *wstep = f[2] + g->out[2], *hstep = wstep + g->out[0] * g->out[1] * g->in[2];
    for (int i = 0; i < 3; i++)
        for (int64_t o = 0; o < g->out[i]; o++) {
            int64_t lo, hi, n;
            taps(g, i, o, &lo, &hi);
            n = a->node->a.win.count_include_pad ? pad_span(&pg, i, o) : hi - lo;
            f[i][o] = n > 0 ? 1.f / (float)n : 0.f;
        }
    const int t0 = axis_trivial(g, 0), t1 = axis_trivial(g, 1);
    for (int64_t p = 0; p < pg.planes; p++) {
        const float *dy = gr->dy[0] + p * g->out_sz;
        float *dx = gr->dx[0] + p * g->in_sz;
        /* each step writes straight into dx when the steps after it are identities */
        float *dst = t0 && t1 ? dx : wstep;
        if (dst != dx) memset(dst, 0, sizeof(float) * (size_t)(g->out[0] * g->out[1] * g->in[2]));
        axis_adjoint(g, 2, f[2], dy, g->out[0] * g->out[1], 1, dst);
        if (dst == dx) continue;
        const float *src = wstep;
        if (!t1) {
            dst = t0 ? dx : hstep;
            if (dst != dx) memset(dst, 0, sizeof(float) * (size_t)(g->out[0] * g->in[1] * g->in[2]));
            axis_adjoint(g, 1, f[1], wstep, g->out[0], g->in[2], dst);
            if (dst == dx) continue;
            src = hstep;
        }
        axis_adjoint(g, 0, f[0], src, 1, g->in[1] * g->in[2], dx);
    }
}

/* The 2x2 (kd = 1) and 2x2x2 (kd = 2) stride-2 MaxPool backward: the first
 * maximum of each block in scan order takes the block's gradient; a later
 * tap wins only if strictly greater than all before it. dd is the input
 * depth (1 in 2D). kd is a constant in each clone, so the tap loops unroll
 * into selects on per-tap gradients (gs) and the column loop vectorises
 * (restrict: dx never overlaps x or dy). */
static inline __attribute__((always_inline)) void max_halving_back_body(const float *restrict x, const float *restrict dy,
                                                                        int64_t planes, int64_t dd, int64_t h, int64_t w, int kd,
                                                                        float *restrict dx) {
    int64_t od = dd / kd, oh = h / 2, ow = w / 2;
    for (int64_t p = 0; p < planes; p++)
        for (int64_t z = 0; z < od; z++)
            for (int64_t r = 0; r < oh; r++) {
                const float *src[4], *g = dy + ((p * od + z) * oh + r) * ow;
                float *dst[4];
                for (int j = 0; j < 2 * kd; j++) { /* the block's rows in scan order: (slice j / 2, row j % 2) */
                    int64_t row = ((p * dd + kd * z + j / 2) * h + 2 * r + j % 2) * w;
                    src[j] = x + row;
                    dst[j] = dx + row;
                }
                for (int64_t c = 0; c < ow; c++) {
                    float m = src[0][2 * c], gv = g[c], gs[8];
#pragma GCC unroll 8
                    for (int j = 0; j < 4 * kd; j++) gs[j] = j ? 0.f : gv;
#pragma GCC unroll 8
                    for (int j = 1; j < 4 * kd; j++) { /* tap j: row j / 2, column j % 2 */
                        float v = src[j / 2][2 * c + j % 2];
                        int t = v > m;
                        m = t ? v : m;
#pragma GCC unroll 8
                        for (int q = 0; q < j; q++) gs[q] = t ? 0.f : gs[q];
                        gs[j] = t ? gv : 0.f;
                    }
#pragma GCC unroll 8
                    for (int j = 0; j < 4 * kd; j++) dst[j / 2][2 * c + j % 2] += gs[j];
                }
            }
}

VBS_CLONES(max2x2_back, (const float *x, const float *dy, int64_t planes, int64_t h, int64_t w, float *dx),
           max_halving_back_body(x, dy, planes, 1, h, w, 1, dx))
VBS_CLONES(max2x2x2_back, (const float *x, const float *dy, int64_t planes, int64_t d, int64_t h, int64_t w, float *dx),
           max_halving_back_body(x, dy, planes, d, h, w, 2, dx))

/* Flat index of the first maximum in scan order of the window at o, or -1
 * when the window holds no input element. */
static int64_t naive_argmax(const vbs_geo *g, const float *x, const int64_t *o) {
    int64_t best = -1;
    float mx = 0;
    for (int64_t kd = 0; kd < g->k[0]; kd++)
        for (int64_t kh = 0; kh < g->k[1]; kh++)
            for (int64_t kw = 0; kw < g->k[2]; kw++) {
                int64_t id = o[0] * g->s[0] - g->pb[0] + kd * g->d[0];
                int64_t ih = o[1] * g->s[1] - g->pb[1] + kh * g->d[1];
                int64_t iw = o[2] * g->s[2] - g->pb[2] + kw * g->d[2];
                if (id < 0 || id >= g->in[0] || ih < 0 || ih >= g->in[1] || iw < 0 || iw >= g->in[2]) continue;
                int64_t i = (id * g->in[1] + ih) * g->in[2] + iw;
                if (best < 0 || x[i] > mx) { mx = x[i]; best = i; }
            }
    return best;
}

/* The number of input elements in the window at o. */
static int64_t naive_count(const vbs_geo *g, const int64_t *o) {
    int64_t n = 1;
    for (int i = 0; i < 3; i++) {
        int64_t c = 0;
        for (int64_t k = 0; k < g->k[i]; k++) {
            int64_t at = o[i] * g->s[i] - g->pb[i] + k * g->d[i];
            c += at >= 0 && at < g->in[i];
        }
        n *= c;
    }
    return n;
}

/* The reference: for each input element, the sum in double over the windows
 * that contain it (output o holds input i at tap k when o*s - pad + k*d == i)
 * of what that window passes back to it. */
static void pool_backward_naive(const vbs_grad_args *gr, int is_max) {
    const vbs_op_args *a = gr->fwd;
    if (!gr->dx[0]) return;
    pool_geo pg;
    pool_geo_make(&pg, a);
    const vbs_geo *g = &pg.g;
    for (int64_t p = 0; p < pg.planes; p++) {
        const float *x = a->x[0] + p * g->in_sz, *dy = gr->dy[0] + p * g->out_sz;
        float *dx = gr->dx[0] + p * g->in_sz;
        for (int64_t i = 0; i < g->in_sz; i++) {
            int64_t at[3] = {i / (g->in[1] * g->in[2]), i / g->in[2] % g->in[1], i % g->in[2]};
            double acc = 0;
            for (int64_t kd = 0; kd < g->k[0]; kd++)
                for (int64_t kh = 0; kh < g->k[1]; kh++)
                    for (int64_t kw = 0; kw < g->k[2]; kw++) {
                        int64_t kk[3] = {kd, kh, kw}, o[3] = {0, 0, 0};
                        int inside = 1;
                        for (int ax = 0; ax < 3; ax++) {
                            int64_t num = at[ax] + g->pb[ax] - kk[ax] * g->d[ax];
                            if (num < 0 || num % g->s[ax] || num / g->s[ax] >= g->out[ax]) inside = 0;
                            else o[ax] = num / g->s[ax];
                        }
                        if (!inside) continue;
                        double gv = dy[(o[0] * g->out[1] + o[1]) * g->out[2] + o[2]];
                        if (is_max) acc += naive_argmax(g, x, o) == i ? gv : 0;
                        else acc += gv / (double)(a->node->a.win.count_include_pad ? count_with_pads(&pg, o) : naive_count(g, o));
                    }
            dx[i] = (float)(dx[i] + acc);
        }
    }
}

void vbs_max_pool_backward(const vbs_grad_args *g) {
    const vbs_op_args *a = g->fwd;
    const int64_t *d = a->xs[0]->d;
    if (!g->dx[0]) return;
    int nsp = halving_dims(a);
    if (nsp == 2) VBS_PICK(max2x2_back)(a->x[0], g->dy[0], d[0] * d[1], d[2], d[3], g->dx[0]);
    else if (nsp == 3) VBS_PICK(max2x2x2_back)(a->x[0], g->dy[0], d[0] * d[1], d[2], d[3], d[4], g->dx[0]);
    else max_backward(g);
}
void vbs_max_pool_backward_naive(const vbs_grad_args *g) { pool_backward_naive(g, 1); }
void vbs_average_pool_backward(const vbs_grad_args *g) {
    if (g->dx[0]) avg_backward(g);
}
void vbs_average_pool_backward_naive(const vbs_grad_args *g) { pool_backward_naive(g, 0); }

vbs_status vbs_global_average_pool_parse(vbs_node *n, const vbs_node_def *d, char *err) {
    return vbs_parse_no_attrs(n, d, err);
}

vbs_status vbs_global_average_pool_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) {
    if (in[0].ndim < 3)
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (GlobalAveragePool): input needs at least 3 dims", n->name);
    *out = in[0];
    for (int i = 2; i < out->ndim; i++) out->d[i] = 1;
    return VBS_OK;
}

void vbs_global_average_pool_forward(const vbs_op_args *a) {
    int64_t planes = a->xs[0]->d[0] * a->xs[0]->d[1], sz = vbs_shape_numel(a->xs[0]) / planes;
    for (int64_t p = 0; p < planes; p++) {
        double s = 0;
        for (int64_t i = 0; i < sz; i++) s += a->x[0][p * sz + i];
        a->y[0][p] = (float)(s / (double)sz);
    }
}

void vbs_global_average_pool_forward_naive(const vbs_op_args *a) { vbs_global_average_pool_forward(a); }

/* dx (planes x sz) += dy (planes) / sz: every element of a plane weighs the same. */
void vbs_global_average_pool_backward(const vbs_grad_args *g) {
    const vbs_op_args *a = g->fwd;
    if (!g->dx[0]) return;
    int64_t planes = a->xs[0]->d[0] * a->xs[0]->d[1], sz = vbs_shape_numel(a->xs[0]) / planes;
    for (int64_t p = 0; p < planes; p++) {
        float v = g->dy[0][p] / (float)sz, *dx = g->dx[0] + p * sz;
        for (int64_t i = 0; i < sz; i++) dx[i] += v;
    }
}

void vbs_global_average_pool_backward_naive(const vbs_grad_args *g) {
    const vbs_op_args *a = g->fwd;
    if (!g->dx[0]) return;
    int64_t planes = a->xs[0]->d[0] * a->xs[0]->d[1], sz = vbs_shape_numel(a->xs[0]) / planes;
    for (int64_t i = 0; i < planes * sz; i++) g->dx[0][i] = (float)(g->dx[0][i] + (double)g->dy[0][i / sz] / (double)sz);
}
