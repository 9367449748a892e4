/*
 * test_ops.c: every op against its naive reference kernel over a seeded
 * sweep of shapes and attributes (1D/2D/3D where the spec defines them),
 * and against small cases whose answers were worked out by hand.
 * A failing sweep case prints every parameter of that case.
 */
#include <stdlib.h>

#include "builder.h"
#include "check.h"

static uint64_t rs = 0x2545F4914F6CDD1Dull;
static uint64_t rnd(void) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return rs; }
static int64_t ri(int64_t lo, int64_t hi) { return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1)); }
static float rf(void) { return (float)((double)(rnd() >> 11) / 9007199254740992.0 * 2 - 1); }

/* A model of one node whose inputs are all graph inputs of fixed shape.
 * shapes[i].ndim < 0 leaves input i empty (an omitted optional input). */
static vbs_model *one_op(vbs_builder *b, vbs_op op, int n_in, const vbs_shape *shapes, int n_attr, const vbs_attr *attr,
                         char *err) {
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
    vbs_model *m;
    vbs_status st = vbs_b_finish(b, "one_op", &m);
    if (st) {
        snprintf(err, 512, "%s", vbs_model_errmsg(m));
        vbs_model_free(m);
        return NULL;
    }
    return m;
}

/* Runs m on inputs (random if x == NULL) with the fast and the naive kernels;
 * returns 1 if they agree. With want != NULL also compares fast to it. */
static int run_both(vbs_model *m, int n_in, const vbs_shape *shapes, float **x, const float *want, int64_t want_n,
                    const char *label, vbs_mode mode) {
    float *buf[VBS_MAX_IN] = {0};
    const float *in[VBS_MAX_IN];
    vbs_shape sh[VBS_MAX_IN];
    int k = 0;
    for (int i = 0; i < n_in; i++) {
        if (shapes[i].ndim < 0) continue;
        int64_t n = vbs_shape_numel(&shapes[i]);
        if (x && x[i]) in[k] = x[i];
        else {
            buf[i] = malloc(sizeof(float) * (size_t)n);
            for (int64_t j = 0; j < n; j++) buf[i][j] = rf();
            in[k] = buf[i];
        }
        sh[k++] = shapes[i];
    }
    vbs_worker wf = {0}, wn = {0};
    char err[VBS_ERRLEN];
    int ok = 1;
    vbs_status s1 = vbs_worker_run_naive(&wf, m, in, sh, mode, 7, 3, 0, err);
    if (s1) { printf("  %s: fast run failed: %s\n", label, err); ok = 0; }
    vbs_status s2 = s1 ? s1 : vbs_worker_run_naive(&wn, m, in, sh, mode, 7, 3, 1, err);
    if (!s1 && s2) { printf("  %s: naive run failed: %s\n", label, err); ok = 0; }
    if (ok) {
        int v = m->g.output_vals[0];
        const float *yf = vbs_worker_value(&wf, m, v), *yn = vbs_worker_value(&wn, m, v);
        int64_t n = vbs_shape_numel(&wf.plan.shapes[v]);
        if (!close_enough(label, yf, yn, (long)n, 1e-4, 1e-4)) ok = 0;
        if (want) {
            if (n != want_n) { printf("  %s: %lld outputs, expected %lld\n", label, (long long)n, (long long)want_n); ok = 0; }
            else if (!close_enough(label, yf, want, (long)n, 1e-5, 1e-5)) ok = 0;
        }
    }
    vbs_worker_free(&wf);
    vbs_worker_free(&wn);
    for (int i = 0; i < n_in; i++) free(buf[i]);
    return ok;
}

static vbs_shape S(int nd, ...) {
    vbs_shape s = {nd, {0}};
    va_list ap;
    va_start(ap, nd);
    for (int i = 0; i < nd; i++) s.d[i] = va_arg(ap, int);
    va_end(ap);
    return s;
}

/* ---- sweeps ------------------------------------------------------------ */

