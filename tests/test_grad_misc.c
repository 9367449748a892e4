/*
 * test_grad_misc.c: the backward passes of the activations (Relu,
 * LeakyRelu, PRelu, Sigmoid, Softplus, Softmax), the broadcasting
 * element-wise ops (Add, Mul), the shape ops (Concat, Pad, Transpose,
 * Resize, Identity, Dropout) and the sampling ops (GaussianSample,
 * SpatialBroadcast).
 *
 * Oracles: central finite differences of the naive forward in double
 * (tests/gradcheck.h: per element on tensors of at most 64 elements,
 * along random directions on larger ones), the fast backward against the
 * naive one, and values worked out by hand for the kinks (Relu, LeakyRelu
 * and PRelu at exactly 0) and a few small cases. Every case also checks
 * that neither backward writes its inputs, its output or dy, and sweeps
 * skip an input now and then (dx NULL) to check that kernels leave it
 * alone. Inputs of the piecewise-linear activations are kept 0.05 away
 * from the kink so that no finite-difference step crosses it. A failing
 * case prints every parameter of the case.
 */
#include <stdlib.h>

#include "gradcheck.h"

static vbs_shape shp(int nd, const int64_t *d) { return gc_shape(nd, d); }

static int fmt_shape(char *s, size_t n, const vbs_shape *sh) {
    int p = snprintf(s, n, "(");
    for (int i = 0; i < sh->ndim; i++) p += snprintf(s + p, n - (size_t)p, "%s%lld", i ? "," : "", (long long)sh->d[i]);
    return p + snprintf(s + p, n - (size_t)p, ")");
}

/* Runs each backward (fast, naive) once more after its forward and checks
 * that it left x, dy and the forward's y as they were. */
static int untouched(gc_case *c) {
    float *xs[VBS_MAX_IN] = {0}, *ds[2] = {0}, *ys[2] = {0};
    int ok = 1;
    for (int i = 0; i < c->n_in; i++)
        if (c->x[i]) { xs[i] = malloc(sizeof(float) * (size_t)c->nx[i]); memcpy(xs[i], c->x[i], sizeof(float) * (size_t)c->nx[i]); }
    for (int o = 0; o < c->n_out; o++) {
        ds[o] = malloc(sizeof(float) * (size_t)c->ny[o]);
        ys[o] = malloc(sizeof(float) * (size_t)c->ny[o]);
        memcpy(ds[o], c->dy[o], sizeof(float) * (size_t)c->ny[o]);
    }
    for (int naive = 0; naive < 2 && ok; naive++) {
        float **dx = gc_alloc_dx(c, 0.f);
        ok = gc_backward(c, naive, dx);
        gc_free_dx(dx);
        for (int o = 0; o < c->n_out; o++) memcpy(ys[o], c->y[o], sizeof(float) * (size_t)c->ny[o]);
        gc_forward(c, naive);
        for (int o = 0; ok && o < c->n_out; o++)
            if (memcmp(ys[o], c->y[o], sizeof(float) * (size_t)c->ny[o]) || memcmp(ds[o], c->dy[o], sizeof(float) * (size_t)c->ny[o])) {
                printf("  %s: the %s backward wrote y or dy\n", c->label, naive ? "naive" : "fast");
                ok = 0;
            }
        for (int i = 0; ok && i < c->n_in; i++)
            if (xs[i] && memcmp(xs[i], c->x[i], sizeof(float) * (size_t)c->nx[i])) {
                printf("  %s: the %s backward wrote input %d\n", c->label, naive ? "naive" : "fast", i);
                ok = 0;
            }
    }
    for (int i = 0; i < VBS_MAX_IN; i++) free(xs[i]);
    for (int o = 0; o < 2; o++) { free(ds[o]); free(ys[o]); }
    return ok;
}

/* The three checks of one case; frees it. fd_rtol: finite-difference
 * tolerance relative to the gradient (linear ops are exact up to rounding). */
