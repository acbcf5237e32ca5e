/*
 * signals.h: SIGTERM, SIGUSR1 and SIGINT ask the run to stop at the next step boundary, and
 * so does a SIGCONT while the process runs (the first signal mpirun sends its ranks when it
 * is given SIGTERM or SIGINT; signals.c):
 * every rank folds the request into the step's all-reduce, so all ranks agree, write a
 * checkpoint and exit with TRAIN_EXIT_REQUEUE. A second SIGINT exits at once.
 */
#ifndef LORAD_SIGNALS_H
#define LORAD_SIGNALS_H

/* The exit code of a run that checkpointed on a signal: "please requeue" (EX_TEMPFAIL). */
#define TRAIN_EXIT_REQUEUE 75

/* Blocks the stop signals in this thread, and so in every thread made after it. Call it
 * first in main, before any library starts a thread. */
void signals_block(void);
/* Starts the thread that takes the stop signals; until signals_install they end the
 * process as by default. An MPI process calls it after MPI_Init (comm_init does). */
void signals_start(void);
/* From now on a stop signal requests a stop instead. */
void signals_install(void);
/* Whether a stop was requested; the name of the first signal in *NAME. */
int signals_stop_requested(const char **name);

#endif
