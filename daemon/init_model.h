/*
 * init_model.h: `lorad init-model`: writes a randomly initialised GPT-2 model directory
 * (config.json and model.safetensors) to pretrain from with --mode full.
 */
#ifndef LORAD_INIT_MODEL_H
#define LORAD_INIT_MODEL_H

#include "command.h"

/* CALL->spec[0]: an InitModelSpec. Returns 0, or -1 with an error naming the flag or
 * the directory. */
command_fn init_model_run;

#endif
