/*
 * conv_transpose.c: ONNX ConvTranspose (1D/2D/3D; strides, pads,
 * dilations, output_padding, output_shape, group, bias, auto_pad),
 * forward and backward. Fast kernel: one sgemm per group gives, for every
 * input position, the kernel-sized patch it contributes (col = W^T X), then
 * col2im adds the patches into the output. Its backward is a convolution:
 * conv.c's im2col of dY feeds the GEMMs for dX and dW. The naive forward
 * scatters input by input; the naive backward gathers in double.
 */
#include <string.h>

#include "geo.h"
#include "ops.h"

static const char *const known[] = {"kernel_shape", "strides", "pads", "dilations", "group", "auto_pad",
                                    "output_padding", "output_shape", NULL};

vbs_status vbs_conv_transpose_parse(vbs_node *n, const vbs_node_def *d, char *err) {
    vbs_status st = vbs_attr_check_known(d, known, err);
    return st ? st : vbs_window_parse(n, d, 1, err);
}

vbs_status vbs_conv_transpose_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) {
    const vbs_shape *x = &in[0], *w = &in[1];
    vbs_window_attr *a = &n->a.win;
    int nsp = x->ndim - 2;
    if (nsp < 1 || nsp > 3 || w->ndim != x->ndim)
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (ConvTranspose): input has %d dims and weight %d; expected equal, 3 to 5",
                        n->name, x->ndim, w->ndim);
    if (a->nsp && a->nsp != nsp)
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (ConvTranspose): attributes are %dD but the input is %dD", n->name, a->nsp, nsp);
    if (x->d[1] != w->d[0] || w->d[0] % a->group)
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (ConvTranspose): input has %lld channels, weight expects %lld (group %lld)",
                        n->name, (long long)x->d[1], (long long)w->d[0], (long long)a->group);
    int64_t m = w->d[1] * a->group;
    if (n->in[2] >= 0 && (in[2].ndim != 1 || in[2].d[0] != m))
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (ConvTranspose): bias must have %lld values", n->name, (long long)m);
    out->ndim = x->ndim;
    out->d[0] = x->d[0];
    out->d[1] = m;
    for (int i = 0; i < nsp; i++) {
        if (a->has_kernel && a->kernel[i] != w->d[2 + i])
            return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (ConvTranspose): kernel_shape disagrees with the weight", n->name);
        a->kernel[i] = w->d[2 + i];
        int64_t s = a->stride[i], keff = (a->kernel[i] - 1) * a->dil[i] + 1, op = a->out_pad[i];
        int64_t full = s * (x->d[2 + i] - 1) + op + keff, o;
        int64_t *pb = &a->pad[i], *pe = &a->pad[VBS_MAX_SPATIAL + i];
        if (a->has_out_shape || a->auto_pad == VBS_AUTOPAD_SAME_UPPER || a->auto_pad == VBS_AUTOPAD_SAME_LOWER) {
            o = a->has_out_shape ? a->out_shape[i] : x->d[2 + i] * s;
            /* the spec's total padding; negative when output_shape asks for more
             * than the kernel reaches: the extra outputs hold only the bias */
            int64_t total = full - o, half = total >= 0 ? total / 2 : -((-total + 1) / 2); /* floor(total / 2) */
            if (o <= 0 || o > full + (1 << 20))
                return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (ConvTranspose): output_shape %lld out of range on axis %d",
                                n->name, (long long)o, 2 + i);
            if (a->auto_pad == VBS_AUTOPAD_SAME_UPPER) { *pb = half; *pe = total - half; }
            else { *pb = total - half; *pe = half; }
            if (*pb < 0)
                return vbs_fail(err, VBS_ERR_UNSUPPORTED, "node '%s' (ConvTranspose): output_shape %lld needs a negative begin pad on axis %d",
                                n->name, (long long)o, 2 + i);
        } else {
            if (a->auto_pad == VBS_AUTOPAD_VALID) *pb = *pe = 0;
            o = full - *pb - *pe;
        }
        if (o <= 0)
            return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (ConvTranspose): output size %lld on axis %d", n->name, (long long)o, 2 + i);
        out->d[2 + i] = o;
    }
    a->nsp = nsp;
    return VBS_OK;
}

