/*
 * command.h: what the process entry (main.c's command table) hands a command's
 * handler: the command's name, its specs parsed and checked, and its ranks.
 */
#ifndef LORAD_COMMAND_H
#define LORAD_COMMAND_H

#include <protobuf-c/protobuf-c.h>

#include "comm.h"
#include "lorad.pb-c.h"

struct command_call {
    const char *name;          /* as typed: "status" */
    ProtobufCMessage *spec[2]; /* the specs of the command's row, in its order; spec[0] is NULL on the
                                  ranks of `train` but rank 0, and on rank 0 when its flags failed */
    struct comm *comm;         /* the ranks it runs on: a world of one outside mpirun */
};

/* A command's handler: 0, or -1 with an error (rank 0 prints it), or TRAIN_STOPPED. */
typedef int command_fn(const struct command_call *call);

#endif
