/*
 * decode.h: generation, one token at a time, with a KV cache: each step runs the model on
 * a single new position and attends over the cached keys and values of all earlier ones,
 * so a sequence of n tokens costs n single-row passes instead of n full forwards. The
 * family's own step (struct arch) runs the layers; this file holds the cache.
 */
#ifndef LORAD_DECODE_H
#define LORAD_DECODE_H

#include <stdint.h>

#include "model.h"

struct decoder {
    struct model *m;
    int32_t max_t, pos;
    int32_t kv;                 /* floats cached per position and layer: NKV·hd */
    float *block;               /* every buffer below, one allocation */
    float *k, *v;               /* (L, max_t, kv): the cache */
    float *x, *ln, *tmp;        /* (C) */
    float *q;                   /* (max(3C, Q + 2·kv)): projections of the new position */
    float *att;                 /* (Q): attention output, Q = NH·hd */
    float *f1, *f2, *f3;        /* (F): MLP */
    float *scores;              /* (max_t) */
    float *cos, *sin;           /* (max_t, hd/2): rotary tables (Llama family) */
    float *logits;              /* (V) */
    float *scratch;             /* linear scratch for one row */
    float rstd;
};

/* A decoder for up to MAX_T positions (at most the model's n_positions). */
void decoder_init(struct decoder *d, struct model *m, int32_t max_t);
void decoder_free(struct decoder *d);
/* Runs TOKEN at the next position; returns the logits (V) of the token after it. */
const float *decoder_step(struct decoder *d, int32_t token);
/* For the families' steps: caches K and V (kv floats each) of the new position in layer
 * L, and writes causal attention of Q (NH heads of HD, grouped over NKV) into d->att. */
void decoder_attend(struct decoder *d, int l, const float *q, const float *k, const float *v, int NH, int NKV,
                    int hd);
/* Picks the next token from LOGITS (V): the argmax when TEMPERATURE is 0, otherwise a
 * draw from softmax(logits / temperature) over the TOP_K largest (all when 0), from the
 * counter RNG at (SEED, POSITION). */
int32_t decoder_pick(const float *logits, int32_t V, float temperature, int32_t top_k, uint64_t seed,
                     int64_t position);

#endif
