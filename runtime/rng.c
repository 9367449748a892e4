/*
 * rng.c: Philox4x32-10 (Salmon et al., SC'11) and standard normals from it.
 *
 * Element e of stream s in sample i under seed k is a pure function of
 * (k, i, s, e): the counter is (e/4, high bits, s, i) and lane e%4 picks
 * the output word; Box-Muller pairs lanes (0,1) and (2,3). Normals are
 * always made in groups of 8 Philox blocks (32 values) by one code path,
 * so an element's value never depends on how a range is split across
 * calls, threads or tiles. The group code is written for the vectoriser
 * (and cloned for AVX2/FMA) with polynomial log and sin/cos accurate to a
 * few float ulps: a draw costs about a nanosecond. vbs_randu32 hands out
 * the raw 32-bit words instead (element e: word e%4 of the same block),
 * for Dropout's masks. Not cryptographic.
 */
#include <math.h>
#include <string.h>

#include "internal.h"
#include "vmath.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void vbs_philox4x32(const uint32_t key[2], const uint32_t ctr[4], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* sin and cos of 2*pi*v for v in [0, 1]: reduce to a quadrant, Cephes'
 * polynomials on [-pi/4, pi/4], quadrant fix-up by bit operations so the
 * loop stays branch-free */
static inline void sincos_2pi(float v, float *s, float *c) {
    float r = v - floorf(v + 0.5f);           /* [-0.5, 0.5) */
    float q = floorf(4.f * r + 0.5f);         /* quadrant -2..2 */
    float x = (4.f * r - q) * 1.57079632679f; /* [-pi/4, pi/4] */
    uint32_t j = (uint32_t)(int32_t)q;
    float x2 = x * x;
    float sn = x + x * x2 * (-1.6666654611e-1f + x2 * (8.3321608736e-3f + x2 * -1.9515295891e-4f));
    float cs = 1.f - 0.5f * x2 + x2 * x2 * (4.166664568298827e-2f + x2 * (-1.388731625493765e-3f + x2 * 2.443315711809948e-5f));
    uint32_t odd = 0u - (j & 1u); /* all ones in odd quadrants: sin and cos swap */
    uint32_t us = (vbs_as_uint(cs) & odd) | (vbs_as_uint(sn) & ~odd), uc = (vbs_as_uint(sn) & odd) | (vbs_as_uint(cs) & ~odd);
    us ^= ((j >> 1) & 1u) << 31;        /* sin < 0 in quadrants 2, 3 */
    uc ^= (((j + 1u) >> 1) & 1u) << 31; /* cos < 0 in quadrants 1, 2 */
    *s = vbs_as_float(us);
    *c = vbs_as_float(uc);
}

#define GROUP 8 /* Philox blocks per group: 32 normals */

/* Philox4x32-10 on 8 counters at once (structure of arrays). */
static void philox8_base(uint32_t k0, uint32_t k1, uint32_t *c0, uint32_t *c1, uint32_t *c2, uint32_t *c3) {
    for (int j = 0; j < GROUP; j++) {
        uint32_t ctr[4] = {c0[j], c1[j], c2[j], c3[j]}, key[2] = {k0, k1}, o[4];
        vbs_philox4x32(key, ctr, o);
        c0[j] = o[0]; c1[j] = o[1]; c2[j] = o[2]; c3[j] = o[3];
    }
}

/* the words of blocks [blk0, blk0 + 8) of (stream, sample): word w of block j in cw[j] */
static void philox_group(uint32_t k0, uint32_t k1, uint64_t blk0, uint32_t stream, uint64_t sample, uint32_t *c0, uint32_t *c1,
                         uint32_t *c2, uint32_t *c3) {
    uint32_t hi = (uint32_t)(sample >> 32) << 16;
    for (int j = 0; j < GROUP; j++) {
        uint64_t b = blk0 + (uint64_t)j;
        c0[j] = (uint32_t)b;
        c1[j] = (uint32_t)(b >> 32) ^ hi;
        c2[j] = stream;
        c3[j] = (uint32_t)sample;
    }
    philox8_base(k0, k1, c0, c1, c2, c3);
}

