/*
 * gradcheck.h: the harness the backward-pass tests share. A case is one
 * node whose inputs are all graph inputs (built with models/builder.c and
 * planned by plan.c, as the trainer does), called directly through its
 * op-table row so that a test controls the mode (training, sampling, seed).
 *
 *   gc_case c;
 *   if (!gc_new(&c, VBS_OP_CONV, 3, shapes, n_attr, attr, b, label)) ...
 *   gc_fd(&c, tol)        backward (naive kernels) against central finite
 *                         differences of L = sum dy . y, per element on tiny
 *                         tensors and along random directions on larger ones
 *   gc_fast_naive(&c, t)  the fast backward against the naive backward
 *   gc_free(&c);
 *
 * L is accumulated in double; the forward kernels return float, so the
 * finite-difference tolerance is relative to a noise estimate (the spread
 * of L itself times float epsilon over the step), as in kann's checker.
 * Inputs whose gradient a case does not want (integer-like tensors such as
 * running statistics) are left out with gc_skip(&c, i).
 */
#ifndef VBS_TESTS_GRADCHECK_H
#define VBS_TESTS_GRADCHECK_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "builder.h"
#include "check.h"

static uint64_t gc_rs = 0x9E3779B97F4A7C15ull;
static inline uint64_t gc_rnd(void) { gc_rs ^= gc_rs << 13; gc_rs ^= gc_rs >> 7; gc_rs ^= gc_rs << 17; return gc_rs; }
static inline int64_t gc_ri(int64_t lo, int64_t hi) { return lo + (int64_t)(gc_rnd() % (uint64_t)(hi - lo + 1)); }
static inline float gc_rf(void) { return (float)((double)(gc_rnd() >> 11) / 9007199254740992.0 * 2 - 1); }

typedef struct {
    char label[256];
    vbs_model *m;
    vbs_plan plan;
    const vbs_node *node;
    int n_in, n_out;
    vbs_shape xs[VBS_MAX_IN], ys[2];
    float *x[VBS_MAX_IN];       /* inputs (NULL: omitted) */
    float *y[2], *dy[2];
    float *work, *saved;
    int64_t nx[VBS_MAX_IN], ny[2];
    int skip[VBS_MAX_IN];       /* 1: no gradient wanted for input i */
    int training, sampling;     /* forward mode (default: training 0, sampling 1) */
    uint64_t seed, sample;
} gc_case;

/* Builds the case: shapes[i].ndim < 0 leaves input i omitted. Inputs get
 * uniform values in [-1, 1) and dy likewise; change c->x[i] before checking
 * to test other ranges. 0 (and a printed reason) if the node is refused. */
static inline int gc_new(gc_case *c, vbs_op op, int n_in, const vbs_shape *shapes, int n_attr, const vbs_attr *attr, vbs_builder *b,
                  const char *label) {
    memset(c, 0, sizeof *c);
    snprintf(c->label, sizeof c->label, "%s", label);
    c->sampling = 1;
    c->seed = 11;
    c->sample = 5;
    const char *names[VBS_MAX_IN];
    for (int i = 0; i < n_in; i++) {
        char nm[16];
        snprintf(nm, sizeof nm, "x%d", i);
        if (shapes[i].ndim < 0) { names[i] = ""; continue; }
        vbs_b_input(b, nm, shapes[i].ndim, shapes[i].d, NULL);
        names[i] = vbs_b_str(b, nm);
    }
    vbs_b_node(b, op, "y", n_in, names, n_attr, attr);
    vbs_b_output(b, "y");
    if (vbs_b_finish(b, "gradcheck", &c->m)) {
        printf("  %s: refused: %s\n", label, vbs_model_errmsg(c->m));
        vbs_model_free(c->m);
        c->m = NULL;
        return 0;
    }
    vbs_shape in[VBS_MAX_IN];
    int k = 0;
    for (int i = 0; i < n_in; i++)
        if (shapes[i].ndim >= 0) in[k++] = shapes[i];
    char err[VBS_ERRLEN];
    if (vbs_plan_build(&c->plan, &c->m->g, in, err)) {
        printf("  %s: plan: %s\n", label, err);
        vbs_model_free(c->m);
        c->m = NULL;
        return 0;
    }
    const vbs_graph *g = &c->m->g;
    c->node = &c->plan.nodes[g->order[0]];
    c->n_in = c->node->n_in;
    c->n_out = c->node->n_out;
    const vbs_op_info *oi = &vbs_ops[c->node->op];
    for (int i = 0; i < c->n_in; i++) {
        if (c->node->in[i] < 0) continue;
        c->xs[i] = c->plan.shapes[c->node->in[i]];
        c->nx[i] = vbs_shape_numel(&c->xs[i]);
        c->x[i] = malloc(sizeof(float) * (size_t)c->nx[i]);
        for (int64_t j = 0; j < c->nx[i]; j++) c->x[i][j] = gc_rf();
    }
    for (int o = 0; o < c->n_out; o++) {
        c->ys[o] = c->plan.shapes[c->node->out[o]];
        c->ny[o] = vbs_shape_numel(&c->ys[o]);
        c->y[o] = malloc(sizeof(float) * (size_t)c->ny[o]);
        c->dy[o] = malloc(sizeof(float) * (size_t)c->ny[o]);
        for (int64_t j = 0; j < c->ny[o]; j++) c->dy[o][j] = gc_rf();
    }
    const vbs_shape *ins = c->xs, *outs = c->ys;
    size_t w = oi->work ? oi->work(c->node, ins, outs) : 0, bw = oi->backward_work ? oi->backward_work(c->node, ins, outs) : 0;
    size_t sv = oi->saved ? oi->saved(c->node, ins, outs) : 0;
    c->work = malloc(sizeof(float) * ((w > bw ? w : bw) + 16));
    c->saved = malloc(sizeof(float) * (sv + 16));
    return 1;
}

