/*
 * conv_winograd.c: the fast path of Conv for the commonest layer of a
 * segmentation U-Net: 2D, 3x3, stride 1, dilation 1, group 1, any pads;
 * forward, and the backward's dX and dW (see "backward" below).
 * Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray, 2016) turns
 * each 4x4 output tile into 36 independent products, so the 36 GEMMs
 * below do 4x fewer multiplies than direct convolution:
 *   U[xi] (M x C)  = G g G^T      weight transform, per pass (weights are drawn per pass)
 *   V[xi] (C x T)  = B^T d B      input transform of 6x6 tiles, 8 tiles at a time
 *   Mx[xi] (M x T) = U[xi] V[xi]  36 sgemm calls
 *   y              = A^T Mx A     output transform, + bias
 * Float error grows with the tile size; F(4x4, 3x3) stays within 1e-5
 * relative on these layers (test_ops and test_grad_conv check it against
 * the naive kernels). Not a separate op: conv.c calls it when the geometry
 * fits and it beats im2col (vbs_winograd_forward_pays, _backward_pays).
 */
#include <string.h>

#include "geo.h"
#include "ops.h"

#define WT 8 /* tiles per transform chunk: one AVX vector across tiles */
/* The 36 planes of U, V and Mx are skewed by one cache line each: plane
 * sizes are often multiples of 4 KiB, and 36 streams at such a stride
 * would all fall into the same cache set. */
#define PLANE_SKEW 16

int vbs_winograd_fits(const vbs_node *n, const vbs_shape *x, const vbs_shape *w) {
    const vbs_window_attr *a = &n->a.win;
    return x->ndim == 4 && w->d[2] == 3 && w->d[3] == 3 && a->stride[0] == 1 && a->stride[1] == 1 && a->dil[0] == 1 &&
           a->dil[1] == 1 && a->group == 1;
}

/* Tile grid: th x tw tiles of 4x4 outputs; rows of tiles are stored twp
 * wide (tw rounded up to whole chunks) so every chunk is a full one. */
typedef struct { int64_t th, tw, twp, wp; } grid;

static grid grid_of(int64_t oh, int64_t ow) {
    grid g;
    g.th = (oh + 3) / 4;
    g.tw = (ow + 3) / 4;
    g.twp = (g.tw + WT - 1) / WT * WT;
    g.wp = g.twp * 4 + 2;
    return g;
}

/* Tile rows per block: V and Mx of a block (36 (C + M) floats a tile) stay
 * within about 1 MiB of cache, but a block keeps at least 64 tiles so the
 * GEMMs do not shrink to nothing. */
static int64_t block_rows(int64_t c, int64_t m, const grid *g) {
    int64_t per_row = 36 * (c + m) * g->twp * 4, rows = ((int64_t)1 << 18) / (per_row > 0 ? per_row : 1);
    while (rows * g->twp < 64 && rows < g->th) rows++;
    if (rows < 1) rows = 1;
    return rows < g->th ? rows : g->th;
}

/* The scratch's layout. A GEMM's three operands must not sit 0.25-1 KiB
 * apart modulo 4 KiB: a load that follows a store at such a distance is
 * taken for a reload of the stored bytes and waits for it (4K aliasing;
 * measured: vbs_gemm at half speed). So every plane stride is a multiple
 * of 4 KiB plus PLANE_SKEW, and the regions start at fixed residues modulo
 * 4 KiB: U (dU) 0, V 1 KiB, Mx (Z) 3 KiB, V^T (the filter gradient's) 2 KiB,
 * the same for each of the 36 planes, every pair 1-3 KiB apart. */
#define ALIAS 1024 /* floats: 4 KiB */

static int64_t plane_stride(int64_t floats) { return (floats + ALIAS - 1) / ALIAS * ALIAS + PLANE_SKEW; }

/* the first float from p on at residue r (floats, mod ALIAS) from base */
static float *at_residue(float *base, float *p, int64_t r) {
    int64_t off = p - base;
    return p + ((r - off) % ALIAS + ALIAS) % ALIAS;
}

typedef struct {
    float *u, *v, *x, *buf, *vt; /* U or dU; V; Mx or Z; a channel's padded rows; V^T of a plane */
    int64_t us;                  /* U's plane stride (V's and Mx's depend on the block: plane_stride) */
} layout;

static void layout_of(float *work, int64_t c, int64_t m, int64_t tb, int64_t rows, int64_t wp, layout *L) {
    L->us = plane_stride(m * c);
    L->u = work;
    L->v = at_residue(work, L->u + 36 * L->us, ALIAS / 4);
    L->x = at_residue(work, L->v + 36 * plane_stride(c * tb), 3 * ALIAS / 4);
    L->buf = L->x + 36 * plane_stride(m * tb);
    L->vt = at_residue(work, L->buf + (rows * 4 + 2) * wp, ALIAS / 2);
}

/* Scratch of a c -> m convolution with an oh x ow output (layout_of), with
 * V^T of a plane when vt. */
static int64_t work_floats(int64_t c, int64_t m, int64_t oh, int64_t ow, int vt) {
    grid g = grid_of(oh, ow);
    int64_t rows = block_rows(c, m, &g), t = rows * g.twp;
    return 36 * (plane_stride(m * c) + plane_stride(c * t) + plane_stride(m * t)) + 3 * ALIAS + (rows * 4 + 2) * g.wp +
           (vt ? plane_stride(c * t) + 36 * PLANE_SKEW : 0);
}

size_t vbs_winograd_work(const vbs_node *n, const vbs_shape *in, const vbs_shape *out) {
    (void)n;
    return (size_t)work_floats(in[0].d[1], in[1].d[0], out[0].d[2], out[0].d[3], 0);
}

