/*
 * registry.c: the op table. One row per op, indexed by vbs_op; the enum's
 * numbering is internal (files store op names, not numbers), but new ops
 * still go at the end. Columns: ONNX name, parse, shape, fast forward,
 * naive forward, scratch, FLOPs, the input/output arity, then the
 * trainer's: fast and naive backward, backward scratch, saved floats, and
 * (ROWBF) the inputs whose gradients the fast backward writes when marked
 * fresh.
 */
#include <string.h>

#include "ops.h"

#define ROW(name, op, work, flops, min_in, max_in, max_out)                                                    \
    {name, vbs_##op##_parse, vbs_##op##_shape, vbs_##op##_forward, vbs_##op##_forward_naive, work, flops, min_in, \
     max_in, max_out, NULL, NULL, NULL, NULL}
/* ROWB for an op whose fast backward honours vbs_grad_args.fresh for the inputs in the mask fresh. */
#define ROWBF(name, op, work, flops, min_in, max_in, max_out, bwork, saved, fresh)                             \
    {name, vbs_##op##_parse, vbs_##op##_shape, vbs_##op##_forward, vbs_##op##_forward_naive, work, flops, min_in, \
     max_in, max_out, vbs_##op##_backward, vbs_##op##_backward_naive, bwork, saved, fresh}
/* A row with its backward kernels: vbs_<op>_backward and vbs_<op>_backward_naive,
 * the backward scratch (floats, or NULL) and the floats kept from forward to
 * backward in training (or NULL). */
#define ROWB(name, op, work, flops, min_in, max_in, max_out, bwork, saved)                                     \
    {name, vbs_##op##_parse, vbs_##op##_shape, vbs_##op##_forward, vbs_##op##_forward_naive, work, flops, min_in, \
     max_in, max_out, vbs_##op##_backward, vbs_##op##_backward_naive, bwork, saved}

const vbs_op_info vbs_ops[VBS_OP_COUNT] = {
    [VBS_OP_CONV] = ROWBF("Conv", conv, vbs_conv_work, vbs_conv_flops, 2, 3, 1, vbs_conv_backward_work, NULL, 1u),
    [VBS_OP_CONV_TRANSPOSE] = ROWB("ConvTranspose", conv_transpose, vbs_conv_transpose_work, vbs_conv_transpose_flops, 2, 3, 1,
                                   vbs_conv_transpose_backward_work, NULL),
    [VBS_OP_MAX_POOL] = ROWB("MaxPool", max_pool, NULL, NULL, 1, 1, 1, NULL, NULL),
    [VBS_OP_AVERAGE_POOL] = ROWB("AveragePool", average_pool, NULL, NULL, 1, 1, 1, vbs_average_pool_backward_work, NULL),
    [VBS_OP_GLOBAL_AVERAGE_POOL] = ROWB("GlobalAveragePool", global_average_pool, NULL, NULL, 1, 1, 1, NULL, NULL),
    [VBS_OP_BATCH_NORM] = ROWB("BatchNormalization", batch_norm, NULL, NULL, 5, 5, 1, NULL, vbs_batch_norm_saved),
    [VBS_OP_INSTANCE_NORM] = ROWB("InstanceNormalization", instance_norm, NULL, NULL, 3, 3, 1, NULL, NULL),
    [VBS_OP_RELU] = ROWB("Relu", relu, NULL, NULL, 1, 1, 1, NULL, NULL),
    [VBS_OP_LEAKY_RELU] = ROWB("LeakyRelu", leaky_relu, NULL, NULL, 1, 1, 1, NULL, NULL),
    [VBS_OP_PRELU] = ROWB("PRelu", prelu, NULL, NULL, 2, 2, 1, NULL, NULL),
    [VBS_OP_SIGMOID] = ROWB("Sigmoid", sigmoid, NULL, NULL, 1, 1, 1, NULL, NULL),
    [VBS_OP_SOFTMAX] = ROWB("Softmax", softmax, NULL, NULL, 1, 1, 1, NULL, NULL),
    [VBS_OP_SOFTPLUS] = ROWB("Softplus", softplus, NULL, NULL, 1, 1, 1, NULL, NULL),
    [VBS_OP_ADD] = ROWB("Add", add, NULL, NULL, 2, 2, 1, NULL, NULL),
    [VBS_OP_MUL] = ROWB("Mul", mul, NULL, NULL, 2, 2, 1, NULL, NULL),
    [VBS_OP_CONCAT] = ROWBF("Concat", concat, NULL, NULL, 1, VBS_MAX_IN, 1, NULL, NULL, ~0u),
    [VBS_OP_RESIZE] = ROWB("Resize", resize, vbs_resize_work, NULL, 1, 1, 1, vbs_resize_work, NULL),
    [VBS_OP_PAD] = ROWB("Pad", pad, NULL, NULL, 1, 1, 1, NULL, NULL),
    [VBS_OP_IDENTITY] = ROWB("Identity", identity, NULL, NULL, 1, 1, 1, NULL, NULL),
    [VBS_OP_DROPOUT] = ROWB("Dropout", dropout, NULL, NULL, 1, 3, 1, NULL, NULL),
    [VBS_OP_GAUSSIAN_SAMPLE] = ROWB("GaussianSample", gaussian_sample, NULL, NULL, 2, 2, 1, NULL, NULL),
    [VBS_OP_SPATIAL_BROADCAST] = ROWB("SpatialBroadcast", spatial_broadcast, NULL, NULL, 2, 2, 1, NULL, NULL),
    [VBS_OP_TRANSPOSE] = ROWB("Transpose", transpose, NULL, NULL, 1, 1, 1, NULL, NULL),
};

vbs_op vbs_op_from_name(const char *name) {
    for (int i = 1; i < VBS_OP_COUNT; i++)
        if (vbs_ops[i].name && strcmp(vbs_ops[i].name, name) == 0) return (vbs_op)i;
    return VBS_OP_INVALID;
}
