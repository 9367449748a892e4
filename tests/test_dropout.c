/*
 * test_dropout.c: MC dropout (runtime/ops/dropout.c) against exact
 * statistics, in the style of test_mc.
 *  - The mask words (vbs_randu32) against Philox4x32-10 called block by
 *    block (itself checked against Random123's vectors in test_rng), over
 *    ranges cut at odd places and sample keys above 2^32.
 *  - The masks of a Dropout node over 32768 elements and several samples:
 *    every value is 0 or x / (1 - p) exactly; the keep rate within 5
 *    binomial standard deviations of 1 - p; pairs of samples agree on an
 *    element at the rate p^2 + (1 - p)^2 and pairs of elements (lags 1, 3,
 *    4, 32, a channel) are both kept at the rate (1 - p)^2, each within 5
 *    standard deviations over disjoint pairs; two Dropout nodes on the same
 *    input agree at p^2 + (1 - p)^2 (their streams differ); another seed
 *    gives other masks.
 *  - The mean of 3000 samples against x (E y = x exactly for inverted
 *    dropout): every element within 5.5 standard deviations and the mean
 *    squared z-score within 5 of its own standard deviations of 1.
 *  - Mean mode is the identity, byte for byte; ratio 0 too.
 *  - Fast kernels against naive ones, forward and backward, byte for byte.
 *  - Batches: at inference every item of a pass gets the sample's mask (a
 *    batch of 3 equals three passes of one); in training item j gets the
 *    mask of sample key s + j (the key a pass of that example alone has).
 *  - The backward against central finite differences with the mask fixed
 *    (tests/gradcheck.h), and its mask against the forward's.
 *  - A one-input network logit = w * dropout(x) + b with a sigmoid: the
 *    mean probability, predictive and expected entropy and the mutual
 *    information of 20000 samples against their exact values (two-point
 *    distributions), within 5 Monte-Carlo standard deviations; mean mode
 *    gives sigma(w x + b) and MI = 0.
 *  - A conv net with Dropout run slice by slice over a volume: the same
 *    bytes at 1 and 2 threads, other bytes under another seed, MI > 0; in
 *    mean mode MI = 0; the same net with a fixed batch of 2 (two slices a
 *    pass) gives the same bytes.
 *  - vbs_model_stochasticity on each kind; refusals of a ratio outside
 *    [0, 1) and of a ratio input.
 */
#include <stdlib.h>

#include "builder.h"
#include "drop_net.h"
#include "gradcheck.h"
#include "mc_maps.h"

static uint64_t rs = 0x1234567ull;
static double urand(void) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (double)(rs >> 11) / 9007199254740992.0; }

/* ---- the words ---------------------------------------------------------- */

static void words(void) {
    const uint64_t seeds[3] = {0, 7, 0x123456789abcdefull}, samples[3] = {0, 5, (1ull << 32) + 3};
    uint32_t got[300];
    int bad = 0;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            const int64_t firsts[4] = {0, 1, 31, 1000003}, lens[4] = {300, 3, 33, 64};
            for (int k = 0; k < 4; k++) {
                vbs_randu32(seeds[a], samples[b], 0x80000005u, (uint64_t)firsts[k], lens[k], got);
                for (int64_t e = 0; e < lens[k]; e++) {
                    uint64_t el = (uint64_t)firsts[k] + (uint64_t)e, blk = el / 4;
                    uint32_t key[2] = {(uint32_t)seeds[a], (uint32_t)(seeds[a] >> 32)};
                    uint32_t ctr[4] = {(uint32_t)blk, (uint32_t)(blk >> 32) ^ ((uint32_t)(samples[b] >> 32) << 16), 0x80000005u, (uint32_t)samples[b]};
                    uint32_t o[4];
                    vbs_philox4x32(key, ctr, o);
                    if (o[el % 4] != got[e] && bad++ < 3)
                        printf("  word %llu of seed %llu sample %llu: %08x, Philox says %08x\n", (unsigned long long)el,
                               (unsigned long long)seeds[a], (unsigned long long)samples[b], got[e], o[el % 4]);
                }
            }
        }
    CHECK(!bad, "%d mask words differ from Philox4x32-10", bad);
}

/* ---- models --------------------------------------------------------------- */

