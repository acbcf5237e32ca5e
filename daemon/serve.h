/*
 * serve.h: `lorad serve`, the daemon. Every rank runs it. Rank 0 keeps the job table of
 * --state, serves the control socket from a thread of its own, and dispatches the
 * queued jobs one at a time to every rank; the others follow. Each rank keeps the last
 * job's base model resident, so the next job on the same model starts without a reload.
 */
#ifndef LORAD_SERVE_H
#define LORAD_SERVE_H

#include "comm.h"
#include "lorad.pb-c.h"

/* Runs the daemon until a shutdown request or a signal. -1 with an error (rank 0). */
int serve_run(const Lorad__ServeSpec *spec, struct comm *comm);

#endif
