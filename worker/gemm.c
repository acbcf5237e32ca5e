/*
 * gemm.c: gemm() on oneDNN's dnnl_sgemm or OpenBLAS's cblas_sgemm, and gemm_bf16() on
 * oneDNN's bf16 matmul primitive. The primitives of the few shapes a model runs are
 * created once and kept in a small cache; the bf16 copy of A lives in one buffer that
 * grows to the largest product and is then reused, so a step allocates nothing; so does
 * the tile gemm_quant decodes a quantized weight into, one tile per bf16 matmul. When
 * asked, it also times the products per shape (the profile of `lorad train --profile`).
 *
 * oneDNN has a bf16 matmul only on CPUs with AVX-512 (or AMX). Elsewhere (an AVX2-only
 * EPYC, say) the bf16 products run on dnnl_sgemm over the same bf16 values widened to
 * f32, one tile of B's columns per thread at a time: the same numbers to f32 rounding,
 * at f32 speed, and still half the weight memory.
 */
#include "gemm.h"

#include <cblas.h>
#include <dnnl.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "quant.h"
#include "safetensors.h"
#include "simd.h"

#define DNNL_CHECK(call) CHECK((call) == dnnl_success)

static enum gemm_backend backend = GEMM_BACKEND_ONEDNN;

/* The product profile (gemm.h): one row per shape timed while it is on. */
#define PROFILE_ROWS 256

static struct {
    int on, n;
    struct gemm_profile_row rows[PROFILE_ROWS];
} prof;

void gemm_profile_clear(void) { prof.n = 0; }

void gemm_profile_set(int on) { prof.on = on; }

const struct gemm_profile_row *gemm_profile_rows(int *n) {
    *n = prof.n;
    return prof.rows;
}

/* The start time of a product to profile, or -1 when none is taken (off, or called
 * inside an OpenMP region, where the calls overlap). */
static double profile_begin(void) { return prof.on && !omp_in_parallel() ? omp_get_wtime() : -1.0; }

/* Adds a product begun at T0 (profile_begin) to its shape's row; CONVERT_S of it went to
 * rounding A to bf16. Shapes beyond the table share its last row, named "other". */
static void profile_end(double t0, const char *lib, int trans_a, int trans_b, int M, int N, int K, double convert_s) {
    if (t0 < 0) return;
    struct gemm_profile_row *r = NULL;
    for (int i = 0; i < prof.n && !r; i++) {
        struct gemm_profile_row *e = &prof.rows[i];
        if (!strcmp(e->lib, lib) && e->trans_a == trans_a && e->trans_b == trans_b && e->M == M && e->N == N && e->K == K)
            r = e;
    }
    if (!r && prof.n < PROFILE_ROWS - 1) {
        r = &prof.rows[prof.n++];
        *r = (struct gemm_profile_row){.lib = lib, .trans_a = trans_a, .trans_b = trans_b, .M = M, .N = N, .K = K};
    } else if (!r) {
        r = &prof.rows[PROFILE_ROWS - 1];
        if (prof.n < PROFILE_ROWS) *r = (struct gemm_profile_row){.lib = "other"};
        prof.n = PROFILE_ROWS;
    }
    r->calls++;
    r->seconds += omp_get_wtime() - t0;
    r->convert_s += convert_s;
}

void gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
          const float *B, int ldb, float beta, float *C, int ldc) {
    if (M == 0 || N == 0) return;
    const double t0 = profile_begin();
    if (backend == GEMM_BACKEND_ONEDNN)
        DNNL_CHECK(dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C,
                              ldc));
    else
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N,
                    K, alpha, A, lda, B, ldb, beta, C, ldc);
    profile_end(t0, gemm_backend_name(backend), trans_a, trans_b, M, N, K, 0.0);
}

/* One cached bf16 matmul: its shape and scalars, and the primitive made for them. */
struct bf16_prim {
    int trans_b, M, N, K, ldb, ldc, has_bias;
    float alpha, beta;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t a, b, c, bias;
};

#define BF16_CACHE 64

/* What one OpenMP thread runs bf16 matmuls with: oneDNN's primitives must run on the
 * thread that made them (its scratchpad is per thread), so each thread has its own. */
