/*
 * geo.h: the geometry of a sliding-window op with its spatial dims
 * expanded to three (leading dims of size 1), so that one loop nest
 * serves 1D, 2D and 3D; used by conv, conv_transpose, pool. Also the
 * im2col tiles conv.c defines and conv_transpose.c's backward reuses
 * (the gradient of a transposed convolution is a convolution).
 */
#ifndef VBS_OPS_GEO_H
#define VBS_OPS_GEO_H

#include "../internal.h"

typedef struct {
    int64_t in[3], out[3], k[3], s[3], d[3], pb[3];
    int64_t in_sz, out_sz, k_sz;   /* products */
} vbs_geo;

/* x: input (or, for ConvTranspose, the "small" side) spatial shape;
 * y: the other side; k: kernel dims (may be NULL for pools: from attrs). */
static inline void vbs_geo_make(vbs_geo *g, const vbs_window_attr *w, const vbs_shape *x, const vbs_shape *y,
                                const int64_t *k) {
    int nsp = x->ndim - 2, off = 3 - nsp;
    for (int i = 0; i < 3; i++) {
        g->in[i] = g->out[i] = g->k[i] = g->s[i] = g->d[i] = 1;
        g->pb[i] = 0;
    }
    for (int i = 0; i < nsp; i++) {
        g->in[off + i] = x->d[2 + i];
        g->out[off + i] = y->d[2 + i];
        g->k[off + i] = k ? k[i] : w->kernel[i];
        g->s[off + i] = w->stride[i];
        g->d[off + i] = w->dil[i];
        g->pb[off + i] = w->pad[i];
    }
    g->in_sz = g->in[0] * g->in[1] * g->in[2];
    g->out_sz = g->out[0] * g->out[1] * g->out[2];
    g->k_sz = g->k[0] * g->k[1] * g->k[2];
}

/* 1x1, stride 1, no padding: the input is its own im2col matrix. */
static inline int vbs_geo_pointwise(const vbs_geo *g) {
    for (int i = 0; i < 3; i++)
        if (g->k[i] != 1 || g->s[i] != 1 || g->pb[i] != 0 || g->in[i] != g->out[i]) return 0;
    return 1;
}

/* The geometry seen from the other side: in and out swapped. A transposed
 * convolution's output relates to its input as a convolution's input to
 * its output (out = in * s - pb + k * d), so its backward runs conv tiles. */
static inline vbs_geo vbs_geo_swap(const vbs_geo *g) {
    vbs_geo h = *g;
    for (int i = 0; i < 3; i++) { h.in[i] = g->out[i]; h.out[i] = g->in[i]; }
    h.in_sz = g->out_sz;
    h.out_sz = g->in_sz;
    return h;
}

/* db[c] += the sum of dy over n images of m channels of sz values. Eight
 * partial sums so the loop vectorises without reassociation flags. */
static inline void vbs_channel_sums_add(const float *dy, int64_t n, int64_t m, int64_t sz, float *db) {
    for (int64_t c = 0; c < m; c++) {
        float acc[8] = {0};
        for (int64_t b = 0; b < n; b++) {
            const float *p = dy + (b * m + c) * sz;
            int64_t i = 0;
            for (; i + 8 <= sz; i += 8)
                for (int j = 0; j < 8; j++) acc[j] += p[i + j];
            for (; i < sz; i++) acc[i & 7] += p[i];
        }
        db[c] += ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    }
}

/* The backward's im2col tile: 4 MiB. Its GEMMs accumulate into dW (M x kc),
 * which forward-sized tiles (512 KiB) would sweep once per few output rows:
 * at 16x16 with 256 channels, every 48 columns. */
#define VBS_BWD_TILE_FLOATS (1 << 20)

/* The naive backward kernels' shared sums, in double. */
/* db[c] += the sum of dy over n images of m channels of sz values */
static inline void vbs_naive_channel_sums_add(const float *dy, int64_t n, int64_t m, int64_t sz, float *db) {
    for (int64_t c = 0; c < m; c++) {
        double s = 0;
        for (int64_t b = 0; b < n; b++)
            for (int64_t i = 0; i < sz; i++) s += dy[(b * m + c) * sz + i];
        db[c] += (float)s;
    }
}

/* A weight's gradient: the sum over n < nb images and every position o of
 * the output side (g->out) of small[o] * big[i], i = o * s - pb + k * d
 * inside the input side (g->in), for kernel offset (kd, kh, kw). small and
 * big point at one channel of image 0; sn and bn step to the next image.
 * For Conv small is dY and big X; for ConvTranspose, on the swapped
 * geometry, small is X and big dY. */
static inline double vbs_naive_window_dot(const vbs_geo *g, int64_t kd, int64_t kh, int64_t kw, const float *small, int64_t sn,
                                          const float *big, int64_t bn, int64_t nb) {
    double s = 0;
    for (int64_t n = 0; n < nb; n++)
        for (int64_t od = 0; od < g->out[0]; od++)
            for (int64_t oh = 0; oh < g->out[1]; oh++)
                for (int64_t ow = 0; ow < g->out[2]; ow++) {
                    int64_t id = od * g->s[0] - g->pb[0] + kd * g->d[0];
                    int64_t ih = oh * g->s[1] - g->pb[1] + kh * g->d[1];
                    int64_t iw = ow * g->s[2] - g->pb[2] + kw * g->d[2];
                    if (id < 0 || id >= g->in[0] || ih < 0 || ih >= g->in[1] || iw < 0 || iw >= g->in[2]) continue;
                    s += (double)small[n * sn + (od * g->out[1] + oh) * g->out[2] + ow] * big[n * bn + (id * g->in[1] + ih) * g->in[2] + iw];
                }
    return s;
}

/* conv.c: columns per im2col tile of about tile_floats (whole output rows)
 * for kc rows. */
int64_t vbs_im2col_cols(const vbs_geo *g, int64_t kc, int64_t tile_floats);
/* conv.c: unrolls output positions [o0, o0+ncol) (whole rows) of channels
 * 0..cg of one image x (cg x in_sz) into col (cg*k_sz rows of ncol). */
void vbs_im2col_tile(const vbs_geo *g, const float *x, int64_t cg, int64_t o0, int64_t ncol, float *col);

#endif
