/*
 * gemm.c: C (m x n) = A (m x k) B (k x n), dense row-major, for the many
 * small products of the convolution kernels (Winograd's 36 per tile block,
 * transposed convolutions). With AVX2/FMA a register-blocked 6x16 kernel
 * without packing: at 16 to 256 rows it beats OpenBLAS, whose packing and
 * C-zeroing dominate at these sizes; 12 accumulators hide the FMA latency.
 * Elsewhere it calls cblas_sgemm through vbs_sgemm. Each element of C is
 * a sum over k in order, so results do not depend on blocking or threads.
 */
#include "internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* rows [i, i + R) of C, R <= 6 known at compile time after inlining */
static inline __attribute__((always_inline, target("avx2,fma"))) void rows_avx2(int R, int64_t i, int64_t n, int64_t k, const float *a,
                                                                               const float *b, float *c) {
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __m256 acc0[6], acc1[6];
        for (int r = 0; r < R; r++) acc0[r] = acc1[r] = _mm256_setzero_ps();
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
        for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
        for (int64_t p = 0; p < k; p++) {
            __m256 b0 = _mm256_maskload_ps(b + p * n + j, mask);
            for (int r = 0; r < R; r++) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(a + (i + r) * k + p), b0, acc[r]);
        }
        for (int r = 0; r < R; r++) _mm256_maskstore_ps(c + (i + r) * n + j, mask, acc[r]);
    }
}

__attribute__((target("avx2,fma"))) static void gemm_avx2(int64_t m, int64_t n, int64_t k, const float *a, const float *b, float *c) {
    int64_t i = 0;
    /* 6-row blocks; the rest as one block of 1..5 (8 as two of 4) */
    for (; m - i >= 6 && m - i != 8; i += 6) rows_avx2(6, i, n, k, a, b, c);
    switch (m - i) {
    case 8: rows_avx2(4, i, n, k, a, b, c); rows_avx2(4, i + 4, n, k, a, b, c); break;
    case 5: rows_avx2(5, i, n, k, a, b, c); break;
    case 4: rows_avx2(4, i, n, k, a, b, c); break;
    case 3: rows_avx2(3, i, n, k, a, b, c); break;
    case 2: rows_avx2(2, i, n, k, a, b, c); break;
    case 1: rows_avx2(1, i, n, k, a, b, c); break;
    default: break;
    }
}
#endif

void vbs_gemm(int64_t m, int64_t n, int64_t k, const float *a, const float *b, float *c) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (vbs_cpu_avx2()) {
        gemm_avx2(m, n, k, a, b, c);
        return;
    }
#endif
    vbs_sgemm(0, 0, m, n, k, a, k, b, n, 0.f, c, n);
}
