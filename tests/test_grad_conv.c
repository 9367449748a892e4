/*
 * test_grad_conv.c: the backward passes of Conv and ConvTranspose.
 *  - naive backward against central finite differences of the naive
 *    forward (tests/gradcheck.h), per element on tiny tensors and along
 *    random directions on larger ones, over a seeded sweep of 1D/2D/3D,
 *    kernels 1-3, strides 1-2, dilations 1-2, asymmetric pads 0-2, groups
 *    1-2, bias on/off, batch 1-2, output_padding, auto_pad and output_shape;
 *  - the fast backward against the naive one on the same sweeps, on the
 *    Winograd layers across tile and chunk edges (incl. pads above 2, whose
 *    data gradient falls back to im2col), and on realistic layer sizes;
 *  - the Winograd forward, dX and dW kernels called directly against the
 *    naive ones, whatever size the dispatch rules would give them to;
 *  - gradients asked for only some inputs (the image input has none).
 * Conv is bilinear in (x, w) and linear in b: no kinks to steer around.
 * A failing case prints every parameter.
 */
#include <stdlib.h>

#include "gradcheck.h"
#include "ops/ops.h"

typedef struct {
    int transpose, nsp, group, cg, mg, batch, bias;
    int64_t k[3], s[3], d[3], p[6], op[3], in[3];
    const char *auto_pad;   /* NULL: explicit pads */
    int out_shape;          /* ConvTranspose: give output_shape (in * s + extra) instead of pads */
    int64_t os_extra[3];
} conv_case;

static void describe(const conv_case *cc, char *buf, size_t n) {
    int len = snprintf(buf, n, "%s %dD N%d g%d cin/g%d m/g%d bias%d", cc->transpose ? "ConvTranspose" : "Conv", cc->nsp, cc->batch,
                       cc->group, cc->cg, cc->mg, cc->bias);
    const char *names[] = {"in", "k", "s", "d", "pads_begin", "pads_end", "out_pad"};
    const int64_t *arrs[] = {cc->in, cc->k, cc->s, cc->d, cc->p, cc->p + cc->nsp, cc->op};
    for (int a = 0; a < 7 && len < (int)n; a++) {
        len += snprintf(buf + len, n - (size_t)len, " %s", names[a]);
        for (int i = 0; i < cc->nsp && len < (int)n; i++) len += snprintf(buf + len, n - (size_t)len, "%s%lld", i ? "," : "", (long long)arrs[a][i]);
    }
    if (cc->auto_pad && len < (int)n) len += snprintf(buf + len, n - (size_t)len, " auto_pad %s", cc->auto_pad);
    if (cc->out_shape && len < (int)n) {
        len += snprintf(buf + len, n - (size_t)len, " output_shape in*s+");
        for (int i = 0; i < cc->nsp && len < (int)n; i++) len += snprintf(buf + len, n - (size_t)len, "%s%lld", i ? "," : "", (long long)cc->os_extra[i]);
    }
}

/* A case the test means to run must build: counts a failure otherwise. */
static int must(int ok, const char *what) {
    if (!ok) CHECK(ok, "%s: case refused (reason above)", what);
    return ok;
}

/* 0 if the node is refused (a window larger than the padded input) */
static int build(gc_case *c, const conv_case *cc) {
    vbs_shape sh[3];
    int nsp = cc->nsp;
    sh[0].ndim = sh[1].ndim = 2 + nsp;
    sh[0].d[0] = cc->batch;
    sh[0].d[1] = cc->cg * cc->group;
    if (cc->transpose) { sh[1].d[0] = cc->cg * cc->group; sh[1].d[1] = cc->mg; }
    else { sh[1].d[0] = cc->mg * cc->group; sh[1].d[1] = cc->cg; }
    for (int i = 0; i < nsp; i++) { sh[0].d[2 + i] = cc->in[i]; sh[1].d[2 + i] = cc->k[i]; }
    sh[2].ndim = cc->bias ? 1 : -1;
    sh[2].d[0] = cc->mg * cc->group;
    vbs_builder *b = vbs_b_new(1);
    vbs_attr a[6];
    int na = 0;
    a[na++] = vbs_b_ints(b, "strides", nsp, cc->s);
    a[na++] = vbs_b_ints(b, "dilations", nsp, cc->d);
    a[na++] = vbs_b_int(b, "group", cc->group);
    if (cc->auto_pad) a[na++] = vbs_b_string(b, "auto_pad", cc->auto_pad);
    else if (!cc->out_shape) a[na++] = vbs_b_ints(b, "pads", 2 * nsp, cc->p);
    if (cc->transpose) {
        a[na++] = vbs_b_ints(b, "output_padding", nsp, cc->op);
        if (cc->out_shape) {
            int64_t os[3];
            for (int i = 0; i < nsp; i++) os[i] = cc->in[i] * cc->s[i] + cc->os_extra[i];
            a[na++] = vbs_b_ints(b, "output_shape", nsp, os);
        }
    }
    char label[256];
    describe(cc, label, sizeof label);
    return gc_new(c, cc->transpose ? VBS_OP_CONV_TRANSPOSE : VBS_OP_CONV, 3, sh, na, a, b, label);
}