static void check(gc_case *c, double fd_rtol) {
    CHECK(gc_fd(c, fd_rtol), "%s: finite differences", c->label);
    CHECK(gc_fast_naive(c, 1e-5, 1e-4), "%s: fast against naive", c->label);
    CHECK(untouched(c), "%s: inputs, y and dy untouched", c->label);
    gc_free(c);
}

/* A case of op on inputs of the given shapes; 0 (and a failed check) if refused. */
static int make(gc_case *c, vbs_op op, int n_in, const vbs_shape *sh, int n_attr, const vbs_attr *attr, vbs_builder *b,
                const char *label) {
    int ok = gc_new(c, op, n_in, sh, n_attr, attr, b, label);
    CHECK(ok, "%s: refused", label);
    return ok;
}

/* keeps x at least `gap` away from 0, where the piecewise-linear activations kink */
static void off_kink(float *x, int64_t n, float gap) {
    for (int64_t i = 0; i < n; i++)
        if (fabsf(x[i]) < gap) x[i] = x[i] < 0 ? x[i] - gap : x[i] + gap;
}

/* a random shape of rank lo..hi, dims 1..maxd; sometimes one long 1D run (vector tails) */
static vbs_shape rand_shape(int lo, int hi, int64_t maxd) {
    vbs_shape s = {(int)gc_ri(lo, hi), {0}};
    for (int i = 0; i < s.ndim; i++) s.d[i] = gc_ri(1, maxd);
    if (gc_ri(0, 5) == 0) { s.ndim = lo > 1 ? lo : 1; for (int i = 0; i < s.ndim; i++) s.d[i] = 1; s.d[s.ndim - 1] = gc_ri(65, 3000); }
    return s;
}

/* ---- activations -------------------------------------------------------- */

static void sweep_unary(void) {
    const vbs_op ops[] = {VBS_OP_RELU, VBS_OP_LEAKY_RELU, VBS_OP_SIGMOID, VBS_OP_SOFTPLUS, VBS_OP_IDENTITY, VBS_OP_DROPOUT};
    for (int t = 0; t < 30; t++)
        for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
            vbs_op op = ops[k];
            vbs_shape sh[2] = {rand_shape(1, 5, 6), {1, {1}}};
            float alpha = (float)gc_ri(-10, 30) * 0.05f, scale = op == VBS_OP_SIGMOID || op == VBS_OP_SOFTPLUS ? (float)gc_ri(1, 30) : 1.f;
            int n_in = 1;
            vbs_builder *b = vbs_b_new(1);
            vbs_attr a = vbs_b_float(b, "alpha", alpha);
            char label[256], s0[96];
            fmt_shape(s0, sizeof s0, &sh[0]);
            snprintf(label, sizeof label, "%s x%s alpha %g x scale %g inputs %d", vbs_ops[op].name, s0, alpha, scale, n_in);
            gc_case c;
            if (!make(&c, op, n_in, sh, op == VBS_OP_LEAKY_RELU, &a, b, label)) continue;
            for (int64_t j = 0; j < c.nx[0]; j++) c.x[0][j] *= scale;
            if (op == VBS_OP_RELU || op == VBS_OP_LEAKY_RELU) off_kink(c.x[0], c.nx[0], 0.05f);
            check(&c, 2e-3);
        }
}

/* Relu and LeakyRelu take the forward's branch at x == 0 (Relu: 0, as
 * PyTorch's threshold_backward; LeakyRelu: 1, ONNX's x >= 0 branch), and
 * PRelu its x branch (1 for x, 0 for the slope), for +0 and -0 alike. */