static void sweep_conv(int transpose) {
    int cases = 0;
    for (int t = 0; t < 160; t++) {
        int nsp = (int)ri(1, 3), group = (int)ri(1, 2), cg = (int)ri(1, 3), mg = (int)ri(1, 3);
        int64_t k[3], s[3], d[3], p[6], op[3], in[3];
        for (int i = 0; i < nsp; i++) {
            k[i] = ri(1, 3); s[i] = ri(1, 2); d[i] = ri(1, 2);
            p[i] = ri(0, 2); p[nsp + i] = ri(0, 2);
            op[i] = transpose ? ri(0, s[i] > d[i] ? s[i] - 1 : d[i] - 1) : 0;
            if (op[i] >= s[i] && op[i] >= d[i]) op[i] = 0;
            in[i] = ri(nsp == 3 ? 2 : 3, nsp == 3 ? 6 : 9);
        }
        int bias = (int)ri(0, 1), batch = (int)ri(1, 2);
        vbs_shape sh[3];
        sh[0].ndim = 2 + nsp; sh[0].d[0] = batch; sh[0].d[1] = cg * group;
        sh[1].ndim = 2 + nsp;
        if (transpose) { sh[1].d[0] = cg * group; sh[1].d[1] = mg; }
        else { sh[1].d[0] = mg * group; sh[1].d[1] = cg; }
        for (int i = 0; i < nsp; i++) { sh[0].d[2 + i] = in[i]; sh[1].d[2 + i] = k[i]; }
        sh[2] = bias ? S(1, (int)(mg * group)) : S(-1);
        vbs_builder *b = vbs_b_new(1);
        vbs_attr a[5] = {vbs_b_ints(b, "strides", nsp, s), vbs_b_ints(b, "pads", 2 * nsp, p), vbs_b_ints(b, "dilations", nsp, d),
                         vbs_b_int(b, "group", group), vbs_b_ints(b, "output_padding", nsp, op)};
        char err[512], label[256];
        snprintf(label, sizeof label, "%s %dD g%d cin/g%d m/g%d k%lld,%lld,%lld s%lld,%lld,%lld d%lld,%lld,%lld in%lld,%lld,%lld bias%d",
                 transpose ? "ConvTranspose" : "Conv", nsp, group, cg, mg, (long long)k[0], (long long)(nsp > 1 ? k[1] : 0),
                 (long long)(nsp > 2 ? k[2] : 0), (long long)s[0], (long long)(nsp > 1 ? s[1] : 0), (long long)(nsp > 2 ? s[2] : 0),
                 (long long)d[0], (long long)(nsp > 1 ? d[1] : 0), (long long)(nsp > 2 ? d[2] : 0), (long long)in[0],
                 (long long)(nsp > 1 ? in[1] : 0), (long long)(nsp > 2 ? in[2] : 0), bias);
        vbs_model *m = one_op(b, transpose ? VBS_OP_CONV_TRANSPOSE : VBS_OP_CONV, 3, sh, transpose ? 5 : 4, a, err);
        if (!m) continue; /* window larger than the padded input: a refused case, not a kernel case */
        cases++;
        CHECK(run_both(m, 3, sh, NULL, NULL, 0, label, VBS_MODE_MEAN), "%s", label);
        vbs_model_free(m);
    }
    CHECK(cases > 80, "%s sweep ran only %d valid cases", transpose ? "ConvTranspose" : "Conv", cases);
}

/* 2D 3x3 stride-1 convolutions take the Winograd F(4x4, 3x3) path from
 * about 15x15 outputs, im2col below (test_grad_conv also calls the Winograd
 * forward directly at every size): sweep sizes across tile and chunk edges
 * (8 tiles = 32 columns) and the dispatch's edge, pads and channels. */
static void sweep_winograd(void) {
    for (int t = 0; t < 60; t++) {
        int64_t h = ri(1, 24), w = t % 4 == 0 ? ri(30, 75) : ri(1, 24), c = ri(1, 6), m = ri(1, 6);
        int64_t p[4] = {ri(0, 2), ri(0, 2), ri(0, 2), ri(0, 2)};
        if (h + p[0] + p[2] < 3 || w + p[1] + p[3] < 3) continue;
        vbs_shape sh[3] = {{4, {ri(1, 2), c, h, w}}, {4, {m, c, 3, 3}}, ri(0, 1) ? S(1, (int)m) : S(-1)};
        vbs_builder *b = vbs_b_new(1);
        vbs_attr a = vbs_b_ints(b, "pads", 4, p);
        char err[512], label[160];
        snprintf(label, sizeof label, "Winograd conv %lldx%lld c%lld m%lld pads %lld,%lld,%lld,%lld", (long long)h, (long long)w,
                 (long long)c, (long long)m, (long long)p[0], (long long)p[1], (long long)p[2], (long long)p[3]);
        vbs_model *mo = one_op(b, VBS_OP_CONV, 3, sh, 1, &a, err);
        CHECK(mo != NULL, "%s: %s", label, err);
        if (mo) CHECK(run_both(mo, 3, sh, NULL, NULL, 0, label, VBS_MODE_MEAN), "%s", label);
        vbs_model_free(mo);
    }
}

