/*
 * mcstats.c: streaming Monte-Carlo statistics. Each sample's class
 * probabilities are folded into per-voxel sums (p, p^2, entropy; and for a
 * heteroscedastic head the logit mean, its square and the predicted
 * variance), from which the maps are computed at the end:
 *   mean p, var p, labels, predictive entropy H[E p],
 *   expected entropy E[H p] (aleatoric), mutual information (epistemic),
 *   and the seed paper's eq. (10)-(11) split for heteroscedastic heads:
 *   aleatoric = mean of predicted variances, epistemic = variance of
 *   predicted means (both on the logit scale).
 * Entropies are in nats. Samples are added in sample order by the caller,
 * so the float sums are the same whatever the thread count.
 *
 * Activation NONE means the graph outputs probabilities itself: one
 * channel is P(foreground), read like a sigmoid head (binary entropy, 0.5
 * threshold); K > 1 channels are class probabilities, read like a softmax
 * head. Such values are never trusted: those outside [0, 1] and K > 1
 * sums away from 1 are counted for vbs_mc_acc_check (the session turns
 * them into an error) and clamped, so no entropy takes the log of a
 * negative "probability". This file is not the place that decides the
 * activation (the model card and vbseg convert do).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void vbs_mc_acc_free(vbs_mc_acc *a) {
    if (!a) return;
    free(a->mean_p); free(a->m2_p); free(a->mean_h); free(a->mean_mu); free(a->m2_mu); free(a->mean_var); free(a->counts);
    memset(a, 0, sizeof *a);
}

vbs_status vbs_mc_acc_init(vbs_mc_acc *a, int64_t nvox, int k, vbs_output_act act, int hetero) {
    memset(a, 0, sizeof *a);
    a->nvox = nvox;
    a->k = k;
    a->act = act;
    a->hetero = hetero;
    a->lo = a->sum_lo = INFINITY;
    a->hi = a->sum_hi = -INFINITY;
    size_t kn = (size_t)k * (size_t)nvox;
    a->mean_p = calloc(kn, sizeof(float));
    a->m2_p = calloc(kn, sizeof(float));
    a->mean_h = calloc((size_t)nvox, sizeof(float));
    if (hetero) {
        a->mean_mu = calloc(kn, sizeof(float));
        a->m2_mu = calloc(kn, sizeof(float));
        a->mean_var = calloc(kn, sizeof(float));
    }
    if (!a->mean_p || !a->m2_p || !a->mean_h || (hetero && (!a->mean_mu || !a->m2_mu || !a->mean_var))) {
        vbs_mc_acc_free(a);
        return VBS_ERR_NOMEM;
    }
    return VBS_OK;
}

static inline float xlogx(float p) { return p > 0.f ? p * logf(p) : 0.f; }

/* Rounding allowed around [0, 1] and around a sum of 1 for the graph's own
 * probabilities (a float softmax over 64 classes is off by ~1e-6). */
#define PROB_TOL 1e-5f
#define SUM_TOL 1e-4f

/* Channels read as independent binary probabilities: sigmoid heads, and a
 * single channel of the graph's own probability. */
static int binary(const vbs_mc_acc *a) { return a->act == VBS_ACT_SIGMOID || (a->act == VBS_ACT_NONE && a->k == 1); }

/* The graph's own probabilities of one voxel (k values, stride cnt) into
 * p[], checked and clamped into [0, 1]. */
static void own_probs(vbs_mc_acc *a, const float *x, int64_t cnt, int k, float *p) {
    float s = 0.f;
    for (int c = 0; c < k; c++) {
        float v = x[c * cnt];
        if (!(v >= -PROB_TOL && v <= 1.f + PROB_TOL)) {
            a->n_out_of_range++;
            a->n_nan += v != v;
        }
        a->lo = fminf(a->lo, v); /* fminf/fmaxf skip NaN */
        a->hi = fmaxf(a->hi, v);
        s += v;
        p[c] = fminf(fmaxf(v, 0.f), 1.f); /* NaN -> 0 */
    }
    if (k > 1) {
        if (!(fabsf(s - 1.f) <= SUM_TOL)) a->n_bad_sum++;
        a->sum_lo = fminf(a->sum_lo, s);
        a->sum_hi = fmaxf(a->sum_hi, s);
    }
}