/* A random case; small = sizes for per-element finite differences. */
static conv_case random_case(int transpose, int small) {
    conv_case cc;
    memset(&cc, 0, sizeof cc);
    cc.transpose = transpose;
    cc.nsp = (int)gc_ri(1, 3);
    cc.group = (int)gc_ri(1, 2);
    cc.cg = (int)gc_ri(1, small ? 2 : 3);
    cc.mg = (int)gc_ri(1, small ? 2 : 3);
    cc.batch = (int)gc_ri(1, 2);
    cc.bias = (int)gc_ri(0, 1);
    for (int i = 0; i < cc.nsp; i++) {
        cc.k[i] = gc_ri(1, 3); cc.s[i] = gc_ri(1, 2); cc.d[i] = gc_ri(1, 2);
        cc.p[i] = gc_ri(0, 2); cc.p[cc.nsp + i] = gc_ri(0, 2);
        /* output_padding must stay below the stride or the dilation */
        cc.op[i] = transpose ? gc_ri(0, (cc.s[i] > cc.d[i] ? cc.s[i] : cc.d[i]) - 1) : 0;
        int64_t lo = cc.nsp == 3 ? 2 : 3, hi = small ? (cc.nsp == 3 ? 3 : 5) : (cc.nsp == 3 ? 5 : 9);
        cc.in[i] = gc_ri(lo, hi);
    }
    int r = (int)gc_ri(0, 9);
    if (r == 0) cc.auto_pad = "SAME_UPPER";
    else if (r == 1) cc.auto_pad = "SAME_LOWER";
    else if (r == 2) cc.auto_pad = "VALID";
    else if (r == 3 && transpose) {
        cc.out_shape = 1;
        for (int i = 0; i < cc.nsp; i++) cc.os_extra[i] = gc_ri(-1, 1);
    }
    return cc;
}

/* atol for sums of `terms` products of values in [-1, 1]: float rounding
 * grows like sqrt(terms) for random signs; Winograd's transforms add a
 * constant factor on top. */
static double atol_for(double terms) { return 5e-5 * sqrt(terms > 1 ? terms : 1); }

/* terms per gradient element of the largest of dX and dW */
static double terms_of(const gc_case *c) {
    int64_t ksz = 1, osz = 1;
    for (int i = 2; i < c->xs[1].ndim; i++) ksz *= c->xs[1].d[i];
    int transpose = c->node->op == VBS_OP_CONV_TRANSPOSE;
    const vbs_shape *big = transpose ? &c->xs[0] : &c->ys[0]; /* the side whose positions dW sums over */
    for (int i = 2; i < big->ndim; i++) osz *= big->d[i];
    double dw = (double)big->d[0] * (double)osz;
    double dx = (double)(transpose ? c->xs[1].d[1] : c->xs[1].d[0]) * (double)ksz;
    double db = (double)c->ys[0].d[0] * (double)(vbs_shape_numel(&c->ys[0]) / (c->ys[0].d[0] * c->ys[0].d[1]));
    return fmax(fmax(dw, dx), db);
}

static void sweep(int transpose, int small, int n, int want_cases) {
    int cases = 0;
    for (int t = 0; t < n; t++) {
        conv_case cc = random_case(transpose, small);
        gc_case c;
        if (!build(&c, &cc)) continue;
        cases++;
        if (gc_ri(0, 4) == 0) gc_skip(&c, 0); /* the graph's image input: no dX */
        if (small) CHECK(gc_fd(&c, 2e-3), "finite differences: %s", c.label);
        CHECK(gc_fast_naive(&c, atol_for(terms_of(&c)), 1e-4), "fast vs naive: %s", c.label);
        gc_free(&c);
    }
    CHECK(cases >= want_cases, "%s sweep ran only %d valid cases of %d", transpose ? "ConvTranspose" : "Conv", cases, n);
}

/* The Winograd forward, data and filter kernels against the naive ones,
 * called directly: the dispatch rules send small layers to im2col, but the
 * kernels must be right at every size, tile edge and pad they accept. */
