/*
 * conv_winograd.c: the fast path of Conv for the commonest layer of a
 * segmentation U-Net: 2D, 3x3, stride 1, dilation 1, group 1, any pads.
 * Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray, 2016) turns
 * each 4x4 output tile into 36 independent products, so the 36 GEMMs
 * below do 4x fewer multiplies than direct convolution:
 *   U[xi] (M x C)  = G g G^T      weight transform, per pass (weights are drawn per pass)
 *   V[xi] (C x T)  = B^T d B      input transform of 6x6 tiles, 8 tiles at a time
 *   Mx[xi] (M x T) = U[xi] V[xi]  36 sgemm calls
 *   y              = A^T Mx A     output transform, + bias
 * Float error grows with the tile size; F(4x4, 3x3) stays within 1e-5
 * relative on these layers (test_ops checks it against the naive kernel).
 * Not a separate op: conv.c calls it when the geometry fits.
 */
#include <string.h>

#include "geo.h"
#include "ops.h"

#define WT 8 /* tiles per transform chunk: one AVX vector across tiles */

int vbs_winograd_fits(const vbs_node *n, const vbs_shape *x, const vbs_shape *w) {
    const vbs_window_attr *a = &n->a.win;
    return x->ndim == 4 && w->d[2] == 3 && w->d[3] == 3 && a->stride[0] == 1 && a->stride[1] == 1 && a->dil[0] == 1 &&
           a->dil[1] == 1 && a->group == 1;
}

static void tiles(const vbs_shape *y, int64_t *th, int64_t *tw) {
    *th = (y->d[2] + 3) / 4;
    *tw = (y->d[3] + 3) / 4;
}

/* Tile rows per block: V and Mx of a block (36 (C + M) floats a tile) stay
 * within about 1 MiB of cache, but a block keeps at least 64 tiles so the
 * GEMMs do not shrink to nothing. */
static int64_t block_rows(int64_t c, int64_t m, int64_t th, int64_t tw) {
    int64_t per_row = 36 * (c + m) * tw * 4, rows = ((int64_t)1 << 20) / (per_row > 0 ? per_row : 1);
    while (rows * tw < 64 && rows < th) rows++;
    if (rows < 1) rows = 1;
    return rows < th ? rows : th;
}

size_t vbs_winograd_work(const vbs_node *n, const vbs_shape *in, const vbs_shape *out) {
    (void)n;
    int64_t th, tw, c = in[0].d[1], m = in[1].d[0];
    tiles(out, &th, &tw);
    int64_t t = block_rows(c, m, th, tw) * tw;
    return (size_t)(36 * (m * c + c * t + m * t));
}

/* U[xi][m][c] = (G g G^T)[xi], 8 filters at a time so stores are runs. */
static inline __attribute__((always_inline)) void weight_body(const float *w, int64_t mc, float *u) {
    static const float G[6][3] = {{0.25f, 0, 0},
                                  {-1.f / 6, -1.f / 6, -1.f / 6},
                                  {-1.f / 6, 1.f / 6, -1.f / 6},
                                  {1.f / 24, 1.f / 12, 1.f / 6},
                                  {1.f / 24, -1.f / 12, 1.f / 6},
                                  {0, 0, 1}};
    for (int64_t k0 = 0; k0 < mc; k0 += WT) {
        int n = mc - k0 < WT ? (int)(mc - k0) : WT;
        float g[9][WT], t[6][3][WT], o[WT];
        for (int e = 0; e < 9; e++)
            for (int j = 0; j < WT; j++) g[e][j] = j < n ? w[9 * (k0 + j) + e] : 0.f;
        for (int i = 0; i < 6; i++)
            for (int c = 0; c < 3; c++)
                for (int j = 0; j < WT; j++) t[i][c][j] = G[i][0] * g[c][j] + G[i][1] * g[3 + c][j] + G[i][2] * g[6 + c][j];
        for (int i = 0; i < 6; i++)
            for (int k = 0; k < 6; k++) {
                for (int j = 0; j < WT; j++) o[j] = t[i][0][j] * G[k][0] + t[i][1][j] * G[k][1] + t[i][2][j] * G[k][2];
                memcpy(u + (i * 6 + k) * mc + k0, o, sizeof(float) * (size_t)n);
            }
    }
}

VBS_CLONES(weight_transform, (const float *w, int64_t mc, float *u), weight_body(w, mc, u))