static void kinks(void) {
    const float x[6] = {0.f, -0.f, 1e-30f, -1e-30f, 2.f, -2.f};
    const float want_relu[6] = {0, 0, 1, 0, 1, 0}, want_leaky[6] = {1, 1, 1, 0.25f, 1, 0.25f};
    const float want_prelu[6] = {1, 1, 1, 0.25f, 1, 0.25f};
    const vbs_op ops[3] = {VBS_OP_RELU, VBS_OP_LEAKY_RELU, VBS_OP_PRELU};
    const float *want[3] = {want_relu, want_leaky, want_prelu};
    for (int k = 0; k < 3; k++)
        for (int naive = 0; naive < 2; naive++) {
            int64_t d6 = 6, d1 = 1;
            vbs_shape sh[2] = {shp(1, &d6), shp(1, &d1)};
            vbs_builder *b = vbs_b_new(1);
            vbs_attr a = vbs_b_float(b, "alpha", 0.25f);
            char label[96];
            snprintf(label, sizeof label, "%s at the kink (%s)", vbs_ops[ops[k]].name, naive ? "naive" : "fast");
            gc_case c;
            if (!make(&c, ops[k], ops[k] == VBS_OP_PRELU ? 2 : 1, sh, ops[k] == VBS_OP_LEAKY_RELU, &a, b, label)) continue;
            memcpy(c.x[0], x, sizeof x);
            if (c.x[1]) c.x[1][0] = 0.25f;
            for (int j = 0; j < 6; j++) c.dy[0][j] = 1.f;
            float **dx = gc_alloc_dx(&c, 0.f);
            gc_backward(&c, naive, dx);
            CHECK(close_enough(label, dx[0], want[k], 6, 0, 0), "%s: dx", label);
            /* the slope's gradient sums x over x < 0: only -1e-30 and -2 count */
            if (dx[1]) CHECK(dx[1][0] == -2.f, "%s: dslope %g, want -2", label, dx[1][0]);
            gc_free_dx(dx);
            gc_free(&c);
        }
}

/* Softplus's derivative is the sigmoid, far out on both sides of the
 * forward's branches at +-20: checked relative to the value (the sweeps'
 * absolute tolerances cannot see an error of 1e-9 at x = -21). */
static void softplus_tails(void) {
    int64_t n = 801;
    vbs_shape sh = shp(1, &n);
    gc_case c;
    if (!make(&c, VBS_OP_SOFTPLUS, 1, &sh, 0, NULL, vbs_b_new(1), "Softplus tails")) return;
    float *want = malloc(sizeof(float) * (size_t)n);
    for (int64_t j = 0; j < n; j++) {
        c.x[0][j] = (float)(j - 400) * 0.15f; /* -60 .. 60 */
        c.dy[0][j] = 1.f;
        want[j] = (float)(1.0 / (1.0 + exp(-(double)c.x[0][j])));
    }
    for (int naive = 0; naive < 2; naive++) {
        float **dx = gc_alloc_dx(&c, 0.f);
        char what[64];
        snprintf(what, sizeof what, "Softplus tails (%s)", naive ? "naive" : "fast");
        gc_backward(&c, naive, dx);
        CHECK(close_enough(what, dx[0], want, (long)n, 0, 1e-6), "%s", what);
        gc_free_dx(dx);
    }
    free(want);
    gc_free(&c);
}

static void sweep_softmax(void) {
    for (int t = 0; t < 60; t++) {
        vbs_shape x = rand_shape(1, 5, 5);
        if (t % 10 == 0) { x.ndim = 3; x.d[0] = 2; x.d[1] = gc_ri(2, 4); x.d[2] = gc_ri(257, 600); } /* inner runs past a tile */
        int nd = x.ndim;
        int64_t axis = gc_ri(-nd, nd - 1), flatten = gc_ri(0, 3) == 0;
        float scale = (float)gc_ri(1, 8);
        vbs_builder *b = vbs_b_new(1);
        vbs_attr a[2] = {vbs_b_int(b, "axis", axis), vbs_b_int(b, "flatten", flatten)};
        char label[256], s0[96];
        fmt_shape(s0, sizeof s0, &x);
        snprintf(label, sizeof label, "Softmax x%s axis %lld flatten %lld x scale %g", s0, (long long)axis, (long long)flatten, scale);
        gc_case c;
        if (!make(&c, VBS_OP_SOFTMAX, 1, &x, 2, a, b, label)) continue;
        for (int64_t j = 0; j < c.nx[0]; j++) c.x[0][j] *= scale;
        check(&c, 5e-3);
    }
}

