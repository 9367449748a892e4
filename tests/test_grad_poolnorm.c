/*
 * test_grad_poolnorm.c: the backward passes of MaxPool, AveragePool,
 * GlobalAveragePool, BatchNormalization (training and inference) and
 * InstanceNormalization.
 *  - naive backward against central finite differences in double (per
 *    element on tensors of <= 64 elements, random directions above), over
 *    seeded tables of 1D/2D/3D kernels, strides, pads, dilations, ceil_mode,
 *    count_include_pad and auto_pad; a failing case prints all of them;
 *  - fast backward against naive (this program runs again with
 *    VBS_NO_AVX2=1 for the baseline paths);
 *  - MaxPool ties (no finite difference there): the gradient goes to the
 *    first maximum of each window in scan order, checked against windows
 *    enumerated here (max first, then the first tap equal to it);
 *  - BatchNormalization's training forward: the saved batch statistics and
 *    the output's per-channel moments against their analytic values, and
 *    the running-statistics update against its formula.
 * `test_grad_poolnorm --dump DIR` writes fixed cases (tie-rich pools, both
 * BatchNormalization modes with the running update, InstanceNormalization)
 * as .npy for tests/torch_poolnorm.py, which checks them against PyTorch.
 */
#include <stdio.h>
#include <stdlib.h>

#include "gradcheck.h"
#include "ops/ops.h"

/* ---- pools ----------------------------------------------------------------- */

typedef struct {
    int nsp;
    int64_t k[3], s[3], d[3], p[6]; /* p: begins, then ends */
    int ceil_mode, cip;
    const char *auto_pad;           /* NULL: explicit pads */
} pool_params;

static void pool_label(char *out, size_t n, vbs_op op, const vbs_shape *x, const pool_params *pp, const char *extra) {
    int at = snprintf(out, n, "%s %dD x", vbs_ops[op].name, pp->nsp);
    for (int i = 0; i < x->ndim; i++) at += snprintf(out + at, n - (size_t)at, "%s%lld", i ? "," : "", (long long)x->d[i]);
    at += snprintf(out + at, n - (size_t)at, " k");
    for (int i = 0; i < pp->nsp; i++) at += snprintf(out + at, n - (size_t)at, "%s%lld", i ? "," : "", (long long)pp->k[i]);
    at += snprintf(out + at, n - (size_t)at, " s");
    for (int i = 0; i < pp->nsp; i++) at += snprintf(out + at, n - (size_t)at, "%s%lld", i ? "," : "", (long long)pp->s[i]);
    at += snprintf(out + at, n - (size_t)at, " d");
    for (int i = 0; i < pp->nsp; i++) at += snprintf(out + at, n - (size_t)at, "%s%lld", i ? "," : "", (long long)pp->d[i]);
    if (pp->auto_pad) at += snprintf(out + at, n - (size_t)at, " auto_pad %s", pp->auto_pad);
    else {
        at += snprintf(out + at, n - (size_t)at, " pads");
        for (int i = 0; i < 2 * pp->nsp; i++) at += snprintf(out + at, n - (size_t)at, "%s%lld", i ? "," : "", (long long)pp->p[i]);
    }
    snprintf(out + at, n - (size_t)at, " ceil%d cip%d %s", pp->ceil_mode, pp->cip, extra);
}

static int pool_case(gc_case *c, vbs_op op, const vbs_shape *x, const pool_params *pp, const char *label) {
    vbs_builder *b = vbs_b_new(1);
    vbs_attr a[7];
    int na = 0;
    a[na++] = vbs_b_ints(b, "kernel_shape", pp->nsp, pp->k);
    a[na++] = vbs_b_ints(b, "strides", pp->nsp, pp->s);
    a[na++] = vbs_b_ints(b, "dilations", pp->nsp, pp->d);
    a[na++] = vbs_b_int(b, "ceil_mode", pp->ceil_mode);
    if (pp->auto_pad) a[na++] = vbs_b_string(b, "auto_pad", pp->auto_pad);
    else a[na++] = vbs_b_ints(b, "pads", 2 * pp->nsp, pp->p);
    if (op == VBS_OP_AVERAGE_POOL) a[na++] = vbs_b_int(b, "count_include_pad", pp->cip);
    return gc_new(c, op, 1, x, na, a, b, label);
}

/* Distinct values, >= step apart, in shuffled order: no window of a MaxPool
 * has a tie or a near-tie the finite-difference step could swap. */
static void fill_distinct(float *x, int64_t n, float step) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(i - n / 2) * step;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = gc_ri(0, i);
        float t = x[i];
        x[i] = x[j];
        x[j] = t;
    }
}

/* A random window that fits its input (never refused). tiny: per-element
 * finite differences (at most 64 input elements). */
