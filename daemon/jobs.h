/*
 * jobs.h: the daemon's job table. The records of every job the state directory holds,
 * shared by the socket thread (which submits, cancels and reads) and rank 0's main
 * thread (which runs one job at a time, first in first out). Every change of state is
 * written to the job's record file before it is visible (storage/jobrec.h), so a
 * restarted daemon picks up where the last one stopped.
 */
#ifndef LORAD_JOBS_H
#define LORAD_JOBS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "lorad.pb-c.h"
#include "metrics.h"

struct jobs {
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* a job was queued, or shutdown asked for */
    char *state;            /* the state directory */
    Lorad__JobRecord **r;   /* by increasing id */
    size_t n, cap;
    uint64_t next_id;
    uint64_t running;       /* the running job's id, 0 when idle */
    int draining;           /* no new jobs; stop when the queue is empty */
    int now;                /* stop the running job at its next step, then stop */
    uint64_t base_loads;    /* times a job loaded its base model */
    char *base_model;       /* the resident base's directory, or NULL */
};

/* Loads STATE's records: a job that was RUNNING when the last daemon died is queued
 * again (it resumes from its checkpoints). -1 with an error. */
int jobs_open(struct jobs *j, const char *state);
void jobs_close(struct jobs *j);

/* The caller holds J->mu for these. */
/* The record of job ID, or NULL. */
Lorad__JobRecord *jobs_find(struct jobs *j, uint64_t id);
/* Adds SPEC (deep-copied; out and resume are set here) as a QUEUED job. Its id, or 0
 * with an error. */
uint64_t jobs_submit(struct jobs *j, const Lorad__JobSpec *spec);
/* QUEUED: CANCELLED now; RUNNING: marked to stop at its next step. -1 with an error. */
int jobs_cancel(struct jobs *j, uint64_t id);
/* Rewrites R's record file. -1 with an error. */
int jobs_save(struct jobs *j, Lorad__JobRecord *r);

/* Rank 0's main thread, without the lock. */
/* Waits for the next QUEUED job and marks it RUNNING: its packed spec (malloc'd, *N
 * bytes) and *ID. NULL when the daemon should stop: drained, shut down now, or a signal. */
uint8_t *jobs_next(struct jobs *j, uint64_t *id, size_t *n);
/* Job ID began its first step after SETUP_S seconds, with the resident base reused or not. */
void jobs_started(struct jobs *j, uint64_t id, double setup_s, int base_reused);
/* Job ID finished its step R. */
void jobs_step(struct jobs *j, uint64_t id, const struct step_report *r);
/* Why job ID should stop at this step (cancelled, or the daemon shutting down now), or
 * NULL to go on. */
const char *jobs_stop_due(struct jobs *j, uint64_t id);
/* Job ID's run ended with train_run's RC (the error line in err_msg when RC < 0). */
void jobs_finished(struct jobs *j, uint64_t id, int rc);

#endif
