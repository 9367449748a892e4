/*
 * activation.c: the unary element-wise activations Relu, LeakyRelu,
 * Sigmoid and Softplus. Each fast kernel is a flat loop the compiler
 * vectorises; each naive one evaluates the ONNX formula in double.
 */
#include <math.h>

#include "ops.h"

vbs_status vbs_parse_no_attrs(vbs_node *n, const vbs_node_def *d, char *err) {
    static const char *const none[] = {NULL};
    (void)n;
    return vbs_attr_check_known(d, none, err);
}

vbs_status vbs_shape_same(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) {
    (void)n; (void)err;
    *out = in[0];
    return VBS_OK;
}

#define UNARY(op, fast_expr, naive_expr)                                                   \
    vbs_status vbs_##op##_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) { \
        return vbs_shape_same(n, in, out, err);                                            \
    }                                                                                      \
    void vbs_##op##_forward(const vbs_op_args *a) {                                        \
        const float *x = a->x[0];                                                          \
        float *y = a->y[0];                                                                \
        const float alpha = a->node->a.alpha;                                              \
        (void)alpha;                                                                       \
        int64_t n = vbs_shape_numel(a->xs[0]);                                             \
        for (int64_t i = 0; i < n; i++) {                                                  \
            float v = x[i];                                                                \
            y[i] = (fast_expr);                                                            \
        }                                                                                  \
    }                                                                                      \
    void vbs_##op##_forward_naive(const vbs_op_args *a) {                                  \
        const double alpha = a->node->a.alpha;                                             \
        (void)alpha;                                                                       \
        int64_t n = vbs_shape_numel(a->xs[0]);                                             \
        for (int64_t i = 0; i < n; i++) {                                                  \
            double v = a->x[0][i];                                                         \
            a->y[0][i] = (float)(naive_expr);                                              \
        }                                                                                  \
    }

UNARY(relu, v > 0.f ? v : 0.f, v > 0 ? v : 0)
UNARY(leaky_relu, v >= 0.f ? v : alpha * v, v >= 0 ? v : alpha * v)
UNARY(sigmoid, 1.f / (1.f + expf(-v)), 1.0 / (1.0 + exp(-v)))
UNARY(softplus, vbs_softplus(v), log1p(exp(v)))

vbs_status vbs_relu_parse(vbs_node *n, const vbs_node_def *d, char *err) { return vbs_parse_no_attrs(n, d, err); }
vbs_status vbs_sigmoid_parse(vbs_node *n, const vbs_node_def *d, char *err) { return vbs_parse_no_attrs(n, d, err); }
vbs_status vbs_softplus_parse(vbs_node *n, const vbs_node_def *d, char *err) { return vbs_parse_no_attrs(n, d, err); }

vbs_status vbs_leaky_relu_parse(vbs_node *n, const vbs_node_def *d, char *err) {
    static const char *const known[] = {"alpha", NULL};
    vbs_status st = vbs_attr_check_known(d, known, err);
    return st ? st : vbs_attr_float(d, "alpha", 0.01f, &n->a.alpha, err);
}