/* The F(4x4, 3x3) filter transform (Lavin & Gray): U = G g G^T. */
static const float G[6][3] = {{0.25f, 0, 0},
                              {-1.f / 6, -1.f / 6, -1.f / 6},
                              {-1.f / 6, 1.f / 6, -1.f / 6},
                              {1.f / 24, 1.f / 12, 1.f / 6},
                              {1.f / 24, -1.f / 12, 1.f / 6},
                              {0, 0, 1}};

/* U[xi][m][c] = (G g G^T)[xi], 8 filters at a time so stores are runs. */
static inline __attribute__((always_inline)) void weight_body(const float *w, int64_t mc, float *u, int64_t us) {
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
                float *dst = u + (i * 6 + k) * us + k0;
                if (n == WT) for (int j = 0; j < WT; j++) dst[j] = o[j];
                else for (int j = 0; j < n; j++) dst[j] = o[j];
            }
    }
}

static void weight_transform_base(const float *w, int64_t mc, float *u, int64_t us) { weight_body(w, mc, u, us); }

/* Copies the input rows that tile rows [ty0, ty1) read, padded with zeros,
 * into buf ((ty1 - ty0) * 4 + 2 rows of wp): afterwards no transform checks a bound. */
static void pad_rows(const float *x, int64_t h, int64_t w, int64_t pt, int64_t pl, int64_t ty0, int64_t ty1, int64_t wp, float *buf) {
    int64_t nr = (ty1 - ty0) * 4 + 2;
    for (int64_t r = 0; r < nr; r++) {
        int64_t row = ty0 * 4 + r - pt;
        float *dst = buf + r * wp;
        if (row < 0 || row >= h) { memset(dst, 0, sizeof(float) * (size_t)wp); continue; }
        int64_t left = pl < wp ? pl : wp, n = w < wp - left ? w : wp - left;
        memset(dst, 0, sizeof(float) * (size_t)left);
        memcpy(dst + left, x + row * w, sizeof(float) * (size_t)n);
        memset(dst + left + n, 0, sizeof(float) * (size_t)(wp - left - n));
    }
}

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

/* V of tile rows [0, nty) of a padded block buf (row stride wp) into
 * v[xi * ct + t], t = ty * twp + tx, natural tile order. */
static void input_transform_base(const float *buf, int64_t wp, int64_t nty, int64_t twp, float *v, int64_t ct) {
    float d[6][6][WT], t[6][6][WT];
    for (int64_t ty = 0; ty < nty; ty++)
        for (int64_t tx0 = 0; tx0 < twp; tx0 += WT) {
            for (int r = 0; r < 6; r++)
                for (int cc = 0; cc < 6; cc++)
                    for (int j = 0; j < WT; j++) d[r][cc][j] = buf[(ty * 4 + r) * wp + (tx0 + j) * 4 + cc];
            for (int cc = 0; cc < 6; cc++)
                for (int j = 0; j < WT; j++)
                    BT6(d[0][cc], d[1][cc], d[2][cc], d[3][cc], d[4][cc], d[5][cc], t[0][cc], t[1][cc], t[2][cc], t[3][cc], t[4][cc],
                        t[5][cc], j);
            for (int i = 0; i < 6; i++) {
                float o[6][WT];
                for (int j = 0; j < WT; j++) BT6(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5], o[0], o[1], o[2], o[3], o[4], o[5], j);
                for (int k = 0; k < 6; k++) memcpy(v + (int64_t)(i * 6 + k) * ct + ty * twp + tx0, o[k], sizeof o[k]);
            }
        }
}

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

/* What the output transform does with a value: y = v + bias; y = max(v +
 * bias, 0) (a fused Relu); or y += v (the backward pass accumulates). */
enum { OUT_STORE = 0, OUT_RELU = 1, OUT_ADD = 2 };

/* Output rows of tile rows [ty0, ty1) of one channel plane y (oh x ow)
 * from mx[xi * mt + t], t counted from ty0; natural tile order. */
static void output_transform_base(const float *mx, int64_t mt, int64_t ty0, int64_t ty1, int64_t tw, int64_t twp, float bias, int mode,
                                  float *y, int64_t oh, int64_t ow) {
    float o[6][6][WT], s[4][6][WT];
    for (int64_t ty = ty0; ty < ty1; ty++)
        for (int64_t tx0 = 0; tx0 < tw; tx0 += WT) {
            const float *src = mx + (ty - ty0) * twp + tx0;
            for (int xi = 0; xi < 36; xi++)
                for (int j = 0; j < WT; j++) o[xi / 6][xi % 6][j] = src[xi * mt + j];
            for (int cc = 0; cc < 6; cc++)
                for (int j = 0; j < WT; j++) AT6(o[0][cc], o[1][cc], o[2][cc], o[3][cc], o[4][cc], o[5][cc], s[0][cc], s[1][cc], s[2][cc], s[3][cc], j);
            for (int r = 0; r < 4 && ty * 4 + r < oh; r++) {
                float q[4][WT];
                for (int j = 0; j < WT; j++) AT6(s[r][0], s[r][1], s[r][2], s[r][3], s[r][4], s[r][5], q[0], q[1], q[2], q[3], j);
                float *dst = y + (ty * 4 + r) * ow + tx0 * 4;
                for (int j = 0; j < WT; j++)
                    for (int k = 0; k < 4; k++)
                        if ((tx0 + j) * 4 + k < ow) {
                            float val = q[k][j] + bias;
                            if (mode == OUT_ADD) dst[4 * j + k] += q[k][j];
                            else dst[4 * j + k] = mode == OUT_RELU && val < 0.f ? 0.f : val;
                        }
            }
        }
}

/* A applied along one axis of 4 values: the adjoint of A^T, for the
 * backward pass (Z = A dY A^T, a 4x4 output-gradient tile to 6x6). */
