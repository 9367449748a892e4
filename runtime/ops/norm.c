/*
 * norm.c: ONNX BatchNormalization and InstanceNormalization, forward and
 * backward, and the trainer's update of BatchNormalization's running
 * statistics.
 *
 * BatchNormalization normalises with its running mean and variance (inputs
 * 3 and 4) at inference and, in a training pass (a->training), with the
 * batch's own: mean and biased variance per channel over N and the spatial
 * dims, as PyTorch's training mode. The training forward keeps the batch
 * mean and variance in a->saved (2*C floats) for the backward and for
 * vbs_batch_norm_update_running. This is not ONNX's training_mode=1 node
 * (its running-statistics outputs are refused): the trainer sets the mode
 * per pass. With training == 0 the backward is the one of the frozen affine
 * map (fine-tuning). InstanceNormalization normalises each (n, c) plane by
 * its own mean and biased variance.
 *
 * Fast kernels fold the statistics into one scale and shift per plane and
 * reduce in float lanes folded into double every block; moments are taken
 * about a float near the mean (see group_shift), so a large mean costs no
 * precision, in one pass over memory. The naive kernels evaluate the
 * formulas per element in double.
 */
#include <math.h>
#include <string.h>

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
    if ((st = vbs_attr_float(d, "momentum", 0.9f, &n->a.norm.momentum, err))) return st;
    if (!(n->a.norm.momentum >= 0.f && n->a.norm.momentum <= 1.f))
        return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (BatchNormalization): momentum %g is outside [0, 1]", d->name,
                        (double)n->a.norm.momentum);
    return vbs_attr_float(d, "epsilon", 1e-5f, &n->a.norm.eps, err);
}

vbs_status vbs_instance_norm_parse(vbs_node *n, const vbs_node_def *d, char *err) {
    vbs_status st = vbs_attr_check_known(d, in_known, err);
    return st ? st : vbs_attr_float(d, "epsilon", 1e-5f, &n->a.norm.eps, err);
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

/* Training: the batch mean (C floats), then the biased batch variance (C). */
size_t vbs_batch_norm_saved(const vbs_node *n, const vbs_shape *in, const vbs_shape *out) {
    (void)n;
    (void)out;
    return 2 * (size_t)in[0].d[1];
}

void vbs_batch_norm_update_running(const vbs_node *n, int64_t channels, int64_t count, const float *saved, float *running_mean,
                                   float *running_var) {
    double mom = n->a.norm.momentum, unbias = count > 1 ? (double)count / (double)(count - 1) : 1.0;
    for (int64_t c = 0; c < channels; c++) {
        running_mean[c] = (float)(running_mean[c] * mom + saved[c] * (1 - mom));
        running_var[c] = (float)(running_var[c] * mom + saved[channels + c] * unbias * (1 - mom));
    }
}

/* ---- fast kernels: the loops the vectoriser sees ------------------------ */

/* Reductions keep 8 float partial sums per quantity in a GCC vector (one
 * AVX register, two SSE ones) and fold them into double every BLOCK
 * elements: vectorised, and accurate over planes of millions. (Written as
 * lane arrays, GCC vectorises the outer loop with permutes instead.) */
typedef float vf8 __attribute__((vector_size(32)));
enum { BLOCK = 1024 };

/* an unaligned load (a macro: a function returning vf8 would change the ABI in the baseline clone) */
#define LOAD8(v, p) memcpy(&(v), (p), sizeof(vf8))

/* Over n floats, about m: s[0] += sum(x - m), s[1] += sum((x - m)^2). */
static inline __attribute__((always_inline)) void moments_body(const float *x, int64_t n, float m, double *s) {
    for (int64_t i0 = 0; i0 < n; i0 += BLOCK) {
        int64_t e = n - i0 < BLOCK ? n : i0 + BLOCK, i = i0;
        vf8 a0 = {0}, a1 = {0};
        for (; i + 8 <= e; i += 8) {
            vf8 v;
            LOAD8(v, x + i);
            v -= m;
            a0 += v;
            a1 += v * v;
        }
        for (; i < e; i++) {
            float v = x[i] - m;
            a0[0] += v;
            a1[0] += v * v;
        }
        for (int l = 0; l < 8; l++) {
            s[0] += a0[l];
            s[1] += a1[l];
        }
    }
}

/* The same, and s[2] += sum(dy), s[3] += sum(dy (x - m)). */
static inline __attribute__((always_inline)) void moments_dy_body(const float *x, const float *dy, int64_t n, float m, double *s) {
    for (int64_t i0 = 0; i0 < n; i0 += BLOCK) {
        int64_t e = n - i0 < BLOCK ? n : i0 + BLOCK, i = i0;
        vf8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (; i + 8 <= e; i += 8) {
            vf8 v, g;
            LOAD8(v, x + i);
            LOAD8(g, dy + i);
            v -= m;
            a0 += v;
            a1 += v * v;
            a2 += g;
            a3 += g * v;
        }
        for (; i < e; i++) {
            float v = x[i] - m, g = dy[i];
            a0[0] += v;
            a1[0] += v * v;
            a2[0] += g;
            a3[0] += g * v;
        }
        for (int l = 0; l < 8; l++) {
            s[0] += a0[l];
            s[1] += a1[l];
            s[2] += a2[l];
            s[3] += a3[l];
        }
    }
}

/* y = (x - m) k + b over n floats; m near the mean keeps x - m exact, so a
 * large mean does not cancel away the output's precision */
static inline __attribute__((always_inline)) void affine_body(const float *x, int64_t n, float m, float k, float b, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] = (x[i] - m) * k + b;
}