/* B^T applied along one axis of 6 values (vectorised over WT tiles). */
#define BT6(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5, j)                   \
    do {                                                                        \
        o0[j] = 4.f * d0[j] - 5.f * d2[j] + d4[j];                              \
        o1[j] = -4.f * d1[j] - 4.f * d2[j] + d3[j] + d4[j];                     \
        o2[j] = 4.f * d1[j] - 4.f * d2[j] - d3[j] + d4[j];                      \
        o3[j] = -2.f * d1[j] - d2[j] + 2.f * d3[j] + d4[j];                     \
        o4[j] = 2.f * d1[j] - d2[j] - 2.f * d3[j] + d4[j];                      \
        o5[j] = 4.f * d1[j] - 5.f * d3[j] + d5[j];                              \
    } while (0)

/* V for channel plane x (h x w) into v[xi * ct + t], tiles [0, T). */
static inline __attribute__((always_inline)) void input_body(const float *x, int64_t h, int64_t w, int64_t pt, int64_t pl,
                                                             int64_t ty0, int64_t ty1, int64_t tw, float *v, int64_t ct) {
    float d[6][6][WT], t[6][6][WT];
    for (int64_t ty = ty0; ty < ty1; ty++)
        for (int64_t tx0 = 0; tx0 < tw; tx0 += WT) {
            int n = tw - tx0 < WT ? (int)(tw - tx0) : WT;
            int64_t r0 = ty * 4 - pt, c0 = tx0 * 4 - pl;
            int interior = r0 >= 0 && r0 + 6 <= h && c0 >= 0 && c0 + 4 * (WT - 1) + 6 <= w && n == WT;
            for (int r = 0; r < 6; r++) {
                int64_t row = r0 + r;
                const float *src = x + row * w;
                if (interior) {
                    for (int cc = 0; cc < 6; cc++)
                        for (int j = 0; j < WT; j++) d[r][cc][j] = src[c0 + 4 * j + cc];
                    continue;
                }
                for (int cc = 0; cc < 6; cc++)
                    for (int j = 0; j < WT; j++) {
                        int64_t col = c0 + 4 * j + cc;
                        d[r][cc][j] = (row >= 0 && row < h && col >= 0 && col < w && j < n) ? src[col] : 0.f;
                    }
            }
            for (int cc = 0; cc < 6; cc++)
                for (int j = 0; j < WT; j++)
                    BT6(d[0][cc], d[1][cc], d[2][cc], d[3][cc], d[4][cc], d[5][cc], t[0][cc], t[1][cc], t[2][cc], t[3][cc], t[4][cc],
                        t[5][cc], j);
            for (int i = 0; i < 6; i++) {
                float o[6][WT];
                for (int j = 0; j < WT; j++) BT6(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5], o[0], o[1], o[2], o[3], o[4], o[5], j);
                int64_t t0 = (ty - ty0) * tw + tx0;
                for (int k = 0; k < 6; k++) {
                    float *dst = v + (int64_t)(i * 6 + k) * ct + t0;
                    if (n == WT) for (int j = 0; j < WT; j++) dst[j] = o[k][j];
                    else for (int j = 0; j < n; j++) dst[j] = o[k][j];
                }
            }
        }
}

VBS_CLONES(input_transform, (const float *x, int64_t h, int64_t w, int64_t pt, int64_t pl, int64_t ty0, int64_t ty1, int64_t tw, float *v,
                              int64_t ct),
           input_body(x, h, w, pt, pl, ty0, ty1, tw, v, ct))

/* A^T applied along one axis of 6 values. */
#define AT6(o0, o1, o2, o3, o4, o5, s0, s1, s2, s3, j)                          \
    do {                                                                        \
        float a12 = o1[j] + o2[j], b12 = o1[j] - o2[j];                         \
        float a34 = o3[j] + o4[j], b34 = o3[j] - o4[j];                         \
        s0[j] = o0[j] + a12 + a34;                                              \
        s1[j] = b12 + 2.f * b34;                                                \
        s2[j] = a12 + 4.f * a34;                                                \
        s3[j] = b12 + 8.f * b34 + o5[j];                                        \
    } while (0)

