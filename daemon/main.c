/*
 * main.c: the lorad process entry: the command table, one row per command, and the one
 * path every command takes: start its ranks, parse its flags into its specs, run its
 * handler, and turn a failure into one line and exit code 2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyze_cmd.h"
#include "ckpt_cmd.h"
#include "cli.h"
#include "client.h"
#include "command.h"
#include "error.h"
#include "generate_cmd.h"
#include "infer_cmd.h"
#include "init_model.h"
#include "prep.h"
#include "protojson.h"
#include "serve.h"
#include "signals.h"
#include "train.h"
#include "template_cmd.h"
#include "tokenize_cmd.h"
#include "train_cmd.h"

enum command_ranks {
    COMMAND_ALONE, /* one process */
    COMMAND_RANKS, /* every rank under mpirun: each parses the same argv */
    COMMAND_ROOT,  /* every rank under mpirun: rank 0 parses and sends the spec to the others */
};

static const struct command {
    const char *name;
    const char *args;       /* the usage line after the name */
    const char *summary;
    enum command_ranks ranks;
    const ProtobufCMessageDescriptor *specs[2];
    const char *positional; /* the field of specs[0] a first argument that is not a flag fills */
    command_fn *run;
} commands[] = {
    {"train", "--model DIR --data FILE --out DIR [flags]", "fine-tune: LoRA adapters, or every weight",
     COMMAND_ROOT, {&lorad__job_spec__descriptor}, NULL, train_cmd},
    {"prep", "(--model DIR | --tokenizer DIR) --data FILE,... --out FILE.h5",
     "text and JSONL to HDF5 tokens with loss masks (--text: byte-level)", COMMAND_ALONE,
     {&lorad__prep_spec__descriptor}, NULL, prep_run},
    {"tokenize", "(--model DIR | --tokenizer DIR) (--text T | --file F | --jsonl F)",
     "token ids of text with the model's Hugging Face tokenizer", COMMAND_ALONE, {&lorad__tokenize_spec__descriptor},
     NULL, tokenize_cmd},
    {"template", "--model DIR --messages F.json [--generation-prompt]",
     "the model's chat template rendered for a list of messages", COMMAND_ALONE, {&lorad__template_spec__descriptor},
     NULL, template_cmd},
    {"init-model", "--out DIR [--layers N --dim N ...]", "a random GPT-2 to pretrain", COMMAND_ALONE,
     {&lorad__init_model_spec__descriptor}, NULL, init_model_run},
    {"init-tokenizer", "--model DIR [--overwrite]", "a byte-level model's tokenizer, with chat tokens and template",
     COMMAND_ALONE, {&lorad__init_tokenizer_spec__descriptor}, NULL, init_tokenizer_run},
    {"eval", "--model DIR [--adapter DIR]... --data FILE", "loss and perplexity", COMMAND_RANKS,
     {&lorad__eval_spec__descriptor}, NULL, eval_cmd},
    {"merge", "--model DIR --adapter DIR --out DIR", "base + adapter as one model", COMMAND_ALONE,
     {&lorad__merge_spec__descriptor}, NULL, merge_cmd},
    {"generate", "--model DIR [--adapter DIR] --prompt TEXT [--chat] | --prompts FILE.jsonl",
     "text from a prompt, streamed; or from a file of prompts, each with its adapter, in one batch", COMMAND_ALONE,
     {&lorad__generate_spec__descriptor}, NULL, generate_cmd},
    {"analyze", "--adapter DIR [--against DIR] [--model DIR]",
     "an adapter's spectra, subspace similarity and amplification", COMMAND_ALONE, {&lorad__analyze_spec__descriptor},
     NULL, analyze_cmd},
    {"inspect", "CKPT", "what a checkpoint holds", COMMAND_ALONE, {&lorad__checkpoint_spec__descriptor},
     "checkpoint", ckpt_inspect},
    {"export", "CKPT --out DIR", "a checkpoint's PEFT adapter (or model)", COMMAND_ALONE,
     {&lorad__checkpoint_spec__descriptor}, "checkpoint", ckpt_export},
    {"serve", "--state DIR [--socket PATH]", "the daemon, under mpirun: queued jobs on a resident base",
     COMMAND_RANKS, {&lorad__serve_spec__descriptor}, NULL, serve_run},
    {"submit", "[--socket PATH] <train flags>", "queue a job on the daemon; prints its id", COMMAND_ALONE,
     {&lorad__client_spec__descriptor, &lorad__job_spec__descriptor}, NULL, client_run},
    {"status", "[JOB]", "a job, or the daemon and its unfinished jobs", COMMAND_ALONE,
     {&lorad__client_spec__descriptor}, "job", client_run},
    {"list", "", "every job of the daemon", COMMAND_ALONE, {&lorad__client_spec__descriptor}, NULL, client_run},
    {"cancel", "JOB", "cancel a job (a running one stops with a checkpoint)", COMMAND_ALONE,
     {&lorad__client_spec__descriptor}, "job", client_run},
    {"logs", "JOB [--follow]", "a job's log (--json: its metrics)", COMMAND_ALONE,
     {&lorad__client_spec__descriptor}, "job", client_run},
    {"shutdown", "[--now]", "stop the daemon once its queue is done (--now: at the next step)", COMMAND_ALONE,
     {&lorad__client_spec__descriptor}, NULL, client_run},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out) {
    fprintf(out, "lorad %s: LoRA fine-tuning of transformer language models\nusage:\n", LORAD_VERSION);
    for (size_t i = 0; i < N_COMMANDS; i++) {
        char line[128];
        snprintf(line, sizeof line, "lorad %s %s", commands[i].name, commands[i].args);
        fprintf(out, "  %-56s %s\n", line, commands[i].summary);
    }
    fprintf(out, "  %-56s %s\n", "lorad --version", "the version");
    fprintf(out, "lorad COMMAND --help explains every flag of a command, with its default.\n");
}