/* dx += A (dy - gm) + B (x - m) + C over n floats; centring dy on its mean
 * gm before scaling keeps A dy and A gm from cancelling in float */
static inline __attribute__((always_inline)) void dx_body(const float *x, const float *dy, int64_t n, float m, float gm, float A,
                                                          float B, float C, float *dx) {
    for (int64_t i = 0; i < n; i++) dx[i] += A * (dy[i] - gm) + B * (x[i] - m) + C;
}

/* dx += A dy over n floats */
static inline __attribute__((always_inline)) void axpy_body(const float *dy, int64_t n, float A, float *dx) {
    for (int64_t i = 0; i < n; i++) dx[i] += A * dy[i];
}

VBS_CLONES(moments, (const float *x, int64_t n, float m, double *s), moments_body(x, n, m, s))
VBS_CLONES(moments_dy, (const float *x, const float *dy, int64_t n, float m, double *s), moments_dy_body(x, dy, n, m, s))
VBS_CLONES(affine, (const float *x, int64_t n, float m, float k, float b, float *y), affine_body(x, n, m, k, b, y))
VBS_CLONES(dx_update, (const float *x, const float *dy, int64_t n, float m, float gm, float A, float B, float C, float *dx),
           dx_body(x, dy, n, m, gm, A, B, C, dx))
VBS_CLONES(axpy, (const float *dy, int64_t n, float A, float *dx), axpy_body(dy, n, A, dx))

/* A group of statistics: `planes` planes of sz floats, `stride` apart (one
 * BatchNormalization channel across the batch, or one InstanceNormalization
 * plane). */
typedef struct {
    int64_t planes, stride, sz;
} group;

/* The shift the group's moments are taken about: the mean of the first
 * SHIFT_SPAN elements of its first plane (all of a 128x128 plane). Two-pass
 * statistics without a second pass over memory: the span stays in cache for
 * the moments pass, and a sub-mean cannot stray far from the mean, since
 * (span mean - mean)^2 <= (M / span) var over M elements. So d = mean - shift
 * obeys d^2 <= N var for BatchNormalization on 2D planes, and the float
 * moments lose at most a factor M / span of precision to cancellation
 * (none when the plane fits the span). */
enum { SHIFT_SPAN = 16384 };
static float group_shift(const float *x, const group *gr) {
    int64_t n = gr->sz < SHIFT_SPAN ? gr->sz : SHIFT_SPAN;
    double s[2] = {0, 0};
    VBS_PICK(moments)(x, n, 0.f, s);
    return (float)(s[0] / (double)n);
}

/* Mean and biased variance of the group, and the shift m they were taken about. */
static void group_stats(const float *x, const group *gr, float *m, double *mean, double *var) {
    *m = group_shift(x, gr);
    double s[2] = {0, 0}, cnt = (double)(gr->planes * gr->sz);
    for (int64_t p = 0; p < gr->planes; p++) VBS_PICK(moments)(x + p * gr->stride, gr->sz, *m, s);
    double d = s[0] / cnt;
    *mean = *m + d;
    *var = fmax(s[1] / cnt - d * d, 0.0);
}

/* y = gamma (x - mean) / sqrt(var + eps) + beta over the group, computed as
 * (x - m) k + (beta - (mean - m) k) for a float m near the mean. */