#define A4(d0, d1, d2, d3, o0, o1, o2, o3, o4, o5, j)                          \
    do {                                                                        \
        float a02 = d0[j] + d2[j], a13 = d1[j] + d3[j];                         \
        float c02 = d0[j] + 4.f * d2[j], c13 = 2.f * d1[j] + 8.f * d3[j];       \
        o0[j] = d0[j];                                                          \
        o1[j] = a02 + a13;                                                      \
        o2[j] = a02 - a13;                                                      \
        o3[j] = c02 + c13;                                                      \
        o4[j] = c02 - c13;                                                      \
        o5[j] = d3[j];                                                          \
    } while (0)

/* Z of tile rows [0, nty) of a padded output-gradient block buf (row
 * stride wp, zero outside the output) into z[xi * ct + t]: the layout and
 * tile order input_transform gives V, so that sum_t Z V^T pairs tiles. */
static void dy_transform_base(const float *buf, int64_t wp, int64_t nty, int64_t twp, float *z, int64_t ct) {
    float d[4][4][WT], t[6][4][WT];
    for (int64_t ty = 0; ty < nty; ty++)
        for (int64_t tx0 = 0; tx0 < twp; tx0 += WT) {
            for (int r = 0; r < 4; r++)
                for (int cc = 0; cc < 4; cc++)
                    for (int j = 0; j < WT; j++) d[r][cc][j] = buf[(ty * 4 + r) * wp + (tx0 + j) * 4 + cc];
            for (int cc = 0; cc < 4; cc++)
                for (int j = 0; j < WT; j++) A4(d[0][cc], d[1][cc], d[2][cc], d[3][cc], t[0][cc], t[1][cc], t[2][cc], t[3][cc], t[4][cc], t[5][cc], j);
            for (int i = 0; i < 6; i++) {
                float o[6][WT];
                for (int j = 0; j < WT; j++) A4(t[i][0], t[i][1], t[i][2], t[i][3], o[0], o[1], o[2], o[3], o[4], o[5], j);
                for (int k = 0; k < 6; k++) memcpy(z + (int64_t)(i * 6 + k) * ct + ty * twp + tx0, o[k], sizeof o[k]);
            }
        }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/*
 * AVX2 transforms. A chunk of 8 tiles is held with tile perm[L] in lane L,
 * perm = {0, 2, 4, 6, 1, 3, 5, 7}: the order in which an 8x4 transpose by
 * unpack + shuffle leaves stride-4 data. Input and output transforms agree
 * on it and the GEMMs do not care about column order, so no lane is ever
 * put back in place.
 */
static const int perm8[8] = {0, 2, 4, 6, 1, 3, 5, 7};

#define AVX_FN __attribute__((target("avx2,fma"))) static

/* d[0..3] = src[4 t + k] for the 8 tiles (permuted), k = 0..3; reads src[0..31]. */
AVX_FN void deinterleave4(const float *src, __m256 *d) {
    __m256 a0 = _mm256_loadu_ps(src), a1 = _mm256_loadu_ps(src + 8), a2 = _mm256_loadu_ps(src + 16), a3 = _mm256_loadu_ps(src + 24);
    __m256 t0 = _mm256_unpacklo_ps(a0, a1), t1 = _mm256_unpackhi_ps(a0, a1);
    __m256 t2 = _mm256_unpacklo_ps(a2, a3), t3 = _mm256_unpackhi_ps(a2, a3);
    d[0] = _mm256_shuffle_ps(t0, t2, 0x44);
    d[1] = _mm256_shuffle_ps(t0, t2, 0xEE);
    d[2] = _mm256_shuffle_ps(t1, t3, 0x44);
    d[3] = _mm256_shuffle_ps(t1, t3, 0xEE);
}

/* the same for k = 0..5; reads src[0..33]. */
AVX_FN void deinterleave6(const float *src, __m256 *d) {
    deinterleave4(src, d);
    /* k = 4, 5 are k = 0, 1 of the next tile: lanes (t1,t3,t5,t7 | t2,t4,t6,t8) */
    const __m256i rot = _mm256_setr_epi32(4, 5, 6, 7, 1, 2, 3, 0);
    d[4] = _mm256_blend_ps(_mm256_permutevar8x32_ps(d[0], rot), _mm256_set1_ps(src[32]), 0x80);
    d[5] = _mm256_blend_ps(_mm256_permutevar8x32_ps(d[1], rot), _mm256_set1_ps(src[33]), 0x80);
}

/* the inverse for 4 components: dst[4 t + k] = lane of tile t in q[k] */
AVX_FN void interleave4(const __m256 *q, float *dst) {
    __m256 t0 = _mm256_shuffle_ps(q[0], q[1], 0x44), t2 = _mm256_shuffle_ps(q[0], q[1], 0xEE);
    __m256 t1 = _mm256_shuffle_ps(q[2], q[3], 0x44), t3 = _mm256_shuffle_ps(q[2], q[3], 0xEE);
    _mm256_storeu_ps(dst, _mm256_shuffle_ps(t0, t1, 0x88));
    _mm256_storeu_ps(dst + 8, _mm256_shuffle_ps(t0, t1, 0xDD));
    _mm256_storeu_ps(dst + 16, _mm256_shuffle_ps(t2, t3, 0x88));
    _mm256_storeu_ps(dst + 24, _mm256_shuffle_ps(t2, t3, 0xDD));
}

/* B^T along one axis, on registers of either width (pre: _mm256 or _mm512) */
#define VBT6_OF(pre, d0, d1, d2, d3, d4, d5, o)                                                            \
    do {                                                                                                \
        const __typeof__(d0) f4 = pre##_set1_ps(4.f), f5 = pre##_set1_ps(5.f), f2 = pre##_set1_ps(2.f); \
        __typeof__(d0) s24 = pre##_sub_ps(d4, d2), s13 = pre##_sub_ps(d3, d1);                          \
        o[0] = pre##_add_ps(pre##_fnmadd_ps(f5, d2, pre##_mul_ps(f4, d0)), d4);                         \
        o[1] = pre##_sub_ps(pre##_add_ps(d3, d4), pre##_mul_ps(f4, pre##_add_ps(d1, d2)));              \
        o[2] = pre##_add_ps(pre##_mul_ps(f4, pre##_sub_ps(d1, d2)), pre##_sub_ps(d4, d3));              \
        o[3] = pre##_fmadd_ps(f2, s13, s24);                                                            \
        o[4] = pre##_fnmadd_ps(f2, s13, s24);                                                           \
        o[5] = pre##_add_ps(pre##_fnmadd_ps(f5, d3, pre##_mul_ps(f4, d1)), d5);                         \
    } while (0)
#define VBT6(d0, d1, d2, d3, d4, d5, o) VBT6_OF(_mm256, d0, d1, d2, d3, d4, d5, o)

/* V of 6x6 values d[r][k] (r down, k across; either width) into planes
 * dst + (6 i + k) ct: B^T down the columns, then along the rows */
#define IN_TRANSFORM_OF(pre, d, dst, ct)                                                                     \
    do {                                                                                                 \
        __typeof__(d[0][0]) t_[6][6];                                                                    \
        for (int k = 0; k < 6; k++) {                                                                    \
            __typeof__(d[0][0]) o_[6];                                                                   \
            VBT6_OF(pre, d[0][k], d[1][k], d[2][k], d[3][k], d[4][k], d[5][k], o_);                      \
            for (int i = 0; i < 6; i++) t_[i][k] = o_[i];                                                \
        }                                                                                                \
        for (int i = 0; i < 6; i++) {                                                                    \
            __typeof__(d[0][0]) o_[6];                                                                   \
            VBT6_OF(pre, t_[i][0], t_[i][1], t_[i][2], t_[i][3], t_[i][4], t_[i][5], o_);                \
            for (int k = 0; k < 6; k++) pre##_storeu_ps((dst) + (int64_t)(i * 6 + k) * (ct), o_[k]);     \
        }                                                                                                \
    } while (0)

AVX_FN void input_transform_avx2(const float *buf, int64_t wp, int64_t nty, int64_t twp, float *v, int64_t ct) {
    __m256 d[6][6];
    for (int64_t ty = 0; ty < nty; ty++)
        for (int64_t tx0 = 0; tx0 < twp; tx0 += WT) {
            for (int r = 0; r < 6; r++) deinterleave6(buf + (ty * 4 + r) * wp + tx0 * 4, d[r]);
            IN_TRANSFORM_OF(_mm256, d, v + ty * twp + tx0, ct);
        }
}

/* input_transform_avx2 with AVX-512: two adjacent chunks in the two halves
 * of each register (their V planes are adjacent), the same sums lane by
 * lane (the same bits), the lane order output_transform_avx512 expects. */
__attribute__((target("avx512f,avx2,fma"))) static void input_transform_avx512(const float *buf, int64_t wp, int64_t nty, int64_t twp,
                                                                                 float *v, int64_t ct) {
    for (int64_t ty = 0; ty < nty; ty++) {
        int64_t tx0 = 0;
        for (; tx0 + 2 * WT <= twp; tx0 += 2 * WT) {
            __m512 d[6][6];
            for (int r = 0; r < 6; r++) {
                __m256 a[6], b[6];
                deinterleave6(buf + (ty * 4 + r) * wp + tx0 * 4, a);
                deinterleave6(buf + (ty * 4 + r) * wp + (tx0 + WT) * 4, b);
                for (int k = 0; k < 6; k++)
                    d[r][k] = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(a[k])), _mm256_castps_pd(b[k]), 1));
            }
            IN_TRANSFORM_OF(_mm512, d, v + ty * twp + tx0, ct);
        }
        if (tx0 < twp) input_transform_avx2(buf + ty * 4 * wp + tx0 * 4, wp, 1, twp - tx0, v + ty * twp + tx0, ct);
    }
}