size_t vbs_conv_transpose_work(const vbs_node *n, const vbs_shape *in, const vbs_shape *out) {
    vbs_geo g; /* in = small side (x), out = y */
    vbs_geo_make(&g, &n->a.win, &in[0], &out[0], n->a.win.kernel);
    int64_t mg = in[1].d[1], cg = in[0].d[1] / n->a.win.group;
    return (size_t)(mg * g.k_sz * g.in_sz + mg * g.k_sz * cg); /* col, then the transposed weights */
}

/* col (mg*k x in) = W_g^T x_g: W_g is (cg, mg*k) as stored, so transpose it
 * into scratch once and use the small-matrix GEMM */
static void columns(const float *w, const float *x, int64_t cg, int64_t mk, int64_t in_sz, float *wt, float *col) {
    vbs_transpose(w, cg, mk, wt);
    vbs_gemm(mk, in_sz, cg, wt, x, col);
}

/* Adds col (mg*k_sz rows of in_sz) into y (mg channels of out_sz). */
static void col2im(const vbs_geo *g, const float *col, int64_t mg, float *y) {
    for (int64_t c = 0; c < mg; c++)
        for (int64_t kd = 0; kd < g->k[0]; kd++)
            for (int64_t kh = 0; kh < g->k[1]; kh++)
                for (int64_t kw = 0; kw < g->k[2]; kw++) {
                    const float *src = col + (((c * g->k[0] + kd) * g->k[1] + kh) * g->k[2] + kw) * g->in_sz;
                    float *yc = y + c * g->out_sz;
                    for (int64_t id = 0; id < g->in[0]; id++) {
                        int64_t od = id * g->s[0] - g->pb[0] + kd * g->d[0];
                        if (od < 0 || od >= g->out[0]) continue;
                        for (int64_t ih = 0; ih < g->in[1]; ih++) {
                            int64_t oh = ih * g->s[1] - g->pb[1] + kh * g->d[1];
                            if (oh < 0 || oh >= g->out[1]) continue;
                            const float *s = src + (id * g->in[1] + ih) * g->in[2];
                            float *dst = yc + (od * g->out[1] + oh) * g->out[2];
                            int64_t off = kw * g->d[2] - g->pb[2];
                            for (int64_t iw = 0; iw < g->in[2]; iw++) {
                                int64_t ow = iw * g->s[2] + off;
                                if (ow >= 0 && ow < g->out[2]) dst[ow] += s[iw];
                            }
                        }
                    }
                }
}

static void init_bias(float *y, const float *b, int64_t m, int64_t sz) {
    for (int64_t c = 0; c < m; c++) {
        float v = b ? b[c] : 0.f;
        for (int64_t i = 0; i < sz; i++) y[c * sz + i] = v;
    }
}

/* The U-Net up-sampling layer: kernel = stride, no padding, no dilation.
 * Patches do not overlap, so each output pixel is one column entry plus the
 * bias: written once, no accumulation, no zeroing pass. */
static int is_blocky(const vbs_geo *g) {
    for (int i = 0; i < 3; i++)
        if (g->k[i] != g->s[i] || g->d[i] != 1 || g->pb[i] != 0 || g->out[i] != g->in[i] * g->s[i]) return 0;
    return 1;
}