static void group_normalise(const float *x, const group *gr, float m, double mean, double var, double eps, double gamma, double beta,
                            float *y) {
    double k = gamma / sqrt(var + eps);
    for (int64_t p = 0; p < gr->planes; p++)
        VBS_PICK(affine)(x + p * gr->stride, gr->sz, m, (float)k, (float)(beta - (mean - m) * k), y + p * gr->stride);
}

/* The backward of group_normalise with the group's own statistics. With
 * xh = (x - mean) inv, inv = 1/sqrt(var + eps), M elements:
 *   dbeta += sum dy, dgamma += sum dy xh,
 *   dx += gamma inv / M (M dy - sum dy - xh sum dy xh).
 * m is the shift the sums are taken about (any float near the mean); the
 * mean and variance come out of the same pass as the dy sums. */
static void group_backward(const float *x, const float *dy, const group *gr, float m, double eps, double gamma, float *dx,
                           float *dgamma, float *dbeta) {
    double s[4] = {0, 0, 0, 0}, cnt = (double)(gr->planes * gr->sz);
    for (int64_t p = 0; p < gr->planes; p++) VBS_PICK(moments_dy)(x + p * gr->stride, dy + p * gr->stride, gr->sz, m, s);
    double d = s[0] / cnt, var = fmax(s[1] / cnt - d * d, 0.0), inv = 1 / sqrt(var + eps);
    double sdy = s[2], sdyx = s[3] - d * s[2]; /* sum dy (x - mean) */
    if (dgamma) *dgamma += (float)(inv * sdyx);
    if (dbeta) *dbeta += (float)sdy;
    if (!dx) return;
    /* dx += A (dy - sum dy / M) + B (x - mean), with x - mean = (x - m) - d */
    double A = gamma * inv, B = -gamma * inv * inv * inv * sdyx / cnt;
    for (int64_t p = 0; p < gr->planes; p++)
        VBS_PICK(dx_update)(x + p * gr->stride, dy + p * gr->stride, gr->sz, m, (float)(sdy / cnt), (float)A, (float)B, (float)(-B * d),
                            dx + p * gr->stride);
}

/* ---- naive kernels: the formulas in double ------------------------------ */

static void naive_stats(const float *x, const group *gr, double *mean, double *var) {
    double s = 0, s2 = 0, cnt = (double)(gr->planes * gr->sz);
    for (int64_t p = 0; p < gr->planes; p++)
        for (int64_t i = 0; i < gr->sz; i++) s += x[p * gr->stride + i];
    *mean = s / cnt;
    for (int64_t p = 0; p < gr->planes; p++)
        for (int64_t i = 0; i < gr->sz; i++) {
            double v = x[p * gr->stride + i] - *mean;
            s2 += v * v;
        }
    *var = s2 / cnt;
}

static void naive_normalise(const float *x, const group *gr, double mean, double var, double eps, double gamma, double beta,
                            float *y) {
    for (int64_t p = 0; p < gr->planes; p++)
        for (int64_t i = 0; i < gr->sz; i++) {
            int64_t j = p * gr->stride + i;
            y[j] = (float)(gamma * (x[j] - mean) / sqrt(var + eps) + beta);
        }
}

static void naive_backward(const float *x, const float *dy, const group *gr, double eps, double gamma, float *dx, float *dgamma,
                           float *dbeta) {
    double mean, var, sdy = 0, sdyxh = 0, cnt = (double)(gr->planes * gr->sz);
    naive_stats(x, gr, &mean, &var);
    double inv = 1 / sqrt(var + eps);
    for (int64_t p = 0; p < gr->planes; p++)
        for (int64_t i = 0; i < gr->sz; i++) {
            int64_t j = p * gr->stride + i;
            sdy += dy[j];
            sdyxh += dy[j] * (x[j] - mean) * inv;
        }
    if (dgamma) *dgamma = (float)(*dgamma + sdyxh);
    if (dbeta) *dbeta = (float)(*dbeta + sdy);
    if (!dx) return;
    for (int64_t p = 0; p < gr->planes; p++)
        for (int64_t i = 0; i < gr->sz; i++) {
            int64_t j = p * gr->stride + i;
            double xh = (x[j] - mean) * inv;
            dx[j] = (float)(dx[j] + gamma * inv / cnt * (cnt * dy[j] - sdy - xh * sdyxh));
        }
}

/* ---- BatchNormalization -------------------------------------------------- */

/* Channel ch of an (N, C, ...) tensor as a group; the channel's first element is at ch * sz. */
static group bn_group(const vbs_shape *s, int64_t *sz) {
    int64_t nb = s->d[0], c = s->d[1];
    *sz = vbs_shape_numel(s) / (nb * c);
    group gr = {nb, c * *sz, *sz};
    return gr;
}

