/*
 * main.c: the lorad process entry: picks the subcommand, parses its flags into the
 * proto spec, and turns a failure into one line and exit code 2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_cmd.h"
#include "cli.h"
#include "client.h"
#include "comm.h"
#include "dispatch.h"
#include "error.h"
#include "infer_cmd.h"
#include "init_model.h"
#include "job.h"
#include "prep.h"
#include "protojson.h"
#include "rundir.h"
#include "serve.h"
#include "signals.h"
#include "train.h"

static void usage(FILE *out) {
    fprintf(out,
            "lorad %s: LoRA fine-tuning of transformer language models\n"
            "usage:\n"
            "  lorad train --model DIR --data FILE --out DIR [flags]   fine-tune (--help for flags)\n"
            "  lorad prep --text FILE --out FILE.h5                    text -> byte-level tokens\n"
            "  lorad init-model --out DIR [--layers --dim --heads ...] a random GPT-2 to pretrain\n"
            "  lorad eval --model DIR [--adapter DIR] --data FILE      loss and perplexity\n"
            "  lorad merge --model DIR --adapter DIR --out DIR         base + adapter as one model\n"
            "  lorad generate --model DIR [--adapter DIR] --prompt T   decode with a KV cache\n"
            "  lorad inspect CKPT                                      what a checkpoint holds\n"
            "  lorad export CKPT --out DIR                             a checkpoint's PEFT adapter\n"
            "  mpirun lorad serve --state DIR [--socket PATH]          the daemon: queued jobs, resident base\n"
            "  lorad submit [--socket PATH] <train flags>              queue a job; prints its id\n"
            "  lorad status [JOB] | list | cancel JOB | logs JOB [--follow] | shutdown [--now]\n"
            "  lorad --version\n",
            LORAD_VERSION);
}

static int wants_help(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
    return 0;
}

/* Parses ARGV into the defaults in MSG. Returns the owned spec, or NULL with an error.
 * On --help prints the flags (rank 0) and ends every rank. */
static ProtobufCMessage *spec_parse(ProtobufCMessage *msg, const char *cmd, int argc, char **argv,
                                    struct comm *comm) {
    if (wants_help(argc, argv)) {
        if (comm->rank == 0) {
            printf("usage: lorad %s [flags]; flags and defaults:\n", cmd);
            cli_usage(msg, stdout);
        }
        comm_finalize(comm);
        exit(0);
    }
    struct cli_arena arena = {0};
    ProtobufCMessage *owned = cli_parse(&msg, 1, argc, argv, &arena) == 0 ? proto_copy(msg) : NULL;
    cli_arena_free(&arena);
    return owned;
}

/* Ends a command: rank 0 prints the error line when RC failed; every rank exits. */
static int leave(struct comm *comm, int rc) {
    if (rc < 0 && comm->rank == 0) fprintf(stderr, "lorad: %s\n", err_msg());
    comm_finalize(comm);
    if (rc == TRAIN_STOPPED) return TRAIN_EXIT_REQUEUE;
    return rc ? LORAD_EXIT_USER : 0;
}

/* Rank 0 parses and validates the job and dispatches it to every rank. All ranks leave
 * together on an error, which rank 0 prints. */
static int cmd_train(int argc, char **argv) {
    struct comm comm;
    comm_init(&comm, &argc, &argv);
    if (comm.rank != 0 && !wants_help(argc, argv)) return leave(&comm, dispatch_follow(&comm, NULL));
    Lorad__JobSpec defaults;
    job_defaults(&defaults);
    Lorad__JobSpec *job = (Lorad__JobSpec *)spec_parse(&defaults.base, "train", argc, argv, &comm);
    int rc = -1;
    /* the output is checked here too, so a refusal comes before any rank loads the model */
    if (job && job_validate(job) == 0 && job_resolve(job) == 0 &&
        rundir_claim(job->out, job->resume, job->overwrite, 0) == 0) {
        size_t n = lorad__job_spec__get_packed_size(job);
        uint8_t *bytes = xmalloc(n + 1);
        lorad__job_spec__pack(job, bytes);
        rc = dispatch_run(&comm, bytes, n, NULL);
        free(bytes);
    }
    if (job) lorad__job_spec__free_unpacked(job, NULL);
    dispatch_end(&comm);
    return leave(&comm, rc);
}

static int cmd_prep(int argc, char **argv) {
    struct comm alone = {.size = 1, .local_size = 1};
    Lorad__PrepSpec defaults = LORAD__PREP_SPEC__INIT;
    Lorad__PrepSpec *spec = (Lorad__PrepSpec *)spec_parse(&defaults.base, "prep", argc, argv, &alone);
    int rc = spec ? prep_run(spec) : -1;
    if (spec) lorad__prep_spec__free_unpacked(spec, NULL);
    return leave(&alone, rc);
}

