/*
 * linalg.h: the dense linear algebra of `lorad analyze`, in float64 and row-major, on
 * LAPACK (LAPACKE from Debian, running on OpenBLAS's LAPACK) and OpenBLAS's dgemm. As
 * gemm.h is for the training's products, this is the one place that knows the library.
 */
#ifndef LORAD_LINALG_H
#define LORAD_LINALG_H

#include <stdint.h>

/* Thin QR of A (M,N): Q (M,P) with orthonormal columns and R (P,N) upper triangular,
 * A = Q·R, P = min(M,N) (Householder, dgeqrf + dorgqr). -1 with an error when LAPACK
 * fails. */
int linalg_qr(int32_t M, int32_t N, const double *A, double *Q, double *R);
/* Thin SVD of A (M,N) = U·diag(S)·VT (dgesdd, as numpy.linalg.svd): S (P) descending,
 * P = min(M,N); U (M,P) and VT (P,N) too unless both are NULL (values only). -1 with an
 * error when LAPACK fails (it does not converge). */
int linalg_svd(int32_t M, int32_t N, const double *A, double *S, double *U, double *VT);
/* C (M,N) = ALPHA · op(A) (M,K) · op(B) (K,N), op transposing when TA / TB is set;
 * A is stored (M,K) or, transposed, (K,M), and likewise B. */
void linalg_matmul(int ta, int tb, int32_t M, int32_t N, int32_t K, double alpha, const double *A, const double *B,
                   double *C);
/* The numerical rank of a matrix (M,N) with singular values S (P, descending): how many
 * exceed TOL = max(M,N) · eps · S[0], eps = 2^-52 (numpy.linalg.matrix_rank's rule);
 * *TOL receives it. */
int32_t linalg_rank(const double *S, int32_t P, int32_t M, int32_t N, double *tol);

#endif
