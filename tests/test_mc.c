/*
 * test_mc.c: the Monte-Carlo statistics against analytic values.
 *  - A one-weight model, logit = w*x + b with w ~ N(0, sigma^2): the mean
 *    probability, predictive entropy, expected entropy and mutual
 *    information are integrals over one Gaussian, computed here by
 *    quadrature in double, independently of the runtime.
 *  - Its heteroscedastic twin: aleatoric = exp(logvar) exactly, epistemic
 *    = Var(w*x) = sigma^2 x^2 (eq. 10-11).
 *  - sigma = 0: every sample equals the mean pass bit for bit, MI = 0.
 *  - MI grows with sigma.
 *  - The same seed gives the same bytes at 1 and 2 threads; another seed
 *    gives other samples.
 *  - Size refusals of vbs_session_forward in the caller's sizes, naming the
 *    multiple a U-Net needs (worked out by hand) or the graph's fixed dims.
 *  - A graph with a fixed batch of 2 gives the batch-1 maps.
 */
#include <stdlib.h>

#include "builder.h"
#include "check.h"
#include "mc_maps.h"
#include "unet.h"

#define NX 5
static const float xs[NX] = {-2.f, -0.5f, 0.25f, 1.f, 3.f};
static const double B0 = 0.8, SIGMA = 1.2;

static vbs_model *tiny(int hetero, double logvar) {
    vbs_builder *b = vbs_b_new(5);
    int64_t in[4] = {1, 1, 1, NX}, w1[4] = {1, 1, 1, 1}, b1[1] = {1};
    vbs_b_input(b, "x", 4, in, NULL);
    float bias = (float)B0, zero = 0.f, lv = (float)logvar;
    const char *w = vbs_b_variational(b, "w", 4, w1, 0, (float)log(expm1(SIGMA)), 1.f);
    const char *bb = vbs_b_tensor(b, "b", 1, b1, &bias);
    const char *ins[3] = {"x", w, bb};
    vbs_b_node(b, VBS_OP_CONV, "logit", 3, ins, 0, NULL);
    vbs_b_output(b, "logit");
    if (hetero) {
        const char *w0 = vbs_b_tensor(b, "w0", 4, w1, &zero), *b2 = vbs_b_tensor(b, "lv", 1, b1, &lv);
        const char *in2[3] = {"x", w0, b2};
        vbs_b_node(b, VBS_OP_CONV, "logvar", 3, in2, 0, NULL);
        vbs_b_output(b, "logvar");
    }
    vbs_card *c = vbs_b_card(b);
    c->output_activation = VBS_ACT_SIGMOID;
    c->heteroscedastic = hetero;
    vbs_model *m;
    if (vbs_b_finish(b, "tiny", &m)) { printf("%s\n", vbs_model_errmsg(m)); exit(1); }
    return m;
}

static double sigm(double t) { return 1 / (1 + exp(-t)); }
static double h2(double p) { return (p > 0 ? -p * log(p) : 0) - (p < 1 ? (1 - p) * log(1 - p) : 0); }

/* E over z ~ N(0,1) of f(B0 + SIGMA*x*z), trapezoid on [-9, 9] */
static double expect_over(double x, int entropy) {
    double s = 0, h = 18.0 / 4000;
    for (int i = 0; i <= 4000; i++) {
        double z = -9 + i * h, wgt = exp(-0.5 * z * z) / sqrt(2 * 3.14159265358979323846) * (i == 0 || i == 4000 ? 0.5 : 1);
        double p = sigm(B0 + SIGMA * x * z);
        s += wgt * (entropy ? h2(p) : p);
    }
    return s * h;
}

