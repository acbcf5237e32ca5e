/*
 * client.c: the client commands (client.h).
 */
#include "client.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "flags.h"
#include "error.h"
#include "fileio.h"
#include "frame.h"
#include "netaddr.h"
#include "protojson.h"

#define CLIENT_TIMEOUT_MS 30000
#define CLIENT_FOLLOW_MS 200 /* logs --follow: the pause between polls */

/* A connected socket to the daemon CS names; -1 with an error. */
static int daemon_connect(const Lorad__ClientSpec *cs) {
    if (cs->connect[0]) {
        struct addrinfo *ai;
        if (netaddr_resolve("--connect", cs->connect, 0, &ai)) return -1;
        int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
        freeaddrinfo(ai);
        if (fd < 0) return err_set("--connect", "cannot reach %s: %s", cs->connect, strerror(errno));
        return fd;
    }
    const char *path = cs->socket[0] ? cs->socket : getenv("LORAD_SOCKET");
    if (!path || !path[0]) {
        err_set("--socket", "no daemon given");
        return err_hint("--socket STATE/lorad.sock, --connect HOST:PORT, or LORAD_SOCKET");
    }
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) return err_set(path, "is too long for a Unix socket path");
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) return fd;
    err_set(path, "cannot connect: %s", strerror(errno));
    if (fd >= 0) close(fd);
    return err_hint("is lorad serve running with this socket?");
}

/* Sends REQ on FD and waits for the answer; NULL with an error, or with the daemon's. */
static Lorad__Response *request_send(int fd, Lorad__Request *req) {
    size_t n;
    uint8_t *frame = frame_pack(&req->base, &n);
    int rc = frame_send(fd, frame, n);
    free(frame);
    Lorad__Response *res = rc ? NULL : frame_response_recv(fd, CLIENT_TIMEOUT_MS);
    if (res && !res->ok) {
        err_set("daemon", "%s", res->error);
        lorad__response__free_unpacked(res, NULL);
        return NULL;
    }
    return res;
}

static const char *state_name(Lorad__JobState s) {
    static const char *const names[] = {"QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "?";
}

static void time_print(const char *label, double t) {
    if (t <= 0) return;
    char buf[32];
    time_t s = (time_t)t;
    strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", localtime(&s));
    printf("  %-10s %s\n", label, buf);
}

static void record_print(const Lorad__JobRecord *r) {
    printf("job %" PRIu64 ": %s%s\n", r->id, state_name(r->state),
           r->cancel_requested && r->state == LORAD__JOB_STATE__STATE_RUNNING ? " (cancelling)" : "");
    printf("  %-10s %s\n  %-10s %s\n", "model", r->spec->model, "data", r->spec->data);
    printf("  %-10s %" PRId64 "/%" PRId64, "step", r->step, r->spec->steps);
    if (r->step) printf(", loss %.4f", r->loss);
    printf("\n");
    time_print("submitted", r->submitted_at);
    time_print("started", r->started_at);
    time_print("finished", r->finished_at);
    if (r->attempts)
        printf("  %-10s %d, start latency %.3f s, base model %s\n", "attempts", r->attempts, r->start_latency_s,
               r->base_reused ? "resident" : "loaded");
    printf("  %-10s %s\n", "output", r->spec->out);
    if (r->error[0]) printf("  %-10s %s\n", "error", r->error);
}

static void table_print(Lorad__JobRecord *const *r, size_t n) {
    printf("%-6s %-10s %-13s %-9s %s\n", "JOB", "STATE", "STEP", "LOSS", "MODEL");
    for (size_t i = 0; i < n; i++) {
        char step[32], loss[16] = "-";
        snprintf(step, sizeof step, "%" PRId64 "/%" PRId64, r[i]->step, r[i]->spec->steps);
        if (r[i]->step) snprintf(loss, sizeof loss, "%.4f", r[i]->loss);
        printf("%-6" PRIu64 " %-10s %-13s %-9s %s\n", r[i]->id, state_name(r[i]->state), step, loss,
               r[i]->spec->model);
    }
}

static json_t *records_json(Lorad__JobRecord *const *r, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, proto_to_json(&r[i]->base));
    return a;
}

static void json_print(json_t *v) {
    char *text = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY);
    puts(text);
    free(text);
    json_decref(v);
}

