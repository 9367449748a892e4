/*
 * test_train.c: the trainer's numerics against independent oracles:
 *  - every loss term (soft Dice over classes and BraTS regions, CE, BCE,
 *    the heteroscedastic likelihood, the latent's KL) against central
 *    finite differences in double, and the validation loss from
 *    probabilities against the training loss's value; the heteroscedastic
 *    likelihood's value against a double computation by hand, with target
 *    logits 60 and 150 below the others (float's range, and beyond it);
 *  - the weights' KL: the Gaussian closed form against the formula by hand,
 *    the scale mixture's one-sample estimate against the densities by hand,
 *    and both gradients (through rho as well) against finite differences;
 *  - whole networks (2D U-Nets with the latent and the heteroscedastic head,
 *    instance norm, batch norm, no norm so that Conv+Relu fuse, Flipout, a
 *    3D U-Net; 2D V-Nets, 2D and 3D FCN-8s): the gradient of the whole objective against finite
 *    differences along random directions in the parameters (mu, rho and
 *    plain tensors), so the executor's backward walk, the reparameterisation
 *    and the KL terms are checked together;
 *  - MC dropout: U-Nets with a Dropout after each block (2D, batch norm,
 *    3D), a 2D V-Net and FCN-8s with theirs, and a dropout net with plain
 *    weights (an ONNX export converted without sigma) through the same
 *    whole-objective check with the step's masks; each family's Dropouts
 *    against the places written here by hand; the masks are drawn (the
 *    objective moves with them), the same bytes at 1 and 2 threads, and
 *    the loss falls over Adam steps;
 *  - Adam, AdamW, SGD and the schedules against values worked out by hand;
 *  - the same bytes after steps at 1 and 2 threads; a step with a loss that
 *    is not finite changes nothing.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "builder.h"
#include "check.h"
#include "drop_net.h"
#include "trainer.h"
#include "unet.h"

#define PI 3.14159265358979323846

static uint64_t rs = 0x2545F4914F6CDD1Dull;
static double rnd(void) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (double)(rs >> 11) / 9007199254740992.0; }
static float rf(void) { return (float)(2 * rnd() - 1); }

/* ---- loss terms -------------------------------------------------------------- */

static double loss_value(const vbs_loss_spec *s, const float *z, const float *lv, const uint8_t *t, int64_t v, float *work) {
    return vbs_loss_example(s, z, lv, t, v, 1.f, NULL, NULL, 9, 4, work).total;
}

static void check_loss(const char *label, vbs_loss_spec *s, int64_t v) {
    int kz = s->k;
    float *z = malloc(sizeof(float) * (size_t)(kz * v)), *lv = malloc(sizeof(float) * (size_t)(kz * v));
    float *dz = calloc((size_t)(kz * v), sizeof(float)), *ds = calloc((size_t)(kz * v), sizeof(float));
    uint8_t *t = malloc((size_t)v);
    float *work = malloc(sizeof(float) * vbs_loss_work(s, v));
    for (int64_t i = 0; i < kz * v; i++) { z[i] = 2 * rf(); lv[i] = rf(); }
    for (int64_t i = 0; i < v; i++) t[i] = (uint8_t)(rnd() * (s->sigmoid ? 2 : s->k));
    vbs_loss_example(s, z, s->hetero ? lv : NULL, t, v, 0.5f, dz, s->hetero ? ds : NULL, 9, 4, work);
    int ok = 1;
    const double h = 1e-3;
    for (int which = 0; which < (s->hetero ? 2 : 1) && ok; which++) {
        float *x = which ? lv : z, *g = which ? ds : dz;
        for (int64_t i = 0; i < kz * v && ok; i += (kz * v) / 24 + 1) {
            float x0 = x[i];
            x[i] = (float)(x0 + h);
            double lp = loss_value(s, z, s->hetero ? lv : NULL, t, v, work);
            x[i] = (float)(x0 - h);
            double lm = loss_value(s, z, s->hetero ? lv : NULL, t, v, work);
            x[i] = x0;
            double num = 0.5 * (lp - lm) / (2 * h); /* the analytic gradient was scaled by 0.5 */
            if (fabs(num - g[i]) > 2e-3 * fmax(fabs(num), 1e-3) + 2e-5) {
                printf("  %s: d/d%s[%lld] analytic %.7g numeric %.7g\n", label, which ? "logvar" : "logit", (long long)i, g[i], num);
                ok = 0;
            }
        }
    }
    CHECK(ok, "%s: loss gradient against finite differences", label);
    free(z); free(lv); free(dz); free(ds); free(t); free(work);
}

/* The heteroscedastic likelihood's value against a double computation by
 * hand from the same noise (the RNG keyed by (9, 4, 0x40000000 + t)), with
 * voxels whose target logit lies 60 (float's range), 150 (beyond it: the
 * trainer's double fallback) and 1000 (beyond double's: A is taken as
 * 1e-300, a finite loss and a zero gradient) below the others, and one
 * whose log-variance is 60 (sigma 1e13: every draw's probability 0 or 1);
 * and the gradient at those voxels against finite differences. */