struct bf16_thread {
    struct bf16_prim cache[BF16_CACHE];
    int n, next; /* entries in use; the one replaced when full */
    dnnl_stream_t stream;
    uint16_t *tile; /* gemm_quant's decoded tile */
    size_t tile_cap;
    float *tile32; /* without a bf16 matmul: the tile widened to f32 */
    size_t tile32_cap;
};

static struct {
    dnnl_engine_t engine;
    int native; /* oneDNN has a bf16 matmul on this CPU (-1: not asked yet) */
    struct bf16_thread *threads;
    int n_threads;
    uint16_t *a16; /* A in bf16 */
    size_t a16_cap;
    float *a32; /* without a bf16 matmul: A's bf16 values in f32 */
    size_t a32_cap;
} bf = {.native = -1};

/* Whether oneDNN can make a bf16 matmul here: it says unimplemented on CPUs without AVX-512. */
static int bf16_probe(void) {
    const dnnl_dims_t d = {16, 16}, s = {16, 1};
    dnnl_memory_desc_t a, b, c;
    DNNL_CHECK(dnnl_memory_desc_init_by_strides(&a, 2, d, dnnl_bf16, s));
    DNNL_CHECK(dnnl_memory_desc_init_by_strides(&b, 2, d, dnnl_bf16, s));
    DNNL_CHECK(dnnl_memory_desc_init_by_strides(&c, 2, d, dnnl_f32, s));
    dnnl_matmul_desc_t md;
    DNNL_CHECK(dnnl_matmul_desc_init(&md, &a, &b, NULL, &c));
    dnnl_primitive_desc_t pd;
    dnnl_status_t st = dnnl_primitive_desc_create(&pd, &md, NULL, bf.engine, NULL);
    if (st == dnnl_success) dnnl_primitive_desc_destroy(pd);
    else CHECK(st == dnnl_unimplemented);
    return st == dnnl_success;
}

/* Makes the engine and room for every OpenMP thread (main thread, outside a region). */
static void bf16_ready(void) {
    if (!bf.engine) DNNL_CHECK(dnnl_engine_create(&bf.engine, dnnl_cpu, 0));
    if (bf.native < 0) bf.native = bf16_probe();
    const int n = omp_get_max_threads();
    if (n <= bf.n_threads) return;
    bf.threads = realloc(bf.threads, (size_t)n * sizeof *bf.threads);
    CHECK(bf.threads != NULL);
    memset(bf.threads + bf.n_threads, 0, (size_t)(n - bf.n_threads) * sizeof *bf.threads);
    bf.n_threads = n;
}

/* The calling thread's part. */
static struct bf16_thread *bf16_self(void) {
    const int t = omp_get_thread_num();
    CHECK(t < bf.n_threads);
    struct bf16_thread *self = &bf.threads[t];
    if (!self->stream) DNNL_CHECK(dnnl_stream_create(&self->stream, bf.engine, dnnl_stream_default_flags));
    return self;
}

static void bf16_prim_make(struct bf16_prim *p) {
    const dnnl_dims_t ad = {p->M, p->K}, as = {p->K, 1}, bd = {p->K, p->N}, cd = {p->M, p->N}, cs = {p->ldc, 1};
    const dnnl_dims_t bs_n = {p->ldb, 1}, bs_t = {1, p->ldb}, biasd = {1, p->N}, biass = {p->N, 1};
    DNNL_CHECK(dnnl_memory_desc_init_by_strides(&p->a, 2, ad, dnnl_bf16, as));
    DNNL_CHECK(dnnl_memory_desc_init_by_strides(&p->b, 2, bd, dnnl_bf16, p->trans_b ? bs_t : bs_n));
    DNNL_CHECK(dnnl_memory_desc_init_by_strides(&p->c, 2, cd, dnnl_f32, cs));
    if (p->has_bias) DNNL_CHECK(dnnl_memory_desc_init_by_strides(&p->bias, 2, biasd, dnnl_f32, biass));
    dnnl_matmul_desc_t md;
    DNNL_CHECK(dnnl_matmul_desc_init(&md, &p->a, &p->b, p->has_bias ? &p->bias : NULL, &p->c));
    dnnl_primitive_attr_t attr;
    DNNL_CHECK(dnnl_primitive_attr_create(&attr));
    if (p->alpha != 1.0f) DNNL_CHECK(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &p->alpha));
    dnnl_post_ops_t po = NULL;
    if (p->beta != 0.0f) {
        DNNL_CHECK(dnnl_post_ops_create(&po));
        DNNL_CHECK(dnnl_post_ops_append_sum(po, p->beta));
        DNNL_CHECK(dnnl_primitive_attr_set_post_ops(attr, po));
    }
    dnnl_primitive_desc_t pd;
    DNNL_CHECK(dnnl_primitive_desc_create(&pd, &md, attr, bf.engine, NULL));
    DNNL_CHECK(dnnl_primitive_create(&p->prim, pd));
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    if (po) dnnl_post_ops_destroy(po);
}

