/*
 * identity.c: ONNX Identity: y = x (a copy, or nothing when the planner
 * gives y x's buffer). Backward: dx += dy. Dropout, the identity in mean
 * mode, lives in dropout.c and calls these there.
 */
#include <string.h>

#include "ops.h"

vbs_status vbs_identity_parse(vbs_node *n, const vbs_node_def *d, char *err) { return vbs_parse_no_attrs(n, d, err); }

vbs_status vbs_identity_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) { return vbs_shape_same(n, in, out, err); }

void vbs_identity_forward(const vbs_op_args *a) {
    if (a->y[0] != a->x[0]) memcpy(a->y[0], a->x[0], sizeof(float) * (size_t)vbs_shape_numel(a->xs[0]));
}
void vbs_identity_forward_naive(const vbs_op_args *a) {
    int64_t n = vbs_shape_numel(a->xs[0]);
    for (int64_t i = 0; i < n; i++) a->y[0][i] = a->x[0][i];
}

void vbs_identity_backward(const vbs_grad_args *g) {
    if (g->dx[0]) vbs_grad_add(g->dx[0], g->dy[0], vbs_shape_numel(g->fwd->xs[0]));
}
void vbs_identity_backward_naive(const vbs_grad_args *g) {
    int64_t n = vbs_shape_numel(g->fwd->xs[0]);
    if (g->dx[0])
        for (int64_t i = 0; i < n; i++) g->dx[0][i] += g->dy[0][i];
}
