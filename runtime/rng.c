/*
 * rng.c: Philox4x32-10 (Salmon et al., SC'11) and standard normals from it.
 *
 * Element e of stream s in sample i under seed k is a pure function of
 * (k, i, s, e): the counter is (e/4, e>>34 high bits, s, i) and lane e%4
 * picks the output word. Box-Muller pairs lanes (0,1) and (2,3), so an
 * element's value never depends on how the work is split across threads
 * or tiles. This is not a cryptographic generator.
 */
#include <math.h>

#include "internal.h"

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

/* uniform in (0, 1]: never 0, so log() below is finite */
static inline float u01(uint32_t x) { return ((float)(x >> 8) + 1.0f) * (1.0f / 16777216.0f); }

/* Four normals from one Philox block. */
static inline void block_normals(const uint32_t key[2], uint64_t blk, uint32_t stream, uint64_t sample,
                                 float z[4]) {
    uint32_t ctr[4] = {(uint32_t)blk, (uint32_t)(blk >> 32) ^ ((uint32_t)(sample >> 32) << 16), stream,
                       (uint32_t)sample};
    uint32_t r[4];
    vbs_philox4x32(key, ctr, r);
    for (int j = 0; j < 4; j += 2) {
        float rad = sqrtf(-2.0f * logf(u01(r[j])));
        float th = 6.2831853071795864f * u01(r[j + 1]);
        z[j] = rad * cosf(th);
        z[j + 1] = rad * sinf(th);
    }
}

void vbs_randn(uint64_t seed, uint64_t sample, uint32_t stream, uint64_t first, int64_t n, float *out) {
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    int64_t i = 0;
    float z[4];
    /* unaligned head */
    if (first % 4) {
        block_normals(key, first / 4, stream, sample, z);
        for (uint64_t lane = first % 4; lane < 4 && i < n; lane++) out[i++] = z[lane];
    }
    for (; i + 4 <= n; i += 4) block_normals(key, (first + (uint64_t)i) / 4, stream, sample, out + i);
    if (i < n) {
        block_normals(key, (first + (uint64_t)i) / 4, stream, sample, z);
        for (int lane = 0; i < n; lane++) out[i++] = z[lane];
    }
}