static void random_pool(int tiny, vbs_shape *x, pool_params *pp) {
    memset(pp, 0, sizeof *pp);
    pp->nsp = (int)gc_ri(1, 3);
    x->ndim = 2 + pp->nsp;
    x->d[0] = tiny ? 1 : gc_ri(1, 2);
    x->d[1] = tiny ? gc_ri(1, 2) : gc_ri(1, 3);
    static const char *const modes[] = {"SAME_UPPER", "SAME_LOWER", "VALID"};
    pp->auto_pad = gc_ri(0, 5) == 0 ? modes[gc_ri(0, 2)] : NULL;
    pp->ceil_mode = (int)gc_ri(0, 1);
    pp->cip = (int)gc_ri(0, 1);
    int64_t budget = tiny ? 64 / x->d[1] : 1 << 30;
    for (int i = 0; i < pp->nsp; i++) {
        pp->k[i] = gc_ri(1, 3);
        pp->s[i] = gc_ri(1, 3);
        pp->d[i] = gc_ri(1, 2);
        /* pads up to the kernel: some windows hold padding only */
        pp->p[i] = gc_ri(0, pp->k[i]);
        pp->p[pp->nsp + i] = gc_ri(0, pp->k[i]);
        int64_t keff = (pp->k[i] - 1) * pp->d[i] + 1, lo = keff > 2 ? keff : 2;
        int64_t hi = tiny ? (pp->nsp == 1 ? 12 : pp->nsp == 2 ? 6 : 3) : (pp->nsp == 3 ? 7 : 11);
        if (hi < lo) hi = lo;
        x->d[2 + i] = gc_ri(lo, hi);
    }
    if (tiny) /* shrink the last axes until the tensor is per-element sized (windows still fit) */
        for (int i = pp->nsp - 1; i >= 0; i--) {
            int64_t n = 1, keff = (pp->k[i] - 1) * pp->d[i] + 1;
            for (int j = 0; j < pp->nsp; j++) n *= x->d[2 + j];
            while (n > budget && x->d[2 + i] > keff) {
                n = n / x->d[2 + i] * (x->d[2 + i] - 1);
                x->d[2 + i]--;
            }
        }
}

static void sweep_pool(vbs_op op, int cases) {
    int ran = 0;
    for (int t = 0; t < cases; t++) {
        int tiny = t % 2 == 0;
        vbs_shape x;
        pool_params pp;
        random_pool(tiny, &x, &pp);
        char label[256];
        pool_label(label, sizeof label, op, &x, &pp, vbs_shape_numel(&x) <= 64 ? "(per element)" : "(directions)");
        gc_case c;
        if (!pool_case(&c, op, &x, &pp, label)) {
            CHECK(0, "%s: refused", label);
            continue;
        }
        ran++;
        if (op == VBS_OP_MAX_POOL) fill_distinct(c.x[0], c.nx[0], 0.05f);
        CHECK(gc_fd(&c, 1e-3), "%s: finite differences", label);
        CHECK(gc_fast_naive(&c, 1e-6, 1e-5), "%s: fast vs naive", label);
        gc_free(&c);
    }
    CHECK(ran == cases, "%s sweep ran %d of %d cases", vbs_ops[op].name, ran, cases);
}

/* The U-Nets' 2x2 and 2x2x2 stride-2 MaxPools (the fast paths): odd and
 * even sizes, widths across the vector loop's tail, distinct values for the
 * finite differences, then tie-rich values (0, 1, 2) fast against naive. */
static void sweep_max_halving(void) {
    for (int t = 0; t < 32; t++) {
        int nsp = t % 2 ? 3 : 2;
        vbs_shape x = {2 + nsp, {gc_ri(1, 3), gc_ri(1, 4)}};
        for (int i = 0; i < nsp; i++) x.d[2 + i] = gc_ri(2, nsp == 3 ? 7 : 11);
        if (t % 4 < 2) x.d[1 + nsp] = gc_ri(30, 70);
        pool_params pp = {.nsp = nsp, .k = {2, 2, 2}, .s = {2, 2, 2}, .d = {1, 1, 1}};
        if (t % 5 == 4) { /* even sizes: SAME pads nothing */
            pp.auto_pad = "SAME_UPPER";
            for (int i = 0; i < nsp; i++) x.d[2 + i] &= ~1LL;
        }
        char label[256];
        pool_label(label, sizeof label, VBS_OP_MAX_POOL, &x, &pp, "(halving fast path)");
        gc_case c;
        if (!pool_case(&c, VBS_OP_MAX_POOL, &x, &pp, label)) { CHECK(0, "%s: refused", label); continue; }
        fill_distinct(c.x[0], c.nx[0], 0.05f);
        CHECK(gc_fd(&c, 1e-3), "%s: finite differences", label);
        CHECK(gc_fast_naive(&c, 1e-6, 1e-5), "%s: fast vs naive", label);
        for (int64_t i = 0; i < c.nx[0]; i++) c.x[0][i] = (float)gc_ri(0, 2);
        CHECK(gc_fast_naive(&c, 1e-6, 1e-5), "%s: fast vs naive with ties", label);
        gc_free(&c);
    }
}

/* The tie convention, enumerated here: each window's maximum over its
 * in-range taps, then the first tap in scan order equal to it takes dy. */