static float *grad_at(float *p, int64_t i) { return p ? p + i : NULL; }

void vbs_batch_norm_forward(const vbs_op_args *a) {
    int64_t nb = a->xs[0]->d[0], c = a->xs[0]->d[1], sz;
    group gr = bn_group(a->xs[0], &sz);
    if (a->training) {
        for (int64_t ch = 0; ch < c; ch++) {
            double mean, var;
            float m;
            group_stats(a->x[0] + ch * sz, &gr, &m, &mean, &var);
            if (a->saved) {
                a->saved[ch] = (float)mean;
                a->saved[c + ch] = (float)var;
            }
            group_normalise(a->x[0] + ch * sz, &gr, m, mean, var, a->node->a.norm.eps, a->x[1][ch], a->x[2][ch], a->y[0] + ch * sz);
        }
        return;
    }
    for (int64_t n = 0; n < nb; n++)
        for (int64_t ch = 0; ch < c; ch++) {
            float k = a->x[1][ch] / sqrtf(a->x[4][ch] + a->node->a.norm.eps);
            VBS_PICK(affine)(a->x[0] + (n * c + ch) * sz, sz, a->x[3][ch], k, a->x[2][ch], a->y[0] + (n * c + ch) * sz);
        }
}

void vbs_batch_norm_forward_naive(const vbs_op_args *a) {
    int64_t c = a->xs[0]->d[1], sz;
    group gr = bn_group(a->xs[0], &sz);
    for (int64_t ch = 0; ch < c; ch++) {
        double mean = a->x[3][ch], var = a->x[4][ch];
        if (a->training) {
            naive_stats(a->x[0] + ch * sz, &gr, &mean, &var);
            if (a->saved) {
                a->saved[ch] = (float)mean;
                a->saved[c + ch] = (float)var;
            }
        }
        naive_normalise(a->x[0] + ch * sz, &gr, mean, var, a->node->a.norm.eps, a->x[1][ch], a->x[2][ch], a->y[0] + ch * sz);
    }
}

/* Training: the batch-statistics gradient for x, scale, bias (the running
 * statistics do not reach y: their gradients stay untouched). Inference:
 * the frozen affine map's, running statistics included. */
void vbs_batch_norm_backward(const vbs_grad_args *g) {
    const vbs_op_args *a = g->fwd;
    int64_t c = a->xs[0]->d[1], sz;
    group gr = bn_group(a->xs[0], &sz);
    double eps = a->node->a.norm.eps;
    for (int64_t ch = 0; ch < c; ch++) {
        const float *x = a->x[0] + ch * sz, *dy = g->dy[0] + ch * sz;
        float *dx = grad_at(g->dx[0], ch * sz);
        double gamma = a->x[1][ch];
        if (a->training) {
            /* the saved batch mean is the best shift; without it, recompute one */
            float m = a->saved ? a->saved[ch] : group_shift(x, &gr);
            group_backward(x, dy, &gr, m, eps, gamma, dx, grad_at(g->dx[1], ch), grad_at(g->dx[2], ch));
            continue;
        }
        double inv = 1 / sqrt((double)a->x[4][ch] + eps);
        /* dx needs no sums: one plane at a time, each read once while in cache */
        int sums = g->dx[1] || g->dx[2] || g->dx[3] || g->dx[4];
        double s[4] = {0, 0, 0, 0};
        for (int64_t p = 0; p < gr.planes; p++) {
            if (sums) VBS_PICK(moments_dy)(x + p * gr.stride, dy + p * gr.stride, sz, a->x[3][ch], s);
            if (dx) VBS_PICK(axpy)(dy + p * gr.stride, sz, (float)(gamma * inv), dx + p * gr.stride);
        }
        if (g->dx[1]) g->dx[1][ch] += (float)(inv * s[3]);
        if (g->dx[2]) g->dx[2][ch] += (float)s[2];
        if (g->dx[3]) g->dx[3][ch] += (float)(-gamma * inv * s[2]);
        if (g->dx[4]) g->dx[4][ch] += (float)(-0.5 * gamma * inv * inv * inv * s[3]);
    }
}

