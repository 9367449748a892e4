/*
 * geo.h: the geometry of a sliding-window op with its spatial dims
 * expanded to three (leading dims of size 1), so that one loop nest
 * serves 1D, 2D and 3D. Header-only; used by conv, conv_transpose, pool.
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

#endif
