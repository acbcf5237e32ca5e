/*
 * gemm.h: the one matrix-product interface of the worker. Every kernel calls gemm();
 * which library runs it (OpenBLAS today) is this file's business alone.
 */
#ifndef LORAD_GEMM_H
#define LORAD_GEMM_H

/* How a weight matrix of a linear map in -> out is stored. */
enum gemm_layout {
    GEMM_LAYOUT_IN_OUT, /* [in, out]: GPT-2's Conv1D */
    GEMM_LAYOUT_OUT_IN, /* [out, in]: nn.Linear, embeddings used as an LM head */
};

/* Row-major C (M,N) = alpha * op(A) (M,K) · op(B) (K,N) + beta * C, where op
 * transposes when TRANS_A / TRANS_B is nonzero. LDA, LDB, LDC are row strides. */
void gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc);

/* Sets the threads the products may use. */
void gemm_set_threads(int n);

#endif
