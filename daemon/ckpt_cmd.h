/*
 * ckpt_cmd.h: `lorad inspect CKPT` prints what a checkpoint holds; `lorad export CKPT
 * --out DIR` writes its adapter (or, for full mode, its model) as a Hugging Face
 * directory, byte for byte what the run would export at that step.
 */
#ifndef LORAD_CKPT_CMD_H
#define LORAD_CKPT_CMD_H

#include "lorad.pb-c.h"

int ckpt_inspect(const Lorad__CheckpointSpec *spec);
int ckpt_export(const Lorad__CheckpointSpec *spec);

#endif
