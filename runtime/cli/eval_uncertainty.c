/*
 * eval_uncertainty.c: how good the uncertainty is, for `vbseg eval`: the
 * AUROC of an uncertainty map for finding wrong voxels, the expected
 * calibration error of the mean probabilities, the voxels that --discard
 * drops (the most uncertain), and the pooled data of the --curves file
 * (reliability bins; error rate by uncertainty decile). Everything is over
 * the voxels that either side labels: the voxels neither labels change no
 * Dice and would swamp the rates. It reads and writes no files and knows no
 * label regions (eval.c does both).
 */
#include <math.h>
#include <stdlib.h>

#include "eval_uncertainty.h"

void eu_curves_init(eu_curves *c) {
    *c = (eu_curves){0};
    for (int d = 0; d < EU_DECILES; d++) {
        c->dec_lo[d] = INFINITY;
        c->dec_hi[d] = -INFINITY;
    }
}

int64_t eu_labelled(const float *pv, const float *tv, int64_t nv) {
    int64_t k = 0;
    for (int64_t i = 0; i < nv; i++) k += pv[i] != 0 || tv[i] != 0;
    return k;
}

/* most uncertain first; equal u: the lower voxel index first, so that the
 * order (and what --discard drops) never depends on qsort's */
static int cmp_rank(const void *a, const void *b) {
    const eu_voxel *x = a, *y = b;
    if (x->u != y->u) return x->u > y->u ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

int64_t eu_rank(const float *u, const float *pv, const float *tv, int64_t nv, eu_voxel *s) {
    int64_t k = 0;
    for (int64_t i = 0; i < nv; i++)
        if (pv[i] != 0 || tv[i] != 0) s[k++] = (eu_voxel){i, u[i], pv[i] != tv[i]};
    qsort(s, (size_t)k, sizeof *s, cmp_rank);
    return k;
}

double eu_auroc(const eu_voxel *s, int64_t k) {
    int64_t pos = 0;
    for (int64_t i = 0; i < k; i++) pos += s[i].wrong;
    if (!pos || pos == k) return NAN;
    /* Mann-Whitney: the sum of the ascending ranks of the wrong voxels; rank p
     * of the descending order is k - p ascending (1-based). The sums are of
     * half-integers, exact in double, so the order of summing does not matter. */
    double rank_sum = 0;
    for (int64_t i = 0; i < k;) {
        int64_t j = i;
        while (j < k && s[j].u == s[i].u) j++;
        double avg = 0.5 * (double)(2 * k - i - j + 1); /* the average ascending rank of the tie block */
        for (int64_t q = i; q < j; q++)
            if (s[q].wrong) rank_sum += avg;
        i = j;
    }
    double neg = (double)(k - pos);
    return (rank_sum - (double)pos * ((double)pos + 1) / 2) / ((double)pos * neg);
}

int64_t eu_discard_count(double f, int64_t k) {
    if (f <= 0 || k <= 0) return 0;
    /* f * k carries the rounding of f's decimal (0.1 * 30 is 3.0000000000000004):
     * a relative 1e-12 below it keeps ceil at the decimal's exact value */
    double x = f * (double)k;
    int64_t d = (int64_t)ceil(x - 1e-12 * x);
    return d > k ? k : d;
}

void eu_add_deciles(eu_curves *c, const eu_voxel *s, int64_t k) {
    c->dec_cases++;
    for (int64_t p = 0; p < k; p++) {
        int d = EU_DECILES - 1 - (int)(p * EU_DECILES / k);
        double u = s[p].u;
        c->dec_n[d]++;
        c->dec_wrong[d] += s[p].wrong;
        c->dec_u[d] += u;
        if (u < c->dec_lo[d]) c->dec_lo[d] = u;
        if (u > c->dec_hi[d]) c->dec_hi[d] = u;
    }
}

double eu_ece(const float *prob, int64_t classes, const float *pv, const float *tv, int64_t nv, eu_curves *c) {
    double bc[EU_BINS] = {0}, bacc[EU_BINS] = {0}, bconf[EU_BINS] = {0}, tot = 0;
    for (int64_t i = 0; i < nv; i++) {
        if (pv[i] == 0 && tv[i] == 0) continue;
        float conf = 0;
        for (int64_t q = 0; q < classes; q++) conf = fmaxf(conf, prob[q * nv + i]);
        int bin = (int)(conf * EU_BINS);
        if (bin > EU_BINS - 1) bin = EU_BINS - 1;
        if (bin < 0) bin = 0;
        bc[bin]++;
        bacc[bin] += pv[i] == tv[i];
        bconf[bin] += conf;
        tot++;
    }
    if (c) {
        c->rel_cases++;
        for (int q = 0; q < EU_BINS; q++) {
            c->rel_n[q] += (int64_t)bc[q];
            c->rel_hit[q] += bacc[q];
            c->rel_conf[q] += bconf[q];
        }
    }
    if (!(tot > 0)) return NAN;
    double ece = 0;
    for (int q = 0; q < EU_BINS; q++)
        if (bc[q] > 0) ece += bc[q] / tot * fabs(bacc[q] / bc[q] - bconf[q] / bc[q]);
    return ece;
}

void eu_curves_write(FILE *f, const eu_curves *c) {
    fprintf(f, "kind,bin,lo,hi,count,mean,rate\n");
    for (int q = 0; q < EU_BINS; q++) {
        int64_t n = c->rel_n[q];
        fprintf(f, "reliability,%d,%.8g,%.8g,%lld,%.8g,%.8g\n", q, (double)q / EU_BINS, (double)(q + 1) / EU_BINS, (long long)n,
                n ? c->rel_conf[q] / (double)n : NAN, n ? c->rel_hit[q] / (double)n : NAN);
    }
    for (int d = 0; d < EU_DECILES; d++) {
        int64_t n = c->dec_n[d];
        fprintf(f, "uncertainty,%d,%.8g,%.8g,%lld,%.8g,%.8g\n", d, n ? c->dec_lo[d] : NAN, n ? c->dec_hi[d] : NAN, (long long)n,
                n ? c->dec_u[d] / (double)n : NAN, n ? c->dec_wrong[d] / (double)n : NAN);
    }
}