static int winograd_direct(gc_case *c) {
    vbs_shape in[2] = {c->xs[0], c->xs[1]};
    int data_ok = c->node->a.win.pad[0] <= 2 && c->node->a.win.pad[1] <= 2;
    size_t wd = vbs_winograd_backward_work(in, &c->ys[0], 1), wf = vbs_winograd_backward_work(in, &c->ys[0], 0);
    size_t wy = vbs_winograd_work(c->node, in, &c->ys[0]), wmax = wd > wf ? wd : wf;
    float *work = malloc(sizeof(float) * ((wmax > wy ? wmax : wy) + 16)), *y = malloc(sizeof(float) * (size_t)c->ny[0]);
    double atol = atol_for(terms_of(c));
    char what[300];
    gc_forward(c, 1);
    vbs_op_args f;
    gc_args(c, &f);
    f.y[0] = y;
    f.work = work;
    vbs_winograd_forward(&f);
    snprintf(what, sizeof what, "%s Winograd forward", c->label);
    int ok = close_enough(what, y, c->y[0], (long)c->ny[0], atol, 1e-4);
    free(y);
    float **ref = gc_alloc_dx(c, 0.f), **got = gc_alloc_dx(c, 0.f);
    for (int i = 0; i < 2; i++)
        for (int64_t j = 0; j < c->nx[i]; j++) ref[i][j] = got[i][j] = gc_rf();
    gc_backward(c, 1, ref);
    vbs_op_args a;
    gc_args(c, &a);
    vbs_grad_args g;
    memset(&g, 0, sizeof g);
    g.fwd = &a;
    g.dy[0] = c->dy[0];
    g.work = work;
    g.dx[1] = got[1];
    vbs_winograd_backward_filter(&g);
    snprintf(what, sizeof what, "%s Winograd dW", c->label);
    ok &= close_enough(what, got[1], ref[1], (long)c->nx[1], atol, 1e-4);
    if (data_ok) {
        g.dx[1] = NULL;
        g.dx[0] = got[0];
        vbs_winograd_backward_data(&g);
        snprintf(what, sizeof what, "%s Winograd dX", c->label);
        ok &= close_enough(what, got[0], ref[0], (long)c->nx[0], atol, 1e-4);
    }
    gc_free_dx(ref);
    gc_free_dx(got);
    free(work);
    return ok;
}

/* 2D 3x3 stride-1 convolutions take Winograd F(4x4, 3x3) for dX and dW:
 * sizes across tile (4) and chunk (8 tiles = 32 columns) edges, pads 0-3
 * (above 2 the data gradient takes im2col), channels, batch, bias. */
static void sweep_winograd(void) {
    for (int t = 0; t < 60; t++) {
        conv_case cc;
        memset(&cc, 0, sizeof cc);
        cc.nsp = 2; cc.group = 1;
        cc.cg = (int)gc_ri(1, 6); cc.mg = (int)gc_ri(1, 6);
        cc.batch = (int)gc_ri(1, 2); cc.bias = (int)gc_ri(0, 1);
        cc.in[0] = gc_ri(1, 24);
        cc.in[1] = t % 4 == 0 ? gc_ri(30, 75) : gc_ri(1, 24);
        for (int i = 0; i < 2; i++) { cc.k[i] = 3; cc.s[i] = 1; cc.d[i] = 1; }
        for (int i = 0; i < 4; i++) cc.p[i] = gc_ri(0, t % 5 == 0 ? 3 : 2);
        if (cc.in[0] + cc.p[0] + cc.p[2] < 3 || cc.in[1] + cc.p[1] + cc.p[3] < 3) continue;
        gc_case c;
        if (!must(build(&c, &cc), "case")) continue;
        if (t % 6 == 0) CHECK(gc_fd(&c, 2e-3), "finite differences: %s", c.label);
        CHECK(gc_fast_naive(&c, atol_for(terms_of(&c)), 1e-4), "Winograd-shaped fast vs naive: %s", c.label);
        CHECK(winograd_direct(&c), "Winograd kernels vs naive: %s", c.label);
        gc_free(&c);
    }
}

/* Layers of the reference U-Net and friends, at sizes where blocking,
 * tiling and GEMM shapes are those of real use. */