/* ---- broadcasting ------------------------------------------------------- */

static void broadcast_case(vbs_op op, vbs_shape sa, vbs_shape sb, int skip) {
    vbs_shape sh[2] = {sa, sb};
    char label[256], s0[96], s1[96];
    fmt_shape(s0, sizeof s0, &sa);
    fmt_shape(s1, sizeof s1, &sb);
    snprintf(label, sizeof label, "%s %s with %s%s", vbs_ops[op].name, s0, s1, skip == 0 ? " (no dA)" : skip == 1 ? " (no dB)" : "");
    gc_case c;
    if (!make(&c, op, 2, sh, 0, NULL, vbs_b_new(1), label)) return;
    if (skip >= 0) gc_skip(&c, skip);
    if (op == VBS_OP_PRELU) off_kink(c.x[0], c.nx[0], 0.05f);
    check(&c, 2e-3);
}

static void sweep_broadcast(vbs_op op) {
    /* the patterns of the brief, both ways round, then a seeded sweep */
    static const int64_t p[][2][5] = {{{2, 3, 4, 5}, {3, 1, 1}}, {{1, 3, 1, 5}, {2, 1, 4, 1}}, {{2, 3, 4}, {1}},
                                      {{3, 4}, {3, 4}},         {{2, 1, 3}, {4, 1}},          {{1, 1, 1}, {2, 2, 2}}};
    static const int pn[][2] = {{4, 3}, {4, 4}, {3, 1}, {2, 2}, {3, 2}, {3, 3}};
    for (int i = 0; i < 6; i++) {
        vbs_shape a = shp(pn[i][0], p[i][0]), bs = shp(pn[i][1], p[i][1]);
        if (op != VBS_OP_PRELU || i == 0 || i == 2 || i == 3) broadcast_case(op, a, bs, -1); /* PRelu: the slope fits x */
        if (op != VBS_OP_PRELU) broadcast_case(op, bs, a, -1);
    }
    int64_t big[4] = {2, 16, 24, 40}, chan[3] = {16, 1, 1};
    broadcast_case(op, shp(4, big), shp(4, big), -1); /* one long run: the L1 blocks */
    broadcast_case(op, shp(4, big), shp(3, chan), -1);
    broadcast_case(op, shp(4, big), shp(0, big), -1); /* a rank-0 scalar */
    for (int t = 0; t < 60; t++) {
        int nd = (int)gc_ri(1, 5);
        vbs_shape a = {nd, {0}}, bs;
        for (int i = 0; i < nd; i++) a.d[i] = gc_ri(1, 5);
        int nb = op == VBS_OP_PRELU ? (int)gc_ri(0, nd) : (int)gc_ri(0, 5);
        bs.ndim = nb;
        for (int i = 0; i < nb; i++) {
            int j = i + nd - nb;
            int64_t da = j >= 0 ? a.d[j] : gc_ri(1, 3);
            bs.d[i] = gc_ri(0, 1) ? 1 : da;
        }
        if (op != VBS_OP_PRELU && gc_ri(0, 1)) { vbs_shape tmp = a; a = bs; bs = tmp; }
        broadcast_case(op, a, bs, gc_ri(0, 4) == 0 ? (int)gc_ri(0, 1) : -1);
    }
}

/* ---- shape ops ---------------------------------------------------------- */

