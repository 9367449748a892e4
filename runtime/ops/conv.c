/*
 * conv.c: ONNX Conv (1D/2D/3D; strides, pads, dilations, group, bias,
 * auto_pad). The fast kernel lowers to sgemm: 1x1 stride-1 unpadded
 * convolutions multiply the input directly; others unroll a tile of
 * output positions with im2col (kept small enough to stay in cache) and
 * multiply it. vbs_conv_forward_naive is the direct 7-loop reference.
 */
#include <string.h>

#include "geo.h"
#include "ops.h"

static const char *const known[] = {"kernel_shape", "strides", "pads", "dilations", "group", "auto_pad", NULL};

vbs_status vbs_conv_parse(vbs_node *n, const vbs_node_def *d, char *err) {
    vbs_status st = vbs_attr_check_known(d, known, err);
    return st ? st : vbs_window_parse(n, d, 1, err);
}

vbs_status vbs_conv_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) {
    const vbs_shape *x = &in[0], *w = &in[1];
    vbs_window_attr *a = &n->a.win;
    if (w->ndim != x->ndim)
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (Conv): weight has %d dims, input has %d", n->name, w->ndim, x->ndim);
    if (x->d[1] != w->d[1] * a->group)
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (Conv): input has %lld channels, weight expects %lld (x group %lld)",
                        n->name, (long long)x->d[1], (long long)w->d[1], (long long)a->group);
    if (w->d[0] % a->group)
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (Conv): %lld output channels not divisible by group %lld",
                        n->name, (long long)w->d[0], (long long)a->group);
    for (int i = 0; i < x->ndim - 2; i++) {
        if (a->has_kernel && a->kernel[i] != w->d[2 + i])
            return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (Conv): kernel_shape disagrees with the weight", n->name);
        a->kernel[i] = w->d[2 + i];
    }
    if (n->in[2] >= 0 && (in[2].ndim != 1 || in[2].d[0] != w->d[0]))
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (Conv): bias must have %lld values", n->name, (long long)w->d[0]);
    return vbs_window_out(n, x, out, w->d[0], err);
}

static int is_pointwise(const vbs_geo *g) {
    for (int i = 0; i < 3; i++)
        if (g->k[i] != 1 || g->s[i] != 1 || g->pb[i] != 0 || g->in[i] != g->out[i]) return 0;
    return 1;
}

#define TILE_FLOATS (1 << 17) /* im2col tile: 512 KiB */

static int64_t tile_cols(const vbs_geo *g, int64_t kc) {
    int64_t rows_out = g->out[2];
    int64_t cols = TILE_FLOATS / (kc > 0 ? kc : 1);
    if (cols < rows_out) cols = rows_out; /* at least one output row */
    cols = (cols / rows_out) * rows_out;  /* whole output rows */
    if (cols > g->out_sz) cols = g->out_sz;
    return cols;
}

size_t vbs_conv_work(const vbs_node *n, const vbs_shape *in, const vbs_shape *out) {
    if (vbs_winograd_fits(n, &in[0], &in[1])) return vbs_winograd_work(n, in, out);
    vbs_geo g;
    vbs_geo_make(&g, &n->a.win, &in[0], &out[0], n->a.win.kernel);
    if (is_pointwise(&g) && n->a.win.group == 1) return 0;
    int64_t kc = in[1].d[1] * g.k_sz;
    return (size_t)(kc * tile_cols(&g, kc));
}

/* Unrolls output positions [o0, o0+ncol) (whole rows) of channels c0..c0+cg of
 * one image x into col (cg*k_sz rows of ncol). */
static void im2col_tile(const vbs_geo *g, const float *x, int64_t cg, int64_t o0, int64_t ncol, float *col) {
    int64_t ow_n = g->out[2];
    for (int64_t c = 0; c < cg; c++) {
        const float *xc = x + c * g->in_sz;
        for (int64_t kd = 0; kd < g->k[0]; kd++)
            for (int64_t kh = 0; kh < g->k[1]; kh++)
                for (int64_t kw = 0; kw < g->k[2]; kw++) {
                    float *dst = col + (((c * g->k[0] + kd) * g->k[1] + kh) * g->k[2] + kw) * ncol;
                    int64_t off_w = kw * g->d[2] - g->pb[2];
                    /* valid ow: 0 <= ow*s + off_w < in */
                    int64_t lo = off_w >= 0 ? 0 : (-off_w + g->s[2] - 1) / g->s[2];
                    int64_t hi = g->in[2] - 1 - off_w < 0 ? -1 : (g->in[2] - 1 - off_w) / g->s[2];
                    if (hi > ow_n - 1) hi = ow_n - 1;
                    for (int64_t o = o0; o < o0 + ncol; o += ow_n, dst += ow_n) {
                        int64_t oh = (o / ow_n) % g->out[1], od = o / (ow_n * g->out[1]);
                        int64_t id = od * g->s[0] - g->pb[0] + kd * g->d[0];
                        int64_t ih = oh * g->s[1] - g->pb[1] + kh * g->d[1];
                        if (id < 0 || id >= g->in[0] || ih < 0 || ih >= g->in[1] || lo > hi) {
                            memset(dst, 0, sizeof(float) * (size_t)ow_n);
                            continue;
                        }
                        const float *src = xc + (id * g->in[1] + ih) * g->in[2] + off_w;
                        for (int64_t ow = 0; ow < lo; ow++) dst[ow] = 0.f;
                        if (g->s[2] == 1) memcpy(dst + lo, src + lo, sizeof(float) * (size_t)(hi - lo + 1));
                        else
                            for (int64_t ow = lo; ow <= hi; ow++) dst[ow] = src[ow * g->s[2]];
                        for (int64_t ow = hi + 1; ow < ow_n; ow++) dst[ow] = 0.f;
                    }
                }
    }
}

