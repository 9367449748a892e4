/*
 * gaussian_sample.c: vbseg's GaussianSample op, the VAE-style latent of
 * the seed paper's uncertainty head: inputs mean and rho of one shape,
 * output z = mean + softplus(rho) * eps, eps ~ N(0, 1) from the
 * counter-based RNG keyed by (seed, sample, this node's stream, element).
 * In mean mode z = mean. The naive kernel draws eps one element at a time.
 *
 * Backward: dmean += dz; drho += dz * eps * sigmoid(rho) (the derivative of
 * softplus as the forward computes it, vbs_softplus_grad), with eps drawn
 * again from the same (seed, sample, stream, element), never stored: the
 * fast kernel in chunks on the stack, the naive one element by element.
 * In mean mode z = mean and rho gets no gradient.
 */
#include <math.h>

#include "ops.h"

vbs_status vbs_gaussian_sample_parse(vbs_node *n, const vbs_node_def *d, char *err) { return vbs_parse_no_attrs(n, d, err); }

vbs_status vbs_gaussian_sample_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) {
    if (in[0].ndim != in[1].ndim)
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (GaussianSample): mean and rho differ in rank", n->name);
    for (int i = 0; i < in[0].ndim; i++)
        if (in[0].d[i] != in[1].d[i])
            return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (GaussianSample): mean and rho differ on axis %d", n->name, i);
    *out = in[0];
    return VBS_OK;
}

void vbs_gaussian_sample_forward(const vbs_op_args *a) {
    int64_t n = vbs_shape_numel(a->xs[0]);
    float *y = a->y[0];
    if (a->sampling) vbs_randn(a->seed, a->sample, a->node->rng_stream, 0, n, y);
    for (int64_t i = 0; i < n; i++) y[i] = a->x[0][i] + (a->sampling ? vbs_softplus(a->x[1][i]) * y[i] : 0.f);
}

void vbs_gaussian_sample_forward_naive(const vbs_op_args *a) {
    int64_t n = vbs_shape_numel(a->xs[0]);
    for (int64_t i = 0; i < n; i++) {
        float eps = 0.f;
        if (a->sampling) vbs_randn(a->seed, a->sample, a->node->rng_stream, (uint64_t)i, 1, &eps);
        a->y[0][i] = a->x[0][i] + vbs_softplus(a->x[1][i]) * eps;
    }
}

void vbs_gaussian_sample_backward(const vbs_grad_args *g) {
    const vbs_op_args *a = g->fwd;
    int64_t n = vbs_shape_numel(a->xs[0]);
    const float *dz = g->dy[0], *rho = a->x[1];
    float *dmean = g->dx[0], *drho = a->sampling ? g->dx[1] : NULL;
    if (dmean) vbs_grad_add(dmean, dz, n);
    if (!drho) return;
    enum { CHUNK = 256 }; /* a multiple of the RNG's groups: whole groups are drawn once */
    float eps[CHUNK];
    for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
        int64_t nc = n - i0 < CHUNK ? n - i0 : CHUNK;
        vbs_randn(a->seed, a->sample, a->node->rng_stream, (uint64_t)i0, nc, eps);
        for (int64_t t = 0; t < nc; t++) drho[i0 + t] += dz[i0 + t] * eps[t] * vbs_softplus_grad(rho[i0 + t]);
    }
}

void vbs_gaussian_sample_backward_naive(const vbs_grad_args *g) {
    const vbs_op_args *a = g->fwd;
    int64_t n = vbs_shape_numel(a->xs[0]);
    for (int64_t i = 0; i < n; i++) {
        double dz = g->dy[0][i];
        if (g->dx[0]) g->dx[0][i] += (float)dz;
        if (!g->dx[1] || !a->sampling) continue;
        float eps;
        vbs_randn(a->seed, a->sample, a->node->rng_stream, (uint64_t)i, 1, &eps);
        g->dx[1][i] += (float)(dz * eps / (1.0 + exp(-(double)a->x[1][i])));
    }
}