void vbs_batch_norm_backward_naive(const vbs_grad_args *g) {
    const vbs_op_args *a = g->fwd;
    int64_t c = a->xs[0]->d[1], sz;
    group gr = bn_group(a->xs[0], &sz);
    double eps = a->node->a.norm.eps;
    for (int64_t ch = 0; ch < c; ch++) {
        const float *x = a->x[0] + ch * sz, *dy = g->dy[0] + ch * sz;
        float *dx = grad_at(g->dx[0], ch * sz);
        double gamma = a->x[1][ch];
        if (a->training) {
            naive_backward(x, dy, &gr, eps, gamma, dx, grad_at(g->dx[1], ch), grad_at(g->dx[2], ch));
            continue;
        }
        /* y = gamma (x - rm) / sqrt(rv + eps) + beta, differentiated per element */
        double rm = a->x[3][ch], rv = a->x[4][ch], sd = sqrt(rv + eps);
        double dg = 0, db = 0, drm = 0, drv = 0;
        for (int64_t p = 0; p < gr.planes; p++)
            for (int64_t i = 0; i < sz; i++) {
                int64_t j = p * gr.stride + i;
                dg += dy[j] * (x[j] - rm) / sd;
                db += dy[j];
                drm += dy[j] * -gamma / sd;
                drv += dy[j] * gamma * (x[j] - rm) * -0.5 / (sd * sd * sd);
                if (dx) dx[j] = (float)(dx[j] + dy[j] * gamma / sd);
            }
        if (g->dx[1]) g->dx[1][ch] = (float)(g->dx[1][ch] + dg);
        if (g->dx[2]) g->dx[2][ch] = (float)(g->dx[2][ch] + db);
        if (g->dx[3]) g->dx[3][ch] = (float)(g->dx[3][ch] + drm);
        if (g->dx[4]) g->dx[4][ch] = (float)(g->dx[4][ch] + drv);
    }
}

/* ---- InstanceNormalization ---------------------------------------------- */

void vbs_instance_norm_forward(const vbs_op_args *a) {
    int64_t c = a->xs[0]->d[1], planes = a->xs[0]->d[0] * c, sz = vbs_shape_numel(a->xs[0]) / planes;
    group gr = {1, sz, sz};
    for (int64_t p = 0; p < planes; p++) {
        double mean, var;
        float m;
        group_stats(a->x[0] + p * sz, &gr, &m, &mean, &var);
        group_normalise(a->x[0] + p * sz, &gr, m, mean, var, a->node->a.norm.eps, a->x[1][p % c], a->x[2][p % c], a->y[0] + p * sz);
    }
}

void vbs_instance_norm_forward_naive(const vbs_op_args *a) {
    int64_t c = a->xs[0]->d[1], planes = a->xs[0]->d[0] * c, sz = vbs_shape_numel(a->xs[0]) / planes;
    group gr = {1, sz, sz};
    for (int64_t p = 0; p < planes; p++) {
        double mean, var;
        naive_stats(a->x[0] + p * sz, &gr, &mean, &var);
        naive_normalise(a->x[0] + p * sz, &gr, mean, var, a->node->a.norm.eps, a->x[1][p % c], a->x[2][p % c], a->y[0] + p * sz);
    }
}

/* Statistics are recomputed from x, in the same pass as the dy sums, so
 * nothing is saved: the shift (a cached span), the moments and dy sums, dx. */
void vbs_instance_norm_backward(const vbs_grad_args *g) {
    const vbs_op_args *a = g->fwd;
    int64_t c = a->xs[0]->d[1], planes = a->xs[0]->d[0] * c, sz = vbs_shape_numel(a->xs[0]) / planes;
    group gr = {1, sz, sz};
    for (int64_t p = 0; p < planes; p++) {
        const float *x = a->x[0] + p * sz;
        group_backward(x, g->dy[0] + p * sz, &gr, group_shift(x, &gr), a->node->a.norm.eps, a->x[1][p % c],
                       grad_at(g->dx[0], p * sz), grad_at(g->dx[1], p % c), grad_at(g->dx[2], p % c));
    }
}

void vbs_instance_norm_backward_naive(const vbs_grad_args *g) {
    const vbs_op_args *a = g->fwd;
    int64_t c = a->xs[0]->d[1], planes = a->xs[0]->d[0] * c, sz = vbs_shape_numel(a->xs[0]) / planes;
    group gr = {1, sz, sz};
    for (int64_t p = 0; p < planes; p++)
        naive_backward(a->x[0] + p * sz, g->dy[0] + p * sz, &gr, a->node->a.norm.eps, a->x[1][p % c], grad_at(g->dx[0], p * sz),
                       grad_at(g->dx[1], p % c), grad_at(g->dx[2], p % c));
}
