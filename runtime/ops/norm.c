/*
 * norm.c: ONNX BatchNormalization (inference form: running mean and
 * variance) and InstanceNormalization. Per-channel affine maps; the fast
 * kernels fold the statistics into one scale and shift per channel, the
 * naive ones evaluate the spec's formula per element in double.
 */
#include <math.h>

#include "ops.h"

static const char *const bn_known[] = {"epsilon", "momentum", "training_mode", "spatial", NULL};
static const char *const in_known[] = {"epsilon", NULL};

vbs_status vbs_batch_norm_parse(vbs_node *n, const vbs_node_def *d, char *err) {
    vbs_status st = vbs_attr_check_known(d, bn_known, err);
    if (st) return st;
    int64_t tm;
    if ((st = vbs_attr_int(d, "training_mode", 0, &tm, err))) return st;
    if (tm) return vbs_fail(err, VBS_ERR_UNSUPPORTED, "node '%s' (BatchNormalization): training_mode=1 unsupported", d->name);
    if (d->n_out > 1)
        return vbs_fail(err, VBS_ERR_UNSUPPORTED, "node '%s' (BatchNormalization): running-statistics outputs unsupported", d->name);
    return vbs_attr_float(d, "epsilon", 1e-5f, &n->a.eps, err);
}

vbs_status vbs_instance_norm_parse(vbs_node *n, const vbs_node_def *d, char *err) {
    vbs_status st = vbs_attr_check_known(d, in_known, err);
    return st ? st : vbs_attr_float(d, "epsilon", 1e-5f, &n->a.eps, err);
}

static vbs_status channel_params(vbs_node *n, const vbs_shape *in, int nparams, const char *op, char *err) {
    if (in[0].ndim < 2)
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (%s): input needs at least 2 dims", n->name, op);
    for (int i = 1; i <= nparams; i++)
        if (in[i].ndim != 1 || in[i].d[0] != in[0].d[1])
            return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (%s): input %d must have %lld values (one per channel)", n->name,
                            op, i, (long long)in[0].d[1]);
    return VBS_OK;
}

vbs_status vbs_batch_norm_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) {
    vbs_status st = channel_params(n, in, 4, "BatchNormalization", err);
    *out = in[0];
    return st;
}

vbs_status vbs_instance_norm_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) {
    vbs_status st = in[0].ndim < 3 ? vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (InstanceNormalization): input needs at least 3 dims", n->name)
                                   : channel_params(n, in, 2, "InstanceNormalization", err);
    *out = in[0];
    return st;
}

void vbs_batch_norm_forward(const vbs_op_args *a) {
    int64_t nb = a->xs[0]->d[0], c = a->xs[0]->d[1], sz = vbs_shape_numel(a->xs[0]) / (nb * c);
    for (int64_t n = 0; n < nb; n++)
        for (int64_t ch = 0; ch < c; ch++) {
            float k = a->x[1][ch] / sqrtf(a->x[4][ch] + a->node->a.eps);
            float b = a->x[2][ch] - a->x[3][ch] * k;
            const float *x = a->x[0] + (n * c + ch) * sz;
            float *y = a->y[0] + (n * c + ch) * sz;
            for (int64_t i = 0; i < sz; i++) y[i] = x[i] * k + b;
        }
}

void vbs_batch_norm_forward_naive(const vbs_op_args *a) {
    int64_t nb = a->xs[0]->d[0], c = a->xs[0]->d[1], sz = vbs_shape_numel(a->xs[0]) / (nb * c);
    for (int64_t i = 0; i < nb * c * sz; i++) {
        int64_t ch = (i / sz) % c;
        double x = a->x[0][i];
        a->y[0][i] = (float)(a->x[1][ch] * (x - a->x[3][ch]) / sqrt((double)a->x[4][ch] + a->node->a.eps) + a->x[2][ch]);
    }
}

void vbs_instance_norm_forward(const vbs_op_args *a) {
    int64_t nb = a->xs[0]->d[0], c = a->xs[0]->d[1], sz = vbs_shape_numel(a->xs[0]) / (nb * c);
    for (int64_t n = 0; n < nb; n++)
        for (int64_t ch = 0; ch < c; ch++) {
            const float *x = a->x[0] + (n * c + ch) * sz;
            float *y = a->y[0] + (n * c + ch) * sz;
            double s = 0, s2 = 0;
            for (int64_t i = 0; i < sz; i++) s += x[i];
            double mean = s / (double)sz;
            for (int64_t i = 0; i < sz; i++) s2 += (x[i] - mean) * (x[i] - mean);
            float k = (float)(a->x[1][ch] / sqrt(s2 / (double)sz + a->node->a.eps));
            float b = (float)(a->x[2][ch] - mean * k);
            for (int64_t i = 0; i < sz; i++) y[i] = x[i] * k + b;
        }
}

void vbs_instance_norm_forward_naive(const vbs_op_args *a) {
    int64_t nb = a->xs[0]->d[0], c = a->xs[0]->d[1], sz = vbs_shape_numel(a->xs[0]) / (nb * c);
    for (int64_t p = 0; p < nb * c; p++) {
        const float *x = a->x[0] + p * sz;
        double mean = 0, var = 0;
        for (int64_t i = 0; i < sz; i++) mean += x[i];
        mean /= (double)sz;
        for (int64_t i = 0; i < sz; i++) var += (x[i] - mean) * (x[i] - mean);
        var /= (double)sz;
        for (int64_t i = 0; i < sz; i++)
            a->y[0][p * sz + i] = (float)(a->x[1][p % c] * (x[i] - mean) / sqrt(var + a->node->a.eps) + a->x[2][p % c]);
    }
}