/* y plane (oh x ow) of one output channel from mx[xi * mt + t]. */
static inline __attribute__((always_inline)) void output_body(const float *mx, int64_t mt, int64_t ty0, int64_t ty1, int64_t tw,
                                                              float bias, float *y, int64_t oh, int64_t ow) {
    float o[6][6][WT], s[4][6][WT];
    for (int64_t ty = ty0; ty < ty1; ty++)
        for (int64_t tx0 = 0; tx0 < tw; tx0 += WT) {
            int n = tw - tx0 < WT ? (int)(tw - tx0) : WT;
            int64_t t0 = (ty - ty0) * tw + tx0;
            for (int xi = 0; xi < 36; xi++) {
                const float *src = mx + xi * mt + t0;
                if (n == WT) for (int j = 0; j < WT; j++) o[xi / 6][xi % 6][j] = src[j];
                else for (int j = 0; j < WT; j++) o[xi / 6][xi % 6][j] = j < n ? src[j] : 0.f;
            }
            for (int cc = 0; cc < 6; cc++)
                for (int j = 0; j < WT; j++) AT6(o[0][cc], o[1][cc], o[2][cc], o[3][cc], o[4][cc], o[5][cc], s[0][cc], s[1][cc], s[2][cc], s[3][cc], j);
            for (int r = 0; r < 4; r++) {
                int64_t row = ty * 4 + r;
                if (row >= oh) break;
                float q[4][WT];
                for (int j = 0; j < WT; j++) AT6(s[r][0], s[r][1], s[r][2], s[r][3], s[r][4], s[r][5], q[0], q[1], q[2], q[3], j);
                float *dst = y + row * ow + tx0 * 4;
                if ((tx0 + n) * 4 <= ow && n == WT) {
                    /* interleave the four output columns of 8 tiles: one contiguous run of 32 */
                    float run[4 * WT];
                    for (int j = 0; j < WT; j++)
                        for (int k = 0; k < 4; k++) run[4 * j + k] = q[k][j] + bias;
                    for (int e = 0; e < 4 * WT; e++) dst[e] = run[e];
                } else
                    for (int j = 0; j < n; j++)
                        for (int k = 0; k < 4 && (tx0 + j) * 4 + k < ow; k++) dst[4 * j + k] = q[k][j] + bias;
            }
        }
}

VBS_CLONES(output_transform, (const float *mx, int64_t mt, int64_t ty0, int64_t ty1, int64_t tw, float bias, float *y, int64_t oh,
                               int64_t ow),
           output_body(mx, mt, ty0, ty1, tw, bias, y, oh, ow))

void vbs_winograd_forward(const vbs_op_args *a) {
    const vbs_shape *xs = a->xs[0], *ys = a->ys[0];
    int64_t c = xs->d[1], m = a->xs[1]->d[0], h = xs->d[2], w = xs->d[3], oh = ys->d[2], ow = ys->d[3];
    int64_t th, tw;
    tiles(ys, &th, &tw);
    int64_t rows = block_rows(c, m, th, tw), tb = rows * tw;
    float *u = a->work, *v = u + 36 * m * c, *mx = v + 36 * c * tb;
    VBS_PICK(weight_transform)(a->x[1], m * c, u);
    void (*in_t)(const float *, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float *, int64_t) = VBS_PICK(input_transform);
    void (*out_t)(const float *, int64_t, int64_t, int64_t, int64_t, float, float *, int64_t, int64_t) = VBS_PICK(output_transform);
    for (int64_t nb = 0; nb < xs->d[0]; nb++)
        for (int64_t ty0 = 0; ty0 < th; ty0 += rows) {
            int64_t ty1 = ty0 + rows < th ? ty0 + rows : th, t = (ty1 - ty0) * tw;
            for (int64_t ch = 0; ch < c; ch++)
                in_t(a->x[0] + (nb * c + ch) * h * w, h, w, a->node->a.win.pad[0], a->node->a.win.pad[1], ty0, ty1, tw, v + ch * t, c * t);
            for (int xi = 0; xi < 36; xi++)
                vbs_sgemm(0, 0, m, t, c, u + xi * m * c, c, v + xi * c * t, t, 0.f, mx + xi * m * t, t);
            for (int64_t oc = 0; oc < m; oc++)
                out_t(mx + oc * t, m * t, ty0, ty1, tw, a->x[2] ? a->x[2][oc] : 0.f, a->y[0] + (nb * m + oc) * oh * ow, oh, ow);
        }
}