static void check_hetero_extremes(const char *label, vbs_loss_spec *s) {
    enum { V = 70 };
    int k = s->k, kk = s->sigmoid ? 2 : k, T = s->samples;
    float z[4 * V], lv[4 * V], dz[4 * V] = {0}, ds[4 * V] = {0}, *eps = malloc(sizeof(float) * (size_t)(T * k * V));
    float *work = malloc(sizeof(float) * vbs_loss_work(s, V));
    uint8_t t[V];
    for (int i = 0; i < k * V; i++) { z[i] = 2 * rf(); lv[i] = rf(); }
    for (int i = 0; i < V; i++) t[i] = (uint8_t)(rnd() * kk);
    enum { NFAR = 6 };
    const int far[NFAR] = {3, 17, 40, 69, 50, 61};
    const float gap[NFAR] = {-60, -150, -150, -60, -1000, 0};
    for (int f = 0; f < NFAR; f++) { /* the target's logit far below (sigmoid: on the wrong side) */
        int i = far[f];
        if (!gap[f]) for (int c = 0; c < k; c++) lv[c * V + i] = 60;
        else if (s->sigmoid) z[i] = t[i] ? gap[f] : -gap[f];
        else z[t[i] * V + i] = gap[f];
    }
    vbs_loss_parts r = vbs_loss_example(s, z, lv, t, V, 1.f, dz, ds, 9, 4, work);
    for (int q = 0; q < T; q++) vbs_randn(9, 4, 0x40000000u + (uint32_t)q, 0, (int64_t)k * V, eps + (int64_t)q * k * V);
    double want = 0;
    for (int i = 0; i < V; i++) {
        double A = 0;
        for (int q = 0; q < T; q++) {
            const float *e = eps + (int64_t)q * k * V;
            if (s->sigmoid) {
                double x = z[i] + exp(0.5 * lv[i]) * e[i];
                A += 1 / (1 + exp(t[i] ? -x : x));
                continue;
            }
            double x[4], mx = -INFINITY, sum = 0;
            for (int c = 0; c < k; c++) { x[c] = z[c * V + i] + exp(0.5 * lv[c * V + i]) * e[c * V + i]; mx = fmax(mx, x[c]); }
            for (int c = 0; c < k; c++) sum += exp(x[c] - mx);
            A += exp(x[t[i]] - mx) / sum;
        }
        want -= log((A > 1e-300 ? A : 1e-300) / T) / V;
    }
    CHECK(isfinite(r.ce) && fabs(r.ce - want) < 2e-6 * fabs(want), "%s: NLL %.9g, by hand in double %.9g", label, r.ce, want);
    int ok = 1;
    for (int f = 0; f < NFAR; f++)
        for (int c = 0; c < k; c++)
            for (int which = 0; which < 2; which++) {
                float *x = which ? lv : z, x0 = x[c * V + far[f]], g = which ? ds[c * V + far[f]] : dz[c * V + far[f]];
                const double h = 1e-3;
                x[c * V + far[f]] = (float)(x0 + h);
                double lp = vbs_loss_example(s, z, lv, t, V, 1.f, NULL, NULL, 9, 4, work).total;
                x[c * V + far[f]] = (float)(x0 - h);
                double lm = vbs_loss_example(s, z, lv, t, V, 1.f, NULL, NULL, 9, 4, work).total;
                x[c * V + far[f]] = x0;
                double num = (lp - lm) / ((double)(float)(x0 + h) - (double)(float)(x0 - h));
                if (!(fabs(num - g) <= 2e-3 * fabs(num) + 2e-6)) {
                    printf("  %s: voxel %d d/d%s[%d] analytic %.7g numeric %.7g\n", label, far[f], which ? "logvar" : "logit", c, g, num);
                    ok = 0;
                }
            }
    CHECK(ok, "%s: gradient at the far voxels against finite differences", label);
    free(eps);
    free(work);
}

static void test_losses(void) {
    vbs_loss_spec s;
    /* BraTS regions over 4 classes with values 0, 1, 2, 4 */
    vbs_label lab[4] = {{0, "bg"}, {1, "ncr"}, {2, "ed"}, {4, "et"}};
    vbs_card card;
    memset(&card, 0, sizeof card);
    card.labels = lab;
    card.n_labels = 4;
    card.label_convention = VBS_LABELS_BRATS_2018;
    vbs_loss_spec_from_card(&card, 4, 0, &s);
    CHECK(s.n_terms == 3 && s.term_classes[0] == 0xE && s.term_classes[1] == 0xA && s.term_classes[2] == 0x8,
          "BraTS terms: %d, %llx %llx %llx", s.n_terms, (unsigned long long)s.term_classes[0], (unsigned long long)s.term_classes[1],
          (unsigned long long)s.term_classes[2]);
    check_loss("softmax, BraTS regions", &s, 60);
    vbs_loss_spec_from_card(&card, 4, 1, &s);
    check_loss("heteroscedastic softmax, BraTS regions", &s, 40);
    card.label_convention = VBS_LABELS_CUSTOM;
    card.n_labels = 3;
    vbs_loss_spec_from_card(&card, 3, 0, &s);
    CHECK(s.n_terms == 2 && s.term_classes[0] == 2 && s.term_classes[1] == 4, "class terms");
    check_loss("softmax, 3 classes", &s, 50);
    vbs_loss_spec_from_card(&card, 1, 0, &s);
    check_loss("sigmoid", &s, 70);
    vbs_loss_spec_from_card(&card, 1, 1, &s);
    check_loss("heteroscedastic sigmoid", &s, 50);
    check_hetero_extremes("heteroscedastic sigmoid, far logits", &s);
    vbs_loss_spec_from_card(&card, 3, 1, &s);
    check_hetero_extremes("heteroscedastic softmax, far logits", &s);

    /* values by hand: two voxels, two classes */
    vbs_loss_spec_from_card(&card, 2, 0, &s);
    float z[4] = {0, 0, 1, -1}; /* logits: class 0 row, class 1 row */
    uint8_t t[2] = {1, 0};
    float work[256];
    vbs_loss_parts lp = vbs_loss_example(&s, z, NULL, t, 2, 1.f, NULL, NULL, 0, 0, work);
    double p1a = 1 / (1 + exp(-1.0)), p1b = 1 / (1 + exp(1.0));
    double dice = (2 * p1a + 1) / (p1a + p1b + 1 + 1), ce = -(log(p1a) + log(1 - p1b)) / 2;
    CHECK(fabs(lp.dice - (1 - dice)) < 1e-6 && fabs(lp.ce - ce) < 1e-6 && fabs(lp.total - (0.9 * (1 - dice) + 0.1 * ce)) < 1e-6,
          "loss by hand: dice %.7f want %.7f, ce %.7f want %.7f", lp.dice, 1 - dice, lp.ce, ce);
    float p[4] = {(float)(1 - p1a), (float)(1 - p1b), (float)p1a, (float)p1b};
    vbs_loss_parts lq = vbs_loss_probs(&s, p, t, 2);
    CHECK(fabs(lq.total - lp.total) < 1e-6, "validation loss from probabilities %.7f, training loss %.7f", lq.total, lp.total);

    /* the latent's KL: value and gradient */
    float mean[5], rho[5], dm[5] = {0}, dr[5] = {0};
    for (int i = 0; i < 5; i++) { mean[i] = rf(); rho[i] = 2 * rf(); }
    double kl = vbs_latent_kl(mean, rho, 5, 1.f, dm, dr), want = 0;
    for (int i = 0; i < 5; i++) {
        double sg = log1p(exp((double)rho[i]));
        want += 0.5 * (sg * sg + (double)mean[i] * mean[i] - 1) - log(sg);
    }
    CHECK(fabs(kl - want) < 1e-5 * fabs(want) + 1e-6, "latent KL %.7g, by hand %.7g", kl, want);
    int ok = 1;
    for (int i = 0; i < 5; i++)
        for (int w = 0; w < 2; w++) {
            float *x = w ? rho : mean, x0 = x[i];
            x[i] = x0 + 1e-3f;
            double a = vbs_latent_kl(mean, rho, 5, 1.f, NULL, NULL);
            x[i] = x0 - 1e-3f;
            double b = vbs_latent_kl(mean, rho, 5, 1.f, NULL, NULL);
            x[i] = x0;
            double num = (a - b) / ((double)(x0 + 1e-3f) - (double)(x0 - 1e-3f)), an = w ? dr[i] : dm[i];
            if (fabs(num - an) > 1e-3 * fmax(1, fabs(num))) { printf("  latent KL d/d%s[%d]: %g vs %g\n", w ? "rho" : "mean", i, an, num); ok = 0; }
        }
    CHECK(ok, "latent KL gradient against finite differences");
}

