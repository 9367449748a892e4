/*
 * loss.c: the data loss of one training example and its gradient with
 * respect to the network's outputs, and the KL of the latent.
 *
 *   total = w_dice * (1 - mean_t Dice_t) + w_ce * CE        (0.9 and 0.1)
 *
 * Dice_t = (2 sum_v p_t g_t + s) / (sum_v p_t + sum_v g_t + s) is the soft
 * Dice of term t, where a term is a foreground class or, for BraTS labels,
 * a region (WT, TC, ET) whose probability is the sum of its classes'; it is
 * computed per example (each example's loss depends on it alone, so the
 * minibatch can be split between threads). CE is the mean over voxels of
 * -log p(target) (softmax), of the BCE (one sigmoid channel), or, for a
 * heteroscedastic head, of Kendall & Gal's (2017) sampled-logit likelihood
 * -log (1/T) sum_t softmax(z + exp(s/2) eps_t)[target] with T noise draws
 * eps_t from the counter-based RNG; the Dice term then uses softmax(z).
 * Sums are accumulated in double; the heteroscedastic likelihood's terms are
 * computed in float (vectorised), the rest in double.
 */
#include <math.h>
#include <string.h>

#include "../runtime/vmath.h"
#include "trainer.h"

/* class probabilities p (kk x v): softmax over k, or (1 - sigmoid, sigmoid) */
static void probabilities(const vbs_loss_spec *s, const float *z, int64_t v, float *p) {
    if (s->sigmoid) {
        for (int64_t i = 0; i < v; i++) {
            double q = 1.0 / (1.0 + exp(-(double)z[i]));
            p[i] = (float)(1.0 - q);
            p[v + i] = (float)q;
        }
        return;
    }
    for (int64_t i = 0; i < v; i++) {
        double mx = z[i], sum = 0;
        for (int c = 1; c < s->k; c++) mx = fmax(mx, z[c * v + i]);
        for (int c = 0; c < s->k; c++) sum += exp((double)z[c * v + i] - mx);
        for (int c = 0; c < s->k; c++) p[c * v + i] = (float)(exp((double)z[c * v + i] - mx) / sum);
    }
}

static double log_prob(const vbs_loss_spec *s, const float *z, int64_t v, int64_t i, int t) {
    if (s->sigmoid) {
        double x = z[i]; /* log sigmoid(x) and log(1 - sigmoid(x)), overflow-safe */
        double ls = x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x));
        return t ? ls : ls - x;
    }
    double mx = z[i], sum = 0;
    for (int c = 1; c < s->k; c++) mx = fmax(mx, z[c * v + i]);
    for (int c = 0; c < s->k; c++) sum += exp((double)z[c * v + i] - mx);
    return (double)z[t * v + i] - mx - log(sum);
}

/* ---- the heteroscedastic likelihood -------------------------------------------
 * Per voxel: sigma_c = exp(s_c / 2) once; for each noise draw t the logits
 * x_t = z + sigma . eps_t and a_t = p_t(target) (softmax(x_t)[target], or
 * sigmoid(+-x_t) for one sigmoid channel), kept with what the gradient needs
 * (softmax(x_t), or 1 - a_t); A = sum_t a_t; nll = -log(A / T);
 *   dnll/dx_t = (a_t / A) (softmax(x_t) - onehot)   or   -(a_t / A) (+-1) (1 - a_t).
 * Float, HB voxels at a time, in loops the vectoriser takes (vbs_exp_poly for
 * exp); the sums over voxels in double. A voxel whose A falls below 1e-30
 * (its target logit ~70 below the others in every draw) is redone in double
 * (hetero_voxel), whose range reaches ~700. */

#define HB 64 /* voxels per block */
#define HETERO_TINY 1e-30f

/* One voxel i in double: returns its -log (A / T) and adds w times its
 * gradient into dz, ds (NULL: none). */