static void first_max_oracle(const gc_case *c, const pool_params *pp, float *want) {
    int nsp = pp->nsp, off = 3 - nsp;
    int64_t in[3] = {1, 1, 1}, out[3] = {1, 1, 1}, k[3] = {1, 1, 1}, s[3] = {1, 1, 1}, d[3] = {1, 1, 1}, pb[3] = {0, 0, 0};
    const vbs_window_attr *w = &c->node->a.win; /* pads as resolved for this shape (auto_pad) */
    for (int i = 0; i < nsp; i++) {
        in[off + i] = c->xs[0].d[2 + i];
        out[off + i] = c->ys[0].d[2 + i];
        k[off + i] = pp->k[i];
        s[off + i] = pp->s[i];
        d[off + i] = pp->d[i];
        pb[off + i] = w->pad[i];
    }
    int64_t isz = in[0] * in[1] * in[2], osz = out[0] * out[1] * out[2];
    memset(want, 0, sizeof(float) * (size_t)c->nx[0]);
    for (int64_t p = 0; p < c->xs[0].d[0] * c->xs[0].d[1]; p++)
        for (int64_t o = 0; o < osz; o++) {
            int64_t oi[3] = {o / (out[1] * out[2]), o / out[2] % out[1], o % out[2]}, taps[64], nt = 0;
            for (int64_t a = 0; a < k[0]; a++)
                for (int64_t b = 0; b < k[1]; b++)
                    for (int64_t e = 0; e < k[2]; e++) {
                        int64_t at[3] = {oi[0] * s[0] - pb[0] + a * d[0], oi[1] * s[1] - pb[1] + b * d[1], oi[2] * s[2] - pb[2] + e * d[2]};
                        if (at[0] < 0 || at[0] >= in[0] || at[1] < 0 || at[1] >= in[1] || at[2] < 0 || at[2] >= in[2]) continue;
                        taps[nt++] = p * isz + (at[0] * in[1] + at[1]) * in[2] + at[2];
                    }
            if (!nt) continue;
            float mx = c->x[0][taps[0]];
            for (int64_t j = 1; j < nt; j++) mx = fmaxf(mx, c->x[0][taps[j]]);
            for (int64_t j = 0; j < nt; j++)
                if (c->x[0][taps[j]] == mx) {
                    want[taps[j]] += c->dy[0][p * osz + o];
                    break;
                }
        }
}

static void tie_case(const char *what, vbs_shape x, pool_params pp, int constant) {
    char label[256];
    pool_label(label, sizeof label, VBS_OP_MAX_POOL, &x, &pp, what);
    gc_case c;
    if (!pool_case(&c, VBS_OP_MAX_POOL, &x, &pp, label)) { CHECK(0, "%s: refused", label); return; }
    /* a negative constant: windows over padding must not prefer the padding */
    for (int64_t i = 0; i < c.nx[0]; i++) c.x[0][i] = constant ? -3.f : (float)gc_ri(0, 1);
    float *want = malloc(sizeof(float) * (size_t)c.nx[0]);
    first_max_oracle(&c, &pp, want);
    if (constant) { /* every window holds equal values: its first in-range tap takes it all */
        int64_t firsts = 0;
        for (int64_t i = 0; i < c.nx[0]; i++) firsts += want[i] != 0;
        CHECK(firsts > 0, "%s: no gradient at all", label);
    }
    for (int naive = 0; naive <= 1; naive++) {
        float **dx = gc_alloc_dx(&c, 0.f);
        gc_backward(&c, naive, dx);
        char what2[300];
        snprintf(what2, sizeof what2, "%s %s", label, naive ? "naive" : "fast");
        CHECK(close_enough(what2, dx[0], want, (long)c.nx[0], 1e-6, 1e-6), "%s: first maximum in scan order", what2);
        gc_free_dx(dx);
    }
    free(want);
    gc_free(&c);
}

static void max_pool_ties(void) {
    /* hand case: the 2x2 window (1 2 / 2 2) sends its gradient to the first 2 */
    {
        vbs_shape x = {4, {1, 1, 2, 2}};
        pool_params pp = {.nsp = 2, .k = {2, 2}, .s = {2, 2}, .d = {1, 1}};
        gc_case c;
        if (pool_case(&c, VBS_OP_MAX_POOL, &x, &pp, "MaxPool 2x2 hand tie")) {
            const float xv[4] = {1, 2, 2, 2}, want[4] = {0, 0.5f, 0, 0};
            memcpy(c.x[0], xv, sizeof xv);
            c.dy[0][0] = 0.5f;
            for (int naive = 0; naive <= 1; naive++) {
                float **dx = gc_alloc_dx(&c, 0.f);
                gc_backward(&c, naive, dx);
                CHECK(close_enough(naive ? "2x2 hand tie naive" : "2x2 hand tie fast", dx[0], want, 4, 0, 0), "2x2 hand tie");
                gc_free_dx(dx);
            }
            gc_free(&c);
        }
    }
    for (int constant = 1; constant >= 0; constant--) {
        const char *what = constant ? "(all equal)" : "(values 0/1)";
        tie_case(what, (vbs_shape){4, {2, 3, 8, 10}}, (pool_params){.nsp = 2, .k = {2, 2}, .s = {2, 2}, .d = {1, 1}}, constant);
        tie_case(what, (vbs_shape){4, {1, 2, 7, 9}}, (pool_params){.nsp = 2, .k = {2, 2}, .s = {2, 2}, .d = {1, 1}}, constant);
        tie_case(what, (vbs_shape){4, {1, 2, 6, 7}},
                 (pool_params){.nsp = 2, .k = {3, 3}, .s = {1, 1}, .d = {1, 1}, .p = {1, 1, 1, 1}}, constant);
        tie_case(what, (vbs_shape){4, {1, 1, 7, 8}},
                 (pool_params){.nsp = 2, .k = {3, 2}, .s = {2, 1}, .d = {1, 2}, .p = {1, 0, 2, 1}, .ceil_mode = 1}, constant);
        tie_case(what, (vbs_shape){5, {1, 2, 4, 5, 6}},
                 (pool_params){.nsp = 3, .k = {2, 2, 2}, .s = {2, 2, 2}, .d = {1, 1, 1}}, constant);
        tie_case(what, (vbs_shape){5, {1, 1, 5, 5, 6}},
                 (pool_params){.nsp = 3, .k = {3, 2, 3}, .s = {1, 2, 2}, .d = {2, 1, 1}, .p = {2, 0, 1, 0, 1, 1}}, constant);
        tie_case(what, (vbs_shape){3, {2, 2, 11}}, (pool_params){.nsp = 1, .k = {3}, .s = {2}, .d = {1}, .p = {1, 1}, .ceil_mode = 1},
                 constant);
        tie_case(what, (vbs_shape){3, {1, 1, 9}}, (pool_params){.nsp = 1, .k = {2}, .s = {1}, .d = {1}, .auto_pad = "SAME_LOWER"},
                 constant);
    }
}

