/*
 * tokenize_cmd.h: `lorad tokenize`: the token ids of text under a model's Hugging Face
 * tokenizer (storage/tokenizer.h), as ids on a line, or as JSON with the tokens'
 * strings and the decoded text; one output line per input.
 */
#ifndef LORAD_TOKENIZE_CMD_H
#define LORAD_TOKENIZE_CMD_H

#include "command.h"

/* CALL->spec[0]: a TokenizeSpec. Returns 0, or -1 with an error. */
command_fn tokenize_cmd;

#endif