static double hetero_voxel(const vbs_loss_spec *s, const float *z, const float *lv, int y, int64_t v, int64_t i, double w, float *dz,
                           float *ds, const float *eps) {
    int k = s->k, T = s->samples;
    double q[64], A = 0;
    for (int pass = 0; pass < (dz ? 2 : 1); pass++) {
        if (pass && !(A > 1e-300)) A = 1e-300; /* beyond double's range too: a finite loss, a zero gradient */
        for (int t = 0; t < T; t++) {
            const float *e = eps + (int64_t)t * k * v;
            if (s->sigmoid) {
                double sg = exp(0.5 * lv[i]), sgn = y ? 1.0 : -1.0, at = 1.0 / (1.0 + exp(-sgn * (z[i] + sg * e[i])));
                if (!pass) { A += at; continue; }
                double dx = -(at / A) * sgn * (1 - at) * w;
                dz[i] += (float)dx;
                ds[i] += (float)(dx * e[i] * sg * 0.5);
                continue;
            }
            double mx = -INFINITY, sum = 0;
            for (int c = 0; c < k; c++) { q[c] = z[c * v + i] + exp(0.5 * lv[c * v + i]) * e[c * v + i]; mx = fmax(mx, q[c]); }
            for (int c = 0; c < k; c++) sum += (q[c] = exp(q[c] - mx));
            double at = q[y] / sum;
            if (!pass) { A += at; continue; }
            for (int c = 0; c < k; c++) {
                double dx = at / A * (q[c] / sum - (c == y)) * w;
                dz[c * v + i] += (float)dx;
                ds[c * v + i] += (float)(dx * e[c * v + i] * exp(0.5 * lv[c * v + i]) * 0.5);
            }
        }
    }
    if (!(A > 1e-300)) A = 1e-300;
    return -log(A / T);
}

/* The block's scratch: floats by (draw, class, voxel) or (class, voxel) */
typedef struct { float *p, *at, *om, *sg, *gz, *gs, *A, *mx, *sum, *yf, *tiny; } hblock;

static size_t hetero_block_floats(const vbs_loss_spec *s) { return (size_t)HB * ((size_t)s->samples * (s->k + 2) + 3 * (size_t)s->k + 5); }

/* Voxels [i0, i0 + nb) of hetero_nll: returns their sum of -log (A / T) and
 * adds w times their gradient into dz, ds (NULL: none), leaving out the
 * voxels it flags in b->tiny (non-zero: A below HETERO_TINY, or NaN). */