/* Prints the answer to COMMAND. */
static void response_print(const Lorad__ClientSpec *cs, Lorad__Command command, const Lorad__Response *res) {
    if (cs->json) {
        json_t *v = command == LORAD__COMMAND__COMMAND_LIST ? records_json(res->jobs, res->n_jobs)
                    : command == LORAD__COMMAND__COMMAND_SHUTDOWN ? json_pack("{s:b}", "ok", 1)
                    : command == LORAD__COMMAND__COMMAND_STATUS && !cs->job
                        ? json_pack("{s:s, s:I, s:b, s:o}", "base_model", res->base_model, "base_loads",
                                    (json_int_t)res->base_loads, "draining", res->draining, "jobs",
                                    records_json(res->jobs, res->n_jobs))
                        : proto_to_json(&res->jobs[0]->base);
        json_print(v);
        return;
    }
    switch (command) {
    case LORAD__COMMAND__COMMAND_SUBMIT:
        printf("%" PRIu64 "\n", res->jobs[0]->id);
        break;
    case LORAD__COMMAND__COMMAND_LIST:
        table_print(res->jobs, res->n_jobs);
        break;
    case LORAD__COMMAND__COMMAND_SHUTDOWN:
        printf("daemon: shutting down%s\n", cs->now ? " now; the running job resumes at the next start"
                                                    : " after the queued jobs");
        break;
    case LORAD__COMMAND__COMMAND_STATUS:
        if (!cs->job) {
            printf("daemon: %s; base model %s (loaded %" PRIu64 " time%s)\n", res->draining ? "draining" : "serving",
                   res->base_model[0] ? res->base_model : "none", res->base_loads, res->base_loads == 1 ? "" : "s");
            table_print(res->jobs, res->n_jobs);
            break;
        }
        /* fall through */
    default:
        record_print(res->jobs[0]);
    }
}

/* logs: prints the job's log from the start; with --follow, until the job ends. */
static int logs_stream(int fd, const Lorad__ClientSpec *cs, Lorad__Request *req) {
    req->metrics = cs->json;
    for (;;) {
        Lorad__Response *res = request_send(fd, req);
        if (!res) return -1;
        if (res->log.len) fwrite(res->log.data, 1, res->log.len, stdout); /* an empty log's data is NULL */
        fflush(stdout);
        int done = res->log_done, more = res->next_offset > req->offset;
        req->offset = res->next_offset;
        lorad__response__free_unpacked(res, NULL);
        if (done || (!cs->follow && !more)) return 0;
        if (!more) nanosleep(&(struct timespec){.tv_nsec = CLIENT_FOLLOW_MS * 1000000L}, NULL);
    }
}

/* A path as the daemon must see it: absolute. The arena keeps the copy. */
static void path_absolute(char **path, struct flag_arena *arena) {
    if (!(*path)[0] || (*path)[0] == '/') return;
    char cwd[4096];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    *path = flag_arena_keep(arena, path_join(cwd, *path));
}

/* The request's command: the proto's Command value whose short name is CMD. */
static Lorad__Command command_of(const char *cmd) {
    char name[64];
    for (unsigned i = 0; i < lorad__command__descriptor.n_values; i++)
        if (!strcmp(proto_enum_short(lorad__command__descriptor.values[i].name, name, sizeof name), cmd))
            return (Lorad__Command)lorad__command__descriptor.values[i].value;
    CHECK(0 && "a client command without a Command value");
    return LORAD__COMMAND__COMMAND_STATUS;
}

/* Sends the request and prints the answer. */
static int client_request(int fd, const Lorad__ClientSpec *cs, Lorad__Command command, Lorad__JobSpec *submit,
                          const char *token) {
    Lorad__Request req = LORAD__REQUEST__INIT;
    req.version = FRAME_VERSION;
    req.command = command;
    req.token = token ? (char *)token : "";
    req.spec = submit;
    req.job = cs->job;
    req.now = cs->now;
    if (command == LORAD__COMMAND__COMMAND_LOGS) return logs_stream(fd, cs, &req);
    Lorad__Response *res = request_send(fd, &req);
    if (!res) return -1;
    response_print(cs, command, res);
    lorad__response__free_unpacked(res, NULL);
    return 0;
}

int client_run(const struct command_call *call) {
    const Lorad__ClientSpec *cs = (const Lorad__ClientSpec *)call->spec[0];
    Lorad__Command command = command_of(call->name);
    struct flag_arena arena = {0};
    Lorad__JobSpec spec, *submit = NULL;
    if (call->spec[1]) { /* submit: a copy whose relative paths become absolute */
        spec = *(const Lorad__JobSpec *)call->spec[1];
        submit = &spec;
        path_absolute(&spec.model, &arena);
        path_absolute(&spec.data, &arena);
        path_absolute(&spec.val, &arena);
        path_absolute(&spec.init_adapter, &arena);
    }
    int rc = 0;
    int needs_job = command == LORAD__COMMAND__COMMAND_CANCEL || command == LORAD__COMMAND__COMMAND_LOGS;
    if (needs_job && !cs->job) rc = err_set(call->name, "which job?"), err_hint("lorad %s JOB", call->name);
    if (rc == 0 && cs->connect[0] && !cs->token_file[0])
        rc = err_set("--connect", "needs --token-file"), err_hint("the file holding the daemon's token");
    char *token = rc == 0 && cs->connect[0] ? frame_token_read(cs->token_file) : NULL;
    if (rc == 0 && cs->connect[0] && !token) rc = -1;
    int fd = rc == 0 ? daemon_connect(cs) : -1;
    if (fd >= 0) {
        rc = client_request(fd, cs, command, submit, token);
        close(fd);
    }
    free(token);
    flag_arena_free(&arena);
    return fd < 0 ? -1 : rc;
}
