/*
 * pool.c: ONNX MaxPool, AveragePool (1D/2D/3D; pads, strides, dilations
 * for MaxPool, ceil_mode, count_include_pad, auto_pad) and
 * GlobalAveragePool. Pooling is memory-bound and its direct loop is
 * already the simplest form, so the fast and naive kernels coincide; the
 * tests check them against hand-computed windows instead.
 */
#include <float.h>
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

static void pool(const vbs_op_args *a, int is_max) {
    const vbs_window_attr *w = &a->node->a.win;
    vbs_geo g;
    vbs_geo_make(&g, w, a->xs[0], a->ys[0], NULL);
    int nsp = a->xs[0]->ndim - 2, off = 3 - nsp;
    int64_t pe[3] = {0, 0, 0};
    for (int i = 0; i < nsp; i++) pe[off + i] = w->pad[VBS_MAX_SPATIAL + i];
    int64_t planes = a->xs[0]->d[0] * a->xs[0]->d[1];
    for (int64_t p = 0; p < planes; p++) {
        const float *x = a->x[0] + p * g.in_sz;
        float *y = a->y[0] + p * g.out_sz;
        for (int64_t od = 0; od < g.out[0]; od++)
            for (int64_t oh = 0; oh < g.out[1]; oh++)
                for (int64_t ow = 0; ow < g.out[2]; ow++) {
                    int64_t o[3] = {od, oh, ow}, cnt_pad = 1;
                    /* window extent clipped to input+pads: the count_include_pad divisor */
                    for (int i = 0; i < 3; i++) {
                        int64_t st = o[i] * g.s[i] - g.pb[i];
                        int64_t en = st + (g.k[i] - 1) * g.d[i] + 1;
                        if (en > g.in[i] + pe[i]) en = g.in[i] + pe[i];
                        cnt_pad *= (en - st + g.d[i] - 1) / g.d[i];
                    }
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

/* The U-Net down-sampling layer: 2D, 2x2, stride 2, no padding. */
static int is_2x2(const vbs_op_args *a) {
    const vbs_window_attr *w = &a->node->a.win;
    return a->xs[0]->ndim == 4 && w->kernel[0] == 2 && w->kernel[1] == 2 && w->stride[0] == 2 && w->stride[1] == 2 &&
           w->dil[0] == 1 && w->dil[1] == 1 && !w->pad[0] && !w->pad[1] && !w->pad[VBS_MAX_SPATIAL] && !w->pad[VBS_MAX_SPATIAL + 1] &&
           a->ys[0]->d[2] == a->xs[0]->d[2] / 2 && a->ys[0]->d[3] == a->xs[0]->d[3] / 2;
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
    if (is_2x2(a)) {
        VBS_PICK(max2x2)(a->x[0], a->xs[0]->d[0] * a->xs[0]->d[1], a->xs[0]->d[2], a->xs[0]->d[3], a->y[0]);
        return;
    }
    pool(a, 1);
}
void vbs_max_pool_forward_naive(const vbs_op_args *a) { pool(a, 1); }
void vbs_average_pool_forward(const vbs_op_args *a) { pool(a, 0); }
void vbs_average_pool_forward_naive(const vbs_op_args *a) { pool(a, 0); }

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