static inline __attribute__((always_inline)) double hetero_block_body(const vbs_loss_spec *s, const float *z, const float *lv,
                                                                      const uint8_t *target, int64_t v, int64_t i0, int nb, float w,
                                                                      float *dz, float *ds, const float *eps, const hblock *b) {
    int k = s->k, T = s->samples;
    /* omp simd: the vectoriser cannot see that the scratch arrays do not overlap the inputs */
    float *A = b->A, *sg = b->sg, *yf = b->yf, *mx = b->mx, *sum = b->sum, *gz = b->gz, *gs = b->gs, *tiny = b->tiny;
    #pragma omp simd
    for (int j = 0; j < nb; j++) { A[j] = 0.f; yf[j] = (float)target[i0 + j]; }
    for (int c = 0; c < k; c++)
        #pragma omp simd
        for (int j = 0; j < nb; j++) sg[c * HB + j] = vbs_exp_poly(0.5f * lv[c * v + i0 + j]);
    for (int t = 0; t < T; t++) {
        const float *e = eps + (int64_t)t * k * v + i0;
        float *at = b->at + t * HB, *p = b->p + (int64_t)t * k * HB;
        if (s->sigmoid) { /* a_t = sigmoid(+-x) = 1 / (1 + en), 1 - a_t = en a_t */
            float *om = b->om + t * HB;
            #pragma omp simd
            for (int j = 0; j < nb; j++) {
                float x = z[i0 + j] + sg[j] * e[j], en = vbs_exp_poly(yf[j] != 0.f ? -x : x), a = 1.f / (1.f + en);
                at[j] = a;
                om[j] = en * a;
                A[j] += a;
            }
            continue;
        }
        #pragma omp simd
        for (int j = 0; j < nb; j++) { mx[j] = -INFINITY; sum[j] = 0.f; at[j] = 0.f; }
        for (int c = 0; c < k; c++)
            #pragma omp simd
            for (int j = 0; j < nb; j++) {
                float x = z[c * v + i0 + j] + sg[c * HB + j] * e[(int64_t)c * v + j];
                p[c * HB + j] = x;
                mx[j] = x > mx[j] ? x : mx[j];
            }
        for (int c = 0; c < k; c++)
            #pragma omp simd
            for (int j = 0; j < nb; j++) {
                float q = vbs_exp_poly(p[c * HB + j] - mx[j]);
                p[c * HB + j] = q;
                sum[j] += q;
            }
        #pragma omp simd
        for (int j = 0; j < nb; j++) sum[j] = 1.f / sum[j];
        for (int c = 0; c < k; c++)
            #pragma omp simd
            for (int j = 0; j < nb; j++) {
                float q = p[c * HB + j] * sum[j];
                p[c * HB + j] = q;
                at[j] += yf[j] == (float)c ? q : 0.f;
            }
        #pragma omp simd
        for (int j = 0; j < nb; j++) A[j] += at[j];
    }
    double nll = 0;
    for (int j = 0; j < nb; j++) {
        tiny[j] = !(A[j] >= HETERO_TINY);
        if (tiny[j] == 0.f) nll -= log((double)A[j] / T);
    }
    if (!dz) return nll;
    for (int c = 0; c < k; c++)
        #pragma omp simd
        for (int j = 0; j < nb; j++) gz[c * HB + j] = gs[c * HB + j] = 0.f;
    #pragma omp simd
    for (int j = 0; j < nb; j++) A[j] = tiny[j] != 0.f ? 0.f : w / A[j]; /* now w / A */
    for (int t = 0; t < T; t++) {
        const float *e = eps + (int64_t)t * k * v + i0, *at = b->at + t * HB;
        if (s->sigmoid) {
            const float *om = b->om + t * HB;
            #pragma omp simd
            for (int j = 0; j < nb; j++) {
                float dx = (yf[j] != 0.f ? -A[j] : A[j]) * at[j] * om[j];
                gz[j] += dx;
                gs[j] += dx * e[j];
            }
            continue;
        }
        const float *p = b->p + (int64_t)t * k * HB;
        for (int c = 0; c < k; c++)
            #pragma omp simd
            for (int j = 0; j < nb; j++) {
                float dx = at[j] * A[j] * (p[c * HB + j] - (yf[j] == (float)c ? 1.f : 0.f));
                gz[c * HB + j] += dx;
                gs[c * HB + j] += dx * e[(int64_t)c * v + j];
            }
    }
    for (int c = 0; c < k; c++)
        #pragma omp simd
        for (int j = 0; j < nb; j++) {
            dz[c * v + i0 + j] += gz[c * HB + j];
            ds[c * v + i0 + j] += gs[c * HB + j] * sg[c * HB + j] * 0.5f;
        }
    return nll;
}

static double hetero_block_base(const vbs_loss_spec *s, const float *z, const float *lv, const uint8_t *target, int64_t v, int64_t i0,
                                int nb, float w, float *dz, float *ds, const float *eps, const hblock *b) {
    return hetero_block_body(s, z, lv, target, v, i0, nb, w, dz, ds, eps, b);
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) static double hetero_block_avx2(const vbs_loss_spec *s, const float *z, const float *lv,
                                                                      const uint8_t *target, int64_t v, int64_t i0, int nb, float w,
                                                                      float *dz, float *ds, const float *eps, const hblock *b) {
    return hetero_block_body(s, z, lv, target, v, i0, nb, w, dz, ds, eps, b);
}
/* the same loops in 16 lanes: the same arithmetic per voxel, the same bits */
__attribute__((target("avx512f,avx2,fma"))) static double hetero_block_avx512(const vbs_loss_spec *s, const float *z, const float *lv,
                                                                              const uint8_t *target, int64_t v, int64_t i0, int nb,
                                                                              float w, float *dz, float *ds, const float *eps,
                                                                              const hblock *b) {
    return hetero_block_body(s, z, lv, target, v, i0, nb, w, dz, ds, eps, b);
}
#define HETERO_BLOCK (vbs_cpu_avx512() ? hetero_block_avx512 : VBS_PICK(hetero_block))
#else
#define HETERO_BLOCK hetero_block_base
#endif

