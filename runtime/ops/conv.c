/*
 * conv.c: ONNX Conv (1D/2D/3D; strides, pads, dilations, group, bias,
 * auto_pad), forward and backward. The fast kernels lower to sgemm: 1x1
 * stride-1 unpadded convolutions multiply the input directly; others
 * unroll a tile of output positions with im2col (kept small enough to stay
 * in cache) and multiply it; the backward's dX goes back through col2im.
 * 2D 3x3 stride-1 ungrouped layers go to conv_winograd.c where it pays
 * (from about 15x15 outputs up).
 * vbs_conv_forward_naive and vbs_conv_backward_naive are the direct-loop
 * references. Not here: a fused Relu's gradient (the executor masks dY).
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

#define TILE_FLOATS (1 << 17) /* im2col tile: 512 KiB */

int64_t vbs_im2col_cols(const vbs_geo *g, int64_t kc, int64_t tile_floats) {
    int64_t rows_out = g->out[2];
    int64_t cols = tile_floats / (kc > 0 ? kc : 1);
    if (cols < rows_out) cols = rows_out; /* at least one output row */
    cols = (cols / rows_out) * rows_out;  /* whole output rows */
    if (cols > g->out_sz) cols = g->out_sz;
    return cols;
}

/* The forward's im2col tile: TILE_FLOATS, but a 3x3 layer too small for
 * Winograd takes its image whole (up to the backward's 4 MiB), so that its
 * weights are packed once, not once per few rows. */
static int64_t forward_tile(const vbs_node *n, const vbs_shape *x, const vbs_shape *w) {
    return vbs_winograd_fits(n, x, w) ? VBS_BWD_TILE_FLOATS : TILE_FLOATS;
}

size_t vbs_conv_work(const vbs_node *n, const vbs_shape *in, const vbs_shape *out) {
    if (vbs_winograd_forward_pays(n, &in[0], &in[1], &out[0])) return vbs_winograd_work(n, in, out);
    vbs_geo g;
    vbs_geo_make(&g, &n->a.win, &in[0], &out[0], n->a.win.kernel);
    if (vbs_geo_pointwise(&g) && n->a.win.group == 1) return 0;
    int64_t kc = in[1].d[1] * g.k_sz;
    return (size_t)(kc * vbs_im2col_cols(&g, kc, forward_tile(n, &in[0], &in[1])));
}

/* Between the image x (cg channels of in_sz) and the columns col (cg*k_sz
 * rows of ncol output positions from o0, whole output rows): im2col copies
 * x into col (zeros where the window reads padding); its adjoint col2im
 * (back = 1) adds col back into x. One body for both so the two index the
 * same way; the output row (od, oh) is stepped, not divided out per row. */
