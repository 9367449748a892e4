/*
 * softmax.c: ONNX Softmax (opset 13: one axis, default -1), over any axis.
 * The fast kernel walks the reduced axis with the inner positions as the
 * vectorised loop, so axis=1 over NCHW channels stays contiguous; the
 * naive kernel handles one (outer, inner) column at a time in double.
 *
 * Backward over each softmax group (the reduced axis, or with flatten=1
 * everything from the axis on): dx = y * (dy - sum(dy * y)). The fast
 * kernel tiles the inner positions like the forward, or, when the group
 * is contiguous (inner == 1), takes the dot product along it; the naive one
 * recomputes y from x in double, so it does not lean on the forward's y.
 */
#include <math.h>

#include "ops.h"

vbs_status vbs_softmax_parse(vbs_node *n, const vbs_node_def *d, char *err) {
    static const char *const known[] = {"axis", "flatten", NULL};
    vbs_status st = vbs_attr_check_known(d, known, err);
    int64_t flat;
    if (!st) st = vbs_attr_int(d, "flatten", 0, &flat, err);
    if (!st) st = vbs_attr_int(d, "axis", flat ? 1 : -1, &n->a.softmax.axis, err);
    if (!st) n->a.softmax.flatten = flat != 0;
    return st;
}

vbs_status vbs_softmax_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) {
    int64_t ax = n->a.softmax.axis;
    if (ax < -in[0].ndim || ax >= in[0].ndim)
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (Softmax): axis %lld out of range for %d dims", n->name, (long long)ax, in[0].ndim);
    if (n->a.softmax.flatten && in[0].ndim == 0)
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (Softmax): a scalar input", n->name);
    *out = in[0];
    return VBS_OK;
}

static void split(const vbs_op_args *a, int64_t *outer, int64_t *len, int64_t *inner) {
    const vbs_shape *s = a->xs[0];
    int64_t axis = a->node->a.softmax.axis;
    int ax = (int)(axis < 0 ? axis + s->ndim : axis);
    *outer = *inner = *len = 1;
    for (int i = 0; i < ax; i++) *outer *= s->d[i];
    if (a->node->a.softmax.flatten)
        for (int i = ax; i < s->ndim; i++) *len *= s->d[i];
    else {
        for (int i = ax + 1; i < s->ndim; i++) *inner *= s->d[i];
        *len = s->d[ax];
    }
}

void vbs_softmax_forward(const vbs_op_args *a) {
    int64_t outer, len, inner;
    split(a, &outer, &len, &inner);
    enum { T = 256 };
    float mx[T], sum[T];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i0 = 0; i0 < inner; i0 += T) {
            int64_t nt = inner - i0 < T ? inner - i0 : T;
            const float *x = a->x[0] + o * len * inner + i0;
            float *y = a->y[0] + o * len * inner + i0;
            for (int64_t t = 0; t < nt; t++) { mx[t] = x[t]; sum[t] = 0.f; }
            for (int64_t k = 1; k < len; k++)
                for (int64_t t = 0; t < nt; t++) mx[t] = fmaxf(mx[t], x[k * inner + t]);
            for (int64_t k = 0; k < len; k++)
                for (int64_t t = 0; t < nt; t++) {
                    float e = expf(x[k * inner + t] - mx[t]);
                    y[k * inner + t] = e;
                    sum[t] += e;
                }
            for (int64_t t = 0; t < nt; t++) sum[t] = 1.f / sum[t];
            for (int64_t k = 0; k < len; k++)
                for (int64_t t = 0; t < nt; t++) y[k * inner + t] *= sum[t];
        }
}

/* One softmax group (len values inner apart) in double: its max and the
 * sum of exp(x - max). */
static void group_stats(const float *x, int64_t len, int64_t inner, double *mx, double *z) {
    *mx = x[0];
    *z = 0;
    for (int64_t k = 1; k < len; k++) *mx = x[k * inner] > *mx ? x[k * inner] : *mx;
    for (int64_t k = 0; k < len; k++) *z += exp(x[k * inner] - *mx);
}

void vbs_softmax_forward_naive(const vbs_op_args *a) {
    int64_t outer, len, inner;
    split(a, &outer, &len, &inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const float *x = a->x[0] + o * len * inner + i;
            double mx, s;
            group_stats(x, len, inner, &mx, &s);
            for (int64_t k = 0; k < len; k++) a->y[0][o * len * inner + i + k * inner] = (float)(exp(x[k * inner] - mx) / s);
        }
}

static inline __attribute__((always_inline)) void softmax_bw_body(const float *y, const float *dy, float *restrict dx,
                                                                  int64_t outer, int64_t len, int64_t inner) {
    if (inner == 1) {
        for (int64_t o = 0; o < outer; o++) {
            const float *py = y + o * len, *pg = dy + o * len;
            float *pd = dx + o * len;
            float s = vbs_grad_dot(pg, py, len);
            for (int64_t k = 0; k < len; k++) pd[k] += py[k] * (pg[k] - s);
        }
        return;
    }
    enum { T = 256 };
    float sum[T];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i0 = 0; i0 < inner; i0 += T) {
            int64_t nt = inner - i0 < T ? inner - i0 : T, off = o * len * inner + i0;
            const float *py = y + off, *pg = dy + off;
            float *pd = dx + off;
            for (int64_t t = 0; t < nt; t++) sum[t] = 0.f;
            for (int64_t k = 0; k < len; k++)
                for (int64_t t = 0; t < nt; t++) sum[t] += pg[k * inner + t] * py[k * inner + t];
            for (int64_t k = 0; k < len; k++)
                for (int64_t t = 0; t < nt; t++) pd[k * inner + t] += py[k * inner + t] * (pg[k * inner + t] - sum[t]);
        }
}

VBS_CLONES(softmax_bw, (const float *y, const float *dy, float *restrict dx, int64_t outer, int64_t len, int64_t inner),
           softmax_bw_body(y, dy, dx, outer, len, inner))

void vbs_softmax_backward(const vbs_grad_args *g) {
    if (!g->dx[0]) return;
    int64_t outer, len, inner;
    split(g->fwd, &outer, &len, &inner);
    VBS_PICK(softmax_bw)(g->fwd->y[0], g->dy[0], g->dx[0], outer, len, inner);
}

void vbs_softmax_backward_naive(const vbs_grad_args *g) {
    const vbs_op_args *a = g->fwd;
    if (!g->dx[0]) return;
    int64_t outer, len, inner;
    split(a, &outer, &len, &inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            int64_t at = o * len * inner + i;
            const float *x = a->x[0] + at, *dy = g->dy[0] + at;
            double mx, z, s = 0;
            group_stats(x, len, inner, &mx, &z);
            for (int64_t k = 0; k < len; k++) s += dy[k * inner] * (exp(x[k * inner] - mx) / z);
            for (int64_t k = 0; k < len; k++) {
                double p = exp(x[k * inner] - mx) / z;
                g->dx[0][at + k * inner] += (float)(p * (dy[k * inner] - s));
            }
        }
}
