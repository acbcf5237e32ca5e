/*
 * jobs.c: the daemon's job table (jobs.h).
 */
#include "jobs.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "error.h"
#include "fileio.h"
#include "job.h"
#include "jobrec.h"
#include "protojson.h"
#include "rundir.h"
#include "signals.h"
#include "train.h"

#define JOBS_POLL_MS 100 /* how often an idle daemon looks at signals */

static double wall_now(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + 1e-6 * (double)tv.tv_usec;
}

static void record_skipped(const char *why) { fprintf(stderr, "lorad: skipping a job record: %s\n", why); }

static void table_add(struct jobs *j, Lorad__JobRecord *r) {
    if (j->n == j->cap) j->r = xrealloc(j->r, (j->cap = j->cap ? 2 * j->cap : 16) * sizeof *j->r);
    j->r[j->n++] = r;
    if (r->id >= j->next_id) j->next_id = r->id + 1;
}

int jobs_open(struct jobs *j, const char *state) {
    memset(j, 0, sizeof *j);
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->state = xstrdup(state);
    j->next_id = 1;
    Lorad__JobRecord **all;
    size_t n;
    if (jobrec_load_all(state, &all, &n, record_skipped)) return -1;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        table_add(j, all[i]);
        if (all[i]->state != LORAD__JOB_STATE__STATE_RUNNING) continue;
        /* the last daemon died while it ran: queue it again, or end it if it was being cancelled */
        all[i]->state = all[i]->cancel_requested ? LORAD__JOB_STATE__STATE_CANCELLED : LORAD__JOB_STATE__STATE_QUEUED;
        if (rc == 0) rc = jobs_save(j, all[i]);
    }
    free(all);
    return rc;
}

void jobs_close(struct jobs *j) {
    for (size_t i = 0; i < j->n; i++) lorad__job_record__free_unpacked(j->r[i], NULL);
    free(j->r);
    free(j->state);
    free(j->base_model);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    memset(j, 0, sizeof *j);
}

Lorad__JobRecord *jobs_find(struct jobs *j, uint64_t id) {
    for (size_t i = 0; i < j->n; i++)
        if (j->r[i]->id == id) return j->r[i];
    return NULL;
}

int jobs_save(struct jobs *j, Lorad__JobRecord *r) { return jobrec_write(j->state, r); }

/* Replaces *FIELD, a string of a record that protobuf-c frees (with free(), unless it
 * is the shared empty string), by VALUE. */
static void string_replace(char **field, const char *value) {
    if (*field != protobuf_c_empty_string) free(*field);
    *field = value[0] ? xstrdup(value) : (char *)protobuf_c_empty_string;
}

/* A submitted spec: absolute paths (the daemon does not share the client's working
 * directory), the checks of `lorad train` and its model-dependent values (--seq), and
 * the job's directory, which must be new (or, with --overwrite, is emptied of an
 * unrecorded run's files). */
static int spec_check(Lorad__JobSpec *spec) {
    const char *const paths[][2] = {{"--model", spec->model}, {"--data", spec->data}, {"--val", spec->val},
                                    {"--init-adapter", spec->init_adapter}};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (paths[i][1] && paths[i][1][0] && paths[i][1][0] != '/') {
            err_set(paths[i][0], "'%s' is a relative path", paths[i][1]);
            return err_hint("the daemon runs elsewhere; lorad submit makes paths absolute");
        }
    return job_validate(spec) || job_resolve(spec) || rundir_claim(spec->out, NULL, spec->overwrite, 1) ? -1 : 0;
}

uint64_t jobs_submit(struct jobs *j, const Lorad__JobSpec *spec) {
    if (j->draining) {
        err_set("submit", "the daemon is shutting down");
        err_hint("submit to the next daemon");
        return 0;
    }
    Lorad__JobRecord *r = xcalloc(1, sizeof *r); /* freed by protobuf-c's free_unpacked: its allocator is malloc */
    lorad__job_record__init(r);
    r->id = j->next_id;
    r->submitted_at = wall_now();
    r->spec = (Lorad__JobSpec *)proto_copy(&spec->base);
    char *out = jobrec_dir(j->state, r->id);
    string_replace(&r->spec->out, out);
    string_replace(&r->spec->resume, "auto");
    free(out);
    if (spec_check(r->spec) || jobs_save(j, r)) {
        lorad__job_record__free_unpacked(r, NULL);
        return 0;
    }
    table_add(j, r);
    pthread_cond_broadcast(&j->cv);
    return r->id;
}