/* ---- a model's objective ------------------------------------------------------ */

typedef struct { vbs_trainer t; vbs_batch b; float *x; uint8_t *y; } rig;

static vbs_model *unet(int dims, int norm, int latent, int hetero, int classes, uint64_t seed) {
    vbs_unet_opts o = vbs_unet_defaults();
    o.dims = dims; o.in_channels = 2; o.classes = classes; o.base = 3; o.depth = 2; o.latent = latent; o.hetero = hetero;
    o.norm = norm; o.rho0 = -2.5f; o.seed = seed;
    vbs_model *m;
    if (vbs_unet_build(&o, &m)) { printf("  build: %s\n", vbs_model_errmsg(m)); vbs_model_free(m); return NULL; }
    return m;
}

/* the same U-Net with a Dropout of ratio p after each block (the same weights: Dropout adds no tensor) */
static vbs_model *unet_drop(int dims, int norm, int classes, float p, uint64_t seed) {
    vbs_unet_opts o = vbs_unet_defaults();
    o.dims = dims; o.in_channels = 2; o.classes = classes; o.base = 3; o.depth = 2; o.latent = 0; o.hetero = 0;
    o.norm = norm; o.rho0 = -2.5f; o.seed = seed; o.dropout = p;
    vbs_model *m;
    if (vbs_unet_build(&o, &m)) { printf("  build: %s\n", vbs_model_errmsg(m)); vbs_model_free(m); return NULL; }
    return m;
}

/* an MC-dropout network without variational weights (as an ONNX export
 * converted with --sigma-init none): 2 channels -> conv 3x3 (6) -> relu ->
 * dropout 0.3 -> conv 1x1 (3 classes), plain weights */
static vbs_model *plain_drop(uint64_t seed) {
    vbs_builder *b = vbs_b_new(seed);
    float wa[108], ba[6], wb[18], bb[3];
    for (int i = 0; i < 108; i++) wa[i] = rf() * 0.5f;
    for (int i = 0; i < 6; i++) ba[i] = rf() * 0.1f;
    for (int i = 0; i < 18; i++) wb[i] = rf();
    for (int i = 0; i < 3; i++) bb[i] = 0.f;
    drop_net(b, 0, 6, 0.3f, wa, ba, wb, bb);
    vbs_model *m;
    if (vbs_b_finish(b, "plain_drop", &m)) { printf("  build: %s\n", vbs_model_errmsg(m)); vbs_model_free(m); return NULL; }
    return m;
}

/* a V-Net (depth 2) or an FCN-8s (depth 3) of the same small sizes, with MC dropout of ratio p if p > 0 */
static vbs_model *family(vbs_arch a, int dims, int norm, int latent, int hetero, int classes, uint64_t seed, float p) {
    vbs_net_opts o = vbs_net_defaults(a);
    o.dims = dims; o.in_channels = 2; o.classes = classes; o.base = 3; o.depth = a == VBS_ARCH_FCN ? 3 : 2; o.latent = latent;
    o.hetero = hetero; o.norm = norm; o.rho0 = -2.5f; o.seed = seed; o.dropout = p;
    vbs_model *m;
    if (vbs_net_build(a, &o, &m)) { printf("  build: %s\n", vbs_model_errmsg(m)); vbs_model_free(m); return NULL; }
    return m;
}