static inline void gc_free(gc_case *c) {
    for (int i = 0; i < VBS_MAX_IN; i++) free(c->x[i]);
    for (int o = 0; o < 2; o++) { free(c->y[o]); free(c->dy[o]); }
    free(c->work);
    free(c->saved);
    if (c->m) vbs_plan_free(&c->plan);
    vbs_model_free(c->m);
    memset(c, 0, sizeof *c);
}

static inline void gc_skip(gc_case *c, int i) { c->skip[i] = 1; }

static inline void gc_args(gc_case *c, vbs_op_args *a) {
    memset(a, 0, sizeof *a);
    a->node = c->node;
    for (int i = 0; i < c->n_in; i++) { a->x[i] = c->x[i]; a->xs[i] = c->x[i] ? &c->xs[i] : NULL; }
    for (int o = 0; o < c->n_out; o++) { a->y[o] = c->y[o]; a->ys[o] = &c->ys[o]; }
    a->work = c->work;
    a->saved = c->saved;
    a->seed = c->seed;
    a->sample = c->sample;
    a->sampling = c->sampling;
    a->training = c->training;
}

static inline void gc_forward(gc_case *c, int naive) {
    vbs_op_args a;
    gc_args(c, &a);
    (naive ? vbs_ops[c->node->op].naive : vbs_ops[c->node->op].forward)(&a);
}

/* L = sum_o dy_o . y_o after a naive forward, in double */
static inline double gc_loss(gc_case *c) {
    gc_forward(c, 1);
    double l = 0;
    for (int o = 0; o < c->n_out; o++)
        for (int64_t j = 0; j < c->ny[o]; j++) l += (double)c->dy[o][j] * c->y[o][j];
    return l;
}

/* Runs forward then backward with the fast (naive = 0) or naive kernels;
 * dx[i] (nx[i] floats, pre-filled by the caller: the kernel accumulates)
 * or NULL where skipped. 0 if the op has no backward. */
static inline int gc_backward_fresh(gc_case *c, int naive, float **dx, unsigned fresh) {
    const vbs_op_info *oi = &vbs_ops[c->node->op];
    vbs_backward_fn fn = naive ? oi->backward_naive : oi->backward;
    if (!fn) { printf("  %s: %s has no %s backward\n", c->label, oi->name, naive ? "naive" : "fast"); return 0; }
    vbs_op_args a;
    gc_args(c, &a);
    gc_forward(c, naive);
    vbs_grad_args g;
    memset(&g, 0, sizeof g);
    g.fwd = &a;
    for (int o = 0; o < c->n_out; o++) g.dy[o] = c->dy[o];
    for (int i = 0; i < c->n_in; i++) g.dx[i] = c->x[i] && !c->skip[i] ? dx[i] : NULL;
    g.work = c->work;
    g.fresh = fresh;
    fn(&g);
    return 1;
}

static inline int gc_backward(gc_case *c, int naive, float **dx) { return gc_backward_fresh(c, naive, dx, 0); }

static inline float **gc_alloc_dx(gc_case *c, float fillv) {
    float **dx = calloc(VBS_MAX_IN, sizeof(float *));
    for (int i = 0; i < c->n_in; i++) {
        if (!c->x[i]) continue;
        dx[i] = malloc(sizeof(float) * (size_t)c->nx[i]);
        for (int64_t j = 0; j < c->nx[i]; j++) dx[i][j] = fillv;
    }
    return dx;
}

static inline void gc_free_dx(float **dx) {
    for (int i = 0; i < VBS_MAX_IN; i++) free(dx[i]);
    free(dx);
}

/* The naive backward against central differences of the naive forward.
 * Tensors of at most 64 elements are checked element by element, larger
 * ones along 6 random directions. rtol is relative to max(|analytic|,
 * |numeric|, noise). Also checks that backward accumulates (+=): dx is
 * pre-filled with 0.25 and the check subtracts it. Returns 1 on pass. */