static void analytic(void) {
    vbs_model *m = tiny(0, 0);
    vbs_session *s;
    vbs_session_new(m, &s);
    int64_t shape[4] = {1, 1, 1, NX};
    vbs_mc_opts o = {.n_samples = 20000, .seed = 11, .mode = VBS_MODE_SAMPLE, .threads = 1, .overlap = 0.5f, .adaptive_tol = 0.f, .adaptive_block = 0};
    CHECK(vbs_session_run_mc(s, xs, shape, 4, &o) == VBS_OK, "%s", vbs_session_errmsg(s));
    const float *pm, *pv, *ent, *ee, *mi, *lab;
    vbs_map_info info;
    vbs_session_map(s, VBS_MAP_PROB_MEAN, &pm, &info);
    vbs_session_map(s, VBS_MAP_PROB_VAR, &pv, NULL);
    vbs_session_map(s, VBS_MAP_ENTROPY, &ent, NULL);
    vbs_session_map(s, VBS_MAP_EXPECTED_ENTROPY, &ee, NULL);
    vbs_session_map(s, VBS_MAP_MUTUAL_INFO, &mi, NULL);
    vbs_session_map(s, VBS_MAP_LABELS, &lab, NULL);
    CHECK(info.n_samples == 20000 && info.ndim == 3 && info.dims[0] == 1 && info.dims[2] == NX, "map info");
    for (int i = 0; i < NX; i++) {
        double ep = expect_over(xs[i], 0), eh = expect_over(xs[i], 1), pe = h2(ep);
        double se = sqrt(pv[i] / 20000.0);
        CHECK(fabs(pm[i] - ep) < 5 * se + 1e-4, "x=%g: mean p %.5f, analytic %.5f (se %.5f)", xs[i], pm[i], ep, se);
        CHECK(fabs(ent[i] - pe) < 0.01, "x=%g: predictive entropy %.5f, analytic %.5f", xs[i], ent[i], pe);
        CHECK(fabs(ee[i] - eh) < 0.01, "x=%g: expected entropy %.5f, analytic %.5f", xs[i], ee[i], eh);
        CHECK(fabs(mi[i] - (pe - eh)) < 0.01, "x=%g: MI %.5f, analytic %.5f", xs[i], mi[i], pe - eh);
        CHECK(lab[i] == (pm[i] >= 0.5f ? 1.f : 0.f), "x=%g: label %g for mean p %g", xs[i], lab[i], pm[i]);
    }
    /* |x| larger -> more weight uncertainty in the logit -> more MI */
    CHECK(mi[4] > mi[3] && mi[3] > mi[2], "MI does not grow with |x|: %g %g %g", mi[2], mi[3], mi[4]);
    const float *d;
    CHECK(vbs_session_map(s, VBS_MAP_HET_ALEATORIC, &d, NULL) == VBS_ERR_STATE, "heteroscedastic map on a plain model");
    vbs_session_free(s);
    vbs_model_free(m);

    /* heteroscedastic: aleatoric = mean predicted variance, epistemic = variance of predicted means */
    m = tiny(1, -1.5);
    vbs_session_new(m, &s);
    CHECK(vbs_session_run_mc(s, xs, shape, 4, &o) == VBS_OK, "%s", vbs_session_errmsg(s));
    const float *al, *ep;
    CHECK(vbs_session_map(s, VBS_MAP_HET_ALEATORIC, &al, NULL) == VBS_OK, "%s", vbs_session_errmsg(s));
    CHECK(vbs_session_map(s, VBS_MAP_HET_EPISTEMIC, &ep, NULL) == VBS_OK, "%s", vbs_session_errmsg(s));
    for (int i = 0; i < NX; i++) {
        double want = SIGMA * SIGMA * xs[i] * xs[i];
        CHECK(fabs(al[i] - exp(-1.5)) < 1e-5, "x=%g: aleatoric %g, want exp(-1.5)", xs[i], al[i]);
        CHECK(fabs(ep[i] - want) < 0.06 * want, "x=%g: epistemic %g, want sigma^2 x^2 = %g", xs[i], ep[i], want);
    }
    vbs_session_free(s);
    vbs_model_free(m);
}

static vbs_model *unet(float rho, int latent, int hetero) {
    vbs_unet_opts u = vbs_unet_defaults();
    u.in_channels = 2; u.classes = 3; u.base = 4; u.depth = 2; u.rho0 = rho; u.latent = latent; u.hetero = hetero;
    vbs_model *m;
    if (vbs_unet_build(&u, &m)) { printf("%s\n", vbs_model_errmsg(m)); exit(1); }
    return m;
}