static void sweep_concat(void) {
    for (int t = 0; t < 50; t++) {
        int nd = (int)gc_ri(1, 5), nin = (int)gc_ri(1, 5), axis = (int)gc_ri(0, nd - 1);
        vbs_shape x = {nd, {0}}, sh[VBS_MAX_IN];
        for (int i = 0; i < nd; i++) x.d[i] = gc_ri(1, 4);
        char label[256];
        int p = snprintf(label, sizeof label, "Concat axis %d of", axis);
        for (int i = 0; i < nin; i++) {
            sh[i] = x;
            sh[i].d[axis] = gc_ri(1, 4);
            p += fmt_shape(label + p, sizeof label - (size_t)p, &sh[i]);
        }
        int neg = (int)gc_ri(0, 1), skip = gc_ri(0, 3) == 0 ? (int)gc_ri(0, nin - 1) : -1;
        snprintf(label + p, sizeof label - (size_t)p, " (as %d) skip %d", neg ? axis - nd : axis, skip);
        vbs_builder *b = vbs_b_new(1);
        vbs_attr a = vbs_b_int(b, "axis", neg ? axis - nd : axis);
        gc_case c;
        if (!make(&c, VBS_OP_CONCAT, nin, sh, 1, &a, b, label)) continue;
        if (skip >= 0) gc_skip(&c, skip);
        check(&c, 1e-3);
    }
}

static void sweep_pad(void) {
    for (int t = 0; t < 60; t++) {
        vbs_shape x = rand_shape(1, 5, 5);
        int nd = x.ndim;
        int64_t pads[2 * VBS_MAX_DIMS];
        for (int i = 0; i < nd; i++) { /* the output keeps at least one element; a crop may remove the whole input */
            pads[i] = gc_ri(-3, 3);
            int64_t lo = 1 - x.d[i] - pads[i];
            pads[nd + i] = gc_ri(lo > -3 ? lo : -3, lo > 3 ? lo : 3);
        }
        float value = gc_rf();
        vbs_builder *b = vbs_b_new(1);
        vbs_attr a[2] = {vbs_b_ints(b, "pads", 2 * nd, pads), vbs_b_float(b, "value", value)};
        char label[256], s0[96];
        int p = fmt_shape(s0, sizeof s0, &x);
        (void)p;
        p = snprintf(label, sizeof label, "Pad x%s value %g pads", s0, value);
        for (int i = 0; i < 2 * nd; i++) p += snprintf(label + p, sizeof label - (size_t)p, " %lld", (long long)pads[i]);
        gc_case c;
        if (!make(&c, VBS_OP_PAD, 1, &x, 2, a, b, label)) continue;
        check(&c, 1e-3);
    }
}

static void sweep_transpose(void) {
    for (int t = 0; t < 40; t++) {
        vbs_shape x = rand_shape(1, 6, 4);
        int nd = x.ndim, dflt = gc_ri(0, 4) == 0;
        int64_t perm[VBS_MAX_DIMS];
        for (int i = 0; i < nd; i++) perm[i] = i;
        for (int i = nd - 1; i > 0; i--) { int j = (int)gc_ri(0, i); int64_t tmp = perm[i]; perm[i] = perm[j]; perm[j] = tmp; }
        vbs_builder *b = vbs_b_new(1);
        vbs_attr a = vbs_b_ints(b, "perm", nd, perm);
        char label[256], s0[96];
        fmt_shape(s0, sizeof s0, &x);
        int p = snprintf(label, sizeof label, "Transpose x%s perm", s0);
        for (int i = 0; i < nd; i++) p += snprintf(label + p, sizeof label - (size_t)p, " %lld", (long long)perm[i]);
        if (dflt) snprintf(label + p, sizeof label - (size_t)p, " (default: reversed)");
        gc_case c;
        if (!make(&c, VBS_OP_TRANSPOSE, 1, &x, dflt ? 0 : 1, &a, b, label)) continue;
        check(&c, 1e-3);
    }
}