/* x (shape) -> Dropout(ratio) -> y; with twin, a second Dropout on x -> y2 */
static vbs_model *drop_model(const vbs_shape *sh, float ratio, int twin) {
    vbs_builder *b = vbs_b_new(1);
    vbs_b_input(b, "x", sh->ndim, sh->d, NULL);
    const char *x = "x";
    vbs_attr r = vbs_b_float(b, "ratio", ratio);
    vbs_b_node(b, VBS_OP_DROPOUT, "y", 1, &x, 1, &r);
    vbs_b_output(b, "y");
    if (twin) {
        vbs_b_node(b, VBS_OP_DROPOUT, "y2", 1, &x, 1, &r);
        vbs_b_output(b, "y2");
    }
    vbs_model *m;
    if (vbs_b_finish(b, "dropout", &m)) { printf("%s\n", vbs_model_errmsg(m)); exit(1); }
    return m;
}

/* one pass; the output o's values copied into out */
static void pass(vbs_model *m, const float *x, const vbs_shape *sh, vbs_mode mode, uint64_t seed, uint64_t sample, int naive,
                 int o, float *out) {
    vbs_worker w = {0};
    char err[VBS_ERRLEN];
    const float *in[1] = {x};
    if (vbs_worker_run_naive(&w, m, in, sh, mode, seed, sample, naive, err)) { printf("%s\n", err); exit(1); }
    int v = m->g.output_vals[o];
    memcpy(out, vbs_worker_value(&w, m, v), sizeof(float) * (size_t)vbs_shape_numel(&w.plan.shapes[v]));
    vbs_worker_free(&w);
}

/* within k standard deviations of a rate q over n Bernoulli trials */
static int rate_ok(const char *what, double p, long hits, long n, double q, double k) {
    double got = (double)hits / (double)n, sd = sqrt(q * (1 - q) / (double)n);
    int ok = fabs(got - q) <= k * sd + 1e-12;
    if (!ok) printf("  p=%g %s: %.6f over %ld, want %.6f (sd %.2g)\n", p, what, got, n, q, sd);
    return ok;
}

/* ---- mask statistics -------------------------------------------------------- */

static void masks(void) {
    enum { S = 6 };
    vbs_shape sh = {4, {1, 8, 64, 64}};
    const long n = 8 * 64 * 64, per_ch = 64 * 64;
    float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n * S), *y2 = malloc(sizeof(float) * (size_t)n);
    char *keep = malloc((size_t)n * S);
    for (long i = 0; i < n; i++) x[i] = 1.f + (float)(i % 7) * 0.25f;
    const float ps[4] = {0.1f, 0.25f, 0.5f, 0.8f};
    for (int k = 0; k < 4; k++) {
        float p = ps[k], scale = 1.f / (1.f - p);
        vbs_model *m = drop_model(&sh, p, 1);
        long kept = 0, badval = 0;
        for (int s = 0; s < S; s++) {
            pass(m, x, &sh, VBS_MODE_SAMPLE, 42, (uint64_t)s, 0, 0, y + s * n);
            for (long i = 0; i < n; i++) {
                float v = y[s * n + i];
                keep[s * n + i] = v != 0.f;
                kept += v != 0.f;
                badval += v != 0.f && v != x[i] * scale;
            }
        }
        CHECK(!badval, "p=%g: %ld kept values are not x / (1 - p)", p, badval);
        CHECK(rate_ok("keep rate", p, kept, n * S, 1 - p, 5), "p=%g: keep rate", p);
        /* independence across samples: consecutive samples agree at p^2 + (1-p)^2 */
        long agree = 0;
        for (int s = 0; s + 1 < S; s++)
            for (long i = 0; i < n; i++) agree += keep[s * n + i] == keep[(s + 1) * n + i];
        CHECK(rate_ok("agreement of samples", p, agree, n * (S - 1), p * p + (1 - p) * (1 - p), 5), "p=%g: samples not independent", p);
        /* independence across elements: disjoint pairs (i, i + lag) both kept at (1 - p)^2 */
        const long lags[5] = {1, 3, 4, 32, per_ch};
        for (int l = 0; l < 5; l++) {
            long L = lags[l], both = 0, pairs = 0;
            for (int s = 0; s < S; s++)
                for (long i = 0; i + L < n; i++) {
                    if ((i / L) % 2) continue; /* i in the first half of each 2L block: pairs share no element */
                    both += keep[s * n + i] && keep[s * n + i + L];
                    pairs++;
                }
            CHECK(rate_ok("pairs both kept", p, both, pairs, (1 - p) * (1 - p), 5), "p=%g: elements %ld apart not independent", p, L);
        }
        /* two nodes on the same input: other streams */
        pass(m, x, &sh, VBS_MODE_SAMPLE, 42, 0, 0, 1, y2);
        agree = 0;
        for (long i = 0; i < n; i++) agree += keep[i] == (y2[i] != 0.f);
        CHECK(rate_ok("agreement of two nodes", p, agree, n, p * p + (1 - p) * (1 - p), 5), "p=%g: two nodes share their masks", p);
        /* another seed: other masks */
        pass(m, x, &sh, VBS_MODE_SAMPLE, 43, 0, 0, 0, y2);
        agree = 0;
        for (long i = 0; i < n; i++) agree += keep[i] == (y2[i] != 0.f);
        CHECK(rate_ok("agreement of two seeds", p, agree, n, p * p + (1 - p) * (1 - p), 5), "p=%g: another seed, the same mask", p);
        /* mean mode: the identity */
        pass(m, x, &sh, VBS_MODE_MEAN, 42, 0, 0, 0, y2);
        CHECK(!memcmp(y2, x, sizeof(float) * (size_t)n), "p=%g: mean mode is not the identity", p);
        /* the naive kernel draws the same masks */
        pass(m, x, &sh, VBS_MODE_SAMPLE, 42, 3, 1, 0, y2);
        CHECK(!memcmp(y2, y + 3 * n, sizeof(float) * (size_t)n), "p=%g: naive and fast forwards differ", p);
        vbs_model_free(m);
    }
    /* ratio 0: the identity in sample mode too */
    vbs_model *m = drop_model(&sh, 0.f, 0);
    pass(m, x, &sh, VBS_MODE_SAMPLE, 42, 1, 0, 0, y2);
    CHECK(!memcmp(y2, x, sizeof(float) * (size_t)n), "ratio 0 is not the identity");
    vbs_model_free(m);
    free(x); free(y); free(y2); free(keep);
}