static void realistic(void) {
    struct { int transpose, cin, cout, k, s, p, h, w, batch, skip_dx, dil; } L[] = {
        {0, 16, 16, 3, 1, 1, 64, 64, 1, 0, 1},   /* Winograd dX and dW, several tile blocks */
        {0, 256, 256, 3, 1, 1, 8, 8, 1, 0, 1},   /* bottleneck: im2col for both */
        {0, 64, 128, 3, 1, 1, 20, 20, 1, 0, 1},  /* Winograd dX, im2col dW */
        {0, 64, 32, 3, 1, 1, 32, 32, 2, 0, 1},   /* Winograd both, batch 2 */
        {0, 32, 32, 3, 1, 1, 62, 64, 1, 0, 1},   /* Winograd dW reading dY in place but for its last block */
        {0, 4, 16, 3, 1, 1, 40, 40, 2, 1, 1},    /* first layer: no dX, batch 2 */
        {0, 32, 16, 1, 1, 0, 48, 48, 1, 0, 1},   /* 1x1 head: plain GEMM */
        {0, 16, 32, 3, 2, 1, 33, 33, 1, 0, 1},   /* strided: im2col tiles */
        {1, 32, 16, 2, 2, 0, 16, 16, 1, 0, 1},   /* 2x2 stride-2 up-sampling */
        {1, 16, 8, 3, 2, 1, 12, 12, 2, 0, 1},    /* overlapping transposed windows */
        /* more than one backward im2col tile (VBS_BWD_TILE_FLOATS): */
        {0, 32, 8, 3, 1, 2, 72, 72, 1, 0, 2}, /* dilated: 288 x 5184 columns */
        {1, 16, 64, 3, 2, 1, 48, 48, 1, 0, 1},   /* 576 x 2304 columns of dY */
    };
    for (size_t i = 0; i < sizeof L / sizeof L[0]; i++) {
        conv_case cc;
        memset(&cc, 0, sizeof cc);
        cc.transpose = L[i].transpose; cc.nsp = 2; cc.group = 1; cc.batch = L[i].batch; cc.bias = 1;
        cc.cg = L[i].cin; cc.mg = L[i].cout;
        for (int j = 0; j < 2; j++) {
            cc.k[j] = L[i].k; cc.s[j] = L[i].s; cc.d[j] = L[i].dil; cc.p[j] = cc.p[2 + j] = L[i].p;
            cc.in[j] = j ? L[i].w : L[i].h;
            cc.op[j] = L[i].transpose && L[i].p ? 1 : 0;
        }
        gc_case c;
        if (!must(build(&c, &cc), "case")) continue;
        if (L[i].skip_dx) gc_skip(&c, 0);
        CHECK(gc_fast_naive(&c, atol_for(terms_of(&c)), 1e-4), "fast vs naive: %s", c.label);
        gc_free(&c);
    }
}

/* Only the inputs asked for are touched: with dx NULL for some inputs the
 * others still match, and a buffer for an input not asked for is never
 * written (both kernels, every path). */
static void partial(void) {
    conv_case cs[3];
    memset(cs, 0, sizeof cs);
    for (int v = 0; v < 3; v++) {
        conv_case *cc = &cs[v];
        cc->nsp = 2; cc->group = 1; cc->cg = 3; cc->mg = 5; cc->batch = 2; cc->bias = 1;
        for (int j = 0; j < 2; j++) { cc->k[j] = v == 2 ? 2 : 3; cc->s[j] = v == 1 || v == 2 ? 2 : 1; cc->d[j] = 1; cc->p[j] = cc->p[2 + j] = v == 2 ? 0 : 1; cc->in[j] = 9; }
        cc->transpose = v == 2;
    }
    for (int v = 0; v < 3; v++)
        for (int mask = 0; mask < 8; mask++) {
            gc_case c;
            if (!must(build(&c, &cs[v]), "partial")) continue;
            for (int i = 0; i < 3; i++)
                if (!(mask >> i & 1)) gc_skip(&c, i);
            for (int naive = 0; naive < 2; naive++) {
                float **dx = gc_alloc_dx(&c, 0.5f);
                gc_backward(&c, naive, dx);
                for (int i = 0; i < 3; i++) {
                    int moved = 0;
                    for (int64_t j = 0; j < c.nx[i]; j++) moved |= dx[i][j] != 0.5f;
                    CHECK(moved == (mask >> i & 1), "%s %s mask %d: input %d %s", c.label, naive ? "naive" : "fast", mask, i,
                          moved ? "written though not asked for" : "not written");
                }
                gc_free_dx(dx);
            }
            CHECK(gc_fast_naive(&c, 1e-4, 1e-4), "fast vs naive: %s mask %d", c.label, mask);
            gc_free(&c);
        }
}

/* A hand-worked case: a 1x1x2x2 input, one 2x2 filter, no padding: y is one
 * value, so dX = dy * w and dW = dy * x exactly, dB = dy. */