static int cmd_init_model(int argc, char **argv) {
    struct comm alone = {.size = 1, .local_size = 1};
    Lorad__InitModelSpec defaults;
    init_model_defaults(&defaults);
    Lorad__InitModelSpec *spec =
        (Lorad__InitModelSpec *)spec_parse(&defaults.base, "init-model", argc, argv, &alone);
    int rc = spec ? init_model_run(spec) : -1;
    if (spec) lorad__init_model_spec__free_unpacked(spec, NULL);
    return leave(&alone, rc);
}

/* eval runs on every rank: each parses the same argv and rank 0 reports. */
static int cmd_eval(int argc, char **argv) {
    struct comm comm;
    comm_init(&comm, &argc, &argv);
    Lorad__EvalSpec defaults;
    eval_defaults(&defaults);
    Lorad__EvalSpec *spec = (Lorad__EvalSpec *)spec_parse(&defaults.base, "eval", argc, argv, &comm);
    int rc = spec ? eval_cmd(spec, &comm) : -1;
    if (spec) lorad__eval_spec__free_unpacked(spec, NULL);
    return leave(&comm, rc);
}

static int cmd_merge(int argc, char **argv) {
    struct comm alone = {.size = 1, .local_size = 1};
    Lorad__MergeSpec defaults;
    merge_defaults(&defaults);
    Lorad__MergeSpec *spec = (Lorad__MergeSpec *)spec_parse(&defaults.base, "merge", argc, argv, &alone);
    int rc = spec ? merge_cmd(spec) : -1;
    if (spec) lorad__merge_spec__free_unpacked(spec, NULL);
    return leave(&alone, rc);
}

static int cmd_generate(int argc, char **argv) {
    struct comm alone = {.size = 1, .local_size = 1};
    Lorad__GenerateSpec defaults;
    generate_defaults(&defaults);
    Lorad__GenerateSpec *spec = (Lorad__GenerateSpec *)spec_parse(&defaults.base, "generate", argc, argv, &alone);
    int rc = spec ? generate_cmd(spec) : -1;
    if (spec) lorad__generate_spec__free_unpacked(spec, NULL);
    return leave(&alone, rc);
}

/* inspect and export: the first argument, when not a flag, is the checkpoint. */
static int cmd_checkpoint(int argc, char **argv, int (*run)(const Lorad__CheckpointSpec *), const char *cmd) {
    struct comm alone = {.size = 1, .local_size = 1};
    Lorad__CheckpointSpec defaults = LORAD__CHECKPOINT_SPEC__INIT;
    int positional = argc > 0 && strncmp(argv[0], "--", 2) != 0;
    if (positional) defaults.checkpoint = argv[0];
    Lorad__CheckpointSpec *spec = (Lorad__CheckpointSpec *)spec_parse(&defaults.base, cmd, argc - positional,
                                                                      argv + positional, &alone);
    int rc = spec ? run(spec) : -1;
    if (spec) lorad__checkpoint_spec__free_unpacked(spec, NULL);
    return leave(&alone, rc);
}

/* serve runs on every rank; each parses the same argv. */
static int cmd_serve(int argc, char **argv) {
    struct comm comm;
    comm_init(&comm, &argc, &argv);
    Lorad__ServeSpec defaults = LORAD__SERVE_SPEC__INIT;
    Lorad__ServeSpec *spec = (Lorad__ServeSpec *)spec_parse(&defaults.base, "serve", argc, argv, &comm);
    int rc = spec ? serve_run(spec, &comm) : -1;
    if (spec) lorad__serve_spec__free_unpacked(spec, NULL);
    return leave(&comm, rc);
}

static int is_client_command(const char *cmd) {
    static const char *const names[] = {"submit", "status", "list", "cancel", "logs", "shutdown"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(cmd, names[i])) return 1;
    return 0;
}

int main(int argc, char **argv) {
    signals_block();
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? LORAD_EXIT_USER : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("lorad %s\n", LORAD_VERSION);
        return 0;
    }
    /* the commands that may run as MPI ranks: comm_init starts the signal thread */
    if (!strcmp(argv[1], "train")) return cmd_train(argc - 2, argv + 2);
    if (!strcmp(argv[1], "eval")) return cmd_eval(argc - 2, argv + 2);
    if (!strcmp(argv[1], "serve")) return cmd_serve(argc - 2, argv + 2);
    signals_start();
    if (!strcmp(argv[1], "prep")) return cmd_prep(argc - 2, argv + 2);
    if (!strcmp(argv[1], "init-model")) return cmd_init_model(argc - 2, argv + 2);
    if (!strcmp(argv[1], "merge")) return cmd_merge(argc - 2, argv + 2);
    if (!strcmp(argv[1], "generate")) return cmd_generate(argc - 2, argv + 2);
    if (!strcmp(argv[1], "inspect")) return cmd_checkpoint(argc - 2, argv + 2, ckpt_inspect, "inspect");
    if (!strcmp(argv[1], "export")) return cmd_checkpoint(argc - 2, argv + 2, ckpt_export, "export");
    if (is_client_command(argv[1])) {
        struct comm alone = {.size = 1, .local_size = 1};
        return leave(&alone, client_run(argv[1], argc - 2, argv + 2));
    }
    err_set(argv[1], "unknown command");
    err_hint("lorad --help lists the commands");
    err_exit();
}