/* E[y] = x: the mean of many samples against x */
static void expectation(void) {
    enum { S = 3000 };
    vbs_shape sh = {4, {1, 2, 16, 16}};
    const long n = 2 * 16 * 16;
    const float p = 0.3f;
    float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
    double *sum = calloc((size_t)n, sizeof(double));
    for (long i = 0; i < n; i++) x[i] = (float)(4 * urand() - 2);
    vbs_model *m = drop_model(&sh, p, 0);
    for (int s = 0; s < S; s++) {
        pass(m, x, &sh, VBS_MODE_SAMPLE, 9, (uint64_t)s, 0, 0, y);
        for (long i = 0; i < n; i++) sum[i] += y[i];
    }
    double z2 = 0, zmax = 0;
    long nz = 0;
    for (long i = 0; i < n; i++) {
        double sd = fabs(x[i]) * sqrt(p / (1 - p) / S); /* Var y = x^2 p / (1 - p) */
        if (sd < 1e-6) continue;
        double z = (sum[i] / S - x[i]) / sd;
        z2 += z * z;
        nz++;
        if (fabs(z) > zmax) zmax = fabs(z);
    }
    z2 /= (double)nz;
    CHECK(zmax < 5.5, "the mean of %d samples is %.2f standard deviations from x", S, zmax);
    CHECK(fabs(z2 - 1) < 5 * sqrt(2.0 / (double)nz), "mean squared z-score %.3f over %ld elements, want 1", z2, nz);
    vbs_model_free(m);
    free(x); free(y); free(sum);
}

/* ---- batches ------------------------------------------------------------------- */

/* the op's fast or naive forward called directly, as a training pass would */
static void call(vbs_model *m, const float *x, const vbs_shape *xs, float *y, int training, uint64_t sample, int naive) {
    vbs_op_args a;
    memset(&a, 0, sizeof a);
    a.node = &m->g.nodes[0];
    a.x[0] = x;
    a.xs[0] = xs;
    a.y[0] = y;
    a.ys[0] = xs;
    a.seed = 5;
    a.sample = sample;
    a.sampling = 1;
    a.training = training;
    (naive ? vbs_ops[VBS_OP_DROPOUT].naive : vbs_ops[VBS_OP_DROPOUT].forward)(&a);
}

