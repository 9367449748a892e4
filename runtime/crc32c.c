/*
 * crc32c.c: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78, the
 * iSCSI/ext4 CRC) of the weights in a .vbseg file. On x86-64 with SSE4.2 it
 * runs on the crc32 instruction, three streams at a time over big buffers
 * (the instruction's latency is three times its issue rate) joined with a
 * precomputed "append N zero bytes" operator, as in Mark Adler's crc32c.c;
 * elsewhere it is a portable slicing-by-8 table. Both give the same value;
 * tests/test_crc.c holds them to a bitwise loop and to RFC 3720's vectors.
 * Not a general hashing module: no other CRC, no incremental object.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define POLY 0x82F63B78u
/* The three hardware streams each take LONG bytes, then SHORT bytes; the
 * zero-append operators for those lengths are tables built once. */
#define LONG 8192
#define SHORT 256

static uint32_t table8[8][256];          /* slicing-by-8 */
static uint32_t shift_long[4][256], shift_short[4][256];
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* GF(2) 32x32 matrix (columns) times vector */
static uint32_t gf2_times(const uint32_t *mat, uint32_t vec) {
    uint32_t sum = 0;
    for (; vec; vec >>= 1, mat++)
        if (vec & 1) sum ^= *mat;
    return sum;
}

static void gf2_square(uint32_t *sq, const uint32_t *mat) {
    for (int n = 0; n < 32; n++) sq[n] = gf2_times(mat, mat[n]);
}

/* the operator that appends len zero bytes to a (raw, uninverted) CRC, as 4 byte-tables */
static void zeros_table(uint32_t t[4][256], size_t len) {
    uint32_t even[32], odd[32], op[32];
    odd[0] = POLY; /* the operator for one zero bit */
    for (int n = 1; n < 32; n++) odd[n] = 1u << (n - 1);
    gf2_square(even, odd); /* 2 bits */
    gf2_square(odd, even); /* 4 bits */
    /* odd now shifts by 4 bits; square to 8 bits, then by powers of two for each set bit of len */
    int have = 0;
    for (;;) {
        gf2_square(even, odd); /* even: 8, 32, ... bits; odd alternates */
        if (len & 1) {
            if (have) for (int n = 0; n < 32; n++) op[n] = gf2_times(even, op[n]);
            else { memcpy(op, even, sizeof op); have = 1; }
        }
        len >>= 1;
        if (!len) break;
        gf2_square(odd, even);
        if (len & 1) {
            if (have) for (int n = 0; n < 32; n++) op[n] = gf2_times(odd, op[n]);
            else { memcpy(op, odd, sizeof op); have = 1; }
        }
        len >>= 1;
        if (!len) break;
    }
    for (uint32_t n = 0; n < 256; n++) {
        t[0][n] = gf2_times(op, n);
        t[1][n] = gf2_times(op, n << 8);
        t[2][n] = gf2_times(op, n << 16);
        t[3][n] = gf2_times(op, n << 24);
    }
}

static void init_tables(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
        table8[0][n] = c;
    }
    for (int n = 0; n < 256; n++)
        for (int k = 1; k < 8; k++) table8[k][n] = (table8[k - 1][n] >> 8) ^ table8[0][table8[k - 1][n] & 0xff];
    zeros_table(shift_long, LONG);
    zeros_table(shift_short, SHORT);
}

static inline uint32_t shift(uint32_t t[4][256], uint32_t crc) {
    return t[0][crc & 0xff] ^ t[1][(crc >> 8) & 0xff] ^ t[2][(crc >> 16) & 0xff] ^ t[3][crc >> 24];
}

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8); /* little-endian host (format/layout.h) */
    return v;
}

uint32_t vbs_crc32c_sw(uint32_t crc, const void *buf, size_t len) {
    pthread_once(&once, init_tables);
    const uint8_t *p = buf;
    uint32_t c = ~crc;
    while (len && ((uintptr_t)p & 7)) { c = (c >> 8) ^ table8[0][(c ^ *p++) & 0xff]; len--; }
    for (; len >= 8; p += 8, len -= 8) {
        uint64_t w = load64(p) ^ c;
        c = table8[7][w & 0xff] ^ table8[6][(w >> 8) & 0xff] ^ table8[5][(w >> 16) & 0xff] ^ table8[4][(w >> 24) & 0xff] ^
            table8[3][(w >> 32) & 0xff] ^ table8[2][(w >> 40) & 0xff] ^ table8[1][(w >> 48) & 0xff] ^ table8[0][w >> 56];
    }
    while (len--) c = (c >> 8) ^ table8[0][(c ^ *p++) & 0xff];
    return ~c;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <nmmintrin.h>

/* three streams of n bytes each from p; c carries the running CRC in and out */
__attribute__((target("sse4.2"))) static inline uint64_t three(uint64_t c, const uint8_t *p, size_t n, uint32_t t[4][256]) {
    uint64_t c1 = 0, c2 = 0;
    for (const uint8_t *e = p + n; p < e; p += 8) {
        c = _mm_crc32_u64(c, load64(p));
        c1 = _mm_crc32_u64(c1, load64(p + n));
        c2 = _mm_crc32_u64(c2, load64(p + 2 * n));
    }
    /* CRC(A B C) = shift(shift(CRC(A)) ^ CRC(B)) ^ CRC(C), every stream n bytes */
    c = shift(t, (uint32_t)c) ^ c1;
    return shift(t, (uint32_t)c) ^ c2;
}

__attribute__((target("sse4.2"))) uint32_t vbs_crc32c_hw(uint32_t crc, const void *buf, size_t len) {
    pthread_once(&once, init_tables);
    const uint8_t *p = buf;
    uint64_t c = ~crc;
    while (len && ((uintptr_t)p & 7)) { c = _mm_crc32_u8((uint32_t)c, *p++); len--; }
    for (; len >= 3 * LONG; p += 3 * LONG, len -= 3 * LONG) c = three(c, p, LONG, shift_long);
    for (; len >= 3 * SHORT; p += 3 * SHORT, len -= 3 * SHORT) c = three(c, p, SHORT, shift_short);
    for (; len >= 8; p += 8, len -= 8) c = _mm_crc32_u64(c, load64(p));
    while (len--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}

int vbs_crc32c_hw_available(void) {
    static int cached = -1; /* benign race, as util.c's: every thread computes the same value */
    if (cached < 0) {
        const char *off = getenv("VBS_NO_SSE42");
        cached = !(off && off[0] == '1') && __builtin_cpu_supports("sse4.2");
    }
    return cached;
}
#else
uint32_t vbs_crc32c_hw(uint32_t crc, const void *buf, size_t len) { return vbs_crc32c_sw(crc, buf, len); }
int vbs_crc32c_hw_available(void) { return 0; }
#endif

uint32_t vbs_crc32c(uint32_t crc, const void *buf, size_t len) {
    return vbs_crc32c_hw_available() ? vbs_crc32c_hw(crc, buf, len) : vbs_crc32c_sw(crc, buf, len);
}
