/*
 * serve.c: the daemon's main loop (serve.h).
 */
#include "serve.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control.h"
#include "dispatch.h"
#include "error.h"
#include "fileio.h"
#include "frame.h"
#include "jobs.h"
#include "rundata.h"
#include "server.h"
#include "signals.h"

/* What rank 0's callbacks need while job ID runs. */
struct serve_job {
    struct jobs *jobs;
    uint64_t id;
    struct train_ctl *ctl;
    int started;
};

static const char *job_stop(void *ctx) {
    struct serve_job *sj = ctx;
    return jobs_stop_due(sj->jobs, sj->id);
}

static void job_step(void *ctx, const struct step_report *r) {
    struct serve_job *sj = ctx;
    if (!sj->started) jobs_started(sj->jobs, sj->id, sj->ctl->setup_s, sj->ctl->base_reused);
    sj->started = 1;
    jobs_step(sj->jobs, sj->id, r);
}

/* STATE, private to this user, locked against a second daemon: the lock's fd, and in
 * *ABS the directory's absolute path (jobs write there whatever their cwd). */
static int state_claim(const char *state, char **abs) {
    if (dir_make(state)) return -1;
    if (chmod(state, 0700) != 0) return err_set(state, "cannot make it private: %s", strerror(errno));
    if (!(*abs = realpath(state, NULL))) return err_set(state, "cannot resolve: %s", strerror(errno));
    char *path = path_join(state, "lorad.lock");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    free(path);
    if (fd < 0) return err_set(state, "cannot create its lock file: %s", strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        err_set(state, "another lorad serve is using this state directory");
        return err_hint("lorad shutdown stops it, or give another --state");
    }
    return fd;
}

/* The packed job SPEC (N bytes) with its .jsonl or .txt data prepared in its directory
 * (rundata.h), packed again into *READY (*M bytes). -1 with an error. */
static int job_data_ready(const uint8_t *spec, size_t n, uint8_t **ready, size_t *m) {
    Lorad__JobSpec *job = lorad__job_spec__unpack(NULL, n, spec);
    if (!job) return err_set("job", "its spec does not unpack");
    int rc = rundata_job(job);
    if (rc == 0) {
        *m = lorad__job_spec__get_packed_size(job);
        *ready = xmalloc(*m + 1);
        lorad__job_spec__pack(job, *ready);
    }
    lorad__job_spec__free_unpacked(job, NULL);
    return rc;
}

/* Runs queued jobs on every rank until the table says stop. */
static void serve_loop(struct jobs *jobs, struct comm *comm, struct base *resident) {
    uint64_t id;
    size_t n;
    uint8_t *spec;
    while ((spec = jobs_next(jobs, &id, &n))) {
        struct train_ctl ctl = {.resident = resident, .stop = job_stop, .step = job_step};
        struct serve_job sj = {.jobs = jobs, .id = id, .ctl = &ctl};
        ctl.ctx = &sj;
        fprintf(stderr, "lorad: job %llu starts\n", (unsigned long long)id);
        uint8_t *ready = NULL;
        int rc = job_data_ready(spec, n, &ready, &n);
        if (rc == 0) rc = dispatch_run(comm, ready, n, &ctl);
        free(ready);
        free(spec);
        if (rc < 0) fprintf(stderr, "lorad: job %llu failed: %s\n", (unsigned long long)id, err_msg());
        jobs_finished(jobs, id, rc);
    }
}

/* Rank 0: the state, the socket, the loop. */
static int serve_lead(const Lorad__ServeSpec *spec, struct comm *comm, struct base *resident) {
    if (spec->listen[0] && !spec->token_file[0])
        return err_set("--listen", "needs --token-file"), err_hint("TCP clients must prove who they are");
    char *token = spec->listen[0] ? frame_token_read(spec->token_file) : NULL;
    if (spec->listen[0] && !token) return -1;
    char *state = NULL;
    int lock = state_claim(spec->state, &state);
    struct jobs jobs;
    int rc = lock < 0 ? -1 : jobs_open(&jobs, state);
    char *socket_path = spec->socket[0] ? xstrdup(spec->socket) : path_join(state ? state : spec->state, "lorad.sock");
    struct server_options o = {.socket_path = socket_path, .listen = spec->listen, .token = token,
                               .handle = control_handle, .ctx = &jobs};
    struct server *server = rc == 0 ? server_start(&o) : NULL;
    if (server) {
        fprintf(stderr, "lorad: serving %s on %s%s%s with %d rank%s\n", state, socket_path,
                spec->listen[0] ? " and " : "", spec->listen, comm->size, comm->size > 1 ? "s" : "");
        serve_loop(&jobs, comm, resident);
        server_stop(server);
        const char *sig;
        int on_signal = signals_stop_requested(&sig);
        fprintf(stderr, "lorad: daemon stopped on %s\n", on_signal ? sig : "request");
    }
    if (lock >= 0 && rc == 0) jobs_close(&jobs);
    if (lock >= 0) close(lock);
    free(socket_path);
    free(state);
    free(token);
    return server ? 0 : -1;
}

int serve_run(const struct command_call *call) {
    const Lorad__ServeSpec *spec = (const Lorad__ServeSpec *)call->spec[0];
    struct comm *comm = call->comm;
    signal(SIGPIPE, SIG_IGN);
    signals_install();
    struct base resident = {0};
    struct train_ctl follow = {.resident = &resident};
    int rc = 0;
    if (comm->rank == 0) {
        rc = serve_lead(spec, comm, &resident);
        dispatch_end(comm);
    } else {
        dispatch_follow(comm, &follow);
    }
    base_close(&resident);
    return rc;
}
