/*
 * builder.h: assembling a model definition in C, node by node, for the
 * architectures in models/. Names and data are copied into the model.
 * Calls never fail individually; an allocation failure is remembered and
 * reported by vbs_b_finish().
 */
#ifndef VBS_MODELS_BUILDER_H
#define VBS_MODELS_BUILDER_H

#include "../runtime/internal.h"

typedef struct vbs_builder vbs_builder;

vbs_builder *vbs_b_new(uint64_t seed);
void vbs_b_free(vbs_builder *b);

/* Attributes for vbs_b_node(); the values are copied. */
vbs_attr vbs_b_int(vbs_builder *b, const char *name, int64_t v);
vbs_attr vbs_b_float(vbs_builder *b, const char *name, float v);
vbs_attr vbs_b_ints(vbs_builder *b, const char *name, int n, const int64_t *v);
vbs_attr vbs_b_string(vbs_builder *b, const char *name, const char *v);

/* A graph input; dims[i] < 0 is symbolic and named params[i]. */
void vbs_b_input(vbs_builder *b, const char *name, int ndim, const int64_t *dims, const char *const *params);
/* A graph output (shape left to inference: ndim 0). */
void vbs_b_output(vbs_builder *b, const char *name);
/* A node with one output; returns the output name (owned by the builder).
 * The output is named after the node. */
const char *vbs_b_node(vbs_builder *b, vbs_op op, const char *name, int n_in, const char *const *in, int n_attr,
                       const vbs_attr *attr);
/* A node by op name (as stored in files: importers use it), with any
 * number of named outputs (copied). */
void vbs_b_node_raw(vbs_builder *b, const char *op_type, const char *name, int n_in, const char *const *in, int n_out,
                    const char *const *out, int n_attr, const vbs_attr *attr);
/* A variational tensor from given means and per-element sigmas (copied);
 * rho = softplus^-1(sigma) is computed here. */
const char *vbs_b_variational_from(vbs_builder *b, const char *name, int ndim, const int64_t *dims, const float *mu,
                                   const float *sigma, float prior_sigma);
/* Also the op set version recorded in the file. */
void vbs_b_set_opset(vbs_builder *b, int opset);
/* A deterministic tensor initialised with data (copied). */
const char *vbs_b_tensor(vbs_builder *b, const char *name, int ndim, const int64_t *dims, const float *data);
/* A variational tensor: mu ~ N(0, 2/fan_in) (He) or 0 when fan_in is 0,
 * rho filled with rho0, Gaussian prior N(0, prior_sigma^2). */
const char *vbs_b_variational(vbs_builder *b, const char *name, int ndim, const int64_t *dims, int64_t fan_in, float rho0,
                              float prior_sigma);
/* The card to fill in; strings set with vbs_b_str() live in the model. */
vbs_card *vbs_b_card(vbs_builder *b);
const char *vbs_b_str(vbs_builder *b, const char *s);
void *vbs_b_alloc(vbs_builder *b, size_t n);

/* Compiles and validates the model; b is consumed (freed) either way.
 * *out is set as by vbs_model_load. */
vbs_status vbs_b_finish(vbs_builder *b, const char *name, vbs_model **out);

#endif
