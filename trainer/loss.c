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
 * Everything is accumulated in double.
 */
#include <math.h>
#include <string.h>

#include "trainer.h"

size_t vbs_loss_work(const vbs_loss_spec *s, int64_t v) {
    int kk = s->sigmoid ? 2 : s->k;
    size_t n = (size_t)kk * (size_t)v * 2;                     /* probabilities and their gradient */
    if (s->hetero) n += (size_t)s->samples * (size_t)s->k * (size_t)v + (size_t)s->samples * (size_t)v;
    return n + 64;
}

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

/* -log (1/T) sum_t softmax(z + sigma eps_t)[target] per voxel, and its gradient (scaled) into dz, ds */
static double hetero_nll(const vbs_loss_spec *s, const float *z, const float *lv, const uint8_t *target, int64_t v, float scale,
                         float *dz, float *ds, uint64_t seed, uint64_t key, float *eps, float *a) {
    int k = s->k, T = s->samples;
    for (int t = 0; t < T; t++) vbs_randn(seed, key, 0x40000000u + (uint32_t)t, 0, (int64_t)k * v, eps + (int64_t)t * k * v);
    double nll = 0;
    for (int64_t i = 0; i < v; i++) {
        int y = target[i];
        double A = 0, q[64];
        /* a_t = p_t(target) for each noise draw */
        for (int t = 0; t < T; t++) {
            const float *e = eps + (int64_t)t * k * v;
            double at;
            if (s->sigmoid) {
                double x = z[i] + exp(0.5 * lv[i]) * e[i], qq = 1.0 / (1.0 + exp(-x));
                at = y ? qq : 1 - qq;
            } else {
                double mx = -INFINITY, sum = 0;
                for (int c = 0; c < k; c++) { q[c] = z[c * v + i] + exp(0.5 * lv[c * v + i]) * e[c * v + i]; mx = fmax(mx, q[c]); }
                for (int c = 0; c < k; c++) sum += (q[c] = exp(q[c] - mx));
                at = q[y] / sum;
            }
            a[(int64_t)t * v + i] = (float)at;
            A += at;
        }
        if (!(A > 1e-300)) A = 1e-300;
        nll -= log(A / T);
        if (!dz) continue;
        /* dL/dx_t = (a_t / A) (q_t - onehot) for softmax; -(1/A) da_t/dx for the sigmoid */
        for (int t = 0; t < T; t++) {
            const float *e = eps + (int64_t)t * k * v;
            double w = scale / (double)v;
            if (s->sigmoid) {
                double sg = exp(0.5 * lv[i]), x = z[i] + sg * e[i], qq = 1.0 / (1.0 + exp(-x));
                double dx = -(1.0 / A) * (y ? 1.0 : -1.0) * qq * (1 - qq) * w;
                dz[i] += (float)dx;
                ds[i] += (float)(dx * e[i] * sg * 0.5);
                continue;
            }
            double mx = -INFINITY, sum = 0, at = a[(int64_t)t * v + i] / A;
            for (int c = 0; c < k; c++) { q[c] = z[c * v + i] + exp(0.5 * lv[c * v + i]) * e[c * v + i]; mx = fmax(mx, q[c]); }
            for (int c = 0; c < k; c++) sum += (q[c] = exp(q[c] - mx));
            for (int c = 0; c < k; c++) {
                double dx = at * (q[c] / sum - (c == y)) * w;
                dz[c * v + i] += (float)dx;
                ds[c * v + i] += (float)(dx * e[c * v + i] * exp(0.5 * lv[c * v + i]) * 0.5);
            }
        }
    }
    return nll / (double)v;
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
        float *eps = work + 2 * (int64_t)kk * v, *a = eps + (int64_t)s->samples * s->k * v;
        r.ce = hetero_nll(s, z, lv, target, v, s->w_ce * scale, dz, ds, seed, key, eps, a);
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
