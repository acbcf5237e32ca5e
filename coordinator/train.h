/*
 * train.h: one training job from its spec to its outputs, on every rank of the world:
 * OUT/metrics.jsonl and the progress line (rank 0), and the trained adapter in PEFT
 * format (OUT/adapter/) or, in full mode, the trained model (OUT/model/).
 */
#ifndef LORAD_TRAIN_H
#define LORAD_TRAIN_H

#include "base.h"
#include "comm.h"
#include "lorad.pb-c.h"
#include "metrics.h"

/* train_run's result when a signal stopped the run after a checkpoint. */
#define TRAIN_STOPPED 1

/* How a caller that outlives one job (the daemon) takes part in it. */
struct train_ctl {
    struct base *resident; /* every rank: the base kept between jobs, reopened when JOB's differs */
    const char *(*stop)(void *ctx); /* rank 0, each step: a reason stops the run after a checkpoint */
    void (*step)(void *ctx, const struct step_report *r); /* rank 0, after each step */
    void *ctx;
    int base_reused;       /* out: the resident base served the job as it was */
    double setup_s;        /* out: seconds from the start to the first step */
};

/* Runs JOB (validated) on every rank of COMM; CTL may be NULL. Returns 0, TRAIN_STOPPED,
 * or -1 on every rank when any rank failed, with rank 0's error naming the failing rank. */
int train_run(const Lorad__JobSpec *job, struct comm *comm, struct train_ctl *ctl);

#endif