static float *image(int64_t n) {
    float *x = malloc(sizeof(float) * (size_t)n);
    uint64_t r = 99;
    for (int64_t i = 0; i < n; i++) { r = r * 6364136223846793005ull + 1442695040888963407ull; x[i] = (float)((r >> 40) % 1000) / 250.f - 2.f; }
    return x;
}

static double mean_mi(vbs_model *m, const float *x, int64_t *shape, int nd) {
    vbs_session *s;
    vbs_session_new(m, &s);
    vbs_mc_opts o = {.n_samples = 16, .seed = 3, .mode = VBS_MODE_SAMPLE, .threads = 1, .overlap = 0.5f, .adaptive_tol = 0.f, .adaptive_block = 0};
    vbs_session_run_mc(s, x, shape, nd, &o);
    const float *mi;
    vbs_map_info info;
    double acc = 0;
    if (vbs_session_map(s, VBS_MAP_MUTUAL_INFO, &mi, &info) == VBS_OK)
        for (int64_t i = 0; i < 16 * 16; i++) acc += mi[i];
    vbs_session_free(s);
    return acc / 256;
}

static void sigma_zero_and_growth(void) {
    int64_t shape[4] = {1, 2, 16, 16};
    float *x = image(2 * 256);
    vbs_model *m = unet(-200.f, 0, 0); /* softplus(-200) underflows to 0: sigma is exactly 0 */
    vbs_session *s;
    vbs_session_new(m, &s);
    float mean_out[3 * 256];
    vbs_value_info vi;
    const float *y;
    vbs_session_forward(s, x, shape, 4, VBS_MODE_MEAN, 0, 0);
    vbs_session_output(s, 0, &y, &vi);
    memcpy(mean_out, y, sizeof mean_out);
    int same = 1;
    for (int k = 0; k < 5; k++) {
        vbs_session_forward(s, x, shape, 4, VBS_MODE_SAMPLE, 9, (uint64_t)k);
        vbs_session_output(s, 0, &y, &vi);
        same &= !memcmp(y, mean_out, sizeof mean_out);
    }
    CHECK(same, "with sigma = 0 a sampled pass differs from the mean pass");
    vbs_mc_opts o = {.n_samples = 8, .seed = 1, .mode = VBS_MODE_SAMPLE, .threads = 1, .overlap = 0.5f, .adaptive_tol = 0.f, .adaptive_block = 0};
    vbs_session_run_mc(s, x, shape, 4, &o);
    const float *mi, *pv;
    vbs_session_map(s, VBS_MAP_MUTUAL_INFO, &mi, NULL);
    vbs_session_map(s, VBS_MAP_PROB_VAR, &pv, NULL);
    float mx = 0, vmx = 0;
    for (int i = 0; i < 256; i++) mx = fmaxf(mx, mi[i]);
    for (int i = 0; i < 3 * 256; i++) vmx = fmaxf(vmx, pv[i]);
    CHECK(mx < 1e-6f, "sigma = 0 but max MI is %g", mx);
    CHECK(vmx < 1e-6f, "sigma = 0 but max probability variance is %g", vmx);
    vbs_session_free(s);
    vbs_model_free(m);
    double prev = -1;
    for (float rho = -7.f; rho <= -1.f; rho += 2.f) {
        m = unet(rho, 0, 0);
        double v = mean_mi(m, x, shape, 4);
        CHECK(v > prev, "mean MI %g at rho %g is not above %g at rho %g", v, rho, prev, rho - 2);
        prev = v;
        vbs_model_free(m);
    }
    free(x);
}

/* All maps of one run, concatenated, for byte comparison. */
static float *run_all(vbs_model *m, const float *x, int64_t *shape, int nd, uint64_t seed, int threads, int64_t *n) {
    vbs_session *s;
    vbs_session_new(m, &s);
    vbs_mc_opts o = {.n_samples = 7, .seed = seed, .mode = VBS_MODE_SAMPLE, .threads = threads, .overlap = 0.5f, .adaptive_tol = 0.f, .adaptive_block = 0};
    if (vbs_session_run_mc(s, x, shape, nd, &o)) { printf("%s\n", vbs_session_errmsg(s)); exit(1); }
    float *all = mc_all_maps(s, n, NULL);
    vbs_session_free(s);
    return all;
}