/* A^T along one axis, on registers of either width (pre: _mm256 or _mm512) */
#define VAT6_OF(pre, o0, o1, o2, o3, o4, o5, s)                                                            \
    do {                                                                                                \
        __typeof__(o0) a12 = pre##_add_ps(o1, o2), b12 = pre##_sub_ps(o1, o2);                          \
        __typeof__(o0) a34 = pre##_add_ps(o3, o4), b34 = pre##_sub_ps(o3, o4);                          \
        s[0] = pre##_add_ps(pre##_add_ps(o0, a12), a34);                                                \
        s[1] = pre##_fmadd_ps(pre##_set1_ps(2.f), b34, b12);                                            \
        s[2] = pre##_fmadd_ps(pre##_set1_ps(4.f), a34, a12);                                            \
        s[3] = pre##_add_ps(pre##_fmadd_ps(pre##_set1_ps(8.f), b34, b12), o5);                          \
    } while (0)
#define VAT6(o0, o1, o2, o3, o4, o5, s) VAT6_OF(_mm256, o0, o1, o2, o3, o4, o5, s)

/* sm[r][k] = row r of A^T applied down column k of the tiles' 6x6 Mx values
 * (plane xi = 6 i + k at src + xi mt), on registers of either width */
#define OUT_COLUMNS_OF(pre, src, mt, sm)                                                                    \
    for (int k = 0; k < 6; k++) {                                                                        \
        __typeof__(sm[0][0]) s4[4];                                                                      \
        VAT6_OF(pre, pre##_loadu_ps(src + k * mt), pre##_loadu_ps(src + (6 + k) * mt), pre##_loadu_ps(src + (12 + k) * mt), \
                pre##_loadu_ps(src + (18 + k) * mt), pre##_loadu_ps(src + (24 + k) * mt), pre##_loadu_ps(src + (30 + k) * mt), s4); \
        for (int r = 0; r < 4; r++) sm[r][k] = s4[r];                                                    \
    }

/* Row r of one chunk's output tiles, q[k] = output column k of each tile
 * (bias and floor still to apply), into dst: stored, or added (OUT_ADD). */
static inline __attribute__((always_inline, target("avx2,fma"))) void out_row_avx2(__m256 *q, __m256 vb, __m256 floor_, int64_t tx0,
                                                                                  int mode, float *dst, int64_t ow) {
    for (int k = 0; k < 4; k++) q[k] = _mm256_max_ps(_mm256_add_ps(q[k], vb), floor_);
    if (tx0 * 4 + 32 <= ow && mode != OUT_ADD) interleave4(q, dst);
    else if (tx0 * 4 + 32 <= ow) {
        float tmp[32];
        interleave4(q, tmp);
        for (int i = 0; i < 32; i++) dst[i] += tmp[i];
    } else {
        float tmp[4][8];
        for (int k = 0; k < 4; k++) _mm256_storeu_ps(tmp[k], q[k]);
        for (int L = 0; L < 8; L++)
            for (int k = 0; k < 4; k++)
                if (tx0 * 4 + 4 * perm8[L] + k < ow) {
                    float *d = &dst[4 * perm8[L] + k];
                    *d = mode == OUT_ADD ? *d + tmp[k][L] : tmp[k][L];
                }
    }
}

/* the output rows of the chunk of tiles (ty, tx0..tx0+7) */
static inline __attribute__((always_inline, target("avx2,fma"))) void out_chunk_avx2(const float *src, int64_t mt, int64_t ty, int64_t tx0,
                                                                                    __m256 vb, __m256 floor_, int mode, float *y,
                                                                                    int64_t oh, int64_t ow) {
    __m256 sm[4][6];
    OUT_COLUMNS_OF(_mm256, src, mt, sm);
    for (int r = 0; r < 4 && ty * 4 + r < oh; r++) {
        __m256 q[4];
        VAT6(sm[r][0], sm[r][1], sm[r][2], sm[r][3], sm[r][4], sm[r][5], q);
        out_row_avx2(q, vb, floor_, tx0, mode, y + (ty * 4 + r) * ow + tx0 * 4, ow);
    }
}

AVX_FN void output_transform_avx2(const float *mx, int64_t mt, int64_t ty0, int64_t ty1, int64_t tw, int64_t twp, float bias, int mode,
                                  float *y, int64_t oh, int64_t ow) {
    const __m256 vb = _mm256_set1_ps(mode == OUT_ADD ? 0.f : bias);
    /* a fused Relu is max(x, 0); without one, max(x, -inf) leaves x alone */
    const __m256 floor_ = mode == OUT_RELU ? _mm256_setzero_ps() : _mm256_set1_ps(-__builtin_inff());
    for (int64_t ty = ty0; ty < ty1; ty++)
        for (int64_t tx0 = 0; tx0 < tw; tx0 += WT) out_chunk_avx2(mx + (ty - ty0) * twp + tx0, mt, ty, tx0, vb, floor_, mode, y, oh, ow);
}

/* output_transform_avx2 with AVX-512: two adjacent chunks of a tile row in
 * the two halves of each register (their Mx values are adjacent), the same
 * sums lane by lane (the same bits), then each half stored as its chunk. */
__attribute__((target("avx512f,avx2,fma"))) static void output_transform_avx512(const float *mx, int64_t mt, int64_t ty0, int64_t ty1,
                                                                                  int64_t tw, int64_t twp, float bias, int mode, float *y,
                                                                                  int64_t oh, int64_t ow) {
    const __m256 vb = _mm256_set1_ps(mode == OUT_ADD ? 0.f : bias);
    const __m256 floor_ = mode == OUT_RELU ? _mm256_setzero_ps() : _mm256_set1_ps(-__builtin_inff());
    for (int64_t ty = ty0; ty < ty1; ty++) {
        int64_t tx0 = 0;
        for (; tx0 + WT < tw; tx0 += 2 * WT) { /* the second chunk has tiles too */
            const float *src = mx + (ty - ty0) * twp + tx0;
            __m512 sm[4][6];
            OUT_COLUMNS_OF(_mm512, src, mt, sm);
            for (int r = 0; r < 4 && ty * 4 + r < oh; r++) {
                __m512 q[4];
                VAT6_OF(_mm512, sm[r][0], sm[r][1], sm[r][2], sm[r][3], sm[r][4], sm[r][5], q);
                __m256 lo[4], hi[4];
                for (int k = 0; k < 4; k++) {
                    lo[k] = _mm512_castps512_ps256(q[k]);
                    hi[k] = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(q[k]), 1));
                }
                float *dst = y + (ty * 4 + r) * ow + tx0 * 4;
                out_row_avx2(lo, vb, floor_, tx0, mode, dst, ow);
                out_row_avx2(hi, vb, floor_, tx0 + WT, mode, dst + 4 * WT, ow);
            }
        }
        for (; tx0 < tw; tx0 += WT) out_chunk_avx2(mx + (ty - ty0) * twp + tx0, mt, ty, tx0, vb, floor_, mode, y, oh, ow);
    }
}