static void hand_case(void) {
    conv_case cc;
    memset(&cc, 0, sizeof cc);
    cc.nsp = 2; cc.group = 1; cc.cg = 1; cc.mg = 1; cc.batch = 1; cc.bias = 1;
    for (int j = 0; j < 2; j++) { cc.k[j] = 2; cc.s[j] = 1; cc.d[j] = 1; cc.in[j] = 2; }
    gc_case c;
    if (!must(build(&c, &cc), "hand")) return;
    float x[4] = {1, 2, 3, 4}, w[4] = {0.5f, -1, 2, 0.25f};
    memcpy(c.x[0], x, sizeof x);
    memcpy(c.x[1], w, sizeof w);
    c.dy[0][0] = 3;
    for (int naive = 0; naive < 2; naive++) {
        float **dx = gc_alloc_dx(&c, 1.f);
        gc_backward(&c, naive, dx);
        float want_x[4], want_w[4], want_b = 1 + 3;
        for (int i = 0; i < 4; i++) { want_x[i] = 1 + 3 * w[i]; want_w[i] = 1 + 3 * x[i]; }
        CHECK(close_enough("hand dX", dx[0], want_x, 4, 1e-6, 0), "%s", naive ? "naive" : "fast");
        CHECK(close_enough("hand dW", dx[1], want_w, 4, 1e-6, 0), "%s", naive ? "naive" : "fast");
        CHECK(close_enough("hand dB", dx[2], &want_b, 1, 1e-6, 0), "%s", naive ? "naive" : "fast");
        gc_free_dx(dx);
    }
    gc_free(&c);
}

/* The realistic cases above cover both sides of the dispatch rules. */
static void dispatch(void) {
    vbs_node n;
    memset(&n, 0, sizeof n);
    n.op = VBS_OP_CONV;
    n.a.win.group = 1;
    for (int i = 0; i < 2; i++) { n.a.win.kernel[i] = 3; n.a.win.stride[i] = n.a.win.dil[i] = 1; n.a.win.pad[i] = n.a.win.pad[3 + i] = 1; }
    struct { int64_t c, m, hw; int data, filter; } D[] = {{16, 16, 64, 1, 1}, {256, 256, 8, 0, 0}, {64, 128, 20, 1, 0}, {64, 32, 32, 1, 1}};
    for (size_t i = 0; i < sizeof D / sizeof D[0]; i++) {
        vbs_shape in[2] = {{4, {1, D[i].c, D[i].hw, D[i].hw}}, {4, {D[i].m, D[i].c, 3, 3}}}, out = {4, {1, D[i].m, D[i].hw, D[i].hw}};
        CHECK(vbs_winograd_backward_pays(&n, in, &out, 1) == D[i].data && vbs_winograd_backward_pays(&n, in, &out, 0) == D[i].filter,
              "dispatch of %lld->%lld at %lldx%lld: expected Winograd dX %d dW %d", (long long)D[i].c, (long long)D[i].m,
              (long long)D[i].hw, (long long)D[i].hw, D[i].data, D[i].filter);
    }
    /* the forward: im2col up to 12x12 (at 8x8, 4 tiles in a chunk of 8), Winograd from 15x15 */
    struct { int64_t hw; int wino; } F[] = {{8, 0}, {12, 0}, {15, 1}, {16, 1}, {64, 1}};
    for (size_t i = 0; i < sizeof F / sizeof F[0]; i++) {
        vbs_shape in[2] = {{4, {1, 256, F[i].hw, F[i].hw}}, {4, {256, 256, 3, 3}}}, out = {4, {1, 256, F[i].hw, F[i].hw}};
        CHECK(vbs_winograd_forward_pays(&n, &in[0], &in[1], &out) == F[i].wino, "forward dispatch at %lldx%lld: expected Winograd %d",
              (long long)F[i].hw, (long long)F[i].hw, F[i].wino);
    }
    n.a.win.pad[0] = 3;
    vbs_shape in[2] = {{4, {1, 16, 64, 64}}, {4, {16, 16, 3, 3}}}, out = {4, {1, 16, 68, 64}};
    CHECK(!vbs_winograd_backward_pays(&n, in, &out, 1), "a top pad of 3 must send dX to im2col");
}

int main(void) {
    dispatch();
    hand_case();
    sweep(0, 1, 120, 60);
    sweep(1, 1, 120, 60);
    sweep(0, 0, 100, 50);
    sweep(1, 0, 100, 50);
    sweep_winograd();
    realistic();
    partial();
    return finish("test_grad_conv");
}