/* the small-matrix GEMMs (A B and A B^T) against triple loops in double, tails included */
static void sweep_gemm(void) {
    for (int t = 0; t < 40; t++) {
        int64_t m = ri(1, 20), n = ri(1, 70), k = ri(1, 40);
        float *a = malloc(sizeof(float) * (size_t)(m * k)), *b = malloc(sizeof(float) * (size_t)(k * n));
        float *c = malloc(sizeof(float) * (size_t)(m * n)), *ref = malloc(sizeof(float) * (size_t)(m * n));
        for (int64_t i = 0; i < m * k; i++) a[i] = rf();
        for (int64_t i = 0; i < k * n; i++) b[i] = rf();
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double acc = 0;
                for (int64_t p = 0; p < k; p++) acc += (double)a[i * k + p] * b[p * n + j];
                ref[i * n + j] = (float)acc;
            }
        vbs_gemm(m, n, k, a, b, c);
        char label[64];
        snprintf(label, sizeof label, "gemm %lldx%lldx%lld", (long long)m, (long long)n, (long long)k);
        CHECK(close_enough(label, c, ref, (long)(m * n), 1e-5, 1e-5), "%s", label);
        free(a); free(b); free(c); free(ref);
    }
    /* C (=, +=) A B^T: B is n x k */
    for (int t = 0; t < 40; t++) {
        int64_t m = ri(1, 20), n = ri(1, 40), k = ri(1, 90);
        int acc = t % 2;
        float *a = malloc(sizeof(float) * (size_t)(m * k)), *b = malloc(sizeof(float) * (size_t)(n * k));
        float *c = malloc(sizeof(float) * (size_t)(m * n)), *ref = malloc(sizeof(float) * (size_t)(m * n));
        float *scratch = malloc(sizeof(float) * (size_t)(n * k));
        for (int64_t i = 0; i < m * k; i++) a[i] = rf();
        for (int64_t i = 0; i < n * k; i++) b[i] = rf();
        for (int64_t i = 0; i < m * n; i++) c[i] = rf();
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double s = acc ? c[i * n + j] : 0;
                for (int64_t p = 0; p < k; p++) s += (double)a[i * k + p] * b[j * k + p];
                ref[i * n + j] = (float)s;
            }
        vbs_gemm_nt(m, n, k, a, b, acc, c, scratch);
        char label[64];
        snprintf(label, sizeof label, "gemm_nt %lldx%lldx%lld%s", (long long)m, (long long)n, (long long)k, acc ? " +=" : "");
        CHECK(close_enough(label, c, ref, (long)(m * n), 1e-5, 1e-5), "%s", label);
        free(a); free(b); free(c); free(ref); free(scratch);
    }
}

static void sweep_pool(vbs_op op) {
    for (int t = 0; t < 60; t++) {
        int nsp = (int)ri(1, 3);
        int64_t k[3], s[3], p[6], d[3];
        vbs_shape x = {2 + nsp, {ri(1, 2), ri(1, 3)}};
        for (int i = 0; i < nsp; i++) {
            k[i] = ri(1, 3); s[i] = ri(1, 3); d[i] = op == VBS_OP_MAX_POOL ? ri(1, 2) : 1;
            p[i] = ri(0, k[i] - 1); p[nsp + i] = ri(0, k[i] - 1);
            x.d[2 + i] = ri(4, 8);
        }
        int ceil_mode = (int)ri(0, 1), cip = (int)ri(0, 1);
        vbs_builder *b = vbs_b_new(1);
        vbs_attr a[5] = {vbs_b_ints(b, "kernel_shape", nsp, k), vbs_b_ints(b, "strides", nsp, s), vbs_b_ints(b, "pads", 2 * nsp, p),
                         vbs_b_int(b, "ceil_mode", ceil_mode),
                         op == VBS_OP_MAX_POOL ? vbs_b_ints(b, "dilations", nsp, d) : vbs_b_int(b, "count_include_pad", cip)};
        char err[512], label[128];
        snprintf(label, sizeof label, "%s %dD ceil%d cip%d", vbs_ops[op].name, nsp, ceil_mode, cip);
        vbs_model *m = one_op(b, op, 1, &x, 5, a, err);
        if (!m) continue;
        CHECK(run_both(m, 1, &x, NULL, NULL, 0, label, VBS_MODE_MEAN), "%s", label);
        vbs_model_free(m);
    }
}

static void sweep_broadcast(vbs_op op) {
    for (int t = 0; t < 40; t++) {
        int nd = (int)ri(1, 5);
        vbs_shape a = {nd, {0}}, bsh;
        for (int i = 0; i < nd; i++) a.d[i] = ri(1, 4);
        int nb = op == VBS_OP_PRELU ? (int)ri(1, nd) : (int)ri(1, 5);
        bsh.ndim = nb;
        for (int i = 0; i < nb; i++) {
            int j = i + nd - nb;
            int64_t da = j >= 0 ? a.d[j] : ri(1, 3);
            bsh.d[i] = ri(0, 1) ? 1 : da;
        }
        if (op != VBS_OP_PRELU && ri(0, 1)) { vbs_shape tmp = a; a = bsh; bsh = tmp; }
        vbs_shape sh[2] = {a, bsh};
        vbs_builder *b = vbs_b_new(1);
        char err[512], label[64];
        snprintf(label, sizeof label, "%s rank %d vs %d", vbs_ops[op].name, a.ndim, bsh.ndim);
        vbs_model *m = one_op(b, op, 2, sh, 0, NULL, err);
        CHECK(m != NULL, "%s: %s", label, err);
        if (!m) continue;
        CHECK(run_both(m, 2, sh, NULL, NULL, 0, label, VBS_MODE_MEAN), "%s", label);
        vbs_model_free(m);
    }
}

