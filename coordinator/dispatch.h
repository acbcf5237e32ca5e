/*
 * dispatch.h: how rank 0 hands jobs to every rank, for `lorad train` (one job) and
 * `lorad serve` (a job after another): the packed JobSpec is broadcast over MPI and
 * every rank runs it with train_run; an empty broadcast tells the ranks to leave.
 */
#ifndef LORAD_DISPATCH_H
#define LORAD_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

#include "comm.h"
#include "train.h"

/* Rank 0: sends the N bytes of the packed, validated SPEC and runs it here too. Returns
 * train_run's result. */
int dispatch_run(struct comm *c, const uint8_t *spec, size_t n, struct train_ctl *ctl);
/* Rank 0: tells the other ranks to leave. */
void dispatch_end(struct comm *c);
/* The other ranks: run what rank 0 sends until it says leave. Returns the last job's
 * train_run result, 0 when none ran. */
int dispatch_follow(struct comm *c, struct train_ctl *ctl);

#endif
