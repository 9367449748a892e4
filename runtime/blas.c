/*
 * blas.c: the one file that includes cblas.h. Everything else calls
 * vbs_sgemm, so a different BLAS (or a hand-written kernel) is a change
 * here only.
 */
#include <cblas.h>

#include "internal.h"

void vbs_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
               const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                (blasint)m, (blasint)n, (blasint)k, 1.0f, a, (blasint)lda, b, (blasint)ldb, beta, c,
                (blasint)ldc);
}

void vbs_blas_set_threads(int n) { openblas_set_num_threads(n); }