/* -log (1/T) sum_t p_t(target) averaged over the voxels, and its gradient
 * (times scale) into dz, ds; work: hetero_block_floats */
static double hetero_nll(const vbs_loss_spec *s, const float *z, const float *lv, const uint8_t *target, int64_t v, float scale,
                         float *dz, float *ds, uint64_t seed, uint64_t key, float *eps, float *work) {
    int k = s->k, T = s->samples;
    for (int t = 0; t < T; t++) vbs_randn(seed, key, 0x40000000u + (uint32_t)t, 0, (int64_t)k * v, eps + (int64_t)t * k * v);
    hblock b;
    b.p = work;
    b.at = b.p + (int64_t)T * k * HB;
    b.om = b.at + T * HB;
    b.sg = b.om + T * HB;
    b.gz = b.sg + k * HB;
    b.gs = b.gz + k * HB;
    b.A = b.gs + k * HB;
    b.mx = b.A + HB;
    b.sum = b.mx + HB;
    b.yf = b.sum + HB;
    b.tiny = b.yf + HB;
    double (*block)(const vbs_loss_spec *, const float *, const float *, const uint8_t *, int64_t, int64_t, int, float, float *, float *,
                    const float *, const hblock *) = HETERO_BLOCK;
    double nll = 0, w = scale / (double)v;
    for (int64_t i0 = 0; i0 < v; i0 += HB) {
        int nb = v - i0 < HB ? (int)(v - i0) : HB;
        nll += block(s, z, lv, target, v, i0, nb, (float)w, dz, ds, eps, &b);
        for (int j = 0; j < nb; j++)
            if (b.tiny[j] != 0.f) nll += hetero_voxel(s, z, lv, target[i0 + j], v, i0 + j, w, dz, ds, eps);
    }
    return nll / (double)v;
}

size_t vbs_loss_work(const vbs_loss_spec *s, int64_t v) {
    int kk = s->sigmoid ? 2 : s->k;
    size_t n = (size_t)kk * (size_t)v * 2;                     /* probabilities and their gradient */
    if (s->hetero) n += (size_t)s->samples * (size_t)s->k * (size_t)v + hetero_block_floats(s); /* the noise, a block's scratch */
    return n + 64;
}