/* U planes for 8 filters at a time: one gather per kernel element, then
 * G g G^T with the filters across the lanes. */
AVX_FN void weight_transform_avx2(const float *w, int64_t mc, float *u, int64_t us) {
    const __m256i idx = _mm256_setr_epi32(0, 9, 18, 27, 36, 45, 54, 63);
    int64_t k0 = 0;
    for (; k0 + WT <= mc; k0 += WT) {
        __m256 g[9], t[6][3];
        for (int e = 0; e < 9; e++) g[e] = _mm256_i32gather_ps(w + 9 * k0 + e, idx, 4);
        for (int i = 0; i < 6; i++)
            for (int c = 0; c < 3; c++)
                t[i][c] = _mm256_fmadd_ps(_mm256_set1_ps(G[i][0]), g[c],
                                          _mm256_fmadd_ps(_mm256_set1_ps(G[i][1]), g[3 + c], _mm256_mul_ps(_mm256_set1_ps(G[i][2]), g[6 + c])));
        for (int i = 0; i < 6; i++)
            for (int k = 0; k < 6; k++) {
                __m256 o = _mm256_fmadd_ps(t[i][0], _mm256_set1_ps(G[k][0]),
                                           _mm256_fmadd_ps(t[i][1], _mm256_set1_ps(G[k][1]), _mm256_mul_ps(t[i][2], _mm256_set1_ps(G[k][2]))));
                _mm256_storeu_ps(u + (i * 6 + k) * us + k0, o);
            }
    }
    if (k0 < mc) weight_transform_base(w + 9 * k0, mc - k0, u + k0, us);
}