/* 32 normals for blocks [blk0, blk0 + 8) into z[32], in element order: the
 * portable path (any CPU; the AVX2 path below computes the same formulas). */
static void group_base(uint32_t k0, uint32_t k1, uint64_t blk0, uint32_t stream, uint64_t sample, void *zv) {
    float *z = zv;
    uint32_t c0[GROUP], c1[GROUP], c2[GROUP], c3[GROUP];
    philox_group(k0, k1, blk0, stream, sample, c0, c1, c2, c3);
    /* lanes (0,1) and (2,3) of each block: radius from one word, angle from the other */
    for (int j = 0; j < GROUP; j++) {
        const uint32_t uw[2] = {c0[j], c2[j]}, vw[2] = {c1[j], c3[j]};
        for (int h = 0; h < 2; h++) {
            /* 24 random bits to (0, 1] */
            float u = ((float)(int32_t)(uw[h] >> 8) + 1.f) * (1.f / 16777216.f);
            float v = ((float)(int32_t)(vw[h] >> 8) + 1.f) * (1.f / 16777216.f);
            float rad = sqrtf(-2.f * vbs_log_poly(u)), sn, cs;
            sincos_2pi(v, &sn, &cs);
            z[4 * j + 2 * h] = rad * cs;
            z[4 * j + 2 * h + 1] = rad * sn;
        }
    }
}

/* The raw words of blocks [blk0, blk0 + 8) in element order: out[4j + w] is
 * word w of block blk0 + j (the counters of group_base). */