static struct bf16_prim *bf16_prim_get(struct bf16_thread *self, int trans_b, int M, int N, int K, float alpha,
                                       int ldb, float beta, int has_bias, int ldc) {
    for (int i = 0; i < self->n; i++) {
        struct bf16_prim *p = &self->cache[i];
        if (p->trans_b == trans_b && p->M == M && p->N == N && p->K == K && p->ldb == ldb && p->ldc == ldc &&
            p->alpha == alpha && p->beta == beta && p->has_bias == has_bias)
            return p;
    }
    struct bf16_prim *p;
    if (self->n < BF16_CACHE) {
        p = &self->cache[self->n++];
    } else { /* full: replace the oldest */
        p = &self->cache[self->next];
        self->next = (self->next + 1) % BF16_CACHE;
        dnnl_primitive_destroy(p->prim);
    }
    *p = (struct bf16_prim){.trans_b = trans_b, .M = M, .N = N, .K = K, .ldb = ldb, .ldc = ldc,
                            .has_bias = has_bias, .alpha = alpha, .beta = beta};
    bf16_prim_make(p);
    return p;
}

/* Rows of A converted per product: the bf16 buffer stays at most 16 MB. */
#define BF16_CHUNK ((size_t)8 << 20)

/* A (M,K), row stride LDA, rounded to bf16 into OUT16 (M,K), or, with OUT16 NULL, into
 * OUT32 (M,K) as the same values in f32; rows on the OpenMP threads. */
KERNEL_CLONES static void bf16_rows(uint16_t *out16, float *out32, const float *A, int lda, int M, int K) {
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        const float *a = A + (size_t)m * lda;
        uint16_t *o16 = out16 ? out16 + (size_t)m * K : NULL;
        float *o32 = out16 ? NULL : out32 + (size_t)m * K;
        if (o16) {
#pragma omp simd
            for (int k = 0; k < K; k++) o16[k] = f32_to_bf16(a[k]);
        } else {
#pragma omp simd
            for (int k = 0; k < K; k++) o32[k] = bf16_to_f32(f32_to_bf16(a[k]));
        }
    }
}

/* A buffer of at least N bytes, grown (never shrunk) in *BUF of capacity *CAP bytes. */
static void *buffer_take(void *buf, size_t *cap, size_t n) {
    void **b = buf;
    if (n > *cap) {
        free(*b);
        *b = xalloc_aligned(n);
        *cap = n;
    }
    return *b;
}

/* Without a bf16 matmul: C (M,N) = alpha · A32 (M,K) · op(B) + beta · C (+ BIAS), B
 * bf16 as bf16_exec takes it, widened to f32 in the calling thread's buffer and
 * multiplied by dnnl_sgemm on that thread. The buffer always holds op(B)ᵀ (N,K), so
 * that a weight stored either way round multiplies in the same order. */
static void bf16_exec_f32(int trans_b, int M, int N, int K, float alpha, const float *a32, const uint16_t *B,
                          int ldb, float beta, const float *bias, float *C, int ldc) {
    struct bf16_thread *self = &bf.threads[omp_get_thread_num()];
    float *bt = buffer_take(&self->tile32, &self->tile32_cap, (size_t)N * K * sizeof(float));
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            bt[(size_t)n * K + k] = bf16_to_f32(trans_b ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n]);
    DNNL_CHECK(dnnl_sgemm('N', 'T', M, N, K, alpha, a32, K, bt, K, beta, C, ldc));
    for (int m = 0; bias && m < M; m++)
        for (int n = 0; n < N; n++) C[(size_t)m * ldc + n] += bias[n];
}

