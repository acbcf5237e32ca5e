/*
 * decode.h: generation, one token at a time, with a KV cache: each step runs the model on
 * a single new position and attends over the cached keys and values of all earlier ones,
 * so a sequence of n tokens costs n single-row passes instead of n full forwards.
 */
#ifndef LORAD_DECODE_H
#define LORAD_DECODE_H

#include <stdint.h>

#include "model.h"

struct decoder {
    struct model *m;
    int32_t max_t, pos;
    float *block;               /* every buffer below, one allocation */
    float *k, *v;               /* (L, max_t, C): the cache */
    float *x, *ln, *att, *tmp;  /* (C) */
    float *qkv;                 /* (3C) */
    float *fch, *fch_gelu;      /* (F) */
    float *scores;              /* (max_t) */
    float *logits;              /* (V) */
    float *scratch;             /* linear scratch for one row */
    float mean, rstd;
};

/* A decoder for up to MAX_T positions (at most the model's n_positions). */
void decoder_init(struct decoder *d, struct model *m, int32_t max_t);
void decoder_free(struct decoder *d);
/* Runs TOKEN at the next position; returns the logits (V) of the token after it. */
const float *decoder_step(struct decoder *d, int32_t token);
/* Picks the next token from LOGITS (V): the argmax when TEMPERATURE is 0, otherwise a
 * draw from softmax(logits / temperature) over the TOP_K largest (all when 0), from the
 * counter RNG at (SEED, POSITION). */
int32_t decoder_pick(const float *logits, int32_t V, float temperature, int32_t top_k, uint64_t seed,
                     int64_t position);

#endif
