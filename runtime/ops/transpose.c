/*
 * transpose.c: ONNX Transpose (perm; default reverses the axes). Exporters
 * emit it around a Softmax over channels before opset 13. The fast kernel
 * walks the output with a running source offset; the naive one recomputes
 * every source index. Backward: the inverse permutation, done as the same
 * walk with the copy reversed (dx[source] += dy[e]).
 */
#include "ops.h"

vbs_status vbs_transpose_parse(vbs_node *n, const vbs_node_def *d, char *err) {
    static const char *const known[] = {"perm", NULL};
    vbs_status st = vbs_attr_check_known(d, known, err);
    if (st) return st;
    return vbs_attr_ints(d, "perm", VBS_MAX_DIMS, n->a.pad.pads, &n->a.pad.n, err); /* pad's int list holds perm */
}

vbs_status vbs_transpose_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) {
    int nd = in[0].ndim;
    if (n->a.pad.n < 0) { /* default: reverse */
        n->a.pad.n = nd;
        for (int i = 0; i < nd; i++) n->a.pad.pads[i] = nd - 1 - i;
    }
    if (n->a.pad.n != nd) return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (Transpose): perm has %d axes, input has %d", n->name, n->a.pad.n, nd);
    int seen[VBS_MAX_DIMS] = {0};
    out->ndim = nd;
    for (int i = 0; i < nd; i++) {
        int64_t p = n->a.pad.pads[i];
        if (p < 0 || p >= nd || seen[p]++)
            return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (Transpose): perm is not a permutation of 0..%d", n->name, nd - 1);
        out->d[i] = in[0].d[p];
    }
    return VBS_OK;
}

static void strides(const vbs_shape *s, int64_t *st) {
    int64_t k = 1;
    for (int i = s->ndim - 1; i >= 0; i--) { st[i] = k; k *= s->d[i]; }
}

/* The output in order with a running source offset: forward (dy == NULL)
 * y[e] = x[source], backward dx[source] += dy[e]. */
static void transpose_walk(const vbs_op_args *a, const float *dy, float *dx) {
    const vbs_shape *ys = a->ys[0];
    int nd = ys->ndim;
    int64_t xs[VBS_MAX_DIMS], ps[VBS_MAX_DIMS], idx[VBS_MAX_DIMS] = {0}, n = vbs_shape_numel(ys), off = 0;
    strides(a->xs[0], xs);
    for (int i = 0; i < nd; i++) ps[i] = xs[a->node->a.pad.pads[i]]; /* source stride of output axis i */
    const float *x = a->x[0];
    float *y = a->y[0];
    if (nd == 0) {
        if (!dy) y[0] = x[0];
        else dx[0] += dy[0];
        return;
    }
    int64_t inner = ys->d[nd - 1], is = ps[nd - 1];
    for (int64_t e = 0; e < n; e += inner) {
        if (!dy) for (int64_t t = 0; t < inner; t++) y[e + t] = x[off + t * is];
        else for (int64_t t = 0; t < inner; t++) dx[off + t * is] += dy[e + t];
        for (int i = nd - 2; i >= 0; i--) {
            off += ps[i];
            if (++idx[i] < ys->d[i]) break;
            off -= ps[i] * ys->d[i];
            idx[i] = 0;
        }
    }
}

void vbs_transpose_forward(const vbs_op_args *a) { transpose_walk(a, NULL, NULL); }

void vbs_transpose_backward(const vbs_grad_args *g) {
    if (g->dx[0]) transpose_walk(g->fwd, g->dy[0], g->dx[0]);
}

/* Source index in x of output element e. */
static int64_t transpose_source(const vbs_op_args *a, int64_t e) {
    const vbs_shape *ys = a->ys[0];
    int64_t xs[VBS_MAX_DIMS], r = e, src = 0;
    strides(a->xs[0], xs);
    for (int i = ys->ndim - 1; i >= 0; i--) { src += (r % ys->d[i]) * xs[a->node->a.pad.pads[i]]; r /= ys->d[i]; }
    return src;
}

void vbs_transpose_forward_naive(const vbs_op_args *a) {
    int64_t n = vbs_shape_numel(a->ys[0]);
    for (int64_t e = 0; e < n; e++) a->y[0][e] = a->x[0][transpose_source(a, e)];
}

void vbs_transpose_backward_naive(const vbs_grad_args *g) {
    int64_t n = vbs_shape_numel(g->fwd->ys[0]);
    if (!g->dx[0]) return;
    for (int64_t e = 0; e < n; e++) g->dx[0][transpose_source(g->fwd, e)] += g->dy[0][e];
}
