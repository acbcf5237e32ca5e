/*
 * linear.c: forward and backward of a linear map with LoRA adapters (linear.h).
 * The adapter path is ordered x·Aᵀ first, so B·A is never formed: two thin products.
 */
#include "linear.h"

#include <string.h>

#include "error.h"
#include "rng.h"
#include "simd.h"

int linear_needs_input(const struct linear *l) { return l->dw != NULL || l->n_lora > 0; }

uint64_t linear_scratch_size(const struct linear *l, int N) {
    int32_t rmax = 0;
    for (int i = 0; i < l->n_lora; i++)
        if (l->lora[i]->r > rmax) rmax = l->lora[i]->r;
    return l->n_lora ? (uint64_t)N * ((uint64_t)l->in + (uint64_t)rmax) : 0;
}

/* The key of one adapter's dropout mask for sequence B of the micro-batch. */
static uint64_t dropout_key(const struct dropout *dp, const struct lora_adapter *ad, int b) {
    return rng_key(RNG_STREAM_DROPOUT, dp->seed, (uint64_t)dp->step,
                   ((uint64_t)(dp->first + b) << 20) ^ (uint64_t)(uint32_t)ad->site);
}

/* out (N,in) = inp * mask/(1-p): the adapter's dropped input (or its gradient). */
static void dropout_apply(float *out, const float *inp, const struct dropout *dp,
                          const struct lora_adapter *ad, int N) {
    const float keep_scale = 1.0f / (1.0f - dp->p);
    for (int n = 0; n < N; n++) {
        uint64_t key = dropout_key(dp, ad, n / dp->T);
        uint64_t base = (uint64_t)(n % dp->T) * (uint64_t)ad->in;
        for (int j = 0; j < ad->in; j++) {
            size_t k = (size_t)n * ad->in + j;
            out[k] = rng_uniform(key, base + (uint64_t)j) >= dp->p ? inp[k] * keep_scale : 0.0f;
        }
    }
}

static int dropout_on(const struct dropout *dp) { return dp && dp->p > 0.0f; }

/* The segment of N rows adapter AD applies to under ROWS: its first row, returned, and
 * *N its count; *DP its dropout (NULL: none). */
static int32_t lora_segment(const struct lora_rows *rows, const struct lora_adapter *ad, int *N,
                            const struct dropout **dp) {
    *dp = NULL;
    if (!rows) return 0;
    CHECK(ad->set < rows->n_sets && rows->row0[rows->n_sets] <= *N);
    *N = rows->row0[ad->set + 1] - rows->row0[ad->set];
    *dp = &rows->dp[ad->set];
    return rows->row0[ad->set];
}

static void lora_forward(const struct lora_adapter *ad, float *out, int ldo, const float *inp, float *xd,
                         const struct lora_rows *rows, int N) {
    const struct dropout *dp;
    const size_t r0 = (size_t)lora_segment(rows, ad, &N, &dp);
    if (N == 0) return;
    const float *x = inp + r0 * ad->in;
    if (dropout_on(dp)) {
        dropout_apply(xd, x, dp, ad, N);
        x = xd;
    }
    /* u (N,r) = x (N,in) · Aᵀ;  out[:, col0:] += s · u · Bᵀ, over the segment's rows */
    float *u = ad->u + r0 * ad->r;
    gemm(0, 1, N, ad->r, ad->in, 1.0f, x, ad->in, ad->A, ad->in, 0.0f, u, ad->r);
    gemm(0, 1, N, ad->out, ad->r, ad->scale, u, ad->r, ad->B, ad->r, 1.0f, out + r0 * ldo + ad->col0, ldo);
}

