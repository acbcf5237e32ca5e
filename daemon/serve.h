/*
 * serve.h: `lorad serve`, the daemon. Every rank runs it. Rank 0 keeps the job table of
 * --state, serves the control socket from a thread of its own, and dispatches the
 * queued jobs one at a time to every rank; the others follow. Each rank keeps the last
 * job's base model resident, so the next job on the same model starts without a reload.
 */
#ifndef LORAD_SERVE_H
#define LORAD_SERVE_H

#include "command.h"

/* Runs the daemon until a shutdown request or a signal. -1 with an error (rank 0). */
command_fn serve_run; /* CALL->spec[0]: a ServeSpec */

#endif