static void batches(void) {
    vbs_shape one = {4, {1, 3, 5, 7}}, three = {4, {3, 3, 5, 7}};
    const long per = 3 * 5 * 7;
    vbs_model *m = drop_model(&three, 0.4f, 0);
    float x[3 * 105], y[3 * 105], y1[105];
    for (long i = 0; i < 3 * per; i++) x[i] = (float)(urand() + 0.5);
    for (int naive = 0; naive < 2; naive++)
        for (int training = 0; training < 2; training++) {
            call(m, x, &three, y, training, 100, naive);
            int ok = 1;
            for (int j = 0; j < 3; j++) {
                call(m, x + j * per, &one, y1, training, 100 + (training ? (uint64_t)j : 0), naive);
                ok &= !memcmp(y1, y + j * per, sizeof y1);
            }
            CHECK(ok, "%s, %s: item j of a batch is not the pass of item j alone with sample key %s", naive ? "naive" : "fast",
                  training ? "training" : "inference", training ? "s + j" : "s");
        }
    /* the mask differs between items in training, not at inference (the same x in every item) */
    for (long i = 0; i < 3 * per; i++) x[i] = 1.f;
    call(m, x, &three, y, 1, 100, 0);
    CHECK(memcmp(y, y + per, sizeof(float) * (size_t)per), "training: items 0 and 1 got the same mask");
    call(m, x, &three, y, 0, 100, 0);
    CHECK(!memcmp(y, y + per, sizeof(float) * (size_t)per), "inference: items 0 and 1 got different masks");
    vbs_model_free(m);
}

/* ---- gradients -------------------------------------------------------------------- */

static void gradients(void) {
    const float ps[3] = {0.2f, 0.5f, 0.9f};
    const vbs_shape shapes[3] = {{2, {2, 20}}, {4, {3, 2, 5, 7}}, {5, {2, 3, 4, 5, 6}}};
    for (int k = 0; k < 3; k++)
        for (int t = 0; t < 3; t++)
            for (int training = 0; training < 2; training++) {
                vbs_builder *b = vbs_b_new(1);
                vbs_attr r = vbs_b_float(b, "ratio", ps[k]);
                char label[128];
                snprintf(label, sizeof label, "Dropout p=%g rank %d %s", ps[k], shapes[t].ndim, training ? "training" : "inference");
                gc_case c;
                if (!gc_new(&c, VBS_OP_DROPOUT, 1, &shapes[t], 1, &r, b, label)) { CHECK(0, "%s: refused", label); continue; }
                c.training = training;
                CHECK(gc_fd(&c, 1e-3), "%s: finite differences", label);
                CHECK(gc_fast_naive(&c, 0, 0), "%s: fast against naive", label);
                /* the backward's mask is the forward's: dx = dy * y / x with dy = 1 */
                float **dx = gc_alloc_dx(&c, 0.f);
                for (int64_t j = 0; j < c.ny[0]; j++) c.dy[0][j] = 1.f;
                for (int64_t j = 0; j < c.nx[0]; j++) c.x[0][j] = 1.f;
                gc_backward(&c, 0, dx);
                CHECK(!memcmp(dx[0], c.y[0], sizeof(float) * (size_t)c.nx[0]), "%s: the backward's mask is not the forward's", label);
                long zeros = 0;
                for (int64_t j = 0; j < c.nx[0]; j++) zeros += dx[0][j] == 0.f;
                CHECK(zeros > 0 && zeros < c.nx[0], "%s: %ld of %lld gradients zero", label, zeros, (long long)c.nx[0]);
                gc_free_dx(dx);
                /* mean mode: dx = dy */
                c.sampling = 0;
                dx = gc_alloc_dx(&c, 0.f);
                gc_backward(&c, 1, dx);
                CHECK(!memcmp(dx[0], c.dy[0], sizeof(float) * (size_t)c.nx[0]), "%s: mean mode's gradient is not dy", label);
                gc_free_dx(dx);
                gc_free(&c);
            }
}

/* ---- Monte-Carlo statistics against exact values ---------------------------------- */