static int rig_init(rig *r, vbs_model *m, int batch, int dims, int64_t side, int flipout, int threads) {
    memset(r, 0, sizeof *r);
    vbs_trainer_cfg cfg = {.opt = {.kind = VBS_OPT_ADAM, .lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f}, .seed = 3,
                           .threads = threads, .groups = 0, .flipout = flipout, .kl_weight = 1e-3f, .latent_kl_weight = 0.05f};
    char err[VBS_ERRLEN];
    if (vbs_trainer_init(&r->t, m, &cfg, err)) { printf("  trainer: %s\n", err); return 0; }
    vbs_value_info o;
    vbs_model_output(m, 0, &o);
    vbs_loss_spec_from_card(&m->def.card, (int)o.dims[1], r->t.hetero, &r->t.loss);
    int64_t v = side * side * (dims == 3 ? side : 1);
    r->x = malloc(sizeof(float) * (size_t)(batch * 2 * v));
    r->y = malloc((size_t)(batch * v));
    for (int64_t i = 0; i < batch * 2 * v; i++) r->x[i] = rf();
    for (int64_t i = 0; i < batch * v; i++) r->y[i] = (uint8_t)(rnd() * (o.dims[1] > 1 ? o.dims[1] : 2));
    r->b = (vbs_batch){batch, 2, dims, {side, side, dims == 3 ? side : 1}, r->x, r->y};
    return 1;
}

static void rig_free(rig *r) {
    vbs_trainer_free(&r->t);
    free(r->x);
    free(r->y);
}

/* the objective at the step's draws, in double */
static double objective(rig *r) {
    vbs_step_stats st;
    char err[VBS_ERRLEN];
    if (vbs_trainer_grad(&r->t, &r->b, 0, &st, err)) { printf("  %s\n", err); return NAN; }
    return st.loss;
}

/* The trainer's gradient against central differences of the whole objective,
 * element by element: three elements of every trained tensor (mu, rho and
 * plain), sigma refreshed as rho moves. A ReLU network is smooth only between
 * kinks, and the objective comes from float kernels (noise about
 * 4e-8 |L| / h): the difference is taken at steps from 1e-3 down to 3e-5,
 * and one of them must agree (a wrong gradient agrees with none). A third of the
 * checked gradients must stand well above the noise for this to mean
 * something. */
static void check_network(const char *label, vbs_model *m, int batch, int dims, int64_t side, int flipout) {
    rig r;
    if (!m || !rig_init(&r, m, batch, dims, side, flipout, 1)) { CHECK(0, "%s: set-up", label); vbs_model_free(m); return; }
    r.t.cfg.kl_weight = 1e-5f; /* the KL's own gradients are checked on their own (test_weight_kl) */
    vbs_params *P = &r.t.P;
    double l0 = objective(&r);
    int64_t n = P->n;
    float *g = malloc(sizeof(float) * (size_t)n);
    memcpy(g, r.t.grad, sizeof(float) * (size_t)n);
    const double noise = 4e-8 * (fabs(l0) + 1);
    int ok = isfinite(l0), checked = 0, strong = 0, roles[3] = {0, 0, 0};
    for (int i = 0; i < m->def.n_tensors && ok; i++) {
        const vbs_tensor_def *td = &m->def.tensors[i];
        if (!P->trained[i]) continue;
        int role = td->role == VBS_ROLE_RHO ? 2 : td->role == VBS_ROLE_MU ? 0 : 1;
        for (int k = 0; k < 3; k++) {
            int64_t e = P->toff[i] + (int64_t)(rnd() * (double)td->numel);
            float x0 = P->data[e];
            double an = g[e], num[4] = {0, 0, 0, 0}, hs[4] = {1e-3, 3e-4, 1e-4, 3e-5};
            int agree = 0;
            for (int q = 0; q < 4 && !agree; q++) {
                P->data[e] = (float)(x0 + hs[q]);
                vbs_params_refresh(P);
                double lp = objective(&r);
                P->data[e] = (float)(x0 - hs[q]);
                vbs_params_refresh(P);
                double lm = objective(&r);
                num[q] = (lp - lm) / ((double)(float)(x0 + hs[q]) - (double)(float)(x0 - hs[q]));
                agree = fabs(num[q] - an) <= 3e-2 * fmax(fabs(num[q]), fabs(an)) + noise / hs[q];
            }
            P->data[e] = x0;
            vbs_params_refresh(P);
            checked++;
            roles[role]++;
            strong += fabs(an) > 10 * noise / 1e-3;
            if (!agree) {
                printf("  %s: d/d %s[%lld]: analytic %.7g, numeric %.7g, %.7g, %.7g, %.7g\n", label, td->name, (long long)(e - P->toff[i]), an,
                       num[0], num[1], num[2], num[3]);
                ok = 0;
            }
        }
    }
    CHECK(ok && strong * 3 > checked && ((roles[0] && roles[2]) || !m->g.var_total), "%s: the whole objective's gradient against finite differences (%d elements, %d well above the noise)",
          label, checked, strong);
    free(g);
    rig_free(&r);
    vbs_model_free(m);
}

/* ---- the weights' KL --------------------------------------------------------------- */

