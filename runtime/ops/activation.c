/*
 * activation.c: the unary element-wise activations Relu, LeakyRelu,
 * Sigmoid and Softplus, forward and backward. Each fast kernel is a flat
 * loop the compiler vectorises (the backward ones cloned for AVX2); each
 * naive one evaluates the ONNX formula, or its derivative, in double.
 * PRelu has a second input and lives with the broadcasting ops in
 * elementwise.c.
 *
 * Gradients at the kinks follow the forward's branch: Relu's is 0 at
 * x == 0 (y = x > 0 ? x : 0, as PyTorch's threshold_backward), LeakyRelu's
 * is 1 at x == 0 (ONNX's x >= 0 ? x : alpha*x). Sigmoid's fast backward
 * uses y (y(1-y)); the naive one recomputes sigmoid from x, so the two are
 * independent. Softplus's derivative is the sigmoid, taken branch by
 * branch from the forward's overflow-safe formula (vbs_softplus_grad).
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

/* dy = (y > 0) ? dy : 0: the gradient through a Relu folded into the op
 * that made y, which the executor applies before that op's backward. */
static inline __attribute__((always_inline)) void relu_mask_body(float *restrict dy, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) dy[i] = y[i] > 0.f ? dy[i] : 0.f;
}
VBS_CLONES(relu_mask, (float *restrict dy, const float *y, int64_t n), relu_mask_body(dy, y, n))
void vbs_relu_mask(float *dy, const float *y, int64_t n) { VBS_PICK(relu_mask)(dy, y, n); }

/* Backward: dx += f'(x) dy. In the expressions v is x[i], u is y[i], g is
 * dy[i] (float in the fast kernel, g_ double in the naive one). The fast
 * ones select between a value and 0 under > or >=: GCC 12 if-converts (and
 * so vectorises) no other select under trapping math. */
#define UNARY_BACKWARD(op, fast_expr, naive_expr)                                                                 \
    static inline __attribute__((always_inline)) void op##_bw_body(const float *x, const float *y, const float *dy, \
                                                                  float *restrict dx, int64_t n, float alpha) {  \
        (void)alpha; (void)x; (void)y;                                                                            \
        for (int64_t i = 0; i < n; i++) {                                                                         \
            float v = x[i], u = y[i], g = dy[i];                                                                  \
            (void)v; (void)u;                                                                                     \
            dx[i] += (fast_expr);                                                                                 \
        }                                                                                                         \
    }                                                                                                             \
    VBS_CLONES(op##_bw, (const float *x, const float *y, const float *dy, float *restrict dx, int64_t n, float alpha), \
               op##_bw_body(x, y, dy, dx, n, alpha))                                                              \
    void vbs_##op##_backward(const vbs_grad_args *g) {                                                            \
        const vbs_op_args *a = g->fwd;                                                                            \
        if (!g->dx[0]) return;                                                                                    \
        VBS_PICK(op##_bw)(a->x[0], a->y[0], g->dy[0], g->dx[0], vbs_shape_numel(a->xs[0]), a->node->a.alpha);     \
    }                                                                                                             \
    void vbs_##op##_backward_naive(const vbs_grad_args *g) {                                                      \
        const vbs_op_args *a = g->fwd;                                                                            \
        if (!g->dx[0]) return;                                                                                    \
        const double alpha = a->node->a.alpha;                                                                    \
        (void)alpha;                                                                                              \
        int64_t n = vbs_shape_numel(a->xs[0]);                                                                    \
        for (int64_t i = 0; i < n; i++) {                                                                         \
            double v = a->x[0][i], g_ = g->dy[0][i];                                                              \
            g->dx[0][i] += (float)(naive_expr);                                                                   \
        }                                                                                                         \
    }

UNARY_BACKWARD(relu, v > 0.f ? g : 0.f, v > 0 ? g_ : 0)
UNARY_BACKWARD(leaky_relu, (v >= 0.f ? g : 0.f) + (0.f > v ? g : 0.f) * alpha, v >= 0 ? g_ : alpha * g_)
UNARY_BACKWARD(sigmoid, g * u * (1.f - u), g_ / (1.0 + exp(-v)) * (1.0 - 1.0 / (1.0 + exp(-v))))
UNARY_BACKWARD(softplus, g * vbs_softplus_grad(v), g_ / (1.0 + exp(-v)))

vbs_status vbs_relu_parse(vbs_node *n, const vbs_node_def *d, char *err) { return vbs_parse_no_attrs(n, d, err); }
vbs_status vbs_sigmoid_parse(vbs_node *n, const vbs_node_def *d, char *err) { return vbs_parse_no_attrs(n, d, err); }
vbs_status vbs_softplus_parse(vbs_node *n, const vbs_node_def *d, char *err) { return vbs_parse_no_attrs(n, d, err); }

vbs_status vbs_leaky_relu_parse(vbs_node *n, const vbs_node_def *d, char *err) {
    static const char *const known[] = {"alpha", NULL};
    vbs_status st = vbs_attr_check_known(d, known, err);
    return st ? st : vbs_attr_float(d, "alpha", 0.01f, &n->a.alpha, err);
}