static void global_average_pool(void) {
    const vbs_shape shapes[] = {{3, {1, 2, 5}}, {4, {2, 3, 3, 3}}, {5, {1, 2, 2, 3, 2}}, {4, {2, 3, 17, 19}}, {5, {2, 2, 6, 5, 7}}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        char label[128];
        snprintf(label, sizeof label, "GlobalAveragePool %dD x%lld,%lld,%lld,...", shapes[t].ndim - 2, (long long)shapes[t].d[0],
                 (long long)shapes[t].d[1], (long long)shapes[t].d[2]);
        vbs_builder *b = vbs_b_new(1);
        gc_case c;
        if (!gc_new(&c, VBS_OP_GLOBAL_AVERAGE_POOL, 1, &shapes[t], 0, NULL, b, label)) { CHECK(0, "%s: refused", label); continue; }
        CHECK(gc_fd(&c, 1e-3), "%s: finite differences", label);
        CHECK(gc_fast_naive(&c, 1e-6, 1e-5), "%s: fast vs naive", label);
        gc_free(&c);
    }
}

/* ---- normalisations ------------------------------------------------------ */

static vbs_shape random_norm_shape(int min_nd, int tiny) {
    vbs_shape x = {(int)gc_ri(min_nd, 5), {0}};
    for (int i = 0; i < x.ndim; i++) x.d[i] = gc_ri(1, 4);
    x.d[0] = gc_ri(tiny ? 1 : 2, tiny ? 2 : 4);
    x.d[1] = gc_ri(1, 3);
    int64_t n = vbs_shape_numel(&x);
    for (int i = x.ndim - 1; tiny && i >= 2 && n > 64; i--)
        while (n > 64 && x.d[i] > 1) { n = n / x.d[i] * (x.d[i] - 1); x.d[i]--; }
    return x;
}

/* Normalising a plane of two or three close values is nearly a step
 * function, whose curvature a finite difference with step 1e-2 cannot
 * follow: inputs 1 apart keep every standard deviation >= 0.5, 50 steps. */
static void spread(gc_case *c) { fill_distinct(c->x[0], c->nx[0], 1.f); }

static void shape_label(char *out, size_t n, const char *op, const vbs_shape *x, const char *extra) {
    int at = snprintf(out, n, "%s x", op);
    for (int i = 0; i < x->ndim; i++) at += snprintf(out + at, n - (size_t)at, "%s%lld", i ? "," : "", (long long)x->d[i]);
    snprintf(out + at, n - (size_t)at, " %s", extra);
}

static int bn_case(gc_case *c, const vbs_shape *x, int n_attr, const char *const *names, const float *vals, const char *label) {
    vbs_shape ch = {1, {x->d[1]}}, sh[5] = {*x, ch, ch, ch, ch};
    vbs_builder *b = vbs_b_new(1);
    vbs_attr a[2];
    for (int i = 0; i < n_attr; i++) a[i] = vbs_b_float(b, names[i], vals[i]);
    if (!gc_new(c, VBS_OP_BATCH_NORM, 5, sh, n_attr, a, b, label)) return 0;
    for (int64_t i = 0; i < c->nx[4]; i++) c->x[4][i] = 0.3f + 0.5f * (1 + gc_rf()); /* running variance > 0 */
    return 1;
}

/* Mean and biased variance in double of channel ch of v, shaped like input 0. */
static void channel_moments(const gc_case *c, const float *v, int64_t ch, double *mean, double *var) {
    int64_t N = c->xs[0].d[0], C = c->xs[0].d[1], sz = c->nx[0] / (N * C);
    double s = 0, s2 = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < sz; i++) s += v[(n * C + ch) * sz + i];
    *mean = s / (double)(N * sz);
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < sz; i++) {
            double d = v[(n * C + ch) * sz + i] - *mean;
            s2 += d * d;
        }
    *var = s2 / (double)(N * sz);
}

/* The fast training forward against the naive one, and both against the
 * definition: saved = the batch mean and biased variance computed here in
 * double; each output channel has mean = bias and biased variance
 * scale^2 var / (var + eps). */
