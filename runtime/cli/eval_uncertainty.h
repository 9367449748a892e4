/*
 * eval_uncertainty.h: the uncertainty quality of `vbseg eval`
 * (eval_uncertainty.c). All of it is over the voxels that either side
 * labels (prediction or reference non-zero); volumes are x*y*z floats, x
 * fastest, borrowed.
 */
#ifndef VBS_CLI_EVAL_UNCERTAINTY_H
#define VBS_CLI_EVAL_UNCERTAINTY_H

#include <stdint.h>
#include <stdio.h>

#define EU_BINS 15    /* confidence bins of the ECE and the reliability rows */
#define EU_DECILES 10 /* uncertainty ranks of the uncertainty rows */

/* One labelled voxel of an uncertainty map. */
typedef struct { int64_t i; float u; unsigned char wrong; } eu_voxel;

/* The --curves data pooled over cases: sums per bin, filled by eu_ece and
 * eu_add_deciles, started by eu_curves_init. */
typedef struct {
    int64_t rel_n[EU_BINS];
    double rel_hit[EU_BINS], rel_conf[EU_BINS]; /* right voxels, sum of the max probability */
    int rel_cases;                              /* cases with probabilities */
    int64_t dec_n[EU_DECILES];
    double dec_wrong[EU_DECILES], dec_u[EU_DECILES], dec_lo[EU_DECILES], dec_hi[EU_DECILES];
    int dec_cases;                              /* cases with an uncertainty map */
} eu_curves;

void eu_curves_init(eu_curves *c);

/* How many voxels of pv, tv (nv each) either side labels. */
int64_t eu_labelled(const float *pv, const float *tv, int64_t nv);

/* Fills s (room for eu_labelled voxels) with the labelled voxels of the map u
 * and their right/wrong (pv != tv), ranked most uncertain first, ties in u
 * by voxel index (the earlier voxel in file order counts as more uncertain).
 * Returns their count. */
int64_t eu_rank(const float *u, const float *pv, const float *tv, int64_t nv, eu_voxel *s);

/* AUROC of u for finding the wrong voxels among the k ranked s (ties counted
 * half); nan when all are right or all wrong. */
double eu_auroc(const eu_voxel *s, int64_t k);

/* How many of k ranked voxels --discard f drops: ceil(f * k), at most k. */
int64_t eu_discard_count(double f, int64_t k);

/* Adds the k ranked voxels of one case to c's uncertainty deciles: decile
 * 9 - floor(10 p / k) for rank p (0 = most uncertain), so decile 9 holds the
 * ceil(k / 10) most uncertain, the voxels --discard 0.1 drops. */
void eu_add_deciles(eu_curves *c, const eu_voxel *s, int64_t k);

/* Expected calibration error (EU_BINS equal bins of the max probability over
 * [0, 1]) of one case's probabilities prob (classes volumes of nv) against
 * whether pv equals tv; nan without labelled voxels. Adds the case's bins
 * to c when c is not NULL. */
double eu_ece(const float *prob, int64_t classes, const float *pv, const float *tv, int64_t nv, eu_curves *c);

/* The --curves CSV (header, EU_BINS reliability rows, EU_DECILES uncertainty
 * rows; nan for the means of empty bins) to f. */
void eu_curves_write(FILE *f, const eu_curves *c);

#endif