#define VA4(d0, d1, d2, d3, o)                                                                            \
    do {                                                                                                \
        __m256 a02 = _mm256_add_ps(d0, d2), a13 = _mm256_add_ps(d1, d3);                                \
        __m256 c02 = _mm256_fmadd_ps(_mm256_set1_ps(4.f), d2, d0);                                      \
        __m256 c13 = _mm256_fmadd_ps(_mm256_set1_ps(8.f), d3, _mm256_mul_ps(_mm256_set1_ps(2.f), d1));  \
        o[0] = d0;                                                                                      \
        o[1] = _mm256_add_ps(a02, a13);                                                                 \
        o[2] = _mm256_sub_ps(a02, a13);                                                                 \
        o[3] = _mm256_add_ps(c02, c13);                                                                 \
        o[4] = _mm256_sub_ps(c02, c13);                                                                 \
        o[5] = d3;                                                                                      \
    } while (0)

/* Tiles in the lane order of input_transform_avx2 (deinterleave6's); reads
 * the 4 twp columns of each row, no further (buf may be dY itself). */
AVX_FN void dy_transform_avx2(const float *buf, int64_t wp, int64_t nty, int64_t twp, float *z, int64_t ct) {
    __m256 d[4][4], t[6][4];
    for (int64_t ty = 0; ty < nty; ty++)
        for (int64_t tx0 = 0; tx0 < twp; tx0 += WT) {
            for (int r = 0; r < 4; r++) deinterleave4(buf + (ty * 4 + r) * wp + tx0 * 4, d[r]);
            for (int k = 0; k < 4; k++) {
                __m256 o[6];
                VA4(d[0][k], d[1][k], d[2][k], d[3][k], o);
                for (int i = 0; i < 6; i++) t[i][k] = o[i];
            }
            float *dst = z + ty * twp + tx0;
            for (int i = 0; i < 6; i++) {
                __m256 o[6];
                VA4(t[i][0], t[i][1], t[i][2], t[i][3], o);
                for (int k = 0; k < 6; k++) _mm256_storeu_ps(dst + (int64_t)(i * 6 + k) * ct, o[k]);
            }
        }
}

#define PICK_TRANSFORM(name) (vbs_cpu_avx2() ? name##_avx2 : name##_base)
#define PICK_OUTPUT_TRANSFORM (vbs_cpu_avx512() ? output_transform_avx512 : PICK_TRANSFORM(output_transform))
#define PICK_INPUT_TRANSFORM (vbs_cpu_avx512() ? input_transform_avx512 : PICK_TRANSFORM(input_transform))
#else
#define PICK_TRANSFORM(name) (name##_base)
#define PICK_OUTPUT_TRANSFORM (output_transform_base)
#define PICK_INPUT_TRANSFORM (input_transform_base)
#endif


/* One convolution through F(4x4, 3x3): x (n, c, h, w) with filters
 * (m, c, 3, 3) and top/left pads pt, pl (the bottom and right ones follow
 * from the output size) into y (n, m, oh, ow), per mode. The forward and
 * the backward pass's data gradient (a convolution of dY) share it. */
typedef struct {
    const float *x;
    int64_t n, c, h, w;
    float *y;
    int64_t m, oh, ow;
    int64_t pt, pl;
    const float *bias;  /* m values or NULL; not with OUT_ADD */
    int mode;           /* OUT_STORE, OUT_RELU or OUT_ADD */
} wconv;

static void winograd_conv(const wconv *p, const float *filters, float *work) {
    int64_t c = p->c, m = p->m;
    grid g = grid_of(p->oh, p->ow);
    int64_t rows = block_rows(c, m, &g), tb = rows * g.twp;
    layout L;
    layout_of(work, c, m, tb, rows, g.wp, &L);
    int64_t us = L.us;
    float *u = L.u, *v = L.v, *mx = L.x, *buf = L.buf;
    PICK_TRANSFORM(weight_transform)(filters, m * c, u, us);
    void (*in_t)(const float *, int64_t, int64_t, int64_t, float *, int64_t) = PICK_INPUT_TRANSFORM;
    void (*out_t)(const float *, int64_t, int64_t, int64_t, int64_t, int64_t, float, int, float *, int64_t, int64_t) = PICK_OUTPUT_TRANSFORM;
    for (int64_t nb = 0; nb < p->n; nb++)
        for (int64_t ty0 = 0; ty0 < g.th; ty0 += rows) {
            int64_t ty1 = ty0 + rows < g.th ? ty0 + rows : g.th, t = (ty1 - ty0) * g.twp;
            int64_t vs = plane_stride(c * t), ms = plane_stride(m * t);
            for (int64_t ch = 0; ch < c; ch++) {
                pad_rows(p->x + (nb * c + ch) * p->h * p->w, p->h, p->w, p->pt, p->pl, ty0, ty1, g.wp, buf);
                in_t(buf, g.wp, ty1 - ty0, g.twp, v + ch * t, vs);
            }
            for (int xi = 0; xi < 36; xi++) vbs_gemm(m, t, c, u + xi * us, v + xi * vs, mx + xi * ms);
            for (int64_t oc = 0; oc < m; oc++)
                out_t(mx + oc * t, ms, ty0, ty1, g.tw, g.twp, p->bias ? p->bias[oc] : 0.f, p->mode, p->y + (nb * m + oc) * p->oh * p->ow,
                      p->oh, p->ow);
        }
}

