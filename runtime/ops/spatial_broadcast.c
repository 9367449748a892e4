/*
 * spatial_broadcast.c: vbseg's SpatialBroadcast op: tiles a latent z of
 * shape (N, L) or (N, L, 1, ..., 1) over the spatial dims of a reference
 * tensor (N, C, spatial...), giving (N, L, spatial...), so that z can be
 * concatenated to decoder features as in the Probabilistic U-Net.
 * Backward: dz += the sum of dy over the spatial dims; the reference
 * gets no gradient (only its shape is used, never its values).
 */
#include "ops.h"

vbs_status vbs_spatial_broadcast_parse(vbs_node *n, const vbs_node_def *d, char *err) { return vbs_parse_no_attrs(n, d, err); }

vbs_status vbs_spatial_broadcast_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) {
    const vbs_shape *z = &in[0], *ref = &in[1];
    int ok = z->ndim >= 2 && ref->ndim >= 3 && z->d[0] == ref->d[0];
    for (int i = 2; ok && i < z->ndim; i++) ok = z->d[i] == 1;
    if (ok && z->ndim > 2) ok = z->ndim == ref->ndim;
    if (!ok)
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (SpatialBroadcast): z must be (N,L) or (N,L,1..) matching the reference batch", n->name);
    *out = *ref;
    out->d[1] = z->d[1];
    return VBS_OK;
}

void vbs_spatial_broadcast_forward(const vbs_op_args *a) {
    int64_t nb = a->ys[0]->d[0], l = a->ys[0]->d[1], sz = vbs_shape_numel(a->ys[0]) / (nb * l);
    for (int64_t p = 0; p < nb * l; p++) {
        float v = a->x[0][p];
        float *y = a->y[0] + p * sz;
        for (int64_t i = 0; i < sz; i++) y[i] = v;
    }
}

void vbs_spatial_broadcast_forward_naive(const vbs_op_args *a) {
    int64_t n = vbs_shape_numel(a->ys[0]), l = a->ys[0]->d[1], sz = n / (a->ys[0]->d[0] * l);
    for (int64_t e = 0; e < n; e++) a->y[0][e] = a->x[0][e / sz];
}

void vbs_spatial_broadcast_backward(const vbs_grad_args *g) {
    const vbs_shape *ys = g->fwd->ys[0];
    int64_t nb = ys->d[0], l = ys->d[1], sz = vbs_shape_numel(ys) / (nb * l);
    if (!g->dx[0]) return;
    for (int64_t p = 0; p < nb * l; p++) g->dx[0][p] += vbs_grad_sum(g->dy[0] + p * sz, sz);
}

void vbs_spatial_broadcast_backward_naive(const vbs_grad_args *g) {
    const vbs_shape *ys = g->fwd->ys[0];
    int64_t nb = ys->d[0], l = ys->d[1], sz = vbs_shape_numel(ys) / (nb * l);
    if (!g->dx[0]) return;
    for (int64_t p = 0; p < nb * l; p++) {
        double s = 0;
        for (int64_t i = 0; i < sz; i++) s += g->dy[0][p * sz + i];
        g->dx[0][p] += (float)s;
    }
}