static void sweep_misc(void) {
    for (int t = 0; t < 30; t++) {
        int nd = (int)ri(3, 5);
        vbs_shape x = {nd, {0}};
        for (int i = 0; i < nd; i++) x.d[i] = ri(1, 5);
        char err[512];
        /* unary activations, softmax on a random axis, norms */
        vbs_op un[] = {VBS_OP_RELU, VBS_OP_LEAKY_RELU, VBS_OP_SIGMOID, VBS_OP_SOFTPLUS, VBS_OP_IDENTITY, VBS_OP_DROPOUT,
                       VBS_OP_GLOBAL_AVERAGE_POOL};
        for (size_t u = 0; u < sizeof un / sizeof un[0]; u++) {
            vbs_builder *b = vbs_b_new(1);
            vbs_model *m = one_op(b, un[u], 1, &x, 0, NULL, err);
            CHECK(m != NULL, "%s: %s", vbs_ops[un[u]].name, err);
            if (m) CHECK(run_both(m, 1, &x, NULL, NULL, 0, vbs_ops[un[u]].name, VBS_MODE_MEAN), "%s", vbs_ops[un[u]].name);
            vbs_model_free(m);
        }
        vbs_builder *b = vbs_b_new(1);
        vbs_attr ax = vbs_b_int(b, "axis", ri(-nd, nd - 1));
        vbs_model *m = one_op(b, VBS_OP_SOFTMAX, 1, &x, 1, &ax, err);
        CHECK(m && run_both(m, 1, &x, NULL, NULL, 0, "Softmax", VBS_MODE_MEAN), "Softmax axis %lld", (long long)ax.i);
        vbs_model_free(m);
        vbs_shape c = S(1, (int)x.d[1]);
        vbs_shape bn[5] = {x, c, c, c, c};
        float *bx[5] = {NULL, NULL, NULL, NULL, NULL};
        float var[64];
        for (int i = 0; i < x.d[1]; i++) var[i] = 0.5f + (float)i;
        bx[4] = var;
        b = vbs_b_new(1);
        m = one_op(b, VBS_OP_BATCH_NORM, 5, bn, 0, NULL, err);
        CHECK(m && run_both(m, 5, bn, bx, NULL, 0, "BatchNormalization", VBS_MODE_MEAN), "BatchNormalization");
        vbs_model_free(m);
        b = vbs_b_new(1);
        m = one_op(b, VBS_OP_INSTANCE_NORM, 3, bn, 0, NULL, err);
        CHECK(m && run_both(m, 3, bn, NULL, NULL, 0, "InstanceNormalization", VBS_MODE_MEAN), "InstanceNormalization");
        vbs_model_free(m);
        /* concat of 2-3 inputs on a random axis */
        int axis = (int)ri(0, nd - 1), nin = (int)ri(2, 3);
        vbs_shape cs[3] = {x, x, x};
        for (int i = 0; i < nin; i++) cs[i].d[axis] = ri(1, 4);
        b = vbs_b_new(1);
        vbs_attr cax = vbs_b_int(b, "axis", ri(0, 1) ? axis : axis - nd);
        m = one_op(b, VBS_OP_CONCAT, nin, cs, 1, &cax, err);
        CHECK(m && run_both(m, nin, cs, NULL, NULL, 0, "Concat", VBS_MODE_MEAN), "Concat axis %d", axis);
        vbs_model_free(m);
        /* transpose by a random permutation */
        int64_t perm[5];
        for (int i = 0; i < nd; i++) perm[i] = i;
        for (int i = nd - 1; i > 0; i--) { int j = (int)ri(0, i); int64_t tmp = perm[i]; perm[i] = perm[j]; perm[j] = tmp; }
        b = vbs_b_new(1);
        vbs_attr pe = vbs_b_ints(b, "perm", nd, perm);
        m = one_op(b, VBS_OP_TRANSPOSE, 1, &x, 1, &pe, err);
        CHECK(m && run_both(m, 1, &x, NULL, NULL, 0, "Transpose", VBS_MODE_MEAN), "Transpose");
        vbs_model_free(m);
        /* pad with negative (cropping) and positive pads */
        int64_t pads[10];
        for (int i = 0; i < nd; i++) { pads[i] = ri(x.d[i] > 1 ? -1 : 0, 2); pads[nd + i] = ri(x.d[i] > 2 ? -1 : 0, 2); }
        b = vbs_b_new(1);
        vbs_attr pa[2] = {vbs_b_ints(b, "pads", 2 * nd, pads), vbs_b_float(b, "value", 0.5f)};
        m = one_op(b, VBS_OP_PAD, 1, &x, 2, pa, err);
        if (m) CHECK(run_both(m, 1, &x, NULL, NULL, 0, "Pad", VBS_MODE_MEAN), "Pad");
        vbs_model_free(m);
        /* resize, both modes, every coordinate mode, scales or sizes */
        const char *modes[] = {"nearest", "linear"}, *cts[] = {"half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"},
                   *nms[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
        float sc[5] = {1, 1, 1, 1, 1};
        int64_t sz[5];
        for (int i = 0; i < nd; i++) sz[i] = x.d[i];
        for (int i = 2; i < nd; i++) { sc[i] = (float)ri(1, 6) * 0.5f; sz[i] = ri(1, 9); }
        b = vbs_b_new(1);
        int use_sizes = (int)ri(0, 1);
        vbs_attr ra[4] = {vbs_b_string(b, "mode", modes[ri(0, 1)]), vbs_b_string(b, "coordinate_transformation_mode", cts[ri(0, 3)]),
                          vbs_b_string(b, "nearest_mode", nms[ri(0, 3)]), use_sizes ? vbs_b_ints(b, "sizes", nd, sz) : (vbs_attr){0}};
        if (!use_sizes) {
            ra[3].name = (char *)vbs_b_str(b, "scales");
            ra[3].type = VBS_ATTR_FLOATS;
            ra[3].n = nd;
            ra[3].floats = vbs_b_alloc(b, sizeof(float) * 5);
            memcpy(ra[3].floats, sc, sizeof(float) * (size_t)nd);
        }
        char label[160];
        snprintf(label, sizeof label, "Resize %s %s %s %s", ra[0].s, ra[1].s, ra[2].s, use_sizes ? "sizes" : "scales");
        m = one_op(b, VBS_OP_RESIZE, 1, &x, 4, ra, err);
        if (m) CHECK(run_both(m, 1, &x, NULL, NULL, 0, label, VBS_MODE_MEAN), "%s", label);
        vbs_model_free(m);
    }
}

/* ---- hand-checked cases ------------------------------------------------- */

static void expect(vbs_builder *b, vbs_op op, int n_in, vbs_shape *sh, float **x, int n_attr, vbs_attr *a, const float *want,
                   int64_t n, const char *label) {
    char err[512];
    vbs_model *m = one_op(b, op, n_in, sh, n_attr, a, err);
    CHECK(m != NULL, "%s: %s", label, err);
    if (m) CHECK(run_both(m, n_in, sh, x, want, n, label, VBS_MODE_MEAN), "%s", label);
    vbs_model_free(m);
}

static void hand_cases(void) {
    float x9[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, ones[27], x16[16], x4[4] = {1, 2, 3, 4};
    for (int i = 0; i < 27; i++) ones[i] = 1;
    for (int i = 0; i < 16; i++) x16[i] = (float)i;
    vbs_builder *b;
    {   /* 2x2 box filter over 1..9 */
        vbs_shape sh[3] = {S(4, 1, 1, 3, 3), S(4, 1, 1, 2, 2), S(-1)};
        float *x[3] = {x9, ones, NULL}, want[4] = {12, 16, 24, 28};
        b = vbs_b_new(1);
        expect(b, VBS_OP_CONV, 3, sh, x, 0, NULL, want, 4, "Conv 2x2 box");
    }
    {   /* 3x3x3 box with pad 1 at the centre of a 3x3x3 ones cube: 27; corner: 8 */
        vbs_shape sh[3] = {S(5, 1, 1, 3, 3, 3), S(5, 1, 1, 3, 3, 3), S(1, 1)};
        float bias[1] = {0.5f}, *x[3] = {ones, ones, bias}, want[27];
        for (int z = 0; z < 3; z++)
            for (int y = 0; y < 3; y++)
                for (int w = 0; w < 3; w++)
                    want[(z * 3 + y) * 3 + w] = (float)((z == 1 ? 3 : 2) * (y == 1 ? 3 : 2) * (w == 1 ? 3 : 2)) + 0.5f;
        b = vbs_b_new(1);
        int64_t p[6] = {1, 1, 1, 1, 1, 1};
        vbs_attr a = vbs_b_ints(b, "pads", 6, p);
        expect(b, VBS_OP_CONV, 3, sh, x, 1, &a, want, 27, "Conv 3D box pad 1 + bias");
    }
    {   /* transposed conv, stride 1: [1 2;3 4] * ones(2x2) = [1 3 2; 4 10 6; 3 7 4] */
        vbs_shape sh[3] = {S(4, 1, 1, 2, 2), S(4, 1, 1, 2, 2), S(-1)};
        float *x[3] = {x4, ones, NULL}, want[9] = {1, 3, 2, 4, 10, 6, 3, 7, 4};
        b = vbs_b_new(1);
        expect(b, VBS_OP_CONV_TRANSPOSE, 3, sh, x, 0, NULL, want, 9, "ConvTranspose stride 1");
    }
    {   /* stride 2: each input fills its own 2x2 block */
        vbs_shape sh[3] = {S(4, 1, 1, 2, 2), S(4, 1, 1, 2, 2), S(-1)};
        float *x[3] = {x4, ones, NULL}, want[16] = {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4};
        b = vbs_b_new(1);
        int64_t s[2] = {2, 2};
        vbs_attr a = vbs_b_ints(b, "strides", 2, s);
        expect(b, VBS_OP_CONV_TRANSPOSE, 3, sh, x, 1, &a, want, 16, "ConvTranspose stride 2");
    }
    {   /* max pool 2x2/2 over 0..15 */
        vbs_shape sh[1] = {S(4, 1, 1, 4, 4)};
        float *x[1] = {x16}, want[4] = {5, 7, 13, 15};
        b = vbs_b_new(1);
        int64_t k[2] = {2, 2};
        vbs_attr a[2] = {vbs_b_ints(b, "kernel_shape", 2, k), vbs_b_ints(b, "strides", 2, k)};
        expect(b, VBS_OP_MAX_POOL, 1, sh, x, 2, a, want, 4, "MaxPool 2x2");
    }
    {   /* 3D max pool 2x2x2 over 0..7 (x 2 channels) */
        float v[16];
        for (int i = 0; i < 16; i++) v[i] = (float)((i * 5) % 16);
        vbs_shape sh[1] = {S(5, 1, 2, 2, 2, 2)};
        float *x[1] = {v}, want[2] = {15, 13}; /* channel 1 holds 8,13,2,7,12,1,6,11 */
        b = vbs_b_new(1);
        int64_t k[3] = {2, 2, 2};
        vbs_attr a = vbs_b_ints(b, "kernel_shape", 3, k);
        expect(b, VBS_OP_MAX_POOL, 1, sh, x, 1, &a, want, 2, "MaxPool 3D");
    }
    {   /* average pool 3x3 pad 1 over ones: with pads counted, corner 4/9, edge 6/9, centre 1 */
        vbs_shape sh[1] = {S(4, 1, 1, 3, 3)};
        float *x[1] = {ones}, want1[9] = {4 / 9.f, 6 / 9.f, 4 / 9.f, 6 / 9.f, 1, 6 / 9.f, 4 / 9.f, 6 / 9.f, 4 / 9.f}, want0[9];
        for (int i = 0; i < 9; i++) want0[i] = 1;
        int64_t k[2] = {3, 3}, p[4] = {1, 1, 1, 1};
        b = vbs_b_new(1);
        vbs_attr a[3] = {vbs_b_ints(b, "kernel_shape", 2, k), vbs_b_ints(b, "pads", 4, p), vbs_b_int(b, "count_include_pad", 1)};
        expect(b, VBS_OP_AVERAGE_POOL, 1, sh, x, 3, a, want1, 9, "AveragePool count_include_pad=1");
        b = vbs_b_new(1);
        vbs_attr a0[2] = {vbs_b_ints(b, "kernel_shape", 2, k), vbs_b_ints(b, "pads", 4, p)};
        expect(b, VBS_OP_AVERAGE_POOL, 1, sh, x, 2, a0, want0, 9, "AveragePool count_include_pad=0");
    }
    {   /* ceil_mode: 4x4, k3 s2 -> 2x2 */
        vbs_shape sh[1] = {S(4, 1, 1, 4, 4)};
        float *x[1] = {x16}, want[4] = {10, 11, 14, 15};
        int64_t k[2] = {3, 3}, s[2] = {2, 2};
        b = vbs_b_new(1);
        vbs_attr a[3] = {vbs_b_ints(b, "kernel_shape", 2, k), vbs_b_ints(b, "strides", 2, s), vbs_b_int(b, "ceil_mode", 1)};
        expect(b, VBS_OP_MAX_POOL, 1, sh, x, 3, a, want, 4, "MaxPool ceil_mode");
    }
    {   /* global average pool: mean of 0..15 = 7.5 */
        vbs_shape sh[1] = {S(4, 1, 1, 4, 4)};
        float *x[1] = {x16}, want[1] = {7.5f};
        b = vbs_b_new(1);
        expect(b, VBS_OP_GLOBAL_AVERAGE_POOL, 1, sh, x, 0, NULL, want, 1, "GlobalAveragePool");
    }
    {   /* batch norm: scale 2, bias 1, mean 1, var 3, eps 1: y = 2(x-1)/2 + 1 = x */
        vbs_shape sh[5] = {S(4, 1, 1, 2, 2), S(1, 1), S(1, 1), S(1, 1), S(1, 1)};
        float sc[1] = {2}, bi[1] = {1}, mu[1] = {1}, va[1] = {3}, *x[5] = {x4, sc, bi, mu, va};
        b = vbs_b_new(1);
        vbs_attr a = vbs_b_float(b, "epsilon", 1.f);
        expect(b, VBS_OP_BATCH_NORM, 5, sh, x, 1, &a, x4, 4, "BatchNormalization");
    }
    {   /* instance norm of 1..4: mean 2.5, var 1.25 */
        vbs_shape sh[3] = {S(3, 1, 1, 4), S(1, 1), S(1, 1)};
        float sc[1] = {1}, bi[1] = {0}, *x[3] = {x4, sc, bi}, want[4];
        for (int i = 0; i < 4; i++) want[i] = (float)((x4[i] - 2.5) / sqrt(1.25 + 1e-5));
        b = vbs_b_new(1);
        expect(b, VBS_OP_INSTANCE_NORM, 3, sh, x, 0, NULL, want, 4, "InstanceNormalization");
    }
    {   /* softmax over channels of [0, ln 3] = [1/4, 3/4] */
        vbs_shape sh[1] = {S(4, 1, 2, 1, 1)};
        float v[2] = {0, logf(3)}, *x[1] = {v}, want[2] = {0.25f, 0.75f};
        b = vbs_b_new(1);
        vbs_attr a = vbs_b_int(b, "axis", 1);
        expect(b, VBS_OP_SOFTMAX, 1, sh, x, 1, &a, want, 2, "Softmax axis 1");
    }
    {   /* activations */
        float v[4] = {-2, -0.5f, 0, 3}, *x[1] = {v};
        vbs_shape sh[1] = {S(1, 4)};
        float relu[4] = {0, 0, 0, 3}, leaky[4] = {-0.2f, -0.05f, 0, 3}, sp[4], sg[4];
        for (int i = 0; i < 4; i++) { sp[i] = (float)log1p(exp(v[i])); sg[i] = (float)(1 / (1 + exp(-v[i]))); }
        b = vbs_b_new(1);
        expect(b, VBS_OP_RELU, 1, sh, x, 0, NULL, relu, 4, "Relu");
        b = vbs_b_new(1);
        vbs_attr a = vbs_b_float(b, "alpha", 0.1f);
        expect(b, VBS_OP_LEAKY_RELU, 1, sh, x, 1, &a, leaky, 4, "LeakyRelu");
        b = vbs_b_new(1);
        expect(b, VBS_OP_SOFTPLUS, 1, sh, x, 0, NULL, sp, 4, "Softplus");
        b = vbs_b_new(1);
        expect(b, VBS_OP_SIGMOID, 1, sh, x, 0, NULL, sg, 4, "Sigmoid");
    }
    {   /* PRelu with a per-channel slope (C,1,1) */
        vbs_shape sh[2] = {S(4, 1, 2, 1, 2), S(3, 2, 1, 1)};
        float v[4] = {-1, 2, -3, 4}, sl[2] = {0.5f, 2}, *x[2] = {v, sl}, want[4] = {-0.5f, 2, -6, 4};
        b = vbs_b_new(1);
        expect(b, VBS_OP_PRELU, 2, sh, x, 0, NULL, want, 4, "PRelu per channel");
    }
    {   /* broadcasting: (2,1) + (3,) and (2,1) * (1,3) */
        vbs_shape sh[2] = {S(2, 2, 1), S(1, 3)};
        float a0[2] = {10, 20}, b0[3] = {1, 2, 3}, *x[2] = {a0, b0}, want[6] = {11, 12, 13, 21, 22, 23};
        b = vbs_b_new(1);
        expect(b, VBS_OP_ADD, 2, sh, x, 0, NULL, want, 6, "Add broadcast");
        vbs_shape sh2[2] = {S(2, 2, 1), S(2, 1, 3)};
        float want2[6] = {10, 20, 30, 20, 40, 60};
        b = vbs_b_new(1);
        expect(b, VBS_OP_MUL, 2, sh2, x, 0, NULL, want2, 6, "Mul broadcast");
    }
    {   /* concat on channels */
        vbs_shape sh[2] = {S(4, 1, 1, 1, 2), S(4, 1, 2, 1, 2)};
        float a0[2] = {1, 2}, b0[4] = {3, 4, 5, 6}, *x[2] = {a0, b0}, want[6] = {1, 2, 3, 4, 5, 6};
        b = vbs_b_new(1);
        vbs_attr a = vbs_b_int(b, "axis", 1);
        expect(b, VBS_OP_CONCAT, 2, sh, x, 1, &a, want, 6, "Concat axis 1");
    }
    {   /* pad [1,2] by 1 before and 2 after with 9 */
        vbs_shape sh[1] = {S(3, 1, 1, 2)};
        float v[2] = {1, 2}, *x[1] = {v}, want[5] = {9, 1, 2, 9, 9};
        int64_t p[6] = {0, 0, 1, 0, 0, 2};
        b = vbs_b_new(1);
        vbs_attr a[2] = {vbs_b_ints(b, "pads", 6, p), vbs_b_float(b, "value", 9)};
        expect(b, VBS_OP_PAD, 1, sh, x, 2, a, want, 5, "Pad constant");
    }
    {   /* resize: nearest x2 (half_pixel, round_prefer_floor) and linear */
        vbs_shape sh[1] = {S(4, 1, 1, 2, 2)};
        float *x[1] = {x4}, want[16] = {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4};
        int64_t sizes[4] = {1, 1, 4, 4};
        b = vbs_b_new(1);
        vbs_attr a = vbs_b_ints(b, "sizes", 4, sizes);
        expect(b, VBS_OP_RESIZE, 1, sh, x, 1, &a, want, 16, "Resize nearest x2");
        vbs_shape sh1[1] = {S(3, 1, 1, 2)};
        float v[2] = {0, 2}, *x1[1] = {v}, lin_hp[4] = {0, 0.5f, 1.5f, 2}, lin_ac[3] = {0, 1, 2};
        int64_t s4[3] = {1, 1, 4}, s3[3] = {1, 1, 3};
        b = vbs_b_new(1);
        vbs_attr la[2] = {vbs_b_string(b, "mode", "linear"), vbs_b_ints(b, "sizes", 3, s4)};
        expect(b, VBS_OP_RESIZE, 1, sh1, x1, 2, la, lin_hp, 4, "Resize linear half_pixel");
        b = vbs_b_new(1);
        vbs_attr lb[3] = {vbs_b_string(b, "mode", "linear"), vbs_b_ints(b, "sizes", 3, s3),
                          vbs_b_string(b, "coordinate_transformation_mode", "align_corners")};
        expect(b, VBS_OP_RESIZE, 1, sh1, x1, 3, lb, lin_ac, 3, "Resize linear align_corners");
    }
    {   /* transpose (2,3) -> (3,2) */
        vbs_shape sh[1] = {S(2, 2, 3)};
        float v[6] = {1, 2, 3, 4, 5, 6}, *x[1] = {v}, want[6] = {1, 4, 2, 5, 3, 6};
        b = vbs_b_new(1);
        expect(b, VBS_OP_TRANSPOSE, 1, sh, x, 0, NULL, want, 6, "Transpose default perm");
    }
    {   /* spatial broadcast of z (1,2) over a (1,3,2,2) reference */
        vbs_shape sh[2] = {S(2, 1, 2), S(4, 1, 3, 2, 2)};
        float z[2] = {7, -1}, *x[2] = {z, NULL}, want[8] = {7, 7, 7, 7, -1, -1, -1, -1};
        b = vbs_b_new(1);
        expect(b, VBS_OP_SPATIAL_BROADCAST, 2, sh, x, 0, NULL, want, 8, "SpatialBroadcast");
    }
    {   /* Gaussian sample: mean mode gives the mean; sample mode gives mean + softplus(rho) * eps(seed 7, sample 3) */
        vbs_shape sh[2] = {S(2, 1, 10), S(2, 1, 10)};
        float mu[10], rho[10], want[10], eps[10];
        for (int i = 0; i < 10; i++) { mu[i] = (float)i; rho[i] = -1.f + 0.2f * (float)i; }
        float *x[2] = {mu, rho};
        b = vbs_b_new(1);
        expect(b, VBS_OP_GAUSSIAN_SAMPLE, 2, sh, x, 0, NULL, mu, 10, "GaussianSample mean mode");
        char err[512];
        b = vbs_b_new(1);
        vbs_model *m = one_op(b, VBS_OP_GAUSSIAN_SAMPLE, 2, sh, 0, NULL, err);
        vbs_randn(7, 3, m->g.nodes[0].rng_stream, 0, 10, eps);
        for (int i = 0; i < 10; i++) want[i] = mu[i] + (float)log1p(exp(rho[i])) * eps[i];
        CHECK(run_both(m, 2, sh, x, want, 10, "GaussianSample sample mode", VBS_MODE_SAMPLE), "GaussianSample sample mode");
        vbs_model_free(m);
    }
}

int main(void) {
    sweep_conv(0);
    sweep_conv(1);
    sweep_winograd();
    sweep_gemm();
    sweep_pool(VBS_OP_MAX_POOL);
    sweep_pool(VBS_OP_AVERAGE_POOL);
    sweep_broadcast(VBS_OP_ADD);
    sweep_broadcast(VBS_OP_MUL);
    sweep_broadcast(VBS_OP_PRELU);
    sweep_misc();
    hand_cases();
    return finish("test_ops");
}