static void reproducibility(void) {
    /* a 2D model with a latent and a heteroscedastic head, run slice by slice over a volume */
    vbs_model *m = unet(-3.f, 10, 1);
    int64_t shape[5] = {1, 2, 5, 16, 16}, n1, n2, n3, n4;
    float *x = image(2 * 5 * 256);
    float *a = run_all(m, x, shape, 5, 123, 1, &n1), *b = run_all(m, x, shape, 5, 123, 2, &n2);
    float *c = run_all(m, x, shape, 5, 123, 1, &n3), *d = run_all(m, x, shape, 5, 124, 2, &n4);
    CHECK(n1 == n2 && n1 > 0 && !memcmp(a, b, sizeof(float) * (size_t)n1), "1 and 2 threads give different bytes");
    CHECK(n1 == n3 && !memcmp(a, c, sizeof(float) * (size_t)n1), "the same seed gives different bytes");
    CHECK(n1 == n4 && memcmp(a, d, sizeof(float) * (size_t)n1), "another seed gives the same bytes");
    CHECK(n1 == (3 * 2 + 4 + 3 * 2) * 5 * 256, "map sizes: %lld floats", (long long)n1);
    /* one sample: still the same bytes at 1 and 2 threads */
    vbs_session *s1, *s2;
    vbs_session_new(m, &s1);
    vbs_session_new(m, &s2);
    vbs_mc_opts o1 = {.n_samples = 1, .seed = 5, .mode = VBS_MODE_SAMPLE, .threads = 1, .overlap = 0.5f};
    vbs_mc_opts o2 = o1;
    o2.threads = 2;
    vbs_session_run_mc(s1, x, shape, 5, &o1);
    vbs_session_run_mc(s2, x, shape, 5, &o2);
    const float *p1, *p2;
    vbs_session_map(s1, VBS_MAP_PROB_MEAN, &p1, NULL);
    vbs_session_map(s2, VBS_MAP_PROB_MEAN, &p2, NULL);
    CHECK(!memcmp(p1, p2, sizeof(float) * 3 * 5 * 256), "one sample at 1 and 2 threads gives different bytes");
    vbs_session_free(s1);
    vbs_session_free(s2);
    /* slice z of the volume run equals a run of that slice alone: one weight draw per sample across slices */
    vbs_session *s;
    vbs_session_new(m, &s);
    vbs_mc_opts o = {.n_samples = 7, .seed = 123, .mode = VBS_MODE_SAMPLE, .threads = 1, .overlap = 0.5f, .adaptive_tol = 0.f, .adaptive_block = 0};
    int64_t sl[4] = {1, 2, 16, 16};
    float slice[2 * 256];
    for (int ch = 0; ch < 2; ch++) memcpy(slice + ch * 256, x + (ch * 5 + 3) * 256, sizeof(float) * 256);
    vbs_session_run_mc(s, slice, sl, 4, &o);
    const float *mi;
    vbs_session_map(s, VBS_MAP_PROB_MEAN, &mi, NULL);
    int same = 1;
    for (int k = 0; k < 3; k++) same &= !memcmp(mi + k * 256, a + k * 5 * 256 + 3 * 256, sizeof(float) * 256);
    CHECK(same, "a slice of a volume run differs from the slice run alone");
    vbs_session_free(s);
    free(a); free(b); free(c); free(d); free(x);
    vbs_model_free(m);
}

/* A size the network cannot take (13 x 10 for a depth-2 U-Net) runs
 * zero-padded to 16 x 12, centred, and cropped back: the same numbers as
 * padding by hand, running the graph, and cropping. */
