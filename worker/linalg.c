/*
 * linalg.c: QR, SVD, products and the numerical rank on LAPACKE and OpenBLAS (linalg.h).
 */
#include "linalg.h"

#include <cblas.h>
#include <float.h>
#include <lapacke.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

int linalg_qr(int32_t M, int32_t N, const double *A, double *Q, double *R) {
    const int32_t P = M < N ? M : N;
    double *a = xmalloc((size_t)M * N * sizeof *a), *tau = xmalloc((size_t)P * sizeof *tau);
    memcpy(a, A, (size_t)M * N * sizeof *a);
    lapack_int info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, M, N, a, N, tau);
    CHECK(info >= 0);
    for (int32_t i = 0; i < P; i++) /* R: the upper triangle of the first P rows */
        for (int32_t j = 0; j < N; j++) R[(size_t)i * N + j] = j < i ? 0.0 : a[(size_t)i * N + j];
    if (info == 0) info = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, M, P, P, a, N, tau);
    CHECK(info >= 0);
    for (int32_t i = 0; i < M; i++) memcpy(Q + (size_t)i * P, a + (size_t)i * N, (size_t)P * sizeof *Q);
    free(a);
    free(tau);
    return info == 0 ? 0 : err_set("LAPACK dgeqrf/dorgqr", "failed with info %d", (int)info);
}

int linalg_svd(int32_t M, int32_t N, const double *A, double *S, double *U, double *VT) {
    const int32_t P = M < N ? M : N;
    const int vectors = U != NULL;
    CHECK(vectors == (VT != NULL));
    double *a = xmalloc((size_t)M * N * sizeof *a);
    memcpy(a, A, (size_t)M * N * sizeof *a);
    double dummy = 0; /* LAPACKE checks ldvt >= N even when VT is not referenced */
    lapack_int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, vectors ? 'S' : 'N', M, N, a, N, S, vectors ? U : &dummy,
                                     vectors ? P : 1, vectors ? VT : &dummy, N);
    free(a);
    CHECK(info >= 0);
    if (info == 0) return 0;
    err_set("LAPACK dgesdd", "did not converge on a %d x %d matrix (info %d)", (int)M, (int)N, (int)info);
    return err_hint("the matrix may hold values too large for float64 products");
}

void linalg_matmul(int ta, int tb, int32_t M, int32_t N, int32_t K, double alpha, const double *A, const double *B,
                   double *C) {
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A,
                ta ? M : K, B, tb ? K : N, 0.0, C, N);
}

int32_t linalg_rank(const double *S, int32_t P, int32_t M, int32_t N, double *tol) {
    *tol = P > 0 ? (M > N ? M : N) * DBL_EPSILON * S[0] : 0.0;
    int32_t rank = 0;
    while (rank < P && S[rank] > *tol) rank++;
    return rank;
}
