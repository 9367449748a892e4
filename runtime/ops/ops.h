/*
 * ops.h: the functions each runtime/ops/<op>.c file exports to the
 * registration table in registry.c. Not part of the public API.
 */
#ifndef VBS_OPS_H
#define VBS_OPS_H

#include "../internal.h"

#define VBS_DECLARE_OP(op)                                                                      \
    vbs_status vbs_##op##_parse(vbs_node *n, const vbs_node_def *d, char *err);                 \
    vbs_status vbs_##op##_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err);   \
    void vbs_##op##_forward(const vbs_op_args *a);                                              \
    void vbs_##op##_forward_naive(const vbs_op_args *a)
/* The backward pair of an op (see vbs_grad_args in internal.h). */
#define VBS_DECLARE_BACKWARD(op)                           \
    void vbs_##op##_backward(const vbs_grad_args *g);      \
    void vbs_##op##_backward_naive(const vbs_grad_args *g)

VBS_DECLARE_OP(conv);
VBS_DECLARE_BACKWARD(conv);
size_t vbs_conv_work(const vbs_node *n, const vbs_shape *in, const vbs_shape *out);
size_t vbs_conv_backward_work(const vbs_node *n, const vbs_shape *in, const vbs_shape *out);
double vbs_conv_flops(const vbs_node *n, const vbs_shape *in, const vbs_shape *out);
/* conv_winograd.c: F(4x4, 3x3) for 2D 3x3 stride-1 ungrouped Conv */
int vbs_winograd_fits(const vbs_node *n, const vbs_shape *x, const vbs_shape *w);
size_t vbs_winograd_work(const vbs_node *n, const vbs_shape *in, const vbs_shape *out);
void vbs_winograd_forward(const vbs_op_args *a);
/* Whether Winograd beats im2col for the forward of a layer that fits (x, w, y shapes). */
int vbs_winograd_forward_pays(const vbs_node *n, const vbs_shape *x, const vbs_shape *w, const vbs_shape *y);
/* Its backward: dX (data = 1) and dW (data = 0), accumulated, each in
 * vbs_winograd_backward_work(.., data) floats of g->work. conv.c uses one
 * where vbs_winograd_backward_pays(.., data) says it beats im2col (which
 * for dX also needs the top and left pads <= 2). */
int vbs_winograd_backward_pays(const vbs_node *n, const vbs_shape *in, const vbs_shape *out, int data);
size_t vbs_winograd_backward_work(const vbs_shape *in, const vbs_shape *out, int data);
void vbs_winograd_backward_data(const vbs_grad_args *g);
void vbs_winograd_backward_filter(const vbs_grad_args *g);
VBS_DECLARE_OP(conv_transpose);
VBS_DECLARE_BACKWARD(conv_transpose);
size_t vbs_conv_transpose_work(const vbs_node *n, const vbs_shape *in, const vbs_shape *out);
size_t vbs_conv_transpose_backward_work(const vbs_node *n, const vbs_shape *in, const vbs_shape *out);
double vbs_conv_transpose_flops(const vbs_node *n, const vbs_shape *in, const vbs_shape *out);
VBS_DECLARE_OP(max_pool);
VBS_DECLARE_BACKWARD(max_pool);
VBS_DECLARE_OP(average_pool);
VBS_DECLARE_BACKWARD(average_pool);
size_t vbs_average_pool_backward_work(const vbs_node *n, const vbs_shape *in, const vbs_shape *out);
VBS_DECLARE_OP(global_average_pool);
VBS_DECLARE_BACKWARD(global_average_pool);
VBS_DECLARE_OP(batch_norm);
VBS_DECLARE_BACKWARD(batch_norm);
/* Training: floats the forward keeps in a->saved (batch mean, then biased variance; C each). */
size_t vbs_batch_norm_saved(const vbs_node *n, const vbs_shape *in, const vbs_shape *out);
/* After a training step: running = running * momentum + batch * (1 - momentum)
 * per channel (ONNX's momentum, default 0.9 = PyTorch's 0.1), the batch
 * variance made unbiased by count / (count - 1) as PyTorch does. saved is
 * what the training forward kept (2 * channels floats); count = N times the
 * spatial size, the elements each channel's statistics covered. */
void vbs_batch_norm_update_running(const vbs_node *n, int64_t channels, int64_t count, const float *saved, float *running_mean,
                                   float *running_var);
VBS_DECLARE_OP(instance_norm);
VBS_DECLARE_BACKWARD(instance_norm);
VBS_DECLARE_OP(relu);
VBS_DECLARE_BACKWARD(relu);
/* dy[0..n) = y > 0 ? dy : 0 (a fused Relu's gradient; vectorised) */
void vbs_relu_mask(float *dy, const float *y, int64_t n);
VBS_DECLARE_OP(leaky_relu);
VBS_DECLARE_BACKWARD(leaky_relu);
VBS_DECLARE_OP(sigmoid);
VBS_DECLARE_BACKWARD(sigmoid);
VBS_DECLARE_OP(softplus);
VBS_DECLARE_BACKWARD(softplus);
VBS_DECLARE_OP(softmax);
VBS_DECLARE_BACKWARD(softmax);
VBS_DECLARE_OP(add);
VBS_DECLARE_BACKWARD(add);
VBS_DECLARE_OP(mul);
VBS_DECLARE_BACKWARD(mul);
VBS_DECLARE_OP(prelu);
VBS_DECLARE_BACKWARD(prelu);
VBS_DECLARE_OP(concat);
VBS_DECLARE_BACKWARD(concat);
VBS_DECLARE_OP(resize);
VBS_DECLARE_BACKWARD(resize);
size_t vbs_resize_work(const vbs_node *n, const vbs_shape *in, const vbs_shape *out);
VBS_DECLARE_OP(pad);
VBS_DECLARE_BACKWARD(pad);
VBS_DECLARE_OP(identity);
VBS_DECLARE_BACKWARD(identity);
VBS_DECLARE_OP(dropout);
VBS_DECLARE_BACKWARD(dropout);
VBS_DECLARE_OP(gaussian_sample);
VBS_DECLARE_BACKWARD(gaussian_sample);
VBS_DECLARE_OP(spatial_broadcast);
VBS_DECLARE_BACKWARD(spatial_broadcast);
VBS_DECLARE_OP(transpose);
VBS_DECLARE_BACKWARD(transpose);

/* elementwise.c: the gradient loops other backward kernels share.
 * dx[0..n) += dy[0..n) (vectorised, AVX2 where the CPU has it). */
void vbs_grad_add(float *dx, const float *dy, int64_t n);
/* sum of x[0..n) in 8 interleaved float lanes (vectorised; the order of
 * the additions depends on n only, so the result is reproducible). */
float vbs_grad_sum(const float *x, int64_t n);
/* sum of x[i] * y[i] over [0, n), the same way. */
float vbs_grad_dot(const float *x, const float *y, int64_t n);

/* Shared by parse functions of ops without attributes. */
vbs_status vbs_parse_no_attrs(vbs_node *n, const vbs_node_def *d, char *err);
/* Output shape = input 0's shape. */
vbs_status vbs_shape_same(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err);

#endif
