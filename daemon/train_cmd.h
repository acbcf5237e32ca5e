/*
 * train_cmd.h: `lorad train`: rank 0 validates the job, resolves what depends on the
 * model, claims the output directory and dispatches the job to every rank; the other
 * ranks follow it. All ranks leave together on an error, which rank 0 prints.
 */
#ifndef LORAD_TRAIN_CMD_H
#define LORAD_TRAIN_CMD_H

#include "command.h"

/* CALL->spec[0] is the JobSpec on rank 0 (NULL when its flags failed, which ends the
 * followers too). Returns 0, TRAIN_STOPPED, or -1 with an error. */
command_fn train_cmd;

#endif