static void test_weight_kl(void) {
    vbs_model *m = unet(2, VBS_UNET_NORM_NONE, 0, 0, 2, 5);
    rig r;
    if (!m || !rig_init(&r, m, 1, 2, 8, 0, 1)) { CHECK(0, "KL set-up"); return; }
    /* Gaussian closed form, by hand over every variational tensor */
    double want = 0;
    for (int i = 0; i < m->def.n_tensors; i++) {
        const vbs_tensor_def *t = &m->def.tensors[i];
        if (t->role != VBS_ROLE_MU) continue;
        const float *rho = r.t.P.data + r.t.P.toff[i + 1]; /* the builder puts each rho right after its mu */
        for (int64_t e = 0; e < t->numel; e++) {
            double s = log1p(exp((double)rho[e])), mu = t->data[e], sp = t->prior.sigma;
            want += log(sp / s) + (s * s + mu * mu) / (2 * sp * sp) - 0.5;
        }
    }
    double kl = vbs_params_kl(&r.t.P, 0.f, NULL);
    CHECK(fabs(kl - want) < 1e-6 * fabs(want), "Gaussian KL %.9g, by hand %.9g", kl, want);
    /* the scale mixture: log q(w) - log p(w) at a draw, by hand */
    for (int i = 0; i < m->def.n_tensors; i++)
        if (m->def.tensors[i].role == VBS_ROLE_MU) {
            m->def.tensors[i].prior = (vbs_prior){VBS_PRIOR_MIXTURE, 0, 0.25f, 1.0f, 0.0025f};
        }
    vbs_params_sample(&r.t.P, 7, 2);
    want = 0;
    for (int v = 0; v < m->g.n_values; v++) {
        const vbs_value *val = &m->g.values[v];
        if (val->kind != VBS_VAL_VARWEIGHT) continue;
        const vbs_tensor_def *t = &m->def.tensors[val->tensor];
        const float *rho = r.t.P.data + r.t.P.toff[val->rho], *eps = r.t.P.eps + val->var_off;
        for (int64_t e = 0; e < t->numel; e++) {
            double s = log1p(exp((double)rho[e])), w = t->data[e] + s * eps[e];
            double q = exp(-0.5 * (double)eps[e] * eps[e]) / (s * sqrt(2 * PI));
            double p = 0.25 * exp(-0.5 * w * w) / sqrt(2 * PI) + 0.75 * exp(-0.5 * w * w / (0.0025 * 0.0025)) / (0.0025 * sqrt(2 * PI));
            want += log(q) - log(p);
        }
    }
    kl = vbs_params_kl(&r.t.P, 0.f, NULL);
    CHECK(fabs(kl - want) < 1e-6 * fabs(want) + 1e-6, "scale-mixture KL %.9g, by hand %.9g", kl, want);
    rig_free(&r);
    vbs_model_free(m);
    /* its gradient (and the Gaussian's) through mu and rho: the whole-network check with only the KL */
    for (int mix = 0; mix < 2; mix++) {
        vbs_model *mm = unet(2, VBS_UNET_NORM_NONE, 0, 0, 2, 6);
        if (mix)
            for (int i = 0; i < mm->def.n_tensors; i++)
                if (mm->def.tensors[i].role == VBS_ROLE_MU) mm->def.tensors[i].prior = (vbs_prior){VBS_PRIOR_MIXTURE, 0, 0.5f, 1.0f, 0.05f};
        rig q;
        rig_init(&q, mm, 1, 2, 8, 0, 1);
        q.t.loss.w_dice = q.t.loss.w_ce = 0; /* the KL alone */
        q.t.cfg.kl_weight = 1.f;
        double l0 = objective(&q);
        int64_t n = q.t.P.n;
        float *g = malloc(sizeof(float) * (size_t)n), *p0 = malloc(sizeof(float) * (size_t)n);
        memcpy(g, q.t.grad, sizeof(float) * (size_t)n);
        memcpy(p0, q.t.P.data, sizeof(float) * (size_t)n);
        int ok = isfinite(l0);
        for (int k = 0; k < 40 && ok; k++) {
            int64_t i = (int64_t)(rnd() * (double)n);
            float x0 = q.t.P.data[i];
            double h = 1e-3 * fmax(1.0, fabs(x0));
            q.t.P.data[i] = (float)(x0 + h);
            vbs_params_refresh(&q.t.P);
            double a = objective(&q);
            q.t.P.data[i] = (float)(x0 - h);
            vbs_params_refresh(&q.t.P);
            double b = objective(&q);
            q.t.P.data[i] = x0;
            vbs_params_refresh(&q.t.P);
            double num = (a - b) / ((double)(float)(x0 + h) - (double)(float)(x0 - h));
            if (fabs(num - g[i]) > 2e-3 * fmax(fabs(num), fabs(g[i])) + 1e-3) { printf("  KL d/dparam[%lld]: %g vs %g\n", (long long)i, g[i], num); ok = 0; }
        }
        CHECK(ok, "%s KL gradient (mu and rho) against finite differences", mix ? "scale-mixture" : "Gaussian");
        free(g); free(p0);
        rig_free(&q);
        vbs_model_free(mm);
    }
}

/* ---- optimisers and schedules ------------------------------------------------------------ */