static inline void welford(float *mean, float *m2, float x, float inv_n) {
    float d = x - *mean;
    *mean += d * inv_n;
    *m2 += d * (x - *mean);
}

static void add(vbs_mc_acc *a, int64_t off, int64_t cnt, int64_t nth, const float *probs, const float *logits, const float *logvar);

void vbs_mc_acc_add(vbs_mc_acc *a, int64_t off, int64_t cnt, int64_t nth, const float *logits, const float *logvar) {
    add(a, off, cnt, nth, NULL, logits, logvar);
}

void vbs_mc_acc_add_probs(vbs_mc_acc *a, int64_t off, int64_t cnt, int64_t nth, const float *probs, const float *logits,
                          const float *logvar) {
    add(a, off, cnt, nth, probs, logits, logvar);
}

/* probs: class probabilities given (blended windows), else from logits */
static void add(vbs_mc_acc *a, int64_t off, int64_t cnt, int64_t nth, const float *probs, const float *logits, const float *logvar) {
    int k = a->k;
    int64_t nv = a->nvox;
    float inv = 1.f / (float)nth;
    /* per-sample label volumes (for their spread across samples) */
    if (nth > a->counts_cap) {
        int64_t cap = a->counts_cap ? 2 * a->counts_cap : 64;
        while (cap < nth) cap *= 2;
        int64_t *c = realloc(a->counts, sizeof(int64_t) * (size_t)(cap * k));
        if (c) {
            memset(c + a->counts_cap * k, 0, sizeof(int64_t) * (size_t)((cap - a->counts_cap) * k));
            a->counts = c;
            a->counts_cap = cap;
        } else a->counts_lost = 1; /* the maps go on; vbs_session_label_counts then refuses */
    }
    int64_t *vol = nth <= a->counts_cap && !a->counts_lost ? a->counts + (nth - 1) * k : NULL;
    for (int64_t i = 0; i < cnt; i++) {
        float p[64], h = 0.f;
        int kk = k < 64 ? k : 64;
        if (probs || a->act == VBS_ACT_NONE) {
            /* given: blended windows (the session applied the activation) or the graph's own */
            const float *x = probs ? probs + i : logits + i;
            if (a->act == VBS_ACT_NONE) own_probs(a, x, cnt, kk, p);
            else
                for (int c = 0; c < kk; c++) p[c] = x[c * cnt];
            for (int c = 0; c < kk; c++) {
                h -= xlogx(p[c]);
                if (binary(a)) h -= xlogx(1.f - p[c]);
            }
        } else if (a->act == VBS_ACT_SIGMOID) {
            /* one channel per independent binary class */
            for (int c = 0; c < kk; c++) {
                float q = 1.f / (1.f + expf(-logits[c * cnt + i]));
                p[c] = q;
                h -= xlogx(q) + xlogx(1.f - q);
            }
        } else { /* softmax */
            float mx = logits[i], s = 0.f;
            for (int c = 1; c < kk; c++) mx = fmaxf(mx, logits[c * cnt + i]);
            for (int c = 0; c < kk; c++) { p[c] = expf(logits[c * cnt + i] - mx); s += p[c]; }
            for (int c = 0; c < kk; c++) { p[c] /= s; h -= xlogx(p[c]); }
        }
        int64_t v = off + i;
        if (vol) {
            if (binary(a) && kk == 1) vol[0] += p[0] >= 0.5f; /* one binary class: foreground voxels */
            else {
                int best = 0;
                for (int c = 1; c < kk; c++)
                    if (p[c] > p[best]) best = c;
                vol[best]++;
            }
        }
        for (int c = 0; c < kk; c++) welford(&a->mean_p[c * nv + v], &a->m2_p[c * nv + v], p[c], inv);
        a->mean_h[v] += (h - a->mean_h[v]) * inv;
        if (a->hetero && logvar && logits)
            for (int c = 0; c < kk; c++) {
                welford(&a->mean_mu[c * nv + v], &a->m2_mu[c * nv + v], logits[c * cnt + i], inv);
                a->mean_var[c * nv + v] += (expf(logvar[c * cnt + i]) - a->mean_var[c * nv + v]) * inv;
            }
    }
}