void vbs_winograd_forward(const vbs_op_args *a) {
    const vbs_shape *xs = a->xs[0], *ys = a->ys[0];
    wconv p = {a->x[0], xs->d[0], xs->d[1], xs->d[2], xs->d[3], a->y[0], ys->d[1], ys->d[2], ys->d[3],
               a->node->a.win.pad[0], a->node->a.win.pad[1], a->x[2], a->node->fused_relu ? OUT_RELU : OUT_STORE};
    winograd_conv(&p, a->x[1], a->work);
}

/* Whether the forward of a layer that vbs_winograd_fits beats im2col + GEMM,
 * in the units of vbs_winograd_backward_pays: per image and filter, im2col
 * costs 9 per output position, Winograd 36 per tile (tiles padded to whole
 * chunks of WT per row) plus a fixed 600 (the filter's transform and the
 * transforms' overhead), fitted with bench/conv_backward.c's forward on
 * 128-256 channels: at 8x8, where 4 tiles fill a chunk of 8 per row, im2col
 * takes half the time; at 12x12 it is ahead, from 15x15 up Winograd. */
int vbs_winograd_forward_pays(const vbs_node *n, const vbs_shape *x, const vbs_shape *w, const vbs_shape *y) {
    if (!vbs_winograd_fits(n, x, w)) return 0;
    grid g = grid_of(y->d[2], y->d[3]);
    return 36.0 * (double)(g.th * g.twp) + 600.0 < 9.0 * (double)(y->d[2] * y->d[3]);
}

/* ---- backward ------------------------------------------------------------
 * Data: dX is the 3x3 stride-1 convolution of dY with the filters flipped in
 * space and transposed in channels, top/left pads 2 - p: the same Winograd
 * convolution, accumulating into dX. It needs p <= 2 there.
 * Filter: differentiating y = A^T [sum_c U V] A by U gives
 *   dU[xi] (M x C) = sum over tiles of Z[xi] (M x T) V[xi]^T, Z = A dY A^T,
 * and dW = G^T dU G. The algebra is exact (Winograd's identity holds for
 * every input), so this is the gradient of the convolution itself, with 4x
 * fewer multiplies than im2col where tiles are full. conv.c picks, per
 * gradient, Winograd or im2col (vbs_winograd_backward_pays). */

/* Whether Winograd beats im2col + GEMM for the data (data = 1) or the
 * filter gradient of a layer that vbs_winograd_fits. In units of one
 * im2col multiply-add per filter, im2col costs 9 per output position;
 * Winograd 36 per tile, tiles padded to whole chunks of WT per row, plus a
 * fixed cost per filter (its transform and, for dW, a 36-float dU swept
 * three times). The fixed costs were fitted on the reference U-Net's layers
 * (bench/conv_backward.c, im2col tiles of 4 MiB): Winograd wins from
 * about 20x20 (data) and 24x24 (filter) up; at 16x16 the two tie, and at
 * 8x8, where 2 tiles fill a chunk of 8 and the 36 (M x C) planes of U or
 * dU dominate, im2col is twice as fast. */
int vbs_winograd_backward_pays(const vbs_node *n, const vbs_shape *in, const vbs_shape *out, int data) {
    if (!vbs_winograd_fits(n, &in[0], &in[1])) return 0;
    if (data && (n->a.win.pad[0] > 2 || n->a.win.pad[1] > 2)) return 0; /* the flipped pads 2 - p must be >= 0 */
    const vbs_shape *grid_side = data ? &in[0] : &out[0];
    grid g = grid_of(grid_side->d[2], grid_side->d[3]);
    double nb = (double)out[0].d[0], direct = nb * 9.0 * (double)(out[0].d[2] * out[0].d[3]);
    double wino = nb * 36.0 * (double)(g.th * g.twp) + (data ? 1200.0 : 2200.0);
    return wino < direct;
}

size_t vbs_winograd_backward_work(const vbs_shape *in, const vbs_shape *out, int data) {
    int64_t c = in[0].d[1], m = in[1].d[0];
    if (data) return (size_t)(9 * m * c + work_floats(m, c, in[0].d[2], in[0].d[3], 0));
    return (size_t)work_floats(c, m, out[0].d[2], out[0].d[3], 1);
}

void vbs_winograd_backward_data(const vbs_grad_args *gr) {
    const vbs_op_args *a = gr->fwd;
    const vbs_shape *xs = a->xs[0], *ys = a->ys[0];
    int64_t c = xs->d[1], m = ys->d[1];
    float *wt = gr->work; /* (c, m, 3, 3): wt[c][m] = flip(w[m][c]), in 16x16 blocks to stay in cache */
    for (int64_t oc0 = 0; oc0 < m; oc0 += 16)
        for (int64_t ic0 = 0; ic0 < c; ic0 += 16)
            for (int64_t ic = ic0; ic < c && ic < ic0 + 16; ic++)
                for (int64_t oc = oc0; oc < m && oc < oc0 + 16; oc++)
                    for (int e = 0; e < 9; e++) wt[(ic * m + oc) * 9 + 8 - e] = a->x[1][(oc * c + ic) * 9 + e];
    /* dX holding nothing yet (fresh) is written, with the adds' bits (+ 0) */
    wconv p = {gr->dy[0], ys->d[0], m, ys->d[2], ys->d[3], gr->dx[0], c, xs->d[2], xs->d[3],
               2 - a->node->a.win.pad[0], 2 - a->node->a.win.pad[1], NULL, gr->fresh & 1 ? OUT_STORE : OUT_ADD};
    winograd_conv(&p, wt, gr->work + 9 * m * c);
}