static void test_optim(void) {
    /* Adam, two steps on one parameter, by hand */
    vbs_opt_cfg c = {.kind = VBS_OPT_ADAM, .lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.f};
    float p = 1.f, m = 0, v = 0, g = 0.5f;
    vbs_opt_step(&c, c.lr, 1, &p, &g, &m, &v, 1, 1);
    double mh = 0.05 / 0.1, vh = 0.00025 / 0.001, want = 1 - 0.1 * mh / (sqrt(vh) + 1e-8);
    CHECK(fabs(p - want) < 1e-6, "Adam step 1: %.7f, by hand %.7f", p, want);
    g = -0.25f;
    vbs_opt_step(&c, c.lr, 2, &p, &g, &m, &v, 1, 1);
    double m2 = 0.9 * 0.05 + 0.1 * -0.25, v2 = 0.999 * 0.00025 + 0.001 * 0.0625;
    want = want - 0.1 * (m2 / (1 - 0.81)) / (sqrt(v2 / (1 - 0.999 * 0.999)) + 1e-8);
    CHECK(fabs(p - want) < 1e-6, "Adam step 2: %.7f, by hand %.7f", p, want);
    /* AdamW decays the parameter itself; Adam adds the decay to the gradient */
    c.kind = VBS_OPT_ADAMW;
    c.weight_decay = 0.1f;
    p = 2.f; m = v = 0; g = 0.f;
    vbs_opt_step(&c, 0.1f, 1, &p, &g, &m, &v, 1, 1);
    CHECK(fabs(p - 2 * (1 - 0.01)) < 1e-6, "AdamW with a zero gradient: %.7f", p);
    p = 2.f; m = v = 0;
    vbs_opt_step(&c, 0.1f, 1, &p, &g, &m, &v, 1, 0);
    CHECK(p == 2.f, "no decay where it does not apply: %.7f", p);
    /* SGD with momentum: v = 0.9 v + g + wd p, p -= lr v */
    c = (vbs_opt_cfg){.kind = VBS_OPT_SGD, .momentum = 0.9f, .weight_decay = 0.01f};
    p = 1.f; m = 0;
    g = 1.f;
    vbs_opt_step(&c, 0.1f, 1, &p, &g, &m, NULL, 1, 1);
    double vv = 1.01, pp = 1 - 0.1 * vv;
    vbs_opt_step(&c, 0.1f, 2, &p, &g, &m, NULL, 1, 1);
    vv = 0.9 * vv + 1 + 0.01 * pp;
    pp -= 0.1 * vv;
    CHECK(fabs(p - pp) < 1e-6, "SGD momentum: %.7f, by hand %.7f", p, pp);
    /* triangular cyclical: lr_min at the ends of a cycle, lr at its middle */
    vbs_opt_cfg cy = {.sched = VBS_SCHED_CYCLIC, .lr = 1e-2f, .lr_min = 1e-4f, .period = 10};
    vbs_sched_state s;
    vbs_sched_init(&cy, &s);
    float a[4];
    int64_t at[4] = {0, 5, 10, 20};
    for (int i = 0; i < 4; i++) { s.step = at[i]; a[i] = vbs_sched_lr(&cy, &s, 0); }
    CHECK(fabsf(a[0] - 1e-4f) < 1e-9f && fabsf(a[1] - 5.05e-3f) < 1e-7f && fabsf(a[2] - 1e-2f) < 1e-9f && fabsf(a[3] - 1e-4f) < 1e-9f,
          "cyclic: %g %g %g %g", a[0], a[1], a[2], a[3]);
    /* plateau: gamma after more than `patience` epochs without improvement */
    vbs_opt_cfg pl = {.sched = VBS_SCHED_PLATEAU, .lr = 1e-3f, .gamma = 0.1f, .patience = 2};
    vbs_sched_init(&pl, &s);
    double losses[6] = {1.0, 0.9, 0.95, 0.92, 0.91, 0.95};
    float lrs[6];
    for (int e = 0; e < 6; e++) { vbs_sched_epoch_end(&pl, &s, losses[e]); lrs[e] = vbs_sched_lr(&pl, &s, e); }
    CHECK(lrs[3] == 1e-3f && fabsf(lrs[4] - 1e-4f) < 1e-10f && fabsf(lrs[5] - 1e-4f) < 1e-10f, "plateau: %g %g %g", lrs[3], lrs[4], lrs[5]);
    vbs_opt_cfg po = {.sched = VBS_SCHED_POLY, .lr = 1e-2f, .total_epochs = 10};
    CHECK(fabsf(vbs_sched_lr(&po, &s, 5) - (float)(1e-2 * pow(0.5, 0.9))) < 1e-9f, "poly");
}

/* ---- the same bytes at 1 and 2 threads; a bad loss changes nothing ---------------------- */

/* Three steps of each of two copies of one model (m[0] at 1 thread, m[1] at 2,
 * on the same data) end in the same parameter bytes; frees both. */
static void check_threads(const char *label, vbs_model *m[2]) {
    float *after[2] = {0};
    int64_t n = 0;
    for (int th = 1; th <= 2; th++) {
        rig r;
        rs = 99; /* the same data both times */
        if (!m[th - 1] || !rig_init(&r, m[th - 1], 5, 2, 8, 0, th)) { CHECK(0, "%s: threads set-up", label); break; }
        char err[VBS_ERRLEN];
        vbs_step_stats st;
        int ok = 1;
        for (int s = 0; s < 3 && ok; s++) ok = !vbs_trainer_step(&r.t, &r.b, s, 1e-2f, &st, err);
        CHECK(ok, "%s: three steps at %d thread(s)", label, th);
        n = r.t.P.n;
        after[th - 1] = malloc(sizeof(float) * (size_t)n);
        memcpy(after[th - 1], r.t.P.data, sizeof(float) * (size_t)n);
        rig_free(&r);
    }
    CHECK(after[0] && after[1] && !memcmp(after[0], after[1], sizeof(float) * (size_t)n),
          "%s: the parameters after 3 steps are the same bytes at 1 and 2 threads", label);
    free(after[0]);
    free(after[1]);
    vbs_model_free(m[0]);
    vbs_model_free(m[1]);
}

static void test_threads(void) {
    vbs_model *two[2] = {unet(2, VBS_UNET_NORM_INSTANCE, 3, 1, 4, 11), unet(2, VBS_UNET_NORM_INSTANCE, 3, 1, 4, 11)};
    check_threads("U-Net", two);
    /* a step whose loss is not finite: refused, naming the term, nothing changed */
    vbs_model *m = unet(2, VBS_UNET_NORM_NONE, 0, 0, 2, 12);
    rig r;
    rig_init(&r, m, 2, 2, 8, 0, 1);
    r.x[3] = INFINITY;
    float *p0 = malloc(sizeof(float) * (size_t)r.t.P.n);
    memcpy(p0, r.t.P.data, sizeof(float) * (size_t)r.t.P.n);
    char err[VBS_ERRLEN];
    vbs_step_stats st;
    vbs_status s = vbs_trainer_step(&r.t, &r.b, 0, 1e-2f, &st, err);
    CHECK(s == VBS_ERR_NUMERIC && strstr(err, "step 0") && strstr(err, "not finite"), "a non-finite loss is refused: %s", err);
    CHECK(!memcmp(p0, r.t.P.data, sizeof(float) * (size_t)r.t.P.n), "and the parameters are unchanged");
    free(p0);
    rig_free(&r);
    vbs_model_free(m);
}

/* MC dropout in training: the masks are drawn (the objective differs from
 * the same weights without Dropout, and from step to step), the gradient of
 * the whole objective with the step's masks against finite differences (one
 * pass per example, and BatchNormalization's one pass of the minibatch where
 * item j takes example j's mask), the same bytes at 1 and 2 threads, and
 * Adam steps on a fixed minibatch lower the loss. The same weights with and
 * without Dropout: the weight draws are the same, only the masks differ. */