static void col2im_blocky(const vbs_geo *g, const float *col, int64_t mg, const float *bias, float *y) {
    int64_t kw_n = g->k[2];
    for (int64_t c = 0; c < mg; c++) {
        float b = bias ? bias[c] : 0.f;
        for (int64_t kd = 0; kd < g->k[0]; kd++)
            for (int64_t kh = 0; kh < g->k[1]; kh++) {
                const float *src = col + ((c * g->k[0] + kd) * g->k[1] + kh) * kw_n * g->in_sz;
                for (int64_t id = 0; id < g->in[0]; id++)
                    for (int64_t ih = 0; ih < g->in[1]; ih++) {
                        const float *s = src + (id * g->in[1] + ih) * g->in[2];
                        float *dst = y + c * g->out_sz + ((id * g->s[0] + kd) * g->out[1] + ih * g->s[1] + kh) * g->out[2];
                        if (kw_n == 2) /* the 2x up-sampling case: interleave two column planes */
                            for (int64_t iw = 0; iw < g->in[2]; iw++) {
                                dst[2 * iw] = s[iw] + b;
                                dst[2 * iw + 1] = s[g->in_sz + iw] + b;
                            }
                        else
                            for (int64_t kw = 0; kw < kw_n; kw++)
                                for (int64_t iw = 0; iw < g->in[2]; iw++) dst[iw * kw_n + kw] = s[kw * g->in_sz + iw] + b;
                    }
            }
    }
}

void vbs_conv_transpose_forward(const vbs_op_args *a) {
    const vbs_shape *xs = a->xs[0], *ws = a->xs[1], *ys = a->ys[0];
    vbs_geo g;
    vbs_geo_make(&g, &a->node->a.win, xs, ys, a->node->a.win.kernel);
    int64_t group = a->node->a.win.group, cin = xs->d[1], cg = cin / group, mg = ws->d[1], m = mg * group;
    if (is_blocky(&g)) {
        for (int64_t n = 0; n < xs->d[0]; n++)
            for (int64_t gi = 0; gi < group; gi++) {
                const float *x = a->x[0] + (n * cin + gi * cg) * g.in_sz;
                const float *w = a->x[1] + gi * cg * mg * g.k_sz;
                columns(w, x, cg, mg * g.k_sz, g.in_sz, a->work + mg * g.k_sz * g.in_sz, a->work);
                col2im_blocky(&g, a->work, mg, a->x[2] ? a->x[2] + gi * mg : NULL, a->y[0] + (n * m + gi * mg) * g.out_sz);
            }
        return;
    }
    for (int64_t n = 0; n < xs->d[0]; n++) {
        float *y = a->y[0] + n * m * g.out_sz;
        init_bias(y, a->x[2], m, g.out_sz);
        for (int64_t gi = 0; gi < group; gi++) {
            const float *x = a->x[0] + (n * cin + gi * cg) * g.in_sz;
            const float *w = a->x[1] + gi * cg * mg * g.k_sz; /* (cg, mg*k) */
            columns(w, x, cg, mg * g.k_sz, g.in_sz, a->work + mg * g.k_sz * g.in_sz, a->work);
            col2im(&g, a->work, mg, y + gi * mg * g.out_sz);
        }
    }
}

void vbs_conv_transpose_forward_naive(const vbs_op_args *a) {
    const vbs_shape *xs = a->xs[0], *ws = a->xs[1], *ys = a->ys[0];
    vbs_geo g;
    vbs_geo_make(&g, &a->node->a.win, xs, ys, a->node->a.win.kernel);
    int64_t group = a->node->a.win.group, cin = xs->d[1], cg = cin / group, mg = ws->d[1], m = mg * group;
    for (int64_t n = 0; n < xs->d[0]; n++) {
        init_bias(a->y[0] + n * m * g.out_sz, a->x[2], m, g.out_sz);
        for (int64_t ic = 0; ic < cin; ic++) {
            int64_t gi = ic / cg;
            for (int64_t id = 0; id < g.in[0]; id++)
                for (int64_t ih = 0; ih < g.in[1]; ih++)
                    for (int64_t iw = 0; iw < g.in[2]; iw++) {
                        float xv = a->x[0][((n * cin + ic) * g.in[0] + id) * g.in[1] * g.in[2] + ih * g.in[2] + iw];
                        for (int64_t oc = 0; oc < mg; oc++)
                            for (int64_t kd = 0; kd < g.k[0]; kd++)
                                for (int64_t kh = 0; kh < g.k[1]; kh++)
                                    for (int64_t kw = 0; kw < g.k[2]; kw++) {
                                        int64_t od = id * g.s[0] - g.pb[0] + kd * g.d[0];
                                        int64_t oh = ih * g.s[1] - g.pb[1] + kh * g.d[1];
                                        int64_t ow = iw * g.s[2] - g.pb[2] + kw * g.d[2];
                                        if (od < 0 || od >= g.out[0] || oh < 0 || oh >= g.out[1] || ow < 0 || ow >= g.out[2])
                                            continue;
                                        float wv = a->x[1][(((ic * mg + oc) * g.k[0] + kd) * g.k[1] + kh) * g.k[2] + kw];
                                        a->y[0][((n * m + gi * mg + oc) * g.out[0] + od) * g.out[1] * g.out[2] + oh * g.out[2] + ow] +=
                                            xv * wv;
                                    }
                    }
        }
    }
}