/* dw (mc filters of 3x3) += G^T dU G, dU planes of stride us; separable:
 * s = G^T dU (3x6), then s G (3x3), vectorised across filters. */
static void filter_grad_base(const float *du, int64_t us, int64_t mc, float *dw) {
    for (int64_t k0 = 0; k0 < mc; k0 += WT) {
        int n = mc - k0 < WT ? (int)(mc - k0) : WT;
        float s[3][6][WT], o[9][WT];
        memset(s, 0, sizeof s);
        for (int i = 0; i < 6; i++)
            for (int k = 0; k < 6; k++) {
                float d[WT];
                for (int j = 0; j < WT; j++) d[j] = j < n ? du[(i * 6 + k) * us + k0 + j] : 0.f;
                for (int r = 0; r < 3; r++)
                    if (G[i][r] != 0.f)
                        for (int j = 0; j < WT; j++) s[r][k][j] += G[i][r] * d[j];
            }
        for (int r = 0; r < 3; r++)
            for (int cc = 0; cc < 3; cc++)
                for (int j = 0; j < WT; j++) {
                    float acc = 0.f;
                    for (int k = 0; k < 6; k++) acc += s[r][k][j] * G[k][cc];
                    o[r * 3 + cc][j] = acc;
                }
        for (int j = 0; j < n; j++)
            for (int e = 0; e < 9; e++) dw[(k0 + j) * 9 + e] += o[e][j];
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
/* The same sums in the same order (multiplies then adds, as the base path:
 * the same bits), 8 filters in the lanes of a register. */
AVX_FN void filter_grad_avx2(const float *du, int64_t us, int64_t mc, float *dw) {
    int64_t k0 = 0;
    for (; k0 + WT <= mc; k0 += WT) {
        __m256 s[3][6];
        for (int r = 0; r < 3; r++)
            for (int k = 0; k < 6; k++) s[r][k] = _mm256_setzero_ps();
        for (int i = 0; i < 6; i++)
            for (int k = 0; k < 6; k++) {
                __m256 d = _mm256_loadu_ps(du + (i * 6 + k) * us + k0);
                for (int r = 0; r < 3; r++)
                    if (G[i][r] != 0.f) s[r][k] = _mm256_add_ps(s[r][k], _mm256_mul_ps(_mm256_set1_ps(G[i][r]), d));
            }
        float o[9][WT];
        for (int r = 0; r < 3; r++)
            for (int cc = 0; cc < 3; cc++) {
                __m256 acc = _mm256_setzero_ps();
                for (int k = 0; k < 6; k++) acc = _mm256_add_ps(acc, _mm256_mul_ps(s[r][k], _mm256_set1_ps(G[k][cc])));
                _mm256_storeu_ps(o[r * 3 + cc], acc);
            }
        for (int j = 0; j < WT; j++)
            for (int e = 0; e < 9; e++) dw[(k0 + j) * 9 + e] += o[e][j];
    }
    if (k0 < mc) filter_grad_base(du + k0, us, mc - k0, dw + 9 * k0);
}
#endif

void vbs_winograd_backward_filter(const vbs_grad_args *gr) {
    const vbs_op_args *a = gr->fwd;
    const vbs_shape *xs = a->xs[0], *ys = a->ys[0];
    int64_t c = xs->d[1], m = ys->d[1], h = xs->d[2], w = xs->d[3], oh = ys->d[2], ow = ys->d[3];
    grid g = grid_of(oh, ow);
    int64_t rows = block_rows(c, m, &g), tb = rows * g.twp;
    layout L;
    layout_of(gr->work, c, m, tb, rows, g.wp, &L);
    int64_t us = L.us;
    float *du = L.u, *v = L.v, *z = L.x, *buf = L.buf;
    void (*in_t)(const float *, int64_t, int64_t, int64_t, float *, int64_t) = PICK_INPUT_TRANSFORM;
    void (*z_t)(const float *, int64_t, int64_t, int64_t, float *, int64_t) = PICK_TRANSFORM(dy_transform);
    for (int64_t nb = 0; nb < xs->d[0]; nb++)
        for (int64_t ty0 = 0; ty0 < g.th; ty0 += rows) {
            int64_t ty1 = ty0 + rows < g.th ? ty0 + rows : g.th, t = (ty1 - ty0) * g.twp;
            int64_t vs = plane_stride(c * t), zs = plane_stride(m * t);
            for (int64_t ch = 0; ch < c; ch++) {
                pad_rows(a->x[0] + (nb * c + ch) * h * w, h, w, a->node->a.win.pad[0], a->node->a.win.pad[1], ty0, ty1, g.wp, buf);
                in_t(buf, g.wp, ty1 - ty0, g.twp, v + ch * t, vs);
            }
            /* dY's rows need no padding when the block's tiles cover whole rows of it: read in place */
            int in_place = ow == g.twp * 4 && ty1 * 4 <= oh;
            for (int64_t oc = 0; oc < m; oc++) {
                const float *dy = gr->dy[0] + (nb * m + oc) * oh * ow;
                if (in_place) z_t(dy + ty0 * 4 * ow, ow, ty1 - ty0, g.twp, z + oc * t, zs);
                else {
                    pad_rows(dy, oh, ow, 0, 0, ty0, ty1, g.wp, buf);
                    z_t(buf, g.wp, ty1 - ty0, g.twp, z + oc * t, zs);
                }
            }
            int acc = nb > 0 || ty0 > 0; /* the first block writes dU: no zeroing pass */
            for (int xi = 0; xi < 36; xi++) /* V[xi]^T at dU[xi]'s residue + 2 KiB */
                vbs_gemm_nt(m, c, t, z + xi * zs, v + xi * vs, acc, du + xi * us, L.vt + xi * PLANE_SKEW);
        }
    PICK_TRANSFORM(filter_grad)(du, us, m * c, gr->dx[1]);
}