#define NX 5
static const float xs[NX] = {-2.f, -0.5f, 0.25f, 1.f, 3.f};
static const double W = 1.5, B0 = -0.4, P = 0.3;

/* logit = W * dropout(x) + B0, sigmoid head */
static vbs_model *tiny(void) {
    vbs_builder *b = vbs_b_new(5);
    int64_t in[4] = {1, 1, 1, NX}, w1[4] = {1, 1, 1, 1}, b1[1] = {1};
    vbs_b_input(b, "x", 4, in, NULL);
    float w = (float)W, bias = (float)B0;
    const char *x = "x";
    vbs_attr r = vbs_b_float(b, "ratio", (float)P);
    const char *d = vbs_b_node(b, VBS_OP_DROPOUT, "drop", 1, &x, 1, &r);
    const char *ins[3] = {d, vbs_b_tensor(b, "w", 4, w1, &w), vbs_b_tensor(b, "b", 1, b1, &bias)};
    vbs_b_node(b, VBS_OP_CONV, "logit", 3, ins, 0, NULL);
    vbs_b_output(b, "logit");
    vbs_b_card(b)->output_activation = VBS_ACT_SIGMOID;
    vbs_model *m;
    if (vbs_b_finish(b, "tiny", &m)) { printf("%s\n", vbs_model_errmsg(m)); exit(1); }
    return m;
}

static double sigm(double t) { return 1 / (1 + exp(-t)); }
static double h2(double p) { return (p > 0 ? -p * log(p) : 0) - (p < 1 ? (1 - p) * log(1 - p) : 0); }

static void exact(void) {
    enum { S = 20000 };
    vbs_model *m = tiny();
    vbs_session *s;
    vbs_session_new(m, &s);
    int64_t shape[4] = {1, 1, 1, NX};
    vbs_mc_opts o = {.n_samples = S, .seed = 11, .mode = VBS_MODE_SAMPLE, .threads = 1, .overlap = 0.5f};
    CHECK(vbs_session_run_mc(s, xs, shape, 4, &o) == VBS_OK, "%s", vbs_session_errmsg(s));
    const float *pm, *ent, *ee, *mi;
    vbs_session_map(s, VBS_MAP_PROB_MEAN, &pm, NULL);
    vbs_session_map(s, VBS_MAP_ENTROPY, &ent, NULL);
    vbs_session_map(s, VBS_MAP_EXPECTED_ENTROPY, &ee, NULL);
    vbs_session_map(s, VBS_MAP_MUTUAL_INFO, &mi, NULL);
    for (int i = 0; i < NX; i++) {
        /* two points: kept (1 - P) gives sigma(W x / (1 - P) + B0), dropped gives sigma(B0) */
        double p1 = sigm(W * xs[i] / (1 - P) + B0), p0 = sigm(B0);
        double mp = (1 - P) * p1 + P * p0, eh = (1 - P) * h2(p1) + P * h2(p0), want_mi = h2(mp) - eh;
        double sd_p = sqrt(P * (1 - P) / S) * fabs(p1 - p0), sd_h = sqrt(P * (1 - P) / S) * fabs(h2(p1) - h2(p0));
        double dh = fabs(log((1 - mp) / mp)); /* |h2'(mean p)| */
        CHECK(fabs(pm[i] - mp) < 5 * sd_p + 1e-5, "x=%g: mean p %.6f, want %.6f (sd %.2g)", xs[i], pm[i], mp, sd_p);
        CHECK(fabs(ee[i] - eh) < 5 * sd_h + 1e-5, "x=%g: expected entropy %.6f, want %.6f", xs[i], ee[i], eh);
        CHECK(fabs(ent[i] - h2(mp)) < 5 * dh * sd_p + 1e-5, "x=%g: entropy %.6f, want %.6f", xs[i], ent[i], h2(mp));
        CHECK(fabs(mi[i] - want_mi) < 5 * (dh * sd_p + sd_h) + 1e-5, "x=%g: MI %.6f, want %.6f", xs[i], mi[i], want_mi);
        CHECK(mi[i] > 0, "x=%g: MI %g, want > 0", xs[i], mi[i]);
    }
    o.mode = VBS_MODE_MEAN;
    CHECK(vbs_session_run_mc(s, xs, shape, 4, &o) == VBS_OK, "%s", vbs_session_errmsg(s));
    vbs_session_map(s, VBS_MAP_PROB_MEAN, &pm, NULL);
    vbs_session_map(s, VBS_MAP_MUTUAL_INFO, &mi, NULL);
    for (int i = 0; i < NX; i++) {
        CHECK(fabs(pm[i] - sigm(W * xs[i] + B0)) < 1e-6, "mean mode x=%g: p %.7f, want %.7f", xs[i], pm[i], sigm(W * xs[i] + B0));
        CHECK(mi[i] == 0.f, "mean mode x=%g: MI %g", xs[i], mi[i]);
    }
    vbs_session_free(s);
    vbs_model_free(m);
}