static void sweep_resize(void) {
    static const char *modes[] = {"nearest", "linear"},
                      *cts[] = {"half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel", "tf_half_pixel_for_nn"},
                      *nms[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
    for (int t = 0; t < 120; t++) {
        int nd = (int)gc_ri(1, 4), use_sizes = (int)gc_ri(0, 1);
        const char *mode = modes[t % 2], *ct = cts[gc_ri(0, 4)], *nm = nms[gc_ri(0, 3)];
        vbs_shape x = {nd, {0}};
        float sc[VBS_MAX_DIMS];
        int64_t sz[VBS_MAX_DIMS];
        for (int i = 0; i < nd; i++) {
            x.d[i] = gc_ri(1, 6);
            int resized = i >= nd - 2 || gc_ri(0, 2) == 0; /* mostly the spatial axes, sometimes any */
            sc[i] = resized ? (float)gc_ri(2, 12) * 0.25f : 1.f;
            sz[i] = resized ? gc_ri(1, 11) : x.d[i];
            if (!use_sizes && (int64_t)floor((double)x.d[i] * sc[i]) < 1) sc[i] = 1.f;
        }
        vbs_builder *b = vbs_b_new(1);
        vbs_attr a[4] = {vbs_b_string(b, "mode", mode), vbs_b_string(b, "coordinate_transformation_mode", ct),
                         vbs_b_string(b, "nearest_mode", nm), use_sizes ? vbs_b_ints(b, "sizes", nd, sz) : (vbs_attr){0}};
        if (!use_sizes) {
            a[3].name = (char *)vbs_b_str(b, "scales");
            a[3].type = VBS_ATTR_FLOATS;
            a[3].n = nd;
            a[3].floats = vbs_b_alloc(b, sizeof(float) * VBS_MAX_DIMS);
            memcpy(a[3].floats, sc, sizeof(float) * (size_t)nd);
        }
        char label[256], s0[96];
        fmt_shape(s0, sizeof s0, &x);
        int p = snprintf(label, sizeof label, "Resize %s %s %s x%s %s", mode, ct, nm, s0, use_sizes ? "sizes" : "scales");
        for (int i = 0; i < nd; i++)
            p += use_sizes ? snprintf(label + p, sizeof label - (size_t)p, " %lld", (long long)sz[i])
                           : snprintf(label + p, sizeof label - (size_t)p, " %g", sc[i]);
        gc_case c;
        if (!make(&c, VBS_OP_RESIZE, 1, &x, 4, a, b, label)) continue;
        check(&c, 1e-3);
    }
}

/* ---- sampling ops ------------------------------------------------------- */

static void sweep_gaussian_sample(void) {
    for (int t = 0; t < 24; t++) {
        int nsp = (int)gc_ri(0, 3), sampling = t % 2;
        vbs_shape z = {2 + nsp, {gc_ri(1, 3), t % 6 == 0 ? gc_ri(200, 700) : gc_ri(1, 12), 1, 1, 1}};
        vbs_shape sh[2] = {z, z};
        float scale = (float)gc_ri(1, 30);
        char label[256], s0[96];
        fmt_shape(s0, sizeof s0, &z);
        int skip = gc_ri(0, 4) == 0 ? (int)gc_ri(0, 1) : -1;
        snprintf(label, sizeof label, "GaussianSample %s %s rho scale %g skip %d", s0, sampling ? "sampling" : "mean mode", scale, skip);
        gc_case c;
        if (!make(&c, VBS_OP_GAUSSIAN_SAMPLE, 2, sh, 0, NULL, vbs_b_new(1), label)) continue;
        c.sampling = sampling;
        c.sample = (uint64_t)t;
        for (int64_t j = 0; j < c.nx[1]; j++) c.x[1][j] *= scale; /* rho across softplus's branches at +-20 */
        if (skip >= 0) gc_skip(&c, skip);
        if (!sampling) { /* mean mode: rho gets nothing, exactly */
            float **dx = gc_alloc_dx(&c, 0.5f);
            for (int naive = 0; naive < 2; naive++) gc_backward(&c, naive, dx);
            int untouched_rho = 1;
            for (int64_t j = 0; j < c.nx[1]; j++) untouched_rho &= dx[1][j] == 0.5f;
            CHECK(untouched_rho, "%s: rho got a gradient in mean mode", label);
            gc_free_dx(dx);
        }
        check(&c, 2e-3);
    }
}

static void sweep_spatial_broadcast(void) {
    for (int t = 0; t < 30; t++) {
        int nsp = (int)gc_ri(1, 3), zr = (int)gc_ri(0, 1);
        int64_t n = gc_ri(1, 3), l = gc_ri(1, 5);
        vbs_shape ref = {2 + nsp, {n, gc_ri(1, 4)}}, z = {zr ? 2 + nsp : 2, {n, l, 1, 1, 1}};
        for (int i = 0; i < nsp; i++) ref.d[2 + i] = gc_ri(1, t % 5 == 0 ? 40 : 6);
        vbs_shape sh[2] = {z, ref};
        char label[256], s0[96], s1[96];
        fmt_shape(s0, sizeof s0, &z);
        fmt_shape(s1, sizeof s1, &ref);
        snprintf(label, sizeof label, "SpatialBroadcast z%s over %s", s0, s1);
        gc_case c;
        if (!make(&c, VBS_OP_SPATIAL_BROADCAST, 2, sh, 0, NULL, vbs_b_new(1), label)) continue;
        check(&c, 1e-3); /* the reference's finite difference is 0: its gradient must stay untouched */
    }
}

/* ---- worked by hand ----------------------------------------------------- */

/* runs both backward kernels on c (x and dy set) and compares dx[i] with want */
static void expect_dx(gc_case *c, int i, const float *want, int64_t n) {
    for (int naive = 0; naive < 2; naive++) {
        float **dx = gc_alloc_dx(c, 0.f);
        char what[300];
        snprintf(what, sizeof what, "%s (%s) dx%d", c->label, naive ? "naive" : "fast", i);
        gc_backward(c, naive, dx);
        CHECK(c->nx[i] == n && close_enough(what, dx[i], want, (long)n, 1e-6, 1e-6), "%s", what);
        gc_free_dx(dx);
    }
}

static void hand_cases(void) {
    gc_case c;
    {   /* nearest x2 (sizes 4x4 from 2x2): each source gets the sum of its 2x2 block of dy */
        int64_t d[4] = {1, 1, 2, 2}, sizes[4] = {1, 1, 4, 4};
        vbs_shape sh = shp(4, d);
        vbs_builder *b = vbs_b_new(1);
        vbs_attr a = vbs_b_ints(b, "sizes", 4, sizes);
        if (make(&c, VBS_OP_RESIZE, 1, &sh, 1, &a, b, "Resize nearest x2")) {
            for (int j = 0; j < 16; j++) c.dy[0][j] = (float)j;
            float want[4] = {0 + 1 + 4 + 5, 2 + 3 + 6 + 7, 8 + 9 + 12 + 13, 10 + 11 + 14 + 15};
            expect_dx(&c, 0, want, 4);
            gc_free(&c);
        }
    }
    {   /* linear align_corners 2 -> 3: y = (x0, (x0 + x1)/2, x1) */
        int64_t d[3] = {1, 1, 2}, sizes[3] = {1, 1, 3};
        vbs_shape sh = shp(3, d);
        vbs_builder *b = vbs_b_new(1);
        vbs_attr a[3] = {vbs_b_string(b, "mode", "linear"), vbs_b_ints(b, "sizes", 3, sizes),
                         vbs_b_string(b, "coordinate_transformation_mode", "align_corners")};
        if (make(&c, VBS_OP_RESIZE, 1, &sh, 3, a, b, "Resize linear align_corners")) {
            c.dy[0][0] = 1; c.dy[0][1] = 2; c.dy[0][2] = 4;
            float want[2] = {1 + 1, 1 + 4};
            expect_dx(&c, 0, want, 2);
            gc_free(&c);
        }
    }
    {   /* (2,3) + (3,): dB is the column sums of dy; (2,3) * (2,1): dB is the row sums of dy*A */
        int64_t d23[2] = {2, 3}, d3 = 3, d21[2] = {2, 1};
        vbs_shape sh[2] = {shp(2, d23), shp(1, &d3)};
        if (make(&c, VBS_OP_ADD, 2, sh, 0, NULL, vbs_b_new(1), "Add (2,3)+(3)")) {
            for (int j = 0; j < 6; j++) c.dy[0][j] = (float)(j + 1);
            float want[3] = {1 + 4, 2 + 5, 3 + 6};
            expect_dx(&c, 1, want, 3);
            gc_free(&c);
        }
        sh[1] = shp(2, d21);
        if (make(&c, VBS_OP_MUL, 2, sh, 0, NULL, vbs_b_new(1), "Mul (2,3)*(2,1)")) {
            for (int j = 0; j < 6; j++) { c.dy[0][j] = 1.f; c.x[0][j] = (float)(j + 1); }
            float want[2] = {1 + 2 + 3, 4 + 5 + 6};
            expect_dx(&c, 1, want, 2);
            gc_free(&c);
        }
    }
    {   /* PRelu with a per-channel slope (2,1): x = [-1 2; -3 -4], slope (0.5, 2) */
        int64_t d22[2] = {2, 2}, d21[2] = {2, 1};
        vbs_shape sh[2] = {shp(2, d22), shp(2, d21)};
        if (make(&c, VBS_OP_PRELU, 2, sh, 0, NULL, vbs_b_new(1), "PRelu per channel")) {
            float xv[4] = {-1, 2, -3, -4}, wx[4] = {0.5f, 1, 2, 2}, ws[2] = {-1, -7};
            memcpy(c.x[0], xv, sizeof xv);
            c.x[1][0] = 0.5f; c.x[1][1] = 2;
            for (int j = 0; j < 4; j++) c.dy[0][j] = 1.f;
            expect_dx(&c, 0, wx, 4);
            expect_dx(&c, 1, ws, 2);
            gc_free(&c);
        }
    }
    {   /* softmax of two equal logits: y = 1/2; dx = y(dy - mean dy) = (dy0 - dy1)/4 * (1, -1) */
        int64_t d2[2] = {1, 2};
        vbs_shape sh = shp(2, d2);
        if (make(&c, VBS_OP_SOFTMAX, 1, &sh, 0, NULL, vbs_b_new(1), "Softmax of equal logits")) {
            c.x[0][0] = c.x[0][1] = 0.3f;
            c.dy[0][0] = 3; c.dy[0][1] = 1;
            float want[2] = {0.5f, -0.5f};
            expect_dx(&c, 0, want, 2);
            gc_free(&c);
        }
    }
    {   /* Pad that crops one element and pads another: dx = (0, dy[0], dy[1]) for pads (-1 | +1) on x = 3 elements */
        int64_t d3 = 3, pads[2] = {-1, 1};
        vbs_shape sh = shp(1, &d3);
        vbs_builder *b = vbs_b_new(1);
        vbs_attr a = vbs_b_ints(b, "pads", 2, pads);
        if (make(&c, VBS_OP_PAD, 1, &sh, 1, &a, b, "Pad crop 1, pad 1")) {
            c.dy[0][0] = 5; c.dy[0][1] = 7; c.dy[0][2] = 11;
            float want[3] = {0, 5, 7};
            expect_dx(&c, 0, want, 3);
            gc_free(&c);
        }
    }
}

int main(void) {
    sweep_unary();
    kinks();
    softplus_tails();
    sweep_softmax();
    sweep_broadcast(VBS_OP_ADD);
    sweep_broadcast(VBS_OP_MUL);
    sweep_broadcast(VBS_OP_PRELU);
    sweep_concat();
    sweep_pad();
    sweep_transpose();
    sweep_resize();
    sweep_gaussian_sample();
    sweep_spatial_broadcast();
    hand_cases();
    return finish("test_grad_misc");
}
