/*
 * train.h: one training job from its spec to its outputs: OUT/metrics.jsonl, and the
 * trained adapter in PEFT format (OUT/adapter/) or, in full mode, the trained model
 * (OUT/model/).
 */
#ifndef LORAD_TRAIN_H
#define LORAD_TRAIN_H

#include "lorad.pb-c.h"

/* Runs JOB (already validated). Returns 0, or -1 with an error. */
int train_run(const Lorad__JobSpec *job);

#endif