static inline __attribute__((always_inline)) void tile_body(const vbs_geo *g, float *x, int64_t cg, int64_t o0, int64_t ncol, float *col,
                                                            int back) {
    int64_t ow_n = g->out[2];
    for (int64_t c = 0; c < cg; c++) {
        float *xc = x + c * g->in_sz;
        for (int64_t kd = 0; kd < g->k[0]; kd++)
            for (int64_t kh = 0; kh < g->k[1]; kh++)
                for (int64_t kw = 0; kw < g->k[2]; kw++) {
                    float *cr = col + (((c * g->k[0] + kd) * g->k[1] + kh) * g->k[2] + kw) * ncol;
                    int64_t off_w = kw * g->d[2] - g->pb[2];
                    /* valid ow: 0 <= ow*s + off_w < in */
                    int64_t lo = off_w >= 0 ? 0 : (-off_w + g->s[2] - 1) / g->s[2];
                    int64_t hi = g->in[2] - 1 - off_w < 0 ? -1 : (g->in[2] - 1 - off_w) / g->s[2];
                    if (hi > ow_n - 1) hi = ow_n - 1;
                    int64_t row = o0 / ow_n, oh = row % g->out[1], od = row / g->out[1];
                    for (int64_t o = o0; o < o0 + ncol; o += ow_n, cr += ow_n) {
                        int64_t id = od * g->s[0] - g->pb[0] + kd * g->d[0];
                        int64_t ih = oh * g->s[1] - g->pb[1] + kh * g->d[1];
                        if (++oh == g->out[1]) { oh = 0; od++; }
                        if (id < 0 || id >= g->in[0] || ih < 0 || ih >= g->in[1] || lo > hi) {
                            if (!back) memset(cr, 0, sizeof(float) * (size_t)ow_n);
                            continue;
                        }
                        float *xr = xc + (id * g->in[1] + ih) * g->in[2] + off_w;
                        if (back) {
                            if (g->s[2] == 1)
                                for (int64_t ow = lo; ow <= hi; ow++) xr[ow] += cr[ow];
                            else
                                for (int64_t ow = lo; ow <= hi; ow++) xr[ow * g->s[2]] += cr[ow];
                            continue;
                        }
                        for (int64_t ow = 0; ow < lo; ow++) cr[ow] = 0.f;
                        if (g->s[2] == 1) memcpy(cr + lo, xr + lo, sizeof(float) * (size_t)(hi - lo + 1));
                        else
                            for (int64_t ow = lo; ow <= hi; ow++) cr[ow] = xr[ow * g->s[2]];
                        for (int64_t ow = hi + 1; ow < ow_n; ow++) cr[ow] = 0.f;
                    }
                }
    }
}

VBS_CLONES(im2col, (const vbs_geo *g, const float *x, int64_t cg, int64_t o0, int64_t ncol, float *col),
           tile_body(g, (float *)x, cg, o0, ncol, col, 0)) /* reads x only */
VBS_CLONES(col2im, (const vbs_geo *g, const float *col, int64_t cg, int64_t o0, int64_t ncol, float *dx),
           tile_body(g, dx, cg, o0, ncol, (float *)col, 1)) /* reads col only */

void vbs_im2col_tile(const vbs_geo *g, const float *x, int64_t cg, int64_t o0, int64_t ncol, float *col) {
    VBS_PICK(im2col)(g, x, cg, o0, ncol, col);
}

