/*
 * train.h: one training job from its spec to its outputs, on every rank of the world:
 * OUT/metrics.jsonl and the progress line (rank 0), and the trained adapter in PEFT
 * format (OUT/adapter/) or, in full mode, the trained model (OUT/model/).
 */
#ifndef LORAD_TRAIN_H
#define LORAD_TRAIN_H

#include "comm.h"
#include "lorad.pb-c.h"

/* train_run's result when a signal stopped the run after a checkpoint. */
#define TRAIN_STOPPED 1

/* Runs JOB (validated) on every rank of COMM. Returns 0, TRAIN_STOPPED, or -1 on every
 * rank when any rank failed, with rank 0's error naming the failing rank. */
int train_run(const Lorad__JobSpec *job, struct comm *comm);

#endif