static void padding(void) {
    vbs_model *m = unet(-3.f, 0, 0);
    const int H = 13, W = 10, PH = 16, PW = 12, T = 1, L = 1; /* pad top, left */
    float x[2 * 13 * 10], xp[2 * 16 * 12] = {0};
    for (int i = 0; i < 2 * H * W; i++) x[i] = (float)((i * 7) % 13) / 6.f - 1.f;
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) xp[(c * PH + i + T) * PW + j + L] = x[(c * H + i) * W + j];
    vbs_session *s;
    vbs_session_new(m, &s);
    int64_t shape[4] = {1, 2, H, W}, pshape[4] = {1, 2, PH, PW};
    CHECK(vbs_session_forward(s, x, shape, 4, VBS_MODE_MEAN, 0, 0) != VBS_OK, "a forward pass at 13 x 10 should be refused");
    const float *y;
    vbs_value_info vi;
    float want[3 * 13 * 10];
    vbs_mc_opts o = {.n_samples = 1, .seed = 4, .mode = VBS_MODE_SAMPLE, .threads = 1, .overlap = 0.5f, .adaptive_tol = 0.f, .adaptive_block = 0}; /* one sample: weight draw 0 of seed 4 */
    CHECK(vbs_session_forward(s, xp, pshape, 4, VBS_MODE_SAMPLE, 4, 0) == VBS_OK, "%s", vbs_session_errmsg(s));
    vbs_session_output(s, 0, &y, &vi);
    for (int i = 0; i < H; i++)
        for (int j = 0; j < W; j++) {
            double e[3], sum = 0;
            for (int k = 0; k < 3; k++) { e[k] = exp(y[(k * PH + i + T) * PW + j + L]); sum += e[k]; }
            for (int k = 0; k < 3; k++) want[(k * H + i) * W + j] = (float)(e[k] / sum);
        }
    CHECK(vbs_session_run_mc(s, x, shape, 4, &o) == VBS_OK, "%s", vbs_session_errmsg(s));
    const float *pm;
    vbs_map_info info;
    vbs_session_map(s, VBS_MAP_PROB_MEAN, &pm, &info);
    CHECK(info.ndim == 3 && info.dims[1] == H && info.dims[2] == W, "map is %lldx%lld", (long long)info.dims[1], (long long)info.dims[2]);
    CHECK(close_enough("padded run", pm, want, 3 * H * W, 1e-6, 1e-5), "padded and cropped run differs from padding by hand");
    /* and slice by slice over a volume of such slices */
    float vol[2 * 2 * 13 * 10];
    for (int c = 0; c < 2; c++)
        for (int z = 0; z < 2; z++) memcpy(vol + (c * 2 + z) * H * W, x + c * H * W, sizeof(float) * H * W);
    int64_t vshape[5] = {1, 2, 2, H, W};
    CHECK(vbs_session_run_mc(s, vol, vshape, 5, &o) == VBS_OK, "%s", vbs_session_errmsg(s));
    vbs_session_map(s, VBS_MAP_PROB_MEAN, &pm, &info);
    int same = 1;
    for (int k = 0; k < 3; k++)
        for (int z = 0; z < 2; z++) same &= close_enough("padded slice", pm + (k * 2 + z) * H * W, want + k * H * W, H * W, 1e-6, 1e-5);
    CHECK(same, "slices of a padded volume run differ");
    vbs_session_free(s);
    vbs_model_free(m);
}

/* Sliding windows: with a per-voxel network (a 1x1x1 variational conv) every
 * window predicts the same value for a voxel, so the Gaussian-blended
 * windowed run must equal the whole-volume run, sample by sample; and it
 * must give the same bytes at 1 and 2 threads. */
static vbs_model *pointwise3d(int with_patch) {
    vbs_builder *b = vbs_b_new(3);
    int64_t in[5] = {1, 2, -1, -1, -1}, wd[5] = {3, 2, 1, 1, 1}, bd[1] = {3};
    const char *params[5] = {NULL, NULL, "D", "H", "W"};
    vbs_b_input(b, "x", 5, in, params);
    const char *w = vbs_b_variational(b, "w", 5, wd, 2, -1.5f, 1.f);
    const char *bias = vbs_b_variational(b, "b", 1, bd, 0, -1.5f, 1.f);
    const char *ins[3] = {"x", w, bias};
    vbs_b_node(b, VBS_OP_CONV, "logits", 3, ins, 0, NULL);
    vbs_b_output(b, "logits");
    vbs_card *c = vbs_b_card(b);
    c->output_activation = VBS_ACT_SOFTMAX;
    c->spatial_dims = 3;
    if (with_patch) {
        int64_t *p = vbs_b_alloc(b, sizeof(int64_t) * 3);
        p[0] = 4; p[1] = 5; p[2] = 3;
        c->patch = p;
        c->n_patch = 3;
    }
    vbs_model *m;
    if (vbs_b_finish(b, "pointwise3d", &m)) { printf("%s\n", vbs_model_errmsg(m)); exit(1); }
    return m;
}

