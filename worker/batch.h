/*
 * batch.h: a global batch of samples read from a token dataset, and the worker's two
 * passes over it: gradients (forward + backward in micro-batches) and evaluation.
 */
#ifndef LORAD_BATCH_H
#define LORAD_BATCH_H

#include <stdint.h>

#include "model.h"
#include "tokens.h"

struct batch {
    int32_t cap, T;
    int32_t n;        /* samples loaded */
    int32_t *inp;     /* (cap,T) */
    int32_t *tgt;     /* (cap,T) */
    uint8_t *mask;    /* (cap,T) 1 = target counted */
    int32_t *start;   /* (cap,T) where each input's example starts (kernels.h) */
    int packed;       /* the samples are planned examples: START is in force */
    int32_t *window;  /* (T+1) read buffer */
    uint8_t *wmask;   /* (T+1) */
    int32_t *wstart;  /* (T+1) */
};

/* Allocates room for CAP samples of T tokens; batch_free releases it. */
void batch_init(struct batch *b, int32_t cap, int32_t T);
void batch_free(struct batch *b);
/* Reads samples IDS[0..n) into the batch; -1 with an error on I/O failure. */
int batch_load(struct batch *b, const struct tokens *ds, const int64_t *ids, int32_t n);
/* The example starts of the samples from I on, for model_forward: NULL unless packed. */
const int32_t *batch_start(const struct batch *b, int32_t i);
/* Targets counted in the loss over the loaded samples. */
int64_t batch_targets(const struct batch *b);

/* Forward and backward over the loaded samples, M at a time, accumulating the gradient
 * of SCALE · (sum of counted losses). Dropout P keyed by (SEED, STEP) and each row's
 * position in the step's global batch, FIRST being the position of row 0. Returns the
 * sum of counted losses. */
double batch_grads(struct model *m, const struct batch *b, int32_t M, float scale, float p, uint64_t seed,
                   int64_t step, int64_t first);
/* One job's part of a joint step (batch_grads_jobs): its loaded samples, of T up to the
 * model's, its micro-batch size and its dropout (P keyed by SEED, STEP and each row's
 * position in its global batch, FIRST that of its row 0). */
struct batch_job {
    const struct batch *b;
    int32_t micro;
    float p;
    uint64_t seed;
    int64_t step, first;
};
/* Forward (and with GRADS, backward) over K jobs' batches at once, job j through adapter
 * set j of a model of K sets: forward i holds the i-th micro-batch of every job that has
 * one, each sequence in a row of the model's T (a shorter one padded: not counted, and
 * after every token it could change), in JOINT (cap ≥ the micro-batches' sum, T the
 * model's). SUMS (K) += each job's sum of counted losses; with GRADS each set's gradient
 * of it accumulates: each as batch_grads (or batch_loss) gives the job alone. Several
 * jobs may share one batch: one evaluation through several adapters. */
void batch_run_jobs(struct model *m, const struct batch_job *jobs, int32_t K, struct batch *joint, int grads,
                    double *sums);
/* Forward only (no dropout), M at a time; returns the sum of counted losses. */
double batch_loss(struct model *m, const struct batch *b, int32_t M);
#endif
