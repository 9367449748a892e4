/*
 * gemm.c: C (m x n) = A (m x k) B (k x n), dense row-major, for the many
 * small products of the convolution kernels (Winograd's 36 per tile block,
 * transposed convolutions). With AVX2/FMA a register-blocked 6x16 kernel
 * without packing: at 16 to 256 rows it beats OpenBLAS, whose packing and
 * C-zeroing dominate at these sizes; 12 accumulators hide the FMA latency.
 * With AVX-512 an 8x32 kernel of the same form (twice the FMA width: the
 * Winograd products run about 1.6x faster), giving the same bits.
 * vbs_gemm_nt is C (=, +=) A B^T (Winograd's filter gradient: both
 * operands run along k): B transposed once, then the same kernel.
 * Elsewhere they call cblas_sgemm through vbs_sgemm. Each element of C is
 * a sum over k in a fixed order, so results do not depend on blocking or
 * threads.
 */
#include "internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* rows [i, i + R) of C, R <= 6 known at compile time after inlining */
static inline __attribute__((always_inline, target("avx2,fma"))) void rows_avx2(int R, int64_t i, int64_t n, int64_t k, const float *a,
                                                                               const float *b, int add, float *c) {
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __m256 acc0[6], acc1[6];
        for (int r = 0; r < R; r++) {
            acc0[r] = add ? _mm256_loadu_ps(c + (i + r) * n + j) : _mm256_setzero_ps();
            acc1[r] = add ? _mm256_loadu_ps(c + (i + r) * n + j + 8) : _mm256_setzero_ps();
        }
        for (int64_t p = 0; p < k; p++) {
            __m256 b0 = _mm256_loadu_ps(b + p * n + j), b1 = _mm256_loadu_ps(b + p * n + j + 8);
            for (int r = 0; r < R; r++) {
                __m256 av = _mm256_broadcast_ss(a + (i + r) * k + p);
                acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
                acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
            }
        }
        for (int r = 0; r < R; r++) {
            _mm256_storeu_ps(c + (i + r) * n + j, acc0[r]);
            _mm256_storeu_ps(c + (i + r) * n + j + 8, acc1[r]);
        }
    }
    for (; j < n; j += 8) {
        /* 8 columns, or the last 1..7 through a lane mask */
        int64_t left = n - j;
        __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(left < 8 ? left : 8)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        __m256 acc[6];
        for (int r = 0; r < R; r++) acc[r] = add ? _mm256_maskload_ps(c + (i + r) * n + j, mask) : _mm256_setzero_ps();
        for (int64_t p = 0; p < k; p++) {
            __m256 b0 = _mm256_maskload_ps(b + p * n + j, mask);
            for (int r = 0; r < R; r++) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(a + (i + r) * k + p), b0, acc[r]);
        }
        for (int r = 0; r < R; r++) _mm256_maskstore_ps(c + (i + r) * n + j, mask, acc[r]);
    }
}

/* C (=, += with add) A B */
__attribute__((target("avx2,fma"))) static void gemm_avx2(int64_t m, int64_t n, int64_t k, const float *a, const float *b, int add,
                                                           float *c) {
    int64_t i = 0;
    /* 6-row blocks; the rest as one block of 1..5 (8 as two of 4) */
    for (; m - i >= 6 && m - i != 8; i += 6) rows_avx2(6, i, n, k, a, b, add, c);
    switch (m - i) {
    case 8: rows_avx2(4, i, n, k, a, b, add, c); rows_avx2(4, i + 4, n, k, a, b, add, c); break;
    case 5: rows_avx2(5, i, n, k, a, b, add, c); break;
    case 4: rows_avx2(4, i, n, k, a, b, add, c); break;
    case 3: rows_avx2(3, i, n, k, a, b, add, c); break;
    case 2: rows_avx2(2, i, n, k, a, b, add, c); break;
    case 1: rows_avx2(1, i, n, k, a, b, add, c); break;
    default: break;
    }
}
#endif

#if defined(__x86_64__) && defined(__GNUC__)
/* dst (cols x rows) = src (rows x cols) transposed, 8x8 blocks in registers */
__attribute__((target("avx2,fma"))) static void transpose_avx2(const float *src, int64_t rows, int64_t cols, float *dst) {
    int64_t r0 = 0;
    for (; r0 + 8 <= rows; r0 += 8) {
        int64_t c0 = 0;
        for (; c0 + 8 <= cols; c0 += 8) {
            __m256 x[8], y[8];
            for (int q = 0; q < 8; q++) x[q] = _mm256_loadu_ps(src + (r0 + q) * cols + c0);
            for (int q = 0; q < 8; q += 2) { y[q] = _mm256_unpacklo_ps(x[q], x[q + 1]); y[q + 1] = _mm256_unpackhi_ps(x[q], x[q + 1]); }
            for (int q = 0; q < 8; q += 4)
                for (int h = 0; h < 2; h++) {
                    x[q + 2 * h] = _mm256_shuffle_ps(y[q + h], y[q + 2 + h], 0x44);
                    x[q + 2 * h + 1] = _mm256_shuffle_ps(y[q + h], y[q + 2 + h], 0xEE);
                }
            /* x[0..3]: columns 0, 1, 4, 5 / 2, 3, 6, 7 of rows 0-3 per half; x[4..7] the same of rows 4-7 */
            for (int q = 0; q < 4; q++) {
                _mm256_storeu_ps(dst + (c0 + q) * rows + r0, _mm256_permute2f128_ps(x[q], x[q + 4], 0x20));
                _mm256_storeu_ps(dst + (c0 + q + 4) * rows + r0, _mm256_permute2f128_ps(x[q], x[q + 4], 0x31));
            }
        }
        for (; c0 < cols; c0++)
            for (int q = 0; q < 8; q++) dst[c0 * rows + r0 + q] = src[(r0 + q) * cols + c0];
    }
    for (; r0 < rows; r0++)
        for (int64_t c0 = 0; c0 < cols; c0++) dst[c0 * rows + r0] = src[r0 * cols + c0];
}

