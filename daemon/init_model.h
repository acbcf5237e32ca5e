/*
 * init_model.h: `lorad init-model`: writes a randomly initialised GPT-2 model directory
 * (config.json and model.safetensors) to pretrain from with --mode full; with a
 * vocabulary of 256, a byte-level model, with the tokenizer files of
 * storage/byte_tokenizer.h. `lorad init-tokenizer` writes those files for a byte-level
 * model that lacks them.
 */
#ifndef LORAD_INIT_MODEL_H
#define LORAD_INIT_MODEL_H

#include "command.h"

/* CALL->spec[0]: an InitModelSpec. Returns 0, or -1 with an error naming the flag or
 * the directory. */
command_fn init_model_run;
/* CALL->spec[0]: an InitTokenizerSpec. Refuses a model whose config.json has another
 * vocab_size than 256, and tokenizer files already there unless --overwrite. */
command_fn init_tokenizer_run;

#endif