static void bn_training_forward(gc_case *c, double eps, const char *label) {
    int64_t C = c->xs[0].d[1];
    float *yf = malloc(sizeof(float) * (size_t)c->nx[0]), *sf = malloc(sizeof(float) * 2 * (size_t)C);
    gc_forward(c, 0);
    memcpy(yf, c->y[0], sizeof(float) * (size_t)c->nx[0]);
    memcpy(sf, c->saved, sizeof(float) * 2 * (size_t)C);
    gc_forward(c, 1);
    char what[300];
    snprintf(what, sizeof what, "%s y fast vs naive", label);
    CHECK(close_enough(what, yf, c->y[0], (long)c->nx[0], 1e-5, 1e-5), "%s", what);
    for (int64_t ch = 0; ch < C; ch++) {
        double mean, var, ymean, yvar;
        channel_moments(c, c->x[0], ch, &mean, &var);
        channel_moments(c, yf, ch, &ymean, &yvar);
        double g = c->x[1][ch], want_var = g * g * var / (var + eps);
        /* float sums: the mean's error scales with the data's magnitude, |mean| + sd */
        double mtol = 1e-6 * (1 + fabs(mean) + sqrt(var)), vtol = 1e-5 * (1 + var);
        CHECK(fabs(sf[ch] - mean) <= mtol && fabs(sf[C + ch] - var) <= vtol, "%s channel %lld: saved (fast) %g %g, want mean %g var %g",
              label, (long long)ch, sf[ch], sf[C + ch], mean, var);
        CHECK(fabs(c->saved[ch] - mean) <= mtol && fabs(c->saved[C + ch] - var) <= vtol,
              "%s channel %lld: saved (naive) %g %g, want mean %g var %g", label, (long long)ch, c->saved[ch], c->saved[C + ch], mean, var);
        CHECK(fabs(ymean - c->x[2][ch]) <= 1e-5 * (1 + fabs(c->x[2][ch])) && fabs(yvar - want_var) <= 1e-4 * (1 + want_var),
              "%s channel %lld: output mean %g var %g, want %g %g", label, (long long)ch, ymean, yvar, c->x[2][ch], want_var);
    }
    free(yf);
    free(sf);
}

/* vbs_batch_norm_update_running against the formula with the batch
 * statistics computed here: unbiased variance, ONNX momentum. */
static void bn_running_update(gc_case *c, double momentum, const char *label) {
    int64_t C = c->xs[0].d[1], sz = c->nx[0] / (c->xs[0].d[0] * C), M = c->xs[0].d[0] * sz;
    gc_forward(c, 0);
    float *rm = malloc(sizeof(float) * (size_t)C), *rv = malloc(sizeof(float) * (size_t)C);
    memcpy(rm, c->x[3], sizeof(float) * (size_t)C);
    memcpy(rv, c->x[4], sizeof(float) * (size_t)C);
    vbs_batch_norm_update_running(c->node, C, M, c->saved, rm, rv);
    for (int64_t ch = 0; ch < C; ch++) {
        double mean, var;
        channel_moments(c, c->x[0], ch, &mean, &var);
        double unb = M > 1 ? var * (double)M / (double)(M - 1) : 0;
        double wm = c->x[3][ch] * momentum + mean * (1 - momentum), wv = c->x[4][ch] * momentum + unb * (1 - momentum);
        CHECK(fabs(rm[ch] - wm) <= 1e-6 * (1 + fabs(wm)) && fabs(rv[ch] - wv) <= 1e-5 * (1 + wv),
              "%s channel %lld: running mean %g var %g, want %g %g", label, (long long)ch, rm[ch], rv[ch], wm, wv);
    }
    free(rm);
    free(rv);
}

/* The fast training backward without a saved buffer recomputes the mean. */
static void bn_without_saved(gc_case *c, const char *label) {
    float **a = gc_alloc_dx(c, 0.f), **b = gc_alloc_dx(c, 0.f);
    gc_backward(c, 1, b);
    vbs_op_args fa;
    gc_args(c, &fa);
    gc_forward(c, 0);
    fa.saved = NULL;
    vbs_grad_args g;
    memset(&g, 0, sizeof g);
    g.fwd = &fa;
    g.dy[0] = c->dy[0];
    for (int i = 0; i < 3; i++) g.dx[i] = a[i];
    vbs_ops[VBS_OP_BATCH_NORM].backward(&g);
    for (int i = 0; i < 3; i++) {
        char what[300];
        snprintf(what, sizeof what, "%s no saved, dx%d", label, i);
        CHECK(close_enough(what, a[i], b[i], (long)c->nx[i], 2e-5, 1e-4), "%s", what);
    }
    gc_free_dx(a);
    gc_free_dx(b);
}

