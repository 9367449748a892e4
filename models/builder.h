/*
 * builder.h: assembling a model definition in C, node by node, for the
 * architectures in models/. Names and data are copied into the model.
 * Calls never fail individually; an allocation failure is remembered and
 * reported by vbs_b_finish().
 */
#ifndef VBS_MODELS_BUILDER_H
#define VBS_MODELS_BUILDER_H

#include "../runtime/internal.h"
#include "net.h"

typedef struct vbs_builder vbs_builder;

vbs_builder *vbs_b_new(uint64_t seed);
/* A builder that only counts: every tensor adds its size to
 * vbs_b_floats() and stores nothing (for estimates before a build). */
vbs_builder *vbs_b_new_counter(void);
double vbs_b_floats(const vbs_builder *b);
/* on: vbs_b_variational and vbs_b_variational_from store the mean alone as
 * a plain tensor (same name and values, no rho, no prior): the sigma = 0
 * baseline of a network, the rest of its graph unchanged. Off by default. */
void vbs_b_set_deterministic(vbs_builder *b, int on);
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
/* Makes mu the mean of a variational weight: role MU, its rho tensor's name
 * (borrowed: it must live in the model's arena), a Gaussian prior N(0,
 * prior_sigma^2). The rho tensor itself (role RHO) is the caller's. */
void vbs_tensor_set_mu(vbs_tensor_def *mu, const char *rho, float prior_sigma);
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

/* ---- the layers the families share -----------------------------------------
 * Every conv and transposed conv weight and bias is variational (He-initialised
 * mu unless said, rho = o->rho0, prior N(0, o->prior_sigma^2)), or with
 * o->deterministic a plain tensor holding that mu; the norms'
 * scale and shift and PReLU's slopes are plain tensors. Each returns the
 * output's name; tensors are named "<name>.weight", "<name>.bias", ... */
typedef struct {
    vbs_builder *b;
    const vbs_net_opts *o;
    int nsp;                /* spatial dims: 2 or 3 */
} vbs_layers;

/* Conv of k^nsp kernels: stride 1 pads to the same size (k odd), stride s > 1
 * takes no padding (a 2x2 stride-2 conv halves even sizes). */
const char *vbs_l_conv(const vbs_layers *c, const char *name, const char *x, int64_t cin, int64_t cout, int k, int stride);
enum { VBS_L_HE = 0, VBS_L_BILINEAR = 1 };
/* ConvTranspose giving exactly stride x the input (pads (k - stride)/2).
 * init VBS_L_HE: He-initialised weight and a bias; VBS_L_BILINEAR (cin ==
 * cout): no bias and means that start as bilinear interpolation, as FCN. */
const char *vbs_l_conv_t(const vbs_layers *c, const char *name, const char *x, int64_t cin, int64_t cout, int k, int stride, int init);
/* o->norm over ch channels: InstanceNormalization, BatchNormalization
 * (running statistics 0 and 1, momentum 0.9) or nothing (returns x). */
const char *vbs_l_norm(const vbs_layers *c, const char *name, const char *x, int64_t ch);
const char *vbs_l_relu(const vbs_layers *c, const char *name, const char *x);
/* PReLU with one slope per channel, 0.25 at the start (as nn.PReLU). */
const char *vbs_l_prelu(const vbs_layers *c, const char *name, const char *x, int64_t ch);
/* MC dropout: with o->dropout > 0 a Dropout of that ratio named name; else x
 * itself (no node: a model without dropout is as before it existed). */
const char *vbs_l_dropout(const vbs_layers *c, const char *name, const char *x);
const char *vbs_l_add(const vbs_layers *c, const char *name, const char *x, const char *y);
/* Concat along channels: x first */
const char *vbs_l_concat(const vbs_layers *c, const char *name, const char *x, const char *y);
/* The seed paper's latent (o->latent values) from the bottleneck x of ch
 * channels: GlobalAveragePool "latent.pool", 1x1 convs "latent.mu" and
 * "latent.rho", GaussianSample "latent.z"; returns z (N, L, 1...). */
const char *vbs_l_latent(const vbs_layers *c, const char *x, int64_t ch);
/* z broadcast over x's spatial dims ("<name>.broadcast") and concatenated
 * after x's channels ("<name>.concat"). */
const char *vbs_l_join(const vbs_layers *c, const char *name, const char *x, const char *z);
/* The 1x1 output heads from x (ch channels): "logits" (o->classes), and
 * with o->hetero "logvar", the logits' log-variance; both graph outputs. */
void vbs_l_heads(const vbs_layers *c, const char *x, int64_t ch);

/* A family's graph from the input named x (outputs declared by it). */
typedef void (*vbs_l_graph_fn)(const vbs_layers *c, const char *x);
/* The graph input "image" (N, C, [D,] H, W), fn's graph and the card of a
 * new model (channels, z-score, patch, labels, head, and the description
 * "untrained variational " or "untrained deterministic (...) " followed by
 * description, e.g. "U-Net (He-initialised)"); *out as for vbs_model_load. */
vbs_status vbs_l_build(const vbs_net_opts *o, vbs_l_graph_fn fn, const char *name, const char *description, vbs_model **out);
/* The floats vbs_l_build would store, from a counting builder. */
double vbs_l_floats(const vbs_net_opts *o, vbs_l_graph_fn fn);

#endif