static void words_base(uint32_t k0, uint32_t k1, uint64_t blk0, uint32_t stream, uint64_t sample, void *outv) {
    uint32_t *out = outv;
    uint32_t c0[GROUP], c1[GROUP], c2[GROUP], c3[GROUP];
    philox_group(k0, k1, blk0, stream, sample, c0, c1, c2, c3);
    for (int j = 0; j < GROUP; j++) {
        out[4 * j] = c0[j];
        out[4 * j + 1] = c1[j];
        out[4 * j + 2] = c2[j];
        out[4 * j + 3] = c3[j];
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define AVX_INLINE static inline __attribute__((always_inline, target("avx2,fma")))

/* 32 x 32 -> 64-bit products of 8 lanes: low and high halves */
AVX_INLINE void mul32x8(__m256i a, __m256i m, __m256i *lo, __m256i *hi) {
    __m256i pe = _mm256_mul_epu32(a, m), po = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    *lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
}

/* Box-Muller on 8 lanes: radius from uw, angle from vw (log_poly and sincos_2pi's formulas) */
AVX_INLINE void bm8(__m256i uw, __m256i vw, __m256 *zc, __m256 *zs) {
    const __m256 one = _mm256_set1_ps(1.f), scale = _mm256_set1_ps(1.f / 16777216.f);
    __m256 u = _mm256_mul_ps(_mm256_add_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(uw, 8)), one), scale);
    __m256 v = _mm256_mul_ps(_mm256_add_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(vw, 8)), one), scale);
    __m256i b = _mm256_castps_si256(u);
    __m256 e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(b, 23), _mm256_set1_epi32(127)));
    __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(b, _mm256_set1_epi32(0x7fffff)), _mm256_set1_epi32(0x3f800000)));
    __m256 big = _mm256_cmp_ps(m, _mm256_set1_ps(1.41421356f), _CMP_GT_OQ);
    m = _mm256_blendv_ps(m, _mm256_mul_ps(m, _mm256_set1_ps(0.5f)), big);
    e = _mm256_add_ps(e, _mm256_and_ps(big, one));
    __m256 f = _mm256_sub_ps(m, one), z = _mm256_mul_ps(f, f);
    __m256 y = _mm256_set1_ps(7.0376836292e-2f);
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(-1.1514610310e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.1676998740e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(-1.2420140846e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.4249322787e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(-1.6668057665e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(2.0000714765e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(-2.4999993993e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(3.3333331174e-1f));
    y = _mm256_mul_ps(_mm256_mul_ps(y, f), z);
    y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), y);
    y = _mm256_fmadd_ps(_mm256_set1_ps(-0.5f), z, y);
    __m256 lg = _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), _mm256_add_ps(f, y));
    __m256 rad = _mm256_sqrt_ps(_mm256_mul_ps(_mm256_set1_ps(-2.f), lg));
    const __m256 half = _mm256_set1_ps(0.5f), four = _mm256_set1_ps(4.f);
    __m256 r = _mm256_sub_ps(v, _mm256_floor_ps(_mm256_add_ps(v, half)));
    __m256 q = _mm256_floor_ps(_mm256_fmadd_ps(four, r, half));
    __m256 x = _mm256_mul_ps(_mm256_fmsub_ps(four, r, q), _mm256_set1_ps(1.57079632679f));
    __m256i j = _mm256_cvttps_epi32(q);
    __m256 x2 = _mm256_mul_ps(x, x);
    __m256 ps = _mm256_fmadd_ps(x2, _mm256_set1_ps(-1.9515295891e-4f), _mm256_set1_ps(8.3321608736e-3f));
    ps = _mm256_fmadd_ps(x2, ps, _mm256_set1_ps(-1.6666654611e-1f));
    __m256 s0 = _mm256_fmadd_ps(_mm256_mul_ps(x, x2), ps, x);
    __m256 pc = _mm256_fmadd_ps(x2, _mm256_set1_ps(2.443315711809948e-5f), _mm256_set1_ps(-1.388731625493765e-3f));
    pc = _mm256_fmadd_ps(x2, pc, _mm256_set1_ps(4.166664568298827e-2f));
    __m256 c0 = _mm256_fmadd_ps(_mm256_mul_ps(x2, x2), pc, _mm256_fnmadd_ps(half, x2, one));
    const __m256i i1 = _mm256_set1_epi32(1);
    __m256 odd = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(j, i1), i1));
    __m256 so = _mm256_blendv_ps(s0, c0, odd), co = _mm256_blendv_ps(c0, s0, odd);
    __m256i ss = _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(j, 1), i1), 31);
    __m256i cc = _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(_mm256_add_epi32(j, i1), 1), i1), 31);
    *zc = _mm256_mul_ps(rad, _mm256_xor_ps(co, _mm256_castsi256_ps(cc)));
    *zs = _mm256_mul_ps(rad, _mm256_xor_ps(so, _mm256_castsi256_ps(ss)));
}

/* Philox4x32-10 on the 8 blocks [blk0, blk0 + 8) of (stream, sample): words
 * 0..3 of block j in lane j of *a, *b, *c, *d */
AVX_INLINE void philox8_avx2(uint32_t k0, uint32_t k1, uint64_t blk0, uint32_t stream, uint64_t sample, __m256i *ao, __m256i *bo,
                             __m256i *co, __m256i *dout) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    /* blocks never cross 2^32 inside a group: blk0 is a multiple of 8 */
    __m256i a = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)blk0), lane);
    __m256i b = _mm256_set1_epi32((int)((uint32_t)(blk0 >> 32) ^ ((uint32_t)(sample >> 32) << 16)));
    __m256i c = _mm256_set1_epi32((int)stream), d = _mm256_set1_epi32((int)(uint32_t)sample);
    const __m256i m0 = _mm256_set1_epi32((int)PHILOX_M0), m1 = _mm256_set1_epi32((int)PHILOX_M1);
    for (int r = 0; r < 10; r++) {
        __m256i lo0, hi0, lo1, hi1;
        mul32x8(a, m0, &lo0, &hi0);
        mul32x8(c, m1, &lo1, &hi1);
        __m256i na = _mm256_xor_si256(_mm256_xor_si256(hi1, b), _mm256_set1_epi32((int)k0));
        __m256i nc = _mm256_xor_si256(_mm256_xor_si256(hi0, d), _mm256_set1_epi32((int)k1));
        b = lo1;
        d = lo0;
        a = na;
        c = nc;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    *ao = a; *bo = b; *co = c; *dout = d;
}