double vbs_conv_transpose_flops(const vbs_node *n, const vbs_shape *in, const vbs_shape *out) {
    (void)n; (void)out;
    double k = 1;
    for (int i = 1; i < in[1].ndim; i++) k *= (double)in[1].d[i];
    return 2.0 * (double)vbs_shape_numel(&in[0]) * k;
}

/* ---- backward -------------------------------------------------------------
 * y = col2im(W^T x) + b, so with dcol = im2col(dY) (the conv tiles of
 * conv.c on the swapped geometry: an output position of this op is an
 * input position of that convolution):
 *   dX_g (cg x P) += W_g (cg x mg*k) dcol (mg*k x P)
 *   dW_g (cg x mg*k) += X_g (cg x P) dcol^T
 * over tiles of P input positions; one im2col tile feeds both GEMMs. */

size_t vbs_conv_transpose_backward_work(const vbs_node *n, const vbs_shape *in, const vbs_shape *out) {
    vbs_geo g;
    vbs_geo_make(&g, &n->a.win, &in[0], &out[0], n->a.win.kernel);
    vbs_geo h = vbs_geo_swap(&g);
    if (vbs_geo_pointwise(&h)) return 0;
    int64_t kc = in[1].d[1] * g.k_sz;
    return (size_t)(kc * vbs_im2col_cols(&h, kc, VBS_BWD_TILE_FLOATS));
}

void vbs_conv_transpose_backward(const vbs_grad_args *gr) {
    const vbs_op_args *a = gr->fwd;
    const vbs_shape *xs = a->xs[0], *ws = a->xs[1], *ys = a->ys[0];
    vbs_geo g;
    vbs_geo_make(&g, &a->node->a.win, xs, ys, a->node->a.win.kernel);
    vbs_geo h = vbs_geo_swap(&g);
    int64_t group = a->node->a.win.group, cin = xs->d[1], cg = cin / group, mg = ws->d[1], m = mg * group, kc = mg * g.k_sz;
    if (gr->dx[2]) vbs_channel_sums_add(gr->dy[0], ys->d[0], m, g.out_sz, gr->dx[2]);
    if (!gr->dx[0] && !gr->dx[1]) return;
    int pw = vbs_geo_pointwise(&h);
    int64_t tc = pw ? g.in_sz : vbs_im2col_cols(&h, kc, VBS_BWD_TILE_FLOATS);
    for (int64_t n = 0; n < xs->d[0]; n++)
        for (int64_t gi = 0; gi < group; gi++) {
            const float *x = a->x[0] + (n * cin + gi * cg) * g.in_sz, *w = a->x[1] + gi * cg * kc;
            const float *dy = gr->dy[0] + (n * m + gi * mg) * g.out_sz;
            float *dw = gr->dx[1] ? gr->dx[1] + gi * cg * kc : NULL;
            float *dx = gr->dx[0] ? gr->dx[0] + (n * cin + gi * cg) * g.in_sz : NULL;
            for (int64_t o0 = 0; o0 < g.in_sz; o0 += tc) {
                int64_t nc = g.in_sz - o0 < tc ? g.in_sz - o0 : tc, ld = pw ? g.in_sz : nc;
                const float *col = pw ? dy : gr->work;
                if (!pw) vbs_im2col_tile(&h, dy, mg, o0, nc, gr->work);
                if (dw) vbs_sgemm(0, 1, cg, kc, nc, x + o0, g.in_sz, col, ld, 1.f, dw, kc);
                if (dx) vbs_sgemm(0, 0, cg, nc, kc, w, kc, col, ld, 1.f, dx + o0, g.in_sz);
            }
        }
}

