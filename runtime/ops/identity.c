/*
 * identity.c: ONNX Identity, and Dropout, which is the identity in this
 * runtime, at inference and in training alike (its ratio input and the
 * training_mode input are ignored; the optional mask output is refused).
 * Backward: dx += dy for the data input; ratio and training_mode get no
 * gradient.
 *
 * Dropout has its own backward so that MC dropout can come in without
 * touching the trainer: its forward will draw keep = (u >= ratio) from the
 * counter-based RNG keyed by (seed, sample, the node's stream, element),
 * as GaussianSample draws eps, and its backward will recompute the same
 * mask chunk by chunk and add dy * keep / (1 - ratio) instead of dy.
 */
#include <string.h>

#include "ops.h"

vbs_status vbs_identity_parse(vbs_node *n, const vbs_node_def *d, char *err) { return vbs_parse_no_attrs(n, d, err); }

vbs_status vbs_dropout_parse(vbs_node *n, const vbs_node_def *d, char *err) {
    static const char *const known[] = {"seed", "ratio", NULL};
    (void)n;
    if (d->n_out > 1)
        return vbs_fail(err, VBS_ERR_UNSUPPORTED, "node '%s' (Dropout): the mask output is unsupported", d->name);
    return vbs_attr_check_known(d, known, err);
}

vbs_status vbs_identity_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) { return vbs_shape_same(n, in, out, err); }
vbs_status vbs_dropout_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) { return vbs_shape_same(n, in, out, err); }

void vbs_identity_forward(const vbs_op_args *a) {
    if (a->y[0] != a->x[0]) memcpy(a->y[0], a->x[0], sizeof(float) * (size_t)vbs_shape_numel(a->xs[0]));
}
void vbs_identity_forward_naive(const vbs_op_args *a) {
    int64_t n = vbs_shape_numel(a->xs[0]);
    for (int64_t i = 0; i < n; i++) a->y[0][i] = a->x[0][i];
}
void vbs_dropout_forward(const vbs_op_args *a) { vbs_identity_forward(a); }
void vbs_dropout_forward_naive(const vbs_op_args *a) { vbs_identity_forward_naive(a); }

void vbs_identity_backward(const vbs_grad_args *g) {
    if (g->dx[0]) vbs_grad_add(g->dx[0], g->dy[0], vbs_shape_numel(g->fwd->xs[0]));
}
void vbs_identity_backward_naive(const vbs_grad_args *g) {
    int64_t n = vbs_shape_numel(g->fwd->xs[0]);
    if (g->dx[0])
        for (int64_t i = 0; i < n; i++) g->dx[0][i] += g->dy[0][i];
}
/* the identity today: the mask of MC dropout goes here (see the top) */
void vbs_dropout_backward(const vbs_grad_args *g) { vbs_identity_backward(g); }
void vbs_dropout_backward_naive(const vbs_grad_args *g) { vbs_identity_backward_naive(g); }
