/*
 * decode.h: generation, one token at a time, with a KV cache: each step runs the model on
 * a single new position and attends over the cached keys and values of all earlier ones,
 * so a sequence of n tokens costs n single-row passes instead of n full forwards. The
 * decoder holds several sequences (slots), each with its own cache and position; a step
 * runs one row for each of some of them together, so their products share the frozen
 * weights, and a model of several adapter sets adapts each row by its slot's set
 * (struct lora_rows). The family's own step (struct arch) runs the layers; this file
 * holds the caches.
 */
#ifndef LORAD_DECODE_H
#define LORAD_DECODE_H

#include <stdint.h>

#include "model.h"

struct decoder {
    struct model *m;
    int32_t slots, max_t;
    int32_t *pos;               /* (slots) each slot's next position */
    int32_t kv;                 /* floats cached per position and layer: NKV·hd */
    int32_t qn;                 /* floats of a row's projections in q */
    float *block;               /* every buffer below, one allocation */
    float *k, *v;               /* (slots, L, max_t, kv): the caches */
    float *x, *ln, *tmp;        /* (slots, C) */
    float *q;                   /* (slots, qn): GPT-2's fused q|k|v, or the Llama family's q */
    float *kn, *vn;             /* (slots, kv): the Llama family's new k and v */
    float *att;                 /* (slots, Q): attention output, Q = NH·hd */
    float *f1, *f2, *f3;        /* (slots, F): MLP */
    float *scores;              /* (max_t) */
    float *cos, *sin;           /* (max_t, hd/2): rotary tables (Llama family) */
    float *logits;              /* (slots, V) */
    float *mean, *rstd;         /* (slots) */
    float *scratch;             /* linear scratch for every slot's row */
    /* the step under way */
    int32_t n;                  /* its rows */
    const int32_t *slot;        /* (n) the slot of each row */
    const struct lora_rows *rows;
};

/* A decoder of SLOTS sequences of up to MAX_T positions each (at most the model's
 * n_positions). */
void decoder_init(struct decoder *d, struct model *m, int32_t slots, int32_t max_t);
void decoder_free(struct decoder *d);
/* Runs TOKENS[r] at the next position of slot SLOT[r] for N rows; ROWS gives each adapter
 * set its rows (NULL for a model of one set). Returns the logits (N, V), row r the next
 * token's of slot SLOT[r]. */
const float *decoder_step(struct decoder *d, const int32_t *tokens, const int32_t *slot, int32_t n,
                          const struct lora_rows *rows);
/* For the families' steps: caches K and V (kv floats each) of row R's new position in
 * layer L, and writes causal attention of Q (NH heads of HD, grouped over NKV) into row
 * R of d->att. */
void decoder_attend(struct decoder *d, int l, int r, const float *q, const float *k, const float *v, int NH, int NKV,
                    int hd);
/* Picks the next token from LOGITS (V): the argmax when TEMPERATURE is 0, otherwise a
 * draw from softmax(logits / temperature) over the TOP_K largest (all when 0), from the
 * counter RNG at (SEED, POSITION). */
int32_t decoder_pick(const float *logits, int32_t V, float temperature, int32_t top_k, uint64_t seed,
                     int64_t position);

#endif