/* Each family's Dropouts where models/<family>.h document them: named, of the
 * given ratio, fed by the layer written here by hand, and the only reader of
 * that layer (so everything after it sees the masks). */
static void check_placement(const char *label, vbs_model *m, const char *const (*want)[2], int n_want) {
    if (!m) { CHECK(0, "%s: build", label); return; }
    int found = 0, ok = 1;
    for (int i = 0; i < m->def.n_nodes; i++) {
        const vbs_node_def *d = &m->def.nodes[i];
        if (strcmp(d->op_type, "Dropout")) continue;
        found++;
        int w = 0;
        while (w < n_want && strcmp(want[w][0], d->name)) w++;
        if (w == n_want || d->n_in != 1 || strcmp(d->in[0], want[w][1])) {
            printf("  %s: Dropout '%s' reads '%s'\n", label, d->name, d->n_in ? d->in[0] : "");
            ok = 0;
            continue;
        }
        int readers = 0;
        for (int j = 0; j < m->def.n_nodes; j++)
            for (int k = 0; k < m->def.nodes[j].n_in; k++) readers += !strcmp(m->def.nodes[j].in[k], d->in[0]);
        if (readers != 1) { printf("  %s: '%s' has %d readers besides its Dropout\n", label, d->in[0], readers - 1); ok = 0; }
    }
    CHECK(ok && found == n_want, "%s: %d Dropouts where documented (%d found)", label, n_want, found);
    vbs_model_free(m);
}

static void test_dropout_placement(void) {
    static const char *const unet[][2] = {{"enc0.dropout", "enc0.relu2"}, {"enc1.dropout", "enc1.relu2"}, {"bottleneck.dropout", "bottleneck.relu2"},
                                          {"dec1.dropout", "dec1.relu2"}, {"dec0.dropout", "dec0.relu2"}};
    static const char *const vnet[][2] = {{"enc0.dropout", "enc0.prelu1"}, {"enc1.dropout", "enc1.prelu2"}, {"enc2.dropout", "enc2.prelu3"},
                                          {"dec1.dropout", "dec1.prelu2"}, {"dec0.dropout", "dec0.prelu1"}};
    static const char *const fcn[][2] = {{"stage0.dropout", "pool0"}, {"stage1.dropout", "pool1"}, {"stage2.dropout", "pool2"},
                                         {"conv6.dropout", "conv6.relu"}, {"conv7.dropout", "conv7.relu"}};
    check_placement("U-Net, depth 2", unet_drop(2, VBS_UNET_NORM_INSTANCE, 3, 0.3f, 30), unet, 5);
    check_placement("V-Net, depth 2", family(VBS_ARCH_VNET, 2, VBS_NET_NORM_BATCH, 0, 0, 3, 31, 0.3f), vnet, 5);
    check_placement("3D FCN-8s, depth 3, latent", family(VBS_ARCH_FCN, 3, VBS_NET_NORM_NONE, 2, 1, 3, 32, 0.3f), fcn, 5);
    check_placement("V-Net without dropout", family(VBS_ARCH_VNET, 2, VBS_NET_NORM_BATCH, 0, 0, 3, 31, 0.f), vnet, 0);
}

static void test_dropout(void) {
    check_network("2D U-Net with dropout 0.3 after each block", unet_drop(2, VBS_UNET_NORM_INSTANCE, 3, 0.3f, 21), 3, 2, 8, 0);
    check_network("2D U-Net with dropout 0.3 and batch norm", unet_drop(2, VBS_UNET_NORM_BATCH, 3, 0.3f, 22), 3, 2, 8, 0);
    check_network("3D U-Net with dropout 0.2", unet_drop(3, VBS_UNET_NORM_INSTANCE, 2, 0.2f, 23), 2, 3, 8, 0);
    check_network("MC-dropout net without variational weights", plain_drop(27), 3, 2, 8, 0);
    check_network("2D V-Net with dropout 0.3 after each stage", family(VBS_ARCH_VNET, 2, VBS_NET_NORM_INSTANCE, 0, 0, 3, 28, 0.3f), 3, 2, 8, 0);
    check_network("2D FCN-8s with dropout 0.3 after each pool and fc6, fc7", family(VBS_ARCH_FCN, 2, VBS_NET_NORM_INSTANCE, 0, 0, 3, 29, 0.3f), 3, 2, 16, 0);
    test_dropout_placement();
    double l[2][2];
    for (int d = 0; d < 2; d++) {
        vbs_model *m = unet_drop(2, VBS_UNET_NORM_INSTANCE, 3, d ? 0.3f : 0.f, 24);
        rig r;
        rs = 77;
        if (!m || !rig_init(&r, m, 2, 2, 8, 0, 1)) { CHECK(0, "dropout set-up"); vbs_model_free(m); return; }
        char err[VBS_ERRLEN];
        vbs_step_stats st;
        for (int s = 0; s < 2; s++) {
            CHECK(!vbs_trainer_grad(&r.t, &r.b, s, &st, err), "%s", err);
            l[d][s] = st.loss;
        }
        rig_free(&r);
        vbs_model_free(m);
    }
    for (int s = 0; s < 2; s++)
        CHECK(l[1][s] != l[0][s], "step %d: the objective with dropout equals the one without (%.9g): no mask drawn", s, l[0][s]);
    vbs_model *two[2] = {unet_drop(2, VBS_UNET_NORM_INSTANCE, 3, 0.3f, 25), unet_drop(2, VBS_UNET_NORM_INSTANCE, 3, 0.3f, 25)};
    check_threads("dropout U-Net", two);
    /* it trains: 40 Adam steps on one minibatch whose labels are a function of the voxel's
     * channels, the mean loss of the last 5 below 0.9 x the first 5's (about 0.63 against 0.75) */
    vbs_model *m = unet_drop(2, VBS_UNET_NORM_INSTANCE, 3, 0.2f, 26);
    rig r;
    rs = 5;
    if (!m || !rig_init(&r, m, 4, 2, 8, 0, 2)) { CHECK(0, "dropout training set-up"); vbs_model_free(m); return; }
    for (int e = 0; e < 4; e++)
        for (int v = 0; v < 64; v++) r.y[e * 64 + v] = r.x[(e * 2) * 64 + v] > 0 ? (r.x[(e * 2 + 1) * 64 + v] > 0 ? 2 : 1) : 0;
    r.t.cfg.kl_weight = 1e-6f;
    double first = 0, last = 0;
    char err[VBS_ERRLEN];
    vbs_step_stats st;
    for (int s = 0; s < 40; s++) {
        if (vbs_trainer_step(&r.t, &r.b, s, 1e-2f, &st, err)) { CHECK(0, "step %d: %s", s, err); break; }
        if (s < 5) first += st.loss / 5;
        if (s >= 35) last += st.loss / 5;
    }
    CHECK(last < 0.9 * first, "dropout U-Net: loss %.4f over the first 5 steps, %.4f over the last 5", first, last);
    rig_free(&r);
    vbs_model_free(m);
}