/* C (M,N) = alpha · A16 (M,K) · op(B) + beta · C (+ BIAS) on the calling thread's cached
 * primitive of that shape (inside an OpenMP region it runs on that thread alone); A16
 * packed (row stride K). */
static void bf16_exec(int trans_b, int M, int N, int K, float alpha, const uint16_t *a16, const uint16_t *B, int ldb,
                      float beta, const float *bias, float *C, int ldc) {
    struct bf16_thread *self = bf16_self();
    struct bf16_prim *p = bf16_prim_get(self, trans_b, M, N, K, alpha, ldb, beta, bias != NULL, ldc);
    dnnl_memory_t ma, mb, mc, mbias = NULL;
    DNNL_CHECK(dnnl_memory_create(&ma, &p->a, bf.engine, (void *)a16));
    DNNL_CHECK(dnnl_memory_create(&mb, &p->b, bf.engine, (void *)B));
    DNNL_CHECK(dnnl_memory_create(&mc, &p->c, bf.engine, C));
    if (bias) DNNL_CHECK(dnnl_memory_create(&mbias, &p->bias, bf.engine, (void *)bias));
    const dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc},
                                     {DNNL_ARG_BIAS, mbias}};
    DNNL_CHECK(dnnl_primitive_execute(p->prim, self->stream, bias ? 4 : 3, args));
    DNNL_CHECK(dnnl_stream_wait(self->stream));
    dnnl_memory_destroy(ma);
    dnnl_memory_destroy(mb);
    dnnl_memory_destroy(mc);
    if (mbias) dnnl_memory_destroy(mbias);
}

/* The columns of C one tile of a quantized product covers: about GEMM_QUANT_TILE
 * elements of the weight, in whole blocks of its rows (TRANS_B 0) or in rows. */
static int quant_tile_cols(int trans_b, int N, int K) {
    const int unit = trans_b ? 16 : QUANT_BLOCK;
    int cols = GEMM_QUANT_TILE / K / unit * unit;
    if (cols < unit) cols = unit;
    return cols < N ? cols : N;
}

/* A (M,K), row stride LDA, rounded to bf16 into the shared buffer: bf16 for the bf16
 * matmul, or its values in f32 for the products without one. */
static const void *lhs_round(const float *A, int lda, int M, int K) {
    if (bf.native) {
        uint16_t *a16 = buffer_take(&bf.a16, &bf.a16_cap, (size_t)M * K * sizeof *a16);
        bf16_rows(a16, NULL, A, lda, M, K);
        return a16;
    }
    float *a32 = buffer_take(&bf.a32, &bf.a32_cap, (size_t)M * K * sizeof *a32);
    bf16_rows(NULL, a32, A, lda, M, K);
    return a32;
}

/* One product of LHS (lhs_round's) and a bf16 B, on the calling thread when inside an
 * OpenMP region: bf16_exec, or bf16_exec_f32 without a bf16 matmul. */
static void lhs_exec(int trans_b, int M, int N, int K, float alpha, const void *lhs, const uint16_t *B, int ldb,
                     float beta, const float *bias, float *C, int ldc) {
    if (bf.native) bf16_exec(trans_b, M, N, K, alpha, lhs, B, ldb, beta, bias, C, ldc);
    else bf16_exec_f32(trans_b, M, N, K, alpha, lhs, B, ldb, beta, bias, C, ldc);
}