vbs_loss_parts vbs_loss_example(const vbs_loss_spec *s, const float *z, const float *lv, const uint8_t *target, int64_t v,
                                float scale, float *dz, float *ds, uint64_t seed, uint64_t key, float *work) {
    vbs_loss_parts r = {0, 0, 0};
    int kk = s->sigmoid ? 2 : s->k;
    float *p = work, *dp = work + (int64_t)kk * v;
    probabilities(s, z, v, p);
    /* soft Dice per term */
    if (s->n_terms > 0) {
        if (dz) memset(dp, 0, sizeof(float) * (size_t)(kk * v));
        double mean = 0;
        for (int t = 0; t < s->n_terms; t++) {
            uint64_t cls = s->term_classes[t];
            double P = 0, G = 0, I = 0;
            for (int64_t i = 0; i < v; i++) {
                double pt = 0;
                for (int c = 0; c < kk; c++)
                    if (cls >> c & 1) pt += p[c * v + i];
                double gt = cls >> target[i] & 1;
                P += pt;
                G += gt;
                I += pt * gt;
            }
            double den = P + G + s->smooth, num = 2 * I + s->smooth;
            mean += num / den;
            if (!dz) continue;
            /* d(-Dice_t / n_terms)/dp_t(v) = -(2 g den - num) / den^2 / n_terms, to each class of the term */
            double w = -(double)s->w_dice * scale / s->n_terms / (den * den);
            for (int64_t i = 0; i < v; i++) {
                double gt = cls >> target[i] & 1, d = w * (2 * gt * den - num);
                for (int c = 0; c < kk; c++)
                    if (cls >> c & 1) dp[c * v + i] += (float)d;
            }
        }
        r.dice = 1.0 - mean / s->n_terms;
        if (dz) { /* through the softmax (or the sigmoid pair) */
            for (int64_t i = 0; i < v; i++) {
                if (s->sigmoid) {
                    double q = p[v + i];
                    dz[i] += (float)(((double)dp[v + i] - dp[i]) * q * (1 - q));
                    continue;
                }
                double dot = 0;
                for (int c = 0; c < kk; c++) dot += (double)p[c * v + i] * dp[c * v + i];
                for (int c = 0; c < kk; c++) dz[c * v + i] += (float)(p[c * v + i] * ((double)dp[c * v + i] - dot));
            }
        }
    }
    if (s->hetero && lv) {
        float *eps = work + 2 * (int64_t)kk * v, *scratch = eps + (int64_t)s->samples * s->k * v;
        r.ce = hetero_nll(s, z, lv, target, v, s->w_ce * scale, dz, ds, seed, key, eps, scratch);
    } else {
        double ce = 0;
        for (int64_t i = 0; i < v; i++) ce -= log_prob(s, z, v, i, target[i]);
        r.ce = ce / (double)v;
        if (dz) {
            double w = (double)s->w_ce * scale / (double)v;
            for (int64_t i = 0; i < v; i++) {
                if (s->sigmoid) { dz[i] += (float)(w * ((double)p[v + i] - (target[i] != 0))); continue; }
                for (int c = 0; c < kk; c++) dz[c * v + i] += (float)(w * ((double)p[c * v + i] - (c == target[i])));
            }
        }
    }
    r.total = s->w_dice * r.dice + s->w_ce * r.ce;
    return r;
}

double vbs_latent_kl(const float *mean, const float *rho, int64_t n, float scale, float *dmean, float *drho) {
    double kl = 0;
    for (int64_t i = 0; i < n; i++) {
        double s = vbs_softplus(rho[i]), m = mean[i];
        if (s < 1e-30) s = 1e-30;
        kl += 0.5 * (s * s + m * m - 1) - log(s);
        if (dmean) {
            dmean[i] += (float)(scale * m);
            drho[i] += (float)(scale * (s - 1 / s) / (1 + exp(-(double)rho[i])));
        }
    }
    return kl;
}

vbs_loss_parts vbs_loss_probs(const vbs_loss_spec *s, const float *p, const uint8_t *target, int64_t v) {
    vbs_loss_parts r = {0, 0, 0};
    int kk = s->sigmoid ? 2 : s->k;
    double mean = 0, ce = 0;
    for (int t = 0; t < s->n_terms; t++) {
        uint64_t cls = s->term_classes[t];
        double P = 0, G = 0, I = 0;
        for (int64_t i = 0; i < v; i++) {
            double pt = 0, gt = cls >> target[i] & 1;
            for (int c = 0; c < kk; c++)
                if (cls >> c & 1) pt += p[c * v + i];
            P += pt; G += gt; I += pt * gt;
        }
        mean += (2 * I + s->smooth) / (P + G + s->smooth);
    }
    for (int64_t i = 0; i < v; i++) ce -= log(fmax(p[target[i] * v + i], 1e-12));
    r.dice = s->n_terms ? 1.0 - mean / s->n_terms : 0;
    r.ce = ce / (double)v;
    r.total = s->w_dice * r.dice + s->w_ce * r.ce;
    return r;
}
