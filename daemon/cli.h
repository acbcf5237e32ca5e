/*
 * cli.h: command-line flags parsed straight into a protobuf message. The message's
 * descriptor is the flag table: field micro_batch is flag --micro-batch; strings and
 * numbers take one value; bools are switches that also accept on/off; enums take the
 * lowercase value name after its prefix (MODE_FULL -> full); repeated strings take a
 * comma-separated list.
 */
#ifndef LORAD_CLI_H
#define LORAD_CLI_H

#include <protobuf-c/protobuf-c.h>
#include <stdio.h>

/* Memory the parser allocated for MSG's repeated fields; freed by cli_arena_free. */
struct cli_arena {
    void **p;
    int n;
};

/* Parses ARGV[0..argc) into the N messages MSGS (a flag goes to the first that has it).
 * -1 with an error naming the flag. */
int cli_parse(ProtobufCMessage *const *msgs, int n, int argc, char **argv, struct cli_arena *arena);
void cli_arena_free(struct cli_arena *arena);
/* Lists MSG's flags with their current values (the defaults) on OUT. */
void cli_usage(const ProtobufCMessage *msg, FILE *out);

#endif