static void windows(void) {
    vbs_model *mw = pointwise3d(1), *mv = pointwise3d(0);
    int64_t shape[5] = {1, 2, 9, 11, 7};
    int64_t n = 9 * 11 * 7;
    float *x = image(2 * n);
    float *got[VBS_MAP_COUNT] = {0};
    for (int pass = 0; pass < 3; pass++) {
        vbs_session *s;
        vbs_session_new(pass == 0 ? mv : mw, &s);
        vbs_mc_opts o = {.n_samples = 5, .seed = 21, .mode = VBS_MODE_SAMPLE, .threads = pass == 2 ? 2 : 1, .overlap = 0.5f, .adaptive_tol = 0.f, .adaptive_block = 0};
        CHECK(vbs_session_run_mc(s, x, shape, 5, &o) == VBS_OK, "%s", vbs_session_errmsg(s));
        vbs_map maps[4] = {VBS_MAP_PROB_MEAN, VBS_MAP_PROB_VAR, VBS_MAP_MUTUAL_INFO, VBS_MAP_EXPECTED_ENTROPY};
        for (int i = 0; i < 4; i++) {
            const float *d;
            vbs_map_info info;
            vbs_session_map(s, maps[i], &d, &info);
            int64_t sz = maps[i] == VBS_MAP_PROB_MEAN || maps[i] == VBS_MAP_PROB_VAR ? 3 * n : n;
            if (pass == 0) { got[i] = malloc(sizeof(float) * (size_t)sz); memcpy(got[i], d, sizeof(float) * (size_t)sz); }
            else {
                char label[64];
                snprintf(label, sizeof label, "windows %s (%d thread%s)", vbs_map_name(maps[i]), pass, pass == 1 ? "" : "s");
                CHECK(close_enough(label, d, got[i], (long)sz, 2e-6, 1e-4), "%s", label);
                CHECK(info.ndim == (sz == n ? 3 : 4) && info.dims[info.ndim - 1] == 7, "%s: map shape", label);
            }
        }
        vbs_session_free(s);
    }
    for (int i = 0; i < 4; i++) free(got[i]);
    free(x);
    vbs_model_free(mw);
    vbs_model_free(mv);
}

/* Adaptive sampling stops after two blocks when the MI map cannot change
 * (sigma = 0), and uses every sample when the tolerance is out of reach. */
static void adaptive(void) {
    int64_t shape[4] = {1, 2, 16, 16};
    float *x = image(2 * 256);
    for (int pass = 0; pass < 2; pass++) {
        vbs_model *m = unet(pass == 0 ? -200.f : -2.f, 0, 0);
        vbs_session *s;
        vbs_session_new(m, &s);
        vbs_mc_opts o = {.n_samples = 40, .seed = 3, .mode = VBS_MODE_SAMPLE, .threads = 2, .overlap = 0.5f, .adaptive_tol = pass == 0 ? 1e-3f : 1e-12f, .adaptive_block = 5};
        CHECK(vbs_session_run_mc(s, x, shape, 4, &o) == VBS_OK, "%s", vbs_session_errmsg(s));
        const float *mi;
        vbs_map_info info;
        vbs_session_map(s, VBS_MAP_MUTUAL_INFO, &mi, &info);
        CHECK(info.n_samples == (pass == 0 ? 10 : 40), "adaptive pass %d used %lld samples", pass, (long long)info.n_samples);
        vbs_session_free(s);
        vbs_model_free(m);
    }
    free(x);
}