static int n_specs(const struct command *c) { return c->specs[1] ? 2 : 1; }

static int wants_help(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
    return 0;
}

/* The specs of C from ARGV: defaults, then the arguments, checked; into CALL. */
static int specs_parse(const struct command *c, int argc, char **argv, struct command_call *call) {
    ProtobufCMessage *msgs[2] = {NULL, NULL};
    for (int i = 0; i < n_specs(c); i++) {
        msgs[i] = xcalloc(1, c->specs[i]->sizeof_message);
        flags_defaults(msgs[i], c->specs[i]);
    }
    struct flag_arena arena = {0};
    int rc = cli_parse(msgs, n_specs(c), c->name, c->positional, argc, argv, &arena);
    for (int i = 0; i < n_specs(c) && rc == 0; i++) rc = flags_check(msgs[i], c->name);
    for (int i = 0; i < n_specs(c); i++) {
        if (rc == 0) call->spec[i] = proto_copy(msgs[i]);
        free(msgs[i]);
    }
    flag_arena_free(&arena);
    return rc;
}

/* Runs command C: the one path of every command. */
static int command_run(const struct command *c, int argc, char **argv) {
    struct comm comm = {.size = 1, .local_size = 1};
    if (c->ranks == COMMAND_ALONE) signals_start();
    else comm_init(&comm, &argc, &argv); /* which starts the signal thread */
    int rc = 0;
    struct command_call call = {.name = c->name, .comm = &comm};
    if (wants_help(argc, argv)) {
        if (comm.rank == 0) {
            printf("usage: lorad %s %s\n%s.\n", c->name, c->args, c->summary);
            flags_help(c->specs, n_specs(c), c->name, stdout);
            printf("\nEvery command:\n  %-34s %s\n", "--config FILE.json",
                   "flags from a JSON object keyed by flag name; flags given here override it");
        }
    } else {
        if (c->ranks != COMMAND_ROOT || comm.rank == 0) rc = specs_parse(c, argc, argv, &call);
        /* a ROOT command runs even when rank 0's flags failed, to end the other ranks */
        if (rc == 0 || c->ranks == COMMAND_ROOT) {
            int ran = c->run(&call);
            if (rc == 0) rc = ran;
        }
    }
    for (int i = 0; i < n_specs(c); i++)
        if (call.spec[i]) protobuf_c_message_free_unpacked(call.spec[i], NULL);
    if (rc < 0 && comm.rank == 0) fprintf(stderr, "lorad: %s\n", err_msg());
    comm_finalize(&comm);
    if (rc == TRAIN_STOPPED) return TRAIN_EXIT_REQUEUE;
    return rc ? LORAD_EXIT_USER : 0;
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
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name)) return command_run(&commands[i], argc - 2, argv + 2);
    err_set(argv[1], "unknown command");
    err_hint("lorad --help lists the commands");
    err_exit();
}