/* out[4j + w] = lane j of the w-th vector: 8 blocks of 4 back to element order */
AVX_INLINE void store_blocks(__m256 A, __m256 B, __m256 C, __m256 D, float *out) {
    __m256 t0 = _mm256_unpacklo_ps(A, B), t1 = _mm256_unpackhi_ps(A, B), t2 = _mm256_unpacklo_ps(C, D), t3 = _mm256_unpackhi_ps(C, D);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    _mm256_storeu_ps(out, _mm256_permute2f128_ps(u0, u1, 0x20));
    _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(u2, u3, 0x20));
    _mm256_storeu_ps(out + 16, _mm256_permute2f128_ps(u0, u1, 0x31));
    _mm256_storeu_ps(out + 24, _mm256_permute2f128_ps(u2, u3, 0x31));
}

/* the same 32 normals with all of it in registers */
__attribute__((target("avx2,fma"))) static void group_avx2(uint32_t k0, uint32_t k1, uint64_t blk0, uint32_t stream, uint64_t sample,
                                                            void *zout) {
    __m256i a, b, c, d;
    philox8_avx2(k0, k1, blk0, stream, sample, &a, &b, &c, &d);
    __m256 A, B, C, D; /* per block j: A = rad*cos, B = rad*sin of words (0,1); C, D of words (2,3) */
    bm8(a, b, &A, &B);
    bm8(c, d, &C, &D);
    store_blocks(A, B, C, D, zout);
}

/* the 32 raw words of words_base, in registers */
__attribute__((target("avx2,fma"))) static void words_avx2(uint32_t k0, uint32_t k1, uint64_t blk0, uint32_t stream, uint64_t sample,
                                                            void *out) {
    __m256i a, b, c, d;
    philox8_avx2(k0, k1, blk0, stream, sample, &a, &b, &c, &d);
    /* the shuffles move bits, never convert them; the stores may alias any type */
    store_blocks(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), _mm256_castsi256_ps(c), _mm256_castsi256_ps(d), (float *)out);
}
#endif

typedef void (*group_fn)(uint32_t k0, uint32_t k1, uint64_t blk0, uint32_t stream, uint64_t sample, void *out);

/* elements [first, first + n) of 4-byte values, whole groups of 32 made by
 * fn (directly into out where a group is wanted whole) */
static void fill(uint64_t seed, uint64_t sample, uint32_t stream, uint64_t first, int64_t n, void *outv, group_fn fn) {
    if (n <= 0) return;
    const uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    const uint64_t per = 4 * GROUP;
    uint64_t e = first, end = first + (uint64_t)n;
    union { float f[4 * GROUP]; uint32_t u[4 * GROUP]; } z; /* either kind of value */
    unsigned char *out = outv;
    while (e < end) {
        uint64_t g = e / per, base = g * per;
        uint64_t lo = e - base, hi = end - base < per ? end - base : per;
        if (lo == 0 && hi == per) fn(k0, k1, g * GROUP, stream, sample, out + 4 * (e - first));
        else {
            fn(k0, k1, g * GROUP, stream, sample, &z);
            memcpy(out + 4 * (e - first), (const unsigned char *)&z + 4 * lo, 4 * (size_t)(hi - lo));
        }
        e = base + hi;
    }
}

void vbs_randn(uint64_t seed, uint64_t sample, uint32_t stream, uint64_t first, int64_t n, float *out) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (vbs_cpu_avx2()) { fill(seed, sample, stream, first, n, out, group_avx2); return; }
#endif
    fill(seed, sample, stream, first, n, out, group_base);
}

void vbs_randu32(uint64_t seed, uint64_t sample, uint32_t stream, uint64_t first, int64_t n, uint32_t *out) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (vbs_cpu_avx2()) { fill(seed, sample, stream, first, n, out, words_avx2); return; }
#endif
    fill(seed, sample, stream, first, n, out, words_base);
}