int jobs_cancel(struct jobs *j, uint64_t id) {
    Lorad__JobRecord *r = jobs_find(j, id);
    if (!r) return err_set("cancel", "no job %" PRIu64, id);
    if (r->state == LORAD__JOB_STATE__STATE_QUEUED) {
        r->state = LORAD__JOB_STATE__STATE_CANCELLED;
        r->finished_at = wall_now();
    } else if (r->state == LORAD__JOB_STATE__STATE_RUNNING) {
        r->cancel_requested = 1; /* the main thread ends it at the next step */
    } else {
        return err_set("cancel", "job %" PRIu64 " has already ended", id);
    }
    return jobs_save(j, r);
}

/* The first QUEUED job, or NULL. */
static Lorad__JobRecord *queue_head(struct jobs *j) {
    for (size_t i = 0; i < j->n; i++)
        if (j->r[i]->state == LORAD__JOB_STATE__STATE_QUEUED) return j->r[i];
    return NULL;
}

uint8_t *jobs_next(struct jobs *j, uint64_t *id, size_t *n) {
    pthread_mutex_lock(&j->mu);
    Lorad__JobRecord *r;
    while (!(r = queue_head(j)) || j->now) {
        if (j->now || j->draining || signals_stop_requested(NULL)) break;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += JOBS_POLL_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&j->cv, &j->mu, &until);
    }
    uint8_t *bytes = NULL;
    if (r && !j->now && !signals_stop_requested(NULL)) {
        r->state = LORAD__JOB_STATE__STATE_RUNNING;
        r->started_at = wall_now();
        r->attempts++;
        string_replace(&r->error, "");
        if (jobs_save(j, r)) fprintf(stderr, "lorad: %s\n", err_msg());
        j->running = *id = r->id;
        *n = lorad__job_spec__get_packed_size(r->spec);
        bytes = xmalloc(*n + 1);
        lorad__job_spec__pack(r->spec, bytes);
    }
    pthread_mutex_unlock(&j->mu);
    return bytes;
}

void jobs_started(struct jobs *j, uint64_t id, double setup_s, int base_reused) {
    pthread_mutex_lock(&j->mu);
    Lorad__JobRecord *r = jobs_find(j, id);
    r->start_latency_s = setup_s;
    r->base_reused = base_reused;
    if (!base_reused) {
        j->base_loads++;
        free(j->base_model);
        j->base_model = xstrdup(r->spec->model);
    }
    pthread_mutex_unlock(&j->mu);
}

void jobs_step(struct jobs *j, uint64_t id, const struct step_report *rep) {
    pthread_mutex_lock(&j->mu);
    Lorad__JobRecord *r = jobs_find(j, id);
    r->step = rep->step;
    r->loss = rep->loss;
    pthread_mutex_unlock(&j->mu);
}

const char *jobs_stop_due(struct jobs *j, uint64_t id) {
    pthread_mutex_lock(&j->mu);
    const char *why = jobs_find(j, id)->cancel_requested ? "cancelled"
                      : j->now ? "the daemon is shutting down; the next daemon resumes the job"
                               : NULL;
    pthread_mutex_unlock(&j->mu);
    return why;
}

/* Appends "lorad: LINE" to the job's train.log, where `lorad logs` shows it. */
static void log_append(const Lorad__JobRecord *r, const char *line) {
    char *path = path_join(r->spec->out, "train.log");
    FILE *f = fopen(path, "a");
    if (f) {
        fprintf(f, "lorad: %s\n", line);
        fclose(f);
    }
    free(path);
}

void jobs_finished(struct jobs *j, uint64_t id, int rc) {
    pthread_mutex_lock(&j->mu);
    Lorad__JobRecord *r = jobs_find(j, id);
    if (rc < 0) {
        r->state = LORAD__JOB_STATE__STATE_FAILED;
        string_replace(&r->error, err_msg());
        log_append(r, err_msg());
    } else if (rc == TRAIN_STOPPED && !r->cancel_requested) {
        /* a stop signal reached a rank, or shutdown --now: the daemon stops, and the next
         * one resumes the job. A signal on a follower alone stops it too, or every later
         * job would stop after its first step on that rank's standing request. */
        r->state = LORAD__JOB_STATE__STATE_QUEUED;
        j->now = 1;
    } else {
        r->state = rc == TRAIN_STOPPED ? LORAD__JOB_STATE__STATE_CANCELLED : LORAD__JOB_STATE__STATE_SUCCEEDED;
    }
    if (r->state != LORAD__JOB_STATE__STATE_QUEUED) r->finished_at = wall_now();
    if (jobs_save(j, r)) fprintf(stderr, "lorad: %s\n", err_msg());
    j->running = 0;
    pthread_mutex_unlock(&j->mu);
}
