/*
 * main.c: the lorad process entry: picks the subcommand, parses its flags into the
 * proto spec, and turns a failure into one line and exit code 2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "error.h"
#include "init_model.h"
#include "job.h"
#include "prep.h"
#include "train.h"

#define LORAD_VERSION "0.1.0"

static void usage(FILE *out) {
    fprintf(out,
            "lorad %s: LoRA fine-tuning of transformer language models\n"
            "usage:\n"
            "  lorad train --model DIR --data FILE --out DIR [flags]   fine-tune (--help for flags)\n"
            "  lorad prep --text FILE --out FILE.h5                    text -> byte-level tokens\n"
            "  lorad init-model --out DIR [--layers --dim --heads ...] a random GPT-2 to pretrain\n"
            "  lorad --version\n",
            LORAD_VERSION);
}

static int wants_help(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
    return 0;
}

/* Packs and unpacks MSG: the owned copy every later stage (and MPI) works from. */
static ProtobufCMessage *spec_own(const ProtobufCMessage *msg) {
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = xmalloc(n ? n : 1);
    protobuf_c_message_pack(msg, buf);
    ProtobufCMessage *owned = protobuf_c_message_unpack(msg->descriptor, NULL, n, buf);
    CHECK(owned != NULL);
    free(buf);
    return owned;
}

/* Parses ARGV into the defaults in MSG; prints the flags and exits on --help. */
static ProtobufCMessage *spec_parse(ProtobufCMessage *msg, const char *cmd, int argc, char **argv) {
    if (wants_help(argc, argv)) {
        printf("usage: lorad %s [flags]; flags and defaults:\n", cmd);
        cli_usage(msg, stdout);
        exit(0);
    }
    struct cli_arena arena = {0};
    if (cli_parse(msg, argc, argv, &arena)) {
        cli_arena_free(&arena);
        err_exit();
    }
    ProtobufCMessage *owned = spec_own(msg);
    cli_arena_free(&arena);
    return owned;
}

static int cmd_train(int argc, char **argv) {
    Lorad__JobSpec defaults;
    job_defaults(&defaults);
    Lorad__JobSpec *job = (Lorad__JobSpec *)spec_parse(&defaults.base, "train", argc, argv);
    int rc = job_validate(job);
    if (rc == 0) rc = train_run(job);
    lorad__job_spec__free_unpacked(job, NULL);
    if (rc) err_exit();
    return 0;
}

static int cmd_prep(int argc, char **argv) {
    Lorad__PrepSpec defaults = LORAD__PREP_SPEC__INIT;
    Lorad__PrepSpec *spec = (Lorad__PrepSpec *)spec_parse(&defaults.base, "prep", argc, argv);
    int rc = prep_run(spec);
    lorad__prep_spec__free_unpacked(spec, NULL);
    if (rc) err_exit();
    return 0;
}

static int cmd_init_model(int argc, char **argv) {
    Lorad__InitModelSpec defaults;
    init_model_defaults(&defaults);
    Lorad__InitModelSpec *spec = (Lorad__InitModelSpec *)spec_parse(&defaults.base, "init-model", argc, argv);
    int rc = init_model_run(spec);
    lorad__init_model_spec__free_unpacked(spec, NULL);
    if (rc) err_exit();
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? LORAD_EXIT_USER : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("lorad %s\n", LORAD_VERSION);
        return 0;
    }
    if (!strcmp(argv[1], "train")) return cmd_train(argc - 2, argv + 2);
    if (!strcmp(argv[1], "prep")) return cmd_prep(argc - 2, argv + 2);
    if (!strcmp(argv[1], "init-model")) return cmd_init_model(argc - 2, argv + 2);
    err_set(argv[1], "unknown command");
    err_hint("lorad --help lists the commands");
    err_exit();
}