/* Adds col into dx (cg x in_sz): the adjoint of vbs_im2col_tile. */
static void col2im_tile(const vbs_geo *g, const float *col, int64_t cg, int64_t o0, int64_t ncol, float *dx) {
    VBS_PICK(col2im)(g, col, cg, o0, ncol, dx);
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
    if (vbs_winograd_forward_pays(a->node, xs, ws, ys)) {
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
            if (vbs_geo_pointwise(&g)) {
                vbs_sgemm(0, 0, mg, g.out_sz, kc, w, kc, xg, g.out_sz, 0.f, yg, g.out_sz);
                continue;
            }
            int64_t tc = vbs_im2col_cols(&g, kc, forward_tile(a->node, xs, ws));
            for (int64_t o0 = 0; o0 < g.out_sz; o0 += tc) {
                int64_t nc = g.out_sz - o0 < tc ? g.out_sz - o0 : tc;
                vbs_im2col_tile(&g, xg, cg, o0, nc, a->work);
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

/* ---- backward -------------------------------------------------------------
 * dBias = row sums of dY; dW += dY (mg x P) col(X)^T (P x kc) and
 * dX += col2im(W^T (kc x mg) dY (mg x P)) (dX = where fresh says it holds
 * nothing yet), both over im2col tiles of
 * VBS_BWD_TILE_FLOATS (one scratch tile, used for X's columns and then for
 * dX's); pointwise layers multiply X and dY directly. Each of dW and dX of
 * a Winograd-shaped layer takes Winograd where vbs_winograd_backward_pays. */

size_t vbs_conv_backward_work(const vbs_node *n, const vbs_shape *in, const vbs_shape *out) {
    vbs_geo g;
    vbs_geo_make(&g, &n->a.win, &in[0], &out[0], n->a.win.kernel);
    int64_t kc = in[1].d[1] * g.k_sz;
    size_t need = 0;
    for (int data = 0; data < 2; data++) {
        size_t w = vbs_winograd_backward_pays(n, in, out, data) ? vbs_winograd_backward_work(in, out, data)
                   : vbs_geo_pointwise(&g)                     ? 0
                                                               : (size_t)(kc * vbs_im2col_cols(&g, kc, VBS_BWD_TILE_FLOATS));
        if (w > need) need = w;
    }
    return need;
}

/* dX (want_dx) and dW (want_dw) through im2col tiles and GEMM */
static void backward_gemm(const vbs_grad_args *gr, int want_dx, int want_dw) {
    const vbs_op_args *a = gr->fwd;
    const vbs_shape *xs = a->xs[0], *ws = a->xs[1];
    vbs_geo g;
    vbs_geo_make(&g, &a->node->a.win, xs, a->ys[0], a->node->a.win.kernel);
    int64_t group = a->node->a.win.group, cin = xs->d[1], m = ws->d[0];
    int64_t cg = cin / group, mg = m / group, kc = cg * g.k_sz, tc = vbs_im2col_cols(&g, kc, VBS_BWD_TILE_FLOATS);
    float *col = gr->work;
    int fresh = want_dx && (gr->fresh & 1); /* dX holds nothing yet: the pointwise GEMM writes it, col2im needs zeros */
    if (fresh && !vbs_geo_pointwise(&g)) memset(gr->dx[0], 0, sizeof(float) * (size_t)vbs_shape_numel(xs));
    for (int64_t n = 0; n < xs->d[0]; n++)
        for (int64_t gi = 0; gi < group; gi++) {
            const float *x = a->x[0] + (n * cin + gi * cg) * g.in_sz, *w = a->x[1] + gi * mg * kc;
            const float *dy = gr->dy[0] + (n * m + gi * mg) * g.out_sz;
            float *dw = want_dw ? gr->dx[1] + gi * mg * kc : NULL;
            float *dx = want_dx ? gr->dx[0] + (n * cin + gi * cg) * g.in_sz : NULL;
            if (vbs_geo_pointwise(&g)) {
                if (dw) vbs_sgemm(0, 1, mg, kc, g.out_sz, dy, g.out_sz, x, g.out_sz, 1.f, dw, kc);
                if (dx) vbs_sgemm(1, 0, kc, g.out_sz, mg, w, kc, dy, g.out_sz, fresh ? 0.f : 1.f, dx, g.out_sz);
                continue;
            }
            for (int64_t o0 = 0; o0 < g.out_sz; o0 += tc) {
                int64_t nc = g.out_sz - o0 < tc ? g.out_sz - o0 : tc;
                if (dw) {
                    vbs_im2col_tile(&g, x, cg, o0, nc, col);
                    vbs_sgemm(0, 1, mg, kc, nc, dy + o0, g.out_sz, col, nc, 1.f, dw, kc);
                }
                if (dx) {
                    vbs_sgemm(1, 0, kc, nc, mg, w, kc, dy + o0, g.out_sz, 0.f, col, nc);
                    col2im_tile(&g, col, cg, o0, nc, dx);
                }
            }
        }
}

VBS_CLONES(channel_sums, (const float *dy, int64_t n, int64_t m, int64_t sz, float *db), vbs_channel_sums_add(dy, n, m, sz, db))

void vbs_conv_backward(const vbs_grad_args *gr) {
    const vbs_op_args *a = gr->fwd;
    const vbs_shape *ys = a->ys[0];
    if (gr->dx[2]) VBS_PICK(channel_sums)(gr->dy[0], ys->d[0], ys->d[1], vbs_shape_numel(ys) / (ys->d[0] * ys->d[1]), gr->dx[2]);
    int want_dx = gr->dx[0] != NULL, want_dw = gr->dx[1] != NULL;
    const vbs_shape in[2] = {*a->xs[0], *a->xs[1]};
    if (want_dw && vbs_winograd_backward_pays(a->node, in, ys, 0)) {
        vbs_winograd_backward_filter(gr);
        want_dw = 0;
    }
    if (want_dx && vbs_winograd_backward_pays(a->node, in, ys, 1)) {
        vbs_winograd_backward_data(gr);
        want_dx = 0;
    }
    if (want_dx || want_dw) backward_gemm(gr, want_dx, want_dw);
}

/* Direct loops in double. Each gradient element is one sum over the terms
 * of the forward's relation i = o * s - pb + k * d that involve it: dW over
 * (n, o) for a fixed (oc, c, k); dX over (oc, k) with o solved from i. */
void vbs_conv_backward_naive(const vbs_grad_args *gr) {
    const vbs_op_args *a = gr->fwd;
    const vbs_shape *xs = a->xs[0], *ws = a->xs[1], *ys = a->ys[0];
    vbs_geo g;
    vbs_geo_make(&g, &a->node->a.win, xs, ys, a->node->a.win.kernel);
    int64_t group = a->node->a.win.group, cin = xs->d[1], m = ws->d[0], cg = cin / group, mg = m / group, nb = xs->d[0];
    const float *x = a->x[0], *w = a->x[1], *dy = gr->dy[0];
#define DY(n, oc, od, oh, ow) dy[((((n) * m + (oc)) * g.out[0] + (od)) * g.out[1] + (oh)) * g.out[2] + (ow)]
    if (gr->dx[2]) vbs_naive_channel_sums_add(dy, nb, m, g.out_sz, gr->dx[2]);
    if (gr->dx[1])
        for (int64_t oc = 0; oc < m; oc++)
            for (int64_t c = 0; c < cg; c++)
                for (int64_t kd = 0; kd < g.k[0]; kd++)
                    for (int64_t kh = 0; kh < g.k[1]; kh++)
                        for (int64_t kw = 0; kw < g.k[2]; kw++)
                            gr->dx[1][(((oc * cg + c) * g.k[0] + kd) * g.k[1] + kh) * g.k[2] + kw] +=
                                (float)vbs_naive_window_dot(&g, kd, kh, kw, dy + oc * g.out_sz, m * g.out_sz, x + (oc / mg * cg + c) * g.in_sz,
                                                            cin * g.in_sz, nb);
    if (gr->dx[0])
        for (int64_t n = 0; n < nb; n++)
            for (int64_t ic = 0; ic < cin; ic++)
                for (int64_t id = 0; id < g.in[0]; id++)
                    for (int64_t ih = 0; ih < g.in[1]; ih++)
                        for (int64_t iw = 0; iw < g.in[2]; iw++) {
                            double s = 0;
                            int64_t gi = ic / cg, c = ic % cg;
                            for (int64_t oc = gi * mg; oc < (gi + 1) * mg; oc++)
                                for (int64_t kd = 0; kd < g.k[0]; kd++)
                                    for (int64_t kh = 0; kh < g.k[1]; kh++)
                                        for (int64_t kw = 0; kw < g.k[2]; kw++) {
                                            /* o * s = i + pb - k * d, when that is a whole output position */
                                            int64_t td = id + g.pb[0] - kd * g.d[0], th = ih + g.pb[1] - kh * g.d[1];
                                            int64_t tw = iw + g.pb[2] - kw * g.d[2];
                                            if (td < 0 || th < 0 || tw < 0 || td % g.s[0] || th % g.s[1] || tw % g.s[2]) continue;
                                            int64_t od = td / g.s[0], oh = th / g.s[1], ow = tw / g.s[2];
                                            if (od >= g.out[0] || oh >= g.out[1] || ow >= g.out[2]) continue;
                                            s += (double)DY(n, oc, od, oh, ow) *
                                                 w[(((oc * cg + c) * g.k[0] + kd) * g.k[1] + kh) * g.k[2] + kw];
                                        }
                            gr->dx[0][(((n * cin + ic) * g.in[0] + id) * g.in[1] + ih) * g.in[2] + iw] += (float)s;
                        }
#undef DY
}