/* ---- a network: threads, seeds, modes ------------------------------------------------ */

/* 2 channels -> conv 3x3 (8) -> relu -> dropout -> conv 1x1 (3): deterministic
 * weights (the same for the same rs); batch > 0 fixes the graph's batch */
static vbs_model *net(int batch) {
    vbs_builder *b = vbs_b_new(1);
    float wa[144], ba[8], wb[24], bb[3];
    for (int i = 0; i < 144; i++) wa[i] = (float)(urand() - 0.5);
    for (int i = 0; i < 8; i++) ba[i] = (float)(urand() - 0.5) * 0.1f;
    for (int i = 0; i < 24; i++) wb[i] = (float)(urand() - 0.5) * 2;
    for (int i = 0; i < 3; i++) bb[i] = 0.f;
    vbs_card *c = drop_net(b, batch, 8, 0.5f, wa, ba, wb, bb);
    c->spatial_dims = 2;
    vbs_model *m;
    if (vbs_b_finish(b, "net", &m)) { printf("%s\n", vbs_model_errmsg(m)); exit(1); }
    return m;
}

static float *run_all(vbs_model *m, const float *x, int64_t *shape, vbs_mode mode, uint64_t seed, int threads, int64_t *n,
                      double *mi_sum) {
    vbs_session *s;
    vbs_session_new(m, &s);
    vbs_mc_opts o = {.n_samples = 7, .seed = seed, .mode = mode, .threads = threads, .overlap = 0.5f};
    if (vbs_session_run_mc(s, x, shape, 5, &o)) { printf("%s\n", vbs_session_errmsg(s)); exit(1); }
    float *all = mc_all_maps(s, n, mi_sum);
    vbs_session_free(s);
    return all;
}

static void network(void) {
    uint64_t rs0 = rs;
    vbs_model *m = net(0);
    int64_t shape[5] = {1, 2, 5, 16, 16}, n1, n2, n3, n4;
    float *x = malloc(sizeof(float) * 2 * 5 * 256);
    for (int i = 0; i < 2 * 5 * 256; i++) x[i] = (float)(4 * urand() - 2);
    double mi1, mi2, mi3, mi4;
    float *a = run_all(m, x, shape, VBS_MODE_SAMPLE, 123, 1, &n1, &mi1), *b = run_all(m, x, shape, VBS_MODE_SAMPLE, 123, 2, &n2, &mi2);
    float *c = run_all(m, x, shape, VBS_MODE_SAMPLE, 124, 2, &n3, &mi3), *d = run_all(m, x, shape, VBS_MODE_MEAN, 123, 2, &n4, &mi4);
    CHECK(n1 == n2 && n1 > 0 && !memcmp(a, b, sizeof(float) * (size_t)n1), "1 and 2 threads give different bytes");
    CHECK(n1 == n3 && memcmp(a, c, sizeof(float) * (size_t)n1), "another seed gives the same bytes");
    CHECK(mi1 > 0.01 * 5 * 256, "sample mode: mean MI %g, want > 0.01", mi1 / (5 * 256));
    CHECK(mi4 == 0, "mean mode: MI sums to %g, want 0", mi4);
    /* the same weights with a fixed batch of 2: two slices per pass, each with the sample's mask, the same maps */
    rs = rs0;
    vbs_model *m2 = net(2);
    float *e = run_all(m2, x, shape, VBS_MODE_SAMPLE, 123, 1, &n4, &mi4);
    CHECK(n1 == n4 && !memcmp(a, e, sizeof(float) * (size_t)n1), "a fixed batch of 2 gives other maps than batch 1");
    vbs_model_free(m2);
    free(a); free(b); free(c); free(d); free(e); free(x);
    vbs_model_free(m);
}