static void lora_backward(const struct lora_adapter *ad, float *dinp, const float *dout, int ldo,
                          const float *inp, float *scratch, const struct lora_rows *rows, int N) {
    const struct dropout *dp;
    const size_t r0 = (size_t)lora_segment(rows, ad, &N, &dp);
    if (N == 0) return;
    float *xd = scratch;                         /* (N,in) */
    float *du = scratch + (size_t)N * ad->in;    /* (N,r) */
    const float *dslice = dout + r0 * ldo + ad->col0, *u = ad->u + r0 * ad->r;
    dinp += r0 * ad->in;
    /* dB (out,r) += s · doutᵀ · u;  du (N,r) = s · dout · B */
    gemm(1, 0, ad->out, ad->r, N, ad->scale, dslice, ldo, u, ad->r, 1.0f, ad->dB, ad->r);
    gemm(0, 0, N, ad->r, ad->out, ad->scale, dslice, ldo, ad->B, ad->r, 0.0f, du, ad->r);
    const float *x = inp + r0 * ad->in;
    if (dropout_on(dp)) {
        dropout_apply(xd, x, dp, ad, N);
        x = xd;
    }
    /* dA (r,in) += duᵀ · x */
    gemm(1, 0, ad->r, ad->in, N, 1.0f, du, ad->r, x, ad->in, 1.0f, ad->dA, ad->in);
    if (!dropout_on(dp)) {
        gemm(0, 0, N, ad->in, ad->r, 1.0f, du, ad->r, ad->A, ad->in, 1.0f, dinp, ad->in);
        return;
    }
    /* dinp += mask/(1-p) ⊙ (du · A) */
    gemm(0, 0, N, ad->in, ad->r, 1.0f, du, ad->r, ad->A, ad->in, 0.0f, xd, ad->in);
    dropout_apply(xd, xd, dp, ad, N);
    for (size_t k = 0; k < (size_t)N * ad->in; k++) dinp[k] += xd[k];
}

/* out (N, out) += b (out) on every row. */
KERNEL_CLONES static void bias_add(float *out, const float *b, int N, int cols) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *o = out + (size_t)n * cols;
#pragma omp simd
        for (int j = 0; j < cols; j++) o[j] += b[j];
    }
}

/* C (N, cols) = A (N, k) · op(W) + BIAS (cols; NULL for none) + beta · C: the product with
 * the base weight, in f32, bf16 or quantized, where TRANS_W transposes W as stored (LDW
 * its row stride; a quantized W is stored (out, in), so FORWARD says which way). The
 * bf16 matmul adds the bias in its own pass over C. */
static void weight_product(const struct linear *l, int forward, int trans_w, int N, int cols, int k, const float *A,
                           const float *bias, float beta, float *C) {
    const int ldw = l->layout == GEMM_LAYOUT_IN_OUT ? l->out : l->in;
    if (l->wq) {
        gemm_quant(forward, N, cols, k, A, k, l->wq, beta, bias, C, cols);
        return;
    }
    if (l->w16) {
        gemm_bf16(trans_w, N, cols, k, 1.0f, A, k, l->w16, ldw, beta, bias, C, cols);
        return;
    }
    gemm(0, trans_w, N, cols, k, 1.0f, A, k, l->w, ldw, beta, C, cols);
    if (bias) bias_add(C, bias, N, cols);
}

void linear_forward(const struct linear *l, float *out, const float *inp, float *scratch,
                    const struct lora_rows *rows, int N) {
    weight_product(l, 1, l->layout == GEMM_LAYOUT_OUT_IN, N, l->out, l->in, inp, l->b, 0.0f, out);
    for (int i = 0; i < l->n_lora; i++) lora_forward(l->lora[i], out, l->out, inp, scratch, rows, N);
}

void linear_backward(const struct linear *l, float *dinp, const float *dout, const float *inp, float *scratch,
                     const struct lora_rows *rows, int N) {
    weight_product(l, 0, l->layout == GEMM_LAYOUT_IN_OUT, N, l->in, l->out, dout, NULL, 1.0f, dinp);
    if (l->dw && l->layout == GEMM_LAYOUT_IN_OUT)
        gemm(1, 0, l->in, l->out, N, 1.0f, inp, l->in, dout, l->out, 1.0f, l->dw, l->out);
    else if (l->dw)
        gemm(1, 0, l->out, l->in, N, 1.0f, dout, l->out, inp, l->in, 1.0f, l->dw, l->in);
    if (l->db) /* one column per thread, rows in order */
#pragma omp parallel for schedule(static)
        for (int o = 0; o < l->out; o++)
            for (int n = 0; n < N; n++) l->db[o] += dout[(size_t)n * l->out + o];
    for (int i = 0; i < l->n_lora; i++) lora_backward(l->lora[i], dinp, dout, l->out, inp, scratch, rows, N);
}
