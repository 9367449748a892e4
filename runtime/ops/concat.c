/*
 * concat.c: ONNX Concat along any axis (negative axes count from the end).
 * The fast kernel copies contiguous runs with memcpy; the naive one maps
 * each output element back to its source. Backward: each input's
 * gradient is its slice of dy, added run by run (the same walk as the
 * forward) or, naively, element by element.
 */
#include <string.h>

#include "ops.h"

vbs_status vbs_concat_parse(vbs_node *n, const vbs_node_def *d, char *err) {
    static const char *const known[] = {"axis", NULL};
    vbs_status st = vbs_attr_check_known(d, known, err);
    if (st) return st;
    if (!vbs_attr_find(d, "axis"))
        return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (Concat): missing required attribute 'axis'", d->name);
    return vbs_attr_int(d, "axis", 1, &n->a.axis, err);
}

vbs_status vbs_concat_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) {
    int nd = in[0].ndim;
    int64_t ax = n->a.axis < 0 ? n->a.axis + nd : n->a.axis;
    if (ax < 0 || ax >= nd)
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (Concat): axis %lld out of range for %d dims", n->name, (long long)n->a.axis, nd);
    *out = in[0];
    for (int i = 1; i < n->n_in; i++) {
        if (in[i].ndim != nd)
            return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (Concat): input %d has %d dims, input 0 has %d", n->name, i, in[i].ndim, nd);
        for (int j = 0; j < nd; j++)
            if (j != ax && in[i].d[j] != in[0].d[j])
                return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (Concat): input %d has size %lld on axis %d, input 0 has %lld",
                                n->name, i, (long long)in[i].d[j], j, (long long)in[0].d[j]);
        out->d[ax] += in[i].d[ax];
    }
    return VBS_OK;
}

static int axis_of(const vbs_op_args *a) {
    return (int)(a->node->a.axis < 0 ? a->node->a.axis + a->ys[0]->ndim : a->node->a.axis);
}

/* The forward's walk: per input k and outer index o, a run of len floats
 * at x[k] + o*len and y + o*row + off. Forward (dy == NULL) copies x into
 * y; backward adds dy into each wanted dx[k], or (bit k of fresh) writes
 * it: dy + 0, which is what adding to zeros gives, -0 included. */
static void concat_runs(const vbs_op_args *a, const float *dy, float *const *dx, unsigned fresh) {
    int ax = axis_of(a);
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < ax; i++) outer *= a->ys[0]->d[i];
    for (int i = ax + 1; i < a->ys[0]->ndim; i++) inner *= a->ys[0]->d[i];
    int64_t row = a->ys[0]->d[ax] * inner, off = 0;
    for (int k = 0; k < a->node->n_in; k++) {
        int64_t len = a->xs[k]->d[ax] * inner;
        for (int64_t o = 0; o < outer; o++) {
            if (!dy) memcpy(a->y[0] + o * row + off, a->x[k] + o * len, sizeof(float) * (size_t)len);
            else if (dx[k] && fresh >> k & 1)
                for (int64_t i = 0; i < len; i++) dx[k][o * len + i] = dy[o * row + off + i] + 0.f;
            else if (dx[k]) vbs_grad_add(dx[k] + o * len, dy + o * row + off, len);
        }
        off += len;
    }
}

void vbs_concat_forward(const vbs_op_args *a) { concat_runs(a, NULL, NULL, 0); }
void vbs_concat_backward(const vbs_grad_args *g) { concat_runs(g->fwd, g->dy[0], g->dx, g->fresh); }

/* Output element e's source: input *k, element *src. */
static void concat_source(const vbs_op_args *a, int64_t e, int *k, int64_t *src) {
    int ax = axis_of(a);
    int64_t inner = 1;
    for (int i = ax + 1; i < a->ys[0]->ndim; i++) inner *= a->ys[0]->d[i];
    int64_t total = a->ys[0]->d[ax];
    int64_t o = e / (total * inner), c = (e / inner) % total, i = e % inner;
    *k = 0;
    while (c >= a->xs[*k]->d[ax]) c -= a->xs[(*k)++]->d[ax];
    *src = (o * a->xs[*k]->d[ax] + c) * inner + i;
}

void vbs_concat_forward_naive(const vbs_op_args *a) {
    int64_t n = vbs_shape_numel(a->ys[0]), src;
    int k;
    for (int64_t e = 0; e < n; e++) {
        concat_source(a, e, &k, &src);
        a->y[0][e] = a->x[k][src];
    }
}

void vbs_concat_backward_naive(const vbs_grad_args *g) {
    int64_t n = vbs_shape_numel(g->fwd->ys[0]), src;
    int k;
    for (int64_t e = 0; e < n; e++) {
        concat_source(g->fwd, e, &k, &src);
        if (g->dx[k]) g->dx[k][src] += g->dy[0][e];
    }
}