/* the parameter count the memory check uses before building, against built models */
static void test_unet_floats(void) {
    int ok = 1;
    for (int dims = 2; dims <= 3; dims++)
        for (int norm = 0; norm <= 2; norm++)
            for (int lat = 0; lat <= 3; lat += 3) {
                vbs_unet_opts o = vbs_unet_defaults();
                o.dims = dims; o.in_channels = 3; o.classes = 4; o.base = 3; o.depth = 2; o.latent = lat; o.hetero = lat > 0; o.norm = norm;
                o.deterministic = norm == 1; /* means only */
                vbs_model *m;
                if (vbs_unet_build(&o, &m)) { ok = 0; vbs_model_free(m); continue; }
                double n = 0;
                for (int i = 0; i < m->def.n_tensors; i++) n += (double)m->def.tensors[i].numel;
                if (n != vbs_unet_floats(&o)) { printf("  %dD norm %d latent %d: %g floats built, %g estimated\n", dims, norm, lat, n, vbs_unet_floats(&o)); ok = 0; }
                vbs_model_free(m);
            }
    CHECK(ok, "vbs_unet_floats equals the floats of the built models");
    /* the other families' estimate counts what a build would store (builder.c's counting builder) */
    ok = 1;
    for (int a = VBS_ARCH_VNET; a <= VBS_ARCH_FCN; a++)
        for (int dims = 2; dims <= 3; dims++)
            for (int norm = 0; norm <= 2; norm++) {
                vbs_net_opts o = vbs_net_defaults((vbs_arch)a);
                o.dims = dims; o.in_channels = 3; o.classes = 4; o.base = 2; o.depth = 3; o.latent = norm; o.hetero = norm == 1; o.norm = norm;
                o.deterministic = norm == 2;
                vbs_model *m;
                if (vbs_net_build((vbs_arch)a, &o, &m)) { printf("  %s: %s\n", vbs_arch_name((vbs_arch)a), vbs_model_errmsg(m)); ok = 0; vbs_model_free(m); continue; }
                double n = 0;
                for (int i = 0; i < m->def.n_tensors; i++) n += (double)m->def.tensors[i].numel;
                if (n != vbs_net_floats((vbs_arch)a, &o)) {
                    printf("  %s %dD norm %d: %g floats built, %g estimated\n", vbs_arch_name((vbs_arch)a), dims, norm, n, vbs_net_floats((vbs_arch)a, &o));
                    ok = 0;
                }
                vbs_model_free(m);
            }
    CHECK(ok, "vbs_net_floats equals the floats of built V-Nets and FCN-8s");
}

int main(void) {
    test_unet_floats();
    test_losses();
    test_weight_kl();
    test_optim();
    check_network("2D U-Net, latent, heteroscedastic head, instance norm", unet(2, VBS_UNET_NORM_INSTANCE, 3, 1, 4, 1), 3, 2, 8, 0);
    check_network("2D U-Net, no norm (Conv+Relu fused), sigmoid head", unet(2, VBS_UNET_NORM_NONE, 0, 0, 1, 2), 2, 2, 8, 0);
    check_network("2D U-Net, batch norm (one pass of the minibatch)", unet(2, VBS_UNET_NORM_BATCH, 2, 0, 3, 3), 3, 2, 8, 0);
    check_network("2D U-Net, Flipout", unet(2, VBS_UNET_NORM_INSTANCE, 2, 1, 4, 4), 3, 2, 8, 1);
    check_network("3D U-Net, latent, heteroscedastic head", unet(3, VBS_UNET_NORM_INSTANCE, 2, 1, 2, 5), 2, 3, 8, 0);
    /* the other families' graphs: PReLU, residual Adds, strided convs, FCN's bilinear upsamplings and three latent joins */
    check_network("2D V-Net, latent, heteroscedastic head, instance norm", family(VBS_ARCH_VNET, 2, VBS_NET_NORM_INSTANCE, 3, 1, 4, 6, 0.f), 3, 2, 8, 0);
    check_network("2D V-Net, batch norm, sigmoid head", family(VBS_ARCH_VNET, 2, VBS_NET_NORM_BATCH, 0, 0, 1, 7, 0.f), 3, 2, 8, 0);
    check_network("2D FCN-8s, latent, heteroscedastic head, instance norm", family(VBS_ARCH_FCN, 2, VBS_NET_NORM_INSTANCE, 2, 1, 3, 8, 0.f), 3, 2, 16, 0);
    check_network("3D FCN-8s, no norm", family(VBS_ARCH_FCN, 3, VBS_NET_NORM_NONE, 0, 0, 2, 9, 0.f), 2, 3, 16, 0);
    test_dropout();
    test_threads();
    return finish("test_train");
}