/* vbs_session_forward and vbs_session_check_input refuse in the caller's
 * sizes and say what the network takes: a U-Net of depth 4 needs multiples
 * of 2^4 = 16 (the nearest sizes worked out by hand); a graph's fixed dims,
 * batch and channels are named with both numbers. */
static void expect_msg(vbs_session *s, vbs_status st, const char *want, const char *what) {
    CHECK(st == VBS_ERR_SHAPE && !strcmp(vbs_session_errmsg(s), want), "%s: status %d, message '%s', want '%s'", what, (int)st,
          vbs_session_errmsg(s), want);
}

static void fix_input(vbs_model *m, int64_t batch, int64_t h, int64_t w) {
    /* the same network as if exported with these dims fixed (0: keep symbolic) */
    vbs_io_def *io = &m->def.inputs[0];
    int64_t d[4] = {batch, 0, h, w};
    for (int i = 0; i < 4; i++)
        if (i != 1 && d[i]) { io->dims[i] = d[i]; io->param[i] = NULL; }
}

static void size_messages(void) {
    vbs_unet_opts u = vbs_unet_defaults();
    u.in_channels = 2; u.classes = 3; u.base = 2; u.depth = 4;
    vbs_model *m;
    if (vbs_unet_build(&u, &m)) { printf("%s\n", vbs_model_errmsg(m)); exit(1); }
    vbs_session *s;
    vbs_session_new(m, &s);
    float *x = image(2 * 250 * 250);
    int64_t s100[4] = {1, 2, 100, 100}, s250[4] = {1, 2, 250, 250}, s8[4] = {1, 2, 8, 40}, s96[4] = {1, 2, 96, 112};
    expect_msg(s, vbs_session_forward(s, x, s100, 4, VBS_MODE_MEAN, 0, 0),
               "input 100x100: this network takes spatial sizes that are multiples of 16 (e.g. 96x96 or 112x112); "
               "vbs_session_run_mc pads automatically", "forward 100x100");
    /* 250 rounded up to a multiple of 8 is 256, which a depth-4 net takes: still multiples of 16 */
    expect_msg(s, vbs_session_check_input(s, s250, 4),
               "input 250x250: this network takes spatial sizes that are multiples of 16 (e.g. 240x240 or 256x256); "
               "vbs_session_run_mc pads automatically", "check 250x250");
    expect_msg(s, vbs_session_check_input(s, s8, 4),
               "input 8x40: this network takes spatial sizes that are multiples of 16 (e.g. 16x48); vbs_session_run_mc pads automatically",
               "check 8x40");
    CHECK(vbs_session_check_input(s, s96, 4) == VBS_OK, "96x112: %s", vbs_session_errmsg(s));
    CHECK(vbs_session_forward(s, x, s96, 4, VBS_MODE_MEAN, 0, 0) == VBS_OK, "96x112: %s", vbs_session_errmsg(s));
    int64_t c3[4] = {1, 3, 96, 96}, r5[5] = {1, 2, 4, 96, 96};
    expect_msg(s, vbs_session_forward(s, x, c3, 4, VBS_MODE_MEAN, 0, 0), "input has 3 channels, the network takes 2", "channels");
    expect_msg(s, vbs_session_forward(s, x, r5, 5, VBS_MODE_MEAN, 0, 0), "input 1x2x4x96x96 has 5 dims, the network takes 4: (N,2,H,W)", "rank");
    vbs_mc_opts o1 = {.n_samples = 1, .seed = 0, .mode = VBS_MODE_MEAN, .threads = 1, .overlap = 0.5f, .adaptive_tol = 0.f, .adaptive_block = 0};
    int64_t r3[3] = {1, 2, 96}, n2[4] = {2, 2, 96, 96};
    expect_msg(s, vbs_session_run_mc(s, x, r3, 3, &o1),
               "input 1x2x96 has 3 dims; this network takes one image (1,2,H,W) or a volume (1,C,D,H,W) run slice by slice", "run_mc rank");
    CHECK(vbs_session_run_mc(s, x, n2, 4, &o1) == VBS_ERR_ARG &&
              !strcmp(vbs_session_errmsg(s), "Monte-Carlo runs take one image (N = 1), got N = 2; run each image in turn"),
          "run_mc batch: %s", vbs_session_errmsg(s));
    vbs_session_free(s);
    /* the graph fixed at 1 x 2 x 32 x 32 */
    fix_input(m, 1, 32, 32);
    vbs_session_new(m, &s);
    int64_t s24[4] = {1, 2, 24, 40}, n3[4] = {3, 2, 32, 32};
    expect_msg(s, vbs_session_forward(s, x, s24, 4, VBS_MODE_MEAN, 0, 0),
               "input 24x40: this network takes 32x32 only (fixed in the graph); vbs_session_run_mc pads or windows automatically", "fixed size");
    expect_msg(s, vbs_session_forward(s, x, n3, 4, VBS_MODE_MEAN, 0, 0), "input batch N = 3: the network's batch is fixed at 1", "fixed batch");
    /* and Monte-Carlo runs take the user's size anyway (the window size in every map) */
    vbs_mc_opts o = {.n_samples = 1, .seed = 0, .mode = VBS_MODE_MEAN, .threads = 1, .overlap = 0.5f, .adaptive_tol = 0.f, .adaptive_block = 0};
    CHECK(vbs_session_run_mc(s, x, s24, 4, &o) == VBS_OK, "run_mc 24x40 on a 32x32 graph: %s", vbs_session_errmsg(s));
    const float *pm;
    vbs_map_info info;
    CHECK(vbs_session_map(s, VBS_MAP_PROB_MEAN, &pm, &info) == VBS_OK && info.ndim == 3 && info.dims[1] == 24 && info.dims[2] == 40,
          "maps of a 24x40 run on a 32x32 graph");
    vbs_session_free(s);
    vbs_model_free(m);
    free(x);
}

