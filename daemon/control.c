/*
 * control.c: control requests against the job table (control.h).
 */
#include "control.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fileio.h"
#include "frame.h"
#include "jobs.h"

#define CONTROL_LOG_CHUNK 65536 /* most log bytes one answer carries */

static int job_ended(const Lorad__JobRecord *r) {
    return r->state != LORAD__JOB_STATE__STATE_QUEUED && r->state != LORAD__JOB_STATE__STATE_RUNNING;
}

/* Answers with job ID's record. */
static int one_job(struct jobs *j, uint64_t id, Lorad__Response *res, Lorad__JobRecord **slot) {
    *slot = jobs_find(j, id);
    if (!*slot) return err_set("job", "no job %" PRIu64, id);
    res->jobs = slot;
    res->n_jobs = 1;
    return 0;
}

/* The daemon itself: the resident base and the jobs not yet ended. */
static void daemon_status(struct jobs *j, Lorad__Response *res) {
    res->jobs = xcalloc(j->n + 1, sizeof *res->jobs);
    for (size_t i = 0; i < j->n; i++)
        if (!job_ended(j->r[i])) res->jobs[res->n_jobs++] = j->r[i];
    res->base_loads = j->base_loads;
    res->base_model = j->base_model ? j->base_model : "";
    res->draining = j->draining;
}

/* Up to CONTROL_LOG_CHUNK bytes of job ID's log from the request's offset. */
static int logs_read(struct jobs *j, const Lorad__Request *req, Lorad__Response *res) {
    Lorad__JobRecord *r = jobs_find(j, req->job);
    if (!r) return err_set("logs", "no job %" PRIu64, req->job);
    char *path = path_join(r->spec->out, req->metrics ? "metrics.jsonl" : "train.log");
    FILE *f = fopen(path, "rb");
    free(path);
    uint64_t at = req->offset;
    uint8_t *buf = xmalloc(CONTROL_LOG_CHUNK);
    size_t got = 0;
    int at_end = 1;
    if (f && fseeko(f, (off_t)at, SEEK_SET) == 0) {
        got = fread(buf, 1, CONTROL_LOG_CHUNK, f);
        at_end = got < CONTROL_LOG_CHUNK;
    }
    if (f) fclose(f);
    res->log.data = buf;
    res->log.len = got;
    res->next_offset = at + got;
    res->log_done = at_end && job_ended(r);
    return 0;
}

static int shutdown_begin(struct jobs *j, const Lorad__Request *req) {
    j->draining = 1;
    j->now |= req->now;
    pthread_cond_broadcast(&j->cv);
    return 0;
}

static int dispatch(struct jobs *j, const Lorad__Request *req, Lorad__Response *res, Lorad__JobRecord **slot) {
    switch (req->command) {
    case LORAD__COMMAND__COMMAND_STATUS:
        if (req->job) return one_job(j, req->job, res, slot);
        daemon_status(j, res);
        return 0;
    case LORAD__COMMAND__COMMAND_SUBMIT: {
        if (!req->spec) return err_set("submit", "the request carries no job spec");
        uint64_t id = jobs_submit(j, req->spec);
        return id ? one_job(j, id, res, slot) : -1;
    }
    case LORAD__COMMAND__COMMAND_LIST:
        res->jobs = j->r;
        res->n_jobs = j->n;
        return 0;
    case LORAD__COMMAND__COMMAND_CANCEL:
        return jobs_cancel(j, req->job) ? -1 : one_job(j, req->job, res, slot);
    case LORAD__COMMAND__COMMAND_LOGS:
        return logs_read(j, req, res);
    case LORAD__COMMAND__COMMAND_SHUTDOWN:
        return shutdown_begin(j, req);
    default:
        return err_set("request", "unknown command %d", (int)req->command);
    }
}

uint8_t *control_handle(void *ctx, const Lorad__Request *req, size_t *n) {
    struct jobs *j = ctx;
    Lorad__Response res = LORAD__RESPONSE__INIT;
    Lorad__JobRecord *slot = NULL;
    res.version = FRAME_VERSION;
    pthread_mutex_lock(&j->mu);
    int rc = dispatch(j, req, &res, &slot);
    uint8_t *frame = rc ? frame_error(n) : (res.ok = 1, frame_pack(&res.base, n));
    pthread_mutex_unlock(&j->mu);
    if (res.jobs != &slot && res.jobs != j->r) free(res.jobs);
    free(res.log.data);
    return frame;
}