static inline int gc_fd(gc_case *c, double rtol) {
    float **dx = gc_alloc_dx(c, 0.25f);
    if (!gc_backward(c, 1, dx)) { gc_free_dx(dx); return 0; }
    const double h = 1e-2;
    int ok = 1;
    double l0 = gc_loss(c), scale = 0;
    for (int o = 0; o < c->n_out; o++)
        for (int64_t j = 0; j < c->ny[o]; j++) scale += fabs((double)c->dy[o][j] * c->y[o][j]);
    double noise = (scale + fabs(l0)) * 6e-8 / h; /* float rounding of L over the step */
    for (int i = 0; i < c->n_in && ok; i++) {
        if (!c->x[i] || c->skip[i]) continue;
        int64_t n = c->nx[i];
        int per_elem = n <= 64;
        int ndir = per_elem ? (int)n : 6;
        float *u = malloc(sizeof(float) * (size_t)n), *x0 = malloc(sizeof(float) * (size_t)n);
        memcpy(x0, c->x[i], sizeof(float) * (size_t)n);
        for (int d = 0; d < ndir && ok; d++) {
            for (int64_t j = 0; j < n; j++) u[j] = per_elem ? (j == d) : gc_rf();
            double an = 0;
            for (int64_t j = 0; j < n; j++) an += ((double)dx[i][j] - 0.25) * u[j];
            for (int64_t j = 0; j < n; j++) c->x[i][j] = (float)(x0[j] + h * u[j]);
            double lp = gc_loss(c);
            for (int64_t j = 0; j < n; j++) c->x[i][j] = (float)(x0[j] - h * u[j]);
            double lm = gc_loss(c);
            memcpy(c->x[i], x0, sizeof(float) * (size_t)n);
            double num = (lp - lm) / (2 * h);
            double tol = rtol * fmax(fmax(fabs(an), fabs(num)), 1e-3) + 4 * noise;
            if (fabs(an - num) > tol) {
                printf("  %s: input %d %s %d: analytic %.7g, numeric %.7g (tol %.3g)\n", c->label, i,
                       per_elem ? "element" : "direction", d, an, num, tol);
                ok = 0;
            }
        }
        free(u);
        free(x0);
    }
    gc_forward(c, 1);
    gc_free_dx(dx);
    return ok;
}

/* An op with backward_fresh: its fast backward with every wanted dx it
 * honours fresh for marked fresh and filled with NaN (the others zero) must
 * give the bits it gives adding to zeros (a kernel that reads, or leaves,
 * an element it should write shows). */
static inline int gc_fresh(gc_case *c) {
    unsigned fresh = 0;
    for (int i = 0; i < c->n_in; i++) fresh |= (unsigned)(c->x[i] && !c->skip[i] && (vbs_ops[c->node->op].backward_fresh >> i & 1)) << i;
    if (!fresh) return 1;
    float **a = gc_alloc_dx(c, 0.f), **b = gc_alloc_dx(c, 0.f);
    for (int i = 0; i < c->n_in; i++)
        for (int64_t j = 0; b[i] && (fresh >> i & 1) && j < c->nx[i]; j++) b[i][j] = NAN;
    int ok = gc_backward(c, 0, a) && gc_backward_fresh(c, 0, b, fresh);
    for (int i = 0; i < c->n_in && ok; i++) {
        if (!a[i] || c->skip[i]) continue;
        int64_t bad = 0, first = -1;
        for (int64_t j = 0; j < c->nx[i]; j++)
            if (memcmp(&a[i][j], &b[i][j], sizeof(float))) { bad++; if (first < 0) first = j; }
        if (bad) {
            printf("  %s dx%d written fresh: %lld of %lld differ from adding to zeros (first [%lld]: %.7g, want %.7g)\n", c->label, i,
                   (long long)bad, (long long)c->nx[i], (long long)first, b[i][first], a[i][first]);
            ok = 0;
        }
    }
    gc_free_dx(a);
    gc_free_dx(b);
    return ok;
}

/* The fast backward against the naive backward (both accumulating onto the
 * same random prefill), and gc_fresh. Returns 1 on pass. */
static inline int gc_fast_naive(gc_case *c, double atol, double rtol) {
    if (!gc_fresh(c)) return 0;
    float **a = gc_alloc_dx(c, 0.f), **b = gc_alloc_dx(c, 0.f);
    for (int i = 0; i < c->n_in; i++)
        if (a[i])
            for (int64_t j = 0; j < c->nx[i]; j++) a[i][j] = b[i][j] = gc_rf();
    int ok = gc_backward(c, 0, a) && gc_backward(c, 1, b);
    for (int i = 0; i < c->n_in && ok; i++) {
        if (!a[i] || c->skip[i]) continue;
        char what[300];
        snprintf(what, sizeof what, "%s dx%d", c->label, i);
        ok = close_enough(what, a[i], b[i], (long)c->nx[i], atol, rtol);
    }
    gc_free_dx(a);
    gc_free_dx(b);
    return ok;
}

static inline vbs_shape gc_shape(int nd, const int64_t *d) {
    vbs_shape s = {nd, {0}};
    for (int i = 0; i < nd; i++) s.d[i] = d[i];
    return s;
}

#endif
