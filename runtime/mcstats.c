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
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void vbs_mc_acc_free(vbs_mc_acc *a) {
    if (!a) return;
    free(a->sum_p); free(a->sum_p2); free(a->sum_h); free(a->sum_mu); free(a->sum_mu2); free(a->sum_var);
    memset(a, 0, sizeof *a);
}

vbs_status vbs_mc_acc_init(vbs_mc_acc *a, int64_t nvox, int k, vbs_output_act act, int hetero) {
    memset(a, 0, sizeof *a);
    a->nvox = nvox;
    a->k = k;
    a->act = act;
    a->hetero = hetero;
    size_t kn = (size_t)k * (size_t)nvox;
    a->sum_p = calloc(kn, sizeof(float));
    a->sum_p2 = calloc(kn, sizeof(float));
    a->sum_h = calloc((size_t)nvox, sizeof(float));
    if (hetero) {
        a->sum_mu = calloc(kn, sizeof(float));
        a->sum_mu2 = calloc(kn, sizeof(float));
        a->sum_var = calloc(kn, sizeof(float));
    }
    if (!a->sum_p || !a->sum_p2 || !a->sum_h || (hetero && (!a->sum_mu || !a->sum_mu2 || !a->sum_var))) {
        vbs_mc_acc_free(a);
        return VBS_ERR_NOMEM;
    }
    return VBS_OK;
}

static inline float xlogx(float p) { return p > 0.f ? p * logf(p) : 0.f; }

void vbs_mc_acc_add(vbs_mc_acc *a, int64_t off, int64_t cnt, const float *logits, const float *logvar) {
    int k = a->k;
    int64_t nv = a->nvox;
    for (int64_t i = 0; i < cnt; i++) {
        float p[64], h = 0.f;
        int kk = k < 64 ? k : 64;
        if (a->act == VBS_ACT_SIGMOID) {
            /* one channel per independent binary class */
            for (int c = 0; c < kk; c++) {
                float q = 1.f / (1.f + expf(-logits[c * cnt + i]));
                p[c] = q;
                h -= xlogx(q) + xlogx(1.f - q);
            }
        } else if (a->act == VBS_ACT_SOFTMAX) {
            float mx = logits[i], s = 0.f;
            for (int c = 1; c < kk; c++) mx = fmaxf(mx, logits[c * cnt + i]);
            for (int c = 0; c < kk; c++) { p[c] = expf(logits[c * cnt + i] - mx); s += p[c]; }
            for (int c = 0; c < kk; c++) { p[c] /= s; h -= xlogx(p[c]); }
        } else {
            for (int c = 0; c < kk; c++) { p[c] = logits[c * cnt + i]; h -= xlogx(p[c]); }
        }
        int64_t v = off + i;
        for (int c = 0; c < kk; c++) {
            a->sum_p[c * nv + v] += p[c];
            a->sum_p2[c * nv + v] += p[c] * p[c];
        }
        a->sum_h[v] += h;
        if (a->hetero && logvar)
            for (int c = 0; c < kk; c++) {
                float mu = logits[c * cnt + i];
                a->sum_mu[c * nv + v] += mu;
                a->sum_mu2[c * nv + v] += mu * mu;
                a->sum_var[c * nv + v] += expf(logvar[c * cnt + i]);
            }
    }
}

void vbs_mc_acc_commit(vbs_mc_acc *a) { a->n++; }

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
    float inv = a->n > 0 ? 1.f / (float)a->n : 0.f;
    switch (which) {
    case VBS_MAP_PROB_MEAN:
        for (int64_t i = 0; i < k * nv; i++) out[i] = a->sum_p[i] * inv;
        break;
    case VBS_MAP_PROB_VAR:
        for (int64_t i = 0; i < k * nv; i++) {
            float m = a->sum_p[i] * inv, v = a->sum_p2[i] * inv - m * m;
            out[i] = v > 0.f ? v : 0.f;
        }
        break;
    case VBS_MAP_LABELS:
        for (int64_t v = 0; v < nv; v++) {
            if (a->act == VBS_ACT_SIGMOID && k == 1) {
                out[v] = label_value(card, a->sum_p[v] * inv >= 0.5f ? 1 : 0);
                continue;
            }
            int best = 0;
            for (int c = 1; c < k; c++)
                if (a->sum_p[c * nv + v] > a->sum_p[best * nv + v]) best = c;
            out[v] = label_value(card, best);
        }
        break;
    case VBS_MAP_ENTROPY:
    case VBS_MAP_MUTUAL_INFO:
        for (int64_t v = 0; v < nv; v++) {
            float h = 0.f;
            for (int c = 0; c < k; c++) {
                float p = a->sum_p[c * nv + v] * inv;
                h -= xlogx(p);
                if (a->act == VBS_ACT_SIGMOID) h -= xlogx(1.f - p);
            }
            if (which == VBS_MAP_MUTUAL_INFO) {
                h -= a->sum_h[v] * inv;
                if (h < 0.f) h = 0.f; /* rounding; MI >= 0 */
            }
            out[v] = h;
        }
        break;
    case VBS_MAP_EXPECTED_ENTROPY:
        for (int64_t v = 0; v < nv; v++) out[v] = a->sum_h[v] * inv;
        break;
    case VBS_MAP_HET_ALEATORIC:
        for (int64_t i = 0; i < k * nv; i++) out[i] = a->sum_var[i] * inv;
        break;
    case VBS_MAP_HET_EPISTEMIC:
        for (int64_t i = 0; i < k * nv; i++) {
            float m = a->sum_mu[i] * inv, v = a->sum_mu2[i] * inv - m * m;
            out[i] = v > 0.f ? v : 0.f;
        }
        break;
    default: break;
    }
}
