/*
 * gemm.h: the one matrix-product interface of the worker. Every kernel calls gemm(),
 * gemm_bf16() or gemm_quant(); which library runs a product (oneDNN by default, OpenBLAS on request) is
 * this file's business alone, and so is the thread count every kernel shares.
 */
#ifndef LORAD_GEMM_H
#define LORAD_GEMM_H

#include <stdint.h>

/* How a weight matrix of a linear map in -> out is stored. */
enum gemm_layout {
    GEMM_LAYOUT_IN_OUT, /* [in, out]: GPT-2's Conv1D */
    GEMM_LAYOUT_OUT_IN, /* [out, in]: nn.Linear, embeddings used as an LM head */
};

/* The library that runs the f32 products. */
enum gemm_backend {
    GEMM_BACKEND_ONEDNN,   /* oneDNN's sgemm (OpenMP threads, shared with the kernels) */
    GEMM_BACKEND_OPENBLAS, /* OpenBLAS's cblas_sgemm (its own threads) */
};

/* Row-major C (M,N) = alpha * op(A) (M,K) · op(B) (K,N) + beta * C, where op
 * transposes when TRANS_A / TRANS_B is nonzero. LDA, LDB, LDC are row strides.
 * Called inside an OpenMP parallel region, it runs on the calling thread alone
 * (see gemm_nests). */
void gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc);

/* The same with B in bf16 (a frozen weight) and A converted to bf16 on the way in;
 * oneDNN's bf16 matmul with f32 accumulation, and BIAS (N) f32, when not NULL, added to
 * every row of the product in the same pass (then ALPHA must be 1). Main thread only.
 * A (M,K) f32, B as op(B) (K,N) bf16, C (M,N) f32. On a CPU where oneDNN has no bf16
 * matmul (gemm_bf16_native), the same values multiply in f32 on dnnl_sgemm. */
void gemm_bf16(int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const uint16_t *B,
               int ldb, float beta, const float *bias, float *C, int ldc);

struct qweight;

/* Weight elements gemm_quant decodes per tile (bf16: 1 MiB, within a core's L2). */
#define GEMM_QUANT_TILE (1 << 19)

/* The same with B a quantized weight W (quant.h, stored (out, in)): TRANS_B 1 is the
 * forward, C (M, out) = A (M, in) · Wᵀ, and TRANS_B 0 the input gradient, C (M, in) =
 * A (M, out) · W. A is rounded to bf16 once; W is decoded to bf16 one tile of output
 * columns at a time (GEMM_QUANT_TILE elements), each tile multiplied by oneDNN's bf16
 * matmul while it is in cache, so no full-size copy of W exists. BIAS (N) or NULL.
 * Main thread only. */
void gemm_quant(int trans_b, int M, int N, int K, const float *A, int lda, const struct qweight *W, float beta,
                const float *bias, float *C, int ldc);

/* Whether oneDNN has a bf16 matmul on this CPU (AVX-512 or AMX); without one the bf16,
 * int8 and nf4 products run in f32 on the same bf16 values (main thread only). */
int gemm_bf16_native(void);

/* Selects the f32 backend (process-wide; the default is oneDNN). */
void gemm_set_backend(enum gemm_backend b);
/* "onednn" or "openblas". */
const char *gemm_backend_name(enum gemm_backend b);

/* Sets the threads the products and the kernels may use. */
void gemm_set_threads(int n);
/* Nonzero when gemm() may be called from several OpenMP threads at once, each product
 * then running on its caller's thread (oneDNN); zero when the backend keeps a thread
 * pool of its own (OpenBLAS), so callers should not nest. */
int gemm_nests(void);

/* The product profile behind `lorad train --profile`. While it is on, every product
 * called outside an OpenMP region (all of them but attention's per-head products, which
 * the threads run side by side) adds its wall time to the row of its shape. */
struct gemm_profile_row {
    const char *lib; /* "onednn", "openblas", "onednn_bf16", "onednn_int8", "onednn_nf4"; "other" past the table */
    int trans_a, trans_b, M, N, K;
    int64_t calls;
    double seconds;   /* whole calls */
    double convert_s; /* of which gemm_bf16 spent rounding A to bf16 (gemm_quant: and decoding W) */
};
/* Empties the profile; gemm_profile_set turns the timing on or off (off at start). */
void gemm_profile_clear(void);
void gemm_profile_set(int on);
/* The rows so far: *N of them, in the order their shapes first ran. */
const struct gemm_profile_row *gemm_profile_rows(int *n);

/* Frees the cached bf16 primitives and buffers (at exit; optional). */
void gemm_release(void);

#endif