void gemm_bf16(int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const uint16_t *B,
               int ldb, float beta, const float *bias, float *C, int ldc) {
    if (M == 0 || N == 0) return;
    CHECK(!omp_in_parallel() && (!bias || alpha == 1.0f));
    bf16_ready();
    const double t0 = profile_begin();
    double convert_s = 0.0;
    const int rows = (size_t)K * M <= BF16_CHUNK ? M : (int)(BF16_CHUNK / (size_t)K > 0 ? BF16_CHUNK / (size_t)K : 1);
    /* without a bf16 matmul, B is widened one tile of columns per thread at a time */
    const int cols = bf.native || K == 0 ? N : quant_tile_cols(trans_b, N, K), tiles = (N + cols - 1) / cols;
    for (int m0 = 0; m0 < M; m0 += rows) {
        const int mc = M - m0 < rows ? M - m0 : rows;
        const double tc = omp_get_wtime();
        const void *lhs = lhs_round(A + (size_t)m0 * lda, lda, mc, K);
        convert_s += omp_get_wtime() - tc;
        float *Cm = C + (size_t)m0 * ldc;
        if (bf.native) {
            bf16_exec(trans_b, mc, N, K, alpha, lhs, B, ldb, beta, bias, Cm, ldc);
            continue;
        }
        /* as gemm_quant's tiles, so that a bf16 weight and its quantized form multiply alike */
#pragma omp parallel for schedule(dynamic, 1)
        for (int t = 0; t < tiles; t++) {
            const int n0 = t * cols, nc = N - n0 < cols ? N - n0 : cols;
            bf16_exec_f32(trans_b, mc, nc, K, alpha, lhs, trans_b ? B + (size_t)n0 * ldb : B + n0, ldb, beta,
                          bias ? bias + n0 : NULL, Cm + n0, ldc);
        }
    }
    profile_end(t0, "onednn_bf16", 0, trans_b, M, N, K, convert_s);
}

void gemm_quant(int trans_b, int M, int N, int K, const float *A, int lda, const struct qweight *W, float beta,
                const float *bias, float *C, int ldc) {
    if (M == 0 || N == 0) return;
    CHECK(!omp_in_parallel() && W->rows == (trans_b ? N : K) && W->cols == (trans_b ? K : N));
    bf16_ready();
    const double t0 = profile_begin(), tc = omp_get_wtime();
    const void *lhs = lhs_round(A, lda, M, K); /* once: every tile multiplies all of A */
    double convert_s = omp_get_wtime() - tc, decode_s = 0.0;
    const int cols = quant_tile_cols(trans_b, N, K), tiles = (N + cols - 1) / cols;
    for (int t = 0; t < bf.n_threads; t++)
        buffer_take(&bf.threads[t].tile, &bf.threads[t].tile_cap, (size_t)cols * K * sizeof(uint16_t));
    /* each thread decodes a tile into its own buffer and multiplies it while it is in its cache */
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : decode_s)
    for (int t = 0; t < tiles; t++) {
        const int n0 = t * cols, nc = N - n0 < cols ? N - n0 : cols;
        uint16_t *tile = bf.threads[omp_get_thread_num()].tile;
        const double td = omp_get_wtime();
        if (trans_b) /* C[:, n0:] = A · W[n0:n0+nc, :]ᵀ, the tile (nc, K) */
            quant_decode_bf16(W, n0, n0 + nc, 0, K, tile, K);
        else /* C[:, n0:] = A · W[:, n0:n0+nc], the tile (K, nc) */
            quant_decode_bf16(W, 0, K, n0, n0 + nc, tile, nc);
        decode_s += omp_get_wtime() - td;
        lhs_exec(trans_b, M, nc, K, 1.0f, lhs, tile, trans_b ? K : nc, beta, bias ? bias + n0 : NULL, C + n0, ldc);
    }
    convert_s += decode_s / omp_get_max_threads(); /* the threads decode side by side */
    profile_end(t0, W->kind == QUANT_INT8 ? "onednn_int8" : "onednn_nf4", 0, trans_b, M, N, K, convert_s);
}

int gemm_bf16_native(void) {
    bf16_ready();
    return bf.native;
}

void gemm_release(void) {
    for (int t = 0; t < bf.n_threads; t++) {
        struct bf16_thread *self = &bf.threads[t];
        for (int i = 0; i < self->n; i++) dnnl_primitive_destroy(self->cache[i].prim);
        if (self->stream) dnnl_stream_destroy(self->stream);
        free(self->tile);
        free(self->tile32);
    }
    free(bf.threads);
    if (bf.engine) dnnl_engine_destroy(bf.engine);
    free(bf.a16);
    free(bf.a32);
    bf = (__typeof__(bf)){.native = -1};
}

void gemm_set_backend(enum gemm_backend b) { backend = b; }


const char *gemm_backend_name(enum gemm_backend b) { return b == GEMM_BACKEND_ONEDNN ? "onednn" : "openblas"; }

void gemm_set_threads(int n) {
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int gemm_nests(void) { return backend == GEMM_BACKEND_ONEDNN; }
