/*
 * tokenize_cmd.h: `lorad tokenize`: the token ids of text under a model's Hugging Face
 * tokenizer (storage/tokenizer.h): one output line per input, the ids separated by
 * spaces (--text, --file) or as a JSON array (--jsonl), or with --json an object with
 * the ids, the tokens' strings and the decoded text.
 */
#ifndef LORAD_TOKENIZE_CMD_H
#define LORAD_TOKENIZE_CMD_H

#include "command.h"

/* CALL->spec[0]: a TokenizeSpec. Returns 0, or -1 with an error. */
command_fn tokenize_cmd;

#endif
