/*
 * gemm.c: gemm() on OpenBLAS's cblas_sgemm.
 */
#include "gemm.h"

#include <cblas.h>

void gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc) {
    if (M == 0 || N == 0) return;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M,
                N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_set_threads(int n) { openblas_set_num_threads(n); }
