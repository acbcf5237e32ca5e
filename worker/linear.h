/*
 * linear.h: a linear map y = x·W + b with any number of LoRA adapters on slices of its
 * output, y[:, col0:col0+out] += s · dropout(x)·Aᵀ·Bᵀ. The frozen path's backward
 * computes only the input gradient; the weight gradient exists only when W trains.
 *
 * Adapters come in sets (one per job or per PEFT adapter directory) that share the
 * frozen weights. The frozen product runs once over every row; each set's adapters run
 * their thin products only over the rows that set owns, one contiguous segment each
 * (struct lora_rows), as Punica's segmented SGMV does: no per-row loop.
 */
#ifndef LORAD_LINEAR_H
#define LORAD_LINEAR_H

#include <stdint.h>

#include "gemm.h"

#define LORA_MAX_SETS 8
#define LINEAR_MAX_LORA (3 * LORA_MAX_SETS) /* a fused c_attn's q, k, v in every set */

/* Dropout on adapter inputs. Each mask is a pure function of (seed, step, the
 * sequence's position in the step's global batch, the linear it feeds), so it is the
 * same on whichever rank and in whichever micro-batch the sequence runs, and the q/k/v
 * slices of one c_attn share it, as loralib's MergedLinear and PEFT's c_attn do. */
struct dropout {
    float p;         /* 0: off */
    uint64_t seed;
    int64_t step;
    int64_t first;   /* position in the global batch of the micro-batch's first sequence */
    int32_t T;       /* rows per sequence */
};

/* The rows of a product each adapter set owns, and its dropout: set g adapts rows
 * [row0[g], row0[g+1]) with dropout dp[g], which counts sequences from the segment's
 * start. NULL in place of one: a single set over every row, without dropout. */
struct lora_rows {
    int32_t n_sets;
    int32_t row0[LORA_MAX_SETS + 1];
    struct dropout dp[LORA_MAX_SETS];
};

struct lora_adapter {
    char module[96];  /* PEFT module path, e.g. "transformer.h.0.attn.c_attn" */
    int32_t slice;    /* -1: the whole output; 0, 1, 2: q, k, v of a fused c_attn */
    int32_t id;       /* index among its set's adapters; keys A's initial values */
    int32_t set;      /* the adapter set it belongs to: its rows (struct lora_rows) */
    int32_t site;     /* index of the linear it adapts; keys the dropout mask */
    int32_t r, in, out;
    int32_t col0;     /* first output column of the base linear this adapter adds to */
    float scale;      /* alpha/r or alpha/sqrt(r) */
    float *A, *B;     /* A (r,in), B (out,r) in the trainable buffer */
    float *dA, *dB;   /* their gradients */
    float *u;         /* (N,r) dropout(x)·Aᵀ of the current micro-batch */
};

struct linear {
    const float *w;   /* (in,out) or (out,in) as LAYOUT says; NULL when W16 or WQ holds W */
    const uint16_t *w16; /* W in bf16 (frozen, --base-dtype bf16), laid out as W, or NULL */
    const struct qweight *wq; /* W quantized (frozen, --base-dtype int8, nf4), (out, in) whatever LAYOUT, or NULL */
    float *dw;        /* NULL when W is frozen */
    const float *b;   /* (out) or NULL */
    float *db;        /* NULL when frozen or without bias */
    int32_t in, out;
    enum gemm_layout layout;
    struct lora_adapter *lora[LINEAR_MAX_LORA];
    int32_t n_lora;
};

/* Nonzero when linear_backward reads its input: W or an adapter trains. */
int linear_needs_input(const struct linear *l);
/* Floats of scratch linear_forward/backward need for N rows. */
uint64_t linear_scratch_size(const struct linear *l, int N);
/* out (N,out) = inp (N,in) · W + b + adapters over their ROWS; scratch per
 * linear_scratch_size */
void linear_forward(const struct linear *l, float *out, const float *inp, float *scratch,
                    const struct lora_rows *rows, int N);
/* dinp (N,in) += dout (N,out) · Wᵀ + adapters' input gradient; accumulates dW, db, dA, dB
 * where they exist. inp (N,in) as given to the forward, with the same ROWS. */
void linear_backward(const struct linear *l, float *dinp, const float *dout, const float *inp, float *scratch,
                     const struct lora_rows *rows, int N);

#endif
