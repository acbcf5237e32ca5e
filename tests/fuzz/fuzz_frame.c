/*
 * fuzz_frame.c: libFuzzer target for the daemon's control protocol: the bytes a client
 * sends down the socket.
 *
 * The input is a stream, cut into frames by frame_request_take as the server does: each
 * decoded request is answered by control_handle against a job table in a scratch state
 * directory (one queued job with a log, on a model directory that holds only a
 * config.json, which the daemon reads at submit), except submit, whose spec is fuzz_job_spec's
 * business and would fill the directory. Invariants: a decoded frame lies inside the
 * input and speaks FRAME_VERSION; a refused one leaves an error line; every answer is
 * one whole frame that decodes as a lorad.Response.
 */
#include "fuzz_util.h"

#include "control.h"
#include "error.h"
#include "flags.h"
#include "frame.h"
#include "jobs.h"

static struct jobs table;
static char state[256];

static void state_remove(void) {
    static const char *const files[] = {"jobs/1/job.pb", "jobs/1/train.log", "jobs/1", "jobs",
                                        "model/config.json", "model", ""};
    char path[512];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", state, files[i]);
        remove(path);
    }
}

static void table_setup(void) {
    snprintf(state, sizeof state, "%s/lorad-fuzz-state-XXXXXX", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(state)) fuzz_die("mkdtemp");
    atexit(state_remove);
    if (jobs_open(&table, state)) fuzz_die(err_msg());
    char model[300], config[320];
    snprintf(model, sizeof model, "%s/model", state);
    snprintf(config, sizeof config, "%s/config.json", model);
    FILE *c = mkdir(model, 0700) == 0 ? fopen(config, "w") : NULL;
    if (!c) fuzz_die("model/config.json");
    fputs("{\"n_embd\":8,\"n_head\":2,\"n_layer\":1,\"n_positions\":16,\"vocab_size\":32}\n", c);
    fclose(c);
    Lorad__JobSpec spec;
    flags_defaults(&spec.base, &lorad__job_spec__descriptor);
    spec.model = model;
    spec.data = "/data/train.bin";
    if (jobs_submit(&table, &spec) != 1) fuzz_die(err_msg());
    char log[512];
    snprintf(log, sizeof log, "%s/jobs/1/train.log", state);
    FILE *f = fopen(log, "w");
    if (!f) fuzz_die("train.log");
    fputs("step 1/1000 | loss 5.0000\nlorad: checkpoint somewhere\n", f);
    fclose(f);
}

static void answer_check(const uint8_t *frame, size_t n) {
    FUZZ_REQUIRE(n >= FRAME_HDR);
    uint32_t len = (uint32_t)frame[0] << 24 | (uint32_t)frame[1] << 16 | (uint32_t)frame[2] << 8 | frame[3];
    FUZZ_REQUIRE(len == n - FRAME_HDR);
    Lorad__Response *r = lorad__response__unpack(NULL, len, frame + FRAME_HDR);
    FUZZ_REQUIRE(r && r->version == FRAME_VERSION && (r->ok || r->error[0]));
    lorad__response__free_unpacked(r, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!state[0]) table_setup();
    for (size_t at = 0; at < size;) {
        Lorad__Request *req;
        size_t used = 0, n;
        enum frame_status st = frame_request_take(data + at, size - at, &req, &used);
        if (st == FRAME_STATUS_MORE) break;
        if (st == FRAME_STATUS_BAD) {
            FUZZ_REQUIRE(err_msg()[0] != '\0');
            uint8_t *frame = frame_error(&n);
            answer_check(frame, n);
            free(frame);
            break;
        }
        FUZZ_REQUIRE(used > FRAME_HDR && used <= size - at && req->version == FRAME_VERSION);
        if (req->command != LORAD__COMMAND__COMMAND_SUBMIT) {
            uint8_t *frame = control_handle(&table, req, &n);
            answer_check(frame, n);
            free(frame);
        }
        lorad__request__free_unpacked(req, NULL);
        at += used;
    }
    table.draining = table.now = 0; /* a shutdown request stays within its input */
    return 0;
}