void vbs_mc_acc_commit(vbs_mc_acc *a) { a->n++; }

vbs_status vbs_mc_acc_check(const vbs_mc_acc *a, const char *output, char *err) {
    if (a->act != VBS_ACT_NONE) return VBS_OK;
    if (a->n_out_of_range)
        return vbs_fail(err, VBS_ERR_NUMERIC,
                        "output '%s' has values from %.4g to %.4g%s, outside [0, 1], but the model card's output_activation is "
                        "none (the graph outputs probabilities): these are raw logits; convert again with output_activation "
                        "%s in the card, or without it to let vbseg convert infer it",
                        output, (double)a->lo, (double)a->hi, a->n_nan ? " and NaN" : "", a->k > 1 ? "softmax" : "sigmoid");
    if (a->n_bad_sum)
        return vbs_fail(err, VBS_ERR_NUMERIC,
                        "output '%s' has class probabilities summing to %.4g .. %.4g over its %d channels, not 1, but the model "
                        "card's output_activation is none, which reads them as the probabilities of %d classes: for independent "
                        "per-channel probabilities (a final Sigmoid) export the graph without it and convert with "
                        "output_activation sigmoid",
                        output, (double)a->sum_lo, (double)a->sum_hi, a->k, a->k);
    return VBS_OK;
}

int64_t vbs_mc_map_size(const vbs_mc_acc *a, vbs_map which) {
    switch (which) {
    case VBS_MAP_PROB_MEAN: case VBS_MAP_PROB_VAR: case VBS_MAP_HET_ALEATORIC: case VBS_MAP_HET_EPISTEMIC:
        return a->k * a->nvox;
    default: return a->nvox;
    }
}

static float label_value(const vbs_card *card, int cls) {
    if (card && card->n_labels > cls) return (float)card->labels[cls].value;
    return (float)cls;
}

void vbs_mc_acc_map(const vbs_mc_acc *a, vbs_map which, const vbs_card *card, float *out) {
    int64_t nv = a->nvox;
    int k = a->k;
    float inv = a->n > 0 ? 1.f / (float)a->n : 0.f; /* for the m2 fields */
    switch (which) {
    case VBS_MAP_PROB_MEAN:
        memcpy(out, a->mean_p, sizeof(float) * (size_t)(k * nv));
        break;
    case VBS_MAP_PROB_VAR:
        for (int64_t i = 0; i < k * nv; i++) out[i] = a->m2_p[i] * inv;
        break;
    case VBS_MAP_LABELS:
        for (int64_t v = 0; v < nv; v++) {
            if (binary(a) && k == 1) {
                out[v] = label_value(card, a->mean_p[v] >= 0.5f ? 1 : 0);
                continue;
            }
            int best = 0;
            for (int c = 1; c < k; c++)
                if (a->mean_p[c * nv + v] > a->mean_p[best * nv + v]) best = c;
            out[v] = label_value(card, best);
        }
        break;
    case VBS_MAP_ENTROPY:
    case VBS_MAP_MUTUAL_INFO:
        for (int64_t v = 0; v < nv; v++) {
            float h = 0.f;
            for (int c = 0; c < k; c++) {
                float p = a->mean_p[c * nv + v];
                h -= xlogx(p);
                if (binary(a)) h -= xlogx(1.f - p);
            }
            if (which == VBS_MAP_MUTUAL_INFO) {
                h -= a->mean_h[v];
                if (h < 0.f) h = 0.f; /* rounding; MI >= 0 */
            }
            out[v] = h;
        }
        break;
    case VBS_MAP_EXPECTED_ENTROPY:
        memcpy(out, a->mean_h, sizeof(float) * (size_t)nv);
        break;
    case VBS_MAP_HET_ALEATORIC:
        memcpy(out, a->mean_var, sizeof(float) * (size_t)(k * nv));
        break;
    case VBS_MAP_HET_EPISTEMIC:
        for (int64_t i = 0; i < k * nv; i++) out[i] = a->m2_mu[i] * inv;
        break;
    default: break;
    }
}