static void sweep_batch_norm(int cases) {
    for (int t = 0; t < cases; t++) {
        int tiny = t % 2 == 0, training = t % 4 < 2, skip = t % 3 == 0, shifted = t % 7 == 6;
        vbs_shape x = random_norm_shape(2, tiny);
        const char *names[2] = {"epsilon", "momentum"};
        float vals[2] = {t % 5 == 0 ? 1e-3f : 1e-5f, 0.7f};
        int n_attr = (int)gc_ri(0, 2);
        char extra[160], label[256];
        snprintf(extra, sizeof extra, "%s eps %g momentum %g%s%s (%s)", training ? "training" : "inference",
                 (double)(n_attr ? vals[0] : 1e-5f), n_attr > 1 ? 0.7 : 0.9, skip ? " dx3/dx4 NULL" : "",
                 shifted ? " x+100" : "", vbs_shape_numel(&x) <= 64 ? "per element" : "directions");
        shape_label(label, sizeof label, "BatchNormalization", &x, extra);
        gc_case c;
        if (!bn_case(&c, &x, n_attr, names, vals, label)) { CHECK(0, "%s: refused", label); continue; }
        c.training = training;
        if (skip) { gc_skip(&c, 3); gc_skip(&c, 4); }
        spread(&c);
        CHECK(gc_fd(&c, 1e-2), "%s: finite differences", label);
        if (shifted) /* a mean far from 0: the fast kernels' two-pass statistics keep their precision */
            for (int64_t i = 0; i < c.nx[0]; i++) c.x[0][i] += 100.f;
        CHECK(gc_fast_naive(&c, 2e-5, 1e-4), "%s: fast vs naive", label);
        if (training) {
            double eps = n_attr ? vals[0] : 1e-5;
            bn_training_forward(&c, eps, label);
            bn_running_update(&c, n_attr > 1 ? 0.7 : 0.9, label);
            bn_without_saved(&c, label);
        }
        gc_free(&c);
    }
}

static void sweep_instance_norm(int cases) {
    for (int t = 0; t < cases; t++) {
        int tiny = t % 2 == 0, shifted = t % 5 == 4;
        vbs_shape x = random_norm_shape(3, tiny), ch = {1, {x.d[1]}}, sh[3] = {x, ch, ch};
        float eps = t % 3 == 0 ? 1e-3f : 1e-5f;
        char extra[96], label[256];
        snprintf(extra, sizeof extra, "eps %g%s (%s)", (double)eps, shifted ? " x+100" : "",
                 vbs_shape_numel(&x) <= 64 ? "per element" : "directions");
        shape_label(label, sizeof label, "InstanceNormalization", &x, extra);
        vbs_builder *b = vbs_b_new(1);
        vbs_attr a = vbs_b_float(b, "epsilon", eps);
        gc_case c;
        if (!gc_new(&c, VBS_OP_INSTANCE_NORM, 3, sh, 1, &a, b, label)) { CHECK(0, "%s: refused", label); continue; }
        c.training = t % 3 == 1; /* the mode changes nothing here */
        spread(&c);
        CHECK(gc_fd(&c, 1e-2), "%s: finite differences", label);
        if (shifted)
            for (int64_t i = 0; i < c.nx[0]; i++) c.x[0][i] += 100.f;
        CHECK(gc_fast_naive(&c, 2e-5, 1e-4), "%s: fast vs naive", label);
        gc_free(&c);
    }
}

/* Larger planes than the sweeps: the lane/block structure of the fast
 * reductions (1024-element blocks, 16 lanes, tails). */
static void norm_large(void) {
    const vbs_shape shapes[] = {{4, {2, 3, 37, 41}}, {5, {3, 2, 9, 10, 23}}};
    for (size_t t = 0; t < 2; t++) {
        char label[256];
        shape_label(label, sizeof label, "InstanceNormalization", &shapes[t], "(large planes)");
        vbs_shape ch = {1, {shapes[t].d[1]}}, sh[3] = {shapes[t], ch, ch};
        vbs_builder *b = vbs_b_new(1);
        gc_case c;
        if (gc_new(&c, VBS_OP_INSTANCE_NORM, 3, sh, 0, NULL, b, label)) {
            CHECK(gc_fd(&c, 1e-2), "%s: finite differences", label);
            CHECK(gc_fast_naive(&c, 2e-5, 1e-4), "%s: fast vs naive", label);
            gc_free(&c);
        } else CHECK(0, "%s: refused", label);
        shape_label(label, sizeof label, "BatchNormalization", &shapes[t], "training (large planes)");
        if (bn_case(&c, &shapes[t], 0, NULL, NULL, label)) {
            c.training = 1;
            CHECK(gc_fd(&c, 1e-2), "%s: finite differences", label);
            CHECK(gc_fast_naive(&c, 2e-5, 1e-4), "%s: fast vs naive", label);
            bn_training_forward(&c, 1e-5, label);
            gc_free(&c);
        } else CHECK(0, "%s: refused", label);
    }
}

static void bn_momentum_refused(void) {
    vbs_shape x = {4, {1, 2, 2, 2}}, ch = {1, {2}}, sh[5] = {x, ch, ch, ch, ch};
    const char *names[5] = {"x0", "x1", "x2", "x3", "x4"};
    vbs_builder *b = vbs_b_new(1);
    for (int i = 0; i < 5; i++) vbs_b_input(b, names[i], sh[i].ndim, sh[i].d, NULL);
    vbs_attr a = vbs_b_float(b, "momentum", 1.5f);
    vbs_b_node(b, VBS_OP_BATCH_NORM, "y", 5, names, 1, &a);
    vbs_b_output(b, "y");
    vbs_model *m;
    vbs_status st = vbs_b_finish(b, "momentum", &m);
    CHECK(st != VBS_OK && strstr(vbs_model_errmsg(m), "momentum"), "momentum 1.5 accepted (%s)", vbs_model_errmsg(m));
    vbs_model_free(m);
}