/* A graph with a fixed batch of 2 gives the maps of the same network at
 * batch 1, over slices and over windows: two per pass when batch items are
 * independent, one (the other slot zero) with a GaussianSample latent,
 * whose eps is keyed by element. The log says which. */
static char g_log[VBS_ERRLEN];
static void keep_log(vbs_log_level level, const char *msg, void *user) {
    (void)level; (void)user;
    if (strstr(msg, "per pass")) snprintf(g_log, sizeof g_log, "%s", msg);
}

static void fixed_batch(void) {
    vbs_set_log(keep_log, NULL);
    float *x = image(2 * 5 * 24 * 37);
    int64_t vol[5] = {1, 2, 5, 16, 16}, big[4] = {1, 2, 24, 37};
    for (int latent = 0; latent <= 10; latent += 10) {
        vbs_model *m1 = unet(-3.f, latent, 1), *m2 = unet(-3.f, latent, 1);
        for (int windows = 0; windows < 2; windows++) {
            fix_input(m1, 1, windows ? 16 : 0, windows ? 16 : 0);
            fix_input(m2, 2, windows ? 16 : 0, windows ? 16 : 0);
            int64_t n1, n2;
            int64_t *shape = windows ? big : vol;
            int nd = windows ? 4 : 5;
            float *a = run_all(m1, x, shape, nd, 8, 1, &n1);
            g_log[0] = 0;
            float *b = run_all(m2, x, shape, nd, 8, 2, &n2);
            const char *want = latent ? "1 per pass of batch 2" : "2 per pass of batch 2";
            CHECK(strstr(g_log, want), "latent %d, %s: log '%s', want '%s'", latent, windows ? "windows" : "slices", g_log, want);
            char label[64];
            snprintf(label, sizeof label, "batch 2 vs 1, latent %d, %s", latent, windows ? "windows" : "slices");
            CHECK(n1 == n2 && n1 > 0 && close_enough(label, b, a, (long)n1, 1e-6, 1e-5), "%s", label);
            free(a);
            free(b);
        }
        vbs_model_free(m1);
        vbs_model_free(m2);
    }
    vbs_set_log(NULL, NULL);
    free(x);
}

int main(void) {
    analytic();
    size_messages();
    fixed_batch();
    adaptive();
    windows();
    padding();
    sigma_zero_and_growth();
    reproducibility();
    return finish("test_mc");
}
