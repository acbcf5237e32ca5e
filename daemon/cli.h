/*
 * cli.h: a command's arguments parsed into its protobuf specs, through the flag table
 * (flags.h): field micro_batch is flag --micro-batch; strings and numbers take one
 * value; bools are switches that also accept on/off; enums take the lowercase value
 * name after its prefix (MODE_FULL -> full); repeated strings take a comma-separated
 * list, and a repeatable one (the flag table says which) given again adds to it
 * (--adapter A --adapter B); any other flag given again takes the last value. `--config FILE.json` sets flags from a JSON object keyed by flag names first;
 * the command line's flags override it.
 */
#ifndef LORAD_CLI_H
#define LORAD_CLI_H

#include <protobuf-c/protobuf-c.h>

#include "flags.h"

/* Parses ARGV[0..argc) of command CMD into the N messages MSGS, which hold their
 * defaults: a first argument that is not a flag fills field POSITIONAL of MSGS[0]
 * (NULL: none may come), then the --config file's keys, then the flags. A flag goes
 * to the first message that has it, and must be one CMD takes. A --config value must
 * also be within its range. -1 with an error naming the flag, or FILE:LINE and the
 * key; the hint names the nearest flag when there is one. A holds what the messages
 * point to until they are copied. */
int cli_parse(ProtobufCMessage *const *msgs, int n, const char *cmd, const char *positional, int argc, char **argv,
              struct flag_arena *a);

/* Which one of the N strings VALUES (the values of flags FLAGS) is given: its index; -1
 * with an error when none is (naming FLAGS[0] and FLAGS[1]) or two are. */
int cli_one_of(const char *const *values, const char *const *flags, int n);

#endif