/* bias, then the fused Relu if the graph folded one in */
static void epilogue(float *y, const float *b, int relu, int64_t m, int64_t sz) {
    for (int64_t c = 0; c < m; c++) {
        float v = b ? b[c] : 0.f;
        float *p = y + c * sz;
        if (relu) for (int64_t i = 0; i < sz; i++) p[i] = p[i] + v > 0.f ? p[i] + v : 0.f;
        else if (b) for (int64_t i = 0; i < sz; i++) p[i] += v;
    }
}

void vbs_conv_forward(const vbs_op_args *a) {
    const vbs_shape *xs = a->xs[0], *ws = a->xs[1], *ys = a->ys[0];
    if (vbs_winograd_fits(a->node, xs, ws)) {
        vbs_winograd_forward(a);
        return;
    }
    vbs_geo g;
    vbs_geo_make(&g, &a->node->a.win, xs, ys, a->node->a.win.kernel);
    int64_t group = a->node->a.win.group, cin = xs->d[1], m = ws->d[0];
    int64_t cg = cin / group, mg = m / group, kc = cg * g.k_sz;
    for (int64_t n = 0; n < xs->d[0]; n++) {
        const float *x = a->x[0] + n * cin * g.in_sz;
        float *y = a->y[0] + n * m * g.out_sz;
        for (int64_t gi = 0; gi < group; gi++) {
            const float *w = a->x[1] + gi * mg * kc;
            float *yg = y + gi * mg * g.out_sz;
            const float *xg = x + gi * cg * g.in_sz;
            if (is_pointwise(&g)) {
                vbs_sgemm(0, 0, mg, g.out_sz, kc, w, kc, xg, g.out_sz, 0.f, yg, g.out_sz);
                continue;
            }
            int64_t tc = tile_cols(&g, kc);
            for (int64_t o0 = 0; o0 < g.out_sz; o0 += tc) {
                int64_t nc = g.out_sz - o0 < tc ? g.out_sz - o0 : tc;
                im2col_tile(&g, xg, cg, o0, nc, a->work);
                vbs_sgemm(0, 0, mg, nc, kc, w, kc, a->work, nc, 0.f, yg + o0, g.out_sz);
            }
        }
        epilogue(y, a->x[2], a->node->fused_relu, m, g.out_sz);
    }
}

void vbs_conv_forward_naive(const vbs_op_args *a) {
    const vbs_shape *xs = a->xs[0], *ws = a->xs[1], *ys = a->ys[0];
    vbs_geo g;
    vbs_geo_make(&g, &a->node->a.win, xs, ys, a->node->a.win.kernel);
    int64_t group = a->node->a.win.group, cin = xs->d[1], m = ws->d[0], cg = cin / group, mg = m / group;
    for (int64_t n = 0; n < xs->d[0]; n++)
        for (int64_t oc = 0; oc < m; oc++) {
            int64_t gi = oc / mg;
            for (int64_t od = 0; od < g.out[0]; od++)
                for (int64_t oh = 0; oh < g.out[1]; oh++)
                    for (int64_t ow = 0; ow < g.out[2]; ow++) {
                        double acc = a->x[2] ? a->x[2][oc] : 0.0;
                        for (int64_t c = 0; c < cg; c++)
                            for (int64_t kd = 0; kd < g.k[0]; kd++)
                                for (int64_t kh = 0; kh < g.k[1]; kh++)
                                    for (int64_t kw = 0; kw < g.k[2]; kw++) {
                                        int64_t id = od * g.s[0] - g.pb[0] + kd * g.d[0];
                                        int64_t ih = oh * g.s[1] - g.pb[1] + kh * g.d[1];
                                        int64_t iw = ow * g.s[2] - g.pb[2] + kw * g.d[2];
                                        if (id < 0 || id >= g.in[0] || ih < 0 || ih >= g.in[1] || iw < 0 || iw >= g.in[2])
                                            continue;
                                        float xv = a->x[0][((n * cin + gi * cg + c) * g.in[0] + id) * g.in[1] * g.in[2] +
                                                           ih * g.in[2] + iw];
                                        float wv = a->x[1][(((oc * cg + c) * g.k[0] + kd) * g.k[1] + kh) * g.k[2] + kw];
                                        acc += (double)xv * wv;
                                    }
                        if (a->node->fused_relu && acc < 0) acc = 0;
                        a->y[0][((n * m + oc) * g.out[0] + od) * g.out[1] * g.out[2] + oh * g.out[2] + ow] = (float)acc;
                    }
        }
}

double vbs_conv_flops(const vbs_node *n, const vbs_shape *in, const vbs_shape *out) {
    int64_t kc = in[1].d[1];
    for (int i = 2; i < in[1].ndim; i++) kc *= in[1].d[i];
    return 2.0 * (double)vbs_shape_numel(&out[0]) * (double)kc;
    (void)n;
}

