/*
 * preprocess.c: intensity normalisation as the model card prescribes
 * (the nnU-Net/BraTS conventions): z-score over the brain's non-zero
 * voxels, or percentile clipping. Statistics in double.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int cmp(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

vbs_status vbs_normalize(const vbs_card *card, float *data, int channels, int64_t nvox) {
    if (!card || !data || channels < 1 || nvox < 1) return VBS_ERR_ARG;
    for (int c = 0; c < channels; c++) {
        float *x = data + (int64_t)c * nvox;
        if (card->normalization == VBS_NORM_ZSCORE_NONZERO) {
            double s = 0, s2 = 0;
            int64_t n = 0;
            for (int64_t i = 0; i < nvox; i++)
                if (x[i] != 0.f) { s += x[i]; n++; }
            if (!n) continue;
            double mean = s / (double)n;
            for (int64_t i = 0; i < nvox; i++)
                if (x[i] != 0.f) s2 += (x[i] - mean) * (x[i] - mean);
            double sd = sqrt(s2 / (double)n);
            if (sd < 1e-8) sd = 1;
            for (int64_t i = 0; i < nvox; i++)
                if (x[i] != 0.f) x[i] = (float)((x[i] - mean) / sd);
        } else if (card->normalization == VBS_NORM_PERCENTILE) {
            float *tmp = malloc(sizeof(float) * (size_t)nvox);
            if (!tmp) return VBS_ERR_NOMEM;
            memcpy(tmp, x, sizeof(float) * (size_t)nvox);
            qsort(tmp, (size_t)nvox, sizeof(float), cmp);
            double plo = card->percentile_lo, phi = card->percentile_hi > 0 ? card->percentile_hi : 100;
            float lo = tmp[(int64_t)((nvox - 1) * fmin(fmax(plo, 0), 100) / 100)];
            float hi = tmp[(int64_t)((nvox - 1) * fmin(fmax(phi, 0), 100) / 100)];
            free(tmp);
            float range = hi > lo ? hi - lo : 1.f;
            for (int64_t i = 0; i < nvox; i++) {
                float v = x[i] < lo ? lo : (x[i] > hi ? hi : x[i]);
                x[i] = (v - lo) / range;
            }
        }
    }
    return VBS_OK;
}
