/*
 * pad.c: ONNX Pad in constant mode. The pads (begins then ends, one per
 * axis, negative values crop) and the value are attributes here, as in
 * opset 2; importers fold the constant inputs of opset 11+ into them.
 * Fast kernel: fill, then copy contiguous rows; naive: per output element.
 * Backward: dx is dy cropped to where the input landed (zero where the
 * forward cropped the input away); the value's gradient is not taken (it
 * is an attribute). The fast backward adds the same rows back.
 */
#include <string.h>

#include "ops.h"

vbs_status vbs_pad_parse(vbs_node *n, const vbs_node_def *d, char *err) {
    static const char *const known[] = {"pads", "value", "mode", NULL};
    vbs_status st = vbs_attr_check_known(d, known, err);
    if (st) return st;
    const char *mode = vbs_attr_string(d, "mode", "constant");
    if (strcmp(mode, "constant"))
        return vbs_fail(err, VBS_ERR_UNSUPPORTED, "node '%s' (Pad): mode '%s' unsupported (only constant)", d->name, mode);
    if ((st = vbs_attr_ints(d, "pads", 2 * VBS_MAX_DIMS, n->a.pad.pads, &n->a.pad.n, err))) return st;
    if (n->a.pad.n < 0) return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (Pad): missing required attribute 'pads'", d->name);
    for (int i = 0; i < n->a.pad.n; i++)
        if (n->a.pad.pads[i] > (1 << 24) || n->a.pad.pads[i] < -(1 << 24))
            return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (Pad): pad value out of range", d->name);
    return vbs_attr_float(d, "value", 0.f, &n->a.pad.value, err);
}

vbs_status vbs_pad_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) {
    int nd = in[0].ndim;
    if (n->a.pad.n != 2 * nd)
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (Pad): 'pads' has %d values, input has %d dims (need %d)", n->name,
                        n->a.pad.n, nd, 2 * nd);
    out->ndim = nd;
    for (int i = 0; i < nd; i++) {
        out->d[i] = in[0].d[i] + n->a.pad.pads[i] + n->a.pad.pads[nd + i];
        if (out->d[i] <= 0)
            return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (Pad): output size %lld on axis %d", n->name, (long long)out->d[i], i);
    }
    return VBS_OK;
}

/* The input rows (last axis) that land in the output, clipped: forward
 * (dy == NULL) copies them from x into y, backward adds them from dy
 * into dx. */
static void pad_rows(const vbs_op_args *a, const float *dy, float *dx) {
    const vbs_shape *xs = a->xs[0], *ys = a->ys[0];
    int nd = ys->ndim;
    const int64_t *pb = a->node->a.pad.pads;
    int64_t w = xs->d[nd - 1], lo = pb[nd - 1] < 0 ? -pb[nd - 1] : 0;
    int64_t hi = w;
    if (pb[nd - 1] + w > ys->d[nd - 1]) hi = ys->d[nd - 1] - pb[nd - 1];
    if (hi <= lo) return;
    int64_t rows = vbs_shape_numel(xs) / w, idx[VBS_MAX_DIMS] = {0};
    for (int64_t r = 0; r < rows; r++) {
        int64_t off = 0, ok = 1;
        for (int i = 0; i < nd - 1; i++) {
            int64_t o = idx[i] + pb[i];
            if (o < 0 || o >= ys->d[i]) { ok = 0; break; }
            off = off * ys->d[i] + o;
        }
        if (ok) {
            int64_t yo = off * ys->d[nd - 1] + pb[nd - 1] + lo, xo = r * w + lo;
            if (!dy) memcpy(a->y[0] + yo, a->x[0] + xo, sizeof(float) * (size_t)(hi - lo));
            else vbs_grad_add(dx + xo, dy + yo, hi - lo);
        }
        for (int i = nd - 2; i >= 0; i--) {
            if (++idx[i] < xs->d[i]) break;
            idx[i] = 0;
        }
    }
}

void vbs_pad_forward(const vbs_op_args *a) {
    int64_t n = vbs_shape_numel(a->ys[0]);
    float v = a->node->a.pad.value;
    for (int64_t i = 0; i < n; i++) a->y[0][i] = v;
    pad_rows(a, NULL, NULL);
}

void vbs_pad_backward(const vbs_grad_args *g) {
    if (g->dx[0]) pad_rows(g->fwd, g->dy[0], g->dx[0]);
}

/* Output element e's source element in x; 0 if e is padding. */
static int pad_source(const vbs_op_args *a, int64_t e, int64_t *src) {
    const vbs_shape *xs = a->xs[0], *ys = a->ys[0];
    int64_t r = e, mul = 1;
    int ok = 1;
    *src = 0;
    for (int i = ys->ndim - 1; i >= 0; i--) {
        int64_t c = r % ys->d[i] - a->node->a.pad.pads[i];
        r /= ys->d[i];
        if (c < 0 || c >= xs->d[i]) ok = 0;
        *src += c * mul;
        mul *= xs->d[i];
    }
    return ok;
}

void vbs_pad_forward_naive(const vbs_op_args *a) {
    int64_t n = vbs_shape_numel(a->ys[0]), src;
    for (int64_t e = 0; e < n; e++) a->y[0][e] = pad_source(a, e, &src) ? a->x[0][src] : a->node->a.pad.value;
}

void vbs_pad_backward_naive(const vbs_grad_args *g) {
    int64_t n = vbs_shape_numel(g->fwd->ys[0]), src;
    if (!g->dx[0]) return;
    for (int64_t e = 0; e < n; e++)
        if (pad_source(g->fwd, e, &src)) g->dx[0][src] += g->dy[0][e];
}
