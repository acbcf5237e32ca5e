/*
 * ckpt_cmd.h: `lorad inspect CKPT` prints what a checkpoint holds; `lorad export CKPT
 * --out DIR` writes its adapter (or, for full mode, its model) as a Hugging Face
 * directory, byte for byte what the run would export at that step.
 */
#ifndef LORAD_CKPT_CMD_H
#define LORAD_CKPT_CMD_H

#include "command.h"

/* Each takes a CheckpointSpec in CALL->spec[0]. Returns 0, or -1 with an error. */
command_fn ckpt_inspect;
command_fn ckpt_export;

#endif