/* ---- --dump DIR: fixed cases for tests/torch_poolnorm.py ------------------ */

static int dump_array(const char *dir, const char *name, const char *what, const float *v, const vbs_shape *s) {
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/%s_%s.npy", dir, name, what);
    if (vbs_write_npy(path, v, s->d, s->ndim, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 0;
    }
    return 1;
}

/* Writes inputs, dy, y and the fast dx (and for training BatchNormalization
 * the updated running statistics) of one case; a manifest line says how to
 * rebuild it. */
static int dump_case(const char *dir, FILE *man, gc_case *c, const char *name, const char *spec) {
    float **dx = gc_alloc_dx(c, 0.f);
    int ok = gc_backward(c, 0, dx);
    char what[16];
    for (int i = 0; i < c->n_in && ok; i++) {
        snprintf(what, sizeof what, "x%d", i);
        ok = dump_array(dir, name, what, c->x[i], &c->xs[i]);
        snprintf(what, sizeof what, "dx%d", i);
        if (ok && !c->skip[i]) ok = dump_array(dir, name, what, dx[i], &c->xs[i]);
    }
    ok = ok && dump_array(dir, name, "y", c->y[0], &c->ys[0]) && dump_array(dir, name, "dy", c->dy[0], &c->ys[0]);
    if (ok && c->node->op == VBS_OP_BATCH_NORM && c->training) {
        int64_t C = c->xs[0].d[1];
        vbs_batch_norm_update_running(c->node, C, c->nx[0] / C, c->saved, c->x[3], c->x[4]);
        ok = dump_array(dir, name, "rm", c->x[3], &c->xs[3]) && dump_array(dir, name, "rv", c->x[4], &c->xs[4]);
    }
    fprintf(man, "%s %s %s\n", name, vbs_ops[c->node->op].name, spec);
    gc_free_dx(dx);
    gc_free(c);
    return ok;
}

static int dump_pool(const char *dir, FILE *man, const char *name, vbs_op op, vbs_shape x, pool_params pp, int ties) {
    gc_case c;
    if (!pool_case(&c, op, &x, &pp, name)) return 0;
    for (int64_t i = 0; i < c.nx[0] && ties; i++) c.x[0][i] = (float)gc_ri(0, 2);
    char spec[256];
    int at = snprintf(spec, sizeof spec, "k=");
    for (int i = 0; i < pp.nsp; i++) at += snprintf(spec + at, sizeof spec - (size_t)at, "%s%lld", i ? "," : "", (long long)pp.k[i]);
    at += snprintf(spec + at, sizeof spec - (size_t)at, " s=");
    for (int i = 0; i < pp.nsp; i++) at += snprintf(spec + at, sizeof spec - (size_t)at, "%s%lld", i ? "," : "", (long long)pp.s[i]);
    at += snprintf(spec + at, sizeof spec - (size_t)at, " d=");
    for (int i = 0; i < pp.nsp; i++) at += snprintf(spec + at, sizeof spec - (size_t)at, "%s%lld", i ? "," : "", (long long)pp.d[i]);
    at += snprintf(spec + at, sizeof spec - (size_t)at, " p=");
    for (int i = 0; i < pp.nsp; i++) at += snprintf(spec + at, sizeof spec - (size_t)at, "%s%lld", i ? "," : "", (long long)pp.p[i]);
    snprintf(spec + at, sizeof spec - (size_t)at, " ceil=%d cip=%d", pp.ceil_mode, pp.cip);
    return dump_case(dir, man, &c, name, spec);
}

static int dump_cases(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.txt", dir);
    FILE *man = fopen(path, "w");
    if (!man) { fprintf(stderr, "%s: cannot write\n", path); return 1; }
    int ok = 1;
    /* pools (symmetric pads, as PyTorch takes them); values 0..2: many ties */
    ok = ok && dump_pool(dir, man, "max2x2", VBS_OP_MAX_POOL, (vbs_shape){4, {2, 3, 8, 10}}, (pool_params){.nsp = 2, .k = {2, 2}, .s = {2, 2}, .d = {1, 1}, .p = {0}}, 1);
    ok = ok && dump_pool(dir, man, "max2x2odd", VBS_OP_MAX_POOL, (vbs_shape){4, {1, 2, 9, 37}}, (pool_params){.nsp = 2, .k = {2, 2}, .s = {2, 2}, .d = {1, 1}, .p = {0}}, 1);
    ok = ok && dump_pool(dir, man, "max3x3", VBS_OP_MAX_POOL, (vbs_shape){4, {2, 2, 9, 8}},
                         (pool_params){.nsp = 2, .k = {3, 3}, .s = {2, 2}, .d = {1, 1}, .p = {1, 1, 1, 1}, .ceil_mode = 1}, 1);
    ok = ok && dump_pool(dir, man, "max3d", VBS_OP_MAX_POOL, (vbs_shape){5, {1, 2, 6, 5, 7}},
                         (pool_params){.nsp = 3, .k = {2, 2, 2}, .s = {2, 2, 2}, .d = {1, 1, 1}, .p = {0}}, 1);
    ok = ok && dump_pool(dir, man, "max3d_dil", VBS_OP_MAX_POOL, (vbs_shape){5, {1, 1, 7, 6, 8}},
                         (pool_params){.nsp = 3, .k = {3, 2, 3}, .s = {1, 2, 2}, .d = {2, 1, 1}, .p = {1, 0, 1, 1, 0, 1}}, 1);
    ok = ok && dump_pool(dir, man, "max1d", VBS_OP_MAX_POOL, (vbs_shape){3, {2, 2, 13}},
                         (pool_params){.nsp = 1, .k = {3}, .s = {2}, .d = {2}, .p = {1, 1}, .ceil_mode = 1}, 1);
    ok = ok && dump_pool(dir, man, "avg2d_cip", VBS_OP_AVERAGE_POOL, (vbs_shape){4, {2, 2, 7, 8}},
                         (pool_params){.nsp = 2, .k = {3, 3}, .s = {2, 2}, .d = {1, 1}, .p = {1, 1, 1, 1}, .ceil_mode = 1, .cip = 1}, 0);
    ok = ok && dump_pool(dir, man, "avg2d", VBS_OP_AVERAGE_POOL, (vbs_shape){4, {2, 2, 7, 8}},
                         (pool_params){.nsp = 2, .k = {3, 3}, .s = {2, 2}, .d = {1, 1}, .p = {1, 1, 1, 1}, .ceil_mode = 1, .cip = 0}, 0);
    ok = ok && dump_pool(dir, man, "avg3d", VBS_OP_AVERAGE_POOL, (vbs_shape){5, {1, 2, 5, 6, 4}},
                         (pool_params){.nsp = 3, .k = {2, 3, 2}, .s = {1, 2, 2}, .d = {1, 1, 1}, .p = {1, 1, 0, 1, 1, 0}, .cip = 1}, 0);
    ok = ok && dump_pool(dir, man, "avg1d", VBS_OP_AVERAGE_POOL, (vbs_shape){3, {2, 3, 10}},
                         (pool_params){.nsp = 1, .k = {4}, .s = {3}, .d = {1}, .p = {2, 2}, .ceil_mode = 1}, 0);
    if (ok) {
        vbs_shape x = {4, {2, 3, 5, 6}};
        vbs_builder *b = vbs_b_new(1);
        gc_case c;
        ok = gc_new(&c, VBS_OP_GLOBAL_AVERAGE_POOL, 1, &x, 0, NULL, b, "gap") && dump_case(dir, man, &c, "gap", "-");
    }
    /* BatchNormalization: training with the default and an explicit momentum, inference; InstanceNormalization */
    const struct { const char *name; vbs_shape x; int training, n_attr; float eps, momentum; } bns[] = {
        {"bn2d_train", {4, {4, 3, 5, 6}}, 1, 0, 1e-5f, 0.9f},
        {"bn3d_train", {5, {3, 2, 3, 4, 5}}, 1, 2, 1e-3f, 0.7f},
        {"bn1d_train", {3, {5, 4, 7}}, 1, 1, 1e-4f, 0.9f},
        {"bn2d_eval", {4, {2, 3, 4, 5}}, 0, 1, 1e-3f, 0.9f},
    };
    for (size_t i = 0; i < sizeof bns / sizeof bns[0] && ok; i++) {
        const char *names[2] = {"epsilon", "momentum"};
        float vals[2] = {bns[i].eps, bns[i].momentum};
        gc_case c;
        char spec[96];
        snprintf(spec, sizeof spec, "eps=%.9g momentum=%.9g training=%d", (double)bns[i].eps, (double)bns[i].momentum, bns[i].training);
        if (!(ok = bn_case(&c, &bns[i].x, bns[i].n_attr, names, vals, bns[i].name))) break;
        for (int64_t j = 0; j < c.nx[0]; j++) c.x[0][j] = 2.f + 3.f * c.x[0][j]; /* mean and spread away from 0 and 1 */
        c.training = bns[i].training;
        ok = dump_case(dir, man, &c, bns[i].name, spec);
    }
    const vbs_shape ins[] = {{4, {2, 3, 6, 7}}, {5, {2, 2, 3, 4, 5}}};
    for (size_t i = 0; i < 2 && ok; i++) {
        vbs_shape ch = {1, {ins[i].d[1]}}, sh[3] = {ins[i], ch, ch};
        vbs_builder *b = vbs_b_new(1);
        vbs_attr a = vbs_b_float(b, "epsilon", 1e-4f);
        gc_case c;
        const char *name = i ? "in3d" : "in2d";
        ok = gc_new(&c, VBS_OP_INSTANCE_NORM, 3, sh, 1, &a, b, name) && dump_case(dir, man, &c, name, "eps=1e-4");
    }
    if (fclose(man)) ok = 0;
    if (!ok) fprintf(stderr, "test_grad_poolnorm --dump: failed\n");
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--dump")) return dump_cases(argv[2]);
    if (argc != 1) {
        fprintf(stderr, "usage: test_grad_poolnorm [--dump DIR]\n");
        return 2;
    }
    sweep_pool(VBS_OP_MAX_POOL, 200);
    sweep_pool(VBS_OP_AVERAGE_POOL, 200);
    sweep_max_halving();
    max_pool_ties();
    global_average_pool();
    sweep_batch_norm(120);
    sweep_instance_norm(80);
    norm_large();
    bn_momentum_refused();
    return finish("test_grad_poolnorm");
}