/* ---- stochasticity and refusals ------------------------------------------------------- */

static void kinds(void) {
    vbs_shape sh = {2, {1, 4}};
    vbs_model *m = drop_model(&sh, 0.25f, 1);
    vbs_stochasticity z;
    CHECK(vbs_model_stochasticity(m, &z) == VBS_OK && !strcmp(z.kind, "dropout") && z.n_dropout == 2 && z.dropout_min == 0.25f &&
              z.dropout_max == 0.25f && z.n_variational == 0,
          "dropout model: kind %s, %d nodes, p %g..%g", z.kind, z.n_dropout, z.dropout_min, z.dropout_max);
    vbs_model_free(m);
    m = drop_model(&sh, 0.f, 0);
    CHECK(vbs_model_stochasticity(m, &z) == VBS_OK && !strcmp(z.kind, "none") && z.n_dropout == 0, "ratio 0: kind %s", z.kind);
    vbs_model_free(m);
    m = tiny();
    CHECK(vbs_model_stochasticity(m, &z) == VBS_OK && !strcmp(z.kind, "dropout") && fabsf(z.dropout_max - 0.3f) < 1e-7f, "tiny: kind %s", z.kind);
    vbs_model_free(m);
    /* variational weights, and both */
    for (int drop = 0; drop < 2; drop++) {
        vbs_builder *b = vbs_b_new(1);
        int64_t in[4] = {1, 1, 1, 4}, w1[4] = {1, 1, 1, 1};
        vbs_b_input(b, "x", 4, in, NULL);
        const char *x = "x";
        vbs_attr r = vbs_b_float(b, "ratio", 0.1f);
        if (drop) x = vbs_b_node(b, VBS_OP_DROPOUT, "d", 1, &x, 1, &r);
        const char *ins[2] = {x, vbs_b_variational(b, "w", 4, w1, 1, -3.f, 1.f)};
        vbs_b_node(b, VBS_OP_CONV, "y", 2, ins, 0, NULL);
        vbs_b_output(b, "y");
        CHECK(!vbs_b_finish(b, "v", &m), "%s", vbs_model_errmsg(m));
        CHECK(vbs_model_stochasticity(m, &z) == VBS_OK && !strcmp(z.kind, drop ? "both" : "variational weights") && z.n_variational == 1,
              "kind %s, want %s", z.kind, drop ? "both" : "variational weights");
        vbs_model_free(m);
    }
    /* refusals: a ratio outside [0, 1), a ratio input */
    const float bad[3] = {1.f, -0.1f, NAN};
    for (int k = 0; k < 3; k++) {
        vbs_builder *b = vbs_b_new(1);
        int64_t d[2] = {1, 4};
        vbs_b_input(b, "x", 2, d, NULL);
        const char *x = "x";
        vbs_attr r = vbs_b_float(b, "ratio", bad[k]);
        vbs_b_node(b, VBS_OP_DROPOUT, "drop", 1, &x, 1, &r);
        vbs_b_output(b, "drop");
        vbs_status st = vbs_b_finish(b, "bad", &m);
        CHECK(st != VBS_OK && strstr(vbs_model_errmsg(m), "'drop' (Dropout): ") && strstr(vbs_model_errmsg(m), "ratio"), "ratio %g: %s", bad[k],
              vbs_model_errmsg(m));
        vbs_model_free(m);
    }
    vbs_builder *b = vbs_b_new(1);
    int64_t d[2] = {1, 4}, one[1] = {1};
    float half = 0.5f;
    vbs_b_input(b, "x", 2, d, NULL);
    const char *ins[2] = {"x", vbs_b_tensor(b, "ratio", 1, one, &half)};
    vbs_b_node(b, VBS_OP_DROPOUT, "drop", 2, ins, 0, NULL);
    vbs_b_output(b, "drop");
    vbs_status st = vbs_b_finish(b, "bad", &m);
    CHECK(st != VBS_OK && strstr(vbs_model_errmsg(m), "the ratio is the attribute 'ratio'"), "ratio input: %s", vbs_model_errmsg(m));
    vbs_model_free(m);
}

int main(void) {
    words();
    masks();
    expectation();
    batches();
    gradients();
    exact();
    network();
    kinds();
    return finish("test_dropout");
}