/* Direct loops in double over the forward's relation o = i * s - pb + k * d:
 * dW[ic][oc][k] sums x . dY over (n, i); dX[n][ic][i] sums w . dY over (oc, k). */
void vbs_conv_transpose_backward_naive(const vbs_grad_args *gr) {
    const vbs_op_args *a = gr->fwd;
    const vbs_shape *xs = a->xs[0], *ws = a->xs[1], *ys = a->ys[0];
    vbs_geo g;
    vbs_geo_make(&g, &a->node->a.win, xs, ys, a->node->a.win.kernel);
    int64_t group = a->node->a.win.group, cin = xs->d[1], cg = cin / group, mg = ws->d[1], m = mg * group, nb = xs->d[0];
    const float *x = a->x[0], *w = a->x[1], *dy = gr->dy[0];
    if (gr->dx[2]) vbs_naive_channel_sums_add(dy, nb, m, g.out_sz, gr->dx[2]);
    vbs_geo h = vbs_geo_swap(&g); /* output side: x; input side: y */
    if (gr->dx[1])
        for (int64_t ic = 0; ic < cin; ic++)
            for (int64_t oc = 0; oc < mg; oc++)
                for (int64_t kd = 0; kd < g.k[0]; kd++)
                    for (int64_t kh = 0; kh < g.k[1]; kh++)
                        for (int64_t kw = 0; kw < g.k[2]; kw++)
                            gr->dx[1][(((ic * mg + oc) * g.k[0] + kd) * g.k[1] + kh) * g.k[2] + kw] +=
                                (float)vbs_naive_window_dot(&h, kd, kh, kw, x + ic * g.in_sz, cin * g.in_sz, dy + (ic / cg * mg + oc) * g.out_sz,
                                                            m * g.out_sz, nb);
    if (gr->dx[0])
        for (int64_t n = 0; n < nb; n++)
            for (int64_t ic = 0; ic < cin; ic++)
                for (int64_t id = 0; id < g.in[0]; id++)
                    for (int64_t ih = 0; ih < g.in[1]; ih++)
                        for (int64_t iw = 0; iw < g.in[2]; iw++) {
                            double s = 0;
                            for (int64_t oc = 0; oc < mg; oc++)
                                for (int64_t kd = 0; kd < g.k[0]; kd++)
                                    for (int64_t kh = 0; kh < g.k[1]; kh++)
                                        for (int64_t kw = 0; kw < g.k[2]; kw++) {
                                            int64_t od = id * g.s[0] - g.pb[0] + kd * g.d[0];
                                            int64_t oh = ih * g.s[1] - g.pb[1] + kh * g.d[1];
                                            int64_t ow = iw * g.s[2] - g.pb[2] + kw * g.d[2];
                                            if (od < 0 || od >= g.out[0] || oh < 0 || oh >= g.out[1] || ow < 0 || ow >= g.out[2]) continue;
                                            int64_t yc = ic / cg * mg + oc;
                                            s += (double)dy[(((n * m + yc) * g.out[0] + od) * g.out[1] + oh) * g.out[2] + ow] *
                                                 w[(((ic * mg + oc) * g.k[0] + kd) * g.k[1] + kh) * g.k[2] + kw];
                                        }
                            gr->dx[0][(((n * cin + ic) * g.in[0] + id) * g.in[1] + ih) * g.in[2] + iw] += (float)s;
                        }
}