/* The same products with AVX-512: two 16-lane registers per row (32
 * columns) and up to 8 rows, so 16 accumulators; the last 1..31 columns
 * through lane masks. Each element of C is the same chain of FMAs over k as
 * in rows_avx2, so the two give the same bits. */
static inline __attribute__((always_inline, target("avx512f"))) void strip_avx512(int R, int two, int64_t i, int64_t j, __mmask16 m0,
                                                                                 __mmask16 m1, int64_t n, int64_t k, const float *a,
                                                                                 const float *b, int add, float *c) {
    __m512 acc0[8], acc1[8];
    for (int r = 0; r < R; r++) {
        acc0[r] = add ? _mm512_maskz_loadu_ps(m0, c + (i + r) * n + j) : _mm512_setzero_ps();
        if (two) acc1[r] = add ? _mm512_maskz_loadu_ps(m1, c + (i + r) * n + j + 16) : _mm512_setzero_ps();
    }
    for (int64_t p = 0; p < k; p++) {
        __m512 b0 = _mm512_maskz_loadu_ps(m0, b + p * n + j), b1 = two ? _mm512_maskz_loadu_ps(m1, b + p * n + j + 16) : b0;
        for (int r = 0; r < R; r++) {
            __m512 av = _mm512_set1_ps(a[(i + r) * k + p]);
            acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
            if (two) acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
        }
    }
    for (int r = 0; r < R; r++) {
        _mm512_mask_storeu_ps(c + (i + r) * n + j, m0, acc0[r]);
        if (two) _mm512_mask_storeu_ps(c + (i + r) * n + j + 16, m1, acc1[r]);
    }
}

static inline __attribute__((always_inline, target("avx512f"))) void rows_avx512(int R, int64_t i, int64_t n, int64_t k, const float *a,
                                                                                const float *b, int add, float *c) {
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) strip_avx512(R, 1, i, j, 0xFFFF, 0xFFFF, n, k, a, b, add, c);
    int64_t left = n - j;
    if (left > 16) strip_avx512(R, 1, i, j, 0xFFFF, (__mmask16)((1u << (left - 16)) - 1), n, k, a, b, add, c);
    else if (left > 0) strip_avx512(R, 0, i, j, (__mmask16)((1u << left) - 1), 0, n, k, a, b, add, c);
}

/* C (=, += with add) A B */
__attribute__((target("avx512f"))) static void gemm_avx512(int64_t m, int64_t n, int64_t k, const float *a, const float *b, int add,
                                                            float *c) {
    int64_t i = 0;
    for (; m - i >= 8; i += 8) rows_avx512(8, i, n, k, a, b, add, c);
    /* the last 1..7 rows as blocks of 4, 2, 1 (channel counts are mostly multiples of 8) */
    if (m - i >= 4) { rows_avx512(4, i, n, k, a, b, add, c); i += 4; }
    if (m - i >= 2) { rows_avx512(2, i, n, k, a, b, add, c); i += 2; }
    if (m - i >= 1) rows_avx512(1, i, n, k, a, b, add, c);
}
#endif

void vbs_transpose(const float *src, int64_t rows, int64_t cols, float *dst) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (vbs_cpu_avx2()) {
        transpose_avx2(src, rows, cols, dst);
        return;
    }
#endif
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) dst[c * rows + r] = src[r * cols + c];
}

void vbs_gemm_nt(int64_t m, int64_t n, int64_t k, const float *a, const float *b, int acc, float *c, float *scratch) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (vbs_cpu_avx2()) { /* B^T (k x n) once, then the register-blocked kernel, adding to C */
        transpose_avx2(b, n, k, scratch);
        (vbs_cpu_avx512() ? gemm_avx512 : gemm_avx2)(m, n, k, a, scratch, acc, c);
        return;
    }
#endif
    (void)scratch;
    vbs_sgemm(0, 1, m, n, k, a, k, b, k, acc ? 1.f : 0.f, c, n);
}

void vbs_gemm(int64_t m, int64_t n, int64_t k, const float *a, const float *b, float *c) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (vbs_cpu_avx2()) {
        (vbs_cpu_avx512() ? gemm_avx512 : gemm_avx2)(m, n, k, a, b, 0, c);
        return;
    }
#endif
    vbs_sgemm(0, 0, m, n, k, a, k, b, n, 0.f, c, n);
}
