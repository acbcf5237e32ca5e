/*
 * eval.h: the loss of a model over a token dataset, split across the ranks in contiguous
 * parts and normalised by the global count of target tokens: the validation loss of
 * training and `lorad eval`.
 */
#ifndef LORAD_EVAL_H
#define LORAD_EVAL_H

#include <stdint.h>

#include "batch.h"
#include "comm.h"
#include "model.h"
#include "tokens.h"

struct eval_result {
    double loss;     /* mean over counted targets (NaN when none) */
    int64_t targets; /* counted targets */
    int64_t samples;
};

/* Evaluates the first MAX_BATCHES micro-batches of M sequences of DS (every sample when
 * 0), reading through B, on every rank of C: R[0] the loss. A model of K > 1 adapter sets
 * runs B's samples once through every set in one forward (K·cap rows): R (K) each set's
 * loss. -1 on every rank when one failed. */
int eval_run(struct comm *c, struct model *m, struct batch *b, const struct tokens *ds, int32_t M,
             int64_t max_batches, struct eval_result *r);

#endif
